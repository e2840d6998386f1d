/* logfmt logging to stderr (see log.h). Any thread: each line is one write(2). */
#include "core/log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/text.h"

static enum log_level min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level min)
{
    min_level = min;
}

/* Appends s to line at *pos, quoted when it is empty or holds a space, quote, '=' or a control
 * byte; truncates silently at the buffer's end (a log line is not worth failing for). What a
 * person typed (a reason, an actor) can reach here: controls are escaped so it cannot start a
 * forged line, and C1 controls, bidi overrides and invalid UTF-8 as core/text shows them
 * (\u202e, \xff), so it cannot reorder or colour what the reader of the log sees. */
static void put_value(char *line, size_t cap, size_t *pos, const char *s)
{
    size_t len = strlen(s);
    int quote = (*s == '\0');
    for (const char *p = s; *p && !quote; p++)
        quote = (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20 ||
                 (unsigned char)*p >= 0x7f);
    if (quote && *pos < cap)
        line[(*pos)++] = '"';
    for (size_t i = 0; i < len && *pos + 8 < cap;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t n = c < 0x80 ? 1 : text_utf8_next(s + i, len - i, &cp);
        if (c == '"' || c == '\\') {
            line[(*pos)++] = '\\';
            line[(*pos)++] = (char)c;
        } else if (c == '\n') {
            line[(*pos)++] = '\\';
            line[(*pos)++] = 'n';
        } else if (c < 0x20 || c == 0x7f || n == 0) {
            *pos += (size_t)snprintf(line + *pos, cap - *pos, "\\x%02x", c);
            n = 1;
        } else if (c >= 0x80 && text_cp_unsafe(cp)) {
            *pos += (size_t)snprintf(line + *pos, cap - *pos, "\\u%04x", (unsigned)cp);
        } else {
            memcpy(line + *pos, s + i, n);
            *pos += n;
        }
        i += n;
    }
    if (quote && *pos < cap)
        line[(*pos)++] = '"';
}

void log_kv(enum log_level lvl, const char *msg, ...)
{
    if (lvl < min_level)
        return;
    char line[2048];
    size_t cap = sizeof(line) - 1, pos = 0;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    pos += strftime(line, cap, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    pos += (size_t)snprintf(line + pos, cap - pos, ".%03ldZ level=%s msg=", ts.tv_nsec / 1000000,
                            level_names[lvl]);
    put_value(line, cap, &pos, msg);

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        if (pos + 2 >= cap)
            continue;
        line[pos++] = ' ';
        size_t kl = strlen(k);
        if (pos + kl + 1 < cap) {
            memcpy(line + pos, k, kl);
            pos += kl;
            line[pos++] = '=';
            put_value(line, cap, &pos, v ? v : "");
        }
    }
    va_end(ap);
    if (pos > cap)
        pos = cap;
    line[pos++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, pos);
    (void)w;
}
