/* Simulation of the rollout gates (src/rollout/analysis.c): how often a version exactly at its
 * limit is rolled back, and how many windows it takes to catch one 2x or 5x over it. It calls
 * the daemon's own analysis_seq_judge / analysis_judge on simulated windows, so what it measures
 * is the code that runs, not a model of it. Built and run by bench/gates.sh.
 *
 *   gates_sim [plans per row, default 10000] [seed, default 20261203]
 *
 * A plan is one analysed step of WINDOWS windows of REQ canary requests each (200, with 2000 on
 * the stable version), confidence 0.99, min_requests 100. Errors: each request fails with
 * probability p, independently (a binomial window). Latency rows: each request is slow (900 ms)
 * with probability p, fast (20 ms) otherwise, against max_p99_latency_ms 500. Deterministic
 * given the seed (splitmix64). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rollout/analysis.h"

#define REQ 200
#define STABLE_REQ 2000
#define WINDOWS 10
#define MAX_WINDOWS 60 /* detection rows give up here ("> 60") */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Binomial(n, p) by n Bernoulli draws: exact, and fast enough at n = 200. */
static uint64_t binomial(uint64_t n, double p)
{
    uint64_t t = p >= 1 ? UINT64_MAX : (uint64_t)(p * 18446744073709551616.0), k = 0;

    for (uint64_t i = 0; i < n; i++)
        k += rng_next() < t;
    return k;
}

static struct config_analysis cfg(double max_error_rate, double max_p99_ms)
{
    struct config_analysis a = {
        .enabled = 1,
        .interval_ms = 10000,
        .min_requests = 100,
        .max_error_rate = max_error_rate,
        .max_p99_latency_ratio = -1,
        .max_p99_latency_ms = max_p99_ms,
        .confidence = 0.99,
    };
    return a;
}

static struct analysis_sample stable, canary;

/* One simulated window: p is the error rate, or the slow share when latency is set. */
static void window(double p, int latency)
{
    uint64_t k = binomial(REQ, p);

    memset(&canary.latency, 0, sizeof(canary.latency));
    canary.requests = REQ;
    canary.errors_5xx = latency ? 0 : k;
    if (latency) {
        canary.latency.counts[hist_bucket(900000)] = k;
        canary.latency.counts[hist_bucket(20000)] = REQ - k;
    }
}

enum mode { SEQ, SEQ_STEPS, WINDOW_ONLY };

/* Runs one plan; returns the window (1-based) in which it failed, 0 if it did not within
 * `windows`; *end gets the step-end verdict of a plan that did not fail. */
static int plan(const struct config_analysis *a, double p, int latency, int windows, enum mode m,
                enum analysis_result *end)
{
    struct analysis_seq q;
    struct analysis_verdict v;

    analysis_seq_reset(&q);
    for (int w = 1; w <= windows; w++) {
        window(p, latency);
        if (m == WINDOW_ONLY) {
            analysis_judge(a, &stable, &canary, &v);
        } else {
            /* SEQ_STEPS: five steps of two windows, the pool reset at each step's start. */
            if (m == SEQ_STEPS && w % 2 == 1)
                analysis_seq_reset(&q);
            analysis_seq_judge(&q, a, &stable, &canary, m == SEQ_STEPS ? w % 2 == 0 : w == windows,
                               &v);
        }
        if (v.result == ANALYSIS_FAIL)
            return w;
    }
    *end = v.result;
    return 0;
}

static int cmp_int(const void *x, const void *y)
{
    return *(const int *)x - *(const int *)y;
}

static void fmt_windows(int w, char *buf, size_t n)
{
    if (w > MAX_WINDOWS)
        snprintf(buf, n, ">%d", MAX_WINDOWS);
    else
        snprintf(buf, n, "%d", w);
}

/* False rollbacks over a WINDOWS-window plan, and how the plans that were not rolled back
 * ended. */
