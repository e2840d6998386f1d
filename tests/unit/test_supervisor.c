/* Unit tests of super/supervisor with real processes (sh, sleep): start and logs, synchronous
 * start errors, restart and crash loop, the stop sequence and process groups, adoption, port
 * picking and log rotation. Each test runs its own libuv loop, bounded by a deadline timer, and
 * its teardown stops everything and kills, by pid or by the group it created, whatever a broken
 * supervisor left behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "super/supervisor.h"

#define MAX_EVENTS 64

struct event {
    enum sup_event ev;
    pid_t pid;
    char detail[512];
};

struct fx {
    uv_loop_t loop;
    uv_timer_t deadline;
    uv_timer_t tick; /* wakes the loop while a test polls files or /proc */
    bool timed_out;
    struct supervisor *sv;
    char dir[64];
    char log[128];
    struct sup_instance *inst; /* NULL once STOPPED (the supervisor frees it) */
    struct event evs[MAX_EVENTS];
    int nev;
    /* Every process the tests started or saw started, for the teardown's safety net. */
    pid_t pids[MAX_EVENTS];
    uint64_t ticks[MAX_EVENTS];
    int npids;
    bool stop_on_exit; /* the callback stops the instance on its first EXITED */
    bool many;         /* several instances report here: do not check which */
    bool all_done;
    int nfds; /* open at setup: the teardown checks that nothing leaked a descriptor */
};

/* ---- helpers ---- */

static void remember_pid(struct fx *f, pid_t pid, uint64_t ticks)
{
    if (f->npids < MAX_EVENTS) {
        f->pids[f->npids] = pid;
        f->ticks[f->npids] = ticks;
        f->npids++;
    }
}

static void on_event(void *ctx, struct sup_instance *inst, enum sup_event ev, const char *detail)
{
    struct fx *f = ctx;
    if (!f->many)
        assert_ptr_equal(inst, f->inst);
    assert_true(f->nev < MAX_EVENTS);
    f->evs[f->nev].ev = ev;
    f->evs[f->nev].pid = sup_instance_pid(inst);
    snprintf(f->evs[f->nev].detail, sizeof(f->evs[f->nev].detail), "%s", detail);
    f->nev++;
    if (ev == SUP_EV_STARTED)
        remember_pid(f, sup_instance_pid(inst), sup_instance_start_ticks(inst));
    if (ev == SUP_EV_EXITED && f->stop_on_exit) {
        f->stop_on_exit = false;
        sup_instance_stop(inst);
    }
    if (ev == SUP_EV_STOPPED)
        f->inst = NULL;
}

static int count_ev(const struct fx *f, enum sup_event ev)
{
    int n = 0;
    for (int i = 0; i < f->nev; i++)
        n += f->evs[i].ev == ev;
    return n;
}

static const struct event *nth_ev(const struct fx *f, enum sup_event ev, int nth)
{
    for (int i = 0; i < f->nev; i++)
        if (f->evs[i].ev == ev && nth-- == 0)
            return &f->evs[i];
    return NULL;
}

static void on_deadline(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->timed_out = true;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred(f, arg) holds or ms pass; returns pred's last answer. */
static bool run_until(struct fx *f, bool (*pred)(struct fx *, const void *), const void *arg,
                      uint64_t ms)
{
    f->timed_out = false;
    uv_timer_start(&f->deadline, on_deadline, ms, 0);
    uv_timer_start(&f->tick, on_tick, 10, 10);
    while (!pred(f, arg) && !f->timed_out)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
    uv_timer_stop(&f->tick);
    return pred(f, arg);
}

struct ev_want {
    enum sup_event ev;
    int n;
};

static bool have_events(struct fx *f, const void *arg)
{
    const struct ev_want *w = arg;
    return count_ev(f, w->ev) >= w->n;
}

static bool wait_ev(struct fx *f, enum sup_event ev, int n, uint64_t ms)
{
    struct ev_want w = {ev, n};
    return run_until(f, have_events, &w, ms);
}

static bool never(struct fx *f, const void *arg)
{
    (void)f;
    (void)arg;
    return false;
}

/* Lets the loop run for ms, for checks that something does NOT happen. */
static void run_for(struct fx *f, uint64_t ms)
{
    run_until(f, never, NULL, ms);
}

static char *read_file(const char *path)
{
    static char buf[16384];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = 0;
    buf[0] = '\0';
    if (fd == -1)
        return buf;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static bool file_contains(struct fx *f, const void *arg)
{
    (void)f;
    const char *const *pa = arg; /* {path, needle} */
    return strstr(read_file(pa[0]), pa[1]) != NULL;
}

static bool wait_file(struct fx *f, const char *path, const char *needle, uint64_t ms)
{
    const char *pa[2] = {path, needle};
    return run_until(f, file_contains, pa, ms);
}

/* Live (non-zombie) processes whose process group is pgid. */
static int group_alive(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char path[300], buf[1024];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd == -1)
            continue;
        ssize_t len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        char *p = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (p != NULL && sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
            state != 'Z' && state != 'X')
            n++;
    }
    closedir(d);
    return n;
}

