// A child's stdout or stderr, forwarded to the supervisor's log line by line with a tag
// ("slot 0 pid 123 | "). Workers and the nats-server child share it. It also lifts a stalled
// loop's stack dump out of the stream (between stack.hpp's markers, or a Python faulthandler
// traceback once the supervisor asked for one) and hands it over instead of logging it raw.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <array>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loopfleet::supervisor {

// How many of a worker's last stderr lines are kept: shown when it cannot start.
constexpr std::size_t kept_stderr_lines = 20;

class output_reader : public std::enable_shared_from_this<output_reader> {
 public:
  // `keep`: where the last lines go (nullptr: nowhere). Takes ownership of `fd`.
  output_reader(boost::asio::io_context& loop, int fd, std::string tag,
                std::shared_ptr<std::deque<std::string>> keep);
  void start();
  // Reads whatever is already in the pipe, without waiting: called when the child has
  // exited, so its last lines are logged (and kept) before the exit is.
  void drain_now();
  // The supervisor sent the stack signal: only then is a faulthandler header read as the
  // stalled loop's stack (an app's own faulthandler dump on a crash is just logged).
  void expect_stack() { stack_asked_ = true; }
  // Called with the lines of a stack dump instead of forwarding them.
  std::function<void(std::vector<std::string>)> on_stack;

 private:
  void take(std::size_t n);
  void flush_partial();
  void finish_stack();
  void emit(const std::string& line);

  boost::asio::posix::stream_descriptor pipe_;
  std::string tag_;
  std::shared_ptr<std::deque<std::string>> kept_;
  std::array<char, 4096> chunk_{};
  std::string partial_;
  std::optional<std::vector<std::string>> stack_;
  bool python_stack_ = false;  // the open stack is a faulthandler traceback
  bool stack_asked_ = false;
};

}  // namespace loopfleet::supervisor
