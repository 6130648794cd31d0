// Route table behind http::router.
#pragma once

#include <loopfleet/http.hpp>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet::http::detail {

struct route {
  std::string method;
  std::string pattern;
  std::vector<std::string> segments;  // for patterns with "{name}" segments
  sync_handler sync;
  async_handler async;
};

struct match_result {
  const route* found = nullptr;
  std::string allow;  // when nothing matched but the path exists: its methods, for 405
};

class router_impl {
 public:
  // Throws std::invalid_argument for a pattern that does not start with '/' or that is
  // registered twice for the same method: a programming error caught at start-up.
  void add(std::string_view method, std::string_view pattern, sync_handler s, async_handler a);
  // Finds the route for the request's method and path and stores its path parameters in
  // the request. HEAD falls back to GET.
  match_result match(request& req) const;

 private:
  const route* find(std::string_view method, std::string_view path, request& req, std::string* allow) const;
  static bool match_segments(const route& r, std::string_view path, request& req);

  std::map<std::string, std::vector<route>, std::less<>> exact_;  // literal path -> routes
  std::vector<route> patterned_;
};

}  // namespace loopfleet::http::detail
