// The offload pools with real threads and real helper processes, driven by a real loop.
#include <loopfleet/offload.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <future>
#include <thread>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using loopfleet::offload;
using loopfleet::offload_error;
using loopfleet::run_in_process;

namespace {

// One thread, two helpers, two queue places: small enough to fill on purpose. Tasks are
// registered before the first call forks the helpers.
const bool configured = [] {
  loopfleet::configure_offload({.threads = 1, .processes = 2, .queue = 2});
  loopfleet::register_process_task("reverse", [](std::string_view in) { return std::string(in.rbegin(), in.rend()); });
  loopfleet::register_process_task("segfault", [](std::string_view) -> std::string {
    ::raise(SIGSEGV);
    return "";
  });
  loopfleet::register_process_task("abort", [](std::string_view) -> std::string { std::abort(); });
  loopfleet::register_process_task("exit3", [](std::string_view) -> std::string { ::_exit(3); });
  loopfleet::register_process_task("throw", [](std::string_view) -> std::string {
    throw std::runtime_error("bad input");
  });
  loopfleet::register_process_task("sleep", [](std::string_view in) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(std::string(in))));
    return std::string(in);
  });
  loopfleet::register_json_task("sum", [](const boost::json::value& v) {
    std::int64_t total = 0;
    for (const auto& x : v.as_array()) total += x.as_int64();
    return boost::json::value(total);
  });
  return true;
}();

// Runs `test` as a coroutine on a fresh loop until it finishes; rethrows its exception.
template <class F>
void on_loop(F test) {
  asio::io_context loop(1);
  std::exception_ptr failure;
  asio::co_spawn(loop, test(loop), [&](std::exception_ptr e) { failure = e; });
  loop.run();
  if (failure) std::rethrow_exception(failure);
}

// GCC 12 rejects a string literal that a coroutine expression would keep across a co_await
// ("array used as initializer"), hence std::string arguments and this plain function.
bool mentions(const std::exception& e, const char* text) { return std::string(e.what()).find(text) != std::string::npos; }

// Awaits `op` and returns the offload_error reason it failed with.
template <class Op>
asio::awaitable<offload_error::reason> failure_of(Op op) {
  try {
    co_await std::move(op);
  } catch (const offload_error& e) {
    co_return e.why();
  }
  throw std::logic_error("expected an offload_error");
}

}  // namespace

TEST(ThreadPool, ResultsAndExceptionsComeBackOnTheLoopThread) {
  ASSERT_TRUE(configured);
  on_loop([](asio::io_context&) -> asio::awaitable<void> {
    auto loop_thread = std::this_thread::get_id();
    std::thread::id ran_on;
    int v = co_await offload([&] {
      ran_on = std::this_thread::get_id();
      return 6 * 7;
    });
    EXPECT_EQ(v, 42);
    EXPECT_NE(ran_on, loop_thread);
    EXPECT_EQ(std::this_thread::get_id(), loop_thread);
    co_await offload([] {});  // void works
    try {
      co_await offload([]() -> int { throw std::out_of_range("too far"); });
      ADD_FAILURE() << "no exception";
    } catch (const std::out_of_range& e) {
      EXPECT_STREQ(e.what(), "too far");
    }
    EXPECT_EQ(std::this_thread::get_id(), loop_thread);
  });
}

