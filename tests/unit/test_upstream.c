/* Unit tests of proxy/upstream: the pools of upstream connections, on a real libuv loop with
 * real loopback sockets (a listener in the test accepts and counts the connections). Get, put,
 * reuse, the idle limit, retirement by a new table in each role, an upstream closing an idle
 * connection, and a stopping worker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/xmalloc.h"
#include "proxy/upstream.h"

/* The user's struct of a connection, as a protocol would have it. */
struct tconn {
    struct upstream base;
    int connected;
    int status;
    int reads;
};

static int nfreed;
static char rbuf[256];

static void t_alloc(struct upstream *u, uv_buf_t *buf)
{
    (void)u;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void t_read(struct upstream *u, ssize_t nread)
{
    (void)nread;
    ((struct tconn *)u)->reads++;
}

static void t_connected(struct upstream *u, int status)
{
    struct tconn *c = (struct tconn *)u;
    c->connected = 1;
    c->status = status;
}

static void t_timeout(struct upstream *u)
{
    (void)u;
}

static void t_freed(struct upstream *u)
{
    (void)u;
    nfreed++;
}

static const struct upstream_ops ops = {
    .size = sizeof(struct tconn),
    .alloc = t_alloc,
    .read = t_read,
    .connected = t_connected,
    .timeout = t_timeout,
    .freed = t_freed,
};

/* The backend: a listener that accepts and keeps every connection. */
#define MAX_PEERS 16
struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t peers[MAX_PEERS];
    int accepted;
    struct upstream_pools ps;
    struct route_target *target, *other;
};

static void on_conn(uv_stream_t *s, int status)
{
    struct fixture *f = s->data;
    assert_int_equal(status, 0);
    assert_true(f->accepted < MAX_PEERS);
    uv_tcp_t *p = &f->peers[f->accepted++];
    uv_tcp_init(&f->loop, p);
    assert_int_equal(uv_accept(s, (uv_stream_t *)p), 0);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_tcp_init(&f->loop, &f->listener);
    f->listener.data = f;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, on_conn), 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&sa, &len);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    f->target = route_target_new(addr, "v1");
    f->other = route_target_new("127.0.0.1:1", "v0");
    upstream_pools_init(&f->ps, &f->loop, NULL);
    nfreed = 0;
    *state = f;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    upstream_close_idle_all(&f->ps);
    uv_walk(&f->loop, close_walk, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    upstream_pools_done(&f->ps);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    route_target_unref(f->target);
    route_target_unref(f->other);
    free(f);
    return 0;
}

