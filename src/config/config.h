/* The YAML configuration (BRIEF.md "Config") read into plain structs, validated as a whole.
 * Errors name file:line, the key, what was expected and what was found; unknown keys are
 * collected as warnings (the caller logs them). Owns every string it returns. Control thread
 * only (libfyaml is not used elsewhere). */
#ifndef CUTOVER_CONFIG_CONFIG_H
#define CUTOVER_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/freeze.h"

/* Default of io_coalesce_us: the nap measured to pay on the bench host (docs/benchmarks.md). */
#define CONFIG_IO_COALESCE_US 100

enum config_protocol { CONFIG_PROTO_HTTP = 0, CONFIG_PROTO_TCP };

struct config_health {
    char *path;              /* default "/healthz"; must start with '/' */
    uint64_t interval_ms;    /* default 1s; > 0 */
    uint64_t timeout_ms;     /* default 1s; > 0 */
    int healthy_threshold;   /* default 2; >= 1 */
    int unhealthy_threshold; /* default 3; >= 1 */
};

/* Data-plane timeouts and limits of one service (keys under `timeouts:` and `limits:`). */
struct config_timeouts {
    uint64_t client_header_ms;     /* `client_header`, default 10s: whole request head */
    uint64_t client_idle_ms;       /* `client_idle`, default 60s: keep-alive between requests */
    uint64_t upstream_connect_ms;  /* `upstream_connect`, default 5s */
    uint64_t upstream_response_ms; /* `upstream_response`, default 60s: to the response head */
};

struct config_limits {
    size_t max_header_bytes;  /* `max_header_bytes`, default 65536: request line + fields */
    size_t max_headers;       /* `max_headers`, default 100 */
    size_t max_uri;           /* `max_uri_bytes`, default 8192 */
    uint64_t max_body_bytes;  /* `max_body_bytes`, default 0 = unlimited */
    size_t max_connections;   /* `max_connections`, default 0 = unlimited: open client
                                 connections of the service; more are answered 503 and closed */
    size_t hold_max_requests; /* `hold_max_requests`, default 10000: requests waiting at once
                                 while the service is held; more are answered 503 (0: none
                                 wait, every request is refused while held) */
};

/* `risk_policy`: what a deploy of each risk (deploy --risk) must bring. */
enum config_risk { CONFIG_RISK_LOW, CONFIG_RISK_MEDIUM, CONFIG_RISK_HIGH, CONFIG_NRISKS };
struct config_risk_rule {
    bool ticket;         /* `ticket: true`: a deploy of this risk names its change request */
    bool approval_first; /* `approval_first: true`: its plan has an approval step before the first
                            step that moves users' traffic (pilot or weight above 0) */
};
struct config_risk_policy {
    bool require; /* `require: true`: every deploy states its risk */
    struct config_risk_rule rule[CONFIG_NRISKS];
};

/* NONE: `sticky` is absent, each request is split on its own; SOURCE: `sticky: {source: true}`,
 * by client address. */
enum config_sticky_kind {
    CONFIG_STICKY_NONE = 0,
    CONFIG_STICKY_COOKIE,
    CONFIG_STICKY_HEADER,
    CONFIG_STICKY_SOURCE
};

struct config_sticky {
    enum config_sticky_kind kind; /* NONE when `sticky` is absent */
    char *name;                   /* cookie or header name; NULL for NONE and SOURCE */
};

struct config_run {
    char **command; /* argv, NULL-terminated; NULL when `run` is absent */
    size_t argc;
    char **env;               /* "NAME=VALUE" strings from the `env` map, NULL-terminated */
    char *cwd;                /* may be NULL */
    int instances;            /* default 1; >= 1 */
    int port_lo, port_hi;     /* `port_range: LO-HI`, default 20000-20999 */
    int stop_signal;          /* `stop_signal: TERM|INT|QUIT|HUP|USR1|USR2|KILL`, default SIGTERM */
    uint64_t stop_timeout_ms; /* default 10s */
    uint64_t rollback_window_ms; /* `rollback_window`, default 0: a version that stopped getting
                                    traffic keeps its processes this long after its drain, so a
                                    rollback in that window needs no restart */
    bool stop_with_daemon;       /* `stop_with_daemon`, default false: a daemon that stops for
                                    good leaves its instances running for the next one to adopt */
};

