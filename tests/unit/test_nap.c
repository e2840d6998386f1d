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
#define MANY NAP_MIN_CLIENTS

/* Feeds k waits of ns each. */
static void waits(struct nap *n, int k, uint64_t ns)
{
    for (int i = 0; i < k; i++)
        nap_observe(n, ns);
}

/* A nap that is on: a busy spell of 30 short waits. */
static void busy(struct nap *n)
{
    nap_init(n, NAP);
    waits(n, 30, 20 * US);
    assert_int_equal(nap_length(n, MANY), NAP);
}

static void test_fresh_worker_blocks_until_waits_are_short(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, NAP);
    assert_int_equal(nap_length(&n, MANY), 0);
    /* One or two short waits are not a busy spell... */
    waits(&n, 2, 10 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
    /* ...sixteen are. */
    waits(&n, 14, 10 * US);
    assert_int_equal(nap_length(&n, MANY), NAP);
}

static void test_busy_with_many_clients_naps(void **state)
{
    struct nap n;
    (void)state;
    busy(&n);
    assert_int_equal(nap_length(&n, 100000), NAP);
}

static void test_few_active_clients_never_nap(void **state)
{
    struct nap n;
    (void)state;
    busy(&n);
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
    busy(&n);
    /* One long pause does not end napping... */
    waits(&n, 1, 5000 * US);
    assert_int_equal(nap_length(&n, MANY), NAP);
    /* ...a run of them does: the load went away. */
    waits(&n, 10, 5000 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
}

static void test_one_short_wait_after_a_lull_does_not_restart(void **state)
{
    struct nap n;
    (void)state;
    busy(&n);
    waits(&n, 100, 5000 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
    waits(&n, 1, 10 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
    waits(&n, 1, 10 * US);
    assert_int_equal(nap_length(&n, MANY), 0);
}

static void test_waits_between_start_and_stop_keep_the_state(void **state)
{
    struct nap n;
    (void)state;
    /* Waits of 6 naps: over NAP_START, under NAP_STOP. A busy worker stays busy... */
    busy(&n);
    waits(&n, 200, 6 * NAP);
    assert_int_equal(nap_length(&n, MANY), NAP);
    /* ...and an idle one stays idle. */
    nap_init(&n, NAP);
    waits(&n, 200, 6 * NAP);
    assert_int_equal(nap_length(&n, MANY), 0);
}

static void test_idle_spell_forgotten_quickly(void **state)
{
    struct nap n;
    (void)state;
    busy(&n);
    waits(&n, 1000, 3600ULL * 1000000 * US); /* an hour-long wait, many times */
    assert_int_equal(nap_length(&n, MANY), 0);
    int k = 0;
    while (nap_length(&n, MANY) == 0 && k < 100) {
        nap_observe(&n, 10 * US);
        k++;
    }
    /* The average is clamped, so a returning load is noticed within a few dozen events. */
    assert_true(k >= 3);
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
    busy(&n);
    /* While naps keep finding events, each counts as a wait of its length: still busy. */
    waits(&n, 1000, NAP);
    assert_int_equal(nap_length(&n, MANY), NAP);
}

static void test_longest_nap_does_not_overflow(void **state)
{
    struct nap n;
    (void)state;
    nap_init(&n, 1000 * US); /* io_coalesce_us at its maximum */
    waits(&n, 1000, UINT64_MAX);
    assert_int_equal(nap_length(&n, MANY), 0);
    waits(&n, 20, 10 * US);
    assert_int_equal(nap_length(&n, MANY), 1000 * US);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_worker_blocks_until_waits_are_short),
        cmocka_unit_test(test_busy_with_many_clients_naps),
        cmocka_unit_test(test_few_active_clients_never_nap),
        cmocka_unit_test(test_long_waits_stop_napping),
        cmocka_unit_test(test_one_short_wait_after_a_lull_does_not_restart),
        cmocka_unit_test(test_waits_between_start_and_stop_keep_the_state),
        cmocka_unit_test(test_idle_spell_forgotten_quickly),
        cmocka_unit_test(test_off_never_naps),
        cmocka_unit_test(test_napping_keeps_itself_going),
        cmocka_unit_test(test_longest_nap_does_not_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
