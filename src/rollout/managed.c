/* Managed instances (a service's `run:`): the versions cutover runs itself. This module turns a
 * version into processes through the supervisor (super/supervisor.h) and back: it picks free
 * ports, starts `instances` processes, records each pid in the store (so a restarted daemon
 * adopts them instead of starting them twice), retires a version's processes once it no longer
 * gets traffic and its drain deadline passed, and reports a crash loop to the rollout engine.
 * Control loop only. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/managed.h"
#include "rollout/rollout_int.h"
#include "store/store.h"
#include "super/supervisor.h"

struct managed_set {
    struct rollout *r;
    struct service *s;
    char *version; /* the set's name: in the store's records, the logs' names, the events */
    char *runs;    /* the version its processes run (${VERSION}): the name up to a '+' */
    size_t n;
    struct sup_instance **inst;
    int *ports;
    char last_exit[1024]; /* names the log path, which may be long: never truncated silently */
    int crashed;
    int retiring;
    int stop_sent;
    size_t closing; /* handles still to close at the end of the daemon */
    uv_timer_t retire;
    struct slot_timer *slot_stop; /* per instance: a rolling replacement stops one at a time */
    struct managed_set *next;     /* the rollout's list */
};

/* Stops one instance once its drain is over (rolling replacement). */
struct slot_timer {
    uv_timer_t timer;
    struct managed_set *ms;
    size_t idx;
};

static struct supervisor *sv_of(struct rollout *r)
{
    if (r->sv == NULL)
        r->sv = supervisor_new(r->loop);
    return r->sv;
}

static char *log_path(struct service *s, const char *version, size_t idx)
{
    return xasprintf("%s/logs/%s/%s-%zu.log", s->r->cfg->state_dir, s->cfg->name, version, idx);
}

static void spec_fill(struct sup_spec *sp, struct service *s, const char *version, size_t i,
                      int port, char *logp)
{
    const struct config_run *run = &s->cfg->run;
    memset(sp, 0, sizeof(*sp));
    sp->service = s->cfg->name;
    sp->version = version;
    sp->index = (int)i;
    sp->port = port;
    sp->argv = run->command;
    sp->env = run->env;
    sp->cwd = run->cwd;
    sp->stop_signal = run->stop_signal ? run->stop_signal : SIGTERM;
    sp->stop_timeout_ms = run->stop_timeout_ms;
    sp->log_path = logp;
}

static size_t inst_index(const struct managed_set *ms, const struct sup_instance *inst)
{
    for (size_t i = 0; i < ms->n; i++)
        if (ms->inst[i] == inst)
            return i;
    return ms->n;
}

/* Records slot i's process in the store (an upsert). Done as soon as it is spawned, not only at
 * its STARTED event a loop turn later: a kill -9 in between would leave a process the next
 * daemon knows nothing of, neither to adopt nor to stop. */
static void record(struct managed_set *ms, size_t i)
{
    struct sup_instance *inst = ms->inst[i];
    if (inst != NULL && sup_instance_pid(inst) > 0)
        store_instance_put(ms->r->st, ms->s->cfg->name, ms->version, (int)i,
                           (long)sup_instance_pid(inst), sup_instance_start_ticks(inst),
                           sup_instance_port(inst));
}

