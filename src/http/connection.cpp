// The HTTP/1.1 protocol loop of one connection (wait until the socket has input, read a
// batch, answer its requests, write the answers in one piece, keep the connection or close it)
// and the request_reader it parses with. This is the only translation unit that includes
// Beast: its request parser is fuzzed and trusted, so we use it, but feed it from our own
// buffer and write responses ourselves (respond.cpp). The loop's decisions are the pure
// functions of connection_policy.hpp.
#include "http/connection_policy.hpp"
#include "http/request_reader.hpp"
#include "http/server.hpp"

#include "runtime/log.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <coroutine>
#include <cstring>
#include <memory>
#include <optional>

namespace loopfleet::http::detail {

namespace beast = boost::beast;
using beast::http::field;

// Fills a loopfleet request straight from Beast's callbacks: no intermediate field container.
class request_parser final : public beast::http::basic_parser<true> {
 public:
  // Starts a new request in `r`, reusing its buffers.
  explicit request_parser(request& r) : req_(r) { req_.clear(); }
  bool expects_continue = false;
  // The status for a request refused after its header (0: Beast's error decides), and whether
  // the connection must close after the response even if the request asked to keep it.
  int reject_status = 0;
  bool must_close = false;

 private:
  void on_request_impl(beast::http::verb, beast::string_view method, beast::string_view target, int version,
                       beast::error_code&) override {
    req_.method_.assign(method.data(), method.size());
    req_.target_.assign(target.data(), target.size());
    req_.version_ = version;
    req_.locate_path();
  }
  void on_response_impl(int, beast::string_view, int, beast::error_code&) override {}
  void on_field_impl(field f, beast::string_view name, beast::string_view value, beast::error_code&) override {
    auto at = static_cast<std::uint32_t>(req_.fields_text_.size());
    req_.fields_text_.append(name.data(), name.size());
    req_.fields_text_.append(value.data(), value.size());
    req_.fields_.push_back({at, static_cast<std::uint32_t>(name.size()), at + static_cast<std::uint32_t>(name.size()),
                            static_cast<std::uint32_t>(value.size())});
    if (f == field::host) {
      ++hosts_;
      host_valid_ = host_valid_ && valid_host({value.data(), value.size()});
    }
    if (f == field::transfer_encoding) {
      if (!codings_.empty()) codings_ += ',';  // several fields are one list (RFC 9110 5.3)
      codings_.append(value.data(), value.size());
    }
    // RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored (it cannot read a 1xx).
    if (f == field::expect && req_.version_ >= 11 && value.size() == 12 &&
        ::strncasecmp(value.data(), "100-continue", 12) == 0)
      expects_continue = true;
  }
  void on_header_impl(beast::error_code& ec) override {
    // RFC 9112 3.2: 400 to an HTTP/1.1 request without Host, with more than one, or with an
    // invalid one.
    if ((req_.version_ >= 11 && hosts_ == 0) || hosts_ > 1 || !host_valid_) {
      ec = beast::http::error::bad_field;
      return;
    }
    if (!codings_.empty()) check_codings(ec);
  }
  // RFC 9112 6.1 and 6.3: a request whose transfer codings do not end in chunked has no
  // reliable length (400, then close: what follows could be a smuggled request); a coding we
  // do not implement is 501; an HTTP/1.0 message with Transfer-Encoding closes after it.
  void check_codings(beast::error_code& ec) {
    std::string_view list = codings_, last;
    bool other = false;
    while (!list.empty()) {
      auto comma = list.find(',');
      std::string_view coding = list.substr(0, comma);
      coding = coding.substr(0, coding.find(';'));  // parameters
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) coding.remove_prefix(1);
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) coding.remove_suffix(1);
      if (!coding.empty()) {
        last = coding;
        if (!(coding.size() == 7 && ::strncasecmp(coding.data(), "chunked", 7) == 0)) other = true;
      }
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    }
    bool chunked_last = last.size() == 7 && ::strncasecmp(last.data(), "chunked", 7) == 0;
    if (!chunked_last) {
      reject_status = 400;
      ec = beast::http::error::bad_transfer_encoding;
    } else if (other) {
      reject_status = 501;
      ec = beast::http::error::bad_transfer_encoding;
    }
    if (req_.version_ < 11) must_close = true;
  }
  // RFC 9110 7.2 / RFC 3986 3.2.2: host [":" port], with a reg-name, IPv4 or "[IPv6]" host.
  // Empty is allowed (a target without an authority).
  static bool valid_host(std::string_view v) {
    for (char c : v) {
      // ASCII by hand: isalnum asks the locale, a call per character (0.7 % of a request).
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) continue;
      switch (c) {
        case '-': case '.': case '_': case '~': case '%': case '!': case '$': case '&': case '\'':
        case '(': case ')': case '*': case '+': case ',': case ';': case '=': case ':': case '[': case ']':
          continue;
        default:
          return false;
      }
    }
    return true;
  }
  void on_body_init_impl(boost::optional<std::uint64_t> const& length, beast::error_code&) override {
    if (length) req_.body_.reserve(*length);  // already checked against body_limit by Beast
  }
  std::size_t on_body_impl(beast::string_view body, beast::error_code&) override {
    req_.body_.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, beast::error_code&) override {
    req_.body_.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(beast::error_code&) override {}

  request& req_;
  int hosts_ = 0;
  bool host_valid_ = true;
  std::string codings_;  // every Transfer-Encoding value, comma-joined
};

