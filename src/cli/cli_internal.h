/* The pure parts of the command-line client, exposed for tests/unit/test_cli.c: argument
 * parsing into struct cli_args, the mapping of HTTP status and change state to an exit code,
 * and the rendering of admin API JSON as text. Nothing here touches the network or the
 * environment. Single-threaded (the CLI process). */
#ifndef CUTOVER_CLI_CLI_INTERNAL_H
#define CUTOVER_CLI_CLI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define CLI_DEFAULT_CONFIG "./cutover.yml"

/* Exit codes of the contract (BRIEF.md "Interface contract"). */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILED 1
#define CLI_EXIT_USAGE 2

/* `cutover logs` prints this many lines of each file unless -n says otherwise. */
#define CLI_LOGS_DEFAULT_LINES 50
#define CLI_LOGS_MAX_LINES 100000000L

enum cli_cmd {
    CLI_CMD_NONE = 0, /* no argument at all */
    CLI_CMD_HELP,     /* help, --help, -h; help_topic may name a command */
    CLI_CMD_VERSION,  /* --version, version */
    CLI_CMD_SERVE,    /* dispatched by main; only listed in the help */
    CLI_CMD_DEMO,     /* dispatched by main; only listed in the help */
    CLI_CMD_CHECK,
    CLI_CMD_DEPLOY,
    CLI_CMD_ROLLBACK,
    CLI_CMD_STATUS,
    CLI_CMD_HISTORY,
    CLI_CMD_PROMOTE,
    CLI_CMD_PAUSE,
    CLI_CMD_RESUME,
    CLI_CMD_ABORT,
    CLI_CMD_APPROVE,
    CLI_CMD_REPORT,
    CLI_CMD_UPGRADE,
    CLI_CMD_RELOAD,
    CLI_CMD_LOGS, /* reads the instance logs itself; the daemon only names the live version */
    CLI_CMD_EVENTS,
    CLI_CMD_PLAN,  /* the written plan of a deploy, before it starts; changes nothing */
    CLI_CMD_WATCH, /* a live view of status and per-version traffic (cli/watch.c) */
    CLI_CMD_HOLD,  /* hold, release, maintenance: a service's traffic held or answered 503 */
    CLI_CMD_RELEASE,
    CLI_CMD_MAINTENANCE,
    CLI_CMD_AUDIT, /* the audit log of the admin API */
    CLI_CMD_NOTE,  /* a lessons-learned note on a change */
    CLI_CMD_STATS, /* delivery figures (cli/knowledge.c renders them) */
    CLI_CMD_VERIFY /* the hash chain of the change records */
};

/* What the command line asked for. Strings point into argv (not owned), except targets, an
 * array the parser allocates (free it with cli_args_done). */
struct cli_args {
    enum cli_cmd cmd;
    const char *name;        /* the subcommand as typed, e.g. "deploy" */
    int help;                /* -h/--help given: print the command's help, do nothing else */
    enum cli_cmd help_topic; /* for `help COMMAND`; CLI_CMD_NONE for the full help */
    const char *config;      /* -c/--config; CLI_DEFAULT_CONFIG when absent */
    int config_given;        /* 1 when -c/--config was given */
    const char *admin;       /* --admin URL, or NULL */
    int json;                /* --json */
    const char *service;     /* SERVICE positional */
    const char *version;     /* VERSION positional (deploy; optional for logs) */
    const char **targets;    /* --target, repeated; validated HOST:PORT */
    size_t ntargets;
    const char *plan;    /* --plan */
    const char *reason;  /* --reason */
    int wait;            /* --wait */
    int all;             /* --all (promote) */
    const char *as;      /* --as (approve) */
    long long change_id; /* CHANGE_ID positional (approve, report); > 0 */
    const char *format;  /* --format md|json (report), text|md|json (plan); "md" when absent */
    int format_given;    /* 1 when --format was given (plan's default is text) */
    int emergency;       /* --emergency (deploy): through a freeze window; needs --reason */
    const char *ticket;  /* --ticket ID (deploy) */
    const char *risk;    /* --risk low|medium|high (deploy) */
    const char *at;      /* --at TIME (deploy): RFC 3339 or +DURATION, read by the daemon */
    const char *binary;  /* --binary PATH (upgrade) */
    long limit;          /* --limit N (history); 0 = the daemon's default */
    int follow;          /* -f/--follow (logs) */
    long lines;          /* -n/--lines N (logs), 0..CLI_LOGS_MAX_LINES; default 50 */
    int store;           /* --store (check) */
    int until_done;      /* --until-done (watch) */
    const char *text;    /* TEXT positional (note) */
    const char *since;   /* --since D (audit, stats): a duration, validated by duration_parse */
    uint64_t max_ms;     /* --max D (hold), 1 ms..1 h; 0 when absent (the daemon's 30 s) */
    const char *message; /* --message TEXT (maintenance on) */
    int on;              /* maintenance: 1 for on, 0 for off */
    int hold;            /* --hold (deploy): hold requests around the switch */
};

/* Parses argv (argv[0] the program, argv[1] the subcommand) into *a, which it initialises.
 * Options may come anywhere after the subcommand; "--" ends them. Validates what can be
 * validated without the daemon: the arity, --target syntax (addr_parse), the VERSION charset,
 * CHANGE_ID, --format, --limit, --lines. Returns 0, or -EINVAL with a message for the user in err
 * (without the "cutover: " prefix). Call cli_args_done in both cases. */
int cli_parse(int argc, char **argv, struct cli_args *a, char *err, size_t errlen);

/* For `cutover logs`: when name is an instance log file of the form VERSION-INDEX.log (VERSION
 * a valid version name or a baseline's VERSION+baseline, INDEX decimal digits; not a rotated
 * ".log.1"), returns 1 and stores the
 * version into version (NUL-terminated, at most vlen - 1 bytes) and the index into *idx; else
 * returns 0. */
