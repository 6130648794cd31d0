// Fetching and running jobs, and the drain that waits for them (job_runner.hpp).
#include "cluster/job_runner.hpp"

#include "cluster/client.hpp"
#include "cluster/node.hpp"
#include "cluster/sweeper.hpp"
#include "runtime/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdlib>

namespace loopfleet::cluster {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr auto ack_wait = job_ack_wait;  // sweeper.hpp: the stranded-job sweeper reckons with it too
constexpr auto in_progress_every = 1s;
// How long one fetch waits for jobs: also how long a drain may wait for the last one.
constexpr auto fetch_wait = 500ms;

// The handler, with its exception turned into a value: an exception crossing the `||`
// machinery left the job hanging. Empty means success.
asio::awaitable<std::string> guarded(const job_def& def, job& j) {
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

// Races a job (`||`) and is cancelled when the job ends: it ends without throwing, as the
// deadline's wait does, since an exception per job (two, with the deadline) cost more CPU than
// the rest of the runner (_Unwind_Find_FDE in perf). Only that cancellation ends it.
asio::awaitable<void> keep_alive(natsMsg* msg) {
  asio::steady_timer beat(co_await asio::this_coro::executor);
  for (;;) {
    beat.expires_after(in_progress_every);
    auto [ec] = co_await beat.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    natsMsg_InProgress(msg, nullptr);
  }
}

// A task that throws is handed back for a second rather than lost: with `||` waiting for one
// success, a throwing task would leave keep_alive telling JetStream, for ever, that it runs.
asio::awaitable<task_verdict> guarded_task(const job_def& def, natsMsg* msg) {
  try {
    co_return co_await def.task(msg);
  } catch (const std::exception& e) {
    log::warn(std::string("cluster: a task of ") + natsMsg_GetSubject(msg) + " failed (" + e.what() +
              "); handed back");
  } catch (...) {
    log::warn(std::string("cluster: a task of ") + natsMsg_GetSubject(msg) + " failed; handed back");
  }
  co_return task_verdict{task_verdict::what::later, std::chrono::milliseconds(1000)};
}

}  // namespace

job_def job_definition(const std::string& name, job_handler handler, int concurrency) {
  return {std::move(handler), {}, std::max(1, concurrency), jobs_stream, "loopfleet.job." + name, "loopfleet_" + name};
}

job_runner::job_runner(asio::io_context& loop, const nats_connection& connection, job_store& store)
    : loop_(loop), nc_(connection.nc()), js_(connection.js()), store_(store) {}

job_runner::~job_runner() {
  stop_ = true;
  slot_freed_.notify_all();
  for (auto& t : fetchers_) t.join();
  for (auto* s : pull_subs_) natsSubscription_Destroy(s);
}

void job_runner::start(const std::map<std::string, job_def>& handled) {
  fetchers_running_ += static_cast<int>(handled.size());
  for (auto& [name, def] : handled) fetchers_.emplace_back([this, &name, &def] { fetch_loop(name, def); });
}

void job_runner::drain(std::function<void()> done) {
  stop_ = true;
  slot_freed_.notify_all();
  drained_ = std::move(done);
  check_drained();
}

void job_runner::check_drained() {
  if (!drained_) return;
  {
    std::lock_guard lock(slots_mutex_);
    if (fetchers_running_ > 0) return;  // a last fetch may still bring jobs to run
    for (auto& [name, n] : in_flight_)
      if (n > 0) return;
  }
  natsConnection_FlushTimeout(nc_, 2000);  // acks sent before the drain, too, reach the server
  log::info("cluster: jobs in flight finished; leaving");
  asio::post(loop_, std::exchange(drained_, nullptr));
}

void job_runner::fetch_loop(const std::string& name, const job_def& def) {
  natsSubscription* sub = nullptr;
  const std::string& subject = def.subject;
  const std::string& durable = def.durable;
  bool warned = false;
  while (!stop_) {
    if (!sub) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = def.stream.c_str();
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
      log::info("cluster: consuming jobs '" + name + "'");
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
    // What arrives during a drain is run here, not handed back: JetStream counts every
    // delivery as an attempt, and a job handed back by each draining worker's last fetch could
    // reach its dead letter without ever running. The drain waits for this fetch to return
    // (fetch_wait at most) and for its jobs.
    natsStatus s = natsSubscription_Fetch(&list, sub, std::min(room, 256), static_cast<int>(fetch_wait.count()), &jerr);
    if (s != NATS_OK && s != NATS_TIMEOUT && !stop_) std::this_thread::sleep_for(100ms);
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = list.Msgs[i];
      list.Msgs[i] = nullptr;
      {
        std::lock_guard lock(slots_mutex_);
        ++in_flight_[name];
      }
      if (!post_to_client([msg, &name, &def](client& c) {
            asio::co_spawn(c.loop, c.runner.run(name, def, msg), asio::detached);
          }))
        natsMsg_Destroy(msg);
    }
    natsMsgList_Destroy(&list);
  }
  // Not destroyed here: the jobs in flight acknowledge through it (natsMsg_Ack and
  // InProgress find their connection through the message's subscription).
  {
    std::lock_guard lock(slots_mutex_);
    if (sub) pull_subs_.push_back(sub);
    --fetchers_running_;
  }
  post_to_client([](client& c) { c.runner.check_drained(); });
}

asio::awaitable<void> job_runner::run(const std::string& name, const job_def& def, natsMsg* msg) {
  if (def.task) {
    co_await run_task(def, msg);
  } else {
    co_await run_job(name, def, msg);
  }
  natsMsg_Destroy(msg);
  {
    std::lock_guard lock(slots_mutex_);
    --in_flight_[name];
  }
  slot_freed_.notify_all();
  check_drained();
}

asio::awaitable<void> job_runner::run_task(const job_def& def, natsMsg* msg) {
  using namespace asio::experimental::awaitable_operators;
  auto outcome = co_await (guarded_task(def, msg) || keep_alive(msg));
  task_verdict v = std::get<0>(outcome);
  switch (v.w) {
    case task_verdict::what::ack:
      if (stop_) {
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsMsg_AckSync(msg, nullptr, &jerr);
      } else {
        natsMsg_Ack(msg, nullptr);
      }
      break;
    case task_verdict::what::later:
      natsMsg_NakWithDelay(msg, v.delay.count(), nullptr);  // nats.c takes milliseconds
      break;
    case task_verdict::what::abandon: break;
    case task_verdict::what::term: natsMsg_Term(msg, nullptr); break;
  }
}

asio::awaitable<void> job_runner::run_job(const std::string& name, const job_def& def, natsMsg* msg) {
  job j;
  j.name = name;
  j.payload.assign(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  j.key = header(msg, "Loopfleet-Key");  // a job queued again by the sweeper keeps its key there
  if (j.key.empty()) j.key = header(msg, "Nats-Msg-Id");
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
    auto outcome =
        co_await (guarded(def, j) || deadline.async_wait(asio::as_tuple(asio::use_awaitable)) || keep_alive(msg));
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
    auto dead = std::make_shared<job_store::outgoing>();
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
    auto outcome = co_await (store_.store(dead, 0ms) || keep_alive(msg));
    job_store::stored r = std::get<0>(std::move(outcome));
    if (r.failure) {
      natsMsg_NakWithDelay(msg, 5000, nullptr);  // nats.c takes milliseconds
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
}

}  // namespace loopfleet::cluster
