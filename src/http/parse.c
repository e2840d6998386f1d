/* Strict, zero-copy HTTP/1.1 head parser and chunked-coding validator (see parse.h).
 * One forward pass over the caller's bytes with a 256-entry class table; no allocation, no
 * state kept between calls for heads (the caller re-parses from the start, like picohttpparser),
 * and a small embedded state machine for chunked bodies. Pure functions, any thread. */
#include "http/parse.h"

#include <limits.h>
#include <string.h>

#define HTTP_DEFAULT_MAX_HEADERS 100
#define HTTP_DEFAULT_MAX_URI 8192
#define HTTP_MAX_CHUNK_EXT 4096
#define HTTP_MAX_CHUNK_DIGITS 64 /* leading zeros are legal, but not without end */
#define HTTP_MAX_TRAILERS 16384
#define HTTP_MAX_CHUNK_SIZE (UINT64_C(1) << 62)
#define HTTP_MAX_CONTENT_LENGTH UINT64_C(0x7fffffffffffffff)

/* Byte classes. One table lookup per byte keeps the hot loops branch-light. */
#define HTTP_C_TCHAR 0x01  /* token (RFC 9110 5.6.2) */
#define HTTP_C_TARGET 0x02 /* VCHAR: what a request-target may contain */
#define HTTP_C_FIELD 0x04  /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define HTTP_C_AUTH 0x08   /* uri-host / port bytes: unreserved, pct, sub-delims, ":", "[", "]" */
#define HTTP_C_HEX 0x10    /* HEXDIG */
#define HTTP_C_QDTEXT 0x20 /* quoted-string text: HTAB, SP, VCHAR except '"' and '\', obs-text */

static const unsigned char http_cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x24, 0x2f, 0x06, 0x27, 0x2f, 0x2f, 0x2f, 0x2f, 0x2e, 0x2e, 0x2f, 0x2f, 0x2e, 0x2f, 0x2f, 0x26,
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2e, 0x2e, 0x26, 0x2e, 0x26, 0x26,
    0x26, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2e, 0x06, 0x2e, 0x27, 0x2f,
    0x27, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x26, 0x27, 0x26, 0x2f, 0x00,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
};

#define HTTP_IS(c, cls) ((http_cls[(unsigned char)(c)] & (cls)) != 0)
#define HTTP_IS_WS(c) ((c) == ' ' || (c) == '\t')

static unsigned char http_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

int http_token_eq(const char *s, size_t n, const char *lit)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (lit[i] == '\0' || http_lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return 0;
    }
    return lit[n] == '\0';
}

int http_cookie_find(const struct http_header *headers, size_t n, const char *name, const char **v,
                     size_t *vl)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < n; i++) {
        const struct http_header *h = &headers[i];
        if (!http_token_eq(h->name, h->name_len, "cookie"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *pe = semi ? semi : end;
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            if (eq != NULL && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
                *v = eq + 1;
                *vl = (size_t)(pe - eq - 1);
                return 1;
            }
            p = pe;
        }
    }
    return 0;
}

int http_err_status(int err)
{
    switch (err) {
    case HTTP_ERR_TOO_LARGE:
        return 431;
    case HTTP_ERR_URI_TOO_LONG:
        return 414;
    case HTTP_ERR_VERSION:
        return 505;
    case HTTP_ERR_METHOD:
        return 405;
    case HTTP_ERR_BAD_RESPONSE:
        return 502;
    default:
        return 400;
    }
}

const char *http_err_str(int err)
{
    switch (err) {
    case HTTP_PARTIAL:
        return "incomplete message head";
    case HTTP_ERR_BAD_REQUEST:
        return "malformed or ambiguous request";
    case HTTP_ERR_TOO_LARGE:
        return "too many header fields";
    case HTTP_ERR_URI_TOO_LONG:
        return "request-target too long";
    case HTTP_ERR_VERSION:
        return "HTTP version not supported";
    case HTTP_ERR_METHOD:
        return "method not allowed";
    case HTTP_ERR_BAD_RESPONSE:
        return "malformed or ambiguous upstream response";
    default:
        return "unknown error";
    }
}

/* Everything the field loop learns that the caller-visible structs have no room for. One is
 * filled per call, on the stack. */
struct http_head {
    const char *buf;
    size_t len;
    size_t pos;
    int is_request;
    int minor;
    struct http_header *hdrs;
    size_t cap; /* min(caller's capacity, limit) */
    size_t n;
    unsigned flags;
    const char *host;
    size_t host_len;
    int host_count;
    int have_cl;
    uint64_t cl;
    int te_count;         /* Transfer-Encoding fields seen */
    int te_final_chunked; /* the last coding listed so far is chunked */
    int te_chunked_seen;  /* chunked appeared anywhere (it may be applied only once) */
    int conn_upgrade;     /* "upgrade" token in Connection */
    int have_upgrade;     /* an Upgrade field */
    int conn_names;       /* Connection lists tokens that may name other fields */
};

/* Skips the empty lines a client may send before a message (RFC 9112 2.2). Returns 0, or
 * HTTP_PARTIAL / HTTP_ERR_BAD_REQUEST for a CR at the end / a CR without LF. */
