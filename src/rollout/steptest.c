/* Test step commands (see steptest.h). Control loop only. */
#include "rollout/steptest.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/duration.h"
#include "core/xmalloc.h"

struct steptest {
    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    steptest_done_cb cb; /* NULL once cancelled or judged */
    void *ctx;
    char *buf;
    size_t len;
    int handles;
    int timed_out;
    int exited;
    int64_t status;
    int term_signal;
    int out_closed;
    size_t step;
    uint64_t timeout_ms;
};

static void handle_closed(uv_handle_t *h)
{
    struct steptest *tp = h->data;
    if (--tp->handles == 0) {
        free(tp->buf);
        free(tp);
    }
}

static void close_all(struct steptest *tp)
{
    if (!uv_is_closing((uv_handle_t *)&tp->timer))
        uv_close((uv_handle_t *)&tp->timer, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&tp->out))
        uv_close((uv_handle_t *)&tp->out, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&tp->proc))
        uv_close((uv_handle_t *)&tp->proc, handle_closed);
}

static void finish(struct steptest *tp)
{
    if (tp->cb == NULL || tp->handles < 3 || uv_is_closing((uv_handle_t *)&tp->proc)) {
        if (tp->cb == NULL && tp->exited)
            close_all(tp);
        return;
    }
    steptest_done_cb cb = tp->cb;
    tp->cb = NULL;
    char out[STEPTEST_OUTPUT_MAX + 1];
    size_t n = tp->len;
    if (tp->buf != NULL)
        memcpy(out, tp->buf, n);
    out[n] = '\0';
    char msg[256], d[24];
    if (tp->timed_out)
        snprintf(msg, sizeof(msg), "test step %zu timed out after %s", tp->step,
                 duration_format(tp->timeout_ms, d, sizeof(d)));
    else if (tp->term_signal != 0)
        snprintf(msg, sizeof(msg), "test step %zu killed by signal %d", tp->step, tp->term_signal);
    else
        snprintf(msg, sizeof(msg), "test step %zu exited with status %lld", tp->step,
                 (long long)tp->status);
    struct steptest_result res = {
        .passed = !tp->timed_out && tp->term_signal == 0 && tp->status == 0,
        .msg = msg,
        .output = out,
    };
    close_all(tp);
    cb(tp->ctx, &res);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct steptest *tp = h->data;
    (void)hint;
    if (tp->buf == NULL)
        tp->buf = xmalloc(STEPTEST_OUTPUT_MAX + 1);
    if (tp->len >= STEPTEST_OUTPUT_MAX) {
        /* Keep the first 64 KiB; the rest is read and dropped so the test never blocks. */
        static char sink[4096];
        *buf = uv_buf_init(sink, sizeof(sink));
        return;
    }
    *buf = uv_buf_init(tp->buf + tp->len, (unsigned)(STEPTEST_OUTPUT_MAX - tp->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct steptest *tp = st->data;
    if (n > 0 && tp->buf != NULL && buf->base >= tp->buf &&
        buf->base < tp->buf + STEPTEST_OUTPUT_MAX)
        tp->len += (size_t)n;
    if (n < 0) {
        tp->out_closed = 1;
        uv_read_stop(st);
        if (tp->exited)
            finish(tp);
    }
}

static void on_timeout(uv_timer_t *t);

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct steptest *tp = p->data;
    tp->exited = 1;
    tp->status = status;
    tp->term_signal = sig;
    /* The test's children may hold the pipe open: give them half a second, then judge. */
    if (tp->out_closed || tp->timed_out || tp->cb == NULL)
        finish(tp);
    else
        uv_timer_start(&tp->timer, on_timeout, 500, 0); /* exited: judges at once */
}

static void on_timeout(uv_timer_t *t)
{
    struct steptest *tp = t->data;
    if (tp->exited) {
        finish(tp);
        return;
    }
    tp->timed_out = 1;
    /* The test runs in its own process group: end all of it. */
    kill(-tp->proc.pid, SIGKILL);
}

struct steptest *steptest_start(uv_loop_t *loop, char *const *argv, const char *const *env_extra,
                                uint64_t timeout_ms, size_t step, steptest_done_cb cb, void *ctx)
{
    struct steptest *tp = xcalloc(1, sizeof(*tp));
    tp->cb = cb;
    tp->ctx = ctx;
    tp->step = step;
    tp->timeout_ms = timeout_ms;
    extern char **environ;
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    while (env_extra && env_extra[nx])
        nx++;
    char **env = xcalloc(ne + nx + 1, sizeof(*env));
    for (size_t i = 0; i < ne; i++)
        env[i] = environ[i];
    for (size_t i = 0; i < nx; i++)
        env[ne + i] = (char *)env_extra[i];

    uv_pipe_init(loop, &tp->out, 0);
    uv_timer_init(loop, &tp->timer);
    tp->out.data = tp;
    tp->timer.data = tp;
    tp->proc.data = tp;
    /* One pipe for stdout and stderr, so the output keeps its order: the write end goes to the
     * test as fds 1 and 2, the read end is ours. */
    uv_file pipefd[2] = {-1, -1};
    int prc = uv_pipe(pipefd, 0, 0);
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = pipefd[1];
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = pipefd[1];
    uv_process_options_t opt = {0};
    opt.file = argv[0];
    opt.args = (char **)argv;
    opt.env = env;
    opt.exit_cb = on_exit_cb;
    opt.stdio_count = 3;
    opt.stdio = stdio;
    opt.flags = UV_PROCESS_DETACHED; /* own process group, killed whole on timeout */
    tp->handles = 2;
    int rc = prc < 0 ? prc : uv_spawn(loop, &tp->proc, &opt);
    tp->handles = 3;
    if (pipefd[1] >= 0)
        close(pipefd[1]); /* the test holds the write end now; EOF comes when it is done */
    if (pipefd[0] >= 0 && uv_pipe_open(&tp->out, pipefd[0]) < 0)
        close(pipefd[0]);
    free(env);
    if (rc < 0) {
        char msg[320];
        tp->exited = 1;
        tp->status = 127;
        snprintf(msg, sizeof(msg), "test step %zu could not start %s: %s", step, argv[0],
                 uv_strerror(rc));
        tp->buf = xstrdup(msg);
        tp->len = strlen(msg);
        finish(tp);
        return NULL;
    }
    uv_read_start((uv_stream_t *)&tp->out, on_alloc, on_read);
    uv_timer_start(&tp->timer, on_timeout, timeout_ms, 0);
    return tp;
}

void steptest_cancel(struct steptest *tp)
{
    if (tp == NULL)
        return;
    tp->cb = NULL;
    if (!tp->exited)
        kill(-tp->proc.pid, SIGKILL);
    else
        close_all(tp);
    /* else the exit callback closes it */
}
