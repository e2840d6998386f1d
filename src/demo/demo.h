/* `cutover demo`: a self-contained demonstration of a zero-downtime switch. It starts two
 * sample backends (v1, v2) and a real daemon on loopback in a temporary directory, keeps
 * steady keep-alive traffic running, drives the real CLI through deploy, status, rollback and
 * history, and counts every answer by version. Runs in the calling process (main thread plus
 * a few traffic threads) and its child processes, all of which it stops before returning. */
#ifndef CUTOVER_DEMO_DEMO_H
#define CUTOVER_DEMO_DEMO_H

/* Runs the demonstration. argv[0] is "demo"; options: --keep (leave the temporary directory
 * in place), --quiet (print only the summary and failures), -h/--help. Returns the process
 * exit code: 0 when no request failed and both versions answered, 1 when a step failed or
 * the run was interrupted, 2 on bad usage. Ends by itself within 60 s. Call from main only:
 * it installs handlers for SIGINT, SIGTERM, SIGHUP and SIGALRM and forks children that
 * re-execute /proc/self/exe. */
int demo_main(int argc, char **argv);

#endif