struct request_reader::parser_slot {
  std::optional<request_parser> parser;
};

request_reader::request_reader(const server_options& options)
    : slot_(std::make_unique<parser_slot>()),
      max_header_bytes_(options.max_header_bytes),
      max_body_bytes_(options.max_body_bytes) {}

request_reader::~request_reader() = default;

void request_reader::start() {
  header_used_ = 0;
  auto& p = slot_->parser.emplace(req_);
  p.eager(true);
  p.header_limit(static_cast<std::uint32_t>(max_header_bytes_));
  p.body_limit(max_body_bytes_);
}

void request_reader::finish() { slot_->parser.reset(); }

bool request_reader::active() const { return slot_->parser.has_value(); }

bool request_reader::awaiting_body() const {
  return slot_->parser && slot_->parser->is_header_done() && !slot_->parser->is_done();
}

bool request_reader::expects_continue() const { return slot_->parser && slot_->parser->expects_continue; }

bool request_reader::keep_alive() const {
  return slot_->parser && slot_->parser->keep_alive() && !slot_->parser->must_close;
}

namespace {

// A request the parser rejected: the status says why, and the connection closes after it
// because the framing of whatever follows cannot be trusted.
int status_for(const beast::error_code& ec) {
  if (ec == beast::http::error::header_limit) return 431;
  if (ec == beast::http::error::body_limit) return 413;
  return 400;
}

}  // namespace

request_reader::result request_reader::parse(const char* data, std::size_t size) {
  auto& p = *slot_->parser;
  // Beast measures its header limit from after the request line when the whole header comes
  // in one put, but from the start when it has had to wait for more, so the limit depended
  // on how TCP split the bytes (found by tests/fuzz/http_fuzz.cpp). Offering the parser no
  // more than the header's room makes max_header_bytes count the request line too, always.
  // Only a buffer holding more than that (a long pipelined batch) is offered in two steps.
  bool in_header = !p.is_header_done();
  // RFC 9112 2.2: empty lines before a request line are ignored, not an error.
  std::size_t skipped = 0;
  if (in_header && header_used_ == 0)
    while (skipped < size && (data[skipped] == '\r' || data[skipped] == '\n')) ++skipped;
  if (skipped == size) return {progress::need_more, skipped};
  data += skipped;
  size -= skipped;
  std::size_t room = in_header ? max_header_bytes_ - header_used_ : size;
  std::size_t offered = std::min(size, room);
  beast::error_code ec;
  std::size_t used = p.put(asio::const_buffer(data, offered), ec);
  if (in_header) header_used_ += used;
  if (ec == beast::http::error::need_more) {
    if (in_header && !p.is_header_done() && offered == room) return {progress::failed, skipped + used, 431};
    return {progress::need_more, skipped + used};
  }
  if (ec) return {progress::failed, skipped + used, p.reject_status ? p.reject_status : status_for(ec)};
  return {p.is_done() ? progress::complete : progress::partial, skipped + used};
}

