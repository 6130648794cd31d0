#include "supervisor/supervisor.hpp"

#include "cluster/node.hpp"
#include "runtime/error.hpp"
#include "runtime/handoff.hpp"
#include "runtime/heartbeat.hpp"
#include "runtime/address.hpp"
#include "runtime/listen_fds.hpp"
#include "runtime/log.hpp"
#include "supervisor/cpus.hpp"
#include "supervisor/admin_endpoint.hpp"
#include "runtime/notify.hpp"
#include "supervisor/control_request.hpp"
#include "supervisor/policy.hpp"
#include "runtime/private_dir.hpp"
#include "supervisor/queue_handoff.hpp"
#include "supervisor/sockets.hpp"
#include "supervisor/spawn.hpp"
#include "supervisor/stack.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>

namespace loopfleet::supervisor {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using done_fn = std::function<void(bool ok, std::string message)>;

constexpr std::size_t kept_stderr_lines = 20;

// A worker's role in its slot. A slot has at most one `current` and, during a reload, one
// `candidate`; `retiring` workers drain; `rejected` ones are killed after a failed reload.
enum class role { current, candidate, retiring, rejected };

// Reads a worker's stdout or stderr and forwards it line by line, tagged with slot and pid.
struct output_reader : std::enable_shared_from_this<output_reader> {
  output_reader(asio::io_context& loop, int fd, std::string tag, std::shared_ptr<std::deque<std::string>> keep)
      : pipe(loop, fd), tag(std::move(tag)), kept(std::move(keep)) {}
  // Called with the lines of a stack dump (between the markers) instead of forwarding them.
  std::function<void(std::vector<std::string>)> on_stack;

  void start() {
    auto self = shared_from_this();
    pipe.async_read_some(asio::buffer(chunk), [self](boost::system::error_code ec, std::size_t n) {
      self->take(n);
      if (ec) {
        self->flush_partial();
        return;
      }
      self->start();
    });
  }
  // Reads whatever is already in the pipe, without waiting: called when the worker has
  // exited, so its last lines are logged (and kept) before the exit is.
  void drain_now() {
    if (!pipe.is_open()) return;
    boost::system::error_code ec;
    pipe.non_blocking(true, ec);
    for (;;) {
      std::size_t n = pipe.read_some(asio::buffer(chunk), ec);
      take(n);
      if (ec) break;
    }
    if (stack && python_stack) finish_stack();
  }
  void take(std::size_t n) {
    partial.append(chunk.data(), n);
    std::size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      emit(partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
    if (partial.size() > 16384) flush_partial();  // a very long line is forwarded in pieces
  }
  void flush_partial() {
    if (!partial.empty()) emit(std::exchange(partial, {}));
    if (stack && python_stack) finish_stack();  // the worker was killed right after its dump
  }
  void finish_stack() {
    if (on_stack) on_stack(std::move(*stack));
    stack.reset();
  }
  void emit(const std::string& line) {
    if (line == stack_begin_marker || (stack_asked && !stack && is_python_stack_header(line))) {
      stack.emplace();
      python_stack = line != stack_begin_marker;
      stack_asked = false;
      return;
    }
    if (stack && python_stack) {
      if (is_python_stack_line(line)) {
        stack->push_back(line);
        return;
      }
      finish_stack();  // a faulthandler traceback has no end marker: its first other line ends it
    } else if (stack) {
      if (line != stack_end_marker) {
        stack->push_back(line);
        return;
      }
      finish_stack();
      return;
    }
    if (line.empty()) return;
    log::info(tag + line);
    if (kept) {
      kept->push_back(line);
      if (kept->size() > kept_stderr_lines) kept->pop_front();
    }
  }

  asio::posix::stream_descriptor pipe;
  std::string tag;
  std::shared_ptr<std::deque<std::string>> kept;
  std::array<char, 4096> chunk{};
  std::string partial;
  std::optional<std::vector<std::string>> stack;
  bool python_stack = false;  // the open stack is a faulthandler traceback
  // Set when the supervisor sent the stack signal: only then is a faulthandler header read as
  // the stalled loop's stack (an app's own faulthandler dump on a crash is just logged).
  bool stack_asked = false;
};

// The supervisor's mapping of a worker's heartbeat region.
struct heartbeat_map {
  heartbeat_region* region = nullptr;
  ~heartbeat_map() {
    if (region) ::munmap(region, sizeof(heartbeat_region));
  }
};

struct process {
  process(asio::io_context& loop) : timer(loop) {}
  ~process() {
    if (handoff >= 0) ::close(handoff);
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  pid_t pid = 0;
  int slot = 0;
  int generation = 0;
  role r = role::current;
  clock::time_point started = clock::now();
  bool ready = false;
  bool ready_timed_out = false;
  asio::steady_timer timer;  // ready deadline while starting, kill deadline while retiring
  std::shared_ptr<std::deque<std::string>> last_stderr = std::make_shared<std::deque<std::string>>();
  std::shared_ptr<output_reader> out, err;
  std::string status;  // last STATUS= text
  std::unique_ptr<heartbeat_map> heartbeat;  // native workers under --watchdog or --max-requests
  std::int64_t last_ping_ns = 0;             // last WATCHDOG=1 (any worker)
  bool suspect = false;                      // beats late: new connections steered elsewhere
  bool stalled = false;                      // past the watchdog: being killed
  bool serves() const { return ready && !suspect && !stalled; }
  int handoff = -1;                          // our end of its handoff channel
  bool takes_connections = false;            // it said X_LOOPFLEET_HANDOFF=1 with READY=1
  std::uint64_t request_limit = 0;           // --max-requests plus jitter; 0 = none

  // The region's state, once the worker has beaten at least once (a native worker's loop is
  // live) and while the region still holds our layout.
  std::optional<heartbeat_reading> beating(std::int64_t now_ns = monotonic_ns()) const {
    if (!heartbeat || !heartbeat->region) return std::nullopt;
    return read_heartbeat(*heartbeat->region, now_ns);
  }
  // Requests served so far; still readable after it died (the region is our mapping).
  std::uint64_t requests() const {
    return heartbeat && heartbeat->region ? heartbeat->region->counters.requests.load() : 0;
  }
};

struct slot_state {
  pid_t current = 0;
  pid_t candidate = 0;
  int restarts = 0;
  int failures = 0;  // failed runs in a row
  bool degraded = false;
  bool failed_first_start = false;
  std::string last_exit;
  std::string last_error;  // the last stderr line of a worker that died before READY (why it could not start)
  std::uint64_t handed_over = 0;  // connections taken from its queue for other workers
  // Requests served by the workers that have left the slot: the slot's request counter is
  // this plus what its live workers count, so it never goes backwards when one is replaced.
  std::uint64_t requests_before = 0;
  // Every reason from zero, so a scraper sees the first restart as an increase.
  std::map<std::string, int> restarts_by_reason{{"exit", 0}, {"crash", 0}, {"stall", 0}, {"not_ready", 0}};
  int stalls = 0;
  int recycles = 0;
  clock::time_point handoff_logged{};
  std::unique_ptr<asio::steady_timer> restart;
  clock::time_point recycle_after{};  // after a failed recycle, wait before trying again
};

long rss_kib(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

std::string ms_text(milliseconds d) { return std::to_string(d.count()) + " ms"; }

// The children of every thread of `pid` (/proc/PID/task/TID/children).
std::vector<pid_t> child_pids(pid_t pid) {
  std::vector<pid_t> out;
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = ::opendir(tasks.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream children(tasks + "/" + e->d_name + "/children");
      for (pid_t c; children >> c;) out.push_back(c);
    }
    ::closedir(d);
  }
  return out;
}

class master {
 public:
  master(config cfg, std::vector<std::string> args) : cfg_(std::move(cfg)), args_(std::move(args)) {}
  int run();

