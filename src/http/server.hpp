// The HTTP server as a runtime service: acceptors, the connection list, the coarse timer
// that enforces every timeout, and drain. The per-connection protocol is in connection.cpp.
#pragma once

#include "http/access_log.hpp"
#include "http/connection_policy.hpp"
#include "http/ready_set.hpp"
#include "http/request_reader.hpp"
#include "http/router_impl.hpp"

#include <loopfleet/http.hpp>
#include <loopfleet/runtime.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <time.h>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace loopfleet::http::detail {

namespace asio = boost::asio;
using acceptor_type = asio::basic_socket_acceptor<asio::generic::stream_protocol>;
using clock = std::chrono::steady_clock;

// steady_clock's time from the kernel's tick-updated copy (CLOCK_MONOTONIC_COARSE, the same
// time base, a few ms behind): what a deadline is measured from. A precise read costs a TSC
// read that, under KVM, was 3 % of a hello request's CPU (perf, docs/benchmarks.md); the
// deadlines are checked by a 250 ms tick anyway.
inline clock::time_point coarse_now() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return clock::time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

class server;

// What a connection holds only while a request passes through it: the bytes read and not yet
// parsed, the parser and its request, the responses not yet sent. About 5 KiB; the server
// lends them out and takes them back when the connection goes idle.
struct exchange_buffers {
  explicit exchange_buffers(const server_options& o);
  std::vector<char> in;
  std::size_t begin = 0, end = 0;  // [begin, end) of `in` is read and not yet parsed
  std::string out;
  std::size_t sent = 0;  // of `out`
  request_reader reader;
};

// A connection's answers while it waits for them to leave, its other buffers given back
// (connection.cpp, park_output). Kept by the server with the string's room for the next.
struct parked_output {
  std::string out;
  std::size_t sent = 0;
};

// State of one connection that the server looks at from outside the coroutine. It lives in
// the connection coroutine's frame and links itself into the server's list; it is most of what
// an idle keep-alive connection costs (docs/benchmarks.md).
struct connection {
  // Takes `fd` (non-blocking) and closes it when it goes.
  connection(server& s, int fd);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  void enter(phase p, clock::duration timeout);  // timeout zero: no deadline
  void enter(phase p, clock::time_point deadline);

  server& srv;
  const int fd;
  bool watched = false;  // in the server's ready set (false: epoll refused it, the connection ends)
  readiness io;
  std::coroutine_handle<> frame;  // the connection's coroutine, which server::close destroys
  connection* prev = nullptr;
  connection* next = nullptr;
  phase where = phase::waiting;
  clock::time_point deadline = clock::time_point::max();
  bool timed_out = false;  // set by the timer before it wakes the connection's wait
};

class server final : public loopfleet::service {
 public:
  server(router app, server_options options);
  ~server() override;

  void start(asio::io_context& loop, std::vector<listener> listeners) override;
  void drain(std::function<void()> done) override;
  void close() override;
  std::string status() const override;
  bool takes_connections() const override { return true; }
  void adopt(std::size_t listener, int fd) override;

  const server_options& options() const { return options_; }
  const router_impl& routes() const { return routes_.impl(); }
  bool draining() const { return draining_; }
  // The current Date header value, refreshed by the tick timer.
  std::string_view date() const { return {date_, 29}; }
  // A worker's server opens the access log its environment names when it starts (the
  // supervisor's own admin endpoint, the same server, does not).
  void log_requests_from_environment() { access_log_wanted_ = true; }
  // The access log, or nullptr when it is off.
  access_log* requests_log() const { return access_log_.get(); }

  void attach(connection& c);
  void detach(connection& c);

  asio::io_context& loop() const { return *loop_; }
  connection_io& connections_io() { return *io_; }
  // A connection's buffers, only while a request is passing through it: an idle keep-alive
  // connection gives them back, as nginx frees its request buffers on keep-alive.
  std::unique_ptr<exchange_buffers> take_buffers();
  void give_back(std::unique_ptr<exchange_buffers> b);
  // A set that will not come back: kept by the connections' io for a send still in flight.
  void kept_elsewhere() { --lent_; }
  // Whether more sets are lent than the server keeps spare: a connection waiting for its
  // answers to leave then parks them and gives its buffers back (connection.cpp).
  bool buffers_scarce() const { return lent_ > spare_buffers_kept; }
  std::unique_ptr<parked_output> take_parked();
  void give_back(std::unique_ptr<parked_output> p);
  // Lent sets kept for the next connection that needs them. On epoll, connections are
  // answered one at a time, so few are out at once unless requests arrive in pieces or
  // responses wait for the client to read. On io_uring, every connection answered in one wake
  // keeps its buffers until its send completes, after the wake's submit: as many as a wake
  // answers (uring_set.cpp takes up to 256 completions at a time) are out at once, and
  // allocating them anew each time cost 6 % of a request at 1,000 connections (perf).
  static constexpr std::size_t spare_buffers_kept = 256;

 private:
  asio::awaitable<void> accept_loop(acceptor_type& acceptor, int family);
  // An accepted connection (non-blocking), from an acceptor or handed over: limits, then its
  // protocol loop.
  void serve_accepted(int fd, int family);
  void arm_tick();
  void on_tick();
  void update_date();
  void maybe_drained();

  router routes_;
  server_options options_;
  asio::io_context* loop_ = nullptr;
  std::vector<std::unique_ptr<acceptor_type>> acceptors_;
  std::vector<int> families_;  // per listener, for connections handed over
  std::unique_ptr<asio::steady_timer> tick_;
  std::unique_ptr<connection_io> io_;
  std::vector<std::unique_ptr<exchange_buffers>> spare_buffers_;
  std::vector<std::unique_ptr<parked_output>> spare_parked_;
  std::size_t lent_ = 0;
  std::unique_ptr<access_log> access_log_;
  bool access_log_wanted_ = false;
  connection* head_ = nullptr;
  std::vector<connection*> late_;  // the tick's list of connections to wake
  std::size_t connections_ = 0;
  bool draining_ = false;
  std::function<void()> drained_;
  char date_[30] = {};
  long date_second_ = -1;
};

// The protocol loop of one accepted connection (connection.cpp): a coroutine that starts at
// once and owns `fd` from then on.
void serve_connection(server& srv, int fd);

}  // namespace loopfleet::http::detail
