/* The engine as JSON and Prometheus lines (rollout.h): services, versions, changes with their
 * events, and the Event object the stream and webhooks send. Reads the engine and the store,
 * writes nothing. Control loop only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "rollout/load.h"
#include "rollout/managed.h"
#include "rollout/mode.h"
#include "rollout/plan.h"
#include "rollout/rolling.h"
#include "rollout/rollout_int.h"
#include "rollout/schedule.h"
#include "store/store.h"

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *rollout_event_json(const struct store_event *ev, const char *service)
{
    /* The hash lets a receiver keep an anchor of the change's chain outside this host. */
    return json_pack("{s:I, s:I, s:o, s:s, s:o, s:o, s:o}", "id", (json_int_t)ev->id, "change",
                     (json_int_t)ev->change_id, "service", str_or_null(service), "type", ev->type,
                     "message", str_or_null(ev->message), "ts", change_iso_time(ev->ts_ms), "hash",
                     str_or_null(ev->hash));
}

static json_t *change_to_json(struct rollout *r, const struct store_change *c, int with_events)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(c->id));
    json_object_set_new(o, "service", str_or_null(c->service));
    json_object_set_new(o, "kind", str_or_null(c->kind));
    json_object_set_new(o, "from", str_or_null(c->from_version));
    json_object_set_new(o, "to", str_or_null(c->to_version));
    json_object_set_new(o, "plan", str_or_null(c->plan));
    json_object_set_new(o, "state", str_or_null(c->state));
    json_object_set_new(o, "actor", str_or_null(c->actor));
    json_object_set_new(o, "reason", str_or_null(c->reason));
    json_object_set_new(o, "message", str_or_null(c->message));
    json_object_set_new(o, "created", change_iso_time(c->created_ms));
    json_object_set_new(o, "updated", change_iso_time(c->updated_ms));
    json_object_set_new(o, "ended", change_iso_time(c->ended_ms));
    json_object_set_new(o, "duration_ms",
                        c->ended_ms > 0 && c->created_ms > 0
                            ? json_integer(c->ended_ms - c->created_ms)
                            : json_null());
    json_t *loss = json_null();
    if (c->detail != NULL) {
        json_t *d = json_loads(c->detail, 0, NULL);
        if (d != NULL) {
            json_t *l = json_object_get(d, "loss");
            if (json_is_object(l))
                loss = json_incref(l);
            json_object_set_new(o, "detail", d);
        }
    }
    /* What the change cost users; null until its drain is over (or while it runs). */
    json_object_set_new(o, "loss", loss);
    /* Where its webhook deliveries stand (the outbox); all 0 without webhooks. */
    struct store_outbox_counts dc;
    if (store_outbox_counts(r->st, c->id, &dc) == 0) {
        json_object_set_new(o, "deliveries",
                            json_pack("{s:I, s:I, s:I, s:o}", "pending", (json_int_t)dc.pending,
                                      "delivered", (json_int_t)dc.delivered, "failed",
                                      (json_int_t)dc.failed, "last_error",
                                      str_or_null(dc.last_error)));
        free(dc.last_error);
    }
    if (with_events) {
        struct store_event *ev = NULL;
        size_t n = 0;
        json_t *a = json_array();
        if (store_event_list(r->st, c->id, &ev, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                json_array_append_new(
                    a, json_pack("{s:I, s:o, s:s, s:s, s:o}", "id", (json_int_t)ev[i].id, "ts",
                                 change_iso_time(ev[i].ts_ms), "type", ev[i].type ? ev[i].type : "",
                                 "message", ev[i].message ? ev[i].message : "", "hash",
                                 str_or_null(ev[i].hash)));
            store_event_list_free(ev, n);
        }
        json_object_set_new(o, "events", a);
    }
    return o;
}

/* A change whose end the store has not taken yet reads as the engine ended it (state, message,
 * end time), with `unsaved` saying that the record is still missing. */
static void change_overlay_unsaved(struct rollout *r, json_t *o, int64_t id)
{
    for (size_t i = 0; i < r->nservices; i++)
        change_unsaved_overlay(&r->services[i].ch, o, id);
}

json_t *rollout_change_json(struct rollout *r, int64_t id, int with_events)
{
    struct store_change c;
    if (store_change_get(r->st, id, &c) < 0)
        return NULL;
    json_t *o = change_to_json(r, &c, with_events);
    change_overlay_unsaved(r, o, id);
    store_change_done(&c);
    return o;
}

json_t *rollout_changes_json(struct rollout *r, const char *service, size_t limit)
{
    struct store_change *v = NULL;
    size_t n = 0;
    if (store_change_list(r->st, service, limit, &v, &n) < 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = change_to_json(r, &v[i], 0);
        change_overlay_unsaved(r, o, v[i].id);
        json_array_append_new(a, o);
    }
    store_change_list_free(v, n);
    return json_pack("{s:o}", "changes", a);
}