static int http_skip_empty_lines(struct http_head *h)
{
    while (h->pos < h->len && h->buf[h->pos] == '\r') {
        if (h->pos + 1 == h->len)
            return HTTP_PARTIAL;
        if (h->buf[h->pos + 1] != '\n')
            return HTTP_ERR_BAD_REQUEST;
        h->pos += 2;
    }
    if (h->pos == h->len)
        return HTTP_PARTIAL;
    return 0;
}

/* Parses a Content-Length value: 1*DIGIT, or a list of identical such values (RFC 9110 8.6 lets
 * a recipient accept "5, 5"). Returns 0 and the value, or -1. */
static int http_parse_cl(const char *v, size_t n, uint64_t *out)
{
    size_t i = 0;
    uint64_t val = 0;
    int have = 0;

    for (;;) {
        uint64_t x = 0;

        if (i == n || v[i] < '0' || v[i] > '9')
            return -1;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            unsigned d = (unsigned)(v[i] - '0');

            if (x > (HTTP_MAX_CONTENT_LENGTH - d) / 10)
                return -1;
            x = x * 10 + d;
            i++;
        }
        if (have && x != val)
            return -1;
        val = x;
        have = 1;
        while (i < n && HTTP_IS_WS(v[i]))
            i++;
        if (i == n)
            break;
        if (v[i] != ',')
            return -1;
        i++;
        while (i < n && HTTP_IS_WS(v[i]))
            i++;
    }
    *out = val;
    return 0;
}

/* Splits a comma-separated list value into its elements (OWS trimmed, empty elements skipped,
 * RFC 9110 5.6.1). Returns 1 and the next element, 0 at the end. *i is the cursor. */
static int http_list_next(const char *v, size_t n, size_t *i, const char **el, size_t *el_len)
{
    size_t p = *i, s, e;

    while (p < n && (HTTP_IS_WS(v[p]) || v[p] == ','))
        p++;
    *i = p;
    if (p == n)
        return 0;
    s = p;
    while (p < n && v[p] != ',')
        p++;
    e = p;
    while (e > s && HTTP_IS_WS(v[e - 1]))
        e--;
    *el = v + s;
    *el_len = e - s;
    *i = p;
    return 1;
}

static int http_is_token(const char *s, size_t n)
{
    size_t i;

    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (!HTTP_IS(s[i], HTTP_C_TCHAR))
            return 0;
    }
    return 1;
}

/* Transfer-Encoding on a response: a list of transfer-codings (RFC 9112 6.1), each a token with
 * optional "; name=token" parameters. Only the final coding decides the framing; chunked may
 * appear once. Returns 0 or -1. */
static int http_response_te(struct http_head *h, const char *v, size_t n)
{
    size_t i = 0, el_len;
    const char *el;
    int any = 0;

    while (http_list_next(v, n, &i, &el, &el_len)) {
        size_t p = 0, name_len;

        while (p < el_len && HTTP_IS(el[p], HTTP_C_TCHAR))
            p++;
        name_len = p;
        if (name_len == 0)
            return -1;
        while (p < el_len) {
            size_t s;

            while (p < el_len && HTTP_IS_WS(el[p]))
                p++;
            if (p == el_len || el[p] != ';')
                return -1;
            p++;
            while (p < el_len && HTTP_IS_WS(el[p]))
                p++;
            s = p;
            while (p < el_len && HTTP_IS(el[p], HTTP_C_TCHAR))
                p++;
            if (p == s || p == el_len || el[p] != '=')
                return -1;
            s = ++p;
            while (p < el_len && HTTP_IS(el[p], HTTP_C_TCHAR))
                p++;
            if (p == s)
                return -1;
        }
        any = 1;
        h->te_final_chunked = http_token_eq(el, name_len, "chunked");
        if (h->te_final_chunked) {
            /* Parameters on chunked, or chunked twice, have no defined meaning. */
            if (h->te_chunked_seen || name_len != el_len)
                return -1;
            h->te_chunked_seen = 1;
        }
    }
    return any ? 0 : -1;
}

/* A Host value must be a uri-host [":" port] (RFC 9112 3.2: 400 for an invalid one); userinfo
 * ("@") never belongs there. Empty is allowed (RFC 9110 7.2). */
static int http_valid_authority(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!HTTP_IS(s[i], HTTP_C_AUTH))
            return 0;
    }
    return 1;
}

/* Connection (RFC 9110 7.6.1): a list of tokens. Sets the message flags it implies. */
static int http_connection(struct http_head *h, const char *v, size_t n)
{
    size_t i = 0, el_len;
    const char *el;

    while (http_list_next(v, n, &i, &el, &el_len)) {
        if (!http_is_token(el, el_len))
            return -1;
        if (http_token_eq(el, el_len, "close"))
            h->flags |= HTTP_F_CONN_CLOSE;
        else if (http_token_eq(el, el_len, "keep-alive"))
            h->flags |= HTTP_F_CONN_KEEPALIVE;
        else if (http_token_eq(el, el_len, "upgrade"))
            h->conn_upgrade = 1;
        else
            h->conn_names = 1;
    }
    return 0;
}

/* Applies what one complete field line means for framing and flags. Returns 0 or an error; the
 * framing conflicts are reported here, at the field that creates them, not at the end. */
