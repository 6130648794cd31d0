// Offload: CPU-bound work leaves the event loop.
//
// Thread pool, for work that is safe to run beside the loop in the same process:
//
//   std::uint64_t h = co_await loopfleet::offload([data] { return expensive_hash(data); });
//
// The callable runs on the worker's pool of threads; its result, or its exception, comes back
// to the awaiting coroutine on the loop thread. The pool has LOOPFLEET_OFFLOAD_THREADS
// threads, by default the CPUs this process may use divided by the supervisor's worker count
// (LOOPFLEET_WORKERS), at least 1.
//
// Process pool, for work that may crash or must be stopped after a time limit (the C++ answer
// to Python's run_in_executor(ProcessPoolExecutor)): register named tasks before the server
// starts, then await them.
//
//   loopfleet::register_process_task("resize", [](std::string_view in) { return resize(in); });
//   ...
//   std::string out = co_await loopfleet::run_in_process("resize", image, {.time_limit = 2s});
//
// Tasks run in helper processes that the worker forks and owns (LOOPFLEET_OFFLOAD_PROCESSES,
// default as for threads). A task that segfaults, aborts, exits or runs past its time limit
// fails only its own await, with an offload_error saying which; the helper is replaced.
// Helpers die with their worker, also when the worker is SIGKILLed.
//
// Cancellation: an await that is cancelled (for example the loser of `offload(f) || timer`)
// before its task started never runs it (offload_error::cancelled_before_start); one cancelled
// while the task runs completes at once with offload_error::cancelled_while_running, and the
// task's result is dropped (a process task's helper is killed).
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace boost::json {
class value;
}

namespace loopfleet {

class offload_error : public std::runtime_error {
 public:
  enum class reason {
    cancelled_before_start,   // cancelled while queued: the task never ran
    cancelled_while_running,  // cancelled while running: its result is dropped
    crashed,                  // the helper process died of a signal (SIGSEGV, SIGABRT, ...)
    exited,                   // the helper process exited (the task called exit?)
    timed_out,                // the task ran past its time limit; the helper was killed
    queue_full,               // fail_when_full was asked and the queue was full
    unknown_task,             // no task registered under that name
    task_failed,              // the task threw; what() carries its message
  };
  offload_error(reason r, const std::string& message) : std::runtime_error(message), why_(r) {}
  reason why() const { return why_; }

 private:
  reason why_;
};

namespace detail {

void post_to_thread_pool(std::function<void()> work);
// True when recent thread-pool jobs ran for only microseconds: then the loop waits for the
// result a moment (bounded) instead of sleeping and paying for a cross-CPU wake-up.
bool short_jobs_recently();
// Forks the process-pool helpers now if any task is registered (the runtime does this before
// serving, so the first call does not wait for a fork).
void start_process_pool(boost::asio::io_context& loop);

template <class R>
using offload_value = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

// Shared between the loop (initiation, cancellation, completion) and one pool thread (run).
// `state` decides who completes the handler, once; the handler only ever runs on the loop.
template <class V>
struct thread_job : std::enable_shared_from_this<thread_job<V>> {
  enum : int { queued, running, finished, cancelled, abandoned };
  std::atomic<int> state{queued};
  std::atomic<bool> delivered{false};  // the completion is queued on the loop
  std::optional<V> value;
  std::exception_ptr error;
  // In an optional, set with emplace: Asio 1.26's any_completion_handler move-assignment
  // recurses into its own converting constructor.
  std::optional<boost::asio::any_completion_handler<void(std::exception_ptr, V)>> handler;
  boost::asio::any_io_executor loop;  // where the awaiting coroutine resumes; counts as work
  boost::asio::cancellation_slot slot;

