/* The rollout engine (see rollout.h): the services, their versions, and the wiring of each
 * service's change (change.c: the state machine and the only writer of a change's rows) with
 * its plan (plan.c), its executor (rolling.c) and its processes (managed.c). It admits deploys
 * and rollbacks, reacts to health changes, deadlines and crash loops by asking the change
 * machine, rolls a failing live version back on its own, and builds the route table the change
 * publishes. Control loop only.
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

#include <openssl/evp.h>

#include "core/duration.h"
#include "core/log.h"
#include "core/release.h"
#include "core/text.h"
#include "config/freeze.h"
#include "core/xmalloc.h"
#include "net/addr.h"
#include "proxy/route.h"
#include "rollout/baseline.h"
#include "rollout/change.h"
#include "rollout/managed.h"
#include "rollout/mode.h"
#include "rollout/plan.h"
#include "rollout/policy.h"
#include "rollout/preview.h"
#include "rollout/rolling.h"
#include "rollout/schedule.h"
#include "rollout/rollout_int.h"
#include "rollout/version.h"
#include "super/health.h"
#include "super/supervisor.h"

static void on_health_change(void *ctx, struct health_check *h, enum health_state state);
static void on_crash(struct service *s, const char *version, const char *why);

/* A version of s whose health changes reach the engine. */
static struct version *version_of(struct service *s, const char *name, const char *const *t,
                                  size_t n, int optimistic)
{
    return version_new(s->r->loop, &s->cfg->health, name, t, n, optimistic, on_health_change, s);
}

static struct version *version_stored(struct service *s, const char *name, int optimistic)
{
    return version_load(s->r->st, s->cfg->name, s->r->loop, &s->cfg->health, name, optimistic,
                        on_health_change, s);
}

struct service *rollout_find(struct rollout *r, const char *name)
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
        .hold_max_requests = c->limits.hold_max_requests,
    };
    return l;
}

static void rollout_publish(struct rollout *r)
{
    struct route_table *t = route_table_new(r->nservices);
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        struct route_service *rs = &t->services[i];
        rs->id = s->id;
        rs->name = xstrdup(s->cfg->name);
        rs->limits = limits_from(s->cfg);
        mode_route_fill(s, rs);
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
        /* Between changes, the previous version that could take over from a failing live one
         * catches the requests that find no healthy live target (live_failed rolls back). */
        if (!change_running(&s->ch) && s->roll == NULL &&
            s->cfg->on_live_failure == CONFIG_ON_LIVE_FAILURE_ROLLBACK && s->previous != NULL &&
            (s->cfg->run.command == NULL || managed_running(s->previous->ms)) &&
            (s->failed == NULL || strcmp(s->failed, s->previous->name) != 0))
            route_backend_set(&rs->fallback, s->previous->name, s->previous->targets,
                              s->previous->n);
        else
            route_backend_set(&rs->fallback, "", NULL, 0);
    }
    route_table_publish(t);
    if (r->on_publish)
        r->on_publish(r->ctx);
}

/* ---------------------------------------------------------------- loss ---------------------- */

/* What a change cost users: the requests cutover failed or cut for either role between its
 * start and the end of its drain (or its end, when nothing drained), by reason, and the
 * long-lived connections its drain deadline closed. Recorded in the change as detail.loss. */

static void sample_roles(struct service *s, struct analysis_sample out[ROUTE_ROLES])
{
    for (int role = 0; role < ROUTE_ROLES; role++) {
        memset(&out[role], 0, sizeof(out[role]));
        if (s->r->sample)
            s->r->sample(s->r->ctx, s->id, role, &out[role]);
    }
}

static void loss_begin(struct service *s)
{
    s->loss_change = s->ch.id;
    sample_roles(s, s->loss_base);
}

static void loss_record(struct service *s, int64_t id, unsigned connections)
{
    if (s->loss_change != id || id == 0)
        return;
    struct analysis_sample now[ROUTE_ROLES];
    sample_roles(s, now);
    json_t *by = json_object();
    uint64_t total = 0;
    for (unsigned k = 0; k < ROUTE_LOSSES; k++) {
        uint64_t n = 0;
        for (int role = 0; role < ROUTE_ROLES; role++)
            n += now[role].lost[k] - s->loss_base[role].lost[k];
        total += n;
        json_object_set_new(by, route_loss_name(k), json_integer((json_int_t)n));
    }
    json_t *loss = json_pack("{s:I, s:i, s:o}", "requests", (json_int_t)total, "connections",
                             (int)connections, "by_reason", by);
    if (change_record_merge(&s->ch, id, "loss", loss) < 0)
        log_error("cannot record the change's loss", "service", s->cfg->name, "error",
                  store_errmsg(s->r->st));
    json_decref(loss);
    s->loss_change = 0;
}

static void on_drained(void *ctx, int64_t id, unsigned closed)
{
    struct service *s = ctx;
    if (s->drain_pending == id)
        s->drain_pending = 0;
    loss_record(s, id, closed);
}

static void watch_drain(struct service *s, const struct version *v, int64_t id)
{
    if (version_watch_drain(v, &s->ch, id, s->r->loop, s->cfg->drain_timeout_ms, on_drained, s))
        s->drain_pending = id;
}

static void hook_ended(void *ctx, struct change *c, int64_t id)
{
    struct service *s = ctx;
    if (s->drain_pending != id)
        loss_record(s, id, 0); /* nothing to drain: the loss is complete now */
    if (s->baseline != NULL) {
        /* The comparison is over: its users go to the version live now. */
        baseline_end(s, 1);
        if (!s->r->stopping)
            rollout_publish(s->r);
    }
    if (s->mode.hold_change == id && s->mode.hold_since_ms != 0) {
        /* A deploy --hold: its requests go on to the version live now (the switched one, or
         * the old one when the change failed). */
        struct store_change ch = {0};
        int have = store_change_get(s->r->st, id, &ch) == 0;
        if (mode_change_ended(s, id, c->actor, have ? ch.state : NULL) && !s->r->stopping)
            rollout_publish(s->r);
        if (have)
            store_change_done(&ch);
    }
}

/* ---------------------------------------------------------------- changes ------------------- */

/* What the change machine knows of a service whose change has no plan (or before it). */
static struct change_facts facts_of(const struct service *s)
{
    struct change_facts f = {0};
    f.plan = s->run != NULL;
    f.stable_healthy = version_all_healthy(s->live);
    f.resumable = s->run != NULL && s->roll == NULL;
    return f;
}

/* Ends the change of s in state with message, with nothing else to record. */
static void change_end(struct service *s, const char *state, const char *message)
{
    if (s->ch.id == 0)
        return;
    change_record_end(&s->ch, state, state, message, NULL, NULL, NULL);
    change_done(&s->ch);
}

