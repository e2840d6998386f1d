/* Rolling replacement (a service's `strategy: {type: rolling}`): a managed deploy replaces the
 * live version's instances in batches instead of starting a full second set beside them.
 * Control loop only.
 *
 * With N = run.instances, S = max_surge and U = max_unavailable, the engine keeps, like a
 * Kubernetes Deployment, at most N + S instances in rotation and at least N - U healthy ones.
 * Each evaluation (a health change, a passed gate, a new goal) does, in order:
 *
 *   1. wait until every started new instance is healthy (the batch's health gate, bounded by
 *      deploy_timeout);
 *   2. publish the split: the new version's share of users is its share of healthy instances;
 *   3. take old instances out of rotation while the healthy ones left stay >= N - U (each is
 *      drained like a switched-off version, then stopped);
 *   4. if the goal is reached, report it (to the plan, or finish the change);
 *   5. when a plan has analysis gates, wait for one passing window over the new split;
 *   6. start the next batch: as many new instances as the goal and N + S allow.
 *
 * The goal is N without a plan. With one, each `weight: W` step raises it to ceil(W% of N)
 * and completes once reached; the plan starts once the first instance is healthy.
 *
 * A failure (health deadline, crash loop, gate, abort) ends the change first (store first),
 * then restores the old version: traffic leaves the new version at once when an old instance
 * is healthy, the missing old instances are started again, and the new ones are drained and
 * stopped once the old set is whole. Until then the service refuses other changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/managed.h"
#include "rollout/rolling.h"
#include "rollout/rollout_int.h"
#include "store/store.h"
#include "super/health.h"

struct rolling {
    struct service *s;
    size_t n;         /* run.instances */
    size_t surge;     /* max_surge */
    size_t unavail;   /* max_unavailable */
    size_t goal;      /* new instances wanted in rotation */
    int batch;        /* batches started */
    int gated;        /* last batch whose analysis gate passed (or had none) */
    int waiting_gate; /* a window over the current split is being judged */
    int user_traffic; /* the new version got a share of users */
    size_t pub_new, pub_old;
    int64_t change_id;        /* the change this replacement belongs to */
    int restoring;            /* the change failed: the old set is being made whole again */
    uint64_t restore_started; /* uv_now */
    struct version *leaving;  /* restoring: the new version, serving only while needed */
    uv_timer_t timer;         /* restoring: retries the missing instances, bounds the wait */
};

#define RESTORE_TICK_MS 250

static void roll_event(struct service *s, const char *type, const char *msg)
{
    if (s->ch.id != 0)
        change_record_event(&s->ch, type, msg);
    else
        log_info(msg, "service", s->cfg->name, "event", type);
}

/* The replacement's progress, kept with the change so that a restart or a hand-over resumes it
 * at its batch: the goal, the batches started and gated, whether users saw the new version,
 * and the old instances still in rotation (the store keeps the old version's whole set). */
static void save_state(struct service *s)
{
    struct rolling *ro = s->roll;
    if (ro == NULL || ro->restoring || s->ch.id == 0)
        return;
    json_t *old = json_array();
    for (size_t i = 0; s->live && i < s->live->n; i++)
        json_array_append_new(old, json_string(s->live->targets[i]->address));
    json_t *st = json_pack("{s:i, s:i, s:i, s:b, s:o}", "goal", (int)ro->goal, "batch", ro->batch,
                           "gated", ro->gated, "user_traffic", ro->user_traffic, "old", old);
    if (s->run != NULL)
        s->planner->save_executor(s, st);
    else
        change_record_merge(&s->ch, s->ch.id, "rolling_state", st);
    json_decref(st);
}

/* The store's copy of v's targets follows its instances, so a restart adopts them. */
static void save_targets(struct service *s, const struct version *v)
{
    char **t = xcalloc(v->n + 1, sizeof(*t));
    for (size_t i = 0; i < v->n; i++)
        t[i] = v->targets[i]->address;
    change_record_targets(&s->ch, v->name, (const char *const *)t, v->n);
    free(t);
}