 private:
  // The worker count for `c`, and where it came from (shown by status).
  static int resolve_workers(const config& c, std::string& from) {
    if (c.workers > 0) {
      from = "set by --workers or the config file";
      return c.workers;
    }
    auto count = auto_worker_count();
    from = std::move(count.why);
    return count.workers;
  }
  void prepare_nats_dir();
  void open_control();
  void open_notify();
  int connected_notify_socket() const;
  void arm_signals();
  void on_signal(int sig);

  void start_worker(int slot, role r);
  void schedule_restart(int slot, milliseconds delay);
  void reap();
  void on_exit(pid_t pid, int status);
  // Records a worker that died before any worker was ever ready. When every slot has failed
  // so, the command is broken: stop with exit code 1 and its last stderr lines; returns true.
  bool first_start_failed(const process& p, const std::string& reason);
  void read_notify();
  void on_notify(pid_t pid, std::string_view message);
  void mark_ready(process& p);
  // Signals a worker to stop (SIGTERM drains) and SIGKILLs it if it outlives `grace`.
  void retire(process& p, int sig, milliseconds grace);
  void update_steering();

  // The watchdog and recycling, every check_interval: stalled loops, request and memory limits.
  void arm_checks();
  void check_workers();
  void on_stall(process& p, std::int64_t silent_ns);
  // Hands the connections queued on slots nobody accepts from to workers that serve.
  void hand_over_queues(std::int64_t now);
  void on_stack(pid_t pid, int slot, std::vector<std::string> lines);
  void recycle(int slot, const std::string& why);

  // The cluster layer: the node's nats-server (a supervised child) and its agent.
  void start_nats();
  void wait_for_nats(int attempt);
  void on_nats_exit(int status);
  void start_cluster_agent();
  void publish_heartbeat();

  void begin_reload(done_fn done);
  void commit_reload();
  void fail_reload(const std::string& reason);
  std::optional<std::string> scale(int n);
  void stop(bool fast);
  void finish();

  json::object status_json();
  std::uint64_t slot_requests(int slot) const;
  // The front: HAProxy's agent check (policy.hpp's agent_check_reply).
  void open_agent_check();
  void accept_agent_check();
  int serving_workers() const;
  void stop_workers(bool fast);
  void accept_control();
  void handle_control(std::shared_ptr<asio::local::stream_protocol::socket> client, std::string line);

  // Declared before loop_ so that it outlives the loop: destroying the loop ends the admin
  // server's connection coroutines, which detach from it.
  std::unique_ptr<admin_endpoint> admin_;
  asio::io_context loop_{1};
  config cfg_;
  std::vector<std::string> args_;
  std::unique_ptr<listen_sockets> sockets_;
  asio::signal_set signals_{loop_};
  std::unique_ptr<asio::posix::stream_descriptor> notify_;
  std::string notify_name_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> control_;
  std::unique_ptr<asio::ip::tcp::acceptor> agent_check_;
  asio::steady_timer front_drain_{loop_};
  std::vector<slot_state> slots_;  // [0, workers_) are active; the rest keep their sockets only
  int workers_ = 0;
  std::string workers_from_;
  std::map<pid_t, std::unique_ptr<process>> procs_;
  int generation_ = 1;
  int reloads_ok_ = 0, reloads_failed_ = 0;
  bool stopping_ = false;
  bool ever_ready_ = false;
  int exit_code_ = 0;
  std::string fatal_;  // printed after the loop when no worker ever became ready
  clock::time_point started_ = clock::now();
  asio::steady_timer checks_{loop_};
  pid_t nats_pid_ = 0;
  int nats_failures_ = 0;
  int nats_restarts_ = 0;
  bool nats_ready_ = false;
  clock::time_point nats_started_{};
  std::shared_ptr<output_reader> nats_out_, nats_err_;
  asio::steady_timer nats_timer_{loop_};
  std::unique_ptr<cluster::node_agent> agent_;
  int heartbeat_ticks_ = 0;
  queue_handoff handoff_;
  clock::time_point next_rss_check_{};
  std::mt19937 rng_{std::random_device{}()};

  struct reload_state {
    int generation;
    config old_cfg;
    int old_workers;
    std::string workers_from;  // the new generation's, until it commits
    std::vector<done_fn> waiters;
  };
  std::optional<reload_state> reload_;
};

int master::run() {
  log::set_name("loopfleet");
  ::signal(SIGPIPE, SIG_IGN);
  // Orphans of our workers (offload helpers whose worker died) become our children, so they
  // are reaped here and never linger as zombies of an init that does not reap.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  workers_ = resolve_workers(cfg_, workers_from_);
  try {
    open_control();
    if (cfg_.cluster && cfg_.nats.empty()) prepare_nats_dir();
    auto inherited = adopt_listen_fds();
    sockets_ = std::make_unique<listen_sockets>(cfg_.distribution, cfg_.listen, cfg_.backlog, workers_, inherited);
    open_notify();
    open_agent_check();
    if (!cfg_.admin.empty())
      admin_ = std::make_unique<admin_endpoint>(loop_, cfg_.admin, [this] {
        json::object o = status_json();
        o["ok"] = true;  // as the control socket replies: what `loopfleet status --json` prints
        return o;
      });
  } catch (const startup_error& e) {
    std::fprintf(stderr, "loopfleet: error: %s\n", e.what());
    if (control_) ::unlink(cfg_.control.c_str());
    return 2;
  }
  arm_signals();
  accept_control();
  accept_agent_check();
  read_notify();
  log::info("instance '" + cfg_.name + "' serving " + sockets_->describe() + " with " + std::to_string(workers_) +
            " workers" + (cfg_.workers > 0 ? "" : " (" + workers_from_ + ")") +
            (cfg_.run_user ? " as " + cfg_.user : "") + ", " +
            (cfg_.distribution == distribution::reuseport ? "reuseport" : "shared") + " distribution; control socket " +
            cfg_.control);
  slots_.resize(workers_);
  if (cfg_.cluster && cfg_.nats.empty()) {
    // Workers start once the node's NATS server answers: they connect to it at start-up.
    if (find_executable("nats-server").empty()) {
      std::fprintf(stderr, "loopfleet: error: nats-server not found: install it (scripts/install-deps.sh) or give "
                           "--nats nats://HOST:PORT of an existing NATS cluster\n");
      ::unlink(cfg_.control.c_str());
      return 2;
    }
    start_nats();
  } else {
    if (cfg_.cluster) start_cluster_agent();
    for (int i = 0; i < workers_; ++i) start_worker(i, role::current);
  }
  arm_checks();
  loop_.run();
  if (admin_) admin_->close();
  agent_.reset();
  if (!fatal_.empty()) std::fprintf(stderr, "%s", fatal_.c_str());
  return exit_code_;
}

void master::open_control() {
  const std::string& path = cfg_.control;
  sockaddr_un sun{};
  if (path.size() >= sizeof sun.sun_path)
    throw startup_error("control socket path " + path + " is too long (use a shorter --control)");
  if (auto dir = path.substr(0, path.rfind('/')); dir == runtime_dir()) {
    if (auto err = ensure_private_dir("runtime directory", dir, current_user(),
                                      "remove it (rm -r " + dir + ") or set XDG_RUNTIME_DIR to a directory of yours"))
      throw startup_error(*err);
  } else if (!dir.empty()) {
    make_private_dirs(dir);
  }
  asio::local::stream_protocol::endpoint ep(path);
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    asio::local::stream_protocol::socket probe(loop_);
    boost::system::error_code ec;
    probe.connect(ep, ec);
    if (!ec)
      throw startup_error("another loopfleet instance named '" + cfg_.name + "' is running (control socket " + path +
                          "); stop it first, or give this one another --name");
    ::unlink(path.c_str());
  }
  control_ = std::make_unique<asio::local::stream_protocol::acceptor>(loop_);
  boost::system::error_code ec;
  control_->open(asio::local::stream_protocol(), ec);
  if (!ec) control_->bind(ep, ec);
  if (!ec) control_->listen(16, ec);
  if (ec)
    throw startup_error("cannot create control socket " + path + ": " + ec.message() +
                        " (choose a writable path with --control)");
  ::chmod(path.c_str(), 0600);  // the control socket can stop and reload: owner only
}

void master::open_notify() {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  // The kernel attaches each sender's pid (SCM_CREDENTIALS), which is how a datagram is
  // matched to its worker, as systemd does.
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  std::random_device rd;
  notify_name_ = "@loopfleet-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path + 1, notify_name_.data() + 1, notify_name_.size() - 1);
  socklen_t len = offsetof(sockaddr_un, sun_path) + notify_name_.size();
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    int e = errno;
    ::close(fd);
    throw startup_error(std::string("cannot create the notify socket: ") + std::strerror(e));
  }
  int size = 1 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  notify_ = std::make_unique<asio::posix::stream_descriptor>(loop_, fd);
}

int master::connected_notify_socket() const {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path + 1, notify_name_.data() + 1, notify_name_.size() - 1);
  socklen_t len = offsetof(sockaddr_un, sun_path) + notify_name_.size();
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sun), len) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

