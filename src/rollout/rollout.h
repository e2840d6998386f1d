/* The rollout engine: each service's versions (live, previous, the one being deployed) and the
 * changes that move traffic between them. It writes every decision to the store before acting
 * on it, starts health checks on targets, and publishes route tables. Control loop only.
 *
 * A deploy registers the new version's targets and waits until all pass their health checks (at
 * most deploy_timeout). Without a plan it then switches at once; with one (plan.c) it walks the
 * plan's steps (tests, pilot cohort, weights, pauses, approvals) while analysis gates compare
 * the new version with the stable one, and rolls back on its own when a gate fails. A rollback
 * is the instant switch back to the previous version. */
#ifndef CUTOVER_ROLLOUT_ROLLOUT_H
#define CUTOVER_ROLLOUT_ROLLOUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "rollout/analysis.h"
#include "store/store.h"

struct rollout;

/* Called after a route table was published, so the daemon can wake its workers. */
typedef void (*rollout_publish_cb)(void *ctx);

/* Called once when a change reaches the point its requester waits for (see rollout_deploy);
 * the change is then readable with rollout_change_json. */
typedef void (*rollout_wait_cb)(void *ctx, int64_t change_id);

/* Fills *out with what the data plane counted so far (cumulative, summed over workers) for
 * role 0 (stable) or 1 (canary) of service id. */
typedef void (*rollout_sample_fn)(void *ctx, int service_id, int role, struct analysis_sample *out);

/* Creates the engine for cfg (borrowed; must outlive the engine) and st (borrowed). */
struct rollout *rollout_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                            rollout_publish_cb on_publish, rollout_sample_fn sample, void *ctx);

/* Restores each service from the store (or records its configured targets as the version
 * named by the service's `version`, default CONFIG_INITIAL_VERSION, on first start), marks changes
 * that were running when the daemon died as interrupted, starts health checks and publishes the
 * first route table. Returns 0, or a negative errno with a message in err. */
int rollout_start(struct rollout *r, char *err, size_t errlen);

/* Marks running changes interrupted (the daemon is stopping), stops health checks and timers.
 * Pending waiters are called. */
void rollout_stop(struct rollout *r);

/* Managed instances at the daemon's end. When it stops for good: those that serve are released
 * (left running, recorded in the store for the next daemon to adopt) unless their service sets
 * run.stop_with_daemon, and the others are stopped (stop_signal, then SIGKILL after
 * stop_timeout). When it hands over: all are released to the successor. */
void rollout_stop_instances(struct rollout *r);
void rollout_release_instances(struct rollout *r);

/* Returns 1 while the end of some change is not saved to the store yet (it is retried): a
 * hand-over then would let the successor find that change running. why gets a sentence. */
int rollout_unsaved(const struct rollout *r, char *why, size_t n);

/* Returns 1 while an instant switch (deploy or rollback without a plan) waits for health: a
 * hand-over then would interrupt it. Plans are saved and resumed instead. */
int rollout_switching(const struct rollout *r);

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
    int emergency;      /* goes through a freeze window; needs a reason */
    const char *ticket; /* the change request it carries out, or NULL */
    const char *risk;   /* "low", "medium", "high", or NULL */
    int64_t at_ms;      /* deploy --at: record it now, start it then (rollout/schedule.h); 0 now */
    int64_t scheduled_id; /* the scheduled change this deploy carries out at its time, or 0 */
    int hold; /* hold the service from now until the switch (or the change's end): an instant
                 switch only (no plan, no rolling replacement); rollout/mode.h */
};

/* Starts a deploy. On success sets *change_id and will call cb(ctx, id) once: when the change
 * ended (switched, or failed at the health deadline) — for plans, when the first step that
 * moves traffic or waits for a person took effect, unless req->wait. Returns 0, or: -ENOENT
 * unknown service or plan, -EBUSY a change already runs or a freeze window is in force (not for
 * an emergency, which the change record then says, with the window and the reason), -EAGAIN
 * processes of an earlier change that this deploy would start again (the version, or its
 * baseline) have not stopped yet, -EINVAL bad version/targets, -EEXIST the version is already
 * live, -EIO the store failed. err gets a message for the user. */
int rollout_deploy(struct rollout *r, const struct rollout_deploy_req *req, rollout_wait_cb cb,
                   void *ctx, int64_t *change_id, char *err, size_t errlen);

/* Hold and maintenance (rollout/mode.h, docs/api.md): recorded with actor, then applied by a
 * published table. rollout_hold: new requests wait in cutover, at most max_ms each, until
 * rollout_release sends them to the version live then. rollout_maintenance: every request is
 * answered 503 with a page naming message (on 1), or served again (on 0). Return 0, or -ENOENT
 * (unknown service), -EINVAL (bad max or message, a tcp service), -ESRCH (not held, not in
 * maintenance), -EROFS (the store is not trusted), -EIO (the store refused: nothing changed),
 * with err set. */
