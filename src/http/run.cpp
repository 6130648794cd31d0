#include <loopfleet/http.hpp>

#include "http/server.hpp"
#include "runtime/flags.hpp"

#include <cstdio>
#include <string_view>
#include <vector>

namespace loopfleet::http {

int run(int argc, char** argv, router app) {
  std::string_view program = argc > 0 ? argv[0] : "loopfleet-worker";
  program = program.substr(program.rfind('/') + 1);
  worker_options worker;
  worker.name = std::string(program);
  server_options server;

  flag_set flags(worker.name);
  add_worker_flags(flags, worker);
  flags.add_size("--max-header-bytes", &server.max_header_bytes, "largest request line + headers; larger gets 431");
  flags.add_size("--max-body-bytes", &server.max_body_bytes, "largest request body; larger gets 413");
  flags.add_size("--max-connections", &server.max_connections, "open connections per worker; more get 503");
  flags.add_duration("--header-timeout", &server.header_timeout, "first byte to end of headers; slower gets 408");
  flags.add_duration("--request-timeout", &server.request_timeout, "first byte to end of body; slower gets 408");
  flags.add_duration("--idle-timeout", &server.idle_timeout, "keep-alive wait for the next request");
  flags.add_duration("--send-timeout", &server.send_timeout, "time a client may take to read a response");
  flags.add_duration("--drain-idle-timeout", &server.drain_idle_timeout,
                     "when draining, how long an idle keep-alive connection may send one more request");

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
  return run_worker(worker, srv);
}

}  // namespace loopfleet::http
