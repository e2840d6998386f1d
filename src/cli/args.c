/* The command line: the command table and its help, options and arguments parsed and checked
 * before anything is sent, and the config a command names (docs/cli.md). CLI process. */
#include "cli/cli.h"
#include "cli/cli_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pwd.h>
#include "net/addr.h"

#include "config/config.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/text.h"
#include "core/xmalloc.h"

/* --- the command table ------------------------------------------------------------------- */

/* Options a command accepts besides the global ones (-c/--config, --admin, -h/--help). */
enum {
    CLI_OPT_GLOBAL = 0,
    CLI_OPT_JSON = 1u << 0,
    CLI_OPT_TARGET = 1u << 1,
    CLI_OPT_PLAN = 1u << 2,
    CLI_OPT_REASON = 1u << 3,
    CLI_OPT_WAIT = 1u << 4,
    CLI_OPT_ALL = 1u << 5,
    CLI_OPT_AS = 1u << 6,
    CLI_OPT_FORMAT = 1u << 7,
    CLI_OPT_BINARY = 1u << 8,
    CLI_OPT_LIMIT = 1u << 9,
    CLI_OPT_FOLLOW = 1u << 10,
    CLI_OPT_GOVERN = 1u << 12, /* --emergency, --ticket, --risk (deploy) */
    CLI_OPT_UNTIL = 1u << 13,  /* --until-done (watch) */
    CLI_OPT_LINES = 1u << 11,
    CLI_OPT_STORE = 1u << 14, /* was 1u << 12, --emergency's bit: check took --ticket */
    CLI_OPT_SINCE = 1u << 15,
    CLI_OPT_MAX = 1u << 16,     /* --max (hold) */
    CLI_OPT_MESSAGE = 1u << 17, /* --message (maintenance) */
    CLI_OPT_HOLD = 1u << 18,    /* --hold (deploy) */
};

struct cli_command {
    const char *name;
    enum cli_cmd cmd;
    unsigned opts;
    int min_pos, max_pos;
    const char *synopsis; /* after "cutover ", for the command's own help */
    const char *summary;  /* for the full help: "SHORT SYNOPSIS\tWHAT IT DOES" */
    const char *details;  /* the command's own help, options included */
};