/* The target version is healthy: record the switch, then make it live. A store that refuses
 * the record does not stop the switch (change_record_end retries it). */
/* The one commit of a switch, for an instant switch, a plan's end and a replacement's last
 * batch alike: the end is recorded (it stands when the store refuses it, see
 * change_record_end), to becomes live with the version that was live as previous, the plan
 * and the executor are dropped, the table is published, the old version's connections get
 * their drain (figures recorded) and its processes are kept for its drain or the rollback
 * window, whichever is longer. */
static void commit_switch(struct service *s, struct version *to, const char *event, const char *msg,
                          const char *detail)
{
    struct version *from = s->live;
    int64_t id = s->ch.id;
    change_record_end(&s->ch, STORE_CHANGE_COMPLETED, event, msg, to->name,
                      from ? from->name : NULL, detail);
    if (to == s->next) {
        version_free(s->previous);
        s->next = NULL;
    } /* else a rollback to the previous version object itself */
    s->previous = from;
    s->live = to;
    free(s->down);
    s->down = NULL;
    plan_discard(s);
    if (s->exec != NULL)
        s->exec->stop(s);
    rollout_publish(s->r);
    watch_drain(s, from, id);
    if (from != NULL)
        managed_retire(from->ms, managed_retire_delay(s));
    log_info("switched", "service", s->cfg->name, "from", from ? from->name : "", "to", to->name,
             "event", event);
    change_done(&s->ch);
}

static void change_switch(struct service *s)
{
    struct version *to = service_target(s);
    char msg[256];
    snprintf(msg, sizeof(msg), "switched %s from %s to %s", s->cfg->name,
             s->live ? s->live->name : "nothing", to->name);
    commit_switch(s, to, "switched", msg, NULL);
}

/* The kick timer, or a health change: is the target version ready? */
static void change_evaluate(struct service *s)
{
    if (s->roll != NULL) {
        rolling_evaluate(s);
        return;
    }
    if (!change_running(&s->ch) || !version_all_healthy(service_target(s)))
        return;
    if (s->run != NULL) {
        change_stop_deadline(&s->ch);
        plan_health_passed(s);
        return;
    }
    struct change_facts f = facts_of(s);
    struct change_rule rule;
    char err[256];
    if (change_fire(&s->ch, CHANGE_IN_HEALTHY, &f, NULL, &rule, err, sizeof(err)) == 0 &&
        rule.effect == CHANGE_SWITCH)
        change_switch(s);
}

static void hook_evaluate(void *ctx, struct change *c)
{
    (void)c;
    change_evaluate(ctx);
}

static void hook_deadline(void *ctx, struct change *c)
{
    struct service *s = ctx;
    (void)c;
    if (s->roll != NULL) {
        rolling_deadline(s);
        return;
    }
    struct version *to = service_target(s);
    struct change_facts f = facts_of(s);
    struct change_rule rule;
    char err[256];
    if (change_fire(&s->ch, CHANGE_IN_DEADLINE, &f, NULL, &rule, err, sizeof(err)) < 0 ||
        rule.effect != CHANGE_FAIL)
        return;
    char why[1600], d[24], msg[2048];
    version_why_unhealthy(to, why, sizeof(why));
    const char *crash = managed_last_exit(to ? to->ms : NULL);
    if (crash != NULL) {
        size_t l = strlen(why);
        snprintf(why + l, sizeof(why) - l, "; last exit: %s", crash);
    }
    snprintf(msg, sizeof(msg), "%s %s: targets not healthy after %s: %s; traffic stays on %s",
             s->ch.kind == CHANGE_DEPLOY ? "deploy of" : "rollback to", to->name,
             duration_format(s->cfg->deploy_timeout_ms, d, sizeof(d)), why,
             s->live ? s->live->name : "nothing");
    log_warn("change failed", "service", s->cfg->name, "reason", msg);
    plan_discard(s);
    if (s->ch.kind == CHANGE_DEPLOY) {
        if (s->next != NULL)
            managed_retire(s->next->ms, 0);
        version_free(s->next);
        s->next = NULL;
    }
    change_end(s, STORE_CHANGE_FAILED, msg);
}

static void hook_publish(void *ctx)
{
    struct service *s = ctx;
    rollout_publish(s->r);
}

static const struct change_hooks hooks = {
    .publish = hook_publish,
    .evaluate = hook_evaluate,
    .deadline = hook_deadline,
    .ended = hook_ended,
};

/* ---------------------------------------------------------------- live failure -------------- */

static int start_rollback(struct service *s, const char *actor, const char *reason,
                          rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err,
                          size_t errlen);

/* Records on the service's last change that the service is down (no version can serve) and why;
 * status, the event stream and /metrics show it until a version serves again. */
/* Records an event on the service's last change (the one that made its live version live). */
static void last_change_event(struct service *s, const char *type, const char *msg)
{
    struct store_change *last = NULL;
    size_t n = 0;
    if (store_change_list(s->r->st, s->cfg->name, 1, &last, &n) == 0 && n == 1)
        change_record_event_of(&s->ch, last[0].id, type, msg);
    store_change_list_free(last, n);
}

static void service_down(struct service *s, const char *why)
{
    if (s->down != NULL && strcmp(s->down, why) == 0)
        return;
    free(s->down);
    s->down = xstrdup(why);
    log_error("service down", "service", s->cfg->name, "reason", why);
    last_change_event(s, "service_down", why);
}

/* 1 when the previous version could serve at once: its targets pass their health checks and,
 * when cutover runs it, its processes still run (within the rollback window). */
static int previous_ready(const struct service *s)
{
    const struct version *p = s->previous;
    if (p == NULL || !version_all_healthy(p))
        return 0;
    if (s->cfg->run.command != NULL && !managed_running(p->ms))
        return 0;
    /* Never back to the version that failed the same way a moment ago: no ping-pong. */
    return s->failed == NULL || strcmp(s->failed, p->name) != 0;
}

/* The live version failed after its switch (its instances crash in a loop, or every target is
 * unhealthy). Between changes, with on_live_failure: rollback and a previous version that can
 * serve, cutover rolls back on its own as a recorded change; otherwise it says that the
 * service is down and why. */
