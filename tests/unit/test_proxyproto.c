/* Unit tests of net/proxyproto: the PROXY v1/v2 header a load balancer sends before the client's
 * bytes. Every valid header is fed split at every byte (partial until complete, never a read past
 * the bytes given), and every malformed one must be refused with the error that names it, the
 * same error from every prefix that can already tell. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxyproto.h"

static const char SIG[12] = "\r\n\r\n\0\r\nQUIT\n";

/* Parses an exact-size heap copy, so that ASan sees any read past len. */
static int parse_copy(const char *buf, size_t len, struct proxyproto_hdr *out)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    int r = proxyproto_parse(copy, len, out);
    free(copy);
    return r;
}

/* A v2 header: signature, ver_cmd, fam, length, then body. Returns its size. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const void *body, size_t n)
{
    memcpy(out, SIG, 12);
    out[12] = (unsigned char)ver_cmd;
    out[13] = (unsigned char)fam;
    out[14] = (unsigned char)(n >> 8);
    out[15] = (unsigned char)n;
    memcpy(out + 16, body, n);
    return 16 + n;
}

/* The reference CRC32C (Castagnoli) the tests sign headers with. */
static uint32_t crc32c(const unsigned char *b, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= b[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

static void assert_in4(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
    char got[INET_ADDRSTRLEN];
    assert_int_equal(ss->ss_family, AF_INET);
    inet_ntop(AF_INET, &in4->sin_addr, got, sizeof(got));
    assert_string_equal(got, ip);
    assert_int_equal(ntohs(in4->sin_port), port);
}

static void assert_in6(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    char got[INET6_ADDRSTRLEN];
    assert_int_equal(ss->ss_family, AF_INET6);
    inet_ntop(AF_INET6, &in6->sin6_addr, got, sizeof(got));
    assert_string_equal(got, ip);
    assert_int_equal(ntohs(in6->sin6_port), port);
}

/* Feeds buf[0..n) (a whole header followed by tail bytes of the next protocol) at every split:
 * each shorter prefix is partial, each longer one gives the header's length. */
static void assert_valid(const char *buf, size_t hdr_len, size_t n, struct proxyproto_hdr *out)
{
    struct proxyproto_hdr h;
    for (size_t k = 0; k <= n; k++) {
        int r = parse_copy(buf, k, &h);
        if (k < hdr_len)
            assert_int_equal(r, 0);
        else
            assert_int_equal(r, (int)hdr_len);
    }
    assert_int_equal(parse_copy(buf, n, out), (int)hdr_len);
}

static void test_v1_tcp4(void **state)
{
    const char *s = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    struct proxyproto_hdr h;
    (void)state;
    assert_valid(s, 47, strlen(s), &h);
    assert_int_equal(h.version, 1);
    assert_false(h.local);
    assert_in4(&h.src, "192.168.0.1", 56324);
    assert_in4(&h.dst, "192.168.0.11", 443);
}

static void test_v1_tcp4_limits(void **state)
{
    const char *s = "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n";
    struct proxyproto_hdr h;
    (void)state;
    assert_valid(s, strlen(s), strlen(s), &h);
    assert_in4(&h.src, "255.255.255.255", 65535);
    assert_in4(&h.dst, "0.0.0.0", 0);
}

static void test_v1_tcp6(void **state)
{
    const char *s = "PROXY TCP6 2001:db8::1 ::1 40000 8080\r\nX";
    struct proxyproto_hdr h;
    (void)state;
    assert_valid(s, strlen(s) - 1, strlen(s), &h);
    assert_false(h.local);
    assert_in6(&h.src, "2001:db8::1", 40000);
    assert_in6(&h.dst, "::1", 8080);
}

static void test_v1_tcp6_longest(void **state)
{
    /* The spec's longest TCP6 line: 104 bytes. */
    const char *s = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    struct proxyproto_hdr h;
    (void)state;
    assert_int_equal(strlen(s), 104);
    assert_valid(s, 104, 104, &h);
    assert_in6(&h.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

static void test_v1_unknown(void **state)
{
    const char *s = "PROXY UNKNOWN\r\nGET";
    /* The spec's worst case: 107 bytes, the rest of an UNKNOWN line ignored. */
    const char *l = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    struct proxyproto_hdr h;
    (void)state;
    assert_valid(s, 15, strlen(s), &h);
    assert_int_equal(h.version, 1);
    assert_true(h.local);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
    assert_int_equal(strlen(l), 107);
    assert_valid(l, 107, 107, &h);
    assert_true(h.local);
    /* Whatever follows UNKNOWN is ignored, even in a shape TCP4 would refuse. */
    const char *odd = "PROXY UNKNOWN  1.2.3.4 anything 99999\r\n";
    assert_valid(odd, strlen(odd), strlen(odd), &h);
    assert_true(h.local);
}

static void test_v2_inet_with_tlvs(void **state)
{
    unsigned char body[64], buf[128];
    size_t n = 0;
    (void)state;
    /* 10.1.2.3:51000 -> 10.9.9.9:80, then NOOP, AUTHORITY "example.com", a custom type 0xE0 */
    const unsigned char addr[12] = {10, 1, 2, 3, 10, 9, 9, 9, 0xc7, 0x38, 0, 80};
    memcpy(body, addr, 12);
    n = 12;
    memcpy(body + n, "\x04\x00\x02\x00\x00", 5);
    n += 5;
    memcpy(body + n,
           "\x02\x00\x0b"
           "example.com",
           14);
    n += 14;
    memcpy(body + n, "\xe0\x00\x00", 3);
    n += 3;
    size_t len = v2(buf, 0x21, 0x11, body, n);
    memcpy(buf + len, "GET /", 5);

    struct proxyproto_hdr h;
    assert_valid((const char *)buf, len, len + 5, &h);
    assert_int_equal(h.version, 2);
    assert_false(h.local);
    assert_in4(&h.src, "10.1.2.3", 51000);
    assert_in4(&h.dst, "10.9.9.9", 80);
}

static void test_v2_inet6(void **state)
{
    unsigned char body[36], buf[64];
    (void)state;
    memset(body, 0, sizeof(body));
    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "fd00::1", body + 16);
    body[32] = 0x01, body[33] = 0xbb; /* 443 */
    body[34] = 0x1f, body[35] = 0x90; /* 8080 */
    size_t len = v2(buf, 0x21, 0x21, body, 36);

    struct proxyproto_hdr h;
    assert_valid((const char *)buf, len, len, &h);
    assert_false(h.local);
    assert_in6(&h.src, "2001:db8::7", 443);
    assert_in6(&h.dst, "fd00::1", 8080);
}

static void test_v2_local(void **state)
{
    unsigned char buf[64];
    struct proxyproto_hdr h;
    (void)state;
    /* A balancer's health check: LOCAL, UNSPEC, no address. */
    size_t len = v2(buf, 0x20, 0x00, "", 0);
    assert_valid((const char *)buf, len, len, &h);
    assert_true(h.local);
    assert_int_equal(h.version, 2);
    /* LOCAL with an INET address block and a TLV: the block is skipped, not used. */
    const unsigned char body[17] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x04, 0, 2, 0xaa, 0xbb};
    len = v2(buf, 0x20, 0x11, body, sizeof(body));
    assert_valid((const char *)buf, len, len, &h);
    assert_true(h.local);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
}

static void test_v2_unspec_and_unrelayed_fall_back_to_local(void **state)
{
    unsigned char buf[300], body[260];
    struct proxyproto_hdr h;
    size_t len;
    (void)state;
    /* PROXY over UNSPEC with a TLV. */
    len = v2(buf, 0x21, 0x00,
             "\x05\x00\x03"
             "abc",
             6);
    assert_valid((const char *)buf, len, len, &h);
    assert_true(h.local);
    /* UDP over IPv4: a valid header for a transport cutover does not relay. */
    const unsigned char udp[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    len = v2(buf, 0x21, 0x12, udp, 12);
    assert_valid((const char *)buf, len, len, &h);
    assert_true(h.local);
    /* UNIX stream: two 108-byte paths. */
    memset(body, 0, 216);
    len = v2(buf, 0x21, 0x31, body, 216);
    assert_valid((const char *)buf, len, len, &h);
    assert_true(h.local);
}

static void test_v2_crc32c(void **state)
{
    unsigned char body[19] = {192, 0, 2, 1, 198, 51, 100, 1, 0x30, 0x39, 0x01, 0xbb, 0x03, 0, 4};
    unsigned char buf[64];
    struct proxyproto_hdr h;
    (void)state;
    assert_int_equal(crc32c((const unsigned char *)"123456789", 9), 0xe3069283u); /* RFC 3720 */
    size_t len = v2(buf, 0x21, 0x11, body, sizeof(body));
    uint32_t c = crc32c(buf, len);
    buf[31] = (unsigned char)(c >> 24), buf[32] = (unsigned char)(c >> 16);
    buf[33] = (unsigned char)(c >> 8), buf[34] = (unsigned char)c;
    assert_valid((const char *)buf, len, len, &h);
    assert_in4(&h.src, "192.0.2.1", 12345);
    buf[34] ^= 1;
    assert_int_equal(parse_copy((const char *)buf, len, &h), PROXYPROTO_E_V2_CRC);
}

struct bad {
    const char *name;
    const char *buf;
    size_t len; /* 0: strlen(buf) */
    int err;
};

#define V2HDR(vc, fam, hi, lo) "\r\n\r\n\0\r\nQUIT\n" vc fam hi lo
#define A4 "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"

static const struct bad bad[] = {
    {"http request", "GET / HTTP/1.1\r\n\r\n", 0, PROXYPROTO_E_SIGNATURE},
    {"tls hello", "\x16\x03\x01\x02\x00", 5, PROXYPROTO_E_SIGNATURE},
    {"empty-looking v1", "PROXZ TCP4", 0, PROXYPROTO_E_SIGNATURE},
    {"v2 signature off by one", "\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c", 16, PROXYPROTO_E_SIGNATURE},
    {"v1 without CRLF in 107 bytes",
     "PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789012345"
     "6789012345678901234567890",
     0, PROXYPROTO_E_V1_TOO_LONG},
    {"v1 CRLF at bytes 107-108",
     "PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789012345"
     "6789012345678901\r\n",
     0, PROXYPROTO_E_V1_TOO_LONG},
    {"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 0, PROXYPROTO_E_V1_CRLF},
    {"v1 CR without LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 0, PROXYPROTO_E_V1_CRLF},
    {"v1 tab", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_V1_CHAR},
    {"v1 NUL", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33, PROXYPROTO_E_V1_CHAR},
    {"v1 UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_V1_PROTO},
    {"v1 lower-case tcp4", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_V1_PROTO},
    {"v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", 0, PROXYPROTO_E_V1_PROTO},
    {"v1 nothing", "PROXY\r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 no space after PROXY", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 0, PROXYPROTO_E_V1_FIELDS},
    {"v1 octet 256", "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 leading zero octet", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 empty octet", "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 TCP4 with IPv6", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 bad IPv6", "PROXY TCP6 2001:db8::g ::1 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 bad destination", "PROXY TCP4 1.2.3.4 host 1 2\r\n", 0, PROXYPROTO_E_ADDR},
    {"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 0, PROXYPROTO_E_PORT},
    {"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", 0, PROXYPROTO_E_PORT},
    {"v1 negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", 0, PROXYPROTO_E_PORT},
    {"v1 port 6 digits", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", 0, PROXYPROTO_E_PORT},
    {"v2 version 1", V2HDR("\x11", "\x11", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_VERSION},
    {"v2 version 3", V2HDR("\x31", "\x11", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_VERSION},
    {"v2 command 2", V2HDR("\x22", "\x11", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_COMMAND},
    {"v2 family 4", V2HDR("\x21", "\x41", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_FAMILY},
    {"v2 transport 3", V2HDR("\x21", "\x13", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_TRANSPORT},
    {"v2 longer than 4096", V2HDR("\x21", "\x11", "\x0f", "\xf1") A4, 28, PROXYPROTO_E_V2_TOO_LONG},
    {"v2 INET length 11", V2HDR("\x21", "\x11", "\x00", "\x0b") A4, 27, PROXYPROTO_E_V2_LENGTH},
    {"v2 INET6 length 12", V2HDR("\x21", "\x21", "\x00", "\x0c") A4, 28, PROXYPROTO_E_V2_LENGTH},
    {"v2 TLV past the end", V2HDR("\x21", "\x11", "\x00", "\x11") A4 "\x04\x00\x03\xaa\xbb", 33,
     PROXYPROTO_E_V2_TLV},
    {"v2 TLV header cut", V2HDR("\x21", "\x11", "\x00", "\x0e") A4 "\x04\x00", 30,
     PROXYPROTO_E_V2_TLV},
    {"v2 LOCAL TLV past the end", V2HDR("\x20", "\x00", "\x00", "\x04") "\x04\x00\x09\x00", 20,
     PROXYPROTO_E_V2_TLV},
    {"v2 CRC32C of 3 bytes", V2HDR("\x21", "\x11", "\x00", "\x12") A4 "\x03\x00\x03\x00\x00\x00",
     34, PROXYPROTO_E_V2_CRC},
};

static void test_malformed(void **state)
{
    struct proxyproto_hdr h;
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct bad *b = &bad[i];
        size_t len = b->len ? b->len : strlen(b->buf);
        int r = parse_copy(b->buf, len, &h);
        if (r != b->err)
            fail_msg("%s: expected %d (%s), got %d (%s)", b->name, b->err,
                     proxyproto_strerror(b->err), r, proxyproto_strerror(r));
        /* Each prefix is partial or already the same error, never a different verdict. */
        for (size_t k = 0; k < len; k++) {
            int rk = parse_copy(b->buf, k, &h);
            if (rk != 0 && rk != b->err)
                fail_msg("%s: prefix of %zu bytes gave %d", b->name, k, rk);
        }
    }
}

static void test_errors_fail_early(void **state)
{
    struct proxyproto_hdr h;
    (void)state;
    /* A client that speaks HTTP at once is refused on its first byte, not after a timeout. */
    assert_int_equal(parse_copy("G", 1, &h), PROXYPROTO_E_SIGNATURE);
    assert_int_equal(parse_copy("PRX", 3, &h), PROXYPROTO_E_SIGNATURE);
    assert_int_equal(parse_copy("\r\n\r\n\0\r\nX", 8, &h), PROXYPROTO_E_SIGNATURE);
    assert_int_equal(parse_copy("PROXY TCP4 1.2\n", 15, &h), PROXYPROTO_E_V1_CRLF);
    assert_int_equal(parse_copy("", 0, &h), 0);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = PROXYPROTO_E_V2_CRC; e <= PROXYPROTO_E_SIGNATURE; e++) {
        const char *s = proxyproto_strerror(e);
        assert_true(strncmp(s, "PROXY", 5) == 0 || strncmp(s, "not a PROXY", 11) == 0);
        for (int o = PROXYPROTO_E_V2_CRC; o < e; o++)
            assert_string_not_equal(s, proxyproto_strerror(o));
    }
    assert_string_equal(proxyproto_strerror(0), "unknown error");
    assert_string_equal(proxyproto_strerror(-99), "unknown error");
    assert_string_equal(proxyproto_strerror(PROXYPROTO_E_V1_TOO_LONG),
                        "PROXY v1 line longer than 107 bytes without CRLF");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp4_limits),
        cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_tcp6_longest),
        cmocka_unit_test(test_v1_unknown),
        cmocka_unit_test(test_v2_inet_with_tlvs),
        cmocka_unit_test(test_v2_inet6),
        cmocka_unit_test(test_v2_local),
        cmocka_unit_test(test_v2_unspec_and_unrelayed_fall_back_to_local),
        cmocka_unit_test(test_v2_crc32c),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_errors_fail_early),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
