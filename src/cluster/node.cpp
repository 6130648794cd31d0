#include "cluster/node.hpp"

#include "cluster/journal.hpp"
#include "cluster/nats_connection.hpp"
#include "cluster/scheduler.hpp"
#include "cluster/sweeper.hpp"

#include "runtime/log.hpp"

#include <boost/json.hpp>

#include <nats/nats.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <utility>

namespace loopfleet::cluster {

std::string server_config(const server_settings& s) {
  std::string out;
  out += "server_name: \"" + s.node + "\"\n";
  out += "listen: \"" + s.client_listen + "\"\n";
  out += "jetstream {\n  store_dir: \"" + s.store_dir + "\"\n";
  if (s.max_store_mib > 0) out += "  max_file_store: " + std::to_string(s.max_store_mib) + "MB\n";
  out += "}\n";
  if (!s.join.empty()) {
    out += "cluster {\n  name: \"loopfleet\"\n  listen: \"" + s.cluster_listen + "\"\n  routes: [\n";
    for (const auto& peer : s.join) out += "    \"nats-route://" + peer + "\"\n";
    out += "  ]\n}\n";
  }
  return out;
}

publish_failure describe_publish_failure(natsStatus status, jsErrCode js_error, std::string_view server_says) {
  // nats_GetLastError's text starts with where in nats.c it was raised: "(js.c:535): ".
  if (server_says.starts_with("(")) {
    if (auto end = server_says.find("): "); end != std::string_view::npos) server_says.remove_prefix(end + 3);
  }
  std::string detail = server_says.empty() ? natsStatus_GetText(status) : std::string(server_says);
  switch (static_cast<int>(js_error)) {
    case JSInsufficientResourcesErr:
    case JSStorageResourcesExceededErr:
    case JSMemoryResourcesExceededErr:
    case JSAccountResourcesExceededErr:
    case JSStreamStoreFailedErr:
      return {true, "JetStream storage is full (" + detail +
                        "): it frees as workers finish jobs; otherwise raise --max-store or free disk space"};
    case JSClusterNotAvailErr:
    case JSClusterNotLeaderErr:
    case JSStreamOfflineErr:
      return {true, "JetStream is electing a leader (" + detail + ")"};
    default:
      break;
  }
  if (status == NATS_TIMEOUT)
    return {true, "JetStream did not confirm within the publish timeout (a leader election, or NATS is down)"};
  if (status == NATS_NO_RESPONDERS)
    return {true, "no JetStream stream takes it yet (no node has created the streams, or JetStream is down)"};
  if (status == NATS_CONNECTION_DISCONNECTED || status == NATS_NOT_YET_CONNECTED)
    return {true, "NATS is not connected (" + detail + ")"};
  if (status == NATS_MAX_PAYLOAD)
    return {false, "the payload is larger than NATS allows (max_payload, 1 MiB by default): store it elsewhere and "
                   "submit a reference"};
  return {false, detail + (js_error ? " (JetStream error " + std::to_string(js_error) + ")" : "")};
}

std::chrono::milliseconds retry_delay(int n) {
  return std::min(std::chrono::milliseconds(2000), std::chrono::milliseconds(50L << std::clamp(n, 0, 6)));
}

int replicas_for(std::size_t peers) { return static_cast<int>(std::min<std::size_t>(3, peers + 1)); }

std::vector<int> replicas_to_try(const replica_settings& r, std::chrono::milliseconds waited) {
  int want = std::max(1, r.want);
  if (r.patience.count() == 0 || waited < r.patience) return {want};
  std::vector<int> out;
  for (int n = want; n >= 1; --n) out.push_back(n);
  return out;
}

std::string describe(const durability& d) {
  std::string out = d.kind + " " + d.name + ": ";
  if (d.has == 0) return out + "no leader answers: no quorum, it stores and delivers nothing until a majority is back";
  out += std::to_string(d.has) + " of " + std::to_string(d.want) + " replicas, " + std::to_string(d.in_sync) +
         " in sync, " + (d.quorum() ? "quorum" : "NO QUORUM: it stores and delivers nothing until a majority is back");
  if (d.short_of_replicas())
    out += "; fewer replicas than promised: it grows when servers join (losing a server meanwhile can lose jobs or "
           "stop them)";
  if (!d.servers.empty()) out += "; on " + d.servers;
  return out;
}

namespace {
constexpr std::string_view wanted_marker = "loopfleet: replicas wanted ";
}

std::string replicas_description(int want) { return std::string(wanted_marker) + std::to_string(want); }

int wanted_replicas(const char* description, int fallback) {
  std::string_view d = description ? description : "";
  auto at = d.find(wanted_marker);
  if (at == std::string_view::npos) return fallback;
  int n = std::atoi(std::string(d.substr(at + wanted_marker.size())).c_str());
  return n > 0 ? n : fallback;
}

namespace {

// The leader plus the followers that are current: those that have every stored write.
durability standing(std::string name, std::string kind, int want, const jsClusterInfo* ci, int configured) {
  durability d{std::move(name), std::move(kind), want, configured, 0, false, {}};
  // A server without a cluster block names no leader: the one server that answered is it.
  // (In a cluster only the leader answers, and it names itself.)
  if (!ci || ((!ci->Leader || !*ci->Leader) && ci->ReplicasLen == 0)) {
    d.leader = true;
    d.in_sync = 1;
    d.has = 1;
    return d;
  }
  d.leader = ci->Leader && *ci->Leader;
  d.in_sync = d.leader ? 1 : 0;
  if (d.leader) d.servers = std::string(ci->Leader) + " (leader)";
  for (int i = 0; i < ci->ReplicasLen; ++i) {
    const jsPeerInfo* r = ci->Replicas[i];
    if (!r) continue;
    if (r->Current && !r->Offline) ++d.in_sync;
    if (!d.servers.empty()) d.servers += ", ";
    d.servers += std::string(r->Name ? r->Name : "?") + (r->Offline ? " (offline)" : !r->Current ? " (behind)" : "");
  }
  // The peers listed, not the configured count: nats-server 2.9 has been seen to create a
  // stream with 3 replicas configured on 2 servers, and a consumer configured with 0 replicas
  // has its stream's count but not always its stream's servers.
  if (d.leader) d.has = 1 + ci->ReplicasLen;
  return d;
}

// One stream: nullopt when it does not exist. A stream that exists but whose leader does not
// answer (no quorum) is reported with has = 0.
std::optional<durability> read_stream(jsCtx* js, const std::string& name, const char* kind, jsStreamInfo** keep) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, &err);
  if (s == NATS_NOT_FOUND || err == JSStreamNotFoundErr) return std::nullopt;
  if (s != NATS_OK) return durability{name, kind, 0, 0, 0, false, {}};
  auto d = standing(name, kind, wanted_replicas(si->Config->Description, static_cast<int>(si->Config->Replicas)),
                    si->Cluster, static_cast<int>(si->Config->Replicas));
  if (keep) *keep = si;
  else jsStreamInfo_Destroy(si);
  return d;
}

