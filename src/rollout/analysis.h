/* Analysis gates of a rollout: compares the new version (canary) with the stable one over the
 * same interval and returns pass, fail or inconclusive with the figures. "Stable" below is the
 * reference the caller passes: the live version's set, or its fresh baseline when
 * a->baseline (the sentences then say "baseline"). Pure functions, no allocation; control
 * loop. */
#ifndef CUTOVER_ROLLOUT_ANALYSIS_H
#define CUTOVER_ROLLOUT_ANALYSIS_H

#include <stdint.h>

#include "config/config.h"
#include "core/hist.h"
#include "proxy/route.h"

/* What one version did over an interval (deltas of cumulative counters). */
struct analysis_sample {
    uint64_t requests;        /* answered (any status), including cutover's own errors */
    uint64_t errors_5xx;      /* 5xx answers from the version itself */
    uint64_t upstream_errors; /* connect failures, resets, timeouts toward the version */
    struct hist latency;      /* time to the response head, us */
    /* requests cutover failed or cut, by reason (the data plane's enum worker_loss, in order) */
    uint64_t lost[ROUTE_LOSSES];
};

enum analysis_result { ANALYSIS_PASS = 0, ANALYSIS_FAIL, ANALYSIS_INCONCLUSIVE };

/* Names of the test that decided a verdict (analysis_verdict.test). */
#define ANALYSIS_TEST_WINDOW "window"
#define ANALYSIS_TEST_SEQUENTIAL "sequential (mSPRT)"

struct analysis_verdict {
    enum analysis_result result;
    char test[24];    /* which test decided: ANALYSIS_TEST_WINDOW or ANALYSIS_TEST_SEQUENTIAL */
    char gate[32];    /* the gate that failed or is in doubt: "max_error_rate",
                         "max_p99_latency_ratio", "max_p99_latency_ms"; "min_requests" when
                         there were too few requests; "" on pass */
    char detail[400]; /* one sentence with the figures, e.g. "error rate 0.300 (90/300, 99%
                         lower bound 0.258) > max 0.050" */
    int window_done;  /* the window was judged (the caller starts a new one); 0 when it had
                         fewer than min_requests and should keep growing */
    /* What the stable_* figures are of: "stable" (the live version's long-running set) or
     * "baseline" (its fresh instances, when a->baseline says so: rollout/baseline.h). A
     * static string. */
    const char *reference;
    double canary_error_rate, stable_error_rate;
    double canary_error_lower; /* one-sided lower confidence bound of canary's error rate */
    double canary_p50_ms, canary_p90_ms, canary_p99_ms;
    double stable_p50_ms, stable_p90_ms, stable_p99_ms;
    uint64_t canary_requests, stable_requests;
    /* The step's pooled evidence (analysis_seq_judge only; zero from analysis_judge). */
    unsigned windows;                        /* windows pooled in the step so far (a step
                                                end's tail counts, even an empty one) */
    uint64_t pooled_requests, pooled_errors; /* canary, over those windows */
    uint64_t pooled_slow, pooled_slow_n;     /* of the latency gate named in gate, else of the
                                                one with the larger log ratio */
    double error_llr, slow_llr;              /* log mixture likelihood ratios, 0 if off */
    double bound;                            /* ln(1 / (1 - confidence)): fail at or above */
};

/* Judges one interval on its own (the window test). Error rate = (errors_5xx +
 * upstream_errors) / requests.
 * - canary->requests < a->min_requests -> INCONCLUSIVE (gate "min_requests"), window_done 0.
 * - max_error_rate (if >= 0): FAIL when the one-sided lower bound of the canary's error rate at
 *   a->confidence (Wilson score interval) exceeds max_error_rate — a few unlucky errors at low
 *   traffic do not fail a good version, a clearly bad one fails fast.
 * - max_p99_latency_ms (if > 0): FAIL when canary p99 > it and the share of requests slower
 *   than it is significantly above 1 % (Wilson lower bound at a->confidence).
 * - max_p99_latency_ratio (if > 0): the same against ratio x stable p99, judged only when the
 *   stable version also has >= min_requests in the interval (else that gate is skipped).
 * - A gate whose observed value is over its limit without failing makes the verdict
 *   INCONCLUSIVE (that gate named), never PASS.
 * FAIL wins over INCONCLUSIVE; among equals the first gate in the order above is named.
 * Fills every figure of *v. Looked at window after window, its false alarms add up: the plan
 * uses analysis_seq_judge. */
