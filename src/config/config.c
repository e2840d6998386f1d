/* The YAML configuration read into struct config (see config.h). libfyaml builds the document
 * tree; this file walks it carrying the dotted key path, so every error names file:line, the
 * key, what was expected and what was found. The first error stops the walk; the partly filled
 * config is then freed with config_free, which is why every array is allocated zeroed at its
 * final size before it is filled. Control thread only. */
#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/duration.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "http/vhost.h"
#include "net/addr.h"
#include "net/cidr.h"
#include "net/tls.h"

/* A config file larger than this is a mistake (or not a config file). */
#define CONFIG_FILE_MAX (16u << 20)
/* Dotted key paths are built from names of at most 64 characters, a few levels deep. */
#define KEY_PATH_MAX 320
/* Found values are quoted in messages up to this many characters. */
#define SHOW_MAX 60
#define NAME_MAX_LEN 64

#define WHAT_DURATION "a duration like 500ms, 1s, 5m, 1m30s"
#define WHAT_ADDR "an address HOST:PORT like 127.0.0.1:8080"

/* An address some listener binds, kept to find two listeners on the same address. */
struct listener {
    char host[64];
    int family;
    int port;
    char path[KEY_PATH_MAX];
    int line;
    bool shared; /* a service's listen with hosts, path_prefix or default: may be shared */
};

struct ctx {
    const char *name;    /* the file name used in messages */
    const char *basedir; /* directory relative paths are taken from; NULL: leave them */
    char *err;
    size_t errlen;
    struct config *cfg;
    size_t capwarnings;
    struct listener *listeners;
    size_t nlisteners;
    int tokens_line; /* of admin.tokens_file, when set */
};

/* A value found under a key or in a list. node is NULL when the key has no value ("key:").
   line is the value's own line for a scalar, else the line of the key that holds it, which is
   where a reader looks for a map or list and also the "parent line" of its missing keys. */
struct item {
    struct fy_node *node;
    int line;
};

/* ---- nodes, lines and messages ---- */

static int scalar_line(struct fy_node *n)
{
    struct fy_token *t = fy_node_get_scalar_token(n);
    const struct fy_mark *m = t != NULL ? fy_token_start_mark(t) : NULL;
    return m != NULL ? m->line + 1 : 0;
}

/* libfyaml 0.7 has no public start mark for maps and lists, so their line is that of the first
   scalar inside them; an empty one takes fallback. */
static int node_line(struct fy_node *n, int fallback)
{
    void *iter = NULL;
    int line = 0;

    if (n == NULL)
        return fallback;
    switch (fy_node_get_type(n)) {
    case FYNT_SCALAR:
        line = scalar_line(n);
        break;
    case FYNT_MAPPING: {
        struct fy_node_pair *p = fy_node_mapping_iterate(n, &iter);
        if (p != NULL)
            line = node_line(fy_node_pair_key(p), node_line(fy_node_pair_value(p), 0));
        break;
    }
    case FYNT_SEQUENCE:
        line = node_line(fy_node_sequence_iterate(n, &iter), 0);
        break;
    }
    return line > 0 ? line : fallback;
}

static struct item item_of_pair(struct fy_node_pair *p)
{
    struct fy_node *k = fy_node_pair_key(p), *v = fy_node_pair_value(p);
    struct item it = {v, node_line(k, 1)};
    if (v != NULL && fy_node_get_type(v) == FYNT_SCALAR && scalar_line(v) > 0)
        it.line = scalar_line(v);
    return it;
}

static bool is_null(struct fy_node *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    size_t len;
    const char *s;

    if (n == NULL)
        return true;
    if (fy_node_get_type(n) != FYNT_SCALAR || fy_node_get_style(n) != FYNS_PLAIN)
        return false;
    s = fy_node_get_scalar(n, &len);
    if (s == NULL)
        return true;
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        if (strlen(nulls[i]) == len && memcmp(nulls[i], s, len) == 0)
            return true;
    return false;
}

static bool is_alias(struct fy_node *n)
{
    return n != NULL && fy_node_get_type(n) == FYNT_SCALAR && fy_node_is_alias(n);
}

/* Writes what n is, for "got ...": a quoted scalar (shortened, control bytes as '?'), or the
   kind of node. Returns buf. */
static const char *describe(struct fy_node *n, char *buf, size_t n_buf)
{
    size_t len, shown, o = 0;
    const char *s;

    if (is_null(n))
        return "an empty value";
    if (fy_node_get_type(n) == FYNT_MAPPING)
        return "a map";
    if (fy_node_get_type(n) == FYNT_SEQUENCE)
        return "a list";
    s = fy_node_get_scalar(n, &len);
    if (s == NULL)
        return "an empty value";
    shown = len > SHOW_MAX ? SHOW_MAX : len;
    if (n_buf < shown + 16)
        return "a value";
    if (is_alias(n)) {
        memcpy(buf, "an alias '*", 11);
        o = 11;
    } else {
        buf[o++] = '\'';
    }
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)s[i];
        char shown_ch = s[i];
        if (ch < 0x20 || ch == 0x7f)
            shown_ch = '?';
        buf[o++] = shown_ch;
    }
    if (shown < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

static void fail_msg(struct ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "FILE:LINE: " and the formatted message into the caller's error buffer. */
static void fail_msg(struct ctx *c, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->err == NULL || c->errlen == 0)
        return;
    n = snprintf(c->err, c->errlen, "%s:%d: ", c->name, line);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
}

/* Reports an error and evaluates to -EINVAL, so callers can `return fail(...)`. A macro rather
   than a variadic function returning the code, so that static analysers see the result is
   never 0. */
#define fail(c, line, ...) (fail_msg((c), (line), __VA_ARGS__), -EINVAL)

/* "PATH: expected WHAT, got FOUND" at the item's line. */
static int fail_type(struct ctx *c, const struct item *it, const char *path, const char *what)
{
    char buf[SHOW_MAX + 32];
    return fail(c, it->line, "%s: expected %s, got %s", path, what,
                describe(it->node, buf, sizeof(buf)));
}

/* "PATH.KEY: missing, expected WHAT" at the line of the map that lacks the key. */
static int fail_missing(struct ctx *c, int line, const char *path, const char *key,
                        const char *what)
{
    return fail(c, line, "%s.%s: missing, expected %s", path, key, what);
}

static void warn(struct ctx *c, int line, const char *key, size_t keylen, const char *path)
{
    struct config *cfg = c->cfg;
    int shown = keylen > SHOW_MAX ? SHOW_MAX : (int)keylen;

    if (cfg->nwarnings + 1 >= c->capwarnings) {
        c->capwarnings = c->capwarnings ? c->capwarnings * 2 : 8;
        cfg->warnings = xrealloc(cfg->warnings, c->capwarnings * sizeof(*cfg->warnings));
    }
    cfg->warnings[cfg->nwarnings++] =
        xasprintf("%s:%d: unknown key '%.*s%s' in %s (ignored)", c->name, line, shown, key,
                  (size_t)shown < keylen ? "..." : "", path);
    cfg->warnings[cfg->nwarnings] = NULL;
}

/* Appends len bytes of s to the NUL-terminated buf of size n at offset *o, cutting at the end.
   Key paths are built from names of at most 64 characters, so the cut only ever shortens a
   message about an absurd input. */
static void path_append(char *buf, size_t n, size_t *o, const char *s, size_t len)
{
    if (*o + 1 >= n)
        return;
    if (len > n - 1 - *o)
        len = n - 1 - *o;
    memcpy(buf + *o, s, len);
    *o += len;
    buf[*o] = '\0';
}

/* Writes "path.key" into buf (or "key" at the top level), key shortened to SHOW_MAX. Returns
   buf. */
static const char *subpath_n(char *buf, size_t n, const char *path, const char *key, size_t keylen)
{
    size_t o = 0;

    buf[0] = '\0';
    path_append(buf, n, &o, path, strlen(path));
    if (*path)
        path_append(buf, n, &o, ".", 1);
    path_append(buf, n, &o, key, keylen > SHOW_MAX ? SHOW_MAX : keylen);
    return buf;
}

static const char *subpath(char *buf, size_t n, const char *path, const char *key)
{
    return subpath_n(buf, n, path, key, strlen(key));
}

/* Writes "path[i]" into buf. Returns buf. */
static const char *subindex(char *buf, size_t n, const char *path, size_t i)
{
    char num[24];
    size_t o = 0;
    int w = snprintf(num, sizeof(num), "[%zu]", i);

    buf[0] = '\0';
    path_append(buf, n, &o, path, strlen(path));
    path_append(buf, n, &o, num, w > 0 ? (size_t)w : 0);
    return buf;
}

/* ---- maps ---- */

static bool key_is(struct fy_node *k, const char *key)
{
    size_t len;
    const char *s;

    if (k == NULL || fy_node_get_type(k) != FYNT_SCALAR || is_alias(k))
        return false;
    s = fy_node_get_scalar(k, &len);
    return s != NULL && len == strlen(key) && memcmp(s, key, len) == 0;
}

/* Looks key up in map. Returns true and fills *out when present (even with an empty value). */
static bool map_find(struct fy_node *map, const char *key, struct item *out)
{
    void *iter = NULL;
    struct fy_node_pair *p;

    while ((p = fy_node_mapping_iterate(map, &iter)) != NULL) {
        if (key_is(fy_node_pair_key(p), key)) {
            *out = item_of_pair(p);
            return true;
        }
    }
    return false;
}

/* Checks that it holds a map whose keys are all plain strings, and records a warning for each
   key not listed in known (NULL-terminated). */
static int expect_map(struct ctx *c, const struct item *it, const char *path,
                      const char *const *known)
{
    void *iter = NULL;
    struct fy_node_pair *p;

    if (it->node == NULL || fy_node_get_type(it->node) != FYNT_MAPPING)
        return fail_type(c, it, path, "a map");
    while ((p = fy_node_mapping_iterate(it->node, &iter)) != NULL) {
        struct fy_node *k = fy_node_pair_key(p);
        size_t len = 0;
        const char *s = NULL;
        bool found = false;

        if (k != NULL && fy_node_get_type(k) == FYNT_SCALAR && !is_alias(k) && !is_null(k))
            s = fy_node_get_scalar(k, &len);
        if (s == NULL) {
            struct item ki = {k, node_line(k, it->line)};
            return fail_type(c, &ki, *path ? path : "top level", "keys that are plain strings");
        }
        for (size_t i = 0; known[i] != NULL && !found; i++)
            found = strlen(known[i]) == len && memcmp(known[i], s, len) == 0;
        if (!found)
            warn(c, node_line(k, it->line), s, len, *path ? path : "the top level");
    }
    return 0;
}

/* ---- scalars ---- */

/* Copies the text of a scalar (quoted or not; empty allowed) into *out. */
static int get_text(struct ctx *c, const struct item *it, const char *path, const char *what,
                    char **out)
{
    struct fy_node *n = it->node;
    size_t len;
    const char *s;

    if (n == NULL || fy_node_get_type(n) != FYNT_SCALAR || is_alias(n) || is_null(n))
        return fail_type(c, it, path, what);
    s = fy_node_get_scalar(n, &len);
    if (s == NULL || memchr(s, '\0', len) != NULL)
        return fail_type(c, it, path, what);
    *out = xstrndup(s, len);
    return 0;
}

/* Like get_text, replacing *out (freed first), and refusing an empty string. */
static int get_string(struct ctx *c, const struct item *it, const char *path, const char *what,
                      char **out)
{
    char *s = NULL;
    int rc = get_text(c, it, path, what, &s);
    if (rc != 0)
        return rc;
    if (*s == '\0') {
        free(s);
        return fail_type(c, it, path, what);
    }
    free(*out);
    *out = s;
    return 0;
}

/* YAML's true or false, and nothing else: "yes", "on" or 1 are refused rather than guessed. */
static int get_bool(struct ctx *c, const struct item *it, const char *path, bool *out)
{
    static const char what[] = "true or false";
    char *s = NULL;
    int rc = get_text(c, it, path, what, &s);

    if (rc != 0)
        return rc;
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
        *out = s[0] == 't';
        free(s);
        return 0;
    }
    free(s);
    return fail_type(c, it, path, what);
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Parses a decimal integer in lo..hi; no sign, no junk, no exponent. */
static int get_uint(struct ctx *c, const struct item *it, const char *path, uint64_t lo,
                    uint64_t hi, uint64_t *out)
{
    char what[96], *s = NULL, *end;
    unsigned long long v;
    int rc;

    if (hi == UINT64_MAX)
        snprintf(what, sizeof(what), "an integer >= %llu", (unsigned long long)lo);
    else
        snprintf(what, sizeof(what), "an integer from %llu to %llu", (unsigned long long)lo,
                 (unsigned long long)hi);
    rc = get_text(c, it, path, what, &s);
    if (rc != 0)
        return rc;
    if (!all_digits(s))
        goto bad;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        goto bad;
    free(s);
    *out = v;
    return 0;
bad:
    free(s);
    return fail_type(c, it, path, what);
}

static int get_int(struct ctx *c, const struct item *it, const char *path, int lo, int hi, int *out)
{
    uint64_t v;
    int rc = get_uint(c, it, path, (uint64_t)lo, (uint64_t)hi, &v);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

/* A byte count: a decimal integer, optionally followed by KiB, MiB or GiB. */
static int get_size(struct ctx *c, const struct item *it, const char *path, uint64_t lo,
                    uint64_t hi, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"KiB", 10}, {"MiB", 20}, {"GiB", 30}};
    char what[128], *s = NULL, *end;
    unsigned long long v;
    unsigned shift = 0;
    int rc;

    snprintf(what, sizeof(what), "a size in bytes from %llu to %llu (or with KiB, MiB, GiB)",
             (unsigned long long)lo, (unsigned long long)hi);
    rc = get_text(c, it, path, what, &s);
    if (rc != 0)
        return rc;
    errno = 0;
    v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
    if (!(*s >= '0' && *s <= '9') || errno != 0)
        goto bad;
    if (*end != '\0') {
        size_t i;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (strcmp(end, units[i].suffix) == 0)
                break;
        if (i == sizeof(units) / sizeof(units[0]))
            goto bad;
        shift = units[i].shift;
    }
    if (v > (UINT64_MAX >> shift) || (v << shift) < lo || (v << shift) > hi)
        goto bad;
    free(s);
    *out = v << shift;
    return 0;
bad:
    free(s);
    return fail_type(c, it, path, what);
}

/* A decimal number (no hex, no inf/nan) in the interval described by what. */
static int get_double(struct ctx *c, const struct item *it, const char *path, double lo,
                      bool lo_open, double hi, bool hi_open, const char *what, double *out)
{
    char *s = NULL, *end;
    double v;
    int rc = get_text(c, it, path, what, &s);

    if (rc != 0)
        return rc;
    if (*s == '\0' || strspn(s, "0123456789.eE+-") != strlen(s) || *s == '+' || *s == '-')
        goto bad;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        goto bad;
    if (lo_open ? v <= lo : v < lo)
        goto bad;
    if (hi_open ? v >= hi : v > hi)
        goto bad;
    free(s);
    *out = v;
    return 0;
bad:
    free(s);
    return fail_type(c, it, path, what);
}

/* A duration of at least min_ms milliseconds. */
static int get_duration(struct ctx *c, const struct item *it, const char *path, uint64_t min_ms,
                        uint64_t *out)
{
    char *s = NULL, what[96];
    uint64_t ms;
    int rc = get_text(c, it, path, WHAT_DURATION, &s);

    if (rc != 0)
        return rc;
    rc = duration_parse(s, &ms);
    free(s);
    if (rc == -ERANGE)
        return fail_type(c, it, path, "a duration of at most 100 years");
    if (rc != 0)
        return fail_type(c, it, path, WHAT_DURATION);
    if (ms < min_ms) {
        char min[32];
        snprintf(what, sizeof(what), "a duration of at least %s",
                 duration_format(min_ms, min, sizeof(min)));
        return fail_type(c, it, path, what);
    }
    *out = ms;
    return 0;
}

/* An address HOST:PORT accepted by addr_parse; *ss may be NULL. */
static int get_addr(struct ctx *c, const struct item *it, const char *path, char **out,
                    struct sockaddr_storage *ss)
{
    struct sockaddr_storage tmp;
    socklen_t len;
    char *s = NULL;
    int rc = get_text(c, it, path, WHAT_ADDR, &s);

