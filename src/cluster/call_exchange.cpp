// Calls both ways, and the inbox replies come back on (call_exchange.hpp).
#include "cluster/call_exchange.hpp"

#include "cluster/client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include <cstdlib>
#include <random>

namespace loopfleet::cluster {

namespace asio = boost::asio;

call_exchange::call_exchange(asio::io_context& loop, natsConnection* nc) : loop_(loop), nc_(nc) {
  std::random_device rd;
  inbox_ = "_INBOX.lf" + std::to_string(rd()) + std::to_string(rd());
}

call_exchange::~call_exchange() {
  for (auto* s : subs_) natsSubscription_Destroy(s);
  if (inbox_sub_) natsSubscription_Destroy(inbox_sub_);
}

void call_exchange::start(const std::map<std::string, call_def>& served) {
  natsConnection_Subscribe(&inbox_sub_, nc_, (inbox_ + ".*").c_str(), on_reply, nullptr);
  for (auto& [name, handler] : served) {
    natsSubscription* sub = nullptr;
    natsConnection_QueueSubscribe(&sub, nc_, ("loopfleet.call." + name).c_str(), "loopfleet", on_call,
                                  const_cast<std::string*>(&name));
    subs_.push_back(sub);
  }
}

void call_exchange::on_call(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* name = static_cast<std::string*>(closure);
  if (!post_to_client([msg, name](client& c) { c.calls.answer(*name, msg); })) natsMsg_Destroy(msg);
}

void call_exchange::answer(const std::string& name, natsMsg* msg) {
  const call_def& def = handlers().calls.at(name);
  if (def.coroutine) {
    ++coroutines_running_;
    asio::co_spawn(loop_, answer_later(def.coroutine, msg), asio::detached);
    return;
  }
  std::string out, error;
  try {
    out = def.plain(std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
  } catch (const std::exception& e) {
    error = e.what();
  }
  send_answer(msg, out, error);
}

asio::awaitable<void> call_exchange::answer_later(const call_coroutine& handler, natsMsg* msg) {
  std::string out, error;
  try {
    out = co_await handler(std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
  } catch (const std::exception& e) {
    error = *e.what() ? e.what() : "the handler failed";
  } catch (...) {
    error = "the handler threw a non-std exception";
  }
  send_answer(msg, out, error);
  --coroutines_running_;
  check_drained();
}

void call_exchange::send_answer(natsMsg* msg, const std::string& out, const std::string& error) {
  if (const char* reply = natsMsg_GetReply(msg)) {
    natsMsg* r = nullptr;
    natsMsg_Create(&r, reply, nullptr, out.data(), static_cast<int>(out.size()));
    if (!error.empty()) natsMsgHeader_Set(r, "Loopfleet-Error", error.c_str());
    natsConnection_PublishMsg(nc_, r);
    natsMsg_Destroy(r);
  }
  natsMsg_Destroy(msg);
}

void call_exchange::drain(std::function<void()> done) {
  // Drained, not unsubscribed: the calls nats.c has already received for this worker are
  // still handed to it, and answered, while NATS sends new ones to the other workers.
  for (auto* s : subs_) natsSubscription_Drain(s);
  drained_ = std::move(done);
  check_drained();
}

void call_exchange::check_drained() {
  if (drained_ && coroutines_running_ == 0) asio::post(loop_, std::exchange(drained_, nullptr));
}

void call_exchange::on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void*) {
  if (!post_to_client([msg](client& c) { c.calls.deliver_reply(msg); })) natsMsg_Destroy(msg);
}

void call_exchange::deliver_reply(natsMsg* msg) {
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

void call_exchange::expect_reply(const std::shared_ptr<pending_reply>& p, std::uint64_t id,
                                 std::chrono::milliseconds timeout, std::string late) {
  pending_[id] = p;
  p->timer.emplace(loop_, timeout);
  p->timer->async_wait([this, p, id, late = std::move(late)](boost::system::error_code ec) {
    if (ec) return;
    pending_.erase(id);
    p->complete(std::make_exception_ptr(cluster_error(cluster_error::reason::timeout, late)), {});
  });
}

asio::awaitable<std::string> call_exchange::call(std::string name, std::string payload,
                                                 std::chrono::milliseconds timeout) {
  auto p = std::make_shared<pending_reply>();
  std::uint64_t id = ++next_id_;
  p->name = name;
  std::string reply = inbox_ + "." + std::to_string(id);
  std::string subject = "loopfleet.call." + name;
  auto begin = [this, id, reply, subject, payload, timeout, name](const std::shared_ptr<pending_reply>& p) {
    expect_reply(p, id, timeout, "call '" + name + "' got no reply within " + std::to_string(timeout.count()) + " ms");
    natsConnection_PublishRequest(nc_, subject.c_str(), reply.c_str(), payload.data(),
                                  static_cast<int>(payload.size()));
  };
  return detail::async_one_shot(std::move(p), std::move(begin));
}

std::string call_exchange::reserve_reply(std::uint64_t& id) {
  id = ++next_id_;
  return inbox_ + "." + std::to_string(id);
}

asio::awaitable<std::string> call_exchange::wait_result(std::uint64_t id, std::string name,
                                                        std::chrono::milliseconds timeout) {
  auto p = std::make_shared<pending_reply>();
  p->name = name;
  return detail::async_one_shot(std::move(p), [this, id, name, timeout](const std::shared_ptr<pending_reply>& p) {
    if (auto early = early_results_.find(id); early != early_results_.end()) {  // it was fast
      std::string out = std::move(early->second);
      early_results_.erase(early);
      p->complete(nullptr, std::move(out));
      return;
    }
    expect_reply(p, id, timeout, "job '" + name + "' gave no result within " + std::to_string(timeout.count()) + " ms");
  });
}

}  // namespace loopfleet::cluster
