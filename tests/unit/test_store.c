/* Unit tests of store/: real SQLite files in a private temporary directory (removed at the end),
 * each test on its own file. Covers the schema migration and its refusal of newer files, every
 * record type, transactions, two handles on one file (WAL), and durability across a close and
 * across a kill -9 of the writing process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

/* Returns a path for name inside the test directory (static buffer, rotated so two paths can be
 * alive at once). */
static const char *db_path(const char *name)
{
    static char bufs[2][512];
    static int next;
    char *buf = bufs[next];
    next = (next + 1) % 2;
    snprintf(buf, sizeof(bufs[0]), "%s/%s", tmpdir, name);
    return buf;
}

static struct store *open_ok(const char *name)
{
    struct store *st = NULL;
    char err[256];
    int rc = store_open(db_path(name), &st, err, sizeof(err));
    if (rc != 0)
        fail_msg("store_open %s: %d %s", name, rc, err);
    assert_non_null(st);
    return st;
}

static int raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int val = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    val = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return val;
}

/* Fills a change with the required fields; the strings are literals (not owned). */
static struct store_change change_of(const char *service, const char *from, const char *to)
{
    struct store_change c;
    memset(&c, 0, sizeof(c));
    c.service = (char *)service;
    c.kind = (char *)"deploy";
    c.from_version = (char *)from;
    c.to_version = (char *)to;
    c.actor = (char *)"alice";
    return c;
}

static int64_t insert_change(struct store *st, const char *service, const char *to)
{
    struct store_change c = change_of(service, NULL, to);
    assert_int_equal(store_change_insert(st, &c), 0);
    assert_true(c.id > 0);
    return c.id;
}

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/cutover-store-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlink(db_path(e->d_name));
    }
    closedir(d);
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

/* --- open and migrate ------------------------------------------------------------------------ */

