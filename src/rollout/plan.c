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
#include "proxy/mirror.h"
#include "rollout/baseline.h"
#include "rollout/load.h"
#include "rollout/managed.h"
#include "rollout/plan.h"
#include "rollout/policy.h"
#include "rollout/rollout_int.h"
#include "rollout/steptest.h"
#include "store/store.h"

#define TICK_MS_DEFAULT 1000

struct plan_run {
    const struct config_plan *plan;
    struct service *s;
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
    struct steptest *test;
    int handles;
    int enter_pending; /* the store refused the record of step enter_step: not taken yet */
    size_t enter_step;
    int rolling_wait;      /* rolling replacement: 1 a weight step, 2 the plan's end waits for the
                              batches to reach their goal */
    int skip_gates;        /* promote --all: remaining batches do not wait for analysis */
    int gate_held;         /* held because a batch's window stayed inconclusive */
    char *finish_how;      /* the plan's end waits for the last batch: how it ended (promoted...) */
    int mirror_step;       /* index of the mirror step in force, or -1 */
    uint64_t mirror_epoch; /* its results in the data plane (proxy/mirror.h) */
    struct loadgen *load;  /* a load step's synthetic requests, while it runs */
    struct analysis_sample syn_win; /* synthetic figures at the current window's start */
};

static void step_enter(struct service *s, size_t i);
static void step_complete(struct service *s, const char *outcome, const char *note);
static void step_close_record(struct service *s, const char *outcome, const char *note);
static void plan_decide(struct service *s, enum change_input in, const char *state, const char *why,
                        const char *close, const struct change_facts *f);
static void inconclusive(struct service *s, const char *why, int batch);

/* ---------------------------------------------------------------- helpers ------------------- */

static struct rollout *R(struct service *s)
{
    return s->r;
}

/* The run's state is its change's (change.h): one state for the whole change. */
static enum change_state ST(const struct plan_run *run)
{
    return run->s->ch.state;
}

static void SET(struct plan_run *run, enum change_state st)
{
    change_set_state(&run->s->ch, st);
}

/* What the change machine needs to know about the run (change_next). */
static struct change_facts facts(const struct service *s)
{
    const struct plan_run *run = s->run;
    struct change_facts f = {0};
    f.plan = 1;
    f.user_traffic = run->user_traffic;
    /* A replacement brings the old instances back itself (rolling.c). */
    f.stable_healthy = s->roll != NULL || version_all_healthy(s->live);
    f.hold_on_failure = run->plan->on_failure == CONFIG_ON_PAUSE;
    f.last_step = run->step + 1 >= run->plan->nsteps;
    f.resumable = s->roll == NULL;
    const enum config_step_kind k = run->plan->steps[run->step].kind;
    f.step = k == CONFIG_STEP_TEST       ? CHANGE_STEP_TEST
             : k == CONFIG_STEP_APPROVAL ? CHANGE_STEP_APPROVAL
                                         : CHANGE_STEP_OTHER;
    return f;
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
    case CONFIG_STEP_MIRROR:
        return "mirror";
    case CONFIG_STEP_LOAD:
        return "load";
    }
    return "?";
}

/* One line describing a step: config_step_describe, the one wording of every view. */
static void step_describe(const struct config_step *st, char *buf, size_t n)
{
    config_step_describe(st, buf, n);
}

static void sample_now(struct service *s, struct analysis_sample out[ROUTE_ROLES])
{
    for (int role = 0; role < ROUTE_ROLES; role++) {
        memset(&out[role], 0, sizeof(out[role]));
        if (R(s)->sample)
            R(s)->sample(R(s)->ctx, s->id, role, &out[role]);
    }
}

/* The new version's synthetic figures (load steps), cumulative; zero without a new version. */
static void synthetic_now(struct service *s, struct analysis_sample *out)
{
    memset(out, 0, sizeof(*out));
    if (s->next != NULL)
        loadgen_sample_add(s->id, s->next->name, out);
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
    if (ST(run) == CHANGE_STEP && run->step_timed)
        e += uv_now(R(run->s)->loop) - run->step_resumed_at;
    return e;
}

/* Folds the time the step ran since its timer last started into step_elapsed_ms, and restarts
 * the count from now: step_elapsed() never counts the same time twice, however often the run
 * is saved (a hand-over used to add it once more, and ended a pause early). */
static void step_fold(struct plan_run *run)
{
    run->step_elapsed_ms = step_elapsed(run);
    run->step_resumed_at = uv_now(R(run->s)->loop);
}

/* Writes the detail JSON as it is to the store. -EIO when the store refused it. */
static int run_save_raw(struct service *s)
{
    char *text = json_dumps(s->run->detail, JSON_COMPACT);
    int rc = change_record_detail(&s->ch, text);
    free(text);
    return rc;
}

static json_t *count_json(const struct analysis_seq_count *c)
{
    return json_pack("[I, I]", (json_int_t)c->n, (json_int_t)c->k);
}

static void count_load(struct analysis_seq_count *c, json_t *a)
{
    c->n = (uint64_t)json_integer_value(json_array_get(a, 0));
    c->k = (uint64_t)json_integer_value(json_array_get(a, 1));
}

/* The step's pooled windows, saved with the run: a restart or a hand-over carries the
 * evidence over instead of judging the rest of the step on an empty pool. */
static json_t *pool_json(const struct analysis_seq *q)
{
    return json_pack("{s:i, s:o, s:o, s:o}", "windows", (int)q->windows, "errors",
                     count_json(&q->errors), "slow_ms", count_json(&q->slow_ms), "slow_ratio",
                     count_json(&q->slow_ratio));
}

static void pool_load(struct analysis_seq *q, json_t *o)
{
    analysis_seq_reset(q);
    if (!json_is_object(o))
        return;
    q->windows = (unsigned)json_integer_value(json_object_get(o, "windows"));
    count_load(&q->errors, json_object_get(o, "errors"));
    count_load(&q->slow_ms, json_object_get(o, "slow_ms"));
    count_load(&q->slow_ratio, json_object_get(o, "slow_ratio"));
}

/* Brings the run's state into its detail JSON (not written). */
static void run_detail_update(struct service *s)
{
    struct plan_run *run = s->run;
    json_t *d = run->detail;
    json_object_set_new(d, "plan", json_string(run->plan->name));
    json_object_set_new(d, "state", json_string(change_state_name(ST(run))));
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
    json_object_set_new(d, "pool", pool_json(&run->seq));
}

