/* The rollout engine (see rollout.h). Control loop only.
 *
 * Invariant: the store is written first, then the route table is published. A crash between
 * the two leaves the store one step ahead, and the restart publishes what the store says, so
 * the daemon never serves a state it has not recorded. One exception: the end of a change
 * (change_record_end) stands when the store refuses its record, which is then retried; users
 * are not left half-switched, or moved back, because a disk write failed. */
#include "rollout/rollout.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/duration.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "net/addr.h"
#include "proxy/route.h"
#include "rollout/rollout_int.h"
#include "super/health.h"
#include "super/supervisor.h"

#define INITIAL_VERSION "initial"

/* ---------------------------------------------------------------- versions ------------------ */

static void on_health_change(void *ctx, struct health_check *h, enum health_state state);

static struct version *version_new(struct service *s, const char *name, const char *const *targets,
                                   size_t n, int optimistic)
{
    struct version *v = xcalloc(1, sizeof(*v));
    v->name = xstrdup(name);
    v->targets = xcalloc(n ? n : 1, sizeof(*v->targets));
    v->checks = xcalloc(n ? n : 1, sizeof(*v->checks));
    for (size_t i = 0; i < n; i++) {
        struct route_target *t = route_target_new(targets[i], name);
        if (t == NULL)
            continue; /* validated by the caller; a bad stored row is skipped */
        v->targets[v->n] = t;
        v->checks[v->n] =
            health_start(s->r->loop, t, &s->cfg->health, optimistic, on_health_change, s);
        v->n++;
    }
    return v;
}

void version_add_target(struct service *s, struct version *v, const char *address)
{
    struct route_target *t = route_target_new(address, v->name);
    if (t == NULL)
        return;
    v->targets = xrealloc(v->targets, (v->n + 1) * sizeof(*v->targets));
    v->checks = xrealloc(v->checks, (v->n + 1) * sizeof(*v->checks));
    v->targets[v->n] = t;
    v->checks[v->n] = health_start(s->r->loop, t, &s->cfg->health, 0, on_health_change, s);
    v->n++;
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
    if (v == NULL || v->n == 0)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (health_get_state(v->checks[i]) != HEALTH_HEALTHY)
            return 0;
    return 1;
}

/* Describes the targets that are not healthy: "127.0.0.1:9003 unhealthy (status 503)". */
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

/* ---------------------------------------------------------------- publication --------------- */

static struct route_limits limits_from(const struct config_service *c)
{
    struct route_limits l = {
        .client_header_ms = c->timeouts.client_header_ms,
        .client_idle_ms = c->timeouts.client_idle_ms,
        .upstream_connect_ms = c->timeouts.upstream_connect_ms,
        .upstream_response_ms = c->timeouts.upstream_response_ms,
        .max_header_bytes = c->limits.max_header_bytes,
        .max_headers = c->limits.max_headers,
        .max_uri = c->limits.max_uri,
        .max_body_bytes = c->limits.max_body_bytes,
        .drain_ms = c->drain_timeout_ms,
        .max_connections = c->limits.max_connections,
        .outlier_failures = c->outlier.consecutive_failures,
        .outlier_ejection_ms = c->outlier.ejection_ms,
    };
    return l;
}

void rollout_publish(struct rollout *r)
{
    struct route_table *t = route_table_new(r->nservices);
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        struct route_service *rs = &t->services[i];
        rs->id = s->id;
        rs->name = xstrdup(s->cfg->name);
        rs->limits = limits_from(s->cfg);
        const struct version *lv = s->live;
        /* A replacement that took every old instance out serves from the new ones. */
        if ((lv == NULL || lv->n == 0) && rolling_serving(s) != NULL)
            lv = rolling_serving(s);
        if (lv != NULL)
            route_backend_set(&rs->live, lv->name, lv->targets, lv->n);
        else
            route_backend_set(&rs->live, "", NULL, 0);
        rs->sticky = s->cfg->sticky.kind == CONFIG_STICKY_COOKIE   ? ROUTE_STICKY_COOKIE
                     : s->cfg->sticky.kind == CONFIG_STICKY_HEADER ? ROUTE_STICKY_HEADER
                     : s->cfg->sticky.kind == CONFIG_STICKY_SOURCE ? ROUTE_STICKY_SOURCE
                                                                   : ROUTE_STICKY_NONE;
        rs->sticky_name = xstrdup(s->cfg->sticky.name);
        /* The data plane compares header names with a lower-case literal. */
        if (rs->sticky == ROUTE_STICKY_HEADER)
            for (char *p = rs->sticky_name; p && *p; p++)
                *p = (char)tolower((unsigned char)*p);
        if (!rolling_route_fill(s, rs))
            plan_route_fill(s, rs);
        if (rs->canary.version == NULL)
            route_backend_set(&rs->canary, "", NULL, 0);
    }
    route_table_publish(t);
    if (r->on_publish)
        r->on_publish(r->ctx);
}

/* ---------------------------------------------------------------- changes ------------------- */

/* A refused end is written again after 250 ms, then twice as long each time, at most every 5 s.
 * A retry waits at most SAVE_RETRY_WAIT_MS for another process's write lock: the timer is the
 * wait, the control loop (API, health checks, plans of other services) must not stall. */
#define SAVE_RETRY_FIRST_MS 250
#define SAVE_RETRY_MAX_MS 5000
#define SAVE_RETRY_WAIT_MS 50

/* The end of a change that the store refused (see change_record_end). Owns its strings. */
struct change_unsaved {
    int64_t change_id;
    char *state;    /* terminal STORE_CHANGE_* */
    char *event;    /* type of the event that ends the timeline */
    char *message;  /* the change's outcome */
    int has_switch; /* also records live and previous */
    char *live;
    char *previous;
    char *detail;     /* the plan's final detail JSON, or NULL */
    char *error;      /* the store's last message */
    int64_t ended_ms; /* when the engine ended the change */
    unsigned attempts;
    uint64_t delay_ms; /* before the next attempt */
};

static void unsaved_free(struct change_unsaved *u)
{
    if (u == NULL)
        return;
    free(u->state);
    free(u->event);
    free(u->message);
    free(u->live);
    free(u->previous);
    free(u->detail);
    free(u->error);
    free(u);
}