namespace {

asio::awaitable<response> respond_async(const route& r, request& req) {
  std::string failure;
  try {
    co_return co_await r.async(req);
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "a non-std exception";
  }
  log::error(std::string(req.method()) + " " + std::string(req.path()) + ": handler threw: " + failure);
  co_return error_response(500);
}

// The connection's coroutine: it starts at once, and its frame is freed when it returns. Not
// an Asio awaitable: an awaitable's frames, its thread and the operation it waits on would
// stay allocated for every idle connection, and its socket would sit in Asio's reactor,
// which reads speculatively (ready_set.hpp).
struct connection_task {
  struct promise_type {
    connection_task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() {
      try {
        throw;
      } catch (const std::exception& e) {
        log::error(std::string("connection ended by an exception: ") + e.what());
      } catch (...) {
        log::error("connection ended by a non-std exception");
      }
    }
  };
};

// co_await this_frame{conn}: tells the connection its coroutine, for server::close.
struct this_frame {
  connection& conn;
  bool await_ready() const { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    conn.frame = h;
    return false;  // go on at once
  }
  void await_resume() const {}
};

// A connection's protocol loop without its waits: each step is a plain function, and
// run_connection, the only coroutine, waits between them. It lives in run_connection's
// frame; its buffers only while a request passes through (exchange_buffers).
class protocol_loop {
 public:
  protocol_loop(server& srv, connection& conn)
      : srv_(srv), conn_(conn), opt_(srv.options()), max_buffer_(opt_.max_header_bytes + 4096) {
    conn_.enter(phase::waiting, opt_.header_timeout);  // a new client must start talking soon
  }
  ~protocol_loop() {
    // A send still in flight (io_uring: a send timeout, or the server closing) reads these
    // bytes until it is done. A parked output is a heap string: moved, its bytes stay put.
    auto& io = srv_.connections_io();
    if (!b_) {
      if (conn_.io.sending && parked_) io.keep_until_sent(conn_.fd, conn_.io, std::shared_ptr<void>(std::move(parked_)));
      return;
    }
    if (!conn_.io.sending) {
      srv_.give_back(std::move(b_));
      return;
    }
    io.keep_until_sent(conn_.fd, conn_.io, std::shared_ptr<void>(std::move(b_)));
    srv_.kept_elsewhere();
  }
  protocol_loop(const protocol_loop&) = delete;
  protocol_loop& operator=(const protocol_loop&) = delete;

  request& current() { return b_->reader.current(); }

  // Parses the buffer and answers each complete request in order, all into one output, so
  // pipelined requests leave in one write. Stops at a request whose handler must be awaited
  // and returns its route: its response goes to answered().
  const route* answer_buffered() {
    if (!b_) return nullptr;
    auto& b = *b_;
    while (!close_after_ && b.begin < b.end) {
      if (!b.reader.active()) start_request();
      auto step = b.reader.parse(b.in.data() + b.begin, b.end - b.begin);
      b.begin += step.used;
      if (step.what == request_reader::progress::need_more) {
        if (step.used == 0) break;
        continue;
      }
      if (step.what == request_reader::progress::failed) {
        answer_and_close(step.error_status);
        break;
      }
      if (step.what != request_reader::progress::complete) continue;

      request& req = b.reader.current();
      client_keeps_alive_ = b.reader.keep_alive();
      head_ = req.method() == "HEAD";
      conn_.enter(phase::handling, clock::duration::zero());
      match_result m = srv_.routes().match(req);
      stats_ = &counters();
      worker_counters::add(stats_->in_flight, 1);
      if (m.found && m.found->async) return m.found;
      answered(respond_sync(m, req));
    }
    if (b.reader.awaiting_body()) {
      if (b.reader.expects_continue() && !sent_continue_) {
        b.out += "HTTP/1.1 100 Continue\r\n\r\n";
        sent_continue_ = true;
      }
      if (conn_.where == phase::header) conn_.enter(phase::body, request_deadline_);
    }
    return nullptr;
  }

