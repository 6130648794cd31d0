// The supervisor's side of src/runtime/handoff.hpp: it accepts what waits in the queue of a
// slot that cannot serve it (policy.hpp's queue_needs_taking) and hands each connection to a
// serving worker, so a stalled or restarting slot keeps no client waiting.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

namespace loopfleet::supervisor {

// Connections waiting in a listening socket's accept queue now (0 if it cannot be read).
int accept_queue_length(int listening_fd);

class queue_handoff {
 public:
  queue_handoff() = default;
  ~queue_handoff();
  queue_handoff(const queue_handoff&) = delete;
  queue_handoff& operator=(const queue_handoff&) = delete;

  // Accepts from `queues` ((listener index, listening fd) pairs) and sends each connection to
  // the worker channels in `targets`, in turn. A connection no target can take right now (their
  // channels full) is kept and sent first on the next call; while any is kept nothing more is
  // accepted, so the rest stays in the kernel's queue. Returns how many were handed over.
  std::size_t take(const std::vector<std::pair<std::uint32_t, int>>& queues, const std::vector<int>& targets);

  std::size_t kept() const { return kept_.size(); }

 private:
  bool send_somewhere(std::uint32_t listener, int fd, const std::vector<int>& targets);

  std::deque<std::pair<std::uint32_t, int>> kept_;
  std::size_t next_ = 0;  // round-robin over the targets
};

}  // namespace loopfleet::supervisor
