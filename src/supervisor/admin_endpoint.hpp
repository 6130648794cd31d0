// The admin HTTP endpoint of a supervisor (`loopfleet run --admin HOST:PORT`): Prometheus
// `/metrics`, `/status.json` (what `loopfleet status --json` prints) and a live status page at
// `/`. It is one more client of the status model: every answer is rendered from the object
// the control socket's "status" command returns, read on the supervisor's own loop, so it
// never asks a worker anything (the numbers come from the heartbeat regions already mapped).
#pragma once

#include <loopfleet/runtime.hpp>

#include <boost/json/object.hpp>

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}
namespace loopfleet::http::detail {
class server;
}

namespace loopfleet::supervisor {

// The Prometheus text exposition (format 0.0.4) of a status model. A pure function: the
// unit tests give it a hand-written model. Fields the model lacks (a worker that has not
// beaten yet, a cluster that is off) produce no sample rather than a made-up zero.
std::string render_metrics(const boost::json::object& status);

// User plus system CPU time of a process in seconds (/proc/PID/stat), 0 when it is gone.
double cpu_seconds(pid_t pid);

// The status page: one self-contained HTML document (inline CSS and JS) that polls
// /status.json every second (status_page.cpp).
extern const std::string_view status_page_html;

class admin_endpoint {
 public:
  using model_fn = std::function<boost::json::object()>;
  // Binds `address` (HOST:PORT, already checked by the config) and serves on `loop` with the
  // project's HTTP server. Throws startup_error naming --admin when it cannot bind.
  // `inherited`: a predecessor's socket for it (loopfleet upgrade), so scrapes keep working.
  admin_endpoint(boost::asio::io_context& loop, const std::string& address, model_fn model,
                 const listener* inherited = nullptr);
  ~admin_endpoint();
  admin_endpoint(const admin_endpoint&) = delete;
  admin_endpoint& operator=(const admin_endpoint&) = delete;

  // Releases the acceptor and the server's timer. Call after the loop has stopped; the
  // endpoint itself must outlive the loop, whose destructor still ends connection coroutines
  // that refer to the server.
  void close();
  int native_handle() const { return fd_; }  // what a successor inherits

 private:
  std::unique_ptr<http::detail::server> server_;
  int fd_ = -1;
};

}  // namespace loopfleet::supervisor
