// The worker runtime: one single-threaded event loop per process.
//
// A worker gets its listening sockets either from its parent by systemd's socket-activation
// protocol (LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES: what `loopfleet run` and systemd pass)
// or, when run on its own, by binding the `--listen` addresses itself. It reports its state
// to the parent over NOTIFY_SOCKET (READY=1, STOPPING=1, WATCHDOG=1, STATUS=...), so the same
// binary runs standalone, under `loopfleet run`, or as a systemd service.
//
// Signals: SIGTERM and SIGINT drain (stop accepting, finish what is in flight, exit 0 within
// the drain timeout); a second SIGINT or a SIGQUIT exits at once.
//
// Most applications never use this header directly: `loopfleet::http::run` (http.hpp) wires
// an HTTP server into the runtime. It is public for services that are not HTTP.
#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace loopfleet {

// Settings of the worker process itself. Every field is also a command-line flag.
struct worker_options {
  // Addresses to bind when no sockets are inherited: "HOST:PORT", "[IPV6]:PORT" or
  // "unix:PATH". Empty means 127.0.0.1:8080.
  std::vector<std::string> listen;
  // Listen backlog for sockets this worker binds itself.
  int backlog = 4096;
  // How long a drain may take before the remaining connections are closed.
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(30)};
  // Name used in log lines; defaults to the program's file name.
  std::string name;
};

// A listening stream socket handed to a service: adopted from the parent or bound here.
struct listener {
  int fd = -1;           // owned by the service once start() is called
  int family = 0;        // AF_INET, AF_INET6 or AF_UNIX
  std::string name;      // LISTEN_FDNAMES entry, or the --listen text
  std::string address;   // printable local address, for logs
  bool inherited = false;  // passed by the parent (LISTEN_FDS) rather than bound here
};

// What runs on the worker's loop. The runtime calls start() once the sockets are ready and
// drain() on SIGTERM; the service calls `done` when nothing is left in flight.
class service {
 public:
  virtual ~service() = default;
  virtual void start(boost::asio::io_context& loop, std::vector<listener> listeners) = 0;
  virtual void drain(std::function<void()> done) = 0;
  // Called after the loop has stopped and before it is destroyed: release every I/O object
  // tied to the loop.
  virtual void close() = 0;
  // Extra text for the STATUS= line sent to the supervisor; empty for none.
  virtual std::string status() const { return {}; }
  // Connections the supervisor accepted for this worker from the queue of a slot whose loop
  // stalled or died (reuseport mode), as if accepted from listener number `listener`. A
  // service that returns true from takes_connections() gets them through adopt(), which owns
  // the fd.
  virtual bool takes_connections() const { return false; }
  virtual void adopt(std::size_t listener, int fd) { (void)listener, (void)fd; }
};

// What a service reports about its load. Under `loopfleet run` these live in the shared
// heartbeat region, so `loopfleet status` and the recycling limits read them without asking
// the worker; standalone they live in process memory. Written only from the loop thread.
struct worker_counters {
  std::atomic<std::uint64_t> connections{0};  // open now
  std::atomic<std::uint64_t> in_flight{0};    // requests being handled now
  std::atomic<std::uint64_t> requests{0};     // served since start

  // One writer, so a plain load and store: no locked instruction on the request path.
  static void add(std::atomic<std::uint64_t>& counter, std::int64_t delta) {
    counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }
};
worker_counters& counters();

// Registers a function to run on the worker's loop right after it is created, before the
// service starts and READY is sent (the cluster layer connects this way). Register before
// run_worker.
void at_loop_start(std::function<void(boost::asio::io_context&)> hook);

// Registers a function the drain calls besides the service's: it stops taking new work and
// calls `done` (on the loop) once its work in flight has finished. The worker exits when the
// service and every such function are done (or the drain timeout passes).
void at_drain(std::function<void(std::function<void()> done)> hook);

// Runs `svc` on a fresh single-threaded loop until it has drained. Returns the process exit
// code: 0 after a clean drain, 2 when start-up fails (the reason is logged as one line).
int run_worker(const worker_options& options, service& svc);

}  // namespace loopfleet
