/* Worker internals shared by worker.c (thread, loop, listeners, pools, buffers) and h1proxy.c
 * (the connection state machine). Not part of the proxy's public contract; everything here runs
 * on the worker's own thread. */
#ifndef CUTOVER_PROXY_WORKER_INT_H
#define CUTOVER_PROXY_WORKER_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proxy/route.h"
#include "proxy/worker.h"

/* Size of the pooled I/O buffers. A request head that outgrows it moves to a heap buffer up
 * to the service's max_header_bytes; bodies stream through it in slices. */
#define WORKER_BUF_SIZE (16 * 1024)

/* Size of the pooled buffers an upstream's response is read into: a 64 KiB body and its head
 * arrive in one read and leave in one write, where 16 KiB slices cost five of each (on loopback
 * a syscall is the dominant cost of a large response). Held only while a response is being
 * read, like the small buffers; tunnels and event streams read into small ones. */
#define WORKER_BIG_BUF_SIZE (80 * 1024)

/* A free list of equal-size buffers. */
struct worker_bufs {
    char **free;
    size_t n, cap;
};

struct upstream;

/* Idle upstream connections of one worker to one target. */
struct pool {
    struct route_target *target; /* holds a reference */
    struct upstream *idle;       /* singly linked through upstream.next_idle */
    size_t nidle;
    size_t active; /* connections of this pool not idle (connecting or busy) */
    int retired;   /* the current table no longer routes to target: close, don't keep */
    struct pool *next;
};

struct worker_listener {
    uv_tcp_t tcp;
    int service_id;
    int preview;
    struct worker *w;
};

/* Single-writer increment: the worker is the only writer, so a relaxed load and store suffice
 * and no locked instruction sits on the request path. */
#define WORKER_STAT_ADD(p, n)                                                                      \
    atomic_store_explicit((p), atomic_load_explicit((p), memory_order_relaxed) + (n),              \
                          memory_order_relaxed)

struct worker {
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t notify_async;
    uv_async_t stop_async;
    uv_timer_t drain_timer;
    struct worker_listener *listeners;
    size_t nlisteners;
    struct route_table *table; /* the table this worker routes by; holds a reference */
    uint64_t table_gen;
    struct pool *pools;
    struct worker_bufs bufs;     /* pooled WORKER_BUF_SIZE buffers */
    struct worker_bufs big_bufs; /* pooled WORKER_BIG_BUF_SIZE buffers */
    unsigned rr;                 /* round-robin cursor */
    int draining;                /* stop was asked: answers carry Connection: close */
    uint64_t drain_ms;
    atomic_uint_fast64_t stop_drain_ms; /* written by worker_stop, read in the async callback */
    struct worker_stats stats;
    struct worker_role_stats *role_stats; /* [nservices * ROUTE_ROLES] */
    size_t nservices;
    uint64_t rng;       /* xorshift state for sticky cookie ids */
    void *clients;      /* struct client list head, managed by h1proxy.c */
    void *exchanges;    /* free struct exchange objects, managed by h1proxy.c */
    void *client_wheel; /* the client deadline wheel, managed by h1proxy.c */
    size_t nexchanges;  /* length of the exchanges list */
    uint64_t io_events; /* socket callbacks run: tells the loop whether a turn found work */
    uint64_t nap_ns;    /* poll coalescing nap (proxy/nap.h); 0 = off */
    int stopped;        /* the drain is over: the loop must return */
    /* Clients that started a request, counted per NAP_WINDOW_MS window: a client counts once
     * per window (client.win holds the window it was last counted in). */
    uint16_t win;            /* current window number (wraps) */
    uint64_t win_start;      /* loop time (ms) the current window began */
    uint32_t win_clients;    /* clients counted in the current window */
    uint32_t active_clients; /* clients counted in the last complete window */
};

/* Takes a WORKER_BUF_SIZE buffer from the worker's pool (allocating when empty). */
char *worker_buf_get(struct worker *w);
/* Returns a buffer from worker_buf_get. NULL is a no-op. */
void worker_buf_put(struct worker *w, char *buf);
/* The same for WORKER_BIG_BUF_SIZE buffers. */
char *worker_big_buf_get(struct worker *w);
void worker_big_buf_put(struct worker *w, char *buf);

/* Makes the worker route by the current table if a newer one was published. */
void worker_refresh(struct worker *w);

/* Returns the pool for target t, creating it. */
struct pool *worker_pool(struct worker *w, struct route_target *t);

/* Frees pool p if it is retired and holds no connection. */
void worker_pool_maybe_free(struct worker *w, struct pool *p);

/* Implemented in h1proxy.c: frees what h1proxy.c pooled in w (worker_free calls it). */
void h1_worker_done(struct worker *w);
/* Implemented in h1proxy.c: accept one client on listener l. */
void h1_accept(struct worker_listener *l);
/* Implemented in h1proxy.c: close an idle upstream connection (pool cleanup). */
void h1_upstream_close(struct upstream *u);
/* Implemented in h1proxy.c: returns the next idle upstream in a pool's list. */
struct upstream *h1_upstream_next_idle(struct upstream *u);
/* Implemented in h1proxy.c: connections still attached to a retired target get a deadline of
 * their service's drain_timeout, after which they are closed. */
void h1_arm_drain(struct worker *w);
/* Implemented in h1proxy.c: a graceful stop began; closes clients that are idle between
 * requests only when force is set (at the drain deadline). Returns open client count. */
size_t h1_drain_clients(struct worker *w, int force);

#endif