/* What cutover does when the live version fails after its switch (crash loop, every target
 * unhealthy) while the previous one could still serve. */
enum config_on_live_failure { CONFIG_ON_LIVE_FAILURE_ROLLBACK = 0, CONFIG_ON_LIVE_FAILURE_ALERT };

/* Passive health: a target that fails (connect errors, resets, timeouts, 5xx) this many times in
 * a row is taken out of rotation for `ejection`, then gets requests again (one more failure
 * ejects it again). Never all targets of a version at once. */
struct config_outlier {
    int consecutive_failures; /* default 5; 0 turns it off */
    uint64_t ejection_ms;     /* `ejection`, default 10s */
};

/* How a managed deploy replaces the running version's instances (`strategy:`). */
enum config_strategy_kind {
    CONFIG_STRATEGY_BLUE_GREEN = 0, /* default: start every new instance beside the old ones */
    CONFIG_STRATEGY_ROLLING,        /* replace them in health-gated batches */
};

struct config_strategy {
    enum config_strategy_kind kind;
    int max_surge;       /* rolling: instances above run.instances while replacing (default 1) */
    int max_unavailable; /* rolling: instances below run.instances while replacing (default 0);
                            never both 0, at most run.instances each */
};

/* The name of the configured targets' version when the service does not set `version`. */
#define CONFIG_INITIAL_VERSION "v1"

/* `tls`: the certificates a listener serves (net/tls.h), checked when the config is loaded
   (readable, key mode 0600 or stricter, matching, not expired). ncerts == 0: plain TCP. */
struct config_tls_cert {
    char *cert; /* PEM certificate (and chain), resolved against the config's directory */
    char *key;  /* PEM private key without passphrase */
    int line;
};
struct config_tls {
    struct config_tls_cert *certs; /* [0] is the default; the others are chosen by SNI */
    size_t ncerts;
};

struct config_service {
    char *name;
    int line;             /* where the service starts in the file */
    char *listen;         /* "HOST:PORT", validated with addr_parse */
    char *preview_listen; /* optional, NULL when absent */
    enum config_protocol protocol;
    struct config_health health;
    struct config_outlier outlier;
    uint64_t drain_timeout_ms;  /* default 30s */
    uint64_t deploy_timeout_ms; /* default 60s */
    char **targets;             /* "HOST:PORT" each, validated; may be empty */
    size_t ntargets;
    struct config_run run;
    struct config_strategy strategy;
    struct config_sticky sticky;
    struct config_timeouts timeouts;
    struct config_limits limits;
    char *plan;                            /* default plan name (must exist in plans), or NULL */
    struct config_risk_policy risk_policy; /* all false when absent */
    /* `version`: the name the configured targets' version gets on the first start (the store
       keeps the live version's name after that); NULL means CONFIG_INITIAL_VERSION. Only with
       targets. */
    char *version;
    /* `trusted_proxies`: the balancers whose word on the client address is believed (their
       X-Forwarded-For, their PROXY header). Texts accepted by cidr_parse, each once,
       NULL-terminated; empty when absent. Load them with cidr_list_add, which cannot fail. */
    char **trusted_proxies;
    size_t ntrusted_proxies;
    /* `proxy_protocol`, default false: every connection to `listen` and `preview_listen` must
       start with a PROXY v1/v2 header from a trusted proxy. Never true without
       trusted_proxies. */
    bool proxy_protocol;
    enum config_on_live_failure on_live_failure; /* rollback (default) | alert */
    struct config_tls tls; /* `tls` on listen and preview_listen (protocol http only) */
    /* Routing on a listener several services share (http/vhost.h): `hosts` (patterns like
       "example.com", "*.example.com"; NULL-terminated, empty when absent), `path_prefix`
       (NULL when absent), `default: true` (the requests no route takes). A service with any of
       them may share its `listen` with others that have them too; `routed` says it has one. */
    char **hosts;
    size_t nhosts;
    char *path_prefix;
    bool is_default;
    bool routed;
};

enum config_step_kind {
    CONFIG_STEP_TEST,
    CONFIG_STEP_PILOT,
    CONFIG_STEP_WEIGHT,
    CONFIG_STEP_PAUSE,
    CONFIG_STEP_APPROVAL,
    CONFIG_STEP_MIRROR,
    CONFIG_STEP_LOAD,
};

