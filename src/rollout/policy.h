/* A service's risk policy (config `risk_policy`): what a deploy of each risk must bring before
 * it starts. Pure: the config and the request in, a verdict out (tests/unit/test_policy.c). */
#ifndef CUTOVER_ROLLOUT_POLICY_H
#define CUTOVER_ROLLOUT_POLICY_H

#include <stddef.h>

#include "config/config.h"

/* Returns 0 when a deploy to svc stating risk (NULL: none) and ticket (NULL: none) with plan
 * (NULL: an instant switch) meets svc's risk policy; else -EINVAL with a sentence naming the
 * rule in err. */
int policy_check(const struct config_service *svc, const struct config_plan *plan, const char *risk,
                 const char *ticket, char *err, size_t n);

/* The index of the first step of plan that moves users' traffic (a pilot, or a weight above 0),
 * or plan->nsteps when none does. */
size_t policy_first_traffic_step(const struct config_plan *plan);

/* Who is awaited when a change waits for a person, as "alice, bob" in buf (empty when nobody);
 * returns how many. These name the people an `awaiting` event goes to (notify routes it by the
 * names before the first ": " of its message). */
/* The people of cfg with any of duties (enum config_duty bits) for service. */
size_t policy_people(const struct config *cfg, const char *service, unsigned duties, char *buf,
                     size_t n);
/* The approvers of approval step st who may still approve: all of them but requester, who may
 * not approve their own change unless the step allows it. */
size_t policy_approvers_awaited(const struct config_step *st, const char *requester, char *buf,
                                size_t n);

#endif
