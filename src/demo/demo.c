/* `cutover demo` (see demo.h). The main thread narrates and drives the steps, spawning every
 * process it needs by re-executing /proc/self/exe: two sample backends, the daemon and, one at
 * a time, the CLI. DEMO_CLIENTS traffic threads each keep one blocking keep-alive connection to
 * the service and count answers by version. Every child runs in its own process group (so a
 * terminal's Ctrl-C reaches only the demo, which then stops them in order) and dies with the
 * demo if the demo is killed (PR_SET_PDEATHSIG). Nothing here blocks without a time limit. */
#include "demo/demo.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>

#define DEMO_CLIENTS 4
/* Every step must be done this long after the start; cleanup comes after it. */
#define DEMO_STEPS_BUDGET_MS 40000
/* Emergency brake: SIGALRM kills the children and exits, whatever the demo was doing. */
#define DEMO_HARD_CAP_S 58
/* How long a child gets between SIGTERM and SIGKILL. */
#define DEMO_STOP_GRACE_MS 5000
/* Longest wait for one read or write on a traffic connection. */
#define DEMO_IO_TIMEOUT_MS 3000
/* Longest run of one CLI command. */
#define DEMO_CLI_TIMEOUT_MS 20000
/* How long traffic is watched after the deploy and after the rollback. */
#define DEMO_WATCH_MS 3000
#define DEMO_FIRST_ERRORS 5

enum child_role { CHILD_V1, CHILD_V2, CHILD_DAEMON, CHILD_CLI, CHILD_COUNT };

static const char *const child_names[CHILD_COUNT] = {"backend v1", "backend v2", "daemon", "CLI"};

/* Read by the signal handler, hence plain volatile ints (a pid_t is an int on Linux). */
static volatile pid_t child_pids[CHILD_COUNT];
static volatile sig_atomic_t stop_signal;

struct counts {
    uint64_t sent, v1, v2, errors, stale, closed;
};

struct traffic {
    _Atomic uint64_t sent;   /* requests that got an answer or failed */
    _Atomic uint64_t v1, v2; /* 200 answers with body "v1\n" / "v2\n" */
    _Atomic uint64_t errors; /* connect/read/write failures, non-200, empty or unknown bodies */
    _Atomic uint64_t stale;  /* idle keep-alive connections found closed, request re-sent */
    _Atomic uint64_t closed; /* answers that ended with the server closing the connection */
    atomic_int stop;
    struct sockaddr_in addr;
    uint64_t t0;
    pthread_t threads[DEMO_CLIENTS];
    int nthreads;
    pthread_mutex_t lock; /* guards first_errors */
    char first_errors[DEMO_FIRST_ERRORS][200];
    int nfirst;
};

struct demo {
    int keep, quiet;
    uint64_t t0, deadline;
    char dir[PATH_MAX];
    char config[PATH_MAX + 16];
    char daemon_log[PATH_MAX + 16];
    unsigned short port_v1, port_v2, port_web;
    char addr_v1[32], addr_v2[32], addr_web[32];
    int exit_status[CHILD_COUNT]; /* wait status once reaped, -1 before */
    const char *failed_step;
    struct traffic traffic;
};

struct reply {
    int status;
    int close;
    char body[128];
    size_t body_len;
};

enum exchange { EXCHANGE_OK, EXCHANGE_STALE, EXCHANGE_ERROR };

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_signal(int signo)
{
    /* A second signal, or the hard cap, means cleaning up gently did not work out. */
    if (signo == SIGALRM || stop_signal != 0) {
        static const char msg[] = "\ncutover demo: hard stop: killing its processes\n";
        ssize_t w;

        for (int i = 0; i < CHILD_COUNT; i++)
            if (child_pids[i] > 0)
                kill(child_pids[i], SIGKILL);
        w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(1);
    }
    stop_signal = signo;
}

