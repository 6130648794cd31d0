// The front's flags and the HAProxy configuration it writes; the order in which it stops its
// children; the agent check's replies.
#include "front/front.hpp"
#include "front/policy.hpp"
#include "supervisor/policy.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>

using namespace loopfleet;

namespace {
std::optional<std::string> parse(std::vector<std::string_view> args, front::config& c) {
  return front::parse_args(args, c, nullptr, nullptr);
}
bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST(Front, ServersWithAgentPortsBecomeCheckedServers) {
  front::config c;
  ASSERT_FALSE(parse({"--listen", "127.0.0.1:8000", "--server", "10.0.0.1:8080@9100,10.0.0.2:8080", "--agent-port",
                      "9200", "--server", "[::1]:8081@9101", "--stats", "127.0.0.1:8404", "--state-dir", "/tmp/x"},
                     c));
  ASSERT_EQ(c.servers.size(), 3u);
  EXPECT_EQ(c.servers[1].agent_port, 9200);  // the default for servers without @
  auto cfg = front::haproxy_config(c);
  EXPECT_TRUE(has(cfg, "bind 127.0.0.1:8000\n"));
  EXPECT_TRUE(has(cfg, "server 10.0.0.1_8080 10.0.0.1:8080 agent-check agent-addr 10.0.0.1 agent-port 9100"));
  EXPECT_TRUE(has(cfg, "server 10.0.0.2_8080 10.0.0.2:8080 agent-check agent-addr 10.0.0.2 agent-port 9200"));
  EXPECT_TRUE(has(cfg, " [::1]:8081 agent-check agent-addr ::1 agent-port 9101"));
  EXPECT_TRUE(has(cfg, "retry-on conn-failure empty-response"));
  EXPECT_TRUE(has(cfg, "http-request disable-l7-retry unless METH_GET"));  // POST is never sent twice
  EXPECT_TRUE(has(cfg, "option redispatch 1"));
  // Off: with it haproxy 2.6.12's master exited 138 in 1 graceful stop in 3 (front.cpp).
  EXPECT_FALSE(has(cfg, "option idle-close-on-response"));
  EXPECT_TRUE(has(cfg, "prometheus-exporter if { path /metrics }"));
  EXPECT_TRUE(has(cfg, "stats socket /tmp/x/front.haproxy.sock mode 600"));
  EXPECT_FALSE(has(cfg, "httpchk"));  // a TCP check unless --health-path
}

TEST(Front, HealthPathAndInterval) {
  front::config c;
  ASSERT_FALSE(parse({"--listen", ":8000", "--server", "10.0.0.1:8080", "--health-path", "/health", "--check-interval",
                      "500ms"},
                     c));
  auto cfg = front::haproxy_config(c);
  EXPECT_TRUE(has(cfg, "bind *:8000\n"));
  EXPECT_TRUE(has(cfg, "option httpchk GET /health"));
  EXPECT_TRUE(has(cfg, "check inter 500ms fastinter 125ms"));
  EXPECT_FALSE(has(cfg, "agent-check"));  // no agent port given
}

TEST(Front, ErrorsNameTheFlagAndTheFix) {
  auto error = [](std::vector<std::string_view> args) {
    front::config c;
    auto e = parse(args, c);
    return e ? *e : std::string("no error");
  };
  EXPECT_TRUE(has(error({"--server", "10.0.0.1:80"}), "front needs --listen"));
  EXPECT_TRUE(has(error({"--listen", ":8000"}), "at least one --server"));
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "10.0.0.1:80@x"}), "agent port after '@'"));
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "0.0.0.0:80"}), "not a wildcard"));
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "10.0.0.1"}), "--server '10.0.0.1'"));
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "a:1,a:1"}), "given twice"));
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "a:1", "--health-path", "health"}), "must start with '/'"));
  EXPECT_TRUE(has(error({"--listen", "unix:/x", "--server", "a:1"}), "not a Unix path"));
  // HAProxy's admin socket lives in the state directory, and a socket's path is short.
  std::string deep = "/tmp/" + std::string(80, 'd');
  EXPECT_TRUE(has(error({"--listen", ":8000", "--server", "a:1", "--state-dir", deep, "--name", "front"}),
                  "too long for HAProxy's admin socket"));
  EXPECT_EQ(error({"--listen", ":8000", "--server", "a:1", "--state-dir", deep.substr(0, 75), "--name", "front"}),
            "no error");  // 75 + "/front.haproxy.sock": 95 bytes, the most that fits
}

