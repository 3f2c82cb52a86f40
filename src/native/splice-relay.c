/*
 * Zero-copy relay for raw CONNECT tunnels: splice(2) moves bytes socket → pipe → socket inside the kernel, so a
 * tunnel's payload never enters user space (Node's stream relay copies every byte into a JS buffer and out
 * again; see the Performance section of the README for the measured difference).
 *
 * One thread serves every tunnel of the process with one epoll set. JavaScript hands over a tunnel only once
 * its own part is done (the ClientHello judged, every buffered byte written, reading stopped on both sockets);
 * from then on this thread is the only reader and writer of both descriptors, and it never closes them: when a
 * tunnel ends (both directions finished, an error, the idle limit, or a cancel from JavaScript) it forgets the
 * descriptors and reports to JavaScript, which closes the sockets. So a descriptor can never be closed (and its
 * number reused) while this thread still uses it.
 *
 * Semantics kept from the JS relay: a FIN from one side is passed on as shutdown(SHUT_WR) of the other once
 * everything read before it was written; backpressure is the pipe's capacity (nothing is read from a side while
 * its pipe is full); an error on either side ends the tunnel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bytes one direction may hold in flight: the pipe's capacity (the kernel rounds it to pages). */
#define PIPE_BYTES (256 * 1024)

struct dir {
  int src, dst;
  int pr, pw;          /* the pipe, created on the first byte (idle tunnels hold none) */
  size_t in_pipe;      /* bytes read from src, not yet written to dst */
  int eof;             /* src sent FIN */
  int shut;            /* FIN passed on to dst */
  int blocked_write;   /* dst answered EAGAIN: wait for EPOLLOUT */
  int starved;         /* no descriptor for a pipe (EMFILE/ENFILE): reading waits for the next sweep */
  uint64_t bytes;      /* written to dst */
};

struct tunnel {
  uint32_t id;
  struct dir up;   /* client → upstream */
  struct dir down; /* upstream → client */
  uint32_t mask_client, mask_upstream;
  uint64_t idle_ms, last_ms;
  struct tunnel* next; /* hash chain */
};

enum { CMD_ADD, CMD_CANCEL };
struct cmd {
  int kind;
  struct tunnel* t; /* CMD_ADD */
  uint32_t id;      /* CMD_CANCEL */
  struct cmd* next;
};

struct done {
  uint32_t id;
  double up, down;
  int err;
};

#define BUCKETS 4096
static struct tunnel* table[BUCKETS];
static int epfd = -1, evfd = -1;
static pthread_t thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct cmd *queue_head, *queue_tail;
static napi_threadsafe_function on_done;
static uint32_t next_id = 1;
static size_t active; /* tunnels in the table: with none, the thread sleeps until a command arrives */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct tunnel** slot(uint32_t id) {
  struct tunnel** p = &table[id % BUCKETS];
  while (*p && (*p)->id != id) p = &(*p)->next;
  return p;
}

/*
 * Empty pipes kept for the next direction that needs one. A short tunnel (one request over a fresh CONNECT)
 * otherwise pays pipe2 + F_SETPIPE_SZ + two closes per direction, a third of the relay's system calls per
 * tunnel. Only a pipe the kernel reports empty (FIONREAD 0) goes back, so no byte can pass from one tunnel to
 * another; the pool is emptied once no direction has taken a pipe for PIPE_IDLE_MS, so an idle sidecar holds
 * none. Only the relay thread touches it.
 */
#define POOL_MAX 32
static int pool_r[POOL_MAX], pool_w[POOL_MAX];
static int pool_n;
static uint64_t pool_taken_ms;

