// CPU-heavy work three ways, to see what offloading does for the event loop.
//   GET /hash?mode=inline|thread|process&rounds=N   hash a 1 MiB buffer N times (default 20)
//   GET /crash                                       a process-pool task that segfaults
//   GET /                                            answers at once: a latency probe
#include <loopfleet/loopfleet.hpp>

#include <signal.h>

#include <charconv>
#include <cstdint>
#include <string>

namespace http = loopfleet::http;

namespace {

// FNV-1a over 1 MiB, `rounds` times: about 1 ms of CPU per round.
std::uint64_t hash_rounds(int rounds) {
  static const std::string buffer(1 << 20, 'x');
  std::uint64_t h = 1469598103934665603ull;
  for (int r = 0; r < rounds; ++r)
    for (unsigned char c : buffer) h = (h ^ c) * 1099511628211ull;
  return h;
}

int rounds_of(const http::request& req) {
  auto text = req.query_param("rounds");
  int n = 20;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return std::clamp(n, 1, 10000);
}

boost::asio::awaitable<http::response> hash(http::request& req) {
  int rounds = rounds_of(req);
  auto mode = req.query_param("mode");
  std::uint64_t h = 0;
  if (mode == "thread") {
    h = co_await loopfleet::offload([rounds] { return hash_rounds(rounds); });
  } else if (mode == "process") {
    std::string out = co_await loopfleet::run_in_process("hash", std::to_string(rounds));
    h = std::stoull(out);
  } else {
    h = hash_rounds(rounds);  // inline: the loop computes, every other request waits
  }
  co_return http::text(std::to_string(h) + "\n");
}

boost::asio::awaitable<http::response> crash(http::request&) {
  try {
    co_await loopfleet::run_in_process("crash", "");
  } catch (const loopfleet::offload_error& e) {
    co_return http::text(std::string(e.what()) + "\n", 500);
  }
  co_return http::text("the task did not crash?\n", 500);
}

}  // namespace

int main(int argc, char** argv) {
  loopfleet::register_process_task("hash", [](std::string_view in) {
    return std::to_string(hash_rounds(std::stoi(std::string(in))));
  });
  loopfleet::register_process_task("crash", [](std::string_view) -> std::string {
    ::raise(SIGSEGV);
    return "";
  });
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.get("/hash", hash);
  app.get("/crash", crash);
  return http::run(argc, argv, std::move(app));
}