void master::arm_signals() {
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD}) signals_.add(sig);
  signals_.async_wait([this](boost::system::error_code ec, int sig) {
    if (ec) return;
    on_signal(sig);
    arm_signals();
  });
}

void master::on_signal(int sig) {
  switch (sig) {
    case SIGCHLD:
      reap();
      break;
    case SIGHUP:
      begin_reload([](bool, std::string) {});
      break;
    case SIGQUIT:
      log::info("SIGQUIT: fast stop");
      stop(true);
      break;
    case SIGINT:
      if (stopping_) {
        log::warn("second SIGINT: fast stop");
        stop(true);
        break;
      }
      [[fallthrough]];
    case SIGTERM:
      log::info(std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") + ": graceful stop");
      stop(false);
      break;
  }
}

void master::start_worker(int slot, role r) {
  std::string exe = find_executable(cfg_.command.front());
  spawn_spec spec;
  spec.argv = cfg_.command;
  if (!exe.empty()) spec.argv.front() = exe;
  spec.fds = sockets_->for_slot(slot);
  if (cfg_.run_user) spec.user = &*cfg_.run_user;
  int gen = reload_ && r == role::candidate ? reload_->generation : generation_;
  spec.env = {"LISTEN_FDS=" + std::to_string(spec.fds.size()), "LISTEN_FDNAMES=" + sockets_->fd_names(),
              "NOTIFY_SOCKET=" + notify_name_, "LOOPFLEET_SLOT=" + std::to_string(slot),
              "LOOPFLEET_WORKERS=" + std::to_string(workers_),  // offload pools size by it
              "LOOPFLEET_NATS_URL=" + (cfg_.cluster ? nats_url(cfg_) : std::string()),
              "LOOPFLEET_NODE=" + cfg_.node,
              "LOOPFLEET_GENERATION=" + std::to_string(gen)};
  // Python workers import the loopfleet package (its launchers) with nothing set by the user.
  static const std::string python_path = worker_python_path(std::getenv("PYTHONPATH"));
  if (!python_path.empty()) spec.env.push_back("PYTHONPATH=" + python_path);
  // Also a datagram socket already connected to NOTIFY_SOCKET, after the listening sockets:
  // runtimes that cannot send to a Unix socket by name (Node) write(2) "READY=1" to it.
  int notify_fd = connected_notify_socket();
  if (notify_fd >= 0) {
    spec.env.push_back("LOOPFLEET_NOTIFY_FD=" + std::to_string(3 + spec.fds.size()));
    spec.fds.push_back(notify_fd);
  }
  // Every worker may beat with WATCHDOG=1 (systemd's way); a native one also gets a heartbeat
  // region, beaten by its loop and read here without asking it anything.
  if (cfg_.watchdog.count() > 0)
    spec.env.push_back("WATCHDOG_USEC=" + std::to_string(cfg_.watchdog.count() * 1000));
  auto beat = std::make_unique<heartbeat_map>();
  int heartbeat_fd = -1;
  if (cfg_.watchdog.count() > 0 || cfg_.max_requests > 0) {
    heartbeat_fd = ::memfd_create("loopfleet-heartbeat", MFD_CLOEXEC);
    void* mem = MAP_FAILED;
    if (heartbeat_fd >= 0 && ::ftruncate(heartbeat_fd, sizeof(heartbeat_region)) == 0)
      mem = ::mmap(nullptr, sizeof(heartbeat_region), PROT_READ | PROT_WRITE, MAP_SHARED, heartbeat_fd, 0);
    if (mem != MAP_FAILED) {
      beat->region = new (mem) heartbeat_region();
      spec.env.push_back("LOOPFLEET_HEARTBEAT_FD=" + std::to_string(3 + spec.fds.size()));
      spec.fds.push_back(heartbeat_fd);
    } else {
      log::warn(std::string("cannot create a heartbeat region: ") + std::strerror(errno));
    }
  }
  // A channel for connections the supervisor accepts on behalf of a stalled slot.
  int channel[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) == 0) {
    spec.env.push_back(std::string(handoff::fd_env) + "=" + std::to_string(3 + spec.fds.size()));
    spec.fds.push_back(channel[1]);
  }
  auto close_extra = [&] {
    if (notify_fd >= 0) ::close(notify_fd);
    if (heartbeat_fd >= 0) ::close(heartbeat_fd);
    if (channel[1] >= 0) ::close(channel[1]);
  };
  spawned s;
  try {
    s = spawn_worker(spec);
    close_extra();
  } catch (const std::exception& e) {
    close_extra();
    if (channel[0] >= 0) ::close(channel[0]);
    log::error("slot " + std::to_string(slot) + ": cannot start a worker: " + e.what());
    if (r == role::candidate) fail_reload(std::string("cannot start a worker: ") + e.what());
    else schedule_restart(slot, cfg_.backoff_max);
    return;
  }
  auto p = std::make_unique<process>(loop_);
  p->pid = s.pid;
  p->handoff = channel[0];
  p->slot = slot;
  p->generation = gen;
  p->r = r;
  std::string tag = "slot " + std::to_string(slot) + " pid " + std::to_string(s.pid) + " | ";
  p->heartbeat = std::move(beat);
  if (cfg_.max_requests > 0)
    p->request_limit = cfg_.max_requests +
                       std::uniform_int_distribution<int>(0, cfg_.max_requests_jitter)(rng_);
  p->out = std::make_shared<output_reader>(loop_, s.out, tag, nullptr);
  p->err = std::make_shared<output_reader>(loop_, s.err, tag, p->last_stderr);
  pid_t child = s.pid;
  p->err->on_stack = [this, child, slot](std::vector<std::string> lines) { on_stack(child, slot, std::move(lines)); };
  p->out->start();
  p->err->start();
  (r == role::candidate ? slots_[slot].candidate : slots_[slot].current) = s.pid;
  log::info("slot " + std::to_string(slot) + ": started pid " + std::to_string(s.pid) + " (generation " +
            std::to_string(gen) + ")");

  process& ref = *p;
  procs_[s.pid] = std::move(p);
  bool by_delay = cfg_.ready == readiness::started;
  ref.timer.expires_after(by_delay ? cfg_.ready_delay : cfg_.ready_timeout);
  pid_t pid = s.pid;
  ref.timer.async_wait([this, pid, by_delay](boost::system::error_code ec) {
    auto it = procs_.find(pid);
    if (ec || it == procs_.end() || it->second->ready) return;
    process& p = *it->second;
    if (by_delay) {
      mark_ready(p);
      return;
    }
    log::warn("slot " + std::to_string(p.slot) + ": pid " + std::to_string(pid) + " not ready after " +
              ms_text(cfg_.ready_timeout) + "; killing it");
    p.ready_timed_out = true;
    ::kill(pid, SIGKILL);
  });
}

