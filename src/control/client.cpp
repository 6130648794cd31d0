#include "control/client.hpp"
#include "supervisor/status_model.hpp"

#include "runtime/private_dir.hpp"

#include <boost/json.hpp>

#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace loopfleet::control {

namespace key = status_key;

std::optional<std::string> locate(const std::string& explicit_path, const std::string& name, std::string& path) {
  if (!explicit_path.empty()) {
    path = explicit_path;
    return std::nullopt;
  }
  // A socket in a directory another user controls may be theirs, answering in our name.
  std::string dir = runtime_dir();
  std::string fix = "remove it (rm -r " + dir + ") or set XDG_RUNTIME_DIR to a directory of yours";
  if (auto err = check_private_dir("runtime directory", dir, fix)) return err;
  if (!name.empty()) {
    path = default_control_path(name);
    return std::nullopt;
  }
  std::vector<std::string> found;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 5 && n.ends_with(".sock")) found.push_back(n.substr(0, n.size() - 5));
    }
    ::closedir(d);
  }
  if (found.size() == 1) {
    path = dir + "/" + found.front() + ".sock";
    return std::nullopt;
  }
  if (found.empty()) return "no running loopfleet instance found in " + dir + " (start one with loopfleet run)";
  std::string names;
  for (const auto& n : found) names += (names.empty() ? "" : ", ") + n;
  return "several instances are running (" + names + "): choose one with --name";
}

std::optional<std::string> call(const std::string& path, const std::string& request, std::chrono::seconds timeout,
                                std::string& error) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) {
    ::close(fd);
    error = "control socket path too long: " + path;
    return std::nullopt;
  }
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    int e = errno;
    ::close(fd);
    error = "cannot reach the instance at " + path + ": " + std::strerror(e) +
            (e == ENOENT || e == ECONNREFUSED ? " (is loopfleet run running? --name or --control choose another)" : "");
    return std::nullopt;
  }
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line = request + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    error = std::string("cannot send to the instance: ") + std::strerror(errno);
    ::close(fd);
    return std::nullopt;
  }
  std::string reply;
  char buf[8192];
  while (reply.find('\n') == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      int e = errno;
      // A supervisor that died leaves its control socket with its keeper (supervisor/keeper.hpp),
      // which accepts connections but answers none.
      bool kept = ::access((path + ".keeper").c_str(), F_OK) == 0;
      error = n == 0 ? "the instance closed the control connection without a reply"
              : e == EAGAIN && kept
                  ? "no reply from the instance within " + std::to_string(timeout.count()) +
                        " s: its supervisor is blocked, or it died and its keeper holds its sockets until the same "
                        "loopfleet run is started again"
                  : std::string("no reply from the instance: ") + std::strerror(e);
      ::close(fd);
      return std::nullopt;
    }
    reply.append(buf, n);
  }
  ::close(fd);
  return reply.substr(0, reply.find('\n'));
}

namespace {
std::string fixed(const boost::json::value* v, int width, bool left = false) {
  std::string s;
  if (!v || v->is_null()) s = "-";
  else if (v->is_string()) s = std::string(v->as_string());
  else if (v->is_int64()) s = std::to_string(v->as_int64());
  else if (v->is_uint64()) s = std::to_string(v->as_uint64());
  else if (v->is_double()) {
    char b[32];
    std::snprintf(b, sizeof b, v->as_double() < 10 ? "%.2f" : "%.1f", v->as_double());
    s = b;
  }
  if (s.empty()) s = "-";
  if (static_cast<int>(s.size()) < width) s = left ? s + std::string(width - s.size(), ' ') : std::string(width - s.size(), ' ') + s;
  return s;
}

// A reply may come from another version of loopfleet or be cut short (found by
// tests/fuzz/control_fuzz.cpp: at() and as_*() threw out of `loopfleet status`): a missing
// or mistyped member renders as "-" or is skipped.
const boost::json::array& array_at(const boost::json::object& o, std::string_view key) {
  static const boost::json::array none;
  const auto* v = o.if_contains(key);
  return v && v->is_array() ? v->get_array() : none;
}

bool true_at(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_bool() && v->get_bool();
}
}  // namespace

