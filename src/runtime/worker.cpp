// The worker's life: sockets, READY, serve, drain on SIGTERM, exit.
#include <loopfleet/runtime.hpp>

#include "runtime/address.hpp"
#include "runtime/handoff.hpp"
#include "runtime/error.hpp"
#include "runtime/flags.hpp"
#include "runtime/settings.hpp"
#include "runtime/heartbeat.hpp"
#include "runtime/listen_fds.hpp"
#include "runtime/log.hpp"
#include "runtime/notify.hpp"
#include "runtime/orphan.hpp"
#include "runtime/offload_pools.hpp"

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <variant>

namespace loopfleet {
namespace {

namespace asio = boost::asio;

// SIGQUIT must work even when the loop is blocked, so it is a real handler, not a signal_set.
extern "C" void quit_now(int) { ::_exit(0); }

void install_process_signals() {
  ::signal(SIGPIPE, SIG_IGN);  // a client that went away is an error code, not a death
  struct sigaction sa{};
  sa.sa_handler = quit_now;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGQUIT, &sa, nullptr);
}

std::vector<listener> open_listeners(const worker_options& options) {
  auto inherited = adopt_listen_fds();
  if (!inherited.empty()) {
    if (!options.listen.empty()) log::info("serving the inherited sockets; --listen is ignored");
    return inherited;
  }
  std::vector<std::string> specs = options.listen;
  if (specs.empty()) specs.emplace_back(default_listen);
  std::vector<listener> out;
  try {
    for (const auto& text : specs) {
      auto parsed = parse_listen_address(text);
      if (auto* err = std::get_if<std::string>(&parsed)) throw startup_error("--listen: " + *err);
      out.push_back(bind_listener(std::get<listen_address>(parsed), text, options.backlog));
    }
  } catch (...) {
    for (auto& l : out) ::close(l.fd);
    throw;
  }
  return out;
}

// Sends WATCHDOG=1 from the loop itself, so a blocked loop stops the beats.
void pet_watchdog(asio::steady_timer& timer, const notifier& note, std::chrono::microseconds every) {
  note.send("WATCHDOG=1");
  timer.expires_after(every);
  timer.async_wait([&timer, &note, every](boost::system::error_code ec) {
    if (!ec) pet_watchdog(timer, note, every);
  });
}

std::vector<std::function<void(asio::io_context&)>>& loop_start_hooks() {
  static std::vector<std::function<void(asio::io_context&)>> hooks;
  return hooks;
}

std::vector<std::function<void(std::function<void()>)>>& drain_hooks() {
  static std::vector<std::function<void(std::function<void()>)>> hooks;
  return hooks;
}

}  // namespace

void at_drain(std::function<void(std::function<void()>)> hook) { drain_hooks().push_back(std::move(hook)); }

void at_loop_start(std::function<void(asio::io_context&)> hook) { loop_start_hooks().push_back(std::move(hook)); }

namespace {
constexpr setting<worker_options> worker_table[] = {
    {.name = "listen", .where = &worker_options::listen, .shown_default = default_listen,
     .help = "address to serve when no socket is inherited: HOST:PORT, [IPV6]:PORT or unix:PATH"},
    {.name = "backlog", .where = &worker_options::backlog, .range = {1, max_backlog},
     .help = "listen backlog of sockets bound here"},
    {.name = "drain-timeout", .where = &worker_options::drain_timeout, .help = "longest graceful drain after SIGTERM"},
    {.name = "name", .where = &worker_options::name, .help = "name shown in log lines"},
};
}  // namespace

void add_worker_flags(flag_set& flags, worker_options& options) {
  add_settings<worker_options>(flags, options, worker_table);
}

