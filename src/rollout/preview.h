/* The written plan of a deploy, before it starts (`cutover plan`, GET .../plan): the steps as
 * milestones with the new version's share of traffic, owner, who is told and Plan B; the time
 * to full traffic at best, as expected and at worst; the worst time to roll back; the freeze
 * windows on the way. Pure: a function of its arguments only (no clock, no daemon state), so
 * tests/unit/test_preview.c checks it directly. Any thread. */
#ifndef CUTOVER_ROLLOUT_PREVIEW_H
#define CUTOVER_ROLLOUT_PREVIEW_H

#include <stdint.h>

#include <jansson.h>

#include "config/config.h"

struct preview_in {
    const struct config *cfg;         /* webhooks and freeze windows */
    const struct config_service *svc; /* health, deploy_timeout, drain_timeout, run */
    const struct config_plan *plan;   /* NULL: an instant switch once healthy */
    const char *from;                 /* the live version, NULL when there is none */
    const char *to;                   /* the version to deploy */
    double rate;                      /* requests per second to the service; < 0: unknown */
    int64_t now;                      /* Unix seconds: where the freeze windows are looked up */
};

/* Seconds. Steps that wait for a person (approval, pause until promoted, a hold) count 0: the
 * times are what cutover itself takes. */
struct preview_times {
    double fastest, expected, worst; /* to full traffic */
    double rollback_worst;           /* from a decision to roll back until the new version is
                                        drained (the users are back on the old one sooner) */
};

/* Fills *out for in. */
void preview_times(const struct preview_in *in, struct preview_times *out);

/* The whole preview as docs/api.md "Plan preview" describes it. New reference. */
json_t *preview_json(const struct preview_in *in);

#endif
