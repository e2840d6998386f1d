/* Unit tests of rollout/analysis: the normal quantile and the Wilson bound against reference
 * values, each gate of analysis_judge (pass, fail, inconclusive, skipped), and a simulation of
 * the false-positive rate of the error gate on a good canary. Fixed-seed PRNG: deterministic. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rollout/analysis.h"

/* splitmix64, as in test_hist.c. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static void assert_near(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("got %.9f, want %.9f (+- %g)", got, want, tol);
}

/* Plan defaults of config.c, with the error-rate gate at 5 %. */
static struct config_analysis defaults(void)
{
    struct config_analysis a = {
        .enabled = 1,
        .interval_ms = 10000,
        .min_requests = 100,
        .max_error_rate = 0.05,
        .max_p99_latency_ratio = -1,
        .max_p99_latency_ms = -1,
        .confidence = 0.99,
    };
    return a;
}

/* A sample of n requests with errs errors and every latency equal to usec. */
static void sample(struct analysis_sample *s, uint64_t n, uint64_t errs, uint64_t usec)
{
    memset(s, 0, sizeof(*s));
    s->requests = n;
    s->errors_5xx = errs;
    for (uint64_t i = 0; i < n; i++)
        hist_record(&s->latency, usec);
}

/* Same with 98 % of latencies at base_us and the slowest 2 % at tail_us, so p99 = tail. */
/* n requests at base_us, one in `every` at tail_us instead. */
static void sample_tail_every(struct analysis_sample *s, uint64_t n, uint64_t base_us,
                              uint64_t tail_us, uint64_t every)
{
    memset(s, 0, sizeof(*s));
    s->requests = n;
    for (uint64_t i = 0; i < n; i++)
        hist_record(&s->latency, i % every == 0 ? tail_us : base_us);
}

static void sample_tail(struct analysis_sample *s, uint64_t n, uint64_t base_us, uint64_t tail_us)
{
    sample_tail_every(s, n, base_us, tail_us, 50);
}

static void test_normal_quantile(void **state)
{
    (void)state;
    assert_near(analysis_normal_quantile(0.5), 0, 1e-9);
    assert_near(analysis_normal_quantile(0.975), 1.959963985, 1e-6);
    assert_near(analysis_normal_quantile(0.99), 2.326347874, 1e-6);
    assert_near(analysis_normal_quantile(0.95), 1.644853627, 1e-6);
    assert_near(analysis_normal_quantile(0.999), 3.090232306, 1e-6);
    assert_near(analysis_normal_quantile(0.001), -3.090232306, 1e-6);
    assert_near(analysis_normal_quantile(0.02425), -1.972961051, 1e-6); /* region boundary */
    assert_near(analysis_normal_quantile(1e-9), -5.997807015, 1e-6);
    assert_true(isinf(analysis_normal_quantile(0)) && analysis_normal_quantile(0) < 0);
    assert_true(isinf(analysis_normal_quantile(1)) && analysis_normal_quantile(1) > 0);
    /* Round trip through the normal CDF across both tails (1e-12 .. 1 - 1e-12) and the centre:
     * tail probabilities t = 1.5^-i, each used as p and as 1 - p. */
    for (int i = 1; i <= 68; i++) {
        double t = pow(1.5, -i), u = 1 - (1 - t); /* u: the upper tail 1 - t really asks for */
        double zlo = analysis_normal_quantile(t), zhi = analysis_normal_quantile(1 - t);
        assert_near(0.5 * erfc(-zlo / sqrt(2)), t, 1e-9 * t);
        assert_near(0.5 * erfc(zhi / sqrt(2)), u, 1e-9 * u);
        /* 1 - t is inexact in binary far out in the tail, so compare the two only up to there. */
        if (t > 1e-8)
            assert_near(zhi, -zlo, 1e-6);
    }
}

