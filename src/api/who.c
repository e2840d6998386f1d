#include "api/who.h"

#include <stdio.h>
#include <string.h>

void who_unix_resolve(const struct config *cfg, uid_t uid, const char *user, uid_t daemon_uid,
                      struct who_unix *out)
{
    memset(out, 0, sizeof(*out));
    out->uid = uid;
    if (user != NULL && strlen(user) <= WHO_NAME_MAX)
        snprintf(out->user, sizeof(out->user), "%s", user);
    else
        snprintf(out->user, sizeof(out->user), "uid-%lu", (unsigned long)uid);
    out->identified = cfg != NULL && cfg->npeople > 0;
    out->role = CONFIG_ROLE_ADMIN;
    if (!out->identified)
        return;
    out->person = user != NULL ? config_person_by_unix_user(cfg, user) : NULL;
    if (out->person != NULL)
        out->role = out->person->role;
    else if (uid != 0 && uid != daemon_uid)
        out->role = CONFIG_ROLE_VIEWER;
}

const char *who_unix_actor(const struct who_unix *w, const char *asked, char *why, size_t n)
{
    const char *self = w->person != NULL ? w->person->name : w->user;
    if (!w->identified)
        return asked != NULL ? asked : self; /* no people: the client's word, as before */
    /* The CLI names the login when nobody said --as: that is the person too. */
    if (asked == NULL || strcmp(asked, self) == 0 || strcmp(asked, w->user) == 0)
        return self;
    if (w->role >= CONFIG_ROLE_ADMIN)
        return asked;
    snprintf(why, n,
             "actor: you are '%s' (unix user %s, role %s); acting as '%.64s' (--as) needs the "
             "role admin",
             self, w->user, config_role_name(w->role), asked);
    return NULL;
}

void who_unix_describe(const struct who_unix *w, char *buf, size_t n)
{
    snprintf(buf, n, "uid %lu (%s)", (unsigned long)w->uid, w->user);
}