/* Writes the end u of a change of s in one transaction; a late write also notes when the change
 * really ended and why its record waited. wait_ms < 0: the store's usual busy timeout. */
static int unsaved_write(struct service *s, const struct change_unsaved *u, int wait_ms)
{
    struct store *st = s->r->st;
    int rc = wait_ms < 0 ? store_begin(st) : store_begin_within(st, wait_ms);
    if (rc == 0 && u->detail != NULL)
        rc = store_change_set_detail(st, u->change_id, u->detail);
    if (rc == 0 && u->has_switch)
        rc = store_service_set(st, s->cfg->name, u->live, u->previous);
    if (rc == 0)
        rc = store_change_update(st, u->change_id, u->state, u->message);
    if (rc == 0)
        rc = store_event_add(st, u->change_id, u->event, u->message);
    if (rc == 0 && u->attempts > 0) {
        char msg[600], when[40];
        json_t *iso = rollout_iso_time(u->ended_ms);
        snprintf(when, sizeof(when), "%s", json_string_value(iso));
        json_decref(iso);
        snprintf(msg, sizeof(msg),
                 "the change ended (%s) at %s; the store refused the record until now (%s), "
                 "after %u retries",
                 u->state, when, u->error ? u->error : "", u->attempts);
        rc = store_event_add(st, u->change_id, "saved_late", msg);
    }
    if (rc == 0)
        rc = store_commit(st);
    if (rc < 0)
        store_rollback(st);
    return rc;
}

static void on_save_retry(uv_timer_t *t)
{
    struct service *s = t->data;
    struct change_unsaved *u = s->unsaved;
    char idbuf[24];
    if (u == NULL)
        return;
    u->attempts++;
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
    if (unsaved_write(s, u, SAVE_RETRY_WAIT_MS) == 0) {
        log_info("the end of the change is saved to the store", "service", s->cfg->name, "change",
                 idbuf, "state", u->state);
        s->unsaved = NULL;
        unsaved_free(u);
        return;
    }
    const char *err = store_errmsg(s->r->st);
    /* Logged when the reason changes, not on every attempt: a lock held for an hour must not
     * fill the log. */
    if (u->error == NULL || strcmp(u->error, err) != 0) {
        log_error("cannot save to the store; retrying", "service", s->cfg->name, "change", idbuf,
                  "error", err);
        free(u->error);
        u->error = xstrdup(err);
    }
    u->delay_ms = u->delay_ms * 2 > SAVE_RETRY_MAX_MS ? SAVE_RETRY_MAX_MS : u->delay_ms * 2;
    uv_timer_start(&s->save_retry, on_save_retry, u->delay_ms, 0);
}

int change_record_end(struct service *s, const char *state, const char *event, const char *msg,
                      const struct version *to, const struct version *from, const char *detail)
{
    /* A service takes no change while an end is unsaved, so there is never a second one. */
    assert(s->unsaved == NULL);
    struct change_unsaved *u = xcalloc(1, sizeof(*u));
    u->change_id = s->change_id;
    u->state = xstrdup(state);
    u->event = xstrdup(event);
    u->message = xstrdup(msg);
    u->has_switch = to != NULL;
    u->live = to ? xstrdup(to->name) : NULL;
    u->previous = from ? xstrdup(from->name) : NULL;
    u->detail = detail ? xstrdup(detail) : NULL;
    u->ended_ms = store_now_ms();
    if (unsaved_write(s, u, -1) == 0) {
        unsaved_free(u);
        return 0;
    }
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
    u->error = xstrdup(store_errmsg(s->r->st));
    log_error("cannot save the end of the change to the store; it stands, the record is retried",
              "service", s->cfg->name, "change", idbuf, "state", state, "error", u->error);
    u->delay_ms = SAVE_RETRY_FIRST_MS;
    s->unsaved = u;
    uv_timer_start(&s->save_retry, on_save_retry, u->delay_ms, 0);
    return -EIO;
}

int change_unsaved_why(const struct service *s, char *buf, size_t n)
{
    const struct change_unsaved *u = s->unsaved;
    if (u == NULL)
        return 0;
    snprintf(buf, n,
             "cannot save to the store: %s; retrying (change %lld ended %s and traffic follows "
             "it, but its record is not saved yet)",
             u->error ? u->error : "unknown error", (long long)u->change_id, u->state);
    return 1;
}

static json_t *unsaved_json(const struct service *s)
{
    const struct change_unsaved *u = s->unsaved;
    char why[600];
    if (!change_unsaved_why(s, why, sizeof(why)))
        return json_null();
    return json_pack("{s:I, s:s, s:s, s:o, s:i, s:s}", "change", (json_int_t)u->change_id, "state",
                     u->state, "error", u->error ? u->error : "", "ended",
                     rollout_iso_time(u->ended_ms), "attempts", (int)u->attempts, "message", why);
}

/* The daemon stops: one last attempt, waiting the store's busy timeout, then the record is
 * given up with a message that says what the next start will find. */
static void unsaved_flush(struct service *s)
{
    struct change_unsaved *u = s->unsaved;
    if (u == NULL)
        return;
    uv_timer_stop(&s->save_retry);
    u->attempts++;
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
    if (unsaved_write(s, u, -1) == 0)
        log_info("the end of the change is saved to the store", "service", s->cfg->name, "change",
                 idbuf, "state", u->state);
    else
        log_error("the daemon stops with the end of a change not saved to the store; the next "
                  "start finds it running, as last recorded, and resumes or interrupts it",
                  "service", s->cfg->name, "change", idbuf, "state", u->state, "error",
                  store_errmsg(s->r->st));
    s->unsaved = NULL;
    unsaved_free(u);
}

void change_done(struct service *s)
{
    uv_timer_stop(&s->deadline);
    change_notify(s);
    s->change_id = 0;
}

void change_finish(struct service *s, const char *state, const char *message)
{
    if (s->change_id == 0)
        return;
    change_record_end(s, state, state, message, NULL, NULL, NULL);
    change_done(s);
}