static void test_wilson_lower(void **state)
{
    (void)state;
    /* Reference values from Python's statistics.NormalDist and the textbook formula. */
    assert_near(analysis_wilson_lower(90, 300, 0.99), 0.242439522, 1e-6);
    assert_near(analysis_wilson_lower(2, 20, 0.99), 0.022632746, 1e-6);
    assert_near(analysis_wilson_lower(2, 200, 0.99), 0.002233881, 1e-6);
    assert_near(analysis_wilson_lower(10, 100, 0.95), 0.060718667, 1e-6);
    assert_near(analysis_wilson_lower(1, 10, 0.95), 0.022634909, 1e-6);
    assert_near(analysis_wilson_lower(50, 50, 0.99), 0.902333344, 1e-6);
    assert_near(analysis_wilson_lower(500, 1000, 0.975), 0.469069600, 1e-6);
    assert_near(analysis_wilson_lower(11, 100, 0.99), 0.056353638, 1e-6);
    assert_near(analysis_wilson_lower(10, 100, 0.99), 0.049526495, 1e-6);
    assert_true(analysis_wilson_lower(0, 50, 0.99) == 0);
    assert_true(analysis_wilson_lower(0, 0, 0.99) == 0);
    assert_true(analysis_wilson_lower(3, 0, 0.99) == 0);
    /* At c = 0.5 the bound is the observed rate; it falls as the confidence rises. */
    assert_near(analysis_wilson_lower(30, 100, 0.5), 0.30, 1e-12);
    assert_true(analysis_wilson_lower(30, 100, 0.999) < analysis_wilson_lower(30, 100, 0.9));
    /* More evidence for the same rate gives a tighter (higher) bound. */
    assert_true(analysis_wilson_lower(3000, 10000, 0.99) > analysis_wilson_lower(30, 100, 0.99));
}

static void test_min_requests_inconclusive(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    sample(&st, 1000, 0, 10000);
    sample(&ca, 42, 40, 10000); /* terrible, but too little to judge */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_string_equal(v.gate, "min_requests");
    assert_non_null(strstr(v.detail, "42"));
    assert_non_null(strstr(v.detail, "100"));
    assert_int_equal(v.canary_requests, 42);
    assert_near(v.canary_error_rate, 40.0 / 42, 1e-12);
    print_message("inconclusive: %s\n", v.detail);
}

static void test_bad_canary_fails(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    sample(&st, 3000, 3, 10000);
    sample(&ca, 300, 60, 10000);
    ca.upstream_errors = 30; /* 90 errors in all: 30 % */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.gate, "max_error_rate");
    assert_near(v.canary_error_rate, 0.30, 1e-12);
    assert_near(v.stable_error_rate, 0.001, 1e-12);
    assert_near(v.canary_error_lower, 0.242439522, 1e-6);
    assert_string_equal(v.detail, "error rate 0.300 (90/300, 99% lower bound 0.242) > max 0.050");
    print_message("bad canary: %s\n", v.detail);
}

