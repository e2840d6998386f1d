/* The daemon (`cutover serve`): wiring, signals, the loop, and hand-over to a successor.
 *
 * Threads: this control thread runs one libuv loop with the admin API, the rollout engine,
 * health checks and signals; `workers` threads run the data plane (proxy/worker.h).
 *
 * Hand-over (hot upgrade, reload, SIGUSR2, SIGHUP): the control plane is suspended first (a
 * running plan is saved to the store, to be resumed by the successor), then the successor is
 * spawned with the listening sockets (net/handover.h). Once it says READY, this daemon stops
 * accepting, answers the next request on each connection with Connection: close, and exits
 * when its connections are done or drain_timeout passed. If the successor fails, the control
 * plane restarts here from the store and nothing else changed. */
#include "serve/serve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "config/config.h"
#include "core/log.h"
#include "core/release.h"
#include "core/xmalloc.h"
#include "net/addr.h"
#include "net/cidr.h"
#include "net/handover.h"
#include "http/vhost.h"
#include "net/listen.h"
#include "net/tls.h"
#include "notify/notify.h"
#include "proxy/route.h"
#include "proxy/h1proxy.h"
#include "proxy/hold.h"
#include "proxy/pick.h"
#include "proxy/tcpproxy.h"
#include "proxy/worker.h"
#include "rollout/rollout.h"
#include "serve/series.h"
#include "store/store.h"

#define HANDOVER_TIMEOUT_MS 10000
#define STORE_WATCH_MS 1000
#define MAX_RETIRED 64
/* The hand-over name of the admin.listen socket: '@' is in no service name. */
#define ADMIN_FD_NAME "@admin"
#define LOCK_FD_NAME "@lock" /* state_dir's lock, held on by the successor of a hand-over */

struct listener {
    int fd;
    char *name; /* "web" or "web.preview"; a shared listen: the first of its services */
    struct vhost_table vhosts; /* a shared listen's routes (http/vhost.h); n 0: one service */
};

/* What a role or a version of a service answered: by status class and, for answers from the
 * version, latency to the response head (core/hist.h buckets, us). */
struct vagg {
    uint64_t classes[WORKER_CLASSES];
    uint64_t latency[HIST_BUCKETS];
};

struct vcount {
    size_t service; /* index in cfg->services */
    char *version;
    struct vagg a;
};

struct daemon {
    uv_loop_t *loop;
    struct config *cfg;
    char *cfg_path;
    char **argv; /* how this daemon was started: a successor is started the same way */
    char exe[PATH_MAX];
    struct store *st;
    struct rollout *ro;
    struct rollout *retired[MAX_RETIRED]; /* stopped engines, freed after the loop */
    size_t nretired;
    struct api *api;
    struct worker **workers;
    int nworkers;
    struct listener *listeners;
    size_t nlisten;
    struct cidr_list *trusted; /* [cfg->nservices]: each service's trusted_proxies, for workers */
    int admin_fd;              /* admin.listen, or -1 */
    struct tls_server **tls;   /* [cfg->nservices]: each service's certificates, or NULL */
    struct tls_server *admin_tls; /* admin.tls, or NULL */
    int lock_fd;                  /* state_dir/cutover.lock, flock()ed: one daemon per state_dir */
    struct notify *nt;            /* webhooks, or NULL */
    uv_signal_t sigterm, sigint, sighup, sigusr2;
    uv_timer_t exit_timer;
    uv_timer_t fd_watch;     /* logs the data plane's accept pauses, once per episode */
    uv_timer_t store_watch;  /* the store's guard: its file still there, its backups working */
    int store_alarmed;       /* the guard's trip was logged */
    char *backup_err;        /* the last backup failure logged, or NULL */
    uint64_t fd_paused_seen; /* the workers' accept_paused sum at the last tick */
    int fd_episode;          /* a pause was seen in the last tick */
    int stopping;
    int handing_over;
    int handed_over;
    int sigint_count;
    api_done_fn pending_done;
    void *pending_req;
    /* /metrics per version: the data plane counts per role; what each role counted is handed
     * to the version the role served (vc_flush) on each publish and each scrape. */
    struct vcount *vc;
    size_t nvc;
    struct vagg *vbase;    /* [nservices * ROUTE_ROLES]: the role's sums at the last flush */
    char **vname;          /* [nservices * ROUTE_ROLES]: the version the role serves, or NULL */
    double started;        /* wall-clock seconds at start: process_start_time_seconds */
    struct series *series; /* the dashboard's charts: the serving versions' last 15 minutes */
    uv_timer_t series_tick;
    char *series_saved; /* the file a hand-over saved the series to, or NULL */
};

/* ---------------------------------------------------------------- data plane glue ----------- */

static void vc_flush(struct daemon *d);

static void on_publish(void *ctx)
{
    struct daemon *d = ctx;
    vc_flush(d); /* what was counted so far belongs to the versions of the old table */
    for (int i = 0; i < d->nworkers; i++)
        if (d->workers[i] != NULL)
            worker_notify(d->workers[i]);
}

static void emit_counter(rollout_emit_fn emit, void *ectx, const char *name, const char *help,
                         const char *type, uint64_t v)
{
    char line[256];
    snprintf(line, sizeof(line), "# HELP %s %s", name, help);
    emit(ectx, line);
    snprintf(line, sizeof(line), "# TYPE %s %s", name, type);
    emit(ectx, line);
    snprintf(line, sizeof(line), "%s %llu", name, (unsigned long long)v);
    emit(ectx, line);
}

/* Wakes the webhooks' thread: it reads the committed event from the store itself. */
static void on_event_notify(void *ctx, const struct store_event *ev)
{
    struct daemon *d = ctx;
    (void)ev;
    notify_kick(d->nt);
}

/* The TLS listeners' handshakes and failed handshakes, by service and reason (net/tls.h). */
static void emit_tls(struct daemon *d, void (*emit)(void *, const char *), void *ectx)
{
    char line[512];
    int any = 0;
    for (size_t j = 0; d->tls != NULL && j < d->cfg->nservices; j++)
        any |= d->tls[j] != NULL;
    if (any) {
        emit(ectx, "# HELP cutover_tls_handshakes_total TLS handshakes completed on a service's "
                   "listeners.");
        emit(ectx, "# TYPE cutover_tls_handshakes_total counter");
        for (size_t j = 0; j < d->cfg->nservices; j++) {
            if (d->tls[j] == NULL)
                continue;
            snprintf(line, sizeof(line), "cutover_tls_handshakes_total{service=\"%s\"} %llu",
                     d->cfg->services[j].name,
                     (unsigned long long)tls_server_handshakes(d->tls[j]));
            emit(ectx, line);
        }
        emit(ectx, "# HELP cutover_tls_certificate_expiry_timestamp_seconds When each served "
                   "certificate expires (notAfter, Unix time): alert well before it.");
        emit(ectx, "# TYPE cutover_tls_certificate_expiry_timestamp_seconds gauge");
        for (size_t j = 0; j < d->cfg->nservices; j++)
            for (size_t k = 0; d->tls[j] != NULL && k < tls_server_ncerts(d->tls[j]) &&
                               k < d->cfg->services[j].tls.ncerts;
                 k++) {
                snprintf(line, sizeof(line),
                         "cutover_tls_certificate_expiry_timestamp_seconds{service=\"%s\","
                         "cert=\"%.300s\"} %lld",
                         d->cfg->services[j].name, d->cfg->services[j].tls.certs[k].cert,
                         (long long)tls_server_not_after(d->tls[j], k));
                emit(ectx, line);
            }
        emit(ectx, "# HELP cutover_tls_handshake_failures_total TLS connections closed before "
                   "their handshake finished: invalid SNI, plain HTTP, handshake timeout, "
                   "protocol error, client gone.");
        emit(ectx, "# TYPE cutover_tls_handshake_failures_total counter");
        for (size_t j = 0; j < d->cfg->nservices; j++)
            for (int r = 0; d->tls[j] != NULL && r < TLS_FAILS; r++) {
                snprintf(line, sizeof(line),
                         "cutover_tls_handshake_failures_total{service=\"%s\",reason=\"%s\"} "
                         "%llu",
                         d->cfg->services[j].name, tls_fail_name((enum tls_fail)r),
                         (unsigned long long)tls_server_failures(d->tls[j], (enum tls_fail)r));
                emit(ectx, line);
            }
    }
    if (d->admin_tls != NULL) {
        emit(ectx, "# HELP cutover_admin_tls_handshake_failures_total TLS connections to "
                   "admin.listen closed before their handshake finished.");
        emit(ectx, "# TYPE cutover_admin_tls_handshake_failures_total counter");
        for (int r = 0; r < TLS_FAILS; r++) {
            snprintf(line, sizeof(line),
                     "cutover_admin_tls_handshake_failures_total{reason=\"%s\"} %llu",
                     tls_fail_name((enum tls_fail)r),
                     (unsigned long long)tls_server_failures(d->admin_tls, (enum tls_fail)r));
            emit(ectx, line);
        }
    }
}

