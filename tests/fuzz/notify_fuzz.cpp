// The supervisor's reading of a notify datagram (sd_notify(3) assignments, one per line).
// Any process the supervisor started can send any bytes; the parse must not crash and must
// only report what a line of the datagram says.
#include "runtime/notify.hpp"

#include "fuzz_check.hpp"

#include <cstdint>
#include <string_view>

namespace {
bool has_line(std::string_view datagram, std::string_view line) {
  for (std::size_t at = 0; at <= datagram.size();) {
    std::size_t nl = datagram.find('\n', at);
    if (nl == std::string_view::npos) nl = datagram.size();
    if (datagram.substr(at, nl - at) == line) return true;
    at = nl + 1;
  }
  return false;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view datagram(reinterpret_cast<const char*>(data), size);
  loopfleet::notify_message m = loopfleet::parse_notify(datagram);
  FUZZ_CHECK(m.ready == has_line(datagram, "READY=1"));
  FUZZ_CHECK(m.watchdog == has_line(datagram, "WATCHDOG=1"));
  if (m.status) {
    // A view into the datagram, on a line of its own, without the line's end.
    FUZZ_CHECK(m.status->data() >= datagram.data() &&
               m.status->data() + m.status->size() <= datagram.data() + datagram.size());
    FUZZ_CHECK(m.status->find('\n') == std::string_view::npos);
    FUZZ_CHECK(std::string_view(m.status->data() - 7, 7) == "STATUS=");
  }
  return 0;
}