#define ROLLOUT_HOLD_DEFAULT_MS 30000 /* how long a held request waits when no max is given */
int rollout_hold(struct rollout *r, const char *service, uint64_t max_ms, const char *actor,
                 char *err, size_t errlen);
int rollout_release(struct rollout *r, const char *service, const char *actor, char *err,
                    size_t errlen);
int rollout_maintenance(struct rollout *r, const char *service, int on, const char *message,
                        const char *actor, char *err, size_t errlen);

/* The written plan of a deploy of version to service with plan (NULL: the service's), before
 * it starts (rollout/preview.h; docs/api.md "Plan preview"); changes nothing. New reference, or
 * NULL with *rc -ENOENT (unknown service or plan) or -EINVAL (bad version) and err set. */
json_t *rollout_plan_preview(struct rollout *r, const char *service, const char *version,
                             const char *plan, char *err, size_t errlen, int *rc);

/* Starts a rollback to the previous version; like rollout_deploy. -ESRCH: no previous version. */
int rollout_rollback(struct rollout *r, const char *service, const char *actor, const char *reason,
                     rollout_wait_cb cb, void *ctx, int64_t *change_id, char *err, size_t errlen);

/* Acts on change id: "promote" (all: finish the plan), "pause", "resume", "abort", "approve"
 * (by actor). Returns 0, or -ENOENT (no such change), -EBUSY (not running or not in a state for
 * this), -EPERM (actor is not an approver), -EINVAL (unknown action), with a message in err. */
int rollout_change_action(struct rollout *r, int64_t id, const char *action, const char *actor,
                          int all, char *err, size_t errlen);

/* The change record a release manager reads: JSON (new reference) or Markdown (heap string).
 * NULL when the change is unknown. */
json_t *rollout_report_json(struct rollout *r, int64_t id);
char *rollout_report_md(struct rollout *r, int64_t id);

/* JSON of one service (docs/api.md "Service"), or NULL if unknown. New reference. */
json_t *rollout_service_json(struct rollout *r, const char *name);
/* {"services": [...]}. New reference. */
json_t *rollout_services_json(struct rollout *r);
/* An Event object as the event stream and webhooks send it: {"id", "change", "service" (NULL
 * when unknown), "type", "message", "ts", "hash" (its link in the change's hash chain, NULL when
 * recorded before the chain)}. New reference. */
json_t *rollout_event_json(const struct store_event *ev, const char *service);

/* JSON of change id with its events when with_events, or NULL if unknown. New reference. */
json_t *rollout_change_json(struct rollout *r, int64_t id, int with_events);
/* {"changes": [...]} newest first, of service (or all), at most limit. NULL on store error. */
json_t *rollout_changes_json(struct rollout *r, const char *service, size_t limit);

/* --- knowledge (rollout/knowledge.c) --------------------------------------------------------- */

/* The longest lessons-learned note, in bytes. */
#define ROLLOUT_NOTE_MAX 4096

/* Adds a lessons-learned note by actor (a name) to change id, running or ended: an event of
 * type "note" with the message "ACTOR: TEXT", which the report, the event stream and the
 * webhooks carry like any other. text: 1 to ROLLOUT_NOTE_MAX bytes of text (not blank; tab and
 * line feeds allowed, no other control character). Returns 0, or -EINVAL (bad actor or text),
 * -ENOENT (no such change), -EROFS (the store is lost or corrupt), -EIO, with err set; nothing
 * is recorded on failure. */
int rollout_note(struct rollout *r, int64_t id, const char *actor, const char *text, char *err,
                 size_t errlen);

/* The check of change id's hash chain (id 0: of every change), as docs/api.md "Verify" shows
 * it. New reference, or NULL with *rc -ENOENT (no such change) or -EIO. */
json_t *rollout_verify_json(struct rollout *r, int64_t id, int *rc);

/* The delivery figures of the changes of service (NULL: all) created from since_ms to now_ms
 * (docs/api.md "Stats"; what counts as a failure and a restore: docs/decisions.md). New
 * reference, or NULL when the store cannot be read. */
json_t *rollout_stats_json(struct rollout *r, const char *service, int64_t since_ms,
                           int64_t now_ms);

/* Appends Prometheus lines about services and targets to buf (via the caller's appender). */
typedef void (*rollout_emit_fn)(void *ctx, const char *line);
void rollout_metrics(struct rollout *r, rollout_emit_fn emit, void *ctx);

#endif
