/* The daemon: `cutover serve [-c FILE]`. Runs in the foreground until SIGTERM/SIGINT, or until
 * it handed over to a successor (hot upgrade, reload) and drained. */
#ifndef CUTOVER_SERVE_SERVE_H
#define CUTOVER_SERVE_SERVE_H

/* argv[1] is "serve". Returns the exit code: 0 after a clean stop, 1 when the daemon could not
 * start, 2 for bad usage or an invalid config. */
int serve_main(int argc, char **argv);

#endif
