/* Analysis gates of a rollout (see analysis.h and docs/internals/analysis.md). One window alone
 * is judged on a Wilson lower confidence bound rather than the raw rate, so that a handful of
 * unlucky requests at low traffic does not roll back a good version; a step pools its windows
 * into a mixture SPRT whose false-alarm rate stays below 1 - confidence however many windows are
 * looked at. A value over its limit is never a pass. Pure functions, no allocation; run on the
 * control loop once per analysis interval. */
#include "rollout/analysis.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Acklam's rational approximation of the inverse normal CDF (relative error < 1.15e-9), then
 * one Halley step against erfc, which brings it to double precision. */
static const double acklam_a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                  -2.759285104469687e+02, 1.383577518672690e+02,
                                  -3.066479806614716e+01, 2.506628277459239e+00};
static const double acklam_b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                  -1.556989798598866e+02, 6.680131188771972e+01,
                                  -1.328068155288572e+01};
static const double acklam_c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                  -2.400758277161838e+00, -2.549732539343734e+00,
                                  4.374664141464968e+00,  2.938163982698783e+00};
static const double acklam_d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                  2.445134137142996e+00, 3.754408661907416e+00};
#define ACKLAM_P_LOW 0.02425
#define SQRT_2PI 2.50662827463100050242

/* The quantile for 0 < p <= 0.5. The upper half is served by symmetry, because 1 - p is exact
 * there (p >= 0.5) while the CDF near 1 would lose the tail's digits in the refinement. */