static bool group_gone(struct fx *f, const void *arg)
{
    (void)f;
    pid_t pgid = *(const pid_t *)arg;
    return kill(-pgid, 0) == -1 && errno == ESRCH;
}

/* The supervisor guarantees no live member at STOPPED; zombies of orphans are init's to reap,
 * so kill(-pgid, 0) is given a few seconds to agree. */
static void assert_group_gone(struct fx *f, pid_t pgid)
{
    assert_int_equal(group_alive(pgid), 0);
    assert_true(run_until(f, group_gone, &pgid, 5000));
}

static void spec_init(struct fx *f, struct sup_spec *spec, char *const *argv)
{
    memset(spec, 0, sizeof(*spec));
    spec->service = "web";
    spec->version = "v2";
    spec->index = 0;
    spec->port = 18080;
    spec->argv = argv;
    spec->stop_signal = SIGTERM;
    spec->stop_timeout_ms = 2000;
    spec->log_path = f->log;
}

static struct sup_instance *start(struct fx *f, const struct sup_spec *spec)
{
    char err[256] = "";
    f->inst = sup_instance_start(f->sv, spec, on_event, f, err, sizeof(err));
    if (f->inst == NULL)
        fail_msg("start failed: %s", err);
    return f->inst;
}

/* A process of our own in its own session, as a previous daemon would have left it. */
static pid_t spawn_detached_sleep(struct fx *f)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    remember_pid(f, pid, 0);
    return pid;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    assert_non_null(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        char sub[512];
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
        rm_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_supervisor.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->nfds = count_fds();
    snprintf(f->log, sizeof(f->log), "%s/logs/web/v2-0.log", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->deadline);
    f->deadline.data = f;
    uv_timer_init(&f->loop, &f->tick);
    f->sv = supervisor_new(&f->loop);
    *state = f;
    return 0;
}

static void on_all_done(void *ctx)
{
    struct fx *f = ctx;
    f->all_done = true;
}

static bool all_done(struct fx *f, const void *arg)
{
    (void)arg;
    return f->all_done;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    bool clean;

    supervisor_stop_all(f->sv, on_all_done, f);
    clean = run_until(f, all_done, NULL, 5000);
    supervisor_free(f->sv);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int loop_rc = uv_loop_close(&f->loop);

    /* Safety net: whatever is still alive was started by this test. A pid is only signalled
     * while its start time still matches, so a reused pid is never hit. */
    int left = 0;
    for (int i = 0; i < f->npids; i++) {
        pid_t pid = f->pids[i];
        bool alive;
        if (f->ticks[i] == 0) /* forked by the test: alive while we have not reaped it */
            alive = waitpid(pid, NULL, WNOHANG) == 0;
        else
            alive = sup_pid_start_ticks(pid) == f->ticks[i];
        if (alive) {
            left++;
            kill(-pid, SIGKILL); /* each leads the group it was created with */
            kill(pid, SIGKILL);
        } else if (group_alive(pid) > 0) {
            left++;
            kill(-pid, SIGKILL);
        }
        if (alive)
            while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
                ;
    }
    int nfds = count_fds(), want = f->nfds;
    rm_tree(f->dir);
    free(f);
    assert_true(clean);
    assert_int_equal(loop_rc, 0);
    assert_int_equal(left, 0);
    assert_int_equal(nfds, want);
    return 0;
}

/* ---- tests ---- */

