/* Unit tests of serve/series: the first sample sets a base, later ones give rates, error
 * percentages and p99 over each interval; a counter that goes back counts nothing; the ring
 * keeps the last 15 minutes; lines are per service and a silent one is dropped. Saved to a file
 * and loaded back, the points survive, old ones are dropped, a hostile file changes nothing, and
 * the first sample after a load only sets the base. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A temporary directory for one test's files, removed by rm_dir. */
static char *tmp_dir(void)
{
    char *d = strdup("/tmp/test_series.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_dir(char *d)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* The whole of s as text: equal texts, equal series. */
static char *dump(const struct series *s, const char *service)
{
    json_t *o = series_json(s, service);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

/* A series with points for web v2 (3), web v1 (n) and api v1 (2), and a base-only web v3. */
static struct series *filled(double t0, int n)
{
    struct series *s = series_new();
    struct hist h = {{0}};
    for (int i = 0; i <= n; i++) {
        hist_record(&h, 2000 + (uint64_t)i);
        /* v2 first: listed before v1, though v1 was sampled last (the order must survive). */
        if (i <= 3)
            series_sample(s, "web", "v2", t0 + 2 * i, (uint64_t)i * 10, 0, &h);
        series_sample(s, "web", "v1", t0 + 2 * i, (uint64_t)i * 100, (uint64_t)i, &h);
        if (i <= 2)
            series_sample(s, "api", "v1", t0 + 2 * i, (uint64_t)i * 7, (uint64_t)i * 7, &h);
    }
    series_sample(s, "web", "v3", t0 + 2 * n, 5, 0, &h);
    return s;
}

static void test_save_and_load_round_trip(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[512];
    snprintf(path, sizeof(path), "%s/series.json", dir);
    double t0 = 1765000000.25;
    struct series *s = filled(t0, 20);
    assert_int_equal(series_save(s, path, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1); /* renamed, not left beside */

    struct series *back = series_new();
    /* The lines with points come back (web v1 and v2, api v1); the base-only v3 had nothing. */
    assert_int_equal(series_load(back, path, t0 + 41, err, sizeof(err)), 3);
    for (int k = 0; k < 2; k++) {
        const char *svc = k ? "api" : "web";
        json_t *o = series_json(back, svc);
        char *a = dump(s, svc), *b = NULL;
        if (k == 0) {
            /* Compare without v3: the original has it (no points), the loaded one not. */
            json_t *orig = json_loads(a, 0, NULL), *vs = json_object_get(orig, "versions");
            for (size_t i = 0; i < json_array_size(vs); i++)
                if (strcmp(json_string_value(json_object_get(json_array_get(vs, i), "version")),
                           "v3") == 0)
                    json_array_remove(vs, i);
            free(a);
            a = json_dumps(orig, JSON_COMPACT | JSON_SORT_KEYS);
            json_decref(orig);
        }
        b = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_decref(o);
    }
    json_t *o = series_json(back, "web");
    assert_int_equal(json_array_size(points_of(o, "v1")), 20);
    assert_true(at(points_of(o, "v1"), 0, 0) == t0 + 2);
    json_decref(o);
    /* A line already there is newer than the file's: loading again adds nothing. */
    assert_int_equal(series_load(back, path, t0 + 41, err, sizeof(err)), 0);
    /* No file: -ENOENT, for the caller to stay silent about. */
    char none[300];
    snprintf(none, sizeof(none), "%s/none.json", dir);
    assert_int_equal(series_load(back, none, t0 + 41, err, sizeof(err)), -ENOENT);
    /* Nothing to save is a valid file of no lines. */
    struct series *empty = series_new();
    assert_int_equal(series_save(empty, path, err, sizeof(err)), 0);
    assert_int_equal(series_load(empty, path, t0, err, sizeof(err)), 0);
    /* An unwritable place says which file. */
    snprintf(none, sizeof(none), "%s/no/such/series.json", dir);
    assert_int_equal(series_save(s, none, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "no/such/series.json.tmp"));
    series_free(empty);
    series_free(back);
    series_free(s);
    rm_dir(dir);
}

static void test_a_save_keeps_the_lines_sampled_last(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[512];
    snprintf(path, sizeof(path), "%s/series.json", dir);
    struct series *s = series_new();
    struct hist h = {{0}};
    /* SERIES_FILE_LINES + 10 versions, vN last sampled at 1000 + N: v0..v9 are the oldest. */
    for (int i = 0; i < SERIES_FILE_LINES + 10; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        series_sample(s, "web", v, 1000 + i - 2, 0, 0, &h);
        series_sample(s, "web", v, 1000 + i, 10, 0, &h);
    }
    assert_int_equal(series_save(s, path, err, sizeof(err)), 0);
    struct series *back = series_new();
    assert_int_equal(series_load(back, path, 1300, err, sizeof(err)), SERIES_FILE_LINES);
    json_t *o = series_json(back, "web");
    assert_null(points_of(o, "v9"));
    assert_non_null(points_of(o, "v10"));
    /* In the order they were in: v10 first. */
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(o, "versions"), 0), "version")),
                        "v10");
    json_decref(o);
    series_free(back);
    series_free(s);
    rm_dir(dir);
}

