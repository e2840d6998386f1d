/* Upstream connections and their per-worker pools (see upstream.h). Runs on one worker's loop.
 *
 * An idle connection keeps reading, so that an upstream's close of it is seen at once: its
 * reads land in a scratch buffer here and close it. A connection in use reads through its
 * user's ops; the libuv callbacks stay the same functions either way, so giving a connection
 * back or taking it again changes nothing the loop watches (no epoll_ctl). */
#include "proxy/upstream.h"

#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "proxy/pick.h"

void upstream_pools_init(struct upstream_pools *ps, uv_loop_t *loop, uint64_t *io_events)
{
    memset(ps, 0, sizeof(*ps));
    ps->loop = loop;
    ps->io_events = io_events;
    ps->max_idle = UPSTREAM_MAX_IDLE;
    ps->idle_ms = UPSTREAM_IDLE_MS;
}

static void pool_free(struct upstream_pool *p)
{
    route_target_unref(p->target);
    free(p);
}

void upstream_pools_done(struct upstream_pools *ps)
{
    while (ps->head != NULL) {
        struct upstream_pool *p = ps->head;
        ps->head = p->next;
        pool_free(p);
    }
}

struct upstream_pool *upstream_pool_get(struct upstream_pools *ps, struct route_target *t)
{
    for (struct upstream_pool *p = ps->head; p; p = p->next)
        if (p->target == t)
            return p;
    struct upstream_pool *p = xcalloc(1, sizeof(*p));
    route_target_ref(t);
    p->target = t;
    p->pools = ps;
    p->next = ps->head;
    ps->head = p;
    return p;
}

