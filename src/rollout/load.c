/* Synthetic load (see load.h). Each request is a connection of its own (Connection: close),
 * because the figures it feeds must be the version's, not a pool's: connect, write, read the
 * head, count, close. A 10 ms timer starts what the rate says is due and times out what waited
 * longer than LOADGEN_TIMEOUT_MS. Control loop only. */
#include "rollout/load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hist.h"
#include "core/xmalloc.h"
#include "http/parse.h"

#define LOADGEN_TIMEOUT_MS 5000
#define TICK_MS 10
#define REQ_BUF 4096

/* Cumulative figures of one (service, version): what the gates and /metrics read. */
struct totals {
    int service_id;
    char *version;
    uint64_t requests, errors_5xx, cutover_errors, skipped;
    uint64_t classes[5];
    struct hist latency;
    struct totals *next;
};

static struct totals *all_totals;

static struct totals *totals_get(int service_id, const char *version, int create)
{
    for (struct totals *t = all_totals; t != NULL; t = t->next)
        if (t->service_id == service_id && strcmp(t->version, version) == 0)
            return t;
    if (!create)
        return NULL;
    struct totals *t = xcalloc(1, sizeof(*t));
    t->service_id = service_id;
    t->version = xstrdup(version);
    t->next = all_totals;
    all_totals = t;
    return t;
}

struct lreq {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    struct loadgen *g;
    struct lreq *prev, *next;
    uint64_t t0;     /* uv_hrtime at start */
    uint64_t due_ms; /* loop time it times out */
    char buf[REQ_BUF];
    size_t len;
    int done; /* counted: nothing more to do but close */
};

struct loadgen {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct totals *tot;
    struct route_target **targets;
    size_t ntargets;
    unsigned rr;
    char **reqs; /* the request text of each path */
    size_t nreqs, next_req;
    int rate;
    uint64_t start_ms, started;
    struct lreq *inflight;
    size_t ninflight;
    int stopping;
    int handles; /* the timer and each request's socket not yet closed */
};

static void gen_maybe_free(struct loadgen *g)
{
    if (g->handles > 0)
        return;
    for (size_t i = 0; i < g->ntargets; i++)
        route_target_unref(g->targets[i]);
    free(g->targets);
    for (size_t i = 0; i < g->nreqs; i++)
        free(g->reqs[i]);
    free(g->reqs);
    free(g);
}

static void on_req_closed(uv_handle_t *h)
{
    struct lreq *r = h->data;
    struct loadgen *g = r->g;
    free(r);
    g->handles--;
    if (g->stopping)
        gen_maybe_free(g);
}

