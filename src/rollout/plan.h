/* Rollout plans: the steps of a change once its new version passed its health checks (tests, a
 * pilot cohort, weights, pauses, approvals), with analysis gates comparing the new version with
 * the stable one. The plan decides; the change machine (change.h) admits each transition and
 * records it; the route table or a traffic executor (s->exec) applies it. Control loop only. */
#ifndef CUTOVER_ROLLOUT_PLAN_H
#define CUTOVER_ROLLOUT_PLAN_H

#include <jansson.h>
#include <stddef.h>

#include "config/config.h"
#include "proxy/route.h"

struct service;
struct store_change;

/* The plan's ops, for s->planner (what an executor asks of the plan). */
const struct plan_ops *plan_ops(void);

/* Creates the run of plan for the change of s (not started: the canary must pass its health
 * checks first), its detail starting from the change's audit record (borrowed, may be NULL). */
void plan_create(struct service *s, const struct config_plan *plan, json_t *audit);
/* The plan as it is in force: {"name", "steps": [descriptions], "analysis": {thresholds} or
 * null, "on_failure", "on_inconclusive"}. New reference. */
json_t *plan_definition_json(const struct config_plan *plan);
/* The canary passed its health checks: the preview listener and the tests reach it from now,
 * and the plan starts with step 0. */
void plan_health_passed(struct service *s);
/* promote | pause | resume | abort | approve on the running plan; -EBUSY/-EPERM/-EINVAL/-EIO
 * with a message in err. */
int plan_action(struct service *s, const char *action, const char *actor, int all, char *err,
                size_t errlen);
/* Ends the running plan of s in state (rolling back to the stable version if it got users). */
void plan_fail(struct service *s, const char *state, const char *why);
/* Fills the canary, weight and pilot of rs from the run of s (if any). */
void plan_route_fill(const struct service *s, struct route_service *rs);
/* Rebuilds the run of a plan change that was running when the daemon stopped; returns 0, or
 * -EINVAL when it cannot (the caller then marks the change interrupted). */
int plan_resume(struct service *s, const struct store_change *c, const struct config_plan *plan);
/* The daemon stops: the run's state is saved (the change stays running, to be resumed). */
void plan_stop(struct service *s);
/* Drops the run without recording anything (the change ended or is being ended). */
void plan_discard(struct service *s);
/* Progress of the run for status: step, state, weight, remaining time, last verdict. */
json_t *plan_status_json(const struct service *s);

/* The last verdict of s's running plan on gate ("min_requests", "max_error_rate",
 * "max_p99_latency_ratio", "max_p99_latency_ms"), an enum analysis_result; -1 when no plan
 * runs, it has judged nothing yet, it does not check that gate, or the verdict does not say
 * (another gate was in doubt). */
int plan_gate_verdict(const struct service *s, const char *gate);

#endif