TEST(AgentCheck, AKeeperWithoutItsSupervisorSaysDrain) {
  std::string r = supervisor::agent_check_reply_orphaned();
  EXPECT_TRUE(r.starts_with("drain #")) << r;
  EXPECT_EQ(r.find('\n'), r.size() - 1) << r;  // one line: HAProxy reads up to the newline
}

TEST(AgentCheck, UpWithWeightDrainAndDown) {
  EXPECT_EQ(supervisor::agent_check_reply(4, 4, false), "up ready 100% # 4/4 workers serving\n");
  EXPECT_EQ(supervisor::agent_check_reply(4, 1, false), "up ready 25% # 1/4 workers serving\n");
  EXPECT_EQ(supervisor::agent_check_reply(4, 0, false), "down # no worker serving\n");
  EXPECT_EQ(supervisor::agent_check_reply(4, 4, true), "drain # stopping, 4/4 workers serving\n");
  EXPECT_EQ(supervisor::agent_check_reply(300, 1, false).substr(0, 12), "up ready 1% ");  // never 0%: that is drain
}

TEST(Front, VipRunsKeepalivedAndBindsTransparently) {
  front::config c;
  ASSERT_FALSE(parse({"--listen", "10.0.0.100:80", "--server", "10.0.0.1:8080@9100", "--vip", "10.0.0.100/24",
                      "--vip-interface", "eth0", "--vip-peer", "10.0.0.3", "--vip-priority", "90"},
                     c));
  ASSERT_TRUE(c.vip);
  EXPECT_TRUE(has(front::haproxy_config(c), "bind 10.0.0.100:80 transparent\n"));  // before the address is here
  auto ka = front::keepalived_config(c, 4242, "/usr/bin/kill");
  EXPECT_TRUE(has(ka, "script \"/usr/bin/kill -0 4242\""));  // the address follows haproxy's life
  EXPECT_TRUE(has(ka, "priority 90\n"));
  EXPECT_TRUE(has(ka, "unicast_peer {\n        10.0.0.3\n"));
  EXPECT_TRUE(has(ka, "10.0.0.100/24 dev eth0"));
  EXPECT_TRUE(has(ka, "state BACKUP"));
}

TEST(Front, VipErrors) {
  auto error = [](std::vector<std::string_view> extra) {
    std::vector<std::string_view> args{"--listen", ":80", "--server", "10.0.0.1:80"};
    args.insert(args.end(), extra.begin(), extra.end());
    front::config c;
    auto e = parse(args, c);
    return e ? *e : std::string("no error");
  };
  EXPECT_TRUE(has(error({"--vip", "10.0.0.100"}), "with its prefix length"));
  EXPECT_TRUE(has(error({"--vip", "10.0.0.100/24"}), "needs --vip-interface"));
  EXPECT_TRUE(has(error({"--vip", "10.0.0.100/24", "--vip-interface", "eth0", "--vip-peer", "x"}), "--vip-peer 'x'"));
  EXPECT_TRUE(has(error({"--vip-interface", "eth0"}), "need --vip"));
}

namespace {
using front::children_view;
using front::decide;
using front::front_event;
using front::front_step;

// The front without --vip, and with keepalived beside haproxy.
constexpr children_view alone{.haproxy = true};
constexpr children_view with_vip{.haproxy = true, .keepalived = true};

children_view after(children_view now, const front_step& s) {
  now.stop = s.stop;
  return now;
}
}  // namespace

namespace loopfleet::front {
void PrintTo(const front_step& s, std::ostream* os) {
  *os << "{announce " << s.announce << ", stop_keepalived " << s.stop_keepalived << ", signal_haproxy "
      << s.signal_haproxy << ", stop " << s.stop << ", exit " << s.exit << "}";
}
}  // namespace loopfleet::front