static void test_open_creates_private_wal_file(void **state)
{
    (void)state;
    struct store *st = open_ok("open.db");
    struct stat sb;

    assert_int_equal(stat(db_path("open.db"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* The WAL file exists while a handle is open and inherits the database's mode. */
    assert_int_equal(stat(db_path("open.db-wal"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(raw_int(db_path("open.db"), "PRAGMA user_version"), 6);
    assert_int_equal(
        raw_int(db_path("open.db"), "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    assert_int_equal(raw_int(db_path("open.db"),
                             "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                             "name IN ('services','versions','targets','changes','events')"),
                     5);
    assert_string_equal(store_errmsg(st), "");
    store_free(st);
    store_free(NULL);
}

static void test_reopen_keeps_data_and_schema(void **state)
{
    (void)state;
    struct store *st = open_ok("reopen.db");
    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    store_free(st);

    st = open_ok("reopen.db");
    char *live = NULL, *prev = NULL;
    assert_int_equal(store_service_get(st, "web", &live, &prev), 0);
    assert_string_equal(live, "v1");
    assert_null(prev);
    free(live);
    store_free(st);
    assert_int_equal(raw_int(db_path("reopen.db"), "PRAGMA user_version"), 6);
}

static void test_open_existing_empty_file(void **state)
{
    (void)state;
    FILE *f = fopen(db_path("empty.db"), "w");
    assert_non_null(f);
    fclose(f);
    struct store *st = open_ok("empty.db");
    assert_int_equal(store_service_set(st, "web", "v1", "v0"), 0);
    store_free(st);
}

/* Managed instances are recorded so a restarted daemon adopts them instead of starting twice. */
static void test_audit_add_list_and_window(void **state)
{
    (void)state;
    struct store *st = open_ok("audit.db");
    struct store_audit a = {.actor = "alice",
                            .channel = "unix",
                            .peer = "uid 1000 (alice)",
                            .method = "POST",
                            .path = "/api/v1/services/web/deploy",
                            .status = 200,
                            .outcome = "change 1"};
    assert_int_equal(store_audit_add(st, &a, 50), 0);
    a.actor = NULL; /* a refused request without a token has no actor */
    a.channel = "tcp";
    a.status = 401;
    a.outcome = NULL;
    assert_int_equal(store_audit_add(st, &a, 50), 0);
    struct store_audit *v = NULL;
    size_t n = 0;
    assert_int_equal(store_audit_list(st, 0, 10, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].actor, "alice"); /* oldest first */
    assert_string_equal(v[0].outcome, "change 1");
    assert_null(v[1].actor);
    assert_int_equal(v[1].status, 401);
    store_audit_list_free(v, n);
    assert_int_equal(store_audit_list(st, 0, 1, &v, &n), 0); /* the newest one */
    assert_int_equal(n, 1);
    assert_int_equal(v[0].status, 401);
    store_audit_list_free(v, n);
    assert_int_equal(store_audit_list(st, store_now_ms() + 1000, 10, &v, &n), 0);
    assert_int_equal(n, 0);
    store_audit_list_free(v, n);
    store_free(st);
}

static void test_instances_put_list_delete(void **state)
{
    (void)state;
    struct store *st = open_ok("inst.db");
    struct store_instance *v = NULL;
    size_t n = 0;

    assert_int_equal(store_instance_put(st, "web", "v1", 1, 4242, 777, 20001), 0);
    assert_int_equal(store_instance_put(st, "web", "v1", 0, 4241, 776, 20000), 0);
    assert_int_equal(store_instance_put(st, "web", "v2", 0, 5000, 900, 20002), 0);
    /* a restart of instance 1 replaces its row */
    assert_int_equal(store_instance_put(st, "web", "v1", 1, 4300, 780, 20001), 0);
    assert_int_equal(store_instance_list(st, "web", "v1", &v, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].idx, 0);
    assert_int_equal(v[0].pid, 4241);
    assert_int_equal(v[1].pid, 4300);
    assert_int_equal(v[1].start_ticks, 780);
    assert_int_equal(v[1].port, 20001);
    free(v);
    assert_int_equal(store_instance_del(st, "web", "v1", 0), 0);
    assert_int_equal(store_instance_list(st, "web", "v1", &v, &n), 0);
    assert_int_equal(n, 1);
    free(v);
    assert_int_equal(store_instance_del(st, "web", "v1", -1), 0);
    assert_int_equal(store_instance_list(st, "web", "v1", &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    assert_int_equal(store_instance_list(st, "web", "v2", &v, &n), 0);
    assert_int_equal(n, 1);
    free(v);
    store_free(st);
}

/* Hold and maintenance are kept for a restart, and each action with its actor (issue 17). */
static void test_hold_state_and_actions(void **state)
{
    (void)state;
    struct store *st = open_ok("hold.db");
    struct store_hold h;
    assert_int_equal(store_hold_get(st, "web", &h), 0);
    assert_int_equal(h.hold_since_ms, 0); /* never recorded: neither held nor in maintenance */
    assert_null(h.hold_actor);
    struct store_hold set = {.hold_since_ms = 1000,
                             .hold_max_ms = 30000,
                             .hold_actor = (char *)"alice",
                             .hold_change = 7,
                             .maintenance_since_ms = 2000,
                             .maintenance_message = (char *)"back at 2",
                             .maintenance_actor = (char *)"bob"};
    assert_int_equal(store_hold_set(st, "web", &set), 0);
    assert_int_equal(store_action_add(st, "web", "hold", "alice", "held"), 0);
    assert_int_equal(store_action_add(st, "api", "maintenance_on", "bob", NULL), 0);
    store_free(st);
    st = open_ok("hold.db");
    assert_int_equal(store_hold_get(st, "web", &h), 0);
    assert_int_equal(h.hold_since_ms, 1000);
    assert_int_equal(h.hold_max_ms, 30000);
    assert_string_equal(h.hold_actor, "alice");
    assert_int_equal(h.hold_change, 7);
    assert_int_equal(h.maintenance_since_ms, 2000);
    assert_string_equal(h.maintenance_message, "back at 2");
    assert_string_equal(h.maintenance_actor, "bob");
    store_hold_done(&h);
    /* A release replaces the row. */
    struct store_hold off = {0};
    assert_int_equal(store_hold_set(st, "web", &off), 0);
    assert_int_equal(store_hold_get(st, "web", &h), 0);
    assert_int_equal(h.hold_since_ms, 0);
    assert_null(h.maintenance_message);
    store_hold_done(&h);
    struct store_action *v = NULL;
    size_t n = 0;
    assert_int_equal(store_action_list(st, NULL, 0, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].kind, "maintenance_on"); /* newest first */
    assert_null(v[0].detail);
    assert_string_equal(v[1].actor, "alice");
    store_action_list_free(v, n);
    assert_int_equal(store_action_list(st, "web", 0, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].detail, "held");
    store_action_list_free(v, n);
    store_free(st);
}

static void test_refuses_newer_schema(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(db_path("newer.db"), &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "CREATE TABLE future (x); PRAGMA user_version = 99", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    struct store *st = (struct store *)&db; /* must be reset to NULL on failure */
    char err[256];
    assert_int_equal(store_open(db_path("newer.db"), &st, err, sizeof(err)), -ENOTSUP);
    assert_null(st);
    assert_non_null(strstr(err, "schema version 99 is newer"));
    /* Refusing must not touch the file. */
    assert_int_equal(raw_int(db_path("newer.db"), "PRAGMA user_version"), 99);
}

static void test_open_failure_reports(void **state)
{
    (void)state;
    struct store *st = NULL;
    char err[256];
    int rc = store_open(db_path("missing-dir/x.db"), &st, err, sizeof(err));
    assert_int_equal(rc, -ENOENT);
    assert_null(st);
    assert_non_null(strstr(err, "x.db"));
    assert_int_equal(store_open(NULL, &st, err, sizeof(err)), -EINVAL);
    /* The error buffer is optional. */
    assert_int_equal(store_open(db_path("noerr.db"), &st, NULL, 0), 0);
    store_free(st);
}

/* --- services and versions ------------------------------------------------------------------ */

static void test_service_set_get(void **state)
{
    (void)state;
    struct store *st = open_ok("service.db");
    char *live = (char *)"x", *prev = (char *)"x";

    assert_int_equal(store_service_get(st, "web", &live, &prev), -ENOENT);
    assert_null(live);
    assert_null(prev);

    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_service_set(st, "api", "a1", NULL), 0);
    assert_int_equal(store_service_get(st, "web", &live, &prev), 0);
    assert_string_equal(live, "v2");
    assert_string_equal(prev, "v1");
    free(live);
    free(prev);

    /* Either output may be skipped. */
    assert_int_equal(store_service_get(st, "api", &live, NULL), 0);
    assert_string_equal(live, "a1");
    free(live);

    assert_int_equal(store_service_set(st, NULL, "v1", NULL), -EINVAL);
    store_free(st);
}

static void test_version_put_replaces_targets_in_order(void **state)
{
    (void)state;
    struct store *st = open_ok("version.db");
    const char *three[] = {"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"};
    const char *two[] = {"10.0.0.9:81", "10.0.0.8:81"};
    char **t = NULL;
    size_t n = 99;

    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), -ENOENT);
    assert_null(t);
    assert_int_equal(n, 0);

    assert_int_equal(store_version_put(st, "web", "v1", three, 3), 0);
    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(t[i], three[i]);
    assert_null(t[3]);
    store_strv_free(t);

    assert_int_equal(store_version_put(st, "web", "v1", two, 2), 0);
    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0], "10.0.0.9:81");
    assert_string_equal(t[1], "10.0.0.8:81");
    assert_null(t[2]);
    store_strv_free(t);

    /* The same version name under another service is a different version. */
    assert_int_equal(store_version_targets(st, "api", "v1", &t, &n), -ENOENT);

    /* A known version without targets is an empty list, not -ENOENT. */
    assert_int_equal(store_version_put(st, "web", "v2", NULL, 0), 0);
    assert_int_equal(store_version_targets(st, "web", "v2", &t, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(t);
    assert_null(t[0]);
    store_strv_free(t);

    /* Many targets: the array grows and keeps order. */
    const char *many[40];
    char bufs[40][32];
    for (int i = 0; i < 40; i++) {
        snprintf(bufs[i], sizeof(bufs[i]), "10.1.0.%d:8080", 40 - i);
        many[i] = bufs[i];
    }
    assert_int_equal(store_version_put(st, "web", "v3", many, 40), 0);
    assert_int_equal(store_version_targets(st, "web", "v3", &t, &n), 0);
    assert_int_equal(n, 40);
    for (int i = 0; i < 40; i++)
        assert_string_equal(t[i], many[i]);
    store_strv_free(t);

    /* A NULL address is refused before anything is written. */
    const char *bad[] = {"10.0.0.1:80", NULL};
    assert_int_equal(store_version_put(st, "web", "v1", bad, 2), -EINVAL);
    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), 0);
    assert_int_equal(n, 2);
    store_strv_free(t);
    store_strv_free(NULL);
    store_free(st);
}

/* A failure half-way through store_version_put undoes all of it, and inside a caller's
 * transaction undoes only the failed operation. The failure is forced with a trigger. */
static void test_version_put_is_atomic(void **state)
{
    (void)state;
    struct store *st = open_ok("atomic.db");
    const char *good[] = {"10.0.0.1:80", "10.0.0.2:80"};
    const char *bad[] = {"10.0.0.3:80", "bad:1"};
    char **t = NULL;
    size_t n = 0;
    char *live = NULL;
    sqlite3 *db = NULL;

    assert_int_equal(store_version_put(st, "web", "v1", good, 2), 0);
    assert_int_equal(sqlite3_open(db_path("atomic.db"), &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TRIGGER boom BEFORE INSERT ON targets "
                     "WHEN NEW.address = 'bad:1' BEGIN SELECT RAISE(ABORT, 'boom'); END",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    assert_int_equal(store_version_put(st, "web", "v1", bad, 2), -EIO);
    assert_non_null(strstr(store_errmsg(st), "boom"));
    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0], "10.0.0.1:80");
    store_strv_free(t);

    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_int_equal(store_version_put(st, "web", "v1", bad, 2), -EIO);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_service_get(st, "web", &live, NULL), 0);
    assert_string_equal(live, "v1");
    free(live);
    assert_int_equal(store_version_targets(st, "web", "v1", &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[1], "10.0.0.2:80");
    store_strv_free(t);
    store_free(st);
}

/* --- changes ---------------------------------------------------------------------------------- */

static void test_change_insert_update_get(void **state)
{
    (void)state;
    struct store *st = open_ok("change.db");
    struct store_change c = change_of("web", "v1", "v2");
    struct store_change got;
    int64_t before = store_now_ms();

    c.plan = (char *)"canary";
    c.reason = (char *)"fix #12";
    c.detail = (char *)"{\"step\":0}";
    assert_int_equal(store_change_insert(st, &c), 0);
    assert_true(c.id > 0);
    assert_true(c.created_ms >= before);
    assert_int_equal(c.ended_ms, 0);

    assert_int_equal(store_change_get(st, c.id, &got), 0);
    assert_int_equal(got.id, c.id);
    assert_string_equal(got.service, "web");
    assert_string_equal(got.kind, "deploy");
    assert_string_equal(got.from_version, "v1");
    assert_string_equal(got.to_version, "v2");
    assert_string_equal(got.plan, "canary");
    assert_string_equal(got.actor, "alice");
    assert_string_equal(got.reason, "fix #12");
    assert_string_equal(got.state, STORE_CHANGE_RUNNING);
    assert_null(got.message);
    assert_string_equal(got.detail, "{\"step\":0}");
    assert_true(got.created_ms >= before);
    assert_int_equal(got.updated_ms, got.created_ms);
    assert_int_equal(got.ended_ms, 0);
    store_change_done(&got);
    assert_null(got.service);

    assert_int_equal(store_change_update(st, c.id, STORE_CHANGE_RUNNING, "step 1 healthy"), 0);
    assert_int_equal(store_change_set_detail(st, c.id, "{\"step\":1}"), 0);
    /* A NULL message keeps the previous one. */
    assert_int_equal(store_change_update(st, c.id, STORE_CHANGE_RUNNING, NULL), 0);
    assert_int_equal(store_change_get(st, c.id, &got), 0);
    assert_string_equal(got.message, "step 1 healthy");
    assert_string_equal(got.detail, "{\"step\":1}");
    assert_int_equal(got.ended_ms, 0);
    store_change_done(&got);

    assert_int_equal(store_change_update(st, c.id, STORE_CHANGE_COMPLETED, "done"), 0);
    assert_int_equal(store_change_get(st, c.id, &got), 0);
    assert_string_equal(got.state, STORE_CHANGE_COMPLETED);
    assert_string_equal(got.message, "done");
    assert_true(got.ended_ms >= got.created_ms);
    assert_true(got.ended_ms > 0);
    int64_t ended = got.ended_ms;
    store_change_done(&got);

    /* A later note on an ended change keeps its end time. */
    usleep(3000);
    assert_int_equal(store_change_update(st, c.id, STORE_CHANGE_COMPLETED, "noted"), 0);
    assert_int_equal(store_change_get(st, c.id, &got), 0);
    assert_int_equal(got.ended_ms, ended);
    assert_true(got.updated_ms > ended);
    store_change_done(&got);

    /* Unknown ids and bad input. */
    assert_int_equal(store_change_get(st, c.id + 100, &got), -ENOENT);
    assert_null(got.service);
    store_change_done(&got);
    assert_int_equal(store_change_update(st, c.id + 100, STORE_CHANGE_FAILED, "x"), -ENOENT);
    assert_int_equal(store_change_set_detail(st, c.id + 100, "{}"), -ENOENT);
    assert_int_equal(store_change_update(st, c.id, "exploded", "x"), -EINVAL);
    assert_int_equal(store_change_update(st, c.id, NULL, "x"), -EINVAL);
    struct store_change bad = change_of("web", NULL, NULL);
    assert_int_equal(store_change_insert(st, &bad), -EINVAL);
    assert_true(strlen(store_errmsg(st)) > 0);
    store_change_done(NULL);
    store_free(st);
}

static void test_change_insert_terminal_sets_ended(void **state)
{
    (void)state;
    struct store *st = open_ok("change-terminal.db");
    const char *terminal[] = {STORE_CHANGE_COMPLETED, STORE_CHANGE_FAILED, STORE_CHANGE_ROLLED_BACK,
                              STORE_CHANGE_ABORTED, STORE_CHANGE_INTERRUPTED};
    for (size_t i = 0; i < 5; i++) {
        assert_true(store_change_state_terminal(terminal[i]));
        int64_t id = insert_change(st, "web", "v2");
        struct store_change got;
        assert_int_equal(store_change_update(st, id, terminal[i], NULL), 0);
        assert_int_equal(store_change_get(st, id, &got), 0);
        assert_string_equal(got.state, terminal[i]);
        assert_true(got.ended_ms > 0);
        store_change_done(&got);
    }
    assert_false(store_change_state_terminal(STORE_CHANGE_RUNNING));
    assert_false(store_change_state_terminal("bogus"));
    assert_false(store_change_state_terminal(NULL));

    /* Inserted already ended (a refused request recorded for the history). */
    struct store_change c = change_of("web", "v1", "v9");
    c.state = (char *)STORE_CHANGE_FAILED;
    assert_int_equal(store_change_insert(st, &c), 0);
    assert_true(c.ended_ms > 0);
    store_free(st);
}

static void test_change_list_newest_first(void **state)
{
    (void)state;
    struct store *st = open_ok("change-list.db");
    struct store_change *v = NULL;
    size_t n = 0;
    int64_t ids[6];

    assert_int_equal(store_change_list(st, NULL, 0, &v, &n), 0);
    assert_null(v);
    assert_int_equal(n, 0);

    ids[0] = insert_change(st, "web", "w1");
    ids[1] = insert_change(st, "api", "a1");
    ids[2] = insert_change(st, "web", "w2");
    ids[3] = insert_change(st, "api", "a2");
    ids[4] = insert_change(st, "web", "w3");
    ids[5] = insert_change(st, "web", "w4");

    assert_int_equal(store_change_list(st, NULL, 0, &v, &n), 0);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(v[i].id, ids[5 - i]);
    store_change_list_free(v, n);

    assert_int_equal(store_change_list(st, "web", 0, &v, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].to_version, "w4");
    assert_string_equal(v[1].to_version, "w3");
    assert_string_equal(v[2].to_version, "w2");
    assert_string_equal(v[3].to_version, "w1");
    store_change_list_free(v, n);

    assert_int_equal(store_change_list(st, "web", 2, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].to_version, "w4");
    assert_string_equal(v[1].to_version, "w3");
    store_change_list_free(v, n);

    assert_int_equal(store_change_list(st, "api", 1, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].to_version, "a2");
    store_change_list_free(v, n);

    assert_int_equal(store_change_list(st, "nobody", 0, &v, &n), 0);
    assert_int_equal(n, 0);
    store_change_list_free(v, n);
    store_free(st);
}

static void test_change_list_default_limit(void **state)
{
    (void)state;
    struct store *st = open_ok("change-limit.db");
    struct store_change *v = NULL;
    size_t n = 0;

    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 120; i++)
        insert_change(st, "web", "v");
    assert_int_equal(store_commit(st), 0);

    assert_int_equal(store_change_list(st, NULL, 0, &v, &n), 0);
    assert_int_equal(n, 100);
    assert_int_equal(v[0].id, 120);
    assert_int_equal(v[99].id, 21);
    store_change_list_free(v, n);
    assert_int_equal(store_change_list(st, "web", 500, &v, &n), 0);
    assert_int_equal(n, 120);
    store_change_list_free(v, n);
    store_free(st);
}

static void test_change_list_running_oldest_first(void **state)
{
    (void)state;
    struct store *st = open_ok("change-running.db");
    struct store_change *v = NULL;
    size_t n = 0;

    int64_t a = insert_change(st, "web", "w1");
    int64_t b = insert_change(st, "api", "a1");
    int64_t c = insert_change(st, "db", "d1");
    int64_t d = insert_change(st, "web", "w2");
    assert_int_equal(store_change_update(st, a, STORE_CHANGE_COMPLETED, NULL), 0);
    assert_int_equal(store_change_update(st, c, STORE_CHANGE_ROLLED_BACK, NULL), 0);

    assert_int_equal(store_change_list_running(st, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].id, b);
    assert_int_equal(v[1].id, d);
    store_change_list_free(v, n);

    assert_int_equal(store_change_update(st, b, STORE_CHANGE_INTERRUPTED, NULL), 0);
    assert_int_equal(store_change_update(st, d, STORE_CHANGE_INTERRUPTED, NULL), 0);
    assert_int_equal(store_change_list_running(st, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    store_change_list_free(NULL, 0);
    store_free(st);
}

/* --- events ------------------------------------------------------------------------------- */

static void test_events_ordered(void **state)
{
    (void)state;
    struct store *st = open_ok("events.db");
    struct store_event *v = NULL;
    size_t n = 0;
    int64_t a = insert_change(st, "web", "v2");
    int64_t b = insert_change(st, "api", "a2");
    int64_t before = store_now_ms();

    assert_int_equal(store_event_add(st, a, "created", "deploy v2"), 0);
    assert_int_equal(store_event_add(st, b, "created", NULL), 0);
    assert_int_equal(store_event_add(st, a, "health", "3/3 healthy"), 0);
    assert_int_equal(store_event_add(st, a, "switched", "10% to v2"), 0);

    assert_int_equal(store_event_list(st, a, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].type, "created");
    assert_string_equal(v[0].message, "deploy v2");
    assert_string_equal(v[1].type, "health");
    assert_string_equal(v[2].type, "switched");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(v[i].change_id, a);
        assert_true(v[i].ts_ms >= before);
        if (i > 0) {
            assert_true(v[i].id > v[i - 1].id);
            assert_true(v[i].ts_ms >= v[i - 1].ts_ms);
        }
    }
    store_event_list_free(v, n);

    assert_int_equal(store_event_list(st, b, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_null(v[0].message);
    store_event_list_free(v, n);

    assert_int_equal(store_event_add(st, b + 100, "created", "orphan"), -ENOENT);
    assert_int_equal(store_event_add(st, a, NULL, "x"), -EINVAL);
    assert_int_equal(store_event_list(st, b + 100, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    store_event_list_free(NULL, 0);
    store_free(st);
}

struct heard {
    int64_t ids[16];
    char types[16][16];
    size_t n;
};

static void on_heard(void *ctx, const struct store_event *ev)
{
    struct heard *h = ctx;
    if (h->n < 16) {
        h->ids[h->n] = ev->id;
        snprintf(h->types[h->n], sizeof(h->types[0]), "%s", ev->type);
        h->n++;
    }
}

/* The listener hears an event once it is stored for good: never one a rollback took back. */
static void test_event_listener_hears_committed_events_only(void **state)
{
    (void)state;
    struct store *st = open_ok("heard.db");
    struct heard h = {0};
    int64_t a = insert_change(st, "web", "v2");
    int64_t b = insert_change(st, "api", "a2");
    assert_int_equal(store_add_listener(st, on_heard, &h), 0);

    assert_int_equal(store_event_add(st, a, "created", "now"), 0);
    assert_int_equal(h.n, 1); /* outside a transaction: at once */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_event_add(st, a, "completed", "taken back"), 0);
    assert_int_equal(h.n, 1);
    assert_int_equal(store_rollback(st), 0);
    assert_int_equal(h.n, 1);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_event_add(st, b, "created", "kept"), 0);
    assert_int_equal(store_event_add(st, b, "switched", "kept"), 0);
    assert_int_equal(h.n, 1);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(h.n, 3);
    assert_string_equal(h.types[1], "created");
    assert_string_equal(h.types[2], "switched");
    assert_true(h.ids[2] > h.ids[1] && h.ids[1] > h.ids[0]);

    /* What a client that saw the first event missed: of every change, or of one service's. */
    struct store_event *v = NULL;
    size_t n = 0;
    assert_int_equal(store_event_list_since(st, h.ids[0], NULL, 10, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].id, h.ids[1]);
    store_event_list_free(v, n);
    assert_int_equal(store_event_list_since(st, 0, "web", 10, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].type, "created");
    store_event_list_free(v, n);
    assert_int_equal(store_event_list_since(st, 0, NULL, 1, &v, &n), 0);
    assert_int_equal(n, 1);
    store_event_list_free(v, n);

    store_remove_listener(st, on_heard, &h);
    assert_int_equal(store_event_add(st, a, "drained", NULL), 0);
    assert_int_equal(h.n, 3);
    store_free(st);
}

/* --- transactions and concurrency ------------------------------------------------------------ */

static void test_rollback_discards(void **state)
{
    (void)state;
    struct store *st = open_ok("tx.db");
    const char *targets[] = {"127.0.0.1:9000"};
    char **t = NULL;
    size_t n = 0;
    char *live = NULL;

    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_begin(st), -EINVAL);
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_version_put(st, "web", "v2", targets, 1), 0);
    int64_t id = insert_change(st, "web", "v2");
    assert_int_equal(store_event_add(st, id, "created", NULL), 0);
    /* Inside the transaction the writes are visible to their own handle. */
    assert_int_equal(store_service_get(st, "web", &live, NULL), 0);
    assert_string_equal(live, "v2");
    free(live);
    assert_int_equal(store_rollback(st), 0);

    assert_int_equal(store_service_get(st, "web", &live, NULL), 0);
    assert_string_equal(live, "v1");
    free(live);
    assert_int_equal(store_version_targets(st, "web", "v2", &t, &n), -ENOENT);
    struct store_change got;
    assert_int_equal(store_change_get(st, id, &got), -ENOENT);

    /* Rollback with nothing open is harmless; commit with nothing open is an error. */
    assert_int_equal(store_rollback(st), 0);
    assert_int_equal(store_commit(st), -EIO);
    assert_true(strlen(store_errmsg(st)) > 0);

    /* A committed transaction keeps everything. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_version_put(st, "web", "v2", targets, 1), 0);
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_version_targets(st, "web", "v2", &t, &n), 0);
    assert_int_equal(n, 1);
    store_strv_free(t);
    store_free(st);
}

static void test_two_handles_see_committed(void **state)
{
    (void)state;
    struct store *a = open_ok("shared.db");
    struct store *b = open_ok("shared.db");
    char *live = NULL;
    struct store_change *v = NULL;
    size_t n = 0;

    assert_int_equal(store_service_set(a, "web", "v1", NULL), 0);
    assert_int_equal(store_service_get(b, "web", &live, NULL), 0);
    assert_string_equal(live, "v1");
    free(live);

    /* Uncommitted writes stay invisible to the other handle, which still reads (WAL readers do
     * not wait for the writer). */
    assert_int_equal(store_begin(a), 0);
    assert_int_equal(store_service_set(a, "web", "v2", "v1"), 0);
    insert_change(a, "web", "v2");
    assert_int_equal(store_service_get(b, "web", &live, NULL), 0);
    assert_string_equal(live, "v1");
    free(live);
    assert_int_equal(store_change_list(b, NULL, 0, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_commit(a), 0);

    assert_int_equal(store_service_get(b, "web", &live, NULL), 0);
    assert_string_equal(live, "v2");
    free(live);
    assert_int_equal(store_change_list(b, "web", 0, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].actor, "alice");
    store_change_list_free(v, n);

    /* And the other way round. */
    int64_t id = insert_change(b, "api", "a1");
    struct store_change got;
    assert_int_equal(store_change_get(a, id, &got), 0);
    assert_string_equal(got.service, "api");
    store_change_done(&got);
    store_free(a);
    store_free(b);
}

/* The engine retries a refused write on its own timer: store_begin_within must give up on
 * another process's write lock instead of waiting the busy timeout, and succeed once the lock
 * is gone. */
static void test_begin_within_gives_up_on_a_held_lock(void **state)
{
    (void)state;
    struct store *a = open_ok("locked.db");
    struct store *b = open_ok("locked.db");
    char *live = NULL;

    assert_int_equal(store_service_set(a, "web", "v1", NULL), 0);
    assert_int_equal(store_begin(a), 0);
    assert_int_equal(store_service_set(a, "web", "v2", "v1"), 0);
    assert_int_equal(store_begin_within(b, 0), -EIO);
    assert_non_null(strstr(store_errmsg(b), "locked"));
    assert_int_equal(store_begin_within(b, 20), -EIO);
    /* Nothing is left open on b after the refusal; reads still work. */
    assert_int_equal(store_rollback(b), 0);
    assert_int_equal(store_service_get(b, "web", &live, NULL), 0);
    assert_string_equal(live, "v1");
    free(live);
    assert_int_equal(store_commit(a), 0);

    assert_int_equal(store_begin_within(b, 0), 0);
    assert_int_equal(store_begin_within(b, 0), -EINVAL); /* not nestable, like store_begin */
    assert_int_equal(store_service_set(b, "web", "v3", "v2"), 0);
    assert_int_equal(store_commit(b), 0);
    assert_int_equal(store_service_get(a, "web", &live, NULL), 0);
    assert_string_equal(live, "v3");
    free(live);
    store_free(a);
    store_free(b);
}

/* --- durability ------------------------------------------------------------------------------ */

static void test_durable_across_close(void **state)
{
    (void)state;
    struct store *st = open_ok("durable.db");
    const char *targets[] = {"127.0.0.1:9001", "127.0.0.1:9002"};
    int64_t id;

    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_version_put(st, "web", "v2", targets, 2), 0);
    id = insert_change(st, "web", "v2");
    assert_int_equal(store_event_add(st, id, "created", "deploy v2"), 0);
    assert_int_equal(store_change_set_detail(st, id, "{\"step\":2}"), 0);
    assert_int_equal(store_change_update(st, id, STORE_CHANGE_COMPLETED, "done"), 0);
    store_free(st);

    st = open_ok("durable.db");
    char *live = NULL, *prev = NULL, **t = NULL;
    size_t n = 0;
    assert_int_equal(store_service_get(st, "web", &live, &prev), 0);
    assert_string_equal(live, "v2");
    assert_string_equal(prev, "v1");
    free(live);
    free(prev);
    assert_int_equal(store_version_targets(st, "web", "v2", &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[1], "127.0.0.1:9002");
    store_strv_free(t);
    struct store_change got;
    assert_int_equal(store_change_get(st, id, &got), 0);
    assert_string_equal(got.state, STORE_CHANGE_COMPLETED);
    assert_string_equal(got.detail, "{\"step\":2}");
    assert_true(got.ended_ms > 0);
    store_change_done(&got);
    struct store_event *ev = NULL;
    assert_int_equal(store_event_list(st, id, &ev, &n), 0);
    assert_int_equal(n, 1);
    store_event_list_free(ev, n);
    store_free(st);
}

/* A writer killed with SIGKILL right after committing (no close, no checkpoint) loses nothing:
 * the commit is in the WAL file, and the next open recovers it. */
static void test_kill9_keeps_committed(void **state)
{
    (void)state;
    const char *path = db_path("killed.db");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        struct store *st = NULL;
        char err[256];
        if (store_open(path, &st, err, sizeof(err)) != 0)
            _exit(2);
        if (store_service_set(st, "web", "v7", "v6") != 0 || store_begin(st) != 0)
            _exit(3);
        struct store_change c = change_of("web", "v6", "v7");
        if (store_change_insert(st, &c) != 0 || store_event_add(st, c.id, "created", NULL) != 0 ||
            store_commit(st) != 0)
            _exit(4);
        /* Started and never committed: must not survive. */
        if (store_begin(st) != 0 || store_service_set(st, "web", "v8", "v7") != 0)
            _exit(5);
        kill(getpid(), SIGKILL);
        _exit(6);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    struct store *st = open_ok("killed.db");
    char *live = NULL;
    assert_int_equal(store_service_get(st, "web", &live, NULL), 0);
    assert_string_equal(live, "v7");
    free(live);
    struct store_change *v = NULL;
    size_t n = 0;
    assert_int_equal(store_change_list_running(st, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].to_version, "v7");
    struct store_event *ev = NULL;
    size_t nev = 0;
    assert_int_equal(store_event_list(st, v[0].id, &ev, &nev), 0);
    assert_int_equal(nev, 1);
    store_event_list_free(ev, nev);
    store_change_list_free(v, n);
    store_free(st);
}

/* The outbox: the mark starts at the newest event, rows come back oldest first per webhook, a
 * second row for one event and webhook is ignored, tries are counted and states counted per
 * change, and all of it survives a reopen. */
static void test_outbox_rows_mark_and_counts(void **state)
{
    (void)state;
    struct store *st = open_ok("outbox.db");
    int64_t mark = -1;
    int64_t c = insert_change(st, "web", "v2");
    struct store_outbox o = {.change_id = c,
                             .hook = 0,
                             .url = (char *)"http://x/",
                             .type = (char *)"created",
                             .body = (char *)"{}",
                             .created_ms = 1};
    struct store_outbox got;
    struct store_outbox_counts n;

    assert_int_equal(store_outbox_mark_get(st, &mark), 0);
    assert_int_equal(mark, 0);
    assert_int_equal(store_event_add(st, c, "created", NULL), 0);
    assert_int_equal(store_event_add(st, c, "switched", NULL), 0);
    o.event_id = 1;
    o.webhook_id = (char *)"msg_1_0";
    assert_int_equal(store_outbox_add(st, &o), 0);
    o.webhook_id = (char *)"msg_1_0_again";
    assert_int_equal(store_outbox_add(st, &o), 0); /* ignored: same event and hook */
    o.event_id = 2;
    o.webhook_id = (char *)"msg_2_0";
    assert_int_equal(store_outbox_add(st, &o), 0);
    assert_int_equal(store_outbox_mark_set(st, 2), 0);
    assert_int_equal(store_outbox_mark_set(st, 1), 0); /* never back */
    assert_int_equal(store_outbox_mark_get(st, &mark), 0);
    assert_int_equal(mark, 2);

    assert_int_equal(store_outbox_next(st, 1, &got), -ENOENT);
    assert_int_equal(store_outbox_next(st, 0, &got), 0);
    assert_int_equal(got.event_id, 1);
    assert_string_equal(got.webhook_id, "msg_1_0");
    assert_int_equal(got.attempts, 0);
    assert_null(got.last_error);
    assert_int_equal(store_outbox_result(st, got.id, STORE_OUTBOX_PENDING, "refused"), 0);
    store_outbox_done(&got);
    store_free(st);

    st = open_ok("outbox.db");
    assert_int_equal(store_outbox_next(st, 0, &got), 0);
    assert_int_equal(got.event_id, 1);
    assert_int_equal(got.attempts, 1);
    assert_string_equal(got.last_error, "refused");
    assert_int_equal(store_outbox_result(st, got.id, STORE_OUTBOX_DELIVERED, NULL), 0);
    store_outbox_done(&got);
    assert_int_equal(store_outbox_next(st, 0, &got), 0);
    assert_int_equal(got.event_id, 2);
    assert_int_equal(store_outbox_result(st, got.id, STORE_OUTBOX_FAILED, "too old"), 0);
    store_outbox_done(&got);
    assert_int_equal(store_outbox_next(st, 0, &got), -ENOENT);

    assert_int_equal(store_outbox_counts(st, c, &n), 0);
    assert_int_equal(n.pending, 0);
    assert_int_equal(n.delivered, 1);
    assert_int_equal(n.failed, 1);
    assert_string_equal(n.last_error, "too old");
    free(n.last_error);
    /* A webhook the config no longer has: its pending rows are given up. */
    o.event_id = 2;
    o.hook = 3;
    o.webhook_id = (char *)"msg_2_3";
    assert_int_equal(store_outbox_add(st, &o), 0);
    assert_int_equal(store_outbox_orphans(st, 1, "gone"), 0);
    assert_int_equal(store_outbox_next(st, 3, &got), -ENOENT);
    assert_int_equal(store_outbox_counts(st, c, &n), 0);
    assert_int_equal(n.failed, 2);
    assert_string_equal(n.last_error, "gone");
    free(n.last_error);
    assert_int_equal(store_outbox_counts(st, c + 100, &n), 0);
    assert_int_equal(n.pending + n.delivered + n.failed, 0);
    assert_null(n.last_error);
    store_free(st);
}

/* --- guard, backup, recovery ------------------------------------------------------------------ */

/* live of service web in the database at path, read with a bare read-only handle ("" if none). */
static void raw_live(const char *path, char *out, size_t n)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    out[0] = '\0';
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT live FROM services WHERE name = 'web'", -1, &s, NULL),
        SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void overwrite_header(const char *path)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fwrite("this is no sqlite", 1, 17, f), 17);
    fclose(f);
}

static void test_backup_is_a_consistent_copy(void **state)
{
    (void)state;
    struct store *st = open_ok("bk.db");
    char bak[512], err[256], live[64];
    snprintf(bak, sizeof(bak), "%s", db_path("bk.db.backup"));
    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_int_equal(store_backup(st, bak, err, sizeof(err)), 0);
    /* Written after the copy: not in it. */
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    raw_live(bak, live, sizeof(live));
    assert_string_equal(live, "v1");
    struct stat sb;
    assert_int_equal(stat(bak, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", bak);
    assert_false(exists(tmp));
    char report[256];
    assert_int_equal(store_integrity(bak, report, sizeof(report)), 0);
    /* A self-contained file: a read-only check leaves nothing beside it. */
    snprintf(tmp, sizeof(tmp), "%s-wal", bak);
    assert_false(exists(tmp));
    /* A destination that cannot be written is an error with a message, not a crash. */
    assert_true(store_backup(st, db_path("no-such-dir/x.backup"), err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "no-such-dir"));
    store_free(st);
}

static void test_backup_after_a_change_ends_at_commit(void **state)
{
    (void)state;
    struct store *st = open_ok("auto.db");
    char bak[512], live[64];
    snprintf(bak, sizeof(bak), "%s", db_path("auto.db.backup"));
    store_backup_after_change(st, bak);
    int64_t id = insert_change(st, "web", "v2"); /* running: nothing ended */
    assert_false(exists(bak));

    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_change_update(st, id, STORE_CHANGE_COMPLETED, "done"), 0);
    assert_false(exists(bak)); /* not before the commit: the end may still be rolled back */
    assert_int_equal(store_commit(st), 0);
    assert_true(exists(bak));
    raw_live(bak, live, sizeof(live));
    assert_string_equal(live, "v2");
    assert_null(store_backup_error(st));

    /* A rolled-back end is not backed up. */
    int64_t id2 = insert_change(st, "web", "v3");
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_service_set(st, "web", "v3", "v2"), 0);
    assert_int_equal(store_change_update(st, id2, STORE_CHANGE_COMPLETED, NULL), 0);
    assert_int_equal(store_rollback(st), 0);
    raw_live(bak, live, sizeof(live));
    assert_string_equal(live, "v2");

    /* Outside a transaction: at once. */
    assert_int_equal(store_service_set(st, "web", "v4", "v2"), 0);
    raw_live(bak, live, sizeof(live));
    assert_string_equal(live, "v4");

    /* A flush backs up what no ended change wrote (a plan's step at a stop). */
    assert_int_equal(store_change_set_detail(st, id2, "{\"step\": 2}"), 0);
    assert_int_equal(store_begin(st), 0);
    store_backup_flush(st); /* not with a transaction open: it would not be in the copy */
    assert_int_equal(store_commit(st), 0);
    store_backup_flush(st);
    char detail[64] = "";
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open_v2(bak, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT detail FROM changes WHERE id = ?1", -1, &q, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(q, 1, id2);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    snprintf(detail, sizeof(detail), "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_string_equal(detail, "{\"step\": 2}");

    /* A failing backup is reported, and the write still succeeds. */
    store_backup_after_change(st, db_path("no-such-dir/auto.backup"));
    assert_int_equal(store_change_update(st, id2, STORE_CHANGE_ABORTED, NULL), 0);
    assert_non_null(store_backup_error(st));
    store_free(st);
}

static void test_guard_notices_a_deleted_store_and_backs_up_the_held_file(void **state)
{
    (void)state;
    struct store *st = open_ok("gone.db");
    char bak[512], live[64];
    snprintf(bak, sizeof(bak), "%s", db_path("gone.db.backup"));
    store_backup_after_change(st, bak);
    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_int_equal(store_guard_check(st), 0);
    assert_null(store_guard_why(st));

    assert_int_equal(unlink(db_path("gone.db")), 0);
    /* Written after the deletion: only the held file has it. */
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_guard_check(st), 1);
    const char *why = store_guard_why(st);
    assert_non_null(why);
    assert_non_null(strstr(why, "gone.db was deleted"));
    raw_live(bak, live, sizeof(live));
    assert_string_equal(live, "v2");
    assert_int_equal(store_guard_check(st), 1); /* it stays tripped */
    store_free(st);
}

static void test_guard_notices_a_replaced_store(void **state)
{
    (void)state;
    struct store *st = open_ok("swap.db");
    struct store *other = open_ok("swap-other.db");
    store_free(other);
    assert_int_equal(store_guard_check(st), 0);
    char from[512];
    snprintf(from, sizeof(from), "%s", db_path("swap-other.db"));
    assert_int_equal(rename(from, db_path("swap.db")), 0);
    assert_int_equal(store_guard_check(st), 1);
    assert_non_null(strstr(store_guard_why(st), "swap.db was replaced by another file"));
    store_free(st);
}

static void test_guard_set_stops_automatic_backups(void **state)
{
    (void)state;
    struct store *st = NULL;
    char err[256], bak[512];
    snprintf(bak, sizeof(bak), "%s", db_path("mem.backup"));
    assert_int_equal(store_open(":memory:", &st, err, sizeof(err)), 0);
    assert_int_equal(store_guard_check(st), 0); /* nothing to compare in memory */
    store_backup_after_change(st, bak);
    store_guard_set(st, "the store X is corrupt");
    assert_string_equal(store_guard_why(st), "the store X is corrupt");
    assert_int_equal(store_guard_check(st), 1);
    assert_int_equal(store_service_set(st, "web", "v1", NULL), 0);
    assert_false(exists(bak));
    store_free(st);
}

static void test_guard_trips_when_sqlite_finds_corruption(void **state)
{
    (void)state;
    store_free(open_ok("bad.db")); /* closed: everything is in the main file, no -wal */
    struct store *st = open_ok("bad.db");
    char bak[512];
    snprintf(bak, sizeof(bak), "%s", db_path("bad.db.backup"));
    store_backup_after_change(st, bak);
    /* Every page but the first (the schema) becomes garbage under the open handle. */
    FILE *f = fopen(db_path("bad.db"), "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 4096);
    assert_int_equal(fseek(f, 4096, SEEK_SET), 0);
    for (long i = 4096; i < size; i++)
        fputc(0xa5, f);
    fclose(f);
    assert_null(store_guard_why(st));
    char *live = NULL;
    assert_int_equal(store_service_get(st, "web", &live, NULL), -EIO);
    const char *why = store_guard_why(st);
    assert_non_null(why);
    assert_non_null(strstr(why, "bad.db failed"));
    /* A suspect file is not copied over a good backup. */
    assert_int_equal(store_service_set(st, "web", "v1", NULL) == 0, 0);
    assert_false(exists(bak));
    store_free(st);
}

static void test_integrity_check(void **state)
{
    (void)state;
    char report[512];
    store_free(open_ok("ic.db"));
    assert_int_equal(store_integrity(db_path("ic.db"), report, sizeof(report)), 0);
    overwrite_header(db_path("ic.db"));
    assert_int_equal(store_integrity(db_path("ic.db"), report, sizeof(report)), 1);
    assert_non_null(strstr(report, "not a database"));
    assert_int_equal(store_integrity(db_path("ic-missing.db"), report, sizeof(report)), -ENOENT);
}

/* A store with web live at v2, backed up, closed. */
static void make_backed_up(const char *name, const char *bak)
{
    struct store *st = open_ok(name);
    char err[256];
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_backup(st, bak, err, sizeof(err)), 0);
    store_free(st);
}

static void test_recover_missing_store_from_backup(void **state)
{
    (void)state;
    char db[512], bak[512], what[1024], live[64];
    snprintf(db, sizeof(db), "%s", db_path("miss.db"));
    snprintf(bak, sizeof(bak), "%s", db_path("miss.db.backup"));
    /* A first start: nothing, no backup. */
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_NONE);
    make_backed_up("miss.db", bak);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_NONE);
    assert_int_equal(unlink(db), 0);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_RESTORED);
    assert_non_null(strstr(what, "was missing"));
    struct store *st = open_ok("miss.db");
    char *l = NULL;
    assert_int_equal(store_service_get(st, "web", &l, NULL), 0);
    assert_string_equal(l, "v2");
    free(l);
    store_free(st);
    raw_live(bak, live, sizeof(live)); /* the backup itself is left as it was */
    assert_string_equal(live, "v2");
}

static void test_recover_corrupt_store_keeps_it_aside(void **state)
{
    (void)state;
    char db[512], bak[512], what[1024];
    snprintf(db, sizeof(db), "%s", db_path("rot.db"));
    snprintf(bak, sizeof(bak), "%s", db_path("rot.db.backup"));
    make_backed_up("rot.db", bak);
    overwrite_header(db);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_RESTORED);
    assert_non_null(strstr(what, "was corrupt"));
    char live[64];
    raw_live(db, live, sizeof(live));
    assert_string_equal(live, "v2");
    /* The bad file is kept as rot.db.corrupt-YYYYMMDDTHHMMSSZ. */
    DIR *dir = opendir(tmpdir);
    assert_non_null(dir);
    int kept = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        if (strncmp(e->d_name, "rot.db.corrupt-", 15) == 0 && strlen(e->d_name) == 15 + 16)
            kept++;
    closedir(dir);
    assert_int_equal(kept, 1);
}