void master::schedule_restart(int slot, milliseconds delay) {
  auto& s = slots_[slot];
  s.restart = std::make_unique<asio::steady_timer>(loop_, delay);
  s.restart->async_wait([this, slot](boost::system::error_code ec) {
    if (ec || stopping_ || slot >= workers_ || slots_[slot].current) return;
    start_worker(slot, role::current);
  });
}

void master::reap() {
  int status = 0;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == nats_pid_) on_nats_exit(status);
    else on_exit(pid, status);
  }
}

// The data dir belongs to the user nats-server runs as (--user, or ours): it writes there.
void master::prepare_nats_dir() {
  run_as owner = children_user(cfg_);
  std::string chown = "chown -R " + std::to_string(owner.uid) + ":" + std::to_string(owner.gid) + " " + cfg_.data_dir;
  std::string fix = chown + " if its jobs are yours, or choose another --data-dir";
  if (auto err = ensure_private_dir("data directory", cfg_.data_dir, owner, fix)) throw startup_error(*err);
  // A store written by another user earlier (a run without --user) is not nats-server's now.
  std::string store = cfg_.data_dir + "/jetstream";
  if (struct stat st{}; ::lstat(store.c_str(), &st) == 0 && st.st_uid != owner.uid)
    throw startup_error("JetStream store " + store + " belongs to uid " + std::to_string(st.st_uid) +
                        ", but nats-server runs as uid " + std::to_string(owner.uid) + ": " + fix);
}

void master::start_nats() {
  std::string conf = cfg_.data_dir + "/nats.conf";
  if (auto err = write_private_file(conf, cluster::server_config({cfg_.node, cfg_.nats_listen, cfg_.cluster_listen,
                                                                   cfg_.join, cfg_.data_dir + "/jetstream",
                                                                   cfg_.max_store}),
                                    children_user(cfg_))) {
    log::error("cluster: " + *err);
    return;
  }
  spawn_spec spec;
  spec.argv = {find_executable("nats-server"), "-c", conf};
  if (cfg_.run_user) spec.user = &*cfg_.run_user;
  spawned s;
  try {
    s = spawn_worker(spec);
  } catch (const std::exception& e) {
    log::error(std::string("cluster: cannot start nats-server: ") + e.what());
    return;
  }
  nats_pid_ = s.pid;
  nats_started_ = clock::now();
  nats_out_ = std::make_shared<output_reader>(loop_, s.out, "nats pid " + std::to_string(s.pid) + " | ", nullptr);
  nats_err_ = std::make_shared<output_reader>(loop_, s.err, "nats pid " + std::to_string(s.pid) + " | ", nullptr);
  nats_out_->start();
  nats_err_->start();
  log::info("cluster: started nats-server pid " + std::to_string(s.pid) + " for node " + cfg_.node + " (client " +
            cfg_.nats_listen + ", routes " + cfg_.cluster_listen + ", " + std::to_string(cfg_.join.size()) +
            " peers to join)");
  wait_for_nats(0);
}

// nats-server sends no readiness signal: it is ready when its client port accepts.
void master::wait_for_nats(int attempt) {
  nats_timer_.expires_after(std::chrono::milliseconds(50));
  nats_timer_.async_wait([this, attempt](boost::system::error_code ec) {
    if (ec || stopping_ || !nats_pid_) return;
    auto parsed = parse_listen_address(cfg_.nats_listen);
    const auto& a = std::get<listen_address>(parsed);
    asio::ip::tcp::socket probe(loop_);
    boost::system::error_code cec;
    probe.connect({asio::ip::make_address(a.host == "0.0.0.0" ? "127.0.0.1" : a.host, cec), a.port}, cec);
    if (cec) {
      if (attempt == 200) log::warn("cluster: nats-server is not accepting on " + cfg_.nats_listen + " after 10 s");
      return wait_for_nats(attempt + 1);
    }
    bool first = !nats_ready_;
    nats_ready_ = true;
    log::info("cluster: nats-server ready on " + cfg_.nats_listen);
    if (first) {
      start_cluster_agent();
      for (int i = 0; i < workers_; ++i)
        if (!slots_[i].current) start_worker(i, role::current);
    }
  });
}

void master::on_nats_exit(int status) {
  if (nats_out_) nats_out_->drain_now();
  if (nats_err_) nats_err_->drain_now();
  auto uptime = duration_cast<milliseconds>(clock::now() - nats_started_);
  nats_pid_ = 0;
  if (stopping_) {
    log::info("cluster: nats-server exited: " + describe_exit(status));
    if (procs_.empty()) finish();
    return;
  }
  backoff_policy policy{cfg_.backoff_initial, cfg_.backoff_max, cfg_.healthy_after, cfg_.degraded_after};
  auto d = decide_restart(policy, nats_failures_, uptime);
  nats_failures_ = d.failures;
  ++nats_restarts_;
  log::warn("cluster: nats-server exited: " + describe_exit(status) + " after " + ms_text(uptime) + "; restarting in " +
            ms_text(d.delay));
  nats_timer_.expires_after(d.delay);
  nats_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !stopping_) start_nats();
  });
}

void master::start_cluster_agent() {
  agent_ = std::make_unique<cluster::node_agent>(
      nats_url(cfg_), cfg_.node,
      cluster::replica_settings{cfg_.replicas > 0 ? cfg_.replicas : cluster::replicas_for(cfg_.join.size()),
                                cfg_.replicas_wait});
  publish_heartbeat();
}

