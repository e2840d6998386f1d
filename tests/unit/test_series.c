/* Unit tests of serve/series: the first sample sets a base, later ones give rates, error
 * percentages and p99 over each interval; a counter that goes back counts nothing; the ring
 * keeps the last 15 minutes; lines are per service and a silent one is dropped. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "serve/series.h"

static json_t *points_of(json_t *o, const char *version)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "versions"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "version")), version) == 0)
            return json_object_get(v, "points");
    }
    return NULL;
}

static double at(json_t *pts, size_t i, size_t k)
{
    return json_real_value(json_array_get(json_array_get(pts, i), k));
}

static void test_rates_errors_and_p99(void **state)
{
    (void)state;
    struct series *s = series_new();
    struct hist h = {{0}};
    series_sample(s, "web", "v1", 1000, 100, 0, &h);
    /* 2 s later: 200 more requests, 10 of them errors; latencies 1 ms, the slowest 1 % 50 ms. */
    for (int i = 0; i < 198; i++)
        hist_record(&h, 1000);
    hist_record(&h, 50000);
    hist_record(&h, 50000);
    series_sample(s, "web", "v1", 1002, 300, 10, &h);
    json_t *o = series_json(s, "web");
    json_t *pts = points_of(o, "v1");
    assert_int_equal(json_array_size(pts), 1);
    assert_true(at(pts, 0, 0) == 1002);
    assert_true(at(pts, 0, 1) == 100);                       /* 200 requests in 2 s */
    assert_true(at(pts, 0, 2) == 5);                         /* 10 of 200 */
    assert_true(at(pts, 0, 3) > 0.9 && at(pts, 0, 3) < 1.1); /* p99: the 198th of 200 is 1 ms */
    json_decref(o);
    /* Going backwards (a torn read) counts nothing rather than a huge number. */
    series_sample(s, "web", "v1", 1004, 250, 5, &h);
    o = series_json(s, "web");
    pts = points_of(o, "v1");
    assert_true(at(pts, 1, 1) == 0 && at(pts, 1, 2) == 0);
    json_decref(o);
    series_free(s);
    series_free(NULL);
}

static void test_ring_keeps_fifteen_minutes(void **state)
{
    (void)state;
    struct series *s = series_new();
    struct hist h = {{0}};
    double t = 5000;
    for (int i = 0; i <= SERIES_POINTS + 50; i++, t += SERIES_EVERY_MS / 1000.0)
        series_sample(s, "web", "v2", t, (uint64_t)i * 10, 0, &h);
    json_t *o = series_json(s, "web");
    json_t *pts = points_of(o, "v2");
    assert_int_equal(json_array_size(pts), SERIES_POINTS);
    /* Oldest first, the newest is the last sample. */
    assert_true(at(pts, 0, 0) < at(pts, 1, 0));
    assert_true(at(pts, SERIES_POINTS - 1, 0) == t - SERIES_EVERY_MS / 1000.0);
    assert_true(json_real_value(json_object_get(o, "window_s")) == 900);
    json_decref(o);
    series_free(s);
}

static void test_lines_per_service_and_silent_ones_dropped(void **state)
{
    (void)state;
    struct series *s = series_new();
    struct hist h = {{0}};
    series_sample(s, "web", "v1", 100, 0, 0, &h);
    series_sample(s, "api", "v1", 100, 0, 0, &h);
    series_sample(s, "web", "v1", 102, 10, 0, &h);
    json_t *o = series_json(s, "api");
    assert_int_equal(json_array_size(json_object_get(o, "versions")), 1);
    assert_int_equal(json_array_size(points_of(o, "v1")), 0); /* a base only */
    json_decref(o);
    /* web goes on every 2 s; after 15 minutes the silent api line is gone. */
    int n = 1;
    for (double t = 104; t <= 102 + 902; t += 2, n++)
        series_sample(s, "web", "v1", t, 10 + (uint64_t)n, 0, &h);
    o = series_json(s, "api");
    assert_int_equal(json_array_size(json_object_get(o, "versions")), 0);
    json_decref(o);
    o = series_json(s, "web");
    assert_int_equal(json_array_size(points_of(o, "v1")), SERIES_POINTS);
    json_decref(o);
    /* A line silent for longer starts again from a new base: no rate over the gap. */
    series_sample(s, "web", "v1", 5000, 99999, 0, &h);
    o = series_json(s, "web");
    assert_int_equal(json_array_size(points_of(o, "v1")), 0);
    json_decref(o);
    series_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates_errors_and_p99),
        cmocka_unit_test(test_ring_keeps_fifteen_minutes),
        cmocka_unit_test(test_lines_per_service_and_silent_ones_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