static void test_recover_store_behind_its_backup(void **state)
{
    (void)state;
    char db[512], bak[512], what[1024], live[64], err[256];
    snprintf(db, sizeof(db), "%s", db_path("old.db"));
    snprintf(bak, sizeof(bak), "%s", db_path("old.db.backup"));
    struct store *st = open_ok("old.db");
    int64_t id = insert_change(st, "web", "v2");
    assert_int_equal(store_change_update(st, id, STORE_CHANGE_COMPLETED, NULL), 0);
    assert_int_equal(store_service_set(st, "web", "v2", "v1"), 0);
    assert_int_equal(store_backup(st, bak, err, sizeof(err)), 0);
    /* Ahead of the backup (a change since): the store is used as it is. */
    insert_change(st, "web", "v3");
    store_free(st);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_NONE);

    /* Another (sound, empty) database put in its place. */
    assert_int_equal(unlink(db), 0);
    store_free(open_ok("old.db"));
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_RESTORED);
    assert_non_null(strstr(what, "older than its backup"));
    raw_live(db, live, sizeof(live));
    assert_string_equal(live, "v2");
    DIR *dir = opendir(tmpdir);
    assert_non_null(dir);
    int kept = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        if (strncmp(e->d_name, "old.db.older-", 13) == 0 && strlen(e->d_name) == 13 + 16)
            kept++;
    closedir(dir);
    assert_int_equal(kept, 1);
}

