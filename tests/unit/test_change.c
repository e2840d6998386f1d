/* Unit tests of rollout/change: the change state machine and its records, with a fake store that
 * fails on demand and fake engine hooks, on a real libuv loop.
 *
 * - The transition table: every input in every state against an expected matrix written here
 *   independently, then the rows whose outcome depends on the facts (a plan or not, users on the
 *   canary, a stable version that is not healthy, the last step, approvals, resumability).
 * - Record before act: a store that refuses any one write of a transition leaves the state as
 *   it was and calls no hook; an end the store refuses stands (UNSAVED), is retried with backoff
 *   and lands with a saved_late event once the store recovers.
 * - Restart: every state a plan persists parses back to itself, and a change adopted in each of
 *   them stops (suspends or is interrupted) the way the table says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "rollout/change.h"
#include "store/store.h"

/* ---------------------------------------------------------------- fake store ---------------- */

#define MAX_ROWS 64

struct fake_store {
    int fail_at;  /* the n-th write from now fails (1-based); 0: none */
    int fail_all; /* every write fails (a held lock, a full disk) */
    int writes;   /* writes attempted */
    int in_txn;   /* between begin and commit/rollback */
    int64_t next_id;
    /* what is committed, as text rows "event 7 created", "update 7 completed" ... */
    char rows[MAX_ROWS][160];
    int nrows;
    char pending[MAX_ROWS][160];
    int npending;
};

static int fake_write(struct fake_store *f)
{
    f->writes++;
    if (f->fail_all)
        return -EBUSY;
    if (f->fail_at > 0 && --f->fail_at == 0)
        return -EIO;
    return 0;
}

static void fake_row(struct fake_store *f, const char *fmt, ...)
{
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (f->in_txn) {
        if (f->npending < MAX_ROWS)
            snprintf(f->pending[f->npending++], sizeof(f->pending[0]), "%s", buf);
    } else if (f->nrows < MAX_ROWS) {
        snprintf(f->rows[f->nrows++], sizeof(f->rows[0]), "%s", buf);
    }
}

static int fs_begin(void *ctx, int wait_ms)
{
    struct fake_store *f = ctx;
    (void)wait_ms;
    int rc = fake_write(f);
    if (rc == 0) {
        f->in_txn = 1;
        f->npending = 0;
    }
    return rc;
}

static int fs_commit(void *ctx)
{
    struct fake_store *f = ctx;
    int rc = fake_write(f);
    if (rc < 0)
        return rc;
    for (int i = 0; i < f->npending && f->nrows < MAX_ROWS; i++)
        memcpy(f->rows[f->nrows++], f->pending[i], sizeof(f->rows[0]));
    f->npending = 0;
    f->in_txn = 0;
    return 0;
}

static void fs_rollback(void *ctx)
{
    struct fake_store *f = ctx;
    f->npending = 0;
    f->in_txn = 0;
}

static int fs_insert(void *ctx, struct store_change *c)
{
    struct fake_store *f = ctx;
    int rc = fake_write(f);
    if (rc == 0) {
        c->id = ++f->next_id;
        fake_row(f, "insert %lld %s %s", (long long)c->id, c->kind, c->to_version);
    }
    return rc;
}

static int fs_update(void *ctx, int64_t id, const char *state, const char *message)
{
    struct fake_store *f = ctx;
    (void)message;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "update %lld %s", (long long)id, state);
    return rc;
}

static int fs_detail(void *ctx, int64_t id, const char *json)
{
    struct fake_store *f = ctx;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "detail %lld %s", (long long)id, json);
    return rc;
}

static int fs_event(void *ctx, int64_t id, const char *type, const char *message)
{
    struct fake_store *f = ctx;
    (void)message;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "event %lld %s", (long long)id, type);
    return rc;
}

static int fs_live(void *ctx, const char *service, const char *live, const char *previous)
{
    struct fake_store *f = ctx;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "live %s %s %s", service, live, previous ? previous : "-");
    return rc;
}

static int fs_targets(void *ctx, const char *service, const char *version, const char *const *t,
                      size_t n)
{
    struct fake_store *f = ctx;
    (void)t;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "targets %s %s %zu", service, version, n);
    return rc;
}

