/* TLS termination (OpenSSL 3): the server side of a listener's certificates (struct tls_server,
 * built once from the config and shared read-only by every thread) and one TLS connection over a
 * libuv stream (struct tls_conn, on the loop of its stream only).
 *
 * A tls_conn runs OpenSSL over memory BIOs: libuv still owns the socket, reads ciphertext into a
 * per-thread buffer and writes ciphertext with uv_write, and the user sees plaintext through
 * calls shaped like libuv's (read_start/read_stop/write/close), so the proxy's and the admin
 * API's state machines keep their one read path. See docs/internals/tls.md. */
#ifndef CUTOVER_NET_TLS_H
#define CUTOVER_NET_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* Why a handshake failed, for the counters (cutover_tls_handshake_failures_total{reason}). */
enum tls_fail {
    TLS_FAIL_SNI = 0,    /* the client hello named a server that is no valid host name */
    TLS_FAIL_PLAIN_HTTP, /* plain HTTP on a TLS port (answered 400, then closed) */
    TLS_FAIL_TIMEOUT,    /* the handshake did not finish within the header deadline */
    TLS_FAIL_PROTOCOL,   /* anything else OpenSSL refused: version, cipher, malformed hello */
    TLS_FAIL_EOF,        /* the client closed or reset the connection during the handshake */
};
#define TLS_FAILS 5

/* The metrics name of a reason: "sni", "plain_http", "timeout", "protocol", "eof". */
const char *tls_fail_name(enum tls_fail why);

/* One certificate: PEM files, the certificate possibly followed by its chain. */
struct tls_pair {
    const char *cert;
    const char *key;
};

/* Checks what a config names before anything is built: both files readable, the key readable by
 * its owner only (no group or other permission bits), the certificate not expired and matching
 * the key. Returns 0, or -EINVAL with a message naming the file in err. Any thread. */
int tls_check_pair(const char *cert, const char *key, char *err, size_t errlen);

struct tls_server;

/* Builds the server side of n (>= 1) certificates: pairs[0] is the default, the others are
 * chosen by the client's SNI against each certificate's DNS names (subjectAltName, else CN;
 * exact names first, then "*.example.com" wildcards). TLS 1.2 and 1.3, ALPN http/1.1. Returns 0
 * (*out to free with tls_server_free) or -EINVAL with a message in err. Control thread; the
 * result is then shared read-only by every loop. */
int tls_server_new(struct tls_server **out, const struct tls_pair *pairs, size_t n, char *err,
                   size_t errlen);

/* Frees s once no connection uses it any more. NULL is a no-op. */
void tls_server_free(struct tls_server *s);

/* The certificates of s (as given to tls_server_new): how many, and when the i-th expires
 * (its notAfter, Unix seconds). */
size_t tls_server_ncerts(const struct tls_server *s);
int64_t tls_server_not_after(const struct tls_server *s, size_t i);

/* Counters of s, any thread (relaxed): handshakes completed, and failures by reason. */
uint64_t tls_server_handshakes(const struct tls_server *s);
uint64_t tls_server_failures(const struct tls_server *s, enum tls_fail why);

/* Whether a client's SNI (len bytes, not NUL-terminated) is a host name a certificate could
 * carry: 1..253 bytes of letters, digits, '-', '_' and dots, no empty label, labels at most 63
 * bytes. Pure; for the fuzz target too. */
int tls_sni_valid(const char *name, size_t len);

/* Whether the certificate name pattern (a DNS name, or "*." and a name) matches the host name
 * (len bytes), case-insensitively; a wildcard stands for exactly one leading label. Pure. */
int tls_name_match(const char *pattern, const char *name, size_t len);

/* The index of the certificate of s that serves the SNI name (len bytes; NULL: none sent), or
 * -1 when the name is invalid (the handshake is then refused). 0 is the default. Pure. */
int tls_server_select(const struct tls_server *s, const char *name, size_t len);

/* What the user of a connection is given, as with libuv's alloc and read callbacks: alloc says
 * where the next plaintext goes; read gets nread > 0 bytes, 0 (nothing after all: the buffer
 * may go back), or a negative libuv error (UV_EOF, UV_EPROTO for a failed handshake). */
typedef void (*tls_alloc_cb)(void *user, uv_buf_t *buf);
typedef void (*tls_read_cb)(void *user, ssize_t nread, const uv_buf_t *buf);

struct tls_conn;

/* Starts TLS on s, a stream just accepted. From here on s->data is the tls_conn's until
 * tls_close; user is what the callbacks are given. Returns 0 or a negative errno. */
int tls_conn_new(struct tls_conn **out, struct tls_server *srv, uv_stream_t *s, void *user);

/* Starts or resumes delivering plaintext (the handshake runs on the first bytes). Plaintext
 * OpenSSL already holds is delivered on the next turn of the loop, never from inside this call.
 * Returns 0 or a negative libuv error. */
int tls_read_start(struct tls_conn *t, tls_alloc_cb alloc, tls_read_cb read);

/* Stops delivering plaintext; the socket is no longer read once the handshake is over, so a
 * stopped reader is backpressure as with uv_read_stop. May be called from the read callback. */
void tls_read_stop(struct tls_conn *t);

/* Encrypts the n buffers and writes them; cb (may be NULL, then req may be NULL too) runs with
 * req once the ciphertext is written, always from a later callback, as with uv_write (and with
 * UV_ECANCELED when the connection closes first). The buffers may be reused when this returns.
 * Returns 0 or a negative libuv error (UV_ENOTCONN before the handshake is over). */
int tls_write(struct tls_conn *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
              uv_write_cb cb);

/* tls_write, but the ciphertext goes to the socket at once when it takes it all: then 1 is
 * returned and cb is not called (as write_now_or_queue in proxy/h1proxy.c does for plain
 * connections). 0: queued, cb follows. Or a negative libuv error. */
int tls_write_now(struct tls_conn *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                  uv_write_cb cb);

/* 1 once the handshake is over. */
int tls_established(const struct tls_conn *t);

/* The user's handshake deadline passed: counted as TLS_FAIL_TIMEOUT (once) when the handshake
 * is not over. The user then closes the connection. */
void tls_handshake_timeout(struct tls_conn *t);

/* Closes the stream and frees t: cb runs with the stream (whose data is the user's again) after
 * every pending write callback ran, as uv_close's does. */
void tls_close(struct tls_conn *t, uv_close_cb cb);

#endif
