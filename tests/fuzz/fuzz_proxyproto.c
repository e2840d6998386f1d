/* libFuzzer target for proxyproto_parse. The input is what a peer sends first. Invariants: the
 * parser reads no byte past the length given (ASan, on an exact-size copy); a result is a length
 * within the input and PROXYPROTO_MAX_LEN, 0, or a known error; every prefix gives 0 or the
 * whole input's verdict (a header's length once it is complete, the same error once it is
 * decided); bytes after a complete header never change it; a success fills a usable address. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "net/proxyproto.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse_exact(const uint8_t *data, size_t n, struct proxyproto_hdr *h)
{
    char *copy = malloc(n ? n : 1);
    int r;

    CHECK(copy != NULL);
    memcpy(copy, data, n);
    r = proxyproto_parse(copy, n, h);
    free(copy);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_hdr h, hk;
    int r, rk;

    if (size > PROXYPROTO_MAX_LEN + 64)
        return 0;
    r = parse_exact(data, size, &h);
    CHECK(r >= PROXYPROTO_E_V2_CRC);
    CHECK(r <= (int)size && r <= PROXYPROTO_MAX_LEN);
    if (r < 0)
        CHECK(strcmp(proxyproto_strerror(r), "unknown error") != 0);
    if (r > 0) {
        CHECK(h.version == 1 || h.version == 2);
        if (h.local)
            CHECK(h.src.ss_family == AF_UNSPEC);
        else
            CHECK(h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
    }
    for (size_t k = 0; k < size; k++) {
        /* Every short prefix, then the ones around the header's end: keeps a run fast. */
        if (k > 512 && k != size - 1 && (r <= 0 || (k + 1 != (size_t)r && k != (size_t)r)))
            continue;
        rk = parse_exact(data, k, &hk);
        if (r > 0)
            CHECK(k < (size_t)r ? rk == 0 : rk == r);
        else
            CHECK(rk == 0 || rk == r);
        if (rk > 0)
            CHECK(memcmp(&hk, &h, sizeof(h)) == 0);
    }
    return 0;
}
