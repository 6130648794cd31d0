// What the `loopfleet cluster` and `loopfleet job` commands do, against NATS directly.
#include "cluster/admin.hpp"

#include "cluster/nats_connection.hpp"
#include "cluster/node.hpp"
#include "cluster/scheduler.hpp"

#include <boost/json.hpp>
#include <nats/nats.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace loopfleet::cluster {

bool connect_patiently(nats_connection& conn, const std::string& url, std::string& error,
                       std::chrono::milliseconds patience) {
  auto give_up = std::chrono::steady_clock::now() + patience;
  for (int attempt = 0;; ++attempt) {
    natsStatus s = conn.open(url, {.timeout = std::chrono::milliseconds(2000)});
    if (s == NATS_OK) return true;
    error = "cannot reach NATS at " + url + ": " + natsStatus_GetText(s) +
            " (is the node running with --cluster? --nats picks another URL)";
    auto delay = retry_delay(attempt);
    if (std::chrono::steady_clock::now() + delay > give_up) {
      if (attempt) error += "; gave up after " + std::to_string(attempt + 1) + " tries";
      return false;
    }
    if (attempt == 0) std::fprintf(stderr, "loopfleet: %s; retrying with backoff\n", error.c_str());
    std::this_thread::sleep_for(delay);
  }
}

std::string pad(std::string s, std::size_t w, bool left) {
  if (s.size() < w) s = left ? s + std::string(w - s.size(), ' ') : std::string(w - s.size(), ' ') + s;
  return s;
}

namespace {

// One line per stream, bucket and consumer: replicas had and wanted, in sync, quorum.
std::string durability_text(const std::vector<durability>& all) {
  std::string out;
  for (const auto& d : all) out += describe(d) + "\n";
  return out;
}

// A node's workers from its heartbeat: one line each, under a line naming the node and where
// its status page is. Nothing for a node whose heartbeat has no workers (an older version).
std::string workers_text(const boost::json::object& node) {
  const auto* slots = node.if_contains("slots");
  if (!slots || !slots->is_array()) return {};
  auto text = [&](const boost::json::object& o, const char* k) -> std::string {
    const auto* v = o.if_contains(k);
    if (!v || v->is_null()) return "-";
    if (v->is_string()) return std::string(v->as_string());
    if (v->is_double()) {
      char b[32];
      std::snprintf(b, sizeof b, "%.2f", v->as_double());
      return b;
    }
    return boost::json::serialize(*v);
  };
  std::string out = "\nnode " + text(node, "node");
  if (node.contains("admin")) out += " (status page http://" + text(node, "admin") + "/)";
  out += "\n  SLOT  PID      STATE       UPTIME_S    REQUESTS  LAG_P99_MS\n";
  for (const auto& s : slots->as_array()) {
    if (!s.is_object()) continue;
    const auto& o = s.as_object();
    out += "  " + pad(text(o, "slot"), 4, false) + "  " + pad(text(o, "pid"), 8) + " " + pad(text(o, "state"), 10) + " " +
           pad(text(o, "uptime_s"), 9, false) + " " + pad(text(o, "requests_total"), 11, false) + " " +
           pad(text(o, "lag_p99_ms"), 11, false) + "\n";
  }
  return out;
}

}  // namespace

