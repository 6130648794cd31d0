// What every process we fork does first, before it execs or runs its own loop.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace loopfleet {

// In a freshly forked child: die with `death_signal` when the parent dies (also by SIGKILL),
// exit at once if it already has, and start from the default signal mask and dispositions
// (crash signals included, so a task's segfault stays a segfault, and SIGPIPE, which we
// ignore and exec would keep ignored). Only async-signal-safe calls.
inline void become_child_of(pid_t parent, int death_signal) {
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  if (::getppid() != parent) ::_exit(1);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGUSR2})
    ::signal(sig, SIG_DFL);
}

}  // namespace loopfleet