static void test_recover_corrupt_store_without_backup_leaves_it(void **state)
{
    (void)state;
    char db[512], bak[512], what[1024], report[256];
    snprintf(db, sizeof(db), "%s", db_path("lost.db"));
    snprintf(bak, sizeof(bak), "%s", db_path("lost.db.backup"));
    store_free(open_ok("lost.db"));
    overwrite_header(db);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_CORRUPT);
    assert_non_null(strstr(what, "no backup"));
    assert_int_equal(store_integrity(db, report, sizeof(report)), 1); /* untouched */
    /* A corrupt backup is no backup. */
    store_free(open_ok("lost2.db"));
    snprintf(db, sizeof(db), "%s", db_path("lost2.db"));
    make_backed_up("lost3.db", bak);
    overwrite_header(bak);
    overwrite_header(db);
    assert_int_equal(store_recover(db, bak, what, sizeof(what)), STORE_RECOVER_CORRUPT);
    assert_non_null(strstr(what, "its backup"));
}

/* --- the hash chain -------------------------------------------------------------------------- */

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

static struct store_chain verify_ok(struct store *st, int64_t id)
{
    struct store_chain ch;
    assert_int_equal(store_chain_verify(st, id, &ch), 0);
    assert_int_equal(ch.change_id, id);
    return ch;
}

