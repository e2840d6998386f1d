/* Unit tests of core/duration: the parse table (valid, invalid, out of range) and the format
 * table, plus a round trip of format through parse. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/duration.h"

#define S 1000ULL
#define M (60ULL * S)
#define H (60ULL * M)
#define D (24ULL * H)

struct ok_case {
    const char *text;
    uint64_t ms;
};

static void test_parse_valid(void **state)
{
    static const struct ok_case cases[] = {
        {"0s", 0},         {"0ms", 0},
        {"200ms", 200},    {"1s", S},
        {"5m", 5 * M},     {"1h", H},
        {"7d", 7 * D},     {"1m30s", 90 * S},
        {"1h30m", 90 * M}, {"1d2h3m4s5ms", D + 2 * H + 3 * M + 4 * S + 5},
        {"1.5s", 1500},    {"0.001s", 1},
        {"1.5m", 90 * S},  {"1.25h", 75 * M},
        {"0.5d", 12 * H},  {"1m0.5s", M + 500},
        {"1.0ms", 1},      {"1.500s", 1500},
        {"007s", 7 * S},   {"36500d", 36500 * D},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        int rc = duration_parse(cases[i].text, &ms);
        if (rc != 0 || ms != cases[i].ms)
            fail_msg("'%s': rc=%d ms=%llu, want %llu", cases[i].text, rc, (unsigned long long)ms,
                     (unsigned long long)cases[i].ms);
    }
}

static void test_parse_invalid(void **state)
{
    static const char *const cases[] = {
        "",      "5",    "-1s",   "+1s",  "1.5ms", "1s1m",    "1s1s", "10parsecs",
        "1 s",   " 1s",  "1s ",   "1S",   "s",     "1.s",     ".5s",  "1.5s1ms",
        "1..5s", "1sec", "1hour", "1m1h", "1x",    "1e3ms",   "ms",   "1.0001s",
        "1,5s",  "0x1s", "1s\n",  "1us",  "1ns",   "1.0005s", "1w",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 777;
        int rc = duration_parse(cases[i], &ms);
        if (rc != -EINVAL)
            fail_msg("'%s': rc=%d, want -EINVAL", cases[i], rc);
        assert_int_equal(ms, 777);
    }
}

static void test_parse_overflow(void **state)
{
    static const char *const cases[] = {
        "36501d",    "876001h",  "99999999999999999999999999ms", "18446744073709551616ms",
        "36500d1ms", "36500.5d", "100000000000000000000000d",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 0;
        int rc = duration_parse(cases[i], &ms);
        if (rc != -ERANGE)
            fail_msg("'%s': rc=%d, want -ERANGE", cases[i], rc);
    }
}

static void test_parse_null(void **state)
{
    uint64_t ms;
    (void)state;
    assert_int_equal(duration_parse(NULL, &ms), -EINVAL);
}

static void test_format_table(void **state)
{
    static const struct ok_case cases[] = {
        {"0s", 0},         {"1ms", 1},
        {"250ms", 250},    {"1s", S},
        {"1.5s", 1500},    {"1.001s", 1001},
        {"1.01s", 1010},   {"1m30s", 90 * S},
        {"1m", M},         {"1m500ms", M + 500},
        {"1h30m", 90 * M}, {"7d", 7 * D},
        {"1d1ms", D + 1},  {"1d2h3m4.005s", D + 2 * H + 3 * M + 4 * S + 5},
    };
    char buf[64];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        duration_format(cases[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].text);
    }
}

static void test_format_truncates(void **state)
{
    char buf[4];
    (void)state;
    assert_ptr_equal(duration_format(D + 2 * H + 3 * M + 4 * S + 5, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "1d2");
    char one[1] = {'x'};
    duration_format(1500, one, sizeof(one));
    assert_int_equal(one[0], '\0');
    duration_format(1500, NULL, 0);
}

static void test_format_round_trip(void **state)
{
    static const uint64_t values[] = {
        0, 1, 999, 1000, 1001, 59999, 60000, 61001, 3599999, H, D - 1, D, 36500 * D, 123456789,
    };
    char buf[64];
    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t back = 0;
        duration_format(values[i], buf, sizeof(buf));
        if (duration_parse(buf, &back) != 0 || back != values[i])
            fail_msg("%llu -> '%s' -> %llu", (unsigned long long)values[i], buf,
                     (unsigned long long)back);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),       cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_parse_overflow),    cmocka_unit_test(test_parse_null),
        cmocka_unit_test(test_format_table),      cmocka_unit_test(test_format_truncates),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