/* The most synthetic requests a second a `load:` step may send (a sane ceiling: it is there
 * to let a quiet canary's gates decide, not to load-test). */
#define CONFIG_LOAD_MAX_RATE 1000

/* A `load:` step (issue 18): synthetic requests to the new version, counted apart from users'. */
struct config_load {
    int rate;     /* requests a second, 1..CONFIG_LOAD_MAX_RATE */
    char **paths; /* request targets, each starting with '/', used in turn; NULL-terminated */
    size_t npaths;
    char **headers; /* "Name: value" lines sent with each request; NULL-terminated */
    size_t nheaders;
};

/* What a mirror step compares of each pair of answers (bits of config_mirror.compare). */
#define CONFIG_MIRROR_STATUS 1u
#define CONFIG_MIRROR_BODY 2u

/* Methods a mirror copies (bits of config_mirror.methods), in enum http_method's order. */
#define CONFIG_MIRROR_MAX_HEADERS 16
#define CONFIG_MIRROR_MAX_IGNORE 32

/* A `mirror:` step (issue 18): copies of live requests go to the new version, and the answers
 * of both are compared; users are answered by the live version only. */
struct config_mirror {
    int percent;      /* 1..100 of eligible requests */
    unsigned methods; /* bit (1 << enum http_method); default GET and HEAD */
    unsigned compare; /* CONFIG_MIRROR_STATUS | CONFIG_MIRROR_BODY; default both */
    char **headers;   /* response headers compared too, lower-case, NULL-terminated */
    size_t nheaders;
    char **ignore_json; /* JSON pointers left out of a JSON body comparison */
    size_t nignore_json;
    uint64_t max_body_bytes;  /* request bodies copied up to this (default 64 KiB) */
    int max_inflight;         /* copies in flight at once per service (default 64) */
    uint64_t min_pairs;       /* fewer compared pairs: inconclusive (default 100) */
    double max_mismatch_rate; /* the gate: mismatches / pairs above it fails (default 0) */
};

enum config_pilot_kind { CONFIG_PILOT_HEADER, CONFIG_PILOT_COOKIE, CONFIG_PILOT_SOURCE };

struct config_step {
    enum config_step_kind kind;
    int line;
    /* TEST */
    char **command;      /* argv, NULL-terminated */
    uint64_t timeout_ms; /* default 60s */
    /* PILOT: header "NAME: VALUE", cookie "NAME=VALUE" or source CIDR; split into name/value
       (for SOURCE, name is the CIDR text and value NULL) */
    enum config_pilot_kind pilot_kind;
    char *pilot_name;
    char *pilot_value;
    /* PILOT and PAUSE: duration; 0 for PAUSE `{}` means "until promoted"; PILOT needs > 0 */
    uint64_t duration_ms;
    /* WEIGHT: 0..100 */
    int weight;
    char *owner; /* the step's own `owner:` (a second key beside the kind), else NULL */
    /* APPROVAL */
    char **approvers; /* NULL-terminated */
    size_t napprovers;
    int count;       /* 1..napprovers, default 1 */
    bool allow_self; /* `allow_self`: the person who started the change may approve it */
    /* MIRROR (duration_ms is the step's duration, > 0) */
    struct config_mirror *mirror;
    /* LOAD (duration_ms is the step's duration, > 0) */
    struct config_load *load;
};

enum config_on_failure { CONFIG_ON_ROLLBACK = 0, CONFIG_ON_PAUSE, CONFIG_ON_PROCEED };

struct config_analysis {
    int enabled;                  /* 1 when `analysis:` is present */
    uint64_t interval_ms;         /* default 10s */
    uint64_t min_requests;        /* default 100 */
    double max_error_rate;        /* default -1 = not checked; else 0..1 */
    double max_p99_latency_ratio; /* default -1 = not checked; else > 0 */
    double max_p99_latency_ms;    /* default -1 = not checked; else > 0 */
    double confidence;            /* default 0.99; 0.5 <= c < 1 */
    /* `baseline: true`: fresh instances of the live version take the canary's share and the
     * gates compare the canary with them (rollout/baseline.h); needs run:, not rolling, and
     * max_p99_latency_ratio (the gate that compares) */
    bool baseline;
    int baseline_line; /* its line, for the checks of the services that use the plan */
};

