/* Unit tests of config/config: a full config with every key, the defaults, every class of
 * error (each message must name file:line and the key path), unknown-key warnings, relative
 * path resolution and plan validation. Runs under ASan, so every error path is leak-checked. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

#define NAME "c.yml"

/* The tokens file is made at run time (mode 0600, which git cannot keep): setup_dir writes it
 * and puts its path where @TOKENS@ is. */
static const char full_yaml_tmpl[] =
    "state_dir: /srv/cutover\n"            /* 1 */
    "workers: 4\n"                         /* 2 */
    "admin:\n"                             /* 3 */
    "  listen: 127.0.0.1:9900\n"           /* 4 */
    "  tokens_file: @TOKENS@\n"            /* 5 */
    "services:\n"                          /* 6 */
    "  web:\n"                             /* 7 */
    "    listen: 127.0.0.1:8080\n"         /* 8 */
    "    preview_listen: 127.0.0.1:8081\n" /* 9 */
    "    protocol: http\n"                 /* 10 */
    "    health_check: {path: /ready, interval: 2s, timeout: 500ms,\n"
    "                   healthy_threshold: 4, unhealthy_threshold: 5}\n"
    "    drain_timeout: 45s\n"
    "    deploy_timeout: 2m\n"
    "    targets: [127.0.0.1:9001, \"[::1]:9002\"]\n"
    "    run:\n"
    "      command: [./app, --port, \"${PORT}\", --version, \"\"]\n"
    "      env:\n"
    "        MODE: production\n"
    "        LEVEL: 3\n"
    "      cwd: /opt/app\n"
    "      instances: 2\n"
    "      port_range: 21000-21099\n"
    "      stop_signal: INT\n"
    "      stop_timeout: 15s\n"
    "    sticky: {cookie: cutover_id}\n"
    "    timeouts:\n"
    "      client_header: 5s\n"
    "      client_idle: 30s\n"
    "      upstream_connect: 1s\n"
    "      upstream_response: 20s\n"
    "    limits:\n"
    "      max_header_bytes: 32KiB\n"
    "      max_headers: 50\n"
    "      max_uri_bytes: 4096\n"
    "      max_body_bytes: 1MiB\n"
    "    plan: canary\n"
    "  db:\n"
    "    listen: \"[::1]:5432\"\n"
    "    protocol: tcp\n"
    "  api:\n"
    "    listen: 127.0.0.1:8082\n"
    "    sticky:\n"
    "      header: X-User-Id\n"
    "plans:\n"
    "  canary:\n"
    "    steps:\n"
    "      - test: {command: [./smoke.sh, --fast], timeout: 90s}\n"
    "      - pilot: {header: \"X-Cohort: pilot\", duration: 60s}\n"
    "      - pilot: {cookie: \"cohort=beta\", duration: 1m}\n"
    "      - pilot: {source: 10.0.0.0/8, duration: 30s}\n"
    "      - weight: 10\n"
    "      - pause: 30s\n"
    "      - pause: {}\n"
    "      - weight: 50\n"
    "      - approval: {approvers: [lead, ops], count: 2}\n"
    "      - weight: 100\n"
    "    analysis: {interval: 5s, min_requests: 200, "
    "max_error_rate: 0.01,\n"
    "               max_p99_latency_ratio: 1.5, "
    "max_p99_latency_ms: 250, confidence: 0.95}\n"
    "    on_failure: pause\n"
    "    on_inconclusive: proceed\n"
    "  quick:\n"
    "    steps:\n"
    "      - weight: 100\n";

static char full_yaml[sizeof(full_yaml_tmpl) + 128];
static char tokens_path[96];

static const char minimal_yaml[] = "services:\n"
                                   "  web:\n"
                                   "    listen: 127.0.0.1:8080\n";

