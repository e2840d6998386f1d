/* Durations as text <-> milliseconds (see duration.h). The grammar is deliberately small:
 * number+unit pairs in strictly decreasing unit order, an optional fraction on the last pair
 * only, nothing else. Pure functions, any thread. */
#include "core/duration.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MS_PER_S 1000ULL
#define MS_PER_M (60ULL * MS_PER_S)
#define MS_PER_H (60ULL * MS_PER_M)
#define MS_PER_D (24ULL * MS_PER_H)
/* The upper bound promised by the header: 100 years of 365 days. */
#define DURATION_MAX_MS (100ULL * 365ULL * MS_PER_D)
/* More digits than this in one number cannot be below DURATION_MAX_MS (13 digits) in any unit;
 * stop accumulating so the arithmetic below never overflows. */
#define DIGITS_MAX 18

struct unit {
    const char *name;
    uint64_t ms;
};

/* Longest names first so "ms" is not read as "m" followed by "s". Ranked by size: the index
 * in units_by_size is what "decreasing order" compares. */
static const struct unit units_by_size[] = {
    {"d", MS_PER_D}, {"h", MS_PER_H}, {"m", MS_PER_M}, {"s", MS_PER_S}, {"ms", 1},
};
#define NUNITS (sizeof(units_by_size) / sizeof(units_by_size[0]))

/* Matches a unit name at s (longest match). Returns its rank in units_by_size or -1; *len gets
 * the number of characters consumed. */
static int unit_match(const char *s, size_t *len)
{
    if (s[0] == 'm' && s[1] == 's') {
        *len = 2;
        return 4;
    }
    for (size_t i = 0; i < NUNITS; i++) {
        if (strlen(units_by_size[i].name) == 1 && s[0] == units_by_size[i].name[0]) {
            *len = 1;
            return (int)i;
        }
    }
    return -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int duration_parse(const char *s, uint64_t *ms)
{
    uint64_t total = 0;
    int last_rank = -1;
    int overflow = 0;
    int had_fraction = 0;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    while (*s != '\0') {
        uint64_t whole = 0, frac = 0, frac_div = 1;
        int ndigits = 0, nfrac = 0;

        /* A fraction is only allowed on the last pair, so any further pair is an error. */
        if (had_fraction)
            return -EINVAL;
        if (!is_digit(*s))
            return -EINVAL;
        for (; is_digit(*s); s++, ndigits++) {
            if (ndigits < DIGITS_MAX)
                whole = whole * 10 + (uint64_t)(*s - '0');
            else
                overflow = 1;
        }
        if (*s == '.') {
            s++;
            if (!is_digit(*s))
                return -EINVAL;
            for (; is_digit(*s); s++) {
                /* Digits beyond DIGITS_MAX can only be zeros if the result is to be a whole
                   number of milliseconds; anything else is rejected as inexact. */
                if (nfrac < DIGITS_MAX) {
                    frac = frac * 10 + (uint64_t)(*s - '0');
                    frac_div *= 10;
                    nfrac++;
                } else if (*s != '0') {
                    return -EINVAL;
                }
            }
            had_fraction = 1;
        }
        size_t ulen = 0;
        int rank = unit_match(s, &ulen);
        if (rank < 0 || rank <= last_rank)
            return -EINVAL;
        last_rank = rank;
        s += ulen;

        uint64_t unit = units_by_size[rank].ms;
        if (frac != 0) {
            /* frac < 10^18 and unit <= 8.64e7: the product fits in 128 bits. */
            unsigned __int128 part = (unsigned __int128)frac * unit;
            if (part % frac_div != 0)
                return -EINVAL;
            uint64_t extra = (uint64_t)(part / frac_div);
            if (whole > DURATION_MAX_MS / unit + 1)
                overflow = 1;
            else
                total += whole * unit + extra;
        } else {
            if (whole > DURATION_MAX_MS / unit + 1)
                overflow = 1;
            else
                total += whole * unit;
        }
        if (total > DURATION_MAX_MS)
            overflow = 1;
    }
    if (overflow)
        return -ERANGE;
    *ms = total;
    return 0;
}

/* Appends v followed by suffix at buf[*off], never past n; *off counts what would have been
 * written so truncation stays safe. */
static void append(char *buf, size_t n, size_t *off, uint64_t v, const char *suffix)
{
    int w;
    if (*off < n)
        w = snprintf(buf + *off, n - *off, "%llu%s", (unsigned long long)v, suffix);
    else
        w = snprintf(NULL, 0, "%llu%s", (unsigned long long)v, suffix);
    if (w > 0)
        *off += (size_t)w;
}

char *duration_format(uint64_t ms, char *buf, size_t n)
{
    size_t off = 0;
    uint64_t rest = ms;

    if (n == 0)
        return buf;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, n, "0s");
        return buf;
    }
    /* d, h and m only: seconds and milliseconds are written together below. */
    for (size_t i = 0; i < 3; i++) {
        uint64_t q = rest / units_by_size[i].ms;
        rest %= units_by_size[i].ms;
        if (q != 0)
            append(buf, n, &off, q, units_by_size[i].name);
    }
    uint64_t sec = rest / MS_PER_S, milli = rest % MS_PER_S;
    if (sec != 0 && milli == 0) {
        append(buf, n, &off, sec, "s");
    } else if (sec != 0) {
        /* "1.5s" rather than "1s500ms": trailing zeros of the fraction are dropped. */
        char frac[8];
        snprintf(frac, sizeof(frac), ".%03u", (unsigned)milli);
        size_t fl = 4;
        while (frac[fl - 1] == '0')
            fl--;
        frac[fl] = 's';
        frac[fl + 1] = '\0';
        append(buf, n, &off, sec, frac);
    } else if (milli != 0) {
        append(buf, n, &off, milli, "ms");
    }
    return buf;
}