void master::publish_heartbeat() {
  if (!agent_) return;
  std::uint64_t load = 0, requests = 0;
  int ready = 0;
  for (int i = 0; i < workers_; ++i) {
    pid_t pid = slots_[i].current;
    if (!pid || !procs_.count(pid)) continue;
    const process& p = *procs_.at(pid);
    ready += p.ready ? 1 : 0;
    if (auto beat = p.beating()) {
      load += beat->in_flight;
      requests += beat->requests;
    }
  }
  auto now_ms = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  json::object o{{"node", cfg_.node},       {"pid", ::getpid()},    {"nats", nats_url(cfg_)},
                 {"workers", workers_},     {"ready", ready},       {"load", load},
                 {"requests", requests},    {"ts_ms", now_ms},      {"listen", sockets_->describe()}};
  agent_->update(json::serialize(o));
}

void master::on_exit(pid_t pid, int status) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  std::unique_ptr<process> p = std::move(it->second);
  procs_.erase(it);
  p->out->drain_now();
  p->err->drain_now();
  auto uptime = duration_cast<milliseconds>(clock::now() - p->started);
  std::string reason = p->ready_timed_out ? "not ready within " + ms_text(cfg_.ready_timeout)
                       : p->stalled     ? "stalled, killed by the watchdog"
                                        : describe_exit(status);
  std::string who = "slot " + std::to_string(p->slot) + ": pid " + std::to_string(pid);
  std::string line = who + " exited: " + describe_exit(status) + " after " + ms_text(uptime);
  if (p->r == role::retiring || p->r == role::rejected || stopping_) log::info(line);
  else log::warn(line);

  auto& slot = slots_[p->slot];
  slot.requests_before += p->requests();
  if (p->r == role::candidate) {
    slot.candidate = 0;
    std::string last = p->last_stderr->empty() ? "" : "; last stderr line: " + p->last_stderr->back();
    if (reload_) {
      fail_reload("slot " + std::to_string(p->slot) + ": the new worker " + reason + " before READY" + last);
    } else {
      log::error("slot " + std::to_string(p->slot) + ": recycling failed, the successor " + reason +
                 " before READY" + last + "; the current worker keeps serving");
      slot.recycle_after = clock::now() + std::chrono::seconds(10);
    }
  } else if (p->r == role::current) {
    slot.current = 0;
    slot.last_exit = reason;
    if (!p->ready && !p->last_stderr->empty()) slot.last_error = p->last_stderr->back();
    update_steering();
    if (!stopping_ && p->slot < workers_) {
      if (!ever_ready_ && !p->ready && first_start_failed(*p, reason)) return;
      backoff_policy policy{cfg_.backoff_initial, cfg_.backoff_max, cfg_.healthy_after, cfg_.degraded_after};
      auto d = decide_restart(policy, slot.failures, uptime);
      slot.failures = d.failures;
      bool newly_degraded = d.degraded && !slot.degraded;
      slot.degraded = d.degraded;
      ++slot.restarts;
      ++slot.restarts_by_reason[p->ready_timed_out ? "not_ready"
                                : p->stalled       ? "stall"
                                : WIFSIGNALED(status) ? "crash"
                                                      : "exit"];
      if (newly_degraded)
        log::warn("slot " + std::to_string(p->slot) + " degraded: " + std::to_string(d.failures) +
                  " failed runs in a row; the other slots keep serving; retrying with backoff up to " +
                  ms_text(cfg_.backoff_max));
      log::info("slot " + std::to_string(p->slot) + ": restarting in " + ms_text(d.delay) + " (failure " +
                std::to_string(d.failures) + " in a row)");
      schedule_restart(p->slot, d.delay);
    }
  }
  if (stopping_ && procs_.empty()) finish();
}

bool master::first_start_failed(const process& p, const std::string& reason) {
  slots_[p.slot].failed_first_start = true;
  for (int i = 0; i < workers_; ++i)
    if (!slots_[i].failed_first_start) return false;  // another slot may still come up
  std::string text = "loopfleet: error: no worker became ready (" + reason + "): check the command and its output";
  if (!p.last_stderr->empty()) {
    text += "; its last stderr lines:\n";
    for (const auto& l : *p.last_stderr) text += "  " + l + "\n";
  } else {
    text += "\n";
  }
  fatal_ = text;
  exit_code_ = 1;
  stop(true);
  return true;
}

void master::read_notify() {
  notify_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;
    for (;;) {
      char data[4096];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
      iovec iov{data, sizeof data - 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(notify_->native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) break;
      pid_t sender = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
          ucred cred{};
          std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
          sender = cred.pid;
        }
      on_notify(sender, std::string_view(data, static_cast<std::size_t>(n)));
    }
    read_notify();
  });
}

void master::on_notify(pid_t pid, std::string_view message) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;  // only the worker itself speaks for its slot
  process& p = *it->second;
  notify_message m = parse_notify(message);
  if (m.status) p.status = std::string(*m.status);
  if (m.watchdog) p.last_ping_ns = monotonic_ns();
  if (m.handoff) p.takes_connections = true;
  if (m.ready && !p.ready) mark_ready(p);
}

void master::mark_ready(process& p) {
  p.ready = true;
  p.timer.cancel();
  auto took = duration_cast<milliseconds>(clock::now() - p.started);
  log::info("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " ready in " + ms_text(took) +
            " (generation " + std::to_string(p.generation) + ")");
  if (p.r == role::current) {
    ever_ready_ = true;
    update_steering();
  } else if (p.r == role::candidate && reload_) {
    for (const auto& s : slots_)
      if (s.candidate && !procs_.at(s.candidate)->ready) return;
    commit_reload();
  } else if (p.r == role::candidate) {
    // A recycled slot: the successor serves, then the old worker drains.
    auto& s = slots_[p.slot];
    pid_t old = std::exchange(s.current, p.pid);
    s.candidate = 0;
    p.r = role::current;
    ++s.recycles;
    if (old && procs_.count(old)) {
      log::info("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " took over from pid " +
                std::to_string(old) + ", which drains");
      retire(*procs_.at(old), SIGTERM, cfg_.graceful_timeout);
    }
    update_steering();
  }
}

void master::retire(process& p, int sig, milliseconds grace) {
  if (p.r != role::rejected) p.r = role::retiring;
  ::kill(p.pid, sig);
  p.timer.cancel();
  p.timer.expires_after(grace);
  pid_t pid = p.pid;
  p.timer.async_wait([this, pid](boost::system::error_code ec) {
    if (ec || !procs_.count(pid)) return;
    log::warn("pid " + std::to_string(pid) + " still running after its stop deadline; SIGKILL");
    ::kill(pid, SIGKILL);
  });
}

void master::update_steering() {
  if (cfg_.distribution != distribution::reuseport) return;
  std::vector<int> serving;
  for (int i = 0; i < workers_; ++i) {
    pid_t pid = slots_[i].current;
    if (!pid || !procs_.count(pid)) continue;
    const process& p = *procs_.at(pid);
    // A loop that beats late accepts nothing: its slot's queue must stop growing.
    if (p.serves()) serving.push_back(i);
  }
  // With nobody serving, spread over every slot: the connections queue until workers return.
  if (serving.empty())
    for (int i = 0; i < workers_; ++i) serving.push_back(i);
  sockets_->steer(serving);
}

