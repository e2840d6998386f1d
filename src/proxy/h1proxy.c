/* The HTTP/1.1 reverse-proxy state machine: one client connection, the upstream connection it
 * borrows for each request, and the bytes between them. Runs on its worker's loop only.
 *
 * Shape of an exchange: read the request head into the client buffer, parse it strictly
 * (http/parse.h), write a rewritten head plus the body bytes at hand to an upstream connection
 * from proxy/upstream, stream the rest of the body with one write in flight (that is the
 * backpressure), then read the response head, rewrite it, and stream the response body the
 * same way. The request bytes stay in the client buffer until the response begins, so a
 * request whose upstream fails before any response byte can be sent again. Pipelined requests
 * wait in the buffer and are taken one at a time, so answers keep their order. Everything an
 * exchange needs beyond the connection itself (buffers, request and response state, the write
 * request) lives in a pooled struct exchange that an idle keep-alive connection does not hold. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "http/parse.h"
#include "http/status.h"
#include "http/vhost.h"
#include "net/addr.h"
#include "net/cidr.h"
#include "net/proxyproto.h"
#include "net/tls.h"
#include "proxy/h1proxy.h"
#include "proxy/hold.h"
#include "proxy/mirror.h"
#include "proxy/pick.h"
#include "proxy/upstream.h"
#include "proxy/worker_int.h"

#define HDR_CAP 256                           /* header fields parsed per message at most */
#define RESP_HEAD_MAX (WORKER_BUF_SIZE - 512) /* upstream response head limit: 502 beyond */

/* PH_PPHDR: a proxy_protocol listener's connection before its PROXY header is complete.
 * PH_HELD: a complete request head waits in the buffer while its service is held. */
enum client_phase { PH_HEAD, PH_PROXY, PH_CLOSING, PH_PPHDR, PH_HELD };

/* Open client connections per service id, all workers together: max_connections is a limit of
 * the service, not of one worker. */
#define MAX_SERVICE_IDS 1024
static atomic_int service_conns[MAX_SERVICE_IDS];
enum resp_phase { R_HEAD, R_BODY, R_DONE, R_TUNNEL };

/* Where an input buffer's memory comes from, hence where it goes back to. */
enum ibuf_kind { IB_SMALL, IB_BIG, IB_HEAP };

/* An input buffer: pooled WORKER_BUF_SIZE bytes (client requests), pooled WORKER_BIG_BUF_SIZE
 * bytes (upstream responses), or a heap block for a request head bigger than a small one. */
struct ibuf {
    char *data;
    size_t cap, start, end;
    enum ibuf_kind kind;
};

struct client;

/* An upstream connection as the HTTP/1.1 state machine uses it: proxy/upstream's connection
 * (which owns the socket, its timer, its pool) and the response being read from it. */
struct h1_up {
    struct upstream base; /* first: proxy/upstream allocates h1_up_ops.size bytes */
    struct worker *w;
    struct client *client; /* while busy */
    uv_write_t wreq;
    int wpending; /* a write to the upstream is in flight */
    uint64_t got; /* response bytes received for the current request */
    struct ibuf in;
    enum resp_phase rphase;
    struct http_response resp;
    enum http_framing framing;
    uint64_t body_left;
    struct http_chunked chunk;
    int reusable;
};

/* The HTTP/1.1 protocol's state in one worker (struct worker.h1). */
struct h1_state {
    struct client *clients;     /* every open client connection */
    struct exchange *exchanges; /* free exchanges */
    size_t nexchanges;          /* length of the exchanges list */
    struct wheel *wheel;        /* the client deadline wheel, created with the first client */
    /* Clients whose request waits for its service's hold to end, oldest first (linked through
     * their exchanges), and the timer that lets them go on after a table without the hold. */
    struct client *held, *held_tail;
    size_t nheld;
    uv_timer_t *resume; /* created with the first hold; closed with the loop, freed by h1_done */
};

/* What a client connection holds only while a request is in progress, or bytes of the next
 * one wait: its input buffer, the state of the exchange, the write request. Pooled per worker
 * (h1proxy.c owns the pool) and zeroed when taken, so an idle keep-alive connection is its
 * struct client alone, with no buffer and no exchange. */
struct exchange {
    struct ibuf in;
    uv_write_t wreq;         /* the write to the client; lives until its callback */
    struct route_limits lim; /* the service's limits, taken at each request */
    char peer[48];           /* connection's peer, for X-Forwarded-For (INET6_ADDRSTRLEN fits) */
    /* With trusted proxies (client.trusted): the request's client found by cidr_client_addr,
     * its text, and where it starts in X-Forwarded-For (field among the X-Forwarded-For fields,
     * byte offset), so that only what trusted proxies vouch for goes upstream. */
    struct sockaddr_storage client_sa;
    char client[48];
    size_t xff_field, xff_off;
    /* the request in progress */
    enum http_method meth;
    int minor;
    int keepalive;
    size_t head_len;
    enum http_framing framing;
    uint64_t req_content_length;
    uint64_t body_seen; /* body bytes handed to the upstream so far */
    uint64_t body_left;
    struct http_chunked chunk;
    int body_done;
    size_t fwd;     /* offset in in.data up to which bytes were handed to the upstream */
    size_t req_end; /* offset where the request ends, once body_done */
    int replayable; /* head and body still in the buffer: the request can be sent again */
    int head_sent;
    int fresh_retries, target_retries;
    struct route_target *last_target;
    enum route_role role;               /* the version role this request was routed to */
    uint64_t t_start;                   /* uv_hrtime() when the request head was complete */
    int counted;                        /* the answer was counted in the role's statistics */
    char cookie_id[PICK_COOKIE_ID_LEN]; /* a new sticky cookie id to set on the answer, or "" */
    int ws;                             /* the request asks for a WebSocket upgrade */
    int tunnel;                         /* 101 went through: bytes flow both ways untouched */
    struct route_target *ll_target;     /* counted as a long-lived connection of this target */
    int drain_armed;                    /* its version was switched away: closed at drain_timeout */
    char *uhead;                        /* rewritten request head (pooled or heap) */
    size_t uhead_len;
    int uhead_heap;
    char *rhead; /* rewritten response head */
    size_t rhead_len;
    int resp_started;                     /* a response head went to the client */
    int resp_close;                       /* the client connection closes after this response */
    struct client *held_prev, *held_next; /* in h1_state.held while PH_HELD */
    struct mirror_copy *mirror; /* a copy for the new version waiting for this answer, or NULL */
    struct exchange *next_free; /* in the worker's pool */
};

/* One client connection. Kept small: an idle keep-alive connection costs this struct. */
struct client {
    uv_tcp_t tcp;
    uint64_t dl_at;                   /* deadline, loop time in ms; 0 = none */
    uint64_t dl_slot;                 /* the wheel slot it is linked in; 0 = not linked */
    struct client *wh_prev, *wh_next; /* in that slot's list */
    struct worker *w;
    struct client *prev, *next;       /* the worker's client list */
    struct exchange *x;               /* NULL while idle between requests */
    struct h1_up *up;                 /* the upstream connection of the exchange, if any */
    struct tls_conn *tls;             /* a TLS listener's connection (net/tls.h); NULL: plain */
    struct sockaddr_in6 peer_sa;      /* big enough for IPv4 and IPv6; a PROXY header's source */
    const struct cidr_list *trusted;  /* the listener's trusted proxies; NULL: none (no work) */
    const struct vhost_table *vhosts; /* a shared listener's routes; NULL: one service */
    int service_id;                   /* the current request's service */
    int conn_service;                 /* the service whose max_connections counts it */
    enum client_phase phase;
    unsigned char preview;  /* accepted on the service's preview listener */
    unsigned char dl_drain; /* the deadline is the drain deadline of a switched-away version */
    unsigned char reading;
    unsigned char peer_eof; /* the client closed its side: answer what is in progress, then close */
    unsigned char wpending; /* a write to the client (x->wreq) is in flight */
    unsigned char close_after_write;
    uint16_t win; /* the worker's active-client window it was last counted in (worker_int.h) */
};

static void client_close(struct client *c);
static void client_continue(struct client *c);
static void hold_unpark(struct client *c, int expired);
static void upstream_send(struct client *c);
static void up_close(struct h1_up *u);
static void response_process(struct h1_up *u);
static void request_dispatch(struct client *c);
static void count_answer(struct client *c, int status, int own_error);
static void count_loss(struct client *c, enum worker_loss why);
static struct worker_role_stats *role_stats(struct client *c);
static void longlived_end(struct client *c);
static void on_upstream_write(uv_write_t *req, int status);
static size_t reap_idle(struct worker *w, size_t max);
#define REAP_MAX 32       /* idle connections closed per shortage event at most */
#define REAP_IDLE_MS 1000 /* only those idle between requests for that long */

/* ---------------------------------------------------------------- buffers -------------------- */

static void ibuf_release(struct worker *w, struct ibuf *b)
{
    if (b->data == NULL)
        return;
    switch (b->kind) {
    case IB_SMALL:
        worker_buf_put(w, b->data);
        break;
    case IB_BIG:
        worker_big_buf_put(w, b->data);
        break;
    case IB_HEAP:
        free(b->data);
        break;
    }
    memset(b, 0, sizeof(*b));
}

/* Gives b a pooled buffer of the kind (IB_SMALL or IB_BIG) unless it has one. */
static void ibuf_ensure(struct worker *w, struct ibuf *b, enum ibuf_kind kind)
{
    if (b->data != NULL)
        return;
    if (kind == IB_BIG) {
        b->data = worker_big_buf_get(w);
        b->cap = WORKER_BIG_BUF_SIZE;
    } else {
        b->data = worker_buf_get(w);
        b->cap = WORKER_BUF_SIZE;
    }
    b->kind = kind;
    b->start = b->end = 0;
}

