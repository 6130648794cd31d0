#include <loopfleet/http.hpp>

#include "http/server.hpp"
#include "runtime/flags.hpp"
#include "runtime/settings.hpp"

#include <cstdio>
#include <string_view>
#include <vector>

namespace loopfleet::http {
namespace {

std::optional<std::string> parse_io(std::string_view text, server_options& into) {
  return one_of<io_interface>(text, into.io, {{"auto", io_interface::automatic},
                                              {"epoll", io_interface::epoll},
                                              {"io_uring", io_interface::io_uring}});
}

constexpr setting<server_options> server_table[] = {
    {.name = "max-header-bytes", .where = &server_options::max_header_bytes,
     .help = "largest request line + headers; larger gets 431"},
    {.name = "max-body-bytes", .where = &server_options::max_body_bytes,
     .help = "largest request body; larger gets 413"},
    {.name = "max-connections", .where = &server_options::max_connections,
     .help = "open connections per worker; more get 503"},
    {.name = "header-timeout", .where = &server_options::header_timeout,
     .help = "first byte to end of headers; slower gets 408"},
    {.name = "request-timeout", .where = &server_options::request_timeout,
     .help = "first byte to end of body; slower gets 408"},
    {.name = "idle-timeout", .where = &server_options::idle_timeout, .help = "keep-alive wait for the next request"},
    {.name = "send-timeout", .where = &server_options::send_timeout,
     .help = "time a client may take to read a response"},
    {.name = "drain-idle-timeout", .where = &server_options::drain_idle_timeout,
     .help = "when draining, how long an idle keep-alive connection may send one more request"},
    {.name = "io", .where = setting<server_options>::parsed{.parse = parse_io}, .shown_default = "auto",
     .help = "how connections are read and written: io_uring, epoll, or auto (io_uring where the kernel gives it)"},
};

}  // namespace

int run(int argc, char** argv, router app) {
  std::string_view program = argc > 0 ? argv[0] : "loopfleet-worker";
  program = program.substr(program.rfind('/') + 1);
  worker_options worker;
  worker.name = std::string(program);
  server_options server;

  flag_set flags(worker.name);
  add_worker_flags(flags, worker);
  add_settings<server_options>(flags, server, server_table);

  std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  if (auto err = flags.parse(args)) {
    std::fprintf(stderr, "%s: error: %s\n", worker.name.c_str(), err->c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::fputs(flags.usage().c_str(), stdout);
    return 0;
  }
  return run(worker, server, std::move(app));
}

int run(const worker_options& worker, const server_options& options, router app) {
  detail::server srv(std::move(app), options);
  srv.log_requests_from_environment();
  return run_worker(worker, srv);
}

}  // namespace loopfleet::http
