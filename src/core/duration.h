/* Durations as written in the config and on the command line: "250ms", "1s", "5m", "1h", "7d",
 * also "1.5s" and "1m30s". Pure functions, any thread. */
#ifndef CUTOVER_CORE_DURATION_H
#define CUTOVER_CORE_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Parses the NUL-terminated s into milliseconds. Units: ms, s, m, h, d; one or more
 * number+unit pairs in decreasing unit order, no sign, no spaces, at least one pair; a fraction
 * is allowed only on the last pair and must resolve to whole milliseconds. Returns 0, or
 * -EINVAL for anything else (including an empty string, a bare number and a negative value),
 * or -ERANGE when the total exceeds 100 years. */
int duration_parse(const char *s, uint64_t *ms);

/* Writes ms in the shortest exact form ("1500ms" -> "1.5s", "90000" -> "1m30s", 0 -> "0s") into
 * buf of size n (NUL-terminated, truncated if small). Returns buf. */
char *duration_format(uint64_t ms, char *buf, size_t n);

#endif
