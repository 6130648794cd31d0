// What the `loopfleet cluster` and `loopfleet job` commands do, against NATS directly.
#pragma once

#include "cluster/schedule.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace loopfleet::cluster {

class nats_connection;
// Connects, trying again with backoff for `patience` (a submit given --retry-for waits for a
// node that is still starting; status and stats answer at once). Sets `error` if it cannot.
bool connect_patiently(nats_connection& conn, const std::string& url, std::string& error,
                       std::chrono::milliseconds patience = std::chrono::milliseconds(0));
// `s` padded with spaces to `w` columns (on the right, or on the left for numbers).
std::string pad(std::string s, std::size_t w, bool left = true);

// Each returns the text to print, or sets `error` and returns nullopt.
std::optional<std::string> cluster_status(const std::string& url, double down_after_s, bool as_json, std::string& error);
// What a submitted job carries: attempts and the time limit of each (the headers of docs/cluster.md).
struct job_limits {
  int max_attempts = 5;
  std::chrono::milliseconds time_limit{30000};
};
std::optional<std::string> submit_jobs(const std::string& url, const std::string& name, const std::string& payload,
                                       int count, const std::string& key, std::chrono::milliseconds retry_for,
                                       const job_limits& limits, std::string& error);
std::optional<std::string> job_stats(const std::string& url, std::string& error);
// `job schedule`: stores (or replaces) `s`, checked already, with created_ms = now.
std::optional<std::string> store_schedule(const std::string& url, schedule s, std::string& error);
// `job unschedule NAME`: every node stops firing it within about a second.
std::optional<std::string> remove_schedule(const std::string& url, const std::string& name, std::string& error);
// `job schedules`: name, spec, job, payload size, next and last tick, missed ticks.
std::optional<std::string> list_schedules(const std::string& url, bool as_json, std::string& error);

// `loopfleet workflow start|show|signal` (workflow_admin.cpp). start: `id` empty makes one;
// `wait` > 0 waits that long for the result and prints it.
std::optional<std::string> workflow_start(const std::string& url, const std::string& name, const std::string& input,
                                          std::string id, std::chrono::milliseconds wait, std::string& error);
std::optional<std::string> workflow_show(const std::string& url, const std::string& id, bool as_json,
                                         std::string& error);
std::optional<std::string> workflow_signal(const std::string& url, const std::string& id, const std::string& signal,
                                           const std::string& payload, std::string& error);

}  // namespace loopfleet::cluster