static void say(const struct demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Narration on stdout; silent with --quiet. */
static void say(const struct demo *d, const char *fmt, ...)
{
    va_list ap;

    if (d->quiet)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

static int fail(struct demo *d, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports that step failed and why, on stderr whatever --quiet says. Returns -1. */
static int fail(struct demo *d, const char *step, const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    if (!d->failed_step) {
        d->failed_step = step;
        fprintf(stderr, "cutover demo: step failed: %s: ", step);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    return -1;
}

/* Returns 1 when the demo must stop stepping: a signal came or the time budget is spent. */
static int demo_interrupted(const struct demo *d)
{
    return stop_signal != 0 || now_ms() >= d->deadline;
}

static const char *interruption(const struct demo *d)
{
    (void)d;
    if (stop_signal == SIGINT)
        return "interrupted (Ctrl-C)";
    if (stop_signal != 0)
        return "interrupted by a signal";
    return "the demo ran out of time";
}

/* Sleeps ms milliseconds in short naps. Returns 0, or -1 early when interrupted. */
static int nap(const struct demo *d, uint64_t ms)
{
    uint64_t end = now_ms() + ms;

    while (now_ms() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        if (demo_interrupted(d))
            return -1;
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void describe_status(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "stopped (status 0x%x)", (unsigned)st);
}

/* Reaps the child in role if it has ended. Returns 1 while it runs, 0 once it has ended. */
static int child_running(struct demo *d, enum child_role role)
{
    pid_t pid = child_pids[role];
    int st;

    if (pid <= 0)
        return 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
        d->exit_status[role] = st;
        child_pids[role] = 0;
        return 0;
    }
    return 1;
}

/* Starts /proc/self/exe with argv as the child in role, stdin from /dev/null, stdout and
 * stderr into out_fd. Returns the pid or -errno. */
static pid_t spawn(struct demo *d, enum child_role role, char *const argv[], int out_fd)
{
    sigset_t all, old;
    pid_t parent = getpid(), pid;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), err;

    if (devnull == -1)
        return -errno;
    fflush(stdout);
    fflush(stderr);
    /* Signals stay blocked across fork so the child never runs the demo's handler. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) {
        struct sigaction dfl;
        static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGALRM, SIGPIPE};

        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            sigaction(sigs[i], &dfl, NULL);
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        dup2(devnull, STDIN_FILENO);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(devnull);
    if (pid == -1)
        return -err;
    child_pids[role] = pid;
    d->exit_status[role] = -1;
    return pid;
}

/* Stops every child still running: SIGTERM, then SIGKILL after DEMO_STOP_GRACE_MS. */
static void stop_children(struct demo *d)
{
    uint64_t end = now_ms() + DEMO_STOP_GRACE_MS;
    int left;

    for (int i = CHILD_COUNT - 1; i >= 0; i--)
        if (child_running(d, (enum child_role)i))
            kill(child_pids[i], SIGTERM);
    do {
        struct timespec ts = {0, 20 * 1000 * 1000};
        left = 0;
        for (int i = 0; i < CHILD_COUNT; i++)
            left += child_running(d, (enum child_role)i);
        if (left)
            nanosleep(&ts, NULL);
    } while (left && now_ms() < end);
    for (int i = 0; i < CHILD_COUNT; i++) {
        pid_t pid = child_pids[i];
        int st;

        if (pid <= 0)
            continue;
        fprintf(stderr, "cutover demo: the %s (pid %d) ignored SIGTERM for %d s; killing it\n",
                child_names[i], (int)pid, DEMO_STOP_GRACE_MS / 1000);
        kill(pid, SIGKILL);
        if (waitpid(pid, &st, 0) == pid)
            d->exit_status[i] = st;
        child_pids[i] = 0;
    }
}

/* Binds n loopback sockets to port 0 at once, so the kernel hands out n different free
 * ports, and reads them back. Returns 0 or -errno. */
static int pick_ports(unsigned short *ports, int n)
{
    int fds[4] = {-1, -1, -1, -1}, rc = 0;

    for (int i = 0; i < n && rc == 0; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sa;

        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] == -1 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) == -1 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &len) == -1)
            rc = -errno;
        else
            ports[i] = ntohs(sa.sin_port);
    }
    for (int i = 0; i < n; i++)
        if (fds[i] != -1)
            close(fds[i]);
    return rc;
}

/* Opens a blocking TCP connection to addr with DEMO_IO_TIMEOUT_MS on each read and write.
 * Returns the fd, or -1 with a reason in err. */
static int client_connect(const struct sockaddr_in *addr, char *err, size_t errlen)
{
    struct timeval tv = {DEMO_IO_TIMEOUT_MS / 1000, (DEMO_IO_TIMEOUT_MS % 1000) * 1000};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == -1) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Finds header name (with its colon, e.g. "content-length:") in the head; returns a pointer
 * to its value with leading blanks skipped, or NULL. */
static const char *header_value(const char *head, const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) == 0) {
            const char *v = p + 2 + nl;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
    }
    return NULL;
}

/* Sends one GET / on fd and reads its answer into r. reused says whether fd already carried
 * an answer: a keep-alive connection the server closed while idle is then EXCHANGE_STALE (a
 * client re-sends on a new connection, as browsers and curl do) instead of an error. */
