/* What proxy/worker offers the protocols it hosts (proxy/h1proxy.c and any beside it): pooled
 * buffers and the worker's route-table cache. Not part of the proxy's public contract;
 * everything here runs on the worker's own thread. The worker reaches a protocol only through
 * its struct proxy_proto (proxy-t.h), so no call goes the other way by name. */
#ifndef CUTOVER_PROXY_WORKER_INT_H
#define CUTOVER_PROXY_WORKER_INT_H

#include "proxy/proxy-t.h"

/* Takes a WORKER_BUF_SIZE buffer from the worker's pool (allocating when empty). */
char *worker_buf_get(struct worker *w);
/* Returns a buffer from worker_buf_get. NULL is a no-op. */
void worker_buf_put(struct worker *w, char *buf);
/* The same for WORKER_BIG_BUF_SIZE buffers. */
char *worker_big_buf_get(struct worker *w);
void worker_big_buf_put(struct worker *w, char *buf);

/* A protocol's accept tells the worker the descriptor of each connection it accepted on l:
 * near the process's descriptor limit the listener pauses (worker.c). */
void worker_accepted_fd(struct worker_listener *l, int fd);

/* Makes the worker route by the current table if a newer one was published: retires the
 * upstream pools of targets it routes to in no role and asks each protocol to arm the drain
 * deadline of connections still using one (PROXY_DRAIN_RETIRED). */
void worker_refresh(struct worker *w);

#endif
