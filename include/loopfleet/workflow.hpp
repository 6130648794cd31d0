// Durable workflows: a coroutine whose every await through its context is journaled in the
// cluster, so it survives the worker and the node it runs on.
//
//   loopfleet::cluster::join();
//   loopfleet::workflow::define("order", [](loopfleet::workflow::context& ctx, std::string order)
//       -> boost::asio::awaitable<std::string> {
//     std::string r = co_await ctx.step("reserve", [&] { return reserve(order); });
//     co_await ctx.step("charge", [&]() -> boost::asio::awaitable<std::string> { co_return co_await pay(order); });
//     co_await ctx.sleep(std::chrono::hours(24));           // durable: no worker sits on it
//     std::string ok = co_await ctx.wait_signal("approved");
//     co_return co_await ctx.step("ship", [&] { return ship(order); });
//   });
//
// and from any coroutine on a worker's loop (or `loopfleet workflow start|show|signal`):
//
//   co_await loopfleet::workflow::start("order", "order-42", payload);   // idempotent on the id
//   std::string receipt = co_await loopfleet::workflow::result("order-42", 60s);
//
// A workflow runs as a durable task on one worker of any node. If that worker or node dies,
// the task comes back on another, which runs the coroutine again from its start: every await
// already journaled returns its journaled value at once, without running again, and the
// workflow goes on from its first await that was not. So the workflow's code between awaits
// must be deterministic (the rules: docs/workflows.md): what it reads from the world goes
// through a step. A step interrupted before its result was journaled runs again.
#pragma once

#include <loopfleet/cluster.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace loopfleet::workflow {

class workflow_error : public std::runtime_error {
 public:
  enum class reason {
    unknown_workflow,  // no worker registered it
    conflict,          // the id exists with another workflow or input
    finished,          // a signal to a workflow that has ended
    failed,            // result(): the workflow failed (the message is its error)
    timeout,           // result(): not finished in time
    invalid,           // a bad id or name
    unavailable,       // the journal could not be read or written
  };
  workflow_error(reason r, const std::string& message) : std::runtime_error(message), why_(r) {}
  reason why() const { return why_; }

 private:
  reason why_;
};

class context;
using step_function = std::function<boost::asio::awaitable<std::string>()>;
using workflow_function = std::function<boost::asio::awaitable<std::string>(context&, std::string input)>;

class context {
 public:
  struct impl;
  explicit context(impl& i) : impl_(i) {}
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  const std::string& id() const;
  // Where this run of the workflow is (a step may run on another node after a failover).
  const std::string& node() const;

  // Runs `fn` once, journals its result and returns it; on a later run of the workflow the
  // journaled result is returned and `fn` is not called. `fn` returns std::string, or
  // awaitable<std::string>. A function that throws is tried again (3 attempts, 100 ms then
  // 1 s apart); then the error is journaled and thrown as a std::runtime_error.
  template <class F>
  boost::asio::awaitable<std::string> step(std::string name, F fn) {
    if constexpr (std::is_invocable_r_v<boost::asio::awaitable<std::string>, F>) {
      return run_step(std::move(name), step_function(std::move(fn)));
    } else {
      static_assert(std::is_invocable_r_v<std::string, F>, "a step returns std::string or awaitable<std::string>");
      auto f = std::make_shared<F>(std::move(fn));
      return run_step(std::move(name), [f]() -> boost::asio::awaitable<std::string> { co_return (*f)(); });
    }
  }
  // A durable timer: the deadline is journaled, the task handed back to JetStream to come
  // back at the deadline, and the coroutine ends here until then (on whatever node).
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds duration);
  // Waits for a signal named `name` (workflow::signal, `loopfleet workflow signal`) and
  // returns its payload; signals sent before it are kept. While it waits no worker holds it.
  boost::asio::awaitable<std::string> wait_signal(std::string name);
  // A cluster call or job submit journaled as a step.
  boost::asio::awaitable<std::string> call(std::string name, std::string payload,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(5));
  boost::asio::awaitable<std::string> submit(std::string name, std::string payload);

 private:
  boost::asio::awaitable<std::string> run_step(std::string name, step_function fn);
  impl& impl_;
};

// Registers workflow `name` on this worker (once it has joined the cluster). Call before the
// worker starts. At most `concurrency` of its runs at once on this worker.
void define(std::string name, workflow_function fn, int concurrency = 256);

// Starts workflow `name` with `id`. A second start with the same id and input does nothing;
// with another input or workflow it throws conflict. Throws unknown_workflow when no worker
// has registered `name`.
boost::asio::awaitable<void> start(std::string name, std::string id, std::string input);
// The workflow's result, waiting up to `timeout`; throws failed with its error, or timeout.
boost::asio::awaitable<std::string> result(std::string id, std::chrono::milliseconds timeout);
// Sends signal `name` to workflow `id`. Throws finished when it has ended.
boost::asio::awaitable<void> signal(std::string id, std::string name, std::string payload);

}  // namespace loopfleet::workflow
