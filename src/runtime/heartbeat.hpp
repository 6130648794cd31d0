// The heartbeat region: a page of shared memory (memfd) that the supervisor creates for each
// native worker and passes like the sockets (LOOPFLEET_HEARTBEAT_FD). The worker's loop beats
// into it from a timer; the supervisor reads it to catch a loop that stopped turning, and for
// status. One writer (the worker's loop), one reader; every field is a lock-free atomic, so a
// crash on either side leaves nothing half-locked. The layout is versioned: a reader that
// finds another magic or version ignores the region. Python workers write the same layout
// (python/loopfleet/heartbeat.py): change both, and the version, together.
#pragma once

#include <loopfleet/runtime.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace boost::asio {
class io_context;
}

namespace loopfleet {

struct heartbeat_region {
  static constexpr std::uint32_t magic_value = 0x4c464842;  // "LFHB"
  static constexpr std::uint32_t current_version = 1;

  std::uint32_t magic = magic_value;
  std::uint32_t version = current_version;
  std::atomic<std::uint64_t> beats{0};
  std::atomic<std::int64_t> last_beat_ns{0};  // CLOCK_MONOTONIC, the same clock in every process
  std::atomic<std::int32_t> loop_tid{0};      // the thread to ask for a stack
  std::atomic<std::int32_t> stack_signal{0};  // the signal that makes it print one
  std::atomic<std::uint32_t> lag_p50_us{0};   // how late the beat timer fired, recent window
  std::atomic<std::uint32_t> lag_p99_us{0};
  std::atomic<std::uint32_t> lag_max_us{0};
  worker_counters counters;
};

// What python/loopfleet/heartbeat.py assumes.
static_assert(sizeof(heartbeat_region) == 72 && offsetof(heartbeat_region, counters) == 48);

inline constexpr auto heartbeat_interval = std::chrono::milliseconds(50);

// Monotonic clock in nanoseconds, as stored in last_beat_ns.
std::int64_t monotonic_ns();

// What the supervisor takes from a region. The worker can write anything into its page (a
// stray pointer, a runtime that is not ours), so the reader checks the layout and never
// trusts a field further than its type: an age cannot be negative or overflow, a thread id
// and a signal number are only used when they could be real.
struct heartbeat_reading {
  std::uint64_t beats = 0;
  std::int64_t age_ns = 0;       // since the last beat; >= 0
  std::int32_t loop_tid = 0;     // 0: none usable
  int stack_signal = 0;          // 0: none usable
  std::uint32_t lag_p50_us = 0, lag_p99_us = 0, lag_max_us = 0;
  std::uint64_t connections = 0, in_flight = 0, requests = 0;
};

// The region's state at `now_ns` (monotonic_ns()), or nullopt when the region is not this
// layout (magic, version) or the loop has not beaten yet.
std::optional<heartbeat_reading> read_heartbeat(const heartbeat_region& region, std::int64_t now_ns);

// The supervisor side: a fresh region for one worker, in a memfd mapped here. The worker
// inherits `fd()` (LOOPFLEET_HEARTBEAT_FD), which the supervisor closes after the spawn; the
// mapping stays until the page is destroyed, so a dead worker's last counts remain readable.
class heartbeat_page {
 public:
  // nullptr when no region can be made (the reason is in errno): the worker then runs
  // without one, unwatched by the region's reader.
  static std::unique_ptr<heartbeat_page> create();
  ~heartbeat_page();
  heartbeat_page(const heartbeat_page&) = delete;
  heartbeat_page& operator=(const heartbeat_page&) = delete;
  const heartbeat_region& region() const { return *region_; }
  int fd() const { return fd_; }
  void close_fd();

 private:
  heartbeat_page(heartbeat_region* region, int fd) : region_(region), fd_(fd) {}
  heartbeat_region* region_;
  int fd_;
};

// The worker side: maps the region named by LOOPFLEET_HEARTBEAT_FD (if any), installs the
// stack-dump signal handler and beats from a timer on `loop`.
class heartbeat {
 public:
  heartbeat();
  ~heartbeat();
  void start(boost::asio::io_context& loop);
  bool supervised() const { return region_ != nullptr; }

 private:
  struct beat_timer;
  heartbeat_region* region_ = nullptr;
  std::unique_ptr<beat_timer> timer_;
};

// Line markers around a stack dump on stderr; the supervisor collects what is between them.
inline constexpr const char* stack_begin_marker = "loopfleet-stack-begin";
inline constexpr const char* stack_end_marker = "loopfleet-stack-end";

}  // namespace loopfleet