/* cutover_proxy_lost_total{service, role, reason}: the requests cutover failed or cut, summed
 * over the workers (proxy/worker.h, enum worker_loss). */
static void emit_lost(struct daemon *d, rollout_emit_fn emit, void *ectx)
{
    char line[512];
    emit(ectx, "# HELP cutover_proxy_lost_total Requests cutover failed (its own 502/503/504) "
               "or cut (drain or stop deadline, upstream reset mid-response).");
    emit(ectx, "# TYPE cutover_proxy_lost_total counter");
    for (size_t j = 0; j < d->cfg->nservices; j++) {
        for (int role = 0; role < ROUTE_ROLES; role++) {
            uint64_t lost[ROUTE_LOSSES] = {0};
            for (int i = 0; i < d->nworkers; i++) {
                const struct worker_role_stats *st =
                    worker_role_stats(d->workers[i], (int)j, (enum route_role)role);
                for (int k = 0; st != NULL && k < ROUTE_LOSSES; k++)
                    lost[k] += atomic_load_explicit(&st->lost[k], memory_order_relaxed);
            }
            for (int k = 0; k < ROUTE_LOSSES; k++) {
                snprintf(line, sizeof(line),
                         "cutover_proxy_lost_total{service=\"%s\",role=\"%s\",reason=\"%s\"} "
                         "%llu",
                         d->cfg->services[j].name, route_role_name((enum route_role)role),
                         route_loss_name((unsigned)k), (unsigned long long)lost[k]);
                emit(ectx, line);
            }
        }
    }
}

/* cutover_upstream_failures_total{service, role, reason} and the open long-lived connections
 * (tunnels, event streams) per role, summed over the workers. */
static void emit_upstream(struct daemon *d, rollout_emit_fn emit, void *ectx)
{
    char line[512];
    emit(ectx, "# HELP cutover_upstream_failures_total Upstream connections that failed a request, "
               "by reason, whether a retry then answered it or not.");
    emit(ectx, "# TYPE cutover_upstream_failures_total counter");
    for (size_t j = 0; j < d->cfg->nservices; j++)
        for (int role = 0; role < ROUTE_ROLES; role++) {
            uint64_t n[WORKER_UPSTREAM_FAILS] = {0};
            for (int i = 0; i < d->nworkers; i++) {
                const struct worker_role_stats *st =
                    worker_role_stats(d->workers[i], (int)j, (enum route_role)role);
                for (int k = 0; st != NULL && k < WORKER_UPSTREAM_FAILS; k++)
                    n[k] += atomic_load_explicit(&st->upstream_fail[k], memory_order_relaxed);
            }
            for (int k = 0; k < WORKER_UPSTREAM_FAILS; k++) {
                snprintf(line, sizeof(line),
                         "cutover_upstream_failures_total{service=\"%s\",role=\"%s\","
                         "reason=\"%s\"} %llu",
                         d->cfg->services[j].name, route_role_name((enum route_role)role),
                         worker_upstream_fail_name((enum worker_upstream_fail)k),
                         (unsigned long long)n[k]);
                emit(ectx, line);
            }
        }
    emit(ectx, "# HELP cutover_long_lived_connections Open tunnels (WebSocket, CONNECT) and event "
               "streams, by the role of the version they reach.");
    emit(ectx, "# TYPE cutover_long_lived_connections gauge");
    for (size_t j = 0; j < d->cfg->nservices; j++)
        for (int role = 0; role < ROUTE_ROLES; role++) {
            int64_t n = 0;
            for (int i = 0; i < d->nworkers; i++) {
                const struct worker_role_stats *st =
                    worker_role_stats(d->workers[i], (int)j, (enum route_role)role);
                if (st != NULL)
                    n += atomic_load_explicit(&st->longlived, memory_order_relaxed);
            }
            snprintf(line, sizeof(line),
                     "cutover_long_lived_connections{service=\"%s\",role=\"%s\"} %lld",
                     d->cfg->services[j].name, route_role_name((enum route_role)role),
                     (long long)(n > 0 ? n : 0));
            emit(ectx, line);
        }
}

/* Hold and maintenance per service (proxy/hold.h): requests waiting now, ever held, answered
 * 503 past their max or over hold_max_requests, and maintenance answers. */
static void emit_hold(struct daemon *d, rollout_emit_fn emit, void *ectx)
{
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"cutover_hold_waiting", "gauge", "Requests waiting now in a hold (cutover hold)."},
        {"cutover_hold_requests_total", "counter", "Requests that waited in a hold."},
        {"cutover_hold_expired_total", "counter",
         "Held requests answered 503 because they waited longer than the hold's max."},
        {"cutover_hold_refused_total", "counter",
         "Requests answered 503 because limits.hold_max_requests were waiting already."},
        {"cutover_maintenance_answers_total", "counter",
         "Requests answered 503 with the maintenance page (cutover maintenance)."},
    };
    char line[512];
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        snprintf(line, sizeof(line), "# HELP %s %s", m[k].name, m[k].help);
        emit(ectx, line);
        snprintf(line, sizeof(line), "# TYPE %s %s", m[k].name, m[k].type);
        emit(ectx, line);
        for (size_t j = 0; j < d->cfg->nservices; j++) {
            struct hold_stats hs;
            hold_get_stats((int)j, &hs);
            const uint64_t v[] = {hs.held, hs.total, hs.expired, hs.refused, hs.maintenance};
            snprintf(line, sizeof(line), "%s{service=\"%s\"} %llu", m[k].name,
                     d->cfg->services[j].name, (unsigned long long)v[k]);
            emit(ectx, line);
        }
    }
}

/* ---------------------------------------------------------------- per-version metrics ------ */

static struct vcount *vc_get(struct daemon *d, size_t service, const char *version)
{
    for (size_t i = 0; i < d->nvc; i++)
        if (d->vc[i].service == service && strcmp(d->vc[i].version, version) == 0)
            return &d->vc[i];
    d->vc = xrealloc(d->vc, (d->nvc + 1) * sizeof(*d->vc));
    struct vcount *v = &d->vc[d->nvc++];
    memset(v, 0, sizeof(*v));
    v->service = service;
    v->version = xstrdup(version);
    return v;
}

static void vagg_move(uint64_t *acc, uint64_t *base, uint64_t cur)
{
    /* A torn read may run behind an earlier one: count nothing rather than wrap. */
    if (cur > *base)
        *acc += cur - *base;
    *base = cur;
}

/* A daemon that lives through many deploys keeps the series of the VC_KEEP versions of each
 * service seen last (those serving now always among them), so /metrics stays small. */
#define VC_KEEP 8

static void vc_prune(struct daemon *d)
{
    for (size_t j = 0; j < d->cfg->nservices; j++) {
        size_t n = 0;
        for (size_t i = 0; i < d->nvc; i++)
            n += d->vc[i].service == j;
        /* Entries are in order of first use: drop the oldest not serving now. */
        for (size_t i = 0; i < d->nvc && n > VC_KEEP;) {
            struct vcount *v = &d->vc[i];
            int serving = 0;
            for (int role = 0; role < ROUTE_ROLES; role++) {
                const char *name = d->vname[j * ROUTE_ROLES + (size_t)role];
                serving |= name != NULL && strcmp(name, v->version) == 0;
            }
            if (v->service != j || serving) {
                i++;
                continue;
            }
            free(v->version);
            memmove(v, v + 1, (d->nvc - i - 1) * sizeof(*v));
            d->nvc--;
            n--;
        }
    }
}

/* Hands what each role counted since the last flush to the version it served, then reads which
 * version each role serves now from the published table. Control thread (publish, scrape);
 * requests a worker routed by the old table and counted after a publish go to the new
 * version, a handful at most. */
