#include "front/front.hpp"
#include "front/follow.hpp"
#include "front/policy.hpp"

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
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
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
    {.name = "nats", .where = &front_flags::nats,
     .help = "follow the cluster: NATS URL(s) of its nodes (comma-separated or repeated); every node announcing "
             "an HTTP address is balanced to, without a reload"},
    {.name = "slots", .where = &front_flags::slots, .range = {1, 1024},
     .help = "with --nats: server slots for the cluster's nodes (the most nodes balanced to at once)"},
    {.name = "forget-after", .where = &front_flags::forget_after,
     .help = "with --nats: a node silent this long without having stopped loses its slot (its checks mark it "
             "down at once)"},
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
    {.name = "tls-cert", .where = &front_flags::tls_cert,
     .help = "PEM file with the certificate (chain) and its private key: --listen takes TLS, offering HTTP/2 and "
             "HTTP/1.1 by ALPN (the nodes still get HTTP/1.1)"},
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
  return "usage: loopfleet front --listen HOST:PORT (--server HOST:PORT@AGENT_PORT ... | --nats URL) [flags]\n\n"
         "Runs HAProxy in front of the nodes: each node's `loopfleet run --agent-check HOST:PORT` tells it\n"
         "up (with a weight), drain (stopping) or down. With --nats it follows the cluster: nodes that join\n"
         "are balanced to, nodes that stop are taken out. --print-config prints the configuration and exits.\n\n" +
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
  split_commas(out.nats);
  if (out.listen.empty()) return "front needs --listen HOST:PORT: the address clients connect to";
  if (all.server_specs.empty() && out.nats.empty())
    return "front needs at least one --server HOST:PORT@AGENT_PORT (a node's HTTP address and its --agent-check "
           "port) or --nats URL (follow the cluster)";
  for (const auto& url : out.nats)
    if (!url.starts_with("nats://") && !url.starts_with("tls://"))
      return "--nats '" + url + "' is not a NATS URL: use nats://HOST:PORT";
  if (out.forget_after.count() < 1000) return "--forget-after must be at least 1s";
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
  // HAProxy binds its admin socket as PATH.PID.tmp first, and a Unix socket's path holds 107
  // bytes: with a pid of up to 7 digits, PATH may have 95.
  constexpr std::size_t admin_socket_most = 95;
  if (auto socket = admin_socket(out); socket.size() > admin_socket_most)
    return "--state-dir " + out.state_dir + " is too long for HAProxy's admin socket (" + socket + " is " +
           std::to_string(socket.size()) + " bytes; at most " + std::to_string(admin_socket_most) +
           " fit): choose a shorter --state-dir or --name";
  if (!out.tls_cert.empty()) {
    // Read here, so a missing key is our one line and not haproxy's paragraph after a start.
    std::ifstream in(out.tls_cert);
    if (!in.is_open())
      return "--tls-cert " + out.tls_cert + " cannot be opened (" + std::strerror(errno) +
             "): give a readable PEM file with the certificate and its private key";
    std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad())
      return "--tls-cert " + out.tls_cert + " cannot be read: give a readable PEM file (certificate and key)";
    if (auto err = check_tls_pem(pem)) return "--tls-cert " + out.tls_cert + ": " + *err;
  }
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

std::optional<std::string> check_tls_pem(std::string_view pem) {
  bool cert = pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos;
  // PKCS#8 ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") or the older "RSA/EC PRIVATE KEY" forms.
  auto begin = pem.find("-----BEGIN ");
  bool key = false;
  for (; begin != std::string_view::npos; begin = pem.find("-----BEGIN ", begin + 1)) {
    auto end = pem.find("-----", begin + 11);
    if (end == std::string_view::npos) break;
    std::string_view label = pem.substr(begin + 11, end - begin - 11);
    if (label.ends_with("PRIVATE KEY")) {
      if (label.starts_with("ENCRYPTED"))
        return std::string("its private key is encrypted, and haproxy cannot ask for a passphrase: decrypt it "
                           "(openssl pkey -in KEY -out KEY.plain) and put it beside the certificate");
      key = true;
    }
  }
  if (!cert && !key)
    return std::string("no PEM certificate or key in it: give one file with the certificate (chain) and its private key");
  if (!cert) return std::string("no certificate in it (only a key): append the certificate (cat cert.pem key.pem > both.pem)");
  if (!key)
    return std::string("no private key in it (only a certificate): append the key (cat cert.pem key.pem > both.pem)");
  return std::nullopt;
}

