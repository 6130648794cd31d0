// Starting a worker (or the node's nats-server): the runtime's one spawn (runtime/spawn.hpp)
// with the worker's contract added, the listening sockets at fds 3.., LISTEN_PID (known only
// in the child, hence fork rather than posix_spawn), every worker variable of ours stripped
// from what is inherited, and its stdout/stderr on pipes the supervisor reads.
#pragma once

#include "runtime/spawn.hpp"

#include <string>

namespace loopfleet::supervisor {

// Throws std::system_error when fork or pipe fails. An exec failure shows up as the child's
// stderr line "cannot run ...: reason" and exit code 127; a failure to become spec.user as
// "cannot become ...: reason" and exit code 126.
spawned spawn_worker(const spawn_spec& spec);

// PYTHONPATH for workers: the folder holding loopfleet's Python package, found at
// <exe dir>/../lib/loopfleet/python (installed there, linked there in the build tree),
// ahead of `inherited`. Just `inherited` when the folder is missing.
std::string worker_python_path(const char* inherited);

}  // namespace loopfleet::supervisor
