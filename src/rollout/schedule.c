#include "rollout/schedule.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/freeze.h"
#include "core/duration.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/rollout_int.h"
#include "store/store.h"

/* The timer never sleeps longer than this: it runs on the monotonic clock, the time asked for
 * is on the wall clock, and the two part when the wall clock is set. */
#define SCHEDULE_RECHECK_MS 60000
/* A start the store refused to record is tried again this soon. */
#define SCHEDULE_RETRY_MS 1000

int schedule_parse_at(const char *text, int64_t now_ms, int64_t *at_ms)
{
    if (text == NULL || *text == '\0')
        return -EINVAL;
    if (text[0] == '+') {
        uint64_t ms;
        if (duration_parse(text + 1, &ms) != 0 || ms == 0)
            return -EINVAL;
        *at_ms = now_ms + (int64_t)ms;
        return 0;
    }
    int64_t secs;
    if (freeze_time_parse(text, &secs) != 0)
        return -EINVAL;
    *at_ms = secs * 1000;
    return 0;
}

static const char *at_text(int64_t at_ms, char *buf, size_t n)
{
    return freeze_time_format(at_ms / 1000, buf, n);
}

static void entry_free(struct schedule_entry *e)
{
    if (e == NULL)
        return;
    json_decref(e->req);
    free(e->waiting);
    free(e);
}

static void on_timer(uv_timer_t *t);

static void arm(struct rollout *r)
{
    int64_t next = INT64_MAX, now = store_now_ms();
    for (size_t i = 0; i < r->nservices; i++)
        if (r->services[i].sched != NULL && r->services[i].sched->at_ms < next)
            next = r->services[i].sched->at_ms;
    if (next == INT64_MAX) {
        uv_timer_stop(&r->sched_timer);
        return;
    }
    int64_t wait = next > now ? next - now : 0;
    if (wait > SCHEDULE_RECHECK_MS)
        wait = SCHEDULE_RECHECK_MS;
    uv_timer_start(&r->sched_timer, on_timer, (uint64_t)wait, 0);
}

/* Ends s's scheduled change as state with msg. Returns 0, or -EIO when the store refused (the
 * entry is kept and the end tried again). */
static int end_entry(struct service *s, const char *state, const char *event, const char *msg)
{
    struct schedule_entry *e = s->sched;
    int rc = change_store_end_other(change_store_sqlite(), s->r->st, e->id, state, event, msg,
                                    CHANGE_WRITE_WAIT_MS);
    if (rc < 0)
        return rc;
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)e->id);
    log_info("scheduled deploy ended", "service", s->cfg->name, "change", idbuf, "state", state,
             "why", msg);
    entry_free(e);
    s->sched = NULL;
    return 0;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The time of s's scheduled change came: it starts as the deploy it asked for. */
