/* Webhooks: every event of a change, POSTed to the URLs of notify.webhooks, so the people a
 * rollout concerns hear of each step without watching cutover.
 *
 * Durable: the deliveries live in the store's outbox (store.h). One delivery thread of this
 * module, with its own connection to the store, writes a pending row per event and matching
 * webhook (with the outbox mark, in one transaction, so an event committed before a kill -9 is
 * still delivered after the restart), then POSTs the pending rows with libcurl, oldest first per
 * webhook, marking each delivered or recording its last error and tries. A webhook that fails
 * is tried again after 0.5 s, doubling up to 30 s, with jitter, until the delivery is older than
 * notify.max_age (default 24h): then it is given up (failed), logged. The control loop never
 * waits for a receiver: it only wakes the thread (notify_kick).
 *
 * Signed per Standard Webhooks when the webhook has a secret_file: headers webhook-id (one per
 * delivery, the same on every try), webhook-timestamp and webhook-signature
 * ("v1," BASE64(HMAC-SHA256(key, id "." timestamp "." body))).
 *
 * No descriptor of this module reaches a child process: libcurl's sockets are opened
 * close-on-exec (CURLOPT_OPENSOCKETFUNCTION) and the one multi handle, whose wake-up socket pair
 * libcurl 7.x opens without it, is made on the control thread and marked there; so is the
 * thread's store connection. */
#ifndef CUTOVER_NOTIFY_NOTIFY_H
#define CUTOVER_NOTIFY_NOTIFY_H

#include "config/config.h"
#include "store/store.h"

struct notify;

/* Starts the delivery thread for cfg's webhooks (copied), with its own connection to the store
 * at db_path. *out is NULL, and 0 returned, when there are none. Control thread. */
int notify_start(struct notify **out, const struct config *cfg, const char *db_path, char *err,
                 size_t errlen);

/* Tells the thread that an event was committed: it writes its deliveries and sends them. Safe
 * from a store listener (it does not touch the store). NULL is a no-op. */
void notify_kick(struct notify *n);

/* Stops the thread: it makes one more pass over what is due, for at most wait_ms; what is
 * still pending stays in the outbox for the next daemon. Frees n. NULL is a no-op. */
void notify_stop(struct notify *n, unsigned wait_ms);

#endif
