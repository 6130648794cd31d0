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

#include <loopfleet/detail/offload.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

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
    queue_full,               // wait_when_full was false and the queue was full
    unknown_task,             // no task registered under that name
    task_failed,              // the task threw; what() carries its message
  };
  offload_error(reason r, const std::string& message) : std::runtime_error(message), why_(r) {}
  reason why() const { return why_; }

 private:
  reason why_;
};

// Runs `fn` on the worker's thread pool and resumes the caller on its loop with the result.
template <class F>
boost::asio::awaitable<std::invoke_result_t<F&>> offload(F fn) {
  using R = std::invoke_result_t<F&>;
  if constexpr (std::is_void_v<R>) {
    std::function<void()> task(std::move(fn));
    co_await detail::run_on_thread_pool(std::move(task));
  } else {
    auto result = std::make_shared<std::optional<R>>();
    std::function<void()> task = detail::keeping_result(std::move(fn), result);
    co_await detail::run_on_thread_pool(std::move(task));
    co_return std::move(**result);
  }
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