    if (rc != 0)
        return rc;
    if (addr_parse(s, ss != NULL ? ss : &tmp, &len) != 0) {
        free(s);
        return fail_type(c, it, path, WHAT_ADDR);
    }
    free(*out);
    *out = s;
    return 0;
}

/* Returns a heap copy of p, prefixed with the config file's directory when p is relative
   (leading "./" dropped). Without a base directory (config_load_string) p is kept as is, which
   keeps it relative to the current directory. */
static char *resolve_path(const struct ctx *c, const char *p)
{
    const char *rest = p;

    if (p[0] == '/' || c->basedir == NULL)
        return xstrdup(p);
    while (rest[0] == '.' && rest[1] == '/') {
        rest += 2;
        while (*rest == '/')
            rest++;
    }
    if (*rest == '\0' || strcmp(rest, ".") == 0)
        return xstrdup(c->basedir);
    if (strcmp(c->basedir, "/") == 0)
        return xasprintf("/%s", rest);
    return xasprintf("%s/%s", c->basedir, rest);
}

static void resolve_in_place(const struct ctx *c, char **p)
{
    if (*p != NULL) {
        char *r = resolve_path(c, *p);
        free(*p);
        *p = r;
    }
}

/* Replaces *out with the file or directory path in it, taken relative to the config file's
   directory when it is relative. */
static int get_file_path(struct ctx *c, const struct item *it, const char *path, const char *what,
                         char **out)
{
    int rc = get_string(c, it, path, what, out);

    if (rc == 0)
        resolve_in_place(c, out);
    return rc;
}

/* A list of strings, stored NULL-terminated in *out (replaced) with its length in *n. Items
   may be empty strings unless nonempty_items; the list itself must not be empty when
   nonempty_list. */
static int get_string_list(struct ctx *c, const struct item *it, const char *path, const char *what,
                           bool nonempty_list, bool nonempty_items, char ***out, size_t *n)
{
    struct fy_node *seq = it->node, *el;
    void *iter = NULL;
    size_t count, i = 0;
    char **list;

    if (seq == NULL || fy_node_get_type(seq) != FYNT_SEQUENCE)
        return fail_type(c, it, path, what);
    count = (size_t)fy_node_sequence_item_count(seq);
    if (count == 0 && nonempty_list)
        return fail_type(c, it, path, what);
    list = xcalloc(count + 1, sizeof(*list));
    *out = list;
    *n = count;
    while ((el = fy_node_sequence_iterate(seq, &iter)) != NULL && i < count) {
        char ip[KEY_PATH_MAX];
        struct item ei = {el, node_line(el, it->line)};
        int rc;

        subindex(ip, sizeof(ip), path, i);
        if (nonempty_items)
            rc = get_string(c, &ei, ip, "a non-empty string", &list[i]);
        else
            rc = get_text(c, &ei, ip, "a string", &list[i]);
        if (rc != 0)
            return rc;
        i++;
    }
    return 0;
}

/* ---- names ---- */

/* Names follow one rule everywhere (core/text): a token's name is also the actor it acts as. */
static bool valid_name(const char *s, size_t len)
{
    return text_is_name(s, len);
}

/* An HTTP token (RFC 9110 tchar): what header and cookie names are made of. */
static bool valid_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL)))
            return false;
    }
    return true;
}

static bool valid_env_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

/* Reads the key of p as a name of [A-Za-z0-9._-]{1,64} into *out. */
static int get_name(struct ctx *c, struct fy_node_pair *p, const char *path, char **out)
{
    struct fy_node *k = fy_node_pair_key(p);
    struct item ki = {k, node_line(k, 1)};
    size_t len = 0;
    const char *s = NULL;

    if (k != NULL && fy_node_get_type(k) == FYNT_SCALAR && !is_alias(k))
        s = fy_node_get_scalar(k, &len);
    if (s == NULL || !valid_name(s, len))
        return fail_type(c, &ki, path, "names of 1 to 64 characters from A-Z a-z 0-9 . _ -");
    *out = xstrndup(s, len);
    return 0;
}

/* ---- listeners ---- */

static bool is_wildcard(const struct listener *l)
{
    return strcmp(l->host, "0.0.0.0") == 0 || strcmp(l->host, "::") == 0;
}

/* Two listeners collide when they would bind the same port on overlapping addresses: the same
   host, or a wildcard of the other's family ("::" covers IPv4 too on a dual-stack host). */
static bool listeners_collide(const struct listener *a, const struct listener *b)
{
    if (a->port != b->port)
        return false;
    if (strcmp(a->host, b->host) == 0)
        return true;
    if (strcmp(a->host, "::") == 0 || strcmp(b->host, "::") == 0)
        return true;
    return a->family == b->family && (is_wildcard(a) || is_wildcard(b));
}

static int add_listener(struct ctx *c, const struct item *it, const char *path, const char *addr,
                        bool shared)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct listener l = {0};

    if (addr_parse(addr, &ss, &len) != 0)
        return fail_type(c, it, path, WHAT_ADDR);
    l.family = ss.ss_family;
    addr_format_host((struct sockaddr *)&ss, l.host, sizeof(l.host));
    l.port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                     : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(l.path, sizeof(l.path), "%s", path);
    l.line = it->line;
    l.shared = shared;
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct listener *o = &c->listeners[i];
        /* Services that route by host or path share one socket: the same address exactly. */
        if (shared && o->shared && o->port == l.port && o->family == l.family &&
            strcmp(o->host, l.host) == 0)
            continue;
        if (listeners_collide(o, &l)) {
            char buf[SHOW_MAX + 32];
            return fail(c, it->line,
                        "%s: expected an address no other listener uses, got %s (%s at line %d "
                        "binds it too; services share a listen address when each has hosts, "
                        "path_prefix or default: true)",
                        path, describe(it->node, buf, sizeof(buf)), o->path, o->line);
        }
    }
    c->listeners = xrealloc(c->listeners, (c->nlisteners + 1) * sizeof(*c->listeners));
    c->listeners[c->nlisteners++] = l;
    return 0;
}

/* ---- services ---- */

static int parse_health(struct ctx *c, const struct item *it, const char *path,
                        struct config_health *h)
{
    static const char *const known[] = {
        "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", NULL,
    };
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "path", &v)) {
        rc = get_string(c, &v, subpath(p, sizeof(p), path, "path"), "a URL path starting with /",
                        &h->path);
        if (rc != 0)
            return rc;
        /* The path is written into the health check's request line as it is: a space, CR,
           LF or control byte there would end the line early or add a header. */
        bool ok = h->path[0] == '/';
        for (const char *q = h->path; ok && *q; q++)
            ok = (unsigned char)*q > 0x20 && (unsigned char)*q < 0x7f;
        if (!ok)
            return fail_type(c, &v, p,
                             "a URL path starting with / without spaces or control characters "
                             "(percent-encode them)");
    }
    if (map_find(it->node, "interval", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "interval"), 1, &h->interval_ms)))
        return rc;
    if (map_find(it->node, "timeout", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "timeout"), 1, &h->timeout_ms)))
        return rc;
    if (map_find(it->node, "healthy_threshold", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "healthy_threshold"), 1, 1000000,
                      &h->healthy_threshold)))
        return rc;
    if (map_find(it->node, "unhealthy_threshold", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "unhealthy_threshold"), 1, 1000000,
                      &h->unhealthy_threshold)))
        return rc;
    return 0;
}

static int parse_timeouts(struct ctx *c, const struct item *it, const char *path,
                          struct config_timeouts *t)
{
    static const char *const known[] = {
        "client_header", "client_idle", "upstream_connect", "upstream_response", NULL,
    };
    uint64_t *const dst[] = {&t->client_header_ms, &t->client_idle_ms, &t->upstream_connect_ms,
                             &t->upstream_response_ms};
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]); i++)
        if (map_find(it->node, known[i], &v) &&
            (rc = get_duration(c, &v, subpath(p, sizeof(p), path, known[i]), 1, dst[i])))
            return rc;
    return 0;
}

static int parse_limits(struct ctx *c, const struct item *it, const char *path,
                        struct config_limits *l)
{
    static const char *const known[] = {
        "max_header_bytes",  "max_headers", "max_uri_bytes", "max_body_bytes", "max_connections",
        "hold_max_requests", NULL,
    };
    char p[KEY_PATH_MAX];
    struct item v;
    uint64_t x;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "max_header_bytes", &v)) {
        if ((rc =
                 get_size(c, &v, subpath(p, sizeof(p), path, "max_header_bytes"), 1, SIZE_MAX, &x)))
            return rc;
        l->max_header_bytes = (size_t)x;
    }
    if (map_find(it->node, "max_headers", &v)) {
        if ((rc = get_uint(c, &v, subpath(p, sizeof(p), path, "max_headers"), 1, 65535, &x)))
            return rc;
        l->max_headers = (size_t)x;
    }
    if (map_find(it->node, "max_uri_bytes", &v)) {
        if ((rc = get_size(c, &v, subpath(p, sizeof(p), path, "max_uri_bytes"), 1, SIZE_MAX, &x)))
            return rc;
        l->max_uri = (size_t)x;
    }
    if (map_find(it->node, "max_body_bytes", &v) &&
        (rc = get_size(c, &v, subpath(p, sizeof(p), path, "max_body_bytes"), 0, UINT64_MAX,
                       &l->max_body_bytes)))
        return rc;
    if (map_find(it->node, "max_connections", &v)) {
        if ((rc = get_uint(c, &v, subpath(p, sizeof(p), path, "max_connections"), 0, 10000000, &x)))
            return rc;
        l->max_connections = (size_t)x;
    }
    if (map_find(it->node, "hold_max_requests", &v)) {
        if ((rc =
                 get_uint(c, &v, subpath(p, sizeof(p), path, "hold_max_requests"), 0, 1000000, &x)))
            return rc;
        l->hold_max_requests = (size_t)x;
    }
    return 0;
}

static int parse_port_range(struct ctx *c, const struct item *it, const char *path,
                            struct config_run *r)
{
    static const char what[] = "a port range LO-HI with 1 <= LO <= HI <= 65535";
    char *s = NULL, *dash;
    long lo, hi;
    int rc = get_text(c, it, path, what, &s);

    if (rc != 0)
        return rc;
    dash = strchr(s, '-');
    if (dash == NULL)
        goto bad;
    *dash = '\0';
    if (!all_digits(s) || !all_digits(dash + 1) || strlen(s) > 5 || strlen(dash + 1) > 5)
        goto bad;
    lo = strtol(s, NULL, 10);
    hi = strtol(dash + 1, NULL, 10);
    if (lo < 1 || hi > 65535 || lo > hi)
        goto bad;
    r->port_lo = (int)lo;
    r->port_hi = (int)hi;
    free(s);
    return 0;
bad:
    free(s);
    return fail_type(c, it, path, what);
}

static int parse_signal(struct ctx *c, const struct item *it, const char *path, int *out)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"TERM", SIGTERM}, {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"HUP", SIGHUP},
                {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"KILL", SIGKILL}};
    static const char what[] = "one of TERM, INT, QUIT, HUP, USR1, USR2, KILL";
    char *s = NULL;
    const char *name;
    int rc = get_text(c, it, path, what, &s);

    if (rc != 0)
        return rc;
    name = strncmp(s, "SIG", 3) == 0 ? s + 3 : s;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (strcmp(name, sigs[i].name) == 0) {
            *out = sigs[i].sig;
            free(s);
            return 0;
        }
    }
    free(s);
    return fail_type(c, it, path, what);
}

static int parse_env(struct ctx *c, const struct item *it, const char *path, struct config_run *r)
{
    static const char *const none[] = {NULL};
    struct fy_node_pair *p;
    void *iter = NULL;
    size_t count, i = 0;
    int rc;

    /* Every key is meaningful here, so expect_map must not warn: check the map shape by hand. */
    if (it->node == NULL || fy_node_get_type(it->node) != FYNT_MAPPING)
        return expect_map(c, it, path, none);
    count = (size_t)fy_node_mapping_item_count(it->node);
    r->env = xcalloc(count + 1, sizeof(*r->env));
    while ((p = fy_node_mapping_iterate(it->node, &iter)) != NULL && i < count) {
        struct fy_node *k = fy_node_pair_key(p);
        struct item ki = {k, node_line(k, it->line)}, vi = item_of_pair(p);
        char *name = NULL, *value = NULL, ep[KEY_PATH_MAX];

        rc = get_string(c, &ki, path, "environment variable names like NAME_1", &name);
        if (rc != 0)
            return rc;
        if (!valid_env_name(name)) {
            free(name);
            return fail_type(c, &ki, path, "environment variable names like NAME_1");
        }
        subpath(ep, sizeof(ep), path, name);
        rc = get_text(c, &vi, ep, "a string", &value);
        if (rc != 0) {
            free(name);
            return rc;
        }
        r->env[i++] = xasprintf("%s=%s", name, value);
        free(name);
        free(value);
    }
    return 0;
}

static int parse_run(struct ctx *c, const struct item *it, const char *path, struct config_run *r)
{
    static const char *const known[] = {
        "command",          "env",         "cwd",          "instances",
        "port_range",       "stop_signal", "stop_timeout", "rollback_window",
        "stop_with_daemon", NULL,
    };
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "command", &v))
        return fail_missing(c, it->line, path, "command", "a non-empty list of strings");
    rc = get_string_list(c, &v, subpath(p, sizeof(p), path, "command"),
                         "a non-empty list of strings", true, false, &r->command, &r->argc);
    if (rc != 0)
        return rc;
    if (r->command[0][0] == '\0')
        return fail(c, v.line, "%s[0]: expected a program to run, got ''", p);
    if (map_find(it->node, "env", &v) &&
        (rc = parse_env(c, &v, subpath(p, sizeof(p), path, "env"), r)))
        return rc;
    if (map_find(it->node, "cwd", &v)) {
        if ((rc = get_file_path(c, &v, subpath(p, sizeof(p), path, "cwd"), "a directory path",
                                &r->cwd)))
            return rc;
    }
    if (map_find(it->node, "instances", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "instances"), 1, 1024, &r->instances)))
        return rc;
    if (map_find(it->node, "port_range", &v) &&
        (rc = parse_port_range(c, &v, subpath(p, sizeof(p), path, "port_range"), r)))
        return rc;
    if (map_find(it->node, "stop_signal", &v) &&
        (rc = parse_signal(c, &v, subpath(p, sizeof(p), path, "stop_signal"), &r->stop_signal)))
        return rc;
    if (map_find(it->node, "stop_timeout", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "stop_timeout"), 0,
                           &r->stop_timeout_ms)))
        return rc;
    if (map_find(it->node, "rollback_window", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "rollback_window"), 0,
                           &r->rollback_window_ms)))
        return rc;
    if (map_find(it->node, "stop_with_daemon", &v) &&
        (rc = get_bool(c, &v, subpath(p, sizeof(p), path, "stop_with_daemon"),
                       &r->stop_with_daemon)))
        return rc;
    return 0;
}

/* `strategy: {type: rolling, max_surge: N, max_unavailable: M}` or `{type: blue_green}`; checked
 * against run.instances by the caller once both are read. */
static int parse_strategy(struct ctx *c, const struct item *it, const char *path,
                          struct config_strategy *st)
{
    static const char *const known[] = {"type", "max_surge", "max_unavailable", NULL};
    static const char what[] = "rolling or blue_green";
    char p[KEY_PATH_MAX];
    struct item v;
    char *type = NULL;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "type", &v))
        return fail_missing(c, it->line, path, "type", what);
    if ((rc = get_text(c, &v, subpath(p, sizeof(p), path, "type"), what, &type)) != 0)
        return rc;
    if (strcmp(type, "rolling") == 0)
        st->kind = CONFIG_STRATEGY_ROLLING;
    else if (strcmp(type, "blue_green") == 0 || strcmp(type, "blue-green") == 0)
        st->kind = CONFIG_STRATEGY_BLUE_GREEN;
    else
        rc = fail_type(c, &v, p, what);
    free(type);
    if (rc != 0)
        return rc;
    if (map_find(it->node, "max_surge", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "max_surge"), 0, 1024, &st->max_surge)))
        return rc;
    if (map_find(it->node, "max_unavailable", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "max_unavailable"), 0, 1024,
                      &st->max_unavailable)))
        return rc;
    if (st->kind == CONFIG_STRATEGY_ROLLING && st->max_surge == 0 && st->max_unavailable == 0)
        return fail(c, it->line,
                    "%s: expected max_surge or max_unavailable above 0 (with both 0 no "
                    "instance can ever be replaced), got both 0",
                    path);
    return 0;
}

