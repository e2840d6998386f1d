/* Rendering the admin API's answers for a terminal: status, history, changes, the plan
 * preview, reports and the checked config; free text is escaped (core/text). CLI process. */
#include "cli/cli.h"
#include "cli/cli_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/text.h"
#include "core/xmalloc.h"

const char *cli_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *cli_jstr_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = cli_jstr(o, key);
    return s != NULL ? s : dflt;
}

/* Writes s as core/text shows free text on a terminal: control characters, C1 controls and bidi
 * overrides as escapes (\n, \x1b, \u202e), so a newline cannot start a forged line and an
 * escape sequence cannot reach the terminal; pads to width. */
void cli_put_clean(FILE *out, const char *s, int width)
{
    char *e = text_term(s != NULL ? s : "");
    int n = (int)strlen(e);

    fputs(e, out);
    free(e);
    for (; n < width; n++)
        fputc(' ', out);
}

/* The width cli_put_clean gives s. */
static int cli_clean_len(const char *s)
{
    char *e = text_term(s != NULL ? s : "");
    int n = (int)strlen(e);
    free(e);
    return n;
}

/* "2026-11-23T07:00:00.000Z" -> "2026-11-23 07:00:00"; other shapes unchanged. */
static void cli_short_time(const char *ts, char *buf, size_t n)
{
    if (ts == NULL) {
        snprintf(buf, n, "-");
        return;
    }
    if (strlen(ts) >= 19 && ts[10] == 'T') {
        snprintf(buf, n, "%.10s %.8s", ts, ts + 11);
        return;
    }
    snprintf(buf, n, "%s", ts);
}

/* --- rendering ------------------------------------------------------------------------------- */

static void cli_render_version(FILE *out, const char *label, const json_t *ver)
{
    const json_t *targets;
    size_t i;
    json_t *t;

    fprintf(out, "  %-9s ", label);
    if (!json_is_object(ver)) {
        fputs("(none)\n", out);
        return;
    }
    cli_put_clean(out, cli_jstr_or(ver, "name", "?"), 0);
    fputc('\n', out);
    targets = json_object_get(ver, "targets");
    json_array_foreach(targets, i, t)
    {
        const char *addr = json_is_string(t) ? json_string_value(t) : cli_jstr(t, "address");
        const char *state = cli_jstr(t, "state");
        if (state == NULL && json_is_boolean(json_object_get(t, "healthy")))
            state = json_is_true(json_object_get(t, "healthy")) ? "healthy" : "unhealthy";
        fputs("            ", out);
        cli_put_clean(out, addr ? addr : "?", 22);
        fprintf(out, " %s\n", state ? state : "");
    }
}