static double quantile_lower_half(double p)
{
    const double *a = acklam_a, *b = acklam_b, *c = acklam_c, *d = acklam_d;
    double x, e, u;

    if (p < ACKLAM_P_LOW) {
        double q = sqrt(-2 * log(p));

        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        double q = p - 0.5, r = q * q;

        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    /* Halley refinement: e is the CDF error at x, u = e / pdf(x). */
    e = 0.5 * erfc(-x / sqrt(2)) - p;
    u = e * SQRT_2PI * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

double analysis_normal_quantile(double p)
{
    if (isnan(p))
        return p;
    if (p <= 0)
        return -INFINITY;
    if (p >= 1)
        return INFINITY;
    return p <= 0.5 ? quantile_lower_half(p) : -quantile_lower_half(1 - p);
}

double analysis_wilson_lower(uint64_t k, uint64_t n, double c)
{
    double z, z2, nn, p, centre, spread, lower;

    if (n == 0)
        return 0;
    if (k > n)
        k = n;
    /* The config accepts 0.5 <= c < 1; keep z finite even if a caller slips. */
    if (!(c >= 0.5))
        c = 0.5;
    if (c > 1 - 1e-15)
        c = 1 - 1e-15;
    z = analysis_normal_quantile(c);
    z2 = z * z;
    nn = (double)n;
    p = (double)k / nn;
    centre = p + z2 / (2 * nn);
    spread = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    lower = (centre - spread) / (1 + z2 / nn);
    /* With k == 0 the two terms cancel exactly in theory; rounding may leave -1e-17. */
    return lower > 0 ? lower : 0;
}

/* Appends to v->detail; a sentence too long for the buffer is cut, never overrun. */
static void detail_add(struct analysis_verdict *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void detail_add(struct analysis_verdict *v, const char *fmt, ...)
{
    size_t used = strlen(v->detail);
    va_list ap;

    if (used + 1 >= sizeof(v->detail))
        return;
    va_start(ap, fmt);
    vsnprintf(v->detail + used, sizeof(v->detail) - used, fmt, ap);
    va_end(ap);
}

/* Formats a latency in ms with three significant figures or so ("0.85", "12.3", "1234"). */
static const char *fmt_ms(double ms, char *buf, size_t n)
{
    if (ms < 10)
        snprintf(buf, n, "%.2f", ms);
    else if (ms < 100)
        snprintf(buf, n, "%.1f", ms);
    else
        snprintf(buf, n, "%.0f", ms);
    return buf;
}

/* Formats an error rate: three decimals, more only for very small limits ("0.050", "0.0005"). */
static const char *fmt_rate(double r, char *buf, size_t n)
{
    if (r == 0 || r >= 0.001)
        snprintf(buf, n, "%.3f", r);
    else
        snprintf(buf, n, "%.2g", r);
    return buf;
}

static void set_gate(struct analysis_verdict *v, enum analysis_result r, const char *gate)
{
    v->result = r;
    snprintf(v->gate, sizeof(v->gate), "%s", gate);
}

/* "error rate 0.300 (90/300, 99% lower bound 0.243) > max 0.050", with cmp as the operator. */
static void error_sentence(struct analysis_verdict *v, uint64_t errors, double confidence,
                           double max, const char *cmp)
{
    char r[24], lb[24], mx[24];

    detail_add(v, "error rate %s (%llu/%llu, %g%% lower bound %s) %s max %s",
               fmt_rate(v->canary_error_rate, r, sizeof(r)), (unsigned long long)errors,
               (unsigned long long)v->canary_requests, confidence * 100,
               fmt_rate(v->canary_error_lower, lb, sizeof(lb)), cmp, fmt_rate(max, mx, sizeof(mx)));
}

/* The p99 gates ask "is more than 1 % of the new version's requests slower than limit_ms?".
 * Reading that off one sample's p99 makes a few slow requests decide (at 300 requests, p99 is
 * the 3rd slowest: one scheduling hiccup fails a good version). So, like the error-rate gate,
 * it is a one-sided test: the share of requests slower than the limit must exceed 1 % with the
 * configured confidence (Wilson lower bound), which takes a real shift of the tail. */
static uint64_t tail_count(const struct hist *h, double limit_ms)
{
    uint64_t slow = 0;
    double limit_us = limit_ms * 1000.0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
        if (h->counts[b] && hist_bucket_value(b) > limit_us)
            slow += h->counts[b];
    return slow;
}

static int tail_exceeds(const struct hist *h, double limit_ms, double confidence)
{
    return analysis_wilson_lower(tail_count(h, limit_ms), hist_count(h), confidence) > 0.01;
}

static const char *const gate_names[] = {"max_error_rate", "max_p99_latency_ms",
                                         "max_p99_latency_ratio"};
enum { GATE_ERR = 0, GATE_MS, GATE_RATIO, GATES };

/* Fills the window figures of *v and returns the canary's error count (clamped). */
static uint64_t fill_window(const struct analysis_sample *stable,
                            const struct analysis_sample *canary, const struct config_analysis *a,
                            struct analysis_verdict *v)
{
    uint64_t cerr = canary->errors_5xx + canary->upstream_errors;
    uint64_t serr = stable->errors_5xx + stable->upstream_errors;

    memset(v, 0, sizeof(*v));
    v->reference = a->baseline ? "baseline" : "stable";
    /* Cutover counts its own failed answers as requests too, so errors cannot exceed requests
     * unless two counters were read at different moments; clamp rather than report 103 %. */
    if (cerr > canary->requests)
        cerr = canary->requests;
    if (serr > stable->requests)
        serr = stable->requests;
    v->canary_requests = canary->requests;
    v->stable_requests = stable->requests;
    v->canary_error_rate = canary->requests ? (double)cerr / (double)canary->requests : 0;
    v->stable_error_rate = stable->requests ? (double)serr / (double)stable->requests : 0;
    v->canary_error_lower = analysis_wilson_lower(cerr, canary->requests, a->confidence);
    v->canary_p50_ms = hist_quantile(&canary->latency, 0.50) / 1000;
    v->canary_p90_ms = hist_quantile(&canary->latency, 0.90) / 1000;
    v->canary_p99_ms = hist_quantile(&canary->latency, 0.99) / 1000;
    v->stable_p50_ms = hist_quantile(&stable->latency, 0.50) / 1000;
    v->stable_p90_ms = hist_quantile(&stable->latency, 0.90) / 1000;
    v->stable_p99_ms = hist_quantile(&stable->latency, 0.99) / 1000;
    return cerr;
}

static void set_test(struct analysis_verdict *v, const char *test)
{
    snprintf(v->test, sizeof(v->test), "%s", test);
}

/* The latency part of a pass sentence: "; p99 12.0 ms <= max 500 ms, stable 11.9 ms (ratio
 * 1.01 <= max 1.50)". */
static void latency_pass(struct analysis_verdict *v, const struct config_analysis *a,
                         const struct analysis_sample *stable)
{
    char b1[24];

    detail_add(v, "; p99 %s ms", fmt_ms(v->canary_p99_ms, b1, sizeof(b1)));
    if (a->max_p99_latency_ms > 0)
        detail_add(v, " <= max %s ms", fmt_ms(a->max_p99_latency_ms, b1, sizeof(b1)));
    if (a->max_p99_latency_ratio > 0 && stable->requests < a->min_requests) {
        detail_add(v, "; ratio to %s not judged (%s had %llu requests < %llu)", v->reference,
                   v->reference, (unsigned long long)stable->requests,
                   (unsigned long long)a->min_requests);
    } else if (a->max_p99_latency_ratio > 0) {
        detail_add(v, ", %s %s ms (ratio %.2f <= max %.2f)", v->reference,
                   fmt_ms(v->stable_p99_ms, b1, sizeof(b1)),
                   v->stable_p99_ms > 0 ? v->canary_p99_ms / v->stable_p99_ms : 0,
                   a->max_p99_latency_ratio);
    } else if (stable->requests > 0) {
        detail_add(v, ", %s %s ms", v->reference, fmt_ms(v->stable_p99_ms, b1, sizeof(b1)));
    }
}

void analysis_judge(const struct config_analysis *a, const struct analysis_sample *stable,
                    const struct analysis_sample *canary, struct analysis_verdict *v)
{
    uint64_t cerr = fill_window(stable, canary, a, v);
    int stable_enough = stable->requests >= a->min_requests;
    double ratio_ms = a->max_p99_latency_ratio * v->stable_p99_ms;
    int fail[GATES] = {0}, over[GATES] = {0};
    char b1[24], b2[24], b3[24];

    set_test(v, ANALYSIS_TEST_WINDOW);
    if (canary->requests < a->min_requests) {
        set_gate(v, ANALYSIS_INCONCLUSIVE, "min_requests");
        detail_add(v, "only %llu canary requests in the interval, fewer than min_requests %llu",
                   (unsigned long long)canary->requests, (unsigned long long)a->min_requests);
        return;
    }
    v->window_done = 1;

    if (a->max_error_rate >= 0) {
        over[GATE_ERR] = v->canary_error_rate > a->max_error_rate;
        fail[GATE_ERR] = v->canary_error_lower > a->max_error_rate;
    }
    if (a->max_p99_latency_ms > 0) {
        over[GATE_MS] = v->canary_p99_ms > a->max_p99_latency_ms;
        fail[GATE_MS] =
            over[GATE_MS] && tail_exceeds(&canary->latency, a->max_p99_latency_ms, a->confidence);
    }
    if (a->max_p99_latency_ratio > 0 && stable_enough) {
        over[GATE_RATIO] = v->canary_p99_ms > ratio_ms;
        fail[GATE_RATIO] =
            over[GATE_RATIO] && tail_exceeds(&canary->latency, ratio_ms, a->confidence);
    }

    if (fail[GATE_ERR]) {
        set_gate(v, ANALYSIS_FAIL, gate_names[GATE_ERR]);
        error_sentence(v, cerr, a->confidence, a->max_error_rate, ">");
        return;
    }
    if (fail[GATE_MS]) {
        set_gate(v, ANALYSIS_FAIL, gate_names[GATE_MS]);
        detail_add(v, "p99 latency %s ms > max %s ms (p50 %s ms, %llu requests)",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   fmt_ms(a->max_p99_latency_ms, b2, sizeof(b2)),
                   fmt_ms(v->canary_p50_ms, b3, sizeof(b3)), (unsigned long long)canary->requests);
        return;
    }
    if (fail[GATE_RATIO]) {
        set_gate(v, ANALYSIS_FAIL, gate_names[GATE_RATIO]);
        detail_add(v, "p99 latency %s ms is %.2fx %s's %s ms > max ratio %.2f",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   v->stable_p99_ms > 0 ? v->canary_p99_ms / v->stable_p99_ms : INFINITY,
                   v->reference, fmt_ms(v->stable_p99_ms, b2, sizeof(b2)),
                   a->max_p99_latency_ratio);
        return;
    }

    /* Over a limit without enough evidence: not a failure, and not a pass either. */
    if (over[GATE_ERR]) {
        set_gate(v, ANALYSIS_INCONCLUSIVE, gate_names[GATE_ERR]);
        error_sentence(v, cerr, a->confidence, a->max_error_rate, "above");
        detail_add(v, ": not significant yet");
        return;
    }
    if (over[GATE_MS]) {
        set_gate(v, ANALYSIS_INCONCLUSIVE, gate_names[GATE_MS]);
        detail_add(v,
                   "p99 latency %s ms above max %s ms but only %llu of %llu requests slower: "
                   "not significant yet",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   fmt_ms(a->max_p99_latency_ms, b2, sizeof(b2)),
                   (unsigned long long)tail_count(&canary->latency, a->max_p99_latency_ms),
                   (unsigned long long)hist_count(&canary->latency));
        return;
    }
    if (over[GATE_RATIO]) {
        set_gate(v, ANALYSIS_INCONCLUSIVE, gate_names[GATE_RATIO]);
        detail_add(v,
                   "p99 latency %s ms is %.2fx %s's %s ms, above max ratio %.2f, but only "
                   "%llu of %llu requests slower than %s ms: not significant yet",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   v->stable_p99_ms > 0 ? v->canary_p99_ms / v->stable_p99_ms : INFINITY,
                   v->reference, fmt_ms(v->stable_p99_ms, b2, sizeof(b2)), a->max_p99_latency_ratio,
                   (unsigned long long)tail_count(&canary->latency, ratio_ms),
                   (unsigned long long)hist_count(&canary->latency),
                   fmt_ms(ratio_ms, b3, sizeof(b3)));
        return;
    }

    /* Passed: say what was judged, so "pass" is never mistaken for "nothing was checked". */
    set_gate(v, ANALYSIS_PASS, "");
    if (a->max_error_rate >= 0) {
        error_sentence(v, cerr, a->confidence, a->max_error_rate, "<=");
    } else {
        detail_add(v, "error rate %s (%llu/%llu)", fmt_rate(v->canary_error_rate, b1, sizeof(b1)),
                   (unsigned long long)cerr, (unsigned long long)canary->requests);
    }
    latency_pass(v, a, stable);
}

/* ---------------------------------------------------------------- sequential test ---------- */

/* The alternatives of the mixture: a version 2x, 4x or 10x worse than its limit. Most of the
 * weight sits on 2x, the smallest regression the gate is asked to catch quickly; the larger
 * ones make a grossly bad version fail on very few requests (6 errors in 20 at a 5 % limit),
 * which a pure 2x SPRT would be slow to see. Each weight costs ln(1/w) of evidence for its
 * alternative (0.69 for 2x). */
static const double seq_mult[] = {2, 4, 10};
static const double seq_weight[] = {0.5, 0.25, 0.25};
#define SEQ_ALTS (sizeof(seq_mult) / sizeof(seq_mult[0]))
/* "p99 <= limit" is "at most 1 % of requests slower than the limit". */
#define SLOW_SHARE 0.01

void analysis_seq_reset(struct analysis_seq *q)
{
    memset(q, 0, sizeof(*q));
}

double analysis_seq_llr(uint64_t k, uint64_t n, double p0)
{
    double t[SEQ_ALTS], top = -INFINITY, sum = 0;

    if (k > n)
        k = n;
    if (isnan(p0) || p0 >= 1)
        return 0;
    if (p0 <= 0)
        return k > 0 ? INFINITY : 0;
    for (size_t j = 0; j < SEQ_ALTS; j++) {
        double p1 = seq_mult[j] * p0;

        if (p1 > (1 + p0) / 2)
            p1 = (1 + p0) / 2;
        /* log1p keeps the (n - k) term exact for small rates. */
        t[j] = log(seq_weight[j]) + (double)k * log(p1 / p0) +
               (double)(n - k) * (log1p(-p1) - log1p(-p0));
        if (t[j] > top)
            top = t[j];
    }
    for (size_t j = 0; j < SEQ_ALTS; j++)
        sum += exp(t[j] - top);
    return top + log(sum);
}

double analysis_seq_bound(double confidence)
{
    if (!(confidence >= 0.5))
        confidence = 0.5;
    if (confidence > 1 - 1e-15)
        confidence = 1 - 1e-15;
    return -log1p(-confidence);
}

/* One gate as the sequential test sees it: its window and pooled counts against p0. */
struct seq_gate {
    int on;
    uint64_t wk, wn;                /* this window */
    struct analysis_seq_count pool; /* the step so far, this window included */
    double p0, llr, limit_ms;
};

static const char *plural(unsigned n)
{
    return n == 1 ? "" : "s";
}

static int seq_over(uint64_t k, uint64_t n, double p0)
{
    return n > 0 && (double)k > p0 * (double)n;
}

/* "error rate 0.030 (6/200) above max 0.020" or "2.5% (5/200) slower than 500 ms above 1%". */
static void seq_sentence(struct analysis_verdict *v, int g, uint64_t k, uint64_t n,
                         const struct seq_gate *sg, const struct config_analysis *a,
                         const char *cmp)
{
    char b1[24], b2[24];
    double r = n ? (double)k / (double)n : 0;

    if (g == GATE_ERR) {
        detail_add(v, "error rate %s (%llu/%llu) %s max %s", fmt_rate(r, b1, sizeof(b1)),
                   (unsigned long long)k, (unsigned long long)n, cmp,
                   fmt_rate(a->max_error_rate, b2, sizeof(b2)));
    } else if (g == GATE_MS) {
        detail_add(v, "%.1f%% (%llu/%llu) slower than max p99 %s ms %s 1%%", r * 100,
                   (unsigned long long)k, (unsigned long long)n,
                   fmt_ms(sg->limit_ms, b1, sizeof(b1)), cmp);
    } else {
        detail_add(v, "%.1f%% (%llu/%llu) slower than %.2fx %s's p99 %s 1%%", r * 100,
                   (unsigned long long)k, (unsigned long long)n, a->max_p99_latency_ratio,
                   v->reference, cmp);
    }
}

void analysis_seq_judge(struct analysis_seq *q, const struct config_analysis *a,
                        const struct analysis_sample *stable, const struct analysis_sample *canary,
                        int step_end, struct analysis_verdict *v)
{
    uint64_t cerr = fill_window(stable, canary, a, v);
    int stable_enough = stable->requests >= a->min_requests;
    struct seq_gate sg[GATES];
    int first_over = -1, first_worse = -1;
    char b1[24];

    memset(sg, 0, sizeof(sg));
    v->bound = analysis_seq_bound(a->confidence);
    if (!step_end && canary->requests < a->min_requests) {
        set_test(v, ANALYSIS_TEST_WINDOW);
        set_gate(v, ANALYSIS_INCONCLUSIVE, "min_requests");
        detail_add(v, "only %llu canary requests in the interval, fewer than min_requests %llu",
                   (unsigned long long)canary->requests, (unsigned long long)a->min_requests);
        v->windows = q->windows;
        v->pooled_requests = q->errors.n;
        v->pooled_errors = q->errors.k;
        return;
    }
    v->window_done = 1;

    /* Pool the window. Each gate's count is Bernoulli given its limit, and the ratio gate's
     * limit comes from the stable version's requests, not the canary's: pooling keeps the
     * martingale property the bound rests on. */
    sg[GATE_ERR].on = a->max_error_rate >= 0;
    sg[GATE_ERR].wk = cerr;
    sg[GATE_ERR].wn = canary->requests;
    sg[GATE_ERR].p0 = a->max_error_rate;
    sg[GATE_MS].on = a->max_p99_latency_ms > 0;
    sg[GATE_MS].limit_ms = a->max_p99_latency_ms;
    sg[GATE_RATIO].on = a->max_p99_latency_ratio > 0;
    sg[GATE_RATIO].limit_ms = a->max_p99_latency_ratio * v->stable_p99_ms;
    for (int g = GATE_MS; g <= GATE_RATIO; g++) {
        sg[g].p0 = SLOW_SHARE;
        if (sg[g].on && (g == GATE_MS || (stable_enough && v->stable_p99_ms > 0))) {
            sg[g].wk = tail_count(&canary->latency, sg[g].limit_ms);
            sg[g].wn = hist_count(&canary->latency);
        }
    }
    q->windows++;
    q->errors.n += canary->requests;
    q->errors.k += cerr;
    q->slow_ms.n += sg[GATE_MS].wn;
    q->slow_ms.k += sg[GATE_MS].wk;
    q->slow_ratio.n += sg[GATE_RATIO].wn;
    q->slow_ratio.k += sg[GATE_RATIO].wk;
    sg[GATE_ERR].pool = q->errors;
    sg[GATE_MS].pool = q->slow_ms;
    sg[GATE_RATIO].pool = q->slow_ratio;

    for (int g = 0; g < GATES; g++) {
        if (!sg[g].on)
            continue;
        sg[g].llr = analysis_seq_llr(sg[g].pool.k, sg[g].pool.n, sg[g].p0);
        if (first_worse < 0 && sg[g].llr >= v->bound)
            first_worse = g;
        if (first_over < 0 && (seq_over(sg[g].pool.k, sg[g].pool.n, sg[g].p0) ||
                               (!step_end && seq_over(sg[g].wk, sg[g].wn, sg[g].p0))))
            first_over = g;
    }
    v->windows = q->windows;
    v->pooled_requests = q->errors.n;
    v->pooled_errors = q->errors.k;
    v->error_llr = sg[GATE_ERR].llr;
    {
        /* The latency figures: the gate in question, else the one with more evidence. */
        int lg = first_worse >= GATE_MS                 ? first_worse
                 : first_over >= GATE_MS                ? first_over
                 : !sg[GATE_MS].on                      ? GATE_RATIO
                 : !sg[GATE_RATIO].on                   ? GATE_MS
                 : sg[GATE_RATIO].llr > sg[GATE_MS].llr ? GATE_RATIO
                                                        : GATE_MS;
        if (sg[lg].on) {
            v->slow_llr = sg[lg].llr;
            v->pooled_slow = sg[lg].pool.k;
            v->pooled_slow_n = sg[lg].pool.n;
        }
    }

    if (first_worse >= 0) {
        const struct seq_gate *g = &sg[first_worse];

        set_test(v, ANALYSIS_TEST_SEQUENTIAL);
        set_gate(v, ANALYSIS_FAIL, gate_names[first_worse]);
        detail_add(v, "%s over %u window%s: ", ANALYSIS_TEST_SEQUENTIAL, q->windows,
                   plural(q->windows));
        seq_sentence(v, first_worse, g->pool.k, g->pool.n, g, a, ">");
        detail_add(v, ", log LR %.2f >= bound %.2f", g->llr, v->bound);
        return;
    }
    if (step_end) {
        set_test(v, ANALYSIS_TEST_SEQUENTIAL);
        detail_add(v, "%s over %u window%s: ", ANALYSIS_TEST_SEQUENTIAL, q->windows,
                   plural(q->windows));
        if (q->errors.n < a->min_requests) {
            set_gate(v, ANALYSIS_INCONCLUSIVE, "min_requests");
            detail_add(v, "only %llu canary requests in the step, fewer than min_requests %llu",
                       (unsigned long long)q->errors.n, (unsigned long long)a->min_requests);
            return;
        }
        if (first_over >= 0) {
            const struct seq_gate *g = &sg[first_over];

            set_gate(v, ANALYSIS_INCONCLUSIVE, gate_names[first_over]);
            seq_sentence(v, first_over, g->pool.k, g->pool.n, g, a, "above");
            detail_add(v, ", not significant (log LR %.2f < bound %.2f)", g->llr, v->bound);
            return;
        }
        set_gate(v, ANALYSIS_PASS, "");
        if (!sg[GATE_ERR].on)
            detail_add(v, "error rate %s (%llu/%llu), not gated",
                       fmt_rate(q->errors.n ? (double)q->errors.k / (double)q->errors.n : 0, b1,
                                sizeof(b1)),
                       (unsigned long long)q->errors.k, (unsigned long long)q->errors.n);
        for (int g = 0; g < GATES; g++) {
            if (!sg[g].on)
                continue;
            if (g > 0 || !sg[GATE_ERR].on)
                detail_add(v, "; ");
            seq_sentence(v, g, sg[g].pool.k, sg[g].pool.n, &sg[g], a, "<=");
            detail_add(v, " (log LR %.2f < %.2f)", sg[g].llr, v->bound);
        }
        return;
    }
    /* Mid-step: the window says whether it is within its limits; the pool says how strong the
     * evidence is so far. */
    set_test(v, ANALYSIS_TEST_WINDOW);
    if (first_over >= 0) {
        const struct seq_gate *g = &sg[first_over];
        int win = seq_over(g->wk, g->wn, g->p0);

        set_gate(v, ANALYSIS_INCONCLUSIVE, gate_names[first_over]);
        detail_add(v, "window: ");
        if (win)
            seq_sentence(v, first_over, g->wk, g->wn, g, a, "above");
        else
            detail_add(v, "within its limit but the step's pool is above it");
        detail_add(v,
                   "; pooled %llu/%llu over %u window%s, log LR %.2f < bound %.2f: not "
                   "significant yet",
                   (unsigned long long)g->pool.k, (unsigned long long)g->pool.n, q->windows,
                   plural(q->windows), g->llr, v->bound);
        return;
    }
    set_gate(v, ANALYSIS_PASS, "");
    detail_add(v, "window: ");
    if (sg[GATE_ERR].on) {
        seq_sentence(v, GATE_ERR, cerr, canary->requests, &sg[GATE_ERR], a, "<=");
        detail_add(v, "; pooled %llu/%llu over %u window%s, log LR %.2f < bound %.2f",
                   (unsigned long long)q->errors.k, (unsigned long long)q->errors.n, q->windows,
                   plural(q->windows), sg[GATE_ERR].llr, v->bound);
    } else {
        detail_add(v, "error rate %s (%llu/%llu)", fmt_rate(v->canary_error_rate, b1, sizeof(b1)),
                   (unsigned long long)cerr, (unsigned long long)canary->requests);
    }
    latency_pass(v, a, stable);
}
