// A worker with the routes the integration tests need besides hello's.
#include <loopfleet/loopfleet.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <stdexcept>

namespace asio = boost::asio;
namespace http = loopfleet::http;

namespace {

int query_int(const http::request& req, std::string_view name, int fallback) {
  auto text = req.query_param(name);
  int value = fallback;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// Waits on the loop without blocking it; prints a line first so a test can tell that the
// request is in flight.
asio::awaitable<http::response> slow(http::request& req) {
  int ms = query_int(req, "ms", 1000);
  std::printf("slow request started ms=%d\n", ms);
  std::fflush(stdout);
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await timer.async_wait(asio::use_awaitable);
  co_return http::text("slept " + std::to_string(ms) + " ms\n");
}

}  // namespace

int main(int argc, char** argv) {
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.post("/echo", [](http::request& req) {
    return http::text("method=" + std::string(req.method()) + " length=" + std::to_string(req.body().size()) +
                      " body=" + req.body());
  });
  app.get("/slow", slow);
  app.get("/throw", [](http::request&) -> http::response { throw std::runtime_error("boom on purpose"); });
  app.get("/users/{id}", [](http::request& req) { return http::text("user " + std::string(req.param("id"))); });
  app.get("/pid", [](http::request&) { return http::text(std::to_string(::getpid())); });
  app.get("/header", [](http::request& req) {
    std::string_view name = req.query_param("name");
    return http::text(std::string(req.header(name.empty() ? "x-probe" : name)));
  });
  return http::run(argc, argv, std::move(app));
}
