/* Unit tests of http/vhost: which service of a shared listener takes a request, by its Host and
 * target, and which host patterns and prefixes a config may name. Table-driven: each row is a
 * request and the service it must reach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/vhost.h"

enum { WEB, API, DEEP, STATIC, WEB_V2, SITE };

static void table(struct vhost_table *t, int with_default)
{
    vhost_table_init(t);
    vhost_table_add(t, "Web.Example.com", NULL, WEB);
    vhost_table_add(t, "*.example.com", "/api", API);
    vhost_table_add(t, "*.b.example.com", NULL, DEEP);
    vhost_table_add(t, NULL, "/static/", STATIC);
    vhost_table_add(t, "web.example.com", "/api/v2", WEB_V2);
    if (with_default)
        t->default_id = SITE;
}

static int m(const struct vhost_table *t, const char *host, const char *target)
{
    return vhost_match(t, host, host ? strlen(host) : 0, target, strlen(target));
}

static void test_most_specific_host_then_longest_prefix(void **state)
{
    (void)state;
    struct vhost_table t;
    table(&t, 1);
    static const struct {
        const char *host, *target;
        int want;
    } rows[] = {
        {"web.example.com", "/", WEB},
        {"WEB.EXAMPLE.COM", "/x", WEB},
        {"web.example.com:8443", "/", WEB},
        {"web.example.com.", "/", WEB},
        {" web.example.com ", "/", WEB},
        {"web.example.com", "/api", WEB},         /* exact host beats *.example.com/api */
        {"web.example.com", "/api/v2/x", WEB_V2}, /* same host: the longer prefix */
        {"web.example.com", "/api/v2x", WEB},     /* a prefix ends at a segment boundary */
        {"web.example.com", "/api/v2?q=1", WEB_V2},
        {"shop.example.com", "/api", API},
        {"shop.example.com", "/api/", API},
        {"shop.example.com", "/apix", SITE},
        {"example.com", "/api", SITE},     /* *.x needs a label before .x */
        {"x.b.example.com", "/api", DEEP}, /* the longer suffix wins over the prefix */
        {"b.example.com", "/api", API},
        {"other.org", "/static/a.css", STATIC}, /* any host, by prefix */
        {"other.org", "/static", STATIC},
        {"other.org", "/", SITE},
        {NULL, "/", SITE}, /* no Host (HTTP/1.0) */
        {NULL, "/static/x", STATIC},
        {"other.org", "http://shop.example.com/api/x", API}, /* absolute form: its authority */
        {"other.org", "HTTPS://web.example.com", WEB},
        {"[::1]:8080", "/", SITE},
        {"", "/", SITE},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int got = m(&t, rows[i].host, rows[i].target);
        if (got != rows[i].want)
            fail_msg("row %zu: %s %s -> %d, want %d", i, rows[i].host ? rows[i].host : "(none)",
                     rows[i].target, got, rows[i].want);
    }
    vhost_table_done(&t);
    table(&t, 0);
    assert_int_equal(m(&t, "other.org", "/"), -1); /* no default: 404 */
    vhost_table_done(&t);
}

static void test_patterns_and_prefixes_a_config_may_name(void **state)
{
    (void)state;
    static const char *const good[] = {"example.com", "*.example.com", "a-b.c",
                                       "localhost",   "10.0.0.1",      "X.Y"};
    static const char *const bad[] = {
        "",         "*",         "*.",     "a..b",         "-a.com", "a-.com",   "a.com.",
        "a.com:80", "*.*.a.com", "a*.com", "http://a.com", "a b",    "xn--ü.com"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(vhost_pattern_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (vhost_pattern_valid(bad[i], strlen(bad[i])))
            fail_msg("'%s' accepted", bad[i]);
    char label[80];
    memset(label, 'a', 64);
    label[64] = '\0';
    assert_false(vhost_pattern_valid(label, 64)); /* a label is at most 63 */
    assert_true(vhost_pattern_valid(label, 63));
    assert_true(vhost_prefix_valid("/"));
    assert_true(vhost_prefix_valid("/api/v1/"));
    assert_false(vhost_prefix_valid("api"));
    assert_false(vhost_prefix_valid("/a b"));
    assert_false(vhost_prefix_valid("/a?b"));
    assert_false(vhost_prefix_valid("/a//b"));
    assert_false(vhost_prefix_valid("/%41"));
}

static void test_overlap_is_the_same_host_and_prefix(void **state)
{
    (void)state;
    assert_true(vhost_routes_overlap("a.com", NULL, "A.COM", NULL));
    assert_true(vhost_routes_overlap("a.com", "/api/", "a.com", "/api"));
    assert_true(vhost_routes_overlap(NULL, "/", NULL, NULL));
    assert_false(vhost_routes_overlap("a.com", "/api", "a.com", "/api/v2"));
    assert_false(vhost_routes_overlap("*.a.com", NULL, "b.a.com", NULL));
    assert_false(vhost_routes_overlap(NULL, "/x", "a.com", "/x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_most_specific_host_then_longest_prefix),
        cmocka_unit_test(test_patterns_and_prefixes_a_config_may_name),
        cmocka_unit_test(test_overlap_is_the_same_host_and_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
