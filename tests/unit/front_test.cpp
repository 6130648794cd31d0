// The front's flags and the HAProxy configuration it writes; the order in which it stops its
// children; the agent check's replies.
#include "front/front.hpp"
#include "front/policy.hpp"
#include "supervisor/policy.hpp"

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
