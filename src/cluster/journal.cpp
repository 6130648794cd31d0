// A workflow's journal: its wire form, the reader's rules, the blocking calls (journal.hpp).
#include "cluster/journal.hpp"

#include "cluster/nats_connection.hpp"
#include "cluster/node.hpp"

#include <boost/beast/core/detail/base64.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace loopfleet::cluster {

namespace beast_base64 = boost::beast::detail::base64;

namespace {

constexpr const char* h_kind = "Loopfleet-Wf-Kind";
constexpr const char* h_n = "Loopfleet-Wf-N";
constexpr const char* h_name = "Loopfleet-Wf-Name";
constexpr const char* h_node = "Loopfleet-Wf-Node";
constexpr const char* h_claim = "Loopfleet-Wf-Claim";
constexpr const char* h_value = "Loopfleet-Wf-Value";
constexpr const char* h_attempts = "Loopfleet-Wf-Attempts";
constexpr const char* h_error = "Loopfleet-Wf-Error";
constexpr const char* h_at = "Loopfleet-Wf-At";
constexpr const char* h_wake = "Loopfleet-Wf-Wake";
constexpr const char* h_input = "Loopfleet-Wf-Input";      // a task with its start: the input (base64)
constexpr const char* h_start = "Loopfleet-Wf-Start-Seq";  // ... and its start entry's sequence
// Larger inputs are read from the journal, not copied into the task.
constexpr std::size_t carried_input_max = 16 * 1024;

constexpr entry::kind kinds[] = {entry::kind::start,   entry::kind::claim,  entry::kind::step,
                                 entry::kind::timer,   entry::kind::waiting, entry::kind::got,
                                 entry::kind::signal,  entry::kind::done,   entry::kind::fail};

entry::kind kind_of(const std::string& s) {
  for (auto k : kinds)
    if (s == kind_name(k)) return k;
  return entry::kind::unknown;
}

std::int64_t number(natsMsg* m, const char* key) { return std::atoll(header(m, key).c_str()); }

}  // namespace

entry parse_entry(natsMsg* m) {
  entry e;
  e.what = kind_of(header(m, h_kind));
  e.n = static_cast<int>(number(m, h_n));
  e.name = header(m, h_name);
  e.node = header(m, h_node);
  e.claim = static_cast<std::uint64_t>(number(m, h_claim));
  e.value = number(m, h_value);
  e.attempts = static_cast<int>(number(m, h_attempts));
  e.error = header(m, h_error) == "1";
  e.at_ms = number(m, h_at);
  e.seq = natsMsg_GetSequence(m);
  if (e.seq == 0) e.seq = static_cast<std::uint64_t>(std::atoll(header(m, "Nats-Sequence").c_str()));
  if (const char* d = natsMsg_GetData(m)) e.body.assign(d, static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  return e;
}

namespace {

std::string says(natsStatus s) {
  natsStatus last = NATS_OK;
  const char* text = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
  return text && *text ? text : natsStatus_GetText(s);
}

}  // namespace

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string journal_subject(const std::string& id) { return "loopfleet.wf." + id; }
std::string task_subject(const std::string& workflow) { return "loopfleet.wft." + workflow; }
std::string task_consumer(const std::string& workflow) { return "loopfleet_wf_" + workflow; }

std::string invalid_token(const std::string& what, const std::string& value) {
  if (value.empty()) return what + " is empty";
  if (value.size() > 128) return what + " '" + value.substr(0, 32) + "...' is longer than 128 characters";
  for (char c : value)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'))
      return what + " '" + value + "' may only have letters, digits, '-' and '_'";
  return "";
}

const char* kind_name(entry::kind k) {
  switch (k) {
    case entry::kind::start: return "start";
    case entry::kind::claim: return "claim";
    case entry::kind::step: return "step";
    case entry::kind::timer: return "timer";
    case entry::kind::waiting: return "waiting";
    case entry::kind::got: return "got";
    case entry::kind::signal: return "signal";
    case entry::kind::done: return "done";
    case entry::kind::fail: return "fail";
    case entry::kind::unknown: break;
  }
  return "unknown";
}

void add_to(journal_view& v, const entry& e) {
  if (e.seq <= v.last_seq && v.last_seq != 0) return;  // already seen (a re-read tail)
  v.last_seq = e.seq;
  if (e.what != entry::kind::signal) v.last_non_signal = e.seq;
  switch (e.what) {
    case entry::kind::start:
      if (!v.start) v.start = e;
      break;
    case entry::kind::claim: v.claims.push_back(e); break;
    case entry::kind::step:
    case entry::kind::timer:
    case entry::kind::waiting: v.at.try_emplace(e.n, e); break;  // the lowest sequence wins
    case entry::kind::got: v.bound.try_emplace(e.n, e); break;
    case entry::kind::signal: v.signals.push_back(e); break;
    case entry::kind::done:
    case entry::kind::fail:
      if (!v.end) v.end = e;
      break;
    case entry::kind::unknown: break;
  }
}

journal_view view_of(const std::vector<entry>& entries) {
  journal_view v;
  for (const auto& e : entries) add_to(v, e);
  return v;
}

bool journal_view::parked_on_signal() const {
  if (end || at.empty()) return false;
  const entry& last = at.rbegin()->second;
  return last.what == entry::kind::waiting && !bound.contains(last.n) && last.seq == last_non_signal;
}

const entry* journal_view::unbound_signal(const std::string& signal) const {
  std::set<std::int64_t> taken;
  for (const auto& [n, g] : bound) taken.insert(g.value);
  for (const auto& s : signals)
    if (s.name == signal && !taken.contains(static_cast<std::int64_t>(s.seq))) return &s;
  return nullptr;
}

std::string journal_view::status() const {
  if (!start) return "unknown";
  if (end) return end->what == entry::kind::done ? "completed" : "failed";
  if (!at.empty()) {
    const entry& last = at.rbegin()->second;
    if (last.what == entry::kind::timer && last.value > unix_ms()) return "waiting";
    if (last.what == entry::kind::waiting && !bound.contains(last.n)) return "waiting";
  }
  return "running";
}

bool read_last_entry(jsCtx* js, const std::string& id, std::optional<entry>& last, std::string& why) {
  natsMsg* m = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&m, js, workflow_stream, journal_subject(id).c_str(), nullptr, &err);
  if (s == NATS_NOT_FOUND || err == JSNoMessageFoundErr) return true;
  if (s != NATS_OK) {
    why = "cannot read the journal of workflow " + id + ": " + says(s);
    return false;
  }
  last = parse_entry(m);
  natsMsg_Destroy(m);
  return true;
}

