/* The change record as a report (rollout_report_json / rollout_report_md): who started the
 * change and why, from -> to, the plan, each step with its times, outcome and figures per
 * version, test output, approvals, the rollback reason, and the requests that failed in cutover
 * itself, kept apart from the errors the versions returned. Control loop only. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "core/xmalloc.h"
#include "rollout/rollout_int.h"

static int is_note(const json_t *ev)
{
    const char *t = json_string_value(json_object_get(ev, "type"));
    return t != NULL && strcmp(t, "note") == 0;
}

json_t *rollout_report_json(struct rollout *r, int64_t id)
{
    json_t *c = rollout_change_json(r, id, 1);
    if (c == NULL)
        return NULL;
    /* The lessons-learned notes ("ACTOR: TEXT" events), also in the change's events. */
    json_t *notes = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(c, "events"), i, ev)
    {
        if (is_note(ev))
            json_array_append(notes, ev);
    }
    return json_pack("{s:i, s:o, s:o}", "report_version", 1, "change", c, "notes", notes);
}

struct md {
    char *p;
    size_t len, cap;
    char **owned; /* escaped copies handed to md_put, freed with the report */
    size_t nowned;
};

/* Free text (reasons, actors, messages, names) as core/text escapes it for Markdown: it can
   neither end a cell, add a row or a heading, nor carry HTML, escape sequences or bidi
   overrides. The copy lives until md_free_owned. */
static const char *md_esc(struct md *m, const char *s, int lines)
{
    char *e = lines ? text_term_lines(s != NULL ? s : "-") : text_md(s != NULL ? s : "-");
    m->owned = xrealloc(m->owned, (m->nowned + 1) * sizeof(*m->owned));
    m->owned[m->nowned++] = e;
    return e;
}

static void md_free_owned(struct md *m)
{
    for (size_t i = 0; i < m->nowned; i++)
        free(m->owned[i]);
    free(m->owned);
}

static void md_put(struct md *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void md_put(struct md *m, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(m->p + m->len, m->cap - m->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < m->cap - m->len) {
            m->len += (size_t)n;
            return;
        }
        m->cap = (m->cap + (size_t)n) * 2;
        m->p = xrealloc(m->p, m->cap);
    }
}

static const char *str(struct md *m, json_t *o, const char *k)
{
    return md_esc(m, json_string_value(json_object_get(o, k)), 0);
}

/* A code fence longer than any run of backticks in text, so the text cannot close it. */
static const char *md_fence(struct md *m, const char *text)
{
    size_t run = 0, most = 0;
    for (const char *p = text; *p; p++) {
        run = *p == '`' ? run + 1 : 0;
        most = run > most ? run : most;
    }
    size_t n = most < 3 ? 3 : most + 1;
    char *f = xmalloc(n + 1);
    memset(f, '`', n);
    f[n] = '\0';
    m->owned = xrealloc(m->owned, (m->nowned + 1) * sizeof(*m->owned));
    m->owned[m->nowned++] = f;
    return f;
}

static void md_sample(struct md *m, const char *who, json_t *x)
{
    if (!json_is_object(x))
        return;
    md_put(m, "| %s | %lld | %lld | %lld | %.4f | %.1f | %.1f | %.1f |\n", who,
           (long long)json_integer_value(json_object_get(x, "requests")),
           (long long)json_integer_value(json_object_get(x, "errors_5xx")),
           (long long)json_integer_value(json_object_get(x, "cutover_errors")),
           json_real_value(json_object_get(x, "error_rate")),
           json_real_value(json_object_get(x, "p50_ms")),
           json_real_value(json_object_get(x, "p90_ms")),
           json_real_value(json_object_get(x, "p99_ms")));
}

