/* Rollout plans (see rollout.h): the steps of a change after its new version passed its health
 * checks — tests, a pilot cohort, weights, pauses, approvals — with analysis gates comparing the
 * new version (canary) to the stable one on every interval. Control loop only.
 *
 * Every transition is written to the store (the change's `detail` JSON and an event) before it
 * is published to the data plane, so that a restart resumes the same step with the same split
 * and the time that was left. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/duration.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/rollout_int.h"
#include "store/store.h"

#define TEST_OUTPUT_MAX (64 * 1024)
#define TICK_MS_DEFAULT 1000

enum run_state {
    RUN_HEALTH,  /* waiting for the canary's health checks */
    RUN_STEP,    /* a step is in progress */
    RUN_PAUSED,  /* paused by a person: timers frozen */
    RUN_HOLDING, /* held by cutover (a gate with on_failure: pause, an inconclusive step, or a
                    rollback that found the stable version unhealthy); a person decides */
};

static const char *const state_names[] = {"health", "running", "paused", "holding"};

struct test_proc {
    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    struct service *s; /* NULL once the run stopped caring */
    char *buf;
    size_t len;
    int handles;
    int timed_out;
    int exited;
    int64_t status;
    int term_signal;
    int out_closed;
    size_t step;
};

struct plan_run {
    const struct config_plan *plan;
    struct service *s;
    enum run_state state;
    size_t step;
    int weight;                /* 0..100 */
    int pilot_step;            /* index of the pilot step whose cohort is active, or -1 */
    int traffic;               /* the canary is in the route table (health gate passed) */
    int user_traffic;          /* a pilot or weight step has run: users have seen the canary */
    int responded;             /* the deploy's requester got its answer */
    uint64_t step_duration_ms; /* of the current timed step; 0 = until promoted / not timed */
    uint64_t step_elapsed_ms;  /* time the step ran before the last (re)start of its timer */
    uint64_t step_resumed_at;  /* uv_now when its timer last started */
    int step_timed;
    char *hold_reason;
    json_t *detail; /* the persisted state: steps log, tests, approvals, failure */
    struct analysis_sample win_base[ROUTE_ROLES];
    struct analysis_sample step_base[ROUTE_ROLES];
    struct analysis_seq seq; /* the step's pooled windows (reset when a step starts) */
    struct analysis_verdict last;
    int have_verdict;
    uv_timer_t step_timer;
    uv_timer_t tick_timer;
    struct test_proc *test;
    int handles;
    int rolling_wait; /* rolling replacement: 1 a weight step, 2 the plan's end waits for the
                         batches to reach their goal */
    int skip_gates;   /* promote --all: remaining batches do not wait for analysis */
    int gate_held;    /* held because a batch's window stayed inconclusive */
    char *finish_how; /* the plan's end waits for the last batch: how it ended (promoted...) */
};

static void step_enter(struct service *s, size_t i);
static void step_complete(struct service *s, const char *outcome, const char *note);
static void step_close_record(struct service *s, const char *outcome, const char *note);
static void plan_rollback(struct service *s, const char *state, const char *why);

/* ---------------------------------------------------------------- helpers ------------------- */

static struct rollout *R(struct service *s)
{
    return s->r;
}

static const char *step_kind_name(enum config_step_kind k)
{
    switch (k) {
    case CONFIG_STEP_TEST:
        return "test";
    case CONFIG_STEP_PILOT:
        return "pilot";
    case CONFIG_STEP_WEIGHT:
        return "weight";
    case CONFIG_STEP_PAUSE:
        return "pause";
    case CONFIG_STEP_APPROVAL:
        return "approval";
    }
    return "?";
}