static void on_event(void *ctx, struct sup_instance *inst, enum sup_event ev, const char *detail)
{
    struct managed_set *ms = ctx;
    struct rollout *r = ms->r;
    size_t i = inst_index(ms, inst);
    char idx[16], pid[24];
    snprintf(idx, sizeof(idx), "%zu", i);
    snprintf(pid, sizeof(pid), "%ld", (long)sup_instance_pid(inst));
    switch (ev) {
    case SUP_EV_STARTED:
        if (i < ms->n)
            record(ms, i); /* again: a restart has a new pid */
        log_info("instance started", "service", ms->s->cfg->name, "version", ms->version,
                 "instance", idx, "pid", pid);
        break;
    case SUP_EV_EXITED: {
        char *lp = log_path(ms->s, ms->version, i);
        if (strstr(detail, lp) != NULL)
            snprintf(ms->last_exit, sizeof(ms->last_exit), "instance %zu %s", i, detail);
        else
            snprintf(ms->last_exit, sizeof(ms->last_exit), "instance %zu %s (log: %s)", i, detail,
                     lp);
        free(lp);
        log_warn("instance exited", "service", ms->s->cfg->name, "version", ms->version, "instance",
                 idx, "detail", detail);
        break;
    }
    case SUP_EV_CRASHLOOP: {
        char *lp = log_path(ms->s, ms->version, i);
        /* The supervisor's sentence may already name the log; name it once. */
        if (strstr(detail, lp) != NULL)
            snprintf(ms->last_exit, sizeof(ms->last_exit),
                     "instance %zu of %s crashes repeatedly: %s", i, ms->version, detail);
        else
            snprintf(ms->last_exit, sizeof(ms->last_exit),
                     "instance %zu of %s crashes repeatedly: %s (log: %s)", i, ms->version, detail,
                     lp);
        free(lp);
        ms->crashed = 1;
        log_error("instance crash loop", "service", ms->s->cfg->name, "version", ms->version,
                  "instance", idx, "detail", detail);
        if (r->on_crash != NULL)
            r->on_crash(ms->s, ms->version, ms->last_exit); /* the engine decides */
        break;
    }
    case SUP_EV_STOPPED:
        if (i < ms->n) {
            store_instance_del(r->st, ms->s->cfg->name, ms->version, (int)i);
            ms->inst[i] = NULL;
        }
        log_info("instance stopped", "service", ms->s->cfg->name, "version", ms->version,
                 "instance", idx);
        break;
    }
}

static struct managed_set *set_new(struct service *s, const char *version, size_t n)
{
    struct managed_set *ms = xcalloc(1, sizeof(*ms));
    ms->r = s->r;
    ms->s = s;
    ms->version = xstrdup(version);
    ms->runs = xstrndup(version, strcspn(version, "+"));
    ms->n = n;
    ms->inst = xcalloc(n ? n : 1, sizeof(*ms->inst));
    ms->ports = xcalloc(n ? n : 1, sizeof(*ms->ports));
    uv_timer_init(s->r->loop, &ms->retire);
    ms->retire.data = ms;
    ms->slot_stop = xcalloc(n ? n : 1, sizeof(*ms->slot_stop));
    for (size_t i = 0; i < n; i++) {
        uv_timer_init(s->r->loop, &ms->slot_stop[i].timer);
        ms->slot_stop[i].timer.data = &ms->slot_stop[i];
        ms->slot_stop[i].ms = ms;
        ms->slot_stop[i].idx = i;
    }
    ms->next = s->r->sets;
    s->r->sets = ms;
    return ms;
}

/* Ports a new instance of set self (NULL: a set not created yet) must not take: those of the
 * service's running instances, and every port the live version was recorded with even where
 * its instance stopped (a rolling replacement stops them one by one): after a crash, the
 * restart starts the live version's missing instances on those ports. */
static size_t used_ports(struct service *s, const struct managed_set *self, int *out, size_t cap)
{
    const struct managed_set *live = s->live ? s->live->ms : NULL;
    size_t k = 0;
    for (struct managed_set *m = s->r->sets; m; m = m->next)
        if (m->s == s)
            for (size_t i = 0; i < m->n && k < cap; i++)
                if (m->inst[i] != NULL || (m == live && m != self && m->ports[i] > 0))
                    out[k++] = m->ports[i];
    return k;
}

/* Resolves argv0 as execvp would, to refuse a missing command before anything starts. */
static int command_ok(const char *argv0, const char *cwd)
{
    if (strchr(argv0, '/') != NULL) {
        char path[PATH_MAX];
        if (argv0[0] != '/' && cwd != NULL)
            snprintf(path, sizeof(path), "%s/%s", cwd, argv0);
        else
            snprintf(path, sizeof(path), "%s", argv0);
        return access(path, X_OK) == 0;
    }
    const char *p = getenv("PATH");
    if (p == NULL)
        p = "/usr/local/bin:/usr/bin:/bin";
    while (*p) {
        const char *c = strchr(p, ':');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%.*s/%s", (int)l, p, argv0);
        if (l > 0 && access(path, X_OK) == 0)
            return 1;
        p = c ? c + 1 : p + l;
    }
    return 0;
}

