/* Unit tests of proxy/hold: which clients get the HTML maintenance page, what the answers cutover
 * writes for a held or maintained service say, and the bound on requests held at once. The
 * Accept field is outside input, so its reader is fed odd spellings and every prefix. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/hold.h"

static int html(const char *accept)
{
    return hold_accepts_html(accept, strlen(accept));
}

static void test_accept_lists_text_html(void **state)
{
    (void)state;
    /* Firefox and Chrome send these. */
    assert_true(html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
    assert_true(html("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                     "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
    assert_true(html("TEXT/HTML"));
    assert_true(html("  text/html ; level=1 ; q=0.5 "));
    assert_true(html("application/json, text/html;q=0.001"));
    assert_true(html("text/html;q=1.000"));
    assert_true(html("text/html;q=")); /* unparsable quality: not a refusal */
}

static void test_accept_without_text_html_gets_plain_text(void **state)
{
    (void)state;
    assert_false(html("*/*"));    /* curl */
    assert_false(html("text/*")); /* not an explicit wish for a page */
    assert_false(html(""));
    assert_false(html("application/json"));
    assert_false(html("text/htmlx, xtext/html"));
    assert_false(html("text/html;q=0"));
    assert_false(html("text/html; Q=0.000"));
    assert_false(html("text/html;q=0.0, */*"));
    assert_false(html(",,,;;;==="));
}

/* The reader never reads past len: every prefix of a long value is read on its own (ASan checks
 * the bounds of the exact-size copy). */
static void test_accept_every_prefix(void **state)
{
    (void)state;
    const char *v = "application/xml;q=0.9, text/html ; q=0.5;level=2,*/*;q=0.1";
    size_t n = strlen(v);
    for (size_t i = 0; i <= n; i++) {
        char *p = malloc(i ? i : 1);
        memcpy(p, v, i);
        int got = hold_accepts_html(p, i);
        free(p);
        /* "text/html" counts once it is whole; cut at "q=0" or "q=0." it is refused, until the
         * 5 of 0.5 follows. */
        size_t whole = strstr(v, "text/html") - v + strlen("text/html");
        size_t q0 = strstr(v, "q=0.5") - v + 3;
        assert_int_equal(got, i >= whole && i != q0 && i != q0 + 1);
    }
}

static void test_maintenance_page_html_escapes_the_message(void **state)
{
    (void)state;
    char buf[16384];
    int n = hold_maintenance_answer(buf, sizeof(buf), "db <upgrade> & \"more\"", 1, 0);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_non_null(strstr(buf, "\r\nRetry-After: 60\r\n"));
    assert_non_null(strstr(buf, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
    assert_non_null(strstr(buf, "<p>db &lt;upgrade&gt; &amp; &quot;more&quot;</p>"));
    assert_null(strstr(buf, "<upgrade>"));
    /* Content-Length is the body's length. */
    const char *body = strstr(buf, "\r\n\r\n") + 4;
    char want[64];
    snprintf(want, sizeof(want), "Content-Length: %zu\r\n", strlen(body));
    assert_non_null(strstr(buf, want));
}

static void test_maintenance_plain_text_and_head(void **state)
{
    (void)state;
    char buf[16384], head[16384];
    int n = hold_maintenance_answer(buf, sizeof(buf), "back at 14:00 <b>", 0, 0);
    assert_true(n > 0);
    assert_string_equal(strstr(buf, "\r\n\r\n") + 4, "back at 14:00 <b>\n");
    assert_non_null(strstr(buf, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(buf, "Content-Length: 18\r\n"));
    /* HEAD: the same head, no body. */
    int h = hold_maintenance_answer(head, sizeof(head), "back at 14:00 <b>", 0, 1);
    assert_int_equal(h, n - 18);
    assert_memory_equal(head, buf, (size_t)h);
    /* No message: a sentence of its own. */
    n = hold_maintenance_answer(buf, sizeof(buf), NULL, 0, 0);
    assert_string_equal(strstr(buf, "\r\n\r\n") + 4, "This service is down for maintenance.\n");
}

static void test_longest_message_fits_a_worker_buffer(void **state)
{
    (void)state;
    char msg[HOLD_MESSAGE_MAX + 1], buf[16 * 1024];
    memset(msg, '&', HOLD_MESSAGE_MAX); /* the worst case: each byte escaped to 5 */
    msg[HOLD_MESSAGE_MAX] = '\0';
    assert_true(hold_maintenance_answer(buf, sizeof(buf), msg, 1, 0) > 0);
    /* A buffer too small is refused, never overrun. */
    assert_int_equal(hold_maintenance_answer(buf, 200, msg, 1, 0), -ENOSPC);
    assert_int_equal(hold_maintenance_answer(buf, 100, "x", 0, 0), -ENOSPC);
}

static void test_refusal_answers(void **state)
{
    (void)state;
    char buf[1024];
    assert_true(hold_refusal_answer(buf, sizeof(buf), 1, 0) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 503 "));
    assert_non_null(strstr(buf, "\r\nRetry-After: 1\r\n"));
    assert_non_null(strstr(buf, "held longer than the hold allows"));
    assert_true(hold_refusal_answer(buf, sizeof(buf), 0, 0) > 0);
    assert_non_null(strstr(buf, "too many requests held"));
}

static void test_held_requests_are_bounded_per_service(void **state)
{
    (void)state;
    struct hold_stats s;
    assert_true(hold_enter(7, 2));
    assert_true(hold_enter(7, 2));
    assert_false(hold_enter(7, 2)); /* the third waits for nobody: 503 */
    assert_true(hold_enter(8, 2));  /* another service has its own places */
    hold_leave(7, 1);
    assert_true(hold_enter(7, 2));
    hold_get_stats(7, &s);
    assert_int_equal(s.held, 2);
    assert_int_equal(s.total, 3);
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.refused, 1);
    assert_false(hold_enter(9, 0)); /* hold_max_requests 0: none waits */
    assert_false(hold_enter(-1, 10));
    assert_false(hold_enter(HOLD_MAX_SERVICES, 10));
    hold_get_stats(HOLD_MAX_SERVICES, &s);
    assert_int_equal(s.total, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_lists_text_html),
        cmocka_unit_test(test_accept_without_text_html_gets_plain_text),
        cmocka_unit_test(test_accept_every_prefix),
        cmocka_unit_test(test_maintenance_page_html_escapes_the_message),
        cmocka_unit_test(test_maintenance_plain_text_and_head),
        cmocka_unit_test(test_longest_message_fits_a_worker_buffer),
        cmocka_unit_test(test_refusal_answers),
        cmocka_unit_test(test_held_requests_are_bounded_per_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
