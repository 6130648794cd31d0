#include "supervisor/cluster_member.hpp"
#include "supervisor/status_model.hpp"

#include "cluster/node.hpp"
#include "runtime/address.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "supervisor/policy.hpp"
#include "runtime/private_dir.hpp"
#include "supervisor/spawn.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace loopfleet::supervisor {

namespace key = status_key;

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::milliseconds;

cluster_member::cluster_member(asio::io_context& loop, const config& cfg, std::function<void()> on_ready)
    : loop_(loop), cfg_(cfg), on_ready_(std::move(on_ready)), timer_(loop) {}

cluster_member::~cluster_member() = default;

// The data dir belongs to the user nats-server runs as (--user, or ours): it writes there.
void cluster_member::prepare_data_dir(const config& cfg) {
  run_as owner = children_user(cfg);
  std::string chown = "chown -R " + std::to_string(owner.uid) + ":" + std::to_string(owner.gid) + " " + cfg.data_dir;
  std::string fix = chown + " if its jobs are yours, or choose another --data-dir";
  if (auto err = ensure_private_dir("data directory", cfg.data_dir, owner, fix)) throw startup_error(*err);
  // A store written by another user earlier (a run without --user) is not nats-server's now.
  std::string store = cfg.data_dir + "/jetstream";
  if (struct stat st{}; ::lstat(store.c_str(), &st) == 0 && st.st_uid != owner.uid)
    throw startup_error("JetStream store " + store + " belongs to uid " + std::to_string(st.st_uid) +
                        ", but nats-server runs as uid " + std::to_string(owner.uid) + ": " + fix);
}

void cluster_member::start() {
  if (own_server() && predecessor_ && !predecessor_serves_) {
    log::info("cluster: the dead supervisor's nats-server (pid " + std::to_string(predecessor_) +
              ") is stopping; ours starts on the same ports and store once it has exited");
    asio::co_spawn(loop_, start_after_predecessor(), asio::detached);
    return;
  }
  if (own_server() && predecessor_) {
    log::info("cluster: the previous supervisor's nats-server (pid " + std::to_string(predecessor_) +
              ") serves this node until its workers have drained; ours starts on the same ports and store then");
    ready_ = true;  // it answers already: the workers and the agent connect to it now
    start_agent();
    on_ready_();
    asio::co_spawn(loop_, start_after_predecessor(), asio::detached);
    return;
  }
  if (own_server()) return start_server();
  start_agent();
  on_ready_();
}

// Not our child: a pidfd tells when it has exited (even unreaped), where waitpid cannot.
asio::awaitable<void> cluster_member::start_after_predecessor() {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, predecessor_, 0));
  if (fd >= 0) {
    asio::posix::stream_descriptor exited(loop_, fd);
    co_await exited.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable));
  }
  if (stopping_) co_return;
  log::info("cluster: the previous nats-server (pid " + std::to_string(predecessor_) + ") has exited; starting ours");
  predecessor_ = 0;
  start_server();
}

void cluster_member::start_server() {
  std::string conf = cfg_.data_dir + "/nats.conf";
  if (auto err = write_private_file(conf, cluster::server_config({cfg_.node, cfg_.nats_listen, cfg_.cluster_listen,
                                                                   cfg_.join, cfg_.data_dir + "/jetstream",
                                                                   cfg_.max_store}),
                                    children_user(cfg_))) {
    log::error("cluster: " + *err);
    return;
  }
  spawn_spec spec;
  spec.argv = {find_executable("nats-server"), "-c", conf};
  if (cfg_.run_user) spec.user = &*cfg_.run_user;
  spawned s;
  try {
    s = spawn_worker(spec);
  } catch (const std::exception& e) {
    log::error(std::string("cluster: cannot start nats-server: ") + e.what());
    return;
  }
  pid_ = s.pid;
  started_ = std::chrono::steady_clock::now();
  std::string tag = "nats pid " + std::to_string(s.pid) + " | ";
  out_ = std::make_shared<output_reader>(loop_, s.out, tag, nullptr);
  err_ = std::make_shared<output_reader>(loop_, s.err, tag, nullptr);
  out_->start();
  err_->start();
  log::info("cluster: started nats-server pid " + std::to_string(s.pid) + " for node " + cfg_.node + " (client " +
            cfg_.nats_listen + ", routes " + cfg_.cluster_listen + ", " + std::to_string(cfg_.join.size()) +
            " peers to join)");
  asio::co_spawn(loop_, wait_until_accepting(s.pid), asio::detached);
}

