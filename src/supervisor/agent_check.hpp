// The node's answer to HAProxy's agent check (`agent-port` on each server line of the front):
// one line per connection, then close (policy.hpp's agent_check_reply says which line).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <string>

namespace loopfleet::supervisor {

class agent_check_server {
 public:
  // Binds `address` (checked with the config); throws startup_error if it is taken.
  agent_check_server(boost::asio::io_context& loop, const std::string& address, std::function<std::string()> reply);
  void start();
  void close();

 private:
  boost::asio::ip::tcp::acceptor acceptor_;
  std::function<std::string()> reply_;
};

}  // namespace loopfleet::supervisor
