// Calls and jobs for workers (include/loopfleet/cluster.hpp) on nats.c.
//
// Threads: nats.c delivers subscription callbacks on its own threads; each one only posts to
// the worker's loop. Blocking calls (JetStream publish, fetch) run on helper threads: one for
// publishing, one per job name for fetching. Handlers, replies and acknowledgements happen on
// the loop. A message the loop owns is destroyed there.
#include <loopfleet/cluster.hpp>
#include <loopfleet/runtime.hpp>

#include "cluster/node.hpp"
#include "cluster/sweeper.hpp"
#include "runtime/log.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nats/nats.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

namespace loopfleet::cluster {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr auto ack_wait = job_ack_wait;  // sweeper.hpp: the stranded-job sweeper reckons with it too
constexpr auto in_progress_every = 1s;

struct job_def {
  job_handler handler;
  int concurrency;
};

struct registry {
  std::map<std::string, call_handler> calls;
  std::map<std::string, job_def> jobs;
};

registry& reg() {
  static registry r;
  return r;
}

std::string header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, key, &value) == NATS_OK && value ? value : "";
}

struct pending_call {
  std::string name;  // of the call or job, for error messages
  std::optional<asio::any_completion_handler<void(std::exception_ptr, std::string)>> handler;
  std::optional<asio::steady_timer> timer;
  bool done = false;
  void complete(std::exception_ptr e, std::string out) {
    if (done) return;
    done = true;
    if (timer) timer->cancel();
    auto h = std::move(*handler);
    std::move(h)(e, std::move(out));
  }
};

// A thread that runs blocking nats.c calls one after another.
class blocking_thread {
 public:
  blocking_thread() : thread_([this] { run(); }) {}
  ~blocking_thread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    ready_.notify_one();
    thread_.join();
  }
  void post(std::function<void()> work) {
    {
      std::lock_guard lock(mutex_);
      work_.push_back(std::move(work));
    }
    ready_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> w;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stop_ || !work_.empty(); });
        if (stop_ && work_.empty()) return;
        w = std::move(work_.front());
        work_.pop_front();
      }
      w();
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> work_;
  bool stop_ = false;
  std::thread thread_;
};

class client;
// The worker's client, or null before it connects and once its loop is going away. Callbacks
// from nats.c's threads look it up under the mutex, so none reaches a destroyed loop.
client* the_client = nullptr;
std::mutex the_client_mutex;

// Runs `f` on the client's loop if the client is still there; from any thread.
template <class F>
bool post_to_client(F f);

class client {
 public:
  client(asio::io_context& loop, const std::string& url) : loop_(loop) {
    natsOptions* opts = nullptr;
    natsOptions_Create(&opts);
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetMaxReconnect(opts, -1);
    back_off_reconnects(opts);
    // With a connected-callback, connect returns at once and keeps trying in the background;
    // without one it would block the loop until NATS answers.
    natsOptions_SetRetryOnFailedConnect(
        opts, true, [](natsConnection*, void*) { log::info("cluster: connected to NATS"); }, nullptr);
    // Replies and acks go out at once instead of waiting for nats.c's flusher thread (which
    // added about a millisecond to every call).
    natsOptions_SetSendAsap(opts, true);
    natsStatus s = natsConnection_Connect(&nc_, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
      log::error("cluster: cannot connect to " + url + ": " + natsStatus_GetText(s));
      nc_ = nullptr;
      return;
    }
    natsConnection_JetStream(&js_, nc_, nullptr);
    std::random_device rd;
    inbox_ = "_INBOX.lf" + std::to_string(rd()) + std::to_string(rd());
  }

  // Subscriptions and fetchers begin once the client is reachable from nats.c's threads.
  void start() {
    natsConnection_Subscribe(&inbox_sub_, nc_, (inbox_ + ".*").c_str(), on_reply, this);
    for (auto& [name, handler] : reg().calls) {
      natsSubscription* sub = nullptr;
      natsConnection_QueueSubscribe(&sub, nc_, ("loopfleet.call." + name).c_str(), "loopfleet", on_call,
                                    const_cast<std::string*>(&name));
      subs_.push_back(sub);
    }
    for (auto& [name, def] : reg().jobs) fetchers_.emplace_back([this, &name, &def] { fetch_loop(name, def); });
  }

