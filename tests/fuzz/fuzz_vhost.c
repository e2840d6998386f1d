/* libFuzzer target for vhost_match, the choice of a service on a shared listener by Host and
 * request-target: both are the client's. The input, cut at the first '\n', is the Host value
 * and the target. Invariants: no read past either (ASan, exact-size copies); the answer is a
 * service of the table or its default; the Host's case, a port after it and a trailing dot
 * change nothing. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/vhost.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int match(const struct vhost_table *t, const char *h, size_t hl, const char *tg, size_t tl)
{
    char *hc = malloc(hl ? hl : 1), *tc = malloc(tl ? tl : 1);
    memcpy(hc, h, hl);
    memcpy(tc, tg, tl);
    int id = vhost_match(t, hc, hl, tc, tl);
    free(hc);
    free(tc);
    return id;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vhost_table t;
    static int ready;
    if (!ready) {
        vhost_table_init(&t);
        vhost_table_add(&t, "web.example.com", NULL, 0);
        vhost_table_add(&t, "*.example.com", "/api", 1);
        vhost_table_add(&t, "*.b.example.com", NULL, 2);
        vhost_table_add(&t, NULL, "/static/", 3);
        vhost_table_add(&t, "web.example.com", "/api/v2", 4);
        t.default_id = 5;
        ready = 1;
    }
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size);
    size_t hl = nl ? (size_t)(nl - in) : size;
    const char *tg = nl ? nl + 1 : in + size;
    size_t tl = nl ? size - hl - 1 : 0;
    int id = match(&t, in, hl, tg, tl);
    CHECK(id >= 0 && id <= 5);
    /* The same Host in upper case, with a port, with a trailing dot: the same service. Only for
     * a plain name (no port, bracket or dot at its end already, no space around it). */
    int plain = hl > 0 && hl < 200 && in[hl - 1] != '.';
    for (size_t i = 0; plain && i < hl; i++)
        plain = isalnum((unsigned char)in[i]) || in[i] == '.' || in[i] == '-';
    if (plain) {
        char h[256];
        for (size_t i = 0; i < hl; i++)
            h[i] = (char)toupper((unsigned char)in[i]);
        CHECK(match(&t, h, hl, tg, tl) == id);
        memcpy(h, in, hl);
        memcpy(h + hl, ":8080", 5);
        CHECK(match(&t, h, hl + 5, tg, tl) == id);
        h[hl] = '.';
        CHECK(match(&t, h, hl + 1, tg, tl) == id);
    }
    return 0;
}