/* Loads yaml as "c.yml"; fails the test on error. */
static struct config *load_ok(const char *yaml)
{
    struct config *cfg = NULL;
    char err[512] = "";
    int rc = config_load_string(yaml, NAME, &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error %d: %s", rc, err);
    assert_non_null(cfg);
    return cfg;
}

/* Loads yaml expecting -EINVAL and a message containing every string of the NULL-terminated
   list. */
static void load_err(const char *yaml, ...)
{
    struct config *cfg = (struct config *)1;
    char err[512] = "";
    va_list ap;
    const char *want, *missing = NULL;
    int rc = config_load_string(yaml, NAME, &cfg, err, sizeof(err));

    if (rc != -EINVAL)
        fail_msg("want -EINVAL, got %d (%s)", rc, err);
    assert_null(cfg);
    va_start(ap, yaml);
    while ((want = va_arg(ap, const char *)) != NULL)
        if (missing == NULL && strstr(err, want) == NULL)
            missing = want;
    va_end(ap);
    if (missing != NULL)
        fail_msg("message '%s' lacks '%s'", err, missing);
}

/* A minimal service followed by a plan section, to test plans. */
static void plan_err(const char *steps_yaml, ...)
{
    char yaml[2048], err[512] = "";
    struct config *cfg = NULL;
    va_list ap;
    const char *want, *missing = NULL;
    int rc;

    snprintf(yaml, sizeof(yaml),
             "services:\n"
             "  web: {listen: 127.0.0.1:8080, plan: p}\n"
             "plans:\n"
             "  p:\n"
             "    steps:\n"
             "%s",
             steps_yaml);
    rc = config_load_string(yaml, NAME, &cfg, err, sizeof(err));
    if (rc != -EINVAL)
        fail_msg("want -EINVAL, got %d for:\n%s", rc, yaml);
    assert_null(cfg);
    va_start(ap, steps_yaml);
    while ((want = va_arg(ap, const char *)) != NULL)
        if (missing == NULL && strstr(err, want) == NULL)
            missing = want;
    va_end(ap);
    if (missing != NULL)
        fail_msg("message '%s' lacks '%s'", err, missing);
}

/* ---- valid configs ---- */

static void test_full_config_top(void **state)
{
    struct config *cfg = load_ok(full_yaml);
    (void)state;
    assert_string_equal(cfg->path, NAME);
    assert_string_equal(cfg->state_dir, "/srv/cutover");
    assert_int_equal(cfg->workers, 4);
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9900");
    assert_string_equal(cfg->admin_tokens_file, tokens_path);
    assert_int_equal(cfg->ntokens, 2);
    assert_string_equal(cfg->tokens[0].name, "ops");
    assert_int_equal(cfg->tokens[0].role, CONFIG_ROLE_OPERATOR);
    assert_string_equal(cfg->tokens[1].secret, "view-0123456789abcdef");
    assert_int_equal(cfg->tokens[1].role, CONFIG_ROLE_VIEWER);
    assert_int_equal(cfg->nservices, 3);
    assert_int_equal(cfg->nplans, 2);
    assert_int_equal(cfg->nwarnings, 0);
    assert_null(cfg->warnings[0]);
    config_free(cfg);
}

static void test_full_config_service(void **state)
{
    struct config *cfg = load_ok(full_yaml);
    const struct config_service *s = config_service_find(cfg, "web");
    (void)state;
    assert_non_null(s);
    assert_ptr_equal(s, &cfg->services[0]);
    assert_int_equal(s->line, 7);
    assert_string_equal(s->listen, "127.0.0.1:8080");
    assert_string_equal(s->preview_listen, "127.0.0.1:8081");
    assert_int_equal(s->protocol, CONFIG_PROTO_HTTP);
    assert_string_equal(s->health.path, "/ready");
    assert_int_equal(s->health.interval_ms, 2000);
    assert_int_equal(s->health.timeout_ms, 500);
    assert_int_equal(s->health.healthy_threshold, 4);
    assert_int_equal(s->health.unhealthy_threshold, 5);
    assert_int_equal(s->drain_timeout_ms, 45000);
    assert_int_equal(s->deploy_timeout_ms, 120000);
    assert_int_equal(s->ntargets, 2);
    assert_string_equal(s->targets[0], "127.0.0.1:9001");
    assert_string_equal(s->targets[1], "[::1]:9002");
    assert_null(s->targets[2]);
    assert_int_equal(s->sticky.kind, CONFIG_STICKY_COOKIE);
    assert_string_equal(s->sticky.name, "cutover_id");
    assert_int_equal(s->timeouts.client_header_ms, 5000);
    assert_int_equal(s->timeouts.client_idle_ms, 30000);
    assert_int_equal(s->timeouts.upstream_connect_ms, 1000);
    assert_int_equal(s->timeouts.upstream_response_ms, 20000);
    assert_int_equal(s->limits.max_header_bytes, 32 * 1024);
    assert_int_equal(s->limits.max_headers, 50);
    assert_int_equal(s->limits.max_uri, 4096);
    assert_int_equal(s->limits.max_body_bytes, 1024 * 1024);
    assert_string_equal(s->plan, "canary");

    s = config_service_find(cfg, "db");
    assert_non_null(s);
    assert_string_equal(s->listen, "[::1]:5432");
    assert_int_equal(s->protocol, CONFIG_PROTO_TCP);
    assert_int_equal(s->sticky.kind, CONFIG_STICKY_NONE);
    s = config_service_find(cfg, "api");
    assert_non_null(s);
    assert_int_equal(s->sticky.kind, CONFIG_STICKY_HEADER);
    assert_string_equal(s->sticky.name, "X-User-Id");
    assert_null(s->plan);
    assert_null(config_service_find(cfg, "nope"));
    assert_null(config_service_find(NULL, "web"));
    config_free(cfg);
}

static void test_full_config_run(void **state)
{
    struct config *cfg = load_ok(full_yaml);
    const struct config_run *r = &config_service_find(cfg, "web")->run;
    (void)state;
    assert_int_equal(r->argc, 5);
    assert_string_equal(r->command[0], "./app");
    assert_string_equal(r->command[2], "${PORT}");
    assert_string_equal(r->command[4], "");
    assert_null(r->command[5]);
    assert_string_equal(r->env[0], "MODE=production");
    assert_string_equal(r->env[1], "LEVEL=3");
    assert_null(r->env[2]);
    assert_string_equal(r->cwd, "/opt/app");
    assert_int_equal(r->instances, 2);
    assert_int_equal(r->port_lo, 21000);
    assert_int_equal(r->port_hi, 21099);
    assert_int_equal(r->stop_signal, SIGINT);
    assert_int_equal(r->stop_timeout_ms, 15000);
    assert_null(config_service_find(cfg, "db")->run.command);
    config_free(cfg);
}

static void test_full_config_plan(void **state)
{
    struct config *cfg = load_ok(full_yaml);
    const struct config_plan *p = config_plan_find(cfg, "canary");
    const struct config_step *st;
    (void)state;
    assert_non_null(p);
    assert_int_equal(p->nsteps, 10);
    st = p->steps;
    assert_int_equal(st[0].kind, CONFIG_STEP_TEST);
    assert_string_equal(st[0].command[0], "./smoke.sh");
    assert_string_equal(st[0].command[1], "--fast");
    assert_null(st[0].command[2]);
    assert_int_equal(st[0].timeout_ms, 90000);
    assert_int_equal(st[1].kind, CONFIG_STEP_PILOT);
    assert_int_equal(st[1].pilot_kind, CONFIG_PILOT_HEADER);
    assert_string_equal(st[1].pilot_name, "X-Cohort");
    assert_string_equal(st[1].pilot_value, "pilot");
    assert_int_equal(st[1].duration_ms, 60000);
    assert_int_equal(st[2].pilot_kind, CONFIG_PILOT_COOKIE);
    assert_string_equal(st[2].pilot_name, "cohort");
    assert_string_equal(st[2].pilot_value, "beta");
    assert_int_equal(st[3].pilot_kind, CONFIG_PILOT_SOURCE);
    assert_string_equal(st[3].pilot_name, "10.0.0.0/8");
    assert_null(st[3].pilot_value);
    assert_int_equal(st[3].duration_ms, 30000);
    assert_int_equal(st[4].kind, CONFIG_STEP_WEIGHT);
    assert_int_equal(st[4].weight, 10);
    assert_int_equal(st[5].kind, CONFIG_STEP_PAUSE);
    assert_int_equal(st[5].duration_ms, 30000);
    assert_int_equal(st[6].kind, CONFIG_STEP_PAUSE);
    assert_int_equal(st[6].duration_ms, 0);
    assert_int_equal(st[8].kind, CONFIG_STEP_APPROVAL);
    assert_int_equal(st[8].napprovers, 2);
    assert_string_equal(st[8].approvers[0], "lead");
    assert_string_equal(st[8].approvers[1], "ops");
    assert_null(st[8].approvers[2]);
    assert_int_equal(st[8].count, 2);
    assert_int_equal(st[9].weight, 100);
    assert_int_equal(st[0].line, 48);
    assert_int_equal(st[9].line, 57);
    assert_int_equal(p->analysis.enabled, 1);
    assert_int_equal(p->analysis.interval_ms, 5000);
    assert_int_equal(p->analysis.min_requests, 200);
    assert_true(p->analysis.max_error_rate == 0.01);
    assert_true(p->analysis.max_p99_latency_ratio == 1.5);
    assert_true(p->analysis.max_p99_latency_ms == 250);
    assert_true(p->analysis.confidence == 0.95);
    assert_int_equal(p->on_failure, CONFIG_ON_PAUSE);
    assert_int_equal(p->on_inconclusive, CONFIG_ON_PROCEED);

    p = config_plan_find(cfg, "quick");
    assert_non_null(p);
    assert_int_equal(p->line, 62);
    assert_int_equal(p->analysis.enabled, 0);
    assert_int_equal(p->analysis.interval_ms, 10000);
    assert_int_equal(p->analysis.min_requests, 100);
    assert_true(p->analysis.max_error_rate == -1);
    assert_true(p->analysis.max_p99_latency_ratio == -1);
    assert_true(p->analysis.max_p99_latency_ms == -1);
    assert_true(p->analysis.confidence == 0.99);
    assert_false(p->analysis.baseline);
    assert_int_equal(p->on_failure, CONFIG_ON_ROLLBACK);
    assert_int_equal(p->on_inconclusive, CONFIG_ON_PAUSE);
    assert_null(config_plan_find(cfg, "nope"));
    config_free(cfg);
}

static void test_defaults(void **state)
{
    struct config *cfg = load_ok(minimal_yaml);
    const struct config_service *s = &cfg->services[0];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    (void)state;
    assert_string_equal(cfg->state_dir, "./var");
    assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_int_equal(cfg->io_coalesce_us, CONFIG_IO_COALESCE_US);
    assert_null(cfg->admin_listen);
    assert_null(cfg->admin_tokens_file);
    assert_int_equal(cfg->nplans, 0);
    assert_string_equal(s->name, "web");
    assert_int_equal(s->line, 2);
    assert_null(s->preview_listen);
    assert_int_equal(s->protocol, CONFIG_PROTO_HTTP);
    assert_string_equal(s->health.path, "/healthz");
    assert_int_equal(s->health.interval_ms, 1000);
    assert_int_equal(s->health.timeout_ms, 1000);
    assert_int_equal(s->health.healthy_threshold, 2);
    assert_int_equal(s->health.unhealthy_threshold, 3);
    assert_int_equal(s->drain_timeout_ms, 30000);
    assert_int_equal(s->deploy_timeout_ms, 60000);
    assert_int_equal(s->ntargets, 0);
    assert_non_null(s->targets);
    assert_null(s->targets[0]);
    assert_null(s->run.command);
    assert_int_equal(s->run.argc, 0);
    assert_null(s->run.env);
    assert_null(s->run.cwd);
    assert_int_equal(s->run.instances, 1);
    assert_int_equal(s->run.port_lo, 20000);
    assert_int_equal(s->run.port_hi, 20999);
    assert_int_equal(s->run.stop_signal, SIGTERM);
    assert_int_equal(s->run.stop_timeout_ms, 10000);
    assert_int_equal(s->sticky.kind, CONFIG_STICKY_NONE);
    assert_null(s->sticky.name);
    assert_int_equal(s->timeouts.client_header_ms, 10000);
    assert_int_equal(s->timeouts.client_idle_ms, 60000);
    assert_int_equal(s->timeouts.upstream_connect_ms, 5000);
    assert_int_equal(s->timeouts.upstream_response_ms, 60000);
    assert_int_equal(s->limits.max_header_bytes, 65536);
    assert_int_equal(s->limits.max_headers, 100);
    assert_int_equal(s->limits.max_uri, 8192);
    assert_int_equal(s->limits.max_body_bytes, 0);
    assert_null(s->plan);
    config_free(cfg);
}

static void test_run_defaults(void **state)
{
    struct config *cfg = load_ok("services:\n"
                                 "  web:\n"
                                 "    listen: 127.0.0.1:8080\n"
                                 "    run: {command: [./app]}\n");
    const struct config_run *r = &cfg->services[0].run;
    (void)state;
    assert_int_equal(r->argc, 1);
    assert_null(r->command[1]);
    assert_null(r->env);
    assert_null(r->cwd);
    assert_int_equal(r->instances, 1);
    assert_int_equal(r->port_lo, 20000);
    assert_int_equal(r->port_hi, 20999);
    assert_int_equal(r->stop_signal, SIGTERM);
    assert_int_equal(r->stop_timeout_ms, 10000);
    config_free(cfg);
}

static void test_strategy(void **state)
{
    struct config *cfg = load_ok("services:\n"
                                 "  web:\n"
                                 "    listen: 127.0.0.1:8080\n"
                                 "    run: {command: [./app], instances: 3}\n"
                                 "    strategy: {type: rolling, max_unavailable: 1}\n"
                                 "  api:\n"
                                 "    listen: 127.0.0.1:8081\n");
    (void)state;
    assert_int_equal(cfg->services[0].strategy.kind, CONFIG_STRATEGY_ROLLING);
    assert_int_equal(cfg->services[0].strategy.max_surge, 1); /* default */
    assert_int_equal(cfg->services[0].strategy.max_unavailable, 1);
    assert_int_equal(cfg->services[1].strategy.kind, CONFIG_STRATEGY_BLUE_GREEN);
    config_free(cfg);
}

static void test_strategy_errors(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    run: {command: [./app], instances: 2}\n"
             "    strategy: {type: rolling, max_surge: 0, max_unavailable: 0}\n",
             "c.yml:5", "services.web.strategy", "both 0", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    run: {command: [./app], instances: 2}\n"
             "    strategy: {type: rolling, max_surge: 3}\n",
             "services.web.strategy", "at most run.instances (2)", "got 3 and 0", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    strategy: {type: rolling}\n",
             "services.web.strategy", "run: section", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    run: {command: [./app]}\n"
             "    strategy: {type: canary}\n",
             "services.web.strategy.type", "rolling or blue_green", "canary", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    run: {command: [./app]}\n"
             "    strategy: {max_surge: 1}\n",
             "services.web.strategy", "type", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    run: {command: [./app]}\n"
             "    strategy: {type: rolling, max_surge: -1}\n",
             "services.web.strategy.max_surge", NULL);
}

