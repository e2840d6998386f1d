/* The sample backend (see backend.h): one libuv loop, an intrusive list of connections, and
 * the few answers it can give built once at start-up, so serving a request allocates nothing
 * unless the socket pushes back. Requests are parsed just enough to frame them: the head up to
 * the blank line, Content-Length bodies skipped, pipelined requests answered in order. With
 * --delay-ms a connection holds its next answer on a per-connection timer and reads nothing
 * more until it is sent, which keeps pipelined answers in order without a queue. */
#include "demo/backend.h"

#include "core/log.h"
#include "core/xmalloc.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

/* Largest request head accepted; longer heads get 431 and a close. */
#define BACKEND_HEAD_MAX 16384
/* Above this many bytes queued for a client that does not read, stop reading its requests. */
#define BACKEND_WRITE_QUEUE_MAX (1u << 20)
/* Longest --delay-ms: a minute is slower than any timeout a demo or test would set. */
#define BACKEND_DELAY_MAX_MS 60000

enum answer_kind {
    ANSWER_HEALTH,
    ANSWER_VERSION,
    ANSWER_ERROR, /* the 500 that --error-rate injects */
    ANSWER_BAD,
    ANSWER_TOO_LARGE,
    ANSWER_COUNT
};

/* One canned response; `head_len` is what a HEAD request gets. */
struct answer {
    char *data;
    size_t len;
    size_t head_len;
};

/* An answer chosen for a request: which one, with "Connection: close" or not, head only. */
struct reply {
    enum answer_kind kind;
    int close;
    int head_only;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* holds the next answer for --delay-ms */
    struct conn *prev, *next;
    int open_handles;   /* tcp and timer: c is freed when both are closed */
    size_t len;         /* bytes of unanswered requests in buf */
    uint64_t body_left; /* bytes of the current request body still to skip */
    int closing;        /* a close is under way: answer nothing more */
    int reading;
    int waiting;          /* an answer waits on the timer; requests after it wait in buf */
    struct reply pending; /* that answer */
    char buf[BACKEND_HEAD_MAX];
};

struct backend {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    struct conn *conns;
    double error_rate; /* share of version answers that are 500 */
    double error_acc;  /* error_rate summed per answer; an error each time it reaches 1 */
    uint64_t delay_ms; /* added before every answer but health checks */
    /* [kind][1] carries "Connection: close". */
    struct answer answers[ANSWER_COUNT][2];
};

static struct backend backend;

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        backend.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void conn_close(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    struct conn *c = req->handle->data;

    (void)status;
    free(req);
    conn_close(c);
}

/* Closes c once everything queued has been written, so the last answer is not cut off by a
 * reset. */
static void conn_finish(struct conn *c)
{
    uv_shutdown_t *req;

    if (c->closing)
        return;
    c->closing = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    req = xmalloc(sizeof *req);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        free(req);
        c->closing = 0;
        conn_close(c);
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->buf + c->len, (unsigned int)(sizeof c->buf - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void delay_cb(uv_timer_t *t);

static void write_cb(uv_write_t *req, int status)
{
    uv_stream_t *s = req->handle;
    struct conn *c = s->data;

    free(req);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (!c->closing && !c->reading && !c->waiting && uv_stream_get_write_queue_size(s) == 0) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = 1;
    }
}

/* Queues one canned answer; tries a direct write first because it nearly always succeeds. */
static void conn_send(struct conn *c, const struct answer *a, int head_only)
{
    size_t n = head_only ? a->head_len : a->len;
    uv_buf_t b = uv_buf_init(a->data, (unsigned int)n);
    uv_write_t *req;
    int rc;

    rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc == (int)n)
        return;
    if (rc < 0 && rc != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (rc > 0)
        b = uv_buf_init(a->data + rc, (unsigned int)(n - (size_t)rc));
    req = xmalloc(sizeof *req);
    if (uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
        free(req);
        conn_close(c);
    }
}

/* Returns 1 when the comma-separated header value v (length n) holds token tok. */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);

    for (size_t i = 0; i + tl <= n; i++) {
        if (strncasecmp(v + i, tok, tl) != 0)
            continue;
        if ((i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
            (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' '))
            return 1;
    }
    return 0;
}

