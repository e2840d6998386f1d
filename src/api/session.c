/* Dashboard sessions (see session.h): HMAC-SHA256 cookies keyed with each token's secret.
 * Control loop only. */
#include "api/session.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/xmalloc.h"

struct session_revoked {
    size_t n;
    struct {
        char mac[65];
        int64_t expires;
    } e[SESSION_REVOKED_MAX];
};

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* hex(HMAC-SHA256(tok's secret, what ":" msg)) into out (65 bytes). */
static void mac(const struct config_token *tok, const char *what, const char *msg, size_t len,
                char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t wl = strlen(what);
    char *buf = xmalloc(wl + 1 + len);
    memcpy(buf, what, wl);
    buf[wl] = ':';
    memcpy(buf + wl + 1, msg, len);
    HMAC(EVP_sha256(), tok->secret, (int)strlen(tok->secret), (const unsigned char *)buf,
         wl + 1 + len, md, &mdlen);
    free(buf);
    hex(md, mdlen > 32 ? 32 : mdlen, out);
}

static int equal(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int session_issue(const struct config_token *tok, int64_t now, char *out, size_t outlen)
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -EIO;
    char nonce[33], head[64], m[65];
    hex(rnd, sizeof(rnd), nonce);
    int hl = snprintf(head, sizeof(head), "%lld:%s", (long long)(now + SESSION_TTL_S), nonce);
    char *signed_part = xasprintf("%s:%s", head, tok->name);
    mac(tok, "session", signed_part, strlen(signed_part), m);
    free(signed_part);
    int n = snprintf(out, outlen, "%.*s:%s:%s", hl, head, m, tok->name);
    return n > 0 && (size_t)n < outlen ? 0 : -ENAMETOOLONG;
}

const struct config_token *session_check(const char *value, size_t len,
                                         const struct config_token *tokens, size_t ntokens,
                                         const struct session_revoked *revoked, int64_t now,
                                         int64_t *expires)
{
    /* EXPIRY:NONCE:MAC:NAME */
    if (len >= SESSION_VALUE_MAX)
        return NULL;
    char v[SESSION_VALUE_MAX];
    memcpy(v, value, len);
    v[len] = '\0';
    char *c1 = strchr(v, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
    if (c3 == NULL || c3 - c2 - 1 != 64)
        return NULL;
    char *end;
    long long exp = strtoll(v, &end, 10);
    if (end != c1 || exp < now)
        return NULL;
    const char *name = c3 + 1;
    const struct config_token *tok = NULL;
    for (size_t i = 0; i < ntokens && tok == NULL; i++)
        if (strcmp(tokens[i].name, name) == 0)
            tok = &tokens[i];
    if (tok == NULL)
        return NULL;
    /* The signed part is the value without its MAC. */
    char *signed_part = xasprintf("%.*s:%s", (int)(c2 - v), v, name);
    char m[65];
    mac(tok, "session", signed_part, strlen(signed_part), m);
    free(signed_part);
    if (!equal(m, c2 + 1, 64))
        return NULL;
    for (size_t i = 0; revoked != NULL && i < revoked->n; i++)
        if (memcmp(revoked->e[i].mac, c2 + 1, 64) == 0)
            return NULL;
    *expires = exp;
    return tok;
}

void session_csrf(const struct config_token *tok, const char *value, size_t len, char *out)
{
    char m[65];
    mac(tok, "csrf", value, len, m);
    memcpy(out, m, SESSION_CSRF_LEN - 1);
    out[SESSION_CSRF_LEN - 1] = '\0';
}

int session_csrf_ok(const struct config_token *tok, const char *value, size_t len, const char *sent,
                    size_t sentlen)
{
    char want[SESSION_CSRF_LEN];
    session_csrf(tok, value, len, want);
    return sentlen == SESSION_CSRF_LEN - 1 && equal(want, sent, sentlen);
}

void session_revoke(struct session_revoked **r, const char *value, size_t len, int64_t expires,
                    int64_t now)
{
    if (*r == NULL)
        *r = xcalloc(1, sizeof(**r));
    struct session_revoked *s = *r;
    for (size_t i = 0; i < s->n;) { /* forget the ones that expired anyway */
        if (s->e[i].expires < now)
            s->e[i] = s->e[--s->n];
        else
            i++;
    }
    if (s->n == SESSION_REVOKED_MAX) {
        memmove(&s->e[0], &s->e[1], (s->n - 1) * sizeof(s->e[0]));
        s->n--;
    }
    const char *c1 = memchr(value, ':', len);
    const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - value)) : NULL;
    if (c2 == NULL || (size_t)(c2 + 1 - value) + 64 > len)
        return;
    memcpy(s->e[s->n].mac, c2 + 1, 64);
    s->e[s->n].mac[64] = '\0';
    s->e[s->n].expires = expires;
    s->n++;
}

void session_revoked_free(struct session_revoked *r)
{
    free(r);
}
