// A worker that misbehaves on request, for tests and demos of the watchdog and recycling.
// Never serve it to anyone.
//   GET /            Hello, World!
//   GET /pid         this worker's pid
//   GET /block?ms=N  blocks the event loop with a synchronous sleep, in block_the_loop()
//   GET /crash       abort()
//   GET /leak?mb=N   allocates and keeps N MiB
#include <loopfleet/loopfleet.hpp>

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace http = loopfleet::http;

// Not static and not inlined, so a stack dump of the blocked loop shows this very name.
[[gnu::noinline]] void block_the_loop(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  asm volatile("");  // keep the call a call, not a tail jump that would hide this frame
}

namespace {

std::vector<std::unique_ptr<char[]>> leaked;

int query_int(const http::request& req, std::string_view name, int fallback) {
  auto text = req.query_param(name);
  int value = fallback;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.get("/pid", [](http::request&) { return http::text(std::to_string(::getpid()) + "\n"); });
  app.get("/block", [](http::request& req) {
    int ms = query_int(req, "ms", 1000);
    std::printf("blocking the loop for %d ms in block_the_loop\n", ms);
    std::fflush(stdout);
    block_the_loop(ms);
    return http::text("blocked " + std::to_string(ms) + " ms\n");
  });
  app.get("/crash", [](http::request&) -> http::response { std::abort(); });
  app.get("/leak", [](http::request& req) {
    std::size_t mb = static_cast<std::size_t>(query_int(req, "mb", 10));
    auto block = std::make_unique<char[]>(mb << 20);
    std::memset(block.get(), 1, mb << 20);  // touch it, so it counts in RSS
    leaked.push_back(std::move(block));
    return http::text("leaked " + std::to_string(mb) + " MiB more\n");
  });
  return http::run(argc, argv, std::move(app));
}
