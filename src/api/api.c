/* Admin API server (see api.h). Control loop only. One request at a time per connection; a
 * deploy or rollback answer may be deferred until the rollout engine calls back. */
#include "net/tls.h"
#include "api/api.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "api/session.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/log.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "api/who.h"
#include "core/duration.h"
#include "dash/dash.h"
#include "http/parse.h"
#include "net/addr.h"
#include "rollout/change.h"
#include "rollout/schedule.h"
#include "http/status.h"
#include "store/store.h"

#define API_MAX_HEAD (16 * 1024)
#define API_MAX_BODY (1024 * 1024)
#define API_VERSION CUTOVER_RELEASE
/* admin.listen faces a network: a client there gets this long to send each request, and only
 * this many connections of token holders are kept (the unix socket is local and needs
 * neither). */
#define API_TCP_DEADLINE_MS 30000
#define API_TCP_MAX_CONNS 64
/* ...but a new connection gets only this long for its first request (its token unknown yet),
 * and connections that have not shown a token yet are a pool of their own: when it is full, the
 * oldest of them makes room for a new one, so connections that never send a token cannot keep
 * a token holder out (they count against no token holder's slot). Event streams, which stay
 * open, may hold only API_TCP_MAX_STREAMS of the connections. */
#define API_TCP_FIRST_MS 1000
#define API_TCP_MAX_UNAUTH 64
#define API_TCP_MAX_STREAMS 16
/* One host may hold at most half of the connections, so that a runaway script or a scan from
 * one address cannot lock the others (the CI runner, the on-call's laptop) out. */
#define API_TCP_MAX_PER_HOST 32
/* Free text a person supplies is kept to this many bytes: a reason is a sentence or two, and
 * every byte of it is stored, sent to webhooks and shown in reports. */
#define API_REASON_MAX 1024
/* GET /api/v1/stats without ?since=: the last 30 days. */
#define API_STATS_WINDOW_MS (30LL * 24 * 3600 * 1000)
/* An event stream gets a comment this often, so proxies and clients see it is alive. */
#define API_SSE_BEAT_MS 15000
/* A stream whose client reads less than the events it is sent is closed past this backlog. */
#define API_SSE_MAX_BACKLOG (1024 * 1024)
/* At most this many missed events are replayed to a client that comes back (Last-Event-ID). */
#define API_SSE_REPLAY_MAX 1000

struct api_conn;

struct api_pending {
    struct api_conn *conn; /* NULL once the connection closed */
    int64_t change_id;
};

struct api {
    uv_loop_t *loop;
    uv_pipe_t server;
    uv_tcp_t tcp_server;    /* admin.listen, when tcp_on */
    struct tls_server *tls; /* admin.tls (the daemon's), or NULL */
    int tcp_on;
    struct config_token *tokens; /* owned copies */
    size_t ntokens;
    size_t ntcp;     /* open TCP connections */
    size_t nauthed;  /* of which have shown a valid token (API_TCP_MAX_CONNS at most) */
    size_t ntcp_sse; /* of which event streams */
    int refs; /* server handles and connections not yet closed: the last close frees the api */
    struct store *st;           /* events: live (store_on_event) and replayed; NULL: no /events */
    uv_timer_t beat;            /* keep-alive comments on event streams */
    uv_timer_t flush;           /* sends queued events on the next loop turn */
    struct store_event *queued; /* events stored since the last flush (owned copies) */
    size_t nqueued, capqueued;
    char *path;
    struct rollout *r;
    struct api_hooks hooks;
    struct api_conn *conns;
    int stopping;
    /* Accept pauses when descriptors run out (see on_connection): a paused server is closed and
     * pause_timer listens again on a new copy of its socket (unix_fd, tcp_fd). */
    uv_timer_t pause_timer;
    int unix_fd; /* a copy of the unix socket's listening descriptor, or -1 */
    int tcp_fd;  /* the daemon's admin.listen socket (api_listen_tcp's fd), or -1 */
    int paused;  /* API_PAUSED_* bits */
    int episode; /* paused since the last accepted connection: logged once */
    uint64_t pause_ms;
    uint64_t npaused;                   /* pauses, for /metrics */
    uint64_t nrefused;                  /* unknown tokens and failed logins, for /metrics */
    struct session_revoked *logged_out; /* dashboard sessions ended by a logout */
};

#define API_PAUSED_UNIX 1
#define API_PAUSED_TCP 2
#define API_PAUSE_FIRST_MS 10
#define API_PAUSE_MAX_MS 1000

struct api_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } io;
    uv_timer_t deadline;  /* TCP only: closes a connection that sends no whole request in time */
    struct tls_conn *tls; /* TCP with admin.tls: the connection's TLS; freed by tls_close */
    int tcp;
    struct sockaddr_storage peer;   /* TCP: the client's address (family 0 if unknown) */
    int open_handles;               /* handles to close before the conn is freed */
    const struct config_token *who; /* TCP: the token the request came with */
    struct who_unix unix_who;       /* unix socket: the peer (SO_PEERCRED) and its identity */
    /* The request being answered, for the audit log (respond_raw writes its line). */
    char *aud_method, *aud_path;
    char *aud_actor;       /* the actor it acted as ("alice as bob" for --as), once known */
    int aud_action;        /* it changes something (not GET or HEAD): logged whatever the answer */
    int authed;            /* TCP: a request of this connection showed a valid token */
    int64_t last_event_id; /* the request's Last-Event-ID, or 0 */
    int sse;               /* this connection is an event stream now */
    int sse_end;           /* close once what is queued is written */
    int64_t sse_last_id;   /* the last event sent: later ones only */
    char *sse_service;     /* only this service's events; NULL: all */
    uv_write_t wreq;
    struct api *a;
    struct api_conn *prev, *next;
    char *buf;
    size_t len, cap;
    size_t req_len;  /* bytes of the request being answered */
    int close_after; /* the client asked for Connection: close */
    int busy;        /* a response is pending or being written */
    int closing;
    char *out;
    struct api_pending *pending;
    char *extra_head; /* header lines for the next response (Set-Cookie), or NULL */
    int secure;       /* the request came over TLS (admin.tls, or X-Forwarded-Proto: https) */
    /* The request came with a dashboard session cookie (not a bearer token): its value, for
     * the CSRF token and a logout. */
    int via_session;
    char session[SESSION_VALUE_MAX];
    int64_t session_expires;
};

static void conn_close(struct api_conn *c);

/* uv_write to the connection, through its TLS when it has one. */
static int conn_write(struct api_conn *c, uv_write_t *req, const uv_buf_t *b, uv_write_cb cb)
{
    if (c->tls != NULL)
        return tls_write(c->tls, req, b, 1, cb);
    return uv_write(req, &c->io.stream, b, 1, cb);
}
static void conn_process(struct api_conn *c);
static void on_connection(uv_stream_t *server, int status);
static void unix_identify(struct api_conn *c);
static void server_pause(struct api *a, uv_stream_t *server, int status);

/* ---------------------------------------------------------------- responses ----------------- */

/* ---------------------------------------------------------------- audit log ----------------- */

/* The audit status of an action whose client closed the connection before its answer (as
 * nginx logs it). */
#define API_CLIENT_GONE 499

static void audit_forget(struct api_conn *c)
{
    free(c->aud_method);
    free(c->aud_path);
    free(c->aud_actor);
    c->aud_method = c->aud_path = c->aud_actor = NULL;
    c->aud_action = 0;
}

/* Writes the audit line of the request being answered with status and body: every request that
 * changes something, and every refusal (401, 403, 409) of any request. A store that stays
 * locked loses the line (logged), never the answer. */
static void audit_write(struct api_conn *c, int status, const char *body)
{
    struct api *a = c->a;
    if (c->aud_path == NULL || a->st == NULL)
        return;
    if (!c->aud_action && status != 401 && status != 403 && status != 409)
        return;
    char peer[160], host[INET6_ADDRSTRLEN + 8] = "?";
    struct store_audit e = {.channel = c->tcp ? "tcp" : "unix",
                            .peer = peer,
                            .method = c->aud_method,
                            .path = c->aud_path,
                            .status = status};
    if (c->tcp) {
        if (c->peer.ss_family != 0)
            addr_format((const struct sockaddr *)&c->peer, host, sizeof(host));
        snprintf(peer, sizeof(peer), "%s, %s%s", host, c->who ? "token " : "no valid token",
                 c->who ? c->who->name : "");
        e.actor = c->aud_actor ? c->aud_actor : c->who ? c->who->name : NULL;
    } else {
        who_unix_describe(&c->unix_who, peer, sizeof(peer));
        e.actor = c->aud_actor         ? c->aud_actor
                  : c->unix_who.person ? c->unix_who.person->name
                                       : c->unix_who.user;
    }
    json_t *o = status >= 400 || c->aud_action ? json_loads(body, 0, NULL) : NULL;
    char what[96] = "";
    if (status >= 400) {
        e.outcome = (char *)json_string_value(json_object_get(o, "error"));
    } else if (json_integer_value(json_object_get(o, "id")) > 0) {
        snprintf(what, sizeof(what), "change %lld",
                 (long long)json_integer_value(json_object_get(o, "id")));
        e.outcome = what;
    }
    int rc = store_audit_add(a->st, &e, 50);
    if (rc < 0)
        log_warn("audit log: line not written", "path", c->aud_path, "error", store_errmsg(a->st));
    json_decref(o);
    free(c->aud_path);
    c->aud_path = NULL; /* one line per request */
}

static void on_written(uv_write_t *w, int status)
{
    struct api_conn *c = w->data;
    free(c->out);
    c->out = NULL;
    c->busy = 0;
    if (c->closing)
        return;
    if (status < 0 || c->close_after || c->a->stopping) {
        conn_close(c);
        return;
    }
    memmove(c->buf, c->buf + c->req_len, c->len - c->req_len);
    c->len -= c->req_len;
    c->req_len = 0;
    c->who = NULL;
    audit_forget(c);
    if (c->tcp)
        uv_timer_again(&c->deadline);
    conn_process(c);
}

/* Sent with every answer: the dashboard's page may run only its own script and style, load
 * nothing from another host, be framed by no one, and no answer is sniffed as another type. */
#define API_SECURITY_HEADERS                                                                       \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "             \
    "base-uri 'none'\r\n"                                                                          \
    "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"

static void respond_raw(struct api_conn *c, int status, const char *ctype, const char *body)
{
    audit_write(c, status, body);
    size_t bl = strlen(body);
    c->out = xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Cache-Control: no-store\r\n" API_SECURITY_HEADERS "%s%s%s\r\n",
                       status, http_status_reason(status), ctype, bl,
                       status == 401 ? "WWW-Authenticate: Bearer realm=\"cutover\"\r\n" : "",
                       c->extra_head ? c->extra_head : "",
                       c->close_after ? "Connection: close\r\n" : "");
    free(c->extra_head);
    c->extra_head = NULL;
    size_t hl = strlen(c->out);
    c->out = xrealloc(c->out, hl + bl + 1);
    memcpy(c->out + hl, body, bl + 1);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)(hl + bl));
    c->busy = 1;
    c->wreq.data = c;
    if (conn_write(c, &c->wreq, &b, on_written) < 0) {
        free(c->out);
        c->out = NULL;
        conn_close(c);
    }
}

/* Sends status with the JSON o (stolen). */
static int respond_json(struct api_conn *c, int status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = '\0';
    respond_raw(c, status, "application/json", s);
    free(s);
    return 0;
}

