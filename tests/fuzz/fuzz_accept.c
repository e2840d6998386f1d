/* libFuzzer target for hold_accepts_html, the Accept field reader that picks the maintenance
 * page's form: the field is the client's. Invariants: no read past the value's length (ASan, an
 * exact-size copy); the answer is 0 or 1; a value that does not contain "text/html" in any case
 * is never HTML; appending ",text/html" to any value makes it HTML (a later range that names it
 * with no quality counts, whatever came before). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/hold.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size ? size : 1);
    memcpy(v, data, size);
    int got = hold_accepts_html(v, size);
    CHECK(got == 0 || got == 1);
    int named = 0;
    for (size_t i = 0; i + 9 <= size && !named; i++)
        named = strncasecmp(v + i, "text/html", 9) == 0;
    CHECK(named || got == 0);
    free(v);
    char *w = malloc(size + 10);
    memcpy(w, data, size);
    memcpy(w + size, ",text/html", 10);
    CHECK(hold_accepts_html(w, size + 10) == 1);
    free(w);
    return 0;
}
