/* Durable state in SQLite (WAL): each service's live and previous version, each version's
 * targets, and every change with its timeline. The rollout engine writes each decision here
 * before acting on it, so a restart resumes from the store. Owns the sqlite3 handle; control
 * thread only (never called from the data plane). All strings returned are heap copies owned
 * by the caller. Functions return 0 or a negative errno (-EIO for an SQLite failure, with the
 * SQLite message available from store_errmsg). */
#ifndef CUTOVER_STORE_STORE_H
#define CUTOVER_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Opens (creating if needed) the database at path, sets WAL mode, synchronous=NORMAL,
 * busy_timeout, foreign keys, and migrates the schema to the current version (schema version in
 * PRAGMA user_version; migrations are forward-only and each runs in one transaction). A file of
 * a newer schema than this binary knows is refused. On failure writes a message into err. */
int store_open(const char *path, struct store **out, char *err, size_t errlen);

/* Closes the database. store_free(NULL) is a no-op. */
void store_free(struct store *st);

/* The last SQLite error message on st (static until the next call). */
const char *store_errmsg(struct store *st);

/* Groups several writes into one transaction (not nestable). */
int store_begin(struct store *st);
/* Like store_begin, but waits at most wait_ms (not the 5 s busy timeout) for another process's
 * write lock: -EIO ("database is locked") after that. */
int store_begin_within(struct store *st, int wait_ms);
int store_commit(struct store *st);
int store_rollback(struct store *st);

/* --- services and versions ------------------------------------------------------------------ */

/* Reads which version of service is live and which was live before it (either may come back
 * NULL). Returns -ENOENT when the service was never recorded. */
int store_service_get(struct store *st, const char *service, char **live, char **previous);

/* Records the live and previous version of service (NULL allowed for previous). */
int store_service_set(struct store *st, const char *service, const char *live,
                      const char *previous);

/* Records version of service with its targets ("HOST:PORT" strings), replacing any targets
 * recorded before for that version. */
int store_version_put(struct store *st, const char *service, const char *version,
                      const char *const *targets, size_t ntargets);

/* Reads the targets of version into a NULL-terminated array (*n set); free it with
 * store_strv_free. Returns -ENOENT when the version is unknown. */
int store_version_targets(struct store *st, const char *service, const char *version,
                          char ***targets, size_t *n);

/* Frees a NULL-terminated string array returned by this module. NULL is a no-op. */
void store_strv_free(char **v);

/* --- changes ---------------------------------------------------------------------------------- */

/* States a change goes through; terminal ones end it. */
#define STORE_CHANGE_RUNNING "running"
#define STORE_CHANGE_SCHEDULED "scheduled"     /* deploy --at: waits in the daemon for its time */
#define STORE_CHANGE_COMPLETED "completed"     /* terminal */
#define STORE_CHANGE_FAILED "failed"           /* terminal: never took traffic, or gave it back */
#define STORE_CHANGE_ROLLED_BACK "rolled_back" /* terminal */
#define STORE_CHANGE_ABORTED "aborted"         /* terminal */
#define STORE_CHANGE_INTERRUPTED "interrupted" /* terminal: the daemon died while it ran */

/* Returns 1 when state is one of the terminal states above. */
int store_change_state_terminal(const char *state);

struct store_change {
    int64_t id;
    char *service;
    char *kind;         /* "deploy" or "rollback" */
    char *from_version; /* may be NULL (first deploy) */
    char *to_version;
    char *plan;    /* may be NULL */
    char *actor;   /* who asked (user name) */
    char *reason;  /* may be NULL */
    char *state;   /* STORE_CHANGE_* */
    char *message; /* last outcome text, may be NULL */
    char *detail;  /* JSON text owned by the rollout engine (step, split, ...), may be NULL */
    int64_t created_ms, updated_ms, ended_ms; /* Unix ms; ended_ms 0 while not terminal */
};

struct store_event {
    int64_t id;
    int64_t change_id;
    int64_t ts_ms;
    char *type; /* e.g. "created", "health", "switched", "failed" */
    char *message;
    char *hash; /* the event's link in its change's hash chain (hex), NULL when recorded before
                   the chain began (schema 5) */
};

/* A SHA-256 in hex with its NUL. */
#define STORE_HASH_HEX 65

/* Inserts c (id, created/updated/ended are set by the store; c->id is set on return). */
int store_change_insert(struct store *st, struct store_change *c);

/* Sets state, message (NULL keeps the old one) and updated_ms; ended_ms when state is
 * terminal. */
int store_change_update(struct store *st, int64_t id, const char *state, const char *message);

/* Replaces the detail JSON of change id. */
int store_change_set_detail(struct store *st, int64_t id, const char *detail_json);

/* Reads change id into *out (free its strings with store_change_done). -ENOENT if none. */
int store_change_get(struct store *st, int64_t id, struct store_change *out);