static int http_on_field(struct http_head *h, struct http_header *f)
{
    const char *n = f->name, *v = f->value;
    size_t nl = f->name_len, vl = f->value_len;

    switch (nl) {
    case 2:
        if (http_token_eq(n, nl, "te"))
            f->flags |= HTTP_HF_HOP;
        break;
    case 4:
        if (h->is_request && http_token_eq(n, nl, "host")) {
            if (++h->host_count > 1 || !http_valid_authority(v, vl))
                return HTTP_ERR_BAD_REQUEST;
            h->host = v;
            h->host_len = vl;
        }
        break;
    case 6:
        if (http_token_eq(n, nl, "expect") && http_token_eq(v, vl, "100-continue"))
            h->flags |= HTTP_F_EXPECT_CONTINUE;
        break;
    case 7:
        if (http_token_eq(n, nl, "trailer")) {
            f->flags |= HTTP_HF_HOP;
        } else if (http_token_eq(n, nl, "upgrade")) {
            f->flags |= HTTP_HF_HOP;
            h->have_upgrade = 1;
        }
        break;
    case 10:
        if (http_token_eq(n, nl, "connection")) {
            f->flags |= HTTP_HF_HOP;
            if (http_connection(h, v, vl) != 0)
                return HTTP_ERR_BAD_REQUEST;
        } else if (http_token_eq(n, nl, "keep-alive")) {
            f->flags |= HTTP_HF_HOP;
        }
        break;
    case 14:
        if (http_token_eq(n, nl, "content-length")) {
            uint64_t cl;

            if (http_parse_cl(v, vl, &cl) != 0)
                return HTTP_ERR_BAD_REQUEST;
            if (h->have_cl && cl != h->cl)
                return HTTP_ERR_BAD_REQUEST;
            /* RFC 9112 6.1: a request with both is a smuggling attempt until proven innocent. */
            if (h->is_request && h->te_count > 0)
                return HTTP_ERR_BAD_REQUEST;
            h->have_cl = 1;
            h->cl = cl;
        }
        break;
    case 16:
        if (http_token_eq(n, nl, "proxy-connection"))
            f->flags |= HTTP_HF_HOP;
        break;
    case 17:
        if (http_token_eq(n, nl, "transfer-encoding")) {
            h->te_count++;
            /* RFC 9112 6.1: TE in HTTP/1.0 means the framing is faulty. */
            if (h->minor == 0)
                return HTTP_ERR_BAD_REQUEST;
            if (h->is_request) {
                /* Only the one coding whose framing we verify ourselves is accepted; anything
                 * else is where front and back ends disagree (RFC 9112 6.3 rule 4). */
                if (h->te_count > 1 || h->have_cl || !http_token_eq(v, vl, "chunked"))
                    return HTTP_ERR_BAD_REQUEST;
                h->te_final_chunked = 1;
            } else if (http_response_te(h, v, vl) != 0) {
                return HTTP_ERR_BAD_REQUEST;
            }
        }
        break;
    case 18:
        if (http_token_eq(n, nl, "proxy-authenticate"))
            f->flags |= HTTP_HF_HOP;
        break;
    case 19:
        if (http_token_eq(n, nl, "proxy-authorization"))
            f->flags |= HTTP_HF_HOP;
        break;
    default:
        break;
    }
    return 0;
}

/* ASCII case-insensitive equality of two byte strings of length n (not locale-dependent). */
static int http_caseeq(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (http_lower((unsigned char)a[i]) != http_lower((unsigned char)b[i]))
            return 0;
    }
    return 1;
}

/* A 64-bit filter of header names by (length, first letter), so that a long Connection list
 * costs one lookup per token rather than a scan of every field. */
static uint64_t http_name_bit(const char *s, size_t n)
{
    return UINT64_C(1) << ((n * 31 + http_lower((unsigned char)s[0])) & 63);
}

/* Marks the fields that Connection names as hop-by-hop (RFC 9110 7.6.1). Runs once, when the
 * head is complete, because Connection may come after the fields it names. Host and the two
 * framing fields are never marked: removing them would change how the next hop frames or routes
 * the message. */
static void http_mark_connection_names(struct http_head *h)
{
    uint64_t mask = 0;
    size_t i, j;

    for (i = 0; i < h->n; i++)
        mask |= http_name_bit(h->hdrs[i].name, h->hdrs[i].name_len);
    for (i = 0; i < h->n; i++) {
        const struct http_header *c = &h->hdrs[i];
        size_t p = 0, el_len;
        const char *el;

        if (c->name_len != 10 || !http_token_eq(c->name, c->name_len, "connection"))
            continue;
        while (http_list_next(c->value, c->value_len, &p, &el, &el_len)) {
            if ((mask & http_name_bit(el, el_len)) == 0)
                continue;
            if (http_token_eq(el, el_len, "host") || http_token_eq(el, el_len, "content-length") ||
                http_token_eq(el, el_len, "transfer-encoding"))
                continue;
            for (j = 0; j < h->n; j++) {
                struct http_header *f = &h->hdrs[j];

                if (f->name_len == el_len && http_caseeq(f->name, el, el_len))
                    f->flags |= HTTP_HF_HOP;
            }
        }
    }
}

