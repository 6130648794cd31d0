#include "supervisor/config.hpp"

#include "cluster/schedule.hpp"
#include "runtime/address.hpp"
#include "runtime/flags.hpp"
#include "runtime/private_dir.hpp"

#include <arpa/inet.h>
#include <sched.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <variant>

namespace loopfleet::supervisor {
namespace {

std::optional<std::string> parse_workers(std::string_view text, config& out) {
  if (text == "auto") {
    out.workers = 0;
    return std::nullopt;
  }
  std::string digits(text);
  char* end = nullptr;
  long n = std::strtol(digits.c_str(), &end, 10);
  if (*end || n < 1 || n > max_workers)
    return "is not a number from 1 to " + std::to_string(max_workers) + " or auto";
  out.workers = static_cast<int>(n);
  return std::nullopt;
}

std::optional<std::string> parse_distribution(std::string_view text, config& out) {
  return one_of(text, out.distribution, {{"shared", distribution::shared}, {"reuseport", distribution::reuseport}});
}

std::optional<std::string> parse_access_log_format(std::string_view text, config& out) {
  return one_of(text, out.access_log_format,
                {{"json", access_log_format::json}, {"combined", access_log_format::combined}});
}

std::optional<std::string> parse_ready(std::string_view text, config& out) {
  return one_of(text, out.ready, {{"notify", readiness::notify}, {"started", readiness::started}});
}

constexpr int no_limit = 2000000000;  // a count with no natural bound, kept clear of int overflow

// In --help order. `config` is a flag only (a file does not name another); `command` is a
// key only (on the command line it follows --).
constexpr setting<config> run_table[] = {
    {.name = "config", .where = &config::config_file, .scope = setting_scope::flag_only,
     .help = "TOML file with any of these settings (flags win)"},
    {.name = "workers", .where = setting<config>::parsed{parse_workers, "a number or \"auto\"", true},
     .shown_default = "auto",
     .help = "worker processes: a number, or auto = CPUs available (the affinity mask, or the cgroup's CPU quota if "
             "lower)"},
    {.name = "listen", .where = &config::listen, .shown_default = default_listen,
     .help = "address to serve: HOST:PORT, [IPV6]:PORT or unix:PATH"},
    {.name = "name", .where = &config::name, .shown_default = "the command's file name",
     .help = "instance name (control socket, logs)"},
    {.name = "distribution", .where = setting<config>::parsed{parse_distribution}, .shown_default = "reuseport",
     .help = "shared (one socket, every worker accepts) or reuseport (one queue per slot)"},
    {.name = "backlog", .where = &config::backlog, .range = {1, max_backlog}, .help = "listen backlog of each socket"},
    {.name = "ready", .where = setting<config>::parsed{parse_ready}, .shown_default = "notify",
     .help = "notify (worker sends READY=1) or started (alive for --ready-delay)"},
    {.name = "ready-delay", .where = &config::ready_delay,
     .help = "with --ready=started: how long alive counts as ready"},
    {.name = "ready-timeout", .where = &config::ready_timeout, .help = "a starting worker not ready by then is killed"},
    {.name = "graceful-timeout", .where = &config::graceful_timeout,
     .help = "drain time given to a worker before SIGKILL"},
    {.name = "backoff-initial", .where = &config::backoff_initial, .help = "first restart delay after a crash"},
    {.name = "backoff-max", .where = &config::backoff_max, .help = "longest restart delay"},
    {.name = "healthy-after", .where = &config::healthy_after, .help = "uptime after which the backoff resets"},
    {.name = "degraded-after", .where = &config::degraded_after, .range = {1, 1000},
     .help = "failed starts in a row that mark a slot degraded"},
    {.name = "watchdog", .where = &config::watchdog,
     .help = "a worker whose loop does not beat this long is stalled: stack dump, replaced; 0 = off"},
    {.name = "max-requests", .where = &config::max_requests, .range = {0, no_limit},
     .help = "recycle a worker after this many requests (0 = never)"},
    {.name = "max-requests-jitter", .where = &config::max_requests_jitter, .range = {0, no_limit},
     .help = "random extra requests per worker"},
    {.name = "max-memory", .where = &config::max_memory, .range = {0, 1000000},
     .help = "recycle a worker whose RSS exceeds this many MiB (0 = never)"},
    {.name = "cluster", .where = &config::cluster,
     .help = "join the cluster layer: run a local nats-server with JetStream"},
    {.name = "node", .where = &config::node, .shown_default = "the host name",
     .help = "this node's name in the cluster"},
    {.name = "nats", .where = &config::nats,
     .help = "URL of an existing NATS cluster to use instead of a local nats-server"},
    {.name = "nats-listen", .where = &config::nats_listen, .help = "client address of the local nats-server"},
    {.name = "cluster-listen", .where = &config::cluster_listen,
     .help = "route address of the local nats-server, for other nodes"},
    {.name = "join", .where = &config::join,
     .help = "another node's --cluster-listen address, HOST:PORT (comma-separated or repeated)"},
    {.name = "data-dir", .where = &config::data_dir, .shown_default = "under $XDG_STATE_HOME or /var/lib",
     .help = "JetStream storage directory"},
    {.name = "max-store", .where = &config::max_store, .range = {0, 100000000},
     .help = "JetStream storage limit of the local nats-server, in MiB (0 = its default, 75% of the disk)"},
    {.name = "replicas", .where = &config::replicas, .range = {0, 5},
     .help = "servers that hold every stored job (JetStream replicas); 0 = min(3, 1 + number of --join peers)"},
    {.name = "replicas-wait", .where = &config::replicas_wait,
     .help = "how long to wait for that many servers before creating the streams with fewer (with a warning); "
             "0 = wait as long as it takes"},
    {.name = "schedule", .where = &config::schedule,
     .help = "a fixed schedule, \"NAME every DURATION [PAYLOAD]\": job NAME submitted once per tick across the "
             "cluster (repeat for more; loopfleet job schedule adds others at run time)"},
    {.name = "agent-check", .where = &config::agent_check,
     .help = "answer HAProxy's agent check on HOST:PORT: up and a weight, drain while stopping, down"},
    {.name = "front-drain", .where = &config::front_drain,
     .help = "with --agent-check: how long a graceful stop says drain before stopping the workers"},
    {.name = "advertise", .where = &config::advertise, .shown_default = "the bound address",
     .help = "the host (IP) other machines reach --listen and --agent-check at, put in the cluster heartbeat for "
             "fronts that follow the cluster (a wildcard bind otherwise advertises the first non-loopback IPv4)"},
    {.name = "admin", .where = &config::admin,
     .help = "serve /metrics (Prometheus), /status.json and a live status page on HOST:PORT (a bare PORT is "
             "127.0.0.1:PORT)"},
    {.name = "access-log", .where = &config::access_log,
     .help = "each worker writes a line per request to this file (O_APPEND, reopened within a second when "
             "logrotate moves it), or to the supervisor's stdout with -; off when not given"},
    {.name = "access-log-format", .where = setting<config>::parsed{parse_access_log_format},
     .shown_default = "json",
     .help = "json (one object per line) or combined (nginx's and Apache's format, then slot= and duration_ms=)"},
    {.name = "orphan-timeout", .where = &config::orphan_timeout,
     .help = "if the supervisor dies unexpectedly, a keeper process holds its sockets this long, so that the same "
             "loopfleet run started again adopts them with every queued connection; 0 = no keeper"},
    {.name = "control", .where = &config::control, .shown_default = "$XDG_RUNTIME_DIR/loopfleet/NAME.sock",
     .help = "control socket path"},
    {.name = "user", .where = &config::user,
     .help = "run the workers, their helpers and nats-server as USER[:GROUP] or UID:GID; the supervisor keeps root "
             "to bind sockets and signal them (USER alone: the user's groups; USER:GROUP: that group only)"},
    {.name = "command", .where = &config::command, .scope = setting_scope::file_only, .help = "the worker command"},
};

std::optional<std::string> check_cluster(config& c) {
  split_commas(c.join);
  split_commas(c.nats);
  if (!c.join.empty() || !c.nats.empty()) c.cluster = true;
  if (!c.cluster && !c.schedule.empty())
    return "--schedule '" + c.schedule.front() + "' needs the cluster layer: add --cluster (or --join, --nats)";
  for (const auto& entry : c.schedule)
    if (cluster::schedule s; auto err = cluster::parse_schedule_entry(entry, s)) return "--" + *err;
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
  if (c.listen.empty() && !c.inherited_sockets) {
    c.listen.emplace_back(default_listen);
    c.listen_defaulted = true;
  }
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
  // An IP: HAProxy's runtime API sets a server's address only to one (it resolves no names there).
  if (in6_addr ip{}; !c.advertise.empty() && ::inet_pton(AF_INET, c.advertise.c_str(), &ip) != 1 &&
                     ::inet_pton(AF_INET6, c.advertise.c_str(), &ip) != 1)
    return "--advertise '" + c.advertise + "' must be the IP address other machines reach this node at, e.g. 10.0.0.5";
  if (!c.admin.empty()) {
    if (c.admin.find_first_not_of("0123456789") == std::string::npos) c.admin = "127.0.0.1:" + c.admin;
    if (auto err = check_tcp_address("--admin", c.admin)) return err;
  }
  if (!c.access_log.empty() && c.access_log != "-" && !c.access_log.starts_with("/")) {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd)) c.access_log = std::string(cwd) + "/" + c.access_log;
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
  flag_set f("loopfleet run");
  add_settings(f, from_flags, run_settings());
  if (auto err = f.parse(flags)) return err;
  help = f.help_requested();
  if (help) return std::nullopt;
  if (!from_flags.config_file.empty()) {
    if (auto err = load_config_file(from_flags.config_file, c)) return err;
    c.config_file = from_flags.config_file;
  }
  // Second pass onto the file's values.
  flag_set g("loopfleet run");
  add_settings(g, c, run_settings());
  // A --listen list given as flags replaces the file's rather than adding to it.
  std::vector<std::string> file_listen = std::move(c.listen);
  c.listen.clear();
  if (auto err = g.parse(flags)) return err;
  if (c.listen.empty()) c.listen = std::move(file_listen);
  if (!command.empty()) c.command = std::move(command);
  return std::nullopt;
}

}  // namespace

std::span<const setting<config>> run_settings() { return run_table; }

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
  flag_set f("loopfleet run");
  add_settings(f, c, run_settings());
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

run_as children_user(const config& c) { return c.run_user ? *c.run_user : current_user(); }

}  // namespace loopfleet::supervisor
