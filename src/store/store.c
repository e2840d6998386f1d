/* Durable state in SQLite (see store.h and docs/internals/store.md). Owns one sqlite3 handle
 * in WAL mode and every prepared statement the module runs, prepared once at open and reset
 * after each use. The schema is a forward-only list of migrations keyed by PRAGMA user_version.
 * Control thread only: the data plane never calls into the store. */
#include "store/store.h"

#include "core/xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Each entry moves the schema from version i to i + 1 and runs in its own transaction together
 * with the user_version bump. Entries are never edited once released: a change to the schema is
 * a new entry appended at the end. */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE services ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  live TEXT,"
    "  previous TEXT,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE versions ("
    "  service TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (service, name));"
    "CREATE TABLE targets ("
    "  service TEXT NOT NULL,"
    "  version TEXT NOT NULL,"
    "  address TEXT NOT NULL,"
    "  position INTEGER NOT NULL,"
    "  PRIMARY KEY (service, version, position),"
    "  FOREIGN KEY (service, version) REFERENCES versions (service, name) ON DELETE CASCADE);"
    "CREATE TABLE changes ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  service TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  from_version TEXT,"
    "  to_version TEXT NOT NULL,"
    "  plan TEXT,"
    "  actor TEXT NOT NULL,"
    "  reason TEXT,"
    "  state TEXT NOT NULL,"
    "  message TEXT,"
    "  detail TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  ended_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX changes_service_id ON changes (service, id);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  change_id INTEGER NOT NULL REFERENCES changes (id) ON DELETE CASCADE,"
    "  ts_ms INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  message TEXT);"
    "CREATE INDEX events_change_id ON events (change_id, id);",
    /* 2: managed instances, so a restarted daemon adopts what its predecessor started. */
    "CREATE TABLE instances ("
    "  service TEXT NOT NULL,"
    "  version TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  start_ticks INTEGER NOT NULL,"
    "  port INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (service, version, idx));",
    /* 3: the webhook outbox (see "outbox" at the end of this file): one row per delivery of an
     * event to a webhook, and the last event whose deliveries are written. An existing store
     * starts its mark at its newest event, so an upgrade does not post its whole history. */
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,"
    "  change_id INTEGER NOT NULL,"
    "  hook INTEGER NOT NULL,"
    "  url TEXT NOT NULL,"
    "  webhook_id TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  done_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (event_id, hook));"
    "CREATE INDEX outbox_pending ON outbox (state, hook, id);"
    "CREATE INDEX outbox_change ON outbox (change_id);"
    "CREATE TABLE outbox_mark ("
    "  k INTEGER PRIMARY KEY CHECK (k = 1),"
    "  event_id INTEGER NOT NULL);"
    "INSERT INTO outbox_mark SELECT 1, COALESCE(MAX(id), 0) FROM events;",
    /* 4: the audit log of the admin API (store_audit_add). */
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  ts_ms INTEGER NOT NULL,"
    "  actor TEXT,"
    "  channel TEXT NOT NULL,"
    "  peer TEXT,"
    "  method TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  outcome TEXT);"
    "CREATE INDEX audit_ts ON audit (ts_ms);",
    /* 5: each change's events are hash-chained (see "chain" at the end of this file). Events
     * recorded before this step have no hash; chain_mark says up to which event and since when,
     * so that a hash removed later is told from one that never was. changes.chain_head is the
     * hash of the change's newest event, so that removing the newest events shows too. */
    "ALTER TABLE events ADD COLUMN hash TEXT;"
    "ALTER TABLE changes ADD COLUMN chain_head TEXT;"
    "CREATE TABLE chain_mark ("
    "  k INTEGER PRIMARY KEY CHECK (k = 1),"
    "  event_id INTEGER NOT NULL,"
    "  since_ms INTEGER NOT NULL);"
    "INSERT INTO chain_mark SELECT 1, COALESCE(MAX(id), 0), "
    "  CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM events;"
    /* An older cutover still writing to this file (the one handing over to this binary) writes
     * events without a hash; they move the mark, so they read as unchained, not as tampered.
     * This code inserts its rows with an empty hash and sets the real one in the same
     * savepoint, so its rows never move the mark. */
    "CREATE TRIGGER events_unchained AFTER INSERT ON events WHEN NEW.hash IS NULL BEGIN"
    "  UPDATE chain_mark SET event_id = NEW.id WHERE k = 1 AND event_id < NEW.id;"
    "END;",
    /* 6: hold and maintenance (see "holds" at the end of this file): each service's current
     * state, so that a restart or a successor keeps it, and every action with its actor. */
    "CREATE TABLE holds ("
    "  service TEXT PRIMARY KEY NOT NULL,"
    "  hold_since_ms INTEGER NOT NULL DEFAULT 0,"
    "  hold_max_ms INTEGER NOT NULL DEFAULT 0,"
    "  hold_actor TEXT,"
    "  hold_change INTEGER NOT NULL DEFAULT 0,"
    "  maintenance_since_ms INTEGER NOT NULL DEFAULT 0,"
    "  maintenance_message TEXT,"
    "  maintenance_actor TEXT,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE actions ("
    "  id INTEGER PRIMARY KEY,"
    "  service TEXT NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  detail TEXT);"
    "CREATE INDEX actions_service_id ON actions (service, id);",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define BUSY_TIMEOUT_MS 5000
#define DEFAULT_LIST_LIMIT 100

/* The immutable fields of a change that its first event's hash chains from (chain_genesis).
 * Not from_version: a scheduled change learns it when it starts. */
#define CHAIN_CHANGE_COLUMNS "id, service, kind, to_version, actor, created_ms, chain_head"

/* The column order change_read expects. */
#define CHANGE_COLUMNS                                                                             \
    "id, service, kind, from_version, to_version, plan, actor, reason, state, message, detail, "   \
    "created_ms, updated_ms, ended_ms"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_SERVICE_GET,
    ST_SERVICE_SET,
    ST_VERSION_ADD,
    ST_TARGETS_CLEAR,
    ST_TARGET_ADD,
    ST_TARGETS_GET,
    ST_CHANGE_INSERT,
    ST_CHANGE_UPDATE,
    ST_CHANGE_DETAIL,
    ST_CHANGE_GET,
    ST_CHANGE_LIST_ALL,
    ST_CHANGE_LIST_SERVICE,
    ST_CHANGE_LIST_RUNNING,
    ST_CHANGE_LIST_SCHEDULED,
    ST_CHANGE_START_SCHEDULED,
    ST_EVENT_ADD,
    ST_EVENT_PREV,
    ST_EVENT_HASH,
    ST_CHAIN_HEAD,
    ST_CHANGE_GENESIS,
    ST_EVENT_LIST,
    ST_EVENT_SINCE,
    ST_INSTANCE_PUT,
    ST_INSTANCE_DEL,
    ST_INSTANCE_DEL_VERSION,
    ST_INSTANCE_LIST,
    ST_INSTANCE_VERSIONS,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    /* IMMEDIATE takes the write lock up front: a deferred transaction that reads first and
     * writes later can fail with SQLITE_BUSY_SNAPSHOT, which busy_timeout cannot wait out. */
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* Multi-statement operations use a savepoint so they are atomic both on their own and
     * inside a caller's store_begin. */
    [ST_SAVEPOINT] = "SAVEPOINT store_op",
    [ST_RELEASE] = "RELEASE store_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO store_op",
    [ST_SERVICE_GET] = "SELECT live, previous FROM services WHERE name = ?1",
    [ST_SERVICE_SET] =
        "INSERT INTO services (name, live, previous, updated_ms) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (name) DO UPDATE SET live = excluded.live, "
        "previous = excluded.previous, updated_ms = excluded.updated_ms",
    [ST_VERSION_ADD] = "INSERT INTO versions (service, name, created_ms) VALUES (?1, ?2, ?3) "
                       "ON CONFLICT (service, name) DO NOTHING",
    [ST_TARGETS_CLEAR] = "DELETE FROM targets WHERE service = ?1 AND version = ?2",
    [ST_TARGET_ADD] = "INSERT INTO targets (service, version, address, position) "
                      "VALUES (?1, ?2, ?3, ?4)",
    /* One row with a NULL address means the version exists without targets; no row means the
     * version is unknown. */
    [ST_TARGETS_GET] = "SELECT t.address FROM versions v LEFT JOIN targets t "
                       "ON t.service = v.service AND t.version = v.name "
                       "WHERE v.service = ?1 AND v.name = ?2 ORDER BY t.position",
    [ST_CHANGE_INSERT] =
        "INSERT INTO changes (service, kind, from_version, to_version, plan, actor, "
        "reason, state, message, detail, created_ms, updated_ms, ended_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
    /* ended_ms keeps the first time the change ended: a later note on a finished change must
     * not move its end. */
    [ST_CHANGE_UPDATE] = "UPDATE changes SET state = ?2, message = coalesce(?3, message), "
                         "updated_ms = ?4, ended_ms = CASE WHEN ?5 THEN "
                         "(CASE WHEN ended_ms = 0 THEN ?4 ELSE ended_ms END) ELSE 0 END "
                         "WHERE id = ?1",
    [ST_INSTANCE_PUT] =
        "INSERT INTO instances (service, version, idx, pid, start_ticks, port, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (service, version, idx) DO UPDATE SET "
        "pid = excluded.pid, start_ticks = excluded.start_ticks, port = excluded.port, "
        "updated_ms = excluded.updated_ms",
    [ST_INSTANCE_DEL] = "DELETE FROM instances WHERE service = ?1 AND version = ?2 AND idx = ?3",
    [ST_INSTANCE_DEL_VERSION] = "DELETE FROM instances WHERE service = ?1 AND version = ?2",
    [ST_INSTANCE_LIST] = "SELECT idx, pid, start_ticks, port FROM instances "
                         "WHERE service = ?1 AND version = ?2 ORDER BY idx",
    [ST_INSTANCE_VERSIONS] = "SELECT DISTINCT version FROM instances WHERE service = ?1 "
                             "ORDER BY version",
    [ST_CHANGE_DETAIL] = "UPDATE changes SET detail = ?2, updated_ms = ?3 WHERE id = ?1",
    [ST_CHANGE_GET] = "SELECT " CHANGE_COLUMNS " FROM changes WHERE id = ?1",
    [ST_CHANGE_LIST_ALL] = "SELECT " CHANGE_COLUMNS " FROM changes ORDER BY id DESC LIMIT ?1",
    [ST_CHANGE_LIST_SERVICE] = "SELECT " CHANGE_COLUMNS " FROM changes WHERE service = ?1 "
                               "ORDER BY id DESC LIMIT ?2",
    [ST_CHANGE_LIST_RUNNING] = "SELECT " CHANGE_COLUMNS
                               " FROM changes WHERE state = '" STORE_CHANGE_RUNNING "' ORDER BY id",
    [ST_CHANGE_LIST_SCHEDULED] =
        "SELECT " CHANGE_COLUMNS " FROM changes WHERE state = '" STORE_CHANGE_SCHEDULED
        "' ORDER BY id",
    [ST_CHANGE_START_SCHEDULED] = "UPDATE changes SET state = '" STORE_CHANGE_RUNNING
                                  "', from_version = ?2, message = ?3, updated_ms = ?4 "
                                  "WHERE id = ?1 AND state = '" STORE_CHANGE_SCHEDULED "'",
    /* The empty hash is replaced in the same savepoint (store_event_add); a NULL one would move
     * the chain's mark (migration 5's trigger). */
    [ST_EVENT_ADD] = "INSERT INTO events (change_id, ts_ms, type, message, hash) "
                     "VALUES (?1, ?2, ?3, ?4, '')",
    /* The hash the next event of a change chains from: its newest event's (NULL: none, or
     * recorded before the chain began; then the change's own fields). */
    [ST_EVENT_PREV] = "SELECT hash FROM events WHERE change_id = ?1 ORDER BY id DESC LIMIT 1",
    [ST_EVENT_HASH] = "UPDATE events SET hash = ?2 WHERE id = ?1",
    [ST_CHAIN_HEAD] = "UPDATE changes SET chain_head = ?2 WHERE id = ?1",
    [ST_CHANGE_GENESIS] = "SELECT " CHAIN_CHANGE_COLUMNS " FROM changes WHERE id = ?1",
    [ST_EVENT_LIST] = "SELECT id, change_id, ts_ms, type, message, hash FROM events "
                      "WHERE change_id = ?1 ORDER BY id",
    [ST_EVENT_SINCE] = "SELECT e.id, e.change_id, e.ts_ms, e.type, e.message, e.hash FROM events e "
                       "JOIN changes c ON c.id = e.change_id "
                       "WHERE e.id > ?1 AND (?3 IS NULL OR c.service = ?3) ORDER BY e.id LIMIT ?2",
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    char errmsg[512];
    struct {
        store_event_fn fn;
        void *ctx;
    } listeners[STORE_MAX_LISTENERS];
    struct store_event *held; /* added inside the open transaction: announced at its commit */
    size_t nheld, capheld;
    /* The guard: the file as opened, to notice when the path names another (or none). */
    char *path;   /* NULL in memory */
    int guard_fd; /* O_RDONLY on path, or -1 */
    int guard;    /* GUARD_*: why changes are refused, GUARD_OK when they are not */
    char guard_why[700];
    char *backup_to; /* the automatic backup's file, or NULL */
    int backup_due;  /* a change ended in the open transaction: back up at its commit */
    char backup_err[600];
};

