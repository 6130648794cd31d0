// The crash-isolated process pool behind include/loopfleet/offload.hpp (helper processes the
// worker forks and owns, the frame format on their socketpairs, what a helper's death or time
// limit means for its call), and the pools' sizes. The thread pool is thread_pool.cpp.
#include <loopfleet/offload.hpp>

#include "runtime/log.hpp"
#include "runtime/offload_pools.hpp"
#include "runtime/one_shot.hpp"
#include "runtime/spawn.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <system_error>
#include <vector>

namespace loopfleet {
namespace {

namespace asio = boost::asio;

// --- sizing ---

std::mutex config_mutex;
offload_options config;
bool config_frozen = false;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = v ? std::atoi(v) : 0;
  return n > 0 ? n : fallback;
}

int default_share() {
  cpu_set_t set;
  int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return std::max(1, cpus / env_int("LOOPFLEET_WORKERS", 1));
}

offload_options frozen_config() {
  std::lock_guard lock(config_mutex);
  if (!config_frozen) {
    config_frozen = true;
    if (config.threads <= 0) config.threads = env_int("LOOPFLEET_OFFLOAD_THREADS", default_share());
    if (config.processes <= 0) config.processes = env_int("LOOPFLEET_OFFLOAD_PROCESSES", default_share());
    if (config.queue == 0) config.queue = static_cast<std::size_t>(env_int("LOOPFLEET_OFFLOAD_QUEUE", 1024));
  }
  return config;
}

// --- process pool: wire format on a socketpair ---
// request:  u32 name length, u64 input length, name, input
// response: u8 status (0 ok, 1 the task threw, 2 unknown task), u64 length, data

enum : std::uint8_t { reply_ok = 0, reply_threw = 1, reply_unknown = 2 };

std::map<std::string, process_task, std::less<>>& registry() {
  static std::map<std::string, process_task, std::less<>> tasks;
  return tasks;
}

// All `n` bytes through `io` (::read or ::write), across EINTR and short transfers; false
// once the other end is gone.
template <class Io, class Byte>
bool whole(Io io, int fd, Byte* p, std::size_t n) {
  while (n) {
    ssize_t r = io(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool read_full(int fd, void* buf, std::size_t n) { return whole(::read, fd, static_cast<char*>(buf), n); }
bool write_full(int fd, const void* buf, std::size_t n) { return whole(::write, fd, static_cast<const char*>(buf), n); }

// Waking a sleeping process on another CPU costs tens of microseconds on a virtual machine,
// more than a short task itself. So both ends poll briefly before they sleep: the helper for
// the next request after a reply, the loop for a reply it expects soon (see serve()).
constexpr auto spin_budget = std::chrono::microseconds(50);

void spin_until_readable(int fd, std::chrono::microseconds budget) {
  auto until = std::chrono::steady_clock::now() + budget;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 0) == 0 && std::chrono::steady_clock::now() < until) {
  }
}

// The helper process: a plain blocking loop, one task at a time, until the worker goes.
[[noreturn]] void helper_main(int fd) {
  for (;;) {
    spin_until_readable(fd, spin_budget);
    std::uint32_t name_len = 0;
    std::uint64_t input_len = 0;
    if (!read_full(fd, &name_len, sizeof name_len) || !read_full(fd, &input_len, sizeof input_len)) ::_exit(0);
    std::string name(name_len, '\0'), input(input_len, '\0');
    if (!read_full(fd, name.data(), name_len) || !read_full(fd, input.data(), input_len)) ::_exit(0);
    std::uint8_t status = reply_ok;
    std::string out;
    auto it = registry().find(name);
    if (it == registry().end()) {
      status = reply_unknown;
    } else {
      try {
        out = it->second(input);
      } catch (const std::exception& e) {
        status = reply_threw;
        out = e.what();
      } catch (...) {
        status = reply_threw;
        out = "a non-std exception";
      }
    }
    std::uint64_t len = out.size();
    if (!write_full(fd, &status, 1) || !write_full(fd, &len, sizeof len) || !write_full(fd, out.data(), len))
      ::_exit(0);
  }
}

struct call {
  std::string name, input;
  process_call_options options;
  struct helper* on = nullptr;  // the helper running it, once sent
  detail::one_shot<std::exception_ptr, std::string> done;

  void complete(std::string out) { done.complete(nullptr, std::move(out)); }
  void fail(offload_error::reason r, const std::string& message) {
    done.complete(std::make_exception_ptr(offload_error(r, message)), {});
  }
};

struct helper {
  explicit helper(const asio::any_io_executor& ex) : sock(ex), limit(ex) {}
  pid_t pid = -1;
  asio::local::stream_protocol::socket sock;
  asio::steady_timer limit;
  std::shared_ptr<call> current;
  bool timed_out = false;
  bool killed_by_cancel = false;
};

// One pool per loop, as an Asio service: it lives and dies with its io_context, and its
// helpers are killed when the loop is destroyed (and by PDEATHSIG when the worker dies).
class process_pool : public asio::execution_context::service {
 public:
  using key_type = process_pool;
  static inline asio::execution_context::id id;

  explicit process_pool(asio::execution_context& ctx) : service(ctx) {}

  static process_pool& on(const asio::any_io_executor& ex) {
    auto& pool = asio::use_service<process_pool>(asio::query(ex, asio::execution::context));
    if (!pool.started_) pool.start(ex);
    return pool;
  }

  // The loop is going away: stop the helpers and drop every I/O object now, while the timer
  // and socket services still exist (services are destroyed in reverse order of creation).
  void shutdown() override {
    queue_.clear();
    for (auto& h : helpers_) {
      if (h->pid > 0) {
        ::kill(h->pid, SIGKILL);
        ::waitpid(h->pid, nullptr, 0);
        h->pid = -1;
      }
    }
    helpers_.clear();
    room_.reset();
  }

  asio::awaitable<std::string> run(std::string name, std::string input, process_call_options options) {
    if (!registry().count(name))
      throw offload_error(offload_error::reason::unknown_task, "no process task named '" + name + "' is registered");
    while (queue_.size() >= limit_) {
      if (!options.wait_when_full)
        throw offload_error(offload_error::reason::queue_full, "process pool queue full (" + std::to_string(limit_) +
                                                                   " calls waiting); try later");
      co_await room_->async_wait(asio::as_tuple(asio::use_awaitable));  // woken when a call leaves the queue
    }
    auto c = std::make_shared<call>();
    c->name = std::move(name);
    c->input = std::move(input);
    c->options = options;
    std::string out = co_await enqueue(c);
    co_return out;
  }

 private:
  asio::awaitable<std::string> enqueue(std::shared_ptr<call> c) {
    return detail::async_one_shot(std::move(c), [this](const std::shared_ptr<call>& c) {
      if (auto slot = c->done.slot(); slot.is_connected())
        slot.assign([this, weak = std::weak_ptr<call>(c)](asio::cancellation_type) {
          if (auto alive = weak.lock()) cancel(alive);
        });
      queue_.push_back(c);
      pump();
    });
  }

  void start(const asio::any_io_executor& ex) {
    started_ = true;
    ex_ = ex;
    room_.emplace(ex);
    room_->expires_at(asio::steady_timer::time_point::max());
    auto cfg = frozen_config();
    limit_ = cfg.queue;
    for (int i = 0; i < cfg.processes; ++i) {
      helpers_.push_back(std::make_unique<helper>(ex_));
      spawn(*helpers_.back());
    }
  }

  void spawn(helper& h) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      log::error(std::string("process pool: socketpair failed: ") + std::strerror(errno));
      return;
    }
    spawn_spec spec;
    spec.fds = {sv[1]};
    spec.death_signal = SIGKILL;  // a helper never outlives its worker, even one killed with SIGKILL
    spec.own_process_group = false;
    spec.run = [] { helper_main(3); };
    pid_t pid = -1;
    try {
      pid = loopfleet::spawn(spec).pid;
    } catch (const std::system_error& e) {
      log::error("process pool: fork failed: " + e.code().message());
    }
    ::close(sv[1]);
    if (pid < 0) {
      ::close(sv[0]);
      return;
    }
    h.pid = pid;
    h.sock = asio::local::stream_protocol::socket(ex_);
    h.sock.assign(asio::local::stream_protocol(), sv[0]);
    h.timed_out = h.killed_by_cancel = false;
  }

