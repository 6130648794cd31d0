// The client side of the control socket: one JSON request line, one JSON reply line.
// `loopfleet status|reload|stop|scale` are thin wrappers over `call`.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace loopfleet::control {

// Finds the control socket: an explicit path, else the default path for `name`, else the only
// instance in the default directory. Returns an error sentence when that is ambiguous.
std::optional<std::string> locate(const std::string& explicit_path, const std::string& name, std::string& path);

// Sends `request` (a JSON object without newline) and returns the reply line. Errors (no such
// instance, timeout) come back as a sentence in `error`.
std::optional<std::string> call(const std::string& path, const std::string& request, std::chrono::seconds timeout,
                                std::string& error);

// Renders a status reply as the table `loopfleet status` prints.
std::string format_status(const std::string& reply_json);

}  // namespace loopfleet::control
