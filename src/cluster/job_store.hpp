// Putting jobs and dead letters into JetStream from a worker: each publish blocks in nats.c,
// so it runs on a publisher thread; one that JetStream refuses for a reason that passes
// (storage full, a leader election, NATS reconnecting) is tried again with backoff.
#pragma once

#include <loopfleet/cluster.hpp>

#include "cluster/node.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace loopfleet::cluster {

// Threads that run blocking nats.c calls, each call on the first thread free: the calls of
// different callers (each workflow awaits its own one at a time) go out to NATS side by side,
// and a slow one (a read waiting for a replica, a timeout) holds up only its own thread.
// One thread runs the calls one after another, in order.
class blocking_pool {
 public:
  explicit blocking_pool(int threads = 1);
  ~blocking_pool();
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;
  void post(std::function<void()> work);

 private:
  void run();
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> work_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

class job_store {
 public:
  // One message to store.
  struct outgoing {
    std::string subject, payload, msg_id;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  struct stored {
    std::uint64_t seq = 0;
    std::optional<publish_failure> failure;
  };

  job_store(boost::asio::io_context& loop, jsCtx* js);

  // Publishes until JetStream stores it, retrying what can pass later with backoff for up to
  // `patience`. Returns the stream sequence, or the failure that ended it.
  boost::asio::awaitable<stored> store(std::shared_ptr<const outgoing> out, std::chrono::milliseconds patience);

  // Stores job `name`; `reply_to` (may be empty) is where its result is sent. Throws
  // cluster_error publish_failed.
  // (No defaulted `reply_to`: GCC 12 mis-destroys a coroutine's defaulted class argument.)
  boost::asio::awaitable<std::uint64_t> submit(std::string name, std::string payload, job_options o,
                                               std::string reply_to);

 private:
  // One JetStream publish, made on the publisher thread; completes on the loop.
  boost::asio::awaitable<stored> publish_once(std::shared_ptr<const outgoing> out);

  boost::asio::io_context& loop_;
  jsCtx* js_;
  std::chrono::steady_clock::time_point last_retry_warning_{};
  std::unique_ptr<blocking_pool> publisher_ = std::make_unique<blocking_pool>();
};

}  // namespace loopfleet::cluster
