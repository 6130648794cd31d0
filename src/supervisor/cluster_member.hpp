// The node's part in the cluster (--cluster): its nats-server, run as a supervised child
// unless --nats names an existing NATS, and the agent thread that publishes the node's
// heartbeat and keeps the shared streams at the replicas promised. The only file of the
// supervisor that includes the cluster layer.
#pragma once

#include "supervisor/config.hpp"
#include "supervisor/output_reader.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>

namespace loopfleet::cluster {
class node_agent;
}

namespace loopfleet::supervisor {

class cluster_member {
 public:
  // `cfg` is the supervisor's live config (a reload may change it). `on_ready` runs once,
  // when the node's NATS first answers: the workers connect to it as they start.
  cluster_member(boost::asio::io_context& loop, const config& cfg, std::function<void()> on_ready);
  ~cluster_member();
  // Checks the data directory belongs to the user nats-server will run as; throws startup_error.
  static void prepare_data_dir(const config& cfg);

  // Starts nats-server (own_server) or only the agent (--nats): calls on_ready when it can.
  void start();
  // loopfleet upgrade, in the successor: the predecessor's nats-server (pid `server`) serves
  // the node until the predecessor's workers have drained. start() then runs the agent and the
  // workers on it at once, and our own server starts on the same ports and store when it has
  // exited; the workers' NATS clients reconnect to it.
  // `server` is the previous supervisor's nats-server: still serving (an upgrade: its workers
  // drain first) or stopping (that supervisor died, and it got its parent-death signal).
  void follow(pid_t server, bool serving) {
    predecessor_ = server;
    predecessor_serves_ = serving;
  }
  pid_t server_pid() const { return pid_; }
  bool owns(pid_t pid) const { return pid && pid == pid_; }
  // The nats-server child exited: restarted with backoff, unless stopping.
  void on_exit(int status);
  // The instance stops: no more restarts.
  void begin_stop();
  // Asks nats-server to stop (it goes last: draining workers may still be acking jobs).
  // Returns false when there is no server left to wait for.
  bool stop_server();
  void publish(const boost::json::object& heartbeat, bool now = false);
  void stop_agent();
  boost::json::object status() const;

 private:
  bool own_server() const { return cfg_.nats.empty(); }
  void start_server();
  boost::asio::awaitable<void> wait_until_accepting(pid_t pid);
  boost::asio::awaitable<void> start_after_predecessor();
  void start_agent();

  boost::asio::io_context& loop_;
  const config& cfg_;
  std::function<void()> on_ready_;
  pid_t pid_ = 0;
  pid_t predecessor_ = 0;
  bool predecessor_serves_ = false;
  int failures_ = 0;
  int restarts_ = 0;
  bool ready_ = false;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point started_{};
  std::shared_ptr<output_reader> out_, err_;
  boost::asio::steady_timer timer_;
  std::unique_ptr<cluster::node_agent> agent_;
};

}  // namespace loopfleet::supervisor