int rolling_applies(const struct service *s)
{
    return s->cfg->strategy.kind == CONFIG_STRATEGY_ROLLING && s->cfg->run.command != NULL &&
           s->live != NULL && s->live->ms != NULL && s->live->n > 0;
}

int rolling_resumable(const struct service *s)
{
    const struct rolling *ro = s->roll;
    return ro != NULL && !ro->restoring && ro->batch > 0 && s->ch.kind == CHANGE_DEPLOY &&
           !s->cfg->run.stop_with_daemon;
}

/* The replacement state of the change of s, with its first goal: a plan starts once one new
 * instance is healthy and raises the goal step by step; without one the goal is every
 * instance. Sets s->roll and s->exec. */
static struct rolling *roll_new(struct service *s)
{
    struct rolling *ro = xcalloc(1, sizeof(*ro));
    ro->s = s;
    ro->n = (size_t)(s->cfg->run.instances > 0 ? s->cfg->run.instances : 1);
    ro->surge = (size_t)s->cfg->strategy.max_surge;
    ro->unavail = (size_t)s->cfg->strategy.max_unavailable;
    ro->goal = s->run != NULL ? 1 : ro->n;
    ro->pub_new = ro->pub_old = (size_t)-1;
    ro->change_id = s->ch.id;
    uv_timer_init(s->r->loop, &ro->timer);
    ro->timer.data = ro;
    s->roll = ro;
    s->exec = rolling_exec();
    return ro;
}

int rolling_resume(struct service *s, json_t *state)
{
    if (!json_is_object(state) || s->next == NULL || s->live == NULL)
        return -EINVAL;
    struct rolling *ro = roll_new(s);
    size_t goal = (size_t)json_integer_value(json_object_get(state, "goal"));
    if (goal > 0 && goal <= ro->n)
        ro->goal = goal;
    ro->batch = (int)json_integer_value(json_object_get(state, "batch"));
    ro->gated = (int)json_integer_value(json_object_get(state, "gated"));
    ro->user_traffic = json_is_true(json_object_get(state, "user_traffic"));
    return 0;
}

