// `--user USER[:GROUP]`: the identity every child (workers, their offload helpers, the node's
// nats-server) runs as, while the supervisor keeps root for what only it does. Names are
// resolved here, at configuration time: after fork only async-signal-safe calls are allowed,
// and getpwnam may open files, take locks and allocate. In the runtime because the one spawn
// (spawn.hpp) drops to it and the private directories are checked against it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet {

struct run_as {
  std::string spec;  // as given, for messages
  std::string name;  // the user's name ("" for a uid with no entry in the user database)
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // the supplementary groups, set with setgroups (the gid not repeated)
};

// Resolves "USER", "USER:GROUP", "UID:GID" (numbers need no database entry). Supplementary
// groups: USER alone gets the user's groups from the group database (what login, nginx's
// initgroups and systemd's User= give), so group-granted access (a key readable by
// ssl-cert) keeps working; USER:GROUP gets that group and no supplementary ones. Either way
// nothing of the supervisor's own groups survives. Returns a one-line error naming the fix.
std::optional<std::string> resolve_user(std::string_view spec, run_as& out);

// In a forked child, before exec: groups, then gid, then uid (after setuid it could change
// neither). Async-signal-safe. Returns false with errno set.
bool become_user(const run_as& who);

}  // namespace loopfleet