static void live_failed(struct service *s, const char *why)
{
    char reason[1400], err[512];
    struct change_facts f = facts_of(s);
    f.previous_running =
        s->cfg->on_live_failure == CONFIG_ON_LIVE_FAILURE_ROLLBACK && previous_ready(s);
    struct change_rule rule = change_next(s->ch.state, CHANGE_IN_LIVE_FAILED, &f);
    if (rule.effect != CHANGE_START) {
        if (change_running(&s->ch))
            return; /* the change in progress decides (its gates, its deadline) */
        snprintf(reason, sizeof(reason), "live version %s failed: %s; %s",
                 s->live ? s->live->name : "?", why,
                 s->cfg->on_live_failure != CONFIG_ON_LIVE_FAILURE_ROLLBACK
                     ? "on_live_failure is alert: no automatic rollback"
                 : s->previous == NULL ? "no previous version to roll back to"
                                       : "the previous version cannot serve (not running or "
                                         "not healthy)");
        service_down(s, reason);
        return;
    }
    snprintf(reason, sizeof(reason), "live version %s failed after its switch: %s",
             s->live ? s->live->name : "?", why);
    int64_t id;
    free(s->failed);
    s->failed = xstrdup(s->live->name);
    if (start_rollback(s, "cutover", reason, NULL, NULL, &id, err, sizeof(err)) < 0) {
        snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
                 "; automatic rollback refused: %s", err);
        service_down(s, reason);
        return;
    }
    /* The previous version is healthy: switch now rather than on the next loop turn. */
    change_evaluate(s);
}

/* Every target of the live version failed its checks (not merely unknown yet). */
static int live_all_unhealthy(const struct service *s)
{
    const struct version *v = s->live;
    if (v == NULL || v->n == 0)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (health_get_state(v->checks[i]) != HEALTH_UNHEALTHY)
            return 0;
    return 1;
}

static void on_health_change(void *ctx, struct health_check *h, enum health_state state)
{
    struct service *s = ctx;
    struct route_target *t = health_target(h);
    log_info("health changed", "service", s->cfg->name, "version", t->version, "target", t->address,
             "state", health_state_name(state), "error", health_last_error(h));
    if (change_running(&s->ch) || s->roll != NULL) {
        change_evaluate(s);
        return;
    }
    if (s->live != NULL && strcmp(t->version, s->live->name) == 0) {
        if (state == HEALTH_HEALTHY && s->down != NULL) {
            log_info("service serving again", "service", s->cfg->name, "version", s->live->name);
            free(s->down);
            s->down = NULL;
            /* The end of the outage, for the record and the time to restore (cutover stats). */
            char msg[256];
            snprintf(msg, sizeof(msg), "live version %.64s serves again: its checks pass",
                     s->live->name);
            last_change_event(s, "service_up", msg);
        } else if (live_all_unhealthy(s)) {
            char why[1024];
            version_why_unhealthy(s->live, why, sizeof(why));
            live_failed(s, why);
        }
    }
}

/* ---------------------------------------------------------------- the audit record ---------- */

