// The connection loop's decisions: keep-alive or close after a response, during a drain; the
// idle wait; the read buffer; when a timeout is told to the client.
#include "http/connection_policy.hpp"

#include <gtest/gtest.h>

using namespace loopfleet::http;
using namespace loopfleet::http::detail;
using namespace std::chrono_literals;

TEST(ConnectionPolicy, AResponseKeepsTheConnectionOnlyWhenTheClientAllowsAndNoDrainBegan) {
  auto v = after_response(true, false, 11);
  EXPECT_FALSE(v.close);
  EXPECT_FALSE(v.keep_alive_10);  // HTTP/1.1 keeps by default: nothing to say
  v = after_response(false, false, 11);  // "Connection: close", or a framing the parser distrusts
  EXPECT_TRUE(v.close);
  EXPECT_FALSE(v.keep_alive_10);
  v = after_response(true, true, 11);  // draining: this response is the connection's last
  EXPECT_TRUE(v.close);
  EXPECT_FALSE(v.keep_alive_10);
}

TEST(ConnectionPolicy, AnHttp10ClientIsToldItsConnectionStays) {
  auto v = after_response(true, false, 10);
  EXPECT_FALSE(v.close);
  EXPECT_TRUE(v.keep_alive_10);
  v = after_response(true, true, 10);  // except during a drain
  EXPECT_TRUE(v.close);
  EXPECT_FALSE(v.keep_alive_10);
  EXPECT_TRUE(after_response(false, false, 10).close);
}

TEST(ConnectionPolicy, ADrainShortensTheWaitForTheNextRequest) {
  server_options o;
  o.idle_timeout = 60s;
  o.drain_idle_timeout = 1s;
  EXPECT_EQ(idle_timeout(o, false), 60s);
  EXPECT_EQ(idle_timeout(o, true), 1s);
}

TEST(ConnectionPolicy, TheReadBufferIsReusedCompactedGrownAndBounded) {
  EXPECT_EQ(room_for_read(0, 0, 4096, 20480), buffer_room::reset);
  EXPECT_EQ(room_for_read(4096, 4096, 4096, 20480), buffer_room::reset);  // all parsed
  EXPECT_EQ(room_for_read(10, 100, 4096, 20480), buffer_room::enough);
  EXPECT_EQ(room_for_read(10, 4096, 4096, 20480), buffer_room::compact);  // a request's tail at the end
  EXPECT_EQ(room_for_read(0, 4096, 4096, 20480), buffer_room::grow);      // one long header
  EXPECT_EQ(room_for_read(0, 20480, 20480, 20480), buffer_room::full);
  EXPECT_EQ(room_for_read(1, 20480, 20480, 20480), buffer_room::compact);
}

TEST(ConnectionPolicy, OnlyARequestCutShortByTheTimerIsAnswered408) {
  EXPECT_TRUE(tells_timeout(true, phase::header, true));
  EXPECT_TRUE(tells_timeout(true, phase::body, true));
  EXPECT_FALSE(tells_timeout(false, phase::header, true));   // the client went away
  EXPECT_FALSE(tells_timeout(true, phase::waiting, false));  // idle between requests: just close
  EXPECT_FALSE(tells_timeout(true, phase::writing, true));   // a response it does not read
  EXPECT_FALSE(tells_timeout(true, phase::header, false));
}

TEST(ConnectionPolicy, AShortReadPutsTheConnectionToSleepUntilItsNextEvent) {
  EXPECT_FALSE(still_readable(40, 4096, false));  // took everything there was: epoll tells of more
  EXPECT_TRUE(still_readable(4096, 4096, false));  // the buffer was full: there may be more
  EXPECT_TRUE(still_readable(40, 4096, true));     // FIN reported once: read on to see the end
}

TEST(ConnectionPolicy, OnlyBuffersOfTheUsualSizeAreLentAgain) {
  EXPECT_TRUE(lendable_again(4096, 256, 0));
  EXPECT_FALSE(lendable_again(8192, 256, 0));                  // grown by a long header
  EXPECT_FALSE(lendable_again(4096, lendable_capacity + 1, 0));  // a large response
  EXPECT_FALSE(lendable_again(4096, 256, 1 << 20));             // a large body
}

TEST(ConnectionPolicy, TheBuffersOfferedToIoUringGrowAtOnceAndShrinkAfterTwoQuietSeconds) {
  buffer_offer o{128, 0};
  o = after_shortage(o, 8192);
  EXPECT_EQ(o.target, 256u);
  EXPECT_EQ(after_shortage({8192, 3}, 8192).target, 8192u);  // never more than there are
  for (unsigned i = 0; i + 1 < offer_quiet_ticks; ++i) o = after_tick(o, false, 128);
  EXPECT_EQ(o.target, 256u);  // quiet, but not yet for two seconds
  EXPECT_EQ(after_tick(o, true, 128).quiet_ticks, 0u);  // a shortage starts the count again
  o = after_tick(o, false, 128);
  EXPECT_EQ(o.target, 128u);
  for (unsigned i = 0; i < offer_quiet_ticks; ++i) o = after_tick(o, false, 128);
  EXPECT_EQ(o.target, 128u);  // never fewer than the least
}

TEST(ConnectionPolicy, TheIoUringRingIsTakenBackOnlyWhenItHoldsFarMoreThanIsOfferedNow) {
  EXPECT_TRUE(take_back_ring(8192, 2048, true));    // a burst grew it; quiet since
  EXPECT_FALSE(take_back_ring(8192, 2048, false));  // the offer did not shrink: still busy
  EXPECT_FALSE(take_back_ring(8192, 4096, true));   // halved once: not yet twice what is offered
  EXPECT_FALSE(take_back_ring(200, 128, true));     // about what is offered: nothing to gain
  EXPECT_FALSE(take_back_ring(256, 128, true));
  EXPECT_TRUE(take_back_ring(257, 128, true));
}
