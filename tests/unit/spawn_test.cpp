// The one spawn (runtime/spawn.hpp) and the worker's use of it (supervisor/spawn.hpp): what a
// child inherits, where its fds land, how a failed exec and an ended child read.
#include "runtime/spawn.hpp"
#include "runtime/worker_env.hpp"
#include "supervisor/spawn.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace loopfleet;

namespace {

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

struct finished {
  std::string out, err;
  int status = 0;
};

finished wait_for(const spawned& s) {
  finished f;
  f.out = read_all(s.out);
  f.err = read_all(s.err);
  ::waitpid(s.pid, &f.status, 0);
  return f;
}

// Spawns with a pipe's write end as the child's fd 3; `out` is what came through it.
finished through_fd_three(spawn_spec spec) {
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  spec.fds = {p[1]};
  auto s = spawn(spec);
  ::close(p[1]);
  finished f;
  f.out = read_all(p[0]);
  ::waitpid(s.pid, &f.status, 0);
  return f;
}

}  // namespace

TEST(ExitText, CodesAndSignals) {
  EXPECT_EQ(describe_exit(3 << 8), "exit code 3");
  EXPECT_EQ(describe_exit(9), "signal 9 (SIGKILL)");
  EXPECT_EQ(exit_code(3 << 8), 3);
  EXPECT_EQ(exit_code(9), 128 + 9);
}

TEST(Spawn, FindsExecutablesOnThePath) {
  EXPECT_NE(find_executable("sh"), "");
  EXPECT_EQ(find_executable("/nonexistent/app"), "");
  EXPECT_EQ(find_executable("loopfleet-no-such-command"), "");
}

// Any worker variable inherited from our own parent must not reach a worker: the ones we set
// replace it, the ones we set only sometimes are removed.
TEST(Spawn, WorkerGetsOnlyTheSupervisorsWorkerVariables) {
  ::setenv(worker_env::node, "inherited-node", 1);
  ::setenv(worker_env::nats_url, "nats://inherited:4222", 1);
  ::setenv(worker_env::heartbeat_fd, "9", 1);
  ::setenv("LOOPFLEET_OFFLOAD_THREADS", "3", 1);
  spawn_spec spec;
  spec.argv = {find_executable("sh"), "-c",
               "echo \"node=$LOOPFLEET_NODE url=${LOOPFLEET_NATS_URL-unset} beat=${LOOPFLEET_HEARTBEAT_FD-unset} "
               "threads=$LOOPFLEET_OFFLOAD_THREADS pid=$LISTEN_PID\"; env | grep -c '^LOOPFLEET_NODE='"};
  spec.env = {std::string(worker_env::node) + "=fresh"};
  auto s = supervisor::spawn_worker(spec);
  auto f = wait_for(s);
  ::unsetenv(worker_env::node);
  ::unsetenv(worker_env::nats_url);
  ::unsetenv(worker_env::heartbeat_fd);
  ::unsetenv("LOOPFLEET_OFFLOAD_THREADS");
  EXPECT_EQ(exit_code(f.status), 0) << f.err;
  EXPECT_EQ(f.out, "node=fresh url=unset beat=unset threads=3 pid=" + std::to_string(s.pid) + "\n1\n");
}

TEST(Spawn, FdsLandAtThreeOnward) {
  spawn_spec spec;
  spec.argv = {find_executable("sh"), "-c", "echo through-three >&3"};
  auto f = through_fd_three(spec);
  EXPECT_EQ(f.out, "through-three\n");
  EXPECT_EQ(describe_exit(f.status), "exit code 0");
}

TEST(Spawn, FailedExecSaysSoAndExits127) {
  spawn_spec spec;
  spec.argv = {"/nonexistent/app"};
  spec.capture_output = true;
  auto f = wait_for(spawn(spec));
  EXPECT_EQ(describe_exit(f.status), "exit code 127");
  EXPECT_EQ(f.err, "loopfleet: cannot run /nonexistent/app: No such file or directory\n");
}

TEST(Spawn, RunsAFunctionInsteadOfExec) {
  spawn_spec spec;
  spec.own_process_group = false;
  spec.run = [] {
    // fd 3 is the pipe; the copies above it are closed.
    bool only_three = ::write(3, "x", 1) == 1 && ::fcntl(4, F_GETFD) < 0;
    ::_exit(only_three ? 7 : 1);
  };
  auto f = through_fd_three(spec);
  EXPECT_EQ(f.out, "x");
  EXPECT_EQ(describe_exit(f.status), "exit code 7");
}
