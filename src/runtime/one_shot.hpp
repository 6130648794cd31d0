// The awaiting side of an operation we finish by hand: a task on a pool thread, a reply from a
// helper process, a NATS reply or publish. Each such operation needs the same few steps, and
// Asio 1.26 and GCC 12 each punish one way of writing them, so they are written once, here.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <utility>

namespace loopfleet::detail {

// A completion handler that is called at most once, always on its own executor.
//
// - complete() may be called from any thread and more than once: the first call wins. The
//   handler then runs in a step posted to the awaiting coroutine's executor, never inline:
//   the caller may be a pool thread, or the operation's own cancellation handler, whose slot
//   must not be cleared (destroying the handler that runs) until that step.
// - While armed, the executor is held with outstanding_work.tracked: a loop whose work is out
//   on another thread does not run out of work and return.
// - The handler sits in an optional set with emplace: Asio 1.26's any_completion_handler
//   move-assignment recurses into its own converting constructor.
template <class... Args>
class one_shot {
 public:
  using signature = void(Args...);

  template <class Handler>
  void arm(Handler&& handler) {
    slot_ = boost::asio::get_associated_cancellation_slot(handler);
    executor_ = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                    boost::asio::execution::outstanding_work.tracked);
    handler_.emplace(std::forward<Handler>(handler));
  }

  // The awaiting coroutine's cancellation slot (may be unconnected): assign to it to hear a
  // cancellation, and finish the operation with complete().
  boost::asio::cancellation_slot slot() const { return slot_; }

  // False when the operation had already completed.
  bool complete(Args... args) {
    if (done_.exchange(true, std::memory_order_acq_rel)) return false;
    auto to = std::move(executor_);  // released after the post, which keeps the loop's work counted
    boost::asio::post(to, [h = std::move(*handler_), s = slot_, ... args = std::move(args)]() mutable {
      if (s.is_connected()) s.clear();
      std::move(h)(std::move(args)...);
    });
    handler_.reset();
    posted_.store(true, std::memory_order_release);
    return true;
  }

  bool done() const { return done_.load(std::memory_order_acquire); }
  // The handler's step is queued on its executor (for a caller spinning briefly for it).
  bool posted() const { return posted_.load(std::memory_order_acquire); }

 private:
  std::optional<boost::asio::any_completion_handler<void(Args...)>> handler_;
  boost::asio::any_io_executor executor_;
  boost::asio::cancellation_slot slot_;
  std::atomic<bool> done_{false};
  std::atomic<bool> posted_{false};
};

// The awaitable of an operation whose state (shared, with a `one_shot<...> done` member) is
// finished by someone else: `begin(state)` runs once the awaiting coroutine has suspended and
// `state->done` holds its handler. A non-null exception_ptr first argument is rethrown in the
// coroutine.
//
// A plain function, not a coroutine, and called with the state and `begin` already built:
// GCC 12 double-frees a capturing lambda that sits in the same expression as a co_await.
template <class State, class Begin>
auto async_one_shot(std::shared_ptr<State> state, Begin begin) {
  using signature = typename decltype(State::done)::signature;
  auto initiation = [state = std::move(state), begin = std::move(begin)](auto handler) mutable {
    state->done.arm(std::move(handler));
    begin(state);
  };
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, signature>(std::move(initiation),
                                                                                     boost::asio::use_awaitable);
}

}  // namespace loopfleet::detail
