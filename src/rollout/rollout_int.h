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
int version_all_healthy(const struct version *v);
void version_why_unhealthy(const struct version *v, char *buf, size_t n);
void version_free(struct version *v);
struct version *version_load(struct service *s, const char *name, int optimistic);
/* Ends the change of s in state with message (store first), calls and clears the waiter. */
void change_finish(struct service *s, const char *state, const char *message);
/* Starts the deploy_timeout deadline and evaluates the target version's health at once. */
void change_wait_health(struct service *s);
/* Records, in one transaction, that `to` is live on s (with `from` as previous) and that the
 * change completed with msg (event type `event`). Returns 0, or a negative errno with nothing
 * written: the caller must then not publish. */
int change_record_switch(struct service *s, const struct version *to, const struct version *from,
                         const char *event, const char *msg);
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
/* Re-attaches to version's recorded instances (adopting live ones, starting dead ones on the
 * same ports when start_missing or when records exist). NULL when the service is unmanaged. */
struct managed_set *managed_restore(struct service *s, const char *version, char *const *targets,
                                    size_t n, int start_missing);
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

/* plan.c */
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
