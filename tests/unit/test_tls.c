/* Unit tests of net/tls: the SNI rules (valid names, wildcard matching, selection among
 * certificates) and the checks a config's certificate and key go through. Certificates are made
 * here with OpenSSL (EC P-256, self-signed) in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "net/tls.h"

static char dir[64];

/* Writes dir/tag.pem and dir/tag.key: a certificate for name valid from now + from_days to
 * now + to_days, signed by its own key, or by other's key when other is given (a mismatch). */
static void make_cert(const char *tag, const char *name, long from_days, long to_days)
{
    char path[128];
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(pk);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400L);
    X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400L);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    snprintf(path, sizeof(path), "%s/%s.pem", dir, tag);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(path, sizeof(path), "%s/%s.key", dir, tag);
    f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, 0600);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static const char *p(const char *tag, const char *ext)
{
    static char bufs[4][128];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, 128, "%s/%s.%s", dir, tag, ext);
    return b;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_tls_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    make_cert("a", "a.test", -1, 30);
    make_cert("b", "*.b.test", -1, 30);
    make_cert("old", "a.test", -30, -1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_sni_valid(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int valid;
    } rows[] = {
        {"a.test", 1},    {"A-1_b.Example.COM", 1},
        {"localhost", 1}, {"", 0},
        {"a..b", 0},      {".a", 0},
        {"a.", 0},        {"bad!name", 0},
        {"a b", 0},       {"*.b.test", 0},
        {"é.test", 0},    {"a\tb", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(tls_sni_valid(rows[i].name, strlen(rows[i].name)), rows[i].valid);
    char label[70];
    memset(label, 'x', 63);
    label[63] = '\0';
    assert_int_equal(tls_sni_valid(label, 63), 1);
    memset(label, 'x', 64);
    assert_int_equal(tls_sni_valid(label, 64), 0);
    char longname[300];
    for (int i = 0; i < 127; i++)
        memcpy(longname + 2 * i, "a.", 2);
    assert_int_equal(tls_sni_valid(longname, 253), 1); /* "a.a. ... a" */
    assert_int_equal(tls_sni_valid(longname, 254), 0);
}

static void test_name_match(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *name;
        int match;
    } rows[] = {
        {"a.test", "a.test", 1},    {"a.test", "A.TEST", 1},       {"a.test", "b.test", 0},
        {"a.test", "a.test.x", 0},  {"*.b.test", "x.b.test", 1},   {"*.b.test", "X.B.Test", 1},
        {"*.b.test", "b.test", 0},  {"*.b.test", "x.y.b.test", 0}, {"*.b.test", ".b.test", 0},
        {"*.b.test", "xb.test", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(tls_name_match(rows[i].pattern, rows[i].name, strlen(rows[i].name)),
                         rows[i].match);
}

static void test_select(void **state)
{
    (void)state;
    char err[512];
    struct tls_server *s = NULL;
    struct tls_pair pairs[2] = {{p("a", "pem"), p("a", "key")}, {p("b", "pem"), p("b", "key")}};
    assert_int_equal(tls_server_new(&s, pairs, 2, err, sizeof(err)), 0);
    assert_int_equal(tls_server_select(s, NULL, 0), 0);
    assert_int_equal(tls_server_select(s, "a.test", 6), 0);
    assert_int_equal(tls_server_select(s, "www.b.test", 10), 1);
    assert_int_equal(tls_server_select(s, "b.test", 6), 0);
    assert_int_equal(tls_server_select(s, "other.example", 13), 0);
    assert_int_equal(tls_server_select(s, "bad!name", 8), -1);
    assert_int_equal(tls_server_handshakes(s), 0);
    assert_string_equal(tls_fail_name(TLS_FAIL_PLAIN_HTTP), "plain_http");
    tls_server_free(s);
    tls_server_free(NULL);
}

static void test_check_pair(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(tls_check_pair(p("a", "pem"), p("a", "key"), err, sizeof(err)), 0);

    assert_int_equal(tls_check_pair(p("a", "pem"), p("b", "key"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "does not match"));
    assert_non_null(strstr(err, p("a", "pem")));

    assert_int_equal(tls_check_pair(p("old", "pem"), p("old", "key"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "expired"));

    assert_int_equal(tls_check_pair(p("none", "pem"), p("a", "key"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "cannot read"));

    chmod(p("a", "key"), 0640);
    assert_int_equal(tls_check_pair(p("a", "pem"), p("a", "key"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "0640"));
    chmod(p("a", "key"), 0600);

    /* A key file that holds a certificate, not a key. */
    chmod(p("a", "pem"), 0600);
    assert_int_equal(tls_check_pair(p("a", "pem"), p("a", "pem"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "private key"));
    chmod(p("a", "pem"), 0644);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_valid),
        cmocka_unit_test(test_name_match),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_check_pair),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
