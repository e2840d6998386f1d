/* Unit tests of the pure parts of the CLI (src/cli/cli_internal.h): argument parsing, exit-code
 * mapping, admin URL parsing, and the rendering of admin API JSON as text. No daemon, no
 * network. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "cli/cli_internal.h"

/* Parses a NULL-terminated list of words as if typed after "cutover". */
static int parse_words(struct cli_args *a, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;

    argv[argc++] = (char *)"cutover";
    va_start(ap, errlen);
    for (char *w = va_arg(ap, char *); w != NULL && argc < 31; w = va_arg(ap, char *))
        argv[argc++] = w;
    va_end(ap);
    argv[argc] = NULL;
    return cli_parse(argc, argv, a, err, errlen);
}

#define PARSE(a, err, ...) parse_words((a), (err), sizeof(err), __VA_ARGS__, (char *)NULL)

/* Renders with fn into a heap string the caller frees. */
static char *render(void (*fn)(FILE *, const json_t *), const char *json_text)
{
    json_error_t jerr;
    json_t *j = json_loads(json_text, 0, &jerr);
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    assert_non_null(j);
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    fn(f, j);
    fclose(f);
    json_decref(j);
    return buf;
}

static void test_parse_deploy_full(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "deploy", "--reason", "fix #12", "web", "--target",
                           "127.0.0.1:9002", "v2", "--target=[::1]:9003", "--plan=canary", "--wait",
                           "-c", "x.yml", "--json", "--admin", "unix:/tmp/s.sock"),
                     0);
    assert_int_equal(a.cmd, CLI_CMD_DEPLOY);
    assert_string_equal(a.service, "web");
    assert_string_equal(a.version, "v2");
    assert_int_equal(a.ntargets, 2);
    assert_string_equal(a.targets[0], "127.0.0.1:9002");
    assert_string_equal(a.targets[1], "[::1]:9003");
    assert_string_equal(a.plan, "canary");
    assert_string_equal(a.reason, "fix #12");
    assert_string_equal(a.config, "x.yml");
    assert_int_equal(a.config_given, 1);
    assert_string_equal(a.admin, "unix:/tmp/s.sock");
    assert_int_equal(a.wait, 1);
    assert_int_equal(a.json, 1);
    cli_args_done(&a);
}

/* hold, release, maintenance and deploy --hold (issue 17): what is checked before the daemon. */
static void test_parse_hold_and_maintenance(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "hold", "web"), 0);
    assert_int_equal(a.cmd, CLI_CMD_HOLD);
    assert_string_equal(a.service, "web");
    assert_int_equal(a.max_ms, 0); /* the daemon's default */
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "hold", "--max", "1m30s", "web"), 0);
    assert_int_equal(a.max_ms, 90000);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "hold", "web", "--max", "5parsecs"), -EINVAL);
    assert_non_null(strstr(err, "--max must be a duration"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "hold", "web", "--max", "0s"), -EINVAL);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "hold", "web", "--max", "61m"), -EINVAL);
    assert_non_null(strstr(err, "at most 1h"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "hold"), -EINVAL);
    assert_non_null(strstr(err, "missing SERVICE"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "release", "web", "--max", "1s"), -EINVAL);
    assert_non_null(strstr(err, "does not apply"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "maintenance", "web", "on", "--message", "back at 2"), 0);
    assert_int_equal(a.cmd, CLI_CMD_MAINTENANCE);
    assert_int_equal(a.on, 1);
    assert_string_equal(a.message, "back at 2");
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "maintenance", "web", "off"), 0);
    assert_int_equal(a.on, 0);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "maintenance", "web"), -EINVAL);
    assert_non_null(strstr(err, "missing on or off"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "maintenance", "web", "On"), -EINVAL);
    assert_non_null(strstr(err, "expected on or off"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "maintenance", "web", "off", "--message", "x"), -EINVAL);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--target", "127.0.0.1:9", "--hold"), 0);
    assert_int_equal(a.hold, 1);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "rollback", "web", "--hold"), -EINVAL);
    cli_args_done(&a);
}

