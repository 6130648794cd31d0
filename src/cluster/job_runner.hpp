// Running the jobs this worker handles: a fetch thread per job name pulls from its durable
// consumer (nats.c's fetch blocks) as long as the job's concurrency leaves room; each job runs
// on the loop against its time limit, and is acked, retried or moved to the dead letters.
// A drain fetches no more and waits for the jobs in flight to be acked.
#pragma once

#include <loopfleet/cluster.hpp>

#include "cluster/job_store.hpp"
#include "cluster/nats_connection.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loopfleet::cluster {

// What a task handler (a workflow's executor) has done with its message.
struct task_verdict {
  enum class what {
    ack,      // finished with it (the workflow ended, parked on a signal, or had nothing to do)
    later,    // hand it back to JetStream to come again after `delay` (a durable timer)
    abandon,  // leave it alone: a newer executor holds the workflow (fenced)
    term,     // it names nothing that can run
  } w = what::ack;
  std::chrono::milliseconds delay{0};
};
using task_handler = std::function<boost::asio::awaitable<task_verdict>(natsMsg* msg)>;

struct job_def {
  job_handler handler;  // a job; or
  task_handler task;    // a workflow task: no attempts or time limit, acked as it says
  int concurrency;
  std::string stream, subject, durable;  // where it is fetched from
};
// A job named `name`: stream LOOPFLEET_JOBS, subject loopfleet.job.<name>.
job_def job_definition(const std::string& name, job_handler handler, int concurrency);

class job_runner {
 public:
  job_runner(boost::asio::io_context& loop, const nats_connection& connection, job_store& store);
  ~job_runner();

  // Starts a fetch thread for each job handled.
  void start(const std::map<std::string, job_def>& handled);
  // Fetch no more jobs; `done` (on the loop) once the fetches under way have returned and
  // every job they brought has finished and been acked.
  void drain(std::function<void()> done);
  // Calls `done` if the drain is complete (on the loop).
  void check_drained();
  // A drain has begun: a workflow hands its task back at its next await.
  bool draining() const { return stop_; }

 private:
  void fetch_loop(const std::string& name, const job_def& def);
  boost::asio::awaitable<void> run(const std::string& name, const job_def& def, natsMsg* msg);
  boost::asio::awaitable<void> run_job(const std::string& name, const job_def& def, natsMsg* msg);
  boost::asio::awaitable<void> run_task(const job_def& def, natsMsg* msg);

  boost::asio::io_context& loop_;
  natsConnection* nc_;
  jsCtx* js_;
  job_store& store_;
  std::mutex slots_mutex_;
  std::condition_variable slot_freed_;
  std::map<std::string, int> in_flight_;
  int fetchers_running_ = 0;  // fetch threads not yet ended (under slots_mutex_)
  std::atomic<bool> stop_{false};
  std::function<void()> drained_;
  std::vector<std::thread> fetchers_;
  std::vector<natsSubscription*> pull_subs_;  // destroyed last, after every job is done
};

}  // namespace loopfleet::cluster
