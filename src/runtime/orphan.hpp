// A worker that outlives its supervisor's crash.
//
// A worker dies with its supervisor by default (its parent-death signal, SIGTERM, drains it).
// When the supervisor runs a socket keeper (supervisor/keeper.hpp), its sockets outlive it,
// so a worker can too: it clears its parent-death signal, watches the supervisor through a
// pidfd instead, and when that dies it goes on serving what comes in, on the same sockets,
// until the supervisor started again has its own workers ready and sends it SIGTERM (a
// normal drain), or at most LOOPFLEET_ORPHAN_TIMEOUT_MS, after which it drains by itself, as
// the keeper lets the sockets go: nothing is left behind when nobody comes back.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace loopfleet {

class parent_watch {
 public:
  // Null unless the supervisor set LOOPFLEET_SUPERVISOR_PID and LOOPFLEET_ORPHAN_TIMEOUT_MS
  // (the variables are taken out of the environment either way). `orphaned` runs on `loop`
  // when the supervisor dies, with the longest time to serve on.
  using orphaned_fn = std::function<void(int supervisor, std::chrono::milliseconds serve_for)>;
  static std::unique_ptr<parent_watch> from_environment(boost::asio::io_context& loop, orphaned_fn orphaned);
  ~parent_watch();

 private:
  struct impl;
  explicit parent_watch(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace loopfleet
