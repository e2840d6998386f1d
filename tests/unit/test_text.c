/* Unit tests of core/text: the UTF-8 decoder (valid, overlong, surrogate, cut), what counts as
 * text in a config file, names, and the terminal and Markdown escapers against a table of
 * hostile strings (forged rows, escape sequences, HTML, bidi overrides). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/text.h"

static void test_utf8_next(void **state)
{
    uint32_t cp = 0;
    (void)state;
    assert_int_equal(text_utf8_next("a", 1, &cp), 1);
    assert_int_equal(cp, 'a');
    assert_int_equal(text_utf8_next("\xc3\xa9", 2, &cp), 2);
    assert_int_equal(cp, 0xe9);
    assert_int_equal(text_utf8_next("\xe2\x80\xae", 3, &cp), 3);
    assert_int_equal(cp, 0x202e);
    assert_int_equal(text_utf8_next("\xf0\x9f\x98\x80", 4, &cp), 4);
    assert_int_equal(cp, 0x1f600);
    /* Overlong forms, surrogates, past U+10FFFF, lone continuation, cut sequences. */
    assert_int_equal(text_utf8_next("\xc0\xaf", 2, &cp), 0);
    assert_int_equal(text_utf8_next("\xc1\xbf", 2, &cp), 0);
    assert_int_equal(text_utf8_next("\xe0\x80\xaf", 3, &cp), 0);
    assert_int_equal(text_utf8_next("\xf0\x80\x80\xaf", 4, &cp), 0);
    assert_int_equal(text_utf8_next("\xed\xa0\x80", 3, &cp), 0);
    assert_int_equal(text_utf8_next("\xf4\x90\x80\x80", 4, &cp), 0);
    assert_int_equal(text_utf8_next("\xf5\x80\x80\x80", 4, &cp), 0);
    assert_int_equal(text_utf8_next("\x80", 1, &cp), 0);
    assert_int_equal(text_utf8_next("\xe2\x80", 2, &cp), 0);
    assert_int_equal(text_utf8_next("\xe2\x28\xae", 3, &cp), 0);
    assert_int_equal(text_utf8_next("", 0, &cp), 0);
}

struct nontext_case {
    const char *buf;
    size_t len;
    size_t at; /* == len: it is text */
};

