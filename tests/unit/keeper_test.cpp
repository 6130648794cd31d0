// What a supervisor tells its socket keeper of itself, read back by the supervisor that adopts
// after its death: only what format_keeper_state writes is read; anything else is refused
// rather than half-read (a keeper left by another version, a damaged message).
#include "supervisor/keeper.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

using namespace loopfleet::supervisor;

TEST(KeeperState, RoundTrips) {
  keeper_state s{7, {120, 884}, {{130, 900}, {131, 901}}};
  EXPECT_EQ(format_keeper_state(s), "generation=7 nats=120:884 workers=130:900,131:901");
  EXPECT_EQ(parse_keeper_state(format_keeper_state(s)), s);
}

TEST(KeeperState, NoNatsAndNoWorkers) {
  keeper_state s{1, {}, {}};
  EXPECT_EQ(format_keeper_state(s), "generation=1 nats=0:0 workers=");
  EXPECT_EQ(parse_keeper_state("generation=1 nats=0:0 workers="), s);
}

TEST(KeeperState, RefusesWhatItDidNotWrite) {
  for (const char* bad : {"", "generation=1", "generation=1 nats=0:0", "generation=x nats=0:0 workers=",
                          "generation=1 nats=12 workers=", "generation=1 nats=0:0 workers=1:2,",
                          "generation=1 nats=0:0 workers=1:2 extra=3", "generation=1 generation=2 nats=0:0 workers=",
                          "generation=-1 nats=0:0 workers=", "generation=1  nats=0:0 workers="})
    EXPECT_FALSE(parse_keeper_state(bad).has_value()) << bad;
}

TEST(KeeperState, IdentifiesALiveProcessByItsStartTime) {
  proc_id self = identify(::getpid());
  EXPECT_GT(self.start, 0u);
  EXPECT_EQ(identify(::getpid()), self);
  int fd = open_if_same(self);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  // The same pid with another start time is another process: never signalled in its place.
  EXPECT_EQ(open_if_same(proc_id{self.pid, self.start + 1}), -1);
  EXPECT_EQ(open_if_same(proc_id{0, 5}), -1);
}