static void vc_flush(struct daemon *d)
{
    size_t n = d->cfg->nservices;
    if (d->vbase == NULL) {
        d->vbase = xcalloc(n * ROUTE_ROLES + 1, sizeof(*d->vbase));
        d->vname = xcalloc(n * ROUTE_ROLES + 1, sizeof(*d->vname));
    }
    struct route_table *t = route_table_acquire();
    for (size_t j = 0; j < n; j++) {
        const struct route_service *rs = NULL;
        for (size_t k = 0; t != NULL && k < t->nservices; k++)
            if (t->services[k].id == (int)j)
                rs = &t->services[k];
        for (int role = 0; role < ROUTE_ROLES; role++) {
            size_t at = j * ROUTE_ROLES + (size_t)role;
            struct vagg cur;
            memset(&cur, 0, sizeof(cur));
            for (int i = 0; i < d->nworkers; i++) {
                const struct worker_role_stats *st =
                    d->workers[i] ? worker_role_stats(d->workers[i], (int)j, (enum route_role)role)
                                  : NULL;
                if (st == NULL)
                    continue;
                for (int k = 0; k < WORKER_CLASSES; k++)
                    cur.classes[k] += atomic_load_explicit(&st->classes[k], memory_order_relaxed);
                for (int k = 0; k < HIST_BUCKETS; k++)
                    cur.latency[k] += atomic_load_explicit(&st->latency[k], memory_order_relaxed);
            }
            struct vagg *base = &d->vbase[at];
            struct vagg *acc = d->vname[at] ? &vc_get(d, j, d->vname[at])->a : NULL;
            struct vagg sink; /* counts of a role that served no version (nothing is routed) */
            if (acc == NULL) {
                memset(&sink, 0, sizeof(sink));
                acc = &sink;
            }
            for (int k = 0; k < WORKER_CLASSES; k++)
                vagg_move(&acc->classes[k], &base->classes[k], cur.classes[k]);
            for (int k = 0; k < HIST_BUCKETS; k++)
                vagg_move(&acc->latency[k], &base->latency[k], cur.latency[k]);
            const struct route_backend *b = NULL;
            if (rs != NULL)
                b = pick_backend(rs, (enum route_role)role);
            const char *now = b != NULL && b->ntargets > 0 ? b->version : NULL;
            if (now == NULL || d->vname[at] == NULL || strcmp(now, d->vname[at]) != 0) {
                free(d->vname[at]);
                d->vname[at] = now ? xstrdup(now) : NULL;
            }
        }
    }
    if (t != NULL)
        route_table_release(t);
    vc_prune(d);
}

static void vc_free(struct daemon *d)
{
    for (size_t i = 0; i < d->nvc; i++)
        free(d->vc[i].version);
    free(d->vc);
    for (size_t j = 0; d->vname != NULL && j < d->cfg->nservices * ROUTE_ROLES; j++)
        free(d->vname[j]);
    free(d->vname);
    free(d->vbase);
}

/* Every SERIES_EVERY_MS: one point per serving version for the dashboard's charts, from the
 * same per-version sums as /metrics. */
static void on_series_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    vc_flush(d);
    for (size_t j = 0; d->vname != NULL && j < d->cfg->nservices; j++)
        for (int role = 0; role < ROUTE_ROLES; role++) {
            const char *name = d->vname[j * ROUTE_ROLES + (size_t)role];
            /* A baseline serves the stable role's version: series_sample keeps one point of
             * the two (a second sample in one tick is ignored). */
            if (name == NULL)
                continue;
            const struct vagg *a = &vc_get(d, j, name)->a;
            uint64_t requests = 0;
            for (int k = 0; k < WORKER_CLASSES; k++)
                requests += a->classes[k];
            struct hist h;
            memcpy(h.counts, a->latency, sizeof(h.counts));
            series_sample(d->series, d->cfg->services[j].name, name, now, requests,
                          a->classes[WORKER_CLASSES - 1], &h);
        }
}

/* The API's GET /api/v1/services/NAME/series: NULL for a service the config does not have. */
static json_t *on_series(void *ctx, const char *service)
{
    struct daemon *d = ctx;
    for (size_t j = 0; j < d->cfg->nservices; j++)
        if (strcmp(d->cfg->services[j].name, service) == 0)
            return series_json(d->series, service);
    return NULL;
}

/* The dashboard's series outlive this process in STATE_DIR/series.json: written just before a
 * hand-over starts the successor, and after the last tick of a stop for good; read, then removed,
 * at start before the first tick. A kill -9 loses them. */
static void series_file(char *buf, size_t len, const char *state_dir)
{
    snprintf(buf, len, "%s/series.json", state_dir);
}

static void series_keep(struct daemon *d, const char *path)
{
    char err[1024];
    if (series_save(d->series, path, err, sizeof(err)) < 0)
        log_warn("cannot save the dashboard's series: the next process's charts start empty",
                 "error", err);
}

/* Loads what the process before this one saved, and removes the file whether it loaded or was
 * refused: a file is never loaded twice, and a bad one is warned about once. */