TEST(FrontStop, WithoutVipHaproxyStopsSoftAtOnceAndTheLoopRepeatsIt) {
  front_step s = decide(alone, front_event::graceful_stop);
  EXPECT_EQ(s, (front_step{.announce = true, .signal_haproxy = SIGUSR1, .stop = SIGUSR1}));
  EXPECT_TRUE(front::stopping(after(alone, s)));
  EXPECT_FALSE(front::stopping(alone));  // no stop: the loop waits for ever
  // haproxy's master may have missed it: each quiet second tells it again.
  EXPECT_EQ(decide(after(alone, s), front_event::quiet_second),
            (front_step{.signal_haproxy = SIGUSR1, .stop = SIGUSR1}));
  EXPECT_EQ(decide({.stop = SIGUSR1}, front_event::haproxy_exited),
            (front_step{.announce = true, .stop = SIGUSR1, .exit = true}));
}

TEST(FrontStop, WithVipKeepalivedGoesFirstAndHaproxyOnlyOnceTheAddressMoved) {
  front_step s = decide(with_vip, front_event::graceful_stop);
  // haproxy still accepts while the peer takes the address.
  EXPECT_EQ(s, (front_step{.announce = true, .stop_keepalived = true, .stop = SIGUSR1}));
  EXPECT_EQ(decide(after(with_vip, s), front_event::quiet_second), (front_step{.stop = SIGUSR1}));
  // keepalived's exit we asked for: not announced, and now haproxy stops.
  EXPECT_EQ(decide({.haproxy = true, .stop = SIGUSR1}, front_event::keepalived_exited),
            (front_step{.signal_haproxy = SIGUSR1, .stop = SIGUSR1}));
  EXPECT_EQ(decide({.haproxy = true, .stop = SIGUSR1}, front_event::quiet_second),
            (front_step{.signal_haproxy = SIGUSR1, .stop = SIGUSR1}));
  EXPECT_EQ(decide({.stop = SIGUSR1}, front_event::haproxy_exited),
            (front_step{.announce = true, .stop = SIGUSR1, .exit = true}));
}

TEST(FrontStop, ASecondSignalForcesAHardStopThatNothingSoftens) {
  children_view soft = after(with_vip, decide(with_vip, front_event::graceful_stop));
  front_step hard = decide(soft, front_event::fast_stop);
  // Without waiting for the address to move.
  EXPECT_EQ(hard, (front_step{.announce = true, .stop_keepalived = true, .signal_haproxy = SIGTERM, .stop = SIGTERM}));
  EXPECT_EQ(decide(after(soft, hard), front_event::graceful_stop), (front_step{.announce = true, .stop = SIGTERM}));
  EXPECT_EQ(decide(after(soft, hard), front_event::fast_stop), (front_step{.announce = true, .stop = SIGTERM}));
  // Once keepalived is gone the hard stop is what haproxy is told again.
  EXPECT_EQ(decide({.haproxy = true, .stop = SIGTERM}, front_event::keepalived_exited),
            (front_step{.signal_haproxy = SIGTERM, .stop = SIGTERM}));
  EXPECT_EQ(decide({.haproxy = true, .stop = SIGTERM}, front_event::quiet_second),
            (front_step{.signal_haproxy = SIGTERM, .stop = SIGTERM}));
  // A hard stop from the start, with --vip: both at once.
  EXPECT_EQ(decide(with_vip, front_event::fast_stop),
            (front_step{.announce = true, .stop_keepalived = true, .signal_haproxy = SIGTERM, .stop = SIGTERM}));
}

TEST(FrontStop, HaproxyAlreadyDeadTakesKeepalivedAndTheAddressWithIt) {
  // Not over until keepalived is gone too.
  EXPECT_EQ(decide({.keepalived = true}, front_event::haproxy_exited),
            (front_step{.announce = true, .stop_keepalived = true}));
  // A stop asked now goes to keepalived only.
  EXPECT_EQ(decide({.keepalived = true}, front_event::graceful_stop),
            (front_step{.announce = true, .stop_keepalived = true, .stop = SIGUSR1}));
  EXPECT_EQ(decide({.keepalived = true}, front_event::fast_stop),
            (front_step{.announce = true, .stop_keepalived = true, .stop = SIGTERM}));
  // keepalived then exits, as asked: worded as its own exit (as before), and the front is done.
  EXPECT_EQ(decide({}, front_event::keepalived_exited), (front_step{.announce = true, .stop = SIGUSR1, .exit = true}));
  EXPECT_EQ(decide({.stop = SIGUSR1}, front_event::quiet_second), (front_step{.stop = SIGUSR1}));
}

