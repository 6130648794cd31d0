// The socket keeper: what makes a supervisor's crash cost no queued connection.
//
// The supervisor owns every listening socket, and a socket whose last holder dies is closed,
// which resets every connection queued in it. So beside each supervisor runs a keeper, a
// small process (`loopfleet keeper`, started by the supervisor from its own binary) that holds
// a duplicate of every socket the supervisor owns and does nothing else: it cannot crash for
// the reasons a supervisor can (it runs no workers, reads no config, talks to no cluster, and
// its loop is a poll over a few sockets), and its holding them costs the kernel nothing. The supervisor stays connected to it
// on a SOCK_SEQPACKET socket beside the control socket (`<control>.keeper`):
//
// - The supervisor dies unexpectedly (SIGKILL, a segfault): the kernel closes its end without
//   a goodbye. The keeper keeps the sockets for --orphan-timeout; new connections wait in
//   their queues. Workers that can outlive the supervisor (runtime/orphan.hpp) serve on;
//   others get SIGTERM from the kernel (their parent-death signal) and drain. Meanwhile the
//   keeper answers the front's agent check itself: "drain", so that balancers send new
//   connections to nodes that have a supervisor.
// - The same `loopfleet run` is started again (by systemd, or by hand): before binding
//   anything it asks the keeper (ADOPT), receives every socket by the name a successor adopts
//   it by (as in an upgrade), and what the dead supervisor last said of itself: its generation,
//   its workers and its nats-server, by pid and start time, so that the new one can wait for
//   them and put down any that outlive their drain. It then owns the keeper.
// - Nobody comes back within --orphan-timeout: the keeper closes the sockets and exits, so
//   nothing is left behind forever.
// - A clean stop says BYE: the keeper closes its copies and exits, then the supervisor does.
//   A supervisor that handed over to its successor (loopfleet upgrade) says BYE too, but the
//   successor joined the same keeper (JOIN) first and owns it now, so it stays.
// - The keeper dies: the supervisor starts another with the same sockets.
//
// Under systemd, a .socket unit or the fd store (FDSTORE=1) plays the keeper's part: see
// docs/ARCHITECTURE.md.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loopfleet::supervisor {

// The names, besides the listeners' ("loopfleet-listen-A-S", sockets.hpp), that a successor
// (upgrade) and a keeper know the supervisor's sockets by.
namespace socket_name {
inline constexpr const char* control = "loopfleet-control";
inline constexpr const char* agent_check = "loopfleet-agent-check";
inline constexpr const char* admin = "loopfleet-admin";
}  // namespace socket_name

// What a supervisor tells its keeper of itself (STATE), for whoever adopts after its death.
// A process is named by pid and start time (/proc/PID/stat, field 22), so that a recycled
// pid is never mistaken for it.
struct proc_id {
  pid_t pid = 0;
  unsigned long long start = 0;
  bool operator==(const proc_id&) const = default;
};

struct keeper_state {
  int generation = 0;
  proc_id nats;                  // the node's nats-server; pid 0 when none
  std::vector<proc_id> workers;  // every worker process it had, current or draining
  bool operator==(const keeper_state&) const = default;
};

// "generation=3 nats=120:884 workers=130:900,131:901": parse_keeper_state reads what
// format_keeper_state writes and nothing else (nullopt), whatever the keeper was given.
std::string format_keeper_state(const keeper_state& s);
std::optional<keeper_state> parse_keeper_state(std::string_view text);

// The start time of a live process (clock ticks since boot), or 0 if there is none.
unsigned long long process_start(pid_t pid);
proc_id identify(pid_t pid);
// A pidfd for `id` if that very process still runs, else -1.
int open_if_same(const proc_id& id);

// The keeper process (`loopfleet keeper PATH TIMEOUT_MS NAME`): its socket comes first in
// LISTEN_FDS, named "loopfleet-keeper"; the rest are the sockets it keeps. Returns its exit code.
int run_keeper(std::vector<std::string_view> args);

// The supervisor's side: one connection to its keeper, owned for the supervisor's life.
class keeper_link {
 public:
  using sockets = std::vector<std::pair<int, std::string>>;  // fd, name
  struct adopted {
    sockets fds;                       // ours now (close-on-exec)
    std::optional<keeper_state> dead;  // what the dead supervisor last said of itself
    pid_t dead_pid = 0;
    std::chrono::milliseconds held{0};  // how long the keeper held them alone
    pid_t keeper = 0;
  };

  keeper_link(std::string path, std::string instance) : path_(std::move(path)), instance_(std::move(instance)) {}
  ~keeper_link();
  keeper_link(const keeper_link&) = delete;
  keeper_link& operator=(const keeper_link&) = delete;

  // A fresh start: takes over the sockets of a supervisor of this instance that died, if its
  // keeper still holds them. Throws startup_error if a live supervisor owns the keeper.
  std::optional<adopted> adopt();
  // An upgrade's successor: joins its predecessor's keeper (false if there is none).
  bool join();
  // Starts a keeper holding `fds` and joins it. Throws std::system_error.
  void start(const sockets& fds, std::chrono::milliseconds orphan_timeout);
  // Replaces the set the keeper holds (after a scale made new sockets).
  void keep(const sockets& fds);
  void tell(const keeper_state& s);
  // We stop cleanly. The keeper's last owner is answered by its exit, and this returns once
  // it has (at most ~12 s, if it hangs); a supervisor that handed over to its successor is
  // only let go.
  void bye();

  bool connected() const { return fd_ >= 0; }
  int native_handle() const { return fd_; }
  pid_t keeper_pid() const { return keeper_pid_; }
  // The keeper is gone (its end closed): forget it; start() makes another.
  void lost();

 private:
  bool connect();
  bool keeper_ends();
  void send(std::string_view text, const std::vector<int>& fds = {});
  std::string path_;
  std::string instance_;
  int fd_ = -1;
  pid_t keeper_pid_ = 0;
};

}  // namespace loopfleet::supervisor