/* Moves the unread bytes [start, end) to the front of the buffer. */
static void ibuf_compact(struct ibuf *b)
{
    if (b->start == 0)
        return;
    memmove(b->data, b->data + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
}

/* Grows b to hold at least want bytes (a request head bigger than a pooled buffer). */
static void ibuf_grow(struct worker *w, struct ibuf *b, size_t want)
{
    char *n = xmalloc(want);
    memcpy(n, b->data + b->start, b->end - b->start);
    size_t len = b->end - b->start;
    ibuf_release(w, b);
    b->data = n;
    b->cap = want;
    b->kind = IB_HEAP;
    b->start = 0;
    b->end = len;
}

/* ---------------------------------------------------------------- exchanges ----------------- */

/* Exchanges kept for reuse beyond this are freed: the pool follows the busy peak. */
#define EXCHANGE_MAX_FREE 1024

static const struct route_limits default_limits = {
    .client_header_ms = 10000,
    .client_idle_ms = 60000,
    .upstream_connect_ms = 5000,
    .upstream_response_ms = 60000,
    .max_header_bytes = 65536,
    .max_headers = 100,
    .max_uri = 8192,
    .max_body_bytes = 0,
    .drain_ms = 30000,
};

/* Looks up the client's service in the worker's current table (refreshing it first). */
static const struct route_service *client_service(struct client *c)
{
    worker_refresh(c->w);
    if (c->w->table == NULL)
        return NULL;
    return route_table_service(c->w->table, c->service_id);
}

/* Writes the address sa as text (X-Forwarded-For, the sticky bucket by address) into out,
 * which holds 48 bytes. IPv4 by hand: it runs for every request. */
static void sa_format(const struct sockaddr *sa, char *out)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    if (sin->sin_family == AF_INET6) {
        addr_format_host(sa, out, 48);
        return;
    }
    if (sin->sin_family != AF_INET) {
        snprintf(out, 48, "unknown");
        return;
    }
    const unsigned char *a = (const unsigned char *)&sin->sin_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}

/* Gives c an exchange unless it has one: taken from the worker's pool (allocated when empty),
 * zeroed, with the service's limits of now and the client's address as text. Returns it. */
static struct exchange *exchange_take(struct client *c)
{
    if (c->x != NULL)
        return c->x;
    struct worker *w = c->w;
    struct exchange *x = w->h1->exchanges;
    if (x != NULL) {
        w->h1->exchanges = x->next_free;
        w->h1->nexchanges--;
    } else {
        x = xmalloc(sizeof(*x));
    }
    memset(x, 0, sizeof(*x));
    const struct route_service *svc = client_service(c);
    x->lim = svc ? svc->limits : default_limits;
    sa_format((const struct sockaddr *)&c->peer_sa, x->peer);
    c->x = x;
    return x;
}

/* Returns c's exchange and the buffers it holds to the worker's pools; c is idle after this.
 * Never while a write of it is in flight (its uv_write_t lives in the exchange). NULL-safe. */
static void exchange_put(struct client *c)
{
    struct exchange *x = c->x;
    struct worker *w = c->w;
    if (x == NULL)
        return;
    longlived_end(c);
    c->x = NULL;
    mirror_abandon(x->mirror);
    x->mirror = NULL;
    ibuf_release(w, &x->in);
    if (x->uhead_heap)
        free(x->uhead);
    else
        worker_buf_put(w, x->uhead);
    worker_buf_put(w, x->rhead);
    if (w->h1->nexchanges >= EXCHANGE_MAX_FREE) {
        free(x);
        return;
    }
    x->next_free = w->h1->exchanges;
    w->h1->exchanges = x;
    w->h1->nexchanges++;
}

/* proxy_proto.done: frees what the protocol pooled in w. */
static void h1_done(struct worker *w)
{
    if (w->h1 == NULL)
        return;
    free(w->h1->wheel);
    w->h1->wheel = NULL;
    free(w->h1->resume);
    w->h1->resume = NULL;
    while (w->h1->exchanges != NULL) {
        struct exchange *x = w->h1->exchanges;
        w->h1->exchanges = x->next_free;
        free(x);
    }
    w->h1->nexchanges = 0;
    free(w->h1);
    w->h1 = NULL;
}

/* ---------------------------------------------------------------- canned answers ------------- */

static const char *const canned_fmt =
    "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
    "Connection: close\r\nServer: cutover\r\n%s\r\n%s\n";

/* Writes bufs to s at once when the socket takes them all (the usual case for a small message:
 * no write request, no callback, no change of what the loop watches); queues the rest with
 * uv_write otherwise. Returns 1 when everything was written, 0 when a write is in flight (cb
 * follows), or a negative libuv error. bufs may be modified. */
static int write_now_or_queue(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned nb,
                              uv_write_cb cb)
{
    size_t total = 0;
    for (unsigned i = 0; i < nb; i++)
        total += bufs[i].len;
    int n = uv_try_write(s, bufs, nb);
    if (n == UV_EAGAIN)
        n = 0;
    else if (n < 0)
        return n;
    if ((size_t)n == total)
        return 1;
    size_t skip = (size_t)n;
    unsigned i = 0;
    while (skip >= bufs[i].len) {
        skip -= bufs[i].len;
        i++;
    }
    bufs[i].base += skip;
    bufs[i].len -= skip;
    int rc = uv_write(req, s, bufs + i, nb - i, cb);
    return rc < 0 ? rc : 0;
}

/* write_now_or_queue to the client, through its TLS when it has one (net/tls.h). */
static int client_write(struct client *c, uv_write_t *req, uv_buf_t *bufs, unsigned nb,
                        uv_write_cb cb)
{
    if (c->tls != NULL)
        return tls_write_now(c->tls, req, bufs, nb, cb);
    return write_now_or_queue((uv_stream_t *)&c->tcp, req, bufs, nb, cb);
}

static void on_client_write(uv_write_t *req, int status);

/* Answers status with a short text body and closes the connection after it. Only when no
 * response was started on this connection; otherwise the only honest thing is to close. */
static void client_error_as(struct client *c, int status, const char *why, int loss);
static void client_send_own(struct client *c);

static void client_read_stop(struct client *c);

static void client_error(struct client *c, int status, const char *why)
{
    client_error_as(c, status, why, -1);
}

/* client_error, with the loss of a 5xx counted under reason loss (an enum worker_loss) rather
 * than by status when loss >= 0. */
static void client_error_as(struct client *c, int status, const char *why, int loss)
{
    struct worker *w = c->w;
    if (c->phase == PH_CLOSING)
        return;
    exchange_take(c);
    if (c->x->resp_started || c->wpending) {
        if (status >= 500)
            count_loss(c, WORKER_LOSS_RESET); /* the answer under way is cut */
        client_close(c);
        return;
    }
    if (status >= 500) {
        atomic_fetch_add_explicit(&w->stats.proxy_errors, 1, memory_order_relaxed);
        count_loss(c, loss >= 0       ? (enum worker_loss)loss
                      : status == 504 ? WORKER_LOSS_504
                      : status == 503 ? WORKER_LOSS_503
                                      : WORKER_LOSS_502);
    } else
        atomic_fetch_add_explicit(&w->stats.bad_requests, 1, memory_order_relaxed);
    if (c->x->rhead == NULL)
        c->x->rhead = worker_buf_get(w);
    int n = snprintf(c->x->rhead, WORKER_BUF_SIZE, canned_fmt, status, http_status_reason(status),
                     strlen(why) + 1, status == 503 ? "Retry-After: 1\r\n" : "", why);
    c->x->rhead_len = (size_t)n;
    client_send_own(c);
}

/* Sends the answer of cutover's own in c->x->rhead (rhead_len bytes) and closes the connection
 * after it: an upstream connection is let go, and the client is not read any more. */
static void client_send_own(struct client *c)
{
    c->x->resp_started = 1;
    c->close_after_write = 1;
    if (c->up != NULL) {
        struct h1_up *u = c->up;
        c->up = NULL;
        up_close(u);
    }
    client_read_stop(c);
    c->phase = PH_PROXY;
    uv_buf_t b = uv_buf_init(c->x->rhead, (unsigned)c->x->rhead_len);
    c->wpending = 1;
    c->x->wreq.data = c;
    if ((c->tls != NULL
             ? tls_write(c->tls, &c->x->wreq, &b, 1, on_client_write)
             : uv_write(&c->x->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_client_write)) < 0) {
        c->wpending = 0;
        client_close(c);
    }
}

/* ---------------------------------------------------------------- client deadlines ---------- */

/* Client deadlines (header, idle keep-alive, body inactivity, drain) sit on one timing wheel per
 * worker instead of a libuv timer per connection: a uv_timer_t is 152 bytes, which an idle
 * connection would otherwise carry. Slot s holds the clients whose deadline falls in
 * ((s - 1) * WHEEL_TICK_MS, s * WHEEL_TICK_MS]; one repeating timer visits the slots as time
 * passes, so a deadline fires at most a tick late. A deadline further away than the wheel spans
 * waits in the last slot it can reach and is moved on when that slot is visited. */
#define WHEEL_TICK_MS 64
#define WHEEL_SLOTS 1024 /* 65 s: the default client_idle (60 s) fits in one turn */

struct wheel {
    uv_timer_t timer;
    uint64_t done; /* the last slot visited */
    size_t n;      /* clients linked */
    struct client *slot[WHEEL_SLOTS];
};

static void on_client_deadline(struct client *c);
static void on_wheel_tick(uv_timer_t *t);

/* The worker's wheel, created with its first client. Its timer is closed with the loop's other
 * handles when the worker ends (worker.c), and the wheel freed by h1_done. */
static struct wheel *wheel_get(struct worker *w)
{
    if (w->h1->wheel == NULL) {
        struct wheel *wh = xcalloc(1, sizeof(*wh));
        uv_timer_init(&w->loop, &wh->timer);
        wh->timer.data = w;
        w->h1->wheel = wh;
    }
    return w->h1->wheel;
}

/* The slot a deadline at (loop ms) goes in: the first slot visited at or after it, within one
 * turn of the wheel from now. */
static uint64_t wheel_slot(struct wheel *wh, uint64_t at)
{
    if (!uv_is_active((uv_handle_t *)&wh->timer))
        wh->done = uv_now(wh->timer.loop) / WHEEL_TICK_MS;
    uint64_t s = (at + WHEEL_TICK_MS - 1) / WHEEL_TICK_MS;
    if (s <= wh->done)
        s = wh->done + 1;
    if (s >= wh->done + WHEEL_SLOTS)
        s = wh->done + WHEEL_SLOTS - 1;
    return s;
}

static void wheel_link(struct wheel *wh, struct client *c, uint64_t slot)
{
    struct client **head = &wh->slot[slot % WHEEL_SLOTS];
    c->dl_slot = slot;
    c->wh_prev = NULL;
    c->wh_next = *head;
    if (*head != NULL)
        (*head)->wh_prev = c;
    *head = c;
    if (wh->n++ == 0 && !uv_is_active((uv_handle_t *)&wh->timer))
        uv_timer_start(&wh->timer, on_wheel_tick, WHEEL_TICK_MS, WHEEL_TICK_MS);
}

/* Takes c off the wheel (a no-op when it is not on it, or there is no wheel). */
static void wheel_unlink(struct wheel *wh, struct client *c)
{
    if (wh == NULL || c->dl_slot == 0)
        return;
    if (c->wh_prev != NULL)
        c->wh_prev->wh_next = c->wh_next;
    else
        wh->slot[c->dl_slot % WHEEL_SLOTS] = c->wh_next;
    if (c->wh_next != NULL)
        c->wh_next->wh_prev = c->wh_prev;
    c->wh_prev = c->wh_next = NULL;
    c->dl_slot = 0;
    wh->n--;
}

