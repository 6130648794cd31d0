// The worker's environment, the contract between the supervisor, which sets these for each
// worker, and the runtimes that read them (this one, python/loopfleet, a Node app, the
// cluster API). One list, because the supervisor must also strip every one of them from what
// it passes on: a value inherited from its own parent (a supervisor started by a worker, or
// by systemd) would otherwise be read in place of one it set only sometimes, and the strip
// list written out by hand had already missed LOOPFLEET_NATS_URL, LOOPFLEET_NODE and
// LOOPFLEET_HANDOFF_FD.
#pragma once

namespace loopfleet::worker_env {

// systemd's socket activation and notify protocol (sd_listen_fds(3), sd_notify(3)).
inline constexpr const char* listen_pid = "LISTEN_PID";
inline constexpr const char* listen_fds = "LISTEN_FDS";
inline constexpr const char* listen_fdnames = "LISTEN_FDNAMES";
inline constexpr const char* notify_socket = "NOTIFY_SOCKET";
inline constexpr const char* watchdog_usec = "WATCHDOG_USEC";
inline constexpr const char* watchdog_pid = "WATCHDOG_PID";
// loopfleet's own.
inline constexpr const char* slot = "LOOPFLEET_SLOT";
inline constexpr const char* workers = "LOOPFLEET_WORKERS";  // offload pools size by it
inline constexpr const char* generation = "LOOPFLEET_GENERATION";
inline constexpr const char* notify_fd = "LOOPFLEET_NOTIFY_FD";        // for runtimes without AF_UNIX by name
inline constexpr const char* heartbeat_fd = "LOOPFLEET_HEARTBEAT_FD";  // heartbeat.hpp
inline constexpr const char* handoff_fd = "LOOPFLEET_HANDOFF_FD";      // handoff.hpp
inline constexpr const char* nats_url = "LOOPFLEET_NATS_URL";          // the cluster layer, when on
inline constexpr const char* node = "LOOPFLEET_NODE";
// The access log (http/access_log.hpp): a path, or a descriptor (the supervisor's stdout for
// `--access-log -`), and json or combined.
inline constexpr const char* access_log = "LOOPFLEET_ACCESS_LOG";
inline constexpr const char* access_log_fd = "LOOPFLEET_ACCESS_LOG_FD";
inline constexpr const char* access_log_format = "LOOPFLEET_ACCESS_LOG_FORMAT";
// Set when the supervisor runs a socket keeper (supervisor/keeper.hpp): a worker that can
// outlive it (runtime/orphan.hpp) watches this pid instead of dying with it, and serves on
// for at most this many milliseconds while a new supervisor is started.
inline constexpr const char* supervisor_pid = "LOOPFLEET_SUPERVISOR_PID";
inline constexpr const char* orphan_timeout_ms = "LOOPFLEET_ORPHAN_TIMEOUT_MS";
// Where the Python launchers are found (worker_python_path).
inline constexpr const char* python_path = "PYTHONPATH";

inline constexpr const char* all[] = {listen_pid, listen_fds,   listen_fdnames, notify_socket, watchdog_usec,
                                      watchdog_pid, slot,       workers,        generation,    notify_fd,
                                      heartbeat_fd, handoff_fd, nats_url,       node,          python_path,
                                      access_log,   access_log_fd, access_log_format, supervisor_pid,
                                      orphan_timeout_ms};

}  // namespace loopfleet::worker_env
