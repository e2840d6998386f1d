/* Webhook delivery (see notify.h). The control thread only starts, wakes and stops the
 * delivery thread; the thread owns its curl handles and its store connection. The mutex guards
 * the kicked and stopping flags only. */
#include "notify/notify.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/rollout.h"

#define NOTIFY_TIMEOUT_MS 5000L
#define NOTIFY_CONNECT_TIMEOUT_MS 2000L
#define NOTIFY_BACKOFF_FIRST_MS 500
#define NOTIFY_BACKOFF_MAX_MS 30000
#define NOTIFY_POLL_MS 5000 /* looks at the outbox at least this often, kicked or not */
#define NOTIFY_FILL_BATCH 256
#define NOTIFY_GONE "the webhook is no longer in the config"

struct hook {
    char *url;
    char **services; /* NULL: all */
    size_t nservices;
    char **events; /* NULL: all */
    size_t nevents;
    enum config_webhook_format format;
    unsigned char *key; /* NULL: unsigned */
    size_t keylen;
    int64_t next_ms; /* after a failure: not tried again before this (Unix ms) */
    /* The people whose `webhooks` list this one (borrowed from the config, which outlives the
     * thread); none: every event its filters let through. */
    const struct config_person **people;
    size_t npeople;
};

struct notify {
    struct hook *hooks;
    size_t nhooks;
    int64_t max_age_ms;
    struct store *st; /* opened on the control thread, used by the delivery thread only */
    CURLM *multi;     /* made on the control thread, used by the delivery thread only */
    CURL *curl;
    int curl_global; /* curl_global_init ran */
    unsigned seed;   /* jitter */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int started; /* the thread runs */
    int kicked;
    int stopping;
    struct timespec give_up_at; /* once stopping: no try starts, and one in flight ends, after */
};

static struct timespec deadline_in(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static int past(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/* Whether the thread must leave now: stopping, and the grace time is over. */
static int must_leave(struct notify *n)
{
    pthread_mutex_lock(&n->mu);
    int leave = n->stopping && past(&n->give_up_at);
    pthread_mutex_unlock(&n->mu);
    return leave;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* Aborts a POST in flight once the daemon stops and its grace time is over, so a receiver
 * that hangs cannot hold up the stop by the whole request timeout. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct notify *n = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    pthread_mutex_lock(&n->mu);
    int abort_now = n->stopping && past(&n->give_up_at);
    pthread_mutex_unlock(&n->mu);
    return abort_now;
}

/* libcurl 7.x opens its sockets without SOCK_CLOEXEC: open them here, close-on-exec from the
 * first instant, so that a process the control thread spawns meanwhile (a managed instance, a
 * test step, the next daemon) never inherits a webhook connection. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ud;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd == -1 ? CURL_SOCKET_BAD : fd;
}

/* Marks every descriptor above stderr close-on-exec. A library may open descriptors without
 * O_CLOEXEC (libcurl 7.x: the socket pair that wakes a multi handle); they are all ours, so
 * none should reach a child. Control thread, before anything of the delivery thread runs. */
static void cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd <= STDERR_FILENO || fd == dirfd(d))
            continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl != -1 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    closedir(d);
}

/* Runs curl's transfer on n's own multi handle (whose descriptors notify_start made
 * close-on-exec; curl_easy_perform would make a fresh one on this thread). */
static CURLcode perform(struct notify *n, CURL *curl)
{
    CURLcode cc = CURLE_OK;
    int running = 1;
    CURLMcode mc = curl_multi_add_handle(n->multi, curl);
    while (mc == CURLM_OK && running) {
        mc = curl_multi_perform(n->multi, &running);
        if (mc == CURLM_OK && running)
            mc = curl_multi_poll(n->multi, NULL, 0, 1000, NULL);
    }
    if (mc != CURLM_OK)
        cc = CURLE_FAILED_INIT;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(n->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == curl)
            cc = m->data.result;
    curl_multi_remove_handle(n->multi, curl);
    return cc;
}

/* --- signing ----------------------------------------------------------------------------- */

