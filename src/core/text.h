/* Text a person or a file supplies, made safe to show: the one home of the rules for what is
 * text (UTF-8 without NUL or control bytes), what a name is, and how free text is escaped for a
 * terminal, a log line or a Markdown report so that it can neither move the cursor, reorder what
 * a reader sees (bidi overrides) nor start a new line, row or HTML element. No state; any
 * thread. */
#ifndef CUTOVER_CORE_TEXT_H
#define CUTOVER_CORE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Names (token names, actors, services): 1 to TEXT_NAME_MAX characters of A-Z a-z 0-9 . _ - */
#define TEXT_NAME_MAX 64

/* Decodes the UTF-8 sequence at s (len bytes available): returns its length (1 to 4) and sets
 * *cp, or returns 0 when it is not valid UTF-8 (overlong, surrogate, above U+10FFFF, cut). */
size_t text_utf8_next(const char *s, size_t len, uint32_t *cp);

/* 1 when code point cp must not reach a terminal as it is: C0 controls, DEL, C1 controls, the
 * bidi marks, embeddings, overrides and isolates (U+061C, U+200E-200F, U+202A-202E,
 * U+2066-2069) and the line and paragraph separators (U+2028-2029). */
int text_cp_unsafe(uint32_t cp);

/* Checks that buf (len bytes) is text a config file may hold: valid UTF-8, no NUL, no control
 * character but tab and line ends (LF, or CR directly before LF). Returns the offset of the
 * first offending byte, or len when there is none; *why then names the problem. */
size_t text_find_nontext(const char *buf, size_t len, const char **why);

/* 1 when s (len bytes) is a name: 1 to TEXT_NAME_MAX characters of A-Z a-z 0-9 . _ - */
int text_is_name(const char *s, size_t len);

/* Returns a heap copy of s (NULL: NULL) fit for a terminal or a log line: every unsafe code
 * point is written as an escape (\n, \r, \t, \x1b, \u202e), invalid UTF-8 bytes as \xNN. The
 * caller frees it. */
char *text_term(const char *s);

/* As text_term, and fit for one Markdown line or table cell: also \ | ` * _ [ ] are escaped
 * with a backslash and < > & become HTML entities, so the text cannot end a cell, start a row
 * or inject HTML. The caller frees it. */
char *text_md(const char *s);

/* As text_term but line feeds are kept (for a multi-line block, such as a test's output shown
 * in a fenced code block). The caller frees it. */
char *text_term_lines(const char *s);

#endif
