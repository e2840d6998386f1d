/* cutover: argument dispatch and the daemon (`cutover serve`). The daemon's control thread runs
 * one libuv loop with the admin API, the rollout engine, health checks and signals; N worker
 * threads run the data plane (proxy/worker.h). Every other subcommand is a client (cli/). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "cli/cli.h"
#include "config/config.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "demo/backend.h"
#include "demo/demo.h"
#include "net/listen.h"
#include "proxy/route.h"
#include "proxy/worker.h"
#include "rollout/rollout.h"
#include "store/store.h"

struct daemon {
    uv_loop_t *loop;
    struct config *cfg;
    struct store *st;
    struct rollout *ro;
    struct api *api;
    struct worker **workers;
    int nworkers;
    int *listen_fds;
    size_t nlisten;
    uv_signal_t sigterm, sigint, sighup;
    int stopping;
    int sigint_count;
};

static void on_publish(void *ctx)
{
    struct daemon *d = ctx;
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

/* Sums the workers' counters: each is written by one worker only, so relaxed loads suffice. */
static void on_metrics(void *ctx, rollout_emit_fn emit, void *ectx)
{
    struct daemon *d = ctx;
    uint64_t acc = 0, req = 0, r5 = 0, perr = 0, retr = 0, bad = 0;
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
}

/* Sums what every worker counted for (service, role); the control thread reads each counter
 * with a relaxed load, so a sample may be a request or two behind, never torn. */
static void on_sample(void *ctx, int service_id, int role, struct analysis_sample *out)
{
    struct daemon *d = ctx;
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < d->nworkers; i++) {
        const struct worker_role_stats *st =
            worker_role_stats(d->workers[i], service_id, (enum route_role)role);
        if (st == NULL)
            continue;
        out->requests += atomic_load_explicit(&st->requests, memory_order_relaxed);
        out->errors_5xx += atomic_load_explicit(&st->errors_5xx, memory_order_relaxed);
        out->upstream_errors += atomic_load_explicit(&st->upstream_errors, memory_order_relaxed);
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            out->latency.counts[b] += atomic_load_explicit(&st->latency[b], memory_order_relaxed);
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

static void on_join_done(uv_work_t *req, int status);
static void join_workers(uv_work_t *req)
{
    struct daemon *d = req->data;
    for (int i = 0; i < d->nworkers; i++)
        worker_join(d->workers[i]);
}

/* Stops the daemon: the API and rollouts first (no new changes), then the workers drain. The
 * loop ends once the workers have joined. */
static void daemon_stop(struct daemon *d, uint64_t drain_ms)
{
    static uv_work_t join_req;
    if (d->stopping)
        return;
    d->stopping = 1;
    log_info("stopping", "reason", "signal");
    api_stop(d->api);
    d->api = NULL;
    rollout_stop(d->ro);
    for (int i = 0; i < d->nworkers; i++)
        worker_stop(d->workers[i], drain_ms);
    join_req.data = d;
    uv_queue_work(d->loop, &join_req, join_workers, on_join_done);
}

static void on_join_done(uv_work_t *req, int status)
{
    struct daemon *d = req->data;
    (void)status;
    uv_signal_stop(&d->sigterm);
    uv_signal_stop(&d->sigint);
    uv_signal_stop(&d->sighup);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP) {
        log_warn("SIGHUP ignored: config reload is not in this build");
        return;
    }
    if (signum == SIGINT && ++d->sigint_count >= 2) {
        log_warn("second SIGINT: exiting now");
        _exit(1);
    }
    daemon_stop(d, max_drain_ms(d->cfg));
}

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
            printf("usage: cutover serve [-c FILE]\n\nRuns the daemon in the foreground with "
                   "the config FILE (default ./cutover.yml).\nLogs go to stderr in logfmt. "
                   "SIGTERM or SIGINT stop it gracefully (a second SIGINT at once).\n");
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