  ~client() {
    stop_ = true;
    slot_freed_.notify_all();
    for (auto& t : fetchers_) t.join();
    publisher_.reset();
    for (auto* s : subs_) natsSubscription_Destroy(s);
    for (auto* s : pull_subs_) natsSubscription_Destroy(s);
    if (inbox_sub_) natsSubscription_Destroy(inbox_sub_);
    if (js_) jsCtx_Destroy(js_);
    if (nc_) natsConnection_Destroy(nc_);
  }

  bool connected() const { return nc_ != nullptr; }

  // Drain: fetch no more jobs; `done` once the jobs in flight have finished and been acked.
  void drain(std::function<void()> done) {
    stop_ = true;
    slot_freed_.notify_all();
    drained_ = std::move(done);
    check_drained();
  }
  void check_drained() {
    if (!drained_) return;
    {
      std::lock_guard lock(slots_mutex_);
      for (auto& [name, n] : in_flight_)
        if (n > 0) return;
    }
    natsConnection_FlushTimeout(nc_, 2000);  // acks sent before the drain, too, reach the server
    log::info("cluster: jobs in flight finished; leaving");
    asio::post(loop_, std::exchange(drained_, nullptr));
  }

  asio::io_context& loop_;

  // --- calls ---
  static void on_call(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* name = static_cast<std::string*>(closure);
    if (!post_to_client([msg, name](client& c) { c.answer(*name, msg); })) natsMsg_Destroy(msg);
  }

  void answer(const std::string& name, natsMsg* msg) {
    const char* reply = natsMsg_GetReply(msg);
    std::string out, error;
    try {
      out = reg().calls.at(name)(std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (reply) {
      natsMsg* r = nullptr;
      natsMsg_Create(&r, reply, nullptr, out.data(), static_cast<int>(out.size()));
      if (!error.empty()) natsMsgHeader_Set(r, "Loopfleet-Error", error.c_str());
      natsConnection_PublishMsg(nc_, r);
      natsMsg_Destroy(r);
    }
    natsMsg_Destroy(msg);
  }

  static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void*) {
    if (!post_to_client([msg](client& c) { c.deliver_reply(msg); })) natsMsg_Destroy(msg);
  }

  void deliver_reply(natsMsg* msg) {
    std::string_view subject = natsMsg_GetSubject(msg);
    std::uint64_t id = std::strtoull(subject.substr(subject.rfind('.') + 1).data(), nullptr, 10);
    auto it = pending_.find(id);
    if (it == pending_.end() && id > 0 && id <= next_id_ && !natsMsg_IsNoResponders(msg))
      early_results_[id] = std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));  // awaited soon
    if (it != pending_.end()) {
      auto p = it->second;
      pending_.erase(it);
      std::string error = header(msg, "Loopfleet-Error");
      if (natsMsg_IsNoResponders(msg))
        p->complete(std::make_exception_ptr(cluster_error(cluster_error::reason::no_responders,
                                                          "no worker serves call '" + p->name + "'")),
                    {});
      else if (!error.empty())
        p->complete(std::make_exception_ptr(cluster_error(cluster_error::reason::handler_failed, error)), {});
      else
        p->complete(nullptr, std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
    }
    natsMsg_Destroy(msg);
  }

  // Waits on the inbox for reply `id`, failing with `late` after `timeout`.
  void expect_reply(const std::shared_ptr<pending_call>& p, std::uint64_t id, std::chrono::milliseconds timeout,
                    std::string late) {
    pending_[id] = p;
    p->timer.emplace(loop_, timeout);
    p->timer->async_wait([this, p, id, late = std::move(late)](boost::system::error_code ec) {
      if (ec) return;
      pending_.erase(id);
      p->complete(std::make_exception_ptr(cluster_error(cluster_error::reason::timeout, late)), {});
    });
  }