static void test_good_canary_passes(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    sample(&st, 2000, 10, 12000);
    sample(&ca, 200, 2, 12000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_string_equal(v.gate, "");
    assert_near(v.canary_error_rate, 0.01, 1e-12);
    assert_near(v.canary_p99_ms, 12, 12 * 0.02);
    assert_near(v.stable_p50_ms, 12, 12 * 0.02);
    assert_int_equal(v.stable_requests, 2000);
    assert_non_null(strstr(v.detail, "error rate 0.010 (2/200"));
    print_message("good canary: %s\n", v.detail);
}

/* Issue 12: "0.028 <= max 0.020" passed because only the lower bound was compared. A window
 * whose observed rate is over the limit is inconclusive until the evidence is significant. */
static void test_over_limit_window_is_never_pass(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_error_rate = 0.02;
    sample(&st, 2000, 10, 10000);
    sample(&ca, 500, 14, 10000); /* 0.028 observed, lower bound ~0.014 */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_string_equal(v.gate, "max_error_rate");
    assert_string_equal(v.test, ANALYSIS_TEST_WINDOW);
    assert_int_equal(v.window_done, 1);
    assert_true(v.canary_error_lower < 0.02);
    assert_null(strstr(v.detail, "<="));
    assert_non_null(strstr(v.detail, "above max 0.020"));
    print_message("over the limit, one window: %s\n", v.detail);

    /* The low-traffic case of old: 2 errors in 20 is 10 % > 5 %, proves little: not a pass. */
    a = defaults();
    a.min_requests = 20;
    sample(&st, 200, 1, 10000);
    sample(&ca, 20, 2, 10000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_true(v.canary_error_lower < 0.05);

    /* At the limit exactly is within it. */
    sample(&ca, 100, 5, 10000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);

    /* The sequential test: the same window mid-step, then as the step's end. */
    {
        struct analysis_seq q;

        a = defaults();
        a.max_error_rate = 0.02;
        analysis_seq_reset(&q);
        sample(&ca, 500, 14, 10000);
        analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
        assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
        assert_string_equal(v.gate, "max_error_rate");
        assert_true(v.error_llr < v.bound);
        print_message("over the limit, mid-step: %s\n", v.detail);
        sample(&ca, 0, 0, 10000);
        analysis_seq_judge(&q, &a, &st, &ca, 1, &v);
        assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
        assert_string_equal(v.test, ANALYSIS_TEST_SEQUENTIAL);
        assert_string_equal(v.gate, "max_error_rate");
        print_message("over the limit, step end: %s\n", v.detail);
    }
}

static void test_error_gate_off(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_error_rate = -1;
    sample(&st, 200, 0, 10000);
    sample(&ca, 200, 200, 10000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_near(v.canary_error_rate, 1, 1e-12);
    /* max_error_rate 0 is a real gate: any error with enough evidence fails. */
    a.max_error_rate = 0;
    sample(&ca, 200, 5, 10000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.gate, "max_error_rate");
}

static void test_p99_ratio(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ratio = 2.0;
    sample_tail(&st, 1000, 5000, 20000);          /* stable p99 20 ms */
    sample_tail_every(&ca, 500, 5000, 50000, 20); /* 5 % of the canary at 50 ms: 2.5x */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.gate, "max_p99_latency_ratio");
    assert_near(v.canary_p99_ms, 50, 50 * 0.02);
    assert_near(v.stable_p99_ms, 20, 20 * 0.02);
    assert_near(v.canary_p50_ms, 5, 5 * 0.02);
    assert_non_null(strstr(v.detail, "max ratio 2.00"));
    print_message("ratio fail: %s\n", v.detail);

    sample_tail(&ca, 500, 5000, 30000); /* 1.5x */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    print_message("ratio pass: %s\n", v.detail);
}

/* With a baseline the reference is named for what it is, and the figures are the same. */
static void test_p99_ratio_against_a_baseline(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ratio = 2.0;
    a.baseline = true;
    sample_tail(&st, 1000, 5000, 20000);
    sample_tail_every(&ca, 500, 5000, 50000, 20);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.reference, "baseline");
    assert_non_null(strstr(v.detail, "baseline's"));
    assert_null(strstr(v.detail, "stable"));
    assert_near(v.stable_p99_ms, 20, 20 * 0.02);
    struct analysis_seq q;
    analysis_seq_reset(&q);
    analysis_seq_judge(&q, &a, &st, &ca, 1, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_non_null(strstr(v.detail, "baseline's"));
    a.baseline = false;
    analysis_judge(&a, &st, &ca, &v);
    assert_string_equal(v.reference, "stable");
    assert_non_null(strstr(v.detail, "stable's"));
}

static void test_p99_ratio_skipped_without_stable_traffic(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ratio = 2.0;
    sample_tail(&st, 99, 5000, 20000); /* one short of min_requests */
    sample_tail(&ca, 500, 5000, 90000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_non_null(strstr(v.detail, "not judged"));
    assert_true(v.stable_p99_ms > 0); /* figures are filled all the same */
    print_message("ratio skipped: %s\n", v.detail);
}

static void test_p99_ms(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ms = 500;
    sample(&st, 10, 0, 1000); /* the ms gate needs no stable traffic */
    sample_tail_every(&ca, 400, 80000, 812000, 20);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.gate, "max_p99_latency_ms");
    assert_non_null(strstr(v.detail, "> max 500 ms"));
    print_message("p99 ms fail: %s\n", v.detail);

    sample_tail(&ca, 400, 80000, 450000);
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_non_null(strstr(v.detail, "<= max 500 ms"));
    print_message("p99 ms pass: %s\n", v.detail);
}

/* What rolled back good versions in the demo: p99 over a few hundred requests rests on the 3
 * slowest, so one scheduling hiccup made it 4x stable's. Not evidence of a slower version. */
static void test_p99_hiccup_is_not_a_regression(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ratio = 3.0;
    sample_tail_every(&st, 3000, 100, 100, 1);  /* stable: 0.1 ms */
    sample_tail_every(&ca, 300, 100, 2100, 75); /* canary: 4 requests at 2.1 ms = its p99 */
    analysis_judge(&a, &st, &ca, &v);
    assert_true(v.canary_p99_ms > 3 * v.stable_p99_ms); /* the raw p99 ratio says "fail"... */
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);  /* ...the test says "not shown yet" */
    assert_string_equal(v.gate, "max_p99_latency_ratio");
    print_message("hiccup: %s\n", v.detail);
    sample_tail_every(&ca, 300, 100, 2100, 10); /* 10 % slow: a real regression */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
}

static void test_first_failing_gate_reported(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.max_p99_latency_ms = 100;
    a.max_p99_latency_ratio = 1.5;
    sample(&st, 1000, 0, 10000);
    sample(&ca, 1000, 500, 900000); /* fails all three gates */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.gate, "max_error_rate");
    ca.errors_5xx = 0;
    analysis_judge(&a, &st, &ca, &v);
    assert_string_equal(v.gate, "max_p99_latency_ms");
    /* Errors beyond requests (counters read at different moments) are clamped. */
    ca.errors_5xx = 2000;
    a.max_p99_latency_ms = -1;
    analysis_judge(&a, &st, &ca, &v);
    assert_near(v.canary_error_rate, 1, 1e-12);
}

