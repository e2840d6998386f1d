/* The command-line client: every subcommand except `serve` and `demo` (which main runs itself)
 * parses its arguments, validates them, talks to the daemon's admin API over HTTP/JSON (unix
 * socket or TCP, libcurl + jansson) and prints the answer. Runs in the CLI process only, on its
 * main thread; it never links into the daemon's loops. */
#ifndef CUTOVER_CLI_CLI_H
#define CUTOVER_CLI_CLI_H

#include <stdio.h>

/* Runs the command in argv (argv[0] the program, argv[1] the subcommand; no subcommand, "help",
 * "--help", "-h" and "--version" included) and returns the process exit code: 0 done, 1 the
 * operation failed (daemon unreachable, change ended failed/rolled_back/aborted/interrupted,
 * server 5xx, 409 conflict), 2 bad usage or bad config (unknown command or option, missing
 * argument, 400/404 from the API, config that does not load). Human output goes to stdout,
 * errors to stderr prefixed "cutover: ". Calls curl_global_init/cleanup itself. */
int cli_main(int argc, char **argv);

/* Writes the full help (every command of the contract, serve and demo included, one line each,
 * then the global options and exit codes) to out. */
void cli_usage(FILE *out);

#endif