const std::string nodes_bucket_stream = std::string("KV_") + nodes_bucket;
const std::string schedules_bucket_stream = std::string("KV_") + schedules_bucket;

}  // namespace

std::vector<durability> read_durability(jsCtx* js) {
  std::vector<durability> out;
  jsStreamInfo* jobs = nullptr;
  if (auto d = read_stream(js, jobs_stream, "stream", &jobs)) out.push_back(*d);
  if (auto d = read_stream(js, dead_stream, "stream", nullptr)) out.push_back(*d);
  if (auto d = read_stream(js, nodes_bucket_stream, "bucket", nullptr)) out.push_back(*d);
  if (auto d = read_stream(js, workflow_stream, "stream", nullptr)) out.push_back(*d);
  if (auto d = read_stream(js, workflow_task_stream, "stream", nullptr)) out.push_back(*d);
  if (auto d = read_stream(js, ticks_stream, "stream", nullptr)) out.push_back(*d);
  if (auto d = read_stream(js, schedules_bucket_stream, "bucket", nullptr)) out.push_back(*d);
  if (!jobs) return out;
  int want = out.front().want;
  jsConsumerNamesList* names = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_ConsumerNames(&names, js, jobs_stream, nullptr, &err) == NATS_OK && names) {
    for (int i = 0; i < names->Count; ++i) {
      jsConsumerInfo* ci = nullptr;
      if (js_GetConsumerInfo(&ci, js, jobs_stream, names->List[i], nullptr, &err) != NATS_OK) {
        out.push_back({names->List[i], "consumer", want, 0, 0, false, {}});
        continue;
      }
      out.push_back(standing(names->List[i], "consumer", want, ci->Cluster, static_cast<int>(ci->Config->Replicas)));
      jsConsumerInfo_Destroy(ci);
    }
    jsConsumerNamesList_Destroy(names);
  }
  jsStreamInfo_Destroy(jobs);
  return out;
}

