// What the offload() template needs from the thread pool. It is a template, so its glue must
// be in a header; this one keeps the pool itself (its threads, its cancellation rules, Asio's
// completion machinery) in src/runtime/thread_pool.cpp, and includes nothing beyond the
// standard library and asio/awaitable.hpp.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <utility>

namespace loopfleet::detail {

// Runs `task` on the worker's thread pool; the awaiting coroutine resumes on its loop, with
// the task's exception if it threw. Cancelled while queued, the task never runs; cancelled
// while running, the await ends at once and the task runs on (include/loopfleet/offload.hpp).
boost::asio::awaitable<void> run_on_thread_pool(std::function<void()> task);

// The pool's task for `fn`: its result goes into `result`. Built in a plain function: GCC 12
// double-frees a capturing lambda that sits in a coroutine's co_await expression.
template <class F, class R>
std::function<void()> keeping_result(F fn, std::shared_ptr<std::optional<R>> result) {
  return [fn = std::move(fn), result = std::move(result)]() mutable { result->emplace(fn()); };
}

}  // namespace loopfleet::detail