static void test_start_and_log(void **state)
{
    struct fx *f = *state;
    static char script[] =
        "echo \"$@\"; echo to-stderr >&2; echo env=$PORT/$CUTOVER_SERVICE/$CUTOVER_VERSION/"
        "$CUTOVER_INSTANCE/$FOO; echo ready; exec sleep 30";
    char *const argv[] = {
        "sh",
        "-c",
        script,
        "sh",
        "port=${PORT}",
        "version=${VERSION}",
        "instance=${INSTANCE}",
        "service=${SERVICE}",
        "keep=${OTHER}",
        "mixed=${PORT}${VERSION}x${",
        NULL,
    };
    char *const env[] = {"FOO=bar", "PORT=1", NULL};
    struct sup_spec spec;
    struct stat st;
    char logdir[160];

    spec_init(f, &spec, argv);
    spec.env = env;
    spec.index = 1;
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_STARTED, 1, 3000));
    pid_t pid = sup_instance_pid(f->inst);
    assert_true(pid > 0);
    assert_int_equal(f->evs[0].pid, pid);
    assert_int_equal(kill(pid, 0), 0);
    assert_int_equal(getpgid(pid), pid); /* its own process group */
    assert_int_equal(getsid(pid), pid);  /* and session: detached */
    assert_true(sup_instance_start_ticks(f->inst) != 0);
    assert_int_equal(sup_instance_start_ticks(f->inst), sup_pid_start_ticks(pid));
    assert_int_equal(sup_instance_port(f->inst), 18080);
    assert_int_equal(sup_instance_restarts(f->inst), 0);

    assert_true(wait_file(f, f->log, "ready\n", 3000));
    assert_string_equal(read_file(f->log),
                        "port=18080 version=v2 instance=1 service=web keep=${OTHER} "
                        "mixed=18080v2x${\n"
                        "to-stderr\n"
                        "env=18080/web/v2/1/bar\n"
                        "ready\n");
    snprintf(logdir, sizeof(logdir), "%s/logs/web", f->dir);
    assert_int_equal(stat(logdir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0750);
    assert_int_equal(stat(f->log, &st), 0);
    mode_t um = umask(0);
    umask(um);
    assert_int_equal(st.st_mode & 0777, 0640 & ~um);
}

static void test_start_errors_are_synchronous(void **state)
{
    struct fx *f = *state;
    struct sup_spec spec;
    char err[256];
    char path[160];

    char *const missing[] = {"no-such-command-cutover", NULL};
    spec_init(f, &spec, missing);
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_non_null(strstr(err, "no-such-command-cutover"));
    assert_non_null(strstr(err, "not found in PATH"));

    char *const relative[] = {"./app", NULL};
    spec_init(f, &spec, relative);
    spec.cwd = f->dir;
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_string_equal(err, "exec of ./app failed: No such file or directory");

    snprintf(path, sizeof(path), "%s/app", f->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_string_equal(err, "exec of ./app failed: Permission denied");

    char *const ok[] = {"sleep", "30", NULL};
    spec_init(f, &spec, ok);
    snprintf(path, sizeof(path), "%s/no-such-dir", f->dir);
    spec.cwd = path;
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_non_null(strstr(err, "cwd"));
    assert_non_null(strstr(err, "No such file or directory"));

    char *const empty[] = {NULL};
    spec_init(f, &spec, empty);
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_string_equal(err, "empty command");

    run_for(f, 200);
    assert_int_equal(f->nev, 0);
}

static void test_exit_restarts_with_new_pid(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "sleep 0.2; exit 3", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_STARTED, 2, 3000));
    const struct event *first = nth_ev(f, SUP_EV_STARTED, 0);
    const struct event *exited = nth_ev(f, SUP_EV_EXITED, 0);
    const struct event *second = nth_ev(f, SUP_EV_STARTED, 1);
    assert_non_null(exited);
    assert_true(first < exited && exited < second);
    assert_non_null(strstr(exited->detail, "exited with status 3"));
    assert_non_null(strstr(exited->detail, "restarting in 100ms"));
    assert_int_equal(exited->pid, 0); /* 0 while restarting */
    assert_true(second->pid > 0);
    assert_int_not_equal(second->pid, first->pid);
    assert_int_equal(sup_instance_restarts(f->inst), 1);
    assert_int_equal(kill(second->pid, 0), 0);

    /* The backoff doubles. */
    assert_true(wait_ev(f, SUP_EV_EXITED, 2, 3000));
    assert_non_null(strstr(nth_ev(f, SUP_EV_EXITED, 1)->detail, "restarting in 200ms"));
}

