// How big the offload pools are: one setting read by both pools and by the public
// configure_offload / offload_threads family (include/loopfleet/offload.hpp).
#include "runtime/offload_pools.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

namespace loopfleet {
namespace {

std::mutex config_mutex;
offload_options config;
bool config_frozen = false;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = v ? std::atoi(v) : 0;
  return n > 0 ? n : fallback;
}

int default_share() {
  cpu_set_t set;
  int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return std::max(1, cpus / env_int("LOOPFLEET_WORKERS", 1));
}

}  // namespace

namespace detail {

offload_options frozen_offload_config() {
  std::lock_guard lock(config_mutex);
  if (!config_frozen) {
    config_frozen = true;
    if (config.threads <= 0) config.threads = env_int("LOOPFLEET_OFFLOAD_THREADS", default_share());
    if (config.processes <= 0) config.processes = env_int("LOOPFLEET_OFFLOAD_PROCESSES", default_share());
    if (config.queue == 0) config.queue = static_cast<std::size_t>(env_int("LOOPFLEET_OFFLOAD_QUEUE", 1024));
  }
  return config;
}

}  // namespace detail

bool configure_offload(const offload_options& options) {
  std::lock_guard lock(config_mutex);
  if (config_frozen) return false;
  config = options;
  return true;
}

int offload_threads() { return detail::frozen_offload_config().threads; }
int offload_processes() { return detail::frozen_offload_config().processes; }
std::size_t offload_queue_limit() { return detail::frozen_offload_config().queue; }

}  // namespace loopfleet
