/* Shadow traffic: copies of live requests to the new version and the comparison of the two
 * answers (see mirror.h). The copies of a worker run on its loop, on upstream pools of their
 * own; the results live in a per-service table under one mutex, taken once per finished copy
 * and by the control thread's reads. */
#include "proxy/mirror.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/xmalloc.h"
#include "proxy/mirrordiff.h"
#include "proxy/pick.h"
#include "proxy/upstream.h"
#include "proxy/worker_int.h"

#define MAX_SERVICE_IDS 1024
#define HDR_CAP 128
#define HDR_VALUE_MAX 128

enum mirror_kind { MK_STATUS, MK_HEADER, MK_BODY, MK_ERROR, MIRROR_KINDS };
static const char *const kind_names[MIRROR_KINDS] = {"status", "header", "body", "error"};

/* One side's answer as kept for the comparison. */
struct answer {
    int status; /* 0: none (the new version failed to answer) */
    char hv[ROUTE_MIRROR_MAX_HEADERS][HDR_VALUE_MAX];
    unsigned char hset[ROUTE_MIRROR_MAX_HEADERS];
    int json;   /* Content-Type names JSON */
    char *body; /* decoded payload, up to MIRROR_BODY_MAX */
    size_t len, cap;
    int too_large; /* more than MIRROR_BODY_MAX */
    enum http_framing framing;
    uint64_t left;
    struct http_chunked ch;
    int done;
};

struct mirror_state {
    struct upstream_pools pools;
    struct mirror_copy *inflight; /* copies on a connection, for the drain */
};

struct mirror_up;

struct mirror_copy {
    struct worker *w;
    int service_id;
    struct route_mirror *cfg; /* holds a reference */
    enum http_method meth;
    char route[128];
    char *req; /* head + body sent to the new version */
    size_t req_len;
    uint64_t connect_ms, response_ms;
    struct answer live, shadow;
    struct mirror_up *up;
    struct mirror_copy *prev, *next; /* in mirror_state.inflight while on a connection */
};

struct mirror_up {
    struct upstream base; /* first: proxy/upstream allocates mirror_up_ops.size bytes */
    struct mirror_copy *m;
    uv_write_t wreq;
    char *in; /* WORKER_BUF_SIZE, kept with the connection */
    size_t in_len;
    int head_done;
    int reusable;
    int wpending; /* the copy's write is in flight */
};

static atomic_int inflight[MAX_SERVICE_IDS];
static _Atomic uint64_t dropped[MAX_SERVICE_IDS];
static _Atomic uint64_t skipped[MAX_SERVICE_IDS];

/* ---------------------------------------------------------------- results ------------------- */

struct route_row {
    char route[128];
    uint64_t pairs, mismatches, kinds[MIRROR_KINDS];
};

struct sample {
    char request[640]; /* masked head */
    char route[128];
    int live_status, new_status;
    unsigned kinds;
    char diff[400];
};

struct results {
    uint64_t epoch;
    uint64_t pairs, matches, mismatches, too_large;
    uint64_t kinds[MIRROR_KINDS];
    uint64_t dropped_base, skipped_base;
    struct route_row routes[MIRROR_ROUTES + 1]; /* the last: every other route */
    size_t nroutes;
    struct sample samples[MIRROR_SAMPLES];
    size_t nsamples;
};

static pthread_mutex_t results_lock = PTHREAD_MUTEX_INITIALIZER;
static struct results *results[MAX_SERVICE_IDS];
static uint64_t next_epoch = 1;

