/* Dashboard sessions on admin.listen: a login with a token gives a cookie that stands for that
 * token until it expires or its holder logs out. The cookie carries its token's name, its expiry
 * and a MAC keyed with the token's secret, so the daemon keeps no session table: a successor
 * (hot upgrade, reload) with the same tokens file accepts the cookies of its predecessor, and a
 * token removed or changed takes its sessions with it. Logouts are remembered until the cookie
 * would have expired (in this process only: the browser drops the cookie too). Also derives each
 * session's CSRF token. Control loop only. */
#ifndef CUTOVER_API_SESSION_H
#define CUTOVER_API_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define SESSION_COOKIE "cutover_session"
/* A session lasts one working day at most; then the token is asked for again. */
#define SESSION_TTL_S (8 * 3600)
/* The longest cookie value: "EXPIRY:NONCE:MAC:NAME". */
#define SESSION_VALUE_MAX 200
/* The CSRF token: 32 hex digits, plus its NUL. */
#define SESSION_CSRF_LEN 33

struct session_revoked;

/* Writes a new session's cookie value for tok into out (SESSION_VALUE_MAX bytes), valid until
 * now + SESSION_TTL_S (seconds since the epoch). Returns 0 or a negative errno (no randomness). */
int session_issue(const struct config_token *tok, int64_t now, char *out, size_t outlen);

/* Finds the token a cookie value of len bytes stands for among tokens: its MAC must check with
 * that token's secret, it must not have expired at now and it must not be in revoked (may be
 * NULL). Returns the token, or NULL. *expires gets the session's expiry. Constant time in the
 * MAC. */
const struct config_token *session_check(const char *value, size_t len,
                                         const struct config_token *tokens, size_t ntokens,
                                         const struct session_revoked *revoked, int64_t now,
                                         int64_t *expires);

/* The CSRF token of the session value (as from session_issue) of tok, into out
 * (SESSION_CSRF_LEN bytes). */
void session_csrf(const struct config_token *tok, const char *value, size_t len, char *out);

/* 1 when the header value sent equals the session's CSRF token (constant time). */
int session_csrf_ok(const struct config_token *tok, const char *value, size_t len, const char *sent,
                    size_t sentlen);

/* Remembers that the session value (a checked one) has logged out, until its expiry. At most
 * SESSION_REVOKED_MAX are kept; past that the oldest go (their cookies are deleted from the
 * browser anyway). */
#define SESSION_REVOKED_MAX 4096
void session_revoke(struct session_revoked **r, const char *value, size_t len, int64_t expires,
                    int64_t now);

/* NULL is a no-op. */
void session_revoked_free(struct session_revoked *r);

#endif