/* One line describing a step: "weight 10", "pause 30s", "pilot header X-Cohort: pilot for 1m". */
static void step_describe(const struct config_step *st, char *buf, size_t n)
{
    char d[24];
    switch (st->kind) {
    case CONFIG_STEP_TEST:
        snprintf(buf, n, "test %s (timeout %s)",
                 st->command && st->command[0] ? st->command[0] : "",
                 duration_format(st->timeout_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_PILOT:
        snprintf(buf, n, "pilot %s %s%s%s for %s",
                 st->pilot_kind == CONFIG_PILOT_HEADER   ? "header"
                 : st->pilot_kind == CONFIG_PILOT_COOKIE ? "cookie"
                                                         : "source",
                 st->pilot_name ? st->pilot_name : "",
                 st->pilot_value ? (st->pilot_kind == CONFIG_PILOT_HEADER ? ": " : "=") : "",
                 st->pilot_value ? st->pilot_value : "",
                 duration_format(st->duration_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_WEIGHT:
        snprintf(buf, n, "weight %d%%", st->weight);
        break;
    case CONFIG_STEP_PAUSE:
        if (st->duration_ms == 0)
            snprintf(buf, n, "pause until promoted");
        else
            snprintf(buf, n, "pause %s", duration_format(st->duration_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_APPROVAL:
        snprintf(buf, n, "approval by %d of %zu", st->count, st->napprovers);
        break;
    }
}

static void sample_now(struct service *s, struct analysis_sample out[ROUTE_ROLES])
{
    for (int role = 0; role < ROUTE_ROLES; role++) {
        memset(&out[role], 0, sizeof(out[role]));
        if (R(s)->sample)
            R(s)->sample(R(s)->ctx, s->id, role, &out[role]);
    }
}

static void sample_diff(struct analysis_sample *d, const struct analysis_sample *a,
                        const struct analysis_sample *b)
{
    d->requests = a->requests - b->requests;
    d->errors_5xx = a->errors_5xx - b->errors_5xx;
    d->upstream_errors = a->upstream_errors - b->upstream_errors;
    hist_diff(&d->latency, &a->latency, &b->latency);
}

static json_t *sample_json(const struct analysis_sample *x)
{
    uint64_t errs = x->errors_5xx + x->upstream_errors;
    return json_pack("{s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "requests", (json_int_t)x->requests,
                     "errors_5xx", (json_int_t)x->errors_5xx, "cutover_errors",
                     (json_int_t)x->upstream_errors, "error_rate",
                     x->requests ? (double)errs / (double)x->requests : 0.0, "p50_ms",
                     hist_quantile(&x->latency, 0.50) / 1000.0, "p90_ms",
                     hist_quantile(&x->latency, 0.90) / 1000.0, "p99_ms",
                     hist_quantile(&x->latency, 0.99) / 1000.0);
}

static uint64_t step_elapsed(const struct plan_run *run)
{
    uint64_t e = run->step_elapsed_ms;
    if (run->state == RUN_STEP && run->step_timed)
        e += uv_now(R(run->s)->loop) - run->step_resumed_at;
    return e;
}

/* Writes the detail JSON as it is to the store. */
static void run_save_raw(struct service *s)
{
    char *text = json_dumps(s->run->detail, JSON_COMPACT);
    if (store_change_set_detail(R(s)->st, s->change_id, text) < 0)
        log_error("store write failed", "service", s->cfg->name, "error", store_errmsg(R(s)->st));
    free(text);
}

/* Brings the run's state into its detail JSON (not written). */
static void run_detail_update(struct service *s)
{
    struct plan_run *run = s->run;
    json_t *d = run->detail;
    json_object_set_new(d, "plan", json_string(run->plan->name));
    json_object_set_new(d, "state", json_string(state_names[run->state]));
    json_object_set_new(d, "step", json_integer((json_int_t)run->step));
    json_object_set_new(d, "nsteps", json_integer((json_int_t)run->plan->nsteps));
    json_object_set_new(d, "weight", json_integer(run->weight));
    json_object_set_new(d, "pilot_step", json_integer(run->pilot_step));
    json_object_set_new(d, "traffic", json_boolean(run->traffic));
    json_object_set_new(d, "user_traffic", json_boolean(run->user_traffic));
    json_object_set_new(d, "step_duration_ms", json_integer((json_int_t)run->step_duration_ms));
    json_object_set_new(d, "step_elapsed_ms", json_integer((json_int_t)step_elapsed(run)));
    json_object_set_new(d, "hold_reason",
                        run->hold_reason ? json_string(run->hold_reason) : json_null());
}

/* Writes the run's state into the change's detail (store first, always). */
static void run_save(struct service *s)
{
    run_detail_update(s);
    run_save_raw(s);
}

/* The detail of a run that ends in state (terminal), as the text change_record_end writes with
 * the end (heap). */
static char *run_final_detail(struct service *s, const char *state)
{
    run_detail_update(s);
    json_object_set_new(s->run->detail, "state", json_string(state));
    return json_dumps(s->run->detail, JSON_COMPACT);
}

static void event(struct service *s, const char *type, const char *msg)
{
    store_event_add(R(s)->st, s->change_id, type, msg);
    log_info(msg, "service", s->cfg->name, "event", type);
}

static json_t *steps_log(struct plan_run *run)
{
    json_t *a = json_object_get(run->detail, "steps");
    if (a == NULL) {
        a = json_array();
        json_object_set_new(run->detail, "steps", a);
    }
    return a;
}

/* The record of step i in the steps log (created on first use). */
static json_t *step_record(struct plan_run *run, size_t i)
{
    json_t *a = steps_log(run);
    while (json_array_size(a) <= i) {
        size_t k = json_array_size(a);
        char desc[256];
        step_describe(&run->plan->steps[k], desc, sizeof(desc));
        json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:n, s:n, s:n}", "index", (int)k,
                                           "kind", step_kind_name(run->plan->steps[k].kind),
                                           "description", desc, "started", "ended", "outcome"));
    }
    return json_array_get(a, i);
}

static void set_hold(struct plan_run *run, const char *why)
{
    free(run->hold_reason);
    run->hold_reason = why ? xstrdup(why) : NULL;
}

/* cutover stops the plan and waits for a person: a running step timer is frozen with the time
 * it ran (a resume restarts it with what was left), and the hold is saved. */
static void run_hold(struct service *s, const char *why)
{
    struct plan_run *run = s->run;
    if (uv_is_active((uv_handle_t *)&run->step_timer)) {
        uv_timer_stop(&run->step_timer);
        run->step_elapsed_ms = step_elapsed(run);
    }
    run->state = RUN_HOLDING;
    set_hold(run, why);
    run_save(s);
}

/* ---------------------------------------------------------------- routing ------------------- */

void plan_route_fill(const struct service *s, struct route_service *rs)
{
    const struct plan_run *run = s->run;
    if (run == NULL || !run->traffic || s->next == NULL)
        return;
    route_backend_set(&rs->canary, s->next->name, s->next->targets, s->next->n);
    rs->canary_buckets = (unsigned)run->weight * (ROUTE_BUCKETS / 100);
    if (run->pilot_step >= 0) {
        const struct config_step *st = &run->plan->steps[run->pilot_step];
        if (st->pilot_kind == CONFIG_PILOT_SOURCE) {
            if (route_pilot_parse_cidr(&rs->pilot, st->pilot_name) < 0)
                rs->pilot.kind = ROUTE_MATCH_NONE;
        } else {
            rs->pilot.kind =
                st->pilot_kind == CONFIG_PILOT_HEADER ? ROUTE_MATCH_HEADER : ROUTE_MATCH_COOKIE;
            rs->pilot.name = xstrdup(st->pilot_name);
            if (rs->pilot.kind == ROUTE_MATCH_HEADER) /* compared with a lower-case literal */
                for (char *p = rs->pilot.name; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
            rs->pilot.value = xstrdup(st->pilot_value ? st->pilot_value : "");
        }
    }
}

/* ---------------------------------------------------------------- analysis ------------------ */

static const struct config_analysis *analysis_cfg(const struct plan_run *run)
{
    return &run->plan->analysis;
}

/* Users see the canary (pilot or weight) and the gates apply. */
static int analysing(const struct plan_run *run)
{
    return analysis_cfg(run)->enabled && run->traffic && (run->weight > 0 || run->pilot_step >= 0);
}

/* JSON cannot hold an infinity (a log likelihood ratio with max_error_rate 0). */
static double json_finite(double x)
{
    return isfinite(x) ? x : x > 0 ? DBL_MAX : -DBL_MAX;
}

/* Which test decided a step's gates, with its figures: the change record an auditor reads. */
static json_t *verdict_json(const struct analysis_verdict *v)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:f, s:I, s:I, s:f, s:f}", "test",
                     v->test, "result",
                     v->result == ANALYSIS_PASS   ? "pass"
                     : v->result == ANALYSIS_FAIL ? "fail"
                                                  : "inconclusive",
                     "gate", v->gate, "detail", v->detail, "windows", (int)v->windows, "requests",
                     (json_int_t)v->pooled_requests, "errors", (json_int_t)v->pooled_errors,
                     "error_log_lr", json_finite(v->error_llr), "slow", (json_int_t)v->pooled_slow,
                     "slow_of", (json_int_t)v->pooled_slow_n, "slow_log_lr",
                     json_finite(v->slow_llr), "bound", json_finite(v->bound));
}

static void on_failure(struct service *s, const struct analysis_verdict *v)
{
    struct plan_run *run = s->run;
    char msg[768];
    char desc[256];
    step_describe(&run->plan->steps[run->step], desc, sizeof(desc));
    snprintf(msg, sizeof(msg), "gate %s failed in step %zu (%s): %s", v->gate, run->step + 1, desc,
             v->detail);
    json_object_set_new(
        run->detail, "failure",
        json_pack("{s:s, s:s, s:i, s:s, s:f, s:f, s:f, s:f, s:I, s:I}", "gate", v->gate, "detail",
                  v->detail, "step", (int)run->step + 1, "step_description", desc,
                  "canary_error_rate", v->canary_error_rate, "stable_error_rate",
                  v->stable_error_rate, "canary_p99_ms", v->canary_p99_ms, "stable_p99_ms",
                  v->stable_p99_ms, "canary_requests", (json_int_t)v->canary_requests,
                  "stable_requests", (json_int_t)v->stable_requests));
    json_object_set_new(json_object_get(run->detail, "failure"), "test", json_string(v->test));
    json_t *rec = step_record(run, run->step);
    json_object_set_new(rec, "verdict", json_string(v->detail));
    json_object_set_new(rec, "gate", verdict_json(v));
    if (run->plan->on_failure == CONFIG_ON_PAUSE) {
        log_warn("analysis gate failed; holding for a person", "service", s->cfg->name, "gate",
                 v->gate, "detail", v->detail);
        run_hold(s, msg);
        event(s, "holding", msg);
        return;
    }
    log_warn("analysis gate failed; rolling back", "service", s->cfg->name, "gate", v->gate,
             "detail", v->detail);
    step_close_record(s, "failed", msg);
    plan_rollback(s, STORE_CHANGE_ROLLED_BACK, msg);
}

/* Judges the current window (everything since the last judged one) and pools it into the
 * step's sequential test. A window is judged once the canary has min_requests in it; until then
 * it grows, so low traffic means slower judgements, never silent passes. At step_end whatever is
 * left is pooled and run->last becomes the step's verdict. Returns 1 when a gate failed (and was
 * acted on). */
static int judge_window(struct service *s, int step_end)
{
    struct plan_run *run = s->run;
    struct analysis_sample now[ROUTE_ROLES], d[ROUTE_ROLES];
    sample_now(s, now);
    for (int i = 0; i < ROUTE_ROLES; i++)
        sample_diff(&d[i], &now[i], &run->win_base[i]);
    struct analysis_verdict v;
    analysis_seq_judge(&run->seq, analysis_cfg(run), &d[ROUTE_STABLE], &d[ROUTE_CANARY], step_end,
                       &v);
    log_debug("analysis", "service", s->cfg->name, "detail", v.detail);
    if (!v.window_done)
        return 0;
    run->last = v;
    run->have_verdict = 1;
    for (int i = 0; i < ROUTE_ROLES; i++)
        run->win_base[i] = now[i];
    if (v.result == ANALYSIS_PASS) {
        rolling_gate_passed(s); /* the next batch, if one waited for this window */
        return 0;
    }
    if (v.result == ANALYSIS_INCONCLUSIVE)
        return 0; /* over a limit without significance: the next window decides */
    on_failure(s, &v);
    return 1;
}

static void on_tick(uv_timer_t *t)
{
    struct service *s = t->data;
    struct plan_run *run = s->run;
    if (run == NULL || s->change_id == 0)
        return;
    if (run->state == RUN_STEP && analysing(run) && judge_window(s, 0))
        return;
    run_save(s); /* keeps step_elapsed_ms current: a restart resumes with the time left */
}

/* Judges what is left of the current window at the end of a step: a bad tail must not slip
 * through between two ticks. Returns 1 when a gate failed (and was acted on). */
static int judge_tail(struct service *s)
{
    return analysing(s->run) && judge_window(s, 1);
}

/* ---------------------------------------------------------------- tests --------------------- */

static void test_handle_closed(uv_handle_t *h)
{
    struct test_proc *tp = h->data;
    if (--tp->handles == 0) {
        free(tp->buf);
        free(tp);
    }
}

static void test_finish(struct test_proc *tp);

static void test_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct test_proc *tp = h->data;
    (void)hint;
    if (tp->buf == NULL)
        tp->buf = xmalloc(TEST_OUTPUT_MAX + 1);
    if (tp->len >= TEST_OUTPUT_MAX) {
        /* Keep the first 64 KiB; the rest is read and dropped so the test never blocks. */
        static char sink[4096];
        *buf = uv_buf_init(sink, sizeof(sink));
        return;
    }
    *buf = uv_buf_init(tp->buf + tp->len, (unsigned)(TEST_OUTPUT_MAX - tp->len));
}

