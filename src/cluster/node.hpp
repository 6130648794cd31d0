// A node of the cluster layer: the nats-server the supervisor runs for it, and the agent that
// keeps the shared JetStream objects in place and announces the node with a heartbeat.
//
// Wire names (docs/cluster.md): stream LOOPFLEET_JOBS on loopfleet.job.<name> (work queue),
// stream LOOPFLEET_DEAD on loopfleet.dead.<name>, key-value bucket loopfleet_nodes with one
// key per node, calls on loopfleet.call.<name> in queue group "loopfleet"; for schedules, stream
// LOOPFLEET_TICKS on loopfleet.tick.<schedule> and bucket loopfleet_schedules (schedule.hpp).
#pragma once

#include "cluster/nats_connection.hpp"
#include "cluster/schedule.hpp"

#include <nats/nats.h>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
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

// The default for --replicas: min(3, nodes), with nodes = this one plus its peers.
int replicas_for(std::size_t peers);

// How many servers hold the cluster's streams and buckets, and how long a node waits for
// them before it creates one with fewer (--replicas, --replicas-wait).
struct replica_settings {
  int want = 1;
  std::chrono::milliseconds patience{std::chrono::seconds(30)};  // 0: never start with fewer
};

// The replica counts to try, largest first, for a stream that does not exist yet, after
// waiting `waited` for enough servers: only `want` until the patience runs out.
std::vector<int> replicas_to_try(const replica_settings& r, std::chrono::milliseconds waited);

// How one replicated JetStream object (a stream, a bucket's stream, a consumer) stands.
struct durability {
  std::string name;
  std::string kind;    // "stream", "bucket" or "consumer"
  int want = 0;        // replicas promised (recorded in the stream's description)
  int has = 0;         // replicas it is configured with now
  int in_sync = 0;     // the leader and the followers that are current
  bool leader = false;
  // Where it is stored, as JetStream reports it: "n1 (leader), n2, n3 (offline)". Which
  // servers hold the jobs is what an operator needs before taking one down.
  std::string servers;
  // A write is stored only when a majority of `has` confirms it; without that the object
  // takes nothing (submits retry) and delivers nothing.
  bool quorum() const { return leader && in_sync * 2 > has; }
  bool short_of_replicas() const { return has < want; }
};
// "stream LOOPFLEET_JOBS: 3 of 3 replicas, 3 in sync, quorum; on n1 (leader), n2, n3" (and
// what is missing).
std::string describe(const durability& d);

// The description stored with each stream: JetStream keeps the replicas a node created it for,
// so every reader (status, stats, another node) knows what was promised.
std::string replicas_description(int want);
int wanted_replicas(const char* description, int fallback);

// Reads how the jobs and dead-letter streams, the nodes bucket and the job consumers stand.
// Objects that do not exist are left out.
std::vector<durability> read_durability(jsCtx* js);
boost::json::array durability_json(const std::vector<durability>& all);

// Every node's last heartbeat in the nodes bucket, each with "age_s" and "state" ("up" when
// it beat within `down_after_s`, else "down": a dead node's key stays until it returns).
// `whole` (if given) is set false when the bucket could not be read whole (NATS unreachable,
// no leader): the list then says nothing about the nodes missing from it.
boost::json::array read_nodes(jsCtx* js, kvStore* kv, double down_after_s, bool* whole = nullptr);
// What a status page lists of another node, from its heartbeat as read_nodes gives it: name,
// state, age, workers and ready, and where its admin endpoint and HTTP port are.
boost::json::object member_summary(const boost::json::object& heartbeat);
// The node that raises consumers short of replicas (one node, so that two never undo each
// other's steps): of the nodes read_nodes says are up, the first by name; "" when none is.
std::string consumer_raiser(const boost::json::array& nodes);
// The default for `down_after_s`: three missed heartbeats (one a second).
inline constexpr double node_down_after_s = 3.0;

// Announces this node every second on the nodes bucket and creates the streams the jobs and
// schedules need, on its own thread (nats.c's JetStream calls block). Reconnects by itself. Streams are
// created with the replicas promised, waiting for enough servers (submits retry meanwhile),
// and raised to them as soon as the servers are there if they had to start with fewer.
class scheduler;

class node_agent {
 public:
  // `fixed`: the run config's schedules, for the node's scheduler (scheduler.hpp), which runs
  // beside the heartbeat on a thread and connection of its own.
  node_agent(std::string url, std::string node, replica_settings replicas, std::vector<schedule> fixed = {});
  ~node_agent();
  // The JSON published with the next heartbeat (the agent adds the streams' durability).
  // `now`: put it at once rather than at the next second (a stop, which fronts must hear of
  // before the node's nats-server goes).
  void update(std::string snapshot, bool now = false);
  // The durability last read, for status.
  std::vector<durability> streams() const;
  // Nodes whose heartbeat is fresh (read_nodes "up"), this one included once it has beaten;
  // 0 until the agent has read the bucket.
  int nodes_up() const;
  // Every node in the bucket at the last read, each as member_summary() gives it.
  boost::json::array members() const;

 private:
  void run();
  std::string url_, node_;
  replica_settings replicas_;
  mutable std::mutex mutex_;
  std::string snapshot_;
  std::vector<durability> streams_;
  int nodes_up_ = 0;
  boost::json::array members_;
  bool stop_ = false;
  interrupter interrupter_;  // closes the agent's connection at a stop
  bool beat_now_ = false;
  std::thread thread_;
  std::unique_ptr<scheduler> scheduler_;
};

}  // namespace loopfleet::cluster
