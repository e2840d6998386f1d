/* Unit tests for rollout/policy: a service's risk policy against a deploy's risk, ticket and
 * plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "config/config.h"
#include "rollout/policy.h"

static const char CFG[] =
    "state_dir: /tmp\n"
    "services:\n"
    "  web:\n"
    "    listen: 127.0.0.1:1\n"
    "    targets: [127.0.0.1:2]\n"
    "    risk_policy: {require: true, medium: {ticket: true},\n"
    "                  high: {ticket: true, approval_first: true}}\n"
    "  free: {listen: 127.0.0.1:3, targets: [127.0.0.1:4]}\n"
    "plans:\n"
    "  fast: {steps: [{test: {command: [\"true\"]}}, {weight: 10}, {approval: {approvers: [a]}},"
    " {weight: 100}]}\n"
    "  careful: {steps: [{weight: 0}, {approval: {approvers: [a]}}, {pilot: {header: \"X-P: 1\","
    " duration: 1s}}, {weight: 100}]}\n";

static struct config *cfg;

static int setup(void **state)
{
    (void)state;
    char err[512];
    if (config_load_string(CFG, "t.yml", &cfg, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_free(cfg);
    return 0;
}

static int check(const char *svc, const char *plan, const char *risk, const char *ticket, char *err)
{
    return policy_check(config_service_find(cfg, svc), plan ? config_plan_find(cfg, plan) : NULL,
                        risk, ticket, err, 512);
}

static void test_rules(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(check("free", NULL, NULL, NULL, err), 0); /* no policy */
    assert_int_equal(check("web", NULL, NULL, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "--risk"));
    assert_int_equal(check("web", NULL, "low", NULL, err), 0);
    assert_int_equal(check("web", NULL, "medium", NULL, err), -EINVAL);
    assert_non_null(strstr(err, "--ticket"));
    assert_int_equal(check("web", NULL, "medium", "CHG-1", err), 0);
    /* high: a ticket, and an approval before the first step that moves users' traffic. */
    assert_int_equal(check("web", NULL, "high", "CHG-1", err), -EINVAL);
    assert_non_null(strstr(err, "instant switch"));
    assert_int_equal(check("web", "fast", "high", "CHG-1", err), -EINVAL);
    assert_non_null(strstr(err, "plan fast moves traffic at step 2"));
    assert_int_equal(check("web", "careful", "high", "CHG-1", err), 0);
    assert_int_equal(check("web", "careful", "high", NULL, err), -EINVAL);
}

static void test_first_traffic_step(void **state)
{
    (void)state;
    assert_int_equal(policy_first_traffic_step(config_plan_find(cfg, "fast")), 1);
    assert_int_equal(policy_first_traffic_step(config_plan_find(cfg, "careful")), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_first_traffic_step),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
