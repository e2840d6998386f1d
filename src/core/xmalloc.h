/* Allocation wrappers that abort on exhaustion.
 * A daemon that cannot allocate a few bytes cannot keep its promises either; failing loudly at
 * the allocation beats a NULL walking through error paths nobody tests. Any thread. */
#ifndef CUTOVER_CORE_XMALLOC_H
#define CUTOVER_CORE_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
/* Returns a heap copy of s (NULL stays NULL); the caller frees it. */
char *xstrdup(const char *s);
/* Returns a NUL-terminated heap copy of the n bytes at s; the caller frees it. */
char *xstrndup(const char *s, size_t n);
/* Returns a heap string formatted like printf; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
