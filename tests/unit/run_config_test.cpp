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
// Every test writes the same file (one per test process); it is removed when the process
// ends, also after a test that did not remove it itself.
const std::string& scratch_path() {
  static const struct scratch {
    std::string path = "/tmp/loopfleet-config-test-" + std::to_string(::getpid()) + ".toml";
    ~scratch() { ::unlink(path.c_str()); }
  } file;
  return file.path;
}
std::string write_file(const std::string& text) {
  std::ofstream(scratch_path()) << text;
  return scratch_path();
}
bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
// `text` as the --config file alone: the parse's error, or nothing with `c` filled.
std::optional<std::string> parse_file(const std::string& text, config& c) {
  auto path = write_file(text);
  std::string arg = "--config=" + path;
  auto err = parse({arg}, c);
  ::unlink(path.c_str());
  return err;
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
  config g;
  ASSERT_FALSE(parse_file("admin = \"9101\"\ncommand = [\"app\"]\n", g));
  EXPECT_EQ(g.admin, "127.0.0.1:9101");
}

TEST(RunConfig, AccessLogIsAFlagOrKeyAndARelativePathBecomesAbsolute) {
  config c;
  ASSERT_FALSE(parse({"--access-log", "/var/log/app.log", "--access-log-format", "combined", "--", "app"}, c));
  EXPECT_EQ(c.access_log, "/var/log/app.log");
  EXPECT_EQ(c.access_log_format, access_log_format::combined);
  config d;
  ASSERT_FALSE(parse({"--access-log", "-", "--", "app"}, d));
  EXPECT_EQ(d.access_log, "-");  // the supervisor's stdout
  EXPECT_EQ(d.access_log_format, access_log_format::json);
  config e;
  ASSERT_FALSE(parse({"--access-log", "logs/access.log", "--", "app"}, e));
  char cwd[4096];
  ASSERT_TRUE(::getcwd(cwd, sizeof cwd));
  EXPECT_EQ(e.access_log, std::string(cwd) + "/logs/access.log");  // a reload's workers find the same file
  config f;
  auto err = parse({"--access-log-format", "apache", "--", "app"}, f);
  ASSERT_TRUE(err);
  EXPECT_TRUE(has(*err, "--access-log-format")) << *err;
  EXPECT_TRUE(has(*err, "is not json or combined")) << *err;
  config g;
  ASSERT_FALSE(parse_file("access_log = \"/tmp/a.log\"\naccess_log_format = \"combined\"\ncommand = [\"app\"]\n", g));
  EXPECT_EQ(g.access_log, "/tmp/a.log");
  EXPECT_EQ(g.access_log_format, access_log_format::combined);
}

TEST(RunConfig, AdvertiseIsAnIPFlagOrKey) {
  config c;
  ASSERT_FALSE(parse({"--advertise", "10.0.0.5", "--", "app"}, c));
  EXPECT_EQ(c.advertise, "10.0.0.5");
  config d;
  ASSERT_FALSE(parse({"--advertise", "fd00::5", "--", "app"}, d));
  config e;
  auto err = parse({"--advertise", "node1.example", "--", "app"}, e);
  ASSERT_TRUE(err);
  EXPECT_TRUE(has(*err, "--advertise 'node1.example' must be the IP address"));
  config g;
  ASSERT_FALSE(parse_file("advertise = \"10.0.0.6\"\ncommand = [\"app\"]\n", g));
  EXPECT_EQ(g.advertise, "10.0.0.6");
}

// toml++ 3.3.0 reached __builtin_unreachable() on a non-ASCII character where whitespace may
// stand (tests/fuzz/corpus/config/crash-toml-unreachable); supervisor/toml.hpp works around it.
TEST(RunConfig, NonAsciiCharacterOutsideStringsIsAnErrorNotUndefined) {
  config c;
  auto err = parse({"--config", write_file("\xc3\xa9 = 1\ncommand = [\"app\"]\n"), "--", "app"}, c);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(":1:"), std::string::npos);
  config d;
  EXPECT_FALSE(parse({"--config", write_file("name = \"caf\xc3\xa9\"\ncommand = [\"app\"]\n")}, d));
  EXPECT_EQ(d.name, "caf\xc3\xa9");
}

// tests/fuzz/corpus/config/crash-command-ends-in-slash: the instance was named "".
TEST(RunConfig, ACommandThatNamesNoFileNeedsAName) {
  config c;
  EXPECT_NE(parse({"--", "./bin/"}, c)->find("give --name"), std::string::npos);
  config d;
  EXPECT_FALSE(parse({"--name", "web", "--", "./bin/"}, d));
  EXPECT_EQ(d.name, "web");
}

