#include "supervisor/notify_listener.hpp"

#include "runtime/error.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <random>

namespace loopfleet::supervisor {

namespace asio = boost::asio;

namespace {

// The abstract address for `name` ("@..." with the '@' as the leading NUL).
socklen_t abstract_address(const std::string& name, sockaddr_un& sun) {
  sun = {};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path + 1, name.data() + 1, name.size() - 1);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
}

int open_socket(const std::string& name) {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  sockaddr_un sun;
  socklen_t len = abstract_address(name, sun);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    int e = errno;
    ::close(fd);
    throw startup_error(std::string("cannot create the notify socket: ") + std::strerror(e));
  }
  int size = 1 << 20;  // a burst of READY from many workers at once must not be dropped
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  return fd;
}

std::string fresh_name() {
  std::random_device rd;
  return "@loopfleet-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
}

}  // namespace

notify_listener::notify_listener(asio::io_context& loop, handler on_message)
    : socket_(loop), name_(fresh_name()), on_message_(std::move(on_message)) {
  socket_.assign(open_socket(name_));
}

int notify_listener::connected_socket() const {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun;
  socklen_t len = abstract_address(name_, sun);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sun), len) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

void notify_listener::start() {
  asio::co_spawn(
      socket_.get_executor(),
      [this]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec] = co_await socket_.async_wait(asio::posix::stream_descriptor::wait_read,
                                                  asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          read_all();
        }
      },
      asio::detached);
}

// Every datagram already queued, so a burst costs one wakeup.
void notify_listener::read_all() {
  for (;;) {
    char data[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{data, sizeof data - 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred{};
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      }
    on_message_(sender, std::string_view(data, static_cast<std::size_t>(n)));
  }
}

}  // namespace loopfleet::supervisor
