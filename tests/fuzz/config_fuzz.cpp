// `loopfleet run` configuration: TOML text, as a file given with --config, through the same
// parse_run_args the command and every reload use (toml++, our key table, the flags over the
// file, the final checks). Input: the file's text, optionally followed by a NUL byte and
// flags, one per line, that come before it on the command line. A config that is accepted
// must hold only values the supervisor can run with.
#include "supervisor/config.hpp"

#include "runtime/address.hpp"

#include "fuzz_check.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace {

// One file in a private directory, rewritten for every input: in /dev/shm when there is one,
// because rewriting a file on a disk file system blocks on its journal every time.
struct scratch_file {
  std::string dir, path;
  scratch_file() {
    std::string pattern =
        (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + std::string("/loopfleet-config-fuzz-XXXXXX");
    FUZZ_CHECK(::mkdtemp(pattern.data()) != nullptr);
    const char* name = pattern.c_str();
    dir = name;
    path = dir + "/run.toml";
  }
  ~scratch_file() {
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
  void write(std::string_view text) const {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    FUZZ_CHECK(f != nullptr);
    FUZZ_CHECK(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    std::fclose(f);
  }
};

void check_runnable(const loopfleet::supervisor::config& c) {
  using std::chrono::milliseconds;
  FUZZ_CHECK(c.workers >= 0 && c.workers <= 1024);
  FUZZ_CHECK(c.backlog >= 1 && c.backlog <= 65535);
  FUZZ_CHECK(c.degraded_after >= 1);
  FUZZ_CHECK(c.replicas >= 0 && c.replicas <= 5);
  FUZZ_CHECK(c.max_requests >= 0 && c.max_requests_jitter >= 0 && c.max_memory >= 0);
  for (milliseconds d : {c.ready_delay, c.ready_timeout, c.graceful_timeout, c.backoff_initial, c.backoff_max,
                         c.healthy_after, c.watchdog, c.replicas_wait, c.front_drain})
    FUZZ_CHECK(d.count() >= 0);
  FUZZ_CHECK(c.backoff_max >= c.backoff_initial);
  FUZZ_CHECK(!c.command.empty());
  FUZZ_CHECK(!c.name.empty() && c.name.find('/') == std::string::npos);
  FUZZ_CHECK(!c.control.empty());
  FUZZ_CHECK(!c.listen.empty());
  for (const auto& l : c.listen)
    FUZZ_CHECK(std::holds_alternative<loopfleet::listen_address>(loopfleet::parse_listen_address(l)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const scratch_file file;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto nul = input.find('\0');
  file.write(input.substr(0, nul));

  std::vector<std::string> flags;
  for (std::string_view rest = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
       !rest.empty();) {
    auto nl = rest.find('\n');
    // Another --config could name /dev/zero and read forever: only our file is read.
    if (!rest.substr(0, nl).starts_with("--config")) flags.emplace_back(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
  }
  std::vector<std::string_view> args(flags.begin(), flags.end());
  args.insert(args.begin(), {"--config", file.path});

  loopfleet::supervisor::config c;
  bool help = false;
  auto err = loopfleet::supervisor::parse_run_args(args, c, &help);
  if (err) {
    FUZZ_CHECK(!err->empty());
  } else if (!help) {
    check_runnable(c);
  }
  return 0;
}