/* The sha256 of the config file, hex, into out[65] ("" when it cannot be read). */
static void config_digest(const char *path, char out[65])
{
    out[0] = '\0';
    FILE *f = path ? fopen(path, "rbe") : NULL;
    if (f == NULL)
        return;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char buf[8192], dig[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    size_t n;
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = EVP_DigestUpdate(md, buf, n) == 1;
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(md, dig, &dl) == 1 && dl == 32;
    for (unsigned i = 0; ok && i < dl; i++)
        snprintf(out + 2 * i, 3, "%02x", dig[i]);
    EVP_MD_CTX_free(md);
    fclose(f);
}

static json_t *side_json(const char *version, const struct version *v, const char *const *targets,
                         size_t n)
{
    json_t *ts = json_array();
    if (v != NULL)
        for (size_t i = 0; i < v->n; i++)
            json_array_append_new(ts, json_string(v->targets[i]->address));
    for (size_t i = 0; v == NULL && targets != NULL && i < n; i++)
        json_array_append_new(ts, json_string(targets[i]));
    json_t *o = json_pack("{s:o, s:o}", "version", version ? json_string(version) : json_null(),
                          "targets", ts);
    if (v != NULL && v->ms != NULL)
        json_object_set_new(o, "instances", managed_json(v->ms));
    return o;
}

/* What an auditor needs to know of a change as it starts: cutover's release, the config it ran
 * under (path and sha256), the plan with its gate thresholds as they were in force, and the
 * targets or instances of both versions. New reference. */
static json_t *audit_json(struct service *s, const struct config_plan *cp, const char *to,
                          const struct version *tov, const char *const *targets, size_t n)
{
    return json_pack("{s:s, s:{s:s, s:s}, s:o, s:o, s:o}", "cutover", CUTOVER_RELEASE, "config",
                     "path", s->r->cfg->path ? s->r->cfg->path : "", "sha256", s->r->config_sha256,
                     "plan", cp ? plan_definition_json(cp) : json_null(), "from",
                     side_json(s->live ? s->live->name : NULL, s->live, NULL, 0), "to",
                     side_json(to, tov, targets, n));
}

/* What a deploy request adds to its audit: the emergency (the window it went through, NULL when
 * none was in force, and the reason), the ticket and the risk. */
static void audit_governance(json_t *audit, const struct rollout_deploy_req *req,
                             const struct config_freeze *frozen, int64_t until)
{
    if (req->emergency) {
        json_object_set_new(audit, "emergency", json_true());
        json_object_set_new(audit, "freeze", frozen ? json_string(frozen->name) : json_null());
        if (frozen != NULL) {
            char t[32];
            json_object_set_new(audit, "freeze_until",
                                json_string(freeze_time_format(until, t, sizeof(t))));
        }
        json_object_set_new(audit, "reason", json_string(req->reason ? req->reason : ""));
    }
    if (req->ticket != NULL)
        json_object_set_new(audit, "ticket", json_string(req->ticket));
    if (req->risk != NULL)
        json_object_set_new(audit, "risk", json_string(req->risk));
}

static char *audit_text(json_t *audit)
{
    char *t = json_dumps(audit, JSON_COMPACT);
    char *d = xasprintf("{\"audit\":%s}", t ? t : "null");
    free(t);
    return d;
}

/* The plan preview of deploying version to s with cp, at the service's request rate now. */
static json_t *preview_of(struct service *s, const char *version, const struct config_plan *cp)
{
    /* The request rate: both roles' answers since this engine started (the counters start with
     * the workers), once there is a little history to average. */
    struct analysis_sample now[ROUTE_ROLES];
    sample_roles(s, now);
    double secs = (double)(store_now_ms() - s->r->started_ms) / 1000.0, rate = -1;
    uint64_t reqs = 0;
    for (int k = 0; k < ROUTE_ROLES; k++)
        reqs += now[k].requests;
    if (secs >= 5 && reqs > 0)
        rate = (double)reqs / secs;
    struct preview_in in = {
        .cfg = s->r->cfg,
        .svc = s->cfg,
        .plan = cp,
        .from = s->live ? s->live->name : NULL,
        .to = version,
        .rate = rate,
        .now = (int64_t)time(NULL),
    };
    return preview_json(&in);
}

/* ---------------------------------------------------------------- admission ----------------- */

/* A store the daemon no longer trusts (deleted, replaced, failing, or opened in memory in place
 * of a corrupt file: store_guard_why) takes no new change: its record could not survive a
 * restart. err says why; -EROFS (the API answers 503). */
static int refuse_store(const struct rollout *r, char *err, size_t errlen)
{
    const char *why = store_guard_why(r->st);
    if (why == NULL)
        return 0;
    snprintf(err, errlen,
             "no changes are taken: %s. Traffic stays as it is; restart the daemon to restore the "
             "store from its backup (cutover check --store tells what is wrong)",
             why);
    return -EROFS;
}

/* The change machine admits a new change only when none runs and no end waits for the store;
 * err says why not. */
static int refuse_busy(const struct service *s, enum change_input in, char *err, size_t errlen)
{
    struct change_facts f = facts_of(s);
    struct change_rule rule = change_next(s->ch.state, in, &f);
    char why[600];
    if (rule.effect != CHANGE_REFUSE)
        return 0;
    if (change_unsaved_why(&s->ch, why, sizeof(why)))
        snprintf(err, errlen, "no new change on %s until the last one is saved: %s", s->cfg->name,
                 why);
    else
        snprintf(err, errlen, "change %lld is already running on %s: %s", (long long)s->ch.id,
                 s->cfg->name, rule.why);
    return 1;
}

int rollout_deploy(struct rollout *r, const struct rollout_deploy_req *req, rollout_wait_cb cb,
                   void *ctx, int64_t *change_id, char *err, size_t errlen)
{
    struct service *s = rollout_find(r, req->service);
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%s'", req->service ? req->service : "");
        return -ENOENT;
    }
    int refused = refuse_store(r, err, errlen);
    if (refused < 0)
        return refused;
    if (req->version == NULL || !text_is_name(req->version, strlen(req->version))) {
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
    if (req->emergency && (req->reason == NULL || req->reason[0] == '\0')) {
        snprintf(err, errlen, "reason: an emergency deploy needs a reason");
        return -EINVAL;
    }
    if (req->risk != NULL && strcmp(req->risk, "low") != 0 && strcmp(req->risk, "medium") != 0 &&
        strcmp(req->risk, "high") != 0) {
        snprintf(err, errlen, "risk: expected low, medium or high, got '%.32s'", req->risk);
        return -EINVAL;
    }
    int prc = policy_check(s->cfg, cp, req->risk, req->ticket, err, errlen);
    if (prc < 0)
        return prc;
    if (req->at_ms > 0 && req->scheduled_id == 0 && req->hold) {
        /* A hold taken unattended at some later time is a hold nobody watches. */
        snprintf(err, errlen,
                 "hold: not with at (a scheduled deploy does not hold); hold and "
                 "release by hand around it, or deploy --hold at its time");
        return -EINVAL;
    }
    if (req->at_ms > 0 && req->scheduled_id == 0) {
        /* deploy --at: checked as far as it can be now; its time decides the rest. */
        if (req->wait) {
            snprintf(err, errlen, "wait: a scheduled deploy answers once it is recorded");
            return -EINVAL;
        }
        int rc = schedule_add(s, req, cp ? cp->name : NULL, change_id, err, errlen);
        if (rc == 0 && cb != NULL)
            cb(ctx, *change_id);
        return rc;
    }
    /* A freeze window stops deploys, never rollbacks (start_rollback does not ask). */
    int64_t until = 0;
    const struct config_freeze *frozen =
        freeze_find_active(r->cfg, s->cfg->name, (int64_t)time(NULL), &until);
    if (frozen != NULL && !req->emergency) {
        char t[32];
        snprintf(err, errlen,
                 "%s is frozen by window '%s' until %s; no deploy until then, unless it is an "
                 "emergency (deploy --emergency --reason TEXT)",
                 s->cfg->name, frozen->name, freeze_time_format(until, t, sizeof(t)));
        log_info("deploy refused: freeze window", "service", s->cfg->name, "window", frozen->name,
                 "actor", req->actor);
        return -EBUSY;
    }
    if (refuse_busy(s, CHANGE_IN_DEPLOY, err, errlen))
        return -EBUSY;
    if (req->hold &&
        (cp != NULL || (managed && rolling_applies(s)) || s->cfg->protocol == CONFIG_PROTO_TCP)) {
        snprintf(err, errlen,
                 "hold: a deploy holds requests around an instant switch only; %s %s%s",
                 s->cfg->name,
                 s->cfg->protocol == CONFIG_PROTO_TCP ? "is a tcp service (no request to hold)"
                 : cp != NULL                         ? "would follow plan "
                                                      : "replaces its instances in batches",
                 cp != NULL && s->cfg->protocol != CONFIG_PROTO_TCP ? cp->name : "");
        return -EINVAL;
    }
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
        return -EAGAIN;
    }
    /* A plan that compares with a fresh baseline starts it now, just before the new version's
     * instances: both are the same age when users reach them. Refused here, nothing started. */
    int brc = baseline_start(s, cp, err, errlen);
    if (brc < 0)
        return brc;
    int rolling = managed && rolling_applies(s);
    if (rolling) {
        /* Instances start batch by batch; refused here when the first one could not. */
        ms = managed_prepare(s, req->version, 1, err, errlen);
        if (ms == NULL) {
            baseline_end(s, 0);
            return -EINVAL;
        }
        targets = NULL;
        ntargets = 0;
    } else if (managed) {
        /* cutover runs this version: start its instances first (a command that cannot start
         * is refused here, before any change is recorded). */
        int rc = managed_start(s, req->version, &ms, &own, &ntargets, err, errlen);
        if (rc < 0) {
            baseline_end(s, 0);
            return rc;
        }
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
    if (req->emergency) {
        size_t l = strlen(what);
        snprintf(what + l, sizeof(what) - l, "; emergency%s%s", frozen ? " during freeze " : "",
                 frozen ? frozen->name : "");
        log_info("emergency deploy", "service", s->cfg->name, "window", frozen ? frozen->name : "",
                 "actor", req->actor, "reason", req->reason);
    }
    json_t *audit = audit_json(s, cp, req->version, NULL, targets, ntargets);
    audit_governance(audit, req, frozen, until);
    /* The written plan as it stood when the change started: what was promised (owners, Plan B,
     * times), to hold the change against afterwards. */
    if (cp != NULL) {
        json_t *wp = preview_of(s, req->version, cp);
        json_object_set_new(
            audit, "written_plan",
            json_pack("{s:O, s:O, s:O}", "time_to_full_s", json_object_get(wp, "time_to_full_s"),
                      "time_to_rollback_worst_s", json_object_get(wp, "time_to_rollback_worst_s"),
                      "steps", json_object_get(wp, "steps")));
        json_decref(wp);
    }
    char *detail = cp == NULL ? audit_text(audit) : NULL;
    struct change_new cn = {
        .detail = detail,
        .kind = CHANGE_DEPLOY,
        .from = s->live ? s->live->name : NULL,
        .to = req->version,
        .plan = cp ? cp->name : NULL,
        .actor = req->actor,
        .reason = req->reason,
        .message = what,
        .targets = targets,
        .ntargets = ntargets,
        .wait = req->wait,
        .deadline_ms = s->cfg->deploy_timeout_ms,
        .waiter = cb,
        .waiter_ctx = ctx,
        .scheduled_id = req->scheduled_id,
    };
    /* A rolling replacement records its targets as its instances start (targets NULL). */
    int rc = change_record_create(&s->ch, &cn);
    free(detail);
    if (rc < 0) {
        json_decref(audit);
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(r->st));
        managed_retire(ms, 0);
        baseline_end(s, 0);
        store_strv_free(own);
        return -EIO;
    }
    int64_t id = s->ch.id;
    loss_begin(s);
    s->next = version_of(s, req->version, targets, ntargets, 0);
    s->next->ms = ms;
    store_strv_free(own);
    free(s->failed);
    s->failed = NULL;
    log_info("deploy started", "service", s->cfg->name, "version", req->version, "plan",
             cp ? cp->name : "", "actor", req->actor, "reason", req->reason);
    if (cp != NULL)
        plan_create(s, cp, audit);
    json_decref(audit);
    if (rolling)
        rolling_create(s); /* after the plan: its first goal depends on it */
    if (req->hold && s->mode.hold_since_ms != 0) {
        /* An operator's hold stays theirs: the switch must not end it behind their back. */
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "%s is held already (by %s): the requests wait until cutover release, not "
                 "until this switch",
                 s->cfg->name, s->mode.hold_actor ? s->mode.hold_actor : "unknown");
        (void)change_record_event(&s->ch, "hold", msg);
    } else if (req->hold) {
        /* Requests wait from now until the switch (hook_ended releases them, to the new
         * version, or to the old one when the change fails). */
        char herr[256];
        if (mode_hold(s, MODE_HOLD_DEFAULT_MS, req->actor, id, herr, sizeof(herr)) == 0)
            rollout_publish(r);
        else
            (void)change_record_event(&s->ch, "hold", herr);
    }
    *change_id = id;
    return 0;
}