void change_notify(struct service *s)
{
    rollout_wait_cb cb = s->waiter;
    void *ctx = s->waiter_ctx;
    s->waiter = NULL;
    s->waiter_ctx = NULL;
    if (cb)
        cb(ctx, s->change_id);
}

/* After a switch away from version v: once its drain deadline has passed, the change record
 * notes how many long-lived connections (tunnels, event streams) had to be closed by it. */
struct drain_watch {
    uv_timer_t timer;
    struct rollout *r;
    int64_t change_id;
    char *version;
    struct route_target **targets;
    size_t n;
    unsigned base; /* closed_at_drain before the switch */
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
    store_event_add(dw->r->st, dw->change_id, "drained", msg);
    uv_close((uv_handle_t *)&dw->timer, on_drain_watch_closed);
}

void drain_watch(struct service *s, const struct version *v, int64_t change_id)
{
    if (v == NULL || v->n == 0 || change_id == 0)
        return;
    struct drain_watch *dw = xcalloc(1, sizeof(*dw));
    dw->r = s->r;
    dw->change_id = change_id;
    dw->version = xstrdup(v->name);
    dw->targets = xcalloc(v->n, sizeof(*dw->targets));
    dw->n = v->n;
    for (size_t i = 0; i < v->n; i++) {
        route_target_ref(v->targets[i]);
        dw->targets[i] = v->targets[i];
        dw->base += atomic_load_explicit(&v->targets[i]->closed_at_drain, memory_order_relaxed);
    }
    uv_timer_init(s->r->loop, &dw->timer);
    dw->timer.data = dw;
    /* Workers arm their deadlines when they see the new table, a few ms after publish. */
    uv_timer_start(&dw->timer, on_drain_watch, s->cfg->drain_timeout_ms + 500, 0);
    uv_unref((uv_handle_t *)&dw->timer);
}

/* The target version is healthy: record the switch, then make it live. A store that refuses
 * the record does not stop the switch (change_record_end retries it). */
static void change_switch(struct service *s)
{
    struct rollout *r = s->r;
    struct version *to = s->change_kind == CHANGE_DEPLOY ? s->next : s->previous;
    struct version *from = s->live;
    char msg[256];
    snprintf(msg, sizeof(msg), "switched %s from %s to %s", s->cfg->name,
             from ? from->name : "nothing", to->name);

    change_record_end(s, STORE_CHANGE_COMPLETED, "switched", msg, to, from, NULL);
    if (s->change_kind == CHANGE_DEPLOY) {
        version_free(s->previous);
        s->previous = from;
        s->live = to;
        s->next = NULL;
    } else {
        s->previous = from;
        s->live = to;
    }
    rollout_publish(r);
    drain_watch(s, from, s->change_id);
    if (from != NULL)
        managed_retire(from->ms, managed_retire_delay(s));
    log_info("switched", "service", s->cfg->name, "from", from ? from->name : "", "to", to->name);
    change_done(s);
}

static void change_evaluate(struct service *s)
{
    if (s->roll != NULL) {
        rolling_evaluate(s);
        return;
    }
    if (s->change_id == 0)
        return;
    struct version *to = s->change_kind == CHANGE_DEPLOY ? s->next : s->previous;
    if (!version_all_healthy(to))
        return;
    if (s->run != NULL) {
        uv_timer_stop(&s->deadline);
        plan_health_passed(s);
        return;
    }
    change_switch(s);
}

static void on_kick(uv_timer_t *t)
{
    change_evaluate(t->data);
}

