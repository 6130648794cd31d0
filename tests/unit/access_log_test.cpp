// The access log's lines in both formats, what a client's bytes become in them, and how a
// buffer is cut into writes of whole lines.
#include "http/access_log.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace loopfleet::http::detail;

namespace {
access_entry sample() {
  access_entry e;
  e.time_ms = 1796172529123;  // 2026-12-02T00:48:49.123Z
  e.slot = 1;
  e.remote = "127.0.0.1";
  e.method = "GET";
  e.target = "/users/7?full=1";
  e.status = 200;
  e.bytes = 13;
  e.duration_us = 42;
  e.user_agent = "curl/7.88.1";
  return e;
}
std::string line(const access_entry& e, access_format f) {
  std::string out;
  second_text cache;
  format_access_line(out, e, f, cache);
  return out;
}
}  // namespace

TEST(AccessLog, JsonLineHasTimeSlotMethodTargetStatusBytesAndDuration) {
  EXPECT_EQ(line(sample(), access_format::json),
            R"({"time":"2026-12-02T00:48:49.123Z","slot":1,"remote":"127.0.0.1","method":"GET",)"
            R"("target":"/users/7?full=1","status":200,"bytes":13,"duration_ms":0.042})"
            "\n");
}

TEST(AccessLog, CombinedLineIsNginxsThenSlotAndDuration) {
  auto e = sample();
  e.duration_us = 1234567;
  EXPECT_EQ(line(e, access_format::combined),
            "127.0.0.1 - - [02/Dec/2026:00:48:49 +0000] \"GET /users/7?full=1 HTTP/1.1\" 200 13 \"-\" "
            "\"curl/7.88.1\" slot=1 duration_ms=1234.567\n");
  e.version = 10;
  e.remote = "";
  e.user_agent = "";
  EXPECT_EQ(line(e, access_format::combined).substr(0, 60), "- - - [02/Dec/2026:00:48:49 +0000] \"GET /users/7?full=1 HTTP");
  EXPECT_NE(line(e, access_format::combined).find("HTTP/1.0\" 200 13 \"-\" \"-\" slot=1"), std::string::npos);
  e.method = e.target = "";  // refused before a request line was read
  EXPECT_NE(line(e, access_format::combined).find("] \"-\" 200"), std::string::npos);
}

TEST(AccessLog, AClientCannotForgeALineOrBreakTheJson) {
  auto e = sample();
  e.target = "/a\"b\\c\nforged {\"x\":1}\x01\xff\xc3\xa9";
  e.user_agent = "ua \"quoted\"\r\n";
  std::string j = line(e, access_format::json);
  ASSERT_EQ(j.find('\n'), j.size() - 1);
  auto v = boost::json::parse(j);  // still one valid object
  // Valid UTF-8 (\xc3\xa9) passes; a stray byte is read as Latin-1.
  EXPECT_EQ(v.at("target").as_string(), "/a\"b\\c\nforged {\"x\":1}\x01\xc3\xbf\xc3\xa9");
  std::string c = line(e, access_format::combined);
  ASSERT_EQ(c.find('\n'), c.size() - 1);
  EXPECT_NE(c.find("\"GET /a\\x22b\\x5Cc\\x0Aforged {\\x22x\\x22:1}\\x01\\xFF\\xC3\\xA9 HTTP/1.1\""), std::string::npos) << c;
  EXPECT_NE(c.find("\"ua \\x22quoted\\x22\\x0D\\x0A\""), std::string::npos) << c;
}

TEST(AccessLog, TheSecondsTextIsMadeOnceASecond) {
  second_text cache;
  std::string out;
  auto e = sample();
  format_access_line(out, e, access_format::json, cache);
  EXPECT_EQ(cache.second, 1796172529);
  e.time_ms += 900;  // the same second: the cache stands, the milliseconds change
  format_access_line(out, e, access_format::json, cache);
  EXPECT_NE(out.find("00:48:49.123Z"), std::string::npos);
  EXPECT_NE(out.find("00:48:50.023Z"), std::string::npos);
  EXPECT_EQ(cache.second, 1796172530);
}

TEST(AccessLog, WritesHoldWholeLinesWithinTheLimit) {
  EXPECT_EQ(whole_lines_within("", 10), 0u);
  EXPECT_EQ(whole_lines_within("ab\ncd\n", 10), 6u);
  EXPECT_EQ(whole_lines_within("ab\ncd\nef\n", 7), 6u);   // the third line waits for the next write
  EXPECT_EQ(whole_lines_within("abcdefghij\nk\n", 4), 11u);  // a line over the limit goes alone
  EXPECT_EQ(whole_lines_within("abc", 10), 0u);  // no whole line
}