uint64_t mirror_results_start(int service_id)
{
    if (service_id < 0 || service_id >= MAX_SERVICE_IDS)
        return 0;
    pthread_mutex_lock(&results_lock);
    struct results *r = results[service_id];
    if (r == NULL)
        r = results[service_id] = xmalloc(sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->epoch = next_epoch++;
    r->dropped_base = atomic_load_explicit(&dropped[service_id], memory_order_relaxed);
    r->skipped_base = atomic_load_explicit(&skipped[service_id], memory_order_relaxed);
    uint64_t e = r->epoch;
    pthread_mutex_unlock(&results_lock);
    return e;
}

static json_t *kinds_json(const uint64_t *k)
{
    json_t *o = json_object();
    for (int i = 0; i < MIRROR_KINDS; i++)
        json_object_set_new(o, kind_names[i], json_integer((json_int_t)k[i]));
    return o;
}

json_t *mirror_results_json(int service_id, uint64_t epoch, struct mirror_totals *t)
{
    memset(t, 0, sizeof(*t));
    if (service_id < 0 || service_id >= MAX_SERVICE_IDS)
        return NULL;
    pthread_mutex_lock(&results_lock);
    struct results *r = results[service_id];
    if (r == NULL || r->epoch != epoch) {
        pthread_mutex_unlock(&results_lock);
        return NULL;
    }
    t->pairs = r->pairs;
    t->matches = r->matches;
    t->mismatches = r->mismatches;
    t->too_large = r->too_large;
    t->dropped = atomic_load_explicit(&dropped[service_id], memory_order_relaxed) - r->dropped_base;
    t->skipped = atomic_load_explicit(&skipped[service_id], memory_order_relaxed) - r->skipped_base;
    json_t *routes = json_array();
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct route_row *row = &r->routes[i];
        json_array_append_new(routes, json_pack("{s:s, s:I, s:I, s:o}", "route", row->route,
                                                "pairs", (json_int_t)row->pairs, "mismatches",
                                                (json_int_t)row->mismatches, "kinds",
                                                kinds_json(row->kinds)));
    }
    json_t *samples = json_array();
    for (size_t i = 0; i < r->nsamples; i++) {
        const struct sample *s = &r->samples[i];
        json_t *k = json_array();
        for (int j = 0; j < MIRROR_KINDS; j++)
            if (s->kinds & (1u << j))
                json_array_append_new(k, json_string(kind_names[j]));
        json_array_append_new(samples,
                              json_pack("{s:s, s:s, s:i, s:i, s:o, s:s}", "route", s->route,
                                        "request", s->request, "live_status", s->live_status,
                                        "new_status", s->new_status, "kinds", k, "diff", s->diff));
    }
    json_t *o = json_pack("{s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:o, s:o, s:o}", "pairs",
                          (json_int_t)t->pairs, "matches", (json_int_t)t->matches, "mismatches",
                          (json_int_t)t->mismatches, "mismatch_rate",
                          t->pairs ? (double)t->mismatches / (double)t->pairs : 0.0, "too_large",
                          (json_int_t)t->too_large, "dropped", (json_int_t)t->dropped, "skipped",
                          (json_int_t)t->skipped, "kinds", kinds_json(r->kinds), "routes", routes,
                          "samples", samples);
    pthread_mutex_unlock(&results_lock);
    return o;
}

/* Counts one finished copy (kinds 0: a match; too_large: not a pair). */
static void results_add(const struct mirror_copy *m, unsigned kinds, int too_large,
                        const char *diff)
{
    pthread_mutex_lock(&results_lock);
    struct results *r = results[m->service_id];
    if (r == NULL || r->epoch != m->cfg->epoch) {
        pthread_mutex_unlock(&results_lock);
        return; /* a copy of an earlier step */
    }
    if (too_large) {
        r->too_large++;
        pthread_mutex_unlock(&results_lock);
        return;
    }
    struct route_row *row = NULL;
    for (size_t i = 0; i < r->nroutes && row == NULL; i++)
        if (strcmp(r->routes[i].route, m->route) == 0)
            row = &r->routes[i];
    if (row == NULL) {
        if (r->nroutes < MIRROR_ROUTES) {
            row = &r->routes[r->nroutes++];
            snprintf(row->route, sizeof(row->route), "%s", m->route);
        } else {
            row = &r->routes[MIRROR_ROUTES];
            snprintf(row->route, sizeof(row->route), "(other routes)");
            if (r->nroutes == MIRROR_ROUTES)
                r->nroutes++;
        }
    }
    r->pairs++;
    row->pairs++;
    if (kinds == 0) {
        r->matches++;
    } else {
        r->mismatches++;
        row->mismatches++;
        for (int j = 0; j < MIRROR_KINDS; j++) {
            if (kinds & (1u << j)) {
                r->kinds[j]++;
                row->kinds[j]++;
            }
        }
        if (r->nsamples < MIRROR_SAMPLES) {
            struct sample *s = &r->samples[r->nsamples++];
            mirrordiff_mask_head(s->request, sizeof(s->request), m->req, m->req_len);
            snprintf(s->route, sizeof(s->route), "%s", m->route);
            s->live_status = m->live.status;
            s->new_status = m->shadow.status;
            s->kinds = kinds;
            snprintf(s->diff, sizeof(s->diff), "%s", diff);
        }
    }
    pthread_mutex_unlock(&results_lock);
}