static const struct cli_command cli_commands[] = {
    {"serve", CLI_CMD_SERVE, 0, 0, 0, "serve [-c FILE]",
     "serve [-c FILE]\trun the daemon (foreground)",
     "Runs the daemon in the foreground: proxy, rollout engine and admin API on\n"
     "STATE_DIR/cutover.sock. Stop it with SIGTERM or Ctrl-C.\n"},
    {"check", CLI_CMD_CHECK, CLI_OPT_STORE, 0, 0, "check [-c FILE] [--store]",
     "check [-c FILE] [--store]\tvalidate the config (or the store), print services and plans",
     "Loads and validates the config without a daemon. Warnings (unknown keys) go to\n"
     "stderr. Prints each service (listen, protocol, targets, plan) and each plan with\n"
     "its steps. Exit 0 when the config is valid, 2 with the error otherwise.\n"
     "  --store  instead, run SQLite's integrity check on STATE_DIR/cutover.db and on its\n"
     "           backup (cutover.db.backup, if there is one), opened read-only (the daemon\n"
     "           may run); print ok or the problems. Exit 1 when either has problems.\n"},
    {"deploy", CLI_CMD_DEPLOY,
     CLI_OPT_JSON | CLI_OPT_TARGET | CLI_OPT_PLAN | CLI_OPT_REASON | CLI_OPT_WAIT | CLI_OPT_GOVERN |
         CLI_OPT_HOLD,
     2, 2,
     "deploy SERVICE VERSION [--target HOST:PORT ...] [--plan NAME]\n"
     "               [--reason TEXT] [--emergency] [--ticket ID] [--risk low|medium|high]\n"
     "               [--at TIME] [--hold] [--wait] [--json]",
     "deploy SERVICE VERSION [options]\tput VERSION of SERVICE into production",
     "Starts a change that puts VERSION (1-64 of A-Za-z0-9._-) of SERVICE live, on the\n"
     "targets given. Prints the change id, from -> to, its state and message.\n"
     "  --target HOST:PORT  an instance of VERSION (repeat for several)\n"
     "  --plan NAME         the rollout plan (default: the service's plan)\n"
     "  --reason TEXT       why, recorded in the change\n"
     "  --emergency         go through a freeze window (needs --reason); the change\n"
     "                      record names the window and the reason\n"
     "  --ticket ID         the change request this carries out, recorded\n"
     "  --risk LEVEL        low, medium or high, recorded\n"
     "  --at TIME           record the change now and start it then: RFC 3339\n"
     "                      (2026-12-07T22:00:00Z, or with an offset) or +DURATION;\n"
     "                      it waits in the daemon (status shows it, abort cancels it,\n"
     "                      a restart keeps it); freezes are checked at that time\n"
     "  --hold              hold new requests in cutover from now until the switch, then\n"
     "                      send them to the new version (to the old one if the change\n"
     "                      fails); each waits at most 30s. Instant switches only (no plan)\n"
     "  --wait              return only when the change has ended (no timeout)\n"
     "  --json              print the change as the API returns it\n"
     "Exit 1 when the change ended failed, rolled_back, aborted or interrupted, or a\n"
     "freeze window refused it (the message names the window and when it ends).\n"},
    {"plan", CLI_CMD_PLAN, CLI_OPT_PLAN | CLI_OPT_FORMAT, 2, 2,
     "plan SERVICE VERSION [--plan NAME] [--format text|md|json]",
     "plan SERVICE VERSION [options]\tthe written plan of a deploy; changes nothing",
     "Prints what a deploy of VERSION to SERVICE would do, before anything starts: each\n"
     "step (milestone) with the new version's share of traffic, its owner, who is told,\n"
     "and its Plan B (what a rollback does there and what it needs); the time to full\n"
     "traffic (fastest, expected, worst), the worst time to roll back, and the freeze\n"
     "windows it would cross. Changes nothing.\n"
     "  --plan NAME                the plan (default: the service's plan)\n"
     "  --format text|md|json      text (default), Markdown or the API's JSON\n"},
    {"status", CLI_CMD_STATUS, CLI_OPT_JSON, 0, 1, "status [SERVICE] [--json]",
     "status [SERVICE] [--json]\tlive/previous versions, target health, change",
     "Shows, per service (or only SERVICE), the live version and each of its targets\n"
     "with its health, the previous version, and the change in progress.\n"
     "  --json  print the API answer\n"},
    {"promote", CLI_CMD_PROMOTE, CLI_OPT_JSON | CLI_OPT_ALL, 1, 1, "promote [--all] SERVICE",
     "promote [--all] SERVICE\tmove the running change past its step (or to the end)",
     "Moves the change running on SERVICE past its current step (a pause, a pilot...).\n"
     "  --all   skip every remaining step and go to 100%\n"
     "  --json  print the change as the API returns it\n"},
    {"pause", CLI_CMD_PAUSE, CLI_OPT_JSON, 1, 1, "pause SERVICE",
     "pause SERVICE\thold the running change where it is",
     "Holds the change running on SERVICE at its current step until `cutover resume`.\n"},
    {"resume", CLI_CMD_RESUME, CLI_OPT_JSON, 1, 1, "resume SERVICE",
     "resume SERVICE\tcontinue the paused change", "Continues the paused change of SERVICE.\n"},
    {"abort", CLI_CMD_ABORT, CLI_OPT_JSON, 1, 1, "abort SERVICE",
     "abort SERVICE\tstop the running change, keep the old version live",
     "Stops the change running on SERVICE; traffic stays on (or returns to) the version\n"
     "that was live before it.\n"},
    {"rollback", CLI_CMD_ROLLBACK, CLI_OPT_JSON | CLI_OPT_REASON, 1, 1,
     "rollback SERVICE [--reason TEXT]",
     "rollback SERVICE [--reason TEXT]\tswitch back to the previous version",
     "Switches SERVICE back to its previous version once its targets are healthy.\n"
     "  --reason TEXT  why, recorded in the change\n"
     "Exit 1 when there is nothing to roll back to (409) or the rollback failed.\n"},
    {"hold", CLI_CMD_HOLD, CLI_OPT_JSON | CLI_OPT_MAX, 1, 1, "hold SERVICE [--max D] [--json]",
     "hold SERVICE [--max D]\tkeep new requests waiting in cutover until release",
     "Holds SERVICE: new requests, and the next request on open keep-alive connections,\n"
     "wait in cutover; none reaches a backend and none fails. `cutover release SERVICE`\n"
     "sends them to the version live at that moment (deploy or switch meanwhile: health\n"
     "checks go on). A request held longer than --max gets 503 with Retry-After; more\n"
     "than limits.hold_max_requests waiting at once get 503 at once. Recorded with the\n"
     "actor; kept across a restart and an upgrade; shown by `cutover status`.\n"
     "  --max D  how long one request may wait: 500ms, 30s, 2m... (default 30s, at most 1h)\n"
     "  --json   print the service as the API returns it\n"},
    {"release", CLI_CMD_RELEASE, CLI_OPT_JSON, 1, 1, "release SERVICE [--json]",
     "release SERVICE\tend a hold: held requests go to the live version",
     "Ends the hold of SERVICE: the requests waiting go on, to the version live now.\n"
     "Exit 1 when SERVICE is not held.\n"},
    {"maintenance", CLI_CMD_MAINTENANCE, CLI_OPT_JSON | CLI_OPT_MESSAGE, 2, 2,
     "maintenance SERVICE on [--message TEXT] | off",
     "maintenance SERVICE on|off\tanswer every request 503 with a page, or stop",
     "on: every request to SERVICE is answered 503 with Retry-After and a page naming\n"
     "TEXT (HTML for clients that accept text/html, plain text otherwise); no backend\n"
     "sees it, health checks go on. off: SERVICE serves again. Recorded with the actor;\n"
     "kept across a restart and an upgrade; shown by `cutover status`.\n"
     "  --message TEXT  what the page says (one line, at most 1024 bytes)\n"
     "Exit 1 for off when SERVICE is not in maintenance.\n"},
    {"upgrade", CLI_CMD_UPGRADE, CLI_OPT_JSON | CLI_OPT_BINARY, 0, 0, "upgrade [--binary PATH]",
     "upgrade [--binary PATH]\thand the daemon over to a new binary, no drops",
     "Asks the daemon to hand its listeners over to a new binary without dropping a\n"
     "connection.\n"
     "  --binary PATH  the new binary (default: the daemon's own path); the daemon takes\n"
     "                 only one under admin.upgrade_dir (default: its own directory),\n"
     "                 owned by root or its user, not writable by group or others\n"
     "If the daemon goes away before answering, the CLI asks who answers now: a new pid\n"
     "means the upgrade worked.\n"},
    {"reload", CLI_CMD_RELOAD, CLI_OPT_JSON, 0, 0, "reload", "reload\tre-read the config, no drops",
     "Asks the daemon to re-read its config without dropping a connection.\n"},
    {"approve", CLI_CMD_APPROVE, CLI_OPT_JSON | CLI_OPT_AS, 1, 1, "approve CHANGE_ID [--as NAME]",
     "approve CHANGE_ID [--as NAME]\tapprove a change waiting at an approval step",
     "Records an approval of change CHANGE_ID.\n"
     "  --as NAME  the approver (default: $CUTOVER_USER, else your login name;\n"
     "             with a token, the token's name)\n"},
    {"history", CLI_CMD_HISTORY, CLI_OPT_JSON | CLI_OPT_LIMIT, 0, 1,
     "history [SERVICE] [--limit N] [--json]",
     "history [SERVICE] [--json]\tlist changes, newest first",
     "Lists the recorded changes (of SERVICE, or all), newest first: id, time (UTC),\n"
     "service, kind, from -> to, state, actor, message.\n"
     "  --limit N  at most N changes\n"
     "  --json     print the API answer\n"},
    {"events", CLI_CMD_EVENTS, CLI_OPT_JSON, 0, 1, "events [SERVICE] [--json]",
     "events [SERVICE] [--json]\tfollow every change's events as they happen",
     "Prints each event of every change (of SERVICE, or all) the moment the daemon\n"
     "records it: time (UTC), service, change, type, message. Runs until interrupted;\n"
     "when the daemon goes away (an upgrade, a restart) it reconnects and first prints\n"
     "what it missed. Exit 1 when the daemon cannot be reached for 30 s.\n"
     "  --json  one JSON Event object per line\n"},
    {"audit", CLI_CMD_AUDIT, CLI_OPT_JSON | CLI_OPT_SINCE | CLI_OPT_LIMIT, 0, 0,
     "audit [--since D] [--limit N] [--json]",
     "audit [--since D] [--json]\twho did what through the admin API, and what was refused",
     "Lists the admin API's audit log, oldest first: every request that changes something\n"
     "(deploy, rollback, promote, pause, resume, abort, approve, reload, upgrade), whatever\n"
     "its answer, and every refused attempt (401, 403, 409): time (UTC), who (a person, a\n"
     "token's name or a unix user; \"alice as bob\" for --as), the channel and peer (unix\n"
     "uid and login, or TCP address and token), the request, the status and the outcome.\n"
     "  --since D  only the last D (for example 30m, 24h, 7d)\n"
     "  --limit N  at most the newest N lines (default 1000)\n"
     "  --json     print the API answer\n"},
    {"watch", CLI_CMD_WATCH, CLI_OPT_UNTIL, 0, 1, "watch [SERVICE] [--until-done]",
     "watch [SERVICE] [--until-done]\tlive view of changes and per-version traffic",
     "Shows, refreshed every second, each service (or only SERVICE): the live version,\n"
     "the change in progress with its plan as a progress bar, step, weight and time\n"
     "left in the step, the last analysis verdict, the approvals awaited, and per\n"
     "version the request rate, error rate (5xx) and p99 latency over the last second\n"
     "(from /metrics; a short rate history on a terminal). When stdout is not a\n"
     "terminal it prints one plain line per service per second instead.\n"
     "  --until-done  exit when the changes running at the start have ended, with\n"
     "                deploy --wait's exit code (0 completed, 1 otherwise); at once\n"
     "                with 0 when no change runs\n"
     "Exit 1 when the daemon cannot be reached for 30 s.\n"},
    {"report", CLI_CMD_REPORT, CLI_OPT_FORMAT, 1, 1, "report CHANGE_ID [--format md|json]",
     "report CHANGE_ID [--format md|json]\tprint the record of a change",
     "Prints the record of change CHANGE_ID: what changed, who, why, every event.\n"
     "  --format md|json  markdown (default) or JSON\n"},
    {"logs", CLI_CMD_LOGS, CLI_OPT_FOLLOW | CLI_OPT_LINES, 1, 2,
     "logs SERVICE [VERSION] [-f] [-n LINES]",
     "logs SERVICE [VERSION] [-f] [-n N]\tshow the output of managed instances",
     "Prints the last lines of each instance log of VERSION of SERVICE\n"
     "(STATE_DIR/logs/SERVICE/VERSION-INDEX.log), read straight from the state_dir of\n"
     "the config; no daemon needed. Without VERSION: the live version when the daemon\n"
     "answers, else every version's logs. VERSION+baseline: the fresh instances of\n"
     "VERSION a plan with analysis.baseline started. Each file gets a \"==> PATH <==\"\n"
     "header when there are several.\n"
     "  -n, --lines N  the last N lines of each file (default 50; 0: none)\n"
     "  -f, --follow   keep printing what is appended (also after a rotation) until\n"
     "                 Ctrl-C or SIGTERM\n"
     "Exit 1 when there is no log file, 2 for an unknown service.\n"},
    {"note", CLI_CMD_NOTE, 0, 2, 2, "note CHANGE_ID TEXT",
     "note CHANGE_ID TEXT\tadd a lessons-learned note to a change's record",
     "Adds TEXT (1 to 4096 bytes; quote it) to the record of change CHANGE_ID, running\n"
     "or ended, as a `note` event by you: `report` shows it under \"Lessons learned\",\n"
     "and the webhooks and the event stream carry it like any other event. Put -- before\n"
     "a TEXT that starts with -.\n"
     "Exit 2 for an empty or too long text or an unknown change.\n"},
    {"stats", CLI_CMD_STATS, CLI_OPT_JSON | CLI_OPT_SINCE, 0, 1,
     "stats [SERVICE] [--since D] [--json]",
     "stats [SERVICE] [--since D] [--json]\tdelivery figures from the change history",
     "Prints the delivery figures of the changes of SERVICE (or all) started in the\n"
     "window: deployment frequency (deploys completed per day), change failure rate\n"
     "(deploys that failed, were rolled back in their plan, or were rolled back or went\n"
     "down after they completed), time to restore (median and worst; from the failure\n"
     "to the next good state) and time to full traffic (median and worst, from the\n"
     "deploy to its end). docs/decisions.md says what counts as a failure and a restore.\n"
     "  --since D  the window: the last D (7d, 24h, 90m; default 30d)\n"
     "  --json     print the API answer\n"},
    {"verify", CLI_CMD_VERIFY, CLI_OPT_JSON, 0, 1, "verify [CHANGE_ID] [--json]",
     "verify [CHANGE_ID] [--json]\tcheck the hash chain of the change records",
     "Checks that the events of change CHANGE_ID (or of every change) are as cutover\n"
     "recorded them: each event carries a SHA-256 over its predecessor's hash (the first,\n"
     "over the change's own fields) and its own fields. Prints \"N events, chain intact\",\n"
     "or names the first event that does not match. Events recorded before the chain\n"
     "began (an older cutover) are said to be not chained and do not fail the check.\n"
     "  --json  print the API answer\n"
     "Exit 1 when a chain does not match.\n"},
    {"demo", CLI_CMD_DEMO, 0, 0, 0, "demo", "demo\tself-contained demonstration",
     "Runs a self-contained demonstration: a daemon, two backend versions and a\n"
     "rollout, on loopback ports, in a temporary directory.\n"},
};

