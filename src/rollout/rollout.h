/* The rollout engine: each service's versions (live, previous, the one being deployed) and the
 * changes that move traffic between them. It writes every decision to the store before acting
 * on it, starts health checks on targets, and publishes route tables. Control loop only.
 *
 * A deploy today is an instant, health-gated switch: register the new version's targets, wait
 * until all pass their health checks (at most deploy_timeout), record the switch, publish the
 * table. A rollback is the same switch back to the previous version. */
#ifndef CUTOVER_ROLLOUT_ROLLOUT_H
#define CUTOVER_ROLLOUT_ROLLOUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "store/store.h"

struct rollout;

/* Called after a route table was published, so the daemon can wake its workers. */
typedef void (*rollout_publish_cb)(void *ctx);

/* Called once when a change reaches the point its requester waits for (see rollout_deploy);
 * the change is then readable with rollout_change_json. */
typedef void (*rollout_wait_cb)(void *ctx, int64_t change_id);

/* Creates the engine for cfg (borrowed; must outlive the engine) and st (borrowed). */
struct rollout *rollout_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                            rollout_publish_cb on_publish, void *ctx);

/* Restores each service from the store (or records its configured targets as version
 * "initial" on first start), marks changes that were running when the daemon died as
 * interrupted, starts health checks and publishes the first route table. Returns 0, or a
 * negative errno with a message in err. */
int rollout_start(struct rollout *r, char *err, size_t errlen);

/* Marks running changes interrupted (the daemon is stopping), stops health checks and timers.
 * Pending waiters are called. */
void rollout_stop(struct rollout *r);

/* Frees the engine (after rollout_stop and once the loop ran the close callbacks). */
void rollout_free(struct rollout *r);

/* Returns the stable id of service name (the index in the config), or -1. */
int rollout_service_id(const struct rollout *r, const char *name);

struct rollout_deploy_req {
    const char *service;
    const char *version;
    const char *const *targets;
    size_t ntargets;
    const char *plan; /* NULL: the service's default */
    const char *actor;
    const char *reason; /* may be NULL */
    int wait;           /* call back when the change ended, not when it first took effect */
};

/* Starts a deploy. On success sets *change_id and will call cb(ctx, id) once: when the change
 * ended (switched, or failed at the health deadline) — for plans, when the first step took
 * effect unless req->wait. Returns 0, or: -ENOENT unknown service, -EBUSY a change already
 * runs, -EINVAL bad version/targets, -EEXIST the version is already live, -ENOTSUP a plan
 * (not in this build), -EIO the store failed. err gets a message for the user. */
int rollout_deploy(struct rollout *r, const struct rollout_deploy_req *req, rollout_wait_cb cb,
                   void *ctx, int64_t *change_id, char *err, size_t errlen);

/* Starts a rollback to the previous version; like rollout_deploy. -ESRCH: no previous version. */
int rollout_rollback(struct rollout *r, const char *service, const char *actor, const char *reason,
                     rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err, size_t errlen);

/* JSON of one service (docs/api.md "Service"), or NULL if unknown. New reference. */
json_t *rollout_service_json(struct rollout *r, const char *name);
/* {"services": [...]}. New reference. */
json_t *rollout_services_json(struct rollout *r);
/* JSON of change id with its events when with_events, or NULL if unknown. New reference. */
json_t *rollout_change_json(struct rollout *r, int64_t id, int with_events);
/* {"changes": [...]} newest first, of service (or all), at most limit. NULL on store error. */
json_t *rollout_changes_json(struct rollout *r, const char *service, size_t limit);

/* Appends Prometheus lines about services and targets to buf (via the caller's appender). */
typedef void (*rollout_emit_fn)(void *ctx, const char *line);
void rollout_metrics(struct rollout *r, rollout_emit_fn emit, void *ctx);

#endif
