/* The process supervisor (see supervisor.h and docs/internals/supervisor.md). It owns, per
 * instance, a copy of the spec, one timer (start notice, restart backoff, stop timeout, group
 * reaping) and either the uv_process_t of our child or the pidfd + uv_poll_t of an adopted
 * process; per supervisor, a 1 s log rotation timer. Control loop only. */
#include "super/supervisor.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/duration.h"
#include "core/xmalloc.h"

extern char **environ;

#define SUP_BACKOFF_MIN_MS 100
#define SUP_BACKOFF_MAX_MS 10000
/* A process that stayed up this long was healthy: its next crash starts the backoff over. */
#define SUP_BACKOFF_RESET_MS 30000
#define SUP_CRASH_MAX_DEFAULT 5
#define SUP_CRASH_WINDOW_DEFAULT_MS 60000
#define SUP_LOG_MAX_DEFAULT (10ULL * 1024 * 1024)
#define SUP_ROTATE_INTERVAL_MS 1000
/* After SIGKILL to the leftovers of a group, how often and how long to look for survivors. */
#define SUP_REAP_POLL_MS 20
#define SUP_REAP_MAX_MS 2000

enum inst_state {
    ST_RUNNING,  /* a process is alive and watched */
    ST_BACKOFF,  /* it exited; the timer restarts it */
    ST_CRASHED,  /* crash loop: no process, no restart, waits for stop or release */
    ST_STOPPING, /* stop_signal sent; the timer sends SIGKILL */
    ST_REAPING,  /* the leader is gone; waiting for the rest of its group, then STOPPED */
    ST_DEAD,     /* stopped or released: freed once its handles are closed */
};

struct supervisor {
    uv_loop_t *loop;
    uv_timer_t rotate_timer;
    uv_timer_t done_timer; /* calls stop_all's done outside of the caller's stack */
    int nhandles;          /* of the two timers above, not yet through their close callback */
    struct sup_instance *head;
    int ninst; /* instances not yet freed, dead ones included */
    bool stopping;
    bool freeing;
    void (*done)(void *ctx);
    void *done_ctx;
};

struct sup_instance {
    struct supervisor *sv;
    struct sup_instance *prev, *next;
    sup_event_cb cb;
    void *ctx;

    char *service, *version, *cwd, *log_path;
    char **argv; /* expanded */
    char **env;  /* the spec's extra variables, may be NULL */
    int index, port, stop_signal, crash_max;
    uint64_t stop_timeout_ms, log_max_bytes, crash_window_ms;

    enum inst_state state;
    pid_t pid;  /* 0 when no process */
    pid_t pgid; /* group to signal, 0 when the process does not lead its own group */
    uint64_t start_ticks;
    uv_process_t *proc; /* our child */
    uv_poll_t *poll;    /* an adopted process, through its pidfd */
    int pidfd;
    uv_timer_t *timer;
    int nhandles; /* handles not yet through their close callback */
    int busy;     /* depth of event callbacks running on this instance */
    bool started_pending;
    bool killed; /* the stop timeout expired and SIGKILL was sent */
    uint64_t started_at, backoff_ms, reap_deadline;
    uint64_t *exits; /* ring of the last crash_max exit times */
    int nexits, exit_pos;
    int restarts;
    char how[160]; /* how the last process ended, for the STOPPED detail */
};

