#include "front/policy.hpp"

#include "supervisor/status_model.hpp"

#include <arpa/inet.h>
#include <signal.h>

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace loopfleet::front {

namespace {

// Asks haproxy to stop with `haproxy_signal`, through keepalived first when it runs.
front_step stop_with(const children_view& now, int haproxy_signal, front_step step) {
  if (now.stop == SIGTERM) return step;
  step.stop = haproxy_signal;
  step.stop_keepalived = now.keepalived;
  if (now.haproxy && (!now.keepalived || haproxy_signal == SIGTERM)) step.signal_haproxy = haproxy_signal;
  return step;
}

}  // namespace

front_step decide(const children_view& now, front_event e) {
  front_step step{.stop = now.stop};
  switch (e) {
    case front_event::graceful_stop:
      step.announce = true;
      return stop_with(now, SIGUSR1, step);
    case front_event::fast_stop:
      step.announce = true;
      return stop_with(now, SIGTERM, step);
    case front_event::reload:
      // A reload while stopping would bind the listeners again.
      if (now.stop) return step;
      step.announce = true;
      if (now.haproxy) step.signal_haproxy = SIGUSR2;  // new workers take the listeners over
      return step;
    case front_event::keepalived_exited:
      step.exit = !now.haproxy;
      if (!now.stop) {  // on its own: this front can no longer hold the address
        step.announce = true;
        return stop_with(now, SIGUSR1, step);
      }
      if (now.haproxy) step.signal_haproxy = now.stop;  // the address has moved: now haproxy stops
      return step;
    case front_event::haproxy_exited:
      step.announce = true;
      step.stop_keepalived = now.keepalived;
      step.exit = !now.keepalived;
      return step;
    case front_event::quiet_second:
      if (now.stop && now.haproxy && !now.keepalived) step.signal_haproxy = now.stop;
      return step;
  }
  return step;
}

}  // namespace loopfleet::front

// --- following the cluster ---

namespace loopfleet::front {

std::optional<endpoint> parse_endpoint(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string host(text.substr(0, colon));
  std::string_view port = text.substr(colon + 1);
  bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) host = host.substr(1, host.size() - 2);
  in6_addr ip{};
  bool v4 = ::inet_pton(AF_INET, host.c_str(), &ip) == 1, v6 = ::inet_pton(AF_INET6, host.c_str(), &ip) == 1;
  if (!(v4 && !bracketed) && !(v6 && bracketed)) return std::nullopt;
  int value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) return std::nullopt;
  return endpoint{host, value};
}

std::string endpoint_text(const endpoint& e) {
  bool v6 = e.host.find(':') != std::string::npos;
  return (v6 ? "[" + e.host + "]" : e.host) + ":" + std::to_string(e.port);
}

heartbeat_reading read_heartbeat(const boost::json::object& beat) {
  namespace key = status_key;  // the heartbeat's names, as the supervisor writes them
  heartbeat_reading r;
  const auto* node = beat.if_contains(key::node);
  if (!node || !node->is_string() || node->as_string().empty()) {
    r.problem = "a heartbeat without a node name";
    return r;
  }
  std::string name(node->as_string());
  const auto* http = beat.if_contains(key::http);
  if (!http) return r;  // serves no HTTP that a front can reach
  auto address = [&](const boost::json::value& v, std::string_view field) -> std::optional<endpoint> {
    auto e = v.is_string() ? parse_endpoint(v.as_string()) : std::nullopt;
    if (!e)
      r.problem = "node " + name + " advertises " + std::string(field) + " " + boost::json::serialize(v) +
                  ", not IP:PORT: skipped (its --advertise, --listen or --agent-check)";
    return e;
  };
  member m;
  m.node = name;
  auto h = address(*http, key::http);
  if (!h) return r;
  m.http = *h;
  if (const auto* agent = beat.if_contains(key::agent)) {
    auto a = address(*agent, key::agent);
    if (!a) return r;
    m.agent = *a;
  }
  const auto* age = beat.if_contains("age_s");
  m.age_s = age && age->is_number() ? age->to_number<double>() : 1e9;
  const auto* stopping = beat.if_contains(key::stopping);
  m.stopping = stopping && stopping->is_bool() && stopping->as_bool();
  r.m = std::move(m);
  return r;
}

