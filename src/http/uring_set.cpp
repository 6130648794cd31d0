// The connections on io_uring: no system call per request. Each connection has one multishot
// receive, which the kernel completes into a buffer it takes from a ring the server provides,
// so an idle connection holds no buffer; sends are submitted in one io_uring_enter with the
// batch that produced them. The ring's descriptor is the one thing Asio's loop waits on: one
// wake takes every completion there is, resumes each connection as epoll's ready_set would,
// and submits what they asked for.
//
// What a completion refers to is found by descriptor and generation (user_data), never by
// pointer: a completion can arrive after its connection ended, and it then finds no one (a
// buffer it carries goes back to the ring). A connection's bytes in a send still in flight
// when it ends are kept here until the send's completion says the kernel is done with them.
#include "http/ready_set.hpp"

#include "http/connection_policy.hpp"
#include "runtime/log.hpp"

#ifdef LOOPFLEET_HAVE_URING

#include <boost/asio/post.hpp>

#include <liburing.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unistd.h>

namespace loopfleet::http::detail {
namespace {

// The provided buffers: a request usually fits in one (nginx reads a header into 1 KiB first
// too), a longer one comes in several. A buffer goes back as soon as its completion has been
// handled, but a wake can find thousands of completions (10,000 connections that each sent a
// request), each holding one: a ring that runs dry ends receives with ENOBUFS, to be started
// again: with 2,048 buffers, 10,000 connections were served a quarter fewer requests per
// CPU-second than with 8,192 (two runs each, perf showing the restarts). More than there are
// connections at the default --max-connections: every one of them can have a completion
// waiting in the queue, each holding a buffer, and with 8,192 the ring still ran dry at
// 10,000. So there are many, and only as many are offered to the kernel as a wake needs
// (buffer_offer): the memory touched stays small at small concurrency.
constexpr unsigned buffer_count = 16384;  // a power of two (the ring's mask)
constexpr unsigned buffer_size = 1024;
constexpr unsigned least_offered = 128;
constexpr std::size_t page = 4096;
constexpr unsigned buffers_per_page = page / buffer_size;
constexpr unsigned short buffer_group = 1;
// Submission and completion queue sizes. A burst of new connections arms more receives than
// the submission queue holds: it is submitted when full. The completion queue holds a
// receive's and a send's completion for each of 10,000 connections; beyond it the kernel
// keeps them on its overflow list, an allocation each (16,384 overflowed at 10,000
// connections, and p99 latency was 5-20 % higher than with 32,768).
constexpr unsigned sq_entries = 1024;
constexpr unsigned cq_entries = 32768;
// Completions handled per wake before the loop turns to its other work (timers, accepts).
constexpr std::size_t batch_limit = 1024;
// A connection that holds this much input it has not read (a client far ahead of its
// responses) stops receiving until it has read some: the kernel's socket buffer, not ours,
// holds the rest, and TCP slows the client down as it does with epoll.
constexpr std::size_t hold_limit = 64 * 1024;

enum class op : std::uint64_t { receive = 1, send = 2, other = 3 };
constexpr std::uint32_t generation_mask = 0x3fffffffu;  // 30 bits, between the descriptor and the op

// user_data: the descriptor, the generation of its watch and what the operation was.
constexpr std::uint64_t tag(int fd, std::uint32_t gen, op what) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(fd)) << 32) |
         (static_cast<std::uint64_t>(gen & generation_mask) << 2) | static_cast<std::uint64_t>(what);
}