/* ---------------------------------------------------------------- hold and maintenance ------ */

/* The service name names, for an operator's hold or maintenance; err set when none. */
static struct service *mode_service(struct rollout *r, const char *name, char *err, size_t errlen,
                                    int *rc)
{
    struct service *s = rollout_find(r, name);
    *rc = 0;
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%.64s' (cutover status lists them)",
                 name ? name : "");
        *rc = -ENOENT;
        return NULL;
    }
    *rc = refuse_store(r, err, errlen);
    return *rc < 0 ? NULL : s;
}

int rollout_hold(struct rollout *r, const char *service, uint64_t max_ms, const char *actor,
                 char *err, size_t errlen)
{
    int rc;
    struct service *s = mode_service(r, service, err, errlen, &rc);
    if (s == NULL)
        return rc;
    rc = mode_hold(s, max_ms, actor, 0, err, errlen);
    if (rc == 0)
        rollout_publish(r);
    return rc;
}

int rollout_release(struct rollout *r, const char *service, const char *actor, char *err,
                    size_t errlen)
{
    int rc;
    struct service *s = mode_service(r, service, err, errlen, &rc);
    if (s == NULL)
        return rc;
    rc = mode_release(s, actor, NULL, err, errlen);
    if (rc == 0)
        rollout_publish(r);
    return rc;
}

int rollout_maintenance(struct rollout *r, const char *service, int on, const char *message,
                        const char *actor, char *err, size_t errlen)
{
    int rc;
    struct service *s = mode_service(r, service, err, errlen, &rc);
    if (s == NULL)
        return rc;
    rc = mode_maintenance(s, on, message, actor, err, errlen);
    if (rc == 0)
        rollout_publish(r);
    return rc;
}

json_t *rollout_plan_preview(struct rollout *r, const char *service, const char *version,
                             const char *plan, char *err, size_t errlen, int *rc)
{
    struct service *s = rollout_find(r, service);
    *rc = 0;
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%s'", service ? service : "");
        *rc = -ENOENT;
        return NULL;
    }
    if (version == NULL || !text_is_name(version, strlen(version))) {
        snprintf(err, errlen, "version: expected 1-64 characters of A-Z a-z 0-9 . _ -, got '%s'",
                 version ? version : "");
        *rc = -EINVAL;
        return NULL;
    }
    const char *name = plan ? plan : s->cfg->plan;
    const struct config_plan *cp = name ? config_plan_find(r->cfg, name) : NULL;
    if (name != NULL && cp == NULL) {
        snprintf(err, errlen, "plan: no plan named '%s' in the config", name);
        *rc = -ENOENT;
        return NULL;
    }
    return preview_of(s, version, cp);
}

/* Records a rollback change to the previous version and starts waiting for its health. */
static int record_rollback(struct service *s, const char *actor, const char *reason,
                           const char *what, const char *const *targets, size_t n,
                           rollout_wait_cb cb, void *ctx)
{
    json_t *audit = audit_json(s, NULL, s->previous->name, s->previous, targets, n);
    char *detail = audit_text(audit);
    json_decref(audit);
    struct change_new cn = {
        .detail = detail,
        .kind = CHANGE_ROLLBACK,
        .from = s->live ? s->live->name : NULL,
        .to = s->previous->name,
        .actor = actor,
        .reason = reason,
        .message = what,
        .targets = targets,
        .ntargets = n,
        .wait = 1,
        .deadline_ms = s->cfg->deploy_timeout_ms,
        .waiter = cb,
        .waiter_ctx = ctx,
    };
    int rc = change_record_create(&s->ch, &cn);
    free(detail);
    if (rc == 0)
        loss_begin(s);
    return rc;
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
    if (record_rollback(s, actor, reason, what, NULL, 0, cb, ctx) < 0) {
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(s->r->st));
        if (ms != s->previous->ms)
            managed_retire(ms, 0);
        return -EIO;
    }
    s->next = version_of(s, to, NULL, 0, 0);
    s->next->ms = ms;
    log_info("rollback started", "service", s->cfg->name, "to", to, "actor", actor, "reason",
             reason);
    rolling_create(s);
    *change_id = s->ch.id;
    return 0;
}