static json_t *service_to_json(struct rollout *r, struct service *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->cfg->name));
    json_object_set_new(o, "listen", json_string(s->cfg->listen));
    json_object_set_new(o, "protocol",
                        json_string(s->cfg->protocol == CONFIG_PROTO_TCP ? "tcp" : "http"));
    if (s->cfg->routed) {
        /* A listener it shares with others: what of its requests are its own. */
        json_t *hosts = json_array();
        for (size_t i = 0; i < s->cfg->nhosts; i++)
            json_array_append_new(hosts, json_string(s->cfg->hosts[i]));
        json_object_set_new(o, "routes",
                            json_pack("{s:o, s:s?, s:b}", "hosts", hosts, "path_prefix",
                                      s->cfg->path_prefix, "default", s->cfg->is_default));
    } else {
        json_object_set_new(o, "routes", json_null());
    }
    json_object_set_new(o, "live", version_json(s->live));
    json_object_set_new(o, "previous", version_json(s->previous));
    json_t *ch = json_null();
    if (s->ch.id != 0) {
        json_t *c = rollout_change_json(r, s->ch.id, 0);
        if (c != NULL) {
            json_object_set_new(c, "target_version", version_json(service_target(s)));
            if (s->run != NULL)
                json_object_set_new(c, "progress", plan_status_json(s));
            ch = c;
        }
    }
    json_object_set_new(o, "change", ch);
    json_object_set_new(o, "scheduled", schedule_json(s));
    json_object_set_new(o, "rolling", rolling_json(s));
    json_object_set_new(o, "unsaved", change_unsaved_json(&s->ch));
    /* Why users get errors when no version of the service can serve (issue 12 b). */
    json_object_set_new(o, "down", s->down ? json_string(s->down) : json_null());
    mode_json(s, o); /* "hold" and "maintenance" */
    /* Why no change is taken (the store is lost or corrupt), null while the store is fine. */
    const char *bad = store_guard_why(r->st);
    json_object_set_new(o, "store_problem", bad ? json_string(bad) : json_null());
    return o;
}

json_t *rollout_service_json(struct rollout *r, const char *name)
{
    struct service *s = rollout_find(r, name);
    return s ? service_to_json(r, s) : NULL;
}

json_t *rollout_services_json(struct rollout *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < r->nservices; i++)
        json_array_append_new(a, service_to_json(r, &r->services[i]));
    return json_pack("{s:o}", "services", a);
}

static void emit_version(rollout_emit_fn emit, void *ctx, const struct service *s,
                         const struct version *v, const char *role)
{
    char line[512];
    if (v == NULL)
        return;
    snprintf(line, sizeof(line),
             "cutover_version_info{service=\"%s\",version=\"%s\",role=\"%s\"} 1", s->cfg->name,
             v->name, role);
    emit(ctx, line);
    for (size_t i = 0; i < v->n; i++) {
        snprintf(line, sizeof(line),
                 "cutover_target_healthy{service=\"%s\",version=\"%s\",target=\"%s\"} %d",
                 s->cfg->name, v->name, v->targets[i]->address,
                 health_get_state(v->checks[i]) == HEALTH_HEALTHY);
        emit(ctx, line);
    }
}

/* cutover_change_KEY{service} from each running plan's status (0 without one). */
static void emit_plan_gauge(struct rollout *r, rollout_emit_fn emit, void *ctx, const char *key,
                            const char *help)
{
    char line[256];
    snprintf(line, sizeof(line), "# HELP cutover_change_%s %s", key, help);
    emit(ctx, line);
    snprintf(line, sizeof(line), "# TYPE cutover_change_%s gauge", key);
    emit(ctx, line);
    for (size_t i = 0; i < r->nservices; i++) {
        const struct service *s = &r->services[i];
        json_t *p = s->run ? plan_status_json(s) : NULL;
        snprintf(line, sizeof(line), "cutover_change_%s{service=\"%s\"} %d", key, s->cfg->name,
                 (int)json_integer_value(json_object_get(p, key)));
        emit(ctx, line);
        json_decref(p);
    }
}

