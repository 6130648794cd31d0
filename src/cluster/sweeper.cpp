#include "cluster/sweeper.hpp"

#include "cluster/nats_connection.hpp"
#include "cluster/node.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

namespace loopfleet::cluster {

using std::chrono::milliseconds;

milliseconds stored_lifetime(int max_attempts, milliseconds time_limit) {
  int attempts = std::max(1, max_attempts);
  return attempts * (time_limit + job_ack_wait) + milliseconds(5000) + milliseconds(10000);
}

bool stranded(const stored_job& j) { return j.delivered && j.age > stored_lifetime(j.max_attempts, j.time_limit); }

namespace {

constexpr std::string_view job_prefix = "loopfleet.job.";

// The delivered stream sequence of each job consumer (loopfleet_NAME), by job subject.
std::map<std::string, std::uint64_t> delivered_by_subject(jsCtx* js) {
  std::map<std::string, std::uint64_t> out;
  jsConsumerInfoList* list = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_Consumers(&list, js, jobs_stream, nullptr, &err) != NATS_OK || !list) return out;
  for (int i = 0; i < list->Count; ++i) {
    jsConsumerInfo* ci = list->List[i];
    if (ci && ci->Config && ci->Config->FilterSubject) out[ci->Config->FilterSubject] = ci->Delivered.Stream;
  }
  jsConsumerInfoList_Destroy(list);
  return out;
}

// Publishes the job again under a new sequence (same subject, payload and headers but its
// idempotency key, which would drop it as a copy of itself), then deletes the stranded one.
bool requeue(jsCtx* js, natsMsg* old, std::uint64_t seq) {
  natsMsg* m = nullptr;
  if (natsMsg_Create(&m, natsMsg_GetSubject(old), nullptr, natsMsg_GetData(old), natsMsg_GetDataLength(old)) != NATS_OK)
    return false;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(old, &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      if (std::strcmp(keys[i], "Nats-Msg-Id") == 0) {
        // The handler still sees the key it was submitted with (job::key).
        if (header(old, "Loopfleet-Key").empty()) natsMsgHeader_Set(m, "Loopfleet-Key", header(old, keys[i]).c_str());
        continue;
      }
      const char** values = nullptr;
      int n = 0;
      if (natsMsgHeader_Values(old, keys[i], &values, &n) == NATS_OK) {
        for (int v = 0; v < n; ++v) natsMsgHeader_Add(m, keys[i], values[v]);
        std::free(values);
      }
    }
    std::free(keys);
  }
  natsMsgHeader_Set(m, "Loopfleet-Requeued-From", std::to_string(seq).c_str());
  jsPubOptions po;
  jsPubOptions_Init(&po);
  std::string id = "loopfleet-requeue-" + std::to_string(seq);  // every node's sweeper agrees on it
  po.MsgId = id.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_PublishMsg(&ack, js, m, &po, &err);
  natsMsg_Destroy(m);
  if (ack) jsPubAck_Destroy(ack);
  if (s != NATS_OK) return false;  // not stored again: keep the old one, try next time
  js_DeleteMsg(js, jobs_stream, seq, nullptr, &err);
  return true;
}

}  // namespace

int sweep_stranded_jobs(jsCtx* js, int budget, std::string& report) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&si, js, jobs_stream, nullptr, &err) != NATS_OK) return 0;
  std::uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, stored = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  if (stored == 0) return 0;
  auto delivered = delivered_by_subject(js);
  std::uint64_t newest_delivered = 0;
  for (auto& [subject, d] : delivered) newest_delivered = std::max(newest_delivered, d);
  auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  int queued = 0;
  // Oldest first: a work queue keeps only what is not done, so a stranded job sits among the
  // oldest. Stop at one too young to be stranded (everything after it is younger still).
  for (std::uint64_t seq = first; seq <= last && seq <= newest_delivered && budget-- > 0; ++seq) {
    natsMsg* m = nullptr;
    if (js_GetMsg(&m, js, jobs_stream, seq, nullptr, &err) != NATS_OK) continue;  // done and removed
    std::string subject = natsMsg_GetSubject(m);
    stored_job j;
    j.seq = seq;
    j.age = std::chrono::duration_cast<milliseconds>(now_ns - std::chrono::nanoseconds(natsMsg_GetTime(m)));
    auto d = delivered.find(subject);
    j.delivered = d != delivered.end() && d->second >= seq;
    if (int a = std::atoi(header(m, "Loopfleet-Max-Attempts").c_str()); a > 0) j.max_attempts = a;
    if (long long t = std::atoll(header(m, "Loopfleet-Time-Limit-Ms").c_str()); t > 0) j.time_limit = milliseconds(t);
    bool young = j.age < job_ack_wait * 2;
    if (stranded(j) && requeue(js, m, seq)) {
      ++queued;
      report += (report.empty() ? "" : ", ") + subject.substr(std::min(subject.size(), job_prefix.size())) + " #" +
                std::to_string(seq);
    }
    natsMsg_Destroy(m);
    if (young) break;
  }
  return queued;
}

}  // namespace loopfleet::cluster
