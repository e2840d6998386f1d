/* The life cycle of one change of one service, as one explicit state machine, and the only
 * writer of a change's rows (its record, events, plan detail and end) and the only publisher of
 * a route table for it. Control loop only.
 *
 * The engine asks the machine first (change_next: a pure table, the one place that holds the
 * transitions), records what the machine said through change_record_* or change_fire, and only
 * then acts. A refused write stops the action, except for the end of a change: an end stands and
 * is acted on, its record kept in memory and written again until the store takes it (the
 * documented unsaved-retry path, change_record_end). The store is reached through an ops table
 * (struct change_store) so that the machine is unit-tested with a fake store that fails on
 * demand; change_store_sqlite() is the real one. */
#ifndef CUTOVER_ROLLOUT_CHANGE_H
#define CUTOVER_ROLLOUT_CHANGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct change;
struct store;
struct store_change;

enum change_state {
    CHANGE_IDLE,    /* no change runs */
    CHANGE_HEALTH,  /* the target version's targets are being health-checked (deploy_timeout) */
    CHANGE_STEP,    /* a step of its plan, or a batch of its replacement, is in progress */
    CHANGE_PAUSED,  /* a person paused it: step timers are frozen */
    CHANGE_HOLDING, /* cutover stopped it and waits for a person */
    CHANGE_UNSAVED, /* it ended and traffic follows the end; the store has not taken the record */
};
#define CHANGE_NSTATES 6

enum change_input {
    CHANGE_IN_DEPLOY,      /* a person asks for a deploy */
    CHANGE_IN_ROLLBACK,    /* a person asks for a rollback */
    CHANGE_IN_LIVE_FAILED, /* the live version failed after its switch (crash loop, unhealthy) */
    CHANGE_IN_HEALTHY,     /* the target version passed its health checks */
    CHANGE_IN_DEADLINE,    /* deploy_timeout passed before it did */
    CHANGE_IN_CRASHED,     /* the target version's instances crash in a loop */
    CHANGE_IN_STEP_DONE,   /* the current step ended by itself (timer, test passed, goal) */
    CHANGE_IN_GATE_FAILED, /* an analysis gate or a test failed */
    CHANGE_IN_HOLD,    /* cutover holds for a person (inconclusive with on_inconclusive: pause) */
    CHANGE_IN_PROMOTE, /* a person: the next step */
    CHANGE_IN_PROMOTE_ALL, /* a person: straight to 100 % */
    CHANGE_IN_PAUSE,
    CHANGE_IN_RESUME,
    CHANGE_IN_ABORT,
    CHANGE_IN_APPROVE,
    CHANGE_IN_STOP,  /* the daemon stops (or hands over) */
    CHANGE_IN_SAVED, /* the store took an end it had refused */
};
#define CHANGE_NINPUTS 17

/* What the engine does for a transition. */
enum change_effect {
    CHANGE_REFUSE,    /* nothing; the input is refused with rule.why */
    CHANGE_NOTHING,   /* nothing; the input does not concern this state */
    CHANGE_START,     /* record a new change and wait for the target's health */
    CHANGE_BEGIN,     /* the plan starts with its first step */
    CHANGE_SWITCH,    /* the instant switch: make the target live (ends the change) */
    CHANGE_FAIL,      /* end it as failed or aborted; users never saw the target */
    CHANGE_UNDO,      /* send users back to the stable version and end it */
    CHANGE_ADVANCE,   /* the next step (or the end of the plan after the last one) */
    CHANGE_COMMIT,    /* finish the plan at once: the target becomes live */
    CHANGE_FREEZE,    /* stop the step's timers */
    CHANGE_HOLD,      /* stop the step's timers and wait for a person */
    CHANGE_THAW,      /* restart the step's timers with the time that was left */
    CHANGE_APPROVE,   /* count an approval (may advance) */
    CHANGE_SUSPEND,   /* save the plan; the next daemon resumes it */
    CHANGE_INTERRUPT, /* end it as interrupted; traffic stays where the store says */
    CHANGE_FORGET,    /* drop the kept end */
};

