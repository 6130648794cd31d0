// The decisions of a connection's protocol loop as plain functions over plain values, so unit
// tests (connection_policy_test.cpp) check them without a socket. Inline: the loop is the hot
// path and calls them for every request.
#pragma once

#include <loopfleet/http.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace loopfleet::http::detail {

// Where a connection is; decides which deadline applies and whether drain may close it.
enum class phase : std::uint8_t {
  waiting,   // between requests (or before the first byte): idle timeout, or header timeout at first
  header,    // part of a request line / header has arrived
  body,      // header complete, body still arriving
  handling,  // a handler is running: no deadline
  writing,   // a response is being sent: send timeout
  closing,   // lingering after the last response, before close
};

// What a response says about its connection.
struct connection_verdict {
  bool close = false;          // "Connection: close", and the connection ends after it
  bool keep_alive_10 = false;  // "Connection: keep-alive": an HTTP/1.0 client asked to keep it
};

// After a handler: the connection stays only if the client allows it and no drain has begun
// (a drain never ends, so looking once the handler returned also covers one that began while
// it ran).
constexpr connection_verdict after_response(bool client_keeps_alive, bool draining, int version) {
  bool keep = client_keeps_alive && !draining;
  return {.close = !keep, .keep_alive_10 = keep && version == 10};
}

// How long a connection may wait for its next request: a drain gives it only the short grace
// for the request the client may be sending right then.
constexpr std::chrono::milliseconds idle_timeout(const server_options& o, bool draining) {
  return draining ? o.drain_idle_timeout : o.idle_timeout;
}

// What the read buffer needs before the next read. Bytes [begin, end) are not parsed yet.
enum class buffer_room {
  reset,    // everything was parsed: read from the start again
  enough,   // there is room after `end`
  compact,  // full, but parsed bytes at the front can go
  grow,     // full of one unfinished header: double it, up to `max`
  full,     // at `max` and still no complete header (the parser's limit is below it)
};
constexpr buffer_room room_for_read(std::size_t begin, std::size_t end, std::size_t size, std::size_t max) {
  if (begin == end) return buffer_room::reset;
  if (end != size) return buffer_room::enough;
  if (begin > 0) return buffer_room::compact;
  return size < max ? buffer_room::grow : buffer_room::full;
}

// Whether a socket may still hold input after a read that got `got` of the `asked` bytes. A
// short read took everything there was; with edge-triggered epoll, whatever arrives after it
// raises a new event, so the connection can sleep until then instead of reading again to meet
// EAGAIN (nginx's rule in ngx_unix_recv). Once the peer's FIN or an error has been reported,
// no new event will come for it: read again, to see the end.
constexpr bool still_readable(std::size_t got, std::size_t asked, bool eof_seen) { return got == asked || eof_seen; }

// Whether a connection's buffers go back to the server's spares when it goes idle: buffers a
// long header, a large response or a large body made grow are freed instead, so that what
// the spares hold stays small.
constexpr std::size_t lendable_capacity = 64 * 1024;
constexpr bool lendable_again(std::size_t in_size, std::size_t out_capacity, std::size_t body_capacity) {
  return in_size <= 4096 && out_capacity <= lendable_capacity && body_capacity <= lendable_capacity;
}

// Whether a failed read is the tick timer cutting a request short, which the client is told
// with a 408 (a connection timed out between requests just closes).
constexpr bool tells_timeout(bool timed_out, phase where, bool mid_request) {
  return timed_out && (where == phase::header || where == phase::body) && mid_request;
}

// How many io_uring provided buffers the kernel is offered at a time (uring_set.cpp). Every
// buffer the kernel takes is touched, so offering all of them would make them all part of the
// worker's memory even at 64 connections; offering a few, the most recently used first, keeps
// that small. A receive that found none (ENOBUFS) doubles the offer at once; two quiet
// seconds (eight 250 ms ticks without one) halve it, down to `least`.
struct buffer_offer {
  unsigned target = 0;       // buffers kept in the kernel's ring
  unsigned quiet_ticks = 0;  // ticks since a receive last found the ring empty
};
constexpr unsigned offer_quiet_ticks = 8;
constexpr buffer_offer after_shortage(buffer_offer o, unsigned most) {
  return {o.target * 2 < most ? o.target * 2 : most, 0};
}
constexpr buffer_offer after_tick(buffer_offer o, bool ran_short, unsigned least) {
  if (ran_short) return {o.target, 0};
  if (o.quiet_ticks + 1 < offer_quiet_ticks) return {o.target, o.quiet_ticks + 1};
  return {o.target / 2 > least ? o.target / 2 : least, 0};
}
// The kernel's ring cannot give back a buffer it was offered, and after a burst it holds the
// many buffers the burst grew the offer to, each touched once: memory an idle worker keeps.
// When the offer has shrunk and the ring holds more than twice what is now offered, the ring
// is taken back whole (uring_set::take_back), its pages returned, and the offer made afresh.
constexpr bool take_back_ring(unsigned in_ring, unsigned target, bool shrunk) {
  return shrunk && in_ring > 2 * target;
}

}  // namespace loopfleet::http::detail