/* status shows a hold and a maintenance, with who and since when; free text is made safe. */
static void test_render_hold_and_maintenance(void **state)
{
    (void)state;
    char *out = render(cli_render_status,
                       "{\"name\": \"web\", \"protocol\": \"http\", \"listen\": \"x:1\","
                       " \"live\": null, \"previous\": null, \"change\": null,"
                       " \"hold\": {\"since\": \"2026-12-06T10:00:00.000Z\", \"max_ms\": 20000,"
                       " \"actor\": \"alice\", \"change\": null},"
                       " \"maintenance\": {\"since\": \"2026-12-06T10:01:00.000Z\","
                       " \"message\": \"db\\u001b[2J\", \"actor\": \"bob\"}}");
    assert_non_null(strstr(out, "HELD:"));
    assert_non_null(strstr(out, "at most 20s (by alice)"));
    assert_non_null(strstr(out, "MAINTENANCE:"));
    assert_non_null(strstr(out, "(by bob)"));
    assert_null(strchr(out, 0x1b));
    free(out);
}

/* deploy's governance options and the plan command (issue 15). */
static void test_parse_governance(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--emergency", "--reason", "sev1",
                           "--ticket", "INC-42", "--risk", "high"),
                     0);
    assert_int_equal(a.emergency, 1);
    assert_string_equal(a.ticket, "INC-42");
    assert_string_equal(a.risk, "high");
    cli_args_done(&a);
    /* An emergency needs a reason; the risk is one of three; a ticket is a name. */
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--emergency"), -EINVAL);
    assert_non_null(strstr(err, "--reason"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--risk", "huge"), -EINVAL);
    assert_non_null(strstr(err, "low, medium or high"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--ticket", "a b"), -EINVAL);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "rollback", "web", "--emergency"), -EINVAL);
    cli_args_done(&a);
    /* plan: text by default, md and json on request; text is plan's only. */
    assert_int_equal(PARSE(&a, err, "plan", "web", "v2"), 0);
    assert_int_equal(a.cmd, CLI_CMD_PLAN);
    assert_string_equal(a.version, "v2");
    assert_int_equal(a.format_given, 0);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "plan", "web", "v2", "--plan", "canary", "--format", "text"),
                     0);
    assert_string_equal(a.plan, "canary");
    assert_string_equal(a.format, "text");
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "report", "3", "--format", "text"), -EINVAL);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "plan", "web"), -EINVAL);
    assert_non_null(strstr(err, "missing VERSION"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "plan", "web", "v2", "--target", "127.0.0.1:1"), -EINVAL);
    cli_args_done(&a);
}

static void test_parse_defaults_and_short_forms(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "status"), 0);
    assert_int_equal(a.cmd, CLI_CMD_STATUS);
    assert_null(a.service);
    assert_string_equal(a.config, CLI_DEFAULT_CONFIG);
    assert_int_equal(a.config_given, 0);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "check", "-cother.yml"), 0);
    assert_string_equal(a.config, "other.yml");
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "report", "7"), 0);
    assert_int_equal(a.change_id, 7);
    assert_string_equal(a.format, "md");
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "promote", "--all", "web"), 0);
    assert_int_equal(a.all, 1);
    assert_string_equal(a.service, "web");
    cli_args_done(&a);

    /* After "--" a word that looks like an option is a positional. */
    assert_int_equal(PARSE(&a, err, "rollback", "--", "-odd"), 0);
    assert_string_equal(a.service, "-odd");
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "history", "web", "--limit", "20"), 0);
    assert_int_equal(a.limit, 20);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "events", "web", "--json"), 0);
    assert_int_equal(a.cmd, CLI_CMD_EVENTS);
    assert_string_equal(a.service, "web");
    assert_int_equal(a.json, 1);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "events", "--plan", "x"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "watch", "web", "--until-done"), 0);
    assert_int_equal(a.cmd, CLI_CMD_WATCH);
    assert_string_equal(a.service, "web");
    assert_int_equal(a.until_done, 1);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "watch"), 0);
    assert_true(a.service == NULL && a.until_done == 0);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--until-done"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "approve", "12", "--as", "lead"), 0);
    assert_int_equal(a.change_id, 12);
    assert_string_equal(a.as, "lead");
    cli_args_done(&a);
}