bool read_journal(jsCtx* js, const std::string& id, std::uint64_t from, std::vector<entry>& out, std::string& why) {
  std::string subject = journal_subject(id);
  // The leader says where the subject ends; direct reads are answered by a replica (the local
  // server's, where it has one), and one that is behind ends the walk early.
  std::optional<entry> last_entry;
  if (!read_last_entry(js, id, last_entry, why)) return false;
  if (!last_entry) return true;
  std::uint64_t last = last_entry->seq;
  // A replica behind by an entry catches up within a round trip or two: the walk goes on from
  // where it stopped after a short pause, rather than handing the task back for a second.
  std::vector<entry> got;
  std::uint64_t next = std::max<std::uint64_t>(from, 1);
  for (int walk = 0; walk < 6; ++walk) {
    if (walk > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10 * walk));
    while (next <= last) {
      jsDirectGetMsgOptions o;
      jsDirectGetMsgOptions_Init(&o);
      o.Sequence = next;
      o.NextBySubject = subject.c_str();
      natsMsg* m = nullptr;
      natsStatus s = js_DirectGetMsg(&m, js, workflow_stream, nullptr, &o);
      if (s == NATS_NOT_FOUND) break;
      if (s != NATS_OK) {
        why = "cannot read the journal of workflow " + id + ": " + says(s);
        return false;
      }
      entry e = parse_entry(m);
      natsMsg_Destroy(m);
      if (e.seq == 0 || e.seq > last) break;
      next = e.seq + 1;
      got.push_back(std::move(e));
    }
    if (next > last) {
      out.insert(out.end(), got.begin(), got.end());
      return true;
    }
  }
  why = "the journal of workflow " + id + " could not be read to its end (a replica is behind)";
  return false;
}

std::optional<entry> read_entry(jsCtx* js, std::uint64_t seq) {
  natsMsg* m = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetMsg(&m, js, workflow_stream, seq, nullptr, &err) != NATS_OK) return std::nullopt;
  entry e = parse_entry(m);
  natsMsg_Destroy(m);
  return e;
}

