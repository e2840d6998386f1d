/* The command of a plan's `test:` step: run in its own process group with the daemon's
 * environment plus the change's, stdout and stderr captured in order (the first 64 KiB kept),
 * killed whole at its timeout. Control loop only. It knows nothing of plans: the caller gets
 * one callback with the verdict. */
#ifndef CUTOVER_ROLLOUT_STEPTEST_H
#define CUTOVER_ROLLOUT_STEPTEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define STEPTEST_OUTPUT_MAX (64 * 1024)

struct steptest;

struct steptest_result {
    int passed;         /* exited with status 0, in time */
    const char *msg;    /* "test step 2 exited with status 1" */
    const char *output; /* NUL-terminated, at most STEPTEST_OUTPUT_MAX bytes */
};

/* Called once, unless the test was cancelled; the test is freed after it returns. */
typedef void (*steptest_done_cb)(void *ctx, const struct steptest_result *res);

/* Starts argv (argv[0] a path) as the test of step number step (1-based, for messages) with
 * env_extra ("K=V", NULL-terminated) added to the environment, killed after timeout_ms. A
 * command that cannot start is judged at once: cb is called before this returns (and NULL is
 * returned). */
struct steptest *steptest_start(uv_loop_t *loop, char *const *argv, const char *const *env_extra,
                                uint64_t timeout_ms, size_t step, steptest_done_cb cb, void *ctx);

/* Stops a running test without judging it: cb is not called; its process group is killed. */
void steptest_cancel(struct steptest *t);

#endif
