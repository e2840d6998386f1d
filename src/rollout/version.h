/* A version of a service: its name, its targets with their health checks, and its processes
 * when cutover runs them. Control loop only. A version reads the store (its recorded targets)
 * but never writes it; its drain figures are recorded through the change (change.h). */
#ifndef CUTOVER_ROLLOUT_VERSION_H
#define CUTOVER_ROLLOUT_VERSION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "proxy/route.h"
#include "super/health.h"

struct change;
struct managed_set;
struct store;

struct version {
    char *name;
    struct route_target **targets;
    struct health_check **checks;
    size_t n;
    struct managed_set *ms; /* its processes, when cutover runs them (owned by the rollout) */
    /* for the health checks of targets added later */
    uv_loop_t *loop;
    const struct config_health *health;
    health_change_cb on_health;
    void *health_ctx;
};

/* A version named name with targets (invalid addresses skipped), each health-checked with hc;
 * optimistic: they count as healthy until a check fails (a restart of what served). */
struct version *version_new(uv_loop_t *loop, const struct config_health *hc, const char *name,
                            const char *const *targets, size_t n, int optimistic,
                            health_change_cb on_health, void *ctx);
/* Like version_new with the targets the store records for version name of service; NULL when
 * name is NULL or the store has none. */
struct version *version_load(struct store *st, const char *service, uv_loop_t *loop,
                             const struct config_health *hc, const char *name, int optimistic,
                             health_change_cb on_health, void *ctx);
void version_free(struct version *v);
/* Adds a target at address to v (its health check starts, not optimistic). */
void version_add_target(struct version *v, const char *address);
/* Removes target i of v (its health check stops); the next published table drains it. */
void version_remove_target(struct version *v, size_t i);
int version_all_healthy(const struct version *v);
size_t version_healthy_count(const struct version *v);
/* Describes the targets that are not healthy: "127.0.0.1:9003 unhealthy (status 503)". */
void version_why_unhealthy(const struct version *v, char *buf, size_t n);
/* The Version object of docs/api.md, or JSON null. New reference. */
json_t *version_json(const struct version *v);
/* After a switch away from v: once its drain deadline (drain_ms) has passed, change c records
 * in change change_id how many long-lived connections had to be closed by it, then done(ctx,
 * change_id, closed) runs (may be NULL). Returns 1 when a watch was armed (v had targets). */
typedef void (*version_drained_cb)(void *ctx, int64_t change_id, unsigned closed);
int version_watch_drain(const struct version *v, struct change *c, int64_t change_id,
                        uv_loop_t *loop, uint64_t drain_ms, version_drained_cb done, void *ctx);

#endif