/* Frees p if it is retired and holds no connection. */
static void pool_maybe_free(struct upstream_pool *p)
{
    if (!p->retired || p->active > 0 || p->nidle > 0)
        return;
    for (struct upstream_pool **pp = &p->pools->head; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pool_free(p);
}

static void pool_unlink_idle(struct upstream *u)
{
    struct upstream_pool *p = u->pool;
    for (struct upstream **pp = &p->idle; *pp; pp = &(*pp)->next_idle) {
        if (*pp == u) {
            *pp = u->next_idle;
            p->nidle--;
            break;
        }
    }
    u->next_idle = NULL;
}

static void io_event(struct upstream *u)
{
    if (u->pool->pools->io_events != NULL)
        (*u->pool->pools->io_events)++;
}

/* ---------------------------------------------------------------- deadlines ----------------- */

static void on_timer(uv_timer_t *t);

void upstream_deadline(struct upstream *u, uint64_t ms)
{
    if (ms == 0) {
        u->dl.at = 0;
        return;
    }
    uint64_t at = uv_now(u->timer.loop) + ms;
    u->dl.at = at;
    if (u->dl.armed == 0 || at < u->dl.armed) {
        u->dl.armed = at;
        uv_timer_start(&u->timer, on_timer, ms, 0);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct upstream *u = t->data;
    u->dl.armed = 0;
    if (u->dl.at == 0)
        return;
    uint64_t now = uv_now(t->loop);
    if (now < u->dl.at) {
        u->dl.armed = u->dl.at;
        uv_timer_start(t, on_timer, u->dl.at - now, 0);
        return;
    }
    u->dl.at = 0;
    switch (u->phase) {
    case UPSTREAM_CONNECTING:
    case UPSTREAM_BUSY:
        u->ops->timeout(u);
        break;
    case UPSTREAM_IDLE:
        upstream_close(u);
        break;
    case UPSTREAM_CLOSING:
        break;
    }
}

/* ---------------------------------------------------------------- reading ------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct upstream *u = h->data;
    /* Bytes on an idle connection are discarded: any thread may scribble here, nobody reads
     * it. */
    static char idle_scratch[64];
    (void)hint;
    if (u->phase == UPSTREAM_IDLE) {
        *buf = uv_buf_init(idle_scratch, sizeof(idle_scratch));
        return;
    }
    u->ops->alloc(u, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream *u = s->data;
    (void)buf;
    io_event(u);
    if (u->phase == UPSTREAM_CLOSING || nread == 0)
        return;
    if (u->phase == UPSTREAM_IDLE) {
        /* The upstream closed an idle connection, or sent bytes nobody asked for. */
        upstream_close(u);
        return;
    }
    u->ops->read(u, nread);
}

int upstream_read_start(struct upstream *u)
{
    if (u->reading)
        return 0;
    int rc = uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
    if (rc == 0)
        u->reading = 1;
    return rc;
}

void upstream_read_stop(struct upstream *u)
{
    if (!u->reading)
        return;
    uv_read_stop((uv_stream_t *)&u->tcp);
    u->reading = 0;
}

/* ---------------------------------------------------------------- life ---------------------- */

static void on_closed(uv_handle_t *h)
{
    struct upstream *u = h->data;
    if (--u->closing_handles > 0)
        return;
    if (u->ops->freed != NULL)
        u->ops->freed(u);
    free(u);
}

void upstream_close(struct upstream *u)
{
    if (u->phase == UPSTREAM_CLOSING)
        return;
    struct upstream_pool *p = u->pool;
    if (u->phase == UPSTREAM_IDLE)
        pool_unlink_idle(u);
    else
        p->active--;
    u->phase = UPSTREAM_CLOSING;
    u->closing_handles = 2;
    uv_close((uv_handle_t *)&u->tcp, on_closed);
    uv_close((uv_handle_t *)&u->timer, on_closed);
    pool_maybe_free(p);
}

void upstream_release(struct upstream *u)
{
    struct upstream_pool *p = u->pool;
    if (u->phase != UPSTREAM_BUSY || p->retired || p->nidle >= p->pools->max_idle ||
        p->pools->draining) {
        upstream_close(u);
        return;
    }
    /* Idle connections keep reading so that an upstream's close is seen at once. */
    if (upstream_read_start(u) < 0) {
        upstream_close(u);
        return;
    }
    p->active--;
    u->phase = UPSTREAM_IDLE;
    u->reused = 1;
    u->next_idle = p->idle;
    p->idle = u;
    p->nidle++;
    upstream_deadline(u, p->pools->idle_ms);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct upstream *u = req->data;
    io_event(u);
    if (u->phase == UPSTREAM_CLOSING)
        return;
    if (status == 0) {
        uv_tcp_nodelay(&u->tcp, 1);
        u->dl.at = 0;
        u->phase = UPSTREAM_BUSY;
        status = upstream_read_start(u);
    }
    u->ops->connected(u, status);
}

int upstream_get(struct upstream_pools *ps, struct route_target *t, int fresh,
                 const struct upstream_ops *ops, uint64_t connect_ms, struct upstream **out)
{
    struct upstream_pool *p = upstream_pool_get(ps, t);
    struct upstream *u;
    while (!fresh && p->idle != NULL && p->idle->ops == ops) {
        u = p->idle;
        p->idle = u->next_idle;
        p->nidle--;
        u->next_idle = NULL;
        p->active++;
        u->dl.at = 0;
        u->phase = UPSTREAM_BUSY;
        if (upstream_read_start(u) < 0) {
            upstream_close(u);
            continue;
        }
        *out = u;
        return 1;
    }
    u = xcalloc(1, ops->size);
    u->pool = p;
    u->ops = ops;
    p->active++;
    u->phase = UPSTREAM_CONNECTING;
    uv_tcp_init(ps->loop, &u->tcp);
    uv_timer_init(ps->loop, &u->timer);
    u->tcp.data = u;
    u->timer.data = u;
    u->connreq.data = u;
    *out = u;
    upstream_deadline(u, connect_ms);
    int rc = uv_tcp_connect(&u->connreq, &u->tcp, (const struct sockaddr *)&t->sa, on_connect);
    uv_os_fd_t fd;
    if (rc == 0 && ps->fd_ceiling > 0 && uv_fileno((uv_handle_t *)&u->tcp, &fd) == 0 &&
        fd >= ps->fd_ceiling)
        rc = UV_EMFILE; /* the last descriptors are the admin API's and the control plane's */
    return rc < 0 ? rc : 0;
}

struct route_target *upstream_target(const struct upstream *u)
{
    return u->pool->target;
}

int upstream_retired(const struct upstream *u)
{
    return u->pool->retired;
}

/* Closes every idle connection of p; returns 1 when that freed p. */
static int pool_close_idle(struct upstream_pool *p)
{
    while (p->idle != NULL) {
        /* Closing the last idle connection of a retired pool frees it: stop touching it then. */
        int last = p->idle->next_idle == NULL && p->active == 0 && p->retired;
        upstream_close(p->idle);
        if (last)
            return 1;
    }
    return 0;
}

int upstream_retire(struct upstream_pools *ps, const struct route_table *t)
{
    int busy = 0;
    struct upstream_pool *p = ps->head, *next;
    for (; p; p = next) {
        next = p->next;
        p->retired = !pick_routes_to(t, p->target);
        if (!p->retired)
            continue;
        busy |= p->active > 0;
        if (p->idle == NULL)
            pool_maybe_free(p);
        else
            pool_close_idle(p);
    }
    return busy;
}

void upstream_close_idle_all(struct upstream_pools *ps)
{
    struct upstream_pool *p = ps->head, *next;
    for (; p; p = next) {
        next = p->next;
        p->retired = 1;
        if (p->idle == NULL)
            pool_maybe_free(p);
        else
            pool_close_idle(p);
    }
}