#define CLI_NCOMMANDS (sizeof(cli_commands) / sizeof(cli_commands[0]))

static const struct cli_command *cli_command_find(enum cli_cmd cmd)
{
    for (size_t i = 0; i < CLI_NCOMMANDS; i++)
        if (cli_commands[i].cmd == cmd)
            return &cli_commands[i];
    return NULL;
}

enum cli_cmd cli_cmd_from_name(const char *name)
{
    for (size_t i = 0; name != NULL && i < CLI_NCOMMANDS; i++)
        if (strcmp(cli_commands[i].name, name) == 0)
            return cli_commands[i].cmd;
    return CLI_CMD_NONE;
}

static const char cli_global_help[] =
    "Options every command takes, anywhere after the command:\n"
    "  -c, --config FILE  the config (default ./cutover.yml); the daemon is found at\n"
    "                     its state_dir/cutover.sock\n"
    "  --admin URL        the admin API instead: unix:/path/to.sock or http(s)://HOST:PORT\n"
    "  -h, --help         this command's help\n";

void cli_command_usage(FILE *out, enum cli_cmd cmd)
{
    const struct cli_command *c = cli_command_find(cmd);

    if (c == NULL) {
        cli_usage(out);
        return;
    }
    fprintf(out, "usage: cutover %s\n\n%s\n%s", c->synopsis, c->details, cli_global_help);
}

