// The socket-free half of a connection: bytes in, parsed requests out, and the response text
// the server writes back. serve_connection feeds its read buffer through these, and the fuzz
// harness (tests/fuzz/http_fuzz.cpp) feeds arbitrary bytes through the very same code. The
// parser is Beast's, so it is only named here: Beast stays inside connection.cpp.
// The response half is in respond.cpp.
#pragma once

#include "http/router_impl.hpp"

#include <loopfleet/http.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace loopfleet::http::detail {

class request_reader {
 public:
  explicit request_reader(const server_options& options);
  ~request_reader();
  request_reader(const request_reader&) = delete;  // the parser points at req_
  request_reader& operator=(const request_reader&) = delete;

  enum class progress { need_more, partial, complete, failed };
  struct result {
    progress what;
    std::size_t used;      // bytes consumed; the rest must be offered again with more after it
    int error_status = 0;  // with failed: 400, 413, 431 or 501; the connection must close after it
  };

  // Begins the next request (reusing the buffers of the last): call when !active().
  void start();
  // Feeds bytes to the current request.
  result parse(const char* data, std::size_t size);
  // Done with the current request (answered): the next bytes begin another.
  void finish();

  bool active() const;
  // The current request's header is complete and its body is still arriving.
  bool awaiting_body() const;
  bool expects_continue() const;
  // After complete: whether the client allows another request on this connection.
  bool keep_alive() const;
  request& current() { return req_; }

 private:
  struct parser_slot;  // std::optional<request_parser>: allocated once per lent buffer set, not per request
  std::unique_ptr<parser_slot> slot_;
  request req_;
  std::size_t max_header_bytes_;
  std::size_t max_body_bytes_;
  std::size_t header_used_ = 0;  // bytes of the current header the parser has taken
};

// Serializes `res` onto `out`. `head`: headers only. `close`: the connection ends after it.
// `keep_alive_10`: an HTTP/1.0 client asked to keep the connection, so say that we do.
void append_response(std::string& out, const response& res, std::string_view date, bool head, bool close,
                     bool keep_alive_10);

// The plain-text response for an error status ("Not Found\n").
response error_response(int status);

// Answers without a coroutine frame: 404, 405, or a plain-function handler. An exception
// from a handler becomes a 500 and a log line.
response respond_sync(const match_result& m, request& req);

}  // namespace loopfleet::http::detail