/* ---------------------------------------------------------------- answers ------------------- */

static void body_put(void *ctx, const char *p, size_t n)
{
    struct answer *a = ctx;
    if (a->too_large)
        return;
    if (a->len + n > MIRROR_BODY_MAX) {
        a->too_large = 1;
        return;
    }
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + n)
            cap *= 2;
        if (cap > MIRROR_BODY_MAX)
            cap = MIRROR_BODY_MAX;
        a->body = xrealloc(a->body, cap);
        a->cap = cap;
    }
    memcpy(a->body + a->len, p, n);
    a->len += n;
}

static void answer_head(struct answer *a, const struct route_mirror *cfg,
                        const struct http_response *r)
{
    a->status = r->status;
    a->framing = r->framing;
    a->left = r->content_length;
    http_chunked_init(&a->ch);
    a->done = r->framing == HTTP_BODY_NONE;
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (http_token_eq(h->name, h->name_len, "content-type")) {
            for (size_t k = 0; k + 4 <= h->value_len; k++)
                if (strncasecmp(h->value + k, "json", 4) == 0)
                    a->json = 1;
        }
        for (size_t k = 0; k < cfg->nheaders && k < ROUTE_MIRROR_MAX_HEADERS; k++) {
            if (a->hset[k] || !http_token_eq(h->name, h->name_len, cfg->headers[k]))
                continue;
            a->hset[k] = 1;
            size_t n = h->value_len < HDR_VALUE_MAX - 1 ? h->value_len : HDR_VALUE_MAX - 1;
            memcpy(a->hv[k], h->value, n);
            a->hv[k][n] = '\0';
        }
    }
}

/* Feeds raw body bytes (framing included); returns how many belong to the body, or -1 on a
 * framing error. Sets a->done at its end. */
static ssize_t answer_body(struct answer *a, const char *p, size_t n)
{
    switch (a->framing) {
    case HTTP_BODY_NONE:
        a->done = 1;
        return 0;
    case HTTP_BODY_LENGTH: {
        size_t take = n < a->left ? n : (size_t)a->left;
        body_put(a, p, take);
        a->left -= take;
        a->done = a->left == 0;
        return (ssize_t)take;
    }
    case HTTP_BODY_CHUNKED: {
        int done = 0;
        ssize_t r = http_chunked_feed(&a->ch, p, n, &done, body_put, a);
        if (r < 0)
            return -1;
        a->done = done;
        return r;
    }
    case HTTP_BODY_EOF:
        body_put(a, p, n);
        return (ssize_t)n;
    }
    return -1;
}

/* ---------------------------------------------------------------- copies -------------------- */

static void copy_free(struct mirror_copy *m)
{
    atomic_fetch_sub_explicit(&inflight[m->service_id], 1, memory_order_relaxed);
    route_mirror_unref(m->cfg);
    free(m->req);
    free(m->live.body);
    free(m->shadow.body);
    free(m);
}

