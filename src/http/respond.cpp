// Answering a request without a socket: a sync handler's call, the error responses, and a
// response serialized into the connection's output. A pre-serialized response in one write is
// what brings per-request CPU to nginx's level (research/cpp_runtimes.md §2.8).
#include "http/request_reader.hpp"

#include "runtime/log.hpp"

#include <charconv>
#include <exception>
#include <string>

namespace loopfleet::http::detail {

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

}  // namespace loopfleet::http::detail