static void inst_maybe_free(struct sup_instance *in);
static void sv_maybe_finish(struct supervisor *sv);

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char **strv_dup(char *const *v)
{
    size_t n = 0;
    char **out;
    if (v == NULL)
        return NULL;
    while (v[n] != NULL)
        n++;
    out = xcalloc(n + 1, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(v[i]);
    return out;
}

static void strv_free(char **v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

/* Returns a heap copy of s with ${PORT} ${VERSION} ${INSTANCE} ${SERVICE} replaced; any other
 * ${...} is kept as written so that a program's own syntax passes through untouched. */
static char *expand(const char *s, const struct sup_spec *spec)
{
    char port[16], index[16];
    size_t cap = strlen(s) + 1, len = 0;
    char *out = xmalloc(cap);

    snprintf(port, sizeof(port), "%d", spec->port);
    snprintf(index, sizeof(index), "%d", spec->index);
    while (*s != '\0') {
        const char *val = NULL;
        size_t skip = 0;
        if (s[0] == '$' && s[1] == '{') {
            static const char *const names[] = {"PORT", "VERSION", "INSTANCE", "SERVICE"};
            const char *vals[] = {port, spec->version, index, spec->service};
            for (size_t i = 0; i < 4; i++) {
                size_t n = strlen(names[i]);
                if (strncmp(s + 2, names[i], n) == 0 && s[2 + n] == '}') {
                    val = vals[i] != NULL ? vals[i] : "";
                    skip = n + 3;
                    break;
                }
            }
        }
        size_t add = val != NULL ? strlen(val) : 1;
        if (len + add + 1 > cap) {
            cap = (len + add + 1) * 2;
            out = xrealloc(out, cap);
        }
        if (val != NULL) {
            memcpy(out + len, val, add);
            s += skip;
        } else {
            out[len] = *s++;
        }
        len += add;
    }
    out[len] = '\0';
    return out;
}

static bool env_name_eq(const char *a, const char *b)
{
    while (*a != '\0' && *a != '=' && *a == *b) {
        a++;
        b++;
    }
    return (*a == '=' || *a == '\0') && (*b == '=' || *b == '\0');
}

static bool env_has(char *const *v, size_t n, const char *entry)
{
    for (size_t i = 0; i < n; i++)
        if (env_name_eq(v[i], entry))
            return true;
    return false;
}

/* Builds the child's environment: our variables win over the spec's, which win over the
 * daemon's. The caller frees it with strv_free. */
static char **build_env(const struct sup_instance *in)
{
    size_t n = 0, nspec = 0, nenv = 0;
    char **out;

    while (in->env != NULL && in->env[nspec] != NULL)
        nspec++;
    while (environ != NULL && environ[nenv] != NULL)
        nenv++;
    out = xcalloc(4 + nspec + nenv + 1, sizeof(*out));
    out[n++] = xasprintf("PORT=%d", in->port);
    out[n++] = xasprintf("CUTOVER_SERVICE=%s", in->service != NULL ? in->service : "");
    out[n++] = xasprintf("CUTOVER_VERSION=%s", in->version != NULL ? in->version : "");
    out[n++] = xasprintf("CUTOVER_INSTANCE=%d", in->index);
    for (size_t i = 0; i < nspec; i++)
        if (strchr(in->env[i], '=') != NULL && !env_has(out, n, in->env[i]))
            out[n++] = xstrdup(in->env[i]);
    for (size_t i = 0; i < nenv; i++)
        if (!env_has(out, n, environ[i]))
            out[n++] = xstrdup(environ[i]);
    out[n] = NULL;
    return out;
}

static const char *env_get(char *const *env, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; env[i] != NULL; i++)
        if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
            return env[i] + n + 1;
    return NULL;
}

static int check_exec(const char *path)
{
    struct stat st;
    if (stat(path, &st) == -1)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EACCES;
    if (access(path, X_OK) == -1)
        return -errno;
    return 0;
}

/* Finds what execvp would run, so that a typo fails the start with a message instead of a
 * crash loop. A name with a slash is checked relative to cwd (where the child will be); a bare
 * name is looked up in the child's PATH, skipping relative entries whose meaning would depend on
 * cwd. On success *file is the path to hand to uv_spawn (heap). */
static int resolve_cmd(const struct sup_instance *in, char *const *env, char **file, char *err,
                       size_t errlen)
{
    const char *cmd = in->argv[0];
    int rc;

    if (strchr(cmd, '/') != NULL) {
        char *check =
            cmd[0] != '/' && in->cwd != NULL ? xasprintf("%s/%s", in->cwd, cmd) : xstrdup(cmd);
        rc = check_exec(check);
        free(check);
        if (rc < 0) {
            set_err(err, errlen, "exec of %s failed: %s", cmd, strerror(-rc));
            return rc;
        }
        *file = xstrdup(cmd);
        return 0;
    }

    const char *path = env_get(env, "PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    rc = -ENOENT;
    for (const char *p = path; *p != '\0';) {
        const char *end = strchr(p, ':');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n > 0 && p[0] == '/') {
            char *cand = xasprintf("%.*s/%s", (int)n, p, cmd);
            int r = check_exec(cand);
            if (r == 0) {
                *file = cand;
                return 0;
            }
            free(cand);
            if (r == -EACCES)
                rc = r; /* remember that one existed but was not executable */
        }
        p += n;
        if (*p == ':')
            p++;
    }
    if (rc == -EACCES)
        set_err(err, errlen, "exec of %s failed: found in PATH but not executable", cmd);
    else
        set_err(err, errlen, "exec of %s failed: not found in PATH (%s)", cmd, path);
    return rc;
}

/* mkdir -p of the directories above path, mode 0750 (logs may say more than the world should
 * read). */
static int mkdir_parents(const char *path)
{
    char *dir = xstrdup(path);
    int rc = 0;
    char *slash = strrchr(dir, '/');

    if (slash == NULL || slash == dir)
        goto out;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
            rc = -errno;
            goto out;
        }
        *p = c;
        if (c == '\0')
            break;
    }
