/* Rollout engine internals shared by rollout.c (services, versions, the instant switch, JSON)
 * and plan.c (rollout plans: steps, analysis, tests, approvals). Control loop only; not part of
 * the engine's public contract (rollout.h). */
#ifndef CUTOVER_ROLLOUT_ROLLOUT_INT_H
#define CUTOVER_ROLLOUT_ROLLOUT_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proxy/route.h"
#include "rollout/analysis.h"
#include "rollout/rollout.h"
#include "super/health.h"

struct managed_set;

struct version {
    char *name;
    struct route_target **targets;
    struct health_check **checks;
    size_t n;
    struct managed_set *ms; /* its processes, when cutover runs them (owned by the rollout) */
};

enum change_kind { CHANGE_DEPLOY, CHANGE_ROLLBACK };

struct plan_run;
struct rolling;
struct change_unsaved;

struct service {
    struct rollout *r;
    int id;
    const struct config_service *cfg;
    struct version *live;
    struct version *previous;
    struct version *next; /* being deployed (owned here until it goes live or fails) */
    /* the change in progress, if change_id != 0 */
    int64_t change_id;
    enum change_kind change_kind;
    int change_wait;
    uv_timer_t deadline;
    uv_timer_t kick; /* re-evaluates the change on the next loop turn */
    rollout_wait_cb waiter;
    void *waiter_ctx;
    struct plan_run *run; /* set while a plan change runs */
    struct rolling *roll; /* set while a rolling replacement runs or is being undone */
    /* The end of the last change, when the store refused to record it: the engine has acted on
     * it, save_retry writes it again until the store takes it, and no change starts meanwhile. */
    struct change_unsaved *unsaved;
    uv_timer_t save_retry;
};

struct rollout {
    uv_loop_t *loop;
    const struct config *cfg;
    struct store *st;
    rollout_publish_cb on_publish;
    rollout_sample_fn sample;
    void *ctx;
    struct supervisor *sv;    /* created on first use */
    struct managed_set *sets; /* every managed version's processes */
    struct service *services;
    size_t nservices;
    int open_handles;
};

/* rollout.c */
void rollout_publish(struct rollout *r);
/* Adds a target at address to v (its health check starts, not optimistic). */
void version_add_target(struct service *s, struct version *v, const char *address);
/* Removes target i of v (its health check stops); the next published table drains it. */
void version_remove_target(struct version *v, size_t i);
int version_all_healthy(const struct version *v);
void version_why_unhealthy(const struct version *v, char *buf, size_t n);
void version_free(struct version *v);
struct version *version_load(struct service *s, const char *name, int optimistic);
/* Ends the change of s in state with message (change_record_end, event type state), then
 * change_done. */
void change_finish(struct service *s, const char *state, const char *message);
/* Stops the change's deadline, calls and clears the waiter, and forgets the change (its end was
 * recorded, or is kept in s->unsaved). */
void change_done(struct service *s);
/* Starts the deploy_timeout deadline and evaluates the target version's health at once. */
void change_wait_health(struct service *s);
/* Records the end of the change of s in one transaction: its terminal state and msg, an event
 * of type `event`, the plan's final detail JSON (NULL: left as it is) and, when to is not NULL,
 * that `to` is live with `from` as previous. When the store refuses (locked, full, read-only),
 * the end stands anyway: the failure is logged, the record is kept in s->unsaved and written
 * again with backoff, the API shows it, and s takes no other change until it is saved. The
 * caller acts on the end either way: users are never left half-switched or moved back because
 * a write failed. Returns 0 when saved now, -EIO when kept for a retry. */
int change_record_end(struct service *s, const char *state, const char *event, const char *msg,
                      const struct version *to, const struct version *from, const char *detail);
/* When an end of a change of s is not saved yet: 1, with a sentence for the user in buf. */
int change_unsaved_why(const struct service *s, char *buf, size_t n);
/* Re-evaluates the change of s on the next loop turn. */
void change_kick(struct service *s);
/* Calls and clears the waiter of s (the change reached the point its requester waits for). */
void change_notify(struct service *s);
json_t *version_json(const struct version *v);
/* Notes in change change_id's record, once v's drain deadline passed, how many long-lived
 * connections had to be closed by it. */
void drain_watch(struct service *s, const struct version *v, int64_t change_id);
/* ms since the epoch as "2026-11-23T07:00:00.000Z", or JSON null for 0. */
json_t *rollout_iso_time(int64_t ms);

/* A managed version's instance crashes in a loop: fails or rolls back the change bringing
 * version in (if any). */
void version_crashed(struct service *s, const char *version, const char *why);

/* managed.c */
/* Starts the service's run.command as version on free ports; *targets gets the instances'
 * "127.0.0.1:PORT" (heap, NULL-terminated). -EINVAL / -EADDRNOTAVAIL with err. */
int managed_start(struct service *s, const char *version, struct managed_set **out, char ***targets,
                  size_t *ntargets, char *err, size_t errlen);
/* Checks that the service's run.command can start and that its port range has room for nstart
 * more instances, then creates version's set of run.instances slots with nothing started (the
 * rollout owns it). NULL with err otherwise. */
struct managed_set *managed_prepare(struct service *s, const char *version, size_t nstart,
                                    char *err, size_t errlen);
/* Starts slot i of the set on a free port; *target gets "127.0.0.1:PORT" (heap). -EBUSY (the
 * slot runs), -EADDRNOTAVAIL (no free port) or -EINVAL (cannot start), with err. */
int managed_start_one(struct managed_set *ms, size_t i, char **target, char *err, size_t errlen);
/* Stops slot i after after_ms (its drain); the slot counts as running until then no more. */
void managed_stop_one(struct managed_set *ms, size_t i, uint64_t after_ms);
/* Cancels the pending stop of one instance stopped by managed_stop_one (still draining, so
 * still running): returns 1 with its "127.0.0.1:PORT" in *target (heap), or 0 when none. */
