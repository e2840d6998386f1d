/* libFuzzer target for http_chunked_feed. The first two bytes pick a split point, the rest is
 * a chunked body. Invariants: consumption is monotonic and bounded by the input; decoded bytes
 * never outnumber consumed ones; feeding in one call, in two calls cut at the split point, and
 * one byte at a time all give the same outcome, the same count and the same decoded bytes; an
 * error is sticky; nothing is consumed after the end. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
    const char *input; /* decoded bytes must be copies of input bytes, in order */
    size_t input_len;
    char out[65536];
    size_t len;
};

static void on_data(void *ctx, const char *p, size_t n)
{
    struct sink *s = ctx;

    CHECK(n > 0);
    CHECK(p >= s->input && (size_t)(p - s->input) + n <= s->input_len);
    CHECK(s->len + n <= sizeof(s->out));
    memcpy(s->out + s->len, p, n);
    s->len += n;
}

/* Feeds buf[0..size) in pieces ending at the cut points; returns the total or the error. */
static ssize_t feed(const char *buf, size_t size, size_t cut, size_t bytewise, struct sink *s,
                    int *done)
{
    struct http_chunked c;
    size_t pos = 0;

    http_chunked_init(&c);
    s->input = buf;
    s->input_len = size;
    s->len = 0;
    *done = 0;
    while (pos < size) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : size);
        ssize_t r = http_chunked_feed(&c, buf + pos, end - pos, done, on_data, s);

        if (r < 0) {
            int d;

            CHECK(r == HTTP_ERR_BAD_REQUEST);
            CHECK(http_chunked_feed(&c, "0\r\n\r\n", 5, &d, on_data, s) == HTTP_ERR_BAD_REQUEST);
            return r;
        }
        CHECK((size_t)r <= end - pos);
        pos += (size_t)r;
        CHECK(s->len <= pos);
        if (*done) {
            int d;

            CHECK(http_chunked_feed(&c, buf + pos, size - pos, &d, on_data, s) == 0 && d);
            return (ssize_t)pos;
        }
        CHECK(pos == end); /* not done: everything offered was taken */
    }
    return (ssize_t)pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sink a, b, c;
    const char *buf;
    size_t cut;
    ssize_t ra, rb, rc;
    int da, db, dc;

    if (size < 2)
        return 0;
    cut = ((size_t)data[0] << 8 | data[1]);
    buf = (const char *)data + 2;
    size -= 2;
    if (size > sizeof(a.out))
        return 0;
    cut = size ? cut % (size + 1) : 0;

    ra = feed(buf, size, size, 0, &a, &da);
    rb = feed(buf, size, cut, 0, &b, &db);
    rc = feed(buf, size, 0, 1, &c, &dc);
    CHECK(ra == rb && ra == rc);
    if (ra >= 0) {
        CHECK(da == db && da == dc);
        CHECK(a.len == b.len && a.len == c.len);
        CHECK(memcmp(a.out, b.out, a.len) == 0 && memcmp(a.out, c.out, a.len) == 0);
    }
    return 0;
}
