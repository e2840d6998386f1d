/* Poll coalescing for a worker's loop ("nap before blocking").
 *
 * A proxy that blocks in epoll_wait as soon as it runs out of events is woken again by the next
 * packet, and that wake-up is paid by the sender: on a virtual machine, waking a halted vCPU
 * costs the backend or the client an exit to the hypervisor. A busy worker that instead sleeps
 * a short, fixed time before polling again finds several events at once, so its peers hand it
 * data without waking it and it hands them data in bursts; measured on the 2-vCPU bench host,
 * the backend and the load generator each spend less CPU per request (docs/benchmarks.md).
 *
 * The nap is taken only while the loop is busy, judged by how long its recent waits lasted and
 * by how many clients are sending requests: when events arrive less often than every few naps,
 * or fewer than NAP_MIN_CLIENTS clients were active lately, the worker blocks at once, so a
 * lightly loaded proxy or a lone client sees no added latency. A wait is measured from the
 * poll that found nothing to the end of the turn that found something, so it includes that
 * turn's work: a worker handling big batches looks less busy than it is, which errs on the
 * side of not napping. Pure bookkeeping, no I/O: the worker does the sleeping
 * (proxy/worker.c). One per worker thread. */
#ifndef CUTOVER_PROXY_NAP_H
#define CUTOVER_PROXY_NAP_H

#include <stdint.h>

/* The loop starts napping when its recent waits average under NAP_START naps and stops when
 * they average over NAP_STOP naps: the gap keeps one short wait after a lull from restarting
 * it, and one long pause in a busy spell from ending it. */
#define NAP_START 4
#define NAP_STOP 8
/* It naps only while at least this many clients sent a request in the last NAP_WINDOW_MS. A
 * nap lengthens a request's round trip by up to its length, and with few clients each sending
 * its next request only after the last answer (wrk -c8, a database driver), a longer round
 * trip means fewer requests: measured, 8 such clients lost 10-20 % of their throughput to
 * 100 us naps. With many active clients the proxy is busy because they queue, and the nap
 * costs a small part of a long round trip. Idle keep-alive connections do not count. */
#define NAP_MIN_CLIENTS 32
#define NAP_WINDOW_MS 10

struct nap {
    uint64_t nap_ns;  /* length of a nap; 0 = never nap */
    uint64_t wait_ns; /* moving average of how long the loop waited for its next event */
    int busy;         /* between NAP_START and NAP_STOP: napping is on */
};

/* Starts as after a long idle spell: a handful of short waits turn napping on. */
void nap_init(struct nap *n, uint64_t nap_ns);

/* Returns how long to sleep before blocking, given that a poll just found nothing and clients
 * clients sent requests lately: nap_ns while the loop is busy, else 0 (block now). */
uint64_t nap_length(const struct nap *n, uint64_t clients);

/* Records how long the loop waited, from finding nothing to its next event (a nap that found
 * events counts as a wait of its length). */
void nap_observe(struct nap *n, uint64_t waited_ns);

#endif
