/* The commands of the command-line client (see cli.h, docs/cli.md): each one's requests to the
 * admin API and what it prints, and cli_main, which runs the one asked for. The command line is
 * parsed in args.c, answers are rendered in render.c, the daemon is reached through http.c;
 * logs.c, events.c, watch.c and knowledge.c hold the commands that are programs of their own.
 * Owns nothing beyond one command's lifetime. CLI process, main thread only. */
#include "cli/cli.h"
#include "cli/cli_internal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "config/config.h"
#include "core/release.h"
#include "core/duration.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "net/addr.h"
#include "store/store.h"

/* Constants shared by the CLI's files: cli_internal.h. */

/* --- commands -------------------------------------------------------------------------------- */

/* Prints "LABEL PATH: ok" or its problems; returns 1 when it has any. */
static int cli_check_db(const char *label, const char *path)
{
    char report[2048];
    int rc = store_integrity(path, report, sizeof(report));
    if (rc == 0) {
        printf("%s %s: ok\n", label, path);
        return 0;
    }
    printf("%s %s: %s%s\n", label, path, rc > 0 ? "corrupt: " : "cannot check: ", report);
    return 1;
}

/* check --store: the store and its backup (when there is one), as serve would find them. */
static int cli_check_store(const struct config *cfg)
{
    char *db = xasprintf("%s/cutover.db", cfg->state_dir);
    char *bak = xasprintf("%s.backup", db);
    struct stat sb;
    int bad = cli_check_db("store", db);
    if (stat(bak, &sb) == 0)
        bad |= cli_check_db("backup", bak);
    else
        printf("backup %s: none yet\n", bak);
    free(db);
    free(bak);
    return bad ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}

static int cli_cmd_check(const struct cli_args *a)
{
    struct config *cfg = NULL;
    int rc = cli_load_config(a, 1, &cfg);

    if (rc != 0)
        return rc;
    if (a->store) {
        rc = cli_check_store(cfg);
        config_free(cfg);
        return rc;
    }
    cli_render_config(stdout, cfg);
    config_free(cfg);
    return CLI_EXIT_OK;
}

/* Prints an answer that should be a Change (or, for routes the API does not describe yet,
 * anything) and returns the exit code its state calls for. */
static int cli_show_change(const struct cli_args *a, const json_t *j, int state_matters)
{
    const char *state = cli_jstr(j, "state");

    if (a->json) {
        cli_print_json(j);
    } else if (state != NULL && json_object_get(j, "id") != NULL) {
        cli_render_change(stdout, j);
        if (strcmp(state, "running") == 0 && cli_jstr(j, "service") != NULL)
            printf("  follow it: cutover status %s\n", cli_jstr(j, "service"));
    } else if (cli_jstr(j, "message") != NULL) {
        cli_put_clean(stdout, cli_jstr(j, "message"), 0);
        fputc('\n', stdout);
    } else {
        fputs("done\n", stdout);
    }
    return state_matters ? cli_exit_for_state(state) : CLI_EXIT_OK;
}

/* POSTs body (consumed) to path and prints the change the daemon answers with; returns the exit
 * code (cli_show_change: 1 when the change ended failed, rolled back or aborted). */
static int cli_post_change(const struct cli_args *a, struct cli_http *h, const char *path,
                           json_t *body)
{
    struct cli_resp r;
    int rc = cli_request(h, "POST", path, body, NULL, &r);

    if (rc == 0) {
        if (r.status >= 200 && r.status < 300 && r.json != NULL)
            rc = cli_show_change(a, r.json, 1);
        else
            rc = cli_api_error(h, &r);
    }
    cli_resp_done(&r);
    json_decref(body);
    return rc;
}

