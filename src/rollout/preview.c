/* The plan preview: how long each step takes, who owns it, who is told, and what a rollback
 * does there. See preview.h; the model is in docs/cli.md "cutover plan". */
#include "rollout/preview.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config/freeze.h"
#include "core/duration.h"

#define SEC(ms) ((double)(ms) / 1000.0)

/* One step's part of the time, and what the analysis expects of it. */
struct step_est {
    double fastest, expected, worst;
    int traffic; /* the new version's share of users during the step, percent */
    bool cohort; /* a pilot: a cohort of users besides the share */
    bool person; /* waits for a person */
    char note[256];
};

static bool managed(const struct config_service *s)
{
    return s->run.command != NULL;
}

/* How long until the canary has min_requests at share percent of the rate: the analysis
 * interval when the rate is unknown (the assumption docs/cli.md states), HUGE_VAL when no
 * request can reach it. */
static double time_to_min_requests(const struct preview_in *in, double share)
{
    const struct config_analysis *a = &in->plan->analysis;
    if (a->min_requests == 0)
        return 0;
    if (in->rate < 0)
        return SEC(a->interval_ms);
    if (in->rate == 0 || share <= 0)
        return HUGE_VAL;
    return (double)a->min_requests / (in->rate * share / 100.0);
}

static void estimate(const struct preview_in *in, size_t i, int weight, struct step_est *e)
{
    const struct config_step *st = &in->plan->steps[i];
    const struct config_analysis *a = &in->plan->analysis;
    char d[24];

    memset(e, 0, sizeof(*e));
    e->traffic = weight;
    switch (st->kind) {
    case CONFIG_STEP_WEIGHT:
        e->traffic = st->weight;
        snprintf(e->note, sizeof(e->note), "moves on at once");
        return;
    case CONFIG_STEP_TEST:
        e->worst = SEC(st->timeout_ms);
        snprintf(e->note, sizeof(e->note), "runs its command: at once at best, %s at worst",
                 duration_format(st->timeout_ms, d, sizeof(d)));
        return;
    case CONFIG_STEP_APPROVAL:
        e->person = true;
        snprintf(e->note, sizeof(e->note), "waits for %d approval%s", st->count,
                 st->count == 1 ? "" : "s");
        return;
    case CONFIG_STEP_PAUSE:
        if (st->duration_ms == 0) {
            e->person = true;
            snprintf(e->note, sizeof(e->note), "waits until someone promotes it");
            return;
        }
        break;
    case CONFIG_STEP_PILOT:
        e->cohort = true;
        break;
    case CONFIG_STEP_LOAD:
        break; /* timed, and its synthetic requests feed the analysis */
    case CONFIG_STEP_MIRROR:
        /* Users see none of its answers; its own gate (max_mismatch_rate) decides. */
        e->fastest = e->expected = e->worst = SEC(st->duration_ms);
        snprintf(e->note, sizeof(e->note), "copies %d%% of requests to it for %s and compares",
                 st->mirror->percent, duration_format(st->duration_ms, d, sizeof(d)));
        return;
    }
    /* A timed step (pause, pilot) holds for its duration; its end judges the analysis. */
    double dur = SEC(st->duration_ms);
    e->fastest = e->expected = e->worst = dur;
    snprintf(e->note, sizeof(e->note), "holds %s", duration_format(st->duration_ms, d, sizeof(d)));
    if (!a->enabled)
        return;
    double need =
        time_to_min_requests(in, st->kind == CONFIG_STEP_PILOT && weight == 0 ? -1 : weight);
    if (st->kind == CONFIG_STEP_PILOT && weight == 0)
        need = SEC(a->interval_ms); /* a cohort's share is not known: assume the interval */
    if (need <= dur) {
        size_t l = strlen(e->note);
        snprintf(e->note + l, sizeof(e->note) - l,
                 "; analysis every %s, %llu requests expected "
                 "in time",
                 duration_format(a->interval_ms, d, sizeof(d)),
                 (unsigned long long)a->min_requests);
        return;
    }
    size_t l = strlen(e->note);
    snprintf(e->note + l, sizeof(e->note) - l,
             "; fewer than min_requests (%llu) expected at %d%% of the traffic: inconclusive, "
             "then %s",
             (unsigned long long)a->min_requests, weight,
             in->plan->on_inconclusive == CONFIG_ON_PAUSE     ? "waits for a person"
             : in->plan->on_inconclusive == CONFIG_ON_PROCEED ? "proceeds"
                                                              : "rolls back");
    if (in->plan->on_inconclusive == CONFIG_ON_PAUSE)
        e->person = true;
}

