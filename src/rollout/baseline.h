/* A like-for-like baseline (`analysis: {baseline: true}`, issue 18): fresh instances of the live
 * version, started with the canary's and given as large a share of users, so that the gates
 * compare two sets of the same age instead of a new version with a long-running, warmed-up
 * stable set (Kayenta's and Argo's baseline). Its processes are a managed set named
 * VERSION MANAGED_BASELINE (managed.h), recorded in the store like any other, so a restarted
 * or upgraded daemon adopts them with the plan it resumes. It ends with the change: the table
 * without it is published and its processes stop after the service's drain.
 *
 * The decisions, in one place:
 *
 * | situation                                   | baseline                                      |
 * |---------------------------------------------|-----------------------------------------------|
 * | plan without analysis.baseline              | none                                          |
 * | nothing live (a first deploy)               | none: nothing to compare with                 |
 * | the live version is not run by cutover      | the deploy is refused, naming why             |
 * | no free port for it, or it cannot start     | the deploy is refused, nothing recorded       |
 * | a canary at weight W                        | min(W, 100 - W) % of users, the top buckets   |
 * | a baseline target unhealthy or crashing     | its users go to the live version; the change  |
 * |                                             | goes on (the canary is not at fault)          |
 * | fewer than min_requests on it in a window   | the ratio gate is not judged in that window   |
 * | a pilot-only step (weight 0)                | no users: the ratio gate is not judged        |
 * | the change ends (any way)                   | unrouted, stopped after drain_timeout         |
 * | the daemon restarts during the plan         | adopted; started afresh if it stopped with it |
 * | a restart finds it left after the change    | stopped after drain_timeout (a hand-over just |
 * | ended (or its plan cannot resume)           | after the end: the old daemon still drains)   |
 *
 * Control loop only. */
#ifndef CUTOVER_ROLLOUT_BASELINE_H
#define CUTOVER_ROLLOUT_BASELINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "proxy/route.h"

struct service;

/* A deploy with plan cp (NULL: none) begins: starts its baseline's instances into s->baseline
 * when the plan asks for one and something is live. Returns 0 (started, or none wanted), or
 * -EINVAL / -EAGAIN (an earlier baseline still stopping) / -EADDRNOTAVAIL with err, having
 * started nothing. */
int baseline_start(struct service *s, const struct config_plan *cp, char *err, size_t errlen);
/* The change ended (or its deploy was refused after baseline_start): s->baseline is dropped
 * and its processes stop after the drain (now when nothing was routed to them). The caller
 * publishes the table. */
void baseline_end(struct service *s, int routed);
/* A plan change with plan cp resumes at the daemon's start: its baseline's recorded instances
 * are adopted (missing ones started again on their ports), or a fresh set is started when none
 * is recorded (they stopped with the daemon). Nothing when cp has none. */
void baseline_resume(struct service *s, const struct config_plan *cp);
/* 1 when name is the set of s's baseline that a resumable change of plan cp keeps across a
 * restart (reap_leftovers must not stop it). */
int baseline_keeps(const struct service *s, const struct config_plan *cp, const char *name);
/* Stops the recorded instances of a baseline no change resumed (they serve nobody) after the
 * drain (managed_reap), unless reap_leftovers stops them already (no change kept them). */
void baseline_reap(struct service *s);
/* Fills rs's baseline for a canary at weight percent: min(weight, 100 - weight) % of users. */
void baseline_route_fill(const struct service *s, int weight, struct route_service *rs);
/* {"version", "targets", "instances", "share_percent"}, or JSON null. New reference. */
json_t *baseline_json(const struct service *s, int weight);

#endif
