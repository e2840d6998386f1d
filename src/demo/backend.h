/* The sample backend bundled for `cutover demo` and the end-to-end tests: the hidden
 * subcommand `cutover sample-backend PORT VERSION [--error-rate F] [--delay-ms N]`. A tiny
 * HTTP/1.1 server on 127.0.0.1:PORT that says which version it is, and can be told to be a bad
 * version: fail a share of its answers or answer late. One libuv loop on the calling thread; it
 * owns its sockets. */
#ifndef CUTOVER_DEMO_BACKEND_H
#define CUTOVER_DEMO_BACKEND_H

/* Runs the sample backend until SIGTERM or SIGINT. argv[0] is "sample-backend", argv[1] the
 * port (1..65535), argv[2] the version name (1-64 of A-Za-z0-9._-). Answers GET /healthz with
 * 200 "ok\n" and any other request with 200 "VERSION\n" plus the header "X-Version: VERSION",
 * framed by Content-Length, keeping connections alive. Options after VERSION:
 *   --error-rate F  a share F (0..1) of the version answers are 500 "VERSION: injected error\n"
 *                   (with X-Version), spread evenly: exactly one in 1/F, not at random;
 *   --delay-ms N    every answer but the health check's is sent N ms (0..60000) late; the
 *                   requests a client pipelines behind it wait their turn.
 * Returns the process exit code: 0 after a clean stop, 1 when it cannot listen, 2 on bad
 * usage. Call from main only: it installs signal handlers and runs its own loop. */
int demo_backend_main(int argc, char **argv);

#endif