/* The health phase: healthy_threshold checks at best, deploy_timeout at worst. */
static void health_times(const struct config_service *s, double *f, double *e, double *w)
{
    int n = s->health.healthy_threshold;
    *f = SEC(s->health.interval_ms) * (n > 1 ? n - 1 : 0);
    *e = SEC(s->health.interval_ms) * n;
    *w = SEC(s->deploy_timeout_ms);
    if (*e > *w)
        *e = *w;
    if (*f > *e)
        *f = *e;
}

static double rollback_worst(const struct config_service *s)
{
    /* After the switch the old version may have to pass its health checks again
     * (deploy_timeout) before the new one drains; managed instances then get stop_timeout. */
    double w = SEC(s->deploy_timeout_ms) + SEC(s->drain_timeout_ms);
    if (managed(s))
        w += SEC(s->run.stop_timeout_ms);
    return w;
}

void preview_times(const struct preview_in *in, struct preview_times *out)
{
    health_times(in->svc, &out->fastest, &out->expected, &out->worst);
    int weight = 0;
    for (size_t i = 0; in->plan != NULL && i < in->plan->nsteps; i++) {
        struct step_est e;
        estimate(in, i, weight, &e);
        weight = e.traffic;
        out->fastest += e.fastest;
        out->expected += e.expected;
        out->worst += e.worst;
    }
    out->rollback_worst = rollback_worst(in->svc);
}

/* "https://hooks.example.com" of a webhook URL: who is told, without the secret a chat hook
 * keeps in its path. */
static json_t *hook_name(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    int scheme = (int)(p - url);
    size_t n = strcspn(p, "/?#");
    const char *at = memchr(p, '@', n); /* user:password@ stays out too */
    if (at != NULL) {
        n -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    return json_sprintf("webhook %.*s%.*s", scheme, url, (int)n, p);
}

static json_t *notify_list(const struct preview_in *in)
{
    json_t *a = json_array();
    for (size_t i = 0; in->cfg != NULL && i < in->cfg->nwebhooks; i++) {
        const struct config_webhook *w = &in->cfg->webhooks[i];
        bool ours = w->services == NULL;
        for (size_t j = 0; !ours && j < w->nservices; j++)
            ours = strcmp(w->services[j], in->svc->name) == 0;
        if (ours)
            json_array_append_new(a, hook_name(w->url));
    }
    return a;
}

static json_t *needs_of(const struct preview_in *in, int after)
{
    const struct config_service *s = in->svc;
    char d[24];
    if (in->from == NULL)
        return json_string("nothing: there is no previous version to go back to");
    if (!managed(s))
        return json_sprintf("%s still running at its targets (cutover does not run them)",
                            in->from);
    if (!after && in->plan != NULL && in->plan->analysis.baseline)
        return json_sprintf("%s's %d instance%s, which keep running during the plan, and %d "
                            "fresh ones of %s as its baseline (room for them in port_range "
                            "%d-%d)",
                            in->from, s->run.instances, s->run.instances == 1 ? "" : "s",
                            s->run.instances, in->from, s->run.port_lo, s->run.port_hi);
    if (!after)
        return json_sprintf("%s's %d instance%s, which keep running during the plan", in->from,
                            s->run.instances, s->run.instances == 1 ? "" : "s");
    uint64_t keep = s->drain_timeout_ms > s->run.rollback_window_ms ? s->drain_timeout_ms
                                                                    : s->run.rollback_window_ms;
    return json_sprintf("%s's %d instance%s, kept %s after the switch; later started again, "
                        "which needs room for %d more in port_range %d-%d",
                        in->from, s->run.instances, s->run.instances == 1 ? "" : "s",
                        duration_format(keep, d, sizeof(d)), s->run.instances, s->run.port_lo,
                        s->run.port_hi);
}

static json_t *plan_b(const struct preview_in *in, int traffic, int after)
{
    char dr[24], dt[24];
    const char *to = in->to, *from = in->from;
    duration_format(in->svc->drain_timeout_ms, dr, sizeof(dr));
    duration_format(in->svc->deploy_timeout_ms, dt, sizeof(dt));
    if (from == NULL)
        return json_sprintf("abort: there is no previous version; %s is dropped%s", to,
                            traffic > 0 ? " and its users get errors" : "");
    if (after)
        return json_sprintf("cutover rollback: users back on %s once it is healthy (at most "
                            "deploy_timeout %s); %s drained in drain_timeout %s",
                            from, dt, to, dr);
    if (traffic == 0)
        return json_sprintf("abort: no user is on %s yet; %s keeps all traffic; %s is dropped", to,
                            from, to);
    return json_sprintf("abort%s: users back on %s at once; %s drained in drain_timeout %s",
                        in->plan && in->plan->analysis.enabled &&
                                in->plan->on_failure == CONFIG_ON_ROLLBACK
                            ? " (or a failed gate, by itself)"
                            : "",
                        from, to, dr);
}

/* The step in the words of every other view (config_step_describe). */
static json_t *step_what(const struct config_step *st)
{
    char buf[512];
    return json_string(config_step_describe(st, buf, sizeof(buf)));
}

static json_t *step_json(const struct preview_in *in, size_t i, const struct step_est *e)
{
    const struct config_step *st = &in->plan->steps[i];
    const char *owner = st->owner ? st->owner : in->plan->owner;
    static const char *const kinds[] = {"test",     "pilot",  "weight", "pause",
                                        "approval", "mirror", "load"};
    json_t *o = json_pack("{s:i, s:s, s:i, s:b, s:o, s:o, s:o, s:o, s:{s:f, s:f, s:f}, s:b, s:s}",
                          "step", (int)i + 1, "kind", kinds[st->kind], "traffic", e->traffic,
                          "cohort", e->cohort, "owner", owner ? json_string(owner) : json_null(),
                          "notify", notify_list(in), "plan_b", plan_b(in, e->traffic, 0), "needs",
                          needs_of(in, 0), "time_s", "fastest", e->fastest, "expected", e->expected,
                          "worst", e->worst, "waits_for_person", e->person, "note", e->note);
    json_object_set_new(o, "what", step_what(st));
    return o;
}

static json_t *freezes_json(const struct preview_in *in, double worst, json_t **now_in)
{
    json_t *a = json_array();
    *now_in = json_null();
    for (size_t i = 0; in->cfg != NULL && i < in->cfg->nfreezes; i++) {
        const struct config_freeze *f = &in->cfg->freezes[i];
        int64_t from, to;
        char t1[32], t2[32];
        if (!freeze_applies(f, in->svc->name) ||
            !freeze_next(f, in->now, in->now + (int64_t)ceil(worst) + 1, &from, &to))
            continue;
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:b}", "name", f->name, "from",
                                           freeze_time_format(from, t1, sizeof(t1)), "to",
                                           freeze_time_format(to, t2, sizeof(t2)), "in_force_now",
                                           from <= in->now));
        if (from <= in->now && json_is_null(*now_in))
            *now_in = json_string(f->name);
    }
    return a;
}