// How often the watchdog looks. Detection comes at most this long after --watchdog expires,
// and a connection queued on a silent slot waits at most this long after it is seen silent.
constexpr auto check_interval = std::chrono::milliseconds(25);
// A native loop beats every 50 ms; this late, stop sending it new connections.
constexpr std::int64_t suspect_after_ns = 250'000'000;
// Two beats missed: what waits in its queue is handed to serving workers.
constexpr std::int64_t queue_late_ns = 2 * std::chrono::nanoseconds(heartbeat_interval).count();

void master::arm_checks() {
  checks_.expires_after(check_interval);
  checks_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    check_workers();
    arm_checks();
  });
}

void master::check_workers() {
  std::int64_t now = monotonic_ns();
  std::int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.watchdog).count();
  bool rss_due = cfg_.max_memory > 0 && clock::now() >= next_rss_check_;
  if (rss_due) next_rss_check_ = clock::now() + std::chrono::milliseconds(500);
  bool steer = false;
  std::vector<std::pair<int, std::string>> to_recycle;
  std::vector<std::pair<pid_t, std::int64_t>> to_stall;
  for (auto& [pid, pp] : procs_) {
    process& p = *pp;
    if (p.r != role::current || !p.ready || p.stalled) continue;
    auto beat = p.beating(now);
    if (limit > 0) {
      if (beat || p.last_ping_ns > 0) {
        std::int64_t silent = beat ? beat->age_ns : now - p.last_ping_ns;
        bool suspect = beat && silent > suspect_after_ns;
        if (suspect != p.suspect) {
          p.suspect = suspect;
          steer = true;
        }
        if (silent > limit) to_stall.emplace_back(pid, silent);
      }
    }
    if (p.request_limit && beat && beat->requests >= p.request_limit)
      to_recycle.emplace_back(p.slot, "served " + std::to_string(beat->requests) +
                                          " requests (--max-requests)");
    if (rss_due) {
      long mib = rss_kib(pid) / 1024;
      if (mib > cfg_.max_memory)
        to_recycle.emplace_back(p.slot, "RSS " + std::to_string(mib) + " MiB over --max-memory " +
                                            std::to_string(cfg_.max_memory));
    }
  }
  if (steer) update_steering();
  if (++heartbeat_ticks_ % (500 / check_interval.count()) == 0) publish_heartbeat();  // every half second
  for (auto& [pid, silent] : to_stall)
    if (procs_.count(pid)) on_stall(*procs_.at(pid), silent);
  for (auto& [slot, why] : to_recycle) recycle(slot, why);
  hand_over_queues(now);
}

void master::hand_over_queues(std::int64_t now) {
  if (cfg_.distribution != distribution::reuseport) return;  // shared: every worker takes from one queue
  auto view = [&](int slot) {
    queue_view v;
    auto it = procs_.find(slots_[slot].current);
    if (!slots_[slot].current || it == procs_.end()) return v;
    const process& p = *it->second;
    v.worker = true;
    v.ready = p.ready;
    v.stalled = p.stalled;
    if (auto beat = p.beating(now)) v.silent_ns = beat->age_ns;
    return v;
  };
  std::vector<int> targets;
  std::vector<std::pair<int, queue_view>> needy;  // with why, for the log
  for (int i = 0; i < workers_; ++i) {
    queue_view v = view(i);
    if (queue_needs_taking(v, queue_late_ns)) {
      needy.emplace_back(i, v);
    } else {
      const process& p = *procs_.at(slots_[i].current);
      if (p.serves() && p.takes_connections && p.handoff >= 0) targets.push_back(p.handoff);
    }
  }
  if (targets.empty()) return;
  if (needy.empty() && handoff_.kept()) handoff_.take({}, targets);
  for (const auto& [i, v] : needy) {
    std::size_t n = handoff_.take(sockets_->own_queues(i), targets);
    if (n == 0) continue;
    auto& s = slots_[i];
    s.handed_over += n;
    if (clock::now() - s.handoff_logged > std::chrono::seconds(1)) {
      s.handoff_logged = clock::now();
      log::info("slot " + std::to_string(i) + ": handed " + std::to_string(n) +
                " queued connection(s) to the serving workers (" +
                (!v.worker ? "no worker" : !v.ready ? "its worker is not ready" : v.stalled ? "its loop stalled"
                                                                                          : "its loop is silent") +
                "); " + std::to_string(s.handed_over) + " so far");
    }
  }
}

void master::on_stall(process& p, std::int64_t silent_ns) {
  p.stalled = true;
  ++slots_[p.slot].stalls;
  update_steering();
  auto beat = p.beating();
  bool ask = beat && beat->loop_tid && beat->stack_signal;  // the region may not name a usable thread
  log::warn("slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) + " loop stalled: no heartbeat for " +
            std::to_string(silent_ns / 1000000) + " ms (--watchdog " + ms_text(cfg_.watchdog) + ")" +
            (ask ? "; asking for its stack, then replacing it" : "; replacing it"));
  if (!ask) {
    ::kill(p.pid, SIGKILL);
    return;
  }
  // The stack signal goes to the loop thread itself, not to whichever thread the kernel picks.
  p.err->stack_asked = true;
  ::syscall(SYS_tgkill, p.pid, beat->loop_tid, beat->stack_signal);
  // Killed as soon as its stack is read (on_stack); this is for a worker that prints none.
  // An interpreter on a loaded machine may take more than 100 ms to be scheduled for it.
  p.timer.cancel();
  p.timer.expires_after(std::chrono::milliseconds(500));
  pid_t pid = p.pid;
  p.timer.async_wait([pid](boost::system::error_code ec) {
    if (!ec) ::kill(pid, SIGKILL);
  });
}

void master::on_stack(pid_t pid, int slot, std::vector<std::string> lines) {
  auto frames = parse_stack(lines);
  std::string who = "slot " + std::to_string(slot) + ": pid " + std::to_string(pid);
  log::warn(who + " stack of the stalled loop:");
  for (std::size_t i = 0; i < frames.size(); ++i) log::warn("  #" + std::to_string(i) + " " + frames[i].text);
  std::string culprit = blocking_frame(frames);
  log::warn(who + " was blocked in " + (culprit.empty() ? "an unnamed frame (see the stack above)" : culprit));
  if (auto it = procs_.find(pid); it != procs_.end() && it->second->stalled) ::kill(pid, SIGKILL);
}

void master::recycle(int slot, const std::string& why) {
  auto& s = slots_[slot];
  if (reload_ || stopping_ || s.candidate || clock::now() < s.recycle_after || slot >= workers_) return;
  log::info("slot " + std::to_string(slot) + ": recycling pid " + std::to_string(s.current) + ": " + why +
            "; starting its successor");
  start_worker(slot, role::candidate);
}

