// Starting a worker: fork + exec with the listening sockets at fds 3.., the systemd
// variables (LISTEN_PID is only known in the child, hence fork rather than posix_spawn),
// and its stdout/stderr on pipes the supervisor reads.
#pragma once

#include "supervisor/user.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace loopfleet::supervisor {

struct spawn_spec {
  std::vector<std::string> argv;
  std::vector<int> fds;               // become 3, 4, ...
  std::vector<std::string> env;       // extra "KEY=VALUE" entries (LISTEN_FDS etc.)
  const run_as* user = nullptr;       // --user: the child drops to it before exec
};

struct spawned {
  pid_t pid = -1;
  int out = -1;  // read ends of the worker's stdout and stderr
  int err = -1;
};

// Throws std::system_error when fork or pipe fails. An exec failure shows up as the child's
// stderr line "cannot run ...: reason" and exit code 127; a failure to become spec.user as
// "cannot become ...: reason" and exit code 126.
spawned spawn_worker(const spawn_spec& spec);

// The absolute path `command` would run as (PATH search for a bare name), or empty.
std::string find_executable(const std::string& command);

// PYTHONPATH for workers: the folder holding loopfleet's Python package, found at
// <exe dir>/../lib/loopfleet/python (installed there, linked there in the build tree),
// ahead of `inherited`. Just `inherited` when the folder is missing.
std::string worker_python_path(const char* inherited);

}  // namespace loopfleet::supervisor