static int start_rollback(struct service *s, const char *actor, const char *reason,
                          rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err,
                          size_t errlen)
{
    if (refuse_busy(s, CHANGE_IN_ROLLBACK, err, errlen))
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
        struct version *nv = version_of(s, s->previous->name, (const char *const *)own, nown, 0);
        nv->ms = ms;
        version_free(s->previous);
        s->previous = nv;
    }
    char what[512];
    snprintf(what, sizeof(what), "roll back %s from %s to %s%s", s->cfg->name,
             s->live ? s->live->name : "nothing", s->previous->name,
             own ? " (its instances started again)" : "");
    if (record_rollback(s, actor, reason, what, (const char *const *)own, nown, cb, ctx) < 0) {
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(s->r->st));
        store_strv_free(own);
        return -EIO;
    }
    store_strv_free(own);
    log_info("rollback started", "service", s->cfg->name, "to", s->previous->name, "actor", actor,
             "reason", reason);
    *change_id = s->ch.id;
    return 0;
}

int rollout_rollback(struct rollout *r, const char *service, const char *actor, const char *reason,
                     rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err, size_t errlen)
{
    struct service *s = rollout_find(r, service);
    if (s == NULL) {
        snprintf(err, errlen, "unknown service '%s'", service ? service : "");
        return -ENOENT;
    }
    int rc = refuse_store(r, err, errlen);
    if (rc < 0)
        return rc;
    return start_rollback(s, actor, reason, cb, ctx, change_id, err, errlen);
}

/* A managed version's instance crashes in a loop (managed.c reports it through r->on_crash):
 * the change bringing it in fails or rolls back; the live version between changes is a live
 * failure. */
static void on_crash(struct service *s, const char *version, const char *why)
{
    if (!change_running(&s->ch)) {
        if (s->roll == NULL && s->live != NULL && strcmp(s->live->name, version) == 0)
            live_failed(s, why);
        return;
    }
    char msg[1400];
    snprintf(msg, sizeof(msg), "%s %s failed: %s",
             s->ch.kind == CHANGE_DEPLOY ? "deploy of" : "rollback to", version, why);
    if (s->roll != NULL) {
        if (s->next != NULL && strcmp(s->next->name, version) == 0)
            rolling_fail(s, NULL, msg);
        return;
    }
    struct version *to = service_target(s);
    if (to == NULL || strcmp(to->name, version) != 0)
        return;
    if (s->run != NULL) {
        plan_fail(s, STORE_CHANGE_ROLLED_BACK, msg);
        return;
    }
    struct change_facts f = facts_of(s);
    struct change_rule rule;
    char err[256];
    if (change_fire(&s->ch, CHANGE_IN_CRASHED, &f, NULL, &rule, err, sizeof(err)) < 0 ||
        rule.effect != CHANGE_FAIL)
        return;
    log_warn("change failed", "service", s->cfg->name, "reason", msg);
    if (s->ch.kind == CHANGE_DEPLOY) {
        managed_retire(s->next->ms, 0);
        version_free(s->next);
        s->next = NULL;
    }
    change_end(s, STORE_CHANGE_FAILED, msg);
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
        if (r->services[i].ch.id == id && id != 0)
            s = &r->services[i];
    for (size_t i = 0; s == NULL && i < r->nservices; i++) {
        char why[600];
        const struct change *c = &r->services[i].ch;
        if (change_unsaved_id(c) == id && change_unsaved_why(c, why, sizeof(why))) {
            snprintf(err, errlen, "change %lld has ended (%s): %s", (long long)id,
                     change_unsaved_state(c), why);
            return -EBUSY;
        }
    }
    int src = 0;
    if (s == NULL && schedule_action(r, id, action, actor, &src, err, errlen))
        return src;
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
    if (s->run != NULL)
        return plan_action(s, action, actor, all, err, errlen);
    /* An instant switch (or a replacement without a plan): only abort applies. */
    struct change_facts f = facts_of(s);
    int is_abort = strcmp(action, "abort") == 0;
    struct change_rule rule =
        change_next(s->ch.state, is_abort ? CHANGE_IN_ABORT : CHANGE_IN_PROMOTE, &f);
    if (!is_abort || rule.effect == CHANGE_REFUSE) {
        snprintf(err, errlen, "change %lld: %s", (long long)id,
                 rule.why ? rule.why : "only abort applies");
        return -EBUSY;
    }
    if (s->roll != NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "aborted by %s; %s's instances are restored",
                 actor && *actor ? actor : "unknown", s->live->name);
        rolling_fail(s, STORE_CHANGE_ABORTED, msg);
        return 0;
    }
    /* An instant switch still waiting for health: stop waiting, nothing moved. */
    log_info("change aborted", "service", s->cfg->name, "actor", actor);
    if (s->next != NULL)
        managed_retire(s->next->ms, 0);
    version_free(s->next);
    s->next = NULL;
    change_end(s, STORE_CHANGE_ABORTED, "aborted before the switch; traffic never moved");
    return 0;
}

/* ---------------------------------------------------------------- lifecycle ----------------- */

/* A scheduled deploy's time came (rollout/schedule.c): it starts as any deploy does. */
static int start_scheduled(struct service *s, const struct rollout_deploy_req *req, char *err,
                           size_t errlen)
{
    int64_t id;
    return rollout_deploy(s->r, req, NULL, NULL, &id, err, errlen);
}

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
    r->started_ms = store_now_ms();
    r->nservices = cfg->nservices;
    r->services = xcalloc(r->nservices ? r->nservices : 1, sizeof(*r->services));
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        s->r = r;
        s->id = (int)i;
        s->cfg = &cfg->services[i];
        s->planner = plan_ops();
        change_init(&s->ch, loop, s->cfg->name, change_store_sqlite(), st, &hooks, s);
        /* A copy of an end the store refuses, so that a kill -9 does not undo it. */
        char *path = xasprintf("%s/pending-%s.end", cfg->state_dir, s->cfg->name);
        int rc = change_journal_open(&s->ch, path);
        if (rc < 0)
            log_error("cannot open the journal of kept ends; a kill -9 while the store refuses "
                      "an end would lose it",
                      "path", path, "error", strerror(-rc));
        free(path);
    }
    uv_timer_init(loop, &r->sched_timer);
    r->sched_timer.data = r;
    r->start_scheduled = start_scheduled;
    config_digest(cfg->path, r->config_sha256);
    r->on_crash = on_crash;
    r->on_health = on_health_change;
    r->watch_drain = watch_drain;
    r->commit = commit_switch;
    return r;
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
/* The saved progress of a rolling replacement that can resume (a deploy whose first batch
 * started, on a service still configured to replace in batches), or NULL. New reference. */