// nats-server sends no readiness signal: it is ready when its client port accepts.
asio::awaitable<void> cluster_member::wait_until_accepting(pid_t pid) {
  auto a = std::get<listen_address>(parse_listen_address(cfg_.nats_listen));
  boost::system::error_code ec;
  asio::ip::tcp::endpoint port{asio::ip::make_address(a.host == "0.0.0.0" ? "127.0.0.1" : a.host, ec), a.port};
  asio::steady_timer poll(loop_);
  for (int attempt = 0;; ++attempt) {
    poll.expires_after(milliseconds(50));
    co_await poll.async_wait(asio::as_tuple(asio::use_awaitable));
    if (pid_ != pid || stopping_) co_return;  // it exited meanwhile; a successor has its own wait
    asio::ip::tcp::socket probe(loop_);
    auto [cec] = co_await probe.async_connect(port, asio::as_tuple(asio::use_awaitable));
    if (!cec) break;
    if (attempt == 200) log::warn("cluster: nats-server is not accepting on " + cfg_.nats_listen + " after 10 s");
  }
  bool first = !ready_;
  ready_ = true;
  log::info("cluster: nats-server ready on " + cfg_.nats_listen);
  if (first) {
    start_agent();
    on_ready_();
  }
}

void cluster_member::begin_stop() {
  stopping_ = true;
  timer_.cancel();
}

void cluster_member::on_exit(int status) {
  if (out_) out_->drain_now();
  if (err_) err_->drain_now();
  auto uptime = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started_);
  pid_ = 0;
  if (stopping_) {
    log::info("cluster: nats-server exited: " + describe_exit(status));
    return;
  }
  backoff_policy policy{cfg_.backoff_initial, cfg_.backoff_max, cfg_.healthy_after, cfg_.degraded_after};
  auto d = decide_restart(policy, failures_, uptime);
  failures_ = d.failures;
  ++restarts_;
  log::warn("cluster: nats-server exited: " + describe_exit(status) + " after " + ms_text(uptime) + "; restarting in " +
            ms_text(d.delay));
  timer_.expires_after(d.delay);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !stopping_) start_server();
  });
}

bool cluster_member::stop_server() {
  begin_stop();
  if (!pid_) return false;
  ::kill(pid_, SIGTERM);
  return true;
}

void cluster_member::start_agent() {
  std::vector<cluster::schedule> fixed;  // checked when the config was read
  for (const auto& entry : cfg_.schedule)
    if (cluster::schedule s; !cluster::parse_schedule_entry(entry, s)) fixed.push_back(std::move(s));
  agent_ = std::make_unique<cluster::node_agent>(
      nats_url(cfg_), cfg_.node,
      cluster::replica_settings{cfg_.replicas > 0 ? cfg_.replicas : cluster::replicas_for(cfg_.join.size()),
                                cfg_.replicas_wait},
      std::move(fixed));
}

void cluster_member::publish(const json::object& heartbeat, bool now) {
  if (agent_) agent_->update(json::serialize(heartbeat), now);
}

void cluster_member::stop_agent() { agent_.reset(); }

json::object cluster_member::status() const {
  return json::object{{key::node, cfg_.node},
                      {key::nats, nats_url(cfg_)},
                      {key::nats_pid, pid_ ? json::value(pid_) : json::value(nullptr)},
                      {key::nats_ready, ready_},
                      {key::nats_restarts, restarts_},
                      {key::peers, json::value_from(cfg_.join)},
                      {key::nodes, agent_ ? agent_->nodes_up() : 0},
                      {key::members, agent_ ? agent_->members() : json::array()},
                      {key::streams, agent_ ? cluster::durability_json(agent_->streams()) : json::array()}};
}

}  // namespace loopfleet::supervisor