class uring_set final : public connection_io {
 public:
  uring_set(boost::asio::io_context& loop, io_uring& ring, io_uring_buf_ring* buffers_ring, char* buffers)
      : loop_(loop), ring_(ring), ring_fd_(loop, ring.ring_fd), br_(buffers_ring), buffers_(buffers) {
    io_uring_buf_ring_init(br_);
    spare_.reserve(buffer_count);
    for (unsigned id = buffer_count; id-- > 0;) spare_.push_back(static_cast<std::uint16_t>(id));  // 0 on top
    offer_more();
    arm();
  }
  ~uring_set() override {
    *alive_ = false;
    boost::system::error_code ignored;
    ring_fd_.cancel(ignored);
    ring_fd_.release();  // the ring closes its own descriptor
    // Every operation is cancelled and its completion collected before the buffers and the
    // kept bytes go: a forked child's copy of the ring's descriptor could keep the ring, and
    // operations on it, alive past io_uring_queue_exit.
    if (io_uring_sqe* s = next_sqe()) {
      constexpr std::uint64_t everything = tag(-1, 0, op::other);
      io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data64(s, everything);
      io_uring_submit(&ring_);
      // The cancel's own completion comes after those of what it cancelled.
      __kernel_timespec wait{.tv_sec = 0, .tv_nsec = 100'000'000};
      io_uring_cqe* c = nullptr;
      while (io_uring_wait_cqe_timeout(&ring_, &c, &wait) == 0) {
        bool last = c->user_data == everything;
        io_uring_cqe_seen(&ring_, c);
        if (last) break;
      }
    }
    io_uring_queue_exit(&ring_);
    ::munmap(buffers_, std::size_t{buffer_count} * buffer_size);
    ::munmap(br_, buffer_count * sizeof(io_uring_buf));
    delete &ring_;
  }

  bool add(int fd, readiness& io) override {
    if (static_cast<std::size_t>(fd) >= watched_.size()) watched_.resize(static_cast<std::size_t>(fd) + 1024);
    watched_[fd] = {&io, ++generation_ & generation_mask};
    io.readable = false;  // until the first receive completes
    if (start_receive(fd, io)) return true;
    watched_[fd] = {};
    errno = ENOMEM;
    return false;
  }

  // The descriptor is closed on the ring, after the cancels: a receive queued for it and not
  // yet submitted (a restart in this wake) must not find its number reused by then.
  void close(int fd, readiness& io) override {
    auto& w = watched_[fd];
    if (io.receiving) cancel(tag(fd, w.gen, op::receive));
    if (io.sending) cancel(tag(fd, w.gen, op::send));
    w = {};
    io_uring_sqe* s = next_sqe();
    if (!s) {
      ::close(fd);
      return;
    }
    io_uring_prep_close(s, fd);
    io_uring_sqe_set_data64(s, static_cast<std::uint64_t>(op::other));
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
    submit_soon();
  }

  long receive(int fd, readiness& io, char* room, std::size_t size) override {
    std::size_t got = 0;
    if (!io.held.empty()) {
      got = std::min(size, io.held.size());
      std::memcpy(room, io.held.data(), got);
      io.held.erase(0, got);
      if (io.held.empty()) std::string().swap(io.held);  // an idle connection holds nothing
    }
    if (got < size && io.chunk_size > 0) {
      std::size_t n = std::min<std::size_t>(size - got, io.chunk_size);
      std::memcpy(room + got, io.chunk, n);
      io.chunk += n;
      io.chunk_size -= static_cast<std::uint32_t>(n);
      got += n;
    }
    io.readable = !io.held.empty() || io.chunk_size > 0 || io.eof_seen;
    if (got > 0) {
      if (io.receive_paused && io.held.size() < hold_limit / 2) resume_receiving(fd, io);
      return static_cast<long>(got);
    }
    return io.eof_seen ? -1 : 0;
  }

  long send(int fd, readiness& io, const char* data, std::size_t size) override {
    if (io.send_done) {
      io.send_done = false;
      return io.send_result >= 0 ? io.send_result : -1;
    }
    if (io.sending) return 0;
    io_uring_sqe* s = next_sqe();
    if (!s) return -1;
    io_uring_prep_send(s, fd, data, size, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(fd, watched_[fd].gen, op::send));
    io.sending = true;
    io.writable = false;
    submit_soon();
    return 0;
  }

  void keep_until_sent(int fd, readiness& io, std::shared_ptr<void> bytes) override {
    if (io.sending) kept_.push_back({tag(fd, watched_[fd].gen, op::send), std::move(bytes)});
  }

  std::string_view name() const override { return "io_uring"; }