static void start_one(struct service *s, int64_t now)
{
    struct schedule_entry *e = s->sched;
    char msg[768], at[32];
    if (now - e->at_ms > SCHEDULE_GRACE_MS) {
        char late[32];
        duration_format((uint64_t)(now - e->at_ms), late, sizeof(late));
        if (e->waiting != NULL)
            snprintf(msg, sizeof(msg), "not started within %s of its time %s: %s", late,
                     at_text(e->at_ms, at, sizeof(at)), e->waiting);
        else
            snprintf(msg, sizeof(msg),
                     "not started: its time %s passed %s ago while the daemon was not running; "
                     "deploy it again when it suits",
                     at_text(e->at_ms, at, sizeof(at)), late);
        end_entry(s, STORE_CHANGE_FAILED, "failed", msg);
        return;
    }
    json_t *jt = json_object_get(e->req, "targets");
    size_t nt = json_array_size(jt);
    const char **targets = xcalloc(nt + 1, sizeof(*targets));
    for (size_t i = 0; i < nt; i++)
        targets[i] = json_string_value(json_array_get(jt, i));
    struct rollout_deploy_req req = {
        .service = s->cfg->name,
        .version = jstr(e->req, "version"),
        .targets = targets,
        .ntargets = nt,
        .plan = jstr(e->req, "plan"),
        .actor = jstr(e->req, "actor"),
        .reason = jstr(e->req, "reason"),
        .emergency = json_is_true(json_object_get(e->req, "emergency")),
        .ticket = jstr(e->req, "ticket"),
        .risk = jstr(e->req, "risk"),
        .scheduled_id = e->id,
    };
    char err[512] = "";
    int rc = s->r->start_scheduled(s, &req, err, sizeof(err));
    free(targets);
    if (rc == 0) {
        entry_free(e);
        s->sched = NULL;
        return;
    }
    if (rc == -EIO)
        return; /* the store refused the start: the entry stays and is tried again */
    if (rc == -EAGAIN) {
        /* Processes of an earlier change are still stopping (seconds, a drain): tried again
         * every second, within the grace. */
        if (e->waiting == NULL)
            log_info("scheduled deploy waits", "service", s->cfg->name, "why", err);
        free(e->waiting);
        e->waiting = xstrdup(err);
        return;
    }
    snprintf(msg, sizeof(msg), "not started at its time %s: %s", at_text(e->at_ms, at, sizeof(at)),
             err);
    end_entry(s, STORE_CHANGE_FAILED, "failed", msg);
}

static void on_timer(uv_timer_t *t)
{
    struct rollout *r = t->data;
    int64_t now = store_now_ms();
    int retry = 0;
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        if (s->sched != NULL && s->sched->at_ms <= now) {
            start_one(s, now);
            retry |= s->sched != NULL && s->sched->at_ms <= now;
        }
    }
    arm(r);
    if (retry)
        uv_timer_start(&r->sched_timer, on_timer, SCHEDULE_RETRY_MS, 0);
}

int schedule_add(struct service *s, const struct rollout_deploy_req *req, const char *plan,
                 int64_t *id, char *err, size_t errlen)
{
    int64_t now = store_now_ms();
    char at[32];
    if (s->sched != NULL) {
        snprintf(err, errlen,
                 "%s already has change %lld scheduled for %s; abort it first (cutover abort %s)",
                 s->cfg->name, (long long)s->sched->id, at_text(s->sched->at_ms, at, sizeof(at)),
                 s->cfg->name);
        return -EBUSY;
    }
    if (req->at_ms <= now) {
        snprintf(err, errlen, "at: %s is not in the future", at_text(req->at_ms, at, sizeof(at)));
        return -EINVAL;
    }
    if (req->at_ms - now > SCHEDULE_MAX_AHEAD_MS) {
        snprintf(err, errlen, "at: %s is more than a year ahead",
                 at_text(req->at_ms, at, sizeof(at)));
        return -EINVAL;
    }
    json_t *targets = json_array();
    for (size_t i = 0; i < req->ntargets; i++)
        json_array_append_new(targets, json_string(req->targets[i]));
    json_t *q = json_pack("{s:s, s:I, s:s, s:o, s:s?, s:s?, s:s?, s:b, s:s?, s:s?}", "at",
                          at_text(req->at_ms, at, sizeof(at)), "at_ms", (json_int_t)req->at_ms,
                          "version", req->version, "targets", targets, "plan", plan, "actor",
                          req->actor, "reason", req->reason, "emergency", req->emergency, "ticket",
                          req->ticket, "risk", req->risk);
    json_t *detail = json_pack("{s:O}", "scheduled", q);
    char *text = json_dumps(detail, JSON_COMPACT);
    json_decref(detail);
    char what[512];
    snprintf(what, sizeof(what), "deploy %s to %s scheduled for %s%s%s", req->version, s->cfg->name,
             at, plan ? " with plan " : "", plan ? plan : "");
    struct change_new cn = {
        .kind = CHANGE_DEPLOY,
        .from = s->live ? s->live->name : NULL,
        .to = req->version,
        .plan = plan,
        .actor = req->actor,
        .reason = req->reason,
        .message = what,
        .detail = text,
    };
    int rc = change_record_scheduled(&s->ch, &cn, id);
    free(text);
    if (rc < 0) {
        json_decref(q);
        snprintf(err, errlen, "could not record the change: %s", store_errmsg(s->r->st));
        return -EIO;
    }
    s->sched = xcalloc(1, sizeof(*s->sched));
    s->sched->id = *id;
    s->sched->at_ms = req->at_ms;
    s->sched->req = q;
    log_info("deploy scheduled", "service", s->cfg->name, "version", req->version, "at", at,
             "actor", req->actor);
    arm(s->r);
    return 0;
}