/* Runs trials intervals of n requests each with true error rate p; returns the fraction failed. */
static double fail_rate(double p, uint64_t n, int trials, double max, double confidence)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;
    int fails = 0;

    a.max_error_rate = max;
    a.confidence = confidence;
    sample(&st, 1000, 10, 10000);
    sample(&ca, n, 0, 10000);
    for (int t = 0; t < trials; t++) {
        ca.errors_5xx = 0;
        for (uint64_t i = 0; i < n; i++)
            ca.errors_5xx += rng_unit() < p;
        analysis_judge(&a, &st, &ca, &v);
        fails += v.result == ANALYSIS_FAIL;
    }
    return (double)fails / trials;
}

static void test_false_positive_rate(void **state)
{
    double good, limit, bad;

    (void)state;
    rng_state = 20240601;
    good = fail_rate(0.01, 100, 2000, 0.05, 0.99);
    print_message("good canary (1%% errors, max 5%%, 100 req, 99%%): %.2f %% of 2000 intervals "
                  "failed\n",
                  good * 100);
    assert_true(good <= 0.01);
    /* At the limit itself a one-sided 99 % bound may fail about 1 % of intervals. */
    limit = fail_rate(0.05, 100, 2000, 0.05, 0.99);
    print_message("canary at the limit (5%%): %.2f %% failed\n", limit * 100);
    assert_true(limit <= 0.02);
    /* And a clearly bad version is still caught in one interval nearly every time. */
    bad = fail_rate(0.20, 100, 2000, 0.05, 0.99);
    print_message("bad canary (20%%): %.2f %% failed\n", bad * 100);
    assert_true(bad >= 0.95);
}

/* The mixture likelihood ratio against values computed by hand (Python, the formula of
 * analysis.h), and the error counts where it crosses ln(100) at confidence 0.99. */
static void test_seq_llr_hand_computed(void **state)
{
    /* {n, p0, first k at or above the bound} */
    static const struct {
        uint64_t n;
        double p0;
        uint64_t k;
    } cross[] = {
        {200, 0.05, 22}, {200, 0.01, 9}, {400, 0.05, 37}, {600, 0.01, 16}, {1000, 0.01, 22}};
    double b = analysis_seq_bound(0.99);

    (void)state;
    assert_near(b, log(100), 1e-12);
    assert_near(analysis_seq_bound(0.95), log(20), 1e-12);
    assert_near(analysis_seq_llr(0, 0, 0.05), 0, 1e-12); /* the weights sum to 1 */
    assert_near(analysis_seq_llr(30, 100, 0.05), 28.177480406, 1e-6);
    assert_near(analysis_seq_llr(0, 200, 0.05), -11.506591435, 1e-6);
    assert_near(analysis_seq_llr(6, 20, 0.05), 4.931941282, 1e-6); /* 30 % on 20 requests */
    assert_near(analysis_seq_llr(3, 10, 0.5), -3.635634940, 1e-6); /* capped alternatives */
    for (size_t i = 0; i < sizeof(cross) / sizeof(cross[0]); i++) {
        assert_true(analysis_seq_llr(cross[i].k - 1, cross[i].n, cross[i].p0) < b);
        assert_true(analysis_seq_llr(cross[i].k, cross[i].n, cross[i].p0) >= b);
    }
    /* Limits at the ends: 0 fails on the first error, 1 never. */
    assert_true(isinf(analysis_seq_llr(1, 10, 0)));
    assert_near(analysis_seq_llr(0, 10, 0), 0, 0);
    assert_near(analysis_seq_llr(10, 10, 1), 0, 0);
    /* More events than trials are clamped (counters read at different moments). */
    assert_near(analysis_seq_llr(30, 20, 0.05), analysis_seq_llr(20, 20, 0.05), 1e-12);
}