namespace {

append_result publish(jsCtx* js, natsMsg* m, const std::string& msg_id, std::optional<std::uint64_t> expect_last) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (!msg_id.empty()) po.MsgId = msg_id.c_str();
  if (expect_last) {
    if (*expect_last == 0) po.ExpectNoMessage = true;
    else po.ExpectLastSubjectSeq = *expect_last;
  }
  po.MaxWait = 5000;
  jsPubAck* ack = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  append_result r;
  natsStatus s = js_PublishMsg(&ack, js, m, &po, &err);
  if (s == NATS_OK && ack) {
    r.what = ack->Duplicate ? append_result::outcome::duplicate : append_result::outcome::stored;
    r.seq = ack->Sequence;
  } else if (err == JSStreamWrongLastSequenceErr) {
    r.what = append_result::outcome::wrong_last;
  } else {
    auto f = describe_publish_failure(s, err, says(s));
    r.transient = f.transient;
    r.why = f.why;
  }
  if (ack) jsPubAck_Destroy(ack);
  natsMsg_Destroy(m);
  return r;
}

}  // namespace

append_result append_entry(jsCtx* js, const std::string& id, const entry& e, const std::string& msg_id,
                           std::optional<std::uint64_t> expect_last) {
  std::string subject = journal_subject(id);
  natsMsg* m = nullptr;
  natsMsg_Create(&m, subject.c_str(), nullptr, e.body.data(), static_cast<int>(e.body.size()));
  natsMsgHeader_Set(m, h_kind, kind_name(e.what));
  if (e.n) natsMsgHeader_Set(m, h_n, std::to_string(e.n).c_str());
  if (!e.name.empty()) natsMsgHeader_Set(m, h_name, e.name.c_str());
  if (!e.node.empty()) natsMsgHeader_Set(m, h_node, e.node.c_str());
  if (e.claim) natsMsgHeader_Set(m, h_claim, std::to_string(e.claim).c_str());
  if (e.value) natsMsgHeader_Set(m, h_value, std::to_string(e.value).c_str());
  if (e.attempts) natsMsgHeader_Set(m, h_attempts, std::to_string(e.attempts).c_str());
  if (e.error) natsMsgHeader_Set(m, h_error, "1");
  natsMsgHeader_Set(m, h_at, std::to_string(e.at_ms ? e.at_ms : unix_ms()).c_str());
  return publish(js, m, msg_id, expect_last);
}

bool is_wake(natsMsg* task) { return header(task, h_wake) == "1"; }

append_result put_task(jsCtx* js, const std::string& workflow, const std::string& id, const std::string& msg_id,
                       bool wake, const entry* start) {
  return publish(js, task_message(workflow, id, wake, start), msg_id, std::nullopt);
}

natsMsg* task_message(const std::string& workflow, const std::string& id, bool wake, const entry* start) {
  std::string subject = task_subject(workflow);
  natsMsg* m = nullptr;
  // The body is the id in every task, as every version of the executor reads it (a worker
  // still draining after an upgrade runs what it fetches); the input rides in a header,
  // base64 (a header value holds no line break).
  natsMsg_Create(&m, subject.c_str(), nullptr, id.data(), static_cast<int>(id.size()));
  if (start && start->seq && start->body.size() <= carried_input_max) {
    std::string input(beast_base64::encoded_size(start->body.size()), '\0');
    input.resize(beast_base64::encode(input.data(), start->body.data(), start->body.size()));
    natsMsgHeader_Set(m, h_input, input.c_str());
    natsMsgHeader_Set(m, h_start, std::to_string(start->seq).c_str());
  }
  if (wake) natsMsgHeader_Set(m, h_wake, "1");
  return m;
}

std::string task_id(natsMsg* task) {
  const char* d = natsMsg_GetData(task);
  return d ? std::string(d, static_cast<std::size_t>(natsMsg_GetDataLength(task))) : std::string();
}

std::optional<entry> task_start(natsMsg* task) {
  auto seq = static_cast<std::uint64_t>(std::atoll(header(task, h_start).c_str()));
  if (seq == 0) return std::nullopt;
  const char* input = nullptr;
  if (natsMsgHeader_Get(task, h_input, &input) != NATS_OK || !input) return std::nullopt;
  std::size_t length = std::strlen(input);
  while (length > 0 && input[length - 1] == '=') --length;  // the padding, which decode stops at
  entry e;
  e.what = entry::kind::start;
  e.seq = seq;
  e.body.resize(beast_base64::decoded_size(length) + 2);
  auto [written, read] = beast_base64::decode(e.body.data(), input, length);
  if (read != length) return std::nullopt;  // not what task_message wrote: read the journal
  e.body.resize(written);
  return e;
}

