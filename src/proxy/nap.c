/* Poll coalescing bookkeeping (see nap.h). */
#include "proxy/nap.h"

/* Waits longer than this count as this long, so that after an idle spell of any length a
 * handful of short waits (about sixteen) turn napping back on. */
static uint64_t wait_cap(const struct nap *n)
{
    return n->nap_ns * NAP_STOP * 4;
}

void nap_init(struct nap *n, uint64_t nap_ns)
{
    n->nap_ns = nap_ns;
    n->wait_ns = wait_cap(n);
    n->busy = 0;
}

uint64_t nap_length(const struct nap *n, uint64_t clients)
{
    if (n->nap_ns == 0 || !n->busy || clients < NAP_MIN_CLIENTS)
        return 0;
    return n->nap_ns;
}

void nap_observe(struct nap *n, uint64_t waited_ns)
{
    uint64_t cap = wait_cap(n);
    if (waited_ns > cap)
        waited_ns = cap;
    /* An average over about eight waits. */
    n->wait_ns = n->wait_ns - n->wait_ns / 8 + waited_ns / 8;
    if (n->busy && n->wait_ns > n->nap_ns * NAP_STOP)
        n->busy = 0;
    else if (!n->busy && n->wait_ns < n->nap_ns * NAP_START)
        n->busy = 1;
}