static void test_crash_loop_stops_restarting(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "echo crashing; exit 1", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    spec.crash_max = 3;
    spec.crash_window_ms = 10000;
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_CRASHLOOP, 1, 5000));
    assert_int_equal(count_ev(f, SUP_EV_STARTED), 3);
    assert_int_equal(count_ev(f, SUP_EV_EXITED), 2);
    const struct event *cl = nth_ev(f, SUP_EV_CRASHLOOP, 0);
    assert_non_null(strstr(cl->detail, "exited with status 1"));
    assert_non_null(strstr(cl->detail, "3 exits within 10s"));
    assert_non_null(strstr(cl->detail, f->log));
    assert_int_equal(sup_instance_restarts(f->inst), 2);

    run_for(f, 600); /* past the next backoff (400ms) */
    assert_int_equal(f->nev, 6);
    assert_int_equal(sup_instance_pid(f->inst), 0);
    assert_non_null(strstr(read_file(f->log), "crashing\ncrashing\ncrashing\n"));

    /* Stopping a crashed instance still ends with STOPPED, from the loop. */
    sup_instance_stop(f->inst);
    assert_int_equal(f->nev, 6);
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 1000));
    assert_null(f->inst);
}

static void test_stop_kills_after_timeout(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "trap '' TERM; echo ready; sleep 30; echo survived", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    spec.stop_timeout_ms = 300;
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_STARTED, 1, 3000));
    assert_true(wait_file(f, f->log, "ready\n", 3000));
    pid_t pid = sup_instance_pid(f->inst);

    uint64_t t0 = uv_hrtime();
    sup_instance_stop(f->inst);
    sup_instance_stop(f->inst); /* twice is harmless */
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 3000));
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms >= 290);
    assert_true(ms < 2000);
    const struct event *st = nth_ev(f, SUP_EV_STOPPED, 0);
    assert_non_null(strstr(st->detail, "killed by signal 9"));
    assert_non_null(strstr(st->detail, "after the stop timeout"));
    assert_null(f->inst);
    assert_int_equal(count_ev(f, SUP_EV_EXITED), 0);
    assert_int_equal(f->nev, 2);
    assert_group_gone(f, pid);
    assert_null(strstr(read_file(f->log), "survived"));
}

static void test_stop_takes_the_whole_group(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "sleep 30 & echo ready; sleep 30", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    start(f, &spec);
    assert_true(wait_file(f, f->log, "ready\n", 3000));
    pid_t pid = sup_instance_pid(f->inst);
    assert_true(group_alive(pid) >= 2);

    sup_instance_stop(f->inst);
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 3000));
    assert_non_null(strstr(nth_ev(f, SUP_EV_STOPPED, 0)->detail, "signal 15"));
    assert_group_gone(f, pid);
}

static void test_stop_kills_members_that_outlive_the_leader(void **state)
{
    struct fx *f = *state;
    /* The member ignores TERM; the leader dies of it. The group must not wait for the 5 s stop
     * timeout: once the leader is gone, the rest of the group gets SIGKILL. */
    char *const argv[] = {"sh", "-c",
                          "(trap '' TERM; echo member-ready; exec sleep 30) & exec sleep 30", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    spec.stop_timeout_ms = 5000;
    start(f, &spec);
    assert_true(wait_file(f, f->log, "member-ready\n", 3000));
    pid_t pid = sup_instance_pid(f->inst);
    assert_int_equal(group_alive(pid), 2);

    uint64_t t0 = uv_hrtime();
    sup_instance_stop(f->inst);
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 4000));
    assert_true((uv_hrtime() - t0) / 1000000 < 3000);
    assert_null(strstr(nth_ev(f, SUP_EV_STOPPED, 0)->detail, "after the stop timeout"));
    assert_group_gone(f, pid);
}

static void test_stop_from_event_callback(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "exit 2", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    f->stop_on_exit = true;
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 3000));
    run_for(f, 300); /* the cancelled restart must not happen */
    assert_int_equal(count_ev(f, SUP_EV_STARTED), 1);
    assert_int_equal(count_ev(f, SUP_EV_EXITED), 1);
    assert_int_equal(f->nev, 3);
}

