// What the `loopfleet cluster` and `loopfleet job` commands do, against NATS directly.
#pragma once

#include "cluster/schedule.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace loopfleet::cluster {

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

}  // namespace loopfleet::cluster
