/* Unit tests of proxy/pick: the whole routing decision, table-driven. Each row is a service
 * (weight, pilot, sticky key), a request (headers, address, listener) and the role it must get;
 * the weight rows draw many requests and check the share. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/xmalloc.h"
#include "proxy/pick.h"

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        .name = (n), .name_len = sizeof(n) - 1, .value = (v), .value_len = sizeof(v) - 1           \
    }

/* A service with one live and (when canary) one canary target, at weight percent. */
static struct route_table *table_new(int canary, unsigned weight, struct route_target **live,
                                     struct route_target **can)
{
    struct route_table *t = route_table_new(1);
    struct route_service *s = &t->services[0];
    s->id = 0;
    s->name = xstrdup("web");
    *live = route_target_new("127.0.0.1:1001", "v1");
    *can = route_target_new("127.0.0.1:1002", "v2");
    atomic_store(&(*live)->healthy, 1);
    atomic_store(&(*can)->healthy, 1);
    route_backend_set(&s->live, "v1", live, 1);
    if (canary)
        route_backend_set(&s->canary, "v2", can, 1);
    else
        route_backend_set(&s->canary, "", NULL, 0);
    s->canary_buckets = weight * (ROUTE_BUCKETS / 100);
    return t;
}

static void table_free(struct route_table *t, struct route_target *live, struct route_target *can)
{
    route_table_release(t);
    route_target_unref(live);
    route_target_unref(can);
}