enum {
    GUARD_OK,
    GUARD_LOST,      /* the path no longer names the file: backups from the held file go on */
    GUARD_INTEGRITY, /* a write failed for integrity reasons: the file itself is suspect */
    GUARD_SET,       /* set by the caller (a corrupt store without a backup) */
};

static void events_announce(struct store *st);
static int chain_prev(struct store *st, int64_t change_id, char prev[]);
static void chain_event_hash(const char *prev, int64_t id, int64_t change_id, int64_t ts_ms,
                             const char *type, const char *message, char out[]);
static void backup_if_due(struct store *st);
static void change_ended(struct store *st);
static void events_drop(struct store *st);
static void events_tell(struct store *st, const struct store_event *ev);
static int events_heard(const struct store *st);

static const char *const change_states[] = {
    STORE_CHANGE_RUNNING,     STORE_CHANGE_COMPLETED, STORE_CHANGE_FAILED,
    STORE_CHANGE_ROLLED_BACK, STORE_CHANGE_ABORTED,   STORE_CHANGE_INTERRUPTED,
    STORE_CHANGE_SCHEDULED,
};

/* --- helpers ------------------------------------------------------------------------------ */

/* Copies the handle's SQLite message so it survives the resets on the error path. A failure
 * that says the file is damaged or unreadable trips the guard: from then on the store is not
 * trusted with a change. */
static int sql_fail(struct store *st)
{
    snprintf(st->errmsg, sizeof(st->errmsg), "%s", sqlite3_errmsg(st->db));
    int code = sqlite3_extended_errcode(st->db) & 0xff;
    if (st->guard == GUARD_OK &&
        (code == SQLITE_CORRUPT || code == SQLITE_NOTADB || code == SQLITE_IOERR)) {
        st->guard = GUARD_INTEGRITY;
        snprintf(st->guard_why, sizeof(st->guard_why), "the store %s failed: %s",
                 st->path ? st->path : ":memory:", st->errmsg);
    }
    return -EIO;
}

static int set_fail(struct store *st, int rc, const char *msg)
{
    snprintf(st->errmsg, sizeof(st->errmsg), "%s", msg);
    return rc;
}

/* Returns statement id ready to bind; store_open prepared it. */
static sqlite3_stmt *stmt_get(struct store *st, enum stmt_id id)
{
    return st->stmt[id];
}

/* Makes s reusable and drops its bindings so no caller's string is referenced after return. */
static void stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Binds str as text, or NULL when str is NULL. The string must outlive the step, which it does:
 * every statement is stepped and reset before the function that bound it returns. */
static int bind_text(sqlite3_stmt *s, int idx, const char *str)
{
    if (str == NULL)
        return sqlite3_bind_null(s, idx);
    return sqlite3_bind_text(s, idx, str, -1, SQLITE_STATIC);
}

/* Steps a statement that returns no rows, then resets it. */
static int step_done(struct store *st, sqlite3_stmt *s)
{
    int rc = 0;
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = sql_fail(st);
    stmt_done(s);
    return rc;
}

static int exec_stmt(struct store *st, enum stmt_id id)
{
    return step_done(st, stmt_get(st, id));
}

/* Opens the savepoint that makes a multi-statement operation atomic. */
static int op_begin(struct store *st)
{
    return exec_stmt(st, ST_SAVEPOINT);
}

/* Ends the operation's savepoint: keeps its writes when rc is 0, undoes them otherwise. Returns
 * rc, or the release failure. The rollback's own errors are ignored: after some failures SQLite
 * has already rolled the whole transaction back, and the first error is the one to report. */
static int op_end(struct store *st, int rc)
{
    if (rc == 0) {
        rc = exec_stmt(st, ST_RELEASE);
        if (rc == 0)
            return 0;
    }
    sqlite3_stmt *s = stmt_get(st, ST_ROLLBACK_TO);
    if (sqlite3_step(s) == SQLITE_DONE) {
        stmt_done(s);
        s = stmt_get(st, ST_RELEASE);
        sqlite3_step(s);
    }
    stmt_done(s);
    return rc;
}

/* Runs a statement returning one integer (a PRAGMA) on a bare handle. */
static int query_int(sqlite3 *db, const char *sql, int *val)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        goto out;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *val = sqlite3_column_int(s, 0);
        rc = SQLITE_OK;
    }
out:
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? 0 : -EIO;
}

static int64_t clamp_limit(size_t limit)
{
    if (limit == 0)
        return DEFAULT_LIST_LIMIT;
    if (limit > (size_t)INT64_MAX)
        return INT64_MAX;
    return (int64_t)limit;
}

static char *column_strdup(sqlite3_stmt *s, int col)
{
    return xstrdup((const char *)sqlite3_column_text(s, col));
}

/* --- open, migrate, close ------------------------------------------------------------------ */

/* Creates the file with mode 0600 before SQLite sees it. SQLite gives the -wal and -shm files
 * the mode of the database file, so they stay private too. An existing file keeps its mode. */
static int create_private(struct store *st, const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
        int e = errno;
        snprintf(st->errmsg, sizeof(st->errmsg), "cannot open: %s", strerror(e));
        return -e;
    }
    close(fd);
    return 0;
}

static int set_pragmas(struct store *st, int in_memory)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;

    if (sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    /* journal_mode answers with the mode actually in force, which is not WAL when the file
     * system cannot share memory between processes. */
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        rc = sql_fail(st);
        goto out;
    }
    const char *mode = (const char *)sqlite3_column_text(s, 0);
    if (!in_memory && (mode == NULL || strcmp(mode, "wal") != 0)) {
        snprintf(st->errmsg, sizeof(st->errmsg), "cannot enable WAL (journal_mode is %s)",
                 mode ? mode : "unknown");
        rc = -EIO;
        goto out;
    }
    if (sqlite3_exec(st->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", NULL, NULL,
                     NULL) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    /* A build without foreign keys accepts the pragma silently; cascades would not happen. */
    int fk = 0;
    if (query_int(st->db, "PRAGMA foreign_keys", &fk) != 0 || fk != 1) {
        rc = set_fail(st, -EIO, "this SQLite does not enforce foreign keys");
        goto out;
    }
out:
    sqlite3_finalize(s);
    return rc;
}

static int schema_too_new(struct store *st, int version)
{
    snprintf(st->errmsg, sizeof(st->errmsg),
             "database schema version %d is newer than this cutover supports (%d); "
             "run a newer cutover or restore a backup",
             version, SCHEMA_VERSION);
    return -ENOTSUP;
}

/* Brings the schema to SCHEMA_VERSION, one migration per transaction. user_version is read
 * again under the write lock because another process may have migrated in between. */
