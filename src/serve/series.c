/* Per-version time series for the dashboard (see series.h). Control loop only. A line keeps
 * the totals of its last sample (a histogram copy included, about 6 KiB) and a ring of
 * SERIES_POINTS points; a daemon has a line per serving version, two per service at most
 * during a change, plus the lines of the last 15 minutes. series_save and series_load write and
 * read them as JSON for the next process; neither logs (the caller does, naming the file). */
#include "serve/series.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/xmalloc.h"

struct series_point {
    double t;
    double rps, error_pct, p99_ms;
};

struct series_line {
    char *service, *version;
    double last_t;
    uint64_t requests, errors;
    struct hist latency;
    struct series_point pts[SERIES_POINTS];
    size_t head, n; /* the oldest point is pts[head]; n of them */
    int loaded;     /* from a file: the next sample sets the base and adds no point */
};

struct series {
    struct series_line **lines;
    size_t n;
};

struct series *series_new(void)
{
    return xcalloc(1, sizeof(struct series));
}

static void line_free(struct series_line *l)
{
    free(l->service);
    free(l->version);
    free(l);
}

void series_free(struct series *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        line_free(s->lines[i]);
    free(s->lines);
    free(s);
}

/* Drops the lines last sampled before now less the window. */
static void prune(struct series *s, double now)
{
    double window = SERIES_WINDOW_S;
    for (size_t i = 0; i < s->n;) {
        if (s->lines[i]->last_t >= now - window) {
            i++;
            continue;
        }
        line_free(s->lines[i]);
        s->lines[i] = s->lines[--s->n];
    }
}

void series_sample(struct series *s, const char *service, const char *version, double now,
                   uint64_t requests, uint64_t errors, const struct hist *latency)
{
    prune(s, now);
    struct series_line *l = NULL;
    for (size_t i = 0; i < s->n && l == NULL; i++)
        if (strcmp(s->lines[i]->service, service) == 0 &&
            strcmp(s->lines[i]->version, version) == 0)
            l = s->lines[i];
    if (l == NULL) {
        l = xcalloc(1, sizeof(*l));
        l->service = xstrdup(service);
        l->version = xstrdup(version);
        l->last_t = now;
        l->requests = requests;
        l->errors = errors;
        l->latency = *latency;
        s->lines = xrealloc(s->lines, (s->n + 1) * sizeof(*s->lines));
        s->lines[s->n++] = l;
        return;
    }
    if (l->loaded) {
        /* The file's points were computed against another process's totals; ours started at
         * 0, so a rate against the last loaded point would be made up. */
        l->loaded = 0;
        l->last_t = now;
        l->requests = requests;
        l->errors = errors;
        l->latency = *latency;
        return;
    }
    double dt = now - l->last_t;
    if (dt <= 0)
        return; /* sampled twice in one tick (both roles serve this version) */
    uint64_t dreq = requests > l->requests ? requests - l->requests : 0;
    uint64_t derr = errors > l->errors ? errors - l->errors : 0;
    if (derr > dreq)
        derr = dreq;
    struct hist d;
    hist_diff(&d, latency, &l->latency);
    struct series_point *p = &l->pts[(l->head + l->n) % SERIES_POINTS];
    if (l->n == SERIES_POINTS)
        l->head = (l->head + 1) % SERIES_POINTS;
    else
        l->n++;
    p->t = now;
    p->rps = (double)dreq / dt;
    p->error_pct = dreq > 0 ? 100.0 * (double)derr / (double)dreq : 0;
    p->p99_ms = hist_quantile(&d, 0.99) / 1000.0;
    l->last_t = now;
    l->requests = requests;
    l->errors = errors;
    l->latency = *latency;
}

json_t *series_json(const struct series *s, const char *service)
{
    json_t *versions = json_array();
    for (size_t i = 0; i < s->n; i++) {
        const struct series_line *l = s->lines[i];
        if (strcmp(l->service, service) != 0)
            continue;
        json_t *pts = json_array();
        for (size_t k = 0; k < l->n; k++) {
            const struct series_point *p = &l->pts[(l->head + k) % SERIES_POINTS];
            json_array_append_new(pts,
                                  json_pack("[f, f, f, f]", p->t, p->rps, p->error_pct, p->p99_ms));
        }
        json_array_append_new(versions,
                              json_pack("{s:s, s:o}", "version", l->version, "points", pts));
    }
    return json_pack("{s:s, s:f, s:f, s:o}", "service", service, "every_s",
                     SERIES_EVERY_MS / 1000.0, "window_s", SERIES_WINDOW_S, "versions", versions);
}

/* ---------------------------------------------------------------- file ---------------------- */

#define SERIES_FILE_FORMAT 1
/* A point later than now by more than this is refused: a clock stepped back by a few seconds
 * between two processes is normal, a point from the future is not. */
#define SERIES_FUTURE_S 60.0
#define SERIES_RPS_MAX 1e9
#define SERIES_P99_MS_MAX 1e9