static void test_find_nontext(void **state)
{
    static const struct nontext_case cases[] = {
        {"a: b\n", 5, 5},
        {"a: b\r\nc: d\r\n", 12, 12},
        {"a:\tb\n", 5, 5},
        {"a: d\xc3\xa9j\xc3\xa0\n", 10, 10},
        {"a: \xe2\x80\xae\n", 7, 7}, /* a bidi override is text (shown escaped elsewhere) */
        {"a: b\0c\n", 7, 4},
        {"a: b\rc\n", 7, 4},
        {"a: b\r", 5, 4},
        {"a: \x1b[2J\n", 8, 3},
        {"a: \x7f\n", 5, 3},
        {"a: \xc2\x9b\n", 6, 3},
        {"a: \xc3\x28\n", 6, 3},
        {"a: \xff\n", 5, 3},
        {"\x0c", 1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = NULL;
        size_t at = text_find_nontext(cases[i].buf, cases[i].len, &why);
        if (at != cases[i].at)
            fail_msg("case %zu: found at %zu, want %zu", i, at, cases[i].at);
        if (at < cases[i].len)
            assert_non_null(why);
    }
}

static void test_names(void **state)
{
    char long_name[TEXT_NAME_MAX + 2];
    (void)state;
    assert_true(text_is_name("alice", 5));
    assert_true(text_is_name("ci-bot_2.prod", 13));
    assert_false(text_is_name("", 0));
    assert_false(text_is_name("al ice", 6));
    assert_false(text_is_name("alice\n", 6));
    assert_false(text_is_name("a|b", 3));
    assert_false(text_is_name("\xc3\xa9", 2));
    memset(long_name, 'a', sizeof(long_name));
    assert_true(text_is_name(long_name, TEXT_NAME_MAX));
    assert_false(text_is_name(long_name, TEXT_NAME_MAX + 1));
}

struct esc_case {
    const char *in;
    const char *term;
    const char *md;
};

/* The hostile corpus: each input and what a terminal and a Markdown cell get. */
static const struct esc_case esc_cases[] = {
    {"plain reason", "plain reason", "plain reason"},
    {"x\n| approved | alice |", "x\\n| approved | alice |", "x\\n\\| approved \\| alice \\|"},
    {"\x1b[2Jgone", "\\x1b[2Jgone", "\\x1b\\[2Jgone"},
    {"<script>alert(1)</script>", "<script>alert(1)</script>",
     "&lt;script&gt;alert(1)&lt;/script&gt;"},
    {"abc\xe2\x80\xae"
     "cba",
     "abc\\u202ecba", "abc\\u202ecba"},
    {"\xe2\x81\xa6x\xe2\x81\xa9", "\\u2066x\\u2069", "\\u2066x\\u2069"},
    {"c1 \xc2\x9b"
     "31m",
     "c1 \\u009b31m", "c1 \\u009b31m"},
    {"bad \xff byte", "bad \\xff byte", "bad \\xff byte"},
    {"tab\there\r\n", "tab\\there\\r\\n", "tab\\there\\r\\n"},
    {"del\x7f", "del\\x7f", "del\\x7f"},
    {"a\\|b", "a\\|b", "a\\\\\\|b"},
    {"**bold** _it_ `code` [l](u) &amp;", "**bold** _it_ `code` [l](u) &amp;",
     "\\*\\*bold\\*\\* \\_it\\_ \\`code\\` \\[l\\](u) &amp;amp;"},
    {"caf\xc3\xa9 \xf0\x9f\x9a\x80", "caf\xc3\xa9 \xf0\x9f\x9a\x80",
     "caf\xc3\xa9 \xf0\x9f\x9a\x80"},
    {"", "", ""},
};

static void test_escape_term_and_md(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++) {
        char *t = text_term(esc_cases[i].in);
        char *m = text_md(esc_cases[i].in);
        if (strcmp(t, esc_cases[i].term) != 0)
            fail_msg("case %zu: term gave '%s', want '%s'", i, t, esc_cases[i].term);
        if (strcmp(m, esc_cases[i].md) != 0)
            fail_msg("case %zu: md gave '%s', want '%s'", i, m, esc_cases[i].md);
        /* Whatever came in, what goes out holds no control byte and no newline. */
        for (const char *p = m; *p; p++)
            assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
        for (const char *p = t; *p; p++)
            assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
        free(t);
        free(m);
    }
    assert_null(text_term(NULL));
    assert_null(text_md(NULL));
}

static void test_escape_keeps_lines_when_asked(void **state)
{
    char *s = text_term_lines("ok 1\nnot ok 2 \x1b[31mred\n");
    (void)state;
    assert_string_equal(s, "ok 1\nnot ok 2 \\x1b[31mred\n");
    free(s);
}

/* Every byte value at every position: the output is always valid UTF-8 without unsafe code
   points. */
static void test_escape_every_byte(void **state)
{
    (void)state;
    for (int b = 1; b < 256; b++) {
        char in[8] = {'a', (char)b, 'b', (char)b, 0};
        char *outs[3] = {text_term(in), text_md(in), text_term_lines(in)};
        for (int k = 0; k < 3; k++) {
            const char *o = outs[k];
            size_t len = strlen(o), i = 0;
            while (i < len) {
                uint32_t cp;
                size_t n = text_utf8_next(o + i, len - i, &cp);
                assert_true(n > 0);
                assert_true(!text_cp_unsafe(cp) || (k == 2 && cp == '\n'));
                i += n;
            }
            free(outs[k]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_next),
        cmocka_unit_test(test_find_nontext),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_escape_term_and_md),
        cmocka_unit_test(test_escape_keeps_lines_when_asked),
        cmocka_unit_test(test_escape_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