static int migrate(struct store *st)
{
    int version = 0;
    if (query_int(st->db, "PRAGMA user_version", &version) != 0)
        return sql_fail(st);
    if (version > SCHEMA_VERSION)
        return schema_too_new(st, version);

    while (version < SCHEMA_VERSION) {
        int rc = 0;
        char sql[64];

        if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return sql_fail(st);
        if (query_int(st->db, "PRAGMA user_version", &version) != 0) {
            rc = sql_fail(st);
            goto rollback;
        }
        if (version > SCHEMA_VERSION) {
            rc = schema_too_new(st, version);
            goto rollback;
        }
        if (version == SCHEMA_VERSION) {
            rc = 0;
            goto rollback;
        }
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
        if (sqlite3_exec(st->db, migrations[version], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(st->errmsg, sizeof(st->errmsg), "migration to schema version %d failed: %s",
                     version + 1, sqlite3_errmsg(st->db));
            rc = -EIO;
            goto rollback;
        }
        version++;
        continue;
    rollback:
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int prepare_all(struct store *st)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                               NULL) != SQLITE_OK)
            return sql_fail(st);
    }
    return 0;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
    struct store *st = NULL;
    int rc = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL || path == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "store: no database path");
        return -EINVAL;
    }
    *out = NULL;

    st = xcalloc(1, sizeof(*st));
    st->guard_fd = -1;
    int in_memory = (path[0] == '\0' || strcmp(path, ":memory:") == 0);
    if (!in_memory) {
        rc = create_private(st, path);
        if (rc != 0)
            goto fail;
        st->path = xstrdup(path);
        /* Opened before SQLite opens it: both then name the same file, which store_guard_check
         * compares with what the path names later. */
        st->guard_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (st->guard_fd == -1) {
            int e = errno;
            snprintf(st->errmsg, sizeof(st->errmsg), "cannot open: %s", strerror(e));
            rc = -e;
            goto fail;
        }
    }
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        /* Without a handle SQLite can only say it ran out of memory. */
        if (st->db == NULL)
            rc = set_fail(st, -ENOMEM, "out of memory");
        else
            rc = sql_fail(st);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    rc = set_pragmas(st, in_memory);
    if (rc != 0)
        goto fail;
    rc = migrate(st);
    if (rc != 0)
        goto fail;
    rc = prepare_all(st);
    if (rc != 0)
        goto fail;
    *out = st;
    return 0;

fail:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "store: %s: %s", path, st->errmsg);
    store_free(st);
    return rc;
}

void store_free(struct store *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(st->stmt[i]);
        st->stmt[i] = NULL;
    }
    /* With every statement finalized close cannot be refused; an open transaction rolls back. */
    sqlite3_close(st->db);
    st->db = NULL;
    events_drop(st);
    if (st->guard == GUARD_LOST) {
        /* SQLite does not checkpoint a file that was deleted or renamed under it, and leaves
         * its -wal at the path: the next open would replay our pages onto whatever file the
         * path names now. The held file's content is in the backup (store_guard_check). */
        char *wal = xasprintf("%s-wal", st->path), *shm = xasprintf("%s-shm", st->path);
        (void)unlink(wal);
        (void)unlink(shm);
        free(wal);
        free(shm);
    }
    /* Only after SQLite's close: closing any descriptor of the file drops every POSIX lock the
     * process holds on it, SQLite's included. */
    if (st->guard_fd >= 0)
        close(st->guard_fd);
    free(st->path);
    free(st->backup_to);
    free(st);
}

const char *store_errmsg(struct store *st)
{
    if (st == NULL)
        return "no store";
    return st->errmsg;
}

/* --- transactions -------------------------------------------------------------------------- */

/* Starts a write transaction (waits up to the busy timeout for another writer). Returns -EINVAL
 * when one is already open on st. */
int store_begin(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        return set_fail(st, -EINVAL, "a transaction is already open");
    return exec_stmt(st, ST_BEGIN);
}

/* Like store_begin, but waits at most wait_ms for another writer (0: not at all), so a caller
 * that retries on its own timer does not hold up its loop for the whole busy timeout. */
int store_begin_within(struct store *st, int wait_ms)
{
    if (!sqlite3_get_autocommit(st->db))
        return set_fail(st, -EINVAL, "a transaction is already open");
    if (sqlite3_busy_timeout(st->db, wait_ms > 0 ? wait_ms : 0) != SQLITE_OK)
        return sql_fail(st);
    int rc = exec_stmt(st, ST_BEGIN);
    /* The later statements of the transaction hold the write lock and never wait; the handle's
     * other callers get the usual timeout back. */
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    return rc;
}

/* Commits the open transaction. On failure the transaction stays open: call store_rollback. */
int store_commit(struct store *st)
{
    int rc = exec_stmt(st, ST_COMMIT);
    if (rc == 0) {
        events_announce(st);
        backup_if_due(st);
    }
    return rc;
}

/* Undoes the open transaction. Returns 0 when none is open (SQLite may have rolled it back
 * already after an I/O error), so a cleanup path can always call it. */
int store_rollback(struct store *st)
{
    events_drop(st); /* they were never stored */
    st->backup_due = 0;
    if (sqlite3_get_autocommit(st->db))
        return 0;
    return exec_stmt(st, ST_ROLLBACK);
}

/* --- services and versions ------------------------------------------------------------------ */

/* Either output may be NULL when the caller needs only the other. On failure both are NULL. */
int store_service_get(struct store *st, const char *service, char **live, char **previous)
{
    sqlite3_stmt *s = stmt_get(st, ST_SERVICE_GET);
    int rc = 0;

    if (live != NULL)
        *live = NULL;
    if (previous != NULL)
        *previous = NULL;
    if (service == NULL)
        return set_fail(st, -EINVAL, "service name missing");
    if (bind_text(s, 1, service) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    switch (sqlite3_step(s)) {
    case SQLITE_ROW:
        if (live != NULL)
            *live = column_strdup(s, 0);
        if (previous != NULL)
            *previous = column_strdup(s, 1);
        break;
    case SQLITE_DONE:
        rc = -ENOENT;
        break;
    default:
        rc = sql_fail(st);
        break;
    }
out:
    stmt_done(s);
    return rc;
}

/* live may be NULL too (a service that was recorded but has nothing live). */
int store_service_set(struct store *st, const char *service, const char *live, const char *previous)
{
    sqlite3_stmt *s = stmt_get(st, ST_SERVICE_SET);

    if (service == NULL)
        return set_fail(st, -EINVAL, "service name missing");
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, live) != SQLITE_OK ||
        bind_text(s, 3, previous) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, store_now_ms()) != SQLITE_OK) {
        int rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    int rc = step_done(st, s);
    if (rc == 0)
        change_ended(st); /* what is live moved: worth a backup as much as an ended change */
    return rc;
}

/* Runs in one savepoint: the version row is kept (with its first created_ms) and its targets
 * are replaced as a whole, in the order given. targets may be NULL when ntargets is 0. */
int store_version_put(struct store *st, const char *service, const char *version,
                      const char *const *targets, size_t ntargets)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;

    if (service == NULL || version == NULL || (targets == NULL && ntargets > 0))
        return set_fail(st, -EINVAL, "service, version or targets missing");
    for (size_t i = 0; i < ntargets; i++) {
        if (targets[i] == NULL)
            return set_fail(st, -EINVAL, "target address missing");
    }

    rc = op_begin(st);
    if (rc != 0)
        return rc;

    s = stmt_get(st, ST_VERSION_ADD);
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, store_now_ms()) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        goto out;
    }
    rc = step_done(st, s);
    if (rc != 0)
        goto out;

    s = stmt_get(st, ST_TARGETS_CLEAR);
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        goto out;
    }
    rc = step_done(st, s);
    if (rc != 0)
        goto out;

    s = stmt_get(st, ST_TARGET_ADD);
    for (size_t i = 0; i < ntargets; i++) {
        if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK ||
            bind_text(s, 3, targets[i]) != SQLITE_OK ||
            sqlite3_bind_int64(s, 4, (sqlite3_int64)i) != SQLITE_OK) {
            rc = sql_fail(st);
            stmt_done(s);
            goto out;
        }
        rc = step_done(st, s);
        if (rc != 0)
            goto out;
    }
out:
    return op_end(st, rc);
}

int store_version_targets(struct store *st, const char *service, const char *version,
                          char ***targets, size_t *n)
{
    sqlite3_stmt *s = stmt_get(st, ST_TARGETS_GET);
    char **v = NULL;
    size_t len = 0, cap = 0;
    int found = 0, rc = 0, step;

    *targets = NULL;
    *n = 0;
    if (service == NULL || version == NULL)
        return set_fail(st, -EINVAL, "service or version missing");
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        found = 1;
        if (sqlite3_column_type(s, 0) == SQLITE_NULL)
            continue;
        if (len + 1 >= cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[len++] = column_strdup(s, 0);
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(st);
        goto out;
    }
    if (!found) {
        rc = -ENOENT;
        goto out;
    }
    if (v == NULL)
        v = xmalloc(sizeof(*v));
    v[len] = NULL;
    *targets = v;
    *n = len;
    v = NULL;
out:
    stmt_done(s);
    if (v != NULL) {
        v[len] = NULL;
        store_strv_free(v);
    }
    return rc;
}

void store_strv_free(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p != NULL; p++)
        free(*p);
    free(v);
}

/* --- changes ---------------------------------------------------------------------------------- */

int store_change_state_terminal(const char *state)
{
    if (state == NULL)
        return 0;
    return strcmp(state, STORE_CHANGE_COMPLETED) == 0 || strcmp(state, STORE_CHANGE_FAILED) == 0 ||
           strcmp(state, STORE_CHANGE_ROLLED_BACK) == 0 ||
           strcmp(state, STORE_CHANGE_ABORTED) == 0 || strcmp(state, STORE_CHANGE_INTERRUPTED) == 0;
}

static int state_known(const char *state)
{
    for (size_t i = 0; i < sizeof(change_states) / sizeof(change_states[0]); i++) {
        if (strcmp(state, change_states[i]) == 0)
            return 1;
    }
    return 0;
}

/* Reads a row selected with CHANGE_COLUMNS. */
static void change_read(sqlite3_stmt *s, struct store_change *c)
{
    c->id = sqlite3_column_int64(s, 0);
    c->service = column_strdup(s, 1);
    c->kind = column_strdup(s, 2);
    c->from_version = column_strdup(s, 3);
    c->to_version = column_strdup(s, 4);
    c->plan = column_strdup(s, 5);
    c->actor = column_strdup(s, 6);
    c->reason = column_strdup(s, 7);
    c->state = column_strdup(s, 8);
    c->message = column_strdup(s, 9);
    c->detail = column_strdup(s, 10);
    c->created_ms = sqlite3_column_int64(s, 11);
    c->updated_ms = sqlite3_column_int64(s, 12);
    c->ended_ms = sqlite3_column_int64(s, 13);
}

