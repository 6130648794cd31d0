// The journal reader's rules (src/cluster/journal.hpp): what every executor and command makes
// of a workflow's entries.
#include "cluster/journal.hpp"

#include <gtest/gtest.h>

#include <chrono>

using loopfleet::cluster::entry;
using loopfleet::cluster::invalid_token;
using loopfleet::cluster::journal_view;
using loopfleet::cluster::view_of;
using kind = entry::kind;

namespace {

entry make(std::uint64_t seq, kind k, int n = 0, std::string name = "", std::uint64_t claim = 0, std::string body = "",
           std::int64_t value = 0) {
  entry e;
  e.seq = seq;
  e.what = k;
  e.n = n;
  e.name = std::move(name);
  e.claim = claim;
  e.body = std::move(body);
  e.value = value;
  return e;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST(Journal, TheLowestSequenceOfAStepWins) {
  // A stale executor's entry that slipped in after the de-duplication window comes later.
  auto v = view_of({make(1, kind::start, 0, "order"), make(2, kind::claim), make(3, kind::step, 1, "a", 2, "first"),
                    make(4, kind::claim), make(5, kind::step, 1, "a", 2, "stale copy"),
                    make(6, kind::step, 2, "b", 4, "second")});
  ASSERT_TRUE(v.start);
  EXPECT_EQ(v.at.at(1).body, "first");
  EXPECT_EQ(v.at.at(2).body, "second");
  EXPECT_EQ(v.claims.size(), 2u);
  EXPECT_EQ(v.last_seq, 6u);
  EXPECT_EQ(v.status(), "running");
}

TEST(Journal, ATailReadAgainAddsNothing) {
  auto v = view_of({make(1, kind::start, 0, "w"), make(2, kind::claim), make(3, kind::step, 1, "a", 2, "x")});
  loopfleet::cluster::add_to(v, make(3, kind::step, 1, "a", 2, "x"));
  loopfleet::cluster::add_to(v, make(2, kind::claim));
  EXPECT_EQ(v.claims.size(), 1u);
  EXPECT_EQ(v.last_seq, 3u);
}

TEST(Journal, TheFirstEndCounts) {
  auto v = view_of({make(1, kind::start, 0, "w"), make(2, kind::claim), make(3, kind::done, 0, "", 2, "ok"),
                    make(4, kind::fail, 0, "", 2, "late")});
  ASSERT_TRUE(v.finished());
  EXPECT_EQ(v.end->body, "ok");
  EXPECT_EQ(v.status(), "completed");
  EXPECT_EQ(view_of({make(1, kind::start), make(2, kind::fail, 0, "", 0, "boom")}).status(), "failed");
  EXPECT_EQ(view_of({}).status(), "unknown");
}

TEST(Journal, ATimerNotYetDueIsWaiting) {
  auto due = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::timer, 1, "sleep", 2, "", now_ms() + 60000)});
  EXPECT_EQ(due.status(), "waiting");
  auto past = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::timer, 1, "sleep", 2, "", now_ms() - 1)});
  EXPECT_EQ(past.status(), "running");
}

TEST(Journal, ParkedOnlyWhenTheLastExecutorEntryWaitsForASignal) {
  auto parked = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::waiting, 1, "approve", 2)});
  EXPECT_TRUE(parked.parked_on_signal());
  EXPECT_EQ(parked.status(), "waiting");
  // A signal after the wait: still parked (the wake it sends must resume it).
  auto signalled = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::waiting, 1, "approve", 2),
                            make(4, kind::signal, 0, "approve", 0, "yes")});
  EXPECT_TRUE(signalled.parked_on_signal());
  ASSERT_NE(signalled.unbound_signal("approve"), nullptr);
  EXPECT_EQ(signalled.unbound_signal("approve")->body, "yes");
  EXPECT_EQ(signalled.unbound_signal("other"), nullptr);
  // A newer claim (someone resumed it) or a bound wait is not parked.
  auto resumed = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::waiting, 1, "approve", 2),
                          make(4, kind::signal, 0, "approve"), make(5, kind::claim)});
  EXPECT_FALSE(resumed.parked_on_signal());
  auto bound = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::waiting, 1, "approve", 2),
                        make(4, kind::signal, 0, "approve"), make(5, kind::claim), make(6, kind::got, 1, "approve", 5, "", 4)});
  EXPECT_FALSE(bound.parked_on_signal());
  EXPECT_EQ(bound.unbound_signal("approve"), nullptr);  // taken by await 1
  // Running, not at a wait: a wake is dropped, the executor reads the signal itself.
  auto running = view_of({make(1, kind::start), make(2, kind::claim), make(3, kind::step, 1, "a", 2)});
  EXPECT_FALSE(running.parked_on_signal());
}