static struct sockaddr_in sin_of(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

struct role_case {
    const char *what;
    int canary;      /* a canary backend exists */
    unsigned weight; /* percent */
    enum route_match_kind pilot;
    const char *pilot_name, *pilot_value; /* or the CIDR for SOURCE */
    int preview;
    const char *peer;
    struct http_header hdrs[2];
    size_t nhdrs;
    enum route_role want;
};

static void test_role_table(void **state)
{
    (void)state;
    static const struct role_case cases[] = {
        {"no canary: stable",
         0,
         100,
         ROUTE_MATCH_NONE,
         NULL,
         NULL,
         0,
         "10.0.0.1",
         {{0}},
         0,
         ROUTE_STABLE},
        {"no canary, preview: stable",
         0,
         0,
         ROUTE_MATCH_NONE,
         NULL,
         NULL,
         1,
         "10.0.0.1",
         {{0}},
         0,
         ROUTE_STABLE},
        {"weight 0: stable",
         1,
         0,
         ROUTE_MATCH_NONE,
         NULL,
         NULL,
         0,
         "10.0.0.1",
         {{0}},
         0,
         ROUTE_STABLE},
        {"weight 100: canary",
         1,
         100,
         ROUTE_MATCH_NONE,
         NULL,
         NULL,
         0,
         "10.0.0.1",
         {{0}},
         0,
         ROUTE_CANARY},
        {"preview listener, weight 0: canary",
         1,
         0,
         ROUTE_MATCH_NONE,
         NULL,
         NULL,
         1,
         "10.0.0.1",
         {{0}},
         0,
         ROUTE_CANARY},
        {"pilot header match",
         1,
         0,
         ROUTE_MATCH_HEADER,
         "x-pilot",
         "yes",
         0,
         "10.0.0.1",
         {HDR("X-Pilot", "yes")},
         1,
         ROUTE_CANARY},
        {"pilot header other value",
         1,
         0,
         ROUTE_MATCH_HEADER,
         "x-pilot",
         "yes",
         0,
         "10.0.0.1",
         {HDR("X-Pilot", "no")},
         1,
         ROUTE_STABLE},
        {"pilot cookie match",
         1,
         0,
         ROUTE_MATCH_COOKIE,
         "beta",
         "1",
         0,
         "10.0.0.1",
         {HDR("Cookie", "a=b; beta=1")},
         1,
         ROUTE_CANARY},
        {"pilot cookie prefix only",
         1,
         0,
         ROUTE_MATCH_COOKIE,
         "beta",
         "1",
         0,
         "10.0.0.1",
         {HDR("Cookie", "betamax=1")},
         1,
         ROUTE_STABLE},
        {"pilot source inside",
         1,
         0,
         ROUTE_MATCH_SOURCE,
         NULL,
         "10.1.0.0/16",
         0,
         "10.1.2.3",
         {{0}},
         0,
         ROUTE_CANARY},
        {"pilot source outside",
         1,
         0,
         ROUTE_MATCH_SOURCE,
         NULL,
         "10.1.0.0/16",
         0,
         "10.2.2.3",
         {{0}},
         0,
         ROUTE_STABLE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct role_case *k = &cases[i];
        struct route_target *live, *can;
        struct route_table *t = table_new(k->canary, k->weight, &live, &can);
        struct route_service *s = &t->services[0];
        s->pilot.kind = k->pilot;
        if (k->pilot == ROUTE_MATCH_SOURCE) {
            assert_int_equal(route_pilot_parse_cidr(&s->pilot, k->pilot_value), 0);
        } else if (k->pilot != ROUTE_MATCH_NONE) {
            s->pilot.name = xstrdup(k->pilot_name);
            s->pilot.value = xstrdup(k->pilot_value);
        }
        struct sockaddr_in sa = sin_of(k->peer);
        struct pick_request rq = {k->hdrs, k->nhdrs, (const struct sockaddr *)&sa, k->peer,
                                  k->preview};
        uint64_t rng = 88172645463325252ULL;
        char cookie[PICK_COOKIE_ID_LEN];
        enum route_role got = pick_role(s, &rq, &rng, cookie);
        if (got != k->want)
            fail_msg("%s: got role %d, want %d", k->what, got, k->want);
        table_free(t, live, can);
    }
}

struct share_case {
    const char *what;
    enum route_sticky_kind sticky;
    const char *sticky_name;
    unsigned weight;
    int same_client; /* every request has the same address and key */
    unsigned lo, hi; /* canary requests of 10,000 */
};

/* The canary's share of 10,000 requests: per request without a key, per client with one. */
static void test_weight_share_table(void **state)
{
    (void)state;
    static const struct share_case cases[] = {
        /* One address, no key: the weight holds per request (30 % +- 1.5 %, 5 sigma ~ 2.3 %). */
        {"no key, one address, 30", ROUTE_STICKY_NONE, NULL, 30, 1, 2770, 3230},
        {"no key, one address, 10", ROUTE_STICKY_NONE, NULL, 10, 1, 850, 1150},
        {"no key, one address, 50", ROUTE_STICKY_NONE, NULL, 50, 1, 4750, 5250},
        /* Sticky by source: one address is all on one side. */
        {"source, one address", ROUTE_STICKY_SOURCE, NULL, 30, 1, 0, 0},
        /* Sticky by source, many addresses: the share follows the weight. */
        {"source, many addresses", ROUTE_STICKY_SOURCE, NULL, 30, 0, 2770, 3230},
        /* Sticky header, one user: one side; many users: the weight. */
        {"header, one user", ROUTE_STICKY_HEADER, "x-user", 30, 1, 0, 0},
        {"header, many users", ROUTE_STICKY_HEADER, "x-user", 30, 0, 2770, 3230},
        /* A sticky cookie a client does not have yet: each new client draws a fresh id. */
        {"cookie, new clients", ROUTE_STICKY_COOKIE, "cid", 30, 1, 2770, 3230},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct share_case *k = &cases[i];
        struct route_target *live, *can;
        struct route_table *t = table_new(1, k->weight, &live, &can);
        struct route_service *s = &t->services[0];
        s->sticky = k->sticky;
        s->sticky_name = k->sticky_name ? xstrdup(k->sticky_name) : NULL;
        uint64_t rng = 0x9e3779b97f4a7c15ULL;
        unsigned canary = 0, cookies = 0;
        for (unsigned n = 0; n < 10000; n++) {
            char peer[32], user[32];
            snprintf(peer, sizeof(peer), "10.%u.%u.%u", n >> 16 & 255, n >> 8 & 255, n & 255);
            snprintf(user, sizeof(user), "user-%u", n);
            struct sockaddr_in sa = sin_of(k->same_client ? "10.0.0.1" : peer);
            struct http_header h = {"X-User", 6, k->same_client ? "user-0" : user,
                                    strlen(k->same_client ? "user-0" : user), 0};
            struct pick_request rq = {&h, 1, (const struct sockaddr *)&sa,
                                      k->same_client ? "10.0.0.1" : peer, 0};
            char cookie[PICK_COOKIE_ID_LEN];
            canary += pick_role(s, &rq, &rng, cookie) == ROUTE_CANARY;
            cookies += cookie[0] != '\0';
        }
        /* All on one side: either none or all of them. */
        if (k->lo == 0 && k->hi == 0) {
            if (canary != 0 && canary != 10000)
                fail_msg("%s: %u of 10000 to the canary, want all on one side", k->what, canary);
        } else if (canary < k->lo || canary > k->hi) {
            fail_msg("%s: %u of 10000 to the canary, want %u..%u", k->what, canary, k->lo, k->hi);
        }
        assert_int_equal(cookies, k->sticky == ROUTE_STICKY_COOKIE ? 10000 : 0);
        table_free(t, live, can);
    }
}

/* A client that has its sticky cookie keeps its side, and gets no new id. */
static void test_cookie_kept(void **state)
{
    (void)state;
    struct route_target *live, *can;
    struct route_table *t = table_new(1, 50, &live, &can);
    struct route_service *s = &t->services[0];
    s->sticky = ROUTE_STICKY_COOKIE;
    s->sticky_name = xstrdup("cid");
    struct http_header h = HDR("Cookie", "cid=0123456789abcdef");
    struct pick_request rq = {&h, 1, NULL, "10.0.0.1", 0};
    uint64_t rng = 12345;
    char cookie[PICK_COOKIE_ID_LEN];
    enum route_role first = pick_role(s, &rq, &rng, cookie);
    assert_string_equal(cookie, "");
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pick_role(s, &rq, &rng, cookie), first);
        assert_string_equal(cookie, "");
    }
    assert_int_equal(first, route_bucket("0123456789abcdef", 16) < s->canary_buckets
                                ? ROUTE_CANARY
                                : ROUTE_STABLE);
    table_free(t, live, can);
}