void cli_usage(FILE *out)
{
    fputs("cutover " CUTOVER_VERSION
          ": put a new version of a service into production, step by step\n\n"
          "usage: cutover COMMAND [options]\n\ncommands:\n",
          out);
    for (size_t i = 0; i < CLI_NCOMMANDS; i++) {
        const char *sum = cli_commands[i].summary;
        const char *tab = strchr(sum, '\t');
        fprintf(out, "  %-36.*s %s\n", (int)(tab - sum), sum, tab + 1);
    }
    fputs("  help [COMMAND]                       this help, or a command's\n"
          "  --version                            print the version\n\n",
          out);
    fputs(cli_global_help, out);
    fputs("\nThe actor recorded in a change is $CUTOVER_USER, else your login name (a name:\n"
          "1 to 64 of A-Z a-z 0-9 . _ -).\n"
          "$CUTOVER_TOKEN is sent as a bearer token to an http:// or https:// admin URL\n"
          "(admin.listen); the actor is then the token's name in the daemon's tokens file.\n"
          "$CUTOVER_CACERT names the CA file that an https:// admin URL is verified with.\n\n"
          "exit codes: 0 done; 1 the operation failed (daemon unreachable, change failed,\n"
          "rolled back, aborted or interrupted, conflict, daemon error); 2 bad usage, bad\n"
          "config, or a request the daemon rejected (400, 404).\n",
          out);
}

