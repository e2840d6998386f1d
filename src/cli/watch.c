/* `cutover watch [SERVICE] [--until-done]`: a live view of the services and their changes,
 * refreshed once a second from the admin API's status (GET /api/v1/services) and /metrics.
 * Request rate, error rate and p99 per version come from the difference of two successive
 * /metrics samples. On a terminal the screen is redrawn; otherwise one plain line per service
 * per refresh. Single-threaded (the CLI process). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "config/config.h"
#include "core/xmalloc.h"

#define WATCH_MAX_VERSIONS 32
#define WATCH_LE 15      /* the bounds of cutover_http_request_duration_seconds, +Inf last */
#define WATCH_HISTORY 20 /* rate samples kept per version for the sparkline */
#define WATCH_UNREACHABLE_S 30

struct watch_ver {
    char service[128];
    char version[72];
    double req, err; /* cumulative: all answers, 5xx answers */
    double le[WATCH_LE];
    double cum[WATCH_LE];
    int nle;
    int seen; /* in the latest sample */
    /* from the last two samples */
    double rate, err_rate, p99;
    double hist[WATCH_HISTORY];
    int nhist;
};

struct watch {
    struct watch_ver v[WATCH_MAX_VERSIONS];
    int nv;
    double t_prev; /* monotonic seconds of the previous metrics sample, 0: none */
};

static double watch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copies the value of label name from a {a="x",b="y"} list into out (escapes kept as they are:
 * names here are plain). Returns 1 when found. */
static int watch_label(const char *labels, const char *name, char *out, size_t n)
{
    size_t ln = strlen(name);
    for (const char *p = labels; (p = strstr(p, name)) != NULL; p++) {
        if ((p == labels || p[-1] == '{' || p[-1] == ',') && strncmp(p + ln, "=\"", 2) == 0) {
            const char *v = p + ln + 2, *e = strchr(v, '"');
            if (e == NULL)
                return 0;
            size_t k = (size_t)(e - v) < n - 1 ? (size_t)(e - v) : n - 1;
            memcpy(out, v, k);
            out[k] = '\0';
            return 1;
        }
    }
    return 0;
}

static struct watch_ver *watch_find(struct watch *w, const char *svc, const char *ver)
{
    for (int i = 0; i < w->nv; i++)
        if (strcmp(w->v[i].service, svc) == 0 && strcmp(w->v[i].version, ver) == 0)
            return &w->v[i];
    if (w->nv >= WATCH_MAX_VERSIONS)
        return NULL;
    struct watch_ver *v = &w->v[w->nv++];
    memset(v, 0, sizeof(*v));
    snprintf(v->service, sizeof(v->service), "%s", svc);
    snprintf(v->version, sizeof(v->version), "%s", ver);
    return v;
}

/* The q-quantile of a cumulative histogram (le bounds, counts), interpolated within its bucket
 * like Prometheus' histogram_quantile; 0 when empty. */
static double watch_quantile(const double *le, const double *cum, int n, double q)
{
    if (n == 0 || cum[n - 1] <= 0)
        return 0;
    double rank = q * cum[n - 1];
    for (int i = 0; i < n; i++) {
        if (cum[i] >= rank) {
            if (i == n - 1) /* +Inf: the highest finite bound is what can be said */
                return n >= 2 ? le[n - 2] : 0;
            double lo = i > 0 ? le[i - 1] : 0, below = i > 0 ? cum[i - 1] : 0;
            double in = cum[i] - below;
            return in > 0 ? lo + (le[i] - lo) * (rank - below) / in : le[i];
        }
    }
    return 0;
}