/* A baseline (fresh instances of the stable version) takes the top buckets, as many as the
 * canary's share when both fit, and never a bucket of the canary's: a sticky user on the canary
 * stays there as the weight grows, and one on the baseline only ever moves to the canary. */
static void test_baseline_split(void **state)
{
    (void)state;
    static const struct {
        unsigned weight, base; /* percent of requests */
    } rows[] = {{0, 0}, {5, 5}, {25, 25}, {50, 50}, {60, 40}, {100, 0}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct route_target *live, *can;
        struct route_table *t = table_new(1, rows[i].weight, &live, &can);
        struct route_service *s = &t->services[0];
        struct route_target *b = route_target_new("127.0.0.1:1003", "v1");
        atomic_store(&b->healthy, 1);
        route_backend_set(&s->baseline, "v1", &b, 1);
        s->baseline_buckets = rows[i].base * (ROUTE_BUCKETS / 100);
        assert_ptr_equal(pick_backend(s, ROUTE_BASELINE), &s->baseline);
        assert_true(pick_routes_to(t, b));
        uint64_t rng = 0x9e3779b97f4a7c15ULL;
        unsigned n[ROUTE_ROLES] = {0};
        for (unsigned k = 0; k < 20000; k++) {
            struct pick_request rq = {NULL, 0, NULL, "10.0.0.1", 0};
            char cookie[PICK_COOKIE_ID_LEN];
            n[pick_role(s, &rq, &rng, cookie)]++;
        }
        /* 20000 draws: a share is within 1.5 points (about 4.5 standard deviations). */
        unsigned want[ROUTE_ROLES] = {(100 - rows[i].weight - rows[i].base) * 200,
                                      rows[i].weight * 200, rows[i].base * 200};
        for (int r = 0; r < ROUTE_ROLES; r++)
            if (n[r] + 300 < want[r] || n[r] > want[r] + 300)
                fail_msg("weight %u, baseline %u: %u of 20000 to %s, want about %u", rows[i].weight,
                         rows[i].base, n[r], route_role_name((enum route_role)r), want[r]);
        route_table_release(t);
        route_target_unref(live);
        route_target_unref(can);
        route_target_unref(b);
    }
    /* Sticky users as the weight grows 10 -> 30 -> 50 with the baseline beside it. */
    enum route_role was[1000];
    for (unsigned w = 10; w <= 50; w += 20) {
        struct route_target *live, *can;
        struct route_table *t = table_new(1, w, &live, &can);
        struct route_service *s = &t->services[0];
        struct route_target *b = route_target_new("127.0.0.1:1003", "v1");
        atomic_store(&b->healthy, 1);
        route_backend_set(&s->baseline, "v1", &b, 1);
        s->baseline_buckets = w * (ROUTE_BUCKETS / 100);
        s->sticky = ROUTE_STICKY_HEADER;
        s->sticky_name = xstrdup("x-user");
        for (unsigned u = 0; u < 1000; u++) {
            char user[16];
            snprintf(user, sizeof(user), "u%u", u);
            struct http_header h = {"x-user", 6, user, strlen(user), 0};
            struct pick_request rq = {&h, 1, NULL, "10.0.0.1", 0};
            uint64_t rng = 1;
            char cookie[PICK_COOKIE_ID_LEN];
            enum route_role r = pick_role(s, &rq, &rng, cookie);
            if (w > 10 && was[u] == ROUTE_CANARY && r != ROUTE_CANARY)
                fail_msg("user %s left the canary at weight %u", user, w);
            if (w > 10 && was[u] == ROUTE_BASELINE && r == ROUTE_STABLE)
                fail_msg("user %s went from the baseline to the stable set at weight %u", user, w);
            was[u] = r;
        }
        route_table_release(t);
        route_target_unref(live);
        route_target_unref(can);
        route_target_unref(b);
    }
    /* An empty baseline backend takes nothing, whatever its buckets say. */
    struct route_target *live, *can;
    struct route_table *t = table_new(1, 10, &live, &can);
    struct route_service *s = &t->services[0];
    route_backend_set(&s->baseline, "", NULL, 0);
    s->baseline_buckets = 1000;
    uint64_t rng = 7;
    for (unsigned k = 0; k < 2000; k++) {
        struct pick_request rq = {NULL, 0, NULL, "10.0.0.1", 0};
        char cookie[PICK_COOKIE_ID_LEN];
        assert_int_not_equal(pick_role(s, &rq, &rng, cookie), ROUTE_BASELINE);
    }
    table_free(t, live, can);
}

