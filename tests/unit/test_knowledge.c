/* Unit tests of rollout/knowledge.c's delivery figures on a history whose every time is fixed
 * (written into a real SQLite store, then its times set by SQL), so that each figure has one
 * exact expected value: deployment frequency, change failure rate (a plan's rollback, a later
 * rollback by a person and by cutover, a live failure), time to restore (median, worst, open)
 * and time to full traffic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rollout/rollout_int.h"
#include "store/store.h"

#define T0 1000000000000LL /* ms */
#define S(x) ((int64_t)(x)*1000)
#define DAY S(86400)

static char path[256];

static void raw_exec(const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

/* A change of service, ended in state at T0 + end_s (running when state is NULL), created at
 * T0 + start_s. */
static int64_t change(struct store *st, const char *service, const char *kind, const char *from,
                      const char *to, const char *actor, const char *state, int start_s, int end_s)
{
    struct store_change c;
    memset(&c, 0, sizeof(c));
    c.service = (char *)service;
    c.kind = (char *)kind;
    c.from_version = (char *)from;
    c.to_version = (char *)to;
    c.actor = (char *)actor;
    assert_int_equal(store_change_insert(st, &c), 0);
    if (state != NULL)
        assert_int_equal(store_change_update(st, c.id, state, NULL), 0);
    char sql[256];
    snprintf(
        sql, sizeof(sql), "UPDATE changes SET created_ms = %lld, ended_ms = %lld WHERE id = %lld",
        (long long)(T0 + S(start_s)), state ? (long long)(T0 + S(end_s)) : 0LL, (long long)c.id);
    raw_exec(sql);
    return c.id;
}

static void event_at(struct store *st, int64_t id, const char *type, int at_s)
{
    assert_int_equal(store_event_add(st, id, type, "-"), 0);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE events SET ts_ms = %lld WHERE id = (SELECT max(id) FROM events)",
             (long long)(T0 + S(at_s)));
    raw_exec(sql);
}

static json_int_t jint(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b != NULL)
        v = json_object_get(v, b);
    if (!json_is_integer(v))
        fail_msg("%s.%s is not an integer", a, b ? b : "");
    return json_integer_value(v);
}

