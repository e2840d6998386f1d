/* Passing listening sockets between cutover processes (see handover.h). Control thread. */
#include "net/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/xmalloc.h"

#define LISTEN_FDS_START 3
#define MAX_INHERITED 256

/* ---------------------------------------------------------------- giving side --------------- */

struct handover {
    uv_process_t proc;
    uv_pipe_t chan;
    uv_timer_t timer;
    handover_cb cb;
    void *ctx;
    char msg[512];
    size_t len;
    int handles;
    int done;
    pid_t pid;
};

static void on_closed(uv_handle_t *h)
{
    struct handover *ho = h->data;
    if (--ho->handles == 0)
        free(ho);
}

static void finish(struct handover *ho, int ok, const char *message)
{
    if (ho->done)
        return;
    ho->done = 1;
    uv_timer_stop(&ho->timer);
    handover_cb cb = ho->cb;
    ho->cb = NULL;
    if (!ok && ho->pid > 0)
        kill(ho->pid, SIGKILL); /* a successor that failed must not linger half-started */
    if (cb)
        cb(ho->ctx, ok, ho->pid, message);
    uv_close((uv_handle_t *)&ho->chan, on_closed);
    uv_close((uv_handle_t *)&ho->timer, on_closed);
    /* A successor that took over outlives us: stop watching it (closing the handle does not
     * touch the process). A failed one is closed by its exit callback, after the kill. */
    if (ok)
        uv_close((uv_handle_t *)&ho->proc, on_closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct handover *ho = p->data;
    char why[160];
    if (sig != 0)
        snprintf(why, sizeof(why), "the new process was killed by signal %d before it was ready",
                 sig);
    else
        snprintf(why, sizeof(why), "the new process exited with status %lld before it was ready",
                 (long long)status);
    if (!ho->done) {
        if (ho->len > 6 && strncmp(ho->msg, "ERROR ", 6) == 0) {
            char *nl = memchr(ho->msg, '\n', ho->len);
            if (nl)
                *nl = '\0';
            finish(ho, 0, ho->msg + 6);
        } else {
            finish(ho, 0, why);
        }
    }
    if (!uv_is_closing((uv_handle_t *)p))
        uv_close((uv_handle_t *)p, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct handover *ho = h->data;
    (void)hint;
    *buf = uv_buf_init(ho->msg + ho->len, (unsigned)(sizeof(ho->msg) - 1 - ho->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct handover *ho = s->data;
    (void)buf;
    if (n < 0) {
        uv_read_stop(s);
        return; /* EOF: the exit callback says how it ended */
    }
    ho->len += (size_t)n;
    ho->msg[ho->len] = '\0';
    char *nl = memchr(ho->msg, '\n', ho->len);
    if (nl == NULL) {
        if (ho->len == sizeof(ho->msg) - 1)
            finish(ho, 0, "the new process sent an unreadable readiness message");
        return;
    }
    *nl = '\0';
    if (strcmp(ho->msg, "READY") == 0)
        finish(ho, 1, "ready");
    else if (strncmp(ho->msg, "ERROR ", 6) == 0)
        finish(ho, 0, ho->msg + 6);
    else
        finish(ho, 0, "the new process sent an unreadable readiness message");
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, 0, "the new process did not become ready in time");
}

int handover_start(uv_loop_t *loop, const char *binary, char *const *argv,
                   const struct handover_fd *fds, size_t n, uint64_t timeout_ms, handover_cb cb,
                   void *ctx, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    struct handover *ho = xcalloc(1, sizeof(*ho));
    ho->cb = cb;
    ho->ctx = ctx;

    /* Environment: ours, minus stale activation variables, plus the hand-over's. */
    extern char **environ;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = xcalloc(ne + 5, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        if (strncmp(environ[i], "LISTEN_", 7) == 0 ||
            strncmp(environ[i], "CUTOVER_READY_FD=", 17) == 0)
            continue;
        env[k++] = environ[i];
    }
    size_t names_len = 1;
    for (size_t i = 0; i < n; i++)
        names_len += strlen(fds[i].name) + 1;
    char *names = xmalloc(names_len + 16);
    char *p = names + snprintf(names, 16, "LISTEN_FDNAMES=");
    for (size_t i = 0; i < n; i++)
        p += snprintf(p, names_len - (size_t)(p - names) + 16, "%s%s", i ? ":" : "", fds[i].name);
    char *nfds = xasprintf("LISTEN_FDS=%zu", n);
    char *ready = xasprintf("CUTOVER_READY_FD=%zu", LISTEN_FDS_START + n);
    env[k++] = nfds;
    env[k++] = names;
    env[k++] = ready;

    size_t nstdio = LISTEN_FDS_START + n + 1;
    uv_stdio_container_t *stdio = xcalloc(nstdio, sizeof(*stdio));
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 1;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    for (size_t i = 0; i < n; i++) {
        stdio[LISTEN_FDS_START + i].flags = UV_INHERIT_FD;
        stdio[LISTEN_FDS_START + i].data.fd = fds[i].fd;
    }
    stdio[LISTEN_FDS_START + n].flags = UV_INHERIT_FD;
    stdio[LISTEN_FDS_START + n].data.fd = sv[1];

    uv_process_options_t opt = {0};
    opt.file = binary;
    opt.args = (char **)argv;
    opt.env = env;
    opt.exit_cb = on_exit_cb;
    opt.stdio = stdio;
    opt.stdio_count = (int)nstdio;
    /* Its own session: the successor must outlive us and our process group's signals. */
    opt.flags = UV_PROCESS_DETACHED;
    ho->proc.data = ho;
    int rc = uv_spawn(loop, &ho->proc, &opt);
    close(sv[1]);
    free(nfds);
    free(names);
    free(ready);
    free(env);
    free(stdio);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start %s: %s", binary, uv_strerror(rc));
        close(sv[0]);
        uv_close((uv_handle_t *)&ho->proc, (uv_close_cb)free);
        return rc;
    }
    ho->pid = ho->proc.pid;
    ho->handles = 3;
    uv_pipe_init(loop, &ho->chan, 0);
    ho->chan.data = ho;
    uv_pipe_open(&ho->chan, sv[0]);
    uv_read_start((uv_stream_t *)&ho->chan, on_alloc, on_read);
    uv_timer_init(loop, &ho->timer);
    ho->timer.data = ho;
    uv_timer_start(&ho->timer, on_timeout, timeout_ms, 0);
    return 0;
}

/* ---------------------------------------------------------------- receiving side ------------ */

struct inherited {
    int fd;
    char *name;
    int claimed;
};

static struct inherited inh[MAX_INHERITED];
static size_t ninh;

size_t handover_inherit(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *nfds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    if (nfds == NULL)
        return 0;
    if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid())
        return 0; /* meant for another process */
    char *end;
    long n = strtol(nfds, &end, 10);
    if (*end != '\0' || n <= 0 || n > MAX_INHERITED)
        return 0;
    /* Names are ':'-separated (systemd forbids ':' inside a name). */
    const char *tok = names ? names : "";
    for (long i = 0; i < n; i++) {
        const char *colon = strchr(tok, ':');
        size_t len = colon ? (size_t)(colon - tok) : strlen(tok);
        inh[ninh].fd = LISTEN_FDS_START + (int)i;
        inh[ninh].name = xstrndup(tok, len);
        inh[ninh].claimed = 0;
        int flags = fcntl(inh[ninh].fd, F_GETFD);
        if (flags != -1)
            fcntl(inh[ninh].fd, F_SETFD, flags | FD_CLOEXEC);
        ninh++;
        tok = colon ? colon + 1 : "";
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return ninh;
}

int handover_take(const char *name, const char *alt)
{
    for (size_t i = 0; i < ninh; i++) {
        if (inh[i].claimed)
            continue;
        if ((name && strcmp(inh[i].name, name) == 0) || (alt && strcmp(inh[i].name, alt) == 0)) {
            inh[i].claimed = 1;
            return inh[i].fd;
        }
    }
    return -1;
}

void handover_close_unclaimed(void)
{
    for (size_t i = 0; i < ninh; i++) {
        if (!inh[i].claimed)
            close(inh[i].fd);
        free(inh[i].name);
    }
    ninh = 0;
}

static void ready_fd_send(const char *line)
{
    const char *s = getenv("CUTOVER_READY_FD");
    if (s == NULL)
        return;
    int fd = (int)strtol(s, NULL, 10);
    if (fd < 3)
        return;
    ssize_t w = write(fd, line, strlen(line));
    (void)w;
    close(fd);
    unsetenv("CUTOVER_READY_FD");
}

void handover_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= 108)
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return;
    ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path)));
    (void)w;
    close(fd);
}

void handover_ready(void)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "READY=1\nMAINPID=%ld", (long)getpid());
    handover_sd_notify(buf);
    ready_fd_send("READY\n");
}

void handover_error(const char *message)
{
    char buf[600];
    snprintf(buf, sizeof(buf), "ERROR %.500s\n", message);
    for (char *p = buf + 6; *p && p[1]; p++)
        if (*p == '\n')
            *p = ' ';
    ready_fd_send(buf);
}
