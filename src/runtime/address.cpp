#include "runtime/address.hpp"

#include "runtime/error.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <utility>

namespace loopfleet {
namespace {

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::variant<std::uint16_t, std::string> parse_port(std::string_view text, std::string_view port) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return "listen address " + quoted(text) + " has no valid port (0-65535) after the last ':'";
  return static_cast<std::uint16_t>(value);
}

std::string bind_error(std::string_view text, int err) {
  std::string why;
  switch (err) {
    case EADDRINUSE:
      why = "address already in use (stop the process that holds it, or choose another address)";
      break;
    case EACCES:
      why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; a Unix path needs a writable directory)";
      break;
    case EADDRNOTAVAIL:
      why = "address not available on this machine (use an address of a local interface, or 0.0.0.0)";
      break;
    default:
      why = std::strerror(err);
  }
  return "cannot listen on " + std::string(text) + ": " + why;
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

listener bind_unix(const listen_address& a, std::string_view text, int backlog) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (a.path.size() >= sizeof sun.sun_path)
    throw startup_error("cannot listen on " + std::string(text) + ": path longer than " +
                        std::to_string(sizeof sun.sun_path - 1) + " bytes (use a shorter path)");
  std::memcpy(sun.sun_path, a.path.c_str(), a.path.size() + 1);
  fd_guard s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) throw startup_error(bind_error(text, errno));

  struct stat st{};
  if (::lstat(a.path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw startup_error("cannot listen on " + std::string(text) +
                          ": the path exists and is not a socket (remove it or choose another path)");
    // Someone accepting there means a live server: never take its path away.
    fd_guard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (::connect(probe.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0)
      throw startup_error(bind_error(text, EADDRINUSE));
    ::unlink(a.path.c_str());
  }
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || ::listen(s.fd, backlog) != 0)
    throw startup_error(bind_error(text, errno));
  return listener{s.release(), AF_UNIX, std::string(text), "unix:" + a.path};
}

}  // namespace

std::variant<listen_address, std::string> parse_listen_address(std::string_view text) {
  listen_address a;
  if (text.starts_with("unix:") || text.starts_with("/")) {
    a.is_unix = true;
    a.path = std::string(text.starts_with("unix:") ? text.substr(5) : text);
    if (a.path.empty()) return "listen address " + quoted(text) + " has an empty Unix socket path";
    return a;
  }
  std::string_view host, port;
  if (text.starts_with("[")) {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return "listen address " + quoted(text) + " is not of the form [IPV6]:PORT";
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return "listen address " + quoted(text) + " has no port: use HOST:PORT, [IPV6]:PORT or unix:PATH";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return "listen address " + quoted(text) + " looks like IPv6: put the address in brackets, [" +
             std::string(host) + "]:PORT";
  }
  auto p = parse_port(text, port);
  if (auto* err = std::get_if<std::string>(&p)) return *err;
  a.port = std::get<std::uint16_t>(p);
  a.host = host.empty() ? "0.0.0.0" : std::string(host);
  return a;
}

listener bind_listener(const listen_address& a, std::string_view text, int backlog, bool reuseport) {
  if (a.is_unix) return bind_unix(a, text, backlog);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string port = std::to_string(a.port);
  if (int rc = ::getaddrinfo(a.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw startup_error("cannot listen on " + std::string(text) + ": cannot resolve host " + quoted(a.host) +
                        " (" + ::gai_strerror(rc) + "; use an IP address)");
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);

  fd_guard s{::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) throw startup_error(bind_error(text, errno));
  int one = 1;
  ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  // Bind v6 addresses to v6 only, so "[::]:P" and "0.0.0.0:P" can both be listened on.
  if (found->ai_family == AF_INET6) ::setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(s.fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(s.fd, backlog) != 0)
    throw startup_error(bind_error(text, errno));
  int fd = s.release();
  return listener{fd, found->ai_family, std::string(text), local_address(fd)};
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char buf[INET6_ADDRSTRLEN] = {};
  switch (ss.ss_family) {
    case AF_INET: {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
    }
    case AF_INET6: {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
      return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6->sin6_port));
    }
    case AF_UNIX: {
      auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
      if (len <= offsetof(sockaddr_un, sun_path)) return "unix:(unnamed)";
      if (sun->sun_path[0] == '\0')
        return "unix:@" + std::string(sun->sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1);
      return "unix:" + std::string(sun->sun_path);
    }
  }
  return "?";
}

std::optional<std::string> check_tcp_address(std::string_view flag, std::string_view text, listen_address* out) {
  std::string what = std::string(flag) + " '" + std::string(text) + "'";
  auto p = parse_listen_address(text);
  if (auto* err = std::get_if<std::string>(&p)) return what + ": " + *err;
  const auto& a = std::get<listen_address>(p);
  if (a.is_unix) return what + " must be HOST:PORT, not a Unix path";
  if (a.port == 0) return what + " needs a port other than 0";
  if (out) *out = a;
  return std::nullopt;
}

}  // namespace loopfleet
