/* The routing decision (see pick.h): pure functions over the route table and a request view. */
#include "proxy/pick.h"

#include <stdio.h>
#include <string.h>

uint64_t pick_rand(uint64_t *rng)
{
    uint64_t x = *rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    return x;
}

const struct http_header *pick_find_header(const struct pick_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->nheaders; i++)
        if (http_token_eq(rq->headers[i].name, rq->headers[i].name_len, name))
            return &rq->headers[i];
    return NULL;
}

int pick_find_cookie(const struct pick_request *rq, const char *name, const char **v, size_t *vl)
{
    return http_cookie_find(rq->headers, rq->nheaders, name, v, vl);
}

static int pilot_match(const struct route_pilot *p, const struct pick_request *rq)
{
    const char *v;
    size_t vl;
    switch (p->kind) {
    case ROUTE_MATCH_HEADER:
        for (size_t i = 0; i < rq->nheaders; i++) {
            const struct http_header *h = &rq->headers[i];
            if (http_token_eq(h->name, h->name_len, p->name) && h->value_len == strlen(p->value) &&
                memcmp(h->value, p->value, h->value_len) == 0)
                return 1;
        }
        return 0;
    case ROUTE_MATCH_COOKIE:
        return pick_find_cookie(rq, p->name, &v, &vl) && vl == strlen(p->value) &&
               memcmp(v, p->value, vl) == 0;
    case ROUTE_MATCH_SOURCE:
        return rq->peer != NULL && route_pilot_source_match(p, rq->peer);
    case ROUTE_MATCH_NONE:
        break;
    }
    return 0;
}

/* The request's bucket: its sticky key's, or a random one when it has none. */
static unsigned request_bucket(const struct route_service *svc, const struct pick_request *rq,
                               uint64_t *rng, char *cookie_id)
{
    const char *v;
    size_t vl;
    switch (svc->sticky) {
    case ROUTE_STICKY_COOKIE:
        if (svc->sticky_name != NULL && pick_find_cookie(rq, svc->sticky_name, &v, &vl) && vl > 0)
            return route_bucket(v, vl);
        if (svc->sticky_name != NULL) {
            /* A new client: its id, set on the answer, keeps it in this bucket from now on. */
            int n = snprintf(cookie_id, PICK_COOKIE_ID_LEN, "%016llx",
                             (unsigned long long)pick_rand(rng));
            return route_bucket(cookie_id, (size_t)n);
        }
        break;
    case ROUTE_STICKY_HEADER: {
        const struct http_header *h =
            svc->sticky_name != NULL ? pick_find_header(rq, svc->sticky_name) : NULL;
        if (h != NULL && h->value_len > 0)
            return route_bucket(h->value, h->value_len);
        break;
    }
    case ROUTE_STICKY_SOURCE:
        if (rq->peer_text != NULL)
            return route_bucket(rq->peer_text, strlen(rq->peer_text));
        break;
    case ROUTE_STICKY_NONE:
        break;
    }
    /* No key: each request draws its own bucket, so W % of requests go to the canary even
     * when they all come from one address (a load balancer in front). The high bits of
     * xorshift are the good ones. */
    return (unsigned)((pick_rand(rng) >> 32) % ROUTE_BUCKETS);
}

enum route_role pick_role(const struct route_service *svc, const struct pick_request *rq,
                          uint64_t *rng, char *cookie_id)
{
    cookie_id[0] = '\0';
    if (svc == NULL || svc->canary.ntargets == 0)
        return ROUTE_STABLE;
    if (rq->preview)
        return ROUTE_CANARY;
    if (svc->pilot.kind != ROUTE_MATCH_NONE && pilot_match(&svc->pilot, rq))
        return ROUTE_CANARY;
    if (svc->canary_buckets == 0)
        return ROUTE_STABLE;
    if (svc->canary_buckets >= ROUTE_BUCKETS)
        return ROUTE_CANARY;
    unsigned b = request_bucket(svc, rq, rng, cookie_id);
    if (b < svc->canary_buckets)
        return ROUTE_CANARY;
    if (svc->baseline.ntargets > 0 && b >= ROUTE_BUCKETS - svc->baseline_buckets)
        return ROUTE_BASELINE;
    return ROUTE_STABLE;
}

const struct route_backend *pick_backend(const struct route_service *svc, enum route_role role)
{
    switch (role) {
    case ROUTE_CANARY:
        return &svc->canary;
    case ROUTE_BASELINE:
        return &svc->baseline;
    case ROUTE_STABLE:
        break;
    }
    return &svc->live;
}

struct route_target *pick_target(const struct route_backend *b, unsigned *rr, uint64_t now_ms,
                                 const struct route_target *avoid)
{
    struct route_target *fallback = NULL, *ejected = NULL;
    if (b->ntargets == 0)
        return NULL;
    unsigned start = (*rr)++;
    for (size_t i = 0; i < b->ntargets; i++) {
        struct route_target *t = b->targets[(start + i) % b->ntargets];
        if (!atomic_load_explicit(&t->healthy, memory_order_relaxed))
            continue;
        if (atomic_load_explicit(&t->ejected_until, memory_order_relaxed) > now_ms) {
            if (ejected == NULL)
                ejected = t;
            continue;
        }
        if (t != avoid)
            return t;
        fallback = t;
    }
    /* Never all targets out at once: when every healthy one is ejected, they still serve. */
    return fallback ? fallback : ejected;
}

/* A target object of the backend is target, or one for the same address: a reload that builds
 * new target objects for unchanged addresses must not drain what runs on them. */
static int backend_has(const struct route_backend *b, const struct route_target *target)
{
    for (size_t j = 0; j < b->ntargets; j++) {
        const struct route_target *t = b->targets[j];
        if (t == target ||
            (t->salen == target->salen && memcmp(&t->sa, &target->sa, t->salen) == 0))
            return 1;
    }
    return 0;
}

int pick_routes_to(const struct route_table *t, const struct route_target *target)
{
    if (t == NULL)
        return 0;
    for (size_t i = 0; i < t->nservices; i++) {
        const struct route_service *s = &t->services[i];
        /* A canary in the table gets traffic even at weight 0: its preview listener, its pilot
         * cohort, the rollout's tests. Only a version gone from the table is drained. */
        if (backend_has(&s->live, target) || backend_has(&s->canary, target) ||
            backend_has(&s->baseline, target))
            return 1;
    }
    return 0;
}
