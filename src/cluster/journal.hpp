// A workflow's journal: what it looks like on the wire, what a reader makes of it, and the
// blocking nats.c calls that read and append it. The workers' executor (workflow.cpp) and the
// `loopfleet workflow` commands (admin.cpp) both use it, so they agree on every rule.
//
// Wire (docs/workflows.md): stream LOOPFLEET_WF (limits retention, the cluster's replicas),
// one subject per workflow, loopfleet.wf.<id>; each entry is one message whose headers say
// what it is and whose body is its value. Tasks (which executor runs which workflow now) are
// messages on loopfleet.wft.<name> in the work-queue stream LOOPFLEET_WFT, body = the id.
//
// Why these rules: on nats-server 2.9.10 with replicated streams the per-subject expected-last
// -sequence check is only a pre-check at the leader (nats-server #4320), so two appends sent
// in the same instant may both pass it. Message-id de-duplication and create-if-absent are
// checked when an entry is applied, on every replica. So:
//  - a workflow is created by its `start` entry, appended only if the subject is empty;
//  - an executor appends a `claim` and then every entry it writes names that claim, and is
//    sent expecting the subject's last sequence to be the executor's own last: an executor
//    that was thought dead (a newer claim is there) is refused, and stops (fenced);
//  - the entry for step n carries message id <id>/<n>: one entry per step, whoever races;
//  - a reader takes, for each step, the entry with the lowest sequence, so every reader
//    agrees even if a second one slipped in after the de-duplication window.
#pragma once

#include <nats/nats.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace loopfleet::cluster {

inline constexpr const char* workflow_stream = "LOOPFLEET_WF";
inline constexpr const char* workflow_task_stream = "LOOPFLEET_WFT";

std::string journal_subject(const std::string& id);      // loopfleet.wf.<id>
std::string task_subject(const std::string& workflow);   // loopfleet.wft.<name>
std::string task_consumer(const std::string& workflow);  // loopfleet_wf_<name>

// Why `id` (a workflow id) or `name` (a workflow, step or signal name) cannot be used, or ""
// when it can: ids and workflow names become NATS subject tokens.
std::string invalid_token(const std::string& what, const std::string& value);

struct entry {
  enum class kind { start, claim, step, timer, waiting, got, signal, done, fail, unknown };
  std::uint64_t seq = 0;     // stream sequence
  kind what = kind::unknown;
  int n = 0;                 // step, timer, waiting, got: the index of the await (1, 2, ...)
  std::string name;          // start: the workflow; step: the step; waiting, got, signal: the signal
  std::string node;          // the node that wrote it
  std::uint64_t claim = 0;   // the writer's claim (its sequence); 0 for start and signal
  std::int64_t value = 0;    // step: duration ms; timer: deadline (unix ms); got: the signal's seq
  int attempts = 0;          // step: how many times its function ran before this result
  bool error = false;        // step: the body is the function's error, not its result
  std::int64_t at_ms = 0;    // when it was written (unix ms)
  std::string body;
};
const char* kind_name(entry::kind k);
// The entry a journal message holds (its headers and body; its sequence if it came from the
// stream, 0 if it was heard on the subject as it was appended).
entry parse_entry(natsMsg* m);
// Now, in Unix milliseconds: the clock every entry's time and deadline is in.
std::int64_t unix_ms();

// What the journal says, by the rules above.
struct journal_view {
  std::optional<entry> start;
  std::map<int, entry> at;        // step, timer, waiting: per index, the lowest sequence
  std::map<int, entry> bound;     // got: per index, the lowest sequence
  std::vector<entry> signals;     // in sequence order
  std::vector<entry> claims;      // in sequence order
  std::optional<entry> end;       // done or fail, the first
  std::uint64_t last_seq = 0;     // the subject's last sequence
  std::uint64_t last_non_signal = 0;  // the last entry an executor or starter wrote

  bool finished() const { return end.has_value(); }
  // Parked on a signal: the last entry an executor wrote says it waits for one.
  bool parked_on_signal() const;
  // The first signal named `name` that no await has taken yet.
  const entry* unbound_signal(const std::string& name) const;
  // running, waiting (a timer or a signal), completed, failed; "unknown" without a start.
  std::string status() const;
};
journal_view view_of(const std::vector<entry>& entries);
void add_to(journal_view& v, const entry& e);

// --- blocking nats.c calls (not on a loop) ---

// Entries of workflow `id` with a sequence >= `from`, in order. False when the stream could
// not be read (no leader, NATS down): `why` says so.
bool read_journal(jsCtx* js, const std::string& id, std::uint64_t from, std::vector<entry>& out, std::string& why);
// The last entry of workflow `id` (from the stream's leader), in `last`; none for an empty
// journal. False when the stream could not be read: `why` says so.
bool read_last_entry(jsCtx* js, const std::string& id, std::optional<entry>& last, std::string& why);
// The entry at stream sequence `seq`.
std::optional<entry> read_entry(jsCtx* js, std::uint64_t seq);

struct append_result {
  enum class outcome { stored, duplicate, wrong_last, failed } what = outcome::failed;
  std::uint64_t seq = 0;     // stored: its sequence; duplicate: the sequence of the one kept
  bool transient = false;    // failed: trying again later can work
  std::string why;
};
// Appends `e` (its seq ignored) to its workflow's subject. `expect_last`: the subject's last
// sequence it must follow (0: the subject must be empty; nullopt: no expectation).
append_result append_entry(jsCtx* js, const std::string& id, const entry& e, const std::string& msg_id,
                           std::optional<std::uint64_t> expect_last);

// Puts a task for workflow `id` (named `workflow`) on the task queue; `msg_id` keeps copies out.
// `wake`: it is sent to wake a workflow parked on a signal (it is dropped if it is not).
// `start`: the workflow's start entry, carried in the first task's headers when its input is
// small (task_start); the body is the id in every task.
append_result put_task(jsCtx* js, const std::string& workflow, const std::string& id, const std::string& msg_id,
                       bool wake, const entry* start = nullptr);
// The message put_task publishes (the caller owns it).
natsMsg* task_message(const std::string& workflow, const std::string& id, bool wake, const entry* start);
bool is_wake(natsMsg* task);
// A task's workflow id.
std::string task_id(natsMsg* task);
// The start entry a task carries (the first task of a workflow whose input is small): its
// executor claims after it without reading the journal. A later delivery reads anyway.
std::optional<entry> task_start(natsMsg* task);

// What starting and signalling a workflow do, for the workers' API and the commands alike.
// An empty `why` means it worked; otherwise `why` is the one-line reason and `code` says
// which (workflow_error::reason's names: unknown_workflow, conflict, finished, invalid,
// unavailable).
struct request_result {
  std::string code, why;
  std::uint64_t seq = 0;  // start: the start entry; signal: the signal entry
};
request_result start_workflow(jsCtx* js, const std::string& workflow, const std::string& id, const std::string& input);
request_result signal_workflow(jsCtx* js, const std::string& id, const std::string& signal, const std::string& payload);

}  // namespace loopfleet::cluster