void change_kick(struct service *s)
{
    uv_timer_start(&s->kick, on_kick, 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
    struct service *s = t->data;
    if (s->change_id == 0)
        return;
    if (s->roll != NULL) {
        rolling_deadline(s);
        return;
    }
    struct version *to = s->change_kind == CHANGE_DEPLOY ? s->next : s->previous;
    char why[1600], d[24], msg[2048];
    version_why_unhealthy(to, why, sizeof(why));
    const char *crash = managed_last_exit(to ? to->ms : NULL);
    if (crash != NULL) {
        size_t l = strlen(why);
        snprintf(why + l, sizeof(why) - l, "; last exit: %s", crash);
    }
    snprintf(msg, sizeof(msg), "%s %s: targets not healthy after %s: %s; traffic stays on %s",
             s->change_kind == CHANGE_DEPLOY ? "deploy of" : "rollback to", to->name,
             duration_format(s->cfg->deploy_timeout_ms, d, sizeof(d)), why,
             s->live ? s->live->name : "nothing");
    log_warn("change failed", "service", s->cfg->name, "reason", msg);
    plan_discard(s);
    if (s->change_kind == CHANGE_DEPLOY) {
        if (s->next != NULL)
            managed_retire(s->next->ms, 0);
        version_free(s->next);
        s->next = NULL;
    }
    change_finish(s, STORE_CHANGE_FAILED, msg);
}

static void on_health_change(void *ctx, struct health_check *h, enum health_state state)
{
    struct service *s = ctx;
    struct route_target *t = health_target(h);
    log_info("health changed", "service", s->cfg->name, "version", t->version, "target", t->address,
             "state", health_state_name(state), "error", health_last_error(h));
    if (s->change_id != 0 || s->roll != NULL)
        change_evaluate(s);
}

static int valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static struct service *find_service(struct rollout *r, const char *name)
{
    for (size_t i = 0; name && i < r->nservices; i++)
        if (strcmp(r->services[i].cfg->name, name) == 0)
            return &r->services[i];
    return NULL;
}

int rollout_service_id(const struct rollout *r, const char *name)
{
    for (size_t i = 0; i < r->nservices; i++)
        if (strcmp(r->services[i].cfg->name, name) == 0)
            return r->services[i].id;
    return -1;
}

/* A new change would be written after an end the store has not taken yet, and a restart would
 * then find both running: refused, with why, until the end is saved. */
static int refuse_unsaved(const struct service *s, char *err, size_t errlen)
{
    char why[600];
    if (!change_unsaved_why(s, why, sizeof(why)))
        return 0;
    snprintf(err, errlen, "no new change on %s until the last one is saved: %s", s->cfg->name, why);
    return 1;
}

/* Records a new running change with its "created" event, in one transaction. */
static int change_create(struct service *s, const char *kind, const char *to_version,
                         const char *const *targets, size_t ntargets, const char *plan,
                         const char *actor, const char *reason, const char *what, int64_t *id)
{
    struct rollout *r = s->r;
    struct store_change c = {0};
    c.service = (char *)s->cfg->name;
    c.kind = (char *)kind;
    c.from_version = s->live ? s->live->name : NULL;
    c.to_version = (char *)to_version;
    c.plan = (char *)plan;
    c.actor = (char *)(actor && *actor ? actor : "unknown");
    c.reason = (char *)reason;
    c.state = STORE_CHANGE_RUNNING;
    c.message = (char *)what;
    int rc = store_begin(r->st);
    if (rc == 0 && targets != NULL)
        rc = store_version_put(r->st, s->cfg->name, to_version, targets, ntargets);
    if (rc == 0)
        rc = store_change_insert(r->st, &c);
    if (rc == 0)
        rc = store_event_add(r->st, c.id, "created", what);
    if (rc == 0)
        rc = store_commit(r->st);
    if (rc < 0) {
        store_rollback(r->st);
        log_error("store write failed", "service", s->cfg->name, "error", store_errmsg(r->st));
        return -EIO;
    }
    *id = c.id;
    return 0;
}

static void change_begin(struct service *s, enum change_kind kind, int64_t id, int wait,
                         rollout_wait_cb cb, void *ctx)
{
    s->change_id = id;
    s->change_kind = kind;
    s->change_wait = wait;
    s->waiter = cb;
    s->waiter_ctx = ctx;
    change_wait_health(s);
}

void change_wait_health(struct service *s)
{
    uv_timer_start(&s->deadline, on_deadline, s->cfg->deploy_timeout_ms, 0);
    uv_timer_start(&s->kick, on_kick, 0, 0);
}

int rollout_deploy(struct rollout *r, const struct rollout_deploy_req *req, rollout_wait_cb cb,
                   void *ctx, int64_t *change_id, char *err, size_t errlen)
{
    struct service *s = find_service(r, req->service);
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%s'", req->service ? req->service : "");
        return -ENOENT;
    }
    if (!valid_name(req->version)) {
        snprintf(err, errlen, "version: expected 1-64 characters of A-Z a-z 0-9 . _ -, got '%s'",
                 req->version ? req->version : "");
        return -EINVAL;
    }
    int managed = req->ntargets == 0;
    if (managed && s->cfg->run.command == NULL) {
        snprintf(err, errlen,
                 "targets: at least one HOST:PORT is required, since service %s has "
                 "no run: section (cutover does not run it)",
                 s->cfg->name);
        return -EINVAL;
    }
    if (req->ntargets > 64) {
        snprintf(err, errlen, "targets: at most 64, got %zu", req->ntargets);
        return -EINVAL;
    }
    for (size_t i = 0; i < req->ntargets; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (req->targets[i] == NULL || addr_parse(req->targets[i], &ss, &sl) != 0) {
            snprintf(err, errlen, "targets[%zu]: expected HOST:PORT (numeric IP), got '%s'", i,
                     req->targets[i] ? req->targets[i] : "");
            return -EINVAL;
        }
    }
    const char *plan = req->plan ? req->plan : s->cfg->plan;
    const struct config_plan *cp = NULL;
    if (plan != NULL) {
        cp = config_plan_find(r->cfg, plan);
        if (cp == NULL) {
            snprintf(err, errlen, "plan: no plan named '%s' in the config", plan);
            return -ENOENT;
        }
    }
    if (s->change_id != 0) {
        snprintf(err, errlen, "change %lld is already running on %s", (long long)s->change_id,
                 s->cfg->name);
        return -EBUSY;
    }
    if (refuse_unsaved(s, err, errlen))
        return -EBUSY;
    if (s->roll != NULL) {
        snprintf(err, errlen, "%s is restoring its instances after a failed rolling replacement",
                 s->cfg->name);
        return -EBUSY;
    }
    if (s->live != NULL && strcmp(s->live->name, req->version) == 0) {
        snprintf(err, errlen, "version %s is already live on %s", req->version, s->cfg->name);
        return -EEXIST;
    }
    const char *const *targets = req->targets;
    size_t ntargets = req->ntargets;
    struct managed_set *ms = NULL;
    char **own = NULL;
    if (managed && managed_version_running(s, req->version)) {
        /* Two sets of one version would share their store records and log files. */
        snprintf(err, errlen,
                 "instances of %s from an earlier change are still running or stopping on %s; "
                 "retry once they stopped%s",
                 req->version, s->cfg->name,
                 s->previous && strcmp(s->previous->name, req->version) == 0
                     ? ", or use cutover rollback, which reuses them"
                     : "");
        return -EBUSY;
    }
    int rolling = managed && rolling_applies(s);
    if (rolling) {
        /* Instances start batch by batch; refused here when the first one could not. */
        ms = managed_prepare(s, req->version, 1, err, errlen);
        if (ms == NULL)
            return -EINVAL;
        targets = NULL;
        ntargets = 0;
    } else if (managed) {
        /* cutover runs this version: start its instances first (a command that cannot start
         * is refused here, before any change is recorded). */
        int rc = managed_start(s, req->version, &ms, &own, &ntargets, err, errlen);
        if (rc < 0)
            return rc;
        targets = (const char *const *)own;
    }
    char what[512];
    if (rolling)
        snprintf(what, sizeof(what),
                 "deploy %s to %s, replacing %d instances in batches (max_surge %d, "
                 "max_unavailable %d)%s%s",
                 req->version, s->cfg->name, s->cfg->run.instances, s->cfg->strategy.max_surge,
                 s->cfg->strategy.max_unavailable, cp ? " with plan " : "", cp ? cp->name : "");
    else if (cp != NULL)
        snprintf(what, sizeof(what), "deploy %s to %s (%zu %s%s) with plan %s (%zu steps)",
                 req->version, s->cfg->name, ntargets, managed ? "instance" : "target",
                 ntargets == 1 ? "" : "s", cp->name, cp->nsteps);
    else
        snprintf(what, sizeof(what), "deploy %s to %s (%zu %s%s), instant switch once healthy",
                 req->version, s->cfg->name, ntargets, managed ? "instance" : "target",
                 ntargets == 1 ? "" : "s");
    int64_t id;
    if (change_create(s, "deploy", req->version, targets, ntargets, cp ? cp->name : NULL,
                      req->actor, req->reason, what, &id) < 0) {
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(r->st));
        managed_retire(ms, 0);
        store_strv_free(own);
        return -EIO;
    }
    s->next = version_new(s, req->version, targets, ntargets, 0);
    s->next->ms = ms;
    store_strv_free(own);
    log_info("deploy started", "service", s->cfg->name, "version", req->version, "plan",
             cp ? cp->name : "", "actor", req->actor, "reason", req->reason);
    change_begin(s, CHANGE_DEPLOY, id, req->wait, cb, ctx);
    if (cp != NULL)
        plan_create(s, cp);
    if (rolling)
        rolling_create(s); /* after the plan: its first goal depends on it */
    *change_id = id;
    return 0;
}

