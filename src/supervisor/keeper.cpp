// The socket keeper (keeper.hpp says what it is for): the keeper process's loop, the
// supervisor's side of the link, and the few words they say to each other.
//
// The wire: one SOCK_SEQPACKET message is one request or reply, text, with sockets as
// SCM_RIGHTS. Lines are separated by '\n'.
//   supervisor -> keeper   ADOPT 1 PID          a fresh start asks for a dead supervisor's sockets
//                          JOIN 1 PID           an owner (the keeper's starter, an upgrade's successor)
//                          SET N                the set it holds is replaced by the next N sockets
//                          STATE TEXT           what the sender is (format_keeper_state)
//                          BYE                  the sender stops cleanly
//   keeper -> supervisor   OK                   joined
//                          BUSY PID             a live supervisor owns this instance
//                          DEAD PID MS\nSTATE   the end of an adoption: who died, how long ago
//                          BYE                  let go, but the keeper lives on for another owner
//   both ways              FDS\nNAME\nNAME...   sockets, as many as names (at most 200 a message)
// "1" is the version of these words: a keeper left by another loopfleet version answers ERR
// instead of being misread.
#include "supervisor/keeper.hpp"

#include "runtime/error.hpp"
#include "runtime/listen_fds.hpp"
#include "runtime/spawn.hpp"
#include "supervisor/policy.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace loopfleet::supervisor {

namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* version = "1";
constexpr const char* own_name = "loopfleet-keeper";
constexpr std::size_t fds_per_message = 200;  // under the kernel's SCM_MAX_FD (253)
constexpr std::size_t max_message = 64 * 1024;

bool send_message(int fd, std::string_view text, const int* fds = nullptr, std::size_t count = 0) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (count > 0) {
    control.assign(CMSG_SPACE(count * sizeof(int)), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(count * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, count * sizeof(int));
  }
  ssize_t n;
  do n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(text.size());
}

// Sends sockets with their names, in as many messages as it takes.
bool send_sockets(int fd, const keeper_link::sockets& socks) {
  for (std::size_t i = 0; i < socks.size(); i += fds_per_message) {
    std::size_t end = std::min(socks.size(), i + fds_per_message);
    std::string text = "FDS";
    std::vector<int> fds;
    for (std::size_t j = i; j < end; ++j) {
      text += "\n" + socks[j].second;
      fds.push_back(socks[j].first);
    }
    if (!send_message(fd, text, fds.data(), fds.size())) return false;
  }
  return true;
}

// One message: its text and the sockets that came with it (close-on-exec, ours to close).
// False at the end of the stream or on an error (errno says which; 0 at the end).
bool receive_message(int fd, std::string& text, std::vector<int>& fds, int flags = 0) {
  text.resize(max_message);
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(fds_per_message * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  fds.clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      fds.resize(count);
      std::memcpy(fds.data(), CMSG_DATA(c), count * sizeof(int));
    }
  if (n <= 0) {
    if (n == 0) errno = 0;
    for (int f : fds) ::close(f);
    fds.clear();
    return false;
  }
  text.resize(static_cast<std::size_t>(n));
  return true;
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (true) {
    auto nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) return out;
    text.remove_prefix(nl + 1);
  }
}

template <class T>
bool number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string_view> split_words(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto space = s.find(' ');
    if (space != 0) out.push_back(s.substr(0, space));
    if (space == std::string_view::npos) break;
    s.remove_prefix(space + 1);
  }
  return out;
}

std::string proc_text(const proc_id& p) { return std::to_string(p.pid) + ":" + std::to_string(p.start); }

bool parse_proc(std::string_view s, proc_id& out) {
  auto colon = s.find(':');
  return colon != std::string_view::npos && number(s.substr(0, colon), out.pid) &&
         number(s.substr(colon + 1), out.start) && out.pid >= 0;
}

// ---- the keeper process ----

struct client {
  int fd = -1;
  pid_t pid = 0;
  bool owner = false;
  bool said_bye = false;
  std::string state;
  std::size_t expecting = 0;                 // sockets still to come after SET
  keeper_link::sockets incoming;
};

