// The client side of systemd's notify protocol (sd_notify(3)): datagrams such as "READY=1",
// "STOPPING=1", "WATCHDOG=1" or "STATUS=text" sent to the Unix socket named by
// NOTIFY_SOCKET. A leading '@' names a socket in the abstract namespace.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace loopfleet {

class notifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then removes them from the
  // environment so that processes this worker starts do not report in its name.
  static notifier from_environment();
  notifier() = default;
  notifier(std::string socket_path, std::chrono::microseconds watchdog);
  notifier(notifier&&) noexcept;
  notifier& operator=(notifier&&) noexcept;
  ~notifier();

  bool enabled() const { return fd_ >= 0; }
  // Sends one datagram; never blocks (a supervisor that stopped reading must not stall the
  // loop). Returns false if it could not be sent.
  bool send(std::string_view state) const;
  // The interval the parent expects WATCHDOG=1 within; zero when it expects none.
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

 private:
  int fd_ = -1;
  std::string address_;  // a sockaddr_un, ready for sendto
  std::chrono::microseconds watchdog_{0};
};

// What one datagram tells the receiving side (the supervisor): newline-separated assignments;
// the ones it does not act on (STOPPING=1, MAINPID=...) are ignored, as systemd ignores
// unknown ones. The views point into the datagram.
struct notify_message {
  bool ready = false;                      // READY=1
  bool watchdog = false;                   // WATCHDOG=1
  bool handoff = false;                    // X_LOOPFLEET_HANDOFF=1 (runtime/handoff.hpp)
  std::optional<std::string_view> status;  // the last STATUS=...
};
notify_message parse_notify(std::string_view datagram);

}  // namespace loopfleet