static int respond_error(struct api_conn *c, int status, const char *msg)
{
    return respond_json(c, status, json_pack("{s:s}", "error", msg));
}

/* 404 for a change id the store does not have, naming it. */
static int respond_no_change(struct api_conn *c, int64_t id)
{
    char msg[48];
    snprintf(msg, sizeof(msg), "no change %lld", (long long)id);
    return respond_error(c, 404, msg);
}

/* Maps a negative errno from the rollout engine to an HTTP status. */
static int status_of(int rc)
{
    switch (rc) {
    case -ENOENT:
        return 404;
    case -EBUSY:
    case -EAGAIN: /* processes of an earlier change still stopping: the same, in a moment */
    case -EEXIST:
    case -ESRCH:
    case -EADDRNOTAVAIL: /* no free port in run.port_range: the machine's state, not a bug */
        return 409;
    case -EINVAL:
        return 400;
    case -ENOTSUP:
        return 501;
    case -EROFS: /* the store is lost or corrupt: a fault of the daemon's state (store_guard_why) */
        return 503;
    default:
        return 500;
    }
}

/* ---------------------------------------------------------------- deferred answers ---------- */

static void on_change_ready(void *ctx, int64_t id)
{
    struct api_pending *p = ctx;
    struct api_conn *c = p->conn;
    free(p);
    if (c == NULL)
        return;
    c->pending = NULL;
    json_t *o = rollout_change_json(c->a->r, id, 1);
    if (o == NULL)
        respond_error(c, 500, "the change was recorded but cannot be read back");
    else
        respond_json(c, 200, o);
}

static struct api_pending *pending_new(struct api_conn *c)
{
    struct api_pending *p = xcalloc(1, sizeof(*p));
    p->conn = c;
    c->pending = p;
    return p;
}

/* ---------------------------------------------------------------- routes -------------------- */

/* Reads an optional string field; returns -1 (and answers 400) when it has another type. */
static int opt_string(struct api_conn *c, json_t *body, const char *key, const char **out)
{
    json_t *v = json_object_get(body, key);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s: expected a string", key);
        respond_error(c, 400, msg);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* Reads "actor". A request that came with a token acts as the token's name: another name in
 * the body is refused (403), none means the token's. */
static int opt_actor(struct api_conn *c, json_t *body, const char **out)
{
    if (opt_string(c, body, "actor", out) < 0)
        return -1;
    /* An actor is a name, as a token's name is: it is shown in reports, history and logs, where
     * free text could pass for another record. */
    if (*out != NULL && !text_is_name(*out, strlen(*out))) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "actor: expected a name of 1 to %d characters from A-Z a-z 0-9 . _ - (the "
                 "rules of a token's name)",
                 TEXT_NAME_MAX);
        respond_error(c, 400, msg);
        return -1;
    }
    if (!c->tcp) {
        char why[256];
        const char *as = who_unix_actor(&c->unix_who, *out, why, sizeof(why));
        if (as == NULL) {
            respond_error(c, 403, why);
            return -1;
        }
        const char *self = c->unix_who.person ? c->unix_who.person->name : c->unix_who.user;
        free(c->aud_actor);
        c->aud_actor = c->unix_who.identified && strcmp(as, self) != 0
                           ? xasprintf("%s as %s", self, as)
                           : xstrdup(as);
        *out = as;
        return 0;
    }
    if (c->who == NULL)
        return 0;
    if (*out != NULL && strcmp(*out, c->who->name) != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "actor: this token acts as '%s', not as '%.64s'", c->who->name,
                 *out);
        respond_error(c, 403, msg);
        return -1;
    }
    *out = c->who->name;
    return 0;
}

/* Reads an optional "reason": a string of at most API_REASON_MAX bytes (400 otherwise). */
static int opt_reason(struct api_conn *c, json_t *body, const char **out)
{
    if (opt_string(c, body, "reason", out) < 0)
        return -1;
    if (*out != NULL && strlen(*out) > API_REASON_MAX) {
        char msg[128];
        snprintf(msg, sizeof(msg), "reason: at most %d bytes, got %zu", API_REASON_MAX,
                 strlen(*out));
        respond_error(c, 400, msg);
        return -1;
    }
    return 0;
}

/* Parses the JSON object body, refusing unknown fields (a typo must not be silently ignored).
 * Returns NULL after answering 400. */
static json_t *parse_body(struct api_conn *c, const char *body, size_t n,
                          const char *const *allowed)
{
    json_error_t je;
    json_t *o;
    if (n == 0)
        o = json_object();
    else
        o = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "invalid JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        respond_error(c, 400, msg);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        respond_error(c, 400, "the body must be a JSON object");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown field '%.64s'", key);
            json_decref(o);
            respond_error(c, 400, msg);
            return NULL;
        }
    }
    return o;
}

static int route_deploy(struct api_conn *c, const char *service, const char *body, size_t n)
{
    static const char *const allowed[] = {"version", "targets", "plan", "reason",
                                          "actor",   "wait",    "hold", "emergency",
                                          "ticket",  "risk",    "at",   NULL};
    json_t *o = parse_body(c, body, n, allowed);
    if (o == NULL)
        return 0;
    const char *version, *plan, *reason, *actor, *ticket, *risk, *at;
    int64_t at_ms = 0;
    const char *targets[65];
    size_t nt = 0;
    int wait = 0, emergency = 0;
    if (opt_string(c, o, "version", &version) < 0 || opt_string(c, o, "plan", &plan) < 0 ||
        opt_reason(c, o, &reason) < 0 || opt_actor(c, o, &actor) < 0 ||
        opt_string(c, o, "ticket", &ticket) < 0 || opt_string(c, o, "risk", &risk) < 0 ||
        opt_string(c, o, "at", &at) < 0)
        goto out;
    if (at != NULL && schedule_parse_at(at, store_now_ms(), &at_ms) != 0) {
        respond_error(c, 400,
                      "at: expected an RFC 3339 time (2026-12-07T22:00:00Z, or with an offset "
                      "such as +01:00) or +DURATION (+30m)");
        goto out;
    }
    if (ticket != NULL && !text_is_name(ticket, strlen(ticket))) {
        respond_error(c, 400,
                      "ticket: expected 1-64 characters of A-Z a-z 0-9 . _ - (a ticket id)");
        goto out;
    }
    json_t *je = json_object_get(o, "emergency");
    if (je != NULL) {
        if (!json_is_boolean(je)) {
            respond_error(c, 400, "emergency: expected true or false");
            goto out;
        }
        emergency = json_is_true(je);
    }
    if (version == NULL) {
        respond_error(c, 400, "version: required");
        goto out;
    }
    json_t *jt = json_object_get(o, "targets");
    if (jt != NULL && !json_is_null(jt)) {
        if (!json_is_array(jt)) {
            respond_error(c, 400, "targets: expected an array of \"HOST:PORT\" strings");
            goto out;
        }
        if (json_array_size(jt) > 64) {
            respond_error(c, 400, "targets: at most 64");
            goto out;
        }
        size_t i;
        json_t *e;
        json_array_foreach(jt, i, e)
        {
            if (!json_is_string(e)) {
                char msg[96];
                snprintf(msg, sizeof(msg), "targets[%zu]: expected a \"HOST:PORT\" string", i);
                respond_error(c, 400, msg);
                goto out;
            }
            targets[nt++] = json_string_value(e);
        }
    }
    int hold = 0;
    json_t *jh = json_object_get(o, "hold");
    if (jh != NULL) {
        if (!json_is_boolean(jh)) {
            respond_error(c, 400, "hold: expected true or false");
            goto out;
        }
        hold = json_is_true(jh);
    }
    json_t *jw = json_object_get(o, "wait");
    if (jw != NULL) {
        if (!json_is_boolean(jw)) {
            respond_error(c, 400, "wait: expected true or false");
            goto out;
        }
        wait = json_is_true(jw);
    }
    struct rollout_deploy_req req = {
        .service = service,
        .version = version,
        .targets = targets,
        .ntargets = nt,
        .plan = plan,
        .actor = actor,
        .reason = reason,
        .wait = wait,
        .emergency = emergency,
        .ticket = ticket,
        .risk = risk,
        .hold = hold,
        .at_ms = at_ms,
    };
    char err[512];
    int64_t id;
    struct api_pending *p = pending_new(c);
    int rc = rollout_deploy(c->a->r, &req, on_change_ready, p, &id, err, sizeof(err));
    if (rc < 0) {
        c->pending = NULL;
        free(p);
        respond_error(c, status_of(rc), err);
    }
out:
    json_decref(o);
    return 0;
}

/* With "expect_live" in a rollback's body: 0 when service's live version is still that one,
 * else -1 after answering 409 (another change moved it meanwhile). */
static int live_is(struct api_conn *c, const char *service, const char *expect)
{
    if (expect == NULL)
        return 0;
    json_t *svc = rollout_service_json(c->a->r, service);
    const char *live = json_string_value(json_object_get(json_object_get(svc, "live"), "name"));
    int rc = 0;
    if (svc != NULL && (live == NULL || strcmp(live, expect) != 0)) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "the live version of %.64s is %.64s now, not %.64s; nothing "
                 "was done",
                 service, live ? live : "none", expect);
        respond_error(c, 409, msg);
        rc = -1;
    }
    json_decref(svc);
    return rc;
}

/* POST /api/v1/services/NAME/{hold,release,maintenance} (docs/api.md "Hold and maintenance"):
 * recorded with the actor, applied by the next table; answers the Service. */
static int route_mode(struct api_conn *c, const char *service, const char *what, const char *body,
                      size_t n)
{
    static const char *const hold_allowed[] = {"max", "actor", NULL};
    static const char *const release_allowed[] = {"actor", NULL};
    static const char *const maint_allowed[] = {"on", "message", "actor", NULL};
    const char *const *allowed = what[0] == 'h'   ? hold_allowed
                                 : what[0] == 'r' ? release_allowed
                                                  : maint_allowed;
    json_t *o = parse_body(c, body, n, allowed);
    if (o == NULL)
        return 0;
    const char *actor, *max = NULL, *message = NULL;
    char err[1536];
    int rc;
    if (opt_actor(c, o, &actor) < 0)
        goto out;
    if (what[0] == 'h') {
        uint64_t ms = ROLLOUT_HOLD_DEFAULT_MS;
        if (opt_string(c, o, "max", &max) < 0)
            goto out;
        if (max != NULL && (duration_parse(max, &ms) != 0 || ms == 0)) {
            snprintf(err, sizeof(err),
                     "max: expected a duration like 500ms, 30s or 2m (at most 1h), got '%.64s'",
                     max);
            respond_error(c, 400, err);
            goto out;
        }
        rc = rollout_hold(c->a->r, service, ms, actor, err, sizeof(err));
    } else if (what[0] == 'r') {
        rc = rollout_release(c->a->r, service, actor, err, sizeof(err));
    } else {
        json_t *jo = json_object_get(o, "on");
        if (!json_is_boolean(jo)) {
            respond_error(c, 400, "on: required, true or false");
            goto out;
        }
        if (opt_string(c, o, "message", &message) < 0)
            goto out;
        if (message != NULL && !json_is_true(jo)) {
            respond_error(c, 400, "message: only with on: true");
            goto out;
        }
        rc = rollout_maintenance(c->a->r, service, json_is_true(jo), message, actor, err,
                                 sizeof(err));
    }
    if (rc < 0) {
        respond_error(c, status_of(rc), err);
        goto out;
    }
    respond_json(c, 200, rollout_service_json(c->a->r, service));
out:
    json_decref(o);
    return 0;
}