/* Parses field lines up to and including the empty line. Returns 0 with h->pos after the head,
 * HTTP_PARTIAL, or an error (request codes; the response parser maps them). */
static int http_parse_fields(struct http_head *h)
{
    const char *buf = h->buf;
    size_t len = h->len, pos = h->pos;

    for (;;) {
        struct http_header *f;
        size_t name, name_len, vstart, vend;
        int rc;

        if (pos == len)
            return HTTP_PARTIAL;
        if (buf[pos] == '\r') {
            if (pos + 1 == len)
                return HTTP_PARTIAL;
            if (buf[pos + 1] != '\n')
                return HTTP_ERR_BAD_REQUEST;
            h->pos = pos + 2;
            return 0;
        }
        /* A line starting with SP/HTAB is obs-fold (RFC 9112 5.2) or a field hidden from parsers
         * that ignore it; LF alone is a bare LF. Neither is a token byte. */
        if (!HTTP_IS(buf[pos], HTTP_C_TCHAR))
            return HTTP_ERR_BAD_REQUEST;
        if (h->n == h->cap)
            return HTTP_ERR_TOO_LARGE;
        name = pos;
        while (pos < len && HTTP_IS(buf[pos], HTTP_C_TCHAR))
            pos++;
        if (pos == len)
            return HTTP_PARTIAL;
        /* RFC 9112 5.1: no whitespace between name and colon. */
        if (buf[pos] != ':')
            return HTTP_ERR_BAD_REQUEST;
        name_len = pos - name;
        pos++;
        while (pos < len && HTTP_IS_WS(buf[pos]))
            pos++;
        vstart = vend = pos;
        while (pos < len && HTTP_IS(buf[pos], HTTP_C_FIELD)) {
            if (!HTTP_IS_WS(buf[pos]))
                vend = pos + 1;
            pos++;
        }
        if (pos == len)
            return HTTP_PARTIAL;
        if (buf[pos] != '\r')
            return HTTP_ERR_BAD_REQUEST; /* NUL, bare LF, other CTLs, DEL */
        if (pos + 1 == len)
            return HTTP_PARTIAL;
        if (buf[pos + 1] != '\n')
            return HTTP_ERR_BAD_REQUEST;
        pos += 2;

        f = &h->hdrs[h->n++];
        f->name = buf + name;
        f->name_len = name_len;
        f->value = buf + vstart;
        f->value_len = vend - vstart;
        f->flags = 0;
        rc = http_on_field(h, f);
        if (rc != 0)
            return rc;
    }
}

/* Matches "HTTP/1.0" or "HTTP/1.1" at h->pos and then `end` (CR for a request, SP or CR for a
 * status line; the terminator is left for the caller). Returns 0 and sets h->minor, HTTP_PARTIAL,
 * HTTP_ERR_VERSION for another protocol or version, or HTTP_ERR_BAD_REQUEST for junk. */
static int http_parse_version(struct http_head *h)
{
    static const char pfx[] = "HTTP/1.";
    const char *buf = h->buf;
    size_t i, pos = h->pos;
    unsigned char c;

    for (i = 0; i < sizeof(pfx) - 1; i++) {
        if (pos + i == h->len)
            return HTTP_PARTIAL;
        c = (unsigned char)buf[pos + i];
        if (c != (unsigned char)pfx[i])
            return (HTTP_IS(c, HTTP_C_TCHAR) || c == '/') ? HTTP_ERR_VERSION : HTTP_ERR_BAD_REQUEST;
    }
    pos += i;
    if (pos == h->len)
        return HTTP_PARTIAL;
    c = (unsigned char)buf[pos];
    if (c != '0' && c != '1')
        return HTTP_IS(c, HTTP_C_TCHAR) ? HTTP_ERR_VERSION : HTTP_ERR_BAD_REQUEST;
    h->minor = c - '0';
    pos++;
    if (pos == h->len)
        return HTTP_PARTIAL;
    c = (unsigned char)buf[pos];
    if (c >= '0' && c <= '9')
        return HTTP_ERR_VERSION; /* "HTTP/1.10" */
    h->pos = pos;
    return 0;
}

/* Expects CRLF at h->pos. */
static int http_expect_crlf(struct http_head *h)
{
    if (h->pos == h->len)
        return HTTP_PARTIAL;
    if (h->buf[h->pos] != '\r')
        return HTTP_ERR_BAD_REQUEST;
    if (h->pos + 1 == h->len)
        return HTTP_PARTIAL;
    if (h->buf[h->pos + 1] != '\n')
        return HTTP_ERR_BAD_REQUEST;
    h->pos += 2;
    return 0;
}

static enum http_method http_method_of(const char *m, size_t n)
{
    /* Methods are case-sensitive (RFC 9110 9.1): "get" is some other method. */
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return HTTP_M_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return HTTP_M_PUT;
        break;
    case 4:
        if (memcmp(m, "HEAD", 4) == 0)
            return HTTP_M_HEAD;
        if (memcmp(m, "POST", 4) == 0)
            return HTTP_M_POST;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return HTTP_M_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return HTTP_M_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return HTTP_M_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return HTTP_M_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return HTTP_M_CONNECT;
        break;
    default:
        break;
    }
    return HTTP_M_OTHER;
}