void rolling_create(struct service *s)
{
    roll_new(s);
    s->planner->mark_rolling(s);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void roll_discard(struct service *s)
{
    struct rolling *ro = s->roll;
    if (ro == NULL)
        return;
    s->roll = NULL;
    s->exec = NULL;
    uv_close((uv_handle_t *)&ro->timer, on_closed);
}

/* Publishes the table when the split the workers see would change. */
static void publish_split(struct service *s)
{
    struct rolling *ro = s->roll;
    const struct version *nv = ro->restoring ? ro->leaving : s->next;
    /* The split follows healthy counts on both sides (rolling_route_fill). */
    size_t nnew = version_healthy_count(nv), nold = version_healthy_count(s->live);
    if (nnew == ro->pub_new && nold == ro->pub_old)
        return;
    ro->pub_new = nnew;
    ro->pub_old = nold;
    change_publish(&s->ch);
}

/* Index of the old instance to take out next: an unhealthy one first, else the last. */
static size_t retire_pick(const struct version *v)
{
    for (size_t i = v->n; i-- > 0;)
        if (health_get_state(v->checks[i]) != HEALTH_HEALTHY)
            return i;
    return v->n - 1;
}

/* The slot of set ms whose port is the one in address "127.0.0.1:PORT". */
static size_t slot_of(const struct managed_set *ms, const char *address)
{
    const char *colon = strrchr(address, ':');
    int port = colon ? atoi(colon + 1) : 0;
    for (size_t i = 0; i < managed_slots(ms); i++)
        if (managed_slot_used(ms, i) && managed_slot_port(ms, i) == port)
            return i;
    return (size_t)-1;
}

/* Takes old instance i out of rotation: the workers drain it (the published table no longer
 * routes to it), then its process is stopped. */
static void retire_old(struct service *s, size_t i)
{
    struct version *old = s->live;
    size_t slot = slot_of(old->ms, old->targets[i]->address);
    char msg[256];
    snprintf(msg, sizeof(msg),
             "%s: instance %s of %s out of rotation (%zu left); stopped after its drain",
             s->cfg->name, old->targets[i]->address, old->name, old->n - 1);
    /* The store keeps the old version's whole set: a restart in the middle adopts or starts
     * every old instance again (the change is then interrupted). */
    version_remove_target(old, i);
    save_state(s);
    roll_event(s, "instance_retired", msg);
    if (slot != (size_t)-1)
        managed_stop_one(old->ms, slot, s->cfg->drain_timeout_ms + 500);
}

/* Starts up to k more instances of v (its free slots, in order); returns how many started, or
 * -1 when one could not start (err says why). */
static int start_instances(struct service *s, struct version *v, size_t k, char *err, size_t errlen)
{
    int started = 0;
    char *back = NULL;
    /* Instances still draining (a rollback soon after a deploy) go back into rotation first. */
    while ((size_t)started < k && managed_unretire_one(v->ms, &back)) {
        version_add_target(v, back);
        free(back);
        started++;
    }
    for (size_t i = 0; i < managed_slots(v->ms) && (size_t)started < k; i++) {
        if (managed_slot_used(v->ms, i))
            continue;
        char *addr = NULL;
        if (managed_start_one(v->ms, i, &addr, err, errlen) < 0)
            return -1;
        version_add_target(v, addr);
        free(addr);
        started++;
    }
    save_targets(s, v);
    return started;
}

/* Brings the old version back to N instances in rotation: instances still draining are put
 * back first (their processes still run), then free slots are started again. A slot whose
 * process is still stopping is retried on the next tick. */
static void restore_fill(struct service *s)
{
    struct rolling *ro = s->roll;
    struct version *old = s->live;
    char *addr = NULL, err[512];
    while (old->n < ro->n && managed_unretire_one(old->ms, &addr)) {
        version_add_target(old, addr);
        free(addr);
    }
    if (old->n < ro->n && start_instances(s, old, ro->n - old->n, err, sizeof(err)) < 0)
        log_error("cannot start old instance again", "service", s->cfg->name, "version", old->name,
                  "error", err);
    save_targets(s, old);
}

/* Notes the restore's outcome on the change that failed (ended by now) and in the log. */
static void restore_note(struct service *s, const char *type, const char *msg)
{
    if (s->roll->change_id != 0)
        change_record_event_of(&s->ch, s->roll->change_id, type, msg);
    log_warn(msg, "service", s->cfg->name, "event", type);
}

/* No old instance became healthy within deploy_timeout: the leaving version, which still
 * serves every user, is made live again rather than leaving the service stuck; the old one
 * becomes the previous version and its processes are stopped. */
static void restore_give_up(struct service *s, const char *why)
{
    struct rolling *ro = s->roll;
    struct version *old = s->live, *back = ro->leaving;
    if (change_record_live(&s->ch, back->name, old->name) < 0)
        return; /* the next tick tries again */
    char msg[1400];
    snprintf(msg, sizeof(msg),
             "%s has no healthy instance after deploy_timeout (%s): %s stays live", old->name, why,
             back->name);
    restore_note(s, "restore_failed", msg);
    ro->leaving = NULL;
    version_free(s->previous);
    s->previous = old;
    s->live = back;
    roll_discard(s);
    change_publish(&s->ch);
    managed_retire(old->ms, s->cfg->drain_timeout_ms + 500);
}

/* The old version is whole (or the wait is over): the new version leaves rotation, drains and
 * stops, and the service takes changes again. */
static void restore_end(struct service *s)
{
    struct rolling *ro = s->roll;
    struct version *gone = ro->leaving;
    ro->leaving = NULL;
    roll_discard(s);
    change_publish(&s->ch);
    managed_retire(gone->ms, s->cfg->drain_timeout_ms + 500);
    version_free(gone);
}

static void restore_step(struct service *s)
{
    struct rolling *ro = s->roll;
    struct version *old = s->live;
    restore_fill(s);
    publish_split(s);
    char msg[1400];
    if (old->n >= ro->n && version_healthy_count(old) == old->n) {
        snprintf(msg, sizeof(msg), "%s is whole again: %zu healthy instances", old->name, old->n);
        restore_note(s, "restored", msg);
        restore_end(s);
        return;
    }
    if (uv_now(s->r->loop) - ro->restore_started < s->cfg->deploy_timeout_ms)
        return;
    char why[1024];
    version_why_unhealthy(old, why, sizeof(why));
    if (version_healthy_count(old) > 0) {
        snprintf(msg, sizeof(msg),
                 "%s not whole after deploy_timeout; it serves with its %zu healthy instances "
                 "(unhealthy: %s)",
                 old->name, version_healthy_count(old), why);
        restore_note(s, "restored_partly", msg);
        restore_end(s);
        return;
    }
    restore_give_up(s, why);
}

static void on_restore_tick(uv_timer_t *t)
{
    struct rolling *ro = t->data;
    restore_step(ro->s);
}

/* The change failed (recorded by the caller): traffic goes back to the old version, whose set
 * is made whole again. */
static void roll_restore(struct service *s)
{
    struct rolling *ro = s->roll;
    ro->restoring = 1;
    ro->waiting_gate = 0;
    ro->leaving = s->next;
    ro->restore_started = uv_now(s->r->loop);
    s->next = NULL;
    log_warn("restoring the old version's instances", "service", s->cfg->name, "version",
             s->live->name, "leaving", ro->leaving->name);
    uv_timer_start(&ro->timer, on_restore_tick, RESTORE_TICK_MS, RESTORE_TICK_MS);
    restore_step(s);
}

/* The new version is whole and the old one has left: it becomes live (store first). */
static void roll_complete(struct service *s)
{
    struct version *from = s->live, *to = s->next;
    char msg[320];
    snprintf(msg, sizeof(msg), "replaced %s's %zu instances of %s with %s in %d batches",
             s->cfg->name, s->roll->n, from->name, to->name, s->roll->batch);
    /* Every user is on the new version by now: a record the store refuses is retried
     * (change_record_end), never undone by moving everyone back. */
    log_info("rolling replacement completed", "service", s->cfg->name, "version", to->name);
    s->r->commit(s, to, "switched", msg, NULL); /* drops the replacement's state */
}

static void roll_step(struct service *s)
{
    struct rolling *ro = s->roll;
    struct version *old = s->live, *nv = s->next;
    if (ro->restoring) {
        restore_step(s);
        return;
    }
    if (s->ch.id == 0 || nv == NULL)
        return;
    if (!s->planner->allows_batch(s))
        return; /* paused or held: the batch waits for a person (rolling_deadline too) */
    size_t ready = version_healthy_count(nv);
    if (nv->n > 0 && ready == nv->n) {
        if (s->run != NULL && !s->planner->has_traffic(s)) {
            change_stop_deadline(&s->ch);
            s->planner->health_passed(s); /* re-enters through the goal */
            return;
        }
        if (ready > 0 && (s->run == NULL || s->planner->weight(s) > 0))
            ro->user_traffic = 1;
    }
    publish_split(s);
    if (ready < nv->n) {
        /* The batch is starting, or one of its instances fell ill: deploy_timeout bounds the
         * wait. */
        if (!uv_is_active((uv_handle_t *)&s->ch.deadline))
            change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
        return;
    }
    if (ro->waiting_gate) {
        /* s->deadline bounds the wait for a verdict too (rearmed after a pause). */
        if (!uv_is_active((uv_handle_t *)&s->ch.deadline))
            change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
        return;
    }
    change_stop_deadline(&s->ch);
    /* Take old instances out while enough healthy ones remain. Before users see the new
     * version (a plan's tests and pilots), only to make room for the next batch: the new
     * instance serves no user yet, so it replaces no capacity. */
    size_t want_old = ro->n - ro->goal;
    int users = s->run == NULL || s->planner->weight(s) > 0;
    while (old->n > want_old && version_healthy_count(old) + ready >= ro->n - ro->unavail + 1) {
        if (!users && !(nv->n < ro->goal && old->n + nv->n >= ro->n + ro->surge))
            break;
        retire_old(s, retire_pick(old));
    }
    /* An unhealthy old instance is no capacity: it may go whatever U says. */
    while (old->n > want_old && version_healthy_count(old) < old->n &&
           health_get_state(old->checks[retire_pick(old)]) != HEALTH_HEALTHY)
        retire_old(s, retire_pick(old));
    publish_split(s);
    if (nv->n >= ro->goal && old->n <= want_old) {
        if (ro->goal == ro->n && s->run == NULL) {
            roll_complete(s);
            return;
        }
        change_stop_deadline(&s->ch);
        if (s->run != NULL)
            s->planner->goal_reached(s);
        return;
    }
    if (ro->batch > ro->gated) {
        if (s->planner->gate_begin(s)) {
            ro->waiting_gate = 1;
            change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
            return;
        }
        ro->gated = ro->batch;
    }
    size_t in_rotation = old->n + nv->n;
    size_t room = ro->n + ro->surge > in_rotation ? ro->n + ro->surge - in_rotation : 0;
    size_t k = ro->goal - nv->n;
    if (k > room)
        k = room;
    if (k == 0)
        return; /* old instances must leave first; they do as new ones get healthy */
    char err[512];
    int started = start_instances(s, nv, k, err, sizeof(err));
    if (started < 0) {
        char msg[700];
        snprintf(msg, sizeof(msg), "deploy of %s failed: %s", nv->name, err);
        rolling_fail(s, NULL, msg);
        return;
    }
    ro->batch++;
    save_state(s);
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: batch %d started %d instance%s of %s (%zu of %zu)",
             s->cfg->name, ro->batch, started, started == 1 ? "" : "s", nv->name, nv->n, ro->n);
    roll_event(s, "batch", msg);
    change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
}

