// The master: the one object that owns the supervisor's state and routes events to it. It
// lives on one single-threaded Asio loop; each long-lived activity (signals, the watchdog's
// checks, the notify listener, the control and agent-check servers, the cluster member) is a
// coroutine or component that calls back here, and every decision comes from policy.hpp.
// Its member functions are defined by topic:
//   master.cpp   start-up, signals, control requests, stop
//   workers.cpp  starting, readiness, exits and restarts, steering
//   watchdog.cpp stalled loops, recycling, handing over stalled queues
//   reload.cpp   reload (a new generation, committed or rolled back) and scale
//   upgrade.cpp  replacing this supervisor by a new binary (loopfleet upgrade, SIGUSR2), and
//                telling whoever started us (systemd, a predecessor) READY=1 and MAINPID=
//   recovery.cpp surviving our own crash: the socket keeper (keeper.hpp), kept told of us, and
//                adopting a dead predecessor's sockets from it at start-up
//   status.cpp   the status JSON and the cluster heartbeat
// Private to src/supervisor: supervisor.hpp is the public entry point.
#pragma once

#include "runtime/notify.hpp"
#include "supervisor/config.hpp"
#include "supervisor/fleet.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/queue_handoff.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace loopfleet::supervisor {

class admin_endpoint;
class agent_check_server;
class cluster_member;
class control_server;
class keeper_link;
class listen_sockets;
class notify_listener;
struct control_request;

using std::chrono::milliseconds;
using done_fn = std::function<void(bool ok, std::string message)>;

long rss_kib(pid_t pid);  // resident memory, from /proc (0 if gone)

class master {
 public:
  master(config cfg, std::vector<std::string> args);
  ~master();
  int run();

 private:
  // master.cpp
  void open_everything();  // throws startup_error
  void find_parent();
  boost::asio::awaitable<void> handle_signals();
  void on_signal(int sig);
  void on_control(const control_request& req, std::function<void(boost::json::object)> reply);
  void stop(bool fast);
  void stop_workers(bool fast);
  void finish();

  // workers.cpp
  void start_worker(int slot, role r);
  void schedule_restart(int slot, milliseconds delay);
  void reap();
  void on_exit(pid_t pid, int status);
  void restart_after_exit(const process& p, int status, milliseconds uptime, const std::string& reason);
  // Records a worker that died before any worker was ever ready. When every slot has failed
  // so, the command is broken: stop with exit code 1 and its last stderr lines; returns true.
  bool first_start_failed(const process& p, const std::string& reason);
  void on_notify(pid_t pid, std::string_view message);
  void mark_ready(process& p);
  // Signals a worker to stop (SIGTERM drains) and SIGKILLs it if it outlives `grace`.
  void retire(process& p, int sig, milliseconds grace);
  void update_steering();

  // watchdog.cpp: every check_interval, stalled loops, request and memory limits.
  boost::asio::awaitable<void> watch();
  void check_workers();
  void on_stall(process& p, std::int64_t silent_ns);
  // Hands the connections queued on slots nobody accepts from to workers that serve.
  void hand_over_queues(std::int64_t now);
  void on_stack(pid_t pid, int slot, std::vector<std::string> lines);
  void recycle(int slot, const std::string& why);

  // reload.cpp
  void begin_reload(done_fn done);
  void commit_reload();
  void fail_reload(const std::string& reason);
  std::optional<std::string> scale(int n);

  // upgrade.cpp
  void begin_upgrade(std::string binary, done_fn done);
  void commit_upgrade();
  void fail_upgrade(const std::string& reason);
  // The predecessor's sockets by the name it gave them (a successor's start-up).
  std::vector<listener> take_handed_over(std::vector<listener> inherited);
  // Every socket we own, by the name a successor adopts it by (upgrade, keeper).
  std::vector<std::pair<int, std::string>> owned_sockets() const;
  // Says READY=1 to whoever started us (systemd, or a predecessor waiting to hand over) the
  // first time every slot serves.
  void tell_parent_if_all_ready();
  bool every_slot_ready();

  static void check_access_log(const config& c);