static enum exchange client_get(int fd, int reused, struct reply *r, char *err, size_t errlen)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: demo\r\nUser-Agent: cutover-demo\r\n\r\n";
    char buf[4096];
    size_t len = 0, sent = 0, head_len, have;
    char *blank;
    const char *v;
    long long cl = -1;

    memset(r, 0, sizeof *r);
    while (sent < sizeof req - 1) {
        ssize_t n = send(fd, req + sent, sizeof req - 1 - sent, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (reused && (errno == EPIPE || errno == ECONNRESET))
                return EXCHANGE_STALE;
            snprintf(err, errlen, "write: %s", strerror(errno));
            return EXCHANGE_ERROR;
        }
        sent += (size_t)n;
    }
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (len == 0 && reused && (n == 0 || errno == ECONNRESET))
                return EXCHANGE_STALE;
            if (n == 0)
                snprintf(err, errlen, "connection closed after %zu bytes of the answer head", len);
            else if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(err, errlen, "no answer within %d ms", DEMO_IO_TIMEOUT_MS);
            else
                snprintf(err, errlen, "read: %s", strerror(errno));
            return EXCHANGE_ERROR;
        }
        len += (size_t)n;
        buf[len] = '\0';
        blank = strstr(buf, "\r\n\r\n");
        if (blank)
            break;
        if (len == sizeof buf - 1) {
            snprintf(err, errlen, "answer head over %zu bytes", sizeof buf - 1);
            return EXCHANGE_ERROR;
        }
    }
    head_len = (size_t)(blank + 4 - buf);
    if (strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' || buf[9] < '1' || buf[9] > '5') {
        snprintf(err, errlen, "malformed status line");
        return EXCHANGE_ERROR;
    }
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    blank[2] = '\0'; /* header_value stops at the end of the head */
    v = header_value(buf, "connection:");
    r->close = v && strncasecmp(v, "close", 5) == 0;
    if (buf[7] == '0' && !(v && strncasecmp(v, "keep-alive", 10) == 0))
        r->close = 1;
    if (header_value(buf, "transfer-encoding:")) {
        snprintf(err, errlen, "chunked answer (the sample backend uses Content-Length)");
        return EXCHANGE_ERROR;
    }
    v = header_value(buf, "content-length:");
    if (v) {
        char *end;
        errno = 0;
        cl = strtoll(v, &end, 10);
        if (errno != 0 || end == v || cl < 0 || (*end != '\r' && *end != ' ')) {
            snprintf(err, errlen, "bad Content-Length");
            return EXCHANGE_ERROR;
        }
    }
    if (cl >= (long long)sizeof r->body) {
        snprintf(err, errlen, "answer body of %lld bytes, more than a version name", cl);
        return EXCHANGE_ERROR;
    }
    have = len - head_len;
    if (cl >= 0 && have > (size_t)cl) {
        snprintf(err, errlen, "%zu bytes after the answer", have - (size_t)cl);
        return EXCHANGE_ERROR;
    }
    if (have > sizeof r->body - 1)
        have = sizeof r->body - 1;
    memcpy(r->body, buf + head_len, have);
    r->body_len = have;
    /* Without Content-Length the body runs to the close. */
    while (cl < 0 ? 1 : r->body_len < (size_t)cl) {
        ssize_t n = recv(fd, r->body + r->body_len, sizeof r->body - 1 - r->body_len, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0 && cl < 0) {
            r->close = 1;
            break;
        }
        if (n <= 0 || (cl < 0 && r->body_len + (size_t)n == sizeof r->body - 1)) {
            if (n == 0)
                snprintf(err, errlen, "connection closed after %zu of %lld body bytes", r->body_len,
                         cl);
            else if (n > 0)
                snprintf(err, errlen, "answer body longer than a version name");
            else if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(err, errlen, "answer body not complete within %d ms", DEMO_IO_TIMEOUT_MS);
            else
                snprintf(err, errlen, "read: %s", strerror(errno));
            return EXCHANGE_ERROR;
        }
        r->body_len += (size_t)n;
    }
    r->body[r->body_len] = '\0';
    return EXCHANGE_OK;
}

static void traffic_error(struct traffic *t, int client, const char *what)
{
    atomic_fetch_add(&t->errors, 1);
    pthread_mutex_lock(&t->lock);
    if (t->nfirst < DEMO_FIRST_ERRORS) {
        uint64_t ms = now_ms() - t->t0;
        snprintf(t->first_errors[t->nfirst++], sizeof t->first_errors[0],
                 "at %llu.%03llu s, client %d: %s", (unsigned long long)(ms / 1000),
                 (unsigned long long)(ms % 1000), client, what);
    }
    pthread_mutex_unlock(&t->lock);
}

struct client_arg {
    struct traffic *t;
    int id;
};

static struct client_arg client_args[DEMO_CLIENTS];

/* One traffic client: GET / in a loop on one keep-alive connection, reconnecting whenever
 * the server closes it, until t->stop. */
