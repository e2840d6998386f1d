/* The routing decision: which version role serves a request (preview listener, pilot cohort,
 * sticky key, weight) and which of that role's targets (round robin among healthy ones,
 * outliers ejected), and whether a table routes to a target at all. Pure functions over the
 * route table and a small view of the request; the caller passes its random and round-robin
 * state. No allocation, no system call; any thread. */
#ifndef CUTOVER_PROXY_PICK_H
#define CUTOVER_PROXY_PICK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http/parse.h"
#include "proxy/route.h"

/* What the routing decision looks at in a request. */
struct pick_request {
    const struct http_header *headers; /* the parsed header fields */
    size_t nheaders;
    const struct sockaddr *peer; /* client address: pilot `source:` cohorts */
    const char *peer_text;       /* the same as text: stickiness by source */
    int preview;                 /* it came in on the service's preview listener */
};

/* Length of a sticky cookie id cutover makes up, with its terminating NUL. */
#define PICK_COOKIE_ID_LEN 17

/* Returns the next value of the xorshift64 state *rng (never 0 when *rng is not 0). */
uint64_t pick_rand(uint64_t *rng);

/* Decides which version role of svc (NULL: none) serves rq. The preview listener and a pilot
 * match go to the canary whatever the weight. Otherwise the request's bucket, compared with
 * svc->canary_buckets, decides: the sticky key's bucket when the service has one (cookie,
 * header, or the client's address with ROUTE_STICKY_SOURCE), else a fresh random bucket for
 * each request, so that a weight holds whatever the clients' addresses. Buckets below
 * canary_buckets go to the canary, the top baseline_buckets to a baseline when the table has
 * one, the rest to the stable version. A sticky-cookie request
 * without the cookie gets a new random id in cookie_id (PICK_COOKIE_ID_LEN bytes, "" when
 * none), which the caller sets on the answer. */
enum route_role pick_role(const struct route_service *svc, const struct pick_request *rq,
                          uint64_t *rng, char *cookie_id);

/* Picks a healthy target of backend b, round robin from *rr (advanced), skipping targets
 * ejected until after now_ms and avoiding `avoid` when another healthy one exists. When every
 * healthy target is ejected, an ejected one serves. Returns NULL when none is healthy. */
struct route_target *pick_target(const struct route_backend *b, unsigned *rr, uint64_t now_ms,
                                 const struct route_target *avoid);

/* The backend of role in svc. */
const struct route_backend *pick_backend(const struct route_service *svc, enum route_role role);

/* 1 when table t (NULL: none) may send a request to target, or to another target object for
 * the same address, in some role: a service's live version, its canary or its baseline, at any
 * weight (a
 * canary at weight 0 still serves its pilot cohort, its preview listener and the plan's
 * tests). A connection to a target it does not route to is drained. */
int pick_routes_to(const struct route_table *t, const struct route_target *target);

/* Finds cookie `name` in the request's Cookie fields; sets *v and *vl. Returns 1 if found. */
int pick_find_cookie(const struct pick_request *rq, const char *name, const char **v, size_t *vl);

/* Returns the first header field named name (lower case), or NULL. */
const struct http_header *pick_find_header(const struct pick_request *rq, const char *name);

#endif
