// `loopfleet front --nats URL`: the front follows the cluster's membership. A thread reads the
// nodes bucket (cluster::read_nodes, the heartbeat every node's agent puts each second) and
// HAProxy's slots (`show servers state`), asks policy.hpp's plan_slots what to change, and
// changes it through HAProxy's runtime API (the admin socket): no reload, no dropped connection.
// The slots are a fixed pool of `server-template` servers, never `add server`/`del server`:
// HAProxy 2.6.12 (Debian 12) can crash deleting a server that streams still point to, and
// reuses no connection to a server made at run time (docs/front.md).
#pragma once

#include "front/policy.hpp"

#include <atomic>
#include <optional>
#include <string>
#include <thread>

namespace loopfleet::front {

struct follow_config {
  std::string name;        // the front's, for its log lines
  std::string nats_url;    // one URL or several, comma-separated
  std::string socket;      // haproxy's admin socket
  std::string state_file;  // where the slots are saved for a reload
  std::string backend = "nodes";
  std::string slot_prefix = "node";
  follow_settings settings;
};

class cluster_follower {
 public:
  explicit cluster_follower(follow_config c);  // starts following at once
  ~cluster_follower();                          // stops (within one NATS timeout) and joins
  // Changes nothing from now on (the front is stopping); the thread ends at its next round.
  void request_stop() { stop_ = true; }
  cluster_follower(const cluster_follower&) = delete;
  cluster_follower& operator=(const cluster_follower&) = delete;

 private:
  void run();
  follow_config c_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One command (or several, ';'-separated) on haproxy's admin socket: its answer, or nullopt
// with `error` set. Each connection carries one request (HAProxy's non-interactive mode).
std::optional<std::string> haproxy_command(const std::string& socket, const std::string& command, std::string& error);

// Writes `show servers state` to `file`, which haproxy reads at its next start
// (`load-server-state-from-file`), so a reload keeps every slot's node and state.
bool save_server_state(const std::string& socket, const std::string& file, std::string& error);

}  // namespace loopfleet::front