static void test_load_drops_old_points_and_keeps_the_newest(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[512];
    snprintf(path, sizeof(path), "%s/series.json", dir);
    double now = 1765000000;
    char text[512];
    /* web v1: one point 20 min old, one 14 min old, one 10 s old; api v1: all old. */
    snprintf(text, sizeof(text),
             "{\"format\": 1, \"lines\": ["
             "{\"service\": \"web\", \"version\": \"v1\", \"points\": [[%.1f, 1, 0, 1], "
             "[%.1f, 2, 0, 2], [%.1f, 3, 50, 3]]},"
             "{\"service\": \"api\", \"version\": \"v1\", \"points\": [[%.1f, 1, 0, 1]]}]}",
             now - 1200, now - 840, now - 10, now - 1000);
    write_text(path, text);
    struct series *s = series_new();
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), 1);
    json_t *o = series_json(s, "web");
    json_t *pts = points_of(o, "v1");
    assert_int_equal(json_array_size(pts), 2);
    assert_true(at(pts, 0, 0) == now - 840 && at(pts, 1, 2) == 50);
    json_decref(o);
    o = series_json(s, "api");
    assert_int_equal(json_array_size(json_object_get(o, "versions")), 0);
    json_decref(o);
    series_free(s);

    /* A file older than the window loads nothing. */
    s = series_new();
    assert_int_equal(series_load(s, path, now + 1000, err, sizeof(err)), 0);
    series_free(s);

    /* More points in the window than the ring holds (a denser writer): the newest are kept. */
    json_t *many = json_array();
    for (int i = 0; i < SERIES_POINTS + 40; i++)
        json_array_append_new(many, json_pack("[f, f, f, f]", now - 600 + i, (double)i, 0.0, 1.0));
    json_t *doc = json_pack("{s:i, s:[{s:s, s:s, s:o}]}", "format", 1, "lines", "service", "web",
                            "version", "v9", "points", many);
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
    s = series_new();
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), 1);
    o = series_json(s, "web");
    pts = points_of(o, "v9");
    assert_int_equal(json_array_size(pts), SERIES_POINTS);
    assert_true(at(pts, 0, 1) == 40 && at(pts, SERIES_POINTS - 1, 1) == SERIES_POINTS + 39);
    json_decref(o);
    series_free(s);
    rm_dir(dir);
}

