// Connections handed from the supervisor to a worker.
//
// In reuseport mode each slot has its own accept queue. When a slot's loop stops turning, or
// the slot has no worker for a moment, what already waits in its queue would wait for that
// loop or its replacement. The supervisor holds every slot's listening socket, so it accepts
// those connections itself and passes each to a serving worker over a Unix SOCK_SEQPACKET
// socket (SCM_RIGHTS): nothing waits on a dead or stalled loop, and nothing is reset.
//
// The contract, for both sides: the worker finds its end of the socket in LOOPFLEET_HANDOFF_FD
// and says it takes connections by adding X_LOOPFLEET_HANDOFF=1 to its READY=1 datagram (the
// supervisor sends nothing to a worker that does not). One message is one connection: the
// index of the listener it was queued on (the LISTEN_FDS order) and, as ancillary data, its fd.
#pragma once

#include "runtime/worker_env.hpp"

#include <cstdint>
#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace loopfleet::handoff {

inline constexpr const char* fd_env = worker_env::handoff_fd;
inline constexpr const char* ready_key = "X_LOOPFLEET_HANDOFF=1";

// Sends connection `fd` (kept open: the caller closes its copy) without blocking. False with
// errno set when the worker's end is full (EAGAIN) or gone (EPIPE, ECONNRESET).
bool send(int channel, std::uint32_t listener, int fd);

// Receives one connection without blocking: its fd (close-on-exec), or -1 with errno EAGAIN
// when none waits, or -1 with errno 0 when the supervisor's end is closed.
int receive(int channel, std::uint32_t& listener);

// The worker side: reads the channel named by LOOPFLEET_HANDOFF_FD on `loop` and gives each
// connection to `adopt`, which owns the fd from then on.
class receiver {
 public:
  using adopt_fn = std::function<void(std::uint32_t listener, int fd)>;
  // Null when this worker was given no channel (not under loopfleet run).
  static std::unique_ptr<receiver> from_environment(boost::asio::io_context& loop, adopt_fn adopt);
  ~receiver();
  // Stops taking connections (a draining worker gets none): the supervisor then sends to
  // others. Those it had sent already are adopted first, so the drain serves them.
  void stop();

 private:
  struct impl;
  explicit receiver(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

// Takes the channel out of the environment and closes it: for a worker that cannot adopt
// connections (and so must not hold the socket, or pass it to its children).
void decline_from_environment();

}  // namespace loopfleet::handoff