class keeper {
 public:
  keeper(int listen_fd, keeper_link::sockets held, std::string path, milliseconds timeout)
      : listen_(listen_fd), held_(std::move(held)), path_(std::move(path)), timeout_(timeout) {
    struct stat st{};
    if (::stat(path_.c_str(), &st) == 0) path_ino_ = st.st_ino;
    deadline_ = clock::now() + timeout_;  // until our starter joins
  }

  int run() {
    for (;;) {
      std::vector<pollfd> fds{{listen_, POLLIN, 0}};
      for (const auto& c : clients_) fds.push_back({c.fd, POLLIN, 0});
      // With no supervisor, we answer the front's agent check ourselves (last in the list).
      int agent = owners() == 0 ? agent_check_fd() : -1;
      if (agent >= 0) fds.push_back({agent, POLLIN, 0});
      int wait = -1;
      if (deadline_) {
        auto left = std::chrono::duration_cast<milliseconds>(*deadline_ - clock::now()).count();
        if (left <= 0) return quit();
        wait = static_cast<int>(std::min<long long>(left, 60000));
      }
      if (::poll(fds.data(), fds.size(), wait) < 0 && errno != EINTR) return quit();
      if (agent >= 0 && fds.back().revents) answer_agent_check(agent);
      // The clients polled, back to front, so that dropping one leaves the rest of the indexes
      // valid; then a new one (after: it has no pollfd this round).
      for (std::size_t i = fds.size() - (agent >= 0 ? 2 : 1); i-- > 0;)
        if (fds[i + 1].revents) {
          // The last owner's goodbye: its connection is left open, to close with us, so that
          // its end of the socket reads EOF only once our copies and our file are gone.
          if (!serve(clients_[i]) && !done_) drop(i);
          if (done_) return quit();
        }
      if (fds[0].revents & POLLIN) {
        int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          client fresh;
          fresh.fd = c;
          clients_.push_back(std::move(fresh));
        }
      }
    }
  }

 private:
  bool serve(client& c) {
    std::string text;
    std::vector<int> fds;
    if (!receive_message(c.fd, text, fds)) return false;
    auto words = lines(text);
    std::string_view head = words[0];
    if (head == "FDS" && c.expecting > 0) {
      for (std::size_t k = 0; k < fds.size(); ++k)
        c.incoming.emplace_back(fds[k], k + 1 < words.size() ? std::string(words[k + 1]) : std::string());
      c.expecting -= std::min(c.expecting, fds.size());
      if (c.expecting == 0) {
        close_held();
        held_ = std::move(c.incoming);
        c.incoming.clear();
      }
      return true;
    }
    for (int f : fds) ::close(f);  // sockets nobody announced
    if (head.starts_with("SET ")) {
      return number(head.substr(4), c.expecting);
    }
    if (head.starts_with("STATE ")) {
      c.state = std::string(text.substr(6));
      return true;
    }
    if (head == "BYE") {
      // The last owner's goodbye ends us; anyone else's only its own connection.
      c.said_bye = true;
      if (c.owner && owners() == 1) done_ = true;
      else send_message(c.fd, "BYE");  // we live on for another owner: it need not wait for our end
      return false;
    }
    bool adopt = head.starts_with("ADOPT "), join = head.starts_with("JOIN ");
    if (adopt || join) {
      std::string_view rest = head.substr(adopt ? 6 : 5);
      if (!rest.starts_with(std::string(version) + " ")) {
        send_message(c.fd, "ERR this keeper speaks version " + std::string(version));
        return false;
      }
      number(rest.substr(2), c.pid);
      if (adopt) {
        for (const auto& o : clients_)
          if (o.owner) {
            send_message(c.fd, "BUSY " + std::to_string(o.pid));
            return false;
          }
        if (!send_sockets(c.fd, held_)) return false;
        long long held_ms =
            dead_ ? std::chrono::duration_cast<milliseconds>(clock::now() - dead_->since).count() : 0;
        send_message(c.fd, "DEAD " + std::to_string(dead_ ? dead_->pid : 0) + " " + std::to_string(held_ms) + " " +
                               std::to_string(::getpid()) + "\n" + (dead_ ? dead_->state : std::string()));
      } else {
        send_message(c.fd, "OK " + std::to_string(::getpid()));
      }
      c.owner = true;
      dead_.reset();
      deadline_.reset();
      return true;
    }
    send_message(c.fd, "ERR unknown request");
    return false;
  }

  int agent_check_fd() const {
    for (const auto& [fd, name] : held_)
      if (name == socket_name::agent_check) return fd;
    return -1;
  }

  // HAProxy connects, reads one line, closes: "drain" (policy.hpp says why).
  static void answer_agent_check(int listener) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) return;
    std::string reply = agent_check_reply_orphaned();
    [[maybe_unused]] auto sent = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(c);
  }

  int owners() const {
    return static_cast<int>(std::count_if(clients_.begin(), clients_.end(), [](const client& c) { return c.owner; }));
  }

  // A connection ended. An owner gone without a goodbye died; if it was the last, hold on
  // for --orphan-timeout.
  void drop(std::size_t i) {
    client c = std::move(clients_[i]);
    clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
    ::close(c.fd);
    for (auto& [fd, name] : c.incoming) ::close(fd);
    if (!c.owner || c.said_bye || owners() > 0) return;
    dead_ = dead_owner{c.pid, c.state, clock::now()};
    deadline_ = clock::now() + timeout_;
  }

  void close_held() {
    for (auto& [fd, name] : held_) ::close(fd);
    held_.clear();
  }

  int quit() {
    close_held();
    struct stat st{};
    if (path_ino_ && ::stat(path_.c_str(), &st) == 0 && st.st_ino == path_ino_) ::unlink(path_.c_str());
    return 0;  // our clients' ends close with us
  }

  struct dead_owner {
    pid_t pid;
    std::string state;
    clock::time_point since;
  };
  int listen_;
  keeper_link::sockets held_;
  std::string path_;
  ino_t path_ino_ = 0;
  milliseconds timeout_;
  std::vector<client> clients_;
  std::optional<dead_owner> dead_;
  std::optional<clock::time_point> deadline_;
  bool done_ = false;
};

}  // namespace

