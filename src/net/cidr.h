/* Address ranges ("10.0.0.0/8", "2001:db8::/32", a bare address) and the one use the data
 * plane makes of a list of them: telling the real client behind trusted proxies from an
 * X-Forwarded-For header. The one home of CIDR matching (pilot `source:` cohorts,
 * `trusted_proxies`). Lists are built on the control thread and then only read; every function
 * here is pure and may be called from any thread. */
#ifndef CUTOVER_NET_CIDR_H
#define CUTOVER_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* One range. An IPv4-mapped IPv6 range ("::ffff:10.0.0.0/104") is stored as the IPv4 range it
 * names (10.0.0.0/8), and an IPv4-mapped peer address (a dual-stack socket's ::ffff:a.b.c.d)
 * is matched as IPv4, so an IPv4 client matches the same entries whichever socket it came in
 * on. "::/0" therefore holds every real IPv6 address, and no IPv4 one. */
struct cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network order, bits past the prefix cleared; AF_INET uses 4 */
    int prefix;             /* 0..32 or 0..128 */
};

/* Parses the NUL-terminated s: an address, or an address, '/', and a prefix length in decimal
 * without a leading zero (at most 32 for IPv4, 128 for IPv6). Bits past the prefix are
 * cleared ("10.1.2.3/8" is 10.0.0.0/8, as the pilot `source:` has always read it). Returns 0,
 * or -EINVAL with *out unspecified. */
int cidr_parse(const char *s, struct cidr *out);

/* Returns true when the address sa (AF_INET or AF_INET6; any other family never matches) is
 * inside c. The port is ignored. */
bool cidr_contains(const struct cidr *c, const struct sockaddr *sa);

/* An ordered list of ranges, owned by whoever embeds it. An empty list contains nothing. */
struct cidr_list {
    struct cidr *items;
    size_t n;
};

void cidr_list_init(struct cidr_list *l);
/* Appends the range s (see cidr_parse). Returns 0, or -EINVAL and leaves l unchanged. */
int cidr_list_add(struct cidr_list *l, const char *s);
bool cidr_list_contains(const struct cidr_list *l, const struct sockaddr *sa);
/* Frees the items; l is empty and reusable afterwards. */
void cidr_list_done(struct cidr_list *l);

/* The raw value of one X-Forwarded-For field, pointing into the caller's buffer. */
struct cidr_span {
    const char *p;
    size_t len;
};

/* Where cidr_client_addr found the client. */
enum cidr_client_from {
    CIDR_FROM_PEER = 0,      /* the peer is not trusted, or sent no address to walk */
    CIDR_FROM_XFF,           /* an X-Forwarded-For entry */
    CIDR_FROM_XFF_MALFORMED, /* the walk stopped at an entry that is no address (see below) */
};

/* Where an X-Forwarded-For entry starts: xff[field].p + offset. */
struct cidr_xff_pos {
    size_t field;
    size_t offset;
};

/* The client's address for a request that came from peer with the X-Forwarded-For fields
 * xff[0..nxff) (in the order they appear; several fields read as one comma-joined list).
 * When peer is not in trusted, the client is peer and X-Forwarded-For is not read, so an
 * untrusted client cannot choose its address. Otherwise the list is walked from the right:
 * each entry in trusted is a proxy and the walk goes on; the first entry not in trusted is the
 * client; when every entry is trusted, the left-most is. Empty list elements and the spaces
 * and tabs around an entry are skipped. An entry is an IPv4 address, an IPv6 address, either
 * with a port ("1.2.3.4:80", "[::1]:80") or a bracketed IPv6 ("[::1]"); anything else
 * ("unknown", an obfuscated name, a zone id) stops the walk, and the client is the last
 * address the walk reached (the trusted entry it read last, or peer), returned with
 * CIDR_FROM_XFF_MALFORMED so the caller may count it: the walk never skips past bytes it cannot
 * read to trust what lies beyond them. *out always gets an address: peer's (port kept) or an
 * entry's (port 0).
 * When pos is not NULL it gets where the entry returned in *out starts ({nxff, 0} when *out is
 * peer), so that the caller can forward upstream the part of X-Forwarded-For that trusted
 * proxies vouch for: from *pos to the end, the client first, then the hops, with no byte the
 * client chose; the caller appends the peer as usual. */
enum cidr_client_from cidr_client_addr(const struct sockaddr *peer, const struct cidr_list *trusted,
                                       const struct cidr_span *xff, size_t nxff,
                                       struct sockaddr_storage *out, struct cidr_xff_pos *pos);

#endif
