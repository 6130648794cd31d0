#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

using namespace loopfleet::supervisor;
using namespace std::chrono_literals;

TEST(Backoff, DoublesFromInitialUpToTheCap) {
  backoff_policy p{100ms, 1000ms, 60s, 3};
  int failures = 0;
  std::vector<long> delays;
  for (int i = 0; i < 6; ++i) {
    auto d = decide_restart(p, failures, 10ms);
    failures = d.failures;
    delays.push_back(d.delay.count());
  }
  EXPECT_EQ(delays, (std::vector<long>{100, 200, 400, 800, 1000, 1000}));
}

TEST(Backoff, DegradedAfterConfiguredFailuresInARow) {
  backoff_policy p{100ms, 30s, 60s, 3};
  EXPECT_FALSE(decide_restart(p, 0, 1ms).degraded);
  EXPECT_FALSE(decide_restart(p, 1, 1ms).degraded);
  EXPECT_TRUE(decide_restart(p, 2, 1ms).degraded);
}

TEST(Backoff, AHealthyRunResetsTheCount) {
  backoff_policy p{100ms, 30s, 60s, 3};
  auto d = decide_restart(p, 7, 61s);
  EXPECT_EQ(d.failures, 1);
  EXPECT_FALSE(d.degraded);
  EXPECT_EQ(d.delay, 100ms);
}

TEST(Backoff, LongCrashLoopsDoNotOverflow) {
  backoff_policy p{100ms, 30s, 60s, 3};
  EXPECT_EQ(decide_restart(p, 100000, 0ms).delay, 30s);
}

TEST(Steering, ProgramPicksOnlyServingSlots) {
  auto prog = steering_program({0, 2});
  // load random, mod 2, (jeq, ret) x2, default ret
  ASSERT_EQ(prog.size(), 7u);
  EXPECT_EQ(prog[1].k, 2u);
  EXPECT_EQ(prog[3].k, 0u);
  EXPECT_EQ(prog[5].k, 2u);
  EXPECT_EQ(prog[6].k, 0u);
}

#include "supervisor/stack.hpp"

TEST(Stack, NamesTheApplicationFrameThatBlocked) {
  std::vector<std::string> lines = {
      "/app/bin/chaos(print_stack+0x4d)[0x55d0]",
      "/lib/x86_64-linux-gnu/libc.so.6(+0x3c050)[0x7f00]",
      "/lib/x86_64-linux-gnu/libc.so.6(clock_nanosleep+0x63)[0x7f01]",
      "/lib/x86_64-linux-gnu/libc.so.6(nanosleep+0x17)[0x7f02]",
      "/app/bin/chaos(_ZNSt11this_thread9sleep_forIlSt5ratioILl1ELl1000EEEEvRKNSt6chrono8durationIT_T0_EE+0x4e)[0x55d1]",
      "/app/bin/chaos(_Z14block_the_loopi+0x2a)[0x55d2]",
      "/app/bin/chaos(+0x1234)[0x55d3]",
  };
  auto frames = parse_stack(lines);
  ASSERT_EQ(frames.size(), 7u);
  EXPECT_EQ(frames[2].symbol, "clock_nanosleep");
  EXPECT_EQ(blocking_frame(frames), "block_the_loop(int)");
}

TEST(Stack, NothingNamedIsEmpty) {
  EXPECT_EQ(blocking_frame(parse_stack({"/lib/libc.so.6(+0x1)[0x1]", "/app/x(+0x2)[0x2]"})), "");
}
