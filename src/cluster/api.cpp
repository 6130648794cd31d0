// The cluster API for workers (include/loopfleet/cluster.hpp): what serve, handle_jobs, call
// and submit do, and join(), which gives every worker start a client (client.hpp) that lives
// and dies with the worker's loop.
#include <loopfleet/cluster.hpp>
#include <loopfleet/runtime.hpp>

#include "cluster/client.hpp"
#include "runtime/log.hpp"

#include <boost/asio/execution_context.hpp>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <utility>

namespace loopfleet::cluster {

namespace asio = boost::asio;

registry& handlers() {
  static registry r;
  return r;
}

client_slot& the_client() {
  static client_slot slot;
  return slot;
}

client::client(asio::io_context& l, nats_connection c)
    : loop(l),
      connection(std::move(c)),
      calls(l, connection.nc()),
      store(l, connection.js()),
      runner(l, connection, store) {}

void client::start() {
  calls.start(handlers().calls);
  runner.start(handlers().jobs);
  runner.start(handlers().workflows);
}

namespace {

// Owns the client for as long as its loop lives: shut down with the loop (before the loop's
// timers and sockets go), never at static destruction after it.
class client_service : public asio::execution_context::service {
 public:
  using key_type = client_service;
  static inline asio::execution_context::id id;
  explicit client_service(asio::execution_context& ctx) : service(ctx) {}
  void shutdown() override {
    {
      std::lock_guard lock(the_client().mutex);
      the_client().current = nullptr;
    }
    owned.reset();
  }
  std::unique_ptr<client> owned;
};

void connect_at_start(asio::io_context& loop) {
  const char* url = std::getenv("LOOPFLEET_NATS_URL");
  if (!url || !*url) return;
  nats_connection connection;
  if (natsStatus s = connection.open(url, {.reconnect_forever = true, .in_background = true, .send_asap = true});
      !connection) {
    log::error(std::string("cluster: cannot connect to ") + url + ": " + natsStatus_GetText(s));
    return;
  }
  auto& svc = asio::use_service<client_service>(loop);
  svc.owned = std::make_unique<client>(loop, std::move(connection));
  {
    std::lock_guard lock(the_client().mutex);
    the_client().current = svc.owned.get();
  }
  svc.owned->start();
  log::info(std::string("cluster: connected to ") + url + " as node " + node_name());
}

bool joined = false;

}  // namespace

client& connected_client() {
  if (!joined)
    throw cluster_error(cluster_error::reason::not_configured,
                        "this worker has not joined the cluster: call loopfleet::cluster::join() in main(), "
                        "before it runs");
  std::lock_guard lock(the_client().mutex);
  if (!the_client().current)
    throw cluster_error(cluster_error::reason::not_configured,
                        "this worker is not in a cluster: run it under loopfleet run --cluster (LOOPFLEET_NATS_URL)");
  return *the_client().current;
}

void start_client(asio::io_context& loop) {
  joined = true;
  connect_at_start(loop);
}

void drain_client(std::function<void()> done) {
  client* c = nullptr;
  {
    std::lock_guard lock(the_client().mutex);
    c = the_client().current;
  }
  if (!c) return done();
  // Jobs first: a job in flight may still make calls, and answer its submitter through the inbox.
  c->runner.drain([c, done = std::move(done)]() mutable { c->calls.drain(std::move(done)); });
}

void join() {
  if (std::exchange(joined, true)) return;
  at_loop_start(connect_at_start);
  at_drain(drain_client);
}

void serve(std::string name, call_handler handler) { handlers().calls[std::move(name)] = {std::move(handler), {}}; }
void serve(std::string name, call_coroutine handler) {
  handlers().calls[std::move(name)] = {{}, std::move(handler)};
}

void handle_jobs(std::string name, job_handler handler, int concurrency) {
  handlers().jobs[name] = job_definition(name, std::move(handler), concurrency);
}

asio::awaitable<std::string> call(std::string name, std::string payload, std::chrono::milliseconds timeout) {
  std::string out = co_await connected_client().calls.call(std::move(name), std::move(payload), timeout);
  co_return out;
}

asio::awaitable<std::uint64_t> submit(std::string name, std::string payload, job_options options) {
  std::string no_reply;  // a named local: GCC 12 mishandles class temporaries in co_await expressions
  std::uint64_t id =
      co_await connected_client().store.submit(std::move(name), std::move(payload), options, std::move(no_reply));
  co_return id;
}

asio::awaitable<std::string> submit_and_wait(std::string name, std::string payload, job_options options,
                                             std::chrono::milliseconds timeout) {
  client& c = connected_client();
  std::uint64_t reply_id = 0;
  std::string reply = c.calls.reserve_reply(reply_id);
  co_await c.store.submit(name, std::move(payload), options, reply);
  std::string out = co_await c.calls.wait_result(reply_id, std::move(name), timeout);
  co_return out;
}

const std::string& node_name() {
  static const std::string name = [] {
    const char* n = std::getenv("LOOPFLEET_NODE");
    return std::string(n ? n : "");
  }();
  return name;
}

}  // namespace loopfleet::cluster