static void series_restore(struct daemon *d)
{
    char path[PATH_MAX + 16], err[1024], n[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    series_file(path, sizeof(path), d->cfg->state_dir);
    int rc = series_load(d->series, path, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, err,
                         sizeof(err));
    if (rc == -ENOENT)
        return;
    if (rc < 0) {
        log_warn("the dashboard's series were not loaded: the charts start empty", "error", err);
    } else {
        snprintf(n, sizeof(n), "%d", rc);
        log_info("the dashboard's series were loaded", "file", path, "versions", n);
    }
    if (unlink(path) == -1 && errno != ENOENT)
        log_warn("cannot remove the series file", "file", path, "error", strerror(errno));
}

/* The histogram's bounds in seconds; a log-scaled bucket (core/hist.h) that straddles one
 * counts above it, so a cumulative count is low by at most the samples within 3 % of a bound. */
static const double le_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* cutover_http_requests_total{service,version,code} and
 * cutover_http_request_duration_seconds{service,version}, from the per-version sums. */
static void emit_http(struct daemon *d, rollout_emit_fn emit, void *ectx)
{
    static const char *const classes[WORKER_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    char line[512];
    vc_flush(d);
    emit(ectx, "# HELP cutover_http_requests_total HTTP requests answered, by service, version "
               "and status class (cutover's own 502/503/504 included).");
    emit(ectx, "# TYPE cutover_http_requests_total counter");
    for (size_t i = 0; i < d->nvc; i++)
        for (int k = 0; k < WORKER_CLASSES; k++) {
            snprintf(line, sizeof(line),
                     "cutover_http_requests_total{service=\"%s\",version=\"%s\",code=\"%s\"} %llu",
                     d->cfg->services[d->vc[i].service].name, d->vc[i].version, classes[k],
                     (unsigned long long)d->vc[i].a.classes[k]);
            emit(ectx, line);
        }
    emit(ectx, "# HELP cutover_http_request_duration_seconds Time from the request to the "
               "version's response head (answers from the version only).");
    emit(ectx, "# TYPE cutover_http_request_duration_seconds histogram");
    for (size_t i = 0; i < d->nvc; i++) {
        const struct vagg *a = &d->vc[i].a;
        const char *svc = d->cfg->services[d->vc[i].service].name;
        uint64_t cum = 0, count = 0;
        double sum = 0;
        unsigned b = 0;
        for (unsigned k = 0; k < HIST_BUCKETS; k++) {
            count += a->latency[k];
            sum += (double)a->latency[k] * hist_bucket_value(k) / 1e6;
        }
        for (size_t q = 0; q < sizeof(le_bounds) / sizeof(le_bounds[0]); q++) {
            /* The buckets below the one holding bound + 1 us hold values <= bound only. */
            unsigned end = hist_bucket((uint64_t)(le_bounds[q] * 1e6 + 0.5) + 1);
            for (; b < end; b++)
                cum += a->latency[b];
            snprintf(line, sizeof(line),
                     "cutover_http_request_duration_seconds_bucket{service=\"%s\",version=\"%s\","
                     "le=\"%g\"} %llu",
                     svc, d->vc[i].version, le_bounds[q], (unsigned long long)cum);
            emit(ectx, line);
        }
        snprintf(line, sizeof(line),
                 "cutover_http_request_duration_seconds_bucket{service=\"%s\",version=\"%s\","
                 "le=\"+Inf\"} %llu",
                 svc, d->vc[i].version, (unsigned long long)count);
        emit(ectx, line);
        snprintf(line, sizeof(line),
                 "cutover_http_request_duration_seconds_sum{service=\"%s\",version=\"%s\"} %.6f",
                 svc, d->vc[i].version, sum);
        emit(ectx, line);
        snprintf(line, sizeof(line),
                 "cutover_http_request_duration_seconds_count{service=\"%s\",version=\"%s\"} "
                 "%llu",
                 svc, d->vc[i].version, (unsigned long long)count);
        emit(ectx, line);
    }
}

/* process_* (the names Prometheus client libraries use) and cutover_build_info. */
static void emit_process(struct daemon *d, rollout_emit_fn emit, void *ectx)
{
    char line[256];
    long fds = 0;
    DIR *dir = opendir("/proc/self/fd");
    if (dir != NULL) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL)
            fds += e->d_name[0] != '.';
        closedir(dir);
        fds--; /* the directory's own descriptor */
    }
    unsigned long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    emit(ectx, "# HELP process_open_fds Number of open file descriptors.");
    emit(ectx, "# TYPE process_open_fds gauge");
    snprintf(line, sizeof(line), "process_open_fds %ld", fds > 0 ? fds : 0);
    emit(ectx, line);
    emit(ectx, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
    emit(ectx, "# TYPE process_resident_memory_bytes gauge");
    snprintf(line, sizeof(line), "process_resident_memory_bytes %llu",
             rss * (unsigned long long)sysconf(_SC_PAGESIZE));
    emit(ectx, line);
    emit(ectx, "# HELP process_start_time_seconds Start time of the process since the epoch in "
               "seconds.");
    emit(ectx, "# TYPE process_start_time_seconds gauge");
    snprintf(line, sizeof(line), "process_start_time_seconds %.3f", d->started);
    emit(ectx, line);
    emit(ectx, "# HELP cutover_build_info The cutover release this daemon runs.");
    emit(ectx, "# TYPE cutover_build_info gauge");
    snprintf(line, sizeof(line), "cutover_build_info{version=\"%s\"} 1", CUTOVER_RELEASE);
    emit(ectx, line);
}

/* Sums the workers' counters: each is written by one worker only, so relaxed loads suffice. */
static void on_metrics(void *ctx, rollout_emit_fn emit, void *ectx)
{
    struct daemon *d = ctx;
    uint64_t acc = 0, req = 0, r5 = 0, perr = 0, retr = 0, bad = 0, naps = 0, ppref = 0;
    uint64_t paused = 0;
    int64_t clients = 0;
    for (int i = 0; i < d->nworkers; i++) {
        const struct worker_stats *s = worker_get_stats(d->workers[i]);
        acc += atomic_load_explicit(&s->accepted, memory_order_relaxed);
        req += atomic_load_explicit(&s->requests, memory_order_relaxed);
        r5 += atomic_load_explicit(&s->responses_5xx, memory_order_relaxed);
        perr += atomic_load_explicit(&s->proxy_errors, memory_order_relaxed);
        retr += atomic_load_explicit(&s->retries, memory_order_relaxed);
        bad += atomic_load_explicit(&s->bad_requests, memory_order_relaxed);
        clients += atomic_load_explicit(&s->clients, memory_order_relaxed);
        naps += atomic_load_explicit(&s->naps, memory_order_relaxed);
        ppref += atomic_load_explicit(&s->client_addr_refused, memory_order_relaxed);
        paused += atomic_load_explicit(&s->accept_paused, memory_order_relaxed);
    }
    emit_counter(emit, ectx, "cutover_connections_accepted_total", "Client connections accepted.",
                 "counter", acc);
    emit_counter(emit, ectx, "cutover_requests_total", "Requests received.", "counter", req);
    emit_counter(emit, ectx, "cutover_upstream_5xx_total", "5xx answers from upstreams.", "counter",
                 r5);
    emit_counter(emit, ectx, "cutover_proxy_errors_total",
                 "502/503/504 answers cutover made itself.", "counter", perr);
    emit_counter(emit, ectx, "cutover_retries_total",
                 "Requests sent again after an upstream failed.", "counter", retr);
    emit_counter(emit, ectx, "cutover_bad_requests_total", "Requests refused as malformed.",
                 "counter", bad);
    emit_counter(emit, ectx, "cutover_client_connections", "Open client connections.", "gauge",
                 clients > 0 ? (uint64_t)clients : 0);
    emit_counter(emit, ectx, "cutover_worker_naps_total",
                 "Naps busy workers took before blocking (io_coalesce_us).", "counter", naps);
    emit_counter(emit, ectx, "cutover_proxy_header_refused_total",
                 "Connections closed on a proxy_protocol listener: peer not in trusted_proxies, "
                 "or a malformed PROXY header.",
                 "counter", ppref);
    emit(ectx, "# HELP cutover_accept_paused_total Pauses of accepting new connections because "
               "file descriptors ran out (or the data plane reached its share of them).");
    emit(ectx, "# TYPE cutover_accept_paused_total counter");
    char line[128];
    snprintf(line, sizeof(line), "cutover_accept_paused_total{listener=\"service\"} %llu",
             (unsigned long long)paused);
    emit(ectx, line);
    snprintf(line, sizeof(line), "cutover_accept_paused_total{listener=\"admin\"} %llu",
             (unsigned long long)api_accept_paused(d->api));
    emit(ectx, line);
    emit_tls(d, emit, ectx);
    emit_lost(d, emit, ectx);
    emit_upstream(d, emit, ectx);
    emit_hold(d, emit, ectx);
    emit(ectx, "# HELP cutover_store_ok 0 once the store was deleted, replaced or failed a write "
               "for integrity reasons, or is corrupt and was opened read-only: changes are refused "
               "until a restart.");
    emit(ectx, "# TYPE cutover_store_ok gauge");
    snprintf(line, sizeof(line), "cutover_store_ok %d", store_guard_why(d->st) == NULL);
    emit(ectx, line);
    emit_http(d, emit, ectx);
    emit_process(d, emit, ectx);
}

/* An event store_lost on each service's last change, as service_down does: the event streams
 * and webhooks hear it. Best effort: a store failing for integrity reasons may refuse it. */
static void store_alarm_events(struct daemon *d, const char *why)
{
    for (size_t i = 0; i < d->cfg->nservices; i++) {
        struct store_change *v = NULL;
        size_t n = 0;
        if (store_change_list(d->st, d->cfg->services[i].name, 1, &v, &n) == 0 && n == 1)
            (void)store_event_add(d->st, v[0].id, "store_lost", why);
        store_change_list_free(v, n);
    }
}

/* Every second: the store's path still names the file the daemon holds (store_guard_check),
 * and the automatic backups work. Each new trouble is logged once. */
static void on_store_watch(uv_timer_t *t)
{
    struct daemon *d = t->data;
    store_guard_check(d->st);
    const char *why = store_guard_why(d->st);
    if (why != NULL && !d->store_alarmed) {
        d->store_alarmed = 1;
        log_error("the store is not trusted: deploys and rollbacks are refused, traffic stays as "
                  "it is; restart the daemon to restore the store from its backup",
                  "why", why);
        store_alarm_events(d, why);
    }
    const char *berr = store_backup_error(d->st);
    if (berr != NULL && (d->backup_err == NULL || strcmp(berr, d->backup_err) != 0)) {
        log_error("cannot back up the store", "error", berr);
        free(d->backup_err);
        d->backup_err = xstrdup(berr);
    } else if (berr == NULL && d->backup_err != NULL) {
        log_info("the store is backed up again");
        free(d->backup_err);
        d->backup_err = NULL;
    }
}

/* Opens the store, first restoring it from its backup when it is missing or corrupt
 * (store_recover). A corrupt store without a usable backup is left as it is and a store in
 * memory takes its place: the daemon serves the config's targets and refuses changes rather
 * than serving nothing. */
static int open_store(struct daemon *d, char *err, size_t errlen)
{
    char *db = xasprintf("%s/cutover.db", d->cfg->state_dir);
    char *bak = xasprintf("%s.backup", db);
    char what[2048];
    int rc = store_recover(db, bak, what, sizeof(what));
    if (rc < 0) {
        snprintf(err, errlen, "%.900s", what);
        goto out;
    }
    if (rc == STORE_RECOVER_RESTORED)
        log_error("the store was restored from its backup", "what", what);
    if (rc == STORE_RECOVER_CORRUPT) {
        log_error("the store is corrupt and no backup can replace it: serving the config's "
                  "targets read-only; repair it (cutover check --store) and restart",
                  "what", what);
        rc = store_open(":memory:", &d->st, err, errlen);
        if (rc == 0) {
            char why[2300];
            snprintf(why, sizeof(why), "%s; the daemon serves the config's targets read-only",
                     what);
            store_guard_set(d->st, why);
        }
        goto out;
    }
    rc = store_open(db, &d->st, err, errlen);
    if (rc < 0)
        goto out;
    store_backup_after_change(d->st, bak);
    /* A first backup at once: a store lost before the first change ends is restored too. */
    char berr[700];
    if (store_backup(d->st, bak, berr, sizeof(berr)) < 0)
        log_error("cannot back up the store", "error", berr);
out:
    free(db);
    free(bak);
    return rc;
}

/* Once a second: a data-plane episode of accept pauses (proxy/worker.c) is logged when it
 * begins and when a second passes without a pause. The workers only count. */
static void on_fd_watch(uv_timer_t *t)
{
    struct daemon *d = t->data;
    uint64_t n = 0;
    for (int i = 0; i < d->nworkers; i++)
        n += atomic_load_explicit(&worker_get_stats(d->workers[i])->accept_paused,
                                  memory_order_relaxed);
    char num[24];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)n);
    if (n != d->fd_paused_seen && !d->fd_episode) {
        d->fd_episode = 1;
        log_warn("accepting paused: out of file descriptors; open connections are served",
                 "pauses_total", num);
    } else if (n == d->fd_paused_seen && d->fd_episode) {
        d->fd_episode = 0;
        log_info("accepting again", "pauses_total", num);
    }
    d->fd_paused_seen = n;
}

