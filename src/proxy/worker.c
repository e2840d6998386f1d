/* Data-plane worker threads (see worker.h): the loop, the listeners and their accepts, the
 * drain timer, the route-table cache and pooled buffers. Connections are served by the
 * protocol of their listener (struct proxy_proto), upstream connections owned by
 * proxy/upstream. Everything here runs on the worker's thread except
 * worker_start/notify/stop/join/free, which the control thread calls. */
#include "proxy/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/xmalloc.h"
#include "net/cidr.h"
#include "proxy/mirror.h"
#include "proxy/nap.h"
#include "proxy/upstream.h"
#include "proxy/worker_int.h"

/* Buffers kept for reuse beyond this are freed: the pool follows the busy peak, not forever. */
#define WORKER_MAX_FREE_BUFS 1024
#define WORKER_MAX_FREE_BIG_BUFS 256

static char *bufs_get(struct worker_bufs *b, size_t size)
{
    if (b->n > 0)
        return b->free[--b->n];
    return xmalloc(size);
}

static void bufs_put(struct worker_bufs *b, char *buf, size_t max)
{
    if (buf == NULL)
        return;
    if (b->n == max) {
        free(buf);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->free = xrealloc(b->free, b->cap * sizeof(*b->free));
    }
    b->free[b->n++] = buf;
}

static void bufs_done(struct worker_bufs *b)
{
    while (b->n > 0)
        free(b->free[--b->n]);
    free(b->free);
    b->free = NULL;
    b->cap = 0;
}

char *worker_buf_get(struct worker *w)
{
    return bufs_get(&w->bufs, WORKER_BUF_SIZE);
}

void worker_buf_put(struct worker *w, char *buf)
{
    bufs_put(&w->bufs, buf, WORKER_MAX_FREE_BUFS);
}

char *worker_big_buf_get(struct worker *w)
{
    return bufs_get(&w->big_bufs, WORKER_BIG_BUF_SIZE);
}

void worker_big_buf_put(struct worker *w, char *buf)
{
    bufs_put(&w->big_bufs, buf, WORKER_MAX_FREE_BIG_BUFS);
}

void worker_refresh(struct worker *w)
{
    uint64_t gen = route_table_generation();
    if (gen == w->table_gen)
        return;
    struct route_table *t = route_table_acquire();
    route_table_release(w->table);
    w->table = t;
    w->table_gen = t ? t->gen : 0;
    /* Only targets the new table routes to in no role are retired: a canary that still gets
     * traffic keeps its pooled and long-lived connections across every publish. */
    mirror_worker_refresh(w);
    if (upstream_retire(&w->pools, w->table))
        for (size_t i = 0; i < w->nprotos; i++)
            w->protos[i]->drain(w, PROXY_DRAIN_RETIRED);
    for (size_t i = 0; i < w->nprotos; i++)
        w->protos[i]->drain(w, PROXY_DRAIN_TABLE);
}

static void on_notify(uv_async_t *a)
{
    worker_refresh(a->data);
}

/* Accept pauses. When the process runs out of descriptors, libuv calls on_connection with
 * EMFILE (or ENFILE) as fast as it can, and the worker would spin in accept4 for as long as the
 * shortage lasts. Instead the listener's copy of the socket is closed (libuv has no "stop
 * listening"), the backlog is left to the kernel, and a timer opens a new copy after a pause
 * that doubles from 10 ms up to 1 s while the shortage lasts. Open connections are served
 * meanwhile. The same pause starts before the shortage: when a new descriptor's number
 * reaches fd_ceiling, (RLIMIT_NOFILE - 64) / 2, since every client may need an upstream
 * connection and the admin API, the store and health checks need some too (HAProxy sizes
 * maxconn from ulimit-n the same way). The new copy is the probe: its number is the lowest
 * free descriptor, so one at the ceiling or above means "still full". */
#define PAUSE_FIRST_MS 10
#define PAUSE_MAX_MS 1000
#define FD_RESERVE 64

static void on_connection(uv_stream_t *server, int status);
static void on_pause_end(uv_timer_t *t);

static void on_listener_closed(uv_handle_t *h)
{
    (void)h; /* the memory is the worker's; the timer reopens it */
}

static void listener_pause(struct worker_listener *l)
{
    struct worker *w = l->w;
    if (l->paused || w->draining)
        return;
    l->paused = 1;
    l->pause_ms = l->pause_ms == 0                 ? PAUSE_FIRST_MS
                  : l->pause_ms * 2 > PAUSE_MAX_MS ? PAUSE_MAX_MS
                                                   : l->pause_ms * 2;
    WORKER_STAT_ADD(&w->stats.accept_paused, 1);
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    uv_timer_start(&l->pause_timer, on_pause_end, l->pause_ms, 0);
    /* Connections that sit idle between requests give their descriptors to waiting ones. */
    for (size_t i = 0; i < w->nprotos; i++)
        w->protos[i]->drain(w, PROXY_DRAIN_IDLE);
}