struct target_case {
    const char *what;
    int healthy[3];
    uint64_t ejected_until[3];
    int avoid; /* index, or -1 */
    int want;  /* index, or -1 for NULL */
};

static void test_target_table(void **state)
{
    (void)state;
    static const struct target_case cases[] = {
        {"all healthy, rr 0", {1, 1, 1}, {0, 0, 0}, -1, 0},
        {"first unhealthy", {0, 1, 1}, {0, 0, 0}, -1, 1},
        {"none healthy", {0, 0, 0}, {0, 0, 0}, -1, -1},
        {"first ejected", {1, 1, 1}, {2000, 0, 0}, -1, 1},
        {"ejection over", {1, 1, 1}, {500, 0, 0}, -1, 0},
        {"all ejected: one serves", {1, 1, 1}, {2000, 2000, 2000}, -1, 0},
        {"avoid the first", {1, 1, 1}, {0, 0, 0}, 0, 1},
        {"avoid the only healthy one: it serves", {1, 0, 0}, {0, 0, 0}, 0, 0},
        {"unhealthy never serves, even ejected others", {0, 1, 0}, {0, 2000, 0}, -1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct target_case *k = &cases[i];
        struct route_target *ts[3];
        for (int j = 0; j < 3; j++) {
            char a[32];
            snprintf(a, sizeof(a), "127.0.0.1:%d", 2000 + j);
            ts[j] = route_target_new(a, "v1");
            atomic_store(&ts[j]->healthy, k->healthy[j]);
            atomic_store(&ts[j]->ejected_until, k->ejected_until[j]);
        }
        struct route_backend b = {"v1", ts, 3};
        unsigned rr = 0;
        struct route_target *got = pick_target(&b, &rr, 1000, k->avoid >= 0 ? ts[k->avoid] : NULL);
        struct route_target *want = k->want >= 0 ? ts[k->want] : NULL;
        if (got != want)
            fail_msg("%s: got %s, want %s", k->what, got ? got->address : "none",
                     want ? want->address : "none");
        assert_int_equal(rr, 1);
        for (int j = 0; j < 3; j++)
            route_target_unref(ts[j]);
    }
}

/* Round robin spreads requests over the healthy targets evenly. */
static void test_target_round_robin(void **state)
{
    (void)state;
    struct route_target *ts[3];
    for (int j = 0; j < 3; j++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%d", 3000 + j);
        ts[j] = route_target_new(a, "v1");
        atomic_store(&ts[j]->healthy, 1);
    }
    struct route_backend b = {"v1", ts, 3};
    unsigned rr = 0, count[3] = {0};
    for (int n = 0; n < 300; n++) {
        struct route_target *t = pick_target(&b, &rr, 0, NULL);
        for (int j = 0; j < 3; j++)
            count[j] += t == ts[j];
    }
    for (int j = 0; j < 3; j++) {
        assert_int_equal(count[j], 100);
        route_target_unref(ts[j]);
    }
}

/* A target is routed to while it is live or the canary, at any weight; not once gone. */
static void test_routes_to(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        int canary;
        unsigned weight;
        int live_routed, canary_routed;
    } cases[] = {
        {"canary at 10", 1, 10, 1, 1},
        {"canary at 50", 1, 50, 1, 1},
        {"canary at 0 (pilot, preview, tests)", 1, 0, 1, 1},
        {"canary at 100", 1, 100, 1, 1},
        {"no canary", 0, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_target *live, *can;
        struct route_table *t = table_new(cases[i].canary, cases[i].weight, &live, &can);
        if (pick_routes_to(t, live) != cases[i].live_routed ||
            pick_routes_to(t, can) != cases[i].canary_routed)
            fail_msg("%s: live %d canary %d", cases[i].what, pick_routes_to(t, live),
                     pick_routes_to(t, can));
        table_free(t, live, can);
    }
    assert_int_equal(pick_routes_to(NULL, NULL), 0);

    /* A reload may build new target objects for the same addresses: those are still routed. */
    struct route_target *live, *can;
    struct route_table *t = table_new(1, 10, &live, &can);
    struct route_target *same = route_target_new("127.0.0.1:1002", "v2");
    struct route_target *other = route_target_new("127.0.0.1:1003", "v2");
    assert_int_equal(pick_routes_to(t, same), 1);
    assert_int_equal(pick_routes_to(t, other), 0);
    route_target_unref(same);
    route_target_unref(other);
    table_free(t, live, can);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_table),   cmocka_unit_test(test_weight_share_table),
        cmocka_unit_test(test_cookie_kept),  cmocka_unit_test(test_baseline_split),
        cmocka_unit_test(test_target_table), cmocka_unit_test(test_target_round_robin),
        cmocka_unit_test(test_routes_to),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