/* A service that cannot run two full sets rolls back like it deploys: the previous version's
 * instances replace the live ones in batches. */
static int rollback_rolling(struct service *s, const char *actor, const char *reason,
                            rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err,
                            size_t errlen)
{
    const char *to = s->previous->name;
    /* The previous version's set is reused: its draining instances go back into rotation
     * first, and no second set of the same version exists. */
    struct managed_set *ms = s->previous->ms;
    if (ms != NULL)
        managed_keep(ms);
    else if ((ms = managed_prepare(s, to, 1, err, errlen)) == NULL)
        return -EINVAL;
    char what[512];
    snprintf(what, sizeof(what),
             "roll back %s from %s to %s, replacing %d instances in batches (max_surge %d, "
             "max_unavailable %d)",
             s->cfg->name, s->live->name, to, s->cfg->run.instances, s->cfg->strategy.max_surge,
             s->cfg->strategy.max_unavailable);
    int64_t id;
    if (change_create(s, "rollback", to, NULL, 0, NULL, actor, reason, what, &id) < 0) {
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(s->r->st));
        if (ms != s->previous->ms)
            managed_retire(ms, 0);
        return -EIO;
    }
    s->next = version_new(s, to, NULL, 0, 0);
    s->next->ms = ms;
    log_info("rollback started", "service", s->cfg->name, "to", to, "actor", actor, "reason",
             reason);
    change_begin(s, CHANGE_ROLLBACK, id, 1, cb, ctx);
    rolling_create(s);
    *change_id = id;
    return 0;
}

int rollout_rollback(struct rollout *r, const char *service, const char *actor, const char *reason,
                     rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err, size_t errlen)
{
    struct service *s = find_service(r, service);
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%s'", service ? service : "");
        return -ENOENT;
    }
    if (s->change_id != 0) {
        snprintf(err, errlen, "change %lld is already running on %s", (long long)s->change_id,
                 s->cfg->name);
        return -EBUSY;
    }
    if (refuse_unsaved(s, err, errlen))
        return -EBUSY;
    if (s->previous == NULL) {
        snprintf(err, errlen, "%s has no previous version to roll back to", s->cfg->name);
        return -ESRCH;
    }
    if (s->roll != NULL) {
        snprintf(err, errlen, "%s is restoring its instances after a failed rolling replacement",
                 s->cfg->name);
        return -EBUSY;
    }
    if (rolling_applies(s))
        return rollback_rolling(s, actor, reason, cb, ctx, change_id, err, errlen);
    char **own = NULL;
    size_t nown = 0;
    if (s->cfg->run.command != NULL && managed_running(s->previous->ms)) {
        /* Within the rollback window: its processes still run, the rollback reuses them. */
        managed_keep(s->previous->ms);
    } else if (s->cfg->run.command != NULL) {
        /* The previous version's processes were retired after its drain: start them again;
         * the rollback switches once they are healthy, like any deploy. */
        struct managed_set *ms = NULL;
        int rc = managed_start(s, s->previous->name, &ms, &own, &nown, err, errlen);
        if (rc < 0)
            return rc;
        struct version *nv = version_new(s, s->previous->name, (const char *const *)own, nown, 0);
        nv->ms = ms;
        version_free(s->previous);
        s->previous = nv;
    }
    char what[512];
    snprintf(what, sizeof(what), "roll back %s from %s to %s%s", s->cfg->name,
             s->live ? s->live->name : "nothing", s->previous->name,
             own ? " (its instances started again)" : "");
    int64_t id;
    if (change_create(s, "rollback", s->previous->name, (const char *const *)own, nown, NULL, actor,
                      reason, what, &id) < 0) {
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(r->st));
        store_strv_free(own);
        return -EIO;
    }
    store_strv_free(own);
    log_info("rollback started", "service", s->cfg->name, "to", s->previous->name, "actor", actor,
             "reason", reason);
    change_begin(s, CHANGE_ROLLBACK, id, 1, cb, ctx);
    *change_id = id;
    return 0;
}

void version_crashed(struct service *s, const char *version, const char *why)
{
    if (s->change_id == 0)
        return;
    if (s->roll != NULL) {
        if (s->next != NULL && strcmp(s->next->name, version) == 0) {
            char msg[1400];
            snprintf(msg, sizeof(msg), "%s %s failed: %s",
                     s->change_kind == CHANGE_DEPLOY ? "deploy of" : "rollback to", version, why);
            rolling_fail(s, NULL, msg);
        }
        return;
    }
    struct version *to = s->change_kind == CHANGE_DEPLOY ? s->next : s->previous;
    if (to == NULL || strcmp(to->name, version) != 0)
        return;
    char msg[1400];
    snprintf(msg, sizeof(msg), "%s %s failed: %s",
             s->change_kind == CHANGE_DEPLOY ? "deploy of" : "rollback to", version, why);
    if (s->run != NULL) {
        plan_fail(s, STORE_CHANGE_ROLLED_BACK, msg);
        return;
    }
    log_warn("change failed", "service", s->cfg->name, "reason", msg);
    if (s->change_kind == CHANGE_DEPLOY) {
        managed_retire(s->next->ms, 0);
        version_free(s->next);
        s->next = NULL;
    }
    change_finish(s, STORE_CHANGE_FAILED, msg);
}

