/* Unit tests of api/session: an issued cookie checks with its token and no other, expires,
 * refuses any altered byte, names (a removed token takes its sessions with it), logout
 * revocation, and the CSRF token that goes with a session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/session.h"

static struct config_token toks[] = {
    {.name = "alice", .secret = "alice-secret-0123456789", .role = CONFIG_ROLE_OPERATOR},
    {.name = "bob", .secret = "bob-secret-0123456789ab", .role = CONFIG_ROLE_VIEWER},
};

#define NOW 1800000000

static void test_issue_and_check(void **state)
{
    (void)state;
    char v[SESSION_VALUE_MAX];
    int64_t exp = 0;
    assert_int_equal(session_issue(&toks[0], NOW, v, sizeof(v)), 0);
    assert_ptr_equal(session_check(v, strlen(v), toks, 2, NULL, NOW, &exp), &toks[0]);
    assert_int_equal(exp, NOW + SESSION_TTL_S);
    /* Still valid at its last second, not after. */
    assert_non_null(session_check(v, strlen(v), toks, 2, NULL, NOW + SESSION_TTL_S, &exp));
    assert_null(session_check(v, strlen(v), toks, 2, NULL, NOW + SESSION_TTL_S + 1, &exp));
    /* Two logins give two sessions. */
    char w[SESSION_VALUE_MAX];
    assert_int_equal(session_issue(&toks[0], NOW, w, sizeof(w)), 0);
    assert_string_not_equal(v, w);
}

static void test_any_altered_byte_is_refused(void **state)
{
    (void)state;
    char v[SESSION_VALUE_MAX];
    int64_t exp;
    assert_int_equal(session_issue(&toks[1], NOW, v, sizeof(v)), 0);
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++) {
        char w[SESSION_VALUE_MAX];
        memcpy(w, v, n + 1);
        w[i] = w[i] == 'a' ? 'b' : 'a';
        assert_null(session_check(w, n, toks, 2, NULL, NOW, &exp));
        /* Cut short at every byte. */
        assert_null(session_check(v, i, toks, 2, NULL, NOW, &exp));
    }
    /* Bob's cookie relabelled as alice's: the MAC is keyed with alice's secret. */
    char *name = strrchr(v, ':');
    char w[SESSION_VALUE_MAX];
    snprintf(w, sizeof(w), "%.*s:alice", (int)(name - v), v);
    assert_null(session_check(w, strlen(w), toks, 2, NULL, NOW, &exp));
    /* A later expiry in a copied cookie does not check either. */
    snprintf(w, sizeof(w), "%lld%s", (long long)NOW + 10 * SESSION_TTL_S, strchr(v, ':'));
    assert_null(session_check(w, strlen(w), toks, 2, NULL, NOW, &exp));
    assert_null(session_check("", 0, toks, 2, NULL, NOW, &exp));
    assert_null(session_check(":::", 3, toks, 2, NULL, NOW, &exp));
}

static void test_removed_or_changed_token_ends_its_sessions(void **state)
{
    (void)state;
    char v[SESSION_VALUE_MAX];
    int64_t exp;
    assert_int_equal(session_issue(&toks[0], NOW, v, sizeof(v)), 0);
    assert_null(session_check(v, strlen(v), &toks[1], 1, NULL, NOW, &exp)); /* alice removed */
    struct config_token rotated = toks[0];
    rotated.secret = "alice-new-secret-0123456";
    assert_null(session_check(v, strlen(v), &rotated, 1, NULL, NOW, &exp));
}

static void test_logout_revokes_until_expiry(void **state)
{
    (void)state;
    char v[SESSION_VALUE_MAX], w[SESSION_VALUE_MAX];
    int64_t exp;
    struct session_revoked *r = NULL;
    assert_int_equal(session_issue(&toks[0], NOW, v, sizeof(v)), 0);
    assert_int_equal(session_issue(&toks[0], NOW, w, sizeof(w)), 0);
    assert_non_null(session_check(v, strlen(v), toks, 2, r, NOW, &exp));
    session_revoke(&r, v, strlen(v), exp, NOW);
    assert_null(session_check(v, strlen(v), toks, 2, r, NOW, &exp));
    assert_non_null(session_check(w, strlen(w), toks, 2, r, NOW, &exp)); /* the other one */
    session_revoked_free(r);
    session_revoked_free(NULL);
}

static void test_csrf_token_belongs_to_its_session(void **state)
{
    (void)state;
    char v[SESSION_VALUE_MAX], w[SESSION_VALUE_MAX], c[SESSION_CSRF_LEN], d[SESSION_CSRF_LEN];
    assert_int_equal(session_issue(&toks[0], NOW, v, sizeof(v)), 0);
    assert_int_equal(session_issue(&toks[0], NOW, w, sizeof(w)), 0);
    session_csrf(&toks[0], v, strlen(v), c);
    session_csrf(&toks[0], w, strlen(w), d);
    assert_int_equal(strlen(c), SESSION_CSRF_LEN - 1);
    assert_string_not_equal(c, d);
    assert_true(session_csrf_ok(&toks[0], v, strlen(v), c, strlen(c)));
    assert_false(session_csrf_ok(&toks[0], v, strlen(v), d, strlen(d)));
    assert_false(session_csrf_ok(&toks[0], v, strlen(v), c, strlen(c) - 1));
    assert_false(session_csrf_ok(&toks[0], v, strlen(v), "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_and_check),
        cmocka_unit_test(test_any_altered_byte_is_refused),
        cmocka_unit_test(test_removed_or_changed_token_ends_its_sessions),
        cmocka_unit_test(test_logout_revokes_until_expiry),
        cmocka_unit_test(test_csrf_token_belongs_to_its_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
