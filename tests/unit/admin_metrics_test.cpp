// render_metrics: the status model in, Prometheus text out, with no supervisor running.
#include "supervisor/admin_endpoint.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <unistd.h>

#include <ctime>
#include <set>
#include <sstream>

using loopfleet::supervisor::render_metrics;
namespace json = boost::json;

namespace {

// A two-slot instance: slot 0 serves, slot 1 is between workers after two crashes.
json::object model() {
  return json::parse(R"({
    "name": "shop", "pid": 100, "generation": 3, "workers": 2, "workers_serving": 1,
    "distribution": "reuseport", "listen": "127.0.0.1:8080", "uptime_s": 12.5,
    "reloads": {"ok": 2, "failed": 1},
    "slots": [
      {"slot": 0, "pid": 4242, "generation": 3, "state": "ready", "uptime_s": 7.25, "rss_kib": 2048,
       "cpu_s": 1.5, "heartbeat_age_ms": 20, "lag_p50_ms": 0.05, "lag_p99_ms": 1.25, "lag_max_ms": 3,
       "connections": 64, "in_flight": 3, "requests": 1000, "requests_total": 18446744073709551000,
       "restarts": 1, "restarts_by_reason": {"exit": 0, "crash": 1, "stall": 0, "not_ready": 0},
       "stalls": 0, "recycles": 4, "handed_over": 9, "last_exit": ""},
      {"slot": 1, "pid": null, "state": "degraded", "restarts": 2,
       "restarts_by_reason": {"exit": 0, "crash": 1, "stall": 1, "not_ready": 0},
       "stalls": 1, "recycles": 0, "requests_total": 77, "last_exit": "killed by signal 9"}
    ],
    "draining": [{"pid": 4000, "slot": 0, "generation": 2}],
    "cluster": {"node": "n1", "nodes": 3, "nats_ready": true, "nats_restarts": 0,
                "streams": [{"name": "LOOPFLEET_JOBS", "kind": "stream", "want": 3, "has": 2, "in_sync": 2,
                             "quorum": true}]}
  })")
      .as_object();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines(text))
    if (l == line) return true;
  return false;
}

}  // namespace

TEST(AdminMetrics, OneSeriesPerWorkerWithSlotPidAndGeneration) {
  std::string m = render_metrics(model());
  // The supervisor's counter, exact even past 2^53.
  EXPECT_TRUE(
      has_line(m, R"(loopfleet_worker_requests_total{slot="0",pid="4242",generation="3"} 18446744073709551000)"))
      << m;
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_requests_in_flight{slot="0",pid="4242",generation="3"} 3)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_connections{slot="0",pid="4242",generation="3"} 64)"));
  // Milliseconds in the model, seconds on the wire; KiB in the model, bytes on the wire.
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_loop_lag_p99_seconds{slot="0",pid="4242",generation="3"} 0.00125)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_loop_lag_max_seconds{slot="0",pid="4242",generation="3"} 0.003)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_heartbeat_age_seconds{slot="0",pid="4242",generation="3"} 0.02)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_resident_memory_bytes{slot="0",pid="4242",generation="3"} 2097152)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_cpu_seconds_total{slot="0",pid="4242",generation="3"} 1.5)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_worker_ready{slot="0",pid="4242",generation="3"} 1)"));
  // A slot without a worker has no per-worker series (no pid to name), but keeps its counts.
  EXPECT_EQ(m.find(R"(loopfleet_worker_requests_total{slot="1")"), std::string::npos);
  EXPECT_TRUE(has_line(m, R"(loopfleet_slot_restarts_total{slot="1",reason="stall"} 1)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_slot_restarts_total{slot="0",reason="crash"} 1)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_slot_stalls_total{slot="1"} 1)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_slot_recycles_total{slot="0"} 4)"));
}

