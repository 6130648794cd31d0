#include "supervisor/admin_endpoint.hpp"

#include "http/server.hpp"
#include "runtime/address.hpp"

#include <loopfleet/http.hpp>

#include <boost/json.hpp>

#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <variant>
#include <vector>

namespace loopfleet::supervisor {
namespace json = boost::json;
namespace {

// A label value as the exposition format wants it: backslash, quote and newline escaped.
std::string escaped(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string text_of(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_int64()) return std::to_string(v.as_int64());
  if (v.is_uint64()) return std::to_string(v.as_uint64());
  if (v.is_double()) return std::to_string(v.as_double());
  return {};
}

// How a model field becomes a sample: the model speaks milliseconds and KiB, Prometheus
// seconds and bytes.
enum class unit { same, ms_to_s, kib_to_bytes };

// Counters stay exact integers (a request count passes 2^53 long before it passes 2^64);
// milliseconds become seconds by division, which keeps 0.099 ms as 9.9e-05.
std::string number_text(const json::value& v, unit u = unit::same) {
  if (u != unit::ms_to_s) {
    std::uint64_t k = u == unit::kib_to_bytes ? 1024 : 1;
    if (v.is_uint64()) return std::to_string(v.as_uint64() * k);
    if (v.is_int64()) return std::to_string(v.as_int64() * static_cast<std::int64_t>(k));
  }
  double d = v.to_number<double>();
  if (u == unit::ms_to_s) d /= 1000;
  if (u == unit::kib_to_bytes) d *= 1024;
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

using labels = std::vector<std::pair<std::string, std::string>>;

// Writes families: every sample of a family follows its # HELP and # TYPE lines, as the
// format requires, so callers loop over families first and over workers inside. A family
// is described only once it has a sample: a model without a field gets no empty family.
class exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    header_ = "# HELP " + std::string(name) + " " + std::string(help) + "\n# TYPE " + std::string(name) + " " +
              std::string(type) + "\n";
    name_ = name;
  }
  void sample(const labels& l, std::string_view value) {
    out_ += header_;
    header_.clear();
    out_ += name_;
    if (!l.empty()) {
      out_ += '{';
      for (std::size_t i = 0; i < l.size(); ++i) {
        if (i) out_ += ',';
        out_ += l[i].first + "=\"" + escaped(l[i].second) + '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(const labels& l, double value) { sample(l, number_text(json::value(value))); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::string header_;
  std::string name_;
};

// The field `key` of `o` if it is a number, else null.
const json::value* number(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_number() ? v : nullptr;
}

// A per-worker family: one sample per slot that has a worker and carries `key`.
struct worker_family {
  const char* name;
  const char* type;
  const char* key;
  unit u;
  const char* help;
};

const worker_family worker_families[] = {
    {"loopfleet_worker_requests_total", "counter", "requests_total", unit::same,
     "Requests served in this slot, by this worker and every worker that filled the slot before it "
     "(owned by the supervisor: never goes backwards when a worker is replaced)."},
    {"loopfleet_worker_requests_in_flight", "gauge", "in_flight", unit::same, "Requests being handled now."},
    {"loopfleet_worker_connections", "gauge", "connections", unit::same, "Open connections."},
    {"loopfleet_worker_loop_lag_p50_seconds", "gauge", "lag_p50_ms", unit::ms_to_s,
     "Median lateness of the loop's heartbeat timer over its recent window."},
    {"loopfleet_worker_loop_lag_p99_seconds", "gauge", "lag_p99_ms", unit::ms_to_s,
     "99th percentile lateness of the loop's heartbeat timer over its recent window."},
    {"loopfleet_worker_loop_lag_max_seconds", "gauge", "lag_max_ms", unit::ms_to_s,
     "Largest lateness of the loop's heartbeat timer over its recent window."},
    {"loopfleet_worker_heartbeat_age_seconds", "gauge", "heartbeat_age_ms", unit::ms_to_s,
     "Time since the worker's last heartbeat."},
    {"loopfleet_worker_resident_memory_bytes", "gauge", "rss_kib", unit::kib_to_bytes,
     "Resident set size of the worker process."},
    {"loopfleet_worker_cpu_seconds_total", "counter", "cpu_s", unit::same,
     "User and system CPU time of the worker process."},
    {"loopfleet_worker_uptime_seconds", "gauge", "uptime_s", unit::same, "Time since the worker was started."},
};

// A family whose samples read one field of each object of a list.
struct keyed_family {
  const char* name;
  const char* key;
  const char* help;
};

// Per-slot counters: they belong to the slot, not to whichever worker fills it now, so they
// carry no pid (a new pid would start a new series and hide the count in it).
const keyed_family slot_families[] = {
    {"loopfleet_slot_stalls_total", "stalls", "Loops the watchdog found stalled and replaced."},
    {"loopfleet_slot_recycles_total", "recycles", "Workers replaced for --max-requests or --max-memory."},
    {"loopfleet_slot_handed_over_total", "handed_over",
     "Connections taken from this slot's queue and handed to serving workers (reuseport)."},
};

// The field `key` of `o` as label text, empty if absent.
std::string text_at(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? text_of(*v) : std::string();
}

// Per worker: slot, pid and generation label each sample, so a replaced worker is a new series.
void render_workers(exposition& e, const json::array& slots) {
  auto worker_labels = [](const json::object& s) {
    labels l{{"slot", text_at(s, "slot")}, {"pid", text_of(s.at("pid"))}};
    if (const json::value* g = s.if_contains("generation")) l.emplace_back("generation", text_of(*g));
    return l;
  };
  auto has_worker = [](const json::object& s) {
    const json::value* p = s.if_contains("pid");
    return p && p->is_number();
  };
  for (const auto& f : worker_families) {
    e.family(f.name, f.type, f.help);
    for (const auto& sv : slots) {
      const json::object& s = sv.as_object();
      if (const json::value* v = has_worker(s) ? number(s, f.key) : nullptr)
        e.sample(worker_labels(s), number_text(*v, f.u));
    }
  }
  e.family("loopfleet_worker_ready", "gauge", "1 when the worker is ready (said READY=1 and is not stalled), else 0.");
  for (const auto& sv : slots) {
    const json::object& s = sv.as_object();
    if (has_worker(s)) e.sample(worker_labels(s), text_at(s, "state") == "ready" ? "1" : "0");
  }
}

void render_slots(exposition& e, const json::array& slots) {
  e.family("loopfleet_slot_restarts_total", "counter",
           "Workers of this slot restarted, by reason: exit (exited by itself), crash (killed by a signal), "
           "stall (killed by the watchdog), not_ready (no READY within --ready-timeout).");
  for (const auto& sv : slots) {
    const json::object& s = sv.as_object();
    const json::value* by = s.if_contains("restarts_by_reason");
    if (!by || !by->is_object()) continue;
    for (const auto& [reason, n] : by->as_object())
      if (n.is_number()) e.sample({{"slot", text_at(s, "slot")}, {"reason", std::string(reason)}}, number_text(n));
  }
  for (const auto& f : slot_families) {
    e.family(f.name, "counter", f.help);
    for (const auto& sv : slots)
      if (const json::value* v = number(sv.as_object(), f.key))
        e.sample({{"slot", text_at(sv.as_object(), "slot")}}, number_text(*v));
  }
}

void render_instance(exposition& e, const json::object& status, const json::array& slots) {
  labels info;
  for (const char* k : {"name", "distribution", "listen"})
    if (const json::value* v = status.if_contains(k)) info.emplace_back(k, text_of(*v));
  e.family("loopfleet_info", "gauge", "The instance: its name, distribution mode and listen addresses.");
  e.sample(info, "1");
  auto gauge = [&](const char* name, const char* key, const char* help) {
    if (const json::value* v = number(status, key)) {
      e.family(name, "gauge", help);
      e.sample({}, number_text(*v));
    }
  };
  gauge("loopfleet_generation", "generation", "The generation serving (a reload adds one).");
  gauge("loopfleet_workers", "workers", "Worker slots configured.");
  gauge("loopfleet_workers_serving", "workers_serving",
        "Workers that are ready and whose loop beats: the ones new connections go to.");
  gauge("loopfleet_uptime_seconds", "uptime_s", "Time since the supervisor started.");
  int degraded = 0;
  for (const auto& sv : slots) degraded += text_at(sv.as_object(), "state") == "degraded";
  e.family("loopfleet_slots_degraded", "gauge", "Slots in a crash loop (--degraded-after failed starts in a row).");
  e.sample({}, static_cast<double>(degraded));
  if (const json::value* d = status.if_contains("draining"); d && d->is_array()) {
    e.family("loopfleet_workers_draining", "gauge", "Workers of older generations finishing their requests.");
    e.sample({}, static_cast<double>(d->as_array().size()));
  }
  if (const json::value* r = status.if_contains("reloads"); r && r->is_object()) {
    e.family("loopfleet_reloads_total", "counter",
             "Reloads by result: ok (the new generation serves), failed (refused or rolled back).");
    for (const auto& [result, n] : r->as_object())
      if (n.is_number()) e.sample({{"result", std::string(result)}}, number_text(n));
  }
}

// The cluster layer, when on: what the node agent last read.
void render_cluster(exposition& e, const json::object& status) {
  const json::value* cv = status.if_contains("cluster");
  if (!cv || !cv->is_object()) return;
  const json::object& c = cv->as_object();
  if (const json::value* n = number(c, "nodes")) {
    e.family("loopfleet_cluster_nodes", "gauge",
             "Nodes whose heartbeat in the nodes bucket is fresh, this one included.");
    e.sample({}, number_text(*n));
  }
  if (const json::value* r = c.if_contains("nats_ready"); r && r->is_bool()) {
    e.family("loopfleet_cluster_nats_ready", "gauge", "1 once the node's nats-server accepts clients.");
    e.sample({}, r->as_bool() ? "1" : "0");
  }
  if (const json::value* r = number(c, "nats_restarts")) {
    e.family("loopfleet_cluster_nats_restarts_total", "counter", "Restarts of the node's nats-server.");
    e.sample({}, number_text(*r));
  }
  const json::value* st = c.if_contains("streams");
  if (!st || !st->is_array()) return;
  static const keyed_family stream_families[] = {
      {"loopfleet_cluster_stream_replicas", "has", "Replicas a stream, bucket or consumer is configured with now."},
      {"loopfleet_cluster_stream_replicas_wanted", "want", "Replicas promised (--replicas)."},
      {"loopfleet_cluster_stream_replicas_in_sync", "in_sync", "The leader and the followers that are current."},
      {"loopfleet_cluster_stream_quorum", "quorum",
       "1 when a majority of the replicas confirms writes; 0: it takes and delivers nothing."},
  };
  for (const auto& f : stream_families) {
    e.family(f.name, "gauge", f.help);
    for (const auto& x : st->as_array()) {
      const json::object& o = x.as_object();
      const json::value* v = o.if_contains(f.key);
      if (!v) continue;
      e.sample({{"stream", text_at(o, "name")}, {"kind", text_at(o, "kind")}},
               v->is_bool() ? (v->as_bool() ? "1" : "0") : number_text(*v));
    }
  }
}

}  // namespace

std::string render_metrics(const json::object& status) {
  exposition e;
  static const json::array no_slots;
  const json::value* sv = status.if_contains("slots");
  const json::array& slots = sv && sv->is_array() ? sv->as_array() : no_slots;
  render_workers(e, slots);
  render_slots(e, slots);
  render_instance(e, status, slots);
  render_cluster(e, status);
  return e.take();
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
  // after it start past the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> f{std::istream_iterator<std::string>(rest), std::istream_iterator<std::string>()};
  // f[0] is field 3 (state); utime and stime are fields 14 and 15, in clock ticks.
  if (f.size() < 13) return 0;
  double ticks = std::stod(f[11]) + std::stod(f[12]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

admin_endpoint::admin_endpoint(boost::asio::io_context& loop, const std::string& address, model_fn model,
                               const listener* inherited) {
  listener l = inherited ? *inherited
                         : bind_listener(std::get<listen_address>(parse_listen_address(address)), "--admin " + address, 64);
  fd_ = l.fd;
  http::router app;
  auto no_store = [](http::response r, std::string type) {
    r.content_type = std::move(type);
    // A scraper or a page polling every second must always see the model as it is now.
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
  };
  app.get("/metrics", [model, no_store](http::request&) {
    return no_store(http::text(render_metrics(model())), "text/plain; version=0.0.4; charset=utf-8");
  });
  app.get("/status.json",
          [model, no_store](http::request&) { return no_store(http::json(model()), "application/json"); });
  app.get("/", [no_store](http::request&) {
    return no_store(http::text(std::string(status_page_html)), "text/html; charset=utf-8");
  });
  // The worker's defaults, with fewer connections: a few scrapers and browsers, not clients.
  http::server_options options;
  options.max_connections = 256;
  server_ = std::make_unique<http::detail::server>(std::move(app), options);
  std::vector<listener> listeners;
  listeners.push_back(std::move(l));
  server_->start(loop, std::move(listeners));
}

admin_endpoint::~admin_endpoint() = default;

void admin_endpoint::close() {
  if (server_) server_->close();
}

}  // namespace loopfleet::supervisor
