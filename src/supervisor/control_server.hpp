// The control socket: a Unix stream socket (owner only) where `loopfleet status|reload|stop|
// scale` send one JSON line and read one back (docs/control.md). It owns the socket file: it
// refuses to start beside a live instance of the same name and removes the file on close.
#pragma once

#include "supervisor/control_request.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/json/object.hpp>

#include <functional>
#include <string>

namespace loopfleet::supervisor {

class control_server {
 public:
  using reply_fn = std::function<void(boost::json::object)>;
  // Called for each well-formed request; `reply` may be called later (a reload answers when
  // it is done). Malformed requests are answered here.
  using handler = std::function<void(const control_request&, reply_fn reply)>;

  // Throws startup_error, naming the fix, when the socket cannot be made at `path`.
  // `inherited` >= 0: a predecessor's listening socket at `path` (loopfleet upgrade), taken
  // as it is: it answers at the same path without a moment of absence.
  control_server(boost::asio::io_context& loop, std::string path, const std::string& instance, handler on_request,
                 int inherited = -1);
  void start();
  void close();  // stops accepting and removes the socket file
  // Stops accepting but leaves the file: a successor answers on it now.
  void release();
  int native_handle() { return acceptor_.native_handle(); }

 private:
  boost::asio::awaitable<void> serve(boost::asio::local::stream_protocol::socket client);
  std::string path_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  handler on_request_;
};

// {"ok": good, "message"|"error": text}: the reply to a command that does something.
boost::json::object control_reply(bool good, std::string text);

}  // namespace loopfleet::supervisor