void rollout_stop_instances(struct rollout *r)
{
    managed_stop_all(r);
}

void rollout_release_instances(struct rollout *r)
{
    managed_release_all(r);
}

int rollout_change_action(struct rollout *r, int64_t id, const char *action, const char *actor,
                          int all, char *err, size_t errlen)
{
    struct service *s = NULL;
    for (size_t i = 0; i < r->nservices; i++)
        if (r->services[i].change_id == id)
            s = &r->services[i];
    for (size_t i = 0; s == NULL && i < r->nservices; i++) {
        char why[600];
        if (r->services[i].unsaved != NULL && r->services[i].unsaved->change_id == id &&
            change_unsaved_why(&r->services[i], why, sizeof(why))) {
            snprintf(err, errlen, "change %lld has ended (%s): %s", (long long)id,
                     r->services[i].unsaved->state, why);
            return -EBUSY;
        }
    }
    if (s == NULL) {
        struct store_change c;
        if (store_change_get(r->st, id, &c) < 0) {
            snprintf(err, errlen, "no change %lld", (long long)id);
            return -ENOENT;
        }
        snprintf(err, errlen, "change %lld is not running (it is %s)", (long long)id, c.state);
        store_change_done(&c);
        return -EBUSY;
    }
    if (strcmp(action, "abort") == 0 && s->run == NULL && s->roll != NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "aborted by %s; %s's instances are restored",
                 actor && *actor ? actor : "unknown", s->live->name);
        rolling_fail(s, STORE_CHANGE_ABORTED, msg);
        return 0;
    }
    if (strcmp(action, "abort") == 0 && s->run == NULL) {
        /* An instant switch still waiting for health: stop waiting, nothing moved. */
        log_info("change aborted", "service", s->cfg->name, "actor", actor);
        if (s->next != NULL)
            managed_retire(s->next->ms, 0);
        version_free(s->next);
        s->next = NULL;
        change_finish(s, STORE_CHANGE_ABORTED, "aborted before the switch; traffic never moved");
        return 0;
    }
    if (s->run == NULL) {
        snprintf(err, errlen, "change %lld is an instant switch, not a plan: only abort applies",
                 (long long)id);
        return -EBUSY;
    }
    return plan_action(s, action, actor, all, err, errlen);
}

/* ---------------------------------------------------------------- lifecycle ----------------- */

struct rollout *rollout_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                            rollout_publish_cb on_publish, rollout_sample_fn sample, void *ctx)
{
    struct rollout *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->sample = sample;
    r->cfg = cfg;
    r->st = st;
    r->on_publish = on_publish;
    r->ctx = ctx;
    r->nservices = cfg->nservices;
    r->services = xcalloc(r->nservices ? r->nservices : 1, sizeof(*r->services));
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        s->r = r;
        s->id = (int)i;
        s->cfg = &cfg->services[i];
        uv_timer_init(loop, &s->deadline);
        uv_timer_init(loop, &s->kick);
        uv_timer_init(loop, &s->save_retry);
        s->deadline.data = s;
        s->kick.data = s;
        s->save_retry.data = s;
    }
    return r;
}

/* Loads version name of s from the store, health-checking its targets. */
struct version *version_load(struct service *s, const char *name, int optimistic)
{
    char **targets = NULL;
    size_t n = 0;
    if (name == NULL || store_version_targets(s->r->st, s->cfg->name, name, &targets, &n) < 0)
        return NULL;
    struct version *v = version_new(s, name, (const char *const *)targets, n, optimistic);
    store_strv_free(targets);
    return v;
}

/* Re-attaches a loaded version to its processes (managed services): the live version's are
 * adopted or started again; a previous version's leftovers (it was draining) are retired. */
static void restore_instances(struct service *s, struct version *v, int live)
{
    if (v == NULL || s->cfg->run.command == NULL)
        return;
    char **t = NULL;
    size_t n = 0;
    if (store_version_targets(s->r->st, s->cfg->name, v->name, &t, &n) < 0)
        return;
    v->ms = managed_restore(s, v->name, t, n, live);
    store_strv_free(t);
    if (!live && v->ms != NULL)
        managed_retire(v->ms, s->cfg->drain_timeout_ms);
}

/* A plan change left running resumes at the next start; an instant switch or a rolling
 * replacement is marked interrupted instead (traffic is where the store says). */
static int change_resumable(struct rollout *r, const struct store_change *c)
{
    if (find_service(r, c->service) == NULL || c->plan == NULL ||
        config_plan_find(r->cfg, c->plan) == NULL)
        return 0;
    /* A plan that replaced instances in batches says so in its detail (plan_mark_rolling). */
    json_t *d = c->detail ? json_loads(c->detail, 0, NULL) : NULL;
    int rolling = json_is_true(json_object_get(d, "rolling"));
    json_decref(d);
    return !rolling;
}

/* Instances recorded for a version that is neither live nor previous (the new version of an
 * interrupted change, the leaving one of a restore cut short) are adopted and stopped; a plan
 * about to resume keeps its new version's. */
