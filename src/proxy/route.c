/* Route table publication and reference counting (see route.h). Publish runs on the control
 * thread; acquire/release on any thread. */
#include "proxy/route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "net/addr.h"

/* The mutex only orders "read the pointer, take a reference" against "swap the pointer, drop
 * the reference": a worker takes it once per table change, never per request. */
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct route_table *current;
static atomic_uint_fast64_t current_gen;

struct route_target *route_target_new(const char *address, const char *version)
{
    struct route_target *t = xcalloc(1, sizeof(*t));
    if (addr_parse(address, &t->sa, &t->salen) != 0) {
        free(t);
        return NULL;
    }
    atomic_init(&t->refs, 1);
    atomic_init(&t->healthy, 0);
    atomic_init(&t->longlived, 0);
    atomic_init(&t->closed_at_drain, 0);
    atomic_init(&t->consecutive_failures, 0);
    atomic_init(&t->ejected_until, 0);
    t->address = xstrdup(address);
    t->version = xstrdup(version);
    return t;
}

void route_target_ref(struct route_target *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void route_target_unref(struct route_target *t)
{
    if (t == NULL)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->address);
    free(t->version);
    free(t);
}

struct route_table *route_table_new(size_t n)
{
    struct route_table *t = xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->services = xcalloc(n ? n : 1, sizeof(*t->services));
    t->nservices = n;
    return t;
}

void route_backend_set(struct route_backend *b, const char *version,
                       struct route_target *const *targets, size_t n)
{
    b->version = xstrdup(version);
    b->targets = xcalloc(n ? n : 1, sizeof(*b->targets));
    b->ntargets = n;
    for (size_t i = 0; i < n; i++) {
        route_target_ref(targets[i]);
        b->targets[i] = targets[i];
    }
}

static void backend_done(struct route_backend *b)
{
    for (size_t i = 0; i < b->ntargets; i++)
        route_target_unref(b->targets[i]);
    free(b->targets);
    free(b->version);
}

void route_table_release(struct route_table *t)
{
    if (t == NULL)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->nservices; i++) {
        struct route_service *rs = &t->services[i];
        backend_done(&rs->live);
        backend_done(&rs->canary);
        backend_done(&rs->baseline);
        backend_done(&rs->fallback);
        free(rs->name);
        free(rs->pilot.name);
        free(rs->pilot.value);
        free(rs->sticky_name);
        free(rs->maintenance_message);
        route_mirror_unref(rs->mirror);
    }
    free(t->services);
    free(t);
}

void route_table_publish(struct route_table *t)
{
    pthread_mutex_lock(&current_lock);
    struct route_table *old = current;
    t->gen = atomic_load_explicit(&current_gen, memory_order_relaxed) + 1;
    current = t;
    atomic_store_explicit(&current_gen, t->gen, memory_order_release);
    pthread_mutex_unlock(&current_lock);
    route_table_release(old);
}

uint64_t route_table_generation(void)
{
    return atomic_load_explicit(&current_gen, memory_order_acquire);
}

struct route_table *route_table_acquire(void)
{
    pthread_mutex_lock(&current_lock);
    struct route_table *t = current;
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&current_lock);
    return t;
}

const struct route_service *route_table_service(const struct route_table *t, int id)
{
    for (size_t i = 0; i < t->nservices; i++)
        if (t->services[i].id == id)
            return &t->services[i];
    return NULL;
}

void route_table_shutdown(void)
{
    pthread_mutex_lock(&current_lock);
    struct route_table *old = current;
    current = NULL;
    pthread_mutex_unlock(&current_lock);
    route_table_release(old);
}

int route_pilot_parse_cidr(struct route_pilot *p, const char *cidr)
{
    char host[64];
    const char *slash = strchr(cidr, '/');
    size_t hl = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, cidr, hl);
    host[hl] = '\0';
    memset(p->addr, 0, sizeof(p->addr));
    int maxp;
    if (inet_pton(AF_INET, host, p->addr) == 1) {
        p->family = AF_INET;
        maxp = 32;
    } else if (inet_pton(AF_INET6, host, p->addr) == 1) {
        p->family = AF_INET6;
        maxp = 128;
    } else {
        return -EINVAL;
    }
    p->prefix = maxp;
    if (slash != NULL) {
        char *end;
        const char *ps = slash + 1;
        if (*ps < '0' || *ps > '9')
            return -EINVAL;
        long v = strtol(ps, &end, 10);
        if (*end != '\0' || v < 0 || v > maxp)
            return -EINVAL;
        p->prefix = (int)v;
    }
    p->kind = ROUTE_MATCH_SOURCE;
    return 0;
}

int route_pilot_source_match(const struct route_pilot *p, const struct sockaddr *sa)
{
    const unsigned char *a;
    unsigned char mapped[16];
    if (sa->sa_family == AF_INET && p->family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6 && p->family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    } else if (sa->sa_family == AF_INET6 && p->family == AF_INET) {
        /* an IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d */
        const unsigned char *a6 =
            (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, v4mapped, 12) != 0)
            return 0;
        memcpy(mapped, a6 + 12, 4);
        a = mapped;
    } else {
        return 0;
    }
    int bits = p->prefix;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((a[i] & mask) != (p->addr[i] & mask))
            return 0;
    }
    return 1;
}

const char *route_role_name(enum route_role role)
{
    static const char *const names[ROUTE_ROLES] = {"stable", "canary", "baseline"};
    return (unsigned)role < ROUTE_ROLES ? names[role] : "?";
}

const char *route_loss_name(unsigned i)
{
    static const char *const names[ROUTE_LOSSES] = {"502",   "503",   "504",
                                                    "drain", "reset", "not_retried"};
    return i < ROUTE_LOSSES ? names[i] : "?";
}

unsigned route_bucket(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    /* FNV's low bits are weak for short keys: fold the high half in before reducing. */
    h ^= h >> 32;
    return (unsigned)(h % ROUTE_BUCKETS);
}

static char **strv_dup(char *const *v, size_t *n)
{
    size_t k = 0;
    while (v != NULL && v[k] != NULL)
        k++;
    char **out = xcalloc(k + 1, sizeof(*out));
    for (size_t i = 0; i < k; i++)
        out[i] = xstrdup(v[i]);
    *n = k;
    return out;
}

struct route_mirror *route_mirror_new(uint64_t epoch, int percent, unsigned methods,
                                      unsigned compare, char *const *headers,
                                      char *const *ignore_json, uint64_t max_body_bytes,
                                      int max_inflight)
{
    struct route_mirror *m = xcalloc(1, sizeof(*m));
    atomic_init(&m->refs, 1);
    m->epoch = epoch;
    m->buckets = (unsigned)percent * (ROUTE_BUCKETS / 100);
    m->methods = methods;
    m->compare = compare;
    m->headers = strv_dup(headers, &m->nheaders);
    m->ignore_json = strv_dup(ignore_json, &m->nignore_json);
    m->max_body_bytes = max_body_bytes;
    m->max_inflight = max_inflight;
    return m;
}

void route_mirror_ref(struct route_mirror *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void route_mirror_unref(struct route_mirror *m)
{
    if (m == NULL || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < m->nheaders; i++)
        free(m->headers[i]);
    for (size_t i = 0; i < m->nignore_json; i++)
        free(m->ignore_json[i]);
    free(m->headers);
    free(m->ignore_json);
    free(m);
}
