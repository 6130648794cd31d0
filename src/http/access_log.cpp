#include "http/access_log.hpp"

#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/worker_env.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace loopfleet::http::detail {
namespace {

// A file takes one write of many lines (O_APPEND keeps each write whole at the end); a pipe
// only keeps writes of PIPE_BUF bytes or fewer whole.
constexpr std::size_t file_write_limit = 64 * 1024;
constexpr std::size_t pipe_write_limit = PIPE_BUF;

void append_int(std::string& out, std::int64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, end);
}

// "0.042": microseconds as milliseconds with three decimals, without floating point.
void append_ms(std::string& out, std::int64_t us) {
  if (us < 0) us = 0;
  append_int(out, us / 1000);
  char frac[4] = {char('0' + us % 1000 / 100), char('0' + us % 100 / 10), char('0' + us % 10), 0};
  out += '.';
  out.append(frac, 3);
}

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no overlong
// forms, no surrogates), 0 when it is not one.
std::size_t utf8_sequence(std::string_view s) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xbf) { return i < s.size() && b(i) >= lo && b(i) <= hi; };
  unsigned lead = b(0);
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    unsigned lo = lead == 0xe0 ? 0xa0 : 0x80, hi = lead == 0xed ? 0x9f : 0xbf;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    unsigned lo = lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xf4 ? 0x8f : 0xbf;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// A JSON string. A client's bytes that are not UTF-8 become \u00XX (the byte read as
// Latin-1), so every line stays JSON that a strict reader accepts. Runs of bytes that need no
// escape (nearly all of them) are appended whole.
void append_json_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // where the bytes not yet appended begin
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u < 0x7f && u != '"' && u != '\\') continue;
    std::size_t n = u >= 0x80 ? utf8_sequence(s.substr(i)) : 0;
    if (n) {
      i += n - 1;
      continue;
    }
    out.append(s.data() + run, i - run);
    run = i + 1;
    if (u == '"' || u == '\\') {
      out += '\\';
      out += static_cast<char>(u);
    } else {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// The combined format's quoted fields, escaped as nginx escapes them.
void append_clf_text(std::string& out, std::string_view s) {
  if (s.empty()) {
    out += '-';
    return;
  }
  static const char hex[] = "0123456789ABCDEF";
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u < 0x7f && u != '"' && u != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    out += "\\x";
    out += hex[u >> 4];
    out += hex[u & 15];
  }
  out.append(s.data() + run, s.size() - run);
}

void refresh(second_text& c, std::int64_t second) {
  if (c.second == second) return;
  c.second = second;
  std::time_t t = static_cast<std::time_t>(second);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  std::strftime(c.iso, sizeof c.iso, "%Y-%m-%dT%H:%M:%S", &utc);
  std::strftime(c.clf, sizeof c.clf, "%d/%b/%Y:%H:%M:%S +0000", &utc);
}

}  // namespace

void format_access_line(std::string& out, const access_entry& e, access_format f, second_text& cache) {
  std::int64_t time_ms = e.time_ms >= 0 ? e.time_ms : 0;
  std::int64_t second = time_ms / 1000;
  refresh(cache, second);
  if (f == access_format::json) {
    out += "{\"time\":\"";
    out += cache.iso;
    int ms = static_cast<int>(time_ms - second * 1000);
    char frac[5] = {'.', char('0' + ms / 100), char('0' + ms / 10 % 10), char('0' + ms % 10), 0};
    out.append(frac, 4);
    out += "Z\",\"slot\":";
    append_int(out, e.slot);
    out += ",\"remote\":";
    append_json_string(out, e.remote);
    out += ",\"method\":";
    append_json_string(out, e.method);
    out += ",\"target\":";
    append_json_string(out, e.target);
    out += ",\"status\":";
    append_int(out, e.status);
    out += ",\"bytes\":";
    append_int(out, static_cast<std::int64_t>(e.bytes));
    out += ",\"duration_ms\":";
    append_ms(out, e.duration_us);
    out += "}\n";
    return;
  }
  append_clf_text(out, e.remote);
  out += " - - [";
  out += cache.clf;
  out += "] \"";
  if (e.method.empty()) {
    out += '-';  // nothing parsed: a request refused before its request line was read
  } else {
    append_clf_text(out, e.method);
    out += ' ';
    append_clf_text(out, e.target);
    out += e.version == 10 ? " HTTP/1.0" : " HTTP/1.1";
  }
  out += "\" ";
  append_int(out, e.status);
  out += ' ';
  append_int(out, static_cast<std::int64_t>(e.bytes));
  out += " \"";
  append_clf_text(out, e.referer);
  out += "\" \"";
  append_clf_text(out, e.user_agent);
  out += "\" slot=";
  append_int(out, e.slot);
  out += " duration_ms=";
  append_ms(out, e.duration_us);
  out += '\n';
}

