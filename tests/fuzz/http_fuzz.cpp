// The HTTP request path without a socket: the bytes a client sends go through Beast's parser
// and our request building (request_reader), the router and the response serializer, the
// functions serve_connection uses, in the order it uses them.
//
// Input: the first byte says how the bytes arrive (in one piece, or in reads of 1-15 bytes);
// the rest is the byte stream. Properties: the answer is the same however the stream is
// split (the server must not depend on how TCP segments it; see same_answers), it is a run
// of HTTP/1.1 responses, and nothing is answered after a response that closes.
#include "http/connection_policy.hpp"
#include "http/request_reader.hpp"

#include "fuzz_check.hpp"

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using namespace loopfleet::http;
using detail::request_reader;

router make_app() {
  router app;
  app.get("/", [](request&) { return text("root"); });
  app.get("/users/{id}",
          [](request& r) { return text(std::string(r.param("id")) + std::string(r.query_param("full"))); });
  app.del("/users/{id}", [](request&) { return text("deleted"); });
  app.get("/users/{id}/posts/{post}", [](request& r) { return text(std::string(r.param("post"))); });
  app.post("/echo", [](request& r) {
    response res = text(std::move(r.body()));
    res.headers.emplace_back("X-Host", std::string(r.header("host")));
    return res;
  });
  app.put("/headers", [](request& r) {
    std::string all;
    for (const auto& [name, value] : r.headers()) all.append(name).append(": ").append(value).append("\n");
    return text(std::move(all));
  });
  // Any status a handler may return, valid or not: the serializer must cope.
  app.get("/status/{code}", [](request& r) {
    int code = 0;
    std::string_view s = r.param("code");
    std::from_chars(s.data(), s.data() + s.size(), code);
    return text("", code);
  });
  return app;
}

server_options small_limits() {
  // Small limits, so that inputs the fuzzer can build reach 431 and 413.
  server_options o;
  o.max_header_bytes = 1024;
  o.max_body_bytes = 2048;
  return o;
}

constexpr std::string_view date = "Tue, 01 Dec 2026 12:00:00 GMT";

// What the server would write back to `stream`, arriving in reads of `piece` bytes.
std::string answer(const router& app, const server_options& opt, std::string_view stream, std::size_t piece) {
  request_reader reader(opt);
  request& req = reader.current();
  std::string buffer, out;
  std::size_t begin = 0;
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    buffer.append(stream.substr(at, piece));
    while (begin < buffer.size()) {
      if (!reader.active()) reader.start();
      auto step = reader.parse(buffer.data() + begin, buffer.size() - begin);
      FUZZ_CHECK(step.used <= buffer.size() - begin);
      begin += step.used;
      if (step.what == request_reader::progress::need_more) {
        if (step.used == 0) break;
        continue;
      }
      if (step.what == request_reader::progress::failed) {
        FUZZ_CHECK(step.error_status == 400 || step.error_status == 413 || step.error_status == 431 ||
                   step.error_status == 501);  // 501: a transfer coding other than chunked
        detail::append_response(out, detail::error_response(step.error_status), date, false, true, false);
        return out;
      }
      if (step.what != request_reader::progress::complete) continue;
      FUZZ_CHECK(!req.method().empty() && !req.target().empty());
      FUZZ_CHECK(req.body().size() <= opt.max_body_bytes);
      // Accessors every handler may call, on whatever the parser accepted.
      // The path is part of the target (after the authority of an absolute form), or "/" for
      // an absolute form without one.
      FUZZ_CHECK(req.path() == "/" || req.target().find(req.path()) != std::string_view::npos);
      FUZZ_CHECK(req.query_param("a").size() <= req.query().size());
      FUZZ_CHECK(req.headers().size() >= (req.has_header("content-type") ? 1u : 0u));
      auto verdict = detail::after_response(reader.keep_alive(), false, req.version());
      response res = detail::respond_sync(app.impl().match(req), req);
      detail::append_response(out, res, date, req.method() == "HEAD", verdict.close, verdict.keep_alive_10);
      reader.finish();
      if (verdict.close) return out;
    }
  }
  return out;
}

// `answer` without a trailing parse error (400, 413, 431 or 501, closing the connection).
std::string_view without_parse_error(std::string_view answer) {
  for (int status : {400, 413, 431, 501}) {
    std::string error;
    detail::append_response(error, detail::error_response(status), date, false, true, false);
    if (answer.ends_with(error)) return answer.substr(0, answer.size() - error.size());
  }
  return answer;
}

// Whether two answers to the same stream agree. Beast checks a request line or field as soon
// as it is complete when the bytes arrive in one piece, but waits for the whole header once it
// has had to ask for more; so a malformed header is rejected earlier or later (400), or runs
// into the header limit first (431), or is still incomplete when the input ends. Either way
// the request is refused and the connection closes; every response before must be identical.
bool same_answers(std::string_view a, std::string_view b) {
  return a == b || without_parse_error(a) == without_parse_error(b);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const router app = make_app();
  static const server_options opt = small_limits();
  if (size == 0) return 0;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t piece = data[0] % 16;
  std::string whole = answer(app, opt, stream, stream.size() + 1);
  FUZZ_CHECK(whole.empty() || whole.starts_with("HTTP/1.1 "));
  if (piece != 0) FUZZ_CHECK(same_answers(whole, answer(app, opt, stream, piece)));
  return 0;
}