/* "v1," BASE64(HMAC-SHA256(key, id "." ts "." body)) into out (at least 64 bytes). */
static int sign(const struct hook *h, const char *id, const char *ts, const char *body, char *out,
                size_t outlen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    char *msg = xasprintf("%s.%s.%s", id, ts, body);
    int ok = HMAC(EVP_sha256(), h->key, (int)h->keylen, (unsigned char *)msg, strlen(msg), mac,
                  &maclen) != NULL;
    free(msg);
    if (!ok || outlen < 3 + 4 * ((maclen + 2) / 3) + 1)
        return -1;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen);
    return 0;
}

/* One POST of delivery o to h; returns 0 on a 2xx answer, else -1 with why in err. */
static int post(struct notify *n, const struct hook *h, const struct store_outbox *o, char *err,
                size_t errlen)
{
    CURL *curl = n->curl;
    char cerr[CURL_ERROR_SIZE] = "", hdr[160], ts[32], sig[128];
    struct curl_slist *hl = NULL;
    long status = 0;

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, h->url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, NOTIFY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "cutover-webhook/1");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, o->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(o->body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, n);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    hl = curl_slist_append(hl, h->format == CONFIG_WEBHOOK_CLOUDEVENTS
                                   ? "Content-Type: application/cloudevents+json"
                                   : "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    snprintf(hdr, sizeof(hdr), "X-Cutover-Event: %.64s", o->type);
    hl = curl_slist_append(hl, hdr);
    snprintf(hdr, sizeof(hdr), "webhook-id: %.100s", o->webhook_id);
    hl = curl_slist_append(hl, hdr);
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    snprintf(hdr, sizeof(hdr), "webhook-timestamp: %s", ts);
    hl = curl_slist_append(hl, hdr);
    if (h->key != NULL) {
        if (sign(h, o->webhook_id, ts, o->body, sig, sizeof(sig)) != 0) {
            curl_slist_free_all(hl);
            snprintf(err, errlen, "cannot sign the delivery");
            return -1;
        }
        snprintf(hdr, sizeof(hdr), "webhook-signature: %s", sig);
        hl = curl_slist_append(hl, hdr);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    CURLcode cc = perform(n, curl);
    curl_slist_free_all(hl);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
        return -1;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(err, errlen, "answered HTTP %ld", status);
        return -1;
    }
    return 0;
}

/* --- bodies ------------------------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* The names an `awaiting` event waits for: its message starts "alice, bob: ..." (names are
 * [A-Za-z0-9._-], so the separators cannot occur in one). Returns a JSON array. */
static json_t *awaited(const struct store_event *ev)
{
    json_t *a = json_array();
    if (strcmp(ev->type, "awaiting") != 0 || ev->message == NULL)
        return a;
    const char *end = strstr(ev->message, ": ");
    for (const char *p = ev->message; end != NULL && p < end;) {
        size_t len = strcspn(p, ",:");
        if (len > 0 && p + len <= end)
            json_array_append_new(a, json_stringn(p, len));
        p += len;
        while (p < end && (*p == ',' || *p == ' '))
            p++;
    }
    return a;
}

/* 1 when the people a webhook reaches should hear of ev, an event of service (see struct
 * hook): they own or are informed of the service, or ev waits for one of them. */
static int routed(const struct hook *h, const struct store_event *ev, const char *service)
{
    if (h->npeople == 0)
        return 1;
    json_t *names = awaited(ev);
    int yes = 0;
    for (size_t i = 0; i < h->npeople && !yes; i++) {
        const struct config_person *p = h->people[i];
        if (service != NULL &&
            (config_person_duties(p, service) & (CONFIG_DUTY_OWNER | CONFIG_DUTY_INFORMED)))
            yes = 1;
        for (size_t k = 0; k < json_array_size(names); k++)
            if (strcmp(json_string_value(json_array_get(names, k)), p->name) == 0)
                yes = 1;
    }
    json_decref(names);
    return yes;
}