struct managed_set *managed_prepare(struct service *s, const char *version, size_t nstart,
                                    char *err, size_t errlen)
{
    const struct config_run *run = &s->cfg->run;
    size_t n = (size_t)(run->instances > 0 ? run->instances : 1);
    if (run->command == NULL || run->command[0] == NULL) {
        snprintf(err, errlen, "service %s has no run.command: deploy with --target", s->cfg->name);
        return NULL;
    }
    if (!command_ok(run->command[0], run->cwd)) {
        snprintf(err, errlen, "run.command: '%s' is not an executable file (or not in PATH)",
                 run->command[0]);
        return NULL;
    }
    /* Every port the service's versions hold, plus the ones the first nstart would take: a
     * range without room is refused before anything starts. */
    size_t cap = nstart;
    for (struct managed_set *m = s->r->sets; m; m = m->next)
        if (m->s == s)
            cap += m->n;
    int *used = xcalloc(cap + 1, sizeof(int));
    size_t nused = used_ports(s, NULL, used, cap);
    for (size_t i = 0; i < nstart; i++) {
        int p = sup_port_pick(run->port_lo, run->port_hi, used, nused);
        if (p < 0) {
            snprintf(err, errlen, "run.port_range %d-%d: no free port for instance %zu of %zu",
                     run->port_lo, run->port_hi, i, n);
            free(used);
            return NULL;
        }
        used[nused++] = p;
    }
    free(used);
    return set_new(s, version, n);
}

int managed_start_one(struct managed_set *ms, size_t i, char **target, char *err, size_t errlen)
{
    struct service *s = ms->s;
    const struct config_run *run = &s->cfg->run;
    if (i >= ms->n || ms->inst[i] != NULL) {
        snprintf(err, errlen, "instance %zu of %s is already running", i, ms->version);
        return -EBUSY;
    }
    size_t cap = 0;
    for (struct managed_set *m = s->r->sets; m; m = m->next)
        if (m->s == s)
            cap += m->n;
    int *used = xcalloc(cap + 1, sizeof(int));
    size_t nused = used_ports(s, ms, used, cap);
    int p = sup_port_pick(run->port_lo, run->port_hi, used, nused);
    free(used);
    if (p < 0) {
        snprintf(err, errlen, "run.port_range %d-%d: no free port for instance %zu of %s",
                 run->port_lo, run->port_hi, i, ms->version);
        return -EADDRNOTAVAIL;
    }
    ms->ports[i] = p;
    char *lp = log_path(s, ms->version, i);
    struct sup_spec sp;
    spec_fill(&sp, s, ms->runs, i, p, lp);
    ms->inst[i] = sup_instance_start(sv_of(s->r), &sp, on_event, ms, err, errlen);
    free(lp);
    if (ms->inst[i] == NULL)
        return -EINVAL;
    record(ms, i);
    /* A stopped set is running again (a rollback reuses it). */
    ms->stop_sent = 0;
    ms->retiring = 0;
    *target = xasprintf("127.0.0.1:%d", p);
    return 0;
}

static void on_slot_stop(uv_timer_t *t)
{
    struct slot_timer *st = t->data;
    struct managed_set *ms = st->ms;
    if (ms->inst[st->idx] == NULL)
        return;
    char idx[16];
    snprintf(idx, sizeof(idx), "%zu", st->idx);
    log_info("stopping replaced instance", "service", ms->s->cfg->name, "version", ms->version,
             "instance", idx);
    sup_instance_stop(ms->inst[st->idx]);
}

void managed_stop_one(struct managed_set *ms, size_t i, uint64_t after_ms)
{
    if (ms == NULL || i >= ms->n || ms->inst[i] == NULL)
        return;
    uv_timer_start(&ms->slot_stop[i].timer, on_slot_stop, after_ms, 0);
}

