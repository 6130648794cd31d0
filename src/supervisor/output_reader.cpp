#include "supervisor/output_reader.hpp"

#include "runtime/heartbeat.hpp"
#include "runtime/log.hpp"
#include "supervisor/stack.hpp"

namespace loopfleet::supervisor {

namespace asio = boost::asio;

output_reader::output_reader(asio::io_context& loop, int fd, std::string tag,
                             std::shared_ptr<std::deque<std::string>> keep)
    : pipe_(loop, fd), tag_(std::move(tag)), kept_(std::move(keep)) {}

void output_reader::start() {
  auto self = shared_from_this();
  pipe_.async_read_some(asio::buffer(chunk_), [self](boost::system::error_code ec, std::size_t n) {
    self->take(n);
    if (ec) {
      self->flush_partial();
      return;
    }
    self->start();
  });
}

void output_reader::drain_now() {
  if (!pipe_.is_open()) return;
  boost::system::error_code ec;
  pipe_.non_blocking(true, ec);
  for (;;) {
    std::size_t n = pipe_.read_some(asio::buffer(chunk_), ec);
    take(n);
    if (ec) break;
  }
  if (stack_ && python_stack_) finish_stack();
}

void output_reader::take(std::size_t n) {
  partial_.append(chunk_.data(), n);
  std::size_t nl;
  while ((nl = partial_.find('\n')) != std::string::npos) {
    emit(partial_.substr(0, nl));
    partial_.erase(0, nl + 1);
  }
  if (partial_.size() > 16384) flush_partial();  // a very long line is forwarded in pieces
}

void output_reader::flush_partial() {
  if (!partial_.empty()) emit(std::exchange(partial_, {}));
  if (stack_ && python_stack_) finish_stack();  // the worker was killed right after its dump
}

void output_reader::finish_stack() {
  if (on_stack) on_stack(std::move(*stack_));
  stack_.reset();
}

void output_reader::emit(const std::string& line) {
  if (line == stack_begin_marker || (stack_asked_ && !stack_ && is_python_stack_header(line))) {
    stack_.emplace();
    python_stack_ = line != stack_begin_marker;
    stack_asked_ = false;
    return;
  }
  if (stack_ && python_stack_) {
    if (is_python_stack_line(line)) {
      stack_->push_back(line);
      return;
    }
    finish_stack();  // a faulthandler traceback has no end marker: its first other line ends it
  } else if (stack_) {
    if (line != stack_end_marker) {
      stack_->push_back(line);
      return;
    }
    finish_stack();
    return;
  }
  if (line.empty()) return;
  log::info(tag_ + line);
  if (kept_) {
    kept_->push_back(line);
    if (kept_->size() > kept_stderr_lines) kept_->pop_front();
  }
}

}  // namespace loopfleet::supervisor
