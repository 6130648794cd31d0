// The access log of one worker (`loopfleet run --access-log PATH|-`): one line per request,
// JSON or the combined format, written by the worker itself so the supervisor is never on the
// request path. Lines are buffered on the loop and leave in one write(2) per tick (250 ms) or
// when the buffer fills, each write holding whole lines only: with O_APPEND the lines of the
// workers sharing a file never interleave, and a write to a pipe (`-`, the supervisor's stdout)
// stays within PIPE_BUF, which the kernel writes whole. The worker finds the settings in its
// environment (runtime/worker_env.hpp), set by the supervisor from the `run` settings table.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace loopfleet::http::detail {

enum class access_format { json, combined };

// One request as its line shows it.
struct access_entry {
  std::int64_t time_ms = 0;       // wall clock at the request's first byte, ms since the epoch
  int slot = -1;                  // LOOPFLEET_SLOT; -1 when run standalone
  std::string_view remote;        // the client's address ("" for a Unix socket)
  std::string_view method, target;
  int version = 11;               // 10 or 11
  int status = 0;
  std::size_t bytes = 0;          // body bytes sent (0 for HEAD, 204, 304)
  std::int64_t duration_us = 0;   // first byte of the request to its response serialized
  std::string_view referer, user_agent;  // read for the combined format only
};

// The texts of the second a line falls in, made once a second rather than once a line.
struct second_text {
  std::int64_t second = -1;
  char iso[20] = {};  // 2026-12-02T00:48:49
  char clf[27] = {};  // 02/Dec/2026:00:48:49 +0000
};

// Appends the line for `e`, '\n' included. Pure but for the cache of the second's text.
//   json:     {"time":"2026-12-02T00:48:49.123Z","slot":0,"remote":"127.0.0.1","method":"GET",
//              "target":"/","status":200,"bytes":5,"duration_ms":0.042}
//   combined: 127.0.0.1 - - [02/Dec/2026:00:48:49 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/7.88.1"
//             slot=0 duration_ms=0.042
// Text from the client is escaped: JSON's escapes, and \xHH for '"', '\' and bytes outside
// printable ASCII in the combined format (as nginx does), so a request cannot forge a line.
void format_access_line(std::string& out, const access_entry& e, access_format f, second_text& cache);

// Where a write of `buffered` bytes may end so that it holds whole lines and at most `limit`
// bytes: after the last '\n' within the limit, or after the first line when that line alone is
// longer. 0 when there is no whole line.
std::size_t whole_lines_within(std::string_view buffered, std::size_t limit);

class access_log {
 public:
  // From the worker's environment: LOOPFLEET_ACCESS_LOG (a path) or LOOPFLEET_ACCESS_LOG_FD
  // (an inherited descriptor: the supervisor's stdout), LOOPFLEET_ACCESS_LOG_FORMAT and
  // LOOPFLEET_SLOT. nullptr when the log is off. Throws startup_error when the file cannot be
  // opened.
  static std::unique_ptr<access_log> from_environment();
  access_log(int fd, std::string path, bool pipe_like, access_format format, int slot);
  ~access_log();  // writes what is still buffered
  access_log(const access_log&) = delete;
  access_log& operator=(const access_log&) = delete;

  access_format format() const { return format_; }
  int slot() const { return slot_; }
  // The wall clock at steady time `t`, from the pair taken at the last tick: one clock read per
  // request (the steady one, which also measures the duration), not two.
  std::int64_t wall_ms(std::chrono::steady_clock::time_point t) const;

  void add(const access_entry& e);
  // Every tick: writes the buffer, refreshes the wall clock pair, and once a second reopens a
  // file that was renamed or removed (logrotate), so no signal has to reach the workers.
  void tick(std::chrono::steady_clock::time_point now);
  void flush();

 private:
  void reopen_if_moved();

  int fd_;  // ours: a file we opened, or our own duplicate of the supervisor's stdout
  std::string path_;
  std::size_t write_limit_;
  access_format format_;
  int slot_;
  std::string buffer_;
  second_text cache_;
  std::chrono::steady_clock::time_point steady_ref_{};
  std::int64_t wall_ref_ms_ = 0;
  int ticks_ = 0;
  std::uint64_t lost_ = 0;  // lines a failed write dropped since the last warning
};

// The client's address of a connected socket, for the log ("" when it has none: Unix socket).
std::string peer_text(int fd);

}  // namespace loopfleet::http::detail