/* --- argument parsing ---------------------------------------------------------------------- */

struct cli_opt {
    const char *lng;
    char shrt;
    unsigned bit;
    int takes_value;
};

static const struct cli_opt cli_opts[] = {
    {"config", 'c', CLI_OPT_GLOBAL, 1}, {"admin", 0, CLI_OPT_GLOBAL, 1},
    {"help", 'h', CLI_OPT_GLOBAL, 0},   {"json", 0, CLI_OPT_JSON, 0},
    {"target", 0, CLI_OPT_TARGET, 1},   {"plan", 0, CLI_OPT_PLAN, 1},
    {"reason", 0, CLI_OPT_REASON, 1},   {"wait", 0, CLI_OPT_WAIT, 0},
    {"all", 0, CLI_OPT_ALL, 0},         {"as", 0, CLI_OPT_AS, 1},
    {"format", 0, CLI_OPT_FORMAT, 1},   {"binary", 0, CLI_OPT_BINARY, 1},
    {"limit", 0, CLI_OPT_LIMIT, 1},     {"follow", 'f', CLI_OPT_FOLLOW, 0},
    {"lines", 'n', CLI_OPT_LINES, 1},   {"emergency", 0, CLI_OPT_GOVERN, 0},
    {"ticket", 0, CLI_OPT_GOVERN, 1},   {"risk", 0, CLI_OPT_GOVERN, 1},
    {"at", 0, CLI_OPT_GOVERN, 1},       {"until-done", 0, CLI_OPT_UNTIL, 0},
    {"store", 0, CLI_OPT_STORE, 0},     {"since", 0, CLI_OPT_SINCE, 1},
    {"max", 0, CLI_OPT_MAX, 1},         {"message", 0, CLI_OPT_MESSAGE, 1},
    {"hold", 0, CLI_OPT_HOLD, 0},
};

#define CLI_NOPTS (sizeof(cli_opts) / sizeof(cli_opts[0]))

int cli_version_valid(const char *s)
{
    size_t n = 0;

    if (s == NULL)
        return 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return n >= 1 && n <= 64;
}

int cli_log_version_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0, k = strlen(CLI_LOG_BASELINE);
    if (n > k && strcmp(s + n - k, CLI_LOG_BASELINE) == 0) {
        char v[72];
        if (n - k >= sizeof(v))
            return 0;
        memcpy(v, s, n - k);
        v[n - k] = '\0';
        return cli_version_valid(v);
    }
    return cli_version_valid(s);
}