void master::begin_reload(done_fn done) {
  if (stopping_) return done(false, "the instance is stopping");
  if (reload_) return done(false, "a reload is already in progress");
  // Counted once per attempt, whichever way it ends: refused, rolled back or committed.
  done = [this, done = std::move(done)](bool ok, std::string message) {
    ++(ok ? reloads_ok_ : reloads_failed_);
    done(ok, std::move(message));
  };
  config fresh;
  if (auto err = reload_config(cfg_, args_, fresh)) {
    log::error("reload refused: " + *err);
    return done(false, *err);
  }
  if (fresh.listen != cfg_.listen || fresh.distribution != cfg_.distribution || fresh.backlog != cfg_.backlog ||
      fresh.admin != cfg_.admin) {
    std::string err = "listen addresses, distribution, backlog and the admin address change only with a restart";
    log::error("reload refused: " + err);
    return done(false, err);
  }
  if (find_executable(fresh.command.front()).empty()) {
    std::string err = "command '" + fresh.command.front() + "' not found or not executable";
    log::error("reload refused: " + err);
    return done(false, err);
  }
  std::string from;
  int n = resolve_workers(fresh, from);
  try {
    sockets_->ensure_slots(n);
  } catch (const startup_error& e) {
    return done(false, e.what());
  }
  for (auto& s : slots_)  // a recycle in progress gives way to the reload
    if (s.candidate && procs_.count(s.candidate)) {
      procs_.at(s.candidate)->r = role::rejected;
      ::kill(std::exchange(s.candidate, 0), SIGKILL);
    }
  reload_ = reload_state{generation_ + 1, cfg_, workers_, std::move(from), {std::move(done)}};
  generation_ = reload_->generation;
  cfg_ = std::move(fresh);
  if (static_cast<int>(slots_.size()) < n) slots_.resize(n);
  log::info("reload: starting generation " + std::to_string(generation_) + " with " + std::to_string(n) +
            " workers; the old ones serve until every new one is ready");
  for (int i = 0; i < n; ++i) {
    if (slots_[i].restart) slots_[i].restart->cancel();
    start_worker(i, role::candidate);
    if (!reload_) return;  // a start failure already rolled back
  }
}

void master::commit_reload() {
  int n = 0;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i)
    if (slots_[i].candidate) n = i + 1;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    auto& s = slots_[i];
    if (s.current && procs_.count(s.current)) retire(*procs_.at(s.current), SIGTERM, cfg_.graceful_timeout);
    s.current = 0;
    if (s.candidate) {
      procs_.at(s.candidate)->r = role::current;
      s.current = std::exchange(s.candidate, 0);
      s.failures = 0;
      s.degraded = false;
      s.failed_first_start = false;
    }
  }
  workers_ = n;
  workers_from_ = std::move(reload_->workers_from);
  ever_ready_ = true;
  update_steering();
  std::string msg = "generation " + std::to_string(generation_) + " serving with " + std::to_string(n) +
                    " workers; the previous workers are draining";
  log::info("reload: " + msg);
  auto waiters = std::move(reload_->waiters);
  reload_.reset();
  for (auto& w : waiters) w(true, msg);
}

void master::fail_reload(const std::string& reason) {
  if (!reload_) return;
  for (auto& s : slots_) {
    if (!s.candidate) continue;
    if (auto it = procs_.find(s.candidate); it != procs_.end()) {
      it->second->r = role::rejected;
      ::kill(s.candidate, SIGKILL);
    }
    s.candidate = 0;
  }
  cfg_ = reload_->old_cfg;
  workers_ = reload_->old_workers;
  // Slots whose restart the reload had cancelled get their old-generation worker back.
  for (int i = 0; i < workers_; ++i)
    if (!slots_[i].current) schedule_restart(i, cfg_.backoff_initial);
  std::string msg = "reload to generation " + std::to_string(reload_->generation) +
                    " rolled back, the previous generation keeps serving: " + reason;
  log::error(msg);
  auto waiters = std::move(reload_->waiters);
  reload_.reset();
  for (auto& w : waiters) w(false, msg);
}

std::optional<std::string> master::scale(int n) {
  if (n < 1 || n > 1024) return "worker count must be from 1 to 1024";
  if (reload_) return "a reload is in progress; scale after it";
  if (stopping_) return "the instance is stopping";
  try {
    sockets_->ensure_slots(n);
  } catch (const startup_error& e) {
    return e.what();
  }
  int old = workers_;
  workers_ = n;
  workers_from_ = "loopfleet scale";
  cfg_.workers = n;
  if (static_cast<int>(slots_.size()) < n) slots_.resize(n);
  for (int i = old; i < n; ++i) {
    slots_[i].failures = 0;
    slots_[i].degraded = false;
    if (!slots_[i].current) start_worker(i, role::current);
  }
  for (int i = n; i < old; ++i) {
    if (slots_[i].restart) slots_[i].restart->cancel();
    if (slots_[i].current && procs_.count(slots_[i].current)) retire(*procs_.at(slots_[i].current), SIGTERM, cfg_.graceful_timeout);
    slots_[i].current = 0;
  }
  update_steering();
  log::info("scaled from " + std::to_string(old) + " to " + std::to_string(n) + " workers");
  return std::nullopt;
}

void master::stop(bool fast) {
  if (stopping_ && !fast) return;
  stopping_ = true;
  if (reload_) fail_reload("the instance is stopping");
  // Behind HAProxy: the agent check now says "drain". The workers keep serving while the
  // balancers notice (their agent-inter) and send new connections to other nodes; stopping
  // them at once would reset what the balancers still send here.
  if (!fast && agent_check_ && cfg_.front_drain.count() > 0) {
    log::info("telling the front to drain; the workers stop in " + ms_text(cfg_.front_drain));
    front_drain_.expires_after(cfg_.front_drain);
    front_drain_.async_wait([this](boost::system::error_code ec) {
      if (!ec) stop_workers(false);
    });
    return;
  }
  front_drain_.cancel();
  stop_workers(fast);
}

void master::stop_workers(bool fast) {
  for (auto& s : slots_)
    if (s.restart) s.restart->cancel();
  // A fast stop still bounds the wait: SIGQUIT, then SIGKILL after a second.
  for (auto& [pid, p] : procs_)
    retire(*p, fast ? SIGQUIT : SIGTERM, fast ? milliseconds(1000) : cfg_.graceful_timeout);
  if (procs_.empty()) finish();
}

void master::finish() {
  // The node's NATS server goes last: draining workers may still be acknowledging jobs.
  if (nats_pid_) {
    ::kill(nats_pid_, SIGTERM);
    return;  // finish() again from on_nats_exit
  }
  boost::system::error_code ignored;
  front_drain_.cancel();
  if (agent_check_) agent_check_->close(ignored);
  if (control_) {
    control_->close(ignored);
    ::unlink(cfg_.control.c_str());
  }
  log::info("stopped");
  loop_.stop();
}