TEST(FrontStop, KeepalivedDeadOnItsOwnStopsTheFrontSoftly) {
  front_step s = decide(alone, front_event::keepalived_exited);
  EXPECT_EQ(s, (front_step{.announce = true, .signal_haproxy = SIGUSR1, .stop = SIGUSR1}));
  // A stop signal then goes straight to haproxy.
  EXPECT_EQ(decide(after(alone, s), front_event::graceful_stop).signal_haproxy, SIGUSR1);
  EXPECT_EQ(decide(after(alone, s), front_event::fast_stop).signal_haproxy, SIGTERM);
}

TEST(FrontStop, ReloadGoesToHaproxyUnlessAStopBegan) {
  EXPECT_EQ(decide(with_vip, front_event::reload), (front_step{.announce = true, .signal_haproxy = SIGUSR2}));
  // Once stopping, a reload would bind the listeners again.
  EXPECT_EQ(decide({.haproxy = true, .stop = SIGUSR1}, front_event::reload), (front_step{.stop = SIGUSR1}));
  EXPECT_EQ(decide(alone, front_event::quiet_second), front_step{});  // an interrupted wait
}

// --- following the cluster: heartbeats, HAProxy's slots, and which slot holds which node ---

namespace {

front::member node(std::string name, int port, double age = 0.5, bool stopping = false) {
  return {name, {"10.0.0.1", port}, {"10.0.0.1", port + 1000}, age, stopping};
}
front::slot filled(int index, int port, bool up = true) {
  front::slot s{index, {"10.0.0.1", port}, {"10.0.0.1", port + 1000}};
  s.up = up;
  return s;
}
front::slot empty(int index) {
  front::slot s{index, front::empty_slot_address, {"127.0.0.1", 1}};
  s.maintenance = true;
  return s;
}
std::vector<front::slot_change> changes(const std::vector<front::member>& m, const std::vector<front::slot>& s,
                                        front::follow_settings settings = {}) {
  return front::plan_slots(m, s, settings).changes;
}
using change = front::slot_change;

}  // namespace

TEST(FrontFollow, HeartbeatsGiveMembersOrOneProblemEach) {
  auto read = [](const char* text) { return front::read_heartbeat(boost::json::parse(text).as_object()); };
  auto r = read(R"({"node":"n1","http":"10.0.0.5:8080","agent":"[fd00::5]:9101","age_s":0.4,"stopping":true})");
  ASSERT_TRUE(r.m);
  EXPECT_EQ(r.m->http, (front::endpoint{"10.0.0.5", 8080}));
  EXPECT_EQ(r.m->agent, (front::endpoint{"fd00::5", 9101}));
  EXPECT_TRUE(r.m->stopping);
  EXPECT_TRUE(r.problem.empty());
  r = read(R"({"node":"jobs-only","age_s":0.1})");  // serves no HTTP: not a member, not a problem
  EXPECT_FALSE(r.m);
  EXPECT_TRUE(r.problem.empty());
  r = read(R"({"node":"n2","http":"localhost:8080","age_s":0.1})");  // HAProxy sets no names at run time
  EXPECT_FALSE(r.m);
  EXPECT_TRUE(has(r.problem, "node n2 advertises http \"localhost:8080\", not IP:PORT: skipped"));
  EXPECT_FALSE(read(R"({"node":"n3","http":"10.0.0.1:0"})").m);
  EXPECT_FALSE(read(R"({"node":"n3","http":"10.0.0.1:8080","agent":"10.0.0.1"})").m);
  EXPECT_FALSE(read(R"({"node":"n3","http":"::1:8080"})").m);  // IPv6 needs its brackets
  EXPECT_FALSE(read(R"({"node":"n3","http":8080})").m);
  EXPECT_TRUE(has(read(R"({"http":"10.0.0.1:80"})").problem, "without a node name"));
  r = read(R"({"node":"n4","http":"10.0.0.1:80"})");
  ASSERT_TRUE(r.m);
  EXPECT_EQ(r.m->agent.port, 0);  // no agent check
  EXPECT_GT(r.m->age_s, 1e6);     // no age: as old as can be
}

