// Calls between workers over NATS request/reply: answering the calls this worker serves (a
// queue group per name), and making calls, whose replies, like the results of jobs a
// submitter waits for, come back on one inbox per worker.
#pragma once

#include <loopfleet/cluster.hpp>

#include "runtime/one_shot.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loopfleet::cluster {

// A call served: one of the two kinds of handler.
struct call_def {
  call_handler plain;
  call_coroutine coroutine;
};

class call_exchange {
 public:
  call_exchange(boost::asio::io_context& loop, natsConnection* nc);
  ~call_exchange();

  // Subscribes the inbox and a queue group for each call served.
  void start(const std::map<std::string, call_def>& served);
  // Takes no more calls (the queue groups are drained, so those already received are still
  // answered); `done` on the loop once no coroutine handler is running.
  void drain(std::function<void()> done);

  boost::asio::awaitable<std::string> call(std::string name, std::string payload, std::chrono::milliseconds timeout);

  // A subject one reply may be sent to (a job's Loopfleet-Reply), and the id to wait for it by.
  std::string reserve_reply(std::uint64_t& id);
  // Waits for the result of job `name` sent to reply `id`; fails with timeout after `timeout`.
  boost::asio::awaitable<std::string> wait_result(std::uint64_t id, std::string name,
                                                  std::chrono::milliseconds timeout);

 private:
  struct pending_reply {
    std::string name;  // of the call or job, for error messages
    std::optional<boost::asio::steady_timer> timer;
    detail::one_shot<std::exception_ptr, std::string> done;
    void complete(std::exception_ptr e, std::string out) {
      if (!done.complete(e, std::move(out))) return;
      if (timer) timer->cancel();
    }
  };

  static void on_call(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void*);
  void answer(const std::string& name, natsMsg* msg);
  boost::asio::awaitable<void> answer_later(const call_coroutine& handler, natsMsg* msg);
  void send_answer(natsMsg* msg, const std::string& out, const std::string& error);
  void check_drained();
  void deliver_reply(natsMsg* msg);
  // Waits on the inbox for reply `id`, failing with `late` after `timeout`.
  void expect_reply(const std::shared_ptr<pending_reply>& p, std::uint64_t id, std::chrono::milliseconds timeout,
                    std::string late);

  boost::asio::io_context& loop_;
  natsConnection* nc_;
  std::string inbox_;
  natsSubscription* inbox_sub_ = nullptr;
  std::vector<natsSubscription*> subs_;
  std::map<std::uint64_t, std::shared_ptr<pending_reply>> pending_;
  std::map<std::uint64_t, std::string> early_results_;  // results that beat their waiter
  std::uint64_t next_id_ = 0;
  int coroutines_running_ = 0;
  std::function<void()> drained_;
};

}  // namespace loopfleet::cluster