static int fs_merge(void *ctx, int64_t id, const char *key, const char *value)
{
    struct fake_store *f = ctx;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "merge %lld %s %s", (long long)id, key, value);
    return rc;
}

static int fs_start_scheduled(void *ctx, int64_t id, const char *from, const char *message)
{
    struct fake_store *f = ctx;
    (void)message;
    int rc = fake_write(f);
    if (rc == 0)
        fake_row(f, "start %lld from %s", (long long)id, from ? from : "-");
    return rc;
}

static const char *fs_errmsg(void *ctx)
{
    (void)ctx;
    return "fake store: refused";
}

static const struct change_store fake_ops = {
    .begin = fs_begin,
    .commit = fs_commit,
    .rollback = fs_rollback,
    .insert = fs_insert,
    .update = fs_update,
    .detail = fs_detail,
    .event = fs_event,
    .live = fs_live,
    .targets = fs_targets,
    .merge = fs_merge,
    .start_scheduled = fs_start_scheduled,
    .errmsg = fs_errmsg,
};

static int has_row(const struct fake_store *f, const char *row)
{
    for (int i = 0; i < f->nrows; i++)
        if (strcmp(f->rows[i], row) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- fake engine -------------- */

struct fake_engine {
    int published, evaluated, deadlines, waited;
    int64_t waited_id;
};

static void fe_publish(void *ctx)
{
    ((struct fake_engine *)ctx)->published++;
}

static void fe_evaluate(void *ctx, struct change *c)
{
    (void)c;
    ((struct fake_engine *)ctx)->evaluated++;
}

static void fe_deadline(void *ctx, struct change *c)
{
    (void)c;
    ((struct fake_engine *)ctx)->deadlines++;
}

static const struct change_hooks fake_hooks = {
    .publish = fe_publish,
    .evaluate = fe_evaluate,
    .deadline = fe_deadline,
};

static void fe_waiter(void *ctx, int64_t id)
{
    struct fake_engine *e = ctx;
    e->waited++;
    e->waited_id = id;
}

struct fixture {
    uv_loop_t loop;
    struct fake_store st;
    struct fake_engine eng;
    struct change c;
    int closed;
};

static void on_closed(uv_handle_t *h)
{
    struct fixture *fx = h->data;
    fx->closed++;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    uv_loop_init(&fx->loop);
    change_init(&fx->c, &fx->loop, "web", &fake_ops, &fx->st, &fake_hooks, &fx->eng);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    change_close(&fx->c, on_closed, fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->closed, 3);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static int create(struct fixture *fx, int plan)
{
    static const char *const targets[] = {"127.0.0.1:9001"};
    struct change_new n = {
        .kind = CHANGE_DEPLOY,
        .from = "v1",
        .to = "v2",
        .plan = plan ? "canary" : NULL,
        .actor = "alice",
        .reason = "test",
        .message = "deploy v2",
        .targets = targets,
        .ntargets = 1,
        .deadline_ms = 20,
        .waiter = fe_waiter,
        .waiter_ctx = &fx->eng,
    };
    return change_record_create(&fx->c, &n);
}

/* ---------------------------------------------------------------- the table ---------------- */

/* Shorthands for the matrix. */
#define RF CHANGE_REFUSE
#define NO CHANGE_NOTHING
#define ST CHANGE_START
#define BG CHANGE_BEGIN
#define SW CHANGE_SWITCH
#define FL CHANGE_FAIL
#define UN CHANGE_UNDO
#define AD CHANGE_ADVANCE
#define CM CHANGE_COMMIT
#define FZ CHANGE_FREEZE
#define HD CHANGE_HOLD
#define TH CHANGE_THAW
#define AP CHANGE_APPROVE
#define SU CHANGE_SUSPEND
#define IN CHANGE_INTERRUPT
#define FG CHANGE_FORGET

/* Effects with the usual facts: a plan, users have seen the canary, the stable version is
 * healthy, a middle step of kind "other", a resumable plan, nothing short, nothing running. One
 * row per state (idle, health, step, paused, holding, unsaved), one column per input in the
 * order of enum change_input. */
static const enum change_effect expected[CHANGE_NSTATES][CHANGE_NINPUTS] = {
    /*            dep ro  live hea dl  cra sd  gf  hld pro pall pau res abo apr stp sav */
    [CHANGE_IDLE] = {ST, ST, NO, NO, NO, NO, NO, NO, NO, RF, RF, RF, RF, RF, RF, NO, NO},
    [CHANGE_HEALTH] = {RF, RF, NO, BG, FL, FL, NO, NO, NO, RF, RF, RF, RF, FL, RF, SU, NO},
    [CHANGE_STEP] = {RF, RF, NO, NO, UN, UN, AD, UN, HD, AD, CM, FZ, RF, UN, RF, SU, NO},
    [CHANGE_PAUSED] = {RF, RF, NO, NO, UN, UN, NO, NO, NO, AD, CM, RF, TH, UN, RF, SU, NO},
    [CHANGE_HOLDING] = {RF, RF, NO, NO, UN, UN, NO, NO, NO, AD, CM, FZ, TH, UN, RF, SU, NO},
    [CHANGE_UNSAVED] = {RF, RF, NO, NO, NO, NO, NO, NO, NO, RF, RF, RF, RF, RF, RF, NO, FG},
};

static struct change_facts usual(void)
{
    struct change_facts f = {0};
    f.plan = 1;
    f.user_traffic = 1;
    f.stable_healthy = 1;
    f.resumable = 1;
    f.step = CHANGE_STEP_OTHER;
    return f;
}

static int transitions_checked;

static void test_every_input_in_every_state(void **state)
{
    (void)state;
    struct change_facts f = usual();
    for (int st = 0; st < CHANGE_NSTATES; st++) {
        for (int in = 0; in < CHANGE_NINPUTS; in++) {
            struct change_rule r = change_next((enum change_state)st, (enum change_input)in, &f);
            if (r.effect != expected[st][in])
                fail_msg("state %s, input %s: got %s, expected %s",
                         change_state_name((enum change_state)st),
                         change_input_name((enum change_input)in), change_effect_name(r.effect),
                         change_effect_name(expected[st][in]));
            /* A refusal says why, and never moves. */
            if (r.effect == CHANGE_REFUSE) {
                assert_non_null(r.why);
                assert_int_equal(r.next, st);
            }
            if (r.effect == CHANGE_NOTHING)
                assert_int_equal(r.next, st);
            transitions_checked++;
        }
    }
}

struct fact_case {
    const char *what;
    enum change_state st;
    enum change_input in;
    void (*tweak)(struct change_facts *f);
    enum change_effect effect;
    enum change_state next;
};

static void no_plan(struct change_facts *f)
{
    f->plan = 0;
}

static void stable_down(struct change_facts *f)
{
    f->stable_healthy = 0;
}

static void stable_down_no_users(struct change_facts *f)
{
    f->stable_healthy = 0;
    f->user_traffic = 0;
}

static void hold_on_failure(struct change_facts *f)
{
    f->hold_on_failure = 1;
}

static void last_step(struct change_facts *f)
{
    f->last_step = 1;
}

static void approval_step(struct change_facts *f)
{
    f->step = CHANGE_STEP_APPROVAL;
}

static void test_step(struct change_facts *f)
{
    f->step = CHANGE_STEP_TEST;
}

static void approvals_short(struct change_facts *f)
{
    f->approvals_short = 1;
}

static void not_resumable(struct change_facts *f)
{
    f->resumable = 0;
}

static void previous_runs(struct change_facts *f)
{
    f->previous_running = 1;
}

static const struct fact_case fact_cases[] = {
    {"instant switch: healthy switches", CHANGE_HEALTH, CHANGE_IN_HEALTHY, no_plan, SW,
     CHANGE_IDLE},
    {"instant switch: promote refused", CHANGE_HEALTH, CHANGE_IN_PROMOTE, no_plan, RF,
     CHANGE_HEALTH},
    {"instant switch: abort fails it", CHANGE_HEALTH, CHANGE_IN_ABORT, no_plan, FL, CHANGE_IDLE},
    {"instant switch: a stop interrupts it", CHANGE_HEALTH, CHANGE_IN_STOP, no_plan, IN,
     CHANGE_IDLE},
    {"rollback during a plan says abort", CHANGE_STEP, CHANGE_IN_ROLLBACK, NULL, RF, CHANGE_STEP},
    {"gate fails, stable down: hold", CHANGE_STEP, CHANGE_IN_GATE_FAILED, stable_down, HD,
     CHANGE_HOLDING},
    {"gate fails, stable down, no users yet: undo", CHANGE_STEP, CHANGE_IN_GATE_FAILED,
     stable_down_no_users, UN, CHANGE_IDLE},
    {"gate fails, on_failure pause: hold", CHANGE_STEP, CHANGE_IN_GATE_FAILED, hold_on_failure, HD,
     CHANGE_HOLDING},
    {"abort, stable down: hold", CHANGE_STEP, CHANGE_IN_ABORT, stable_down, HD, CHANGE_HOLDING},
    {"crash, stable down: undo anyway", CHANGE_STEP, CHANGE_IN_CRASHED, stable_down, UN,
     CHANGE_IDLE},
    {"last step done: commit", CHANGE_STEP, CHANGE_IN_STEP_DONE, last_step, CM, CHANGE_IDLE},
    {"promote the last step: commit", CHANGE_STEP, CHANGE_IN_PROMOTE, last_step, CM, CHANGE_STEP},
    {"promote an approval step: refused", CHANGE_STEP, CHANGE_IN_PROMOTE, approval_step, RF,
     CHANGE_STEP},
    {"promote a test step: refused", CHANGE_STEP, CHANGE_IN_PROMOTE, test_step, RF, CHANGE_STEP},
    {"approve an approval step", CHANGE_STEP, CHANGE_IN_APPROVE, approval_step, AP, CHANGE_STEP},
    {"approve a paused approval step: refused", CHANGE_PAUSED, CHANGE_IN_APPROVE, approval_step, RF,
     CHANGE_PAUSED},
    {"promote --all past an approval: refused", CHANGE_STEP, CHANGE_IN_PROMOTE_ALL, approvals_short,
     RF, CHANGE_STEP},
    {"a rolling plan is interrupted at stop", CHANGE_STEP, CHANGE_IN_STOP, not_resumable, IN,
     CHANGE_IDLE},
    {"live failure with a previous version: rollback", CHANGE_IDLE, CHANGE_IN_LIVE_FAILED,
     previous_runs, ST, CHANGE_HEALTH},
    {"live failure during a change: its own gates decide", CHANGE_STEP, CHANGE_IN_LIVE_FAILED,
     previous_runs, NO, CHANGE_STEP},
    {"deploy while an end is unsaved: refused", CHANGE_UNSAVED, CHANGE_IN_DEPLOY, NULL, RF,
     CHANGE_UNSAVED},
};

static void test_rows_that_depend_on_facts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fact_cases) / sizeof(fact_cases[0]); i++) {
        const struct fact_case *k = &fact_cases[i];
        struct change_facts f = usual();
        if (k->tweak)
            k->tweak(&f);
        struct change_rule r = change_next(k->st, k->in, &f);
        if (r.effect != k->effect || r.next != k->next)
            fail_msg("%s: got %s -> %s, expected %s -> %s", k->what, change_effect_name(r.effect),
                     change_state_name(r.next), change_effect_name(k->effect),
                     change_state_name(k->next));
        transitions_checked++;
    }
    struct change_facts f = usual();
    struct change_rule r = change_next(CHANGE_STEP, CHANGE_IN_ROLLBACK, &f);
    assert_non_null(strstr(r.why, "cutover abort"));
}