static int route_rollback(struct api_conn *c, const char *service, const char *body, size_t n)
{
    static const char *const allowed[] = {"reason", "actor", "expect_live", NULL};
    json_t *o = parse_body(c, body, n, allowed);
    if (o == NULL)
        return 0;
    const char *reason, *actor, *expect;
    if (opt_reason(c, o, &reason) == 0 && opt_actor(c, o, &actor) == 0 &&
        opt_string(c, o, "expect_live", &expect) == 0 && live_is(c, service, expect) == 0) {
        char err[512];
        int64_t id;
        struct api_pending *p = pending_new(c);
        int rc = rollout_rollback(c->a->r, service, actor, reason, on_change_ready, p, &id, err,
                                  sizeof(err));
        if (rc < 0) {
            c->pending = NULL;
            free(p);
            respond_error(c, status_of(rc), err);
        }
    }
    json_decref(o);
    return 0;
}

/* With "expect_step" in an action's body: 0 when change id is running at that step (1-based) of
 * its plan, else -1 after answering 409 with what it is doing instead. A person acts on what
 * they saw; a change that moved on meanwhile (a promote, a timer, a gate) must not be acted on
 * in a step they did not see. */
static int check_expected_step(struct api_conn *c, int64_t id, json_int_t want)
{
    json_t *ch = rollout_change_json(c->a->r, id, 0);
    if (ch == NULL) {
        respond_no_change(c, id);
        return -1;
    }
    const char *state = json_string_value(json_object_get(ch, "state"));
    json_t *svc = rollout_service_json(c->a->r, json_string_value(json_object_get(ch, "service")));
    json_t *cur = json_object_get(svc, "change");
    json_t *pr = json_object_get(cur, "progress");
    int here = json_integer_value(json_object_get(cur, "id")) == id && pr != NULL;
    json_int_t step = json_integer_value(json_object_get(pr, "step"));
    char msg[512];
    int rc = 0;
    if (state == NULL || strcmp(state, "running") != 0) {
        snprintf(msg, sizeof(msg), "change %lld has ended (%s) since; nothing was done",
                 (long long)id, state ? state : "?");
        rc = -1;
    } else if (here && step != want) {
        snprintf(msg, sizeof(msg),
                 "change %lld has moved on: it is at step %lld (%s, %s) now, not step %lld; "
                 "nothing was done",
                 (long long)id, (long long)step,
                 json_string_value(json_object_get(pr, "step_description")),
                 json_string_value(json_object_get(pr, "state")), (long long)want);
        rc = -1;
    }
    json_decref(svc);
    json_decref(ch);
    if (rc < 0)
        respond_error(c, 409, msg);
    return rc;
}

static int route_action(struct api_conn *c, int64_t id, const char *action, const char *body,
                        size_t n)
{
    static const char *const allowed[] = {"actor", "all", "reason", "expect_step", NULL};
    json_t *o = parse_body(c, body, n, allowed);
    if (o == NULL)
        return 0;
    const char *actor, *reason;
    int all = 0;
    if (opt_actor(c, o, &actor) < 0 || opt_reason(c, o, &reason) < 0)
        goto out;
    json_t *ja = json_object_get(o, "all");
    if (ja != NULL) {
        if (!json_is_boolean(ja)) {
            respond_error(c, 400, "all: expected true or false");
            goto out;
        }
        all = json_is_true(ja);
    }
    if (all && strcmp(action, "promote") != 0) {
        respond_error(c, 400, "all: only with promote");
        goto out;
    }
    if (strcmp(action, "approve") == 0 && (actor == NULL || *actor == '\0')) {
        respond_error(c, 400, "actor: required to approve (who approves?)");
        goto out;
    }
    json_t *je = json_object_get(o, "expect_step");
    if (je != NULL && (!json_is_integer(je) || json_integer_value(je) < 1)) {
        respond_error(c, 400, "expect_step: expected the step number (1-based) the action is for");
        goto out;
    }
    if (je != NULL && check_expected_step(c, id, json_integer_value(je)) < 0)
        goto out;
    char err[512];
    int rc = rollout_change_action(c->a->r, id, action, actor, all, err, sizeof(err));
    if (rc < 0) {
        respond_error(c, rc == -EPERM ? 403 : status_of(rc), err);
        goto out;
    }
    json_t *ch = rollout_change_json(c->a->r, id, 1);
    if (ch == NULL)
        respond_error(c, 500, "the change cannot be read back");
    else
        respond_json(c, 200, ch);
out:
    json_decref(o);
    return 0;
}

static void on_handover_done(void *req, int status, const char *message, long pid)
{
    struct api_pending *p = req;
    struct api_conn *c = p->conn;
    free(p);
    if (c == NULL)
        return;
    c->pending = NULL;
    if (status == 200)
        respond_json(c, 200, json_pack("{s:s, s:I}", "message", message, "pid", (json_int_t)pid));
    else
        respond_error(c, status, message);
}

/* 1 when st may be trusted to run as the daemon: owned by root or the daemon's user, and not
 * writable by group or others (who could otherwise swap in their own program). */
static int owner_trusted(const struct stat *st)
{
    return (st->st_uid == 0 || st->st_uid == geteuid()) && (st->st_mode & 022) == 0;
}

/* Checks that binary may replace the daemon (see api_hooks.upgrade_dir) and writes its
 * resolved path (symlinks followed) into real. Returns 0, or -1 with a sentence in msg. */
static int binary_allowed(const char *binary, const char *upgrade_dir, char *real, char *msg,
                          size_t n)
{
    char dir[PATH_MAX], exe[PATH_MAX], parent[PATH_MAX];
    struct stat st;

    if (realpath(binary, real) == NULL) {
        snprintf(msg, n, "binary %.512s: %s", binary, strerror(errno));
        return -1;
    }
    if (upgrade_dir == NULL) {
        ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (k < 0) {
            snprintf(msg, n, "cannot find the running binary's directory: %s", strerror(errno));
            return -1;
        }
        exe[k] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL)
            *(slash == exe ? slash + 1 : slash) = '\0';
        upgrade_dir = exe;
    }
    if (realpath(upgrade_dir, dir) == NULL) {
        snprintf(msg, n, "admin.upgrade_dir %.512s: %s", upgrade_dir, strerror(errno));
        return -1;
    }
    size_t dl = strlen(dir);
    if (!(strcmp(dir, "/") == 0 || (strncmp(real, dir, dl) == 0 && real[dl] == '/'))) {
        snprintf(msg, n,
                 "binary %.400s: not under admin.upgrade_dir %.400s%s; copy it there or set "
                 "admin.upgrade_dir",
                 real, dir, upgrade_dir == exe ? " (the running binary's directory)" : "");
        return -1;
    }
    if (stat(real, &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(msg, n, "binary %.512s: not a regular file", real);
        return -1;
    }
    if (!owner_trusted(&st)) {
        snprintf(msg, n,
                 "binary %.512s: owned by uid %ld with mode %04o; expected the owner root or the "
                 "daemon's user (uid %ld) and no write permission for group or others",
                 real, (long)st.st_uid, (unsigned)(st.st_mode & 07777), (long)geteuid());
        return -1;
    }
    snprintf(parent, sizeof(parent), "%s", real);
    char *slash = strrchr(parent, '/');
    *(slash == parent ? slash + 1 : slash) = '\0';
    if (stat(parent, &st) == -1 || !owner_trusted(&st)) {
        snprintf(msg, n,
                 "binary %.400s: its directory %.400s is writable by group or others or owned "
                 "by another user; expected the owner root or the daemon's user and mode go-w",
                 real, parent);
        return -1;
    }
    return 0;
}

static int route_handover(struct api_conn *c, int reload, const char *body, size_t n)
{
    static const char *const up_allowed[] = {"binary", "actor", NULL};
    static const char *const re_allowed[] = {"actor", NULL};
    json_t *o = parse_body(c, body, n, reload ? re_allowed : up_allowed);
    if (o == NULL)
        return 0;
    const char *binary = NULL, *actor = NULL;
    if (opt_actor(c, o, &actor) < 0 || (!reload && opt_string(c, o, "binary", &binary) < 0))
        goto out;
    if (binary != NULL && binary[0] != '/') {
        respond_error(c, 400, "binary: expected an absolute path");
        goto out;
    }
    if (c->a->hooks.handover == NULL) {
        respond_error(c, 501, "hand-over is not available");
        goto out;
    }
    /* An admin token must not be a way to run any program as the daemon. */
    char real[PATH_MAX], msg[1024];
    if (binary != NULL) {
        if (binary_allowed(binary, c->a->hooks.upgrade_dir, real, msg, sizeof(msg)) < 0) {
            log_warn("upgrade refused", "binary", binary, "error", msg);
            respond_error(c, 400, msg);
            goto out;
        }
        binary = real;
    }
    struct api_pending *p = pending_new(c);
    c->a->hooks.handover(c->a->hooks.ctx, binary, reload, on_handover_done, p);
out:
    json_decref(o);
    return 0;
}

struct text {
    char *p;
    size_t len, cap;
};

static void text_line(void *ctx, const char *line)
{
    struct text *t = ctx;
    size_t n = strlen(line);
    if (t->len + n + 2 > t->cap) {
        t->cap = (t->len + n + 2) * 2;
        t->p = xrealloc(t->p, t->cap);
    }
    memcpy(t->p + t->len, line, n);
    t->len += n;
    t->p[t->len++] = '\n';
    t->p[t->len] = '\0';
}

static int route_metrics(struct api_conn *c)
{
    struct text t = {xstrdup(""), 0, 1};
    if (c->a->hooks.metrics)
        c->a->hooks.metrics(c->a->hooks.ctx, text_line, &t);
    if (c->a->r != NULL) /* NULL while the daemon hands over */
        rollout_metrics(c->a->r, text_line, &t);
    char line[96];
    text_line(&t, "# HELP cutover_admin_refused_total Requests on admin.listen with an unknown "
                  "token, and dashboard logins with a wrong one.");
    text_line(&t, "# TYPE cutover_admin_refused_total counter");
    snprintf(line, sizeof(line), "cutover_admin_refused_total %llu",
             (unsigned long long)c->a->nrefused);
    text_line(&t, line);
    respond_raw(c, 200, "text/plain; version=0.0.4", t.p);
    free(t.p);
    return 0;
}

/* Decodes %XX and '+' of a query value in place. */
static void url_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%' && s[1] && s[2]) {
            char hex[3] = {s[1], s[2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == '\0') {
                *o++ = (char)v;
                s += 2;
                continue;
            }
        }
        *o++ = (*s == '+') ? ' ' : *s;
    }
    *o = '\0';
}

/* Finds key in the query string q ("a=1&b=2"); returns a heap copy of its decoded value. */
static char *query_get(const char *q, const char *key)
{
    size_t kl = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
            char *v = xstrndup(q + kl + 1, len - kl - 1);
            url_decode(v);
            return v;
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static int parse_id(const char *s, int64_t *id)
{
    char *end;
    if (*s < '1' || *s > '9')
        return -1;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || v <= 0)
        return -1;
    *id = v;
    return 0;
}