  void answered(const response& res) {
    auto& b = *b_;
    worker_counters::add(stats_->in_flight, -1);
    worker_counters::add(stats_->requests, 1);
    auto verdict = after_response(client_keeps_alive_, srv_.draining(), b.reader.current().version());
    append_response(b.out, res, srv_.date(), head_, verdict.close, verdict.keep_alive_10);
    if (access_log* log = srv_.requests_log()) log_request(*log, res, head_);
    b.reader.finish();
    close_after_ = verdict.close;
  }
  asio::io_context& io() const { return srv_.loop(); }

  // Whether the batch's responses are still (partly) unsent; the first time, the send
  // timeout starts.
  bool unsent() {
    if (!b_ || b_->sent == b_->out.size()) return false;
    if (conn_.where != phase::writing) {
      resume_ = conn_.where;
      resume_deadline_ = conn_.deadline;
      conn_.enter(phase::writing, opt_.send_timeout);
    }
    return true;
  }
  // One send of what is unsent; false when the connection failed.
  bool send() {
    auto& b = *b_;
    long n = srv_.connections_io().send(conn_.fd, conn_.io, b.out.data() + b.sent, b.out.size() - b.sent);
    if (n < 0) return false;
    b.sent += static_cast<std::size_t>(n);
    return true;
  }
  // While it waits for its answers to leave (an io_uring send in flight, or a full socket),
  // a connection with nothing left to parse keeps only its output and gives the rest of its
  // buffers back, once more are lent than the server keeps: on io_uring the completions of
  // thousands of connections' sends can come after those of their next requests, and each
  // connection waiting with all its buffers made a worker at 10,000 connections hold 54 MiB
  // (docs/benchmarks.md).
  void park_output() {
    if (!srv_.buffers_scarce()) return;  // few connections wait: parking would only cost
    auto& b = *b_;
    // Only a string on the heap: a send in flight reads it where it is, and swapping a short
    // string would move its bytes (a response is never that short; this keeps it true).
    if (b.reader.active() || b.begin != b.end || b.out.capacity() <= std::string().capacity()) return;
    // Swapped, not moved: each side keeps a string with room, so that neither the next
    // answer nor the next park allocates.
    parked_ = srv_.take_parked();
    parked_->out.swap(b.out);
    parked_->sent = b.sent;
    srv_.give_back(std::move(b_));
  }
  void unpark_output() {
    if (b_) return;
    b_ = srv_.take_buffers();
    b_->out.swap(parked_->out);
    b_->sent = parked_->sent;
    srv_.give_back(std::move(parked_));
  }

  void written() {
    if (!b_ || b_->out.empty()) return;
    b_->out.clear();
    b_->sent = 0;
    if (b_->reader.active()) conn_.enter(resume_, resume_deadline_);  // still reading the same request
  }

  // After the connection's last response: half-closes, and says to discard what the client
  // still sends for a moment. Closing with unread data would reset the connection and could
  // destroy the response in flight.
  bool shut_down_if_done() {
    if (!close_after_) return false;
    ::shutdown(conn_.fd, SHUT_WR);
    conn_.enter(phase::closing, std::chrono::seconds(2));
    return true;
  }
  // One read of what the client sends after the last response; false at its end.
  bool discard() {
    if (!b_) b_ = srv_.take_buffers();
    b_->begin = b_->end = 0;
    return receive(asio::buffer(b_->in)) != received::end;
  }