/* Sums what every worker counted for (service, role); each counter is read with a relaxed
 * load, so a sample may be a request or two behind, never torn. */
static void on_sample(void *ctx, int service_id, int role, struct analysis_sample *out)
{
    struct daemon *d = ctx;
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < d->nworkers; i++) {
        const struct worker_role_stats *st =
            worker_role_stats(d->workers[i], service_id, (enum route_role)role);
        if (st == NULL)
            continue;
        for (int k = 0; k < WORKER_CLASSES; k++) /* the requests answered, by class */
            out->requests += atomic_load_explicit(&st->classes[k], memory_order_relaxed);
        out->errors_5xx += atomic_load_explicit(&st->errors_5xx, memory_order_relaxed);
        out->upstream_errors += atomic_load_explicit(&st->upstream_errors, memory_order_relaxed);
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            out->latency.counts[b] += atomic_load_explicit(&st->latency[b], memory_order_relaxed);
        for (unsigned k = 0; k < ROUTE_LOSSES; k++)
            out->lost[k] += atomic_load_explicit(&st->lost[k], memory_order_relaxed);
    }
}

static uint64_t max_drain_ms(const struct config *cfg)
{
    uint64_t m = 0;
    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].drain_timeout_ms > m)
            m = cfg->services[i].drain_timeout_ms;
    return m;
}

/* ---------------------------------------------------------------- stopping ------------------ */

static void on_join_done(uv_work_t *req, int status);

static void join_workers(uv_work_t *req)
{
    struct daemon *d = req->data;
    for (int i = 0; i < d->nworkers; i++)
        worker_join(d->workers[i]);
}

static void control_suspend(struct daemon *d)
{
    if (d->ro == NULL)
        return;
    rollout_stop(d->ro);
    /* What a stop wrote (a suspended plan's step) is in the backup too: a store lost before
     * the next start is restored as this daemon left it. */
    store_backup_flush(d->st);
    if (d->nretired < MAX_RETIRED)
        d->retired[d->nretired++] = d->ro;
    d->ro = NULL;
    api_set_rollout(d->api, NULL);
}

/* Stops the daemon: the API and rollouts first (no new changes), then the workers drain. The
 * loop ends once the workers have joined. */
static void daemon_stop(struct daemon *d, uint64_t drain_ms, const char *why)
{
    static uv_work_t join_req;
    if (d->stopping)
        return;
    d->stopping = 1;
    log_info("stopping", "reason", why);
    if (!d->handed_over) /* the successor is the service now; systemd must not see it stop */
        handover_sd_notify("STOPPING=1");
    control_suspend(d);
    api_stop(d->api, d->handed_over);
    d->api = NULL;
    for (int i = 0; i < d->nworkers; i++)
        worker_stop(d->workers[i], drain_ms);
    join_req.data = d;
    uv_queue_work(d->loop, &join_req, join_workers, on_join_done);
}

static void on_join_done(uv_work_t *req, int status)
{
    struct daemon *d = req->data;
    (void)status;
    /* The data plane has drained: now the managed instances may go (a successor adopted them
     * already when this daemon handed over). The loop ends once they have exited. */
    for (size_t i = 0; i < d->nretired; i++)
        rollout_stop_instances(d->retired[i]);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    uv_close((uv_handle_t *)&d->sigusr2, NULL);
    uv_close((uv_handle_t *)&d->exit_timer, NULL);
    uv_close((uv_handle_t *)&d->fd_watch, NULL);
    uv_close((uv_handle_t *)&d->store_watch, NULL);
    uv_close((uv_handle_t *)&d->series_tick, NULL);
}

/* ---------------------------------------------------------------- hand-over ----------------- */

static int control_start(struct daemon *d, char *err, size_t errlen)
{
    d->ro = rollout_new(d->loop, d->cfg, d->st, on_publish, on_sample, d);
    int rc = rollout_start(d->ro, err, errlen);
    if (rc == 0)
        api_set_rollout(d->api, d->ro);
    return rc;
}

static void handover_answer(struct daemon *d, int status, const char *msg, long pid)
{
    api_done_fn done = d->pending_done;
    void *req = d->pending_req;
    d->pending_done = NULL;
    d->pending_req = NULL;
    if (done)
        done(req, status, msg, pid);
}

static void on_exit_timer(uv_timer_t *t)
{
    struct daemon *d = t->data;
    daemon_stop(d, max_drain_ms(d->cfg), "handed over to a successor");
}

static void on_handover(void *ctx, int ok, pid_t pid, const char *message)
{
    struct daemon *d = ctx;
    char pidbuf[24], msg[640];
    snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)pid);
    d->handing_over = 0;
    /* The successor adopts the managed instances from the store (or, if it failed, the control
     * plane restarted below does): this daemon stops watching them. */
    if (d->nretired > 0)
        rollout_release_instances(d->retired[d->nretired - 1]);
    if (ok) {
        log_info("successor ready; draining", "pid", pidbuf);
        d->handed_over = 1;
        snprintf(msg, sizeof(msg), "handed over to pid %ld; this daemon drains and exits",
                 (long)pid);
        handover_answer(d, 200, msg, pid);
        /* New admin connections go to the successor from now on. */
        api_stop_tcp(d->api);
        /* The successor owns state_dir now; its lock must die with it alone, so that a kill -9
         * of the successor lets a restart in while this daemon still drains. */
        close(d->lock_fd);
        d->lock_fd = -1;
        /* Let the answer reach its client before the API closes. */
        uv_timer_start(&d->exit_timer, on_exit_timer, 100, 0);
        return;
    }
    log_error("hand-over failed; this daemon keeps serving", "error", message);
    /* This daemon keeps its series in memory; the file, if the successor did not take it,
     * must not be loaded by a later start on top of what this daemon saves at its stop. */
    if (d->series_saved != NULL && unlink(d->series_saved) == -1 && errno != ENOENT)
        log_warn("cannot remove the series file", "file", d->series_saved, "error",
                 strerror(errno));
    char err[512];
    if (control_start(d, err, sizeof(err)) < 0)
        log_error("cannot restart the control plane", "error", err);
    handover_sd_notify("READY=1");
    snprintf(msg, sizeof(msg), "hand-over failed, the running daemon keeps serving: %s", message);
    handover_answer(d, 500, msg, 0);
}

