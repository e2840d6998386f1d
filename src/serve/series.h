/* The last 15 minutes of each serving version's request rate, error rate and p99, for the
 * dashboard's charts: a ring buffer per (service, version), fed by the daemon's control loop
 * from the per-version counters every SERIES_EVERY_MS. Owns its lines; control loop only. */
#ifndef CUTOVER_SERVE_SERIES_H
#define CUTOVER_SERVE_SERIES_H

#include <jansson.h>
#include <stdint.h>

#include "core/hist.h"

#define SERIES_EVERY_MS 2000
/* 15 minutes of points. */
#define SERIES_POINTS (15 * 60 * 1000 / SERIES_EVERY_MS)

struct series;

struct series *series_new(void);

/* NULL is a no-op. */
void series_free(struct series *s);

/* Records one sample of version's running totals at now (seconds, wall clock): requests
 * answered, of which errors (5xx), and their latency histogram (borrowed). The first sample of
 * a line only sets its base; each later one adds a point with the rates since the one before.
 * A total that went backwards counts as no requests. A line not sampled for 15 minutes is
 * dropped at the next call. */
void series_sample(struct series *s, const char *service, const char *version, double now,
                   uint64_t requests, uint64_t errors, const struct hist *latency);

/* {"service", "every_s", "window_s", "versions": [{"version", "points": [[t, rps,
 * error_pct, p99_ms]...]}]} for service, oldest point first (t: seconds since the epoch).
 * Returns a new reference. */
json_t *series_json(const struct series *s, const char *service);

#endif