static void test_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct test_proc *tp = st->data;
    if (n > 0 && tp->buf != NULL && buf->base >= tp->buf && buf->base < tp->buf + TEST_OUTPUT_MAX)
        tp->len += (size_t)n;
    if (n < 0) {
        tp->out_closed = 1;
        uv_read_stop(st);
        if (tp->exited)
            test_finish(tp);
    }
}

static void on_test_timeout(uv_timer_t *t);

static void test_exit(uv_process_t *p, int64_t status, int sig)
{
    struct test_proc *tp = p->data;
    tp->exited = 1;
    tp->status = status;
    tp->term_signal = sig;
    /* The test's children may hold the pipe open: give it the timer's remaining life, then
     * judge anyway. */
    if (tp->out_closed || tp->timed_out)
        test_finish(tp);
    else
        uv_timer_start(&tp->timer, on_test_timeout, 500, 0); /* exited: judges at once */
}

static void on_test_timeout(uv_timer_t *t)
{
    struct test_proc *tp = t->data;
    if (tp->exited) {
        test_finish(tp);
        return;
    }
    tp->timed_out = 1;
    /* The test runs in its own process group: end all of it. */
    kill(-tp->proc.pid, SIGKILL);
}

static void test_close(struct test_proc *tp)
{
    if (!uv_is_closing((uv_handle_t *)&tp->timer))
        uv_close((uv_handle_t *)&tp->timer, test_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&tp->out))
        uv_close((uv_handle_t *)&tp->out, test_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&tp->proc))
        uv_close((uv_handle_t *)&tp->proc, test_handle_closed);
}

