// The `loopfleet` command: `run` starts a supervisor in the foreground; the other
// subcommands talk to a running one over its control socket.
#include "cluster/admin.hpp"
#include "control/client.hpp"
#include "front/front.hpp"
#include "runtime/flags.hpp"
#include "runtime/spawn.hpp"
#include "supervisor/config.hpp"
#include "supervisor/keeper.hpp"
#include "supervisor/supervisor.hpp"

#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: loopfleet COMMAND [flags]\n"
    "\n"
    "commands:\n"
    "  run [flags] -- CMD [ARGS...]   run CMD as N supervised workers in the foreground (run --help)\n"
    "  status [--json]                slots: pid, state, restarts, RSS, heartbeat, loop lag, load\n"
    "  top [--interval S] [--count N] status, refreshed in place\n"
    "  reload                         start a new generation; the old one drains once it is ready\n"
    "  scale N                        change the number of workers\n"
    "  upgrade [--binary PATH]        replace this supervisor by the loopfleet on disk (or PATH), no\n"
    "                                 connection lost; rolled back if the new one fails (also SIGUSR2)\n"
    "  stop                           graceful stop\n"
    "  cluster status                 the cluster's nodes: up or down, workers, load\n"
    "  job submit NAME PAYLOAD        store a durable job (--count N, --key IDEMPOTENCY_KEY, --retry-for 10s)\n"
    "  job stats                      jobs pending, in flight, redelivered, completed, dead\n"
    "  workflow start NAME INPUT      start a durable workflow (--id ID; --wait 30s prints its result)\n"
    "  workflow show ID               its status and each step: node, duration, attempts (--json)\n"
    "  workflow signal ID NAME DATA   send a signal the workflow waits for\n"
    "  job schedule NAME PAYLOAD --every DURATION | --at TIME\n"
    "                                 submit job NAME (--job JOB) once per tick across the cluster, no leader;\n"
    "                                 TIME is RFC 3339 UTC (2026-12-02T01:00:00Z) or +DURATION\n"
    "  job schedules [--json]         schedules: spec, next and last tick, missed ticks\n"
    "  job unschedule NAME            remove a schedule; every node stops firing it\n"
    "  front --listen HOST:PORT --server HOST:PORT@AGENT_PORT ...\n"
    "                                 HAProxy in front of the nodes, fed by their --agent-check (front --help)\n"
    "\n"
    "status, top, reload, scale, upgrade and stop take --name NAME or --control PATH to pick the instance.\n";

int fail(const std::string& message) {
  std::fprintf(stderr, "loopfleet: error: %s\n", message.c_str());
  return 2;
}