boost::json::array durability_json(const std::vector<durability>& all) {
  boost::json::array out;
  for (const auto& d : all)
    out.push_back(boost::json::object{{"name", d.name},       {"kind", d.kind},       {"want", d.want},
                                      {"has", d.has},         {"in_sync", d.in_sync}, {"quorum", d.quorum()},
                                      {"servers", d.servers}});
  return out;
}

node_agent::node_agent(std::string url, std::string node, replica_settings replicas, std::vector<schedule> fixed)
    : url_(std::move(url)),
      node_(std::move(node)),
      replicas_(replicas),
      thread_([this] { run(); }),
      scheduler_(std::make_unique<scheduler>(url_, node_, std::move(fixed))) {}

node_agent::~node_agent() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  interrupter_.interrupt();
  scheduler_.reset();
  thread_.join();
}

void node_agent::update(std::string snapshot, bool now) {
  std::lock_guard lock(mutex_);
  snapshot_ = std::move(snapshot);
  beat_now_ |= now;
}

std::vector<durability> node_agent::streams() const {
  std::lock_guard lock(mutex_);
  return streams_;
}

boost::json::array node_agent::members() const {
  std::lock_guard lock(mutex_);
  return members_;
}

// Raised by every node at once, a consumer could be scaled down by one node's step to what it
// has just after another's step up, while the new replica caught up: it never got there.
std::string consumer_raiser(const boost::json::array& nodes) {
  std::string first;
  for (const auto& n : nodes) {
    const auto* o = n.if_object();
    const auto* node = o ? o->if_contains("node") : nullptr;
    const auto* state = o ? o->if_contains("state") : nullptr;
    if (!node || !node->is_string() || !state || *state != "up") continue;
    std::string name(node->as_string());
    if (first.empty() || name < first) first = name;
  }
  return first;
}

boost::json::object member_summary(const boost::json::object& heartbeat) {
  boost::json::object m;
  for (const char* k : {"node", "state", "age_s", "workers", "ready", "admin", "http", "stopping"})
    if (const auto* v = heartbeat.if_contains(k)) m[k] = *v;
  return m;
}

int node_agent::nodes_up() const {
  std::lock_guard lock(mutex_);
  return nodes_up_;
}