/* 404 for a service name that is neither in the config nor in any recorded change, naming it. */
static int respond_no_service(struct api_conn *c, const char *name)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "unknown service '%.64s%s' (GET /api/v1/services lists them)", name,
             strlen(name) > 64 ? "..." : "");
    return respond_error(c, 404, msg);
}

/* 1 when a query may name service: the config has it, or the store has a change of it (a
 * service a reload removed keeps its history). */
static int service_known(struct rollout *r, const char *service)
{
    json_t *o = rollout_service_json(r, service);
    if (o == NULL)
        o = rollout_changes_json(r, service, 1);
    int known = o != NULL && (json_object_get(o, "changes") == NULL ||
                              json_array_size(json_object_get(o, "changes")) > 0);
    json_decref(o);
    return known;
}

/* ---------------------------------------------------------------- event streams ------------- */

struct sse_write {
    uv_write_t req;
    struct api_conn *c; /* alive here: libuv runs write callbacks before the close callback */
    char data[];
};

static void on_sse_written(uv_write_t *w, int status)
{
    struct sse_write *sw = w->data;
    struct api_conn *c = sw->c;
    (void)status; /* a failed write shows up as a read error, which closes the connection */
    free(sw);
    if (c->sse_end && uv_stream_get_write_queue_size(&c->io.stream) == 0)
        conn_close(c);
}

/* Queues len bytes of text on an event stream; a client too slow to take them is let go. */
static void sse_send(struct api_conn *c, const char *text, size_t len)
{
    if (c->closing)
        return;
    if (uv_stream_get_write_queue_size(&c->io.stream) > API_SSE_MAX_BACKLOG) {
        conn_close(c);
        return;
    }
    struct sse_write *sw = xmalloc(sizeof(*sw) + len);
    memcpy(sw->data, text, len);
    sw->req.data = sw;
    sw->c = c;
    uv_buf_t b = uv_buf_init(sw->data, (unsigned)len);
    if (conn_write(c, &sw->req, &b, on_sse_written) < 0) {
        free(sw);
        conn_close(c);
    }
}

/* One event in text/event-stream form: its id (for Last-Event-ID), its type, and the Event
 * object as data. The service comes from the change (NULL when it cannot be read). */
static char *sse_format(const struct store_event *ev, const char *service)
{
    json_t *o = rollout_event_json(ev, service);
    char *data = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    /* The type is one of the engine's words; anything else must not break the framing. */
    const char *type = strpbrk(ev->type, "\r\n") == NULL ? ev->type : "event";
    char *text = xasprintf("id: %lld\nevent: %s\ndata: %s\n\n", (long long)ev->id, type, data);
    free(data);
    return text;
}

/* Sends ev, of service, to stream c and remembers it as the last one sent there. */
static void sse_send_event(struct api_conn *c, const struct store_event *ev, const char *service)
{
    char *text = sse_format(ev, service);
    sse_send(c, text, strlen(text));
    free(text);
    c->sse_last_id = ev->id;
}

/* Sends ev to every stream that wants it. */
static void sse_publish(struct api *a, const struct store_event *ev)
{
    struct store_change ch = {0};
    int have = a->st != NULL && store_change_get(a->st, ev->change_id, &ch) == 0;
    char *text = sse_format(ev, have ? ch.service : NULL);
    size_t len = strlen(text);
    for (struct api_conn *c = a->conns, *next; c != NULL; c = next) {
        next = c->next; /* sse_send may close c */
        if (c->sse && !c->sse_end && ev->id > c->sse_last_id &&
            (c->sse_service == NULL || (have && strcmp(c->sse_service, ch.service) == 0))) {
            c->sse_last_id = ev->id; /* a replay in this same turn may have sent it already */
            sse_send(c, text, len);
        }
    }
    free(text);
    if (have)
        store_change_done(&ch);
}

static void on_flush(uv_timer_t *t)
{
    struct api *a = t->data;
    for (size_t i = 0; i < a->nqueued; i++)
        sse_publish(a, &a->queued[i]);
    store_event_list_free(a->queued, a->nqueued);
    a->queued = NULL;
    a->nqueued = a->capqueued = 0;
}

/* The store's listener: events are sent on the next loop turn, outside the rollout engine's
 * call (whose transaction may still be open, and which must not wait for sockets). */
static void on_store_event(void *ctx, const struct store_event *ev)
{
    struct api *a = ctx;
    int any = 0;
    for (struct api_conn *c = a->conns; c != NULL && !any; c = c->next)
        any = c->sse;
    if (!any)
        return;
    if (a->nqueued == a->capqueued) {
        a->capqueued = a->capqueued ? a->capqueued * 2 : 8;
        a->queued = xrealloc(a->queued, a->capqueued * sizeof(*a->queued));
    }
    struct store_event *q = &a->queued[a->nqueued++];
    *q = *ev;
    q->type = xstrdup(ev->type);
    q->message = ev->message ? xstrdup(ev->message) : NULL;
    q->hash = ev->hash ? xstrdup(ev->hash) : NULL;
    uv_timer_start(&a->flush, on_flush, 0, 0);
}

static void on_beat(uv_timer_t *t)
{
    struct api *a = t->data;
    static const char beat[] = ": keep-alive\n\n";
    for (struct api_conn *c = a->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->sse)
            sse_send(c, beat, sizeof(beat) - 1);
    }
}

/* GET /api/v1/events[?service=NAME]: the events of every change as they are stored, as
 * server-sent events, until the client goes away. A client that sends Last-Event-ID first gets
 * what it missed (at most API_SSE_REPLAY_MAX events). */
static int route_events(struct api_conn *c, const char *query)
{
    struct api *a = c->a;
    if (a->st == NULL)
        return respond_error(c, 501, "events are not available");
    char *svc = query_get(query, "service");
    if (svc != NULL && c->a->r != NULL && !service_known(c->a->r, svc)) {
        respond_no_service(c, svc);
        free(svc);
        return 0;
    }
    if (c->tcp && a->ntcp_sse >= API_TCP_MAX_STREAMS) {
        free(svc);
        c->close_after = 1;
        return respond_error(c, 503, "too many event streams on admin.listen; retry later");
    }
    c->sse = 1;
    c->sse_service = svc;
    c->busy = 1; /* no other request on this connection: it is the stream's now */
    if (c->tcp) {
        a->ntcp_sse++;
        uv_timer_stop(&c->deadline);
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n"
                               "Connection: close\r\n\r\n: cutover events\n\n";
    sse_send(c, head, sizeof(head) - 1);
    if (c->last_event_id > 0) {
        struct store_event *v;
        size_t n;
        if (store_event_list_since(a->st, c->last_event_id, svc, API_SSE_REPLAY_MAX, &v, &n) == 0) {
            for (size_t i = 0; i < n && !c->closing; i++) {
                struct store_change ch = {0};
                int have = store_change_get(a->st, v[i].change_id, &ch) == 0;
                sse_send_event(c, &v[i], have ? ch.service : NULL);
                if (have)
                    store_change_done(&ch);
            }
            store_event_list_free(v, n);
            /* More were missed than one replay holds: end here, and the client comes back
             * from the last one it got. Going on live would leave a hole for good. */
            if (n == API_SSE_REPLAY_MAX)
                c->sse_end = 1;
        }
    }
    return 0;
}

/* POST /api/v1/changes/ID/note {"text": ..., "actor": ...}: a lessons-learned note. */
static int route_note(struct api_conn *c, int64_t id, const char *body, size_t n)
{
    static const char *const allowed[] = {"text", "actor", NULL};
    json_t *o = parse_body(c, body, n, allowed);
    if (o == NULL)
        return 0;
    const char *actor, *text;
    if (opt_actor(c, o, &actor) < 0 || opt_string(c, o, "text", &text) < 0)
        goto out;
    if (text == NULL) {
        respond_error(c, 400, "text: required (the note)");
        goto out;
    }
    if (actor == NULL) {
        respond_error(c, 400, "actor: required (who writes the note?)");
        goto out;
    }
    char err[512];
    int rc = rollout_note(c->a->r, id, actor, text, err, sizeof(err));
    if (rc < 0) {
        respond_error(c, status_of(rc), err);
        goto out;
    }
    json_t *ch = rollout_change_json(c->a->r, id, 1);
    if (ch == NULL)
        respond_error(c, 500, "the change cannot be read back");
    else
        respond_json(c, 200, ch);
out:
    json_decref(o);
    return 0;
}

/* GET /api/v1/changes/ID/verify (id > 0) and GET /api/v1/verify (id 0): the hash chain. */
static int route_verify(struct api_conn *c, int64_t id)
{
    int rc = 0;
    json_t *o = rollout_verify_json(c->a->r, id, &rc);
    if (o == NULL && rc == -ENOENT)
        return respond_no_change(c, id);
    if (o == NULL)
        return respond_error(c, 500, "cannot read the store");
    return respond_json(c, 200, o);
}

/* GET /api/v1/stats[?service=NAME&since=DURATION]: the delivery figures (default 30d). */
static int route_stats(struct api_conn *c, const char *query)
{
    char *svc = query_get(query, "service"), *since = query_get(query, "since");
    uint64_t window = (uint64_t)API_STATS_WINDOW_MS;
    int64_t now = store_now_ms();
    if (since != NULL &&
        (duration_parse(since, &window) != 0 || window == 0 || window > (uint64_t)now)) {
        respond_error(c, 400, "since: expected a duration such as 7d, 24h or 90m");
        goto out;
    }
    if (svc != NULL && !service_known(c->a->r, svc)) {
        respond_no_service(c, svc);
        goto out;
    }
    json_t *o = rollout_stats_json(c->a->r, svc, now - (int64_t)window, now);
    if (o == NULL)
        respond_error(c, 500, "cannot read the store");
    else
        respond_json(c, 200, o);
out:
    free(svc);
    free(since);
    return 0;
}

/* ---------------------------------------------------------------- the route table ----------- */

/* What a handler gets besides its connection: the route's decoded :name or :id segment, the
 * raw query string (NULL: none) and the body. */
struct api_call {
    const char *name;
    int64_t id;
    const char *query;
    const char *body;
    size_t blen;
};

typedef int (*api_handler_cb)(struct api_conn *c, const struct api_call *q);

/* Anyone may ask (the dashboard's page and its login): no token needed. */
#define API_ROLE_NONE ((enum config_role)0)

/* One row per route: a reader looks here for what a request needs. pattern is matched segment
 * by segment on the decoded path; ":name" matches any one segment, ":id" a change id. engine:
 * the handler needs the rollout engine, so the route answers 503 while the daemon hands over
 * (a retry on a new connection may reach the successor). The unix socket is the daemon user's
 * own and is not asked for a role. */
struct api_route {
    enum http_method method;
    const char *pattern;
    enum config_role min_role;
    int engine;
    api_handler_cb handler;
};

static int h_metrics(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    return route_metrics(c);
}

static int h_upgrade(struct api_conn *c, const struct api_call *q)
{
    return route_handover(c, 0, q->body, q->blen);
}

static int h_reload(struct api_conn *c, const struct api_call *q)
{
    return route_handover(c, 1, q->body, q->blen);
}

static int h_events(struct api_conn *c, const struct api_call *q)
{
    return route_events(c, q->query);
}

static int h_health(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    return respond_json(
        c, 200,
        json_pack("{s:s, s:i, s:s}", "status", "ok", "pid", (int)getpid(), "version", API_VERSION));
}

static int h_services(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    return respond_json(c, 200, rollout_services_json(c->a->r));
}

static int h_service(struct api_conn *c, const struct api_call *q)
{
    json_t *o = rollout_service_json(c->a->r, q->name);
    if (o == NULL)
        return respond_no_service(c, q->name);
    return respond_json(c, 200, o);
}

static int h_plan(struct api_conn *c, const struct api_call *q)
{
    char *ver = query_get(q->query, "version"), *pl = query_get(q->query, "plan");
    char err[512];
    int rc = 0;
    json_t *o =
        ver == NULL ? NULL : rollout_plan_preview(c->a->r, q->name, ver, pl, err, sizeof(err), &rc);
    free(ver);
    free(pl);
    if (rc == 0 && o == NULL)
        return respond_error(c, 400, "version: required (?version=V)");
    if (o == NULL)
        return respond_error(c, status_of(rc), err);
    return respond_json(c, 200, o);
}

static int h_deploy(struct api_conn *c, const struct api_call *q)
{
    return route_deploy(c, q->name, q->body, q->blen);
}

static int h_rollback(struct api_conn *c, const struct api_call *q)
{
    return route_rollback(c, q->name, q->body, q->blen);
}

static int h_changes(struct api_conn *c, const struct api_call *q)
{
    char *svc = query_get(q->query, "service");
    char *lim = query_get(q->query, "limit");
    long limit = 100;
    if (lim != NULL) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end != '\0' || limit < 1 || limit > 10000) {
            free(svc);
            free(lim);
            return respond_error(c, 400, "limit: expected an integer 1..10000");
        }
    }
    if (svc != NULL && !service_known(c->a->r, svc)) {
        respond_no_service(c, svc);
        free(svc);
        free(lim);
        return 0;
    }
    json_t *o = rollout_changes_json(c->a->r, svc, (size_t)limit);
    free(svc);
    free(lim);
    if (o == NULL)
        return respond_error(c, 500, "cannot read the store");
    return respond_json(c, 200, o);
}

