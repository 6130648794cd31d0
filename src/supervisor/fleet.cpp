#include "supervisor/fleet.hpp"

#include <unistd.h>

namespace loopfleet::supervisor {

process::~process() {
  if (handoff >= 0) ::close(handoff);
}

std::optional<heartbeat_reading> process::beating(std::int64_t now_ns) const {
  if (!heartbeat) return std::nullopt;
  return read_heartbeat(heartbeat->region(), now_ns);
}

std::uint64_t process::requests() const {
  return heartbeat ? heartbeat->region().counters.requests.load() : 0;
}

process* fleet::find(pid_t pid) {
  auto it = procs_.find(pid);
  return pid && it != procs_.end() ? it->second.get() : nullptr;
}

process* fleet::current(int slot) { return find(slots[slot].current); }

const process* fleet::current(int slot) const {
  auto it = procs_.find(slots[slot].current);
  return slots[slot].current && it != procs_.end() ? it->second.get() : nullptr;
}

process* fleet::candidate(int slot) { return find(slots[slot].candidate); }

process& fleet::add(std::unique_ptr<process> p) {
  process& ref = *p;
  (p->r == role::candidate ? slots[p->slot].candidate : slots[p->slot].current) = p->pid;
  procs_[p->pid] = std::move(p);
  return ref;
}

std::unique_ptr<process> fleet::remove(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return nullptr;
  std::unique_ptr<process> p = std::move(it->second);
  procs_.erase(it);
  auto& s = slots[p->slot];
  s.requests_before += p->requests();
  if (s.candidate == pid) s.candidate = 0;
  if (s.current == pid) s.current = 0;
  return p;
}

pid_t fleet::promote(int slot) {
  auto& s = slots[slot];
  process* p = find(s.candidate);
  if (!p) return 0;
  p->r = role::current;
  pid_t old = std::exchange(s.current, p->pid);
  s.candidate = 0;
  return old;
}

pid_t fleet::reject_candidate(int slot) {
  process* p = find(std::exchange(slots[slot].candidate, 0));
  if (!p) return 0;
  p->r = role::rejected;
  return p->pid;
}

int fleet::serving() const {
  int n = 0;
  for (int i = 0; i < workers; ++i)
    if (const process* p = current(i); p && p->serves()) ++n;
  return n;
}

std::vector<bool> fleet::serves() const {
  std::vector<bool> out(workers);
  for (int i = 0; i < workers; ++i)
    if (const process* p = current(i)) out[i] = p->serves();
  return out;
}

std::uint64_t fleet::slot_requests(int slot) const {
  std::uint64_t n = slots[slot].requests_before;
  for (const auto& [pid, p] : procs_)  // the current worker, and a retiring or candidate one
    if (p->slot == slot) n += p->requests();
  return n;
}

}  // namespace loopfleet::supervisor
