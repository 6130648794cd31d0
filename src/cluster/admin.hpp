// What the `loopfleet cluster` and `loopfleet job` commands do, against NATS directly.
#pragma once

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

}  // namespace loopfleet::cluster
