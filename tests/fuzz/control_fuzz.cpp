// The control protocol from both ends: the supervisor's parse of a request line (anyone who
// can open the socket may send anything) and the client's rendering of a status reply (a
// supervisor of another version, or a truncated reply, may send any JSON). Neither may crash
// or throw; a parsed scale request carries a worker count the supervisor accepts.
#include "control/client.hpp"
#include "supervisor/control_request.hpp"

#include "fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string line(reinterpret_cast<const char*>(data), size);
  auto parsed = loopfleet::supervisor::parse_control_request(line);
  if (auto* req = std::get_if<loopfleet::supervisor::control_request>(&parsed)) {
    if (req->command == loopfleet::supervisor::control_request::kind::scale)
      FUZZ_CHECK(req->workers >= 1 && req->workers <= 1024);
  } else {
    FUZZ_CHECK(!std::get<std::string>(parsed).empty());
  }
  std::string table = loopfleet::control::format_status(line);
  FUZZ_CHECK(!table.empty());
  return 0;
}
