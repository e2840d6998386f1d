/* What the change records teach (rollout.h "knowledge"): lessons-learned notes added to a
 * change, the delivery figures taken from the history (deployment frequency, change failure
 * rate, time to restore, time to full traffic), and the check of each change's hash chain.
 * Reads the store; writes only the note events. Control loop only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "core/xmalloc.h"
#include "rollout/rollout_int.h"

/* ---------------------------------------------------------------- notes ------------------- */

int rollout_note(struct rollout *r, int64_t id, const char *actor, const char *text, char *err,
                 size_t errlen)
{
    struct store_change c;
    const char *why = NULL;

    if (actor == NULL || !text_is_name(actor, strlen(actor))) {
        snprintf(err, errlen,
                 "actor: required, a name of 1 to %d characters from A-Z a-z 0-9 . _ -",
                 TEXT_NAME_MAX);
        return -EINVAL;
    }
    size_t len = text != NULL ? strlen(text) : 0;
    size_t blank = 0;
    while (blank < len && strchr(" \t\r\n", text[blank]) != NULL)
        blank++;
    if (blank == len) {
        snprintf(err, errlen, "text: the note is empty");
        return -EINVAL;
    }
    if (len > ROLLOUT_NOTE_MAX) {
        snprintf(err, errlen, "text: at most %d bytes, got %zu", ROLLOUT_NOTE_MAX, len);
        return -EINVAL;
    }
    size_t bad = text_find_nontext(text, len, &why);
    if (bad < len) {
        snprintf(err, errlen, "text: %s at byte %zu", why, bad);
        return -EINVAL;
    }
    if (store_change_get(r->st, id, &c) < 0) {
        snprintf(err, errlen, "no change %lld", (long long)id);
        return -ENOENT;
    }
    store_change_done(&c);
    const char *lost = store_guard_why(r->st);
    if (lost != NULL) {
        snprintf(err, errlen, "the note cannot be recorded: %s", lost);
        return -EROFS;
    }
    /* The actor is a name (no ':' in it), so "ACTOR: TEXT" reads back without ambiguity. */
    char *msg = xasprintf("%s: %s", actor, text);
    int rc = store_event_add(r->st, id, "note", msg);
    free(msg);
    if (rc < 0) {
        snprintf(err, errlen, "the note cannot be recorded: %s", store_errmsg(r->st));
        return rc == -ENOENT ? -ENOENT : -EIO;
    }
    return 0;
}

/* ---------------------------------------------------------------- the hash chain ---------- */

static json_t *chain_json(const struct store_chain *ch)
{
    json_t *bad = json_null();
    if (ch->broken)
        bad = json_pack("{s:o, s:s, s:o, s:s}", "id",
                        ch->bad_event ? json_integer(ch->bad_event) : json_null(), "type",
                        ch->bad_type, "ts", change_iso_time(ch->bad_ts_ms), "why", ch->why);
    return json_pack("{s:I, s:I, s:I, s:I, s:b, s:o}", "change", (json_int_t)ch->change_id,
                     "events", (json_int_t)ch->events, "chained", (json_int_t)ch->chained,
                     "unchained", (json_int_t)ch->unchained, "intact", !ch->broken, "first_bad",
                     bad);
}

json_t *rollout_verify_json(struct rollout *r, int64_t id, int *rc)
{
    int64_t since_ms = 0, mark = 0;
    struct store_chain ch;

    *rc = store_chain_mark(r->st, &since_ms, &mark);
    if (*rc < 0)
        return NULL;
    if (id > 0) {
        *rc = store_chain_verify(r->st, id, &ch);
        if (*rc < 0)
            return NULL;
        json_t *o = chain_json(&ch);
        json_object_set_new(o, "chained_since", change_iso_time(since_ms));
        return o;
    }
    int64_t *ids = NULL;
    size_t n = 0;
    *rc = store_change_ids(r->st, &ids, &n);
    if (*rc < 0)
        return NULL;
    json_t *a = json_array();
    json_int_t events = 0, unchained = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        *rc = store_chain_verify(r->st, ids[i], &ch);
        if (*rc < 0) {
            json_decref(a);
            free(ids);
            return NULL;
        }
        events += (json_int_t)ch.events;
        unchained += (json_int_t)ch.unchained;
        bad += ch.broken;
        json_array_append_new(a, chain_json(&ch));
    }
    free(ids);
    return json_pack("{s:o, s:I, s:I, s:I, s:b, s:o}", "changes", a, "events", events, "unchained",
                     unchained, "broken", bad, "intact", bad == 0, "chained_since",
                     change_iso_time(since_ms));
}

