/* Handing listening sockets to another process, and receiving them.
 *
 * Giving side (hot upgrade, reload): handover_start spawns the successor with the sockets as
 * fds 3, 4, ... and the systemd socket-activation variables LISTEN_FDS / LISTEN_FDNAMES (names
 * are the listen addresses), plus CUTOVER_READY_FD: one end of a socketpair on which the
 * successor says "READY" once it serves, or "ERROR <message>" when it cannot. The kernel keeps
 * one accept queue per socket, so connections arriving during the overlap wait there for
 * whichever process accepts first: none is refused.
 *
 * Receiving side: handover_inherit reads LISTEN_FDS / LISTEN_FDNAMES (from systemd or from a
 * predecessor) and handover_take claims an fd by name; handover_ready / handover_error answer
 * the predecessor, and also notify systemd (NOTIFY_SOCKET) when it runs under it.
 * Control thread only. */
#ifndef CUTOVER_NET_HANDOVER_H
#define CUTOVER_NET_HANDOVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct handover_fd {
    int fd;
    const char *name; /* "SERVICE" or "SERVICE.preview" (systemd FileDescriptorName style) */
};

/* Called once: ok with the successor's pid, or not with a message saying why. */
typedef void (*handover_cb)(void *ctx, int ok, pid_t pid, const char *message);

/* Spawns binary with argv (argv[0] included) and the n listening fds; the successor has
 * timeout_ms to say READY. On failure to even spawn returns a negative errno and writes err.
 * When the successor exits or times out (it is then killed) cb reports why. */
int handover_start(uv_loop_t *loop, const char *binary, char *const *argv,
                   const struct handover_fd *fds, size_t n, uint64_t timeout_ms, handover_cb cb,
                   void *ctx, char *err, size_t errlen);

/* Reads the inherited sockets from the environment (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID
 * when set must be our pid) and clears those variables. Returns how many were found. */
size_t handover_inherit(void);

/* Claims the inherited fd named name (or alt); returns it, or -1. Each fd is claimed once. The
 * caller checks that it is bound where the config says (a reload may have moved it). */
int handover_take(const char *name, const char *alt);

/* Closes inherited fds nobody claimed (a listener removed by a reload). */
void handover_close_unclaimed(void);

/* Tells the predecessor (CUTOVER_READY_FD) and systemd (NOTIFY_SOCKET: READY=1, MAINPID) that
 * this process serves. */
void handover_ready(void);

/* Tells the predecessor that this process cannot take over, and why. */
void handover_error(const char *message);

/* Sends a free-form state to systemd's NOTIFY_SOCKET if set ("RELOADING=1", "STOPPING=1"). */
void handover_sd_notify(const char *state);

#endif