  asio::awaitable<std::string> start_call(std::string name, std::string payload, std::chrono::milliseconds timeout) {
    auto p = std::make_shared<pending_call>();
    std::uint64_t id = ++next_id_;
    p->name = name;
    std::string reply = inbox_ + "." + std::to_string(id);
    std::string subject = "loopfleet.call." + name;
    auto initiation = [this, p, id, reply, subject, payload, timeout, name](auto handler) {
      p->handler.emplace(std::move(handler));
      expect_reply(p, id, timeout, "call '" + name + "' got no reply within " + std::to_string(timeout.count()) + " ms");
      natsConnection_PublishRequest(nc_, subject.c_str(), reply.c_str(), payload.data(), static_cast<int>(payload.size()));
    };
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, std::string)>(
        std::move(initiation), asio::use_awaitable);
  }

  // --- jobs: submit and wait for the result, on the calls' inbox ---
  asio::awaitable<std::string> start_wait_result(std::uint64_t id, std::string name, std::chrono::milliseconds timeout) {
    auto p = std::make_shared<pending_call>();
    p->name = name;
    auto initiation = [this, p, id, name, timeout](auto handler) {
      p->handler.emplace(std::move(handler));
      if (auto early = early_results_.find(id); early != early_results_.end()) {  // it was fast
        std::string out = std::move(early->second);
        early_results_.erase(early);
        asio::post(loop_, [p, out] { p->complete(nullptr, out); });
        return;
      }
      expect_reply(p, id, timeout, "job '" + name + "' gave no result within " + std::to_string(timeout.count()) + " ms");
    };
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, std::string)>(
        std::move(initiation), asio::use_awaitable);
  }
  std::string reserve_reply(std::uint64_t& id) {
    id = ++next_id_;
    return inbox_ + "." + std::to_string(id);
  }

  // --- jobs: store (submit, dead letters) ---
  // One JetStream publish, made on the publisher thread; completes on the loop.
  struct outgoing {
    std::string subject, payload, msg_id;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  struct stored {
    std::uint64_t seq = 0;
    std::optional<publish_failure> failure;
  };
  asio::awaitable<stored> publish_once(std::shared_ptr<const outgoing> out) {
    auto initiation = [this, out](auto handler) {
      auto shared = std::make_shared<std::optional<asio::any_completion_handler<void(stored)>>>();
      shared->emplace(std::move(handler));
      publisher_->post([this, shared, out] {
        natsMsg* m = nullptr;
        natsMsg_Create(&m, out->subject.c_str(), nullptr, out->payload.data(), static_cast<int>(out->payload.size()));
        for (const auto& [k, v] : out->headers) natsMsgHeader_Set(m, k.c_str(), v.c_str());
        jsPubOptions po;
        jsPubOptions_Init(&po);
        if (!out->msg_id.empty()) po.MsgId = out->msg_id.c_str();
        po.MaxWait = 5000;
        jsPubAck* ack = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        stored r;
        if (natsStatus s = js_PublishMsg(&ack, js_, m, &po, &jerr); s != NATS_OK) {
          natsStatus last = NATS_OK;
          const char* says = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
          r.failure = describe_publish_failure(s, jerr, says ? says : "");
        }
        if (ack) r.seq = ack->Sequence;
        if (ack) jsPubAck_Destroy(ack);
        natsMsg_Destroy(m);
        post_to_client([shared, r](client&) { std::move(**shared)(r); });
      });
    };
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(stored)>(std::move(initiation),
                                                                              asio::use_awaitable);
  }

  // Publishes until JetStream stores it, retrying what can pass later (storage full, leader
  // election, reconnecting) with backoff for up to `patience`. Returns the stream sequence, or
  // the failure that ended it.
  asio::awaitable<stored> store(std::shared_ptr<const outgoing> out, std::chrono::milliseconds patience) {
    auto give_up = std::chrono::steady_clock::now() + patience;
    asio::steady_timer pause(loop_);
    for (int attempt = 0;; ++attempt) {
      stored r = co_await publish_once(out);
      if (!r.failure) co_return r;
      auto delay = retry_delay(attempt);
      if (!r.failure->transient || std::chrono::steady_clock::now() + delay > give_up) {
        if (attempt > 0) r.failure->why += "; gave up after " + std::to_string(attempt + 1) + " tries";
        co_return r;
      }
      if (auto now = std::chrono::steady_clock::now(); now - last_retry_warning_ > 5s) {
        last_retry_warning_ = now;
        log::warn("cluster: " + out->subject + " not stored yet: " + r.failure->why + "; retrying with backoff");
      }
      pause.expires_after(delay);
      co_await pause.async_wait(asio::use_awaitable);
    }
  }

  // (No defaulted `reply_to`: GCC 12 mis-destroys a coroutine's defaulted class argument.)
  asio::awaitable<std::uint64_t> start_submit(std::string name, std::string payload, job_options o,
                                              std::string reply_to) {
    auto out = std::make_shared<outgoing>();
    out->subject = "loopfleet.job." + name;
    out->payload = std::move(payload);
    out->msg_id = o.idempotency_key;
    out->headers = {{"Loopfleet-Max-Attempts", std::to_string(o.max_attempts)},
                    {"Loopfleet-Time-Limit-Ms", std::to_string(o.time_limit.count())}};
    if (!reply_to.empty()) out->headers.emplace_back("Loopfleet-Reply", reply_to);
    stored r = co_await store(out, o.retry_for);
    if (r.failure)
      throw cluster_error(cluster_error::reason::publish_failed, "job '" + name + "' not stored: " + r.failure->why);
    co_return r.seq;
  }

  // --- jobs: fetch and run ---
  void fetch_loop(const std::string& name, const job_def& def) {
    natsSubscription* sub = nullptr;
    std::string subject = "loopfleet.job." + name;
    std::string durable = "loopfleet_" + name;
    bool warned = false;
    while (!stop_) {
      if (!sub) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = jobs_stream;
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(ack_wait).count();
        so.Config.MaxDeliver = -1;  // attempts are counted per job, from its header
        so.Config.MaxAckPending = 20000;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsStatus s = js_PullSubscribe(&sub, js_, subject.c_str(), durable.c_str(), nullptr, &so, &jerr);
        if (s != NATS_OK) {
          if (!warned) log::warn("cluster: cannot consume jobs '" + name + "' yet: " + natsStatus_GetText(s) + "; retrying");
          warned = true;
          sub = nullptr;
          std::this_thread::sleep_for(500ms);
          continue;
        }
      }
      int room;
      {
        std::unique_lock lock(slots_mutex_);
        slot_freed_.wait_for(lock, 200ms, [&] { return stop_ || in_flight_[name] < def.concurrency; });
        room = def.concurrency - in_flight_[name];
      }
      if (stop_ || room <= 0) continue;
      natsMsgList list{};
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = natsSubscription_Fetch(&list, sub, std::min(room, 256), 1000, &jerr);
      if (s != NATS_OK && s != NATS_TIMEOUT) std::this_thread::sleep_for(100ms);
      if (stop_) {  // draining: hand what just arrived back for another worker, at once
        for (int i = 0; i < list.Count; ++i) natsMsg_Nak(list.Msgs[i], nullptr);
        natsMsgList_Destroy(&list);
        break;
      }
      for (int i = 0; i < list.Count; ++i) {
        natsMsg* msg = list.Msgs[i];
        list.Msgs[i] = nullptr;
        {
          std::lock_guard lock(slots_mutex_);
          ++in_flight_[name];
        }
        if (!post_to_client([msg, &name, &def](client& c) {
              asio::co_spawn(c.loop_, c.run_job(name, def, msg), asio::detached);
            }))
          natsMsg_Destroy(msg);
      }
      natsMsgList_Destroy(&list);
    }
    // Not destroyed here: the jobs in flight acknowledge through it (natsMsg_Ack and
    // InProgress find their connection through the message's subscription).
    if (sub) {
      std::lock_guard lock(slots_mutex_);
      pull_subs_.push_back(sub);
    }
  }

  // The handler, with its exception turned into a value: an exception crossing the `||`
  // machinery left the job hanging. Empty means success.
  static asio::awaitable<std::string> guarded(const job_def& def, job& j) {
    std::string failure;
    try {
      co_await def.handler(j);
    } catch (const std::exception& e) {
      failure = *e.what() ? e.what() : "the handler failed";
    } catch (...) {
      failure = "the handler threw a non-std exception";
    }
    co_return failure;
  }

  static asio::awaitable<void> keep_alive(natsMsg* msg) {
    asio::steady_timer beat(co_await asio::this_coro::executor);
    for (;;) {
      beat.expires_after(in_progress_every);
      co_await beat.async_wait(asio::use_awaitable);
      natsMsg_InProgress(msg, nullptr);
    }
  }

  asio::awaitable<void> run_job(const std::string& name, const job_def& def, natsMsg* msg) {
    job j;
    j.name = name;
    j.payload.assign(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      j.id = meta->Sequence.Stream;
      j.attempt = static_cast<int>(meta->NumDelivered);
      jsMsgMetaData_Destroy(meta);
    }
    int max_attempts = std::max(1, std::atoi(header(msg, "Loopfleet-Max-Attempts").c_str()));
    auto limit = std::chrono::milliseconds(std::atoll(header(msg, "Loopfleet-Time-Limit-Ms").c_str()));
    if (limit.count() <= 0) limit = 30s;
    std::string failure;
    if (j.attempt > max_attempts) {
      failure = "no attempts left (its worker died during the last one)";
    } else {
      // The handler races its deadline; beside them, JetStream hears that the job is alive,
      // so only a dead worker's jobs come back. `||` cancels and awaits the losers, so nothing
      // touches the message after this statement.
      using namespace asio::experimental::awaitable_operators;
      asio::steady_timer deadline(loop_, limit);
      auto outcome = co_await (guarded(def, j) || deadline.async_wait(asio::use_awaitable) || keep_alive(msg));
      if (outcome.index() == 0) failure = std::get<0>(outcome);
      else failure = "ran past its time limit of " + std::to_string(limit.count()) + " ms";
    }
    if (failure.empty()) {
      // While draining, wait for JetStream to confirm each ack: the process is about to exit,
      // and an ack lost with it would run the job again elsewhere.
      if (stop_) {
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsMsg_AckSync(msg, nullptr, &jerr);
      } else {
        natsMsg_Ack(msg, nullptr);
      }
      if (std::string reply = header(msg, "Loopfleet-Reply"); !reply.empty())
        natsConnection_Publish(nc_, reply.c_str(), j.result.data(), static_cast<int>(j.result.size()));
    } else if (j.attempt >= max_attempts) {
      // The job ends only once its dead letter is stored; if JetStream cannot take it now, the
      // job comes back later and tries again (the message id keeps a second copy out).
      auto dead = std::make_shared<outgoing>();
      dead->subject = "loopfleet.dead." + name;
      dead->payload = j.payload;
      dead->msg_id = "loopfleet-dead-" + std::to_string(j.id);
      dead->headers = {{"Loopfleet-Error", failure},
                       {"Loopfleet-Attempts", std::to_string(j.attempt)},
                       {"Loopfleet-Job-Id", std::to_string(j.id)}};
      std::string job = "cluster: job " + name + " #" + std::to_string(j.id);
      // JetStream keeps hearing that the job is alive while the dead letter is stored (which
      // can take longer than the ack wait), so it is not delivered again meanwhile.
      using namespace asio::experimental::awaitable_operators;
      auto outcome = co_await (store(dead, 0ms) || keep_alive(msg));
      stored r = std::get<0>(std::move(outcome));
      if (r.failure) {
        natsMsg_NakWithDelay(msg, std::chrono::nanoseconds(5s).count(), nullptr);
        log::warn(job + " failed its last attempt (" + failure + ") but its dead letter was not stored (" +
                  r.failure->why + "); it will come back");
      } else {
        natsMsg_Term(msg, nullptr);
        log::warn(job + " failed attempt " + std::to_string(j.attempt) + " of " + std::to_string(max_attempts) + " (" +
                  failure + "); moved to loopfleet.dead." + name);
      }
    } else {
      natsMsg_Nak(msg, nullptr);
      log::warn("cluster: job " + name + " #" + std::to_string(j.id) + " failed attempt " + std::to_string(j.attempt) +
                " of " + std::to_string(max_attempts) + ": " + failure + "; it will run again");
    }
    natsMsg_Destroy(msg);
    {
      std::lock_guard lock(slots_mutex_);
      --in_flight_[name];
    }
    slot_freed_.notify_all();
    check_drained();
  }

 private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::string inbox_;
  natsSubscription* inbox_sub_ = nullptr;
  std::vector<natsSubscription*> subs_;
  std::vector<natsSubscription*> pull_subs_;  // destroyed last, after every job is done
  std::map<std::uint64_t, std::shared_ptr<pending_call>> pending_;
  std::map<std::uint64_t, std::string> early_results_;  // results that beat their waiter
  std::uint64_t next_id_ = 0;
  std::chrono::steady_clock::time_point last_retry_warning_{};
  std::unique_ptr<blocking_thread> publisher_ = std::make_unique<blocking_thread>();
  std::mutex slots_mutex_;
  std::condition_variable slot_freed_;
  std::map<std::string, int> in_flight_;
  std::atomic<bool> stop_{false};
  std::function<void()> drained_;
  std::vector<std::thread> fetchers_;
};

