// What the master shows: the status JSON (the control socket's `status`, the admin endpoint's
// /status.json, /metrics and page are all made from it) and the heartbeat a cluster node
// publishes. Key names are part of the control protocol (docs/control.md).
#include "supervisor/master.hpp"

#include "supervisor/keeper.hpp"
#include "supervisor/status_model.hpp"

#include "supervisor/cluster_member.hpp"
#include "supervisor/admin_endpoint.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"

#include <boost/json.hpp>

#include "runtime/log.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

namespace loopfleet::supervisor {

namespace key = status_key;

namespace json = boost::json;
using std::chrono::duration_cast;

namespace {

// The children of every thread of `pid` (/proc/PID/task/TID/children): a worker's offload
// helpers, which may have been forked by any of its threads.
std::vector<pid_t> child_pids(pid_t pid) {
  std::vector<pid_t> out;
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = ::opendir(tasks.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream children(tasks + "/" + e->d_name + "/children");
      for (pid_t c; children >> c;) out.push_back(c);
    }
    ::closedir(d);
  }
  return out;
}

// What a live worker's heartbeat region and /proc say about it.
void describe_worker(const process& p, json::object& j, clock::time_point now) {
  j[key::pid] = p.pid;
  j[key::generation] = p.generation;
  j[key::uptime_s] = duration_cast<milliseconds>(now - p.started).count() / 1000.0;
  j[key::rss_kib] = rss_kib(p.pid);
  j[key::cpu_s] = cpu_seconds(p.pid);
  j[key::status] = p.status;
  json::array helpers;  // offload helper processes the worker forked
  for (pid_t h : child_pids(p.pid)) helpers.push_back(json::object{{key::pid, h}, {key::rss_kib, rss_kib(h)}});
  j[key::helpers] = std::move(helpers);
  if (auto beat = p.beating()) {
    j[key::heartbeat_age_ms] = beat->age_ns / 1000000;
    j[key::lag_p50_ms] = beat->lag_p50_us / 1000.0;
    j[key::lag_p99_ms] = beat->lag_p99_us / 1000.0;
    j[key::lag_max_ms] = beat->lag_max_us / 1000.0;
    j[key::connections] = beat->connections;
    j[key::in_flight] = beat->in_flight;
    j[key::requests] = beat->requests;
  } else if (p.last_ping_ns) {
    j[key::heartbeat_age_ms] = (monotonic_ns() - p.last_ping_ns) / 1000000;
  }
}

// ready, starting, stalled, degraded or restarting: the slot's state for every reader.
std::string state_of_slot(const fleet& f, int i, milliseconds healthy_after, clock::time_point now) {
  const process* p = f.current(i);
  slot_view view{p != nullptr, p && p->ready, p && p->stalled, f.slots[i].degraded,
                 p ? duration_cast<milliseconds>(now - p->started) : milliseconds(0), healthy_after};
  return slot_state_name(view);
}

// This machine's first IPv4 address that is up and not loopback ("" when it has none), and the
// interface it is on: what a wildcard bind is reached at, unless --advertise says otherwise.
std::pair<std::string, std::string> machine_address() {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return {};
  std::pair<std::string, std::string> found;
  for (ifaddrs* i = all; i && found.first.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
    found = {text, i->ifa_name};
  }
  ::freeifaddrs(all);
  return found;
}

}  // namespace

void master::find_advertised_addresses() {
  advertised_.known = true;
  auto bound = sockets_->local_addresses();
  bool wildcard = false;
  for (const std::string& b : {bound.empty() ? std::string() : bound.front(), cfg_.agent_check, cfg_.admin})
    wildcard |= b.starts_with("0.0.0.0:") || b.starts_with("[::]:") || b.starts_with(":");
  auto [guess, interface] = wildcard && cfg_.advertise.empty() ? machine_address() : std::pair<std::string, std::string>{};
  auto pick = [&](const std::string& b) {
    return advertised_address(b.starts_with(":") ? "0.0.0.0" + b : b, cfg_.advertise, guess).value_or("");
  };
  // The first --listen address is the one a front balances to; a Unix socket has none.
  advertised_.http = bound.empty() ? "" : pick(bound.front());
  advertised_.agent = cfg_.agent_check.empty() ? "" : pick(cfg_.agent_check);
  advertised_.admin = cfg_.admin.empty() ? "" : advertised_admin_address(cfg_.admin, cfg_.advertise, guess).value_or("");
  if (!wildcard || !cfg_.advertise.empty()) return;
  if (guess.empty())
    log::warn("cluster: bound to a wildcard and this machine has no non-loopback IPv4 address: the heartbeat "
              "advertises no address to fronts; give --advertise IP");
  else
    log::info("cluster: advertising " + guess + " (" + interface + ") to fronts for the wildcard bind; --advertise "
              "IP sets it");
}

