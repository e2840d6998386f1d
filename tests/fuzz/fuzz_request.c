/* libFuzzer target for http_parse_request: checks the contract, not just that it returns.
 * Invariants: a result is PARTIAL, an error, or a byte count <= size; every pointer it fills
 * lies inside the input; a value has no surrounding whitespace; parsing is deterministic; and a
 * prefix of the input never says anything but PARTIAL or what the whole input says, because the
 * proxy re-parses from the start as bytes arrive. */
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

static int parse(const char *buf, size_t len, struct http_request *r, struct http_header *h)
{
    static const struct http_limits lim = {.max_headers = 24, .max_uri = 512};

    memset(r, 0, sizeof(*r));
    r->headers = h;
    r->num_headers = MAX_HDR;
    return http_parse_request(buf, len, r, &lim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct http_header h[MAX_HDR], h2[MAX_HDR];
    struct http_request r, r2;
    size_t i, k, step;
    int rc, rc2;

    rc = parse(buf, size, &r, h);
    CHECK(rc >= HTTP_ERR_METHOD);
    rc2 = parse(buf, size, &r2, h2);
    CHECK(rc == rc2);
    if (rc >= 0) {
        CHECK((size_t)rc <= size && rc > 0);
        CHECK(r.num_headers <= 24);
        CHECK(in_input(r.method, r.method_len, buf, (size_t)rc) && r.method_len > 0);
        CHECK(in_input(r.target, r.target_len, buf, (size_t)rc) && r.target_len > 0);
        CHECK(r.minor_version == 0 || r.minor_version == 1);
        CHECK(r.meth != HTTP_M_CONNECT);
        CHECK(r.host != NULL || r.minor_version == 0);
        CHECK(r.host == NULL || in_input(r.host, r.host_len, buf, (size_t)rc));
        CHECK(r.framing == HTTP_BODY_NONE || r.framing == HTTP_BODY_LENGTH ||
              r.framing == HTTP_BODY_CHUNKED);
        CHECK(r.framing != HTTP_BODY_LENGTH || r.content_length > 0);
        CHECK(r.content_length <= INT64_MAX);
        CHECK(buf[rc - 1] == '\n' && buf[rc - 2] == '\r');
        for (i = 0; i < r.num_headers; i++) {
            const struct http_header *f = &r.headers[i];

            CHECK(in_input(f->name, f->name_len, buf, (size_t)rc) && f->name_len > 0);
            CHECK(in_input(f->value, f->value_len, buf, (size_t)rc));
            CHECK(memchr(f->value, '\r', f->value_len) == NULL);
            CHECK(memchr(f->value, '\n', f->value_len) == NULL);
            CHECK(memchr(f->value, '\0', f->value_len) == NULL);
            if (f->value_len > 0) {
                CHECK(f->value[0] != ' ' && f->value[0] != '\t');
                CHECK(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
            }
            CHECK((f->flags & ~(unsigned)HTTP_HF_HOP) == 0);
            if (f->flags & HTTP_HF_HOP)
                CHECK(!http_token_eq(f->name, f->name_len, "host") &&
                      !http_token_eq(f->name, f->name_len, "content-length") &&
                      !http_token_eq(f->name, f->name_len, "transfer-encoding"));
        }
        /* Bytes after the head are not the head's business. */
        if ((size_t)rc < size) {
            rc2 = parse(buf, (size_t)rc, &r2, h2);
            CHECK(rc2 == rc);
        }
    }
    /* Every prefix for small inputs, a sample for large ones. */
    step = size <= 512 ? 1 : size / 256;
    for (k = 0; k < size; k += step) {
        rc2 = parse(buf, k, &r2, h2);
        CHECK(rc2 == HTTP_PARTIAL || rc2 == rc);
    }
    return 0;
}
