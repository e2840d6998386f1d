/* Unit tests of proxy/mirrordiff: route templates, body comparison (bytes, JSON with ignored
 * pointers), JSON pointer removal and masked request heads, table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proxy/mirrordiff.h"

static void test_route_table(void **state)
{
    static const struct {
        const char *method, *target, *want;
    } rows[] = {
        {"GET", "/users/42", "GET /users/:id"},
        {"GET", "/users/42/orders/7?x=1", "GET /users/:id/orders/:id"},
        {"POST", "/v1/items/123e4567-e89b-12d3-a456-426614174000", "POST /v1/items/:id"},
        {"GET", "/blob/0123456789abcdef0123", "GET /blob/:id"},
        {"GET", "/api/x?id=7", "GET /api/x"},
        {"GET", "/api/v2/cafe", "GET /api/v2/cafe"}, /* short hex words stay */
        {"GET", "/", "GET /"},
        {"HEAD", "/a//b/", "HEAD /a//b/"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char out[128];
        mirrordiff_route(out, sizeof(out), rows[i].method, strlen(rows[i].method), rows[i].target,
                         strlen(rows[i].target));
        assert_string_equal(out, rows[i].want);
    }
    char tiny[8];
    mirrordiff_route(tiny, sizeof(tiny), "GET", 3, "/abcdefgh", 9);
    assert_string_equal(tiny, "GET /ab");
}

static void test_body_table(void **state)
{
    static char *const ignore[] = {"/meta", "/items/0/t", "/a~1b"};
    static const struct {
        const char *a, *b;
        int json, want;
    } rows[] = {
        {"abc", "abc", 0, 1},
        {"abc", "abd", 0, 0},
        {"abc", "ab", 0, 0},
        {"{\"x\":1,\"y\":2}", "{\"y\": 2, \"x\": 1}", 1, 1}, /* key order and spaces */
        {"{\"x\":1,\"y\":2}", "{\"y\": 2, \"x\": 1}", 0, 0}, /* not JSON: bytes */
        {"{\"x\":1,\"meta\":{\"t\":1}}", "{\"x\":1,\"meta\":{\"t\":2}}", 1, 1},
        {"{\"x\":1,\"meta\":{\"t\":1}}", "{\"x\":2,\"meta\":{\"t\":2}}", 1, 0},
        {"{\"items\":[{\"t\":1,\"v\":1}]}", "{\"items\":[{\"t\":9,\"v\":1}]}", 1, 1},
        {"{\"items\":[{\"t\":1,\"v\":1}]}", "{\"items\":[{\"t\":9,\"v\":2}]}", 1, 0},
        {"{\"a/b\":1,\"c\":1}", "{\"a/b\":2,\"c\":1}", 1, 1},
        {"{\"x\":1}", "not json", 1, 0}, /* falls back to bytes */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char diff[200] = "";
        int eq = mirrordiff_body(rows[i].a, strlen(rows[i].a), rows[i].b, strlen(rows[i].b),
                                 rows[i].json, ignore, 3, diff, sizeof(diff));
        assert_int_equal(eq, rows[i].want);
        if (!eq)
            assert_non_null(strstr(diff, "differ at byte"));
    }
}

static void test_json_remove(void **state)
{
    (void)state;
    json_t *j = json_loads("{\"a\":{\"b\":[1,{\"c\":2}]},\"~k\":1}", 0, NULL);
    assert_int_equal(mirrordiff_json_remove(j, "/a/b/1/c"), 1);
    assert_int_equal(mirrordiff_json_remove(j, "/a/b/01"), 0); /* no leading zeros */
    assert_int_equal(mirrordiff_json_remove(j, "/a/x/y"), 0);
    assert_int_equal(mirrordiff_json_remove(j, "/~0k"), 1);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"a\":{\"b\":[1,{}]}}");
    free(s);
    json_decref(j);
}

static void test_mask_head(void **state)
{
    (void)state;
    const char head[] = "GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tok\r\n"
                        "cookie: sid=1\r\nX-A: 1\r\n\r\nbody";
    char out[256];
    mirrordiff_mask_head(out, sizeof(out), head, sizeof(head) - 1);
    assert_string_equal(out, "GET /x HTTP/1.1\nHost: a\nAuthorization: ***\ncookie: ***\nX-A: 1\n");
    char small[10];
    mirrordiff_mask_head(small, sizeof(small), head, sizeof(head) - 1);
    assert_int_equal(strlen(small), 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_body_table),
        cmocka_unit_test(test_json_remove),
        cmocka_unit_test(test_mask_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
