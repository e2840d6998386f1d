/* Socket addresses written as text: "127.0.0.1:8080", "[::1]:8080", "localhost:8080".
 * Numeric only (plus "localhost"), so parsing never blocks on DNS. Pure, any thread. */
#ifndef CUTOVER_NET_ADDR_H
#define CUTOVER_NET_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses the NUL-terminated s into *out (*outlen set). A port is required (1..65535).
 * Returns 0 or -EINVAL. */
int addr_parse(const char *s, struct sockaddr_storage *out, socklen_t *outlen);

/* Formats sa as "1.2.3.4:80" or "[::1]:80" into buf of size n. Returns buf. */
char *addr_format(const struct sockaddr *sa, char *buf, size_t n);

/* Writes only the host part ("1.2.3.4", "::1") of sa into buf. Returns buf. */
char *addr_format_host(const struct sockaddr *sa, char *buf, size_t n);

#endif