struct mirror_copy *mirror_begin(struct worker *w, int service_id, const struct route_service *svc,
                                 const struct http_request *req, const char *uhead,
                                 size_t uhead_len, const char *body, size_t body_have)
{
    const struct route_mirror *cfg = svc->mirror;
    if (cfg == NULL || service_id < 0 || service_id >= MAX_SERVICE_IDS || w->mirror == NULL ||
        !(cfg->methods & (1u << req->meth)) || svc->canary.ntargets == 0)
        return NULL;
    if (cfg->buckets < ROUTE_BUCKETS &&
        (unsigned)((pick_rand(&w->rng) >> 32) % ROUTE_BUCKETS) >= cfg->buckets)
        return NULL;
    uint64_t blen = req->framing == HTTP_BODY_LENGTH ? req->content_length : 0;
    if (req->framing == HTTP_BODY_CHUNKED || blen > cfg->max_body_bytes || blen > body_have) {
        /* Only a body that is whole in the buffer when its head is read is copied: the copy
         * must not hold the client's bytes nor wait for them. */
        atomic_fetch_add_explicit(&skipped[service_id], 1, memory_order_relaxed);
        return NULL;
    }
    int n = atomic_fetch_add_explicit(&inflight[service_id], 1, memory_order_relaxed);
    if (n >= cfg->max_inflight) {
        atomic_fetch_sub_explicit(&inflight[service_id], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&dropped[service_id], 1, memory_order_relaxed);
        return NULL;
    }
    struct mirror_copy *m = xcalloc(1, sizeof(*m));
    m->w = w;
    m->service_id = service_id;
    m->cfg = (struct route_mirror *)cfg;
    route_mirror_ref(m->cfg);
    m->meth = req->meth;
    mirrordiff_route(m->route, sizeof(m->route), req->method, req->method_len, req->target,
                     req->target_len);
    m->req_len = uhead_len + (size_t)blen;
    m->req = xmalloc(m->req_len ? m->req_len : 1);
    memcpy(m->req, uhead, uhead_len);
    memcpy(m->req + uhead_len, body, (size_t)blen);
    m->connect_ms = svc->limits.upstream_connect_ms;
    m->response_ms = svc->limits.upstream_response_ms;
    return m;
}

void mirror_live_head(struct mirror_copy *m, const struct http_response *r)
{
    if (m != NULL)
        answer_head(&m->live, m->cfg, r);
}

void mirror_live_body(struct mirror_copy *m, const char *p, size_t n)
{
    if (m == NULL || m->live.done)
        return;
    /* The bytes were framed by the proxy already: errors cannot happen here. */
    (void)answer_body(&m->live, p, n);
}

void mirror_abandon(struct mirror_copy *m)
{
    if (m != NULL)
        copy_free(m);
}

/* Compares the two answers and counts the pair. */
static void copy_judge(struct mirror_copy *m)
{
    const struct route_mirror *cfg = m->cfg;
    unsigned kinds = 0;
    char diff[400] = "";
    if (m->shadow.status == 0) {
        kinds |= 1u << MK_ERROR;
        snprintf(diff, sizeof(diff), "the new version gave no valid answer");
    } else {
        if ((cfg->compare & ROUTE_MIRROR_STATUS) && m->live.status != m->shadow.status) {
            kinds |= 1u << MK_STATUS;
            snprintf(diff, sizeof(diff), "status %d live, %d new", m->live.status,
                     m->shadow.status);
        }
        for (size_t k = 0; k < cfg->nheaders && k < ROUTE_MIRROR_MAX_HEADERS; k++) {
            if (m->live.hset[k] == m->shadow.hset[k] &&
                (!m->live.hset[k] || strcmp(m->live.hv[k], m->shadow.hv[k]) == 0))
                continue;
            if (kinds == 0)
                snprintf(diff, sizeof(diff), "header %s: live \"%s\", new \"%s\"", cfg->headers[k],
                         m->live.hset[k] ? m->live.hv[k] : "(absent)",
                         m->shadow.hset[k] ? m->shadow.hv[k] : "(absent)");
            kinds |= 1u << MK_HEADER;
        }
        if ((cfg->compare & ROUTE_MIRROR_BODY) && kinds == 0 &&
            (m->live.too_large || m->shadow.too_large)) {
            results_add(m, 0, 1, "");
            return;
        }
        if ((cfg->compare & ROUTE_MIRROR_BODY) && !m->live.too_large && !m->shadow.too_large) {
            char bd[400];
            if (!mirrordiff_body(m->live.body ? m->live.body : "", m->live.len,
                                 m->shadow.body ? m->shadow.body : "", m->shadow.len,
                                 m->live.json && m->shadow.json, cfg->ignore_json,
                                 cfg->nignore_json, bd, sizeof(bd))) {
                if (kinds == 0)
                    snprintf(diff, sizeof(diff), "%s", bd);
                kinds |= 1u << MK_BODY;
            }
        }
    }
    results_add(m, kinds, 0, diff);
}