int managed_unretire_one(struct managed_set *ms, char **target);
/* 1 when some set of s named version still has a process (running, draining or stopping). */
int managed_version_running(const struct service *s, const char *version);
size_t managed_slots(const struct managed_set *ms);
/* 1 when slot i has a process (running, restarting, or draining before its stop). */
int managed_slot_used(const struct managed_set *ms, size_t i);
int managed_slot_port(const struct managed_set *ms, size_t i);
/* Re-attaches to version's recorded instances (adopting live ones, starting dead ones on the
 * same ports when start_missing or when records exist). NULL when the service is unmanaged. */
struct managed_set *managed_restore(struct service *s, const char *version, char *const *targets,
                                    size_t n, int start_missing);
/* Adopts and stops the recorded instances of version (an interrupted change's new version,
 * which no longer has a place in the service); forgets the records of dead ones. */
void managed_reap(struct service *s, const char *version);
/* Stops the set's processes after after_ms (0: now). */
void managed_retire(struct managed_set *ms, uint64_t after_ms);
/* Cancels a pending retirement (a rollback within the rollback window reuses the processes). */
void managed_keep(struct managed_set *ms);
/* How long after a switch a version's processes are kept: its drain, or run.rollback_window
 * when longer (plus a margin for the workers to see the switch). */
uint64_t managed_retire_delay(const struct service *s);
void managed_stop_all(struct rollout *r);
void managed_release_all(struct rollout *r);
void managed_free_all(struct rollout *r);
const char *managed_last_exit(const struct managed_set *ms);
int managed_running(const struct managed_set *ms);
json_t *managed_json(const struct managed_set *ms);

/* rolling.c (see its top comment) */
/* 1 when a managed deploy of s replaces instances in batches: strategy rolling, and the live
 * version runs as cutover's instances. */
int rolling_applies(const struct service *s);
/* Starts the replacement state for the change of s (s->next: an empty version with its
 * prepared set; s->run already created when the change has a plan). */
void rolling_create(struct service *s);
/* Re-evaluates the replacement (a health change, a kick, a resumed plan). */
void rolling_evaluate(struct service *s);
/* A plan's weight step: raise the goal to ceil(weight% of run.instances); the plan hears of
 * it through plan_goal_reached. */
void rolling_goal(struct service *s, int weight);
/* 1 when every old instance is replaced (N new ones healthy, none old in rotation). */
int rolling_done(const struct service *s);
/* The plan judged a passing window over the current split: the next batch may start. */
void rolling_gate_passed(struct service *s);
/* Ends the change in state (NULL: rolled_back when users saw the new version, else failed)
 * with why, and restores the old version's instances. */
void rolling_fail(struct service *s, const char *state, const char *why);
/* The batch's deploy_timeout passed. */
void rolling_deadline(struct service *s);
/* Sets the canary (and its share) of rs during a replacement; 0 when it does not apply. */
int rolling_route_fill(const struct service *s, struct route_service *rs);
/* The version that serves while the live one has no instance in rotation, or NULL. */
const struct version *rolling_serving(const struct service *s);
json_t *rolling_json(const struct service *s);
/* The daemon stops: drops the replacement state (the change is recorded by the caller). */
void rolling_stop(struct service *s);

/* plan.c */
/* Hooks for rolling.c: batches start only while the plan runs (not paused or held) */
int plan_allows_batch(const struct service *s);
/* 1 once the plan started (its canary passed its first health check). */
int plan_has_traffic(const struct service *s);
/* The plan's current weight step value (0 before the first). */
int plan_weight(const struct service *s);
/* A rolling goal was reached: a waiting weight step (or the plan's end) completes. */
void plan_goal_reached(struct service *s);
/* Returns 1 when the plan's analysis gates apply to the current split, starting a fresh window
 * whose pass calls rolling_gate_passed; 0 when there is no gate to wait for. */
int plan_gate_begin(struct service *s);
/* Records in the change's detail that its plan replaces instances in batches: a restart then
 * interrupts it instead of resuming it. */
void plan_mark_rolling(struct service *s);
/* The batch's window got no verdict in time: the plan's on_inconclusive decides (proceed: the
 * next batch starts; pause: held until resume; rollback). */
void plan_gate_inconclusive(struct service *s, const char *why);
/* Ends the running plan of s in state (rolling back to the stable version if it got users). */
void plan_fail(struct service *s, const char *state, const char *why);
/* Creates the run of plan for the change of s (not started: the canary must pass its health
 * checks first). */
void plan_create(struct service *s, const struct config_plan *plan);
/* The canary passed its health checks: the plan starts with step 0. */
void plan_health_passed(struct service *s);
/* promote | pause | resume | abort | approve on the running plan; -EBUSY/-EPERM/-EINVAL with
 * a message in err. */
int plan_action(struct service *s, const char *action, const char *actor, int all, char *err,
                size_t errlen);
/* Fills the canary, weight and pilot of rs from the run of s (if any). */
void plan_route_fill(const struct service *s, struct route_service *rs);
/* Rebuilds the run of a plan change that was running when the daemon stopped; returns 0, or
 * -EINVAL when it cannot (the caller then marks the change interrupted). */
int plan_resume(struct service *s, const struct store_change *c, const struct config_plan *plan);
/* The daemon stops: the run's state is saved (the change stays running, to be resumed). */
void plan_stop(struct service *s);
/* Aborts a run before its canary was healthy (deadline or abort). */
void plan_discard(struct service *s);
/* Progress of the run for status: step, state, weight, remaining time, last verdict. */
json_t *plan_status_json(const struct service *s);

#endif
