// The master's workers: starting one into a slot (its environment and descriptors), its
// READY and other notify messages, its exit and the restart that follows, and steering new
// connections to the slots that serve.
#include "supervisor/master.hpp"

#include "runtime/worker_env.hpp"
#include "runtime/log.hpp"
#include "runtime/notify.hpp"
#include "supervisor/cluster_member.hpp"
#include "supervisor/notify_listener.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"
#include "supervisor/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace loopfleet::supervisor {

void master::start_worker(int slot, role r) {
  std::string exe = find_executable(cfg_.command.front());
  spawn_spec spec;
  spec.argv = cfg_.command;
  if (!exe.empty()) spec.argv.front() = exe;
  spec.fds = sockets_->for_slot(slot);
  if (cfg_.run_user) spec.user = &*cfg_.run_user;
  int gen = reload_ && r == role::candidate ? reload_->generation : generation_;
  namespace env = worker_env;
  auto set = [&spec](const char* name, const std::string& value) { spec.env.push_back(name + ("=" + value)); };
  set(env::listen_fds, std::to_string(spec.fds.size()));
  set(env::listen_fdnames, sockets_->fd_names());
  set(env::notify_socket, notify_->name());
  set(env::slot, std::to_string(slot));
  set(env::workers, std::to_string(fleet_.workers));
  set(env::nats_url, cfg_.cluster ? nats_url(cfg_) : std::string());
  set(env::node, cfg_.node);
  set(env::generation, std::to_string(gen));
  // With a keeper holding the sockets, a worker may outlive us (runtime/orphan.hpp).
  if (cfg_.orphan_timeout.count() > 0) {
    set(env::supervisor_pid, std::to_string(::getpid()));
    set(env::orphan_timeout_ms, std::to_string(cfg_.orphan_timeout.count()));
  }
  // Python workers import the loopfleet package (its launchers) with nothing set by the user.
  static const std::string python_path = worker_python_path(std::getenv(env::python_path));
  if (!python_path.empty()) set(env::python_path, python_path);
  // Each further descriptor is passed after the listening sockets and named by a variable.
  auto pass = [&spec, &set](const char* name, int fd) {
    set(name, std::to_string(3 + spec.fds.size()));
    spec.fds.push_back(fd);
  };
  // The access log: workers write their own lines, to the file or to our stdout.
  if (!cfg_.access_log.empty()) {
    set(env::access_log_format, cfg_.access_log_format == access_log_format::combined ? "combined" : "json");
    if (cfg_.access_log != "-") set(env::access_log, cfg_.access_log);
    else if (access_log_stdout_ >= 0 || (access_log_stdout_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3)) >= 0)
      pass(env::access_log_fd, access_log_stdout_);
  }
  // A datagram socket already connected to NOTIFY_SOCKET: runtimes that cannot send to a
  // Unix socket by name (Node) write(2) "READY=1" to it.
  int notify_fd = notify_->connected_socket();
  if (notify_fd >= 0) pass(env::notify_fd, notify_fd);
  // Every worker may beat with WATCHDOG=1 (systemd's way); a native one also gets a heartbeat
  // region, beaten by its loop and read here without asking it anything.
  if (cfg_.watchdog.count() > 0)
    set(env::watchdog_usec, std::to_string(cfg_.watchdog.count() * 1000));
  std::unique_ptr<heartbeat_page> beat;
  if (cfg_.watchdog.count() > 0 || cfg_.max_requests > 0) {
    beat = heartbeat_page::create();
    if (beat) pass(env::heartbeat_fd, beat->fd());
    else log::warn(std::string("cannot create a heartbeat region: ") + std::strerror(errno));
  }
  // A channel for connections the supervisor accepts on behalf of a stalled slot.
  int channel[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) == 0) pass(env::handoff_fd, channel[1]);
  auto close_extra = [&] {
    for (int fd : {notify_fd, channel[1]})
      if (fd >= 0) ::close(fd);
    if (beat) beat->close_fd();  // the worker has its own; the mapping stays
  };
  spawned s;
  try {
    s = spawn_worker(spec);
    close_extra();
  } catch (const std::exception& e) {
    close_extra();
    if (channel[0] >= 0) ::close(channel[0]);
    log::error("slot " + std::to_string(slot) + ": cannot start a worker: " + e.what());
    if (r == role::candidate) fail_reload(std::string("cannot start a worker: ") + e.what());
    else schedule_restart(slot, cfg_.backoff_max);
    return;
  }
  auto p = std::make_unique<process>(loop_);
  p->pid = s.pid;
  p->handoff = channel[0];
  p->slot = slot;
  p->generation = gen;
  p->r = r;
  p->heartbeat = std::move(beat);
  if (cfg_.max_requests > 0)
    p->request_limit = cfg_.max_requests + std::uniform_int_distribution<int>(0, cfg_.max_requests_jitter)(rng_);
  std::string tag = "slot " + std::to_string(slot) + " pid " + std::to_string(s.pid) + " | ";
  p->out = std::make_shared<output_reader>(loop_, s.out, tag, nullptr);
  p->err = std::make_shared<output_reader>(loop_, s.err, tag, p->last_stderr);
  pid_t pid = s.pid;
  p->err->on_stack = [this, pid, slot](std::vector<std::string> lines) { on_stack(pid, slot, std::move(lines)); };
  p->out->start();
  p->err->start();
  log::info("slot " + std::to_string(slot) + ": started pid " + std::to_string(pid) + " (generation " +
            std::to_string(gen) + ")");

  process& ref = fleet_.add(std::move(p));
  tell_keeper();
  bool by_delay = cfg_.ready == readiness::started;
  ref.timer.expires_after(by_delay ? cfg_.ready_delay : cfg_.ready_timeout);
  ref.timer.async_wait([this, pid, by_delay](boost::system::error_code ec) {
    process* p = fleet_.find(pid);
    if (ec || !p || p->ready) return;
    if (by_delay) return mark_ready(*p);
    log::warn("slot " + std::to_string(p->slot) + ": pid " + std::to_string(pid) + " not ready after " +
              ms_text(cfg_.ready_timeout) + "; killing it");
    p->ready_timed_out = true;
    ::kill(pid, SIGKILL);
  });
}

