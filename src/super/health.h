/* Active HTTP health checks of one target: every interval, connect, send GET path, read the
 * status line; 2xx and 3xx pass, anything else (refused, timeout, 5xx, garbage) fails.
 * Consecutive results move the target between unknown, healthy and unhealthy by the service's
 * thresholds, and the target's `healthy` flag (read by workers) follows. Runs on the control
 * loop. */
#ifndef CUTOVER_SUPER_HEALTH_H
#define CUTOVER_SUPER_HEALTH_H

#include <uv.h>

#include "config/config.h"
#include "proxy/route.h"

enum health_state { HEALTH_UNKNOWN = 0, HEALTH_HEALTHY, HEALTH_UNHEALTHY };

struct health_check;

/* Called when the state of a check changes. May call health_stop on any check. */
typedef void (*health_change_cb)(void *ctx, struct health_check *h, enum health_state state);

/* Starts checking t (takes a reference on it) with cfg (copied). The first probe runs at once.
 * When optimistic is set, the target starts healthy (it was serving before a restart) and
 * leaves that state only after unhealthy_threshold failures; otherwise it starts unknown and
 * not routable. Returns the check; never fails. */
struct health_check *health_start(uv_loop_t *loop, struct route_target *t,
                                  const struct config_health *cfg, int optimistic,
                                  health_change_cb cb, void *ctx);

/* Stops the check and frees it once its handles are closed; its callback is not called again.
 * NULL is a no-op. */
void health_stop(struct health_check *h);

enum health_state health_get_state(const struct health_check *h);
/* The target being checked. */
struct route_target *health_target(const struct health_check *h);
/* Text of the last failure ("connection refused", "status 503", "timeout after 500ms"), or "". */
const char *health_last_error(const struct health_check *h);
/* Returns the name of a state: "unknown", "healthy", "unhealthy". */
const char *health_state_name(enum health_state s);

#endif
