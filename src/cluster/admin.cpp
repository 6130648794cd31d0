#include "cluster/admin.hpp"

#include "cluster/node.hpp"

#include <boost/json.hpp>
#include <nats/nats.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

namespace loopfleet::cluster {
namespace {

struct session {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  ~session() {
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
  }
  bool open(const std::string& url, std::string& error) {
    natsOptions* opts = nullptr;
    natsOptions_Create(&opts);
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetTimeout(opts, 2000);
    natsStatus s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
      nc = nullptr;
      error = "cannot reach NATS at " + url + ": " + natsStatus_GetText(s) +
              " (is the node running with --cluster? --nats picks another URL)";
      return false;
    }
    natsConnection_JetStream(&js, nc, nullptr);
    return true;
  }
};

std::string pad(std::string s, std::size_t w, bool left = true) {
  if (s.size() < w) s = left ? s + std::string(w - s.size(), ' ') : std::string(w - s.size(), ' ') + s;
  return s;
}

}  // namespace

std::optional<std::string> cluster_status(const std::string& url, double down_after_s, bool as_json, std::string& error) {
  session ss;
  if (!ss.open(url, error)) return std::nullopt;
  kvStore* kv = nullptr;
  if (js_KeyValue(&kv, ss.js, nodes_bucket) != NATS_OK) {
    error = "no node has announced itself yet (bucket " + std::string(nodes_bucket) + " missing)";
    return std::nullopt;
  }
  kvKeysList keys{};
  kvStore_Keys(&keys, kv, nullptr);
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count();
  boost::json::array nodes;
  for (int i = 0; i < keys.Count; ++i) {
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, kv, keys.Keys[i]) != NATS_OK) continue;
    boost::system::error_code ec;
    auto v = boost::json::parse(kvEntry_ValueString(e), ec);
    kvEntry_Destroy(e);
    if (ec || !v.is_object()) continue;
    auto& o = v.as_object();
    double age = (now_ms - o["ts_ms"].to_number<double>()) / 1000.0;
    o["age_s"] = age;
    o["state"] = age <= down_after_s ? "up" : "down";
    nodes.push_back(std::move(v));
  }
  kvKeysList_Destroy(&keys);
  kvStore_Destroy(kv);
  if (as_json) return boost::json::serialize(boost::json::object{{"nodes", nodes}}) + "\n";
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
  return out;
}

std::optional<std::string> submit_jobs(const std::string& url, const std::string& name, const std::string& payload,
                                       int count, const std::string& key, std::string& error) {
  session ss;
  if (!ss.open(url, error)) return std::nullopt;
  if (count > 1 && key.empty()) {
    // Many jobs: publish asynchronously, up to 4096 awaiting their stored-acknowledgement.
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jsCtx* fast = nullptr;
    natsConnection_JetStream(&fast, ss.nc, &jo);
    for (int i = 0; i < count; ++i) {
      std::string body = payload + "-" + std::to_string(i);
      natsMsg* m = nullptr;
      natsMsg_Create(&m, ("loopfleet.job." + name).c_str(), nullptr, body.data(), static_cast<int>(body.size()));
      natsMsgHeader_Set(m, "Loopfleet-Max-Attempts", "5");
      natsMsgHeader_Set(m, "Loopfleet-Time-Limit-Ms", "30000");
      if (natsStatus s = js_PublishMsgAsync(fast, &m, nullptr); s != NATS_OK) {
        natsMsg_Destroy(m);
        jsCtx_Destroy(fast);
        error = "job " + std::to_string(i) + " not sent: " + natsStatus_GetText(s);
        return std::nullopt;
      }
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 60000;
    natsStatus s = js_PublishAsyncComplete(fast, &wait);
    natsMsgList failed{};
    js_PublishAsyncGetPendingList(&failed, fast);
    int lost = failed.Count;
    natsMsgList_Destroy(&failed);
    jsCtx_Destroy(fast);
    if (s != NATS_OK || lost) {
      error = "not every job was acknowledged as stored (" + std::string(natsStatus_GetText(s)) + ", " +
              std::to_string(lost) + " pending)";
      return std::nullopt;
    }
    return "stored " + std::to_string(count) + " job(s) '" + name + "'\n";
  }
  int stored = 0, duplicates = 0;
  std::uint64_t first = 0, last = 0;
  for (int i = 0; i < count; ++i) {
    std::string body = count == 1 ? payload : payload + "-" + std::to_string(i);
    std::string id = key.empty() ? "" : (count == 1 ? key : key + "-" + std::to_string(i));
    natsMsg* m = nullptr;
    natsMsg_Create(&m, ("loopfleet.job." + name).c_str(), nullptr, body.data(), static_cast<int>(body.size()));
    natsMsgHeader_Set(m, "Loopfleet-Max-Attempts", "5");
    natsMsgHeader_Set(m, "Loopfleet-Time-Limit-Ms", "30000");
    jsPubOptions po;
    jsPubOptions_Init(&po);
    if (!id.empty()) po.MsgId = id.c_str();
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_PublishMsg(&ack, ss.js, m, &po, &jerr);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
      error = "job " + std::to_string(i) + " not stored: " + natsStatus_GetText(s) + " (" + std::to_string(stored) +
              " stored before it)";
      return std::nullopt;
    }
    if (ack->Duplicate) ++duplicates;
    else ++stored;
    if (!first) first = ack->Sequence;
    last = ack->Sequence;
    jsPubAck_Destroy(ack);
  }
  return "stored " + std::to_string(stored) + " job(s) '" + name + "', ids " + std::to_string(first) + ".." +
         std::to_string(last) + (duplicates ? ", " + std::to_string(duplicates) + " duplicate(s) dropped" : "") + "\n";
}

std::optional<std::string> job_stats(const std::string& url, std::string& error) {
  session ss;
  if (!ss.open(url, error)) return std::nullopt;
  jsStreamInfo* jobs = nullptr;
  jsStreamInfo* dead = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (natsStatus s = js_GetStreamInfo(&jobs, ss.js, jobs_stream, nullptr, &jerr); s != NATS_OK) {
    error = "cannot read stream " + std::string(jobs_stream) + ": " + natsStatus_GetText(s) +
            (s == NATS_NOT_FOUND ? " (no job was ever submitted, or no node created it yet)"
                                 : " (JetStream error " + std::to_string(jerr) +
                                       "; right after a node is lost a new leader is being elected: retry)");
    return std::nullopt;
  }
  js_GetStreamInfo(&dead, ss.js, dead_stream, nullptr, &jerr);
  std::uint64_t dead_count = dead ? dead->State.Msgs : 0;
  std::uint64_t waiting = jobs->State.Msgs;  // not yet acknowledged (pending + in flight)
  std::uint64_t total = jobs->State.LastSeq;
  std::string out = "JOB            PENDING  IN_FLIGHT  REDELIVERED\n";
  std::uint64_t in_flight_all = 0;
  jsConsumerNamesList* names = nullptr;
  if (js_ConsumerNames(&names, ss.js, jobs_stream, nullptr, &jerr) == NATS_OK && names) {
    for (int i = 0; i < names->Count; ++i) {
      jsConsumerInfo* ci = nullptr;
      if (js_GetConsumerInfo(&ci, ss.js, jobs_stream, names->List[i], nullptr, &jerr) != NATS_OK) continue;
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
  return out;
}

}  // namespace loopfleet::cluster