/* Writes the run's state into the change's detail (store first, always). -EIO when the store
 * refused it: a caller about to move traffic then does not. */
static int run_save(struct service *s)
{
    run_detail_update(s);
    return run_save_raw(s);
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
    change_record_event(&s->ch, type, msg);
}

/* Tells the people a change now waits for (config people): an `awaiting` event whose message
 * starts with their names, so that their webhooks get it. Nothing without people. */
static void awaiting(struct service *s, const char *names, size_t k, const char *what)
{
    if (R(s)->cfg->npeople == 0 || k == 0)
        return;
    char *msg = xasprintf("%s: %s", names, what);
    event(s, "awaiting", msg);
    free(msg);
}

static void await_approval(struct service *s, const struct config_step *st, size_t i)
{
    char names[512], what[256];
    size_t k = policy_approvers_awaited(st, s->ch.actor, names, sizeof(names));
    snprintf(what, sizeof(what),
             "change %lld waits at step %zu for %d approval%s (cutover approve "
             "%lld)",
             (long long)s->ch.id, i + 1, st->count, st->count == 1 ? "" : "s", (long long)s->ch.id);
    awaiting(s, names, k, what);
}

static void await_owners(struct service *s, const char *why)
{
    char names[512];
    size_t k = policy_people(R(s)->cfg, s->cfg->name, CONFIG_DUTY_OWNER, names, sizeof(names));
    char *what = xasprintf("change %lld holds for a person (resume, promote or abort): %s",
                           (long long)s->ch.id, why);
    awaiting(s, names, k, what);
    free(what);
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
        step_fold(run);
    }
    SET(run, CHANGE_HOLDING);
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
    baseline_route_fill(s, run->weight, rs);
    _Static_assert(CONFIG_MIRROR_STATUS == ROUTE_MIRROR_STATUS &&
                       CONFIG_MIRROR_BODY == ROUTE_MIRROR_BODY &&
                       CONFIG_MIRROR_MAX_HEADERS == ROUTE_MIRROR_MAX_HEADERS,
                   "the config's mirror bits are the route table's");
    if (run->mirror_step >= 0) {
        const struct config_mirror *m = run->plan->steps[run->mirror_step].mirror;
        rs->mirror =
            route_mirror_new(run->mirror_epoch, m->percent, m->methods, m->compare, m->headers,
                             m->ignore_json, m->max_body_bytes, m->max_inflight);
    }
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
    return analysis_cfg(run)->enabled && run->traffic &&
           (run->weight > 0 || run->pilot_step >= 0 || run->load != NULL);
}

/* JSON cannot hold an infinity (a log likelihood ratio with max_error_rate 0). */
static double json_finite(double x)
{
    return isfinite(x) ? x : x > 0 ? DBL_MAX : -DBL_MAX;
}

/* Which test decided a step's gates, with its figures: the change record an auditor reads. */
static json_t *verdict_json(const struct analysis_verdict *v)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:f, s:I, s:I, s:f, s:f, s:s}", "test",
                     v->test, "result",
                     v->result == ANALYSIS_PASS   ? "pass"
                     : v->result == ANALYSIS_FAIL ? "fail"
                                                  : "inconclusive",
                     "gate", v->gate, "detail", v->detail, "windows", (int)v->windows, "requests",
                     (json_int_t)v->pooled_requests, "errors", (json_int_t)v->pooled_errors,
                     "error_log_lr", json_finite(v->error_llr), "slow", (json_int_t)v->pooled_slow,
                     "slow_of", (json_int_t)v->pooled_slow_n, "slow_log_lr",
                     json_finite(v->slow_llr), "bound", json_finite(v->bound), "compared_with",
                     v->reference ? v->reference : "stable");
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
    json_object_set_new(json_object_get(run->detail, "failure"), "compared_with",
                        json_string(v->reference));
    json_t *rec = step_record(run, run->step);
    json_object_set_new(rec, "verdict", json_string(v->detail));
    json_object_set_new(rec, "gate", verdict_json(v));
    log_warn(run->plan->on_failure == CONFIG_ON_PAUSE ? "analysis gate failed; holding for a person"
                                                      : "analysis gate failed; rolling back",
             "service", s->cfg->name, "gate", v->gate, "detail", v->detail);
    plan_decide(s, CHANGE_IN_GATE_FAILED, STORE_CHANGE_ROLLED_BACK, msg, "failed", NULL);
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
    /* A load step's synthetic requests are the new version's too, for the gates only. */
    struct analysis_sample syn, dsyn;
    synthetic_now(s, &syn);
    sample_diff(&dsyn, &syn, &run->syn_win);
    d[ROUTE_CANARY].requests += dsyn.requests;
    d[ROUTE_CANARY].errors_5xx += dsyn.errors_5xx;
    d[ROUTE_CANARY].upstream_errors += dsyn.upstream_errors;
    hist_add(&d[ROUTE_CANARY].latency, &dsyn.latency);
    /* With a baseline running, the canary is compared with it, not with the long-running set
     * (rollout/baseline.h); without one (nothing was live to start it from) with the stable. */
    struct config_analysis a = *analysis_cfg(run);
    a.baseline = s->baseline != NULL;
    struct analysis_verdict v;
    analysis_seq_judge(&run->seq, &a, &d[a.baseline ? ROUTE_BASELINE : ROUTE_STABLE],
                       &d[ROUTE_CANARY], step_end, &v);
    log_debug("analysis", "service", s->cfg->name, "detail", v.detail);
    if (!v.window_done)
        return 0;
    run->last = v;
    run->have_verdict = 1;
    for (int i = 0; i < ROUTE_ROLES; i++)
        run->win_base[i] = now[i];
    run->syn_win = syn;
    if (v.result == ANALYSIS_PASS) {
        if (s->exec != NULL)
            s->exec->gate_passed(s); /* the next batch, if one waited for this window */
        return 0;
    }
    if (v.result == ANALYSIS_INCONCLUSIVE)
        return 0; /* over a limit without significance: the next window decides */
    on_failure(s, &v);
    return 1;
}

/* The current step ends inconclusive: why goes to the change's list of inconclusive verdicts,
 * the step's record and an event. */
