// The worker's cluster client (include/loopfleet/cluster.hpp), in parts: one NATS connection;
// the calls, both sides, with the inbox that replies and job results come back on; the job
// store (submits and dead letters, retried); the job runner (fetch threads, handlers, drain).
// This header is what the parts share: the handlers the worker registered, and the one way
// a nats.c thread reaches the loop.
//
// Threads: nats.c delivers subscription callbacks on its own threads; each one only posts to
// the worker's loop. Blocking calls (JetStream publish, fetch) run on helper threads: one for
// publishing, one per job name for fetching. Handlers, replies and acknowledgements happen on
// the loop. A message the loop owns is destroyed there.
#pragma once

#include <loopfleet/cluster.hpp>

#include "cluster/call_exchange.hpp"
#include "cluster/job_runner.hpp"
#include "cluster/job_store.hpp"
#include "cluster/nats_connection.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <map>
#include <mutex>
#include <string>

namespace loopfleet::cluster {

// What the worker registered before it started (serve, handle_jobs).
struct registry {
  std::map<std::string, call_def> calls;
  std::map<std::string, job_def> jobs;
  std::map<std::string, job_def> workflows;  // keyed "workflow NAME": the runner counts them apart from jobs
};
registry& handlers();

// Members are destroyed bottom up: the runner first (its fetch threads post jobs), the
// connection last (every other part uses it).
class client {
 public:
  client(boost::asio::io_context& loop, nats_connection connection);
  // Subscriptions and fetchers begin once the client is reachable from nats.c's threads.
  void start();

  boost::asio::io_context& loop;
  nats_connection connection;
  call_exchange calls;
  job_store store;
  blocking_pool journal_io{16};  // workflows' journal reads and appends (nats.c blocks)
  job_runner runner;
};

// The worker's client, or null before it connects and once its loop is going away. nats.c's
// callbacks look it up here, under the mutex, never through a pointer of their own: one may
// run while the client is being destroyed.
struct client_slot {
  std::mutex mutex;
  client* current = nullptr;
};
client_slot& the_client();

// The client of this worker, or cluster_error not_configured naming why there is none.
client& connected_client();

// Runs `f(client&)` on the client's loop if the client is still there; from any thread.
template <class F>
bool post_to_client(F f) {
  auto& slot = the_client();
  std::lock_guard lock(slot.mutex);
  if (!slot.current) return false;
  client* c = slot.current;
  boost::asio::post(c->loop, [c, f = std::move(f)]() mutable { f(*c); });
  return true;
}

// What join() has the runtime do at each start of a worker's loop and at its drain, for a
// loop that is not the runtime's: the Python extension runs the client on a loop of its own.
// start_client joins (so call and submit work) and connects when LOOPFLEET_NATS_URL is set;
// drain_client fetches no more jobs and takes no more calls, then calls `done` on the loop
// once the jobs and coroutine calls in flight have finished.
void start_client(boost::asio::io_context& loop);
void drain_client(std::function<void()> done);

}  // namespace loopfleet::cluster
