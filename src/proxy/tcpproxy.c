/* The TCP relay (`protocol: tcp`): one client connection, one upstream connection chosen once
 * per connection by the same routing decision as HTTP (proxy/pick.h, by client address), and
 * the bytes between them, one write in flight per direction (the backpressure). On a
 * `proxy_protocol` listener the PROXY header is read first and names the client. Runs on its
 * worker's loop only; the worker reaches it through tcp_proto. */
#include "proxy/tcpproxy.h"

#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "net/addr.h"
#include "net/cidr.h"
#include "net/proxyproto.h"
#include "proxy/pick.h"
#include "proxy/upstream.h"
#include "proxy/worker_int.h"

enum tcp_phase { TP_HEADER, TP_CONNECTING, TP_RELAY, TP_CLOSING };

struct tcp_conn;

/* The upstream side: proxy/upstream's connection and the bytes read from it. */
struct tcp_up {
    struct upstream base; /* first: proxy/upstream allocates tcp_up_ops.size bytes */
    struct tcp_conn *conn;
    struct worker *w;
    char *buf; /* upstream -> client bytes, WORKER_BUF_SIZE */
    size_t len;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int wpending;
};

struct tcp_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* PROXY header deadline, then the drain deadline */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct worker *w;
    struct worker_listener *l;
    struct tcp_up *up;
    struct route_target *target; /* holds a reference while relaying */
    struct sockaddr_in6 peer;    /* the socket's peer, or the PROXY header's source */
    char *buf;                   /* client -> upstream bytes, WORKER_BUF_SIZE */
    size_t len;
    enum tcp_phase phase;
    enum route_role role;
    int wpending;    /* a write to the client is in flight */
    int client_eof;  /* the client ended its side */
    int up_eof;      /* the upstream ended its side */
    int up_shut;     /* the upstream's write side was shut down after client_eof */
    int client_shut; /* the client's write side was shut down after up_eof */
    int handles;     /* libuv handles not yet closed */
    int drain_armed;
    struct tcp_conn *prev, *next;
};

struct tcp_state {
    struct tcp_conn *conns;
};

static void conn_close(struct tcp_conn *c);
static void relay_up(struct tcp_conn *c);
static void relay_down(struct tcp_conn *c);

static struct tcp_state *state(struct worker *w)
{
    if (w->tcp == NULL)
        w->tcp = xcalloc(1, sizeof(*w->tcp));
    return w->tcp;
}

static const struct route_service *conn_service(struct tcp_conn *c)
{
    worker_refresh(c->w);
    return c->w->table ? route_table_service(c->w->table, c->l->service_id) : NULL;
}

static void count_lost(struct tcp_conn *c, enum worker_loss why)
{
    struct worker *w = c->w;
    int id = c->l->service_id;
    if (id < 0 || (size_t)id >= w->nservices)
        return;
    WORKER_STAT_ADD(&w->role_stats[(size_t)id * ROUTE_ROLES + c->role].lost[why], 1);
}

/* ---------------------------------------------------------------- closing ------------------ */

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct tcp_conn *c = h->data;
    if (--c->handles > 0)
        return;
    worker_buf_put(c->w, c->buf);
    free(c);
}