/* The json format: the Event object of the stream, with the change's fields. */
static json_t *body_json(const struct store_event *ev, const struct store_change *ch)
{
    json_t *o = rollout_event_json(ev, ch ? ch->service : NULL);
    json_object_set_new(o, "event_id", json_integer(ev->id));
    json_object_set_new(o, "kind", str_or_null(ch ? ch->kind : NULL));
    json_object_set_new(o, "from", str_or_null(ch ? ch->from_version : NULL));
    json_object_set_new(o, "to", str_or_null(ch ? ch->to_version : NULL));
    json_object_set_new(o, "plan", str_or_null(ch ? ch->plan : NULL));
    json_object_set_new(o, "actor", str_or_null(ch ? ch->actor : NULL));
    json_object_set_new(o, "reason", str_or_null(ch ? ch->reason : NULL));
    json_object_set_new(o, "state", str_or_null(ch ? ch->state : NULL));
    if (strcmp(ev->type, "awaiting") == 0)
        json_object_set_new(o, "awaiting", awaited(ev));
    return o;
}

/* Appends s to b with Slack's three escapes (&, <, >), so a message cannot make a link. */
static void slack_escape(char *b, size_t cap, const char *s)
{
    size_t len = strlen(b);
    for (; s != NULL && *s && len + 6 < cap; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
        if (e != NULL) {
            memcpy(b + len, e, strlen(e));
            len += strlen(e);
        } else {
            b[len++] = *s;
        }
    }
    b[len] = '\0';
}

/* The slack format: a text (what chat hooks require) and the same in one section block. */
static json_t *body_slack(const struct store_event *ev, const struct store_change *ch)
{
    char text[1024] = "", ctx[512] = "";
    slack_escape(text, sizeof(text), "cutover: ");
    slack_escape(text, sizeof(text), ch ? ch->service : "?");
    slack_escape(text, sizeof(text), " ");
    if (ch != NULL && ch->from_version != NULL) {
        slack_escape(text, sizeof(text), ch->from_version);
        slack_escape(text, sizeof(text), " -> ");
    }
    slack_escape(text, sizeof(text), ch ? ch->to_version : "?");
    slack_escape(text, sizeof(text), ": ");
    slack_escape(text, sizeof(text), ev->type);
    if (ev->message != NULL) {
        slack_escape(text, sizeof(text), ": ");
        slack_escape(text, sizeof(text), ev->message);
    }
    snprintf(ctx, sizeof(ctx), "change %" PRId64 " (%s) by ", ev->change_id,
             ch && ch->kind ? ch->kind : "?");
    slack_escape(ctx, sizeof(ctx), ch ? ch->actor : "?");
    if (ch != NULL && ch->reason != NULL) {
        slack_escape(ctx, sizeof(ctx), ": ");
        slack_escape(ctx, sizeof(ctx), ch->reason);
    }
    return json_pack("{s:s, s:[{s:s, s:{s:s, s:s}}, {s:s, s:[{s:s, s:s}]}]}", "text", text,
                     "blocks", "type", "section", "text", "type", "mrkdwn", "text", text, "type",
                     "context", "elements", "type", "mrkdwn", "text", ctx);
}

/* The CDEvents type of an event: a finished deploy or rollback has one; the rest are ours. */
static void cloudevents_type(const struct store_event *ev, const struct store_change *ch, char *out,
                             size_t outlen)
{
    int done = strcmp(ev->type, "switched") == 0 || strcmp(ev->type, "completed") == 0;
    int rollback = ch != NULL && ch->kind != NULL && strcmp(ch->kind, "rollback") == 0;
    if ((done && rollback) || strcmp(ev->type, "rolled_back") == 0)
        snprintf(out, outlen, "dev.cdevents.service.rolledback.0.1.1");
    else if (done)
        snprintf(out, outlen, "dev.cdevents.service.deployed.0.1.1");
    else
        snprintf(out, outlen, "dev.cutover.%s", ev->type);
}