/* ---------------------------------------------------------------- records ------------------- */

/* A deploy's record is one transaction of five writes; whichever one the store refuses, nothing
 * is committed, the change is not started and no hook runs. */
static void test_create_refused_at_every_write(void **state)
{
    struct fixture *fx = *state;
    for (int at = 1; at <= 5; at++) {
        memset(&fx->st, 0, sizeof(fx->st));
        fx->st.fail_at = at;
        assert_int_equal(create(fx, 1), -EIO);
        assert_int_equal(fx->c.state, CHANGE_IDLE);
        assert_int_equal(fx->c.id, 0);
        assert_int_equal(fx->st.nrows, 0);
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        assert_int_equal(fx->eng.evaluated, 0);
        assert_int_equal(fx->eng.waited, 0);
        transitions_checked++;
    }
    memset(&fx->st, 0, sizeof(fx->st));
    assert_int_equal(create(fx, 1), 0);
    assert_int_equal(fx->c.state, CHANGE_HEALTH);
    assert_true(has_row(&fx->st, "insert 1 deploy v2"));
    assert_true(has_row(&fx->st, "event 1 created"));
    assert_true(has_row(&fx->st, "targets web v2 1"));
    /* The health wait: an evaluation on the next turn, the deadline after 20 ms. */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->eng.evaluated, 1);
    assert_int_equal(fx->eng.deadlines, 1);
}