/* A pipe for one direction: from the pool, else a new one. Returns 0 or an errno. */
static int take_pipe(struct dir* d) {
  pool_taken_ms = now_ms();
  if (pool_n > 0) {
    pool_n--;
    d->pr = pool_r[pool_n];
    d->pw = pool_w[pool_n];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return errno;
  d->pr = fds[0];
  d->pw = fds[1];
  fcntl(d->pw, F_SETPIPE_SZ, PIPE_BYTES); /* best effort: the default 64 KiB works, only slower */
  return 0;
}

static void close_pipe(struct dir* d) {
  int queued = -1;
  if (d->pr >= 0 && d->pw >= 0 && pool_n < POOL_MAX && ioctl(d->pr, FIONREAD, &queued) == 0 && queued == 0) {
    pool_r[pool_n] = d->pr;
    pool_w[pool_n] = d->pw;
    pool_n++;
  } else {
    if (d->pr >= 0) close(d->pr);
    if (d->pw >= 0) close(d->pw);
  }
  d->pr = d->pw = -1;
}

static void drain_pool(void) {
  while (pool_n > 0) {
    pool_n--;
    close(pool_r[pool_n]);
    close(pool_w[pool_n]);
  }
}

/* Forget the tunnel (its descriptors stay open: JavaScript owns and closes them) and report it. */
static void finish(struct tunnel* t, int err) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, t->up.src, NULL);
  epoll_ctl(epfd, EPOLL_CTL_DEL, t->down.src, NULL);
  close_pipe(&t->up);
  close_pipe(&t->down);
  struct tunnel** p = slot(t->id);
  if (*p == t) *p = t->next;
  active--;
  struct done* d = malloc(sizeof *d);
  if (d) {
    d->id = t->id;
    d->up = (double)t->up.bytes;
    d->down = (double)t->down.bytes;
    d->err = err;
    if (napi_call_threadsafe_function(on_done, d, napi_tsfn_blocking) != napi_ok) free(d);
  }
  free(t);
}

/* A pipe left empty this long is closed (recreated on the next byte). */
#define PIPE_IDLE_MS 2000

/* Rounds of one direction per wake-up: about 4 MiB, so one busy tunnel cannot starve the others. */
#define ROUNDS 16

/* Move what can be moved in one direction without blocking. Returns 0, or an errno that ends the tunnel. */
static int pump(struct dir* d, int* moved) {
  for (int round = 0; round < ROUNDS; round++) {
    int progress = 0;
    if (!d->eof && d->in_pipe < PIPE_BYTES) {
      if (d->pr < 0) {
        int err = take_pipe(d);
        if (err) {
          if (err != EMFILE && err != ENFILE) return err;
          /* Out of descriptors: the tunnel is not failed for it; it reads again once the sweep finds one. */
          d->starved = 1;
          return 0;
        }
      }
      ssize_t n = splice(d->src, NULL, d->pw, NULL, PIPE_BYTES - d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->in_pipe += (size_t)n;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno != EAGAIN && errno != EINTR) {
        return errno;
      }
    }
    if (d->in_pipe > 0) {
      ssize_t n = splice(d->pr, NULL, d->dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->in_pipe -= (size_t)n;
        d->bytes += (uint64_t)n;
        d->blocked_write = 0;
        progress = 1;
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        d->blocked_write = 1;
      } else {
        return n == 0 ? EPIPE : errno;
      }
    }
    if (d->eof && d->in_pipe == 0 && !d->shut) {
      d->shut = 1;
      if (shutdown(d->dst, SHUT_WR) != 0 && errno != ENOTCONN) return errno;
      close_pipe(d);
    }
    if (!progress) return 0;
    *moved = 1;
  }
  return 0; /* more may be ready: level-triggered epoll reports it again */
}

/* What each descriptor must wait for, from the state of both directions. */
static int rearm(struct tunnel* t) {
  uint32_t mc = 0, mu = 0;
  if (!t->up.eof && !t->up.starved && t->up.in_pipe < PIPE_BYTES) mc |= EPOLLIN;
  if (t->up.blocked_write) mu |= EPOLLOUT;
  if (!t->down.eof && !t->down.starved && t->down.in_pipe < PIPE_BYTES) mu |= EPOLLIN;
  if (t->down.blocked_write) mc |= EPOLLOUT;
  if (mc != t->mask_client) {
    struct epoll_event ev = {.events = mc, .data.u64 = ((uint64_t)t->id << 1)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, t->up.src, &ev) != 0) return errno;
    t->mask_client = mc;
  }
  if (mu != t->mask_upstream) {
    struct epoll_event ev = {.events = mu, .data.u64 = ((uint64_t)t->id << 1) | 1};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, t->down.src, &ev) != 0) return errno;
    t->mask_upstream = mu;
  }
  return 0;
}

