/* One change of one service: the transition table and the change's records (see change.h).
 * Control loop only. */
#include "rollout/change.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "store/store.h"

/* ---------------------------------------------------------------- the table ----------------- */

static const char *const state_names[CHANGE_NSTATES] = {
    "idle", "health", "running", "paused", "holding", "unsaved",
};

static const char *const input_names[CHANGE_NINPUTS] = {
    "deploy",    "rollback",    "live_failed", "healthy", "deadline",    "crashed",
    "step_done", "gate_failed", "hold",        "promote", "promote_all", "pause",
    "resume",    "abort",       "approve",     "stop",    "saved",
};

static const char *const effect_names[] = {
    "refuse", "nothing", "start", "begin", "switch",  "fail",    "undo",      "advance",
    "commit", "freeze",  "hold",  "thaw",  "approve", "suspend", "interrupt", "forget",
};

const char *change_state_name(enum change_state st)
{
    return (unsigned)st < CHANGE_NSTATES ? state_names[st] : "?";
}

const char *change_input_name(enum change_input in)
{
    return (unsigned)in < CHANGE_NINPUTS ? input_names[in] : "?";
}

const char *change_effect_name(enum change_effect e)
{
    return (unsigned)e < sizeof(effect_names) / sizeof(effect_names[0]) ? effect_names[e] : "?";
}

enum change_state change_state_parse(const char *name)
{
    for (int i = 0; name != NULL && i < CHANGE_NSTATES; i++)
        if (strcmp(name, state_names[i]) == 0)
            return (enum change_state)i;
    return CHANGE_STEP;
}

static struct change_rule rule(enum change_effect e, enum change_state next, const char *event)
{
    return (struct change_rule){.effect = e, .next = next, .event = event};
}

static struct change_rule refuse(enum change_state st, const char *why)
{
    return (struct change_rule){.effect = CHANGE_REFUSE, .next = st, .why = why};
}

/* Users go back to the stable version, unless they have seen the target and the stable one is
 * not healthy: flipping everyone to a broken version is worse than holding the split. */
static struct change_rule undo(const struct change_facts *f)
{
    if (f->user_traffic && !f->stable_healthy)
        return rule(CHANGE_HOLD, CHANGE_HOLDING, "holding");
    return rule(CHANGE_UNDO, CHANGE_IDLE, NULL);
}

/* What a person's action on a change that has not started its plan gets. */
static int person_refused(enum change_state st, const struct change_facts *f, const char *action,
                          struct change_rule *out)
{
    if (st == CHANGE_IDLE) {
        *out = refuse(st, "no change is running");
        return 1;
    }
    if (st == CHANGE_UNSAVED) {
        *out = refuse(st, "the change has ended; its record is not saved yet");
        return 1;
    }
    if (!f->plan) {
        *out = refuse(st, "the change is an instant switch, not a plan: only abort applies");
        return 1;
    }
    if (st == CHANGE_HEALTH) {
        (void)action;
        *out = refuse(st, "the new version is not healthy yet; nothing to do before its "
                          "first step");
        return 1;
    }
    return 0;
}

/* The one place that holds the transitions. Ends (switch, fail, undo, commit, interrupt) name
 * CHANGE_IDLE: change_record_end decides between IDLE and UNSAVED. */
