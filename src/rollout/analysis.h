/* Analysis gates of a rollout: compares the new version (canary) with the stable one over the
 * same interval and returns pass, fail or inconclusive with the figures. Pure functions, no
 * allocation; control loop. */
#ifndef CUTOVER_ROLLOUT_ANALYSIS_H
#define CUTOVER_ROLLOUT_ANALYSIS_H

#include <stdint.h>

#include "config/config.h"
#include "core/hist.h"

/* What one version did over an interval (deltas of cumulative counters). */
struct analysis_sample {
    uint64_t requests;        /* answered (any status), including cutover's own errors */
    uint64_t errors_5xx;      /* 5xx answers from the version itself */
    uint64_t upstream_errors; /* connect failures, resets, timeouts toward the version */
    struct hist latency;      /* time to the response head, us */
};

enum analysis_result { ANALYSIS_PASS = 0, ANALYSIS_FAIL, ANALYSIS_INCONCLUSIVE };

struct analysis_verdict {
    enum analysis_result result;
    char gate[32];    /* the gate that failed: "max_error_rate", "max_p99_latency_ratio",
                         "max_p99_latency_ms"; "min_requests" when inconclusive; "" on pass */
    char detail[320]; /* one sentence with the figures, e.g. "error rate 0.300 (90/300, 99%
                         lower bound 0.258) > max 0.050" */
    double canary_error_rate, stable_error_rate;
    double canary_error_lower; /* one-sided lower confidence bound of canary's error rate */
    double canary_p50_ms, canary_p90_ms, canary_p99_ms;
    double stable_p50_ms, stable_p90_ms, stable_p99_ms;
    uint64_t canary_requests, stable_requests;
};

/* Judges one interval. Error rate = (errors_5xx + upstream_errors) / requests.
 * - canary->requests < a->min_requests -> INCONCLUSIVE (gate "min_requests").
 * - max_error_rate (if >= 0): FAIL when the one-sided lower bound of the canary's error rate at
 *   a->confidence (Wilson score interval) exceeds max_error_rate — a few unlucky errors at low
 *   traffic do not fail a good version, a clearly bad one fails fast.
 * - max_p99_latency_ms (if > 0): FAIL when canary p99 > it.
 * - max_p99_latency_ratio (if > 0): FAIL when canary p99 > ratio x stable p99, judged only when
 *   the stable version also has >= min_requests in the interval (else that gate is skipped).
 * Fills every figure of *v. */
void analysis_judge(const struct config_analysis *a, const struct analysis_sample *stable,
                    const struct analysis_sample *canary, struct analysis_verdict *v);

/* The Wilson score lower bound for k successes in n trials at one-sided confidence c
 * (0.5 <= c < 1); 0 when n == 0. */
double analysis_wilson_lower(uint64_t k, uint64_t n, double c);

/* The standard normal quantile z such that P(Z <= z) = p, 0 < p < 1 (Acklam's algorithm or
 * equivalent, |error| < 1e-6). */
double analysis_normal_quantile(double p);

#endif