std::string server_state_file(const config& c) { return c.state_dir + "/" + c.name + ".servers.state"; }
std::string admin_socket(const config& c) { return c.state_dir + "/" + c.name + ".haproxy.sock"; }

std::string haproxy_config(const config& c) {
  std::string inter = ms(c.check_interval);
  std::string o;
  o += "# Written by `loopfleet front` at every start: edit its flags, not this file.\n";
  o += "global\n";
  o += "    log stdout format raw local0 notice\n";
  o += "    stats socket " + admin_socket(c) + " mode 600 level admin expose-fd listeners\n";
  o += "    hard-stop-after " + ms(c.graceful_timeout) + "\n";
  if (!c.tls_cert.empty()) o += "    ssl-default-bind-options ssl-min-ver TLSv1.2\n";
  // The slots the front filled through the runtime API, saved before each reload.
  if (!c.nats.empty()) o += "    server-state-file " + server_state_file(c) + "\n";
  o += "\ndefaults\n";
  o += "    mode http\n";
  o += "    log global\n";
  o += "    option httplog\n";
  o += "    option dontlog-normal\n";  // errors and retries only: a log line per request costs
  // Not `option idle-close-on-response` (a reload's old worker answering one more request on
  // each idle keep-alive connection): with it, haproxy 2.6.12's master exited with status 138
  // (its worker ended by SIGUSR1) in about 1 graceful stop in 3 under load in
  // test_front_vip.py. A reload under load may fail the requests racing the close instead.
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
  if (!c.nats.empty()) o += "    load-server-state-from-file global\n";
  o += "\nfrontend loopfleet\n";
  // With a VIP, the address may be on the other front right now: bind it anyway
  // (IP_TRANSPARENT), so this front serves the moment keepalived moves it here.
  // With TLS, HTTP/2 is offered first to clients that speak it; the backends stay HTTP/1.1
  // (HAProxy converts), because the nodes' server speaks HTTP/1.1 only.
  std::string tls = c.tls_cert.empty() ? "" : " ssl crt " + c.tls_cert + " alpn h2,http/1.1";
  for (const auto& l : c.listen) o += "    bind " + bind_text(l) + (c.vip ? " transparent" : "") + tls + "\n";
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
  // The cluster's nodes go into these, parked in maintenance at a port nothing listens on
  // until the front fills one (follow.cpp). Fixed slots, not `add server`: see follow.hpp.
  if (!c.nats.empty())
    o += "    server-template node 1-" + std::to_string(c.slots) + " " + endpoint_text(empty_slot_address) +
         " disabled agent-check agent-addr " + empty_slot_address.host + " agent-port 1 agent-inter " + inter + "\n";
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

void say(const config& c, const std::string& what) {
  std::fprintf(stderr, "loopfleet: front '%s': %s\n", c.name.c_str(), what.c_str());
}

struct programs {
  std::string haproxy;
  std::string keepalived;  // with --vip
  std::string kill;        // keepalived's check of haproxy
};

std::optional<programs> find_programs(const config& c) {
  programs p{find_executable("haproxy"), c.vip ? find_executable("keepalived") : "", find_executable("kill")};
  if (p.haproxy.empty()) {
    std::fprintf(stderr, "loopfleet: error: haproxy not found: install it (scripts/install-deps.sh installs it)\n");
    return std::nullopt;
  }
  if (c.vip && (p.keepalived.empty() || p.kill.empty())) {
    std::fprintf(stderr, "loopfleet: error: %s not found (--vip needs it): install it "
                         "(scripts/install-deps.sh installs it)\n", p.keepalived.empty() ? "keepalived" : "kill");
    return std::nullopt;
  }
  return p;
}

// Fails with our own words when an address is taken, before haproxy starts. (A VIP's address
// may be held elsewhere now: haproxy binds it transparently.)
bool listeners_free(const config& c) {
  for (const auto& l : c.vip ? std::vector<std::string>{} : c.listen) {
    try {
      listener probe = bind_listener(std::get<listen_address>(parse_listen_address(l)), "--listen " + l, 1);
      ::close(probe.fd);
    } catch (const startup_error& e) {
      std::fprintf(stderr, "loopfleet: error: %s\n", e.what());
      return false;
    }
  }
  return true;
}

// The configuration file's path, or nothing after saying why it could not be written.
std::optional<std::string> write_haproxy_config(const config& c) {
  if (auto err = ensure_private_dir(
          "state directory", c.state_dir, current_user(),
          "remove it (rm -r " + c.state_dir + ") or choose another --state-dir")) {
    std::fprintf(stderr, "loopfleet: error: %s\n", err->c_str());
    return std::nullopt;
  }
  std::string file = c.state_dir + "/" + c.name + ".haproxy.cfg";
  std::ofstream out(file);
  out << haproxy_config(c);
  if (!out) {
    std::fprintf(stderr, "loopfleet: error: cannot write %s (choose a writable --state-dir)\n", file.c_str());
    return std::nullopt;
  }
  // A fresh start begins with empty slots (the cluster fills them); only a reload keeps them.
  if (!c.nats.empty()) std::ofstream(server_state_file(c), std::ios::trunc) << "1\n";
  return file;
}

// The signals supervise() takes with sigwaitinfo: blocked before any child exists, so none
// is lost in between.
sigset_t block_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  // SIGUSR1 and SIGUSR2 mean nothing to the front, but their default action would end it and
  // leave haproxy and keepalived without their supervisor: taken here, they are logged with
  // who sent them (a CI run saw a front die of a SIGUSR1 from a sender not yet found).
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) sigaddset(&mask, sig);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGCHLD, SIG_DFL);  // an inherited SIG_IGN would reap the children behind our back
  return mask;
}