/* GET /api/v1/audit[?since=DURATION&limit=N]: the audit log, oldest first. */
static int h_audit(struct api_conn *c, const struct api_call *q)
{
    char *since = query_get(q->query, "since"), *lim = query_get(q->query, "limit");
    uint64_t ago = 0;
    long limit = 1000;
    int bad_since = since != NULL && duration_parse(since, &ago) != 0;
    char *end = NULL;
    if (lim != NULL)
        limit = strtol(lim, &end, 10);
    int bad_lim = lim != NULL && (*end != '\0' || limit < 1 || limit > 100000);
    free(since);
    free(lim);
    if (bad_since)
        return respond_error(c, 400, "since: expected a duration such as 30m, 24h or 7d");
    if (bad_lim)
        return respond_error(c, 400, "limit: expected an integer 1..100000");
    if (c->a->st == NULL)
        return respond_error(c, 503, "no store attached");
    int64_t from = ago ? store_now_ms() - (int64_t)ago : 0;
    struct store_audit *v = NULL;
    size_t n = 0;
    if (store_audit_list(c->a->st, from, (size_t)limit, &v, &n) < 0)
        return respond_error(c, 500, "cannot read the store");
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:I, s:o, s:s?, s:s, s:s?, s:s, s:s, s:i, s:s?}", "id",
                                        (json_int_t)v[i].id, "time", change_iso_time(v[i].ts_ms),
                                        "actor", v[i].actor, "channel", v[i].channel, "peer",
                                        v[i].peer, "method", v[i].method, "path", v[i].path,
                                        "status", v[i].status, "outcome", v[i].outcome));
    store_audit_list_free(v, n);
    return respond_json(c, 200, json_pack("{s:o}", "audit", arr));
}

static int h_change(struct api_conn *c, const struct api_call *q)
{
    json_t *o = rollout_change_json(c->a->r, q->id, 1);
    if (o == NULL)
        return respond_no_change(c, q->id);
    return respond_json(c, 200, o);
}

static int h_report(struct api_conn *c, const struct api_call *q)
{
    char *fmt = query_get(q->query, "format");
    int md = fmt != NULL && strcmp(fmt, "md") == 0;
    int bad = fmt != NULL && !md && strcmp(fmt, "json") != 0;
    free(fmt);
    if (bad)
        return respond_error(c, 400, "format: expected md or json");
    if (md) {
        char *text = rollout_report_md(c->a->r, q->id);
        if (text == NULL)
            return respond_no_change(c, q->id);
        respond_raw(c, 200, "text/markdown; charset=utf-8", text);
        free(text);
        return 0;
    }
    json_t *o = rollout_report_json(c->a->r, q->id);
    if (o == NULL)
        return respond_no_change(c, q->id);
    return respond_json(c, 200, o);
}

static int h_promote(struct api_conn *c, const struct api_call *q)
{
    return route_action(c, q->id, "promote", q->body, q->blen);
}

static int h_pause(struct api_conn *c, const struct api_call *q)
{
    return route_action(c, q->id, "pause", q->body, q->blen);
}

static int h_resume(struct api_conn *c, const struct api_call *q)
{
    return route_action(c, q->id, "resume", q->body, q->blen);
}

static int h_abort(struct api_conn *c, const struct api_call *q)
{
    return route_action(c, q->id, "abort", q->body, q->blen);
}

static int h_approve(struct api_conn *c, const struct api_call *q)
{
    return route_action(c, q->id, "approve", q->body, q->blen);
}

static int secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/* GET / and GET /dash/NAME: the dashboard's page and its files, to anyone (the data they show
 * needs a session). */
static int h_dash_file(struct api_conn *c, const char *name)
{
    const struct dash_asset *f = dash_asset_find(name);
    if (f == NULL)
        return respond_error(c, 404, "no such file of the dashboard");
    respond_raw(c, 200, f->type, f->data);
    return 0;
}

static int h_dash_index(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    return h_dash_file(c, "index.html");
}

static int h_dash_asset(struct api_conn *c, const struct api_call *q)
{
    return h_dash_file(c, q->name);
}

static int64_t wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* The peer's address as text, for the log. */
static void peer_text(const struct api_conn *c, char *out, size_t n)
{
    snprintf(out, n, "?");
    if (c->peer.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->peer)->sin_addr, out, (socklen_t)n);
    else if (c->peer.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->peer)->sin6_addr, out, (socklen_t)n);
}

/* A refused token or login: counted (/metrics) and logged with the peer's address. */
static void refused(struct api_conn *c, const char *what)
{
    char peer[64];
    peer_text(c, peer, sizeof(peer));
    c->a->nrefused++;
    log_warn(what, "peer", peer);
}

/* {"name", "role", "csrf", "expires"} of the session of the request (csrf and expires null
 * for a bearer token, which needs no CSRF token). */
static json_t *session_json(const struct api_conn *c)
{
    json_t *o =
        json_pack("{s:s, s:s}", "name", c->who->name, "role", config_role_name(c->who->role));
    if (c->via_session) {
        char csrf[SESSION_CSRF_LEN];
        session_csrf(c->who, c->session, strlen(c->session), csrf);
        json_object_set_new(o, "csrf", json_string(csrf));
        json_object_set_new(o, "expires", json_integer((json_int_t)c->session_expires));
    } else {
        json_object_set_new(o, "csrf", json_null());
        json_object_set_new(o, "expires", json_null());
    }
    return o;
}

/* POST /api/v1/session {"token": "..."}: the dashboard's login. A right token gives a session
 * cookie (HttpOnly, SameSite=Strict, Secure over TLS, SESSION_TTL_S); a wrong one is a refused
 * attempt (401), counted and logged like an unknown bearer token. */
static int h_login(struct api_conn *c, const struct api_call *q)
{
    static const char *const allowed[] = {"token", NULL};
    json_t *o = parse_body(c, q->body, q->blen, allowed);
    if (o == NULL)
        return 0;
    const char *tok;
    if (opt_string(c, o, "token", &tok) < 0)
        goto out;
    if (tok == NULL || *tok == '\0') {
        respond_error(c, 400, "token: required (a token of admin.tokens_file)");
        goto out;
    }
    const struct config_token *who = NULL;
    for (size_t i = 0; i < c->a->ntokens; i++) {
        const struct config_token *t = &c->a->tokens[i];
        if (secret_equal(tok, strlen(tok), t->secret, strlen(t->secret)))
            who = t; /* no early exit: every token is compared */
    }
    if (who == NULL) {
        refused(c, "dashboard login refused: wrong token");
        respond_error(c, 401, "wrong token: it is not one of admin.tokens_file");
        goto out;
    }
    int64_t now = wall_s();
    if (session_issue(who, now, c->session, sizeof(c->session)) < 0) {
        respond_error(c, 500, "cannot start a session (no randomness)");
        goto out;
    }
    c->who = who;
    c->via_session = 1;
    c->session_expires = now + SESSION_TTL_S;
    c->extra_head = xasprintf("Set-Cookie: " SESSION_COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; "
                              "SameSite=Strict%s\r\n",
                              c->session, SESSION_TTL_S, c->secure ? "; Secure" : "");
    log_info("dashboard login", "token", who->name);
    respond_json(c, 200, session_json(c));
out:
    json_decref(o);
    return 0;
}

/* GET /api/v1/session: who the request's session or token is, and its CSRF token. */
static int h_session(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    if (!c->tcp) /* the unix socket: who the kernel says the peer is (api/who.h) */
        return respond_json(
            c, 200,
            json_pack("{s:s, s:s, s:n, s:n}", "name",
                      c->unix_who.person ? c->unix_who.person->name : c->unix_who.user, "role",
                      config_role_name(c->unix_who.role), "csrf", "expires"));
    return respond_json(c, 200, session_json(c));
}

/* DELETE /api/v1/session: the session ends here (and its cookie in the browser). */
static int h_logout(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    if (c->via_session)
        session_revoke(&c->a->logged_out, c->session, strlen(c->session), c->session_expires,
                       wall_s());
    c->extra_head = xstrdup("Set-Cookie: " SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; "
                            "SameSite=Strict\r\n");
    return respond_json(c, 200, json_pack("{s:b}", "logged_out", c->via_session));
}

/* GET /api/v1/services/NAME/series: the dashboard's charts (serve/series.h). */
static int h_series(struct api_conn *c, const struct api_call *q)
{
    if (c->a->hooks.series == NULL)
        return respond_error(c, 501, "series are not available");
    json_t *o = c->a->hooks.series(c->a->hooks.ctx, q->name);
    if (o == NULL)
        return respond_no_service(c, q->name);
    return respond_json(c, 200, o);
}

static int h_note(struct api_conn *c, const struct api_call *q)
{
    return route_note(c, q->id, q->body, q->blen);
}

static int h_verify(struct api_conn *c, const struct api_call *q)
{
    return route_verify(c, q->id);
}

static int h_verify_all(struct api_conn *c, const struct api_call *q)
{
    (void)q;
    return route_verify(c, 0);
}

static int h_stats(struct api_conn *c, const struct api_call *q)
{
    return route_stats(c, q->query);
}

static int h_hold(struct api_conn *c, const struct api_call *q)
{
    return route_mode(c, q->name, "hold", q->body, q->blen);
}

static int h_release(struct api_conn *c, const struct api_call *q)
{
    return route_mode(c, q->name, "release", q->body, q->blen);
}

static int h_maintenance(struct api_conn *c, const struct api_call *q)
{
    return route_mode(c, q->name, "maintenance", q->body, q->blen);
}

