// One request line on the control socket, parsed and checked before the supervisor acts on
// it: {"command": "status" | "reload" | "stop" | "scale" | "upgrade", "workers": N for scale,
// "binary": PATH for upgrade (optional)}. Anyone who
// can open the socket can send anything, so every shape is checked here, where it is tested
// and fuzzed without a running supervisor.
#pragma once

#include <string>
#include <string_view>
#include <variant>

namespace loopfleet::supervisor {

struct control_request {
  enum class kind { status, reload, stop, scale, upgrade } command;
  int workers = 0;     // for scale: from 1 to max_workers
  std::string binary;  // for upgrade: the loopfleet to run instead; empty = the one on disk now
};

// The request, or the error sentence to reply with.
std::variant<control_request, std::string> parse_control_request(std::string_view line);

}  // namespace loopfleet::supervisor