static int parse_outlier(struct ctx *c, const struct item *it, const char *path,
                         struct config_outlier *o)
{
    static const char *const known[] = {"consecutive_failures", "ejection", NULL};
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "consecutive_failures", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "consecutive_failures"), 0, 1000000,
                      &o->consecutive_failures)))
        return rc;
    if (map_find(it->node, "ejection", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "ejection"), 1, &o->ejection_ms)))
        return rc;
    return 0;
}

static int parse_sticky(struct ctx *c, const struct item *it, const char *path,
                        struct config_sticky *st)
{
    static const char *const known[] = {"cookie", "header", "source", NULL};
    static const char what[] = "a cookie or header name (letters, digits, !#$%&'*+-.^_`|~)";
    char p[KEY_PATH_MAX];
    struct item ck, hd, src, *v;
    bool has_cookie, has_header, has_source;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    has_cookie = map_find(it->node, "cookie", &ck);
    has_header = map_find(it->node, "header", &hd);
    has_source = map_find(it->node, "source", &src);
    if (has_cookie + has_header + has_source != 1)
        return fail(c, it->line, "%s: expected exactly one of cookie, header or source, got %s",
                    path, has_cookie + has_header + has_source == 0 ? "none" : "several");
    if (has_source) {
        char *s = NULL;
        subpath(p, sizeof(p), path, "source");
        if ((rc = get_text(c, &src, p, "true or false", &s)) != 0)
            return rc;
        bool on = strcmp(s, "true") == 0, off = strcmp(s, "false") == 0;
        free(s);
        if (!on && !off)
            return fail_type(c, &src, p, "true or false");
        /* false is the default: each request is split on its own. */
        st->kind = on ? CONFIG_STICKY_SOURCE : CONFIG_STICKY_NONE;
        return 0;
    }
    v = has_cookie ? &ck : &hd;
    subpath(p, sizeof(p), path, has_cookie ? "cookie" : "header");
    if ((rc = get_string(c, v, p, what, &st->name)) != 0)
        return rc;
    if (!valid_token(st->name, strlen(st->name)))
        return fail_type(c, v, p, what);
    st->kind = has_cookie ? CONFIG_STICKY_COOKIE : CONFIG_STICKY_HEADER;
    return 0;
}

static int parse_protocol(struct ctx *c, const struct item *it, const char *path,
                          enum config_protocol *out)
{
    char *s = NULL;
    int rc = get_text(c, it, path, "http or tcp", &s);

    if (rc != 0)
        return rc;
    if (strcmp(s, "http") == 0)
        *out = CONFIG_PROTO_HTTP;
    else if (strcmp(s, "tcp") == 0)
        *out = CONFIG_PROTO_TCP;
    else
        rc = fail_type(c, it, path, "http or tcp");
    free(s);
    return rc;
}

static void service_defaults(struct config_service *s)
{
    s->protocol = CONFIG_PROTO_HTTP;
    s->health.path = xstrdup("/healthz");
    s->health.interval_ms = 1000;
    s->health.timeout_ms = 1000;
    s->health.healthy_threshold = 2;
    s->health.unhealthy_threshold = 3;
    s->drain_timeout_ms = 30000;
    s->deploy_timeout_ms = 60000;
    s->run.instances = 1;
    s->run.port_lo = 20000;
    s->run.port_hi = 20999;
    s->run.stop_signal = SIGTERM;
    s->run.stop_timeout_ms = 10000;
    s->strategy.kind = CONFIG_STRATEGY_BLUE_GREEN;
    s->strategy.max_surge = 1;
    s->strategy.max_unavailable = 0;
    s->outlier.consecutive_failures = 5;
    s->outlier.ejection_ms = 10000;
    s->sticky.kind = CONFIG_STICKY_NONE;
    s->timeouts.client_header_ms = 10000;
    s->timeouts.client_idle_ms = 60000;
    s->timeouts.upstream_connect_ms = 5000;
    s->timeouts.upstream_response_ms = 60000;
    s->limits.max_header_bytes = 65536;
    s->limits.max_headers = 100;
    s->limits.max_uri = 8192;
    s->limits.max_body_bytes = 0;
    s->limits.hold_max_requests = 10000;
}

static int parse_targets(struct ctx *c, const struct item *it, const char *path,
                         struct config_service *s)
{
    struct fy_node *el;
    void *iter = NULL;
    int rc;

    /* `targets:` with nothing after it reads as "no targets yet", like `targets: []`. */
    if (is_null(it->node)) {
        s->targets = xcalloc(1, sizeof(*s->targets));
        return 0;
    }
    rc = get_string_list(c, it, path, "a list of addresses HOST:PORT", false, true, &s->targets,
                         &s->ntargets);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < s->ntargets && (el = fy_node_sequence_iterate(it->node, &iter)); i++) {
        struct item ei = {el, node_line(el, it->line)};
        struct sockaddr_storage ss;
        socklen_t len;
        char ip[KEY_PATH_MAX];

        subindex(ip, sizeof(ip), path, i);
        if (addr_parse(s->targets[i], &ss, &len) != 0)
            return fail_type(c, &ei, ip, WHAT_ADDR);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->targets[i], s->targets[j]) == 0)
                return fail_type(c, &ei, ip, "each target listed once");
    }
    return 0;
}

static int parse_trusted_proxies(struct ctx *c, const struct item *it, const char *path,
                                 struct config_service *s)
{
    static const char what[] = "an address or CIDR like 10.0.0.0/8 or ::1/128";
    struct fy_node *el;
    void *iter = NULL;
    int rc;

    rc = get_string_list(c, it, path, "a list of addresses or CIDRs like 10.0.0.0/8", false, true,
                         &s->trusted_proxies, &s->ntrusted_proxies);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < s->ntrusted_proxies && (el = fy_node_sequence_iterate(it->node, &iter));
         i++) {
        struct item ei = {el, node_line(el, it->line)};
        struct cidr range;
        char ip[KEY_PATH_MAX];

        subindex(ip, sizeof(ip), path, i);
        if (cidr_parse(s->trusted_proxies[i], &range) != 0)
            return fail_type(c, &ei, ip, what);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->trusted_proxies[i], s->trusted_proxies[j]) == 0)
                return fail_type(c, &ei, ip, "each range listed once");
    }
    return 0;
}

/* `trusted_proxies` and `proxy_protocol`: who may tell cutover the client's address, and
   whether the listeners expect a PROXY header. Checked together, since one without the other
   is either a hole (PROXY headers believed from anyone) or does nothing (tcp has no
   X-Forwarded-For). */
static int parse_client_address(struct ctx *c, const struct item *svc, const char *path,
                                struct config_service *s)
{
    char p[KEY_PATH_MAX];
    struct item v, pp = {0};
    int rc;

    if (map_find(svc->node, "trusted_proxies", &v)) {
        subpath(p, sizeof(p), path, "trusted_proxies");
        if ((rc = parse_trusted_proxies(c, &v, p, s)) != 0)
            return rc;
    } else {
        s->trusted_proxies = xcalloc(1, sizeof(*s->trusted_proxies));
    }
    if (map_find(svc->node, "proxy_protocol", &pp)) {
        subpath(p, sizeof(p), path, "proxy_protocol");
        if ((rc = get_bool(c, &pp, p, &s->proxy_protocol)) != 0)
            return rc;
        if (s->proxy_protocol && s->ntrusted_proxies == 0)
            return fail(c, pp.line,
                        "%s: true needs trusted_proxies, the balancers allowed to send PROXY "
                        "headers (a header from any other peer closes its connection), got none",
                        p);
    }
    if (s->protocol == CONFIG_PROTO_TCP && s->ntrusted_proxies > 0 && !s->proxy_protocol) {
        map_find(svc->node, "trusted_proxies", &v);
        return fail(c, v.line,
                    "%s.trusted_proxies: with protocol tcp, expected proxy_protocol: true too "
                    "(a TCP stream has no X-Forwarded-For to read), got proxy_protocol false",
                    path);
    }
    return 0;
}

/* One `cert` + `key` pair of a `tls` map: both paths, then the files themselves (net/tls.h
   checks them: readable, key not readable by others, matching, not expired). */
static int parse_tls_pair(struct ctx *c, const struct item *it, const char *path,
                          struct config_tls_cert *out)
{
    static const char *const known[] = {"cert", "key", NULL};
    char p[KEY_PATH_MAX], err[1024];
    struct item v;
    int rc;

    out->line = it->line;
    /* The one-pair form's map was checked by parse_tls, with certificates among its keys. */
    if (strchr(path, '[') != NULL && (rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "cert", &v))
        return fail_missing(c, it->line, path, "cert", "a PEM certificate file");
    if ((rc = get_file_path(c, &v, subpath(p, sizeof(p), path, "cert"), "a file path", &out->cert)))
        return rc;
    if (!map_find(it->node, "key", &v))
        return fail_missing(c, it->line, path, "key", "a PEM private key file");
    if ((rc = get_file_path(c, &v, subpath(p, sizeof(p), path, "key"), "a file path", &out->key)))
        return rc;
    if (tls_check_pair(out->cert, out->key, err, sizeof(err)) < 0)
        return fail(c, it->line, "%s: %s", path, err);
    return 0;
}

/* `tls: {cert, key}` or `tls: {certificates: [{cert, key}, ...]}` (the first is the default,
   the others are chosen by SNI). */
static int parse_tls(struct ctx *c, const struct item *it, const char *path, struct config_tls *t)
{
    static const char *const known[] = {"cert", "key", "certificates", NULL};
    char p[KEY_PATH_MAX];
    struct item v, dummy;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "certificates", &v)) {
        t->certs = xcalloc(1, sizeof(*t->certs));
        t->ncerts = 1;
        return parse_tls_pair(c, it, path, &t->certs[0]);
    }
    subpath(p, sizeof(p), path, "certificates");
    if (map_find(it->node, "cert", &dummy) || map_find(it->node, "key", &dummy))
        return fail(c, it->line, "%s: expected either cert and key or certificates, got both",
                    path);
    if (v.node == NULL || fy_node_get_type(v.node) != FYNT_SEQUENCE ||
        fy_node_sequence_item_count(v.node) == 0)
        return fail_type(c, &v, p, "a list of {cert, key} maps, the first the default");
    size_t n = (size_t)fy_node_sequence_item_count(v.node);
    t->certs = xcalloc(n, sizeof(*t->certs));
    void *iter = NULL;
    struct fy_node *el;
    for (size_t i = 0; i < n && (el = fy_node_sequence_iterate(v.node, &iter)) != NULL; i++) {
        struct item ei = {el, node_line(el, v.line)};
        char ip[KEY_PATH_MAX];
        t->ncerts = i + 1;
        subindex(ip, sizeof(ip), p, i);
        if ((rc = parse_tls_pair(c, &ei, ip, &t->certs[i])) != 0)
            return rc;
    }
    return 0;
}

int config_same_listen(const char *a, const char *b)
{
    struct sockaddr_storage sa, sb;
    socklen_t la, lb;
    if (a == NULL || b == NULL || addr_parse(a, &sa, &la) != 0 || addr_parse(b, &sb, &lb) != 0)
        return 0;
    return la == lb && memcmp(&sa, &sb, la) == 0;
}

/* `hosts`, `path_prefix`, `default`: how a request on a shared listener finds the service. */
static int parse_routing(struct ctx *c, const struct item *svc, const char *path,
                         struct config_service *s)
{
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if (map_find(svc->node, "hosts", &v)) {
        subpath(p, sizeof(p), path, "hosts");
        if ((rc = get_string_list(c, &v, p,
                                  "a list of host names like example.com or "
                                  "*.example.com",
                                  true, true, &s->hosts, &s->nhosts)) != 0)
            return rc;
        struct fy_node *el;
        void *iter = NULL;
        for (size_t i = 0; i < s->nhosts && (el = fy_node_sequence_iterate(v.node, &iter)); i++) {
            struct item ei = {el, node_line(el, v.line)};
            char ip[KEY_PATH_MAX];
            subindex(ip, sizeof(ip), p, i);
            if (!vhost_pattern_valid(s->hosts[i], strlen(s->hosts[i])))
                return fail_type(c, &ei, ip,
                                 "a host name like example.com or *.example.com (no port, "
                                 "no scheme)");
            for (size_t j = 0; j < i; j++)
                if (strcasecmp(s->hosts[i], s->hosts[j]) == 0)
                    return fail_type(c, &ei, ip, "each host listed once");
        }
    } else {
        s->hosts = xcalloc(1, sizeof(*s->hosts));
    }
    if (map_find(svc->node, "path_prefix", &v)) {
        subpath(p, sizeof(p), path, "path_prefix");
        if ((rc = get_string(c, &v, p, "a path like /api", &s->path_prefix)) != 0)
            return rc;
        if (!vhost_prefix_valid(s->path_prefix))
            return fail_type(c, &v, p,
                             "a path like /api (starting with /, without ?, #, % or spaces)");
    }
    if (map_find(svc->node, "default", &v) &&
        (rc = get_bool(c, &v, subpath(p, sizeof(p), path, "default"), &s->is_default)) != 0)
        return rc;
    if (s->routed && s->protocol == CONFIG_PROTO_TCP)
        return fail(c, svc->line,
                    "%s: hosts, path_prefix and default route HTTP requests; expected none with "
                    "protocol tcp",
                    path);
    return 0;
}

/* Services that share a listen address: their routes must not overlap (the same host pattern
 * and path prefix in two of them), at most one is the default, and what belongs to the socket
 * (proxy_protocol, trusted_proxies) is the same for all. */
static int check_shared_listens(struct ctx *c, struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *a = &cfg->services[i];
        for (size_t j = i + 1; j < cfg->nservices; j++) {
            const struct config_service *b = &cfg->services[j];
            if (!a->routed || !b->routed || !config_same_listen(a->listen, b->listen))
                continue;
            if (a->is_default && b->is_default)
                return fail(c, b->line,
                            "services.%s.default: expected one default service per listen "
                            "address, got a second one (services.%s at line %d is the default "
                            "of %s)",
                            b->name, a->name, a->line, a->listen);
            for (size_t x = 0; x < (a->nhosts ? a->nhosts : 1); x++)
                for (size_t y = 0; y < (b->nhosts ? b->nhosts : 1); y++) {
                    const char *ha = a->nhosts ? a->hosts[x] : NULL;
                    const char *hb = b->nhosts ? b->hosts[y] : NULL;
                    if ((a->nhosts == 0 && a->path_prefix == NULL) ||
                        (b->nhosts == 0 && b->path_prefix == NULL))
                        continue; /* a default alone takes no route */
                    if (vhost_routes_overlap(ha, a->path_prefix, hb, b->path_prefix))
                        return fail(c, b->line,
                                    "services.%s: routes overlap services.%s (line %d) on %s: "
                                    "both take host %s, path %s; expected different hosts or "
                                    "path_prefix",
                                    b->name, a->name, a->line, a->listen, hb ? hb : "(any)",
                                    b->path_prefix ? b->path_prefix : "/");
                }
            if ((a->tls.ncerts > 0) != (b->tls.ncerts > 0))
                return fail(c, b->line,
                            "services.%s: shares %s with services.%s (line %d); expected tls on "
                            "every service of a shared listener or on none (the socket speaks "
                            "one protocol), got it on one only",
                            b->name, a->listen, a->name, a->line);
            int same_tp = a->ntrusted_proxies == b->ntrusted_proxies;
            for (size_t k = 0; same_tp && k < a->ntrusted_proxies; k++)
                same_tp = strcmp(a->trusted_proxies[k], b->trusted_proxies[k]) == 0;
            if (a->proxy_protocol != b->proxy_protocol || !same_tp)
                return fail(c, b->line,
                            "services.%s: shares %s with services.%s (line %d); expected the "
                            "same proxy_protocol and trusted_proxies (they belong to the "
                            "socket), got different ones",
                            b->name, a->listen, a->name, a->line);
        }
    }
    return 0;
}

static void free_tls(struct config_tls *t)
{
    for (size_t i = 0; t->certs != NULL && i < t->ncerts; i++) {
        free(t->certs[i].cert);
        free(t->certs[i].key);
    }
    free(t->certs);
    t->certs = NULL;
    t->ncerts = 0;
}