static void service(struct tunnel* t) {
  int moved = 0;
  int err = pump(&t->up, &moved);
  if (!err) err = pump(&t->down, &moved);
  if (moved) t->last_ms = now_ms();
  if (err) {
    finish(t, err);
    return;
  }
  if (t->up.shut && t->down.shut) {
    finish(t, 0);
    return;
  }
  err = rearm(t);
  if (err) finish(t, err);
}

static void run_commands(void) {
  pthread_mutex_lock(&lock);
  struct cmd* c = queue_head;
  queue_head = queue_tail = NULL;
  pthread_mutex_unlock(&lock);
  while (c) {
    struct cmd* next = c->next;
    if (c->kind == CMD_ADD) {
      struct tunnel* t = c->t;
      struct tunnel** p = slot(t->id);
      t->next = NULL;
      *p = t;
      active++;
      struct epoll_event ec = {.events = 0, .data.u64 = ((uint64_t)t->id << 1)};
      struct epoll_event eu = {.events = 0, .data.u64 = ((uint64_t)t->id << 1) | 1};
      if (epoll_ctl(epfd, EPOLL_CTL_ADD, t->up.src, &ec) != 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, t->down.src, &eu) != 0) {
        finish(t, errno);
      } else {
        service(t);
      }
    } else {
      struct tunnel* t = *slot(c->id);
      if (t) finish(t, ECANCELED);
    }
    free(c);
    c = next;
  }
}

static void sweep_idle(void) {
  uint64_t now = now_ms();
  for (int b = 0; b < BUCKETS; b++) {
    struct tunnel* t = table[b];
    while (t) {
      struct tunnel* next = t->next;
      if (t->idle_ms > 0 && now - t->last_ms >= t->idle_ms) {
        finish(t, ETIMEDOUT);
      } else {
        /* Pipes are held only by tunnels that carried bytes lately: 1,000 quiet tunnels keep 2 descriptors
           each, not 6. An empty pipe holds no data, so closing it loses nothing. */
        if (now - t->last_ms >= PIPE_IDLE_MS) {
          if (t->up.in_pipe == 0) close_pipe(&t->up);
          if (t->down.in_pipe == 0) close_pipe(&t->down);
        }
        if (t->up.starved || t->down.starved) {
          t->up.starved = t->down.starved = 0;
          service(t);
        }
      }
      t = next;
    }
  }
  if (pool_n > 0 && now - pool_taken_ms >= PIPE_IDLE_MS) drain_pool();
}

static void* loop(void* arg) {
  (void)arg;
  struct epoll_event events[256];
  uint64_t last_sweep = now_ms();
  for (;;) {
    /* Idle sidecars are the common case: no periodic wake-up without a tunnel to sweep or a pooled pipe to close. */
    int n = epoll_wait(epfd, events, 256, active > 0 || pool_n > 0 ? 1000 : -1);
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == UINT64_MAX) {
        uint64_t v;
        while (read(evfd, &v, sizeof v) > 0) {
        }
        run_commands();
        continue;
      }
      struct tunnel* t = *slot((uint32_t)(key >> 1));
      if (t) service(t);
    }
    uint64_t now = now_ms();
    if (now - last_sweep >= 1000) {
      sweep_idle();
      last_sweep = now;
    }
  }
  return NULL;
}

static void enqueue(struct cmd* c) {
  c->next = NULL;
  pthread_mutex_lock(&lock);
  if (queue_tail) queue_tail->next = c;
  else queue_head = c;
  queue_tail = c;
  pthread_mutex_unlock(&lock);
  uint64_t one = 1;
  ssize_t w = write(evfd, &one, sizeof one);
  (void)w; /* a full eventfd counter already means "wake up" */
}

