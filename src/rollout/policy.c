#include "rollout/policy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

size_t policy_first_traffic_step(const struct config_plan *plan)
{
    for (size_t i = 0; i < plan->nsteps; i++) {
        const struct config_step *st = &plan->steps[i];
        if (st->kind == CONFIG_STEP_PILOT || (st->kind == CONFIG_STEP_WEIGHT && st->weight > 0))
            return i;
    }
    return plan->nsteps;
}

int policy_check(const struct config_service *svc, const struct config_plan *plan, const char *risk,
                 const char *ticket, char *err, size_t n)
{
    const struct config_risk_policy *rp = &svc->risk_policy;
    if (risk == NULL) {
        if (!rp->require)
            return 0;
        snprintf(err, n,
                 "risk: %s's risk policy asks every deploy to state its risk (--risk "
                 "low|medium|high)",
                 svc->name);
        return -EINVAL;
    }
    int r = config_risk_parse(risk);
    if (r < 0)
        return 0; /* the caller refuses an unknown risk with its own message */
    const struct config_risk_rule *rule = &rp->rule[r];
    if (rule->ticket && (ticket == NULL || *ticket == '\0')) {
        snprintf(err, n,
                 "ticket: %s's risk policy asks a %s-risk deploy to name its change "
                 "request (--ticket ID)",
                 svc->name, risk);
        return -EINVAL;
    }
    if (!rule->approval_first)
        return 0;
    if (plan == NULL) {
        snprintf(err, n,
                 "plan: %s's risk policy asks a %s-risk deploy for an approval before any user "
                 "traffic moves, and an instant switch has none; use a plan with an approval "
                 "step first (--plan NAME)",
                 svc->name, risk);
        return -EINVAL;
    }
    size_t first = policy_first_traffic_step(plan);
    for (size_t i = 0; i < first; i++)
        if (plan->steps[i].kind == CONFIG_STEP_APPROVAL)
            return 0;
    snprintf(err, n,
             "plan: %s's risk policy asks a %s-risk deploy for an approval before any user "
             "traffic moves, and plan %s moves traffic at step %zu with no approval before it",
             svc->name, risk, plan->name, first + 1);
    return -EINVAL;
}

static void add_name(char *buf, size_t n, const char *name)
{
    size_t len = strlen(buf);
    snprintf(buf + len, n > len ? n - len : 0, "%s%s", len ? ", " : "", name);
}

size_t policy_people(const struct config *cfg, const char *service, unsigned duties, char *buf,
                     size_t n)
{
    size_t k = 0;
    if (n > 0)
        buf[0] = '\0';
    for (size_t i = 0; i < cfg->npeople; i++)
        if (config_person_duties(&cfg->people[i], service) & duties) {
            add_name(buf, n, cfg->people[i].name);
            k++;
        }
    return k;
}

size_t policy_approvers_awaited(const struct config_step *st, const char *requester, char *buf,
                                size_t n)
{
    size_t k = 0;
    if (n > 0)
        buf[0] = '\0';
    for (size_t i = 0; i < st->napprovers; i++) {
        if (!st->allow_self && requester != NULL && strcmp(st->approvers[i], requester) == 0)
            continue;
        add_name(buf, n, st->approvers[i]);
        k++;
    }
    return k;
}
