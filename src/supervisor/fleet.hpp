// The fleet: the supervisor's slots and the worker processes that fill them. A slot has at
// most one `current` worker and, during a reload or a recycle, one `candidate`; `retiring`
// workers drain; `rejected` ones are being killed after a failed reload. Which process a slot
// points at changes only through fleet's functions, so the legal moves are all here.
#pragma once

#include "runtime/heartbeat.hpp"
#include "supervisor/output_reader.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loopfleet::supervisor {

using clock = std::chrono::steady_clock;

enum class role { current, candidate, retiring, rejected };

struct process {
  explicit process(boost::asio::io_context& loop) : timer(loop) {}
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  pid_t pid = 0;
  int slot = 0;
  int generation = 0;
  role r = role::current;
  clock::time_point started = clock::now();
  bool ready = false;
  bool ready_timed_out = false;
  boost::asio::steady_timer timer;  // ready deadline while starting, kill deadline while retiring
  std::shared_ptr<std::deque<std::string>> last_stderr = std::make_shared<std::deque<std::string>>();
  std::shared_ptr<output_reader> out, err;
  std::string status;                        // last STATUS= text
  std::unique_ptr<heartbeat_page> heartbeat;  // native workers under --watchdog or --max-requests
  std::int64_t last_ping_ns = 0;             // last WATCHDOG=1 (any worker)
  bool suspect = false;                      // beats late: new connections steered elsewhere
  bool stalled = false;                      // past the watchdog: being killed
  int handoff = -1;                          // our end of its handoff channel
  bool takes_connections = false;            // it said X_LOOPFLEET_HANDOFF=1 with READY=1
  std::uint64_t request_limit = 0;           // --max-requests plus jitter; 0 = none

  bool serves() const { return ready && !suspect && !stalled; }
  // The region's state, once the worker has beaten at least once (a native worker's loop is
  // live) and while the region still holds our layout.
  std::optional<heartbeat_reading> beating(std::int64_t now_ns = monotonic_ns()) const;
  // Requests served so far; still readable after it died (the region is our mapping).
  std::uint64_t requests() const;
};

struct slot_state {
  pid_t current = 0;
  pid_t candidate = 0;
  int restarts = 0;
  int failures = 0;  // failed runs in a row
  bool degraded = false;
  bool failed_first_start = false;
  std::string last_exit;
  std::string last_error;  // the last stderr line of a worker that died before READY (why it could not start)
  std::uint64_t handed_over = 0;  // connections taken from its queue for other workers
  // Requests served by the workers that have left the slot: the slot's request counter is
  // this plus what its live workers count, so it never goes backwards when one is replaced.
  std::uint64_t requests_before = 0;
  // Every reason from zero, so a scraper sees the first restart as an increase.
  std::map<std::string, int> restarts_by_reason{{"exit", 0}, {"crash", 0}, {"stall", 0}, {"not_ready", 0}};
  int stalls = 0;
  int recycles = 0;
  clock::time_point handoff_logged{};
  std::unique_ptr<boost::asio::steady_timer> restart;
  clock::time_point recycle_after{};  // after a failed recycle, wait before trying again
};

class fleet {
 public:
  std::vector<slot_state> slots;  // [0, workers) are active; the rest keep their sockets only
  int workers = 0;

  // Every live process by pid, current, candidate, retiring or rejected.
  const std::map<pid_t, std::unique_ptr<process>>& processes() const { return procs_; }
  process* find(pid_t pid);
  process* current(int slot);
  const process* current(int slot) const;
  process* candidate(int slot);

  // A newly started worker takes its place in its slot (as current or candidate).
  process& add(std::unique_ptr<process> p);
  // An exited process leaves the table and its slot; the slot counts its requests.
  std::unique_ptr<process> remove(pid_t pid);
  // The candidate becomes current; returns the pid it replaces (0 if none).
  pid_t promote(int slot);
  // The slot's candidate is dropped (a reload gave way or rolled back): it is marked
  // rejected, to be killed by the caller. Returns its pid (0 if none is alive).
  pid_t reject_candidate(int slot);
  // The slot no longer points at its current worker (retired by a reload or a scale-down).
  void release_current(int slot) { slots[slot].current = 0; }

  int serving() const;                 // active slots whose worker serves
  std::vector<bool> serves() const;    // per active slot
  std::uint64_t slot_requests(int slot) const;

 private:
  std::map<pid_t, std::unique_ptr<process>> procs_;
};

}  // namespace loopfleet::supervisor
