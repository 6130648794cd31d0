// The front's decisions as plain functions over plain values: what each signal and each
// child's exit makes `loopfleet front` do to haproxy and keepalived, and, with --nats, which
// of HAProxy's server slots holds which node of the cluster. front.cpp and follow.cpp only
// apply them; front_test.cpp drives every order of events without a process.
#pragma once

#include <boost/json/fwd.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace loopfleet::front {

// The loop's view when something happens. Facts only: a child that exited is already
// marked gone when the event about it is decided.
struct children_view {
  bool haproxy = false;     // haproxy runs
  bool keepalived = false;  // keepalived runs (never without --vip)
  int stop = 0;             // the stop haproxy has been told: 0, SIGUSR1 (soft) or SIGTERM (hard)
};

enum class front_event {
  graceful_stop,  // SIGTERM, SIGINT
  fast_stop,      // SIGQUIT
  reload,         // SIGHUP
  keepalived_exited,
  haproxy_exited,
  quiet_second,  // a second without a signal while stopping (or an interrupted wait)
};

struct front_step {
  bool announce = false;         // the event gets its log line
  bool stop_keepalived = false;  // SIGTERM to keepalived: it gives the address to a peer
  int signal_haproxy = 0;        // send haproxy this signal now (0: none)
  int stop = 0;                  // the stop in force from now on
  bool exit = false;             // both children are gone: exit with haproxy's status

  bool operator==(const front_step&) const = default;
};

// A stop goes to keepalived first, and haproxy is told only once keepalived is gone, so
// clients reach the peer that took the address instead of closed listeners. A hard stop
// (SIGTERM to haproxy) wins over a soft one (SIGUSR1), never the reverse, and does not wait
// for the address to move. HAProxy's master can miss a signal that comes in its first second
// or two (seen with 2.6: the soft stop never began), so while stopping the loop wakes every
// second (`stopping`) and a quiet second repeats the stop to haproxy.
front_step decide(const children_view& now, front_event e);

// Whether the loop waits for signals with a one-second limit (a stop is under way) rather
// than for ever.
inline bool stopping(const children_view& now) { return now.stop != 0; }

// --- following the cluster (--nats) ---

// An IP address and a port, as HAProxy's runtime API takes them: an IPv6 host without brackets.
struct endpoint {
  std::string host;
  int port = 0;
  bool operator==(const endpoint&) const = default;
};
// "10.0.0.5:8080" or "[fd00::5]:8080" with an IP literal (HAProxy sets no names at run time)
// and a port from 1 to 65535; nullopt otherwise.
std::optional<endpoint> parse_endpoint(std::string_view text);
std::string endpoint_text(const endpoint& e);

// One node of the cluster as its last heartbeat in the nodes bucket tells the front.
struct member {
  std::string node;
  endpoint http;          // where HAProxy sends its requests
  endpoint agent;         // its --agent-check; port 0 = it has none
  double age_s = 0;       // since that heartbeat
  bool stopping = false;  // it is stopping gracefully (its agent says drain)
};
// A heartbeat (an element of cluster::read_nodes) as a member, or why it cannot be one: one
// sentence naming the node and the field. A node that advertises no HTTP address (a job-only
// node, or one bound to a Unix socket) is not an error: nullopt in `member`, with no reason.
struct heartbeat_reading {
  std::optional<member> m;
  std::string problem;  // non-empty: skipped, and the front says this once
};
heartbeat_reading read_heartbeat(const boost::json::object& beat);

// One server-template slot of the backend (`nodeN`), as `show servers state` tells it.
struct slot {
  int index = 0;        // N of nodeN, from 1
  endpoint addr;        // `empty_slot_address` when it holds no node
  endpoint agent;       // agent-addr and agent-port
  bool maintenance = false;  // admin state MAINT (forced, or inherited)
  bool up = false;           // operational state: running, its checks pass
  bool drain = false;        // admin state DRAIN (the agent's, or the CLI's)
  // Takes requests now: HAProxy would send it new ones.
  bool serving() const { return up && !maintenance && !drain; }
};
inline const endpoint empty_slot_address{"127.0.0.1", 1};

// `show servers state BACKEND` (format 1) as slots: the rows of servers named
// `<prefix>N`; other rows (the static --server ones) are left out. nullopt when the text is
// not that output (haproxy answered something else).
std::optional<std::vector<slot>> parse_servers_state(std::string_view text, std::string_view prefix);

struct follow_settings {
  double down_after_s = 3;    // a heartbeat older than this: the node is not announcing itself
  double forget_after_s = 30;  // ...and after this long its slot is emptied (unless it still serves)
  std::vector<endpoint> fixed;  // the static --server nodes: never put in a slot
};

// What to do with one slot. `fill` writes its address, agent address and port and makes it
// ready (also to repair a slot left half-filled, or to point its agent elsewhere); `empty`
// stops its agent, puts it in maintenance and parks it at `empty_slot_address`.
struct slot_change {
  enum kind { fill, empty } what = fill;
  int index = 0;
  member node;         // for fill: the node; for empty: the one it held, if known
  std::string reason;  // for the log: "joined", "stopped gracefully", "no heartbeat for 31 s"
  bool operator==(const slot_change& o) const {
    return what == o.what && index == o.index && node.node == o.node.node && node.http == o.node.http;
  }
};
struct follow_plan {
  std::vector<slot_change> changes;
  std::vector<std::string> no_slot;  // nodes that should be balanced to but find every slot taken
};

// Which slot holds which node, from the membership and the slots as they are. A slot's node
// is the member whose HTTP address it holds (so the plan survives a restart of the front and a
// reload of haproxy: it starts again from what HAProxy shows). The rules:
//  - a member that announces itself (heartbeat fresher than down_after_s), is not stopping and
//    is in no slot gets the lowest empty slot; a slot of its that is in maintenance, or whose
//    agent address differs, is filled again;
//  - a stopping member keeps its slot while it announces itself (its agent says drain, so it
//    gets no new requests), and is emptied once it has gone quiet: it drained and exited;
//  - a member that went quiet without stopping (dead, or cut off) keeps its slot, which
//    HAProxy's checks mark down, until forget_after_s, then it is emptied; back before that,
//    it takes requests again as soon as the checks pass;
//  - a slot whose address no member has (the node's key was deleted, or its heartbeat is
//    malformed now) is emptied only when HAProxy does not see it serving: nothing that still
//    serves is removed. The same holds for the quiet members above;
//  - a second slot with the same address is emptied.
// Call it only with a membership that was read whole: a failed read changes nothing.
follow_plan plan_slots(const std::vector<member>& members, const std::vector<slot>& slots, const follow_settings& s);

}  // namespace loopfleet::front