/* RTSP (RFC 7826) reuses HTTP's syntax; its own methods on an HTTP connection are protocol
 * confusion aimed at whatever sits behind the proxy, never a request for an HTTP origin. */
static int http_is_rtsp_method(const char *m, size_t n)
{
    static const char *const rtsp[] = {
        "ANNOUNCE", "DESCRIBE", "GET_PARAMETER", "PAUSE",         "PLAY",     "PLAY_NOTIFY",
        "RECORD",   "REDIRECT", "SETUP",         "SET_PARAMETER", "TEARDOWN",
    };
    size_t i;

    if (n < 4 || n > 13)
        return 0;
    for (i = 0; i < sizeof(rtsp) / sizeof(rtsp[0]); i++) {
        if (strlen(rtsp[i]) == n && memcmp(rtsp[i], m, n) == 0)
            return 1;
    }
    return 0;
}

/* Checks the form of a request-target (RFC 9112 3.2). On success for absolute-form, *auth is
 * its authority (to compare with Host once the fields are read), else NULL. */
static int http_check_target(const char *t, size_t n, enum http_method meth, const char **auth,
                             size_t *auth_len)
{
    size_t i;

    *auth = NULL;
    *auth_len = 0;
    /* A fragment is never sent (RFC 9110 4.2.4 / 7.1); path-based rules that see "#" differently
     * than the origin does are bypassed with it (CVE-2023-45539). */
    if (memchr(t, '#', n) != NULL)
        return HTTP_ERR_BAD_REQUEST;
    if (t[0] == '/')
        return 0;
    if (n == 1 && t[0] == '*')
        return meth == HTTP_M_OPTIONS ? 0 : HTTP_ERR_BAD_REQUEST;
    if (n > 7 && http_token_eq(t, 7, "http://"))
        i = 7;
    else if (n > 8 && http_token_eq(t, 8, "https://"))
        i = 8;
    else
        return HTTP_ERR_BAD_REQUEST;
    *auth = t + i;
    while (i < n && t[i] != '/' && t[i] != '?') {
        /* No userinfo (RFC 9110 4.2.4) and nothing a Host value could not hold either. */
        if (!HTTP_IS(t[i], HTTP_C_AUTH))
            return HTTP_ERR_BAD_REQUEST;
        i++;
    }
    *auth_len = (size_t)(t + i - *auth);
    if (*auth_len == 0)
        return HTTP_ERR_BAD_REQUEST;
    return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req,
                       const struct http_limits *limits)
{
    struct http_head h;
    size_t max_headers = HTTP_DEFAULT_MAX_HEADERS, max_uri = HTTP_DEFAULT_MAX_URI;
    size_t m0, t0, stop, auth_len;
    const char *auth;
    int rc;

    if (limits != NULL && limits->max_headers != 0)
        max_headers = limits->max_headers;
    if (limits != NULL && limits->max_uri != 0)
        max_uri = limits->max_uri;
    memset(&h, 0, sizeof(h));
    h.buf = buf;
    h.len = len;
    h.is_request = 1;
    h.hdrs = req->headers;
    h.cap = req->num_headers < max_headers ? req->num_headers : max_headers;
    req->num_headers = 0;

    rc = http_skip_empty_lines(&h);
    if (rc != 0)
        return rc;

    /* method SP */
    m0 = h.pos;
    while (h.pos < len && HTTP_IS(buf[h.pos], HTTP_C_TCHAR))
        h.pos++;
    if (h.pos == len)
        return HTTP_PARTIAL;
    if (buf[h.pos] != ' ' || h.pos == m0)
        return HTTP_ERR_BAD_REQUEST;
    req->method = buf + m0;
    req->method_len = h.pos - m0;
    req->meth = http_method_of(req->method, req->method_len);
    if (req->meth == HTTP_M_CONNECT ||
        (req->meth == HTTP_M_OTHER && http_is_rtsp_method(req->method, req->method_len)))
        return HTTP_ERR_METHOD;
    h.pos++;

    /* request-target SP, bounded by max_uri so that a huge target fails before it is read. */
    t0 = h.pos;
    stop = len - t0 > max_uri ? t0 + max_uri : len;
    while (h.pos < stop && HTTP_IS(buf[h.pos], HTTP_C_TARGET))
        h.pos++;
    if (h.pos == len)
        return HTTP_PARTIAL;
    if (HTTP_IS(buf[h.pos], HTTP_C_TARGET))
        return HTTP_ERR_URI_TOO_LONG;
    if (buf[h.pos] == '\r' && h.pos > t0)
        return HTTP_ERR_VERSION; /* "GET /" CRLF: HTTP/0.9 */
    if (buf[h.pos] != ' ' || h.pos == t0)
        return HTTP_ERR_BAD_REQUEST;
    req->target = buf + t0;
    req->target_len = h.pos - t0;
    rc = http_check_target(req->target, req->target_len, req->meth, &auth, &auth_len);
    if (rc != 0)
        return rc;
    h.pos++;

    rc = http_parse_version(&h);
    if (rc == 0)
        rc = http_expect_crlf(&h);
    if (rc != 0)
        return rc;
    req->minor_version = h.minor;

    rc = http_parse_fields(&h);
    req->num_headers = h.n;
    if (rc != 0)
        return rc;

    /* RFC 9112 3.2: exactly one Host on 1.1; duplicates were refused as they arrived. */
    if (h.host_count == 0 && h.minor == 1)
        return HTTP_ERR_BAD_REQUEST;
    if (auth != NULL &&
        (h.host == NULL || h.host_len != auth_len || !http_caseeq(h.host, auth, auth_len)))
        return HTTP_ERR_BAD_REQUEST;
    if (h.pos > INT_MAX)
        return HTTP_ERR_TOO_LARGE;

    req->host = h.host;
    req->host_len = h.host_len;
    req->content_length = 0;
    if (h.te_count > 0) {
        req->framing = HTTP_BODY_CHUNKED;
    } else if (h.have_cl && h.cl > 0) {
        req->framing = HTTP_BODY_LENGTH;
        req->content_length = h.cl;
    } else {
        req->framing = HTTP_BODY_NONE;
    }
    if (h.minor == 0 && !(h.flags & HTTP_F_CONN_KEEPALIVE))
        h.flags |= HTTP_F_CONN_CLOSE;
    if (h.conn_upgrade && h.have_upgrade)
        h.flags |= HTTP_F_UPGRADE;
    req->flags = h.flags;
    if (h.conn_names)
        http_mark_connection_names(&h);
    return (int)h.pos;
}

