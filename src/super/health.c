/* Active HTTP health checks (see health.h). Control loop only. Each probe is a short-lived
 * connection of its own ("Connection: close"), so a check never competes with the data plane's
 * pooled connections and sees what a new client would see. */
#include "super/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/duration.h"
#include "core/xmalloc.h"

struct probe {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wreq;
    struct health_check *h; /* NULL once the check stopped or the probe was judged */
    char req[512];
    char resp[256];
    size_t got;
};

struct health_check {
    uv_loop_t *loop;
    uv_timer_t interval;
    uv_timer_t timeout;
    struct route_target *target;
    struct config_health cfg;
    char *path;
    health_change_cb cb;
    void *ctx;
    enum health_state state;
    int ok_run, fail_run;
    struct probe *probe;
    int stopped;
    int open_handles;
    char last_error[128];
};

static void on_timer_closed(uv_handle_t *h)
{
    struct health_check *hc = h->data;
    if (--hc->open_handles == 0) {
        route_target_unref(hc->target);
        free(hc->path);
        free(hc);
    }
}

static void on_probe_closed(uv_handle_t *h)
{
    free(h->data);
}

static void set_state(struct health_check *hc, enum health_state s)
{
    if (hc->state == s)
        return;
    hc->state = s;
    atomic_store_explicit(&hc->target->healthy, s == HEALTH_HEALTHY, memory_order_relaxed);
    if (hc->cb)
        hc->cb(hc->ctx, hc, s);
}

/* Ends the probe in flight with a verdict: ok, or the reason it failed. */
static void probe_done(struct probe *p, int ok, const char *why)
{
    struct health_check *hc = p->h;
    if (hc == NULL)
        return;
    p->h = NULL;
    hc->probe = NULL;
    uv_timer_stop(&hc->timeout);
    uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
    if (ok) {
        hc->fail_run = 0;
        hc->ok_run++;
        hc->last_error[0] = '\0';
        if (hc->ok_run >= hc->cfg.healthy_threshold)
            set_state(hc, HEALTH_HEALTHY);
    } else {
        hc->ok_run = 0;
        hc->fail_run++;
        snprintf(hc->last_error, sizeof(hc->last_error), "%s", why);
        if (hc->fail_run >= hc->cfg.unhealthy_threshold)
            set_state(hc, HEALTH_UNHEALTHY);
    }
}

/* Judges the status line once it is complete: "HTTP/1.x NNN ...". */
static void probe_judge(struct probe *p)
{
    char *eol = memchr(p->resp, '\n', p->got);
    if (eol == NULL) {
        if (p->got == sizeof(p->resp))
            probe_done(p, 0, "invalid response");
        return;
    }
    if (p->got < 12 || memcmp(p->resp, "HTTP/1.", 7) != 0 || p->resp[8] != ' ') {
        probe_done(p, 0, "invalid response");
        return;
    }
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p->resp[i] < '0' || p->resp[i] > '9') {
            probe_done(p, 0, "invalid response");
            return;
        }
        status = status * 10 + (p->resp[i] - '0');
    }
    char why[32];
    snprintf(why, sizeof(why), "status %d", status);
    probe_done(p, status >= 200 && status < 400, why);
}

static void on_probe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct probe *p = h->data;
    (void)hint;
    *buf = uv_buf_init(p->resp + p->got, (unsigned)(sizeof(p->resp) - p->got));
}

static void on_probe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct probe *p = s->data;
    (void)buf;
    if (p->h == NULL || n == 0)
        return;
    if (n < 0) {
        if (p->got > 0)
            probe_judge(p);
        if (p->h != NULL)
            probe_done(p, 0,
                       n == UV_EOF ? "connection closed without a response" : uv_strerror((int)n));
        return;
    }
    p->got += (size_t)n;
    probe_judge(p);
}

static void on_probe_write(uv_write_t *w, int status)
{
    struct probe *p = w->data;
    if (p->h != NULL && status < 0)
        probe_done(p, 0, uv_strerror(status));
}