TEST(Journal, TwoSignalsOfOneNameGoToTwoWaitsInOrder) {
  auto v = view_of({make(1, kind::start), make(2, kind::signal, 0, "s", 0, "one"), make(3, kind::signal, 0, "s", 0, "two"),
                    make(4, kind::claim), make(5, kind::got, 1, "s", 4, "", 2)});
  ASSERT_NE(v.unbound_signal("s"), nullptr);
  EXPECT_EQ(v.unbound_signal("s")->body, "two");
}

TEST(Journal, IdsAndNamesAreSubjectTokens) {
  EXPECT_EQ(invalid_token("workflow id", "order-42_b"), "");
  EXPECT_NE(invalid_token("workflow id", ""), "");
  EXPECT_NE(invalid_token("workflow id", "a.b"), "");
  EXPECT_NE(invalid_token("workflow id", "a b"), "");
  EXPECT_NE(invalid_token("workflow id", "a*"), "");
  EXPECT_NE(invalid_token("workflow id", std::string(129, 'a')), "");
  EXPECT_NE(invalid_token("workflow name", "x>").find("workflow name 'x>'"), std::string::npos);
}

TEST(Journal, AFirstTaskCarriesItsStartAndALargeOneOnlyItsId) {
  using loopfleet::cluster::task_id;
  using loopfleet::cluster::task_message;
  using loopfleet::cluster::task_start;
  ASSERT_EQ(nats_Open(-1), NATS_OK);  // messages are collected by the library's own thread
  // Any bytes: a line break or a NUL in the input comes back as it was.
  auto start = make(42, kind::start, 0, "order", 0, std::string("3:100\r\n\0 end ", 13));
  natsMsg* m = task_message("order", "w7", false, &start);
  EXPECT_EQ(task_id(m), "w7");
  // The body is the id alone, as an executor of an earlier version reads it.
  EXPECT_EQ(std::string(natsMsg_GetData(m), natsMsg_GetDataLength(m)), "w7");
  auto carried = task_start(m);
  ASSERT_TRUE(carried);
  EXPECT_EQ(carried->seq, 42u);
  EXPECT_EQ(carried->body, start.body);
  EXPECT_EQ(carried->what, kind::start);
  natsMsg_Destroy(m);

  // Every length, the empty input too (base64 pads to groups of three bytes).
  for (std::size_t n = 0; n <= 20; ++n) {
    start.body.assign(n, static_cast<char>(0xA0 + n));
    m = task_message("order", "w6", false, &start);
    auto got = task_start(m);
    ASSERT_TRUE(got) << n;
    EXPECT_EQ(got->body, start.body) << n;
    natsMsg_Destroy(m);
  }

  // An input too large to copy stays in the journal only: the executor reads it there.
  start.body.assign(64 * 1024, 'x');
  m = task_message("order", "w8", false, &start);
  EXPECT_EQ(task_id(m), "w8");
  EXPECT_FALSE(task_start(m));
  natsMsg_Destroy(m);

  // A wake carries no start: the executor reads the journal for the signal.
  m = task_message("order", "w9", true, nullptr);
  EXPECT_EQ(task_id(m), "w9");
  EXPECT_FALSE(task_start(m));
  EXPECT_TRUE(loopfleet::cluster::is_wake(m));
  natsMsg_Destroy(m);
}