/* The pool fails once the pooled evidence crosses, names the test and its figures; a reset
 * starts the next step from nothing. */
static void test_seq_pools_windows_and_resets(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;
    struct analysis_seq q;

    (void)state;
    analysis_seq_reset(&q);
    sample(&st, 2000, 0, 10000);
    /* 20 errors in 200 at a 5 % limit: llr(20, 200) < bound, over the limit: inconclusive. */
    sample(&ca, 200, 20, 10000);
    analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_int_equal(v.windows, 1);
    assert_near(v.error_llr, analysis_seq_llr(20, 200, 0.05), 1e-12);
    /* Another such window: 40 in 400 >= 37, the crossing of the table above. */
    analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_string_equal(v.test, ANALYSIS_TEST_SEQUENTIAL);
    assert_string_equal(v.gate, "max_error_rate");
    assert_int_equal(v.windows, 2);
    assert_int_equal(v.pooled_requests, 400);
    assert_int_equal(v.pooled_errors, 40);
    assert_near(v.error_llr, analysis_seq_llr(40, 400, 0.05), 1e-12);
    assert_near(v.bound, log(100), 1e-12);
    assert_non_null(strstr(v.detail, "sequential (mSPRT) over 2 windows"));
    assert_non_null(strstr(v.detail, "(40/400)"));
    print_message("pooled fail: %s\n", v.detail);

    /* A new step: the evidence of the last one does not carry over. */
    analysis_seq_reset(&q);
    assert_int_equal(q.windows, 0);
    assert_int_equal(q.errors.n, 0);
    sample(&ca, 200, 4, 10000);
    analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_string_equal(v.test, ANALYSIS_TEST_WINDOW);
    assert_int_equal(v.windows, 1);
    assert_int_equal(v.pooled_errors, 4);
    print_message("window pass: %s\n", v.detail);

    /* A window below min_requests keeps growing mid-step (nothing pooled)... */
    sample(&ca, 40, 1, 10000);
    analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_string_equal(v.gate, "min_requests");
    assert_int_equal(v.window_done, 0);
    assert_int_equal(q.errors.n, 200);
    /* ...and is pooled at the step's end, which then passes on the pool. */
    analysis_seq_judge(&q, &a, &st, &ca, 1, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_string_equal(v.test, ANALYSIS_TEST_SEQUENTIAL);
    assert_int_equal(v.pooled_requests, 240);
    assert_int_equal(v.pooled_errors, 5);
    assert_int_equal(v.windows, 2);
    print_message("step pass: %s\n", v.detail);

    /* A step with too few requests in all is inconclusive, never a pass. */
    analysis_seq_reset(&q);
    sample(&ca, 30, 0, 10000);
    analysis_seq_judge(&q, &a, &st, &ca, 1, &v);
    assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE);
    assert_string_equal(v.gate, "min_requests");
    assert_non_null(strstr(v.detail, "fewer than min_requests 100"));
}

