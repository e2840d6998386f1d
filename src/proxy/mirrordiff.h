/* The comparison half of shadow traffic (proxy/mirror.h): route templates, body equality
 * (bytes, or JSON ignoring RFC 6901 pointers), a short diff and masked request heads for the
 * samples. Pure functions of their arguments, no state: callable from any thread. */
#ifndef CUTOVER_PROXY_MIRRORDIFF_H
#define CUTOVER_PROXY_MIRRORDIFF_H

#include <stddef.h>

/* Writes "METHOD /path/template" to out (always terminated): the query is dropped, and a path
 * segment that is a number, a UUID or a long hexadecimal id becomes ":id", so that /users/42
 * and /users/43 count as one route. */
void mirrordiff_route(char *out, size_t n, const char *method, size_t mlen, const char *target,
                      size_t tlen);

/* Compares two bodies. When json is set and both parse as JSON, they are equal when they are
 * JSON-equal once the values at the n pointers in ignore are removed from both (key order and
 * spacing do not matter); otherwise byte-equal. Returns 1 when equal, 0 when not. When out is
 * not NULL, a short description of the first difference is written there on 0. */
int mirrordiff_body(const char *a, size_t alen, const char *b, size_t blen, int json,
                    char *const *ignore, size_t n, char *out, size_t outlen);

/* Removes the value at an RFC 6901 pointer from a JSON value (jansson json_t *), if present.
 * Returns 1 when something was removed. */
int mirrordiff_json_remove(void *root, const char *pointer);

/* Copies a request head (up to n - 1 bytes, terminated) with the values of Authorization,
 * Proxy-Authorization and Cookie replaced by "***" and CR LF turned into "\n". */
void mirrordiff_mask_head(char *out, size_t n, const char *head, size_t len);

#endif
