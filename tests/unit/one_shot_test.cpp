// The one hand-written completion (src/runtime/one_shot.hpp) that the offload pools and the
// cluster client stand on: whoever completes, from whichever thread, the awaiting coroutine
// resumes once, on its own loop, and never inside the call that completed it.
#include "runtime/one_shot.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

namespace asio = boost::asio;
using loopfleet::detail::async_one_shot;
using loopfleet::detail::one_shot;

namespace {

struct op {
  one_shot<std::exception_ptr, int> done;
};

struct outcome {
  int value = 0;
  int resumptions = 0;
  std::thread::id resumed_on;
  std::exception_ptr failure;
};

template <class Begin>
asio::awaitable<void> await_op(Begin begin, outcome& out) {
  auto state = std::make_shared<op>();
  out.value = co_await async_one_shot(std::move(state), std::move(begin));
  out.resumed_on = std::this_thread::get_id();
}

// Awaits the operation `begin` starts, on a fresh loop run by this thread.
template <class Begin>
void run_op(Begin begin, outcome& out) {
  asio::io_context loop(1);
  asio::co_spawn(loop, await_op(std::move(begin), out), [&](std::exception_ptr e) {
    out.failure = e;
    ++out.resumptions;
  });
  loop.run();
}

}  // namespace

TEST(OneShot, CompletesOnceAndNeverInsideTheCallThatCompletedIt) {
  outcome out;
  run_op(
      [&out](const std::shared_ptr<op>& o) {
        EXPECT_TRUE(o->done.complete(nullptr, 1));
        EXPECT_FALSE(o->done.complete(nullptr, 2));  // the first completion wins
        EXPECT_EQ(out.value, 0);                     // posted, not resumed in here
      },
      out);
  EXPECT_FALSE(out.failure);
  EXPECT_EQ(out.resumptions, 1);
  EXPECT_EQ(out.value, 1);
  EXPECT_EQ(out.resumed_on, std::this_thread::get_id());
}

TEST(OneShot, CompletedFromAnotherThreadResumesOnTheLoopThread) {
  outcome out;
  std::thread worker;
  run_op(
      [&worker](const std::shared_ptr<op>& o) {
        worker = std::thread([o] {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          o->done.complete(nullptr, 7);
        });
      },
      out);
  worker.join();
  EXPECT_EQ(out.resumptions, 1);
  EXPECT_EQ(out.value, 7);
  EXPECT_EQ(out.resumed_on, std::this_thread::get_id());
}

TEST(OneShot, AnExceptionIsRethrownInTheAwaitingCoroutine) {
  outcome out;
  run_op(
      [](const std::shared_ptr<op>& o) {
        o->done.complete(std::make_exception_ptr(std::runtime_error("failed on purpose")), 0);
      },
      out);
  ASSERT_TRUE(out.failure);
  EXPECT_THROW(std::rethrow_exception(out.failure), std::runtime_error);
}