std::string format_status(const std::string& reply_json) {
  boost::system::error_code ec;
  auto v = boost::json::parse(reply_json, ec);
  if (ec || !v.is_object()) return "unreadable status reply: " + reply_json + "\n";
  const auto& o = v.as_object();
  std::string out = "instance " + fixed(o.if_contains(key::name), 0) + "  pid " + fixed(o.if_contains(key::pid), 0) +
                    "  generation " + fixed(o.if_contains(key::generation), 0) + "  " +
                    fixed(o.if_contains(key::distribution), 0) + "  " + fixed(o.if_contains(key::listen), 0) +
                    "  workers " + fixed(o.if_contains(key::workers), 0) + " (" + fixed(o.if_contains(key::workers_from), 0) +
                    ")" + (true_at(o, key::reloading) ? "  (reloading)" : "") + "\n";
  out += "SLOT      PID  GEN  STATE       UPTIME_S  RESTARTS  RSS_MIB  BEAT_MS  LAG99_MS  CONNS  INFLIGHT    REQUESTS"
         "  LAST_EXIT\n";
  for (const auto& s : array_at(o, key::slots)) {
    if (!s.is_object()) continue;
    const auto& j = s.get_object();
    std::string rss = "-";
    if (auto* r = j.if_contains(key::rss_kib); r && r->is_int64()) {
      char b[32];
      std::snprintf(b, sizeof b, "%.1f", r->as_int64() / 1024.0);
      rss = b;
    }
    boost::json::value rss_v(rss);
    std::string helpers;
    for (const auto& x : array_at(j, key::helpers))
      if (x.is_object()) helpers += (helpers.empty() ? "  helpers: " : " ") + fixed(x.get_object().if_contains(key::pid), 0);
    // Why a worker could not start (its last stderr line) says more than its exit code.
    std::string why;
    if (auto* e = j.if_contains(key::last_error); e && e->is_string() && !e->as_string().empty())
      why = ": " + std::string(e->as_string());
    out += fixed(j.if_contains(key::slot), 4) + " " + fixed(j.if_contains(key::pid), 8) + " " +
           fixed(j.if_contains(key::generation), 4) + "  " + fixed(j.if_contains(key::state), 10, true) + " " +
           fixed(j.if_contains(key::uptime_s), 9) + " " + fixed(j.if_contains(key::restarts), 9) + " " +
           fixed(&rss_v, 8) + " " + fixed(j.if_contains(key::heartbeat_age_ms), 8) + " " +
           fixed(j.if_contains(key::lag_p99_ms), 9) + " " + fixed(j.if_contains(key::connections), 6) + " " +
           fixed(j.if_contains(key::in_flight), 9) + " " + fixed(j.if_contains(key::requests), 11) + "  " +
           fixed(j.if_contains(key::last_exit), 0, true) + why + helpers + "\n";
  }
  for (const auto& d : array_at(o, key::draining)) {
    if (!d.is_object()) continue;
    const auto& j = d.get_object();
    out += fixed(j.if_contains(key::slot), 4) + " " + fixed(j.if_contains(key::pid), 8) + " " +
           fixed(j.if_contains(key::generation), 4) + "  draining\n";
  }
  // The cluster: where this node's jobs are stored, and whether that is what was promised.
  if (auto* c = o.if_contains(key::cluster); c && c->is_object()) {
    const auto& j = c->as_object();
    out += "cluster node " + fixed(j.if_contains(key::node), 0) + "  nats " + fixed(j.if_contains(key::nats), 0) +
           (true_at(j, key::nats_ready) ? "" : " (not ready)") + "\n";
    for (const auto& x : array_at(j, key::streams)) {
      if (!x.is_object()) continue;
      const auto& d = x.get_object();
      bool quorum = true_at(d, "quorum");
      out += "  " + fixed(d.if_contains("kind"), 8, true) + " " + fixed(d.if_contains(key::name), 20, true) + " " +
             fixed(d.if_contains("has"), 0) + " of " + fixed(d.if_contains("want"), 0) + " replicas, " +
             fixed(d.if_contains("in_sync"), 0) + " in sync, " + (quorum ? "quorum" : "NO QUORUM");
      if (const auto* on = d.if_contains("servers"); on && on->is_string() && !on->get_string().empty())
        out += "; on " + std::string(on->get_string());
      out += "\n";
    }
  }
  return out;
}

}  // namespace loopfleet::control
