// The node's answer to HAProxy's agent check (`agent-port` on each server line of the front):
// one line per connection, then close (policy.hpp's agent_check_reply says which line).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <loopfleet/runtime.hpp>

#include <functional>
#include <string>

namespace loopfleet::supervisor {

class agent_check_server {
 public:
  // Binds `address` (checked with the config); throws startup_error if it is taken.
  // `inherited`: a predecessor's socket for it (loopfleet upgrade), so HAProxy's checks are
  // answered throughout.
  agent_check_server(boost::asio::io_context& loop, const std::string& address, std::function<std::string()> reply,
                     const listener* inherited = nullptr);
  int native_handle() { return acceptor_.native_handle(); }
  void start();
  void close();

 private:
  boost::asio::ip::tcp::acceptor acceptor_;
  std::function<std::string()> reply_;
};

}  // namespace loopfleet::supervisor