TEST(FrontFollow, ShowServersStateBecomesSlots) {
  std::string text =
      "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
      "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
      "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
      "srv_agent_addr srv_agent_port\n"
      "3 nodes 1 10.0.0.9_80 10.0.0.9 2 0 100 100 5 6 3 3 6 22 0 0 - 80 - 0 0 - 10.0.0.9 9101\n"
      "3 nodes 2 node1 127.0.0.1 0 5 100 100 1 1 0 0 14 22 0 0 - 1 - 0 0 - 127.0.0.1 1\n"
      "3 nodes 3 node2 10.0.0.1 2 4 100 100 2 6 3 3 6 22 0 0 - 18101 - 0 0 - 10.0.0.1 18102\n"
      "3 nodes 4 node3 10.0.0.2 2 12 100 100 2 6 3 3 6 22 0 0 - 18201 - 0 0 - 10.0.0.2 18202\n\n";
  auto slots = front::parse_servers_state(text, "node");
  ASSERT_TRUE(slots);
  ASSERT_EQ(slots->size(), 3u);  // the static server is not a slot
  EXPECT_EQ((*slots)[0].addr, front::empty_slot_address);
  EXPECT_TRUE((*slots)[0].maintenance);
  EXPECT_FALSE((*slots)[0].serving());
  EXPECT_EQ((*slots)[1].index, 2);
  EXPECT_EQ((*slots)[1].addr, (front::endpoint{"10.0.0.1", 18101}));
  EXPECT_EQ((*slots)[1].agent, (front::endpoint{"10.0.0.1", 18102}));
  EXPECT_TRUE((*slots)[1].serving());  // admin 4: `disabled` in the configuration, since left
  EXPECT_TRUE((*slots)[2].drain);      // admin 12: the agent said drain
  EXPECT_FALSE((*slots)[2].serving());
  EXPECT_FALSE(front::parse_servers_state("Unknown command.\n", "node"));
  EXPECT_FALSE(front::parse_servers_state("1\n3 nodes 1 node1 127.0.0.1 0\n", "node"));  // cut short
}

TEST(FrontFollow, AJoiningNodeTakesTheLowestEmptySlot) {
  auto c = changes({node("n1", 8001), node("n2", 8002)}, {filled(1, 8001), empty(2), empty(3)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], (change{change::fill, 2, node("n2", 8002), "joined"}));
  // Already in: nothing to do, however often asked.
  EXPECT_TRUE(changes({node("n1", 8001), node("n2", 8002)}, {filled(1, 8001), filled(2, 8002), empty(3)}).empty());
}

TEST(FrontFollow, EveryNodeGetsItsOwnSlotAndTheRestWait) {
  auto plan = front::plan_slots({node("n1", 8001), node("n2", 8002), node("n3", 8003)}, {empty(1), empty(2)}, {});
  ASSERT_EQ(plan.changes.size(), 2u);
  EXPECT_EQ(plan.changes[0].index, 1);
  EXPECT_EQ(plan.changes[1].index, 2);
  EXPECT_EQ(plan.no_slot, std::vector<std::string>{"n3"});
}

TEST(FrontFollow, AStoppingNodeKeepsItsSlotUntilItHasGoneQuiet) {
  // While it announces itself its agent drains it: the slot stays.
  EXPECT_TRUE(changes({node("n1", 8001, 0.5, true)}, {filled(1, 8001)}).empty());
  // A stopping node that is not in a slot is not put in one.
  EXPECT_TRUE(changes({node("n1", 8001, 0.5, true)}, {empty(1)}).empty());
  // Quiet after saying it stops: it drained and exited.
  auto c = changes({node("n1", 8001, 3.5, true)}, {filled(1, 8001, false)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], (change{change::empty, 1, node("n1", 8001), "stopped gracefully"}));
}