/* `on_live_failure: rollback | alert`. */
static int parse_on_live_failure(struct ctx *c, const struct item *it, const char *path,
                                 enum config_on_live_failure *out)
{
    static const char what[] = "rollback or alert";
    char *v = NULL;
    int rc = get_text(c, it, path, what, &v);
    if (rc != 0)
        return rc;
    if (strcmp(v, "rollback") == 0)
        *out = CONFIG_ON_LIVE_FAILURE_ROLLBACK;
    else if (strcmp(v, "alert") == 0)
        *out = CONFIG_ON_LIVE_FAILURE_ALERT;
    else
        rc = fail(c, it->line, "%s: expected %s, got '%s'", path, what, v);
    free(v);
    return rc;
}

const char *config_risk_name(enum config_risk r)
{
    static const char *const names[CONFIG_NRISKS] = {"low", "medium", "high"};
    return r < CONFIG_NRISKS ? names[r] : "?";
}

int config_risk_parse(const char *s)
{
    for (int r = 0; s != NULL && r < CONFIG_NRISKS; r++)
        if (strcmp(s, config_risk_name((enum config_risk)r)) == 0)
            return r;
    return -1;
}

/* risk_policy: {require: BOOL, low|medium|high: {ticket: BOOL, approval_first: BOOL}} */
static int parse_risk_policy(struct ctx *c, const struct item *it, const char *path,
                             struct config_risk_policy *rp)
{
    static const char *const known[] = {"require", "low", "medium", "high", NULL};
    static const char *const rule_keys[] = {"ticket", "approval_first", NULL};
    struct item v, w;
    char p[KEY_PATH_MAX], q[KEY_PATH_MAX];
    int rc;
    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "require", &v) &&
        (rc = get_bool(c, &v, subpath(p, sizeof(p), path, "require"), &rp->require)))
        return rc;
    for (int r = 0; r < CONFIG_NRISKS; r++) {
        const char *name = config_risk_name((enum config_risk)r);
        if (!map_find(it->node, name, &v))
            continue;
        subpath(p, sizeof(p), path, name);
        if ((rc = expect_map(c, &v, p, rule_keys)) != 0)
            return rc;
        if (map_find(v.node, "ticket", &w) &&
            (rc = get_bool(c, &w, subpath(q, sizeof(q), p, "ticket"), &rp->rule[r].ticket)))
            return rc;
        if (map_find(v.node, "approval_first", &w) &&
            (rc = get_bool(c, &w, subpath(q, sizeof(q), p, "approval_first"),
                           &rp->rule[r].approval_first)))
            return rc;
    }
    return 0;
}

static int parse_service(struct ctx *c, struct fy_node_pair *pair, struct config_service *s)
{
    static const char *const known[] = {
        "listen",
        "preview_listen",
        "protocol",
        "health_check",
        "drain_timeout",
        "deploy_timeout",
        "targets",
        "run",
        "sticky",
        "timeouts",
        "limits",
        "plan",
        "outlier_detection",
        "strategy",
        "trusted_proxies",
        "proxy_protocol",
        "on_live_failure",
        "hosts",
        "path_prefix",
        "default",
        "version",
        "risk_policy",
        "tls",
        NULL,
    };
    struct item it = item_of_pair(pair), v;
    char path[KEY_PATH_MAX], p[KEY_PATH_MAX];
    int rc;

    service_defaults(s);
    if ((rc = get_name(c, pair, "services", &s->name)) != 0)
        return rc;
    snprintf(path, sizeof(path), "services.%s", s->name);
    it.line = node_line(fy_node_pair_key(pair), 1);
    s->line = it.line;
    if ((rc = expect_map(c, &it, path, known)) != 0)
        return rc;

    if (!map_find(it.node, "listen", &v))
        return fail_missing(c, it.line, path, "listen", WHAT_ADDR);
    subpath(p, sizeof(p), path, "listen");
    struct item r;
    s->routed = map_find(it.node, "hosts", &r) || map_find(it.node, "path_prefix", &r) ||
                map_find(it.node, "default", &r);
    if ((rc = get_addr(c, &v, p, &s->listen, NULL)) ||
        (rc = add_listener(c, &v, p, s->listen, s->routed)))
        return rc;
    if (map_find(it.node, "preview_listen", &v)) {
        subpath(p, sizeof(p), path, "preview_listen");
        if ((rc = get_addr(c, &v, p, &s->preview_listen, NULL)) ||
            (rc = add_listener(c, &v, p, s->preview_listen, false)))
            return rc;
    }
    if (map_find(it.node, "protocol", &v) &&
        (rc = parse_protocol(c, &v, subpath(p, sizeof(p), path, "protocol"), &s->protocol)))
        return rc;
    if (map_find(it.node, "on_live_failure", &v) &&
        (rc = parse_on_live_failure(c, &v, subpath(p, sizeof(p), path, "on_live_failure"),
                                    &s->on_live_failure)))
        return rc;
    if (map_find(it.node, "health_check", &v) &&
        (rc = parse_health(c, &v, subpath(p, sizeof(p), path, "health_check"), &s->health)))
        return rc;
    if (map_find(it.node, "outlier_detection", &v) &&
        (rc = parse_outlier(c, &v, subpath(p, sizeof(p), path, "outlier_detection"), &s->outlier)))
        return rc;
    if (map_find(it.node, "drain_timeout", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "drain_timeout"), 0,
                           &s->drain_timeout_ms)))
        return rc;
    if (map_find(it.node, "deploy_timeout", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "deploy_timeout"), 1,
                           &s->deploy_timeout_ms)))
        return rc;
    if (map_find(it.node, "targets", &v)) {
        if ((rc = parse_targets(c, &v, subpath(p, sizeof(p), path, "targets"), s)))
            return rc;
    } else {
        s->targets = xcalloc(1, sizeof(*s->targets));
    }
    if (map_find(it.node, "run", &v) &&
        (rc = parse_run(c, &v, subpath(p, sizeof(p), path, "run"), &s->run)))
        return rc;
    if (map_find(it.node, "strategy", &v)) {
        subpath(p, sizeof(p), path, "strategy");
        if ((rc = parse_strategy(c, &v, p, &s->strategy)))
            return rc;
        /* Batches replace processes cutover runs: there is nothing to replace otherwise. */
        if (s->strategy.kind == CONFIG_STRATEGY_ROLLING && s->run.command == NULL)
            return fail(c, v.line,
                        "%s: expected a run: section with strategy rolling (it replaces the "
                        "instances cutover runs), got none",
                        p);
        if (s->strategy.kind == CONFIG_STRATEGY_ROLLING &&
            (s->strategy.max_surge > s->run.instances ||
             s->strategy.max_unavailable > s->run.instances))
            return fail(c, v.line,
                        "%s: expected max_surge and max_unavailable at most run.instances (%d), "
                        "got %d and %d",
                        p, s->run.instances, s->strategy.max_surge, s->strategy.max_unavailable);
    }
    if (map_find(it.node, "sticky", &v)) {
        if ((rc = parse_sticky(c, &v, subpath(p, sizeof(p), path, "sticky"), &s->sticky)))
            return rc;
        /* A TCP stream has no cookies or headers to be sticky on. */
        if (s->protocol == CONFIG_PROTO_TCP &&
            (s->sticky.kind == CONFIG_STICKY_COOKIE || s->sticky.kind == CONFIG_STICKY_HEADER))
            return fail(c, v.line,
                        "%s: expected no sticky cookie or header with protocol tcp, "
                        "got one",
                        p);
    }
    if (map_find(it.node, "timeouts", &v) &&
        (rc = parse_timeouts(c, &v, subpath(p, sizeof(p), path, "timeouts"), &s->timeouts)))
        return rc;
    if (map_find(it.node, "limits", &v) &&
        (rc = parse_limits(c, &v, subpath(p, sizeof(p), path, "limits"), &s->limits)))
        return rc;
    if (map_find(it.node, "plan", &v)) {
        subpath(p, sizeof(p), path, "plan");
        if ((rc = get_string(c, &v, p, "the name of a plan", &s->plan)))
            return rc;
        const struct config_plan *pl = config_plan_find(c->cfg, s->plan);
        if (pl == NULL)
            return fail_type(c, &v, p, "the name of a plan defined under plans");
        /* A TCP stream has no requests to copy nor answers to compare. */
        for (size_t i = 0; s->protocol == CONFIG_PROTO_TCP && i < pl->nsteps; i++)
            if (pl->steps[i].kind == CONFIG_STEP_MIRROR || pl->steps[i].kind == CONFIG_STEP_LOAD)
                return fail(c, v.line,
                            "%s: plan '%s' has a %s step (line %d), which needs protocol "
                            "http, got protocol tcp",
                            p, pl->name,
                            pl->steps[i].kind == CONFIG_STEP_MIRROR ? "mirror" : "load",
                            pl->steps[i].line);
        /* The baseline is started from run.command, beside the canary's instances. */
        if (pl->analysis.baseline && s->run.command == NULL)
            return fail(c, v.line,
                        "%s: plan '%s' has analysis.baseline (line %d), which needs a run: "
                        "section (cutover starts the baseline's instances), got none",
                        p, pl->name, pl->analysis.baseline_line);
        if (pl->analysis.baseline && s->strategy.kind == CONFIG_STRATEGY_ROLLING)
            return fail(c, v.line,
                        "%s: plan '%s' has analysis.baseline (line %d), which needs strategy "
                        "blue_green (a rolling replacement splits users by instances), got "
                        "rolling",
                        p, pl->name, pl->analysis.baseline_line);
    }
    if (map_find(it.node, "risk_policy", &v) &&
        (rc =
             parse_risk_policy(c, &v, subpath(p, sizeof(p), path, "risk_policy"), &s->risk_policy)))
        return rc;
    if (map_find(it.node, "version", &v)) {
        static const char what[] = "a version name (1-64 of A-Za-z0-9._-)";
        subpath(p, sizeof(p), path, "version");
        if ((rc = get_string(c, &v, p, what, &s->version)))
            return rc;
        if (!text_is_name(s->version, strlen(s->version)))
            return fail_type(c, &v, p, what);
        if (s->ntargets == 0)
            return fail_type(c, &v, p,
                             "absent: `version` names the configured targets, and "
                             "there are none");
    }
    if ((rc = parse_routing(c, &it, path, s)) != 0)
        return rc;
    if ((rc = parse_client_address(c, &it, path, s)) != 0)
        return rc;
    if (map_find(it.node, "tls", &v)) {
        subpath(p, sizeof(p), path, "tls");
        if (s->protocol == CONFIG_PROTO_TCP)
            return fail(c, v.line,
                        "%s: expected protocol http (TLS is terminated for HTTP only), "
                        "got protocol tcp",
                        p);
        if (s->proxy_protocol)
            return fail(c, v.line, "%s: cannot be combined with proxy_protocol: true", p);
        if ((rc = parse_tls(c, &v, p, &s->tls)) != 0)
            return rc;
    }
    return 0;
}

/* ---- plans ---- */

/* Splits "NAME<sep>VALUE" (spaces around both trimmed) into two heap strings; NAME must be a
   token and VALUE non-empty. */
static void free_strv(char **v);

static bool split_pair(const char *s, char sep, char **name, char **value)
{
    const char *at = strchr(s, sep), *ne, *vs, *ve;

    if (at == NULL)
        return false;
    ne = at;
    while (ne > s && (ne[-1] == ' ' || ne[-1] == '\t'))
        ne--;
    while (*s == ' ' || *s == '\t')
        s++;
    vs = at + 1;
    while (*vs == ' ' || *vs == '\t')
        vs++;
    ve = vs + strlen(vs);
    while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    if (ne <= s || !valid_token(s, (size_t)(ne - s)) || ve == vs)
        return false;
    for (const char *q = vs; q < ve; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f || (sep == '=' && (*q == ';' || *q == ' ')))
            return false;
    *name = xstrndup(s, (size_t)(ne - s));
    *value = xstrndup(vs, (size_t)(ve - vs));
    return true;
}

/* "10.0.0.0/8", "2001:db8::/32" or a single address: what net/cidr reads. */
static bool valid_cidr(const char *s)
{
    struct cidr range;
    return cidr_parse(s, &range) == 0;
}

static int parse_step_test(struct ctx *c, const struct item *it, const char *path,
                           struct config_step *st)
{
    static const char *const known[] = {"command", "timeout", NULL};
    char p[KEY_PATH_MAX];
    struct item v;
    size_t argc;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "command", &v))
        return fail_missing(c, it->line, path, "command", "a non-empty list of strings");
    rc = get_string_list(c, &v, subpath(p, sizeof(p), path, "command"),
                         "a non-empty list of strings", true, false, &st->command, &argc);
    if (rc != 0)
        return rc;
    if (st->command[0][0] == '\0')
        return fail(c, v.line, "%s[0]: expected a program to run, got ''", p);
    if (map_find(it->node, "timeout", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "timeout"), 1, &st->timeout_ms)))
        return rc;
    return 0;
}

static int parse_step_pilot(struct ctx *c, const struct item *it, const char *path,
                            struct config_step *st)
{
    static const char *const known[] = {"header", "cookie", "source", "duration", NULL};
    static const char *const whats[] = {
        "a header like \"X-Cohort: pilot\"",
        "a cookie like \"cohort=pilot\"",
        "a source address or CIDR like 10.0.0.0/8",
    };
    static const enum config_pilot_kind kinds[] = {CONFIG_PILOT_HEADER, CONFIG_PILOT_COOKIE,
                                                   CONFIG_PILOT_SOURCE};
    char p[KEY_PATH_MAX], *s = NULL;
    struct item v, sel = {0};
    int nsel = 0, which = -1, rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    for (int i = 0; i < 3; i++) {
        if (map_find(it->node, known[i], &v)) {
            if (nsel++ == 0) {
                which = i;
                sel = v;
            }
        }
    }
    if (nsel == 0)
        return fail(c, it->line,
                    "%s: missing the pilot group, expected one of header, cookie or source", path);
    if (nsel > 1)
        return fail(c, it->line, "%s: expected exactly one of header, cookie or source, got %d",
                    path, nsel);
    subpath(p, sizeof(p), path, known[which]);
    if ((rc = get_string(c, &sel, p, whats[which], &s)) != 0)
        return rc;
    st->pilot_kind = kinds[which];
    if (st->pilot_kind == CONFIG_PILOT_SOURCE) {
        if (!valid_cidr(s)) {
            free(s);
            return fail_type(c, &sel, p, whats[which]);
        }
        st->pilot_name = s;
    } else {
        bool ok = split_pair(s, st->pilot_kind == CONFIG_PILOT_HEADER ? ':' : '=', &st->pilot_name,
                             &st->pilot_value);
        free(s);
        if (!ok)
            return fail_type(c, &sel, p, whats[which]);
    }
    if (!map_find(it->node, "duration", &v))
        return fail_missing(c, it->line, path, "duration", "a duration like 60s");
    return get_duration(c, &v, subpath(p, sizeof(p), path, "duration"), 1, &st->duration_ms);
}

static int parse_step_pause(struct ctx *c, const struct item *it, const char *path,
                            struct config_step *st)
{
    static const char *const known[] = {"duration", NULL};
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    st->duration_ms = 0;
    /* `pause:` alone and `pause: {}` both mean "until promoted". */
    if (is_null(it->node))
        return 0;
    if (fy_node_get_type(it->node) == FYNT_SCALAR && !is_alias(it->node))
        return get_duration(c, it, path, 0, &st->duration_ms);
    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "duration", &v))
        return get_duration(c, &v, subpath(p, sizeof(p), path, "duration"), 0, &st->duration_ms);
    return 0;
}

static int parse_step_approval(struct ctx *c, const struct item *it, const char *path,
                               struct config_step *st)
{
    static const char *const known[] = {"approvers", "count", "allow_self", NULL};
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "approvers", &v))
        return fail_missing(c, it->line, path, "approvers", "a non-empty list of names");
    rc = get_string_list(c, &v, subpath(p, sizeof(p), path, "approvers"),
                         "a non-empty list of names", true, true, &st->approvers, &st->napprovers);
    if (rc != 0)
        return rc;
    for (size_t i = 1; i < st->napprovers; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(st->approvers[i], st->approvers[j]) == 0)
                return fail(c, v.line, "%s[%zu]: expected each approver once, got '%.*s' twice", p,
                            i, SHOW_MAX, st->approvers[i]);
    st->count = 1;
    if (map_find(it->node, "count", &v)) {
        char what[96];
        uint64_t n;

        subpath(p, sizeof(p), path, "count");
        snprintf(what, sizeof(what), "an integer from 1 to %zu (the number of approvers)",
                 st->napprovers);
        if (get_uint(c, &v, p, 1, st->napprovers, &n) != 0)
            return fail_type(c, &v, p, what);
        st->count = (int)n;
    }
    if (map_find(it->node, "allow_self", &v) &&
        (rc = get_bool(c, &v, subpath(p, sizeof(p), path, "allow_self"), &st->allow_self)))
        return rc;
    return 0;
}

