#include "http/server.hpp"

#include "runtime/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>

namespace loopfleet::http::detail {
namespace {

// Timeouts are checked by one coarse timer per worker, not one timer per operation: arming a
// timer on every read and write measurably costs throughput (research/cpp_runtimes.md §2.8),
// and a quarter second of slack on a 10 s timeout does not matter.
constexpr auto tick_interval = std::chrono::milliseconds(250);

constexpr std::string_view overloaded_response =
    "HTTP/1.1 503 Service Unavailable\r\nServer: loopfleet\r\nContent-Type: text/plain\r\n"
    "Content-Length: 38\r\nConnection: close\r\n\r\nToo many connections on this worker.\r\n";

// Connections accepted per wake of a listening socket before the loop turns to its other
// work: enough to take a burst in one go, few enough that a flood of new connections does not
// starve the ones already open.
constexpr int accept_batch = 64;

}  // namespace

exchange_buffers::exchange_buffers(const server_options& o)
    : in(std::min<std::size_t>(4096, o.max_header_bytes + 4096)), reader(o) {}

connection::connection(server& s, int f) : srv(s), fd(f) {
  srv.attach(*this);
  watched = srv.connections_io().add(fd, io);
  if (!watched) log::warn(std::string("cannot watch a connection: ") + std::strerror(errno));
}

connection::~connection() {
  srv.connections_io().close(fd, io);
  srv.detach(*this);
}

void connection::enter(phase p, clock::duration timeout) {
  enter(p, timeout.count() > 0 ? coarse_now() + timeout : clock::time_point::max());
}

void connection::enter(phase p, clock::time_point d) {
  where = p;
  deadline = d;
  timed_out = false;  // a cancel that raced with a completed read must not stick
}

server::server(router app, server_options options) : routes_(std::move(app)), options_(options) {}

server::~server() = default;

void server::start(asio::io_context& loop, std::vector<listener> listeners) {
  loop_ = &loop;
  if (access_log_wanted_) access_log_ = access_log::from_environment();
  update_date();
  tick_ = std::make_unique<asio::steady_timer>(loop);
  arm_tick();
  std::string why_not;
  io_ = make_connection_io(loop, options_.io, why_not);
  if (options_.io == io_interface::io_uring && io_->name() != "io_uring")
    log::warn("--io io_uring: not available here (" + why_not + "); connections use epoll");
  else if (options_.io == io_interface::automatic && io_->name() != "io_uring")
    log::info("connections use epoll: io_uring is not available here (" + why_not + ")");
  for (auto& l : listeners) {
    families_.push_back(l.family);
    auto a = std::make_unique<acceptor_type>(loop, asio::generic::stream_protocol(l.family, SOCK_STREAM), l.fd);
    a->non_blocking(true);  // accept4 below must find the queue empty, not wait on it
    asio::co_spawn(loop, accept_loop(*a, l.family), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // a bug: let it be seen
    });
    acceptors_.push_back(std::move(a));
  }
}