char *rollout_report_md(struct rollout *r, int64_t id)
{
    json_t *c = rollout_change_json(r, id, 1);
    if (c == NULL)
        return NULL;
    struct md m = {xmalloc(4096), 0, 4096, NULL, 0};
    m.p[0] = '\0';
    json_t *d = json_object_get(c, "detail");
    md_put(&m, "# Change %lld: %s %s\n\n", (long long)id, str(&m, c, "kind"),
           str(&m, c, "service"));
    md_put(&m, "| | |\n|---|---|\n");
    md_put(&m, "| from → to | %s → %s |\n", str(&m, c, "from"), str(&m, c, "to"));
    md_put(&m, "| plan | %s |\n", str(&m, c, "plan"));
    md_put(&m, "| outcome | **%s** |\n", str(&m, c, "state"));
    md_put(&m, "| started by | %s |\n", str(&m, c, "actor"));
    md_put(&m, "| reason | %s |\n", str(&m, c, "reason"));
    md_put(&m, "| created | %s |\n| ended | %s |\n", str(&m, c, "created"), str(&m, c, "ended"));
    if (json_is_integer(json_object_get(c, "duration_ms")))
        md_put(&m, "| duration | %.1f s |\n",
               (double)json_integer_value(json_object_get(c, "duration_ms")) / 1000.0);
    md_put(&m, "| last message | %s |\n", str(&m, c, "message"));
    json_t *loss = json_object_get(c, "loss");
    if (json_is_object(loss)) {
        md_put(&m, "| requests lost | %lld",
               (long long)json_integer_value(json_object_get(loss, "requests")));
        const char *k;
        json_t *v;
        int first = 1;
        json_object_foreach(json_object_get(loss, "by_reason"), k, v)
        {
            if (json_integer_value(v) == 0)
                continue;
            md_put(&m, "%s%s %lld", first ? " (" : ", ", k, (long long)json_integer_value(v));
            first = 0;
        }
        md_put(&m, "%s; %lld long-lived connections closed at the drain deadline |\n",
               first ? "" : ")",
               (long long)json_integer_value(json_object_get(loss, "connections")));
    } else {
        md_put(&m, "| requests lost | not known yet (the change or its drain is not over) |\n");
    }
    json_t *dl = json_object_get(c, "deliveries");
    long long ndl = (long long)json_integer_value(json_object_get(dl, "delivered")) +
                    (long long)json_integer_value(json_object_get(dl, "pending")) +
                    (long long)json_integer_value(json_object_get(dl, "failed"));
    if (ndl > 0) { /* a line only where webhooks were told */
        md_put(&m, "| webhook deliveries | %lld delivered, %lld pending, %lld given up",
               (long long)json_integer_value(json_object_get(dl, "delivered")),
               (long long)json_integer_value(json_object_get(dl, "pending")),
               (long long)json_integer_value(json_object_get(dl, "failed")));
        if (json_is_string(json_object_get(dl, "last_error")))
            md_put(&m, " (last error: %s)", str(&m, dl, "last_error"));
        md_put(&m, " |\n");
    }
    md_put(&m, "\n");

    json_t *fail = json_object_get(d, "failure");
    if (json_is_object(fail)) {
        md_put(&m, "## Why it was rolled back\n\nGate `%s` failed in step %lld (%s): %s\n\n",
               str(&m, fail, "gate"), (long long)json_integer_value(json_object_get(fail, "step")),
               str(&m, fail, "step_description"), str(&m, fail, "detail"));
    } else if (json_is_string(json_object_get(d, "rollback_reason"))) {
        md_put(&m, "## Why it was rolled back\n\n%s\n\n", str(&m, d, "rollback_reason"));
    }
    json_t *steps = json_object_get(d, "steps");
    if (json_array_size(steps) > 0) {
        md_put(&m, "## Steps\n\nErrors are split: *5xx* are answers the version gave; *cutover "
                   "errors* are requests that failed in cutover itself (connect errors, resets, "
                   "timeouts, no healthy target) and are expected to be 0.\n\n");
        size_t i;
        json_t *st;
        json_array_foreach(steps, i, st)
        {
            md_put(&m, "### Step %zu: %s — %s\n\n", i + 1, str(&m, st, "description"),
                   str(&m, st, "outcome"));
            md_put(&m, "Started %s, ended %s.", str(&m, st, "started"), str(&m, st, "ended"));
            if (json_is_string(json_object_get(st, "note")))
                md_put(&m, " %s.", str(&m, st, "note"));
            if (json_is_string(json_object_get(st, "verdict")))
                md_put(&m, " Analysis: %s.", str(&m, st, "verdict"));
            json_t *gate = json_object_get(st, "gate");
            if (json_is_object(gate))
                md_put(&m, " Decided by the %s test (%s, %lld windows, %lld requests).",
                       str(&m, gate, "test"), str(&m, gate, "result"),
                       (long long)json_integer_value(json_object_get(gate, "windows")),
                       (long long)json_integer_value(json_object_get(gate, "requests")));
            md_put(&m, "\n\n");
            json_t *mr = json_object_get(st, "mirror");
            if (json_is_object(mr)) {
                md_put(&m,
                       "Mirrored: %lld pairs compared, %lld mismatches (gate max %g), %lld too "
                       "large to compare, %lld copies dropped, %lld not copyable.\n\n",
                       (long long)json_integer_value(json_object_get(mr, "pairs")),
                       (long long)json_integer_value(json_object_get(mr, "mismatches")),
                       json_number_value(json_object_get(mr, "max_mismatch_rate")),
                       (long long)json_integer_value(json_object_get(mr, "too_large")),
                       (long long)json_integer_value(json_object_get(mr, "dropped")),
                       (long long)json_integer_value(json_object_get(mr, "skipped")));
                size_t k;
                json_t *row;
                md_put(&m, "| route | pairs | mismatches |\n|---|---|---|\n");
                json_array_foreach(json_object_get(mr, "routes"), k, row)
                {
                    md_put(&m, "| %s | %lld | %lld |\n", str(&m, row, "route"),
                           (long long)json_integer_value(json_object_get(row, "pairs")),
                           (long long)json_integer_value(json_object_get(row, "mismatches")));
                }
                md_put(&m, "\n");
                json_array_foreach(json_object_get(mr, "samples"), k, row)
                {
                    md_put(&m, "- `%s`: live %lld, new %lld: %s\n", str(&m, row, "route"),
                           (long long)json_integer_value(json_object_get(row, "live_status")),
                           (long long)json_integer_value(json_object_get(row, "new_status")),
                           str(&m, row, "diff"));
                }
                md_put(&m, "\n");
            }
            if (json_is_object(json_object_get(st, "canary"))) {
                md_put(&m, "| version | requests | 5xx | cutover errors | error rate | p50 ms | "
                           "p90 ms | p99 ms |\n|---|---|---|---|---|---|---|---|\n");
                md_sample(&m, "stable", json_object_get(st, "stable"));
                if (json_is_object(json_object_get(st, "baseline")))
                    md_sample(&m, "baseline", json_object_get(st, "baseline"));
                md_sample(&m, "new", json_object_get(st, "canary"));
                md_put(&m, "\n");
            }
        }
    }
    json_t *inc = json_object_get(d, "inconclusive");
    if (json_array_size(inc) > 0) {
        md_put(&m, "## Inconclusive steps\n\n");
        size_t i;
        json_t *v;
        json_array_foreach(inc, i, v)
        {
            md_put(&m, "- %s\n", md_esc(&m, json_string_value(v), 0));
        }
        md_put(&m, "\n");
    }
    json_t *ap = json_object_get(d, "approval_log");
    if (json_array_size(ap) > 0) {
        md_put(&m, "## Approvals\n\n");
        size_t i;
        json_t *v;
        json_array_foreach(ap, i, v)
        {
            md_put(&m, "- step %lld: %s at %s\n",
                   (long long)json_integer_value(json_object_get(v, "step")),
                   str(&m, v, "approver"), str(&m, v, "at"));
        }
        md_put(&m, "\n");
    }
    json_t *tests = json_object_get(d, "tests");
    if (json_array_size(tests) > 0) {
        md_put(&m, "## Tests\n\n");
        size_t i;
        json_t *v;
        json_array_foreach(tests, i, v)
        {
            const char *out = md_esc(&m, json_string_value(json_object_get(v, "output")), 1);
            const char *fence = md_fence(&m, out);
            md_put(&m, "### %s\n\n%s\n%s\n%s\n\n", str(&m, v, "result"), fence, out, fence);
        }
    }
    json_t *audit = json_object_get(d, "audit");
    if (json_is_object(audit)) {
        json_t *cfg = json_object_get(audit, "config");
        md_put(&m, "## Audit\n\n| | |\n|---|---|\n| cutover | %s |\n| config | %s (sha256 %s) |\n",
               str(&m, audit, "cutover"), str(&m, cfg, "path"), str(&m, cfg, "sha256"));
        if (json_is_true(json_object_get(audit, "emergency"))) {
            if (json_is_string(json_object_get(audit, "freeze")))
                md_put(&m, "| emergency | during freeze window %s (in force until %s): %s |\n",
                       str(&m, audit, "freeze"), str(&m, audit, "freeze_until"),
                       str(&m, audit, "reason"));
            else
                md_put(&m, "| emergency | no freeze window in force: %s |\n",
                       str(&m, audit, "reason"));
        }
        json_t *wp = json_object_get(audit, "written_plan");
        if (json_is_object(wp)) {
            json_t *t = json_object_get(wp, "time_to_full_s");
            md_put(&m,
                   "| written plan | time to full traffic %llds at best, %llds expected, %llds at "
                   "worst; rollback at worst %llds |\n",
                   (long long)json_integer_value(json_object_get(t, "fastest")),
                   (long long)json_integer_value(json_object_get(t, "expected")),
                   (long long)json_integer_value(json_object_get(t, "worst")),
                   (long long)json_integer_value(json_object_get(wp, "time_to_rollback_worst_s")));
        }
        if (json_object_get(audit, "ticket") != NULL || json_object_get(audit, "risk") != NULL)
            md_put(&m, "| change request | ticket %s, risk %s |\n", str(&m, audit, "ticket"),
                   str(&m, audit, "risk"));
        const char *side[2] = {"from", "to"};
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(audit, side[k]);
            md_put(&m, "| %s | %s:", side[k], str(&m, v, "version"));
            size_t i;
            json_t *t;
            json_array_foreach(json_object_get(v, "targets"), i, t)
            {
                md_put(&m, " %s", md_esc(&m, json_string_value(t), 0));
            }
            md_put(&m, " |\n");
        }
        json_t *plan = json_object_get(audit, "plan");
        if (json_is_object(plan)) {
            md_put(&m, "| plan in force | %s:", str(&m, plan, "name"));
            size_t i;
            json_t *t;
            json_array_foreach(json_object_get(plan, "steps"), i, t)
            {
                md_put(&m, "%s %s", i ? "," : "", md_esc(&m, json_string_value(t), 0));
            }
            md_put(&m, "; on_failure %s, on_inconclusive %s |\n", str(&m, plan, "on_failure"),
                   str(&m, plan, "on_inconclusive"));
            json_t *an = json_object_get(plan, "analysis");
            if (json_is_object(an)) {
                md_put(&m, "| gates in force |");
                const char *k2;
                json_t *v2;
                json_object_foreach(an, k2, v2)
                {
                    if (json_is_integer(v2))
                        md_put(&m, " %s %lld", k2, (long long)json_integer_value(v2));
                    else
                        md_put(&m, " %s %g", k2, json_real_value(v2));
                }
                md_put(&m, " |\n");
            }
        }
        md_put(&m, "\n");
    }
    size_t i;
    json_t *ev;
    /* What was learned, apart from the timeline so that it is found at once. */
    int notes = 0;
    json_array_foreach(json_object_get(c, "events"), i, ev)
    {
        if (!is_note(ev))
            continue;
        if (notes++ == 0)
            md_put(&m, "## Lessons learned\n\n");
        md_put(&m, "- %s %s\n", str(&m, ev, "ts"), str(&m, ev, "message"));
    }
    if (notes > 0)
        md_put(&m, "\n");
    md_put(&m, "## Timeline\n\n| time (UTC) | event | message |\n|---|---|---|\n");
    json_array_foreach(json_object_get(c, "events"), i, ev)
    {
        md_put(&m, "| %s | %s | %s |\n", str(&m, ev, "ts"), str(&m, ev, "type"),
               str(&m, ev, "message"));
    }
    json_decref(c);
    md_free_owned(&m);
    return m.p;
}