static void test_a_hostile_file_is_refused_and_the_series_unchanged(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[512];
    snprintf(path, sizeof(path), "%s/series.json", dir);
    double now = 1765000000;
    static const char *const bad[] = {
        "",
        "{\"format\": 1, \"lines\": [",
        "[]",
        "{\"lines\": []}",
        "{\"format\": 2, \"lines\": []}",
        "{\"format\": 1, \"lines\": {}}",
        "{\"format\": 1, \"format\": 1, \"lines\": []}",
        "{\"format\": 1, \"lines\": [7]}",
        "{\"format\": 1, \"lines\": [{\"version\": \"v1\", \"points\": []}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"\", \"version\": \"v1\", \"points\": []}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"w\\u0000b\", \"version\": \"v1\", "
        "\"points\": []}]}",
        "{\"format\": 1, \"lines\": [{\"service\": 5, \"version\": \"v1\", \"points\": []}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", \"points\": 3}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, NaN, 0, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, -1, 0, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 101, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0, -0.5]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1e300, 0, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1e999, 0, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[\"T\", 1, 0, 1]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0, 1, 5]]}]}",
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0, 1], [T, 1, 0, 1]]}]}", /* t does not move on */
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[F, 1, 0, 1]]}]}", /* from the future */
        "{\"format\": 1, \"lines\": [{\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0, 1]]}, {\"service\": \"web\", \"version\": \"v1\", "
        "\"points\": [[T, 1, 0, 1]]}]}", /* the same line twice */
    };
    struct series *s = filled(now - 100, 10);
    char *before = dump(s, "web");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* T: a time in the window; F: an hour ahead. */
        char text[1024], *w = text;
        for (const char *r = bad[i]; *r && w < text + sizeof(text) - 32; r++) {
            if (*r == 'T' && r[1] != '"' && r[-1] != '"')
                w += snprintf(w, 32, "%.1f", now - 5);
            else if (*r == 'F' && r[-1] == '[')
                w += snprintf(w, 32, "%.1f", now + 3600);
            else if (*r == 'T')
                w += snprintf(w, 32, "T");
            else
                *w++ = *r;
        }
        *w = '\0';
        write_text(path, text);
        err[0] = '\0';
        int rc = series_load(s, path, now, err, sizeof(err));
        if (rc != -EINVAL || strstr(err, path) == NULL)
            fail_msg("file %zu (%s): rc %d, err %s", i, text, rc, err);
        char *after = dump(s, "web");
        assert_string_equal(before, after);
        free(after);
    }
    /* Huge arrays: more points or lines than a writer would ever write. */
    json_t *many = json_array();
    for (int i = 0; i <= SERIES_FILE_POINTS; i++)
        json_array_append_new(many, json_pack("[f, f, f, f]", now - 800 + i * 0.1, 1.0, 0.0, 1.0));
    json_t *doc = json_pack("{s:i, s:[{s:s, s:s, s:o}]}", "format", 1, "lines", "service", "web",
                            "version", "v1", "points", many);
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "points must be an array of at most"));
    json_t *lines = json_array();
    for (int i = 0; i <= SERIES_FILE_LINES; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        json_array_append_new(lines, json_pack("{s:s, s:s, s:[[f, f, f, f]]}", "service", "web",
                                               "version", v, "points", now - 5, 1.0, 0.0, 1.0));
    }
    doc = json_pack("{s:i, s:o}", "format", 1, "lines", lines);
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "lines must be an array of at most"));
    /* A name longer than any config allows. */
    char longname[SERIES_FILE_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    doc = json_pack("{s:i, s:[{s:s, s:s, s:[]}]}", "format", 1, "lines", "service", longname,
                    "version", "v1", "points");
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), -EINVAL);
    /* Not a regular file, a link, a file too big to read: refused before reading. */
    unlink(path);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), -EINVAL);
    assert_int_equal(rmdir(path), 0);
    char target[300];
    snprintf(target, sizeof(target), "%s/other.json", dir);
    write_text(target, "{\"format\": 1, \"lines\": []}");
    assert_int_equal(symlink(target, path), 0);
    assert_true(series_load(s, path, now, err, sizeof(err)) < 0);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), SERIES_FILE_MAX + 1), 0);
    fclose(f);
    assert_int_equal(series_load(s, path, now, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a regular file of at most"));
    char *after = dump(s, "web");
    assert_string_equal(before, after);
    free(after);
    free(before);
    series_free(s);
    rm_dir(dir);
}

static void test_the_first_sample_after_a_load_adds_no_point(void **state)
{
    (void)state;
    char *dir = tmp_dir(), path[256], err[512];
    snprintf(path, sizeof(path), "%s/series.json", dir);
    double t0 = 1765000000;
    struct series *old = filled(t0, 5);
    assert_int_equal(series_save(old, path, err, sizeof(err)), 0);
    series_free(old);

    struct series *s = series_new();
    struct hist h = {{0}};
    assert_int_equal(series_load(s, path, t0 + 12, err, sizeof(err)), 3);
    /* The new process's totals: far below the old one's, and nothing to compute a rate from. */
    series_sample(s, "web", "v1", t0 + 14, 3, 0, &h);
    json_t *o = series_json(s, "web");
    assert_int_equal(json_array_size(points_of(o, "v1")), 5);
    json_decref(o);
    /* The next one is a point against the new base: 20 requests in 2 s. */
    hist_record(&h, 1000);
    series_sample(s, "web", "v1", t0 + 16, 23, 0, &h);
    o = series_json(s, "web");
    json_t *pts = points_of(o, "v1");
    assert_int_equal(json_array_size(pts), 6);
    assert_true(at(pts, 5, 0) == t0 + 16 && at(pts, 5, 1) == 10 && at(pts, 5, 2) == 0);
    assert_true(at(pts, 4, 0) == t0 + 10); /* the loaded points stay, oldest first */
    json_decref(o);
    /* A loaded line not sampled again ages out like any other. */
    series_sample(s, "web", "v1", t0 + 10 + SERIES_WINDOW_S + 1, 30, 0, &h);
    o = series_json(s, "api");
    assert_int_equal(json_array_size(json_object_get(o, "versions")), 0);
    json_decref(o);
    series_free(s);
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates_errors_and_p99),
        cmocka_unit_test(test_ring_keeps_fifteen_minutes),
        cmocka_unit_test(test_lines_per_service_and_silent_ones_dropped),
        cmocka_unit_test(test_save_and_load_round_trip),
        cmocka_unit_test(test_a_save_keeps_the_lines_sampled_last),
        cmocka_unit_test(test_load_drops_old_points_and_keeps_the_newest),
        cmocka_unit_test(test_a_hostile_file_is_refused_and_the_series_unchanged),
        cmocka_unit_test(test_the_first_sample_after_a_load_adds_no_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
