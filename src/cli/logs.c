/* `cutover logs`: the instance logs of a managed service, read from state_dir, followed with
 * -f. CLI process. */
#include "cli/cli.h"
#include "cli/cli_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "config/config.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/text.h"
#include "core/xmalloc.h"

/* --- logs ------------------------------------------------------------------------------------ */

#define CLI_LOGS_POLL_MS 250
#define CLI_LOGS_CHUNK 65536

int cli_log_name_parse(const char *name, char *version, size_t vlen, long *idx)
{
    size_t n = name != NULL ? strlen(name) : 0;
    const char *dash;
    size_t vn;

    if (n < 7 || strcmp(name + n - 4, ".log") != 0)
        return 0;
    /* The version may contain '-': the index is what follows the last one. */
    dash = NULL;
    for (const char *p = name; p < name + n - 4; p++)
        if (*p == '-')
            dash = p;
    if (dash == NULL || dash + 1 == name + n - 4)
        return 0;
    long v = 0;
    for (const char *p = dash + 1; p < name + n - 4; p++) {
        if (*p < '0' || *p > '9' || v > 100000000L)
            return 0;
        v = v * 10 + (*p - '0');
    }
    vn = (size_t)(dash - name);
    if (vn == 0 || vn >= vlen || vn > 64 + strlen(CLI_LOG_BASELINE))
        return 0;
    memcpy(version, name, vn);
    version[vn] = '\0';
    if (!cli_log_version_valid(version))
        return 0;
    *idx = v;
    return 1;
}

struct cli_logfile {
    char *path;
    char version[80]; /* VERSION or VERSION+baseline */
    long idx;
    off_t pos; /* bytes already printed (or skipped) */
    dev_t dev;
    ino_t ino;
};

struct cli_logs {
    char *dir;           /* STATE_DIR/logs/SERVICE */
    const char *version; /* only this version's files, or NULL for all */
    struct cli_logfile *f;
    size_t n, cap;
    const struct cli_logfile *last; /* the file printed last (for follow headers) */
    int printed;                    /* something was printed already */
    int midline;                    /* what was printed last did not end with a newline */
};

static volatile sig_atomic_t cli_logs_stop;

static void cli_logs_on_signal(int sig)
{
    (void)sig;
    cli_logs_stop = 1;
}

static int cli_logfile_cmp(const void *x, const void *y)
{
    const struct cli_logfile *a = x, *b = y;
    int c = strcmp(a->version, b->version);

    if (c != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Adds the matching files of the directory not known yet (pos 0). Returns how many it added. */
static size_t cli_logs_scan(struct cli_logs *L)
{
    DIR *d = opendir(L->dir);
    struct dirent *e;
    size_t added = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char ver[80];
        long idx;
        int known = 0;
        if (!cli_log_name_parse(e->d_name, ver, sizeof(ver), &idx))
            continue;
        if (L->version != NULL && strcmp(ver, L->version) != 0)
            continue;
        for (size_t i = 0; i < L->n && !known; i++)
            known = strcmp(L->f[i].version, ver) == 0 && L->f[i].idx == idx;
        if (known)
            continue;
        if (L->n == L->cap) {
            L->cap = L->cap ? L->cap * 2 : 8;
            L->f = xrealloc(L->f, L->cap * sizeof(*L->f));
        }
        struct cli_logfile *f = &L->f[L->n++];
        memset(f, 0, sizeof(*f));
        f->path = xasprintf("%s/%s", L->dir, e->d_name);
        snprintf(f->version, sizeof(f->version), "%s", ver);
        f->idx = idx;
        added++;
    }
    closedir(d);
    if (added > 0) {
        /* Keep the order stable for the caller's "last" pointer: remember it by path. */
        char *last = L->last ? xstrdup(L->last->path) : NULL;
        qsort(L->f, L->n, sizeof(*L->f), cli_logfile_cmp);
        L->last = NULL;
        for (size_t i = 0; last != NULL && i < L->n; i++)
            if (strcmp(L->f[i].path, last) == 0)
                L->last = &L->f[i];
        free(last);
    }
    return added;
}

static void cli_logs_header(struct cli_logs *L, const struct cli_logfile *f)
{
    if (L->n > 1 && L->last != f) {
        printf("%s%s==> %s <==\n", L->midline ? "\n" : "", L->printed ? "\n" : "", f->path);
        L->midline = 0;
        L->printed = 1;
    }
    L->last = f;
}

/* Copies [from, EOF) of fd to stdout; returns the offset reached. */
static off_t cli_logs_copy(struct cli_logs *L, int fd, off_t from)
{
    char buf[CLI_LOGS_CHUNK];
    ssize_t k;

    while ((k = pread(fd, buf, sizeof(buf), from)) > 0) {
        fwrite(buf, 1, (size_t)k, stdout);
        L->midline = buf[k - 1] != '\n';
        from += k;
    }
    return from;
}

/* The offset where the last `lines` lines of fd (size bytes) begin. A final line without a
 * newline counts as a line; the newline that ends the file does not start one. */
static off_t cli_logs_tail_start(int fd, off_t size, long lines)
{
    char buf[CLI_LOGS_CHUNK];
    off_t end = size;
    long seen = 0;

    if (lines <= 0)
        return size;
    if (size > 0 && pread(fd, buf, 1, size - 1) == 1 && buf[0] == '\n')
        end = size - 1;
    while (end > 0) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t k = pread(fd, buf, (size_t)(end - from), from);
        if (k <= 0)
            return 0;
        for (ssize_t i = k - 1; i >= 0; i--)
            if (buf[i] == '\n' && ++seen == lines)
                return from + i + 1;
        end = from;
    }
    return 0;
}