std::optional<std::string> cluster_status(const std::string& url, double down_after_s, bool as_json, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  kvStore* kv = nullptr;
  if (js_KeyValue(&kv, conn.js(), nodes_bucket) != NATS_OK) {
    error = "no node has announced itself yet (bucket " + std::string(nodes_bucket) + " missing)";
    return std::nullopt;
  }
  boost::json::array nodes = read_nodes(conn.js(), kv, down_after_s);
  kvStore_Destroy(kv);
  auto standing = read_durability(conn.js());
  if (as_json)
    return boost::json::serialize(boost::json::object{{"nodes", nodes}, {"streams", durability_json(standing)}}) + "\n";
  std::string out = "NODE          STATE  AGE_S  WORKERS  READY   LOAD    REQUESTS  NATS\n";
  for (const auto& v : nodes) {
    const auto& o = v.as_object();
    char age[32];
    std::snprintf(age, sizeof age, "%.1f", o.at("age_s").as_double());
    out += pad(std::string(o.at("node").as_string()), 13) + " " + pad(std::string(o.at("state").as_string()), 6) + " " +
           pad(age, 5, false) + " " + pad(std::to_string(o.at("workers").to_number<int>()), 8, false) + " " +
           pad(std::to_string(o.at("ready").to_number<int>()), 6, false) + " " +
           pad(std::to_string(o.at("load").to_number<std::uint64_t>()), 6, false) + " " +
           pad(std::to_string(o.at("requests").to_number<std::uint64_t>()), 11, false) + "  " +
           std::string(o.at("nats").as_string()) + "\n";
  }
  std::string workers;
  for (const auto& v : nodes) workers += workers_text(v.as_object());
  out += workers.empty() ? durability_text(standing) : workers + "\n" + durability_text(standing);
  return out;
}

namespace {

natsMsg* job_message(const std::string& name, const std::string& body, const job_limits& limits) {
  natsMsg* m = nullptr;
  natsMsg_Create(&m, ("loopfleet.job." + name).c_str(), nullptr, body.data(), static_cast<int>(body.size()));
  natsMsgHeader_Set(m, "Loopfleet-Max-Attempts", std::to_string(limits.max_attempts).c_str());
  natsMsgHeader_Set(m, "Loopfleet-Time-Limit-Ms", std::to_string(limits.time_limit.count()).c_str());
  return m;
}

// Jobs JetStream refused while publishing asynchronously, kept to be sent again.
struct refused {
  std::mutex mutex;
  std::vector<natsMsg*> msgs;
  std::optional<publish_failure> failure;  // the first one's
  ~refused() {
    for (auto* m : msgs) natsMsg_Destroy(m);
  }
  static void on_error(jsCtx*, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<refused*>(closure);
    std::lock_guard lock(self->mutex);
    if (!self->failure) self->failure = describe_publish_failure(pae->Err, pae->ErrCode, pae->ErrText ? pae->ErrText : "");
    self->msgs.push_back(pae->Msg);
    pae->Msg = nullptr;  // ours now: nats.c destroys it otherwise
  }
};

// Many jobs without keys: published asynchronously, up to 4096 awaiting their confirmation.
// What JetStream refuses for a reason that passes (storage full, election) is sent again with
// backoff, for as long as each round stores something or `retry_for` has not passed.
std::optional<std::string> submit_many(nats_connection& conn, const std::string& name, const std::string& payload,
                                       int count, std::chrono::milliseconds retry_for, const job_limits& limits,
                                       std::string& error) {
  refused back;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  jo.PublishAsync.StallWait = 30000;  // a leader election can hold confirmations for seconds
  jo.PublishAsync.ErrHandler = refused::on_error;
  jo.PublishAsync.ErrHandlerClosure = &back;
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, conn.nc(), &jo);
  // On every way out, first let the confirmations in flight arrive: the error handler they
  // may call uses `back`, which goes when this function returns.
  auto settle = [](jsCtx* j) {
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 5000;
    js_PublishAsyncComplete(j, &wait);
    jsCtx_Destroy(j);
  };
  std::unique_ptr<jsCtx, decltype(settle)> owned(js, settle);
  struct message_list : std::vector<natsMsg*> {  // destroys what was not handed to nats.c
    ~message_list() {
      for (auto* m : *this) natsMsg_Destroy(m);
    }
  } to_send;
  int next = 0, resent = 0, resent_after_timeout = 0, stalled = 0;  // rounds in a row that stored nothing
  auto last_progress = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    // This round: the jobs refused last round first, then new ones until JetStream refuses some.
    std::size_t sent = 0;
    for (auto*& m : to_send) {
      if (natsStatus s = js_PublishMsgAsync(js, &m, nullptr); s != NATS_OK) {
        error = "jobs not sent: " + std::string(natsStatus_GetText(s));
        return std::nullopt;
      }
      ++sent;
    }
    to_send.clear();
    for (; next < count; ++next, ++sent) {
      if (sent % 256 == 255) {
        std::lock_guard lock(back.mutex);
        if (!back.msgs.empty()) break;
      }
      to_send.push_back(job_message(name, payload + "-" + std::to_string(next), limits));
      if (natsStatus s = js_PublishMsgAsync(js, &to_send.back(), nullptr); s != NATS_OK) {
        error = "job " + std::to_string(next) + " not sent: " + natsStatus_GetText(s);
        return std::nullopt;
      }
      to_send.pop_back();
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 30000;
    js_PublishAsyncComplete(js, &wait);
    natsMsgList unconfirmed{};  // no answer at all: sent again (at least once, like every job)
    js_PublishAsyncGetPendingList(&unconfirmed, js);
    std::optional<publish_failure> failure;
    {
      std::lock_guard lock(back.mutex);
      to_send.swap(back.msgs);
      failure = std::exchange(back.failure, std::nullopt);
    }
    for (int i = 0; i < unconfirmed.Count; ++i) {
      to_send.push_back(unconfirmed.Msgs[i]);
      unconfirmed.Msgs[i] = nullptr;
    }
    if (unconfirmed.Count && !failure)
      failure = describe_publish_failure(NATS_TIMEOUT, static_cast<jsErrCode>(0), "");
    resent_after_timeout += unconfirmed.Count;
    natsMsgList_Destroy(&unconfirmed);
    if (to_send.empty() && next == count) break;
    auto now = std::chrono::steady_clock::now();
    if (to_send.size() < sent) {  // some were stored
      last_progress = now;
      stalled = 0;
    }
    auto delay = retry_delay(stalled++);
    if (!failure) continue;  // stopped early, but everything so far was stored
    if (!failure->transient || now + delay > last_progress + retry_for) {
      error = std::to_string(to_send.size() + (count - next)) + " of " + std::to_string(count) +
              " jobs not stored: " + failure->why +
              (round ? "; gave up after " + std::to_string(round) + " rounds of retries" : "");
      return std::nullopt;
    }
    if (resent == 0) std::fprintf(stderr, "loopfleet: %s; retrying with backoff\n", failure->why.c_str());
    resent += static_cast<int>(to_send.size());
    std::this_thread::sleep_for(delay);
  }
  return "stored " + std::to_string(count) + " job(s) '" + name + "'" +
         (resent ? " (" + std::to_string(resent) + " sent again" +
                        (resent_after_timeout ? ", " + std::to_string(resent_after_timeout) + " after a timeout" : "") + ")"
                  : "") +
         "\n";
}

}  // namespace

