/* Host and path routing (see vhost.h). Any thread: a table is read-only once built. */
#include "http/vhost.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/xmalloc.h"

static int lower(int ch)
{
    return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

/* A DNS name: labels of [A-Za-z0-9-], 1 to 63 each, not starting or ending with '-'. */
static int name_valid(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > VHOST_HOST_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 (ch == '-' && label > 0);
        if (!ok || ++label > 63)
            return 0;
    }
    return label > 0 && s[len - 1] != '-';
}

int vhost_pattern_valid(const char *s, size_t len)
{
    if (len >= 2 && s[0] == '*' && s[1] == '.')
        return name_valid(s + 2, len - 2);
    return name_valid(s, len);
}

int vhost_prefix_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 1024 || s[0] != '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == 0x7f || ch == '?' || ch == '#' || ch == '%' ||
            (ch == '/' && s[i + 1] == '/'))
            return 0;
    }
    return 1;
}

void vhost_table_init(struct vhost_table *t)
{
    memset(t, 0, sizeof(*t));
    t->default_id = -1;
}

void vhost_table_add(struct vhost_table *t, const char *host, const char *prefix, int service_id)
{
    t->routes = xrealloc(t->routes, (t->n + 1) * sizeof(*t->routes));
    struct vhost_route *r = &t->routes[t->n++];
    r->host = NULL;
    r->prefix = NULL;
    r->service_id = service_id;
    if (host != NULL) {
        r->host = xstrdup(host);
        for (char *p = r->host; *p; p++)
            *p = (char)lower((unsigned char)*p);
    }
    if (prefix != NULL) {
        size_t l = strlen(prefix);
        while (l > 0 && prefix[l - 1] == '/')
            l--;
        if (l > 0)
            r->prefix = xstrndup(prefix, l);
    }
}

void vhost_table_done(struct vhost_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->routes[i].host);
        free(t->routes[i].prefix);
    }
    free(t->routes);
    vhost_table_init(t);
}

/* The host of an authority ("Example.com:8080", "[::1]:80", "example.com."): where it starts
 * and its length, port and trailing dot off. */
static void host_of(const char *a, size_t n, const char **h, size_t *hl)
{
    while (n > 0 && (a[0] == ' ' || a[0] == '\t')) {
        a++;
        n--;
    }
    while (n > 0 && (a[n - 1] == ' ' || a[n - 1] == '\t'))
        n--;
    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        n = close != NULL ? (size_t)(close - a) + 1 : n;
    } else {
        const char *colon = memchr(a, ':', n);
        if (colon != NULL)
            n = (size_t)(colon - a);
    }
    if (n > 0 && a[n - 1] == '.')
        n--;
    *h = a;
    *hl = n;
}

/* How specifically pattern takes host: 0 not at all; otherwise higher is more specific (an
 * exact name above every "*." suffix, a longer suffix above a shorter one, any host lowest). */
static size_t host_rank(const char *pattern, const char *h, size_t hl)
{
    if (pattern == NULL)
        return 1;
    size_t pl = strlen(pattern);
    if (pattern[0] == '*') {
        size_t sl = pl - 1; /* ".example.com" */
        if (hl > sl && strncasecmp(h + hl - sl, pattern + 1, sl) == 0)
            return 2 + sl;
        return 0;
    }
    if (hl == pl && strncasecmp(h, pattern, hl) == 0)
        return 2 + VHOST_HOST_MAX + 1;
    return 0;
}

/* How long a prefix takes path: 0 not at all, 1 for any path, else its length + 1. A prefix
 * takes a path it starts, ending there or at '/' (or the query). */
static size_t prefix_rank(const char *prefix, const char *p, size_t pl)
{
    if (prefix == NULL)
        return 1;
    size_t l = strlen(prefix);
    if (pl < l || memcmp(p, prefix, l) != 0)
        return 0;
    if (pl == l || p[l] == '/' || p[l] == '?')
        return l + 1;
    return 0;
}

int vhost_match(const struct vhost_table *t, const char *host, size_t host_len, const char *target,
                size_t target_len)
{
    const char *path = target, *h = NULL;
    size_t plen = target_len, hl = 0;
    /* Absolute form: the authority stands for the Host field. */
    size_t skip = 0;
    if (target_len >= 7 && strncasecmp(target, "http://", 7) == 0)
        skip = 7;
    else if (target_len >= 8 && strncasecmp(target, "https://", 8) == 0)
        skip = 8;
    if (skip > 0) {
        const char *auth = target + skip;
        size_t al = target_len - skip, k = 0;
        while (k < al && auth[k] != '/' && auth[k] != '?')
            k++;
        host = auth;
        host_len = k;
        path = auth + k;
        plen = al - k;
        if (plen == 0 || path[0] != '/') {
            path = "/";
            plen = 1;
        }
    }
    if (host != NULL)
        host_of(host, host_len, &h, &hl);
    int best = -1;
    size_t best_h = 0, best_p = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct vhost_route *r = &t->routes[i];
        size_t rh = r->host == NULL ? 1 : h == NULL ? 0 : host_rank(r->host, h, hl);
        if (rh == 0)
            continue;
        size_t rp = prefix_rank(r->prefix, path, plen);
        if (rp == 0)
            continue;
        if (rh > best_h || (rh == best_h && rp > best_p)) {
            best = r->service_id;
            best_h = rh;
            best_p = rp;
        }
    }
    return best >= 0 ? best : t->default_id;
}

/* Compares two optional strings, case-insensitively (hosts) or not (prefixes). */
static int same(const char *a, const char *b, int icase)
{
    if (a == NULL || b == NULL)
        return a == b;
    return icase ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

/* A prefix as vhost_table_add keeps it: no trailing '/', "/" as none. */
static size_t prefix_len(const char *p)
{
    size_t l = p ? strlen(p) : 0;
    while (l > 0 && p[l - 1] == '/')
        l--;
    return l;
}

int vhost_routes_overlap(const char *host_a, const char *prefix_a, const char *host_b,
                         const char *prefix_b)
{
    if (!same(host_a, host_b, 1))
        return 0;
    size_t la = prefix_len(prefix_a), lb = prefix_len(prefix_b);
    return la == lb && (la == 0 || memcmp(prefix_a, prefix_b, la) == 0);
}