static void test_adopt_then_restart_on_exit(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sh", "-c", "echo restarted; exec sleep 30", NULL};
    struct sup_spec spec;
    char err[256] = "";

    pid_t pid = spawn_detached_sleep(f);
    uint64_t ticks = sup_pid_start_ticks(pid);
    assert_true(ticks != 0);

    spec_init(f, &spec, argv);
    f->inst = sup_instance_adopt(f->sv, &spec, pid, ticks, on_event, f, err, sizeof(err));
    if (f->inst == NULL)
        fail_msg("adopt failed: %s", err);
    assert_int_equal(sup_instance_pid(f->inst), pid);
    assert_int_equal(sup_instance_start_ticks(f->inst), ticks);
    run_for(f, 100);
    assert_int_equal(f->nev, 0); /* adoption is not a start */

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid); /* we are its parent, not the supervisor */
    assert_true(wait_ev(f, SUP_EV_STARTED, 1, 3000));
    const struct event *ex = nth_ev(f, SUP_EV_EXITED, 0);
    assert_non_null(ex);
    assert_non_null(strstr(ex->detail, "exited (adopted process, status unknown)"));
    const struct event *st = nth_ev(f, SUP_EV_STARTED, 0);
    assert_true(ex < st);
    assert_true(st->pid > 0);
    assert_int_not_equal(st->pid, pid);
    assert_int_equal(sup_instance_restarts(f->inst), 1);
    assert_true(wait_file(f, f->log, "restarted\n", 3000));
}

static void test_adopt_stop(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sleep", "30", NULL};
    struct sup_spec spec;
    char err[256] = "";

    pid_t pid = spawn_detached_sleep(f);
    spec_init(f, &spec, argv);
    f->inst = sup_instance_adopt(f->sv, &spec, pid, sup_pid_start_ticks(pid), on_event, f, err,
                                 sizeof(err));
    assert_non_null(f->inst);
    sup_instance_stop(f->inst);
    assert_true(wait_ev(f, SUP_EV_STOPPED, 1, 3000));
    assert_non_null(strstr(nth_ev(f, SUP_EV_STOPPED, 0)->detail, "status unknown"));
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(f->nev, 1);
}

static void test_adopt_refuses_other_process(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sleep", "30", NULL};
    struct sup_spec spec;
    char err[256] = "";

    pid_t pid = spawn_detached_sleep(f);
    uint64_t ticks = sup_pid_start_ticks(pid);
    spec_init(f, &spec, argv);
    assert_null(sup_instance_adopt(f->sv, &spec, pid, ticks + 1, on_event, f, err, sizeof(err)));
    assert_non_null(strstr(err, "pid reused"));
    assert_int_equal(kill(pid, 0), 0); /* refused, and left alone */

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(sup_pid_start_ticks(pid), 0);
    assert_null(sup_instance_adopt(f->sv, &spec, pid, ticks, on_event, f, err, sizeof(err)));
    assert_non_null(strstr(err, "is not running"));
    assert_int_equal(f->nev, 0);
}

static void test_release_leaves_process_running(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sleep", "30", NULL};
    struct sup_spec spec;

    spec_init(f, &spec, argv);
    start(f, &spec);
    assert_true(wait_ev(f, SUP_EV_STARTED, 1, 3000));
    pid_t pid = sup_instance_pid(f->inst);
    sup_instance_release(f->inst);
    f->inst = NULL;
    run_for(f, 200);
    assert_int_equal(kill(pid, 0), 0);
    assert_int_equal(f->nev, 1);
    /* The handed-over process is ours (the test's child) to end. */
    assert_int_equal(kill(-pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_stop_all(void **state)
{
    struct fx *f = *state;
    char *const argv[] = {"sleep", "30", NULL};
    struct sup_spec spec;
    struct sup_instance *a, *b;
    char err[256];

    spec_init(f, &spec, argv);
    spec.stop_signal = SIGINT;
    a = start(f, &spec);
    spec.index = 1;
    b = sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err));
    assert_non_null(b);
    pid_t pa = sup_instance_pid(a), pb = sup_instance_pid(b);
    remember_pid(f, pa, sup_instance_start_ticks(a));
    remember_pid(f, pb, sup_instance_start_ticks(b));
    f->many = true;
    supervisor_stop_all(f->sv, on_all_done, f);
    assert_null(sup_instance_start(f->sv, &spec, on_event, f, err, sizeof(err)));
    assert_string_equal(err, "the supervisor is shutting down");
    assert_true(run_until(f, all_done, NULL, 3000));
    assert_int_equal(count_ev(f, SUP_EV_STOPPED), 2);
    assert_int_equal(f->nev, 2); /* stopped before their start was announced */
    const struct event *st = nth_ev(f, SUP_EV_STOPPED, 0);
    assert_non_null(st);
    assert_non_null(strstr(st->detail, "signal 2"));
    assert_group_gone(f, pa);
    assert_group_gone(f, pb);
    f->all_done = false;
}

static void test_port_pick(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    int held = ntohs(sa.sin_port);
    int used[] = {held + 1, held + 2};

    int p = sup_port_pick(held, held + 20, used, 2);
    assert_true(p > held + 2 && p <= held + 20);
    assert_int_equal(sup_port_pick(held, held, NULL, 0), -EADDRNOTAVAIL);
    assert_int_equal(sup_port_pick(held + 1, held + 2, used, 2), -EADDRNOTAVAIL);
    assert_int_equal(sup_port_pick(10, 5, NULL, 0), -EINVAL);
    assert_int_equal(sup_port_pick(0, 5, NULL, 0), -EINVAL);
    assert_int_equal(sup_port_pick(65535, 65536, NULL, 0), -EINVAL);
    close(fd);
}

static void test_pid_start_ticks(void **state)
{
    (void)state;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)getpid());
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    /* Field 22 counted from after the command name. */
    char *p = strrchr(buf, ')') + 2;
    for (int i = 3; i < 22; i++)
        p = strchr(p, ' ') + 1;
    assert_int_equal(sup_pid_start_ticks(getpid()), strtoull(p, NULL, 10));
    assert_int_equal(sup_pid_start_ticks(0), 0);
    assert_int_equal(sup_pid_start_ticks(-1), 0);
    assert_int_equal(sup_pid_start_ticks(4194304 + 1), 0); /* above any pid_max */
}