std::optional<std::string> submit_jobs(const std::string& url, const std::string& name, const std::string& payload,
                                       int count, const std::string& key, std::chrono::milliseconds retry_for,
                                       const job_limits& limits, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error, retry_for)) return std::nullopt;
  if (count > 1 && key.empty()) return submit_many(conn, name, payload, count, retry_for, limits, error);
  int stored = 0, duplicates = 0, retries = 0;
  std::uint64_t first = 0, last = 0;
  for (int i = 0; i < count; ++i) {
    std::string body = count == 1 ? payload : payload + "-" + std::to_string(i);
    std::string id = key.empty() ? "" : (count == 1 ? key : key + "-" + std::to_string(i));
    auto give_up = std::chrono::steady_clock::now() + retry_for;
    jsPubAck* ack = nullptr;
    bool retried = false;
    for (int attempt = 0; !ack; ++attempt) {
      retried = attempt > 0;
      natsMsg* m = job_message(name, body, limits);
      jsPubOptions po;
      jsPubOptions_Init(&po);
      if (!id.empty()) po.MsgId = id.c_str();
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_PublishMsg(&ack, conn.js(), m, &po, &jerr);
      natsMsg_Destroy(m);
      if (s == NATS_OK) break;
      natsStatus ignored = NATS_OK;
      const char* says = s == NATS_ERR ? nats_GetLastError(&ignored) : nullptr;
      publish_failure f = describe_publish_failure(s, jerr, says ? says : "");
      auto delay = retry_delay(attempt);
      if (!f.transient || std::chrono::steady_clock::now() + delay > give_up) {
        error = "job " + std::to_string(i) + " not stored: " + f.why + " (" + std::to_string(stored) + " stored before it" +
                (attempt ? ", gave up after " + std::to_string(attempt + 1) + " tries" : "") + ")";
        return std::nullopt;
      }
      if (retries++ == 0) std::fprintf(stderr, "loopfleet: %s; retrying with backoff\n", f.why.c_str());
      std::this_thread::sleep_for(delay);
    }
    if (ack->Duplicate && !retried) ++duplicates;  // a retry's duplicate is its own lost confirmation
    else ++stored;
    if (!first) first = ack->Sequence;
    last = ack->Sequence;
    jsPubAck_Destroy(ack);
  }
  return "stored " + std::to_string(stored) + " job(s) '" + name + "', ids " + std::to_string(first) + ".." +
         std::to_string(last) + (duplicates ? ", " + std::to_string(duplicates) + " duplicate(s) dropped" : "") +
         (retries ? ", " + std::to_string(retries) + " retries" : "") + "\n";
}

