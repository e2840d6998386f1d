/* Unit tests of core/hist: the bucket of every sampled value 0 .. 10^8 us is reported within 2 %
 * (exactly below 64 us), bucket indexes are monotonic and contiguous, quantiles of random data
 * sets are within 2 % of the exact ones, and add/diff/count. Fixed-seed PRNG: deterministic. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/hist.h"

#define MAX_REL_ERR 0.02

/* splitmix64: small, fast and good enough for test data. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double rng_unit(void)
{
    return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_normal(void)
{
    return sqrt(-2 * log(rng_unit())) * cos(2 * M_PI * rng_unit());
}

static double rel_err(double got, double want)
{
    return fabs(got - want) / want;
}

/* Checks that v's bucket reports v within 2 % and returns the error. */
static double check_value(uint64_t v)
{
    unsigned b = hist_bucket(v);
    double err;

    if (b >= HIST_BUCKETS)
        fail_msg("hist_bucket(%llu) = %u, out of range", (unsigned long long)v, b);
    err = rel_err(hist_bucket_value(b), (double)v);
    if (err > MAX_REL_ERR)
        fail_msg("%llu us -> bucket %u, value %.3f: error %.4f", (unsigned long long)v, b,
                 hist_bucket_value(b), err);
    return err;
}

/* The smallest value whose bucket is >= b (bucket indexes are monotonic in the value). */
static uint64_t first_of(unsigned b)
{
    uint64_t lo = 0, hi = 1ULL << 28;

    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (hist_bucket(mid) >= b)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void test_small_values_exact(void **state)
{
    (void)state;
    assert_int_equal(hist_bucket(0), 0);
    assert_true(hist_bucket_value(0) == 0);
    for (uint64_t v = 1; v < 64; v++) {
        assert_int_equal(hist_bucket(v), v);
        assert_true(hist_bucket_value(hist_bucket(v)) == (double)v);
    }
}

static void test_every_integer_to_1e6(void **state)
{
    double worst = 0;

    (void)state;
    for (uint64_t v = 1; v <= 1000000; v++) {
        double e = check_value(v);
        if (e > worst)
            worst = e;
    }
    print_message("max error, every integer 1..10^6 us: %.3f %%\n", worst * 100);
}

static void test_geometric_sweep_and_random(void **state)
{
    double worst = 0, e;

    (void)state;
    /* Ratio 1.0001: about 184000 points from 1 us to 100 s. */
    for (int i = 0; i <= (int)(log(1e8) / log(1.0001)); i++) {
        e = check_value((uint64_t)pow(1.0001, i));
        worst = e > worst ? e : worst;
    }
    rng_state = 1;
    for (int i = 0; i < 1000000; i++) {
        uint64_t v = (uint64_t)exp(rng_unit() * log(1e8));
        e = check_value(v);
        worst = e > worst ? e : worst;
    }
    /* Both ends of every bucket above 64 us, where the error is largest. */
    for (unsigned b = 64; b < HIST_BUCKETS - 1; b++) {
        uint64_t lo = first_of(b), hi = first_of(b + 1) - 1;
        assert_int_equal(hist_bucket(lo), b);
        assert_int_equal(hist_bucket(hi), b);
        assert_true((double)hi / (double)lo <= 1.04);
        e = check_value(lo);
        worst = e > worst ? e : worst;
        e = check_value(hi);
        worst = e > worst ? e : worst;
    }
    print_message("max error, geometric sweep + 10^6 random + bucket ends: %.3f %%\n", worst * 100);
    assert_true(worst < 0.0156); /* sqrt(33/32) - 1 */
}

static void test_monotonic_and_contiguous(void **state)
{
    unsigned prev = hist_bucket(0);

    (void)state;
    /* Every integer to 2^22 steps the index by 0 or 1; beyond, sample the range. */
    for (uint64_t v = 1; v < (1u << 22); v++) {
        unsigned b = hist_bucket(v);
        if (b != prev && b != prev + 1)
            fail_msg("bucket jumps from %u to %u at %llu", prev, b, (unsigned long long)v);
        prev = b;
    }
    for (uint64_t v = 1u << 22; v < (1ULL << 28); v += 997) {
        unsigned b = hist_bucket(v);
        if (b < prev)
            fail_msg("bucket goes back from %u to %u at %llu", prev, b, (unsigned long long)v);
        prev = b;
    }
    for (unsigned b = 1; b < HIST_BUCKETS; b++)
        assert_true(hist_bucket_value(b) > hist_bucket_value(b - 1));
}

static void test_range_ends(void **state)
{
    (void)state;
    /* 100 s is inside the range, not in the overflow bucket. */
    assert_true(hist_bucket(100000000) < HIST_BUCKETS - 1);
    assert_int_equal(hist_bucket((1ULL << 27) - 1), HIST_BUCKETS - 1);
    assert_int_equal(hist_bucket(1ULL << 27), HIST_BUCKETS - 1);
    assert_int_equal(hist_bucket(UINT64_MAX), HIST_BUCKETS - 1);
    assert_true(hist_bucket_value(HIST_BUCKETS - 1) > 1.3e8);
    assert_true(hist_bucket_value(HIST_BUCKETS + 5) == hist_bucket_value(HIST_BUCKETS - 1));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Records vals into a histogram and compares its quantiles with the exact ones. */
static void check_quantiles(const char *name, uint64_t *vals, size_t n)
{
    static const double qs[] = {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1};
    struct hist h;
    double worst = 0;

    memset(&h, 0, sizeof(h));
    for (size_t i = 0; i < n; i++)
        hist_record(&h, vals[i]);
    assert_int_equal(hist_count(&h), n);
    qsort(vals, n, sizeof(vals[0]), cmp_u64);
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        size_t rank = (size_t)ceil(qs[i] * (double)n * (1 - 1e-12));
        double exact = (double)vals[(rank ? rank : 1) - 1];
        double got = hist_quantile(&h, qs[i]);
        double e = rel_err(got, exact);
        if (e > MAX_REL_ERR)
            fail_msg("%s n=%zu q=%g: hist %.2f, exact %.0f, error %.4f", name, n, qs[i], got, exact,
                     e);
        worst = e > worst ? e : worst;
    }
    print_message("%s, n=%zu: max quantile error %.3f %%\n", name, n, worst * 100);
}

static void test_quantiles_random(void **state)
{
    static const size_t sizes[] = {1, 7, 100, 1000, 100000};
    uint64_t *vals = malloc(100000 * sizeof(*vals));

    (void)state;
    assert_non_null(vals);
    rng_state = 42;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        for (size_t i = 0; i < n; i++)
            vals[i] = 1 + rng_next() % 2000000; /* uniform 1 us .. 2 s */
        check_quantiles("uniform", vals, n);
        for (size_t i = 0; i < n; i++) /* lognormal, median 20 ms, long tail */
            vals[i] = (uint64_t)(exp(log(20000) + 1.2 * rng_normal()) + 1);
        check_quantiles("lognormal", vals, n);
        for (size_t i = 0; i < n; i++) /* bimodal: cache hits at ~300 us, misses at ~80 ms */
            vals[i] = rng_next() % 10 ? 250 + rng_next() % 100 : 60000 + rng_next() % 40000;
        check_quantiles("bimodal", vals, n);
    }
    free(vals);
}