static int cli_cmd_deploy(const struct cli_args *a, struct cli_http *h)
{
    json_t *targets = NULL, *body;
    char *actor = cli_actor(h), *svc = cli_escape(h, a->service), *path;
    int rc;

    if (a->ntargets > 0) {
        targets = json_array();
        for (size_t i = 0; i < a->ntargets; i++)
            json_array_append_new(targets, json_string(a->targets[i]));
    }
    body =
        json_pack("{s:s, s:o*, s:s*, s:s*, s:s*, s:b}", "version", a->version, "targets", targets,
                  "plan", a->plan, "reason", a->reason, "actor", actor, "wait", a->wait);
    /* Sent only when given, so that a daemon without them still takes a plain deploy. */
    if (a->emergency)
        json_object_set_new(body, "emergency", json_true());
    if (a->ticket != NULL)
        json_object_set_new(body, "ticket", json_string(a->ticket));
    if (a->risk != NULL)
        json_object_set_new(body, "risk", json_string(a->risk));
    if (a->hold)
        json_object_set_new(body, "hold", json_true());
    if (a->at != NULL)
        json_object_set_new(body, "at", json_string(a->at));
    path = xasprintf("/api/v1/services/%s/deploy", svc);
    rc = cli_post_change(a, h, path, body);
    free(path);
    free(svc);
    free(actor);
    return rc;
}

static int cli_cmd_rollback(const struct cli_args *a, struct cli_http *h)
{
    char *actor = cli_actor(h), *svc = cli_escape(h, a->service);
    char *path = xasprintf("/api/v1/services/%s/rollback", svc);
    json_t *body = json_pack("{s:s*, s:s*}", "actor", actor, "reason", a->reason);
    int rc = cli_post_change(a, h, path, body);

    free(path);
    free(svc);
    free(actor);
    return rc;
}

/* hold, release, maintenance: POSTs to the service's route and says what now happens. */
static int cli_cmd_mode(const struct cli_args *a, struct cli_http *h)
{
    char *actor = cli_actor(h), *svc = cli_escape(h, a->service), *path;
    json_t *body;
    char d[24];
    if (a->cmd == CLI_CMD_HOLD) {
        body = json_pack("{s:s*}", "actor", actor);
        if (a->max_ms > 0)
            json_object_set_new(body, "max", json_string(duration_format(a->max_ms, d, sizeof(d))));
        path = xasprintf("/api/v1/services/%s/hold", svc);
    } else if (a->cmd == CLI_CMD_RELEASE) {
        body = json_pack("{s:s*}", "actor", actor);
        path = xasprintf("/api/v1/services/%s/release", svc);
    } else {
        body = json_pack("{s:s*, s:b, s:s*}", "actor", actor, "on", a->on, "message",
                         a->on ? a->message : NULL);
        path = xasprintf("/api/v1/services/%s/maintenance", svc);
    }
    struct cli_resp r;
    int rc = cli_request(h, "POST", path, body, NULL, &r);
    if (rc == 0 && r.status >= 200 && r.status < 300) {
        rc = CLI_EXIT_OK;
        if (a->json && r.json != NULL) {
            cli_print_json(r.json);
        } else if (a->cmd == CLI_CMD_HOLD) {
            printf("%s is held: new requests wait in cutover (at most %s each) until `cutover "
                   "release %s`\n",
                   a->service, a->max_ms ? duration_format(a->max_ms, d, sizeof(d)) : "30s",
                   a->service);
        } else if (a->cmd == CLI_CMD_RELEASE) {
            const json_t *live = json_object_get(r.json, "live");
            printf("%s is released: the held requests go on to %s\n", a->service,
                   cli_jstr_or(live, "name", "the live version"));
        } else if (a->on) {
            printf("%s is in maintenance: every request is answered 503 with the page; `cutover "
                   "maintenance %s off` ends it\n",
                   a->service, a->service);
        } else {
            printf("%s is out of maintenance and serves again\n", a->service);
        }
    } else if (rc == 0) {
        rc = cli_api_error(h, &r);
    }
    cli_resp_done(&r);
    json_decref(body);
    free(path);
    free(svc);
    free(actor);
    return rc;
}

/* GETs path and prints it as JSON (--json) or with render. */
static int cli_get_and_render(const struct cli_args *a, struct cli_http *h, const char *path,
                              void (*render)(FILE *, const json_t *))
{
    struct cli_resp r;
    int rc = cli_request(h, "GET", path, NULL, NULL, &r);

    if (rc == 0) {
        if (r.status >= 200 && r.status < 300 && r.json != NULL) {
            if (a->json)
                cli_print_json(r.json);
            else
                render(stdout, r.json);
            rc = CLI_EXIT_OK;
        } else {
            rc = cli_api_error(h, &r);
        }
    }
    cli_resp_done(&r);
    return rc;
}