TEST(AdminMetrics, InstanceAndCluster) {
  std::string m = render_metrics(model());
  EXPECT_TRUE(has_line(m, R"(loopfleet_reloads_total{result="ok"} 2)")) << m;
  EXPECT_TRUE(has_line(m, R"(loopfleet_reloads_total{result="failed"} 1)"));
  EXPECT_TRUE(has_line(m, "loopfleet_slots_degraded 1"));
  EXPECT_TRUE(has_line(m, "loopfleet_workers_serving 1"));
  EXPECT_TRUE(has_line(m, "loopfleet_workers_draining 1"));
  EXPECT_TRUE(has_line(m, "loopfleet_generation 3"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_info{name="shop",distribution="reuseport",listen="127.0.0.1:8080"} 1)"));
  EXPECT_TRUE(has_line(m, "loopfleet_cluster_nodes 3"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_cluster_stream_replicas{stream="LOOPFLEET_JOBS",kind="stream"} 2)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_cluster_stream_replicas_wanted{stream="LOOPFLEET_JOBS",kind="stream"} 3)"));
  EXPECT_TRUE(has_line(m, R"(loopfleet_cluster_stream_quorum{stream="LOOPFLEET_JOBS",kind="stream"} 1)"));
}

TEST(AdminMetrics, NoClusterNoClusterSeries) {
  auto o = model();
  o.erase("cluster");
  EXPECT_EQ(render_metrics(o).find("loopfleet_cluster_"), std::string::npos);
}

// The exposition format: each family's samples come right after its own # HELP and # TYPE
// lines, each family is described once, and every sample line is NAME{LABELS} VALUE.
TEST(AdminMetrics, WellFormedExposition) {
  std::string m = render_metrics(model());
  std::set<std::string> described;
  std::string current;
  for (const auto& l : lines(m)) {
    ASSERT_FALSE(l.empty());
    if (l.starts_with("# HELP ")) {
      current = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_TRUE(described.insert(current).second) << "described twice: " << current;
      continue;
    }
    if (l.starts_with("# TYPE ")) {
      EXPECT_EQ(l.substr(7, current.size() + 1), current + " ") << l;
      auto type = l.substr(8 + current.size());
      EXPECT_TRUE(type == "counter" || type == "gauge") << l;
      continue;
    }
    std::string name = l.substr(0, l.find_first_of("{ "));
    EXPECT_EQ(name, current) << "sample outside its family: " << l;
    if (name.ends_with("_total")) {
      EXPECT_NE(m.find("# TYPE " + name + " counter"), std::string::npos) << name;
    }
    auto value = l.substr(l.rfind(' ') + 1);
    EXPECT_FALSE(value.empty()) << l;
    EXPECT_NE(value, "NaN") << l;
  }
  EXPECT_TRUE(m.ends_with("\n"));
}

TEST(AdminMetrics, LabelValuesAreEscaped) {
  auto o = model();
  o["name"] = "a\"b\\c\nd";
  EXPECT_NE(render_metrics(o).find(R"(name="a\"b\\c\nd")"), std::string::npos);
}

TEST(AdminMetrics, EmptyModelStillRenders) {
  std::string m = render_metrics(json::object{});
  EXPECT_NE(m.find("loopfleet_info 1"), std::string::npos) << m;
  EXPECT_NE(m.find("loopfleet_slots_degraded 0"), std::string::npos);
}

TEST(AdminMetrics, CpuSecondsOfThisProcess) {
  // Spin until this process has used 50 ms of CPU by clock(3), then /proc must agree to
  // within its 10 ms ticks.
  while (std::clock() < CLOCKS_PER_SEC / 20) {
  }
  double by_clock = static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
  double s = loopfleet::supervisor::cpu_seconds(::getpid());
  EXPECT_GE(s, by_clock - 0.03);
  EXPECT_LE(s, by_clock + 0.03);
  EXPECT_EQ(loopfleet::supervisor::cpu_seconds(0x7ffffff0), 0.0);  // no such process
}
