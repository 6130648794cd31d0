#include "supervisor/config.hpp"

#include "runtime/address.hpp"
#include "runtime/flags.hpp"
#include "supervisor/private_dir.hpp"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <variant>

#include "supervisor/toml.hpp"

namespace loopfleet::supervisor {
namespace {

// Values that flag_set cannot type on its own are kept as text and checked here.
struct raw_values {
  std::string workers, distribution, ready;
};

void register_flags(flag_set& f, config& c, raw_values& raw) {
  f.add_string("--config", &c.config_file, "TOML file with any of these settings (flags win)");
  f.add_string("--workers", &raw.workers,
               "worker processes: a number, or auto = CPUs available (the affinity mask, or the cgroup's CPU quota "
               "if lower) [default: auto]");
  f.add_list("--listen", &c.listen, "address to serve: HOST:PORT, [IPV6]:PORT or unix:PATH [default: 127.0.0.1:8080]");
  f.add_string("--name", &c.name, "instance name (control socket, logs) [default: the command's file name]");
  f.add_string("--distribution", &raw.distribution,
               "shared (one socket, every worker accepts) or reuseport (one queue per slot) [default: reuseport]");
  f.add_int("--backlog", &c.backlog, 1, 65535, "listen backlog of each socket");
  f.add_string("--ready", &raw.ready,
               "notify (worker sends READY=1) or started (alive for --ready-delay) [default: notify]");
  f.add_duration("--ready-delay", &c.ready_delay, "with --ready=started: how long alive counts as ready");
  f.add_duration("--ready-timeout", &c.ready_timeout, "a starting worker not ready by then is killed");
  f.add_duration("--graceful-timeout", &c.graceful_timeout, "drain time given to a worker before SIGKILL");
  f.add_duration("--backoff-initial", &c.backoff_initial, "first restart delay after a crash");
  f.add_duration("--backoff-max", &c.backoff_max, "longest restart delay");
  f.add_duration("--healthy-after", &c.healthy_after, "uptime after which the backoff resets");
  f.add_int("--degraded-after", &c.degraded_after, 1, 1000, "failed starts in a row that mark a slot degraded");
  f.add_duration("--watchdog", &c.watchdog,
                 "a worker whose loop does not beat this long is stalled: stack dump, replaced; 0 = off");
  f.add_int("--max-requests", &c.max_requests, 0, 2000000000, "recycle a worker after this many requests (0 = never)");
  f.add_int("--max-requests-jitter", &c.max_requests_jitter, 0, 2000000000, "random extra requests per worker");
  f.add_int("--max-memory", &c.max_memory, 0, 1000000, "recycle a worker whose RSS exceeds this many MiB (0 = never)");
  f.add_bool("--cluster", &c.cluster, "join the cluster layer: run a local nats-server with JetStream");
  f.add_string("--node", &c.node, "this node's name in the cluster [default: the host name]");
  f.add_list("--nats", &c.nats, "URL of an existing NATS cluster to use instead of a local nats-server");
  f.add_string("--nats-listen", &c.nats_listen, "client address of the local nats-server");
  f.add_string("--cluster-listen", &c.cluster_listen, "route address of the local nats-server, for other nodes");
  f.add_list("--join", &c.join, "another node's --cluster-listen address, HOST:PORT (comma-separated or repeated)");
  f.add_string("--data-dir", &c.data_dir, "JetStream storage directory [default: under $XDG_STATE_HOME or /var/lib]");
  f.add_int("--max-store", &c.max_store, 0, 100000000,
            "JetStream storage limit of the local nats-server, in MiB (0 = its default, 75% of the disk)");
  f.add_int("--replicas", &c.replicas, 0, 5,
            "servers that hold every stored job (JetStream replicas); 0 = min(3, 1 + number of --join peers)");
  f.add_duration("--replicas-wait", &c.replicas_wait,
                 "how long to wait for that many servers before creating the streams with fewer (with a warning); "
                 "0 = wait as long as it takes");
  f.add_string("--agent-check", &c.agent_check,
               "answer HAProxy's agent check on HOST:PORT: up and a weight, drain while stopping, down");
  f.add_duration("--front-drain", &c.front_drain,
                 "with --agent-check: how long a graceful stop says drain before stopping the workers");
  f.add_string("--admin", &c.admin,
               "serve /metrics (Prometheus), /status.json and a live status page on HOST:PORT (a bare PORT is "
               "127.0.0.1:PORT)");
  f.add_string("--control", &c.control, "control socket path [default: $XDG_RUNTIME_DIR/loopfleet/NAME.sock]");
  f.add_string("--user", &c.user,
               "run the workers, their helpers and nats-server as USER[:GROUP] or UID:GID; the supervisor keeps root "
               "to bind sockets and signal them (USER alone: the user's groups; USER:GROUP: that group only)");
}

std::optional<std::string> apply_raw(const raw_values& raw, config& c, std::string_view where) {
  if (!raw.workers.empty()) {
    if (raw.workers == "auto") {
      c.workers = 0;
    } else {
      char* end = nullptr;
      long n = std::strtol(raw.workers.c_str(), &end, 10);
      if (*end || n < 1 || n > 1024)
        return std::string(where) + "workers '" + raw.workers + "' is not a number from 1 to 1024 or auto";
      c.workers = static_cast<int>(n);
    }
  }
  if (!raw.distribution.empty()) {
    if (raw.distribution == "shared") c.distribution = distribution::shared;
    else if (raw.distribution == "reuseport") c.distribution = distribution::reuseport;
    else return std::string(where) + "distribution '" + raw.distribution + "' is not shared or reuseport";
  }
  if (!raw.ready.empty()) {
    if (raw.ready == "notify") c.ready = readiness::notify;
    else if (raw.ready == "started") c.ready = readiness::started;
    else return std::string(where) + "ready '" + raw.ready + "' is not notify or started";
  }
  return std::nullopt;
}

std::optional<std::string> check_cluster(config& c) {
  split_commas(c.join);
  split_commas(c.nats);
  if (!c.join.empty() || !c.nats.empty()) c.cluster = true;
  if (!c.cluster) return std::nullopt;
  for (const auto& j : c.join)
    if (auto err = check_tcp_address("--join", j)) return err;
  if (auto err = check_tcp_address("--nats-listen", c.nats_listen)) return err;
  if (auto err = check_tcp_address("--cluster-listen", c.cluster_listen)) return err;
  for (const auto& url : c.nats)
    if (!url.starts_with("nats://") && !url.starts_with("tls://"))
      return "--nats '" + url + "' is not a NATS URL: use nats://HOST:PORT";
  if (c.node.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    c.node = host;
  }
  for (char ch : c.node)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_')
      return "--node '" + c.node + "' may use letters, digits, '-' and '_' only (it names NATS subjects and files)";
  if (c.data_dir.empty()) {
    const char* state = std::getenv("XDG_STATE_HOME");
    std::string base = state && *state ? std::string(state) + "/loopfleet"
                       : ::getuid() == 0 ? "/var/lib/loopfleet"
                                         : "/tmp/loopfleet-" + std::to_string(::getuid());
    c.data_dir = base + "/" + c.node;
  }
  return std::nullopt;
}

std::optional<std::string> check_user(config& c) {
  c.run_user.reset();
  if (c.user.empty()) return std::nullopt;
  run_as who;
  if (auto err = resolve_user(c.user, who)) return err;
  if (::geteuid() == 0) {
    c.run_user = std::move(who);
    return std::nullopt;
  }
  // Without root the children cannot change identity: naming ourselves is fine, anyone else is not.
  if (who.uid == ::geteuid() && who.gid == ::getegid()) return std::nullopt;
  return "--user '" + c.user + "' needs the supervisor to run as root (it runs as uid " + std::to_string(::geteuid()) +
         "): start it as root, or leave --user out to run the workers as yourself";
}

std::optional<std::string> check(config& c) {
  if (c.command.empty())
    return "no worker command: put it after --, e.g. loopfleet run --workers 2 -- ./build/bin/hello";
  // The same default as a standalone worker, unless systemd handed us the sockets.
  if (c.listen.empty() && !c.inherited_sockets) c.listen.push_back("127.0.0.1:8080");
  for (const auto& l : c.listen)
    if (auto p = parse_listen_address(l); std::holds_alternative<std::string>(p))
      return "--listen: " + std::get<std::string>(p);
  if (c.backoff_max < c.backoff_initial) return "--backoff-max must not be shorter than --backoff-initial";
  if (c.name.empty()) {
    std::string_view cmd = c.command.front();
    c.name = std::string(cmd.substr(cmd.rfind('/') + 1));
    // "./bin/" names no file: an empty name would make the control socket "/.sock"
    // (found by tests/fuzz/config_fuzz.cpp).
    if (c.name.empty()) return "cannot name the instance after the command '" + std::string(cmd) + "': give --name";
  }
  for (char ch : c.name)
    if (ch == '/' || ch == '\0') return "--name '" + c.name + "' must not contain '/'";
  if (c.control.empty()) c.control = default_control_path(c.name);
  if (auto err = check_user(c)) return err;
  if (!c.agent_check.empty())
    if (auto err = check_tcp_address("--agent-check", c.agent_check)) return err;
  if (!c.admin.empty()) {
    if (c.admin.find_first_not_of("0123456789") == std::string::npos) c.admin = "127.0.0.1:" + c.admin;
    if (auto err = check_tcp_address("--admin", c.admin)) return err;
  }
  return check_cluster(c);
}

std::optional<std::string> parse_flags(std::span<const std::string_view> args, config& c, bool& help) {
  std::vector<std::string_view> flags;
  std::size_t i = 0;
  for (; i < args.size() && args[i] != "--"; ++i) flags.push_back(args[i]);
  std::vector<std::string> command;
  for (++i; i < args.size(); ++i) command.emplace_back(args[i]);

  // First pass for --config only, so the file is read before the flags override it.
  config from_flags;
  raw_values raw;
  flag_set f("loopfleet run");
  register_flags(f, from_flags, raw);
  if (auto err = f.parse(flags)) return err;
  help = f.help_requested();
  if (help) return std::nullopt;
  if (!from_flags.config_file.empty()) {
    if (auto err = load_config_file(from_flags.config_file, c)) return err;
    c.config_file = from_flags.config_file;
  }
  // Second pass onto the file's values.
  raw_values raw2;
  flag_set g("loopfleet run");
  register_flags(g, c, raw2);
  // A --listen list given as flags replaces the file's rather than adding to it.
  std::vector<std::string> file_listen = std::move(c.listen);
  c.listen.clear();
  if (auto err = g.parse(flags)) return err;
  if (c.listen.empty()) c.listen = std::move(file_listen);
  if (auto err = apply_raw(raw2, c, "--")) return err;
  if (!command.empty()) c.command = std::move(command);
  return std::nullopt;
}

}  // namespace

namespace {
// A whole number from an integer, or from a float that holds one (128.0). toml++ 3.3.0's
// value<int64_t>() converts any float without a range check, which is undefined for 1e44
// (found by tests/fuzz/config_fuzz.cpp), so floats are checked here.
std::optional<std::int64_t> whole_number(const toml::node& node) {
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) {
    double v = f->get();
    if (std::fabs(v) < 0x1p62 && v == std::trunc(v)) return static_cast<std::int64_t>(v);
  }
  return std::nullopt;
}
}  // namespace

