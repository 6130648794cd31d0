#include "control/client.hpp"
#include "supervisor/control_request.hpp"

#include <gtest/gtest.h>

using namespace loopfleet;
using supervisor::control_request;

namespace {
std::string error_of(std::string_view line) {
  auto parsed = supervisor::parse_control_request(line);
  auto* err = std::get_if<std::string>(&parsed);
  return err ? *err : "";
}
}  // namespace

TEST(ControlRequest, ParsesTheCommands) {
  auto scale = supervisor::parse_control_request(R"({"command":"scale","workers":3})");
  ASSERT_TRUE(std::holds_alternative<control_request>(scale));
  EXPECT_EQ(std::get<control_request>(scale).command, control_request::kind::scale);
  EXPECT_EQ(std::get<control_request>(scale).workers, 3);
  auto status = supervisor::parse_control_request(R"({"command":"status"})");
  EXPECT_EQ(std::get<control_request>(status).command, control_request::kind::status);
}

TEST(ControlRequest, RejectsMalformedLinesWithAReason) {
  EXPECT_NE(error_of("not json").find("\"command\""), std::string::npos);
  EXPECT_NE(error_of(R"(["status"])").find("\"command\""), std::string::npos);
  EXPECT_NE(error_of(R"({"command":"dance"})").find("unknown command 'dance'"), std::string::npos);
  EXPECT_NE(error_of(R"({"command":"scale","workers":"3"})").find("\"workers\""), std::string::npos);
}

TEST(ControlRequest, UpgradeTakesAnOptionalBinary) {
  auto plain = supervisor::parse_control_request(R"({"command":"upgrade"})");
  ASSERT_TRUE(std::holds_alternative<control_request>(plain));
  EXPECT_EQ(std::get<control_request>(plain).command, control_request::kind::upgrade);
  EXPECT_EQ(std::get<control_request>(plain).binary, "");
  auto to = supervisor::parse_control_request(R"({"command":"upgrade","binary":"/opt/loopfleet/bin/loopfleet"})");
  EXPECT_EQ(std::get<control_request>(to).binary, "/opt/loopfleet/bin/loopfleet");
  EXPECT_NE(error_of(R"({"command":"upgrade","binary":7})").find("\"binary\""), std::string::npos);
  EXPECT_NE(error_of(R"({"command":"upgrade","binary":""})").find("\"binary\""), std::string::npos);
}

// static_cast<int> of 4294967298 is 2: the supervisor scaled to 2 and replied "scaled to
// 4294967298 workers".
TEST(ControlRequest, ScaleCountIsCheckedBeforeNarrowing) {
  EXPECT_NE(error_of(R"({"command":"scale","workers":4294967298})").find("from 1 to 1024"), std::string::npos);
  EXPECT_NE(error_of(R"({"command":"scale","workers":0})").find("from 1 to 1024"), std::string::npos);
}

// A reply without "slots" (tests/fuzz/corpus/control/crash-*) threw out of `loopfleet status`.
TEST(ControlStatus, RendersRepliesOfAnyShapeWithoutThrowing) {
  EXPECT_NO_THROW(control::format_status(R"({"command":"stop"})"));
  EXPECT_NO_THROW(
      control::format_status(R"({"slots":[1,{"helpers":[2,{"pid":"x"}]}],"draining":{},"cluster":{"streams":[3]}})"));
  std::string table = control::format_status(
      R"({"name":"hello","slots":[{"slot":0,"pid":43,"state":"ready","helpers":[{"pid":44},{"pid":45}]}],"draining":[]})");
  EXPECT_NE(table.find("instance hello"), std::string::npos);
  EXPECT_NE(table.find("helpers: 44 45"), std::string::npos);
}