std::size_t whole_lines_within(std::string_view buffered, std::size_t limit) {
  if (buffered.size() <= limit && (buffered.empty() || buffered.back() == '\n')) return buffered.size();
  auto last = buffered.substr(0, std::min(limit, buffered.size())).rfind('\n');
  if (last != std::string_view::npos) return last + 1;
  auto first = buffered.find('\n');  // one line longer than the limit: it goes alone
  return first == std::string_view::npos ? 0 : first + 1;
}

std::unique_ptr<access_log> access_log::from_environment() {
  const char* path = std::getenv(worker_env::access_log);
  const char* fd_text = std::getenv(worker_env::access_log_fd);
  if ((!path || !*path) && (!fd_text || !*fd_text)) return nullptr;
  const char* format_text = std::getenv(worker_env::access_log_format);
  access_format format = format_text && std::string_view(format_text) == "combined" ? access_format::combined
                                                                                     : access_format::json;
  const char* slot_text = std::getenv(worker_env::slot);
  int slot = slot_text && *slot_text ? std::atoi(slot_text) : -1;
  if (fd_text && *fd_text) {
    int fd = std::atoi(fd_text);
    struct stat st {};
    if (fd < 3 || ::fstat(fd, &st) != 0)
      throw startup_error(std::string(worker_env::access_log_fd) + "=" + fd_text +
                          " is not an open descriptor: the access log cannot be written");
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for the worker's own children
    return std::make_unique<access_log>(fd, "", !S_ISREG(st.st_mode), format, slot);
  }
  int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    throw startup_error(std::string("--access-log ") + path + ": cannot open it (" + std::strerror(errno) +
                        "): create its directory, let the workers' user write it, or choose another path");
  struct stat st {};
  ::fstat(fd, &st);
  return std::make_unique<access_log>(fd, path, !S_ISREG(st.st_mode), format, slot);
}

access_log::access_log(int fd, std::string path, bool pipe_like, access_format format, int slot)
    : fd_(fd),
      path_(std::move(path)),
      write_limit_(pipe_like ? pipe_write_limit : file_write_limit),
      format_(format),
      slot_(slot) {
  buffer_.reserve(write_limit_ + 4096);
  tick(std::chrono::steady_clock::now());
}

access_log::~access_log() {
  flush();
  if (fd_ >= 0) ::close(fd_);
}

std::int64_t access_log::wall_ms(std::chrono::steady_clock::time_point t) const {
  return wall_ref_ms_ + std::chrono::duration_cast<std::chrono::milliseconds>(t - steady_ref_).count();
}

void access_log::add(const access_entry& e) {
  format_access_line(buffer_, e, format_, cache_);
  if (buffer_.size() >= write_limit_) flush();
}

void access_log::tick(std::chrono::steady_clock::time_point now) {
  flush();
  steady_ref_ = now;
  wall_ref_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  if (!path_.empty() && ++ticks_ % 4 == 0) reopen_if_moved();
}

void access_log::flush() {
  std::string_view left = buffer_;
  while (!left.empty()) {
    std::size_t n = whole_lines_within(left, write_limit_);
    if (n == 0) break;
    ssize_t w = ::write(fd_, left.data(), n);
    if (w < 0 && errno == EINTR) continue;
    if (w != static_cast<ssize_t>(n)) {
      // Disk full, a closed pipe: the lines are dropped rather than kept growing, and said once
      // a burst (counted, so the log tells how many are missing).
      std::size_t lines = 0;
      for (char ch : left) lines += ch == '\n';
      if (lost_ == 0)
        log::warn("access log: write failed (" + std::string(w < 0 ? std::strerror(errno) : "short write") +
                  "): " + std::to_string(lines) + " line(s) dropped; later losses are counted until a write succeeds");
      lost_ += lines;
      left = {};
      break;
    }
    if (lost_) {
      log::warn("access log: writing again after " + std::to_string(lost_) + " dropped line(s)");
      lost_ = 0;
    }
    left.remove_prefix(n);
  }
  buffer_.erase(0, buffer_.size() - left.size());
}

void access_log::reopen_if_moved() {
  struct stat now {}, open {};
  bool same = ::stat(path_.c_str(), &now) == 0 && ::fstat(fd_, &open) == 0 && now.st_dev == open.st_dev &&
              now.st_ino == open.st_ino;
  if (same) return;
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return;  // tried again next second; the lines go to the old file meanwhile
  flush();
  ::close(fd_);
  fd_ = fd;
}

std::string peer_text(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, text, sizeof text);
  else if (ss.ss_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, text, sizeof text);
  return text;
}

}  // namespace loopfleet::http::detail
