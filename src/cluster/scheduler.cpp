// The node's scheduler loop (scheduler.hpp): read the schedules, publish due ticks, store
// their jobs.
#include "cluster/scheduler.hpp"

#include "cluster/nats_connection.hpp"
#include "cluster/node.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <set>

namespace loopfleet::cluster {

using namespace std::chrono_literals;

namespace {

const std::string bucket_stream = std::string("KV_") + schedules_bucket;
const std::string bucket_prefix = std::string("$KV.") + schedules_bucket + ".";
// A node fires only from a list read this recently: one that cannot read the bucket (no
// quorum there) would otherwise keep firing a schedule removed meanwhile. The others fire.
constexpr auto fresh_for = 3s;
constexpr auto read_every = 1s;
constexpr std::size_t most_per_round = 1000;  // ticks of one schedule published per round

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string why_failed(natsStatus s, jsErrCode err) {
  natsStatus last = NATS_OK;
  const char* says = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
  return describe_publish_failure(s, err, says ? says : "").why;
}

// Publishes `m` (destroyed here) with message id `id`; true once JetStream has it, stored now
// or before (a duplicate).
bool publish(jsCtx* js, natsMsg* m, const std::string& id, std::string& why, bool* stored = nullptr) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  po.MaxWait = 2000;
  jsPubAck* ack = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_PublishMsg(&ack, js, m, &po, &err);
  natsMsg_Destroy(m);
  if (stored) *stored = ack && !ack->Duplicate;
  if (ack) jsPubAck_Destroy(ack);
  if (s != NATS_OK) why = why_failed(s, err);
  return s == NATS_OK;
}

// `stored` says whether this publish stored the tick (false: a duplicate of another node's).
bool publish_tick(jsCtx* js, const schedule& s, std::int64_t tick, bool& stored, std::string& why) {
  natsMsg* m = nullptr;
  std::string subject = std::string(tick_subject_prefix) + s.name;
  natsMsg_Create(&m, subject.c_str(), nullptr, s.payload.data(), static_cast<int>(s.payload.size()));
  natsMsgHeader_Set(m, "Loopfleet-Tick-Ms", std::to_string(tick).c_str());
  natsMsgHeader_Set(m, "Loopfleet-Job", s.job.c_str());
  return publish(js, m, tick_id(s.name, tick), why, &stored);
}

// A tick to store as a job.
struct move {
  std::string id, job, payload;
  std::int64_t tick = 0;
  int max_attempts = 5;
  std::int64_t time_limit_ms = 30000;
};

// The tick's job, under the tick's id: the other nodes' copies are duplicates.
bool store_job(jsCtx* js, const move& mv, std::string& why) {
  natsMsg* m = nullptr;
  std::string subject = "loopfleet.job." + mv.job;
  natsMsg_Create(&m, subject.c_str(), nullptr, mv.payload.data(), static_cast<int>(mv.payload.size()));
  natsMsgHeader_Set(m, "Loopfleet-Max-Attempts", std::to_string(mv.max_attempts).c_str());
  natsMsgHeader_Set(m, "Loopfleet-Time-Limit-Ms", std::to_string(mv.time_limit_ms).c_str());
  natsMsgHeader_Set(m, "Loopfleet-Tick-Ms", std::to_string(mv.tick).c_str());
  return publish(js, m, mv.id, why);
}

}  // namespace