template <class F>
bool post_to_client(F f) {
  std::lock_guard lock(the_client_mutex);
  if (!the_client) return false;
  client* c = the_client;
  asio::post(c->loop_, [c, f = std::move(f)]() mutable { f(*c); });
  return true;
}

// Owns the client for as long as its loop lives: shut down with the loop (before the loop's
// timers and sockets go), never at static destruction after it.
class client_service : public asio::execution_context::service {
 public:
  using key_type = client_service;
  static inline asio::execution_context::id id;
  explicit client_service(asio::execution_context& ctx) : service(ctx) {}
  void shutdown() override {
    {
      std::lock_guard lock(the_client_mutex);
      the_client = nullptr;
    }
    owned.reset();
  }
  std::unique_ptr<client> owned;
};

void connect_at_start(asio::io_context& loop) {
  const char* url = std::getenv("LOOPFLEET_NATS_URL");
  if (!url || !*url) return;
  auto& svc = asio::use_service<client_service>(loop);
  svc.owned = std::make_unique<client>(loop, url);
  if (!svc.owned->connected()) return;
  {
    std::lock_guard lock(the_client_mutex);
    the_client = svc.owned.get();
  }
  svc.owned->start();
  log::info(std::string("cluster: connected to ") + url + " as node " + node_name());
}