static void test_finish(struct test_proc *tp)
{
    struct service *s = tp->s;
    if (s == NULL || tp->handles < 3 || uv_is_closing((uv_handle_t *)&tp->proc)) {
        if (s == NULL && tp->exited)
            test_close(tp);
        return;
    }
    struct plan_run *run = s->run;
    tp->s = NULL;
    if (run != NULL)
        run->test = NULL;
    char out[TEST_OUTPUT_MAX + 1];
    size_t n = tp->len;
    if (tp->buf != NULL)
        memcpy(out, tp->buf, n);
    out[n] = '\0';
    int ok = !tp->timed_out && tp->term_signal == 0 && tp->status == 0;
    char msg[256];
    const struct config_step *st = &run->plan->steps[tp->step];
    char d[24];
    if (tp->timed_out)
        snprintf(msg, sizeof(msg), "test step %zu timed out after %s", tp->step + 1,
                 duration_format(st->timeout_ms, d, sizeof(d)));
    else if (tp->term_signal != 0)
        snprintf(msg, sizeof(msg), "test step %zu killed by signal %d", tp->step + 1,
                 tp->term_signal);
    else
        snprintf(msg, sizeof(msg), "test step %zu exited with status %lld", tp->step + 1,
                 (long long)tp->status);
    json_t *tests = json_object_get(run->detail, "tests");
    if (tests == NULL) {
        tests = json_array();
        json_object_set_new(run->detail, "tests", tests);
    }
    json_array_append_new(tests, json_pack("{s:i, s:b, s:s, s:s}", "step", (int)tp->step + 1,
                                           "passed", ok, "result", msg, "output", out));
    test_close(tp);
    event(s, ok ? "test_passed" : "test_failed", msg);
    if (ok) {
        step_complete(s, "passed", msg);
        return;
    }
    step_close_record(s, "failed", msg);
    char why[512];
    snprintf(why, sizeof(why), "%s; see the test output in the report", msg);
    plan_rollback(s, run->user_traffic ? STORE_CHANGE_ROLLED_BACK : STORE_CHANGE_FAILED, why);
}

static void test_start(struct service *s, const struct config_step *st)
{
    struct plan_run *run = s->run;
    struct test_proc *tp = xcalloc(1, sizeof(*tp));
    tp->s = s;
    tp->step = run->step;
    char url[128], idbuf[32];
    if (s->cfg->preview_listen != NULL)
        snprintf(url, sizeof(url), "http://%s", s->cfg->preview_listen);
    else
        snprintf(url, sizeof(url), "http://%s", s->next->targets[0]->address);
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)s->change_id);
    /* The test inherits the daemon's environment plus what it needs to find the new version. */
    extern char **environ;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = xcalloc(ne + 5, sizeof(*env));
    for (size_t i = 0; i < ne; i++)
        env[i] = environ[i];
    char *e1 = xasprintf("CUTOVER_TARGET_URL=%s", url);
    char *e2 = xasprintf("CUTOVER_SERVICE=%s", s->cfg->name);
    char *e3 = xasprintf("CUTOVER_VERSION=%s", s->next->name);
    char *e4 = xasprintf("CUTOVER_CHANGE_ID=%s", idbuf);
    env[ne] = e1;
    env[ne + 1] = e2;
    env[ne + 2] = e3;
    env[ne + 3] = e4;

    uv_loop_t *loop = R(s)->loop;
    uv_pipe_init(loop, &tp->out, 0);
    uv_timer_init(loop, &tp->timer);
    tp->out.data = tp;
    tp->timer.data = tp;
    tp->proc.data = tp;
    /* One pipe for stdout and stderr, so the output keeps its order: the write end goes to the
     * test as fds 1 and 2, the read end is ours. */
    uv_file pipefd[2] = {-1, -1};
    int prc = uv_pipe(pipefd, 0, 0);
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = pipefd[1];
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = pipefd[1];
    uv_process_options_t opt = {0};
    opt.file = st->command[0];
    opt.args = st->command;
    opt.env = env;
    opt.exit_cb = test_exit;
    opt.stdio_count = 3;
    opt.stdio = stdio;
    opt.flags = UV_PROCESS_DETACHED; /* own process group, killed whole on timeout */
    run->test = tp;
    tp->handles = 2;
    int rc = prc < 0 ? prc : uv_spawn(loop, &tp->proc, &opt);
    tp->handles = 3;
    if (pipefd[1] >= 0)
        close(pipefd[1]); /* the test holds the write end now; EOF comes when it is done */
    if (pipefd[0] >= 0 && uv_pipe_open(&tp->out, pipefd[0]) < 0)
        close(pipefd[0]);
    free(e1);
    free(e2);
    free(e3);
    free(e4);
    free(env);
    char msg[320];
    if (rc < 0) {
        tp->exited = 1;
        tp->status = 127;
        snprintf(msg, sizeof(msg), "test step %zu could not start %s: %s", run->step + 1,
                 st->command[0], uv_strerror(rc));
        tp->len = 0;
        tp->buf = xstrdup(msg);
        tp->len = strlen(msg);
        test_finish(tp);
        return;
    }
    uv_read_start((uv_stream_t *)&tp->out, test_alloc, test_read);
    uv_timer_start(&tp->timer, on_test_timeout, st->timeout_ms, 0);
    snprintf(msg, sizeof(msg), "test step %zu started: %s against %s", run->step + 1,
             st->command[0], url);
    event(s, "test_started", msg);
}

/* Stops a running test without judging it (abort, stop). */
static void test_cancel(struct plan_run *run)
{
    struct test_proc *tp = run->test;
    if (tp == NULL)
        return;
    run->test = NULL;
    tp->s = NULL;
    if (!tp->exited)
        kill(-tp->proc.pid, SIGKILL);
    if (tp->exited)
        test_close(tp);
    /* else the exit callback closes it */
}

/* ---------------------------------------------------------------- steps --------------------- */

static void respond_once(struct service *s)
{
    struct plan_run *run = s->run;
    if (run->responded || s->change_wait)
        return;
    run->responded = 1;
    change_notify(s);
}

static void on_step_timer(uv_timer_t *t)
{
    struct service *s = t->data;
    struct plan_run *run = s->run;
    if (run == NULL || run->state != RUN_STEP)
        return;
    run->step_elapsed_ms = step_elapsed(run);
    if (judge_tail(s))
        return;
    /* judge_tail left the step's pooled verdict in run->last: too few requests, or a value
     * over its limit without significance, is inconclusive, not a pass. */
    if (analysing(run) && run->last.result == ANALYSIS_INCONCLUSIVE) {
        char why[480];
        snprintf(why, sizeof(why), "step %zu inconclusive: %s", run->step + 1, run->last.detail);
        json_t *inc = json_object_get(run->detail, "inconclusive");
        if (inc == NULL) {
            inc = json_array();
            json_object_set_new(run->detail, "inconclusive", inc);
        }
        json_array_append_new(inc, json_string(why));
        json_object_set_new(step_record(run, run->step), "outcome", json_string("inconclusive"));
        event(s, "inconclusive", why);
        switch (run->plan->on_inconclusive) {
        case CONFIG_ON_PROCEED:
            step_complete(s, "inconclusive", why);
            return;
        case CONFIG_ON_ROLLBACK:
            plan_rollback(s, STORE_CHANGE_ROLLED_BACK, why);
            return;
        case CONFIG_ON_PAUSE:
            run_hold(s, why);
            return;
        }
    }
    step_complete(s, "passed", NULL);
}

