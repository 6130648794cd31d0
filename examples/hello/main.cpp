// The smallest loopfleet service. Standalone: `hello --listen 127.0.0.1:8080`;
// under the supervisor: `loopfleet run --workers auto -- hello`.
#include <loopfleet/loopfleet.hpp>

#include <boost/json/value.hpp>

namespace http = loopfleet::http;

int main(int argc, char** argv) {
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.get("/json", [](http::request&) { return http::json({{"message", "Hello, World!"}}); });
  app.get("/healthz", [](http::request&) { return http::text("ok\n"); });
  return http::run(argc, argv, std::move(app));
}
