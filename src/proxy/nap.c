/* Poll coalescing bookkeeping (see nap.h). */
#include "proxy/nap.h"

void nap_init(struct nap *n, uint64_t nap_ns)
{
    n->nap_ns = nap_ns;
    /* Idle until shown otherwise: a fresh worker blocks until its waits get short. */
    n->wait_ns = nap_ns * NAP_BUSY_FACTOR;
}

uint64_t nap_length(const struct nap *n, uint64_t conns)
{
    if (n->nap_ns == 0 || conns < NAP_MIN_CONNS || n->wait_ns >= n->nap_ns * NAP_BUSY_FACTOR)
        return 0;
    return n->nap_ns;
}

void nap_observe(struct nap *n, uint64_t waited_ns)
{
    /* An average over about eight waits: one long pause ends napping only if the next waits are
     * long too, and one short wait after a lull does not restart it. Clamped so that a long idle
     * spell does not take dozens of waits to forget. */
    uint64_t cap = n->nap_ns * NAP_BUSY_FACTOR * 4;
    if (waited_ns > cap)
        waited_ns = cap;
    n->wait_ns = n->wait_ns - n->wait_ns / 8 + waited_ns / 8;
}
