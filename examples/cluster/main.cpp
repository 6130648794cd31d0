// Calls and durable jobs across nodes. Run it on every node with `loopfleet run --cluster`:
//   GET /submit?n=N&key=K   submits N "work" jobs (idempotency key K-i when K is given;
//                           ms=MS makes each take MS ms, size=BYTES pads its payload, retry_ms
//                           sets how long a submit retries while JetStream cannot store it)
//   GET /call               calls "whoami" on some worker of some node
//   GET /run?payload=P      submits one job and waits for its result
//   GET /relay              calls "relay": a call served by a coroutine that itself calls "whoami"
//   GET /call-rtt?n=N       N sequential "whoami" calls from this worker: p50/p99 in us, as JSON
// Job and call handlers say on which node and pid they ran: each job prints
// "job-done <payload> <id> node=<node> pid=<pid> attempt=<n>[ key=<key>]" on stdout (the key
// when it has one: a scheduled job's names its tick), and appends it to the
// file named by JOBS_DONE_FILE if set: a line still in the pipe when the whole node is killed
// is lost with the supervisor, and the chaos soak must not count such a job as lost.
#include <loopfleet/cluster.hpp>
#include <loopfleet/loopfleet.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <charconv>
#include <cstdlib>
#include <cstdio>

namespace http = loopfleet::http;
namespace cluster = loopfleet::cluster;

namespace {

// A long payload is printed with its middle left out.
std::string shown(const std::string& payload) {
  return payload.size() <= 64 ? payload : payload.substr(0, 16) + "..." + payload.substr(payload.size() - 32);
}

int number(std::string_view text, int otherwise) {
  int n = otherwise;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

std::string where() { return "node=" + cluster::node_name() + " pid=" + std::to_string(::getpid()); }

// A payload "label:MS..." makes the job take MS milliseconds (without blocking the loop).
boost::asio::awaitable<void> work(cluster::job& j) {
  if (j.payload.starts_with("fail")) throw std::runtime_error("asked to fail");
  if (auto colon = j.payload.find(':'); colon != std::string::npos) {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor,
                                std::chrono::milliseconds(std::atoi(j.payload.c_str() + colon + 1)));
    co_await t.async_wait(boost::asio::use_awaitable);
  }
  char line[512];
  int n = std::snprintf(line, sizeof line, "job-done %s %llu %s attempt=%d%s%s\n", shown(j.payload).c_str(),
                        static_cast<unsigned long long>(j.id), where().c_str(), j.attempt,
                        j.key.empty() ? "" : " key=", j.key.c_str());
  std::fputs(line, stdout);
  static const int journal = [] {
    const char* path = std::getenv("JOBS_DONE_FILE");
    return path && *path ? ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  }();
  // One write(2) per line with O_APPEND: lines of several workers never interleave.
  if (journal >= 0 && n > 0) [[maybe_unused]] auto w = ::write(journal, line, std::min<std::size_t>(n, sizeof line - 1));
  j.result = "done " + j.payload + " on " + where();
  std::fflush(stdout);
  co_return;
}

boost::asio::awaitable<http::response> submit(http::request& req) {
  int n = number(req.query_param("n"), 1);
  std::string key(req.query_param("key"));
  std::string padding(number(req.query_param("size"), 0), 'x');
  std::string ms(req.query_param("ms"));
  cluster::job_options o;
  o.retry_for = std::chrono::milliseconds(number(req.query_param("retry_ms"), 10000));
  std::uint64_t last = 0;
  int stored = 0;
  try {
    for (int i = 0; i < n; ++i, ++stored) {
      if (!key.empty()) o.idempotency_key = key + "-" + std::to_string(i);
      std::string payload = padding + "job-" + std::to_string(i) + (ms.empty() ? "" : ":" + ms);
      last = co_await cluster::submit("work", std::move(payload), o);
    }
  } catch (const cluster::cluster_error& e) {
    co_return http::text(std::string(e.what()) + " (" + std::to_string(stored) + " of " + std::to_string(n) + " stored before it)\n",
                         503);
  }
  co_return http::text("submitted " + std::to_string(n) + ", last id " + std::to_string(last) + "\n");
}

// Submits one job and waits for its result.
boost::asio::awaitable<http::response> run_job(http::request& req) {
  try {
    std::string out = co_await cluster::submit_and_wait("work", std::string(req.query_param("payload")));
    co_return http::text(out + "\n");
  } catch (const cluster::cluster_error& e) {
    co_return http::text(std::string(e.what()) + "\n", 504);
  }
}

boost::asio::awaitable<http::response> call(http::request&) {
  try {
    std::string who = co_await cluster::call("whoami", "", std::chrono::seconds(2));
    co_return http::text(who + "\n");
  } catch (const cluster::cluster_error& e) {
    co_return http::text(std::string(e.what()) + "\n", 503);
  }
}

}  // namespace

int main(int argc, char** argv) {
  cluster::join();
  cluster::serve("whoami", [](std::string_view) { return where(); });
  // A call served by a coroutine: it awaits another call (on any node, C++ or Python) before
  // it answers.
  cluster::serve("relay", [](std::string) -> boost::asio::awaitable<std::string> {
    std::string who = co_await cluster::call("whoami", "", std::chrono::seconds(2));
    co_return "relay " + where() + " -> " + who;
  });
  cluster::handle_jobs("work", work);
  // For benchmarks: a job that does nothing, so what is measured is the job system.
  cluster::handle_jobs("noop", [](cluster::job&) -> boost::asio::awaitable<void> { co_return; }, 256);
  http::router app;
  app.get("/", [](http::request&) { return http::text("Hello, World!"); });
  app.get("/submit", submit);
  app.get("/call", call);
  app.get("/run", run_job);
  app.get("/relay", [](http::request&) -> boost::asio::awaitable<http::response> {
    try {
      std::string out = co_await cluster::call("relay", "", std::chrono::seconds(3));
      co_return http::text(out + "\n");
    } catch (const cluster::cluster_error& e) {
      co_return http::text(std::string(e.what()) + "\n", 503);
    }
  });
  app.get("/call-rtt", [](http::request& req) -> boost::asio::awaitable<http::response> {
    int n = std::max(10, number(req.query_param("n"), 1000));
    std::vector<double> us;
    try {
      for (int i = 0; i < n; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        co_await cluster::call("whoami", "", std::chrono::seconds(2));
        us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
    } catch (const cluster::cluster_error& e) {
      co_return http::text(std::string(e.what()) + "\n", 503);
    }
    std::sort(us.begin(), us.end());
    char out[128];
    std::snprintf(out, sizeof out, "{\"p50_us\": %.1f, \"p99_us\": %.1f, \"calls\": %d}\n", us[us.size() / 2],
                  us[us.size() * 99 / 100], n);
    co_return http::text(out);
  });
  app.get("/call-nobody", [](http::request&) -> boost::asio::awaitable<http::response> {
    try {
      co_await cluster::call("nobody-serves-this", "", std::chrono::seconds(2));
      co_return http::text("unexpected answer\n", 500);
    } catch (const cluster::cluster_error& e) {
      co_return http::text(std::string(e.what()) + "\n", 503);
    }
  });
  return http::run(argc, argv, std::move(app));
}
