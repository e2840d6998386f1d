/* The route table: an immutable snapshot of where each service's requests go, built by the
 * control thread and read by every worker without locks on the request path.
 *
 * Publication is RCU-like: the control thread builds a new table, publishes it with
 * route_table_publish (one atomic pointer store + generation bump), and drops its reference.
 * A worker compares the generation with the one it holds before routing each request
 * (one relaxed load) and, only when it changed, takes a reference on the new table and
 * releases its old one. The last reference frees a table. So no request is routed by an old
 * table once publish has returned, and no table is freed while a worker still reads it.
 *
 * Targets are shared, refcounted objects: health state is written by the control thread
 * (health checks, outlier detection) and read by workers with relaxed atomics. */
#ifndef CUTOVER_PROXY_ROUTE_H
#define CUTOVER_PROXY_ROUTE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One upstream address of one version of one service. */
struct route_target {
    atomic_int refs;
    char *address; /* "HOST:PORT" as configured */
    char *version; /* name of the version it belongs to */
    struct sockaddr_storage sa;
    socklen_t salen;
    atomic_int healthy;              /* 1 = may receive new requests (set by health checks) */
    atomic_int longlived;            /* open tunnels and event streams to it (workers) */
    atomic_uint closed_at_drain;     /* long-lived connections closed at a drain deadline */
    atomic_int consecutive_failures; /* passive health, written by workers */
    _Atomic uint64_t ejected_until;  /* uv_hrtime() ms until which it gets no new request */
};

/* The targets serving one version of a service, in a fixed order. */
struct route_backend {
    char *version;
    struct route_target **targets; /* each holds a reference */
    size_t ntargets;
};

/* Per-service data-plane settings, copied from the config into each table. */
struct route_limits {
    uint64_t client_header_ms;
    uint64_t client_idle_ms;
    uint64_t upstream_connect_ms;
    uint64_t upstream_response_ms;
    size_t max_header_bytes;
    size_t max_headers;
    size_t max_uri;
    uint64_t max_body_bytes; /* 0 = unlimited */
    uint64_t drain_ms;       /* after a switch, connections to the old version end by then */
    size_t max_connections;  /* 0 = unlimited */
    int outlier_failures;    /* consecutive failures that eject a target; 0 = off */
    uint64_t outlier_ejection_ms;
    size_t hold_max_requests; /* requests held at once while the service is held (proxy/hold.h) */
};

/* Which version of a service a request is routed to. BASELINE: fresh instances of the stable
 * version started for a like-for-like comparison with the canary (`analysis: {baseline: true}`);
 * it serves the same version as STABLE, apart only in the figures. */
enum route_role { ROUTE_STABLE = 0, ROUTE_CANARY = 1, ROUTE_BASELINE = 2 };
#define ROUTE_ROLES 3

/* "stable", "canary" or "baseline": the `role` label of /metrics. */
const char *route_role_name(enum route_role role);

/* Why cutover failed or cut a request: the workers count them by enum worker_loss (in this
 * order), the engine records them per change, /metrics labels them. "502", "503", "504",
 * "drain", "reset", "not_retried"; "?" out of range. The one home of these names. */
#define ROUTE_LOSSES 6
const char *route_loss_name(unsigned i);

/* Bucket space of the weight split: a request falls in a bucket 0..9999 (fixed for a sticky
 * key, drawn per request without one) and the canary serves the buckets below canary_buckets,
 * so raising the weight only moves sticky clients to it. A baseline serves the top
 * baseline_buckets, so its share never takes a bucket from the canary's. */
#define ROUTE_BUCKETS 10000

enum route_match_kind {
    ROUTE_MATCH_NONE = 0,
    ROUTE_MATCH_HEADER,
    ROUTE_MATCH_COOKIE,
    ROUTE_MATCH_SOURCE
};