static void start_step_timer(struct plan_run *run)
{
    uint64_t left = run->step_duration_ms > run->step_elapsed_ms
                        ? run->step_duration_ms - run->step_elapsed_ms
                        : 0;
    run->step_resumed_at = uv_now(R(run->s)->loop);
    uv_timer_start(&run->step_timer, on_step_timer, left, 0);
}

/* Finishes the plan: the canary becomes the live version (store first, then publish). */
static void plan_finish(struct service *s, const char *how)
{
    struct plan_run *run = s->run;
    struct rollout *r = R(s);
    struct version *from = s->live, *to = s->next;
    char msg[320];
    if (s->roll != NULL && !rolling_done(s)) {
        /* Every old instance must be replaced first; plan_goal_reached comes back here once
         * the last batch is in. Users follow the instances meanwhile (their share grows). */
        run->rolling_wait = 2;
        free(run->finish_how);
        run->finish_how = xstrdup(how);
        if (run->weight < 100) {
            run->weight = 100;
            run->user_traffic = 1;
            run_save(s);
            rollout_publish(r);
        }
        rolling_goal(s, 100); /* may finish the plan before it returns */
        return;
    }
    snprintf(msg, sizeof(msg), "%s: %s is live on %s (was %s)", how, to->name, s->cfg->name,
             from ? from->name : "nothing");
    run->weight = 100;
    run->state = RUN_STEP;
    set_hold(run, NULL);
    /* The plan ends whether or not the store takes the record now: holding users at the last
     * step's split until a disk write succeeds would help nobody (change_record_end retries). */
    char *detail = run_final_detail(s, STORE_CHANGE_COMPLETED);
    change_record_end(s, STORE_CHANGE_COMPLETED, "completed", msg, to, from, detail);
    free(detail);
    version_free(s->previous);
    s->previous = from;
    s->live = to;
    s->next = NULL;
    plan_discard(s);
    rolling_stop(s);
    rollout_publish(r);
    drain_watch(s, from, s->change_id);
    if (from != NULL)
        managed_retire(from->ms, managed_retire_delay(s));
    log_info("plan completed", "service", s->cfg->name, "version", to->name);
    change_done(s);
}

/* Sends all traffic back to the stable version and ends the change in state. If the stable
 * version is not healthy, holds instead: flipping users to a broken version is worse. */
static void plan_rollback(struct service *s, const char *state, const char *why)
{
    struct plan_run *run = s->run;
    if (s->roll != NULL) {
        /* Batches undo themselves: the old version's instances come back (rolling.c). */
        test_cancel(run);
        json_object_set_new(run->detail, "rollback_reason", json_string(why));
        json_object_set_new(run->detail, "state", json_string(state));
        run_save_raw(s);
        rolling_fail(s, state, why);
        return;
    }
    if (run->user_traffic && !version_all_healthy(s->live)) {
        char unhealthy[384], msg[900];
        version_why_unhealthy(s->live, unhealthy, sizeof(unhealthy));
        snprintf(msg, sizeof(msg),
                 "%s; not rolling back because the stable version %s is not healthy (%s): "
                 "holding the current split",
                 why, s->live ? s->live->name : "(none)", unhealthy);
        run_hold(s, msg);
        event(s, "holding", msg);
        return;
    }
    test_cancel(run);
    run->weight = 0;
    run->pilot_step = -1;
    json_object_set_new(run->detail, "rollback_reason", json_string(why));
    /* Record first, then move the traffic: the change ends in `state` either way (a refused
     * record is retried by change_record_end). */
    int64_t id = s->change_id;
    char *detail = run_final_detail(s, state);
    change_record_end(s, state, state, why, NULL, NULL, detail);
    free(detail);
    change_done(s);
    struct version *gone = s->next;
    drain_watch(s, gone, id);
    if (gone != NULL)
        managed_retire(gone->ms, s->cfg->drain_timeout_ms + 500);
    s->next = NULL;
    plan_discard(s);
    rollout_publish(R(s));
    version_free(gone);
    log_warn("rolled back", "service", s->cfg->name, "state", state, "reason", why);
}

/* Closes the record of the current step: outcome (unless one was set), end time, figures per
 * version over the step. */
static void step_close_record(struct service *s, const char *outcome, const char *note)
{
    struct plan_run *run = s->run;
    json_t *rec = step_record(run, run->step);
    if (json_is_null(json_object_get(rec, "outcome")))
        json_object_set_new(rec, "outcome", json_string(outcome));
    json_object_set_new(rec, "ended", rollout_iso_time(store_now_ms()));
    if (run->seq.windows > 0 && run->have_verdict) {
        /* The step judged windows: which test decided, with its figures. */
        json_object_set_new(rec, "gate", verdict_json(&run->last));
        if (json_object_get(rec, "verdict") == NULL)
            json_object_set_new(rec, "verdict", json_string(run->last.detail));
    }
    struct analysis_sample now[ROUTE_ROLES], d;
    sample_now(s, now);
    sample_diff(&d, &now[ROUTE_STABLE], &run->step_base[ROUTE_STABLE]);
    json_object_set_new(rec, "stable", sample_json(&d));
    sample_diff(&d, &now[ROUTE_CANARY], &run->step_base[ROUTE_CANARY]);
    json_object_set_new(rec, "canary", sample_json(&d));
    if (note)
        json_object_set_new(rec, "note", json_string(note));
}

void plan_fail(struct service *s, const char *state, const char *why)
{
    if (s->run == NULL)
        return;
    if (s->run->state == RUN_HEALTH) {
        struct version *gone = s->next;
        s->next = NULL;
        change_finish(s, STORE_CHANGE_FAILED, why);
        plan_discard(s);
        if (gone != NULL)
            managed_retire(gone->ms, 0);
        version_free(gone);
        return;
    }
    plan_rollback(s, s->run->user_traffic ? state : STORE_CHANGE_FAILED, why);
}