void rolling_evaluate(struct service *s)
{
    if (s->roll != NULL)
        roll_step(s);
}

static void roll_goal(struct service *s, int weight)
{
    struct rolling *ro = s->roll;
    if (ro == NULL || ro->restoring)
        return;
    size_t g = weight >= 100 ? ro->n : ((size_t)weight * ro->n + 99) / 100;
    if (weight > 0 && g == 0)
        g = 1;
    if (g > ro->goal) {
        ro->goal = g;
        save_state(s);
    }
    roll_step(s);
}

static void roll_gate_passed(struct service *s)
{
    struct rolling *ro = s->roll;
    if (ro == NULL || !ro->waiting_gate)
        return;
    ro->waiting_gate = 0;
    ro->gated = ro->batch;
    save_state(s);
    /* On the next loop turn: the caller (an analysis tick, a person's action) goes on with the
     * plan it holds, which the next batch could end if it fails to start. */
    change_kick(&s->ch);
}

static int roll_done(const struct service *s)
{
    const struct rolling *ro = s->roll;
    return ro != NULL && !ro->restoring && s->next != NULL && s->next->n == ro->n &&
           version_healthy_count(s->next) == ro->n && s->live->n == 0;
}

void rolling_fail(struct service *s, const char *state, const char *why)
{
    struct rolling *ro = s->roll;
    if (ro == NULL || ro->restoring)
        return;
    if (state == NULL || (!ro->user_traffic && strcmp(state, STORE_CHANGE_ROLLED_BACK) == 0))
        state = ro->user_traffic ? STORE_CHANGE_ROLLED_BACK : STORE_CHANGE_FAILED;
    log_warn("rolling replacement failed", "service", s->cfg->name, "reason", why);
    if (s->run != NULL)
        s->planner->discard(s);
    change_record_end(&s->ch, state, state, why, NULL, NULL, NULL);
    change_done(&s->ch);
    roll_restore(s);
}