static void test_chain_links_each_event_and_names_the_first_altered(void **state)
{
    (void)state;
    const char *path = db_path("chain.db");
    struct store *st = open_ok("chain.db");
    int64_t id = insert_change(st, "web", "v2");
    int64_t other = insert_change(st, "web", "v3");
    assert_int_equal(store_event_add(st, id, "created", "deploy v2"), 0);
    assert_int_equal(store_event_add(st, other, "created", "deploy v3"), 0);
    assert_int_equal(store_event_add(st, id, "switched", "traffic on v2"), 0);
    assert_int_equal(store_event_add(st, id, "completed", NULL), 0);

    struct store_event *ev = NULL;
    size_t n = 0;
    assert_int_equal(store_event_list(st, id, &ev, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(ev[i].hash);
        assert_int_equal(strlen(ev[i].hash), 64);
        if (i > 0)
            assert_string_not_equal(ev[i].hash, ev[i - 1].hash);
    }
    int64_t second = ev[1].id, third = ev[2].id;
    store_event_list_free(ev, n);

    struct store_chain ch = verify_ok(st, id);
    assert_int_equal(ch.events, 3);
    assert_int_equal(ch.chained, 3);
    assert_int_equal(ch.unchained, 0);
    assert_int_equal(ch.broken, 0);
    assert_int_equal(ch.bad_event, 0);
    assert_int_equal(store_chain_verify(st, 999, &ch), -ENOENT);

    /* A message altered behind the store's back: that event is named, the other change is
     * untouched. */
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE events SET message = 'all fine' WHERE id = %lld",
             (long long)second);
    raw_exec(path, sql);
    ch = verify_ok(st, id);
    assert_int_equal(ch.broken, 1);
    assert_int_equal(ch.bad_event, second);
    assert_string_equal(ch.bad_type, "switched");
    assert_int_equal(ch.chained, 1);
    assert_non_null(strstr(ch.why, "altered"));
    assert_int_equal(verify_ok(st, other).broken, 0);
    snprintf(sql, sizeof(sql), "UPDATE events SET message = 'traffic on v2' WHERE id = %lld",
             (long long)second);
    raw_exec(path, sql);
    assert_int_equal(verify_ok(st, id).broken, 0); /* put back: intact again */

    /* The change's own fields are part of the first link. */
    raw_exec(path, "UPDATE changes SET to_version = 'v9' WHERE id = 1");
    ch = verify_ok(st, id);
    assert_int_equal(ch.chained, 0);
    assert_non_null(strstr(ch.why, "change's own"));
    raw_exec(path, "UPDATE changes SET to_version = 'v2' WHERE id = 1");

    /* The newest event removed: the change's own record of its chain's end tells. */
    assert_int_equal(store_event_add(st, id, "note", "alice: a lesson"), 0);
    raw_exec(path, "DELETE FROM events WHERE type = 'note'");
    ch = verify_ok(st, id);
    assert_int_equal(ch.broken, 1);
    assert_int_equal(ch.bad_event, third);
    assert_non_null(strstr(ch.why, "removed"));
    raw_exec(path, "UPDATE changes SET chain_head = "
                   "(SELECT hash FROM events WHERE change_id = 1 ORDER BY id DESC LIMIT 1) "
                   "WHERE id = 1");
    assert_int_equal(verify_ok(st, id).broken, 0);

    /* A removed event breaks the link of the one after it; a removed hash is no way out. */
    snprintf(sql, sizeof(sql), "DELETE FROM events WHERE id = %lld", (long long)second);
    raw_exec(path, sql);
    assert_int_equal(verify_ok(st, id).bad_event, third);
    raw_exec(path, "UPDATE events SET hash = NULL WHERE change_id = 2");
    ch = verify_ok(st, other);
    assert_int_equal(ch.broken, 1);
    assert_non_null(strstr(ch.why, "no hash"));
    /* Every event of a change removed: nothing to name, but not intact. */
    raw_exec(path, "DELETE FROM events WHERE change_id = 2");
    ch = verify_ok(st, other);
    assert_int_equal(ch.broken, 1);
    assert_int_equal(ch.bad_event, 0);
    assert_int_equal(ch.events, 0);
    store_free(st);
}

