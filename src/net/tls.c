/* TLS termination with OpenSSL 3 (see tls.h): certificate checks and SSL_CTX construction on the
 * control thread, then per-connection TLS over memory BIOs on the loop of each connection's
 * stream. The socket stays libuv's: ciphertext is read into a per-thread buffer and handed to
 * OpenSSL, ciphertext OpenSSL produces is written with uv_write from a small per-connection
 * chunk, and the user is given plaintext through libuv-shaped callbacks. */
#include "net/tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/xmalloc.h"

/* ---------------------------------------------------------------- names and counters ------- */

const char *tls_fail_name(enum tls_fail why)
{
    static const char *const names[TLS_FAILS] = {"sni", "plain_http", "timeout", "protocol", "eof"};
    return (unsigned)why < TLS_FAILS ? names[why] : "unknown";
}

/* One certificate of a server: its context and the DNS names SNI is matched against. */
struct tls_cert {
    SSL_CTX *ctx;
    int64_t not_after; /* Unix seconds */
    char **names;
    size_t nnames;
};

struct tls_server {
    struct tls_cert *certs; /* [0] is the default */
    size_t ncerts;
    _Atomic uint64_t handshakes;
    _Atomic uint64_t failures[TLS_FAILS];
};

size_t tls_server_ncerts(const struct tls_server *s)
{
    return s->ncerts;
}

int64_t tls_server_not_after(const struct tls_server *s, size_t i)
{
    return i < s->ncerts ? s->certs[i].not_after : 0;
}

uint64_t tls_server_handshakes(const struct tls_server *s)
{
    return atomic_load_explicit(&s->handshakes, memory_order_relaxed);
}

uint64_t tls_server_failures(const struct tls_server *s, enum tls_fail why)
{
    return (unsigned)why < TLS_FAILS ? atomic_load_explicit(&s->failures[why], memory_order_relaxed)
                                     : 0;
}

/* ---------------------------------------------------------------- SNI ----------------------- */

int tls_sni_valid(const char *name, size_t len)
{
    if (len == 0 || len > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0; /* no trailing dot: RFC 6066 3 */
}

int tls_name_match(const char *pattern, const char *name, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com" matches "a.example.com", not "example.com" nor "a.b.example.com". */
        const char *dot = memchr(name, '.', len);
        if (dot == NULL || dot == name)
            return 0;
        size_t rest = len - (size_t)(dot - name);
        return rest == pl - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
    }
    return pl == len && strncasecmp(pattern, name, len) == 0;
}

int tls_server_select(const struct tls_server *s, const char *name, size_t len)
{
    if (name == NULL)
        return 0;
    if (!tls_sni_valid(name, len))
        return -1;
    for (size_t i = 0; i < s->ncerts; i++)
        for (size_t k = 0; k < s->certs[i].nnames; k++)
            if (s->certs[i].names[k][0] != '*' && tls_name_match(s->certs[i].names[k], name, len))
                return (int)i;
    for (size_t i = 0; i < s->ncerts; i++)
        for (size_t k = 0; k < s->certs[i].nnames; k++)
            if (s->certs[i].names[k][0] == '*' && tls_name_match(s->certs[i].names[k], name, len))
                return (int)i;
    return 0; /* an unknown name gets the default certificate, as with nginx and HAProxy */
}

/* ---------------------------------------------------------------- certificate checks -------- */

/* The first OpenSSL error of this thread as text, the queue cleared. */
static const char *ssl_why(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0)
        return "no detail";
    ERR_error_string_n(e, buf, len);
    return buf;
}

static X509 *read_cert(const char *path, char *err, size_t errlen)
{
    char why[256];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cert %s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        snprintf(err, errlen, "cert %s: not a PEM certificate (%s)", path,
                 ssl_why(why, sizeof(why)));
    return x;
}

int tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    char why[256];
    struct stat st;
    int rc = -EINVAL;
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    FILE *f = NULL;

    if (stat(key, &st) == -1) {
        snprintf(err, errlen, "key %s: cannot read: %s", key, strerror(errno));
        goto out;
    }
    /* Like ssh with its keys (and cutover with admin.tokens_file): a secret others may read is
     * refused rather than used. */
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "key %s is readable or writable by group or others (mode %04o); expected mode "
                 "0600 (chmod 600 %s)",
                 key, (unsigned)(st.st_mode & 07777), key);
        goto out;
    }
    if ((x = read_cert(cert, err, errlen)) == NULL)
        goto out;
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        BIO *b = BIO_new(BIO_s_mem());
        char when[64] = "?";
        if (b != NULL && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
            int n = BIO_read(b, when, (int)sizeof(when) - 1);
            when[n > 0 ? n : 0] = '\0';
        }
        BIO_free(b);
        snprintf(err, errlen, "cert %s expired on %s", cert, when);
        goto out;
    }
    if ((f = fopen(key, "r")) == NULL) {
        snprintf(err, errlen, "key %s: cannot read: %s", key, strerror(errno));
        goto out;
    }
    pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (pk == NULL) {
        snprintf(err, errlen, "key %s: not a PEM private key without passphrase (%s)", key,
                 ssl_why(why, sizeof(why)));
        goto out;
    }
    if (X509_check_private_key(x, pk) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "cert %s does not match key %s", cert, key);
        goto out;
    }
    rc = 0;
out:
    if (f != NULL)
        fclose(f);
    EVP_PKEY_free(pk);
    X509_free(x);
    return rc;
}

/* ---------------------------------------------------------------- contexts ------------------ */

static const unsigned char alpn_http11[] = "\x08http/1.1";

/* ALPN: http/1.1 when the client offers it; a client offering only others (h2) goes on without
 * ALPN, as if it had offered none, and speaks HTTP/1.1 or leaves. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = o;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

struct tls_conn;
static void conn_mark_sni(SSL *ssl);

/* SNI: switch to the certificate that carries the name; refuse a name no certificate could
 * carry (unrecognized_name alert) rather than answer it with the default. */
