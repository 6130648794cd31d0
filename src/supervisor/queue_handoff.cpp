#include "supervisor/queue_handoff.hpp"

#include "runtime/handoff.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace loopfleet::supervisor {
namespace {
// At most this many connections a call: the supervisor's loop has other work, and the next
// call comes one check interval later.
constexpr std::size_t per_call = 1024;
}  // namespace

int accept_queue_length(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  // For a listening socket the kernel reports its accept queue's length in tcpi_unacked.
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return static_cast<int>(info.tcpi_unacked);
}

queue_handoff::~queue_handoff() {
  for (auto& [listener, fd] : kept_) ::close(fd);
}

bool queue_handoff::send_somewhere(std::uint32_t listener, int fd, const std::vector<int>& targets) {
  for (std::size_t tried = 0; tried < targets.size(); ++tried) {
    int channel = targets[next_++ % targets.size()];
    if (handoff::send(channel, listener, fd)) {
      ::close(fd);  // the worker has its own copy now
      return true;
    }
  }
  return false;
}

std::size_t queue_handoff::take(const std::vector<std::pair<std::uint32_t, int>>& queues,
                                const std::vector<int>& targets) {
  if (targets.empty()) return 0;
  std::size_t sent = 0;
  while (!kept_.empty() && send_somewhere(kept_.front().first, kept_.front().second, targets)) {
    kept_.pop_front();
    ++sent;
  }
  if (!kept_.empty()) return sent;
  for (auto [listener, fd] : queues) {
    if (accept_queue_length(fd) == 0) continue;
    // The socket's blocking mode belongs to the open file, which the workers share: theirs
    // (Asio, asyncio, libuv) make it non-blocking, but one that never ran leaves it blocking,
    // and an accept that blocked would stop the supervisor. Non-blocking only while we accept.
    int flags = ::fcntl(fd, F_GETFL);
    bool blocking = flags >= 0 && !(flags & O_NONBLOCK);
    if (blocking) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    bool full = false;
    while (sent < per_call) {
      int c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;  // EAGAIN: the queue is empty (or out of fds: the connection stays queued)
      }
      if (!send_somewhere(listener, c, targets)) {
        kept_.emplace_back(listener, c);
        full = true;
        break;
      }
      ++sent;
    }
    if (blocking) ::fcntl(fd, F_SETFL, flags);
    if (full) break;
  }
  return sent;
}

}  // namespace loopfleet::supervisor
