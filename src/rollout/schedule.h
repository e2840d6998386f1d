/* Scheduled changes (deploy --at): a deploy recorded now, in state `scheduled`, that the daemon
 * starts at its time. One per service at a time; kept in the store, so a restart, a reload and a
 * hot upgrade keep it; cancelled by abort. At its time it goes through rollout_deploy like any
 * deploy (the freeze windows and the service's state of that moment decide), and a refusal
 * then ends it as failed with the reason, so that everyone told of it hears why.
 * Control loop only. */
#ifndef CUTOVER_ROLLOUT_SCHEDULE_H
#define CUTOVER_ROLLOUT_SCHEDULE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rollout/rollout.h"

struct service;

/* A deploy that waits for its time is started this late at most (the daemon was down at the
 * time, or busy): later than that it fails instead, since nobody expects it then. */
#define SCHEDULE_GRACE_MS (10 * 60 * 1000)
/* and is accepted this far ahead at most. */
#define SCHEDULE_MAX_AHEAD_MS (366LL * 24 * 3600 * 1000)

/* Parses the --at text: RFC 3339 ("2026-12-07T10:00:00Z", an offset, a space for T) or
 * "+DURATION" from now. Returns 0 with *at_ms set, or -EINVAL. */
int schedule_parse_at(const char *text, int64_t now_ms, int64_t *at_ms);

/* Records req (already validated by rollout_deploy; plan is the plan's name or NULL) as
 * scheduled for req->at_ms on s and arms the timer. Returns 0 with *id, or -EBUSY (s already
 * has one), -EINVAL (a time in the past or too far ahead), -EIO (the store refused). */
int schedule_add(struct service *s, const struct rollout_deploy_req *req, const char *plan,
                 int64_t *id, char *err, size_t errlen);

/* Reads the store's scheduled changes at start and arms the timer; one of an unknown service,
 * or more than SCHEDULE_GRACE_MS late, ends as failed. */
void schedule_load(struct rollout *r);

/* Acts on a scheduled change id: "abort" cancels it (state aborted, by actor). Returns 1 when id
 * is a scheduled change (rc in *rc: 0, or -EBUSY for another action, with err), else 0. */
int schedule_action(struct rollout *r, int64_t id, const char *action, const char *actor, int *rc,
                    char *err, size_t errlen);

/* {"id", "version", "at", "actor", "plan"} of s's scheduled change, or JSON null. */
json_t *schedule_json(const struct service *s);

/* Stops the timer (rollout_stop); the store keeps the scheduled changes for the next start. */
void schedule_stop(struct rollout *r);

#endif