static void test_parse_help_and_version(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "--version"), 0);
    assert_int_equal(a.cmd, CLI_CMD_VERSION);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "-h"), 0);
    assert_int_equal(a.cmd, CLI_CMD_HELP);
    assert_int_equal(a.help_topic, CLI_CMD_NONE);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "help", "deploy"), 0);
    assert_int_equal(a.help_topic, CLI_CMD_DEPLOY);
    cli_args_done(&a);

    /* --help wins over the missing arguments. */
    assert_int_equal(PARSE(&a, err, "deploy", "--help"), 0);
    assert_int_equal(a.cmd, CLI_CMD_DEPLOY);
    assert_int_equal(a.help, 1);
    cli_args_done(&a);

    char *argv[] = {(char *)"cutover", NULL};
    assert_int_equal(cli_parse(1, argv, &a, err, sizeof(err)), 0);
    assert_int_equal(a.cmd, CLI_CMD_NONE);
    cli_args_done(&a);
}

/* Each bad command line is rejected with a message naming what is wrong. */
static void test_parse_errors(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "deploy"), -EINVAL);
    assert_non_null(strstr(err, "missing SERVICE"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web"), -EINVAL);
    assert_non_null(strstr(err, "missing VERSION"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web", "v 2"), -EINVAL);
    assert_non_null(strstr(err, "VERSION 'v 2'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--target", "example.com"), -EINVAL);
    assert_non_null(strstr(err, "--target 'example.com'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--target", "127.0.0.1:0"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--target"), -EINVAL);
    assert_non_null(strstr(err, "needs a value"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "rollback"), -EINVAL);
    assert_non_null(strstr(err, "missing SERVICE"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "report", "3", "--format", "html"), -EINVAL);
    assert_non_null(strstr(err, "--format must be md or json"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "report", "three"), -EINVAL);
    assert_non_null(strstr(err, "CHANGE_ID"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "approve", "-1"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "approve"), -EINVAL);
    assert_non_null(strstr(err, "missing CHANGE_ID"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "status", "--frob"), -EINVAL);
    assert_non_null(strstr(err, "unknown option '--frob'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "status", "--wait"), -EINVAL);
    assert_non_null(strstr(err, "does not apply"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "status", "--json=yes"), -EINVAL);
    assert_non_null(strstr(err, "takes no value"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "status", "a", "b"), -EINVAL);
    assert_non_null(strstr(err, "unexpected argument 'b'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--plan", "a", "--plan", "b"), -EINVAL);
    assert_non_null(strstr(err, "given twice"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "history", "--limit", "0"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "frobnicate"), -EINVAL);
    assert_non_null(strstr(err, "unknown command 'frobnicate'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "-c", "x.yml", "status"), -EINVAL);
    assert_non_null(strstr(err, "command first"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "help", "nope"), -EINVAL);
    cli_args_done(&a);
}

static void test_exit_for_http(void **state)
{
    (void)state;
    assert_int_equal(cli_exit_for_http(200), 0);
    assert_int_equal(cli_exit_for_http(201), 0);
    assert_int_equal(cli_exit_for_http(400), 2);
    assert_int_equal(cli_exit_for_http(404), 2);
    assert_int_equal(cli_exit_for_http(405), 2);
    assert_int_equal(cli_exit_for_http(413), 2);
    assert_int_equal(cli_exit_for_http(401), 2);
    assert_int_equal(cli_exit_for_http(409), 1);
    assert_int_equal(cli_exit_for_http(429), 1);
    assert_int_equal(cli_exit_for_http(500), 1);
    assert_int_equal(cli_exit_for_http(503), 1);
    assert_int_equal(cli_exit_for_http(302), 1);
    assert_int_equal(cli_exit_for_http(0), 1);
}

static void test_exit_for_state(void **state)
{
    (void)state;
    assert_int_equal(cli_exit_for_state("completed"), 0);
    assert_int_equal(cli_exit_for_state("running"), 0);
    assert_int_equal(cli_exit_for_state(NULL), 0);
    assert_int_equal(cli_exit_for_state("failed"), 1);
    assert_int_equal(cli_exit_for_state("rolled_back"), 1);
    assert_int_equal(cli_exit_for_state("aborted"), 1);
    assert_int_equal(cli_exit_for_state("interrupted"), 1);
}

static void test_version_valid(void **state)
{
    char long_name[80];

    (void)state;
    assert_true(cli_version_valid("v2"));
    assert_true(cli_version_valid("1.2.3-rc_1"));
    assert_false(cli_version_valid(""));
    assert_false(cli_version_valid("v/2"));
    assert_false(cli_version_valid("v 2"));
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    assert_false(cli_version_valid(long_name));
    long_name[64] = '\0';
    assert_true(cli_version_valid(long_name));
}

static void test_admin_parse(void **state)
{
    char *base, *sock;

    (void)state;
    assert_int_equal(cli_admin_parse("unix:/run/cutover.sock", &base, &sock), 0);
    assert_string_equal(base, "http://localhost");
    assert_string_equal(sock, "/run/cutover.sock");
    free(base);
    free(sock);

    assert_int_equal(cli_admin_parse("http://127.0.0.1:9900/", &base, &sock), 0);
    assert_string_equal(base, "http://127.0.0.1:9900");
    assert_null(sock);
    free(base);

    assert_int_equal(cli_admin_parse("ftp://x", &base, &sock), -EINVAL);
    assert_int_equal(cli_admin_parse("unix:", &base, &sock), -EINVAL);
    assert_int_equal(cli_admin_parse("http://", &base, &sock), -EINVAL);
    assert_int_equal(cli_admin_parse("http://h:1/?x", &base, &sock), -EINVAL);
    assert_null(base);
    assert_null(sock);
}

static void test_render_status_service(void **state)
{
    (void)state;
    char *out = render(cli_render_status,
                       "{\"name\": \"web\", \"listen\": \"127.0.0.1:8080\", \"protocol\": \"http\","
                       " \"live\": {\"name\": \"v2\", \"targets\": ["
                       "   {\"address\": \"127.0.0.1:9002\", \"healthy\": true, \"state\": "
                       "\"healthy\"},"
                       "   {\"address\": \"127.0.0.1:9003\", \"healthy\": false}]},"
                       " \"previous\": {\"name\": \"v1\", \"targets\": []},"
                       " \"change\": {\"id\": 3, \"service\": \"web\", \"kind\": \"deploy\","
                       "   \"from\": \"v1\", \"to\": \"v2\", \"state\": \"running\","
                       "   \"actor\": \"alice\", \"message\": \"weight 10%\\nnext\"}}");
    assert_string_equal(out, "web (http, listen 127.0.0.1:8080)\n"
                             "  live:     v2\n"
                             "            127.0.0.1:9002         healthy\n"
                             "            127.0.0.1:9003         unhealthy\n"
                             "  previous: v1\n"
                             "  change:   3: deploy v1 -> v2, running (by alice)\n"
                             "            weight 10%\\nnext\n");
    free(out);
}

static void test_render_status_list(void **state)
{
    (void)state;
    char *out = render(cli_render_status,
                       "{\"services\": ["
                       " {\"name\": \"a\", \"listen\": \"127.0.0.1:1\", \"protocol\": \"tcp\","
                       "  \"live\": null, \"previous\": null, \"change\": null},"
                       " {\"name\": \"b\", \"listen\": \"127.0.0.1:2\", \"protocol\": \"http\","
                       "  \"live\": {\"name\": \"v1\", \"targets\": []}, \"previous\": null,"
                       "  \"change\": null}]}");
    assert_string_equal(out, "a (tcp, listen 127.0.0.1:1)\n"
                             "  live:     (none)\n"
                             "  previous: (none)\n"
                             "  change:   none in progress\n"
                             "\n"
                             "b (http, listen 127.0.0.1:2)\n"
                             "  live:     v1\n"
                             "  previous: (none)\n"
                             "  change:   none in progress\n");
    free(out);

    out = render(cli_render_status, "{\"services\": []}");
    assert_string_equal(out, "no services configured\n");
    free(out);
}

static void test_render_change(void **state)
{
    (void)state;
    char *out = render(cli_render_change,
                       "{\"id\": 4, \"service\": \"web\", \"kind\": \"deploy\", \"from\": null,"
                       " \"to\": \"v1\", \"state\": \"failed\", \"message\": \"health deadline "
                       "passed\"}");
    assert_string_equal(out, "change 4: deploy web (none) -> v1: failed\n"
                             "  health deadline passed\n");
    free(out);
}

static void test_render_history(void **state)
{
    (void)state;
    char *out = render(cli_render_history,
                       "{\"changes\": ["
                       " {\"id\": 12, \"service\": \"web\", \"kind\": \"rollback\", \"from\": "
                       "\"v2\", \"to\": \"v1\", \"state\": \"completed\", \"actor\": \"bob\","
                       "  \"message\": \"back\", \"created\": \"2026-11-23T07:00:00.000Z\"},"
                       " {\"id\": 3, \"service\": \"web\", \"kind\": \"deploy\", \"from\": null,"
                       "  \"to\": \"v2\", \"state\": \"rolled_back\", \"actor\": \"alice\","
                       "  \"message\": \"error rate\", \"created\": "
                       "\"2026-11-22T23:59:59.999Z\"}]}");
    assert_string_equal(
        out, "ID  TIME (UTC)           SERVICE  KIND      FROM -> TO  STATE        ACTOR  MESSAGE\n"
             "12  2026-11-23 07:00:00  web      rollback  v2 -> v1    completed    bob    back\n"
             "3   2026-11-22 23:59:59  web      deploy    - -> v2     rolled_back  alice  error "
             "rate\n");
    free(out);

    out = render(cli_render_history, "{\"changes\": []}");
    assert_string_equal(out, "no changes recorded\n");
    free(out);
}

/* A change whose end the daemon could not save yet: status, the change and history all say so,
 * so an operator sees why deploys are refused. */
static void test_render_unsaved_end(void **state)
{
    (void)state;
    char *out = render(cli_render_status,
                       "{\"name\": \"web\", \"protocol\": \"http\", \"listen\": \"127.0.0.1:2\","
                       " \"live\": {\"name\": \"v2\", \"targets\": []}, \"previous\": null,"
                       " \"change\": null, \"rolling\": null, \"unsaved\": {\"change\": 7,"
                       " \"state\": \"completed\", \"message\": \"cannot save to the store: "
                       "database is locked; retrying\"}}");
    assert_string_equal(out,
                        "web (http, listen 127.0.0.1:2)\n"
                        "  live:     v2\n"
                        "  previous: (none)\n"
                        "  change:   none in progress\n"
                        "  store:    cannot save to the store: database is locked; retrying\n");
    free(out);

    out = render(cli_render_change,
                 "{\"id\": 7, \"service\": \"web\", \"kind\": \"deploy\", \"from\": \"v1\","
                 " \"to\": \"v2\", \"state\": \"completed\", \"message\": \"v2 is live\","
                 " \"unsaved\": {\"message\": \"cannot save to the store: disk is full\"}}");
    assert_string_equal(out, "change 7: deploy web v1 -> v2: completed\n"
                             "  v2 is live\n"
                             "  cannot save to the store: disk is full\n");
    free(out);

    out = render(cli_render_history,
                 "{\"changes\": [{\"id\": 7, \"service\": \"web\", \"kind\": \"deploy\","
                 " \"from\": \"v1\", \"to\": \"v2\", \"state\": \"completed\", \"actor\": \"al\","
                 " \"message\": \"m\", \"created\": \"2026-11-23T07:00:00.000Z\","
                 " \"unsaved\": {\"message\": \"x\"}}]}");
    assert_string_equal(
        out,
        "ID  TIME (UTC)           SERVICE  KIND    FROM -> TO  STATE                ACTOR  "
        "MESSAGE\n"
        "7   2026-11-23 07:00:00  web      deploy  v1 -> v2    completed (unsaved)  al     m\n");
    free(out);
}

static void test_render_report_md(void **state)
{
    (void)state;
    char *out = render(cli_render_report_md,
                       "{\"id\": 3, \"service\": \"web\", \"kind\": \"deploy\", \"from\": \"v1\","
                       " \"to\": \"v2\", \"plan\": null, \"state\": \"completed\", \"actor\": "
                       "\"alice\", \"reason\": \"fix | pipes\", \"message\": \"switched to v2\","
                       " \"created\": \"c\", \"updated\": \"u\", \"ended\": \"e\","
                       " \"events\": [{\"ts\": \"t1\", \"type\": \"created\", \"message\": "
                       "\"a\\nb\"}]}");
    assert_non_null(strstr(out, "# Change 3: deploy of web, v1 -> v2\n"));
    assert_non_null(strstr(out, "| reason | fix \\| pipes |\n"));
    assert_non_null(strstr(out, "| plan | (instant switch) |\n"));
    assert_non_null(strstr(out, "**Outcome:** switched to v2\n"));
    assert_non_null(strstr(out, "| t1 | created | a\\nb |\n"));
    free(out);
}

static void test_parse_logs(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "logs", "web"), 0);
    assert_int_equal(a.cmd, CLI_CMD_LOGS);
    assert_string_equal(a.service, "web");
    assert_null(a.version);
    assert_int_equal(a.follow, 0);
    assert_int_equal(a.lines, CLI_LOGS_DEFAULT_LINES);
    cli_args_done(&a);

    /* A plan's baseline has logs of its own (rollout/baseline.h). */
    assert_int_equal(PARSE(&a, err, "logs", "web", "v2+baseline"), 0);
    assert_string_equal(a.version, "v2+baseline");
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "logs", "web", "v2+other"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "-f", "web", "v2", "-n", "7", "-c", "x.yml"), 0);
    assert_string_equal(a.service, "web");
    assert_string_equal(a.version, "v2");
    assert_int_equal(a.follow, 1);
    assert_int_equal(a.lines, 7);
    assert_string_equal(a.config, "x.yml");
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "--lines=0", "--follow"), 0);
    assert_int_equal(a.lines, 0);
    assert_int_equal(a.follow, 1);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "-n20"), 0);
    assert_int_equal(a.lines, 20);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs"), -EINVAL);
    assert_non_null(strstr(err, "missing SERVICE"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "v 2"), -EINVAL);
    assert_non_null(strstr(err, "VERSION 'v 2'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "-n", "-3"), -EINVAL);
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "-n", "ten"), -EINVAL);
    assert_non_null(strstr(err, "--lines"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "-n", "1", "-n", "2"), -EINVAL);
    assert_non_null(strstr(err, "given twice"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "v1", "extra"), -EINVAL);
    assert_non_null(strstr(err, "unexpected argument 'extra'"));
    cli_args_done(&a);

    assert_int_equal(PARSE(&a, err, "logs", "web", "--json"), -EINVAL);
    assert_non_null(strstr(err, "does not apply"));
    cli_args_done(&a);

    /* -f belongs to logs only. */
    assert_int_equal(PARSE(&a, err, "status", "-f"), -EINVAL);
    cli_args_done(&a);
}

static void test_log_name_parse(void **state)
{
    char ver[80];
    long idx = -1;

    (void)state;
    assert_int_equal(cli_log_name_parse("v2-0.log", ver, sizeof(ver), &idx), 1);
    assert_string_equal(ver, "v2");
    assert_int_equal(idx, 0);
    assert_int_equal(cli_log_name_parse("release-1.2-rc-13.log", ver, sizeof(ver), &idx), 1);
    assert_string_equal(ver, "release-1.2-rc");
    assert_int_equal(idx, 13);
    assert_int_equal(cli_log_name_parse("v2-0.log.1", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("v2-.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("-0.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("v2-x.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("v2.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("v 2-0.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse(".", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("v2-0.log", ver, 2, &idx), 0); /* no room */
    /* A plan's baseline (rollout/baseline.h) logs as VERSION+baseline; no other '+' name. */
    assert_int_equal(cli_log_name_parse("v1+baseline-1.log", ver, sizeof(ver), &idx), 1);
    assert_string_equal(ver, "v1+baseline");
    assert_int_equal(idx, 1);
    char longest[80];
    memset(longest, 'a', 64);
    snprintf(longest + 64, sizeof(longest) - 64, "+baseline-0.log");
    assert_int_equal(cli_log_name_parse(longest, ver, sizeof(ver), &idx), 1);
    assert_int_equal(strlen(ver), 64 + strlen("+baseline"));
    assert_int_equal(cli_log_name_parse("v1+other-0.log", ver, sizeof(ver), &idx), 0);
    assert_int_equal(cli_log_name_parse("+baseline-0.log", ver, sizeof(ver), &idx), 0);
}

static void test_parse_knowledge(void **state)
{
    struct cli_args a;
    char err[256];

    (void)state;
    assert_int_equal(PARSE(&a, err, "note", "12", "cache warm-up was too short"), 0);
    assert_int_equal(a.cmd, CLI_CMD_NOTE);
    assert_int_equal(a.change_id, 12);
    assert_string_equal(a.text, "cache warm-up was too short");
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "note", "12"), -EINVAL);
    assert_non_null(strstr(err, "missing TEXT"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "stats", "web", "--since", "7d", "--json"), 0);
    assert_int_equal(a.cmd, CLI_CMD_STATS);
    assert_string_equal(a.service, "web");
    assert_string_equal(a.since, "7d");
    assert_int_equal(a.json, 1);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "stats", "--since", "soon"), -EINVAL);
    assert_non_null(strstr(err, "--since must be a duration"));
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "deploy", "web", "v2", "--since", "1d"), -EINVAL);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "verify"), 0);
    assert_int_equal(a.cmd, CLI_CMD_VERIFY);
    assert_int_equal(a.change_id, 0);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "verify", "7"), 0);
    assert_int_equal(a.change_id, 7);
    cli_args_done(&a);
    assert_int_equal(PARSE(&a, err, "verify", "-3"), -EINVAL);
    cli_args_done(&a);
}