int client_command(std::string_view command, std::vector<std::string_view> args) {
  std::string name, control, binary;
  std::chrono::milliseconds interval{1000};
  int count = 0;
  bool as_json = false;
  std::string json_flag;
  std::vector<std::string_view> rest;
  loopfleet::flag_set flags("loopfleet " + std::string(command));
  flags.add_string("--name", &name, "instance name");
  flags.add_string("--control", &control, "control socket path");
  if (command == "top") {
    flags.add_duration("--interval", &interval, "refresh period");
    flags.add_int("--count", &count, 0, 1000000, "stop after this many refreshes (0 = until Ctrl-C)");
  }
  if (command == "upgrade") flags.add_string("--binary", &binary, "the loopfleet executable to upgrade to");
  std::vector<std::string_view> flag_args;
  for (auto a : args) {
    if (a == "--json") as_json = true;
    else if (a.starts_with("--") || (!flag_args.empty() && flag_args.back().starts_with("--") &&
                                     flag_args.back().find('=') == std::string_view::npos))
      flag_args.push_back(a);
    else rest.push_back(a);
  }
  if (auto err = flags.parse(flag_args)) return fail(*err);
  if (flags.help_requested()) {
    std::fputs(usage, stdout);
    return 0;
  }
  if (as_json && command != "status") return fail("--json goes with status only");

  boost::json::object req{{"command", std::string(command == "top" ? "status" : command)}};
  if (command == "scale") {
    if (rest.size() != 1) return fail("scale needs the number of workers, e.g. loopfleet scale 4");
    char* end = nullptr;
    std::string n(rest.front());
    long v = std::strtol(n.c_str(), &end, 10);
    if (*end || v < 1 || v > loopfleet::supervisor::max_workers)
      return fail("scale: '" + n + "' is not a number from 1 to " + std::to_string(loopfleet::supervisor::max_workers));
    req["workers"] = v;
  } else if (!rest.empty()) {
    return fail("unexpected argument '" + std::string(rest.front()) + "' (see loopfleet --help)");
  }

  if (command == "upgrade" && !binary.empty()) {
    // The supervisor runs it, from its own working directory: a relative path means ours.
    char* real = ::realpath(binary.c_str(), nullptr);
    if (!real) return fail("--binary " + binary + ": " + std::strerror(errno));
    req["binary"] = real;
    std::free(real);
  }

  std::string path, error;
  if (auto err = loopfleet::control::locate(control, name, path)) return fail(*err);
  // A reload or an upgrade waits for the new workers to be ready, which may take the ready timeout.
  auto timeout = std::chrono::seconds(command == "reload" || command == "upgrade" ? 600 : 10);
  if (command == "top") {
    for (int i = 0; count == 0 || i < count; ++i) {
      if (i) std::this_thread::sleep_for(interval);
      auto reply = loopfleet::control::call(path, boost::json::serialize(req), timeout, error);
      if (!reply) return fail(error);
      // Home the cursor and clear the screen, then draw: a refresh in place.
      std::printf("\033[H\033[2J%s", loopfleet::control::format_status(*reply).c_str());
      std::fflush(stdout);
    }
    return 0;
  }
  auto reply = loopfleet::control::call(path, boost::json::serialize(req), timeout, error);
  if (!reply) return fail(error);
  boost::system::error_code ec;
  auto v = boost::json::parse(*reply, ec);
  if (ec || !v.is_object()) return fail("unreadable reply: " + *reply);
  const auto& o = v.as_object();
  if (!o.contains("ok") || !o.at("ok").as_bool()) {
    auto* e = o.if_contains("error");
    std::fprintf(stderr, "loopfleet: %s failed: %s\n", std::string(command).c_str(),
                 e && e->is_string() ? std::string(e->as_string()).c_str() : reply->c_str());
    return 1;
  }
  if (command == "status") {
    std::fputs(as_json ? (*reply + "\n").c_str() : loopfleet::control::format_status(*reply).c_str(), stdout);
  } else if (auto* m = o.if_contains("message"); m && m->is_string()) {
    std::printf("%s\n", std::string(m->as_string()).c_str());
  }
  return 0;
}

