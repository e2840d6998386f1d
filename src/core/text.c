/* Text checks and escaping (see text.h). No state; any thread. */
#include "core/text.h"

#include <stdio.h>
#include <string.h>

#include "core/xmalloc.h"

size_t text_utf8_next(const char *s, size_t len, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c;
    size_t n;

    if (len == 0)
        return 0;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    if (u[0] >= 0xc2 && u[0] <= 0xdf) {
        n = 2;
        c = u[0] & 0x1f;
    } else if (u[0] >= 0xe0 && u[0] <= 0xef) {
        n = 3;
        c = u[0] & 0x0f;
    } else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
        n = 4;
        c = u[0] & 0x07;
    } else {
        return 0; /* a continuation byte, an overlong lead (C0, C1) or past U+10FFFF */
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (u[i] & 0x3f);
    }
    if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)))
        return 0; /* overlong */
    if (c >= 0xd800 && c <= 0xdfff)
        return 0; /* a UTF-16 surrogate */
    *cp = c;
    return n;
}

int text_cp_unsafe(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
           cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t text_find_nontext(const char *buf, size_t len, const char **why)
{
    size_t i = 0;
    uint32_t cp;

    while (i < len) {
        size_t n = text_utf8_next(buf + i, len - i, &cp);
        if (n == 0) {
            *why = "invalid UTF-8";
            return i;
        }
        if (cp == 0) {
            *why = "a NUL byte";
            return i;
        }
        if (cp == '\r' && (i + 1 >= len || buf[i + 1] != '\n')) {
            *why = "a carriage return (CR) not followed by a line feed";
            return i;
        }
        if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || (cp >= 0x7f && cp <= 0x9f)) {
            *why = "a control character";
            return i;
        }
        i += n;
    }
    return len;
}

int text_is_name(const char *s, size_t len)
{
    if (len == 0 || len > TEXT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* What the escapers do beyond neutralising unsafe code points. */
enum { ESC_MD = 1, ESC_KEEP_LF = 2 };

struct out {
    char *p;
    size_t len, cap;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static char *escape(const char *s, int flags)
{
    struct out o = {NULL, 0, 0};
    size_t len, i = 0;
    char tmp[16];

    if (s == NULL)
        return NULL;
    len = strlen(s);
    o.cap = len + 16;
    o.p = xmalloc(o.cap);
    o.p[0] = '\0';
    while (i < len) {
        uint32_t cp;
        size_t n = text_utf8_next(s + i, len - i, &cp);
        if (n == 0) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned char)s[i]);
            out_put(&o, tmp, 4);
            i++;
            continue;
        }
        if (cp == '\n' && (flags & ESC_KEEP_LF)) {
            out_put(&o, "\n", 1);
        } else if (text_cp_unsafe(cp)) {
            if (cp == '\n')
                out_put(&o, "\\n", 2);
            else if (cp == '\r')
                out_put(&o, "\\r", 2);
            else if (cp == '\t')
                out_put(&o, "\\t", 2);
            else if (cp < 0x80)
                out_put(&o, tmp, (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned)cp));
            else
                out_put(&o, tmp, (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned)cp));
        } else if ((flags & ESC_MD) && cp == '<') {
            out_put(&o, "&lt;", 4);
        } else if ((flags & ESC_MD) && cp == '>') {
            out_put(&o, "&gt;", 4);
        } else if ((flags & ESC_MD) && cp == '&') {
            out_put(&o, "&amp;", 5);
        } else if ((flags & ESC_MD) && cp < 0x80 && strchr("\\|`*_[]", (int)cp) != NULL) {
            tmp[0] = '\\';
            tmp[1] = (char)cp;
            out_put(&o, tmp, 2);
        } else {
            out_put(&o, s + i, n);
        }
        i += n;
    }
    return o.p;
}

char *text_term(const char *s)
{
    return escape(s, 0);
}

char *text_md(const char *s)
{
    return escape(s, ESC_MD);
}

char *text_term_lines(const char *s)
{
    return escape(s, ESC_KEEP_LF);
}