/* The status line and fields of a response; errors are still request codes here. */
static int http_parse_response_head(struct http_head *h, struct http_response *resp)
{
    const char *buf = h->buf;
    size_t len = h->len, r0;
    int rc, status = 0, i;

    rc = http_skip_empty_lines(h);
    if (rc != 0)
        return rc;
    rc = http_parse_version(h);
    if (rc != 0)
        return rc;
    resp->minor_version = h->minor;
    if (h->pos == len)
        return HTTP_PARTIAL;
    if (buf[h->pos] != ' ')
        return HTTP_ERR_BAD_REQUEST;
    h->pos++;
    for (i = 0; i < 3; i++) {
        if (h->pos == len)
            return HTTP_PARTIAL;
        if (buf[h->pos] < '0' || buf[h->pos] > '9')
            return HTTP_ERR_BAD_REQUEST;
        status = status * 10 + (buf[h->pos] - '0');
        h->pos++;
    }
    if (status < 100 || status > 599)
        return HTTP_ERR_BAD_REQUEST;
    resp->status = status;
    if (h->pos == len)
        return HTTP_PARTIAL;
    /* RFC 9112 4 wants the SP even without a reason; "HTTP/1.1 301" CRLF is common and no less
     * clear, so it is accepted. */
    if (buf[h->pos] == ' ') {
        h->pos++;
    } else if (buf[h->pos] != '\r') {
        return HTTP_ERR_BAD_REQUEST;
    }
    r0 = h->pos;
    while (h->pos < len && HTTP_IS(buf[h->pos], HTTP_C_FIELD))
        h->pos++;
    resp->reason = buf + r0;
    resp->reason_len = h->pos - r0;
    rc = http_expect_crlf(h);
    if (rc != 0)
        return rc;
    rc = http_parse_fields(h);
    resp->num_headers = h->n;
    return rc;
}

int http_parse_response(const char *buf, size_t len, struct http_response *resp,
                        enum http_method req_method, const struct http_limits *limits)
{
    struct http_head h;
    size_t max_headers = HTTP_DEFAULT_MAX_HEADERS;
    int rc;

    if (limits != NULL && limits->max_headers != 0)
        max_headers = limits->max_headers;
    memset(&h, 0, sizeof(h));
    h.buf = buf;
    h.len = len;
    h.hdrs = resp->headers;
    h.cap = resp->num_headers < max_headers ? resp->num_headers : max_headers;
    resp->num_headers = 0;

    rc = http_parse_response_head(&h, resp);
    if (rc == HTTP_PARTIAL)
        return rc;
    /* Whatever is wrong with a response, the client sees 502 and the connection is dropped. */
    if (rc != 0 || h.pos > INT_MAX)
        return HTTP_ERR_BAD_RESPONSE;

    resp->content_length = 0;
    if (h.te_count > 0 && h.have_cl)
        h.flags |= HTTP_F_TE_AND_CL;
    /* RFC 9112 6.3, in its order. */
    if (req_method == HTTP_M_HEAD || resp->status < 200 || resp->status == 204 ||
        resp->status == 304) {
        resp->framing = HTTP_BODY_NONE;
    } else if (req_method == HTTP_M_CONNECT && resp->status < 300) {
        resp->framing = HTTP_BODY_NONE; /* a tunnel; cutover never sends CONNECT anyway */
    } else if (h.te_count > 0) {
        resp->framing = h.te_final_chunked ? HTTP_BODY_CHUNKED : HTTP_BODY_EOF;
    } else if (h.have_cl) {
        resp->framing = h.cl > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
        resp->content_length = h.cl;
    } else {
        resp->framing = HTTP_BODY_EOF;
    }
    if (h.minor == 0 && !(h.flags & HTTP_F_CONN_KEEPALIVE))
        h.flags |= HTTP_F_CONN_CLOSE;
    if (h.conn_upgrade && h.have_upgrade)
        h.flags |= HTTP_F_UPGRADE;
    resp->flags = h.flags;
    if (h.conn_names)
        http_mark_connection_names(&h);
    return (int)h.pos;
}