/* "3: deploy v1 -> v2, running" with what is known. */
static void cli_render_change_line(FILE *out, const json_t *ch)
{
    const json_t *id = json_object_get(ch, "id");

    if (json_is_integer(id))
        fprintf(out, "%" JSON_INTEGER_FORMAT ": ", json_integer_value(id));
    cli_put_clean(out, cli_jstr_or(ch, "kind", "change"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(ch, "from", "(none)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(ch, "to", "?"), 0);
    fputs(", ", out);
    cli_put_clean(out, cli_jstr_or(ch, "state", "?"), 0);
}

/* The plan's progress: step, split, time left, why it holds, the last analysis verdict. */
static void cli_render_progress(FILE *out, const json_t *p)
{
    if (!json_is_object(p))
        return;
    fprintf(out, "  %-9s ", "plan:");
    cli_put_clean(out, cli_jstr_or(p, "plan", "?"), 0);
    fprintf(out, ", step %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT " (",
            json_integer_value(json_object_get(p, "step")),
            json_integer_value(json_object_get(p, "steps")));
    cli_put_clean(out, cli_jstr_or(p, "step_description", "?"), 0);
    fputs("), ", out);
    cli_put_clean(out, cli_jstr_or(p, "state", "?"), 0);
    const json_t *left = json_object_get(p, "step_remaining_ms");
    if (json_is_integer(left))
        fprintf(out, ", %.1fs left", (double)json_integer_value(left) / 1000.0);
    fputc('\n', out);
    fprintf(out, "  %-9s %" JSON_INTEGER_FORMAT "%% of traffic to the new version%s\n",
            "split:", json_integer_value(json_object_get(p, "weight")),
            json_is_true(json_object_get(p, "pilot")) ? ", plus the pilot cohort" : "");
    const json_t *bl = json_object_get(p, "baseline");
    if (json_is_object(bl)) {
        /* "baseline: 25% to fresh instances of v1 (2, 2 healthy), compared with the new" */
        size_t healthy = 0, i;
        json_t *t;
        json_array_foreach(json_object_get(bl, "targets"), i, t)
        {
            healthy += json_is_true(json_object_get(t, "healthy"));
        }
        fprintf(out, "  %-9s %" JSON_INTEGER_FORMAT "%% to fresh instances of ",
                "baseline:", json_integer_value(json_object_get(bl, "share_percent")));
        cli_put_clean(out, cli_jstr_or(bl, "name", "?"), 0);
        fprintf(out, " (%zu, %zu healthy), what the new version's p99 is compared with\n",
                json_array_size(json_object_get(bl, "targets")), healthy);
    }
    if (cli_jstr(p, "hold_reason") != NULL) {
        fprintf(out, "  %-9s ", "holding:");
        cli_put_clean(out, cli_jstr(p, "hold_reason"), 0);
        fputc('\n', out);
    }
    const json_t *ap = json_object_get(p, "approvals");
    if (json_is_array(ap) && json_array_size(ap) > 0) {
        size_t i;
        json_t *v;
        fprintf(out, "  %-9s", "approved:");
        json_array_foreach(ap, i, v)
        {
            fputc(' ', out);
            cli_put_clean(out, json_string_value(v) ? json_string_value(v) : "?", 0);
        }
        fputc('\n', out);
    }
    const json_t *la = json_object_get(p, "last_analysis");
    if (json_is_object(la)) {
        fprintf(out, "  %-9s ", "analysis:");
        cli_put_clean(out, cli_jstr_or(la, "result", "?"), 0);
        fputs(": ", out);
        cli_put_clean(out, cli_jstr_or(la, "detail", ""), 0);
        fputc('\n', out);
    }
}

/* A rolling replacement: where the batches are ("replacing, batch 2: 1 of 3 new healthy"). */
static void cli_render_rolling(FILE *out, const json_t *ro)
{
    if (!json_is_object(ro))
        return;
    fprintf(out, "  %-9s ", "rolling:");
    cli_put_clean(out, cli_jstr_or(ro, "state", "?"), 0);
    fprintf(out,
            ", batch %" JSON_INTEGER_FORMAT ": %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
            " new healthy (goal %" JSON_INTEGER_FORMAT "), %" JSON_INTEGER_FORMAT
            " old in rotation (max_surge %" JSON_INTEGER_FORMAT
            ", max_unavailable %" JSON_INTEGER_FORMAT ")\n",
            json_integer_value(json_object_get(ro, "batch")),
            json_integer_value(json_object_get(ro, "new_healthy")),
            json_integer_value(json_object_get(ro, "instances")),
            json_integer_value(json_object_get(ro, "goal")),
            json_integer_value(json_object_get(ro, "old_in_rotation")),
            json_integer_value(json_object_get(ro, "max_surge")),
            json_integer_value(json_object_get(ro, "max_unavailable")));
}

/* "  LABEL:    TEXT TAIL", TEXT escaped for the terminal: a status line of a service. */
static void render_line(FILE *out, const char *label, const char *text, const char *tail)
{
    fprintf(out, "  %-9s ", label);
    cli_put_clean(out, text, 0);
    fputs(tail, out);
    fputc('\n', out);
}

/* The end of a change the daemon could not save to its store yet (it retries): the one line an
 * operator needs to see why the service refuses deploys. */
static void cli_render_unsaved(FILE *out, const char *label, const json_t *u)
{
    if (!json_is_object(u))
        return;
    render_line(out, label, cli_jstr_or(u, "message", "not saved to the store yet"), "");
}

/* Why the daemon takes no change at all (its store is lost or corrupt), when it says so. */
static void cli_render_store_problem(FILE *out, const json_t *svc)
{
    const char *why = cli_jstr(svc, "store_problem");
    if (why == NULL)
        return;
    render_line(out, "store:", why, "; deploys and rollbacks are refused");
}

/* Why no version of the service can serve (its live version failed and nothing took over). */
static void cli_render_down(FILE *out, const json_t *svc)
{
    const char *why = cli_jstr(svc, "down");
    if (why == NULL)
        return;
    render_line(out, "DOWN:", why, "");
}

/* "held:" and "maintenance:" lines while the service is held or in maintenance. */
static void cli_render_mode(FILE *out, const json_t *svc)
{
    const json_t *h = json_object_get(svc, "hold"), *m = json_object_get(svc, "maintenance");
    char t[32], d[24];
    if (json_is_object(h)) {
        const json_t *max = json_object_get(h, "max_ms"), *ch = json_object_get(h, "change");
        cli_short_time(cli_jstr(h, "since"), t, sizeof(t));
        fprintf(out, "  %-9s since %s, each request waits at most %s", "HELD:", t,
                duration_format(json_is_integer(max) ? (uint64_t)json_integer_value(max) : 0, d,
                                sizeof(d)));
        if (json_is_integer(ch))
            fprintf(out, " (deploy --hold, change %" JSON_INTEGER_FORMAT ")",
                    json_integer_value(ch));
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr_or(h, "actor", "?"), 0);
        fputs("); cutover release ends it\n", out);
    }
    if (json_is_object(m)) {
        cli_short_time(cli_jstr(m, "since"), t, sizeof(t));
        fprintf(out, "  %-9s since %s, every request answered 503", "MAINTENANCE:", t);
        if (cli_jstr(m, "message") != NULL) {
            fputs(": \"", out);
            cli_put_clean(out, cli_jstr(m, "message"), 0);
            fputc('"', out);
        }
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr_or(m, "actor", "?"), 0);
        fputs(")\n", out);
    }
}

/* A deploy that waits for its time (deploy --at). */
static void cli_render_scheduled(FILE *out, const json_t *svc)
{
    const json_t *q = json_object_get(svc, "scheduled");
    if (!json_is_object(q))
        return;
    fprintf(out, "  %-9s change %lld: deploy ",
            "scheduled:", (long long)json_integer_value(json_object_get(q, "id")));
    cli_put_clean(out, cli_jstr_or(q, "version", "?"), 0);
    fputs(" at ", out);
    cli_put_clean(out, cli_jstr_or(q, "at", "?"), 0);
    if (cli_jstr(q, "plan") != NULL) {
        fputs(" with plan ", out);
        cli_put_clean(out, cli_jstr(q, "plan"), 0);
    }
    fputs(" (by ", out);
    cli_put_clean(out, cli_jstr_or(q, "actor", "?"), 0);
    fputs("; cutover abort cancels it)\n", out);
}

void cli_render_service(FILE *out, const json_t *svc)
{
    const json_t *ch = json_object_get(svc, "change");

    cli_put_clean(out, cli_jstr_or(svc, "name", "?"), 0);
    fprintf(out, " (%s, listen ", cli_jstr_or(svc, "protocol", "?"));
    cli_put_clean(out, cli_jstr_or(svc, "listen", "?"), 0);
    fputs(")\n", out);
    cli_render_version(out, "live:", json_object_get(svc, "live"));
    cli_render_version(out, "previous:", json_object_get(svc, "previous"));
    cli_render_down(out, svc);
    cli_render_mode(out, svc);
    cli_render_scheduled(out, svc);
    fprintf(out, "  %-9s ", "change:");
    if (!json_is_object(ch)) {
        fputs("none in progress\n", out);
        cli_render_rolling(out, json_object_get(svc, "rolling"));
        cli_render_unsaved(out, "store:", json_object_get(svc, "unsaved"));
        cli_render_store_problem(out, svc);
        return;
    }
    cli_render_change_line(out, ch);
    if (cli_jstr(ch, "actor") != NULL) {
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr(ch, "actor"), 0);
        fputc(')', out);
    }
    fputc('\n', out);
    if (cli_jstr(ch, "message") != NULL) {
        fputs("            ", out);
        cli_put_clean(out, cli_jstr(ch, "message"), 0);
        fputc('\n', out);
    }
    cli_render_progress(out, json_object_get(ch, "progress"));
    cli_render_rolling(out, json_object_get(svc, "rolling"));
    cli_render_unsaved(out, "store:", json_object_get(svc, "unsaved"));
    cli_render_store_problem(out, svc);
}

void cli_render_status(FILE *out, const json_t *root)
{
    const json_t *list = json_object_get(root, "services");
    size_t i;
    json_t *svc;

    if (!json_is_array(list)) {
        cli_render_service(out, root);
        return;
    }
    if (json_array_size(list) == 0) {
        fputs("no services configured\n", out);
        return;
    }
    json_array_foreach(list, i, svc)
    {
        if (i > 0)
            fputc('\n', out);
        cli_render_service(out, svc);
    }
}

void cli_render_change(FILE *out, const json_t *change)
{
    fputs("change ", out);
    const json_t *id = json_object_get(change, "id");
    if (json_is_integer(id))
        fprintf(out, "%" JSON_INTEGER_FORMAT ": ", json_integer_value(id));
    cli_put_clean(out, cli_jstr_or(change, "kind", "change"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(change, "service", "?"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(change, "from", "(none)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(change, "to", "?"), 0);
    fputs(": ", out);
    cli_put_clean(out, cli_jstr_or(change, "state", "?"), 0);
    fputc('\n', out);
    if (cli_jstr(change, "message") != NULL) {
        fputs("  ", out);
        cli_put_clean(out, cli_jstr(change, "message"), 0);
        fputc('\n', out);
    }
    const json_t *u = json_object_get(change, "unsaved");
    if (json_is_object(u)) {
        fputs("  ", out);
        cli_put_clean(out, cli_jstr_or(u, "message", "not saved to the store yet"), 0);
        fputc('\n', out);
    }
}

enum {
    CLI_COL_ID,
    CLI_COL_TIME,
    CLI_COL_SERVICE,
    CLI_COL_KIND,
    CLI_COL_FROMTO,
    CLI_COL_STATE,
    CLI_COL_ACTOR,
    CLI_COL_MESSAGE,
    CLI_NCOLS
};

/* Fills the cells of one history row; cell strings live in bufs or in the change. An end the
 * daemon has not saved yet shows as "completed (unsaved)". */
static void cli_history_cells(const json_t *ch, const char *cells[CLI_NCOLS], char *idbuf,
                              size_t idlen, char *tbuf, size_t tlen, char *ftbuf, size_t ftlen,
                              char *stbuf, size_t stlen)
{
    const json_t *id = json_object_get(ch, "id");

    if (json_is_integer(id))
        snprintf(idbuf, idlen, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    else
        snprintf(idbuf, idlen, "?");
    cli_short_time(cli_jstr(ch, "created"), tbuf, tlen);
    snprintf(ftbuf, ftlen, "%s -> %s", cli_jstr_or(ch, "from", "-"), cli_jstr_or(ch, "to", "-"));
    cells[CLI_COL_ID] = idbuf;
    cells[CLI_COL_TIME] = tbuf;
    cells[CLI_COL_SERVICE] = cli_jstr_or(ch, "service", "-");
    cells[CLI_COL_KIND] = cli_jstr_or(ch, "kind", "-");
    cells[CLI_COL_FROMTO] = ftbuf;
    cells[CLI_COL_STATE] = cli_jstr_or(ch, "state", "-");
    if (json_is_object(json_object_get(ch, "unsaved"))) {
        snprintf(stbuf, stlen, "%s (unsaved)", cells[CLI_COL_STATE]);
        cells[CLI_COL_STATE] = stbuf;
    }
    cells[CLI_COL_ACTOR] = cli_jstr_or(ch, "actor", "-");
    cells[CLI_COL_MESSAGE] = cli_jstr_or(ch, "message", "");
}

void cli_render_audit(FILE *out, const json_t *root)
{
    const json_t *list = json_object_get(root, "audit"), *e;
    size_t i;
    if (json_array_size(list) == 0) {
        fputs("no audit lines recorded\n", out);
        return;
    }
    json_array_foreach(list, i, e)
    {
        char t[64], st[16];
        cli_short_time(cli_jstr(e, "time"), t, sizeof(t));
        snprintf(st, sizeof(st), "%lld",
                 (long long)json_integer_value(json_object_get(e, "status")));
        const char *cells[] = {t,
                               cli_jstr_or(e, "actor", "-"),
                               cli_jstr_or(e, "channel", "-"),
                               cli_jstr_or(e, "peer", "-"),
                               cli_jstr_or(e, "method", "-"),
                               cli_jstr_or(e, "path", "-"),
                               st,
                               cli_jstr_or(e, "outcome", "")};
        for (size_t c = 0; c < sizeof(cells) / sizeof(cells[0]); c++) {
            if (c > 0)
                fputs(c == 3 ? " [" : c == 4 ? "] " : " ", out);
            cli_put_clean(out, cells[c], 0);
        }
        fputc('\n', out);
    }
}

void cli_render_history(FILE *out, const json_t *root)
{
    static const char *const heads[CLI_NCOLS] = {"ID",         "TIME (UTC)", "SERVICE", "KIND",
                                                 "FROM -> TO", "STATE",      "ACTOR",   "MESSAGE"};
    const json_t *list = json_object_get(root, "changes");
    int width[CLI_NCOLS];
    const char *cells[CLI_NCOLS];
    char idbuf[32], tbuf[64], ftbuf[160], stbuf[64];
    size_t i;
    json_t *ch;

    if (json_array_size(list) == 0) {
        fputs("no changes recorded\n", out);
        return;
    }
    for (int c = 0; c < CLI_NCOLS; c++)
        width[c] = (int)strlen(heads[c]);
    json_array_foreach(list, i, ch)
    {
        cli_history_cells(ch, cells, idbuf, sizeof(idbuf), tbuf, sizeof(tbuf), ftbuf, sizeof(ftbuf),
                          stbuf, sizeof(stbuf));
        for (int c = 0; c < CLI_NCOLS - 1; c++) {
            int n = cli_clean_len(cells[c]);
            if (n > width[c])
                width[c] = n;
        }
    }
    for (int c = 0; c < CLI_NCOLS; c++) {
        cli_put_clean(out, heads[c], c == CLI_NCOLS - 1 ? 0 : width[c]);
        fputs(c == CLI_NCOLS - 1 ? "\n" : "  ", out);
    }
    json_array_foreach(list, i, ch)
    {
        cli_history_cells(ch, cells, idbuf, sizeof(idbuf), tbuf, sizeof(tbuf), ftbuf, sizeof(ftbuf),
                          stbuf, sizeof(stbuf));
        for (int c = 0; c < CLI_NCOLS; c++) {
            cli_put_clean(out, cells[c], c == CLI_NCOLS - 1 ? 0 : width[c]);
            fputs(c == CLI_NCOLS - 1 ? "\n" : "  ", out);
        }
    }
}

/* Writes s as one markdown table cell (core/text): pipes, HTML and Markdown escaped, line
 * breaks and controls as escapes, so the text can neither end the cell nor add a row. */
static void cli_md_cell(FILE *out, const char *s)
{
    char *e = text_md(s != NULL ? s : "");
    fputs(e, out);
    free(e);
}

static void cli_md_row(FILE *out, const char *key, const char *val)
{
    fprintf(out, "| %s | ", key);
    cli_md_cell(out, val ? val : "-");
    fputs(" |\n", out);
}

/* A number of seconds as a duration: "3m5s", "0s". */
static const char *cli_secs(const json_t *o, const char *key, char *buf, size_t n)
{
    const json_t *v = json_object_get(o, key);
    double s = json_is_number(v) ? json_number_value(v) : 0;
    return duration_format(s > 0 ? (uint64_t)(s * 1000 + 0.5) : 0, buf, n);
}

void cli_render_preview(FILE *out, const json_t *p, int md)
{
    const json_t *t = json_object_get(p, "time_to_full_s"), *h = json_object_get(p, "health");
    const json_t *after = json_object_get(p, "after"), *steps = json_object_get(p, "steps");
    char d1[32], d2[32], d3[32], d4[32];
    size_t i;
    json_t *st;

    fputs(md ? "# Plan: " : "plan for ", out);
    cli_put_clean(out, cli_jstr_or(p, "service", "?"), 0);
    fputs(": ", out);
    cli_put_clean(out, cli_jstr_or(p, "from", "(nothing live)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(p, "to", "?"), 0);
    fputs(" with plan ", out);
    cli_put_clean(out, cli_jstr_or(p, "plan", "(none: instant switch)"), 0);
    fputs(", owner ", out);
    cli_put_clean(out, cli_jstr_or(p, "owner", "(none named)"), 0);
    fputs(md ? "\n\n" : "\n", out);
    fprintf(out, "%shealth checks: %s at best, %s expected, %s at worst (deploy_timeout)\n",
            md ? "- " : "", cli_secs(h, "fastest", d1, sizeof(d1)),
            cli_secs(h, "expected", d2, sizeof(d2)), cli_secs(h, "worst", d3, sizeof(d3)));
    if (md)
        fputs("\n| # | step | traffic | owner | told | time (best/expected/worst) | Plan B | "
              "needs |\n|---|---|---|---|---|---|---|---|\n",
              out);
    json_array_foreach(steps, i, st)
    {
        const json_t *ts = json_object_get(st, "time_s"), *n = json_object_get(st, "notify");
        size_t j;
        json_t *who;
        fprintf(out, md ? "| %zu | " : "%2zu. ", i + 1);
        cli_put_clean(out, cli_jstr_or(st, "what", "?"), md ? 0 : 22);
        fprintf(out, md ? " | %lld%%%s | " : "  traffic %3lld%%%s  owner ",
                (long long)json_integer_value(json_object_get(st, "traffic")),
                json_is_true(json_object_get(st, "cohort")) ? " + cohort" : "");
        cli_put_clean(out, cli_jstr_or(st, "owner", "-"), 0);
        fputs(md ? " | " : "  told ", out);
        json_array_foreach(n, j, who)
        {
            fputs(j ? ", " : "", out);
            cli_put_clean(out, json_string_value(who), 0);
        }
        if (json_array_size(n) == 0)
            fputs("nobody", out);
        fprintf(out, md ? " | %s / %s / %s%s | " : "\n      time %s / %s / %s%s\n      Plan B: ",
                cli_secs(ts, "fastest", d1, sizeof(d1)), cli_secs(ts, "expected", d2, sizeof(d2)),
                cli_secs(ts, "worst", d3, sizeof(d3)),
                json_is_true(json_object_get(st, "waits_for_person")) ? " + a person" : "");
        cli_put_clean(out, cli_jstr_or(st, "plan_b", "-"), 0);
        fputs(md ? " | " : "\n      needs: ", out);
        cli_put_clean(out, cli_jstr_or(st, "needs", "-"), 0);
        if (!md) {
            fputs("\n      ", out);
            cli_put_clean(out, cli_jstr_or(st, "note", ""), 0);
        }
        fputs(md ? " |\n" : "\n", out);
    }
    fputs(md ? "\n- after the plan (100%): " : "after the plan (100%): ", out);
    cli_put_clean(out, cli_jstr_or(after, "plan_b", "-"), 0);
    fputs("; needs ", out);
    cli_put_clean(out, cli_jstr_or(after, "needs", "-"), 0);
    fprintf(out,
            "\n%stime to full traffic: %s at best, %s expected, %s at worst\n"
            "%sworst time to roll back: %s\n",
            md ? "- " : "", cli_secs(t, "fastest", d1, sizeof(d1)),
            cli_secs(t, "expected", d2, sizeof(d2)), cli_secs(t, "worst", d3, sizeof(d3)),
            md ? "- " : "", cli_secs(p, "time_to_rollback_worst_s", d4, sizeof(d4)));
    const json_t *fz = json_object_get(p, "freeze_windows");
    fprintf(out, "%sfreeze windows on the way:", md ? "- " : "");
    json_array_foreach(fz, i, st)
    {
        fputs(i ? ";" : "", out);
        fputc(' ', out);
        cli_put_clean(out, cli_jstr_or(st, "name", "?"), 0);
        fprintf(out, " %s to %s%s", cli_jstr_or(st, "from", "?"), cli_jstr_or(st, "to", "?"),
                json_is_true(json_object_get(st, "in_force_now"))
                    ? " (in force now: a deploy is refused unless --emergency)"
                    : "");
    }
    fputs(json_array_size(fz) == 0 ? " none\n" : "\n", out);
    const json_t *rate = json_object_get(p, "request_rate");
    fprintf(out, "%srequest rate: ", md ? "- " : "");
    if (json_is_number(json_object_get(rate, "per_s")))
        fprintf(out, "%.1f/s (", json_number_value(json_object_get(rate, "per_s")));
    else
        fputs("(", out);
    cli_put_clean(out, cli_jstr_or(rate, "source", "-"), 0);
    fputs(")\n", out);
}

void cli_render_report_md(FILE *out, const json_t *change)
{
    const json_t *id = json_object_get(change, "id");
    const json_t *events = json_object_get(change, "events");
    char idbuf[32];
    size_t i;
    json_t *ev;

    if (json_is_integer(id))
        snprintf(idbuf, sizeof(idbuf), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    else
        snprintf(idbuf, sizeof(idbuf), "?");
    fprintf(out, "# Change %s: %s of ", idbuf, cli_jstr_or(change, "kind", "change"));
    cli_md_cell(out, cli_jstr_or(change, "service", "?"));
    fputs(", ", out);
    cli_md_cell(out, cli_jstr_or(change, "from", "(none)"));
    fputs(" -> ", out);
    cli_md_cell(out, cli_jstr_or(change, "to", "?"));
    fputs("\n\n| field | value |\n|---|---|\n", out);
    cli_md_row(out, "service", cli_jstr(change, "service"));
    cli_md_row(out, "kind", cli_jstr(change, "kind"));
    cli_md_row(out, "from", cli_jstr_or(change, "from", "(none)"));
    cli_md_row(out, "to", cli_jstr(change, "to"));
    cli_md_row(out, "plan", cli_jstr_or(change, "plan", "(instant switch)"));
    cli_md_row(out, "state", cli_jstr(change, "state"));
    cli_md_row(out, "actor", cli_jstr(change, "actor"));
    cli_md_row(out, "reason", cli_jstr(change, "reason"));
    cli_md_row(out, "created", cli_jstr(change, "created"));
    cli_md_row(out, "updated", cli_jstr(change, "updated"));
    cli_md_row(out, "ended", cli_jstr_or(change, "ended", "(still running)"));
    if (cli_jstr(change, "message") != NULL) {
        fputs("\n**Outcome:** ", out);
        cli_md_cell(out, cli_jstr(change, "message"));
        fputc('\n', out);
    }
    fputs("\n## Timeline\n\n", out);
    if (json_array_size(events) == 0) {
        fputs("No events recorded.\n", out);
        return;
    }
    fputs("| time (UTC) | event | message |\n|---|---|---|\n", out);
    json_array_foreach(events, i, ev)
    {
        fputs("| ", out);
        cli_md_cell(out, cli_jstr_or(ev, "ts", "-"));
        fputs(" | ", out);
        cli_md_cell(out, cli_jstr_or(ev, "type", "-"));
        fputs(" | ", out);
        cli_md_cell(out, cli_jstr_or(ev, "message", ""));
        fputs(" |\n", out);
    }
}

/* Prints j as indented JSON on stdout. */
void cli_print_json(const json_t *j)
{
    /* ASCII only: bidi overrides and C1 controls in free text print as \u escapes. */
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
}

static void cli_render_plan(FILE *out, const struct config_plan *p)
{
    char d2[32];

    fprintf(out, "plan %s (on failure: %s)%s%s\n", p->name,
            p->on_failure == CONFIG_ON_PAUSE     ? "pause"
            : p->on_failure == CONFIG_ON_PROCEED ? "proceed"
                                                 : "rollback",
            p->owner ? ", owner " : "", p->owner ? p->owner : "");
    for (size_t i = 0; i < p->nsteps; i++) {
        const struct config_step *s = &p->steps[i];
        fprintf(out, "  %zu. ", i + 1);
        if (s->owner != NULL)
            fprintf(out, "(owner %s) ", s->owner);
        char desc[512];
        cli_put_clean(out, config_step_describe(s, desc, sizeof(desc)), 0);
        fputc('\n', out);
    }
    if (p->analysis.enabled) {
        fprintf(out, "  analysis: every %s, at least %llu requests",
                duration_format(p->analysis.interval_ms, d2, sizeof(d2)),
                (unsigned long long)p->analysis.min_requests);
        if (p->analysis.max_error_rate >= 0)
            fprintf(out, ", error rate <= %g%%", p->analysis.max_error_rate * 100);
        if (p->analysis.max_p99_latency_ratio >= 0)
            fprintf(out, ", p99 <= %gx %s", p->analysis.max_p99_latency_ratio,
                    p->analysis.baseline ? "a fresh baseline of the live version"
                                         : "the live version");
        if (p->analysis.max_p99_latency_ms >= 0)
            fprintf(out, ", p99 <= %gms", p->analysis.max_p99_latency_ms);
        fputc('\n', out);
    }
}

void cli_render_config(FILE *out, const struct config *cfg)
{
    char d1[32], d2[32];

    fprintf(out, "%s: valid (%zu service%s, %zu plan%s)\n", cfg->path, cfg->nservices,
            cfg->nservices == 1 ? "" : "s", cfg->nplans, cfg->nplans == 1 ? "" : "s");
    fprintf(out, "state_dir %s (admin socket %s/cutover.sock), %d worker%s", cfg->state_dir,
            cfg->state_dir, cfg->workers, cfg->workers == 1 ? "" : "s");
    if (cfg->io_coalesce_us > 0)
        fprintf(out, " (napping %d us when busy)\n", cfg->io_coalesce_us);
    else
        fprintf(out, " (io_coalesce off)\n");
    if (cfg->admin_listen != NULL)
        fprintf(out, "admin API also on %s (%zu token%s from %s)\n", cfg->admin_listen,
                cfg->ntokens, cfg->ntokens == 1 ? "" : "s",
                cfg->admin_tokens_file ? cfg->admin_tokens_file : "-");
    if (cfg->admin_tls.ncerts > 0)
        fprintf(out, "admin API over TLS with %s\n", cfg->admin_tls.certs[0].cert);
    for (size_t i = 0; i < cfg->nfreezes; i++) {
        const struct config_freeze *f = &cfg->freezes[i];
        char t1[32], t2[32];
        if (f->recurring)
            fprintf(out, "freeze %s: cron \"%s\" (UTC) for %s (", f->name, f->cron,
                    duration_format(f->duration_ms, t1, sizeof(t1)));
        else
            fprintf(out, "freeze %s: %s to %s (", f->name, freeze_time_format(f->from, t1, 32),
                    freeze_time_format(f->to, t2, 32));
        for (size_t j = 0; j < f->nservices; j++)
            fprintf(out, "%s%s", j ? ", " : "", f->services[j]);
        fputs(f->services ? ")\n" : "every service)\n", out);
    }
    for (size_t i = 0; i < cfg->nwebhooks; i++) {
        fprintf(out, "webhook %s (", cfg->webhooks[i].url);
        for (size_t j = 0; j < cfg->webhooks[i].nservices; j++)
            fprintf(out, "%s%s", j ? ", " : "", cfg->webhooks[i].services[j]);
        fputs(cfg->webhooks[i].services ? ")\n" : "every service)\n", out);
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *s = &cfg->services[i];
        fprintf(out, "\nservice %s\n", s->name);
        fprintf(out, "  listen:   %s (%s)\n", s->listen,
                s->protocol == CONFIG_PROTO_TCP ? "tcp"
                : s->tls.ncerts > 0             ? "https"
                                                : "http");
        for (size_t j = 0; j < s->tls.ncerts; j++)
            fprintf(out, "  tls:      %s%s\n", s->tls.certs[j].cert,
                    j == 0 && s->tls.ncerts > 1 ? " (default)" : "");
        if (s->preview_listen != NULL)
            fprintf(out, "  preview:  %s\n", s->preview_listen);
        if (s->routed) {
            fputs("  routes:  ", out);
            for (size_t j = 0; j < s->nhosts; j++)
                fprintf(out, " %s%s", s->hosts[j], s->path_prefix ? s->path_prefix : "");
            if (s->nhosts == 0 && s->path_prefix != NULL)
                fprintf(out, " (any host)%s", s->path_prefix);
            fputs(s->is_default ? " (default: what no other service takes)\n" : "\n", out);
        }
        fputs("  targets: ", out);
        for (size_t j = 0; j < s->ntargets; j++)
            fprintf(out, " %s", s->targets[j]);
        fputs(s->ntargets == 0 ? " (none)\n" : "\n", out);
        if (s->run.command != NULL) {
            fputs("  run:     ", out);
            for (char **a = s->run.command; *a != NULL; a++)
                fprintf(out, " %s", *a);
            fprintf(out, " (%d instance%s, ports %d-%d)\n", s->run.instances,
                    s->run.instances == 1 ? "" : "s", s->run.port_lo, s->run.port_hi);
            if (s->strategy.kind == CONFIG_STRATEGY_ROLLING)
                fprintf(out, "  strategy: rolling (max_surge %d, max_unavailable %d)\n",
                        s->strategy.max_surge, s->strategy.max_unavailable);
            else
                fputs("  strategy: blue_green\n", out);
        }
        if (s->protocol == CONFIG_PROTO_HTTP && s->health.path != NULL)
            fprintf(out, "  health:   GET %s every %s", s->health.path,
                    duration_format(s->health.interval_ms, d1, sizeof(d1)));
        else
            fprintf(out, "  health:   connect every %s",
                    duration_format(s->health.interval_ms, d1, sizeof(d1)));
        fprintf(out, ", timeout %s, healthy after %d, unhealthy after %d\n",
                duration_format(s->health.timeout_ms, d2, sizeof(d2)), s->health.healthy_threshold,
                s->health.unhealthy_threshold);
        fprintf(out, "  deploy:   timeout %s, drain %s\n",
                duration_format(s->deploy_timeout_ms, d1, sizeof(d1)),
                duration_format(s->drain_timeout_ms, d2, sizeof(d2)));
        if (s->sticky.kind == CONFIG_STICKY_SOURCE)
            fprintf(out, "  sticky:   source\n");
        else if (s->sticky.kind != CONFIG_STICKY_NONE)
            fprintf(out, "  sticky:   %s %s\n",
                    s->sticky.kind == CONFIG_STICKY_COOKIE ? "cookie" : "header", s->sticky.name);
        fprintf(out, "  plan:     %s\n", s->plan ? s->plan : "(none: instant switch)");
    }
    for (size_t i = 0; i < cfg->nplans; i++) {
        fputc('\n', out);
        cli_render_plan(out, &cfg->plans[i]);
    }
}