static void test_figures_of_a_known_history(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/cutover-knowledge-%d.db", base && *base ? base : "/tmp",
             (int)getpid());
    unlink(path);
    struct store *st = NULL;
    char err[256];
    assert_int_equal(store_open(path, &st, err, sizeof(err)), 0);

    /* web: v2 completes in 60 s, a person rolls it back (10 s) */
    change(st, "web", "deploy", "v1", "v2", "alice", "completed", 0, 60);
    change(st, "web", "rollback", "v2", "v1", "bob", "completed", 3600, 3610);
    /* a canary rolled back by its plan: failed at +7300, traffic back at +7302 */
    int64_t canary = change(st, "web", "deploy", "v1", "v3", "alice", "rolled_back", 7200, 7302);
    event_at(st, canary, "step", 7210);
    event_at(st, canary, "failed", 7300);
    /* v4 completes in 30 s, then goes down (alert only) until v5 completes at +21100 */
    int64_t v4 = change(st, "web", "deploy", "v1", "v4", "alice", "completed", 10000, 10030);
    event_at(st, v4, "service_down", 20000);
    change(st, "web", "deploy", "v4", "v5", "alice", "completed", 21000, 21100);
    /* aborted by a person: neither a success nor a failure */
    change(st, "web", "deploy", "v5", "v6", "alice", "aborted", 25000, 25050);
    /* v5's live version fails: cutover rolls it back in 5 s */
    change(st, "web", "rollback", "v5", "v4", "cutover", "completed", 30000, 30005);
    /* scheduled at +39000 (deploy --at), started at +40000: 20 s to full traffic */
    int64_t v7 = change(st, "web", "deploy", "v4", "v7", "alice", "completed", 39000, 40020);
    event_at(st, v7, "started", 40000);
    /* api: a1 completes, then goes down and stays down */
    int64_t a1 = change(st, "api", "deploy", NULL, "a1", "carol", "completed", 500, 501);
    event_at(st, a1, "service_down", 50000);
    /* back by itself 30 s later (its checks pass), then down again for good */
    event_at(st, a1, "service_up", 50030);
    event_at(st, a1, "service_down", 70000);
    /* before the window */
    change(st, "web", "deploy", "v0", "v1", "alice", "failed", -2 * 86400, -2 * 86400 + 1);

    struct rollout r;
    memset(&r, 0, sizeof(r));
    r.st = st;
    json_t *o = rollout_stats_json(&r, "web", T0 - DAY, T0 + 2 * DAY);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "service")), "web");
    assert_true(json_real_value(json_object_get(o, "window_days")) == 3.0);
    assert_int_equal(jint(o, "changes", NULL), 8);
    assert_int_equal(jint(o, "deploys", "ended"), 5);
    assert_int_equal(jint(o, "deploys", "completed"), 4);
    assert_int_equal(jint(o, "deploys", "failed"), 0);
    assert_int_equal(jint(o, "deploys", "rolled_back"), 1);
    assert_int_equal(jint(o, "deploys", "undone_later"), 3); /* v2, v4, v5 */
    assert_int_equal(jint(o, "rollbacks", "total"), 2);
    assert_int_equal(jint(o, "rollbacks", "automatic"), 1);
    assert_int_equal(jint(o, "failures", NULL), 4);
    assert_true(json_real_value(json_object_get(o, "change_failure_rate")) == 0.8);
    assert_true(json_real_value(json_object_get(o, "deploys_per_day")) == 4.0 / 3.0);
    /* restores: 10 s, 2 s, 1100 s, 5 s */
    assert_int_equal(jint(o, "time_to_restore_ms", "count"), 4);
    assert_int_equal(jint(o, "time_to_restore_ms", "median"), 7500);
    assert_int_equal(jint(o, "time_to_restore_ms", "worst"), 1100000);
    assert_int_equal(jint(o, "time_to_restore_ms", "open"), 0);
    /* full traffic: 60 s, 30 s, 100 s, 20 s */
    assert_int_equal(jint(o, "time_to_full_traffic_ms", "count"), 4);
    assert_int_equal(jint(o, "time_to_full_traffic_ms", "median"), 45000);
    assert_int_equal(jint(o, "time_to_full_traffic_ms", "worst"), 100000);
    json_decref(o);

    /* Every service: api's deploy went down and is still down. */
    o = rollout_stats_json(&r, NULL, T0 - DAY, T0 + 2 * DAY);
    assert_true(json_is_null(json_object_get(o, "service")));
    assert_int_equal(jint(o, "changes", NULL), 9);
    assert_int_equal(jint(o, "deploys", "ended"), 6);
    assert_int_equal(jint(o, "failures", NULL), 5);
    assert_true(json_real_value(json_object_get(o, "change_failure_rate")) == 5.0 / 6.0);
    assert_int_equal(jint(o, "time_to_restore_ms", "count"), 5); /* and a1's 30 s */
    assert_int_equal(jint(o, "time_to_restore_ms", "median"), 10000);
    assert_int_equal(jint(o, "time_to_restore_ms", "open"), 1);
    json_decref(o);

    /* An empty window: nothing to divide. */
    o = rollout_stats_json(&r, "web", T0 + 3 * DAY, T0 + 4 * DAY);
    assert_int_equal(jint(o, "changes", NULL), 0);
    assert_true(json_is_null(json_object_get(o, "change_failure_rate")));
    assert_true(json_is_null(json_object_get(json_object_get(o, "time_to_restore_ms"), "median")));
    assert_true(json_real_value(json_object_get(o, "deploys_per_day")) == 0.0);
    json_decref(o);

    store_free(st);
    unlink(path);
    char side[300];
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_figures_of_a_known_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