static int cli_cmd_status(const struct cli_args *a, struct cli_http *h)
{
    char *path, *svc = NULL;
    int rc;

    if (a->service != NULL) {
        svc = cli_escape(h, a->service);
        path = xasprintf("/api/v1/services/%s", svc);
    } else {
        path = xstrdup("/api/v1/services");
    }
    rc = cli_get_and_render(a, h, path, cli_render_status);
    free(path);
    free(svc);
    return rc;
}

static int cli_cmd_history(const struct cli_args *a, struct cli_http *h)
{
    char *path, *svc = NULL, limit[32] = "";
    int rc;

    if (a->limit > 0)
        snprintf(limit, sizeof(limit), "limit=%ld", a->limit);
    if (a->service != NULL) {
        svc = cli_escape(h, a->service);
        path = xasprintf("/api/v1/changes?service=%s%s%s", svc, limit[0] ? "&" : "", limit);
    } else {
        path = xasprintf("/api/v1/changes%s%s", limit[0] ? "?" : "", limit);
    }
    rc = cli_get_and_render(a, h, path, cli_render_history);
    free(path);
    free(svc);
    return rc;
}

static int cli_cmd_audit(const struct cli_args *a, struct cli_http *h)
{
    char *path = xasprintf("/api/v1/audit?limit=%ld%s%s", a->limit > 0 ? a->limit : 1000,
                           a->since ? "&since=" : "", a->since ? a->since : "");
    int rc = cli_get_and_render(a, h, path, cli_render_audit);
    free(path);
    return rc;
}

/* After a 404 on a route the API may not have yet, tells a missing route from a missing change:
 * when change id exists, says the daemon lacks what and returns 2; otherwise prints why the
 * change cannot be read and returns the exit code for that. */
static int cli_route_or_change_missing(struct cli_http *h, long long id, const char *what,
                                       const struct cli_resp *first)
{
    struct cli_resp r;
    char path[64];
    int rc;

    snprintf(path, sizeof(path), "/api/v1/changes/%lld", id);
    rc = cli_request(h, "GET", path, NULL, NULL, &r);
    if (rc == 0) {
        if (r.status >= 200 && r.status < 300)
            rc = cli_unsupported(what, first);
        else
            rc = cli_api_error(h, &r);
    }
    cli_resp_done(&r);
    return rc;
}

/* POSTs body to /api/v1/changes/ID/action and prints the answer. */
static int cli_change_action(const struct cli_args *a, struct cli_http *h, long long id,
                             const char *action, json_t *body)
{
    struct cli_resp r;
    char path[96];
    int rc;

    snprintf(path, sizeof(path), "/api/v1/changes/%lld/%s", id, action);
    rc = cli_request(h, "POST", path, body, NULL, &r);
    if (rc != 0)
        goto out;
    if (r.status >= 200 && r.status < 300) {
        /* An abort that ended the change as asked is a success. */
        int state_matters = strcmp(action, "abort") != 0;
        if (r.json != NULL) {
            rc = cli_show_change(a, r.json, state_matters);
        } else {
            printf("%s: done\n", action);
            rc = CLI_EXIT_OK;
        }
    } else if (r.status == 405 || r.status == 501) {
        rc = cli_unsupported(action, &r);
    } else if (r.status == 404) {
        rc = cli_route_or_change_missing(h, id, action, &r);
    } else {
        rc = cli_api_error(h, &r);
    }
out:
    cli_resp_done(&r);
    return rc;
}

