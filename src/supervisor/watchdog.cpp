// The master's watchdog, every check_interval: loops that beat late are steered around,
// loops silent past --watchdog are named (their stack) and replaced, workers past
// --max-requests or --max-memory are recycled, and connections queued on a slot nobody
// accepts from are handed to the workers that serve.
#include "supervisor/master.hpp"

#include "runtime/log.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"
#include "supervisor/stack.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

namespace loopfleet::supervisor {

namespace asio = boost::asio;

// How often the watchdog looks. Detection comes at most this long after --watchdog expires,
// and a connection queued on a silent slot waits at most this long after it is seen silent.
constexpr auto check_interval = std::chrono::milliseconds(25);
// A native loop beats every heartbeat_interval (50 ms); five beats late, stop sending it new
// connections; two beats missed, what waits in its queue is handed to serving workers.
constexpr std::int64_t suspect_after_ns = 5 * std::chrono::nanoseconds(heartbeat_interval).count();
constexpr std::int64_t queue_late_ns = 2 * std::chrono::nanoseconds(heartbeat_interval).count();
// The cluster heartbeat, every half second.
constexpr int checks_per_heartbeat = 500 / check_interval.count();

long rss_kib(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

asio::awaitable<void> master::watch() {
  for (;;) {
    checks_.expires_after(check_interval);
    auto [ec] = co_await checks_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec || stopping_) co_return;
    check_workers();
  }
}

void master::check_workers() {
  std::int64_t now = monotonic_ns();
  std::int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.watchdog).count();
  bool rss_due = cfg_.max_memory > 0 && clock::now() >= next_rss_check_;
  if (rss_due) next_rss_check_ = clock::now() + std::chrono::milliseconds(500);
  bool steer = false;
  std::vector<std::pair<int, std::string>> to_recycle;
  std::vector<std::pair<pid_t, std::int64_t>> to_stall;
  for (const auto& [pid, pp] : fleet_.processes()) {
    process& p = *pp;
    if (p.r != role::current || !p.ready || p.stalled) continue;
    auto beat = p.beating(now);
    auto v = judge_liveness({beat ? std::optional(beat->age_ns) : std::nullopt, p.last_ping_ns, now, limit,
                             suspect_after_ns});
    if (v.suspect != p.suspect) {
      p.suspect = v.suspect;
      steer = true;
    }
    if (v.stalled) to_stall.emplace_back(pid, v.silent_ns);
    long rss_mib = rss_due ? rss_kib(pid) / 1024 : -1;
    if (auto why = recycle_reason(beat ? beat->requests : 0, beat ? p.request_limit : 0, rss_mib, cfg_.max_memory))
      to_recycle.emplace_back(p.slot, *why);
  }
  if (steer) update_steering();
  if (++heartbeat_ticks_ % checks_per_heartbeat == 0) {
    publish_heartbeat();
    tell_keeper();  // the nats-server's pid, a generation: whatever changed in the second
  }
  for (auto& [pid, silent] : to_stall)
    if (process* p = fleet_.find(pid)) on_stall(*p, silent);
  for (auto& [slot, why] : to_recycle) recycle(slot, why);
  hand_over_queues(now);
}

void master::hand_over_queues(std::int64_t now) {
  if (cfg_.distribution != distribution::reuseport) return;  // shared: every worker takes from one queue
  auto view = [&](int slot) {
    queue_view v;
    const process* p = fleet_.current(slot);
    if (!p) return v;
    v.worker = true;
    v.ready = p->ready;
    v.stalled = p->stalled;
    if (auto beat = p->beating(now)) v.silent_ns = beat->age_ns;
    return v;
  };
  std::vector<int> targets;
  std::vector<std::pair<int, queue_view>> needy;  // with why, for the log
  for (int i = 0; i < fleet_.workers; ++i) {
    queue_view v = view(i);
    if (queue_needs_taking(v, queue_late_ns)) {
      needy.emplace_back(i, v);
    } else {
      const process* p = fleet_.current(i);
      if (p->serves() && p->takes_connections && p->handoff >= 0) targets.push_back(p->handoff);
    }
  }
  if (targets.empty()) return;
  if (needy.empty() && handoff_.kept()) handoff_.take({}, targets);
  for (const auto& [i, v] : needy) {
    std::size_t n = handoff_.take(sockets_->own_queues(i), targets);
    if (n == 0) continue;
    auto& s = fleet_.slots[i];
    s.handed_over += n;
    if (clock::now() - s.handoff_logged > std::chrono::seconds(1)) {
      s.handoff_logged = clock::now();
      log::info("slot " + std::to_string(i) + ": handed " + std::to_string(n) +
                " queued connection(s) to the serving workers (" +
                (!v.worker ? "no worker" : !v.ready ? "its worker is not ready" : v.stalled ? "its loop stalled"
                                                                                          : "its loop is silent") +
                "); " + std::to_string(s.handed_over) + " so far");
    }
  }
}

void master::on_stall(process& p, std::int64_t silent_ns) {
  p.stalled = true;
  ++fleet_.slots[p.slot].stalls;
  update_steering();
  auto beat = p.beating();
  bool ask = beat && beat->loop_tid && beat->stack_signal;  // the region may not name a usable thread
  log::warn("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " loop stalled: no heartbeat for " +
            std::to_string(silent_ns / 1000000) + " ms (--watchdog " + ms_text(cfg_.watchdog) + ")" +
            (ask ? "; asking for its stack, then replacing it" : "; replacing it"));
  if (!ask) {
    ::kill(p.pid, SIGKILL);
    return;
  }
  // The stack signal goes to the loop thread itself, not to whichever thread the kernel picks.
  p.err->expect_stack();
  ::syscall(SYS_tgkill, p.pid, beat->loop_tid, beat->stack_signal);
  // Killed as soon as its stack is read (on_stack); this is for a worker that prints none.
  // An interpreter on a loaded machine may take more than 100 ms to be scheduled for it.
  p.timer.cancel();
  p.timer.expires_after(std::chrono::milliseconds(500));
  pid_t pid = p.pid;
  p.timer.async_wait([pid](boost::system::error_code ec) {
    if (!ec) ::kill(pid, SIGKILL);
  });
}

void master::on_stack(pid_t pid, int slot, std::vector<std::string> lines) {
  auto frames = parse_stack(lines);
  std::string who = "slot " + std::to_string(slot) + ": pid " + std::to_string(pid);
  log::warn(who + " stack of the stalled loop:");
  for (std::size_t i = 0; i < frames.size(); ++i) log::warn("  #" + std::to_string(i) + " " + frames[i].text);
  std::string culprit = blocking_frame(frames);
  log::warn(who + " was blocked in " + (culprit.empty() ? "an unnamed frame (see the stack above)" : culprit));
  if (process* p = fleet_.find(pid); p && p->stalled) ::kill(pid, SIGKILL);
}

void master::recycle(int slot, const std::string& why) {
  auto& s = fleet_.slots[slot];
  if (!may_recycle({reload_.has_value(), stopping_, s.candidate != 0, clock::now() < s.recycle_after,
                    slot < fleet_.workers}))
    return;
  log::info("slot " + std::to_string(slot) + ": recycling pid " + std::to_string(s.current) + ": " + why +
            "; starting its successor");
  start_worker(slot, role::candidate);
}

}  // namespace loopfleet::supervisor