static void step_complete(struct service *s, const char *outcome, const char *note)
{
    struct plan_run *run = s->run;
    uv_timer_stop(&run->step_timer);
    step_close_record(s, outcome, note);
    char desc[256], msg[400];
    step_describe(&run->plan->steps[run->step], desc, sizeof(desc));
    snprintf(msg, sizeof(msg), "step %zu (%s) %s", run->step + 1, desc, outcome);
    event(s, "step_done", msg);
    if (run->step + 1 >= run->plan->nsteps) {
        plan_finish(s, "plan completed");
        return;
    }
    step_enter(s, run->step + 1);
}

static void step_enter(struct service *s, size_t i)
{
    struct plan_run *run = s->run;
    const struct config_step *st = &run->plan->steps[i];
    run->step = i;
    run->state = RUN_STEP;
    run->step_elapsed_ms = 0;
    run->step_resumed_at = uv_now(R(s)->loop);
    run->step_duration_ms = 0;
    run->step_timed = 0;
    set_hold(run, NULL);
    json_object_set_new(run->detail, "approvals", json_array());
    sample_now(s, run->step_base);
    analysis_seq_reset(&run->seq);
    json_t *rec = step_record(run, i);
    json_object_set_new(rec, "started", rollout_iso_time(store_now_ms()));
    char desc[256], msg[320];
    step_describe(st, desc, sizeof(desc));
    int publish = 0;
    switch (st->kind) {
    case CONFIG_STEP_WEIGHT:
        run->weight = st->weight;
        if (st->weight > 0)
            run->user_traffic = 1;
        publish = 1;
        break;
    case CONFIG_STEP_PILOT:
        run->pilot_step = (int)i;
        run->user_traffic = 1;
        run->step_duration_ms = st->duration_ms;
        run->step_timed = 1;
        publish = 1;
        break;
    case CONFIG_STEP_PAUSE:
        run->step_duration_ms = st->duration_ms;
        run->step_timed = st->duration_ms > 0;
        break;
    case CONFIG_STEP_TEST:
    case CONFIG_STEP_APPROVAL:
        break;
    }
    /* Store first, then act. */
    run_save(s);
    snprintf(msg, sizeof(msg), "step %zu of %zu: %s", i + 1, run->plan->nsteps, desc);
    event(s, "step", msg);
    if (publish) {
        for (int k = 0; k < ROUTE_ROLES; k++)
            run->win_base[k] = run->step_base[k];
        rollout_publish(R(s));
    }
    if (st->kind != CONFIG_STEP_TEST)
        respond_once(s);
    switch (st->kind) {
    case CONFIG_STEP_WEIGHT:
        if (s->roll != NULL) {
            /* Done once the batches reach the step's share of instances. */
            run->rolling_wait = 1;
            rolling_goal(s, st->weight);
            return;
        }
        step_complete(s, "done", NULL);
        return;
    case CONFIG_STEP_PILOT:
    case CONFIG_STEP_PAUSE:
        if (run->step_timed)
            start_step_timer(run);
        return;
    case CONFIG_STEP_TEST:
        test_start(s, st);
        return;
    case CONFIG_STEP_APPROVAL:
        return;
    }
}

/* ---------------------------------------------------------------- rolling hooks ------------- */

int plan_allows_batch(const struct service *s)
{
    return s->run == NULL || s->run->state == RUN_STEP || s->run->state == RUN_HEALTH;
}

int plan_has_traffic(const struct service *s)
{
    return s->run != NULL && s->run->traffic;
}

int plan_weight(const struct service *s)
{
    return s->run != NULL ? s->run->weight : 0;
}

void plan_goal_reached(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL || run->state != RUN_STEP || run->rolling_wait == 0)
        return;
    if (run->rolling_wait == 2) {
        run->rolling_wait = 0;
        plan_finish(s, run->finish_how ? run->finish_how : "plan completed");
        return;
    }
    run->rolling_wait = 0;
    step_complete(s, "done", NULL);
}

int plan_gate_begin(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL || run->skip_gates || !analysing(run))
        return 0;
    /* A fresh window: the verdict must be about the split the last batch made. */
    sample_now(s, run->win_base);
    return 1;
}

void plan_mark_rolling(struct service *s)
{
    if (s->run == NULL)
        return;
    json_object_set_new(s->run->detail, "rolling", json_true());
    run_save(s);
}

void plan_gate_inconclusive(struct service *s, const char *why)
{
    struct plan_run *run = s->run;
    if (run == NULL)
        return;
    event(s, "inconclusive", why);
    switch (run->plan->on_inconclusive) {
    case CONFIG_ON_PROCEED:
        rolling_gate_passed(s);
        return;
    case CONFIG_ON_ROLLBACK:
        plan_rollback(s, STORE_CHANGE_ROLLED_BACK, why);
        return;
    case CONFIG_ON_PAUSE:
        run->gate_held = 1;
        run_hold(s, why);
        return;
    }
}

/* ---------------------------------------------------------------- lifecycle ----------------- */

static struct plan_run *run_new(struct service *s, const struct config_plan *plan)
{
    struct plan_run *run = xcalloc(1, sizeof(*run));
    run->plan = plan;
    run->s = s;
    run->pilot_step = -1;
    run->state = RUN_HEALTH;
    run->detail = json_object();
    uv_timer_init(R(s)->loop, &run->step_timer);
    uv_timer_init(R(s)->loop, &run->tick_timer);
    run->step_timer.data = s;
    run->tick_timer.data = s;
    run->handles = 2;
    return run;
}

void plan_create(struct service *s, const struct config_plan *plan)
{
    s->run = run_new(s, plan);
    run_save(s);
}

static void start_ticks(struct service *s)
{
    struct plan_run *run = s->run;
    uint64_t iv = run->plan->analysis.enabled && run->plan->analysis.interval_ms
                      ? run->plan->analysis.interval_ms
                      : TICK_MS_DEFAULT;
    uv_timer_start(&run->tick_timer, on_tick, iv, iv);
}

void plan_health_passed(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL || run->traffic)
        return;
    run->traffic = 1;
    char msg[160];
    snprintf(msg, sizeof(msg), "%s passed its health checks; plan %s starts", s->next->name,
             run->plan->name);
    event(s, "healthy", msg);
    start_ticks(s);
    step_enter(s, 0);
}

static void run_handle_closed(uv_handle_t *h)
{
    struct plan_run *run = h->data;
    if (--run->handles == 0) {
        json_decref(run->detail);
        free(run->hold_reason);
        free(run->finish_how);
        free(run);
    }
}

