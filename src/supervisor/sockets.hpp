// The listening sockets, created once by the supervisor and held for its whole life, so a
// worker's crash or reload never closes an accept queue (closing one resets every
// connection still queued in it).
//
// shared:    one socket per address; every worker accepts from it.
// reuseport: per address, one SO_REUSEPORT socket per slot; the kernel spreads new
//            connections over the group and every worker that ever fills slot i inherits
//            socket i. A classic-BPF program on the group steers new connections only to
//            slots whose worker is serving, so a crashed or stalled slot's queue stops
//            growing while the supervisor brings it back.
#pragma once

#include "supervisor/config.hpp"

#include <loopfleet/runtime.hpp>

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace loopfleet::supervisor {

// The steering program: pick a random serving slot. `serving` holds slot indexes, which are
// the sockets' positions in the reuseport group (the order they were created in).
std::vector<sock_filter> steering_program(const std::vector<int>& serving);

class listen_sockets {
 public:
  // Binds every address and adds the `inherited` sockets (socket activation of the supervisor
  // itself), which every worker shares whatever the mode. Inherited sockets named by
  // handover() are a predecessor's (loopfleet upgrade): they take their old places instead of
  // new ones being bound, so no queue is ever closed. Throws startup_error.
  listen_sockets(distribution mode, const std::vector<std::string>& addresses, int backlog, int slots,
                 const std::vector<listener>& inherited);
  ~listen_sockets();
  listen_sockets(const listen_sockets&) = delete;
  listen_sockets& operator=(const listen_sockets&) = delete;

  // Makes sure sockets exist for slots [0, n). Throws startup_error.
  void ensure_slots(int n);
  // The fds a worker in `slot` inherits, one per address, in --listen order.
  std::vector<int> for_slot(int slot) const;
  // LISTEN_FDNAMES for a worker: the --listen texts, ':'-separated.
  std::string fd_names() const;
  // Steers new connections to the slots in `serving` (reuseport only; no-op for shared).
  void steer(const std::vector<int>& serving);
  // Every socket with the LISTEN_FDNAMES name a successor adopts it by: "loopfleet-listen-A-S"
  // for --listen address A, slot S (the socket's place in its reuseport group); an inherited
  // socket keeps its own name.
  std::vector<std::pair<int, std::string>> handover() const;
  // Printable local addresses, for logs.
  std::string describe() const;
  // Each address's local address as local_address() prints it ("0.0.0.0:8080"), in order.
  std::vector<std::string> local_addresses() const;
  // The slot's own queues (reuseport sockets; not those every slot shares), each with the
  // listener index a worker knows it by (its place in LISTEN_FDS).
  std::vector<std::pair<std::uint32_t, int>> own_queues(int slot) const;
  // Connections waiting in those queues to be accepted now.
  int queued(int slot) const;

 private:
  int bind_one(std::size_t address_index, bool reuseport);
  void close_all();

  void adopt(const listener& l, std::size_t address, std::size_t slot);

  distribution mode_;
  std::size_t own_addresses_ = 0;        // texts_ [0, own) are --listen; the rest inherited
  std::vector<std::string> texts_;
  int backlog_;
  std::vector<bool> reusable_;           // per address: false for Unix sockets (always shared)
  std::vector<std::vector<int>> fds_;    // [address][slot], or [address][0] when shared
  std::vector<std::string> bound_as_;    // actual address per entry (port 0 resolved)
};

}  // namespace loopfleet::supervisor
