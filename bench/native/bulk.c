/*
 * Bulk-transfer client and server for the CONNECT throughput workload (bench/lib/workloads.mjs "connect").
 *
 * Why C: on a 2-core machine the client and the sink share the cores with the proxy under test. A Node client
 * spends more CPU per byte than the proxy does, so it set the pace and compressed every ratio towards 1. This
 * program moves bytes with one read()/write() per 256 KiB, the least any user-space client can do, so the
 * figures measure the path between the two ends: a direct connection, or a proxy's tunnel.
 *
 * Protocol (the same as bench/lib/upstream.mjs's TCP server): after the tunnel is up, the client sends
 *   'U' + uint64 big-endian N, then N bytes  → the server reads and drops them, then answers 'K';
 *   'D' + uint64 big-endian N                → the server sends N bytes.
 *
 *   bulk serve PORT                          listen on 127.0.0.1:PORT (0: any), print the port, serve forever
 *   bulk run HOST PORT [PROXY_HOST PROXY_PORT] WARMUP_BYTES TARGET_SECONDS MIN_BYTES MAX_BYTES
 *                                            one connection (through the proxy's CONNECT when given); per
 *                                            direction: an untimed warm-up, then a transfer sized to last about
 *                                            TARGET_SECONDS (clamped); prints one JSON line with both timings
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
#define MIB (1024.0 * 1024.0)

static char buf[CHUNK];

static void die(const char* what) {
  fprintf(stderr, "bulk: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

static void read_exact(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r == 0) {
      errno = ECONNRESET;
      die("read (peer closed)");
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    p += r;
    n -= (size_t)r;
  }
}

static void send_bytes(int fd, uint64_t n) {
  while (n > 0) {
    size_t c = n < CHUNK ? (size_t)n : CHUNK;
    write_all(fd, buf, c);
    n -= c;
  }
}

static void drop_bytes(int fd, uint64_t n) {
  while (n > 0) {
    size_t c = n < CHUNK ? (size_t)n : CHUNK;
    read_exact(fd, buf, c);
    n -= c;
  }
}

static void put_u64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (char)(v & 0xff);
}

static uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | (unsigned char)p[i];
  return v;
}

static void serve_one(int fd) {
  char hdr[9];
  for (;;) {
    ssize_t r = read(fd, hdr, 1);
    if (r <= 0) return;
    if (hdr[0] == 'P') {
      write_all(fd, "p", 1);
      continue;
    }
    if (hdr[0] != 'U' && hdr[0] != 'D') return;
    read_exact(fd, hdr + 1, 8);
    uint64_t n = get_u64(hdr + 1);
    if (hdr[0] == 'U') {
      drop_bytes(fd, n);
      write_all(fd, "K", 1);
    } else {
      send_bytes(fd, n);
    }
  }
}

static int serve(int port) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr*)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 128) < 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(ls, (struct sockaddr*)&a, &len);
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  signal(SIGCHLD, SIG_IGN); /* children reaped by the kernel */
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pid_t pid = fork();
    if (pid == 0) {
      close(ls);
      serve_one(fd);
      _exit(0);
    }
    close(fd);
  }
}

static int dial(const char* host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "bulk: %s is not an IPv4 address\n", host);
    exit(2);
  }
  if (connect(fd, (struct sockaddr*)&a, sizeof a) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* CONNECT host:port, then read the response head byte by byte so no tunnel byte is consumed with it. */
static void connect_through(int fd, const char* host, int port) {
  char req[256];
  int n = snprintf(req, sizeof req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port, host, port);
  write_all(fd, req, (size_t)n);
  char head[4096];
  size_t got = 0;
  while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
    if (got == sizeof head - 1) {
      fprintf(stderr, "bulk: CONNECT response head too long\n");
      exit(1);
    }
    read_exact(fd, head + got, 1);
    got++;
  }
  head[got] = 0;
  if (strncmp(head, "HTTP/1.1 200", 12) != 0 && strncmp(head, "HTTP/1.0 200", 12) != 0) {
    fprintf(stderr, "bulk: CONNECT refused: %.*s\n", (int)strcspn(head, "\r\n"), head);
    exit(1);
  }
}

static double upload(int fd, uint64_t n) {
  char hdr[9] = {'U'};
  put_u64(hdr + 1, n);
  double t0 = now();
  write_all(fd, hdr, 9);
  send_bytes(fd, n);
  char k;
  read_exact(fd, &k, 1); /* timed to the sink's acknowledgement: every byte arrived */
  return now() - t0;
}

static double download(int fd, uint64_t n) {
  char hdr[9] = {'D'};
  put_u64(hdr + 1, n);
  double t0 = now();
  write_all(fd, hdr, 9);
  drop_bytes(fd, n);
  return now() - t0;
}

static uint64_t sized(uint64_t warm, double warm_secs, double target, uint64_t min, uint64_t max) {
  double want = (double)warm / warm_secs * target;
  uint64_t n = want < (double)min ? min : want > (double)max ? max : (uint64_t)want;
  return (n / (1 << 20)) << 20; /* whole MiB */
}

int main(int argc, char** argv) {
  memset(buf, 0x62, sizeof buf);
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (strcmp(argc > 1 ? argv[1] : "", "run") != 0 || (argc != 8 && argc != 10)) {
    fprintf(stderr, "usage: bulk serve PORT | bulk run HOST PORT [PROXY_HOST PROXY_PORT] WARMUP TARGET_S MIN MAX\n");
    return 2;
  }
  int proxied = argc == 10;
  const char* host = argv[2];
  int port = atoi(argv[3]);
  int k = proxied ? 6 : 4;
  uint64_t warm = strtoull(argv[k], NULL, 10), min = strtoull(argv[k + 2], NULL, 10), max = strtoull(argv[k + 3], NULL, 10);
  double target = atof(argv[k + 1]);

  int fd = proxied ? dial(argv[4], atoi(argv[5])) : dial(host, port);
  if (proxied) connect_through(fd, host, port);

  double wu = upload(fd, warm);
  uint64_t nu = sized(warm, wu, target, min, max);
  double tu = upload(fd, nu);
  double wd = download(fd, warm);
  uint64_t nd = sized(warm, wd, target, min, max);
  double td = download(fd, nd);
  close(fd);
  printf("{\"up\":{\"bytes\":%llu,\"seconds\":%.6f,\"mibps\":%.3f,\"warmupMiBps\":%.3f},"
         "\"down\":{\"bytes\":%llu,\"seconds\":%.6f,\"mibps\":%.3f,\"warmupMiBps\":%.3f}}\n",
         (unsigned long long)nu, tu, nu / MIB / tu, warm / MIB / wu, (unsigned long long)nd, td, nd / MIB / td,
         warm / MIB / wd);
  return 0;
}