/* Lists changes, newest first, of service (or all when NULL), at most limit (0 = 100).
 * *out is a heap array of *n changes; free with store_change_list_free. */
int store_change_list(struct store *st, const char *service, size_t limit,
                      struct store_change **out, size_t *n);

/* Lists the changes created at or after since_ms (Unix ms), oldest first, of service (or all
 * when NULL), at most limit (0: no limit): the history the delivery figures are taken from.
 * Free with store_change_list_free. */
int store_change_list_since(struct store *st, const char *service, int64_t since_ms, size_t limit,
                            struct store_change **out, size_t *n);

/* Lists the changes in state "running" (oldest first), for recovery after a restart. */
int store_change_list_running(struct store *st, struct store_change **out, size_t *n);

/* Lists the changes in state "scheduled" (oldest first): deploys that wait for their time. */
int store_change_list_scheduled(struct store *st, struct store_change **out, size_t *n);

/* A scheduled change starts: state running, from_version from (what is live now), message.
 * -ENOENT when id is not a scheduled change. */
int store_change_start_scheduled(struct store *st, int64_t id, const char *from,
                                 const char *message);

/* Frees the strings of one change (not the struct itself). NULL is a no-op. */
void store_change_done(struct store_change *c);

/* Frees an array from store_change_list*. */
void store_change_list_free(struct store_change *v, size_t n);

/* Appends an event to the timeline of change_id (ts_ms = now), with its hash: SHA-256 over the
 * hash of the change's previous event (the first chains from a hash of the change's immutable
 * fields: id, service, kind, to, actor, created_ms; not from, which a scheduled change learns
 * when it starts) and the event's own fields (id,
 * change_id, ts_ms, type, message); see docs/internals/store.md "The hash chain". */
int store_event_add(struct store *st, int64_t change_id, const char *type, const char *message);

/* Lists the events of change_id, oldest first; free with store_event_list_free. */
int store_event_list(struct store *st, int64_t change_id, struct store_event **out, size_t *n);

void store_event_list_free(struct store_event *v, size_t n);

/* Lists at most limit events with an id above after_id, of service's changes (NULL: of every
 * change), oldest first: what a client that saw event after_id missed. Free with
 * store_event_list_free. */
int store_event_list_since(struct store *st, int64_t after_id, const char *service, size_t limit,
                           struct store_event **out, size_t *n);

/* Called with each event once it is stored for good: at once, or, when store_event_add ran in
 * a transaction, at its commit (a rollback drops it). ev and its strings are only valid during
 * the call. The listener must not write to the store. */
typedef void (*store_event_fn)(void *ctx, const struct store_event *ev);

#define STORE_MAX_LISTENERS 4

/* Adds a listener of events (the admin API's streams, the webhooks); -ENOSPC past
 * STORE_MAX_LISTENERS. Remove it with the same fn and ctx. */
int store_add_listener(struct store *st, store_event_fn fn, void *ctx);
void store_remove_listener(struct store *st, store_event_fn fn, void *ctx);

/* --- the hash chain ---------------------------------------------------------------------- */

/* What store_chain_verify found in one change's events. */
struct store_chain {
    int64_t change_id;
    size_t events;    /* all of the change's events */
    size_t chained;   /* those checked against their hash */
    size_t unchained; /* recorded before the chain began: no hash, not checked */
    /* 1 when the chain does not match: bad_event is the first event that does not (0 when
     * every event of the change was removed), with its type and time, and why (a sentence). */
    int broken;
    int64_t bad_event;
    int64_t bad_ts_ms;
    char bad_type[65];
    char why[256];
};

/* Recomputes the hash chain of change_id's events and compares it with the stored hashes. An
 * event without a hash recorded after the chain began, or one whose hash differs from the one
 * its fields and its predecessor give, stops the walk (out->bad_event); so does a chain that
 * ends before the newest link the change recorded (events removed from its end: the last event
 * left is named). Returns 0 (whether
 * intact or not), -ENOENT when the change does not exist, -EIO on a store failure. */
int store_chain_verify(struct store *st, int64_t change_id, struct store_chain *out);

/* When this store began chaining events (Unix ms) and the last event recorded before that (0:
 * none). */
int store_chain_mark(struct store *st, int64_t *since_ms, int64_t *last_unchained);

/* Lists the ids of every change, oldest first, into a heap array (free()). */
int store_change_ids(struct store *st, int64_t **out, size_t *n);

/* --- managed instances ----------------------------------------------------------------------- */

struct store_instance {
    int idx; /* ${INSTANCE} */
    long pid;
    uint64_t start_ticks; /* /proc start time: tells the same process from a reused pid */
    int port;
};