/* service, kind, to_version and actor are required (-EINVAL). A NULL state means "running".
 * The timestamps the store wrote are copied back into c along with the id. */
int store_change_insert(struct store *st, struct store_change *c)
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_INSERT);
    const char *state = c->state ? c->state : STORE_CHANGE_RUNNING;
    int64_t now = store_now_ms();
    int64_t ended = store_change_state_terminal(state) ? now : 0;
    int rc = 0;

    if (c->service == NULL || c->kind == NULL || c->to_version == NULL || c->actor == NULL)
        return set_fail(st, -EINVAL, "change needs service, kind, to_version and actor");
    if (!state_known(state))
        return set_fail(st, -EINVAL, "unknown change state");
    if (bind_text(s, 1, c->service) != SQLITE_OK || bind_text(s, 2, c->kind) != SQLITE_OK ||
        bind_text(s, 3, c->from_version) != SQLITE_OK ||
        bind_text(s, 4, c->to_version) != SQLITE_OK || bind_text(s, 5, c->plan) != SQLITE_OK ||
        bind_text(s, 6, c->actor) != SQLITE_OK || bind_text(s, 7, c->reason) != SQLITE_OK ||
        bind_text(s, 8, state) != SQLITE_OK || bind_text(s, 9, c->message) != SQLITE_OK ||
        bind_text(s, 10, c->detail) != SQLITE_OK || sqlite3_bind_int64(s, 11, now) != SQLITE_OK ||
        sqlite3_bind_int64(s, 12, ended) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    rc = step_done(st, s);
    if (rc != 0)
        return rc;
    c->id = sqlite3_last_insert_rowid(st->db);
    c->created_ms = now;
    c->updated_ms = now;
    c->ended_ms = ended;
    if (ended != 0)
        change_ended(st);
    return 0;
}

/* state must be one of STORE_CHANGE_* (-EINVAL otherwise). Returns -ENOENT when no change has
 * that id. A change that ended keeps its first ended_ms. */
int store_change_update(struct store *st, int64_t id, const char *state, const char *message)
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_UPDATE);
    int rc = 0;

    if (state == NULL || !state_known(state))
        return set_fail(st, -EINVAL, "unknown change state");
    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || bind_text(s, 2, state) != SQLITE_OK ||
        bind_text(s, 3, message) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, store_now_ms()) != SQLITE_OK ||
        sqlite3_bind_int(s, 5, store_change_state_terminal(state)) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    rc = step_done(st, s);
    if (rc == 0 && sqlite3_changes(st->db) == 0)
        rc = set_fail(st, -ENOENT, "no such change");
    if (rc == 0 && store_change_state_terminal(state))
        change_ended(st);
    return rc;
}

/* detail_json may be NULL to clear it; it is stored as given (the engine owns its shape).
 * Also moves updated_ms. Returns -ENOENT when no change has that id. */
int store_change_set_detail(struct store *st, int64_t id, const char *detail_json)
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_DETAIL);
    int rc = 0;

    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || bind_text(s, 2, detail_json) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, store_now_ms()) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    rc = step_done(st, s);
    if (rc == 0 && sqlite3_changes(st->db) == 0)
        rc = set_fail(st, -ENOENT, "no such change");
    return rc;
}

/* On failure *out is zeroed, so store_change_done on it is always safe. */
int store_change_get(struct store *st, int64_t id, struct store_change *out)
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_GET);
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    switch (sqlite3_step(s)) {
    case SQLITE_ROW:
        change_read(s, out);
        break;
    case SQLITE_DONE:
        rc = -ENOENT;
        break;
    default:
        rc = sql_fail(st);
        break;
    }
out:
    stmt_done(s);
    return rc;
}

/* Steps s (already bound) and collects every row; resets s. */
static int change_collect(struct store *st, sqlite3_stmt *s, struct store_change **out, size_t *n)
{
    struct store_change *v = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;

    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof(*v));
        }
        memset(&v[len], 0, sizeof(v[len]));
        change_read(s, &v[len]);
        len++;
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(st);
        store_change_list_free(v, len);
        v = NULL;
        len = 0;
    }
    stmt_done(s);
    *out = v;
    *n = len;
    return rc;
}

/* An empty result is 0 with *out NULL and *n 0. */
int store_change_list(struct store *st, const char *service, size_t limit,
                      struct store_change **out, size_t *n)
{
    sqlite3_stmt *s;
    int bound;

    *out = NULL;
    *n = 0;
    if (service == NULL) {
        s = stmt_get(st, ST_CHANGE_LIST_ALL);
        bound = sqlite3_bind_int64(s, 1, clamp_limit(limit));
    } else {
        s = stmt_get(st, ST_CHANGE_LIST_SERVICE);
        bound = bind_text(s, 1, service);
        if (bound == SQLITE_OK)
            bound = sqlite3_bind_int64(s, 2, clamp_limit(limit));
    }
    if (bound != SQLITE_OK) {
        int rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    return change_collect(st, s, out, n);
}

/* An empty result is 0 with *out NULL and *n 0. */
int store_change_list_running(struct store *st, struct store_change **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return change_collect(st, stmt_get(st, ST_CHANGE_LIST_RUNNING), out, n);
}

int store_change_list_scheduled(struct store *st, struct store_change **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return change_collect(st, stmt_get(st, ST_CHANGE_LIST_SCHEDULED), out, n);
}

int store_change_start_scheduled(struct store *st, int64_t id, const char *from,
                                 const char *message)
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_START_SCHEDULED);
    int rc = 0;
    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || bind_text(s, 2, from) != SQLITE_OK ||
        bind_text(s, 3, message) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, store_now_ms()) != SQLITE_OK)
        rc = sql_fail(st);
    else if (sqlite3_step(s) != SQLITE_DONE)
        rc = sql_fail(st);
    else if (sqlite3_changes(st->db) == 0)
        rc = set_fail(st, -ENOENT, "no scheduled change with that id");
    stmt_done(s);
    return rc;
}

void store_change_done(struct store_change *c)
{
    if (c == NULL)
        return;
    free(c->service);
    free(c->kind);
    free(c->from_version);
    free(c->to_version);
    free(c->plan);
    free(c->actor);
    free(c->reason);
    free(c->state);
    free(c->message);
    free(c->detail);
    memset(c, 0, sizeof(*c));
}

void store_change_list_free(struct store_change *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_change_done(&v[i]);
    free(v);
}

/* --- events ------------------------------------------------------------------------------- */

/* type is required (-EINVAL). Returns -ENOENT when change_id names no change. The row and its
 * hash are written in one savepoint: the hash needs the id SQLite gives the row. */
int store_event_add(struct store *st, int64_t change_id, const char *type, const char *message)
{
    int64_t now = store_now_ms(), id = 0;
    char prev[STORE_HASH_HEX], hash[STORE_HASH_HEX];
    int rc = 0;

    if (type == NULL)
        return set_fail(st, -EINVAL, "event type missing");
    rc = op_begin(st);
    if (rc != 0)
        return rc;
    rc = chain_prev(st, change_id, prev);
    if (rc != 0)
        goto out;
    sqlite3_stmt *s = stmt_get(st, ST_EVENT_ADD);
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, now) != SQLITE_OK || bind_text(s, 3, type) != SQLITE_OK ||
        bind_text(s, 4, message) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        goto out;
    }
    if (sqlite3_step(s) != SQLITE_DONE) {
        rc = sql_fail(st);
        if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
            rc = set_fail(st, -ENOENT, "no such change");
    }
    stmt_done(s);
    if (rc != 0)
        goto out;
    id = sqlite3_last_insert_rowid(st->db);
    chain_event_hash(prev, id, change_id, now, type, message, hash);
    s = stmt_get(st, ST_EVENT_HASH);
    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || bind_text(s, 2, hash) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        goto out;
    }
    rc = step_done(st, s);
    if (rc != 0)
        goto out;
    s = stmt_get(st, ST_CHAIN_HEAD);
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK || bind_text(s, 2, hash) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        goto out;
    }
    rc = step_done(st, s);
out:
    rc = op_end(st, rc);
    if (rc == 0 && events_heard(st)) {
        struct store_event ev = {id, change_id, now, (char *)type, (char *)message, hash};
        if (sqlite3_get_autocommit(st->db)) {
            events_tell(st, &ev);
        } else {
            /* Inside a transaction the event exists only if it commits: a listener told now
             * could announce an event (and an id) that a rollback takes back. */
            if (st->nheld == st->capheld) {
                st->capheld = st->capheld ? st->capheld * 2 : 8;
                st->held = xrealloc(st->held, st->capheld * sizeof(*st->held));
            }
            ev.type = xstrdup(type);
            ev.message = message ? xstrdup(message) : NULL;
            ev.hash = xstrdup(hash);
            st->held[st->nheld++] = ev;
        }
    }
    return rc;
}

static void events_drop(struct store *st)
{
    store_event_list_free(st->held, st->nheld);
    st->held = NULL;
    st->nheld = st->capheld = 0;
}

static void events_announce(struct store *st)
{
    for (size_t i = 0; i < st->nheld; i++)
        events_tell(st, &st->held[i]);
    events_drop(st);
}

/* Reads the rows of the bound events statement s into a heap array. An empty result is 0 with
 * *out NULL and *n 0. */
static int event_rows(struct store *st, sqlite3_stmt *s, struct store_event **out, size_t *n)
{
    struct store_event *v = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;

    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[len].id = sqlite3_column_int64(s, 0);
        v[len].change_id = sqlite3_column_int64(s, 1);
        v[len].ts_ms = sqlite3_column_int64(s, 2);
        v[len].type = column_strdup(s, 3);
        v[len].message = column_strdup(s, 4);
        v[len].hash = column_strdup(s, 5);
        len++;
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(st);
        store_event_list_free(v, len);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

int store_event_list(struct store *st, int64_t change_id, struct store_event **out, size_t *n)
{
    sqlite3_stmt *s = stmt_get(st, ST_EVENT_LIST);
    int rc;

    *out = NULL;
    *n = 0;
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK)
        rc = sql_fail(st);
    else
        rc = event_rows(st, s, out, n);
    stmt_done(s);
    return rc;
}

int store_event_list_since(struct store *st, int64_t after_id, const char *service, size_t limit,
                           struct store_event **out, size_t *n)
{
    sqlite3_stmt *s = stmt_get(st, ST_EVENT_SINCE);
    int rc;