static void *traffic_client(void *arg)
{
    struct client_arg *ca = arg;
    struct traffic *t = ca->t;
    int fd = -1, reused = 0;

    while (!atomic_load(&t->stop)) {
        struct reply r;
        char err[160];
        enum exchange x;

        if (fd < 0) {
            fd = client_connect(&t->addr, err, sizeof err);
            if (fd < 0) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                atomic_fetch_add(&t->sent, 1);
                traffic_error(t, ca->id, err);
                nanosleep(&ts, NULL);
                continue;
            }
            reused = 0;
        }
        x = client_get(fd, reused, &r, err, sizeof err);
        if (x == EXCHANGE_STALE) {
            atomic_fetch_add(&t->stale, 1);
            close(fd);
            fd = -1;
            continue;
        }
        atomic_fetch_add(&t->sent, 1);
        if (x == EXCHANGE_ERROR) {
            traffic_error(t, ca->id, err);
            close(fd);
            fd = -1;
            continue;
        }
        if (r.status != 200) {
            snprintf(err, sizeof err, "status %d", r.status);
            traffic_error(t, ca->id, err);
        } else if (r.body_len == 0) {
            traffic_error(t, ca->id, "empty answer");
        } else if (strcmp(r.body, "v1\n") == 0) {
            atomic_fetch_add(&t->v1, 1);
        } else if (strcmp(r.body, "v2\n") == 0) {
            atomic_fetch_add(&t->v2, 1);
        } else {
            snprintf(err, sizeof err, "unexpected answer body '%.40s'", r.body);
            traffic_error(t, ca->id, err);
        }
        if (r.close) {
            atomic_fetch_add(&t->closed, 1);
            close(fd);
            fd = -1;
        } else {
            reused = 1;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static struct counts traffic_counts(struct traffic *t)
{
    struct counts c = {
        .sent = atomic_load(&t->sent),
        .v1 = atomic_load(&t->v1),
        .v2 = atomic_load(&t->v2),
        .errors = atomic_load(&t->errors),
        .stale = atomic_load(&t->stale),
        .closed = atomic_load(&t->closed),
    };
    return c;
}

static int traffic_start(struct demo *d)
{
    struct traffic *t = &d->traffic;
    sigset_t all, old;
    int rc = 0;

    t->t0 = d->t0;
    /* The clients block every signal, so SIGINT and SIGALRM always land on the main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < DEMO_CLIENTS; i++) {
        client_args[i].t = t;
        client_args[i].id = i + 1;
        rc = pthread_create(&t->threads[i], NULL, traffic_client, &client_args[i]);
        if (rc != 0)
            break;
        t->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

/* Stops the clients; each ends after its request in flight, within DEMO_IO_TIMEOUT_MS.
 * Returns 0, or -ETIMEDOUT when a client did not end: t must then stay allocated. */
static int traffic_stop(struct traffic *t)
{
    int rc = 0;

    atomic_store(&t->stop, 1);
    for (int i = 0; i < t->nthreads; i++) {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += DEMO_IO_TIMEOUT_MS / 1000 + 2;
        if (pthread_timedjoin_np(t->threads[i], NULL, &until) != 0) {
            pthread_detach(t->threads[i]);
            rc = -ETIMEDOUT;
        }
    }
    t->nthreads = 0;
    return rc;
}

/* Waits up to ms for 127.0.0.1:port to accept a connection while the child in role runs. */
static int wait_accepting(struct demo *d, enum child_role role, unsigned short port, uint64_t ms)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    uint64_t end = now_ms() + ms;
    char err[160];

    for (;;) {
        int fd = client_connect(&sa, err, sizeof err);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (!child_running(d, role))
            return -ECHILD;
        if (now_ms() >= end)
            return -ETIMEDOUT;
        if (nap(d, 50) != 0)
            return -EINTR;
    }
}

/* Waits up to ms for the service to answer GET / with the body "VERSION\n" while the daemon
 * runs; the last answer or failure is left in last. */
static int wait_answer(struct demo *d, const char *version, uint64_t ms, char *last, size_t lastlen)
{
    uint64_t end = now_ms() + ms;
    char want[80];

    snprintf(want, sizeof want, "%s\n", version);
    snprintf(last, lastlen, "no answer yet");
    for (;;) {
        struct reply r;
        int fd = client_connect(&d->traffic.addr, last, lastlen);

        if (fd >= 0) {
            enum exchange x = client_get(fd, 0, &r, last, lastlen);
            close(fd);
            if (x == EXCHANGE_OK && r.status == 200 && strcmp(r.body, want) == 0)
                return 0;
            if (x == EXCHANGE_OK)
                snprintf(last, lastlen, "status %d, body '%.*s'", r.status,
                         (int)strcspn(r.body, "\n"), r.body);
        }
        if (!child_running(d, CHILD_DAEMON))
            return -ECHILD;
        if (now_ms() >= end)
            return -ETIMEDOUT;
        if (nap(d, 100) != 0)
            return -EINTR;
    }
}

/* Prints one line of CLI output, indented under its command. */
static void cli_line(const struct demo *d, const char *s, size_t n)
{
    say(d, "        %.*s\n", (int)n, s);
}

/* Runs `cutover ARGS...` (args NULL-terminated, args[0] the subcommand) with its output
 * shown indented. Returns its exit code, or -1 when it could not run, was killed or timed
 * out (said on stderr). */
static int run_cli(struct demo *d, const char *step, const char *const *args)
{
    char *argv[16], out[4096], why[96];
    size_t argc = 0, len = 0;
    uint64_t end = now_ms() + DEMO_CLI_TIMEOUT_MS;
    int fds[2], eof = 0, st, timed_out = 0;
    pid_t pid;

    argv[argc++] = "cutover";
    say(d, "    $ cutover");
    for (const char *const *a = args; *a && argc < 15; a++) {
        argv[argc++] = (char *)*a;
        say(d, " %s", *a);
    }
    argv[argc] = NULL;
    say(d, "\n");
    if (pipe2(fds, O_CLOEXEC) == -1)
        return fail(d, step, "pipe: %s", strerror(errno));
    pid = spawn(d, CHILD_CLI, argv, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return fail(d, step, "cannot start the CLI: %s", strerror((int)-pid));
    }
    while (!eof) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        ssize_t n;

        if (demo_interrupted(d) || now_ms() >= end) {
            timed_out = !stop_signal;
            break;
        }
        if (poll(&p, 1, 100) <= 0)
            continue;
        n = read(fds[0], out + len, sizeof out - len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = 1;
        } else {
            char *nl, *start = out;
            len += (size_t)n;
            while ((nl = memchr(start, '\n', len - (size_t)(start - out))) != NULL) {
                cli_line(d, start, (size_t)(nl - start));
                start = nl + 1;
            }
            len -= (size_t)(start - out);
            memmove(out, start, len);
            if (len == sizeof out) {
                cli_line(d, out, len);
                len = 0;
            }
        }
    }
    if (len > 0)
        cli_line(d, out, len);
    close(fds[0]);
    /* Its output has ended; give it a moment to exit. */
    while (child_running(d, CHILD_CLI) && !demo_interrupted(d) && now_ms() < end)
        nap(d, 20);
    if (child_running(d, CHILD_CLI)) {
        timed_out = !stop_signal;
        kill(pid, SIGKILL);
        if (waitpid(pid, &st, 0) == pid)
            d->exit_status[CHILD_CLI] = st;
        child_pids[CHILD_CLI] = 0;
        if (timed_out && now_ms() < d->deadline)
            return fail(d, step, "`cutover %s` did not finish within %d s", args[0],
                        DEMO_CLI_TIMEOUT_MS / 1000);
        return fail(d, step, "%s", interruption(d));
    }
    st = d->exit_status[CHILD_CLI];
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    describe_status(st, why, sizeof why);
    return fail(d, step, "`cutover %s` %s", args[0], why);
}

/* Runs a CLI command that must succeed for the step to succeed. */
static int run_cli_ok(struct demo *d, const char *step, const char *const *args)
{
    int rc = run_cli(d, step, args);

    if (rc > 0)
        return fail(d, step, "`cutover %s` exited with status %d", args[0], rc);
    return rc;
}

/* Writes s into f as a YAML double-quoted scalar. */
static void yaml_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_config(struct demo *d)
{
    char state[PATH_MAX + 16];
    FILE *f;
    int rc = 0;

    snprintf(state, sizeof state, "%s/state", d->dir);
    if (mkdir(state, 0700) == -1)
        return -errno;
    f = fopen(d->config, "wx");
    if (!f)
        return -errno;
    fprintf(f, "# Written by `cutover demo`.\nstate_dir: ");
    yaml_quoted(f, state);
    fprintf(f,
            "\nworkers: 2\n"
            "services:\n"
            "  web:\n"
            "    listen: %s\n"
            "    protocol: http\n"
            "    health_check: {path: /healthz, interval: 200ms, timeout: 500ms,\n"
            "                   healthy_threshold: 1, unhealthy_threshold: 2}\n"
            "    drain_timeout: 2s\n"
            "    deploy_timeout: 5s\n"
            "    targets: [%s]\n",
            d->addr_web, d->addr_v1);
    if (ferror(f))
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* Creates the temporary directory under $TMPDIR (or /tmp when $TMPDIR is unset, relative or
 * too long for the daemon's unix socket path to fit in sun_path). */
static int make_dir(struct demo *d)
{
    static const char tail[] = "/cutover-demo.XXXXXX";
    static const char sock[] = "/state/cutover.sock";
    struct sockaddr_un un;
    const char *base = getenv("TMPDIR");

    if (!base || base[0] != '/' || strlen(base) + strlen(tail) + strlen(sock) >= sizeof un.sun_path)
        base = "/tmp";
    snprintf(d->dir, sizeof d->dir, "%s%s", strcmp(base, "/") == 0 ? "" : base, tail);
    if (!mkdtemp(d->dir)) {
        d->dir[0] = '\0';
        return -errno;
    }
    snprintf(d->config, sizeof d->config, "%s/cutover.yml", d->dir);
    snprintf(d->daemon_log, sizeof d->daemon_log, "%s/daemon.log", d->dir);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void show_file(const struct demo *d, const char *path)
{
    char line[512];
    FILE *f = fopen(path, "r");

    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        say(d, "        %s", line);
    fclose(f);
}

/* Prints the last lines of the daemon's log on stderr, so a failure can be understood after
 * the temporary directory is gone. */
static void show_log_tail(const struct demo *d, int lines)
{
    char buf[8192];
    int fd = open(d->daemon_log, O_RDONLY | O_CLOEXEC);
    off_t size;
    ssize_t n;
    char *p;

    if (fd == -1)
        return;
    size = lseek(fd, 0, SEEK_END);
    if (size > (off_t)sizeof buf - 1)
        lseek(fd, size - (off_t)sizeof buf + 1, SEEK_SET);
    else
        lseek(fd, 0, SEEK_SET);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    p = buf + n;
    if (p > buf && p[-1] == '\n')
        p--;
    while (p > buf && lines > 0) {
        p--;
        if (*p == '\n')
            lines--;
    }
    if (*p == '\n')
        p++;
    fprintf(stderr, "cutover demo: last lines of %s:\n", d->daemon_log);
    for (char *line = p, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) {
            fprintf(stderr, "    %s\n", line);
            break;
        }
        fprintf(stderr, "    %.*s\n", (int)(nl - line), line);
    }
}

static void say_window(const struct demo *d, const char *what, struct counts a, struct counts b)
{
    say(d, "    %s: %llu answered by v1, %llu by v2, %llu errors.\n", what,
        (unsigned long long)(b.v1 - a.v1), (unsigned long long)(b.v2 - a.v2),
        (unsigned long long)(b.errors - a.errors));
}

/* Starts a sample backend for version on port and waits until it accepts. */
static int start_backend(struct demo *d, enum child_role role, const char *version,
                         unsigned short port)
{
    static const char step[] = "start the sample backends";
    char portstr[8], logpath[PATH_MAX + 16], why[96];
    char *argv[] = {"cutover", "sample-backend", portstr, (char *)version, NULL};
    int fd, rc;

    snprintf(portstr, sizeof portstr, "%u", port);
    snprintf(logpath, sizeof logpath, "%s/backend-%s.log", d->dir, version);
    fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd == -1)
        return fail(d, step, "%s: %s", logpath, strerror(errno));
    rc = spawn(d, role, argv, fd);
    close(fd);
    if (rc < 0)
        return fail(d, step, "fork: %s", strerror(-rc));
    rc = wait_accepting(d, role, port, 5000);
    if (rc == -ECHILD) {
        describe_status(d->exit_status[role], why, sizeof why);
        return fail(d, step, "backend %s %s (see %s)", version, why, logpath);
    }
    if (rc == -ETIMEDOUT)
        return fail(d, step, "backend %s did not accept connections within 5 s", version);
    if (rc != 0)
        return fail(d, step, "%s", interruption(d));
    return 0;
}

static int start_daemon(struct demo *d)
{
    static const char step[] = "start the daemon";
    char *argv[] = {"cutover", "serve", "-c", d->config, NULL};
    char last[200], why[96];
    int fd, rc;

    fd = open(d->daemon_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd == -1)
        return fail(d, step, "%s: %s", d->daemon_log, strerror(errno));
    rc = spawn(d, CHILD_DAEMON, argv, fd);
    close(fd);
    if (rc < 0)
        return fail(d, step, "fork: %s", strerror(-rc));
    rc = wait_answer(d, "v1", 10000, last, sizeof last);
    if (rc == -ECHILD) {
        describe_status(d->exit_status[CHILD_DAEMON], why, sizeof why);
        return fail(d, step, "`cutover serve` %s", why);
    }
    if (rc == -ETIMEDOUT)
        return fail(d, step, "web did not answer v1 within 10 s (last try: %s)", last);
    if (rc != 0)
        return fail(d, step, "%s", interruption(d));
    return 0;
}

/* Watches traffic for DEMO_WATCH_MS after a switch to version and checks that version
 * answers. */
static int watch(struct demo *d, const char *step, const char *version)
{
    struct counts a = traffic_counts(&d->traffic), b;
    char what[64];

    if (nap(d, DEMO_WATCH_MS) != 0)
        return fail(d, step, "%s", interruption(d));
    b = traffic_counts(&d->traffic);
    snprintf(what, sizeof what, "Over the next %d s", DEMO_WATCH_MS / 1000);
    say_window(d, what, a, b);
    if (strcmp(version, "v2") == 0 ? b.v2 == a.v2 : b.v1 == a.v1)
        return fail(d, step, "no request was answered by %s in %d s", version,
                    DEMO_WATCH_MS / 1000);
    return 0;
}

/* The steps, in order; returns 0 or -1 after fail(). */
static int demo_run(struct demo *d)
{
    unsigned short ports[3];
    struct counts a, b;
    int rc;

    say(d, "cutover demo: put v2 of a service in production and take it back, under steady\n"
           "traffic, without a single request failing.\n\n");

    say(d, "1. Set up a scratch directory, three free loopback ports and a config.\n");
    rc = make_dir(d);
    if (rc != 0)
        return fail(d, "set up", "cannot create a temporary directory: %s", strerror(-rc));
    rc = pick_ports(ports, 3);
    if (rc != 0)
        return fail(d, "set up", "cannot find free loopback ports: %s", strerror(-rc));
    d->port_v1 = ports[0];
    d->port_v2 = ports[1];
    d->port_web = ports[2];
    snprintf(d->addr_v1, sizeof d->addr_v1, "127.0.0.1:%u", d->port_v1);
    snprintf(d->addr_v2, sizeof d->addr_v2, "127.0.0.1:%u", d->port_v2);
    snprintf(d->addr_web, sizeof d->addr_web, "127.0.0.1:%u", d->port_web);
    d->traffic.addr.sin_family = AF_INET;
    d->traffic.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d->traffic.addr.sin_port = htons(d->port_web);
    rc = write_config(d);
    if (rc != 0)
        return fail(d, "set up", "cannot write %s: %s", d->config, strerror(-rc));
    say(d, "    directory:  %s\n    config:     %s\n", d->dir, d->config);
    show_file(d, d->config);
    say(d, "    daemon log: %s\n\n", d->daemon_log);

    say(d, "2. Start two versions of a sample backend; each answers with its version name.\n");
    if (start_backend(d, CHILD_V1, "v1", d->port_v1) != 0 ||
        start_backend(d, CHILD_V2, "v2", d->port_v2) != 0)
        return -1;
    say(d, "    v1 listens on %s, v2 on %s.\n", d->addr_v1, d->addr_v2);
    say(d,
        "   Start the daemon (`cutover serve`) with service web on %s. It starts with the\n"
        "   targets listed in the config, a version it calls \"initial\": here, v1.\n",
        d->addr_web);
    if (start_daemon(d) != 0)
        return -1;
    say(d, "    web answers v1.\n\n");

    say(d,
        "3. Start steady traffic: %d clients, each sending GET / over one keep-alive\n"
        "   connection as fast as it gets answers, for the whole demo.\n",
        DEMO_CLIENTS);
    rc = traffic_start(d);
    if (rc != 0)
        return fail(d, "start traffic", "pthread_create: %s", strerror(-rc));
    a = traffic_counts(&d->traffic);
    if (nap(d, 1000) != 0)
        return fail(d, "start traffic", "%s", interruption(d));
    b = traffic_counts(&d->traffic);
    say_window(d, "In 1 s", a, b);
    if (b.v1 == a.v1)
        return fail(d, "start traffic", "no request was answered by v1 in 1 s");
    say(d, "\n");

    say(d, "4. Deploy v2. The daemon health-checks v2 first, then sends new requests to v2\n"
           "   while the requests already on v1 finish (drain). Clients notice nothing.\n");
    {
        const char *deploy[] = {"deploy",   "web", "v2",      "--target",
                                d->addr_v2, "-c",  d->config, NULL};
        const char *status[] = {"status", "-c", d->config, NULL};

        a = traffic_counts(&d->traffic);
        if (run_cli_ok(d, "deploy v2", deploy) != 0)
            return -1;
        b = traffic_counts(&d->traffic);
        say_window(d, "While the deploy ran", a, b);
        if (run_cli_ok(d, "status after the deploy", status) != 0)
            return -1;
        if (watch(d, "deploy v2", "v2") != 0)
            return -1;
    }
    say(d, "\n");

    say(d, "5. Roll back. The daemon kept the previous version (\"initial\", that is v1) ready,\n"
           "   so going back is one command, again without dropping a request.\n");
    {
        const char *rollback[] = {"rollback", "web", "-c", d->config, NULL};
        const char *status[] = {"status", "-c", d->config, NULL};
        const char *history[] = {"history", "-c", d->config, NULL};

        a = traffic_counts(&d->traffic);
        if (run_cli_ok(d, "roll back to v1", rollback) != 0)
            return -1;
        b = traffic_counts(&d->traffic);
        say_window(d, "While the rollback ran", a, b);
        if (run_cli_ok(d, "status after the rollback", status) != 0)
            return -1;
        if (watch(d, "roll back to v1", "v1") != 0)
            return -1;
        say(d, "    Every change is recorded:\n");
        if (run_cli_ok(d, "history", history) != 0)
            return -1;
    }
    say(d, "\n");
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cutover demo [--keep] [--quiet]\n"
               "  Runs two sample backends and a daemon on loopback, deploys v2 and rolls it\n"
               "  back under steady traffic, and counts every answer. Exit 0 when no request\n"
               "  failed and both versions answered.\n"
               "  --keep   keep the temporary directory (config, logs, state)\n"
               "  --quiet  print only the summary and failures\n");
}

int demo_main(int argc, char **argv)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGALRM};
    struct sigaction sa, old[4];
    struct demo *d;
    struct counts c;
    int ok, run_rc, stuck;

    d = calloc(1, sizeof *d);
    if (!d) {
        fprintf(stderr, "cutover demo: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keep") == 0) {
            d->keep = 1;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            d->quiet = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            free(d);
            return 0;
        } else {
            fprintf(stderr, "cutover demo: unknown option '%s'\n", argv[i]);
            usage(stderr);
            free(d);
            return 2;
        }
    }
    for (int i = 0; i < CHILD_COUNT; i++)
        d->exit_status[i] = -1;
    pthread_mutex_init(&d->traffic.lock, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* No SA_RESTART: a signal must cut short whatever the main thread waits on. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; i++)
        sigaction(sigs[i], &sa, &old[i]);
    alarm(DEMO_HARD_CAP_S);
    d->t0 = now_ms();
    d->deadline = d->t0 + DEMO_STEPS_BUDGET_MS;

    run_rc = demo_run(d);
    if (run_rc != 0 && !d->failed_step)
        fail(d, "run", "%s", interruption(d));

    say(d, "%s6. Stop the traffic, the daemon and the backends.\n", d->failed_step ? "\n" : "");
    stuck = traffic_stop(&d->traffic) != 0;
    c = traffic_counts(&d->traffic);
    stop_children(d);
    if (d->exit_status[CHILD_DAEMON] != -1) {
        char why[96];
        int st = d->exit_status[CHILD_DAEMON];

        describe_status(st, why, sizeof why);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            say(d, "    The daemon stopped cleanly.\n");
        else
            fprintf(stderr, "cutover demo: the daemon %s\n", why);
    }
    if (d->failed_step && d->exit_status[CHILD_DAEMON] != -1)
        show_log_tail(d, 20);
    if (d->dir[0]) {
        if (d->keep) {
            printf("    Kept %s (config, daemon.log, backend logs, state).\n", d->dir);
        } else {
            nftw(d->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            say(d, "    Removed %s (use --keep to keep it).\n", d->dir);
        }
    }

    ok = !d->failed_step && c.errors == 0 && c.v1 > 0 && c.v2 > 0;
    printf("\nSummary\n");
    printf("  requests sent:   %llu\n", (unsigned long long)c.sent);
    printf("  answered by v1:  %llu\n", (unsigned long long)c.v1);
    printf("  answered by v2:  %llu\n", (unsigned long long)c.v2);
    printf("  errors:          %llu\n", (unsigned long long)c.errors);
    if (c.stale > 0)
        printf("  (re-sent %llu requests on a new connection after the server closed an idle\n"
               "   keep-alive connection, as HTTP clients do)\n",
               (unsigned long long)c.stale);
    for (int i = 0; i < d->traffic.nfirst; i++)
        printf("  error %s\n", d->traffic.first_errors[i]);
    if (ok)
        printf("  result: PASS: web went from v1 to v2 and back without a failed request.\n");
    else if (d->failed_step)
        printf("  result: FAIL: step '%s' failed.\n", d->failed_step);
    else if (c.errors > 0)
        printf("  result: FAIL: %llu requests failed.\n", (unsigned long long)c.errors);
    else
        printf("  result: FAIL: %s never answered.\n", c.v1 == 0 ? "v1" : "v2");

    alarm(0);
    for (int i = 0; i < 4; i++)
        sigaction(sigs[i], &old[i], NULL);
    /* A client thread that did not end still uses d; leaving it costs nothing at exit. */
    if (!stuck) {
        pthread_mutex_destroy(&d->traffic.lock);
        free(d);
    }
    return ok ? 0 : 1;
}
