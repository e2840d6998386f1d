/* `cutover demo` (see demo.h). The main thread narrates and drives the steps, spawning every
 * process it needs by re-executing /proc/self/exe: three sample backends (v1, v2 and the bad
 * v3), the daemon, at most one CLI command that runs in the background (`deploy --wait`) and,
 * one at a time, the CLI. DEMO_CLIENTS traffic threads each keep one blocking keep-alive
 * connection to the service, send each request as one of their own users (X-User-Id, the
 * service's sticky header) and count answers by version and by who caused a failure. Every
 * child runs in its own process group (so a terminal's Ctrl-C reaches only the demo, which then
 * stops them in order) and dies with the demo if the demo is killed (PR_SET_PDEATHSIG). Nothing
 * here blocks without a time limit. */
#include "demo/demo.h"

#include <assert.h>
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

#include <jansson.h>

#define DEMO_CLIENTS 6
/* Users per client: each client sends as one of its own users, so a user's requests are
 * answered in order and a user that goes back from the new version to the old is visible. */
#define DEMO_USERS 256
/* Pause after each answer: keeps the traffic moderate (at most a few thousand requests/s) so
 * the daemon's health checks stay timely on a small shared machine. */
#define DEMO_PACE_US 500
/* Every step must be done this long after the start; cleanup comes after it. */
#define DEMO_STEPS_BUDGET_MS 45000
/* Emergency brake: SIGALRM kills the children and exits, whatever the demo was doing. */
#define DEMO_HARD_CAP_S 58
/* How long a child gets between SIGTERM and SIGKILL. */
#define DEMO_STOP_GRACE_MS 5000
/* Longest wait for one read or write on a traffic connection. */
#define DEMO_IO_TIMEOUT_MS 3000
/* Longest run of one CLI command. */
#define DEMO_CLI_TIMEOUT_MS 20000
/* How long traffic is watched after each switch. */
#define DEMO_WATCH_MS 1000
#define DEMO_FIRST_ERRORS 5
/* Largest CLI output kept for parsing (a change report in JSON). */
#define DEMO_CAPTURE_MAX (256 * 1024)
/* The share of answers the bad version fails. */
#define DEMO_BAD_ERROR_RATE "0.05"
/* Every sample backend takes this long per answer, like an application that does some work.
 * Answers of 0.1 ms would put the p99 latency gate at the mercy of the shared machine's
 * scheduling noise: a 2 ms hiccup is then a 4x "regression". Even so the demo's plan allows
 * 10x, not 3x: see "The latency gate" in docs/demo.md. */
#define DEMO_BACKEND_DELAY_MS "2"

/* The versions: indexes into the per-version counters. */
enum version { V1, V2, V3, VERSION_COUNT };

static const char *const version_names[VERSION_COUNT] = {"v1", "v2", "v3"};

enum child_role {
    CHILD_V1,
    CHILD_V2,
    CHILD_V3,
    CHILD_DAEMON,
    CHILD_WAIT, /* a CLI command running in the background: `deploy --wait` */
    CHILD_CLI,
    CHILD_COUNT
};

static const char *const child_names[CHILD_COUNT] = {
    "backend v1", "backend v2", "backend v3", "daemon", "CLI (deploy --wait)", "CLI"};

/* Read by the signal handler, hence plain volatile ints (a pid_t is an int on Linux). */
static volatile pid_t child_pids[CHILD_COUNT];
static volatile sig_atomic_t stop_signal;

struct counts {
    uint64_t sent, ok[VERSION_COUNT], bad[VERSION_COUNT], cutover, unexpected, stale, closed;
    uint64_t went_back;
};

/* How answers are told apart. An answer is the version's when it carries X-Version: a 200 with
 * the version's name as its body, or a 500 "VERSION: injected error" from a version started
 * with --error-rate (expected: that is the bad version being bad). It is cutover's when it
 * failed in cutover: a connect, read or write failure, a timeout, or an error answer with
 * "Server: cutover" (502/503/504 and the like). Anything else is unexpected. */
struct traffic {
    _Atomic uint64_t sent;               /* requests that got an answer or failed */
    _Atomic uint64_t ok[VERSION_COUNT];  /* 200 answers with body "VERSION\n" */
    _Atomic uint64_t bad[VERSION_COUNT]; /* 500s a version was told to return */
    _Atomic uint64_t cutover;            /* requests that failed in cutover (must stay 0) */
    _Atomic uint64_t unexpected;         /* any other answer: wrong status, body or version */
    _Atomic uint64_t stale;  /* idle keep-alive connections found closed, request re-sent */
    _Atomic uint64_t closed; /* answers that ended with the server closing the connection */
    /* Sticky check: while watch_new >= 0, a user answered by version watch_new must never be
     * answered by watch_old again; each time one is, went_back counts it. The clients forget
     * what they saw whenever watch_epoch changes. */
    atomic_int watch_new, watch_old, watch_epoch;
    _Atomic uint64_t went_back;
    _Atomic uint64_t first_ms[VERSION_COUNT], last_ms[VERSION_COUNT]; /* since t0; 0: never */
    int faulty[VERSION_COUNT]; /* started with --error-rate: its 500s are expected */
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
    unsigned short port[VERSION_COUNT], port_web;
    char addr[VERSION_COUNT][32], addr_web[32];
    long change_good, change_bad; /* ids of the two plan changes, 0 until known */
    int good_completed;           /* v2 went through the whole plan */
    int bad_rolled_back;          /* v3 was rolled back by cutover on its own */
    char bad_gate[64];            /* the gate that stopped v3 */
    int exit_status[CHILD_COUNT]; /* wait status once reaped, -1 before */
    const char *failed_step;
    struct traffic traffic;
};

