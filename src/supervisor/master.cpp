#include "supervisor/master.hpp"

#include "runtime/error.hpp"
#include "runtime/listen_fds.hpp"
#include "runtime/log.hpp"
#include "supervisor/admin_endpoint.hpp"
#include "supervisor/agent_check.hpp"
#include "supervisor/cluster_member.hpp"
#include "supervisor/control_server.hpp"
#include "supervisor/cpus.hpp"
#include "supervisor/keeper.hpp"
#include "supervisor/notify_listener.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"
#include "supervisor/spawn.hpp"
#include "supervisor/supervisor.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <signal.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace loopfleet::supervisor {

namespace asio = boost::asio;
namespace json = boost::json;

master::master(config cfg, std::vector<std::string> args) : cfg_(std::move(cfg)), args_(std::move(args)) {}
master::~master() = default;

int master::resolve_workers(const config& c, std::string& from) {
  if (c.workers > 0) {
    from = "set by --workers or the config file";
    return c.workers;
  }
  auto count = auto_worker_count();
  from = std::move(count.why);
  return count.workers;
}

// The workers open --access-log themselves (as the --user they run as); it is opened here
// first so that a path nobody can write is a one-line start-up error rather than a crash loop,
// and a file created here is handed to that user.
void master::check_access_log(const config& c) {
  if (c.access_log.empty() || c.access_log == "-") return;
  bool existed = ::access(c.access_log.c_str(), F_OK) == 0;
  int fd = ::open(c.access_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    throw startup_error("--access-log " + c.access_log + ": cannot open it (" + std::strerror(errno) +
                        "): create its directory or choose another path");
  if (!existed && c.run_user && ::fchown(fd, c.run_user->uid, c.run_user->gid) != 0)
    log::warn("--access-log " + c.access_log + ": cannot hand it to --user " + c.user + ": " + std::strerror(errno));
  ::close(fd);
}

// Everything that can fail because of the user's input, in the order its errors make sense.
void master::open_everything() {
  // Sockets passed to us: systemd's (socket activation) or a predecessor's (upgrade.cpp), and
  // those a supervisor of this instance that died left with its keeper (recovery.cpp).
  auto inherited = adopt_listen_fds();
  keeper_ = std::make_unique<keeper_link>(cfg_.control + ".keeper", cfg_.name);
  if (!successor_) adopt_from_keeper(inherited);
  inherited = take_handed_over(std::move(inherited));
  control_ = std::make_unique<control_server>(
      loop_, cfg_.control, cfg_.name, [this](const control_request& req, auto reply) { on_control(req, reply); },
      inherited_control_ ? inherited_control_->fd : -1);
  if (cfg_.cluster && cfg_.nats.empty()) cluster_member::prepare_data_dir(cfg_);
  check_access_log(cfg_);
  sockets_ = std::make_unique<listen_sockets>(cfg_.distribution, cfg_.listen, cfg_.backlog, fleet_.workers, inherited);
  notify_ = std::make_unique<notify_listener>(loop_, [this](pid_t pid, std::string_view m) { on_notify(pid, m); });
  auto adopted = [](std::optional<listener>& l) { return l ? &*l : nullptr; };
  if (!cfg_.agent_check.empty())
    agent_check_ = std::make_unique<agent_check_server>(
        loop_, cfg_.agent_check, [this] { return agent_check_reply(fleet_.workers, fleet_.serving(), stopping_); },
        adopted(inherited_agent_check_));
  if (!cfg_.admin.empty())
    admin_ = std::make_unique<admin_endpoint>(
        loop_, cfg_.admin,
        [this] {
          json::object o = status_json();
          o["ok"] = true;  // as the control socket replies: what `loopfleet status --json` prints
          return o;
        },
        adopted(inherited_admin_));
}

int master::run() {
  log::set_name("loopfleet");
  ::signal(SIGPIPE, SIG_IGN);
  // Orphans of our workers (offload helpers whose worker died) become our children, so they
  // are reaped here and never linger as zombies of an init that does not reap.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  fleet_.workers = resolve_workers(cfg_, workers_from_);
  find_parent();
  try {
    open_everything();
  } catch (const startup_error& e) {
    std::fprintf(stderr, "loopfleet: error: %s\n", e.what());
    if (control_) control_->close();
    return 2;
  }
  if (cfg_.cluster && cfg_.nats.empty() && find_executable("nats-server").empty()) {
    std::fprintf(stderr, "loopfleet: error: nats-server not found: install it (scripts/install-deps.sh) or give "
                         "--nats nats://HOST:PORT of an existing NATS cluster\n");
    control_->close();
    return 2;
  }
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) signals_.add(sig);
  asio::co_spawn(loop_, handle_signals(), asio::detached);
  control_->start();
  if (agent_check_) agent_check_->start();
  notify_->start();
  log::info("instance '" + cfg_.name + "' serving " + sockets_->describe() + " with " + std::to_string(fleet_.workers) +
            " workers" + (cfg_.workers > 0 ? "" : " (" + workers_from_ + ")") +
            (cfg_.run_user ? " as " + cfg_.user : "") + ", " +
            (cfg_.distribution == distribution::reuseport ? "reuseport" : "shared") + " distribution; control socket " +
            cfg_.control);
  fleet_.slots.resize(fleet_.workers);
  auto start_all = [this] {
    if (stopping_) return;
    publish_heartbeat();
    for (int i = 0; i < fleet_.workers; ++i)
      if (!fleet_.slots[i].current) start_worker(i, role::current);
  };
  if (cfg_.cluster) {
    // Workers start once the node's NATS answers: they connect to it at start-up.
    cluster_ = std::make_unique<cluster_member>(loop_, cfg_, start_all);
    if (predecessor_nats_) cluster_->follow(predecessor_nats_, successor_);
    cluster_->start();
  } else {
    start_all();
  }
  asio::co_spawn(loop_, watch(), asio::detached);
  start_keeper();
  loop_.run();
  if (admin_) admin_->close();
  if (cluster_) cluster_->stop_agent();
  if (!fatal_.empty()) std::fprintf(stderr, "%s", fatal_.c_str());
  return exit_code_;
}