static void test_quantile_edges(void **state)
{
    struct hist h;

    (void)state;
    memset(&h, 0, sizeof(h));
    assert_true(hist_quantile(&h, 0.5) == 0);
    assert_true(hist_quantile(&h, 1) == 0);
    hist_record(&h, 17);
    assert_true(hist_quantile(&h, 0.01) == 17);
    assert_true(hist_quantile(&h, 1) == 17);
    /* 100 samples 1..100: the 0.99-quantile is the 99th sample, not the 100th. */
    memset(&h, 0, sizeof(h));
    for (uint64_t v = 1; v <= 100; v++)
        hist_record(&h, v * 1000);
    assert_true(rel_err(hist_quantile(&h, 0.99), 99000) < MAX_REL_ERR);
    assert_true(rel_err(hist_quantile(&h, 0.5), 50000) < MAX_REL_ERR);
    assert_true(rel_err(hist_quantile(&h, 1), 100000) < MAX_REL_ERR);
}

static void test_add_diff_count(void **state)
{
    struct hist a, b, sum, d;

    (void)state;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&sum, 0, sizeof(sum));
    for (uint64_t v = 0; v < 1000; v++)
        hist_record(&a, v * 37);
    for (uint64_t v = 0; v < 500; v++)
        hist_record(&b, v * 1009);
    assert_int_equal(hist_count(&a), 1000);
    assert_int_equal(hist_count(&b), 500);
    hist_add(&sum, &a);
    hist_add(&sum, &b);
    assert_int_equal(hist_count(&sum), 1500);
    hist_diff(&d, &sum, &a);
    assert_memory_equal(&d, &b, sizeof(d));
    hist_diff(&d, &sum, &sum);
    assert_int_equal(hist_count(&d), 0);
    /* A snapshot ahead of the later one in some bucket clamps to zero, never wraps. */
    hist_diff(&d, &a, &sum);
    assert_int_equal(hist_count(&d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_every_integer_to_1e6),
        cmocka_unit_test(test_geometric_sweep_and_random),
        cmocka_unit_test(test_monotonic_and_contiguous),
        cmocka_unit_test(test_range_ends),
        cmocka_unit_test(test_quantiles_random),
        cmocka_unit_test(test_quantile_edges),
        cmocka_unit_test(test_add_diff_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
