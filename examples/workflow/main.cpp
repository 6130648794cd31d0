// Durable workflows across nodes. Run it on every node with `loopfleet run --cluster`:
//   GET /order?id=ID&item=ITEM    starts workflow "order" (reserve, charge, a durable sleep of
//                                 ORDER_SLEEP_MS, 2000 by default, ship) and returns at once
//   GET /result?id=ID             waits (up to 60 s) for a workflow's result
//   GET /signal?id=ID&name=N&payload=P   sends a signal
//   GET /start-many?workflow=W&prefix=P&n=N&input=I&parallel=K   starts N workflows, ids
//                                 P0..P(N-1), K at a time (64)
//   GET /results?prefix=P&n=N     waits for each of them: one line "ID RESULT" per workflow
//                                 (64 at a time)
// or from the command line:
//   loopfleet workflow start order book-1 --id order-7 --wait 30s
//   loopfleet workflow show order-7
// Workflows:
//   order     reserve, charge, sleep, ship: each step says the node and pid that ran it
//   steps     input "N:MS": N steps of MS ms each; step n returns n*n, the result is
//             "sum=<sum of squares>"; each step prints "wf-begin ID N node=... pid=..." when it
//             starts and "wf-step ID N node=... pid=..." when it ends, on stdout and in the file
//             named by STEPS_FILE (lines in a killed node's pipe are lost, the file keeps them)
//   nap       input MS: a durable sleep of MS ms, then a step "woke" saying where it woke
//   approval  waits for signal "approve", then a step returning "approved: <payload>"
//   doomed    a step that always throws: the workflow fails
//   latency   input N: N steps that do nothing, timed one by one inside the coroutine (for
//             bench/workflows.py; a clock read outside a step breaks the rules of
//             docs/workflows.md, which is why the result is only meaningful on a first run):
//             "p50_us=... p99_us=..."
#include <loopfleet/loopfleet.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

namespace asio = boost::asio;
namespace http = loopfleet::http;
namespace cluster = loopfleet::cluster;
namespace workflow = loopfleet::workflow;
using asio::awaitable;

