// The floor of an epoll hello server, for bench/http_floor.py: one thread, level-triggered
// epoll, one recv and one send per readable connection, nothing else. Not a server: it answers
// every "\r\n\r\n" it sees with the same response, which is all wrk sends; no parsing, limits
// or timeouts. What it shows is the least any server on epoll can spend per request.
#define _GNU_SOURCE  // accept4
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
static uint32_t window[65536];  // by descriptor
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
static char out[64 * sizeof(RESP)];
int main(int argc, char** argv) {
  int port = atoi(argv[1]), one = 1;
  for (int i = 0; i < 64; ++i) memcpy(out + i * (sizeof(RESP) - 1), RESP, sizeof(RESP) - 1);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(lfd, (void*)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event evs[512];
  char buf[4096];
  for (;;) {
    int k = epoll_wait(ep, evs, 512, -1);
    for (int i = 0; i < k; ++i) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; window[fd & 0xffff] = 0; close(fd); continue; }
      int n = 0;
      uint32_t* w = &window[fd & 0xffff];  // the last 4 bytes seen: a request may end across reads
      for (ssize_t j = 0; j < r; ++j)
        if ((*w = (*w << 8) | (unsigned char)buf[j]) == 0x0d0a0d0a) ++n;
      if (n > 64) n = 64;  // wrk does not pipeline; the response buffer holds 64
      if (n) send(fd, out, (size_t)n * (sizeof(RESP) - 1), MSG_NOSIGNAL);
    }
  }
}
