/* CIDR ranges and the X-Forwarded-For walk (see cidr.h). Pure, any thread; only the list
 * functions allocate, and they run on the control thread. */
#include "net/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Copies s[0..n) into a NUL-terminated host buffer and reads it as IPv4 or IPv6. Returns the
 * family, or 0 when it is neither. */
static int parse_host(const char *s, size_t n, unsigned char addr[16])
{
    char host[INET6_ADDRSTRLEN];

    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, s, n);
    host[n] = '\0';
    if (inet_pton(AF_INET, host, addr) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, host, addr) == 1)
        return AF_INET6;
    return 0;
}

/* Decimal without a leading zero, at most max; -1 otherwise. */
static long parse_dec(const char *s, size_t n, long max)
{
    long v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

int cidr_parse(const char *s, struct cidr *out)
{
    const char *slash = strchr(s, '/');
    size_t hl = slash != NULL ? (size_t)(slash - s) : strlen(s);
    struct cidr c;

    memset(&c, 0, sizeof(c));
    c.family = parse_host(s, hl, c.addr);
    if (c.family == 0)
        return -EINVAL;
    int max = c.family == AF_INET ? 32 : 128;
    c.prefix = max;
    if (slash != NULL) {
        long v = parse_dec(slash + 1, strlen(slash + 1), max);
        if (v < 0)
            return -EINVAL;
        c.prefix = (int)v;
    }
    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, v4mapped, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix -= 96;
    }
    int bits = c.prefix;
    for (size_t i = 0; i < sizeof(c.addr); i++, bits -= 8) {
        if (bits >= 8)
            continue;
        c.addr[i] &= bits > 0 ? (unsigned char)(0xff << (8 - bits)) : 0;
    }
    *out = c;
    return 0;
}

/* The address bytes of sa as cidr_contains compares them; 0 for a family it does not. */
static int sa_bytes(const struct sockaddr *sa, const unsigned char **a)
{
    if (sa->sa_family == AF_INET) {
        *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        return AF_INET;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a6 =
            (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (memcmp(a6, v4mapped, 12) == 0) {
            *a = a6 + 12;
            return AF_INET;
        }
        *a = a6;
        return AF_INET6;
    }
    return 0;
}

static bool match(const struct cidr *c, int family, const unsigned char *a)
{
    int bits = c->prefix;

    if (family != c->family)
        return false;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((a[i] & mask) != c->addr[i])
            return false;
    }
    return true;
}

bool cidr_contains(const struct cidr *c, const struct sockaddr *sa)
{
    const unsigned char *a;
    int family = sa_bytes(sa, &a);

    return family != 0 && match(c, family, a);
}

void cidr_list_init(struct cidr_list *l)
{
    l->items = NULL;
    l->n = 0;
}

int cidr_list_add(struct cidr_list *l, const char *s)
{
    struct cidr c;

    if (cidr_parse(s, &c) != 0)
        return -EINVAL;
    l->items = xrealloc(l->items, (l->n + 1) * sizeof(*l->items));
    l->items[l->n++] = c;
    return 0;
}

bool cidr_list_contains(const struct cidr_list *l, const struct sockaddr *sa)
{
    const unsigned char *a;
    int family = sa_bytes(sa, &a);

    if (family == 0)
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (match(&l->items[i], family, a))
            return true;
    return false;
}

void cidr_list_done(struct cidr_list *l)
{
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* One X-Forwarded-For entry, already trimmed: "1.2.3.4", "1.2.3.4:80", "::1", "[::1]",
 * "[::1]:80". Fills *out with port 0. Returns false for anything else. */
static bool parse_entry(const char *s, size_t n, struct sockaddr_storage *out)
{
    unsigned char addr[16];
    const char *host = s;
    size_t hl = n;
    int family;

    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (rb == NULL)
            return false;
        size_t rest = n - (size_t)(rb + 1 - s);
        if (rest != 0 && (rb[1] != ':' || parse_dec(rb + 2, rest - 1, 65535) < 0))
            return false;
        host = s + 1;
        hl = (size_t)(rb - host);
        if (parse_host(host, hl, addr) != AF_INET6)
            return false;
        family = AF_INET6;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)) == NULL) {
            /* exactly one colon: IPv4 with a port */
            if (parse_dec(colon + 1, n - (size_t)(colon + 1 - s), 65535) < 0)
                return false;
            hl = (size_t)(colon - s);
            if (parse_host(host, hl, addr) != AF_INET)
                return false;
            family = AF_INET;
        } else {
            family = parse_host(host, hl, addr);
            if (family == 0)
                return false;
        }
    }
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)out;
        in4->sin_family = AF_INET;
        memcpy(&in4->sin_addr, addr, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, addr, 16);
    }
    return true;
}

static void copy_peer(const struct sockaddr *peer, struct sockaddr_storage *out)
{
    size_t n = peer->sa_family == AF_INET    ? sizeof(struct sockaddr_in)
               : peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : sizeof(struct sockaddr);
    memset(out, 0, sizeof(*out));
    memcpy(out, peer, n);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

enum cidr_client_from cidr_client_addr(const struct sockaddr *peer, const struct cidr_list *trusted,
                                       const struct cidr_span *xff, size_t nxff,
                                       struct sockaddr_storage *out, struct cidr_xff_pos *pos)
{
    enum cidr_client_from from = CIDR_FROM_PEER;
    struct cidr_xff_pos none, *at = pos != NULL ? pos : &none;

    at->field = nxff;
    at->offset = 0;
    copy_peer(peer, out);
    if (!cidr_list_contains(trusted, peer))
        return CIDR_FROM_PEER;
    for (size_t f = nxff; f-- > 0;) {
        const char *start = xff[f].p, *end = xff[f].p + xff[f].len;
        while (end > start) {
            const char *e = end;
            while (e > start && e[-1] != ',')
                e--;
            /* the entry is [e, end); the next one to the left ends before the comma */
            const char *a = e, *b = end;
            end = e > start ? e - 1 : start;
            while (a < b && is_ows(*a))
                a++;
            while (b > a && is_ows(b[-1]))
                b--;
            if (a == b)
                continue;
            struct sockaddr_storage entry;
            if (!parse_entry(a, (size_t)(b - a), &entry))
                return CIDR_FROM_XFF_MALFORMED;
            *out = entry;
            at->field = f;
            at->offset = (size_t)(a - xff[f].p);
            from = CIDR_FROM_XFF;
            if (!cidr_list_contains(trusted, (const struct sockaddr *)&entry))
                return CIDR_FROM_XFF;
        }
    }
    return from;
}