/* Prints the last lines of f (first pass) and remembers where it stopped. */
static void cli_logs_print_tail(struct cli_logs *L, struct cli_logfile *f, long lines)
{
    struct stat st;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "cutover: %s: %s\n", f->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    cli_logs_header(L, f);
    L->printed = 1;
    f->pos = cli_logs_copy(L, fd, cli_logs_tail_start(fd, st.st_size, lines));
    close(fd);
}

/* One follow round for f: prints what was appended; starts again from 0 when the file was
 * truncated (copytruncate rotation) or replaced. */
static void cli_logs_poll_one(struct cli_logs *L, struct cli_logfile *f)
{
    struct stat st;
    int fd;

    if (stat(f->path, &st) != 0)
        return;
    if (st.st_dev != f->dev || st.st_ino != f->ino) {
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->pos = 0;
    }
    if (st.st_size < f->pos)
        f->pos = 0;
    if (st.st_size == f->pos)
        return;
    fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    cli_logs_header(L, f);
    L->printed = 1;
    f->pos = cli_logs_copy(L, fd, f->pos);
    close(fd);
}

/* GET /api/v1/services/NAME quietly (short timeouts, no message when the daemon is away) and
 * returns live.name as a heap string, or NULL. */
static char *cli_logs_live_version(const struct cli_args *a, const struct config *cfg)
{
    char *base = NULL, *sock = NULL, *url = NULL, *esc, *live = NULL;
    struct curl_slist *hdrs = NULL;
    struct cli_resp r;
    CURL *curl;

    memset(&r, 0, sizeof(r));
    if (a->admin != NULL) {
        if (cli_admin_parse(a->admin, &base, &sock) != 0)
            return NULL;
    } else {
        base = xstrdup("http://localhost");
        sock = xasprintf("%s/cutover.sock", cfg->state_dir);
        if (access(sock, F_OK) != 0)
            goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto out;
    curl = curl_easy_init();
    if (curl == NULL) {
        curl_global_cleanup();
        goto out;
    }
    esc = curl_easy_escape(curl, a->service, 0);
    url = xasprintf("%s/api/v1/services/%s", base, esc ? esc : a->service);
    curl_free(esc);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "cutover-cli/" CUTOVER_VERSION);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cli_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    if (sock != NULL)
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, sock);
    cli_curl_ca(curl);
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (sock == NULL) {
        const char *t = getenv("CUTOVER_TOKEN");
        if (t != NULL && *t != '\0') {
            char *h = xasprintf("Authorization: Bearer %s", t);
            hdrs = curl_slist_append(hdrs, h);
            free(h);
        }
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (curl_easy_perform(curl) == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
        if (r.status == 200 && r.len > 0) {
            json_t *j = json_loadb(r.body, r.len, 0, NULL);
            const char *name = cli_jstr(json_object_get(j, "live"), "name");
            if (name != NULL && cli_version_valid(name))
                live = xstrdup(name);
            json_decref(j);
        }
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
out:
    cli_resp_done(&r);
    free(url);
    free(base);
    free(sock);
    return live;
}

int cli_cmd_logs(const struct cli_args *a)
{
    struct config *cfg = NULL;
    struct cli_logs L;
    char *live = NULL;
    int rc = cli_load_config(a, 0, &cfg);

    if (rc != 0)
        return rc;
    memset(&L, 0, sizeof(L));
    const struct config_service *svc = config_service_find(cfg, a->service);
    if (svc == NULL) {
        fprintf(stderr, "cutover: logs: no service '%s' in %s\n", a->service, a->config);
        config_free(cfg);
        return CLI_EXIT_USAGE;
    }
    if (svc->run.command == NULL) {
        fprintf(stderr,
                "cutover: logs: service '%s' has no managed instances (no `run:` in its config "
                "%s), so cutover keeps no logs for it; read its targets' logs where they run\n",
                a->service, a->config);
        config_free(cfg);
        return CLI_EXIT_USAGE;
    }
    L.dir = xasprintf("%s/logs/%s", cfg->state_dir, a->service);
    L.version = a->version;
    if (L.version == NULL)
        L.version = live = cli_logs_live_version(a, cfg);
    cli_logs_scan(&L);
    if (L.n == 0) {
        fprintf(stderr, "cutover: logs: no log file for %s%s%s in %s\n", a->service,
                L.version ? " " : "", L.version ? L.version : "", L.dir);
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    for (size_t i = 0; i < L.n; i++)
        cli_logs_print_tail(&L, &L.f[i], a->lines);
    fflush(stdout);
    if (a->follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = cli_logs_on_signal; /* no SA_RESTART: nanosleep returns at once */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        while (!cli_logs_stop) {
            struct timespec ts = {0, CLI_LOGS_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
            if (cli_logs_stop)
                break;
            cli_logs_scan(&L); /* an instance started since: its file from the start */
            for (size_t i = 0; i < L.n && !cli_logs_stop; i++)
                cli_logs_poll_one(&L, &L.f[i]);
            if (fflush(stdout) != 0 || ferror(stdout))
                break;
        }
    }
    rc = ferror(stdout) ? CLI_EXIT_FAILED : CLI_EXIT_OK;
out:
    for (size_t i = 0; i < L.n; i++)
        free(L.f[i].path);
    free(L.f);
    free(L.dir);
    free(live);
    config_free(cfg);
    return rc;
}
