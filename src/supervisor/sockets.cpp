#include "supervisor/sockets.hpp"

#include "supervisor/queue_handoff.hpp"

#include "runtime/address.hpp"
#include "runtime/error.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <variant>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

namespace loopfleet::supervisor {

std::vector<sock_filter> steering_program(const std::vector<int>& serving) {
  std::vector<sock_filter> prog;
  auto n = static_cast<std::uint32_t>(serving.size());
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_RANDOM)));
  prog.push_back(BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n));
  for (std::uint32_t i = 0; i < n; ++i) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, i, 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<std::uint32_t>(serving[i])));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<std::uint32_t>(serving.front())));
  return prog;
}

listen_sockets::listen_sockets(distribution mode, const std::vector<std::string>& addresses, int backlog, int slots,
                               const std::vector<listener>& inherited)
    : mode_(mode), texts_(addresses), backlog_(backlog) {
  for (const auto& text : texts_) {
    auto parsed = parse_listen_address(text);
    if (auto* err = std::get_if<std::string>(&parsed)) throw startup_error("--listen: " + *err);
    reusable_.push_back(mode_ == distribution::reuseport && !std::get<listen_address>(parsed).is_unix);
    fds_.emplace_back();
    bound_as_.emplace_back(text);
  }
  own_addresses_ = texts_.size();
  try {
    for (const auto& l : inherited) {
      unsigned a = 0, slot = 0;
      char end = 0;
      if (std::sscanf(l.name.c_str(), "loopfleet-listen-%u-%u%c", &a, &slot, &end) == 2) {
        adopt(l, a, slot);
        continue;
      }
      texts_.push_back(l.name);
      reusable_.push_back(false);
      fds_.push_back({l.fd});
      bound_as_.push_back(l.address);
    }
    for (std::size_t a = 0; a < own_addresses_; ++a)
      for (int fd : fds_[a])
        if (fd < 0)
          throw startup_error("the previous supervisor handed over --listen " + texts_[a] +
                              " with a socket missing: restart instead of upgrading");
    ensure_slots(slots);
  } catch (...) {
    close_all();
    throw;
  }
}

// A predecessor's socket: the same --listen address must have the same kind of queues.
void listen_sockets::adopt(const listener& l, std::size_t a, std::size_t slot) {
  if (a >= own_addresses_ || (!reusable_[a] && slot > 0)) {
    ::close(l.fd);
    throw startup_error("the previous supervisor handed over sockets for other --listen addresses or another "
                        "--distribution than this one has: upgrade with the same flags, or restart");
  }
  if (fds_[a].size() <= slot) fds_[a].resize(slot + 1, -1);
  fds_[a][slot] = l.fd;
  bound_as_[a] = local_address(l.fd);  // more slots join this group, on its port
}

std::vector<std::pair<int, std::string>> listen_sockets::handover() const {
  std::vector<std::pair<int, std::string>> out;
  for (std::size_t a = 0; a < fds_.size(); ++a)
    for (std::size_t slot = 0; slot < fds_[a].size(); ++slot)
      out.emplace_back(fds_[a][slot], a < own_addresses_ ? "loopfleet-listen-" + std::to_string(a) + "-" +
                                                               std::to_string(slot)
                                                         : texts_[a]);
  return out;
}

listen_sockets::~listen_sockets() { close_all(); }

void listen_sockets::close_all() {
  for (auto& per_address : fds_)
    for (int fd : per_address)
      if (fd >= 0) ::close(fd);
  fds_.clear();
}

int listen_sockets::bind_one(std::size_t a, bool reuseport) {
  auto parsed = std::get<listen_address>(parse_listen_address(bound_as_[a]));
  if (!reuseport) return bind_listener(parsed, texts_[a], backlog_).fd;
  if (fds_[a].empty()) {
    // A plain bind fails where any other process listens, reuseport or not: without this
    // probe we could silently join a stranger's reuseport group and split its traffic.
    listener probe = bind_listener(parsed, texts_[a], backlog_);
    std::string actual = local_address(probe.fd);
    ::close(probe.fd);
    bound_as_[a] = actual;  // port 0 becomes the port every socket of the group shares
    parsed = std::get<listen_address>(parse_listen_address(actual));
  }
  return bind_listener(parsed, texts_[a], backlog_, true).fd;
}

void listen_sockets::ensure_slots(int n) {
  for (std::size_t a = 0; a < texts_.size(); ++a) {
    int want = reusable_[a] ? n : 1;
    while (static_cast<int>(fds_[a].size()) < want) fds_[a].push_back(bind_one(a, reusable_[a]));
  }
}

std::vector<int> listen_sockets::for_slot(int slot) const {
  std::vector<int> out;
  for (std::size_t a = 0; a < fds_.size(); ++a) out.push_back(reusable_[a] ? fds_[a].at(slot) : fds_[a].front());
  return out;
}

std::string listen_sockets::fd_names() const {
  std::string out;
  for (const auto& t : texts_) {
    std::string name = t;
    for (char& c : name)
      if (c == ':') c = '_';  // ':' separates LISTEN_FDNAMES entries
    out += (out.empty() ? "" : ":") + name;
  }
  return out;
}

void listen_sockets::steer(const std::vector<int>& serving) {
  if (serving.empty()) return;
  auto prog = steering_program(serving);
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  for (std::size_t a = 0; a < fds_.size(); ++a) {
    if (!reusable_[a] || fds_[a].empty()) continue;
    // One program serves the whole group; attaching to any member replaces it.
    ::setsockopt(fds_[a].front(), SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog);
  }
}

std::vector<std::pair<std::uint32_t, int>> listen_sockets::own_queues(int slot) const {
  std::vector<std::pair<std::uint32_t, int>> out;
  for (std::size_t a = 0; a < fds_.size(); ++a)
    if (reusable_[a] && slot >= 0 && static_cast<std::size_t>(slot) < fds_[a].size())
      out.emplace_back(static_cast<std::uint32_t>(a), fds_[a][static_cast<std::size_t>(slot)]);
  return out;
}

int listen_sockets::queued(int slot) const {
  int n = 0;
  for (auto [index, fd] : own_queues(slot)) n += accept_queue_length(fd);
  return n;
}

std::vector<std::string> listen_sockets::local_addresses() const {
  std::vector<std::string> out;
  for (const auto& fds : fds_) out.push_back(local_address(fds.front()));
  return out;
}

std::string listen_sockets::describe() const {
  std::string out;
  for (std::size_t a = 0; a < fds_.size(); ++a) {
    out += (out.empty() ? "" : ", ") + local_address(fds_[a].front());
    if (reusable_[a]) out += " (" + std::to_string(fds_[a].size()) + " reuseport queues)";
  }
  return out;
}

}  // namespace loopfleet::supervisor