static int serve(int argc, char **argv)
{
    int rc = serve_usage_error(argc, argv);
    if (rc >= 0)
        return rc;
    char err[1024];
    struct daemon d = {0};
    const char *path = config_arg(argc, argv);
    int exit_code = 1;

    const char *lvl = getenv("CUTOVER_LOG_LEVEL");
    if (lvl != NULL && strcmp(lvl, "debug") == 0)
        log_set_level(LOG_DEBUG);
    rc = config_load(path, &d.cfg, err, sizeof(err));
    if (rc < 0) {
        log_error("invalid config", "error", err);
        fprintf(stderr, "cutover: %s\n", err);
        return 2;
    }
    for (size_t i = 0; i < d.cfg->nwarnings; i++)
        log_warn("config", "warning", d.cfg->warnings[i]);
    signal(SIGPIPE, SIG_IGN);

    if (ensure_dir(d.cfg->state_dir) < 0) {
        log_error("cannot create state_dir", "path", d.cfg->state_dir, "error", strerror(errno));
        goto out;
    }
    char *db = xasprintf("%s/cutover.db", d.cfg->state_dir);
    rc = store_open(db, &d.st, err, sizeof(err));
    free(db);
    if (rc < 0) {
        log_error("cannot open the store", "error", err);
        goto out;
    }

    d.loop = uv_default_loop();
    /* One listening socket per service, and one more per preview listener. */
    d.nlisten = 0;
    d.listen_fds = xcalloc(2 * d.cfg->nservices + 1, sizeof(int));
    struct worker_listener_spec *specs = xcalloc(2 * d.cfg->nservices + 1, sizeof(*specs));
    for (size_t i = 0; i < d.cfg->nservices; i++) {
        const struct config_service *svc = &d.cfg->services[i];
        for (int preview = 0; preview < 2; preview++) {
            const char *addr = preview ? svc->preview_listen : svc->listen;
            if (addr == NULL)
                continue;
            int fd = listen_tcp(addr, 4096);
            if (fd < 0) {
                log_error("cannot listen", "service", svc->name, "listen", addr, "error",
                          strerror(-fd));
                free(specs);
                goto out;
            }
            d.listen_fds[d.nlisten] = fd;
            specs[d.nlisten].fd = fd;
            specs[d.nlisten].service_id = (int)i;
            specs[d.nlisten].preview = preview;
            d.nlisten++;
        }
    }

    d.ro = rollout_new(d.loop, d.cfg, d.st, on_publish, on_sample, &d);
    rc = rollout_start(d.ro, err, sizeof(err));
    if (rc < 0) {
        log_error("cannot restore state", "error", err);
        free(specs);
        goto out;
    }
    d.nworkers = d.cfg->workers;
    d.workers = xcalloc((size_t)d.nworkers, sizeof(*d.workers));
    for (int i = 0; i < d.nworkers; i++) {
        rc = worker_start(&d.workers[i], i, specs, d.nlisten, d.cfg->nservices);
        if (rc < 0) {
            log_error("cannot start worker", "error", uv_strerror(rc));
            d.nworkers = i;
            free(specs);
            goto out_workers;
        }
    }
    free(specs);

    char *sock = xasprintf("%s/cutover.sock", d.cfg->state_dir);
    rc = api_start(&d.api, d.loop, sock, d.ro, on_metrics, &d, err, sizeof(err));
    free(sock);
    if (rc < 0) {
        log_error("cannot start the admin API", "error", err);
        goto out_workers;
    }

    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sighup);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sighup, on_signal, SIGHUP);
    char nw[16];
    snprintf(nw, sizeof(nw), "%d", d.nworkers);
    log_info("serving", "config", path, "state_dir", d.cfg->state_dir, "workers", nw);

    uv_run(d.loop, UV_RUN_DEFAULT);
    exit_code = 0;
    log_info("stopped");
    goto out_free;

out_workers:
    for (int i = 0; i < d.nworkers; i++)
        worker_stop(d.workers[i], 0);
    for (int i = 0; i < d.nworkers; i++)
        worker_join(d.workers[i]);
    rollout_stop(d.ro);
    uv_run(d.loop, UV_RUN_NOWAIT);
out_free:
    for (int i = 0; i < d.nworkers; i++)
        worker_free(d.workers[i]);
    free(d.workers);
out:
    if (d.loop != NULL) {
        uv_run(d.loop, UV_RUN_NOWAIT);
        uv_loop_close(d.loop);
    }
    rollout_free(d.ro);
    route_table_shutdown();
    for (size_t i = 0; i < d.nlisten; i++)
        close(d.listen_fds[i]);
    free(d.listen_fds);
    store_free(d.st);
    config_free(d.cfg);
    return exit_code;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "demo") == 0)
        return demo_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "sample-backend") == 0)
        return demo_backend_main(argc - 1, argv + 1);
    return cli_main(argc, argv);
}