  void pump() {
    for (auto& h : helpers_) {
      if (queue_.empty()) return;
      if (h->current || h->pid < 0) continue;
      auto c = queue_.front();
      queue_.pop_front();
      room_->cancel();  // a waiter may enqueue now
      h->current = c;
      c->on = h.get();
      asio::co_spawn(ex_, serve(*h), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    }
  }

  void cancel(const std::shared_ptr<call>& c) {
    if (c->done.done()) return;
    if (!c->on) {
      std::erase(queue_, c);
      room_->cancel();
      c->fail(offload_error::reason::cancelled_before_start, "process task '" + c->name + "' cancelled before it started");
      return;
    }
    c->on->killed_by_cancel = true;
    ::kill(c->on->pid, SIGKILL);
    c->fail(offload_error::reason::cancelled_while_running,
            "process task '" + c->name + "' cancelled while running; its helper was stopped");
  }

  asio::awaitable<void> serve(helper& h) {
    auto c = h.current;
    std::string frame;
    std::uint32_t name_len = static_cast<std::uint32_t>(c->name.size());
    std::uint64_t input_len = c->input.size();
    frame.append(reinterpret_cast<const char*>(&name_len), sizeof name_len);
    frame.append(reinterpret_cast<const char*>(&input_len), sizeof input_len);
    frame += c->name;
    frame += c->input;
    pid_t pid = h.pid;
    h.limit.expires_after(c->options.time_limit);
    h.limit.async_wait([&h, pid](boost::system::error_code ec) {
      if (ec || h.pid != pid) return;
      h.timed_out = true;
      ::kill(pid, SIGKILL);
    });
    auto sent = std::chrono::steady_clock::now();
    auto [wec, wn] = co_await asio::async_write(h.sock, asio::buffer(frame), asio::as_tuple(asio::use_awaitable));
    // Tasks that usually answer within the spin budget are waited for here, briefly, rather
    // than by sleeping in epoll and paying for the wake-up.
    if (!wec && recent_reply_ < spin_budget) spin_until_readable(h.sock.native_handle(), spin_budget);
    std::uint8_t status = 0;
    std::uint64_t len = 0;
    std::string out;
    boost::system::error_code ec = wec;
    if (!ec) {
      std::array<asio::mutable_buffer, 2> head{asio::buffer(&status, 1), asio::buffer(&len, sizeof len)};
      auto [rec, rn] = co_await asio::async_read(h.sock, head, asio::as_tuple(asio::use_awaitable));
      ec = rec;
      if (!ec) {
        out.resize(len);
        auto [bec, bn] = co_await asio::async_read(h.sock, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
        ec = bec;
      }
    }
    h.limit.cancel();
    h.current.reset();
    auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - sent);
    recent_reply_ = (recent_reply_ * 7 + took) / 8;
    if (!ec) {
      if (status == reply_ok) c->complete(std::move(out));
      else if (status == reply_threw)
        c->fail(offload_error::reason::task_failed, "process task '" + c->name + "' threw: " + out);
      else c->fail(offload_error::reason::unknown_task, "process task '" + c->name + "' is unknown to the helper");
    } else {
      // The helper is gone (or going): learn why, tell the caller, start another.
      int wstatus = 0;
      ::waitpid(pid, &wstatus, 0);
      if (h.timed_out)
        c->fail(offload_error::reason::timed_out, "process task '" + c->name + "' ran past its time limit of " +
                                                      std::to_string(c->options.time_limit.count()) +
                                                      " ms; its helper was killed");
      else if (WIFSIGNALED(wstatus))
        c->fail(offload_error::reason::crashed,
                "process task '" + c->name + "' crashed its helper: " + describe_exit(wstatus));
      else
        c->fail(offload_error::reason::exited,
                "process task '" + c->name + "' ended its helper with " + describe_exit(wstatus));
      boost::system::error_code ignored;
      h.sock.close(ignored);
      spawn(h);
    }
    pump();
  }

  bool started_ = false;
  asio::any_io_executor ex_;
  std::optional<asio::steady_timer> room_;  // waiters for room in the queue; cancelled to wake them
  std::size_t limit_ = 1024;
  std::chrono::microseconds recent_reply_{0};  // moving average of request-to-reply time
  std::deque<std::shared_ptr<call>> queue_;
  std::vector<std::unique_ptr<helper>> helpers_;
};

}  // namespace