static void inflight_unlink(struct mirror_copy *m)
{
    struct mirror_state *ms = m->w->mirror;
    if (m->prev)
        m->prev->next = m->next;
    else if (ms->inflight == m)
        ms->inflight = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

/* The copy is over (answered or failed): judge it, give the connection back, free it. */
static void copy_end(struct mirror_copy *m, int judge)
{
    struct mirror_up *u = m->up;
    inflight_unlink(m);
    m->up = NULL;
    if (u != NULL) {
        u->m = NULL;
        upstream_deadline(&u->base, 0);
        if (u->reusable && u->head_done && m->shadow.done && u->in_len == 0 && !u->wpending)
            upstream_release(&u->base);
        else
            upstream_close(&u->base);
    }
    if (judge)
        copy_judge(m);
    copy_free(m);
}

static void up_freed(struct upstream *base)
{
    struct mirror_up *u = (struct mirror_up *)base;
    free(u->in);
    u->in = NULL;
}

static void up_alloc(struct upstream *base, uv_buf_t *buf)
{
    struct mirror_up *u = (struct mirror_up *)base;
    if (u->in == NULL)
        u->in = xmalloc(WORKER_BUF_SIZE);
    *buf = uv_buf_init(u->in + u->in_len, (unsigned)(WORKER_BUF_SIZE - u->in_len));
}

/* Parses what arrived: the head once, then body bytes, discarded after being kept. */
static void up_process(struct mirror_up *u)
{
    struct mirror_copy *m = u->m;
    if (!u->head_done) {
        struct http_header hdrs[HDR_CAP];
        struct http_response r = {.headers = hdrs, .num_headers = HDR_CAP};
        struct http_limits lim = {.max_headers = HDR_CAP, .max_uri = 0};
        int rc = http_parse_response(u->in, u->in_len, &r, m->meth, &lim);
        if (rc == HTTP_PARTIAL && u->in_len < WORKER_BUF_SIZE)
            return;
        if (rc < 0 || r.status == 101) {
            copy_end(m, 1); /* shadow.status 0: no valid answer */
            return;
        }
        if (r.status < 200) {
            memmove(u->in, u->in + rc, u->in_len - (size_t)rc);
            u->in_len -= (size_t)rc;
            up_process(u);
            return;
        }
        answer_head(&m->shadow, m->cfg, &r);
        u->head_done = 1;
        u->reusable = !(r.flags & (HTTP_F_CONN_CLOSE | HTTP_F_TE_AND_CL)) &&
                      r.framing != HTTP_BODY_EOF && r.minor_version == 1;
        memmove(u->in, u->in + rc, u->in_len - (size_t)rc);
        u->in_len -= (size_t)rc;
    }
    if (!m->shadow.done && u->in_len > 0) {
        ssize_t r = answer_body(&m->shadow, u->in, u->in_len);
        if (r < 0) {
            m->shadow.status = 0;
            u->reusable = 0;
            copy_end(m, 1);
            return;
        }
        if ((size_t)r < u->in_len)
            u->reusable = 0; /* bytes after the answer */
        u->in_len = 0;
    }
    if (m->shadow.done)
        copy_end(m, 1);
}

static void up_read(struct upstream *base, ssize_t nread)
{
    struct mirror_up *u = (struct mirror_up *)base;
    struct mirror_copy *m = u->m;
    if (m == NULL)
        return;
    if (nread < 0) {
        if (u->head_done && m->shadow.framing == HTTP_BODY_EOF) {
            m->shadow.done = 1;
            u->reusable = 0;
            copy_end(m, 1);
            return;
        }
        u->reusable = 0;
        m->shadow.status = 0;
        copy_end(m, 1);
        return;
    }
    u->in_len += (size_t)nread;
    upstream_deadline(&u->base, m->response_ms);
    up_process(u);
}

static void on_write(uv_write_t *req, int status)
{
    struct mirror_up *u = req->data;
    struct mirror_copy *m = u->m;
    u->wpending = 0;
    if (m == NULL || u->base.phase == UPSTREAM_CLOSING)
        return;
    if (status < 0) {
        u->reusable = 0;
        copy_end(m, 1);
    }
}

static void copy_write(struct mirror_up *u)
{
    struct mirror_copy *m = u->m;
    uv_buf_t b = uv_buf_init(m->req, (unsigned)m->req_len);
    u->wreq.data = u;
    upstream_deadline(&u->base, m->response_ms);
    if (uv_write(&u->wreq, (uv_stream_t *)&u->base.tcp, &b, 1, on_write) < 0) {
        u->reusable = 0;
        copy_end(m, 1);
        return;
    }
    u->wpending = 1;
    if (upstream_read_start(&u->base) < 0) {
        u->reusable = 0;
        copy_end(m, 1);
    }
}

static void up_connected(struct upstream *base, int status)
{
    struct mirror_up *u = (struct mirror_up *)base;
    if (u->m == NULL) {
        upstream_close(base);
        return;
    }
    if (status < 0) {
        u->reusable = 0;
        copy_end(u->m, 1);
        return;
    }
    copy_write(u);
}

static void up_timeout(struct upstream *base)
{
    struct mirror_up *u = (struct mirror_up *)base;
    if (u->m == NULL) {
        upstream_close(base);
        return;
    }
    u->reusable = 0;
    u->m->shadow.status = 0;
    copy_end(u->m, 1);
}

static const struct upstream_ops mirror_up_ops = {
    .size = sizeof(struct mirror_up),
    .alloc = up_alloc,
    .read = up_read,
    .connected = up_connected,
    .timeout = up_timeout,
    .freed = up_freed,
};

void mirror_send(struct mirror_copy *m)
{
    if (m == NULL)
        return;
    /* Called at the exchange's end: a body delimited by the close of the connection is whole. */
    if (m->live.status != 0 && m->live.framing == HTTP_BODY_EOF)
        m->live.done = 1;
    struct worker *w = m->w;
    const struct route_service *svc =
        w->table ? route_table_service(w->table, m->service_id) : NULL;
    struct route_target *t = NULL;
    if (svc != NULL && svc->mirror != NULL && svc->mirror->epoch == m->cfg->epoch && m->live.done &&
        !w->draining)
        t = pick_target(&svc->canary, &w->rr, uv_now(&w->loop), NULL);
    if (t == NULL) {
        if (!m->live.done)
            atomic_fetch_add_explicit(&skipped[m->service_id], 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&dropped[m->service_id], 1, memory_order_relaxed);
        copy_free(m);
        return;
    }
    struct mirror_state *ms = w->mirror;
    struct upstream *base;
    int rc = upstream_get(&ms->pools, t, 0, &mirror_up_ops, m->connect_ms, &base);
    struct mirror_up *u = (struct mirror_up *)base;
    u->m = m;
    u->head_done = 0;
    u->reusable = 0;
    u->wpending = 0;
    u->in_len = 0;
    m->up = u;
    m->next = ms->inflight;
    if (ms->inflight)
        ms->inflight->prev = m;
    ms->inflight = m;
    if (rc < 0) {
        copy_end(m, 1);
        return;
    }
    if (rc == 1)
        copy_write(u);
}

/* ---------------------------------------------------------------- the worker's part -------- */

void mirror_worker_init(struct worker *w)
{
    struct mirror_state *ms = xcalloc(1, sizeof(*ms));
    upstream_pools_init(&ms->pools, &w->loop, &w->io_events);
    ms->pools.max_idle = 64;
    ms->pools.fd_ceiling = w->pools.fd_ceiling;
    w->mirror = ms;
}

void mirror_worker_refresh(struct worker *w)
{
    if (w->mirror != NULL)
        (void)upstream_retire(&w->mirror->pools, w->table);
}

void mirror_worker_drain(struct worker *w)
{
    struct mirror_state *ms = w->mirror;
    if (ms == NULL)
        return;
    ms->pools.draining = 1;
    while (ms->inflight != NULL)
        copy_end(ms->inflight, 0);
    upstream_close_idle_all(&ms->pools);
}

void mirror_worker_done(struct worker *w)
{
    struct mirror_state *ms = w->mirror;
    if (ms == NULL)
        return;
    upstream_pools_done(&ms->pools);
    free(ms);
    w->mirror = NULL;
}