static const struct api_route api_routes[] = {
    {HTTP_M_GET, "/", API_ROLE_NONE, 0, h_dash_index},
    {HTTP_M_GET, "/dash/:name", API_ROLE_NONE, 0, h_dash_asset},
    {HTTP_M_POST, "/api/v1/session", API_ROLE_NONE, 0, h_login},
    {HTTP_M_GET, "/api/v1/session", CONFIG_ROLE_VIEWER, 0, h_session},
    {HTTP_M_DELETE, "/api/v1/session", CONFIG_ROLE_VIEWER, 0, h_logout},
    {HTTP_M_GET, "/metrics", CONFIG_ROLE_VIEWER, 0, h_metrics},
    {HTTP_M_POST, "/api/v1/upgrade", CONFIG_ROLE_ADMIN, 0, h_upgrade},
    {HTTP_M_POST, "/api/v1/reload", CONFIG_ROLE_ADMIN, 0, h_reload},
    {HTTP_M_GET, "/api/v1/events", CONFIG_ROLE_VIEWER, 1, h_events},
    {HTTP_M_GET, "/api/v1/health", CONFIG_ROLE_VIEWER, 1, h_health},
    {HTTP_M_GET, "/api/v1/services", CONFIG_ROLE_VIEWER, 1, h_services},
    {HTTP_M_GET, "/api/v1/services/:name", CONFIG_ROLE_VIEWER, 1, h_service},
    {HTTP_M_GET, "/api/v1/services/:name/plan", CONFIG_ROLE_VIEWER, 1, h_plan},
    {HTTP_M_GET, "/api/v1/services/:name/series", CONFIG_ROLE_VIEWER, 1, h_series},
    {HTTP_M_POST, "/api/v1/services/:name/deploy", CONFIG_ROLE_OPERATOR, 1, h_deploy},
    {HTTP_M_POST, "/api/v1/services/:name/rollback", CONFIG_ROLE_OPERATOR, 1, h_rollback},
    {HTTP_M_POST, "/api/v1/services/:name/hold", CONFIG_ROLE_OPERATOR, 1, h_hold},
    {HTTP_M_POST, "/api/v1/services/:name/release", CONFIG_ROLE_OPERATOR, 1, h_release},
    {HTTP_M_POST, "/api/v1/services/:name/maintenance", CONFIG_ROLE_OPERATOR, 1, h_maintenance},
    {HTTP_M_GET, "/api/v1/audit", CONFIG_ROLE_OPERATOR, 0, h_audit},
    {HTTP_M_GET, "/api/v1/changes", CONFIG_ROLE_VIEWER, 1, h_changes},
    {HTTP_M_GET, "/api/v1/changes/:id", CONFIG_ROLE_VIEWER, 1, h_change},
    {HTTP_M_GET, "/api/v1/changes/:id/report", CONFIG_ROLE_VIEWER, 1, h_report},
    {HTTP_M_POST, "/api/v1/changes/:id/promote", CONFIG_ROLE_OPERATOR, 1, h_promote},
    {HTTP_M_POST, "/api/v1/changes/:id/pause", CONFIG_ROLE_OPERATOR, 1, h_pause},
    {HTTP_M_POST, "/api/v1/changes/:id/resume", CONFIG_ROLE_OPERATOR, 1, h_resume},
    {HTTP_M_POST, "/api/v1/changes/:id/abort", CONFIG_ROLE_OPERATOR, 1, h_abort},
    {HTTP_M_POST, "/api/v1/changes/:id/approve", CONFIG_ROLE_OPERATOR, 1, h_approve},
    {HTTP_M_POST, "/api/v1/changes/:id/note", CONFIG_ROLE_OPERATOR, 1, h_note},
    {HTTP_M_GET, "/api/v1/changes/:id/verify", CONFIG_ROLE_VIEWER, 1, h_verify},
    {HTTP_M_GET, "/api/v1/verify", CONFIG_ROLE_VIEWER, 1, h_verify_all},
    {HTTP_M_GET, "/api/v1/stats", CONFIG_ROLE_VIEWER, 1, h_stats},
};

#define API_MAX_SEGMENTS 8

/* A request's path cut into decoded segments ("/" is one empty segment). */
struct api_path {
    char *seg[API_MAX_SEGMENTS];
    size_t n;
};

/* Cuts path (modified in place) into p. Returns 0, or -1 for a path with more segments than any
 * route has, or with an encoded NUL or slash (400: a decoded NUL would cut a name short of what
 * was asked for, and a decoded slash would make a name of two segments). */
static int path_split(char *path, struct api_path *p, int *bad)
{
    *bad = 0;
    p->n = 0;
    for (char *s = path; *s == '/';) {
        if (p->n == API_MAX_SEGMENTS)
            return -1;
        *s++ = '\0';
        p->seg[p->n++] = s;
        char *slash = strchr(s, '/');
        if (slash == NULL)
            break;
        s = slash;
    }
    for (size_t i = 0; i < p->n; i++) {
        if (strstr(p->seg[i], "%00") || strcasestr(p->seg[i], "%2f")) {
            *bad = 1;
            return -1;
        }
        url_decode(p->seg[i]);
    }
    return p->n == 0 ? -1 : 0;
}

/* 1 when the decoded path p has the shape of pattern; fills q's name and id. */
static int route_match(const char *pattern, const struct api_path *p, struct api_call *q)
{
    size_t i = 0;
    const char *s = pattern;
    while (*s == '/') {
        s++;
        size_t len = strcspn(s, "/");
        if (i == p->n)
            return 0;
        const char *seg = p->seg[i++];
        if (len == 5 && strncmp(s, ":name", 5) == 0)
            q->name = seg;
        else if (len == 3 && strncmp(s, ":id", 3) == 0)
            q->id = parse_id(seg, &q->id) == 0 ? q->id : -1;
        else if (strlen(seg) != len || strncmp(seg, s, len) != 0)
            return 0;
        s += len;
    }
    return i == p->n;
}

/* Finds the route of method on p. Returns it, or NULL with *status 404 (no such path) or 405
 * (the path is there, for another method: *allow names it). */
static const struct api_route *route_find(enum http_method m, const struct api_path *p,
                                          struct api_call *q, int *status, const char **allow)
{
    *status = 404;
    for (size_t i = 0; i < sizeof(api_routes) / sizeof(api_routes[0]); i++) {
        const struct api_route *rt = &api_routes[i];
        struct api_call t = *q;
        if (!route_match(rt->pattern, p, &t))
            continue;
        if (rt->method != m) {
            *status = 405;
            *allow = rt->method == HTTP_M_GET    ? "use GET"
                     : rt->method == HTTP_M_POST ? "use POST"
                                                 : "use DELETE";
            continue;
        }
        *q = t;
        return rt;
    }
    return NULL;
}

/* The one place that decides whether the caller may use rt: over admin.listen, a token (or a
 * dashboard session) of at least the route's role. Answers 401/403 and returns -1 when not. */