/* Chunked decoder states. Extension grammar (RFC 9112 7.1.1):
 * chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) */
enum {
    HTTP_CH_SIZE_START = 0, /* first hex digit of a chunk-size */
    HTTP_CH_SIZE,           /* more hex digits */
    HTTP_CH_EXT_SEMI,       /* whitespace seen: only ";" (or more BWS) may follow */
    HTTP_CH_EXT_NAME_START, /* after ";" */
    HTTP_CH_EXT_NAME,
    HTTP_CH_EXT_NAME_WS, /* whitespace after a name: "=" or ";" next */
    HTTP_CH_EXT_VAL_START,
    HTTP_CH_EXT_VAL_TOKEN,
    HTTP_CH_EXT_VAL_QUOTED,
    HTTP_CH_EXT_VAL_ESCAPE,
    HTTP_CH_EXT_VAL_END, /* after the closing quote */
    HTTP_CH_SIZE_LF,
    HTTP_CH_DATA,
    HTTP_CH_DATA_CR,
    HTTP_CH_DATA_LF,
    HTTP_CH_TRAILER_START, /* start of a trailer line or of the final CRLF */
    HTTP_CH_TRAILER_NAME,
    HTTP_CH_TRAILER_VALUE,
    HTTP_CH_TRAILER_LF,
    HTTP_CH_FINAL_LF,
    HTTP_CH_DONE,
    HTTP_CH_ERROR,
};

void http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = HTTP_CH_SIZE_START;
}

/* Trailer names that would change framing if a later hop merged trailers into the head
 * (RFC 9110 6.5.1). c->remaining holds the candidates still matching, one bit each. */
static const char http_trailer_cl[] = "content-length";
static const char http_trailer_te[] = "transfer-encoding";

static void http_trailer_name_step(struct http_chunked *c, unsigned char ch)
{
    unsigned char lc = http_lower(ch);

    if ((c->remaining & 1) &&
        (c->aux >= sizeof(http_trailer_cl) - 1 || (unsigned char)http_trailer_cl[c->aux] != lc))
        c->remaining &= ~UINT64_C(1);
    if ((c->remaining & 2) &&
        (c->aux >= sizeof(http_trailer_te) - 1 || (unsigned char)http_trailer_te[c->aux] != lc))
        c->remaining &= ~UINT64_C(2);
    c->aux++;
}

static int http_trailer_name_forbidden(const struct http_chunked *c)
{
    return ((c->remaining & 1) && c->aux == sizeof(http_trailer_cl) - 1) ||
           ((c->remaining & 2) && c->aux == sizeof(http_trailer_te) - 1);
}

/* The end of a chunk-size line's content: a CR, or a ";" starting another extension. Returns the
 * next state, or HTTP_CH_ERROR. */
static int http_ext_sep(unsigned char ch, int ws_state)
{
    if (ch == ';')
        return HTTP_CH_EXT_NAME_START;
    if (ch == '\r')
        return HTTP_CH_SIZE_LF;
    if (HTTP_IS_WS(ch))
        return ws_state;
    return HTTP_CH_ERROR;
}

