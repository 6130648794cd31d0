// The status model's field names: the one contract between the supervisor that writes the
// model (status.cpp, cluster_member.cpp) and every reader in C++ (`loopfleet status` and `top`
// in src/control/client.cpp, the Prometheus rendering in admin_endpoint.cpp, and the front, which
// reads a node's cluster heartbeat, in src/front/policy.cpp). docs/control.md
// says what each means; the status page's JavaScript (status_page.cpp) and the Python tests
// read the same names from the JSON. A field renamed here is renamed for all of them.
#pragma once

#include <string_view>

namespace loopfleet::status_key {

// the instance
inline constexpr std::string_view name = "name";
inline constexpr std::string_view pid = "pid";
inline constexpr std::string_view generation = "generation";
inline constexpr std::string_view keeper = "keeper";  // the socket keeper's pid, null when none
inline constexpr std::string_view workers = "workers";
inline constexpr std::string_view workers_from = "workers_from";
inline constexpr std::string_view distribution = "distribution";
inline constexpr std::string_view listen = "listen";
inline constexpr std::string_view uptime_s = "uptime_s";
inline constexpr std::string_view reloading = "reloading";
inline constexpr std::string_view reloads = "reloads";
inline constexpr std::string_view ok = "ok";
inline constexpr std::string_view failed = "failed";
inline constexpr std::string_view workers_serving = "workers_serving";
inline constexpr std::string_view stopping = "stopping";
inline constexpr std::string_view agent_check = "agent_check";
inline constexpr std::string_view address = "address";
inline constexpr std::string_view reply = "reply";
inline constexpr std::string_view slots = "slots";
inline constexpr std::string_view draining = "draining";
inline constexpr std::string_view cluster = "cluster";

// each slot
inline constexpr std::string_view slot = "slot";
inline constexpr std::string_view state = "state";
inline constexpr std::string_view status = "status";
inline constexpr std::string_view restarts = "restarts";
inline constexpr std::string_view restarts_by_reason = "restarts_by_reason";
inline constexpr std::string_view stalls = "stalls";
inline constexpr std::string_view recycles = "recycles";
inline constexpr std::string_view requests_total = "requests_total";
inline constexpr std::string_view queued = "queued";
inline constexpr std::string_view handed_over = "handed_over";
inline constexpr std::string_view failures_in_a_row = "failures_in_a_row";
inline constexpr std::string_view last_exit = "last_exit";
inline constexpr std::string_view last_error = "last_error";
inline constexpr std::string_view rss_kib = "rss_kib";
inline constexpr std::string_view cpu_s = "cpu_s";
inline constexpr std::string_view helpers = "helpers";
inline constexpr std::string_view heartbeat_age_ms = "heartbeat_age_ms";
inline constexpr std::string_view lag_p50_ms = "lag_p50_ms";
inline constexpr std::string_view lag_p99_ms = "lag_p99_ms";
inline constexpr std::string_view lag_max_ms = "lag_max_ms";
inline constexpr std::string_view connections = "connections";
inline constexpr std::string_view in_flight = "in_flight";
inline constexpr std::string_view requests = "requests";

// the cluster
inline constexpr std::string_view node = "node";
inline constexpr std::string_view nats = "nats";
inline constexpr std::string_view nats_pid = "nats_pid";
inline constexpr std::string_view nats_ready = "nats_ready";
inline constexpr std::string_view nats_restarts = "nats_restarts";
inline constexpr std::string_view peers = "peers";
inline constexpr std::string_view nodes = "nodes";
inline constexpr std::string_view streams = "streams";
// the heartbeat's addresses for fronts (HOST:PORT, reachable from other machines)
inline constexpr std::string_view http = "http";
inline constexpr std::string_view agent = "agent";
// where other nodes' status pages link to this node's admin endpoint (HOST:PORT)
inline constexpr std::string_view admin = "admin";
// in the status model's cluster part: every node of the cluster as its heartbeat says
// (node, state, workers, ready, admin, age_s), read by the status page
inline constexpr std::string_view members = "members";
inline constexpr std::string_view age_s = "age_s";
inline constexpr std::string_view ready = "ready";

}  // namespace loopfleet::status_key
