// Opening a NATS connection the way the cluster layer needs it (nats_connection.hpp).
#include "cluster/nats_connection.hpp"

#include "cluster/node.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

namespace loopfleet::cluster {

nats_connection::nats_connection(nats_connection&& other) noexcept
    : nc_(std::exchange(other.nc_, nullptr)), js_(std::exchange(other.js_, nullptr)) {}

nats_connection& nats_connection::operator=(nats_connection&& other) noexcept {
  if (this != &other) {
    close();
    nc_ = std::exchange(other.nc_, nullptr);
    js_ = std::exchange(other.js_, nullptr);
  }
  return *this;
}

nats_connection::~nats_connection() { close(); }

void interrupter::publish(natsConnection* nc) {
  std::lock_guard lock(mutex_);
  nc_ = nc;
  if (interrupted_ && nc_) natsConnection_Close(nc_);
}

void interrupter::retract() {
  std::lock_guard lock(mutex_);
  nc_ = nullptr;
}

void interrupter::interrupt() {
  std::lock_guard lock(mutex_);
  interrupted_ = true;
  if (nc_) natsConnection_Close(nc_);
}

void nats_connection::close() {
  if (js_) jsCtx_Destroy(std::exchange(js_, nullptr));
  if (nc_) natsConnection_Destroy(std::exchange(nc_, nullptr));
}

natsStatus nats_connection::open(const std::string& url, const connect_options& o) {
  close();
  // nats.c spins up to 2,000 times on a busy lock before it sleeps; with a worker's threads
  // (the loop, the journal's, nats.c's own reader and flusher) on few cores, the holder is
  // often not running, and the spinning was a tenth of a busy worker's CPU (perf, bench/workflows.py).
  static std::once_flag library;
  std::call_once(library, [] { nats_Open(0); });
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  // nats.c 3.4.1 reads "URL,URL" as one (malformed) URL and never connects: a list is servers.
  std::vector<std::string> urls;
  for (std::size_t at = 0; at <= url.size();) {
    auto comma = std::min(url.find(',', at), url.size());
    if (comma > at) urls.push_back(url.substr(at, comma - at));
    at = comma + 1;
  }
  std::vector<const char*> servers;
  for (const auto& u : urls) servers.push_back(u.c_str());
  if (servers.size() > 1) natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size()));
  else natsOptions_SetURL(opts, url.c_str());
  if (o.reconnect_forever) {
    natsOptions_SetMaxReconnect(opts, -1);
    natsOptions_SetCustomReconnectDelay(
        opts, [](natsConnection*, int attempts, void*) -> int64_t { return retry_delay(attempts).count(); }, nullptr);
  }
  if (o.timeout.count() > 0) natsOptions_SetTimeout(opts, o.timeout.count());
  if (o.in_background)
    // With a connected-callback, connect returns at once and keeps trying in the background.
    natsOptions_SetRetryOnFailedConnect(
        opts, true, [](natsConnection*, void*) { log::info("cluster: connected to NATS"); }, nullptr);
  if (o.send_asap) natsOptions_SetSendAsap(opts, true);
  natsStatus s = natsConnection_Connect(&nc_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK && !(o.in_background && s == NATS_NOT_YET_CONNECTED)) {
    nc_ = nullptr;
    return s;
  }
  natsConnection_JetStream(&js_, nc_, nullptr);
  return s;
}

std::string header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, key, &value) == NATS_OK && value ? value : "";
}

}  // namespace loopfleet::cluster
