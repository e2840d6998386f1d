/* Data-plane workers: one thread and one libuv loop each. A worker accepts client connections
 * on the listening sockets it is given, proxies them (proxy/h1proxy.c), keeps its own pools of
 * idle upstream connections per target, and reads the published route table (proxy/route.h).
 * The control thread talks to a worker only through worker_notify and worker_stop (uv_async);
 * nothing else crosses threads. */
#ifndef CUTOVER_PROXY_WORKER_H
#define CUTOVER_PROXY_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/hist.h"
#include "proxy/route.h"

struct proxy_proto;
struct cidr_list;
struct tls_server;
struct vhost_table;

/* One listening socket a worker accepts on. */
struct worker_listener_spec {
    int fd; /* a bound, listening socket; the worker uses its own dup() of it */
    const struct proxy_proto *proto; /* the protocol served on it (proxy/h1proxy.h: h1_proto) */
    int service_id;                  /* route_service.id of the service it serves */
    int preview; /* the service's preview listener: routes to the canary while one exists */
    /* The service's trusted_proxies (NULL or empty: none), owned by the caller and unchanged
     * until every worker is freed. A peer in it may name the client (X-Forwarded-For, PROXY). */
    const struct cidr_list *trusted;
    int proxy_protocol; /* every connection starts with a PROXY header from a trusted peer */
    /* The listener terminates TLS with these certificates (net/tls.h); NULL: plain. Owned by
     * the caller and unchanged until every worker is freed. */
    struct tls_server *tls;
    /* Several services share this listener: each request's service is chosen by its Host and
     * path (http/vhost.h); NULL: every request is service_id's. Owned by the caller, unchanged
     * until every worker is freed. */
    const struct vhost_table *vhosts;
};

struct worker;

/* Starts a worker thread (index is for logs) accepting on the n listeners (-EINVAL when one has
 * no proto), keeping per-role
 * statistics for service ids 0..nservices-1; while busy, its loop naps coalesce_us
 * microseconds before blocking (proxy/nap.h; 0: never). Returns 0 or a negative errno; on
 * success *out is the worker (free with worker_free after worker_join). */
int worker_start(struct worker **out, int index, const struct worker_listener_spec *ls, size_t n,
                 size_t nservices, unsigned coalesce_us);

/* Tells the worker a new route table was published: it switches to it and closes its idle
 * upstream connections to targets the table no longer routes to. Control thread; the worker
 * also notices a new table by itself before routing any request. */
void worker_notify(struct worker *w);

/* Asks the worker to stop gracefully: it closes its listeners, lets requests in progress finish
 * (their answers carry Connection: close), and exits its loop when no connection is left or
 * drain_ms has passed, closing what is left. Control thread. */
void worker_stop(struct worker *w, uint64_t drain_ms);

/* Waits for the worker thread to end. Control thread. */
void worker_join(struct worker *w);

/* Frees a joined worker. NULL is a no-op. */
void worker_free(struct worker *w);

/* Counters of one worker, written only by it, read by others (relaxed). */
struct worker_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t requests;
    _Atomic uint64_t responses_5xx; /* answered by an upstream */
    _Atomic uint64_t proxy_errors;  /* 502/503/504 made by cutover itself */
    _Atomic uint64_t retries;
    _Atomic uint64_t bad_requests; /* 4xx made by cutover for bad input */
    _Atomic int64_t clients;       /* open client connections */
    _Atomic uint64_t naps;         /* poll coalescing naps taken (proxy/nap.h) */
    /* listener pauses: out of descriptors (EMFILE, ENFILE) or near the ceiling (worker.c) */
    _Atomic uint64_t accept_paused;
    /* connections closed unheard on a proxy_protocol listener: untrusted peer, bad header */
    _Atomic uint64_t client_addr_refused;
};

/* Why a request was lost: cutover answered it with its own error, or cut it. */
enum worker_loss {
    WORKER_LOSS_502 = 0,     /* cutover's own 502: connect failure, reset, invalid answer */
    WORKER_LOSS_503,         /* cutover's own 503: nothing live or healthy, too many connections */
    WORKER_LOSS_504,         /* cutover's own 504: connect or response timeout */
    WORKER_LOSS_DRAIN,       /* a request, stream or tunnel cut at a drain or stop deadline */
    WORKER_LOSS_RESET,       /* the upstream cut a response already under way to the client */
    WORKER_LOSS_NOT_RETRIED, /* 502: the upstream connection failed after the request may have
                                reached it, and its method is not idempotent */
};
/* Their names: route_loss_name (proxy/route.h), index for index. */
_Static_assert(WORKER_LOSS_NOT_RETRIED + 1 == ROUTE_LOSSES, "a loss reason without a name");

/* How an upstream connection failed a request, retried or not (the request may still have been
 * answered by a retry): refused or unreachable, connect timeout, connection lost, no response
 * in time, an invalid response. */
enum worker_upstream_fail {
    WORKER_UF_CONNECT = 0,
    WORKER_UF_CONNECT_TIMEOUT,
    WORKER_UF_IO,
    WORKER_UF_RESPONSE_TIMEOUT,
    WORKER_UF_BAD_RESPONSE,
};
#define WORKER_UPSTREAM_FAILS 5

/* "connect", "connect_timeout", "connection_lost", "response_timeout", "bad_response". */
const char *worker_upstream_fail_name(enum worker_upstream_fail why);

/* Status classes counted per role: 1xx .. 5xx. */
#define WORKER_CLASSES 5

/* What one worker saw of one version role of one service, cumulative. Written only by the
 * worker (load + store, no locked instruction), read by the control thread (relaxed). */
struct worker_role_stats {
    _Atomic uint64_t errors_5xx;            /* 5xx answers from the version */
    _Atomic uint64_t upstream_errors;       /* cutover's 502/503/504 for the version (connect
                                               failure, reset, timeout, no healthy target) */
    _Atomic uint64_t latency[HIST_BUCKETS]; /* us to the response head */
    _Atomic uint64_t lost[ROUTE_LOSSES];    /* requests lost, by enum worker_loss */
    /* answers by status class 1xx..5xx (index status / 100 - 1), cutover's own error answers
     * included: their sum is the requests answered */
    _Atomic uint64_t classes[WORKER_CLASSES];
    /* upstream failures by enum worker_upstream_fail, whether a retry saved the request or not */
    _Atomic uint64_t upstream_fail[WORKER_UPSTREAM_FAILS];
    _Atomic int64_t longlived; /* open tunnels and event streams routed to the role */
};

/* Returns the statistics of (service_id, role), or NULL when out of range. */
const struct worker_role_stats *worker_role_stats(const struct worker *w, int service_id,
                                                  enum route_role role);

/* Returns the worker's counters (valid until worker_free). */
const struct worker_stats *worker_get_stats(const struct worker *w);

#endif