/* Ends the relay: both connections close, bytes still queued included. */
static void conn_close(struct tcp_conn *c)
{
    if (c->phase == TP_CLOSING)
        return;
    c->phase = TP_CLOSING;
    struct worker *w = c->w;
    if (c->up != NULL) {
        c->up->conn = NULL;
        upstream_close(&c->up->base);
        c->up = NULL;
    }
    route_target_unref(c->target);
    c->target = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->tcp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&w->stats.clients, 1, memory_order_relaxed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* Closes when both sides have ended and nothing is queued. */
static void maybe_done(struct tcp_conn *c)
{
    if (c->client_eof && c->up_eof && !c->wpending && (c->up == NULL || !c->up->wpending))
        conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    struct tcp_conn *c = t->data;
    if (c->drain_armed)
        count_lost(c, WORKER_LOSS_DRAIN);
    conn_close(c); /* no PROXY header in time, or the drain deadline of a retired version */
}

/* ---------------------------------------------------------------- upstream side ------------ */

static void up_alloc(struct upstream *base, uv_buf_t *buf)
{
    struct tcp_up *u = (struct tcp_up *)base;
    if (u->buf == NULL)
        u->buf = worker_buf_get(u->w);
    *buf = uv_buf_init(u->buf + u->len, (unsigned)(WORKER_BUF_SIZE - u->len));
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void up_read(struct upstream *base, ssize_t nread)
{
    struct tcp_up *u = (struct tcp_up *)base;
    struct tcp_conn *c = u->conn;
    if (c == NULL)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        c->up_eof = 1;
        upstream_read_stop(&u->base);
        relay_down(c);
        return;
    }
    u->len += (size_t)nread;
    relay_down(c);
}

static void up_timeout(struct upstream *base)
{
    struct tcp_up *u = (struct tcp_up *)base;
    if (u->conn != NULL)
        conn_close(u->conn); /* the connect took longer than upstream_connect */
}

static void up_freed(struct upstream *base)
{
    struct tcp_up *u = (struct tcp_up *)base;
    worker_buf_put(u->w, u->buf);
    u->buf = NULL;
}

static void up_connected(struct upstream *base, int status)
{
    struct tcp_up *u = (struct tcp_up *)base;
    struct tcp_conn *c = u->conn;
    if (c == NULL) {
        upstream_close(&u->base);
        return;
    }
    if (status < 0) {
        count_lost(c, WORKER_LOSS_502);
        conn_close(c);
        return;
    }
    upstream_deadline(&u->base, 0);
    c->phase = TP_RELAY;
    relay_up(c); /* the bytes that came with the PROXY header, then the client is read */
}

static const struct upstream_ops tcp_up_ops = {
    .size = sizeof(struct tcp_up),
    .alloc = up_alloc,
    .read = up_read,
    .connected = up_connected,
    .timeout = up_timeout,
    .freed = up_freed,
};

/* ---------------------------------------------------------------- relaying ----------------- */

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_read(struct tcp_conn *c, int on)
{
    if (on && !c->client_eof && c->phase != TP_CLOSING)
        (void)uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
    else if (!on)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_up_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_up_write(uv_write_t *req, int status)
{
    struct tcp_up *u = req->data;
    u->wpending = 0;
    struct tcp_conn *c = u->conn;
    if (c == NULL)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->len = 0;
    relay_up(c);
}

/* Client -> upstream: what the client sent goes out; while it is in flight the client is not
 * read. After the client's EOF, the upstream's write side is shut down. */
static void relay_up(struct tcp_conn *c)
{
    struct tcp_up *u = c->up;
    if (c->phase != TP_RELAY || u == NULL || u->wpending)
        return;
    if (c->len > 0) {
        uv_buf_t b = uv_buf_init(c->buf, (unsigned)c->len);
        u->wreq.data = u;
        if (uv_write(&u->wreq, (uv_stream_t *)&u->base.tcp, &b, 1, on_up_write) < 0) {
            conn_close(c);
            return;
        }
        u->wpending = 1;
        client_read(c, 0);
        return;
    }
    if (c->client_eof) {
        if (!c->up_shut) {
            c->up_shut = 1;
            if (uv_shutdown(&u->sreq, (uv_stream_t *)&u->base.tcp, on_up_shutdown) < 0)
                conn_close(c);
        }
        maybe_done(c);
        return;
    }
    client_read(c, 1);
}

static void on_client_write(uv_write_t *req, int status)
{
    struct tcp_conn *c = req->data;
    c->wpending = 0;
    if (c->phase == TP_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->up != NULL)
        c->up->len = 0;
    relay_down(c);
}

/* Upstream -> client, the same way. */
static void relay_down(struct tcp_conn *c)
{
    struct tcp_up *u = c->up;
    if (c->phase != TP_RELAY || u == NULL || c->wpending)
        return;
    if (u->len > 0) {
        uv_buf_t b = uv_buf_init(u->buf, (unsigned)u->len);
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_client_write) < 0) {
            conn_close(c);
            return;
        }
        c->wpending = 1;
        upstream_read_stop(&u->base);
        return;
    }
    if (c->up_eof) {
        if (!c->client_shut) {
            c->client_shut = 1;
            if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_client_shutdown) < 0)
                conn_close(c);
        }
        maybe_done(c);
        return;
    }
    if (upstream_read_start(&u->base) < 0)
        conn_close(c);
}

/* ---------------------------------------------------------------- the client side ---------- */

/* Picks the version and target for c's client address and connects to it. */
static void conn_dispatch(struct tcp_conn *c)
{
    const struct route_service *svc = conn_service(c);
    if (svc == NULL || svc->live.ntargets == 0) {
        count_lost(c, WORKER_LOSS_503);
        conn_close(c);
        return;
    }
    char text[64];
    addr_format_host((const struct sockaddr *)&c->peer, text, sizeof(text));
    struct pick_request rq = {
        .peer = (const struct sockaddr *)&c->peer,
        .peer_text = text,
        .preview = c->l->preview,
    };
    char cookie[PICK_COOKIE_ID_LEN];
    c->role = pick_role(svc, &rq, &c->w->rng, cookie);
    uint64_t now_ms = uv_hrtime() / 1000000;
    struct route_target *t = pick_target(pick_backend(svc, c->role), &c->w->rr, now_ms, NULL);
    if (t == NULL && c->role != ROUTE_STABLE) {
        c->role = ROUTE_STABLE;
        t = pick_target(&svc->live, &c->w->rr, now_ms, NULL);
    }
    if (t == NULL) {
        count_lost(c, WORKER_LOSS_503);
        conn_close(c);
        return;
    }
    route_target_ref(t);
    c->target = t;
    c->phase = TP_CONNECTING;
    client_read(c, 0); /* what arrives meanwhile waits in the kernel */
    struct upstream *base;
    int rc = upstream_get(&c->w->pools, t, 1, &tcp_up_ops, svc->limits.upstream_connect_ms, &base);
    struct tcp_up *u = (struct tcp_up *)base;
    u->w = c->w;
    u->conn = c;
    c->up = u;
    if (rc < 0) {
        count_lost(c, rc == UV_EMFILE || rc == UV_ENFILE ? WORKER_LOSS_503 : WORKER_LOSS_502);
        conn_close(c);
    }
}