enum change_step_kind { CHANGE_STEP_OTHER, CHANGE_STEP_TEST, CHANGE_STEP_APPROVAL };

/* What the table needs to know besides the state and the input. */
struct change_facts {
    int plan;             /* the change has a plan (an instant switch has none) */
    int user_traffic;     /* users have seen the target version */
    int stable_healthy;   /* the version users go back to on an undo is healthy */
    int hold_on_failure;  /* the plan's on_failure is pause */
    int last_step;        /* the current step is the plan's last */
    int resumable;        /* the change survives a restart (a plan that does not replace in
                             batches) */
    int approvals_short;  /* promote --all would skip a pending approval */
    int previous_running; /* live failure: the previous version still runs and is healthy */
    enum change_step_kind step;
};

struct change_rule {
    enum change_effect effect;
    enum change_state next; /* the state once the effect is done */
    const char *event;      /* the event change_fire records first; NULL: the effect records */
    const char *why;        /* CHANGE_REFUSE: a sentence for the user */
};

/* The transition table: what input in at state st does, given f. Pure. */
struct change_rule change_next(enum change_state st, enum change_input in,
                               const struct change_facts *f);

const char *change_state_name(enum change_state st);
const char *change_input_name(enum change_input in);
const char *change_effect_name(enum change_effect e);
/* The state named by name ("health", "running", "paused", "holding"), as a plan's detail
 * saves it; CHANGE_STEP for anything else. */
enum change_state change_state_parse(const char *name);

/* ------------------------------------------------------------------ the store, as ops ----- */

/* The writes a change needs. Each returns 0 or a negative errno; errmsg says why the last one
 * failed. The engine uses change_store_sqlite(); unit tests pass a fake. */
struct change_store {
    int (*begin)(void *ctx, int wait_ms); /* wait_ms < 0: the store's busy timeout */
    int (*commit)(void *ctx);
    void (*rollback)(void *ctx);
    int (*insert)(void *ctx, struct store_change *c); /* sets c->id */
    int (*update)(void *ctx, int64_t id, const char *state, const char *message);
    int (*detail)(void *ctx, int64_t id, const char *json);
    int (*event)(void *ctx, int64_t id, const char *type, const char *message);
    int (*live)(void *ctx, const char *service, const char *live, const char *previous);
    int (*targets)(void *ctx, const char *service, const char *version, const char *const *t,
                   size_t n);
    /* sets key of change id's detail JSON object to the JSON text value, keeping the rest */
    int (*merge)(void *ctx, int64_t id, const char *key, const char *value);
    /* a scheduled change starts: running, from the version live now (deploy --at) */
    int (*start_scheduled)(void *ctx, int64_t id, const char *from, const char *message);
    const char *(*errmsg)(void *ctx);
};
const struct change_store *change_store_sqlite(void);

/* Called back by the change; the engine registers them once. */
struct change_hooks {
    void (*publish)(void *ctx);                             /* build and publish the route table */
    void (*evaluate)(void *ctx, struct change *c);          /* the kick timer fired */
    void (*deadline)(void *ctx, struct change *c);          /* deploy_timeout passed */
    void (*ended)(void *ctx, struct change *c, int64_t id); /* change_done, after the waiter */
};

/* ------------------------------------------------------------------ one change -------------- */

struct change_unsaved;

enum change_kind { CHANGE_DEPLOY, CHANGE_ROLLBACK };

