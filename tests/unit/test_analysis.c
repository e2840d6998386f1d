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

static void test_borderline_low_traffic_passes(void **state)
{
    struct config_analysis a = defaults();
    struct analysis_sample st, ca;
    struct analysis_verdict v;

    (void)state;
    a.min_requests = 20;
    sample(&st, 200, 1, 10000);
    sample(&ca, 20, 2, 10000); /* 10 % observed, but two errors prove little */
    analysis_judge(&a, &st, &ca, &v);
    assert_int_equal(v.result, ANALYSIS_PASS);
    assert_near(v.canary_error_rate, 0.10, 1e-12);
    assert_true(v.canary_error_lower < 0.05);
    print_message("borderline: %s\n", v.detail);
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
    assert_int_equal(v.result, ANALYSIS_PASS);          /* ...the test says "not shown" */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_quantile),
        cmocka_unit_test(test_wilson_lower),
        cmocka_unit_test(test_min_requests_inconclusive),
        cmocka_unit_test(test_bad_canary_fails),
        cmocka_unit_test(test_good_canary_passes),
        cmocka_unit_test(test_borderline_low_traffic_passes),
        cmocka_unit_test(test_error_gate_off),
        cmocka_unit_test(test_p99_ratio),
        cmocka_unit_test(test_p99_ratio_skipped_without_stable_traffic),
        cmocka_unit_test(test_p99_ms),
        cmocka_unit_test(test_p99_hiccup_is_not_a_regression),
        cmocka_unit_test(test_first_failing_gate_reported),
        cmocka_unit_test(test_false_positive_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
