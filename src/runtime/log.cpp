#include "runtime/log.hpp"

#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <string>

namespace loopfleet::log {
namespace {
std::string g_name = "loopfleet";
}

void set_name(std::string_view name) { g_name = std::string(name) + "[" + std::to_string(getpid()) + "]"; }

void write(level lv, std::string_view message) {
  static constexpr const char* names[] = {"debug", "info", "warn", "error"};
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm utc{};
  gmtime_r(&tv.tv_sec, &utc);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(tv.tv_usec / 1000));
  std::string line;
  line.reserve(64 + message.size());
  line += stamp;
  line += names[static_cast<int>(lv)];
  line += ' ';
  line += g_name;
  line += ' ';
  line += message;
  line += '\n';
  // A short write to a pipe of under PIPE_BUF bytes cannot happen; longer lines may interleave.
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace loopfleet::log