out:
    free(dir);
    return rc;
}

/* Fields of /proc/PID/stat after the command name, which may hold spaces and ')' itself, so
 * parsing starts after the last ')'. Returns 0 or -errno. */
static int read_stat(pid_t pid, char *state, pid_t *pgrp, uint64_t *ticks)
{
    char path[64], buf[1024];
    ssize_t n;
    int fd, rc = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n == -1) {
        rc = -errno;
        goto out;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        rc = -EINVAL;
        goto out;
    }
    p += 2;
    *state = *p;
    /* p is at field 3 (state); pgrp is field 5, starttime field 22. */
    for (int field = 3; field < 22; field++) {
        char *end;
        if (field == 5) {
            long v = strtol(p, &end, 10);
            if (end == p) {
                rc = -EINVAL;
                goto out;
            }
            *pgrp = (pid_t)v;
        }
        p = strchr(p, ' ');
        if (p == NULL) {
            rc = -EINVAL;
            goto out;
        }
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long t = strtoull(p, &end, 10);
    if (end == p || errno != 0) {
        rc = -EINVAL;
        goto out;
    }
    *ticks = t;
out:
    close(fd);
    return rc;
}

/* Counts the processes of group pgid that are still alive. Zombies are left out on purpose:
 * they hold no port, file or memory, and whether they linger depends on how soon init reaps
 * orphans, which is not ours to fix. */
static int group_live_members(pid_t pgid)
{
    DIR *d;
    struct dirent *de;
    int count = 0;

    if (pgid <= 1 || (kill(-pgid, 0) == -1 && errno == ESRCH))
        return 0;
    d = opendir("/proc");
    if (d == NULL)
        return 1; /* cannot tell: assume the worst, kill(-pgid, 0) said someone is there */
    while ((de = readdir(d)) != NULL) {
        char state = 0;
        pid_t pgrp = 0;
        uint64_t ticks = 0;
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        long pid = strtol(de->d_name, NULL, 10);
        if (read_stat((pid_t)pid, &state, &pgrp, &ticks) == 0 && pgrp == pgid && state != 'Z' &&
            state != 'X')
            count++;
    }
    closedir(d);
    return count;
}

static void describe_status(char *buf, size_t n, pid_t pid, int64_t status, int sig)
{
    if (sig != 0)
        snprintf(buf, n, "process %d killed by signal %d (%s)", (int)pid, sig, strsignal(sig));
    else
        snprintf(buf, n, "process %d exited with status %lld", (int)pid, (long long)status);
}

/* ---- handles ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct sup_instance *in = h->data;
    free(h);
    in->nhandles--;
    inst_maybe_free(in);
}

static void close_proc(struct sup_instance *in)
{
    if (in->proc != NULL) {
        uv_close((uv_handle_t *)in->proc, on_handle_closed);
        in->proc = NULL;
    }
    if (in->poll != NULL) {
        /* uv_close stops the polling at once, so the pidfd may go now. */
        uv_close((uv_handle_t *)in->poll, on_handle_closed);
        in->poll = NULL;
        close(in->pidfd);
        in->pidfd = -1;
    }
}

static void emit(struct sup_instance *in, enum sup_event ev, const char *detail)
{
    in->busy++;
    in->cb(in->ctx, in, ev, detail);
    in->busy--;
}

/* Marks the instance dead and closes its handles; it is freed when the last one is closed and
 * no event callback of it is running. */
static void inst_kill_handles(struct sup_instance *in)
{
    in->state = ST_DEAD;
    in->started_pending = false;
    close_proc(in);
    if (in->timer != NULL) {
        uv_close((uv_handle_t *)in->timer, on_handle_closed);
        in->timer = NULL;
    }
}