/* Records (or updates) instance idx of version: its pid, start time and port. */
int store_instance_put(struct store *st, const char *service, const char *version, int idx,
                       long pid, uint64_t start_ticks, int port);

/* Forgets instance idx of version, or all of the version's instances when idx < 0. */
int store_instance_del(struct store *st, const char *service, const char *version, int idx);

/* The versions of service that have instance records (heap, NULL-terminated, free with
 * store_strv_free). */
int store_instance_versions(struct store *st, const char *service, char ***out, size_t *n);

/* Lists the recorded instances of version (ordered by idx) into a heap array (free()). */
int store_instance_list(struct store *st, const char *service, const char *version,
                        struct store_instance **out, size_t *n);

/* --- guard, backup, recovery ---------------------------------------------------------------- */

/* Compares the file store_open opened (a descriptor it holds) with the one the path names now.
 * When the path names none (deleted) or another file (replaced), the guard trips: from then
 * on store_guard_why says so, and, if automatic backups are on, the held file is backed up at
 * once. A write that fails with SQLITE_CORRUPT, SQLITE_NOTADB or SQLITE_IOERR trips it too
 * (without the backup: the file is suspect). The guard stays tripped until the store is freed.
 * Returns 1 when the guard is tripped, 0 otherwise. Cheap (two stat calls): call it every
 * second or so. A store in memory only trips by store_guard_set or a failed write. */
int store_guard_check(struct store *st);

/* A sentence saying why the store cannot be trusted with a change ("the store PATH was
 * deleted while the daemon ran"), or NULL while it can. Valid until st is freed. */
const char *store_guard_why(const struct store *st);

/* Trips the guard with the caller's reason (a store opened in memory in place of a corrupt
 * file). No automatic backup is taken after that. */
void store_guard_set(struct store *st, const char *why);

/* Writes a consistent copy of the database to dest with SQLite's online backup API (to
 * dest.tmp, mode 0600, then renamed over dest). Other handles keep writing meanwhile. Returns 0
 * or a negative errno, with a message in err. */
int store_backup(struct store *st, const char *dest, char *err, size_t errlen);

/* After every change that ends (a change updated or inserted in a terminal state) and every
 * write of a service's live version (store_service_set), at the commit of its transaction,
 * back up to dest (NULL: no more automatic backups). A failed
 * backup does not fail the write; store_backup_error says why until one succeeds. */
void store_backup_after_change(struct store *st, const char *dest);
const char *store_backup_error(const struct store *st);

/* Takes the automatic backup now (when one is set, no transaction is open, and the guard allows
 * it): for the moment the control plane stops, so that the backup has the last word of a plan
 * that a successor or the next start resumes. */
void store_backup_flush(struct store *st);

/* Opens path read-only and runs PRAGMA integrity_check. Returns 0 when it is ok, 1 when the
 * file has problems (listed in report, "; "-separated; a file that is not a database is one),
 * or a negative errno when it cannot be checked (missing, unreadable), with report saying so. */
int store_integrity(const char *path, char *report, size_t n);

#define STORE_RECOVER_NONE 0     /* path is fine, or missing with no backup: a first start */
#define STORE_RECOVER_RESTORED 1 /* path was missing, corrupt or behind: now the backup's copy */
#define STORE_RECOVER_CORRUPT 2  /* path is corrupt (or missing) and no good backup exists */

/* Run before store_open: checks path and, when it is missing (or empty), corrupt, or sound but
 * behind the backup (the backup has a newer change id, or services where path has none: an
 * older copy or another database put in its place) and backup passes the integrity check,
 * copies backup over it; the replaced file is kept beside it as PATH.corrupt-YYYYMMDDTHHMMSSZ
 * or PATH.older-YYYYMMDDTHHMMSSZ (its -wal too), a stale -wal/-shm is removed. Returns one of
 * STORE_RECOVER_* with a sentence for the log in what, or a negative errno (what says why). */
int store_recover(const char *path, const char *backup, char *what, size_t n);

/* Current wall-clock time in Unix milliseconds (the timestamps the store writes). */
int64_t store_now_ms(void);

/* --- webhook outbox ------------------------------------------------------------------------ */

/* The deliveries of events to webhooks (notify/). The notify module writes one row per event
 * and webhook, together with the mark of the last event it has written rows for (in one
 * transaction, so none is lost or written twice across a kill -9), then sends the pending rows
 * oldest first per webhook. */

#define STORE_OUTBOX_PENDING "pending"
#define STORE_OUTBOX_DELIVERED "delivered"
#define STORE_OUTBOX_FAILED "failed" /* given up: too old (notify.max_age) or unsendable */

struct store_outbox {
    int64_t id;
    int64_t event_id;
    int64_t change_id;
    int hook;         /* index in notify.webhooks when written */
    char *url;        /* the webhook's url when written */
    char *webhook_id; /* the same on every try */
    char *type;       /* the event type */
    char *body;       /* what is POSTed */
    int64_t created_ms;
    int attempts;
    char *last_error; /* may be NULL */
};