static void test_flow_and_block_styles(void **state)
{
    struct config *a = load_ok("services:\n"
                               "  web:\n"
                               "    listen: 127.0.0.1:8080\n"
                               "    health_check: {path: /hz, interval: 1m30s, timeout: 1.5s}\n");
    struct config *b = load_ok("services:\n"
                               "  web:\n"
                               "    listen: 127.0.0.1:8080\n"
                               "    health_check:\n"
                               "      path: /hz\n"
                               "      interval: 1m30s\n"
                               "      timeout: 1.5s\n");
    struct config *c = load_ok("{services: {web: {listen: '127.0.0.1:8080', health_check: "
                               "{path: /hz, interval: 1m30s, timeout: 1.5s}}}}");
    (void)state;
    for (int i = 0; i < 3; i++) {
        const struct config *cfg = i == 0 ? a : i == 1 ? b : c;
        assert_string_equal(cfg->services[0].health.path, "/hz");
        assert_int_equal(cfg->services[0].health.interval_ms, 90000);
        assert_int_equal(cfg->services[0].health.timeout_ms, 1500);
    }
    config_free(a);
    config_free(b);
    config_free(c);
}

static void test_targets_empty_or_absent(void **state)
{
    struct config *cfg = load_ok("services:\n"
                                 "  a: {listen: 127.0.0.1:1, targets: []}\n"
                                 "  b: {listen: 127.0.0.1:2}\n"
                                 "  c:\n"
                                 "    listen: 127.0.0.1:3\n"
                                 "    targets:\n");
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cfg->services[i].ntargets, 0);
        assert_null(cfg->services[i].targets[0]);
    }
    config_free(cfg);
}

static void test_limits_plain_and_sizes(void **state)
{
    struct config *cfg = load_ok("services:\n"
                                 "  web:\n"
                                 "    listen: 127.0.0.1:8080\n"
                                 "    limits: {max_header_bytes: 64KiB, max_uri_bytes: 1024,\n"
                                 "             max_body_bytes: 2GiB}\n");
    (void)state;
    assert_int_equal(cfg->services[0].limits.max_header_bytes, 65536);
    assert_int_equal(cfg->services[0].limits.max_uri, 1024);
    assert_int_equal(cfg->services[0].limits.max_body_bytes, 2ULL << 30);
    config_free(cfg);
}

static void test_stop_signals(void **state)
{
    static const struct {
        const char *name;
        int sig;
    } cases[] = {{"TERM", SIGTERM}, {"SIGINT", SIGINT}, {"QUIT", SIGQUIT}, {"HUP", SIGHUP},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2},  {"KILL", SIGKILL}};
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml),
                 "services:\n  web:\n    listen: 127.0.0.1:1\n"
                 "    run: {command: [x], stop_signal: %s}\n",
                 cases[i].name);
        struct config *cfg = load_ok(yaml);
        assert_int_equal(cfg->services[0].run.stop_signal, cases[i].sig);
        config_free(cfg);
    }
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    run: {command: [x], stop_signal: STOP}\n",
             "c.yml:4:", "services.web.run.stop_signal", "'STOP'", NULL);
}

static void test_pause_forms(void **state)
{
    struct config *cfg = load_ok("plans:\n"
                                 "  p:\n"
                                 "    steps:\n"
                                 "      - pause: 1m\n"
                                 "      - pause: {}\n"
                                 "      - pause:\n"
                                 "      - pause: {duration: 2s}\n");
    const struct config_plan *p = &cfg->plans[0];
    (void)state;
    assert_int_equal(cfg->nservices, 0);
    assert_int_equal(p->nsteps, 4);
    assert_int_equal(p->steps[0].duration_ms, 60000);
    assert_int_equal(p->steps[1].duration_ms, 0);
    assert_int_equal(p->steps[2].duration_ms, 0);
    assert_int_equal(p->steps[3].duration_ms, 2000);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(p->steps[i].kind, CONFIG_STEP_PAUSE);
    config_free(cfg);
}

static void test_pilot_ipv6_source_and_test_default_timeout(void **state)
{
    struct config *cfg = load_ok("plans:\n"
                                 "  p:\n"
                                 "    steps:\n"
                                 "      - pilot: {source: \"2001:db8::/32\", duration: 1s}\n"
                                 "      - pilot: {source: 192.168.1.7, duration: 1s}\n"
                                 "      - test: {command: [./t.sh]}\n"
                                 "      - approval: {approvers: [a, b, c]}\n");
    const struct config_plan *p = &cfg->plans[0];
    (void)state;
    assert_string_equal(p->steps[0].pilot_name, "2001:db8::/32");
    assert_string_equal(p->steps[1].pilot_name, "192.168.1.7");
    assert_int_equal(p->steps[2].timeout_ms, 60000);
    assert_int_equal(p->steps[3].count, 1);
    config_free(cfg);
}

static void test_mirror_and_load_steps(void **state)
{
    struct config *cfg =
        load_ok("plans:\n"
                "  p:\n"
                "    steps:\n"
                "      - mirror: {duration: 1m}\n"
                "      - mirror: {percent: 5, duration: 2s, compare: [status],\n"
                "                 headers: [Content-Type, ETag],\n"
                "                 ignore_json: [/meta/time, /a~1b], methods: [POST],\n"
                "                 max_body_bytes: 1KiB, max_inflight: 3,\n"
                "                 min_pairs: 7, max_mismatch_rate: 0.25}\n"
                "      - load: {rate: 1000, duration: 3s}\n"
                "      - load: {rate: 2, duration: 1s, paths: [/a, /b?x=1],\n"
                "               headers: {X-Probe: yes}}\n");
    const struct config_plan *p = &cfg->plans[0];
    const struct config_mirror *m0 = p->steps[0].mirror, *m1 = p->steps[1].mirror;
    (void)state;
    assert_int_equal(p->steps[0].kind, CONFIG_STEP_MIRROR);
    assert_int_equal(p->steps[0].duration_ms, 60000);
    assert_int_equal(m0->percent, 100);
    assert_int_equal(m0->methods, (1u << 1) | (1u << 2)); /* GET, HEAD */
    assert_int_equal(m0->compare, CONFIG_MIRROR_STATUS | CONFIG_MIRROR_BODY);
    assert_int_equal(m0->max_body_bytes, 65536);
    assert_int_equal(m0->max_inflight, 64);
    assert_int_equal(m0->min_pairs, 100);
    assert_true(m0->max_mismatch_rate == 0);
    assert_int_equal(m1->percent, 5);
    assert_int_equal(m1->compare, CONFIG_MIRROR_STATUS);
    assert_string_equal(m1->headers[0], "content-type");
    assert_string_equal(m1->headers[1], "etag");
    assert_string_equal(m1->ignore_json[1], "/a~1b");
    assert_int_equal(m1->methods, 1u << 3);
    assert_int_equal(m1->max_body_bytes, 1024);
    assert_int_equal(m1->max_inflight, 3);
    assert_int_equal(m1->min_pairs, 7);
    assert_true(m1->max_mismatch_rate == 0.25);
    assert_int_equal(p->steps[2].kind, CONFIG_STEP_LOAD);
    assert_int_equal(p->steps[2].load->rate, 1000);
    assert_string_equal(p->steps[2].load->paths[0], "/");
    assert_int_equal(p->steps[3].load->npaths, 2);
    assert_string_equal(p->steps[3].load->headers[0], "X-Probe: yes");
    config_free(cfg);
}

