// The one way loopfleet starts a child process, and the one reading of how it ended. Workers,
// nats-server, haproxy, keepalived and the offload helpers used to be forked in three places,
// each with its own copy of the rules every child needs (die with the parent, default signal
// dispositions, own process group, only async-signal-safe calls after fork, fds at 3..);
// a fix to one copy missed the others. After nginx's ngx_spawn_process, which serves every
// kind of child.
#pragma once

#include "runtime/user.hpp"

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace loopfleet {

struct spawn_spec {
  std::vector<std::string> argv;  // argv[0] is run as given: an absolute path (find_executable)
  std::string exec_path;          // run this instead of argv[0], which is then only the name shown
  std::vector<int> fds;           // become 3, 4, ... in the child; any other fd it gets is not ours
  // "KEY=VALUE" entries added to our environment; a KEY we have already is replaced, because
  // getenv would read the first of two and that is the inherited one.
  std::vector<std::string> env;
  // Names removed from our environment besides: what a child of this kind is given only
  // sometimes (a heartbeat fd), so that a value inherited from our own parent cannot stand in.
  std::vector<std::string> unset;
  bool listen_pid = false;       // LISTEN_PID=<the child's pid>, known only after fork
  const run_as* user = nullptr;  // --user: the child drops to it before exec
  // Sent to the child when we die, even by SIGKILL, so no child outlives its parent.
  int death_signal = SIGTERM;
  // A Ctrl-C at the terminal reaches only us, and we stop the children in order, instead of
  // every child at once.
  bool own_process_group = true;
  bool capture_output = false;  // stdout and stderr on pipes (spawned::out, err)
  // Instead of exec: run this in the forked child with the fds in place and every other fd
  // above 2 closed (an offload helper). It must not return.
  void (*run)() = nullptr;
  // What the child writes to its stderr when exec fails, before the path and the reason.
  const char* exec_failure = "loopfleet: cannot run ";
};

struct spawned {
  pid_t pid = -1;
  int out = -1;  // with capture_output: read ends of the child's stdout and stderr
  int err = -1;
};

// Throws std::system_error when fork or pipe fails. An exec failure shows up as the child's
// stderr line `exec_failure` + "PATH: reason" and exit code 127; a failure to become
// spec.user as "cannot become ...: reason" and exit code 126.
spawned spawn(const spawn_spec& spec);

// The absolute path `command` would run as (PATH search for a bare name), or empty.
std::string find_executable(const std::string& command);

// How a child ended, from its waitpid status: "exit code 3", "signal 9 (SIGKILL)".
std::string describe_exit(int wait_status);
// The same as a shell's $?: the exit code, or 128 + the signal.
int exit_code(int wait_status);

}  // namespace loopfleet