/* Reads one /metrics sample and updates each version's rates from the previous one. */
static void watch_metrics(struct watch *w, const char *text, double now)
{
    struct watch_ver old[WATCH_MAX_VERSIONS];
    int nold = w->nv;
    memcpy(old, w->v, sizeof(old[0]) * (size_t)nold);
    for (int i = 0; i < w->nv; i++) {
        w->v[i].req = w->v[i].err = 0;
        w->v[i].nle = 0;
        w->v[i].seen = 0;
    }
    for (const char *line = text; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        const char *req = "cutover_http_requests_total{";
        const char *bkt = "cutover_http_request_duration_seconds_bucket{";
        int is_req = strncmp(line, req, strlen(req)) == 0;
        int is_bkt = !is_req && strncmp(line, bkt, strlen(bkt)) == 0;
        if (!is_req && !is_bkt)
            continue;
        const char *lb = strchr(line, '{'), *end = strchr(line, '}');
        if (lb == NULL || end == NULL)
            continue;
        char labels[512], svc[128], ver[72], code[8], le[32];
        size_t k = (size_t)(end - lb + 1) < sizeof(labels) - 1 ? (size_t)(end - lb + 1)
                                                               : sizeof(labels) - 1;
        memcpy(labels, lb, k);
        labels[k] = '\0';
        if (!watch_label(labels, "service", svc, sizeof(svc)) ||
            !watch_label(labels, "version", ver, sizeof(ver)))
            continue;
        double val = strtod(end + 1, NULL);
        struct watch_ver *v = watch_find(w, svc, ver);
        if (v == NULL)
            continue;
        v->seen = 1;
        if (is_req && watch_label(labels, "code", code, sizeof(code))) {
            v->req += val;
            if (code[0] == '5')
                v->err += val;
        } else if (is_bkt && watch_label(labels, "le", le, sizeof(le)) && v->nle < WATCH_LE) {
            v->le[v->nle] = strcmp(le, "+Inf") == 0 ? 1e300 : strtod(le, NULL);
            v->cum[v->nle++] = val;
        }
    }
    double dt = w->t_prev > 0 ? now - w->t_prev : 0;
    for (int i = 0; i < w->nv; i++) {
        struct watch_ver *v = &w->v[i];
        const struct watch_ver *o = NULL;
        for (int j = 0; j < nold; j++)
            if (strcmp(old[j].service, v->service) == 0 && strcmp(old[j].version, v->version) == 0)
                o = &old[j];
        if (o == NULL || dt <= 0 || o->req > v->req) {
            v->rate = v->err_rate = v->p99 = 0;
            continue;
        }
        double dreq = v->req - o->req, derr = v->err - o->err;
        v->rate = dreq / dt;
        v->err_rate = dreq > 0 ? derr / dreq : 0;
        double dcum[WATCH_LE];
        for (int b = 0; b < v->nle; b++)
            dcum[b] = b < o->nle ? v->cum[b] - o->cum[b] : v->cum[b];
        v->p99 = watch_quantile(v->le, dcum, v->nle, 0.99);
        if (v->nhist == WATCH_HISTORY) {
            memmove(v->hist, v->hist + 1, sizeof(v->hist[0]) * (WATCH_HISTORY - 1));
            v->nhist--;
        }
        v->hist[v->nhist++] = v->rate;
    }
    w->t_prev = now;
}

