// Schedules: a job submitted every DURATION, or once at a time, fired by every node and
// stored once per tick across the cluster (docs/cluster.md, "Schedules"). This header is the
// pure part: what a schedule is, how its text is read, which ticks are due, and its stored
// form. No NATS here; scheduler.hpp is the node's loop that applies it.
//
// Every tick is a point in UTC computed from the schedule alone (multiples of `every` since
// the Unix epoch, or `at`), never from when a node started or looked, so every node names
// the same ticks; each node publishes each due tick with the message id tick_id(NAME, T), and
// JetStream's duplicate window keeps one.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet::cluster {

// The key-value bucket of definitions (key = the schedule's name) and the stream of fired
// ticks (subject loopfleet.tick.NAME, limits retention: see the windows below).
inline constexpr const char* schedules_bucket = "loopfleet_schedules";
inline constexpr const char* ticks_stream = "LOOPFLEET_TICKS";
inline constexpr std::string_view tick_subject_prefix = "loopfleet.tick.";

// A tick missed while no node could fire it (the whole cluster down, JetStream without a
// quorum) is still fired when a node can, if it is at most this old; older ones are skipped
// and shown as missed. It must stay below the duplicate window minus any clock skew between
// nodes: a tick published again after the window would be stored twice.
inline constexpr std::chrono::milliseconds catch_up_window{std::chrono::minutes(5)};
// The ticks stream's duplicate window, and its MaxAge: ticks are kept an hour, longer than the
// window, because nats-server rebuilds a restarted replica's duplicate map from the messages
// it still stores (a tick deleted early would be forgotten and could be stored again).
inline constexpr std::chrono::milliseconds tick_duplicate_window{std::chrono::minutes(10)};
inline constexpr std::chrono::milliseconds tick_max_age{std::chrono::hours(1)};
// A tick becomes a job only while the jobs stream's duplicate window (10 minutes, from the
// first copy) still covers it; one that could not be stored as a job for longer (the jobs
// stream without a quorum that long) is skipped rather than risk a second job.
inline constexpr std::chrono::milliseconds move_within{std::chrono::minutes(9)};
// A node stores the job of a tick it stored, and of a tick another node stored if that was
// at most this long ago: the node that stored it may die before it stores the job, and a copy
// this fresh is still in the jobs stream's duplicate map. An older duplicate (a node catching
// up) is left to the nodes that fired it then.
inline constexpr std::chrono::milliseconds move_duplicates_within{std::chrono::seconds(10)};
// Shorter periods are loops, not schedules: each tick costs every node a replicated publish.
inline constexpr std::chrono::milliseconds min_every{std::chrono::seconds(1)};

struct schedule {
  std::string name;
  std::string job;              // the job it submits (handle_jobs name); default: the schedule's name
  std::string payload;
  std::int64_t every_ms = 0;    // > 0: a tick at every multiple of it since 1970-01-01T00:00:00Z
  std::int64_t at_ms = 0;       // > 0: one tick at this Unix time (ms)
  std::int64_t created_ms = 0;  // ticks at or before it never fire
  int max_attempts = 5;
  std::int64_t time_limit_ms = 30000;
  std::string source;           // "cli", or "config NODE" for a fixed schedule of the run config
};

// A schedule or job name: letters, digits, '-' and '_' (it is a NATS subject token and a key).
std::optional<std::string> check_name(std::string_view what, std::string_view name);
// "1s", "90", "5m", "1h", "1d": the duration syntax of every flag; at least min_every.
std::optional<std::string> parse_every(std::string_view text, std::int64_t& every_ms);
// "2026-12-02T01:00:00Z" (RFC 3339 in UTC, fractions of a second allowed) or "+DURATION" from
// `now_ms`; must lie in the future.
std::optional<std::string> parse_at(std::string_view text, std::int64_t now_ms, std::int64_t& at_ms);
// A fixed schedule of the run config: "NAME every DURATION [PAYLOAD...]" (the job is NAME; the
// payload is the rest of the line, possibly empty). The error quotes the entry.
std::optional<std::string> parse_schedule_entry(std::string_view entry, schedule& out);

// "every 1s" / "at 2026-12-02T01:00:00Z".
std::string spec_text(const schedule& s);
// Unix ms as RFC 3339 UTC: "2026-12-02T01:00:00Z", with ".250" when not a whole second.
std::string utc_text(std::int64_t ms);
// The message id of tick T in the ticks stream, and the idempotency key of the job it becomes.
std::string tick_id(std::string_view name, std::int64_t tick_ms);

// --- the firing policy ---

// The ticks to fire now, oldest first, at most `limit`: T <= now, T > created, T > the last
// tick fired (if known), and T >= now - window (older ones are missed).
std::vector<std::int64_t> due_ticks(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                                    std::chrono::milliseconds window, std::size_t limit);
// The next tick that will fire (it may be overdue: earlier than now, when firing is late), or
// nullopt when none will (a one-shot fired or missed).
std::optional<std::int64_t> next_tick(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                                      std::chrono::milliseconds window);
// Ticks that never fired and never will: older than the window when a node could next fire.
std::int64_t missed_ticks(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                          std::chrono::milliseconds window);

// Whether a node that published tick T now (`stored`: its copy was the one stored, not a
// duplicate) also stores T's job.
bool should_move(bool stored, std::int64_t tick_ms, std::int64_t now_ms);
// Too old to become a job without risking a second one (move_within).
bool too_old_to_move(std::int64_t tick_ms, std::int64_t now_ms);

// The same schedule but for when and by whom it was stored (a fixed schedule is stored again
// only when its config entry changed).
bool same_schedule(const schedule& a, const schedule& b);

// The stored form (JSON), and its reading; nullopt for anything that is not a schedule.
std::string to_json(const schedule& s);
std::optional<schedule> schedule_from_json(std::string_view text);

}  // namespace loopfleet::cluster
