#include "supervisor/spawn.hpp"

#include "runtime/child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

extern char** environ;

namespace loopfleet::supervisor {

std::string find_executable(const std::string& command) {
  if (command.find('/') != std::string::npos) return ::access(command.c_str(), X_OK) == 0 ? command : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = (end > start ? dirs.substr(start, end - start) : ".") + "/" + command;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

std::string worker_python_path(const char* inherited) {
  std::string path = inherited ? inherited : "";
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return path;
  std::string dir(exe, static_cast<std::size_t>(n));
  dir = dir.substr(0, dir.rfind('/')) + "/../lib/loopfleet/python";
  char real[4096];
  if (!::realpath(dir.c_str(), real) || ::access((std::string(real) + "/loopfleet/__init__.py").c_str(), R_OK) != 0)
    return path;
  return path.empty() ? real : std::string(real) + ":" + path;
}

spawned spawn_worker(const spawn_spec& spec) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::system_error(errno, std::generic_category(), "pipe");
  }

  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    // Drop what we set per worker (and what systemd may have set for us); keep the rest,
    // LOOPFLEET_OFFLOAD_* included.
    static constexpr std::string_view ours[] = {
        "LISTEN_PID=",           "LISTEN_FDS=",          "LISTEN_FDNAMES=",         "NOTIFY_SOCKET=",
        "WATCHDOG_USEC=",        "WATCHDOG_PID=",        "LOOPFLEET_SLOT=",         "LOOPFLEET_WORKERS=",
        "LOOPFLEET_GENERATION=", "LOOPFLEET_NOTIFY_FD=", "LOOPFLEET_HEARTBEAT_FD=", "PYTHONPATH="};
    bool set_here = false;
    for (auto prefix : ours) set_here |= kv.starts_with(prefix);
    if (!set_here) env_strings.emplace_back(kv);
  }
  for (const auto& e : spec.env) env_strings.push_back(e);
  char pid_entry[32] = "LISTEN_PID=";
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(pid_entry);
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  // Allocated before fork: the supervisor may have threads (the cluster agent), so the child
  // should not call malloc.
  int n = static_cast<int>(spec.fds.size());
  std::vector<int> high(n);

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    throw std::system_error(e, std::generic_category(), "fork");
  }
  if (pid == 0) {
    if (spec.user && !become_user(*spec.user)) {
      char msg[256];
      int m = std::snprintf(msg, sizeof msg, "loopfleet: cannot become uid %u gid %u (--user %s): %s\n",
                            static_cast<unsigned>(spec.user->uid), static_cast<unsigned>(spec.user->gid),
                            spec.user->spec.c_str(), std::strerror(errno));
      [[maybe_unused]] auto w = ::write(err[1], msg, m > 0 ? std::min(static_cast<size_t>(m), sizeof msg - 1) : 0);
      ::_exit(126);
    }
    // A worker must not outlive a supervisor killed with SIGKILL: it gets SIGTERM (a drain).
    // After become_user: changing uid or gid clears the parent-death signal, and getppid()
    // there catches a supervisor that died before it was set.
    become_child_of(parent, SIGTERM);
    // Own process group: a Ctrl-C at the terminal reaches the supervisor, which drains the
    // workers in order, instead of every worker at once.
    ::setpgid(0, 0);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    // Move the sockets above any target first, so dup2 onto 3.. cannot clobber one of them.
    for (int i = 0; i < n; ++i) high[i] = ::fcntl(spec.fds[i], F_DUPFD_CLOEXEC, 3 + n);
    for (int i = 0; i < n; ++i) ::dup2(high[i], 3 + i);  // dup2 clears close-on-exec
    // LISTEN_PID must name this process, so it is written here, after fork.
    long me = ::getpid();
    char digits[20];
    int len = 0;
    do {
      digits[len++] = static_cast<char>('0' + me % 10);
      me /= 10;
    } while (me);
    char* p = pid_entry + std::strlen("LISTEN_PID=");
    while (len) *p++ = digits[--len];
    *p = '\0';
    ::execve(argv[0], argv.data(), envp.data());
    char msg[512];
    int m = std::snprintf(msg, sizeof msg, "loopfleet: cannot run %s: %s\n", argv[0], std::strerror(errno));
    [[maybe_unused]] auto w = ::write(STDERR_FILENO, msg, m > 0 ? std::min(static_cast<size_t>(m), sizeof msg - 1) : 0);
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  return spawned{pid, out[0], err[0]};
}

}  // namespace loopfleet::supervisor
