// The supervisor's reading of a heartbeat region (runtime/heartbeat.hpp). The page is shared
// with the worker, which can write anything into it; whatever the 4 KiB hold, the reading
// must keep the promises of heartbeat_reading, since the supervisor steers, kills and
// signals on it.
#include "runtime/heartbeat.hpp"

#include "fuzz_check.hpp"

#include <signal.h>

#include <cstdint>
#include <cstring>
#include <limits>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  alignas(4096) static unsigned char page[4096];
  std::memset(page, 0, sizeof page);
  std::memcpy(page, data, size < sizeof page ? size : sizeof page);
  static_assert(sizeof(loopfleet::heartbeat_region) <= sizeof page);
  const auto& region = *reinterpret_cast<const loopfleet::heartbeat_region*>(page);

  // The supervisor's clock: just booted, ten days up, and the end of time.
  for (std::int64_t now :
       {std::int64_t{1}, std::int64_t{864'000'000'000'000}, std::numeric_limits<std::int64_t>::max()}) {
    auto r = loopfleet::read_heartbeat(region, now);
    if (!r) continue;
    FUZZ_CHECK(region.magic == loopfleet::heartbeat_region::magic_value);
    FUZZ_CHECK(region.version == loopfleet::heartbeat_region::current_version);
    FUZZ_CHECK(r->beats > 0);
    FUZZ_CHECK(r->age_ns >= 0);
    FUZZ_CHECK(r->loop_tid >= 0);
    FUZZ_CHECK(r->stack_signal >= 0 && r->stack_signal <= SIGRTMAX);
  }
  return 0;
}