static int line_newer(const void *a, const void *b)
{
    const struct series_line *x = *(struct series_line *const *)a;
    const struct series_line *y = *(struct series_line *const *)b;
    return x->last_t < y->last_t ? 1 : x->last_t > y->last_t ? -1 : 0;
}

/* Writes all of buf to fd, through short writes and signals. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static json_t *file_json(const struct series *s)
{
    struct series_line **order = xcalloc(s->n + 1, sizeof(*order));
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->lines[i]->n > 0) /* a base alone is nothing the next process can use */
            order[n++] = s->lines[i];
    /* Past the bound, the lines sampled last are kept, in the series' own order: the next
     * process then lists the versions (and the dashboard colours them) as this one did. */
    double cutoff = -1;
    if (n > SERIES_FILE_LINES) {
        qsort(order, n, sizeof(*order), line_newer);
        cutoff = order[SERIES_FILE_LINES - 1]->last_t;
    }
    n = 0;
    for (size_t i = 0; i < s->n && n < SERIES_FILE_LINES; i++)
        if (s->lines[i]->n > 0 && s->lines[i]->last_t >= cutoff)
            order[n++] = s->lines[i];
    json_t *lines = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct series_line *l = order[i];
        json_t *pts = json_array();
        for (size_t k = 0; k < l->n; k++) {
            const struct series_point *p = &l->pts[(l->head + k) % SERIES_POINTS];
            json_array_append_new(pts,
                                  json_pack("[f, f, f, f]", p->t, p->rps, p->error_pct, p->p99_ms));
        }
        json_array_append_new(lines, json_pack("{s:s, s:s, s:o}", "service", l->service, "version",
                                               l->version, "points", pts));
    }
    free(order);
    return json_pack("{s:i, s:o}", "format", SERIES_FILE_FORMAT, "lines", lines);
}

int series_save(const struct series *s, const char *path, char *err, size_t errlen)
{
    json_t *doc = file_json(s);
    char *text = json_dumps(doc, JSON_COMPACT);
    char *tmp = xasprintf("%s.tmp", path);
    int rc = 0, fd = -1, renaming = 0;
    json_decref(doc);
    if (text == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* O_NOFOLLOW: a link planted at the temporary name must not redirect the write. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd == -1) {
        rc = -errno;
        goto out;
    }
    /* A file left by a crash keeps its old mode through O_TRUNC. */
    if (fchmod(fd, 0600) == -1) {
        rc = -errno;
        goto out;
    }
    rc = write_all(fd, text, strlen(text));
    if (rc < 0)
        goto out;
    /* On disk before the rename, so that the name never points at a file still in the cache
     * only: a power loss then leaves the old file or the whole new one. */
    if (fsync(fd) == -1) {
        rc = -errno;
        goto out;
    }
    rc = close(fd) == -1 ? -errno : 0;
    fd = -1;
    renaming = rc == 0;
    if (renaming && rename(tmp, path) == -1)
        rc = -errno;
out:
    if (rc < 0) {
        if (renaming)
            snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(-rc));
        else
            snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
        unlink(tmp);
    }
    if (fd != -1)
        close(fd);
    free(tmp);
    free(text);
    return rc;
}

/* Reads the whole of path into a new NUL-terminated buffer, refusing what is not a regular
 * file of at most SERIES_FILE_MAX bytes before allocating for it. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    char *buf = NULL;
    struct stat st;
    size_t got = 0;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s", strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > SERIES_FILE_MAX) {
        rc = -EINVAL;
        snprintf(err, errlen, "not a regular file of at most %d bytes", SERIES_FILE_MAX);
        goto out;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            rc = -errno;
            snprintf(err, errlen, "%s", strerror(errno));
            goto out;
        }
        if (n == 0)
            break; /* shrank while we read: what is there is parsed, and must still be valid */
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    if (fd != -1)
        close(fd);
    free(buf);
    return rc;
}

/* The string at key of o, 1..SERIES_FILE_NAME_MAX bytes with no NUL, or NULL. */
static const char *name_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *str = json_string_value(v);
    if (n == 0 || n > SERIES_FILE_NAME_MAX || strlen(str) != n)
        return NULL;
    return str;
}

/* Checks one point of the file and reads it into p; 0, or -EINVAL with err saying which value
 * is wrong and why. prev_t: the line's point before (0 for none). */
static int point_of(json_t *a, double now, double prev_t, struct series_point *p, char *err,
                    size_t errlen)
{
    static const char *const what[] = {"t", "rps", "error_pct", "p99_ms"};
    static const double max[] = {0, SERIES_RPS_MAX, 100, SERIES_P99_MS_MAX};
    double v[4];
    if (!json_is_array(a) || json_array_size(a) != 4) {
        snprintf(err, errlen, "a point is not an array [t, rps, error_pct, p99_ms]");
        return -EINVAL;
    }
    for (size_t k = 0; k < 4; k++) {
        json_t *x = json_array_get(a, k);
        if (!json_is_number(x)) {
            snprintf(err, errlen, "%s is not a number", what[k]);
            return -EINVAL;
        }
        v[k] = json_number_value(x);
        /* Written as !(in range) so that a NaN, which compares false, is refused too. */
        if (!(v[k] >= 0) || !isfinite(v[k]) || (k > 0 && !(v[k] <= max[k]))) {
            snprintf(err, errlen, "%s %g is out of range", what[k], v[k]);
            return -EINVAL;
        }
    }
    if (!(v[0] > prev_t) || !(v[0] <= now + SERIES_FUTURE_S)) {
        snprintf(err, errlen, "t %.3f is not after the point before it and at most now + %.0f s",
                 v[0], SERIES_FUTURE_S);
        return -EINVAL;
    }
    p->t = v[0];
    p->rps = v[1];
    p->error_pct = v[2];
    p->p99_ms = v[3];
    return 0;
}

