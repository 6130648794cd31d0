// The HTTP/1.1 protocol loop of one connection. This is the only translation unit that
// includes Beast: its request parser is fuzzed and trusted, so we use it, but feed it from our
// own buffer and write responses ourselves. A pre-serialized response in one write is what
// brings per-request CPU to nginx's level (research/cpp_runtimes.md §2.8).
#include "http/request_reader.hpp"
#include "http/server.hpp"

#include "runtime/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
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
      auto u = static_cast<unsigned char>(c);
      if (std::isalnum(u)) continue;
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

std::string_view reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Unknown";
}

void append_number(std::string& out, std::size_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, end);
}

}  // namespace

void append_response(std::string& out, const response& res, std::string_view date, bool head, bool close,
                     bool keep_alive_10) {
  int status = (res.status >= 100 && res.status <= 999) ? res.status : 500;
  bool bodiless = status == 204 || status == 304 || status < 200;
  out += "HTTP/1.1 ";
  append_number(out, static_cast<std::size_t>(status));
  out += ' ';
  out += reason(status);
  out += "\r\nServer: loopfleet\r\nDate: ";
  out += date;
  if (!bodiless) {
    out += "\r\nContent-Type: ";
    out += res.content_type;
    out += "\r\nContent-Length: ";
    append_number(out, res.body.size());
  }
  if (close) out += "\r\nConnection: close";
  else if (keep_alive_10) out += "\r\nConnection: keep-alive";
  for (const auto& [name, value] : res.headers) {
    out += "\r\n";
    out += name;
    out += ": ";
    out += value;
  }
  out += "\r\n\r\n";
  if (!head && !bodiless) out += res.body;
}

response error_response(int status) {
  return text(std::string(reason(status)) + "\n", status);
}

response respond_sync(const match_result& m, request& req) {
  if (!m.found) {
    if (m.allow.empty()) return error_response(404);
    response r = error_response(405);
    r.headers.emplace_back("Allow", m.allow);
    return r;
  }
  try {
    return m.found->sync(req);
  } catch (const std::exception& e) {
    log::error(std::string(req.method()) + " " + std::string(req.path()) + ": handler threw: " + e.what());
  } catch (...) {
    log::error(std::string(req.method()) + " " + std::string(req.path()) + ": handler threw a non-std exception");
  }
  return error_response(500);
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

}  // namespace

asio::awaitable<void> serve_connection(server& srv, socket_type socket) {
  using asio::as_tuple;
  using asio::use_awaitable;
  const server_options& opt = srv.options();
  connection conn(srv, std::move(socket));
  conn.enter(phase::waiting, opt.header_timeout);  // a new client must start talking soon

  // Room for a whole header plus some; the parser rejects a longer one with 431 first.
  const std::size_t max_buffer = opt.max_header_bytes + 4096;
  std::vector<char> in(std::min<std::size_t>(4096, max_buffer));
  std::size_t begin = 0, end = 0;
  std::string out;
  request_reader reader(opt);
  request& req = reader.current();
  clock::time_point request_deadline{};
  bool sent_continue = false;
  bool close_after = false;

  for (;;) {
    // Parse and answer every complete request in the buffer: pipelined requests are
    // answered in order and their responses leave in one write.
    while (!close_after && begin < end) {
      if (!reader.active()) {
        reader.start();
        sent_continue = false;
        auto now = clock::now();
        request_deadline = now + opt.request_timeout;
        conn.enter(phase::header, now + opt.header_timeout);
      }
      auto step = reader.parse(in.data() + begin, end - begin);
      begin += step.used;
      if (step.what == request_reader::progress::need_more) {
        if (step.used == 0) break;
        continue;
      }
      if (step.what == request_reader::progress::failed) {
        append_response(out, error_response(step.error_status), srv.date(), false, true, false);
        close_after = true;
        break;
      }
      if (step.what != request_reader::progress::complete) continue;

      bool keep = reader.keep_alive() && !srv.draining();
      bool head = req.method() == "HEAD";
      conn.enter(phase::handling, clock::duration::zero());
      match_result m = srv.routes().match(req);
      response res;
      auto& stats = counters();
      worker_counters::add(stats.in_flight, 1);
      if (m.found && m.found->async)
        res = co_await respond_async(*m.found, req);
      else
        res = respond_sync(m, req);
      worker_counters::add(stats.in_flight, -1);
      worker_counters::add(stats.requests, 1);
      // The drain may have begun while the handler ran.
      keep = keep && !srv.draining();
      append_response(out, res, srv.date(), head, !keep, keep && req.version() == 10);
      reader.finish();
      close_after = !keep;
    }

    if (reader.awaiting_body()) {
      if (reader.expects_continue() && !sent_continue) {
        out += "HTTP/1.1 100 Continue\r\n\r\n";
        sent_continue = true;
      }
      if (conn.where == phase::header) conn.enter(phase::body, request_deadline);
    }

    if (!out.empty()) {
      auto resume = conn.where;
      auto resume_deadline = conn.deadline;
      conn.enter(phase::writing, opt.send_timeout);
      auto [ec, n] = co_await asio::async_write(conn.socket, asio::buffer(out), as_tuple(use_awaitable));
      if (ec) co_return;
      out.clear();
      if (reader.active()) conn.enter(resume, resume_deadline);  // still reading the same request
    }

    if (close_after) {
      // Half-close and discard what the client still sends for a moment: closing with
      // unread data would reset the connection and could destroy the response in flight.
      boost::system::error_code ignored;
      conn.socket.shutdown(socket_type::shutdown_send, ignored);
      conn.enter(phase::closing, std::chrono::seconds(2));
      for (int reads = 0; reads < 16; ++reads) {
        auto [ec, n] = co_await conn.socket.async_read_some(asio::buffer(in), as_tuple(use_awaitable));
        if (ec) break;
      }
      co_return;
    }

    if (!reader.active() && conn.where != phase::waiting)
      conn.enter(phase::waiting, srv.draining() ? opt.drain_idle_timeout : opt.idle_timeout);

    // Make room for the next read.
    if (begin == end) {
      begin = end = 0;
    } else if (end == in.size()) {
      if (begin > 0) {
        std::memmove(in.data(), in.data() + begin, end - begin);
        end -= begin;
        begin = 0;
      } else if (in.size() < max_buffer) {
        in.resize(std::min(in.size() * 2, max_buffer));
      } else {
        // Cannot happen while the parser enforces header_limit below max_buffer; answer it
        // like an oversized header rather than spin.
        append_response(out, error_response(431), srv.date(), false, true, false);
        close_after = true;
        continue;
      }
    }

    auto [ec, n] = co_await conn.socket.async_read_some(asio::buffer(in.data() + end, in.size() - end),
                                                        as_tuple(use_awaitable));
    if (ec) {
      // The timer cancelled a read in the middle of a request: tell the client why.
      if (conn.timed_out && (conn.where == phase::header || conn.where == phase::body) && reader.active()) {
        std::string late;
        append_response(late, error_response(408), srv.date(), false, true, false);
        boost::system::error_code ignored;
        conn.socket.non_blocking(true, ignored);
        conn.socket.write_some(asio::buffer(late), ignored);
      }
      co_return;
    }
    end += n;
  }
}

}  // namespace loopfleet::http::detail
