/* A service's hold and maintenance, the engine's part (`cutover hold`, `release`, `maintenance`,
 * `deploy --hold`): the state in struct service, recorded in the store (the state, and an action
 * with its actor) before the caller publishes the route table that applies it (route.h hold_ms,
 * maintenance). The data plane parks and answers (proxy/hold.h). Control loop only. */
#ifndef CUTOVER_ROLLOUT_MODE_H
#define CUTOVER_ROLLOUT_MODE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/route.h"
#include "rollout/rollout.h"

struct service;

#define MODE_HOLD_DEFAULT_MS ROLLOUT_HOLD_DEFAULT_MS
#define MODE_HOLD_MAX_MS (60ull * 60 * 1000) /* the longest --max */

/* Reads s's state from the store (at start, and in a successor), once its change is restored.
 * A hold that a deploy --hold took for a change that no longer runs is released and the release
 * recorded: that change can no longer end it. Returns 0 or a negative errno with err set. */
int mode_load(struct service *s, char *err, size_t errlen);

/* Holds s: from the next published table on, new requests wait at most max_ms each (see
 * route.h). change is the deploy that holds it around its switch (0: an operator). Holding a
 * held service sets its max and actor anew. Returns 0, -EINVAL (a tcp service, max_ms out of
 * 1 ms..MODE_HOLD_MAX_MS) or -EIO (the store refused: nothing changed), with err set. The
 * caller publishes. */
int mode_hold(struct service *s, uint64_t max_ms, const char *actor, int64_t change, char *err,
              size_t errlen);

/* Ends s's hold, recorded as actor's with why (NULL: none). Returns 0, -ESRCH (not held) or -EIO,
 * with err set. The caller publishes: the held requests then go to the version live. */
int mode_release(struct service *s, const char *actor, const char *why, char *err, size_t errlen);

/* Puts s in maintenance with message (NULL: none; at most HOLD_MESSAGE_MAX bytes of text without
 * control characters) or takes it out (on 0). On while on replaces the message. Returns 0,
 * -EINVAL (a tcp service, a bad message), -ESRCH (off while not in maintenance) or -EIO, with
 * err set. The caller publishes. */
int mode_maintenance(struct service *s, int on, const char *message, const char *actor, char *err,
                     size_t errlen);

/* Change id of s ended in state: a hold its deploy --hold took ends with it (recorded as the
 * change's actor's). Returns 1 when the hold ended (the caller publishes), else 0. */
int mode_change_ended(struct service *s, int64_t id, const char *actor, const char *state);

/* Copies s's hold and maintenance into its route service. */
void mode_route_fill(const struct service *s, struct route_service *rs);

/* {"hold": {...} | null, "maintenance": {...} | null} members set on o (docs/api.md "Service"). */
void mode_json(const struct service *s, json_t *o);

/* Frees what s's state holds. */
void mode_free(struct service *s);

#endif