boost::json::array read_nodes(jsCtx* js, kvStore* kv, double down_after_s, bool* whole) {
  if (whole) *whole = true;
  // The keys from the bucket stream's subjects, which its leader answers itself. Not
  // kvStore_Keys: that makes an ephemeral consumer, which nats-server 2.9 may place on a
  // replica that has just died and not yet been seen offline; the list then came back empty
  // for tens of seconds after a node was killed, though the bucket had its quorum.
  jsOptions o;
  jsOptions_Init(&o);
  std::string prefix = std::string("$KV.") + nodes_bucket + ".";
  std::string filter = prefix + ">";
  o.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  std::vector<std::string> keys;
  if (js_GetStreamInfo(&si, js, nodes_bucket_stream.c_str(), &o, &err) == NATS_OK) {
    if (si->State.Subjects)
      for (int i = 0; i < si->State.Subjects->Count; ++i)
        if (std::string_view subject = si->State.Subjects->List[i].Subject; subject.starts_with(prefix))
          keys.emplace_back(subject.substr(prefix.size()));
    jsStreamInfo_Destroy(si);
  } else if (whole) {
    *whole = false;
  }
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count();
  boost::json::array nodes;
  for (const auto& key : keys) {
    kvEntry* e = nullptr;
    if (natsStatus s = kvStore_Get(&e, kv, key.c_str()); s != NATS_OK) {
      if (s != NATS_NOT_FOUND && whole) *whole = false;
      continue;  // deleted, or gone meanwhile
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(kvEntry_ValueString(e), ec);
    kvEntry_Destroy(e);
    if (ec || !v.is_object()) continue;
    auto& o = v.as_object();
    const auto* ts = o.if_contains("ts_ms");
    double age = ts && ts->is_number() ? (now_ms - ts->to_number<double>()) / 1000.0 : 1e9;
    o["age_s"] = age;
    o["state"] = age <= down_after_s ? "up" : "down";
    nodes.push_back(std::move(v));
  }
  return nodes;
}

namespace {

// What the agent creates: three streams and two buckets, each with the replicas promised.
struct shared_object {
  const char* name;      // the stream's name (a bucket's is KV_<bucket>)
  const char* subject;   // streams only
  jsRetentionPolicy retention;
  bool bucket;
  jsStorageType storage = js_FileStorage;
  std::chrono::nanoseconds max_age{0};  // streams: 0 = kept until consumed or deleted
  std::chrono::nanoseconds duplicates{std::chrono::minutes(10)};  // idempotency keys hold this long
  bool direct = false;   // reads by subject from any replica (a workflow's journal, journal.hpp)
};
const shared_object shared_objects[] = {
    {jobs_stream, "loopfleet.job.>", js_WorkQueuePolicy, false},
    {dead_stream, "loopfleet.dead.>", js_LimitsPolicy, false},
    // Heartbeats in memory: membership keeps working when the jobs fill the disk store.
    {nodes_bucket, nullptr, js_LimitsPolicy, true, js_MemoryStorage},
    // Fired ticks: limits retention, kept longer than their duplicate window (schedule.hpp).
    {ticks_stream, "loopfleet.tick.>", js_LimitsPolicy, false, js_FileStorage, tick_max_age, tick_duplicate_window},
    {schedules_bucket, nullptr, js_LimitsPolicy, true},
    // Workflows: journals are kept (limits, no age limit: a workflow may sleep for days), tasks
    // are a work queue like the jobs.
    {workflow_stream, "loopfleet.wf.>", js_LimitsPolicy, false, js_FileStorage, {}, std::chrono::minutes(10), true},
    {workflow_task_stream, "loopfleet.wft.>", js_WorkQueuePolicy, false},
};

std::string stream_name(const shared_object& o) { return o.bucket ? std::string("KV_") + o.name : o.name; }

bool exists(jsCtx* js, const shared_object& o) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&si, js, stream_name(o).c_str(), nullptr, &err) != NATS_OK) return false;
  jsStreamInfo_Destroy(si);
  return true;
}

// Creates `o` with `replicas`; on failure sets `why` to what JetStream said.
bool create(jsCtx* js, const shared_object& o, int replicas, int want, std::string& why) {
  std::string description = replicas_description(want);
  natsStatus s = NATS_OK;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (o.bucket) {
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = o.name;
    kc.Description = description.c_str();
    kc.History = 1;
    kc.StorageType = o.storage;
    kc.Replicas = replicas;
    kvStore* kv = nullptr;
    s = js_CreateKeyValue(&kv, js, &kc);
    if (kv) kvStore_Destroy(kv);
  } else {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = o.name;
    cfg.Description = description.c_str();
    const char* subjects[] = {o.subject};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = o.retention;
    cfg.Storage = js_FileStorage;
    cfg.Discard = js_DiscardNew;  // full: refuse new jobs (the submitter retries), never drop stored ones
    cfg.Replicas = replicas;
    cfg.Duplicates = o.duplicates.count();
    cfg.MaxAge = o.max_age.count();
    cfg.AllowDirect = o.direct;
    jsStreamInfo* si = nullptr;
    s = js_AddStream(&si, js, &cfg, nullptr, &err);
    if (si) jsStreamInfo_Destroy(si);
  }
  if (s == NATS_OK) return true;
  natsStatus last = NATS_OK;
  const char* says = s == NATS_ERR ? nats_GetLastError(&last) : nullptr;
  why = says && *says ? says : natsStatus_GetText(s);
  if (auto end = why.find("): "); why.starts_with("(") && end != std::string::npos) why.erase(0, end + 3);
  if (err) why += " (JetStream error " + std::to_string(err) + ")";
  return false;
}