static void on_probe_connect(uv_connect_t *c, int status)
{
    struct probe *p = c->data;
    if (p->h == NULL)
        return;
    if (status < 0) {
        probe_done(p, 0, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(p->req, (unsigned)strlen(p->req));
    p->wreq.data = p;
    if (uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, on_probe_write) < 0 ||
        uv_read_start((uv_stream_t *)&p->tcp, on_probe_alloc, on_probe_read) < 0)
        probe_done(p, 0, "cannot send the check");
}

static void on_timeout(uv_timer_t *t)
{
    struct health_check *hc = t->data;
    if (hc->probe != NULL) {
        char why[64], d[24];
        snprintf(why, sizeof(why), "timeout after %s",
                 duration_format(hc->cfg.timeout_ms, d, sizeof(d)));
        probe_done(hc->probe, 0, why);
    }
}

static void on_interval(uv_timer_t *t)
{
    struct health_check *hc = t->data;
    if (hc->probe != NULL || hc->stopped)
        return; /* the previous probe is still running: its timeout will judge it */
    struct probe *p = xcalloc(1, sizeof(*p));
    p->h = hc;
    snprintf(
        p->req, sizeof(p->req),
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cutover-health\r\nConnection: close\r\n\r\n",
        hc->path, hc->target->address);
    uv_tcp_init(hc->loop, &p->tcp);
    p->tcp.data = p;
    p->conn.data = p;
    hc->probe = p;
    uv_timer_start(&hc->timeout, on_timeout, hc->cfg.timeout_ms, 0);
    int rc = uv_tcp_connect(&p->conn, &p->tcp, (const struct sockaddr *)&hc->target->sa,
                            on_probe_connect);
    if (rc < 0)
        probe_done(p, 0, uv_strerror(rc));
}

struct health_check *health_start(uv_loop_t *loop, struct route_target *t,
                                  const struct config_health *cfg, int optimistic,
                                  health_change_cb cb, void *ctx)
{
    struct health_check *hc = xcalloc(1, sizeof(*hc));
    hc->loop = loop;
    route_target_ref(t);
    hc->target = t;
    hc->cfg = *cfg;
    hc->path = xstrdup(cfg->path ? cfg->path : "/healthz");
    hc->cfg.path = hc->path;
    if (hc->cfg.healthy_threshold < 1)
        hc->cfg.healthy_threshold = 1;
    if (hc->cfg.unhealthy_threshold < 1)
        hc->cfg.unhealthy_threshold = 1;
    hc->cb = cb;
    hc->ctx = ctx;
    hc->state = optimistic ? HEALTH_HEALTHY : HEALTH_UNKNOWN;
    atomic_store(&t->healthy, optimistic ? 1 : 0);
    uv_timer_init(loop, &hc->interval);
    uv_timer_init(loop, &hc->timeout);
    hc->interval.data = hc;
    hc->timeout.data = hc;
    hc->open_handles = 2;
    uv_timer_start(&hc->interval, on_interval, 0, cfg->interval_ms ? cfg->interval_ms : 1000);
    return hc;
}

void health_stop(struct health_check *hc)
{
    if (hc == NULL || hc->stopped)
        return;
    hc->stopped = 1;
    hc->cb = NULL;
    if (hc->probe != NULL) {
        struct probe *p = hc->probe;
        p->h = NULL;
        hc->probe = NULL;
        uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
    }
    uv_close((uv_handle_t *)&hc->interval, on_timer_closed);
    uv_close((uv_handle_t *)&hc->timeout, on_timer_closed);
}

enum health_state health_get_state(const struct health_check *h)
{
    return h->state;
}

struct route_target *health_target(const struct health_check *h)
{
    return h->target;
}

const char *health_last_error(const struct health_check *h)
{
    return h->last_error;
}

const char *health_state_name(enum health_state s)
{
    switch (s) {
    case HEALTH_HEALTHY:
        return "healthy";
    case HEALTH_UNHEALTHY:
        return "unhealthy";
    default:
        return "unknown";
    }
}
