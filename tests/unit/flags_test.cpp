#include "runtime/flags.hpp"

#include <loopfleet/runtime.hpp>

#include <gtest/gtest.h>

using namespace loopfleet;
using namespace std::chrono_literals;

namespace {
struct fixture {
  worker_options w;
  std::size_t size = 16;
  flag_set flags{"prog"};
  fixture() {
    add_worker_flags(flags, w);
    flags.add_size("--max", &size, "a size");
  }
  std::optional<std::string> parse(std::vector<std::string_view> args) { return flags.parse(args); }
};
}  // namespace

TEST(Flags, ParsesEveryForm) {
  fixture f;
  EXPECT_FALSE(f.parse({"--listen", "127.0.0.1:1", "--listen=unix:/x", "--drain-timeout", "0.5", "--max=4k"}));
  EXPECT_EQ(f.w.listen, (std::vector<std::string>{"127.0.0.1:1", "unix:/x"}));
  EXPECT_EQ(f.w.drain_timeout, 500ms);
  EXPECT_EQ(f.size, 4096u);
}

TEST(Flags, ErrorsNameTheFlagAndTheFix) {
  fixture f;
  auto err = f.parse({"--nope"});
  ASSERT_TRUE(err);
  EXPECT_EQ(*err, "unknown flag --nope (see prog --help)");
  err = f.parse({"--drain-timeout", "soon"});
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("--drain-timeout 'soon' is not a duration"), std::string::npos) << *err;
  err = f.parse({"--listen"});
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("--listen needs a value"), std::string::npos) << *err;
  err = f.parse({"--backlog", "0"});
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("from 1 to 65535"), std::string::npos) << *err;
  err = f.parse({"stray"});
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("unexpected argument 'stray'"), std::string::npos) << *err;
  err = f.parse({"--max", "-1"});
  ASSERT_TRUE(err);
}

TEST(Flags, HelpListsFlagsWithDefaults) {
  fixture f;
  EXPECT_FALSE(f.parse({"--help"}));
  EXPECT_TRUE(f.flags.help_requested());
  auto text = f.flags.usage();
  EXPECT_NE(text.find("--drain-timeout SECONDS"), std::string::npos);
  EXPECT_NE(text.find("[default: 30s]"), std::string::npos);
}

TEST(Flags, DurationAndSizeParsers) {
  EXPECT_EQ(parse_duration("30"), 30s);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_FALSE(parse_duration("-1"));
  EXPECT_FALSE(parse_duration(""));
  EXPECT_FALSE(parse_duration("1e99"));
  EXPECT_EQ(parse_size("1m"), 1024u * 1024u);
  EXPECT_EQ(parse_size("8K"), 8192u);
  EXPECT_FALSE(parse_size("k"));
  EXPECT_FALSE(parse_size("99999999999999999999g"));
}