static int route_allowed(struct api_conn *c, const struct api_route *rt)
{
    if (rt->min_role == API_ROLE_NONE)
        return 0;
    if (!c->tcp) {
        /* The socket's own users: a person has their role, root and the daemon's user admin,
         * another member of admin.socket_group viewer (api/who.h). */
        const struct who_unix *w = &c->unix_who;
        if (w->role >= rt->min_role)
            return 0;
        char msg[256];
        snprintf(msg, sizeof(msg), "unix user %s (%s) has the role %s; this request needs %s",
                 w->user, w->person ? w->person->name : "not one of people",
                 config_role_name(w->role), config_role_name(rt->min_role));
        c->close_after = 1;
        respond_error(c, 403, msg);
        return -1;
    }
    if (c->who == NULL) {
        c->close_after = 1; /* the body of a refused request is not read */
        respond_error(c, 401,
                      "send Authorization: Bearer TOKEN (a token of admin.tokens_file; the CLI "
                      "sends $CUTOVER_TOKEN)");
        return -1;
    }
    if (c->who->role < rt->min_role) {
        char msg[256];
        snprintf(msg, sizeof(msg), "token '%s' has the role %s; this request needs %s",
                 c->who->name, config_role_name(c->who->role), config_role_name(rt->min_role));
        c->close_after = 1;
        respond_error(c, 403, msg);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- connections --------------- */

/* Compares in time that depends on the lengths only, not on where the bytes differ. */
static int secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char d = alen != blen;
    for (size_t i = 0; i < alen && i < blen; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* The value of header name (lower case) of req, or NULL; *len gets its length. */
static const char *header_get(const struct http_request *req, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len == nl && strncasecmp(h->name, name, nl) == 0) {
            *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* The dashboard session cookie's value in req's Cookie header, or NULL. */
static const char *session_cookie(const struct http_request *req, size_t *len)
{
    const char *v = NULL;
    if (!http_cookie_find(req->headers, req->num_headers, SESSION_COOKIE, &v, len) || *len == 0)
        return NULL;
    return v;
}

/* 1 when req, which changes something, may come from the dashboard's own page: an Origin
 * header, if any, names the host the request was sent to (a browser always sends one on a
 * cross-site POST). */
static int same_origin(const struct http_request *req)
{
    size_t ol;
    const char *origin = header_get(req, "origin", &ol);
    if (origin == NULL)
        return 1;
    const char *sep = ol > 3 ? memmem(origin, ol, "://", 3) : NULL;
    if (sep == NULL || req->host == NULL)
        return 0;
    size_t hl = ol - (size_t)(sep + 3 - origin);
    return hl == req->host_len && strncasecmp(sep + 3, req->host, hl) == 0;
}

/* Finds who sends a request over admin.listen: the token of its Authorization header, or else
 * the dashboard session of its cookie; a request that changes something with a cookie must
 * also carry the session's CSRF token (X-CSRF-Token) and come from the same origin. A request
 * with neither may go on only to a route anyone may use (rt's role API_ROLE_NONE); what role
 * the route needs is route_allowed's to decide. Answers 401/403 and returns -1 when the
 * request may not go on. */
static int identify(struct api_conn *c, const struct http_request *req, const struct api_route *rt)
{
    const char *tok = NULL;
    size_t tlen = 0;
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len == 13 && strncasecmp(h->name, "authorization", 13) == 0 &&
            h->value_len > 7 && strncasecmp(h->value, "bearer ", 7) == 0) {
            tok = h->value + 7;
            tlen = h->value_len - 7;
            while (tlen > 0 && *tok == ' ')
                tok++, tlen--;
        }
    }
    const struct config_token *who = NULL;
    for (size_t i = 0; tok != NULL && i < c->a->ntokens; i++) {
        const struct config_token *t = &c->a->tokens[i];
        if (secret_equal(tok, tlen, t->secret, strlen(t->secret)))
            who = t; /* no early exit: every token is compared */
    }
    size_t xl;
    const char *xfp = header_get(req, "x-forwarded-proto", &xl);
    c->secure = c->tls != NULL || (xfp != NULL && xl == 5 && strncasecmp(xfp, "https", 5) == 0);
    c->via_session = 0;
    size_t cl = 0;
    const char *cookie = tok == NULL ? session_cookie(req, &cl) : NULL;
    int64_t expires = 0;
    if (cookie != NULL && cl < sizeof(c->session))
        who = session_check(cookie, cl, c->a->tokens, c->a->ntokens, c->a->logged_out, wall_s(),
                            &expires);
    int changes = req->meth != HTTP_M_GET && req->meth != HTTP_M_HEAD;
    if (who != NULL && cookie != NULL) {
        c->via_session = 1;
        memcpy(c->session, cookie, cl);
        c->session[cl] = '\0';
        c->session_expires = expires;
        size_t sl = 0;
        const char *sent = header_get(req, "x-csrf-token", &sl);
        /* A login does not act with the session it may still carry: it needs no CSRF token. */
        int acts = rt == NULL || rt->min_role != API_ROLE_NONE;
        if (changes && acts &&
            (!same_origin(req) || sent == NULL || !session_csrf_ok(who, cookie, cl, sent, sl))) {
            c->close_after = 1;
            respond_error(c, 403,
                          "a request of a dashboard session that changes something needs the "
                          "session's X-CSRF-Token (GET /api/v1/session) and the same origin");
            return -1;
        }
    }
    if (who == NULL && changes && !same_origin(req)) {
        c->close_after = 1;
        respond_error(c, 403, "a request from another origin");
        return -1;
    }
    if (who == NULL && (tok != NULL || rt == NULL || rt->min_role != API_ROLE_NONE)) {
        c->close_after = 1; /* the body of a refused request is not read */
        if (tok != NULL)
            refused(c, "admin API: unknown token refused");
        respond_error(c, 401,
                      tok != NULL      ? "unknown token"
                      : cookie != NULL ? "the session has expired or was logged out; log in again"
                                       : "send Authorization: Bearer TOKEN (a token of "
                                         "admin.tokens_file; the CLI sends $CUTOVER_TOKEN)");
        return -1;
    }
    if (who != NULL && !c->authed) {
        /* Only now does the connection take a token holder's slot. */
        if (c->a->nauthed >= API_TCP_MAX_CONNS) {
            c->close_after = 1;
            respond_error(c, 503, "too many admin connections; retry later");
            return -1;
        }
        c->authed = 1;
        c->a->nauthed++;
    }
    c->who = who;
    return 0;
}

/* Answers the request at the start of the buffer once it is complete. */
static void conn_process(struct api_conn *c)
{
    if (c->busy || c->closing || c->len == 0)
        return;
    struct http_header hdrs[64];
    struct http_request req = {.headers = hdrs, .num_headers = 64};
    struct http_limits lim = {.max_headers = 64, .max_uri = 4096};
    int rc = http_parse_request(c->buf, c->len, &req, &lim);
    if (rc == HTTP_PARTIAL) {
        if (c->len >= API_MAX_HEAD) {
            c->close_after = 1;
            respond_error(c, 431, "request head too large");
        }
        return;
    }
    if (rc < 0) {
        c->close_after = 1;
        respond_error(c, http_err_status(rc), http_err_str(rc));
        return;
    }
    size_t head = (size_t)rc;
    /* The route and the caller's right to it are decided on the head: a refused request's body
     * is not waited for. */
    char *target = xstrndup(req.target, req.target_len);
    audit_forget(c);
    c->aud_method = xstrndup(req.method, req.method_len);
    c->aud_path = xstrndup(req.target, strcspn(target, "?")); /* not the query: it may be long */
    c->aud_action = req.meth != HTTP_M_GET && req.meth != HTTP_M_HEAD;
    char *query = strchr(target, '?');
    if (query != NULL)
        *query++ = '\0';
    struct api_path path;
    struct api_call call = {.query = query};
    int bad_path = 0, status = 404;
    const char *allow = NULL;
    const struct api_route *rt = NULL;
    if (path_split(target, &path, &bad_path) == 0)
        rt = route_find(req.meth, &path, &call, &status, &allow);
    if (c->tcp && identify(c, &req, rt) < 0)
        goto out;
    if (rt != NULL && route_allowed(c, rt) < 0)
        goto out;
    c->last_event_id = 0;
    for (size_t i = 0; i < req.num_headers; i++) {
        const struct http_header *h = &req.headers[i];
        if (h->name_len == 13 && strncasecmp(h->name, "last-event-id", 13) == 0) {
            char idbuf[24] = "";
            if (h->value_len < sizeof(idbuf))
                memcpy(idbuf, h->value, h->value_len);
            parse_id(idbuf, &c->last_event_id); /* anything else: start from now */
        }
    }
    c->close_after = (req.flags & HTTP_F_CONN_CLOSE) != 0;
    if (req.framing == HTTP_BODY_CHUNKED) {
        c->close_after = 1;
        respond_error(c, 411, "send the body with Content-Length");
        goto out;
    }
    uint64_t blen = req.framing == HTTP_BODY_LENGTH ? req.content_length : 0;
    if (blen > API_MAX_BODY) {
        c->close_after = 1;
        respond_error(c, 413, "body over 1 MiB");
        goto out;
    }
    if (c->len < head + blen)
        goto out; /* the rest of the body is on its way */
    c->req_len = head + (size_t)blen;
    c->busy = 1; /* until a response is written (maybe later, for a deploy) */
    if (c->tcp)
        uv_timer_stop(&c->deadline); /* a deploy may take its time to answer */
    call.body = c->buf + head;
    call.blen = (size_t)blen;
    if (rt == NULL && bad_path)
        respond_error(c, 400, "the path has an encoded NUL or slash");
    else if (rt == NULL)
        respond_error(c, status, status == 405 ? allow : "no such route; see docs/api.md");
    else if (rt->engine && c->a->r == NULL) {
        c->close_after = 1; /* a retry on a new connection may reach the successor */
        respond_error(c, 503, "the daemon is handing over to its successor; retry");
    } else if (strstr(rt->pattern, ":id") != NULL && call.id <= 0)
        respond_error(c, 404, "change id: expected a positive integer");
    else
        (void)rt->handler(c, &call);
out:
    free(target);
}

/* libuv runs close callbacks in reverse order of uv_close, so the api may see its listeners
 * closed before its connections: whichever closes last frees it. */
static void api_unref(struct api *a)
{
    if (--a->refs > 0)
        return;
    for (size_t i = 0; i < a->ntokens; i++) {
        free(a->tokens[i].name);
        free(a->tokens[i].secret);
    }
    free(a->tokens);
    session_revoked_free(a->logged_out);
    store_event_list_free(a->queued, a->nqueued);
    free(a->path);
    if (a->unix_fd >= 0)
        close(a->unix_fd);
    free(a);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct api_conn *c = h->data;
    struct api *a = c->a;
    if (--c->open_handles > 0)
        return;
    if (c->tcp)
        a->ntcp--;
    if (c->tcp && c->authed)
        a->nauthed--;
    if (c->tcp && c->sse)
        a->ntcp_sse--;
    free(c->buf);
    free(c->out);
    free(c->sse_service);
    free(c->extra_head);
    audit_forget(c);
    free(c);
    api_unref(a);
}

static void conn_close(struct api_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->pending != NULL) {
        c->pending->conn = NULL;
        /* The action goes on without anyone to answer: its line is written now, or never. */
        audit_write(c, API_CLIENT_GONE,
                    "{\"error\":\"the client went away before the answer; the action goes "
                    "on\"}");
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->tls != NULL)
        tls_close(c->tls, on_conn_closed); /* frees it, then gives the handle back with c */
    else
        uv_close(&c->io.handle, on_conn_closed);
    if (c->tcp)
        uv_close((uv_handle_t *)&c->deadline, on_conn_closed);
}

static void conn_alloc(void *user, uv_buf_t *buf)
{
    struct api_conn *c = user;
    if (c->cap - c->len < 4096 && c->cap < API_MAX_HEAD + API_MAX_BODY) {
        c->cap =
            c->cap * 2 > API_MAX_HEAD + API_MAX_BODY ? API_MAX_HEAD + API_MAX_BODY : c->cap * 2;
        c->buf = xrealloc(c->buf, c->cap);
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn_alloc(h->data, buf);
}

static void conn_read(void *user, ssize_t n, const uv_buf_t *buf)
{
    struct api_conn *c = user;
    (void)buf;
    if (n == 0)
        return;
    if (n < 0) {
        /* A client that went away while its deploy runs: the deploy goes on, unanswered. */
        conn_close(c);
        return;
    }
    if (c->sse)
        return; /* an event stream's client has nothing more to say: drop it */
    c->len += (size_t)n;
    if (!c->busy)
        conn_process(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_read(s->data, n, buf);
}

static void on_deadline(uv_timer_t *t)
{
    struct api_conn *c = t->data;
    if (c->tls != NULL)
        tls_handshake_timeout(c->tls); /* counted when the handshake is what was slow */
    if (!c->busy)
        conn_close(c); /* no whole request in time: a slow or idle client */
}

/* 1 when a and b are the same host (address, any port). */
static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 0;
}

/* Open TCP connections from c's host, c not included. */
static size_t conns_from_host(const struct api *a, const struct api_conn *c)
{
    size_t n = 0;
    for (const struct api_conn *o = a->conns; o != NULL; o = o->next)
        if (o != c && o->tcp && same_host(&o->peer, &c->peer))
            n++;
    return n;
}

/* Closes the connection that has waited longest without showing a token (the list is newest
 * first, so the last such one); one that is being answered is left alone. */
static void drop_oldest_unauthed(struct api *a)
{
    struct api_conn *oldest = NULL;
    for (struct api_conn *o = a->conns; o != NULL; o = o->next)
        if (o->tcp && !o->authed && !o->busy)
            oldest = o;
    if (oldest != NULL)
        conn_close(oldest);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct api *a = server->data;
    int tcp = server == (uv_stream_t *)&a->tcp_server;
    if (status < 0) {
        server_pause(a, server, status);
        return;
    }
    if (a->episode && !a->paused) {
        char n[24];
        snprintf(n, sizeof(n), "%llu", (unsigned long long)a->npaused);
        log_info("admin API: accepting again", "pauses_total", n);
        a->episode = 0;
        a->pause_ms = 0;
    }
    struct api_conn *c = xcalloc(1, sizeof(*c));
    c->a = a;
    a->refs++;
    c->tcp = tcp;
    c->cap = 8192;
    c->buf = xmalloc(c->cap);
    c->open_handles = 1;
    if (tcp) {
        uv_tcp_init(a->loop, &c->io.tcp);
        a->ntcp++; /* until on_conn_closed */
    } else {
        uv_pipe_init(a->loop, &c->io.pipe, 0);
    }
    c->io.handle.data = c;
    if (uv_accept(server, &c->io.stream) < 0) {
        uv_close(&c->io.handle, on_conn_closed);
        return;
    }
    if (!tcp)
        unix_identify(c);
    if (tcp) {
        int plen = (int)sizeof(c->peer);
        if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&c->peer, &plen) != 0)
            c->peer.ss_family = 0;
        if (conns_from_host(a, c) >= API_TCP_MAX_PER_HOST) {
            /* Refused at once rather than queued: the admin port must not pile up sockets. */
            uv_close(&c->io.handle, on_conn_closed);
            return;
        }
        if (a->ntcp - a->nauthed > API_TCP_MAX_UNAUTH)
            drop_oldest_unauthed(a);
        c->open_handles = 2;
        uv_timer_init(a->loop, &c->deadline);
        c->deadline.data = c;
        uv_timer_start(&c->deadline, on_deadline, API_TCP_FIRST_MS, API_TCP_DEADLINE_MS);
    }
    c->next = a->conns;
    if (c->next)
        c->next->prev = c;
    a->conns = c;
    if (tcp && a->tls != NULL) {
        if (tls_conn_new(&c->tls, a->tls, &c->io.stream, c) < 0) {
            conn_close(c);
            return;
        }
        if (tls_read_start(c->tls, conn_alloc, conn_read) < 0)
            conn_close(c);
        return;
    }
    uv_read_start(&c->io.stream, on_alloc, on_read);
}