/* Starts a hot upgrade (or reload): see the top of this file. */
static void begin_handover(void *ctx, const char *binary, int reload, api_done_fn done, void *req)
{
    struct daemon *d = ctx;
    char err[1024];
    const char *bin = binary ? binary : d->exe;
    char series_path[PATH_MAX + 16];
    series_file(series_path, sizeof(series_path), d->cfg->state_dir);
    if (d->handing_over || d->stopping) {
        done(req, 409, "a hand-over is already in progress", 0);
        return;
    }
    if (access(bin, X_OK) != 0) {
        snprintf(err, sizeof(err), "binary %.900s: %s", bin, strerror(errno));
        done(req, 400, err, 0);
        return;
    }
    if (reload) {
        /* Validate here first: a bad config is refused before anything moves. */
        struct config *n = NULL;
        if (config_load(d->cfg_path, &n, err, sizeof(err)) < 0) {
            log_error("reload refused: invalid config", "error", err);
            done(req, 400, err, 0);
            return;
        }
        /* The successor looks for the series in the state_dir it will run with. */
        series_file(series_path, sizeof(series_path), n->state_dir);
        config_free(n);
    }
    /* A successor would open what the path names now, beside this daemon's own -wal: only a
     * stop (then a start, which restores the backup) separates the two. */
    if (store_guard_why(d->st) != NULL) {
        snprintf(err, sizeof(err),
                 "no hand-over while the store is not trusted (%.700s); stop and start the daemon "
                 "to restore it from its backup",
                 store_guard_why(d->st));
        done(req, 409, err, 0);
        return;
    }
    /* The successor reads the store: it would find that change running and resume it. */
    if (d->ro != NULL && rollout_unsaved(d->ro, err, sizeof(err))) {
        done(req, 409, err, 0);
        return;
    }
    if (d->ro != NULL && rollout_switching(d->ro)) {
        done(req, 409, "a deploy or rollback is switching right now; retry in a moment", 0);
        return;
    }
    d->handing_over = 1;
    d->pending_done = done;
    d->pending_req = req;
    log_info(reload ? "reloading: handing over to a new process"
                    : "upgrading: handing over to a new process",
             "binary", bin);
    handover_sd_notify("RELOADING=1");
    control_suspend(d);

    struct handover_fd *fds = xcalloc(d->nlisten + 3, sizeof(*fds));
    size_t nfds = d->nlisten;
    for (size_t i = 0; i < d->nlisten; i++) {
        fds[i].fd = d->listeners[i].fd;
        fds[i].name = d->listeners[i].name;
    }
    if (d->admin_fd >= 0) {
        fds[nfds].fd = d->admin_fd;
        fds[nfds++].name = ADMIN_FD_NAME;
    }
    /* The successor shares our open lock file, so the lock (held by the open file, not by a
     * process) stays taken from its start through our exit, and dies with the last holder. */
    if (d->lock_fd >= 0) {
        fds[nfds].fd = d->lock_fd;
        fds[nfds++].name = LOCK_FD_NAME;
    }
    /* The successor loads the charts before its first tick; what this daemon samples while it
     * drains is its own, and goes with it. */
    free(d->series_saved);
    d->series_saved = xstrdup(series_path);
    series_keep(d, d->series_saved);
    int rc = handover_start(d->loop, bin, d->argv, fds, nfds, HANDOVER_TIMEOUT_MS, on_handover, d,
                            err, sizeof(err));
    free(fds);
    if (rc < 0)
        on_handover(d, 0, 0, err);
}

static void on_done_log(void *req, int status, const char *message, long pid)
{
    (void)req;
    (void)pid;
    if (status != 200)
        log_error("hand-over refused", "error", message);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP) {
        begin_handover(d, NULL, 1, on_done_log, NULL);
        return;
    }
    if (signum == SIGUSR2) {
        begin_handover(d, NULL, 0, on_done_log, NULL);
        return;
    }
    if (signum == SIGINT && ++d->sigint_count >= 2) {
        log_warn("second SIGINT: exiting now");
        _exit(1);
    }
    daemon_stop(d, max_drain_ms(d->cfg), signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---------------------------------------------------------------- start --------------------- */

static int ensure_dir(const char *path)
{
    char *p = xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0700) == -1 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            if (c == '\0')
                break;
            *s = c;
        }
    }
    free(p);
    return rc;
}

/* Returns 1 when the socket fd is bound to the address text addr. */
static int bound_to(int fd, const char *addr)
{
    struct sockaddr_storage want, got;
    socklen_t wl, gl = sizeof(got);
    if (addr_parse(addr, &want, &wl) != 0 || getsockname(fd, (struct sockaddr *)&got, &gl) == -1)
        return 0;
    return gl == wl && memcmp(&want, &got, wl) == 0;
}

/* The listening socket named name for addr: the one inherited from a predecessor or systemd,
 * or a new one. Returns it, or a negative errno. */
static int take_listener(const char *name, const char *addr, int backlog)
{
    int fd = handover_take(name, addr);
    if (fd >= 0 && !bound_to(fd, addr)) {
        /* The config moved this listener: the inherited socket goes. */
        close(fd);
        fd = -1;
    }
    return fd >= 0 ? fd : listen_tcp(addr, backlog);
}

static int shared_with_earlier(const struct config *cfg, size_t i);

/* Builds the certificates of a TLS listener: those of service first and, on a listener several
 * services share, of every service on it, so that SNI picks each host's own (the config checked
 * the files already; they are read again here, so a file changed in between is caught too). */
static struct tls_server *tls_from_config(const struct config *cfg, size_t first, char *err,
                                          size_t errlen)
{
    const struct config_service *f = &cfg->services[first];
    struct tls_server *s = NULL;
    struct tls_pair *pairs = NULL;
    size_t n = 0;
    for (size_t j = first; j < cfg->nservices; j++) {
        const struct config_service *o = &cfg->services[j];
        if (j != first && !(f->routed && o->routed && config_same_listen(f->listen, o->listen)))
            continue;
        pairs = xrealloc(pairs, (n + o->tls.ncerts + 1) * sizeof(*pairs));
        for (size_t i = 0; i < o->tls.ncerts; i++) {
            pairs[n].cert = o->tls.certs[i].cert;
            pairs[n].key = o->tls.certs[i].key;
            n++;
        }
    }
    if (n > 0 && tls_server_new(&s, pairs, n, err, errlen) < 0)
        s = NULL;
    free(pairs);
    return s;
}

static struct tls_server *tls_admin(const struct config_tls *t, char *err, size_t errlen)
{
    struct tls_server *s = NULL;
    struct tls_pair *pairs = xcalloc(t->ncerts + 1, sizeof(*pairs));
    for (size_t i = 0; i < t->ncerts; i++) {
        pairs[i].cert = t->certs[i].cert;
        pairs[i].key = t->certs[i].key;
    }
    if (tls_server_new(&s, pairs, t->ncerts, err, errlen) < 0)
        s = NULL;
    free(pairs);
    return s;
}

