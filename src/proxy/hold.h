/* Hold and maintenance in the data plane (`cutover hold`, `cutover maintenance`): the count of
 * held requests per service, shared by every worker and bounded by limits.hold_max_requests,
 * the counters /metrics shows, and the answers cutover writes itself for a service in
 * maintenance or a request held past its limit. The queue of held requests lives with the
 * protocol that parks them (proxy/h1proxy.c); whether a service is held or in maintenance is
 * in the route table (route.h). Workers count; the control thread reads the counters. */
#ifndef CUTOVER_PROXY_HOLD_H
#define CUTOVER_PROXY_HOLD_H

#include <stddef.h>
#include <stdint.h>

/* Service ids at or above this are neither held nor counted (as proxy/h1proxy.c's limit). */
#define HOLD_MAX_SERVICES 1024

/* Retry-After of a request held past its limit, or refused because too many are held. */
#define HOLD_RETRY_AFTER_S 1
/* Retry-After of a maintenance answer: maintenance lasts minutes, not a blink. */
#define HOLD_MAINTENANCE_RETRY_AFTER_S 60
/* The longest maintenance message the page may name (bytes of UTF-8). */
#define HOLD_MESSAGE_MAX 1024

/* Takes a place for one more held request of service_id while fewer than max are held (max 0:
 * none may be). Returns 1 when the request may wait, 0 when it must be refused (counted as
 * refused). Any worker. */
int hold_enter(int service_id, size_t max);

/* Gives back the place of a held request: released (expired 0) or answered 503 past its limit
 * (expired 1). Any worker. */
void hold_leave(int service_id, int expired);

/* Counts one maintenance answer of service_id. */
void hold_count_maintenance(int service_id);

struct hold_stats {
    uint64_t held;        /* waiting now */
    uint64_t total;       /* ever held */
    uint64_t expired;     /* answered 503 past their limit */
    uint64_t refused;     /* answered 503 because hold_max_requests were waiting */
    uint64_t maintenance; /* maintenance answers */
};

/* Reads the counters of service_id (zeros when out of range). Any thread. */
void hold_get_stats(int service_id, struct hold_stats *out);

/* Returns 1 when an Accept field value (len bytes, not NUL-terminated) lists text/html with a
 * quality above 0, else 0: a browser gets the HTML page, curl and scripts (Accept: * / *) the
 * plain text. Pure. */
int hold_accepts_html(const char *v, size_t len);

/* Writes the whole maintenance answer into buf (cap bytes): 503, Retry-After, Cache-Control:
 * no-store, Connection: close, and a page naming message (NULL or "": a generic sentence) as
 * HTML (escaped) when html, as plain text otherwise; the body is left out when head_only (a HEAD
 * request) but counted in Content-Length. Returns the length, or -ENOSPC when it does not fit
 * (the message is at most HOLD_MESSAGE_MAX bytes, which fits WORKER_BUF_SIZE). Pure. */
int hold_maintenance_answer(char *buf, size_t cap, const char *message, int html, int head_only);

/* Writes the answer to a request held past its limit (expired 1) or refused because too many
 * wait (expired 0): 503 with Retry-After and a one-line text body. Returns the length, or
 * -ENOSPC. Pure. */
int hold_refusal_answer(char *buf, size_t cap, int expired, int head_only);

#endif