/* The cloudevents format: CloudEvents 1.0 structured mode, the json body as data. */
static json_t *body_cloudevents(const struct store_event *ev, const struct store_change *ch)
{
    char id[32], type[96], source[160], subject[48];
    snprintf(id, sizeof(id), "%" PRId64, ev->id);
    cloudevents_type(ev, ch, type, sizeof(type));
    snprintf(source, sizeof(source), "/cutover/services/%.100s", ch ? ch->service : "unknown");
    snprintf(subject, sizeof(subject), "changes/%" PRId64, ev->change_id);
    json_t *data = body_json(ev, ch);
    json_t *time_iso = json_object_get(data, "ts");
    time_iso = time_iso != NULL ? json_incref(time_iso) : json_null();
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:o}", "specversion", "1.0", "id", id,
                     "source", source, "type", type, "subject", subject, "time", time_iso,
                     "datacontenttype", "application/json", "data", data);
}

static char *render(const struct hook *h, const struct store_event *ev,
                    const struct store_change *ch)
{
    json_t *o = h->format == CONFIG_WEBHOOK_SLACK         ? body_slack(ev, ch)
                : h->format == CONFIG_WEBHOOK_CLOUDEVENTS ? body_cloudevents(ev, ch)
                                                          : body_json(ev, ch);
    if (o == NULL)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    return s;
}

/* --- the outbox ---------------------------------------------------------------------------- */

