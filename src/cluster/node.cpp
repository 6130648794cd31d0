#include "cluster/node.hpp"

#include "runtime/log.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <condition_variable>

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

void back_off_reconnects(natsOptions* opts) {
  natsOptions_SetCustomReconnectDelay(
      opts, [](natsConnection*, int attempts, void*) -> int64_t { return retry_delay(attempts).count(); }, nullptr);
}

int replicas_for(std::size_t peers) { return static_cast<int>(std::min<std::size_t>(3, peers + 1)); }

node_agent::node_agent(std::string url, std::string node, int replicas)
    : url_(std::move(url)), node_(std::move(node)), replicas_(replicas), thread_([this] { run(); }) {}

node_agent::~node_agent() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  thread_.join();
}

void node_agent::update(std::string snapshot) {
  std::lock_guard lock(mutex_);
  snapshot_ = std::move(snapshot);
}

namespace {

// Raises a stream's replicas to `want` once enough nodes are up: a cluster that started with
// fewer nodes than it was told to join gets its redundancy when they arrive.
void raise_replicas(jsCtx* js, const char* name, int want) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&si, js, name, nullptr, &err) != NATS_OK) return;
  if (si->Config->Replicas < want) {
    int had = static_cast<int>(si->Config->Replicas);
    si->Config->Replicas = want;
    jsStreamInfo* updated = nullptr;
    if (js_UpdateStream(&updated, js, si->Config, nullptr, &err) == NATS_OK) {
      log::info(std::string("cluster: stream ") + name + " now has " + std::to_string(want) + " replicas (had " +
                std::to_string(had) + ")");
      jsStreamInfo_Destroy(updated);
    }
  }
  jsStreamInfo_Destroy(si);
}

// Creates the stream if it is missing (an existing one is left as it is), with as many
// replicas as the servers up now allow, at most `replicas`.
bool ensure_stream(jsCtx* js, const char* name, const char* subject, jsRetentionPolicy retention, int replicas) {
  jsStreamInfo* si = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&si, js, name, nullptr, &err) == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return true;
  }
  natsStatus s = NATS_OK;
  for (int r = replicas; r >= 1; --r) {  // fewer servers up than expected: start smaller
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    const char* subjects[] = {subject};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = retention;
    cfg.Storage = js_FileStorage;
    cfg.Discard = js_DiscardNew;  // full: refuse new jobs (the submitter retries), never drop stored ones
    cfg.Replicas = r;
    cfg.Duplicates = static_cast<int64_t>(10) * 60 * 1000000000;  // idempotency keys hold 10 minutes
    s = js_AddStream(&si, js, &cfg, nullptr, &err);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      log::info(std::string("cluster: created stream ") + name + " with " + std::to_string(r) + " replicas");
      return true;
    }
  }
  log::warn(std::string("cluster: cannot create stream ") + name + ": " + natsStatus_GetText(s) + " (JetStream error " +
            std::to_string(err) + "); retrying");
  return false;
}

}  // namespace

void node_agent::run() {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  kvStore* kv = nullptr;
  bool ready = false;
  // Sleeps `ms` in steps that notice a stop; false when stopping.
  auto pause = [this](std::chrono::milliseconds ms) {
    for (auto slept = std::chrono::milliseconds(0); slept < ms; slept += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard lock(mutex_);
      if (stop_) return false;
    }
    return true;
  };
  int failures = 0;  // in a row, for the backoff
  bool warned = false;
  int ticks = 0;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stop_) break;
    }
    if (!nc) {
      natsOptions* opts = nullptr;
      natsOptions_Create(&opts);
      natsOptions_SetURL(opts, url_.c_str());
      natsOptions_SetMaxReconnect(opts, -1);
      back_off_reconnects(opts);
      natsOptions_SetTimeout(opts, 2000);
      natsStatus s = natsConnection_Connect(&nc, opts);
      natsOptions_Destroy(opts);
      if (s != NATS_OK) {
        if (!warned) log::warn("cluster: cannot reach NATS at " + url_ + ": " + natsStatus_GetText(s) + "; retrying");
        warned = true;
        nc = nullptr;
        if (!pause(retry_delay(failures++))) break;
        continue;
      }
      natsConnection_JetStream(&js, nc, nullptr);
      failures = 0;
    }
    if (!ready) {
      bool streams = ensure_stream(js, jobs_stream, "loopfleet.job.>", js_WorkQueuePolicy, replicas_) &&
                     ensure_stream(js, dead_stream, "loopfleet.dead.>", js_LimitsPolicy, replicas_);
      if (streams && !kv && js_KeyValue(&kv, js, nodes_bucket) != NATS_OK) {
        kv = nullptr;
        natsStatus s = NATS_OK;
        for (int r = replicas_; r >= 1 && !kv; --r) {  // as many replicas as the servers up allow
          kvConfig kc;
          kvConfig_Init(&kc);
          kc.Bucket = nodes_bucket;
          kc.History = 1;
          // Heartbeats in memory: membership keeps working when the jobs fill the disk store.
          kc.StorageType = js_MemoryStorage;
          kc.Replicas = r;
          s = js_CreateKeyValue(&kv, js, &kc);
          if (s != NATS_OK) kv = nullptr;
        }
        if (!kv) log::warn(std::string("cluster: cannot create the nodes bucket: ") + natsStatus_GetText(s) + "; retrying");
      }
      ready = streams && kv;
      if (ready) log::info("cluster: node " + node_ + " joined through " + url_);
    }
    if (ready) {
      std::string snapshot;
      {
        std::lock_guard lock(mutex_);
        snapshot = snapshot_;
      }
      uint64_t rev = 0;
      if (!snapshot.empty()) kvStore_PutString(&rev, kv, node_.c_str(), snapshot.c_str());
      if (++ticks % 5 == 0) {  // nodes that joined late: replicate onto them
        raise_replicas(js, jobs_stream, replicas_);
        raise_replicas(js, dead_stream, replicas_);
        raise_replicas(js, (std::string("KV_") + nodes_bucket).c_str(), replicas_);
      }
    }
    if (!pause(ready ? std::chrono::milliseconds(1000) : retry_delay(failures++))) break;  // heartbeat every second
  }
  if (kv) kvStore_Destroy(kv);
  if (js) jsCtx_Destroy(js);
  if (nc) natsConnection_Destroy(nc);
}

}  // namespace loopfleet::cluster