void plan_discard(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL)
        return;
    s->run = NULL;
    test_cancel(run);
    run->step_timer.data = run;
    run->tick_timer.data = run;
    uv_close((uv_handle_t *)&run->step_timer, run_handle_closed);
    uv_close((uv_handle_t *)&run->tick_timer, run_handle_closed);
}

void plan_stop(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL)
        return;
    if (run->state == RUN_STEP)
        run->step_elapsed_ms = step_elapsed(run);
    run_save(s);
    event(s, "suspended", "the daemon stopped; the plan resumes at this step on the next start");
    /* The change stays running in the store; nobody waits on it any more. */
    s->waiter = NULL;
    s->waiter_ctx = NULL;
    plan_discard(s);
    s->change_id = 0;
}

int plan_resume(struct service *s, const struct store_change *c, const struct config_plan *plan)
{
    json_t *d = c->detail ? json_loads(c->detail, 0, NULL) : NULL;
    if (d == NULL || s->live == NULL)
        goto fail;
    json_int_t step = json_integer_value(json_object_get(d, "step"));
    if (step < 0 || (size_t)step >= plan->nsteps)
        goto fail;
    s->next = version_load(s, c->to_version, 1);
    if (s->next == NULL || s->next->n == 0)
        goto fail;
    {
        char **t = NULL;
        size_t nt = 0;
        if (store_version_targets(R(s)->st, s->cfg->name, c->to_version, &t, &nt) == 0) {
            s->next->ms = managed_restore(s, c->to_version, t, nt, 1);
            store_strv_free(t);
        }
    }
    s->change_id = c->id;
    s->change_kind = CHANGE_DEPLOY;
    s->change_wait = 1;
    struct plan_run *run = run_new(s, plan);
    s->run = run;
    json_decref(run->detail);
    run->detail = d;
    run->step = (size_t)step;
    run->weight = (int)json_integer_value(json_object_get(d, "weight"));
    run->pilot_step = (int)json_integer_value(json_object_get(d, "pilot_step"));
    run->traffic = json_is_true(json_object_get(d, "traffic"));
    run->user_traffic = json_is_true(json_object_get(d, "user_traffic"));
    run->responded = 1;
    run->step_duration_ms = (uint64_t)json_integer_value(json_object_get(d, "step_duration_ms"));
    run->step_elapsed_ms = (uint64_t)json_integer_value(json_object_get(d, "step_elapsed_ms"));
    const char *state = json_string_value(json_object_get(d, "state"));
    const char *hold = json_string_value(json_object_get(d, "hold_reason"));
    set_hold(run, hold);
    sample_now(s, run->step_base);
    for (int k = 0; k < ROUTE_ROLES; k++)
        run->win_base[k] = run->step_base[k];
    event(s, "resumed", "the daemon restarted; the plan resumes at the step it was in");
    log_info("plan resumed", "service", s->cfg->name, "version", s->next->name, "state",
             state ? state : "");
    if (!run->traffic) {
        /* It was still waiting for the canary's health: wait again, with a fresh deadline. */
        run->state = RUN_HEALTH;
        change_wait_health(s);
        return 0;
    }
    start_ticks(s);
    const struct config_step *st = &plan->steps[run->step];
    if (state != NULL && strcmp(state, "paused") == 0) {
        run->state = RUN_PAUSED;
        run->step_timed = run->step_duration_ms > 0;
        return 0;
    }
    if (state != NULL && strcmp(state, "holding") == 0) {
        run->state = RUN_HOLDING;
        run->step_timed = run->step_duration_ms > 0;
        return 0;
    }
    run->state = RUN_STEP;
    switch (st->kind) {
    case CONFIG_STEP_PILOT:
    case CONFIG_STEP_PAUSE:
        run->step_timed = run->step_duration_ms > 0;
        if (run->step_timed)
            start_step_timer(run);
        break;
    case CONFIG_STEP_APPROVAL:
        break;
    case CONFIG_STEP_TEST:
        /* A test cannot be resumed half-way: it runs again. */
        test_start(s, st);
        break;
    case CONFIG_STEP_WEIGHT:
        /* The weight was applied (it is in the detail); the step itself is instant. */
        uv_timer_start(&run->step_timer, on_step_timer, 0, 0);
        break;
    }
    return 0;
fail:
    json_decref(d);
    return -EINVAL;
}

/* ---------------------------------------------------------------- actions ------------------- */