static void test_pid_start_ticks_odd_command_name(void **state)
{
    struct fx *f = *state;
    char exe[200];
    /* A command name with spaces and ')' must not shift the fields. */
    snprintf(exe, sizeof(exe), "%s/a) b (c", f->dir);
    assert_int_equal(symlink("/bin/sleep", exe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(exe, "x", "30", (char *)NULL);
        _exit(127);
    }
    remember_pid(f, pid, 0);
    for (int i = 0; i < 200; i++) { /* wait for the exec to change comm */
        char path[64], buf[256];
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (n > 0 && strncmp(buf, "a) b (c", 7) == 0)
            break;
        usleep(10000);
    }
    uint64_t ticks = sup_pid_start_ticks(pid);
    assert_true(ticks != 0);
    assert_true(ticks >= sup_pid_start_ticks(getpid()));
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static bool rotated(struct fx *f, const void *arg)
{
    const char *rot = arg;
    struct stat st;
    (void)f;
    return stat(rot, &st) == 0 && st.st_size > 0;
}

static void test_log_copytruncate(void **state)
{
    struct fx *f = *state;
    char rot[160];
    snprintf(rot, sizeof(rot), "%s.1", f->log);
    /* 60 lines of 50 bytes, then wait for the rotation and write once more. */
    static char script[] =
        "i=0; while [ $i -lt 60 ]; do echo 0123456789012345678901234567890123456789012345678; "
        "i=$((i+1)); done; echo first-done; "
        "while [ ! -s \"$1\" ]; do sleep 0.05; done; sleep 0.2; echo after; exec sleep 30";
    char *argv[] = {
        "sh", "-c", script, "sh", rot, NULL,
    };
    struct sup_spec spec;
    struct stat st;

    spec_init(f, &spec, argv);
    spec.log_max_bytes = 1000;
    start(f, &spec);
    assert_true(run_until(f, rotated, rot, 4000));
    assert_true(wait_file(f, f->log, "after\n", 3000));
    /* O_APPEND: the process's next write went to the start of the truncated file, no hole. */
    assert_string_equal(read_file(f->log), "after\n");
    assert_int_equal(stat(rot, &st), 0);
    assert_int_equal(st.st_size, 60 * 50 + 11);
    assert_non_null(strstr(read_file(rot), "first-done\n"));
}

/* libuv opens a process-wide signal pipe on first use and keeps it; open it before any
 * test counts descriptors. */
static void warm_up_libuv(void)
{
    uv_loop_t loop;
    uv_signal_t sig;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_signal_init(&loop, &sig);
    uv_close((uv_handle_t *)&sig, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_and_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_errors_are_synchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_restarts_with_new_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_loop_stops_restarting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_kills_after_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_takes_the_whole_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_kills_members_that_outlive_the_leader, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_event_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_then_restart_on_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_refuses_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_leaves_process_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_all, setup, teardown),
        cmocka_unit_test(test_port_pick),
        cmocka_unit_test(test_pid_start_ticks),
        cmocka_unit_test_setup_teardown(test_pid_start_ticks_odd_command_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_copytruncate, setup, teardown),
    };
    warm_up_libuv();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
