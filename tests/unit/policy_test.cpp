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

namespace {
constexpr std::int64_t ms_ns = 1'000'000;
liveness_input beating(std::int64_t age_ms) { return {age_ms * ms_ns, 0, 10'000 * ms_ns, 1000 * ms_ns, 250 * ms_ns}; }
}  // namespace

TEST(Liveness, ABeatExactlyAtAThresholdIsNotPastIt) {
  auto at_suspect = judge_liveness(beating(250));
  EXPECT_FALSE(at_suspect.suspect);
  EXPECT_TRUE(judge_liveness(beating(251)).suspect);
  auto at_limit = judge_liveness(beating(1000));
  EXPECT_TRUE(at_limit.suspect);
  EXPECT_FALSE(at_limit.stalled);
  auto past = judge_liveness(beating(1001));
  EXPECT_TRUE(past.stalled);
  EXPECT_EQ(past.silent_ns, 1001 * ms_ns);
}

TEST(Liveness, PingsAloneCanStallButNeverMakeASuspect) {
  liveness_input in{std::nullopt, 1000 * ms_ns, 2500 * ms_ns, 1000 * ms_ns, 250 * ms_ns};
  auto v = judge_liveness(in);
  EXPECT_TRUE(v.stalled);
  EXPECT_FALSE(v.suspect);
  EXPECT_EQ(v.silent_ns, 1500 * ms_ns);
  in.now_ns = 1900 * ms_ns;  // 900 ms since the ping: late for a loop, but pings are rare
  EXPECT_FALSE(judge_liveness(in).suspect);
  EXPECT_FALSE(judge_liveness(in).stalled);
}

TEST(Liveness, NotJudgedWithoutAWatchdogOrBeforeTheFirstBeat) {
  auto off = beating(60'000);
  off.limit_ns = 0;
  EXPECT_FALSE(judge_liveness(off).stalled);
  EXPECT_FALSE(judge_liveness(off).suspect);
  liveness_input silent{std::nullopt, 0, 60'000 * ms_ns, 1000 * ms_ns, 250 * ms_ns};
  EXPECT_FALSE(judge_liveness(silent).stalled);
}

TEST(Recycle, RequestBudgetFirstThenMemory) {
  EXPECT_EQ(recycle_reason(99, 100, -1, 0), std::nullopt);
  EXPECT_EQ(recycle_reason(100, 100, -1, 0), "served 100 requests (--max-requests)");
  EXPECT_EQ(recycle_reason(5, 0, 300, 256), "RSS 300 MiB over --max-memory 256");
  EXPECT_EQ(recycle_reason(5, 0, 256, 256), std::nullopt);  // at the limit is not over it
  EXPECT_EQ(recycle_reason(5, 0, -1, 256), std::nullopt);   // not measured this pass
  EXPECT_EQ(recycle_reason(100, 100, 300, 256), "served 100 requests (--max-requests)");
}

TEST(Recycle, GuardRefusesDuringAReloadAStopOrAnotherRecycle) {
  EXPECT_TRUE(may_recycle({}));
  EXPECT_FALSE(may_recycle({.reloading = true}));
  EXPECT_FALSE(may_recycle({.stopping = true}));
  EXPECT_FALSE(may_recycle({.has_candidate = true}));
  EXPECT_FALSE(may_recycle({.backing_off = true}));
  EXPECT_FALSE(may_recycle({.slot_active = false}));
}

TEST(Reload, CommitsWhenEveryCandidateIsReadyAndFailsWhenOneDies) {
  EXPECT_EQ(judge_reload({{true, true}, {true, false}}), reload_progress::waiting);
  EXPECT_EQ(judge_reload({{true, true}, {true, true}}), reload_progress::complete);
  // A candidate that died while the others were committing ready: the reload rolls back.
  EXPECT_EQ(judge_reload({{true, true}, {false, true}}), reload_progress::failed);
  EXPECT_EQ(judge_reload({{false, false}, {true, true}}), reload_progress::failed);
  EXPECT_EQ(judge_reload({}), reload_progress::complete);
}

TEST(Steering, ServingSlotsOrEverySlotWhenNoneServes) {
  EXPECT_EQ(steering_set({true, false, true}), (std::vector<int>{0, 2}));
  EXPECT_EQ(steering_set({false, false}), (std::vector<int>{0, 1}));
  EXPECT_EQ(steering_set({}), (std::vector<int>{}));
}

TEST(SlotState, AHealthyRunEndsTheDegradedState) {
  slot_view s{.has_worker = true, .ready = false, .stalled = false, .degraded = true, .uptime = 59s,
              .healthy_after = 60s};
  EXPECT_EQ(slot_state_name(s), "degraded");
  s.ready = true;
  EXPECT_EQ(slot_state_name(s), "ready");
  EXPECT_TRUE(still_degraded(s));
  s.uptime = 60s;  // exactly healthy_after: healthy
  EXPECT_FALSE(still_degraded(s));
  s.ready = false;
  EXPECT_EQ(slot_state_name(s), "starting");
}

TEST(SlotState, EachStateByName) {
  EXPECT_EQ(slot_state_name({.has_worker = false}), "restarting");
  EXPECT_EQ(slot_state_name({.has_worker = false, .degraded = true}), "degraded");
  EXPECT_EQ(slot_state_name({.has_worker = true}), "starting");
  EXPECT_EQ(slot_state_name({.has_worker = true, .ready = true}), "ready");
  EXPECT_EQ(slot_state_name({.has_worker = true, .ready = true, .stalled = true}), "stalled");
}