struct config_plan {
    char *name;
    int line;
    char *owner; /* `owner:`, who answers for the plan's milestones; NULL when absent */
    struct config_step *steps;
    size_t nsteps;
    struct config_analysis analysis;
    enum config_on_failure on_failure;      /* rollback (default) | pause */
    enum config_on_failure on_inconclusive; /* pause (default) | proceed | rollback */
};

/* What an admin API token may do over admin.listen. The unix socket needs none: its mode (0600)
 * already limits it to the daemon's user. */
enum config_role {
    CONFIG_ROLE_VIEWER = 1, /* read: GET routes, metrics */
    CONFIG_ROLE_OPERATOR,   /* + deploy, rollback, promote, pause, resume, abort, approve */
    CONFIG_ROLE_ADMIN,      /* + upgrade and reload of the daemon itself */
};

/* What a person is for a service (people.NAME.services.SERVICE), as bits. */
enum config_duty {
    CONFIG_DUTY_OWNER = 1,    /* answers for the service: told of everything, may act */
    CONFIG_DUTY_APPROVER = 2, /* may be asked to approve its changes */
    CONFIG_DUTY_INFORMED = 4, /* told of its changes */
};

struct config_person_duty {
    char *service; /* a service's name, or "*" for every service */
    unsigned duties;
};

/* people.NAME: who is who. A person's name is the actor recorded for what they do (the same
 * name as their token in admin.tokens_file, when they have one). */
struct config_person {
    char *name;
    char *unix_user;       /* the OS login whose requests over the admin socket are theirs */
    enum config_role role; /* over the admin socket; default: their token's role, else operator */
    int role_set;          /* role was written in the config */
    struct config_person_duty *duties;
    size_t nduties;
    /* `webhooks`: the names of notify.webhooks that reach this person. Such a webhook gets the
       events of the services the person owns or is informed of, and the `awaiting` events that
       name them, instead of every event (its own filters still apply). */
    char **webhooks;
    size_t nwebhooks;
    int line;
};

struct config_token {
    char *name;   /* who acts: recorded as the actor of what the token does */
    char *secret; /* the bearer token, 16..256 characters of A-Z a-z 0-9 - . _ ~ + / = */
    enum config_role role;
};

/* The body a webhook gets (notify.webhooks[].format). */
enum config_webhook_format {
    CONFIG_WEBHOOK_JSON,       /* the Event object with the change's fields */
    CONFIG_WEBHOOK_SLACK,      /* {text, blocks}: Slack and Mattermost incoming webhooks */
    CONFIG_WEBHOOK_CLOUDEVENTS /* CloudEvents 1.0 structured JSON, CDEvents types */
};

/* Where the events of changes are POSTed (notify.webhooks). */
struct config_webhook {
    char *name;      /* `name`, so that people can list it; NULL when absent */
    char *url;       /* http:// or https:// */
    char **services; /* only these services' events; NULL: every service */
    size_t nservices;
    char **events; /* only these event types (config_event_types); NULL: every type */
    size_t nevents;
    enum config_webhook_format format;
    char *secret_file;  /* NULL: deliveries are not signed */
    unsigned char *key; /* the signing key read from secret_file (Standard Webhooks) */
    size_t keylen;
    int line;
};

/* The event types a change records, NULL-terminated (what notify.webhooks[].events may name). */
extern const char *const config_event_types[];

/* A freeze window (`freeze:` list): fixed [from, to) or recurring, starting at each minute its
 * cron line matches (UTC) and lasting duration. Deploys of the services it covers are refused
 * while it is in force, unless they are emergencies; rollbacks never are. */
struct config_freeze {
    char *name; /* unique among the windows */
    int line;
    bool recurring;
    int64_t from, to;         /* fixed: Unix seconds, from < to */
    char *cron;               /* recurring: the line as written */
    struct freeze_cron sched; /* recurring: parsed */
    uint64_t duration_ms;     /* recurring: > 0, at most 31 days */
    char **services;          /* only these services; NULL: every service */
    size_t nservices;
};

