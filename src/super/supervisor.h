/* The process supervisor: starts the instances of a managed version (`run:` in a service),
 * restarts them with capped exponential backoff, gives up on a crash loop, stops them with
 * stop_signal then SIGKILL after stop_timeout, and adopts instances that outlived a previous
 * daemon (hot upgrade or crash). Each instance runs in its own process group with stdout and
 * stderr appended straight to its log file, so it never depends on the daemon being alive.
 * Control loop only. */
#ifndef CUTOVER_SUPER_SUPERVISOR_H
#define CUTOVER_SUPER_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct supervisor;
struct sup_instance;

/* What to run. Strings are copied by sup_instance_start. */
struct sup_spec {
    const char *service;
    const char *version;
    int index;                /* ${INSTANCE}, 0-based */
    int port;                 /* ${PORT} */
    char *const *argv;        /* NULL-terminated; ${PORT} ${VERSION} ${INSTANCE} ${SERVICE}
                                 are expanded in every element; argv[0] is looked up in PATH */
    char *const *env;         /* extra "NAME=VALUE" (NULL-terminated, may be NULL); the
                                 instance also gets PORT, CUTOVER_SERVICE, CUTOVER_VERSION,
                                 CUTOVER_INSTANCE, and the daemon's environment */
    const char *cwd;          /* may be NULL */
    int stop_signal;          /* e.g. SIGTERM */
    uint64_t stop_timeout_ms; /* then SIGKILL to the process group */
    const char *log_path;     /* stdout+stderr appended here; parent directories created */
    uint64_t log_max_bytes;   /* when the file grows past this it is copied to PATH.1 and
                                 truncated (copytruncate: the process keeps its fd); 0 = 10 MiB */
    int crash_max;            /* this many exits within crash_window_ms is a crash loop; */
    uint64_t crash_window_ms; /* 0/0 mean 5 exits in 60 s */
};

enum sup_event {
    SUP_EV_STARTED,   /* a process started (also each restart); pid in sup_instance_pid */
    SUP_EV_EXITED,    /* it exited unexpectedly; a restart is scheduled (detail: how it ended) */
    SUP_EV_CRASHLOOP, /* it exited crash_max times within the window; no more restarts */
    SUP_EV_STOPPED,   /* sup_instance_stop finished: the process group is gone */
};

/* Called on each event; detail is a sentence ("exited with status 3", "killed by signal 9",
 * "exec of ./app failed: No such file or directory"). May call any sup_ function. */
typedef void (*sup_event_cb)(void *ctx, struct sup_instance *inst, enum sup_event ev,
                             const char *detail);

struct supervisor *supervisor_new(uv_loop_t *loop);

/* Starts an instance (fork/exec via uv_spawn, own process group, UV_PROCESS_DETACHED so it
 * survives the daemon). Returns NULL with a message in err when it cannot even start (the
 * command does not exist or is not executable, cwd missing, log file not writable). */
struct sup_instance *sup_instance_start(struct supervisor *sv, const struct sup_spec *spec,
                                        sup_event_cb cb, void *ctx, char *err, size_t errlen);

/* Takes over a process a previous daemon started: verifies that pid is alive and that its
 * start time (field 22 of /proc/PID/stat, clock ticks since boot) equals start_ticks, so a
 * reused pid is never adopted; then watches it (pidfd_open + uv_poll, since it is not our
 * child) and restarts it like any instance when it exits. Returns NULL (and err) when the
 * process is gone or is not the same process. */
struct sup_instance *sup_instance_adopt(struct supervisor *sv, const struct sup_spec *spec,
                                        pid_t pid, uint64_t start_ticks, sup_event_cb cb, void *ctx,
                                        char *err, size_t errlen);

/* Stops the instance: stop_signal to its process group, SIGKILL to the group after
 * stop_timeout; SUP_EV_STOPPED follows, then the instance is freed. No restart after this. */
void sup_instance_stop(struct sup_instance *inst);

/* Forgets the instance without stopping its process (the daemon hands it over to its
 * successor); frees it. */
void sup_instance_release(struct sup_instance *inst);

pid_t sup_instance_pid(const struct sup_instance *inst); /* 0 while restarting */
uint64_t sup_instance_start_ticks(const struct sup_instance *inst);
int sup_instance_port(const struct sup_instance *inst);
int sup_instance_restarts(const struct sup_instance *inst);

/* Returns a TCP port in [lo, hi] that nothing listens on (tries bind on 127.0.0.1) and that
 * is not in used[0..nused); -EADDRNOTAVAIL when none is free. */
int sup_port_pick(int lo, int hi, const int *used, size_t nused);

/* Reads the start time of pid from /proc (0 when it is not running). */
uint64_t sup_pid_start_ticks(pid_t pid);

/* Stops every instance (as sup_instance_stop) and calls done once all are gone. */
void supervisor_stop_all(struct supervisor *sv, void (*done)(void *ctx), void *ctx);

/* Frees the supervisor once it has no instance left. */
void supervisor_free(struct supervisor *sv);

#endif