static int approvals_has(json_t *a, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

int plan_action(struct service *s, const char *action, const char *actor, int all, char *err,
                size_t errlen)
{
    struct plan_run *run = s->run;
    const struct config_step *st = &run->plan->steps[run->step];
    char msg[512];
    const char *who = actor && *actor ? actor : "unknown";

    if (strcmp(action, "abort") == 0) {
        snprintf(msg, sizeof(msg), "aborted by %s in step %zu; traffic back on %s", who,
                 run->step + 1, s->live ? s->live->name : "nothing");
        if (s->roll != NULL) {
            test_cancel(run);
            rolling_fail(s, STORE_CHANGE_ABORTED, msg);
            return 0;
        }
        if (run->state == RUN_HEALTH) {
            snprintf(msg, sizeof(msg),
                     "aborted by %s before the new version was healthy; "
                     "traffic never moved",
                     who);
            struct version *gone = s->next;
            s->next = NULL;
            change_finish(s, STORE_CHANGE_ABORTED, msg);
            plan_discard(s);
            if (gone != NULL)
                managed_retire(gone->ms, 0);
            version_free(gone);
            return 0;
        }
        plan_rollback(s, STORE_CHANGE_ABORTED, msg);
        if (s->run != NULL) {
            snprintf(err, errlen, "%s", s->run->hold_reason ? s->run->hold_reason : "holding");
            return -EBUSY;
        }
        return 0;
    }
    if (run->state == RUN_HEALTH) {
        snprintf(err, errlen, "the new version is not healthy yet; nothing to %s", action);
        return -EBUSY;
    }
    if (strcmp(action, "pause") == 0) {
        if (run->state == RUN_PAUSED) {
            snprintf(err, errlen, "already paused");
            return -EBUSY;
        }
        if (run->state == RUN_STEP) {
            run->step_elapsed_ms = step_elapsed(run);
            uv_timer_stop(&run->step_timer);
        }
        run->state = RUN_PAUSED;
        snprintf(msg, sizeof(msg), "paused by %s in step %zu", who, run->step + 1);
        set_hold(run, msg);
        run_save(s);
        event(s, "paused", msg);
        return 0;
    }
    if (strcmp(action, "resume") == 0) {
        if (run->state == RUN_STEP) {
            snprintf(err, errlen, "not paused");
            return -EBUSY;
        }
        int was_holding_at_end = run->state == RUN_HOLDING && run->step_timed &&
                                 run->step_elapsed_ms >= run->step_duration_ms;
        run->state = RUN_STEP;
        set_hold(run, NULL);
        snprintf(msg, sizeof(msg), "resumed by %s in step %zu", who, run->step + 1);
        event(s, "resumed", msg);
        sample_now(s, run->win_base);
        if (run->last.result == ANALYSIS_FAIL)
            analysis_seq_reset(&run->seq); /* overruled: else the pool fails it again at once */
        if (was_holding_at_end) {
            step_complete(s, "accepted", msg);
            return 0;
        }
        run_save(s);
        if (run->step_timed)
            start_step_timer(run);
        if (run->gate_held) {
            /* A person resumed a batch held for want of a verdict: that stands for one. */
            run->gate_held = 0;
            rolling_gate_passed(s);
            return 0;
        }
        rolling_evaluate(s); /* a batch may have waited for the pause to end */
        return 0;
    }
    if (strcmp(action, "promote") == 0) {
        if (all) {
            for (size_t i = run->step; i < run->plan->nsteps; i++) {
                if (run->plan->steps[i].kind == CONFIG_STEP_APPROVAL) {
                    size_t have = i == run->step && st->kind == CONFIG_STEP_APPROVAL
                                      ? json_array_size(json_object_get(run->detail, "approvals"))
                                      : 0;
                    if ((int)have < run->plan->steps[i].count) {
                        snprintf(err, errlen,
                                 "step %zu needs approval by %d of its approvers; promote --all "
                                 "does not skip approvals",
                                 i + 1, run->plan->steps[i].count);
                        return -EBUSY;
                    }
                }
            }
            test_cancel(run);
            if (s->roll != NULL) {
                /* The remaining batches go in without waiting for a person or a window. */
                run->skip_gates = 1;
                run->state = RUN_STEP;
                set_hold(run, NULL);
                rolling_gate_passed(s);
            }
            snprintf(msg, sizeof(msg), "promoted to 100%% by %s from step %zu", who, run->step + 1);
            event(s, "promoted", msg);
            step_close_record(s, "promoted", msg);
            plan_finish(s, msg);
            return 0;
        }
        if (st->kind == CONFIG_STEP_APPROVAL) {
            snprintf(err, errlen, "step %zu waits for approval: use cutover approve",
                     run->step + 1);
            return -EBUSY;
        }
        if (st->kind == CONFIG_STEP_TEST) {
            snprintf(err, errlen, "step %zu is a test; it cannot be promoted past", run->step + 1);
            return -EBUSY;
        }
        snprintf(msg, sizeof(msg), "step %zu promoted by %s", run->step + 1, who);
        run->state = RUN_STEP;
        run->rolling_wait = 0;
        rolling_gate_passed(s); /* a person's promotion stands in for the batch's window */
        if (s->run != run)
            return 0;
        step_complete(s, "promoted", msg);
        return 0;
    }
    if (strcmp(action, "approve") == 0) {
        if (st->kind != CONFIG_STEP_APPROVAL || run->state != RUN_STEP) {
            snprintf(err, errlen, "change %lld is not waiting for an approval (step %zu is %s)",
                     (long long)s->change_id, run->step + 1, step_kind_name(st->kind));
            return -EBUSY;
        }
        int listed = 0;
        for (size_t i = 0; i < st->napprovers; i++)
            listed |= strcmp(st->approvers[i], who) == 0;
        if (!listed) {
            snprintf(err, errlen, "%s is not an approver of step %zu", who, run->step + 1);
            return -EPERM;
        }
        json_t *ap = json_object_get(run->detail, "approvals");
        if (approvals_has(ap, who)) {
            snprintf(err, errlen, "%s already approved step %zu; it needs %d distinct approvers",
                     who, run->step + 1, st->count);
            return -EBUSY;
        }
        json_array_append_new(ap, json_string(who));
        json_t *all_ap = json_object_get(run->detail, "approval_log");
        if (all_ap == NULL) {
            all_ap = json_array();
            json_object_set_new(run->detail, "approval_log", all_ap);
        }
        json_array_append_new(all_ap, json_pack("{s:s, s:i, s:o}", "approver", who, "step",
                                                (int)run->step + 1, "at",
                                                rollout_iso_time(store_now_ms())));
        snprintf(msg, sizeof(msg), "approved by %s (%zu of %d) in step %zu", who,
                 json_array_size(ap), st->count, run->step + 1);
        run_save(s);
        event(s, "approved", msg);
        if ((int)json_array_size(ap) >= st->count)
            step_complete(s, "approved", msg);
        return 0;
    }
    snprintf(err, errlen, "unknown action '%s'", action);
    return -EINVAL;
}

json_t *plan_status_json(const struct service *s)
{
    const struct plan_run *run = s->run;
    if (run == NULL)
        return json_null();
    char desc[256];
    step_describe(&run->plan->steps[run->step], desc, sizeof(desc));
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:i, s:b}", "plan", run->plan->name, "state",
                          state_names[run->state], "step", (int)run->step + 1, "steps",
                          (int)run->plan->nsteps, "step_description", desc, "weight", run->weight,
                          "pilot", run->pilot_step >= 0);
    if (run->step_timed && run->step_duration_ms > 0) {
        uint64_t e = step_elapsed(run);
        json_object_set_new(
            o, "step_remaining_ms",
            json_integer((json_int_t)(e < run->step_duration_ms ? run->step_duration_ms - e : 0)));
    }
    if (run->hold_reason)
        json_object_set_new(o, "hold_reason", json_string(run->hold_reason));
    json_t *ap = json_object_get(run->detail, "approvals");
    if (ap != NULL)
        json_object_set(o, "approvals", ap);
    if (run->have_verdict)
        json_object_set_new(o, "last_analysis",
                            json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:f}", "result",
                                      run->last.result == ANALYSIS_PASS   ? "pass"
                                      : run->last.result == ANALYSIS_FAIL ? "fail"
                                                                          : "inconclusive",
                                      "test", run->last.test, "detail", run->last.detail,
                                      "canary_requests", (json_int_t)run->last.canary_requests,
                                      "stable_requests", (json_int_t)run->last.stable_requests,
                                      "canary_error_rate", run->last.canary_error_rate,
                                      "stable_error_rate", run->last.stable_error_rate,
                                      "canary_p99_ms", run->last.canary_p99_ms, "stable_p99_ms",
                                      run->last.stable_p99_ms));
    return o;
}