void master::schedule_restart(int slot, milliseconds delay) {
  auto& s = fleet_.slots[slot];
  s.restart = std::make_unique<boost::asio::steady_timer>(loop_, delay);
  s.restart->async_wait([this, slot](boost::system::error_code ec) {
    if (ec || stopping_ || slot >= fleet_.workers || fleet_.slots[slot].current) return;
    start_worker(slot, role::current);
  });
}

void master::reap() {
  int status = 0;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
    if (upgrade_ && pid == upgrade_->pid)
      fail_upgrade("the new supervisor exited (" + describe_exit(status) +
                   ") before all its workers were ready; its own log lines above say why");
    else if (cluster_ && cluster_->owns(pid)) cluster_->on_exit(status);
    else on_exit(pid, status);
    if (stopping_ && fleet_.processes().empty()) finish();
  }
}

void master::on_exit(pid_t pid, int status) {
  std::unique_ptr<process> p = fleet_.remove(pid);
  if (!p) return;  // an orphaned helper we reaped as subreaper
  tell_keeper();
  p->out->drain_now();
  p->err->drain_now();
  auto uptime = std::chrono::duration_cast<milliseconds>(clock::now() - p->started);
  std::string reason = p->ready_timed_out ? "not ready within " + ms_text(cfg_.ready_timeout)
                       : p->stalled       ? "stalled, killed by the watchdog"
                                          : describe_exit(status);
  std::string line = "slot " + std::to_string(p->slot) + ": pid " + std::to_string(pid) + " exited: " +
                     describe_exit(status) + " after " + ms_text(uptime);
  if (p->r == role::retiring || p->r == role::rejected || stopping_) log::info(line);
  else log::warn(line);

  auto& slot = fleet_.slots[p->slot];
  if (p->r == role::candidate) {
    std::string last = p->last_stderr->empty() ? "" : "; last stderr line: " + p->last_stderr->back();
    if (reload_) {
      fail_reload("slot " + std::to_string(p->slot) + ": the new worker " + reason + " before READY" + last);
    } else {
      log::error("slot " + std::to_string(p->slot) + ": recycling failed, the successor " + reason +
                 " before READY" + last + "; the current worker keeps serving");
      slot.recycle_after = clock::now() + std::chrono::seconds(10);
    }
  } else if (p->r == role::current) {
    slot.last_exit = reason;
    if (!p->ready && !p->last_stderr->empty()) slot.last_error = p->last_stderr->back();
    update_steering();
    if (!stopping_ && p->slot < fleet_.workers) restart_after_exit(*p, status, uptime, reason);
  }
}