static void test_names_allowed(void **state)
{
    struct config *cfg =
        load_ok("services:\n"
                "  api-v2.internal_x:\n"
                "    listen: localhost:8080\n"
                "  "
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:\n"
                "    listen: 127.0.0.1:8081\n");
    (void)state;
    assert_non_null(config_service_find(cfg, "api-v2.internal_x"));
    assert_int_equal(strlen(cfg->services[1].name), 64);
    config_free(cfg);
}

/* ---- warnings ---- */

static void test_unknown_keys_warn(void **state)
{
    struct config *cfg = load_ok("colour: blue\n"
                                 "services:\n"
                                 "  web:\n"
                                 "    listen: 127.0.0.1:8080\n"
                                 "    health_check: {path: /hz, retries: 3}\n"
                                 "plans:\n"
                                 "  p:\n"
                                 "    steps:\n"
                                 "      - weight: 5\n"
                                 "      - test: {command: [x], shell: bash}\n"
                                 "    notes: hello\n");
    (void)state;
    assert_int_equal(cfg->nwarnings, 4);
    assert_null(cfg->warnings[4]);
    const char *want[] = {
        "c.yml:1: unknown key 'colour' in the top level (ignored)",
        "c.yml:5: unknown key 'retries' in services.web.health_check (ignored)",
        "c.yml:10: unknown key 'shell' in plans.p.steps[1].test (ignored)",
        "c.yml:11: unknown key 'notes' in plans.p (ignored)",
    };
    for (size_t i = 0; i < 4; i++) {
        size_t j;
        for (j = 0; j < cfg->nwarnings; j++)
            if (strcmp(cfg->warnings[j], want[i]) == 0)
                break;
        if (j == cfg->nwarnings)
            fail_msg("no warning '%s'", want[i]);
    }
    config_free(cfg);
}

/* ---- document-level errors ---- */

/* A file that is not text is refused whole, at the line of the first offending byte, even
   where libfyaml would read on (a NUL used to end the file early and silently). */
static void test_err_not_text(void **state)
{
    static const struct {
        const char *buf;
        size_t len;
        const char *want;
    } cases[] = {
        {"state_dir: /tmp\n\0services:\n  web: {listen: 127.0.0.1:8080}\n", 59, "c.yml:2: "},
        {"workers: 2 # \xc3\x28\n", 16, "c.yml:1: "},
        {"workers: 2\n# \x1b[2J\n", 18, "c.yml:2: "},
        {"workers: 2\rworkers: 3\n", 22, "c.yml:1: "},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config *cfg = NULL;
        char err[512] = "";
        int rc = config_load_buffer(cases[i].buf, cases[i].len, NAME, &cfg, err, sizeof(err));
        if (rc != -EINVAL || strstr(err, cases[i].want) == NULL ||
            strstr(err, "expected text") == NULL)
            fail_msg("case %zu: rc %d, message '%s'", i, rc, err);
        assert_null(cfg);
    }
}

static void test_err_health_path_injection(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    health_check: {path: \"/h\\r\\nX-A: 1\"}\n",
             "c.yml:4: ", "services.web.health_check.path", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:8080\n"
             "    health_check: {path: \"/a b\"}\n",
             "c.yml:4: ", "health_check.path", NULL);
}

static void test_err_state_dir_not_a_directory(void **state)
{
    (void)state;
    load_err("workers: 1\nstate_dir: /etc/passwd\n", "c.yml:2: ", "state_dir", "a file", NULL);
    load_err("state_dir: /etc/passwd/sub\n", "c.yml:1: ", "state_dir", NULL);
}

static void test_err_empty(void **state)
{
    (void)state;
    load_err("", "c.yml:1:", "empty", NULL);
    load_err("# nothing but a comment\n", "c.yml:1:", "empty", NULL);
}

static void test_err_top_level_not_map(void **state)
{
    (void)state;
    load_err("- a\n- b\n", "c.yml:1:", "top level", "expected a map", "got a list", NULL);
    load_err("just text\n", "c.yml:1:", "expected a map", "got 'just text'", NULL);
}

static void test_err_syntax(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: [1, 2\n  api: {}\n", "c.yml:", "YAML syntax error",
             NULL);
    load_err("a: 1\nb: 2\nc: \"\\q\"\n", "c.yml:3:", "YAML syntax error", NULL);
}

static void test_err_duplicate_key(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web: {listen: 127.0.0.1:1}\n"
             "  web: {listen: 127.0.0.1:2}\n",
             "c.yml:3:", "duplicate key", NULL);
}

static void test_io_coalesce(void **state)
{
    struct config *off = load_ok("io_coalesce_us: 0\n");
    struct config *max = load_ok("io_coalesce_us: 1000\n");
    (void)state;
    assert_int_equal(off->io_coalesce_us, 0);
    assert_int_equal(max->io_coalesce_us, 1000);
    config_free(off);
    config_free(max);
    load_err("io_coalesce_us: 1001\n", "c.yml:1:", "io_coalesce_us", "1000", NULL);
    load_err("io_coalesce_us: -1\n", "c.yml:1:", "io_coalesce_us", NULL);
    load_err("io_coalesce_us: 100us\n", "c.yml:1:", "io_coalesce_us", "100us", NULL);
}

static void test_err_two_documents(void **state)
{
    (void)state;
    load_err("workers: 1\n---\nworkers: 2\n", "c.yml:3:", "second", NULL);
}

static void test_err_alias(void **state)
{
    (void)state;
    load_err("workers: &w 2\n"
             "services:\n"
             "  web:\n"
             "    listen: 127.0.0.1:1\n"
             "    health_check: {healthy_threshold: *w}\n",
             "c.yml:5:", "services.web.health_check.healthy_threshold", "alias", NULL);
}

/* ---- value errors ---- */

static void test_err_missing_listen(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web:\n"
             "    protocol: http\n",
             "c.yml:2: services.web.listen: missing", NULL);
}

static void test_err_bad_listen(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1\n", "c.yml:3:", "services.web.listen",
             "expected an address", "got '127.0.0.1'", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:99999\n", "c.yml:3:", "services.web.listen",
             NULL);
    load_err("services:\n  web:\n    listen:\n", "c.yml:3:", "services.web.listen",
             "got an empty value", NULL);
}

static void test_err_bad_target(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web:\n"
             "    listen: 127.0.0.1:1\n"
             "    targets:\n"
             "      - 127.0.0.1:2\n"
             "      - example.com:80\n",
             "c.yml:6:", "services.web.targets[1]", "'example.com:80'", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, targets: 127.0.0.1:2}\n",
             "c.yml:2:", "services.web.targets", "expected a list", NULL);
}

static void test_err_bad_duration(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web:\n"
             "    listen: 127.0.0.1:8080\n"
             "    health_check:\n"
             "      path: /healthz\n"
             "      interval: 5 parsecs\n",
             "c.yml:6: services.web.health_check.interval: expected a duration like 500ms",
             "got '5 parsecs'", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, drain_timeout: -1s}\n",
             "c.yml:2:", "services.web.drain_timeout", "'-1s'", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, health_check: {timeout: 0s}}\n",
             "services.web.health_check.timeout", "at least 1ms", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, deploy_timeout: 36501d}\n",
             "services.web.deploy_timeout", "100 years", NULL);
}

static void test_err_list_where_map(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    health_check: [a, b]\n",
             "c.yml:4:", "services.web.health_check: expected a map, got a list", NULL);
    load_err("services: [web]\n", "c.yml:1:", "services: expected a map", NULL);
    load_err("admin: yes\n", "c.yml:1:", "admin: expected a map, got 'yes'", NULL);
}

static void test_err_string_where_number(void **state)
{
    (void)state;
    load_err("workers: many\n", "c.yml:1: workers: expected an integer from 1 to 256", "got 'many'",
             NULL);
}

static void test_err_negative_number(void **state)
{
    (void)state;
    load_err("workers: -1\n", "c.yml:1: workers:", "got '-1'", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, limits: {max_headers: -5}}\n",
             "services.web.limits.max_headers", "'-5'", NULL);
}

static void test_err_number_with_junk(void **state)
{
    (void)state;
    load_err("workers: 2x\n", "c.yml:1: workers:", "got '2x'", NULL);
    load_err("workers: 2.0\n", "workers", NULL);
    load_err("workers: 0x2\n", "workers", NULL);
    load_err("services:\n  web: {listen: 127.0.0.1:1, limits: {max_body_bytes: 1MB}}\n",
             "services.web.limits.max_body_bytes", "'1MB'", NULL);
}