void rollout_metrics(struct rollout *r, rollout_emit_fn emit, void *ctx)
{
    emit(ctx, "# HELP cutover_version_info Versions known per service and their role.");
    emit(ctx, "# TYPE cutover_version_info gauge");
    emit(ctx, "# HELP cutover_target_healthy 1 when the target passes its health checks.");
    emit(ctx, "# TYPE cutover_target_healthy gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        struct service *s = &r->services[i];
        emit_version(emit, ctx, s, s->live, "live");
        emit_version(emit, ctx, s, s->previous, "previous");
        emit_version(emit, ctx, s, s->next, "next");
        emit_version(emit, ctx, s, s->baseline, "baseline");
    }
    /* One group per metric: samples of a family must not be interleaved with another's. */
    for (int k = 0; k < 2; k++) {
        const char *name = k == 0 ? "cutover_service_held" : "cutover_service_maintenance";
        char line[256];
        snprintf(line, sizeof(line), "# HELP %s 1 while the service is %s.", name,
                 k == 0 ? "held (cutover hold)" : "in maintenance (cutover maintenance)");
        emit(ctx, line);
        snprintf(line, sizeof(line), "# TYPE %s gauge", name);
        emit(ctx, line);
        for (size_t i = 0; i < r->nservices; i++) {
            const struct service *s = &r->services[i];
            int on = k == 0 ? s->mode.hold_since_ms != 0 : s->mode.maintenance_since_ms != 0;
            snprintf(line, sizeof(line), "%s{service=\"%s\"} %d", name, s->cfg->name, on);
            emit(ctx, line);
        }
    }
    /* Synthetic requests of load steps, apart from users' (rollout/load.h). */
    size_t nid = 0;
    for (size_t i = 0; i < r->nservices; i++)
        if (r->services[i].id >= 0 && (size_t)r->services[i].id + 1 > nid)
            nid = (size_t)r->services[i].id + 1;
    const char **names = xcalloc(nid ? nid : 1, sizeof(*names));
    for (size_t i = 0; i < nid; i++)
        names[i] = "?";
    for (size_t i = 0; i < r->nservices; i++)
        if (r->services[i].id >= 0)
            names[r->services[i].id] = r->services[i].cfg->name;
    loadgen_metrics(names, nid, emit, ctx);
    free(names);
    /* Something to alert on: the engine acted on a change's end that only memory holds. */
    emit(ctx, "# HELP cutover_change_unsaved 1 while the end of a change is not saved to the "
              "store (retrying).");
    emit(ctx, "# TYPE cutover_change_unsaved gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        char line[256];
        snprintf(line, sizeof(line), "cutover_change_unsaved{service=\"%s\"} %d",
                 r->services[i].cfg->name, r->services[i].ch.unsaved != NULL);
        emit(ctx, line);
    }
    /* The change in progress: share, step and state, from the plan's status (zeros and
     * state "idle" when none runs; a change without a plan has step 0). */
    emit_plan_gauge(r, emit, ctx, "weight",
                    "The new version's share of requests (0..100), 0 when no change runs.");
    emit_plan_gauge(r, emit, ctx, "step",
                    "The plan step in progress (1-based), 0 when no plan runs.");
    emit(ctx, "# HELP cutover_change_state 1 for the state the service's change is in (idle when "
              "none runs).");
    emit(ctx, "# TYPE cutover_change_state gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        for (int st = 0; st < CHANGE_NSTATES; st++) {
            char line[256];
            snprintf(line, sizeof(line), "cutover_change_state{service=\"%s\",state=\"%s\"} %d",
                     r->services[i].cfg->name, change_state_name((enum change_state)st),
                     r->services[i].ch.state == (enum change_state)st);
            emit(ctx, line);
        }
    }
    /* The last verdict of each gate the running plan checks: 1 on the verdict it gave. */
    static const char *const gates[] = {"min_requests", "max_error_rate", "max_p99_latency_ratio",
                                        "max_p99_latency_ms"};
    static const char *const verdicts[] = {"pass", "fail", "inconclusive"};
    emit(ctx, "# HELP cutover_change_gate 1 for the last verdict of each gate of the running "
              "plan (absent before its first verdict).");
    emit(ctx, "# TYPE cutover_change_gate gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        for (size_t g = 0; g < sizeof(gates) / sizeof(gates[0]); g++) {
            int v = plan_gate_verdict(&r->services[i], gates[g]);
            for (int k = 0; v >= 0 && k < 3; k++) {
                char line[256];
                snprintf(line, sizeof(line),
                         "cutover_change_gate{service=\"%s\",gate=\"%s\",verdict=\"%s\"} %d",
                         r->services[i].cfg->name, gates[g], verdicts[k], v == k);
                emit(ctx, line);
            }
        }
    }
    int64_t pending = 0;
    if (store_outbox_pending_total(r->st, &pending) == 0) {
        char line[96];
        emit(ctx, "# HELP cutover_notify_pending Webhook deliveries waiting to be made.");
        emit(ctx, "# TYPE cutover_notify_pending gauge");
        snprintf(line, sizeof(line), "cutover_notify_pending %lld", (long long)pending);
        emit(ctx, line);
    }
    emit(ctx, "# HELP cutover_service_down 1 while no version of the service can serve (its live "
              "version failed and no previous one could take over).");
    emit(ctx, "# TYPE cutover_service_down gauge");
    for (size_t i = 0; i < r->nservices; i++) {
        char line[256];
        snprintf(line, sizeof(line), "cutover_service_down{service=\"%s\"} %d",
                 r->services[i].cfg->name, r->services[i].down != NULL);
        emit(ctx, line);
    }
}
