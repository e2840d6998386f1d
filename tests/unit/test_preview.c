/* Unit tests of the plan preview (rollout/preview.c) and the freeze windows it reads
 * (config/freeze.c): the cron matcher, RFC 3339 times, windows in force and crossed, and the
 * time to full traffic of the plans the acceptance check and the docs use. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/freeze.h"
#include "rollout/preview.h"

/* 2026-12-07T10:30:00Z, a Monday. */
#define MONDAY_1030 1796639400LL

static struct config *load(const char *yaml)
{
    struct config *cfg = NULL;
    char err[512] = "";
    int rc = config_load_string(yaml, "t.yml", &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("config: %s", err);
    return cfg;
}

static void expect_bad(const char *yaml, const char *want)
{
    struct config *cfg = NULL;
    char err[512] = "";
    assert_int_equal(config_load_string(yaml, "t.yml", &cfg, err, sizeof(err)), -EINVAL);
    assert_null(cfg);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_time_parse(void **state)
{
    int64_t t;
    (void)state;
    assert_int_equal(freeze_time_parse("2026-12-07T10:30:00Z", &t), 0);
    assert_int_equal(t, MONDAY_1030);
    assert_int_equal(freeze_time_parse("2026-12-07T11:30:00.250+01:00", &t), 0);
    assert_int_equal(t, MONDAY_1030);
    assert_int_equal(freeze_time_parse("2026-12-07T05:00:00-05:30", &t), 0);
    assert_int_equal(t, MONDAY_1030);
    char buf[32];
    assert_string_equal(freeze_time_format(MONDAY_1030, buf, sizeof(buf)), "2026-12-07T10:30:00Z");
    static const char *const bad[] = {"2026-12-07",
                                      "2026-12-07T10:30:00",
                                      "2026-13-01T00:00:00Z",
                                      "2026-02-29T00:00:00Z",
                                      "2026-12-07T24:00:00Z",
                                      "2026-12-07T10:30:00+1:00",
                                      "tomorrow",
                                      ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(freeze_time_parse(bad[i], &t), -EINVAL);
}

static void test_cron(void **state)
{
    struct freeze_cron c;
    char err[200];
    (void)state;
    assert_int_equal(freeze_cron_parse("30 10 * * 1", &c, err, sizeof(err)), 0);
    assert_true(freeze_cron_match(&c, MONDAY_1030));
    assert_true(freeze_cron_match(&c, MONDAY_1030 + 59));
    assert_false(freeze_cron_match(&c, MONDAY_1030 + 60));
    assert_false(freeze_cron_match(&c, MONDAY_1030 + 86400)); /* Tuesday */
    assert_int_equal(freeze_cron_parse("*/15 9-17 * * 1-5", &c, err, sizeof(err)), 0);
    assert_true(freeze_cron_match(&c, MONDAY_1030));
    assert_false(freeze_cron_match(&c, MONDAY_1030 + 5 * 60));
    assert_false(freeze_cron_match(&c, MONDAY_1030 + 5 * 86400)); /* Saturday */
    assert_int_equal(freeze_cron_parse("0,30 10 7 12 *", &c, err, sizeof(err)), 0);
    assert_true(freeze_cron_match(&c, MONDAY_1030));
    /* Both day fields restricted: either matches (the 1st of the month, or a Monday). */
    assert_int_equal(freeze_cron_parse("30 10 1 * 1", &c, err, sizeof(err)), 0);
    assert_true(freeze_cron_match(&c, MONDAY_1030));
    /* 7 is Sunday. */
    assert_int_equal(freeze_cron_parse("30 10 * * 7", &c, err, sizeof(err)), 0);
    assert_true(freeze_cron_match(&c, MONDAY_1030 - 86400));
    static const char *const bad[] = {"* * * *",    "60 * * * *",  "* 24 * * *",   "* * 0 * *",
                                      "* * * 13 *", "* * * * 8",   "5-1 * * * *",  "*/0 * * * *",
                                      "a * * * *",  "* * * * * *", "1,,2 * * * *", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (freeze_cron_parse(bad[i], &c, err, sizeof(err)) != -EINVAL)
            fail_msg("cron '%s' was accepted", bad[i]);
}

static void test_windows(void **state)
{
    (void)state;
    struct config *cfg = load("freeze:\n"
                              "  - {name: xmas, from: \"2026-12-24T00:00:00Z\", to: "
                              "\"2026-12-27T00:00:00Z\", services: [web]}\n"
                              "  - {name: standup, cron: \"0 10 * * 1-5\", duration: 45m}\n"
                              "  - {name: every-minute, cron: \"* 22 * * *\", duration: 1m}\n"
                              "services:\n"
                              "  web: {listen: \"127.0.0.1:18080\", targets: [\"127.0.0.1:1\"]}\n"
                              "  api: {listen: \"127.0.0.1:18081\", targets: [\"127.0.0.1:1\"]}\n");
    int64_t until = 0, a, b;
    const struct config_freeze *f = freeze_find_active(cfg, "web", MONDAY_1030, &until);
    assert_non_null(f);
    assert_string_equal(f->name, "standup");
    assert_int_equal(until, MONDAY_1030 + 15 * 60);
    assert_null(freeze_find_active(cfg, "web", MONDAY_1030 + 15 * 60, &until));
    /* A window for web only leaves api alone. */
    int64_t xmas = MONDAY_1030 + 17 * 86400 + 3 * 3600; /* 13:30, no standup */
    assert_non_null(freeze_find_active(cfg, "web", xmas, &until));
    assert_null(freeze_find_active(cfg, "api", xmas, &until));
    /* Back-to-back occurrences are one freeze: it ends at 23:00, not a minute from now. */
    f = freeze_find_active(cfg, "api", MONDAY_1030 + 11.5 * 3600 + 30, &until);
    assert_non_null(f);
    assert_string_equal(f->name, "every-minute");
    assert_int_equal(until, MONDAY_1030 + 12.5 * 3600);
    /* The next standup is crossed by a span that reaches it. */
    assert_int_equal(freeze_next(&cfg->freezes[1], MONDAY_1030 + 3600, MONDAY_1030 + 86400, &a, &b),
                     1);
    assert_int_equal(a, MONDAY_1030 + 86400 - 30 * 60);
    assert_int_equal(b, a + 45 * 60);
    assert_int_equal(freeze_next(&cfg->freezes[0], MONDAY_1030, MONDAY_1030 + 3600, &a, &b), 0);
    config_free(cfg);
}

static void test_bad_windows(void **state)
{
    (void)state;
    const char *svc =
        "services:\n  web: {listen: \"127.0.0.1:18080\", targets: [\"127.0.0.1:1\"]}\n";
    char y[1024];
    snprintf(
        y, sizeof(y),
        "freeze:\n  - {name: a, from: \"2026-12-27T00:00:00Z\", to: \"2026-12-24T00:00:00Z\"}\n%s",
        svc);
    expect_bad(y, "t.yml:2: freeze[0].to: expected a time after from");
    snprintf(y, sizeof(y),
             "freeze:\n  - {name: a, cron: \"0 9 * * 1\", duration: 1h}\n"
             "  - {name: a, cron: \"0 10 * * 1\", duration: 1h}\n%s",
             svc);
    expect_bad(y, "t.yml:3: freeze[1].name: 'a' is already the name");
    snprintf(y, sizeof(y), "freeze:\n  - {name: a, cron: \"0 9 * *\", duration: 1h}\n%s", svc);
    expect_bad(y, "t.yml:2: freeze[0].cron: expected 5 fields");
    snprintf(
        y, sizeof(y),
        "freeze:\n  - {name: a, from: \"2026-12-24T00:00:00Z\", to: \"2026-12-26T00:00:00Z\"}\n"
        "  - {name: b, from: \"2026-12-25T00:00:00Z\", to: \"2026-12-27T00:00:00Z\"}\n%s",
        svc);
    expect_bad(y, "t.yml:3: freeze[1]: overlaps window 'a'");
    snprintf(y, sizeof(y),
             "freeze:\n  - {name: a, cron: \"0 9 * * 1\", duration: 1h, services: [nope]}\n%s",
             svc);
    expect_bad(y, "which no service is called");
    snprintf(y, sizeof(y), "freeze:\n  - {name: a, from: \"2026-12-24\", to: \"x\"}\n%s", svc);
    expect_bad(y, "freeze[0].from: expected an RFC 3339 time");
    snprintf(y, sizeof(y),
             "freeze:\n  - {name: a, from: \"2026-12-24T00:00:00Z\", cron: \"* * * * *\"}\n%s",
             svc);
    expect_bad(y, "expected either from and to");
}

#define GOVERNANCE_SERVICE                                                                         \
    "services:\n"                                                                                  \
    "  web:\n"                                                                                     \
    "    listen: 127.0.0.1:18080\n"                                                                \
    "    health_check: {path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1}\n"  \
    "    drain_timeout: 1s\n"                                                                      \
    "    deploy_timeout: 5s\n"                                                                     \
    "    targets: [127.0.0.1:1]\n"

static void test_step_owner(void **state)
{
    (void)state;
    const char *svc =
        "services:\n  web: {listen: \"127.0.0.1:18080\", targets: [\"127.0.0.1:1\"]}\n";
    char y[1024];
    snprintf(y, sizeof(y), "%splans:\n  p:\n    steps: [{owner: bob}]\n", svc);
    expect_bad(y, "t.yml:5: plans.p.steps[0]: expected a map with one key");
    snprintf(y, sizeof(y), "%splans:\n  p:\n    steps: [{weight: 5, pause: 1s}]\n", svc);
    expect_bad(y, "t.yml:5: plans.p.steps[0]: expected a map with one key");
    snprintf(y, sizeof(y), "%splans:\n  p:\n    steps: [{owner: \"a b\", weight: 5}]\n", svc);
    expect_bad(y, "t.yml:5: plans.p.steps[0].owner: expected a name");
    snprintf(y, sizeof(y), "%splans:\n  p:\n    owner: [x]\n    steps: [{weight: 5}]\n", svc);
    expect_bad(y, "t.yml:5: plans.p.owner: expected a name");
    snprintf(y, sizeof(y),
             "%splans:\n  p:\n    owner: lead\n    steps: [{owner: ops, weight: 5}]\n", svc);
    struct config *cfg = load(y);
    assert_string_equal(cfg->plans[0].owner, "lead");
    assert_string_equal(cfg->plans[0].steps[0].owner, "ops");
    assert_int_equal(cfg->plans[0].steps[0].kind, CONFIG_STEP_WEIGHT);
    assert_int_equal(cfg->plans[0].steps[0].weight, 5);
    config_free(cfg);
}

static const char governance_yaml[] =
    "state_dir: /tmp\n" GOVERNANCE_SERVICE "plans:\n"
    "  canary:\n"
    "    owner: lead\n"
    "    steps: [{weight: 10}, {pause: 60s}, {weight: 50, owner: ops}, {pause: 120s}, "
    "{weight: 100}]\n"
    "    analysis: {interval: 10s, min_requests: 100, max_error_rate: 0.01}\n";

static void test_times(void **state)
{
    (void)state;
    struct config *cfg = load(governance_yaml);
    struct preview_in in = {.cfg = cfg,
                            .svc = &cfg->services[0],
                            .plan = &cfg->plans[0],
                            .from = "v1",
                            .to = "v2",
                            .rate = -1,
                            .now = MONDAY_1030};
    struct preview_times t;
    preview_times(&in, &t);
    /* Pauses 60 + 120, health 0..0.2 s (one check), 5 s at worst (deploy_timeout). */
    assert_true(t.fastest >= 180 && t.fastest <= 180.001);
    assert_true(t.expected >= 180.19 && t.expected <= 180.21);
    assert_true(t.worst >= 184.99 && t.worst <= 185.01);
    assert_true(t.rollback_worst >= 5.99 && t.rollback_worst <= 6.01);

    json_t *j = preview_json(&in);
    json_t *steps = json_object_get(j, "steps");
    assert_int_equal(json_array_size(steps), 5);
    static const int traffic[] = {10, 10, 50, 50, 100};
    static const char *const owner[] = {"lead", "lead", "ops", "lead", "lead"};
    for (size_t i = 0; i < 5; i++) {
        json_t *s = json_array_get(steps, i);
        assert_int_equal(json_integer_value(json_object_get(s, "traffic")), traffic[i]);
        assert_string_equal(json_string_value(json_object_get(s, "owner")), owner[i]);
        assert_non_null(strstr(json_string_value(json_object_get(s, "plan_b")), "v1"));
        assert_int_equal(json_array_size(json_object_get(s, "notify")), 0);
    }
    json_t *ttf = json_object_get(j, "time_to_full_s");
    assert_int_equal(json_integer_value(json_object_get(ttf, "fastest")), 180);
    assert_int_equal(json_integer_value(json_object_get(ttf, "expected")), 180);
    assert_int_equal(json_integer_value(json_object_get(ttf, "worst")), 185);
    assert_int_equal(json_integer_value(json_object_get(j, "time_to_rollback_worst_s")), 6);
    json_decref(j);

    /* At 1 request/s, 10% of it is far from 100 requests in 60 s: the step is expected to be
     * inconclusive, and on_inconclusive: pause waits for a person. */
    in.rate = 1;
    j = preview_json(&in);
    json_t *s1 = json_array_get(json_object_get(j, "steps"), 1);
    assert_true(json_is_true(json_object_get(s1, "waits_for_person")));
    assert_non_null(strstr(json_string_value(json_object_get(s1, "note")), "inconclusive"));
    json_decref(j);
    /* At 100 requests/s it is not. */
    in.rate = 100;
    j = preview_json(&in);
    s1 = json_array_get(json_object_get(j, "steps"), 1);
    assert_false(json_is_true(json_object_get(s1, "waits_for_person")));
    json_decref(j);
    config_free(cfg);
}

static void test_freezes_crossed_and_hooks(void **state)
{
    (void)state;
    char y[2048];
    snprintf(y, sizeof(y),
             "freeze:\n  - {name: standup, cron: \"0 10 * * 1-5\", duration: 45m}\n"
             "  - {name: later, cron: \"0 12 * * *\", duration: 1h}\n"
             "notify:\n  webhooks:\n"
             "    - {url: \"https://user:pw@hooks.example.com/services/SECRET\"}\n"
             "    - {url: \"http://127.0.0.1:9/x\", services: [other]}\n" GOVERNANCE_SERVICE
             "  other: {listen: \"127.0.0.1:18089\", targets: [\"127.0.0.1:1\"]}\n"
             "%s",
             strstr(governance_yaml, "plans:"));
    struct config *cfg = load(y);
    struct preview_in in = {.cfg = cfg,
                            .svc = config_service_find(cfg, "web"),
                            .plan = &cfg->plans[0],
                            .from = "v1",
                            .to = "v2",
                            .rate = -1,
                            .now = MONDAY_1030};
    json_t *j = preview_json(&in);
    json_t *fz = json_object_get(j, "freeze_windows");
    assert_int_equal(json_array_size(fz), 1); /* standup now; 12:00 is beyond the worst time */
    assert_string_equal(json_string_value(json_object_get(json_array_get(fz, 0), "name")),
                        "standup");
    assert_string_equal(json_string_value(json_object_get(j, "frozen_now")), "standup");
    json_t *n = json_object_get(j, "notify");
    assert_int_equal(json_array_size(n), 1);
    assert_string_equal(json_string_value(json_array_get(n, 0)),
                        "webhook https://hooks.example.com");
    json_decref(j);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_cron),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_bad_windows),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_step_owner),
        cmocka_unit_test(test_freezes_crossed_and_hooks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
