#include "supervisor/policy.hpp"

#include <algorithm>

namespace loopfleet::supervisor {

restart_decision decide_restart(const backoff_policy& p, int failures_before, milliseconds uptime) {
  restart_decision d;
  d.failures = uptime >= p.healthy_after ? 1 : failures_before + 1;
  d.degraded = d.failures >= p.degraded_after;
  // initial, 2x, 4x, ... capped; computed without overflow for long crash loops.
  milliseconds delay = p.initial;
  for (int i = 1; i < d.failures && delay < p.max; ++i) delay *= 2;
  d.delay = std::min(delay, p.max);
  return d;
}

std::string agent_check_reply(int workers, int serving, bool stopping) {
  std::string counts = std::to_string(serving) + "/" + std::to_string(workers) + " workers serving";
  if (stopping) return "drain # stopping, " + counts + "\n";
  if (serving <= 0 || workers <= 0) return "down # no worker serving\n";
  int percent = std::max(1, 100 * std::min(serving, workers) / workers);
  return "up ready " + std::to_string(percent) + "% # " + counts + "\n";  // ready: lifts an earlier drain
}

bool queue_needs_taking(const queue_view& v, std::int64_t late_ns) {
  if (!v.worker || !v.ready || v.stalled) return true;
  return v.silent_ns >= late_ns;
}

}  // namespace loopfleet::supervisor