// Linking the cluster API is what puts a worker in the cluster: connect at every worker start
// (when LOOPFLEET_NATS_URL says where), whether it serves, runs jobs, or only calls and submits.
const bool hooked = [] {
  at_loop_start(connect_at_start);
  at_drain([](std::function<void()> done) {
    if (the_client) the_client->drain(std::move(done));
    else done();
  });
  return true;
}();

client& connected_client() {
  std::lock_guard lock(the_client_mutex);
  if (!the_client)
    throw cluster_error(cluster_error::reason::not_configured,
                        "this worker is not in a cluster: run it under loopfleet run --cluster (LOOPFLEET_NATS_URL)");
  return *the_client;
}

}  // namespace

void serve(std::string name, call_handler handler) {
  reg().calls[std::move(name)] = std::move(handler);
}

void handle_jobs(std::string name, job_handler handler, int concurrency) {
  reg().jobs[std::move(name)] = {std::move(handler), std::max(1, concurrency)};
}

asio::awaitable<std::string> call(std::string name, std::string payload, std::chrono::milliseconds timeout) {
  std::string out = co_await connected_client().start_call(std::move(name), std::move(payload), timeout);
  co_return out;
}

asio::awaitable<std::uint64_t> submit(std::string name, std::string payload, job_options options) {
  std::string no_reply;  // a named local: GCC 12 mishandles class temporaries in co_await expressions
  std::uint64_t id = co_await connected_client().start_submit(std::move(name), std::move(payload), options, std::move(no_reply));
  co_return id;
}

asio::awaitable<std::string> submit_and_wait(std::string name, std::string payload, job_options options,
                                             std::chrono::milliseconds timeout) {
  client& c = connected_client();
  std::uint64_t reply_id = 0;
  std::string reply = c.reserve_reply(reply_id);
  co_await c.start_submit(name, std::move(payload), options, reply);
  std::string out = co_await c.start_wait_result(reply_id, std::move(name), timeout);
  co_return out;
}

const std::string& node_name() {
  static const std::string name = [] {
    const char* n = std::getenv("LOOPFLEET_NODE");
    return std::string(n ? n : "");
  }();
  return name;
}

}  // namespace loopfleet::cluster
