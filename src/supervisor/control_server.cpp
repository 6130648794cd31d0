#include "supervisor/control_server.hpp"

#include "runtime/error.hpp"
#include "supervisor/config.hpp"
#include "runtime/private_dir.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/serialize.hpp>

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace loopfleet::supervisor {

namespace asio = boost::asio;
namespace json = boost::json;
using unix_socket = asio::local::stream_protocol;

namespace {

// The directory that will hold the socket: ours only, since the socket can stop and reload.
void prepare_directory(const std::string& path) {
  auto dir = path.substr(0, path.rfind('/'));
  if (dir == runtime_dir()) {
    if (auto err = ensure_private_dir("runtime directory", dir, current_user(),
                                      "remove it (rm -r " + dir + ") or set XDG_RUNTIME_DIR to a directory of yours"))
      throw startup_error(*err);
  } else if (!dir.empty()) {
    make_private_dirs(dir);
  }
}

}  // namespace

json::object control_reply(bool good, std::string text) {
  json::object o{{"ok", good}};
  o[good ? "message" : "error"] = std::move(text);
  return o;
}

control_server::control_server(asio::io_context& loop, std::string path, const std::string& instance,
                               handler on_request, int inherited)
    : path_(std::move(path)), acceptor_(loop), on_request_(std::move(on_request)) {
  if (inherited >= 0) {
    acceptor_.assign(unix_socket(), inherited);
    return;
  }
  sockaddr_un sun{};
  if (path_.size() >= sizeof sun.sun_path)
    throw startup_error("control socket path " + path_ + " is too long (use a shorter --control)");
  prepare_directory(path_);
  unix_socket::endpoint ep(path_);
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0) {
    // A socket file: either a live instance answers on it, or it is left over from a crash.
    unix_socket::socket probe(loop);
    boost::system::error_code ec;
    probe.connect(ep, ec);
    if (!ec)
      throw startup_error("another loopfleet instance named '" + instance + "' is running (control socket " + path_ +
                          "); stop it first, or give this one another --name");
    ::unlink(path_.c_str());
  }
  boost::system::error_code ec;
  acceptor_.open(unix_socket(), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(16, ec);
  if (ec)
    throw startup_error("cannot create control socket " + path_ + ": " + ec.message() +
                        " (choose a writable path with --control)");
  ::chmod(path_.c_str(), 0600);  // the control socket can stop and reload: owner only
}

void control_server::start() {
  asio::co_spawn(
      acceptor_.get_executor(),
      [this]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, client] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;  // closed at stop
          asio::co_spawn(acceptor_.get_executor(), serve(std::move(client)), asio::detached);
        }
      },
      asio::detached);
}

asio::awaitable<void> control_server::serve(unix_socket::socket client) {
  auto sock = std::make_shared<unix_socket::socket>(std::move(client));
  asio::streambuf buf(65536);
  auto [ec, n] = co_await asio::async_read_until(*sock, buf, '\n', asio::as_tuple(asio::use_awaitable));
  if (ec) co_return;
  std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
  // The reply may come after this coroutine ends (a reload answers when done): it keeps the
  // socket alive itself.
  reply_fn reply = [sock](json::object o) {
    auto text = std::make_shared<std::string>(json::serialize(o) + "\n");
    asio::async_write(*sock, asio::buffer(*text), [sock, text](boost::system::error_code, std::size_t) {});
  };
  auto parsed = parse_control_request(line);
  if (auto* err = std::get_if<std::string>(&parsed)) co_return reply(control_reply(false, std::move(*err)));
  on_request_(std::get<control_request>(parsed), std::move(reply));
}

void control_server::close() {
  if (!acceptor_.is_open()) return;
  release();
  ::unlink(path_.c_str());
}

void control_server::release() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

}  // namespace loopfleet::supervisor