std::string format_keeper_state(const keeper_state& s) {
  std::string out = "generation=" + std::to_string(s.generation) + " nats=" + proc_text(s.nats) + " workers=";
  for (std::size_t i = 0; i < s.workers.size(); ++i) out += (i ? "," : "") + proc_text(s.workers[i]);
  return out;
}

std::optional<keeper_state> parse_keeper_state(std::string_view text) {
  keeper_state s;
  bool gen = false, nats = false, workers = false;
  while (!text.empty()) {
    auto space = text.find(' ');
    std::string_view field = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    auto eq = field.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    if (key == "generation" && !gen) {
      if (!number(value, s.generation) || s.generation < 0) return std::nullopt;
      gen = true;
    } else if (key == "nats" && !nats) {
      if (!parse_proc(value, s.nats)) return std::nullopt;
      nats = true;
    } else if (key == "workers" && !workers) {
      workers = true;
      while (!value.empty()) {
        auto comma = value.find(',');
        proc_id p;
        if (!parse_proc(value.substr(0, comma), p)) return std::nullopt;
        s.workers.push_back(p);
        if (comma == std::string_view::npos) break;
        value = value.substr(comma + 1);
        if (value.empty()) return std::nullopt;  // a trailing comma
      }
    } else {
      return std::nullopt;
    }
  }
  if (!gen || !nats || !workers) return std::nullopt;
  return s;
}

unsigned long long process_start(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // The command name, in parentheses, may hold spaces and parentheses: fields start after the last ')'.
  auto close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 1));
  std::string field;
  char state = 0;
  rest >> state;  // field 3
  if (state == 'Z' || state == 'X') return 0;  // exited, not yet reaped: not a live process
  for (int i = 4; i < 22 && rest >> field; ++i) {
  }
  unsigned long long start = 0;
  rest >> start;  // field 22
  return start;
}

proc_id identify(pid_t pid) { return proc_id{pid, process_start(pid)}; }

int open_if_same(const proc_id& id) {
  if (id.pid <= 0 || id.start == 0) return -1;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, id.pid, 0));
  if (fd < 0) return -1;
  // Checked after the pidfd is open: it names one process for good, so a pid recycled after
  // this check cannot be signalled in its place.
  if (process_start(id.pid) != id.start) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

