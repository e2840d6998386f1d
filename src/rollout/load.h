/* Synthetic load for quiet canaries (issue 18, a `load:` step): requests at a fixed rate sent by
 * the control loop straight to the new version's targets, so that its gates have requests to
 * judge. Their answers are counted apart from users' (per service and version, cumulative):
 * the plan adds them to the canary's analysis sample during a load step, the change record
 * shows them as "synthetic", and /metrics as cutover_synthetic_requests_total{...,
 * source="synthetic"}; the per-version user metrics never see them. Control loop only. */
#ifndef CUTOVER_ROLLOUT_LOAD_H
#define CUTOVER_ROLLOUT_LOAD_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "proxy/route.h"
#include "rollout/analysis.h"

struct loadgen;

/* Starts sending cfg->rate requests a second, in turn to cfg->paths, round robin over the
 * healthy ones of the n targets (references taken), for (service_id, version). Requests that
 * would exceed LOADGEN_MAX_INFLIGHT at once are not sent and counted as skipped. */
#define LOADGEN_MAX_INFLIGHT 256
struct loadgen *loadgen_start(uv_loop_t *loop, int service_id, const char *version,
                              const struct config_load *cfg, struct route_target *const *targets,
                              size_t n);
/* Stops sending; requests in flight are closed uncounted. Frees g once its handles closed.
 * NULL is a no-op. */
void loadgen_stop(struct loadgen *g);

/* Adds the cumulative synthetic figures of (service_id, version) to out (requests, 5xx,
 * cutover's own errors: connect failures, resets, timeouts; latency). */
void loadgen_sample_add(int service_id, const char *version, struct analysis_sample *out);

/* The synthetic counters as Prometheus lines (service names by id from names[0..n)). */
typedef void (*loadgen_emit_fn)(void *ctx, const char *line);
void loadgen_metrics(const char *const *names, size_t n, loadgen_emit_fn emit, void *ctx);

/* {"requests", "errors_5xx", "cutover_errors", "skipped", "p99_ms"} of (service_id, version), new
 * reference. */
json_t *loadgen_json(int service_id, const char *version);

#endif
