// A node of the cluster layer: the nats-server the supervisor runs for it, and the agent that
// keeps the shared JetStream objects in place and announces the node with a heartbeat.
//
// Wire names (docs/cluster.md): stream LOOPFLEET_JOBS on loopfleet.job.<name> (work queue),
// stream LOOPFLEET_DEAD on loopfleet.dead.<name>, key-value bucket loopfleet_nodes with one
// key per node, calls on loopfleet.call.<name> in queue group "loopfleet".
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loopfleet::cluster {

inline constexpr const char* jobs_stream = "LOOPFLEET_JOBS";
inline constexpr const char* dead_stream = "LOOPFLEET_DEAD";
inline constexpr const char* nodes_bucket = "loopfleet_nodes";

struct server_settings {
  std::string node;                 // server_name
  std::string client_listen;        // HOST:PORT
  std::string cluster_listen;       // HOST:PORT
  std::vector<std::string> join;    // peers' cluster addresses
  std::string store_dir;            // JetStream storage
  int max_store_mib = 0;            // JetStream file storage limit; 0 = nats-server's default
};

// The nats-server configuration file for a node. Without peers there is no cluster block:
// JetStream then runs standalone.
std::string server_config(const server_settings& s);

// Why a JetStream publish failed, in words that name the fix, and whether trying again later
// can succeed: storage full (workers free it as they finish jobs), a leader election, NATS
// reconnecting. Anything else (no stream, a message too large) fails at once.
struct publish_failure {
  bool transient = false;
  std::string why;
};
publish_failure describe_publish_failure(natsStatus status, jsErrCode js_error, std::string_view server_says);

// The pause before retry number `n` (0 = the first): 50 ms doubling to at most 2 s. For
// publishes JetStream refused and for reaching NATS again.
std::chrono::milliseconds retry_delay(int n);

// Makes a NATS connection wait retry_delay(attempts) between reconnect attempts.
void back_off_reconnects(natsOptions* opts);

// Replicas for streams and buckets: min(3, nodes), with nodes = this one plus its peers.
int replicas_for(std::size_t peers);

// Announces this node every second on the nodes bucket and creates the streams the jobs
// need, on its own thread (nats.c's JetStream calls block). Reconnects by itself.
class node_agent {
 public:
  node_agent(std::string url, std::string node, int replicas);
  ~node_agent();
  // The JSON published with the next heartbeat.
  void update(std::string snapshot);

 private:
  void run();
  std::string url_, node_;
  int replicas_;
  std::mutex mutex_;
  std::string snapshot_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace loopfleet::cluster