// Raises a stream (or a bucket's) to `want` replicas: a cluster that had to start with fewer
// servers gets its redundancy as soon as they are there. Quiet when they are not yet.
void raise(jsCtx* js, const std::string& name, int want) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&si, js, name.c_str(), nullptr, &err) != NATS_OK) return;
  int had = static_cast<int>(si->Config->Replicas);
  if (had < want) {
    std::string description = replicas_description(want);
    si->Config->Replicas = want;
    si->Config->Description = description.c_str();
    jsStreamInfo* updated = nullptr;
    if (js_UpdateStream(&updated, js, si->Config, nullptr, &err) == NATS_OK) {
      log::info("cluster: stream " + name + " now has " + std::to_string(want) + " replicas (had " +
                std::to_string(had) + ")");
      jsStreamInfo_Destroy(updated);
    }
    si->Config->Description = nullptr;  // ours, not the info's to free
  }
  jsStreamInfo_Destroy(si);
}

// Gives a jobs consumer its stream's servers. nats-server moves consumers along when we raise
// their stream, but not when it repairs a stream on its own: a consumer made while its 3-replica
// stream sat on 2 servers keeps 2 after the third joins, and loses its quorum with one of them.
// Its configured count already says 3 (0: the stream's), so asking for 3 changes nothing; asking
// for what it has and then for `want` is a scale-up nats-server carries out, state and all.
// One step a round, `consumer_raise_patience` apart: two updates in a row race in nats-server
// 2.9's meta layer (the second is compared with the assignment before the first is applied,
// moves no peers, and the consumer kept its 2 servers however often it was asked; seen in CI).
constexpr auto consumer_raise_patience = std::chrono::seconds(10);

void raise_consumer(jsCtx* js, const std::string& name, int has, int want) {
  jsConsumerInfo* ci = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetConsumerInfo(&ci, js, jobs_stream, name.c_str(), nullptr, &err) != NATS_OK) return;
  int step = ci->Config->Replicas == has ? want : has;
  ci->Config->Replicas = step;
  jsConsumerInfo* updated = nullptr;
  if (js_UpdateConsumer(&updated, js, jobs_stream, ci->Config, nullptr, &err) == NATS_OK)
    log::info("cluster: consumer " + name +
              (step == want ? " now has " + std::to_string(want) + " replicas (had " + std::to_string(has) + ")"
                            : " set to the " + std::to_string(has) + " replicas it has, to be raised to " +
                                  std::to_string(want) + " next"));
  if (updated) jsConsumerInfo_Destroy(updated);
  jsConsumerInfo_Destroy(ci);
}

}  // namespace