static int in_list(char **v, size_t n, const char *s)
{
    if (v == NULL)
        return 1;
    for (size_t i = 0; s != NULL && i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

/* Writes the deliveries of the events after the mark, with the new mark, one transaction per
 * batch. The bodies are made before the write lock is taken, so that the lock is held for the
 * inserts only: the control thread waits for it at most 50 ms in places. A second writer (the
 * other daemon of a hand-over) is harmless: rows are unique per event and webhook, and the mark
 * never moves back. Returns 0, or a negative errno (logged) to try again at the next pass. */
static int fill(struct notify *n)
{
    for (;;) {
        struct store_event *evs = NULL;
        size_t nev = 0, nrows = 0;
        struct store_outbox *rows = NULL;
        struct store_change ch = {0};
        int have = 0;
        int64_t mark = 0, now = store_now_ms();
        int rc = store_outbox_mark_get(n->st, &mark);
        if (rc == 0)
            rc = store_event_list_since(n->st, mark, NULL, NOTIFY_FILL_BATCH, &evs, &nev);
        if (nev > 0)
            rows = xcalloc(nev * n->nhooks, sizeof(*rows));
        for (size_t i = 0; rc == 0 && i < nev; i++) {
            const struct store_event *ev = &evs[i];
            if (!have || ch.id != ev->change_id) {
                store_change_done(&ch);
                have = store_change_get(n->st, ev->change_id, &ch) == 0;
            }
            /* Older than max_age: it would be given up at once; an old store just upgraded
             * may hold such events. */
            if (now - ev->ts_ms > n->max_age_ms)
                continue;
            for (size_t j = 0; j < n->nhooks; j++) {
                const struct hook *h = &n->hooks[j];
                if (!in_list(h->services, h->nservices, have ? ch.service : NULL) ||
                    !in_list(h->events, h->nevents, ev->type) ||
                    !routed(h, ev, have ? ch.service : NULL))
                    continue;
                char *body = render(h, ev, have ? &ch : NULL);
                if (body == NULL) {
                    /* Never expected; skipped rather than retried, which would stop every
                     * later event at this one. */
                    log_warn("webhook body cannot be made: event skipped", "url", h->url, "event",
                             ev->type);
                    continue;
                }
                struct store_outbox *o = &rows[nrows++];
                o->event_id = ev->id;
                o->change_id = ev->change_id;
                o->hook = (int)j;
                o->url = xstrdup(h->url);
                o->webhook_id = xasprintf("msg_%" PRId64 "_%zu", ev->id, j);
                o->type = xstrdup(ev->type);
                o->body = body;
                o->created_ms = ev->ts_ms;
            }
        }
        if (rc == 0 && nev > 0) {
            rc = store_begin(n->st);
            for (size_t i = 0; rc == 0 && i < nrows; i++)
                rc = store_outbox_add(n->st, &rows[i]);
            if (rc == 0)
                rc = store_outbox_mark_set(n->st, evs[nev - 1].id);
            if (rc == 0)
                rc = store_commit(n->st);
        }
        if (rc != 0) {
            log_warn("webhooks: cannot write deliveries to the outbox", "error",
                     store_errmsg(n->st));
            store_rollback(n->st);
        }
        for (size_t i = 0; i < nrows; i++)
            store_outbox_done(&rows[i]);
        free(rows);
        store_change_done(&ch);
        store_event_list_free(evs, nev);
        if (rc != 0 || nev < NOTIFY_FILL_BATCH)
            return rc;
    }
}

/* The wait before try number `tries` + 1: 0.5 s doubling to 30 s, with the upper half
 * jittered, so that receivers coming back are not hit by every daemon at once. */
static int64_t backoff_ms(struct notify *n, int tries)
{
    int64_t d = NOTIFY_BACKOFF_FIRST_MS;
    for (int i = 1; i < tries && d < NOTIFY_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > NOTIFY_BACKOFF_MAX_MS)
        d = NOTIFY_BACKOFF_MAX_MS;
    return d / 2 + (int64_t)(rand_r(&n->seed) % (unsigned)(d / 2 + 1));
}

/* Sends what is due, oldest first per webhook; a webhook that fails waits (its later deliveries
 * too, so they arrive in order). Returns the ms until the next webhook is due, or -1. */
static int64_t send_due(struct notify *n)
{
    int64_t next = -1;
    for (size_t i = 0; i < n->nhooks; i++) {
        struct hook *h = &n->hooks[i];
        for (;;) {
            int64_t now = store_now_ms();
            if (h->next_ms > now) {
                if (next < 0 || h->next_ms - now < next)
                    next = h->next_ms - now;
                break;
            }
            if (must_leave(n))
                return -1;
            struct store_outbox o;
            if (store_outbox_next(n->st, (int)i, &o) != 0)
                break;
            char err[CURL_ERROR_SIZE + 64] = "";
            if (strcmp(o.url, h->url) != 0) {
                /* The config changed under it: this webhook is not the one it was for. */
                store_outbox_result(n->st, o.id, STORE_OUTBOX_FAILED, NOTIFY_GONE);
            } else if (now - o.created_ms > n->max_age_ms) {
                snprintf(err, sizeof(err), "given up after %d tries (notify.max_age): %s",
                         o.attempts, o.last_error ? o.last_error : "never sent");
                store_outbox_result(n->st, o.id, STORE_OUTBOX_FAILED, err);
                log_warn("webhook delivery given up", "url", h->url, "event", o.type, "error", err);
            } else if (post(n, h, &o, err, sizeof(err)) == 0) {
                store_outbox_result(n->st, o.id, STORE_OUTBOX_DELIVERED, NULL);
            } else {
                store_outbox_result(n->st, o.id, STORE_OUTBOX_PENDING, err);
                h->next_ms = store_now_ms() + backoff_ms(n, o.attempts + 1);
                if (o.attempts == 0)
                    log_warn("webhook delivery failed; trying again", "url", h->url, "event",
                             o.type, "error", err);
            }
            store_outbox_done(&o);
        }
    }
    return next;
}

static void *run(void *arg)
{
    struct notify *n = arg;

    store_outbox_orphans(n->st, (int)n->nhooks, NOTIFY_GONE);
    pthread_mutex_lock(&n->mu);
    for (;;) {
        int last = n->stopping; /* one pass after the stop, then out */
        n->kicked = 0;
        pthread_mutex_unlock(&n->mu);
        fill(n);
        int64_t wait = send_due(n);
        pthread_mutex_lock(&n->mu);
        if (last)
            break;
        if (n->kicked || n->stopping)
            continue;
        if (wait < 0 || wait > NOTIFY_POLL_MS)
            wait = NOTIFY_POLL_MS;
        struct timespec t = deadline_in((unsigned)wait + 1);
        while (!n->kicked && !n->stopping && pthread_cond_timedwait(&n->cond, &n->mu, &t) == 0)
            ;
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int notify_start(struct notify **out, const struct config *cfg, const char *db_path, char *err,
                 size_t errlen)
{
    *out = NULL;
    if (cfg->nwebhooks == 0)
        return 0;
    struct notify *n = xcalloc(1, sizeof(*n));
    n->hooks = xcalloc(cfg->nwebhooks, sizeof(*n->hooks));
    n->nhooks = cfg->nwebhooks;
    n->max_age_ms = (int64_t)cfg->notify_max_age_ms;
    n->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    for (size_t i = 0; i < cfg->nwebhooks; i++) {
        const struct config_webhook *w = &cfg->webhooks[i];
        struct hook *h = &n->hooks[i];
        h->url = xstrdup(w->url);
        h->format = w->format;
        h->nservices = w->nservices;
        if (w->services != NULL) {
            h->services = xcalloc(w->nservices + 1, sizeof(char *));
            for (size_t j = 0; j < w->nservices; j++)
                h->services[j] = xstrdup(w->services[j]);
        }
        h->nevents = w->nevents;
        if (w->events != NULL) {
            h->events = xcalloc(w->nevents + 1, sizeof(char *));
            for (size_t j = 0; j < w->nevents; j++)
                h->events[j] = xstrdup(w->events[j]);
        }
        for (size_t p = 0; w->name != NULL && p < cfg->npeople; p++)
            for (size_t k = 0; k < cfg->people[p].nwebhooks; k++)
                if (strcmp(cfg->people[p].webhooks[k], w->name) == 0) {
                    h->people = xrealloc(h->people, (h->npeople + 1) * sizeof(*h->people));
                    h->people[h->npeople++] = &cfg->people[p];
                    break;
                }
        if (w->key != NULL) {
            h->key = xmalloc(w->keylen);
            memcpy(h->key, w->key, w->keylen);
            h->keylen = w->keylen;
        }
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cond, NULL);
    int rc = store_open(db_path, &n->st, err, errlen);
    if (rc < 0) {
        notify_stop(n, 0);
        return rc;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT); /* here, on one thread: it is not thread-safe */
    n->curl_global = 1;
    n->multi = curl_multi_init();
    n->curl = curl_easy_init();
    cloexec_all(); /* before the delivery thread exists: nothing can spawn in between */
    if (n->multi == NULL || n->curl == NULL) {
        snprintf(err, errlen, "cannot create a curl handle");
        notify_stop(n, 0);
        return -ENOMEM;
    }
    rc = pthread_create(&n->thread, NULL, run, n);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the webhook thread: %s", strerror(rc));
        notify_stop(n, 0); /* frees; no thread to join */
        return -rc;
    }
    n->started = 1;
    *out = n;
    return 0;
}

void notify_kick(struct notify *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->mu);
    n->kicked = 1;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
}

void notify_stop(struct notify *n, unsigned wait_ms)
{
    if (n == NULL)
        return;
    if (n->started) {
        pthread_mutex_lock(&n->mu);
        n->stopping = 1;
        n->give_up_at = deadline_in(wait_ms);
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->thread, NULL);
    }
    for (size_t i = 0; i < n->nhooks; i++) {
        struct hook *h = &n->hooks[i];
        free(h->url);
        free(h->people);
        for (size_t j = 0; h->services != NULL && j < h->nservices; j++)
            free(h->services[j]);
        free(h->services);
        for (size_t j = 0; h->events != NULL && j < h->nevents; j++)
            free(h->events[j]);
        free(h->events);
        if (h->key != NULL)
            OPENSSL_cleanse(h->key, h->keylen);
        free(h->key);
    }
    free(n->hooks);
    if (n->curl != NULL)
        curl_easy_cleanup(n->curl);
    if (n->multi != NULL)
        curl_multi_cleanup(n->multi);
    if (n->curl_global)
        curl_global_cleanup();
    store_free(n->st);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mu);
    free(n);
}