    *out = NULL;
    *n = 0;
    if (sqlite3_bind_int64(s, 1, after_id) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, (sqlite3_int64)limit) != SQLITE_OK ||
        bind_text(s, 3, service) != SQLITE_OK)
        rc = sql_fail(st);
    else
        rc = event_rows(st, s, out, n);
    stmt_done(s);
    return rc;
}

int store_add_listener(struct store *st, store_event_fn fn, void *ctx)
{
    for (size_t i = 0; i < STORE_MAX_LISTENERS; i++) {
        if (st->listeners[i].fn == NULL) {
            st->listeners[i].fn = fn;
            st->listeners[i].ctx = ctx;
            return 0;
        }
    }
    return set_fail(st, -ENOSPC, "too many event listeners");
}

void store_remove_listener(struct store *st, store_event_fn fn, void *ctx)
{
    for (size_t i = 0; i < STORE_MAX_LISTENERS; i++)
        if (st->listeners[i].fn == fn && st->listeners[i].ctx == ctx)
            st->listeners[i].fn = NULL;
}

static void events_tell(struct store *st, const struct store_event *ev)
{
    for (size_t i = 0; i < STORE_MAX_LISTENERS; i++)
        if (st->listeners[i].fn != NULL)
            st->listeners[i].fn(st->listeners[i].ctx, ev);
}

static int events_heard(const struct store *st)
{
    for (size_t i = 0; i < STORE_MAX_LISTENERS; i++)
        if (st->listeners[i].fn != NULL)
            return 1;
    return 0;
}

void store_event_list_free(struct store_event *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].type);
        free(v[i].message);
        free(v[i].hash);
    }
    free(v);
}

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- instances ------------------------------------------------------------------------------ */

int store_instance_put(struct store *st, const char *service, const char *version, int idx,
                       long pid, uint64_t start_ticks, int port)
{
    sqlite3_stmt *s = stmt_get(st, ST_INSTANCE_PUT);
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK ||
        sqlite3_bind_int(s, 3, idx) != SQLITE_OK || sqlite3_bind_int64(s, 4, pid) != SQLITE_OK ||
        sqlite3_bind_int64(s, 5, (sqlite3_int64)start_ticks) != SQLITE_OK ||
        sqlite3_bind_int(s, 6, port) != SQLITE_OK ||
        sqlite3_bind_int64(s, 7, store_now_ms()) != SQLITE_OK) {
        int rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    return step_done(st, s);
}

int store_instance_del(struct store *st, const char *service, const char *version, int idx)
{
    sqlite3_stmt *s;
    int b;
    if (idx < 0) {
        s = stmt_get(st, ST_INSTANCE_DEL_VERSION);
        b = bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK;
    } else {
        s = stmt_get(st, ST_INSTANCE_DEL);
        b = bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK ||
            sqlite3_bind_int(s, 3, idx) != SQLITE_OK;
    }
    if (b) {
        int rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    return step_done(st, s);
}

int store_instance_list(struct store *st, const char *service, const char *version,
                        struct store_instance **out, size_t *n)
{
    sqlite3_stmt *s = stmt_get(st, ST_INSTANCE_LIST);
    struct store_instance *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    *out = NULL;
    *n = 0;
    if (bind_text(s, 1, service) != SQLITE_OK || bind_text(s, 2, version) != SQLITE_OK) {
        rc = sql_fail(st);
        stmt_done(s);
        return rc;
    }
    for (;;) {
        int step = sqlite3_step(s);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            rc = sql_fail(st);
            free(v);
            v = NULL;
            cnt = 0;
            break;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[cnt].idx = sqlite3_column_int(s, 0);
        v[cnt].pid = (long)sqlite3_column_int64(s, 1);
        v[cnt].start_ticks = (uint64_t)sqlite3_column_int64(s, 2);
        v[cnt].port = sqlite3_column_int(s, 3);
        cnt++;
    }
    stmt_done(s);
    *out = v;
    *n = cnt;
    return rc;
}

int store_instance_versions(struct store *st, const char *service, char ***out, size_t *n)
{
    sqlite3_stmt *s = stmt_get(st, ST_INSTANCE_VERSIONS);
    char **v = xcalloc(1, sizeof(*v));
    size_t len = 0;
    int rc = 0, step;

    *out = NULL;
    *n = 0;
    if (bind_text(s, 1, service) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        v = xrealloc(v, (len + 2) * sizeof(*v));
        v[len++] = column_strdup(s, 0);
        v[len] = NULL;
    }
    if (step != SQLITE_DONE)
        rc = sql_fail(st);
out:
    stmt_done(s);
    if (rc < 0) {
        store_strv_free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

/* --- outbox ---------------------------------------------------------------------------------- */

/* The statements of this section are prepared per call: they run once per delivery attempt or
 * per read of a change, far from any hot path. */
static int outbox_prepare(struct store *st, const char *sql, sqlite3_stmt **s)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, s, NULL) != SQLITE_OK) {
        sqlite3_finalize(*s);
        *s = NULL;
        return sql_fail(st);
    }
    return 0;
}

/* Steps s (no rows expected) and finalizes it. */
static int outbox_run(struct store *st, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : sql_fail(st);
    sqlite3_finalize(s);
    return rc;
}

int store_outbox_mark_get(struct store *st, int64_t *event_id)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(st, "SELECT event_id FROM outbox_mark WHERE k = 1", &s);

    *event_id = 0;
    if (rc != 0)
        return rc;
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW)
        *event_id = sqlite3_column_int64(s, 0);
    else if (step != SQLITE_DONE)
        rc = sql_fail(st);
    sqlite3_finalize(s);
    return rc;
}

int store_outbox_mark_set(struct store *st, int64_t event_id)
{
    sqlite3_stmt *s = NULL;
    int rc =
        outbox_prepare(st,
                       "INSERT INTO outbox_mark (k, event_id) VALUES (1, ?1) "
                       "ON CONFLICT (k) DO UPDATE SET event_id = MAX(event_id, excluded.event_id)",
                       &s);
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int64(s, 1, event_id) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    return outbox_run(st, s);
}

int store_outbox_add(struct store *st, const struct store_outbox *o)
{
    sqlite3_stmt *s = NULL;
    int rc =
        outbox_prepare(st,
                       "INSERT OR IGNORE INTO outbox (event_id, change_id, hook, url, webhook_id, "
                       "type, body, created_ms, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                       "'" STORE_OUTBOX_PENDING "')",
                       &s);
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int64(s, 1, o->event_id) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, o->change_id) != SQLITE_OK ||
        sqlite3_bind_int(s, 3, o->hook) != SQLITE_OK || bind_text(s, 4, o->url) != SQLITE_OK ||
        bind_text(s, 5, o->webhook_id) != SQLITE_OK || bind_text(s, 6, o->type) != SQLITE_OK ||
        bind_text(s, 7, o->body) != SQLITE_OK ||
        sqlite3_bind_int64(s, 8, o->created_ms) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    return outbox_run(st, s);
}

int store_outbox_next(struct store *st, int hook, struct store_outbox *out)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(
        st,
        "SELECT id, event_id, change_id, hook, url, webhook_id, type, body, "
        "created_ms, attempts, last_error FROM outbox WHERE state = '" STORE_OUTBOX_PENDING
        "' AND hook = ?1 ORDER BY id LIMIT 1",
        &s);
    memset(out, 0, sizeof(*out));
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int(s, 1, hook) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        out->id = sqlite3_column_int64(s, 0);
        out->event_id = sqlite3_column_int64(s, 1);
        out->change_id = sqlite3_column_int64(s, 2);
        out->hook = sqlite3_column_int(s, 3);
        out->url = column_strdup(s, 4);
        out->webhook_id = column_strdup(s, 5);
        out->type = column_strdup(s, 6);
        out->body = column_strdup(s, 7);
        out->created_ms = sqlite3_column_int64(s, 8);
        out->attempts = sqlite3_column_int(s, 9);
        out->last_error = sqlite3_column_type(s, 10) == SQLITE_NULL ? NULL : column_strdup(s, 10);
    } else if (step == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(st);
    }
    sqlite3_finalize(s);
    return rc;
}

int store_outbox_result(struct store *st, int64_t id, const char *state, const char *error)
{
    sqlite3_stmt *s = NULL;
    int rc =
        outbox_prepare(st,
                       "UPDATE outbox SET state = ?2, attempts = attempts + 1, "
                       "last_error = COALESCE(?3, last_error), "
                       "done_ms = CASE WHEN ?2 = '" STORE_OUTBOX_PENDING "' THEN 0 ELSE ?4 END "
                       "WHERE id = ?1",
                       &s);
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || bind_text(s, 2, state) != SQLITE_OK ||
        bind_text(s, 3, error) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, store_now_ms()) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    return outbox_run(st, s);
}

int store_outbox_orphans(struct store *st, int nhooks, const char *error)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(st,
                            "UPDATE outbox SET state = '" STORE_OUTBOX_FAILED "', last_error = ?2, "
                            "done_ms = ?3 WHERE state = '" STORE_OUTBOX_PENDING "' AND hook >= ?1",
                            &s);
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int(s, 1, nhooks) != SQLITE_OK || bind_text(s, 2, error) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, store_now_ms()) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    return outbox_run(st, s);
}

int store_outbox_counts(struct store *st, int64_t change_id, struct store_outbox_counts *out)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(
        st,
        "SELECT SUM(state = '" STORE_OUTBOX_PENDING "'), SUM(state = '" STORE_OUTBOX_DELIVERED
        "'), SUM(state = '" STORE_OUTBOX_FAILED "'), "
        "(SELECT last_error FROM outbox WHERE change_id = ?1 AND last_error IS NOT NULL "
        " ORDER BY id DESC LIMIT 1) FROM outbox WHERE change_id = ?1",
        &s);
    memset(out, 0, sizeof(*out));
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_fail(st);
    }
    if (sqlite3_step(s) == SQLITE_ROW) {
        out->pending = sqlite3_column_int64(s, 0);
        out->delivered = sqlite3_column_int64(s, 1);
        out->failed = sqlite3_column_int64(s, 2);
        if (sqlite3_column_type(s, 3) != SQLITE_NULL)
            out->last_error = column_strdup(s, 3);
    } else {
        rc = sql_fail(st);
    }
    sqlite3_finalize(s);
    return rc;
}