static void inst_maybe_free(struct sup_instance *in)
{
    struct supervisor *sv = in->sv;

    if (in->state != ST_DEAD || in->busy > 0 || in->nhandles > 0)
        return;
    if (in->prev != NULL)
        in->prev->next = in->next;
    else
        sv->head = in->next;
    if (in->next != NULL)
        in->next->prev = in->prev;
    sv->ninst--;
    free(in->service);
    free(in->version);
    free(in->cwd);
    free(in->log_path);
    strv_free(in->argv);
    strv_free(in->env);
    free(in->exits);
    free(in);
    sv_maybe_finish(sv);
}

static void signal_group(struct sup_instance *in, int sig)
{
    if (in->pgid > 1)
        kill(-in->pgid, sig);
    /* Also the pid itself, in case it left its group; an adopted one through its pidfd, so a
     * reused pid can never be hit. */
    if (in->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, in->pidfd, sig, NULL, 0);
    else if (in->pid > 0)
        kill(in->pid, sig);
}

/* ---- spawning ---- */

static void on_proc_exit(uv_process_t *p, int64_t status, int term_signal);

/* Starts one process of the instance. Returns 0 or a negative errno with err filled. */
static int inst_spawn(struct sup_instance *in, char *err, size_t errlen)
{
    uv_process_options_t opt;
    uv_stdio_container_t stdio[3];
    char **env = build_env(in);
    char *file = NULL;
    int logfd = -1, rc = 0;
    struct stat st;

    if (in->cwd != NULL) {
        if (stat(in->cwd, &st) == -1)
            rc = -errno;
        else if (!S_ISDIR(st.st_mode))
            rc = -ENOTDIR;
        if (rc < 0) {
            set_err(err, errlen, "cwd %s: %s", in->cwd, strerror(-rc));
            goto out;
        }
    }
    rc = resolve_cmd(in, env, &file, err, errlen);
    if (rc < 0)
        goto out;
    if (in->log_path != NULL) {
        rc = mkdir_parents(in->log_path);
        if (rc < 0) {
            set_err(err, errlen, "log file %s: cannot create its directory: %s", in->log_path,
                    strerror(-rc));
            goto out;
        }
        logfd = open(in->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (logfd == -1) {
            rc = -errno;
            set_err(err, errlen, "log file %s: %s", in->log_path, strerror(-rc));
            goto out;
        }
    }

    memset(&opt, 0, sizeof(opt));
    memset(stdio, 0, sizeof(stdio));
    stdio[0].flags = UV_IGNORE; /* libuv opens /dev/null for it */
    for (int i = 1; i <= 2; i++) {
        stdio[i].flags = logfd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
        stdio[i].data.fd = logfd;
    }
    opt.exit_cb = on_proc_exit;
    opt.file = file;
    opt.args = in->argv;
    opt.env = env;
    opt.cwd = in->cwd;
    /* DETACHED = setsid(): a group of its own to signal as a whole, and no SIGHUP or terminal
     * signal reaches it when the daemon goes away. */
    opt.flags = UV_PROCESS_DETACHED;
    opt.stdio = stdio;
    opt.stdio_count = 3;

    in->proc = xcalloc(1, sizeof(*in->proc));
    in->proc->data = in;
    in->nhandles++;
    rc = uv_spawn(in->sv->loop, in->proc, &opt);
    if (rc < 0) {
        set_err(err, errlen, "exec of %s failed: %s", in->argv[0], uv_strerror(rc));
        close_proc(in); /* a handle uv_spawn refused must still be closed */
        goto out;
    }
    in->pid = in->proc->pid;
    in->pgid = in->pid;
    in->start_ticks = sup_pid_start_ticks(in->pid);
    in->started_at = uv_now(in->sv->loop);
    in->state = ST_RUNNING;
out:
    if (logfd >= 0)
        close(logfd);
    free(file);
    strv_free(env);
    return rc;
}

/* ---- exits, restarts, crash loops ---- */

static void on_started_timer(uv_timer_t *t)
{
    struct sup_instance *in = t->data;
    if (!in->started_pending)
        return;
    in->started_pending = false;
    emit(in, SUP_EV_STARTED, "started");
    inst_maybe_free(in);
}

static void on_backoff_timer(uv_timer_t *t);

/* Records an exit; returns true when it completes a crash loop. */
static bool record_exit(struct sup_instance *in, uint64_t now)
{
    in->exits[in->exit_pos] = now;
    in->exit_pos = (in->exit_pos + 1) % in->crash_max;
    if (in->nexits < in->crash_max)
        in->nexits++;
    /* The slot at exit_pos now holds the oldest of the last crash_max exits. */
    return in->nexits == in->crash_max && now - in->exits[in->exit_pos] <= in->crash_window_ms;
}

/* The process ended (or could not be started again) while no stop was asked for. */
static void inst_failed(struct sup_instance *in, const char *how)
{
    uint64_t now = uv_now(in->sv->loop);
    char detail[512], dur[32];

    if (in->started_at != 0 && now - in->started_at >= SUP_BACKOFF_RESET_MS)
        in->backoff_ms = SUP_BACKOFF_MIN_MS;
    in->started_at = 0;
    in->pid = 0;
    if (record_exit(in, now)) {
        in->state = ST_CRASHED;
        snprintf(detail, sizeof(detail), "%s; %d exits within %s, not restarting%s%s", how,
                 in->crash_max, duration_format(in->crash_window_ms, dur, sizeof(dur)),
                 in->log_path != NULL ? "; see " : "", in->log_path != NULL ? in->log_path : "");
        emit(in, SUP_EV_CRASHLOOP, detail);
        inst_maybe_free(in);
        return;
    }
    /* Schedule first, then tell: the callback may stop or release the instance, and either
     * must find the restart to cancel. */
    in->state = ST_BACKOFF;
    uv_timer_start(in->timer, on_backoff_timer, in->backoff_ms, 0);
    snprintf(detail, sizeof(detail), "%s; restarting in %s", how,
             duration_format(in->backoff_ms, dur, sizeof(dur)));
    in->backoff_ms *= 2;
    if (in->backoff_ms > SUP_BACKOFF_MAX_MS)
        in->backoff_ms = SUP_BACKOFF_MAX_MS;
    emit(in, SUP_EV_EXITED, detail);
    inst_maybe_free(in);
}

static void on_backoff_timer(uv_timer_t *t)
{
    struct sup_instance *in = t->data;
    char err[256];

    if (in->state != ST_BACKOFF)
        return;
    if (inst_spawn(in, err, sizeof(err)) < 0) {
        inst_failed(in, err);
        return;
    }
    in->restarts++;
    emit(in, SUP_EV_STARTED, "restarted");
    inst_maybe_free(in);
}

static void finish_stop(struct sup_instance *in)
{
    char detail[256];
    int left = in->pgid > 1 ? group_live_members(in->pgid) : 0;

    if (left > 0)
        snprintf(detail, sizeof(detail), "%s; %d process(es) of group %d still alive after SIGKILL",
                 in->how, left, (int)in->pgid);
    else
        snprintf(detail, sizeof(detail), "%s", in->how);
    in->pid = 0;
    in->pgid = 0;
    /* Dead first: nothing the callback does can restart or stop it again. */
    inst_kill_handles(in);
    emit(in, SUP_EV_STOPPED, detail);
    inst_maybe_free(in);
}

static void on_reap_timer(uv_timer_t *t)
{
    struct sup_instance *in = t->data;

    if (in->state != ST_REAPING)
        return;
    if (in->pgid > 1 && group_live_members(in->pgid) > 0 &&
        uv_now(in->sv->loop) < in->reap_deadline) {
        uv_timer_start(in->timer, on_reap_timer, SUP_REAP_POLL_MS, 0);
        return;
    }
    finish_stop(in);
}

/* The leader of the group is gone (reaped, or seen exiting through its pidfd). */
static void on_leader_gone(struct sup_instance *in, const char *how)
{
    close_proc(in);
    uv_timer_stop(in->timer);
    /* A first process that dies before its start was announced gets no STARTED: it would name
     * a pid already reaped. The EXITED or CRASHLOOP that follows says what happened. */
    in->started_pending = false;
    in->pid = 0;
    /* A background child of the instance may outlive the leader and still hold its port or
     * its files; the group is the instance, so it goes with its leader, stopped or not. */
    if (in->pgid > 1 && kill(-in->pgid, 0) == 0)
        kill(-in->pgid, SIGKILL);
    if (in->state == ST_STOPPING) {
        snprintf(in->how, sizeof(in->how), "%s%s", how,
                 in->killed ? " after the stop timeout" : "");
        in->state = ST_REAPING;
        in->reap_deadline = uv_now(in->sv->loop) + SUP_REAP_MAX_MS;
        uv_timer_start(in->timer, on_reap_timer, 0, 0);
        return;
    }
    in->pgid = 0;
    inst_failed(in, how);
}

static void on_proc_exit(uv_process_t *p, int64_t status, int term_signal)
{
    struct sup_instance *in = p->data;
    char how[128];

    describe_status(how, sizeof(how), p->pid, status, term_signal);
    on_leader_gone(in, how);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
    struct sup_instance *in = h->data;
    char how[128];

    (void)status;
    (void)events;
    /* Readable (or an error on it) means the process exited; not being its parent we never
     * learn how. */
    snprintf(how, sizeof(how), "process %d exited (adopted process, status unknown)", (int)in->pid);
    on_leader_gone(in, how);
}

/* ---- instances ---- */

static struct sup_instance *inst_new(struct supervisor *sv, const struct sup_spec *spec,
                                     sup_event_cb cb, void *ctx)
{
    struct sup_instance *in = xcalloc(1, sizeof(*in));
    size_t n = 0;

    in->sv = sv;
    in->cb = cb;
    in->ctx = ctx;
    in->service = xstrdup(spec->service);
    in->version = xstrdup(spec->version);
    in->cwd = xstrdup(spec->cwd);
    in->log_path = xstrdup(spec->log_path);
    while (spec->argv[n] != NULL)
        n++;
    in->argv = xcalloc(n + 1, sizeof(*in->argv));
    for (size_t i = 0; i < n; i++)
        in->argv[i] = expand(spec->argv[i], spec);
    in->env = strv_dup(spec->env);
    in->index = spec->index;
    in->port = spec->port;
    in->stop_signal = spec->stop_signal > 0 ? spec->stop_signal : SIGTERM;
    in->stop_timeout_ms = spec->stop_timeout_ms;
    in->log_max_bytes = spec->log_max_bytes != 0 ? spec->log_max_bytes : SUP_LOG_MAX_DEFAULT;
    if (spec->crash_max > 0 && spec->crash_window_ms > 0) {
        in->crash_max = spec->crash_max;
        in->crash_window_ms = spec->crash_window_ms;
    } else {
        in->crash_max = SUP_CRASH_MAX_DEFAULT;
        in->crash_window_ms = SUP_CRASH_WINDOW_DEFAULT_MS;
    }
    in->exits = xcalloc((size_t)in->crash_max, sizeof(*in->exits));
    in->backoff_ms = SUP_BACKOFF_MIN_MS;
    in->pidfd = -1;
    in->state = ST_BACKOFF; /* no process yet */

    in->timer = xcalloc(1, sizeof(*in->timer));
    uv_timer_init(sv->loop, in->timer);
    in->timer->data = in;
    in->nhandles++;

    in->next = sv->head;
    if (sv->head != NULL)
        sv->head->prev = in;
    sv->head = in;
    sv->ninst++;
    return in;
}

static bool spec_ok(struct supervisor *sv, const struct sup_spec *spec, sup_event_cb cb, char *err,
                    size_t errlen)
{
    if (sv->stopping || sv->freeing) {
        set_err(err, errlen, "the supervisor is shutting down");
        return false;
    }
    if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0') {
        set_err(err, errlen, "empty command");
        return false;
    }
    if (cb == NULL) {
        set_err(err, errlen, "no event callback");
        return false;
    }
    return true;
}

