// The supervisor's decisions as plain functions over plain values, so unit tests drive them
// without processes (the master loop in supervisor.cpp only applies them).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace loopfleet::supervisor {

using std::chrono::milliseconds;

struct backoff_policy {
  milliseconds initial{100};
  milliseconds max{30000};
  milliseconds healthy_after{60000};
  int degraded_after = 3;
};

// What to do with a slot whose worker just exited.
struct restart_decision {
  int failures = 0;      // failed runs in a row, this one included
  bool degraded = false; // the slot is in a crash loop
  milliseconds delay{};  // wait this long before starting the next worker
};

// `failures_before`: failed runs in a row before this exit. `uptime`: how long this worker
// ran. A run that lasted `healthy_after` resets the count: the next restart is quick again.
restart_decision decide_restart(const backoff_policy& p, int failures_before, milliseconds uptime);

// The line HAProxy's agent check reads from this node (its `agent-port`): "drain" while the
// instance stops (the balancer sends new connections elsewhere, lets these finish), "down"
// when no worker serves, else "up" with a weight in proportion to the workers serving, so a
// node with a crash-looping slot gets less. A comment after '#' shows in HAProxy's stats.
std::string agent_check_reply(int workers, int serving, bool stopping);

// A slot as the queue handoff sees it (reuseport mode): is anyone accepting from its queue?
struct queue_view {
  bool worker = false;           // a current worker fills the slot
  bool ready = false;            // and has said READY
  bool stalled = false;          // and is past the watchdog, being replaced
  std::int64_t silent_ns = -1;   // since its loop last beat; -1 when it has no heartbeat region
};
// Whether the supervisor should take the connections queued on this slot's own sockets and
// hand them to serving workers: nobody is there to accept them (no worker, not ready yet,
// stalled), or its loop has been silent for `late_ns` (two missed beats), so a connection
// queued there would wait for the loop to come back or for its replacement.
bool queue_needs_taking(const queue_view& v, std::int64_t late_ns);

}  // namespace loopfleet::supervisor
