#include "supervisor/agent_check.hpp"

#include "runtime/address.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <variant>

namespace loopfleet::supervisor {

namespace asio = boost::asio;
using asio::ip::tcp;

agent_check_server::agent_check_server(asio::io_context& loop, const std::string& address,
                                       std::function<std::string()> reply, const listener* inherited)
    : acceptor_(loop), reply_(std::move(reply)) {
  auto parsed = std::get<listen_address>(parse_listen_address(address));
  listener l = inherited ? *inherited : bind_listener(parsed, "--agent-check " + address, 64);
  acceptor_.assign(l.family == AF_INET6 ? tcp::v6() : tcp::v4(), l.fd);
}

void agent_check_server::start() {
  asio::co_spawn(
      acceptor_.get_executor(),
      [this]() -> asio::awaitable<void> {
        asio::steady_timer pause(acceptor_.get_executor());
        for (;;) {
          auto [ec, client] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
          if (ec) {  // out of descriptors, say: try again shortly instead of spinning
            pause.expires_after(std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            continue;
          }
          auto sock = std::make_shared<tcp::socket>(std::move(client));
          auto text = std::make_shared<std::string>(reply_());
          asio::async_write(*sock, asio::buffer(*text), [sock, text](boost::system::error_code, std::size_t) {
            boost::system::error_code ignored;
            sock->shutdown(tcp::socket::shutdown_both, ignored);
          });
        }
      },
      asio::detached);
}

void agent_check_server::close() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

}  // namespace loopfleet::supervisor