  // Before a wait for input: between requests the connection gives its buffers back, so that
  // an idle keep-alive connection holds only its frame.
  void before_waiting() {
    bool between_requests = !b_ || !b_->reader.active();
    if (between_requests && conn_.where != phase::waiting)
      conn_.enter(phase::waiting, idle_timeout(opt_, srv_.draining()));
    if (b_ && between_requests && b_->begin == b_->end && b_->out.empty()) srv_.give_back(std::move(b_));
  }

  // Where the next read goes; nothing when there is no room left (answered with 431, and the
  // loop closes instead of reading).
  std::optional<asio::mutable_buffer> room_for_next_read() {
    if (!b_) b_ = srv_.take_buffers();
    auto& b = *b_;
    if (!b.reader.active() && conn_.where != phase::waiting)
      conn_.enter(phase::waiting, idle_timeout(opt_, srv_.draining()));
    switch (room_for_read(b.begin, b.end, b.in.size(), max_buffer_)) {
      case buffer_room::reset:
        b.begin = b.end = 0;
        break;
      case buffer_room::enough:
        break;
      case buffer_room::compact:
        std::memmove(b.in.data(), b.in.data() + b.begin, b.end - b.begin);
        b.end -= b.begin;
        b.begin = 0;
        break;
      case buffer_room::grow:
        b.in.resize(std::min(b.in.size() * 2, max_buffer_));
        break;
      case buffer_room::full:
        // Cannot happen while the parser enforces header_limit below max_buffer; answer it like
        // an oversized header rather than spin.
        answer_and_close(431);
        return std::nullopt;
    }
    return asio::buffer(b.in.data() + b.end, b.in.size() - b.end);
  }

  // One read of what the socket holds; false at the connection's end. (A step of its own, so
  // that its locals are not kept in the coroutine's frame.)
  bool read() {
    auto room = room_for_next_read();
    return !room || receive(*room) != received::end;  // no room: answered with 431, closing
  }

  // The read failed or timed out: when the timer cut a request short, the client is told why.
  void read_failed() {
    if (!tells_timeout(conn_.timed_out, conn_.where, b_ && b_->reader.active())) return;
    std::string late;
    append_response(late, error_response(408), srv_.date(), false, true, false);
    [[maybe_unused]] auto ignored = ::send(conn_.fd, late.data(), late.size(), MSG_NOSIGNAL);
  }

 private:
  enum class received { data, nothing, end };
  // One read into `room`; the connection's readiness follows what it found.
  received receive(asio::mutable_buffer room) {
    long n = srv_.connections_io().receive(conn_.fd, conn_.io, static_cast<char*>(room.data()), room.size());
    if (n > 0) {
      b_->end += static_cast<std::size_t>(n);
      return received::data;
    }
    return n == 0 ? received::nothing : received::end;  // end: the client closed, or the connection failed
  }

  void start_request() {
    b_->reader.start();
    sent_continue_ = false;
    auto now = coarse_now();
    // The access log's time and the start of its duration: the one precise clock read per
    // request, and only with the log on.
    if (srv_.requests_log()) started_ = clock::now();
    request_deadline_ = now + opt_.request_timeout;
    conn_.enter(phase::header, now + opt_.header_timeout);
  }
  void answer_and_close(int status) {
    response res = error_response(status);
    append_response(b_->out, res, srv_.date(), false, true, false);
    if (access_log* log = srv_.requests_log()) log_request(*log, res, false);
    close_after_ = true;
  }

