// The cluster layer for workers: load-balanced calls and durable jobs over NATS.
//
// A worker joins the cluster by calling join() in main(). Then, under `loopfleet run
// --cluster` (or --join / --nats), which gives every worker LOOPFLEET_NATS_URL, it connects at
// start-up. Join and register handlers before http::run (or run_worker):
//
//   loopfleet::cluster::join();
//   loopfleet::cluster::serve("whoami", [](std::string_view) { return loopfleet::cluster::node_name(); });
//   loopfleet::cluster::serve("price", [](std::string sku) -> awaitable<std::string> {...});
//   loopfleet::cluster::handle_jobs("resize", [](loopfleet::cluster::job& j) -> awaitable<void> {...});
//
// and from any coroutine on the loop:
//
//   std::string who = co_await loopfleet::cluster::call("whoami", "", 2s);
//   co_await loopfleet::cluster::submit("resize", image_id, {.idempotency_key = image_id});
//
// Calls go to one serving worker on any node (a NATS queue group). Jobs are stored in a
// JetStream work-queue stream (replicated on up to 3 nodes) and run at least once: a job is
// acknowledged only after its handler finished; a job whose worker or node died is delivered
// again elsewhere a few seconds later; a job that failed max_attempts times goes to the dead
// letters (loopfleet.dead.NAME). nats.c's blocking calls run on helper threads and its
// callbacks are posted to the worker's loop: nothing here blocks the loop.
// Wire format for other languages: docs/cluster.md.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace loopfleet::cluster {

class cluster_error : public std::runtime_error {
 public:
  enum class reason { not_configured, no_responders, timeout, handler_failed, publish_failed };
  cluster_error(reason r, const std::string& message) : std::runtime_error(message), why_(r) {}
  reason why() const { return why_; }

 private:
  reason why_;
};

// Puts this worker in the cluster: every start of its loop connects to NATS at
// LOOPFLEET_NATS_URL (without it the worker runs alone, and call and submit throw
// not_configured), serves the calls and runs the jobs registered, and a drain waits for the
// jobs in flight to be acknowledged. Call once in main(), before the worker runs; a second
// call does nothing.
void join();

// --- calls ---

using call_handler = std::function<std::string(std::string_view payload)>;
// A handler that is a coroutine on the worker's loop: it may await calls, jobs, timers and
// offload before it answers. A drain waits for the ones in flight.
using call_coroutine = std::function<boost::asio::awaitable<std::string>(std::string payload)>;

// Serves calls named `name` from this worker (once it has joined). Call before the worker
// starts. A handler that throws answers the caller with handler_failed and its message.
void serve(std::string name, call_handler handler);
void serve(std::string name, call_coroutine handler);

// Calls `name` on one worker of any node. Throws cluster_error: no_responders at once when
// nobody serves it, timeout, or handler_failed with the remote exception's message.
boost::asio::awaitable<std::string> call(std::string name, std::string payload,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

// --- durable jobs ---

struct job {
  std::string name;
  std::string payload;
  std::uint64_t id = 0;   // the stream sequence: unique per job
  int attempt = 1;        // 1 on first delivery
  // Its idempotency key ("" if submitted without one). A scheduled job's is its tick,
  // "schedule:NAME@<tick, Unix ms>": a job runs at least once, so a handler whose effect must
  // happen once per tick records it under this key.
  std::string key;
  std::string result;     // set by the handler: sent to a submitter that waits for it
};

struct job_options {
  std::string idempotency_key;  // a second submit with the same key (within 10 minutes) is dropped
  int max_attempts = 5;         // then the job goes to the dead letters
  std::chrono::milliseconds time_limit{std::chrono::seconds(30)};  // per attempt
  // How long submit keeps trying, with backoff, while JetStream cannot take the job: storage
  // full, a leader election, NATS reconnecting. Then it throws publish_failed. A retry after a
  // lost confirmation may store the job twice unless it has an idempotency key.
  std::chrono::milliseconds retry_for{std::chrono::seconds(10)};
};

using job_handler = std::function<boost::asio::awaitable<void>(job&)>;

// Runs jobs named `name` on this worker (once it has joined), at most `concurrency` at once. A
// handler that throws (or passes its time limit) fails that attempt. Call before the worker
// starts.
void handle_jobs(std::string name, job_handler handler, int concurrency = 64);

// Stores a job; returns its id once JetStream has it (replicated). Throws cluster_error.
boost::asio::awaitable<std::uint64_t> submit(std::string name, std::string payload, job_options options);
// (The defaults are plain overloads: GCC 12 mis-destroys a coroutine's defaulted class argument.)
inline boost::asio::awaitable<std::uint64_t> submit(std::string name, std::string payload) {
  return submit(std::move(name), std::move(payload), job_options{});
}

// Stores a job and waits for its result (job::result, set by the handler), up to `timeout`.
// The job itself stays durable: a timeout here does not cancel it. Throws cluster_error
// (timeout, publish_failed).
boost::asio::awaitable<std::string> submit_and_wait(std::string name, std::string payload, job_options options,
                                                    std::chrono::milliseconds timeout);
inline boost::asio::awaitable<std::string> submit_and_wait(std::string name, std::string payload) {
  return submit_and_wait(std::move(name), std::move(payload), job_options{}, std::chrono::seconds(30));
}

// This node's name (LOOPFLEET_NODE), for handlers that say where they ran.
const std::string& node_name();

}  // namespace loopfleet::cluster