// tests/fuzz/corpus/config/crash-duration-out-of-range: 1e300 seconds was converted to an
// integer of milliseconds, which is undefined behaviour.
TEST(RunConfig, DurationsBeyondTheFlagBoundAreErrors) {
  for (const char* value : {"1e300", "inf", "1e10"}) {
    config c;
    auto err = parse({"--config", write_file(std::string("watchdog = ") + value + "\ncommand = [\"app\"]\n")}, c);
    ASSERT_TRUE(err) << value;
    EXPECT_NE(err->find("watchdog must be a duration"), std::string::npos) << *err;
  }
  config ok;
  EXPECT_FALSE(parse({"--config", write_file("watchdog = 1e9\ncommand = [\"app\"]\n")}, ok));
  EXPECT_EQ(ok.watchdog, std::chrono::milliseconds(1'000'000'000'000));
}

// tests/fuzz/corpus/config/crash-integer-from-huge-float: toml++ 3.3.0 converted 1.3e44 to
// an integer unchecked (undefined behaviour); a whole float such as 128.0 still counts.
TEST(RunConfig, WholeNumbersFromFloatsAreRangeChecked) {
  config c;
  auto err = parse({"--config", write_file("backlog = 1.3e44\ncommand = [\"app\"]\n")}, c);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("backlog must be a whole number"), std::string::npos) << *err;
  config ok;
  EXPECT_FALSE(parse({"--config", write_file("backlog = 128.0\nworkers = 2.0\ncommand = [\"app\"]\n")}, ok));
  EXPECT_EQ(ok.backlog, 128);
  EXPECT_EQ(ok.workers, 2);
}

// `loopfleet run`: the table is the whole list of flags and file keys.
TEST(RunSettings, HelpListsEveryFlagAndTheUnknownKeyErrorEveryKey) {
  auto help = run_usage();
  std::string path = write_file("wrokers = 3\n");
  config c;
  auto err = load_config_file(path, c);
  ::unlink(path.c_str());
  ASSERT_TRUE(err);
  for (const auto& s : run_settings()) {
    std::string key = loopfleet::file_key(s.name);
    bool in_file = s.scope != loopfleet::setting_scope::flag_only;
    EXPECT_EQ(has(help, "  --" + std::string(s.name) + " "), s.scope != loopfleet::setting_scope::file_only) << s.name;
    EXPECT_EQ(has(*err, " " + key + ",") || has(*err, " " + key + ")"), in_file) << key << ": " << *err;
  }
  EXPECT_TRUE(has(*err, ":1: unknown key 'wrokers' (known: workers, listen, ")) << *err;
}

// The range is written once, so the flag and the file key refuse the same values.
TEST(RunSettings, FlagAndFileShareEachRange) {
  for (const auto& s : run_settings()) {
    if (!std::holds_alternative<int config::*>(s.where)) continue;
    std::string key = loopfleet::file_key(s.name), flag = "--" + std::string(s.name);
    std::string range = "from " + std::to_string(s.range.min) + " to " + std::to_string(s.range.max);
    std::string above = std::to_string(static_cast<long long>(s.range.max) + 1);
    config a;
    auto flag_err = parse({flag, above, "--", "app"}, a);
    ASSERT_TRUE(flag_err) << flag;
    EXPECT_EQ(*flag_err, flag + " '" + above + "' is not a whole number " + range);
    std::string path = write_file(key + " = " + above + "\n");
    config b;
    auto file_err = load_config_file(path, b);
    ::unlink(path.c_str());
    ASSERT_TRUE(file_err) << key;
    EXPECT_EQ(*file_err, path + ":1: " + key + " must be a whole number " + range);
  }
}

TEST(RunSettings, DefaultsAreTheStructsAndHelpSaysThem) {
  config c;
  ASSERT_FALSE(parse({"--", "app"}, c));
  config fresh;
  EXPECT_EQ(c.workers, 0);  // auto
  EXPECT_EQ(c.backlog, fresh.backlog);
  EXPECT_EQ(c.ready_timeout, fresh.ready_timeout);
  EXPECT_EQ(c.listen, (std::vector<std::string>{"127.0.0.1:8080"}));
  auto help = run_usage();
  EXPECT_TRUE(has(help, "[default: auto]\n")) << help;
  EXPECT_TRUE(has(help, "listen backlog of each socket [default: 4096]\n")) << help;
  EXPECT_TRUE(has(help, "killed [default: 30s]\n")) << help;
  EXPECT_TRUE(has(help, "[default: 127.0.0.1:8080] (repeatable)\n")) << help;
}

TEST(RunSettings, WorkersIsANumberOrAuto) {
  for (std::string_view bad : {"0", "1025", "lots", ""}) {
    config c;
    EXPECT_EQ(*parse({"--workers", bad, "--", "app"}, c),
              "--workers '" + std::string(bad) + "' is not a number from 1 to 1024 or auto");
  }
  config c;
  std::string path = write_file("workers = 4.0\ncommand = [\"app\"]\n");
  ASSERT_FALSE(load_config_file(path, c));
  EXPECT_EQ(c.workers, 4);
  std::ofstream(path) << "workers = [4]\n";
  EXPECT_EQ(*load_config_file(path, c), path + ":1: workers must be a number or \"auto\"");
  ::unlink(path.c_str());
}
