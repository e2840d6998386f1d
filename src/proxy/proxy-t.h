/* Types shared by the files of proxy/: the worker, its listeners and buffer pools, the upstream
 * connection and its pools, and the protocol interface between the worker and a protocol's
 * state machine. Types and constants only, no function: every file of proxy/ may include it,
 * so no circle can form through it (HAProxy's "-t.h" rule). Not part of the proxy's public
 * contract (that is worker.h and route.h); everything here lives on one worker's thread. */
#ifndef CUTOVER_PROXY_PROXY_T_H
#define CUTOVER_PROXY_PROXY_T_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
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

/* Single-writer increment: the worker is the only writer, so a relaxed load and store suffice
 * and no locked instruction sits on the request path. */
#define WORKER_STAT_ADD(p, n)                                                                      \
    atomic_store_explicit((p), atomic_load_explicit((p), memory_order_relaxed) + (n),              \
                          memory_order_relaxed)

/* ---------------------------------------------------------------- upstream connections ----- */

/* A deadline on top of a libuv timer that is re-armed only when the deadline moves earlier.
 * Pushing a deadline later (every read, every request) is then a store, not a timer-heap
 * operation; a timer that fires early re-arms itself for the real deadline. */
struct deadline {
    uint64_t at;    /* loop time it expires; 0 = none */
    uint64_t armed; /* when the uv timer is set to fire; 0 = not armed */
};

enum upstream_phase { UPSTREAM_CONNECTING, UPSTREAM_IDLE, UPSTREAM_BUSY, UPSTREAM_CLOSING };

struct upstream;

/* What the user of a connection (a protocol's state machine) is told by proxy/upstream while it
 * holds the connection (connecting or busy). An idle connection belongs to its pool alone. */
struct upstream_ops {
    size_t size; /* bytes per connection: the user's struct, which begins with struct upstream */
    /* Where the next read of a busy connection goes (libuv's alloc callback). */
    void (*alloc)(struct upstream *u, uv_buf_t *buf);
    /* A read of a busy connection (libuv's read callback; nread < 0: EOF or error). */
    void (*read)(struct upstream *u, ssize_t nread);
    /* The connect finished; status < 0: it failed (the user closes u). */
    void (*connected)(struct upstream *u, int status);
    /* The deadline set with upstream_deadline passed while connecting or busy. */
    void (*timeout)(struct upstream *u);
    /* u is about to be freed: give back what the user's part of it holds. May be NULL. */
    void (*freed)(struct upstream *u);
};

struct upstream_pools;

/* The connections of one worker to one target: the idle ones in a list, the others counted. */
struct upstream_pool {
    struct route_target *target; /* holds a reference */
    struct upstream *idle;       /* singly linked through upstream.next_idle */
    size_t nidle;
    size_t active; /* connections of this pool not idle (connecting or busy) */
    int retired;   /* the current table routes to target in no role: close, don't keep */
    struct upstream_pools *pools;
    struct upstream_pool *next;
};

/* The pools of one worker. */
struct upstream_pools {
    uv_loop_t *loop;
    struct upstream_pool *head;
    uint64_t *io_events; /* bumped by every socket callback (the worker's nap policy) */
    size_t max_idle;     /* idle connections kept per target */
    uint64_t idle_ms;    /* an idle connection is closed after this */
    int draining;        /* the worker is stopping: released connections are closed */
    int fd_ceiling;      /* a new connection on a descriptor at least this fails (EMFILE) */
};

/* One upstream connection. The user's per-request state follows it in the user's struct. */
struct upstream {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct deadline dl;
    uv_connect_t connreq;
    struct upstream_pool *pool;
    const struct upstream_ops *ops;
    struct upstream *next_idle;
    enum upstream_phase phase;
    int closing_handles;
    int reused;  /* served a request before this one */
    int reading; /* uv_read_start is in effect */
};

/* ---------------------------------------------------------------- protocols ----------------- */

struct worker;
struct worker_listener;
struct vhost_table;

