/* The dashboard's files (index.html, app.js, app.css in this folder), embedded in the binary at
 * build: scripts/embed.py writes build/gen/dash_assets.c from them, which defines
 * dash_asset_find. Read-only data; any thread. */
#ifndef CUTOVER_DASH_DASH_H
#define CUTOVER_DASH_DASH_H

#include <stddef.h>

struct dash_asset {
    const char *name; /* the file's name, "app.js" */
    const char *type; /* its Content-Type */
    const char *data; /* its bytes, NUL-terminated */
    size_t len;
};

/* The embedded file called name, or NULL. */
const struct dash_asset *dash_asset_find(const char *name);

#endif
