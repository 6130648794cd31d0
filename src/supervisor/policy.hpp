// The supervisor's decisions as plain functions over plain values, so unit tests drive them
// without processes (the master loop in supervisor.cpp only applies them).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
// What the socket keeper answers on the agent-check port while the supervisor is dead
// (keeper.hpp): "drain", so that the balancers send new connections to the other nodes while
// this one has no supervisor (its workers may be serving on, or may be gone), and come back
// once a new supervisor answers "up".
std::string agent_check_reply_orphaned();

// The address other machines reach a bound TCP socket at, for the cluster heartbeat a front
// follows: `bound` as local_address() prints it ("0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080");
// its host replaced by `advertise` when given, else by `guessed` (this machine's address) when
// bound to a wildcard. nullopt for a Unix socket, or a wildcard with nothing to replace it.
// IPv6 hosts come back in brackets: "[fd00::5]:8080".
std::optional<std::string> advertised_address(std::string_view bound, std::string_view advertise,
                                              std::string_view guessed);
// Where another node's status page links to this node's admin endpoint (the heartbeat's
// "admin"). Unlike the HTTP port's, the address is replaced only for a wildcard bind
// (`advertise`, else `guessed`): the endpoint answers on the address it is bound to and nowhere
// else, so a loopback or specific bind is linked as it is (a loopback link works from a browser
// on that machine only, as when every node runs on one). nullopt when there is nothing to link.
std::optional<std::string> advertised_admin_address(std::string_view bound, std::string_view advertise,
                                                    std::string_view guessed);

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

// "250 ms": how every duration reads in the supervisor's log and replies.
std::string ms_text(milliseconds d);

// The watchdog's view of one serving worker's loop. A native worker beats a shared region
// (`beat_age_ns`: since its last beat); any worker may send WATCHDOG=1 (`last_ping_ns`, 0 if
// never). `limit_ns` is --watchdog (0: off).
struct liveness_input {
  std::optional<std::int64_t> beat_age_ns;
  std::int64_t last_ping_ns = 0;
  std::int64_t now_ns = 0;
  std::int64_t limit_ns = 0;
  std::int64_t suspect_after_ns = 0;
};
struct liveness_verdict {
  bool suspect = false;       // beats late: steer new connections elsewhere (region only)
  bool stalled = false;       // silent past the watchdog: ask its stack, replace it
  std::int64_t silent_ns = 0;
};
// Silence exactly at a threshold is not past it. A worker that never beat is not judged:
// its loop has not started (readiness covers it), and a ping-only worker cannot be suspect,
// since pings come too rarely to say a loop is merely late.
liveness_verdict judge_liveness(const liveness_input& in);

// Why a serving worker should be replaced by a fresh one now, if it should: its request
// budget (`request_limit`, 0 = none) is spent, or its memory is over `max_memory_mib` (0 = no
// limit; `rss_mib` < 0 when not measured this pass).
std::optional<std::string> recycle_reason(std::uint64_t requests, std::uint64_t request_limit, long rss_mib,
                                          long max_memory_mib);

// Whether a slot may start a successor for its worker now. Never during a reload (which
// replaces every worker anyway) or a stop, never twice at once, not while a failed recycle
// backs off, not for a slot being scaled away.
struct recycle_guard {
  bool reloading = false;
  bool stopping = false;
  bool has_candidate = false;
  bool backing_off = false;
  bool slot_active = true;
};
bool may_recycle(const recycle_guard& g);

// A reload commits when every slot's candidate has said READY; it fails as soon as one died.
struct candidate_view {
  bool alive = true;
  bool ready = false;
};
enum class reload_progress { waiting, complete, failed };
reload_progress judge_reload(const std::vector<candidate_view>& candidates);

// The slots new connections are steered to (reuseport): those whose worker serves. With
// nobody serving, every slot, so connections queue until workers return instead of failing.
std::vector<int> steering_set(const std::vector<bool>& serves);

// A slot as `status` shows it. A crash loop ends after a run of `healthy_after`: from then on
// the slot is no longer shown degraded, though its failure count resets only at the next exit.
struct slot_view {
  bool has_worker = false;
  bool ready = false;
  bool stalled = false;
  bool degraded = false;  // as decide_restart last said
  milliseconds uptime{};
  milliseconds healthy_after{60000};
};
bool still_degraded(const slot_view& s);
std::string slot_state_name(const slot_view& s);  // ready, starting, stalled, degraded, restarting

}  // namespace loopfleet::supervisor