void rolling_deadline(struct service *s)
{
    struct version *nv = s->next;
    char why[1600], msg[2048];
    if (!s->planner->allows_batch(s))
        return; /* a person holds the plan: resuming rearms the deadline */
    if (s->roll->waiting_gate && nv != NULL && version_healthy_count(nv) == nv->n) {
        snprintf(msg, sizeof(msg),
                 "batch %d of %s: no analysis verdict within deploy_timeout (too few requests "
                 "for min_requests)",
                 s->roll->batch, nv->name);
        s->planner->gate_inconclusive(s, msg);
        return;
    }
    version_why_unhealthy(nv, why, sizeof(why));
    const char *crash = managed_last_exit(nv ? nv->ms : NULL);
    if (crash != NULL)
        snprintf(why + strlen(why), sizeof(why) - strlen(why), "; last exit: %s", crash);
    snprintf(msg, sizeof(msg),
             "deploy of %s: batch %d not healthy after deploy_timeout: %s; %s keeps serving",
             nv ? nv->name : "?", s->roll->batch, why, s->live->name);
    rolling_fail(s, NULL, msg);
}

int rolling_route_fill(const struct service *s, struct route_service *rs)
{
    const struct rolling *ro = s->roll;
    if (ro == NULL)
        return 0;
    const struct version *nv = ro->restoring ? ro->leaving : s->next;
    if (nv == NULL || nv->n == 0 ||
        (!ro->restoring && s->run != NULL && !s->planner->has_traffic(s)))
        return 0;
    if (!ro->restoring)
        s->planner->route_fill(s, rs); /* the pilot cohort, and the canary's targets */
    if (rs->canary.version == NULL)
        route_backend_set(&rs->canary, nv->name, nv->targets, nv->n);
    size_t nnew = version_healthy_count(nv), nold = version_healthy_count(s->live);
    if (ro->restoring)
        rs->canary_buckets = nold > 0 ? 0 : ROUTE_BUCKETS;
    else if (s->run != NULL && s->planner->weight(s) == 0)
        rs->canary_buckets = 0; /* tests and pilots only: users stay on the old version */
    else if (nnew + nold == 0)
        rs->canary_buckets = 0;
    else
        rs->canary_buckets = (unsigned)(nnew * ROUTE_BUCKETS / (nnew + nold));
    return 1;
}