static struct series_line *find_line(struct series_line **lines, size_t n, const char *service,
                                     const char *version)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(lines[i]->service, service) == 0 && strcmp(lines[i]->version, version) == 0)
            return lines[i];
    return NULL;
}

/* Builds the line of one entry of the file, or NULL when it has no point in the window; -EINVAL
 * with err for a bad entry. */
static int line_of(json_t *o, double now, struct series_line **out, char *err, size_t errlen)
{
    const char *service = name_of(o, "service"), *version = name_of(o, "version");
    json_t *pts = json_object_get(o, "points");
    struct series_line *l = NULL;
    *out = NULL;
    if (service == NULL || version == NULL) {
        snprintf(err, errlen, "service and version must be strings of 1 to %d bytes",
                 SERIES_FILE_NAME_MAX);
        return -EINVAL;
    }
    if (!json_is_array(pts) || json_array_size(pts) > SERIES_FILE_POINTS) {
        snprintf(err, errlen, "points must be an array of at most %d", SERIES_FILE_POINTS);
        return -EINVAL;
    }
    double prev_t = 0;
    size_t i;
    json_t *a;
    json_array_foreach(pts, i, a)
    {
        struct series_point p;
        char why[160];
        int rc = point_of(a, now, prev_t, &p, why, sizeof(why));
        if (rc < 0) {
            snprintf(err, errlen, "points[%zu]: %s", i, why);
            if (l != NULL)
                line_free(l);
            return rc;
        }
        prev_t = p.t;
        if (p.t < now - SERIES_WINDOW_S)
            continue;
        if (l == NULL) {
            l = xcalloc(1, sizeof(*l));
            l->service = xstrdup(service);
            l->version = xstrdup(version);
            l->loaded = 1;
        }
        /* The ring drops the oldest when full: a longer list keeps its newest points. */
        l->pts[(l->head + l->n) % SERIES_POINTS] = p;
        if (l->n == SERIES_POINTS)
            l->head = (l->head + 1) % SERIES_POINTS;
        else
            l->n++;
        l->last_t = p.t;
    }
    *out = l;
    return 0;
}

int series_load(struct series *s, const char *path, double now, char *err, size_t errlen)
{
    char *text = NULL, why[512];
    size_t len = 0, n = 0;
    struct series_line **got = NULL;
    json_error_t jerr;
    json_t *doc = NULL, *lines;
    int rc = read_file(path, &text, &len, why, sizeof(why));
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        goto out;
    }
    rc = -EINVAL;
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        snprintf(err, errlen, "%s: not JSON: line %d: %s", path, jerr.line, jerr.text);
        goto out;
    }
    json_t *format = json_object_get(doc, "format");
    lines = json_object_get(doc, "lines");
    if (!json_is_integer(format) || json_integer_value(format) != SERIES_FILE_FORMAT) {
        snprintf(err, errlen, "%s: format must be %d", path, SERIES_FILE_FORMAT);
        goto out;
    }
    if (!json_is_array(lines) || json_array_size(lines) > SERIES_FILE_LINES) {
        snprintf(err, errlen, "%s: lines must be an array of at most %d", path, SERIES_FILE_LINES);
        goto out;
    }
    /* Every entry is checked before s changes: a file refused half-way adds nothing. */
    got = xcalloc(json_array_size(lines) + 1, sizeof(*got));
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o)
    {
        struct series_line *l;
        if (!json_is_object(o) || line_of(o, now, &l, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s: lines[%zu]: %s", path, i,
                     json_is_object(o) ? why : "not an object");
            goto out;
        }
        if (l == NULL)
            continue;
        if (find_line(got, n, l->service, l->version) != NULL) {
            snprintf(err, errlen, "%s: lines[%zu]: %s %s is listed twice", path, i, l->service,
                     l->version);
            line_free(l);
            goto out;
        }
        got[n++] = l;
    }
    rc = 0;
    for (size_t k = 0; k < n; k++) {
        /* A line s has already is newer than the file's: keep it. */
        if (find_line(s->lines, s->n, got[k]->service, got[k]->version) != NULL) {
            line_free(got[k]);
            continue;
        }
        s->lines = xrealloc(s->lines, (s->n + 1) * sizeof(*s->lines));
        s->lines[s->n++] = got[k];
        rc++;
    }
    n = 0;
out:
    for (size_t k = 0; k < n; k++)
        line_free(got[k]);
    free(got);
    json_decref(doc);
    free(text);
    return rc;
}
