/* Who sends a request over the admin socket: the peer's OS user (SO_PEERCRED), mapped to a
 * person of the config's `people:`, and what that identity may do. Pure decisions on a config
 * and a uid, so that the rules are unit-tested without sockets (tests/unit/test_who.c); api.c
 * reads the credentials and asks here. */
#ifndef CUTOVER_API_WHO_H
#define CUTOVER_API_WHO_H

#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"

#define WHO_NAME_MAX 64

/* The identity of a unix-socket connection. */
struct who_unix {
    uid_t uid;
    char user[WHO_NAME_MAX + 1];        /* the OS login of uid, or "uid-N" when it has none */
    const struct config_person *person; /* borrowed from the config; NULL when unmapped */
    enum config_role role;              /* what the connection may do */
    int identified;                     /* people are configured: identities are enforced */
};

/* Decides the identity of a peer with uid (whose login name is user, or NULL) under cfg, for a
 * daemon running as daemon_uid:
 *  - no `people:` in the config: the socket's mode already limits it to trusted users; role
 *    admin and any actor, as before identities existed (identified 0);
 *  - the person whose unix_user is the login: that person, with their role;
 *  - nobody's login, but root or the daemon's own user: admin (they own the daemon's files);
 *  - anyone else (a member of admin.socket_group that is not a person): viewer. */
void who_unix_resolve(const struct config *cfg, uid_t uid, const char *user, uid_t daemon_uid,
                      struct who_unix *out);

/* The actor a request of w acts as when it asks to act as asked (NULL: itself). Returns the
 * name to record, or NULL with a sentence in why (403): only an admin acts for someone else. */
const char *who_unix_actor(const struct who_unix *w, const char *asked, char *why, size_t n);

/* "uid 1000 (alice)", for the audit log. */
void who_unix_describe(const struct who_unix *w, char *buf, size_t n);

#endif
