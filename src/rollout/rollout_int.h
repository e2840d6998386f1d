/* The engine's shared types (like proxy/proxy-t.h): a service with its versions and its change,
 * the engine, and the two small ops tables through which the plan and a traffic executor talk
 * without naming each other. Each module's functions are in its own header (change.h,
 * version.h, plan.h, rolling.h, managed.h, steptest.h). Control loop only; not part of the
 * engine's public contract (rollout.h). */
#ifndef CUTOVER_ROLLOUT_ROLLOUT_INT_H
#define CUTOVER_ROLLOUT_ROLLOUT_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proxy/route.h"
#include "rollout/analysis.h"
#include "rollout/change.h"
#include "rollout/rollout.h"
#include "rollout/version.h"

struct managed_set;
struct plan_run;
struct rolling;
struct service;

/* A traffic executor that applies the plan's goal by other means than the route table's
 * weights: rolling.c replaces instances in batches. NULL on a service: the route table is the
 * executor (weights and the pilot cohort, filled by the plan). */
struct exec_ops {
    void (*goal)(struct service *s, int weight); /* a weight step: reach weight % */
    int (*done)(const struct service *s);        /* every old instance is replaced */
    void (*gate_passed)(struct service *s);      /* a window over the split passed */
    void (*fail)(struct service *s, const char *state, const char *why); /* undo and end */
    void (*evaluate)(struct service *s); /* re-evaluate (a resume) */
    void (*stop)(struct service *s);     /* drop the executor's state */
};

/* What an executor asks of, and reports to, the plan that decides the change. */
struct plan_ops {
    int (*allows_batch)(const struct service *s); /* running: not paused or held */
    int (*has_traffic)(const struct service *s);  /* the plan started */
    int (*weight)(const struct service *s);
    void (*goal_reached)(struct service *s);
    int (*gate_begin)(struct service *s); /* 1: a window over the new split is being judged */
    void (*mark_rolling)(struct service *s);
    void (*gate_inconclusive)(struct service *s, const char *why);
    void (*health_passed)(struct service *s);
    void (*discard)(struct service *s);
    void (*route_fill)(const struct service *s, struct route_service *rs);
    /* keeps the executor's progress (borrowed JSON) with the plan's, for a resume */
    void (*save_executor)(struct service *s, json_t *state);
};

/* A deploy that waits for its time (rollout/schedule.h). */
struct schedule_entry {
    int64_t id;    /* its change record, in state scheduled */
    int64_t at_ms; /* when it starts (Unix ms) */
    json_t *req;   /* the deploy's request, as its record's detail keeps it ("scheduled") */
    char *waiting; /* why its start is being retried (processes still stopping), or NULL */
};

struct service {
    struct rollout *r;
    int id;
    const struct config_service *cfg;
    struct version *live;
    struct version *previous;
    struct version *next;           /* being deployed (owned here until it goes live or fails) */
    struct version *baseline;       /* fresh instances of live beside next (rollout/baseline.h) */
    struct change ch;               /* the change in progress (or an unsaved end) */
    struct plan_run *run;           /* set while a plan change runs */
    struct rolling *roll;           /* set while a rolling replacement runs or is being undone */
    const struct exec_ops *exec;    /* set with roll */
    const struct plan_ops *planner; /* always set */
    char *down;                     /* why no version of the service can serve, or NULL */
    char *failed; /* the version cutover rolled back from on its own (never back to it) */
    /* what the change in progress cost users: the data plane's counters when it began */
    int64_t loss_change;
    struct analysis_sample loss_base[ROUTE_ROLES];
    int64_t drain_pending;        /* the ended change whose loss waits for its drain */
    struct schedule_entry *sched; /* a deploy waiting for its time, or NULL */
    struct store_hold mode;       /* hold and maintenance (rollout/mode.c), as recorded */
};

struct rollout {
    uv_loop_t *loop;
    const struct config *cfg;
    struct store *st;
    rollout_publish_cb on_publish;
    rollout_sample_fn sample;
    void *ctx;
    struct supervisor *sv;    /* created on first use */
    struct managed_set *sets; /* every managed version's processes */
    struct service *services;
    size_t nservices;
    int open_handles;
    health_change_cb on_health; /* a target's health changed (versions report, rollout.c) */
    /* a managed version's instance crashes in a loop (managed.c reports, rollout.c decides) */
    void (*on_crash)(struct service *s, const char *version, const char *why);
    /* after a switch away from v in change id: the drain's figures, then the change's loss */
    void (*watch_drain)(struct service *s, const struct version *v, int64_t id);
    /* The one commit of a switch, whatever made it (an instant switch, a plan's end, the last
     * batch of a replacement): to becomes live (see commit_switch in rollout.c). */
    void (*commit)(struct service *s, struct version *to, const char *event, const char *msg,
                   const char *detail);
    /* A scheduled deploy's time came (schedule.c asks, rollout.c deploys). */
    int (*start_scheduled)(struct service *s, const struct rollout_deploy_req *req, char *err,
                           size_t errlen);
    uv_timer_t sched_timer; /* the next scheduled deploy's time (at most a minute ahead) */
    char config_sha256[65]; /* of the config file as it was read, for the change record */
    int64_t started_ms;     /* when this engine started: the plan preview's request rate */
    int stopping;           /* rollout_stop runs: versions are being freed, nothing publishes */
};

/* The service named name, or NULL. */
struct service *rollout_find(struct rollout *r, const char *name);

/* The version a change moves to (its new version, or the previous one for a rollback). */
static inline struct version *service_target(const struct service *s)
{
    return s->ch.kind == CHANGE_DEPLOY || s->roll != NULL ? s->next : s->previous;
}

#endif