/* deploy --at: the record waits in state scheduled without touching the machine; at its time
 * the same row starts (no second row), and a refused start leaves the machine idle. */
static void test_scheduled_change_is_recorded_then_started(void **state)
{
    struct fixture *fx = *state;
    struct change_new n = {.kind = CHANGE_DEPLOY,
                           .from = "v1",
                           .to = "v2",
                           .actor = "alice",
                           .message = "deploy v2 scheduled"};
    int64_t id = 0;
    fx->st.fail_at = 2;
    assert_int_equal(change_record_scheduled(&fx->c, &n, &id), -EIO);
    assert_int_equal(fx->st.nrows, 0);
    memset(&fx->st, 0, sizeof(fx->st));
    assert_int_equal(change_record_scheduled(&fx->c, &n, &id), 0);
    assert_int_equal(id, 1);
    assert_true(has_row(&fx->st, "insert 1 deploy v2"));
    assert_true(has_row(&fx->st, "event 1 scheduled"));
    assert_int_equal(fx->c.state, CHANGE_IDLE);
    assert_int_equal(fx->c.id, 0);
    /* Its time: the start is refused once (nothing taken), then taken on the same row. */
    static const char *const targets[] = {"127.0.0.1:9001"};
    struct change_new go = {.kind = CHANGE_DEPLOY,
                            .from = "v1.5",
                            .to = "v2",
                            .actor = "alice",
                            .message = "deploy v2",
                            .targets = targets,
                            .ntargets = 1,
                            .deadline_ms = 20,
                            .scheduled_id = id};
    int rows = fx->st.nrows;
    fx->st.fail_at = 3;
    fx->st.writes = 0;
    assert_int_equal(change_record_create(&fx->c, &go), -EIO);
    assert_int_equal(fx->c.state, CHANGE_IDLE);
    assert_int_equal(fx->st.nrows, rows);
    fx->st.fail_at = 0;
    assert_int_equal(change_record_create(&fx->c, &go), 0);
    assert_int_equal(fx->c.id, id);
    assert_int_equal(fx->c.state, CHANGE_HEALTH);
    assert_true(has_row(&fx->st, "start 1 from v1.5"));
    assert_true(has_row(&fx->st, "event 1 started"));
    assert_false(has_row(&fx->st, "insert 2 deploy v2"));
    transitions_checked += 2;
}

