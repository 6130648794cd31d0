// The schedules' pure part: which ticks are due, the catch-up window, the next tick, the
// parsing of specs and config entries, and the stored form.
#include "cluster/schedule.hpp"
#include "runtime/flags.hpp"

#include <gtest/gtest.h>

using namespace loopfleet::cluster;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t base = 1'796'000'400'000;  // 2026-11-30T01:00:00Z, a whole hour

schedule every(std::int64_t ms, std::int64_t created = base) {
  schedule s;
  s.name = s.job = "tick";
  s.every_ms = ms;
  s.created_ms = created;
  return s;
}

schedule at(std::int64_t when, std::int64_t created = base) {
  schedule s;
  s.name = s.job = "once";
  s.at_ms = when;
  s.created_ms = created;
  return s;
}

}  // namespace

TEST(ScheduleTicks, AreMultiplesOfThePeriodSinceTheEpochNotOfWhenANodeLooked) {
  // Two nodes looking at different moments name the same ticks.
  auto s = every(1000, base + 300);
  EXPECT_EQ(due_ticks(s, std::nullopt, base + 2'100, catch_up_window, 100),
            (std::vector<std::int64_t>{base + 1000, base + 2000}));
  EXPECT_EQ(due_ticks(s, std::nullopt, base + 2'999, catch_up_window, 100),
            (std::vector<std::int64_t>{base + 1000, base + 2000}));
  auto hourly = every(3'600'000, 0);
  auto ticks = due_ticks(hourly, std::nullopt, 7'200'000 + 5, std::chrono::hours(3), 100);
  EXPECT_EQ(ticks, (std::vector<std::int64_t>{3'600'000, 7'200'000}));
}

TEST(ScheduleTicks, NeverFireAtOrBeforeTheScheduleWasCreated) {
  auto s = every(1000, base + 1000);
  EXPECT_TRUE(due_ticks(s, std::nullopt, base + 1000, catch_up_window, 100).empty());
  EXPECT_EQ(due_ticks(s, std::nullopt, base + 2000, catch_up_window, 100), (std::vector<std::int64_t>{base + 2000}));
}

TEST(ScheduleTicks, StartAfterTheLastTickFired) {
  auto s = every(1000);
  EXPECT_EQ(due_ticks(s, base + 3000, base + 5500, catch_up_window, 100),
            (std::vector<std::int64_t>{base + 4000, base + 5000}));
  EXPECT_TRUE(due_ticks(s, base + 5000, base + 5500, catch_up_window, 100).empty());
}

TEST(ScheduleTicks, OlderThanTheCatchUpWindowAreMissedNotFired) {
  auto s = every(1000);
  // The cluster was down for 10 minutes: only the last 5 minutes' ticks fire.
  auto now = base + 600'000;
  auto due = due_ticks(s, std::nullopt, now, catch_up_window, 100000);
  ASSERT_EQ(due.size(), 301u);
  EXPECT_EQ(due.front(), now - catch_up_window.count());
  EXPECT_EQ(due.back(), now);
  EXPECT_EQ(missed_ticks(s, std::nullopt, now, catch_up_window), 299);
  EXPECT_EQ(missed_ticks(s, now - 1000, now, catch_up_window), 0);
}

TEST(ScheduleTicks, AreLimitedPerRound) {
  auto due = due_ticks(every(1000), std::nullopt, base + 100'000, catch_up_window, 10);
  ASSERT_EQ(due.size(), 10u);
  EXPECT_EQ(due.front(), base + 1000);
}

TEST(ScheduleTicks, AOneShotFiresOnceInItsWindow) {
  auto s = at(base + 2000);
  EXPECT_TRUE(due_ticks(s, std::nullopt, base + 1999, catch_up_window, 10).empty());
  EXPECT_EQ(due_ticks(s, std::nullopt, base + 2000, catch_up_window, 10), (std::vector<std::int64_t>{base + 2000}));
  EXPECT_TRUE(due_ticks(s, base + 2000, base + 9000, catch_up_window, 10).empty());  // fired
  auto late = base + 2000 + catch_up_window.count() + 1;
  EXPECT_TRUE(due_ticks(s, std::nullopt, late, catch_up_window, 10).empty());
  EXPECT_EQ(missed_ticks(s, std::nullopt, late, catch_up_window), 1);
  EXPECT_EQ(next_tick(s, std::nullopt, late, catch_up_window), std::nullopt);
  EXPECT_EQ(next_tick(s, base + 2000, base + 2500, catch_up_window), std::nullopt);
  EXPECT_EQ(next_tick(s, std::nullopt, base + 500, catch_up_window), base + 2000);
}

TEST(ScheduleTicks, NextIsTheFirstUnfiredTickEvenWhenOverdue) {
  auto s = every(60'000);
  EXPECT_EQ(next_tick(s, std::nullopt, base + 1, catch_up_window), base + 60'000);
  EXPECT_EQ(next_tick(s, base + 60'000, base + 60'001, catch_up_window), base + 120'000);
  // Firing is late (JetStream was electing a leader): the next is the one still owed.
  EXPECT_EQ(next_tick(s, base + 60'000, base + 200'000, catch_up_window), base + 120'000);
}

TEST(ScheduleMoves, ATickBecomesAJobFromItsStorerAndFromFreshDuplicates) {
  EXPECT_TRUE(should_move(true, base, base + 60'000));   // ours, however late
  EXPECT_TRUE(should_move(false, base, base + 3'000));   // another node's, seconds ago: it may have died
  EXPECT_FALSE(should_move(false, base, base + 60'000)); // a node catching up: left to those that fired it
  EXPECT_FALSE(too_old_to_move(base, base + move_within.count()));
  EXPECT_TRUE(too_old_to_move(base, base + move_within.count() + 1));
  // Whatever a node may still move is inside the jobs stream's duplicate window.
  EXPECT_LT(move_within, tick_duplicate_window);
  EXPECT_LT(catch_up_window + std::chrono::minutes(1), tick_duplicate_window);
  EXPECT_GT(tick_max_age, tick_duplicate_window);
}

TEST(ScheduleSpec, EveryTakesTheFlagsDurationsAndRefusesLoops) {
  std::int64_t ms = 0;
  EXPECT_FALSE(parse_every("1s", ms));
  EXPECT_EQ(ms, 1000);
  EXPECT_FALSE(parse_every("1h", ms));
  EXPECT_EQ(ms, 3'600'000);
  EXPECT_FALSE(parse_every("1.5", ms));
  EXPECT_EQ(ms, 1500);
  auto bad = parse_every("5x", ms);
  ASSERT_TRUE(bad);
  EXPECT_EQ(*bad, "'5x' is not a duration: give seconds such as 30 or 0.5, milliseconds such as 250ms, or 5m, 2h, 1d");
  auto fast = parse_every("250ms", ms);
  ASSERT_TRUE(fast);
  EXPECT_NE(fast->find("shorter than the shortest period, 1s"), std::string::npos) << *fast;
}

TEST(ScheduleSpec, AtIsUtcOrFromNowAndInTheFuture) {
  std::int64_t ms = 0;
  EXPECT_FALSE(parse_at("+2s", base, ms));
  EXPECT_EQ(ms, base + 2000);
  EXPECT_FALSE(parse_at("2030-01-02T03:04:05Z", base, ms));
  EXPECT_EQ(ms, 1'893'553'445'000);
  EXPECT_FALSE(parse_at("2030-01-02T03:04:05.25Z", base, ms));
  EXPECT_EQ(ms, 1'893'553'445'250);
  EXPECT_FALSE(parse_at("2030-01-02T03:04:05+00:00", base, ms));
  EXPECT_EQ(ms, 1'893'553'445'000);
  EXPECT_EQ(utc_text(1'893'553'445'250), "2030-01-02T03:04:05.250Z");
  EXPECT_EQ(utc_text(1'893'553'445'000), "2030-01-02T03:04:05Z");
  for (const char* wrong : {"2030-01-02T03:04:05", "2030-01-02T03:04:05+01:00", "2030-02-30T00:00:00Z", "soon", "+x"})
    EXPECT_TRUE(parse_at(wrong, base, ms)) << wrong;
  auto past = parse_at("2020-01-01T00:00:00Z", base, ms);
  ASSERT_TRUE(past);
  EXPECT_NE(past->find("in the past"), std::string::npos) << *past;
}

TEST(ScheduleSpec, ConfigEntriesNameAPeriodAndAPayload) {
  schedule s;
  EXPECT_FALSE(parse_schedule_entry("report every 1h daily totals", s));
  EXPECT_EQ(s.name, "report");
  EXPECT_EQ(s.job, "report");
  EXPECT_EQ(s.every_ms, 3'600'000);
  EXPECT_EQ(s.payload, "daily totals");
  EXPECT_FALSE(parse_schedule_entry("tick every 1s", s));
  EXPECT_EQ(s.payload, "");
  auto bad = parse_schedule_entry("tick every 5x hello", s);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->rfind("schedule 'tick every 5x hello': '5x' is not a duration", 0), 0u) << *bad;
  EXPECT_TRUE(parse_schedule_entry("tick at 1s", s));
  EXPECT_TRUE(parse_schedule_entry("a.b every 1s", s));
  EXPECT_TRUE(parse_schedule_entry("", s));
}

TEST(ScheduleStoredForm, RoundTripsAndRefusesWhatIsNotASchedule) {
  auto s = every(2000);
  s.payload = "hello \"world\"";
  s.source = "cli";
  auto back = schedule_from_json(to_json(s));
  ASSERT_TRUE(back);
  EXPECT_TRUE(same_schedule(s, *back));
  EXPECT_EQ(back->created_ms, s.created_ms);
  EXPECT_EQ(back->source, "cli");
  EXPECT_EQ(spec_text(*back), "every 2s");
  EXPECT_EQ(spec_text(every(90'000)), "every 90s");
  EXPECT_EQ(spec_text(every(3'600'000)), "every 1h");
  EXPECT_EQ(spec_text(at(1'893'553'445'000)), "at 2030-01-02T03:04:05Z");
  EXPECT_FALSE(schedule_from_json("{}"));
  EXPECT_FALSE(schedule_from_json("not json"));
  EXPECT_FALSE(schedule_from_json(R"({"name":"x","job":"x","payload":"","every_ms":10})"));  // below 1 s
  EXPECT_FALSE(schedule_from_json(R"({"name":"x.y","job":"x","payload":"","every_ms":1000})"));
  EXPECT_EQ(tick_id("tick", base), "schedule:tick@1796000400000");
}

TEST(Durations, TakeMinutesHoursAndDays) {
  using loopfleet::parse_duration;
  EXPECT_EQ(parse_duration("5m"), std::chrono::milliseconds(300'000));
  EXPECT_EQ(parse_duration("2h"), std::chrono::milliseconds(7'200'000));
  EXPECT_EQ(parse_duration("1d"), std::chrono::milliseconds(86'400'000));
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_FALSE(parse_duration("5x"));
  EXPECT_FALSE(parse_duration("m"));
}