struct sup_instance *sup_instance_start(struct supervisor *sv, const struct sup_spec *spec,
                                        sup_event_cb cb, void *ctx, char *err, size_t errlen)
{
    struct sup_instance *in;

    if (!spec_ok(sv, spec, cb, err, errlen))
        return NULL;
    in = inst_new(sv, spec, cb, ctx);
    if (inst_spawn(in, err, errlen) < 0) {
        inst_kill_handles(in); /* freed from the close callbacks */
        return NULL;
    }
    /* STARTED comes from the loop, not from inside this call: the caller does not even hold
     * the pointer yet. */
    in->started_pending = true;
    uv_timer_start(in->timer, on_started_timer, 0, 0);
    return in;
}

struct sup_instance *sup_instance_adopt(struct supervisor *sv, const struct sup_spec *spec,
                                        pid_t pid, uint64_t start_ticks, sup_event_cb cb, void *ctx,
                                        char *err, size_t errlen)
{
    struct sup_instance *in;
    uint64_t ticks;
    int fd, rc;

    if (!spec_ok(sv, spec, cb, err, errlen))
        return NULL;
    if (pid <= 1) {
        set_err(err, errlen, "invalid pid %d", (int)pid);
        return NULL;
    }
    ticks = sup_pid_start_ticks(pid);
    if (ticks == 0) {
        set_err(err, errlen, "process %d is not running", (int)pid);
        return NULL;
    }
    if (ticks != start_ticks) {
        set_err(err, errlen,
                "process %d is not the instance: it started at tick %llu, not %llu (pid reused)",
                (int)pid, (unsigned long long)ticks, (unsigned long long)start_ticks);
        return NULL;
    }
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd == -1) {
        set_err(err, errlen, "pidfd_open of process %d: %s", (int)pid, strerror(errno));
        return NULL;
    }
    /* The pid may have died and been reused between the first check and pidfd_open; checking
     * again now that the fd pins one process closes that window. */
    if (sup_pid_start_ticks(pid) != start_ticks) {
        set_err(err, errlen, "process %d exited while being adopted", (int)pid);
        close(fd);
        return NULL;
    }

    in = inst_new(sv, spec, cb, ctx);
    in->pid = pid;
    in->start_ticks = start_ticks;
    /* Signal the group only if the process leads one, as every instance we start does;
     * otherwise the group could be the daemon's own or a stranger's. */
    in->pgid = getpgid(pid) == pid ? pid : 0;
    in->pidfd = fd;
    in->started_at = uv_now(sv->loop);
    in->state = ST_RUNNING;
    in->poll = xcalloc(1, sizeof(*in->poll));
    in->poll->data = in;
    rc = uv_poll_init(sv->loop, in->poll, fd);
    if (rc < 0) {
        free(in->poll);
        in->poll = NULL;
        set_err(err, errlen, "watching process %d: %s", (int)pid, uv_strerror(rc));
        inst_kill_handles(in);
        close(fd);
        in->pidfd = -1;
        return NULL;
    }
    in->nhandles++;
    rc = uv_poll_start(in->poll, UV_READABLE, on_pidfd);
    if (rc < 0) {
        set_err(err, errlen, "watching process %d: %s", (int)pid, uv_strerror(rc));
        inst_kill_handles(in); /* closes the pidfd with the poll handle */
        return NULL;
    }
    return in;
}

