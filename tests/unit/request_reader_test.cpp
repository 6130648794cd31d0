#include "http/request_reader.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

using namespace loopfleet::http;
using detail::request_reader;

namespace {
server_options limits(std::size_t header, std::size_t body) {
  server_options o;
  o.max_header_bytes = header;
  o.max_body_bytes = body;
  return o;
}

// Feeds `stream` in pieces of `piece` bytes, as serve_connection does with its reads, and
// returns the statuses: 0 for each complete request, the error status for a refused one.
std::vector<int> statuses(const server_options& opt, std::string_view stream, std::size_t piece) {
  request_reader reader(opt);
  std::vector<int> out;
  std::string buffer;
  std::size_t begin = 0;
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    buffer.append(stream.substr(at, piece));
    while (begin < buffer.size()) {
      if (!reader.active()) reader.start();
      auto step = reader.parse(buffer.data() + begin, buffer.size() - begin);
      begin += step.used;
      if (step.what == request_reader::progress::failed) {
        out.push_back(step.error_status);
        return out;
      }
      if (step.what == request_reader::progress::need_more && step.used == 0) break;
      if (step.what == request_reader::progress::complete) {
        out.push_back(0);
        reader.finish();
      }
    }
  }
  return out;
}

std::string request_with_header_of(std::size_t bytes) {
  std::string head = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
  std::string tail = "\r\n\r\n";
  return head + std::string(bytes - head.size() - tail.size(), 'p') + tail;
}
}  // namespace

TEST(RequestReader, ParsesPipelinedRequestsInAnyPieces) {
  std::string two = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz";
  for (std::size_t piece : {1u, 7u, 1000u})
    EXPECT_EQ(statuses(limits(1024, 1024), two, piece), (std::vector<int>{0, 0}));
  EXPECT_EQ(statuses(limits(1024, 2), two, 1000), (std::vector<int>{0, 413}));
}

// Beast counted the limit from after the request line when the header came in one read, and
// from its start otherwise (tests/fuzz/corpus/http/crash-header-limit-depends-on-split).
TEST(RequestReader, HeaderLimitCountsTheRequestLineHoweverTheBytesArrive) {
  auto opt = limits(200, 1024);
  for (std::size_t piece : {1u, 50u, 4096u}) {
    EXPECT_EQ(statuses(opt, request_with_header_of(200), piece), (std::vector<int>{0})) << piece;
    EXPECT_EQ(statuses(opt, request_with_header_of(201), piece), (std::vector<int>{431})) << piece;
  }
}
