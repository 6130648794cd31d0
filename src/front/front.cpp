#include "front/front.hpp"

#include "runtime/address.hpp"
#include "runtime/error.hpp"
#include "runtime/private_dir.hpp"
#include "runtime/settings.hpp"
#include "runtime/spawn.hpp"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <system_error>
#include <variant>

namespace loopfleet::front {
namespace {

// What the flags fill: the configuration, the VIP's settings (kept only with --vip) and the
// texts that are checked into servers once every flag is read.
struct front_flags : config, vip_settings {
  std::vector<std::string> server_specs;
  int agent_port = 0;
  bool print_config = false;
};

constexpr int max_port = 65535;

constexpr setting<front_flags> front_table[] = {
    {.name = "listen", .where = &front_flags::listen,
     .help = "where clients connect, HOST:PORT (comma-separated or repeated)"},
    {.name = "server", .where = &front_flags::server_specs,
     .help = "a node's HTTP address, HOST:PORT, with @AGENT_PORT for its --agent-check port (comma-separated or "
             "repeated)"},
    {.name = "agent-port", .where = &front_flags::agent_port, .range = {0, max_port},
     .help = "agent check port of servers given without @AGENT_PORT"},
    {.name = "check-interval", .where = &front_flags::check_interval,
     .help = "how often each node is checked (port and agent)"},
    {.name = "health-path", .where = &front_flags::health_path,
     .help = "check nodes with GET PATH (2xx/3xx = up) instead of a TCP connect"},
    {.name = "stats", .where = &front_flags::stats,
     .help = "HOST:PORT of HAProxy's stats page, with Prometheus metrics at /metrics"},
    {.name = "graceful-timeout", .where = &front_flags::graceful_timeout,
     .help = "on SIGTERM, how long requests in flight may finish"},
    {.name = "vip", .where = &front_flags::address,
     .help = "ADDRESS/PREFIX this front holds with keepalived while it is the live one with the highest priority"},
    {.name = "vip-interface", .where = &front_flags::interface,
     .help = "with --vip: the interface the address goes on"},
    {.name = "vip-peer", .where = &front_flags::peers,
     .help = "with --vip: another front's address for VRRP (unicast; default multicast)"},
    {.name = "vip-priority", .where = &front_flags::priority, .range = {1, 254},
     .help = "with --vip: higher holds the address"},
    {.name = "vip-router-id", .where = &front_flags::router_id, .range = {1, 255},
     .help = "with --vip: the same on every front of one address"},
    {.name = "name", .where = &front_flags::name, .help = "names the generated configuration and admin socket"},
    {.name = "state-dir", .where = &front_flags::state_dir, .shown_default = "$XDG_RUNTIME_DIR/loopfleet",
     .help = "where the configuration and admin socket go"},
    {.name = "print-config", .where = &front_flags::print_config, .help = "print the HAProxy configuration and exit"},
};

std::optional<std::string> parse_server(const std::string& text, int default_agent, server& out) {
  std::string address = text;
  out.agent_port = default_agent;
  if (auto at = text.rfind('@'); at != std::string::npos) {
    address = text.substr(0, at);
    std::string_view port = std::string_view(text).substr(at + 1);
    int value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > max_port)
      return "--server '" + text + "': the agent port after '@' must be a number from 1 to " +
             std::to_string(max_port);
    out.agent_port = value;
  }
  listen_address a;
  if (auto err = check_tcp_address("--server", address, &a)) return err;
  if (a.host == "0.0.0.0" || a.host == "::")
    return "--server '" + text + "' needs the node's address, not a wildcard (e.g. 10.0.0.1:8080)";
  out.host = a.host;
  out.port = a.port;
  return std::nullopt;
}

// "1500ms" for HAProxy, which takes a unit suffix on every time.
std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

std::string bind_text(const std::string& hostport) {
  // HAProxy reads "[::1]:80" as well as "::1:80"; an empty host (":80") means every address.
  return hostport.starts_with(":") ? "*" + hostport : hostport;
}

}  // namespace

std::string usage() {
  flag_set f("loopfleet front");
  front_flags all;
  add_settings<front_flags>(f, all, front_table);
  return "usage: loopfleet front --listen HOST:PORT --server HOST:PORT@AGENT_PORT [--server ...] [flags]\n\n"
         "Runs HAProxy in front of the nodes: each node's `loopfleet run --agent-check HOST:PORT` tells it\n"
         "up (with a weight), drain (stopping) or down. --print-config prints the configuration and exits.\n\n" +
         f.usage();
}

