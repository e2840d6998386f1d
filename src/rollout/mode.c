/* Hold and maintenance of a service (see mode.h). The store is written first (the state, then
 * the action), so that a restart or a successor applies what the operator was told. Control loop
 * only. */
#include "rollout/mode.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/duration.h"
#include "core/log.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "proxy/hold.h" /* HOLD_MESSAGE_MAX: what the page can show */
#include "rollout/change.h"
#include "rollout/rollout_int.h"

/* Writes next as s's state and the action that led there; s keeps its state when the store
 * refuses (err says so). Takes over next's strings either way. */
static int commit(struct service *s, struct store_hold *next, const char *kind, const char *actor,
                  const char *detail, char *err, size_t errlen)
{
    struct store *st = s->r->st;
    /* No transaction of its own: a change's end may call this inside the engine's. */
    int rc = store_hold_set(st, s->cfg->name, next);
    if (rc < 0) {
        snprintf(err, errlen, "could not record the %s of %s: %s", kind, s->cfg->name,
                 store_errmsg(st));
        log_error("cannot record an action", "service", s->cfg->name, "action", kind, "error",
                  store_errmsg(st));
        store_hold_done(next);
        return -EIO;
    }
    if (store_action_add(st, s->cfg->name, kind, actor ? actor : "unknown", detail) < 0)
        log_error("cannot record an action (its state is recorded)", "service", s->cfg->name,
                  "action", kind, "error", store_errmsg(st));
    /* A change in progress tells its stakeholders (event stream, webhooks) too. */
    if (change_running(&s->ch)) {
        char msg[HOLD_MESSAGE_MAX + 512];
        snprintf(msg, sizeof(msg), "%s (by %s)", detail, actor ? actor : "unknown");
        (void)change_record_event(&s->ch, kind, msg);
    }
    store_hold_done(&s->mode);
    s->mode = *next;
    log_info("service action", "service", s->cfg->name, "action", kind, "actor", actor, "detail",
             detail);
    return 0;
}

/* A copy of s's state to change. */
static struct store_hold copy_of(const struct service *s)
{
    struct store_hold h = s->mode;
    h.hold_actor = xstrdup(s->mode.hold_actor);
    h.maintenance_message = xstrdup(s->mode.maintenance_message);
    h.maintenance_actor = xstrdup(s->mode.maintenance_actor);
    return h;
}

static int refuse_tcp(const struct service *s, const char *what, char *err, size_t errlen)
{
    if (s->cfg->protocol != CONFIG_PROTO_TCP)
        return 0;
    snprintf(err, errlen,
             "%s is a tcp service: only http services can be %s (a byte stream has no request "
             "to hold or answer)",
             s->cfg->name, what);
    return -EINVAL;
}

int mode_hold(struct service *s, uint64_t max_ms, const char *actor, int64_t change, char *err,
              size_t errlen)
{
    int rc = refuse_tcp(s, "held", err, errlen);
    if (rc < 0)
        return rc;
    if (max_ms == 0 || max_ms > MODE_HOLD_MAX_MS) {
        snprintf(err, errlen, "max: expected a duration from 1ms to 1h, got %" PRIu64 " ms",
                 max_ms);
        return -EINVAL;
    }
    char d[24], detail[256];
    int again = s->mode.hold_since_ms != 0;
    if (change != 0)
        snprintf(detail, sizeof(detail),
                 "requests to %s wait (at most %s each) around the switch of change %" PRId64,
                 s->cfg->name, duration_format(max_ms, d, sizeof(d)), change);
    else
        snprintf(detail, sizeof(detail), "requests to %s wait (at most %s each)%s", s->cfg->name,
                 duration_format(max_ms, d, sizeof(d)),
                 again ? "; it was held already, with this maximum from now on" : "");
    struct store_hold next = copy_of(s);
    if (!again)
        next.hold_since_ms = store_now_ms();
    next.hold_max_ms = max_ms;
    free(next.hold_actor);
    next.hold_actor = xstrdup(actor ? actor : "unknown");
    next.hold_change = change;
    return commit(s, &next, "hold", actor, detail, err, errlen);
}

int mode_release(struct service *s, const char *actor, const char *why, char *err, size_t errlen)
{
    if (s->mode.hold_since_ms == 0) {
        snprintf(err, errlen, "%s is not held", s->cfg->name);
        return -ESRCH;
    }
    char detail[512];
    int64_t held = store_now_ms() - s->mode.hold_since_ms;
    snprintf(detail, sizeof(detail), "held requests to %s go on, to the version live now%s%s",
             s->cfg->name, why ? "; " : "", why ? why : "");
    struct store_hold next = copy_of(s);
    next.hold_since_ms = 0;
    next.hold_max_ms = 0;
    free(next.hold_actor);
    next.hold_actor = NULL;
    next.hold_change = 0;
    int rc = commit(s, &next, "release", actor, detail, err, errlen);
    if (rc == 0) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRId64, held);
        log_info("hold ended", "service", s->cfg->name, "held_ms", ms);
    }
    return rc;
}