TEST(FrontFollow, ADeadNodeIsForgottenAfterTheGraceUnlessItStillServes) {
  front::follow_settings s;
  s.forget_after_s = 30;
  EXPECT_TRUE(changes({node("n1", 8001, 10)}, {filled(1, 8001, false)}, s).empty());  // checks mark it down
  auto c = changes({node("n1", 8001, 31)}, {filled(1, 8001, false)}, s);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].what, change::empty);
  EXPECT_EQ(c[0].reason, "no heartbeat for 31 s");
  // Silent in NATS but HAProxy still sees it serve (its nats-server is down, say): kept.
  EXPECT_TRUE(changes({node("n1", 8001, 300)}, {filled(1, 8001, true)}, s).empty());
}

TEST(FrontFollow, ANodeBackBeforeTheGraceIsInItsSlotAgain) {
  auto down = filled(1, 8001, false);
  EXPECT_TRUE(changes({node("n1", 8001, 0.2)}, {down}).empty());  // its checks bring it back
  down.maintenance = true;  // half emptied when the front stopped, say
  auto c = changes({node("n1", 8001, 0.2)}, {down});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], (change{change::fill, 1, node("n1", 8001), "back"}));
  // Restarted with another agent port: the slot is pointed at it.
  auto moved = node("n1", 8001);
  moved.agent.port = 7000;
  c = changes({moved}, {filled(1, 8001)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].what, change::fill);
}

TEST(FrontFollow, NothingThatServesIsRemoved) {
  // No member has this address (its heartbeat is malformed now, or its key was deleted).
  EXPECT_TRUE(changes({}, {filled(1, 8001, true)}).empty());
  auto c = changes({}, {filled(1, 8001, false)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].reason, "no node advertises it");
  // Two slots for one address (a crash between two steps): the second goes once it is not serving.
  c = changes({node("n1", 8001)}, {filled(1, 8001), filled(2, 8001, false)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].index, 2);
}

TEST(FrontFollow, StaticServersAreNeverPutInASlot) {
  front::follow_settings s;
  s.fixed = {{"10.0.0.1", 8001}};
  EXPECT_TRUE(changes({node("n1", 8001)}, {empty(1)}, s).empty());
}

TEST(FrontFollow, ConfigurationHasTheSlotsAndTheStateFile) {
  front::config c;
  ASSERT_FALSE(parse({"--listen", "127.0.0.1:8000", "--nats", "nats://10.0.0.1:4222,nats://10.0.0.2:4222", "--slots",
                      "8", "--state-dir", "/tmp/x"},
                     c));
  EXPECT_EQ(c.nats.size(), 2u);
  EXPECT_TRUE(c.servers.empty());  // --nats alone is enough
  auto cfg = front::haproxy_config(c);
  EXPECT_TRUE(has(cfg, "server-state-file /tmp/x/front.servers.state\n"));
  EXPECT_TRUE(has(cfg, "load-server-state-from-file global\n"));
  EXPECT_TRUE(has(cfg, "server-template node 1-8 127.0.0.1:1 disabled agent-check"));
  front::config d;
  auto e = parse({"--listen", "127.0.0.1:8000", "--nats", "10.0.0.1:4222"}, d);
  ASSERT_TRUE(e);
  EXPECT_TRUE(has(*e, "is not a NATS URL"));
  // Without --nats no slots and no state file.
  front::config f;
  ASSERT_FALSE(parse({"--listen", "127.0.0.1:8000", "--server", "10.0.0.1:80"}, f));
  EXPECT_FALSE(has(front::haproxy_config(f), "server-template"));
  EXPECT_FALSE(has(front::haproxy_config(f), "server-state"));
}

TEST(AdvertisedAddress, AWildcardIsReplacedAndAUnixSocketHasNone) {
  using supervisor::advertised_address;
  EXPECT_EQ(advertised_address("10.0.0.5:8080", "", "192.168.1.2"), "10.0.0.5:8080");
  EXPECT_EQ(advertised_address("0.0.0.0:8080", "", "192.168.1.2"), "192.168.1.2:8080");
  EXPECT_EQ(advertised_address("[::]:8080", "", "192.168.1.2"), "192.168.1.2:8080");
  EXPECT_EQ(advertised_address("0.0.0.0:8080", "fd00::5", "192.168.1.2"), "[fd00::5]:8080");
  EXPECT_EQ(advertised_address("127.0.0.1:8080", "10.0.0.7", ""), "10.0.0.7:8080");
  EXPECT_EQ(advertised_address("[::1]:8080", "", ""), "[::1]:8080");
  EXPECT_EQ(advertised_address("0.0.0.0:8080", "", ""), std::nullopt);
  EXPECT_EQ(advertised_address("unix:/run/app.sock", "10.0.0.7", ""), std::nullopt);
}