std::vector<schedule> read_schedules(jsCtx* js, bool& whole) {
  whole = true;
  // The keys from the bucket stream's subjects and each value by a get that its leader answers
  // (not kvStore_Keys, whose ephemeral consumer may sit on a dead replica; not a direct get,
  // which any replica answers, a lagging one with a schedule already removed).
  jsOptions o;
  jsOptions_Init(&o);
  std::string filter = bucket_prefix + ">";
  o.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  std::vector<std::string> subjects;
  if (js_GetStreamInfo(&si, js, bucket_stream.c_str(), &o, &err) != NATS_OK) {
    whole = false;
    return {};
  }
  if (si->State.Subjects)
    for (int i = 0; i < si->State.Subjects->Count; ++i) subjects.emplace_back(si->State.Subjects->List[i].Subject);
  jsStreamInfo_Destroy(si);
  std::vector<schedule> out;
  for (const auto& subject : subjects) {
    natsMsg* m = nullptr;
    if (natsStatus s = js_GetLastMsg(&m, js, bucket_stream.c_str(), subject.c_str(), nullptr, &err); s != NATS_OK) {
      if (s != NATS_NOT_FOUND && err != JSNoMessageFoundErr) whole = false;
      continue;
    }
    // A removal leaves a marker with an empty value (KV-Operation DEL or PURGE).
    if (header(m, "KV-Operation").empty())
      if (auto s = schedule_from_json(std::string_view(natsMsg_GetData(m), natsMsg_GetDataLength(m)))) out.push_back(*s);
    natsMsg_Destroy(m);
  }
  std::sort(out.begin(), out.end(), [](const schedule& a, const schedule& b) { return a.name < b.name; });
  return out;
}

std::optional<std::int64_t> last_fired(jsCtx* js, const std::string& name, bool& ok) {
  ok = true;
  natsMsg* m = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  std::string subject = std::string(tick_subject_prefix) + name;
  if (natsStatus s = js_GetLastMsg(&m, js, ticks_stream, subject.c_str(), nullptr, &err); s != NATS_OK) {
    ok = s == NATS_NOT_FOUND || err == JSNoMessageFoundErr;
    return std::nullopt;
  }
  std::int64_t t = std::atoll(header(m, "Loopfleet-Tick-Ms").c_str());
  natsMsg_Destroy(m);
  return t > 0 ? std::optional(t) : std::nullopt;
}

scheduler::scheduler(std::string url, std::string node, std::vector<schedule> fixed)
    : url_(std::move(url)), node_(std::move(node)), fixed_(std::move(fixed)), thread_([this] { run(); }) {}

scheduler::~scheduler() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  interrupter_.interrupt();
  thread_.join();
}

bool scheduler::stopping() {
  std::lock_guard lock(mutex_);
  return stop_;
}

