/* libFuzzer target for cidr_client_addr, the X-Forwarded-For walk: the header's value is chosen
 * by whoever sits in front of the last trusted proxy. The input's first byte picks the peer,
 * the rest, cut at each '\n', gives the fields. Invariants: no read past a field's length
 * (ASan, exact-size copies); the answer is always an IPv4 or IPv6 address; an untrusted peer is
 * its own client; the client is the peer or an address written in the header; joining the
 * fields with ',' into one gives the same client. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/cidr.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_FIELDS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cidr_list trusted;
    static int ready;
    struct sockaddr_storage peer, out, joined_out;
    struct cidr_span spans[MAX_FIELDS];
    struct cidr_xff_pos pos;
    char *copies[MAX_FIELDS];
    size_t n = 0;

    if (!ready) {
        cidr_list_init(&trusted);
        CHECK(cidr_list_add(&trusted, "10.0.0.0/8") == 0);
        CHECK(cidr_list_add(&trusted, "2001:db8::/32") == 0);
        CHECK(cidr_list_add(&trusted, "::ffff:192.168.0.0/112") == 0);
        ready = 1;
    }
    if (size < 1 || size > 8192)
        return 0;
    memset(&peer, 0, sizeof(peer));
    if (data[0] & 1) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&peer;
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl((data[0] & 2) ? 0x0a000001u : 0xcb007105u);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&peer;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, (data[0] & 2) ? "2001:db8::1" : "::ffff:192.168.3.4", &in6->sin6_addr);
    }
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p <= end && n < MAX_FIELDS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        copies[n] = malloc(len ? len : 1);
        CHECK(copies[n] != NULL);
        memcpy(copies[n], p, len);
        spans[n].p = copies[n];
        spans[n].len = len;
        n++;
        if (nl == NULL)
            break;
        p = nl + 1;
    }

    enum cidr_client_from from =
        cidr_client_addr((struct sockaddr *)&peer, &trusted, spans, n, &out, &pos);
    CHECK(out.ss_family == AF_INET || out.ss_family == AF_INET6);
    if (!cidr_list_contains(&trusted, (struct sockaddr *)&peer))
        CHECK(from == CIDR_FROM_PEER && memcmp(&out, &peer, sizeof(out)) == 0);
    if (from == CIDR_FROM_PEER)
        CHECK(memcmp(&out, &peer, sizeof(out)) == 0);
    CHECK(pos.field <= n);
    if (pos.field < n)
        CHECK(pos.offset < spans[pos.field].len);
    else
        CHECK(pos.offset == 0);

    /* The same fields as one comma-joined field. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += spans[i].len + 1;
    char *joined = malloc(total ? total : 1);
    size_t jl = 0;
    CHECK(joined != NULL);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            joined[jl++] = ',';
        memcpy(joined + jl, spans[i].p, spans[i].len);
        jl += spans[i].len;
    }
    struct cidr_span one = {joined, jl};
    enum cidr_client_from jfrom =
        cidr_client_addr((struct sockaddr *)&peer, &trusted, &one, 1, &joined_out, NULL);
    CHECK(jfrom == from && memcmp(&out, &joined_out, sizeof(out)) == 0);
    free(joined);
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    return 0;
}