int store_outbox_pending_total(struct store *st, int64_t *n)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(
        st, "SELECT COUNT(*) FROM outbox WHERE state = '" STORE_OUTBOX_PENDING "'", &s);
    *n = 0;
    if (rc != 0)
        return rc;
    if (sqlite3_step(s) == SQLITE_ROW)
        *n = sqlite3_column_int64(s, 0);
    else
        rc = sql_fail(st);
    sqlite3_finalize(s);
    return rc;
}

void store_outbox_done(struct store_outbox *o)
{
    if (o == NULL)
        return;
    free(o->url);
    free(o->webhook_id);
    free(o->type);
    free(o->body);
    free(o->last_error);
    memset(o, 0, sizeof(*o));
}

/* --- guard, backup, recovery ---------------------------------------------------------------- */

/* Compares the file the path names now with the one opened at store_open. */
int store_guard_check(struct store *st)
{
    struct stat held, now;
    if (st->guard_fd < 0 || st->guard != GUARD_OK)
        return st->guard != GUARD_OK;
    if (fstat(st->guard_fd, &held) == -1)
        return 0; /* cannot happen on an open descriptor; nothing to compare with */
    if (stat(st->path, &now) == -1) {
        if (errno != ENOENT && errno != ENOTDIR)
            return 0; /* EACCES and the like say nothing about which file it is */
        snprintf(st->guard_why, sizeof(st->guard_why),
                 "the store %s was deleted while the daemon ran", st->path);
    } else if (now.st_dev != held.st_dev || now.st_ino != held.st_ino) {
        snprintf(st->guard_why, sizeof(st->guard_why),
                 "the store %s was replaced by another file while the daemon ran", st->path);
    } else {
        return 0;
    }
    st->guard = GUARD_LOST;
    /* The held file is still the true record: copy it out at once, so that a restart restores
     * what was live rather than what the path names now. */
    if (st->backup_to != NULL) {
        st->backup_due = 1;
        backup_if_due(st);
    }
    return 1;
}

const char *store_guard_why(const struct store *st)
{
    if (st == NULL || st->guard == GUARD_OK)
        return NULL;
    return st->guard_why;
}

void store_guard_set(struct store *st, const char *why)
{
    st->guard = GUARD_SET;
    snprintf(st->guard_why, sizeof(st->guard_why), "%s", why);
}

/* Writes the database into dest.tmp with SQLite's online backup, then renames it over dest:
 * a reader of dest sees the old backup or the new one, never half of one. */
int store_backup(struct store *st, const char *dest, char *err, size_t errlen)
{
    char *tmp = xasprintf("%s.tmp", dest);
    sqlite3 *out = NULL;
    int rc = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    (void)unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        rc = -errno;
        snprintf(err, errlen, "backup %s: %s", tmp, strerror(-rc));
        goto out;
    }
    close(fd);
    if (sqlite3_open_v2(tmp, &out, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "backup %s: %s", tmp, out ? sqlite3_errmsg(out) : "out of memory");
        rc = -EIO;
        goto out;
    }
    /* The copy is a new private file, renamed into place only when whole: it needs neither a
     * journal nor SQLite's syncs, only the one fsync before the rename (below). */
    if (sqlite3_exec(out, "PRAGMA synchronous = OFF; PRAGMA journal_mode = OFF", NULL, NULL,
                     NULL) != SQLITE_OK) {
        snprintf(err, errlen, "backup %s: %s", tmp, sqlite3_errmsg(out));
        rc = -EIO;
        goto out;
    }
    sqlite3_backup *b = sqlite3_backup_init(out, "main", st->db, "main");
    if (b == NULL) {
        snprintf(err, errlen, "backup %s: %s", tmp, sqlite3_errmsg(out));
        rc = -EIO;
        goto out;
    }
    /* One step copies every page under one read transaction: a consistent snapshot, and the
     * daemon's writers are not held up (WAL readers never block writers). */
    int step = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (step != SQLITE_DONE || fin != SQLITE_OK) {
        snprintf(err, errlen, "backup %s: %s", tmp,
                 sqlite3_errstr(step != SQLITE_DONE ? step : fin));
        rc = -EIO;
        goto out;
    }
    /* The copy says WAL like its source; a rollback journal keeps it one self-contained file
     * that a read-only check leaves without -wal and -shm beside it. */
    if (sqlite3_exec(out, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "backup %s: %s", tmp, sqlite3_errmsg(out));
        rc = -EIO;
        goto out;
    }
    if (sqlite3_close(out) != SQLITE_OK) {
        snprintf(err, errlen, "backup %s: %s", tmp, sqlite3_errmsg(out));
        rc = -EIO;
        goto out;
    }
    out = NULL;
    fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || fsync(fd) == -1) {
        rc = -errno;
        snprintf(err, errlen, "backup %s: fsync: %s", tmp, strerror(-rc));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    close(fd);
    if (rename(tmp, dest) == -1) {
        rc = -errno;
        snprintf(err, errlen, "backup %s: rename: %s", dest, strerror(-rc));
    }
out:
    if (out != NULL)
        sqlite3_close(out);
    if (rc != 0)
        (void)unlink(tmp);
    free(tmp);
    return rc;
}

void store_backup_after_change(struct store *st, const char *dest)
{
    free(st->backup_to);
    st->backup_to = dest ? xstrdup(dest) : NULL;
    st->backup_err[0] = '\0';
}

void store_backup_flush(struct store *st)
{
    if (st == NULL || st->backup_to == NULL || !sqlite3_get_autocommit(st->db))
        return;
    st->backup_due = 1;
    backup_if_due(st);
}

const char *store_backup_error(const struct store *st)
{
    return st->backup_err[0] ? st->backup_err : NULL;
}

static void change_ended(struct store *st)
{
    if (st->backup_to == NULL)
        return;
    st->backup_due = 1;
    if (sqlite3_get_autocommit(st->db))
        backup_if_due(st);
}

/* A store that failed for integrity reasons or was never the real one (GUARD_SET) must not
 * overwrite a good backup; a lost path leaves the held file trustworthy. */
static void backup_if_due(struct store *st)
{
    if (!st->backup_due || st->backup_to == NULL)
        return;
    st->backup_due = 0;
    if (st->guard == GUARD_INTEGRITY || st->guard == GUARD_SET)
        return;
    char err[sizeof(st->backup_err)];
    if (store_backup(st, st->backup_to, err, sizeof(err)) == 0)
        st->backup_err[0] = '\0';
    else
        snprintf(st->backup_err, sizeof(st->backup_err), "%s", err);
}

/* Opens path read-only and runs PRAGMA integrity_check. A file SQLite cannot read as a
 * database (SQLITE_NOTADB, SQLITE_CORRUPT) is a problem like any the check reports. */
int store_integrity(const char *path, char *report, size_t n)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = 0, code;
    size_t len = 0;
    struct stat sb;

    report[0] = '\0';
    if (stat(path, &sb) == -1) {
        rc = -errno;
        snprintf(report, n, "%s: %s", path, strerror(errno));
        return rc;
    }
    code = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (code == SQLITE_OK)
        code = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL);
    while (code == SQLITE_OK && (code = sqlite3_step(s)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(s, 0);
        code = SQLITE_OK;
        if (row == NULL || strcmp(row, "ok") == 0)
            continue;
        rc = 1;
        int w = snprintf(report + len, n - len, "%s%s", len ? "; " : "", row);
        if (w > 0)
            len = (size_t)w >= n - len ? n - 1 : len + (size_t)w;
    }
    if (code != SQLITE_OK && code != SQLITE_DONE) {
        int prim = db ? sqlite3_extended_errcode(db) & 0xff : code;
        snprintf(report, n, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
        rc = (prim == SQLITE_NOTADB || prim == SQLITE_CORRUPT) ? 1 : -EIO;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

/* Copies src to dst.tmp, fsyncs it and renames it over dst. */
static int copy_file(const char *src, const char *dst)
{
    char *tmp = xasprintf("%s.tmp", dst);
    char buf[65536];
    int in = -1, out = -1, rc = 0;
    ssize_t r;

    in = open(src, O_RDONLY | O_CLOEXEC);
    if (in == -1) {
        rc = -errno;
        goto out;
    }
    (void)unlink(tmp);
    out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out == -1) {
        rc = -errno;
        goto out;
    }
    while ((r = read(in, buf, sizeof(buf))) != 0) {
        if (r == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w == -1) {
                if (errno == EINTR)
                    continue;
                rc = -errno;
                goto out;
            }
            off += w;
        }
    }
    if (fsync(out) == -1 || rename(tmp, dst) == -1)
        rc = -errno;
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (rc != 0)
        (void)unlink(tmp);
    free(tmp);
    return rc;
}

/* Removes path's -wal and -shm: they belong to the file that is gone, and SQLite would replay
 * a stale -wal onto the restored one. */
static void drop_sidecars(const char *path, const char *keep_wal_as)
{
    char *wal = xasprintf("%s-wal", path), *shm = xasprintf("%s-shm", path);
    if (keep_wal_as == NULL || rename(wal, keep_wal_as) == -1)
        (void)unlink(wal);
    (void)unlink(shm);
    free(wal);
    free(shm);
}

/* How far the database at path got: its newest change id (ids only grow, unlike clocks) and
 * whether it records any service. A file without cutover's tables counts as nothing. Returns
 * -1 when it cannot tell (cannot open or read it): then nothing may be concluded. */
static int progress_of(const char *path, int64_t *last_change, int *services)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = -1;
    *last_change = 0;
    *services = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_prepare_v2(db,
                           "SELECT (SELECT coalesce(max(id), 0) FROM changes), "
                           "(SELECT count(*) FROM services)",
                           -1, &s, NULL) != SQLITE_OK) {
        /* "no such table": another database; anything else: unknown. */
        if (sqlite3_extended_errcode(db) == SQLITE_ERROR)
            rc = 0;
        goto out;
    }
    if (sqlite3_step(s) == SQLITE_ROW) {
        *last_change = sqlite3_column_int64(s, 0);
        *services = sqlite3_column_int(s, 1) > 0;
        rc = 0;
    }
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

/* A sound store that knows less than its backup (an older copy put back, another database
 * written over it): using it would silently serve older versions than the last recorded. */
