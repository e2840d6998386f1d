/* The admin API: HTTP/1.1 + JSON on a unix socket (docs/api.md). Parses requests with the same
 * strict parser as the data plane, validates JSON bodies field by field, and calls the rollout
 * engine. Control loop only. */
#ifndef CUTOVER_API_API_H
#define CUTOVER_API_API_H

#include <stddef.h>
#include <uv.h>

#include "rollout/rollout.h"

struct api;

/* Writes extra Prometheus lines (data-plane counters) through emit. */
typedef void (*api_metrics_fn)(void *ctx, rollout_emit_fn emit, void *ectx);

/* Listens on the unix socket at path (mode 0600). A stale socket file is replaced; a socket
 * another live daemon answers on is not (-EADDRINUSE, with a message in err). */
int api_start(struct api **out, uv_loop_t *loop, const char *path, struct rollout *r,
              api_metrics_fn metrics, void *ctx, char *err, size_t errlen);

/* Closes the listener and every connection, removes the socket file. NULL is a no-op. The
 * api is freed once the loop ran the close callbacks. */
void api_stop(struct api *a);

#endif