static void reap_leftovers(struct service *s, const struct store_change *running, size_t nrunning)
{
    char **versions = NULL;
    size_t n = 0;
    if (s->cfg->run.command == NULL ||
        store_instance_versions(s->r->st, s->cfg->name, &versions, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *v = versions[i];
        int keep = (s->live != NULL && strcmp(s->live->name, v) == 0) ||
                   (s->previous != NULL && strcmp(s->previous->name, v) == 0);
        for (size_t j = 0; j < nrunning && !keep; j++)
            keep = strcmp(running[j].service, s->cfg->name) == 0 &&
                   change_resumable(s->r, &running[j]) && running[j].to_version != NULL &&
                   strcmp(running[j].to_version, v) == 0;
        if (!keep)
            managed_reap(s, v);
    }
    store_strv_free(versions);
}

int rollout_start(struct rollout *r, char *err, size_t errlen)
{
    struct store_change *running = NULL;
    size_t nrunning = 0;
    int rc = store_change_list_running(r->st, &running, &nrunning);
    if (rc < 0) {
        snprintf(err, errlen, "store: %s", store_errmsg(r->st));
        return rc;
    }
    for (size_t i = 0; i < nrunning; i++) {
        const char *msg = "the daemon stopped while this change ran; traffic stayed where the "
                          "store last recorded it";
        if (change_resumable(r, &running[i]))
            continue; /* a plan resumes where it was, once its service is loaded (below) */
        store_change_update(r->st, running[i].id, STORE_CHANGE_INTERRUPTED, msg);
        store_event_add(r->st, running[i].id, "interrupted", msg);
        char idbuf[24];
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)running[i].id);
        log_warn("change interrupted by a restart", "change", idbuf, "service", running[i].service);
    }

    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        char *live = NULL, *prev = NULL;
        rc = store_service_get(r->st, s->cfg->name, &live, &prev);
        if (rc == -ENOENT && s->cfg->ntargets > 0) {
            /* First start: the configured targets are the live version. */
            rc = store_begin(r->st);
            if (rc == 0)
                rc = store_version_put(r->st, s->cfg->name, INITIAL_VERSION,
                                       (const char *const *)s->cfg->targets, s->cfg->ntargets);
            if (rc == 0)
                rc = store_service_set(r->st, s->cfg->name, INITIAL_VERSION, NULL);
            if (rc == 0)
                rc = store_commit(r->st);
            if (rc < 0) {
                store_rollback(r->st);
                snprintf(err, errlen, "store: %s", store_errmsg(r->st));
                store_change_list_free(running, nrunning);
                return rc;
            }
            live = xstrdup(INITIAL_VERSION);
        } else if (rc < 0 && rc != -ENOENT) {
            snprintf(err, errlen, "store: %s", store_errmsg(r->st));
            store_change_list_free(running, nrunning);
            return rc;
        }
        s->live = version_load(s, live, 1);
        s->previous = version_load(s, prev, 0);
        restore_instances(s, s->live, 1);
        restore_instances(s, s->previous, 0);
        reap_leftovers(s, running, nrunning);
        for (size_t j = 0; j < nrunning; j++) {
            const struct config_plan *cp =
                running[j].plan ? config_plan_find(r->cfg, running[j].plan) : NULL;
            if (!change_resumable(r, &running[j]) ||
                strcmp(running[j].service, s->cfg->name) != 0 || s->change_id)
                continue;
            if (plan_resume(s, &running[j], cp) < 0) {
                const char *msg = "the daemon stopped while this change ran and its plan state "
                                  "could not be restored; traffic is on the stable version";
                store_change_update(r->st, running[j].id, STORE_CHANGE_INTERRUPTED, msg);
                store_event_add(r->st, running[j].id, "interrupted", msg);
            }
        }
        log_info("service ready", "service", s->cfg->name, "listen", s->cfg->listen, "live",
                 live ? live : "none", "previous", prev ? prev : "none");
        free(live);
        free(prev);
    }
    store_change_list_free(running, nrunning);
    rollout_publish(r);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct rollout *r = h->data;
    r->open_handles--;
}

void rollout_stop(struct rollout *r)
{
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        if (s->roll != NULL) {
            /* Batches are not resumed: the next start serves the old version whole again. */
            plan_discard(s);
            change_finish(s, STORE_CHANGE_INTERRUPTED,
                          "the daemon stopped during a rolling replacement; the next start "
                          "restores the version that was live");
            rolling_stop(s);
        } else if (s->run != NULL)
            plan_stop(s); /* the change stays running: the next start resumes it */
        else if (s->change_id != 0)
            change_finish(s, STORE_CHANGE_INTERRUPTED,
                          "the daemon stopped while this change ran; traffic stayed on the "
                          "version that was live");
        unsaved_flush(s);
        version_free(s->live);
        version_free(s->previous);
        version_free(s->next);
        s->live = s->previous = s->next = NULL;
        s->deadline.data = r;
        s->kick.data = r;
        s->save_retry.data = r;
        r->open_handles += 3;
        uv_close((uv_handle_t *)&s->deadline, on_handle_closed);
        uv_close((uv_handle_t *)&s->kick, on_handle_closed);
        uv_close((uv_handle_t *)&s->save_retry, on_handle_closed);
    }
}

int rollout_unsaved(const struct rollout *r, char *why, size_t n)
{
    for (size_t i = 0; i < r->nservices; i++) {
        char w[600];
        if (change_unsaved_why(&r->services[i], w, sizeof(w))) {
            snprintf(why, n, "%s: %s; hand over once it is saved", r->services[i].cfg->name, w);
            return 1;
        }
    }
    return 0;
}

int rollout_switching(const struct rollout *r)
{
    for (size_t i = 0; i < r->nservices; i++)
        if ((r->services[i].change_id != 0 && r->services[i].run == NULL) ||
            r->services[i].roll != NULL)
            return 1;
    return 0;
}

void rollout_free(struct rollout *r)
{
    if (r == NULL)
        return;
    managed_free_all(r);
    if (r->sv != NULL)
        supervisor_free(r->sv);
    free(r->services);
    free(r);
}

/* ---------------------------------------------------------------- JSON ---------------------- */

