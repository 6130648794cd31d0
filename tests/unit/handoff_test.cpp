// Connections handed from a slot nobody accepts from to a serving worker: the decision, the
// wire (real sockets), and the supervisor's mover over a real listening socket.
#include "runtime/handoff.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/queue_handoff.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

using namespace loopfleet;
using namespace loopfleet::supervisor;

namespace {
constexpr std::int64_t late = 100'000'000;

struct channel_pair {
  int fd[2] = {-1, -1};
  channel_pair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fd), 0); }
  ~channel_pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
};

// A loopback listener and n clients whose connections wait in its queue.
struct queued_listener {
  int fd = -1;
  std::vector<int> clients;
  explicit queued_listener(int n) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd, 64), 0);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    for (int i = 0; i < n; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
      clients.push_back(c);
    }
  }
  ~queued_listener() {
    ::close(fd);
    for (int c : clients) ::close(c);
  }
};
}  // namespace

TEST(QueueHandoff, TakenWhenNobodyAcceptsFromTheQueue) {
  EXPECT_TRUE(queue_needs_taking({false, false, false, -1}, late));       // the slot has no worker
  EXPECT_TRUE(queue_needs_taking({true, false, false, -1}, late));        // starting, not ready yet
  EXPECT_TRUE(queue_needs_taking({true, true, true, 0}, late));           // stalled, being replaced
  EXPECT_TRUE(queue_needs_taking({true, true, false, late}, late));       // silent exactly two beats
  EXPECT_FALSE(queue_needs_taking({true, true, false, late - 1}, late));  // one beat late is normal
  EXPECT_FALSE(queue_needs_taking({true, true, false, -1}, late));        // no heartbeat: not judged by it
}

TEST(QueueHandoff, AConnectionCrossesTheChannelWithItsListener) {
  channel_pair ch;
  int probe[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, probe), 0);
  ASSERT_TRUE(handoff::send(ch.fd[0], 3, probe[0]));
  ::close(probe[0]);
  std::uint32_t listener = 0;
  int got = handoff::receive(ch.fd[1], listener);
  ASSERT_GE(got, 0);
  EXPECT_EQ(listener, 3u);
  EXPECT_EQ(::write(got, "x", 1), 1);  // the same connection: the peer reads what we write
  char c = 0;
  EXPECT_EQ(::read(probe[1], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(::fcntl(got, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ::close(got);
  ::close(probe[1]);
  EXPECT_EQ(handoff::receive(ch.fd[1], listener), -1);
  EXPECT_EQ(errno, EAGAIN);
  ::close(ch.fd[0]);
  ch.fd[0] = -1;
  EXPECT_EQ(handoff::receive(ch.fd[1], listener), -1);
  EXPECT_EQ(errno, 0);  // the supervisor is gone
}

TEST(QueueHandoff, EveryQueuedConnectionReachesATargetInTurn) {
  queued_listener l(6);
  channel_pair a, b;
  queue_handoff mover;
  EXPECT_EQ(mover.take({{0, l.fd}}, {}), 0u);  // nobody to hand to: they stay queued
  EXPECT_EQ(mover.take({{0, l.fd}}, {a.fd[0], b.fd[0]}), 6u);
  int at_a = 0, at_b = 0;
  std::uint32_t listener;
  for (int fd; (fd = handoff::receive(a.fd[1], listener)) >= 0; ++at_a) ::close(fd);
  for (int fd; (fd = handoff::receive(b.fd[1], listener)) >= 0; ++at_b) ::close(fd);
  EXPECT_EQ(at_a, 3);
  EXPECT_EQ(at_b, 3);
  EXPECT_EQ(mover.take({{0, l.fd}}, {a.fd[0]}), 0u);  // the queue is empty now
}

TEST(QueueHandoff, AGoneTargetIsSkippedAndNothingIsDropped) {
  queued_listener l(2);
  channel_pair gone, alive;
  ::close(gone.fd[1]);  // that worker died
  gone.fd[1] = -1;
  queue_handoff mover;
  EXPECT_EQ(mover.take({{0, l.fd}}, {gone.fd[0], alive.fd[0]}), 2u);
  std::uint32_t listener;
  int n = 0;
  for (int fd; (fd = handoff::receive(alive.fd[1], listener)) >= 0; ++n) ::close(fd);
  EXPECT_EQ(n, 2);
  // With every target gone, an accepted connection is kept for later, not closed.
  queued_listener more(1);
  EXPECT_EQ(mover.take({{0, more.fd}}, {gone.fd[0]}), 0u);
  EXPECT_EQ(mover.kept(), 1u);
  EXPECT_EQ(mover.take({}, {alive.fd[0]}), 1u);
  EXPECT_EQ(mover.kept(), 0u);
}

TEST(QueueHandoff, ABlockingListenerNeverBlocksTheSupervisorAndKeepsItsMode) {
  queued_listener l(1);
  ::fcntl(l.fd, F_SETFL, ::fcntl(l.fd, F_GETFL) & ~O_NONBLOCK);  // as a worker that never ran leaves it
  channel_pair a;
  queue_handoff mover;
  EXPECT_EQ(accept_queue_length(l.fd), 1);
  EXPECT_EQ(mover.take({{0, l.fd}}, {a.fd[0]}), 1u);
  EXPECT_EQ(mover.take({{0, l.fd}}, {a.fd[0]}), 0u);  // empty now: returns instead of waiting
  EXPECT_EQ(::fcntl(l.fd, F_GETFL) & O_NONBLOCK, 0);
}