namespace detail {
void start_process_pool(asio::io_context& loop) {
  if (!registry().empty()) process_pool::on(loop.get_executor());
}
}  // namespace detail

bool configure_offload(const offload_options& options) {
  std::lock_guard lock(config_mutex);
  if (config_frozen) return false;
  config = options;
  return true;
}

int offload_threads() { return frozen_config().threads; }
int offload_processes() { return frozen_config().processes; }
std::size_t offload_queue_limit() { return frozen_config().queue; }

void register_process_task(std::string name, process_task task) { registry()[std::move(name)] = std::move(task); }

void register_json_task(std::string name, std::function<boost::json::value(const boost::json::value&)> task) {
  register_process_task(std::move(name), [task = std::move(task)](std::string_view input) {
    return boost::json::serialize(task(boost::json::parse(input)));
  });
}

asio::awaitable<std::string> run_in_process(std::string name, std::string input, process_call_options options) {
  auto ex = co_await asio::this_coro::executor;
  co_return co_await process_pool::on(ex).run(std::move(name), std::move(input), options);
}

asio::awaitable<boost::json::value> run_json_in_process(std::string name, const boost::json::value& input) {
  return run_json_in_process(std::move(name), input, process_call_options{});
}

asio::awaitable<boost::json::value> run_json_in_process(std::string name, const boost::json::value& input,
                                                        process_call_options options) {
  std::string out = co_await run_in_process(std::move(name), boost::json::serialize(input), options);
  co_return boost::json::parse(out);
}

}  // namespace loopfleet
