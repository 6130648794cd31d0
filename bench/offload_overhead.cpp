// Per-call overhead of loopfleet's offload pools: sequential awaits of a trivial task on one
// loop, for the thread pool and the process pool. Prints microseconds per call.
//   bench-offload [calls]
#include <loopfleet/offload.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace asio = boost::asio;

int main(int argc, char** argv) {
  int calls = argc > 1 ? std::atoi(argv[1]) : 20000;
  loopfleet::configure_offload({.threads = 1, .processes = 1, .queue = 16});
  loopfleet::register_process_task("noop", [](std::string_view in) { return std::string(in); });
  asio::io_context loop(1);
  double thread_us = 0, process_us = 0;
  asio::co_spawn(
      loop,
      [&]() -> asio::awaitable<void> {
        using clock = std::chrono::steady_clock;
        for (int i = 0; i < 1000; ++i) co_await loopfleet::offload([] { return 1; });  // warm up
        auto t0 = clock::now();
        for (int i = 0; i < calls; ++i) co_await loopfleet::offload([] { return 1; });
        thread_us = std::chrono::duration<double, std::micro>(clock::now() - t0).count() / calls;
        std::string in = "x";
        for (int i = 0; i < 1000; ++i) co_await loopfleet::run_in_process(std::string("noop"), in);
        t0 = clock::now();
        for (int i = 0; i < calls; ++i) co_await loopfleet::run_in_process(std::string("noop"), in);
        process_us = std::chrono::duration<double, std::micro>(clock::now() - t0).count() / calls;
      },
      asio::detached);
  loop.run();
  std::printf("{\"thread_pool_us\": %.3f, \"process_pool_us\": %.3f, \"calls\": %d}\n", thread_us, process_us, calls);
}
