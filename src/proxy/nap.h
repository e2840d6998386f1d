/* Poll coalescing for a worker's loop ("nap before blocking").
 *
 * A proxy that blocks in epoll_wait as soon as it runs out of events is woken again by the next
 * packet, and that wake-up is paid by the sender: on a virtual machine, waking a halted vCPU
 * costs the backend or the client an exit to the hypervisor. A busy worker that instead sleeps
 * a short, fixed time before polling again finds several events at once, so its peers hand it
 * data without waking it and it hands them data in bursts; measured on the 2-vCPU bench host,
 * the backend and the load generator each spend less CPU per request (docs/benchmarks.md).
 *
 * The nap is taken only while the loop is busy, judged by how long its recent blocking waits
 * lasted and by how many clients it serves: when events arrive less often than every
 * NAP_BUSY_FACTOR naps, or fewer than NAP_MIN_CONNS clients are connected, the worker blocks at
 * once, so a lightly loaded proxy or a lone client sees no added latency. Pure bookkeeping, no I/O:
 * the worker does the sleeping (proxy/worker.c). One per worker thread. */
#ifndef CUTOVER_PROXY_NAP_H
#define CUTOVER_PROXY_NAP_H

#include <stdint.h>

/* The loop naps while its recent waits average under this many naps... */
#define NAP_BUSY_FACTOR 8
/* ...and it has at least this many client connections open. A nap lengthens a request's round
 * trip by up to its length, and with few clients each sending its next request only after the
 * last answer (wrk -c8, a database driver), a longer round trip means fewer requests: measured,
 * 8 such clients lost 10-20 % of their throughput to 100 us naps. With many clients the proxy
 * is busy because they queue, and the nap costs a small part of a long round trip. */
#define NAP_MIN_CONNS 32

struct nap {
    uint64_t nap_ns;  /* length of a nap; 0 = never nap */
    uint64_t wait_ns; /* moving average of how long the loop waited for its next event */
};

/* Starts with no history: the first waits decide whether the loop is busy. */
void nap_init(struct nap *n, uint64_t nap_ns);

/* Returns how long to sleep before blocking, given that a poll just found nothing and conns
 * client connections are open: nap_ns while the loop is busy, else 0 (block now). */
uint64_t nap_length(const struct nap *n, uint64_t conns);

/* Records how long the loop waited, from finding nothing to its next event (a nap that found
 * events counts as a wait of its length). */
void nap_observe(struct nap *n, uint64_t waited_ns);

#endif