std::optional<std::string> parse_args(std::span<const std::string_view> args, config& out, bool* help, bool* print) {
  flag_set f("loopfleet front");
  front_flags all;
  static_cast<config&>(all) = out;
  add_settings<front_flags>(f, all, front_table);
  if (auto err = f.parse(args)) return err;
  if (help) *help = f.help_requested();
  if (f.help_requested()) return std::nullopt;
  if (print) *print = all.print_config;
  out = all;
  vip_settings& vip = all;
  split_commas(out.listen);
  split_commas(all.server_specs);
  if (out.listen.empty()) return "front needs --listen HOST:PORT: the address clients connect to";
  if (all.server_specs.empty())
    return "front needs at least one --server HOST:PORT@AGENT_PORT: a node's HTTP address and its --agent-check port";
  for (const auto& l : out.listen)
    if (auto err = check_tcp_address("--listen", l)) return err;
  out.servers.clear();
  for (const auto& text : all.server_specs) {
    server s;
    if (auto err = parse_server(text, all.agent_port, s)) return err;
    for (const auto& other : out.servers)
      if (other.host == s.host && other.port == s.port) return "--server " + text + " is given twice";
    out.servers.push_back(s);
  }
  if (!out.stats.empty())
    if (auto err = check_tcp_address("--stats", out.stats)) return err;
  if (!out.health_path.empty() && !out.health_path.starts_with("/"))
    return "--health-path '" + out.health_path + "' must start with '/', e.g. /health";
  if (out.check_interval.count() < 100) return "--check-interval must be at least 100ms";
  for (char ch : out.name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_')
      return "--name '" + out.name + "' may use letters, digits, '-' and '_' only";
  if (out.state_dir.empty()) out.state_dir = runtime_dir();
  if (!vip.address.empty()) {
    auto& v = vip;
    split_commas(v.peers);
    auto slash = v.address.find('/');
    in_addr ignored{};
    int prefix = slash == std::string::npos ? -1 : std::atoi(v.address.c_str() + slash + 1);
    if (slash == std::string::npos || ::inet_pton(AF_INET, v.address.substr(0, slash).c_str(), &ignored) != 1 ||
        prefix < 1 || prefix > 32)
      return "--vip '" + v.address + "' must be an IPv4 address with its prefix length, e.g. 10.0.0.100/24";
    if (v.interface.empty()) return "--vip needs --vip-interface: the interface the address goes on, e.g. eth0";
    for (const auto& peer : v.peers)
      if (::inet_pton(AF_INET, peer.c_str(), &ignored) != 1)
        return "--vip-peer '" + peer + "' must be the other front's IPv4 address";
    out.vip = v;
  } else if (!vip.interface.empty() || !vip.peers.empty()) {
    return "--vip-interface and --vip-peer need --vip ADDRESS/PREFIX";
  }
  return std::nullopt;
}

std::string haproxy_config(const config& c) {
  std::string inter = ms(c.check_interval);
  std::string o;
  o += "# Written by `loopfleet front` at every start: edit its flags, not this file.\n";
  o += "global\n";
  o += "    log stdout format raw local0 notice\n";
  o += "    stats socket " + c.state_dir + "/" + c.name + ".haproxy.sock mode 600 level admin expose-fd listeners\n";
  o += "    hard-stop-after " + ms(c.graceful_timeout) + "\n";
  o += "\ndefaults\n";
  o += "    mode http\n";
  o += "    log global\n";
  o += "    option httplog\n";
  o += "    option dontlog-normal\n";  // errors and retries only: a log line per request costs
  o += "    timeout connect 2s\n";
  o += "    timeout client 30s\n";
  o += "    timeout server 30s\n";
  o += "    timeout http-request 10s\n";
  o += "    timeout http-keep-alive 10s\n";
  o += "    timeout queue 10s\n";
  // A refused or reset connection, or a node that died before answering, is retried on
  // another node (redispatch on every retry), so a lost node costs no request that can be
  // sent again.
  o += "    retries 3\n";
  o += "    option redispatch 1\n";
  o += "    retry-on conn-failure empty-response\n";
  o += "\nfrontend loopfleet\n";
  // With a VIP, the address may be on the other front right now: bind it anyway
  // (IP_TRANSPARENT), so this front serves the moment keepalived moves it here.
  for (const auto& l : c.listen) o += "    bind " + bind_text(l) + (c.vip ? " transparent" : "") + "\n";
  o += "    default_backend nodes\n";
  o += "\nbackend nodes\n";
  o += "    balance leastconn\n";
  // Only requests that are safe to send twice are retried after they reached a node.
  o += "    http-request disable-l7-retry unless METH_GET\n";
  if (!c.health_path.empty()) {
    o += "    option httpchk GET " + c.health_path + "\n";
    o += "    http-check expect status 200-399\n";
  }
  o += "    default-server check inter " + inter + " fastinter " + ms(c.check_interval / 4) + " fall 2 rise 2 weight 100\n";
  for (const auto& s : c.servers) {
    bool v6 = s.host.find(':') != std::string::npos;
    std::string address = (v6 ? "[" + s.host + "]" : s.host) + ":" + std::to_string(s.port);
    o += "    server " + s.host + "_" + std::to_string(s.port) + " " + address;
    if (s.agent_port)
      o += " agent-check agent-addr " + s.host + " agent-port " + std::to_string(s.agent_port) + " agent-inter " + inter;
    o += "\n";
  }
  if (!c.stats.empty()) {
    o += "\nfrontend stats\n";
    o += "    bind " + bind_text(c.stats) + "\n";
    o += "    http-request use-service prometheus-exporter if { path /metrics }\n";
    o += "    stats enable\n";
    o += "    stats uri /\n";
    o += "    stats refresh 2s\n";
  }
  return o;
}

std::string keepalived_config(const config& c, int haproxy_pid, const std::string& kill_path) {
  const vip_settings& v = *c.vip;
  std::string o;
  o += "# Written by `loopfleet front` at every start: edit its flags, not this file.\n";
  o += "global_defs {\n    router_id loopfleet_" + c.name + "\n    script_user root\n    enable_script_security\n}\n";
  // The address stays only while this front's haproxy lives.
  o += "vrrp_script haproxy_alive {\n    script \"" + kill_path + " -0 " + std::to_string(haproxy_pid) + "\"\n";
  o += "    interval 1\n    fall 1\n    rise 1\n}\n";
  o += "vrrp_instance loopfleet_" + c.name + " {\n";
  o += "    state BACKUP\n";  // every front starts as backup; the election picks the holder
  o += "    interface " + v.interface + "\n";
  o += "    virtual_router_id " + std::to_string(v.router_id) + "\n";
  o += "    priority " + std::to_string(v.priority) + "\n";
  o += "    advert_int 1\n";
  if (!v.peers.empty()) {
    o += "    unicast_peer {\n";
    for (const auto& p : v.peers) o += "        " + p + "\n";
    o += "    }\n";
  }
  o += "    virtual_ipaddress {\n        " + v.address + " dev " + v.interface + "\n    }\n";
  o += "    track_script {\n        haproxy_alive\n    }\n";
  o += "}\n";
  return o;
}

namespace {

// haproxy and keepalived: in their own process group (a Ctrl-C on the terminal reaches only
// us; we stop the children in order), dying with SIGTERM if we die. -1 when fork fails.
pid_t start(const std::vector<std::string>& argv) {
  spawn_spec spec;
  spec.argv = argv;
  spec.exec_failure = "loopfleet: error: cannot run ";
  try {
    return spawn(spec).pid;
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "loopfleet: error: cannot start %s: %s\n", argv[0].c_str(), e.code().message().c_str());
    return -1;
  }
}

}  // namespace