TEST(AdvertisedAddress, TheAdminIsLinkedWhereItIsBoundUnlessThatIsAWildcard) {
  using supervisor::advertised_admin_address;
  EXPECT_EQ(advertised_admin_address("127.0.0.1:9100", "10.0.0.7", "192.168.1.2"), "127.0.0.1:9100");
  EXPECT_EQ(advertised_admin_address("10.0.0.5:9100", "10.0.0.7", "192.168.1.2"), "10.0.0.5:9100");
  EXPECT_EQ(advertised_admin_address("0.0.0.0:9100", "10.0.0.7", "192.168.1.2"), "10.0.0.7:9100");
  EXPECT_EQ(advertised_admin_address("0.0.0.0:9100", "", "192.168.1.2"), "192.168.1.2:9100");
  EXPECT_EQ(advertised_admin_address(":9100", "", "192.168.1.2"), "192.168.1.2:9100");
  EXPECT_EQ(advertised_admin_address("[::]:9100", "fd00::5", ""), "[fd00::5]:9100");
  EXPECT_EQ(advertised_admin_address("[::1]:9100", "10.0.0.7", ""), "[::1]:9100");
  EXPECT_EQ(advertised_admin_address("0.0.0.0:9100", "", ""), std::nullopt);
}

TEST(FrontTls, TheListenersTakeTlsWithHttp2ByAlpnAndTheNodesStayHttp11) {
  front::config c;
  ASSERT_FALSE(parse({"--listen", "127.0.0.1:8443,:9443", "--server", "10.0.0.1:8080@9100"}, c));
  c.tls_cert = "/etc/loopfleet/front.pem";
  auto cfg = front::haproxy_config(c);
  EXPECT_TRUE(has(cfg, "bind 127.0.0.1:8443 ssl crt /etc/loopfleet/front.pem alpn h2,http/1.1\n"));
  EXPECT_TRUE(has(cfg, "bind *:9443 ssl crt /etc/loopfleet/front.pem alpn h2,http/1.1\n"));
  EXPECT_TRUE(has(cfg, "ssl-default-bind-options ssl-min-ver TLSv1.2"));
  EXPECT_TRUE(has(cfg, "server 10.0.0.1_8080 10.0.0.1:8080 agent-check"));
  EXPECT_FALSE(has(cfg, "proto h2"));  // no HTTP/2 towards the nodes
  c.tls_cert.clear();
  EXPECT_FALSE(has(front::haproxy_config(c), "ssl"));
}

TEST(FrontTls, APemNeedsACertificateAndAPlainKey) {
  const std::string cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const std::string key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
  EXPECT_FALSE(front::check_tls_pem(cert + key));
  EXPECT_FALSE(front::check_tls_pem(key + cert));
  EXPECT_FALSE(front::check_tls_pem(cert + "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n"));
  EXPECT_FALSE(front::check_tls_pem(cert + "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"));
  EXPECT_TRUE(has(front::check_tls_pem(cert).value_or(""), "no private key in it"));
  EXPECT_TRUE(has(front::check_tls_pem(key).value_or(""), "no certificate in it"));
  EXPECT_TRUE(has(front::check_tls_pem("hello").value_or(""), "no PEM certificate or key"));
  EXPECT_TRUE(has(front::check_tls_pem(cert + "-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n-----END ENCRYPTED PRIVATE "
                                              "KEY-----\n")
                      .value_or(""),
                  "encrypted"));
  front::config c;
  auto missing = parse({"--listen", ":8443", "--server", "a:1", "--tls-cert", "/nonexistent/front.pem"}, c);
  EXPECT_TRUE(has(missing.value_or(""), "--tls-cert /nonexistent/front.pem cannot be opened (No such file"));
}
