/* The like-for-like baseline of a plan change: see baseline.h for the decisions. This file
 * starts, adopts, routes and stops it; the plan (plan.c) compares the canary with its figures.
 * Control loop only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/baseline.h"
#include "rollout/managed.h"
#include "rollout/rollout_int.h"
#include "store/store.h"

/* The plan asks for a baseline and something is live to make one of. */
static int wanted(const struct service *s, const struct config_plan *cp)
{
    return cp != NULL && cp->analysis.enabled && cp->analysis.baseline && s->live != NULL;
}

/* Of users, for a canary at weight percent: as many as the canary while both fit. */
static int share_of(int weight)
{
    int share = weight < 100 - weight ? weight : 100 - weight;
    return share > 0 ? share : 0;
}

/* The name of the live version's baseline set: "v1+baseline". */
static void set_name(const struct service *s, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s", s->live->name, MANAGED_BASELINE);
}

static struct version *version_over(struct service *s, char *const *targets, size_t n,
                                    int optimistic)
{
    return version_new(s->r->loop, &s->cfg->health, s->live->name, (const char *const *)targets, n,
                       optimistic, s->r->on_health, s);
}

/* Starts a fresh set named name into s->baseline; err set on failure. */
static int start_set(struct service *s, const char *name, char *err, size_t errlen)
{
    struct managed_set *ms = NULL;
    char **targets = NULL;
    size_t n = 0;
    int rc = managed_start(s, name, &ms, &targets, &n, err, errlen);
    if (rc < 0)
        return rc;
    s->baseline = version_over(s, targets, n, 0);
    s->baseline->ms = ms;
    store_strv_free(targets);
    log_info("baseline started", "service", s->cfg->name, "version", s->live->name);
    return 0;
}

int baseline_start(struct service *s, const struct config_plan *cp, char *err, size_t errlen)
{
    if (!wanted(s, cp))
        return 0;
    if (s->cfg->run.command == NULL || s->cfg->strategy.kind == CONFIG_STRATEGY_ROLLING) {
        /* The config refuses these for a service's own plan; deploy --plan may name another. */
        snprintf(err, errlen,
                 "plan %s has analysis.baseline, which needs a run: section and strategy "
                 "blue_green; %s has %s",
                 cp->name, s->cfg->name,
                 s->cfg->run.command == NULL ? "no run: section" : "strategy rolling");
        return -EINVAL;
    }
    if (s->live->ms == NULL) {
        snprintf(err, errlen,
                 "plan %s compares the new version with a fresh baseline of %s, which cutover "
                 "does not run (its targets were given, not started from run.command); deploy "
                 "with a plan without analysis.baseline",
                 cp->name, s->live->name);
        return -EINVAL;
    }
    char name[96];
    set_name(s, name, sizeof(name));
    if (managed_version_running(s, name)) {
        snprintf(err, errlen,
                 "the baseline of %s from an earlier change is still stopping on %s; retry "
                 "once it stopped",
                 s->live->name, s->cfg->name);
        return -EAGAIN;
    }
    char why[512];
    int rc = start_set(s, name, why, sizeof(why));
    if (rc < 0)
        snprintf(err, errlen, "baseline of %s (plan %s): %s", s->live->name, cp->name, why);
    return rc;
}

void baseline_end(struct service *s, int routed)
{
    struct version *b = s->baseline;
    if (b == NULL)
        return;
    s->baseline = NULL;
    /* Its connections are drained by the workers once the table without it is published;
     * its processes outlive that deadline a little, as a switched-away version's do. */
    managed_retire(b->ms, routed ? s->cfg->drain_timeout_ms + 500 : 0);
    version_free(b);
    log_info("baseline ended", "service", s->cfg->name);
}

int baseline_keeps(const struct service *s, const struct config_plan *cp, const char *name)
{
    if (!wanted(s, cp) || s->cfg->run.command == NULL)
        return 0;
    char want[96];
    set_name(s, want, sizeof(want));
    return strcmp(want, name) == 0;
}

void baseline_resume(struct service *s, const struct config_plan *cp)
{
    if (!wanted(s, cp) || s->baseline != NULL || s->cfg->run.command == NULL)
        return;
    char name[96];
    set_name(s, name, sizeof(name));
    struct store_instance *rec = NULL;
    size_t nrec = 0;
    if (store_instance_list(s->r->st, s->cfg->name, name, &rec, &nrec) < 0 || nrec == 0) {
        free(rec);
        /* None recorded: they stopped with the daemon (run.stop_with_daemon), as the new
         * version's did, which start again now: a fresh baseline keeps them the same age. */
        char err[512];
        if (s->live->ms != NULL && start_set(s, name, err, sizeof(err)) < 0)
            log_error("cannot start the baseline again; the plan compares with the live set",
                      "service", s->cfg->name, "error", err);
        return;
    }
    char **targets = xcalloc(nrec + 1, sizeof(*targets));
    for (size_t i = 0; i < nrec; i++)
        targets[i] = xasprintf("127.0.0.1:%d", rec[i].port);
    free(rec);
    struct managed_set *ms = managed_restore(s, name, targets, nrec, 1);
    if (ms != NULL) {
        /* Optimistic: they served a moment ago, under the daemon that stopped. */
        s->baseline = version_over(s, targets, nrec, 1);
        s->baseline->ms = ms;
        log_info("baseline adopted", "service", s->cfg->name, "version", s->live->name);
    }
    store_strv_free(targets);
}

void baseline_reap(struct service *s)
{
    if (s->live == NULL || s->baseline != NULL || s->cfg->run.command == NULL)
        return;
    char name[96];
    set_name(s, name, sizeof(name));
    /* Not kept by reap_leftovers (no change wanted it): that reaper stops it already, and a
     * second one would adopt and stop the same processes again. */
    if (managed_version_running(s, name))
        return;
    managed_reap(s, name);
}

void baseline_route_fill(const struct service *s, int weight, struct route_service *rs)
{
    const struct version *b = s->baseline;
    if (b == NULL || b->n == 0 || share_of(weight) == 0)
        return;
    route_backend_set(&rs->baseline, b->name, b->targets, b->n);
    rs->baseline_buckets = (unsigned)share_of(weight) * (ROUTE_BUCKETS / 100);
}

json_t *baseline_json(const struct service *s, int weight)
{
    if (s->baseline == NULL)
        return json_null();
    json_t *o = version_json(s->baseline);
    json_object_set_new(o, "share_percent", json_integer(share_of(weight)));
    return o;
}