asio::awaitable<void> master::handle_signals() {
  for (;;) {
    auto [ec, sig] = co_await signals_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    on_signal(sig);
  }
}

void master::on_signal(int sig) {
  switch (sig) {
    case SIGCHLD:
      reap();
      break;
    case SIGHUP:
      begin_reload([](bool, std::string) {});
      break;
    case SIGUSR1:
      // nginx's "reopen the logs": ours need no signal (the workers reopen a moved
      // --access-log within a second), but its default action must not end the supervisor.
      log::info("SIGUSR1: nothing to do: workers reopen --access-log by themselves within a second of a rotation");
      break;
    case SIGUSR2:
      log::info("SIGUSR2: upgrading to the loopfleet binary on disk");
      begin_upgrade({}, [](bool, std::string) {});
      break;
    case SIGQUIT:
      log::info("SIGQUIT: fast stop");
      stop(true);
      break;
    case SIGINT:
      if (stopping_) {
        log::warn("second SIGINT: fast stop");
        stop(true);
        break;
      }
      [[fallthrough]];
    case SIGTERM:
      log::info(std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") + ": graceful stop");
      stop(false);
      break;
  }
}

void master::on_control(const control_request& req, std::function<void(json::object)> reply) {
  switch (req.command) {
    case control_request::kind::status: {
      json::object o = status_json();
      o["ok"] = true;
      return reply(std::move(o));
    }
    case control_request::kind::reload:
      log::info("reload requested over the control socket");
      return begin_reload([reply](bool good, std::string message) { reply(control_reply(good, std::move(message))); });
    case control_request::kind::stop:
      log::info("stop requested over the control socket");
      reply(control_reply(true, "stopping"));
      return asio::post(loop_, [this] { stop(false); });
    case control_request::kind::upgrade:
      log::info("upgrade requested over the control socket");
      return begin_upgrade(req.binary,
                           [reply](bool good, std::string message) { reply(control_reply(good, std::move(message))); });
    case control_request::kind::scale: {
      auto err = scale(req.workers);
      return reply(err ? control_reply(false, *err)
                       : control_reply(true, "scaled to " + std::to_string(req.workers) + " workers"));
    }
  }
}

void master::stop(bool fast) {
  if (stopping_ && !fast) return;
  stopping_ = true;
  publish_heartbeat(true);  // a front following the cluster empties our slot once we are gone
  if (cluster_) cluster_->begin_stop();
  if (reload_) fail_reload("the instance is stopping");
  if (upgrade_) {
    ::kill(upgrade_->pid, SIGTERM);
    fail_upgrade("the instance is stopping");
  }
  // Behind HAProxy: the agent check now says "drain". The workers keep serving while the
  // balancers notice (their agent-inter) and send new connections to other nodes; stopping
  // them at once would reset what the balancers still send here.
  if (!fast && !handed_over_ && agent_check_ && cfg_.front_drain.count() > 0) {
    log::info("telling the front to drain; the workers stop in " + ms_text(cfg_.front_drain));
    front_drain_.expires_after(cfg_.front_drain);
    front_drain_.async_wait([this](boost::system::error_code ec) {
      if (!ec) stop_workers(false);
    });
    return;
  }
  front_drain_.cancel();
  stop_workers(fast);
}

void master::stop_workers(bool fast) {
  for (auto& s : fleet_.slots)
    if (s.restart) s.restart->cancel();
  // A fast stop still bounds the wait: SIGQUIT, then SIGKILL after a second.
  for (auto& [pid, p] : fleet_.processes())
    retire(*p, fast ? SIGQUIT : SIGTERM, fast ? milliseconds(1000) : cfg_.graceful_timeout);
  if (fleet_.processes().empty()) finish();
}

void master::finish() {
  if (finished_) return;
  // The node's NATS server goes last: draining workers may still be acknowledging jobs.
  if (cluster_ && cluster_->stop_server()) return;  // finish() again when it has exited
  finished_ = true;
  front_drain_.cancel();
  checks_.cancel();
  if (agent_check_) agent_check_->close();
  if (handed_over_) control_->release();  // its file is the successor's now
  else control_->close();
  keeper_->bye();
  log::info(handed_over_ ? "stopped: the successor serves" : "stopped");
  loop_.stop();
}

int run(config cfg, std::vector<std::string> args) {
  master m(std::move(cfg), std::move(args));
  return m.run();
}

}  // namespace loopfleet::supervisor