int run_keeper(std::vector<std::string_view> args) {
  long long timeout_ms = 0;
  if (args.size() != 3 || !number(args[1], timeout_ms) || timeout_ms < 0) {
    std::fprintf(stderr, "loopfleet keeper: started by loopfleet run only (PATH TIMEOUT_MS NAME)\n");
    return 2;
  }
  // systemd's rules without adopt_listen_fds()'s checks: our own socket is no stream listener.
  auto rules = read_listen_fds(std::getenv("LISTEN_PID"), std::getenv("LISTEN_FDS"), std::getenv("LISTEN_FDNAMES"),
                               ::getpid());
  if (auto* err = std::get_if<std::string>(&rules)) {
    std::fprintf(stderr, "loopfleet keeper: %s\n", err->c_str());
    return 2;
  }
  auto& inherited = std::get<inherited_fds>(rules);
  // Detached from whatever the supervisor wrote to: a pipe a test or a terminal reads must
  // see its end when the supervisor's does. Only SIGTERM and SIGKILL end us; the terminal's
  // Ctrl-C and hang-up are for the supervisor.
  int null = ::open("/dev/null", O_RDWR);
  for (int fd : {0, 1, 2}) ::dup2(null, fd);
  if (null > 2) ::close(null);
  for (int sig : {SIGINT, SIGQUIT, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2}) ::signal(sig, SIG_IGN);
  int listen_fd = -1;
  keeper_link::sockets held;
  for (std::size_t i = 0; i < inherited.fds.size(); ++i) {
    if (inherited.names[i] == own_name && listen_fd < 0) listen_fd = inherited.fds[i];
    else held.emplace_back(inherited.fds[i], inherited.names[i]);
  }
  if (listen_fd < 0) return 2;
  return keeper(listen_fd, std::move(held), std::string(args[0]), milliseconds(timeout_ms)).run();
}

// ---- the supervisor's side ----

keeper_link::~keeper_link() {
  if (fd_ >= 0) ::close(fd_);
}

bool keeper_link::connect() {
  sockaddr_un sun{};
  if (path_.size() >= sizeof sun.sun_path) return false;
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path_.c_str(), path_.size());
  // Close-on-exec above all: a worker that inherited it would keep a dead supervisor "alive"
  // in the keeper's eyes.
  fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ::close(fd_);
    fd_ = -1;
    return false;
  }
  timeval tv{5, 0};  // a keeper answers at once; one that does not is wedged
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // Not SO_PEERCRED: that names whoever called listen(), the supervisor that started the keeper.
  return true;
}

void keeper_link::send(std::string_view text, const std::vector<int>& fds) {
  if (fd_ >= 0) send_message(fd_, text, fds.data(), fds.size());
}

std::optional<keeper_link::adopted> keeper_link::adopt() {
  if (!connect()) return std::nullopt;
  send("ADOPT " + std::string(version) + " " + std::to_string(::getpid()));
  adopted out;
  auto fail = [&](const std::string& why) {
    for (auto& [fd, name] : out.fds) ::close(fd);
    lost();
    throw startup_error(why);
  };
  std::string text;
  std::vector<int> fds;
  for (;;) {
    if (!receive_message(fd_, text, fds))
      fail("the socket keeper of this instance did not answer on " + path_ +
           ": stop it (pkill -f 'loopfleet keeper " + path_ + "') and start again");
    auto words = lines(text);
    if (words[0] == "FDS") {
      for (std::size_t k = 0; k < fds.size(); ++k)
        out.fds.emplace_back(fds[k], k + 1 < words.size() ? std::string(words[k + 1]) : "unknown");
      continue;
    }
    if (words[0].starts_with("BUSY "))
      fail("another loopfleet instance named '" + instance_ + "' is running (supervisor pid " +
           std::string(words[0].substr(5)) + "); stop it first, or give this one another --name");
    if (words[0].starts_with("DEAD ")) {
      auto fields = split_words(words[0].substr(5));
      long long ms = 0;
      if (fields.size() != 3 || !number(fields[0], out.dead_pid) || !number(fields[1], ms) ||
          !number(fields[2], out.keeper))
        fail("the socket keeper on " + path_ + " answered '" + std::string(words[0]) +
             "': it is another loopfleet version's; stop it (pkill -f 'loopfleet keeper " + path_ + "') and start again");
      keeper_pid_ = out.keeper;
      out.held = milliseconds(ms);
      if (words.size() > 1) out.dead = parse_keeper_state(text.substr(text.find('\n') + 1));
      return out;
    }
    fail("the socket keeper on " + path_ + " answered '" + std::string(words[0]) +
         "': it is another loopfleet version's; stop it (pkill -f 'loopfleet keeper " + path_ + "') and start again");
  }
}