static int cli_cmd_change_verb(const struct cli_args *a, struct cli_http *h, const char *action)
{
    struct cli_resp r;
    char *svc = cli_escape(h, a->service);
    char *path = xasprintf("/api/v1/services/%s", svc);
    json_t *id, *body = NULL;
    long long cid = 0;
    int rc = cli_request(h, "GET", path, NULL, NULL, &r);

    if (rc != 0)
        goto out;
    if (r.status < 200 || r.status >= 300 || r.json == NULL) {
        rc = cli_api_error(h, &r);
        goto out;
    }
    id = json_object_get(json_object_get(r.json, "change"), "id");
    if (!json_is_integer(id) && strcmp(action, "abort") == 0)
        id = json_object_get(json_object_get(r.json, "scheduled"), "id"); /* cancel it */
    if (!json_is_integer(id)) {
        fprintf(stderr, "cutover: no change is running on %s; nothing to %s\n", a->service, action);
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    cid = (long long)json_integer_value(id);
    char *actor = cli_actor(h);
    body = json_pack("{s:s*}", "actor", actor);
    free(actor);
    if (a->all)
        json_object_set_new(body, "all", json_true());
    rc = cli_change_action(a, h, cid, action, body);
out:
    json_decref(body);
    cli_resp_done(&r);
    free(path);
    free(svc);
    return rc;
}

static int cli_cmd_approve(const struct cli_args *a, struct cli_http *h)
{
    char *actor = a->as ? xstrdup(a->as) : cli_actor(h);
    json_t *body = json_pack("{s:s*}", "actor", actor);
    int rc = cli_change_action(a, h, a->change_id, "approve", body);

    json_decref(body);
    free(actor);
    return rc;
}

static int cli_cmd_plan(const struct cli_args *a, struct cli_http *h)
{
    char *svc = cli_escape(h, a->service), *ver = cli_escape(h, a->version);
    char *pl = a->plan ? cli_escape(h, a->plan) : NULL;
    char *path = xasprintf("/api/v1/services/%s/plan?version=%s%s%s", svc, ver, pl ? "&plan=" : "",
                           pl ? pl : "");
    struct cli_resp r;
    int rc = cli_request(h, "GET", path, NULL, NULL, &r);

    free(path);
    free(svc);
    free(ver);
    free(pl);
    if (rc != 0)
        return rc;
    if (r.status == 404 && r.json != NULL && cli_jstr(r.json, "error") != NULL &&
        strstr(cli_jstr(r.json, "error"), "no such route") != NULL)
        rc = cli_unsupported("plan", &r);
    else if (r.status < 200 || r.status >= 300 || !json_is_object(r.json))
        rc = cli_api_error(h, &r);
    else if (a->format_given && strcmp(a->format, "json") == 0)
        cli_print_json(r.json);
    else
        cli_render_preview(stdout, r.json, a->format_given && strcmp(a->format, "md") == 0);
    cli_resp_done(&r);
    return rc;
}

static int cli_cmd_report(const struct cli_args *a, struct cli_http *h)
{
    int md = strcmp(a->format, "md") == 0;
    struct cli_resp r, c;
    char path[96];
    int rc;

    memset(&c, 0, sizeof(c));
    snprintf(path, sizeof(path), "/api/v1/changes/%lld/report%s", a->change_id,
             md ? "?format=md" : "");
    rc = cli_request(h, "GET", path, NULL, md ? "text/markdown, application/json;q=0.5" : NULL, &r);
    if (rc != 0)
        goto out;
    if (r.status >= 200 && r.status < 300) {
        const char *text = cli_jstr(r.json, "markdown");
        if (r.json == NULL && md) {
            fwrite(r.body ? r.body : "", 1, r.len, stdout);
            if (r.body != NULL && r.len > 0 && r.body[r.len - 1] != '\n')
                fputc('\n', stdout);
            goto out;
        }
        if (r.json != NULL && !md) {
            cli_print_json(r.json);
            goto out;
        }
        if (md && text != NULL) {
            fputs(text, stdout);
            if (*text && text[strlen(text) - 1] != '\n')
                fputc('\n', stdout);
            goto out;
        }
        if (md && r.json != NULL && json_object_get(r.json, "id") != NULL) {
            cli_render_report_md(stdout, r.json);
            goto out;
        }
        /* The report came in a form we did not ask for; render the change ourselves. */
    } else if (r.status != 404 && r.status != 405 && r.status != 501) {
        rc = cli_api_error(h, &r);
        goto out;
    }
    /* No report route (or an unknown change): build the report from the change itself. */
    snprintf(path, sizeof(path), "/api/v1/changes/%lld", a->change_id);
    rc = cli_request(h, "GET", path, NULL, NULL, &c);
    if (rc != 0)
        goto out;
    if (c.status < 200 || c.status >= 300 || c.json == NULL) {
        rc = cli_api_error(h, &c);
        goto out;
    }
    if (md)
        cli_render_report_md(stdout, c.json);
    else
        cli_print_json(c.json);
out:
    cli_resp_done(&c);
    cli_resp_done(&r);
    return rc;
}

/* upgrade and reload: POST a daemon-wide action whose route may not exist yet. */
/* The pid of the daemon that answers GET /api/v1/health through h now, or 0 (none answers, or
 * one that is handing over: it answers 503 at once). Prints nothing. */
static long cli_daemon_pid(struct cli_http *h)
{
    struct cli_resp r;
    long pid = 0;
    int quiet = h->quiet;

    h->quiet = 1;
    h->once = 1; /* one that hands over answers 503: none to name yet */
    h->fresh = 1;
    if (cli_request(h, "GET", "/api/v1/health", NULL, NULL, &r) == 0 && r.status == 200 &&
        json_is_integer(json_object_get(r.json, "pid")))
        pid = (long)json_integer_value(json_object_get(r.json, "pid"));
    cli_resp_done(&r);
    h->quiet = quiet;
    h->once = 0;
    h->fresh = 0;
    return pid;
}

/* The connection of a hand-over request broke before its answer: the old daemon died (or was
 * killed) while handing over, maybe after its successor took over. Asks whoever answers at
 * the same address for CLI_HANDOVER_TRIES x CLI_HANDOVER_WAIT_MS (the successor's time to
 * take over): a daemon other than old_pid means the hand-over worked. Returns the exit code. */
static int cli_handover_outcome(const struct cli_args *a, struct cli_http *h, const char *what,
                                long old_pid)
{
    long pid = 0;

    fprintf(stderr,
            "cutover: the daemon (pid %ld) closed the connection before answering the %s; "
            "asking who answers at %s now\n",
            old_pid, what, h->where);
    for (int tries = 0; tries < CLI_HANDOVER_TRIES * 3 / 2; tries++) {
        pid = cli_daemon_pid(h);
        if (pid != 0)
            break;
        usleep(CLI_HANDOVER_WAIT_MS * 1000);
    }
    if (pid != 0 && pid != old_pid) {
        if (a->json)
            printf("{\"message\": \"handed over to pid %ld; the old daemon went away before it "
                   "answered\", \"pid\": %ld}\n",
                   pid, pid);
        else
            printf("handed over to pid %ld; the old daemon (pid %ld) went away before it "
                   "answered\n",
                   pid, old_pid);
        return CLI_EXIT_OK;
    }
    if (pid == old_pid)
        fprintf(stderr, "cutover: %s failed: pid %ld still answers and no successor took over\n",
                what, pid);
    else
        fprintf(stderr,
                "cutover: %s: no daemon answers at %s after %d s; the outcome is unknown (see "
                "the daemon's log)\n",
                what, h->where, CLI_HANDOVER_TRIES * CLI_HANDOVER_WAIT_MS * 3 / 2 / 1000);
    return CLI_EXIT_FAILED;
}

static int cli_cmd_daemon_action(const struct cli_args *a, struct cli_http *h, const char *route,
                                 const char *what, json_t *body)
{
    struct cli_resp r;
    /* Known before asking, so that a broken connection can be told from a hand-over. */
    long old_pid = cli_daemon_pid(h);

    h->quiet = old_pid != 0;
    h->fresh = 1;
    int rc = cli_request(h, "POST", route, body, NULL, &r);
    h->quiet = 0;
    h->fresh = 0;
    if (rc != 0 && old_pid != 0 &&
        (r.cc == CURLE_GOT_NOTHING || r.cc == CURLE_RECV_ERROR || r.cc == CURLE_PARTIAL_FILE ||
         r.cc == CURLE_SEND_ERROR)) {
        rc = cli_handover_outcome(a, h, what, old_pid);
        goto out;
    }
    if (rc != 0 && old_pid != 0) {
        /* Another failure (a timeout...): cli_request kept quiet about it. */
        fprintf(stderr, "cutover: the %s request to %s failed: %s\n", what, h->where,
                curl_easy_strerror((CURLcode)r.cc));
        goto out;
    }
    if (rc != 0)
        goto out;
    if (r.status >= 200 && r.status < 300) {
        if (a->json && r.json != NULL)
            cli_print_json(r.json);
        else if (cli_jstr(r.json, "message") != NULL) {
            cli_put_clean(stdout, cli_jstr(r.json, "message"), 0);
            fputc('\n', stdout);
        } else
            printf("%s: done\n", what);
        rc = CLI_EXIT_OK;
    } else if (r.status == 404 || r.status == 405 || r.status == 501) {
        rc = cli_unsupported(what, &r);
    } else {
        rc = cli_api_error(h, &r);
    }
out:
    cli_resp_done(&r);
    return rc;
}

/* note: POSTs the text; the daemon checks it (length, characters) and the change. */
static int cli_cmd_note(const struct cli_args *a, struct cli_http *h)
{
    char *actor = cli_actor(h);
    json_t *body = json_pack("{s:s, s:s*}", "text", a->text, "actor", actor);
    char path[64];
    struct cli_resp r;

    free(actor);
    snprintf(path, sizeof(path), "/api/v1/changes/%lld/note", a->change_id);
    int rc = cli_request(h, "POST", path, body, NULL, &r);
    json_decref(body);
    if (rc == 0) {
        if (r.status >= 200 && r.status < 300) {
            printf("change %lld: note recorded\n", a->change_id);
            rc = CLI_EXIT_OK;
        } else if (r.status == 404 && cli_jstr(r.json, "error") != NULL &&
                   strncmp(cli_jstr(r.json, "error"), "no such route", 13) == 0) {
            rc = cli_unsupported("note", &r);
        } else {
            rc = cli_api_error(h, &r);
        }
    }
    cli_resp_done(&r);
    return rc;
}

static int cli_cmd_stats(const struct cli_args *a, struct cli_http *h)
{
    char *svc = a->service ? cli_escape(h, a->service) : NULL;
    char *path = xasprintf("/api/v1/stats?since=%s%s%s", a->since ? a->since : "30d",
                           svc ? "&service=" : "", svc ? svc : "");
    int rc = cli_get_and_render(a, h, path, cli_render_stats);

    free(path);
    free(svc);
    return rc;
}

/* verify: exit 1 when a chain does not match, with --json too. */
static int cli_cmd_verify(const struct cli_args *a, struct cli_http *h)
{
    char path[64];
    struct cli_resp r;

    if (a->change_id > 0)
        snprintf(path, sizeof(path), "/api/v1/changes/%lld/verify", a->change_id);
    else
        snprintf(path, sizeof(path), "/api/v1/verify");
    int rc = cli_request(h, "GET", path, NULL, NULL, &r);
    if (rc == 0) {
        if (r.status >= 200 && r.status < 300 && r.json != NULL) {
            if (a->json) {
                cli_print_json(r.json);
                rc =
                    json_is_true(json_object_get(r.json, "intact")) ? CLI_EXIT_OK : CLI_EXIT_FAILED;
            } else {
                rc = cli_render_verify(stdout, r.json);
            }
        } else {
            rc = cli_api_error(h, &r);
        }
    }
    cli_resp_done(&r);
    return rc;
}

/* upgrade: the daemon runs elsewhere (another cwd), so it gets an absolute path, checked here
 * before anything is sent. */
static int cli_cmd_upgrade(const struct cli_args *a, struct cli_http *h, const char *binary)
{
    json_t *body = json_pack("{s:s*}", "binary", binary);
    int rc = cli_cmd_daemon_action(a, h, "/api/v1/upgrade", "upgrade", body);

    json_decref(body);
    return rc;
}

/* cli_get_fn for `cutover watch`: quiet, so that a daemon away for an upgrade is retried. */
static int cli_watch_get(void *ctx, const char *path, long *status, char **body)
{
    struct cli_http *h = ctx;
    struct cli_resp r;
    int quiet = h->quiet;

    h->quiet = 1;
    int rc = cli_request(h, "GET", path, NULL, "application/json, text/plain", &r);
    h->quiet = quiet;
    *status = r.status;
    *body = rc == 0 ? r.body : NULL;
    if (rc == 0)
        r.body = NULL;
    cli_resp_done(&r);
    return rc;
}

static int cli_run(const struct cli_args *a)
{
    struct cli_http h;
    char *binary = NULL;
    int rc;

    if (a->cmd == CLI_CMD_UPGRADE && a->binary != NULL) {
        binary = realpath(a->binary, NULL);
        if (binary == NULL || access(binary, X_OK) != 0) {
            fprintf(stderr, "cutover: --binary %s: %s\n", a->binary,
                    binary == NULL ? strerror(errno) : "not executable");
            free(binary);
            return CLI_EXIT_USAGE;
        }
    }
    rc = cli_connect(a, &h);
    if (rc != 0) {
        cli_disconnect(&h);
        free(binary);
        return rc;
    }
    switch (a->cmd) {
    case CLI_CMD_DEPLOY:
        rc = cli_cmd_deploy(a, &h);
        break;
    case CLI_CMD_ROLLBACK:
        rc = cli_cmd_rollback(a, &h);
        break;
    case CLI_CMD_STATUS:
        rc = cli_cmd_status(a, &h);
        break;
    case CLI_CMD_HISTORY:
        rc = cli_cmd_history(a, &h);
        break;
    case CLI_CMD_EVENTS:
        rc = cli_cmd_events(a, &h);
        break;
    case CLI_CMD_PROMOTE:
        rc = cli_cmd_change_verb(a, &h, "promote");
        break;
    case CLI_CMD_PAUSE:
        rc = cli_cmd_change_verb(a, &h, "pause");
        break;
    case CLI_CMD_RESUME:
        rc = cli_cmd_change_verb(a, &h, "resume");
        break;
    case CLI_CMD_ABORT:
        rc = cli_cmd_change_verb(a, &h, "abort");
        break;
    case CLI_CMD_APPROVE:
        rc = cli_cmd_approve(a, &h);
        break;
    case CLI_CMD_REPORT:
        rc = cli_cmd_report(a, &h);
        break;
    case CLI_CMD_PLAN:
        rc = cli_cmd_plan(a, &h);
        break;
    case CLI_CMD_HOLD:
    case CLI_CMD_RELEASE:
    case CLI_CMD_MAINTENANCE:
        rc = cli_cmd_mode(a, &h);
        break;
    case CLI_CMD_AUDIT:
        rc = cli_cmd_audit(a, &h);
        break;
    case CLI_CMD_NOTE:
        rc = cli_cmd_note(a, &h);
        break;
    case CLI_CMD_STATS:
        rc = cli_cmd_stats(a, &h);
        break;
    case CLI_CMD_VERIFY:
        rc = cli_cmd_verify(a, &h);
        break;
    case CLI_CMD_WATCH:
        h.timeout_ms = 5000;
        rc = cli_watch(a, cli_watch_get, &h);
        break;
    case CLI_CMD_UPGRADE:
        rc = cli_cmd_upgrade(a, &h, binary);
        break;
    case CLI_CMD_RELOAD: {
        json_t *body = json_object();
        rc = cli_cmd_daemon_action(a, &h, "/api/v1/reload", "reload", body);
        json_decref(body);
        break;
    }
    default:
        rc = CLI_EXIT_USAGE;
        break;
    }
    cli_disconnect(&h);
    free(binary);
    return rc;
}

int cli_main(int argc, char **argv)
{
    struct cli_args a;
    char err[512];
    int rc;

    if (cli_parse(argc, argv, &a, err, sizeof(err)) != 0) {
        fprintf(stderr, "cutover: %s\n", err);
        cli_usage_hint(stderr, a.cmd);
        cli_args_done(&a);
        return CLI_EXIT_USAGE;
    }
    if (a.help) {
        cli_command_usage(stdout, a.cmd);
        cli_args_done(&a);
        return CLI_EXIT_OK;
    }
    switch (a.cmd) {
    case CLI_CMD_NONE:
        cli_usage(stderr);
        rc = CLI_EXIT_USAGE;
        break;
    case CLI_CMD_HELP:
        if (a.help_topic != CLI_CMD_NONE)
            cli_command_usage(stdout, a.help_topic);
        else
            cli_usage(stdout);
        rc = CLI_EXIT_OK;
        break;
    case CLI_CMD_VERSION:
        puts("cutover " CUTOVER_VERSION);
        rc = CLI_EXIT_OK;
        break;
    case CLI_CMD_SERVE:
    case CLI_CMD_DEMO:
        /* main runs these itself; reaching here means it did not. */
        fprintf(stderr, "cutover: '%s' is not handled by the client\n", a.name);
        rc = CLI_EXIT_USAGE;
        break;
    case CLI_CMD_CHECK:
        rc = cli_cmd_check(&a);
        break;
    case CLI_CMD_LOGS:
        rc = cli_cmd_logs(&a);
        break;
    default:
        rc = cli_run(&a);
        break;
    }
    cli_args_done(&a);
    return rc;
}