request_result start_workflow(jsCtx* js, const std::string& workflow, const std::string& id,
                              const std::string& input) {
  request_result r;
  for (auto [what, value] : {std::pair{"workflow name", &workflow}, std::pair{"workflow id", &id}})
    if (auto bad = invalid_token(what, *value); !bad.empty()) return {"invalid", bad};
  // The task queue's consumer exists once a worker has registered the workflow: starting one
  // nobody can run would store a workflow that never runs. Once seen, it is remembered for
  // the life of the connection (it is durable; only an operator deletes it): a round trip
  // less for every start.
  static std::mutex known_mutex;
  static std::set<std::pair<const jsCtx*, std::string>> known;
  bool seen;
  {
    std::lock_guard lock(known_mutex);
    seen = known.contains({js, workflow});
  }
  if (!seen) {
    jsConsumerInfo* ci = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    natsStatus s =
        js_GetConsumerInfo(&ci, js, workflow_task_stream, task_consumer(workflow).c_str(), nullptr, &err);
    if (ci) jsConsumerInfo_Destroy(ci);
    if (s == NATS_NOT_FOUND || err == JSConsumerNotFoundErr || err == JSStreamNotFoundErr)
      return {"unknown_workflow", "no worker has registered workflow '" + workflow +
                                      "': define it with loopfleet::workflow::define in a worker of the cluster"};
    if (s != NATS_OK) return {"unavailable", "cannot reach the workflow queue: " + says(s)};
    std::lock_guard lock(known_mutex);
    known.insert({js, workflow});
  }
  entry e;
  e.what = entry::kind::start;
  e.name = workflow;
  e.body = input;
  append_result a = append_entry(js, id, e, id + "/start", 0);
  if (a.what == append_result::outcome::failed) return {"unavailable", "workflow " + id + " not stored: " + a.why};
  if (a.what != append_result::outcome::stored) {
    std::vector<entry> all;
    std::string why;
    if (!read_journal(js, id, 1, all, why)) return {"unavailable", why};
    journal_view v = view_of(all);
    if (!v.start) return {"unavailable", "workflow " + id + " exists but its start cannot be read yet; try again"};
    if (v.start->name != workflow)
      return {"conflict", "workflow id " + id + " is taken by a run of workflow '" + v.start->name + "'"};
    if (v.start->body != input)
      return {"conflict", "workflow " + id + " was started with another input (" +
                              std::to_string(v.start->body.size()) + " bytes); an id names one run"};
    r.seq = v.start->seq;
  } else {
    r.seq = a.seq;
  }
  // Again on a repeated start: a start whose task was lost (its starter died in between) is
  // queued by the next one; a second copy of a task is harmless (the claim decides).
  e.seq = r.seq;
  append_result t = put_task(js, workflow, id, "wf-task:" + id, false, &e);
  if (t.what == append_result::outcome::failed)
    return {"unavailable", "workflow " + id + " is stored but its task was not queued (" + t.why +
                               "); start it again with the same id and input"};
  return r;
}

request_result signal_workflow(jsCtx* js, const std::string& id, const std::string& signal,
                               const std::string& payload) {
  for (auto [what, value] : {std::pair{"workflow id", &id}, std::pair{"signal name", &signal}})
    if (auto bad = invalid_token(what, *value); !bad.empty()) return {"invalid", bad};
  std::vector<entry> all;
  std::string why;
  if (!read_journal(js, id, 1, all, why)) return {"unavailable", why};
  journal_view v = view_of(all);
  if (!v.start) return {"invalid", "no workflow has id " + id};
  if (v.finished()) return {"finished", "workflow " + id + " has " + v.status() + "; it takes no more signals"};
  entry e;
  e.what = entry::kind::signal;
  e.name = signal;
  e.body = payload;
  append_result a = append_entry(js, id, e, "", std::nullopt);
  if (a.what != append_result::outcome::stored) return {"unavailable", "signal not stored: " + a.why};
  // The wake is dropped by an executor that finds the workflow not parked on a signal: a
  // running one reads its signals at its next wait.
  append_result t = put_task(js, v.start->name, id, "wf-wake:" + id + ":" + std::to_string(a.seq), true);
  if (t.what == append_result::outcome::failed)
    return {"unavailable", "signal stored but the workflow was not woken (" + t.why + "); send it again"};
  return {"", "", a.seq};
}

}  // namespace loopfleet::cluster