// `cluster ...` and `job ...` talk to NATS: --nats URL, or the URL of the local instance.
int nats_command(std::string_view group, std::vector<std::string_view> args) {
  if (args.empty()) return fail(std::string(group) + " needs a subcommand (see loopfleet --help)");
  std::string sub(args.front());
  args.erase(args.begin());
  std::string url, name, control, key, every, at, job, workflow_id;
  std::chrono::milliseconds down_after{3000}, wait{0};
  std::chrono::milliseconds retry_for{10000};
  int count = 1;
  bool as_json = false;
  loopfleet::flag_set flags("loopfleet " + std::string(group) + " " + sub);
  flags.add_string("--nats", &url, "NATS URL [default: the local instance's]");
  flags.add_string("--name", &name, "the local instance to ask for its NATS URL");
  flags.add_string("--control", &control, "the local instance's control socket");
  flags.add_duration("--down-after", &down_after, "a node silent this long is down");
  flags.add_int("--count", &count, 1, 10000000, "submit this many jobs, PAYLOAD-0, PAYLOAD-1, ...");
  flags.add_duration("--retry-for", &retry_for,
                     "keep retrying, with backoff, jobs JetStream cannot take now (storage full, election)");
  flags.add_string("--key", &key, "idempotency key (with --count: KEY-0, KEY-1, ...)");
  loopfleet::cluster::job_limits limits;
  flags.add_int("--max-attempts", &limits.max_attempts, 1, 1000, "runs of a failing job before its dead letter [5]");
  flags.add_duration("--time-limit", &limits.time_limit, "how long one run of the job may take [30s]");
  flags.add_bool("--json", &as_json, "machine-readable output");
  flags.add_string("--id", &workflow_id, "workflow start: the workflow's id (a second start with it does nothing)");
  flags.add_duration("--wait", &wait, "workflow start: wait this long for the result and print it");
  flags.add_string("--every", &every, "schedule: a tick at every multiple of DURATION since the Unix epoch (UTC)");
  flags.add_string("--at", &at, "schedule: one tick at TIME (RFC 3339 UTC, or +DURATION from now)");
  flags.add_string("--job", &job, "schedule: the job each tick submits [the schedule's name]");
  std::vector<std::string_view> flag_args, rest;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i].starts_with("--")) {
      flag_args.push_back(args[i]);
      bool takes_value = args[i] != "--json" && args[i].find('=') == std::string_view::npos;
      if (takes_value && i + 1 < args.size()) flag_args.push_back(args[++i]);
    } else {
      rest.push_back(args[i]);
    }
  }
  if (auto err = flags.parse(flag_args)) return fail(*err);
  // A schedule is checked whole before anything is asked of NATS: bad input stores nothing.
  loopfleet::cluster::schedule schedule;
  if (group == "job" && sub == "schedule") {
    namespace lc = loopfleet::cluster;
    if (rest.size() != 2)
      return fail("job schedule needs NAME and PAYLOAD, e.g. loopfleet job schedule report daily --every 1d");
    if (every.empty() == at.empty()) return fail("job schedule needs one of --every DURATION or --at TIME");
    schedule.name = std::string(rest[0]);
    schedule.job = job.empty() ? schedule.name : job;
    schedule.payload = std::string(rest[1]);
    schedule.max_attempts = limits.max_attempts;
    schedule.time_limit_ms = limits.time_limit.count();
    if (auto err = lc::check_name("the schedule", schedule.name)) return fail(*err);
    if (auto err = lc::check_name("the job", schedule.job)) return fail("--job: " + *err);
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
    if (!every.empty())
      if (auto err = lc::parse_every(every, schedule.every_ms)) return fail("--every " + *err);
    if (!at.empty())
      if (auto err = lc::parse_at(at, now, schedule.at_ms)) return fail("--at " + *err);
  }
  if (url.empty()) {
    std::string path, error;
    if (auto err = loopfleet::control::locate(control, name, path))
      return fail(*err + "; or give --nats nats://HOST:PORT");
    auto reply = loopfleet::control::call(path, R"({"command":"status"})", std::chrono::seconds(5), error);
    if (!reply) return fail(error + "; or give --nats nats://HOST:PORT");
    boost::system::error_code ec;
    auto v = boost::json::parse(*reply, ec);
    const boost::json::value* c = (!ec && v.is_object()) ? v.as_object().if_contains("cluster") : nullptr;
    if (!c) return fail("the local instance is not in a cluster (start it with --cluster); or give --nats URL");
    url = std::string(c->as_object().at("nats").as_string());
  }
  std::string error;
  std::optional<std::string> out;
  if (group == "cluster" && sub == "status") {
    out = loopfleet::cluster::cluster_status(url, down_after.count() / 1000.0, as_json, error);
  } else if (group == "job" && sub == "submit") {
    if (rest.size() != 2) return fail("job submit needs NAME and PAYLOAD, e.g. loopfleet job submit work hello");
    out = loopfleet::cluster::submit_jobs(url, std::string(rest[0]), std::string(rest[1]), count, key, retry_for, limits, error);
  } else if (group == "job" && sub == "stats") {
    out = loopfleet::cluster::job_stats(url, error);
  } else if (group == "workflow" && sub == "start") {
    if (rest.size() != 2) return fail("workflow start needs NAME and INPUT, e.g. loopfleet workflow start order sku-1");
    out = loopfleet::cluster::workflow_start(url, std::string(rest[0]), std::string(rest[1]), workflow_id, wait, error);
  } else if (group == "workflow" && sub == "show") {
    if (rest.size() != 1) return fail("workflow show needs the workflow's ID");
    out = loopfleet::cluster::workflow_show(url, std::string(rest[0]), as_json, error);
  } else if (group == "workflow" && sub == "signal") {
    if (rest.size() != 3) return fail("workflow signal needs ID, NAME and PAYLOAD");
    out = loopfleet::cluster::workflow_signal(url, std::string(rest[0]), std::string(rest[1]), std::string(rest[2]),
                                              error);
  } else if (group == "job" && sub == "schedule") {
    out = loopfleet::cluster::store_schedule(url, schedule, error);
  } else if (group == "job" && sub == "schedules") {
    out = loopfleet::cluster::list_schedules(url, as_json, error);
  } else if (group == "job" && sub == "unschedule") {
    if (rest.size() != 1) return fail("job unschedule needs the schedule's NAME (loopfleet job schedules lists them)");
    out = loopfleet::cluster::remove_schedule(url, std::string(rest[0]), error);
  } else {
    return fail("unknown command '" + std::string(group) + " " + sub +
                "' (cluster status, job submit, job stats, job schedule, job schedules, job unschedule, "
                "workflow start|show|signal)");
  }
  if (!out) {
    std::fprintf(stderr, "loopfleet: %s %s failed: %s\n", std::string(group).c_str(), sub.c_str(), error.c_str());
    return 1;
  }
  std::fputs(out->c_str(), stdout);
  return 0;
}