/* Writes s with control characters (and anything that could move the cursor) replaced. */
static void watch_put(FILE *out, const char *s)
{
    for (; s != NULL && *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static const char *watch_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* "[######----]" for done of total steps. */
static void watch_bar(FILE *out, int step, int steps, int weight)
{
    const int width = 20;
    /* Steps before this one are done; this one counts by the share it has reached. */
    int fill = steps > 0 ? ((step - 1) * 100 + weight) * width / (steps * 100) : 0;
    if (fill > width)
        fill = width;
    fputc('[', out);
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '-', out);
    fputc(']', out);
}

static void watch_spark(FILE *out, const struct watch_ver *v)
{
    static const char *const bars[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                       "\u2585", "\u2586", "\u2587", "\u2588"};
    double max = 0;
    for (int i = 0; i < v->nhist; i++)
        max = v->hist[i] > max ? v->hist[i] : max;
    fputc(' ', out);
    for (int i = 0; i < v->nhist; i++)
        fputs(bars[max > 0 ? (int)(v->hist[i] / max * 7.0 + 0.5) : 0], out);
}

/* At an approval step: the approvers of the config's plan who have not approved yet. The
 * daemon's status names how many approvals a step needs, the config names who may give them
 * (cfg NULL: the config could not be read, e.g. with --admin only). */
static void watch_awaited(FILE *out, const struct config *cfg, const json_t *p)
{
    const char *plan = watch_str(p, "plan");
    long step = (long)json_integer_value(json_object_get(p, "step"));
    const json_t *ap = json_object_get(p, "approvals");
    for (size_t i = 0; cfg != NULL && plan != NULL && i < cfg->nplans; i++) {
        const struct config_plan *pl = &cfg->plans[i];
        if (strcmp(pl->name, plan) != 0 || step < 1 || (size_t)step > pl->nsteps)
            continue;
        const struct config_step *st = &pl->steps[step - 1];
        if (st->kind != CONFIG_STEP_APPROVAL)
            return;
        fprintf(out, " (%zu more of:",
                (size_t)st->count > json_array_size(ap) ? (size_t)st->count - json_array_size(ap)
                                                        : (size_t)0);
        for (size_t k = 0; k < st->napprovers; k++) {
            int done = 0;
            size_t j;
            json_t *x;
            json_array_foreach(ap, j, x)
            {
                if (json_string_value(x) && strcmp(json_string_value(x), st->approvers[k]) == 0)
                    done = 1;
            }
            if (!done) {
                fputc(' ', out);
                watch_put(out, st->approvers[k]);
            }
        }
        fputc(')', out);
    }
}

/* One service: its versions' traffic and its change. tty: several lines; else one line. */
static void watch_service(FILE *out, const struct watch *w, const struct config *cfg,
                          const json_t *s, int tty)
{
    const char *name = watch_str(s, "name");
    const json_t *live = json_object_get(s, "live");
    const json_t *ch = json_object_get(s, "change");
    const json_t *p = json_object_get(ch, "progress");
    char sep = tty ? '\n' : ' ';
    const char *ind = tty ? "  " : "";

    watch_put(out, name);
    fputs(tty ? "\n" : " ", out);
    fprintf(out, "%slive ", ind);
    watch_put(out, watch_str(live, "name") ? watch_str(live, "name") : "none");
    if (!json_is_object(ch)) {
        fputs(", no change", out);
    } else {
        fprintf(out, ",%c%schange %lld ", sep, ind,
                (long long)json_integer_value(json_object_get(ch, "id")));
        watch_put(out, watch_str(ch, "from") ? watch_str(ch, "from") : "none");
        fputs(" -> ", out);
        watch_put(out, watch_str(ch, "to"));
        fputc(' ', out);
        watch_put(out, json_is_object(p) ? watch_str(p, "state") : watch_str(ch, "state"));
        if (json_is_object(p)) {
            int step = (int)json_integer_value(json_object_get(p, "step"));
            int steps = (int)json_integer_value(json_object_get(p, "steps"));
            int weight = (int)json_integer_value(json_object_get(p, "weight"));
            fprintf(out, "%c%s", sep, ind);
            if (tty) {
                watch_bar(out, step, steps, weight);
                fputc(' ', out);
            }
            fprintf(out, "step %d/%d (", step, steps);
            watch_put(out, watch_str(p, "step_description"));
            fprintf(out, ") weight %d%%", weight);
            const json_t *bl = json_object_get(p, "baseline");
            if (json_is_object(bl)) {
                fprintf(out, ", baseline %d%% (",
                        (int)json_integer_value(json_object_get(bl, "share_percent")));
                watch_put(out, watch_str(bl, "name"));
                fputc(')', out);
            }
            const json_t *left = json_object_get(p, "step_remaining_ms");
            if (json_is_integer(left))
                fprintf(out, " left %llds", ((long long)json_integer_value(left) + 999) / 1000);
            const json_t *la = json_object_get(p, "last_analysis");
            if (json_is_object(la)) {
                fprintf(out, "%c%sverdict ", sep, ind);
                watch_put(out, watch_str(la, "result"));
                fputs(": ", out);
                watch_put(out, watch_str(la, "detail"));
            }
            const char *desc = watch_str(p, "step_description");
            if (desc != NULL && strncmp(desc, "approval", 8) == 0) {
                fprintf(out, "%c%sawaiting ", sep, ind);
                watch_put(out, desc);
                watch_awaited(out, cfg, p);
                const json_t *ap = json_object_get(p, "approvals");
                size_t i;
                json_t *x;
                if (json_array_size(ap) > 0)
                    fputs("; approved by", out);
                json_array_foreach(ap, i, x)
                {
                    fputc(' ', out);
                    watch_put(out, json_string_value(x));
                }
            }
            if (watch_str(p, "hold_reason") != NULL) {
                fprintf(out, "%c%sholding: ", sep, ind);
                watch_put(out, watch_str(p, "hold_reason"));
            }
        }
    }
    for (int i = 0; i < w->nv; i++) {
        const struct watch_ver *v = &w->v[i];
        if (!v->seen || name == NULL || strcmp(v->service, name) != 0)
            continue;
        fprintf(out, "%c%s", tty ? '\n' : ' ', tty ? "  " : "| ");
        watch_put(out, v->version);
        fprintf(out, ": %.1f req/s, %.2f%% errors, p99 %.1f ms", v->rate, v->err_rate * 100,
                v->p99 * 1000);
        if (tty)
            watch_spark(out, v);
    }
    fputc('\n', out);
}

static int watch_final(const char *state)
{
    static const char *const ended[] = {"completed", "failed", "rolled_back", "aborted",
                                        "interrupted"};
    for (size_t i = 0; state != NULL && i < sizeof(ended) / sizeof(ended[0]); i++)
        if (strcmp(state, ended[i]) == 0)
            return 1;
    return 0;
}

/* The services of an answer: the list, or the one service asked for. */
static json_t *watch_services(json_t *j)
{
    json_t *a = json_object_get(j, "services");
    if (json_is_array(a))
        return json_incref(a);
    a = json_array();
    if (json_is_object(j))
        json_array_append(a, j);
    return a;
}

int cli_watch(const struct cli_args *a, cli_get_fn get, void *ctx)
{
    struct watch *w = xcalloc(1, sizeof(*w));
    int tty = isatty(STDOUT_FILENO);
    int64_t tracked[WATCH_MAX_VERSIONS] = {0};
    int ntracked = 0, first = 1, rc = CLI_EXIT_OK;
    double unreachable_since = 0;
    char *path;
    struct config *cfg = NULL;
    char cerr[256];

    /* Who may approve is in the config; without it (--admin only) the view says how many. */
    if (config_load(a->config, &cfg, cerr, sizeof(cerr)) != 0)
        cfg = NULL;

    if (a->service != NULL) {
        /* Service names are plain (config: A-Za-z0-9._-), but never trust a path blindly. */
        for (const char *c = a->service; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-')) {
                fprintf(stderr, "cutover: watch: no service named '%s'\n", a->service);
                free(w);
                config_free(cfg);
                return CLI_EXIT_USAGE;
            }
        path = xasprintf("/api/v1/services/%s", a->service);
    } else {
        path = xstrdup("/api/v1/services");
    }
    for (;;) {
        double t0 = watch_now();
        long st = 0;
        char *body = NULL;
        if (get(ctx, path, &st, &body) != 0) {
            free(body);
            if (unreachable_since == 0)
                unreachable_since = t0;
            if (t0 - unreachable_since > WATCH_UNREACHABLE_S) {
                fprintf(stderr, "cutover: watch: the daemon did not answer for %d s\n",
                        WATCH_UNREACHABLE_S);
                rc = CLI_EXIT_FAILED;
                break;
            }
            if (!tty)
                printf("daemon unreachable, retrying\n");
            fflush(stdout);
            sleep(1);
            continue;
        }
        unreachable_since = 0;
        json_t *j = body ? json_loads(body, 0, NULL) : NULL;
        free(body);
        if (st < 200 || st >= 300 || j == NULL) {
            const char *e = watch_str(j, "error");
            fprintf(stderr, "cutover: watch: ");
            watch_put(stderr, e ? e : "unexpected answer");
            fputc('\n', stderr);
            json_decref(j);
            rc = cli_exit_for_http(st);
            break;
        }
        json_t *svcs = watch_services(j);
        json_decref(j);
        char *mtext = NULL;
        long mst = 0;
        if (get(ctx, "/metrics", &mst, &mtext) == 0 && mst == 200 && mtext != NULL)
            watch_metrics(w, mtext, watch_now());
        free(mtext);

        if (tty)
            fputs("\033[H\033[J", stdout);
        {
            time_t now = time(NULL);
            struct tm tm;
            char ts[16];
            gmtime_r(&now, &tm);
            strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
            size_t i;
            json_t *s;
            if (tty)
                printf("cutover watch  %s UTC  (Ctrl-C to quit)\n\n", ts);
            json_array_foreach(svcs, i, s)
            {
                if (!tty)
                    printf("%s ", ts);
                watch_service(stdout, w, cfg, s, tty);
                if (tty)
                    fputc('\n', stdout);
            }
        }
        fflush(stdout);

        if (a->until_done) {
            size_t i;
            json_t *s;
            int running = 0;
            json_array_foreach(svcs, i, s)
            {
                const json_t *ch = json_object_get(s, "change");
                const char *state = watch_str(ch, "state");
                int64_t id = (int64_t)json_integer_value(json_object_get(ch, "id"));
                if (json_is_object(ch) && !watch_final(state)) {
                    running = 1;
                    int have = 0;
                    for (int k = 0; k < ntracked; k++)
                        have |= tracked[k] == id;
                    if (!have && ntracked < WATCH_MAX_VERSIONS)
                        tracked[ntracked++] = id;
                }
            }
            /* A tracked change not running any more has ended: its record says how. */
            for (int k = 0; k < ntracked; k++) {
                int still = 0;
                json_array_foreach(svcs, i, s)
                {
                    const json_t *ch = json_object_get(s, "change");
                    if (json_is_object(ch) && !watch_final(watch_str(ch, "state")) &&
                        json_integer_value(json_object_get(ch, "id")) == tracked[k])
                        still = 1;
                }
                if (still)
                    continue;
                char *cp = xasprintf("/api/v1/changes/%lld", (long long)tracked[k]);
                char *cb = NULL;
                long cst = 0;
                const char *state = NULL;
                json_t *c = NULL;
                if (get(ctx, cp, &cst, &cb) == 0 && cst == 200 && cb != NULL)
                    c = json_loads(cb, 0, NULL);
                state = watch_str(c, "state");
                printf("change %lld ended: ", (long long)tracked[k]);
                watch_put(stdout, state ? state : "unknown");
                fputc('\n', stdout);
                int code = state ? cli_exit_for_state(state) : CLI_EXIT_FAILED;
                if (code > rc)
                    rc = code;
                json_decref(c);
                free(cb);
                free(cp);
                tracked[k] = tracked[--ntracked];
                k--;
            }
            if (first && !running) {
                printf("no change in progress\n");
                json_decref(svcs);
                break;
            }
            if (ntracked == 0 && !running) {
                json_decref(svcs);
                break;
            }
        }
        json_decref(svcs);
        first = 0;
        fflush(stdout);
        double spent = watch_now() - t0;
        if (spent < 1.0)
            usleep((useconds_t)((1.0 - spent) * 1e6));
    }
    fflush(stdout);
    free(path);
    free(w);
    config_free(cfg);
    return rc;
}