int run_worker(const worker_options& options, service& svc) {
  log::set_name(options.name.empty() ? "loopfleet" : options.name);
  install_process_signals();
  std::vector<listener> listeners;
  try {
    listeners = open_listeners(options);
  } catch (const startup_error& e) {
    // The same one-line form as a flag error: this is for the person at the terminal.
    std::fprintf(stderr, "%s: error: %s\n", options.name.empty() ? "loopfleet" : options.name.c_str(), e.what());
    return 2;
  }
  notifier note = notifier::from_environment();
  std::vector<std::string> bound_unix_paths;
  for (const auto& l : listeners)
    if (l.family == AF_UNIX && !l.inherited && l.address.starts_with("unix:/"))
      bound_unix_paths.push_back(l.address.substr(5));

  asio::io_context loop(1);
  heartbeat beats;  // after the loop: its timer must go first
  beats.start(loop);
  detail::start_process_pool(loop);
  for (auto& hook : loop_start_hooks()) hook(loop);
  std::string addresses;
  for (const auto& l : listeners) addresses += (addresses.empty() ? "" : ", ") + l.address;
  try {
    svc.start(loop, std::move(listeners));
  } catch (const startup_error& e) {  // what the service opens itself (an access log)
    std::fprintf(stderr, "%s: error: %s\n", options.name.empty() ? "loopfleet" : options.name.c_str(), e.what());
    return 2;
  }
  std::unique_ptr<handoff::receiver> handoffs;
  if (svc.takes_connections())
    handoffs = handoff::receiver::from_environment(loop, [&svc](std::uint32_t l, int fd) { svc.adopt(l, fd); });
  else
    handoff::decline_from_environment();
  // Caught before READY: a SIGTERM sent as soon as the worker is ready (a quick reload or
  // stop) must drain it, not kill it by the default action. Asio keeps a signal that arrives
  // before the wait below begins.
  asio::signal_set signals(loop, SIGTERM, SIGINT);
  log::info("serving on " + addresses);
  std::string status = svc.status();
  note.send(std::string("READY=1\n") + (handoffs ? std::string(handoff::ready_key) + "\n" : "") +
            "STATUS=serving on " + addresses + (status.empty() ? "" : "; " + status));

  asio::steady_timer watchdog(loop);
  if (auto every = note.watchdog_interval(); every.count() > 0) pet_watchdog(watchdog, note, every / 2);

  asio::steady_timer drain_deadline(loop);
  bool draining = false;
  auto drain = [&](const std::string& why) {
    draining = true;
    log::info(why + ": draining (at most " + std::to_string(options.drain_timeout.count()) + " ms)");
    note.send("STOPPING=1\nSTATUS=draining");
    if (handoffs) handoffs->stop();
    // The service and every drain hook must finish; the last one to do so stops the loop.
    auto remaining = std::make_shared<std::size_t>(1 + drain_hooks().size());
    auto one_done = [&loop, remaining] {
      if (--*remaining == 0) {
        log::info("drained; exiting");
        loop.stop();
      }
    };
    svc.drain(one_done);
    for (auto& hook : drain_hooks()) hook(one_done);
    drain_deadline.expires_after(options.drain_timeout);
    drain_deadline.async_wait([&](boost::system::error_code e) {
      if (e) return;
      log::warn("drain timeout reached; closing the connections still open");
      loop.stop();
    });
  };
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (draining) {
      if (sig == SIGINT) {
        log::warn("second SIGINT: stopping without waiting for the drain");
        loop.stop();
      }
    } else {
      drain(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);

  // Outliving a supervisor that died (runtime/orphan.hpp): serve on until the one started again
  // drains us, or for as long as its keeper holds the sockets.
  asio::steady_timer orphan_deadline(loop);
  auto parent = parent_watch::from_environment(loop, [&](int supervisor, std::chrono::milliseconds serve_for) {
    if (draining) return;
    log::warn("the supervisor (pid " + std::to_string(supervisor) + ") died: serving on until a new one drains " +
              "this worker, for " + std::to_string(serve_for.count()) + " ms at most");
    orphan_deadline.expires_after(serve_for);
    orphan_deadline.async_wait([&](boost::system::error_code e) {
      if (!e && !draining) drain("no supervisor came back");
    });
  });

  loop.run();
  svc.close();
  // Unix socket files this worker created go with it; inherited ones belong to the parent.
  for (const auto& path : bound_unix_paths) ::unlink(path.c_str());
  return 0;
}

}  // namespace loopfleet
