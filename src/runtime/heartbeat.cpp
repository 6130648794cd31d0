#include "runtime/heartbeat.hpp"

#include "runtime/log.hpp"
#include "runtime/worker_env.hpp"

#include <boost/asio/steady_timer.hpp>

#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace loopfleet {
namespace {

worker_counters local_counters;  // when not supervised
worker_counters* active_counters = &local_counters;

// Writes the loop thread's stack to stderr. Runs in a signal handler: only write(2) and
// backtrace, whose one allocation (loading libgcc) happened at start-up.
extern "C" void print_stack(int) {
  int saved = errno;
  void* frames[64];
  int n = ::backtrace(frames, 64);
  auto put = [](const char* s) { [[maybe_unused]] auto w = ::write(STDERR_FILENO, s, std::strlen(s)); };
  put("\n");
  put(stack_begin_marker);
  put("\n");
  ::backtrace_symbols_fd(frames, n, STDERR_FILENO);
  put(stack_end_marker);
  put("\n");
  errno = saved;
}

}  // namespace

worker_counters& counters() { return *active_counters; }

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Beats every heartbeat_interval and keeps the recent lags (how late each beat fired).
struct heartbeat::beat_timer {
  beat_timer(boost::asio::io_context& loop, heartbeat_region& r) : timer(loop), region(r) {}

  void arm() {
    expected = std::chrono::steady_clock::now() + heartbeat_interval;
    timer.expires_at(expected);
    timer.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      beat();
      arm();
    });
  }

  void beat() {
    auto late = std::chrono::steady_clock::now() - expected;
    auto us = static_cast<std::uint32_t>(std::max<long long>(
        0, std::chrono::duration_cast<std::chrono::microseconds>(late).count()));
    lags[next++ % lags.size()] = us;
    std::size_t n = std::min<std::size_t>(next, lags.size());
    std::array<std::uint32_t, 200> sorted;
    std::copy_n(lags.begin(), n, sorted.begin());
    std::sort(sorted.begin(), sorted.begin() + n);
    region.lag_p50_us.store(sorted[n / 2], std::memory_order_relaxed);
    region.lag_p99_us.store(sorted[std::min(n - 1, n * 99 / 100)], std::memory_order_relaxed);
    region.lag_max_us.store(sorted[n - 1], std::memory_order_relaxed);
    region.beats.store(region.beats.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    region.last_beat_ns.store(monotonic_ns(), std::memory_order_release);
  }

  boost::asio::steady_timer timer;
  heartbeat_region& region;
  std::chrono::steady_clock::time_point expected;
  std::array<std::uint32_t, 200> lags{};  // 10 s of beats
  std::size_t next = 0;
};

heartbeat::heartbeat() {
  const char* fd_text = std::getenv(worker_env::heartbeat_fd);
  if (!fd_text) return;
  int fd = std::atoi(fd_text);
  ::unsetenv(worker_env::heartbeat_fd);
  void* p = ::mmap(nullptr, sizeof(heartbeat_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    log::warn(std::string("cannot map the heartbeat region: ") + std::strerror(errno) + "; not beating");
    return;
  }
  auto* r = static_cast<heartbeat_region*>(p);
  if (r->magic != heartbeat_region::magic_value || r->version != heartbeat_region::current_version) {
    log::warn("the heartbeat region has another layout (a different loopfleet version?); not beating");
    ::munmap(p, sizeof(heartbeat_region));
    return;
  }
  region_ = r;
  active_counters = &r->counters;

  // backtrace() loads libgcc on first use, which allocates: do it now, not in the handler.
  void* warm[2];
  ::backtrace(warm, 2);
  struct sigaction sa{};
  sa.sa_handler = print_stack;
  sa.sa_flags = SA_RESTART;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGUSR2, &sa, nullptr);
  r->stack_signal.store(SIGUSR2);
  r->loop_tid.store(static_cast<std::int32_t>(::syscall(SYS_gettid)));
}

heartbeat::~heartbeat() {
  timer_.reset();
  if (region_) {
    active_counters = &local_counters;
    ::munmap(region_, sizeof(heartbeat_region));
  }
}

void heartbeat::start(boost::asio::io_context& loop) {
  if (!region_) return;
  timer_ = std::make_unique<beat_timer>(loop, *region_);
  timer_->expected = std::chrono::steady_clock::now();
  timer_->beat();  // the first beat says "native worker, loop turning"
  timer_->arm();
}

}  // namespace loopfleet