const struct version *rolling_serving(const struct service *s)
{
    const struct rolling *ro = s->roll;
    if (ro == NULL)
        return NULL;
    return ro->restoring ? ro->leaving : s->next;
}

json_t *rolling_json(const struct service *s)
{
    const struct rolling *ro = s->roll;
    if (ro == NULL)
        return json_null();
    const struct version *nv = ro->restoring ? ro->leaving : s->next;
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "state",
                     ro->restoring      ? "restoring"
                     : ro->waiting_gate ? "analysis"
                                        : "replacing",
                     "instances", (int)ro->n, "max_surge", (int)ro->surge, "max_unavailable",
                     (int)ro->unavail, "goal", (int)ro->goal, "batch", ro->batch, "old_in_rotation",
                     s->live ? (int)s->live->n : 0, "new_started", nv ? (int)nv->n : 0,
                     "new_healthy", (int)version_healthy_count(nv), "restoring", ro->restoring);
}

void rolling_stop(struct service *s)
{
    struct rolling *ro = s->roll;
    if (ro == NULL)
        return;
    if (ro->restoring) {
        version_free(ro->leaving);
        ro->leaving = NULL;
    }
    roll_discard(s);
}

static void roll_evaluate(struct service *s)
{
    rolling_evaluate(s);
}

static const struct exec_ops rolling_ops = {
    .goal = roll_goal,
    .done = roll_done,
    .gate_passed = roll_gate_passed,
    .fail = rolling_fail,
    .evaluate = roll_evaluate,
    .stop = rolling_stop,
};

const struct exec_ops *rolling_exec(void)
{
    return &rolling_ops;
}
