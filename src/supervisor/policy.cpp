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

std::string agent_check_reply_orphaned() {
  return "drain # the supervisor died; its keeper holds the sockets until it is started again\n";
}

bool queue_needs_taking(const queue_view& v, std::int64_t late_ns) {
  if (!v.worker || !v.ready || v.stalled) return true;
  return v.silent_ns >= late_ns;
}

std::string ms_text(milliseconds d) { return std::to_string(d.count()) + " ms"; }

std::optional<std::string> advertised_address(std::string_view bound, std::string_view advertise,
                                              std::string_view guessed) {
  auto colon = bound.rfind(':');
  if (bound.starts_with("unix:") || colon == std::string_view::npos || colon + 1 == bound.size()) return std::nullopt;
  std::string_view host = bound.substr(0, colon), port = bound.substr(colon + 1);
  if (host.starts_with("[") && host.ends_with("]")) host = host.substr(1, host.size() - 2);
  bool wildcard = host == "0.0.0.0" || host == "::";
  std::string_view chosen = !advertise.empty() ? advertise : wildcard ? guessed : host;
  if (chosen.empty()) return std::nullopt;
  bool v6 = chosen.find(':') != std::string_view::npos;
  return (v6 ? "[" + std::string(chosen) + "]" : std::string(chosen)) + ":" + std::string(port);
}

std::optional<std::string> advertised_admin_address(std::string_view bound, std::string_view advertise,
                                                    std::string_view guessed) {
  bool wildcard = bound.starts_with("0.0.0.0:") || bound.starts_with("[::]:") || bound.starts_with(":");
  if (!wildcard) return advertised_address(bound, "", "");
  return advertised_address(bound.starts_with(":") ? "0.0.0.0" + std::string(bound) : std::string(bound), advertise,
                            guessed);
}

liveness_verdict judge_liveness(const liveness_input& in) {
  liveness_verdict v;
  if (in.limit_ns <= 0 || (!in.beat_age_ns && in.last_ping_ns <= 0)) return v;
  v.silent_ns = in.beat_age_ns ? *in.beat_age_ns : in.now_ns - in.last_ping_ns;
  v.suspect = in.beat_age_ns && v.silent_ns > in.suspect_after_ns;
  v.stalled = v.silent_ns > in.limit_ns;
  return v;
}

std::optional<std::string> recycle_reason(std::uint64_t requests, std::uint64_t request_limit, long rss_mib,
                                          long max_memory_mib) {
  if (request_limit > 0 && requests >= request_limit)
    return "served " + std::to_string(requests) + " requests (--max-requests)";
  if (max_memory_mib > 0 && rss_mib > max_memory_mib)
    return "RSS " + std::to_string(rss_mib) + " MiB over --max-memory " + std::to_string(max_memory_mib);
  return std::nullopt;
}

bool may_recycle(const recycle_guard& g) {
  return !g.reloading && !g.stopping && !g.has_candidate && !g.backing_off && g.slot_active;
}

reload_progress judge_reload(const std::vector<candidate_view>& candidates) {
  bool all_ready = true;
  for (const auto& c : candidates) {
    if (!c.alive) return reload_progress::failed;
    all_ready = all_ready && c.ready;
  }
  return all_ready ? reload_progress::complete : reload_progress::waiting;
}

std::vector<int> steering_set(const std::vector<bool>& serves) {
  std::vector<int> out;
  for (int i = 0; i < static_cast<int>(serves.size()); ++i)
    if (serves[i]) out.push_back(i);
  if (out.empty())
    for (int i = 0; i < static_cast<int>(serves.size()); ++i) out.push_back(i);
  return out;
}

bool still_degraded(const slot_view& s) { return s.degraded && !(s.has_worker && s.uptime >= s.healthy_after); }

std::string slot_state_name(const slot_view& s) {
  bool degraded = still_degraded(s);
  if (!s.has_worker) return degraded ? "degraded" : "restarting";
  if (s.stalled) return "stalled";
  if (s.ready) return "ready";
  return degraded ? "degraded" : "starting";
}

}  // namespace loopfleet::supervisor