/* A pilot cohort: requests that match go to the canary whatever the weight. */
struct route_pilot {
    enum route_match_kind kind;
    char *name; /* header or cookie name */
    char *value;
    int family; /* SOURCE: AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

/* What keeps a client on one side of a split. NONE: nothing, each request draws its own bucket
 * (proxy/pick.h); SOURCE: the client's address (`sticky: {source: true}`). */
enum route_sticky_kind {
    ROUTE_STICKY_NONE = 0,
    ROUTE_STICKY_COOKIE,
    ROUTE_STICKY_HEADER,
    ROUTE_STICKY_SOURCE
};

/* What a mirror compares besides the named headers (route_mirror.compare), and how many headers
 * it keeps at most. The same values as config.h's CONFIG_MIRROR_* (the plan checks). */
#define ROUTE_MIRROR_STATUS 1u
#define ROUTE_MIRROR_BODY 2u
#define ROUTE_MIRROR_MAX_HEADERS 16

/* A mirror step in force (issue 18): copies of eligible requests go to the canary and both
 * answers are compared (proxy/mirror.h). Built by the control thread, never changed after
 * publication, shared by reference: a copy in flight keeps it alive past its table. */
struct route_mirror {
    atomic_int refs;
    uint64_t epoch;   /* the step the results belong to (proxy/mirror.h) */
    unsigned buckets; /* of ROUTE_BUCKETS: the share of eligible requests copied */
    unsigned methods; /* bit (1 << enum http_method) for each method copied */
    unsigned compare; /* ROUTE_MIRROR_STATUS | ROUTE_MIRROR_BODY */
    char **headers;   /* lower-case response header names compared, NULL-terminated */
    size_t nheaders;
    char **ignore_json; /* JSON pointers left out of a JSON body comparison */
    size_t nignore_json;
    uint64_t max_body_bytes; /* request bodies copied up to this */
    int max_inflight;        /* copies in flight at once, all workers together */
};

/* Returns a new mirror with one reference, copying the given settings (lists NULL-terminated,
 * may be NULL). Control thread. */
struct route_mirror *route_mirror_new(uint64_t epoch, int percent, unsigned methods,
                                      unsigned compare, char *const *headers,
                                      char *const *ignore_json, uint64_t max_body_bytes,
                                      int max_inflight);
void route_mirror_ref(struct route_mirror *m);
/* Drops a reference; frees with the last one. NULL is a no-op. Any thread. */
void route_mirror_unref(struct route_mirror *m);

struct route_service {
    int id; /* stable for the daemon's life: listeners find their service by it */
    char *name;
    struct route_backend live;   /* ntargets == 0 when nothing is live (answers 503) */
    struct route_backend canary; /* the version being rolled out; ntargets == 0 when none */
    /* The previous version, between changes, while it could take over from a live version that
     * fails: requests that find no healthy live target go to it until the rollback is
     * published. ntargets == 0 when none. Never drained on its account (pick_routes_to). */
    struct route_backend fallback;
    unsigned canary_buckets; /* 0..ROUTE_BUCKETS */
    /* Fresh instances of the live version that take as large a share as the canary while a plan
     * with `analysis: {baseline: true}` runs (rollout/baseline.h); ntargets == 0 when none.
     * Requests that find no healthy baseline target go to the live version. */
    struct route_backend baseline;
    unsigned
        baseline_buckets; /* the top buckets; canary_buckets + baseline_buckets <= ROUTE_BUCKETS */
    struct route_pilot pilot;
    enum route_sticky_kind sticky;
    char *sticky_name; /* cookie or header name */
    struct route_limits limits;
    /* `cutover hold` (rollout/hold.c): while hold_ms > 0, a new request waits in its worker, at
     * most hold_ms, until a table without the hold is published; then it is routed by that
     * table. No backend sees it meanwhile. */
    uint64_t hold_ms;
    /* `cutover maintenance`: every request is answered 503 with a page naming the message
     * (NULL: none given). Takes precedence over a hold. */
    int maintenance;
    char *maintenance_message;
    struct route_mirror *mirror; /* a mirror step in force, else NULL; holds a reference */
};

struct route_table {
    atomic_int refs;
    uint64_t gen;
    struct route_service *services;
    size_t nservices;
};

/* Creates a target for address (validated by the caller with addr_parse) with one reference,
 * healthy = 0. Returns NULL if address does not parse. */
struct route_target *route_target_new(const char *address, const char *version);
void route_target_ref(struct route_target *t);
/* Drops a reference; frees the target with the last one. NULL is a no-op. Any thread. */
void route_target_unref(struct route_target *t);

/* Creates an empty table with room for n services (zeroed; refs = 1). Control thread. */
struct route_table *route_table_new(size_t n);

/* Fills backend b with version and a reference to each of the n targets. */
void route_backend_set(struct route_backend *b, const char *version,
                       struct route_target *const *targets, size_t n);

/* Publishes t as the current table (takes over the caller's reference), sets its generation,
 * and releases the previously published table. Control thread. */
void route_table_publish(struct route_table *t);

/* The generation of the current table; workers compare it with the one they hold. */
uint64_t route_table_generation(void);

/* Returns a new reference to the current table (NULL before the first publish). Any thread. */
struct route_table *route_table_acquire(void);

/* Drops a reference; frees the table (and its target references) with the last one. Any
 * thread. NULL is a no-op. */
void route_table_release(struct route_table *t);

/* Parses a CIDR ("10.0.0.0/8", "::1/128", or a bare address) into p (kind SOURCE).
 * Returns 0 or -EINVAL. */
int route_pilot_parse_cidr(struct route_pilot *p, const char *cidr);

/* Returns 1 when the address sa is inside the pilot's CIDR. */
int route_pilot_source_match(const struct route_pilot *p, const struct sockaddr *sa);

/* Returns the bucket 0..ROUTE_BUCKETS-1 of a sticky key (FNV-1a, stable across restarts and
 * versions of cutover). */
unsigned route_bucket(const char *key, size_t len);

/* Returns the service with id, or NULL. */
const struct route_service *route_table_service(const struct route_table *t, int id);

/* Drops the published table at exit. Control thread. */
void route_table_shutdown(void);

#endif