void schedule_load(struct rollout *r)
{
    struct store_change *v = NULL;
    size_t n = 0;
    if (store_change_list_scheduled(r->st, &v, &n) < 0) {
        log_error("cannot read the scheduled changes", "error", store_errmsg(r->st));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct service *s = NULL;
        for (size_t k = 0; k < r->nservices && s == NULL; k++)
            if (strcmp(r->services[k].cfg->name, v[i].service) == 0)
                s = &r->services[k];
        json_t *d = v[i].detail ? json_loads(v[i].detail, 0, NULL) : NULL;
        json_t *q = json_object_get(d, "scheduled");
        const char *why = NULL;
        if (s == NULL)
            why = "not started: its service is no longer in the config";
        else if (!json_is_integer(json_object_get(q, "at_ms")))
            why = "not started: its record has no time";
        else if (s->sched != NULL)
            why = "not started: another deploy of the service is scheduled";
        if (why != NULL) {
            change_store_end_other(change_store_sqlite(), r->st, v[i].id, STORE_CHANGE_FAILED,
                                   "failed", why, -1);
            json_decref(d);
            continue;
        }
        s->sched = xcalloc(1, sizeof(*s->sched));
        s->sched->id = v[i].id;
        s->sched->at_ms = json_integer_value(json_object_get(q, "at_ms"));
        s->sched->req = json_incref(q);
        json_decref(d);
    }
    store_change_list_free(v, n);
    arm(r);
}

int schedule_action(struct rollout *r, int64_t id, const char *action, const char *actor, int *rc,
                    char *err, size_t errlen)
{
    struct service *s = NULL;
    for (size_t i = 0; i < r->nservices && s == NULL; i++)
        if (r->services[i].sched != NULL && r->services[i].sched->id == id)
            s = &r->services[i];
    if (s == NULL)
        return 0;
    char at[32], msg[256];
    at_text(s->sched->at_ms, at, sizeof(at));
    if (strcmp(action, "abort") != 0) {
        snprintf(err, errlen,
                 "change %lld is scheduled for %s and has not started; only abort "
                 "applies",
                 (long long)id, at);
        *rc = -EBUSY;
        return 1;
    }
    snprintf(msg, sizeof(msg), "cancelled by %s before its time %s", actor ? actor : "unknown", at);
    if (end_entry(s, STORE_CHANGE_ABORTED, "aborted", msg) < 0) {
        snprintf(err, errlen, "could not record the cancellation: %s", store_errmsg(r->st));
        *rc = -EIO;
        return 1;
    }
    arm(r);
    *rc = 0;
    return 1;
}

json_t *schedule_json(const struct service *s)
{
    if (s->sched == NULL)
        return json_null();
    const json_t *q = s->sched->req;
    return json_pack("{s:I, s:s?, s:s?, s:s?, s:s?}", "id", (json_int_t)s->sched->id, "version",
                     jstr(q, "version"), "at", jstr(q, "at"), "actor", jstr(q, "actor"), "plan",
                     jstr(q, "plan"));
}

void schedule_stop(struct rollout *r)
{
    uv_timer_stop(&r->sched_timer);
    for (size_t i = 0; i < r->nservices; i++) {
        entry_free(r->services[i].sched);
        r->services[i].sched = NULL;
    }
}
