/* Unit tests for api/who: who a unix-socket peer is under a config's people, what role it
 * has, and when it may act as someone else (--as). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "api/who.h"
#include "config/config.h"

static const char PEOPLE[] = "state_dir: /tmp\n"
                             "services:\n"
                             "  web: {listen: 127.0.0.1:1, targets: [127.0.0.1:2]}\n"
                             "people:\n"
                             "  alice: {unix_user: alice, services: {web: [approver]}}\n"
                             "  boss: {unix_user: ops, role: admin, services: {\"*\": [owner]}}\n"
                             "  carol: {role: viewer}\n";

static struct config *load(const char *text)
{
    struct config *cfg = NULL;
    char err[512];
    int rc = config_load_string(text, "t.yml", &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("config: %s", err);
    return cfg;
}

static void test_no_people_keeps_the_old_trust(void **state)
{
    (void)state;
    struct config *cfg = load("state_dir: /tmp\nservices: {}\n");
    struct who_unix w;
    char why[256];
    who_unix_resolve(cfg, 1000, "alice", 0, &w);
    assert_int_equal(w.identified, 0);
    assert_int_equal(w.role, CONFIG_ROLE_ADMIN);
    assert_string_equal(who_unix_actor(&w, "anyone", why, sizeof(why)), "anyone");
    assert_string_equal(who_unix_actor(&w, NULL, why, sizeof(why)), "alice");
    config_free(cfg);
}

static void test_a_person_acts_as_themselves_only(void **state)
{
    (void)state;
    struct config *cfg = load(PEOPLE);
    struct who_unix w;
    char why[256] = "";
    who_unix_resolve(cfg, 1000, "alice", 0, &w);
    assert_non_null(w.person);
    assert_string_equal(w.person->name, "alice");
    assert_int_equal(w.role, CONFIG_ROLE_OPERATOR); /* the default role */
    assert_string_equal(who_unix_actor(&w, NULL, why, sizeof(why)), "alice");
    /* The CLI sends the login name when nobody said --as. */
    assert_string_equal(who_unix_actor(&w, "alice", why, sizeof(why)), "alice");
    assert_null(who_unix_actor(&w, "boss", why, sizeof(why)));
    assert_non_null(strstr(why, "needs the role admin"));
    assert_int_equal(config_person_duties(w.person, "web"), CONFIG_DUTY_APPROVER);
    config_free(cfg);
}

static void test_an_admin_may_act_for_another(void **state)
{
    (void)state;
    struct config *cfg = load(PEOPLE);
    struct who_unix w;
    char why[256];
    who_unix_resolve(cfg, 1001, "ops", 0, &w);
    assert_string_equal(w.person->name, "boss");
    assert_int_equal(w.role, CONFIG_ROLE_ADMIN);
    assert_string_equal(who_unix_actor(&w, "alice", why, sizeof(why)), "alice");
    assert_int_equal(config_person_duties(w.person, "shop"), CONFIG_DUTY_OWNER); /* "*" */
    config_free(cfg);
}

static void test_unmapped_users_by_ownership(void **state)
{
    (void)state;
    struct config *cfg = load(PEOPLE);
    struct who_unix w;
    char why[256];
    who_unix_resolve(cfg, 0, "root", 999, &w); /* root owns the daemon's files */
    assert_null(w.person);
    assert_int_equal(w.role, CONFIG_ROLE_ADMIN);
    who_unix_resolve(cfg, 999, "cutover", 999, &w); /* the daemon's own user */
    assert_int_equal(w.role, CONFIG_ROLE_ADMIN);
    who_unix_resolve(cfg, 1002, "mallory", 999, &w); /* a group member who is nobody */
    assert_int_equal(w.role, CONFIG_ROLE_VIEWER);
    assert_null(who_unix_actor(&w, "alice", why, sizeof(why)));
    who_unix_resolve(cfg, 4242, NULL, 999, &w); /* no login for the uid */
    assert_string_equal(w.user, "uid-4242");
    who_unix_describe(&w, why, sizeof(why));
    assert_string_equal(why, "uid 4242 (uid-4242)");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_people_keeps_the_old_trust),
        cmocka_unit_test(test_a_person_acts_as_themselves_only),
        cmocka_unit_test(test_an_admin_may_act_for_another),
        cmocka_unit_test(test_unmapped_users_by_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
