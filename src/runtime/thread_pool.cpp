// The thread pool behind offload(): threads that run tasks beside the loop, and the
// cancellation-aware operation that hands a task over and brings its outcome back.
#include <loopfleet/offload.hpp>

#include "runtime/one_shot.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace loopfleet {
namespace {

// A plain queue of jobs served by N threads. An idle thread polls the queue for a few tens of
// microseconds before it sleeps on the condition variable: waking a sleeping thread on another
// (virtual) CPU costs more than a short job.
class thread_pool_impl {
 public:
  explicit thread_pool_impl(int threads) {
    for (int i = 0; i < threads; ++i) std::thread([this] { serve(); }).detach();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
      pending_.fetch_add(1, std::memory_order_release);
    }
    ready_.notify_one();
  }
  // How long recent jobs ran, for the loop's decision to wait for one briefly.
  std::chrono::nanoseconds recent_runtime() const { return std::chrono::nanoseconds(recent_ns_.load()); }

 private:
  void serve() {
    for (;;) {
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (pending_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until) {
      }
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return !jobs_.empty(); });
        job = std::move(jobs_.front());
        jobs_.pop_front();
        pending_.fetch_sub(1, std::memory_order_relaxed);
      }
      auto began = std::chrono::steady_clock::now();
      job();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - began).count();
      recent_ns_.store((recent_ns_.load(std::memory_order_relaxed) * 7 + ns) / 8, std::memory_order_relaxed);
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::atomic<int> pending_{0};
  std::atomic<long long> recent_ns_{0};
};

thread_pool_impl& thread_pool() {
  // Never destroyed, threads detached: at exit a pool thread may still be running a task
  // whose result nobody awaits any more, and joining it would hold the exit hostage.
  static auto* pool = new thread_pool_impl(offload_threads());
  return *pool;
}

// One task, shared between the loop (initiation, cancellation) and one pool thread (run).
// `state` decides who completes, once: the task's outcome or the cancellation.
struct thread_job {
  enum : int { queued, running, finished, cancelled, abandoned };
  std::atomic<int> state{queued};
  std::function<void()> task;
  detail::one_shot<std::exception_ptr> done;
};

void cancel(thread_job& j) {
  int expected = thread_job::queued;
  if (j.state.compare_exchange_strong(expected, thread_job::cancelled)) {
    j.done.complete(std::make_exception_ptr(
        offload_error(offload_error::reason::cancelled_before_start, "offload cancelled before it started")));
  } else if (expected == thread_job::running && j.state.compare_exchange_strong(expected, thread_job::abandoned)) {
    j.done.complete(std::make_exception_ptr(
        offload_error(offload_error::reason::cancelled_while_running,
                      "offload cancelled while running; the task finishes and its result is dropped")));
  }
}

void begin(const std::shared_ptr<thread_job>& job) {
  if (auto slot = job->done.slot(); slot.is_connected())
    slot.assign([weak = std::weak_ptr<thread_job>(job)](boost::asio::cancellation_type) {
      if (auto j = weak.lock()) cancel(*j);
    });
  thread_pool().post([job] {
    int expected = thread_job::queued;
    if (!job->state.compare_exchange_strong(expected, thread_job::running)) return;
    std::exception_ptr failure;
    try {
      job->task();
    } catch (...) {
      failure = std::current_exception();
    }
    expected = thread_job::running;
    if (job->state.compare_exchange_strong(expected, thread_job::finished)) job->done.complete(failure);
  });
  if (thread_pool().recent_runtime() < std::chrono::microseconds(20)) {
    // Recent tasks ran for microseconds: wait for this one at most 50 us on the loop, so its
    // completion is already queued when we return, rather than sleep and pay for a
    // cross-CPU wake-up.
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    while (!job->done.posted() && std::chrono::steady_clock::now() < until) {
    }
  }
}

}  // namespace

namespace detail {

boost::asio::awaitable<void> run_on_thread_pool(std::function<void()> task) {
  auto job = std::make_shared<thread_job>();
  job->task = std::move(task);
  return async_one_shot(std::move(job), begin);
}

}  // namespace detail
}  // namespace loopfleet
