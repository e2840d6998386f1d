/* Per-version time series for the dashboard (see series.h). Control loop only. A line keeps
 * the totals of its last sample (a histogram copy included, about 6 KiB) and a ring of
 * SERIES_POINTS points; a daemon has a line per serving version, two per service at most
 * during a change, plus the lines of the last 15 minutes. */
#include "serve/series.h"

#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"

struct series_point {
    double t;
    double rps, error_pct, p99_ms;
};

struct series_line {
    char *service, *version;
    double last_t;
    uint64_t requests, errors;
    struct hist latency;
    struct series_point pts[SERIES_POINTS];
    size_t head, n; /* the oldest point is pts[head]; n of them */
};

struct series {
    struct series_line **lines;
    size_t n;
};

struct series *series_new(void)
{
    return xcalloc(1, sizeof(struct series));
}

static void line_free(struct series_line *l)
{
    free(l->service);
    free(l->version);
    free(l);
}

void series_free(struct series *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        line_free(s->lines[i]);
    free(s->lines);
    free(s);
}

/* Drops the lines last sampled before now less the window. */
static void prune(struct series *s, double now)
{
    double window = (double)SERIES_POINTS * SERIES_EVERY_MS / 1000.0;
    for (size_t i = 0; i < s->n;) {
        if (s->lines[i]->last_t >= now - window) {
            i++;
            continue;
        }
        line_free(s->lines[i]);
        s->lines[i] = s->lines[--s->n];
    }
}

void series_sample(struct series *s, const char *service, const char *version, double now,
                   uint64_t requests, uint64_t errors, const struct hist *latency)
{
    prune(s, now);
    struct series_line *l = NULL;
    for (size_t i = 0; i < s->n && l == NULL; i++)
        if (strcmp(s->lines[i]->service, service) == 0 &&
            strcmp(s->lines[i]->version, version) == 0)
            l = s->lines[i];
    if (l == NULL) {
        l = xcalloc(1, sizeof(*l));
        l->service = xstrdup(service);
        l->version = xstrdup(version);
        l->last_t = now;
        l->requests = requests;
        l->errors = errors;
        l->latency = *latency;
        s->lines = xrealloc(s->lines, (s->n + 1) * sizeof(*s->lines));
        s->lines[s->n++] = l;
        return;
    }
    double dt = now - l->last_t;
    if (dt <= 0)
        return; /* sampled twice in one tick (both roles serve this version) */
    uint64_t dreq = requests > l->requests ? requests - l->requests : 0;
    uint64_t derr = errors > l->errors ? errors - l->errors : 0;
    if (derr > dreq)
        derr = dreq;
    struct hist d;
    hist_diff(&d, latency, &l->latency);
    struct series_point *p = &l->pts[(l->head + l->n) % SERIES_POINTS];
    if (l->n == SERIES_POINTS)
        l->head = (l->head + 1) % SERIES_POINTS;
    else
        l->n++;
    p->t = now;
    p->rps = (double)dreq / dt;
    p->error_pct = dreq > 0 ? 100.0 * (double)derr / (double)dreq : 0;
    p->p99_ms = hist_quantile(&d, 0.99) / 1000.0;
    l->last_t = now;
    l->requests = requests;
    l->errors = errors;
    l->latency = *latency;
}

json_t *series_json(const struct series *s, const char *service)
{
    json_t *versions = json_array();
    for (size_t i = 0; i < s->n; i++) {
        const struct series_line *l = s->lines[i];
        if (strcmp(l->service, service) != 0)
            continue;
        json_t *pts = json_array();
        for (size_t k = 0; k < l->n; k++) {
            const struct series_point *p = &l->pts[(l->head + k) % SERIES_POINTS];
            json_array_append_new(pts,
                                  json_pack("[f, f, f, f]", p->t, p->rps, p->error_pct, p->p99_ms));
        }
        json_array_append_new(versions,
                              json_pack("{s:s, s:o}", "version", l->version, "points", pts));
    }
    return json_pack("{s:s, s:f, s:f, s:o}", "service", service, "every_s",
                     SERIES_EVERY_MS / 1000.0, "window_s",
                     (double)SERIES_POINTS * SERIES_EVERY_MS / 1000.0, "versions", versions);
}