namespace {

std::string where() { return "node=" + cluster::node_name() + " pid=" + std::to_string(::getpid()); }

long number(std::string_view text, long otherwise) {
  long n = otherwise;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

// One write(2) per line with O_APPEND: lines of several workers never interleave.
void record(const std::string& line) {
  static const int file = [] {
    const char* path = std::getenv("STEPS_FILE");
    return path && *path ? ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  }();
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  if (file >= 0) [[maybe_unused]] auto w = ::write(file, line.data(), line.size());
}

awaitable<void> pause(long ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(asio::use_awaitable);
}

// A step of the order workflow: takes 100 ms, says where it ran.
workflow::step_function order_step(std::string what, std::string item) {
  return [what, item]() -> awaitable<std::string> {
    co_await pause(100);
    co_return what + " " + item + " on " + where();
  };
}

awaitable<std::string> order(workflow::context& ctx, std::string item) {
  static const long sleep_ms = number(std::getenv("ORDER_SLEEP_MS") ? std::getenv("ORDER_SLEEP_MS") : "", 2000);
  std::string reserved = co_await ctx.step("reserve", order_step("reserved", item));
  std::string charged = co_await ctx.step("charge", order_step("charged", item));
  co_await ctx.sleep(std::chrono::milliseconds(sleep_ms));
  std::string shipped = co_await ctx.step("ship", order_step("shipped", item));
  co_return reserved + "; " + charged + "; " + shipped;
}

awaitable<std::string> steps(workflow::context& ctx, std::string input) {
  auto colon = input.find(':');
  long n = number(input.substr(0, colon), 1);
  long ms = colon == std::string::npos ? 0 : number(input.substr(colon + 1), 0);
  long sum = 0;
  for (long i = 1; i <= n; ++i) {
    std::string id = ctx.id();
    workflow::step_function fn = [id, i, ms]() -> awaitable<std::string> {
      record("wf-begin " + id + " " + std::to_string(i) + " " + where() + "\n");
      if (ms > 0) co_await pause(ms);
      record("wf-step " + id + " " + std::to_string(i) + " " + where() + "\n");
      co_return std::to_string(i * i);
    };
    std::string name = "step-" + std::to_string(i);
    std::string r = co_await ctx.step(std::move(name), std::move(fn));
    sum += number(r, 0);
  }
  co_return "sum=" + std::to_string(sum);
}

awaitable<std::string> nap(workflow::context& ctx, std::string input) {
  record("wf-nap " + ctx.id() + " " + where() + "\n");
  co_await ctx.sleep(std::chrono::milliseconds(number(input, 1000)));
  std::string woke = co_await ctx.step("woke", [] { return "woke on " + where(); });
  co_return woke;
}

awaitable<std::string> approval(workflow::context& ctx, std::string input) {
  std::string payload = co_await ctx.wait_signal("approve");
  // (Named first: GCC 12 mis-destroys a capturing lambda written inside a co_await expression.)
  auto approved = [input, payload] { return "approved " + input + ": " + payload; };
  std::string r = co_await ctx.step("approved", approved);
  co_return r;
}

awaitable<std::string> doomed(workflow::context& ctx, std::string) {
  co_await ctx.step("always-fails", []() -> std::string { throw std::runtime_error("the warehouse is on fire"); });
  co_return "unreachable";
}

awaitable<std::string> latency(workflow::context& ctx, std::string input) {
  long n = std::max(1L, number(input, 100));
  std::vector<double> us;
  for (long i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    std::string name = "s" + std::to_string(i);
    co_await ctx.step(std::move(name), [] { return std::string(); });
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  char out[96];
  std::snprintf(out, sizeof out, "p50_us=%.0f p99_us=%.0f", us[us.size() / 2], us[us.size() * 99 / 100]);
  co_return std::string(out);
}

awaitable<http::response> start_order(http::request& req) {
  std::string id(req.query_param("id"));
  std::string item(req.query_param("item"));
  if (item.empty()) item = "book";
  std::string name = "order";
  try {
    co_await workflow::start(std::move(name), std::move(id), std::move(item));
    co_return http::text("started\n");
  } catch (const std::exception& e) {
    co_return http::text(std::string(e.what()) + "\n", 400);
  }
}

awaitable<http::response> result(http::request& req) {
  try {
    std::string r = co_await workflow::result(std::string(req.query_param("id")), std::chrono::seconds(60));
    co_return http::text(r + "\n");
  } catch (const workflow::workflow_error& e) {
    co_return http::text(std::string(e.what()) + "\n", e.why() == workflow::workflow_error::reason::timeout ? 504 : 500);
  } catch (const std::exception& e) {
    co_return http::text(std::string(e.what()) + "\n", 503);
  }
}

awaitable<http::response> send_signal(http::request& req) {
  try {
    co_await workflow::signal(std::string(req.query_param("id")), std::string(req.query_param("name")),
                              std::string(req.query_param("payload")));
    co_return http::text("sent\n");
  } catch (const std::exception& e) {
    co_return http::text(std::string(e.what()) + "\n", 400);
  }
}

// Runs `each(i)` for i in [0, n), at most `at_once` at a time, and returns when all have finished.
awaitable<void> for_each_concurrently(long n, long at_once, std::function<awaitable<void>(long)> each) {
  auto ex = co_await asio::this_coro::executor;
  struct state {
    long next = 0, running = 0;
  };
  auto st = std::make_shared<state>();
  asio::steady_timer done(ex, std::chrono::steady_clock::time_point::max());
  auto spawn_more = std::make_shared<std::function<void()>>();
  *spawn_more = [st, n, at_once, each, ex, &done, spawn_more] {
    while (st->running < at_once && st->next < n) {
      long i = st->next++;
      ++st->running;
      asio::co_spawn(ex, each(i), [st, &done, spawn_more](std::exception_ptr) {
        --st->running;
        (*spawn_more)();
        if (st->running == 0) done.cancel();
      });
    }
  };
  (*spawn_more)();
  if (st->running > 0) {
    boost::system::error_code ec;
    co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  *spawn_more = nullptr;  // breaks the cycle
}

awaitable<http::response> start_many(http::request& req) {
  std::string name(req.query_param("workflow"));
  std::string prefix(req.query_param("prefix"));
  std::string input(req.query_param("input"));
  long n = number(req.query_param("n"), 1);
  auto failure = std::make_shared<std::string>();
  std::function<awaitable<void>(long)> each = [name, prefix, input, failure](long i) -> awaitable<void> {
    std::string w = name, id = prefix + std::to_string(i), in = input;
    try {
      co_await workflow::start(std::move(w), std::move(id), std::move(in));
    } catch (const std::exception& e) {
      *failure = e.what();
    }
  };
  co_await for_each_concurrently(n, std::max(1L, number(req.query_param("parallel"), 64)), std::move(each));
  if (!failure->empty()) co_return http::text(*failure + "\n", 503);
  co_return http::text("started " + std::to_string(n) + "\n");
}

awaitable<http::response> results(http::request& req) {
  std::string prefix(req.query_param("prefix"));
  long n = number(req.query_param("n"), 1);
  auto lines = std::make_shared<std::vector<std::string>>(static_cast<std::size_t>(std::max(0L, n)));
  std::function<awaitable<void>(long)> each = [prefix, lines](long i) -> awaitable<void> {
    std::string id = prefix + std::to_string(i);
    try {
      std::string r = co_await workflow::result(id, std::chrono::seconds(120));
      (*lines)[static_cast<std::size_t>(i)] = id + " " + r + "\n";
    } catch (const std::exception& e) {
      (*lines)[static_cast<std::size_t>(i)] = id + " ERROR " + e.what() + "\n";
    }
  };
  co_await for_each_concurrently(n, 64, std::move(each));
  std::string out;
  for (const auto& l : *lines) out += l;
  co_return http::text(out);
}

}  // namespace

int main(int argc, char** argv) {
  cluster::join();
  workflow::define("order", order);
  workflow::define("steps", steps);
  workflow::define("nap", nap);
  workflow::define("approval", approval);
  workflow::define("doomed", doomed);
  workflow::define("latency", latency);
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.get("/order", start_order);
  app.get("/result", result);
  app.get("/signal", send_signal);
  app.get("/start-many", start_many);
  app.get("/results", results);
  return http::run(argc, argv, std::move(app));
}