static void test_err_workers_range(void **state)
{
    (void)state;
    load_err("workers: 0\n", "c.yml:1: workers:", "got '0'", NULL);
    load_err("workers: 257\n", "c.yml:1: workers:", "got '257'", NULL);
    load_err("workers: 99999999999999999999999\n", "c.yml:1: workers:", NULL);
}

static void test_err_instances_zero(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web:\n"
             "    listen: 127.0.0.1:1\n"
             "    run:\n"
             "      command: [./app]\n"
             "      instances: 0\n",
             "c.yml:6: services.web.run.instances:", "got '0'", NULL);
}

static void test_err_port_range(void **state)
{
    static const char *const bad[] = {"20999-20000", "0-10", "1-70000", "-",    "10-",
                                      "20000",       "a-b",  "",        "1-2-3"};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml),
                 "services:\n  web:\n    listen: 127.0.0.1:1\n"
                 "    run: {command: [x], port_range: \"%s\"}\n",
                 bad[i]);
        load_err(yaml, "c.yml:4:", "services.web.run.port_range", "expected a port range", NULL);
    }
}

static void test_err_run_command(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    run: {command: []}\n",
             "c.yml:4:", "services.web.run.command", "non-empty list", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    run: {instances: 2}\n",
             "c.yml:4:", "services.web.run.command: missing", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    run: {command: ./app}\n",
             "services.web.run.command", "got './app'", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    run: {command: [a, {b: c}]}\n",
             "services.web.run.command[1]", "got a map", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    run: {command: [a], env: {1BAD: x}}\n",
             "services.web.run.env", "'1BAD'", NULL);
}

static void test_err_sticky(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    sticky: {cookie: a, header: B}\n",
             "c.yml:4:", "services.web.sticky", "exactly one", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    sticky: {}\n",
             "c.yml:4:", "services.web.sticky", "exactly one", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    sticky: {header: \"X User\"}\n",
             "services.web.sticky.header", NULL);
    load_err("services:\n  db:\n    listen: 127.0.0.1:1\n    protocol: tcp\n"
             "    sticky: {cookie: id}\n",
             "c.yml:5:", "services.db.sticky", "protocol tcp", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    sticky: {source: yes}\n",
             "c.yml:4:", "services.web.sticky.source", "true or false", "yes", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    sticky: {source: 1}\n",
             "services.web.sticky.source", "true or false", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    sticky: {source: true, cookie: a}\n",
             "c.yml:4:", "services.web.sticky", "exactly one", "several", NULL);
}

static void test_sticky_source(void **state)
{
    (void)state;
    struct config *cfg = load_ok("services:\n  web:\n    listen: 127.0.0.1:1\n"
                                 "    sticky: {source: true}\n");
    assert_int_equal(cfg->services[0].sticky.kind, CONFIG_STICKY_SOURCE);
    assert_null(cfg->services[0].sticky.name);
    config_free(cfg);
    cfg = load_ok("services:\n  web:\n    listen: 127.0.0.1:1\n    sticky: {source: false}\n");
    assert_int_equal(cfg->services[0].sticky.kind, CONFIG_STICKY_NONE);
    config_free(cfg);
    /* TCP services can be sticky by source: a stream has an address. */
    cfg = load_ok("services:\n  db:\n    listen: 127.0.0.1:1\n    protocol: tcp\n"
                  "    sticky: {source: true}\n");
    assert_int_equal(cfg->services[0].sticky.kind, CONFIG_STICKY_SOURCE);
    config_free(cfg);
}

static void test_client_address_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok("services:\n"
                                 "  web:\n"
                                 "    listen: 127.0.0.1:8080\n"
                                 "    trusted_proxies: [10.0.0.0/8, \"::1/128\", 192.168.1.7,\n"
                                 "                      \"::ffff:172.16.0.0/108\"]\n"
                                 "    proxy_protocol: true\n"
                                 "  api:\n"
                                 "    listen: 127.0.0.1:8081\n"
                                 "    trusted_proxies:\n"
                                 "      - 2001:db8::/32\n"
                                 "    proxy_protocol: false\n"
                                 "  db:\n"
                                 "    listen: 127.0.0.1:5432\n"
                                 "    protocol: tcp\n"
                                 "    trusted_proxies: [10.1.0.0/16]\n"
                                 "    proxy_protocol: true\n"
                                 "  plain:\n"
                                 "    listen: 127.0.0.1:8082\n"
                                 "    trusted_proxies: []\n");
    const struct config_service *web = config_service_find(cfg, "web");
    assert_int_equal(web->ntrusted_proxies, 4);
    assert_string_equal(web->trusted_proxies[0], "10.0.0.0/8");
    assert_string_equal(web->trusted_proxies[1], "::1/128");
    assert_string_equal(web->trusted_proxies[3], "::ffff:172.16.0.0/108");
    assert_null(web->trusted_proxies[4]);
    assert_true(web->proxy_protocol);
    const struct config_service *api = config_service_find(cfg, "api");
    assert_int_equal(api->ntrusted_proxies, 1);
    assert_false(api->proxy_protocol);
    assert_true(config_service_find(cfg, "db")->proxy_protocol);
    const struct config_service *plain = config_service_find(cfg, "plain");
    assert_int_equal(plain->ntrusted_proxies, 0);
    assert_non_null(plain->trusted_proxies);
    assert_null(plain->trusted_proxies[0]);
    config_free(cfg);

    /* Absent: nobody is trusted, no PROXY header expected. */
    cfg = load_ok(minimal_yaml);
    assert_int_equal(cfg->services[0].ntrusted_proxies, 0);
    assert_non_null(cfg->services[0].trusted_proxies);
    assert_false(cfg->services[0].proxy_protocol);
    config_free(cfg);
}

static void test_err_client_address_keys(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
             "c.yml:4:", "services.web.trusted_proxies[1]", "an address or CIDR",
             "got '10.0.0.0/33'", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    trusted_proxies:\n      - 10.0.0.0/8\n      - lb.example.com\n",
             "c.yml:6:", "services.web.trusted_proxies[1]", "got 'lb.example.com'", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    trusted_proxies: [\"10.0.0.0/08\"]\n",
             "services.web.trusted_proxies[0]", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: [\"\"]\n",
             "services.web.trusted_proxies[0]", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: 10.0.0.0/8\n",
             "c.yml:4:", "services.web.trusted_proxies", "a list", "got '10.0.0.0/8'", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    trusted_proxies: [10.0.0.0/8, ::1, 10.0.0.0/8]\n",
             "services.web.trusted_proxies[2]", "each range listed once", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    proxy_protocol: true\n",
             "c.yml:4:", "services.web.proxy_protocol", "needs trusted_proxies", "got none", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: []\n"
             "    proxy_protocol: true\n",
             "c.yml:5:", "services.web.proxy_protocol", "needs trusted_proxies", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: [::1]\n"
             "    proxy_protocol: yes\n",
             "c.yml:5:", "services.web.proxy_protocol", "expected true or false", "got 'yes'",
             NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: [::1]\n"
             "    proxy_protocol: 1\n",
             "services.web.proxy_protocol", "true or false", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    trusted_proxies: [::1]\n"
             "    proxy_protocol: [true]\n",
             "services.web.proxy_protocol", "true or false", "got a list", NULL);
    load_err("services:\n  db:\n    listen: 127.0.0.1:1\n    protocol: tcp\n"
             "    trusted_proxies: [10.0.0.0/8]\n",
             "c.yml:5:", "services.db.trusted_proxies", "protocol tcp",
             "expected proxy_protocol: true", NULL);
    /* The pilot's source cohort reads ranges the same way. */
    plan_err("      - pilot: {source: \"10.0.0.0/08\", duration: 1m}\n", "source", NULL);
}

static void test_err_protocol(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    protocol: udp\n",
             "c.yml:4: services.web.protocol: expected http or tcp, got 'udp'", NULL);
}

static void test_err_health_path(void **state)
{
    (void)state;
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n    health_check: {path: healthz}\n",
             "c.yml:4:", "services.web.health_check.path", "starting with /", NULL);
    load_err("services:\n  web:\n    listen: 127.0.0.1:1\n"
             "    health_check: {healthy_threshold: 0}\n",
             "services.web.health_check.healthy_threshold", NULL);
}

static void test_err_admin_tokens_required(void **state)
{
    (void)state;
    load_err("workers: 1\nadmin:\n  listen: 127.0.0.1:9900\n",
             "c.yml:2: admin.tokens_file: missing", NULL);
}

static void test_err_service_name(void **state)
{
    (void)state;
    load_err("services:\n  \"we b\": {listen: 127.0.0.1:1}\n", "c.yml:2:", "services", "'we b'",
             NULL);
    load_err("services:\n"
             "  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:\n"
             "    listen: 127.0.0.1:1\n",
             "c.yml:2:", "1 to 64", NULL);
    load_err("plans:\n  \"a/b\": {steps: [weight: 1]}\n", "c.yml:2:", "plans", "'a/b'", NULL);
}