std::optional<std::vector<slot>> parse_servers_state(std::string_view text, std::string_view prefix) {
  // Format 1: a version line "1", a "# be_id be_name srv_id srv_name srv_addr srv_op_state
  // srv_admin_state ... srv_port ... srv_agent_addr srv_agent_port" header, then one row per server.
  if (!text.starts_with("1\n")) return std::nullopt;
  constexpr std::size_t name = 3, addr = 4, op = 5, admin = 6, port = 18, agent_addr = 23, agent_port = 24;
  std::vector<slot> out;
  std::size_t at = 2;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    std::string_view line = text.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
    at = end == std::string_view::npos ? text.size() : end + 1;
    if (line.empty() || line.starts_with("#")) continue;
    std::vector<std::string_view> f;
    for (std::size_t i = 0; i <= line.size();) {
      auto space = line.find(' ', i);
      if (space == std::string_view::npos) space = line.size();
      if (space > i) f.push_back(line.substr(i, space - i));
      i = space + 1;
    }
    if (f.size() <= agent_port) return std::nullopt;
    if (!f[name].starts_with(prefix)) continue;
    auto number = [](std::string_view v) {
      int n = -1;
      std::from_chars(v.data(), v.data() + v.size(), n);
      return n;
    };
    slot s;
    s.index = number(f[name].substr(prefix.size()));
    if (s.index < 1) continue;
    int admin_flags = number(f[admin]);
    s.addr = {std::string(f[addr]), number(f[port])};
    s.agent = {f[agent_addr] == "-" ? "" : std::string(f[agent_addr]), number(f[agent_port])};
    s.up = number(f[op]) == 2;                     // SRV_ST_RUNNING
    // Forced, inherited, resolver and hostname maintenance. Not 0x04 (CMAINT): it only records
    // that the configuration said `disabled`, and stays on a slot that serves.
    s.maintenance = admin_flags & (0x01 | 0x02 | 0x20 | 0x40);
    s.drain = admin_flags & (0x08 | 0x10);         // forced or inherited drain
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

std::string seconds_text(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f s", s);
  return text;
}

}  // namespace

follow_plan plan_slots(const std::vector<member>& members, const std::vector<slot>& slots, const follow_settings& s) {
  follow_plan plan;
  auto fixed = [&](const endpoint& e) { return std::find(s.fixed.begin(), s.fixed.end(), e) != s.fixed.end(); };
  // The member each address belongs to: the freshest heartbeat when two nodes claim one.
  auto owner = [&](const endpoint& e) -> const member* {
    const member* best = nullptr;
    for (const auto& m : members)
      if (m.http == e && (!best || m.age_s < best->age_s)) best = &m;
    return best;
  };
  std::vector<endpoint> placed;
  std::vector<int> free;
  for (const auto& sl : slots) {
    if (sl.addr == empty_slot_address) {
      free.push_back(sl.index);
      continue;
    }
    auto empty = [&](const member* m, std::string reason) {
      plan.changes.push_back({slot_change::empty, sl.index, m ? *m : member{}, std::move(reason)});
      if (!sl.serving()) free.push_back(sl.index);
    };
    if (std::find(placed.begin(), placed.end(), sl.addr) != placed.end()) {
      empty(nullptr, "a second slot for " + endpoint_text(sl.addr));
      continue;
    }
    const member* m = owner(sl.addr);
    if (!m || fixed(sl.addr)) {
      if (!sl.serving())
        empty(nullptr, fixed(sl.addr) ? "it is a --server node" : "no node advertises it");
      else placed.push_back(sl.addr);  // serves: kept whatever the cluster says
      continue;
    }
    placed.push_back(sl.addr);
    bool fresh = m->age_s <= s.down_after_s;
    if (fresh && !m->stopping) {
      // A node without an agent check leaves the slot's agent port as it was (disabled).
      bool agent_moved = m->agent.port && (sl.agent.port != m->agent.port || sl.agent.host != m->agent.host);
      if (sl.maintenance || agent_moved)
        plan.changes.push_back({slot_change::fill, sl.index, *m, "back"});
    } else if (!fresh && m->stopping) {
      empty(m, "stopped gracefully");
    } else if (!fresh && m->age_s > s.forget_after_s && !sl.serving()) {
      empty(m, "no heartbeat for " + seconds_text(m->age_s));
    }
  }
  // Each freed slot that still serves is emptied but not reused in the same plan.
  std::sort(free.begin(), free.end());
  std::size_t next = 0;
  for (const auto& m : members) {
    if (m.age_s > s.down_after_s || m.stopping || fixed(m.http)) continue;
    if (std::find(placed.begin(), placed.end(), m.http) != placed.end()) continue;
    placed.push_back(m.http);
    if (next == free.size()) {
      plan.no_slot.push_back(m.node);
      continue;
    }
    plan.changes.push_back({slot_change::fill, free[next++], m, "joined"});
  }
  return plan;
}

}  // namespace loopfleet::front