// Waits for `haproxy -c` to accept the configuration; says why not when it does not.
bool haproxy_accepts(const programs& p, const std::string& file) {
  int status = 0;
  pid_t check = start({p.haproxy, "-c", "-q", "-f", file});
  if (check < 0 || ::waitpid(check, &status, 0) != check) return false;
  if (exit_code(status) == 127) return false;  // could not run it: said by the child
  if (exit_code(status) != 0) {
    std::fprintf(stderr, "loopfleet: error: haproxy rejected %s (its message is above)\n", file.c_str());
    return false;
  }
  return true;
}

// "nats://a:4222,nats://b:4222": the form nats_connection and the log take.
std::string nats_urls(const config& c) {
  std::string out;
  for (const auto& url : c.nats) out += (out.empty() ? "" : ",") + url;
  return out;
}

pid_t start_haproxy(const config& c, const programs& p, const std::string& file) {
  pid_t pid = start({p.haproxy, "-W", "-db", "-f", file});
  std::string cluster = nats_urls(c);
  if (pid > 0)
    say(c, "haproxy pid " + std::to_string(pid) + ", " + std::to_string(c.servers.size()) + " node(s)" +
               (cluster.empty() ? "" : " and " + std::to_string(c.slots) + " slots for the cluster at " + cluster) +
               ", configuration " + file);
  return pid;
}

// With --nats: the thread that keeps the slots equal to the cluster's nodes.
std::unique_ptr<cluster_follower> follow(const config& c) {
  if (c.nats.empty()) return nullptr;
  follow_config f;
  f.name = c.name;
  f.socket = admin_socket(c);
  f.state_file = server_state_file(c);
  f.nats_url = nats_urls(c);
  f.settings.forget_after_s = static_cast<double>(c.forget_after.count()) / 1000;
  for (const auto& s : c.servers) f.settings.fixed.push_back({s.host, s.port});
  return std::make_unique<cluster_follower>(std::move(f));
}

pid_t start_keepalived(const config& c, const programs& p, pid_t haproxy) {
  std::string ka = c.state_dir + "/" + c.name + ".keepalived.conf";
  std::ofstream(ka) << keepalived_config(c, haproxy, p.kill);
  std::string base = c.state_dir + "/" + c.name;
  pid_t pid = start({p.keepalived, "--dont-fork", "--log-console", "--no-syslog", "--vrrp", "--use-file", ka, "--pid",
                     base + ".keepalived.pid", "--vrrp_pid", base + ".vrrp.pid"});
  if (pid > 0)
    say(c, "keepalived pid " + std::to_string(pid) + " holds " + c.vip->address + " with priority " +
               std::to_string(c.vip->priority) + " when elected");
  return pid;
}

// The children while they run (0 once reaped) and the stop told so far: the snapshot that
// policy.hpp decides over.
struct children {
  pid_t haproxy = 0;
  pid_t keepalived = 0;
  int stop = 0;
  int haproxy_status = 0;  // its wait status, once reaped: our exit code

