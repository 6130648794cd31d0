#include "runtime/notify.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

using namespace loopfleet;

namespace {
// A datagram socket standing in for the supervisor's notify socket.
struct receiver {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  explicit receiver(const std::string& name) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::memcpy(sun.sun_path, name.data(), name.size());
    if (name[0] == '@') sun.sun_path[0] = '\0';
    socklen_t len = offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '@' ? 0 : 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), len), 0) << std::strerror(errno);
  }
  ~receiver() { ::close(fd); }
  std::string next() {
    char buf[512];
    auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n < 0 ? "" : std::string(buf, n);
  }
};
}  // namespace

TEST(Notify, SendsToPathSocket) {
  std::string path = "/tmp/loopfleet-notify-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  receiver r(path);
  notifier n(path, {});
  ASSERT_TRUE(n.enabled());
  EXPECT_TRUE(n.send("READY=1"));
  EXPECT_EQ(r.next(), "READY=1");
  ::unlink(path.c_str());
}

TEST(Notify, SendsToAbstractSocket) {
  std::string name = "@loopfleet-notify-" + std::to_string(::getpid());
  receiver r(name);
  notifier n(name, {});
  EXPECT_TRUE(n.send("STOPPING=1\nSTATUS=draining"));
  EXPECT_EQ(r.next(), "STOPPING=1\nSTATUS=draining");
}

TEST(Notify, DisabledWithoutSocketAndRejectsRelativePaths) {
  EXPECT_FALSE(notifier().enabled());
  EXPECT_FALSE(notifier().send("READY=1"));
  EXPECT_FALSE(notifier("relative/path", {}).enabled());
}

TEST(Notify, ReadsWatchdogFromEnvironmentAndClearsIt) {
  std::string name = "@loopfleet-notify-env-" + std::to_string(::getpid());
  receiver r(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "500000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  auto n = notifier::from_environment();
  EXPECT_TRUE(n.enabled());
  EXPECT_EQ(n.watchdog_interval(), std::chrono::microseconds(500000));
  EXPECT_EQ(std::getenv("NOTIFY_SOCKET"), nullptr);
  EXPECT_EQ(std::getenv("WATCHDOG_USEC"), nullptr);
  EXPECT_TRUE(n.send("WATCHDOG=1"));
  EXPECT_EQ(r.next(), "WATCHDOG=1");
}

TEST(Notify, WatchdogForAnotherPidIsIgnored) {
  ::setenv("NOTIFY_SOCKET", "@x", 1);
  ::setenv("WATCHDOG_USEC", "500000", 1);
  ::setenv("WATCHDOG_PID", "1", 1);
  EXPECT_EQ(notifier::from_environment().watchdog_interval().count(), 0);
}

TEST(Notify, ParsesTheAssignmentsTheSupervisorActsOn) {
  auto m = parse_notify("STATUS=starting\nREADY=1\nMAINPID=7\nSTATUS=serving\n");
  EXPECT_TRUE(m.ready);
  EXPECT_FALSE(m.watchdog);
  EXPECT_EQ(m.status, "serving");
  auto w = parse_notify("WATCHDOG=1");
  EXPECT_TRUE(w.watchdog);
  EXPECT_FALSE(w.ready);
  EXPECT_FALSE(w.status);
  EXPECT_FALSE(parse_notify("READY=10\nREADY=").ready);  // a whole line must match
}