static json_t *rolling_state_of(struct rollout *r, const struct store_change *c)
{
    struct service *s = rollout_find(r, c->service);
    if (s == NULL || c->kind == NULL || strcmp(c->kind, "deploy") != 0 ||
        s->cfg->strategy.kind != CONFIG_STRATEGY_ROLLING || s->cfg->run.command == NULL ||
        (c->plan != NULL && config_plan_find(r->cfg, c->plan) == NULL))
        return NULL;
    json_t *d = c->detail ? json_loads(c->detail, 0, NULL) : NULL;
    json_t *st = json_object_get(d, "rolling_state");
    if (json_is_object(st))
        json_incref(st);
    else
        st = NULL;
    json_decref(d);
    return st;
}

static int change_resumable(struct rollout *r, const struct store_change *c)
{
    json_t *st = rolling_state_of(r, c);
    if (st != NULL) {
        json_decref(st);
        return 1; /* a replacement resumes at its batch */
    }
    if (rollout_find(r, c->service) == NULL || c->plan == NULL ||
        config_plan_find(r->cfg, c->plan) == NULL)
        return 0;
    /* A plan that replaced instances in batches before its first batch started (no saved
     * progress) says so in its detail (mark_rolling): it is interrupted. */
    json_t *d = c->detail ? json_loads(c->detail, 0, NULL) : NULL;
    int rolling = json_is_true(json_object_get(d, "rolling"));
    json_decref(d);
    return !rolling;
}

/* 1 when address is one of the strings of a. */
static int listed(json_t *a, const char *address)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), address) == 0)
            return 1;
    }
    return 0;
}

/* Rebuilds a rolling replacement found running at start from its saved progress: the old
 * version with the instances still in rotation (any other old instance that still runs was
 * draining: it is stopped after a drain), the new one with those it started, both adopted, not
 * started again; then its plan, if any. Returns 0, or -EINVAL (the caller interrupts it). */
static int resume_rolling(struct service *s, const struct store_change *c, json_t *state,
                          const char *live)
{
    struct rollout *r = s->r;
    size_t nslots = (size_t)(s->cfg->run.instances > 0 ? s->cfg->run.instances : 1);
    json_t *old = json_object_get(state, "old");
    char **all = NULL, **nt = NULL;
    size_t nall = 0, nnt = 0;
    if (!json_is_array(old) || store_version_targets(r->st, s->cfg->name, live, &all, &nall) < 0)
        return -EINVAL;
    const char **keep = xcalloc(nall ? nall : 1, sizeof(*keep));
    size_t nkeep = 0;
    for (size_t i = 0; i < nall; i++)
        if (listed(old, all[i]))
            keep[nkeep++] = all[i];
    s->live = version_of(s, live, keep, nkeep, 1);
    s->live->ms = managed_resume(s, live, all, nall, nslots);
    free(keep);
    for (size_t i = 0; s->live->ms != NULL && i < managed_slots(s->live->ms); i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", managed_slot_port(s->live->ms, i));
        if (managed_slot_used(s->live->ms, i) && !listed(old, addr))
            managed_stop_one(s->live->ms, i, s->cfg->drain_timeout_ms + 500);
    }
    store_strv_free(all);
    if (store_version_targets(r->st, s->cfg->name, c->to_version, &nt, &nnt) < 0)
        nnt = 0;
    s->next = version_of(s, c->to_version, (const char *const *)nt, nnt, 1);
    s->next->ms = managed_resume(s, c->to_version, nt, nnt, nslots);
    store_strv_free(nt);
    change_adopt(&s->ch, c->id, CHANGE_DEPLOY, CHANGE_HEALTH, c->plan != NULL, c->actor);
    if (rolling_resume(s, state) < 0)
        return -EINVAL;
    if (c->plan != NULL && plan_resume(s, c, config_plan_find(r->cfg, c->plan)) < 0)
        return -EINVAL;
    change_record_event(&s->ch, "resumed",
                        "the daemon restarted; the rolling replacement resumes at its batch");
    if (c->plan == NULL)
        change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
    return 0;
}

/* 1 when change id's end is kept by some service (the store refused it): not resumed, not
 * marked interrupted. */
static int kept_end(const struct rollout *r, int64_t id)
{
    for (size_t i = 0; i < r->nservices; i++)
        if (change_unsaved_id(&r->services[i].ch) == id)
            return 1;
    return 0;
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
        for (size_t j = 0; j < nrunning && !keep; j++) {
            if (strcmp(running[j].service, s->cfg->name) != 0 ||
                !change_resumable(s->r, &running[j]) || kept_end(s->r, running[j].id))
                continue;
            const struct config_plan *cp =
                running[j].plan ? config_plan_find(s->r->cfg, running[j].plan) : NULL;
            keep = (running[j].to_version != NULL && strcmp(running[j].to_version, v) == 0) ||
                   baseline_keeps(s, cp, v);
        }
        if (!keep)
            managed_reap(s, v);
    }
    store_strv_free(versions);
}

static void kept_free(const struct rollout *r, char **live, char **prev)
{
    for (size_t i = 0; i < r->nservices; i++) {
        free(live[i]);
        free(prev[i]);
    }
    free(live);
    free(prev);
}