  // Every 250 ms (the server's tick): a quiet ring offers fewer buffers, and the pages of
  // buffers the kernel does not hold go back to the system. Only those: a buffer in the ring
  // may hold input whose completion is not read yet.
  void tick() override {
    unsigned before = offer_.target;
    offer_ = after_tick(offer_, ran_short_, least_offered);
    ran_short_ = false;
    if (taken_back_ && !register_ring()) return;  // taken back, not yet given again: try now
    if (take_back_ring(in_ring_, offer_.target, offer_.target < before)) {
      // Its own handler: it handles completions, which resume connections, and the server's
      // tick is still walking its connections.
      boost::asio::post(loop_, [this, alive = alive_] {
        if (*alive) take_back();
      });
      return;
    }
    if (offer_.target >= before) return;
    auto page_free = [&](unsigned first) {
      for (unsigned id = first; id < first + buffers_per_page; ++id)
        if (offered_[id]) return false;
      return true;
    };
    for (unsigned first = 0; first < buffer_count;) {  // runs of free pages, one madvise each
      unsigned end = first;
      while (end < buffer_count && page_free(end)) end += buffers_per_page;
      if (end > first)
        ::madvise(buffers_ + std::size_t{first} * buffer_size, std::size_t{end - first} * buffer_size, MADV_DONTNEED);
      first = end + buffers_per_page;
    }
  }

 private:
  struct watch {
    readiness* io = nullptr;
    std::uint32_t gen = 0;
  };

  readiness* find(int fd, std::uint32_t gen) const {
    if (fd < 0 || static_cast<std::size_t>(fd) >= watched_.size()) return nullptr;
    const watch& w = watched_[fd];
    return w.io && w.gen == gen ? w.io : nullptr;
  }

