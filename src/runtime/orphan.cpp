#include "runtime/orphan.hpp"

#include "runtime/worker_env.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string_view>

namespace loopfleet {

namespace asio = boost::asio;

struct parent_watch::impl {
  explicit impl(asio::io_context& loop) : pidfd(loop) {}
  asio::posix::stream_descriptor pidfd;
};

parent_watch::parent_watch(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
parent_watch::~parent_watch() = default;

std::unique_ptr<parent_watch> parent_watch::from_environment(asio::io_context& loop, orphaned_fn orphaned) {
  auto take = [](const char* name) {
    const char* v = std::getenv(name);
    std::string_view text = v ? v : "";
    long long out = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    bool ok = !text.empty() && ec == std::errc() && end == text.data() + text.size() && out > 0;
    ::unsetenv(name);
    return ok ? out : 0;
  };
  auto supervisor = static_cast<pid_t>(take(worker_env::supervisor_pid));
  auto serve_for = std::chrono::milliseconds(take(worker_env::orphan_timeout_ms));
  if (supervisor <= 0 || serve_for.count() <= 0) return nullptr;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, supervisor, 0));
  if (fd < 0) return nullptr;  // keep the parent-death signal: it still drains us
  // Only now that the pidfd holds the supervisor: had it died before, we are the reaper's.
  bool gone = ::getppid() != supervisor;
  ::prctl(PR_SET_PDEATHSIG, 0);
  auto i = std::make_unique<impl>(loop);
  i->pidfd.assign(fd);
  // A pidfd turns readable when its process exits.
  auto fire = [orphaned, supervisor, serve_for](boost::system::error_code ec) {
    if (!ec) orphaned(supervisor, serve_for);
  };
  if (gone) asio::post(loop, [fire] { fire({}); });
  else i->pidfd.async_wait(asio::posix::descriptor_base::wait_read, fire);
  return std::unique_ptr<parent_watch>(new parent_watch(std::move(i)));
}

}  // namespace loopfleet
