#include "front/follow.hpp"

#include "cluster/nats_connection.hpp"
#include "cluster/node.hpp"

#include <boost/json.hpp>
#include <nats/nats.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

namespace loopfleet::front {

std::optional<std::string> haproxy_command(const std::string& socket, const std::string& command, std::string& error) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::strerror(errno);
    return std::nullopt;
  }
  // haproxy answers a command in microseconds; two seconds is a haproxy that is not there.
  timeval limit{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  std::string line = command + "\n", out;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            ::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
  for (char buf[16384]; ok;) {  // haproxy closes after answering
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) out.append(buf, static_cast<std::size_t>(n));
  }
  if (!ok) error = "haproxy's admin socket " + socket + ": " + std::strerror(errno);
  ::close(fd);
  if (!ok) return std::nullopt;
  return out;
}

bool save_server_state(const std::string& socket, const std::string& file, std::string& error) {
  auto state = haproxy_command(socket, "show servers state", error);
  if (!state) return false;
  if (!state->starts_with("1\n")) {
    error = "haproxy answered 'show servers state' with: " + state->substr(0, 80);
    return false;
  }
  std::string partial = file + ".new";
  {
    std::ofstream out(partial, std::ios::trunc);
    out << *state;
    if (!out.flush()) {
      error = "cannot write " + partial;
      return false;
    }
  }
  if (std::rename(partial.c_str(), file.c_str()) != 0) {
    error = "cannot rename " + partial + " to " + file + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

namespace {

using clock = std::chrono::steady_clock;

// The runtime API commands that carry out one change of plan_slots, sent as one request.
std::string commands_for(const slot_change& ch, const follow_config& c) {
  std::string server = c.backend + "/" + c.slot_prefix + std::to_string(ch.index);
  auto set = [&](const std::string& what) { return "set server " + server + " " + what + ";"; };
  std::string out;
  if (ch.what == slot_change::empty) {
    // The agent first: an agent that answers "up" would undo the maintenance within one
    // agent-inter. In maintenance, the idle connections to it are closed.
    out += "disable agent " + server + ";";
    out += set("state maint");
    out += set("addr " + empty_slot_address.host + " port " + std::to_string(empty_slot_address.port));
    out.pop_back();  // an empty last command would be answered with the whole help text
    return out;
  }
  const member& m = ch.node;
  out += set("addr " + m.http.host + " port " + std::to_string(m.http.port));
  if (m.agent.port) {
    // Enabled first: haproxy refuses to set the address of an agent that is disabled.
    out += "enable agent " + server + ";";
    out += set("agent-addr " + m.agent.host);
    out += set("agent-port " + std::to_string(m.agent.port));
  } else {
    out += "disable agent " + server + ";";
  }
  out += "enable health " + server + ";";
  out += set("state ready");
  out.pop_back();
  return out;
}

// What haproxy answers to a command it refused: anything but the notes it prints on success.
std::string refusal(const std::string& answer) {
  std::string out;
  std::size_t at = 0;
  while (at < answer.size()) {
    auto end = answer.find('\n', at);
    std::string line = answer.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? answer.size() : end + 1;
    if (line.empty() || line.starts_with("no need to change") || line.find(" changed from ") != std::string::npos)
      continue;
    out += (out.empty() ? "" : "; ") + line;
  }
  return out;
}

}  // namespace

cluster_follower::cluster_follower(follow_config c) : c_(std::move(c)), thread_([this] { run(); }) {}

cluster_follower::~cluster_follower() {
  stop_ = true;
  thread_.join();
}

void cluster_follower::run() {
  auto say = [this](const std::string& what) {
    std::fprintf(stderr, "loopfleet: front '%s': %s\n", c_.name.c_str(), what.c_str());
  };
  cluster::nats_connection conn;
  kvStore* kv = nullptr;
  // What was said already, so that a condition that lasts is one line, not one a poll.
  bool out_of_touch = false, ever_read = false;
  std::string haproxy_trouble;
  bool haproxy_answered = false;  // its socket appears a moment after it starts
  const auto began = clock::now();
  std::set<std::string> problems_said, no_slot_said;
  std::size_t known = 0;  // nodes in slots at the last whole read
  auto lost_touch = [&](const std::string& why) {
    if (!out_of_touch)
      say("cannot read the cluster's membership from NATS at " + c_.nats_url + " (" + why + "): keeping the " +
          std::to_string(known) + " node(s) it knew; retrying");
    out_of_touch = true;
  };
  // Four times a second: a node is in HAProxy well within 3 s of its first heartbeat (its
  // checks take the rest), and a read costs a few requests to NATS.
  constexpr auto poll = std::chrono::milliseconds(250);
  for (auto next = clock::now(); !stop_; next += poll) {
    std::this_thread::sleep_until(next);
    if (stop_) break;
    if (clock::now() > next + poll) next = clock::now();  // a slow read: do not catch up in a burst
    if (!conn) {
      natsStatus s = conn.open(c_.nats_url, {.reconnect_forever = true, .in_background = true,
                                             .timeout = std::chrono::milliseconds(2000)});
      if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        lost_touch(natsStatus_GetText(s));
        continue;
      }
    }
    if (!kv && js_KeyValue(&kv, conn.js(), cluster::nodes_bucket) != NATS_OK) {
      kv = nullptr;
      lost_touch(natsConnection_Status(conn.nc()) == NATS_CONN_STATUS_CONNECTED
                     ? "no node has announced itself yet: bucket " + std::string(cluster::nodes_bucket) + " missing"
                     : "not connected");
      continue;
    }
    bool whole = false;
    boost::json::array beats = cluster::read_nodes(conn.js(), kv, c_.settings.down_after_s, &whole);
    if (!whole) {
      lost_touch(natsConnection_Status(conn.nc()) == NATS_CONN_STATUS_CONNECTED ? "the bucket did not answer"
                                                                               : "not connected");
      continue;
    }
    if (out_of_touch || !ever_read) say("following the cluster's membership through NATS at " + c_.nats_url);
    out_of_touch = false;
    ever_read = true;
    std::vector<member> members;
    for (const auto& b : beats) {
      if (!b.is_object()) continue;
      auto r = read_heartbeat(b.as_object());
      if (!r.problem.empty() && problems_said.insert(r.problem).second) say(r.problem);
      if (r.m) members.push_back(std::move(*r.m));
    }
    std::string error;
    auto text = haproxy_command(c_.socket, "show servers state " + c_.backend, error);
    auto slots = text ? parse_servers_state(*text, c_.slot_prefix) : std::nullopt;
    if (!slots) {
      // While haproxy starts or reloads its socket may be missing for a moment.
      if (!text) error = "cannot read its servers (" + error + ")";
      else error = "unexpected answer to 'show servers state': " + text->substr(0, 80);
      bool starting = !haproxy_answered && clock::now() - began < std::chrono::seconds(10);
      if (error != haproxy_trouble && !starting) say("haproxy: " + error + "; retrying");
      if (!starting) haproxy_trouble = error;
      continue;
    }
    haproxy_trouble.clear();
    haproxy_answered = true;
    follow_plan plan = plan_slots(members, *slots, c_.settings);
    known = 0;
    for (const auto& s : *slots) known += s.addr == empty_slot_address ? 0 : 1;
    for (const auto& ch : plan.changes) {
      if (stop_) break;
      std::string server = c_.slot_prefix + std::to_string(ch.index);
      auto answer = haproxy_command(c_.socket, commands_for(ch, c_), error);
      std::string refused = answer ? refusal(*answer) : error;
      std::string who = ch.node.node.empty() ? "" : "node " + ch.node.node + " ";
      if (ch.what == slot_change::fill)
        say(who + "at " + endpoint_text(ch.node.http) +
            (ch.node.agent.port ? " (agent " + endpoint_text(ch.node.agent) + ")" : " (no agent check)") + " " +
            ch.reason + ": in slot " + server + (refused.empty() ? "" : "; haproxy refused: " + refused));
      else
        say(who + "slot " + server + " emptied: " + ch.reason + (refused.empty() ? "" : "; haproxy refused: " + refused));
      if (ch.what == slot_change::fill) no_slot_said.erase(ch.node.node);
    }
    for (const auto& n : plan.no_slot)
      if (no_slot_said.insert(n).second)
        say("node " + n + " waits: all " + std::to_string(slots->size()) + " slots are taken (raise --slots)");
    if (!plan.changes.empty() && !save_server_state(c_.socket, c_.state_file, error))
      say("cannot save the slots for a reload: " + error);
  }
  if (kv) kvStore_Destroy(kv);
}

}  // namespace loopfleet::front
