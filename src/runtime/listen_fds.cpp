#include "runtime/listen_fds.hpp"

#include "runtime/address.hpp"
#include "runtime/error.hpp"
#include "runtime/worker_env.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string_view>

namespace loopfleet {
namespace {

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

std::variant<inherited_fds, std::string> read_listen_fds(const char* listen_pid, const char* listen_fds,
                                                          const char* listen_fdnames, pid_t self) {
  inherited_fds out;
  if (!listen_pid || !listen_fds) return out;
  long pid = 0;
  if (!parse_number(std::string_view(listen_pid), pid))
    return "LISTEN_PID='" + std::string(listen_pid) + "' is not a process id";
  if (pid != self) return out;  // meant for another process (our parent, most likely)
  int count = 0;
  if (!parse_number(std::string_view(listen_fds), count) || count < 0 || count > 1024)
    return "LISTEN_FDS='" + std::string(listen_fds) + "' is not a socket count";

  std::vector<std::string> names;
  if (listen_fdnames) {
    std::string_view rest(listen_fdnames);
    while (true) {
      auto colon = rest.find(':');
      names.emplace_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  for (int i = 0; i < count; ++i) {
    out.fds.push_back(listen_fds_start + i);
    bool named = names.size() == static_cast<std::size_t>(count) && !names[i].empty();
    out.names.push_back(named ? names[i] : "unknown");
  }
  return out;
}

std::vector<listener> adopt_listen_fds() {
  auto rules = read_listen_fds(std::getenv(worker_env::listen_pid), std::getenv(worker_env::listen_fds),
                               std::getenv(worker_env::listen_fdnames), ::getpid());
  if (auto* err = std::get_if<std::string>(&rules))
    throw startup_error("cannot adopt inherited sockets: " + *err + " (the parent process set it wrong)");
  ::unsetenv(worker_env::listen_pid);
  ::unsetenv(worker_env::listen_fds);
  ::unsetenv(worker_env::listen_fdnames);

  auto& inherited = std::get<inherited_fds>(rules);
  std::vector<listener> out;
  for (std::size_t i = 0; i < inherited.fds.size(); ++i) out.push_back(adopt_listener(inherited.fds[i], inherited.names[i]));
  return out;
}

listener adopt_listener(int fd, std::string name) {
  int type = 0, listening = 0;
  socklen_t len = sizeof type;
  sockaddr_storage ss{};
  socklen_t slen = sizeof ss;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &slen) != 0)
    throw startup_error("cannot adopt inherited fd " + std::to_string(fd) +
                        ": not a socket (LISTEN_FDS counts fds from 3; the parent passed the wrong fds)");
  len = sizeof listening;
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  if (type != SOCK_STREAM || !listening)
    throw startup_error("cannot adopt inherited fd " + std::to_string(fd) +
                        ": not a listening stream socket (only TCP and Unix stream listeners are served)");
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return listener{fd, ss.ss_family, std::move(name), local_address(fd), true};
}

}  // namespace loopfleet