struct change_rule change_next(enum change_state st, enum change_input in,
                               const struct change_facts *f)
{
    const int active =
        st == CHANGE_HEALTH || st == CHANGE_STEP || st == CHANGE_PAUSED || st == CHANGE_HOLDING;
    struct change_rule r;
    switch (in) {
    case CHANGE_IN_DEPLOY:
    case CHANGE_IN_ROLLBACK:
        if (st == CHANGE_IDLE)
            return rule(CHANGE_START, CHANGE_HEALTH, NULL);
        if (st == CHANGE_UNSAVED)
            return refuse(st, "no new change until the last one is saved");
        if (in == CHANGE_IN_ROLLBACK && f->plan)
            return refuse(st, "a plan is running: use cutover abort, which sends its users "
                              "back to the stable version");
        return refuse(st, "a change is already running");
    case CHANGE_IN_LIVE_FAILED:
        /* Only between changes: during one, its own gates and deadlines decide. */
        if (st == CHANGE_IDLE && f->previous_running)
            return rule(CHANGE_START, CHANGE_HEALTH, NULL);
        return rule(CHANGE_NOTHING, st, NULL);
    case CHANGE_IN_HEALTHY:
        if (st != CHANGE_HEALTH)
            return rule(CHANGE_NOTHING, st, NULL);
        return f->plan ? rule(CHANGE_BEGIN, CHANGE_STEP, "healthy")
                       : rule(CHANGE_SWITCH, CHANGE_IDLE, NULL);
    case CHANGE_IN_DEADLINE:
        if (st == CHANGE_HEALTH)
            return rule(CHANGE_FAIL, CHANGE_IDLE, NULL);
        return active ? undo(f) : rule(CHANGE_NOTHING, st, NULL);
    case CHANGE_IN_CRASHED:
        if (st == CHANGE_HEALTH)
            return rule(CHANGE_FAIL, CHANGE_IDLE, NULL);
        /* A crashing target is no place to hold users: undo even when the stable version is
         * not healthy either (the change cannot serve them better). */
        return active ? rule(CHANGE_UNDO, CHANGE_IDLE, NULL) : rule(CHANGE_NOTHING, st, NULL);
    case CHANGE_IN_STEP_DONE:
        if (st != CHANGE_STEP)
            return rule(CHANGE_NOTHING, st, NULL);
        return f->last_step ? rule(CHANGE_COMMIT, CHANGE_IDLE, NULL)
                            : rule(CHANGE_ADVANCE, CHANGE_STEP, NULL);
    case CHANGE_IN_GATE_FAILED:
        if (st != CHANGE_STEP)
            return rule(CHANGE_NOTHING, st, NULL);
        if (f->hold_on_failure)
            return rule(CHANGE_HOLD, CHANGE_HOLDING, "holding");
        return undo(f);
    case CHANGE_IN_HOLD:
        if (st != CHANGE_STEP)
            return rule(CHANGE_NOTHING, st, NULL);
        return rule(CHANGE_HOLD, CHANGE_HOLDING, NULL);
    case CHANGE_IN_PROMOTE:
        if (person_refused(st, f, "promote", &r))
            return r;
        if (f->step == CHANGE_STEP_APPROVAL)
            return refuse(st, "the step waits for approval: use cutover approve");
        if (f->step == CHANGE_STEP_TEST)
            return refuse(st, "the step is a test; it cannot be promoted past");
        return f->last_step ? rule(CHANGE_COMMIT, CHANGE_STEP, NULL)
                            : rule(CHANGE_ADVANCE, CHANGE_STEP, NULL);
    case CHANGE_IN_PROMOTE_ALL:
        if (person_refused(st, f, "promote", &r))
            return r;
        if (f->approvals_short)
            return refuse(st, "a step needs approval by its approvers; promote --all does not "
                              "skip approvals");
        return rule(CHANGE_COMMIT, CHANGE_STEP, "promoted");
    case CHANGE_IN_PAUSE:
        if (person_refused(st, f, "pause", &r))
            return r;
        if (st == CHANGE_PAUSED)
            return refuse(st, "already paused");
        return rule(CHANGE_FREEZE, CHANGE_PAUSED, "paused");
    case CHANGE_IN_RESUME:
        if (person_refused(st, f, "resume", &r))
            return r;
        if (st == CHANGE_STEP)
            return refuse(st, "not paused");
        return rule(CHANGE_THAW, CHANGE_STEP, "resumed");
    case CHANGE_IN_ABORT:
        if (st == CHANGE_IDLE)
            return refuse(st, "no change is running");
        if (st == CHANGE_UNSAVED)
            return refuse(st, "the change has ended; its record is not saved yet");
        if (st == CHANGE_HEALTH)
            return rule(CHANGE_FAIL, CHANGE_IDLE, NULL);
        return undo(f);
    case CHANGE_IN_APPROVE:
        if (person_refused(st, f, "approve", &r))
            return r;
        if (st != CHANGE_STEP || f->step != CHANGE_STEP_APPROVAL)
            return refuse(st, "the change is not waiting for an approval");
        return rule(CHANGE_APPROVE, CHANGE_STEP, NULL);
    case CHANGE_IN_STOP:
        if (!active)
            return rule(CHANGE_NOTHING, st, NULL);
        if (f->plan && f->resumable)
            return rule(CHANGE_SUSPEND, CHANGE_IDLE, NULL);
        return rule(CHANGE_INTERRUPT, CHANGE_IDLE, NULL);
    case CHANGE_IN_SAVED:
        if (st != CHANGE_UNSAVED)
            return rule(CHANGE_NOTHING, st, NULL);
        return rule(CHANGE_FORGET, CHANGE_IDLE, NULL);
    }
    return refuse(st, "unknown input");
}

/* Effects whose state the end's record decides (IDLE, or UNSAVED when the store refused). */
static int effect_ends(enum change_effect e)
{
    return e == CHANGE_SWITCH || e == CHANGE_FAIL || e == CHANGE_UNDO || e == CHANGE_INTERRUPT;
}