/* 1 when message may be shown on a page and in a terminal: UTF-8 text without control
 * characters or bidi overrides, at most HOLD_MESSAGE_MAX bytes. */
static int message_ok(const char *m, char *err, size_t errlen)
{
    size_t len = strlen(m);
    if (len > HOLD_MESSAGE_MAX) {
        snprintf(err, errlen, "message: at most %d bytes, got %zu", HOLD_MESSAGE_MAX, len);
        return 0;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = text_utf8_next(m + i, len - i, &cp);
        if (n == 0 || text_cp_unsafe(cp)) {
            snprintf(err, errlen,
                     "message: expected one line of UTF-8 text without control characters, "
                     "got %s at byte %zu",
                     n == 0 ? "invalid UTF-8" : "a control character", i);
            return 0;
        }
        i += n;
    }
    return 1;
}

int mode_maintenance(struct service *s, int on, const char *message, const char *actor, char *err,
                     size_t errlen)
{
    int rc = refuse_tcp(s, "put in maintenance", err, errlen);
    if (rc < 0)
        return rc;
    if (!on && s->mode.maintenance_since_ms == 0) {
        snprintf(err, errlen, "%s is not in maintenance", s->cfg->name);
        return -ESRCH;
    }
    if (on && message != NULL && !message_ok(message, err, errlen))
        return -EINVAL;
    char detail[HOLD_MESSAGE_MAX + 256];
    struct store_hold next = copy_of(s);
    free(next.maintenance_message);
    free(next.maintenance_actor);
    next.maintenance_message = NULL;
    next.maintenance_actor = NULL;
    if (on) {
        if (next.maintenance_since_ms == 0)
            next.maintenance_since_ms = store_now_ms();
        next.maintenance_message = message && *message ? xstrdup(message) : NULL;
        next.maintenance_actor = xstrdup(actor ? actor : "unknown");
        snprintf(detail, sizeof(detail), "every request to %s is answered 503%s%s%s", s->cfg->name,
                 message && *message ? " with the message \"" : "", message ? message : "",
                 message && *message ? "\"" : "");
    } else {
        next.maintenance_since_ms = 0;
        snprintf(detail, sizeof(detail), "%s serves again", s->cfg->name);
    }
    return commit(s, &next, on ? "maintenance_on" : "maintenance_off", actor, detail, err, errlen);
}

int mode_change_ended(struct service *s, int64_t id, const char *actor, const char *state)
{
    if (s->mode.hold_since_ms == 0 || s->mode.hold_change == 0 || s->mode.hold_change != id)
        return 0;
    char why[128], err[256];
    snprintf(why, sizeof(why), "change %" PRId64 " ended (%s)", id, state ? state : "ended");
    return mode_release(s, actor, why, err, sizeof(err)) == 0;
}

int mode_load(struct service *s, char *err, size_t errlen)
{
    store_hold_done(&s->mode);
    int rc = store_hold_get(s->r->st, s->cfg->name, &s->mode);
    if (rc < 0) {
        snprintf(err, errlen, "store: %s", store_errmsg(s->r->st));
        return rc;
    }
    if (s->mode.hold_since_ms != 0 && s->mode.hold_change != 0 &&
        !(change_running(&s->ch) && s->ch.id == s->mode.hold_change)) {
        char why[160], e[256];
        snprintf(why, sizeof(why),
                 "change %" PRId64 ", whose deploy --hold took it, no longer runs after a restart",
                 s->mode.hold_change);
        (void)mode_release(s, "cutover", why, e, sizeof(e));
    }
    if (s->mode.hold_since_ms != 0)
        log_info("service is held", "service", s->cfg->name, "by", s->mode.hold_actor);
    if (s->mode.maintenance_since_ms != 0)
        log_info("service is in maintenance", "service", s->cfg->name, "by",
                 s->mode.maintenance_actor);
    return 0;
}

void mode_route_fill(const struct service *s, struct route_service *rs)
{
    rs->hold_ms = s->mode.hold_since_ms != 0 ? s->mode.hold_max_ms : 0;
    rs->maintenance = s->mode.maintenance_since_ms != 0;
    rs->maintenance_message = xstrdup(s->mode.maintenance_message);
}

void mode_json(const struct service *s, json_t *o)
{
    const struct store_hold *m = &s->mode;
    json_t *hold = json_null(), *maint = json_null();
    if (m->hold_since_ms != 0) {
        hold = json_pack("{s:o, s:I, s:s}", "since", change_iso_time(m->hold_since_ms), "max_ms",
                         (json_int_t)m->hold_max_ms, "actor", m->hold_actor ? m->hold_actor : "");
        json_object_set_new(hold, "change",
                            m->hold_change ? json_integer(m->hold_change) : json_null());
    }
    if (m->maintenance_since_ms != 0)
        maint = json_pack("{s:o, s:s?, s:s}", "since", change_iso_time(m->maintenance_since_ms),
                          "message", m->maintenance_message, "actor",
                          m->maintenance_actor ? m->maintenance_actor : "");
    json_object_set_new(o, "hold", hold);
    json_object_set_new(o, "maintenance", maint);
}

void mode_free(struct service *s)
{
    store_hold_done(&s->mode);
}
