#include "http/ready_set.hpp"

#include "http/connection_policy.hpp"
#include "runtime/log.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <unistd.h>

namespace loopfleet::http::detail {
namespace {

int make_epoll() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  return fd;
}

}  // namespace

std::unique_ptr<connection_io> make_connection_io(boost::asio::io_context& loop, io_interface wanted,
                                                  std::string& why_not) {
  if (wanted != io_interface::epoll)
    if (auto ring = make_uring_set(loop, why_not)) return ring;
  return std::make_unique<ready_set>(loop);
}

ready_set::ready_set(boost::asio::io_context& loop) : epoll_(loop, make_epoll()) { arm(); }

bool ready_set::add(int fd, readiness& io) {
  // EPOLLRDHUP: a FIN that comes with the last request is seen, so the short read that took
  // the request does not put the connection to sleep on an end that will never be signalled
  // again.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  if (static_cast<std::size_t>(fd) >= watched_.size()) watched_.resize(static_cast<std::size_t>(fd) + 1024);
  watched_[fd] = &io;
  return true;
}

long ready_set::receive(int fd, readiness& io, char* room, std::size_t size) {
  ssize_t n = ::recv(fd, room, size, 0);
  if (n > 0) {
    io.readable = still_readable(static_cast<std::size_t>(n), size, io.eof_seen);
    return n;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    io.readable = false;
    return 0;
  }
  if (n < 0 && errno == EINTR) return 0;
  return -1;  // the client closed, or the connection failed
}

long ready_set::send(int fd, readiness& io, const char* data, std::size_t size) {
  ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
  if (n >= 0) {
    if (static_cast<std::size_t>(n) < size) io.writable = false;  // the socket's buffer is full
    return n;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    io.writable = false;
    return 0;
  }
  return errno == EINTR ? 0 : -1;
}

// Asio's own wait re-arms the set's descriptor (an epoll_ctl) once per batch, which also
// reports a set that still holds events after a full batch.
void ready_set::arm() {
  epoll_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;  // closed with the server; `this` may be gone
    on_ready();
    arm();
  });
}

// The set is read again while it has events, up to a batch's worth per wake: under load, each
// read finds the requests that arrived while the last ones were answered, and every round
// saved is Asio's epoll_wait and its re-arming epoll_ctl. The bound keeps the loop's timers
// (the heartbeat, the tick) and its other work on time.
void ready_set::on_ready() {
  std::size_t handled = 0;
  while (handled < std::size(events_)) {
    int n = ::epoll_wait(epoll_.native_handle(), events_, std::size(events_), 0);
    if (n < 0) {
      if (errno != EINTR) log::warn(std::string("epoll_wait on the connections: ") + std::strerror(errno));
      return;
    }
    if (n == 0) return;
    handled += static_cast<std::size_t>(n);
    for (int i = 0; i < n; ++i) dispatch(events_[i]);
  }
}

void ready_set::dispatch(const epoll_event& ev) {
  auto fd = static_cast<std::size_t>(ev.data.fd);
  readiness* io = fd < watched_.size() ? watched_[fd] : nullptr;
  if (!io) return;  // closed earlier in this batch, or a forked copy's late event
  std::uint32_t e = ev.events;
  if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) io->readable = true;
  if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) io->eof_seen = true;
  if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) io->writable = true;
  // Resumed here, the connection answers and sleeps again before the next event is looked
  // at; it can end (and forget its descriptor), but only its own.
  if (io->waiting != wait_for::nothing && io->ready(io->waiting)) io->wake();
}

}  // namespace loopfleet::http::detail