static int cli_parse_positive(const char *s, long long max, long long *out)
{
    char *end;

    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0 || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Stores one option's value into a; fills err and returns -EINVAL on a bad value. */
static int cli_apply_opt(struct cli_args *a, const struct cli_opt *o, const char *val,
                         unsigned *seen, char *err, size_t errlen)
{
    unsigned id = (unsigned)(o - cli_opts);

    assert(val != NULL || !o->takes_value);
    if (val == NULL) /* a flag such as --wait */
        val = "";

    /* Only --target may repeat: a second --plan would silently win, which is ambiguous. */
    if (strcmp(o->lng, "target") != 0 && strcmp(o->lng, "help") != 0) {
        if (*seen & (1u << id)) {
            snprintf(err, errlen, "option --%s given twice", o->lng);
            return -EINVAL;
        }
        *seen |= 1u << id;
    }
    if (o->takes_value && *val == '\0' && strcmp(o->lng, "reason") != 0) {
        snprintf(err, errlen, "option --%s needs a non-empty value", o->lng);
        return -EINVAL;
    }
    if (strcmp(o->lng, "config") == 0) {
        a->config = val;
        a->config_given = 1;
    } else if (strcmp(o->lng, "admin") == 0) {
        a->admin = val;
    } else if (strcmp(o->lng, "help") == 0) {
        a->help = 1;
    } else if (strcmp(o->lng, "json") == 0) {
        a->json = 1;
    } else if (strcmp(o->lng, "target") == 0) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (addr_parse(val, &ss, &sl) != 0) {
            snprintf(err, errlen,
                     "--target '%s': expected HOST:PORT (a numeric IP or localhost, "
                     "port 1-65535), e.g. 127.0.0.1:9002",
                     val);
            return -EINVAL;
        }
        if (a->ntargets >= CLI_MAX_TARGETS) {
            snprintf(err, errlen, "at most %d --target options", CLI_MAX_TARGETS);
            return -EINVAL;
        }
        a->targets = xrealloc(a->targets, (a->ntargets + 1) * sizeof(*a->targets));
        a->targets[a->ntargets++] = val;
    } else if (strcmp(o->lng, "plan") == 0) {
        a->plan = val;
    } else if (strcmp(o->lng, "reason") == 0) {
        a->reason = val;
    } else if (strcmp(o->lng, "wait") == 0) {
        a->wait = 1;
    } else if (strcmp(o->lng, "all") == 0) {
        a->all = 1;
    } else if (strcmp(o->lng, "as") == 0) {
        a->as = val;
    } else if (strcmp(o->lng, "format") == 0) {
        if (strcmp(val, "md") != 0 && strcmp(val, "json") != 0 &&
            (a->cmd != CLI_CMD_PLAN || strcmp(val, "text") != 0)) {
            snprintf(err, errlen, "--format must be %s, got '%s'",
                     a->cmd == CLI_CMD_PLAN ? "text, md or json" : "md or json", val);
            return -EINVAL;
        }
        a->format = val;
        a->format_given = 1;
    } else if (strcmp(o->lng, "emergency") == 0) {
        a->emergency = 1;
    } else if (strcmp(o->lng, "ticket") == 0) {
        if (!cli_version_valid(val)) {
            snprintf(err, errlen, "--ticket must be 1-64 characters of A-Z a-z 0-9 . _ -, got '%s'",
                     val);
            return -EINVAL;
        }
        a->ticket = val;
    } else if (strcmp(o->lng, "risk") == 0) {
        if (strcmp(val, "low") != 0 && strcmp(val, "medium") != 0 && strcmp(val, "high") != 0) {
            snprintf(err, errlen, "--risk must be low, medium or high, got '%s'", val);
            return -EINVAL;
        }
        a->risk = val;
    } else if (strcmp(o->lng, "binary") == 0) {
        a->binary = val;
    } else if (strcmp(o->lng, "limit") == 0) {
        long long v;
        if (cli_parse_positive(val, 1000000, &v) != 0) {
            snprintf(err, errlen, "--limit must be a whole number from 1 to 1000000, got '%s'",
                     val);
            return -EINVAL;
        }
        a->limit = (long)v;
    } else if (strcmp(o->lng, "follow") == 0) {
        a->follow = 1;
    } else if (strcmp(o->lng, "store") == 0) {
        a->store = 1;
    } else if (strcmp(o->lng, "at") == 0) {
        a->at = val; /* RFC 3339 or +DURATION: the daemon reads it (its clock decides) */
    } else if (strcmp(o->lng, "since") == 0) {
        uint64_t ms;
        if (duration_parse(val, &ms) != 0) {
            snprintf(err, errlen, "--since must be a duration such as 30m, 24h or 7d, got '%s'",
                     val);
            return -EINVAL;
        }
        a->since = val;
    } else if (strcmp(o->lng, "until-done") == 0) {
        a->until_done = 1;
    } else if (strcmp(o->lng, "hold") == 0) {
        a->hold = 1;
    } else if (strcmp(o->lng, "message") == 0) {
        a->message = val;
    } else if (strcmp(o->lng, "max") == 0) {
        uint64_t ms;
        if (duration_parse(val, &ms) != 0 || ms == 0 || ms > 3600000) {
            snprintf(err, errlen,
                     "--max must be a duration like 500ms, 30s or 2m (more than 0, at most 1h), "
                     "got '%s'",
                     val);
            return -EINVAL;
        }
        a->max_ms = ms;
    } else if (strcmp(o->lng, "lines") == 0) {
        long long v;
        /* 0 is allowed (print nothing, then follow), so "0" is handled apart. */
        if (strcmp(val, "0") == 0)
            v = 0;
        else if (cli_parse_positive(val, CLI_LOGS_MAX_LINES, &v) != 0) {
            snprintf(err, errlen, "--lines must be a whole number from 0 to %ld, got '%s'",
                     CLI_LOGS_MAX_LINES, val);
            return -EINVAL;
        }
        a->lines = (long)v;
    }
    return 0;
}

