#include "http/server.hpp"

#include "runtime/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <ctime>
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

}  // namespace

connection::connection(server& s, socket_type sock) : srv(s), socket(std::move(sock)) { srv.attach(*this); }

connection::~connection() { srv.detach(*this); }

void connection::enter(phase p, clock::duration timeout) {
  enter(p, timeout.count() > 0 ? clock::now() + timeout : clock::time_point::max());
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
  for (auto& l : listeners) {
    families_.push_back(l.family);
    auto a = std::make_unique<acceptor_type>(loop, asio::generic::stream_protocol(l.family, SOCK_STREAM), l.fd);
    asio::co_spawn(loop, accept_loop(*a, l.family), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // a bug: let it be seen
    });
    acceptors_.push_back(std::move(a));
  }
}

asio::awaitable<void> server::accept_loop(acceptor_type& acceptor, int family) {
  while (!draining_) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || draining_) co_return;
      // Out of fds or memory: accepting again at once would spin. Back off briefly; the
      // connection stays queued in the kernel meanwhile.
      log::warn("accept failed: " + ec.message() + "; retrying in 100 ms");
      asio::steady_timer pause(*loop_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    serve_accepted(std::move(sock), family);
  }
}

void server::serve_accepted(socket_type sock, int family) {
  if (connections_ >= options_.max_connections) {
    boost::system::error_code ignored;
    sock.non_blocking(true, ignored);
    sock.write_some(asio::buffer(overloaded_response), ignored);
    sock.shutdown(socket_type::shutdown_both, ignored);
    return;
  }
  if (family == AF_INET || family == AF_INET6) {
    int one = 1;  // responses are written whole; Nagle would only delay them
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  asio::co_spawn(*loop_, serve_connection(*this, std::move(sock)), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error(std::string("connection ended by an exception: ") + ex.what());
    }
  });
}

void server::adopt(std::size_t listener, int fd) {
  if (listener >= families_.size()) {  // not one of ours: the supervisor and worker disagree
    ::close(fd);
    return;
  }
  int family = families_[listener];
  boost::system::error_code ec;
  socket_type sock(*loop_);
  sock.assign(asio::generic::stream_protocol(family, SOCK_STREAM), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  serve_accepted(std::move(sock), family);
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
  auto now = clock::now();
  if (access_log_) access_log_->tick(now);
  for (connection* c = head_; c; c = c->next) {
    if (c->deadline <= now && !c->timed_out) {
      c->timed_out = true;
      boost::system::error_code ignored;
      c->socket.cancel(ignored);
    }
  }
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
  access_log_.reset();  // writes its last lines
}

std::string server::status() const { return std::to_string(connections_) + " connections"; }

}  // namespace loopfleet::http::detail