void scheduler::run() {
  using clock = std::chrono::steady_clock;
  nats_connection connection;
  std::vector<schedule> schedules;
  clock::time_point read_at{}, next_read{};
  // The last tick known stored, per schedule: read from the ticks stream when a schedule is
  // first seen (so a node that starts late catches up from there), then advanced by our own
  // publishes. Behind the truth is harmless: a tick published again is a duplicate.
  std::map<std::string, std::optional<std::int64_t>> fired;
  std::deque<move> to_move;  // ticks stored (by us or another node) whose job we store, in order
  bool fixed_stored = fixed_.empty();
  auto last_warning = clock::time_point{};
  int failures = 0;
  int late_moves = 0;  // since the last report
  std::int64_t latest = 0;
  auto warn = [&last_warning](const std::string& what) {
    if (auto now = clock::now(); now - last_warning > 5s) {
      last_warning = now;
      log::warn("cluster: scheduler: " + what);
    }
  };
  while (!stopping()) {
    if (!connection) {
      if (connection.open(url_, {.reconnect_forever = true, .timeout = 2000ms}) != NATS_OK) {
        std::this_thread::sleep_for(retry_delay(failures++));
        continue;
      }
      failures = 0;
      interrupter_.publish(connection.nc());
    }
    jsCtx* js = connection.js();
    if (clock::now() >= next_read) {
      next_read = clock::now() + read_every;
      bool whole = false;
      auto now_read = read_schedules(js, whole);
      if (whole) {
        if (!fixed_stored) {
          // The run config's schedules, stored when missing or changed: nodes started with the
          // same config agree, and the first to store one gives it its creation time.
          kvStore* kv = nullptr;
          if (js_KeyValue(&kv, js, schedules_bucket) == NATS_OK) {
            fixed_stored = true;
            for (auto f : fixed_) {
              auto stored = std::find_if(now_read.begin(), now_read.end(), [&f](auto& s) { return s.name == f.name; });
              if (stored != now_read.end() && same_schedule(*stored, f)) continue;
              f.created_ms = now_ms();
              f.source = "config " + node_;
              uint64_t rev = 0;
              if (kvStore_PutString(&rev, kv, f.name.c_str(), to_json(f).c_str()) != NATS_OK) {
                fixed_stored = false;
                continue;
              }
              log::info("cluster: scheduler: stored schedule '" + f.name + "' (" + spec_text(f) + ") of the config");
              if (stored != now_read.end()) *stored = f;
              else now_read.push_back(f);
            }
            kvStore_Destroy(kv);
          }
        }
        std::set<std::string> names;
        for (const auto& s : now_read) {
          names.insert(s.name);
          auto before = std::find_if(schedules.begin(), schedules.end(), [&s](auto& b) { return b.name == s.name; });
          if (before == schedules.end() || !same_schedule(*before, s) || before->created_ms != s.created_ms)
            log::info("cluster: scheduler: firing '" + s.name + "' (" + spec_text(s) + ", job '" + s.job + "')");
        }
        for (const auto& s : schedules)
          if (!names.count(s.name)) log::info("cluster: scheduler: no longer firing '" + s.name + "' (removed)");
        for (auto it = fired.begin(); it != fired.end();) it = names.count(it->first) ? std::next(it) : fired.erase(it);
        schedules = std::move(now_read);
        read_at = clock::now();
      }
    }
    bool fresh = clock::now() - read_at < fresh_for;
    for (const auto& s : fresh ? schedules : std::vector<schedule>{}) {
      auto known = fired.find(s.name);
      if (known == fired.end()) {
        bool ok = false;
        auto last = last_fired(js, s.name, ok);
        if (!ok) continue;  // the ticks stream does not answer now: next round
        known = fired.emplace(s.name, last).first;
      }
      for (std::int64_t tick : due_ticks(s, known->second, now_ms(), catch_up_window, most_per_round)) {
        std::string why;
        bool stored = false;
        if (!publish_tick(js, s, tick, stored, why)) {
          warn("tick " + tick_id(s.name, tick) + " not stored yet: " + why + "; retrying");
          break;  // the later ones wait for it: ticks stay in order
        }
        known->second = tick;
        if (should_move(stored, tick, now_ms()))
          to_move.push_back({tick_id(s.name, tick), s.job, s.payload, tick, s.max_attempts, s.time_limit_ms});
      }
    }
    // Every node that fired a tick stores its job (the copies are duplicates), so a node that
    // dies between the two publishes costs nothing: no consumer to hand the tick over, whose
    // leader election after a node kill held ticks for seconds and, on nats-server 2.9.10,
    // sometimes lost track of them for good.
    while (!to_move.empty() && !stopping()) {
      const move& mv = to_move.front();
      if (too_old_to_move(mv.tick, now_ms())) {
        warn("tick " + mv.id + " (" + utc_text(mv.tick) + ") could not be stored as job '" + mv.job + "' for " +
             std::to_string(move_within.count() / 60000) + " minutes; skipped (missed) rather than risk a second job");
        to_move.pop_front();
        continue;
      }
      std::string why;
      if (!store_job(js, mv, why)) {
        warn("tick " + mv.id + " not yet stored as job '" + mv.job + "': " + why + "; retrying");
        break;
      }
      if (auto late = now_ms() - mv.tick; late > 2000) {
        ++late_moves;
        latest = std::max(latest, late);
      }
      to_move.pop_front();
    }
    if (late_moves && to_move.empty()) {
      // Once the backlog is through, one line: JetStream was electing leaders after a node was
      // lost, or no node could fire for a while.
      log::warn("cluster: scheduler: stored " + std::to_string(late_moves) + " tick(s) as jobs up to " +
                std::to_string(latest) + " ms after their time (JetStream was electing leaders, or no node could fire)");
      late_moves = 0;
      latest = 0;
    }
    // Until the next tick is due; at most 250 ms, so a new or removed schedule is seen soon
    // and a job JetStream could not take is tried again.
    std::int64_t wait = 250;
    if (fresh)
      for (const auto& s : schedules)
        if (auto next = next_tick(s, fired.count(s.name) ? fired[s.name] : std::nullopt, now_ms(), catch_up_window))
          wait = std::min(wait, *next - now_ms());
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max<std::int64_t>(wait, 10)));
  }
  interrupter_.retract();
}

}  // namespace loopfleet::cluster