struct reply {
    int status;
    int close;
    int from_cutover; /* "Server: cutover": cutover itself answered */
    char version[72]; /* X-Version, "" when absent */
    char body[512];
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
    int fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1}, rc = 0;

    assert(n <= 8);

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

/* Sends one GET / on fd as user (no X-User-Id when negative) and reads its answer into r.
 * reused says whether fd already carried an answer: a keep-alive connection the server closed
 * while idle is then EXCHANGE_STALE (a client re-sends on a new connection, as browsers and
 * curl do) instead of an error. */
static enum exchange client_get(int fd, int reused, int user, struct reply *r, char *err,
                                size_t errlen)
{
    char req[160], buf[4096];
    size_t len = 0, sent = 0, head_len, have, req_len;
    char *blank;
    const char *v;
    long long cl = -1;
    int n_req;

    if (user >= 0)
        n_req = snprintf(req, sizeof req,
                         "GET / HTTP/1.1\r\nHost: demo\r\nUser-Agent: cutover-demo\r\n"
                         "X-User-Id: user-%d\r\n\r\n",
                         user);
    else
        n_req = snprintf(req, sizeof req,
                         "GET / HTTP/1.1\r\nHost: demo\r\nUser-Agent: cutover-demo\r\n\r\n");
    req_len = (size_t)n_req;
    memset(r, 0, sizeof *r);
    while (sent < req_len) {
        ssize_t n = send(fd, req + sent, req_len - sent, MSG_NOSIGNAL);
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
    v = header_value(buf, "server:");
    r->from_cutover = v && strncasecmp(v, "cutover", 7) == 0 && (v[7] == '\r' || v[7] == ' ');
    v = header_value(buf, "x-version:");
    if (v)
        snprintf(r->version, sizeof r->version, "%.*s", (int)strcspn(v, " \r"), v);
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
        snprintf(err, errlen, "answer body of %lld bytes, more than a short message", cl);
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
                snprintf(err, errlen, "answer body longer than a short message");
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

/* Counts one failure in *counter and keeps the first few with their time and cause. */
static void traffic_error(struct traffic *t, _Atomic uint64_t *counter, int client,
                          const char *what)
{
    atomic_fetch_add(counter, 1);
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
    int epoch;                    /* t->watch_epoch that seen_new belongs to */
    uint32_t rng;                 /* xorshift32 state: which user sends next */
    uint8_t seen_new[DEMO_USERS]; /* user was answered by t->watch_new */
};

static struct client_arg client_args[DEMO_CLIENTS];

static int version_index(const char *name)
{
    for (int i = 0; i < VERSION_COUNT; i++)
        if (strcmp(name, version_names[i]) == 0)
            return i;
    return -1;
}

/* Notes that user u (an index into ca->seen_new) was answered by version v; counts a user
 * that goes back from the watched new version to the old one. */
static void sticky_note(struct client_arg *ca, int u, int v)
{
    struct traffic *t = ca->t;
    int epoch = atomic_load(&t->watch_epoch), vnew = atomic_load(&t->watch_new);

    if (epoch != ca->epoch) {
        memset(ca->seen_new, 0, sizeof ca->seen_new);
        ca->epoch = epoch;
    }
    if (vnew < 0)
        return;
    if (v == vnew)
        ca->seen_new[u] = 1;
    else if (v == atomic_load(&t->watch_old) && ca->seen_new[u])
        atomic_fetch_add(&t->went_back, 1);
}

static void version_seen(struct traffic *t, int v)
{
    uint64_t ms = now_ms() - t->t0 + 1, zero = 0;

    atomic_compare_exchange_strong(&t->first_ms[v], &zero, ms);
    atomic_store(&t->last_ms[v], ms);
}

/* Sorts one answer into the counters (see struct traffic). */
static void traffic_count(struct client_arg *ca, int u, const struct reply *r)
{
    struct traffic *t = ca->t;
    int v = version_index(r->version);
    char err[200], want[96];

    if (r->from_cutover && r->status >= 400) {
        snprintf(err, sizeof err, "status %d from cutover: %.*s", r->status,
                 (int)strcspn(r->body, "\n"), r->body);
        traffic_error(t, &t->cutover, ca->id, err);
        return;
    }
    if (v >= 0 && r->status == 200) {
        snprintf(want, sizeof want, "%s\n", version_names[v]);
        if (strcmp(r->body, want) == 0) {
            atomic_fetch_add(&t->ok[v], 1);
            version_seen(t, v);
            sticky_note(ca, u, v);
            return;
        }
    }
    if (v >= 0 && r->status == 500 && t->faulty[v]) {
        atomic_fetch_add(&t->bad[v], 1);
        version_seen(t, v);
        sticky_note(ca, u, v);
        return;
    }
    if (r->body_len == 0)
        snprintf(err, sizeof err, "status %d, empty answer, X-Version '%s'", r->status, r->version);
    else
        snprintf(err, sizeof err, "status %d, X-Version '%s', body '%.*s'", r->status, r->version,
                 (int)strcspn(r->body, "\n"), r->body);
    traffic_error(t, &t->unexpected, ca->id, err);
}

/* One traffic client: GET / in a loop on one keep-alive connection, each request from one of
 * its users picked at random, reconnecting whenever the server closes it, until t->stop. */
static void *traffic_client(void *arg)
{
    struct client_arg *ca = arg;
    struct traffic *t = ca->t;
    int fd = -1, reused = 0;

    while (!atomic_load(&t->stop)) {
        struct timespec pace = {0, DEMO_PACE_US * 1000};
        struct reply r;
        char err[160];
        enum exchange x;
        int u;

        if (fd < 0) {
            fd = client_connect(&t->addr, err, sizeof err);
            if (fd < 0) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                atomic_fetch_add(&t->sent, 1);
                traffic_error(t, &t->cutover, ca->id, err);
                nanosleep(&ts, NULL);
                continue;
            }
            reused = 0;
        }
        ca->rng ^= ca->rng << 13;
        ca->rng ^= ca->rng >> 17;
        ca->rng ^= ca->rng << 5;
        u = (int)(ca->rng % DEMO_USERS);
        /* Users are numbered so that no two clients share one. */
        x = client_get(fd, reused, u * DEMO_CLIENTS + ca->id, &r, err, sizeof err);
        if (x == EXCHANGE_STALE) {
            atomic_fetch_add(&t->stale, 1);
            close(fd);
            fd = -1;
            continue;
        }
        atomic_fetch_add(&t->sent, 1);
        if (x == EXCHANGE_ERROR) {
            traffic_error(t, &t->cutover, ca->id, err);
            close(fd);
            fd = -1;
            continue;
        }
        traffic_count(ca, u, &r);
        if (r.close) {
            atomic_fetch_add(&t->closed, 1);
            close(fd);
            fd = -1;
        } else {
            reused = 1;
        }
        nanosleep(&pace, NULL);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static struct counts traffic_counts(struct traffic *t)
{
    struct counts c = {
        .sent = atomic_load(&t->sent),
        .cutover = atomic_load(&t->cutover),
        .unexpected = atomic_load(&t->unexpected),
        .stale = atomic_load(&t->stale),
        .closed = atomic_load(&t->closed),
        .went_back = atomic_load(&t->went_back),
    };

    for (int i = 0; i < VERSION_COUNT; i++) {
        c.ok[i] = atomic_load(&t->ok[i]);
        c.bad[i] = atomic_load(&t->bad[i]);
    }
    return c;
}

/* Answers of version v between two snapshots, its expected 500s included. */
static uint64_t answered(struct counts a, struct counts b, int v)
{
    return b.ok[v] + b.bad[v] - a.ok[v] - a.bad[v];
}

/* Failures between two snapshots that were not the bad version's own 500s. */
static uint64_t failures(struct counts a, struct counts b)
{
    return b.cutover + b.unexpected - a.cutover - a.unexpected;
}

/* Starts or stops the sticky check (vnew < 0 stops it); each start forgets what was seen. */
static void sticky_watch(struct traffic *t, int vnew, int vold)
{
    atomic_store(&t->watch_new, -1);
    atomic_store(&t->watch_old, vold);
    atomic_fetch_add(&t->watch_epoch, 1);
    atomic_store(&t->watch_new, vnew);
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
        client_args[i].rng = 0x9e3779b9u * (uint32_t)(i + 1);
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
            enum exchange x = client_get(fd, 0, -1, &r, last, lastlen);
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

/* Fills argv (room for 16) with "cutover" and args; with show, prints the command line. */
static void cli_argv(const struct demo *d, const char *const *args, char **argv, int show)
{
    size_t argc = 0;

    argv[argc++] = "cutover";
    if (show)
        say(d, "    $ cutover");
    for (const char *const *a = args; *a && argc < 15; a++) {
        argv[argc++] = (char *)*a;
        if (show)
            say(d, " %s", *a);
    }
    argv[argc] = NULL;
    if (show)
        say(d, "\n");
}

/* Runs `cutover ARGS...` (args NULL-terminated, args[0] the subcommand). With show, the command
 * and its output are shown indented; with cap, the output is also kept there (at most capsize
 * - 1 bytes, NUL-terminated). Returns its exit code, or -1 when it could not run, was killed
 * or timed out (said on stderr). */
static int run_cli_capture(struct demo *d, const char *step, const char *const *args, int show,
                           char *cap, size_t capsize)
{
    char *argv[16], out[4096], why[96];
    size_t len = 0, caplen = 0;
    uint64_t end = now_ms() + DEMO_CLI_TIMEOUT_MS;
    int fds[2], eof = 0, st, timed_out = 0;
    pid_t pid;

    cli_argv(d, args, argv, show);
    if (cap)
        cap[0] = '\0';
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
            if (cap && caplen + (size_t)n < capsize) {
                memcpy(cap + caplen, out + len, (size_t)n);
                caplen += (size_t)n;
                cap[caplen] = '\0';
            }
            len += (size_t)n;
            while ((nl = memchr(start, '\n', len - (size_t)(start - out))) != NULL) {
                if (show)
                    cli_line(d, start, (size_t)(nl - start));
                start = nl + 1;
            }
            len -= (size_t)(start - out);
            memmove(out, start, len);
            if (len == sizeof out) {
                if (show)
                    cli_line(d, out, len);
                len = 0;
            }
        }
    }
    if (len > 0 && show)
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

/* Runs `cutover ARGS...` with its output shown indented; see run_cli_capture. */
static int run_cli(struct demo *d, const char *step, const char *const *args)
{
    return run_cli_capture(d, step, args, 1, NULL, 0);
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
            "    targets: [%s]\n"
            "    sticky: {header: X-User-Id}\n"
            "plans:\n"
            "  canary:\n"
            "    steps: [{weight: 20}, {pause: 4s}, {weight: 50}, {pause: 4s}, {weight: 100}]\n"
            "    analysis: {interval: 1s, min_requests: 50, max_error_rate: 0.02,\n"
            "               max_p99_latency_ratio: 3}\n"
            "    on_failure: rollback\n",
            d->addr_web, d->addr[V1]);
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

/* "what: N answered by v1, N by v2, ..." for the versions that answered, and the failures. */
static void say_window(const struct demo *d, const char *what, struct counts a, struct counts b)
{
    say(d, "    %s: %llu answered by v1, %llu by v2", what, (unsigned long long)answered(a, b, V1),
        (unsigned long long)answered(a, b, V2));
    if (answered(a, b, V3) > 0)
        say(d, ", %llu by v3", (unsigned long long)answered(a, b, V3));
    say(d, ", %llu failed.\n", (unsigned long long)failures(a, b));
}

/* Starts a sample backend for version v, with extra options opt (NULL-terminated, may be
 * empty), and waits until it accepts. */
static int start_backend(struct demo *d, enum version v, const char *const *opt)
{
    static const char step[] = "start the sample backends";
    const char *version = version_names[v];
    enum child_role role = (enum child_role)(CHILD_V1 + v);
    char portstr[8], logpath[PATH_MAX + 16], why[96];
    char *argv[12] = {"cutover", "sample-backend", portstr, (char *)version};
    int fd, rc, argc = 4;

    for (; *opt && argc < 11; opt++)
        argv[argc++] = (char *)*opt;
    argv[argc] = NULL;
    snprintf(portstr, sizeof portstr, "%u", d->port[v]);
    snprintf(logpath, sizeof logpath, "%s/backend-%s.log", d->dir, version);
    fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd == -1)
        return fail(d, step, "%s: %s", logpath, strerror(errno));
    rc = spawn(d, role, argv, fd);
    close(fd);
    if (rc < 0)
        return fail(d, step, "fork: %s", strerror(-rc));
    rc = wait_accepting(d, role, d->port[v], 5000);
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

/* Watches traffic for DEMO_WATCH_MS after a switch to version v and checks that v answers;
 * with only, that no other version does. */
static int watch(struct demo *d, const char *step, enum version v, int only)
{
    struct counts a = traffic_counts(&d->traffic), b;
    char what[64];
    uint64_t others;

    if (nap(d, DEMO_WATCH_MS) != 0)
        return fail(d, step, "%s", interruption(d));
    b = traffic_counts(&d->traffic);
    snprintf(what, sizeof what, "Over the next %d s", DEMO_WATCH_MS / 1000);
    say_window(d, what, a, b);
    others = answered(a, b, V1) + answered(a, b, V2) + answered(a, b, V3) - answered(a, b, v);
    if (answered(a, b, v) == 0)
        return fail(d, step, "no request was answered by %s in %d s", version_names[v],
                    DEMO_WATCH_MS / 1000);
    if (only && others > 0)
        return fail(d, step, "%llu requests were answered by another version than %s",
                    (unsigned long long)others, version_names[v]);
    return 0;
}

/* Starts `cutover ARGS...` in the background as CHILD_WAIT, its output going to path. Returns
 * 0 or -1 after fail(). */
static int cli_start_background(struct demo *d, const char *step, const char *const *args,
                                const char *path)
{
    char *argv[16];
    int fd;
    pid_t pid;

    cli_argv(d, args, argv, 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return fail(d, step, "%s: %s", path, strerror(errno));
    pid = spawn(d, CHILD_WAIT, argv, fd);
    close(fd);
    if (pid < 0)
        return fail(d, step, "cannot start the CLI: %s", strerror((int)-pid));
    return 0;
}

/* Reads up to n - 1 bytes of path into buf, NUL-terminated. Returns the length or -errno. */
static ssize_t read_small_file(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = 0, r;

    if (fd == -1)
        return -errno;
    while ((size_t)got < n - 1 && (r = read(fd, buf + got, n - 1 - (size_t)got)) != 0) {
        if (r == -1) {
            if (errno == EINTR)
                continue;
            r = -errno;
            close(fd);
            return r;
        }
        got += r;
    }
    buf[got] = '\0';
    close(fd);
    return got;
}

/* Once the background command has ended: shows its output (kept in path) and its exit code,
 * and reads the change id from its first line ("change N: ...") into *id. Returns the exit
 * code, or -1 after fail() when it did not exit normally. */
static int cli_background_result(struct demo *d, const char *step, const char *path, long *id)
{
    char out[4096], why[96];
    int st = d->exit_status[CHILD_WAIT];

    show_file(d, path);
    if (read_small_file(path, out, sizeof out) > 0 && strncmp(out, "change ", 7) == 0)
        *id = strtol(out + 7, NULL, 10);
    if (!WIFEXITED(st)) {
        describe_status(st, why, sizeof why);
        return fail(d, step, "`cutover deploy --wait` %s", why);
    }
    say(d, "    (exit status %d)\n", WEXITSTATUS(st));
    return WEXITSTATUS(st);
}

/* Prints which share of the answers between a and b came from vnew (with vold the rest). */
static void say_split(const struct demo *d, int second, struct counts a, struct counts b,
                      enum version vold, enum version vnew)
{
    uint64_t n_old = answered(a, b, vold), n_new = answered(a, b, vnew),
             bad = b.bad[vnew] - a.bad[vnew];
    uint64_t failed = failures(a, b);

    say(d, "    second %2d: %3llu %% of the answers from %s (%s %llu, %s %llu", second,
        n_old + n_new > 0 ? (unsigned long long)(n_new * 100 / (n_old + n_new)) : 0ULL,
        version_names[vnew], version_names[vold], (unsigned long long)n_old, version_names[vnew],
        (unsigned long long)n_new);
    if (bad > 0)
        say(d, ", %llu of them 500", (unsigned long long)bad);
    say(d, ")%s", failed > 0 ? "" : "\n");
    if (failed > 0)
        say(d, ", %llu FAILED\n", (unsigned long long)failed);
}

/* Follows a change while `deploy --wait` runs in the background: prints the split of the
 * answers once a second and, with show_status, runs `cutover status` once the split has been
 * near half and half for 1.5 s (the 50 % step, with an analysis of it done). Returns 0 once
 * the command has ended, or -1 after fail(). */
static int follow_change(struct demo *d, const char *step, enum version vold, enum version vnew,
                         int show_status)
{
    const char *status[] = {"status", "-c", d->config, NULL};
    struct counts ring[11];
    uint64_t half_since = 0;
    int ticks = 0, status_done = !show_status;

    ring[0] = traffic_counts(&d->traffic);
    while (child_running(d, CHILD_WAIT)) {
        struct counts a, b;
        uint64_t n_old, n_new;

        if (nap(d, 100) != 0)
            return fail(d, step, "%s", interruption(d));
        ticks++;
        ring[ticks % 11] = b = traffic_counts(&d->traffic);
        if (ticks % 10 == 0)
            say_split(d, ticks / 10, ring[(ticks - 10) % 11], b, vold, vnew);
        if (status_done || ticks < 5)
            continue;
        a = ring[(ticks - 5) % 11];
        n_old = answered(a, b, vold);
        n_new = answered(a, b, vnew);
        if (n_new * 100 < 35 * (n_old + n_new) || n_new * 100 > 65 * (n_old + n_new)) {
            half_since = 0;
        } else if (half_since == 0) {
            half_since = now_ms();
        } else if (now_ms() - half_since >= 1500) {
            say(d, "    Half of the users are on %s now; the daemon's view:\n",
                version_names[vnew]);
            if (run_cli_ok(d, step, status) != 0)
                return -1;
            status_done = 1;
        }
    }
    if (!status_done)
        say(d, "    (the change ended before the split was seen at half and half)\n");
    return 0;
}

/* Fetches `cutover report ID --format json` and returns its "change" object (a new reference),
 * or NULL after fail(). */
static json_t *change_record(struct demo *d, const char *step, long id)
{
    char idstr[24];
    const char *args[] = {"report", idstr, "--format", "json", "-c", d->config, NULL};
    char *out = malloc(DEMO_CAPTURE_MAX);
    json_t *root, *change = NULL;
    json_error_t jerr;
    int rc;

    if (!out) {
        fail(d, step, "out of memory");
        return NULL;
    }
    snprintf(idstr, sizeof idstr, "%ld", id);
    rc = run_cli_capture(d, step, args, 0, out, DEMO_CAPTURE_MAX);
    if (rc != 0) {
        if (rc > 0)
            fail(d, step, "`cutover report %ld --format json` exited with status %d", id, rc);
        free(out);
        return NULL;
    }
    root = json_loads(out, 0, &jerr);
    free(out);
    if (root)
        change = json_incref(json_object_get(root, "change"));
    json_decref(root);
    if (!json_is_object(change)) {
        json_decref(change);
        fail(d, step, "`cutover report %ld --format json` gave no change record (%s)", id,
             root ? "no \"change\"" : jerr.text);
        return NULL;
    }
    return change;
}

static const char *json_text(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));

    return v ? v : "";
}

/* One event of a change, for the timeline. */
struct event_row {
    const char *ts, *type, *message; /* owned by the change records */
    long long change;
};

static int event_row_cmp(const void *pa, const void *pb)
{
    const struct event_row *a = pa, *b = pb;
    int c = strcmp(a->ts, b->ts); /* ISO 8601 UTC times sort as text */

    if (c != 0)
        return c;
    return a->change < b->change ? -1 : a->change > b->change;
}

/* Prints the events of both changes in time order: time of day (UTC), change, event, message.
 * A change's late events (the drain of the old version) land among the next change's. */
static void say_timeline(const struct demo *d, json_t *const *changes, int nchanges)
{
    struct event_row rows[128];
    size_t n = 0, i;
    json_t *ev;

    for (int c = 0; c < nchanges; c++) {
        long long id = json_integer_value(json_object_get(changes[c], "id"));
        json_array_foreach(json_object_get(changes[c], "events"), i, ev)
        {
            if (n == sizeof rows / sizeof rows[0])
                break;
            rows[n++] = (struct event_row){json_text(ev, "ts"), json_text(ev, "type"),
                                           json_text(ev, "message"), id};
        }
    }
    qsort(rows, n, sizeof rows[0], event_row_cmp);
    for (i = 0; i < n; i++)
        say(d, "        %-12.12s  %-6lld  %-11s %s\n",
            strlen(rows[i].ts) >= 23 ? rows[i].ts + 11 : rows[i].ts, rows[i].change, rows[i].type,
            rows[i].message);
}

/* Saves `cutover report ID --format md` as DIR/report-ID.md and prints its first lines. */
static int show_report(struct demo *d, const char *step, long id, int lines)
{
    char idstr[24], path[PATH_MAX + 32];
    const char *args[] = {"report", idstr, "--format", "md", "-c", d->config, NULL};
    char *out = malloc(DEMO_CAPTURE_MAX), *p;
    FILE *f;
    int rc, n = 0, total = 0;

    if (!out)
        return fail(d, step, "out of memory");
    snprintf(idstr, sizeof idstr, "%ld", id);
    snprintf(path, sizeof path, "%s/report-%ld.md", d->dir, id);
    say(d, "    $ cutover report %ld --format md -c %s > %s\n", id, d->config, path);
    rc = run_cli_capture(d, step, args, 0, out, DEMO_CAPTURE_MAX);
    if (rc != 0) {
        free(out);
        return rc > 0 ? fail(d, step, "`cutover report %ld` exited with status %d", id, rc) : -1;
    }
    f = fopen(path, "w");
    if (f) {
        fputs(out, f);
        fclose(f);
    }
    for (p = out; *p; p++)
        total += *p == '\n';
    for (p = out; *p && n < lines; n++) {
        size_t len = strcspn(p, "\n");
        if (len == 0)
            say(d, "\n");
        else
            say(d, "        %.*s\n", (int)len, p);
        p += len + (p[len] == '\n');
    }
    if (total > n)
        say(d, "        ... (%d more lines)\n", total - n);
    free(out);
    return 0;
}

/* Part 1: the plain switch of roadmap step 1, kept short: deploy v2 at once, roll back. */
static int demo_switch(struct demo *d)
{
    const char *deploy[] = {"deploy", "web", "v2", "--target", d->addr[V2], "-c", d->config, NULL};
    const char *rollback[] = {"rollback", "web", "-c", d->config, NULL};
    struct counts a, b;

    say(d, "4. The plain switch first: deploy v2 at once (health-checked, old requests drain),\n"
           "   then roll back to v1 with one command.\n");
    a = traffic_counts(&d->traffic);
    if (run_cli_ok(d, "deploy v2 at once", deploy) != 0)
        return -1;
    b = traffic_counts(&d->traffic);
    say_window(d, "While the deploy ran", a, b);
    if (watch(d, "deploy v2 at once", V2, 0) != 0)
        return -1;
    if (run_cli_ok(d, "roll back to v1", rollback) != 0)
        return -1;
    if (watch(d, "roll back to v1", V1, 0) != 0)
        return -1;
    say(d, "\n");
    return 0;
}

/* Part 2: v2 goes through the whole plan to 100 %. */
static int demo_good(struct demo *d)
{
    static const char step[] = "deploy v2 with the plan canary";
    const char *deploy[] = {"deploy", "web",    "v2", "--target", d->addr[V2], "--plan",
                            "canary", "--wait", "-c", d->config,  NULL};
    char out[PATH_MAX + 32];
    int rc;

    say(d, "5. Progressive delivery of v2 with the plan canary: 20 %% of the users, 4 s, 50 %%,\n"
           "   4 s, 100 %%. Every second cutover compares v2 with v1 over the last second\n"
           "   (error rate, p99 latency). Users are sticky: a user moved to v2 stays on v2.\n");
    snprintf(out, sizeof out, "%s/deploy-v2.out", d->dir);
    sticky_watch(&d->traffic, V2, V1);
    if (cli_start_background(d, step, deploy, out) != 0)
        return -1;
    if (follow_change(d, step, V1, V2, 1) != 0)
        return -1;
    sticky_watch(&d->traffic, -1, -1);
    say(d, "    `deploy --wait` returned:\n");
    rc = cli_background_result(d, step, out, &d->change_good);
    if (rc < 0)
        return -1;
    if (rc != 0)
        return fail(d, step, "`cutover deploy --wait` exited with status %d", rc);
    d->good_completed = 1;
    if (watch(d, step, V2, 1) != 0)
        return -1;
    say(d, "    Users that went back from v2 to v1 while the weight rose: %llu.\n\n",
        (unsigned long long)atomic_load(&d->traffic.went_back));
    if (atomic_load(&d->traffic.went_back) > 0)
        return fail(d, step, "sticky users went back from v2 to v1");
    return 0;
}

/* Part 3: the bad v3 is caught by the analysis and rolled back without anyone's help. */
static int demo_bad(struct demo *d)
{
    static const char step[] = "deploy the bad v3";
    const char *deploy[] = {"deploy", "web",    "v3", "--target", d->addr[V3], "--plan",
                            "canary", "--wait", "-c", d->config,  NULL};
    char out[PATH_MAX + 32];
    uint64_t first, last;
    int rc;

    say(d,
        "6. Now a bad version: v3 answers 500 to %.0f %% of its requests. Same plan; nobody\n"
        "   watches it. cutover sees v3's error rate exceed max_error_rate and rolls back.\n",
        strtod(DEMO_BAD_ERROR_RATE, NULL) * 100);
    snprintf(out, sizeof out, "%s/deploy-v3.out", d->dir);
    if (cli_start_background(d, step, deploy, out) != 0)
        return -1;
    if (follow_change(d, step, V2, V3, 0) != 0)
        return -1;
    say(d, "    `deploy --wait` returned:\n");
    rc = cli_background_result(d, step, out, &d->change_bad);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return fail(d, step, "v3 went live: the analysis did not stop it");
    if (watch(d, step, V2, 1) != 0)
        return -1;
    first = atomic_load(&d->traffic.first_ms[V3]);
    last = atomic_load(&d->traffic.last_ms[V3]);
    if (first > 0)
        say(d,
            "    v3 answered users for %.1f s (from %.1f s to %.1f s into the demo), then never\n"
            "    again.\n",
            (double)(last - first) / 1000, (double)first / 1000, (double)last / 1000);
    say(d, "\n");
    return 0;
}

/* Part 4: what was recorded. Checks the outcome of both changes in their records. */
static int demo_record(struct demo *d)
{
    static const char step[] = "read the record";
    const char *history[] = {"history", "-c", d->config, NULL};
    json_t *good, *bad, *both[2];
    const char *state;

    say(d, "7. Every change is on record.\n");
    if (run_cli_ok(d, step, history) != 0)
        return -1;
    if (d->change_good <= 0 || d->change_bad <= 0)
        return fail(d, step, "the change ids were not in the output of `deploy --wait`");
    good = change_record(d, step, d->change_good);
    if (!good)
        return -1;
    bad = change_record(d, step, d->change_bad);
    if (!bad) {
        json_decref(good);
        return -1;
    }
    say(d,
        "    Timeline of changes %ld (v2) and %ld (v3), from their events (`cutover report ID\n"
        "    --format json`):\n"
        "        TIME (UTC)    CHANGE  EVENT       MESSAGE\n",
        d->change_good, d->change_bad);
    both[0] = good;
    both[1] = bad;
    say_timeline(d, both, 2);
    state = json_text(good, "state");
    if (strcmp(state, "completed") != 0)
        d->good_completed = 0;
    state = json_text(bad, "state");
    d->bad_rolled_back = strcmp(state, "rolled_back") == 0;
    snprintf(d->bad_gate, sizeof d->bad_gate, "%s",
             json_text(json_object_get(json_object_get(bad, "detail"), "failure"), "gate"));
    json_decref(good);
    json_decref(bad);
    if (!d->good_completed)
        return fail(d, step, "change %ld (v2) is not recorded as completed", d->change_good);
    if (!d->bad_rolled_back)
        return fail(d, step, "change %ld (v3) is recorded as '%s', not rolled_back", d->change_bad,
                    state);
    say(d, "    The report of change %ld, the one a release manager reads (head):\n",
        d->change_bad);
    if (show_report(d, step, d->change_bad, 16) != 0)
        return -1;
    say(d,
        "    (The full reports of both changes are in %s/report-%ld.md and report-%ld.md;\n"
        "    use --keep to keep them.)\n\n",
        d->dir, d->change_good, d->change_bad);
    return 0;
}

/* The steps, in order; returns 0 or -1 after fail(). */
static int demo_run(struct demo *d)
{
    static const char *const good_opts[] = {"--delay-ms", DEMO_BACKEND_DELAY_MS, NULL};
    static const char *const bad_opts[] = {"--delay-ms", DEMO_BACKEND_DELAY_MS, "--error-rate",
                                           DEMO_BAD_ERROR_RATE, NULL};
    unsigned short ports[VERSION_COUNT + 1];
    struct counts a, b;
    int rc;

    say(d, "cutover demo: put v2 of a service in production and take it back; then roll v2 out\n"
           "progressively, and watch cutover catch a bad v3 and roll it back by itself, under\n"
           "steady traffic, without cutover failing a single request.\n\n");

    say(d, "1. Set up a scratch directory, four free loopback ports and a config.\n");
    rc = make_dir(d);
    if (rc != 0)
        return fail(d, "set up", "cannot create a temporary directory: %s", strerror(-rc));
    rc = pick_ports(ports, VERSION_COUNT + 1);
    if (rc != 0)
        return fail(d, "set up", "cannot find free loopback ports: %s", strerror(-rc));
    for (int v = 0; v < VERSION_COUNT; v++) {
        d->port[v] = ports[v];
        snprintf(d->addr[v], sizeof d->addr[v], "127.0.0.1:%u", d->port[v]);
    }
    d->port_web = ports[VERSION_COUNT];
    snprintf(d->addr_web, sizeof d->addr_web, "127.0.0.1:%u", d->port_web);
    d->traffic.addr.sin_family = AF_INET;
    d->traffic.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d->traffic.addr.sin_port = htons(d->port_web);
    d->traffic.faulty[V3] = 1;
    rc = write_config(d);
    if (rc != 0)
        return fail(d, "set up", "cannot write %s: %s", d->config, strerror(-rc));
    say(d, "    directory:  %s\n    config:     %s\n", d->dir, d->config);
    show_file(d, d->config);
    say(d, "    daemon log: %s\n\n", d->daemon_log);

    say(d,
        "2. Start three versions of a sample backend; each answers with its version name,\n"
        "   after %s ms of \"work\" (--delay-ms %s). v3 is bad: it also has --error-rate %s.\n",
        DEMO_BACKEND_DELAY_MS, DEMO_BACKEND_DELAY_MS, DEMO_BAD_ERROR_RATE);
    if (start_backend(d, V1, good_opts) != 0 || start_backend(d, V2, good_opts) != 0 ||
        start_backend(d, V3, bad_opts) != 0)
        return -1;
    say(d, "    v1 listens on %s, v2 on %s, v3 on %s.\n", d->addr[V1], d->addr[V2], d->addr[V3]);
    say(d,
        "   Start the daemon (`cutover serve`) with service web on %s. It starts with the\n"
        "   targets listed in the config, a version it calls v1 (the default name).\n",
        d->addr_web);
    if (start_daemon(d) != 0)
        return -1;
    say(d, "    web answers v1.\n\n");

    say(d,
        "3. Start steady traffic: %d clients, each sending GET / over one keep-alive\n"
        "   connection for the whole demo, each request as one of %d users (X-User-Id).\n",
        DEMO_CLIENTS, DEMO_CLIENTS * DEMO_USERS);
    rc = traffic_start(d);
    if (rc != 0)
        return fail(d, "start traffic", "pthread_create: %s", strerror(-rc));
    a = traffic_counts(&d->traffic);
    if (nap(d, 1000) != 0)
        return fail(d, "start traffic", "%s", interruption(d));
    b = traffic_counts(&d->traffic);
    say_window(d, "In 1 s", a, b);
    if (answered(a, b, V1) == 0)
        return fail(d, "start traffic", "no request was answered by v1 in 1 s");
    say(d, "\n");

    if (demo_switch(d) != 0 || demo_good(d) != 0 || demo_bad(d) != 0 || demo_record(d) != 0)
        return -1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cutover demo [--keep] [--quiet]\n"
               "  Runs three sample backends and a daemon on loopback under steady traffic:\n"
               "  deploys v2 and rolls it back, rolls v2 out with a progressive plan, then lets\n"
               "  cutover catch a bad v3 and roll it back, and counts every answer. Exit 0 when\n"
               "  cutover failed no request, v2 completed its plan and v3 was rolled back.\n"
               "  --keep   keep the temporary directory (config, logs, state, reports)\n"
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
    atomic_store(&d->traffic.watch_new, -1);
    atomic_store(&d->traffic.watch_old, -1);
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

    say(d, "%s8. Stop the traffic, the daemon and the backends.\n", d->failed_step ? "\n" : "");
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
            printf("    Kept %s (config, daemon.log, backend logs, state, reports).\n", d->dir);
        } else {
            nftw(d->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            say(d, "    Removed %s (use --keep to keep it).\n", d->dir);
        }
    }

    ok = !d->failed_step && c.cutover == 0 && c.unexpected == 0 && c.went_back == 0 &&
         d->good_completed && d->bad_rolled_back && c.ok[V1] > 0 && c.ok[V2] > 0;
    printf("\nSummary\n");
    printf("  requests sent:                 %llu\n", (unsigned long long)c.sent);
    printf("  answered by v1:                %llu\n", (unsigned long long)c.ok[V1]);
    printf("  answered by v2:                %llu\n", (unsigned long long)c.ok[V2]);
    printf("  answered by v3:                %llu, and %llu 500s: v3's own errors (expected)\n",
           (unsigned long long)c.ok[V3], (unsigned long long)c.bad[V3]);
    printf("  failed in cutover:             %llu (connect/read/write errors, timeouts, error\n"
           "                                 answers from cutover itself; must be 0)\n",
           (unsigned long long)c.cutover);
    printf("  other unexpected answers:      %llu\n", (unsigned long long)c.unexpected);
    if (d->good_completed)
        printf("  users sent back from v2 to v1: %llu (sticky, while v2's weight rose)\n",
               (unsigned long long)c.went_back);
    if (c.stale > 0)
        printf("  (re-sent %llu requests on a new connection after the server closed an idle\n"
               "   keep-alive connection, as HTTP clients do)\n",
               (unsigned long long)c.stale);
    for (int i = 0; i < d->traffic.nfirst; i++)
        printf("  error %s\n", d->traffic.first_errors[i]);
    if (d->change_good > 0)
        printf("  v2 (change %ld): %s\n", d->change_good,
               d->good_completed ? "completed the plan canary, now live" : "did NOT complete");
    if (d->change_bad > 0)
        printf("  v3 (change %ld): %s%s%s\n", d->change_bad,
               d->bad_rolled_back ? "rolled back by cutover on its own, gate " : "NOT rolled back",
               d->bad_rolled_back ? (d->bad_gate[0] ? d->bad_gate : "(none named)") : "",
               d->bad_rolled_back ? "" : "");
    if (ok)
        printf("  result: PASS: v2 rolled out, v3 caught and rolled back, no request failed in "
               "cutover.\n");
    else if (d->failed_step)
        printf("  result: FAIL: step '%s' failed.\n", d->failed_step);
    else if (c.cutover > 0 || c.unexpected > 0)
        printf("  result: FAIL: %llu requests failed.\n",
               (unsigned long long)(c.cutover + c.unexpected));
    else if (c.went_back > 0)
        printf("  result: FAIL: sticky users went back from v2 to v1.\n");
    else
        printf("  result: FAIL: %s never answered.\n", c.ok[V1] == 0 ? "v1" : "v2");
    printf("%.1f s elapsed\n", (double)(now_ms() - d->t0) / 1000);

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