static void row_false(const char *what, double limit, double mult, int latency, enum mode m,
                      int plans)
{
    struct config_analysis a = latency ? cfg(-1, 500) : cfg(limit, -1);
    int fails = 0, pass = 0, inconc = 0;

    for (int i = 0; i < plans; i++) {
        enum analysis_result end = ANALYSIS_PASS;

        if (plan(&a, limit * mult, latency, WINDOWS, m, &end))
            fails++;
        else if (end == ANALYSIS_PASS)
            pass++;
        else
            inconc++;
    }
    if (m == WINDOW_ONLY) /* no step verdict: it judges windows only */
        printf("| %-30s | %5.3f | %4.1fx | %6.2f %% | - | - |\n", what, limit, mult,
               100.0 * fails / plans);
    else
        printf("| %-30s | %5.3f | %4.1fx | %6.2f %% | %6.1f %% | %6.1f %% |\n", what, limit, mult,
               100.0 * fails / plans, 100.0 * pass / plans, 100.0 * inconc / plans);
}

static void row_detect(const char *what, double limit, double mult, int latency, int plans, int *w)
{
    struct config_analysis a = latency ? cfg(-1, 500) : cfg(limit, -1);
    int within3 = 0, within10 = 0;
    char med[16], p90[16];

    for (int i = 0; i < plans; i++) {
        enum analysis_result end;
        int f = plan(&a, limit * mult, latency, MAX_WINDOWS, SEQ, &end);

        w[i] = f ? f : MAX_WINDOWS + 1;
        within3 += w[i] <= 3;
        within10 += w[i] <= 10;
    }
    qsort(w, (size_t)plans, sizeof(*w), cmp_int);
    fmt_windows(w[plans / 2], med, sizeof(med));
    fmt_windows(w[(int)ceil(0.9 * plans) - 1], p90, sizeof(p90));
    printf("| %-30s | %5.3f | %4.1fx | %6s | %6s | %6.1f %% | %6.1f %% |\n", what, limit, mult, med,
           p90, 100.0 * within3 / plans, 100.0 * within10 / plans);
}

int main(int argc, char **argv)
{
    int plans = argc > 1 ? atoi(argv[1]) : 10000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 20261203;
    static const double limits[] = {0.01, 0.05};
    clock_t t0 = clock();
    int *w;

    if (plans < 10) {
        fprintf(stderr, "gates_sim: plans per row must be >= 10\n");
        return 2;
    }
    w = calloc((size_t)plans, sizeof(*w));
    if (w == NULL)
        return 1;
    rng_state = seed;
    stable.requests = STABLE_REQ;
    stable.latency.counts[hist_bucket(20000)] = STABLE_REQ;
    printf("gates_sim: %d plans per row, seed %llu, %d canary requests a window, confidence "
           "0.99, min_requests 100\n\n",
           plans, (unsigned long long)seed, REQ);

    printf("False rollbacks over a %d-window plan (fail = rolled back; pass / inconclusive = "
           "the step's end verdict of the others)\n\n",
           WINDOWS);
    printf("| %-30s | limit | true  | rolled back | pass | inconclusive |\n", "test");
    printf("|---|---|---|---|---|---|\n");
    for (int l = 0; l < 2; l++) {
        row_false("sequential, 1 step x 10", limits[l], 1, 0, SEQ, plans);
        row_false("sequential, 5 steps x 2", limits[l], 1, 0, SEQ_STEPS, plans);
        row_false("window test alone (before)", limits[l], 1, 0, WINDOW_ONLY, plans);
        row_false("sequential, good version", limits[l], 0.5, 0, SEQ, plans);
    }
    row_false("sequential, slow share", 0.01, 1, 1, SEQ, plans);

    printf("\nWindows until the rollback (sequential test, one step, up to %d windows)\n\n",
           MAX_WINDOWS);
    printf("| %-30s | limit | true  | median | p90    | <= 3 windows | <= 10 windows |\n", "test");
    printf("|---|---|---|---|---|---|---|\n");
    for (int l = 0; l < 2; l++) {
        row_detect("error rate", limits[l], 2, 0, plans, w);
        row_detect("error rate", limits[l], 5, 0, plans, w);
    }
    row_detect("slow share (p99 > 500 ms)", 0.01, 2, 1, plans, w);
    row_detect("slow share (p99 > 500 ms)", 0.01, 5, 1, plans, w);
    printf("\n%.1f s of CPU\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    free(w);
    return 0;
}
