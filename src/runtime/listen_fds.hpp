// Adopting listening sockets by systemd's socket-activation rules (sd_listen_fds(3)):
// the parent passes N sockets as fds 3..3+N-1, sets LISTEN_FDS=N, LISTEN_PID to the child's
// pid (so a grandchild that inherits the environment does not take them too) and optionally
// LISTEN_FDNAMES=name1:name2:... .
#pragma once

#include <loopfleet/runtime.hpp>

#include <string>
#include <sys/types.h>
#include <variant>
#include <vector>

namespace loopfleet {

inline constexpr int listen_fds_start = 3;

struct inherited_fds {
  std::vector<int> fds;
  std::vector<std::string> names;  // one per fd; "unknown" where none was given, as systemd does
};

// The rules alone, on the variables' values (nullptr = unset): no sockets unless LISTEN_PID
// names `self` and LISTEN_FDS is a count. Returns an error sentence when the variables are
// malformed.
std::variant<inherited_fds, std::string> read_listen_fds(const char* listen_pid, const char* listen_fds,
                                                          const char* listen_fdnames, pid_t self);

// Applies the rules to this process: checks that each fd is a listening stream socket, marks
// it close-on-exec and removes the variables from the environment, so that nothing this
// worker starts inherits them. Throws startup_error on a malformed or unusable hand-over.
std::vector<listener> adopt_listen_fds();

// One socket handed over by other means (the supervisor's keeper), checked as above.
listener adopt_listener(int fd, std::string name);

}  // namespace loopfleet