static int behind_backup(const char *path, const char *backup, char *problem, size_t n)
{
    struct stat sb;
    char report[256];
    int64_t mine, theirs;
    int msvc, tsvc;
    if (stat(backup, &sb) == -1 || store_integrity(backup, report, sizeof(report)) != 0)
        return 0;
    if (progress_of(path, &mine, &msvc) < 0 || progress_of(backup, &theirs, &tsvc) < 0)
        return 0;
    if (theirs > mine || (tsvc && !msvc)) {
        snprintf(problem, n,
                 "older than its backup: its newest change is %lld, the backup's %lld%s",
                 (long long)mine, (long long)theirs, msvc ? "" : ", and it records no service");
        return 1;
    }
    return 0;
}

int store_recover(const char *path, const char *backup, char *what, size_t n)
{
    struct stat sb;
    char problem[512] = "";
    int missing = 0, behind = 0, rc;

    what[0] = '\0';
    if (stat(path, &sb) == -1) {
        if (errno != ENOENT) {
            snprintf(what, n, "%s: %s", path, strerror(errno));
            return -errno;
        }
        missing = 1;
    } else if (sb.st_size == 0) {
        missing = 1; /* what create_private leaves when the first open went no further */
    } else {
        rc = store_integrity(path, problem, sizeof(problem));
        if (rc < 0) {
            snprintf(what, n, "%s: %s", path, problem);
            return rc;
        }
        if (rc == 0) {
            behind = behind_backup(path, backup, problem, sizeof(problem));
            if (!behind)
                return STORE_RECOVER_NONE;
        }
    }

    /* Missing or corrupt: the backup is used only when it passes the check itself. */
    char bproblem[512] = "";
    int have = stat(backup, &sb) == 0;
    int brc = have ? store_integrity(backup, bproblem, sizeof(bproblem)) : 0;
    if (!have || brc != 0) {
        if (missing && !have)
            return STORE_RECOVER_NONE; /* a first start */
        if (missing)
            snprintf(what, n, "the store %s is missing and its backup %s is unusable (%s)", path,
                     backup, bproblem);
        else if (!have)
            snprintf(what, n, "the store %s is corrupt (%s) and there is no backup", path, problem);
        else
            snprintf(what, n, "the store %s is corrupt (%s) and its backup %s too (%s)", path,
                     problem, backup, bproblem);
        return STORE_RECOVER_CORRUPT;
    }

    char kept[PATH_MAX + 64] = "";
    if (!missing) {
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
        snprintf(kept, sizeof(kept), "%s.%s-%s", path, behind ? "older" : "corrupt", ts);
        if (rename(path, kept) == -1) {
            rc = -errno;
            snprintf(what, n, "the store %s is %s (%s) and cannot be moved aside: %s", path,
                     behind ? "outdated" : "corrupt", problem, strerror(errno));
            return rc;
        }
        char *kept_wal = xasprintf("%s-wal", kept);
        drop_sidecars(path, kept_wal);
        free(kept_wal);
    } else {
        drop_sidecars(path, NULL);
    }
    rc = copy_file(backup, path);
    if (rc < 0) {
        snprintf(what, n, "cannot restore the store %s from %s: %s", path, backup, strerror(-rc));
        return rc;
    }
    if (missing)
        snprintf(what, n, "the store %s was missing; restored from the backup %s", path, backup);
    else if (behind)
        snprintf(what, n, "the store %s was %s; kept as %s, restored from the backup %s", path,
                 problem, kept, backup);
    else
        snprintf(what, n, "the store %s was corrupt (%s); kept as %s, restored from the backup %s",
                 path, problem, kept, backup);
    return STORE_RECOVER_RESTORED;
}

/* --- holds ----------------------------------------------------------------------------------- */

/* Prepared per call, like the outbox's: an operator's hold or maintenance is rare. */

int store_hold_get(struct store *st, const char *service, struct store_hold *out)
{
    sqlite3_stmt *s = NULL;
    memset(out, 0, sizeof(*out));
    int rc = outbox_prepare(st,
                            "SELECT hold_since_ms, hold_max_ms, hold_actor, hold_change, "
                            "maintenance_since_ms, maintenance_message, maintenance_actor "
                            "FROM holds WHERE service = ?1",
                            &s);
    if (rc < 0)
        return rc;
    if (bind_text(s, 1, service) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        out->hold_since_ms = sqlite3_column_int64(s, 0);
        out->hold_max_ms = (uint64_t)sqlite3_column_int64(s, 1);
        out->hold_actor = column_strdup(s, 2);
        out->hold_change = sqlite3_column_int64(s, 3);
        out->maintenance_since_ms = sqlite3_column_int64(s, 4);
        out->maintenance_message = column_strdup(s, 5);
        out->maintenance_actor = column_strdup(s, 6);
    } else if (step != SQLITE_DONE) {
        rc = sql_fail(st);
    }
out:
    sqlite3_finalize(s);
    return rc;
}

int store_hold_set(struct store *st, const char *service, const struct store_hold *h)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(
        st,
        "INSERT INTO holds (service, hold_since_ms, hold_max_ms, hold_actor, hold_change, "
        "maintenance_since_ms, maintenance_message, maintenance_actor, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (service) DO UPDATE SET "
        "hold_since_ms = excluded.hold_since_ms, hold_max_ms = excluded.hold_max_ms, "
        "hold_actor = excluded.hold_actor, hold_change = excluded.hold_change, "
        "maintenance_since_ms = excluded.maintenance_since_ms, "
        "maintenance_message = excluded.maintenance_message, "
        "maintenance_actor = excluded.maintenance_actor, updated_ms = excluded.updated_ms",
        &s);
    if (rc < 0)
        return rc;
    if (bind_text(s, 1, service) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, h->hold_since_ms) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, (sqlite3_int64)h->hold_max_ms) != SQLITE_OK ||
        bind_text(s, 4, h->hold_actor) != SQLITE_OK ||
        sqlite3_bind_int64(s, 5, h->hold_change) != SQLITE_OK ||
        sqlite3_bind_int64(s, 6, h->maintenance_since_ms) != SQLITE_OK ||
        bind_text(s, 7, h->maintenance_message) != SQLITE_OK ||
        bind_text(s, 8, h->maintenance_actor) != SQLITE_OK ||
        sqlite3_bind_int64(s, 9, store_now_ms()) != SQLITE_OK) {
        rc = sql_fail(st);
        sqlite3_finalize(s);
        return rc;
    }
    return outbox_run(st, s);
}

void store_hold_done(struct store_hold *h)
{
    if (h == NULL)
        return;
    free(h->hold_actor);
    free(h->maintenance_message);
    free(h->maintenance_actor);
    memset(h, 0, sizeof(*h));
}

int store_action_add(struct store *st, const char *service, const char *kind, const char *actor,
                     const char *detail)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(st,
                            "INSERT INTO actions (service, ts_ms, kind, actor, detail) "
                            "VALUES (?1, ?2, ?3, ?4, ?5)",
                            &s);
    if (rc < 0)
        return rc;
    if (bind_text(s, 1, service) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, store_now_ms()) != SQLITE_OK ||
        bind_text(s, 3, kind) != SQLITE_OK || bind_text(s, 4, actor) != SQLITE_OK ||
        bind_text(s, 5, detail) != SQLITE_OK) {
        rc = sql_fail(st);
        sqlite3_finalize(s);
        return rc;
    }
    return outbox_run(st, s);
}

int store_action_list(struct store *st, const char *service, size_t limit,
                      struct store_action **out, size_t *n)
{
    sqlite3_stmt *s = NULL;
    struct store_action *v = NULL;
    size_t cnt = 0, cap = 0;
    *out = NULL;
    *n = 0;
    int rc = outbox_prepare(st,
                            "SELECT id, service, ts_ms, kind, actor, detail FROM actions "
                            "WHERE ?1 IS NULL OR service = ?1 ORDER BY id DESC LIMIT ?2",
                            &s);
    if (rc < 0)
        return rc;
    if (bind_text(s, 1, service) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, clamp_limit(limit)) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    for (;;) {
        int step = sqlite3_step(s);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            rc = sql_fail(st);
            break;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        struct store_action *a = &v[cnt++];
        a->id = sqlite3_column_int64(s, 0);
        a->service = column_strdup(s, 1);
        a->ts_ms = sqlite3_column_int64(s, 2);
        a->kind = column_strdup(s, 3);
        a->actor = column_strdup(s, 4);
        a->detail = column_strdup(s, 5);
    }
out:
    sqlite3_finalize(s);
    if (rc < 0) {
        store_action_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

void store_action_list_free(struct store_action *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].service);
        free(v[i].kind);
        free(v[i].actor);
        free(v[i].detail);
    }
    free(v);
}

/* --- chain ----------------------------------------------------------------------------------- */

/* Each field goes into the digest as "LENGTH:BYTES" (NULL as "~"), so that no two different
 * lists of fields give the same input: a message cannot borrow the start of the next field. */
static void chain_put(EVP_MD_CTX *md, const char *s)
{
    if (s == NULL) {
        EVP_DigestUpdate(md, "~", 1);
        return;
    }
    char len[24];
    int n = snprintf(len, sizeof(len), "%zu:", strlen(s));
    EVP_DigestUpdate(md, len, (size_t)n);
    EVP_DigestUpdate(md, s, strlen(s));
}

static void chain_put_int(EVP_MD_CTX *md, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%lld", (long long)v);
    chain_put(md, num);
}

/* Starts a SHA-256 over tag (which keeps a change's hash from ever equalling an event's). */
static EVP_MD_CTX *chain_begin(const char *tag)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        abort(); /* out of memory, or a libcrypto without SHA-256: nothing sensible to record */
    chain_put(md, tag);
    return md;
}

static void chain_end(EVP_MD_CTX *md, char out[])
{
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(md, dig, &len) != 1 || len != 32)
        abort();
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", dig[i]);
}

/* The hash the first event of a change chains from, over the change's immutable fields as
 * selected by CHAIN_CHANGE_COLUMNS in row s. */
static void chain_genesis(sqlite3_stmt *s, char out[])
{
    EVP_MD_CTX *md = chain_begin("cutover-change-1");
    chain_put_int(md, sqlite3_column_int64(s, 0));
    for (int col = 1; col <= 4; col++)
        chain_put(md, (const char *)sqlite3_column_text(s, col));
    chain_put_int(md, sqlite3_column_int64(s, 5));
    chain_end(md, out);
}

