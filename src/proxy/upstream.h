/* Upstream connections and the per-worker pools they live in: the only owner of both. A
 * protocol's state machine gets a connection for a request (upstream_get), reads and writes it
 * (its uv_tcp_t is u->tcp; reads come through its struct upstream_ops), and hands it back
 * (upstream_release or upstream_close). The worker retires pools when a table is published
 * (upstream_retire). Idle connections, their idle deadline and an upstream's close of one are
 * handled here. Calls neither the worker nor a protocol by name: only the ops of the user of
 * a connection. Runs on one worker's loop. */
#ifndef CUTOVER_PROXY_UPSTREAM_H
#define CUTOVER_PROXY_UPSTREAM_H

#include "proxy/proxy-t.h"

/* Idle connections kept per target per worker, and how long one is kept idle, by default. */
#define UPSTREAM_MAX_IDLE 512
#define UPSTREAM_IDLE_MS 30000

/* Sets up empty pools on loop; io_events (may be NULL) is bumped by each socket callback. */
void upstream_pools_init(struct upstream_pools *ps, uv_loop_t *loop, uint64_t *io_events);

/* Frees the pools. Every connection must be closed and its close callback run. */
void upstream_pools_done(struct upstream_pools *ps);

/* Returns the pool of target t, creating it (it takes a reference on t). */
struct upstream_pool *upstream_pool_get(struct upstream_pools *ps, struct route_target *t);

/* Gives the caller a connection to t for one request, with its user ops: an idle one of the
 * pool (reading, through ops) unless fresh is set or none is idle, else a new one. Returns 1
 * (*out reused and busy), 0 (*out connecting: ops->connected follows), or a negative libuv
 * error when the connect could not even start (*out is then set, and the caller closes it
 * after treating it as a failed connect). UV_EMFILE or UV_ENFILE: out of descriptors, or the
 * new socket's number reached ps->fd_ceiling (the last ones are left to the admin API and the
 * control plane); not the target's fault. A new connection's deadline is connect_ms. */
int upstream_get(struct upstream_pools *ps, struct route_target *t, int fresh,
                 const struct upstream_ops *ops, uint64_t connect_ms, struct upstream **out);

/* Sets u's deadline ms from now (0: none); ops->timeout runs when it passes. */
void upstream_deadline(struct upstream *u, uint64_t ms);

/* Reads from u through its ops (idempotent). Returns 0 or a negative libuv error. */
int upstream_read_start(struct upstream *u);
void upstream_read_stop(struct upstream *u);

/* The user is done with u, which can carry another request: it goes back to its pool, or is
 * closed when the pool is retired, full, or the worker stops. */
void upstream_release(struct upstream *u);

/* Closes u (idle or not); its memory goes with the close callbacks (ops->freed first). May
 * free u's pool when that is retired and empty. */
void upstream_close(struct upstream *u);

/* The target of u. */
struct route_target *upstream_target(const struct upstream *u);

/* 1 when u's target is routed to in no role by the worker's current table. */
int upstream_retired(const struct upstream *u);

/* A new table t was published (NULL: none): marks retired the pools of targets t routes to in
 * no role (proxy/pick.h, pick_routes_to), closes their idle connections, and frees those left
 * empty. Returns 1 when a retired pool still has connections in use. */
int upstream_retire(struct upstream_pools *ps, const struct route_table *t);

/* Retires every pool and closes its idle connections (the worker is ending). */
void upstream_close_idle_all(struct upstream_pools *ps);

#endif