/* ---------------------------------------------------------------- the SQLite store ---------- */

static int sq_begin(void *ctx, int wait_ms)
{
    return wait_ms < 0 ? store_begin(ctx) : store_begin_within(ctx, wait_ms);
}

static int sq_commit(void *ctx)
{
    return store_commit(ctx);
}

static void sq_rollback(void *ctx)
{
    store_rollback(ctx);
}

static int sq_insert(void *ctx, struct store_change *c)
{
    return store_change_insert(ctx, c);
}

static int sq_update(void *ctx, int64_t id, const char *state, const char *message)
{
    return store_change_update(ctx, id, state, message);
}

static int sq_detail(void *ctx, int64_t id, const char *json)
{
    return store_change_set_detail(ctx, id, json);
}

static int sq_event(void *ctx, int64_t id, const char *type, const char *message)
{
    return store_event_add(ctx, id, type, message);
}

static int sq_live(void *ctx, const char *service, const char *live, const char *previous)
{
    return store_service_set(ctx, service, live, previous);
}

static int sq_targets(void *ctx, const char *service, const char *version, const char *const *t,
                      size_t n)
{
    return store_version_put(ctx, service, version, t, n);
}

static int sq_merge(void *ctx, int64_t id, const char *key, const char *value)
{
    struct store_change sc;
    int rc = store_change_get(ctx, id, &sc);
    if (rc < 0)
        return rc;
    json_t *d = sc.detail ? json_loads(sc.detail, 0, NULL) : NULL;
    store_change_done(&sc);
    if (!json_is_object(d)) {
        json_decref(d);
        d = json_object();
    }
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    json_object_set_new(d, key, v ? v : json_null());
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    rc = store_change_set_detail(ctx, id, text);
    free(text);
    return rc;
}

static const char *sq_errmsg(void *ctx)
{
    return store_errmsg(ctx);
}

static int sq_start_scheduled(void *ctx, int64_t id, const char *from, const char *message)
{
    return store_change_start_scheduled(ctx, id, from, message);
}

static const struct change_store sqlite_ops = {
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .insert = sq_insert,
    .update = sq_update,
    .detail = sq_detail,
    .event = sq_event,
    .live = sq_live,
    .targets = sq_targets,
    .merge = sq_merge,
    .start_scheduled = sq_start_scheduled,
    .errmsg = sq_errmsg,
};

const struct change_store *change_store_sqlite(void)
{
    return &sqlite_ops;
}

/* ---------------------------------------------------------------- one change ---------------- */

/* A refused end is written again after 250 ms, then twice as long each time, at most every 5 s.
 * A retry waits at most SAVE_RETRY_WAIT_MS for another process's write lock: the timer is the
 * wait, the control loop (API, health checks, plans of other services) must not stall. */
#define SAVE_RETRY_FIRST_MS 250
#define SAVE_RETRY_MAX_MS 5000
#define SAVE_RETRY_WAIT_MS 50
/* Every write of a running change waits at most this long for another process's write lock:
 * a store that is locked refuses at once (the step is not taken, the end is kept and retried),
 * and timers, gates, rollbacks and the admin API never stall behind it. */
#define WRITE_WAIT_MS CHANGE_WRITE_WAIT_MS

/* The end of a change that the store refused. Owns its strings. */
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

static const char *errmsg(const struct change *c)
{
    return c->store->errmsg(c->store_ctx);
}

static void on_kick(uv_timer_t *t)
{
    struct change *c = t->data;
    if (c->hooks && c->hooks->evaluate)
        c->hooks->evaluate(c->hooks_ctx, c);
}

static void on_deadline(uv_timer_t *t)
{
    struct change *c = t->data;
    if (c->id != 0 && c->hooks && c->hooks->deadline)
        c->hooks->deadline(c->hooks_ctx, c);
}

void change_init(struct change *c, uv_loop_t *loop, const char *service,
                 const struct change_store *store, void *store_ctx,
                 const struct change_hooks *hooks, void *hooks_ctx)
{
    memset(c, 0, sizeof(*c));
    c->service = service;
    c->store = store;
    c->store_ctx = store_ctx;
    c->hooks = hooks;
    c->hooks_ctx = hooks_ctx;
    c->state = CHANGE_IDLE;
    c->journal_fd = -1;
    uv_timer_init(loop, &c->deadline);
    uv_timer_init(loop, &c->kick);
    uv_timer_init(loop, &c->save_retry);
    c->deadline.data = c;
    c->kick.data = c;
    c->save_retry.data = c;
}