/* Every transition that records an event first: refused by the store, it is not taken. */
static void test_fire_refused_is_not_taken(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        enum change_state from;
        enum change_input in;
    } evented[] = {
        {CHANGE_HEALTH, CHANGE_IN_HEALTHY},   {CHANGE_STEP, CHANGE_IN_PAUSE},
        {CHANGE_PAUSED, CHANGE_IN_RESUME},    {CHANGE_HOLDING, CHANGE_IN_RESUME},
        {CHANGE_STEP, CHANGE_IN_PROMOTE_ALL},
    };
    assert_int_equal(create(fx, 1), 0);
    for (size_t i = 0; i < sizeof(evented) / sizeof(evented[0]); i++) {
        struct change_facts f = usual();
        struct change_rule r;
        char err[256];
        change_set_state(&fx->c, evented[i].from);
        fx->st.fail_all = 1;
        assert_int_equal(change_fire(&fx->c, evented[i].in, &f, "why", &r, err, sizeof(err)), -EIO);
        assert_int_equal(fx->c.state, evented[i].from);
        assert_non_null(strstr(err, "could not record"));
        fx->st.fail_all = 0;
        assert_int_equal(change_fire(&fx->c, evented[i].in, &f, "why", &r, err, sizeof(err)), 0);
        assert_int_equal(fx->c.state, r.next);
        assert_non_null(r.event);
        char row[64];
        snprintf(row, sizeof(row), "event 1 %s", r.event);
        assert_true(has_row(&fx->st, row));
        transitions_checked++;
    }
    /* A refusal writes nothing. */
    int before = fx->st.writes;
    struct change_facts f = usual();
    struct change_rule r;
    char err[256];
    change_set_state(&fx->c, CHANGE_PAUSED);
    assert_int_equal(change_fire(&fx->c, CHANGE_IN_PAUSE, &f, "why", &r, err, sizeof(err)), -EBUSY);
    assert_string_equal(err, "already paused");
    assert_int_equal(fx->st.writes, before);
}

