/* The text of `cutover stats` and `cutover verify` (cli_internal.h): the delivery figures as a
 * short table and the hash-chain check as one line per change. Pure rendering of the admin
 * API's JSON, no network. CLI process, main thread. */
#include "cli/cli_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/duration.h"
#include "core/text.h"

/* Writes s as a terminal may show it (control characters and bidi overrides escaped). */
static void put_safe(FILE *out, const char *s)
{
    char *e = text_term(s != NULL ? s : "-");
    fputs(e, out);
    free(e);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "-";
}

static long long jint(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* A duration in ms from JSON (an integer, or null: "-") into buf. */
static const char *ms_text(const json_t *v, char *buf, size_t n)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    uint64_t ms = (uint64_t)json_integer_value(v);
    /* Whole seconds past a minute: the milliseconds are noise there. */
    if (ms >= 60000)
        ms -= ms % 1000;
    return duration_format(ms, buf, n);
}

void cli_render_stats(FILE *out, const json_t *s)
{
    char a[32], b[32];
    const json_t *dep = json_object_get(s, "deploys");
    const json_t *ttr = json_object_get(s, "time_to_restore_ms");
    const json_t *lead = json_object_get(s, "time_to_full_traffic_ms");
    double days = json_number_value(json_object_get(s, "window_days"));
    uint64_t window = days > 0 ? (uint64_t)(days * 86400000.0 + 0.5) : 0;

    /* The window as asked for (7d, 24h), not to the millisecond. */
    window -= window % 1000;
    fputs("delivery figures for ", out);
    if (json_is_string(json_object_get(s, "service")))
        put_safe(out, jstr(s, "service"));
    else
        fputs("all services", out);
    fprintf(out, ", last %s (since %s)\n", duration_format(window, a, sizeof(a)), jstr(s, "since"));
    fprintf(out, "  %-22s %.2f a day (%lld deploy%s completed)\n", "deployment frequency",
            json_number_value(json_object_get(s, "deploys_per_day")), jint(dep, "completed"),
            jint(dep, "completed") == 1 ? "" : "s");
    const json_t *cfr = json_object_get(s, "change_failure_rate");
    if (json_is_number(cfr))
        fprintf(out, "  %-22s %.0f%% (%lld of %lld deploys failed or were rolled back)\n",
                "change failure rate", json_number_value(cfr) * 100.0, jint(s, "failures"),
                jint(dep, "ended"));
    else
        fprintf(out, "  %-22s - (no deploy ended)\n", "change failure rate");
    fprintf(out, "  %-22s median %s, worst %s (%lld restore%s", "time to restore",
            ms_text(json_object_get(ttr, "median"), a, sizeof(a)),
            ms_text(json_object_get(ttr, "worst"), b, sizeof(b)), jint(ttr, "count"),
            jint(ttr, "count") == 1 ? "" : "s");
    if (jint(ttr, "open") > 0)
        fprintf(out, "; %lld service%s still down", jint(ttr, "open"),
                jint(ttr, "open") == 1 ? "" : "s");
    fputs(")\n", out);
    fprintf(out, "  %-22s median %s, worst %s (%lld deploy%s)\n", "time to full traffic",
            ms_text(json_object_get(lead, "median"), a, sizeof(a)),
            ms_text(json_object_get(lead, "worst"), b, sizeof(b)), jint(lead, "count"),
            jint(lead, "count") == 1 ? "" : "s");
}

/* One change's line; returns 1 when its chain does not match. */
static int verify_line(FILE *out, const json_t *ch, const char *since, int quiet_when_intact)
{
    const json_t *bad = json_object_get(ch, "first_bad");
    long long events = jint(ch, "events"), chained = jint(ch, "chained");
    long long unchained = jint(ch, "unchained");

    if (json_is_object(bad)) {
        fprintf(out, "change %lld: ", jint(ch, "change"));
        if (json_is_integer(json_object_get(bad, "id"))) {
            fprintf(out, "event %lld (", jint(bad, "id"));
            put_safe(out, jstr(bad, "type"));
            fprintf(out, ", %s) ", jstr(bad, "ts"));
        }
        fputs("does not match the chain: ", out);
        put_safe(out, jstr(bad, "why"));
        fputc('\n', out);
        return 1;
    }
    if (quiet_when_intact && unchained == 0)
        return 0;
    fprintf(out, "change %lld: %lld event%s, ", jint(ch, "change"), events, events == 1 ? "" : "s");
    if (unchained > 0 && chained == 0)
        fprintf(out, "not chained (recorded before %s, when this store began chaining)\n", since);
    else if (unchained > 0)
        fprintf(out, "chain intact (%lld recorded before %s, not chained)\n", unchained, since);
    else
        fputs("chain intact\n", out);
    return 0;
}

int cli_render_verify(FILE *out, const json_t *v)
{
    const char *since = jstr(v, "chained_since");
    const json_t *list = json_object_get(v, "changes");

    if (!json_is_array(list))
        return verify_line(out, v, since, 0) ? CLI_EXIT_FAILED : CLI_EXIT_OK;
    size_t i, broken = 0;
    json_t *ch;
    json_array_foreach(list, i, ch)
    {
        broken += (size_t)verify_line(out, ch, since, 1);
    }
    long long events = jint(v, "events"), unchained = jint(v, "unchained");
    size_t n = json_array_size(list);
    if (broken > 0) {
        fprintf(out, "%zu of %zu change%s do%s not match the chain\n", broken, n, n == 1 ? "" : "s",
                broken == 1 ? "es" : "");
        return CLI_EXIT_FAILED;
    }
    fprintf(out, "%zu change%s, %lld event%s, chain intact", n, n == 1 ? "" : "s", events,
            events == 1 ? "" : "s");
    if (unchained > 0)
        fprintf(out, " (%lld recorded before %s, not chained)", unchained, since);
    fputc('\n', out);
    return CLI_EXIT_OK;
}