  // A free submission entry; when the queue is full, it is submitted first. Null if the
  // kernel takes none (out of memory): the caller gives up what it wanted to submit.
  io_uring_sqe* next_sqe() {
    for (int tries = 0; tries < 3; ++tries) {
      if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) return s;
      if (io_uring_submit(&ring_) < 0) io_uring_get_events(&ring_);
    }
    log::warn("io_uring: the submission queue stays full; a connection ends");
    return nullptr;
  }

  bool start_receive(int fd, readiness& io) {
    io_uring_sqe* s = next_sqe();
    if (!s) return false;
    io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = buffer_group;
    io_uring_sqe_set_data64(s, tag(fd, watched_[fd].gen, op::receive));
    io.receiving = true;
    submit_soon();
    return true;
  }

  void cancel(std::uint64_t what) {
    io_uring_sqe* s = next_sqe();
    if (!s) return;  // the operation then ends with the connection's descriptor
    io_uring_prep_cancel64(s, what, 0);
    io_uring_sqe_set_data64(s, static_cast<std::uint64_t>(op::other));
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
    submit_soon();
  }

  // The ring of offered buffers taken back from the kernel (take_back_ring says when): once it
  // is unregistered, the kernel takes no more buffers, and every one it took has its
  // completion in the queue (a receive takes its buffer and posts its completion under the
  // ring's lock, which unregistering takes). Those handled, every buffer is ours again: all
  // pages go back to the system, and a fresh ring is offered the current target. A receive
  // that finds no ring meanwhile ends with ENOBUFS, and is started again once there is one.
  void take_back() {
    if (taken_back_ || io_uring_unregister_buf_ring(&ring_, buffer_group) != 0) return;
    taken_back_ = true;
    while (on_ready() > 0) {}  // every completion: no receive can start again meanwhile
    for (unsigned id = 0; id < buffer_count; ++id)
      if (offered_[id]) give_back(id);
    ::madvise(buffers_, std::size_t{buffer_count} * buffer_size, MADV_DONTNEED);
    register_ring();
  }

  bool register_ring() {
    io_uring_buf_ring_init(br_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uint64_t>(br_);
    reg.ring_entries = buffer_count;
    reg.bgid = buffer_group;
    if (int err = io_uring_register_buf_ring(&ring_, &reg, 0); err != 0) {
      log::warn(std::string("io_uring: cannot register the receive buffers again (") + std::strerror(-err) +
                "); receiving waits for the next tick");
      return false;
    }
    taken_back_ = false;
    offer_more();
    for (auto [fd, gen] : restart_) {
      readiness* io = find(fd, gen);
      if (io && io->wants_receive() && !start_receive(fd, *io)) end_of_input(*io);
    }
    restart_.clear();
    submit_soon();
    return true;
  }

  void resume_receiving(int fd, readiness& io) {
    io.receive_paused = false;
    // Its last receive may not have reported its end yet; then that completion restarts it.
    if (io.wants_receive() && !start_receive(fd, io)) io.eof_seen = io.readable = true;
  }

  // A buffer the kernel filled and the connection has read: the most recently used is the
  // next offered, so that the same few stay in use.
  void give_back(unsigned id) {
    offered_[id] = false;
    --in_ring_;
    spare_.push_back(static_cast<std::uint16_t>(id));
  }

  // Tops the kernel's ring up to what is offered.
  void offer_more() {
    if (taken_back_) return;
    int added = 0;
    while (in_ring_ < offer_.target && !spare_.empty()) {
      unsigned id = spare_.back();
      spare_.pop_back();
      io_uring_buf_ring_add(br_, buffers_ + std::size_t{id} * buffer_size, buffer_size, static_cast<unsigned short>(id),
                            io_uring_buf_ring_mask(buffer_count), added++);
      offered_[id] = true;
      ++in_ring_;
    }
    if (added > 0) io_uring_buf_ring_advance(br_, added);
  }

  // Outside a wake of the ring (an async handler's answer, the tick timer's timeout, a new
  // connection), what was queued is submitted once the loop has run what it is running.
  void submit_soon() {
    if (in_wake_ || submit_posted_) return;
    submit_posted_ = true;
    boost::asio::post(loop_, [this, alive = alive_] {
      if (!*alive) return;
      submit_posted_ = false;
      io_uring_submit(&ring_);
    });
  }

  void arm() {
    ring_fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec) return;  // closed with the server; `this` may be gone
      on_ready();
      arm();
    });
  }

  // Takes the completions there are, then submits what they asked for; a submit completes
  // sends at once, so it looks again, up to a batch.
  std::size_t on_ready() {
    in_wake_ = true;
    grown_in_wake_ = false;
    std::size_t handled = 0;
    while (handled < batch_limit) {
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes_, std::size(cqes_));
      // Copied out first: resuming a connection can submit, and the kernel can then reuse
      // the entries.
      for (unsigned i = 0; i < n; ++i) done_[i] = {cqes_[i]->user_data, cqes_[i]->res, cqes_[i]->flags};
      io_uring_cq_advance(&ring_, n);
      for (unsigned i = 0; i < n; ++i) dispatch(done_[i]);
      handled += n;
      offer_more();
      bool queued = io_uring_sq_ready(&ring_) > 0;
      if (queued) io_uring_submit(&ring_);
      if (n == 0 && !queued) break;
    }
    in_wake_ = false;
    if (io_uring_sq_ready(&ring_) > 0) submit_soon();
    return handled;
  }

  struct completion {
    std::uint64_t user_data;
    std::int32_t res;
    std::uint32_t flags;
  };

  void dispatch(const completion& c) {
    auto what = static_cast<op>(c.user_data & 3);
    int fd = static_cast<int>(c.user_data >> 32);
    auto gen = static_cast<std::uint32_t>((c.user_data >> 2) & generation_mask);
    if (what == op::receive) return received(fd, gen, c);
    if (what == op::send) return sent(fd, gen, c);
  }

  void received(int fd, std::uint32_t gen, const completion& c) {
    bool buffer = c.flags & IORING_CQE_F_BUFFER;
    unsigned id = c.flags >> IORING_CQE_BUFFER_SHIFT;
    readiness* io = find(fd, gen);
    if (io) {
      if (!(c.flags & IORING_CQE_F_MORE)) io->receiving = false;
      if (c.res > 0 && buffer) deliver(fd, gen, *io, buffers_ + std::size_t{id} * buffer_size, c.res);
      else if (c.res == 0 || (c.res < 0 && c.res != -ENOBUFS && c.res != -ECANCELED)) end_of_input(*io);
    }
    if (c.res == -ENOBUFS && !grown_in_wake_ && !taken_back_) {  // one doubling per wake, however many ran short
      ran_short_ = grown_in_wake_ = true;
      offer_ = after_shortage(offer_, buffer_count);  // offered by on_ready, before the restart is submitted
    }
    if (buffer) give_back(id);
    // Its input waits in the socket; a restarted receive would post it at the end of the
    // completion queue, a whole queue after it came (up to 16,384 completions at 10,000
    // connections: p99.9 latency several times the median). It is read here instead.
    io = find(fd, gen);
    if (c.res == -ENOBUFS && io && !io->receive_paused && !io->eof_seen) read_directly(fd, gen, *io);
    // A receive that stopped while the connection still wants input starts again: the ring
    // of buffers ran dry for a moment (ENOBUFS), or the kernel ended the multishot.
    io = find(fd, gen);
    if (!io || !io->wants_receive()) return;
    if (taken_back_) restart_.emplace_back(fd, gen);  // it would only find no ring again
    else if (!start_receive(fd, *io)) end_of_input(*io);
  }

  // The connection reads straight from the kernel's buffer if it is waiting for input;
  // whatever it leaves, or input for a connection busy with something else, is held.
  void deliver(int fd, std::uint32_t gen, readiness& io, const char* data, std::int32_t size) {
    if (io.waiting == wait_for::input && io.held.empty()) {
      io.chunk = data;
      io.chunk_size = static_cast<std::uint32_t>(size);
      io.readable = true;
      io.wake();
      if (find(fd, gen) != &io) return;  // it ended
      if (io.chunk_size > 0) io.held.append(io.chunk, io.chunk_size);
      io.chunk = nullptr;
      io.chunk_size = 0;
    } else {
      io.held.append(data, static_cast<std::size_t>(size));
      io.readable = true;
      if (io.waiting == wait_for::input) io.wake();
      if (find(fd, gen) != &io) return;
    }
    if (io.held.size() >= hold_limit && io.receiving && !io.receive_paused) {
      io.receive_paused = true;
      cancel(tag(fd, gen, op::receive));
    }
  }

  void read_directly(int fd, std::uint32_t gen, readiness& io) {
    char room[4096];
    for (std::size_t total = 0; total < hold_limit;) {
      ssize_t n = ::recv(fd, room, sizeof room, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) return end_of_input(io);
      deliver(fd, gen, io, room, static_cast<std::int32_t>(n));
      // A short read took everything there was (as on epoll: still_readable).
      if (find(fd, gen) != &io || io.receive_paused || static_cast<std::size_t>(n) < sizeof room) return;
      total += static_cast<std::size_t>(n);
    }
  }

  void end_of_input(readiness& io) {
    io.eof_seen = true;
    io.readable = true;
    if (io.waiting == wait_for::input) io.wake();
  }

  void sent(int fd, std::uint32_t gen, const completion& c) {
    readiness* io = find(fd, gen);
    if (!io) {
      std::erase_if(kept_, [&](const auto& k) { return k.first == c.user_data; });
      return;
    }
    io->sending = false;
    io->send_done = true;
    io->send_result = c.res;
    io->writable = true;
    if (io->waiting == wait_for::output) io->wake();
  }

  boost::asio::io_context& loop_;
  io_uring& ring_;
  boost::asio::posix::stream_descriptor ring_fd_;
  io_uring_buf_ring* br_;
  char* buffers_;
  std::vector<std::uint16_t> spare_;            // buffers not offered, the most recently used last
  std::vector<bool> offered_ = std::vector<bool>(buffer_count);  // by buffer: in the kernel's ring
  unsigned in_ring_ = 0;
  buffer_offer offer_{least_offered, 0};
  bool ran_short_ = false;  // since the last tick
  bool taken_back_ = false;  // the ring is unregistered (take_back)
  std::vector<std::pair<int, std::uint32_t>> restart_;  // receives to start once it is back
  bool grown_in_wake_ = false;
  std::vector<watch> watched_;  // by descriptor
  std::uint32_t generation_ = 0;
  std::vector<std::pair<std::uint64_t, std::shared_ptr<void>>> kept_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool in_wake_ = false;
  bool submit_posted_ = false;
  io_uring_cqe* cqes_[256];
  completion done_[256];
};

