/* Hold and maintenance counters and answers (see hold.h). The counters are process-wide atomics
 * per service id: hold_max_requests bounds a service across every worker, and a hold is a rare
 * state, so a locked increment per held request costs nothing that matters. */
#include "proxy/hold.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/status.h"

struct hold_counters {
    atomic_uint_fast64_t held, total, expired, refused, maintenance;
};

static struct hold_counters counters[HOLD_MAX_SERVICES];

static struct hold_counters *counters_of(int service_id)
{
    if (service_id < 0 || service_id >= HOLD_MAX_SERVICES)
        return NULL;
    return &counters[service_id];
}

int hold_enter(int service_id, size_t max)
{
    struct hold_counters *k = counters_of(service_id);
    if (k == NULL)
        return 0;
    uint_fast64_t n = atomic_load_explicit(&k->held, memory_order_relaxed);
    do {
        if (n >= max) {
            atomic_fetch_add_explicit(&k->refused, 1, memory_order_relaxed);
            return 0;
        }
    } while (!atomic_compare_exchange_weak_explicit(&k->held, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    atomic_fetch_add_explicit(&k->total, 1, memory_order_relaxed);
    return 1;
}

void hold_leave(int service_id, int expired)
{
    struct hold_counters *k = counters_of(service_id);
    if (k == NULL)
        return;
    atomic_fetch_sub_explicit(&k->held, 1, memory_order_relaxed);
    if (expired)
        atomic_fetch_add_explicit(&k->expired, 1, memory_order_relaxed);
}

void hold_count_maintenance(int service_id)
{
    struct hold_counters *k = counters_of(service_id);
    if (k != NULL)
        atomic_fetch_add_explicit(&k->maintenance, 1, memory_order_relaxed);
}

void hold_get_stats(int service_id, struct hold_stats *out)
{
    const struct hold_counters *k = counters_of(service_id);
    memset(out, 0, sizeof(*out));
    if (k == NULL)
        return;
    out->held = atomic_load_explicit(&k->held, memory_order_relaxed);
    out->total = atomic_load_explicit(&k->total, memory_order_relaxed);
    out->expired = atomic_load_explicit(&k->expired, memory_order_relaxed);
    out->refused = atomic_load_explicit(&k->refused, memory_order_relaxed);
    out->maintenance = atomic_load_explicit(&k->maintenance, memory_order_relaxed);
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* The quality of one media range's parameters (";q=0.5;level=1"): 0 when q is 0 (0, 0.0,
 * 0.00, 0.000), 1 otherwise, including a q that does not parse (RFC 9110 12.4.2 allows no
 * other spelling, and "not refused" is the safe reading). */
static int params_accept(const char *p, const char *end)
{
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ';'))
            p++;
        const char *name = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        size_t nl = (size_t)(p - name);
        while (nl > 0 && is_ows(name[nl - 1]))
            nl--;
        if (p == end || *p == ';')
            continue;
        p++; /* '=' */
        while (p < end && is_ows(*p))
            p++;
        const char *val = p;
        while (p < end && *p != ';')
            p++;
        size_t vl = (size_t)(p - val);
        while (vl > 0 && is_ows(val[vl - 1]))
            vl--;
        if (nl == 1 && (name[0] == 'q' || name[0] == 'Q')) {
            if (vl == 0 || val[0] != '0')
                return 1;
            for (size_t i = 1; i < vl; i++)
                if (val[i] != '0' && val[i] != '.')
                    return 1;
            return 0;
        }
    }
    return 1;
}

int hold_accepts_html(const char *v, size_t len)
{
    static const char html[] = "text/html";
    const char *p = v, *end = v + len;
    while (p < end) {
        const char *item = p;
        while (p < end && *p != ',')
            p++;
        const char *item_end = p;
        if (p < end)
            p++; /* ',' */
        while (item < item_end && is_ows(*item))
            item++;
        const char *semi = item;
        while (semi < item_end && *semi != ';')
            semi++;
        const char *type_end = semi;
        while (type_end > item && is_ows(type_end[-1]))
            type_end--;
        if ((size_t)(type_end - item) == sizeof(html) - 1 &&
            strncasecmp(item, html, sizeof(html) - 1) == 0 && params_accept(semi, item_end))
            return 1;
    }
    return 0;
}

/* Appends s to buf at *n, HTML-escaped when html; returns -ENOSPC when it does not fit. */
static int put(char *buf, size_t cap, size_t *n, const char *s, int html)
{
    for (; *s; s++) {
        const char *rep = NULL;
        if (html) {
            switch (*s) {
            case '&':
                rep = "&amp;";
                break;
            case '<':
                rep = "&lt;";
                break;
            case '>':
                rep = "&gt;";
                break;
            case '"':
                rep = "&quot;";
                break;
            case '\'':
                rep = "&#39;";
                break;
            default:
                break;
            }
        }
        size_t l = rep ? strlen(rep) : 1;
        if (*n + l >= cap)
            return -ENOSPC;
        memcpy(buf + *n, rep ? rep : s, l);
        *n += l;
    }
    buf[*n] = '\0';
    return 0;
}

/* Writes the head for a body of body_len bytes, then the body (unless head_only) from body. */
static int answer(char *buf, size_t cap, const char *ctype, int retry_after, const char *body,
                  size_t body_len, int head_only)
{
    int h = snprintf(buf, cap,
                     "HTTP/1.1 503 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Retry-After: %d\r\nCache-Control: no-store\r\nConnection: close\r\n"
                     "Server: cutover\r\n\r\n",
                     http_status_reason(503), ctype, body_len, retry_after);
    if (h < 0 || (size_t)h >= cap)
        return -ENOSPC;
    if (head_only)
        return h;
    if ((size_t)h + body_len >= cap)
        return -ENOSPC;
    memmove(buf + h, body, body_len);
    buf[(size_t)h + body_len] = '\0';
    return h + (int)body_len;
}

int hold_maintenance_answer(char *buf, size_t cap, const char *message, int html, int head_only)
{
    /* The body is built first at the end of buf, then moved behind the head. */
    char body[HOLD_MESSAGE_MAX * 6 + 512];
    size_t n = 0;
    const char *msg = message && *message ? message : "This service is down for maintenance.";
    int rc;
    if (html) {
        rc = put(body, sizeof(body), &n,
                 "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<title>Down for maintenance</title></head>\n<body><h1>Down for maintenance</h1>\n"
                 "<p>",
                 0);
        if (rc == 0)
            rc = put(body, sizeof(body), &n, msg, 1);
        if (rc == 0)
            rc = put(body, sizeof(body), &n, "</p>\n</body></html>\n", 0);
    } else {
        rc = put(body, sizeof(body), &n, msg, 0);
        if (rc == 0)
            rc = put(body, sizeof(body), &n, "\n", 0);
    }
    if (rc < 0)
        return rc;
    return answer(buf, cap, html ? "text/html; charset=utf-8" : "text/plain; charset=utf-8",
                  HOLD_MAINTENANCE_RETRY_AFTER_S, body, n, head_only);
}

int hold_refusal_answer(char *buf, size_t cap, int expired, int head_only)
{
    const char *body = expired ? "held longer than the hold allows; retry shortly\n"
                               : "too many requests held; retry shortly\n";
    return answer(buf, cap, "text/plain", HOLD_RETRY_AFTER_S, body, strlen(body), head_only);
}
