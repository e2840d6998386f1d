/* libFuzzer target for what a TLS listener reads before the handshake is over (net/tls.c): the
 * client's first bytes go through the real per-connection path (the plain-HTTP sniff, OpenSSL's
 * hello parser over the memory BIOs, the SNI callback choosing among two certificates) on a
 * socketpair driven by a libuv loop; and the SNI rules themselves. The first input byte picks
 * the part. Invariants: no crash, leak or read past the input (ASan); a connection that got
 * garbage ends (the user is told an error or EOF) and never counts as established; an SNI is
 * refused (-1) exactly when tls_sni_valid says it is not a host name; a valid name under
 * "*.b.test" (one label) selects the second certificate, "a.test" the first. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "net/tls.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A self-signed EC certificate for name, written as PEM files under dir. */
static void make_cert(const char *dir, const char *tag, const char *name, char *cert, char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    CHECK(pk != NULL && x != NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    CHECK(X509_sign(x, pk, EVP_sha256()) > 0);
    snprintf(cert, 256, "%s/%s.pem", dir, tag);
    snprintf(key, 256, "%s/%s.key", dir, tag);
    FILE *f = fopen(cert, "w");
    CHECK(f != NULL && PEM_write_X509(f, x) == 1);
    fclose(f);
    f = fopen(key, "w");
    CHECK(f != NULL && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    chmod(key, 0600);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static struct tls_server *server(void)
{
    static struct tls_server *s;
    if (s != NULL)
        return s;
    char dir[] = "/tmp/fuzz_tls_XXXXXX", ca[256], ka[256], cb[256], kb[256], err[512];
    CHECK(mkdtemp(dir) != NULL);
    make_cert(dir, "a", "a.test", ca, ka);
    make_cert(dir, "b", "*.b.test", cb, kb);
    struct tls_pair pairs[2] = {{ca, ka}, {cb, kb}};
    if (tls_server_new(&s, pairs, 2, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_tls_hello: %s\n", err);
        abort();
    }
    unlink(ca), unlink(ka), unlink(cb), unlink(kb), rmdir(dir);
    return s;
}

struct run {
    char buf[4096];
    int ended; /* the user was told an error or EOF */
    int closed;
};

static void on_alloc(void *user, uv_buf_t *buf)
{
    struct run *r = user;
    *buf = uv_buf_init(r->buf, sizeof(r->buf));
}

static void on_read(void *user, ssize_t nread, const uv_buf_t *buf)
{
    struct run *r = user;
    (void)buf;
    if (nread < 0)
        r->ended = 1;
}

static void on_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    r->closed = 1;
}

static void hello(const uint8_t *data, size_t size)
{
    static uv_loop_t *loop;
    if (loop == NULL)
        loop = uv_default_loop();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uv_pipe_t p;
    struct run r = {.ended = 0};
    uv_pipe_init(loop, &p, 0);
    CHECK(uv_pipe_open(&p, sv[0]) == 0);
    struct tls_conn *t;
    CHECK(tls_conn_new(&t, server(), (uv_stream_t *)&p, &r) == 0);
    CHECK(tls_read_start(t, on_alloc, on_read) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 16 && !r.ended; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    /* The client's bytes, then EOF: garbage or an unfinished hello ends the connection. */
    CHECK(r.ended);
    tls_close(t, on_closed);
    while (!r.closed)
        uv_run(loop, UV_RUN_NOWAIT);
    close(sv[1]);
}

static void sni(const uint8_t *data, size_t size)
{
    const char *name = (const char *)data;
    int valid = tls_sni_valid(name, size);
    int i = tls_server_select(server(), name, size);
    CHECK(valid ? i >= 0 : i == -1);
    if (valid && size > 7 && memcmp(name + size - 7, ".b.test", 7) == 0 &&
        memchr(name, '.', size - 7) == NULL)
        CHECK(i == 1);
    if (size == 6 && memcmp(name, "a.test", 6) == 0)
        CHECK(i == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 16384)
        return 0;
    if (data[0] & 1)
        sni(data + 1, size - 1);
    else
        hello(data + 1, size - 1);
    return 0;
}
