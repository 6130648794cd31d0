#include "front/policy.hpp"

#include <signal.h>

namespace loopfleet::front {

namespace {

// Asks haproxy to stop with `haproxy_signal`, through keepalived first when it runs.
front_step stop_with(const children_view& now, int haproxy_signal, front_step step) {
  if (now.stop == SIGTERM) return step;
  step.stop = haproxy_signal;
  step.stop_keepalived = now.keepalived;
  if (now.haproxy && (!now.keepalived || haproxy_signal == SIGTERM)) step.signal_haproxy = haproxy_signal;
  return step;
}

}  // namespace

front_step decide(const children_view& now, front_event e) {
  front_step step{.stop = now.stop};
  switch (e) {
    case front_event::graceful_stop:
      step.announce = true;
      return stop_with(now, SIGUSR1, step);
    case front_event::fast_stop:
      step.announce = true;
      return stop_with(now, SIGTERM, step);
    case front_event::reload:
      // A reload while stopping would bind the listeners again.
      if (now.stop) return step;
      step.announce = true;
      if (now.haproxy) step.signal_haproxy = SIGUSR2;  // new workers take the listeners over
      return step;
    case front_event::keepalived_exited:
      step.exit = !now.haproxy;
      if (!now.stop) {  // on its own: this front can no longer hold the address
        step.announce = true;
        return stop_with(now, SIGUSR1, step);
      }
      if (now.haproxy) step.signal_haproxy = now.stop;  // the address has moved: now haproxy stops
      return step;
    case front_event::haproxy_exited:
      step.announce = true;
      step.stop_keepalived = now.keepalived;
      step.exit = !now.keepalived;
      return step;
    case front_event::quiet_second:
      if (now.stop && now.haproxy && !now.keepalived) step.signal_haproxy = now.stop;
      return step;
  }
  return step;
}

}  // namespace loopfleet::front