static void on_kill_timer(uv_timer_t *t)
{
    struct sup_instance *in = t->data;

    if (in->state != ST_STOPPING)
        return;
    in->killed = true;
    signal_group(in, SIGKILL);
}

void sup_instance_stop(struct sup_instance *in)
{
    if (in == NULL || in->state == ST_DEAD || in->state == ST_STOPPING || in->state == ST_REAPING)
        return;
    in->started_pending = false;
    uv_timer_stop(in->timer);
    if (in->state == ST_RUNNING) {
        in->state = ST_STOPPING;
        signal_group(in, in->stop_signal);
        uv_timer_start(in->timer, on_kill_timer, in->stop_timeout_ms, 0);
        return;
    }
    /* No process (backoff or crash loop): STOPPED still comes from the loop, never from
     * inside this call. */
    snprintf(in->how, sizeof(in->how), "stopped while no process was running");
    in->state = ST_REAPING;
    in->reap_deadline = uv_now(in->sv->loop);
    uv_timer_start(in->timer, on_reap_timer, 0, 0);
}

void sup_instance_release(struct sup_instance *in)
{
    if (in == NULL || in->state == ST_DEAD)
        return;
    /* Closing the process handle only stops libuv from watching it; the process runs on. */
    inst_kill_handles(in);
    inst_maybe_free(in);
}

