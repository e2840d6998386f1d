/* Freeze windows: the cron matcher, RFC 3339 times, and the window questions of freeze.h.
 * Pure functions; any thread. */
#include "config/freeze.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"

/* ---------------------------------------------------------------- cron ---------------------- */

struct cron_field {
    const char *name;
    int lo, hi;
};

static const struct cron_field cron_fields[5] = {
    {"minute", 0, 59}, {"hour", 0, 23},       {"day of month", 1, 31},
    {"month", 1, 12},  {"day of week", 0, 7},
};

/* Reads a decimal number of at most 3 digits at *p. */
static int cron_num(const char **p, int *out)
{
    int v = 0, n = 0;
    while (isdigit((unsigned char)**p) && n < 3) {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    if (n == 0 || isdigit((unsigned char)**p))
        return -1;
    *out = v;
    return 0;
}

/* One field (no spaces) into a bit set. */
static int cron_field_parse(const char *s, size_t len, const struct cron_field *f, uint64_t *bits,
                            bool *any, char *err, size_t errlen)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        goto bad;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *bits = 0;
    *any = strcmp(buf, "*") == 0;
    for (char *item = buf, *next; item != NULL; item = next) {
        next = strchr(item, ',');
        if (next != NULL)
            *next++ = '\0';
        const char *p = item;
        int a, b, step = 1;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if (cron_num(&p, &a) != 0)
                goto bad;
            b = a;
            if (*p == '-') {
                p++;
                if (cron_num(&p, &b) != 0)
                    goto bad;
            }
        }
        if (*p == '/') {
            p++;
            if (cron_num(&p, &step) != 0 || step < 1)
                goto bad;
            if (item[0] != '*' && strchr(item, '-') == NULL)
                b = f->hi; /* "5/15": from 5 to the end, as cron reads it */
        }
        if (*p != '\0' || a < f->lo || b > f->hi || a > b)
            goto bad;
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << v;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "%s field '%.*s': expected *, N, A-B, a list of them, each with an "
             "optional /STEP, numbers %d-%d",
             f->name, (int)(len < 40 ? len : 40), s, f->lo, f->hi);
    return -EINVAL;
}

int freeze_cron_parse(const char *text, struct freeze_cron *out, char *err, size_t errlen)
{
    const char *p = text;
    uint64_t bits[5];
    bool any[5];
    int n = 0;

    memset(out, 0, sizeof(*out));
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *e = p;
        while (*e != '\0' && *e != ' ' && *e != '\t')
            e++;
        if (n == 5) {
            snprintf(err, errlen, "expected 5 fields \"MIN HOUR DOM MON DOW\", got more");
            return -EINVAL;
        }
        if (cron_field_parse(p, (size_t)(e - p), &cron_fields[n], &bits[n], &any[n], err, errlen) !=
            0)
            return -EINVAL;
        n++;
        p = e;
    }
    if (n != 5) {
        snprintf(err, errlen, "expected 5 fields \"MIN HOUR DOM MON DOW\", got %d", n);
        return -EINVAL;
    }
    out->minute = bits[0];
    out->hour = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->month = (uint32_t)bits[3];
    out->dow = (uint32_t)(bits[4] & 0x7f);
    if (bits[4] & (1ULL << 7))
        out->dow |= 1u; /* 7 is Sunday too */
    out->dom_any = any[2];
    out->dow_any = any[4];
    return 0;
}

bool freeze_cron_match(const struct freeze_cron *c, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL)
        return false;
    if (!(c->minute & (1ULL << tm.tm_min)) || !(c->hour & (1u << tm.tm_hour)) ||
        !(c->month & (1u << (tm.tm_mon + 1))))
        return false;
    bool dom = (c->dom & (1u << tm.tm_mday)) != 0;
    bool dow = (c->dow & (1u << tm.tm_wday)) != 0;
    if (c->dom_any || c->dow_any)
        return dom && dow;
    return dom || dow;
}