/* The p99 gates pool the count of requests slower than their limit against 1 %. */
static void test_seq_slow_share(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;
    struct analysis_seq q;
    int w;

    (void)state;
    a.max_error_rate = -1;
    a.max_p99_latency_ms = 500;
    analysis_seq_reset(&q);
    sample(&st, 2000, 0, 20000);
    /* 4 % of requests at 800 ms (1 in 25): fails within a few windows of 200. */
    for (w = 1; w <= 10; w++) {
        sample_tail_every(&ca, 200, 20000, 800000, 25);
        analysis_seq_judge(&q, &a, &st, &ca, 0, &v);
        if (v.result == ANALYSIS_FAIL)
            break;
        assert_int_equal(v.result, ANALYSIS_INCONCLUSIVE); /* over 1 %, never a pass */
    }
    assert_int_equal(v.result, ANALYSIS_FAIL);
    assert_true(w <= 2);
    assert_string_equal(v.gate, "max_p99_latency_ms");
    assert_int_equal(v.pooled_slow, 8 * (uint64_t)w);
    assert_int_equal(v.pooled_slow_n, 200 * (uint64_t)w);
    assert_true(v.slow_llr >= v.bound);
    print_message("slow share fail: %s\n", v.detail);

    /* Ratio gate: slower than 2x the stable p99 (20 ms) in each window. */
    a.max_p99_latency_ms = -1;
    a.max_p99_latency_ratio = 2;
    analysis_seq_reset(&q);
    sample_tail_every(&ca, 200, 20000, 30000, 25); /* 1.5x: not slow */
    analysis_seq_judge(&q, &a, &st, &ca, 1, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_int_equal(v.pooled_slow, 0);
    assert_int_equal(v.pooled_slow_n, 200);
    print_message("ratio step pass: %s\n", v.detail);
}

/* One seeded step of `windows` windows of n requests at error rate p; returns the window in
 * which it failed, 0 if none. */
static int sim_step(const struct config_analysis *a, double p, uint64_t n, int windows)
{
    static struct analysis_sample st, ca;
    struct analysis_verdict v;
    struct analysis_seq q;

    analysis_seq_reset(&q);
    st.requests = 2000;
    ca.requests = n;
    for (int w = 1; w <= windows; w++) {
        ca.errors_5xx = 0;
        for (uint64_t i = 0; i < n; i++)
            ca.errors_5xx += rng_unit() < p;
        analysis_seq_judge(&q, a, &st, &ca, w == windows, &v);
        if (v.result == ANALYSIS_FAIL)
            return w;
    }
    return 0;
}

/* Deterministic for the seed; the full figures are bench/gates.sh's. */
static void test_seq_simulation(void **state)
{
    struct config_analysis a = defaults();
    int plans = 1000, false_alarms = 0, caught = 0;

    (void)state;
    rng_state = 20261203;
    for (int i = 0; i < plans; i++)
        false_alarms += sim_step(&a, 0.05, 200, 10) != 0;
    print_message("at the limit (5%%), 10 windows of 200: %.1f %% rolled back\n",
                  100.0 * false_alarms / plans);
    assert_true(false_alarms <= plans * 2 / 100);
    a.max_error_rate = 0.01;
    for (int i = 0; i < plans; i++) {
        int w = sim_step(&a, 0.05, 200, 10);
        caught += w >= 1 && w <= 2;
    }
    print_message("5x the limit (1%% -> 5%%): %.1f %% caught within 2 windows\n",
                  100.0 * caught / plans);
    assert_true(caught >= plans * 95 / 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_quantile),
        cmocka_unit_test(test_wilson_lower),
        cmocka_unit_test(test_min_requests_inconclusive),
        cmocka_unit_test(test_bad_canary_fails),
        cmocka_unit_test(test_good_canary_passes),
        cmocka_unit_test(test_over_limit_window_is_never_pass),
        cmocka_unit_test(test_error_gate_off),
        cmocka_unit_test(test_p99_ratio),
        cmocka_unit_test(test_p99_ratio_against_a_baseline),
        cmocka_unit_test(test_p99_ratio_skipped_without_stable_traffic),
        cmocka_unit_test(test_p99_ms),
        cmocka_unit_test(test_p99_hiccup_is_not_a_regression),
        cmocka_unit_test(test_first_failing_gate_reported),
        cmocka_unit_test(test_false_positive_rate),
        cmocka_unit_test(test_seq_llr_hand_computed),
        cmocka_unit_test(test_seq_pools_windows_and_resets),
        cmocka_unit_test(test_seq_slow_share),
        cmocka_unit_test(test_seq_simulation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