json_t *rollout_iso_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[40];
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *rollout_event_json(const struct store_event *ev, const char *service)
{
    return json_pack("{s:I, s:I, s:o, s:s, s:o, s:o}", "id", (json_int_t)ev->id, "change",
                     (json_int_t)ev->change_id, "service", str_or_null(service), "type", ev->type,
                     "message", str_or_null(ev->message), "ts", rollout_iso_time(ev->ts_ms));
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

static json_t *change_to_json(struct rollout *r, const struct store_change *c, int with_events)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(c->id));
    json_object_set_new(o, "service", str_or_null(c->service));
    json_object_set_new(o, "kind", str_or_null(c->kind));
    json_object_set_new(o, "from", str_or_null(c->from_version));
    json_object_set_new(o, "to", str_or_null(c->to_version));
    json_object_set_new(o, "plan", str_or_null(c->plan));
    json_object_set_new(o, "state", str_or_null(c->state));
    json_object_set_new(o, "actor", str_or_null(c->actor));
    json_object_set_new(o, "reason", str_or_null(c->reason));
    json_object_set_new(o, "message", str_or_null(c->message));
    json_object_set_new(o, "created", rollout_iso_time(c->created_ms));
    json_object_set_new(o, "updated", rollout_iso_time(c->updated_ms));
    json_object_set_new(o, "ended", rollout_iso_time(c->ended_ms));
    if (c->detail != NULL) {
        json_t *d = json_loads(c->detail, 0, NULL);
        if (d != NULL)
            json_object_set_new(o, "detail", d);
    }
    if (with_events) {
        struct store_event *ev = NULL;
        size_t n = 0;
        json_t *a = json_array();
        if (store_event_list(r->st, c->id, &ev, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_pack("{s:o, s:s, s:s}", "ts",
                                                   rollout_iso_time(ev[i].ts_ms), "type",
                                                   ev[i].type ? ev[i].type : "", "message",
                                                   ev[i].message ? ev[i].message : ""));
            store_event_list_free(ev, n);
        }
        json_object_set_new(o, "events", a);
    }
    return o;
}

/* A change whose end the store has not taken yet reads as the engine ended it (state, message,
 * end time), with `unsaved` saying that the record is still missing. */
static void change_overlay_unsaved(struct rollout *r, json_t *o, int64_t id)
{
    for (size_t i = 0; i < r->nservices; i++) {
        const struct service *s = &r->services[i];
        if (s->unsaved == NULL || s->unsaved->change_id != id)
            continue;
        json_object_set_new(o, "state", json_string(s->unsaved->state));
        json_object_set_new(o, "message", json_string(s->unsaved->message));
        json_object_set_new(o, "ended", rollout_iso_time(s->unsaved->ended_ms));
        json_object_set_new(o, "unsaved", unsaved_json(s));
        return;
    }
}

json_t *rollout_change_json(struct rollout *r, int64_t id, int with_events)
{
    struct store_change c;
    if (store_change_get(r->st, id, &c) < 0)
        return NULL;
    json_t *o = change_to_json(r, &c, with_events);
    change_overlay_unsaved(r, o, id);
    store_change_done(&c);
    return o;
}

json_t *rollout_changes_json(struct rollout *r, const char *service, size_t limit)
{
    struct store_change *v = NULL;
    size_t n = 0;
    if (store_change_list(r->st, service, limit, &v, &n) < 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = change_to_json(r, &v[i], 0);
        change_overlay_unsaved(r, o, v[i].id);
        json_array_append_new(a, o);
    }
    store_change_list_free(v, n);
    return json_pack("{s:o}", "changes", a);
}

static json_t *service_to_json(struct rollout *r, struct service *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->cfg->name));
    json_object_set_new(o, "listen", json_string(s->cfg->listen));
    json_object_set_new(o, "protocol",
                        json_string(s->cfg->protocol == CONFIG_PROTO_TCP ? "tcp" : "http"));
    json_object_set_new(o, "live", version_json(s->live));
    json_object_set_new(o, "previous", version_json(s->previous));
    json_t *ch = json_null();
    if (s->change_id != 0) {
        json_t *c = rollout_change_json(r, s->change_id, 0);
        if (c != NULL) {
            json_object_set_new(c, "target_version",
                                version_json(s->change_kind == CHANGE_DEPLOY || s->roll != NULL
                                                 ? s->next
                                                 : s->previous));
            if (s->run != NULL)
                json_object_set_new(c, "progress", plan_status_json(s));
            ch = c;
        }
    }
    json_object_set_new(o, "change", ch);
    json_object_set_new(o, "rolling", rolling_json(s));
    json_object_set_new(o, "unsaved", unsaved_json(s));
    return o;
}

json_t *rollout_service_json(struct rollout *r, const char *name)
{
    struct service *s = find_service(r, name);
    return s ? service_to_json(r, s) : NULL;
}

json_t *rollout_services_json(struct rollout *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < r->nservices; i++)
        json_array_append_new(a, service_to_json(r, &r->services[i]));
    return json_pack("{s:o}", "services", a);
}

static void emit_version(rollout_emit_fn emit, void *ctx, const struct service *s,
                         const struct version *v, const char *role)
{
    char line[512];
    if (v == NULL)
        return;
    snprintf(line, sizeof(line),
             "cutover_version_info{service=\"%s\",version=\"%s\",role=\"%s\"} 1", s->cfg->name,
             v->name, role);
    emit(ctx, line);
    for (size_t i = 0; i < v->n; i++) {
        snprintf(line, sizeof(line),
                 "cutover_target_healthy{service=\"%s\",version=\"%s\",target=\"%s\"} %d",
                 s->cfg->name, v->name, v->targets[i]->address,
                 health_get_state(v->checks[i]) == HEALTH_HEALTHY);
        emit(ctx, line);
    }
}

void rollout_metrics(struct rollout *r, rollout_emit_fn emit, void *ctx)
{
    emit(ctx, "# HELP cutover_version_info Versions known per service and their role.");
    emit(ctx, "# TYPE cutover_version_info gauge");
    emit(ctx, "# HELP cutover_target_healthy 1 when the target passes its health checks.");
    emit(ctx, "# TYPE cutover_target_healthy gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        emit_version(emit, ctx, s, s->live, "live");
        emit_version(emit, ctx, s, s->previous, "previous");
        emit_version(emit, ctx, s, s->next, "next");
    }
    /* Something to alert on: the engine acted on a change's end that only memory holds. */
    emit(ctx, "# HELP cutover_change_unsaved 1 while the end of a change is not saved to the "
              "store (retrying).");
    emit(ctx, "# TYPE cutover_change_unsaved gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        char line[256];
        snprintf(line, sizeof(line), "cutover_change_unsaved{service=\"%s\"} %d",
                 r->services[i].cfg->name, r->services[i].unsaved != NULL);
        emit(ctx, line);
    }
}
