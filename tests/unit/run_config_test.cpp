#include "supervisor/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

using namespace loopfleet::supervisor;
using namespace std::chrono_literals;

namespace {
std::optional<std::string> parse(std::vector<std::string_view> args, config& c) {
  return parse_run_args(args, c, nullptr);
}
std::string write_file(const std::string& text) {
  std::string path = "/tmp/loopfleet-config-test-" + std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST(RunConfig, FlagsAndCommand) {
  config c;
  ASSERT_FALSE(parse({"--workers", "3", "--listen", "127.0.0.1:1", "--distribution", "shared", "--", "app", "-x"}, c));
  EXPECT_EQ(c.workers, 3);
  EXPECT_EQ(c.distribution, distribution::shared);
  EXPECT_EQ(c.command, (std::vector<std::string>{"app", "-x"}));
  EXPECT_EQ(c.name, "app");
  EXPECT_NE(c.control.find("app.sock"), std::string::npos);
}

TEST(RunConfig, ErrorsNameTheProblem) {
  config c;
  EXPECT_NE(parse({"--listen", "127.0.0.1:1"}, c)->find("no worker command"), std::string::npos);
  config d;
  EXPECT_FALSE(parse({"--", "app"}, d));
  EXPECT_EQ(d.listen, (std::vector<std::string>{"127.0.0.1:8080"}));
  config e;
  EXPECT_NE(parse({"--workers", "many", "--listen", "127.0.0.1:1", "--", "app"}, e)->find("workers 'many'"),
            std::string::npos);
  config f;
  EXPECT_NE(parse({"--wrokers", "2", "--", "app"}, f)->find("unknown flag --wrokers"), std::string::npos);
  config g;
  EXPECT_NE(parse({"--distribution", "magic", "--listen", ":1", "--", "app"}, g)->find("shared or reuseport"),
            std::string::npos);
}

TEST(RunConfig, FileValuesWithFlagsOverriding) {
  auto path = write_file(
      "workers = 2\nlisten = [\"127.0.0.1:9001\"]\nbackoff_initial = 0.05\nready_timeout = \"2s\"\n"
      "command = [\"app\", \"--x\"]\n");
  config c;
  std::string arg = "--config=" + path;
  ASSERT_FALSE(parse({arg, "--workers", "4"}, c));
  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.listen, (std::vector<std::string>{"127.0.0.1:9001"}));
  EXPECT_EQ(c.backoff_initial, 50ms);
  EXPECT_EQ(c.ready_timeout, 2s);
  EXPECT_EQ(c.command, (std::vector<std::string>{"app", "--x"}));
  ::unlink(path.c_str());
}

TEST(RunConfig, FileErrorsNameFileLineAndKey) {
  auto path = write_file("workers = 2\nwrokers = 3\n");
  config c;
  auto err = load_config_file(path, c);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(path + ":2: unknown key 'wrokers'"), std::string::npos) << *err;
  auto bad = write_file("workers = 2\nbacklog = \"lots\"\n");
  config d;
  err = load_config_file(bad, d);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(":2: backlog must be a whole number"), std::string::npos) << *err;
  auto broken = write_file("workers = [\n");
  config e;
  err = load_config_file(broken, e);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(broken + ":"), std::string::npos) << *err;
  config f;
  err = load_config_file("/nonexistent/loopfleet.toml", f);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("/nonexistent/loopfleet.toml"), std::string::npos) << *err;
  ::unlink(path.c_str());
}

TEST(RunConfig, ClusterFlagsAndStoreLimit) {
  config c;
  ASSERT_FALSE(parse({"--join", "127.0.0.1:6223,127.0.0.1:6224", "--node", "n1", "--max-store", "512", "--", "app"}, c));
  EXPECT_TRUE(c.cluster);  // --join implies it
  EXPECT_EQ(c.join, (std::vector<std::string>{"127.0.0.1:6223", "127.0.0.1:6224"}));
  EXPECT_EQ(c.max_store, 512);
  config d;
  EXPECT_NE(parse({"--cluster", "--max-store", "-1", "--", "app"}, d)->find("--max-store"), std::string::npos);
  config e;
  EXPECT_NE(parse({"--cluster", "--node", "a.b", "--", "app"}, e)->find("letters, digits"), std::string::npos);
  auto path = write_file("cluster = true\nmax_store = 64\ncommand = [\"app\"]\n");
  config f;
  ASSERT_FALSE(load_config_file(path, f));
  EXPECT_EQ(f.max_store, 64);
  ::unlink(path.c_str());
}

TEST(RunConfig, UserIsResolvedWhenTheConfigurationIsRead) {
  config c;
  ASSERT_FALSE(parse({"--user", "nobody", "--", "app"}, c));
  ASSERT_TRUE(c.run_user);
  EXPECT_EQ(c.run_user->uid, 65534u);
  config d;
  EXPECT_EQ(*parse({"--user", "nosuch-loopfleet", "--", "app"}, d),
            "--user 'nosuch-loopfleet': no such user (create it, or use a numeric uid:gid)");
  auto path = write_file("user = \"65534:65534\"\ncommand = [\"app\"]\n");
  config e;
  std::string arg = "--config=" + path;
  ASSERT_FALSE(parse({arg}, e));
  ASSERT_TRUE(e.run_user);
  EXPECT_EQ(e.run_user->gid, 65534u);
  ::unlink(path.c_str());
}

TEST(RunConfig, AdminAddressFlagAndKey) {
  config c;
  ASSERT_FALSE(parse({"--admin", "9100", "--", "app"}, c));
  EXPECT_EQ(c.admin, "127.0.0.1:9100");  // a bare port stays on loopback
  config d;
  ASSERT_FALSE(parse({"--admin", "0.0.0.0:9100", "--", "app"}, d));
  EXPECT_EQ(d.admin, "0.0.0.0:9100");
  config e;
  EXPECT_NE(parse({"--admin", "unix:/tmp/a", "--", "app"}, e)->find("--admin 'unix:/tmp/a' must be HOST:PORT"),
            std::string::npos);
  config f;
  EXPECT_NE(parse({"--admin", "127.0.0.1:0", "--", "app"}, f)->find("--admin"), std::string::npos);
  auto path = write_file("admin = \"9101\"\ncommand = [\"app\"]\n");
  config g;
  std::string arg = "--config=" + path;
  ASSERT_FALSE(parse({arg}, g));
  EXPECT_EQ(g.admin, "127.0.0.1:9101");
  ::unlink(path.c_str());
}