std::optional<std::string> load_config_file(const std::string& path, config& c) {
  auto result = toml::parse_file(path);
  if (!result) {
    const auto& e = result.error();
    if (!e.source().begin) return "cannot read config file " + path + ": " + std::string(e.description());
    return path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
  }
  const toml::table& t = result.table();
  raw_values raw;
  for (const auto& entry : t) {
    // Not a structured binding: the lambdas below capture `node`, which clang 14 (the fuzz
    // build) does not allow for bindings.
    const auto& key = entry.first;
    const toml::node& node = entry.second;
    std::string k(key.str());
    std::string where = path + ":" + std::to_string(node.source().begin.line) + ": ";
    auto want = [&](std::string_view what) { return where + k + " must be " + std::string(what); };
    auto duration = [&](std::chrono::milliseconds& out) -> std::optional<std::string> {
      // At most 1e12 ms, the bound parse_duration puts on flags: converting a larger double
      // (1e300, inf) to an integer is undefined (found by tests/fuzz/config_fuzz.cpp).
      if (auto v = node.value<double>(); v && *v >= 0 && *v * 1000 <= 1e12) {
        out = std::chrono::milliseconds(static_cast<long long>(*v * 1000));
        return std::nullopt;
      }
      if (auto s = node.value<std::string>())
        if (auto d = parse_duration(*s)) {
          out = *d;
          return std::nullopt;
        }
      return want("a duration in seconds (e.g. 30 or 0.5)");
    };
    auto text = [&](std::string& out) -> std::optional<std::string> {
      if (auto s = node.value<std::string>()) {
        out = *s;
        return std::nullopt;
      }
      return want("a string");
    };
    auto strings = [&](std::vector<std::string>& out) -> std::optional<std::string> {
      out.clear();
      if (auto s = node.value<std::string>()) {
        out.push_back(*s);
        return std::nullopt;
      }
      const toml::array* a = node.as_array();
      if (!a) return want("a string or an array of strings");
      for (const auto& item : *a) {
        auto s = item.value<std::string>();
        if (!s) return want("an array of strings");
        out.push_back(*s);
      }
      return std::nullopt;
    };
    auto integer = [&](int& out, int lo, int hi) -> std::optional<std::string> {
      auto v = whole_number(node);
      if (!v || *v < lo || *v > hi) return want("a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
      out = static_cast<int>(*v);
      return std::nullopt;
    };
    std::optional<std::string> err;
    if (k == "workers") {
      if (auto n = whole_number(node)) raw.workers = std::to_string(*n);
      else if (auto s = node.value<std::string>()) raw.workers = *s;
      else err = want("a number or \"auto\"");
    } else if (k == "listen") err = strings(c.listen);
    else if (k == "name") err = text(c.name);
    else if (k == "distribution") err = text(raw.distribution);
    else if (k == "backlog") err = integer(c.backlog, 1, 65535);
    else if (k == "ready") err = text(raw.ready);
    else if (k == "ready_delay") err = duration(c.ready_delay);
    else if (k == "ready_timeout") err = duration(c.ready_timeout);
    else if (k == "graceful_timeout") err = duration(c.graceful_timeout);
    else if (k == "backoff_initial") err = duration(c.backoff_initial);
    else if (k == "backoff_max") err = duration(c.backoff_max);
    else if (k == "healthy_after") err = duration(c.healthy_after);
    else if (k == "degraded_after") err = integer(c.degraded_after, 1, 1000);
    else if (k == "control") err = text(c.control);
    else if (k == "user") err = text(c.user);
    else if (k == "watchdog") err = duration(c.watchdog);
    else if (k == "cluster") {
      if (auto b = node.value<bool>()) c.cluster = *b;
      else err = want("true or false");
    } else if (k == "node") err = text(c.node);
    else if (k == "nats") err = strings(c.nats);
    else if (k == "nats_listen") err = text(c.nats_listen);
    else if (k == "cluster_listen") err = text(c.cluster_listen);
    else if (k == "join") err = strings(c.join);
    else if (k == "data_dir") err = text(c.data_dir);
    else if (k == "max_store") err = integer(c.max_store, 0, 100000000);
    else if (k == "replicas") err = integer(c.replicas, 0, 5);
    else if (k == "replicas_wait") err = duration(c.replicas_wait);
    else if (k == "agent_check") err = text(c.agent_check);
    else if (k == "front_drain") err = duration(c.front_drain);
    else if (k == "admin") err = text(c.admin);
    else if (k == "max_requests") err = integer(c.max_requests, 0, 2000000000);
    else if (k == "max_requests_jitter") err = integer(c.max_requests_jitter, 0, 2000000000);
    else if (k == "max_memory") err = integer(c.max_memory, 0, 1000000);
    else if (k == "command") err = strings(c.command);
    else
      err = where + "unknown key '" + k +
            "' (known: workers, listen, name, distribution, backlog, ready, ready_delay, ready_timeout, "
            "graceful_timeout, backoff_initial, backoff_max, healthy_after, degraded_after, watchdog, "
            "max_requests, max_requests_jitter, max_memory, cluster, node, nats, nats_listen, cluster_listen, join, "
            "data_dir, max_store, replicas, replicas_wait, agent_check, front_drain, admin, control, user, command)";
    if (err) return err;
    if (auto e = apply_raw(raw, c, where)) return e;
  }
  return std::nullopt;
}

std::optional<std::string> parse_run_args(std::span<const std::string_view> args, config& out, bool* help) {
  bool asked = false;
  if (auto err = parse_flags(args, out, asked)) return err;
  if (help) *help = asked;
  return asked ? std::nullopt : check(out);
}

std::optional<std::string> reload_config(const config& current, std::span<const std::string> original_args,
                                         config& out) {
  std::vector<std::string_view> args(original_args.begin(), original_args.end());
  config fresh;
  fresh.inherited_sockets = current.inherited_sockets;
  if (auto err = parse_run_args(args, fresh, nullptr)) return err;
  // The instance keeps its identity across reloads.
  fresh.name = current.name;
  fresh.control = current.control;
  out = std::move(fresh);
  return std::nullopt;
}

std::string run_usage() {
  config c;
  raw_values raw;
  flag_set f("loopfleet run");
  register_flags(f, c, raw);
  std::string u = f.usage();
  return "usage: loopfleet run [flags] -- COMMAND [ARGS...]\n" + u.substr(u.find('\n') + 1);
}

std::string nats_url(const config& c) {
  if (!c.nats.empty()) {
    std::string out;
    for (const auto& u : c.nats) out += (out.empty() ? "" : ",") + u;
    return out;
  }
  return "nats://" + c.nats_listen;
}

int available_cpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

std::string runtime_dir() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) return std::string(xdg) + "/loopfleet";
  if (::getuid() == 0) return "/run/loopfleet";
  return "/tmp/loopfleet-" + std::to_string(::getuid());
}

std::string default_control_path(const std::string& name) { return runtime_dir() + "/" + name + ".sock"; }

run_as children_user(const config& c) { return c.run_user ? *c.run_user : current_user(); }

void make_private_dirs(const std::string& path) {
  for (std::size_t at = 1; at <= path.size(); ++at)
    if (at == path.size() || path[at] == '/') ::mkdir(path.substr(0, at).c_str(), 0700);
}

}  // namespace loopfleet::supervisor