/* Counts r's outcome (status 0: cutover could not get an answer) and closes it. */
static void req_end(struct lreq *r, int status)
{
    struct loadgen *g = r->g;
    if (r->done)
        return;
    r->done = 1;
    if (r->prev)
        r->prev->next = r->next;
    else
        g->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    g->ninflight--;
    if (status >= 0 && !g->stopping) {
        struct totals *t = g->tot;
        t->requests++;
        if (status == 0) {
            t->cutover_errors++;
            t->classes[4]++;
        } else {
            unsigned k = (unsigned)status / 100u - 1u;
            t->classes[k < 5 ? k : 4]++;
            if (status >= 500)
                t->errors_5xx++;
            hist_record(&t->latency, (uv_hrtime() - r->t0) / 1000);
        }
    }
    uv_close((uv_handle_t *)&r->tcp, on_req_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct lreq *r = h->data;
    (void)hint;
    *buf = uv_buf_init(r->buf + r->len, (unsigned)(REQ_BUF - r->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct lreq *r = s->data;
    (void)buf;
    if (r->done)
        return;
    if (nread < 0) {
        req_end(r, 0);
        return;
    }
    r->len += (size_t)nread;
    struct http_header hdrs[64];
    struct http_response resp = {.headers = hdrs, .num_headers = 64};
    struct http_limits lim = {.max_headers = 64, .max_uri = 0};
    int rc = http_parse_response(r->buf, r->len, &resp, HTTP_M_GET, &lim);
    if (rc == HTTP_PARTIAL && r->len < REQ_BUF)
        return;
    req_end(r, rc < 0 ? 0 : resp.status);
}

static void on_write(uv_write_t *w, int status)
{
    struct lreq *r = w->data;
    if (status < 0 && !r->done)
        req_end(r, 0);
}

static void on_connect(uv_connect_t *c, int status)
{
    struct lreq *r = c->data;
    struct loadgen *g = r->g;
    if (r->done)
        return;
    if (status < 0 || uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read) < 0) {
        req_end(r, 0);
        return;
    }
    const char *text = g->reqs[g->next_req++ % g->nreqs];
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
    r->wr.data = r;
    if (uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, on_write) < 0)
        req_end(r, 0);
}

static struct route_target *next_target(struct loadgen *g)
{
    for (size_t i = 0; i < g->ntargets; i++) {
        struct route_target *t = g->targets[g->rr++ % g->ntargets];
        if (atomic_load_explicit(&t->healthy, memory_order_relaxed))
            return t;
    }
    return NULL;
}

static void req_start(struct loadgen *g)
{
    struct route_target *t = next_target(g);
    if (t == NULL || g->ninflight >= LOADGEN_MAX_INFLIGHT) {
        g->tot->skipped++;
        return;
    }
    struct lreq *r = xcalloc(1, sizeof(*r));
    r->g = g;
    r->t0 = uv_hrtime();
    r->due_ms = uv_now(g->loop) + LOADGEN_TIMEOUT_MS;
    uv_tcp_init(g->loop, &r->tcp);
    r->tcp.data = r;
    g->handles++;
    r->next = g->inflight;
    if (g->inflight)
        g->inflight->prev = r;
    g->inflight = r;
    g->ninflight++;
    r->conn.data = r;
    if (uv_tcp_connect(&r->conn, &r->tcp, (const struct sockaddr *)&t->sa, on_connect) < 0)
        req_end(r, 0);
}

static void on_tick(uv_timer_t *t)
{
    struct loadgen *g = t->data;
    uint64_t now = uv_now(g->loop);
    uint64_t due = (now - g->start_ms) * (uint64_t)g->rate / 1000u;
    while (g->started < due) {
        g->started++;
        req_start(g);
    }
    struct lreq *r = g->inflight;
    while (r != NULL) {
        struct lreq *next = r->next;
        if (now >= r->due_ms)
            req_end(r, 0);
        r = next;
    }
}

struct loadgen *loadgen_start(uv_loop_t *loop, int service_id, const char *version,
                              const struct config_load *cfg, struct route_target *const *targets,
                              size_t n)
{
    struct loadgen *g = xcalloc(1, sizeof(*g));
    g->loop = loop;
    g->tot = totals_get(service_id, version, 1);
    g->rate = cfg->rate;
    g->targets = xcalloc(n ? n : 1, sizeof(*g->targets));
    for (size_t i = 0; i < n; i++) {
        route_target_ref(targets[i]);
        g->targets[i] = targets[i];
    }
    g->ntargets = n;
    g->reqs = xcalloc(cfg->npaths ? cfg->npaths : 1, sizeof(*g->reqs));
    for (size_t i = 0; i < cfg->npaths; i++) {
        char hdrs[2048] = "";
        size_t o = 0;
        for (size_t k = 0; k < cfg->nheaders && o < sizeof(hdrs); k++)
            o += (size_t)snprintf(hdrs + o, sizeof(hdrs) - o, "%s\r\n", cfg->headers[k]);
        g->reqs[i] = xasprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cutover-load\r\n"
                               "X-Cutover-Synthetic: 1\r\n%sConnection: close\r\n\r\n",
                               cfg->paths[i], n ? targets[0]->address : "localhost", hdrs);
    }
    g->nreqs = cfg->npaths;
    g->start_ms = uv_now(loop);
    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    g->handles = 1;
    uv_timer_start(&g->timer, on_tick, TICK_MS, TICK_MS);
    return g;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct loadgen *g = h->data;
    g->handles--;
    gen_maybe_free(g);
}

void loadgen_stop(struct loadgen *g)
{
    if (g == NULL)
        return;
    g->stopping = 1;
    while (g->inflight != NULL)
        req_end(g->inflight, -1);
    uv_close((uv_handle_t *)&g->timer, on_timer_closed);
}

void loadgen_sample_add(int service_id, const char *version, struct analysis_sample *out)
{
    const struct totals *t = version ? totals_get(service_id, version, 0) : NULL;
    if (t == NULL)
        return;
    out->requests += t->requests;
    out->errors_5xx += t->errors_5xx;
    out->upstream_errors += t->cutover_errors;
    hist_add(&out->latency, &t->latency);
}

json_t *loadgen_json(int service_id, const char *version)
{
    const struct totals *t = version ? totals_get(service_id, version, 0) : NULL;
    if (t == NULL)
        return json_pack("{s:i, s:i, s:i, s:i}", "requests", 0, "errors_5xx", 0, "cutover_errors",
                         0, "skipped", 0);
    return json_pack("{s:I, s:I, s:I, s:I, s:f}", "requests", (json_int_t)t->requests, "errors_5xx",
                     (json_int_t)t->errors_5xx, "cutover_errors", (json_int_t)t->cutover_errors,
                     "skipped", (json_int_t)t->skipped, "p99_ms",
                     hist_quantile(&t->latency, 0.99) / 1000.0);
}

void loadgen_metrics(const char *const *names, size_t n, loadgen_emit_fn emit, void *ctx)
{
    static const char *const classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    char line[512];
    emit(ctx, "# HELP cutover_synthetic_requests_total Synthetic requests of load steps, by "
              "service, version and status class (never in cutover_http_requests_total).");
    emit(ctx, "# TYPE cutover_synthetic_requests_total counter");
    for (const struct totals *t = all_totals; t != NULL; t = t->next) {
        if (t->service_id < 0 || (size_t)t->service_id >= n)
            continue;
        for (int k = 0; k < 5; k++) {
            snprintf(line, sizeof(line),
                     "cutover_synthetic_requests_total{service=\"%s\",version=\"%s\",code=\"%s\","
                     "source=\"synthetic\"} %llu",
                     names[t->service_id], t->version, classes[k],
                     (unsigned long long)t->classes[k]);
            emit(ctx, line);
        }
    }
}