/* The PROXY header at the start of c->buf: its source becomes the client. */
static void header_try(struct tcp_conn *c)
{
    struct proxyproto_hdr h;
    int n = proxyproto_parse(c->buf, c->len, &h);
    if (n == 0)
        return;
    if (n < 0) {
        atomic_fetch_add_explicit(&c->w->stats.client_addr_refused, 1, memory_order_relaxed);
        conn_close(c);
        return;
    }
    if (!h.local) {
        memset(&c->peer, 0, sizeof(c->peer));
        memcpy(&c->peer, &h.src,
               h.src.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(c->peer));
    }
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
    uv_timer_stop(&c->timer);
    conn_dispatch(c);
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct tcp_conn *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(WORKER_BUF_SIZE - c->len));
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tcp_conn *c = s->data;
    (void)buf;
    c->w->io_events++;
    if (c->phase == TP_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF || c->phase == TP_HEADER) {
            conn_close(c);
            return;
        }
        c->client_eof = 1;
        uv_read_stop(s);
        relay_up(c);
        return;
    }
    c->len += (size_t)nread;
    if (c->phase == TP_HEADER) {
        header_try(c);
        return;
    }
    relay_up(c);
}

/* proxy_proto.accept. */
static void tcp_accept(struct worker_listener *l)
{
    struct worker *w = l->w;
    struct tcp_state *st = state(w);
    struct tcp_conn *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->l = l;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        worker_accepted_fd(l, fd);
    uv_tcp_nodelay(&c->tcp, 1);
    int sl = sizeof(c->peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &sl) != 0)
        memset(&c->peer, 0, sizeof(c->peer));
    if (l->proxy_protocol &&
        (l->trusted == NULL || !cidr_list_contains(l->trusted, (struct sockaddr *)&c->peer))) {
        atomic_fetch_add_explicit(&w->stats.client_addr_refused, 1, memory_order_relaxed);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    c->buf = worker_buf_get(w);
    c->next = st->conns;
    if (c->next)
        c->next->prev = c;
    st->conns = c;
    atomic_fetch_add_explicit(&w->stats.accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.clients, 1, memory_order_relaxed);
    if (!l->proxy_protocol) {
        conn_dispatch(c);
        return;
    }
    const struct route_service *svc = conn_service(c);
    c->phase = TP_HEADER;
    uv_timer_start(&c->timer, on_timer, svc ? svc->limits.client_header_ms : 10000, 0);
    client_read(c, 1);
}

/* proxy_proto.drain. */
static size_t tcp_drain(struct worker *w, enum proxy_drain how)
{
    if (w->tcp == NULL || how == PROXY_DRAIN_TABLE)
        return 0; /* a TCP service is never held: nothing waits for a table */
    size_t n = 0;
    struct tcp_conn *c = w->tcp->conns, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        switch (how) {
        case PROXY_DRAIN_COUNT:
            n++;
            break;
        case PROXY_DRAIN_FORCE:
            if (c->phase == TP_RELAY)
                count_lost(c, WORKER_LOSS_DRAIN);
            conn_close(c);
            break;
        case PROXY_DRAIN_RETIRED:
            /* A connection to a version that gets no traffic any more ends drain_timeout
             * from now. */
            if (c->up != NULL && !c->drain_armed && upstream_retired(&c->up->base)) {
                const struct route_service *svc = conn_service(c);
                c->drain_armed = 1;
                uv_timer_start(&c->timer, on_timer, svc ? svc->limits.drain_ms : 30000, 0);
            }
            break;
        case PROXY_DRAIN_IDLE:
            break; /* a byte stream has no idle state cutover may end */
        case PROXY_DRAIN_TABLE:
            break;
        }
    }
    return n;
}

/* proxy_proto.done. */
static void tcp_done(struct worker *w)
{
    free(w->tcp);
    w->tcp = NULL;
}

const struct proxy_proto tcp_proto = {
    .name = "tcp",
    .accept = tcp_accept,
    .drain = tcp_drain,
    .done = tcp_done,
};