pid_t sup_instance_pid(const struct sup_instance *in)
{
    return in->pid;
}

uint64_t sup_instance_start_ticks(const struct sup_instance *in)
{
    return in->pid > 0 ? in->start_ticks : 0;
}

int sup_instance_port(const struct sup_instance *in)
{
    return in->port;
}

int sup_instance_restarts(const struct sup_instance *in)
{
    return in->restarts;
}

/* ---- ports and /proc ---- */

int sup_port_pick(int lo, int hi, const int *used, size_t nused)
{
    if (lo < 1 || hi > 65535 || lo > hi)
        return -EINVAL;
    for (int port = lo; port <= hi; port++) {
        bool taken = false;
        for (size_t i = 0; i < nused && !taken; i++)
            taken = used[i] == port;
        if (taken)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1)
            return -errno;
        /* No SO_REUSEADDR: a port in TIME_WAIT counts as taken, as it would for a server that
         * does not set it either. */
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return port;
    }
    return -EADDRNOTAVAIL;
}

uint64_t sup_pid_start_ticks(pid_t pid)
{
    char state = 0;
    pid_t pgrp = 0;
    uint64_t ticks = 0;

    if (pid <= 0 || read_stat(pid, &state, &pgrp, &ticks) < 0)
        return 0;
    if (state == 'Z' || state == 'X')
        return 0; /* exited, only waiting for its parent to reap it */
    return ticks;
}