static json_int_t secs(double s)
{
    return (json_int_t)llround(s);
}

json_t *preview_json(const struct preview_in *in)
{
    struct preview_times t;
    double hf, he, hw;
    preview_times(in, &t);
    health_times(in->svc, &hf, &he, &hw);

    json_t *steps = json_array();
    int weight = 0;
    for (size_t i = 0; in->plan != NULL && i < in->plan->nsteps; i++) {
        struct step_est e;
        estimate(in, i, weight, &e);
        weight = e.traffic;
        json_array_append_new(steps, step_json(in, i, &e));
    }
    json_int_t f = secs(t.fastest), e = secs(t.expected), w = secs(t.worst);
    if (e < f)
        e = f;
    if (w < e)
        w = e;
    json_t *frozen_now;
    json_t *freezes = freezes_json(in, t.worst, &frozen_now);
    json_t *rate = in->rate >= 0 ? json_real(round(in->rate * 10) / 10) : json_null();
    return json_pack(
        "{s:s, s:o, s:s, s:o, s:o, s:{s:f, s:f, s:f, s:s}, s:o, s:{s:i, s:o, s:o}, s:{s:I, s:I, "
        "s:I}, s:I, s:o, s:o, s:o, s:{s:o, s:s}}",
        "service", in->svc->name, "from", in->from ? json_string(in->from) : json_null(), "to",
        in->to, "plan", in->plan ? json_string(in->plan->name) : json_null(), "owner",
        in->plan && in->plan->owner ? json_string(in->plan->owner) : json_null(), "health",
        "fastest", hf, "expected", he, "worst", hw, "note",
        "the new version's health checks; deploy_timeout is their deadline", "steps", steps,
        "after", "traffic", 100, "plan_b", plan_b(in, 100, 1), "needs", needs_of(in, 1),
        "time_to_full_s", "fastest", f, "expected", e, "worst", w, "time_to_rollback_worst_s",
        secs(t.rollback_worst), "freeze_windows", freezes, "frozen_now", frozen_now, "notify",
        notify_list(in), "request_rate", "per_s", rate, "source",
        in->rate >= 0 ? "the data plane's counters since the daemon started"
                      : "unknown: min_requests assumed to arrive within one analysis interval");
}
