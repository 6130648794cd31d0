// A NATS connection and its JetStream context. The workers' client, the node agent and the
// `loopfleet cluster`/`job` commands each hold one; they differ only in how patient and how
// blocking they may be, which is what connect_options says.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <mutex>
#include <string>

namespace loopfleet::cluster {

struct connect_options {
  // Once connected, reconnect for ever, waiting retry_delay(attempts) between tries (node.hpp).
  // Otherwise nats.c's defaults (60 tries, 2 s apart) hold.
  bool reconnect_forever = false;
  // Return at once and keep trying in the background (for a loop that must not block until
  // NATS answers); connect then succeeds with NATS_NOT_YET_CONNECTED.
  bool in_background = false;
  // Send each message at once rather than leave it to nats.c's flusher thread, which added
  // about a millisecond to every call's reply.
  bool send_asap = false;
  // How long one connection attempt may take; 0 leaves nats.c's default.
  std::chrono::milliseconds timeout{0};
};

class nats_connection {
 public:
  nats_connection() = default;
  nats_connection(const nats_connection&) = delete;
  nats_connection& operator=(const nats_connection&) = delete;
  nats_connection(nats_connection&& other) noexcept;
  nats_connection& operator=(nats_connection&& other) noexcept;
  ~nats_connection();

  // Connects to `url`, one URL or several comma-separated (closing what this held). Returns
  // nats.c's status: NATS_OK, or NATS_NOT_YET_CONNECTED in the background; on anything else
  // this holds nothing.
  natsStatus open(const std::string& url, const connect_options& options);
  void close();

  explicit operator bool() const { return nc_ != nullptr; }
  natsConnection* nc() const { return nc_; }
  jsCtx* js() const { return js_; }

 private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

// Lets another thread close the connection a thread blocks on, so that stopping it does not
// wait out its calls: with NATS gone, each JetStream request waits its whole timeout (5 s),
// and a node agent in the middle of its round of them held a supervisor's stop for over 30 s.
// The thread that owns the connection publishes it once open and retracts it before it is
// destroyed; interrupt() closes it (nats.c then fails the calls under way at once) and any
// connection published after.
class interrupter {
 public:
  void publish(natsConnection* nc);
  void retract();
  void interrupt();

 private:
  std::mutex mutex_;
  natsConnection* nc_ = nullptr;
  bool interrupted_ = false;
};

// The value of header `key` of `msg`, or "" when it has none.
std::string header(natsMsg* msg, const char* key);

}  // namespace loopfleet::cluster