  // recovery.cpp
  // A fresh start: the sockets of a supervisor of this instance that died, from its keeper,
  // added to `inherited`. Throws startup_error when a live one owns the instance.
  void adopt_from_keeper(std::vector<listener>& inherited);
  // Once every slot of ours serves: the dead supervisor's workers drain (SIGTERM), and any
  // still running after --graceful-timeout is killed.
  void retire_orphans();
  void start_keeper();
  bool launch_keeper();  // a new keeper with every socket we own; false (logged) if it cannot start
  void keep_sockets();  // after a scale made new sockets
  void tell_keeper();   // when what the keeper knows of us changed
  boost::asio::awaitable<void> watch_keeper();

  // status.cpp
  boost::json::object status_json();
  // `now`: put at once, not at the next second (the stop: fronts must hear of it).
  void publish_heartbeat(bool now = false);
  // Where other machines reach this node's HTTP port and agent check (the heartbeat's "http"
  // and "agent"): worked out at the first heartbeat, once the sockets are bound.
  void find_advertised_addresses();

  // The worker count for `c`, and where it came from (shown by status).
  static int resolve_workers(const config& c, std::string& from);

  // Declared before loop_ so that it outlives the loop: destroying the loop ends the admin
  // server's connection coroutines, which detach from it.
  std::unique_ptr<admin_endpoint> admin_;
  boost::asio::io_context loop_{1};
  config cfg_;
  std::vector<std::string> args_;
  std::unique_ptr<listen_sockets> sockets_;
  boost::asio::signal_set signals_{loop_};
  std::unique_ptr<notify_listener> notify_;
  std::unique_ptr<control_server> control_;
  std::unique_ptr<agent_check_server> agent_check_;
  std::unique_ptr<cluster_member> cluster_;
  boost::asio::steady_timer front_drain_{loop_};
  boost::asio::steady_timer checks_{loop_};
  fleet fleet_;
  std::string workers_from_;
  int generation_ = 1;
  int reloads_ok_ = 0, reloads_failed_ = 0;
  bool stopping_ = false;
  bool finished_ = false;  // finish() ran to its end: the loop is stopping
  bool ever_ready_ = false;
  int exit_code_ = 0;
  std::string fatal_;  // printed after the loop when no worker ever became ready
  clock::time_point started_ = clock::now();
  int heartbeat_ticks_ = 0;
  int access_log_stdout_ = -1;  // our stdout, duplicated for workers with --access-log -
  struct {
    bool known = false;
    std::string http, agent, admin;  // HOST:PORT; empty = none to advertise
  } advertised_;
  queue_handoff handoff_;
  clock::time_point next_rss_check_{};
  std::mt19937 rng_{std::random_device{}()};

  struct reload_state {
    int generation;
    config old_cfg;
    int old_workers;
    std::string workers_from;  // the new generation's, until it commits
    std::vector<done_fn> waiters;
  };
  std::optional<reload_state> reload_;

  struct upgrade_state {
    pid_t pid;           // the new supervisor
    std::string binary;
    std::vector<done_fn> waiters;
  };
  std::optional<upgrade_state> upgrade_;
  boost::asio::steady_timer upgrade_deadline_{loop_};
  bool handed_over_ = false;  // a successor serves: drain, leave the sockets and their files to it
  // Who started us: a predecessor's notify socket (upgrade) or systemd's (Type=notify); told
  // READY=1 once. systemd_ stays for MAINPID= when we hand over.
  notifier parent_;
  notifier systemd_;
  std::string systemd_socket_;
  bool told_ready_ = false;
  // A predecessor's control, agent-check and admin sockets, adopted at start-up.
  std::optional<listener> inherited_control_, inherited_agent_check_, inherited_admin_;
  pid_t predecessor_nats_ = 0;  // its node's nats-server, until ours replaces it
  bool successor_ = false;      // started by a predecessor's upgrade

  std::unique_ptr<keeper_link> keeper_;
  std::string told_keeper_;     // the last state it was told
  std::vector<int> orphans_;    // pidfds of a dead predecessor's workers, still draining
  boost::asio::steady_timer orphan_deadline_{loop_};
};

}  // namespace loopfleet::supervisor
