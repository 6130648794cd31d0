// How the connections' sockets are read and written, behind one small interface with two
// implementations. Neither puts a connection's socket in Asio's reactor, which reads
// speculatively: after every response it calls recv once more to find the socket empty
// (EAGAIN), and its waits re-arm the descriptor with epoll_ctl (docs/benchmarks.md, "Where the
// cycles and bytes go"). Each is one descriptor in Asio's loop, and one wake of it handles a
// batch of connections before the loop does anything else.
//
// - epoll (`ready_set`, here): as nginx does it. Every socket is registered once, for input
//   and output, edge-triggered, and each connection remembers whether it is readable and
//   writable; it reads only what it knows is there, so a request costs one recv and one send.
// - io_uring (`uring_set`, uring_set.cpp): no system call per request at all. Each connection
//   has one multishot receive into buffers the kernel picks from a ring the server provides
//   (so an idle connection holds no buffer), and its sends are submitted with the batch.
//   The default where the kernel allows it (`--io auto`, server_options::io; Linux 6.0, for
//   the multishot receive).
#pragma once

#include <loopfleet/http.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/epoll.h>
#include <unistd.h>

#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loopfleet::http::detail {

enum class wait_for : std::uint8_t { nothing, input, output };

// One connection's readiness and the coroutine waiting for it.
struct readiness {
  // Edge-triggered epoll reports a change once; these remember it until a read or write finds
  // the socket empty or full (connection_policy.hpp's still_readable says when that is). On
  // io_uring, readable means input was delivered and not yet read, writable that no send is
  // in flight.
  bool readable = false;  // epoll: a new socket's registration reports input already there
  bool writable = true;
  bool eof_seen = false;  // FIN, reset or error reported: read again even after a short read
  wait_for waiting = wait_for::nothing;
  // io_uring only (uring_set.cpp).
  bool receiving = false;       // its multishot receive is armed
  bool receive_paused = false;  // stopped because the connection holds too much unread input
  bool sending = false;         // a send is in flight
  bool send_done = false;       // a send finished and send() has not reported it yet
  std::int32_t send_result = 0;
  std::uint32_t chunk_size = 0;  // the delivered buffer the connection is reading right now
  const char* chunk = nullptr;
  std::string held;  // input delivered while the connection was not reading (usually empty)
  std::coroutine_handle<> waiter;

  bool ready(wait_for what) const { return what == wait_for::input ? readable : writable; }
  // io_uring: no receive is armed though the connection still takes input.
  bool wants_receive() const { return !receiving && !eof_seen && !receive_paused; }
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

// What the protocol loop asks of the connections' input and output.
class connection_io {
 public:
  virtual ~connection_io() = default;
  // Watches `fd` for `io` until close(fd). False (errno set) if the kernel refused it.
  virtual bool add(int fd, readiness& io) = 0;
  // Stops watching `fd` and closes it; nothing of `io` is touched after it.
  virtual void close(int fd, readiness& io) = 0;
  // One read into [room, room + size): the bytes read; 0 when nothing is there now (and
  // io.readable is then false); -1 at the connection's end.
  virtual long receive(int fd, readiness& io, char* room, std::size_t size) = 0;
  // Sends [data, data + size): the bytes known to be sent now (epoll sends at once; io_uring
  // submits the send and reports it when it has finished, meanwhile io.writable is false and
  // the bytes must stay where they are); -1 when the connection failed.
  virtual long send(int fd, readiness& io, const char* data, std::size_t size) = 0;
  // A connection that ends with a send in flight (a send timeout) leaves it the bytes that
  // send reads, kept until the kernel is done with them.
  virtual void keep_until_sent(int fd, readiness& io, std::shared_ptr<void> bytes) = 0;
  virtual std::string_view name() const = 0;
  // Every tick of the server's coarse timer (250 ms).
  virtual void tick() {}
};

// io_uring when it is wanted and the kernel offers what it needs (provided buffer rings, a
// multishot receive: Linux 6.0), else epoll; `why_not` says why io_uring was not taken.
std::unique_ptr<connection_io> make_connection_io(boost::asio::io_context& loop, io_interface wanted,
                                                  std::string& why_not);

// The io_uring implementation (uring_set.cpp), or nothing and why.
std::unique_ptr<connection_io> make_uring_set(boost::asio::io_context& loop, std::string& why_not);

class ready_set final : public connection_io {
 public:
  explicit ready_set(boost::asio::io_context& loop);
  ready_set(const ready_set&) = delete;
  ready_set& operator=(const ready_set&) = delete;

  bool add(int fd, readiness& io) override;
  // Closing removes a descriptor from the epoll set; a copy of it in a forked child (an
  // offload helper between fork and exec) keeps it there for a moment, and such an event
  // finds no one here rather than a freed connection.
  void close(int fd, readiness&) override {
    if (static_cast<std::size_t>(fd) < watched_.size()) watched_[fd] = nullptr;
    ::close(fd);
  }
  long receive(int fd, readiness& io, char* room, std::size_t size) override;
  long send(int fd, readiness& io, const char* data, std::size_t size) override;
  void keep_until_sent(int, readiness&, std::shared_ptr<void>) override {}  // sends are never in flight
  std::string_view name() const override { return "epoll"; }

 private:
  void arm();
  void on_ready();
  void dispatch(const epoll_event& ev);

  boost::asio::posix::stream_descriptor epoll_;
  std::vector<readiness*> watched_;  // by descriptor
  epoll_event events_[512];          // nginx's default batch (epoll_events)
};

}  // namespace loopfleet::http::detail