static void on_pause_end(uv_timer_t *t)
{
    struct worker_listener *l = t->data;
    struct worker *w = l->w;
    if (w->draining || !l->paused)
        return;
    int fd = fcntl(l->src_fd, F_DUPFD_CLOEXEC, 0);
    if (fd == -1 || (w->fd_ceiling > 0 && fd >= w->fd_ceiling)) {
        if (fd != -1)
            close(fd);
        WORKER_STAT_ADD(&w->stats.accept_paused, 1);
        for (size_t i = 0; i < w->nprotos; i++)
            w->protos[i]->drain(w, PROXY_DRAIN_IDLE);
        l->pause_ms = l->pause_ms * 2 > PAUSE_MAX_MS ? PAUSE_MAX_MS : l->pause_ms * 2;
        uv_timer_start(&l->pause_timer, on_pause_end, l->pause_ms, 0);
        return;
    }
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc < 0)
        close(fd);
    else
        rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        uv_timer_start(&l->pause_timer, on_pause_end, PAUSE_MAX_MS, 0);
        return;
    }
    l->paused = 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct worker_listener *l = server->data;
    if (status < 0) {
        /* EMFILE, ENFILE, ENOMEM...: returning would have libuv try again at once. */
        listener_pause(l);
        return;
    }
    l->w->io_events++;
    l->proto->accept(l);
    if (l->pause_ms != 0 && !l->paused)
        l->pause_ms = 0; /* accepting again: the next shortage starts with a short pause */
}

/* proxy_proto.accept calls this with each accepted connection's descriptor: at the ceiling,
 * the listener pauses after serving it. */
void worker_accepted_fd(struct worker_listener *l, int fd)
{
    if (l->w->fd_ceiling > 0 && fd >= l->w->fd_ceiling)
        listener_pause(l);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Open client connections of every protocol; closes them all when how is PROXY_DRAIN_FORCE. */
static size_t drain_all(struct worker *w, enum proxy_drain how)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nprotos; i++)
        n += w->protos[i]->drain(w, how);
    return n;
}

static void finish_drain(struct worker *w)
{
    drain_all(w, PROXY_DRAIN_FORCE);
    /* Idle upstream connections go too: the worker is ending. */
    upstream_close_idle_all(&w->pools);
    mirror_worker_drain(w);
    w->stopped = 1;
    uv_stop(&w->loop);
}

static void on_drain_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    if (drain_all(w, PROXY_DRAIN_COUNT) == 0 || now >= w->drain_ms)
        finish_drain(w);
}

static void on_stop(uv_async_t *a)
{
    struct worker *w = a->data;
    if (w->draining)
        return;
    w->draining = 1;
    w->pools.draining = 1;
    for (size_t i = 0; i < w->nlisteners; i++) {
        uv_timer_stop(&w->listeners[i].pause_timer);
        if (!w->listeners[i].paused) /* a paused one is closed already */
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
    }
    w->drain_ms = uv_now(&w->loop) + atomic_load(&w->stop_drain_ms);
    /* Check every 50 ms whether the last busy connection is done. */
    uv_timer_start(&w->drain_timer, on_drain_tick, 0, 50);
}

/* Sleeps ns nanoseconds; a signal cutting it short only shortens the nap. */
static void nap_sleep(uint64_t ns)
{
    struct timespec t = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&t, NULL);
}

/* Clients that sent a request lately: those counted in the last full window, or none when
 * the worker has been quiet for longer than a window. Rolls the window over. */
static uint64_t worker_active_clients(struct worker *w)
{
    uint64_t now = uv_now(&w->loop);
    if (now - w->win_start >= NAP_WINDOW_MS) {
        w->active_clients = now - w->win_start < 2 * NAP_WINDOW_MS ? w->win_clients : 0;
        w->win_clients = 0;
        w->win++;
        w->win_start = now;
    }
    return w->active_clients;
}

/* The loop of uv_run(UV_RUN_DEFAULT), with a nap before blocking while the worker is busy (see
 * proxy/nap.h). w->io_events tells whether a turn of the loop handled any socket event. */