/* The change of one service (embedded in it; one at a time). */
struct change {
    const struct change_store *store;
    void *store_ctx;
    const struct change_hooks *hooks;
    void *hooks_ctx;
    const char *service; /* borrowed: the service's name */
    enum change_state state;
    int64_t id; /* 0 when idle */
    enum change_kind kind;
    int plan;    /* it has a plan */
    char *actor; /* who started it (an approval step refuses them unless allow_self) */
    int wait;    /* the requester waits for the end, not for the first step */
    void (*waiter)(void *ctx, int64_t id);
    void *waiter_ctx;
    struct change_unsaved *unsaved; /* the end the store refused, while state is UNSAVED */
    int journal_fd;                 /* the kept end's copy on disk (change_journal_open), or -1 */
    uv_timer_t deadline;
    uv_timer_t kick;
    uv_timer_t save_retry;
};

/* Initialises c for service (borrowed, outlives c) with its timers on loop. */
void change_init(struct change *c, uv_loop_t *loop, const char *service,
                 const struct change_store *store, void *store_ctx,
                 const struct change_hooks *hooks, void *hooks_ctx);
/* Gives up a kept end (one last write with the busy timeout, logged either way) and closes the
 * timers; cb(ctx) runs once per closed handle (3). */
void change_close(struct change *c, uv_close_cb cb, void *handle_data);

/* The file that keeps a copy of an end the store refused, so that a kill -9 before the store
 * takes it does not undo it (an operator's abort stays aborted): path is created and given
 * CHANGE_JOURNAL_BYTES of disk now, so that writing it later needs no new block even on a full
 * disk. 0, or a negative errno (the daemon runs without it, and says so). */
#define CHANGE_JOURNAL_BYTES 8192
int change_journal_open(struct change *c, const char *path);
/* At start, before the store is read: an end kept in the journal by the last daemon is written
 * to the store. Returns 0 when there was none or it is saved now (the journal is cleared); 1
 * when the store still refuses it: the change is then UNSAVED here, retried as usual, and
 * *live / *previous (heap, or NULL when the end did not switch) name the versions the end
 * left live, which the caller serves instead of the store's. */
int change_journal_replay(struct change *c, char **live, char **previous);

/* Asks the table about input in; on CHANGE_REFUSE returns -EBUSY with rule->why in err. When
 * the rule names an event, records it with msg first and returns -EIO (with the store's message
 * in err) when the store refuses, leaving the state as it was: the caller then does not act.
 * Otherwise sets the state to rule->next and returns 0; the caller acts on rule->effect. */
int change_fire(struct change *c, enum change_input in, const struct change_facts *f,
                const char *msg, struct change_rule *rule, char *err, size_t errlen);

/* Moves to st without an input (a resume from the store, an end's bookkeeping). */
void change_set_state(struct change *c, enum change_state st);

/* 1 while a change runs (not idle, not only an unsaved end). */
int change_running(const struct change *c);

/* Records a new running change (its target version's targets when t != NULL, the change row,
 * a `created` event) in one transaction. On success c runs it: state HEALTH, the deadline
 * started and an evaluation kicked. -EIO when the store refused (nothing changed). */
struct change_new {
    enum change_kind kind;
    const char *from, *to, *plan, *actor, *reason, *message;
    const char *const *targets;
    size_t ntargets;
    const char *detail; /* the change's first detail JSON (its audit record), or NULL */
    int wait;
    uint64_t deadline_ms;
    void (*waiter)(void *ctx, int64_t id);
    void *waiter_ctx;
    int64_t scheduled_id; /* the scheduled record this change carries out (it is started, not
                             inserted, and gets a `started` event), or 0 */
};
int change_record_create(struct change *c, const struct change_new *n);

/* Records n as a change that waits for its time (deploy --at): the row in state scheduled with
 * n's detail and a `scheduled` event, in one transaction; c's state is not touched. Sets *id.
 * -EIO when the store refused. */
int change_record_scheduled(struct change *c, const struct change_new *n, int64_t *id);

/* Takes over a change found running in the store at start (its plan resumes). */
void change_adopt(struct change *c, int64_t id, enum change_kind kind, enum change_state st,
                  int plan, const char *actor);

