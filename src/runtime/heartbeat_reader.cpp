// The supervisor's side of the heartbeat region (heartbeat.hpp): one snapshot per look.
#include "runtime/heartbeat.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <new>

namespace loopfleet {

std::unique_ptr<heartbeat_page> heartbeat_page::create() {
  int fd = ::memfd_create("loopfleet-heartbeat", MFD_CLOEXEC);
  if (fd < 0) return nullptr;
  void* mem = MAP_FAILED;
  if (::ftruncate(fd, sizeof(heartbeat_region)) == 0)
    mem = ::mmap(nullptr, sizeof(heartbeat_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    errno = e;
    return nullptr;
  }
  return std::unique_ptr<heartbeat_page>(new heartbeat_page(new (mem) heartbeat_region(), fd));
}

heartbeat_page::~heartbeat_page() {
  close_fd();
  ::munmap(region_, sizeof(heartbeat_region));
}

void heartbeat_page::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::optional<heartbeat_reading> read_heartbeat(const heartbeat_region& region, std::int64_t now_ns) {
  if (region.magic != heartbeat_region::magic_value || region.version != heartbeat_region::current_version)
    return std::nullopt;
  heartbeat_reading r;
  r.beats = region.beats.load(std::memory_order_relaxed);
  std::int64_t last = region.last_beat_ns.load(std::memory_order_acquire);
  if (r.beats == 0 || last <= 0) return std::nullopt;
  // A stamp from the future (a scribble; the clock is shared) counts as a beat just now,
  // rather than a negative silence that never reaches the watchdog's limit.
  r.age_ns = last < now_ns ? now_ns - last : 0;
  // tgkill(2) takes these as they are: anything but a real thread id and signal number must
  // not be sent (the supervisor then kills the worker without asking for its stack).
  std::int32_t tid = region.loop_tid.load(std::memory_order_relaxed);
  std::int32_t sig = region.stack_signal.load(std::memory_order_relaxed);
  r.loop_tid = tid > 0 ? tid : 0;
  r.stack_signal = sig > 0 && sig <= SIGRTMAX ? sig : 0;
  r.lag_p50_us = region.lag_p50_us.load(std::memory_order_relaxed);
  r.lag_p99_us = region.lag_p99_us.load(std::memory_order_relaxed);
  r.lag_max_us = region.lag_max_us.load(std::memory_order_relaxed);
  r.connections = region.counters.connections.load(std::memory_order_relaxed);
  r.in_flight = region.counters.in_flight.load(std::memory_order_relaxed);
  r.requests = region.counters.requests.load(std::memory_order_relaxed);
  return r;
}

}  // namespace loopfleet