struct config {
    char *path;         /* as given to config_load */
    char *state_dir;    /* default "./var"; relative paths are taken relative to the config file */
    int workers;        /* default: number of online CPUs; 1..256 */
    int io_coalesce_us; /* a busy worker's nap before blocking (proxy/nap.h); 0..1000, 0 = off */
    char *admin_listen; /* optional TCP admin listener "HOST:PORT" */
    char *admin_tokens_file; /* required when admin_listen is set; relative to the config file */
    struct config_tls admin_tls; /* `admin.tls` on admin_listen; ncerts 0: plain */
    char *admin_upgrade_dir;     /* upgrade --binary takes binaries under it only; NULL: the running
                                    binary's directory. An existing directory, relative to the
                                    config file */
    struct config_token *tokens; /* read from admin_tokens_file (which must be mode 0600 or
                                    stricter); at least one when admin_listen is set */
    size_t ntokens;
    struct config_webhook *webhooks;
    size_t nwebhooks;
    uint64_t notify_max_age_ms; /* a delivery is given up this long after its event; 24h */
    struct config_service *services;
    size_t nservices;
    struct config_plan *plans;
    size_t nplans;
    struct config_freeze *freezes;
    size_t nfreezes;
    struct config_person *people; /* people: empty when absent */
    size_t npeople;
    /* admin.socket_group: the group that may use the admin socket too (mode 0660), so that each
     * person connects as their own OS user; NULL: only the daemon's user (mode 0600). */
    char *admin_socket_group;
    char **warnings; /* "file:line: unknown key 'x' in services.web (ignored)"; NULL-terminated */
    size_t nwarnings;
};

/* Reads and validates the YAML file at path. On success *out is a new config (free it with
 * config_free) and 0 is returned. On failure, returns -EINVAL (bad content) or -errno (file
 * unreadable), leaves *out NULL, and writes one message into err (size errlen) of the form
 * "FILE:LINE: KEY: expected WHAT, got WHAT" (e.g. "c.yml:7: services.web.health_check.interval:
 * expected a duration like 500ms, 1s, 5m, got '5 parsecs'"). Validates: required keys (every
 * service needs `listen`), types, ranges, durations, addresses (addr_parse), duplicate listen
 * addresses across services, plan references, step syntax (unknown step kind, weight outside
 * 0..100, negative/invalid durations, approval count above the approvers listed). The admin
 * tokens file is read and checked here too (errors name that file and its line). */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Same as config_load, from a NUL-terminated YAML string; name is used in messages and as
 * the base for relative paths is the current directory. */
int config_load_string(const char *yaml, const char *name, struct config **out, char *err,
                       size_t errlen);

/* Same as config_load_string, from len bytes that may hold anything (NUL bytes included): what
 * config_load does with a file's bytes. For the fuzz target and tests. */
int config_load_buffer(const char *buf, size_t len, const char *name, struct config **out,
                       char *err, size_t errlen);

/* Frees cfg and everything it owns. config_free(NULL) is a no-op. */
void config_free(struct config *cfg);

/* Returns the service named name, or NULL. */
/* The config's name for a role ("viewer", "operator", "admin"). */
const char *config_role_name(enum config_role role);

const struct config_service *config_service_find(const struct config *cfg, const char *name);

/* 1 when the addresses a and b ("HOST:PORT") name the same socket address: services whose
 * `listen` is the same share one listening socket (they route by host and path). */
int config_same_listen(const char *a, const char *b);

/* Returns the plan named name, or NULL. */
const struct config_plan *config_plan_find(const struct config *cfg, const char *name);

/* The person named name, or whose unix_user is user; NULL when none. */
const struct config_person *config_person_find(const struct config *cfg, const char *name);
const struct config_person *config_person_by_unix_user(const struct config *cfg, const char *user);
/* One line describing a plan step, the same in events, status, `cutover check` and the written
 * plan: "test ./smoke.sh --fast (timeout 1m)", "pilot header X-Cohort: pilot for 1m",
 * "weight 10%", "pause 30s", "pause until promoted", "approval by 1 of lead, alice".
 * Truncated to n. Returns buf. */
char *config_step_describe(const struct config_step *st, char *buf, size_t n);

/* The index of the webhook named name, or -1. */
int config_webhook_find(const struct config *cfg, const char *name);
/* The duties (enum config_duty bits) person p has for service. */
unsigned config_person_duties(const struct config_person *p, const char *service);
/* "low", "medium", "high"; config_risk_parse returns -1 for anything else. */
const char *config_risk_name(enum config_risk r);
int config_risk_parse(const char *s);
/* "owner", "approver", "informed" for one bit. */
const char *config_duty_name(enum config_duty d);

#endif