json::object master::status_json() {
  json::object o;
  o[key::name] = cfg_.name;
  o[key::pid] = ::getpid();
  o[key::generation] = generation_;
  if (keeper_ && keeper_->connected()) o[key::keeper] = keeper_->keeper_pid();
  else o[key::keeper] = nullptr;
  o[key::workers] = fleet_.workers;
  o[key::workers_from] = workers_from_;
  o[key::distribution] = cfg_.distribution == distribution::reuseport ? "reuseport" : "shared";
  o[key::listen] = sockets_->describe();
  o[key::uptime_s] = duration_cast<milliseconds>(clock::now() - started_).count() / 1000.0;
  o[key::reloading] = reload_.has_value();
  o[key::reloads] = json::object{{key::ok, reloads_ok_}, {key::failed, reloads_failed_}};
  o[key::workers_serving] = fleet_.serving();
  o[key::stopping] = stopping_;
  if (agent_check_) {
    std::string reply = agent_check_reply(fleet_.workers, fleet_.serving(), stopping_);
    o[key::agent_check] = json::object{{key::address, cfg_.agent_check}, {key::reply, reply.substr(0, reply.size() - 1)}};
  }
  json::array slots;
  auto now = clock::now();
  for (int i = 0; i < fleet_.workers; ++i) {
    auto& s = fleet_.slots[i];
    const process* p = fleet_.current(i);
    json::object j;
    j[key::slot] = i;
    if (p) describe_worker(*p, j, now);
    else j[key::pid] = nullptr;
    j[key::state] = state_of_slot(fleet_, i, cfg_.healthy_after, now);
    j[key::restarts] = s.restarts;
    j[key::restarts_by_reason] = json::value_from(s.restarts_by_reason);
    j[key::stalls] = s.stalls;
    j[key::recycles] = s.recycles;
    // Only where it is known: a worker without a heartbeat region counts nothing we can read.
    if (s.requests_before > 0 || (p && p->beating())) j[key::requests_total] = fleet_.slot_requests(i);
    if (cfg_.distribution == distribution::reuseport) {
      j[key::queued] = sockets_->queued(i);
      j[key::handed_over] = s.handed_over;
    }
    j[key::failures_in_a_row] = s.failures;
    j[key::last_exit] = s.last_exit;
    j[key::last_error] = s.last_error;
    slots.push_back(std::move(j));
  }
  o[key::slots] = std::move(slots);
  json::array draining;
  for (const auto& [pid, p] : fleet_.processes())
    if (p->r == role::retiring)
      draining.push_back(json::object{{key::pid, pid}, {key::slot, p->slot}, {key::generation, p->generation}});
  o[key::draining] = std::move(draining);
  if (cluster_) o[key::cluster] = cluster_->status();
  return o;
}

void master::publish_heartbeat(bool now) {
  if (!cluster_) return;
  std::uint64_t load = 0, requests = 0;
  int ready = 0;
  // Each worker in a few fields, for `loopfleet cluster status` and the other nodes' pages: put
  // every second by every node, so only what a fleet view shows (the rest is in /status.json).
  json::array workers;
  auto clock_now = clock::now();
  for (int i = 0; i < fleet_.workers; ++i) {
    const process* p = fleet_.current(i);
    json::object w{{key::slot, i}};
    if (p) {
      w[key::pid] = p->pid;
      w[key::uptime_s] = duration_cast<std::chrono::seconds>(clock_now - p->started).count();
    }
    const auto& s = fleet_.slots[i];
    w[key::state] = state_of_slot(fleet_, i, cfg_.healthy_after, clock_now);
    if (s.requests_before > 0 || (p && p->beating())) w[key::requests_total] = fleet_.slot_requests(i);
    workers.push_back(std::move(w));
    if (!p) continue;
    ready += p->ready ? 1 : 0;
    if (auto beat = p->beating()) {
      load += beat->in_flight;
      requests += beat->requests;
      workers.back().as_object()[key::lag_p99_ms] = std::round(beat->lag_p99_us / 10.0) / 100.0;
    }
  }
  auto now_ms = duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (!advertised_.known) find_advertised_addresses();
  json::object beat{{key::node, cfg_.node},       {key::pid, ::getpid()},    {key::nats, nats_url(cfg_)},
                    {key::workers, fleet_.workers}, {"ready", ready},     {"load", load},
                    {key::requests, requests},    {"ts_ms", now_ms},      {key::listen, sockets_->describe()},
                    {key::stopping, stopping_}};
  // What a front that follows the cluster balances to (src/front/follow.cpp reads them).
  if (!advertised_.http.empty()) beat[key::http] = advertised_.http;
  if (!advertised_.agent.empty()) beat[key::agent] = advertised_.agent;
  if (!advertised_.admin.empty()) beat[key::admin] = advertised_.admin;
  beat[key::slots] = std::move(workers);
  cluster_->publish(beat, now);
}

}  // namespace loopfleet::supervisor