static void test_err_duplicate_listen(void **state)
{
    (void)state;
    load_err("services:\n"
             "  a: {listen: 127.0.0.1:8080}\n"
             "  b: {listen: 127.0.0.1:8080}\n",
             "c.yml:3:", "services.b.listen", "services.a.listen", NULL);
    load_err("services:\n"
             "  a: {listen: 127.0.0.1:8080}\n"
             "  b: {listen: 127.0.0.1:8081, preview_listen: localhost:8080}\n",
             "c.yml:3:", "services.b.preview_listen", NULL);
    load_err("services:\n"
             "  a: {listen: 0.0.0.0:8080}\n"
             "  b: {listen: 127.0.0.1:8080}\n",
             "services.b.listen", NULL);
    load_err("admin: {listen: 127.0.0.1:9900, tokens_file: t}\n"
             "services:\n"
             "  a: {listen: 127.0.0.1:9900}\n",
             "c.yml:3:", "services.a.listen", "admin.listen", NULL);
    load_err("services:\n"
             "  a: {listen: 127.0.0.1:8080, preview_listen: 127.0.0.1:8080}\n",
             "services.a.preview_listen", NULL);
}

static void test_different_ports_ok(void **state)
{
    struct config *cfg = load_ok("services:\n"
                                 "  a: {listen: 127.0.0.1:8080, preview_listen: 127.0.0.1:8090}\n"
                                 "  b: {listen: 127.0.0.2:8080}\n");
    (void)state;
    assert_int_equal(cfg->nservices, 2);
    config_free(cfg);
}

/* ---- plans ---- */

static void test_err_plan_missing(void **state)
{
    (void)state;
    load_err("services:\n"
             "  web:\n"
             "    listen: 127.0.0.1:1\n"
             "    plan: canary\n",
             "c.yml:4: services.web.plan:", "got 'canary'", NULL);
}

static void test_err_unknown_step(void **state)
{
    (void)state;
    plan_err("      - weight: 10\n"
             "      - deploy: everything\n",
             "c.yml:7: plans.p.steps[1]:", "step kind", "got 'deploy'", NULL);
}

static void test_err_step_shape(void **state)
{
    (void)state;
    plan_err("      - weight\n", "c.yml:6: plans.p.steps[0]:", NULL);
    plan_err("      - {weight: 1, pause: 1s}\n", "c.yml:6: plans.p.steps[0]:", NULL);
    load_err("plans:\n  p:\n    steps: []\n", "c.yml:3: plans.p.steps:", "non-empty", NULL);
    load_err("plans:\n  p:\n    analysis: {}\n", "c.yml:2: plans.p.steps: missing", NULL);
}

static void test_err_weight_101(void **state)
{
    (void)state;
    plan_err("      - weight: 101\n",
             "c.yml:6: plans.p.steps[0].weight: expected an integer from 0 to 100, got '101'",
             NULL);
}

static void test_err_weight_negative(void **state)
{
    (void)state;
    plan_err("      - weight: -1\n", "c.yml:6: plans.p.steps[0].weight:", "got '-1'", NULL);
    plan_err("      - weight: 10%\n", "plans.p.steps[0].weight", "'10%'", NULL);
}

static void test_err_negative_duration(void **state)
{
    (void)state;
    plan_err("      - pause: -30s\n", "c.yml:6: plans.p.steps[0].pause:", "'-30s'", NULL);
    plan_err("      - pilot: {header: \"X-A: b\", duration: -1m}\n",
             "c.yml:6: plans.p.steps[0].pilot.duration:", "'-1m'", NULL);
    plan_err("      - test: {command: [x], timeout: 1.5ms}\n", "plans.p.steps[0].test.timeout",
             NULL);
}

static void test_err_approval_count(void **state)
{
    (void)state;
    plan_err("      - approval: {approvers: [lead, ops], count: 3}\n",
             "c.yml:6: plans.p.steps[0].approval.count: expected an integer from 1 to 2", "got '3'",
             NULL);
    plan_err("      - approval: {approvers: [lead], count: 0}\n", "approval.count", NULL);
    plan_err("      - approval: {approvers: []}\n", "plans.p.steps[0].approval.approvers", NULL);
    plan_err("      - approval: {count: 1}\n", "plans.p.steps[0].approval.approvers: missing",
             NULL);
    plan_err("      - approval: {approvers: [a, a]}\n", "approvers[1]", "twice", NULL);
}

static void test_err_pilot(void **state)
{
    (void)state;
    plan_err("      - pilot: {duration: 1m}\n", "c.yml:6:", "plans.p.steps[0].pilot", "missing",
             NULL);
    plan_err("      - pilot: {header: \"X-A: b\", cookie: \"a=b\", duration: 1m}\n",
             "plans.p.steps[0].pilot", "exactly one", NULL);
    plan_err("      - pilot: {header: \"X-A: b\"}\n", "plans.p.steps[0].pilot.duration: missing",
             NULL);
    plan_err("      - pilot: {header: \"no colon\", duration: 1m}\n",
             "plans.p.steps[0].pilot.header", "'no colon'", NULL);
    plan_err("      - pilot: {cookie: \"novalue=\", duration: 1m}\n",
             "plans.p.steps[0].pilot.cookie", NULL);
    plan_err("      - pilot: {source: 10.0.0.0/33, duration: 1m}\n",
             "plans.p.steps[0].pilot.source", NULL);
    plan_err("      - pilot: {header: \"X-A: b\", duration: 0s}\n",
             "plans.p.steps[0].pilot.duration", NULL);
}

static void test_err_analysis(void **state)
{
    (void)state;
    plan_err("      - weight: 1\n    analysis: {max_error_rate: 1.5}\n",
             "c.yml:7:", "plans.p.analysis.max_error_rate", "'1.5'", NULL);
    plan_err("      - weight: 1\n    analysis: {confidence: 1}\n", "plans.p.analysis.confidence",
             NULL);
    plan_err("      - weight: 1\n    analysis: {max_p99_latency_ratio: 0}\n",
             "plans.p.analysis.max_p99_latency_ratio", NULL);
    /* A baseline only changes what the ratio gate compares with. */
    plan_err("      - weight: 1\n    analysis: {max_error_rate: 0.1, baseline: true}\n",
             "c.yml:7:", "plans.p.analysis.baseline", "max_p99_latency_ratio", NULL);
    plan_err("      - weight: 1\n    analysis: {max_p99_latency_ratio: 2, baseline: 1}\n",
             "plans.p.analysis.baseline", NULL);
    plan_err("      - weight: 1\n    analysis: {max_p99_latency_ms: nan}\n",
             "plans.p.analysis.max_p99_latency_ms", NULL);
    plan_err("      - weight: 1\n    analysis: {min_requests: lots}\n",
             "plans.p.analysis.min_requests", NULL);
}

static void test_err_on_failure(void **state)
{
    (void)state;
    plan_err("      - weight: 1\n    on_failure: proceed\n",
             "c.yml:7: plans.p.on_failure: expected rollback or pause, got 'proceed'", NULL);
    plan_err("      - weight: 1\n    on_inconclusive: ignore\n", "plans.p.on_inconclusive", NULL);
}

/* ---- files and paths ---- */

static char tmpdir[64];

static void write_file(const char *path, const char *text);

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cutover-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(tokens_path, sizeof(tokens_path), "%s/tokens.yml", tmpdir);
    write_file(tokens_path, "tokens:\n"
                            "  ops: {role: operator, token: ops-0123456789abcdef}\n"
                            "  watch: {role: viewer, token: view-0123456789abcdef}\n");
    if (chmod(tokens_path, 0600) != 0)
        return -1;
    const char *at = strstr(full_yaml_tmpl, "@TOKENS@");
    snprintf(full_yaml, sizeof(full_yaml), "%.*s%s%s", (int)(at - full_yaml_tmpl), full_yaml_tmpl,
             tokens_path, at + strlen("@TOKENS@"));
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* A webhook's secret_file: "whsec_" + base64 is the decoded key (padding not counted), other
 * text is the key without its newline; a file others may read is refused. Also format, events
 * and notify.max_age. */