static void chain_event_hash(const char *prev, int64_t id, int64_t change_id, int64_t ts_ms,
                             const char *type, const char *message, char out[])
{
    EVP_MD_CTX *md = chain_begin("cutover-event-1");
    chain_put(md, prev);
    chain_put_int(md, id);
    chain_put_int(md, change_id);
    chain_put_int(md, ts_ms);
    chain_put(md, type);
    chain_put(md, message);
    chain_end(md, out);
}

/* Reads the genesis hash of change_id into out, and into head (when not NULL) the hash of its
 * newest event as the change records it ("" when none is); -ENOENT when there is no such
 * change. */
static int chain_genesis_of(struct store *st, int64_t change_id, char out[], char head[])
{
    sqlite3_stmt *s = stmt_get(st, ST_CHANGE_GENESIS);
    int rc = 0;
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    switch (sqlite3_step(s)) {
    case SQLITE_ROW:
        chain_genesis(s, out);
        if (head != NULL) {
            const char *h = (const char *)sqlite3_column_text(s, 6);
            snprintf(head, STORE_HASH_HEX, "%s", h != NULL ? h : "");
        }
        break;
    case SQLITE_DONE:
        rc = set_fail(st, -ENOENT, "no such change");
        break;
    default:
        rc = sql_fail(st);
        break;
    }
out:
    stmt_done(s);
    return rc;
}

/* The hash the next event of change_id chains from. */
static int chain_prev(struct store *st, int64_t change_id, char prev[])
{
    sqlite3_stmt *s = stmt_get(st, ST_EVENT_PREV);
    int rc = 0, found = 0;
    if (sqlite3_bind_int64(s, 1, change_id) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    switch (sqlite3_step(s)) {
    case SQLITE_ROW: {
        const char *h = (const char *)sqlite3_column_text(s, 0);
        if (h != NULL) {
            snprintf(prev, STORE_HASH_HEX, "%s", h);
            found = 1;
        }
        break;
    }
    case SQLITE_DONE:
        break;
    default:
        rc = sql_fail(st);
        break;
    }
out:
    stmt_done(s);
    if (rc == 0 && !found)
        rc = chain_genesis_of(st, change_id, prev, NULL);
    return rc;
}

int store_chain_mark(struct store *st, int64_t *since_ms, int64_t *last_unchained)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(st, "SELECT since_ms, event_id FROM chain_mark WHERE k = 1", &s);
    *since_ms = 0;
    *last_unchained = 0;
    if (rc != 0)
        return rc;
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        *since_ms = sqlite3_column_int64(s, 0);
        *last_unchained = sqlite3_column_int64(s, 1);
    } else if (step != SQLITE_DONE) {
        rc = sql_fail(st);
    }
    sqlite3_finalize(s);
    return rc;
}

/* Marks ev as the first that does not match, with why. */
static void chain_break(struct store_chain *out, const struct store_event *ev, const char *why)
{
    out->broken = 1;
    out->bad_event = ev->id;
    out->bad_ts_ms = ev->ts_ms;
    snprintf(out->bad_type, sizeof(out->bad_type), "%s", ev->type ? ev->type : "");
    snprintf(out->why, sizeof(out->why), "%s", why);
}

int store_chain_verify(struct store *st, int64_t change_id, struct store_chain *out)
{
    struct store_event *ev = NULL;
    size_t n = 0;
    int64_t since_ms, mark;
    char prev[STORE_HASH_HEX], want[STORE_HASH_HEX], head[STORE_HASH_HEX];

    memset(out, 0, sizeof(*out));
    out->change_id = change_id;
    int rc = store_chain_mark(st, &since_ms, &mark);
    if (rc == 0)
        rc = chain_genesis_of(st, change_id, prev, head);
    if (rc == 0)
        rc = store_event_list(st, change_id, &ev, &n);
    if (rc != 0)
        return rc;
    out->events = n;
    for (size_t i = 0; i < n; i++) {
        /* Older than the chain (or written by an older cutover during the hand-over to this
         * one): nothing to check it against. Such events only ever come before the chained
         * ones of a change. */
        if (ev[i].hash == NULL && ev[i].id <= mark && out->chained == 0) {
            out->unchained++;
            continue;
        }
        if (ev[i].hash == NULL) {
            chain_break(out, &ev[i],
                        out->chained > 0
                            ? "it has no hash, but comes after chained events: it was added, or "
                              "its hash removed"
                            : "it has no hash, but was recorded after the chain began");
            break;
        }
        chain_event_hash(prev, ev[i].id, ev[i].change_id, ev[i].ts_ms, ev[i].type, ev[i].message,
                         want);
        if (strcmp(want, ev[i].hash) != 0) {
            chain_break(out, &ev[i],
                        out->chained == 0
                            ? "its fields or the change's own (service, kind, versions, actor, "
                              "creation time) were altered"
                            : "its fields or its hash were altered, or an event before it was "
                              "removed");
            break;
        }
        out->chained++;
        snprintf(prev, sizeof(prev), "%s", ev[i].hash);
    }
    /* The walk ended where the change says its chain ends, or events were cut off its end. */
    if (!out->broken && head[0] != '\0' && (out->chained == 0 || strcmp(prev, head) != 0)) {
        out->broken = 1;
        if (n > 0) {
            chain_break(out, &ev[n - 1],
                        "the change's chain goes on after this event: the events after it were "
                        "removed");
        } else {
            snprintf(out->why, sizeof(out->why),
                     "the change has a chain but no event: its events were removed");
        }
    }
    store_event_list_free(ev, n);
    return 0;
}

int store_change_ids(struct store *st, int64_t **out, size_t *n)
{
    sqlite3_stmt *s = NULL;
    int64_t *v = NULL;
    size_t len = 0, cap = 0;
    int step, rc = outbox_prepare(st, "SELECT id FROM changes ORDER BY id", &s);

    *out = NULL;
    *n = 0;
    if (rc != 0)
        return rc;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 64;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[len++] = sqlite3_column_int64(s, 0);
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(st);
        free(v);
        v = NULL;
        len = 0;
    }
    sqlite3_finalize(s);
    *out = v;
    *n = len;
    return rc;
}

/* Prepared per call: the delivery figures are asked for by a person, not on any hot path. */
int store_change_list_since(struct store *st, const char *service, int64_t since_ms, size_t limit,
                            struct store_change **out, size_t *n)
{
    sqlite3_stmt *s = NULL;
    int rc = outbox_prepare(st,
                            "SELECT " CHANGE_COLUMNS " FROM changes WHERE created_ms >= ?1 "
                            "AND (?2 IS NULL OR service = ?2) ORDER BY id LIMIT ?3",
                            &s);
    *out = NULL;
    *n = 0;
    if (rc != 0)
        return rc;
    if (sqlite3_bind_int64(s, 1, since_ms) != SQLITE_OK || bind_text(s, 2, service) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, limit == 0 ? INT64_MAX : clamp_limit(limit)) != SQLITE_OK) {
        rc = sql_fail(st);
        sqlite3_finalize(s);
        return rc;
    }
    rc = change_collect(st, s, out, n);
    sqlite3_finalize(s);
    return rc;
}

/* --- audit log ------------------------------------------------------------------------------ */

int store_audit_add(struct store *st, const struct store_audit *a, int wait_ms)
{
    static const char sql[] =
        "INSERT INTO audit (ts_ms, actor, channel, peer, method, path, status, outcome) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    sqlite3_stmt *s = NULL;
    int rc = 0;
    if (!sqlite3_get_autocommit(st->db))
        return set_fail(st, -EINVAL, "a transaction is already open");
    sqlite3_busy_timeout(st->db, wait_ms > 0 ? wait_ms : 0);
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(s, 1, store_now_ms()) != SQLITE_OK || bind_text(s, 2, a->actor) ||
        bind_text(s, 3, a->channel) || bind_text(s, 4, a->peer) || bind_text(s, 5, a->method) ||
        bind_text(s, 6, a->path) || sqlite3_bind_int(s, 7, a->status) != SQLITE_OK ||
        bind_text(s, 8, a->outcome)) {
        rc = sql_fail(st);
    } else if (sqlite3_step(s) != SQLITE_DONE) {
        rc = sqlite3_errcode(st->db) == SQLITE_BUSY ? set_fail(st, -EBUSY, "the store is locked")
                                                    : sql_fail(st);
    }
    sqlite3_finalize(s);
    int64_t id = rc == 0 ? sqlite3_last_insert_rowid(st->db) : 0;
    if (id > STORE_AUDIT_KEEP && id % 1000 == 0) {
        /* Now and then, not on every row: a flood of refused attempts cannot grow the file
         * without bound, and the common insert stays one statement. */
        char *del = sqlite3_mprintf("DELETE FROM audit WHERE id <= %lld",
                                    (long long)(id - STORE_AUDIT_KEEP));
        sqlite3_exec(st->db, del, NULL, NULL, NULL);
        sqlite3_free(del);
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    return rc;
}

static char *col_dup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? xstrdup((const char *)t) : NULL;
}

int store_audit_list(struct store *st, int64_t since_ms, size_t limit, struct store_audit **out,
                     size_t *n)
{
    static const char sql[] =
        "SELECT * FROM (SELECT id, ts_ms, actor, channel, peer, method, path, status, outcome "
        "FROM audit WHERE ts_ms > ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id";
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    int rc = 0, step;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(s, 1, since_ms) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, limit ? (sqlite3_int64)limit : DEFAULT_LIST_LIMIT) != SQLITE_OK) {
        rc = sql_fail(st);
        goto out;
    }
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        struct store_audit *a = &(*out)[(*n)++];
        a->id = sqlite3_column_int64(s, 0);
        a->ts_ms = sqlite3_column_int64(s, 1);
        a->actor = col_dup(s, 2);
        a->channel = col_dup(s, 3);
        a->peer = col_dup(s, 4);
        a->method = col_dup(s, 5);
        a->path = col_dup(s, 6);
        a->status = sqlite3_column_int(s, 7);
        a->outcome = col_dup(s, 8);
    }
    if (step != SQLITE_DONE)
        rc = sql_fail(st);
out:
    sqlite3_finalize(s);
    if (rc < 0) {
        store_audit_list_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

void store_audit_list_free(struct store_audit *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++) {
        free(v[i].actor);
        free(v[i].channel);
        free(v[i].peer);
        free(v[i].method);
        free(v[i].path);
        free(v[i].outcome);
    }
    free(v);
}