/* Finds the option arg names ("--name", "--name=value", "-c", "-cFILE"); sets *val to an
 * attached value or NULL. */
static const struct cli_opt *cli_opt_find(const char *arg, const char **val)
{
    *val = NULL;
    if (arg[1] == '-') {
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t i = 0; i < CLI_NOPTS; i++) {
            if (strlen(cli_opts[i].lng) == n && strncmp(cli_opts[i].lng, name, n) == 0) {
                *val = eq ? eq + 1 : NULL;
                return &cli_opts[i];
            }
        }
        return NULL;
    }
    for (size_t i = 0; i < CLI_NOPTS; i++) {
        if (cli_opts[i].shrt != 0 && cli_opts[i].shrt == arg[1]) {
            *val = arg[2] != '\0' ? arg + 2 : NULL;
            return &cli_opts[i];
        }
    }
    return NULL;
}

static int cli_assign_positional(struct cli_args *a, const struct cli_command *c, int npos,
                                 char **pos, char *err, size_t errlen)
{
    if (c->cmd == CLI_CMD_HELP) {
        if (npos == 1) {
            a->help_topic = cli_cmd_from_name(pos[0]);
            if (a->help_topic == CLI_CMD_NONE) {
                snprintf(err, errlen, "unknown command '%s'", pos[0]);
                return -EINVAL;
            }
        }
        return 0;
    }
    if (npos < c->min_pos) {
        const char *what = "SERVICE";
        if (c->cmd == CLI_CMD_APPROVE || c->cmd == CLI_CMD_REPORT ||
            (c->cmd == CLI_CMD_NOTE && npos == 0))
            what = "CHANGE_ID";
        else if (c->cmd == CLI_CMD_NOTE)
            what = "TEXT";
        else if ((c->cmd == CLI_CMD_DEPLOY || c->cmd == CLI_CMD_PLAN) && npos == 1)
            what = "VERSION";
        else if (c->cmd == CLI_CMD_MAINTENANCE && npos == 1)
            what = "on or off";
        snprintf(err, errlen, "%s: missing %s", c->name, what);
        return -EINVAL;
    }
    switch (c->cmd) {
    case CLI_CMD_DEPLOY:
    case CLI_CMD_PLAN:
        a->version = pos[1];
        if (!cli_version_valid(a->version)) {
            snprintf(err, errlen, "%s: VERSION '%s' must be 1-64 characters of A-Z a-z 0-9 . _ -",
                     c->name, a->version);
            return -EINVAL;
        }
        a->service = pos[0];
        if (a->emergency && (a->reason == NULL || a->reason[0] == '\0')) {
            snprintf(err, errlen, "deploy: --emergency needs --reason TEXT (recorded with it)");
            return -EINVAL;
        }
        break;
    case CLI_CMD_LOGS:
        a->service = pos[0];
        if (npos == 2) {
            a->version = pos[1];
            if (!cli_log_version_valid(a->version)) {
                snprintf(err, errlen,
                         "logs: VERSION '%s' must be 1-64 characters of A-Z a-z 0-9 . _ - "
                         "(then " CLI_LOG_BASELINE " for a plan's baseline)",
                         a->version);
                return -EINVAL;
            }
        }
        break;
    case CLI_CMD_MAINTENANCE:
        a->service = pos[0];
        if (strcmp(pos[1], "on") != 0 && strcmp(pos[1], "off") != 0) {
            snprintf(err, errlen, "maintenance: expected on or off after SERVICE, got '%s'",
                     pos[1]);
            return -EINVAL;
        }
        a->on = pos[1][1] == 'n';
        if (!a->on && a->message != NULL) {
            snprintf(err, errlen, "maintenance: --message goes with on, not off");
            return -EINVAL;
        }
        break;
    case CLI_CMD_VERIFY:
        if (npos == 0)
            break;
        /* fall through */
    case CLI_CMD_NOTE:
    case CLI_CMD_APPROVE:
    case CLI_CMD_REPORT:
        if (c->cmd == CLI_CMD_NOTE)
            a->text = pos[1];
        if (cli_parse_positive(pos[0], INT64_MAX, &a->change_id) != 0) {
            snprintf(err, errlen, "%s: CHANGE_ID must be a positive whole number, got '%s'",
                     c->name, pos[0]);
            return -EINVAL;
        }
        break;
    default:
        if (npos == 1)
            a->service = pos[0];
        break;
    }
    if (a->service != NULL && *a->service == '\0') {
        snprintf(err, errlen, "%s: SERVICE must not be empty", c->name);
        return -EINVAL;
    }
    return 0;
}

