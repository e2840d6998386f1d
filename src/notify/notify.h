/* Webhooks: every event of a change, POSTed as JSON to the URLs of notify.webhooks, so the
 * people a rollout concerns hear of each step without watching cutover.
 *
 * The control thread hands events over (notify_event); one delivery thread of this module
 * POSTs them with libcurl, in order per webhook, retrying a failed delivery (no answer, or
 * not 2xx) after 0.5, 1, 2, 4 and 8 s before giving it up with a log line. The queue holds at
 * most 10,000 deliveries: past that the oldest is dropped, logged. The control loop never
 * waits for a receiver.
 *
 * No descriptor of this module reaches a child process: libcurl's sockets are opened
 * close-on-exec (CURLOPT_OPENSOCKETFUNCTION) and the one multi handle, whose wake-up socket pair
 * libcurl 7.x opens without it, is made on the control thread and marked there. */
#ifndef CUTOVER_NOTIFY_NOTIFY_H
#define CUTOVER_NOTIFY_NOTIFY_H

#include "config/config.h"
#include "store/store.h"

struct notify;

/* Starts the delivery thread for cfg's webhooks (copied). *out is NULL, and 0 returned, when
 * there are none. */
int notify_start(struct notify **out, const struct config *cfg, char *err, size_t errlen);

/* Queues ev (of service; NULL when unknown) for every webhook that wants it. Control thread. */
void notify_event(struct notify *n, const struct store_event *ev, const char *service);

/* Stops the thread: what is queued gets one more try each for at most wait_ms, then is given
 * up (logged). Frees n. NULL is a no-op. */
void notify_stop(struct notify *n, unsigned wait_ms);

#endif
