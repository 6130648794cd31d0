#include "runtime/notify.hpp"

#include "runtime/handoff.hpp"

#include "runtime/log.hpp"
#include "runtime/worker_env.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace loopfleet {

notifier notifier::from_environment() {
  const char* path = std::getenv(worker_env::notify_socket);
  const char* usec = std::getenv(worker_env::watchdog_usec);
  const char* wpid = std::getenv(worker_env::watchdog_pid);
  std::chrono::microseconds watchdog{0};
  long long n = 0;
  long pid = 0;
  bool for_us = !wpid || (std::from_chars(wpid, wpid + std::strlen(wpid), pid).ec == std::errc() && pid == ::getpid());
  if (usec && for_us && std::from_chars(usec, usec + std::strlen(usec), n).ec == std::errc() && n > 0)
    watchdog = std::chrono::microseconds(n);
  notifier out = path && *path ? notifier(path, watchdog) : notifier();
  ::unsetenv(worker_env::notify_socket);
  ::unsetenv(worker_env::watchdog_usec);
  ::unsetenv(worker_env::watchdog_pid);
  return out;
}

notifier::notifier(std::string path, std::chrono::microseconds watchdog) : watchdog_(watchdog) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sun.sun_path || (path[0] != '/' && path[0] != '@')) {
    log::warn("NOTIFY_SOCKET='" + path + "' is not an absolute or @abstract socket path; not notifying");
    return;
  }
  std::memcpy(sun.sun_path, path.data(), path.size());
  if (path[0] == '@') sun.sun_path[0] = '\0';
  // Abstract names are not NUL-terminated: the address length says where they end.
  socklen_t len = offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '/' ? 1 : 0);
  address_.assign(reinterpret_cast<const char*>(&sun), len);
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

notifier::notifier(notifier&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), address_(std::move(o.address_)), watchdog_(o.watchdog_) {}

notifier& notifier::operator=(notifier&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    address_ = std::move(o.address_);
    watchdog_ = o.watchdog_;
  }
  return *this;
}

notifier::~notifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool notifier::send(std::string_view state) const {
  if (fd_ < 0) return false;
  auto n = ::sendto(fd_, state.data(), state.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(address_.data()), static_cast<socklen_t>(address_.size()));
  return n == static_cast<ssize_t>(state.size());
}

notify_message parse_notify(std::string_view datagram) {
  notify_message m;
  while (!datagram.empty()) {
    auto nl = datagram.find('\n');
    std::string_view line = datagram.substr(0, nl);
    if (line == "READY=1") m.ready = true;
    else if (line == "WATCHDOG=1") m.watchdog = true;
    else if (line == handoff::ready_key) m.handoff = true;
    else if (line.starts_with("STATUS=")) m.status = line.substr(7);
    if (nl == std::string_view::npos) break;
    datagram.remove_prefix(nl + 1);
  }
  return m;
}

}  // namespace loopfleet