int managed_unretire_one(struct managed_set *ms, char **target)
{
    for (size_t i = 0; ms && i < ms->n; i++) {
        if (ms->inst[i] == NULL || !uv_is_active((uv_handle_t *)&ms->slot_stop[i].timer))
            continue;
        uv_timer_stop(&ms->slot_stop[i].timer);
        *target = xasprintf("127.0.0.1:%d", ms->ports[i]);
        return 1;
    }
    return 0;
}

int managed_version_running(const struct service *s, const char *version)
{
    for (const struct managed_set *m = s->r->sets; m; m = m->next)
        if (m->s == s && strcmp(m->version, version) == 0)
            for (size_t i = 0; i < m->n; i++)
                if (m->inst[i] != NULL)
                    return 1;
    return 0;
}

size_t managed_slots(const struct managed_set *ms)
{
    return ms ? ms->n : 0;
}

int managed_slot_used(const struct managed_set *ms, size_t i)
{
    return ms != NULL && i < ms->n && ms->inst[i] != NULL;
}

int managed_slot_port(const struct managed_set *ms, size_t i)
{
    return ms != NULL && i < ms->n ? ms->ports[i] : 0;
}

int managed_start(struct service *s, const char *version, struct managed_set **out, char ***targets,
                  size_t *ntargets, char *err, size_t errlen)
{
    size_t n = (size_t)(s->cfg->run.instances > 0 ? s->cfg->run.instances : 1);
    *out = managed_prepare(s, version, n, err, errlen);
    if (*out == NULL)
        return -EINVAL;
    char **t = xcalloc(n + 1, sizeof(*t));
    for (size_t i = 0; i < n; i++) {
        int rc = managed_start_one(*out, i, &t[i], err, errlen);
        if (rc < 0) {
            managed_retire(*out, 0);
            *out = NULL;
            for (size_t k = 0; k < n; k++)
                free(t[k]);
            free(t);
            return rc;
        }
    }
    *targets = t;
    *ntargets = n;
    return 0;
}

/* managed_restore and managed_resume: adopts version's recorded instances on targets (slots
 * 0..n-1 of a set of nslots), then starts the missing ones unless adopt_only. */
static struct managed_set *restore_set(struct service *s, const char *version, char *const *targets,
                                       size_t n, size_t nslots, int start_missing, int adopt_only)
{
    if (s->cfg->run.command == NULL || (n == 0 && !adopt_only))
        return NULL;
    struct store_instance *rec = NULL;
    size_t nrec = 0;
    store_instance_list(s->r->st, s->cfg->name, version, &rec, &nrec);
    if (nrec == 0 && !start_missing && !adopt_only) {
        free(rec);
        return NULL;
    }
    struct managed_set *ms = set_new(s, version, nslots > n ? nslots : n);
    size_t *from = xcalloc(n, sizeof(*from)); /* record adopted by each slot, + 1 (0: none) */
    char err[256], pid[24];
    /* 1. Adopt by port: a rolling replacement may have restarted a slot on another port, so a
     *    slot and its record's index can differ. */
    for (size_t i = 0; i < n; i++) {
        const char *colon = strrchr(targets[i], ':');
        ms->ports[i] = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
        for (size_t k = 0; k < nrec && ms->inst[i] == NULL; k++) {
            if (rec[k].port != ms->ports[i])
                continue;
            char *lp = log_path(s, version, i);
            struct sup_spec sp;
            spec_fill(&sp, s, ms->runs, i, ms->ports[i], lp);
            ms->inst[i] = sup_instance_adopt(sv_of(s->r), &sp, (pid_t)rec[k].pid,
                                             rec[k].start_ticks, on_event, ms, err, sizeof(err));
            free(lp);
            snprintf(pid, sizeof(pid), "%ld", rec[k].pid);
            if (ms->inst[i] != NULL) {
                from[i] = k + 1;
                log_info("instance adopted", "service", s->cfg->name, "version", version, "pid",
                         pid);
            } else {
                log_warn("instance not adopted; starting it again", "service", s->cfg->name,
                         "version", version, "pid", pid, "reason", err);
            }
        }
    }
    /* 2. Records follow their slots: every moved one is deleted before any is written again,
     *    so no write is undone by the deletion of another record with the same index. */
    for (size_t i = 0; i < n; i++)
        if (from[i] && rec[from[i] - 1].idx != (int)i)
            store_instance_del(s->r->st, s->cfg->name, version, rec[from[i] - 1].idx);
    for (size_t i = 0; i < n; i++) {
        const struct store_instance *r = from[i] ? &rec[from[i] - 1] : NULL;
        if (r != NULL && r->idx != (int)i)
            store_instance_put(s->r->st, s->cfg->name, version, (int)i, r->pid, r->start_ticks,
                               r->port);
    }
    /* 3. Start what is missing (its record is written when it starts). */
    for (size_t i = 0; i < n && !adopt_only; i++) {
        if (ms->inst[i] != NULL || !(start_missing || nrec > 0))
            continue;
        char *lp = log_path(s, version, i);
        struct sup_spec sp;
        spec_fill(&sp, s, ms->runs, i, ms->ports[i], lp);
        ms->inst[i] = sup_instance_start(sv_of(s->r), &sp, on_event, ms, err, sizeof(err));
        free(lp);
        if (ms->inst[i] == NULL)
            log_error("cannot start instance", "service", s->cfg->name, "version", version, "error",
                      err);
        else
            record(ms, i);
    }
    free(from);
    free(rec);
    return ms;
}

