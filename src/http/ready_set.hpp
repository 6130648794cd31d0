// The connections' readiness, kept as nginx keeps it: every connection's socket is in one
// epoll set of the server's own, registered once for input and output, edge-triggered, and
// each connection remembers whether it is readable and writable. A connection reads only what
// it knows is there and sleeps otherwise, so a request costs one recv and one send; Asio's
// reactor, which has no such memory, reads once more after every response to find the socket
// empty (EAGAIN), and its waits re-arm the descriptor with epoll_ctl (docs/benchmarks.md,
// "Where the cycles and bytes go"). The set itself is one descriptor in Asio's loop: one wake
// of it answers up to 512 events before the loop does anything else.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/epoll.h>

#include <coroutine>
#include <cstdint>
#include <utility>
#include <vector>

namespace loopfleet::http::detail {

enum class wait_for : std::uint8_t { nothing, input, output };

// One connection's readiness and the coroutine waiting for it.
struct readiness {
  // Edge-triggered epoll reports a change once; these remember it until a read or write finds
  // the socket empty or full (connection_policy.hpp's still_readable says when that is).
  bool readable = false;  // a new socket: the registration reports input already there
  bool writable = true;
  bool eof_seen = false;  // FIN, reset or error reported: read again even after a short read
  wait_for waiting = wait_for::nothing;
  std::coroutine_handle<> waiter;

  bool ready(wait_for what) const { return what == wait_for::input ? readable : writable; }
  // Resumes the waiting coroutine (by an event, or by the tick timer for a timeout).
  void wake() {
    waiting = wait_for::nothing;
    std::exchange(waiter, {}).resume();
  }
};

// co_await ready_for{io, wait_for::input}: true once ready, false when woken without it (the
// tick timer's deadline, or the server closing).
struct ready_for {
  readiness& io;
  wait_for what;
  bool await_ready() const { return io.ready(what); }
  void await_suspend(std::coroutine_handle<> h) {
    io.waiting = what;
    io.waiter = h;
  }
  bool await_resume() const { return io.ready(what); }
};

class ready_set {
 public:
  explicit ready_set(boost::asio::io_context& loop);
  ready_set(const ready_set&) = delete;
  ready_set& operator=(const ready_set&) = delete;

  // Watches `fd` for `io` until forget(fd). False (errno set) if epoll refused it.
  bool add(int fd, readiness& io);
  // Before the descriptor is closed. Closing removes it from the epoll set; a copy of it in a
  // forked child (an offload helper between fork and exec) keeps it there for a moment, and
  // such an event finds no one here rather than a freed connection.
  void forget(int fd) {
    if (static_cast<std::size_t>(fd) < watched_.size()) watched_[fd] = nullptr;
  }

 private:
  void arm();
  void on_ready();
  void dispatch(const epoll_event& ev);

  boost::asio::posix::stream_descriptor epoll_;
  std::vector<readiness*> watched_;  // by descriptor
  epoll_event events_[512];          // nginx's default batch (epoll_events)
};

}  // namespace loopfleet::http::detail