static void test_webhook_keys_formats_events(void **state)
{
    char whsec[128], plain[128], loose[128], yaml[1024];
    struct config *cfg;
    (void)state;
    snprintf(whsec, sizeof(whsec), "%s/whsec.key", tmpdir);
    snprintf(plain, sizeof(plain), "%s/plain.key", tmpdir);
    snprintf(loose, sizeof(loose), "%s/loose.key", tmpdir);
    /* 32 bytes 0x00..0x1f: 44 characters of base64, one '=' of padding. */
    write_file(whsec, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
    write_file(plain, "s3cret\n");
    write_file(loose, "s3cret\n");
    assert_int_equal(chmod(whsec, 0600), 0);
    assert_int_equal(chmod(plain, 0400), 0);
    assert_int_equal(chmod(loose, 0640), 0);

    snprintf(yaml, sizeof(yaml),
             "services:\n  web: {listen: 127.0.0.1:8080}\n"
             "notify:\n  max_age: 1h\n  webhooks:\n"
             "    - {url: \"http://a/\", secret_file: %s, format: cloudevents}\n"
             "    - {url: \"http://b/\", secret_file: %s, format: slack, events: [switched]}\n"
             "    - {url: \"http://c/\"}\n",
             whsec, plain);
    cfg = load_ok(yaml);
    assert_int_equal(cfg->notify_max_age_ms, 3600 * 1000);
    assert_int_equal(cfg->nwebhooks, 3);
    assert_int_equal(cfg->webhooks[0].format, CONFIG_WEBHOOK_CLOUDEVENTS);
    assert_int_equal(cfg->webhooks[0].keylen, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(cfg->webhooks[0].key[i], i);
    assert_int_equal(cfg->webhooks[1].format, CONFIG_WEBHOOK_SLACK);
    assert_int_equal(cfg->webhooks[1].keylen, 6);
    assert_memory_equal(cfg->webhooks[1].key, "s3cret", 6);
    assert_int_equal(cfg->webhooks[1].nevents, 1);
    assert_string_equal(cfg->webhooks[1].events[0], "switched");
    assert_int_equal(cfg->webhooks[2].format, CONFIG_WEBHOOK_JSON);
    assert_null(cfg->webhooks[2].key);
    assert_null(cfg->webhooks[2].events);
    config_free(cfg);

    cfg = load_ok("notify: {webhooks: [{url: \"http://a/\"}]}\n");
    assert_int_equal(cfg->notify_max_age_ms, 24ull * 3600 * 1000);
    config_free(cfg);

    snprintf(yaml, sizeof(yaml),
             "notify:\n  webhooks:\n    - {url: \"http://a/\", secret_file: %s}\n", loose);
    load_err(yaml, "c.yml:3: notify.webhooks[0].secret_file:", "(mode 0640)", "expected mode 0600",
             NULL);
    load_err("notify:\n  webhooks:\n    - {url: \"http://a/\", format: xml}\n",
             "c.yml:3: notify.webhooks[0].format: expected json, slack or cloudevents, got 'xml'",
             NULL);
    load_err("notify:\n  webhooks:\n    - {url: \"http://a/\", events: [switched, nope]}\n",
             "c.yml:3: notify.webhooks[0].events: expected event types", "got 'nope'", NULL);
    load_err("notify:\n  max_age: 10ms\n", "c.yml:2: notify.max_age", NULL);
}

static void test_relative_paths_from_file(void **state)
{
    char path[128], want[160], err[256];
    struct config *cfg = NULL;
    (void)state;
    snprintf(path, sizeof(path), "%s/cutover.yml", tmpdir);
    write_file(path, "admin: {listen: 127.0.0.1:9900, tokens_file: ./tokens.yml}\n"
                     "services:\n"
                     "  web:\n"
                     "    listen: 127.0.0.1:8080\n"
                     "    run: {command: [./app], cwd: app/dir}\n");
    assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->path, path);
    snprintf(want, sizeof(want), "%s/var", tmpdir);
    assert_string_equal(cfg->state_dir, want);
    snprintf(want, sizeof(want), "%s/tokens.yml", tmpdir);
    assert_string_equal(cfg->admin_tokens_file, want);
    snprintf(want, sizeof(want), "%s/app/dir", tmpdir);
    assert_string_equal(cfg->services[0].run.cwd, want);
    /* The command is not a path of the config: it stays as written. */
    assert_string_equal(cfg->services[0].run.command[0], "./app");
    config_free(cfg);
}

static void test_absolute_state_dir_kept(void **state)
{
    char path[128], err[256];
    struct config *cfg = NULL;
    (void)state;
    snprintf(path, sizeof(path), "%s/abs.yml", tmpdir);
    write_file(path, "state_dir: /var/lib/cutover\n");
    assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->state_dir, "/var/lib/cutover");
    config_free(cfg);
}

static void test_relative_paths_from_string(void **state)
{
    struct config *cfg = load_ok("state_dir: data\n");
    (void)state;
    assert_string_equal(cfg->state_dir, "data");
    config_free(cfg);
    /* The tokens file is looked for where it was written, not next to a config file. */
    load_err("state_dir: data\nadmin: {listen: 127.0.0.1:9900, tokens_file: ./t.yml}\n",
             "c.yml:2: admin.tokens_file: cannot read ./t.yml", NULL);
}

/* Writes text as the tokens file tk.yml with mode, and loads a config naming it, expecting
 * -EINVAL and a message with every string of the NULL-terminated list. */
static void tokens_err(const char *text, mode_t mode, ...)
{
    char path[128], yaml[256];
    va_list ap;
    snprintf(path, sizeof(path), "%s/tk.yml", tmpdir);
    write_file(path, text);
    assert_int_equal(chmod(path, mode), 0);
    snprintf(yaml, sizeof(yaml), "admin:\n  listen: 127.0.0.1:9900\n  tokens_file: %s\n", path);
    struct config *cfg = (struct config *)1;
    char err[512] = "";
    int rc = config_load_string(yaml, NAME, &cfg, err, sizeof(err));
    if (rc != -EINVAL)
        fail_msg("want -EINVAL, got %d (%s)", rc, err);
    assert_null(cfg);
    va_start(ap, mode);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;)
        if (strstr(err, want) == NULL)
            fail_msg("message '%s' lacks '%s'", err, want);
    va_end(ap);
}

static void test_webhooks(void **state)
{
    (void)state;
    struct config *cfg = load_ok("notify:\n"
                                 "  webhooks:\n"
                                 "    - url: https://hooks.example.com/cutover?k=1\n"
                                 "    - {url: \"http://127.0.0.1:9/x\", services: [web]}\n"
                                 "services:\n"
                                 "  web: {listen: 127.0.0.1:8080}\n");
    assert_int_equal(cfg->nwebhooks, 2);
    assert_string_equal(cfg->webhooks[0].url, "https://hooks.example.com/cutover?k=1");
    assert_null(cfg->webhooks[0].services);
    assert_int_equal(cfg->webhooks[1].nservices, 1);
    assert_string_equal(cfg->webhooks[1].services[0], "web");
    config_free(cfg);
    load_err("notify:\n  webhooks:\n    - url: http://\n", "c.yml:3: notify.webhooks[0].url", NULL);
    load_err("notify:\n  webhooks:\n    - {url: \"http://x/\", services: []}\n",
             "notify.webhooks[0].services", NULL);
    load_err("notify:\n  webhooks:\n    - {url: \"http://x/\", services: [api]}\n",
             "c.yml:3: notify.webhooks[0].services", "'api'", NULL);
}

static void test_tokens_file_errors(void **state)
{
    static const char good[] = "tokens:\n  a: {role: admin, token: aaaa-0123456789abcdef}\n";
    (void)state;
    tokens_err(good, 0644, "c.yml:3: admin.tokens_file:", "mode 0644", "chmod 600", NULL);
    tokens_err(good, 0620, "mode 0620", NULL);
    tokens_err("tokens:\n  a: {role: admin, token: short}\n", 0600, "tk.yml:2: tokens.a.token",
               "16 to 256", NULL);
    tokens_err("tokens:\n  a: {role: admin, token: \"has space 0123456789\"}\n", 0600,
               "tk.yml:2: tokens.a.token", NULL);
    tokens_err("tokens:\n  a: {role: root, token: aaaa-0123456789abcdef}\n", 0600,
               "tk.yml:2: tokens.a.role: expected viewer, operator or admin, got 'root'", NULL);
    tokens_err("tokens:\n  a: {token: aaaa-0123456789abcdef}\n", 0600, "tokens.a.role: missing",
               NULL);
    tokens_err("tokens:\n  a: {role: viewer}\n", 0600, "tokens.a.token: missing", NULL);
    tokens_err("tokens:\n  a: {role: viewer, token: aaaa-0123456789abcdef}\n"
               "  b: {role: admin, token: aaaa-0123456789abcdef}\n",
               0600, "tk.yml:3: tokens.b.token", "tokens.a", NULL);
    tokens_err("tokens: {}\n", 0600, "tk.yml:1: tokens: expected a map of at least one", NULL);
    tokens_err("- a\n", 0600, "tk.yml:1: top level", NULL);
    tokens_err("tokens:\n  \"a b\": {role: viewer, token: aaaa-0123456789abcdef}\n", 0600,
               "tk.yml:2: tokens", "'a b'", NULL);
    tokens_err("tokens: [\n", 0600, "tk.yml:", "YAML syntax error", NULL);
}