static int open_tls(struct daemon *d, char *err, size_t errlen)
{
    d->tls = xcalloc(d->cfg->nservices + 1, sizeof(*d->tls));
    for (size_t j = 0; j < d->cfg->nservices; j++) {
        const struct config_service *svc = &d->cfg->services[j];
        char why[1024];
        if (svc->tls.ncerts == 0 || shared_with_earlier(d->cfg, j) >= 0)
            continue; /* a listener several services share has the first one's, with theirs */
        if ((d->tls[j] = tls_from_config(d->cfg, j, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "services.%s.tls: %.900s", svc->name, why);
            return -EINVAL;
        }
    }
    for (size_t j = 0; j < d->cfg->nservices; j++)
        for (size_t k = 0; d->tls[j] != NULL && k < tls_server_ncerts(d->tls[j]) &&
                           k < d->cfg->services[j].tls.ncerts;
             k++) {
            int64_t left = tls_server_not_after(d->tls[j], k) - (int64_t)time(NULL);
            if (left < 14 * 86400) {
                char days[32];
                snprintf(days, sizeof(days), "%lld", (long long)(left / 86400));
                log_warn("TLS certificate expires soon", "service", d->cfg->services[j].name,
                         "cert", d->cfg->services[j].tls.certs[k].cert, "days_left", days);
            }
        }
    if (d->cfg->admin_tls.ncerts > 0) {
        char why[1024];
        if ((d->admin_tls = tls_admin(&d->cfg->admin_tls, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "admin.tls: %.900s", why);
            return -EINVAL;
        }
    }
    return 0;
}

/* The first service before i whose listen i shares (both route by host or path), or -1. */
static int shared_with_earlier(const struct config *cfg, size_t i)
{
    const struct config_service *s = &cfg->services[i];
    for (size_t j = 0; s->routed && j < i; j++)
        if (cfg->services[j].routed && config_same_listen(cfg->services[j].listen, s->listen))
            return (int)j;
    return -1;
}

/* A shared listen's socket from a predecessor that named it after another of the services on
 * it (the config put a new one first, or removed the first): any sharer's name will do. */
static int take_shared(const struct config *cfg, size_t first)
{
    const char *addr = cfg->services[first].listen;
    for (size_t j = first; j < cfg->nservices; j++) {
        const struct config_service *s = &cfg->services[j];
        if (!s->routed || !config_same_listen(addr, s->listen))
            continue;
        int fd = handover_take(s->name, NULL);
        if (fd >= 0 && bound_to(fd, addr))
            return fd;
        if (fd >= 0)
            close(fd);
    }
    return -1;
}

/* The routes of the listen socket of service first: every routed service on it. */
static void build_vhosts(const struct config *cfg, size_t first, struct vhost_table *t)
{
    vhost_table_init(t);
    for (size_t j = first; j < cfg->nservices; j++) {
        const struct config_service *s = &cfg->services[j];
        if (!s->routed || !config_same_listen(cfg->services[first].listen, s->listen))
            continue;
        for (size_t h = 0; h < (s->nhosts ? s->nhosts : 1); h++)
            if (s->nhosts > 0 || s->path_prefix != NULL)
                vhost_table_add(t, s->nhosts ? s->hosts[h] : NULL, s->path_prefix, (int)j);
        if (s->is_default)
            t->default_id = (int)j;
    }
}

/* Opens (or takes over from a predecessor or systemd) the listening sockets of every service. */
static int open_listeners(struct daemon *d, char *err, size_t errlen)
{
    d->listeners = xcalloc(2 * d->cfg->nservices + 1, sizeof(*d->listeners));
    for (size_t i = 0; i < d->cfg->nservices; i++) {
        const struct config_service *svc = &d->cfg->services[i];
        for (int preview = 0; preview < 2; preview++) {
            const char *addr = preview ? svc->preview_listen : svc->listen;
            if (addr == NULL || (!preview && shared_with_earlier(d->cfg, i) >= 0))
                continue; /* a shared listen's socket is its first service's */
            char *name = preview ? xasprintf("%s.preview", svc->name) : xstrdup(svc->name);
            int fd = !preview && svc->routed ? take_shared(d->cfg, i) : -1;
            if (fd < 0)
                fd = take_listener(name, addr, 4096);
            if (fd < 0) {
                snprintf(err, errlen, "service %s: cannot listen on %s: %s", svc->name, addr,
                         strerror(-fd));
                free(name);
                return fd;
            }
            d->listeners[d->nlisten].fd = fd;
            d->listeners[d->nlisten].name = name;
            d->nlisten++;
        }
    }
    d->admin_fd = -1;
    const char *admin = d->cfg->admin_listen;
    if (admin != NULL) {
        int fd = take_listener(ADMIN_FD_NAME, admin, 64);
        if (fd < 0) {
            snprintf(err, errlen, "admin.listen: cannot listen on %s: %s", admin, strerror(-fd));
            return fd;
        }
        d->admin_fd = fd;
    }
    handover_close_unclaimed();
    return 0;
}

static const char *config_arg(int argc, char **argv)
{
    const char *path = "cutover.yml";
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
    }
    return path;
}

static int serve_usage_error(int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: cutover serve [-c FILE]\n\n"
                   "Runs the daemon in the foreground with the config FILE (default "
                   "./cutover.yml).\nLogs go to stderr in logfmt (CUTOVER_LOG_LEVEL=debug for "
                   "more).\n\nSignals: SIGTERM or SIGINT stop gracefully (a second SIGINT at "
                   "once);\nSIGHUP reloads the config and SIGUSR2 upgrades to the binary at the "
                   "same path,\nboth by handing the listening sockets to a new process with no "
                   "connection refused.\nSystemd: Type=notify and socket activation "
                   "(LISTEN_FDS, names = service names).\n");
            return 0;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cutover: %s needs a FILE\n", argv[i]);
                return 2;
            }
            i++;
            continue;
        }
        fprintf(stderr, "cutover: serve: unknown argument '%s' (usage: cutover serve [-c FILE])\n",
                argv[i]);
        return 2;
    }
    return -1;
}

/* Takes state_dir's lock (an flock on state_dir/cutover.lock, which then holds our pid as
 * text), or keeps the one a predecessor handed over. Returns the lock fd, -EBUSY when another
 * daemon holds it (err names state_dir and its pid), or another negative errno. */