/* Visits the slots up to now. Every client in a visited slot is due there or was linked there
 * because its deadline was further than the wheel reaches, or moved later since: those go back
 * on the wheel, further on, so a slot empties. Firing a deadline may close the client or set a
 * new deadline for it or others; none lands in the slot being visited (wheel_slot). */
static void on_wheel_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    struct wheel *wh = w->h1->wheel;
    uint64_t now = uv_now(&w->loop);
    uint64_t cur = now / WHEEL_TICK_MS;
    while (wh->done < cur && wh->n > 0) {
        wh->done++;
        struct client *c;
        while ((c = wh->slot[wh->done % WHEEL_SLOTS]) != NULL) {
            wheel_unlink(wh, c);
            if (c->dl_at == 0)
                continue;
            if (c->dl_at > now) {
                wheel_link(wh, c, wheel_slot(wh, c->dl_at));
                continue;
            }
            c->dl_at = 0;
            on_client_deadline(c);
        }
    }
    if (wh->n == 0)
        uv_timer_stop(&wh->timer);
    else
        wh->done = cur;
}

/* ---------------------------------------------------------------- client lifecycle ---------- */

static void client_free(struct client *c)
{
    exchange_put(c);
    free(c);
}

static void on_client_closed(uv_handle_t *h)
{
    client_free(h->data);
}

static void client_close(struct client *c)
{
    struct worker *w = c->w;
    if (c->phase == PH_CLOSING)
        return;
    if (c->phase == PH_HELD)
        hold_unpark(c, 0);
    c->phase = PH_CLOSING;
    longlived_end(c);
    if (c->up != NULL) {
        struct h1_up *u = c->up;
        c->up = NULL;
        up_close(u);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->h1->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&w->stats.clients, 1, memory_order_relaxed);
    if (c->conn_service >= 0 && c->conn_service < MAX_SERVICE_IDS)
        atomic_fetch_sub_explicit(&service_conns[c->conn_service], 1, memory_order_relaxed);
    wheel_unlink(c->w->h1->wheel, c);
    if (c->tls != NULL)
        tls_close(c->tls, on_client_closed); /* frees it just before on_client_closed runs */
    else
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void on_drain_deadline(struct client *c);
static void hold_expire(struct client *c);

/* c's deadline passed (the wheel unlinked it and cleared it). */
static void on_client_deadline(struct client *c)
{
    if (c->phase == PH_HELD) {
        hold_expire(c);
        return;
    }
    if (c->dl_drain) {
        on_drain_deadline(c);
        return;
    }
    if (c->tls != NULL && !tls_established(c->tls)) {
        /* The header deadline covers the TLS handshake too. */
        tls_handshake_timeout(c->tls);
        client_close(c);
        return;
    }
    if (c->phase != PH_HEAD || c->x == NULL || c->x->in.end == c->x->in.start) {
        /* Idle keep-alive, or a body that stopped arriving: nothing to answer. */
        client_close(c);
        return;
    }
    client_error(c, 408, "request head not received in time");
}

/* Sets c's deadline ms from now (0: none). Moving it later only stores it: the wheel finds the
 * client in its earlier slot and moves it on then. Moving it earlier relinks it. */
static void client_timer(struct client *c, uint64_t ms)
{
    if (c->phase == PH_CLOSING)
        return; /* off the wheel for good: its memory goes with the close callback */
    c->dl_drain = 0;
    if (ms == 0) {
        c->dl_at = 0;
        return;
    }
    struct wheel *wh = wheel_get(c->w);
    c->dl_at = uv_now(&c->w->loop) + ms;
    uint64_t slot = wheel_slot(wh, c->dl_at);
    if (c->dl_slot != 0 && c->dl_slot <= slot)
        return;
    wheel_unlink(wh, c);
    wheel_link(wh, c, slot);
}

static void client_read_start(struct client *c);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_read_stop(struct client *c)
{
    if (c->reading) {
        if (c->tls != NULL)
            tls_read_stop(c->tls);
        else
            uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* Drops the bytes of the request in progress that were already sent upstream, so that a long
 * body can stream through a fixed buffer. The request can no longer be replayed after this. */
static void client_discard_sent(struct client *c)
{
    struct ibuf *b = &c->x->in;
    if (c->x->fwd <= b->start)
        return;
    c->x->replayable = 0;
    b->start = c->x->fwd;
    size_t shift = b->start;
    ibuf_compact(b);
    c->x->fwd -= shift;
}

static void client_alloc(void *user, uv_buf_t *buf)
{
    struct client *c = user;
    struct ibuf *b = &exchange_take(c)->in;
    ibuf_ensure(c->w, b, IB_SMALL);
    if (b->end == b->cap) {
        if (c->phase == PH_HEAD) {
            ibuf_compact(b);
            if (b->end == b->cap && b->cap < c->x->lim.max_header_bytes)
                ibuf_grow(c->w, b, c->x->lim.max_header_bytes);
        } else if (c->phase == PH_PROXY && !c->x->body_done && !(c->up && c->up->wpending)) {
            /* No upstream write in flight: every byte before fwd was written and may go. */
            client_discard_sent(c);
        }
    }
    *buf = uv_buf_init(b->data + b->end, (unsigned)(b->cap - b->end));
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    client_alloc(h->data, buf);
}

static void client_read(void *user, ssize_t nread, const uv_buf_t *buf);

static void client_read_start(struct client *c)
{
    if (c->reading || c->phase == PH_CLOSING)
        return;
    if ((c->tls != NULL
             ? tls_read_start(c->tls, client_alloc, client_read)
             : uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read)) == 0)
        c->reading = 1;
    else
        client_close(c);
}

/* ---------------------------------------------------------------- body framing -------------- */

/* Returns how many of the n bytes at p belong to the body being framed by f, updating *left or
 * ch; sets *done at the body's end. Returns -1 on a chunked framing error. */
static ssize_t body_scan(enum http_framing f, uint64_t *left, struct http_chunked *ch,
                         const char *p, size_t n, int *done)
{
    switch (f) {
    case HTTP_BODY_NONE:
        *done = 1;
        return 0;
    case HTTP_BODY_LENGTH: {
        size_t take = n < *left ? n : (size_t)*left;
        *left -= take;
        *done = (*left == 0);
        return (ssize_t)take;
    }
    case HTTP_BODY_CHUNKED: {
        ssize_t r = http_chunked_feed(ch, p, n, done, NULL, NULL);
        return r < 0 ? -1 : r;
    }
    case HTTP_BODY_EOF:
        *done = 0;
        return (ssize_t)n;
    }
    return -1;
}

static void count_payload(void *ctx, const char *data, size_t len)
{
    (void)data;
    *(uint64_t *)ctx += len;
}

/* Returns how many of the n bytes at p belong to the body being framed by f, updating *left or
 * ch, and adds the payload bytes among them (framing excluded) to *payload when not NULL; sets
 * *done at the body's end. Returns -1 on a chunked framing error. */
static ssize_t body_scan_payload(enum http_framing f, uint64_t *left, struct http_chunked *ch,
                                 const char *p, size_t n, int *done, uint64_t *payload)
{
    if (f == HTTP_BODY_CHUNKED) {
        ssize_t r = http_chunked_feed(ch, p, n, done, payload ? count_payload : NULL, payload);
        return r < 0 ? -1 : r;
    }
    ssize_t r = body_scan(f, left, ch, p, n, done);
    if (r > 0 && payload != NULL)
        *payload += (uint64_t)r;
    return r;
}

/* ---------------------------------------------------------------- head rewriting ------------ */

struct out {
    char *p;
    size_t len, cap;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    /* Callers size the buffer for the worst case first; this guard only keeps a bug from
     * becoming an overflow. */
    if (o->len + n > o->cap)
        n = o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void out_header(struct out *o, const struct http_header *h)
{
    out_put(o, h->name, h->name_len);
    out_put(o, ": ", 2);
    out_put(o, h->value, h->value_len);
    out_put(o, "\r\n", 2);
}

static void out_content_length(struct out *o, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    out_str(o, "Content-Length: ");
    out_put(o, digits + sizeof(digits) - n, n);
    out_put(o, "\r\n", 2);
}

/* Writes the request head cutover sends upstream: the request line (absolute-form turned into
 * origin-form), every end-to-end field as received, X-Forwarded-For with the client appended,
 * and X-Forwarded-Proto. Hop-by-hop fields stay behind (RFC 9110 7.6.1). */
static void build_request_head(struct client *c, const struct http_request *req)
{
    size_t nxff = 0;
    size_t need = c->x->head_len + strlen(c->x->peer) + 96;
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (http_token_eq(h->name, h->name_len, "x-forwarded-for"))
            nxff++;
    }
    if (need <= WORKER_BUF_SIZE) {
        c->x->uhead = worker_buf_get(c->w);
        c->x->uhead_heap = 0;
    } else {
        c->x->uhead = xmalloc(need);
        c->x->uhead_heap = 1;
    }
    struct out o = {c->x->uhead, 0, need <= WORKER_BUF_SIZE ? WORKER_BUF_SIZE : need};

    const char *t = req->target;
    size_t tl = req->target_len;
    if (tl > 0 && t[0] != '/' && !(tl == 1 && t[0] == '*')) {
        /* absolute-form: keep from the first '/' after "scheme://" */
        const char *ss = memchr(t, '/', tl);
        size_t skip = 0;
        if (ss != NULL && (size_t)(ss - t) + 2 < tl && ss[1] == '/') {
            const char *p = memchr(ss + 2, '/', tl - (size_t)(ss + 2 - t));
            skip = p ? (size_t)(p - t) : tl;
        }
        t += skip;
        tl -= skip;
        if (tl == 0) {
            t = "/";
            tl = 1;
        }
    }
    out_put(&o, req->method, req->method_len);
    out_put(&o, " ", 1);
    out_put(&o, t, tl);
    out_str(&o, req->minor_version == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
    int cl_sent = 0;
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->flags & HTTP_HF_HOP)
            continue;
        if (h->name_len == 14 && http_token_eq(h->name, h->name_len, "content-length")) {
            /* The parser accepted only identical lengths ("5, 5", or two fields of 5): the
             * upstream gets the one value once, so that no parser behind us can pick another
             * (RFC 9110 8.6). The digits never take more room than the field did. */
            if (!cl_sent)
                out_content_length(&o, req->content_length);
            cl_sent = 1;
            continue;
        }
        if (http_token_eq(h->name, h->name_len, "x-forwarded-for") ||
            http_token_eq(h->name, h->name_len, "x-forwarded-proto"))
            continue;
        out_header(&o, h);
    }
    out_str(&o, "X-Forwarded-For: ");
    if (nxff > 0) {
        /* Every field, as one list. Behind trusted proxies only the part they vouch for (from
         * the client cidr_client_addr found, rightwards) goes on: no byte the client chose. */
        size_t from = c->trusted != NULL ? c->x->xff_field : 0;
        size_t off = c->trusted != NULL ? c->x->xff_off : 0;
        size_t k = 0;
        for (size_t i = 0; i < req->num_headers && k < nxff; i++) {
            const struct http_header *h = &req->headers[i];
            if (!http_token_eq(h->name, h->name_len, "x-forwarded-for"))
                continue;
            size_t skip = k == from ? off : 0;
            if (k >= from && skip < h->value_len) {
                out_put(&o, h->value + skip, h->value_len - skip);
                out_str(&o, ", ");
            }
            k++;
        }
    }
    out_str(&o, c->x->peer);
    out_str(&o, c->tls != NULL ? "\r\nX-Forwarded-Proto: https\r\n"
                               : "\r\nX-Forwarded-Proto: http\r\n");
    if (c->x->ws) /* the one upgrade cutover forwards: a WebSocket becomes a byte tunnel */
        out_str(&o, "Connection: Upgrade\r\nUpgrade: websocket\r\n");
    out_put(&o, "\r\n", 2);
    c->x->uhead_len = o.len;
}

/* Writes the response head for the client into c->x->rhead: status line, end-to-end fields,
 * Connection: close when this is the connection's last answer. */
static void build_response_head(struct client *c, const struct http_response *r, int close)
{
    if (c->x->rhead == NULL)
        c->x->rhead = worker_buf_get(c->w);
    struct out o = {c->x->rhead, 0, WORKER_BUF_SIZE};
    /* The status line is written by hand: it runs for every response. */
    char line[13] = {'H',
                     'T',
                     'T',
                     'P',
                     '/',
                     '1',
                     '.',
                     (char)('0' + (c->x->minor == 1)),
                     ' ',
                     (char)('0' + r->status / 100),
                     (char)('0' + r->status / 10 % 10),
                     (char)('0' + r->status % 10),
                     ' '};
    out_put(&o, line, sizeof(line));
    out_put(&o, r->reason, r->reason_len);
    out_put(&o, "\r\n", 2);
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (h->flags & HTTP_HF_HOP)
            continue;
        if ((r->flags & HTTP_F_TE_AND_CL) && http_token_eq(h->name, h->name_len, "content-length"))
            continue;
        out_header(&o, h);
    }
    const struct route_service *svc = c->x->cookie_id[0] != '\0' ? client_service(c) : NULL;
    if (svc != NULL && svc->sticky_name != NULL && r->status >= 200) {
        out_str(&o, "Set-Cookie: ");
        out_str(&o, svc->sticky_name);
        out_put(&o, "=", 1);
        out_str(&o, c->x->cookie_id);
        out_str(&o, "; Path=/; HttpOnly; SameSite=Lax\r\n");
    }
    if (close)
        out_str(&o, "Connection: close\r\n");
    out_put(&o, "\r\n", 2);
    c->x->rhead_len = o.len;
}