std::optional<std::string> job_stats(const std::string& url, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  jsStreamInfo* jobs = nullptr;
  jsStreamInfo* dead = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (natsStatus s = js_GetStreamInfo(&jobs, conn.js(), jobs_stream, nullptr, &jerr); s != NATS_OK) {
    error = "cannot read stream " + std::string(jobs_stream) + ": " + natsStatus_GetText(s) +
            (s == NATS_NOT_FOUND ? " (no job was ever submitted, or no node created it yet)"
                                 : " (JetStream error " + std::to_string(jerr) +
                                       "; right after a node is lost a new leader is being elected: retry)");
    return std::nullopt;
  }
  js_GetStreamInfo(&dead, conn.js(), dead_stream, nullptr, &jerr);
  std::uint64_t dead_count = dead ? dead->State.Msgs : 0;
  std::uint64_t waiting = jobs->State.Msgs;  // not yet acknowledged (pending + in flight)
  std::uint64_t total = jobs->State.LastSeq;
  std::string out = "JOB            PENDING  IN_FLIGHT  REDELIVERED\n";
  std::uint64_t in_flight_all = 0;
  jsConsumerNamesList* names = nullptr;
  if (js_ConsumerNames(&names, conn.js(), jobs_stream, nullptr, &jerr) == NATS_OK && names) {
    for (int i = 0; i < names->Count; ++i) {
      jsConsumerInfo* ci = nullptr;
      if (js_GetConsumerInfo(&ci, conn.js(), jobs_stream, names->List[i], nullptr, &jerr) != NATS_OK) continue;
      std::string name = names->List[i];
      if (name.starts_with("loopfleet_")) name = name.substr(10);
      in_flight_all += static_cast<std::uint64_t>(ci->NumAckPending);
      out += pad(name, 14) + " " + pad(std::to_string(ci->NumPending), 8, false) + " " +
             pad(std::to_string(ci->NumAckPending), 10, false) + " " + pad(std::to_string(ci->NumRedelivered), 12, false) +
             "\n";
      jsConsumerInfo_Destroy(ci);
    }
    jsConsumerNamesList_Destroy(names);
  }
  std::uint64_t completed = total - waiting - dead_count;
  out += "all jobs: submitted " + std::to_string(total) + ", completed " + std::to_string(completed) + ", waiting " +
         std::to_string(waiting) + " (in flight " + std::to_string(in_flight_all) + "), dead " +
         std::to_string(dead_count) + "\n";
  jsStreamInfo_Destroy(jobs);
  if (dead) jsStreamInfo_Destroy(dead);
  return out + durability_text(read_durability(conn.js()));
}

namespace {

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The schedules bucket, which every node's agent creates.
kvStore* schedules(nats_connection& conn, std::string& error) {
  kvStore* kv = nullptr;
  if (js_KeyValue(&kv, conn.js(), schedules_bucket) == NATS_OK) return kv;
  error = "no node has created the schedules bucket " + std::string(schedules_bucket) +
          " yet (is a node of this version running with --cluster, with its JetStream servers up?)";
  return nullptr;
}

std::string kv_failure(natsStatus s) {
  natsStatus last = NATS_OK;
  const char* says = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
  return describe_publish_failure(s, static_cast<jsErrCode>(0), says ? says : "").why;
}

}  // namespace