  // One line for the request just answered; a second precise clock read is here.
  void log_request(access_log& log, const response& res, bool head) {
    const request& req = b_->reader.current();
    if (!remote_) remote_ = std::make_unique<std::string>(peer_text(conn_.fd));
    access_entry e;
    e.time_ms = log.wall_ms(started_);
    e.slot = log.slot();
    e.remote = *remote_;
    e.method = req.method();
    e.target = req.target();
    e.version = req.version();
    e.status = (res.status >= 100 && res.status <= 999) ? res.status : 500;
    bool bodiless = e.status == 204 || e.status == 304 || e.status < 200;
    e.bytes = head || bodiless ? 0 : res.body.size();
    e.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started_).count();
    if (log.format() == access_format::combined) {
      e.referer = req.header("Referer");
      e.user_agent = req.header("User-Agent");
    }
    log.add(e);
  }

  server& srv_;
  connection& conn_;
  const server_options& opt_;
  // Room for a whole header plus some; the parser rejects a longer one with 431 first.
  const std::size_t max_buffer_;
  std::unique_ptr<exchange_buffers> b_;  // only while a request passes through
  clock::time_point request_deadline_{};
  clock::time_point started_{};
  // The client's address, read once per connection for the access log; a pointer, so that a
  // connection without the log costs one word for it.
  std::unique_ptr<std::string> remote_;
  // The output while the connection waits for it to leave (park_output): lent by the server,
  // so that it costs an idle connection's frame one pointer.
  std::unique_ptr<parked_output> parked_;
  phase resume_ = phase::waiting;
  clock::time_point resume_deadline_{};
  worker_counters* stats_ = nullptr;
  bool client_keeps_alive_ = false;
  bool head_ = false;
  bool sent_continue_ = false;
  bool close_after_ = false;
};

// An async handler's answer: the handler runs as an Asio coroutine of its own, and the
// connection resumes when it has answered, the response going straight into the connection's
// output (held by the slot, not the frame: a response in the frame would make every idle
// connection's frame bigger). If the frame is destroyed first (server::close after the loop
// stopped), the answer finds no one to resume.
struct async_answer {
  struct slot {
    std::coroutine_handle<> waiter;
    std::optional<response> res;
    bool abandoned = false;
  };
  protocol_loop& loop;
  const route& r;
  std::shared_ptr<slot> s = std::make_shared<slot>();

  ~async_answer() { s->abandoned = true; }
  bool await_ready() const { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    s->waiter = h;
    asio::co_spawn(loop.io(), respond_async(r, loop.current()), [s = s](std::exception_ptr e, response res) {
      if (s->abandoned) return;
      s->res = e ? error_response(500) : std::move(res);
      s->waiter.resume();
    });
  }
  void await_resume() { loop.answered(*s->res); }
};

connection_task run_connection(server& srv, int fd) {
  connection conn(srv, fd);
  co_await this_frame{conn};
  if (!conn.watched) co_return;
  protocol_loop loop(srv, conn);
  for (;;) {
    while (const route* r = loop.answer_buffered()) {
      // A named awaiter: GCC 12 destroys a temporary awaiter in a co_await twice (ASan found it).
      async_answer answer{loop, *r};
      co_await answer;
    }
    while (loop.unsent()) {
      if (!conn.io.writable) {
        loop.park_output();
        bool sendable = co_await ready_for{conn.io, wait_for::output};
        loop.unpark_output();
        if (!sendable) co_return;  // send timeout
      }
      if (!loop.send()) co_return;
    }
    loop.written();
    if (loop.shut_down_if_done()) {
      for (int reads = 0; reads < 16; ++reads) {
        if (!conn.io.readable && !co_await ready_for{conn.io, wait_for::input}) break;
        if (!loop.discard()) break;
      }
      co_return;
    }
    if (!conn.io.readable) {
      loop.before_waiting();
      if (!co_await ready_for{conn.io, wait_for::input}) {
        loop.read_failed();
        co_return;
      }
    }
    if (!loop.read()) {
      loop.read_failed();
      co_return;
    }
  }
}

}  // namespace

void serve_connection(server& srv, int fd) { run_connection(srv, fd); }

}  // namespace loopfleet::http::detail
