#include "supervisor/spawn.hpp"

#include "runtime/worker_env.hpp"

#include <unistd.h>

#include <cstdlib>
#include <iterator>

namespace loopfleet::supervisor {

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
  spawn_spec worker = spec;
  // Every variable a worker may be given, whether or not this one is, so that none is
  // inherited; the rest (LOOPFLEET_OFFLOAD_* included) passes.
  worker.unset.insert(worker.unset.end(), std::begin(worker_env::all), std::end(worker_env::all));
  worker.listen_pid = true;
  worker.capture_output = true;
  return spawn(worker);
}

}  // namespace loopfleet::supervisor
