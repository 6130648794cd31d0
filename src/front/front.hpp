// The front: `loopfleet front`, HAProxy in front of the nodes.
//
// It writes an HAProxy configuration for the nodes given with --server and runs haproxy
// (master-worker mode) as its child. With --nats it also follows the cluster: every node that
// announces an HTTP address in its heartbeat is put into one of a fixed pool of server slots
// through HAProxy's runtime API, and taken out when it has stopped (follow.hpp). Each node's supervisor answers HAProxy's agent check
// (`loopfleet run --agent-check`): up with a weight from its serving workers, drain while it
// stops, down when nothing serves. HAProxy also checks each node's port itself, retries a
// refused connection on another node, and retries GET/HEAD requests that got no response.
// Two fronts on two machines (a DNS name with both, or keepalived moving an address) leave no
// single point of failure: neither holds state the other needs.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet::front {

struct server {
  std::string host;  // as HAProxy writes it: an IPv6 address without brackets
  int port = 0;
  int agent_port = 0;  // 0 = no agent check
};

// An address that moves between fronts: keepalived (VRRP) holds it on one front at a time and
// moves it within about three advertisement intervals when that front, or its haproxy, dies.
struct vip_settings {
  std::string address;             // IPv4 with prefix, "10.0.0.100/24"
  std::string interface;           // where it is added
  std::vector<std::string> peers;  // the other fronts' addresses (unicast VRRP); empty = multicast
  int priority = 100;              // the highest live priority holds the address
  int router_id = 51;              // the same on every front sharing this address
};

struct config {
  std::string name = "front";
  std::vector<std::string> listen;       // where clients connect, HOST:PORT
  std::vector<server> servers;           // the nodes
  std::chrono::milliseconds check_interval{1000};
  std::string stats;                     // HOST:PORT of the stats page and /metrics; empty = none
  std::string health_path;               // HTTP health check path; empty = TCP connect check
  std::string state_dir;                 // the generated configuration and haproxy's admin socket
  std::chrono::milliseconds graceful_timeout{std::chrono::seconds(30)};
  std::optional<vip_settings> vip;
  // Following the cluster: its NATS URLs (empty = --server only), the slots the nodes go in,
  // and how long a node that went quiet without stopping keeps its slot.
  std::vector<std::string> nats;
  int slots = 16;
  std::chrono::milliseconds forget_after{std::chrono::seconds(30)};
  // TLS at the front: every --listen address takes TLS with this PEM (certificate chain and
  // private key in one file, as HAProxy's `crt` reads it) and offers HTTP/2 and HTTP/1.1 by
  // ALPN. The nodes are still spoken to in plain HTTP/1.1. Empty = plain HTTP.
  std::string tls_cert;
};

// What is wrong with a PEM file's text for --tls-cert (nothing: it has a certificate and a
// private key). Pure, so the unit tests give it texts; the front reads the file first.
std::optional<std::string> check_tls_pem(std::string_view pem);

// Where haproxy saves the slots across a reload.
std::string server_state_file(const config& c);
std::string admin_socket(const config& c);

// Parses `loopfleet front` arguments. Returns an error sentence naming the flag and the fix.
// *help: --help was given (nothing else is checked); *print: --print-config was given.
std::optional<std::string> parse_args(std::span<const std::string_view> args, config& out, bool* help, bool* print);
std::string usage();

// The HAProxy configuration for `c`. Pure: unit tests read it.
std::string haproxy_config(const config& c);
// The keepalived configuration for `c.vip`: the address is held while `haproxy_pid` lives.
std::string keepalived_config(const config& c, int haproxy_pid, const std::string& kill_path);

// Writes the configuration, has haproxy check it, then runs haproxy in the foreground until
// it exits. SIGTERM/SIGINT: graceful stop (listeners close, requests in flight finish, at most
// graceful_timeout). SIGHUP: haproxy reloads without dropping connections. SIGQUIT: at once.
// With a VIP, keepalived runs beside haproxy and is stopped first, so the address moves to a
// peer before this front stops accepting.
// Returns the exit code.
int run(const config& c);

}  // namespace loopfleet::front
