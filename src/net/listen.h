/* Listening TCP sockets for services. Created once by the control thread; each worker accepts
 * on its own dup() of the same socket, so the kernel's single accept queue is shared and a
 * socket can later be handed to another process as one fd. */
#ifndef CUTOVER_NET_LISTEN_H
#define CUTOVER_NET_LISTEN_H

/* Binds and listens on address ("HOST:PORT") with SO_REUSEADDR, non-blocking and close-on-exec.
 * Returns the fd, or a negative errno. */
int listen_tcp(const char *address, int backlog);

#endif