/* ---------------------------------------------------------------- upstream ------------------ */

/* proxy_upstream's last word on u before freeing it: the response buffer goes back. */
static void up_freed(struct upstream *base)
{
    struct h1_up *u = (struct h1_up *)base;
    ibuf_release(u->w, &u->in);
}

/* Closes u, which is no longer any client's. */
static void up_close(struct h1_up *u)
{
    u->client = NULL;
    upstream_close(&u->base);
}

static int up_read_start(struct h1_up *u)
{
    return upstream_read_start(&u->base);
}

static void up_read_stop(struct h1_up *u)
{
    upstream_read_stop(&u->base);
}

/* The same order as enum worker_upstream_fail, which counts them. */
enum up_fail {
    UF_CONNECT = WORKER_UF_CONNECT,
    UF_CONNECT_TIMEOUT = WORKER_UF_CONNECT_TIMEOUT,
    UF_IO = WORKER_UF_IO,
    UF_RESPONSE_TIMEOUT = WORKER_UF_RESPONSE_TIMEOUT,
    UF_BAD_RESPONSE = WORKER_UF_BAD_RESPONSE,
};

static int method_idempotent(enum http_method m)
{
    return m == HTTP_M_GET || m == HTTP_M_HEAD || m == HTTP_M_OPTIONS || m == HTTP_M_TRACE ||
           m == HTTP_M_PUT || m == HTTP_M_DELETE;
}

static void request_retry(struct client *c, int fresh_same_target);

/* Passive health. A failure toward a target (connect error, reset, timeout, invalid answer,
 * 5xx) counts; consecutive_failures of them take it out of rotation for the ejection time. It
 * then gets requests again, and one more failure ejects it again; a success resets the count.
 * Shared by all workers through the target's atomics. */
static void target_result(struct client *c, struct route_target *t, int failed)
{
    if (t == NULL || c->x->lim.outlier_failures <= 0)
        return;
    if (!failed) {
        if (atomic_load_explicit(&t->consecutive_failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&t->consecutive_failures, 0, memory_order_relaxed);
        return;
    }
    int n = atomic_fetch_add_explicit(&t->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (n >= c->x->lim.outlier_failures)
        atomic_store_explicit(&t->ejected_until,
                              uv_hrtime() / 1000000 + c->x->lim.outlier_ejection_ms,
                              memory_order_relaxed);
}

/* The upstream of a request failed. Sends the request again when that is safe: no response
 * byte yet, the whole request still in the buffer, and an idempotent method (RFC 9110 9.2.2:
 * a proxy must not retry any other by itself, since the upstream may have acted on it). A
 * reused connection that failed (the upstream may have closed it while we sent) is retried on a
 * fresh connection to the same target; a fresh one that failed, once on another target.
 * Otherwise answers 502, or 504 for timeouts; a non-idempotent request that would have been
 * retried is lost with reason WORKER_LOSS_NOT_RETRIED. */
static void up_failed(struct h1_up *u, enum up_fail why)
{
    struct client *c = u->client;
    /* A reused connection the upstream had closed says nothing about the target's health. */
    if (c != NULL && !(u->base.reused && u->got == 0 && why == UF_IO))
        target_result(c, upstream_target(&u->base), 1);
    int reused = u->base.reused;
    uint64_t got = u->got;
    up_close(u);
    if (c == NULL)
        return;
    struct worker_role_stats *rst = c->x != NULL ? role_stats(c) : NULL;
    if (rst != NULL)
        WORKER_STAT_ADD(&rst->upstream_fail[why], 1);
    c->up = NULL;
    int can_replay = c->x->replayable && !c->x->resp_started && got == 0 &&
                     why != UF_RESPONSE_TIMEOUT && why != UF_BAD_RESPONSE;
    int idempotent = method_idempotent(c->x->meth);
    if (can_replay && reused && !idempotent && why == UF_IO) {
        count_answer(c, 502, 1);
        client_error_as(c, 502, "upstream connection lost; the request was not sent again",
                        WORKER_LOSS_NOT_RETRIED);
        return;
    }
    if (can_replay && reused && c->x->fresh_retries < 2) {
        c->x->fresh_retries++;
        atomic_fetch_add_explicit(&c->w->stats.retries, 1, memory_order_relaxed);
        request_retry(c, 1);
        return;
    }
    if (can_replay && !reused && idempotent && c->x->target_retries < 1) {
        c->x->target_retries++;
        atomic_fetch_add_explicit(&c->w->stats.retries, 1, memory_order_relaxed);
        request_retry(c, 0);
        return;
    }
    count_answer(c, why == UF_CONNECT_TIMEOUT || why == UF_RESPONSE_TIMEOUT ? 504 : 502, 1);
    switch (why) {
    case UF_CONNECT:
        client_error(c, 502, "upstream connection failed");
        break;
    case UF_CONNECT_TIMEOUT:
        client_error(c, 504, "upstream connect timed out");
        break;
    case UF_RESPONSE_TIMEOUT:
        client_error(c, 504, "upstream response timed out");
        break;
    case UF_BAD_RESPONSE:
        client_error(c, 502, "upstream sent an invalid response");
        break;
    case UF_IO:
        client_error(c, 502, "upstream connection lost");
        break;
    }
}

/* h1_up_ops.timeout: the connect or the response took too long. */
static void up_timeout(struct upstream *base)
{
    struct h1_up *u = (struct h1_up *)base;
    up_failed(u, u->base.phase == UPSTREAM_CONNECTING ? UF_CONNECT_TIMEOUT : UF_RESPONSE_TIMEOUT);
}

/* The request is answered and u can carry another: back to its pool (proxy/upstream decides
 * whether the pool keeps it). */
static void up_release(struct h1_up *u)
{
    u->client = NULL;
    u->got = 0;
    u->rphase = R_HEAD;
    ibuf_release(u->w, &u->in);
    upstream_release(&u->base);
}

/* h1_up_ops.alloc: where the next read of a busy connection goes. */
static void up_alloc(struct upstream *base, uv_buf_t *buf)
{
    struct h1_up *u = (struct h1_up *)base;
    struct ibuf *b = &u->in;
    /* A response is read in big slices: its head and body share one read (the head's limit is
     * checked when it is parsed). A tunnel or an event stream lives long and moves little at
     * a time: it keeps a small buffer, as the client side does, swapped in once empty. */
    enum ibuf_kind kind =
        u->rphase == R_TUNNEL || (u->client != NULL && u->client->x->ll_target) ? IB_SMALL : IB_BIG;
    if (b->data != NULL && b->kind != kind && b->start == b->end)
        ibuf_release(u->w, b);
    ibuf_ensure(u->w, b, kind);
    if (b->end == b->cap)
        ibuf_compact(b);
    *buf = uv_buf_init(b->data + b->end, (unsigned)(b->cap - b->end));
}

static void exchange_done(struct client *c);

/* Marks the current exchange as a long-lived connection (tunnel or event stream) of the
 * target: status and the change record report how many a version still holds at a switch. */
static void longlived_begin(struct client *c, struct route_target *t)
{
    if (c->x->ll_target != NULL || t == NULL)
        return;
    route_target_ref(t);
    c->x->ll_target = t;
    atomic_fetch_add_explicit(&t->longlived, 1, memory_order_relaxed);
    struct worker_role_stats *st = role_stats(c);
    if (st != NULL)
        WORKER_STAT_ADD(&st->longlived, 1);
}

static void longlived_end(struct client *c)
{
    struct route_target *t = c->x != NULL ? c->x->ll_target : NULL;
    if (t == NULL)
        return;
    c->x->ll_target = NULL;
    atomic_fetch_sub_explicit(&t->longlived, 1, memory_order_relaxed);
    route_target_unref(t);
    struct worker_role_stats *st = role_stats(c);
    if (st != NULL)
        WORKER_STAT_ADD(&st->longlived, -1);
}

/* Tunnel, upstream -> client: what the upstream sent goes out as is, one write in flight. */
static void tunnel_down(struct client *c)
{
    struct h1_up *u = c->up;
    if (u == NULL || c->wpending || u->in.end == u->in.start)
        return;
    uv_buf_t b = uv_buf_init(u->in.data + u->in.start, (unsigned)(u->in.end - u->in.start));
    c->x->wreq.data = c;
    int rc = client_write(c, &c->x->wreq, &b, 1, on_client_write);
    if (rc < 0) {
        client_close(c);
        return;
    }
    if (rc == 0) {
        c->wpending = 1;
        up_read_stop(u);
        return;
    }
    u->in.start = u->in.end = 0;
}

/* Tunnel, client -> upstream. */
static void tunnel_up(struct client *c)
{
    struct h1_up *u = c->up;
    if (u == NULL || u->wpending || c->x->in.end == c->x->in.start)
        return;
    uv_buf_t b =
        uv_buf_init(c->x->in.data + c->x->in.start, (unsigned)(c->x->in.end - c->x->in.start));
    u->wreq.data = u;
    int rc = write_now_or_queue((uv_stream_t *)&u->base.tcp, &u->wreq, &b, 1, on_upstream_write);
    if (rc < 0) {
        client_close(c);
        return;
    }
    if (rc == 0) {
        u->wpending = 1;
        client_read_stop(c);
        return;
    }
    c->x->in.start = c->x->in.end = 0;
}

/* h1_up_ops.read: bytes (or the end) of a busy connection. */
static void up_read(struct upstream *base, ssize_t nread)
{
    struct h1_up *u = (struct h1_up *)base;
    struct client *c = u->client;
    if (u->rphase == R_TUNNEL) {
        if (nread < 0) {
            if (c != NULL)
                client_close(c); /* either side ending ends the tunnel */
            return;
        }
        u->in.end += (size_t)nread;
        if (c != NULL)
            tunnel_down(c);
        return;
    }
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            up_failed(u, UF_BAD_RESPONSE);
            return;
        }
        if (c != NULL && u->rphase == R_BODY && u->framing == HTTP_BODY_EOF) {
            u->rphase = R_DONE;
            u->reusable = 0;
            up_read_stop(u);
            if (!c->wpending)
                exchange_done(c);
            return;
        }
        if (c != NULL && c->x->resp_started && u->rphase != R_DONE) {
            /* Truncated response after its head went out: the client must see the cut. */
            count_loss(c, WORKER_LOSS_RESET);
            client_close(c);
            return;
        }
        if (u->rphase == R_DONE) {
            u->reusable = 0;
            return;
        }
        up_failed(u, UF_IO);
        return;
    }
    u->in.end += (size_t)nread;
    u->got += (uint64_t)nread;
    if (c == NULL)
        return;
    if (u->rphase == R_DONE) {
        /* Bytes after a complete response: never forwarded, and the connection is not reused. */
        u->reusable = 0;
        u->in.start = u->in.end;
        return;
    }
    upstream_deadline(&u->base, c->x->lim.upstream_response_ms);
    response_process(u);
}