json::object master::status_json() {
  json::object o;
  o["name"] = cfg_.name;
  o["pid"] = ::getpid();
  o["generation"] = generation_;
  o["workers"] = workers_;
  o["workers_from"] = workers_from_;
  o["distribution"] = cfg_.distribution == distribution::reuseport ? "reuseport" : "shared";
  o["listen"] = sockets_->describe();
  o["uptime_s"] = duration_cast<milliseconds>(clock::now() - started_).count() / 1000.0;
  o["reloading"] = reload_.has_value();
  o["reloads"] = json::object{{"ok", reloads_ok_}, {"failed", reloads_failed_}};
  o["workers_serving"] = serving_workers();
  o["stopping"] = stopping_;
  if (agent_check_) {
    std::string reply = agent_check_reply(workers_, serving_workers(), stopping_);
    o["agent_check"] = json::object{{"address", cfg_.agent_check}, {"reply", reply.substr(0, reply.size() - 1)}};
  }
  json::array slots;
  auto now = clock::now();
  for (int i = 0; i < workers_; ++i) {
    auto& s = slots_[i];
    json::object j;
    j["slot"] = i;
    const process* p = s.current && procs_.count(s.current) ? procs_.at(s.current).get() : nullptr;
    std::string state;
    bool degraded = s.degraded;
    if (p) {
      auto up = duration_cast<milliseconds>(now - p->started);
      if (up >= cfg_.healthy_after) degraded = false;  // a healthy minute ends the crash loop
      state = p->ready ? "ready" : "starting";
      j["pid"] = p->pid;
      j["generation"] = p->generation;
      j["uptime_s"] = up.count() / 1000.0;
      j["rss_kib"] = rss_kib(p->pid);
      j["cpu_s"] = cpu_seconds(p->pid);
      j["status"] = p->status;
      json::array helpers;  // offload helper processes the worker forked
      for (pid_t h : child_pids(p->pid)) helpers.push_back(json::object{{"pid", h}, {"rss_kib", rss_kib(h)}});
      j["helpers"] = std::move(helpers);
      if (auto beat = p->beating()) {
        j["heartbeat_age_ms"] = beat->age_ns / 1000000;
        j["lag_p50_ms"] = beat->lag_p50_us / 1000.0;
        j["lag_p99_ms"] = beat->lag_p99_us / 1000.0;
        j["lag_max_ms"] = beat->lag_max_us / 1000.0;
        j["connections"] = beat->connections;
        j["in_flight"] = beat->in_flight;
        j["requests"] = beat->requests;
      } else if (p->last_ping_ns) {
        j["heartbeat_age_ms"] = (monotonic_ns() - p->last_ping_ns) / 1000000;
      }
      if (p->stalled) state = "stalled";
    } else {
      state = degraded ? "degraded" : "restarting";
      j["pid"] = nullptr;
    }
    if (degraded && p && !p->ready) state = "degraded";
    j["state"] = state;
    j["restarts"] = s.restarts;
    j["restarts_by_reason"] = json::value_from(s.restarts_by_reason);
    j["stalls"] = s.stalls;
    j["recycles"] = s.recycles;
    // Only where it is known: a worker without a heartbeat region counts nothing we can read.
    if (s.requests_before > 0 || (p && p->beating())) j["requests_total"] = slot_requests(i);
    if (cfg_.distribution == distribution::reuseport) {
      j["queued"] = sockets_->queued(i);
      j["handed_over"] = s.handed_over;
    }
    j["failures_in_a_row"] = s.failures;
    j["last_exit"] = s.last_exit;
    j["last_error"] = s.last_error;
    slots.push_back(std::move(j));
  }
  o["slots"] = std::move(slots);
  json::array draining;
  for (auto& [pid, p] : procs_)
    if (p->r == role::retiring) draining.push_back(json::object{{"pid", pid}, {"slot", p->slot}, {"generation", p->generation}});
  o["draining"] = std::move(draining);
  if (cfg_.cluster)
    o["cluster"] = json::object{{"node", cfg_.node},
                                {"nats", nats_url(cfg_)},
                                {"nats_pid", nats_pid_ ? json::value(nats_pid_) : json::value(nullptr)},
                                {"nats_ready", nats_ready_},
                                {"nats_restarts", nats_restarts_},
                                {"peers", json::value_from(cfg_.join)},
                                {"nodes", agent_ ? agent_->nodes_up() : 0},
                                {"streams", agent_ ? cluster::durability_json(agent_->streams()) : json::array()}};
  return o;
}

std::uint64_t master::slot_requests(int slot) const {
  std::uint64_t n = slots_[slot].requests_before;
  for (const auto& [pid, p] : procs_)  // the current worker, and a retiring or candidate one
    if (p->slot == slot) n += p->requests();
  return n;
}

void master::open_agent_check() {
  if (cfg_.agent_check.empty()) return;
  auto address = std::get<listen_address>(parse_listen_address(cfg_.agent_check));  // checked with the config
  listener l = bind_listener(address, "--agent-check " + cfg_.agent_check, 64);
  agent_check_ = std::make_unique<asio::ip::tcp::acceptor>(loop_);
  agent_check_->assign(l.family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), l.fd);
}

int master::serving_workers() const {
  int n = 0;
  for (int i = 0; i < workers_; ++i) {
    auto it = procs_.find(slots_[i].current);
    if (slots_[i].current && it != procs_.end() && it->second->serves()) ++n;
  }
  return n;
}

// One line per connection, then close: what HAProxy's agent check expects.
void master::accept_agent_check() {
  if (!agent_check_) return;
  agent_check_->async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {  // out of descriptors, say: try again shortly instead of spinning
      auto retry = std::make_shared<asio::steady_timer>(loop_, std::chrono::milliseconds(100));
      retry->async_wait([this, retry](boost::system::error_code e) {
        if (!e && agent_check_ && agent_check_->is_open()) accept_agent_check();
      });
      return;
    }
    {
      auto client = std::make_shared<asio::ip::tcp::socket>(std::move(s));
      auto text = std::make_shared<std::string>(agent_check_reply(workers_, serving_workers(), stopping_));
      asio::async_write(*client, asio::buffer(*text), [client, text](boost::system::error_code, std::size_t) {
        boost::system::error_code ignored;
        client->shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
      });
    }
    accept_agent_check();
  });
}

void master::accept_control() {
  control_->async_accept([this](boost::system::error_code ec, asio::local::stream_protocol::socket s) {
    if (ec) return;
    auto client = std::make_shared<asio::local::stream_protocol::socket>(std::move(s));
    auto buf = std::make_shared<asio::streambuf>(65536);
    asio::async_read_until(*client, *buf, '\n', [this, client, buf](boost::system::error_code ec, std::size_t n) {
      if (ec) return;
      std::string line(asio::buffers_begin(buf->data()), asio::buffers_begin(buf->data()) + n);
      handle_control(client, std::move(line));
    });
    accept_control();
  });
}

void master::handle_control(std::shared_ptr<asio::local::stream_protocol::socket> client, std::string line) {
  auto reply = [client](json::object o) {
    auto text = std::make_shared<std::string>(json::serialize(o) + "\n");
    asio::async_write(*client, asio::buffer(*text), [client, text](boost::system::error_code, std::size_t) {});
  };
  auto ok = [&](bool good, std::string message) {
    json::object o{{"ok", good}};
    o[good ? "message" : "error"] = std::move(message);
    return o;
  };
  auto parsed = parse_control_request(line);
  if (auto* err = std::get_if<std::string>(&parsed)) return reply(ok(false, std::move(*err)));
  const control_request& req = std::get<control_request>(parsed);
  switch (req.command) {
    case control_request::kind::status: {
      json::object o = status_json();
      o["ok"] = true;
      return reply(std::move(o));
    }
    case control_request::kind::reload:
      log::info("reload requested over the control socket");
      return begin_reload([reply, ok](bool good, std::string message) { reply(ok(good, std::move(message))); });
    case control_request::kind::stop:
      log::info("stop requested over the control socket");
      reply(ok(true, "stopping"));
      return asio::post(loop_, [this] { stop(false); });
    case control_request::kind::scale: {
      auto err = scale(req.workers);
      return reply(err ? ok(false, *err) : ok(true, "scaled to " + std::to_string(req.workers) + " workers"));
    }
  }
}

}  // namespace

int run(config cfg, std::vector<std::string> args) {
  master m(std::move(cfg), std::move(args));
  return m.run();
}

}  // namespace loopfleet::supervisor