static void record_inconclusive(struct service *s, const char *why)
{
    struct plan_run *run = s->run;
    json_t *inc = json_object_get(run->detail, "inconclusive");
    if (inc == NULL) {
        inc = json_array();
        json_object_set_new(run->detail, "inconclusive", inc);
    }
    json_array_append_new(inc, json_string(why));
    json_object_set_new(step_record(run, run->step), "outcome", json_string("inconclusive"));
    event(s, "inconclusive", why);
}

/* The mirror step's results so far go into its record; its gate judges them. A mismatch rate
 * over max_mismatch_rate fails the step as soon as min_pairs were compared; at the step's end
 * (step_end) fewer pairs are inconclusive. Returns 1 when the step ended here (failed or
 * inconclusive and acted on). */
static int mirror_judge(struct service *s, int step_end)
{
    struct plan_run *run = s->run;
    if (run->mirror_step < 0 || (size_t)run->mirror_step != run->step)
        return 0;
    const struct config_mirror *m = run->plan->steps[run->step].mirror;
    struct mirror_totals t;
    json_t *res = mirror_results_json(s->id, run->mirror_epoch, &t);
    if (res == NULL)
        return 0;
    json_object_set_new(res, "max_mismatch_rate", json_real(m->max_mismatch_rate));
    json_object_set_new(res, "min_pairs", json_integer((json_int_t)m->min_pairs));
    json_object_set_new(step_record(run, run->step), "mirror", res);
    double rate = t.pairs ? (double)t.mismatches / (double)t.pairs : 0.0;
    if (t.pairs >= m->min_pairs && rate > m->max_mismatch_rate) {
        struct analysis_verdict v;
        memset(&v, 0, sizeof(v));
        v.result = ANALYSIS_FAIL;
        snprintf(v.test, sizeof(v.test), "mirror");
        snprintf(v.gate, sizeof(v.gate), "max_mismatch_rate");
        /* The worst route names where to look. */
        json_t *routes = json_object_get(res, "routes"), *r, *worst = NULL;
        size_t i;
        json_array_foreach(routes, i, r)
        {
            if (worst == NULL || json_integer_value(json_object_get(r, "mismatches")) >
                                     json_integer_value(json_object_get(worst, "mismatches")))
                worst = r;
        }
        snprintf(v.detail, sizeof(v.detail),
                 "mismatch rate %.3f (%llu of %llu compared pairs) > max %g; most on %s (%lld)",
                 rate, (unsigned long long)t.mismatches, (unsigned long long)t.pairs,
                 m->max_mismatch_rate,
                 worst ? json_string_value(json_object_get(worst, "route")) : "?",
                 worst ? (long long)json_integer_value(json_object_get(worst, "mismatches")) : 0);
        v.canary_requests = t.pairs;
        v.pooled_requests = t.pairs;
        v.pooled_errors = t.mismatches;
        v.windows = 1;
        run->mirror_step = -1; /* the copies stop with the rollback's table */
        on_failure(s, &v);
        return 1;
    }
    if (!step_end)
        return 0;
    if (t.pairs < m->min_pairs) {
        char why[480];
        snprintf(why, sizeof(why),
                 "step %zu inconclusive: %llu mirrored pairs compared, fewer than min_pairs %llu "
                 "(%llu dropped over max_inflight or without a target, %llu not copyable)",
                 run->step + 1, (unsigned long long)t.pairs, (unsigned long long)m->min_pairs,
                 (unsigned long long)t.dropped, (unsigned long long)t.skipped);
        record_inconclusive(s, why);
        run->mirror_step = -1;
        change_publish(&s->ch);
        inconclusive(s, why, 0);
        return 1;
    }
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    struct service *s = t->data;
    struct plan_run *run = s->run;
    if (run == NULL || s->ch.id == 0)
        return;
    if (run->enter_pending && ST(run) == CHANGE_HOLDING) {
        step_enter(s, run->enter_step); /* the store may take the step now */
        return;
    }
    if (run->load != NULL) /* the record shows the synthetic figures as they grow */
        json_object_set_new(step_record(run, run->step), "synthetic",
                            loadgen_json(s->id, s->next ? s->next->name : NULL));
    if (ST(run) == CHANGE_STEP && analysing(run) && judge_window(s, 0))
        return;
    if (ST(run) == CHANGE_STEP && mirror_judge(s, 0))
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

static void on_test_done(void *ctx, const struct steptest_result *res)
{
    struct service *s = ctx;
    struct plan_run *run = s->run;
    run->test = NULL;
    json_t *tests = json_object_get(run->detail, "tests");
    if (tests == NULL) {
        tests = json_array();
        json_object_set_new(run->detail, "tests", tests);
    }
    json_array_append_new(tests,
                          json_pack("{s:i, s:b, s:s, s:s}", "step", (int)run->step + 1, "passed",
                                    res->passed, "result", res->msg, "output", res->output));
    event(s, res->passed ? "test_passed" : "test_failed", res->msg);
    if (res->passed) {
        step_complete(s, "passed", res->msg);
        return;
    }
    char why[512];
    snprintf(why, sizeof(why), "%s; see the test output in the report", res->msg);
    plan_decide(s, CHANGE_IN_GATE_FAILED,
                run->user_traffic ? STORE_CHANGE_ROLLED_BACK : STORE_CHANGE_FAILED, why, "failed",
                NULL);
}

/* Runs the step's command against the new version: the preview listener when the service has
 * one (it reaches the canary from the moment it passed its health checks), else its first
 * target. */
static void test_start(struct service *s, const struct config_step *st)
{
    struct plan_run *run = s->run;
    char url[128];
    if (s->cfg->preview_listen != NULL)
        snprintf(url, sizeof(url), "http://%s", s->cfg->preview_listen);
    else
        snprintf(url, sizeof(url), "http://%s", s->next->targets[0]->address);
    char *env[5];
    env[0] = xasprintf("CUTOVER_TARGET_URL=%s", url);
    env[1] = xasprintf("CUTOVER_SERVICE=%s", s->cfg->name);
    env[2] = xasprintf("CUTOVER_VERSION=%s", s->next->name);
    env[3] = xasprintf("CUTOVER_CHANGE_ID=%lld", (long long)s->ch.id);
    env[4] = NULL;
    char msg[320];
    snprintf(msg, sizeof(msg), "test step %zu started: %s against %s", run->step + 1,
             st->command[0], url);
    event(s, "test_started", msg);
    /* A command that cannot start is judged before steptest_start returns (NULL). */
    struct steptest *t = steptest_start(R(s)->loop, st->command, (const char *const *)env,
                                        st->timeout_ms, run->step + 1, on_test_done, s);
    if (t != NULL)
        run->test = t;
    for (int i = 0; i < 4; i++)
        free(env[i]);
}

/* Stops a running test without judging it (abort, stop). */
static void test_cancel(struct plan_run *run)
{
    steptest_cancel(run->test);
    run->test = NULL;
}

/* ---------------------------------------------------------------- steps --------------------- */

static void respond_once(struct service *s)
{
    struct plan_run *run = s->run;
    if (run->responded || s->ch.wait)
        return;
    run->responded = 1;
    change_notify(&s->ch);
}

static void on_step_timer(uv_timer_t *t)
{
    struct service *s = t->data;
    struct plan_run *run = s->run;
    if (run == NULL || ST(run) != CHANGE_STEP)
        return;
    step_fold(run);
    if (judge_tail(s))
        return;
    if (mirror_judge(s, 1))
        return;
    /* judge_tail left the step's pooled verdict in run->last: too few requests, or a value
     * over its limit without significance, is inconclusive, not a pass. */
    if (analysing(run) && run->last.result == ANALYSIS_INCONCLUSIVE) {
        char why[480];
        snprintf(why, sizeof(why), "step %zu inconclusive: %s", run->step + 1, run->last.detail);
        record_inconclusive(s, why);
        inconclusive(s, why, 0);
        return;
    }
    step_complete(s, "passed", NULL);
}

/* The plan's on_inconclusive decides: proceed (the step passes, or for a batch's window the
 * next batch starts), rollback, or pause (held until a person resumes). */
static void inconclusive(struct service *s, const char *why, int batch)
{
    struct plan_run *run = s->run;
    struct change_facts f = facts(s);
    switch (run->plan->on_inconclusive) {
    case CONFIG_ON_PROCEED:
        if (batch) {
            s->exec->gate_passed(s);
            return;
        }
        step_complete(s, "inconclusive", why);
        return;
    case CONFIG_ON_ROLLBACK:
        f.hold_on_failure = 0;
        plan_decide(s, CHANGE_IN_GATE_FAILED, STORE_CHANGE_ROLLED_BACK, why, NULL, &f);
        return;
    case CONFIG_ON_PAUSE:
        if (batch)
            run->gate_held = 1;
        plan_decide(s, CHANGE_IN_HOLD, NULL, why, NULL, NULL);
        return;
    }
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
    struct version *from = s->live, *to = s->next;
    char msg[320];
    if (s->exec != NULL && !s->exec->done(s)) {
        /* Every old instance must be replaced first; goal_reached comes back here once the
         * last batch is in. Users follow the instances meanwhile (their share grows). */
        run->rolling_wait = 2;
        free(run->finish_how);
        run->finish_how = xstrdup(how);
        if (run->weight < 100) {
            run->weight = 100;
            run->user_traffic = 1;
            run_save(s);
            change_publish(&s->ch);
        }
        s->exec->goal(s, 100); /* may finish the plan before it returns */
        return;
    }
    snprintf(msg, sizeof(msg), "%s: %s is live on %s (was %s)", how, to->name, s->cfg->name,
             from ? from->name : "nothing");
    run->weight = 100;
    SET(run, CHANGE_STEP);
    set_hold(run, NULL);
    /* The plan ends whether or not the store takes the record now: holding users at the last
     * step's split until a disk write succeeds would help nobody (change_record_end retries). */
    char *detail = run_final_detail(s, STORE_CHANGE_COMPLETED);
    log_info("plan completed", "service", s->cfg->name, "version", to->name);
    R(s)->commit(s, to, "completed", msg, detail); /* drops the run */
    free(detail);
}

/* Sends all traffic back to the stable version and ends the change in state (the change
 * machine decided it: see plan_decide). */
static void plan_undo(struct service *s, const char *state, const char *why)
{
    struct plan_run *run = s->run;
    test_cancel(run);
    json_object_set_new(run->detail, "rollback_reason", json_string(why));
    if (s->exec != NULL) {
        /* Batches undo themselves: the old version's instances come back (the executor). */
        json_object_set_new(run->detail, "state", json_string(state));
        run_save_raw(s);
        s->exec->fail(s, state, why);
        return;
    }
    run->weight = 0;
    run->pilot_step = -1;
    /* Record first, then move the traffic: the change ends in `state` either way (a refused
     * record is retried by change_record_end). */
    int64_t id = s->ch.id;
    char *detail = run_final_detail(s, state);
    change_record_end(&s->ch, state, state, why, NULL, NULL, detail);
    free(detail);
    struct version *gone = s->next;
    s->next = NULL;
    plan_discard(s);
    change_publish(&s->ch);
    R(s)->watch_drain(s, gone, id);
    change_done(&s->ch);
    if (gone != NULL)
        managed_retire(gone->ms, s->cfg->drain_timeout_ms + 500);
    version_free(gone);
    log_warn("rolled back", "service", s->cfg->name, "state", state, "reason", why);
}

/* Ends a run whose canary never got users (its health deadline, an abort before it was
 * healthy, a crash): nothing moved. */
static void plan_fail_early(struct service *s, const char *state, const char *why)
{
    if (s->exec != NULL) {
        /* A replacement restores the old version's instances itself. */
        test_cancel(s->run);
        s->exec->fail(s, state, why);
        return;
    }
    struct version *gone = s->next;
    s->next = NULL;
    change_record_end(&s->ch, state, state, why, NULL, NULL, NULL);
    plan_discard(s);
    change_done(&s->ch);
    if (gone != NULL)
        managed_retire(gone->ms, 0);
    version_free(gone);
}

/* Asks the change machine what input in means now and acts on it: undo (ending the change in
 * state, the current step closed with outcome close when not NULL), hold for a person, or fail
 * before users saw the canary. f: the facts, or NULL for the run's. */
static void plan_decide(struct service *s, enum change_input in, const char *state, const char *why,
                        const char *close, const struct change_facts *f)
{
    struct plan_run *run = s->run;
    struct change_facts own = f ? *f : facts(s);
    struct change_rule r;
    char err[256], held[900];
    snprintf(held, sizeof(held), "%s", why);
    if (own.user_traffic && !own.stable_healthy && !own.hold_on_failure &&
        in != CHANGE_IN_CRASHED) {
        char unhealthy[384];
        version_why_unhealthy(s->live, unhealthy, sizeof(unhealthy));
        snprintf(held, sizeof(held),
                 "%s; not rolling back because the stable version %s is not healthy (%s): "
                 "holding the current split",
                 why, s->live ? s->live->name : "(none)", unhealthy);
    }
    int rc = change_fire(&s->ch, in, &own, held, &r, err, sizeof(err));
    if (rc == -EIO && r.effect == CHANGE_HOLD) {
        /* A hold moves no traffic: taken even when its event could not be recorded. */
        rc = 0;
    }
    if (rc < 0)
        return;
    switch (r.effect) {
    case CHANGE_HOLD:
        run_hold(s, held);
        await_owners(s, held);
        return;
    case CHANGE_UNDO:
        if (close != NULL)
            step_close_record(s, close, why);
        plan_undo(s, run->user_traffic || s->roll != NULL ? state : STORE_CHANGE_FAILED, why);
        return;
    case CHANGE_FAIL:
        plan_fail_early(s, state, why);
        return;
    default:
        return;
    }
}

/* Closes the record of the current step: outcome (unless one was set), end time, figures per
 * version over the step. */
static void step_close_record(struct service *s, const char *outcome, const char *note)
{
    struct plan_run *run = s->run;
    json_t *rec = step_record(run, run->step);
    if (json_is_null(json_object_get(rec, "outcome")))
        json_object_set_new(rec, "outcome", json_string(outcome));
    json_object_set_new(rec, "ended", change_iso_time(store_now_ms()));
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
    if (s->baseline != NULL) {
        sample_diff(&d, &now[ROUTE_BASELINE], &run->step_base[ROUTE_BASELINE]);
        json_object_set_new(rec, "baseline", sample_json(&d));
    }
    if (note)
        json_object_set_new(rec, "note", json_string(note));
}

void plan_fail(struct service *s, const char *state, const char *why)
{
    if (s->run == NULL)
        return;
    plan_decide(s, CHANGE_IN_CRASHED, ST(s->run) == CHANGE_HEALTH ? STORE_CHANGE_FAILED : state,
                why, NULL, NULL);
}

static void step_complete(struct service *s, const char *outcome, const char *note)
{
    struct plan_run *run = s->run;
    uv_timer_stop(&run->step_timer);
    if (run->load != NULL) {
        json_object_set_new(step_record(run, run->step), "synthetic",
                            loadgen_json(s->id, s->next ? s->next->name : NULL));
        loadgen_stop(run->load);
        run->load = NULL;
    }
    if (run->mirror_step >= 0) {
        /* The copies end with the step (the next step may publish nothing). */
        run->mirror_step = -1;
        change_publish(&s->ch);
    }
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
    /* What users see now: put back if the store refuses the step. */
    const int was_weight = run->weight, was_pilot = run->pilot_step, was_users = run->user_traffic;
    const size_t was_step = run->step;
    run->step = i;
    SET(run, CHANGE_STEP);
    run->step_elapsed_ms = 0;
    run->step_resumed_at = uv_now(R(s)->loop);
    run->step_duration_ms = 0;
    run->step_timed = 0;
    run->enter_pending = 0;
    set_hold(run, NULL);
    json_object_set_new(run->detail, "approvals", json_array());
    sample_now(s, run->step_base);
    analysis_seq_reset(&run->seq);
    json_t *rec = step_record(run, i);
    json_object_set_new(rec, "started", change_iso_time(store_now_ms()));
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
    case CONFIG_STEP_MIRROR:
        run->mirror_step = (int)i;
        run->mirror_epoch = mirror_results_start(s->id);
        run->step_duration_ms = st->duration_ms;
        run->step_timed = 1;
        publish = 1;
        break;
    case CONFIG_STEP_LOAD:
        run->step_duration_ms = st->duration_ms;
        run->step_timed = 1;
        publish = 1; /* a fresh window: the gates judge from this step's start */
        break;
    case CONFIG_STEP_TEST:
    case CONFIG_STEP_APPROVAL:
        break;
    }
    /* Store first, then act: a step the store did not take is not taken. Users stay where
     * they are, the plan holds and says why, and each tick tries the step again. */
    if (run_save(s) < 0) {
        run->weight = was_weight;
        run->pilot_step = was_pilot;
        run->user_traffic = was_users;
        run->step = was_step;
        run->enter_pending = 1;
        run->enter_step = i;
        char held[800];
        snprintf(held, sizeof(held),
                 "the store refused the record of step %zu (%s): %s; holding until it takes "
                 "it",
                 i + 1, desc, store_errmsg(R(s)->st));
        SET(run, CHANGE_HOLDING);
        set_hold(run, held);
        log_error("step not taken: the store refused its record", "service", s->cfg->name, "step",
                  desc, "error", store_errmsg(R(s)->st));
        respond_once(s);
        return;
    }
    snprintf(msg, sizeof(msg), "step %zu of %zu: %s", i + 1, run->plan->nsteps, desc);
    event(s, "step", msg);
    if (st->kind == CONFIG_STEP_APPROVAL)
        await_approval(s, st, i);
    if (publish) {
        for (int k = 0; k < ROUTE_ROLES; k++)
            run->win_base[k] = run->step_base[k];
        synthetic_now(s, &run->syn_win);
        change_publish(&s->ch);
    }
    if (st->kind != CONFIG_STEP_TEST)
        respond_once(s);
    switch (st->kind) {
    case CONFIG_STEP_WEIGHT:
        if (s->exec != NULL) {
            /* Done once the batches reach the step's share of instances. */
            run->rolling_wait = 1;
            s->exec->goal(s, st->weight);
            return;
        }
        step_complete(s, "done", NULL);
        return;
    case CONFIG_STEP_LOAD:
        run->load =
            loadgen_start(R(s)->loop, s->id, s->next->name, st->load, s->next->targets, s->next->n);
        start_step_timer(run);
        return;
    case CONFIG_STEP_PILOT:
    case CONFIG_STEP_PAUSE:
    case CONFIG_STEP_MIRROR:
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

/* ---------------------------------------------------------------- executor ops -------------- */

/* What an executor (rolling.c) asks of the plan: through s->planner only. */

static int ops_allows_batch(const struct service *s)
{
    return s->run == NULL || ST(s->run) == CHANGE_STEP || ST(s->run) == CHANGE_HEALTH;
}

static int ops_has_traffic(const struct service *s)
{
    return s->run != NULL && s->run->traffic;
}

static int ops_weight(const struct service *s)
{
    return s->run != NULL ? s->run->weight : 0;
}

static void ops_goal_reached(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL || ST(run) != CHANGE_STEP || run->rolling_wait == 0)
        return;
    if (run->rolling_wait == 2) {
        run->rolling_wait = 0;
        plan_finish(s, run->finish_how ? run->finish_how : "plan completed");
        return;
    }
    run->rolling_wait = 0;
    step_complete(s, "done", NULL);
}

static int ops_gate_begin(struct service *s)
{
    struct plan_run *run = s->run;
    if (run == NULL || run->skip_gates || !analysing(run))
        return 0;
    /* A fresh window: the verdict must be about the split the last batch made. */
    sample_now(s, run->win_base);
    synthetic_now(s, &run->syn_win);
    return 1;
}

static void ops_mark_rolling(struct service *s)
{
    if (s->run == NULL)
        return;
    json_object_set_new(s->run->detail, "rolling", json_true());
    run_save(s);
}

static void ops_gate_inconclusive(struct service *s, const char *why)
{
    if (s->run == NULL)
        return;
    event(s, "inconclusive", why);
    inconclusive(s, why, 1);
}

static void ops_health_passed(struct service *s)
{
    plan_health_passed(s);
}

static void ops_discard(struct service *s)
{
    plan_discard(s);
}

static void ops_route_fill(const struct service *s, struct route_service *rs)
{
    plan_route_fill(s, rs);
}

static void ops_save_executor(struct service *s, json_t *state)
{
    if (s->run == NULL)
        return;
    json_object_set(s->run->detail, "rolling_state", state);
    run_save(s);
}

static const struct plan_ops the_plan_ops = {
    .allows_batch = ops_allows_batch,
    .has_traffic = ops_has_traffic,
    .weight = ops_weight,
    .goal_reached = ops_goal_reached,
    .gate_begin = ops_gate_begin,
    .mark_rolling = ops_mark_rolling,
    .gate_inconclusive = ops_gate_inconclusive,
    .health_passed = ops_health_passed,
    .discard = ops_discard,
    .route_fill = ops_route_fill,
    .save_executor = ops_save_executor,
};

const struct plan_ops *plan_ops(void)
{
    return &the_plan_ops;
}

/* ---------------------------------------------------------------- lifecycle ----------------- */

static struct plan_run *run_new(struct service *s, const struct config_plan *plan)
{
    struct plan_run *run = xcalloc(1, sizeof(*run));
    run->plan = plan;
    run->s = s;
    run->pilot_step = -1;
    run->mirror_step = -1;
    SET(run, CHANGE_HEALTH);
    run->detail = json_object();
    uv_timer_init(R(s)->loop, &run->step_timer);
    uv_timer_init(R(s)->loop, &run->tick_timer);
    run->step_timer.data = s;
    run->tick_timer.data = s;
    run->handles = 2;
    return run;
}

void plan_create(struct service *s, const struct config_plan *plan, json_t *audit)
{
    s->run = run_new(s, plan);
    if (audit != NULL)
        json_object_set(s->run->detail, "audit", audit);
    run_save(s);
}

static const char *on_name(enum config_on_failure on)
{
    return on == CONFIG_ON_PAUSE ? "pause" : on == CONFIG_ON_PROCEED ? "proceed" : "rollback";
}

json_t *plan_definition_json(const struct config_plan *plan)
{
    json_t *steps = json_array();
    for (size_t i = 0; i < plan->nsteps; i++) {
        char desc[256];
        step_describe(&plan->steps[i], desc, sizeof(desc));
        json_array_append_new(steps, json_string(desc));
    }
    const struct config_analysis *a = &plan->analysis;
    json_t *an = json_null();
    if (a->enabled) {
        an = json_pack("{s:I, s:I, s:f}", "interval_ms", (json_int_t)a->interval_ms, "min_requests",
                       (json_int_t)a->min_requests, "confidence", a->confidence);
        /* Only the gates in force: an unchecked one is absent, not -1. */
        if (a->max_error_rate >= 0)
            json_object_set_new(an, "max_error_rate", json_real(a->max_error_rate));
        if (a->max_p99_latency_ratio >= 0)
            json_object_set_new(an, "max_p99_latency_ratio", json_real(a->max_p99_latency_ratio));
        if (a->max_p99_latency_ms >= 0)
            json_object_set_new(an, "max_p99_latency_ms", json_real(a->max_p99_latency_ms));
        if (a->baseline)
            json_object_set_new(an, "baseline", json_true());
    }
    return json_pack("{s:s, s:o, s:o, s:s, s:s}", "name", plan->name, "steps", steps, "analysis",
                     an, "on_failure", on_name(plan->on_failure), "on_inconclusive",
                     on_name(plan->on_inconclusive));
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
    /* The canary joins the route table now, at weight 0: its preview listener and the plan's
     * tests reach it before any step gives it users (record first, then publish). */
    if (run_save(s) == 0)
        change_publish(&s->ch);
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
    loadgen_stop(run->load);
    run->load = NULL;
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
    if (ST(run) == CHANGE_STEP)
        step_fold(run);
    run_save(s);
    event(s, "suspended", "the daemon stopped; the plan resumes at this step on the next start");
    plan_discard(s);
    /* The change stays running in the store; nobody waits on it any more. */
    change_forget(&s->ch);
}

int plan_resume(struct service *s, const struct store_change *c, const struct config_plan *plan)
{
    json_t *d = c->detail ? json_loads(c->detail, 0, NULL) : NULL;
    if (d == NULL || s->live == NULL)
        goto fail;
    json_int_t step = json_integer_value(json_object_get(d, "step"));
    if (step < 0 || (size_t)step >= plan->nsteps)
        goto fail;
    /* A replacement may resume before its first new instance started. */
    if (s->next == NULL || (s->next->n == 0 && s->roll == NULL))
        goto fail;
    change_adopt(&s->ch, c->id, CHANGE_DEPLOY, CHANGE_HEALTH, 1, c->actor);
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
    /* The step's evidence carries over: the pool judged so far goes on being added to. */
    pool_load(&run->seq, json_object_get(d, "pool"));
    sample_now(s, run->step_base);
    for (int k = 0; k < ROUTE_ROLES; k++)
        run->win_base[k] = run->step_base[k];
    synthetic_now(s, &run->syn_win);
    event(s, "resumed", "the daemon restarted; the plan resumes at the step it was in");
    log_info("plan resumed", "service", s->cfg->name, "version", s->next->name, "state",
             state ? state : "");
    if (!run->traffic) {
        /* It was still waiting for the canary's health: wait again, with a fresh deadline. */
        SET(run, CHANGE_HEALTH);
        change_wait_health(&s->ch, s->cfg->deploy_timeout_ms);
        return 0;
    }
    start_ticks(s);
    const struct config_step *st = &plan->steps[run->step];
    if (state != NULL && strcmp(state, "paused") == 0) {
        SET(run, CHANGE_PAUSED);
        run->step_timed = run->step_duration_ms > 0;
        return 0;
    }
    if (state != NULL && strcmp(state, "holding") == 0) {
        SET(run, CHANGE_HOLDING);
        run->step_timed = run->step_duration_ms > 0;
        return 0;
    }
    SET(run, CHANGE_STEP);
    switch (st->kind) {
    case CONFIG_STEP_PILOT:
    case CONFIG_STEP_PAUSE:
        run->step_timed = run->step_duration_ms > 0;
        if (run->step_timed)
            start_step_timer(run);
        break;
    case CONFIG_STEP_APPROVAL:
        break;
    case CONFIG_STEP_LOAD:
        run->step_timed = 1;
        run->load =
            loadgen_start(R(s)->loop, s->id, s->next->name, st->load, s->next->targets, s->next->n);
        start_step_timer(run);
        break;
    case CONFIG_STEP_MIRROR:
        /* The comparisons were in memory: the step's remaining time compares afresh. */
        run->mirror_step = (int)run->step;
        run->mirror_epoch = mirror_results_start(s->id);
        run->step_timed = 1;
        change_publish(&s->ch);
        start_step_timer(run);
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

/* The actions a person takes on a plan, as inputs of the change machine. */
static const struct {
    const char *name;
    enum change_input in;
} actions[] = {
    {"promote", CHANGE_IN_PROMOTE}, {"pause", CHANGE_IN_PAUSE},     {"resume", CHANGE_IN_RESUME},
    {"abort", CHANGE_IN_ABORT},     {"approve", CHANGE_IN_APPROVE},
};

/* 1 when promote --all would skip an approval still short of its count (f.approvals_short). */
static int approvals_short(const struct plan_run *run)
{
    for (size_t i = run->step; i < run->plan->nsteps; i++) {
        if (run->plan->steps[i].kind != CONFIG_STEP_APPROVAL)
            continue;
        size_t have =
            i == run->step ? json_array_size(json_object_get(run->detail, "approvals")) : 0;
        if ((int)have < run->plan->steps[i].count)
            return 1;
    }
    return 0;
}

int plan_action(struct service *s, const char *action, const char *actor, int all, char *err,
                size_t errlen)
{
    struct plan_run *run = s->run;
    const struct config_step *st = &run->plan->steps[run->step];
    char msg[512], why[256];
    const char *who = actor && *actor ? actor : "unknown";
    enum change_input in = CHANGE_NINPUTS;
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strcmp(action, actions[i].name) == 0)
            in = actions[i].in;
    if (in == CHANGE_NINPUTS) {
        snprintf(err, errlen, "unknown action '%s'", action);
        return -EINVAL;
    }
    if (in == CHANGE_IN_PROMOTE && all)
        in = CHANGE_IN_PROMOTE_ALL;
    struct change_facts f = facts(s);
    f.approvals_short = in == CHANGE_IN_PROMOTE_ALL && approvals_short(run);
    if (in == CHANGE_IN_APPROVE && st->kind == CONFIG_STEP_APPROVAL && ST(run) == CHANGE_STEP) {
        /* Checked before the machine records anything: a refused approval leaves no trace. */
        int listed = 0;
        for (size_t i = 0; i < st->napprovers; i++)
            listed |= strcmp(st->approvers[i], who) == 0;
        if (!listed) {
            snprintf(err, errlen, "%s is not an approver of step %zu", who, run->step + 1);
            return -EPERM;
        }
        if (!st->allow_self && s->ch.actor != NULL && strcmp(s->ch.actor, who) == 0) {
            /* Four eyes: who asked for the change does not also approve it. */
            snprintf(err, errlen,
                     "%s started change %lld and cannot approve it (allow_self: true on the "
                     "approval step allows it)",
                     who, (long long)s->ch.id);
            return -EPERM;
        }
        if (approvals_has(json_object_get(run->detail, "approvals"), who)) {
            snprintf(err, errlen, "%s already approved step %zu; it needs %d distinct approvers",
                     who, run->step + 1, st->count);
            return -EBUSY;
        }
    }
    switch (in) {
    case CHANGE_IN_ABORT:
        snprintf(msg, sizeof(msg), "aborted by %s in step %zu; traffic back on %s", who,
                 run->step + 1, s->live ? s->live->name : "nothing");
        break;
    case CHANGE_IN_PAUSE:
        snprintf(msg, sizeof(msg), "paused by %s in step %zu", who, run->step + 1);
        break;
    case CHANGE_IN_RESUME:
        snprintf(msg, sizeof(msg), "resumed by %s in step %zu", who, run->step + 1);
        break;
    case CHANGE_IN_PROMOTE_ALL:
        snprintf(msg, sizeof(msg), "promoted to 100%% by %s from step %zu", who, run->step + 1);
        break;
    case CHANGE_IN_PROMOTE:
        snprintf(msg, sizeof(msg), "step %zu promoted by %s", run->step + 1, who);
        break;
    default:
        snprintf(msg, sizeof(msg), "approved by %s (%zu of %d) in step %zu", who,
                 json_array_size(json_object_get(run->detail, "approvals")) + 1, st->count,
                 run->step + 1);
        break;
    }
    if (in == CHANGE_IN_ABORT && ST(run) == CHANGE_HEALTH)
        snprintf(msg, sizeof(msg),
                 "aborted by %s before the new version was healthy; traffic never moved", who);
    if (in == CHANGE_IN_ABORT) {
        /* The machine decides between undo, hold (the stable version is not healthy) and the
         * early end; plan_decide acts. */
        plan_decide(s, CHANGE_IN_ABORT, STORE_CHANGE_ABORTED, msg, NULL, &f);
        if (s->run == run && s->ch.id != 0 && ST(run) == CHANGE_HOLDING) {
            snprintf(err, errlen, "%s", run->hold_reason ? run->hold_reason : "holding");
            return -EBUSY;
        }
        return 0;
    }
    /* Fold the step's time before the state changes: a pause freezes it, a refusal loses
     * nothing. */
    const enum change_state was = ST(run);
    step_fold(run);
    struct change_rule r;
    int rc = change_fire(&s->ch, in, &f, msg, &r, why, sizeof(why));
    if (rc < 0) {
        snprintf(err, errlen, "change %lld, step %zu (%s): %s", (long long)s->ch.id, run->step + 1,
                 step_kind_name(st->kind), why);
        return rc;
    }
    switch (r.effect) {
    case CHANGE_FREEZE:
        uv_timer_stop(&run->step_timer);
        set_hold(run, msg);
        run_save(s);
        return 0;
    case CHANGE_THAW: {
        int was_holding_at_end = was == CHANGE_HOLDING && run->step_timed &&
                                 run->step_elapsed_ms >= run->step_duration_ms;
        set_hold(run, NULL);
        sample_now(s, run->win_base);
        if (run->last.result == ANALYSIS_FAIL)
            analysis_seq_reset(&run->seq); /* overruled: else the pool fails it again at once */
        if (run->enter_pending) {
            step_enter(s, run->enter_step); /* the step the store had refused */
            return 0;
        }
        if (was_holding_at_end) {
            step_complete(s, "accepted", msg);
            return 0;
        }
        run_save(s);
        run->step_resumed_at = uv_now(R(s)->loop);
        if (run->step_timed)
            start_step_timer(run);
        if (run->gate_held) {
            /* A person resumed a batch held for want of a verdict: that stands for one. */
            run->gate_held = 0;
            if (s->exec != NULL)
                s->exec->gate_passed(s);
            return 0;
        }
        if (s->exec != NULL)
            s->exec->evaluate(s); /* a batch may have waited for the pause to end */
        return 0;
    }
    case CHANGE_COMMIT:
        if (in == CHANGE_IN_PROMOTE_ALL) {
            test_cancel(run);
            set_hold(run, NULL);
            if (s->exec != NULL) {
                /* The remaining batches go in without waiting for a person or a window. */
                run->skip_gates = 1;
                s->exec->gate_passed(s);
            }
            step_close_record(s, "promoted", msg);
            plan_finish(s, msg);
            return 0;
        }
        /* promoting the last step ends the plan through step_complete */
        /* fall through */
    case CHANGE_ADVANCE:
        set_hold(run, NULL);
        run->rolling_wait = 0;
        if (s->exec != NULL) {
            s->exec->gate_passed(s); /* a person's promotion stands in for the batch's window */
            if (s->run != run)
                return 0;
        }
        step_complete(s, "promoted", msg);
        return 0;
    case CHANGE_APPROVE: {
        json_t *ap = json_object_get(run->detail, "approvals");
        json_array_append_new(ap, json_string(who));
        json_t *all_ap = json_object_get(run->detail, "approval_log");
        if (all_ap == NULL) {
            all_ap = json_array();
            json_object_set_new(run->detail, "approval_log", all_ap);
        }
        json_array_append_new(all_ap,
                              json_pack("{s:s, s:i, s:o}", "approver", who, "step",
                                        (int)run->step + 1, "at", change_iso_time(store_now_ms())));
        if (run_save(s) < 0) {
            /* Not recorded, not counted: the approver tries again. */
            json_array_remove(ap, json_array_size(ap) - 1);
            json_array_remove(all_ap, json_array_size(all_ap) - 1);
            snprintf(err, errlen, "could not record the approval: %s", store_errmsg(R(s)->st));
            return -EIO;
        }
        event(s, "approved", msg);
        if ((int)json_array_size(ap) >= st->count)
            step_complete(s, "approved", msg);
        return 0;
    }
    default:
        return 0;
    }
}

int plan_gate_verdict(const struct service *s, const char *gate)
{
    const struct plan_run *run = s->run;
    if (run == NULL || !run->have_verdict || !run->plan->analysis.enabled)
        return -1;
    const struct config_analysis *an = &run->plan->analysis;
    int checked = strcmp(gate, "min_requests") == 0 ||
                  (strcmp(gate, "max_error_rate") == 0 && an->max_error_rate >= 0) ||
                  (strcmp(gate, "max_p99_latency_ratio") == 0 && an->max_p99_latency_ratio >= 0) ||
                  (strcmp(gate, "max_p99_latency_ms") == 0 && an->max_p99_latency_ms >= 0);
    if (!checked)
        return -1;
    if (run->last.result == ANALYSIS_PASS)
        return ANALYSIS_PASS;
    return strcmp(run->last.gate, gate) == 0 ? (int)run->last.result : -1;
}

json_t *plan_status_json(const struct service *s)
{
    const struct plan_run *run = s->run;
    if (run == NULL)
        return json_null();
    char desc[256];
    step_describe(&run->plan->steps[run->step], desc, sizeof(desc));
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:i, s:b}", "plan", run->plan->name, "state",
                          change_state_name(ST(run)), "step", (int)run->step + 1, "steps",
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
    const struct config_step *cur = &run->plan->steps[run->step];
    if (cur->kind == CONFIG_STEP_APPROVAL) {
        /* Who may give the approvals still awaited: the dashboard's "waiting for me". */
        json_t *who = json_array();
        for (size_t i = 0; i < cur->napprovers; i++)
            json_array_append_new(who, json_string(cur->approvers[i]));
        json_object_set_new(o, "approval",
                            json_pack("{s:o, s:i, s:b}", "approvers", who, "count", cur->count,
                                      "allow_self", cur->allow_self));
    }
    json_object_set_new(o, "baseline", baseline_json(s, run->weight));
    if (run->have_verdict)
        json_object_set_new(o, "last_analysis",
                            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:f}",
                                      "compared_with", run->last.reference, "result",
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