static void on_upstream_write(uv_write_t *req, int status)
{
    struct h1_up *u = req->data;
    u->w->io_events++;
    u->wpending = 0;
    if (u->base.phase == UPSTREAM_CLOSING)
        return;
    struct client *c = u->client;
    if (c == NULL)
        return;
    if (status < 0) {
        if (u->rphase == R_TUNNEL) {
            client_close(c);
            return;
        }
        up_failed(u, UF_IO);
        return;
    }
    if (u->rphase == R_TUNNEL) {
        c->x->in.start = c->x->in.end = 0;
        client_read_start(c);
        tunnel_up(c);
        return;
    }
    if (u->rphase == R_HEAD)
        upstream_deadline(&u->base, c->x->lim.upstream_response_ms);
    if (!c->x->body_done)
        upstream_send(c);
    else if (u->rphase == R_DONE && !c->wpending)
        exchange_done(c);
}

/* Writes whatever of the request is ready (head first, then body bytes at hand) to the
 * client's upstream. While a write is queued the client is not read (backpressure). */
static void upstream_send(struct client *c)
{
    for (;;) {
        struct h1_up *u = c->up;
        if (u == NULL || u->base.phase != UPSTREAM_BUSY || u->wpending)
            return;
        uv_buf_t bufs[2];
        unsigned nb = 0;
        if (!c->x->head_sent)
            bufs[nb++] = uv_buf_init(c->x->uhead, (unsigned)c->x->uhead_len);
        if (!c->x->body_done && c->x->in.end > c->x->fwd) {
            int done = 0;
            ssize_t r = body_scan_payload(c->x->framing, &c->x->body_left, &c->x->chunk,
                                          c->x->in.data + c->x->fwd, c->x->in.end - c->x->fwd,
                                          &done, &c->x->body_seen);
            if (r < 0) {
                client_error(c, 400, "invalid chunked request body");
                return;
            }
            if (r > 0)
                bufs[nb++] = uv_buf_init(c->x->in.data + c->x->fwd, (unsigned)r);
            c->x->fwd += (size_t)r;
            if (c->x->lim.max_body_bytes > 0 && c->x->body_seen > c->x->lim.max_body_bytes) {
                /* Chunked bodies have no length up front: the payload is counted as it flows,
                 * framing bytes excluded. */
                client_error(c, 413, "request body larger than this service accepts");
                return;
            }
            if (done) {
                c->x->body_done = 1;
                c->x->req_end = c->x->fwd;
                if (!c->x->drain_armed)
                    c->dl_at = 0;
            } else {
                /* A body that stops arriving must not hold the connection forever. */
                client_timer(c, c->x->lim.client_idle_ms);
            }
        }
        if (nb == 0) {
            if (!c->x->body_done && !c->peer_eof)
                client_read_start(c);
            return;
        }
        c->x->head_sent = 1;
        u->wreq.data = u;
        int rc =
            write_now_or_queue((uv_stream_t *)&u->base.tcp, &u->wreq, bufs, nb, on_upstream_write);
        if (rc < 0) {
            up_failed(u, UF_IO);
            return;
        }
        if (rc == 0) {
            u->wpending = 1;
            if (!c->x->body_done)
                client_read_stop(c);
            return;
        }
        if (u->rphase == R_HEAD)
            upstream_deadline(&u->base, c->x->lim.upstream_response_ms);
        if (c->x->body_done)
            return;
    }
}

/* h1_up_ops.connected: the connect finished (status < 0: failed, or the connection could not
 * be read). */
static void up_connected(struct upstream *base, int status)
{
    struct h1_up *u = (struct h1_up *)base;
    if (status < 0) {
        up_failed(u, u->base.phase == UPSTREAM_CONNECTING ? UF_CONNECT : UF_IO);
        return;
    }
    if (u->client == NULL) {
        up_release(u);
        return;
    }
    upstream_send(u->client);
}

static const struct upstream_ops h1_up_ops = {
    .size = sizeof(struct h1_up),
    .alloc = up_alloc,
    .read = up_read,
    .connected = up_connected,
    .timeout = up_timeout,
    .freed = up_freed,
};

/* Gives c an upstream connection to t: an idle one from the pool unless fresh is set, else a
 * new connection. */
static void upstream_attach(struct client *c, struct route_target *t, int fresh)
{
    struct upstream *base;
    int rc = upstream_get(&c->w->pools, t, fresh, &h1_up_ops, c->x->lim.upstream_connect_ms, &base);
    struct h1_up *u = (struct h1_up *)base;
    u->w = c->w;
    u->client = c;
    u->rphase = R_HEAD;
    u->got = 0;
    c->up = u;
    if ((rc == UV_EMFILE || rc == UV_ENFILE) && !fresh && reap_idle(c->w, REAP_MAX) > 0) {
        /* Idle keep-alive clients gave their descriptors back: one more try. */
        c->up = NULL;
        up_close(u);
        upstream_attach(c, t, 1);
        return;
    }
    if (rc == UV_EMFILE || rc == UV_ENFILE) {
        /* Out of descriptors says nothing about the target: no passive-health failure. */
        c->up = NULL;
        up_close(u);
        count_answer(c, 503, 1);
        client_error(c, 503, "out of file descriptors; retry shortly");
    } else if (rc < 0)
        up_failed(u, UF_CONNECT);
    else if (rc == 1)
        upstream_send(c);
}

/* ---------------------------------------------------------------- responses ----------------- */

/* Forwards what the upstream sent: parses the head, rewrites it, and streams the body with one
 * client write in flight. Called when bytes arrived or a client write finished. */
static void tunnel_begin(struct client *c, struct h1_up *u, size_t head_len);

static int is_event_stream(const struct http_response *r)
{
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (http_token_eq(h->name, h->name_len, "content-type") && h->value_len >= 17 &&
            http_token_eq(h->value, 17, "text/event-stream"))
            return 1;
    }
    return 0;
}

