/* Versions and their targets (see version.h). Control loop only. */
#include "rollout/version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "rollout/change.h"
#include "rollout/managed.h"
#include "store/store.h"

static void add(struct version *v, const char *address, int optimistic)
{
    struct route_target *t = route_target_new(address, v->name);
    if (t == NULL)
        return; /* validated by the caller; a bad stored row is skipped */
    v->targets = xrealloc(v->targets, (v->n + 1) * sizeof(*v->targets));
    v->checks = xrealloc(v->checks, (v->n + 1) * sizeof(*v->checks));
    v->targets[v->n] = t;
    v->checks[v->n] = health_start(v->loop, t, v->health, optimistic, v->on_health, v->health_ctx);
    v->n++;
}

struct version *version_new(uv_loop_t *loop, const struct config_health *hc, const char *name,
                            const char *const *targets, size_t n, int optimistic,
                            health_change_cb on_health, void *ctx)
{
    struct version *v = xcalloc(1, sizeof(*v));
    v->name = xstrdup(name);
    v->loop = loop;
    v->health = hc;
    v->on_health = on_health;
    v->health_ctx = ctx;
    for (size_t i = 0; i < n; i++)
        add(v, targets[i], optimistic);
    return v;
}

struct version *version_load(struct store *st, const char *service, uv_loop_t *loop,
                             const struct config_health *hc, const char *name, int optimistic,
                             health_change_cb on_health, void *ctx)
{
    char **targets = NULL;
    size_t n = 0;
    if (name == NULL || store_version_targets(st, service, name, &targets, &n) < 0)
        return NULL;
    struct version *v =
        version_new(loop, hc, name, (const char *const *)targets, n, optimistic, on_health, ctx);
    store_strv_free(targets);
    return v;
}

void version_add_target(struct version *v, const char *address)
{
    add(v, address, 0);
}

void version_remove_target(struct version *v, size_t i)
{
    if (i >= v->n)
        return;
    health_stop(v->checks[i]);
    route_target_unref(v->targets[i]);
    memmove(&v->targets[i], &v->targets[i + 1], (v->n - i - 1) * sizeof(*v->targets));
    memmove(&v->checks[i], &v->checks[i + 1], (v->n - i - 1) * sizeof(*v->checks));
    v->n--;
}

void version_free(struct version *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->n; i++) {
        health_stop(v->checks[i]);
        route_target_unref(v->targets[i]);
    }
    free(v->targets);
    free(v->checks);
    free(v->name);
    free(v);
}

int version_all_healthy(const struct version *v)
{
    return v != NULL && v->n > 0 && version_healthy_count(v) == v->n;
}

size_t version_healthy_count(const struct version *v)
{
    size_t k = 0;
    for (size_t i = 0; v && i < v->n; i++)
        if (health_get_state(v->checks[i]) == HEALTH_HEALTHY)
            k++;
    return k;
}

void version_why_unhealthy(const struct version *v, char *buf, size_t n)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; v && i < v->n && pos + 1 < n; i++) {
        enum health_state s = health_get_state(v->checks[i]);
        if (s == HEALTH_HEALTHY)
            continue;
        const char *e = health_last_error(v->checks[i]);
        int w =
            snprintf(buf + pos, n - pos, "%s%s %s%s%s%s", pos ? "; " : "", v->targets[i]->address,
                     health_state_name(s), *e ? " (" : "", e, *e ? ")" : "");
        if (w < 0)
            break;
        pos += (size_t)w;
        if (pos >= n)
            pos = n - 1;
    }
}

json_t *version_json(const struct version *v)
{
    if (v == NULL)
        return json_null();
    json_t *ts = json_array();
    int longlived = 0;
    for (size_t i = 0; i < v->n; i++) {
        longlived += atomic_load_explicit(&v->targets[i]->longlived, memory_order_relaxed);
        enum health_state st = health_get_state(v->checks[i]);
        json_t *t = json_pack("{s:s, s:b, s:s}", "address", v->targets[i]->address, "healthy",
                              st == HEALTH_HEALTHY, "state", health_state_name(st));
        const char *e = health_last_error(v->checks[i]);
        if (*e)
            json_object_set_new(t, "last_error", json_string(e));
        json_array_append_new(ts, t);
    }
    json_t *o =
        json_pack("{s:s, s:o, s:i}", "name", v->name, "targets", ts, "longlived", longlived);
    if (v->ms != NULL)
        json_object_set_new(o, "instances", managed_json(v->ms));
    return o;
}

/* ---------------------------------------------------------------- drain figures ------------- */

struct drain_watch {
    uv_timer_t timer;
    struct change *c;
    int64_t change_id;
    char *version;
    struct route_target **targets;
    size_t n;
    unsigned base; /* closed_at_drain before the switch */
    version_drained_cb done;
    void *ctx;
};

static void on_drain_watch_closed(uv_handle_t *h)
{
    struct drain_watch *dw = h->data;
    for (size_t i = 0; i < dw->n; i++)
        route_target_unref(dw->targets[i]);
    free(dw->targets);
    free(dw->version);
    free(dw);
}

static void on_drain_watch(uv_timer_t *t)
{
    struct drain_watch *dw = t->data;
    unsigned closed = 0;
    int still = 0;
    for (size_t i = 0; i < dw->n; i++) {
        closed += atomic_load_explicit(&dw->targets[i]->closed_at_drain, memory_order_relaxed);
        still += atomic_load_explicit(&dw->targets[i]->longlived, memory_order_relaxed);
    }
    char msg[256];
    snprintf(msg, sizeof(msg),
             "drain of %s done: %u long-lived connection%s closed at the drain deadline, %d "
             "still open",
             dw->version, closed - dw->base, closed - dw->base == 1 ? "" : "s", still);
    change_record_event_of(dw->c, dw->change_id, "drained", msg);
    if (dw->done != NULL)
        dw->done(dw->ctx, dw->change_id, closed - dw->base);
    uv_close((uv_handle_t *)&dw->timer, on_drain_watch_closed);
}

int version_watch_drain(const struct version *v, struct change *c, int64_t change_id,
                        uv_loop_t *loop, uint64_t drain_ms, version_drained_cb done, void *ctx)
{
    if (v == NULL || v->n == 0 || change_id == 0)
        return 0;
    struct drain_watch *dw = xcalloc(1, sizeof(*dw));
    dw->c = c;
    dw->done = done;
    dw->ctx = ctx;
    dw->change_id = change_id;
    dw->version = xstrdup(v->name);
    dw->targets = xcalloc(v->n, sizeof(*dw->targets));
    dw->n = v->n;
    for (size_t i = 0; i < v->n; i++) {
        route_target_ref(v->targets[i]);
        dw->targets[i] = v->targets[i];
        dw->base += atomic_load_explicit(&v->targets[i]->closed_at_drain, memory_order_relaxed);
    }
    uv_timer_init(loop, &dw->timer);
    dw->timer.data = dw;
    /* Workers arm their deadlines when they see the new table, a few ms after publish. */
    uv_timer_start(&dw->timer, on_drain_watch, drain_ms + 500, 0);
    uv_unref((uv_handle_t *)&dw->timer);
    return 1;
}