int change_running(const struct change *c)
{
    return c->state != CHANGE_IDLE && c->state != CHANGE_UNSAVED;
}

void change_set_state(struct change *c, enum change_state st)
{
    c->state = st;
}

int change_fire(struct change *c, enum change_input in, const struct change_facts *f,
                const char *msg, struct change_rule *out, char *err, size_t errlen)
{
    struct change_rule r = change_next(c->state, in, f);
    if (out != NULL)
        *out = r;
    if (r.effect == CHANGE_REFUSE) {
        snprintf(err, errlen, "%s", r.why);
        return -EBUSY;
    }
    if (r.effect == CHANGE_NOTHING)
        return 0;
    /* Record first: a transition the store refused is not acted on. */
    if (r.event != NULL && c->id != 0 && change_record_event(c, r.event, msg) < 0) {
        snprintf(err, errlen, "could not record the change: %s", errmsg(c));
        return -EIO;
    }
    if (!effect_ends(r.effect))
        c->state = r.next;
    return 0;
}

/* The row of change n of c's service, in state (its strings borrowed from n). */
static struct store_change row_of(const struct change *c, const struct change_new *n,
                                  const char *state)
{
    struct store_change sc = {0};
    sc.service = (char *)c->service;
    sc.kind = n->kind == CHANGE_DEPLOY ? "deploy" : "rollback";
    sc.from_version = (char *)n->from;
    sc.to_version = (char *)n->to;
    sc.plan = (char *)n->plan;
    sc.actor = (char *)(n->actor && *n->actor ? n->actor : "unknown");
    sc.reason = (char *)n->reason;
    sc.state = (char *)state;
    sc.message = (char *)n->message;
    return sc;
}