/* How proxy/worker asks what a protocol's state machine must do; see proxy_proto's members. */
enum proxy_drain {
    PROXY_DRAIN_COUNT,   /* the worker is stopping: return the open connections, close none */
    PROXY_DRAIN_FORCE,   /* the stop deadline passed: close every connection */
    PROXY_DRAIN_RETIRED, /* a table retired targets: arm the drain deadline of connections
                            still using one */
    PROXY_DRAIN_IDLE,    /* descriptors are short: close some connections idle between
                            requests for a second or more (nginx's ngx_drain_connections) */
    PROXY_DRAIN_TABLE,   /* a new table was published: requests held for a service it no
                            longer holds go on (soon, not from within this call) */
};

/* A protocol served on a listener (HTTP/1.1 today, TCP beside it). The worker hosts the loop,
 * the listeners, the accepts and the timers; it reaches a protocol only through this table, and
 * a protocol reaches the worker only through worker_int.h. */
struct proxy_proto {
    const char *name;
    /* A connection is waiting on listener l: accept it (uv_accept) and serve it. */
    void (*accept)(struct worker_listener *l);
    /* See enum proxy_drain. Returns the protocol's open client connections. */
    size_t (*drain)(struct worker *w, enum proxy_drain how);
    /* The worker ends: free what the protocol pooled in it (after the loop closed). */
    void (*done)(struct worker *w);
};

/* ---------------------------------------------------------------- the worker ---------------- */

/* A free list of equal-size buffers. */
struct worker_bufs {
    char **free;
    size_t n, cap;
};

struct worker_listener {
    uv_tcp_t tcp;
    /* Accepting pauses when descriptors run out (worker.c): tcp is closed, and pause_timer
     * opens a new copy of src_fd after pause_ms (10 ms, doubling to 1 s while it lasts). */
    uv_timer_t pause_timer;
    int src_fd; /* the shared listening socket (the caller's, open until the worker ends) */
    int paused; /* tcp is closed or closing */
    uint64_t pause_ms;
    int service_id;
    int preview;
    const struct cidr_list *trusted; /* NULL when the service trusts no proxy */
    int proxy_protocol;
    struct tls_server *tls;           /* NULL: plain */
    const struct vhost_table *vhosts; /* shared by several services: routes by Host and path */
    const struct proxy_proto *proto;
    struct worker *w;
};

struct h1_state;
struct tcp_state;
struct mirror_state;

struct worker {
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t notify_async;
    uv_async_t stop_async;
    uv_timer_t drain_timer;
    struct worker_listener *listeners;
    size_t nlisteners;
    const struct proxy_proto **protos; /* the distinct protocols of the listeners */
    size_t nprotos;
    struct route_table *table; /* the table this worker routes by; holds a reference */
    uint64_t table_gen;
    struct upstream_pools pools;
    struct worker_bufs bufs;     /* pooled WORKER_BUF_SIZE buffers */
    struct worker_bufs big_bufs; /* pooled WORKER_BIG_BUF_SIZE buffers */
    unsigned rr;                 /* round-robin cursor */
    int draining;                /* stop was asked: answers carry Connection: close */
    uint64_t drain_ms;
    atomic_uint_fast64_t stop_drain_ms; /* written by worker_stop, read in the async callback */
    struct worker_stats stats;
    struct worker_role_stats *role_stats; /* [nservices * ROUTE_ROLES] */
    size_t nservices;
    uint64_t rng;                /* xorshift state: sticky cookie ids, per-request weight draws */
    struct h1_state *h1;         /* the HTTP/1.1 protocol's per-worker state (proxy/h1proxy.c) */
    struct tcp_state *tcp;       /* the TCP relay's (proxy/tcpproxy.c) */
    struct mirror_state *mirror; /* shadow traffic (proxy/mirror.c) */
    uint64_t io_events; /* socket callbacks run: tells the loop whether a turn found work */
    uint64_t nap_ns;    /* poll coalescing nap (proxy/nap.h); 0 = off */
    int fd_ceiling;     /* accepting pauses when a new descriptor is at least this; 0: never */
    int stopped;        /* the drain is over: the loop must return */
    /* Clients that started a request, counted per NAP_WINDOW_MS window: a client counts once
     * per window (client.win holds the window it was last counted in). */
    uint16_t win;            /* current window number (wraps) */
    uint64_t win_start;      /* loop time (ms) the current window began */
    uint32_t win_clients;    /* clients counted in the current window */
    uint32_t active_clients; /* clients counted in the last complete window */
};

#endif