  // Called on the loop (cancellation) or on a pool thread (finished): either way the handler
  // runs on the loop, after the slot is cleared.
  void complete(std::exception_ptr e, V v) {
    auto to = loop;
    boost::asio::post(to, [self = this->shared_from_this(), e, v = std::move(v)]() mutable {
      if (self->slot.is_connected()) self->slot.clear();
      self->loop = {};  // running on the loop now: the job need not keep it alive any more
      auto handler = std::move(*self->handler);
      self.reset();
      std::move(handler)(e, std::move(v));
    });
    delivered.store(true, std::memory_order_release);
  }
};

}  // namespace detail

namespace detail {

// The asynchronous operation behind offload(). A plain function, not a coroutine: GCC 12
// double-frees a capturing lambda that sits in the same expression as a co_await.
template <class F, class V = offload_value<std::invoke_result_t<F&>>>
auto start_thread_job(std::shared_ptr<thread_job<V>> job, F fn) {
  using R = std::invoke_result_t<F&>;
  auto initiation = [job, fn = std::move(fn)](auto handler) mutable {
    job->slot = boost::asio::get_associated_cancellation_slot(handler);
    // Tracked: while the task is on a pool thread, the loop has work and does not return.
    job->loop = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                    boost::asio::execution::outstanding_work.tracked);
    job->handler.emplace(std::move(handler));
    if (job->slot.is_connected()) {
      job->slot.assign([weak = std::weak_ptr<thread_job<V>>(job)](boost::asio::cancellation_type) {
        auto j = weak.lock();
        if (!j) return;
        int expected = thread_job<V>::queued;
        if (j->state.compare_exchange_strong(expected, thread_job<V>::cancelled)) {
          j->complete(std::make_exception_ptr(offload_error(offload_error::reason::cancelled_before_start,
                                                            "offload cancelled before it started")),
                      V{});
        } else if (expected == thread_job<V>::running &&
                   j->state.compare_exchange_strong(expected, thread_job<V>::abandoned)) {
          j->complete(std::make_exception_ptr(offload_error(
                          offload_error::reason::cancelled_while_running,
                          "offload cancelled while running; the task finishes and its result is dropped")),
                      V{});
        }
      });
    }
    post_to_thread_pool([job, fn = std::move(fn)]() mutable {
      int expected = thread_job<V>::queued;
      if (!job->state.compare_exchange_strong(expected, thread_job<V>::running)) return;
      V result{};
      std::exception_ptr failure;
      try {
        if constexpr (std::is_void_v<R>) fn();
        else result = fn();
      } catch (...) {
        failure = std::current_exception();
      }
      expected = thread_job<V>::running;
      if (job->state.compare_exchange_strong(expected, thread_job<V>::finished)) job->complete(failure, std::move(result));
    });
    if (short_jobs_recently()) {
      // At most 50 us on the loop: the completion is then already queued when we return.
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (!job->delivered.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) {
      }
    }
  };
  // use_awaitable rethrows a non-null exception_ptr in the awaiting coroutine.
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, V)>(
      std::move(initiation), boost::asio::use_awaitable);
}

}  // namespace detail

// Runs `fn` on the worker's thread pool and resumes the caller on its loop with the result.
template <class F>
boost::asio::awaitable<std::invoke_result_t<F&>> offload(F fn) {
  using R = std::invoke_result_t<F&>;
  using V = detail::offload_value<R>;
  auto job = std::make_shared<detail::thread_job<V>>();
  V value = co_await detail::start_thread_job(job, std::move(fn));
  if constexpr (!std::is_void_v<R>) co_return std::move(value);
}

// --- process pool ---

using process_task = std::function<std::string(std::string_view input)>;

// Registers a task under `name`. Call before the first run_in_process: helpers are forked
// with the tasks known at that moment. A task that throws fails its await with task_failed.
void register_process_task(std::string name, process_task task);
// The same with Boost.JSON in and out.
void register_json_task(std::string name, std::function<boost::json::value(const boost::json::value&)> task);

struct process_call_options {
  std::chrono::milliseconds time_limit{std::chrono::seconds(30)};
  // When every helper is busy and the queue is full: wait for room (true) or fail at once
  // with offload_error::queue_full (false).
  bool wait_when_full = true;
};

boost::asio::awaitable<std::string> run_in_process(std::string name, std::string input, process_call_options options);
boost::asio::awaitable<boost::json::value> run_json_in_process(std::string name, const boost::json::value& input,
                                                               process_call_options options);
// The defaults are plain overloads: GCC 12 mis-destroys a coroutine's defaulted class argument.
inline boost::asio::awaitable<std::string> run_in_process(std::string name, std::string input) {
  return run_in_process(std::move(name), std::move(input), process_call_options{});
}
boost::asio::awaitable<boost::json::value> run_json_in_process(std::string name, const boost::json::value& input);

// Pool sizes. Zero means the default (CPUs available / LOOPFLEET_WORKERS, at least 1; the
// environment variables LOOPFLEET_OFFLOAD_THREADS, _PROCESSES and _QUEUE override it).
// Takes effect only before the first offload or run_in_process; returns false after.
struct offload_options {
  int threads = 0;
  int processes = 0;
  std::size_t queue = 0;  // calls waiting for a helper; default 1024
};
bool configure_offload(const offload_options& options);
int offload_threads();
int offload_processes();
std::size_t offload_queue_limit();

}  // namespace loopfleet