static int verify_rc;

static void render_verify(FILE *f, const json_t *j)
{
    verify_rc = cli_render_verify(f, j);
}

static void test_render_verify(void **state)
{
    (void)state;
    char *out = render(render_verify, "{\"change\": 3, \"events\": 7, \"chained\": 7, "
                                      "\"unchained\": 0, \"intact\": true, \"first_bad\": null, "
                                      "\"chained_since\": \"2026-12-01T00:00:00.000Z\"}");
    assert_string_equal(out, "change 3: 7 events, chain intact\n");
    assert_int_equal(verify_rc, 0);
    free(out);
    /* A tampered type is free text: escaped, not sent to the terminal as it is. */
    out = render(render_verify,
                 "{\"change\": 3, \"events\": 7, \"chained\": 1, \"unchained\": 0, \"intact\": "
                 "false, \"first_bad\": {\"id\": 15, \"type\": \"sw\\u001b[2Jitched\", \"ts\": "
                 "\"2026-12-01T00:00:01.000Z\", \"why\": \"its fields were altered\"}}");
    assert_string_equal(out, "change 3: event 15 (sw\\x1b[2Jitched, 2026-12-01T00:00:01.000Z) "
                             "does not match the chain: its fields were altered\n");
    assert_int_equal(verify_rc, 1);
    free(out);
    out = render(render_verify, "{\"changes\": [{\"change\": 1, \"events\": 2, \"chained\": 0, "
                                "\"unchained\": 2, \"first_bad\": null}, {\"change\": 2, "
                                "\"events\": 3, \"chained\": 3, \"unchained\": 0, \"first_bad\": "
                                "null}], \"events\": 5, \"unchained\": 2, \"intact\": true, "
                                "\"chained_since\": \"2026-12-01T00:00:00.000Z\"}");
    assert_string_equal(out, "change 1: 2 events, not chained (recorded before "
                             "2026-12-01T00:00:00.000Z, when this store began chaining)\n"
                             "2 changes, 5 events, chain intact (2 recorded before "
                             "2026-12-01T00:00:00.000Z, not chained)\n");
    assert_int_equal(verify_rc, 0);
    free(out);
}