/* Chooses the answer to the request whose head is the hlen bytes at head (blank line
 * included) and notes the length of its body in c->body_left. */
static void conn_parse(struct conn *c, const char *head, size_t hlen, struct reply *rp)
{
    const char *eol = memchr(head, '\r', hlen);
    const char *sp1, *sp2, *p, *end = head + hlen;
    int http10, keep, head_only, health;
    enum answer_kind kind;

    sp1 = memchr(head, ' ', (size_t)(eol - head));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol - sp2 != 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        (sp2[8] != '0' && sp2[8] != '1')) {
        *rp = (struct reply){ANSWER_BAD, 1, 0};
        return;
    }
    http10 = sp2[8] == '0';
    keep = !http10;
    head_only = (sp1 - head == 4 && memcmp(head, "HEAD", 4) == 0);
    health = (sp2 - sp1 - 1 >= 8 && memcmp(sp1 + 1, "/healthz", 8) == 0 &&
              (sp2 - sp1 - 1 == 8 || sp1[9] == '?'));
    c->body_left = 0;

    for (p = eol + 2; p < end - 2;) {
        const char *le = memchr(p, '\r', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(le - p));
        const char *v;
        size_t vn;

        if (!colon) {
            *rp = (struct reply){ANSWER_BAD, 1, 0};
            return;
        }
        for (v = colon + 1; v < le && (*v == ' ' || *v == '\t'); v++)
            ;
        vn = (size_t)(le - v);
        while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
        if (colon - p == 10 && strncasecmp(p, "Connection", 10) == 0) {
            if (has_token(v, vn, "close"))
                keep = 0;
            else if (http10 && has_token(v, vn, "keep-alive"))
                keep = 1;
        } else if (colon - p == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            char num[24], *numend;
            unsigned long long cl;

            if (vn == 0 || vn >= sizeof num || v[0] < '0' || v[0] > '9') {
                *rp = (struct reply){ANSWER_BAD, 1, 0};
                return;
            }
            memcpy(num, v, vn);
            num[vn] = '\0';
            errno = 0;
            cl = strtoull(num, &numend, 10);
            if (errno != 0 || *numend != '\0') {
                *rp = (struct reply){ANSWER_BAD, 1, 0};
                return;
            }
            c->body_left = cl;
        } else if (colon - p == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            /* Chunked bodies are more than a sample needs; refuse them plainly. */
            *rp = (struct reply){ANSWER_BAD, 1, 0};
            return;
        }
        p = le + 2;
    }
    kind = health ? ANSWER_HEALTH : ANSWER_VERSION;
    /* A running sum instead of a random draw: exactly error_rate of the answers fail, evenly
     * spread, so any window of 1/error_rate answers holds one error. */
    if (kind == ANSWER_VERSION && backend.error_rate > 0) {
        backend.error_acc += backend.error_rate;
        if (backend.error_acc >= 1.0) {
            backend.error_acc -= 1.0;
            kind = ANSWER_ERROR;
        }
    }
    *rp = (struct reply){kind, !keep, head_only};
}

/* Answers the complete requests in c->buf in order, until one has to wait for the timer or the
 * connection is to be closed; keeps what is left for the next read. */