static void test_unreadable_file(void **state)
{
    char path[128], err[256];
    struct config *cfg = (struct config *)1;
    (void)state;
    snprintf(path, sizeof(path), "%s/missing.yml", tmpdir);
    assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
    assert_null(cfg);
    assert_non_null(strstr(err, "missing.yml: cannot read: No such file or directory"));
    assert_int_equal(config_load(tmpdir, &cfg, err, sizeof(err)), -EISDIR);
    assert_non_null(strstr(err, "cannot read"));
}

static void test_file_errors_name_the_file(void **state)
{
    char path[128], want[160], err[256];
    struct config *cfg = NULL;
    (void)state;
    snprintf(path, sizeof(path), "%s/bad.yml", tmpdir);
    write_file(path, "workers: 2\nservices:\n  web: {listen: [oops\n");
    assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
    assert_null(cfg);
    snprintf(want, sizeof(want), "%s:", path);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "YAML syntax error"));

    write_file(path, "workers: 2\nservices:\n  web: {listen: nowhere}\n");
    assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: services.web.listen", path);
    assert_non_null(strstr(err, want));
}

/* libfyaml must not print anything by itself: the caller owns the reporting. */
static void test_syntax_error_is_silent(void **state)
{
    char path[128], err[256], buf[64];
    struct config *cfg = NULL;
    int saved, fd;
    ssize_t n;
    (void)state;
    snprintf(path, sizeof(path), "%s/stderr.txt", tmpdir);
    fflush(stderr);
    saved = dup(2);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    assert_int_equal(config_load_string("a: [1, 2\n", NAME, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_load_string("", NAME, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(config_load_string("a: 1\na: 2\n", NAME, &cfg, err, sizeof(err)), -EINVAL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(n, 0);
}

/* ---- API edges ---- */

static void test_small_error_buffer(void **state)
{
    char err[8];
    struct config *cfg = NULL;
    (void)state;
    memset(err, 'x', sizeof(err));
    assert_int_equal(config_load_string("workers: many\n", NAME, &cfg, err, sizeof(err)), -EINVAL);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_int_equal(config_load_string("workers: many\n", NAME, &cfg, NULL, 0), -EINVAL);
    assert_null(cfg);
}

static void test_free_null(void **state)
{
    (void)state;
    config_free(NULL);
    assert_null(config_plan_find(NULL, "p"));
}

static void test_long_value_is_shortened(void **state)
{
    char yaml[1200], err[512];
    struct config *cfg = NULL;
    (void)state;
    char digits[1001];
    memset(digits, '7', 1000);
    digits[1000] = '\0';
    snprintf(yaml, sizeof(yaml), "workers: %s\n", digits);
    assert_int_equal(config_load_string(yaml, NAME, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "...'"));
    assert_true(strlen(err) < 200);
}

/* Every prefix of a valid file either loads or fails with one located message; under ASan
   this also shows that no error path leaks or reads out of bounds. */
static void test_every_truncation(void **state)
{
    static char buf[sizeof(full_yaml)];
    size_t len = strlen(full_yaml);
    (void)state;
    for (size_t n = 0; n <= len; n++) {
        struct config *cfg = NULL;
        char err[512] = "";
        memcpy(buf, full_yaml, n);
        buf[n] = '\0';
        int rc = config_load_string(buf, NAME, &cfg, err, sizeof(err));
        if (rc == 0) {
            assert_non_null(cfg);
            config_free(cfg);
        } else if (rc != -EINVAL || strncmp(err, NAME ":", strlen(NAME) + 1) != 0) {
            fail_msg("prefix %zu: rc=%d err='%s'", n, rc, err);
        }
    }
}

/* One wording of a step for events, status, check and the written plan. */
static void test_step_describe(void **state)
{
    (void)state;
    struct config *cfg = load_ok("state_dir: /tmp\n"
                                 "plans:\n"
                                 "  p:\n"
                                 "    steps:\n"
                                 "      - test: {command: [./smoke.sh, --fast], timeout: 1m}\n"
                                 "      - pilot: {header: \"X-Cohort: pilot\", duration: 60s}\n"
                                 "      - pilot: {cookie: \"beta=1\", duration: 1s}\n"
                                 "      - pilot: {source: 10.0.0.0/8, duration: 2m}\n"
                                 "      - weight: 10\n"
                                 "      - pause: {}\n"
                                 "      - pause: 30s\n"
                                 "      - approval: {approvers: [lead, alice], count: 1}\n");
    const struct config_plan *p = config_plan_find(cfg, "p");
    static const char *const want[] = {
        "test ./smoke.sh --fast (timeout 1m)",
        "pilot header X-Cohort: pilot for 1m",
        "pilot cookie beta=1 for 1s",
        "pilot source 10.0.0.0/8 for 2m",
        "weight 10%",
        "pause until promoted",
        "pause 30s",
        "approval by 1 of lead, alice",
    };
    char buf[128];
    assert_int_equal(p->nsteps, 8);
    for (size_t i = 0; i < p->nsteps; i++)
        assert_string_equal(config_step_describe(&p->steps[i], buf, sizeof(buf)), want[i]);
    char tiny[8];
    assert_string_equal(config_step_describe(&p->steps[0], tiny, sizeof(tiny)), "test ./");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config_top),
        cmocka_unit_test(test_step_describe),
        cmocka_unit_test(test_tokens_file_errors),
        cmocka_unit_test(test_webhooks),
        cmocka_unit_test(test_full_config_service),
        cmocka_unit_test(test_full_config_run),
        cmocka_unit_test(test_full_config_plan),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_io_coalesce),
        cmocka_unit_test(test_run_defaults),
        cmocka_unit_test(test_strategy),
        cmocka_unit_test(test_strategy_errors),
        cmocka_unit_test(test_flow_and_block_styles),
        cmocka_unit_test(test_targets_empty_or_absent),
        cmocka_unit_test(test_limits_plain_and_sizes),
        cmocka_unit_test(test_stop_signals),
        cmocka_unit_test(test_pause_forms),
        cmocka_unit_test(test_pilot_ipv6_source_and_test_default_timeout),
        cmocka_unit_test(test_mirror_and_load_steps),
        cmocka_unit_test(test_names_allowed),
        cmocka_unit_test(test_unknown_keys_warn),
        cmocka_unit_test(test_webhook_keys_formats_events),
        cmocka_unit_test(test_err_empty),
        cmocka_unit_test(test_err_not_text),
        cmocka_unit_test(test_err_health_path_injection),
        cmocka_unit_test(test_err_state_dir_not_a_directory),
        cmocka_unit_test(test_err_top_level_not_map),
        cmocka_unit_test(test_err_syntax),
        cmocka_unit_test(test_err_duplicate_key),
        cmocka_unit_test(test_err_two_documents),
        cmocka_unit_test(test_err_alias),
        cmocka_unit_test(test_err_missing_listen),
        cmocka_unit_test(test_err_bad_listen),
        cmocka_unit_test(test_err_bad_target),
        cmocka_unit_test(test_err_bad_duration),
        cmocka_unit_test(test_err_list_where_map),
        cmocka_unit_test(test_err_string_where_number),
        cmocka_unit_test(test_err_negative_number),
        cmocka_unit_test(test_err_number_with_junk),
        cmocka_unit_test(test_err_workers_range),
        cmocka_unit_test(test_err_instances_zero),
        cmocka_unit_test(test_err_port_range),
        cmocka_unit_test(test_err_run_command),
        cmocka_unit_test(test_err_sticky),
        cmocka_unit_test(test_sticky_source),
        cmocka_unit_test(test_err_protocol),
        cmocka_unit_test(test_err_health_path),
        cmocka_unit_test(test_err_admin_tokens_required),
        cmocka_unit_test(test_err_service_name),
        cmocka_unit_test(test_err_duplicate_listen),
        cmocka_unit_test(test_different_ports_ok),
        cmocka_unit_test(test_err_plan_missing),
        cmocka_unit_test(test_err_unknown_step),
        cmocka_unit_test(test_err_step_shape),
        cmocka_unit_test(test_err_weight_101),
        cmocka_unit_test(test_err_weight_negative),
        cmocka_unit_test(test_err_negative_duration),
        cmocka_unit_test(test_err_approval_count),
        cmocka_unit_test(test_err_pilot),
        cmocka_unit_test(test_err_analysis),
        cmocka_unit_test(test_err_on_failure),
        cmocka_unit_test(test_relative_paths_from_file),
        cmocka_unit_test(test_absolute_state_dir_kept),
        cmocka_unit_test(test_relative_paths_from_string),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_file_errors_name_the_file),
        cmocka_unit_test(test_syntax_error_is_silent),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_client_address_keys),
        cmocka_unit_test(test_err_client_address_keys),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_long_value_is_shortened),
        cmocka_unit_test(test_every_truncation),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