static void test_render_stats(void **state)
{
    (void)state;
    char *out = render(
        cli_render_stats,
        "{\"service\": \"web\", \"since\": \"2026-11-07T00:00:00.000Z\", \"window_days\": 30.0, "
        "\"deploys\": {\"ended\": 4, \"completed\": 3, \"failed\": 0, \"rolled_back\": 1, "
        "\"undone_later\": 1}, \"deploys_per_day\": 0.1, \"failures\": 2, "
        "\"change_failure_rate\": 0.5, \"time_to_restore_ms\": {\"count\": 2, \"median\": 1500, "
        "\"worst\": 95250, \"open\": 1}, \"time_to_full_traffic_ms\": {\"count\": 3, "
        "\"median\": 12000, \"worst\": 30000}}");
    assert_string_equal(
        out, "delivery figures for web, last 30d (since 2026-11-07T00:00:00.000Z)\n"
             "  deployment frequency   0.10 a day (3 deploys completed)\n"
             "  change failure rate    50% (2 of 4 deploys failed or were rolled back)\n"
             "  time to restore        median 1.5s, worst 1m35s (2 restores; 1 service still "
             "down)\n"
             "  time to full traffic   median 12s, worst 30s (3 deploys)\n");
    free(out);
}

static void test_usage_lists_every_command(void **state)
{
    static const char *const cmds[] = {
        "serve",    "check",   "deploy", "status",  "promote", "pause",      "resume", "abort",
        "rollback", "upgrade", "reload", "approve", "history", "report",     "demo",   "logs",
        "note",     "stats",   "verify", "hold",    "release", "maintenance"};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    (void)state;
    cli_usage(f);
    fclose(f);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char needle[32];
        snprintf(needle, sizeof(needle), "\n  %s ", cmds[i]);
        assert_non_null(strstr(buf, needle));
        assert_int_not_equal(cli_cmd_from_name(cmds[i]), CLI_CMD_NONE);
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_deploy_full),
        cmocka_unit_test(test_parse_governance),
        cmocka_unit_test(test_parse_defaults_and_short_forms),
        cmocka_unit_test(test_parse_help_and_version),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_logs),
        cmocka_unit_test(test_parse_knowledge),
        cmocka_unit_test(test_render_verify),
        cmocka_unit_test(test_render_stats),
        cmocka_unit_test(test_log_name_parse),
        cmocka_unit_test(test_exit_for_http),
        cmocka_unit_test(test_exit_for_state),
        cmocka_unit_test(test_version_valid),
        cmocka_unit_test(test_admin_parse),
        cmocka_unit_test(test_render_status_service),
        cmocka_unit_test(test_render_status_list),
        cmocka_unit_test(test_render_change),
        cmocka_unit_test(test_render_history),
        cmocka_unit_test(test_render_unsaved_end),
        cmocka_unit_test(test_render_report_md),
        cmocka_unit_test(test_usage_lists_every_command),
        cmocka_unit_test(test_parse_hold_and_maintenance),
        cmocka_unit_test(test_render_hold_and_maintenance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
