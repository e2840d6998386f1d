/* The last 15 minutes of each serving version's request rate, error rate and p99, for the
 * dashboard's charts: a ring buffer per (service, version), fed by the daemon's control loop
 * from the per-version counters every SERIES_EVERY_MS. Owns its lines; control loop only. The
 * points (not the totals they were computed from) can be saved to a file and loaded by the next
 * process, so that a hand-over or a restart does not empty the charts. */
#ifndef CUTOVER_SERVE_SERIES_H
#define CUTOVER_SERVE_SERIES_H

#include <jansson.h>
#include <stdint.h>

#include "core/hist.h"

#define SERIES_EVERY_MS 2000
/* 15 minutes of points. */
#define SERIES_POINTS (15 * 60 * 1000 / SERIES_EVERY_MS)
/* The window of the charts, in seconds. */
#define SERIES_WINDOW_S ((double)SERIES_POINTS * SERIES_EVERY_MS / 1000.0)

/* Bounds on a file of series_save, checked by series_load before it allocates: the most lines,
 * the most points a line may list (a later build with a denser ring may write more; the newest
 * SERIES_POINTS are kept), the longest service or version name, and the file's size. */
#define SERIES_FILE_LINES 256
#define SERIES_FILE_POINTS (4 * SERIES_POINTS)
#define SERIES_FILE_NAME_MAX 256
#define SERIES_FILE_MAX (16 * 1024 * 1024)

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

/* Writes every line that has points to path as JSON ({"format": 1, "lines": [{"service",
 * "version", "points": [[t, rps, error_pct, p99_ms]...]}]}), the SERIES_FILE_LINES sampled last
 * when there are more. The totals of the last sample are not written: the next process counts
 * from 0. Atomic: written to path.tmp (mode 0600), fsync'ed, then renamed over path, so a crash
 * leaves the old file or the new one, never half of one. Returns 0, or a negative errno with
 * err saying what failed on which file. Blocks on the disk: call it at a hand-over or a stop,
 * not on every tick. */
int series_save(const struct series *s, const char *path, char *err, size_t errlen);

/* Adds the lines a file of series_save holds to s, as of now (seconds, wall clock): points
 * older than SERIES_WINDOW_S are dropped, a line keeps its newest SERIES_POINTS, and a line
 * left with no point or already in s is skipped. The next series_sample of a loaded line only
 * sets its base, since the totals the file's points came from belonged to another process.
 * The file is trusted no more than any input: one that is not a regular file, is larger than
 * SERIES_FILE_MAX, does not parse, or holds a value of the wrong type, out of range (NaN,
 * negative, a rate above 1e9/s, an error % above 100, a point later than now plus a minute, or
 * going back in time), or beyond the bounds above is refused whole and s is left unchanged.
 * Returns the number of lines added, -ENOENT when path does not exist, -EINVAL for a refused
 * file (err says where in it and what is wrong), or another negative errno (err names it). */
int series_load(struct series *s, const char *path, double now, char *err, size_t errlen);

#endif
