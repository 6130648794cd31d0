// `loopfleet run` settings: every flag has a TOML key of the same name (dashes become
// underscores), both made from one table (run_settings). Flags override the file; a reload
// re-reads the file and re-applies the flags.
#pragma once

#include "runtime/settings.hpp"
#include "runtime/user.hpp"

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet::supervisor {

// `--workers`, `scale N` and the control socket's scale request all stop here.
inline constexpr int max_workers = 1024;

enum class distribution { shared, reuseport };
enum class readiness { notify, started };
enum class access_log_format { json, combined };

struct config {
  std::string config_file;                 // --config
  int workers = 0;                         // 0 = auto: CPUs this process may run on, or its cgroup's quota
  std::vector<std::string> listen;         // HOST:PORT, [IPV6]:PORT, unix:PATH
  std::string name;                        // instance name; default: the command's file name
  enum distribution distribution = distribution::reuseport;
  int backlog = 4096;
  enum readiness ready = readiness::notify;
  std::chrono::milliseconds ready_delay{std::chrono::seconds(1)};        // for ready = started
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds graceful_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(30)};
  std::chrono::milliseconds healthy_after{std::chrono::seconds(60)};
  int degraded_after = 3;                  // consecutive failed starts before a slot is "degraded"
  std::chrono::milliseconds watchdog{std::chrono::seconds(1)};  // no heartbeat this long: stalled; 0 = off
  int max_requests = 0;                    // recycle a worker after this many requests; 0 = never
  int max_requests_jitter = 0;             // plus up to this many, so workers do not recycle together
  int max_memory = 0;                      // recycle a worker above this RSS, in MiB; 0 = never
  std::string control;                     // control socket path; default under the runtime dir
  // After the supervisor dies unexpectedly, its keeper holds its sockets this long for the same
  // `loopfleet run` started again (supervisor/keeper.hpp); 0 = no keeper.
  std::chrono::milliseconds orphan_timeout{std::chrono::seconds(30)};
  // Every child (workers, their offload helpers, nats-server) runs as this USER[:GROUP];
  // resolved when the configuration is read, because after fork nothing may look names up.
  std::string user;                        // empty = as the supervisor's own user
  std::optional<run_as> run_user;          // the resolved --user
  // The front: HAProxy's agent check asks this address how the node is (up and a weight,
  // drain, down). A graceful stop answers "drain" for front_drain before stopping workers.
  std::string agent_check;                 // HOST:PORT; empty = off
  std::chrono::milliseconds front_drain{std::chrono::seconds(2)};
  // The host other machines reach this node's HTTP port and agent check at, as the cluster
  // heartbeat tells a front that follows the cluster. Empty: the address each is bound to, or
  // for a wildcard bind this machine's first non-loopback IPv4 address.
  std::string advertise;
  // The admin HTTP endpoint (/metrics, /status.json, the status page), served by the
  // supervisor's own loop. A bare PORT means 127.0.0.1:PORT: loopback unless asked otherwise,
  // because the page shows pids and commands to whoever can reach it.
  std::string admin;                       // HOST:PORT; empty = off
  // Each worker's access log (http/access_log.hpp): a file every worker appends its lines to,
  // or "-" for the supervisor's stdout. Made absolute when read, so a reload's workers find the
  // same file. Empty = off.
  std::string access_log;
  enum access_log_format access_log_format = access_log_format::json;
  // The cluster layer (NATS). On with --cluster, --join or --nats.
  bool cluster = false;
  std::string node;                        // this node's name; default: the host name
  std::vector<std::string> nats;           // an existing NATS cluster's URLs: no local nats-server
  std::string nats_listen = "127.0.0.1:4222";     // the local nats-server's client address
  std::string cluster_listen = "127.0.0.1:6222";  // its route address, for the other nodes
  std::vector<std::string> join;           // other nodes' route addresses, HOST:PORT
  std::string data_dir;                    // JetStream storage; default under the state dir
  int max_store = 0;                       // JetStream storage limit in MiB; 0 = nats-server's (75% of the disk)
  // Servers holding each stream, bucket and consumer; 0 = min(3, 1 + peers). Created with that
  // many, waiting up to replicas_wait for the servers (0 = as long as it takes), then with
  // fewer and a warning; raised as soon as the servers are there.
  int replicas = 0;
  std::chrono::milliseconds replicas_wait{std::chrono::seconds(30)};
  // Fixed schedules, "NAME every DURATION [PAYLOAD]": stored in the cluster when the node's
  // scheduler starts, fired by every node (cluster/schedule.hpp).
  std::vector<std::string> schedule;
  std::vector<std::string> command;        // after "--", or `command = [...]` in the file
  // Set by the caller when this process was socket-activated (LISTEN_FDS for our pid): the
  // inherited sockets are served besides any --listen address, which becomes optional.
  bool inherited_sockets = false;
  // --listen was not given and holds the default: a supervisor that finds a socket-activated
  // predecessor's sockets at its keeper serves those instead.
  bool listen_defaulted = false;
};

// Every `run` setting, once: what makes its flag, its file key, its range and its help line.
std::span<const setting<config>> run_settings();

// Parses `loopfleet run` arguments (everything after "run"), reading --config if given.
// Returns an error sentence naming the flag, or the file, line and key. Sets *help (if
// given) when --help was asked for; nothing else is checked then.
std::optional<std::string> parse_run_args(std::span<const std::string_view> args, config& out, bool* help);

// Re-reads the config file (if any) and re-applies the original flags, for a reload.
std::optional<std::string> reload_config(const config& current, std::span<const std::string> original_args,
                                         config& out);

// Loads a TOML file into `out` (config_file.cpp); errors name the file, line and key.
std::optional<std::string> load_config_file(const std::string& path, config& out);

// Help text for `loopfleet run --help`.
std::string run_usage();

// The number of CPUs this process may run on (sched_getaffinity), at least 1.
int available_cpus();

// Who owns the files the children must open (the NATS data dir): the --user, or us.
run_as children_user(const config& c);

// The NATS client URL workers and tools use: the given --nats URLs, or the local server.
std::string nats_url(const config& c);

}  // namespace loopfleet::supervisor