int run(const config& c) {
  std::string haproxy = find_executable("haproxy");
  if (haproxy.empty()) {
    std::fprintf(stderr, "loopfleet: error: haproxy not found: install it (scripts/install-deps.sh installs it)\n");
    return 2;
  }
  std::string keepalived = c.vip ? find_executable("keepalived") : "";
  std::string kill_path = find_executable("kill");  // keepalived's check of haproxy
  if (c.vip && (keepalived.empty() || kill_path.empty())) {
    std::fprintf(stderr, "loopfleet: error: %s not found (--vip needs it): install it "
                         "(scripts/install-deps.sh installs it)\n", keepalived.empty() ? "keepalived" : "kill");
    return 2;
  }
  // Fail with our own words when an address is taken, before haproxy starts. (A VIP's address
  // may be held elsewhere now: haproxy binds it transparently.)
  for (const auto& l : c.vip ? std::vector<std::string>{} : c.listen) {
    try {
      listener probe = bind_listener(std::get<listen_address>(parse_listen_address(l)), "--listen " + l, 1);
      ::close(probe.fd);
    } catch (const startup_error& e) {
      std::fprintf(stderr, "loopfleet: error: %s\n", e.what());
      return 2;
    }
  }
  if (auto err = ensure_private_dir(
          "state directory", c.state_dir, current_user(),
          "remove it (rm -r " + c.state_dir + ") or choose another --state-dir")) {
    std::fprintf(stderr, "loopfleet: error: %s\n", err->c_str());
    return 2;
  }
  std::string file = c.state_dir + "/" + c.name + ".haproxy.cfg";
  {
    std::ofstream out(file);
    out << haproxy_config(c);
    if (!out) {
      std::fprintf(stderr, "loopfleet: error: cannot write %s (choose a writable --state-dir)\n", file.c_str());
      return 2;
    }
  }
  // Signals are taken with sigwaitinfo below: block them before the child exists.
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&mask, sig);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGCHLD, SIG_DFL);  // an inherited SIG_IGN would reap the children behind our back

  int status = 0;
  pid_t check = start({haproxy, "-c", "-q", "-f", file});
  if (check < 0 || ::waitpid(check, &status, 0) != check) return 2;
  if (exit_code(status) == 127) return 2;  // could not run it: said by the child
  if (exit_code(status) != 0) {
    std::fprintf(stderr, "loopfleet: error: haproxy rejected %s (its message is above)\n", file.c_str());
    return 2;
  }
  pid_t pid = start({haproxy, "-W", "-db", "-f", file});
  if (pid < 0) return 2;
  std::fprintf(stderr, "loopfleet: front '%s': haproxy pid %d, %zu node(s), configuration %s\n", c.name.c_str(),
               static_cast<int>(pid), c.servers.size(), file.c_str());
  pid_t vrrp = 0;
  if (c.vip) {
    std::string ka = c.state_dir + "/" + c.name + ".keepalived.conf";
    std::ofstream(ka) << keepalived_config(c, pid, kill_path);
    std::string base = c.state_dir + "/" + c.name;
    vrrp = start({keepalived, "--dont-fork", "--log-console", "--no-syslog", "--vrrp", "--use-file", ka,
                  "--pid", base + ".keepalived.pid", "--vrrp_pid", base + ".vrrp.pid"});
    if (vrrp < 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, &status, 0);
      return 2;
    }
    std::fprintf(stderr, "loopfleet: front '%s': keepalived pid %d holds %s with priority %d when elected\n",
                 c.name.c_str(), static_cast<int>(vrrp), c.vip->address.c_str(), c.vip->priority);
  }
  auto say = [&](const std::string& what) {
    std::fprintf(stderr, "loopfleet: front '%s': %s\n", c.name.c_str(), what.c_str());
  };
  // A stop goes to keepalived first: it hands the address to a peer, and haproxy is told to
  // stop only once keepalived is gone, so clients reach the peer instead of closed listeners.
  // HAProxy's master can miss a signal that comes in its first second or two (seen with 2.6:
  // the soft stop never began), so the stop is repeated every second until haproxy exits.
  // A hard stop (SIGTERM to haproxy) wins over a soft one (SIGUSR1), never the reverse.
  int stop_signal = 0;
  auto stop = [&](int haproxy_signal) {
    if (stop_signal == SIGTERM) return;
    stop_signal = haproxy_signal;
    if (vrrp) ::kill(vrrp, SIGTERM);
    if (pid && (!vrrp || haproxy_signal == SIGTERM)) ::kill(pid, stop_signal);
  };
  int haproxy_status = 0;
  for (;;) {
    siginfo_t info{};
    timespec second{1, 0};
    int sig = stop_signal ? ::sigtimedwait(&mask, &info, &second) : ::sigwaitinfo(&mask, &info);
    if (sig < 0) {
      if (stop_signal && pid && !vrrp) ::kill(pid, stop_signal);
      continue;
    }
    switch (sig) {
      case SIGTERM:
      case SIGINT:
        say("graceful stop: no new connections, requests in flight finish");
        stop(SIGUSR1);  // haproxy's soft stop
        break;
      case SIGHUP:
        if (stop_signal) break;  // a reload would bind the listeners again
        say("reload");
        if (pid) ::kill(pid, SIGUSR2);  // haproxy's reload: new workers take the listeners over
        break;
      case SIGQUIT:
        say("fast stop");
        stop(SIGTERM);  // haproxy's hard stop
        break;
      case SIGCHLD:
        for (pid_t done; (done = ::waitpid(-1, &status, WNOHANG)) > 0;) {
          if (done == vrrp) {
            vrrp = 0;
            if (!stop_signal) {
              say("keepalived exited (" + std::to_string(exit_code(status)) +
                  "): stopping this front; a peer holds the address");
              stop(SIGUSR1);
            } else if (pid) {
              ::kill(pid, stop_signal);  // the address has moved: now haproxy stops
            }
          } else if (done == pid) {
            pid = 0;
            haproxy_status = status;
            say("haproxy exited (" + std::to_string(exit_code(status)) + ")");
            if (vrrp) ::kill(vrrp, SIGTERM);
          }
        }
        if (!pid && !vrrp) return exit_code(haproxy_status);
        break;
    }
  }
}

}  // namespace loopfleet::front
