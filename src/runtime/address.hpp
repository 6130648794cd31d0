// Listen addresses: parsing "--listen" text and binding it.
#pragma once

#include <loopfleet/runtime.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace loopfleet {

// What a worker and `loopfleet run` serve when given no --listen (and no inherited socket).
inline constexpr std::string_view default_listen = "127.0.0.1:8080";
// listen(2)'s backlog, as --backlog takes it; the kernel caps it at net.core.somaxconn.
inline constexpr int max_backlog = 65535;

struct listen_address {
  bool is_unix = false;
  std::string host;  // IP literal or name; "0.0.0.0" for ":PORT"
  std::uint16_t port = 0;
  std::string path;  // Unix socket path
};

// Accepts "HOST:PORT", ":PORT", "[IPV6]:PORT", "unix:PATH" and "/ABSOLUTE/PATH".
// On error returns a sentence naming what is wrong with `text`.
std::variant<listen_address, std::string> parse_listen_address(std::string_view text);

// An address other processes connect to over TCP: HOST:PORT with a port other than 0. On
// error returns a sentence that starts with `flag` and the text; else fills *out if given.
std::optional<std::string> check_tcp_address(std::string_view flag, std::string_view text,
                                             listen_address* out = nullptr);

// Creates, binds and listens. Throws startup_error naming the address and the fix (for
// example when the address is in use). A stale Unix socket file (nobody accepting on it) is
// replaced; a live one is an error, so two servers never silently share a path.
// `reuseport`: set SO_REUSEPORT, to join a group of sockets on the same address (TCP only).
listener bind_listener(const listen_address& address, std::string_view text, int backlog, bool reuseport = false);

// The socket's local address as text: "127.0.0.1:8080", "[::1]:8080" or "unix:/path".
std::string local_address(int fd);

}  // namespace loopfleet