struct managed_set *managed_restore(struct service *s, const char *version, char *const *targets,
                                    size_t n, int start_missing)
{
    return restore_set(s, version, targets, n, n, start_missing, 0);
}

struct managed_set *managed_resume(struct service *s, const char *version, char *const *targets,
                                   size_t n, size_t nslots)
{
    return restore_set(s, version, targets, n, nslots, 0, 1);
}

void managed_reap(struct service *s, const char *version)
{
    if (s->cfg->run.command == NULL)
        return;
    struct store_instance *rec = NULL;
    size_t nrec = 0;
    store_instance_list(s->r->st, s->cfg->name, version, &rec, &nrec);
    size_t n = 0;
    for (size_t k = 0; k < nrec; k++)
        if (rec[k].idx >= 0 && (size_t)rec[k].idx + 1 > n)
            n = (size_t)rec[k].idx + 1;
    if (n == 0) {
        free(rec);
        return;
    }
    struct managed_set *ms = set_new(s, version, n);
    for (size_t k = 0; k < nrec; k++) {
        size_t i = (size_t)rec[k].idx;
        char *lp = log_path(s, version, i);
        struct sup_spec sp;
        spec_fill(&sp, s, ms->runs, i, rec[k].port, lp);
        char err[256], pid[24];
        ms->ports[i] = rec[k].port;
        ms->inst[i] = sup_instance_adopt(sv_of(s->r), &sp, (pid_t)rec[k].pid, rec[k].start_ticks,
                                         on_event, ms, err, sizeof(err));
        free(lp);
        snprintf(pid, sizeof(pid), "%ld", rec[k].pid);
        if (ms->inst[i] == NULL)
            store_instance_del(s->r->st, s->cfg->name, version, (int)i);
        else
            log_info("stopping an interrupted change's instance", "service", s->cfg->name,
                     "version", version, "pid", pid);
    }
    free(rec);
    managed_retire(ms, s->cfg->drain_timeout_ms + 500);
}

static void set_unlink(struct managed_set *ms)
{
    for (struct managed_set **pp = &ms->r->sets; *pp; pp = &(*pp)->next) {
        if (*pp == ms) {
            *pp = ms->next;
            return;
        }
    }
}

/* Frees the set once its last handle (the retire timer, each slot timer) is closed. */
static void set_handle_closed(struct managed_set *ms)
{
    if (--ms->closing > 0)
        return;
    free(ms->slot_stop);
    free(ms->version);
    free(ms->runs);
    free(ms->inst);
    free(ms->ports);
    free(ms);
}

static void on_set_closed(uv_handle_t *h)
{
    set_handle_closed(h->data);
}