void* map_memory(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // A forked child (an offload helper before its exec) needs none of it, and the kernel's
  // pinned view of the buffer ring must stay the parent's.
  ::madvise(p, size, MADV_DONTFORK);
  return p;
}

// Whether this kernel completes a multishot receive into a provided buffer (Linux 6.0): a
// 5.19 kernel takes every setup step above and then fails each receive with EINVAL, which
// would end every connection. Tried once, on a small ring of its own and a socket pair.
bool multishot_receive_works(std::string& why_not) {
  io_uring ring{};
  if (int err = io_uring_queue_init(4, &ring, 0); err < 0) {
    why_not = std::string("io_uring_setup: ") + std::strerror(-err);
    return false;
  }
  void* mem = map_memory(page);
  int pair[2] = {-1, -1};
  bool works = false;
  if (mem && ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0) {
    auto* br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uint64_t>(br);
    reg.ring_entries = 1;
    reg.bgid = buffer_group;
    if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
      io_uring_buf_ring_init(br);
      io_uring_buf_ring_add(br, static_cast<char*>(mem) + page / 2, 64, 0, io_uring_buf_ring_mask(1), 0);
      io_uring_buf_ring_advance(br, 1);
      io_uring_sqe* s = io_uring_get_sqe(&ring);
      io_uring_prep_recv_multishot(s, pair[0], nullptr, 0, 0);
      s->flags |= IOSQE_BUFFER_SELECT;
      s->buf_group = buffer_group;
      io_uring_cqe* c = nullptr;
      __kernel_timespec wait{.tv_sec = 1, .tv_nsec = 0};
      if (::write(pair[1], "x", 1) == 1 && io_uring_submit(&ring) == 1 &&
          io_uring_wait_cqe_timeout(&ring, &c, &wait) == 0) {
        works = c->res == 1 && (c->flags & IORING_CQE_F_BUFFER);
        if (!works) why_not = std::string("multishot receive (Linux 6.0): ") + std::strerror(c->res < 0 ? -c->res : EINVAL);
      } else {
        why_not = "multishot receive (Linux 6.0): no completion";
      }
    } else {
      why_not = "provided buffer rings (Linux 5.19)";
    }
  } else {
    why_not = std::string("probe: ") + std::strerror(errno);
  }
  io_uring_queue_exit(&ring);  // cancels the receive
  if (pair[0] >= 0) ::close(pair[0]);
  if (pair[1] >= 0) ::close(pair[1]);
  if (mem) ::munmap(mem, page);
  return works;
}

}  // namespace

