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
  auto of = [](kind k, int workers = 0) { return control_request{k, workers, {}}; };
  if (c == "status") return of(kind::status);
  if (c == "reload") return of(kind::reload);
  if (c == "stop") return of(kind::stop);
  if (c == "scale") {
    const boost::json::value* n = req->if_contains("workers");
    // Checked before narrowing to int: 4294967298 must not become 2.
    if (!n || !n->is_int64() || n->as_int64() < 1 || n->as_int64() > max_workers)
      return "scale needs \"workers\": a number from 1 to " + std::to_string(max_workers);
    return of(kind::scale, static_cast<int>(n->as_int64()));
  }
  if (c == "upgrade") {
    control_request r = of(kind::upgrade);
    if (const boost::json::value* b = req->if_contains("binary")) {
      if (!b->is_string() || b->as_string().empty() || b->as_string().size() > 4096)
        return std::string("upgrade's \"binary\" must be the path of a loopfleet executable");
      r.binary = b->as_string();
    }
    return r;
  }
  return "unknown command '" + std::string(c) + "' (status, reload, stop, scale, upgrade)";
}

}  // namespace loopfleet::supervisor