void node_agent::run() {
  nats_connection connection;
  kvStore* kv = nullptr;
  // Sleeps `ms` in steps that notice a stop (false) and a heartbeat to put at once.
  auto pause = [this](std::chrono::milliseconds ms) {
    for (auto slept = std::chrono::milliseconds(0); slept < ms; slept += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard lock(mutex_);
      if (stop_) return false;
      if (std::exchange(beat_now_, false)) break;
    }
    return true;
  };
  using clock = std::chrono::steady_clock;
  const auto began = clock::now();
  auto last_waiting_note = clock::time_point{};
  int failures = 0;  // in a row, for the backoff
  bool warned = false;
  int ticks = 0;
  // When each consumer was last raised: its scale-up takes nats-server a while (longer with
  // more raft groups to place), and raising it again meanwhile would first scale it back down
  // to what it has so far, so it never got there.
  std::map<std::string, clock::time_point> consumer_raised;
  std::string last_raiser;  // consumer_raiser() at the last read that named one
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stop_) break;
    }
    if (!connection) {
      if (natsStatus s = connection.open(url_, {.reconnect_forever = true, .timeout = std::chrono::milliseconds(2000)});
          s != NATS_OK) {
        if (!warned) log::warn("cluster: cannot reach NATS at " + url_ + ": " + natsStatus_GetText(s) + "; retrying");
        warned = true;
        if (!pause(retry_delay(failures++))) break;
        continue;
      }
      failures = 0;
      interrupter_.publish(connection.nc());
    }
    jsCtx* js = connection.js();
    if (!kv) {
      // Every object, each with the replicas promised. Until enough servers are there the
      // jobs stream is missing and a submit retries (no responders) instead of being stored
      // on fewer servers than promised.
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - began);
      bool all = true;
      for (const auto& o : shared_objects) {
        if (exists(js, o)) continue;
        std::string why;
        bool made = false;
        for (int r : replicas_to_try(replicas_, waited)) {
          if (!create(js, o, r, replicas_.want, why)) continue;
          made = true;
          std::string what = std::string(o.bucket ? "bucket " : "stream ") + o.name;
          if (r < replicas_.want)
            log::warn("cluster: created " + what + " with only " + std::to_string(r) + " of " +
                      std::to_string(replicas_.want) + " replicas: not enough JetStream servers within --replicas-wait " +
                      std::to_string(replicas_.patience.count() / 1000) + " s (" + why +
                      "); it grows as soon as they are there, and until then losing a server can lose or stop jobs");
          else
            log::info("cluster: created " + what + " with " + std::to_string(r) + " replicas");
          break;
        }
        if (!made) {
          all = false;
          if (clock::now() - last_waiting_note > std::chrono::seconds(10)) {
            last_waiting_note = clock::now();
            log::warn("cluster: waiting for " + std::to_string(replicas_.want) + " JetStream servers to create " +
                      (o.bucket ? "bucket " : "stream ") + o.name + " with " + std::to_string(replicas_.want) +
                      " replicas (--replicas): " + why + "; no job is stored until then (submitters retry); " +
                      (replicas_.patience.count() == 0
                           ? std::string("--replicas-wait 0: it waits as long as it takes")
                           : "after --replicas-wait " + std::to_string(replicas_.patience.count() / 1000) +
                                 " s it starts with fewer"));
          }
          break;  // in order: the jobs stream first
        }
      }
      if (all && js_KeyValue(&kv, js, nodes_bucket) != NATS_OK) kv = nullptr;
      if (kv) log::info("cluster: node " + node_ + " joined through " + url_);
    }
    if (kv) {
      std::string snapshot;
      {
        std::lock_guard lock(mutex_);
        snapshot = snapshot_;
      }
      boost::system::error_code ec;
      auto beat = boost::json::parse(snapshot, ec);
      if (!ec && beat.is_object()) {  // first, so a slow JetStream read below never delays it
        beat.as_object()["streams"] = durability_json(streams());
        uint64_t rev = 0;
        kvStore_PutString(&rev, kv, node_.c_str(), boost::json::serialize(beat).c_str());
      }
      auto standing = read_durability(js);
      int up = 0;
      boost::json::array members;
      auto nodes = read_nodes(js, kv, node_down_after_s);
      for (const auto& n : nodes) {
        if (n.as_object().at("state") == "up") ++up;
        members.push_back(member_summary(n.as_object()));
      }
      // A consumer is raised only once its stream has the servers: nats-server scales
      // consumers with the stream it raises, and the durability tests check that it did.
      bool stream_whole = !standing.empty() && standing.front().name == jobs_stream &&
                          standing.front().has >= replicas_.want;
      // The role moves when the raiser's heartbeat is late (a loop slowed by elections, whose
      // raise may still be under way): the new raiser first waits as long as a raise's patience.
      std::string raiser = consumer_raiser(nodes);
      if (raiser == node_ && !last_raiser.empty() && last_raiser != node_)
        for (const auto& d : standing) consumer_raised[d.name] = clock::now();
      if (!raiser.empty()) last_raiser = raiser;
      for (const auto& d : standing) {
        if (d.has == 0 || d.has >= replicas_.want) continue;
        if (d.kind != "consumer") raise(js, d.name, replicas_.want);
        else if (stream_whole && raiser == node_ && clock::now() - consumer_raised[d.name] > consumer_raise_patience) {
          raise_consumer(js, d.name, d.has, replicas_.want);
          consumer_raised[d.name] = clock::now();
        }
      }
      if (++ticks % 5 == 0) {
        std::string which;
        if (int n = sweep_stranded_jobs(js, 256, which); n > 0)
          log::warn("cluster: " + std::to_string(n) + " stored job(s) were delivered but JetStream no longer " +
                    "tracked them (they would never run); queued again: " + which);
      }
      std::lock_guard lock(mutex_);
      streams_ = std::move(standing);
      nodes_up_ = up;
      members_ = std::move(members);
    }
    if (!pause(kv ? std::chrono::milliseconds(1000) : retry_delay(failures++))) break;  // heartbeat every second
  }
  if (kv) kvStore_Destroy(kv);
  interrupter_.retract();
}

}  // namespace loopfleet::cluster