ssize_t http_chunked_feed(struct http_chunked *c, const char *buf, size_t len, int *done,
                          http_chunk_data_cb on_data, void *ctx)
{
    size_t pos = 0;
    int st = c->state;

    while (pos < len && st != HTTP_CH_DONE && st != HTTP_CH_ERROR) {
        unsigned char ch = (unsigned char)buf[pos];

        if (st == HTTP_CH_DATA) {
            size_t take = len - pos;

            if ((uint64_t)take > c->remaining)
                take = (size_t)c->remaining;
            if (on_data != NULL)
                on_data(ctx, buf + pos, take);
            pos += take;
            c->remaining -= take;
            if (c->remaining == 0)
                st = HTTP_CH_DATA_CR;
            continue;
        }
        /* Everything after the digits on a size line is extension, and it is bounded. */
        if (st > HTTP_CH_SIZE && st < HTTP_CH_SIZE_LF && ch != '\r' &&
            ++c->aux > HTTP_MAX_CHUNK_EXT) {
            st = HTTP_CH_ERROR;
            break;
        }
        if (st >= HTTP_CH_TRAILER_START && st <= HTTP_CH_FINAL_LF &&
            ++c->trailers > HTTP_MAX_TRAILERS) {
            st = HTTP_CH_ERROR;
            break;
        }
        switch (st) {
        case HTTP_CH_SIZE_START:
        case HTTP_CH_SIZE:
            if (HTTP_IS(ch, HTTP_C_HEX)) {
                unsigned d =
                    ch <= '9' ? (unsigned)(ch - '0') : (unsigned)(http_lower(ch) - 'a' + 10);

                if (st == HTTP_CH_SIZE_START) {
                    c->remaining = 0;
                    c->aux = 0;
                }
                if (c->remaining > (HTTP_MAX_CHUNK_SIZE - d) >> 4 ||
                    ++c->aux > HTTP_MAX_CHUNK_DIGITS) {
                    st = HTTP_CH_ERROR;
                    break;
                }
                c->remaining = (c->remaining << 4) | d;
                st = HTTP_CH_SIZE;
            } else if (st == HTTP_CH_SIZE) {
                c->aux = 0; /* from here on it counts extension bytes */
                st = http_ext_sep(ch, HTTP_CH_EXT_SEMI);
                if (st == HTTP_CH_EXT_NAME_START || st == HTTP_CH_EXT_SEMI)
                    c->aux = 1;
            } else {
                st = HTTP_CH_ERROR; /* no digits: "\r\n", " ", "0x5" fails at the x */
            }
            break;
        case HTTP_CH_EXT_SEMI:
            st = HTTP_IS_WS(ch) ? HTTP_CH_EXT_SEMI
                 : ch == ';'    ? HTTP_CH_EXT_NAME_START
                                : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_NAME_START:
            st = HTTP_IS_WS(ch)              ? HTTP_CH_EXT_NAME_START
                 : HTTP_IS(ch, HTTP_C_TCHAR) ? HTTP_CH_EXT_NAME
                                             : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_NAME:
            if (HTTP_IS(ch, HTTP_C_TCHAR))
                break;
            st = ch == '=' ? HTTP_CH_EXT_VAL_START : http_ext_sep(ch, HTTP_CH_EXT_NAME_WS);
            break;
        case HTTP_CH_EXT_NAME_WS:
            st = HTTP_IS_WS(ch) ? HTTP_CH_EXT_NAME_WS
                 : ch == '='    ? HTTP_CH_EXT_VAL_START
                 : ch == ';'    ? HTTP_CH_EXT_NAME_START
                                : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_VAL_START:
            st = HTTP_IS_WS(ch)              ? HTTP_CH_EXT_VAL_START
                 : HTTP_IS(ch, HTTP_C_TCHAR) ? HTTP_CH_EXT_VAL_TOKEN
                 : ch == '"'                 ? HTTP_CH_EXT_VAL_QUOTED
                                             : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_VAL_TOKEN:
            if (!HTTP_IS(ch, HTTP_C_TCHAR))
                st = http_ext_sep(ch, HTTP_CH_EXT_SEMI);
            break;
        case HTTP_CH_EXT_VAL_QUOTED:
            st = ch == '"'                    ? HTTP_CH_EXT_VAL_END
                 : ch == '\\'                 ? HTTP_CH_EXT_VAL_ESCAPE
                 : HTTP_IS(ch, HTTP_C_QDTEXT) ? HTTP_CH_EXT_VAL_QUOTED
                                              : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_VAL_ESCAPE:
            st = HTTP_IS(ch, HTTP_C_FIELD) ? HTTP_CH_EXT_VAL_QUOTED : HTTP_CH_ERROR;
            break;
        case HTTP_CH_EXT_VAL_END:
            st = http_ext_sep(ch, HTTP_CH_EXT_SEMI);
            break;
        case HTTP_CH_SIZE_LF:
            if (ch != '\n') {
                st = HTTP_CH_ERROR;
            } else if (c->remaining == 0) {
                c->aux = 0;
                st = HTTP_CH_TRAILER_START;
            } else {
                st = HTTP_CH_DATA;
            }
            break;
        case HTTP_CH_DATA_CR:
            st = ch == '\r' ? HTTP_CH_DATA_LF : HTTP_CH_ERROR;
            break;
        case HTTP_CH_DATA_LF:
            st = ch == '\n' ? HTTP_CH_SIZE_START : HTTP_CH_ERROR;
            break;
        case HTTP_CH_TRAILER_START:
            if (ch == '\r') {
                st = HTTP_CH_FINAL_LF;
            } else if (HTTP_IS(ch, HTTP_C_TCHAR)) {
                c->remaining = 3;
                c->aux = 0;
                http_trailer_name_step(c, ch);
                st = HTTP_CH_TRAILER_NAME;
            } else {
                st = HTTP_CH_ERROR; /* obs-fold, leading whitespace, bare LF, empty name */
            }
            break;
        case HTTP_CH_TRAILER_NAME:
            if (HTTP_IS(ch, HTTP_C_TCHAR))
                http_trailer_name_step(c, ch);
            else if (ch == ':' && !http_trailer_name_forbidden(c))
                st = HTTP_CH_TRAILER_VALUE;
            else
                st = HTTP_CH_ERROR;
            break;
        case HTTP_CH_TRAILER_VALUE:
            st = ch == '\r'                  ? HTTP_CH_TRAILER_LF
                 : HTTP_IS(ch, HTTP_C_FIELD) ? HTTP_CH_TRAILER_VALUE
                                             : HTTP_CH_ERROR;
            break;
        case HTTP_CH_TRAILER_LF:
            st = ch == '\n' ? HTTP_CH_TRAILER_START : HTTP_CH_ERROR;
            break;
        case HTTP_CH_FINAL_LF:
            st = ch == '\n' ? HTTP_CH_DONE : HTTP_CH_ERROR;
            break;
        default:
            st = HTTP_CH_ERROR;
            break;
        }
        if (st != HTTP_CH_ERROR)
            pos++;
    }
    c->state = st;
    if (done != NULL)
        *done = st == HTTP_CH_DONE;
    if (st == HTTP_CH_ERROR)
        return HTTP_ERR_BAD_REQUEST;
    return (ssize_t)pos;
}