static void response_process(struct h1_up *u)
{
    for (;;) {
        struct client *c = u->client;
        if (c == NULL || c->wpending || c->phase == PH_CLOSING)
            return;
        struct ibuf *b = &u->in;
        uv_buf_t bufs[2];
        unsigned nb = 0;

        if (u->rphase == R_HEAD) {
            if (b->end == b->start)
                return;
            struct http_header hdrs[HDR_CAP];
            struct http_limits lim = {.max_headers = HDR_CAP, .max_uri = 0};
            u->resp.headers = hdrs;
            u->resp.num_headers = HDR_CAP;
            int rc = http_parse_response(b->data + b->start, b->end - b->start, &u->resp,
                                         c->x->meth, &lim);
            if (rc == HTTP_PARTIAL && b->end - b->start < RESP_HEAD_MAX)
                return;
            if (rc < 0 || rc > RESP_HEAD_MAX || (u->resp.status == 101 && !c->x->ws)) {
                up_failed(u, UF_BAD_RESPONSE);
                return;
            }
            if (u->resp.status == 101) {
                tunnel_begin(c, u, (size_t)rc);
                return;
            }
            int informational = u->resp.status < 200;
            int close = 0;
            if (!informational) {
                close = c->x->resp_close || u->resp.framing == HTTP_BODY_EOF || !c->x->body_done ||
                        c->peer_eof || c->w->draining;
                c->x->resp_close = close;
            }
            build_response_head(c, &u->resp, close);
            b->start += (size_t)rc;
            bufs[nb++] = uv_buf_init(c->x->rhead, (unsigned)c->x->rhead_len);
            if (!informational) {
                c->x->resp_started = 1;
                u->rphase = R_BODY;
                u->framing = u->resp.framing;
                u->body_left = u->resp.content_length;
                u->reusable = !(u->resp.flags & (HTTP_F_CONN_CLOSE | HTTP_F_TE_AND_CL)) &&
                              u->framing != HTTP_BODY_EOF && u->resp.minor_version == 1;
                http_chunked_init(&u->chunk);
                if (u->resp.status >= 500)
                    atomic_fetch_add_explicit(&c->w->stats.responses_5xx, 1, memory_order_relaxed);
                count_answer(c, u->resp.status, 0);
                target_result(c, upstream_target(&u->base), u->resp.status >= 500);
                mirror_live_head(c->x->mirror, &u->resp);
                if (is_event_stream(&u->resp))
                    longlived_begin(c, upstream_target(&u->base));
                if (u->framing == HTTP_BODY_NONE)
                    u->rphase = R_DONE;
            }
            /* A 1xx is forwarded alone; the real answer follows on the next turn. */
        }
        if (u->rphase == R_BODY && b->end > b->start) {
            int done = 0;
            ssize_t r = body_scan(u->framing, &u->body_left, &u->chunk, b->data + b->start,
                                  b->end - b->start, &done);
            if (r < 0) {
                /* The head is out: a broken body can only end the connection. */
                count_loss(c, WORKER_LOSS_RESET);
                client_close(c);
                return;
            }
            if (r > 0) {
                bufs[nb++] = uv_buf_init(b->data + b->start, (unsigned)r);
                mirror_live_body(c->x->mirror, b->data + b->start, (size_t)r);
            }
            b->start += (size_t)r;
            if (done) {
                u->rphase = R_DONE;
                if (b->end > b->start) {
                    /* Bytes after a complete response are never forwarded. */
                    u->reusable = 0;
                    b->start = b->end;
                }
            }
        }
        if (nb == 0) {
            if (u->rphase == R_DONE && !u->wpending)
                exchange_done(c);
            else if (up_read_start(u) < 0)
                up_failed(u, UF_IO);
            return;
        }
        c->x->wreq.data = c;
        int rc = client_write(c, &c->x->wreq, bufs, nb, on_client_write);
        if (rc < 0) {
            client_close(c);
            return;
        }
        if (rc == 0) {
            /* Backpressure: no more reading from the upstream until the client took these. */
            c->wpending = 1;
            up_read_stop(u);
            return;
        }
        if (b->start == b->end)
            b->start = b->end = 0;
    }
}

/* The upstream accepted the WebSocket upgrade (101, head_len bytes): forward the 101 and turn
 * the exchange into a byte tunnel in both directions. */
static void tunnel_begin(struct client *c, struct h1_up *u, size_t head_len)
{
    build_response_head(c, &u->resp, 0);
    /* The 101 keeps its hop-by-hop upgrade fields: they are what the client asked for. */
    c->x->rhead_len -= 2;
    static const char up[] = "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    memcpy(c->x->rhead + c->x->rhead_len, up, sizeof(up) - 1);
    c->x->rhead_len += sizeof(up) - 1;
    u->in.start += head_len;
    count_answer(c, 101, 0);
    c->x->resp_started = 1;
    c->x->tunnel = 1;
    u->rphase = R_TUNNEL;
    u->reusable = 0;
    upstream_deadline(&u->base, 0);
    longlived_begin(c, upstream_target(&u->base));
    c->x->in.start = c->x->fwd; /* bytes the client sent after its request go up the tunnel */
    uv_buf_t bufs[2];
    unsigned nb = 0;
    bufs[nb++] = uv_buf_init(c->x->rhead, (unsigned)c->x->rhead_len);
    if (u->in.end > u->in.start)
        bufs[nb++] = uv_buf_init(u->in.data + u->in.start, (unsigned)(u->in.end - u->in.start));
    c->x->wreq.data = c;
    int rc = client_write(c, &c->x->wreq, bufs, nb, on_client_write);
    if (rc < 0) {
        client_close(c);
        return;
    }
    if (rc == 0) {
        c->wpending = 1;
        up_read_stop(u);
    } else {
        u->in.start = u->in.end = 0;
        if (up_read_start(u) < 0) {
            client_close(c);
            return;
        }
    }
    client_read_start(c);
    tunnel_up(c);
}

static void on_client_write(uv_write_t *req, int status)
{
    struct client *c = req->data;
    c->w->io_events++;
    c->wpending = 0;
    if (c->phase == PH_CLOSING)
        return;
    if (status < 0 || c->close_after_write) {
        client_close(c);
        return;
    }
    struct h1_up *u = c->up;
    if (u == NULL)
        return;
    if (u->in.start == u->in.end)
        u->in.start = u->in.end = 0;
    if (c->x->tunnel) {
        u->in.start = u->in.end = 0;
        if (up_read_start(u) < 0) {
            client_close(c);
            return;
        }
        tunnel_down(c);
        return;
    }
    /* More to forward, or the end of the exchange. */
    response_process(u);
}

/* The response is complete: the upstream goes back to its pool (or is closed), and the client
 * either closes or takes its next request. */
static void exchange_done(struct client *c)
{
    struct h1_up *u = c->up;
    c->up = NULL;
    /* The client has its whole answer: only now does the copy go to the new version. */
    mirror_send(c->x->mirror);
    c->x->mirror = NULL;
    longlived_end(c);
    c->x->drain_armed = 0;
    if (u != NULL) {
        if (u->reusable && c->x->body_done && !u->wpending && u->in.start == u->in.end)
            up_release(u);
        else
            up_close(u);
    }
    if (c->x->resp_close || !c->x->body_done || c->peer_eof) {
        client_close(c);
        return;
    }
    if (c->x->uhead_heap)
        free(c->x->uhead);
    else
        worker_buf_put(c->w, c->x->uhead);
    c->x->uhead = NULL;
    c->x->uhead_heap = 0;
    c->x->in.start = c->x->req_end;
    if (c->x->in.start == c->x->in.end)
        ibuf_release(c->w, &c->x->in);
    worker_buf_put(c->w, c->x->rhead);
    c->x->rhead = NULL;
    client_continue(c);
}

/* ---------------------------------------------------------------- requests ------------------ */

static struct worker_role_stats *role_stats(struct client *c)
{
    struct worker *w = c->w;
    if (c->service_id < 0 || (size_t)c->service_id >= w->nservices)
        return NULL;
    return &w->role_stats[(size_t)c->service_id * ROUTE_ROLES + c->x->role];
}

/* Counts a request cutover failed or cut, by the role it was routed to. Callable once the
 * client has an exchange. */
static void count_loss(struct client *c, enum worker_loss why)
{
    struct worker_role_stats *st = role_stats(c);
    if (st != NULL)
        WORKER_STAT_ADD(&st->lost[why], 1);
}

/* Counts the answer to the current request once: status, and latency to the head when it came
 * from the version (own_error is set for cutover's 502/503/504). */
static void count_answer(struct client *c, int status, int own_error)
{
    struct worker_role_stats *st = role_stats(c);
    if (st == NULL || c->x->counted)
        return;
    c->x->counted = 1;
    /* Counted by status class (their sum is the requests answered); anything outside
     * 100..599 counts as 5xx (a conditional move). */
    unsigned k = (unsigned)status / 100u - 1u;
    WORKER_STAT_ADD(&st->classes[k < WORKER_CLASSES ? k : WORKER_CLASSES - 1], 1);
    if (own_error) {
        WORKER_STAT_ADD(&st->upstream_errors, 1);
        return;
    }
    if (status >= 500)
        WORKER_STAT_ADD(&st->errors_5xx, 1);
    uint64_t us = (uv_hrtime() - c->x->t_start) / 1000;
    WORKER_STAT_ADD(&st->latency[hist_bucket(us)], 1);
}

static void request_dispatch(struct client *c)
{
    const struct route_service *svc = client_service(c);
    if (svc == NULL || svc->live.ntargets == 0) {
        client_error(c, 503, "no version of this service is live");
        return;
    }
    uint64_t now_ms = c->x->t_start / 1000000;
    struct route_target *t =
        pick_target(pick_backend(svc, c->x->role), &c->w->rr, now_ms, c->x->last_target);
    if (t == NULL && c->x->role != ROUTE_STABLE) {
        /* The new version (or the baseline) has no healthy target: its users go to the stable
         * one meanwhile. */
        c->x->role = ROUTE_STABLE;
        t = pick_target(&svc->live, &c->w->rr, now_ms, c->x->last_target);
    }
    if (svc->fallback.ntargets > 0 &&
        (t == NULL || (c->x->target_retries > 0 && t == c->x->last_target))) {
        /* The live version has no healthy target left, or an idempotent request just failed on
         * its only one, and the previous version can take over: it serves until the rollback
         * cutover starts is published. */
        struct route_target *f = pick_target(&svc->fallback, &c->w->rr, now_ms, c->x->last_target);
        if (f != NULL)
            t = f;
    }
    if (t == NULL) {
        count_answer(c, 503, 1);
        client_error(c, 503, "no healthy target");
        return;
    }
    c->x->last_target = t;
    upstream_attach(c, t, 0);
}

static void request_retry(struct client *c, int fresh_same_target)
{
    /* Rewind to the first body byte: the whole request is still in the buffer. */
    c->x->fwd = c->x->in.start + c->x->head_len;
    c->x->head_sent = 0;
    c->x->body_left = c->x->req_content_length;
    c->x->body_seen = 0;
    c->x->body_done = (c->x->framing == HTTP_BODY_NONE);
    http_chunked_init(&c->x->chunk);
    if (fresh_same_target && c->x->last_target != NULL) {
        const struct route_service *svc = client_service(c);
        /* Only while the table still routes the service there; else pick anew. */
        const struct route_backend *b = svc == NULL ? NULL : pick_backend(svc, c->x->role);
        for (size_t i = 0; b != NULL && i < b->ntargets; i++) {
            if (b->targets[i] == c->x->last_target) {
                upstream_attach(c, c->x->last_target, 1);
                return;
            }
        }
    }
    request_dispatch(c);
}

/* Behind trusted proxies: the request's client is the right-most X-Forwarded-For entry that is
 * not a trusted proxy, when the connection's peer is one (net/cidr.h). Sets c->x->client_sa,
 * its text, and where it starts in X-Forwarded-For. Only for listeners with trusted proxies. */
