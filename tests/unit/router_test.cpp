#include "http/router_impl.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

using namespace loopfleet::http;

namespace {

router sample() {
  router r;
  r.get("/", [](request&) { return text("root"); });
  r.get("/users/{id}", [](request& q) { return text("user " + std::string(q.param("id"))); });
  r.del("/users/{id}", [](request&) { return text("deleted"); });
  r.get("/users/{id}/posts/{post}", [](request& q) { return text(std::string(q.param("post"))); });
  r.post("/echo", [](request&) { return text("echo"); });
  return r;
}

std::string call(const router& r, request& q) {
  auto m = r.impl().match(q);
  if (!m.found) return m.allow.empty() ? "404" : "405 " + m.allow;
  return m.found->sync(q).body;
}
}  // namespace

TEST(Router, MatchesLiteralPaths) {
  auto r = sample();
  auto q = detail::make_request("GET", "/?x=1");
  EXPECT_EQ(call(r, q), "root");
}

TEST(Router, CapturesPathParameters) {
  auto r = sample();
  auto q = detail::make_request("GET", "/users/42");
  EXPECT_EQ(call(r, q), "user 42");
  auto q2 = detail::make_request("GET", "/users/7/posts/99");
  EXPECT_EQ(call(r, q2), "99");
  EXPECT_EQ(q2.param("id"), "7");
}

TEST(Router, ParametersDoNotMatchEmptyOrExtraSegments) {
  auto r = sample();
  auto empty = detail::make_request("GET", "/users/");
  EXPECT_EQ(call(r, empty), "404");
  auto extra = detail::make_request("GET", "/users/1/extra");
  EXPECT_EQ(call(r, extra), "404");
}

TEST(Router, WrongMethodIs405WithAllow) {
  auto r = sample();
  auto q = detail::make_request("PUT", "/users/1");
  EXPECT_EQ(call(r, q), "405 GET, HEAD, DELETE");
  auto q2 = detail::make_request("GET", "/echo");
  EXPECT_EQ(call(r, q2), "405 POST");
}

// Beast hands over any request-target; "POST ?echo" once read past the end of the path
// (tests/fuzz/corpus/http/crash-router-empty-path).
TEST(Router, TargetsThatAreNotPathsMatchNoPattern) {
  auto r = sample();
  // (An absolute-form target routes by its path: AbsoluteFormTargetsRouteByTheirPath.)
  for (const char* target : {"?echo", "*", "", "users/1"}) {
    auto q = detail::make_request("GET", target);
    EXPECT_EQ(call(r, q), "404") << target;
  }
}

TEST(Router, HeadFallsBackToGet) {
  auto r = sample();
  auto q = detail::make_request("HEAD", "/");
  EXPECT_EQ(call(r, q), "root");
}

TEST(Router, RejectsBadAndDuplicatePatterns) {
  router r;
  r.get("/a", [](request&) { return text(""); });
  EXPECT_THROW(r.get("/a", [](request&) { return text(""); }), std::invalid_argument);
  EXPECT_THROW(r.get("a", [](request&) { return text(""); }), std::invalid_argument);
}

TEST(Request, QueryParameters) {
  auto q = detail::make_request("GET", "/p?a=1&bb=two&c");
  EXPECT_EQ(q.path(), "/p");
  EXPECT_EQ(q.query_param("bb"), "two");
  EXPECT_EQ(q.query_param("c"), "");
  EXPECT_EQ(q.query_param("zz"), "");
}

TEST(Router, AbsoluteFormTargetsRouteByTheirPath) {
  auto r = sample();
  auto q = detail::make_request("GET", "http://example.com:8080/users/7?full=1");
  EXPECT_EQ(q.path(), "/users/7");
  EXPECT_EQ(q.query_param("full"), "1");
  EXPECT_EQ(q.header("Host"), "example.com:8080");  // RFC 9112 3.2.2: the target's authority
  EXPECT_EQ(call(r, q), "user 7");
  auto bare = detail::make_request("GET", "http://example.com");
  EXPECT_EQ(bare.path(), "/");
  EXPECT_EQ(call(r, bare), "root");
  auto odd = detail::make_request("GET", "*");  // asterisk form: no path to find
  EXPECT_EQ(odd.path(), "*");
}
