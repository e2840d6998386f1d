/* Unit tests of proxy/nap: when a worker's loop naps before blocking. The policy decides the
 * latency a lone client sees and the throughput of a busy proxy, so each rule has its case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/nap.h"

#define US 1000ULL
#define NAP (100 * US)
#define MANY NAP_MIN_CONNS

/* Feeds k waits of ns each. */
static void waits(struct nap *n, int k, uint64_t ns)
{
    for (int i = 0; i < k; i++)
        nap_observe(n, ns);
}

static void test_fresh_worker_blocks(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    assert_int_equal(nap_length(&n, MANY), 0);
}

static void test_short_waits_with_many_clients_nap(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    waits(&n, 30, 20 * US); /* events every 20 us: busy */
    assert_int_equal(nap_length(&n, MANY), NAP);
    assert_int_equal(nap_length(&n, 1000), NAP);
}

static void test_few_clients_never_nap(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    waits(&n, 30, 1 * US);
    /* A few clients, each sending its next request once answered: the waits are short but a
     * nap would only lengthen each round trip. */
    assert_int_equal(nap_length(&n, 0), 0);
    assert_int_equal(nap_length(&n, 1), 0);
    assert_int_equal(nap_length(&n, MANY - 1), 0);
}

static void test_long_waits_stop_napping(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    waits(&n, 30, 20 * US);
    assert_int_equal(nap_length(&n, MANY), NAP);
    /* One long pause does not end napping... */
    waits(&n, 1, 5000 * US);
    assert_int_equal(nap_length(&n, MANY), NAP);
    /* ...a run of them does: the load went away. */
    waits(&n, 10, 5000 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
}

static void test_idle_spell_forgotten_quickly(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    waits(&n, 1000, 3600ULL * 1000000 * US); /* an hour-long wait, many times */
    int k = 0;
    while (nap_length(&n, MANY) == 0 && k < 100) {
        nap_observe(&n, 10 * US);
        k++;
    }
    /* The average is clamped, so a returning load is noticed within a few dozen events. */
    assert_true(k > 0);
    assert_true(k <= 16);
}

static void test_off_never_naps(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, 0);
    waits(&n, 100, 0);
    assert_int_equal(nap_length(&n, 100000), 0);
}

static void test_napping_keeps_itself_going(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    waits(&n, 30, 20 * US);
    /* While naps keep finding events, each counts as a wait of its length: still busy. */
    waits(&n, 1000, NAP);
    assert_int_equal(nap_length(&n, MANY), NAP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_worker_blocks),
        cmocka_unit_test(test_short_waits_with_many_clients_nap),
        cmocka_unit_test(test_few_clients_never_nap),
        cmocka_unit_test(test_long_waits_stop_napping),
        cmocka_unit_test(test_idle_spell_forgotten_quickly),
        cmocka_unit_test(test_off_never_naps),
        cmocka_unit_test(test_napping_keeps_itself_going),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
