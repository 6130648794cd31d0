#include "runtime/listen_fds.hpp"

#include <gtest/gtest.h>

using namespace loopfleet;

namespace {
inherited_fds ok(const char* pid, const char* fds, const char* names, pid_t self) {
  auto r = read_listen_fds(pid, fds, names, self);
  EXPECT_TRUE(std::holds_alternative<inherited_fds>(r));
  return std::holds_alternative<inherited_fds>(r) ? std::get<inherited_fds>(r) : inherited_fds{};
}
}  // namespace

TEST(ListenFds, NothingWhenUnset) {
  EXPECT_TRUE(ok(nullptr, nullptr, nullptr, 42).fds.empty());
  EXPECT_TRUE(ok("42", nullptr, nullptr, 42).fds.empty());
}

TEST(ListenFds, IgnoredWhenMeantForAnotherProcess) {
  // A grandchild inherits the variables; LISTEN_PID keeps it from taking the sockets.
  EXPECT_TRUE(ok("41", "2", "a:b", 42).fds.empty());
}

TEST(ListenFds, CountsFromFdThreeWithNames) {
  auto r = ok("42", "2", "http:admin", 42);
  EXPECT_EQ(r.fds, (std::vector<int>{3, 4}));
  EXPECT_EQ(r.names, (std::vector<std::string>{"http", "admin"}));
}

TEST(ListenFds, MissingOrMismatchedNamesAreUnknown) {
  EXPECT_EQ(ok("42", "2", nullptr, 42).names, (std::vector<std::string>{"unknown", "unknown"}));
  EXPECT_EQ(ok("42", "2", "only-one", 42).names, (std::vector<std::string>{"unknown", "unknown"}));
  EXPECT_EQ(ok("42", "2", ":b", 42).names, (std::vector<std::string>{"unknown", "b"}));
}

TEST(ListenFds, ZeroIsNone) { EXPECT_TRUE(ok("42", "0", nullptr, 42).fds.empty()); }

TEST(ListenFds, MalformedValuesAreErrors) {
  EXPECT_TRUE(std::holds_alternative<std::string>(read_listen_fds("x", "1", nullptr, 42)));
  EXPECT_TRUE(std::holds_alternative<std::string>(read_listen_fds("42", "two", nullptr, 42)));
  EXPECT_TRUE(std::holds_alternative<std::string>(read_listen_fds("42", "-1", nullptr, 42)));
}