TEST(ThreadPool, CancelledBeforeStartNeverRunsAndRunningOneIsReported) {
  on_loop([](asio::io_context& loop) -> asio::awaitable<void> {
    std::promise<void> release;
    auto gate = release.get_future().share();
    std::atomic<bool> second_ran{false};
    // The only pool thread is busy until released.
    asio::cancellation_signal busy_cancel, queued_cancel;
    std::optional<offload_error::reason> busy_reason, queued_reason;
    asio::co_spawn(loop, failure_of(offload([gate] { gate.wait(); })),
                   asio::bind_cancellation_slot(busy_cancel.slot(), [&](std::exception_ptr, offload_error::reason r) {
                     busy_reason = r;
                   }));
    asio::co_spawn(loop, failure_of(offload([&] { second_ran = true; })),
                   asio::bind_cancellation_slot(queued_cancel.slot(),
                                                [&](std::exception_ptr, offload_error::reason r) { queued_reason = r; }));
    asio::steady_timer t(loop, 50ms);
    co_await t.async_wait(asio::use_awaitable);
    queued_cancel.emit(asio::cancellation_type::terminal);
    busy_cancel.emit(asio::cancellation_type::terminal);
    t.expires_after(50ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(queued_reason, offload_error::reason::cancelled_before_start);
    EXPECT_EQ(busy_reason, offload_error::reason::cancelled_while_running);
    release.set_value();
    co_await offload([] {});  // FIFO: the cancelled job's turn has passed
    EXPECT_FALSE(second_ran);
  });
}

TEST(ProcessPool, ResultsAndTaskExceptions) {
  on_loop([](asio::io_context&) -> asio::awaitable<void> {
    {
      auto got = co_await run_in_process(std::string("reverse"), std::string("abc"));
      EXPECT_EQ(got, std::string("cba"));
    }
    boost::json::value numbers = boost::json::array{1, 2, 39};  // not inline: see mentions()
    auto sum = co_await loopfleet::run_json_in_process(std::string("sum"), numbers);
    EXPECT_EQ(sum.as_int64(), 42);
    try {
      co_await run_in_process(std::string("throw"), std::string(""));
      ADD_FAILURE() << "no exception";
    } catch (const offload_error& e) {
      EXPECT_EQ(e.why(), offload_error::reason::task_failed);
      EXPECT_TRUE(mentions(e, "bad input")) << e.what();
    }
    {
      auto got = co_await failure_of(run_in_process(std::string("nope"), std::string("")));
      EXPECT_EQ(got, offload_error::reason::unknown_task);
    }
  });
}

TEST(ProcessPool, CrashesFailOnlyTheirOwnCallAndHelpersAreReplaced) {
  on_loop([](asio::io_context& loop) -> asio::awaitable<void> {
    // A slow task on the other helper runs through the crashes.
    std::optional<std::string> slow;
    asio::co_spawn(loop, run_in_process(std::string("sleep"), std::string("300")), [&](std::exception_ptr e, std::string out) {
      if (!e) slow = out;
    });
    try {
      co_await run_in_process(std::string("segfault"), std::string(""));
      ADD_FAILURE() << "no exception";
    } catch (const offload_error& e) {
      EXPECT_EQ(e.why(), offload_error::reason::crashed);
      EXPECT_TRUE(mentions(e, "SIGSEGV")) << e.what();
    }
    try {
      co_await run_in_process(std::string("abort"), std::string(""));
      ADD_FAILURE() << "no exception";
    } catch (const offload_error& e) {
      EXPECT_TRUE(mentions(e, "SIGABRT")) << e.what();
    }
    try {
      co_await run_in_process(std::string("exit3"), std::string(""));
      ADD_FAILURE() << "no exception";
    } catch (const offload_error& e) {
      EXPECT_EQ(e.why(), offload_error::reason::exited);
      EXPECT_TRUE(mentions(e, "exit code 3")) << e.what();
    }
    {
      auto got = co_await run_in_process(std::string("reverse"), std::string("ok"));
      EXPECT_EQ(got, std::string("ko"));
    }  // the replacement serves
    asio::steady_timer t(loop, 400ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(slow, std::string("300"));
  });
}

TEST(ProcessPool, TimeLimitKillsTheHelper) {
  on_loop([](asio::io_context&) -> asio::awaitable<void> {
    auto began = std::chrono::steady_clock::now();
    try {
      co_await run_in_process(std::string("sleep"), std::string("10000"), {.time_limit = 200ms});
      ADD_FAILURE() << "no exception";
    } catch (const offload_error& e) {
      EXPECT_EQ(e.why(), offload_error::reason::timed_out);
      EXPECT_TRUE(mentions(e, "time limit of 200 ms")) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - began, 5s);
    {
      auto got = co_await run_in_process(std::string("reverse"), std::string("x"));
      EXPECT_EQ(got, std::string("x"));
    }
  });
}

TEST(ProcessPool, FullQueueFailsFastOrWaitsAsAsked) {
  on_loop([](asio::io_context& loop) -> asio::awaitable<void> {
    int done = 0;
    auto count = [&](std::exception_ptr e, std::string) { done += e ? 0 : 1; };
    // Two helpers busy, two calls queued: the queue (2) is full.
    for (int i = 0; i < 4; ++i) asio::co_spawn(loop, run_in_process(std::string("sleep"), std::string("200")), count);
    asio::steady_timer t(loop, 50ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(co_await failure_of(run_in_process(std::string("reverse"), std::string("x"), {.wait_when_full = false})),
              offload_error::reason::queue_full);
    {
      auto got = co_await run_in_process(std::string("reverse"), std::string("waited"));
      EXPECT_EQ(got, std::string("detiaw"));
    }  // waits for room
    EXPECT_GE(done, 2);
    t.expires_after(500ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(done, 4);
  });
}

TEST(ProcessPool, CancellationBeforeStartAndWhileRunning) {
  on_loop([](asio::io_context& loop) -> asio::awaitable<void> {
    asio::cancellation_signal running_cancel, queued_cancel;
    std::optional<offload_error::reason> running_reason, queued_reason;
    int finished = 0;
    asio::co_spawn(loop, failure_of(run_in_process(std::string("sleep"), std::string("5000"))),
                   asio::bind_cancellation_slot(running_cancel.slot(),
                                                [&](std::exception_ptr, offload_error::reason r) { running_reason = r; }));
    asio::co_spawn(loop, run_in_process(std::string("sleep"), std::string("300")), [&](std::exception_ptr e, std::string) { finished += !e; });
    asio::co_spawn(loop, failure_of(run_in_process(std::string("reverse"), std::string("never"))),
                   asio::bind_cancellation_slot(queued_cancel.slot(),
                                                [&](std::exception_ptr, offload_error::reason r) { queued_reason = r; }));
    asio::steady_timer t(loop, 50ms);
    co_await t.async_wait(asio::use_awaitable);
    queued_cancel.emit(asio::cancellation_type::terminal);
    running_cancel.emit(asio::cancellation_type::terminal);
    t.expires_after(50ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(queued_reason, offload_error::reason::cancelled_before_start);
    EXPECT_EQ(running_reason, offload_error::reason::cancelled_while_running);
    {
      auto got = co_await run_in_process(std::string("reverse"), std::string("ab"));
      EXPECT_EQ(got, std::string("ba"));
    }  // the killed helper was replaced
    t.expires_after(400ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(finished, 1);
  });
}