std::unique_ptr<connection_io> make_uring_set(boost::asio::io_context& loop, std::string& why_not) {
  if (!multishot_receive_works(why_not)) return nullptr;
  auto* ring = new io_uring{};
  io_uring_params params{};
  // COOP_TASKRUN: the kernel does not interrupt the loop (an IPI) to finish a receive; the
  // work waits for the loop's next system call, and wakes it if it sleeps (in epoll_wait).
  // TASKRUN_FLAG: liburing's peek then sees that such work is waiting and runs it, so a wake
  // goes on while there is any. Without them the ring served fewer requests per CPU-second
  // than epoll at 1,000 and 10,000 connections; with them, more (docs/benchmarks.md).
  // DEFER_TASKRUN cannot be used: its work does not wake a loop asleep in epoll_wait, and the
  // eventfd it can signal instead was signalled 8-19 ms late (docs/benchmarks.md).
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  params.cq_entries = cq_entries;
  int err = io_uring_queue_init_params(sq_entries, ring, &params);
  if (err < 0) {
    delete ring;
    why_not = std::string("io_uring_setup: ") + std::strerror(-err);
    return nullptr;
  }
  auto* br = static_cast<io_uring_buf_ring*>(map_memory(buffer_count * sizeof(io_uring_buf)));
  auto* buffers = static_cast<char*>(map_memory(std::size_t{buffer_count} * buffer_size));
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(br);
  reg.ring_entries = buffer_count;
  reg.bgid = buffer_group;
  if (!br || !buffers || (err = io_uring_register_buf_ring(ring, &reg, 0)) != 0) {
    why_not = br && buffers ? std::string("provided buffer rings (Linux 5.19): ") + std::strerror(-err)
                            : std::string("mmap: ") + std::strerror(errno);
    if (br) ::munmap(br, buffer_count * sizeof(io_uring_buf));
    if (buffers) ::munmap(buffers, std::size_t{buffer_count} * buffer_size);
    io_uring_queue_exit(ring);
    delete ring;
    return nullptr;
  }
  return std::make_unique<uring_set>(loop, *ring, br, buffers);
}

}  // namespace loopfleet::http::detail

#else  // built without liburing

namespace loopfleet::http::detail {

std::unique_ptr<connection_io> make_uring_set(boost::asio::io_context&, std::string& why_not) {
  why_not = "built without liburing";
  return nullptr;
}

}  // namespace loopfleet::http::detail

#endif