  children_view view() const { return {.haproxy = haproxy != 0, .keepalived = keepalived != 0, .stop = stop}; }
};

std::string announcement(front_event e, int exit_status) {
  switch (e) {
    case front_event::graceful_stop: return "graceful stop: no new connections, requests in flight finish";
    case front_event::fast_stop: return "fast stop";
    case front_event::reload: return "reload";
    case front_event::keepalived_exited:
      return "keepalived exited (" + std::to_string(exit_code(exit_status)) +
             "): stopping this front; a peer holds the address";
    case front_event::haproxy_exited: return "haproxy exited (" + std::to_string(exit_code(exit_status)) + ")";
    case front_event::quiet_second: break;
  }
  return {};
}

// Applies decide()'s step for `e`; true when the front is done.
bool apply(const config& c, children& kids, front_event e, int exit_status = 0) {
  front_step step = decide(kids.view(), e);
  if (step.announce) say(c, announcement(e, exit_status));
  if (step.stop_keepalived) ::kill(kids.keepalived, SIGTERM);
  std::string error;
  if (step.signal_haproxy == SIGUSR2 && !c.nats.empty() && !save_server_state(admin_socket(c), server_state_file(c), error))
    say(c, "cannot save the slots before the reload (" + error + "): the cluster fills them again after it");
  if (step.signal_haproxy) ::kill(kids.haproxy, step.signal_haproxy);
  kids.stop = step.stop;
  return step.exit;
}

// Until both children are gone: signals become events for policy.hpp, and so does each
// child's exit. Returns haproxy's exit code. Once a stop is under way, or haproxy is gone, the
// follower (if any) leaves haproxy's servers alone.
int supervise(const config& c, const sigset_t& mask, children kids, cluster_follower* follower) {
  auto quiet_follower = [&] {
    if (follower && (kids.stop || !kids.haproxy)) follower->request_stop();
  };
  for (;;) {
    siginfo_t info{};
    timespec second{1, 0};
    int sig = stopping(kids.view()) ? ::sigtimedwait(&mask, &info, &second) : ::sigwaitinfo(&mask, &info);
    switch (sig) {
      case SIGTERM:
      case SIGINT: apply(c, kids, front_event::graceful_stop); break;
      case SIGHUP: apply(c, kids, front_event::reload); break;
      case SIGQUIT: apply(c, kids, front_event::fast_stop); break;
      case SIGUSR1:
      case SIGUSR2:
        say(c, std::string("ignoring ") + (sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2") + " from pid " +
                   std::to_string(info.si_pid) + " (haproxy pid " + std::to_string(kids.haproxy) + ", keepalived pid " +
                   std::to_string(kids.keepalived) + ")");
        break;
      case SIGCHLD: {
        int status = 0;
        for (pid_t done; (done = ::waitpid(-1, &status, WNOHANG)) > 0;) {
          bool over = false;
          if (done == kids.keepalived) {
            kids.keepalived = 0;
            over = apply(c, kids, front_event::keepalived_exited, status);
          } else if (done == kids.haproxy) {
            kids.haproxy = 0;
            kids.haproxy_status = status;
            over = apply(c, kids, front_event::haproxy_exited, status);
          }
          quiet_follower();
          if (over) return exit_code(kids.haproxy_status);
        }
        break;
      }
      default: apply(c, kids, front_event::quiet_second); break;  // timed out or interrupted
    }
    quiet_follower();
  }
}

}  // namespace

int run(const config& c) {
  auto found = find_programs(c);
  if (!found || !listeners_free(c)) return 2;
  auto file = write_haproxy_config(c);
  if (!file) return 2;
  sigset_t mask = block_signals();
  if (!haproxy_accepts(*found, *file)) return 2;
  children kids;
  kids.haproxy = start_haproxy(c, *found, *file);
  if (kids.haproxy < 0) return 2;
  if (c.vip) {
    kids.keepalived = start_keepalived(c, *found, kids.haproxy);
    if (kids.keepalived < 0) {
      int status = 0;
      ::kill(kids.haproxy, SIGTERM);
      ::waitpid(kids.haproxy, &status, 0);
      return 2;
    }
  }
  // After the signals are blocked: its threads and nats.c's inherit the mask, so every signal
  // still comes to supervise().
  auto follower = follow(c);
  return supervise(c, mask, kids, follower.get());
}

}  // namespace loopfleet::front
