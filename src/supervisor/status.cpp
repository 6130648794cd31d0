// What the master shows: the status JSON (the control socket's `status`, the admin endpoint's
// /status.json, /metrics and page are all made from it) and the heartbeat a cluster node
// publishes. Key names are part of the control protocol (docs/control.md).
#include "supervisor/master.hpp"

#include "supervisor/cluster_member.hpp"
#include "supervisor/admin_endpoint.hpp"
#include "supervisor/policy.hpp"
#include "supervisor/sockets.hpp"

#include <boost/json.hpp>

#include <dirent.h>
#include <unistd.h>

#include <fstream>

namespace loopfleet::supervisor {

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
  j["pid"] = p.pid;
  j["generation"] = p.generation;
  j["uptime_s"] = duration_cast<milliseconds>(now - p.started).count() / 1000.0;
  j["rss_kib"] = rss_kib(p.pid);
  j["cpu_s"] = cpu_seconds(p.pid);
  j["status"] = p.status;
  json::array helpers;  // offload helper processes the worker forked
  for (pid_t h : child_pids(p.pid)) helpers.push_back(json::object{{"pid", h}, {"rss_kib", rss_kib(h)}});
  j["helpers"] = std::move(helpers);
  if (auto beat = p.beating()) {
    j["heartbeat_age_ms"] = beat->age_ns / 1000000;
    j["lag_p50_ms"] = beat->lag_p50_us / 1000.0;
    j["lag_p99_ms"] = beat->lag_p99_us / 1000.0;
    j["lag_max_ms"] = beat->lag_max_us / 1000.0;
    j["connections"] = beat->connections;
    j["in_flight"] = beat->in_flight;
    j["requests"] = beat->requests;
  } else if (p.last_ping_ns) {
    j["heartbeat_age_ms"] = (monotonic_ns() - p.last_ping_ns) / 1000000;
  }
}

}  // namespace

json::object master::status_json() {
  json::object o;
  o["name"] = cfg_.name;
  o["pid"] = ::getpid();
  o["generation"] = generation_;
  o["workers"] = fleet_.workers;
  o["workers_from"] = workers_from_;
  o["distribution"] = cfg_.distribution == distribution::reuseport ? "reuseport" : "shared";
  o["listen"] = sockets_->describe();
  o["uptime_s"] = duration_cast<milliseconds>(clock::now() - started_).count() / 1000.0;
  o["reloading"] = reload_.has_value();
  o["reloads"] = json::object{{"ok", reloads_ok_}, {"failed", reloads_failed_}};
  o["workers_serving"] = fleet_.serving();
  o["stopping"] = stopping_;
  if (agent_check_) {
    std::string reply = agent_check_reply(fleet_.workers, fleet_.serving(), stopping_);
    o["agent_check"] = json::object{{"address", cfg_.agent_check}, {"reply", reply.substr(0, reply.size() - 1)}};
  }
  json::array slots;
  auto now = clock::now();
  for (int i = 0; i < fleet_.workers; ++i) {
    auto& s = fleet_.slots[i];
    const process* p = fleet_.current(i);
    json::object j;
    j["slot"] = i;
    if (p) describe_worker(*p, j, now);
    else j["pid"] = nullptr;
    slot_view view{p != nullptr, p && p->ready, p && p->stalled, s.degraded,
                   p ? duration_cast<milliseconds>(now - p->started) : milliseconds(0), cfg_.healthy_after};
    j["state"] = slot_state_name(view);
    j["restarts"] = s.restarts;
    j["restarts_by_reason"] = json::value_from(s.restarts_by_reason);
    j["stalls"] = s.stalls;
    j["recycles"] = s.recycles;
    // Only where it is known: a worker without a heartbeat region counts nothing we can read.
    if (s.requests_before > 0 || (p && p->beating())) j["requests_total"] = fleet_.slot_requests(i);
    if (cfg_.distribution == distribution::reuseport) {
      j["queued"] = sockets_->queued(i);
      j["handed_over"] = s.handed_over;
    }
    j["failures_in_a_row"] = s.failures;
    j["last_exit"] = s.last_exit;
    j["last_error"] = s.last_error;
    slots.push_back(std::move(j));
  }
  o["slots"] = std::move(slots);
  json::array draining;
  for (const auto& [pid, p] : fleet_.processes())
    if (p->r == role::retiring)
      draining.push_back(json::object{{"pid", pid}, {"slot", p->slot}, {"generation", p->generation}});
  o["draining"] = std::move(draining);
  if (cluster_) o["cluster"] = cluster_->status();
  return o;
}

void master::publish_heartbeat() {
  if (!cluster_) return;
  std::uint64_t load = 0, requests = 0;
  int ready = 0;
  for (int i = 0; i < fleet_.workers; ++i) {
    const process* p = fleet_.current(i);
    if (!p) continue;
    ready += p->ready ? 1 : 0;
    if (auto beat = p->beating()) {
      load += beat->in_flight;
      requests += beat->requests;
    }
  }
  auto now_ms = duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  cluster_->publish(json::object{{"node", cfg_.node},       {"pid", ::getpid()},    {"nats", nats_url(cfg_)},
                                 {"workers", fleet_.workers}, {"ready", ready},     {"load", load},
                                 {"requests", requests},    {"ts_ms", now_ms},      {"listen", sockets_->describe()}});
}

}  // namespace loopfleet::supervisor