/* An RFC 6901 JSON pointer that names something: "/a/b/0", with ~0 and ~1 its only escapes. */
static bool valid_json_pointer(const char *s)
{
    if (s[0] != '/')
        return false;
    for (const char *q = s; *q; q++) {
        if (*q == '~' && q[1] != '0' && q[1] != '1')
            return false;
        if ((unsigned char)*q < 0x20)
            return false;
    }
    return true;
}

/* The methods a mirror may copy, by their bit (enum http_method's value, http/parse.h). */
static const struct {
    const char *name;
    unsigned bit;
} mirror_methods[] = {
    {"GET", 1u << 1},    {"HEAD", 1u << 2},    {"POST", 1u << 3},  {"PUT", 1u << 4},
    {"DELETE", 1u << 5}, {"OPTIONS", 1u << 6}, {"PATCH", 1u << 7},
};

static int parse_step_mirror(struct ctx *c, const struct item *it, const char *path,
                             struct config_step *st)
{
    static const char *const known[] = {
        "percent", "duration",       "compare",      "headers",   "ignore_json",
        "methods", "max_body_bytes", "max_inflight", "min_pairs", "max_mismatch_rate",
        NULL,
    };
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;
    struct config_mirror *m = xcalloc(1, sizeof(*m));

    st->mirror = m;
    m->percent = 100;
    m->methods = (1u << 1) | (1u << 2);
    m->compare = CONFIG_MIRROR_STATUS | CONFIG_MIRROR_BODY;
    m->max_body_bytes = 64 * 1024;
    m->max_inflight = 64;
    m->min_pairs = 100;
    m->max_mismatch_rate = 0;
    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (map_find(it->node, "percent", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "percent"), 1, 100, &m->percent)))
        return rc;
    if (!map_find(it->node, "duration", &v))
        return fail_missing(c, it->line, path, "duration", "a duration like 60s");
    if ((rc = get_duration(c, &v, subpath(p, sizeof(p), path, "duration"), 1, &st->duration_ms)))
        return rc;
    if (map_find(it->node, "compare", &v)) {
        char **list = NULL;
        size_t n = 0;
        subpath(p, sizeof(p), path, "compare");
        rc = get_string_list(c, &v, p, "a non-empty list of status, body", true, true, &list, &n);
        m->compare = 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (strcmp(list[i], "status") == 0)
                m->compare |= CONFIG_MIRROR_STATUS;
            else if (strcmp(list[i], "body") == 0)
                m->compare |= CONFIG_MIRROR_BODY;
            else
                rc = fail(c, v.line, "%s[%zu]: expected status or body, got '%.*s'", p, i, SHOW_MAX,
                          list[i]);
        }
        free_strv(list);
        if (rc != 0)
            return rc;
    }
    if (map_find(it->node, "headers", &v)) {
        subpath(p, sizeof(p), path, "headers");
        rc = get_string_list(c, &v, p, "a list of header names", false, true, &m->headers,
                             &m->nheaders);
        if (rc != 0)
            return rc;
        if (m->nheaders > CONFIG_MIRROR_MAX_HEADERS)
            return fail(c, v.line, "%s: expected at most %d header names, got %zu", p,
                        CONFIG_MIRROR_MAX_HEADERS, m->nheaders);
        for (size_t i = 0; i < m->nheaders; i++) {
            if (!valid_token(m->headers[i], strlen(m->headers[i])))
                return fail(c, v.line, "%s[%zu]: expected a header name, got '%.*s'", p, i,
                            SHOW_MAX, m->headers[i]);
            for (char *q = m->headers[i]; *q; q++)
                *q = (char)tolower((unsigned char)*q);
        }
    }
    if (map_find(it->node, "ignore_json", &v)) {
        subpath(p, sizeof(p), path, "ignore_json");
        rc = get_string_list(c, &v, p, "a list of JSON pointers like /meta/time", false, true,
                             &m->ignore_json, &m->nignore_json);
        if (rc != 0)
            return rc;
        if (m->nignore_json > CONFIG_MIRROR_MAX_IGNORE)
            return fail(c, v.line, "%s: expected at most %d JSON pointers, got %zu", p,
                        CONFIG_MIRROR_MAX_IGNORE, m->nignore_json);
        for (size_t i = 0; i < m->nignore_json; i++)
            if (!valid_json_pointer(m->ignore_json[i]))
                return fail(c, v.line,
                            "%s[%zu]: expected a JSON pointer like /meta/time (RFC 6901), got "
                            "'%.*s'",
                            p, i, SHOW_MAX, m->ignore_json[i]);
    }
    if (map_find(it->node, "methods", &v)) {
        char **list = NULL;
        size_t n = 0;
        subpath(p, sizeof(p), path, "methods");
        rc = get_string_list(c, &v, p, "a non-empty list of methods like [GET, POST]", true, true,
                             &list, &n);
        m->methods = 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            size_t k;
            for (k = 0; k < sizeof(mirror_methods) / sizeof(mirror_methods[0]); k++)
                if (strcmp(list[i], mirror_methods[k].name) == 0)
                    break;
            if (k == sizeof(mirror_methods) / sizeof(mirror_methods[0]))
                rc = fail(c, v.line,
                          "%s[%zu]: expected one of GET, HEAD, POST, PUT, DELETE, OPTIONS, "
                          "PATCH, got '%.*s'",
                          p, i, SHOW_MAX, list[i]);
            else
                m->methods |= mirror_methods[k].bit;
        }
        free_strv(list);
        if (rc != 0)
            return rc;
    }
    if (map_find(it->node, "max_body_bytes", &v) &&
        (rc = get_size(c, &v, subpath(p, sizeof(p), path, "max_body_bytes"), 0, 1024 * 1024,
                       &m->max_body_bytes)))
        return rc;
    if (map_find(it->node, "max_inflight", &v) &&
        (rc = get_int(c, &v, subpath(p, sizeof(p), path, "max_inflight"), 1, 10000,
                      &m->max_inflight)))
        return rc;
    if (map_find(it->node, "min_pairs", &v) &&
        (rc = get_uint(c, &v, subpath(p, sizeof(p), path, "min_pairs"), 1, 100000000,
                       &m->min_pairs)))
        return rc;
    if (map_find(it->node, "max_mismatch_rate", &v) &&
        (rc = get_double(c, &v, subpath(p, sizeof(p), path, "max_mismatch_rate"), 0, false, 1,
                         false, "a number from 0 to 1", &m->max_mismatch_rate)))
        return rc;
    return 0;
}

/* A request target we send ourselves: '/' first, visible ASCII only. */
static bool valid_load_path(const char *s)
{
    if (s[0] != '/')
        return false;
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == '#')
            return false;
    return true;
}

static int parse_step_load(struct ctx *c, const struct item *it, const char *path,
                           struct config_step *st)
{
    static const char *const known[] = {"rate", "duration", "paths", "headers", NULL};
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;
    struct config_load *l = xcalloc(1, sizeof(*l));

    st->load = l;
    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "rate", &v))
        return fail_missing(c, it->line, path, "rate", "requests a second, like 20");
    if ((rc = get_int(c, &v, subpath(p, sizeof(p), path, "rate"), 1, CONFIG_LOAD_MAX_RATE,
                      &l->rate)))
        return rc;
    if (!map_find(it->node, "duration", &v))
        return fail_missing(c, it->line, path, "duration", "a duration like 60s");
    if ((rc = get_duration(c, &v, subpath(p, sizeof(p), path, "duration"), 1, &st->duration_ms)))
        return rc;
    if (map_find(it->node, "paths", &v)) {
        subpath(p, sizeof(p), path, "paths");
        rc = get_string_list(c, &v, p, "a non-empty list of paths like /api/health", true, true,
                             &l->paths, &l->npaths);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < l->npaths; i++)
            if (!valid_load_path(l->paths[i]) || strlen(l->paths[i]) > 1024)
                return fail(c, v.line,
                            "%s[%zu]: expected a path starting with / (visible ASCII, at most "
                            "1024 bytes), got '%.*s'",
                            p, i, SHOW_MAX, l->paths[i]);
    } else {
        l->paths = xcalloc(2, sizeof(*l->paths));
        l->paths[0] = xstrdup("/");
        l->npaths = 1;
    }
    if (map_find(it->node, "headers", &v)) {
        struct fy_node_pair *pair;
        void *iter = NULL;
        static const char *const any[] = {NULL};
        subpath(p, sizeof(p), path, "headers");
        if (fy_node_get_type(v.node) != FYNT_MAPPING)
            return expect_map(c, &v, p, any);
        size_t n = (size_t)fy_node_mapping_item_count(v.node);
        if (n > 32)
            return fail(c, v.line, "%s: expected at most 32 headers, got %zu", p, n);
        l->headers = xcalloc(n + 1, sizeof(*l->headers));
        while ((pair = fy_node_mapping_iterate(v.node, &iter)) != NULL) {
            char *name = NULL, *value = NULL, hp[KEY_PATH_MAX];
            struct item vi = item_of_pair(pair);
            if ((rc = get_name(c, pair, p, &name)) != 0)
                return rc;
            subpath(hp, sizeof(hp), p, name);
            if (!valid_token(name, strlen(name)) ||
                (rc = get_text(c, &vi, hp, "a header value", &value)) != 0) {
                free(name);
                return rc ? rc : fail(c, vi.line, "%s: expected a header name", hp);
            }
            for (const char *q = value; *q; q++) {
                if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                    free(name);
                    free(value);
                    return fail(c, vi.line, "%s: expected a value without control characters", hp);
                }
            }
            l->headers[l->nheaders++] = xasprintf("%s: %s", name, value);
            free(name);
            free(value);
        }
    }
    return 0;
}

static int parse_step(struct ctx *c, struct fy_node *node, int fallback_line, const char *path,
                      struct config_step *st)
{
    static const char what[] =
        "a map with one key: test, pilot, weight, pause, approval, mirror or load (and "
        "optionally owner)";
    struct item it = {node, node_line(node, fallback_line)}, v;
    struct fy_node_pair *pair;
    struct fy_node *k;
    void *iter = NULL;
    char p[KEY_PATH_MAX];
    size_t len;
    const char *kind = NULL;

    st->line = it.line;
    st->timeout_ms = 60000;
    if (node == NULL || fy_node_get_type(node) != FYNT_MAPPING)
        return fail_type(c, &it, path, what);
    /* Beside its kind, a step may name its own owner: {weight: 50, owner: NAME}. */
    int nkeys = fy_node_mapping_item_count(node);
    struct item ov;
    bool has_owner = map_find(node, "owner", &ov);
    if (nkeys != 1 + (has_owner ? 1 : 0))
        return fail_type(c, &it, path, what);
    if (has_owner) {
        char op[KEY_PATH_MAX];
        int rc = get_string(c, &ov, subpath(op, sizeof(op), path, "owner"), "a name", &st->owner);
        if (rc != 0)
            return rc;
        if (!valid_name(st->owner, strlen(st->owner)))
            return fail_type(c, &ov, op, "a name of 1-64 characters of A-Z a-z 0-9 . _ -");
    }
    do
        pair = fy_node_mapping_iterate(node, &iter);
    while (pair != NULL && key_is(fy_node_pair_key(pair), "owner"));
    v = item_of_pair(pair);
    k = fy_node_pair_key(pair);
    if (k == NULL || fy_node_get_type(k) != FYNT_SCALAR || is_alias(k) ||
        (kind = fy_node_get_scalar(k, &len)) == NULL)
        return fail_type(c, &it, path, what);
    subpath_n(p, sizeof(p), path, kind, len);
    if (key_is(k, "test")) {
        st->kind = CONFIG_STEP_TEST;
        return parse_step_test(c, &v, p, st);
    }
    if (key_is(k, "pilot")) {
        st->kind = CONFIG_STEP_PILOT;
        return parse_step_pilot(c, &v, p, st);
    }
    if (key_is(k, "weight")) {
        st->kind = CONFIG_STEP_WEIGHT;
        return get_int(c, &v, p, 0, 100, &st->weight);
    }
    if (key_is(k, "pause")) {
        st->kind = CONFIG_STEP_PAUSE;
        return parse_step_pause(c, &v, p, st);
    }
    if (key_is(k, "approval")) {
        st->kind = CONFIG_STEP_APPROVAL;
        return parse_step_approval(c, &v, p, st);
    }
    if (key_is(k, "mirror")) {
        st->kind = CONFIG_STEP_MIRROR;
        return parse_step_mirror(c, &v, p, st);
    }
    if (key_is(k, "load")) {
        st->kind = CONFIG_STEP_LOAD;
        return parse_step_load(c, &v, p, st);
    }
    struct item ki = {k, node_line(k, it.line)};
    return fail_type(c, &ki, path,
                     "a step kind: test, pilot, weight, pause, approval, mirror or load");
}

static int parse_analysis(struct ctx *c, const struct item *it, const char *path,
                          struct config_analysis *a)
{
    static const char *const known[] = {
        "interval",           "min_requests", "max_error_rate", "max_p99_latency_ratio",
        "max_p99_latency_ms", "confidence",   "baseline",       NULL,
    };
    char p[KEY_PATH_MAX];
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    a->enabled = 1;
    if (map_find(it->node, "interval", &v) &&
        (rc = get_duration(c, &v, subpath(p, sizeof(p), path, "interval"), 1, &a->interval_ms)))
        return rc;
    if (map_find(it->node, "min_requests", &v) &&
        (rc = get_uint(c, &v, subpath(p, sizeof(p), path, "min_requests"), 0, UINT64_MAX,
                       &a->min_requests)))
        return rc;
    if (map_find(it->node, "max_error_rate", &v) &&
        (rc = get_double(c, &v, subpath(p, sizeof(p), path, "max_error_rate"), 0, false, 1, false,
                         "a number from 0 to 1", &a->max_error_rate)))
        return rc;
    if (map_find(it->node, "max_p99_latency_ratio", &v) &&
        (rc = get_double(c, &v, subpath(p, sizeof(p), path, "max_p99_latency_ratio"), 0, true,
                         HUGE_VAL, true, "a number above 0", &a->max_p99_latency_ratio)))
        return rc;
    if (map_find(it->node, "max_p99_latency_ms", &v) &&
        (rc =
             get_double(c, &v, subpath(p, sizeof(p), path, "max_p99_latency_ms"), 0, true, HUGE_VAL,
                        true, "a number of milliseconds above 0", &a->max_p99_latency_ms)))
        return rc;
    if (map_find(it->node, "confidence", &v) &&
        (rc = get_double(c, &v, subpath(p, sizeof(p), path, "confidence"), 0.5, false, 1, true,
                         "a number from 0.5 up to (not including) 1", &a->confidence)))
        return rc;
    if (map_find(it->node, "baseline", &v)) {
        if ((rc = get_bool(c, &v, subpath(p, sizeof(p), path, "baseline"), &a->baseline)))
            return rc;
        a->baseline_line = v.line;
        /* A baseline only changes what the ratio gate compares with: without that gate it
         * would cost instances and decide nothing. */
        if (a->baseline && a->max_p99_latency_ratio <= 0)
            return fail(c, v.line,
                        "%s: expected max_p99_latency_ratio beside baseline: true (the gate that "
                        "compares the canary with the baseline), got none",
                        p);
    }
    return 0;
}

static int parse_on(struct ctx *c, const struct item *it, const char *path, bool allow_proceed,
                    enum config_on_failure *out)
{
    const char *what = allow_proceed ? "pause, proceed or rollback" : "rollback or pause";
    char *s = NULL;
    int rc = get_text(c, it, path, what, &s);

    if (rc != 0)
        return rc;
    if (strcmp(s, "rollback") == 0)
        *out = CONFIG_ON_ROLLBACK;
    else if (strcmp(s, "pause") == 0)
        *out = CONFIG_ON_PAUSE;
    else if (allow_proceed && strcmp(s, "proceed") == 0)
        *out = CONFIG_ON_PROCEED;
    else
        rc = fail_type(c, it, path, what);
    free(s);
    return rc;
}

