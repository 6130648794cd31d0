#include "runtime/address.hpp"
#include "runtime/error.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace loopfleet;

namespace {
listen_address ok(std::string_view text) {
  auto r = parse_listen_address(text);
  EXPECT_TRUE(std::holds_alternative<listen_address>(r)) << text;
  return std::get<listen_address>(r);
}
std::string bad(std::string_view text) {
  auto r = parse_listen_address(text);
  EXPECT_TRUE(std::holds_alternative<std::string>(r)) << text;
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
}
}  // namespace

TEST(ListenAddress, ParsesIpv4HostAndPort) {
  auto a = ok("127.0.0.1:8080");
  EXPECT_FALSE(a.is_unix);
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 8080);
}

TEST(ListenAddress, EmptyHostMeansAllInterfaces) { EXPECT_EQ(ok(":9000").host, "0.0.0.0"); }

TEST(ListenAddress, ParsesBracketedIpv6) {
  auto a = ok("[::1]:443");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 443);
}

TEST(ListenAddress, ParsesUnixPaths) {
  EXPECT_EQ(ok("unix:/tmp/a.sock").path, "/tmp/a.sock");
  EXPECT_TRUE(ok("/run/x.sock").is_unix);
}

TEST(ListenAddress, RejectsWithReasons) {
  EXPECT_NE(bad("localhost").find("no port"), std::string::npos);
  EXPECT_NE(bad("1.2.3.4:99999").find("port"), std::string::npos);
  EXPECT_NE(bad("1.2.3.4:http").find("port"), std::string::npos);
  EXPECT_NE(bad("::1:80").find("brackets"), std::string::npos);
  EXPECT_NE(bad("[::1]80").find("[IPV6]:PORT"), std::string::npos);
  EXPECT_NE(bad("unix:").find("empty"), std::string::npos);
}

TEST(ListenAddress, BindReportsAddressInUse) {
  auto first = bind_listener(ok("127.0.0.1:0"), "127.0.0.1:0", 16);
  std::string taken = local_address(first.fd);
  try {
    auto second = bind_listener(ok(taken), taken, 16);
    ::close(second.fd);
    FAIL() << "second bind succeeded";
  } catch (const startup_error& e) {
    EXPECT_NE(std::string(e.what()).find("already in use"), std::string::npos) << e.what();
  }
  ::close(first.fd);
}

TEST(ListenAddress, UnixSocketRefusesLivePathAndReplacesStaleOne) {
  std::string path = "/tmp/loopfleet-unit-" + std::to_string(::getpid()) + ".sock";
  auto a = ok("unix:" + path);
  auto live = bind_listener(a, path, 4);
  EXPECT_THROW(bind_listener(a, path, 4), startup_error);
  ::close(live.fd);  // the file stays behind: stale
  auto again = bind_listener(a, path, 4);
  EXPECT_EQ(local_address(again.fd), "unix:" + path);
  ::close(again.fd);
  ::unlink(path.c_str());
}