static void test_chain_skips_events_recorded_before_it(void **state)
{
    (void)state;
    const char *path = db_path("prechain.db");
    struct store *st = open_ok("prechain.db");
    int64_t id = insert_change(st, "web", "v2");
    assert_int_equal(store_event_add(st, id, "created", "deploy v2"), 0);
    assert_int_equal(store_event_add(st, id, "step", "weight 10"), 0);
    store_free(st);
    /* As a store migrated from schema 3 has them: no hash, below the mark. */
    raw_exec(path, "UPDATE events SET hash = NULL; UPDATE changes SET chain_head = NULL; "
                   "UPDATE chain_mark SET event_id = (SELECT max(id) FROM events), since_ms = 42");
    st = open_ok("prechain.db");
    int64_t since = 0, mark = 0;
    assert_int_equal(store_chain_mark(st, &since, &mark), 0);
    assert_int_equal(since, 42);
    assert_int_equal(mark, 2);
    struct store_chain ch = verify_ok(st, id);
    assert_int_equal(ch.events, 2);
    assert_int_equal(ch.unchained, 2);
    assert_int_equal(ch.chained, 0);
    assert_int_equal(ch.broken, 0);
    /* The change goes on after the upgrade: its new events chain from the change itself. */
    assert_int_equal(store_event_add(st, id, "completed", "done"), 0);
    ch = verify_ok(st, id);
    assert_int_equal(ch.unchained, 2);
    assert_int_equal(ch.chained, 1);
    assert_int_equal(ch.broken, 0);
    /* An older cutover handing over to this one writes an event without a hash: unchained,
     * not tampered, and the chain goes on from the change itself. */
    int64_t handed = insert_change(st, "web", "v3");
    raw_exec(path, "INSERT INTO events (change_id, ts_ms, type, message) "
                   "VALUES (2, 1, 'suspended', 'handing over')");
    assert_int_equal(store_event_add(st, handed, "resumed", "taken over"), 0);
    ch = verify_ok(st, handed);
    assert_int_equal(ch.unchained, 1);
    assert_int_equal(ch.chained, 1);
    assert_int_equal(ch.broken, 0);
    /* The same insert after chained events is not taken for an old one. */
    raw_exec(path, "INSERT INTO events (change_id, ts_ms, type, message) "
                   "VALUES (2, 2, 'completed', 'forged')");
    ch = verify_ok(st, handed);
    assert_int_equal(ch.broken, 1);
    assert_string_equal(ch.bad_type, "completed");
    assert_non_null(strstr(ch.why, "after chained events"));
    int64_t *ids = NULL;
    size_t n = 0;
    insert_change(st, "api", "v1");
    assert_int_equal(store_change_ids(st, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], id);
    free(ids);
    store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_creates_private_wal_file),
        cmocka_unit_test(test_instances_put_list_delete),
        cmocka_unit_test(test_audit_add_list_and_window),
        cmocka_unit_test(test_reopen_keeps_data_and_schema),
        cmocka_unit_test(test_open_existing_empty_file),
        cmocka_unit_test(test_refuses_newer_schema),
        cmocka_unit_test(test_open_failure_reports),
        cmocka_unit_test(test_service_set_get),
        cmocka_unit_test(test_version_put_replaces_targets_in_order),
        cmocka_unit_test(test_version_put_is_atomic),
        cmocka_unit_test(test_change_insert_update_get),
        cmocka_unit_test(test_change_insert_terminal_sets_ended),
        cmocka_unit_test(test_change_list_newest_first),
        cmocka_unit_test(test_change_list_default_limit),
        cmocka_unit_test(test_change_list_running_oldest_first),
        cmocka_unit_test(test_event_listener_hears_committed_events_only),
        cmocka_unit_test(test_events_ordered),
        cmocka_unit_test(test_rollback_discards),
        cmocka_unit_test(test_two_handles_see_committed),
        cmocka_unit_test(test_begin_within_gives_up_on_a_held_lock),
        cmocka_unit_test(test_durable_across_close),
        cmocka_unit_test(test_kill9_keeps_committed),
        cmocka_unit_test(test_outbox_rows_mark_and_counts),
        cmocka_unit_test(test_backup_is_a_consistent_copy),
        cmocka_unit_test(test_backup_after_a_change_ends_at_commit),
        cmocka_unit_test(test_guard_notices_a_deleted_store_and_backs_up_the_held_file),
        cmocka_unit_test(test_guard_notices_a_replaced_store),
        cmocka_unit_test(test_guard_set_stops_automatic_backups),
        cmocka_unit_test(test_guard_trips_when_sqlite_finds_corruption),
        cmocka_unit_test(test_integrity_check),
        cmocka_unit_test(test_recover_missing_store_from_backup),
        cmocka_unit_test(test_recover_corrupt_store_keeps_it_aside),
        cmocka_unit_test(test_recover_store_behind_its_backup),
        cmocka_unit_test(test_recover_corrupt_store_without_backup_leaves_it),
        cmocka_unit_test(test_chain_links_each_event_and_names_the_first_altered),
        cmocka_unit_test(test_chain_skips_events_recorded_before_it),
        cmocka_unit_test(test_hold_state_and_actions),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
