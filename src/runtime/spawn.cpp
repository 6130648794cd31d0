// The one spawn (spawn.hpp says why there is only one). After fork only async-signal-safe
// work: the parent may have threads, so everything the child uses is built before fork.
#include "runtime/spawn.hpp"

#include "runtime/worker_env.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

extern char** environ;

namespace loopfleet {
namespace {

// Die with `death_signal` when the parent dies (also by SIGKILL), exit at once if it already
// has, and start from the default signal mask and dispositions (crash signals included, so a
// task's segfault stays a segfault, and SIGPIPE, which we ignore and exec would keep
// ignored). Only async-signal-safe calls.
void become_child_of(pid_t parent, int death_signal) {
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  if (::getppid() != parent) ::_exit(1);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig :
       {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGUSR2})
    ::signal(sig, SIG_DFL);
}

// One write from the forked child, of a line formatted on its stack: nothing allocates.
template <typename... Args>
void say(int fd, const char* format, Args... args) {
  char msg[512];
  int m = std::snprintf(msg, sizeof msg, format, args...);
  [[maybe_unused]] auto w = ::write(fd, msg, m > 0 ? std::min(static_cast<size_t>(m), sizeof msg - 1) : 0);
}

bool names(std::string_view entry, std::string_view name) {
  return entry.size() > name.size() && entry.starts_with(name) && entry[name.size()] == '=';
}

// Ours minus what the spec sets or unsets, then the spec's own entries.
std::vector<std::string> child_environment(const spawn_spec& spec) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    bool dropped = spec.listen_pid && names(kv, worker_env::listen_pid);
    for (const auto& set : spec.env) dropped |= names(kv, std::string_view(set).substr(0, set.find('=')));
    for (const auto& name : spec.unset) dropped |= names(kv, name);
    if (!dropped) out.emplace_back(kv);
  }
  out.insert(out.end(), spec.env.begin(), spec.env.end());
  return out;
}

void close_pair(int fds[2]) {
  for (int i : {0, 1})
    if (fds[i] >= 0) ::close(fds[i]);
}

}  // namespace

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

spawned spawn(const spawn_spec& spec) {
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (spec.capture_output && (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)) {
    int e = errno;
    close_pair(out);
    close_pair(err);
    throw std::system_error(e, std::generic_category(), "pipe");
  }

  // Built before fork: the parent may have threads (the cluster agent, a worker's thread
  // pool), so after fork the child must not call malloc.
  std::vector<std::string> env_strings;
  std::vector<char*> envp, argv;
  char pid_entry[32] = {};
  if (!spec.run) {
    env_strings = child_environment(spec);
    for (auto& s : env_strings) envp.push_back(s.data());
    if (spec.listen_pid) {
      std::snprintf(pid_entry, sizeof pid_entry, "%s=", worker_env::listen_pid);
      envp.push_back(pid_entry);
    }
    envp.push_back(nullptr);
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
  }
  int n = static_cast<int>(spec.fds.size());
  std::vector<int> high(n);
  int error_fd = spec.capture_output ? err[1] : STDERR_FILENO;
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    close_pair(out);
    close_pair(err);
    throw std::system_error(e, std::generic_category(), "fork");
  }
  if (pid == 0) {
    if (spec.user && !become_user(*spec.user)) {
      say(error_fd, "loopfleet: cannot become uid %u gid %u (--user %s): %s\n", static_cast<unsigned>(spec.user->uid),
          static_cast<unsigned>(spec.user->gid), spec.user->spec.c_str(), std::strerror(errno));
      ::_exit(126);
    }
    // After become_user: changing uid or gid clears the parent-death signal, and getppid()
    // there catches a parent that died before it was set.
    become_child_of(parent, spec.death_signal);
    if (spec.own_process_group) ::setpgid(0, 0);
    if (spec.capture_output) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
    }
    // Move the fds above any target first, so dup2 onto 3.. cannot clobber one of them.
    for (int i = 0; i < n; ++i) high[i] = ::fcntl(spec.fds[i], F_DUPFD_CLOEXEC, 3 + n);
    for (int i = 0; i < n; ++i) ::dup2(high[i], 3 + i);  // dup2 clears close-on-exec
    if (spec.run) {
      // Nothing to exec to close what is close-on-exec: an inherited client connection held
      // open here would keep that client waiting after its worker died.
      ::close_range(3 + n, ~0U, 0);
      spec.run();
      ::_exit(0);
    }
    if (spec.listen_pid) {
      // LISTEN_PID must name this process, so it is written here, after fork.
      long me = ::getpid();
      char digits[20];
      int len = 0;
      do {
        digits[len++] = static_cast<char>('0' + me % 10);
        me /= 10;
      } while (me);
      char* p = pid_entry + std::strlen(pid_entry);
      while (len) *p++ = digits[--len];
      *p = '\0';
    }
    const char* path = spec.exec_path.empty() ? argv[0] : spec.exec_path.c_str();
    ::execve(path, argv.data(), envp.data());
    say(STDERR_FILENO, "%s%s: %s\n", spec.exec_failure, path, std::strerror(errno));
    ::_exit(127);
  }
  if (spec.capture_output) {
    ::close(out[1]);
    ::close(err[1]);
  }
  return spawned{pid, out[0], err[0]};
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = ::sigabbrev_np(sig);
    return "signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
  return "status " + std::to_string(status);
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace loopfleet
