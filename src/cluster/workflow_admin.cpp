// What `loopfleet workflow start|show|signal` do, against NATS directly, by the journal's rules
// (journal.hpp), the same ones the workers' executor follows.
#include "cluster/admin.hpp"
#include "cluster/journal.hpp"
#include "cluster/nats_connection.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <ctime>
#include <random>

namespace loopfleet::cluster {

namespace {

std::string utc(std::int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool printable(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

// A value as it is shown: itself when short and printable, else its size.
std::string shown(const std::string& body) {
  if (body.size() <= 200 && printable(body)) return body;
  return "(" + std::to_string(body.size()) + " bytes)";
}

std::string new_id() {
  std::random_device rd;
  char buf[20];
  std::snprintf(buf, sizeof buf, "wf-%08x%08x", rd(), rd());
  return buf;
}

// The journal's end entry, waiting up to `wait` for it: a subscription to the subject hears
// each append; the journal is read once after subscribing, for an end already there.
std::optional<entry> wait_for_end(nats_connection& conn, const std::string& id, std::chrono::milliseconds wait,
                                  std::string& error) {
  natsSubscription* sub = nullptr;
  if (natsConnection_SubscribeSync(&sub, conn.nc(), journal_subject(id).c_str()) != NATS_OK) {
    error = "cannot subscribe to the journal of " + id;
    return std::nullopt;
  }
  std::optional<entry> end;
  std::vector<entry> all;
  if (read_journal(conn.js(), id, 1, all, error)) end = view_of(all).end;
  auto give_up = std::chrono::steady_clock::now() + wait;
  while (!end) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, left.count()) != NATS_OK) break;
    if (entry e = parse_entry(m); e.what == entry::kind::done || e.what == entry::kind::fail) end = std::move(e);
    natsMsg_Destroy(m);
  }
  natsSubscription_Destroy(sub);
  if (!end) error = "workflow " + id + " did not finish within " + std::to_string(wait.count()) + " ms";
  return end;
}

}  // namespace

std::optional<std::string> workflow_start(const std::string& url, const std::string& name, const std::string& input,
                                          std::string id, std::chrono::milliseconds wait, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  if (id.empty()) id = new_id();
  request_result r = start_workflow(conn.js(), name, id, input);
  if (!r.code.empty()) {
    error = r.why;
    return std::nullopt;
  }
  std::string out = "workflow " + name + " started: id " + id + "\n";
  if (wait.count() <= 0) return out;
  auto end = wait_for_end(conn, id, wait, error);
  if (!end) return std::nullopt;
  if (end->what == entry::kind::fail) {
    error = "workflow " + id + " failed: " + end->body;
    return std::nullopt;
  }
  return out + end->body + "\n";
}

std::optional<std::string> workflow_signal(const std::string& url, const std::string& id, const std::string& signal,
                                           const std::string& payload, std::string& error) {
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  request_result r = signal_workflow(conn.js(), id, signal, payload);
  if (!r.code.empty()) {
    error = r.why;
    return std::nullopt;
  }
  return "signal " + signal + " sent to workflow " + id + "\n";
}

std::optional<std::string> workflow_show(const std::string& url, const std::string& id, bool as_json,
                                         std::string& error) {
  if (auto bad = invalid_token("workflow id", id); !bad.empty()) {
    error = bad;
    return std::nullopt;
  }
  nats_connection conn;
  if (!connect_patiently(conn, url, error)) return std::nullopt;
  std::vector<entry> all;
  if (!read_journal(conn.js(), id, 1, all, error)) return std::nullopt;
  journal_view v = view_of(all);
  if (!v.start) {
    error = "no workflow has id " + id + " (loopfleet workflow start NAME INPUT --id " + id + ")";
    return std::nullopt;
  }
  boost::json::array steps;
  for (const auto& [n, e] : v.at) {
    boost::json::object o{{"n", n},
                          {"kind", kind_name(e.what)},
                          {"name", e.name},
                          {"node", e.node},
                          {"at", utc(e.at_ms)},
                          {"seq", e.seq},
                          {"claim", e.claim}};
    if (e.what == entry::kind::step) {
      o["duration_ms"] = e.value;
      o["attempts"] = e.attempts;
      o["result_bytes"] = e.body.size();
      if (e.error) o["error"] = e.body;
    } else if (e.what == entry::kind::timer) {
      o["due"] = utc(e.value);
    } else if (e.what == entry::kind::waiting) {
      auto b = v.bound.find(n);
      o["signal"] = b == v.bound.end() ? "not yet" : "received";
    }
    steps.push_back(std::move(o));
  }
  for (const auto& [n, g] : v.bound)
    if (!v.at.contains(n))
      steps.push_back(boost::json::object{
          {"n", n}, {"kind", "got"}, {"name", g.name}, {"node", g.node}, {"seq", g.seq}, {"claim", g.claim}});
  // Every entry, in order, for whoever audits it (which executor wrote what).
  boost::json::array journal;
  for (const auto& e : all)
    journal.push_back(boost::json::object{
        {"seq", e.seq}, {"kind", kind_name(e.what)}, {"n", e.n}, {"name", e.name}, {"claim", e.claim}, {"node", e.node}});
  boost::json::array claims;
  for (const auto& c : v.claims) claims.push_back(boost::json::object{{"seq", c.seq}, {"node", c.node}, {"pid", c.value}, {"at", utc(c.at_ms)}});
  boost::json::object j{{"id", id},
                        {"workflow", v.start->name},
                        {"status", v.status()},
                        {"started", utc(v.start->at_ms)},
                        {"input_bytes", v.start->body.size()},
                        {"claims", claims},
                        {"steps", steps},
                        {"signals", v.signals.size()},
                        {"journal", journal}};
  if (v.end) j[v.end->what == entry::kind::done ? "result" : "error"] = v.end->body;
  if (as_json) return boost::json::serialize(j) + "\n";

  std::string out = "workflow " + v.start->name + " id " + id + ": " + v.status() + ", started " +
                    utc(v.start->at_ms) + ", " + std::to_string(v.claims.size()) + " run(s)";
  std::string where;
  for (const auto& c : v.claims) where += (where.empty() ? "" : ", ") + c.node;
  if (!where.empty()) out += " (on " + where + ")";
  out += "\n  #  KIND     NAME                 NODE          DURATION  ATTEMPTS  RESULT\n";
  for (const auto& [n, e] : v.at) {
    std::string duration, attempts, result;
    if (e.what == entry::kind::step) {
      duration = std::to_string(e.value) + " ms";
      attempts = std::to_string(e.attempts);
      result = e.error ? "error: " + e.body : std::to_string(e.body.size()) + " bytes";
    } else if (e.what == entry::kind::timer) {
      result = "due " + utc(e.value);
    } else if (e.what == entry::kind::waiting) {
      result = v.bound.contains(n) ? "received" : "waiting for it";
    }
    out += "  " + pad(std::to_string(n), 2, false) + " " + pad(kind_name(e.what), 8) + " " + pad(e.name, 20) + " " +
           pad(e.node, 13) + " " + pad(duration, 9, false) + " " + pad(attempts, 9, false) + "  " + result + "\n";
  }
  if (v.end) out += (v.end->what == entry::kind::done ? "result: " : "error: ") + shown(v.end->body) + "\n";
  return out;
}

}  // namespace loopfleet::cluster