static int on_servername(SSL *ssl, int *al, void *arg)
{
    const struct tls_server *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int i = tls_server_select(s, name, name ? strlen(name) : 0);
    if (i < 0) {
        conn_mark_sni(ssl);
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (i > 0 && SSL_set_SSL_CTX(ssl, s->certs[i].ctx) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *ctx_build(struct tls_server *s, const struct tls_pair *p, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_why(why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No renegotiation (a client-driven CPU sink), an EOF without close_notify is an EOF (HTTP
     * clients rarely send one), the server's cipher order. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* An idle keep-alive connection gives its record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"cutover", 7);
    /* Resumption by stateless tickets only (TLS 1.2 and 1.3): no server-side session cache,
     * whose inserts take a lock shared by every worker and whose periodic flush walks the
     * whole table (every 255 handshakes, up to 20k sessions) on the handshake path. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* One TLS 1.3 ticket per handshake, not OpenSSL's two: a client resumes one connection at
     * a time, and each ticket is an encryption and a record on every full handshake. */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, s);
    if (SSL_CTX_use_certificate_chain_file(ctx, p->cert) != 1) {
        snprintf(err, errlen, "cert %s: %s", p->cert, ssl_why(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, p->key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "key %s: %s", p->key, ssl_why(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "cert %s does not match key %s", p->cert, p->key);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* The DNS names of the certificate in ctx: subjectAltName DNS entries, else the CN. */
static void cert_names(struct tls_cert *c)
{
    X509 *x = SSL_CTX_get0_certificate(c->ctx);
    if (x == NULL)
        return;
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        c->not_after = (int64_t)timegm(&tm);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = gens ? sk_GENERAL_NAME_num(gens) : 0;
    c->names = xcalloc((size_t)n + 1, sizeof(*c->names));
    for (int i = 0; i < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len <= 0 || memchr(d, '\0', (size_t)len) != NULL)
            continue;
        c->names[c->nnames++] = xstrndup((const char *)d, (size_t)len);
    }
    GENERAL_NAMES_free(gens);
    if (c->nnames == 0) {
        char cn[256];
        X509_NAME *sub = X509_get_subject_name(x);
        if (X509_NAME_get_text_by_NID(sub, NID_commonName, cn, sizeof(cn)) > 0)
            c->names[c->nnames++] = xstrdup(cn);
    }
}

int tls_server_new(struct tls_server **out, const struct tls_pair *pairs, size_t n, char *err,
                   size_t errlen)
{
    *out = NULL;
    if (n == 0) {
        snprintf(err, errlen, "no certificate");
        return -EINVAL;
    }
    struct tls_server *s = xcalloc(1, sizeof(*s));
    s->certs = xcalloc(n, sizeof(*s->certs));
    for (size_t i = 0; i < n; i++) {
        if (tls_check_pair(pairs[i].cert, pairs[i].key, err, errlen) < 0)
            goto fail;
        s->certs[i].ctx = ctx_build(s, &pairs[i], err, errlen);
        if (s->certs[i].ctx == NULL)
            goto fail;
        s->ncerts++;
        cert_names(&s->certs[i]);
    }
    *out = s;
    return 0;
fail:
    tls_server_free(s);
    return -EINVAL;
}

void tls_server_free(struct tls_server *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->ncerts; i++) {
        SSL_CTX_free(s->certs[i].ctx);
        for (size_t k = 0; k < s->certs[i].nnames; k++)
            free(s->certs[i].names[k]);
        free(s->certs[i].names);
    }
    free(s->certs);
    free(s);
}

/* ---------------------------------------------------------------- connections --------------- */

/* Ciphertext read from any socket of this thread goes here, and straight into the connection's
 * read BIO: libuv calls alloc and read back to back on one thread, so one buffer serves all. */
#define TLS_RBUF_SIZE (64 * 1024)
static _Thread_local char tls_rbuf[TLS_RBUF_SIZE];

/* One write of ciphertext: it lives until its uv_write callback. */
struct tls_out {
    uv_write_t req;
    struct tls_conn *t;
    uv_write_t *ureq; /* the user's write, told when this one is done; NULL: none */
    uv_write_cb ucb;
    size_t cap;
    char data[];
};

struct tls_conn {
    uv_stream_t *s;
    uv_idle_t idle; /* delivers plaintext OpenSSL holds once reading resumes */
    SSL *ssl;
    BIO *rbio, *wbio; /* memory BIOs: ciphertext in, ciphertext out */
    struct tls_server *srv;
    void *user;
    tls_alloc_cb alloc;
    tls_read_cb read;
    struct tls_out *spare; /* one chunk kept for the next write */
    uv_close_cb close_cb;
    int open_handles; /* the stream and idle, while closing */
    int err;          /* a socket error to deliver instead of UV_EOF */
    unsigned established : 1;
    unsigned reading : 1;     /* the user wants plaintext */
    unsigned tcp_reading : 1; /* uv_read_start is in effect */
    unsigned eof : 1;         /* the socket said EOF (or failed) */
    unsigned failed : 1;      /* the handshake failed: counted */
    unsigned told : 1;        /* the user was told of the failure */
    unsigned fatal : 1;       /* OpenSSL saw a fatal error after the handshake: no shutdown */
    unsigned sni_bad : 1;     /* on_servername refused the name */
    unsigned sniffed : 1;     /* the first byte was looked at */
    unsigned closing : 1;
};

static void conn_mark_sni(SSL *ssl)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t != NULL)
        t->sni_bad = 1;
}

static void deliver(struct tls_conn *t);

static void on_idle(uv_idle_t *h)
{
    struct tls_conn *t = h->data;
    uv_idle_stop(h);
    deliver(t);
}

int tls_conn_new(struct tls_conn **out, struct tls_server *srv, uv_stream_t *s, void *user)
{
    *out = NULL;
    struct tls_conn *t = xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(srv->certs[0].ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        ERR_clear_error();
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return -ENOMEM;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both now */
    SSL_set_accept_state(t->ssl);
    SSL_set_app_data(t->ssl, t);
    t->s = s;
    t->srv = srv;
    t->user = user;
    uv_idle_init(s->loop, &t->idle);
    t->idle.data = t;
    s->data = t;
    *out = t;
    return 0;
}

int tls_established(const struct tls_conn *t)
{
    return t->established;
}

static void out_free(struct tls_conn *t, struct tls_out *o)
{
    if (t->spare == NULL && !t->closing && o->cap <= 2 * TLS_RBUF_SIZE)
        t->spare = o;
    else
        free(o);
}

static void on_out_written(uv_write_t *req, int status)
{
    struct tls_out *o = req->data;
    struct tls_conn *t = o->t;
    uv_write_t *ureq = o->ureq;
    uv_write_cb ucb = o->ucb;
    out_free(t, o);
    if (ucb != NULL)
        ucb(ureq, status);
}

/* Drops the first n bytes of the ciphertext waiting in the write BIO (the socket took them). */
static void wbio_skip(struct tls_conn *t, size_t n)
{
    while (n > 0) {
        int k = BIO_read(t->wbio, tls_rbuf, (int)(n < sizeof(tls_rbuf) ? n : sizeof(tls_rbuf)));
        if (k <= 0)
            break;
        n -= (size_t)k;
    }
}

/* Writes whatever ciphertext OpenSSL produced. With now set (or no callback), it first tries
 * the socket straight from the BIO's memory (no copy, no write request, no change of what the
 * loop watches: the usual case on a keep-alive connection) and returns 1 when that took it
 * all, ucb not called. Whatever is left is copied into a chunk and queued with uv_write; ucb
 * (with ureq) follows that write, and 0 is returned. Or a negative libuv error. */
static int flush(struct tls_conn *t, uv_write_t *ureq, uv_write_cb ucb, int now)
{
    char *p = NULL;
    long pending = BIO_get_mem_data(t->wbio, &p);
    size_t n = pending > 0 ? (size_t)pending : 0;
    if (n == 0 && ucb == NULL)
        return 1;
    if (n > 0 && (now || ucb == NULL)) {
        uv_buf_t b = uv_buf_init(p, (unsigned)n);
        int w = uv_try_write(t->s, &b, 1);
        if (w < 0 && w != UV_EAGAIN)
            return w;
        if (w > 0 && (size_t)w == n) {
            (void)BIO_reset(t->wbio);
            if (ucb == NULL || now)
                return 1;
            n = 0;
        } else if (w > 0) {
            wbio_skip(t, (size_t)w);
            n -= (size_t)w;
        }
    }
    struct tls_out *o = t->spare;
    if (o != NULL && o->cap >= n)
        t->spare = NULL;
    else {
        size_t cap = n > 16 * 1024 ? n : 16 * 1024;
        o = xmalloc(sizeof(*o) + cap);
        o->cap = cap;
    }
    o->t = t;
    o->ureq = ureq;
    o->ucb = ucb;
    o->req.data = o;
    int got = n > 0 ? BIO_read(t->wbio, o->data, (int)n) : 0;
    uv_buf_t b = uv_buf_init(o->data, (unsigned)(got > 0 ? got : 0));
    int rc = uv_write(&o->req, t->s, &b, 1, on_out_written);
    if (rc < 0)
        out_free(t, o);
    return rc < 0 ? rc : 0;
}

static const char plain_http_answer[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 52\r\n"
    "Connection: close\r\nServer: cutover\r\n\r\n"
    "This port speaks HTTPS: use https:// to talk to it.\n";

/* Tells a reading user, once, that the handshake failed (it closes). */
static void tell_failed(struct tls_conn *t)
{
    if (t->told || !t->reading || t->closing)
        return;
    t->told = 1;
    uv_buf_t b = uv_buf_init(NULL, 0);
    t->read(t->user, UV_EPROTO, &b);
}

/* The handshake failed: count it once and tell the user (who closes). */
static void fail(struct tls_conn *t, enum tls_fail why)
{
    if (t->failed)
        return;
    t->failed = 1;
    ERR_clear_error();
    atomic_fetch_add_explicit(&t->srv->failures[why], 1, memory_order_relaxed);
    tell_failed(t);
}

/* A TLS record starts with its content type: a handshake (22) first. An HTTP method's letters
 * instead mean a plain-HTTP client: it is told so in plain text, like nginx does. */
static int sniff_plain_http(struct tls_conn *t)
{
    char *p = NULL;
    long n = BIO_get_mem_data(t->rbio, &p);
    if (n <= 0 || p == NULL)
        return 0;
    t->sniffed = 1;
    if (!(p[0] >= 'A' && p[0] <= 'Z'))
        return 0;
    uv_buf_t b = uv_buf_init((char *)plain_http_answer, sizeof(plain_http_answer) - 1);
    (void)uv_try_write(t->s, &b, 1); /* best effort: the connection closes either way */
    return 1;
}

/* Runs the handshake, then hands plaintext to the user while it reads. */
static void deliver(struct tls_conn *t)
{
    if (t->failed)
        tell_failed(t); /* it failed while the user was not reading */
    while (!t->closing && !t->failed) {
        if (!t->established) {
            if (!t->sniffed && sniff_plain_http(t)) {
                fail(t, TLS_FAIL_PLAIN_HTTP);
                return;
            }
            ERR_clear_error();
            int r = SSL_do_handshake(t->ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
            if (flush(t, NULL, NULL, 1) < 0 && r == 1) {
                fail(t, TLS_FAIL_EOF);
                return;
            }
            if (r == 1) {
                t->established = 1;
                atomic_fetch_add_explicit(&t->srv->handshakes, 1, memory_order_relaxed);
                continue;
            }
            if (e == SSL_ERROR_WANT_READ && !t->eof)
                return;
            fail(t, t->sni_bad ? TLS_FAIL_SNI : t->eof ? TLS_FAIL_EOF : TLS_FAIL_PROTOCOL);
            return;
        }
        if (!t->reading)
            return;
        uv_buf_t b = uv_buf_init(NULL, 0);
        t->alloc(t->user, &b);
        if (b.len == 0) {
            t->read(t->user, UV_ENOBUFS, &b);
            return;
        }
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_read_ex(t->ssl, b.base, b.len, &n);
        if (BIO_ctrl_pending(t->wbio) > 0)
            (void)flush(t, NULL, NULL, 1); /* a key update's answer, an alert */
        if (r == 1) {
            t->read(t->user, (ssize_t)n, &b);
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL)
            t->fatal = 1; /* SSL_shutdown must not follow (its manual page) */
        if (e == SSL_ERROR_WANT_READ && !t->eof) {
            t->read(t->user, 0, &b);
            return;
        }
        t->read(t->user,
                e == SSL_ERROR_ZERO_RETURN || (t->eof && e == SSL_ERROR_WANT_READ)
                    ? (t->err ? t->err : UV_EOF)
                    : (t->err ? t->err : UV_EPROTO),
                &b);
        return;
    }
}

static void on_tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(tls_rbuf, sizeof(tls_rbuf));
}

static void tcp_read_stop(struct tls_conn *t)
{
    if (t->tcp_reading) {
        uv_read_stop(t->s);
        t->tcp_reading = 0;
    }
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tls_conn *t = s->data;
    if (t->closing || nread == 0)
        return;
    if (nread > 0) {
        if (BIO_write(t->rbio, buf->base, (int)nread) != (int)nread) {
            ERR_clear_error();
            nread = UV_ENOMEM;
        }
    }
    if (nread < 0) {
        t->eof = 1;
        t->err = nread == UV_EOF ? 0 : (int)nread;
        BIO_set_mem_eof_return(t->rbio, 0);
        tcp_read_stop(t);
    }
    deliver(t);
    /* Backpressure: a user that stopped reading stops the socket too, once past the handshake
     * (which must go on reading whatever the user does). */
    if (!t->closing && t->established && !t->reading)
        tcp_read_stop(t);
}

int tls_read_start(struct tls_conn *t, tls_alloc_cb alloc, tls_read_cb read)
{
    if (t->closing)
        return UV_EINVAL;
    t->alloc = alloc;
    t->read = read;
    t->reading = 1;
    if (!t->tcp_reading && !t->eof) {
        int rc = uv_read_start(t->s, on_tcp_alloc, on_tcp_read);
        if (rc < 0)
            return rc;
        t->tcp_reading = 1;
    }
    if (t->failed ||
        (t->established && (t->eof || SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0)))
        uv_idle_start(&t->idle, on_idle);
    return 0;
}

void tls_read_stop(struct tls_conn *t)
{
    t->reading = 0;
    uv_idle_stop(&t->idle);
    if (t->established)
        tcp_read_stop(t);
}

/* Small writes (a response head and a short body) go out as one TLS record: one seal, one
 * record header, as a proxy that builds the whole answer in one buffer would send. */
#define TLS_COALESCE_MAX (16 * 1024)
static _Thread_local char tls_wbuf[TLS_COALESCE_MAX];

static int encrypt(struct tls_conn *t, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (n > 1 && total <= TLS_COALESCE_MAX) {
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(tls_wbuf + off, bufs[i].base, bufs[i].len);
            off += bufs[i].len;
        }
        uv_buf_t one = uv_buf_init(tls_wbuf, (unsigned)total);
        return encrypt(t, &one, 1);
    }
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len == 0)
            continue;
        size_t done = 0;
        /* Memory BIOs never push back: one call takes the whole buffer. */
        if (SSL_write_ex(t->ssl, bufs[i].base, bufs[i].len, &done) != 1 || done != bufs[i].len) {
            ERR_clear_error();
            t->fatal = 1;
            return UV_EPROTO;
        }
    }
    return 0;
}

int tls_write(struct tls_conn *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    if (t->closing)
        return UV_EINVAL;
    if (!t->established || t->failed)
        return UV_ENOTCONN;
    int rc = encrypt(t, bufs, n);
    if (rc == 0)
        rc = flush(t, req, cb, 0);
    return rc < 0 ? rc : 0;
}

int tls_write_now(struct tls_conn *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                  uv_write_cb cb)
{
    if (t->closing)
        return UV_EINVAL;
    if (!t->established || t->failed)
        return UV_ENOTCONN;
    int rc = encrypt(t, bufs, n);
    return rc < 0 ? rc : flush(t, req, cb, 1);
}

void tls_handshake_timeout(struct tls_conn *t)
{
    if (!t->established && !t->failed) {
        t->reading = 0; /* the user closes: no read callback */
        fail(t, TLS_FAIL_TIMEOUT);
    }
}

static void on_closed(uv_handle_t *h)
{
    struct tls_conn *t = h->data;
    if (--t->open_handles > 0)
        return;
    t->s->data = t->user;
    uv_close_cb cb = t->close_cb;
    uv_handle_t *s = (uv_handle_t *)t->s;
    free(t->spare);
    SSL_free(t->ssl);
    free(t);
    if (cb != NULL)
        cb(s);
}

void tls_close(struct tls_conn *t, uv_close_cb cb)
{
    if (t->closing)
        return;
    if (t->established && !t->failed && !t->fatal && uv_stream_get_write_queue_size(t->s) == 0) {
        /* close_notify, best effort (one try, nothing queued): a client reading a body that
         * ends with the connection can tell the end from a cut (RFC 8446 6.1). */
        ERR_clear_error();
        if (SSL_shutdown(t->ssl) >= 0)
            (void)flush(t, NULL, NULL, 1) /* a remainder is dropped by the close */;
        ERR_clear_error();
    }
    t->closing = 1;
    t->reading = 0;
    t->close_cb = cb;
    t->open_handles = 2;
    uv_close((uv_handle_t *)&t->idle, on_closed);
    uv_close((uv_handle_t *)t->s, on_closed);
}