/* ---------------------------------------------------------------- delivery figures -------- */

/* The restores and lead times found so far, in ms. */
struct figures {
    int64_t *restore;
    size_t nrestore;
    int64_t *lead;
    size_t nlead;
    size_t open; /* services down (a live failure) that no later change restored yet */
};

static void push(int64_t **v, size_t *n, int64_t x)
{
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = x < 0 ? 0 : x;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* {"count", "median", "worst"} of v (sorted here); median and worst are null when v is empty.
 * An even count takes the mean of the two middle values as its median. */
static json_t *spread_json(int64_t *v, size_t n)
{
    if (n == 0)
        return json_pack("{s:I, s:n, s:n}", "count", (json_int_t)0, "median", "worst");
    qsort(v, n, sizeof(*v), cmp_i64);
    int64_t m = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return json_pack("{s:I, s:I, s:I}", "count", (json_int_t)n, "median", (json_int_t)m, "worst",
                     (json_int_t)v[n - 1]);
}

static int is(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* When a change that failed or was rolled back first said so: its first failure event, or its
 * end when it has none. */
static int64_t failure_start(const struct store_event *ev, size_t n, const struct store_change *c)
{
    for (size_t i = 0; i < n; i++)
        if (is(ev[i].type, "failed") || is(ev[i].type, "test_failed") ||
            is(ev[i].type, "rolled_back"))
            return ev[i].ts_ms;
    return c->ended_ms;
}

/* When a change began to move traffic: a scheduled change (deploy --at) at its "started"
 * event, any other at its creation. */
static int64_t change_start(const struct store_event *ev, size_t n, const struct store_change *c)
{
    for (size_t i = 0; i < n; i++)
        if (is(ev[i].type, "started"))
            return ev[i].ts_ms;
    return c->created_ms;
}

/* One service's walk through its changes, oldest first. */
struct walk {
    const char *service;
    ssize_t live_deploy;   /* index of the completed deploy whose version is live, or -1 */
    int64_t down_since_ms; /* a live failure not restored yet (0: none) */
};

json_t *rollout_stats_json(struct rollout *r, const char *service, int64_t since_ms, int64_t now_ms)
{
    struct store_change *v = NULL;
    size_t n = 0;
    if (store_change_list_since(r->st, service, since_ms, 0, &v, &n) < 0)
        return NULL;

    struct figures f = {0};
    struct walk *w = NULL;
    size_t nw = 0;
    char *failed = xcalloc(n ? n : 1, 1); /* deploys counted as failures */
    json_int_t completed = 0, dep_failed = 0, dep_rolled_back = 0, undone = 0, rollbacks = 0,
               automatic = 0;

    for (size_t i = 0; i < n; i++) {
        const struct store_change *c = &v[i];
        struct walk *sw = NULL;
        for (size_t k = 0; k < nw; k++)
            if (is(w[k].service, c->service))
                sw = &w[k];
        if (sw == NULL) {
            w = xrealloc(w, (nw + 1) * sizeof(*w));
            sw = &w[nw++];
            *sw = (struct walk){c->service, -1, 0};
        }
        struct store_event *ev = NULL;
        size_t nev = 0;
        if (store_event_list(r->st, c->id, &ev, &nev) < 0) {
            ev = NULL;
            nev = 0;
        }
        int deploy = is(c->kind, "deploy");
        if (!deploy)
            rollbacks++;
        if (!deploy && is(c->actor, "cutover"))
            automatic++;

        if (is(c->state, STORE_CHANGE_COMPLETED)) {
            int restored_down = sw->down_since_ms != 0;
            if (restored_down) {
                /* The next good state after a live failure: any change that completed. */
                push(&f.restore, &f.nrestore, c->ended_ms - sw->down_since_ms);
                sw->down_since_ms = 0;
            }
            if (deploy) {
                completed++;
                push(&f.lead, &f.nlead, c->ended_ms - change_start(ev, nev, c));
                sw->live_deploy = (ssize_t)i;
            } else {
                /* A rollback undoes the deploy that made its from-version live: that deploy
                 * failed in production, whether a person or cutover itself rolled it back. */
                ssize_t d = sw->live_deploy;
                if (d >= 0 && !failed[d] && is(v[d].to_version, c->from_version)) {
                    failed[d] = 1;
                    undone++;
                }
                if (!restored_down)
                    push(&f.restore, &f.nrestore, c->ended_ms - c->created_ms);
                sw->live_deploy = -1;
            }
        } else if (deploy &&
                   (is(c->state, STORE_CHANGE_FAILED) || is(c->state, STORE_CHANGE_ROLLED_BACK))) {
            failed[i] = 1;
            if (is(c->state, STORE_CHANGE_FAILED))
                dep_failed++;
            else
                dep_rolled_back++;
            if (c->ended_ms > 0)
                push(&f.restore, &f.nrestore, c->ended_ms - failure_start(ev, nev, c));
        }
        /* A live failure recorded on the change after it ended (no automatic rollback): the
         * service is down from then until its version serves again (service_up) or a later
         * change completes. */
        for (size_t k = 0; k < nev; k++) {
            if (is(ev[k].type, "service_up") && sw->down_since_ms != 0) {
                push(&f.restore, &f.nrestore, ev[k].ts_ms - sw->down_since_ms);
                sw->down_since_ms = 0;
            }
            if (!is(ev[k].type, "service_down") || sw->down_since_ms != 0)
                continue;
            sw->down_since_ms = ev[k].ts_ms;
            if (sw->live_deploy >= 0 && !failed[sw->live_deploy]) {
                failed[sw->live_deploy] = 1;
                undone++;
            }
        }
        store_event_list_free(ev, nev);
    }
    for (size_t k = 0; k < nw; k++)
        f.open += w[k].down_since_ms != 0;

    json_int_t ended = completed + dep_failed + dep_rolled_back;
    json_int_t failures = dep_failed + dep_rolled_back + undone;
    double days = (double)(now_ms - since_ms) / 86400000.0;
    json_t *o = json_object();
    json_object_set_new(o, "service", service ? json_string(service) : json_null());
    json_object_set_new(o, "since", change_iso_time(since_ms));
    json_object_set_new(o, "until", change_iso_time(now_ms));
    json_object_set_new(o, "window_days", json_real(days));
    json_object_set_new(o, "changes", json_integer((json_int_t)n));
    json_object_set_new(o, "deploys",
                        json_pack("{s:I, s:I, s:I, s:I, s:I}", "ended", ended, "completed",
                                  completed, "failed", dep_failed, "rolled_back", dep_rolled_back,
                                  "undone_later", undone));
    json_object_set_new(o, "rollbacks",
                        json_pack("{s:I, s:I}", "total", rollbacks, "automatic", automatic));
    json_object_set_new(o, "deploys_per_day",
                        json_real(days > 0 ? (double)completed / days : (double)completed));
    json_object_set_new(o, "failures", json_integer(failures));
    json_object_set_new(o, "change_failure_rate",
                        ended > 0 ? json_real((double)failures / (double)ended) : json_null());
    json_t *ttr = spread_json(f.restore, f.nrestore);
    json_object_set_new(ttr, "open", json_integer((json_int_t)f.open));
    json_object_set_new(o, "time_to_restore_ms", ttr);
    json_object_set_new(o, "time_to_full_traffic_ms", spread_json(f.lead, f.nlead));
    free(f.restore);
    free(f.lead);
    free(failed);
    free(w);
    store_change_list_free(v, n);
    return o;
}
