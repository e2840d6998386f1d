/* Unit tests of net/cidr: ranges, matching (IPv4-mapped addresses included), and the
 * X-Forwarded-For walk that finds the client behind trusted proxies. Table-driven: each row is
 * a case a reader can check by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/cidr.h"

/* "1.2.3.4" or "::1" (port 0), or "1.2.3.4:80" / "[::1]:80". */
static void sa(const char *s, struct sockaddr_storage *ss)
{
    char host[64];
    int port = 0;
    const char *colon = strrchr(s, ':');

    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        snprintf(host, sizeof(host), "%.*s", (int)(rb - s - 1), s + 1);
        port = (int)strtol(rb + 2, NULL, 10);
    } else if (colon != NULL && strchr(s, ':') == colon) {
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
        port = (int)strtol(colon + 1, NULL, 10);
    } else {
        snprintf(host, sizeof(host), "%s", s);
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, host, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
    }
}

/* "1.2.3.4:80", "[::1]:0" */
static const char *fmt(const struct sockaddr_storage *ss, char *buf, size_t n)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        snprintf(buf, n, "%s:%d", host, ntohs(in4->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, n, "[%s]:%d", host, ntohs(in6->sin6_port));
    }
    return buf;
}

static void test_parse(void **state)
{
    static const struct {
        const char *in;
        int rc, family, prefix;
        const char *addr; /* the network, as inet_ntop writes it */
    } rows[] = {
        {"10.0.0.0/8", 0, AF_INET, 8, "10.0.0.0"},
        {"10.1.2.3/8", 0, AF_INET, 8, "10.0.0.0"}, /* host bits cleared */
        {"192.168.1.7", 0, AF_INET, 32, "192.168.1.7"},
        {"0.0.0.0/0", 0, AF_INET, 0, "0.0.0.0"},
        {"172.16.255.255/12", 0, AF_INET, 12, "172.16.0.0"},
        {"::1/128", 0, AF_INET6, 128, "::1"},
        {"::1", 0, AF_INET6, 128, "::1"},
        {"2001:db8:ffff::/33", 0, AF_INET6, 33, "2001:db8:8000::"},
        {"::/0", 0, AF_INET6, 0, "::"},
        {"::ffff:10.0.0.0/104", 0, AF_INET, 8, "10.0.0.0"}, /* mapped range is IPv4 */
        {"::ffff:1.2.3.4", 0, AF_INET, 32, "1.2.3.4"},
        {"::ffff:0:0/95", 0, AF_INET6, 95, "::fffe:0:0"},
        {"", -EINVAL, 0, 0, NULL},
        {"/8", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/33", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/08", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/-1", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/8/8", -EINVAL, 0, 0, NULL},
        {"10.0.0.0/ 8", -EINVAL, 0, 0, NULL},
        {"10.0.0/8", -EINVAL, 0, 0, NULL},
        {"010.0.0.1", -EINVAL, 0, 0, NULL},
        {"::1/129", -EINVAL, 0, 0, NULL},
        {"fe80::1%eth0", -EINVAL, 0, 0, NULL},
        {"localhost", -EINVAL, 0, 0, NULL},
        {"10.0.0.0 /8", -EINVAL, 0, 0, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cidr c;
        char got[INET6_ADDRSTRLEN];
        int rc = cidr_parse(rows[i].in, &c);
        if (rc != rows[i].rc)
            fail_msg("'%s': expected %d, got %d", rows[i].in, rows[i].rc, rc);
        if (rc != 0)
            continue;
        assert_int_equal(c.family, rows[i].family);
        assert_int_equal(c.prefix, rows[i].prefix);
        inet_ntop(c.family, c.addr, got, sizeof(got));
        if (strcmp(got, rows[i].addr) != 0)
            fail_msg("'%s': expected network %s, got %s", rows[i].in, rows[i].addr, got);
    }
}

static void test_contains(void **state)
{
    static const struct {
        const char *cidr, *addr;
        bool in;
    } rows[] = {
        {"10.0.0.0/8", "10.255.1.2", true},
        {"10.0.0.0/8", "11.0.0.0", false},
        {"10.0.0.0/8", "::ffff:10.1.1.1", true}, /* dual-stack socket */
        {"10.0.0.0/8", "::ffff:11.1.1.1", false},
        {"10.0.0.0/8", "::a00:1", false}, /* IPv4-compatible is not mapped */
        {"::ffff:10.0.0.0/104", "10.3.3.3", true},
        {"192.168.1.7", "192.168.1.7:4000", true}, /* the port is ignored */
        {"192.168.1.7", "192.168.1.8", false},
        {"192.168.0.0/23", "192.168.1.255", true},
        {"192.168.0.0/23", "192.168.2.0", false},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"0.0.0.0/0", "2001:db8::1", false},
        {"::/0", "2001:db8::1", true},
        {"::/0", "1.2.3.4", false},
        {"::/0", "::ffff:1.2.3.4", false}, /* mapped is IPv4 */
        {"2001:db8::/32", "2001:db8:1::5", true},
        {"2001:db8::/32", "2001:db9::5", false},
        {"2001:db8::/31", "2001:db9::5", true},
        {"::1", "::1", true},
        {"::1", "::2", false},
        {"fd00::/7", "fdff::1", true},
        {"fd00::/7", "fe00::1", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cidr c;
        struct sockaddr_storage ss;
        assert_int_equal(cidr_parse(rows[i].cidr, &c), 0);
        sa(rows[i].addr, &ss);
        if (cidr_contains(&c, (struct sockaddr *)&ss) != rows[i].in)
            fail_msg("%s contains %s: expected %s", rows[i].cidr, rows[i].addr,
                     rows[i].in ? "yes" : "no");
    }
}

static void test_list(void **state)
{
    struct cidr_list l;
    struct sockaddr_storage ss;
    (void)state;
    cidr_list_init(&l);
    sa("10.0.0.1", &ss);
    assert_false(cidr_list_contains(&l, (struct sockaddr *)&ss)); /* empty holds nothing */
    assert_int_equal(cidr_list_add(&l, "10.0.0.0/8"), 0);
    assert_int_equal(cidr_list_add(&l, "::1"), 0);
    assert_int_equal(cidr_list_add(&l, "10.0.0.0/40"), -EINVAL);
    assert_int_equal(l.n, 2); /* a bad range changes nothing */
    assert_true(cidr_list_contains(&l, (struct sockaddr *)&ss));
    sa("::1", &ss);
    assert_true(cidr_list_contains(&l, (struct sockaddr *)&ss));
    sa("::2", &ss);
    assert_false(cidr_list_contains(&l, (struct sockaddr *)&ss));
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_false(cidr_list_contains(&l, &un));
    cidr_list_done(&l);
    assert_int_equal(l.n, 0);
    cidr_list_done(&l);
}

/* Trusted: the balancers 10.0.0.0/8 and the local ::1. */
static const char *const trusted_text[] = {"10.0.0.0/8", "::1", "192.168.7.7"};

static void test_client_addr(void **state)
{
    static const struct {
        const char *name, *peer;
        const char *xff[3]; /* fields, NULL-terminated */
        const char *want;
        enum cidr_client_from from;
    } rows[] = {
        {"untrusted peer: XFF ignored",
         "203.0.113.5:4000",
         {"1.1.1.1"},
         "203.0.113.5:4000",
         CIDR_FROM_PEER},
        {"trusted peer, no XFF", "10.0.0.1:4000", {NULL}, "10.0.0.1:4000", CIDR_FROM_PEER},
        {"trusted peer, one client",
         "10.0.0.1:4000",
         {"198.51.100.7"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"right-most untrusted wins over a spoofed left",
         "10.0.0.1:4000",
         {"6.6.6.6, 198.51.100.7"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"trusted hops skipped",
         "10.0.0.1:4000",
         {"198.51.100.7, 10.2.2.2, 192.168.7.7"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"all trusted: the left-most",
         "10.0.0.1:4000",
         {"10.9.9.9, 10.2.2.2"},
         "10.9.9.9:0",
         CIDR_FROM_XFF},
        {"several fields read as one list",
         "10.0.0.1:4000",
         {"6.6.6.6, 198.51.100.7", "10.3.3.3", "10.4.4.4"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"client in the first of several fields",
         "10.0.0.1:4000",
         {"198.51.100.7", "10.3.3.3, 10.5.5.5"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"no spaces, tabs",
         "10.0.0.1:4000",
         {"1.1.1.1,\t2.2.2.2\t,10.1.1.1"},
         "2.2.2.2:0",
         CIDR_FROM_XFF},
        {"empty elements skipped",
         "10.0.0.1:4000",
         {", ,2.2.2.2,,", ""},
         "2.2.2.2:0",
         CIDR_FROM_XFF},
        {"only empty elements", "10.0.0.1:4000", {" , ", ""}, "10.0.0.1:4000", CIDR_FROM_PEER},
        {"IPv6 client", "[::1]:5000", {"2001:db8::7"}, "[2001:db8::7]:0", CIDR_FROM_XFF},
        {"bracketed IPv6 with port",
         "[::1]:5000",
         {"[2001:db8::7]:443"},
         "[2001:db8::7]:0",
         CIDR_FROM_XFF},
        {"bracketed IPv6", "[::1]:5000", {"[2001:db8::7]"}, "[2001:db8::7]:0", CIDR_FROM_XFF},
        {"IPv4 with port", "10.0.0.1:4000", {"198.51.100.7:1234"}, "198.51.100.7:0", CIDR_FROM_XFF},
        {"mapped peer is trusted as IPv4",
         "[::ffff:10.0.0.1]:4000",
         {"198.51.100.7"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"mapped trusted entry skipped",
         "10.0.0.1:4000",
         {"198.51.100.7, ::ffff:10.1.1.1"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"malformed right-most: the peer",
         "10.0.0.1:4000",
         {"198.51.100.7, unknown"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"malformed behind a trusted hop: that hop",
         "10.0.0.1:4000",
         {"198.51.100.7, garbage, 10.2.2.2"},
         "10.2.2.2:0",
         CIDR_FROM_XFF_MALFORMED},
        {"malformed left of the client: not reached",
         "10.0.0.1:4000",
         {"garbage, 198.51.100.7"},
         "198.51.100.7:0",
         CIDR_FROM_XFF},
        {"zone id is malformed",
         "10.0.0.1:4000",
         {"fe80::1%eth0"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"port out of range",
         "10.0.0.1:4000",
         {"1.2.3.4:65536"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"bracketed IPv4",
         "10.0.0.1:4000",
         {"[1.2.3.4]"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"unclosed bracket",
         "10.0.0.1:4000",
         {"[2001:db8::1"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"junk after bracket",
         "10.0.0.1:4000",
         {"[2001:db8::1]x"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"space inside an entry",
         "10.0.0.1:4000",
         {"1.2.3.4 5.6.7.8"},
         "10.0.0.1:4000",
         CIDR_FROM_XFF_MALFORMED},
        {"octal-looking", "10.0.0.1:4000", {"010.1.1.1"}, "10.0.0.1:4000", CIDR_FROM_XFF_MALFORMED},
    };
    struct cidr_list trusted;
    (void)state;
    cidr_list_init(&trusted);
    for (size_t i = 0; i < sizeof(trusted_text) / sizeof(trusted_text[0]); i++)
        assert_int_equal(cidr_list_add(&trusted, trusted_text[i]), 0);

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct sockaddr_storage peer, out;
        struct cidr_span spans[3];
        size_t n = 0;
        char got[80];

        sa(rows[i].peer, &peer);
        while (n < 3 && rows[i].xff[n] != NULL) {
            spans[n].p = rows[i].xff[n];
            spans[n].len = strlen(rows[i].xff[n]);
            n++;
        }
        struct cidr_xff_pos pos;
        enum cidr_client_from from =
            cidr_client_addr((struct sockaddr *)&peer, &trusted, spans, n, &out, &pos);
        fmt(&out, got, sizeof(got));
        if (strcmp(got, rows[i].want) != 0 || from != rows[i].from)
            fail_msg("%s: expected %s (from %d), got %s (from %d)", rows[i].name, rows[i].want,
                     rows[i].from, got, from);
        /* The position names the entry returned, or nothing when it is the peer. */
        if (memcmp(&out, &peer, sizeof(out)) == 0) {
            assert_int_equal(pos.field, n);
            assert_int_equal(pos.offset, 0);
        } else {
            struct sockaddr_storage again;
            assert_true(pos.field < n && pos.offset < spans[pos.field].len);
            struct cidr_span rest = {spans[pos.field].p + pos.offset,
                                     spans[pos.field].len - pos.offset};
            size_t k = 0;
            while (k < rest.len && rest.p[k] != ',')
                k++;
            rest.len = k;
            /* Read alone from a trusted peer, that entry is the same address. */
            struct sockaddr_storage lb;
            sa("10.0.0.1", &lb);
            cidr_client_addr((struct sockaddr *)&lb, &trusted, &rest, 1, &again, NULL);
            assert_memory_equal(&again, &out, sizeof(out));
        }
    }
    cidr_list_done(&trusted);
}

static void test_client_addr_reads_only_the_span(void **state)
{
    /* The spans point into a request buffer: bytes past len belong to the next header. */
    const char buf[] = "198.51.100.7, 10.1.1.1X-Other: 6.6.6.6";
    struct cidr_list trusted;
    struct sockaddr_storage peer, out;
    struct cidr_span span = {buf, 22};
    char got[80];
    (void)state;
    cidr_list_init(&trusted);
    assert_int_equal(cidr_list_add(&trusted, "10.0.0.0/8"), 0);
    sa("10.0.0.1:1", &peer);
    assert_int_equal(cidr_client_addr((struct sockaddr *)&peer, &trusted, &span, 1, &out, NULL),
                     CIDR_FROM_XFF);
    assert_string_equal(fmt(&out, got, sizeof(got)), "198.51.100.7:0");
    cidr_list_done(&trusted);
}

static void test_trusted_suffix_to_forward(void **state)
{
    /* The spoofed "6.6.6.6" stays behind; the client and the trusted hops go upstream. */
    const char *f0 = "6.6.6.6,  198.51.100.7", *f1 = "10.3.3.3";
    struct cidr_span spans[2] = {{f0, strlen(f0)}, {f1, strlen(f1)}};
    struct cidr_list trusted;
    struct sockaddr_storage peer, out;
    struct cidr_xff_pos pos;
    (void)state;
    cidr_list_init(&trusted);
    assert_int_equal(cidr_list_add(&trusted, "10.0.0.0/8"), 0);
    sa("10.0.0.1:1", &peer);
    assert_int_equal(cidr_client_addr((struct sockaddr *)&peer, &trusted, spans, 2, &out, &pos),
                     CIDR_FROM_XFF);
    assert_int_equal(pos.field, 0);
    assert_string_equal(f0 + pos.offset, "198.51.100.7");
    cidr_list_done(&trusted);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_contains),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_client_addr),
        cmocka_unit_test(test_client_addr_reads_only_the_span),
        cmocka_unit_test(test_trusted_suffix_to_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