static int parse_plan(struct ctx *c, struct fy_node_pair *pair, struct config_plan *pl)
{
    static const char *const known[] = {"steps",           "analysis", "on_failure",
                                        "on_inconclusive", "owner",    NULL};
    struct item it = item_of_pair(pair), v;
    char path[KEY_PATH_MAX], p[KEY_PATH_MAX];
    struct fy_node *el;
    void *iter = NULL;
    size_t i = 0;
    int rc;

    pl->analysis.interval_ms = 10000;
    pl->analysis.min_requests = 100;
    pl->analysis.max_error_rate = -1;
    pl->analysis.max_p99_latency_ratio = -1;
    pl->analysis.max_p99_latency_ms = -1;
    pl->analysis.confidence = 0.99;
    pl->on_failure = CONFIG_ON_ROLLBACK;
    pl->on_inconclusive = CONFIG_ON_PAUSE;
    if ((rc = get_name(c, pair, "plans", &pl->name)) != 0)
        return rc;
    snprintf(path, sizeof(path), "plans.%s", pl->name);
    it.line = node_line(fy_node_pair_key(pair), 1);
    pl->line = it.line;
    if ((rc = expect_map(c, &it, path, known)) != 0)
        return rc;

    if (!map_find(it.node, "steps", &v))
        return fail_missing(c, it.line, path, "steps", "a non-empty list of steps");
    subpath(p, sizeof(p), path, "steps");
    if (v.node == NULL || fy_node_get_type(v.node) != FYNT_SEQUENCE ||
        fy_node_sequence_item_count(v.node) == 0)
        return fail_type(c, &v, p, "a non-empty list of steps");
    pl->nsteps = (size_t)fy_node_sequence_item_count(v.node);
    pl->steps = xcalloc(pl->nsteps, sizeof(*pl->steps));
    while ((el = fy_node_sequence_iterate(v.node, &iter)) != NULL && i < pl->nsteps) {
        char sp[KEY_PATH_MAX];
        subindex(sp, sizeof(sp), p, i);
        if ((rc = parse_step(c, el, v.line, sp, &pl->steps[i])) != 0)
            return rc;
        i++;
    }
    if (map_find(it.node, "owner", &v)) {
        if ((rc = get_string(c, &v, subpath(p, sizeof(p), path, "owner"), "a name", &pl->owner)))
            return rc;
        if (!valid_name(pl->owner, strlen(pl->owner)))
            return fail_type(c, &v, p, "a name of 1-64 characters of A-Z a-z 0-9 . _ -");
    }
    if (map_find(it.node, "analysis", &v) &&
        (rc = parse_analysis(c, &v, subpath(p, sizeof(p), path, "analysis"), &pl->analysis)))
        return rc;
    if (map_find(it.node, "on_failure", &v) &&
        (rc = parse_on(c, &v, subpath(p, sizeof(p), path, "on_failure"), false, &pl->on_failure)))
        return rc;
    if (map_find(it.node, "on_inconclusive", &v) &&
        (rc = parse_on(c, &v, subpath(p, sizeof(p), path, "on_inconclusive"), true,
                       &pl->on_inconclusive)))
        return rc;
    return 0;
}

/* ---- top level ---- */

static int read_file(const char *path, char **buf, size_t *len);
static int parse_document(struct ctx *c, const char *buf, size_t len,
                          int (*fn)(struct ctx *, struct fy_node *));

const char *config_role_name(enum config_role role)
{
    switch (role) {
    case CONFIG_ROLE_VIEWER:
        return "viewer";
    case CONFIG_ROLE_OPERATOR:
        return "operator";
    case CONFIG_ROLE_ADMIN:
        return "admin";
    }
    return "?";
}

/* A bearer token (RFC 6750 token68 characters), long enough not to be guessed. */
static bool valid_secret(const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || n > 256)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("-._~+/=", *s) != NULL))
            return false;
    return true;
}

static int parse_token(struct ctx *c, struct fy_node_pair *pair, struct config_token *t)
{
    static const char *const known[] = {"role", "token", NULL};
    struct item it = item_of_pair(pair), v;
    char path[KEY_PATH_MAX], p[KEY_PATH_MAX], *role = NULL;
    int rc;

    if ((rc = get_name(c, pair, "tokens", &t->name)) != 0)
        return rc;
    subpath(path, sizeof(path), "tokens", t->name);
    if ((rc = expect_map(c, &it, path, known)) != 0)
        return rc;
    if (!map_find(it.node, "token", &v))
        return fail_missing(c, it.line, path, "token", "the secret the client sends");
    if ((rc = get_string(c, &v, subpath(p, sizeof(p), path, "token"), "a secret", &t->secret)))
        return rc;
    if (!valid_secret(t->secret))
        return fail(c, v.line,
                    "%s: expected 16 to 256 characters from A-Z a-z 0-9 - . _ ~ + / = (for "
                    "example the output of `openssl rand -hex 24`)",
                    p);
    if (!map_find(it.node, "role", &v))
        return fail_missing(c, it.line, path, "role", "viewer, operator or admin");
    if ((rc = get_string(c, &v, subpath(p, sizeof(p), path, "role"), "viewer, operator or admin",
                         &role)))
        return rc;
    for (enum config_role r = CONFIG_ROLE_VIEWER; r <= CONFIG_ROLE_ADMIN; r++)
        if (strcmp(role, config_role_name(r)) == 0)
            t->role = r;
    if (t->role == 0)
        rc = fail_type(c, &v, p, "viewer, operator or admin");
    free(role);
    return rc;
}

static int parse_tokens_root(struct ctx *c, struct fy_node *root)
{
    static const char *const known[] = {"tokens", NULL};
    struct config *cfg = c->cfg;
    struct item it = {root, node_line(root, 1)}, v;
    int rc;

    if (root == NULL || fy_node_get_type(root) != FYNT_MAPPING)
        return fail_type(c, &it, "top level", "a map with the key tokens");
    if ((rc = expect_map(c, &it, "", known)) != 0)
        return rc;
    if (!map_find(root, "tokens", &v) || v.node == NULL ||
        fy_node_get_type(v.node) != FYNT_MAPPING || fy_node_mapping_item_count(v.node) < 1)
        return fail(c, it.line,
                    "tokens: expected a map of at least one NAME: {role: ROLE, token: SECRET}");
    cfg->ntokens = (size_t)fy_node_mapping_item_count(v.node);
    cfg->tokens = xcalloc(cfg->ntokens, sizeof(*cfg->tokens));
    void *iter = NULL;
    struct fy_node_pair *p;
    for (size_t i = 0; (p = fy_node_mapping_iterate(v.node, &iter)) != NULL && i < cfg->ntokens;
         i++) {
        if ((rc = parse_token(c, p, &cfg->tokens[i])) != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->tokens[j].secret, cfg->tokens[i].secret) == 0)
                return fail(c, item_of_pair(p).line,
                            "tokens.%s.token: expected a secret of its own, got the one of "
                            "tokens.%s (who acted could not be told apart)",
                            cfg->tokens[i].name, cfg->tokens[j].name);
    }
    return 0;
}

/* Reads the tokens file named by admin.tokens_file; it holds secrets, so like ssh we refuse it
 * when others may read it. */