static void on_slot_closed(uv_handle_t *h)
{
    set_handle_closed(((struct slot_timer *)h->data)->ms);
}

static void set_stop_now(struct managed_set *ms)
{
    if (ms->stop_sent)
        return;
    ms->stop_sent = 1;
    for (size_t i = 0; i < ms->n; i++) {
        uv_timer_stop(&ms->slot_stop[i].timer);
        if (ms->inst[i] != NULL)
            sup_instance_stop(ms->inst[i]);
    }
    /* STOPPED events may still arrive: the instances keep ms as their context until then, so
     * the set is only unlinked here and freed at the end of the daemon (managed_free_all). */
}

static void on_retire(uv_timer_t *t)
{
    struct managed_set *ms = t->data;
    log_info("retiring instances", "service", ms->s->cfg->name, "version", ms->version);
    set_stop_now(ms);
}

void managed_retire(struct managed_set *ms, uint64_t after_ms)
{
    if (ms == NULL || ms->retiring)
        return;
    ms->retiring = 1;
    if (after_ms == 0)
        set_stop_now(ms);
    else
        uv_timer_start(&ms->retire, on_retire, after_ms, 0);
}

void managed_keep(struct managed_set *ms)
{
    if (ms == NULL || ms->stop_sent)
        return;
    uv_timer_stop(&ms->retire);
    ms->retiring = 0;
}

uint64_t managed_retire_delay(const struct service *s)
{
    uint64_t d = s->cfg->drain_timeout_ms;
    if (s->cfg->run.rollback_window_ms > d)
        d = s->cfg->run.rollback_window_ms;
    return d + 500;
}

static void set_release(struct managed_set *m)
{
    uv_timer_stop(&m->retire);
    for (size_t i = 0; i < m->n; i++) {
        uv_timer_stop(&m->slot_stop[i].timer);
        if (m->inst[i] != NULL) {
            sup_instance_release(m->inst[i]);
            m->inst[i] = NULL;
        }
    }
}

void managed_stop_all(struct rollout *r)
{
    for (struct managed_set *m = r->sets; m; m = m->next) {
        /* A daemon that stops for good leaves the instances that serve running (a restart of
         * cutover costs their users nothing: the next daemon adopts them from the store), unless
         * the service says run.stop_with_daemon. Retiring ones serve nobody: they go. */
        if (!m->retiring && !m->s->cfg->run.stop_with_daemon) {
            log_info("instances left running for the next daemon", "service", m->s->cfg->name,
                     "version", m->version);
            set_release(m);
            continue;
        }
        uv_timer_stop(&m->retire);
        m->retiring = 1;
        set_stop_now(m);
    }
}

void managed_release_all(struct rollout *r)
{
    for (struct managed_set *m = r->sets; m; m = m->next)
        set_release(m);
}

void managed_free_all(struct rollout *r)
{
    while (r->sets != NULL) {
        struct managed_set *m = r->sets;
        set_unlink(m);
        m->closing = m->n + 1;
        uv_close((uv_handle_t *)&m->retire, on_set_closed);
        for (size_t i = 0; i < m->n; i++)
            uv_close((uv_handle_t *)&m->slot_stop[i].timer, on_slot_closed);
    }
}

const char *managed_last_exit(const struct managed_set *ms)
{
    return ms && ms->last_exit[0] ? ms->last_exit : NULL;
}

int managed_running(const struct managed_set *ms)
{
    if (ms == NULL || ms->stop_sent)
        return 0;
    for (size_t i = 0; i < ms->n; i++)
        if (ms->inst[i] != NULL)
            return 1;
    return 0;
}

json_t *managed_json(const struct managed_set *ms)
{
    json_t *a = json_array();
    for (size_t i = 0; ms && i < ms->n; i++) {
        if (ms->inst[i] == NULL)
            continue;
        json_array_append_new(a, json_pack("{s:i, s:I, s:i, s:i}", "instance", (int)i, "pid",
                                           (json_int_t)sup_instance_pid(ms->inst[i]), "port",
                                           ms->ports[i], "restarts",
                                           sup_instance_restarts(ms->inst[i])));
    }
    return a;
}