bool keeper_link::join() {
  if (!connect()) return false;
  send("JOIN " + std::string(version) + " " + std::to_string(::getpid()));
  std::string text;
  std::vector<int> fds;
  if (receive_message(fd_, text, fds) && text.starts_with("OK ") && number(std::string_view(text).substr(3), keeper_pid_))
    return true;
  lost();
  return false;
}

void keeper_link::start(const sockets& fds, milliseconds orphan_timeout) {
  lost();
  ::unlink(path_.c_str());  // a keeper that was killed leaves its file
  int lfd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (lfd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path_.c_str(), std::min(path_.size(), sizeof sun.sun_path - 1));
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || ::chmod(path_.c_str(), 0600) != 0 ||
      ::listen(lfd, 8) != 0) {
    int err = errno;
    ::close(lfd);
    throw std::system_error(err, std::generic_category(), "keeper socket " + path_);
  }
  spawn_spec spec;
  // The very binary we run, even if a package upgrade replaced the file since.
  spec.exec_path = "/proc/self/exe";
  spec.argv = {"loopfleet", "keeper", path_, std::to_string(orphan_timeout.count()), instance_};
  spec.fds.push_back(lfd);
  std::string names = own_name;
  for (const auto& [fd, name] : fds) {
    spec.fds.push_back(fd);
    names += ":" + name;
  }
  spec.env = {"LISTEN_FDS=" + std::to_string(spec.fds.size()), "LISTEN_FDNAMES=" + names};
  spec.listen_pid = true;
  spec.death_signal = 0;           // it is there for when we die
  spec.own_process_group = false;  // a killpg of ours reaches it; Ctrl-C it ignores
  spawned s;
  try {
    s = spawn(spec);
  } catch (...) {
    ::close(lfd);
    throw;
  }
  ::close(lfd);
  if (connect()) send("JOIN " + std::string(version) + " " + std::to_string(::getpid()));
  std::string text;
  std::vector<int> got;
  if (fd_ < 0 || !receive_message(fd_, text, got) || !text.starts_with("OK ")) {
    ::kill(s.pid, SIGTERM);
    lost();
    throw std::system_error(EPROTO, std::generic_category(), "the new socket keeper did not answer");
  }
  keeper_pid_ = s.pid;
}

void keeper_link::keep(const sockets& fds) {
  if (fd_ < 0) return;
  send("SET " + std::to_string(fds.size()));
  send_sockets(fd_, fds);
}

void keeper_link::tell(const keeper_state& s) { send("STATE " + format_keeper_state(s)); }

void keeper_link::bye() {
  if (fd_ < 0) return;
  // The process itself is watched too: our exit must mean the keeper is gone, and its socket
  // reads EOF a moment before its exit is over.
  int pidfd = keeper_pid_ > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, keeper_pid_, 0)) : -1;
  send("BYE");
  if (keeper_ends() && pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    while (::poll(&p, 1, 2000) < 0 && errno == EINTR) {}
  }
  if (pidfd >= 0) ::close(pidfd);
  lost();
}

// After our BYE: true once the keeper is ending (our socket reads EOF: the last owner's keeper
// closes its copies and its file first, so a supervisor started right after ours finds no
// keeper instead of a busy one), false if it lives on for another owner (it answers BYE) or
// has not ended within 10 s (hung: we do not wait forever to stop).
bool keeper_link::keeper_ends() {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    std::string text;
    std::vector<int> fds;
    if (receive_message(fd_, text, fds, MSG_DONTWAIT)) {
      for (int f : fds) ::close(f);
      if (text == "BYE") return false;
    } else if (errno != EAGAIN && errno != EINTR) {
      return true;
    }
  }
}

void keeper_link::lost() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace loopfleet::supervisor