/* The end of a change stands when the store refuses it: UNSAVED, no new change admitted, the
 * record retried until the store takes it, then a saved_late event and IDLE. */
static void test_end_refused_stands_and_is_retried(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(create(fx, 0), 0);
    fx->st.fail_all = 1;
    assert_int_equal(
        change_record_end(&fx->c, STORE_CHANGE_COMPLETED, "switched", "done", "v2", "v1", NULL),
        -EIO);
    change_done(&fx->c);
    assert_int_equal(fx->c.state, CHANGE_UNSAVED);
    assert_int_equal(fx->eng.waited, 1);
    assert_int_equal(fx->eng.waited_id, 1);
    assert_false(change_running(&fx->c));
    char why[600];
    assert_true(change_unsaved_why(&fx->c, why, sizeof(why)));
    assert_non_null(strstr(why, "fake store: refused"));
    struct change_facts f = usual();
    assert_int_equal(change_next(fx->c.state, CHANGE_IN_DEPLOY, &f).effect, CHANGE_REFUSE);
    /* Two retries fail (250 ms, 500 ms), then the store recovers. */
    int writes = fx->st.writes;
    while (fx->st.writes < writes + 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->c.state, CHANGE_UNSAVED);
    fx->st.fail_all = 0;
    while (fx->c.state == CHANGE_UNSAVED)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->c.state, CHANGE_IDLE);
    assert_true(has_row(&fx->st, "update 1 completed"));
    assert_true(has_row(&fx->st, "live web v2 v1"));
    assert_true(has_row(&fx->st, "event 1 switched"));
    assert_true(has_row(&fx->st, "event 1 saved_late"));
    transitions_checked++;
}

/* An end refused at each of its writes (begin, detail, update, event, commit) is kept whole: the
 * retry writes all of it. */
static void test_end_refused_at_every_write(void **state)
{
    struct fixture *fx = *state;
    for (int at = 1; at <= 5; at++) {
        memset(&fx->st, 0, sizeof(fx->st));
        fx->st.next_id = 0;
        assert_int_equal(create(fx, 1), 0);
        fx->st.fail_at = at;
        int rc = change_record_end(&fx->c, STORE_CHANGE_ROLLED_BACK, "rolled_back", "gate", NULL,
                                   NULL, "{\"state\":\"rolled_back\"}");
        change_done(&fx->c);
        assert_int_equal(rc, -EIO);
        assert_int_equal(fx->c.state, CHANGE_UNSAVED);
        assert_false(has_row(&fx->st, "update 1 rolled_back"));
        while (fx->c.state == CHANGE_UNSAVED)
            uv_run(&fx->loop, UV_RUN_ONCE);
        assert_true(has_row(&fx->st, "update 1 rolled_back"));
        assert_true(has_row(&fx->st, "detail 1 {\"state\":\"rolled_back\"}"));
        transitions_checked++;
    }
}

static void test_detail_and_events_report_refusals(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(create(fx, 1), 0);
    fx->st.fail_all = 1;
    assert_int_equal(change_record_detail(&fx->c, "{}"), -EIO);
    assert_int_equal(change_record_event(&fx->c, "step", "x"), -EIO);
    fx->st.fail_all = 0;
    assert_int_equal(change_record_detail(&fx->c, "{}"), 0);
    assert_true(has_row(&fx->st, "detail 1 {}"));
    /* Publishing goes through the engine's hook. */
    change_publish(&fx->c);
    assert_int_equal(fx->eng.published, 1);
}

/* ---------------------------------------------------------------- restart ------------------- */