/* An event of the running change (nothing when idle); logged too. -EIO when refused. */
int change_record_event(struct change *c, const char *type, const char *msg);
/* An event of an ended change id (a drain's figures): written, not logged. */
int change_record_event_of(struct change *c, int64_t id, const char *type, const char *msg);
/* Sets key of change id's detail to value (borrowed), keeping the rest: what the change cost
 * users (`loss`, once its drain is over), a rolling replacement's progress without a plan. */
int change_record_merge(struct change *c, int64_t id, const char *key, json_t *value);
/* The plan's detail JSON of the running change. -EIO when refused: the caller holds. */
int change_record_detail(struct change *c, const char *json);
/* The service's live and previous versions, outside a change's end (a failed restore that
 * keeps the leaving version live). */
int change_record_live(struct change *c, const char *live, const char *previous);
/* First start: version name with targets t is the service's live version, in one
 * transaction. */
int change_record_initial(struct change *c, const char *name, const char *const *t, size_t n);
/* Marks change id interrupted with msg (and its event), outside any service's change: a change
 * found running at start that does not resume. */
int change_store_interrupt(const struct change_store *ops, void *ctx, int64_t id, const char *msg);
/* Ends change id, which is not the one c runs (a scheduled change cancelled or refused at its
 * time), as state with an event of type event, in one transaction, waiting at most wait_ms for
 * the write lock (< 0: the store's busy timeout). */
#define CHANGE_WRITE_WAIT_MS 50
int change_store_end_other(const struct change_store *ops, void *ctx, int64_t id, const char *state,
                           const char *event, const char *msg, int wait_ms);
/* A version's target list (a rolling replacement's instances as they come and go). */
int change_record_targets(struct change *c, const char *version, const char *const *t, size_t n);

/* Ends the running change in state (a terminal STORE_CHANGE_*) with msg, an event of type
 * event, the plan's final detail (NULL: as it is) and, when live != NULL, that live is the
 * service's live version with previous. One transaction. When the store refuses, the end
 * stands: it is logged, kept, written again with backoff (250 ms doubling to 5 s, each retry
 * waiting at most 50 ms for a lock), and the state is UNSAVED until it is taken (then IDLE and
 * a `saved_late` event). The caller acts on the end, then calls change_done. Returns 0 when
 * saved now, -EIO when kept. */
int change_record_end(struct change *c, const char *state, const char *event, const char *msg,
                      const char *live, const char *previous, const char *detail);

/* When an end is kept unsaved: 1 with a sentence for the user in buf. */
int change_unsaved_why(const struct change *c, char *buf, size_t n);
/* The kept end as the API shows it ({"change", "state", "error", "ended", "attempts",
 * "message"}) or JSON null; overlay sets state/message/ended of change id's JSON o from it. */
json_t *change_unsaved_json(const struct change *c);
void change_unsaved_overlay(const struct change *c, json_t *o, int64_t id);
/* The id and state of the kept end (0/NULL when none). */
int64_t change_unsaved_id(const struct change *c);
const char *change_unsaved_state(const struct change *c);

/* After an end was recorded and acted on: stops the deadline, calls the waiter, forgets the
 * change (its end is saved, or kept in UNSAVED). */
void change_done(struct change *c);
/* Calls and clears the waiter (the change reached the point its requester waits for). */
void change_notify(struct change *c);
/* (Re)starts the deploy_timeout deadline and evaluates on the next loop turn. */
void change_wait_health(struct change *c, uint64_t deadline_ms);
void change_stop_deadline(struct change *c);
/* Evaluates on the next loop turn. */
void change_kick(struct change *c);
/* Builds and publishes the route table (through the hooks). */
void change_publish(struct change *c);
/* Forgets the running change without an end (its plan was suspended for the next daemon). */
void change_forget(struct change *c);

/* ms since the epoch as "2026-11-23T07:00:00.000Z", or JSON null for 0. */
json_t *change_iso_time(int64_t ms);

#endif