void master::restart_after_exit(const process& p, int status, milliseconds uptime, const std::string& reason) {
  if (!ever_ready_ && !p.ready && first_start_failed(p, reason)) return;
  auto& slot = fleet_.slots[p.slot];
  backoff_policy policy{cfg_.backoff_initial, cfg_.backoff_max, cfg_.healthy_after, cfg_.degraded_after};
  auto d = decide_restart(policy, slot.failures, uptime);
  slot.failures = d.failures;
  bool newly_degraded = d.degraded && !slot.degraded;
  slot.degraded = d.degraded;
  ++slot.restarts;
  ++slot.restarts_by_reason[p.ready_timed_out     ? "not_ready"
                            : p.stalled           ? "stall"
                            : WIFSIGNALED(status) ? "crash"
                                                  : "exit"];
  if (newly_degraded)
    log::warn("slot " + std::to_string(p.slot) + " degraded: " + std::to_string(d.failures) +
              " failed runs in a row; the other slots keep serving; retrying with backoff up to " +
              ms_text(cfg_.backoff_max));
  log::info("slot " + std::to_string(p.slot) + ": restarting in " + ms_text(d.delay) + " (failure " +
            std::to_string(d.failures) + " in a row)");
  schedule_restart(p.slot, d.delay);
}

bool master::first_start_failed(const process& p, const std::string& reason) {
  fleet_.slots[p.slot].failed_first_start = true;
  for (int i = 0; i < fleet_.workers; ++i)
    if (!fleet_.slots[i].failed_first_start) return false;  // another slot may still come up
  std::string text = "loopfleet: error: no worker became ready (" + reason + "): check the command and its output";
  if (!p.last_stderr->empty()) {
    text += "; its last stderr lines:\n";
    for (const auto& l : *p.last_stderr) text += "  " + l + "\n";
  } else {
    text += "\n";
  }
  fatal_ = text;
  exit_code_ = 1;
  stop(true);
  return true;
}

void master::on_notify(pid_t pid, std::string_view message) {
  process* p = fleet_.find(pid);
  notify_message m = parse_notify(message);
  if (!p) {  // only the worker itself speaks for its slot; or our successor, when it is ready
    if (upgrade_ && pid == upgrade_->pid && m.ready) commit_upgrade();
    return;
  }
  if (m.status) p->status = std::string(*m.status);
  if (m.watchdog) p->last_ping_ns = monotonic_ns();
  if (m.handoff) p->takes_connections = true;
  if (m.ready && !p->ready) mark_ready(*p);
}

void master::mark_ready(process& p) {
  p.ready = true;
  p.timer.cancel();
  auto took = std::chrono::duration_cast<milliseconds>(clock::now() - p.started);
  log::info("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " ready in " + ms_text(took) +
            " (generation " + std::to_string(p.generation) + ")");
  if (p.r == role::current) {
    ever_ready_ = true;
    update_steering();
    tell_parent_if_all_ready();
    if (!orphans_.empty() && every_slot_ready()) retire_orphans();
  } else if (p.r == role::candidate && reload_) {
    std::vector<candidate_view> candidates;
    for (int i = 0; i < static_cast<int>(fleet_.slots.size()); ++i)
      if (fleet_.slots[i].candidate) {
        const process* c = fleet_.candidate(i);
        candidates.push_back({c != nullptr, c && c->ready});
      }
    if (judge_reload(candidates) == reload_progress::complete) commit_reload();
  } else if (p.r == role::candidate) {
    // A recycled slot: the successor serves, then the old worker drains.
    pid_t old = fleet_.promote(p.slot);
    ++fleet_.slots[p.slot].recycles;
    if (process* o = fleet_.find(old)) {
      log::info("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " took over from pid " +
                std::to_string(old) + ", which drains");
      retire(*o, SIGTERM, cfg_.graceful_timeout);
    }
    update_steering();
  }
}

void master::retire(process& p, int sig, milliseconds grace) {
  if (p.r != role::rejected) p.r = role::retiring;
  ::kill(p.pid, sig);
  p.timer.cancel();
  p.timer.expires_after(grace);
  pid_t pid = p.pid;
  p.timer.async_wait([this, pid](boost::system::error_code ec) {
    if (ec || !fleet_.find(pid)) return;
    log::warn("pid " + std::to_string(pid) + " still running after its stop deadline; SIGKILL");
    ::kill(pid, SIGKILL);
  });
}

void master::update_steering() {
  // After an upgrade the successor's program steers the groups: ours would override it.
  if (cfg_.distribution != distribution::reuseport || handed_over_) return;
  // A loop that beats late accepts nothing: its slot's queue must stop growing.
  sockets_->steer(steering_set(fleet_.serves()));
}

}  // namespace loopfleet::supervisor