static void client_resolve(struct client *c, const struct http_request *req)
{
    struct cidr_span xff[HDR_CAP];
    size_t nxff = 0;
    for (size_t i = 0; i < req->num_headers && nxff < HDR_CAP; i++) {
        const struct http_header *h = &req->headers[i];
        if (http_token_eq(h->name, h->name_len, "x-forwarded-for"))
            xff[nxff++] = (struct cidr_span){h->value, h->value_len};
    }
    struct cidr_xff_pos pos;
    (void)cidr_client_addr((const struct sockaddr *)&c->peer_sa, c->trusted, xff, nxff,
                           &c->x->client_sa, &pos);
    c->x->xff_field = pos.field;
    c->x->xff_off = pos.offset;
    sa_format((const struct sockaddr *)&c->x->client_sa, c->x->client);
}

/* A complete, valid request head of head_len bytes is at the start of the buffer: set up the
 * exchange and send it upstream. */
static void request_start(struct client *c, const struct http_request *req, size_t head_len)
{
    struct worker *w = c->w;
    atomic_fetch_add_explicit(&w->stats.requests, 1, memory_order_relaxed);
    if (c->win != w->win) {
        c->win = w->win;
        w->win_clients++;
    }
    c->x->meth = req->meth;
    c->x->minor = req->minor_version;
    c->x->head_len = head_len;
    c->x->framing = req->framing;
    c->x->req_content_length = req->framing == HTTP_BODY_LENGTH ? req->content_length : 0;
    c->x->body_left = c->x->req_content_length;
    c->x->body_seen = 0;
    http_chunked_init(&c->x->chunk);
    c->x->body_done = (req->framing == HTTP_BODY_NONE);
    c->x->fwd = c->x->in.start + head_len;
    c->x->req_end = c->x->fwd;
    c->x->replayable = 1;
    c->x->head_sent = 0;
    c->x->resp_started = 0;
    c->x->fresh_retries = 0;
    c->x->target_retries = 0;
    c->x->last_target = NULL;
    c->x->counted = 0;
    const struct sockaddr *client_sa = (const struct sockaddr *)&c->peer_sa;
    const char *client_text = c->x->peer;
    if (c->trusted != NULL) {
        client_resolve(c, req);
        client_sa = (const struct sockaddr *)&c->x->client_sa;
        client_text = c->x->client;
    }
    const struct pick_request rq = {
        .headers = req->headers,
        .nheaders = req->num_headers,
        .peer = client_sa,
        .peer_text = client_text,
        .preview = c->preview,
    };
    const struct http_header *uph =
        (req->flags & HTTP_F_UPGRADE) ? pick_find_header(&rq, "upgrade") : NULL;
    c->x->ws = uph != NULL && http_token_eq(uph->value, uph->value_len, "websocket");
    c->x->t_start = uv_hrtime();
    c->x->role = pick_role(client_service(c), &rq, &w->rng, c->x->cookie_id);
    c->x->keepalive = req->minor_version == 1 && !(req->flags & HTTP_F_CONN_CLOSE) && !w->draining;
    c->x->resp_close = !c->x->keepalive;
    c->phase = PH_PROXY;
    if (c->x->lim.max_body_bytes > 0 && req->framing == HTTP_BODY_LENGTH &&
        req->content_length > c->x->lim.max_body_bytes) {
        client_error(c, 413, "request body larger than this service accepts");
        return;
    }
    build_request_head(c, req);
    const struct route_service *svc = client_service(c);
    /* A request the live version answers is copied, from its long-running set or from a
     * baseline's fresh one alike: both serve the live version. */
    if (svc != NULL && svc->mirror != NULL && c->x->role != ROUTE_CANARY && !c->preview &&
        c->x->mirror == NULL)
        c->x->mirror = mirror_begin(w, c->service_id, svc, req, c->x->uhead, c->x->uhead_len,
                                    c->x->in.data + c->x->in.start + head_len,
                                    c->x->in.end - c->x->in.start - head_len);
    request_dispatch(c);
}

/* ---------------------------------------------------------------- hold and maintenance ------ */

/* A held request is a complete head parked in its client's buffer (PH_HELD), on the worker's
 * held list, with its hold limit as the client's deadline. Nothing is routed or counted for it
 * until it goes on: request_try parses it again under the table of that moment, so a release
 * sends it to the version live then. Body bytes that follow wait in the buffer (reading stops
 * when it is full); a client that goes away is closed and its place given back. */

static void request_try(struct client *c);

static void hold_park(struct client *c, uint64_t max_ms)
{
    struct h1_state *h = c->w->h1;
    c->phase = PH_HELD;
    c->x->held_next = NULL;
    c->x->held_prev = h->held_tail;
    if (h->held_tail != NULL)
        h->held_tail->x->held_next = c;
    else
        h->held = c;
    h->held_tail = c;
    h->nheld++;
    client_timer(c, max_ms);
}

/* Takes c off the held list and gives its place back; c is in PH_HEAD after it. */
static void hold_unpark(struct client *c, int expired)
{
    struct h1_state *h = c->w->h1;
    struct exchange *x = c->x;
    if (x->held_prev != NULL)
        x->held_prev->x->held_next = x->held_next;
    else
        h->held = x->held_next;
    if (x->held_next != NULL)
        x->held_next->x->held_prev = x->held_prev;
    else
        h->held_tail = x->held_prev;
    x->held_prev = x->held_next = NULL;
    h->nheld--;
    c->phase = PH_HEAD;
    hold_leave(c->service_id, expired);
}

/* Sends an answer hold.c wrote into c's rhead (n bytes; n < 0: it did not fit, closed). */
static void hold_send(struct client *c, int n)
{
    atomic_fetch_add_explicit(&c->w->stats.requests, 1, memory_order_relaxed);
    if (n < 0) {
        client_close(c);
        return;
    }
    c->x->rhead_len = (size_t)n;
    client_send_own(c);
}

static char *hold_rhead(struct client *c)
{
    if (c->x->rhead == NULL)
        c->x->rhead = worker_buf_get(c->w);
    return c->x->rhead;
}

/* The held request's limit passed: 503 with Retry-After, never a backend. */
static void hold_expire(struct client *c)
{
    hold_unpark(c, 1);
    hold_send(c, hold_refusal_answer(hold_rhead(c), WORKER_BUF_SIZE, 1, c->x->meth == HTTP_M_HEAD));
}

/* Before a complete request is routed: a service in maintenance answers it, a held service
 * parks it (or refuses it when hold_max_requests wait already). Returns 1 when it was taken
 * care of here, 0 when it goes on. */
static int hold_or_answer(struct client *c, const struct http_request *req)
{
    const struct route_service *svc = client_service(c);
    if (svc == NULL || (!svc->maintenance && svc->hold_ms == 0))
        return 0;
    int head_only = req->meth == HTTP_M_HEAD;
    if (svc->maintenance) {
        int html = 0;
        for (size_t i = 0; i < req->num_headers && !html; i++) {
            const struct http_header *h = &req->headers[i];
            html = http_token_eq(h->name, h->name_len, "accept") &&
                   hold_accepts_html(h->value, h->value_len);
        }
        hold_count_maintenance(c->service_id);
        hold_send(c, hold_maintenance_answer(hold_rhead(c), WORKER_BUF_SIZE,
                                             svc->maintenance_message, html, head_only));
        return 1;
    }
    if (!hold_enter(c->service_id, svc->limits.hold_max_requests)) {
        hold_send(c, hold_refusal_answer(hold_rhead(c), WORKER_BUF_SIZE, 0, head_only));
        return 1;
    }
    c->x->meth = req->meth;
    hold_park(c, svc->hold_ms);
    return 1;
}

/* A table was published: the requests of services it no longer holds go on, oldest first.
 * Those still held are kept; going on never touches another held client, so the walk can
 * resume from the last one kept. */
static void on_hold_resume(uv_timer_t *t)
{
    struct worker *w = t->data;
    struct h1_state *h = w->h1;
    struct client *kept = NULL;
    for (;;) {
        struct client *c = kept != NULL ? kept->x->held_next : h->held;
        if (c == NULL)
            break;
        const struct route_service *svc = client_service(c);
        if (svc != NULL && svc->hold_ms > 0 && !svc->maintenance) {
            kept = c;
            continue;
        }
        hold_unpark(c, 0);
        c->x->lim = svc != NULL ? svc->limits : default_limits;
        request_try(c);
    }
}

/* proxy_proto.drain with PROXY_DRAIN_TABLE: held requests are looked at on the next turn of
 * the loop, outside worker_refresh, which runs in the middle of other requests' work. */
static void hold_table_changed(struct worker *w)
{
    struct h1_state *h = w->h1;
    if (h->nheld == 0)
        return;
    if (h->resume == NULL) {
        h->resume = xcalloc(1, sizeof(*h->resume));
        uv_timer_init(&w->loop, h->resume);
        h->resume->data = w;
    }
    uv_timer_start(h->resume, on_hold_resume, 0, 0);
}

/* The worker's stop deadline: a held request gets its 503 (best effort, one try) before its
 * connection is closed, rather than silence. */