static int load_tokens(struct ctx *c, int line)
{
    const char *path = c->cfg->admin_tokens_file;
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (stat(path, &st) == -1)
        return fail(c, line, "admin.tokens_file: cannot read %s: %s", path, strerror(errno));
    if ((rc = read_file(path, &buf, &len)) != 0)
        return fail(c, line, "admin.tokens_file: cannot read %s: %s", path, strerror(-rc));
    if ((st.st_mode & 077) != 0) {
        free(buf);
        return fail(c, line,
                    "admin.tokens_file: %s is readable or writable by others (mode %04o); "
                    "expected mode 0600 (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    }
    /* Same checks and messages, with the tokens file's name and lines in them. */
    struct ctx tc = *c;
    tc.name = path;
    rc = parse_document(&tc, buf, len, parse_tokens_root);
    c->capwarnings = tc.capwarnings;
    free(buf);
    return rc;
}

static int parse_admin(struct ctx *c, const struct item *it, struct config *cfg)
{
    static const char *const known[] = {"listen",       "tokens_file", "upgrade_dir",
                                        "socket_group", "tls",         NULL};
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, "admin", known)) != 0)
        return rc;
    if (map_find(it->node, "listen", &v) &&
        ((rc = get_addr(c, &v, "admin.listen", &cfg->admin_listen, NULL)) ||
         (rc = add_listener(c, &v, "admin.listen", cfg->admin_listen, false))))
        return rc;
    if (map_find(it->node, "tokens_file", &v)) {
        if ((rc =
                 get_file_path(c, &v, "admin.tokens_file", "a file path", &cfg->admin_tokens_file)))
            return rc;
        c->tokens_line = v.line; /* read once the rest of the config is known to be right */
    }
    if (map_find(it->node, "upgrade_dir", &v)) {
        struct stat st;
        if ((rc = get_file_path(c, &v, "admin.upgrade_dir", "a directory path",
                                &cfg->admin_upgrade_dir)))
            return rc;
        if (stat(cfg->admin_upgrade_dir, &st) == -1)
            return fail(c, v.line, "admin.upgrade_dir: expected an existing directory, got %s (%s)",
                        cfg->admin_upgrade_dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return fail(c, v.line,
                        "admin.upgrade_dir: expected an existing directory, got %s (not a "
                        "directory)",
                        cfg->admin_upgrade_dir);
    }
    if (map_find(it->node, "socket_group", &v)) {
        if ((rc = get_string(c, &v, "admin.socket_group", "the name of a group",
                             &cfg->admin_socket_group)))
            return rc;
        struct group gr, *res = NULL;
        char buf[4096];
        if (getgrnam_r(cfg->admin_socket_group, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
            return fail(c, v.line, "admin.socket_group: no group named '%s' on this host",
                        cfg->admin_socket_group);
    }
    if (cfg->admin_listen != NULL && cfg->admin_tokens_file == NULL)
        return fail_missing(c, it->line, "admin", "tokens_file",
                            "a file path (required when admin.listen is set)");
    if (map_find(it->node, "tls", &v)) {
        if (cfg->admin_listen == NULL)
            return fail(c, v.line, "admin.tls: needs admin.listen, the TCP listener it secures");
        if ((rc = parse_tls(c, &v, "admin.tls", &cfg->admin_tls)) != 0)
            return rc;
    }
    return 0;
}

/* A webhook address: http or https, printable, no spaces (it goes into a request line). */
static bool valid_url(const char *s)
{
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return false;
    if (strlen(s) > 2048 || strlen(s) <= (s[4] == 's' ? 8u : 7u))
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

const char *const config_event_types[] = {
    "created",
    "healthy",
    "holding",
    "step",
    "step_done",
    "batch",
    "approved",
    "inconclusive",
    "test_started",
    "test_passed",
    "test_failed",
    "switched",
    "completed",
    "failed",
    "rolled_back",
    "aborted",
    "interrupted",
    "drained",
    "resumed",
    "suspended",
    "service_down",
    "saved_late",
    "instance_retired",
    "scheduled",
    "started",
    "awaiting",
    "note",
    "service_up",
    "hold",
    "release",
    "maintenance_on",
    "maintenance_off",
    NULL,
};

/* Reads a webhook's signing key from path, refused like the tokens file when others may read
 * it. The file's text without its trailing newline is the key; "whsec_" + base64 (the form
 * Standard Webhooks libraries print) is the decoded bytes. */
static int load_webhook_key(struct ctx *c, int line, const char *key, struct config_webhook *w)
{
    const char *path = w->secret_file;
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (stat(path, &st) == -1)
        return fail(c, line, "%s: cannot read %s: %s", key, path, strerror(errno));
    if ((st.st_mode & 077) != 0)
        return fail(c, line,
                    "%s: %s is readable or writable by others (mode %04o); expected mode 0600 "
                    "(chmod 600 %s)",
                    key, path, (unsigned)(st.st_mode & 07777), path);
    if ((rc = read_file(path, &buf, &len)) != 0)
        return fail(c, line, "%s: cannot read %s: %s", key, path, strerror(-rc));
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len >= 6 && memcmp(buf, "whsec_", 6) == 0) {
        size_t b64 = len - 6;
        unsigned char *out = xmalloc(b64 / 4 * 3 + 3);
        int n = b64 % 4 == 0 ? EVP_DecodeBlock(out, (unsigned char *)buf + 6, (int)b64) : -1;
        if (n > 0) {
            /* EVP_DecodeBlock counts the padding's zero bytes: take them off. */
            for (size_t i = len; i > 6 && buf[i - 1] == '='; i--)
                n--;
        }
        free(buf);
        if (n <= 0) {
            free(out);
            return fail(c, line, "%s: %s: expected whsec_ and base64 of the key, got bad base64",
                        key, path);
        }
        w->key = out;
        w->keylen = (size_t)n;
        return 0;
    }
    if (len == 0) {
        free(buf);
        return fail(c, line, "%s: %s is empty; expected the signing key", key, path);
    }
    w->key = (unsigned char *)buf;
    w->keylen = len;
    return 0;
}

static int parse_notify(struct ctx *c, const struct item *it, struct config *cfg)
{
    static const char *const known[] = {"webhooks", "max_age", NULL};
    static const char *const hook_known[] = {"url",         "services", "events", "format",
                                             "secret_file", "name",     NULL};
    struct item v;
    int rc;

    if ((rc = expect_map(c, it, "notify", known)) != 0)
        return rc;
    if (map_find(it->node, "max_age", &v) &&
        (rc = get_duration(c, &v, "notify.max_age", 1000, &cfg->notify_max_age_ms)))
        return rc;
    if (!map_find(it->node, "webhooks", &v) || is_null(v.node))
        return 0;
    if (v.node == NULL || fy_node_get_type(v.node) != FYNT_SEQUENCE)
        return fail_type(c, &v, "notify.webhooks", "a list of {url: URL, services: [NAME...]}");
    cfg->nwebhooks = (size_t)fy_node_sequence_item_count(v.node);
    cfg->webhooks = xcalloc(cfg->nwebhooks + 1, sizeof(*cfg->webhooks));
    void *iter = NULL;
    struct fy_node *el;
    for (size_t i = 0; (el = fy_node_sequence_iterate(v.node, &iter)) != NULL && i < cfg->nwebhooks;
         i++) {
        char path[KEY_PATH_MAX], p[KEY_PATH_MAX];
        struct item hi = {el, node_line(el, v.line)}, u;
        struct config_webhook *w = &cfg->webhooks[i];
        subindex(path, sizeof(path), "notify.webhooks", i);
        w->line = hi.line;
        if ((rc = expect_map(c, &hi, path, hook_known)) != 0)
            return rc;
        if (!map_find(el, "url", &u))
            return fail_missing(c, hi.line, path, "url", "an http:// or https:// URL");
        if ((rc = get_string(c, &u, subpath(p, sizeof(p), path, "url"),
                             "an http:// or https:// URL", &w->url)))
            return rc;
        if (!valid_url(w->url))
            return fail_type(c, &u, p, "an http:// or https:// URL without spaces");
        if (map_find(el, "name", &u)) {
            if ((rc = get_string(c, &u, subpath(p, sizeof(p), path, "name"),
                                 "a name (1-64 of A-Z a-z 0-9 . _ -)", &w->name)))
                return rc;
            if (!valid_name(w->name, strlen(w->name)))
                return fail_type(c, &u, p, "a name (1-64 of A-Z a-z 0-9 . _ -)");
            for (size_t j = 0; j < i; j++)
                if (cfg->webhooks[j].name && strcmp(cfg->webhooks[j].name, w->name) == 0)
                    return fail(c, u.line, "%s: '%s' is already notify.webhooks[%zu]'s name", p,
                                w->name, j);
        }
        if (map_find(el, "services", &u) &&
            (rc = get_string_list(c, &u, subpath(p, sizeof(p), path, "services"),
                                  "a list of service names", true, true, &w->services,
                                  &w->nservices)))
            return rc;
        if (map_find(el, "events", &u)) {
            if ((rc =
                     get_string_list(c, &u, subpath(p, sizeof(p), path, "events"),
                                     "a list of event types", true, true, &w->events, &w->nevents)))
                return rc;
            for (size_t j = 0; j < w->nevents; j++) {
                size_t k = 0;
                while (config_event_types[k] != NULL &&
                       strcmp(config_event_types[k], w->events[j]) != 0)
                    k++;
                if (config_event_types[k] == NULL)
                    return fail(c, u.line,
                                "%s: expected event types (created, switched, completed, "
                                "failed, rolled_back, ... see docs/config.md), got '%.64s'",
                                p, w->events[j]);
            }
        }
        if (map_find(el, "format", &u)) {
            char *f = NULL;
            if ((rc = get_string(c, &u, subpath(p, sizeof(p), path, "format"),
                                 "json, slack or cloudevents", &f)))
                return rc;
            if (strcmp(f, "json") == 0)
                w->format = CONFIG_WEBHOOK_JSON;
            else if (strcmp(f, "slack") == 0)
                w->format = CONFIG_WEBHOOK_SLACK;
            else if (strcmp(f, "cloudevents") == 0)
                w->format = CONFIG_WEBHOOK_CLOUDEVENTS;
            else
                rc = fail(c, u.line, "%s: expected json, slack or cloudevents, got '%.64s'", p, f);
            free(f);
            if (rc != 0)
                return rc;
        }
        if (map_find(el, "secret_file", &u) &&
            ((rc = get_file_path(c, &u, subpath(p, sizeof(p), path, "secret_file"), "a file path",
                                 &w->secret_file)) ||
             (rc = load_webhook_key(c, u.line, p, w))))
            return rc;
    }
    return 0;
}

/* A webhook may only name services the config has: a typo would silently tell nobody. */
static int check_webhook_services(struct ctx *c, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nwebhooks; i++) {
        const struct config_webhook *w = &cfg->webhooks[i];
        for (size_t j = 0; j < w->nservices; j++)
            if (config_service_find(cfg, w->services[j]) == NULL)
                return fail(c, w->line,
                            "notify.webhooks[%zu].services: expected names of services, got "
                            "'%.64s', which no service is called",
                            i, w->services[j]);
    }
    return 0;
}

static void free_strv(char **v);

/* ---- describing ---- */

static void appendf(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

char *config_step_describe(const struct config_step *st, char *buf, size_t n)
{
    char d[24];
    if (n == 0)
        return buf;
    buf[0] = '\0';
    switch (st->kind) {
    case CONFIG_STEP_TEST:
        appendf(buf, n, "test");
        for (char **a = st->command; a != NULL && *a != NULL; a++)
            appendf(buf, n, " %s", *a);
        appendf(buf, n, " (timeout %s)", duration_format(st->timeout_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_PILOT:
        appendf(buf, n, "pilot %s %s",
                st->pilot_kind == CONFIG_PILOT_HEADER   ? "header"
                : st->pilot_kind == CONFIG_PILOT_COOKIE ? "cookie"
                                                        : "source",
                st->pilot_name ? st->pilot_name : "");
        if (st->pilot_value != NULL)
            appendf(buf, n, "%s%s", st->pilot_kind == CONFIG_PILOT_COOKIE ? "=" : ": ",
                    st->pilot_value);
        appendf(buf, n, " for %s", duration_format(st->duration_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_WEIGHT:
        appendf(buf, n, "weight %d%%", st->weight);
        break;
    case CONFIG_STEP_PAUSE:
        if (st->duration_ms == 0)
            appendf(buf, n, "pause until promoted");
        else
            appendf(buf, n, "pause %s", duration_format(st->duration_ms, d, sizeof(d)));
        break;
    case CONFIG_STEP_APPROVAL:
        appendf(buf, n, "approval by %d of", st->count);
        for (size_t j = 0; j < st->napprovers; j++)
            appendf(buf, n, "%s %s", j ? "," : "", st->approvers[j]);
        break;
    case CONFIG_STEP_MIRROR:
        appendf(buf, n, "mirror %d%% for %s", st->mirror->percent,
                duration_format(st->duration_ms, d, sizeof(d)));
        if (st->mirror->max_mismatch_rate > 0)
            appendf(buf, n, ", mismatches at most %g", st->mirror->max_mismatch_rate);
        break;
    case CONFIG_STEP_LOAD:
        appendf(buf, n, "load %d/s for %s", st->load->rate,
                duration_format(st->duration_ms, d, sizeof(d)));
        break;
    }
    return buf;
}

/* ---- people ---- */

const char *config_duty_name(enum config_duty d)
{
    switch (d) {
    case CONFIG_DUTY_OWNER:
        return "owner";
    case CONFIG_DUTY_APPROVER:
        return "approver";
    case CONFIG_DUTY_INFORMED:
        return "informed";
    }
    return "?";
}

static int parse_role(struct ctx *c, const struct item *v, const char *path, enum config_role *out)
{
    char *role = NULL;
    int rc = get_string(c, v, path, "viewer, operator or admin", &role);
    if (rc != 0)
        return rc;
    *out = 0;
    for (enum config_role r = CONFIG_ROLE_VIEWER; r <= CONFIG_ROLE_ADMIN; r++)
        if (strcmp(role, config_role_name(r)) == 0)
            *out = r;
    free(role);
    return *out == 0 ? fail_type(c, v, path, "viewer, operator or admin") : 0;
}

/* people.NAME.services: {SERVICE: [owner | approver | informed, ...], "*": [...]} */
static int parse_duties(struct ctx *c, const struct item *it, const char *path,
                        struct config_person *pe)
{
    static const char *const any[] = {NULL};
    if (it->node == NULL || fy_node_get_type(it->node) != FYNT_MAPPING)
        return expect_map(c, it, path, any);
    pe->nduties = (size_t)fy_node_mapping_item_count(it->node);
    pe->duties = xcalloc(pe->nduties + 1, sizeof(*pe->duties));
    void *iter = NULL;
    struct fy_node_pair *p;
    for (size_t i = 0; (p = fy_node_mapping_iterate(it->node, &iter)) != NULL && i < pe->nduties;
         i++) {
        struct item kv = item_of_pair(p);
        struct fy_node *k = fy_node_pair_key(p);
        size_t klen = 0;
        const char *ks =
            k && fy_node_get_type(k) == FYNT_SCALAR ? fy_node_get_scalar(k, &klen) : NULL;
        char sp[KEY_PATH_MAX];
        if (ks == NULL || !((klen == 1 && ks[0] == '*') || valid_name(ks, klen)))
            return fail_type(c, &kv, path, "service names (or \"*\" for every service)");
        pe->duties[i].service = xstrndup(ks, klen);
        subpath(sp, sizeof(sp), path, pe->duties[i].service);
        if (strcmp(pe->duties[i].service, "*") != 0 &&
            config_service_find(c->cfg, pe->duties[i].service) == NULL)
            return fail(c, kv.line, "%s: no service named '%s' under services", path,
                        pe->duties[i].service);
        char **names = NULL;
        size_t n = 0;
        int rc = get_string_list(c, &kv, sp, "a list of owner, approver, informed", true, true,
                                 &names, &n);
        for (size_t j = 0; rc == 0 && j < n; j++) {
            unsigned bit = 0;
            for (unsigned d = CONFIG_DUTY_OWNER; d <= CONFIG_DUTY_INFORMED; d <<= 1)
                if (strcmp(names[j], config_duty_name((enum config_duty)d)) == 0)
                    bit = d;
            if (bit == 0)
                rc = fail(c, kv.line, "%s[%zu]: expected owner, approver or informed, got '%s'", sp,
                          j, names[j]);
            pe->duties[i].duties |= bit;
        }
        free_strv(names);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_person(struct ctx *c, struct fy_node_pair *pair, struct config_person *pe)
{
    static const char *const known[] = {"unix_user", "role", "services", "webhooks", NULL};
    struct item it = item_of_pair(pair), v;
    char path[KEY_PATH_MAX], p[KEY_PATH_MAX];
    int rc;

    if ((rc = get_name(c, pair, "people", &pe->name)) != 0)
        return rc;
    subpath(path, sizeof(path), "people", pe->name);
    pe->line = it.line;
    pe->role = CONFIG_ROLE_OPERATOR;
    if ((rc = expect_map(c, &it, path, known)) != 0)
        return rc;
    if (map_find(it.node, "unix_user", &v)) {
        subpath(p, sizeof(p), path, "unix_user");
        if ((rc = get_string(c, &v, p, "an OS login name", &pe->unix_user)))
            return rc;
        if (!valid_name(pe->unix_user, strlen(pe->unix_user)))
            return fail_type(c, &v, p, "an OS login name (A-Z a-z 0-9 . _ -)");
    }
    if (map_find(it.node, "role", &v)) {
        if ((rc = parse_role(c, &v, subpath(p, sizeof(p), path, "role"), &pe->role)))
            return rc;
        pe->role_set = 1;
    }
    if (map_find(it.node, "services", &v) &&
        (rc = parse_duties(c, &v, subpath(p, sizeof(p), path, "services"), pe)))
        return rc;
    if (map_find(it.node, "webhooks", &v)) {
        subpath(p, sizeof(p), path, "webhooks");
        if ((rc = get_string_list(c, &v, p, "a list of webhook names (notify.webhooks[].name)",
                                  true, true, &pe->webhooks, &pe->nwebhooks)))
            return rc;
        for (size_t i = 0; i < pe->nwebhooks; i++)
            if (config_webhook_find(c->cfg, pe->webhooks[i]) < 0)
                return fail(c, v.line, "%s[%zu]: no webhook named '%s' under notify.webhooks", p, i,
                            pe->webhooks[i]);
    }
    return 0;
}

int config_webhook_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name != NULL && i < cfg->nwebhooks; i++)
        if (cfg->webhooks[i].name && strcmp(cfg->webhooks[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int parse_people(struct ctx *c, const struct item *it, struct config *cfg)
{
    static const char *const any[] = {NULL};
    if (fy_node_get_type(it->node) != FYNT_MAPPING)
        return expect_map(c, it, "people", any);
    cfg->npeople = (size_t)fy_node_mapping_item_count(it->node);
    cfg->people = xcalloc(cfg->npeople + 1, sizeof(*cfg->people));
    void *iter = NULL;
    struct fy_node_pair *p;
    for (size_t i = 0; (p = fy_node_mapping_iterate(it->node, &iter)) != NULL && i < cfg->npeople;
         i++) {
        int rc = parse_person(c, p, &cfg->people[i]);
        if (rc != 0)
            return rc;
        for (size_t j = 0; cfg->people[i].unix_user && j < i; j++)
            if (cfg->people[j].unix_user &&
                strcmp(cfg->people[j].unix_user, cfg->people[i].unix_user) == 0)
                return fail(c, cfg->people[i].line,
                            "people.%s.unix_user: '%s' is already people.%s's (who acted could "
                            "not be told apart)",
                            cfg->people[i].name, cfg->people[i].unix_user, cfg->people[j].name);
    }
    return 0;
}

/* Once people and tokens are known: a person's role over the socket defaults to their token's,
 * and an approval step names people when people are listed. */
static int check_people(struct ctx *c, struct config *cfg)
{
    for (size_t i = 0; i < cfg->npeople; i++) {
        struct config_person *pe = &cfg->people[i];
        for (size_t j = 0; !pe->role_set && j < cfg->ntokens; j++)
            if (strcmp(cfg->tokens[j].name, pe->name) == 0)
                pe->role = cfg->tokens[j].role;
    }
    if (cfg->npeople == 0)
        return 0;
    for (size_t i = 0; i < cfg->nplans; i++) {
        const struct config_plan *pl = &cfg->plans[i];
        for (size_t j = 0; j < pl->nsteps; j++) {
            const struct config_step *st = &pl->steps[j];
            if (st->kind != CONFIG_STEP_APPROVAL)
                continue;
            for (size_t k = 0; k < st->napprovers; k++)
                if (config_person_find(cfg, st->approvers[k]) == NULL)
                    return fail(c, st->line,
                                "plans.%s.steps[%zu].approval.approvers[%zu]: '%s' is not one of "
                                "people",
                                pl->name, j, k, st->approvers[k]);
        }
    }
    return 0;
}

const struct config_person *config_person_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name != NULL && i < cfg->npeople; i++)
        if (strcmp(cfg->people[i].name, name) == 0)
            return &cfg->people[i];
    return NULL;
}

const struct config_person *config_person_by_unix_user(const struct config *cfg, const char *user)
{
    for (size_t i = 0; user != NULL && i < cfg->npeople; i++)
        if (cfg->people[i].unix_user && strcmp(cfg->people[i].unix_user, user) == 0)
            return &cfg->people[i];
    return NULL;
}

unsigned config_person_duties(const struct config_person *p, const char *service)
{
    unsigned d = 0;
    for (size_t i = 0; p != NULL && i < p->nduties; i++)
        if (strcmp(p->duties[i].service, "*") == 0 || strcmp(p->duties[i].service, service) == 0)
            d |= p->duties[i].duties;
    return d;
}

/* ---- freeze windows ---- */

static int parse_freeze(struct ctx *c, const struct item *it, const char *path,
                        struct config_freeze *f)
{
    static const char *const known[] = {"name", "from", "to", "cron", "duration", "services", NULL};
    static const char rfc[] = "an RFC 3339 time like 2026-12-24T00:00:00Z";
    char p[KEY_PATH_MAX], msg[200];
    struct item v, v2;
    char *text = NULL;
    int rc;

    f->line = it->line;
    if ((rc = expect_map(c, it, path, known)) != 0)
        return rc;
    if (!map_find(it->node, "name", &v))
        return fail_missing(c, it->line, path, "name", "a name for the window");
    if ((rc = get_string(c, &v, subpath(p, sizeof(p), path, "name"), "a name", &f->name)))
        return rc;
    if (!valid_name(f->name, strlen(f->name)))
        return fail_type(c, &v, p, "a name of 1-64 characters of A-Z a-z 0-9 . _ -");
    bool fixed = map_find(it->node, "from", &v) || map_find(it->node, "to", &v);
    bool cron = map_find(it->node, "cron", &v) || map_find(it->node, "duration", &v);
    if (fixed == cron)
        return fail(c, it->line,
                    "%s: expected either from and to (RFC 3339 times) or cron and duration", path);
    if (fixed) {
        if (!map_find(it->node, "from", &v))
            return fail_missing(c, it->line, path, "from", rfc);
        if (!map_find(it->node, "to", &v2))
            return fail_missing(c, it->line, path, "to", rfc);
        const struct item *its[2] = {&v, &v2};
        int64_t *outs[2] = {&f->from, &f->to};
        for (int k = 0; k < 2; k++) {
            subpath(p, sizeof(p), path, k ? "to" : "from");
            if ((rc = get_string(c, its[k], p, rfc, &text)))
                return rc;
            rc = freeze_time_parse(text, outs[k]);
            free(text);
            text = NULL;
            if (rc != 0)
                return fail_type(c, its[k], p, rfc);
        }
        if (f->from >= f->to) {
            subpath(p, sizeof(p), path, "to");
            return fail(c, v2.line, "%s: expected a time after from, got one %s", p,
                        f->from == f->to ? "equal to it" : "before it");
        }
    } else {
        f->recurring = true;
        if (!map_find(it->node, "cron", &v))
            return fail_missing(c, it->line, path, "cron", "a cron line \"MIN HOUR DOM MON DOW\"");
        if (!map_find(it->node, "duration", &v2))
            return fail_missing(c, it->line, path, "duration", "a duration like 2h");
        if ((rc = get_string(c, &v, subpath(p, sizeof(p), path, "cron"),
                             "a cron line \"MIN HOUR DOM MON DOW\"", &f->cron)))
            return rc;
        if (freeze_cron_parse(f->cron, &f->sched, msg, sizeof(msg)) != 0)
            return fail(c, v.line, "%s: %s", p, msg);
        if ((rc = get_duration(c, &v2, subpath(p, sizeof(p), path, "duration"), 60000,
                               &f->duration_ms)))
            return rc;
        if (f->duration_ms > (uint64_t)FREEZE_SCAN_MAX_S * 1000)
            return fail(c, v2.line, "%s: expected at most 31d, got more", p);
    }
    if (map_find(it->node, "services", &v) &&
        (rc = get_string_list(c, &v, subpath(p, sizeof(p), path, "services"),
                              "a list of service names", true, true, &f->services, &f->nservices)))
        return rc;
    return 0;
}

/* Two fixed windows that overlap on a service they share are one window written twice, or a
 * typo in a date: refused. */
static bool freezes_share_service(const struct config_freeze *a, const struct config_freeze *b)
{
    if (a->services == NULL || b->services == NULL)
        return true;
    for (size_t i = 0; i < a->nservices; i++)
        if (freeze_applies(b, a->services[i]))
            return true;
    return false;
}

static int parse_freezes(struct ctx *c, const struct item *it, struct config *cfg)
{
    if (it->node == NULL || fy_node_get_type(it->node) != FYNT_SEQUENCE)
        return fail_type(c, it, "freeze",
                         "a list of {name, from, to} or {name, cron, duration} windows");
    cfg->nfreezes = (size_t)fy_node_sequence_item_count(it->node);
    cfg->freezes = xcalloc(cfg->nfreezes + 1, sizeof(*cfg->freezes));
    void *iter = NULL;
    struct fy_node *el;
    int rc;
    for (size_t i = 0;
         (el = fy_node_sequence_iterate(it->node, &iter)) != NULL && i < cfg->nfreezes; i++) {
        char path[KEY_PATH_MAX];
        struct item fi = {el, node_line(el, it->line)};
        struct config_freeze *f = &cfg->freezes[i];
        subindex(path, sizeof(path), "freeze", i);
        if ((rc = parse_freeze(c, &fi, path, f)) != 0)
            return rc;
        for (size_t j = 0; j < f->nservices; j++)
            if (config_service_find(cfg, f->services[j]) == NULL)
                return fail(c, f->line,
                            "%s.services: expected names of services, got '%.64s', which no "
                            "service is called",
                            path, f->services[j]);
        for (size_t j = 0; j < i; j++) {
            const struct config_freeze *g = &cfg->freezes[j];
            if (strcmp(g->name, f->name) == 0)
                return fail(c, f->line,
                            "%s.name: '%s' is already the name of the window at line %d", path,
                            f->name, g->line);
            if (!f->recurring && !g->recurring && f->from < g->to && g->from < f->to &&
                freezes_share_service(f, g))
                return fail(c, f->line,
                            "%s: overlaps window '%s' (line %d) on the same services; make them "
                            "one window",
                            path, g->name, g->line);
        }
    }
    return 0;
}

static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 256 ? 256 : (int)n;
}

/* state_dir must be a directory, or a path the daemon can create one at: the nearest part of
   it that exists must be a directory. Checked here so that `check` catches
   "state_dir: /etc/passwd" rather than the daemon's start or a reload. */
static int check_state_dir(struct ctx *c, const char *dir, int line)
{
    struct stat st;
    char *p = xstrdup(dir), *slash;
    int rc = 0;

    if (stat(p, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            rc = fail(c, line, "state_dir: expected a directory, got %s, which is %s", dir,
                      S_ISREG(st.st_mode) ? "a file" : "not a directory");
        goto out;
    }
    /* Walk up to the nearest part that exists. */
    for (;;) {
        if (errno != ENOENT) {
            rc = fail(c, line, "state_dir: cannot use %s: %s", dir, strerror(errno));
            goto out;
        }
        if (strcmp(p, ".") == 0 || strcmp(p, "/") == 0) {
            rc = fail(c, line, "state_dir: cannot use %s: %s", dir, strerror(errno));
            goto out;
        }
        slash = strrchr(p, '/');
        if (slash == NULL) {
            memcpy(p, ".", 2); /* p is at least one character long */
        } else {
            while (slash > p && slash[-1] == '/')
                slash--;
            if (slash == p)
                slash++; /* keep the root */
            *slash = '\0';
        }
        if (stat(p, &st) == 0)
            break;
    }
    /* Whether the daemon's user may create it there is not checked: `check` often runs as
       another user, and the daemon says so itself when mkdir fails. */
    if (!S_ISDIR(st.st_mode))
        rc = fail(c, line,
                  "state_dir: expected a directory or a path one can be created at, got %s (%s "
                  "is not a directory)",
                  dir, p);
out:
    free(p);
    return rc;
}

static int parse_root(struct ctx *c, struct fy_node *root)
{
    static const char *const known[] = {"state_dir", "workers", "io_coalesce_us", "admin",
                                        "notify",    "freeze",  "services",       "plans",
                                        "people",    NULL};
    struct config *cfg = c->cfg;
    struct item it = {root, node_line(root, 1)}, v;
    struct fy_node_pair *p;
    void *iter;
    size_t i;
    int rc;

    cfg->workers = default_workers();
    cfg->notify_max_age_ms = 24ull * 3600 * 1000;
    cfg->io_coalesce_us = CONFIG_IO_COALESCE_US;
    cfg->state_dir = xstrdup("./var");
    if (root == NULL || fy_node_get_type(root) != FYNT_MAPPING)
        return fail_type(c, &it, "top level", "a map of settings");
    if ((rc = expect_map(c, &it, "", known)) != 0)
        return rc;
    int state_dir_line = it.line;
    if (map_find(root, "state_dir", &v)) {
        if ((rc = get_string(c, &v, "state_dir", "a directory path", &cfg->state_dir)))
            return rc;
        state_dir_line = v.line;
    }
    /* The default is relative too, so it is resolved whether or not the key is present. */
    resolve_in_place(c, &cfg->state_dir);
    if ((rc = check_state_dir(c, cfg->state_dir, state_dir_line)) != 0)
        return rc;
    if (map_find(root, "workers", &v) && (rc = get_int(c, &v, "workers", 1, 256, &cfg->workers)))
        return rc;
    if (map_find(root, "io_coalesce_us", &v) &&
        (rc = get_int(c, &v, "io_coalesce_us", 0, 1000, &cfg->io_coalesce_us)))
        return rc;
    if (map_find(root, "admin", &v) && (rc = parse_admin(c, &v, cfg)))
        return rc;
    if (map_find(root, "notify", &v) && (rc = parse_notify(c, &v, cfg)))
        return rc;

    /* Plans first, so that services can check the plan they name. */
    if (map_find(root, "plans", &v) && !is_null(v.node)) {
        static const char *const any[] = {NULL};
        if (fy_node_get_type(v.node) != FYNT_MAPPING)
            return expect_map(c, &v, "plans", any);
        cfg->nplans = (size_t)fy_node_mapping_item_count(v.node);
        cfg->plans = xcalloc(cfg->nplans, sizeof(*cfg->plans));
        iter = NULL;
        for (i = 0; (p = fy_node_mapping_iterate(v.node, &iter)) != NULL && i < cfg->nplans; i++)
            if ((rc = parse_plan(c, p, &cfg->plans[i])) != 0)
                return rc;
    }
    if (map_find(root, "services", &v) && !is_null(v.node)) {
        static const char *const any[] = {NULL};
        if (fy_node_get_type(v.node) != FYNT_MAPPING)
            return expect_map(c, &v, "services", any);
        cfg->nservices = (size_t)fy_node_mapping_item_count(v.node);
        cfg->services = xcalloc(cfg->nservices, sizeof(*cfg->services));
        iter = NULL;
        for (i = 0; (p = fy_node_mapping_iterate(v.node, &iter)) != NULL && i < cfg->nservices; i++)
            if ((rc = parse_service(c, p, &cfg->services[i])) != 0)
                return rc;
    }
    if ((rc = check_webhook_services(c, cfg)) != 0)
        return rc;
    if ((rc = check_shared_listens(c, cfg)) != 0)
        return rc;
    if (map_find(root, "freeze", &v) && !is_null(v.node) && (rc = parse_freezes(c, &v, cfg)))
        return rc;
    if (map_find(root, "people", &v) && !is_null(v.node) && (rc = parse_people(c, &v, cfg)))
        return rc;
    if (cfg->admin_tokens_file != NULL && (rc = load_tokens(c, c->tokens_line)) != 0)
        return rc;
    return check_people(c, cfg);
}

/* ---- loading ---- */

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* Errors are collected and reported through the caller's buffer instead. */
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
}

/* Reports the first collected libfyaml error, if any. Returns -EINVAL when there was one. */
static int syntax_error(struct ctx *c, struct fy_diag *diag)
{
    void *iter = NULL;
    struct fy_diag_error *e;

    while ((e = fy_diag_errors_iterate(diag, &iter)) != NULL) {
        if (e->type >= FYET_ERROR)
            return fail(c, e->line > 0 ? e->line : 1, "YAML syntax error: %s",
                        e->msg != NULL ? e->msg : "unknown");
    }
    if (fy_diag_got_error(diag))
        return fail(c, 1, "YAML syntax error");
    return 0;
}

/* Parses buf as exactly one YAML document and hands its root to fn. */
static int parse_document(struct ctx *c, const char *buf, size_t len,
                          int (*fn)(struct ctx *, struct fy_node *))
{
    struct fy_diag_cfg dcfg;
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_COLLECT_DIAG};
    struct fy_diag *diag = NULL;
    struct fy_parser *fyp = NULL;
    struct fy_document *fyd = NULL, *extra = NULL;
    int rc;

    /* libfyaml stops at a NUL byte and passes control characters into values: a file that is
       not text is refused whole, at the line of the first offending byte. */
    const char *why = NULL;
    size_t bad = text_find_nontext(buf, len, &why);
    if (bad < len) {
        int line = 1;
        size_t col = 1;
        for (size_t i = 0; i < bad; i++) {
            line += buf[i] == '\n';
            col = buf[i] == '\n' ? 1 : col + 1;
        }
        return fail(c, line,
                    "expected text (UTF-8 without control characters), got %s at column %zu", why,
                    col);
    }
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_discard;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag == NULL) {
        rc = -ENOMEM;
        fail_msg(c, 1, "cannot create the YAML parser");
        goto out;
    }
    fy_diag_set_collect_errors(diag, true);
    pcfg.diag = diag;
    fyp = fy_parser_create(&pcfg);
    if (fyp == NULL || fy_parser_set_string(fyp, buf, len) != 0) {
        rc = -ENOMEM;
        fail_msg(c, 1, "cannot create the YAML parser");
        goto out;
    }
    fyd = fy_parse_load_document(fyp);
    if (fyd == NULL) {
        rc = syntax_error(c, diag);
        if (rc == 0)
            rc = fail(c, 1, "top level: expected a map of settings, got an empty file");
        goto out;
    }
    /* A second document in the same file is almost certainly a mistake (a stray `---`). */
    extra = fy_parse_load_document(fyp);
    if ((rc = syntax_error(c, diag)) != 0)
        goto out;
    if (extra != NULL) {
        rc = fail(c, node_line(fy_document_root(extra), 1),
                  "top level: expected one YAML document, got a second one");
        goto out;
    }
    rc = fn(c, fy_document_root(fyd));
out:
    if (extra != NULL)
        fy_parse_document_destroy(fyp, extra);
    if (fyd != NULL)
        fy_parse_document_destroy(fyp, fyd);
    if (fyp != NULL)
        fy_parser_destroy(fyp);
    if (diag != NULL)
        fy_diag_destroy(diag);
    return rc;
}

static int load_buffer(const char *buf, size_t len, const char *name, const char *basedir,
                       struct config **out, char *err, size_t errlen)
{
    struct ctx c = {.name = name, .basedir = basedir, .err = err, .errlen = errlen};
    int rc;

    c.cfg = xcalloc(1, sizeof(*c.cfg));
    c.cfg->path = xstrdup(name);
    c.cfg->warnings = xcalloc(1, sizeof(*c.cfg->warnings));
    c.capwarnings = 1;
    rc = parse_document(&c, buf, len, parse_root);
    if (rc == 0) {
        *out = c.cfg;
        c.cfg = NULL;
    }
    free(c.listeners);
    config_free(c.cfg);
    return rc;
}

/* Reads the whole file into a NUL-terminated heap buffer. Returns 0 or -errno. */
static int read_file(const char *path, char **buf, size_t *len)
{
    struct stat st;
    size_t cap, n = 0;
    char *b = NULL;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    if (st.st_size > (off_t)CONFIG_FILE_MAX) {
        rc = -EFBIG;
        goto out;
    }
    cap = (size_t)st.st_size + 1;
    b = xmalloc(cap);
    for (;;) {
        ssize_t r;
        if (n + 1 == cap) {
            /* The file grew (or is a pipe); keep within the limit. */
            if (cap > CONFIG_FILE_MAX) {
                rc = -EFBIG;
                goto out;
            }
            cap *= 2;
            b = xrealloc(b, cap);
        }
        r = read(fd, b + n, cap - 1 - n);
        if (r == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
out:
    free(b);
    close(fd);
    return rc;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    char *buf = NULL, *basedir = NULL;
    const char *slash;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    rc = read_file(path, &buf, &len);
    if (rc != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
        return rc;
    }
    slash = strrchr(path, '/');
    if (slash != NULL)
        basedir = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
    rc = load_buffer(buf, len, path, basedir, out, err, errlen);
    free(basedir);
    free(buf);
    return rc;
}

int config_load_string(const char *yaml, const char *name, struct config **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return load_buffer(yaml, strlen(yaml), name != NULL ? name : "<string>", NULL, out, err,
                       errlen);
}

int config_load_buffer(const char *buf, size_t len, const char *name, struct config **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return load_buffer(buf, len, name != NULL ? name : "<buffer>", NULL, out, err, errlen);
}

/* ---- freeing and lookups ---- */

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p != NULL; p++)
        free(*p);
    free(v);
}

static void free_service(struct config_service *s)
{
    free_tls(&s->tls);
    free(s->name);
    free(s->listen);
    free(s->preview_listen);
    free(s->health.path);
    free_strv(s->targets);
    free_strv(s->run.command);
    free_strv(s->run.env);
    free(s->run.cwd);
    free(s->sticky.name);
    free(s->plan);
    free(s->version);
    free_strv(s->trusted_proxies);
    free_strv(s->hosts);
    free(s->path_prefix);
}

static void free_plan(struct config_plan *p)
{
    free(p->name);
    free(p->owner);
    for (size_t i = 0; p->steps != NULL && i < p->nsteps; i++) {
        struct config_step *st = &p->steps[i];
        free(st->owner);
        free_strv(st->command);
        free(st->pilot_name);
        free(st->pilot_value);
        free_strv(st->approvers);
        if (st->mirror != NULL) {
            free_strv(st->mirror->headers);
            free_strv(st->mirror->ignore_json);
            free(st->mirror);
        }
        if (st->load != NULL) {
            free_strv(st->load->paths);
            free_strv(st->load->headers);
            free(st->load);
        }
    }
    free(p->steps);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->state_dir);
    free(cfg->admin_upgrade_dir);
    free(cfg->admin_listen);
    free(cfg->admin_tokens_file);
    free_tls(&cfg->admin_tls);
    for (size_t i = 0; cfg->tokens != NULL && i < cfg->ntokens; i++) {
        free(cfg->tokens[i].name);
        free(cfg->tokens[i].secret);
    }
    free(cfg->tokens);
    for (size_t i = 0; cfg->people != NULL && i < cfg->npeople; i++) {
        free(cfg->people[i].name);
        free(cfg->people[i].unix_user);
        for (size_t j = 0; j < cfg->people[i].nduties; j++)
            free(cfg->people[i].duties[j].service);
        free_strv(cfg->people[i].webhooks);
        free(cfg->people[i].duties);
    }
    free(cfg->people);
    free(cfg->admin_socket_group);
    for (size_t i = 0; cfg->webhooks != NULL && i < cfg->nwebhooks; i++) {
        free(cfg->webhooks[i].url);
        free(cfg->webhooks[i].name);
        free_strv(cfg->webhooks[i].services);
        free_strv(cfg->webhooks[i].events);
        free(cfg->webhooks[i].secret_file);
        if (cfg->webhooks[i].key != NULL)
            OPENSSL_cleanse(cfg->webhooks[i].key, cfg->webhooks[i].keylen);
        free(cfg->webhooks[i].key);
    }
    free(cfg->webhooks);
    for (size_t i = 0; cfg->services != NULL && i < cfg->nservices; i++)
        free_service(&cfg->services[i]);
    free(cfg->services);
    for (size_t i = 0; cfg->plans != NULL && i < cfg->nplans; i++)
        free_plan(&cfg->plans[i]);
    free(cfg->plans);
    for (size_t i = 0; cfg->freezes != NULL && i < cfg->nfreezes; i++) {
        free(cfg->freezes[i].name);
        free(cfg->freezes[i].cron);
        free_strv(cfg->freezes[i].services);
    }
    free(cfg->freezes);
    free_strv(cfg->warnings);
    free(cfg);
}

const struct config_service *config_service_find(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].name != NULL && strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    return NULL;
}

const struct config_plan *config_plan_find(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nplans; i++)
        if (cfg->plans[i].name != NULL && strcmp(cfg->plans[i].name, name) == 0)
            return &cfg->plans[i];
    return NULL;
}
