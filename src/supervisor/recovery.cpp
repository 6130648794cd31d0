// The master's side of surviving its own crash (keeper.hpp says how): starting its socket
// keeper and keeping it told, and at start-up adopting the sockets of a supervisor of this
// instance that died, then putting down whatever of its workers outlives their drain.
#include "supervisor/master.hpp"

#include "runtime/error.hpp"
#include "runtime/listen_fds.hpp"
#include "runtime/log.hpp"
#include "supervisor/cluster_member.hpp"
#include "supervisor/keeper.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace loopfleet::supervisor {

namespace asio = boost::asio;

namespace {

// The same socket under two fds (systemd passes its socket again; the keeper has a copy).
bool same_socket(int a, int b) {
  struct stat sa{}, sb{};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

}  // namespace

void master::adopt_from_keeper(std::vector<listener>& inherited) {
  auto a = keeper_->adopt();  // throws when a live supervisor owns this instance
  if (!a) return;
  bool activated = false;
  std::size_t taken = 0;
  for (auto& [fd, name] : a->fds) {
    bool dup = false;
    for (const auto& l : inherited) dup |= same_socket(l.fd, fd);
    if (dup) {
      ::close(fd);
      continue;
    }
    inherited.push_back(adopt_listener(fd, name));
    ++taken;
    activated |= !name.starts_with("loopfleet-");
  }
  // Started by a socket activator the first time, by hand or by a unit without one now: its
  // sockets are ours to serve again, and the default --listen would only collide with them.
  if (activated && cfg_.listen_defaulted) {
    cfg_.listen.clear();
    cfg_.inherited_sockets = true;
  }
  std::string who = a->dead_pid ? "supervisor pid " + std::to_string(a->dead_pid) : "a supervisor";
  log::warn("adopted " + std::to_string(taken) + " sockets from the keeper (pid " + std::to_string(a->keeper) +
            ") that held them " + ms_text(a->held) + " since " + who + " of this instance died");
  if (!a->dead) return;
  generation_ = std::max(generation_, a->dead->generation + 1);
  if (int fd = open_if_same(a->dead->nats); fd >= 0) {
    // Its nats-server is stopping (its parent-death signal); ours starts on the same ports
    // and store once it has exited, as after an upgrade.
    ::close(fd);
    predecessor_nats_ = a->dead->nats.pid;
  }
  std::string pids;
  for (const auto& w : a->dead->workers)
    if (int fd = open_if_same(w); fd >= 0) {
      orphans_.push_back(fd);
      pids += (pids.empty() ? "" : ", ") + std::to_string(w.pid);
    }
  if (!orphans_.empty())
    log::info("its workers " + pids + " serve on until every slot of ours is ready, then drain");
}

void master::retire_orphans() {
  for (int fd : orphans_) ::syscall(SYS_pidfd_send_signal, fd, SIGTERM, nullptr, 0);
  log::info("every slot serves: the dead supervisor's workers drain");
  orphan_deadline_.expires_after(cfg_.graceful_timeout);
  orphan_deadline_.async_wait([fds = std::move(orphans_)](boost::system::error_code ec) {
    for (int fd : fds) {
      if (!ec && ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0) == 0)
        log::warn("killed a dead supervisor's worker still running after --graceful-timeout");
      ::close(fd);
    }
  });
  orphans_.clear();
}

bool master::launch_keeper() {
  try {
    keeper_->start(owned_sockets(), cfg_.orphan_timeout);
    return true;
  } catch (const std::exception& e) {
    log::warn(std::string("no socket keeper (") + e.what() +
              "): a crash of this supervisor would reset its queued connections");
    return false;
  }
}

void master::start_keeper() {
  if (!keeper_->connected()) {
    // An upgrade's successor shares its predecessor's keeper; anyone else starts one.
    if (!(successor_ && keeper_->join()) && (cfg_.orphan_timeout.count() == 0 || !launch_keeper())) return;
  } else if (cfg_.orphan_timeout.count() == 0) {
    keeper_->bye();  // adopted from one, but told to keep none
    return;
  }
  keeper_->keep(owned_sockets());
  told_keeper_.clear();
  tell_keeper();
  asio::co_spawn(loop_, watch_keeper(), asio::detached);
}

void master::tell_keeper() {
  if (!keeper_ || !keeper_->connected()) return;
  keeper_state s;
  s.generation = generation_;
  if (cluster_ && cluster_->server_pid()) s.nats = identify(cluster_->server_pid());
  for (const auto& [pid, p] : fleet_.processes())
    if (auto id = identify(pid); id.start) s.workers.push_back(id);
  std::string text = format_keeper_state(s);
  if (text == told_keeper_) return;
  told_keeper_ = text;
  keeper_->tell(s);
}

void master::keep_sockets() {
  if (keeper_ && keeper_->connected()) keeper_->keep(owned_sockets());
}

// The keeper sends nothing unasked: its socket turns readable only when it is gone.
asio::awaitable<void> master::watch_keeper() {
  while (keeper_->connected() && !stopping_) {
    // A copy with close-on-exec (dup drops it): workers started later must not hold our end.
    asio::posix::stream_descriptor end(loop_, ::fcntl(keeper_->native_handle(), F_DUPFD_CLOEXEC, 3));
    auto [ec] = co_await end.async_wait(asio::posix::descriptor_base::wait_read, asio::as_tuple(asio::use_awaitable));
    if (ec || stopping_ || !keeper_->connected()) co_return;
    char unasked[64];
    if (::recv(keeper_->native_handle(), unasked, sizeof unasked, MSG_DONTWAIT) != 0) continue;
    log::warn("the socket keeper (pid " + std::to_string(keeper_->keeper_pid()) + ") is gone; starting another");
    keeper_->lost();
    if (!launch_keeper()) co_return;
    told_keeper_.clear();
    tell_keeper();
  }
}

}  // namespace loopfleet::supervisor
