// The floor of an io_uring hello server, for bench/http_floor.py: one thread, one ring, a
// multishot accept, a multishot recv per connection into buffers the kernel picks from a
// provided ring (so an idle connection holds none), one send per batch of requests read. Not a
// server: it answers every "\r\n\r\n" it sees with the same response, which is all wrk sends;
// no parsing, limits or timeouts. What it shows is what the kernel interface itself costs.
#include <liburing.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBUF 4096
#define BUFSZ 2048
#define BGID 1
enum { ACCEPT = 1, RECV = 2, SEND = 3 };
static uint32_t window[65536];  // by descriptor
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
static char out[64 * sizeof(RESP)];

static struct io_uring ring;
static struct io_uring_buf_ring* br;
static char* bufs;

static struct io_uring_sqe* sqe_get(void) {
  struct io_uring_sqe* s = io_uring_get_sqe(&ring);
  if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
  return s;
}
static void arm_recv(int fd) {
  struct io_uring_sqe* s = sqe_get();
  io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = BGID;
  io_uring_sqe_set_data64(s, ((unsigned long long)fd << 8) | RECV);
}
int main(int argc, char** argv) {
  int port = atoi(argv[1]);
  for (int i = 0; i < 64; ++i) memcpy(out + i * (sizeof(RESP) - 1), RESP, sizeof(RESP) - 1);
  struct io_uring_params p = {0};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(8192, &ring, &p) < 0) { perror("queue_init"); return 1; }
  if (posix_memalign((void**)&br, 4096, NBUF * sizeof(struct io_uring_buf))) return 1;
  bufs = malloc((size_t)NBUF * BUFSZ);
  io_uring_buf_ring_init(br);
  struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID};
  if (io_uring_register_buf_ring(&ring, &reg, 0)) { perror("buf_ring"); return 1; }
  for (int i = 0; i < NBUF; ++i) io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
  io_uring_buf_ring_advance(br, NBUF);
  int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(lfd, (void*)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
  struct io_uring_sqe* s = sqe_get();
  io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
  io_uring_sqe_set_data64(s, ACCEPT);
  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe* c;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, c) {
      ++seen;
      unsigned long long ud = c->user_data;
      int kind = ud & 0xff, fd = (int)(ud >> 8);
      if (kind == ACCEPT) {
        if (c->res >= 0) { setsockopt(c->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); arm_recv(c->res); }
        if (!(c->flags & IORING_CQE_F_MORE)) { s = sqe_get(); io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0); io_uring_sqe_set_data64(s, ACCEPT); }
      } else if (kind == RECV) {
        if (c->res <= 0) {
          if (c->res == -ENOBUFS) { arm_recv(fd); continue; }
          window[fd & 0xffff] = 0;
          close(fd);
          continue;
        }
        int bid = c->flags >> IORING_CQE_BUFFER_SHIFT;
        char* b = bufs + (size_t)bid * BUFSZ;
        int n = 0;
        uint32_t* w = &window[fd & 0xffff];  // the last 4 bytes seen: a request may end across reads
        for (int i = 0; i < c->res; ++i)
          if ((*w = (*w << 8) | (unsigned char)b[i]) == 0x0d0a0d0a) ++n;
        io_uring_buf_ring_add(br, b, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
        io_uring_buf_ring_advance(br, 1);
        if (n > 64) n = 64;  // a 2 KiB buffer holds fewer; the response buffer holds 64
        if (n > 0) {
#ifdef SEND_BY_SYSCALL  // the "io_uring recv only" floor: is the read side alone worth it?
          send(fd, out, (size_t)n * (sizeof(RESP) - 1), MSG_NOSIGNAL);
#else
          s = sqe_get();
          io_uring_prep_send(s, fd, out, (size_t)n * (sizeof(RESP) - 1), MSG_NOSIGNAL);
          io_uring_sqe_set_data64(s, ((unsigned long long)fd << 8) | SEND);
#endif
        }
        if (!(c->flags & IORING_CQE_F_MORE)) arm_recv(fd);
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
}