int rollout_start(struct rollout *r, char *err, size_t errlen)
{
    struct store_change *running = NULL;
    size_t nrunning = 0;
    /* Ends the last daemon kept in its journals go to the store first: an operator's abort
     * taken while the store refused it is never undone by a restart. */
    char **kept_live = xcalloc(r->nservices ? r->nservices : 1, sizeof(*kept_live));
    char **kept_prev = xcalloc(r->nservices ? r->nservices : 1, sizeof(*kept_prev));
    for (size_t i = 0; i < r->nservices; i++)
        change_journal_replay(&r->services[i].ch, &kept_live[i], &kept_prev[i]);
    int rc = store_change_list_running(r->st, &running, &nrunning);
    if (rc < 0) {
        snprintf(err, errlen, "store: %s", store_errmsg(r->st));
        return rc;
    }
    for (size_t i = 0; i < nrunning; i++) {
        const char *msg = "the daemon stopped while this change ran; traffic stayed where the "
                          "store last recorded it";
        if (change_resumable(r, &running[i]) || kept_end(r, running[i].id))
            continue; /* a plan resumes where it was, once its service is loaded (below) */
        change_store_interrupt(change_store_sqlite(), r->st, running[i].id, msg);
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
            const char *first = s->cfg->version ? s->cfg->version : CONFIG_INITIAL_VERSION;
            rc = change_record_initial(&s->ch, first, (const char *const *)s->cfg->targets,
                                       s->cfg->ntargets);
            if (rc < 0) {
                snprintf(err, errlen, "store: %s", store_errmsg(r->st));
                store_change_list_free(running, nrunning);
                kept_free(r, kept_live, kept_prev);
                return rc;
            }
            live = xstrdup(first);
        } else if (rc < 0 && rc != -ENOENT) {
            snprintf(err, errlen, "store: %s", store_errmsg(r->st));
            store_change_list_free(running, nrunning);
            kept_free(r, kept_live, kept_prev);
            return rc;
        }
        if (kept_live[i] != NULL) {
            /* The kept end switched versions: serve what it left live. */
            free(live);
            free(prev);
            live = kept_live[i];
            prev = kept_prev[i];
            kept_live[i] = kept_prev[i] = NULL;
        }
        /* A rolling replacement that resumes loads the old version itself (only what is still
         * in rotation, nothing started again). */
        const struct store_change *roll = NULL;
        json_t *roll_state = NULL;
        for (size_t j = 0; j < nrunning && roll == NULL; j++) {
            if (strcmp(running[j].service, s->cfg->name) != 0 || kept_end(r, running[j].id))
                continue;
            if ((roll_state = rolling_state_of(r, &running[j])) != NULL)
                roll = &running[j];
        }
        if (roll == NULL) {
            s->live = version_stored(s, live, 1);
            restore_instances(s, s->live, 1);
        }
        s->previous = version_stored(s, prev, 0);
        restore_instances(s, s->previous, 0);
        if (roll != NULL) {
            if (live != NULL && resume_rolling(s, roll, roll_state, live) == 0) {
                loss_begin(s);
                log_info("rolling replacement resumed", "service", s->cfg->name, "version",
                         roll->to_version);
            } else {
                /* Cannot resume it: interrupted, and the old version made whole as before. */
                change_store_interrupt(change_store_sqlite(), r->st, roll->id,
                                       "the daemon stopped during a rolling replacement whose "
                                       "progress could not be restored; the version that was "
                                       "live is made whole again");
                plan_discard(s);
                rolling_stop(s);
                change_forget(&s->ch);
                version_free(s->live);
                version_free(s->next);
                s->next = NULL;
                s->live = version_stored(s, live, 1);
                restore_instances(s, s->live, 1);
            }
            json_decref(roll_state);
        }
        reap_leftovers(s, running, nrunning);
        for (size_t j = 0; j < nrunning; j++) {
            const struct config_plan *cp =
                running[j].plan ? config_plan_find(r->cfg, running[j].plan) : NULL;
            if (!change_resumable(r, &running[j]) || kept_end(r, running[j].id) ||
                strcmp(running[j].service, s->cfg->name) != 0 || s->ch.id != 0)
                continue;
            /* The canary is loaded (optimistic: it served a moment ago) and its instances
             * adopted before its plan is rebuilt. */
            s->next = version_stored(s, running[j].to_version, 1);
            if (s->next != NULL)
                restore_instances(s, s->next, 1);
            if (plan_resume(s, &running[j], cp) == 0) {
                loss_begin(s); /* the data plane's counters start again with this daemon */
                baseline_resume(s, cp);
            } else {
                const char *msg = "the daemon stopped while this change ran and its plan state "
                                  "could not be restored; traffic is on the stable version";
                change_store_interrupt(change_store_sqlite(), r->st, running[j].id, msg);
                if (s->next != NULL)
                    managed_retire(s->next->ms, 0);
                version_free(s->next);
                s->next = NULL;
            }
        }
        baseline_reap(s); /* kept for a plan that then could not resume */
        if (mode_load(s, err, errlen) < 0) {
            free(live);
            free(prev);
            store_change_list_free(running, nrunning);
            kept_free(r, kept_live, kept_prev);
            return -EIO;
        }
        log_info("service ready", "service", s->cfg->name, "listen", s->cfg->listen, "live",
                 live ? live : "none", "previous", prev ? prev : "none");
        free(live);
        free(prev);
    }
    store_change_list_free(running, nrunning);
    kept_free(r, kept_live, kept_prev);
    schedule_load(r);
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
    r->stopping = 1;
    schedule_stop(r);
    r->open_handles++;
    uv_close((uv_handle_t *)&r->sched_timer, on_handle_closed);
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        struct change_facts f = facts_of(s);
        struct change_rule rule = change_next(s->ch.state, CHANGE_IN_STOP, &f);
        if (s->roll != NULL && rolling_resumable(s)) {
            /* Its progress is saved at every batch: the next daemon resumes it there. */
            if (s->run != NULL) {
                plan_stop(s);
            } else {
                change_record_event(&s->ch, "suspended",
                                    "the daemon stopped; the rolling replacement resumes at its "
                                    "batch on the next start");
                change_forget(&s->ch);
            }
            rolling_stop(s);
        } else if (s->roll != NULL) {
            /* Not resumable (undoing a failure, a rollback, or instances that stop with the
             * daemon): the next start serves the old version whole again. */
            plan_discard(s);
            change_end(s, STORE_CHANGE_INTERRUPTED,
                       "the daemon stopped during a rolling replacement; the next start "
                       "restores the version that was live");
            rolling_stop(s);
        } else if (rule.effect == CHANGE_SUSPEND) {
            plan_stop(s); /* the change stays running: the next start resumes it */
        } else if (rule.effect == CHANGE_INTERRUPT) {
            plan_discard(s);
            change_end(s, STORE_CHANGE_INTERRUPTED,
                       "the daemon stopped while this change ran; traffic stayed on the "
                       "version that was live");
        }
        version_free(s->live);
        version_free(s->previous);
        version_free(s->next);
        version_free(s->baseline); /* its processes: managed_stop_all or the successor */
        s->live = s->previous = s->next = s->baseline = NULL;
        free(s->down);
        free(s->failed);
        s->down = s->failed = NULL;
        mode_free(s);
        r->open_handles += 3;
        change_close(&s->ch, on_handle_closed, r);
    }
}

int rollout_unsaved(const struct rollout *r, char *why, size_t n)
{
    for (size_t i = 0; i < r->nservices; i++) {
        char w[600];
        if (change_unsaved_why(&r->services[i].ch, w, sizeof(w))) {
            snprintf(why, n, "%s: %s; hand over once it is saved", r->services[i].cfg->name, w);
            return 1;
        }
    }
    return 0;
}

int rollout_switching(const struct rollout *r)
{
    for (size_t i = 0; i < r->nservices; i++) {
        const struct service *s = &r->services[i];
        if (s->roll != NULL) {
            if (!rolling_resumable(s))
                return 1; /* short-lived: restoring, rolling back, or before the first batch */
        } else if (change_running(&s->ch) && s->run == NULL) {
            return 1;
        }
    }
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