static void conn_process(struct conn *c)
{
    size_t off = 0;

    while (off < c->len && !c->waiting) {
        char *start = c->buf + off, *blank;
        size_t avail = c->len - off;
        struct reply rp;

        if (c->body_left > 0) {
            size_t skip = c->body_left < avail ? (size_t)c->body_left : avail;
            c->body_left -= skip;
            off += skip;
            continue;
        }
        blank = memmem(start, avail, "\r\n\r\n", 4);
        if (!blank)
            break;
        conn_parse(c, start, (size_t)(blank + 4 - start), &rp);
        off += (size_t)(blank + 4 - start);
        if (backend.delay_ms > 0 && (rp.kind == ANSWER_VERSION || rp.kind == ANSWER_ERROR)) {
            c->pending = rp;
            c->waiting = 1;
            uv_timer_start(&c->timer, delay_cb, backend.delay_ms, 0);
            break;
        }
        conn_send(c, &backend.answers[rp.kind][rp.close], rp.head_only);
        if (c->closing)
            return;
        if (rp.close) {
            conn_finish(c);
            return;
        }
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    if (!c->waiting && c->len == sizeof c->buf) {
        conn_send(c, &backend.answers[ANSWER_TOO_LARGE][1], 0);
        conn_finish(c);
        return;
    }
    if (c->reading && (c->waiting || uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
                                         BACKEND_WRITE_QUEUE_MAX)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* The delay of the held answer is over: send it, then go on with the requests behind it. */
static void delay_cb(uv_timer_t *t)
{
    struct conn *c = t->data;

    c->waiting = 0;
    if (c->closing)
        return;
    conn_send(c, &backend.answers[c->pending.kind][c->pending.close], c->pending.head_only);
    if (c->pending.close) {
        conn_finish(c);
        return;
    }
    conn_process(c);
    if (!c->closing && !c->waiting && !c->reading &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = 1;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    (void)buf;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->closing)
        return;
    c->len += (size_t)nread;
    conn_process(c);
}

static void accept_cb(uv_stream_t *server, int status)
{
    struct conn *c;

    if (status < 0)
        return;
    c = xcalloc(1, sizeof *c);
    uv_tcp_init(backend.loop, &c->tcp);
    uv_timer_init(backend.loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = backend.conns;
    if (c->next)
        c->next->prev = c;
    backend.conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
        conn_close(c);
        return;
    }
    c->reading = 1;
}

/* Stops everything: the loop then runs out of handles and uv_run returns. */
static void signal_cb(uv_signal_t *sig, int signum)
{
    (void)sig;
    (void)signum;
    if (!uv_is_closing((uv_handle_t *)&backend.listener))
        uv_close((uv_handle_t *)&backend.listener, NULL);
    for (struct conn *c = backend.conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&backend.sigterm, NULL);
    uv_close((uv_handle_t *)&backend.sigint, NULL);
}

static void answer_build(struct answer *a, const char *status, const char *version,
                         const char *body, int close)
{
    char xv[96] = "";

    if (version)
        snprintf(xv, sizeof xv, "X-Version: %s\r\n", version);
    a->data = xasprintf("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                        "%s%s\r\n",
                        status, strlen(body), xv, close ? "Connection: close\r\n" : "");
    a->head_len = strlen(a->data);
    char *full = xasprintf("%s%s", a->data, body);
    free(a->data);
    a->data = full;
    a->len = strlen(full);
}

static int version_valid(const char *v)
{
    size_t n = strlen(v);

    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* Parses the options after PORT VERSION into backend. Returns 0, or 2 (the exit code of bad
 * usage) after saying what is wrong. */
static int parse_options(int argc, char **argv)
{
    for (int i = 3; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;

        if (strcmp(opt, "--error-rate") != 0 && strcmp(opt, "--delay-ms") != 0) {
            fprintf(stderr, "sample-backend: unknown option '%s'\n", opt);
            return 2;
        }
        if (!val) {
            fprintf(stderr, "sample-backend: %s: missing its value\n", opt);
            return 2;
        }
        i++;
        errno = 0;
        if (strcmp(opt, "--error-rate") == 0) {
            double f = strtod(val, &end);
            if (errno != 0 || end == val || *end != '\0' || !isfinite(f) || f < 0 || f > 1) {
                fprintf(stderr,
                        "sample-backend: --error-rate: expected a share from 0 to 1 like 0.05, "
                        "got '%s'\n",
                        val);
                return 2;
            }
            backend.error_rate = f;
        } else {
            unsigned long ms = strtoul(val, &end, 10);
            if (errno != 0 || end == val || *end != '\0' || val[0] < '0' || val[0] > '9' ||
                ms > BACKEND_DELAY_MAX_MS) {
                fprintf(stderr,
                        "sample-backend: --delay-ms: expected milliseconds from 0 to %d, got "
                        "'%s'\n",
                        BACKEND_DELAY_MAX_MS, val);
                return 2;
            }
            backend.delay_ms = ms;
        }
    }
    return 0;
}

int demo_backend_main(int argc, char **argv)
{
    struct sockaddr_in sa;
    char *end, *body = NULL, *error_body = NULL;
    long port;
    int rc, code = 1;

    if (argc < 3) {
        fprintf(stderr, "usage: cutover sample-backend PORT VERSION [--error-rate F] "
                        "[--delay-ms N]\n");
        return 2;
    }
    errno = 0;
    port = strtol(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "sample-backend: PORT: expected 1..65535, got '%s'\n", argv[1]);
        return 2;
    }
    if (!version_valid(argv[2])) {
        fprintf(stderr, "sample-backend: VERSION: expected 1-64 of A-Za-z0-9._-, got '%s'\n",
                argv[2]);
        return 2;
    }
    memset(&backend, 0, sizeof backend);
    if (parse_options(argc, argv) != 0)
        return 2;

    body = xasprintf("%s\n", argv[2]);
    error_body = xasprintf("%s: injected error\n", argv[2]);
    for (int close = 0; close < 2; close++) {
        answer_build(&backend.answers[ANSWER_HEALTH][close], "200 OK", NULL, "ok\n", close);
        answer_build(&backend.answers[ANSWER_VERSION][close], "200 OK", argv[2], body, close);
        answer_build(&backend.answers[ANSWER_ERROR][close], "500 Internal Server Error", argv[2],
                     error_body, close);
        answer_build(&backend.answers[ANSWER_BAD][close], "400 Bad Request", NULL, "bad request\n",
                     close);
        answer_build(&backend.answers[ANSWER_TOO_LARGE][close],
                     "431 Request Header Fields Too Large", NULL, "request head too large\n",
                     close);
    }

    backend.loop = uv_default_loop();
    uv_ip4_addr("127.0.0.1", (int)port, &sa);
    uv_tcp_init(backend.loop, &backend.listener);
    uv_signal_init(backend.loop, &backend.sigterm);
    uv_signal_init(backend.loop, &backend.sigint);
    uv_signal_start(&backend.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&backend.sigint, signal_cb, SIGINT);
    rc = uv_tcp_bind(&backend.listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&backend.listener, SOMAXCONN, accept_cb);
    if (rc != 0) {
        fprintf(stderr, "sample-backend: cannot listen on 127.0.0.1:%ld: %s\n", port,
                uv_strerror(rc));
        signal_cb(NULL, 0);
        uv_run(backend.loop, UV_RUN_DEFAULT);
        goto out;
    }
    {
        char portstr[8];
        char rate[32], delay[32];
        snprintf(portstr, sizeof portstr, "%ld", port);
        snprintf(rate, sizeof rate, "%g", backend.error_rate);
        snprintf(delay, sizeof delay, "%llu", (unsigned long long)backend.delay_ms);
        log_info("sample backend listening", "version", argv[2], "addr", "127.0.0.1", "port",
                 portstr, "error_rate", rate, "delay_ms", delay);
    }
    uv_run(backend.loop, UV_RUN_DEFAULT);
    log_info("sample backend stopped", "version", argv[2]);
    code = 0;
out:
    uv_loop_close(backend.loop);
    for (int k = 0; k < ANSWER_COUNT; k++)
        for (int close = 0; close < 2; close++)
            free(backend.answers[k][close].data);
    free(body);
    free(error_body);
    return code;
}