static void call_js(napi_env env, napi_value fn, void* context, void* data) {
  (void)context;
  struct done* d = data;
  if (env != NULL && fn != NULL) {
    napi_value argv[4], undefined;
    napi_create_uint32(env, d->id, &argv[0]);
    napi_create_double(env, d->up, &argv[1]);
    napi_create_double(env, d->down, &argv[2]);
    napi_create_int32(env, d->err, &argv[3]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, fn, 4, argv, NULL);
  }
  free(d);
}

static napi_value throw_errno(napi_env env, const char* what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* start(onDone): once per process. onDone(id, bytesUp, bytesDown, errno) runs on the JS thread. */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (epfd >= 0) return NULL;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return throw_errno(env, "epoll_create1", errno);
  evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd < 0) return throw_errno(env, "eventfd", errno);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) != 0) return throw_errno(env, "epoll_ctl", errno);
  napi_create_string_utf8(env, "splice-relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &on_done) != napi_ok) {
    napi_throw_error(env, NULL, "napi_create_threadsafe_function failed");
    return NULL;
  }
  /* The relay never keeps the process alive by itself: the sockets' owners (listeners, timers) decide that. */
  napi_unref_threadsafe_function(env, on_done);
  int rc = pthread_create(&thread, NULL, loop, NULL);
  if (rc != 0) return throw_errno(env, "pthread_create", rc);
  pthread_detach(thread);
  return NULL;
}

static int32_t arg_int(napi_env env, napi_value v) {
  int32_t out = -1;
  napi_get_value_int32(env, v, &out);
  return out;
}

/* add(clientFd, upstreamFd, idleMs) → id. The descriptors must be non-blocking sockets nobody else reads. */
static napi_value add(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int cfd = arg_int(env, argv[0]), ufd = arg_int(env, argv[1]), idle = arg_int(env, argv[2]);
  if (epfd < 0) {
    napi_throw_error(env, NULL, "splice relay not started");
    return NULL;
  }
  if (cfd < 0 || ufd < 0 || cfd == ufd) {
    napi_throw_type_error(env, NULL, "add(clientFd, upstreamFd, idleMs): two distinct descriptors expected");
    return NULL;
  }
  struct tunnel* t = calloc(1, sizeof *t);
  struct cmd* c = calloc(1, sizeof *c);
  if (!t || !c) {
    free(t);
    free(c);
    return throw_errno(env, "add", ENOMEM);
  }
  t->id = next_id++;
  if (next_id == 0) next_id = 1;
  t->up = (struct dir){.src = cfd, .dst = ufd, .pr = -1, .pw = -1};
  t->down = (struct dir){.src = ufd, .dst = cfd, .pr = -1, .pw = -1};
  t->idle_ms = idle > 0 ? (uint64_t)idle : 0;
  t->last_ms = now_ms();
  c->kind = CMD_ADD;
  c->t = t;
  uint32_t id = t->id;
  enqueue(c);
  napi_create_uint32(env, id, &out);
  return out;
}

/* cancel(id): end the tunnel now; onDone reports it (ECANCELED) unless it had already ended. */
static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t id = 0;
  napi_get_value_uint32(env, argv[0], &id);
  struct cmd* c = calloc(1, sizeof *c);
  if (!c) return throw_errno(env, "cancel", ENOMEM);
  c->kind = CMD_CANCEL;
  c->id = id;
  enqueue(c);
  return NULL;
}

/*
 * Not part of the relay, but the one native hook the proxy has: glibc keeps memory that start-up freed (module
 * loading, compiler zones, OpenSSL set-up) inside its arenas instead of returning it to the kernel. One
 * malloc_trim(0) once the proxy listens gives those pages back (~0.7 MiB of a sidecar's idle RSS). Returns 1
 * when memory was released.
 */
static napi_value trim_heap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, malloc_trim(0) == 1, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, add, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, cancel, NULL, NULL, NULL, napi_default, NULL},
      {"trimHeap", NULL, trim_heap, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
