/* Comparison of mirrored answers (see mirrordiff.h). No state; any thread. */
#include "proxy/mirrordiff.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A segment that names one thing among many: digits, a UUID, or 16+ hexadecimal digits. */
static int id_like(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    size_t digits = 0, hex = 0, dashes = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isdigit(ch))
            digits++;
        else if (isxdigit(ch))
            hex++;
        else if (ch == '-')
            dashes++;
        else
            return 0;
    }
    if (digits == n)
        return 1;
    if (n == 36 && dashes == 4)
        return 1; /* 8-4-4-4-12 */
    return dashes == 0 && n >= 16 && digits > 0;
}

void mirrordiff_route(char *out, size_t n, const char *method, size_t mlen, const char *target,
                      size_t tlen)
{
    size_t o = 0;
    if (n == 0)
        return;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (o + 1 < n)                                                                             \
            out[o++] = (c);                                                                        \
    } while (0)
    for (size_t i = 0; i < mlen; i++)
        PUT(method[i]);
    PUT(' ');
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    size_t i = 0;
    while (i < plen) {
        if (target[i] == '/') {
            PUT('/');
            i++;
            continue;
        }
        size_t j = i;
        while (j < plen && target[j] != '/')
            j++;
        if (id_like(target + i, j - i)) {
            PUT(':');
            PUT('i');
            PUT('d');
        } else {
            for (size_t k = i; k < j; k++)
                PUT(target[k]);
        }
        i = j;
    }
#undef PUT
    out[o] = '\0';
}

/* Decodes one reference token of a pointer (~1 -> /, ~0 -> ~) into buf. */
static void token_decode(const char *s, size_t len, char *buf, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < n; i++) {
        if (s[i] == '~' && i + 1 < len) {
            buf[o++] = s[i + 1] == '1' ? '/' : '~';
            i++;
        } else {
            buf[o++] = s[i];
        }
    }
    buf[o] = '\0';
}

/* Array index per RFC 6901: "0" or digits without a leading zero. */
static int array_index(const char *tok, size_t *out)
{
    if (tok[0] == '\0' || (tok[0] == '0' && tok[1] != '\0'))
        return -1;
    size_t v = 0;
    for (const char *p = tok; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 100000000)
            return -1;
        v = v * 10 + (size_t)(*p - '0');
    }
    *out = v;
    return 0;
}

int mirrordiff_json_remove(void *root, const char *pointer)
{
    json_t *cur = root;
    const char *p = pointer;
    char tok[512];
    if (cur == NULL || p[0] != '/')
        return 0;
    for (;;) {
        p++; /* the '/' */
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        token_decode(p, len, tok, sizeof(tok));
        int last = e == NULL;
        if (json_is_object(cur)) {
            if (last)
                return json_object_del(cur, tok) == 0;
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            size_t idx;
            if (array_index(tok, &idx) < 0)
                return 0;
            if (last)
                return json_array_remove(cur, idx) == 0;
            cur = json_array_get(cur, idx);
        } else {
            return 0;
        }
        if (cur == NULL)
            return 0;
        p = e;
    }
}

/* Writes where two byte strings first differ, with a little of each around it. */
static void bytes_diff(const char *a, size_t alen, const char *b, size_t blen, const char *what,
                       char *out, size_t outlen)
{
    size_t i = 0;
    while (i < alen && i < blen && a[i] == b[i])
        i++;
    size_t from = i > 16 ? i - 16 : 0;
    int la = (int)((alen - from) < 48 ? alen - from : 48);
    int lb = (int)((blen - from) < 48 ? blen - from : 48);
    char sa[64], sb[64];
    /* Only printable bytes go into a record. */
    for (int k = 0; k < la; k++)
        sa[k] = isprint((unsigned char)a[from + (size_t)k]) ? a[from + (size_t)k] : '.';
    for (int k = 0; k < lb; k++)
        sb[k] = isprint((unsigned char)b[from + (size_t)k]) ? b[from + (size_t)k] : '.';
    snprintf(out, outlen,
             "%s differ at byte %zu (live %zu bytes, new %zu): live \"%.*s\" new \"%.*s\"", what, i,
             alen, blen, la, sa, lb, sb);
}

int mirrordiff_body(const char *a, size_t alen, const char *b, size_t blen, int json,
                    char *const *ignore, size_t n, char *out, size_t outlen)
{
    if (json) {
        json_t *ja = json_loadb(a, alen, JSON_DECODE_ANY, NULL);
        json_t *jb = ja ? json_loadb(b, blen, JSON_DECODE_ANY, NULL) : NULL;
        if (ja != NULL && jb != NULL) {
            for (size_t i = 0; i < n; i++) {
                mirrordiff_json_remove(ja, ignore[i]);
                mirrordiff_json_remove(jb, ignore[i]);
            }
            int eq = json_equal(ja, jb);
            if (!eq && out != NULL) {
                char *da = json_dumps(ja, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
                char *db = json_dumps(jb, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
                bytes_diff(da ? da : "", da ? strlen(da) : 0, db ? db : "", db ? strlen(db) : 0,
                           "JSON bodies", out, outlen);
                free(da);
                free(db);
            }
            json_decref(ja);
            json_decref(jb);
            return eq;
        }
        json_decref(ja);
        json_decref(jb);
    }
    if (alen == blen && memcmp(a, b, alen) == 0)
        return 1;
    if (out != NULL)
        bytes_diff(a, alen, b, blen, "bodies", out, outlen);
    return 0;
}

void mirrordiff_mask_head(char *out, size_t n, const char *head, size_t len)
{
    static const char *const secret[] = {"authorization:", "proxy-authorization:", "cookie:"};
    size_t o = 0, i = 0;
    if (n == 0)
        return;
    while (i < len && o + 1 < n) {
        const char *eol = memchr(head + i, '\n', len - i);
        size_t end = eol ? (size_t)(eol - head) : len;
        size_t le = end > i && head[end - 1] == '\r' ? end - 1 : end;
        if (le == i)
            break; /* the empty line ends the head */
        size_t keep = le - i;
        int masked = 0;
        for (size_t k = 0; k < sizeof(secret) / sizeof(secret[0]); k++) {
            size_t sl = strlen(secret[k]);
            if (keep >= sl && strncasecmp(head + i, secret[k], sl) == 0) {
                keep = sl;
                masked = 1;
            }
        }
        for (size_t k = 0; k < keep && o + 1 < n; k++)
            out[o++] = isprint((unsigned char)head[i + k]) ? head[i + k] : '.';
        if (masked)
            for (const char *m = " ***"; *m && o + 1 < n; m++)
                out[o++] = *m;
        if (o + 1 < n)
            out[o++] = '\n';
        i = end + 1;
    }
    out[o] = '\0';
}
