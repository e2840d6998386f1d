/* The admin API: HTTP/1.1 + JSON on a unix socket (docs/api.md). Parses requests with the same
 * strict parser as the data plane, validates JSON bodies field by field, and calls the rollout
 * engine. Control loop only. */
#ifndef CUTOVER_API_API_H
#define CUTOVER_API_API_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "rollout/rollout.h"

struct api;
struct store;

/* Writes extra Prometheus lines (data-plane counters) through emit. */
typedef void (*api_metrics_fn)(void *ctx, rollout_emit_fn emit, void *ectx);

/* Answers a deferred hand-over request: HTTP status, a sentence, the new daemon's pid (0 when
 * none). Call it exactly once with the req given to api_handover_fn. */
typedef void (*api_done_fn)(void *req, int status, const char *message, long pid);

/* Starts a hot upgrade to binary (NULL: the running binary) or, with reload set, a reload of the
 * config; calls done(req, ...) once, now or later. */
typedef void (*api_handover_fn)(void *ctx, const char *binary, int reload, api_done_fn done,
                                void *req);

struct api_hooks {
    api_metrics_fn metrics;
    api_handover_fn handover;
    void *ctx;
    /* upgrade --binary takes only a binary under this directory (borrowed; NULL: the running
     * binary's directory), owned by root or the daemon's user, and neither it nor its directory
     * writable by group or others. */
    const char *upgrade_dir;
    /* The daemon's config (borrowed, for the daemon's life): its people decide who a
     * unix-socket peer is (api/who.h), admin.socket_group who may connect. NULL: no people. */
    const struct config *cfg;
};

/* Listens on the unix socket at path (mode 0600; 0660 and hooks->cfg's admin.socket_group
 * when set). A stale socket file is replaced; a socket
 * another live daemon answers on is not (-EADDRINUSE, with a message in err) — unless takeover
 * is set (a hot upgrade or reload: this daemon succeeds the one answering there), in which case
 * the new socket is bound beside it and renamed over it, so the path never stops answering. */
int api_start(struct api **out, uv_loop_t *loop, const char *path, struct rollout *r,
              const struct api_hooks *hooks, int takeover, char *err, size_t errlen);

/* Also serves the API on the listening TCP socket fd (admin.listen; the API uses a duplicate,
 * fd stays the caller's). Every request there must carry "Authorization: Bearer SECRET" of one
 * of tokens (copied), of at least the role the route's row in api.c's route table names (GET
 * routes viewer, other methods operator, upgrade and reload admin); the token's name is the
 * actor of what it does (a different "actor" is refused, 403).
 * A new connection has 1 s for its first request, later ones 30 s; connections without a token
 * yet are a pool apart from the 64 kept for token holders (see docs/api.md). */
int api_listen_tcp(struct api *a, int fd, const struct config_token *tokens, size_t ntokens,
                   char *err, size_t errlen);

struct tls_server;

/* Makes admin.listen speak TLS with tls (net/tls.h; owned by the caller, alive until the api is
 * freed). Call before api_listen_tcp. */
void api_set_tls(struct api *a, struct tls_server *tls);

/* Serves GET /api/v1/events from st: every event the store records from now on is sent to the
 * open event streams, and a client that comes back with Last-Event-ID first gets the events it
 * missed. Call once, after api_start; api_stop detaches. */
void api_attach_store(struct api *a, struct store *st);

/* Stops accepting on the TCP listener (a successor serves it now); open connections go on. */
void api_stop_tcp(struct api *a);

/* How often an admin listener paused accepting because descriptors ran out (/metrics). */
uint64_t api_accept_paused(const struct api *a);

/* Points the API at another rollout engine (after a failed hand-over restarted it), or NULL
 * while the control plane is handed over: requests then get 503 "handing over". */
void api_set_rollout(struct api *a, struct rollout *r);

/* Closes the listener and every connection; removes the socket file unless keep_path (a
 * successor now owns that path). NULL is a no-op. Freed once the loop ran the callbacks. */
void api_stop(struct api *a, int keep_path);

#endif
