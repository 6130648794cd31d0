// HTTP/1.1 for loopfleet workers: a router of handlers, and `run` to serve it.
//
//   int main(int argc, char** argv) {
//     loopfleet::http::router app;
//     app.get("/", [](loopfleet::http::request&) { return loopfleet::http::text("Hello"); });
//     return loopfleet::http::run(argc, argv, std::move(app));
//   }
//
// A handler is either a plain function returning `response` (no coroutine frame: the fast
// path) or a coroutine returning `boost::asio::awaitable<response>` that may co_await I/O on
// the worker's loop. Handlers run on the loop thread, one request at a time per connection;
// a handler that computes for long blocks every connection of its worker.
//
// The server handles keep-alive, pipelining (responses to a batch of pipelined requests go
// out in one write), Content-Length and chunked request bodies, HEAD, limits and timeouts.
// An exception thrown by a handler becomes a 500 response and a log line; the connection
// and the worker live on.
#pragma once

#include <loopfleet/runtime.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace boost::json {
class value;
}

namespace loopfleet::http {

class request;
namespace detail {
class request_parser;
class router_impl;
// A request with just a method and a target, for tests of routing.
request make_request(std::string method, std::string target);
}  // namespace detail

// One parsed request. Views returned by its accessors stay valid until the handler returns.
class request {
 public:
  std::string_view method() const { return method_; }
  // The request-target as sent, e.g. "/users/7?full=1" (or "http://host/users/7?full=1": the
  // absolute form, which a server must accept, RFC 9112 3.2.2).
  std::string_view target() const { return target_; }
  // The path of the target up to '?', not percent-decoded ("/" for "http://host").
  std::string_view path() const;
  // The target after '?', empty if none.
  std::string_view query() const;
  // The first value of query parameter `name` (not percent-decoded), or empty.
  std::string_view query_param(std::string_view name) const;
  // A path parameter captured by a "{name}" segment of the route, or empty.
  std::string_view param(std::string_view name) const;
  // The first value of header `name` (case-insensitive), or empty. For an absolute-form
  // target, "Host" is the target's authority, whatever the Host field says (RFC 9112 3.2.2).
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  // Every header field, in order received.
  std::vector<std::pair<std::string_view, std::string_view>> headers() const;
  // The body, de-chunked. Handlers may move from it.
  std::string& body() { return body_; }
  const std::string& body() const { return body_; }
  // 10 for HTTP/1.0, 11 for HTTP/1.1.
  int version() const { return version_; }

 private:
  friend class detail::request_parser;
  friend class detail::router_impl;
  friend request detail::make_request(std::string, std::string);
  void clear();
  // Finds the path (and the authority of an absolute-form target) once target_ is set.
  void locate_path();

  struct field {
    std::uint32_t name_at, name_len, value_at, value_len;
  };
  std::string method_;
  std::string target_;
  // Where the path begins in target_ and the authority of an absolute-form target.
  std::uint32_t path_at_ = 0, authority_at_ = 0, authority_len_ = 0;
  std::string fields_text_;  // every name and value back to back; `fields_` indexes it
  std::vector<field> fields_;
  std::vector<std::pair<std::string_view, std::string_view>> params_;
  std::string body_;
  int version_ = 11;
};

struct response {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain";
  // Extra header fields. Server, Date, Content-Length and Connection are set by the server.
  std::vector<std::pair<std::string, std::string>> headers;
};

// A text/plain response.
response text(std::string body, int status = 200);
// An application/json response with `value` serialized by Boost.JSON.
response json(const boost::json::value& value, int status = 200);

using sync_handler = std::function<response(request&)>;
using async_handler = std::function<boost::asio::awaitable<response>(request&)>;

// Maps method and path to a handler. Patterns are literal paths ("/healthz") or have
// "{name}" segments that match one path segment each ("/users/{id}"), read back with
// request::param. A HEAD request is served by the GET route (the body is not sent).
// A path that matches with another method gets 405 with an Allow header; no match, 404.
class router {
 public:
  router();
  router(router&&) noexcept;
  router& operator=(router&&) noexcept;
  ~router();

  template <class F>
  router& route(std::string_view method, std::string_view pattern, F handler) {
    if constexpr (std::is_invocable_r_v<boost::asio::awaitable<response>, F&, request&>)
      return add(method, pattern, sync_handler{}, async_handler(std::move(handler)));
    else
      return add(method, pattern, sync_handler(std::move(handler)), async_handler{});
  }
  template <class F> router& get(std::string_view p, F h) { return route("GET", p, std::move(h)); }
  template <class F> router& post(std::string_view p, F h) { return route("POST", p, std::move(h)); }
  template <class F> router& put(std::string_view p, F h) { return route("PUT", p, std::move(h)); }
  template <class F> router& del(std::string_view p, F h) { return route("DELETE", p, std::move(h)); }

  const detail::router_impl& impl() const { return *impl_; }

 private:
  router& add(std::string_view method, std::string_view pattern, sync_handler s, async_handler a);
  std::unique_ptr<detail::router_impl> impl_;
};

// How a worker reads and writes its connections: io_uring, with no system call per request,
// or epoll. `automatic` (the default) takes io_uring where the kernel gives it (Linux 6.0 and
// later, where neither the kernel's io_uring_disabled setting nor a seccomp filter, such as
// Docker's default one, refuses it) and epoll elsewhere; `io_uring` says so when it is refused.
// Both serve the same. Over ten runs io_uring served 4-6 % more requests per CPU-second than
// epoll in the median, though not in every run (docs/benchmarks.md); epoll holds less memory
// under load at many connections.
enum class io_interface : std::uint8_t { automatic, epoll, io_uring };

// Limits and timeouts of the server; each is also a command-line flag of `run`.
struct server_options {
  std::size_t max_header_bytes = 16 * 1024;       // request line + headers; over it: 431
  std::size_t max_body_bytes = 1024 * 1024;       // over it: 413
  std::size_t max_connections = 10000;            // per worker; over it: 503 and close
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};   // first byte to end of headers: 408
  std::chrono::milliseconds request_timeout{std::chrono::seconds(60)};  // first byte to end of body: 408
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};     // keep-alive wait between requests
  std::chrono::milliseconds send_timeout{std::chrono::seconds(60)};     // a response the client does not read
  // Once draining, how long an idle keep-alive connection may stay open for one more request
  // (answered with "Connection: close"). Closing idle connections at once races with a
  // request the client is sending right then, and that request would fail.
  std::chrono::milliseconds drain_idle_timeout{std::chrono::seconds(1)};
  io_interface io = io_interface::automatic;
};

// Parses the command line (worker and server flags; --help lists them), then serves `app`
// until SIGTERM has drained it. Returns the exit code for main: 0, or 2 on a bad flag or a
// start-up failure such as an address in use (reported as one line on stderr).
int run(int argc, char** argv, router app);
int run(const worker_options& worker, const server_options& server, router app);

}  // namespace loopfleet::http