/* ---------------------------------------------------------------- RFC 3339 ------------------ */

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int freeze_time_parse(const char *s, int64_t *out)
{
    int Y, M, D, h, m, sec, oh = 0, om = 0;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (s == NULL || strlen(s) < 20)
        return -EINVAL;
    if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return -EINVAL;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    int sign = 0;
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        sign = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && !digits(p + 1, 2, &oh) &&
               p[3] == ':' && !digits(p + 4, 2, &om)) {
        sign = *p == '+' ? 1 : -1;
        if (oh > 23 || om > 59)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
        return -EINVAL;
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return -EINVAL;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec > 59 ? 59 : sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *out = (int64_t)t - sign * (oh * 3600 + om * 60);
    return 0;
}

char *freeze_time_format(int64_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, n, "%lld", (long long)t);
    return buf;
}

/* ---------------------------------------------------------------- windows ------------------- */

bool freeze_applies(const struct config_freeze *f, const char *service)
{
    if (f->services == NULL)
        return true;
    for (size_t i = 0; i < f->nservices; i++)
        if (service != NULL && strcmp(f->services[i], service) == 0)
            return true;
    return false;
}

static int64_t minute_floor(int64_t t)
{
    return t - ((t % 60) + 60) % 60;
}

/* Extends the occurrence [from, *to) over the occurrences that start inside it or right at its
 * end: a freeze that goes on without a gap ends once. */
static void run_on(const struct config_freeze *f, int64_t from, int64_t *to)
{
    int64_t dur = (int64_t)(f->duration_ms / 1000);
    for (int64_t m = from + 60; m <= *to && m < from + FREEZE_SCAN_MAX_S; m += 60)
        if (freeze_cron_match(&f->sched, m) && m + dur > *to)
            *to = m + dur;
}

int freeze_active_at(const struct config_freeze *f, int64_t t, int64_t *from, int64_t *to)
{
    if (!f->recurring) {
        if (t < f->from || t >= f->to)
            return 0;
        *from = f->from;
        *to = f->to;
        return 1;
    }
    int64_t dur = (int64_t)(f->duration_ms / 1000);
    if (dur < 1)
        dur = 1;
    /* The earliest start whose occurrence still covers t, so that *from is where it began. */
    int64_t found = -1;
    for (int64_t m = minute_floor(t); m > t - dur && m > minute_floor(t) - FREEZE_SCAN_MAX_S;
         m -= 60)
        if (freeze_cron_match(&f->sched, m))
            found = m;
    if (found < 0)
        return 0;
    *from = found;
    *to = found + dur;
    run_on(f, found, to);
    return 1;
}

int freeze_next(const struct config_freeze *f, int64_t a, int64_t b, int64_t *from, int64_t *to)
{
    if (!f->recurring) {
        if (f->to <= a || f->from >= b)
            return 0;
        *from = f->from;
        *to = f->to;
        return 1;
    }
    if (freeze_active_at(f, a, from, to))
        return 1;
    int64_t end = b < a + FREEZE_SCAN_MAX_S ? b : a + FREEZE_SCAN_MAX_S;
    for (int64_t m = minute_floor(a) + 60; m < end; m += 60)
        if (freeze_cron_match(&f->sched, m)) {
            *from = m;
            *to = m + (int64_t)(f->duration_ms / 1000);
            run_on(f, m, to);
            return 1;
        }
    return 0;
}

const struct config_freeze *freeze_find_active(const struct config *cfg, const char *service,
                                               int64_t now, int64_t *until)
{
    const struct config_freeze *best = NULL;
    for (size_t i = 0; cfg != NULL && i < cfg->nfreezes; i++) {
        const struct config_freeze *f = &cfg->freezes[i];
        int64_t a, b;
        if (freeze_applies(f, service) && freeze_active_at(f, now, &a, &b) &&
            (best == NULL || b > *until)) {
            best = f;
            *until = b;
        }
    }
    return best;
}
