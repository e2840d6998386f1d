/* `cutover demo`: a self-contained demonstration of a zero-downtime switch and of progressive
 * delivery. It starts three sample backends (v1, v2 and a bad v3 that fails 5 % of its
 * requests) and a real daemon on loopback in a temporary directory, keeps steady keep-alive
 * traffic from sticky users running, drives the real CLI through deploy, rollback, a plan that
 * takes v2 to 100 %, a plan that cutover rolls back on its own for v3, status, history and
 * report, and counts every answer by version and by who caused a failure. Runs in the calling
 * process (main thread plus a few traffic threads) and its child processes, all of which it
 * stops before returning. */
#ifndef CUTOVER_DEMO_DEMO_H
#define CUTOVER_DEMO_DEMO_H

/* Runs the demonstration. argv[0] is "demo"; options: --keep (leave the temporary directory
 * in place), --quiet (print only the summary and failures), -h/--help. Returns the process
 * exit code: 0 when no request failed in cutover, no other answer was unexpected, v2 completed
 * its plan and v3 was rolled back; 1 when a step failed or the run was interrupted; 2 on bad
 * usage. Ends by itself within 60 s. Call from main only: it installs handlers for SIGINT,
 * SIGTERM, SIGHUP and SIGALRM and forks children that re-execute /proc/self/exe. */
int demo_main(int argc, char **argv);

#endif