std::optional<std::string> store_schedule(const std::string& url, schedule s, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  kvStore* kv = schedules(conn, error);
  if (!kv) return std::nullopt;
  kvEntry* old = nullptr;
  bool replaced = kvStore_Get(&old, kv, s.name.c_str()) == NATS_OK;
  if (old) kvEntry_Destroy(old);
  s.created_ms = wall_ms();
  s.source = "cli";
  uint64_t rev = 0;
  natsStatus st = kvStore_PutString(&rev, kv, s.name.c_str(), to_json(s).c_str());
  kvStore_Destroy(kv);
  if (st != NATS_OK) {
    error = "schedule '" + s.name + "' not stored: " + kv_failure(st);
    return std::nullopt;
  }
  auto next = next_tick(s, std::nullopt, s.created_ms, catch_up_window);
  return std::string(replaced ? "replaced" : "scheduled") + " '" + s.name + "': " + spec_text(s) + ", job '" + s.job +
         "' (" + std::to_string(s.payload.size()) + " bytes)" + (next ? ", next at " + utc_text(*next) : "") + "\n";
}

std::optional<std::string> remove_schedule(const std::string& url, const std::string& name, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  kvStore* kv = schedules(conn, error);
  if (!kv) return std::nullopt;
  kvEntry* old = nullptr;
  natsStatus st = kvStore_Get(&old, kv, name.c_str());
  if (old) kvEntry_Destroy(old);
  if (st == NATS_NOT_FOUND) {
    kvStore_Destroy(kv);
    error = "no schedule '" + name + "' (loopfleet job schedules lists them)";
    return std::nullopt;
  }
  if (st == NATS_OK) st = kvStore_Delete(kv, name.c_str());
  kvStore_Destroy(kv);
  if (st != NATS_OK) {
    error = "schedule '" + name + "' not removed: " + kv_failure(st);
    return std::nullopt;
  }
  return "unscheduled '" + name + "': the nodes stop firing it within a second or two\n";
}

std::optional<std::string> list_schedules(const std::string& url, bool as_json, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  bool whole = false;
  auto all = read_schedules(conn.js(), whole);
  if (!whole) {
    error = "cannot read the schedules bucket " + std::string(schedules_bucket) +
            " (no node created it yet, or JetStream is electing a leader: retry)";
    return std::nullopt;
  }
  std::int64_t now = wall_ms();
  boost::json::array rows;
  std::string out = "SCHEDULE         SPEC                         JOB          PAYLOAD  NEXT                      LAST"
                    "                      MISSED  SOURCE\n";
  for (const auto& s : all) {
    bool ok = false;
    auto last = last_fired(conn.js(), s.name, ok);
    auto next = next_tick(s, last, now, catch_up_window);
    auto missed = missed_ticks(s, last, now, catch_up_window);
    rows.push_back(boost::json::object{{"name", s.name},
                                       {"spec", spec_text(s)},
                                       {"job", s.job},
                                       {"payload_bytes", s.payload.size()},
                                       {"next_ms", next ? boost::json::value(*next) : nullptr},
                                       {"last_fired_ms", last ? boost::json::value(*last) : nullptr},
                                       {"missed", missed},
                                       {"created_ms", s.created_ms},
                                       {"source", s.source}});
    out += pad(s.name, 16) + " " + pad(spec_text(s), 28) + " " + pad(s.job, 12) + " " +
           pad(std::to_string(s.payload.size()) + " B", 8, false) + " " + pad(next ? utc_text(*next) : "-", 25) + " " +
           pad(last ? utc_text(*last) : ok ? "never" : "?", 25) + " " + pad(std::to_string(missed), 6, false) + "  " +
           s.source + "\n";
  }
  if (as_json) return boost::json::serialize(boost::json::object{{"schedules", rows}}) + "\n";
  return all.empty() ? std::string("no schedules (loopfleet job schedule NAME PAYLOAD --every 1h adds one)\n") : out;
}

}  // namespace loopfleet::cluster