static void hold_force_end(struct client *c)
{
    hold_unpark(c, 1);
    int n = hold_refusal_answer(hold_rhead(c), WORKER_BUF_SIZE, 1, c->x->meth == HTTP_M_HEAD);
    if (n > 0 && !c->wpending) {
        uv_buf_t b = uv_buf_init(c->x->rhead, (unsigned)n);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
}

/* A shared listener: the request's service by its Host and path (http/vhost.h). Returns 1
 * when one takes it (c->service_id and the exchange's limits are that service's now), 0 after
 * answering 404. */
static int route_by_host(struct client *c, const struct http_request *req)
{
    int id = vhost_match(c->vhosts, req->host, req->host_len, req->target, req->target_len);
    if (id < 0) {
        client_error(c, 404, "no service of this listener takes this host and path");
        return 0;
    }
    if (id != c->service_id) {
        c->service_id = id;
        const struct route_service *svc = client_service(c);
        if (svc != NULL)
            c->x->lim = svc->limits;
    }
    return 1;
}

/* Parses the request head in the buffer, if complete; answers the error if it is invalid. */
static void request_try(struct client *c)
{
    struct http_header hdrs[HDR_CAP];
    struct http_request req;
    struct http_limits lim = {
        .max_headers = c->x->lim.max_headers < HDR_CAP ? c->x->lim.max_headers : HDR_CAP,
        .max_uri = c->x->lim.max_uri,
    };
    req.headers = hdrs;
    req.num_headers = HDR_CAP;
    size_t have = c->x->in.end - c->x->in.start;
    int rc = http_parse_request(c->x->in.data + c->x->in.start, have, &req, &lim);
    if (rc == HTTP_PARTIAL) {
        if (have >= c->x->lim.max_header_bytes)
            client_error(c, 431, "request head too large");
        return;
    }
    if (rc < 0) {
        client_error(c, http_err_status(rc), http_err_str(rc));
        return;
    }
    if ((size_t)rc > c->x->lim.max_header_bytes) {
        client_error(c, 431, "request head too large");
        return;
    }
    c->dl_at = 0;
    if (c->vhosts != NULL && !route_by_host(c, &req))
        return;
    if (hold_or_answer(c, &req))
        return;
    request_start(c, &req, (size_t)rc);
}

/* Between requests: take the next pipelined one from the buffer, or wait for it. */
static void client_continue(struct client *c)
{
    const struct route_service *svc = client_service(c);
    const struct route_limits *lim = svc ? &svc->limits : &default_limits;
    c->phase = PH_HEAD;
    c->close_after_write = 0;
    /* While stopping, an idle connection is left open until the drain deadline: closing it
     * now would race with a request already on its way (worker.c closes it at the deadline). */
    if (c->x != NULL && c->x->in.end > c->x->in.start) {
        /* A pipelined request waits in the buffer: the exchange goes on with it. */
        c->x->lim = *lim;
        c->x->resp_started = 0;
        client_timer(c, lim->client_header_ms);
        request_try(c);
        if (c->phase == PH_HEAD)
            client_read_start(c);
        return;
    }
    /* Idle: the connection keeps no buffer and no exchange until its next request arrives. */
    exchange_put(c);
    client_timer(c, lim->client_idle_ms);
    client_read_start(c);
}

/* A proxy_protocol listener's connection: the PROXY header first (net/proxyproto.h). Its source
 * becomes the connection's peer (a LOCAL header keeps the socket's); a malformed header closes
 * the connection. The bytes after it are the first request's. */
static void proxy_header_try(struct client *c)
{
    struct ibuf *b = &c->x->in;
    struct proxyproto_hdr h;
    int n = proxyproto_parse(b->data + b->start, b->end - b->start, &h);
    if (n == 0)
        return; /* more to come, within client_header */
    if (n < 0) {
        atomic_fetch_add_explicit(&c->w->stats.client_addr_refused, 1, memory_order_relaxed);
        client_close(c);
        return;
    }
    if (!h.local) {
        memset(&c->peer_sa, 0, sizeof(c->peer_sa));
        memcpy(&c->peer_sa, &h.src,
               h.src.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(c->peer_sa));
        sa_format((const struct sockaddr *)&c->peer_sa, c->x->peer);
    }
    b->start += (size_t)n;
    c->phase = PH_HEAD;
    if (b->start == b->end) {
        b->start = b->end = 0;
        return;
    }
    request_try(c);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client_read(s->data, nread, buf);
}

static void client_read(void *user, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = user;
    (void)buf;
    c->w->io_events++;
    if (c->phase == PH_CLOSING)
        return;
    if (nread == 0) {
        /* Nothing to read after all: an idle connection gives back what the alloc took. */
        if (c->phase == PH_HEAD && c->x != NULL && c->x->in.end == c->x->in.start)
            exchange_put(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        if (c->phase == PH_HEAD)
            client_error(c, 431, "request head too large");
        else
            client_read_stop(c);
        return;
    }
    if (nread < 0) {
        if (c->phase == PH_PROXY && nread == UV_EOF && c->x->body_done && !c->x->tunnel) {
            /* A half-close after a complete request: answer it, then close. */
            c->peer_eof = 1;
            client_read_stop(c);
            return;
        }
        client_close(c);
        return;
    }
    int was_empty = (c->x->in.end == c->x->in.start);
    c->x->in.end += (size_t)nread;
    if (c->phase == PH_PPHDR) {
        proxy_header_try(c);
        return;
    }
    if (c->phase == PH_HELD)
        return; /* body or pipelined bytes wait with the held request */
    if (c->phase == PH_HEAD) {
        if (was_empty)
            client_timer(c, c->x->lim.client_header_ms);
        request_try(c);
        return;
    }
    if (c->x->tunnel) {
        tunnel_up(c);
        return;
    }
    /* PH_PROXY: more of the request body, or the next pipelined request, which waits in the
     * buffer until this exchange is done. */
    if (!c->x->body_done)
        upstream_send(c);
}

/* proxy_proto.accept: a client connection waits on l. */
static void h1_accept(struct worker_listener *l)
{
    struct worker *w = l->w;
    if (w->h1 == NULL)
        w->h1 = xcalloc(1, sizeof(*w->h1));
    struct client *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->service_id = l->service_id;
    c->conn_service = l->service_id;
    c->vhosts = l->vhosts;
    c->preview = l->preview;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        worker_accepted_fd(l, fd);
    int sl = sizeof(c->peer_sa);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer_sa, &sl) != 0)
        memset(&c->peer_sa, 0, sizeof(c->peer_sa)); /* its text is "unknown" */
    c->trusted = l->trusted;
    if (l->proxy_protocol &&
        (l->trusted == NULL || !cidr_list_contains(l->trusted, (struct sockaddr *)&c->peer_sa))) {
        /* Only a trusted balancer may say who the client is: anyone else is refused unheard. */
        atomic_fetch_add_explicit(&w->stats.client_addr_refused, 1, memory_order_relaxed);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    /* From here on the stream's data is the TLS connection's (net/tls.h). */
    if (l->tls != NULL && tls_conn_new(&c->tls, l->tls, (uv_stream_t *)&c->tcp, c) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    c->next = w->h1->clients;
    if (c->next)
        c->next->prev = c;
    w->h1->clients = c;
    atomic_fetch_add_explicit(&w->stats.accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.clients, 1, memory_order_relaxed);
    if (c->service_id >= 0 && c->service_id < MAX_SERVICE_IDS)
        atomic_fetch_add_explicit(&service_conns[c->service_id], 1, memory_order_relaxed);
    const struct route_service *svc = client_service(c);
    const struct route_limits *lim = svc ? &svc->limits : &default_limits;
    c->phase = PH_HEAD;
    if (lim->max_connections > 0 && c->service_id >= 0 && c->service_id < MAX_SERVICE_IDS &&
        (size_t)atomic_load_explicit(&service_conns[c->service_id], memory_order_relaxed) >
            lim->max_connections) {
        /* A clean refusal: the client learns why and when to come back, nothing is forwarded. */
        client_error(c, 503, "too many connections; retry shortly");
        return;
    }
    /* The PROXY header, then the first request, get the header deadline from the accept. */
    if (l->proxy_protocol)
        c->phase = PH_PPHDR;
    client_timer(c, lim->client_header_ms);
    client_read_start(c);
}

/* A WebSocket close frame, server to client (unmasked), code 1001 "going away" (RFC 6455
 * 5.5.1, 7.4.1): what a tunnel's client is told before cutover closes it at a drain deadline. */
static const char ws_going_away[4] = {(char)0x88, 0x02, 0x03, (char)0xE9};

static void on_drain_deadline(struct client *c)
{
    if (c->phase == PH_CLOSING || c->up == NULL || !upstream_retired(&c->up->base))
        return;
    /* Its version was switched away drain_timeout ago: the connection ends here. */
    if (c->x->ll_target != NULL)
        atomic_fetch_add_explicit(&c->x->ll_target->closed_at_drain, 1, memory_order_relaxed);
    count_loss(c, WORKER_LOSS_DRAIN);
    if (c->x->tunnel && !c->wpending) {
        /* Best effort, one try: a client that cannot take 4 bytes now is closed without it.
         * The frame goes out only between writes of upstream bytes, which end on a frame
         * boundary unless the version itself was cut mid-frame. */
        uv_buf_t b = uv_buf_init((char *)ws_going_away, sizeof(ws_going_away));
        if (c->tls != NULL)
            (void)tls_write(c->tls, NULL, &b, 1, NULL);
        else
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    client_close(c);
}

/* Connections still using a retired target get their service's drain_timeout. */
static void arm_drain(struct worker *w)
{
    for (struct client *c = w->h1->clients; c; c = c->next) {
        if (c->phase != PH_PROXY || c->up == NULL || !upstream_retired(&c->up->base) ||
            c->x->drain_armed)
            continue;
        const struct route_service *svc = client_service(c);
        c->x->drain_armed = 1;
        client_timer(c, svc ? svc->limits.drain_ms : c->x->lim.drain_ms);
        c->dl_drain = 1;
    }
}

/* Closes at most max client connections that have been idle between requests for REAP_IDLE_MS
 * or more, the longest idle first among those the walk meets: descriptors are short, and an
 * idle keep-alive connection is the one a client expects may close (RFC 9112 9.3.1; nginx's
 * ngx_drain_connections does the same). Returns how many were closed. */
static size_t reap_idle(struct worker *w, size_t max)
{
    uint64_t now = uv_now(&w->loop);
    size_t n = 0;
    struct client *c = w->h1->clients, *next;
    for (; c != NULL && n < max; c = next) {
        next = c->next;
        if (c->phase != PH_HEAD || c->x != NULL || c->wpending || c->dl_at == 0)
            continue;
        const struct route_service *svc = client_service(c);
        uint64_t idle_ms = svc ? svc->limits.client_idle_ms : default_limits.client_idle_ms;
        /* dl_at is when its idle deadline falls: it has been idle idle_ms - (dl_at - now). */
        if (c->dl_at > now + idle_ms - REAP_IDLE_MS)
            continue;
        client_close(c);
        n++;
    }
    return n;
}

/* proxy_proto.drain. */
static size_t h1_drain(struct worker *w, enum proxy_drain how)
{
    size_t n = 0;
    if (w->h1 == NULL)
        return 0;
    if (how == PROXY_DRAIN_RETIRED) {
        arm_drain(w);
        return 0;
    }
    if (how == PROXY_DRAIN_IDLE)
        return reap_idle(w, REAP_MAX);
    if (how == PROXY_DRAIN_TABLE) {
        hold_table_changed(w);
        return 0;
    }
    struct client *c = w->h1->clients, *next;
    for (; c; c = next) {
        next = c->next;
        if (how == PROXY_DRAIN_FORCE) {
            /* The stop deadline cuts what is in progress: a request, a stream, a tunnel. */
            if (c->phase == PH_PROXY && c->x != NULL)
                count_loss(c, WORKER_LOSS_DRAIN);
            if (c->phase == PH_HELD)
                hold_force_end(c);
            client_close(c);
        } else
            n++;
    }
    return n;
}

const struct proxy_proto h1_proto = {
    .name = "http",
    .accept = h1_accept,
    .drain = h1_drain,
    .done = h1_done,
};
