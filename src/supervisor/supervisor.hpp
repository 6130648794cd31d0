// `loopfleet run`: the supervisor's entry point. One single-threaded Asio loop reacts to
// signals (SIGCHLD, SIGTERM/SIGINT, SIGHUP, SIGQUIT), to the workers' notify datagrams, to
// their output pipes, to timers and to the control socket (master.hpp); decisions come from
// policy.hpp.
#pragma once

#include "supervisor/config.hpp"

#include <string>
#include <vector>

namespace loopfleet::supervisor {

// Runs until stopped. `args` are the original `run` arguments, re-parsed on reload.
// Returns the process exit code: 0 after a stop, 1 if no worker ever became ready,
// 2 on a start-up error (printed as one line).
int run(config cfg, std::vector<std::string> args);

}  // namespace loopfleet::supervisor
