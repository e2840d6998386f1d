/* libFuzzer target for the YAML config loader (config_load_buffer: libfyaml, then the walk that
 * checks every key): a config file is outside input, written by hand, generated, or tampered
 * with. Invariants: no crash, leak or read past the input (ASan); the loader either returns 0
 * with a config or a negative errno with a message naming "fuzz.yml:LINE:"; bytes that are not
 * text (NUL, invalid UTF-8, control characters) are always refused; a health-check path that
 * passes never holds a byte that would break the request line. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/text.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg = NULL;
    char err[1024];
    const char *why;
    int rc;

    if (size > 64 * 1024)
        return 0; /* the walk is what is tested here, not libfyaml's speed on huge inputs */
    rc = config_load_buffer((const char *)data, size, "fuzz.yml", &cfg, err, sizeof(err));
    if (rc == 0) {
        CHECK(cfg != NULL);
        CHECK(text_find_nontext((const char *)data, size, &why) == size);
        for (size_t i = 0; i < cfg->nservices; i++) {
            const char *p = cfg->services[i].health.path;
            CHECK(p != NULL && p[0] == '/');
            for (; *p; p++)
                CHECK((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
        }
        config_free(cfg);
    } else {
        CHECK(rc < 0);
        CHECK(cfg == NULL);
        /* Every error names the file (or the tokens file it points at) and a line. */
        CHECK(err[0] != '\0');
        CHECK(strchr(err, ':') != NULL);
    }
    return 0;
}
