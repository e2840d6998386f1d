/* Rolling replacement: a traffic executor that applies a change by replacing the live
 * version's instances in batches (see rolling.c's top comment). Control loop only. The plan
 * reaches it only through its exec_ops (rollout_int.h); it reaches the plan only through the
 * service's plan_ops. */
#ifndef CUTOVER_ROLLOUT_ROLLING_H
#define CUTOVER_ROLLOUT_ROLLING_H

#include <jansson.h>

#include "proxy/route.h"

struct service;
struct version;

/* The executor's ops, for s->exec while a replacement runs. */
const struct exec_ops *rolling_exec(void);

/* 1 when a managed deploy of s replaces instances in batches: strategy rolling, and the live
 * version runs as cutover's instances. */
int rolling_applies(const struct service *s);
/* Starts the replacement state for the change of s (s->next: an empty version with its
 * prepared set; s->run already created when the change has a plan) and sets s->exec. */
void rolling_create(struct service *s);
/* Rebuilds the replacement of the change of s found running at start, from its saved progress
 * (state: the change detail's rolling_state; s->live holds the old instances still in
 * rotation, s->next the new ones, both adopted). 0, or -EINVAL. */
int rolling_resume(struct service *s, json_t *state);
/* 1 when the replacement of s can be resumed by the next daemon (a deploy past its first batch,
 * not undoing a failure, on a service whose instances outlive the daemon). */
int rolling_resumable(const struct service *s);
/* Re-evaluates the replacement (a health change, a kick, a resumed plan). */
void rolling_evaluate(struct service *s);
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

#endif