/* The id of the last event whose deliveries are written (0: none). */
int store_outbox_mark_get(struct store *st, int64_t *event_id);

/* Moves the mark forward to event_id (never back). */
int store_outbox_mark_set(struct store *st, int64_t event_id);

/* Writes a pending delivery (id, attempts, last_error of o are ignored). A second row for the
 * same event and hook is ignored: two daemons of one store during a hand-over may both write. */
int store_outbox_add(struct store *st, const struct store_outbox *o);

/* Reads the oldest pending delivery of hook into *out (free with store_outbox_done); -ENOENT
 * when there is none. */
int store_outbox_next(struct store *st, int hook, struct store_outbox *out);

/* Records one try of delivery id: its state after it (STORE_OUTBOX_*) and, when it failed,
 * why (NULL keeps the last error). */
int store_outbox_result(struct store *st, int64_t id, const char *state, const char *error);

/* Gives up (STORE_OUTBOX_FAILED, with error) every pending delivery of a webhook index at or
 * above nhooks: the config no longer has that webhook. */
int store_outbox_orphans(struct store *st, int nhooks, const char *error);

struct store_outbox_counts {
    int64_t pending, delivered, failed;
    char *last_error; /* the newest delivery's last error, or NULL; heap */
};

/* Counts the deliveries of change_id's events by state. Free out->last_error. */
int store_outbox_counts(struct store *st, int64_t change_id, struct store_outbox_counts *out);

/* Counts the deliveries of every change still pending (for /metrics). */
int store_outbox_pending_total(struct store *st, int64_t *n);

/* Frees the strings of o (not o). NULL is a no-op. */
void store_outbox_done(struct store_outbox *o);

/* --- hold and maintenance -------------------------------------------------------------------- */

/* A service's hold and maintenance as `cutover hold` and `cutover maintenance` left them, so
 * that a restart and a successor keep them (rollout/hold.c). */
struct store_hold {
    int64_t hold_since_ms; /* Unix ms the hold began; 0: not held */
    uint64_t hold_max_ms;  /* how long each request may wait */
    char *hold_actor;      /* who holds it */
    int64_t hold_change;   /* the change whose `deploy --hold` holds it; 0: an operator's hold */
    int64_t maintenance_since_ms; /* 0: not in maintenance */
    char *maintenance_message;    /* may be NULL */
    char *maintenance_actor;
};

/* Reads service's state into *out (zeroed when none was ever recorded: neither held nor in
 * maintenance). Free it with store_hold_done. */
int store_hold_get(struct store *st, const char *service, struct store_hold *out);

/* Records service's state (replacing the last). */
int store_hold_set(struct store *st, const char *service, const struct store_hold *h);

/* Frees the strings of h and zeroes it. NULL is a no-op. */
void store_hold_done(struct store_hold *h);

/* An operator's action on a service that is not a change: "hold", "release", "maintenance_on",
 * "maintenance_off", each with its actor and a sentence. */
struct store_action {
    int64_t id;
    char *service;
    int64_t ts_ms;
    char *kind;
    char *actor;
    char *detail; /* may be NULL */
};

/* Appends an action (ts_ms = now). */
int store_action_add(struct store *st, const char *service, const char *kind, const char *actor,
                     const char *detail);

/* Lists at most limit (0 = 100) actions of service (NULL: every service), newest first. Free
 * with store_action_list_free. */
int store_action_list(struct store *st, const char *service, size_t limit,
                      struct store_action **out, size_t *n);

void store_action_list_free(struct store_action *v, size_t n);

/* --- audit log: every admin API action and every refused attempt (docs/api.md "Audit") --- */

struct store_audit {
    int64_t id, ts_ms;
    char *actor;   /* who the request acted as (a person, a token's name, a unix user), or NULL */
    char *channel; /* "unix" or "tcp" */
    char *peer;    /* "uid 1000 (alice)" or "127.0.0.1:40412, token lead" */
    char *method, *path;
    int status;    /* the HTTP status answered */
    char *outcome; /* the error sentence, or what it did; may be NULL */
};

/* Appends a to the audit log, waiting at most wait_ms for another writer; keeps the newest
 * STORE_AUDIT_KEEP rows. -EBUSY when the store stayed locked. */
#define STORE_AUDIT_KEEP 100000
int store_audit_add(struct store *st, const struct store_audit *a, int wait_ms);

/* Lists entries newer than since_ms (0: all), oldest first, the newest limit of them. Free with
 * store_audit_list_free. */
int store_audit_list(struct store *st, int64_t since_ms, size_t limit, struct store_audit **out,
                     size_t *n);
void store_audit_list_free(struct store_audit *v, size_t n);

#endif