static void worker_run(struct worker *w)
{
    struct nap nap;
    nap_init(&nap, w->nap_ns);

    while (!w->stopped) {
        uint64_t len = nap_length(&nap, worker_active_clients(w));
        uint64_t seen = w->io_events;
        if (len > 0) {
            if (uv_run(&w->loop, UV_RUN_NOWAIT) == 0)
                break;
            if (w->io_events != seen || w->stopped)
                continue; /* busy: look again before sleeping */
            nap_sleep(len);
            WORKER_STAT_ADD(&w->stats.naps, 1);
            if (uv_run(&w->loop, UV_RUN_NOWAIT) == 0)
                break;
            if (w->io_events != seen) {
                nap_observe(&nap, len);
                continue;
            }
        }
        uint64_t t0 = uv_hrtime();
        if (w->stopped || uv_run(&w->loop, UV_RUN_ONCE) == 0)
            break;
        nap_observe(&nap, len + (uv_hrtime() - t0));
    }
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    worker_run(w);
    /* Close every remaining handle (clients were closed by finish_drain) and let the close
     * callbacks run so that memory is released before the thread ends. */
    uv_walk(&w->loop, close_walk_cb, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int worker_start(struct worker **out, int index, const struct worker_listener_spec *ls, size_t n,
                 size_t nservices, unsigned coalesce_us)
{
    int rc;
    size_t opened = 0;
    struct worker *w = xcalloc(1, sizeof(*w));
    w->index = index;
    w->nap_ns = (uint64_t)coalesce_us * 1000u;
    w->win = 1; /* clients start in window 0: the first request of each is counted */
    w->nservices = nservices;
    w->role_stats = xcalloc(nservices ? nservices * ROUTE_ROLES : 1, sizeof(*w->role_stats));
    w->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)w << 17) ^ (uint64_t)index ^ 0x9e3779b97f4a7c15ULL;
    *out = NULL;
    rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        free(w);
        return rc;
    }
    upstream_pools_init(&w->pools, &w->loop, &w->io_events);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < INT_MAX) {
        int lim = (int)rl.rlim_cur;
        w->fd_ceiling = lim - (lim / 8 > FD_RESERVE ? lim / 8 : FD_RESERVE);
        w->pools.fd_ceiling = lim - FD_RESERVE / 2;
        if (w->fd_ceiling < lim / 2)
            w->fd_ceiling = lim / 2;
    }
    mirror_worker_init(w);
    w->listeners = xcalloc(n ? n : 1, sizeof(*w->listeners));
    w->protos = xcalloc(n ? n : 1, sizeof(*w->protos));
    for (; opened < n; opened++) {
        struct worker_listener *l = &w->listeners[opened];
        if (ls[opened].proto == NULL) {
            rc = -EINVAL;
            goto fail;
        }
        size_t k = 0;
        while (k < w->nprotos && w->protos[k] != ls[opened].proto)
            k++;
        if (k == w->nprotos)
            w->protos[w->nprotos++] = ls[opened].proto;
        /* CLOEXEC: a successor started by a hand-over must not inherit these copies. */
        int fd = fcntl(ls[opened].fd, F_DUPFD_CLOEXEC, 0);
        if (fd == -1) {
            rc = -errno;
            goto fail;
        }
        uv_tcp_init(&w->loop, &l->tcp);
        l->tcp.data = l;
        uv_timer_init(&w->loop, &l->pause_timer);
        l->pause_timer.data = l;
        l->src_fd = ls[opened].fd;
        l->w = w;
        l->service_id = ls[opened].service_id;
        l->preview = ls[opened].preview;
        l->trusted =
            ls[opened].trusted != NULL && ls[opened].trusted->n > 0 ? ls[opened].trusted : NULL;
        l->proxy_protocol = ls[opened].proxy_protocol;
        l->tls = ls[opened].tls;
        l->vhosts = ls[opened].vhosts;
        l->proto = ls[opened].proto;
        rc = uv_tcp_open(&l->tcp, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
        if (rc < 0) {
            opened++; /* the handle is initialised: it must be closed */
            goto fail;
        }
    }
    w->nlisteners = n;
    uv_async_init(&w->loop, &w->notify_async, on_notify);
    w->notify_async.data = w;
    uv_async_init(&w->loop, &w->stop_async, on_stop);
    w->stop_async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    worker_refresh(w);
    rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc < 0)
        goto fail;
    *out = w;
    return 0;
fail:
    for (size_t i = 0; i < opened; i++)
        uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
    uv_walk(&w->loop, close_walk_cb, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    route_table_release(w->table);
    upstream_pools_done(&w->pools);
    mirror_worker_done(w);
    free(w->listeners);
    free(w->protos);
    free(w->role_stats);
    free(w);
    return rc;
}

void worker_notify(struct worker *w)
{
    uv_async_send(&w->notify_async);
}

void worker_stop(struct worker *w, uint64_t drain_ms)
{
    atomic_store(&w->stop_drain_ms, drain_ms);
    uv_async_send(&w->stop_async);
}

void worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
}

void worker_free(struct worker *w)
{
    if (w == NULL)
        return;
    upstream_pools_done(&w->pools);
    mirror_worker_done(w);
    for (size_t i = 0; i < w->nprotos; i++)
        w->protos[i]->done(w);
    bufs_done(&w->bufs);
    bufs_done(&w->big_bufs);
    route_table_release(w->table);
    uv_loop_close(&w->loop);
    free(w->listeners);
    free(w->protos);
    free(w->role_stats);
    free(w);
}

const struct worker_role_stats *worker_role_stats(const struct worker *w, int service_id,
                                                  enum route_role role)
{
    if (service_id < 0 || (size_t)service_id >= w->nservices)
        return NULL;
    return &w->role_stats[(size_t)service_id * ROUTE_ROLES + role];
}

const char *worker_upstream_fail_name(enum worker_upstream_fail why)
{
    static const char *const names[WORKER_UPSTREAM_FAILS] = {
        "connect", "connect_timeout", "connection_lost", "response_timeout", "bad_response"};
    return (unsigned)why < WORKER_UPSTREAM_FAILS ? names[why] : "unknown";
}

const struct worker_stats *worker_get_stats(const struct worker *w)
{
    return &w->stats;
}
