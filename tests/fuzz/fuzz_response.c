/* libFuzzer target for http_parse_response. The first byte picks the request method (GET or
 * HEAD), the rest is the upstream's bytes. Invariants as in fuzz_request.c, plus the framing
 * rules of RFC 9112 6.3 that the header promises. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_HDR 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int in_input(const char *p, size_t n, const char *buf, size_t size)
{
    return p >= buf && n <= size && (size_t)(p - buf) <= size - n;
}

static int parse(const char *buf, size_t len, enum http_method m, struct http_response *r,
                 struct http_header *h)
{
    static const struct http_limits lim = {.max_headers = 24};

    memset(r, 0, sizeof(*r));
    r->headers = h;
    r->num_headers = MAX_HDR;
    return http_parse_response(buf, len, r, m, &lim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_header h[MAX_HDR], h2[MAX_HDR];
    struct http_response r, r2;
    enum http_method m;
    const char *buf;
    size_t i, k, step;
    int rc, rc2;

    if (size == 0)
        return 0;
    m = (data[0] & 1) ? HTTP_M_HEAD : HTTP_M_GET;
    buf = (const char *)data + 1;
    size--;

    rc = parse(buf, size, m, &r, h);
    CHECK(rc == HTTP_PARTIAL || rc == HTTP_ERR_BAD_RESPONSE || rc > 0);
    if (rc > 0) {
        CHECK((size_t)rc <= size);
        CHECK(r.status >= 100 && r.status <= 599);
        CHECK(r.minor_version == 0 || r.minor_version == 1);
        CHECK(r.num_headers <= 24);
        CHECK(in_input(r.reason, r.reason_len, buf, (size_t)rc));
        if (m == HTTP_M_HEAD || r.status < 200 || r.status == 204 || r.status == 304)
            CHECK(r.framing == HTTP_BODY_NONE);
        if (r.framing == HTTP_BODY_LENGTH)
            CHECK(r.content_length > 0 && r.content_length <= INT64_MAX);
        if (r.flags & HTTP_F_TE_AND_CL)
            CHECK(r.framing != HTTP_BODY_LENGTH);
        for (i = 0; i < r.num_headers; i++) {
            const struct http_header *f = &r.headers[i];

            CHECK(in_input(f->name, f->name_len, buf, (size_t)rc) && f->name_len > 0);
            CHECK(in_input(f->value, f->value_len, buf, (size_t)rc));
            CHECK(memchr(f->value, '\r', f->value_len) == NULL);
            CHECK(memchr(f->value, '\n', f->value_len) == NULL);
            if (f->value_len > 0)
                CHECK(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
        }
    }
    rc2 = parse(buf, size, m, &r2, h2);
    CHECK(rc2 == rc);
    step = size <= 512 ? 1 : size / 256;
    for (k = 0; k < size; k += step) {
        rc2 = parse(buf, k, m, &r2, h2);
        CHECK(rc2 == HTTP_PARTIAL || rc2 == rc);
    }
    return 0;
}