int front_command(std::vector<std::string_view> args) {
  loopfleet::front::config cfg;
  bool help = false, print = false;
  if (auto err = loopfleet::front::parse_args(args, cfg, &help, &print)) return fail(*err);
  if (help) {
    std::fputs(loopfleet::front::usage().c_str(), stdout);
    return 0;
  }
  if (print) {
    std::fputs(loopfleet::front::haproxy_config(cfg).c_str(), stdout);
    return 0;
  }
  return loopfleet::front::run(cfg);
}

int run_command(std::vector<std::string_view> args) {
  loopfleet::supervisor::config cfg;
  // Socket-activated (systemd passed us sockets): they are served, --listen is optional.
  const char* listen_pid = std::getenv("LISTEN_PID");
  cfg.inherited_sockets = listen_pid && std::to_string(::getpid()) == listen_pid;
  bool help = false;
  if (auto err = loopfleet::supervisor::parse_run_args(args, cfg, &help)) return fail(*err);
  if (help) {
    std::fputs(loopfleet::supervisor::run_usage().c_str(), stdout);
    return 0;
  }
  if (loopfleet::find_executable(cfg.command.front()).empty())
    return fail("command '" + cfg.command.front() + "' not found or not executable (check the path after --)");
  std::vector<std::string> kept(args.begin(), args.end());
  return loopfleet::supervisor::run(std::move(cfg), std::move(kept));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty() || args.front() == "--help" || args.front() == "-h" || args.front() == "help") {
    std::fputs(usage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::string_view command = args.front();
  args.erase(args.begin());
  if (command == "run") return run_command(args);
  // Not for people: the socket keeper `loopfleet run` starts beside itself (supervisor/keeper.hpp).
  if (command == "keeper") return loopfleet::supervisor::run_keeper(args);
  if (command == "status" || command == "top" || command == "reload" || command == "stop" || command == "scale" ||
      command == "upgrade")
    return client_command(command, args);
  if (command == "cluster" || command == "job" || command == "workflow") return nats_command(command, args);
  if (command == "front") return front_command(args);
  return fail("unknown command '" + std::string(command) +
              "' (run, status, top, reload, scale, upgrade, stop, cluster, job, front; see loopfleet --help)");
}
