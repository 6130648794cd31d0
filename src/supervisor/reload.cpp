// The master's reload and scale. A reload re-reads the flags and config file, starts a whole
// new generation beside the old one and switches only when every new worker is ready; any
// failure rolls back with the old generation still serving. Scaling starts or retires slots.
#include "supervisor/master.hpp"

#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "supervisor/sockets.hpp"
#include "supervisor/spawn.hpp"

#include <signal.h>

namespace loopfleet::supervisor {

void master::begin_reload(done_fn done) {
  if (stopping_) return done(false, "the instance is stopping");
  if (reload_) return done(false, "a reload is already in progress");
  if (upgrade_) return done(false, "an upgrade is in progress; reload after it");
  // Counted once per attempt, whichever way it ends: refused, rolled back or committed.
  done = [this, done = std::move(done)](bool ok, std::string message) {
    ++(ok ? reloads_ok_ : reloads_failed_);
    done(ok, std::move(message));
  };
  auto refuse = [&done](const std::string& err) {
    log::error("reload refused: " + err);
    done(false, err);
  };
  config fresh;
  if (auto err = reload_config(cfg_, args_, fresh)) return refuse(*err);
  if (fresh.listen != cfg_.listen || fresh.distribution != cfg_.distribution || fresh.backlog != cfg_.backlog ||
      fresh.admin != cfg_.admin)
    return refuse("listen addresses, distribution, backlog and the admin address change only with a restart");
  if (find_executable(fresh.command.front()).empty())
    return refuse("command '" + fresh.command.front() + "' not found or not executable");
  std::string from;
  int n = resolve_workers(fresh, from);
  try {
    sockets_->ensure_slots(n);
    keep_sockets();
  } catch (const startup_error& e) {
    return done(false, e.what());
  }
  for (int i = 0; i < static_cast<int>(fleet_.slots.size()); ++i)  // a recycle in progress gives way
    if (pid_t pid = fleet_.reject_candidate(i)) ::kill(pid, SIGKILL);
  reload_ = reload_state{generation_ + 1, cfg_, fleet_.workers, std::move(from), {std::move(done)}};
  generation_ = reload_->generation;
  cfg_ = std::move(fresh);
  if (static_cast<int>(fleet_.slots.size()) < n) fleet_.slots.resize(n);
  log::info("reload: starting generation " + std::to_string(generation_) + " with " + std::to_string(n) +
            " workers; the old ones serve until every new one is ready");
  for (int i = 0; i < n; ++i) {
    if (fleet_.slots[i].restart) fleet_.slots[i].restart->cancel();
    start_worker(i, role::candidate);
    if (!reload_) return;  // a start failure already rolled back
  }
}

void master::commit_reload() {
  int n = 0;
  for (int i = 0; i < static_cast<int>(fleet_.slots.size()); ++i)
    if (fleet_.slots[i].candidate) n = i + 1;
  for (int i = 0; i < static_cast<int>(fleet_.slots.size()); ++i) {
    if (process* old = fleet_.current(i)) retire(*old, SIGTERM, cfg_.graceful_timeout);
    fleet_.release_current(i);
    auto& s = fleet_.slots[i];
    if (!s.candidate) continue;
    fleet_.promote(i);
    s.failures = 0;  // a new generation starts with a clean record
    s.degraded = false;
    s.failed_first_start = false;
  }
  fleet_.workers = n;
  workers_from_ = std::move(reload_->workers_from);
  ever_ready_ = true;
  update_steering();
  tell_parent_if_all_ready();
  std::string msg = "generation " + std::to_string(generation_) + " serving with " + std::to_string(n) +
                    " workers; the previous workers are draining";
  log::info("reload: " + msg);
  auto waiters = std::move(reload_->waiters);
  reload_.reset();
  for (auto& w : waiters) w(true, msg);
}

void master::fail_reload(const std::string& reason) {
  if (!reload_) return;
  for (int i = 0; i < static_cast<int>(fleet_.slots.size()); ++i)
    if (pid_t pid = fleet_.reject_candidate(i)) ::kill(pid, SIGKILL);
  cfg_ = reload_->old_cfg;
  fleet_.workers = reload_->old_workers;
  // Slots whose restart the reload had cancelled get their old-generation worker back.
  for (int i = 0; i < fleet_.workers; ++i)
    if (!fleet_.slots[i].current) schedule_restart(i, cfg_.backoff_initial);
  std::string msg = "reload to generation " + std::to_string(reload_->generation) +
                    " rolled back, the previous generation keeps serving: " + reason;
  log::error(msg);
  auto waiters = std::move(reload_->waiters);
  reload_.reset();
  for (auto& w : waiters) w(false, msg);
}

std::optional<std::string> master::scale(int n) {
  if (n < 1 || n > max_workers) return "worker count must be from 1 to " + std::to_string(max_workers);
  if (reload_) return "a reload is in progress; scale after it";
  if (upgrade_) return "an upgrade is in progress; scale the new supervisor after it";
  if (stopping_) return "the instance is stopping";
  try {
    sockets_->ensure_slots(n);
    keep_sockets();
  } catch (const startup_error& e) {
    return e.what();
  }
  int old = fleet_.workers;
  fleet_.workers = n;
  workers_from_ = "loopfleet scale";
  cfg_.workers = n;
  if (static_cast<int>(fleet_.slots.size()) < n) fleet_.slots.resize(n);
  for (int i = old; i < n; ++i) {
    fleet_.slots[i].failures = 0;
    fleet_.slots[i].degraded = false;
    if (!fleet_.slots[i].current) start_worker(i, role::current);
  }
  for (int i = n; i < old; ++i) {
    if (fleet_.slots[i].restart) fleet_.slots[i].restart->cancel();
    if (process* p = fleet_.current(i)) retire(*p, SIGTERM, cfg_.graceful_timeout);
    fleet_.release_current(i);
  }
  update_steering();
  log::info("scaled from " + std::to_string(old) + " to " + std::to_string(n) + " workers");
  return std::nullopt;
}

}  // namespace loopfleet::supervisor
