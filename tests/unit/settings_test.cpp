// The settings tables (runtime/settings.hpp): one declaration makes the flag, the range check
// and the help line; the worker's and the front's tables. `loopfleet run`'s table, file keys
// included, is tested in run_config_test.cpp.
#include "runtime/settings.hpp"

#include "front/front.hpp"

#include <loopfleet/runtime.hpp>

#include <gtest/gtest.h>

using namespace loopfleet;
using namespace std::chrono_literals;

namespace {

enum class colour { red, green, blue };

struct options {
  std::string name = "box";
  std::vector<std::string> tags;
  std::chrono::milliseconds wait{1500};
  std::size_t size = 4096;
  int count = 2;
  bool loud = false;
  colour paint = colour::red;
  std::string secret;
};

std::optional<std::string> parse_paint(std::string_view text, options& o) {
  return one_of(text, o.paint, {{"red", colour::red}, {"green", colour::green}, {"blue", colour::blue}});
}

constexpr setting<options> table[] = {
    {.name = "name", .where = &options::name, .help = "what it is called"},
    {.name = "tag", .where = &options::tags, .shown_default = "none", .help = "a label"},
    {.name = "wait", .where = &options::wait, .help = "how long"},
    {.name = "size", .where = &options::size, .help = "how big"},
    {.name = "count", .where = &options::count, .range = {1, 9}, .help = "how many"},
    {.name = "loud", .where = &options::loud, .help = "shout"},
    {.name = "paint", .where = setting<options>::parsed{parse_paint}, .shown_default = "red", .help = "its colour"},
    {.name = "secret", .where = &options::secret, .scope = setting_scope::file_only, .help = "not a flag"},
};

struct fixture {
  options o;
  flag_set flags{"prog"};
  fixture() { add_settings<options>(flags, o, table); }
  std::optional<std::string> parse(std::vector<std::string_view> args) { return flags.parse(args); }
};

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(Settings, EveryKindBecomesAFlagOnItsMember) {
  fixture f;
  ASSERT_FALSE(f.parse({"--name", "crate", "--tag", "a", "--tag=b", "--wait", "250ms", "--size", "2k", "--count", "9",
                        "--loud", "--paint", "blue"}));
  EXPECT_EQ(f.o.name, "crate");
  EXPECT_EQ(f.o.tags, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.o.wait, 250ms);
  EXPECT_EQ(f.o.size, 2048u);
  EXPECT_EQ(f.o.count, 9);
  EXPECT_TRUE(f.o.loud);
  EXPECT_EQ(f.o.paint, colour::blue);
}

TEST(Settings, OutOfRangeAndUnknownAreErrorsNamingTheFlag) {
  fixture f;
  EXPECT_EQ(*f.parse({"--count", "10"}), "--count '10' is not a whole number from 1 to 9");
  EXPECT_EQ(*f.parse({"--count", "0"}), "--count '0' is not a whole number from 1 to 9");
  EXPECT_EQ(*f.parse({"--paint", "pink"}), "--paint 'pink' is not red, green or blue");
  EXPECT_EQ(*f.parse({"--secret", "x"}), "unknown flag --secret (see prog --help)");  // a file key only
  EXPECT_EQ(*f.parse({"--colour", "red"}), "unknown flag --colour (see prog --help)");
}

TEST(Settings, DefaultsComeFromTheStructAndShowInHelp) {
  fixture f;
  ASSERT_FALSE(f.parse({}));
  EXPECT_EQ(f.o.count, 2);
  EXPECT_EQ(f.o.wait, 1500ms);
  auto help = f.flags.usage();
  EXPECT_TRUE(has(help, "how many [default: 2]\n")) << help;
  EXPECT_TRUE(has(help, "how long [default: 1500ms]\n")) << help;
  EXPECT_TRUE(has(help, "how big [default: 4k]\n")) << help;
  EXPECT_TRUE(has(help, "what it is called [default: box]\n")) << help;
  EXPECT_TRUE(has(help, "a label [default: none] (repeatable)\n")) << help;
  EXPECT_TRUE(has(help, "its colour [default: red]\n")) << help;
}

TEST(Settings, HelpListsEverySettingThatIsAFlag) {
  fixture f;
  auto help = f.flags.usage();
  for (const auto& s : table)
    EXPECT_EQ(has(help, "  --" + std::string(s.name) + " "), s.scope != setting_scope::file_only) << s.name;
}

TEST(Settings, OneOfNamesEveryWord) {
  colour c = colour::red;
  EXPECT_EQ(*one_of(std::string_view("x"), c, {{"red", colour::red}, {"green", colour::green}}), "is not red or green");
  EXPECT_FALSE(one_of(std::string_view("green"), c, {{"red", colour::red}, {"green", colour::green}}));
  EXPECT_EQ(c, colour::green);
  EXPECT_EQ(file_key("ready-delay"), "ready_delay");
}

TEST(WorkerSettings, HelpListsEveryFlag) {
  worker_options w;
  flag_set flags("prog");
  add_worker_flags(flags, w);
  auto help = flags.usage();
  for (std::string flag : {"--listen", "--backlog", "--drain-timeout", "--name"}) EXPECT_TRUE(has(help, flag)) << flag;
  EXPECT_TRUE(has(help, "unix:PATH [default: 127.0.0.1:8080] (repeatable)\n")) << help;
}

TEST(FrontSettings, HelpListsEveryFlagOnceWithItsDefault) {
  auto help = front::usage();
  for (std::string flag : {"--listen", "--server", "--agent-port", "--check-interval", "--health-path", "--stats",
                           "--graceful-timeout", "--vip", "--vip-interface", "--vip-peer", "--vip-priority",
                           "--vip-router-id", "--name", "--state-dir", "--print-config"})
    EXPECT_TRUE(has(help, "  " + flag + " ")) << flag;
  EXPECT_TRUE(has(help, "higher holds the address [default: 100]\n")) << help;
}
