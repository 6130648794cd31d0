// Jobs and dead letters into JetStream, retried (job_store.hpp).
#include "cluster/job_store.hpp"

#include "runtime/log.hpp"
#include "runtime/one_shot.hpp"

#include <algorithm>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace loopfleet::cluster {

namespace asio = boost::asio;
using namespace std::chrono_literals;

blocking_pool::blocking_pool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { run(); });
}

blocking_pool::~blocking_pool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
}

void blocking_pool::post(std::function<void()> work) {
  {
    std::lock_guard lock(mutex_);
    work_.push_back(std::move(work));
  }
  ready_.notify_one();
}

void blocking_pool::run() {
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

job_store::job_store(asio::io_context& loop, jsCtx* js) : loop_(loop), js_(js) {}

namespace {

struct publish_op {
  std::shared_ptr<const job_store::outgoing> out;
  detail::one_shot<job_store::stored> done;
};

job_store::stored publish_blocking(jsCtx* js, const job_store::outgoing& out) {
  natsMsg* m = nullptr;
  natsMsg_Create(&m, out.subject.c_str(), nullptr, out.payload.data(), static_cast<int>(out.payload.size()));
  for (const auto& [k, v] : out.headers) natsMsgHeader_Set(m, k.c_str(), v.c_str());
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (!out.msg_id.empty()) po.MsgId = out.msg_id.c_str();
  po.MaxWait = 5000;
  jsPubAck* ack = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  job_store::stored r;
  if (natsStatus s = js_PublishMsg(&ack, js, m, &po, &jerr); s != NATS_OK) {
    natsStatus last = NATS_OK;
    const char* says = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
    r.failure = describe_publish_failure(s, jerr, says ? says : "");
  }
  if (ack) r.seq = ack->Sequence;
  if (ack) jsPubAck_Destroy(ack);
  natsMsg_Destroy(m);
  return r;
}

}  // namespace

asio::awaitable<job_store::stored> job_store::publish_once(std::shared_ptr<const outgoing> out) {
  auto op = std::make_shared<publish_op>();
  op->out = std::move(out);
  return detail::async_one_shot(std::move(op), [this](const std::shared_ptr<publish_op>& op) {
    publisher_->post([js = js_, op] { op->done.complete(publish_blocking(js, *op->out)); });
  });
}

asio::awaitable<job_store::stored> job_store::store(std::shared_ptr<const outgoing> out,
                                                    std::chrono::milliseconds patience) {
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

asio::awaitable<std::uint64_t> job_store::submit(std::string name, std::string payload, job_options o,
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

}  // namespace loopfleet::cluster