/* ---- log rotation ---- */

/* copytruncate: the process keeps writing through its O_APPEND fd, so after truncate its next
 * write lands at the new end of file. Bytes written between the copy and the truncate are
 * lost; that is the price of not needing the process's cooperation. Runs on the loop: a copy
 * of log_max_bytes is a few milliseconds of page-cache I/O. */
static void rotate_one(const char *path, uint64_t max)
{
    struct stat st;
    char buf[65536];
    char *dst = NULL, *tmp = NULL;
    int in = -1, out = -1;
    ssize_t n;

    if (stat(path, &st) == -1 || (uint64_t)st.st_size <= max)
        return;
    dst = xasprintf("%s.1", path);
    tmp = xasprintf("%s.1.tmp", path);
    in = open(path, O_RDONLY | O_CLOEXEC);
    if (in == -1)
        goto out;
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out == -1)
        goto out;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w == -1) {
                if (errno == EINTR)
                    continue;
                goto out;
            }
            off += w;
        }
    }
    if (n == -1)
        goto out;
    if (close(out) == -1) {
        out = -1;
        goto out;
    }
    out = -1;
    if (rename(tmp, dst) == -1)
        goto out;
    if (truncate(path, 0) == -1)
        goto out;
out:
    /* A failed rotation is retried on the next tick; library modules do not log. */
    if (out >= 0) {
        close(out);
        unlink(tmp);
    }
    if (in >= 0)
        close(in);
    free(dst);
    free(tmp);
}

static void on_rotate_timer(uv_timer_t *t)
{
    struct supervisor *sv = t->data;
    for (struct sup_instance *in = sv->head; in != NULL; in = in->next)
        if (in->state != ST_DEAD && in->log_path != NULL)
            rotate_one(in->log_path, in->log_max_bytes);
}

/* ---- the supervisor ---- */

struct supervisor *supervisor_new(uv_loop_t *loop)
{
    struct supervisor *sv = xcalloc(1, sizeof(*sv));

    sv->loop = loop;
    uv_timer_init(loop, &sv->rotate_timer);
    sv->rotate_timer.data = sv;
    uv_timer_init(loop, &sv->done_timer);
    sv->done_timer.data = sv;
    sv->nhandles = 2;
    uv_timer_start(&sv->rotate_timer, on_rotate_timer, SUP_ROTATE_INTERVAL_MS,
                   SUP_ROTATE_INTERVAL_MS);
    /* Rotation alone must not keep the loop running; the processes do. */
    uv_unref((uv_handle_t *)&sv->rotate_timer);
    uv_unref((uv_handle_t *)&sv->done_timer);
    return sv;
}

static void on_sv_handle_closed(uv_handle_t *h)
{
    struct supervisor *sv = h->data;
    if (--sv->nhandles == 0)
        free(sv);
}

static void on_done_timer(uv_timer_t *t)
{
    struct supervisor *sv = t->data;
    void (*done)(void *) = sv->done;

    if (done == NULL || sv->ninst > 0)
        return;
    sv->done = NULL;
    sv->stopping = false;
    done(sv->done_ctx);
}

/* Called whenever an instance is freed: completes stop_all and a deferred supervisor_free. */
static void sv_maybe_finish(struct supervisor *sv)
{
    if (sv->ninst > 0)
        return;
    if (sv->freeing) {
        if (!uv_is_closing((uv_handle_t *)&sv->rotate_timer)) {
            uv_close((uv_handle_t *)&sv->rotate_timer, on_sv_handle_closed);
            uv_close((uv_handle_t *)&sv->done_timer, on_sv_handle_closed);
        }
        return;
    }
    if (sv->done != NULL) {
        uv_ref((uv_handle_t *)&sv->done_timer);
        uv_timer_start(&sv->done_timer, on_done_timer, 0, 0);
    }
}

void supervisor_stop_all(struct supervisor *sv, void (*done)(void *ctx), void *ctx)
{
    sv->stopping = true;
    sv->done = done;
    sv->done_ctx = ctx;
    for (struct sup_instance *in = sv->head; in != NULL; in = in->next)
        sup_instance_stop(in);
    sv_maybe_finish(sv);
}

void supervisor_free(struct supervisor *sv)
{
    if (sv == NULL || sv->freeing)
        return;
    sv->freeing = true;
    sv->done = NULL;
    sv_maybe_finish(sv);
}