int change_record_create(struct change *c, const struct change_new *n)
{
    struct store_change sc = row_of(c, n, STORE_CHANGE_RUNNING);
    const struct change_store *st = c->store;
    int rc = st->begin(c->store_ctx, WRITE_WAIT_MS);
    if (rc == 0 && n->targets != NULL)
        rc = st->targets(c->store_ctx, c->service, n->to, n->targets, n->ntargets);
    if (rc == 0 && n->scheduled_id > 0) {
        sc.id = n->scheduled_id;
        rc = st->start_scheduled(c->store_ctx, sc.id, n->from, n->message);
    } else if (rc == 0) {
        rc = st->insert(c->store_ctx, &sc);
    }
    if (rc == 0 && n->detail != NULL)
        rc = st->detail(c->store_ctx, sc.id, n->detail);
    if (rc == 0)
        rc =
            st->event(c->store_ctx, sc.id, n->scheduled_id > 0 ? "started" : "created", n->message);
    if (rc == 0)
        rc = st->commit(c->store_ctx);
    if (rc < 0) {
        st->rollback(c->store_ctx);
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    c->id = sc.id;
    free(c->actor);
    c->actor = xstrdup(sc.actor);
    c->kind = n->kind;
    c->plan = n->plan != NULL;
    c->wait = n->wait;
    c->waiter = n->waiter;
    c->waiter_ctx = n->waiter_ctx;
    c->state = CHANGE_HEALTH;
    change_wait_health(c, n->deadline_ms);
    return 0;
}

int change_record_scheduled(struct change *c, const struct change_new *n, int64_t *id)
{
    struct store_change sc = row_of(c, n, STORE_CHANGE_SCHEDULED);
    const struct change_store *st = c->store;
    int rc = st->begin(c->store_ctx, WRITE_WAIT_MS);
    if (rc == 0)
        rc = st->insert(c->store_ctx, &sc);
    if (rc == 0 && n->detail != NULL)
        rc = st->detail(c->store_ctx, sc.id, n->detail);
    if (rc == 0)
        rc = st->event(c->store_ctx, sc.id, "scheduled", n->message);
    if (rc == 0)
        rc = st->commit(c->store_ctx);
    if (rc < 0) {
        st->rollback(c->store_ctx);
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    *id = sc.id;
    return 0;
}

void change_adopt(struct change *c, int64_t id, enum change_kind kind, enum change_state st,
                  int plan, const char *actor)
{
    free(c->actor);
    c->actor = actor ? xstrdup(actor) : NULL;
    c->id = id;
    c->kind = kind;
    c->plan = plan;
    c->wait = 1;
    c->state = st;
}

/* One write in a transaction that waits WRITE_WAIT_MS at most for the lock. */
enum one_write { ONE_EVENT, ONE_DETAIL, ONE_LIVE, ONE_TARGETS };

static int write_one(struct change *c, enum one_write what, int64_t id, const char *a,
                     const char *b, const char *const *t, size_t n)
{
    const struct change_store *st = c->store;
    void *x = c->store_ctx;
    int rc = st->begin(x, WRITE_WAIT_MS);
    if (rc == 0) {
        switch (what) {
        case ONE_EVENT:
            rc = st->event(x, id, a, b);
            break;
        case ONE_DETAIL:
            rc = st->detail(x, id, a);
            break;
        case ONE_LIVE:
            rc = st->live(x, c->service, a, b);
            break;
        case ONE_TARGETS:
            rc = st->targets(x, c->service, a, t, n);
            break;
        }
    }
    if (rc == 0)
        rc = st->commit(x);
    if (rc < 0) {
        st->rollback(x);
        return -EIO;
    }
    return 0;
}

int change_record_event(struct change *c, const char *type, const char *msg)
{
    if (c->id == 0)
        return 0;
    log_info(msg, "service", c->service, "event", type);
    if (write_one(c, ONE_EVENT, c->id, type, msg, NULL, 0) < 0) {
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    return 0;
}

int change_record_event_of(struct change *c, int64_t id, const char *type, const char *msg)
{
    return write_one(c, ONE_EVENT, id, type, msg, NULL, 0);
}

int change_record_detail(struct change *c, const char *json)
{
    if (c->id == 0)
        return 0;
    if (write_one(c, ONE_DETAIL, c->id, json, NULL, NULL, 0) < 0) {
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    return 0;
}

int change_record_merge(struct change *c, int64_t id, const char *key, json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    const struct change_store *st = c->store;
    int rc = st->begin(c->store_ctx, WRITE_WAIT_MS);
    if (rc == 0)
        rc = st->merge(c->store_ctx, id, key, text);
    if (rc == 0)
        rc = st->commit(c->store_ctx);
    if (rc < 0)
        st->rollback(c->store_ctx);
    free(text);
    return rc < 0 ? -EIO : 0;
}

int change_record_live(struct change *c, const char *live, const char *previous)
{
    if (write_one(c, ONE_LIVE, 0, live, previous, NULL, 0) < 0) {
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    return 0;
}

int change_record_initial(struct change *c, const char *name, const char *const *t, size_t n)
{
    const struct change_store *st = c->store;
    int rc = st->begin(c->store_ctx, -1);
    if (rc == 0)
        rc = st->targets(c->store_ctx, c->service, name, t, n);
    if (rc == 0)
        rc = st->live(c->store_ctx, c->service, name, NULL);
    if (rc == 0)
        rc = st->commit(c->store_ctx);
    if (rc < 0) {
        st->rollback(c->store_ctx);
        return -EIO;
    }
    return 0;
}

int change_store_interrupt(const struct change_store *ops, void *ctx, int64_t id, const char *msg)
{
    /* At start: nothing else waits on the loop yet, so the store's full busy timeout. */
    return change_store_end_other(ops, ctx, id, STORE_CHANGE_INTERRUPTED, "interrupted", msg, -1);
}

int change_store_end_other(const struct change_store *ops, void *ctx, int64_t id, const char *state,
                           const char *event, const char *msg, int wait_ms)
{
    int rc = ops->begin(ctx, wait_ms);
    if (rc == 0)
        rc = ops->update(ctx, id, state, msg);
    if (rc == 0)
        rc = ops->event(ctx, id, event, msg);
    if (rc == 0)
        rc = ops->commit(ctx);
    if (rc < 0) {
        ops->rollback(ctx);
        return -EIO;
    }
    return 0;
}

int change_record_targets(struct change *c, const char *version, const char *const *t, size_t n)
{
    if (write_one(c, ONE_TARGETS, 0, version, NULL, t, n) < 0) {
        log_error("store write failed", "service", c->service, "error", errmsg(c));
        return -EIO;
    }
    return 0;
}

/* Writes the end u in one transaction; a late write also notes when the change really ended
 * and why its record waited. wait_ms < 0: the store's usual busy timeout. */
static int unsaved_write(struct change *c, const struct change_unsaved *u, int wait_ms)
{
    const struct change_store *st = c->store;
    void *x = c->store_ctx;
    int rc = st->begin(x, wait_ms);
    if (rc == 0 && u->detail != NULL)
        rc = st->detail(x, u->change_id, u->detail);
    if (rc == 0 && u->has_switch)
        rc = st->live(x, c->service, u->live, u->previous);
    if (rc == 0)
        rc = st->update(x, u->change_id, u->state, u->message);
    if (rc == 0)
        rc = st->event(x, u->change_id, u->event, u->message);
    if (rc == 0 && u->attempts > 0) {
        char msg[600], when[40];
        json_t *iso = change_iso_time(u->ended_ms);
        snprintf(when, sizeof(when), "%s", json_string_value(iso));
        json_decref(iso);
        snprintf(msg, sizeof(msg),
                 "the change ended (%s) at %s; the store refused the record until now (%s), "
                 "after %u retries",
                 u->state, when, u->error ? u->error : "", u->attempts);
        rc = st->event(x, u->change_id, "saved_late", msg);
    }
    if (rc == 0)
        rc = st->commit(x);
    if (rc < 0)
        st->rollback(x);
    return rc;
}

static void journal_clear(struct change *c);

static void on_save_retry(uv_timer_t *t)
{
    struct change *c = t->data;
    struct change_unsaved *u = c->unsaved;
    char idbuf[24];
    if (u == NULL)
        return;
    u->attempts++;
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
    if (unsaved_write(c, u, SAVE_RETRY_WAIT_MS) == 0) {
        log_info("the end of the change is saved to the store", "service", c->service, "change",
                 idbuf, "state", u->state);
        c->unsaved = NULL;
        unsaved_free(u);
        journal_clear(c);
        struct change_facts none = {0};
        c->state = change_next(c->state, CHANGE_IN_SAVED, &none).next;
        return;
    }
    const char *e = errmsg(c);
    /* Logged when the reason changes, not on every attempt: a lock held for an hour must not
     * fill the log. */
    if (u->error == NULL || strcmp(u->error, e) != 0) {
        log_error("cannot save to the store; retrying", "service", c->service, "change", idbuf,
                  "error", e);
        free(u->error);
        u->error = xstrdup(e);
    }
    u->delay_ms = u->delay_ms * 2 > SAVE_RETRY_MAX_MS ? SAVE_RETRY_MAX_MS : u->delay_ms * 2;
    uv_timer_start(&c->save_retry, on_save_retry, u->delay_ms, 0);
}

/* ---------------------------------------------------------------- the journal --------------- */

/* The journal holds one record: "CUTOVER-END <length>\n" then <length> bytes of JSON, in place
 * at offset 0 of a file whose blocks were allocated at start. A length of 0 means none. */
#define JOURNAL_MAGIC "CUTOVER-END "

int change_journal_open(struct change *c, const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    int rc = posix_fallocate(fd, 0, CHANGE_JOURNAL_BYTES);
    if (rc != 0) {
        close(fd);
        return -rc;
    }
    c->journal_fd = fd;
    return 0;
}

static void journal_clear(struct change *c)
{
    static const char none[] = JOURNAL_MAGIC "0\n";
    if (c->journal_fd < 0)
        return;
    if (pwrite(c->journal_fd, none, sizeof(none) - 1, 0) == -1 || fdatasync(c->journal_fd) == -1)
        log_error("cannot clear the journal of kept ends", "service", c->service, "error",
                  strerror(errno));
}

static json_t *unsaved_to_json(const struct change_unsaved *u, int with_detail)
{
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:I}", "change", (json_int_t)u->change_id, "state",
                          u->state, "event", u->event, "message", u->message, "ended",
                          (json_int_t)u->ended_ms);
    if (u->has_switch) {
        json_object_set_new(o, "live", json_string(u->live));
        json_object_set_new(o, "previous", u->previous ? json_string(u->previous) : json_null());
    }
    if (with_detail && u->detail != NULL)
        json_object_set_new(o, "detail", json_string(u->detail));
    return o;
}

/* Writes the kept end u to the journal and syncs it. The plan's detail goes along when it fits;
 * the state, message and versions always do: they are what traffic follows. */
static void journal_write(struct change *c, const struct change_unsaved *u)
{
    if (c->journal_fd < 0)
        return;
    char head[48];
    for (int with_detail = 1; with_detail >= 0; with_detail--) {
        json_t *o = unsaved_to_json(u, with_detail);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        size_t n = text ? strlen(text) : 0;
        int hl = snprintf(head, sizeof(head), JOURNAL_MAGIC "%zu\n", n);
        if (text == NULL || (size_t)hl + n > CHANGE_JOURNAL_BYTES) {
            free(text);
            continue;
        }
        int ok = pwrite(c->journal_fd, text, n, hl) == (ssize_t)n &&
                 pwrite(c->journal_fd, head, (size_t)hl, 0) == hl && fdatasync(c->journal_fd) == 0;
        free(text);
        if (!ok)
            log_error("cannot write the journal of kept ends: a kill -9 now would lose this end",
                      "service", c->service, "error", strerror(errno));
        return;
    }
    log_error("the kept end does not fit its journal", "service", c->service);
}

static struct change_unsaved *journal_read(struct change *c)
{
    char buf[CHANGE_JOURNAL_BYTES + 1];
    ssize_t got = pread(c->journal_fd, buf, CHANGE_JOURNAL_BYTES, 0);
    if (got <= (ssize_t)strlen(JOURNAL_MAGIC))
        return NULL;
    buf[got] = '\0';
    if (strncmp(buf, JOURNAL_MAGIC, strlen(JOURNAL_MAGIC)) != 0)
        return NULL;
    char *end = NULL;
    unsigned long n = strtoul(buf + strlen(JOURNAL_MAGIC), &end, 10);
    if (end == NULL || *end != '\n' || n == 0 || (size_t)(end + 1 - buf) + n > (size_t)got)
        return NULL;
    json_t *o = json_loadb(end + 1, n, 0, NULL);
    const char *state = json_string_value(json_object_get(o, "state"));
    const char *event = json_string_value(json_object_get(o, "event"));
    const char *message = json_string_value(json_object_get(o, "message"));
    json_int_t id = json_integer_value(json_object_get(o, "change"));
    if (o == NULL || state == NULL || event == NULL || message == NULL || id <= 0) {
        json_decref(o);
        return NULL;
    }
    struct change_unsaved *u = xcalloc(1, sizeof(*u));
    u->change_id = id;
    u->state = xstrdup(state);
    u->event = xstrdup(event);
    u->message = xstrdup(message);
    const char *live = json_string_value(json_object_get(o, "live"));
    const char *prev = json_string_value(json_object_get(o, "previous"));
    const char *detail = json_string_value(json_object_get(o, "detail"));
    u->has_switch = live != NULL;
    u->live = live ? xstrdup(live) : NULL;
    u->previous = prev ? xstrdup(prev) : NULL;
    u->detail = detail ? xstrdup(detail) : NULL;
    u->ended_ms = json_integer_value(json_object_get(o, "ended"));
    u->attempts = 1; /* the write is late: say so with saved_late */
    u->error = xstrdup("the daemon stopped before the store took it");
    json_decref(o);
    return u;
}

void change_notify(struct change *c)
{
    void (*cb)(void *, int64_t) = c->waiter;
    void *ctx = c->waiter_ctx;
    c->waiter = NULL;
    c->waiter_ctx = NULL;
    if (cb)
        cb(ctx, c->id);
}

int change_record_end(struct change *c, const char *state, const char *event, const char *msg,
                      const char *live, const char *previous, const char *detail)
{
    /* A service takes no change while an end is unsaved, so there is never a second one. */
    assert(c->unsaved == NULL);
    if (c->id == 0)
        return 0;
    struct change_unsaved *u = xcalloc(1, sizeof(*u));
    u->change_id = c->id;
    u->state = xstrdup(state);
    u->event = xstrdup(event);
    u->message = xstrdup(msg);
    u->has_switch = live != NULL;
    u->live = live ? xstrdup(live) : NULL;
    u->previous = previous ? xstrdup(previous) : NULL;
    u->detail = detail ? xstrdup(detail) : NULL;
    u->ended_ms = store_now_ms();
    int rc = 0;
    if (unsaved_write(c, u, WRITE_WAIT_MS) == 0) {
        unsaved_free(u);
        c->state = CHANGE_IDLE;
    } else {
        char idbuf[24];
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
        u->error = xstrdup(errmsg(c));
        log_error("cannot save the end of the change to the store; it stands, the record is "
                  "retried",
                  "service", c->service, "change", idbuf, "state", state, "error", u->error);
        u->delay_ms = SAVE_RETRY_FIRST_MS;
        c->unsaved = u;
        c->state = CHANGE_UNSAVED;
        journal_write(c, u);
        uv_timer_start(&c->save_retry, on_save_retry, u->delay_ms, 0);
        rc = -EIO;
    }
    return rc;
}

void change_done(struct change *c)
{
    int64_t id = c->id;
    uv_timer_stop(&c->deadline);
    change_notify(c);
    if (id != 0 && c->hooks && c->hooks->ended)
        c->hooks->ended(c->hooks_ctx, c, id);
    c->id = 0;
    c->plan = 0;
    if (c->state != CHANGE_UNSAVED)
        c->state = CHANGE_IDLE;
}

int change_unsaved_why(const struct change *c, char *buf, size_t n)
{
    const struct change_unsaved *u = c->unsaved;
    if (u == NULL)
        return 0;
    snprintf(buf, n,
             "cannot save to the store: %s; retrying (change %lld ended %s and traffic follows "
             "it, but its record is not saved yet)",
             u->error ? u->error : "unknown error", (long long)u->change_id, u->state);
    return 1;
}

json_t *change_unsaved_json(const struct change *c)
{
    const struct change_unsaved *u = c->unsaved;
    char why[600];
    if (!change_unsaved_why(c, why, sizeof(why)))
        return json_null();
    return json_pack("{s:I, s:s, s:s, s:o, s:i, s:s}", "change", (json_int_t)u->change_id, "state",
                     u->state, "error", u->error ? u->error : "", "ended",
                     change_iso_time(u->ended_ms), "attempts", (int)u->attempts, "message", why);
}

void change_unsaved_overlay(const struct change *c, json_t *o, int64_t id)
{
    const struct change_unsaved *u = c->unsaved;
    if (u == NULL || u->change_id != id)
        return;
    json_object_set_new(o, "state", json_string(u->state));
    json_object_set_new(o, "message", json_string(u->message));
    json_object_set_new(o, "ended", change_iso_time(u->ended_ms));
    json_object_set_new(o, "unsaved", change_unsaved_json(c));
}

int64_t change_unsaved_id(const struct change *c)
{
    return c->unsaved ? c->unsaved->change_id : 0;
}

const char *change_unsaved_state(const struct change *c)
{
    return c->unsaved ? c->unsaved->state : NULL;
}

void change_wait_health(struct change *c, uint64_t deadline_ms)
{
    uv_timer_start(&c->deadline, on_deadline, deadline_ms, 0);
    uv_timer_start(&c->kick, on_kick, 0, 0);
}

void change_stop_deadline(struct change *c)
{
    uv_timer_stop(&c->deadline);
}

void change_kick(struct change *c)
{
    uv_timer_start(&c->kick, on_kick, 0, 0);
}

void change_publish(struct change *c)
{
    if (c->hooks && c->hooks->publish)
        c->hooks->publish(c->hooks_ctx);
}

void change_forget(struct change *c)
{
    uv_timer_stop(&c->deadline);
    c->waiter = NULL;
    c->waiter_ctx = NULL;
    c->id = 0;
    c->plan = 0;
    c->state = CHANGE_IDLE;
}

void change_close(struct change *c, uv_close_cb cb, void *handle_data)
{
    struct change_unsaved *u = c->unsaved;
    if (u != NULL) {
        uv_timer_stop(&c->save_retry);
        u->attempts++;
        char idbuf[24];
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
        if (unsaved_write(c, u, -1) == 0)
            log_info("the end of the change is saved to the store", "service", c->service, "change",
                     idbuf, "state", u->state);
        else
            log_error("the daemon stops with the end of a change not saved to the store; the "
                      "next start finds it running, as last recorded, and resumes or "
                      "interrupts it",
                      "service", c->service, "change", idbuf, "state", u->state, "error",
                      errmsg(c));
        c->unsaved = NULL;
        unsaved_free(u);
        c->state = CHANGE_IDLE;
    }
    if (c->journal_fd >= 0) {
        close(c->journal_fd);
        c->journal_fd = -1;
    }
    free(c->actor);
    c->actor = NULL;
    c->deadline.data = handle_data;
    c->kick.data = handle_data;
    c->save_retry.data = handle_data;
    uv_close((uv_handle_t *)&c->deadline, cb);
    uv_close((uv_handle_t *)&c->kick, cb);
    uv_close((uv_handle_t *)&c->save_retry, cb);
}

json_t *change_iso_time(int64_t ms)
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

int change_journal_replay(struct change *c, char **live, char **previous)
{
    *live = *previous = NULL;
    if (c->journal_fd < 0)
        return 0;
    struct change_unsaved *u = journal_read(c);
    if (u == NULL)
        return 0;
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)u->change_id);
    if (unsaved_write(c, u, -1) == 0) {
        log_warn("wrote the end of a change the last daemon kept in its journal", "service",
                 c->service, "change", idbuf, "state", u->state);
        unsaved_free(u);
        journal_clear(c);
        return 0;
    }
    log_error("the store still refuses the end of a change kept in the journal; serving as it "
              "ended and retrying",
              "service", c->service, "change", idbuf, "state", u->state, "error", errmsg(c));
    free(u->error);
    u->error = xstrdup(errmsg(c));
    u->delay_ms = SAVE_RETRY_FIRST_MS;
    if (u->has_switch) {
        *live = xstrdup(u->live);
        *previous = u->previous ? xstrdup(u->previous) : NULL;
    }
    c->unsaved = u;
    c->state = CHANGE_UNSAVED;
    uv_timer_start(&c->save_retry, on_save_retry, u->delay_ms, 0);
    return 1;
}
