// The master's binary upgrade (loopfleet upgrade, SIGUSR2), after nginx's USR2: this
// supervisor starts the new binary with the same `run` arguments and hands it every socket it
// owns (LISTEN_FDS, each named, so the reuseport groups keep their places), the control socket
// included. The successor starts its own workers on the very sockets; only when every one of
// them is READY does it say READY=1 to us; then our workers drain and we exit, and no queue is
// ever closed. A successor that exits first, or is not ready in time, is rolled back: ours
// never stopped serving. Under systemd we tell it MAINPID= of the successor. A cluster node's
// nats-server keeps serving (our draining workers still ack jobs on it) and stops last, as in
// any stop; the successor's own starts on its ports and store once it has exited.
#include "supervisor/master.hpp"

#include "runtime/log.hpp"
#include "runtime/spawn.hpp"
#include "supervisor/admin_endpoint.hpp"
#include "supervisor/agent_check.hpp"
#include "supervisor/cluster_member.hpp"
#include "supervisor/control_server.hpp"
#include "supervisor/keeper.hpp"
#include "supervisor/notify_listener.hpp"
#include "supervisor/sockets.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

namespace loopfleet::supervisor {

namespace {

constexpr const char* control_name = socket_name::control;
constexpr const char* agent_check_name = socket_name::agent_check;
constexpr const char* admin_name = socket_name::admin;
constexpr const char* generation_env = "LOOPFLEET_UPGRADE_GENERATION";
constexpr const char* systemd_env = "LOOPFLEET_SYSTEMD_NOTIFY";
constexpr const char* nats_env = "LOOPFLEET_UPGRADE_NATS_PID";

// The binary this process was started from, as it is on disk now: a package upgrade replaces
// the file, and /proc says "(deleted)" of the one we run.
std::string own_binary() {
  char path[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return {};
  std::string p(path, static_cast<std::size_t>(n));
  if (p.ends_with(" (deleted)")) p.erase(p.size() - 10);
  return p;
}

}  // namespace

// Who started us, told when every slot serves (tell_parent_if_all_ready): systemd with
// Type=notify, or a predecessor handing over. systemd stays known across upgrades, so the
// last supervisor can still name itself its main pid.
void master::find_parent() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  std::string parent_socket = socket ? socket : "";
  parent_ = notifier::from_environment();
  if (const char* s = std::getenv(systemd_env)) {
    systemd_socket_ = s;
    ::unsetenv(systemd_env);
  } else if (!std::getenv(generation_env)) {
    systemd_socket_ = parent_socket;
  }
  if (!systemd_socket_.empty()) systemd_ = notifier(systemd_socket_, std::chrono::microseconds(0));
  successor_ = std::getenv(generation_env) != nullptr;
}

std::vector<std::pair<int, std::string>> master::owned_sockets() const {
  auto out = sockets_->handover();
  out.emplace_back(control_->native_handle(), control_name);
  if (agent_check_) out.emplace_back(agent_check_->native_handle(), agent_check_name);
  if (admin_) out.emplace_back(admin_->native_handle(), admin_name);
  return out;
}

std::vector<listener> master::take_handed_over(std::vector<listener> inherited) {
  std::vector<listener> rest;
  for (auto& l : inherited) {
    if (l.name == control_name) inherited_control_ = l;
    else if (l.name == agent_check_name) inherited_agent_check_ = l;
    else if (l.name == admin_name) inherited_admin_ = l;
    else rest.push_back(std::move(l));
  }
  if (const char* g = std::getenv(generation_env)) {
    generation_ = std::atoi(g) + 1;  // the generations go on across the upgrade
    ::unsetenv(generation_env);
  }
  if (const char* n = std::getenv(nats_env)) {
    predecessor_nats_ = static_cast<pid_t>(std::atoi(n));
    ::unsetenv(nats_env);
  }
  return rest;
}

bool master::every_slot_ready() {
  for (int i = 0; i < fleet_.workers; ++i)
    if (const process* p = fleet_.current(i); !p || !p->ready) return false;
  return true;
}

void master::tell_parent_if_all_ready() {
  if (told_ready_ || !every_slot_ready()) return;
  told_ready_ = true;
  if (parent_.enabled()) parent_.send("READY=1\nSTATUS=" + std::to_string(fleet_.workers) + " workers serving");
}

void master::begin_upgrade(std::string binary, done_fn done) {
  auto refuse = [&done](const std::string& err) {
    log::error("upgrade refused: " + err);
    done(false, err);
  };
  if (stopping_) return refuse("the instance is stopping");
  if (upgrade_) return refuse("an upgrade is already in progress (to pid " + std::to_string(upgrade_->pid) + ")");
  if (reload_) return refuse("a reload is in progress; upgrade after it");
  if (binary.empty()) binary = own_binary();
  struct stat st{};
  bool runnable = !binary.empty() && ::stat(binary.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                  (st.st_mode & 0111) && ::access(binary.c_str(), X_OK) == 0;  // root passes access() alone
  if (!runnable)
    return refuse("'" + binary + "' is not an executable loopfleet (give --binary PATH)");

  spawn_spec spec;
  spec.argv = {binary, "run"};
  spec.argv.insert(spec.argv.end(), args_.begin(), args_.end());
  std::string names;
  auto pass = [&](int fd, const std::string& name) {
    spec.fds.push_back(fd);
    names += (names.empty() ? "" : ":") + name;
  };
  for (const auto& [fd, name] : owned_sockets()) pass(fd, name);
  spec.env = {"LISTEN_FDS=" + std::to_string(spec.fds.size()), "LISTEN_FDNAMES=" + names,
              "NOTIFY_SOCKET=" + notify_->name(), std::string(generation_env) + "=" + std::to_string(generation_)};
  if (!systemd_socket_.empty()) spec.env.push_back(std::string(systemd_env) + "=" + systemd_socket_);
  if (cluster_ && cluster_->server_pid())
    spec.env.push_back(std::string(nats_env) + "=" + std::to_string(cluster_->server_pid()));
  spec.listen_pid = true;
  spec.death_signal = 0;            // it is to outlive us
  spec.own_process_group = false;   // where we were: the same terminal's Ctrl-C, the same unit
  spec.capture_output = false;      // our stdout and stderr: its log goes where ours went
  spawned s;
  try {
    s = spawn(spec);
  } catch (const std::exception& e) {
    return refuse(std::string("cannot start ") + binary + ": " + e.what());
  }
  upgrade_ = upgrade_state{s.pid, binary, {std::move(done)}};
  log::info("upgrade: started " + binary + " as pid " + std::to_string(s.pid) + " with every socket of ours; " +
            "this supervisor and its workers serve until all of its workers are ready");
  // Its workers must be ready within --ready-timeout; the rest is its own start-up.
  upgrade_deadline_.expires_after(cfg_.ready_timeout * 2 + std::chrono::seconds(10));
  upgrade_deadline_.async_wait([this](boost::system::error_code ec) {
    if (ec || !upgrade_) return;
    ::kill(upgrade_->pid, SIGTERM);  // it drains whatever its workers took
    fail_upgrade("the new supervisor (pid " + std::to_string(upgrade_->pid) + ") was not ready in time");
  });
}

void master::commit_upgrade() {
  upgrade_deadline_.cancel();
  auto u = std::move(*upgrade_);
  upgrade_.reset();
  handed_over_ = true;
  if (systemd_.enabled()) systemd_.send("MAINPID=" + std::to_string(u.pid));
  std::string msg = "upgraded: supervisor pid " + std::to_string(u.pid) + " (" + u.binary +
                    ") serves with its own workers; pid " + std::to_string(::getpid()) +
                    " drains its workers and exits";
  log::info("upgrade: " + msg);
  for (auto& w : u.waiters) w(true, msg);
  // The successor answers on the control and agent-check sockets from now on.
  control_->release();
  if (agent_check_) agent_check_->close();
  stop(false);
}

void master::fail_upgrade(const std::string& reason) {
  if (!upgrade_) return;
  upgrade_deadline_.cancel();
  auto u = std::move(*upgrade_);
  upgrade_.reset();
  std::string msg = "upgrade to " + u.binary + " rolled back, this supervisor (pid " + std::to_string(::getpid()) +
                    ") keeps serving: " + reason;
  log::error(msg);
  for (auto& w : u.waiters) w(false, msg);
}

}  // namespace loopfleet::supervisor