int cli_log_name_parse(const char *name, char *version, size_t vlen, long *idx);

/* Frees what cli_parse allocated in a. Safe on a zeroed struct. */
void cli_args_done(struct cli_args *a);

/* Returns the command named name, or CLI_CMD_NONE. */
enum cli_cmd cli_cmd_from_name(const char *name);

/* Writes the help of one command (synopsis, what it does, its options) to out. */
void cli_command_usage(FILE *out, enum cli_cmd cmd);

/* The exit code for an admin API answer of HTTP status (0: no answer at all): 2xx -> 0; 400,
 * 401, 403, 404, 405, 413 and other 4xx -> 2; 409, 408, 429, 5xx, 3xx and no answer -> 1. */
int cli_exit_for_http(long status);

/* The exit code for a change in state (NULL or unknown -> 0): failed, rolled_back, aborted and
 * interrupted -> 1, anything else (running, completed, ...) -> 0. */
int cli_exit_for_state(const char *state);

/* Returns 1 when s is a version name the API accepts (1-64 of A-Za-z0-9._-), else 0. */
int cli_version_valid(const char *s);
/* The suffix of a plan's baseline set (rollout/managed.h MANAGED_BASELINE): its instances' logs
 * are VERSION+baseline-INDEX.log. */
#define CLI_LOG_BASELINE "+baseline"
/* Returns 1 when s names a set of instances with logs: a version, or a version's baseline
 * (VERSION+baseline), else 0. */
int cli_log_version_valid(const char *s);

/* Splits an --admin URL: "unix:/path.sock" sets *sock to the path and *base to
 * "http://localhost"; "http://HOST:PORT" or "https://..." sets *base (no trailing slash) and
 * *sock to NULL. Both are heap strings the caller frees. Returns 0 or -EINVAL. */
int cli_admin_parse(const char *url, char **base, char **sock);

/* For `cutover watch`: GETs path from the daemon. Returns 0 when it answered, with *status and
 * *body (heap, NUL-terminated, or NULL when empty; the caller frees it), else 1 (nothing
 * printed). */
typedef int (*cli_get_fn)(void *ctx, const char *path, long *status, char **body);

/* Runs `cutover watch` (cli/watch.c) until interrupted, or with --until-done until the changes
 * running at its start end; returns the exit code (deploy --wait's for the changes). */
int cli_watch(const struct cli_args *a, cli_get_fn get, void *ctx);

/* Renders a Service object (docs/api.md) as the human `status` text. */
void cli_render_service(FILE *out, const json_t *svc);

/* Renders a GET /api/v1/services answer ({"services": [...]}) or a single Service. */
void cli_render_status(FILE *out, const json_t *root);

/* Renders a Change as the short summary deploy/rollback/promote... print:
 * "change 3: deploy web v1 -> v2: completed" and the message on its own line. */
void cli_render_change(FILE *out, const json_t *change);

/* Renders a GET /api/v1/changes answer as a table (id, time, service, kind, from -> to, state,
 * actor, message). */
void cli_render_history(FILE *out, const json_t *root);

/* Renders a plan preview (GET /api/v1/services/NAME/plan) as text (md 0) or Markdown (md 1). */
void cli_render_preview(FILE *out, const json_t *plan, int md);

/* Renders a GET /api/v1/stats answer as a short table (cli/knowledge.c). */
void cli_render_stats(FILE *out, const json_t *stats);

/* Renders a GET /api/v1/changes/ID/verify or /api/v1/verify answer: a line per change whose
 * chain does not match (naming its first event that does not) or was recorded before the chain
 * began, then a summary. Returns the exit code: 1 when a chain does not match, else 0. */
int cli_render_verify(FILE *out, const json_t *verify);

/* Renders a Change with its events as a markdown report (used when the daemon has no report
 * route). */
void cli_render_report_md(FILE *out, const json_t *change);

/* --- shared between the CLI's files (args, render, http, events, logs, cli) --------------- */

#include <curl/curl.h>

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

struct config;

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

/* Prints "usage: cutover SYNOPSIS" and where the help is, for a command line cmd refused. */
void cli_usage_hint(FILE *out, enum cli_cmd cmd);

int cli_load_config(const struct cli_args *a, int warn, struct config **cfg);
const char *cli_jstr(const json_t *o, const char *key);
const char *cli_jstr_or(const json_t *o, const char *key, const char *dflt);
void cli_put_clean(FILE *out, const char *s, int width);
void cli_render_audit(FILE *out, const json_t *root);
void cli_print_json(const json_t *j);
void cli_render_config(FILE *out, const struct config *cfg);
void cli_resp_done(struct cli_resp *r);
size_t cli_on_body(char *ptr, size_t size, size_t nmemb, void *ud);
void cli_curl_ca(CURL *curl);
struct curl_slist *cli_curl_base(struct cli_http *h, const char *url, char *errbuf,
                                 const char *accept, curl_write_callback write, void *ud);
void cli_unreachable(const struct cli_http *h, CURLcode cc, const char *errbuf);
int cli_request(struct cli_http *h, const char *method, const char *path, const json_t *body,
                const char *accept, struct cli_resp *r);
int cli_api_error(const struct cli_http *h, const struct cli_resp *r);
int cli_unsupported(const char *what, const struct cli_resp *r);
char *cli_escape(struct cli_http *h, const char *s);
char *cli_actor(const struct cli_http *h);
int cli_connect(const struct cli_args *a, struct cli_http *h);
void cli_disconnect(struct cli_http *h);
int cli_cmd_logs(const struct cli_args *a);
int cli_cmd_events(const struct cli_args *a, struct cli_http *h);
;

#endif