/* Turns the loop until *flag is set or until the loop has run 1000 turns. */
static void run_until(struct fixture *f, const int *flag)
{
    for (int i = 0; i < 1000 && !*flag; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

/* Turns the loop until nothing is pending right now. */
static void settle(struct fixture *f)
{
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* A new connection, connected. */
static struct tconn *connect_new(struct fixture *f, int fresh)
{
    struct upstream *u;
    int rc = upstream_get(&f->ps, f->target, fresh, &ops, 5000, &u);
    assert_int_equal(rc, 0);
    struct tconn *c = (struct tconn *)u;
    run_until(f, &c->connected);
    assert_int_equal(c->status, 0);
    assert_int_equal(u->phase, UPSTREAM_BUSY);
    return c;
}

/* A table whose one service has `live` as its live target and `canary` (may be NULL) as its
 * canary at weight percent. */
static struct route_table *table(struct route_target *live, struct route_target *canary,
                                 unsigned weight)
{
    struct route_table *t = route_table_new(1);
    t->services[0].name = xstrdup("web");
    route_backend_set(&t->services[0].live, "v", &live, 1);
    if (canary != NULL)
        route_backend_set(&t->services[0].canary, "c", &canary, 1);
    else
        route_backend_set(&t->services[0].canary, "", NULL, 0);
    t->services[0].canary_buckets = weight * 100;
    return t;
}

static void test_put_then_get_reuses(void **state)
{
    struct fixture *f = *state;
    struct tconn *c = connect_new(f, 0);
    struct upstream_pool *p = upstream_pool_get(&f->ps, f->target);
    assert_int_equal(p->active, 1);
    upstream_release(&c->base);
    assert_int_equal(p->nidle, 1);
    assert_int_equal(p->active, 0);
    assert_int_equal(c->base.phase, UPSTREAM_IDLE);

    struct upstream *u;
    assert_int_equal(upstream_get(&f->ps, f->target, 0, &ops, 5000, &u), 1);
    assert_ptr_equal(u, &c->base);
    assert_true(u->reused);
    assert_int_equal(p->nidle, 0);
    assert_int_equal(p->active, 1);
    settle(f);
    assert_int_equal(f->accepted, 1);
    upstream_close(u);
    settle(f);
    assert_int_equal(nfreed, 1);
}

static void test_fresh_opens_a_new_connection(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 0);
    upstream_release(&a->base);
    struct tconn *b = connect_new(f, 1);
    assert_ptr_not_equal(a, b);
    assert_false(b->base.reused);
    settle(f);
    assert_int_equal(f->accepted, 2);
    assert_int_equal(upstream_pool_get(&f->ps, f->target)->nidle, 1);
    upstream_close(&b->base);
}

static void test_idle_limit_closes_the_surplus(void **state)
{
    struct fixture *f = *state;
    f->ps.max_idle = 1;
    struct tconn *a = connect_new(f, 1);
    struct tconn *b = connect_new(f, 1);
    upstream_release(&a->base);
    upstream_release(&b->base);
    struct upstream_pool *p = upstream_pool_get(&f->ps, f->target);
    assert_int_equal(p->nidle, 1);
    assert_int_equal(p->active, 0);
    settle(f);
    assert_int_equal(nfreed, 1);
}

/* A table that still routes to the target, as live or as canary at any weight, retires
 * nothing; one that routes to it in no role closes its idle connections and frees the pool. */
static void test_retire_by_role(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 1);
    upstream_release(&a->base);
    static const unsigned weights[] = {0, 10, 50, 100};
    for (size_t i = 0; i < 4; i++) {
        struct route_table *t = table(f->other, f->target, weights[i]);
        assert_int_equal(upstream_retire(&f->ps, t), 0);
        assert_false(upstream_pool_get(&f->ps, f->target)->retired);
        assert_int_equal(upstream_pool_get(&f->ps, f->target)->nidle, 1);
        route_table_release(t);
    }
    struct route_table *t = table(f->target, NULL, 0);
    assert_int_equal(upstream_retire(&f->ps, t), 0);
    assert_int_equal(upstream_pool_get(&f->ps, f->target)->nidle, 1);
    route_table_release(t);

    t = table(f->other, NULL, 0);
    assert_int_equal(upstream_retire(&f->ps, t), 0);
    route_table_release(t);
    assert_null(f->ps.head); /* the retired pool was empty: freed */
    settle(f);
    assert_int_equal(nfreed, 1);
}

/* A retired pool with a connection in use says so, and closes it when it is given back. */
static void test_retire_with_busy_connection(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 1);
    struct route_table *t = table(f->other, NULL, 0);
    assert_int_equal(upstream_retire(&f->ps, t), 1);
    route_table_release(t);
    assert_true(upstream_retired(&a->base));
    assert_ptr_equal(upstream_target(&a->base), f->target);
    upstream_release(&a->base);
    assert_null(f->ps.head);
    settle(f);
    assert_int_equal(nfreed, 1);
}

/* The upstream closing an idle connection takes it out of the pool at once. */
static void test_upstream_close_of_idle_connection(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 1);
    upstream_release(&a->base);
    settle(f);
    assert_int_equal(f->accepted, 1);
    uv_close((uv_handle_t *)&f->peers[0], NULL);
    struct upstream_pool *p = upstream_pool_get(&f->ps, f->target);
    for (int i = 0; i < 1000 && nfreed == 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(nfreed, 1);
    assert_int_equal(p->nidle, 0);
}

static void test_draining_closes_released_connections(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 1);
    f->ps.draining = 1;
    upstream_release(&a->base);
    assert_int_equal(upstream_pool_get(&f->ps, f->target)->nidle, 0);
    settle(f);
    assert_int_equal(nfreed, 1);
}

static void test_close_idle_all(void **state)
{
    struct fixture *f = *state;
    struct tconn *a = connect_new(f, 1);
    struct tconn *b = connect_new(f, 1);
    upstream_release(&a->base);
    upstream_release(&b->base);
    upstream_close_idle_all(&f->ps);
    assert_null(f->ps.head);
    settle(f);
    assert_int_equal(nfreed, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_then_get_reuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fresh_opens_a_new_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_limit_closes_the_surplus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retire_by_role, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retire_with_busy_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_close_of_idle_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_draining_closes_released_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_idle_all, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
