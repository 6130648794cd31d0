// Stranded jobs: stored in the work queue, already delivered, yet neither awaiting an ack nor
// to be delivered again. JetStream's consumer can lose track of a message this way when nodes
// die (nats-server 2.9.10 after a node kill in the chaos soak; nats-server #4736 and others
// report the same on later versions); nothing would ever run such a job. Every node's agent
// looks at the oldest stored jobs now and then and queues a stranded one again: published
// anew (a message id shared by every node keeps a single copy) and then deleted, never the
// other way round, so at worst a job runs twice, never not at all.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace loopfleet::cluster {

// How long a job may go without an ack or an in-progress signal before JetStream delivers it
// again (the consumers' AckWait): the time until a dead worker's jobs run elsewhere.
inline constexpr std::chrono::milliseconds job_ack_wait{4000};

// The longest a delivered job can legitimately stay stored: every attempt running to its time
// limit and then waiting out the ack wait, plus the 5 s pause before a failed last attempt's
// dead letter is tried again, plus a margin for a loaded machine.
std::chrono::milliseconds stored_lifetime(int max_attempts, std::chrono::milliseconds time_limit);

// One stored job as the sweeper sees it.
struct stored_job {
  std::uint64_t seq = 0;
  std::chrono::milliseconds age{0};  // since it was stored
  bool delivered = false;            // its consumer's delivered sequence has passed it
  int max_attempts = 5;
  std::chrono::milliseconds time_limit{30000};
};
// Stranded: delivered long enough ago that no attempt can still be running or due again.
bool stranded(const stored_job& j);

// Looks at up to `budget` of the oldest stored jobs and queues the stranded ones again.
// Returns how many it queued; `report` names them for the log.
int sweep_stranded_jobs(jsCtx* js, int budget, std::string& report);

}  // namespace loopfleet::cluster
