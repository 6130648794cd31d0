// The front's decisions as plain functions over plain values: what each signal and each
// child's exit makes `loopfleet front` do to haproxy and keepalived. front.cpp only applies
// them, and front_test.cpp drives every order of events without a process.
#pragma once

namespace loopfleet::front {

// The loop's view when something happens. Facts only: a child that exited is already
// marked gone when the event about it is decided.
struct children_view {
  bool haproxy = false;     // haproxy runs
  bool keepalived = false;  // keepalived runs (never without --vip)
  int stop = 0;             // the stop haproxy has been told: 0, SIGUSR1 (soft) or SIGTERM (hard)
};

enum class front_event {
  graceful_stop,  // SIGTERM, SIGINT
  fast_stop,      // SIGQUIT
  reload,         // SIGHUP
  keepalived_exited,
  haproxy_exited,
  quiet_second,  // a second without a signal while stopping (or an interrupted wait)
};

struct front_step {
  bool announce = false;         // the event gets its log line
  bool stop_keepalived = false;  // SIGTERM to keepalived: it gives the address to a peer
  int signal_haproxy = 0;        // send haproxy this signal now (0: none)
  int stop = 0;                  // the stop in force from now on
  bool exit = false;             // both children are gone: exit with haproxy's status

  bool operator==(const front_step&) const = default;
};

// A stop goes to keepalived first, and haproxy is told only once keepalived is gone, so
// clients reach the peer that took the address instead of closed listeners. A hard stop
// (SIGTERM to haproxy) wins over a soft one (SIGUSR1), never the reverse, and does not wait
// for the address to move. HAProxy's master can miss a signal that comes in its first second
// or two (seen with 2.6: the soft stop never began), so while stopping the loop wakes every
// second (`stopping`) and a quiet second repeats the stop to haproxy.
front_step decide(const children_view& now, front_event e);

// Whether the loop waits for signals with a one-second limit (a stop is under way) rather
// than for ever.
inline bool stopping(const children_view& now) { return now.stop != 0; }

}  // namespace loopfleet::front
