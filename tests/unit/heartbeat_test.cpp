#include "runtime/heartbeat.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

using namespace loopfleet;

namespace {
constexpr std::int64_t now = 5'000'000'000;

// A region is atomics, not copyable: each test fills its own.
void beat(heartbeat_region& r) {
  r.beats = 3;
  r.last_beat_ns = now - 20'000'000;
  r.loop_tid = 1234;
  r.stack_signal = SIGUSR2;
  r.counters.requests = 99;
}
}  // namespace

TEST(HeartbeatReader, ReadsABeatingRegion) {
  heartbeat_region region;
  beat(region);
  auto r = read_heartbeat(region, now);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->age_ns, 20'000'000);
  EXPECT_EQ(r->loop_tid, 1234);
  EXPECT_EQ(r->stack_signal, SIGUSR2);
  EXPECT_EQ(r->requests, 99u);
}

TEST(HeartbeatReader, IgnoresOtherLayoutsAndLoopsThatNeverBeat) {
  heartbeat_region other;
  beat(other);
  other.version = 2;
  EXPECT_FALSE(read_heartbeat(other, now));
  heartbeat_region fresh;
  beat(fresh);
  fresh.beats = 0;
  EXPECT_FALSE(read_heartbeat(fresh, now));
}

// What a worker could scribble (tests/fuzz/corpus/heartbeat/scribbled): the first reader
// took a stamp from the future as a negative silence (heartbeat_fuzz found it on its first
// seed, now = 1 ns), and passed any thread id and signal to tgkill.
TEST(HeartbeatReader, ClampsWhatAWorkerCouldScribble) {
  heartbeat_region r;
  beat(r);
  r.last_beat_ns = now + 1'000'000'000;
  r.loop_tid = -1;
  r.stack_signal = 1000;
  auto reading = read_heartbeat(r, now);
  ASSERT_TRUE(reading);
  EXPECT_EQ(reading->age_ns, 0);
  EXPECT_EQ(reading->loop_tid, 0);
  EXPECT_EQ(reading->stack_signal, 0);
}

TEST(HeartbeatPage, AFreshRegionStaysReadableAfterItsDescriptorIsClosed) {
  auto page = loopfleet::heartbeat_page::create();
  ASSERT_NE(page, nullptr);
  ASSERT_GE(page->fd(), 0);
  // What the worker maps through the inherited descriptor is the page the supervisor reads.
  void* theirs = ::mmap(nullptr, sizeof(loopfleet::heartbeat_region), PROT_READ | PROT_WRITE, MAP_SHARED, page->fd(), 0);
  ASSERT_NE(theirs, MAP_FAILED);
  auto* worker_side = static_cast<loopfleet::heartbeat_region*>(theirs);
  EXPECT_EQ(worker_side->magic, loopfleet::heartbeat_region::magic_value);
  page->close_fd();
  EXPECT_EQ(page->fd(), -1);
  worker_side->counters.requests.store(42);
  EXPECT_EQ(page->region().counters.requests.load(), 42u);
  EXPECT_EQ(loopfleet::read_heartbeat(page->region(), loopfleet::monotonic_ns()), std::nullopt);  // never beaten
  ::munmap(theirs, sizeof(loopfleet::heartbeat_region));
}