static void test_restart_from_every_persisted_state(void **state)
{
    struct fixture *fx = *state;
    static const enum change_state persisted[] = {CHANGE_HEALTH, CHANGE_STEP, CHANGE_PAUSED,
                                                  CHANGE_HOLDING};
    for (size_t i = 0; i < sizeof(persisted) / sizeof(persisted[0]); i++) {
        enum change_state st = persisted[i];
        assert_int_equal(change_state_parse(change_state_name(st)), st);
        change_adopt(&fx->c, 7, CHANGE_DEPLOY, st, 1, "alice");
        assert_true(change_running(&fx->c));
        struct change_facts f = usual();
        assert_int_equal(change_next(fx->c.state, CHANGE_IN_STOP, &f).effect, CHANGE_SUSPEND);
        f.resumable = 0;
        assert_int_equal(change_next(fx->c.state, CHANGE_IN_STOP, &f).effect, CHANGE_INTERRUPT);
        /* A person's abort after the restart is admitted in every state. */
        f = usual();
        assert_int_not_equal(change_next(fx->c.state, CHANGE_IN_ABORT, &f).effect, CHANGE_REFUSE);
        change_forget(&fx->c);
        assert_int_equal(fx->c.state, CHANGE_IDLE);
        transitions_checked++;
    }
    /* An unknown name is a running step, the safe reading of an old detail. */
    assert_int_equal(change_state_parse("bogus"), CHANGE_STEP);
}

/* An end the store refused survives a kill -9 in the journal: the next start writes it first,
 * or, while the store still refuses, serves as it ended and keeps retrying. */
static void test_kept_end_survives_in_the_journal(void **state)
{
    struct fixture *fx = *state;
    char path[] = "/tmp/cutover-test-journal-XXXXXX";
    int tmp = mkstemp(path);
    assert_true(tmp >= 0);
    close(tmp);
    assert_int_equal(change_journal_open(&fx->c, path), 0);
    assert_int_equal(create(fx, 0), 0);
    fx->st.fail_all = 1;
    assert_int_equal(
        change_record_end(&fx->c, STORE_CHANGE_ABORTED, "aborted", "by alice", "v1", "v2", NULL),
        -EIO);
    change_done(&fx->c);
    /* "kill -9": a second daemon's change object on the same journal. */
    struct fixture *fx2 = calloc(1, sizeof(*fx2));
    uv_loop_init(&fx2->loop);
    change_init(&fx2->c, &fx2->loop, "web", &fake_ops, &fx2->st, &fake_hooks, &fx2->eng);
    assert_int_equal(change_journal_open(&fx2->c, path), 0);
    char *live = NULL, *prev = NULL;
    fx2->st.fail_all = 1; /* the store still refuses */
    assert_int_equal(change_journal_replay(&fx2->c, &live, &prev), 1);
    assert_int_equal(fx2->c.state, CHANGE_UNSAVED);
    assert_int_equal(change_unsaved_id(&fx2->c), 1);
    assert_string_equal(change_unsaved_state(&fx2->c), "aborted");
    assert_string_equal(live, "v1");
    assert_string_equal(prev, "v2");
    free(live);
    free(prev);
    fx2->st.fail_all = 0;
    while (fx2->c.state == CHANGE_UNSAVED)
        uv_run(&fx2->loop, UV_RUN_ONCE);
    assert_true(has_row(&fx2->st, "update 1 aborted"));
    assert_true(has_row(&fx2->st, "event 1 saved_late"));
    /* Saved: the journal is cleared, a third start finds nothing. */
    struct change c3;
    change_init(&c3, &fx2->loop, "web", &fake_ops, &fx2->st, &fake_hooks, &fx2->eng);
    assert_int_equal(change_journal_open(&c3, path), 0);
    assert_int_equal(change_journal_replay(&c3, &live, &prev), 0);
    assert_null(live);
    change_close(&c3, on_closed, fx2);
    change_close(&fx2->c, on_closed, fx2);
    uv_run(&fx2->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx2->loop), 0);
    free(fx2);
    unlink(path);
    transitions_checked++;
}

static int report(void **state)
{
    (void)state;
    printf("change machine: %d transitions checked\n", transitions_checked);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_input_in_every_state),
        cmocka_unit_test(test_rows_that_depend_on_facts),
        cmocka_unit_test_setup_teardown(test_create_refused_at_every_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduled_change_is_recorded_then_started, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fire_refused_is_not_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_refused_stands_and_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_refused_at_every_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detail_and_events_report_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_from_every_persisted_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_end_survives_in_the_journal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
