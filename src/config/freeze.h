/* Freeze windows (config `freeze:`): RFC 3339 times, a small cron matcher for recurring
 * windows, and the questions the rollout engine and the plan preview ask of them (is a service
 * frozen now, until when; which windows does a span of time cross). Pure functions of their
 * arguments: no clock, no allocation except where said. Times are Unix seconds, cron lines are
 * read in UTC. Any thread. */
#ifndef CUTOVER_CONFIG_FREEZE_H
#define CUTOVER_CONFIG_FREEZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct config_freeze;

/* A parsed cron line "MIN HOUR DOM MON DOW": one bit per allowed value. */
struct freeze_cron {
    uint64_t minute; /* bits 0..59 */
    uint32_t hour;   /* bits 0..23 */
    uint32_t dom;    /* bits 1..31 */
    uint32_t month;  /* bits 1..12 */
    uint32_t dow;    /* bits 0..6, Sunday 0 (7 is read as 0) */
    bool dom_any;    /* the field was "*": see freeze_cron_match */
    bool dow_any;
};

/* Parses a cron line of five fields, each a list of "*", "N", "A-B", with an optional "/STEP"
 * (numbers only, no names). Returns 0, or -EINVAL with a message naming the field in err. */
int freeze_cron_parse(const char *text, struct freeze_cron *out, char *err, size_t errlen);

/* 1 when the minute holding Unix time t (UTC) matches c. As in cron(8), when both day fields
 * are restricted a day matches if either does. */
bool freeze_cron_match(const struct freeze_cron *c, int64_t t);

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" (t or a space may stand for T) into Unix
 * seconds. Returns 0 or -EINVAL. */
int freeze_time_parse(const char *s, int64_t *out);

/* Writes t as "YYYY-MM-DDTHH:MM:SSZ" into buf (at least 21 bytes). Returns buf. */
char *freeze_time_format(int64_t t, char *buf, size_t n);

/* 1 when window f covers service (no `services:` list means every service). */
bool freeze_applies(const struct config_freeze *f, const char *service);

/* The occurrence of f in force at t: 1 with [*from, *to) set (for a recurring window, to is the
 * end of the run of occurrences that follow on without a gap), else 0. */
int freeze_active_at(const struct config_freeze *f, int64_t t, int64_t *from, int64_t *to);

/* The first occurrence of f that overlaps [a, b): 1 with [*from, *to) set, else 0. Recurring
 * windows are searched minute by minute, at most FREEZE_SCAN_MAX_S ahead of a. */
#define FREEZE_SCAN_MAX_S (31 * 86400)
int freeze_next(const struct config_freeze *f, int64_t a, int64_t b, int64_t *from, int64_t *to);

/* The window of cfg that freezes service at now, or NULL; *until gets when it ends (the latest
 * end when several are in force at once). */
const struct config_freeze *freeze_find_active(const struct config *cfg, const char *service,
                                               int64_t now, int64_t *until);

#endif
