#include "runtime/handoff.hpp"

#include "runtime/log.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace loopfleet::handoff {

namespace {

// One message of the channel: the listener's index, and room for one fd beside it.
struct frame {
  explicit frame(std::uint32_t& listener) : iov{&listener, sizeof listener} {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  frame(const frame&) = delete;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov;
  msghdr msg{};
};

}  // namespace

bool send(int channel, std::uint32_t listener, int fd) {
  frame f(listener);
  msghdr& msg = f.msg;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do n = ::sendmsg(channel, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof listener);
}

int receive(int channel, std::uint32_t& listener) {
  frame f(listener);
  msghdr& msg = f.msg;
  ssize_t n;
  do n = ::recvmsg(channel, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n == 0) {
    errno = 0;
    return -1;
  }
  if (n < 0) return -1;
  int fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  if (fd < 0 || n != static_cast<ssize_t>(sizeof listener)) {  // not our message: drop it, try the next
    if (fd >= 0) ::close(fd);
    errno = EAGAIN;
    return -1;
  }
  return fd;
}

namespace {

// Whether a message still waits (receive() says EAGAIN for a malformed one it dropped too).
bool has_queued(int fd) {
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0;
}

int take_fd_from_environment() {
  const char* text = std::getenv(fd_env);
  if (!text || !*text) return -1;
  int fd = std::atoi(text);
  ::unsetenv(fd_env);  // not for the processes this worker starts
  if (fd < 3 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return -1;
  return fd;
}

}  // namespace

struct receiver::impl {
  impl(boost::asio::io_context& loop, int fd, adopt_fn a) : channel(loop, fd), adopt(std::move(a)) {}

  void wait() {
    channel.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec) return;
      for (;;) {
        std::uint32_t listener = 0;
        int fd = receive(channel.native_handle(), listener);
        if (fd >= 0) {
          adopt(listener, fd);
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return;  // the supervisor's end is gone: nothing more will come
      }
      wait();
    });
  }

  boost::asio::posix::stream_descriptor channel;
  adopt_fn adopt;
};

receiver::receiver(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
receiver::~receiver() = default;

std::unique_ptr<receiver> receiver::from_environment(boost::asio::io_context& loop, adopt_fn adopt) {
  int fd = take_fd_from_environment();
  if (fd < 0) return nullptr;
  auto r = std::unique_ptr<receiver>(new receiver(std::make_unique<impl>(loop, fd, std::move(adopt))));
  r->impl_->wait();
  return r;
}

void receiver::stop() {
  // Shut for reading first: from here the supervisor's next send fails (EPIPE) and it hands
  // that connection to another worker. What it sent before is still queued here, each one a
  // connection with a request on its way: adopted, so the drain serves it, not dropped with
  // the channel.
  int fd = impl_->channel.native_handle();
  ::shutdown(fd, SHUT_RD);
  for (;;) {
    std::uint32_t listener = 0;
    int c = receive(fd, listener);
    if (c >= 0) impl_->adopt(listener, c);
    else if (errno != EAGAIN && errno != EWOULDBLOCK) break;  // nothing left
    else if (!has_queued(fd)) break;
  }
  boost::system::error_code ignored;
  impl_->channel.close(ignored);
}

void decline_from_environment() {
  if (int fd = take_fd_from_environment(); fd >= 0) ::close(fd);
}

}  // namespace loopfleet::handoff
