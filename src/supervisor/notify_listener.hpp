// The supervisor's end of systemd's notify protocol: one abstract datagram socket every
// worker sends READY=1, STATUS=, WATCHDOG=1 to. The kernel attaches each sender's pid
// (SCM_CREDENTIALS), which is how a datagram is matched to its worker, as systemd does.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

namespace loopfleet::supervisor {

class notify_listener {
 public:
  using handler = std::function<void(pid_t sender, std::string_view message)>;
  // Throws startup_error when the socket cannot be made.
  notify_listener(boost::asio::io_context& loop, handler on_message);
  // NOTIFY_SOCKET's value: "@loopfleet-PID-RANDOM".
  const std::string& name() const { return name_; }
  // A datagram socket already connected to it, for a worker whose runtime cannot send to a
  // Unix socket by name (Node writes "READY=1" to LOOPFLEET_NOTIFY_FD); -1 on failure.
  int connected_socket() const;
  void start();  // reads until the loop stops

 private:
  void read_all();
  boost::asio::posix::stream_descriptor socket_;
  std::string name_;
  handler on_message_;
};

}  // namespace loopfleet::supervisor
