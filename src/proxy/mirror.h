/* Shadow traffic (issue 18): while a mirror step is in force (route_service.mirror), a share of
 * the eligible live requests is copied to the new version (the canary) on connections of its
 * own, after the client's answer went out, and the two answers are compared (status, named
 * headers, body: proxy/mirrordiff.h). Clients are answered by the live version only; a copy
 * that cannot start at once (max_inflight, no canary target) is dropped and counted.
 *
 * The per-copy half runs on the worker's loop (called by proxy/h1proxy.c); the results are
 * kept per service under one mutex that only the end of a copy and the control thread take,
 * never the client's path. The control thread starts a step's results (mirror_results_start)
 * and reads them (mirror_results_json). */
#ifndef CUTOVER_PROXY_MIRROR_H
#define CUTOVER_PROXY_MIRROR_H

#include <jansson.h>
#include <stdint.h>

#include "http/parse.h"
#include "proxy/proxy-t.h"

/* Live bodies (and the new version's) are kept for comparison up to this; a larger one makes
 * the pair "too large to compare" unless its status or headers already differ. */
#define MIRROR_BODY_MAX (64 * 1024)
/* Mismatches sampled into the change record per step. */
#define MIRROR_SAMPLES 20
/* Routes counted apart per step; more fall into one "other" row. */
#define MIRROR_ROUTES 64

struct mirror_copy;

/* The worker's mirror state: its own upstream pools. Worker thread. */
void mirror_worker_init(struct worker *w);
/* A new table was published: retires the pools of targets it no longer routes to. */
void mirror_worker_refresh(struct worker *w);
/* The worker ends: closes every copy in flight and every idle mirror connection. */
void mirror_worker_drain(struct worker *w);
/* Frees the state (after the loop closed). */
void mirror_worker_done(struct worker *w);

/* A request of svc (service_id) whose head (req, rewritten as uhead[0..uhead_len)) is complete
 * and whose body_have bytes at body are in the client buffer: returns a copy when the mirror
 * takes it (method, share, body complete and small enough, max_inflight), else NULL. The copy
 * holds what it needs; the caller passes it the live answer and ends it with mirror_send or
 * mirror_abandon exactly once. */
struct mirror_copy *mirror_begin(struct worker *w, int service_id, const struct route_service *svc,
                                 const struct http_request *req, const char *uhead,
                                 size_t uhead_len, const char *body, size_t body_have);
/* The live version's answer head (not a 1xx). */
void mirror_live_head(struct mirror_copy *m, const struct http_response *r);
/* Bytes of the live body as they went to the client, framing included. */
void mirror_live_body(struct mirror_copy *m, const char *p, size_t n);
/* The live answer is complete and went to the client: the copy goes to the new version now. */
void mirror_send(struct mirror_copy *m);
/* The live exchange did not complete (cutover's own error, a cut): nothing to compare. */
void mirror_abandon(struct mirror_copy *m);

/* Control thread. Starts a new step's results for service_id (earlier ones are dropped) and
 * returns its epoch, which the route table's mirror carries. */
uint64_t mirror_results_start(int service_id);

struct mirror_totals {
    uint64_t pairs;      /* compared */
    uint64_t matches;    /* pairs equal in everything compared */
    uint64_t mismatches; /* pairs that differ in something */
    uint64_t too_large;  /* equal status and headers, a body over MIRROR_BODY_MAX: not pairs */
    uint64_t dropped;    /* copies not made: max_inflight reached, or no canary target */
    uint64_t skipped;    /* eligible requests whose body could not be copied (chunked, large) */
};

/* The results of the step started with epoch: fills t, and returns {"pairs", "matches",
 * "mismatches", "mismatch_rate", "too_large", "dropped", "skipped", "kinds": {status, header,
 * body, error}, "routes": [{"route", "pairs", "mismatches", "kinds"}], "samples": [...]} (new
 * reference), or NULL when that step's results are gone. */
json_t *mirror_results_json(int service_id, uint64_t epoch, struct mirror_totals *t);

#endif