/* Who connected to the unix socket: SO_PEERCRED's uid, its login name, and what the config's
 * people make of it (api/who.h). A peer whose credentials cannot be read gets the least. */
static void unix_identify(struct api_conn *c)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    uv_os_fd_t fd;
    const struct config *cfg = c->a->hooks.cfg;
    if (uv_fileno(&c->io.handle, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
        who_unix_resolve(cfg, (uid_t)-1, NULL, geteuid(), &c->unix_who);
        c->unix_who.role = c->unix_who.identified ? CONFIG_ROLE_VIEWER : CONFIG_ROLE_ADMIN;
        return;
    }
    struct passwd pw, *res = NULL;
    char buf[2048];
    if (getpwuid_r(cr.uid, &pw, buf, sizeof(buf), &res) != 0)
        res = NULL;
    who_unix_resolve(cfg, cr.uid, res ? res->pw_name : NULL, geteuid(), &c->unix_who);
}

/* Returns 1 when a daemon answers on the socket at path. */
static int socket_alive(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return 0;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int alive = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    return alive;
}

static void on_paused_closed(uv_handle_t *h)
{
    (void)h; /* the handle comes back when the pause ends (its api reference is kept) */
}

/* Listens again on a new copy of fd with the server handle h (a pipe when unix is set).
 * Returns 0 or a negative errno; on failure h is closed (or was never opened). */
static int server_reopen(struct api *a, uv_stream_t *h, int unix, int fd)
{
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own == -1)
        return -errno;
    int rc;
    if (unix) {
        uv_pipe_init(a->loop, (uv_pipe_t *)h, 0);
        rc = uv_pipe_open((uv_pipe_t *)h, own);
    } else {
        uv_tcp_init(a->loop, (uv_tcp_t *)h);
        rc = uv_tcp_open((uv_tcp_t *)h, own);
    }
    h->data = a;
    if (rc < 0)
        close(own);
    else
        rc = uv_listen(h, 64, on_connection);
    if (rc < 0)
        uv_close((uv_handle_t *)h, on_paused_closed);
    return rc;
}

static void on_pause_end(uv_timer_t *t)
{
    struct api *a = t->data;
    if ((a->paused & API_PAUSED_UNIX) && !a->stopping &&
        server_reopen(a, (uv_stream_t *)&a->server, 1, a->unix_fd) == 0)
        a->paused &= ~API_PAUSED_UNIX;
    if ((a->paused & API_PAUSED_TCP) && a->tcp_on &&
        server_reopen(a, (uv_stream_t *)&a->tcp_server, 0, a->tcp_fd) == 0)
        a->paused &= ~API_PAUSED_TCP;
    if (a->paused && !a->stopping) {
        a->npaused++;
        a->pause_ms = a->pause_ms * 2 > API_PAUSE_MAX_MS ? API_PAUSE_MAX_MS : a->pause_ms * 2;
        uv_timer_start(&a->pause_timer, on_pause_end, a->pause_ms, 0);
    }
}

/* The accept on server failed (EMFILE, ENFILE...). libuv would call on_connection again at
 * once, for as long as the shortage lasts, and the loop (signals included) would do nothing
 * else; so the server is closed for a pause that doubles from 10 ms to 1 s, and open
 * connections are served meanwhile. Logged once per episode. */
static void server_pause(struct api *a, uv_stream_t *server, int status)
{
    int bit = server == (uv_stream_t *)&a->tcp_server ? API_PAUSED_TCP : API_PAUSED_UNIX;
    if ((bit == API_PAUSED_UNIX && a->unix_fd < 0) || (bit == API_PAUSED_TCP && a->tcp_fd < 0))
        return; /* nothing to listen again with: leave it as it was */
    if (!a->episode) {
        a->episode = 1;
        log_warn("admin API: accepting paused", "error", uv_strerror(status));
    }
    a->npaused++;
    if (bit == API_PAUSED_UNIX && a->server.pipe_fname != NULL) {
        /* Closing a bound pipe unlinks its name: the socket itself stays, under its path. */
        free((void *)a->server.pipe_fname);
        a->server.pipe_fname = NULL;
    }
    a->paused |= bit;
    uv_close((uv_handle_t *)server, on_paused_closed);
    if (!uv_is_active((uv_handle_t *)&a->pause_timer)) {
        a->pause_ms = a->pause_ms == 0                     ? API_PAUSE_FIRST_MS
                      : a->pause_ms * 2 > API_PAUSE_MAX_MS ? API_PAUSE_MAX_MS
                                                           : a->pause_ms * 2;
        uv_timer_start(&a->pause_timer, on_pause_end, a->pause_ms, 0);
    }
}

uint64_t api_accept_paused(const struct api *a)
{
    return a == NULL ? 0 : a->npaused;
}

int api_start(struct api **out, uv_loop_t *loop, const char *path, struct rollout *r,
              const struct api_hooks *hooks, int takeover, char *err, size_t errlen)
{
    int rc;
    struct sockaddr_un sun;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "admin socket path too long (max %zu bytes): %s",
                 sizeof(sun.sun_path) - 1, path);
        return -ENAMETOOLONG;
    }
    if (!takeover && socket_alive(path)) {
        snprintf(err, errlen, "another cutover daemon answers on %s (same state_dir?)", path);
        return -EADDRINUSE;
    }
    /* Bind under a private name and rename it into place: the path never stops answering
     * across a hand-over, and libuv (which unlinks a pipe's bound name when it closes) only
     * ever removes the private name, never a successor's socket. */
    char *bind_path = xasprintf("%s.%ld", path, (long)getpid());
    int renamed = 1;
    if (strlen(bind_path) >= sizeof(sun.sun_path)) {
        free(bind_path);
        bind_path = xstrdup(path);
        renamed = 0;
    }
    unlink(bind_path);
    struct api *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->path = xstrdup(path);
    a->r = r;
    if (hooks != NULL)
        a->hooks = *hooks;
    uv_pipe_init(loop, &a->server, 0);
    a->refs = 1;
    a->server.data = a;
    a->unix_fd = -1;
    a->tcp_fd = -1;
    /* Only the daemon's user may talk to it: the socket is created 0600. */
    mode_t old = umask(0177);
    rc = uv_pipe_bind(&a->server, bind_path);
    umask(old);
    if (rc == 0 && hooks != NULL && hooks->cfg != NULL && hooks->cfg->admin_socket_group) {
        /* The group's members connect as themselves: SO_PEERCRED tells them apart. */
        struct group gr, *res = NULL;
        char gbuf[4096];
        if (getgrnam_r(hooks->cfg->admin_socket_group, &gr, gbuf, sizeof(gbuf), &res) != 0 ||
            res == NULL)
            rc = -ENOENT;
        else if (chown(bind_path, (uid_t)-1, gr.gr_gid) == -1 || chmod(bind_path, 0660) == -1)
            rc = -errno;
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, 64, on_connection);
    /* A successor's socket replaces its predecessor's in one rename: clients never find the
     * path missing. */
    if (rc == 0 && renamed && rename(bind_path, path) == -1)
        rc = -errno;
    free(bind_path);
    uv_os_fd_t sfd;
    if (rc == 0 && uv_fileno((uv_handle_t *)&a->server, &sfd) == 0)
        a->unix_fd = fcntl(sfd, F_DUPFD_CLOEXEC, 3); /* -1: no pause, as before */
    if (rc == 0) {
        uv_timer_init(loop, &a->pause_timer);
        a->pause_timer.data = a;
        a->refs++;
    }
    if (rc < 0) {
        snprintf(err, errlen, "admin socket %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->server, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(a->path);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

static void on_server_closed(uv_handle_t *h)
{
    api_unref(h->data);
}

int api_listen_tcp(struct api *a, int fd, const struct config_token *tokens, size_t ntokens,
                   char *err, size_t errlen)
{
    int rc;
    if (ntokens == 0) {
        snprintf(err, errlen, "admin.listen needs at least one token");
        return -EINVAL;
    }
    /* The API owns a duplicate: the daemon keeps the original to hand over to a successor. */
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own == -1) {
        rc = -errno;
        snprintf(err, errlen, "admin.listen: %s", strerror(errno));
        return rc;
    }
    uv_tcp_init(a->loop, &a->tcp_server);
    a->tcp_server.data = a;
    a->tcp_on = 1;
    a->refs++;
    if ((rc = uv_tcp_open(&a->tcp_server, own)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&a->tcp_server, 64, on_connection)) < 0) {
        snprintf(err, errlen, "admin.listen: %s", uv_strerror(rc));
        if (uv_fileno((uv_handle_t *)&a->tcp_server, &(uv_os_fd_t){0}) != 0)
            close(own); /* uv_tcp_open failed: the handle does not own it */
        uv_close((uv_handle_t *)&a->tcp_server, on_server_closed);
        a->tcp_on = 0;
        return rc;
    }
    a->tokens = xcalloc(ntokens, sizeof(*a->tokens));
    for (size_t i = 0; i < ntokens; i++) {
        a->tokens[i].name = xstrdup(tokens[i].name);
        a->tokens[i].secret = xstrdup(tokens[i].secret);
        a->tokens[i].role = tokens[i].role;
    }
    a->ntokens = ntokens;
    a->tcp_fd = fd;
    return 0;
}

void api_set_tls(struct api *a, struct tls_server *tls)
{
    a->tls = tls;
}

void api_stop_tcp(struct api *a)
{
    if (a == NULL || !a->tcp_on)
        return;
    a->tcp_on = 0;
    if (a->paused & API_PAUSED_TCP) {
        a->paused &= ~API_PAUSED_TCP; /* closed already: only its reference goes */
        api_unref(a);
        return;
    }
    uv_close((uv_handle_t *)&a->tcp_server, on_server_closed);
}

void api_attach_store(struct api *a, struct store *st)
{
    a->st = st;
    store_add_listener(st, on_store_event, a);
    uv_timer_init(a->loop, &a->beat);
    uv_timer_init(a->loop, &a->flush);
    a->beat.data = a->flush.data = a;
    a->refs += 2;
    uv_timer_start(&a->beat, on_beat, API_SSE_BEAT_MS, API_SSE_BEAT_MS);
}

void api_set_rollout(struct api *a, struct rollout *r)
{
    a->r = r;
}

void api_stop(struct api *a, int keep_path)
{
    if (a == NULL)
        return;
    a->stopping = 1;
    while (a->conns)
        conn_close(a->conns);
    if (!keep_path)
        unlink(a->path);
    api_stop_tcp(a);
    if (a->st != NULL) {
        store_remove_listener(a->st, on_store_event, a);
        uv_close((uv_handle_t *)&a->beat, on_server_closed);
        uv_close((uv_handle_t *)&a->flush, on_server_closed);
    }
    uv_close((uv_handle_t *)&a->pause_timer, on_server_closed);
    if (a->paused & API_PAUSED_UNIX) {
        a->paused &= ~API_PAUSED_UNIX;
        api_unref(a); /* closed already; the timer's close keeps a alive until then */
        return;
    }
    uv_close((uv_handle_t *)&a->server, on_server_closed);
}