void analysis_judge(const struct config_analysis *a, const struct analysis_sample *stable,
                    const struct analysis_sample *canary, struct analysis_verdict *v);

/* A step's pooled evidence for the sequential test; the caller keeps one per step (plain data,
 * copyable) and resets it when a step starts. */
struct analysis_seq_count {
    uint64_t n, k; /* trials, events (requests, errors or slow requests) */
};

struct analysis_seq {
    unsigned windows;
    struct analysis_seq_count errors;     /* requests, failed requests */
    struct analysis_seq_count slow_ms;    /* requests slower than max_p99_latency_ms */
    struct analysis_seq_count slow_ratio; /* slower than ratio x that window's stable p99 */
};

void analysis_seq_reset(struct analysis_seq *q);

/* Log of the mixture likelihood ratio of k events in n trials for H1 "p is 2, 4 or 10 times
 * p0" (weights 1/2, 1/4, 1/4; an alternative is capped at (1 + p0) / 2) against H0 "p = p0".
 * Under any p <= p0 its exponential is a nonnegative supermartingale in n, so by Ville's
 * inequality it ever reaches ln(1/alpha) with probability <= alpha, however often it is looked
 * at. p0 <= 0: +inf once k > 0, else 0. p0 >= 1: 0. */
double analysis_seq_llr(uint64_t k, uint64_t n, double p0);

/* ln(1 / (1 - confidence)), confidence clamped to [0.5, 1 - 1e-15]. */
double analysis_seq_bound(double confidence);

/* Judges one window and, unless it is too small, adds it to the step's pool q.
 * - !step_end and canary->requests < a->min_requests: INCONCLUSIVE "min_requests", nothing
 *   pooled, window_done 0 (the window keeps growing). At step_end any window is pooled.
 * - FAIL (test "sequential (mSPRT)") when the pooled log likelihood ratio of a gate reaches
 *   analysis_seq_bound(a->confidence): max_error_rate on the error count (p0 = the maximum);
 *   max_p99_latency_ms and max_p99_latency_ratio on the count of requests slower than the
 *   limit (p0 = 0.01, "p99 <= limit"); the ratio's limit is ratio x the stable p99 of each
 *   window, pooled only from windows where stable had >= min_requests.
 * - Otherwise, mid-step (test "window"): INCONCLUSIVE when the window's or the pool's observed
 *   value is over a limit (error rate > max, share slower than a latency limit > 1 %), PASS
 *   otherwise.
 * - Otherwise, at step_end (test "sequential (mSPRT)"): INCONCLUSIVE "min_requests" when the
 *   pool holds fewer than min_requests; INCONCLUSIVE when the pool's observed value is over a
 *   limit; PASS otherwise. A step passes on "no significant failure, and the pooled value
 *   within its limit", not on a proof that the version is good.
 * Fills every figure of *v (window figures as analysis_judge, pooled ones from q). */
void analysis_seq_judge(struct analysis_seq *q, const struct config_analysis *a,
                        const struct analysis_sample *stable, const struct analysis_sample *canary,
                        int step_end, struct analysis_verdict *v);

/* The Wilson score lower bound for k successes in n trials at one-sided confidence c
 * (0.5 <= c < 1); 0 when n == 0. */
double analysis_wilson_lower(uint64_t k, uint64_t n, double c);

/* The standard normal quantile z such that P(Z <= z) = p, 0 < p < 1 (Acklam's algorithm or
 * equivalent, |error| < 1e-6). */
double analysis_normal_quantile(double p);

#endif