static int lock_state_dir(const char *dir, char *err, size_t errlen)
{
    char *path = xasprintf("%s/cutover.lock", dir);
    struct stat a, b;
    int rc, fd = handover_take(LOCK_FD_NAME, NULL);
    if (fd >= 0 && (fstat(fd, &a) == -1 || stat(path, &b) == -1 || a.st_dev != b.st_dev ||
                    a.st_ino != b.st_ino)) {
        close(fd); /* a reload moved state_dir: the new one needs a lock of its own */
        fd = -1;
    }
    if (fd < 0 && (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    /* A no-op on a handed-over lock: it is the same open file. */
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        char held[32] = "";
        ssize_t n = pread(fd, held, sizeof(held) - 1, 0);
        held[n > 0 ? n : 0] = '\0';
        held[strcspn(held, "\n")] = '\0';
        if (rc == -EBUSY)
            snprintf(err, errlen,
                     "state_dir %s is in use by another cutover daemon (pid %s, lock file %s); "
                     "stop it, or give this config another state_dir",
                     dir, held[0] ? held : "unknown", path);
        else
            snprintf(err, errlen, "%s: flock: %s", path, strerror(-rc));
        close(fd);
        goto out;
    }
    char pid[24];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("cannot write the pid into the lock file", "path", path, "error", strerror(errno));
    rc = fd;
out:
    free(path);
    return rc;
}

/* Reports a start failure to the log, stderr, and a predecessor waiting for READY. */
static void start_failed(const char *what, const char *err)
{
    char msg[1200];
    snprintf(msg, sizeof(msg), "%s: %s", what, err);
    log_error(what, "error", err);
    handover_error(msg);
}

int serve_main(int argc, char **argv)
{
    int rc = serve_usage_error(argc, argv);
    if (rc >= 0)
        return rc;
    char err[1024];
    struct daemon d = {.admin_fd = -1, .lock_fd = -1};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    d.started = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    int exit_code = 1;
    const char *lvl = getenv("CUTOVER_LOG_LEVEL");
    if (lvl != NULL && strcmp(lvl, "debug") == 0)
        log_set_level(LOG_DEBUG);

    d.cfg_path = xstrdup(config_arg(argc, argv));
    d.argv = argv;
    ssize_t n = readlink("/proc/self/exe", d.exe, sizeof(d.exe) - 1);
    if (n > 0)
        d.exe[n] = '\0';
    else
        snprintf(d.exe, sizeof(d.exe), "%s", argv[0]);
    size_t inherited = handover_inherit();

    rc = config_load(d.cfg_path, &d.cfg, err, sizeof(err));
    if (rc < 0) {
        start_failed("invalid config", err);
        fprintf(stderr, "cutover: %s\n", err);
        free(d.cfg_path);
        return 2;
    }
    for (size_t i = 0; i < d.cfg->nwarnings; i++)
        log_warn("config", "warning", d.cfg->warnings[i]);
    signal(SIGPIPE, SIG_IGN);

    if (ensure_dir(d.cfg->state_dir) < 0) {
        snprintf(err, sizeof(err), "%s: %s", d.cfg->state_dir, strerror(errno));
        start_failed("cannot create state_dir", err);
        goto out;
    }
    rc = lock_state_dir(d.cfg->state_dir, err, sizeof(err));
    if (rc < 0) {
        start_failed("cannot lock state_dir", err);
        fprintf(stderr, "cutover: %s\n", err);
        exit_code = 2;
        goto out;
    }
    d.lock_fd = rc;
    char *db = xasprintf("%s/cutover.db", d.cfg->state_dir);
    rc = open_store(&d, err, sizeof(err));
    if (rc < 0) {
        free(db);
        start_failed("cannot open the store", err);
        goto out;
    }
    rc = notify_start(&d.nt, d.cfg, db, err, sizeof(err));
    free(db);
    if (rc < 0) {
        start_failed("cannot start the webhooks", err);
        goto out;
    }
    if (d.nt != NULL)
        store_add_listener(d.st, on_event_notify, &d);
    d.loop = uv_default_loop();
    if (open_tls(&d, err, sizeof(err)) < 0) {
        start_failed("cannot load the TLS certificates", err);
        goto out;
    }
    if (open_listeners(&d, err, sizeof(err)) < 0) {
        start_failed("cannot listen", err);
        goto out;
    }

    char *sock = xasprintf("%s/cutover.sock", d.cfg->state_dir);
    struct api_hooks hooks = {.metrics = on_metrics,
                              .series = on_series,
                              .handover = begin_handover,
                              .ctx = &d,
                              .upgrade_dir = d.cfg->admin_upgrade_dir,
                              .cfg = d.cfg};
    int takeover = inherited > 0 || getenv("CUTOVER_READY_FD") != NULL;
    rc = api_start(&d.api, d.loop, sock, NULL, &hooks, takeover, err, sizeof(err));
    free(sock);
    if (rc == 0)
        api_attach_store(d.api, d.st);
    if (rc == 0 && d.admin_fd >= 0 && d.admin_tls != NULL)
        api_set_tls(d.api, d.admin_tls);
    if (rc == 0 && d.admin_fd >= 0)
        rc = api_listen_tcp(d.api, d.admin_fd, d.cfg->tokens, d.cfg->ntokens, err, sizeof(err));
    if (rc < 0) {
        start_failed("cannot start the admin API", err);
        goto out_api;
    }
    rc = control_start(&d, err, sizeof(err));
    if (rc < 0) {
        start_failed("cannot restore state", err);
        goto out_api;
    }

    d.trusted = xcalloc(d.cfg->nservices + 1, sizeof(*d.trusted));
    for (size_t j = 0; j < d.cfg->nservices; j++) {
        cidr_list_init(&d.trusted[j]);
        /* config/ accepted every entry with cidr_parse: adding them cannot fail. */
        for (size_t k = 0; k < d.cfg->services[j].ntrusted_proxies; k++)
            (void)cidr_list_add(&d.trusted[j], d.cfg->services[j].trusted_proxies[k]);
    }
    struct worker_listener_spec *specs = xcalloc(d.nlisten + 1, sizeof(*specs));
    for (size_t i = 0; i < d.nlisten; i++) {
        const char *dot = strchr(d.listeners[i].name, '.');
        size_t len = dot ? (size_t)(dot - d.listeners[i].name) : strlen(d.listeners[i].name);
        specs[i].fd = d.listeners[i].fd;
        specs[i].proto = &h1_proto;
        specs[i].preview = dot != NULL;
        specs[i].service_id = -1;
        for (size_t j = 0; j < d.cfg->nservices; j++)
            if (strlen(d.cfg->services[j].name) == len &&
                strncmp(d.cfg->services[j].name, d.listeners[i].name, len) == 0)
                specs[i].service_id = (int)j;
        if (specs[i].service_id >= 0) {
            if (d.cfg->services[specs[i].service_id].protocol == CONFIG_PROTO_TCP)
                specs[i].proto = &tcp_proto;
            specs[i].trusted = &d.trusted[specs[i].service_id];
            specs[i].proxy_protocol = d.cfg->services[specs[i].service_id].proxy_protocol;
            specs[i].tls = d.tls[specs[i].service_id];
            if (!specs[i].preview && d.cfg->services[specs[i].service_id].routed) {
                build_vhosts(d.cfg, (size_t)specs[i].service_id, &d.listeners[i].vhosts);
                specs[i].vhosts = &d.listeners[i].vhosts;
            }
        }
    }
    /* The signals are caught before the workers open the service ports: a SIGTERM from a
     * supervisor that saw the port answer must stop the daemon gracefully, not kill it (a CI
     * run caught the window). libuv queues them until the loop runs, when all is set up. */
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sighup);
    uv_signal_init(d.loop, &d.sigusr2);
    d.sigterm.data = d.sigint.data = d.sighup.data = d.sigusr2.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sighup, on_signal, SIGHUP);
    uv_signal_start(&d.sigusr2, on_signal, SIGUSR2);
    d.workers = xcalloc((size_t)d.cfg->workers, sizeof(*d.workers));
    for (int i = 0; i < d.cfg->workers; i++) {
        rc = worker_start(&d.workers[i], i, specs, d.nlisten, d.cfg->nservices,
                          (unsigned)d.cfg->io_coalesce_us);
        if (rc < 0) {
            start_failed("cannot start worker", uv_strerror(rc));
            free(specs);
            goto out_workers;
        }
        d.nworkers++;
    }
    free(specs);

    uv_timer_init(d.loop, &d.exit_timer);
    uv_timer_init(d.loop, &d.fd_watch);
    d.fd_watch.data = &d;
    uv_timer_start(&d.fd_watch, on_fd_watch, 1000, 1000);
    uv_unref((uv_handle_t *)&d.fd_watch); /* never what keeps the daemon running */
    d.series = series_new();
    series_restore(&d);
    uv_timer_init(d.loop, &d.series_tick);
    d.series_tick.data = &d;
    uv_timer_start(&d.series_tick, on_series_tick, SERIES_EVERY_MS, SERIES_EVERY_MS);
    uv_unref((uv_handle_t *)&d.series_tick);
    uv_timer_init(d.loop, &d.store_watch);
    d.store_watch.data = &d;
    uv_timer_start(&d.store_watch, on_store_watch, 0, STORE_WATCH_MS);
    uv_unref((uv_handle_t *)&d.store_watch);
    d.exit_timer.data = &d;
    char nw[16], pid[24];
    snprintf(nw, sizeof(nw), "%d", d.nworkers);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    log_info("serving", "config", d.cfg_path, "state_dir", d.cfg->state_dir, "workers", nw, "pid",
             pid, "listeners_inherited", inherited ? "yes" : "no");
    handover_ready();

    uv_run(d.loop, UV_RUN_DEFAULT);
    /* The last tick has run (on_join_done closed its timer). A daemon that handed over keeps
     * nothing: its successor serves the charts and saves them at its own stop. */
    if (!d.handed_over && !d.handing_over) {
        char path[PATH_MAX + 16];
        series_file(path, sizeof(path), d.cfg->state_dir);
        series_keep(&d, path);
    }
    exit_code = 0;
    log_info("stopped");
    goto out_free;

out_workers:
    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    uv_close((uv_handle_t *)&d.sighup, NULL);
    uv_close((uv_handle_t *)&d.sigusr2, NULL);
    for (int i = 0; i < d.nworkers; i++)
        worker_stop(d.workers[i], 0);
    for (int i = 0; i < d.nworkers; i++)
        worker_join(d.workers[i]);
    control_suspend(&d);
out_api:
    api_stop(d.api, takeover);
    uv_run(d.loop, UV_RUN_NOWAIT);
out_free:
    for (int i = 0; i < d.nworkers; i++)
        worker_free(d.workers[i]);
    free(d.workers);
    for (size_t j = 0; d.trusted != NULL && j < d.cfg->nservices; j++)
        cidr_list_done(&d.trusted[j]);
    free(d.trusted);
out:
    for (size_t i = 0; i < d.nretired; i++)
        rollout_free(d.retired[i]);
    rollout_free(d.ro);
    if (d.loop != NULL) {
        uv_run(d.loop, UV_RUN_NOWAIT);
        uv_run(d.loop, UV_RUN_NOWAIT);
        uv_loop_close(d.loop);
    }
    route_table_shutdown();
    if (d.nt != NULL) {
        /* Deliveries still queued get one more try each, for at most 2 s in all. */
        store_remove_listener(d.st, on_event_notify, &d);
        notify_stop(d.nt, 2000);
    }
    for (size_t i = 0; i < d.nlisten; i++) {
        close(d.listeners[i].fd);
        free(d.listeners[i].name);
        vhost_table_done(&d.listeners[i].vhosts);
    }
    free(d.listeners);
    if (d.admin_fd >= 0)
        close(d.admin_fd);
    store_free(d.st);
    for (size_t j = 0; d.tls != NULL && j < d.cfg->nservices; j++)
        tls_server_free(d.tls[j]);
    free(d.tls);
    tls_server_free(d.admin_tls);
    free(d.backup_err);
    if (d.lock_fd >= 0)
        close(d.lock_fd); /* last: the store is closed before another daemon may open it */
    vc_free(&d);
    series_free(d.series);
    free(d.series_saved);
    config_free(d.cfg);
    free(d.cfg_path);
    return exit_code;
}