// The accepted sockets never enter Asio's reactor: accept4 makes them non-blocking and the
// connection puts them in the ready set. Waiting on the listening socket and then accepting
// until its queue is empty takes a burst of connections per wake.
asio::awaitable<void> server::accept_loop(acceptor_type& acceptor, int family) {
  while (!draining_) {
    auto [ec] = co_await acceptor.async_wait(acceptor_type::wait_read, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || draining_) co_return;
      log::warn("waiting for connections failed: " + ec.message());
    }
    int failure = 0;
    for (int n = 0; n < accept_batch && !draining_; ++n) {
      int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        serve_accepted(fd, family);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) failure = errno;
      break;
    }
    if (failure == 0 && !ec) continue;
    // Out of fds or memory (or a wait that failed): accepting again at once would spin. Back
    // off briefly; the connections stay queued in the kernel meanwhile.
    if (failure) log::warn(std::string("accept failed: ") + std::strerror(failure) + "; retrying in 100 ms");
    asio::steady_timer pause(*loop_, std::chrono::milliseconds(100));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void server::serve_accepted(int fd, int family) {
  if (connections_ >= options_.max_connections) {
    [[maybe_unused]] auto ignored = ::send(fd, overloaded_response.data(), overloaded_response.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    return;
  }
  if (family == AF_INET || family == AF_INET6) {
    int one = 1;  // responses are written whole; Nagle would only delay them
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  serve_connection(*this, fd);
}

std::unique_ptr<exchange_buffers> server::take_buffers() {
  ++lent_;
  if (spare_buffers_.empty()) return std::make_unique<exchange_buffers>(options_);
  auto b = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return b;
}

void server::give_back(std::unique_ptr<exchange_buffers> b) {
  --lent_;
  // Buffers grown by a long header or a large body go, rather than be kept at that size.
  if (spare_buffers_.size() >= spare_buffers_kept || !lendable_again(b->in.size(), b->out.capacity(),
                                                                     b->reader.current().body().capacity()))
    return;
  b->begin = b->end = b->sent = 0;
  b->out.clear();
  b->reader.finish();  // a connection closed mid-request leaves its parser behind
  spare_buffers_.push_back(std::move(b));
}

std::unique_ptr<parked_output> server::take_parked() {
  if (spare_parked_.empty()) return std::make_unique<parked_output>();
  auto p = std::move(spare_parked_.back());
  spare_parked_.pop_back();
  return p;
}

void server::give_back(std::unique_ptr<parked_output> p) {
  if (spare_parked_.size() >= spare_buffers_kept || p->out.capacity() > lendable_capacity) return;
  p->out.clear();
  p->sent = 0;
  spare_parked_.push_back(std::move(p));
}

void server::adopt(std::size_t listener, int fd) {
  if (listener >= families_.size()) {  // not one of ours: the supervisor and worker disagree
    ::close(fd);
    return;
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    ::close(fd);
    return;
  }
  serve_accepted(fd, families_[listener]);
}

void server::attach(connection& c) {
  c.next = head_;
  if (head_) head_->prev = &c;
  head_ = &c;
  ++connections_;
  worker_counters::add(counters().connections, 1);
}

void server::detach(connection& c) {
  if (c.prev) c.prev->next = c.next;
  else head_ = c.next;
  if (c.next) c.next->prev = c.prev;
  --connections_;
  worker_counters::add(counters().connections, -1);
  maybe_drained();
}

void server::arm_tick() {
  tick_->expires_after(tick_interval);
  tick_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    on_tick();
    arm_tick();
  });
}

void server::on_tick() {
  update_date();
  io_->tick();
  auto now = clock::now();
  if (access_log_) access_log_->tick(now);
  // Woken, a connection may end and leave the list, so the late ones are collected first; a
  // connection woken ends only itself.
  late_.clear();
  // A connection past its deadline is woken at every tick while it waits: one woken just as
  // its socket became ready goes on, and must not then wait on untimed.
  for (connection* c = head_; c; c = c->next) {
    if (c->deadline <= now) {
      c->timed_out = true;
      if (c->io.waiting != wait_for::nothing) late_.push_back(c);
    }
  }
  for (connection* c : late_) c->io.wake();
}

void server::update_date() {
  std::time_t now = std::time(nullptr);
  if (now == date_second_) return;
  date_second_ = now;
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  std::strftime(date_, sizeof date_, "%a, %d %b %Y %H:%M:%S GMT", &utc);
}

void server::drain(std::function<void()> done) {
  draining_ = true;
  drained_ = std::move(done);
  boost::system::error_code ignored;
  for (auto& a : acceptors_) a->close(ignored);
  // Every connection closes after its next response, which says "Connection: close". One
  // that waits for a request gets drain_idle_timeout to send it, then the tick closes it.
  auto idle_deadline = clock::now() + options_.drain_idle_timeout;
  for (connection* c = head_; c; c = c->next)
    if (c->where == phase::waiting && c->deadline > idle_deadline) c->enter(phase::waiting, idle_deadline);
  maybe_drained();
}

void server::maybe_drained() {
  if (draining_ && connections_ == 0 && drained_) asio::post(*loop_, std::exchange(drained_, nullptr));
}

void server::close() {
  acceptors_.clear();
  tick_.reset();
  // The loop has stopped: the connections still open are ended here, each by destroying its
  // suspended coroutine (which closes its socket), not left to the process's exit.
  while (head_) head_->frame.destroy();
  io_.reset();
  spare_buffers_.clear();
  spare_parked_.clear();
  access_log_.reset();  // writes its last lines
}

std::string server::status() const { return std::to_string(connections_) + " connections"; }

}  // namespace loopfleet::http::detail
