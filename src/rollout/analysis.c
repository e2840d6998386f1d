/* Analysis gates of a rollout (see analysis.h and docs/internals/analysis.md): the error-rate
 * gate judges a Wilson lower confidence bound rather than the raw rate, so that a handful of
 * unlucky requests at low traffic does not roll back a good version. Pure functions, no
 * allocation; run on the control loop once per analysis interval. */
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

void analysis_judge(const struct config_analysis *a, const struct analysis_sample *stable,
                    const struct analysis_sample *canary, struct analysis_verdict *v)
{
    uint64_t cerr = canary->errors_5xx + canary->upstream_errors;
    uint64_t serr = stable->errors_5xx + stable->upstream_errors;
    int stable_enough = stable->requests >= a->min_requests;
    char b1[24], b2[24], b3[24];

    memset(v, 0, sizeof(*v));
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

    if (canary->requests < a->min_requests) {
        set_gate(v, ANALYSIS_INCONCLUSIVE, "min_requests");
        detail_add(v, "only %llu canary requests in the interval, fewer than min_requests %llu",
                   (unsigned long long)canary->requests, (unsigned long long)a->min_requests);
        return;
    }

    if (a->max_error_rate >= 0 && v->canary_error_lower > a->max_error_rate) {
        set_gate(v, ANALYSIS_FAIL, "max_error_rate");
        error_sentence(v, cerr, a->confidence, a->max_error_rate, ">");
        return;
    }

    if (a->max_p99_latency_ms > 0 && v->canary_p99_ms > a->max_p99_latency_ms &&
        tail_exceeds(&canary->latency, a->max_p99_latency_ms, a->confidence)) {
        set_gate(v, ANALYSIS_FAIL, "max_p99_latency_ms");
        detail_add(v, "p99 latency %s ms > max %s ms (p50 %s ms, %llu requests)",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   fmt_ms(a->max_p99_latency_ms, b2, sizeof(b2)),
                   fmt_ms(v->canary_p50_ms, b3, sizeof(b3)), (unsigned long long)canary->requests);
        return;
    }

    if (a->max_p99_latency_ratio > 0 && stable_enough &&
        v->canary_p99_ms > a->max_p99_latency_ratio * v->stable_p99_ms &&
        tail_exceeds(&canary->latency, a->max_p99_latency_ratio * v->stable_p99_ms,
                     a->confidence)) {
        set_gate(v, ANALYSIS_FAIL, "max_p99_latency_ratio");
        detail_add(v, "p99 latency %s ms is %.2fx stable's %s ms > max ratio %.2f",
                   fmt_ms(v->canary_p99_ms, b1, sizeof(b1)),
                   v->stable_p99_ms > 0 ? v->canary_p99_ms / v->stable_p99_ms : INFINITY,
                   fmt_ms(v->stable_p99_ms, b2, sizeof(b2)), a->max_p99_latency_ratio);
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
    detail_add(v, "; p99 %s ms", fmt_ms(v->canary_p99_ms, b1, sizeof(b1)));
    if (a->max_p99_latency_ms > 0)
        detail_add(v, " <= max %s ms", fmt_ms(a->max_p99_latency_ms, b1, sizeof(b1)));
    if (a->max_p99_latency_ratio > 0 && !stable_enough) {
        detail_add(v, "; ratio to stable not judged (stable had %llu requests < %llu)",
                   (unsigned long long)stable->requests, (unsigned long long)a->min_requests);
    } else if (a->max_p99_latency_ratio > 0 && v->stable_p99_ms > 0 &&
               v->canary_p99_ms > a->max_p99_latency_ratio * v->stable_p99_ms) {
        double lim = a->max_p99_latency_ratio * v->stable_p99_ms;
        detail_add(v,
                   ", stable %s ms: ratio %.2f above max %.2f but only %llu of %llu requests "
                   "slower than %s ms, not a significant tail",
                   fmt_ms(v->stable_p99_ms, b1, sizeof(b1)), v->canary_p99_ms / v->stable_p99_ms,
                   a->max_p99_latency_ratio, (unsigned long long)tail_count(&canary->latency, lim),
                   (unsigned long long)hist_count(&canary->latency), fmt_ms(lim, b2, sizeof(b2)));
    } else if (a->max_p99_latency_ratio > 0) {
        detail_add(v, ", stable %s ms (ratio %.2f <= max %.2f)",
                   fmt_ms(v->stable_p99_ms, b1, sizeof(b1)),
                   v->stable_p99_ms > 0 ? v->canary_p99_ms / v->stable_p99_ms : 0,
                   a->max_p99_latency_ratio);
    } else if (stable->requests > 0) {
        detail_add(v, ", stable %s ms", fmt_ms(v->stable_p99_ms, b1, sizeof(b1)));
    }
}
