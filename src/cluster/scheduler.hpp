// The node's scheduler: every node runs one (in its agent), there is no leader. It reads the
// schedules from the bucket's stream leader every second, publishes each due tick into the
// ticks stream with the tick's message id (every node publishes it; JetStream keeps one), and
// then stores the tick's job, whose idempotency key is the same id (every node that fired it
// does; the jobs stream keeps one). docs/cluster.md, "Schedules".
#pragma once

#include "cluster/nats_connection.hpp"
#include "cluster/schedule.hpp"

#include <nats/nats.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace loopfleet::cluster {

// Every stored schedule, read from the bucket stream's leader (never a replica's copy, which
// may lag behind a removal). `whole` is false when the bucket could not be read whole.
std::vector<schedule> read_schedules(jsCtx* js, bool& whole);
// The last tick of schedule `name` stored in the ticks stream (its leader), if any. `ok` is
// false when the stream could not be asked.
std::optional<std::int64_t> last_fired(jsCtx* js, const std::string& name, bool& ok);

class scheduler {
 public:
  // `fixed`: the run config's schedules, stored (if new or changed) once the bucket is there.
  scheduler(std::string url, std::string node, std::vector<schedule> fixed);
  ~scheduler();

 private:
  void run();
  bool stopping();
  std::string url_, node_;
  std::vector<schedule> fixed_;
  std::mutex mutex_;
  bool stop_ = false;
  interrupter interrupter_;  // closes the scheduler's connection at a stop
  std::thread thread_;
};

}  // namespace loopfleet::cluster
