/* The command-line client of the admin API (see cli.h, docs/cli.md). Parses and validates the
 * arguments first, then finds the daemon (--admin, or config -> state_dir/cutover.sock), sends
 * one or two HTTP/JSON requests with libcurl and renders the answers with jansson. Owns nothing
 * beyond one command's lifetime. CLI process, main thread only. */
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

#ifndef CUTOVER_VERSION
#define CUTOVER_VERSION CUTOVER_RELEASE
#endif

#define CLI_CONNECT_TIMEOUT_MS 2000L
#define CLI_HANDOVER_TRIES 100 /* x CLI_HANDOVER_WAIT_MS: a successor's 10 s to take over */
#define CLI_HANDOVER_WAIT_MS 100
#define CLI_EVENTS_GIVE_UP_S 30 /* `events` stops when the daemon is away this long */
#define CLI_REQUEST_TIMEOUT_MS 120000L
/* A history of many changes is the largest answer; anything beyond this is not our daemon. */
#define CLI_MAX_BODY ((size_t)64 * 1024 * 1024)
#define CLI_MAX_TARGETS 64
#define CLI_MAX_POSITIONAL 2

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
     "answers, else every version's logs. Each file gets a \"==> PATH <==\" header\n"
     "when there are several.\n"
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
            if (!cli_version_valid(a->version)) {
                snprintf(err, errlen,
                         "logs: VERSION '%s' must be 1-64 characters of A-Z a-z 0-9 . _ -",
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

static const char *cli_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *cli_jstr_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = cli_jstr(o, key);
    return s != NULL ? s : dflt;
}

/* Writes s as core/text shows free text on a terminal: control characters, C1 controls and bidi
 * overrides as escapes (\n, \x1b, \u202e), so a newline cannot start a forged line and an
 * escape sequence cannot reach the terminal; pads to width. */
static void cli_put_clean(FILE *out, const char *s, int width)
{
    char *e = text_term(s != NULL ? s : "");
    int n = (int)strlen(e);

    fputs(e, out);
    free(e);
    for (; n < width; n++)
        fputc(' ', out);
}

/* The width cli_put_clean gives s. */
static int cli_clean_len(const char *s)
{
    char *e = text_term(s != NULL ? s : "");
    int n = (int)strlen(e);
    free(e);
    return n;
}

/* "2026-11-23T07:00:00.000Z" -> "2026-11-23 07:00:00"; other shapes unchanged. */
static void cli_short_time(const char *ts, char *buf, size_t n)
{
    if (ts == NULL) {
        snprintf(buf, n, "-");
        return;
    }
    if (strlen(ts) >= 19 && ts[10] == 'T') {
        snprintf(buf, n, "%.10s %.8s", ts, ts + 11);
        return;
    }
    snprintf(buf, n, "%s", ts);
}

/* --- rendering ------------------------------------------------------------------------------- */

static void cli_render_version(FILE *out, const char *label, const json_t *ver)
{
    const json_t *targets;
    size_t i;
    json_t *t;

    fprintf(out, "  %-9s ", label);
    if (!json_is_object(ver)) {
        fputs("(none)\n", out);
        return;
    }
    cli_put_clean(out, cli_jstr_or(ver, "name", "?"), 0);
    fputc('\n', out);
    targets = json_object_get(ver, "targets");
    json_array_foreach(targets, i, t)
    {
        const char *addr = json_is_string(t) ? json_string_value(t) : cli_jstr(t, "address");
        const char *state = cli_jstr(t, "state");
        if (state == NULL && json_is_boolean(json_object_get(t, "healthy")))
            state = json_is_true(json_object_get(t, "healthy")) ? "healthy" : "unhealthy";
        fputs("            ", out);
        cli_put_clean(out, addr ? addr : "?", 22);
        fprintf(out, " %s\n", state ? state : "");
    }
}

/* "3: deploy v1 -> v2, running" with what is known. */
static void cli_render_change_line(FILE *out, const json_t *ch)
{
    const json_t *id = json_object_get(ch, "id");

    if (json_is_integer(id))
        fprintf(out, "%" JSON_INTEGER_FORMAT ": ", json_integer_value(id));
    cli_put_clean(out, cli_jstr_or(ch, "kind", "change"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(ch, "from", "(none)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(ch, "to", "?"), 0);
    fputs(", ", out);
    cli_put_clean(out, cli_jstr_or(ch, "state", "?"), 0);
}

/* The plan's progress: step, split, time left, why it holds, the last analysis verdict. */
static void cli_render_progress(FILE *out, const json_t *p)
{
    if (!json_is_object(p))
        return;
    fprintf(out, "  %-9s ", "plan:");
    cli_put_clean(out, cli_jstr_or(p, "plan", "?"), 0);
    fprintf(out, ", step %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT " (",
            json_integer_value(json_object_get(p, "step")),
            json_integer_value(json_object_get(p, "steps")));
    cli_put_clean(out, cli_jstr_or(p, "step_description", "?"), 0);
    fputs("), ", out);
    cli_put_clean(out, cli_jstr_or(p, "state", "?"), 0);
    const json_t *left = json_object_get(p, "step_remaining_ms");
    if (json_is_integer(left))
        fprintf(out, ", %.1fs left", (double)json_integer_value(left) / 1000.0);
    fputc('\n', out);
    fprintf(out, "  %-9s %" JSON_INTEGER_FORMAT "%% of traffic to the new version%s\n",
            "split:", json_integer_value(json_object_get(p, "weight")),
            json_is_true(json_object_get(p, "pilot")) ? ", plus the pilot cohort" : "");
    if (cli_jstr(p, "hold_reason") != NULL) {
        fprintf(out, "  %-9s ", "holding:");
        cli_put_clean(out, cli_jstr(p, "hold_reason"), 0);
        fputc('\n', out);
    }
    const json_t *ap = json_object_get(p, "approvals");
    if (json_is_array(ap) && json_array_size(ap) > 0) {
        size_t i;
        json_t *v;
        fprintf(out, "  %-9s", "approved:");
        json_array_foreach(ap, i, v)
        {
            fputc(' ', out);
            cli_put_clean(out, json_string_value(v) ? json_string_value(v) : "?", 0);
        }
        fputc('\n', out);
    }
    const json_t *la = json_object_get(p, "last_analysis");
    if (json_is_object(la)) {
        fprintf(out, "  %-9s ", "analysis:");
        cli_put_clean(out, cli_jstr_or(la, "result", "?"), 0);
        fputs(": ", out);
        cli_put_clean(out, cli_jstr_or(la, "detail", ""), 0);
        fputc('\n', out);
    }
}

/* A rolling replacement: where the batches are ("replacing, batch 2: 1 of 3 new healthy"). */
static void cli_render_rolling(FILE *out, const json_t *ro)
{
    if (!json_is_object(ro))
        return;
    fprintf(out, "  %-9s ", "rolling:");
    cli_put_clean(out, cli_jstr_or(ro, "state", "?"), 0);
    fprintf(out,
            ", batch %" JSON_INTEGER_FORMAT ": %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
            " new healthy (goal %" JSON_INTEGER_FORMAT "), %" JSON_INTEGER_FORMAT
            " old in rotation (max_surge %" JSON_INTEGER_FORMAT
            ", max_unavailable %" JSON_INTEGER_FORMAT ")\n",
            json_integer_value(json_object_get(ro, "batch")),
            json_integer_value(json_object_get(ro, "new_healthy")),
            json_integer_value(json_object_get(ro, "instances")),
            json_integer_value(json_object_get(ro, "goal")),
            json_integer_value(json_object_get(ro, "old_in_rotation")),
            json_integer_value(json_object_get(ro, "max_surge")),
            json_integer_value(json_object_get(ro, "max_unavailable")));
}

/* The end of a change the daemon could not save to its store yet (it retries): the one line an
 * operator needs to see why the service refuses deploys. */
static void cli_render_unsaved(FILE *out, const char *label, const json_t *u)
{
    if (!json_is_object(u))
        return;
    fprintf(out, "  %-9s ", label);
    cli_put_clean(out, cli_jstr_or(u, "message", "not saved to the store yet"), 0);
    fputc('\n', out);
}

/* Why the daemon takes no change at all (its store is lost or corrupt), when it says so. */
static void cli_render_store_problem(FILE *out, const json_t *svc)
{
    const char *why = cli_jstr(svc, "store_problem");
    if (why == NULL)
        return;
    fprintf(out, "  %-9s ", "store:");
    cli_put_clean(out, why, 0);
    fputs("; deploys and rollbacks are refused\n", out);
}

/* Why no version of the service can serve (its live version failed and nothing took over). */
static void cli_render_down(FILE *out, const json_t *svc)
{
    const char *why = cli_jstr(svc, "down");
    if (why == NULL)
        return;
    fprintf(out, "  %-9s ", "DOWN:");
    cli_put_clean(out, why, 0);
    fputc('\n', out);
}

/* "held:" and "maintenance:" lines while the service is held or in maintenance. */
static void cli_render_mode(FILE *out, const json_t *svc)
{
    const json_t *h = json_object_get(svc, "hold"), *m = json_object_get(svc, "maintenance");
    char t[32], d[24];
    if (json_is_object(h)) {
        const json_t *max = json_object_get(h, "max_ms"), *ch = json_object_get(h, "change");
        cli_short_time(cli_jstr(h, "since"), t, sizeof(t));
        fprintf(out, "  %-9s since %s, each request waits at most %s", "HELD:", t,
                duration_format(json_is_integer(max) ? (uint64_t)json_integer_value(max) : 0, d,
                                sizeof(d)));
        if (json_is_integer(ch))
            fprintf(out, " (deploy --hold, change %" JSON_INTEGER_FORMAT ")",
                    json_integer_value(ch));
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr_or(h, "actor", "?"), 0);
        fputs("); cutover release ends it\n", out);
    }
    if (json_is_object(m)) {
        cli_short_time(cli_jstr(m, "since"), t, sizeof(t));
        fprintf(out, "  %-9s since %s, every request answered 503", "MAINTENANCE:", t);
        if (cli_jstr(m, "message") != NULL) {
            fputs(": \"", out);
            cli_put_clean(out, cli_jstr(m, "message"), 0);
            fputc('"', out);
        }
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr_or(m, "actor", "?"), 0);
        fputs(")\n", out);
    }
}

/* A deploy that waits for its time (deploy --at). */
static void cli_render_scheduled(FILE *out, const json_t *svc)
{
    const json_t *q = json_object_get(svc, "scheduled");
    if (!json_is_object(q))
        return;
    fprintf(out, "  %-9s change %lld: deploy ",
            "scheduled:", (long long)json_integer_value(json_object_get(q, "id")));
    cli_put_clean(out, cli_jstr_or(q, "version", "?"), 0);
    fputs(" at ", out);
    cli_put_clean(out, cli_jstr_or(q, "at", "?"), 0);
    if (cli_jstr(q, "plan") != NULL) {
        fputs(" with plan ", out);
        cli_put_clean(out, cli_jstr(q, "plan"), 0);
    }
    fputs(" (by ", out);
    cli_put_clean(out, cli_jstr_or(q, "actor", "?"), 0);
    fputs("; cutover abort cancels it)\n", out);
}

void cli_render_service(FILE *out, const json_t *svc)
{
    const json_t *ch = json_object_get(svc, "change");

    cli_put_clean(out, cli_jstr_or(svc, "name", "?"), 0);
    fprintf(out, " (%s, listen ", cli_jstr_or(svc, "protocol", "?"));
    cli_put_clean(out, cli_jstr_or(svc, "listen", "?"), 0);
    fputs(")\n", out);
    cli_render_version(out, "live:", json_object_get(svc, "live"));
    cli_render_version(out, "previous:", json_object_get(svc, "previous"));
    cli_render_down(out, svc);
    cli_render_mode(out, svc);
    cli_render_scheduled(out, svc);
    fprintf(out, "  %-9s ", "change:");
    if (!json_is_object(ch)) {
        fputs("none in progress\n", out);
        cli_render_rolling(out, json_object_get(svc, "rolling"));
        cli_render_unsaved(out, "store:", json_object_get(svc, "unsaved"));
        cli_render_store_problem(out, svc);
        return;
    }
    cli_render_change_line(out, ch);
    if (cli_jstr(ch, "actor") != NULL) {
        fputs(" (by ", out);
        cli_put_clean(out, cli_jstr(ch, "actor"), 0);
        fputc(')', out);
    }
    fputc('\n', out);
    if (cli_jstr(ch, "message") != NULL) {
        fputs("            ", out);
        cli_put_clean(out, cli_jstr(ch, "message"), 0);
        fputc('\n', out);
    }
    cli_render_progress(out, json_object_get(ch, "progress"));
    cli_render_rolling(out, json_object_get(svc, "rolling"));
    cli_render_unsaved(out, "store:", json_object_get(svc, "unsaved"));
    cli_render_store_problem(out, svc);
}

void cli_render_status(FILE *out, const json_t *root)
{
    const json_t *list = json_object_get(root, "services");
    size_t i;
    json_t *svc;

    if (!json_is_array(list)) {
        cli_render_service(out, root);
        return;
    }
    if (json_array_size(list) == 0) {
        fputs("no services configured\n", out);
        return;
    }
    json_array_foreach(list, i, svc)
    {
        if (i > 0)
            fputc('\n', out);
        cli_render_service(out, svc);
    }
}

void cli_render_change(FILE *out, const json_t *change)
{
    fputs("change ", out);
    const json_t *id = json_object_get(change, "id");
    if (json_is_integer(id))
        fprintf(out, "%" JSON_INTEGER_FORMAT ": ", json_integer_value(id));
    cli_put_clean(out, cli_jstr_or(change, "kind", "change"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(change, "service", "?"), 0);
    fputc(' ', out);
    cli_put_clean(out, cli_jstr_or(change, "from", "(none)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(change, "to", "?"), 0);
    fputs(": ", out);
    cli_put_clean(out, cli_jstr_or(change, "state", "?"), 0);
    fputc('\n', out);
    if (cli_jstr(change, "message") != NULL) {
        fputs("  ", out);
        cli_put_clean(out, cli_jstr(change, "message"), 0);
        fputc('\n', out);
    }
    const json_t *u = json_object_get(change, "unsaved");
    if (json_is_object(u)) {
        fputs("  ", out);
        cli_put_clean(out, cli_jstr_or(u, "message", "not saved to the store yet"), 0);
        fputc('\n', out);
    }
}

enum {
    CLI_COL_ID,
    CLI_COL_TIME,
    CLI_COL_SERVICE,
    CLI_COL_KIND,
    CLI_COL_FROMTO,
    CLI_COL_STATE,
    CLI_COL_ACTOR,
    CLI_COL_MESSAGE,
    CLI_NCOLS
};

/* Fills the cells of one history row; cell strings live in bufs or in the change. An end the
 * daemon has not saved yet shows as "completed (unsaved)". */
static void cli_history_cells(const json_t *ch, const char *cells[CLI_NCOLS], char *idbuf,
                              size_t idlen, char *tbuf, size_t tlen, char *ftbuf, size_t ftlen,
                              char *stbuf, size_t stlen)
{
    const json_t *id = json_object_get(ch, "id");

    if (json_is_integer(id))
        snprintf(idbuf, idlen, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    else
        snprintf(idbuf, idlen, "?");
    cli_short_time(cli_jstr(ch, "created"), tbuf, tlen);
    snprintf(ftbuf, ftlen, "%s -> %s", cli_jstr_or(ch, "from", "-"), cli_jstr_or(ch, "to", "-"));
    cells[CLI_COL_ID] = idbuf;
    cells[CLI_COL_TIME] = tbuf;
    cells[CLI_COL_SERVICE] = cli_jstr_or(ch, "service", "-");
    cells[CLI_COL_KIND] = cli_jstr_or(ch, "kind", "-");
    cells[CLI_COL_FROMTO] = ftbuf;
    cells[CLI_COL_STATE] = cli_jstr_or(ch, "state", "-");
    if (json_is_object(json_object_get(ch, "unsaved"))) {
        snprintf(stbuf, stlen, "%s (unsaved)", cells[CLI_COL_STATE]);
        cells[CLI_COL_STATE] = stbuf;
    }
    cells[CLI_COL_ACTOR] = cli_jstr_or(ch, "actor", "-");
    cells[CLI_COL_MESSAGE] = cli_jstr_or(ch, "message", "");
}

static void cli_render_audit(FILE *out, const json_t *root)
{
    const json_t *list = json_object_get(root, "audit"), *e;
    size_t i;
    if (json_array_size(list) == 0) {
        fputs("no audit lines recorded\n", out);
        return;
    }
    json_array_foreach(list, i, e)
    {
        char t[64], st[16];
        cli_short_time(cli_jstr(e, "time"), t, sizeof(t));
        snprintf(st, sizeof(st), "%lld",
                 (long long)json_integer_value(json_object_get(e, "status")));
        const char *cells[] = {t,
                               cli_jstr_or(e, "actor", "-"),
                               cli_jstr_or(e, "channel", "-"),
                               cli_jstr_or(e, "peer", "-"),
                               cli_jstr_or(e, "method", "-"),
                               cli_jstr_or(e, "path", "-"),
                               st,
                               cli_jstr_or(e, "outcome", "")};
        for (size_t c = 0; c < sizeof(cells) / sizeof(cells[0]); c++) {
            if (c > 0)
                fputs(c == 3 ? " [" : c == 4 ? "] " : " ", out);
            cli_put_clean(out, cells[c], 0);
        }
        fputc('\n', out);
    }
}

void cli_render_history(FILE *out, const json_t *root)
{
    static const char *const heads[CLI_NCOLS] = {"ID",         "TIME (UTC)", "SERVICE", "KIND",
                                                 "FROM -> TO", "STATE",      "ACTOR",   "MESSAGE"};
    const json_t *list = json_object_get(root, "changes");
    int width[CLI_NCOLS];
    const char *cells[CLI_NCOLS];
    char idbuf[32], tbuf[64], ftbuf[160], stbuf[64];
    size_t i;
    json_t *ch;

    if (json_array_size(list) == 0) {
        fputs("no changes recorded\n", out);
        return;
    }
    for (int c = 0; c < CLI_NCOLS; c++)
        width[c] = (int)strlen(heads[c]);
    json_array_foreach(list, i, ch)
    {
        cli_history_cells(ch, cells, idbuf, sizeof(idbuf), tbuf, sizeof(tbuf), ftbuf, sizeof(ftbuf),
                          stbuf, sizeof(stbuf));
        for (int c = 0; c < CLI_NCOLS - 1; c++) {
            int n = cli_clean_len(cells[c]);
            if (n > width[c])
                width[c] = n;
        }
    }
    for (int c = 0; c < CLI_NCOLS; c++) {
        cli_put_clean(out, heads[c], c == CLI_NCOLS - 1 ? 0 : width[c]);
        fputs(c == CLI_NCOLS - 1 ? "\n" : "  ", out);
    }
    json_array_foreach(list, i, ch)
    {
        cli_history_cells(ch, cells, idbuf, sizeof(idbuf), tbuf, sizeof(tbuf), ftbuf, sizeof(ftbuf),
                          stbuf, sizeof(stbuf));
        for (int c = 0; c < CLI_NCOLS; c++) {
            cli_put_clean(out, cells[c], c == CLI_NCOLS - 1 ? 0 : width[c]);
            fputs(c == CLI_NCOLS - 1 ? "\n" : "  ", out);
        }
    }
}

/* Writes s as one markdown table cell (core/text): pipes, HTML and Markdown escaped, line
 * breaks and controls as escapes, so the text can neither end the cell nor add a row. */
static void cli_md_cell(FILE *out, const char *s)
{
    char *e = text_md(s != NULL ? s : "");
    fputs(e, out);
    free(e);
}

static void cli_md_row(FILE *out, const char *key, const char *val)
{
    fprintf(out, "| %s | ", key);
    cli_md_cell(out, val ? val : "-");
    fputs(" |\n", out);
}

/* A number of seconds as a duration: "3m5s", "0s". */
static const char *cli_secs(const json_t *o, const char *key, char *buf, size_t n)
{
    const json_t *v = json_object_get(o, key);
    double s = json_is_number(v) ? json_number_value(v) : 0;
    return duration_format(s > 0 ? (uint64_t)(s * 1000 + 0.5) : 0, buf, n);
}

void cli_render_preview(FILE *out, const json_t *p, int md)
{
    const json_t *t = json_object_get(p, "time_to_full_s"), *h = json_object_get(p, "health");
    const json_t *after = json_object_get(p, "after"), *steps = json_object_get(p, "steps");
    char d1[32], d2[32], d3[32], d4[32];
    size_t i;
    json_t *st;

    fputs(md ? "# Plan: " : "plan for ", out);
    cli_put_clean(out, cli_jstr_or(p, "service", "?"), 0);
    fputs(": ", out);
    cli_put_clean(out, cli_jstr_or(p, "from", "(nothing live)"), 0);
    fputs(" -> ", out);
    cli_put_clean(out, cli_jstr_or(p, "to", "?"), 0);
    fputs(" with plan ", out);
    cli_put_clean(out, cli_jstr_or(p, "plan", "(none: instant switch)"), 0);
    fputs(", owner ", out);
    cli_put_clean(out, cli_jstr_or(p, "owner", "(none named)"), 0);
    fputs(md ? "\n\n" : "\n", out);
    fprintf(out, "%shealth checks: %s at best, %s expected, %s at worst (deploy_timeout)\n",
            md ? "- " : "", cli_secs(h, "fastest", d1, sizeof(d1)),
            cli_secs(h, "expected", d2, sizeof(d2)), cli_secs(h, "worst", d3, sizeof(d3)));
    if (md)
        fputs("\n| # | step | traffic | owner | told | time (best/expected/worst) | Plan B | "
              "needs |\n|---|---|---|---|---|---|---|---|\n",
              out);
    json_array_foreach(steps, i, st)
    {
        const json_t *ts = json_object_get(st, "time_s"), *n = json_object_get(st, "notify");
        size_t j;
        json_t *who;
        fprintf(out, md ? "| %zu | " : "%2zu. ", i + 1);
        cli_put_clean(out, cli_jstr_or(st, "what", "?"), md ? 0 : 22);
        fprintf(out, md ? " | %lld%%%s | " : "  traffic %3lld%%%s  owner ",
                (long long)json_integer_value(json_object_get(st, "traffic")),
                json_is_true(json_object_get(st, "cohort")) ? " + cohort" : "");
        cli_put_clean(out, cli_jstr_or(st, "owner", "-"), 0);
        fputs(md ? " | " : "  told ", out);
        json_array_foreach(n, j, who)
        {
            fputs(j ? ", " : "", out);
            cli_put_clean(out, json_string_value(who), 0);
        }
        if (json_array_size(n) == 0)
            fputs("nobody", out);
        fprintf(out, md ? " | %s / %s / %s%s | " : "\n      time %s / %s / %s%s\n      Plan B: ",
                cli_secs(ts, "fastest", d1, sizeof(d1)), cli_secs(ts, "expected", d2, sizeof(d2)),
                cli_secs(ts, "worst", d3, sizeof(d3)),
                json_is_true(json_object_get(st, "waits_for_person")) ? " + a person" : "");
        cli_put_clean(out, cli_jstr_or(st, "plan_b", "-"), 0);
        fputs(md ? " | " : "\n      needs: ", out);
        cli_put_clean(out, cli_jstr_or(st, "needs", "-"), 0);
        if (!md) {
            fputs("\n      ", out);
            cli_put_clean(out, cli_jstr_or(st, "note", ""), 0);
        }
        fputs(md ? " |\n" : "\n", out);
    }
    fputs(md ? "\n- after the plan (100%): " : "after the plan (100%): ", out);
    cli_put_clean(out, cli_jstr_or(after, "plan_b", "-"), 0);
    fputs("; needs ", out);
    cli_put_clean(out, cli_jstr_or(after, "needs", "-"), 0);
    fprintf(out,
            "\n%stime to full traffic: %s at best, %s expected, %s at worst\n"
            "%sworst time to roll back: %s\n",
            md ? "- " : "", cli_secs(t, "fastest", d1, sizeof(d1)),
            cli_secs(t, "expected", d2, sizeof(d2)), cli_secs(t, "worst", d3, sizeof(d3)),
            md ? "- " : "", cli_secs(p, "time_to_rollback_worst_s", d4, sizeof(d4)));
    const json_t *fz = json_object_get(p, "freeze_windows");
    fprintf(out, "%sfreeze windows on the way:", md ? "- " : "");
    json_array_foreach(fz, i, st)
    {
        fputs(i ? ";" : "", out);
        fputc(' ', out);
        cli_put_clean(out, cli_jstr_or(st, "name", "?"), 0);
        fprintf(out, " %s to %s%s", cli_jstr_or(st, "from", "?"), cli_jstr_or(st, "to", "?"),
                json_is_true(json_object_get(st, "in_force_now"))
                    ? " (in force now: a deploy is refused unless --emergency)"
                    : "");
    }
    fputs(json_array_size(fz) == 0 ? " none\n" : "\n", out);
    const json_t *rate = json_object_get(p, "request_rate");
    fprintf(out, "%srequest rate: ", md ? "- " : "");
    if (json_is_number(json_object_get(rate, "per_s")))
        fprintf(out, "%.1f/s (", json_number_value(json_object_get(rate, "per_s")));
    else
        fputs("(", out);
    cli_put_clean(out, cli_jstr_or(rate, "source", "-"), 0);
    fputs(")\n", out);
}

void cli_render_report_md(FILE *out, const json_t *change)
{
    const json_t *id = json_object_get(change, "id");
    const json_t *events = json_object_get(change, "events");
    char idbuf[32];
    size_t i;
    json_t *ev;

    if (json_is_integer(id))
        snprintf(idbuf, sizeof(idbuf), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    else
        snprintf(idbuf, sizeof(idbuf), "?");
    fprintf(out, "# Change %s: %s of ", idbuf, cli_jstr_or(change, "kind", "change"));
    cli_md_cell(out, cli_jstr_or(change, "service", "?"));
    fputs(", ", out);
    cli_md_cell(out, cli_jstr_or(change, "from", "(none)"));
    fputs(" -> ", out);
    cli_md_cell(out, cli_jstr_or(change, "to", "?"));
    fputs("\n\n| field | value |\n|---|---|\n", out);
    cli_md_row(out, "service", cli_jstr(change, "service"));
    cli_md_row(out, "kind", cli_jstr(change, "kind"));
    cli_md_row(out, "from", cli_jstr_or(change, "from", "(none)"));
    cli_md_row(out, "to", cli_jstr(change, "to"));
    cli_md_row(out, "plan", cli_jstr_or(change, "plan", "(instant switch)"));
    cli_md_row(out, "state", cli_jstr(change, "state"));
    cli_md_row(out, "actor", cli_jstr(change, "actor"));
    cli_md_row(out, "reason", cli_jstr(change, "reason"));
    cli_md_row(out, "created", cli_jstr(change, "created"));
    cli_md_row(out, "updated", cli_jstr(change, "updated"));
    cli_md_row(out, "ended", cli_jstr_or(change, "ended", "(still running)"));
    if (cli_jstr(change, "message") != NULL) {
        fputs("\n**Outcome:** ", out);
        cli_md_cell(out, cli_jstr(change, "message"));
        fputc('\n', out);
    }
    fputs("\n## Timeline\n\n", out);
    if (json_array_size(events) == 0) {
        fputs("No events recorded.\n", out);
        return;
    }
    fputs("| time (UTC) | event | message |\n|---|---|---|\n", out);
    json_array_foreach(events, i, ev)
    {
        fputs("| ", out);
        cli_md_cell(out, cli_jstr_or(ev, "ts", "-"));
        fputs(" | ", out);
        cli_md_cell(out, cli_jstr_or(ev, "type", "-"));
        fputs(" | ", out);
        cli_md_cell(out, cli_jstr_or(ev, "message", ""));
        fputs(" |\n", out);
    }
}

/* --- HTTP ------------------------------------------------------------------------------------ */

struct cli_http {
    CURL *curl;
    char *base;         /* "http://localhost" for a socket */
    char *sock;         /* unix socket path or NULL */
    const char *where;  /* the socket path or URL, for messages */
    const char *config; /* for the "is serve running?" hint */
    const char *token;  /* $CUTOVER_TOKEN for a TCP admin URL, or NULL */
    long timeout_ms;    /* 0: none */
    int quiet;          /* cli_request does not print why the daemon could not be reached */
    int once;           /* cli_request does not ask again while the daemon hands over */
    int fresh;          /* cli_request opens a connection of its own and keeps none open */
};

struct cli_resp {
    long status;
    char *body;
    size_t len, cap;
    int too_big;
    char *ctype;  /* Content-Type, or NULL */
    json_t *json; /* the parsed body when it is JSON */
    int cc;       /* curl's result (CURLE_OK once the daemon answered) */
};

static void cli_resp_done(struct cli_resp *r)
{
    free(r->body);
    free(r->ctype);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static size_t cli_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct cli_resp *r = ud;
    size_t n = size * nmemb;

    if (n > CLI_MAX_BODY - r->len) {
        r->too_big = 1;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->body = xrealloc(r->body, cap);
        r->cap = cap;
    }
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* An https:// admin URL (admin.tls) with a private CA: $CUTOVER_CACERT names the CA file. */
static void cli_curl_ca(CURL *curl)
{
    const char *ca = getenv("CUTOVER_CACERT");
    if (ca != NULL && *ca != '\0')
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
}

/* Resets h's handle for a request to url (owned by the caller, like errbuf): the daemon
 * directly (no proxy), over its socket, with the token, Accept and extra headers; the answer
 * goes to write(ud). Returns the header list to set and free after the transfer. */
static struct curl_slist *cli_curl_base(struct cli_http *h, const char *url, char *errbuf,
                                        const char *accept, curl_write_callback write, void *ud)
{
    struct curl_slist *hdrs = NULL;
    char *hdr;

    curl_easy_reset(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    /* An http_proxy in the environment must never see admin requests. */
    curl_easy_setopt(h->curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "cutover-cli/" CUTOVER_VERSION);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, CLI_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, ud);
    if (h->sock != NULL)
        curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, h->sock);
    cli_curl_ca(h->curl);
    hdr = xasprintf("Accept: %s", accept ? accept : "application/json");
    hdrs = curl_slist_append(hdrs, hdr);
    free(hdr);
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (h->token != NULL) {
        hdr = xasprintf("Authorization: Bearer %s", h->token);
        hdrs = curl_slist_append(hdrs, hdr);
        free(hdr);
    }
    return hdrs;
}

/* Prints why the daemon could not be reached (curl failed with cc). */
static void cli_unreachable(const struct cli_http *h, CURLcode cc, const char *errbuf)
{
    long oserr = 0;
    curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
    fprintf(
        stderr, "cutover: cannot reach the daemon at %s: %s (is `cutover serve -c %s` running?)\n",
        h->where, oserr != 0 ? strerror((int)oserr) : (errbuf[0] ? errbuf : curl_easy_strerror(cc)),
        h->config);
}

/* Sends method path (with body when not NULL) and fills *r. Returns 0 when the daemon
 * answered (any status), else prints why it could not be reached and returns 1. */
static int cli_request(struct cli_http *h, const char *method, const char *path, const json_t *body,
                       const char *accept, struct cli_resp *r)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url = xasprintf("%s%s", h->base, path);
    char *payload = NULL;
    CURLcode cc;
    int rc = CLI_EXIT_FAILED;

    memset(r, 0, sizeof(*r));
    struct curl_slist *hdrs = cli_curl_base(h, url, errbuf, accept, cli_on_body, r);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    if (h->fresh) {
        /* libcurl sends a request again, unasked, when a reused connection dies before the
         * answer: never a hand-over request, which must reach one daemon once. */
        curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(h->curl, CURLOPT_FORBID_REUSE, 1L);
    }
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    } else {
        json_t *empty = json_object();
        payload = json_dumps(body ? body : empty, JSON_COMPACT);
        json_decref(empty);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);

    /* A daemon handing over to its successor answers 503 before doing anything: ask again
     * (the successor has 10 s to take over), so an upgrade never fails a command. */
    for (int tries = 0;; tries++) {
        long st = 0;
        cc = curl_easy_perform(h->curl);
        if (cc == CURLE_OK)
            curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &st);
        if (cc != CURLE_OK || st != 503 || h->once || tries >= CLI_HANDOVER_TRIES ||
            r->body == NULL || strstr(r->body, "handing over") == NULL)
            break;
        r->len = 0;
        r->body[0] = '\0';
        /* A new connection: the one answered 503 leads to the daemon that is leaving. */
        curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
        usleep(CLI_HANDOVER_WAIT_MS * 1000);
    }
    r->cc = (int)cc;
    if (cc != CURLE_OK && h->quiet)
        goto out;
    if (cc != CURLE_OK) {
        long oserr = 0;
        curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
        if (r->too_big) {
            fprintf(stderr, "cutover: the answer from %s exceeds %zu MiB; refusing it\n", h->where,
                    CLI_MAX_BODY >> 20);
        } else if (cc == CURLE_OPERATION_TIMEDOUT && r->len == 0 && oserr == 0 &&
                   h->timeout_ms > 0) {
            fprintf(stderr, "cutover: the daemon at %s did not answer within %ld s (%s)\n",
                    h->where, h->timeout_ms / 1000, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        } else {
            cli_unreachable(h, cc, errbuf);
        }
        goto out;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &r->status);
    {
        char *ct = NULL;
        curl_easy_getinfo(h->curl, CURLINFO_CONTENT_TYPE, &ct);
        r->ctype = ct ? xstrdup(ct) : NULL;
    }
    if (r->len > 0 && (r->ctype == NULL || strstr(r->ctype, "json") != NULL || r->body[0] == '{'))
        r->json = json_loadb(r->body, r->len, 0, NULL);
    rc = 0;
out:
    curl_slist_free_all(hdrs);
    free(payload);
    free(url);
    return rc;
}

/* Prints the daemon's {"error": ...} (or what it sent instead) and returns the exit code. */
static int cli_api_error(const struct cli_http *h, const struct cli_resp *r)
{
    const char *msg = cli_jstr(r->json, "error");

    if (r->status >= 200 && r->status < 300) {
        /* Callers come here with a 2xx only when the body was not the JSON they need. */
        fprintf(stderr, "cutover: the answer from %s is not the JSON expected\n", h->where);
        return CLI_EXIT_FAILED;
    }
    if (msg != NULL) {
        fputs("cutover: ", stderr);
        cli_put_clean(stderr, msg, 0);
        fputc('\n', stderr);
    } else if (r->len > 0 && r->json == NULL) {
        /* Not our daemon, or a proxy in between: show the start of what it said, on one line. */
        fprintf(stderr, "cutover: the daemon answered HTTP %ld: ", r->status);
        for (size_t i = 0; i < r->len && i < 160; i++)
            fputc((unsigned char)r->body[i] < 0x20 || (unsigned char)r->body[i] >= 0x7f
                      ? ' '
                      : r->body[i],
                  stderr);
        fputc('\n', stderr);
    } else
        fprintf(stderr, "cutover: the daemon answered HTTP %ld\n", r->status);
    if (r->status == 401 && h->sock == NULL && h->token == NULL)
        fputs("cutover: set CUTOVER_TOKEN to an admin token of the daemon\n", stderr);
    return cli_exit_for_http(r->status);
}

static int cli_unsupported(const char *what, const struct cli_resp *r)
{
    const char *msg = cli_jstr(r->json, "error");

    fprintf(stderr, "cutover: the daemon does not support %s yet (HTTP %ld%s", what, r->status,
            msg ? ": " : "");
    cli_put_clean(stderr, msg, 0);
    fputs(")\n", stderr);
    return CLI_EXIT_USAGE;
}

/* Prints j as indented JSON on stdout. */
static void cli_print_json(const json_t *j)
{
    /* ASCII only: bidi overrides and C1 controls in free text print as \u escapes. */
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
}

static char *cli_escape(struct cli_http *h, const char *s)
{
    char *e = curl_easy_escape(h->curl, s, 0);
    char *copy = xstrdup(e);
    curl_free(e);
    return copy;
}

/* The actor recorded in deploy and rollback: $CUTOVER_USER, else the login name; NULL with a
 * token, which the daemon records as the token's name. */
static char *cli_actor(const struct cli_http *h)
{
    const char *u = getenv("CUTOVER_USER");
    struct passwd *pw;

    if (h->token != NULL)
        return NULL;
    if (u != NULL && *u != '\0')
        return xstrdup(u);
    pw = getpwuid(getuid());
    if (pw != NULL && pw->pw_name != NULL && *pw->pw_name != '\0')
        return xstrdup(pw->pw_name);
    return xasprintf("uid-%u", (unsigned)getuid());
}

/* --- commands -------------------------------------------------------------------------------- */

static void cli_render_plan(FILE *out, const struct config_plan *p)
{
    char d2[32];

    fprintf(out, "plan %s (on failure: %s)%s%s\n", p->name,
            p->on_failure == CONFIG_ON_PAUSE     ? "pause"
            : p->on_failure == CONFIG_ON_PROCEED ? "proceed"
                                                 : "rollback",
            p->owner ? ", owner " : "", p->owner ? p->owner : "");
    for (size_t i = 0; i < p->nsteps; i++) {
        const struct config_step *s = &p->steps[i];
        fprintf(out, "  %zu. ", i + 1);
        if (s->owner != NULL)
            fprintf(out, "(owner %s) ", s->owner);
        char desc[512];
        cli_put_clean(out, config_step_describe(s, desc, sizeof(desc)), 0);
        fputc('\n', out);
    }
    if (p->analysis.enabled) {
        fprintf(out, "  analysis: every %s, at least %llu requests",
                duration_format(p->analysis.interval_ms, d2, sizeof(d2)),
                (unsigned long long)p->analysis.min_requests);
        if (p->analysis.max_error_rate >= 0)
            fprintf(out, ", error rate <= %g%%", p->analysis.max_error_rate * 100);
        if (p->analysis.max_p99_latency_ratio >= 0)
            fprintf(out, ", p99 <= %gx the live version", p->analysis.max_p99_latency_ratio);
        if (p->analysis.max_p99_latency_ms >= 0)
            fprintf(out, ", p99 <= %gms", p->analysis.max_p99_latency_ms);
        fputc('\n', out);
    }
}

static void cli_render_config(FILE *out, const struct config *cfg)
{
    char d1[32], d2[32];

    fprintf(out, "%s: valid (%zu service%s, %zu plan%s)\n", cfg->path, cfg->nservices,
            cfg->nservices == 1 ? "" : "s", cfg->nplans, cfg->nplans == 1 ? "" : "s");
    fprintf(out, "state_dir %s (admin socket %s/cutover.sock), %d worker%s", cfg->state_dir,
            cfg->state_dir, cfg->workers, cfg->workers == 1 ? "" : "s");
    if (cfg->io_coalesce_us > 0)
        fprintf(out, " (napping %d us when busy)\n", cfg->io_coalesce_us);
    else
        fprintf(out, " (io_coalesce off)\n");
    if (cfg->admin_listen != NULL)
        fprintf(out, "admin API also on %s (%zu token%s from %s)\n", cfg->admin_listen,
                cfg->ntokens, cfg->ntokens == 1 ? "" : "s",
                cfg->admin_tokens_file ? cfg->admin_tokens_file : "-");
    if (cfg->admin_tls.ncerts > 0)
        fprintf(out, "admin API over TLS with %s\n", cfg->admin_tls.certs[0].cert);
    for (size_t i = 0; i < cfg->nfreezes; i++) {
        const struct config_freeze *f = &cfg->freezes[i];
        char t1[32], t2[32];
        if (f->recurring)
            fprintf(out, "freeze %s: cron \"%s\" (UTC) for %s (", f->name, f->cron,
                    duration_format(f->duration_ms, t1, sizeof(t1)));
        else
            fprintf(out, "freeze %s: %s to %s (", f->name, freeze_time_format(f->from, t1, 32),
                    freeze_time_format(f->to, t2, 32));
        for (size_t j = 0; j < f->nservices; j++)
            fprintf(out, "%s%s", j ? ", " : "", f->services[j]);
        fputs(f->services ? ")\n" : "every service)\n", out);
    }
    for (size_t i = 0; i < cfg->nwebhooks; i++) {
        fprintf(out, "webhook %s (", cfg->webhooks[i].url);
        for (size_t j = 0; j < cfg->webhooks[i].nservices; j++)
            fprintf(out, "%s%s", j ? ", " : "", cfg->webhooks[i].services[j]);
        fputs(cfg->webhooks[i].services ? ")\n" : "every service)\n", out);
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *s = &cfg->services[i];
        fprintf(out, "\nservice %s\n", s->name);
        fprintf(out, "  listen:   %s (%s)\n", s->listen,
                s->protocol == CONFIG_PROTO_TCP ? "tcp"
                : s->tls.ncerts > 0             ? "https"
                                                : "http");
        for (size_t j = 0; j < s->tls.ncerts; j++)
            fprintf(out, "  tls:      %s%s\n", s->tls.certs[j].cert,
                    j == 0 && s->tls.ncerts > 1 ? " (default)" : "");
        if (s->preview_listen != NULL)
            fprintf(out, "  preview:  %s\n", s->preview_listen);
        if (s->routed) {
            fputs("  routes:  ", out);
            for (size_t j = 0; j < s->nhosts; j++)
                fprintf(out, " %s%s", s->hosts[j], s->path_prefix ? s->path_prefix : "");
            if (s->nhosts == 0 && s->path_prefix != NULL)
                fprintf(out, " (any host)%s", s->path_prefix);
            fputs(s->is_default ? " (default: what no other service takes)\n" : "\n", out);
        }
        fputs("  targets: ", out);
        for (size_t j = 0; j < s->ntargets; j++)
            fprintf(out, " %s", s->targets[j]);
        fputs(s->ntargets == 0 ? " (none)\n" : "\n", out);
        if (s->run.command != NULL) {
            fputs("  run:     ", out);
            for (char **a = s->run.command; *a != NULL; a++)
                fprintf(out, " %s", *a);
            fprintf(out, " (%d instance%s, ports %d-%d)\n", s->run.instances,
                    s->run.instances == 1 ? "" : "s", s->run.port_lo, s->run.port_hi);
            if (s->strategy.kind == CONFIG_STRATEGY_ROLLING)
                fprintf(out, "  strategy: rolling (max_surge %d, max_unavailable %d)\n",
                        s->strategy.max_surge, s->strategy.max_unavailable);
            else
                fputs("  strategy: blue_green\n", out);
        }
        if (s->protocol == CONFIG_PROTO_HTTP && s->health.path != NULL)
            fprintf(out, "  health:   GET %s every %s", s->health.path,
                    duration_format(s->health.interval_ms, d1, sizeof(d1)));
        else
            fprintf(out, "  health:   connect every %s",
                    duration_format(s->health.interval_ms, d1, sizeof(d1)));
        fprintf(out, ", timeout %s, healthy after %d, unhealthy after %d\n",
                duration_format(s->health.timeout_ms, d2, sizeof(d2)), s->health.healthy_threshold,
                s->health.unhealthy_threshold);
        fprintf(out, "  deploy:   timeout %s, drain %s\n",
                duration_format(s->deploy_timeout_ms, d1, sizeof(d1)),
                duration_format(s->drain_timeout_ms, d2, sizeof(d2)));
        if (s->sticky.kind == CONFIG_STICKY_SOURCE)
            fprintf(out, "  sticky:   source\n");
        else if (s->sticky.kind != CONFIG_STICKY_NONE)
            fprintf(out, "  sticky:   %s %s\n",
                    s->sticky.kind == CONFIG_STICKY_COOKIE ? "cookie" : "header", s->sticky.name);
        fprintf(out, "  plan:     %s\n", s->plan ? s->plan : "(none: instant switch)");
    }
    for (size_t i = 0; i < cfg->nplans; i++) {
        fputc('\n', out);
        cli_render_plan(out, &cfg->plans[i]);
    }
}

/* Loads the config named by a; prints warnings (when warn) and returns 0, or prints the error
 * and returns CLI_EXIT_USAGE. */
static int cli_load_config(const struct cli_args *a, int warn, struct config **cfg)
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

/* --- logs ------------------------------------------------------------------------------------ */

#define CLI_LOGS_POLL_MS 250
#define CLI_LOGS_CHUNK 65536

int cli_log_name_parse(const char *name, char *version, size_t vlen, long *idx)
{
    size_t n = name != NULL ? strlen(name) : 0;
    const char *dash;
    size_t vn;

    if (n < 7 || strcmp(name + n - 4, ".log") != 0)
        return 0;
    /* The version may contain '-': the index is what follows the last one. */
    dash = NULL;
    for (const char *p = name; p < name + n - 4; p++)
        if (*p == '-')
            dash = p;
    if (dash == NULL || dash + 1 == name + n - 4)
        return 0;
    long v = 0;
    for (const char *p = dash + 1; p < name + n - 4; p++) {
        if (*p < '0' || *p > '9' || v > 100000000L)
            return 0;
        v = v * 10 + (*p - '0');
    }
    vn = (size_t)(dash - name);
    if (vn == 0 || vn >= vlen || vn > 64)
        return 0;
    memcpy(version, name, vn);
    version[vn] = '\0';
    if (!cli_version_valid(version))
        return 0;
    *idx = v;
    return 1;
}

struct cli_logfile {
    char *path;
    char version[72];
    long idx;
    off_t pos; /* bytes already printed (or skipped) */
    dev_t dev;
    ino_t ino;
};

struct cli_logs {
    char *dir;           /* STATE_DIR/logs/SERVICE */
    const char *version; /* only this version's files, or NULL for all */
    struct cli_logfile *f;
    size_t n, cap;
    const struct cli_logfile *last; /* the file printed last (for follow headers) */
    int printed;                    /* something was printed already */
    int midline;                    /* what was printed last did not end with a newline */
};

static volatile sig_atomic_t cli_logs_stop;

static void cli_logs_on_signal(int sig)
{
    (void)sig;
    cli_logs_stop = 1;
}

static int cli_logfile_cmp(const void *x, const void *y)
{
    const struct cli_logfile *a = x, *b = y;
    int c = strcmp(a->version, b->version);

    if (c != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Adds the matching files of the directory not known yet (pos 0). Returns how many it added. */
static size_t cli_logs_scan(struct cli_logs *L)
{
    DIR *d = opendir(L->dir);
    struct dirent *e;
    size_t added = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char ver[72];
        long idx;
        int known = 0;
        if (!cli_log_name_parse(e->d_name, ver, sizeof(ver), &idx))
            continue;
        if (L->version != NULL && strcmp(ver, L->version) != 0)
            continue;
        for (size_t i = 0; i < L->n && !known; i++)
            known = strcmp(L->f[i].version, ver) == 0 && L->f[i].idx == idx;
        if (known)
            continue;
        if (L->n == L->cap) {
            L->cap = L->cap ? L->cap * 2 : 8;
            L->f = xrealloc(L->f, L->cap * sizeof(*L->f));
        }
        struct cli_logfile *f = &L->f[L->n++];
        memset(f, 0, sizeof(*f));
        f->path = xasprintf("%s/%s", L->dir, e->d_name);
        snprintf(f->version, sizeof(f->version), "%s", ver);
        f->idx = idx;
        added++;
    }
    closedir(d);
    if (added > 0) {
        /* Keep the order stable for the caller's "last" pointer: remember it by path. */
        char *last = L->last ? xstrdup(L->last->path) : NULL;
        qsort(L->f, L->n, sizeof(*L->f), cli_logfile_cmp);
        L->last = NULL;
        for (size_t i = 0; last != NULL && i < L->n; i++)
            if (strcmp(L->f[i].path, last) == 0)
                L->last = &L->f[i];
        free(last);
    }
    return added;
}

static void cli_logs_header(struct cli_logs *L, const struct cli_logfile *f)
{
    if (L->n > 1 && L->last != f) {
        printf("%s%s==> %s <==\n", L->midline ? "\n" : "", L->printed ? "\n" : "", f->path);
        L->midline = 0;
        L->printed = 1;
    }
    L->last = f;
}

/* Copies [from, EOF) of fd to stdout; returns the offset reached. */
static off_t cli_logs_copy(struct cli_logs *L, int fd, off_t from)
{
    char buf[CLI_LOGS_CHUNK];
    ssize_t k;

    while ((k = pread(fd, buf, sizeof(buf), from)) > 0) {
        fwrite(buf, 1, (size_t)k, stdout);
        L->midline = buf[k - 1] != '\n';
        from += k;
    }
    return from;
}

/* The offset where the last `lines` lines of fd (size bytes) begin. A final line without a
 * newline counts as a line; the newline that ends the file does not start one. */
static off_t cli_logs_tail_start(int fd, off_t size, long lines)
{
    char buf[CLI_LOGS_CHUNK];
    off_t end = size;
    long seen = 0;

    if (lines <= 0)
        return size;
    if (size > 0 && pread(fd, buf, 1, size - 1) == 1 && buf[0] == '\n')
        end = size - 1;
    while (end > 0) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t k = pread(fd, buf, (size_t)(end - from), from);
        if (k <= 0)
            return 0;
        for (ssize_t i = k - 1; i >= 0; i--)
            if (buf[i] == '\n' && ++seen == lines)
                return from + i + 1;
        end = from;
    }
    return 0;
}

/* Prints the last lines of f (first pass) and remembers where it stopped. */
static void cli_logs_print_tail(struct cli_logs *L, struct cli_logfile *f, long lines)
{
    struct stat st;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "cutover: %s: %s\n", f->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    cli_logs_header(L, f);
    L->printed = 1;
    f->pos = cli_logs_copy(L, fd, cli_logs_tail_start(fd, st.st_size, lines));
    close(fd);
}

/* One follow round for f: prints what was appended; starts again from 0 when the file was
 * truncated (copytruncate rotation) or replaced. */
static void cli_logs_poll_one(struct cli_logs *L, struct cli_logfile *f)
{
    struct stat st;
    int fd;

    if (stat(f->path, &st) != 0)
        return;
    if (st.st_dev != f->dev || st.st_ino != f->ino) {
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->pos = 0;
    }
    if (st.st_size < f->pos)
        f->pos = 0;
    if (st.st_size == f->pos)
        return;
    fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    cli_logs_header(L, f);
    L->printed = 1;
    f->pos = cli_logs_copy(L, fd, f->pos);
    close(fd);
}

/* GET /api/v1/services/NAME quietly (short timeouts, no message when the daemon is away) and
 * returns live.name as a heap string, or NULL. */
static char *cli_logs_live_version(const struct cli_args *a, const struct config *cfg)
{
    char *base = NULL, *sock = NULL, *url = NULL, *esc, *live = NULL;
    struct curl_slist *hdrs = NULL;
    struct cli_resp r;
    CURL *curl;

    memset(&r, 0, sizeof(r));
    if (a->admin != NULL) {
        if (cli_admin_parse(a->admin, &base, &sock) != 0)
            return NULL;
    } else {
        base = xstrdup("http://localhost");
        sock = xasprintf("%s/cutover.sock", cfg->state_dir);
        if (access(sock, F_OK) != 0)
            goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto out;
    curl = curl_easy_init();
    if (curl == NULL) {
        curl_global_cleanup();
        goto out;
    }
    esc = curl_easy_escape(curl, a->service, 0);
    url = xasprintf("%s/api/v1/services/%s", base, esc ? esc : a->service);
    curl_free(esc);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "cutover-cli/" CUTOVER_VERSION);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cli_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    if (sock != NULL)
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
    cli_curl_ca(curl);
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (sock == NULL) {
        const char *t = getenv("CUTOVER_TOKEN");
        if (t != NULL && *t != '\0') {
            char *h = xasprintf("Authorization: Bearer %s", t);
            hdrs = curl_slist_append(hdrs, h);
            free(h);
        }
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (curl_easy_perform(curl) == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
        if (r.status == 200 && r.len > 0) {
            json_t *j = json_loadb(r.body, r.len, 0, NULL);
            const char *name = cli_jstr(json_object_get(j, "live"), "name");
            if (name != NULL && cli_version_valid(name))
                live = xstrdup(name);
            json_decref(j);
        }
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
out:
    cli_resp_done(&r);
    free(url);
    free(base);
    free(sock);
    return live;
}

static int cli_cmd_logs(const struct cli_args *a)
{
    struct config *cfg = NULL;
    struct cli_logs L;
    char *live = NULL;
    int rc = cli_load_config(a, 0, &cfg);

    if (rc != 0)
        return rc;
    memset(&L, 0, sizeof(L));
    const struct config_service *svc = config_service_find(cfg, a->service);
    if (svc == NULL) {
        fprintf(stderr, "cutover: logs: no service '%s' in %s\n", a->service, a->config);
        config_free(cfg);
        return CLI_EXIT_USAGE;
    }
    if (svc->run.command == NULL) {
        fprintf(stderr,
                "cutover: logs: service '%s' has no managed instances (no `run:` in its config "
                "%s), so cutover keeps no logs for it; read its targets' logs where they run\n",
                a->service, a->config);
        config_free(cfg);
        return CLI_EXIT_USAGE;
    }
    L.dir = xasprintf("%s/logs/%s", cfg->state_dir, a->service);
    L.version = a->version;
    if (L.version == NULL)
        L.version = live = cli_logs_live_version(a, cfg);
    cli_logs_scan(&L);
    if (L.n == 0) {
        fprintf(stderr, "cutover: logs: no log file for %s%s%s in %s\n", a->service,
                L.version ? " " : "", L.version ? L.version : "", L.dir);
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    for (size_t i = 0; i < L.n; i++)
        cli_logs_print_tail(&L, &L.f[i], a->lines);
    fflush(stdout);
    if (a->follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = cli_logs_on_signal; /* no SA_RESTART: nanosleep returns at once */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        while (!cli_logs_stop) {
            struct timespec ts = {0, CLI_LOGS_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
            if (cli_logs_stop)
                break;
            cli_logs_scan(&L); /* an instance started since: its file from the start */
            for (size_t i = 0; i < L.n && !cli_logs_stop; i++)
                cli_logs_poll_one(&L, &L.f[i]);
            if (fflush(stdout) != 0 || ferror(stdout))
                break;
        }
    }
    rc = ferror(stdout) ? CLI_EXIT_FAILED : CLI_EXIT_OK;
out:
    for (size_t i = 0; i < L.n; i++)
        free(L.f[i].path);
    free(L.f);
    free(L.dir);
    free(live);
    config_free(cfg);
    return rc;
}

/* Finds the daemon (--admin, else config -> state_dir/cutover.sock) and sets up h. Returns 0
 * or an exit code after printing why. */
static int cli_connect(const struct cli_args *a, struct cli_http *h)
{
    memset(h, 0, sizeof(*h));
    h->config = a->config;
    h->timeout_ms = a->wait ? 0 : CLI_REQUEST_TIMEOUT_MS;
    if (a->admin != NULL) {
        if (cli_admin_parse(a->admin, &h->base, &h->sock) != 0) {
            fprintf(stderr,
                    "cutover: --admin '%s': expected unix:/path/to.sock, http://HOST:PORT or "
                    "https://HOST:PORT\n",
                    a->admin);
            return CLI_EXIT_USAGE;
        }
        h->where = h->sock ? h->sock : h->base;
        if (h->sock == NULL) {
            const char *t = getenv("CUTOVER_TOKEN");
            h->token = t != NULL && *t != '\0' ? t : NULL;
        }
    } else {
        struct config *cfg = NULL;
        int rc = cli_load_config(a, 0, &cfg);
        if (rc != 0)
            return rc;
        h->sock = xasprintf("%s/cutover.sock", cfg->state_dir);
        h->base = xstrdup("http://localhost");
        h->where = h->sock;
        config_free(cfg);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (h->curl = curl_easy_init()) == NULL) {
        fputs("cutover: cannot initialise libcurl\n", stderr);
        return CLI_EXIT_FAILED;
    }
    return 0;
}

static void cli_disconnect(struct cli_http *h)
{
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
        curl_global_cleanup();
    }
    free(h->base);
    free(h->sock);
    memset(h, 0, sizeof(*h));
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

/* --- events: following the daemon's server-sent event stream ------------------------------ */

struct cli_sse {
    struct cli_http *h;
    FILE *out;
    int json;
    long status;         /* of the current stream's answer; 0 before it */
    struct cli_resp err; /* the body of an answer other than 200 */
    char *line;          /* the line being received */
    size_t len, cap;
    char *data;        /* the event's data field so far */
    int served;        /* the daemon answered at least once (200, or 503 handing over) */
    long long last_id; /* of the last event printed: sent back as Last-Event-ID */
};

static void cli_sse_dispatch(struct cli_sse *s)
{
    json_t *ev = s->data ? json_loads(s->data, 0, NULL) : NULL;
    free(s->data);
    s->data = NULL;
    if (!json_is_object(ev)) {
        json_decref(ev);
        return;
    }
    json_t *id = json_object_get(ev, "id");
    if (json_is_integer(id)) {
        if (json_integer_value(id) <= s->last_id) {
            json_decref(ev); /* already printed before a reconnection */
            return;
        }
        s->last_id = json_integer_value(id);
    }
    if (s->json) {
        char *text = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
        fprintf(s->out, "%s\n", text);
        free(text);
    } else {
        const char *ts = cli_jstr_or(ev, "ts", "");
        /* "2026-11-23T12:40:01.207Z" as history shows times: "2026-11-23 12:40:01" */
        fprintf(s->out, "%.10s %.8s  ", ts, strlen(ts) > 11 ? ts + 11 : "");
        cli_put_clean(s->out, cli_jstr_or(ev, "service", "-"), 0);
        fprintf(s->out, "  #%lld  ", (long long)json_integer_value(json_object_get(ev, "change")));
        cli_put_clean(s->out, cli_jstr_or(ev, "type", "-"), 0);
        fputs("  ", s->out);
        cli_put_clean(s->out, cli_jstr_or(ev, "message", ""), 0);
        fputc('\n', s->out);
    }
    fflush(s->out);
    json_decref(ev);
}

/* One line of text/event-stream (without its newline). */
static void cli_sse_line(struct cli_sse *s, const char *line)
{
    if (*line == '\0') {
        cli_sse_dispatch(s);
        return;
    }
    if (strncmp(line, "data: ", 6) == 0) {
        char *d = s->data ? xasprintf("%s\n%s", s->data, line + 6) : xstrdup(line + 6);
        free(s->data);
        s->data = d;
    } /* id: and event: are in the data too; comments (":") keep the stream alive */
}

static size_t cli_sse_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct cli_sse *s = ud;
    size_t n = size * nmemb;
    if (s->status == 0)
        curl_easy_getinfo(s->h->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200)
        return cli_on_body(ptr, size, nmemb, &s->err);
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n') {
            if (s->len > 0 && s->line[s->len - 1] == '\r')
                s->len--;
            s->line[s->len] = '\0';
            cli_sse_line(s, s->line);
            s->len = 0;
            continue;
        }
        if (s->len + 2 > s->cap) {
            if (s->cap >= CLI_MAX_BODY)
                return 0; /* a line this long is not our daemon */
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->line = xrealloc(s->line, s->cap);
        }
        s->line[s->len++] = ptr[i];
    }
    return n;
}

static int cli_cmd_events(const struct cli_args *a, struct cli_http *h)
{
    char *svc = a->service ? cli_escape(h, a->service) : NULL;
    char *url = xasprintf("%s/api/v1/events%s%s", h->base, svc ? "?service=" : "", svc ? svc : "");
    struct cli_sse s = {.h = h, .out = stdout, .json = a->json};
    struct timespec lost = {0};
    int rc = CLI_EXIT_FAILED;

    for (;;) {
        char errbuf[CURL_ERROR_SIZE] = "", idhdr[48];
        struct curl_slist *hdrs =
            cli_curl_base(h, url, errbuf, "text/event-stream", cli_sse_write, &s);
        if (s.last_id > 0) {
            snprintf(idhdr, sizeof(idhdr), "Last-Event-ID: %lld", s.last_id);
            hdrs = curl_slist_append(hdrs, idhdr);
        }
        curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
        s.status = 0;
        s.len = 0;
        CURLcode cc = curl_easy_perform(h->curl);
        curl_slist_free_all(hdrs);
        if (s.status != 0 && s.status != 200) {
            /* 503 while the daemon hands over: its successor answers in a moment. */
            int handing = s.status == 503 && s.err.body && strstr(s.err.body, "handing over");
            if (!handing) {
                s.err.status = s.status;
                if (s.err.len > 0)
                    s.err.json = json_loadb(s.err.body, s.err.len, 0, NULL);
                rc = cli_api_error(h, &s.err);
                break;
            }
            cli_resp_done(&s.err);
            s.served = 1; /* the daemon is there: wait for its successor */
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        s.served |= s.status == 200;
        if (s.status == 200 || lost.tv_sec == 0)
            lost = now; /* the stream served, or this is the first try: count from now */
        if (!s.served || now.tv_sec - lost.tv_sec >= CLI_EVENTS_GIVE_UP_S) {
            cli_unreachable(h, cc, errbuf);
            break;
        }
        usleep(CLI_HANDOVER_WAIT_MS * 1000);
    }
    cli_resp_done(&s.err);
    free(s.line);
    free(s.data);
    free(url);
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
        const struct cli_command *c = cli_command_find(a.cmd);
        fprintf(stderr, "cutover: %s\n", err);
        if (c != NULL && a.cmd != CLI_CMD_NONE)
            fprintf(stderr, "usage: cutover %s\n(see `cutover %s --help`)\n", c->synopsis, c->name);
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
