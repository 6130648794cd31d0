#include "supervisor/control_request.hpp"

#include "supervisor/config.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace loopfleet::supervisor {

std::variant<control_request, std::string> parse_control_request(std::string_view line) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(line, ec);
  const boost::json::object* req = ec ? nullptr : v.if_object();
  const boost::json::value* cmd = req ? req->if_contains("command") : nullptr;
  if (!cmd || !cmd->is_string()) return std::string("expected a JSON object with a \"command\"");
  std::string_view c = cmd->as_string();
  using kind = control_request::kind;
  if (c == "status") return control_request{kind::status};
  if (c == "reload") return control_request{kind::reload};
  if (c == "stop") return control_request{kind::stop};
  if (c == "scale") {
    const boost::json::value* n = req->if_contains("workers");
    // Checked before narrowing to int: 4294967298 must not become 2.
    if (!n || !n->is_int64() || n->as_int64() < 1 || n->as_int64() > max_workers)
      return "scale needs \"workers\": a number from 1 to " + std::to_string(max_workers);
    return control_request{kind::scale, static_cast<int>(n->as_int64())};
  }
  return "unknown command '" + std::string(c) + "' (status, reload, stop, scale)";
}

}  // namespace loopfleet::supervisor
