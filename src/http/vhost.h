/* Host and path routing of a listener several services share (`hosts:`, `path_prefix:`,
 * `default:` in the config): the host patterns a config may name, and the choice of a service
 * for a request's Host and target. A table is built once (config or serve), read-only after,
 * and read by every worker without locks. Matching allocates nothing. */
#ifndef CUTOVER_HTTP_VHOST_H
#define CUTOVER_HTTP_VHOST_H

#include <stddef.h>

/* The longest host name (RFC 1035) a pattern or a Host may have. */
#define VHOST_HOST_MAX 253

/* One route: requests whose host matches host (NULL: any host) and whose path starts with
 * prefix at a segment boundary (NULL: any path) go to service_id. */
struct vhost_route {
    char *host;   /* lower case, no trailing dot; "*.example.com" matches any name below it */
    char *prefix; /* starts with '/', no trailing '/' (NULL for "/" itself) */
    int service_id;
};

struct vhost_table {
    struct vhost_route *routes;
    size_t n;
    int default_id; /* the service of a request no route takes; -1: none (404) */
};

/* 1 when s (len bytes) is a host pattern a config may name: a DNS name of letters, digits, '-'
 * and '.', labels of 1 to 63 characters, at most VHOST_HOST_MAX in all, optionally behind "*."
 * (any name below it); no port, no trailing dot. An IP address is a name of digits and dots. */
int vhost_pattern_valid(const char *s, size_t len);

/* 1 when s is a path prefix a config may name: starts with '/', no "//", no '?', '#', '%' or
 * control or space character, at most 1024 bytes. */
int vhost_prefix_valid(const char *s);

/* Initialises t empty with no default. */
void vhost_table_init(struct vhost_table *t);

/* Adds a route (copies host lower-cased and prefix without a trailing '/'); host and prefix as
 * vhost_pattern_valid and vhost_prefix_valid accept, or NULL for any. */
void vhost_table_add(struct vhost_table *t, const char *host, const char *prefix, int service_id);

/* Frees what t holds (not t). */
void vhost_table_done(struct vhost_table *t);

/* The service for a request: host is the Host field (port and a trailing dot ignored, any
 * case; NULL: none), target the request-target (origin form "/p?q", or absolute form, whose
 * authority then stands for the Host, RFC 9112 3.2.2). Of the routes that take both, the one
 * with the most specific host wins (an exact name, then the longest "*." suffix, then any
 * host), then the longest prefix; no route: the table's default (-1 when none). Pure. */
int vhost_match(const struct vhost_table *t, const char *host, size_t host_len, const char *target,
                size_t target_len);

/* 1 when routes a and b take the same requests (the same host pattern and the same prefix):
 * a config that has both is ambiguous. */
int vhost_routes_overlap(const char *host_a, const char *prefix_a, const char *host_b,
                         const char *prefix_b);

#endif