int cli_parse(int argc, char **argv, struct cli_args *a, char *err, size_t errlen)
{
    static const struct cli_command help_cmd = {"help", CLI_CMD_HELP,     0,  0,
                                                1,      "help [COMMAND]", "", ""};
    const struct cli_command *c = NULL;
    char *pos[CLI_MAX_POSITIONAL] = {NULL};
    int npos = 0, only_pos = 0;
    unsigned seen = 0;

    memset(a, 0, sizeof(*a));
    a->config = CLI_DEFAULT_CONFIG;
    a->format = "md";
    a->lines = CLI_LOGS_DEFAULT_LINES;
    if (errlen > 0)
        err[0] = '\0';
    if (argc < 2 || argv[1] == NULL) {
        a->cmd = CLI_CMD_NONE;
        return 0;
    }
    a->name = argv[1];
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        a->cmd = CLI_CMD_VERSION;
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        c = &help_cmd;
    } else if (argv[1][0] == '-') {
        snprintf(err, errlen, "put the command first: cutover COMMAND [options] (got '%s')",
                 argv[1]);
        return -EINVAL;
    } else {
        a->cmd = cli_cmd_from_name(argv[1]);
        c = cli_command_find(a->cmd);
        if (c == NULL) {
            snprintf(err, errlen, "unknown command '%s' (see `cutover help`)", argv[1]);
            return -EINVAL;
        }
    }
    a->cmd = c->cmd;

    for (int i = 2; i < argc; i++) {
        char *arg = argv[i];
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            const char *val;
            const struct cli_opt *o;
            if (strcmp(arg, "--") == 0) {
                only_pos = 1;
                continue;
            }
            o = cli_opt_find(arg, &val);
            if (o == NULL) {
                snprintf(err, errlen, "%s: unknown option '%s'", c->name, arg);
                return -EINVAL;
            }
            if (o->bit != CLI_OPT_GLOBAL && !(c->opts & o->bit)) {
                snprintf(err, errlen, "%s: option --%s does not apply to this command", c->name,
                         o->lng);
                return -EINVAL;
            }
            if (!o->takes_value && val != NULL) {
                snprintf(err, errlen, "%s: option --%s takes no value", c->name, o->lng);
                return -EINVAL;
            }
            if (o->takes_value && val == NULL) {
                if (i + 1 >= argc || argv[i + 1] == NULL) {
                    snprintf(err, errlen, "%s: option --%s needs a value", c->name, o->lng);
                    return -EINVAL;
                }
                val = argv[++i];
            }
            if (cli_apply_opt(a, o, val, &seen, err, errlen) != 0)
                return -EINVAL;
            continue;
        }
        if (npos >= c->max_pos) {
            snprintf(err, errlen, "%s: unexpected argument '%s'", c->name, arg);
            return -EINVAL;
        }
        pos[npos++] = arg;
    }
    /* `deploy -h` must print the help even though SERVICE is missing. */
    if (a->help)
        return 0;
    return cli_assign_positional(a, c, npos, pos, err, errlen);
}

void cli_args_done(struct cli_args *a)
{
    free(a->targets);
    a->targets = NULL;
    a->ntargets = 0;
}

/* --- exit codes and small helpers ------------------------------------------------------------ */

int cli_admin_parse(const char *url, char **base, char **sock)
{
    *base = NULL;
    *sock = NULL;
    if (url == NULL)
        return -EINVAL;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        /* Accept unix:///run/x.sock as well as unix:/run/x.sock. */
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        if (*p == '\0')
            return -EINVAL;
        *sock = xstrdup(p);
        *base = xstrdup("http://localhost");
        return 0;
    }
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
        const char *host = url + (url[4] == 's' ? 8 : 7);
        size_t n = strlen(url);
        if (*host == '\0' || *host == '/' || strpbrk(url, " ?#") != NULL)
            return -EINVAL;
        while (n > 0 && url[n - 1] == '/')
            n--;
        *base = xstrndup(url, n);
        return 0;
    }
    return -EINVAL;
}

/* Loads the config named by a; prints warnings (when warn) and returns 0, or prints the error
 * and returns CLI_EXIT_USAGE. */
int cli_load_config(const struct cli_args *a, int warn, struct config **cfg)
{
    char err[1024] = "";
    int rc = config_load(a->config, cfg, err, sizeof(err));

    if (rc != 0) {
        if (err[0] != '\0')
            fprintf(stderr, "cutover: %s\n", err);
        else
            fprintf(stderr, "cutover: %s: %s\n", a->config, strerror(-rc));
        if (rc == -ENOENT && !a->config_given)
            fputs("cutover: give the config with -c FILE, or the daemon with --admin URL\n",
                  stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; warn && i < (*cfg)->nwarnings; i++)
        fprintf(stderr, "cutover: warning: %s\n", (*cfg)->warnings[i]);
    return 0;
}

void cli_usage_hint(FILE *out, enum cli_cmd cmd)
{
    const struct cli_command *c = cli_command_find(cmd);
    if (c != NULL && cmd != CLI_CMD_NONE)
        fprintf(out, "usage: cutover %s\n(see `cutover %s --help`)\n", c->synopsis, c->name);
}
