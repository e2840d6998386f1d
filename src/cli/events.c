/* `cutover events`: follows the daemon's server-sent event stream, reconnecting across a
 * hand-over and printing what it missed. CLI process. */
#include "cli/cli.h"
#include "cli/cli_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>

#include "config/config.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/text.h"
#include "core/xmalloc.h"

/* --- events: following the daemon's server-sent event stream ------------------------------ */

struct cli_sse {
    struct cli_http *h;
    FILE *out;
    int json;
    long status;         /* of the current stream's answer; 0 before it */
    struct cli_resp err; /* the body of an answer other than 200 */
    char *line;          /* the line being received */
    size_t len, cap;
    char *data;        /* the event's data field so far */
    int served;        /* the daemon answered at least once (200, or 503 handing over) */
    long long last_id; /* of the last event printed: sent back as Last-Event-ID */
};

static void cli_sse_dispatch(struct cli_sse *s)
{
    json_t *ev = s->data ? json_loads(s->data, 0, NULL) : NULL;
    free(s->data);
    s->data = NULL;
    if (!json_is_object(ev)) {
        json_decref(ev);
        return;
    }
    json_t *id = json_object_get(ev, "id");
    if (json_is_integer(id)) {
        if (json_integer_value(id) <= s->last_id) {
            json_decref(ev); /* already printed before a reconnection */
            return;
        }
        s->last_id = json_integer_value(id);
    }
    if (s->json) {
        char *text = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
        fprintf(s->out, "%s\n", text);
        free(text);
    } else {
        const char *ts = cli_jstr_or(ev, "ts", "");
        /* "2026-11-23T12:40:01.207Z" as history shows times: "2026-11-23 12:40:01" */
        fprintf(s->out, "%.10s %.8s  ", ts, strlen(ts) > 11 ? ts + 11 : "");
        cli_put_clean(s->out, cli_jstr_or(ev, "service", "-"), 0);
        fprintf(s->out, "  #%lld  ", (long long)json_integer_value(json_object_get(ev, "change")));
        cli_put_clean(s->out, cli_jstr_or(ev, "type", "-"), 0);
        fputs("  ", s->out);
        cli_put_clean(s->out, cli_jstr_or(ev, "message", ""), 0);
        fputc('\n', s->out);
    }
    fflush(s->out);
    json_decref(ev);
}

/* One line of text/event-stream (without its newline). */
static void cli_sse_line(struct cli_sse *s, const char *line)
{
    if (*line == '\0') {
        cli_sse_dispatch(s);
        return;
    }
    if (strncmp(line, "data: ", 6) == 0) {
        char *d = s->data ? xasprintf("%s\n%s", s->data, line + 6) : xstrdup(line + 6);
        free(s->data);
        s->data = d;
    } /* id: and event: are in the data too; comments (":") keep the stream alive */
}

static size_t cli_sse_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct cli_sse *s = ud;
    size_t n = size * nmemb;
    if (s->status == 0)
        curl_easy_getinfo(s->h->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200)
        return cli_on_body(ptr, size, nmemb, &s->err);
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n') {
            if (s->len > 0 && s->line[s->len - 1] == '\r')
                s->len--;
            s->line[s->len] = '\0';
            cli_sse_line(s, s->line);
            s->len = 0;
            continue;
        }
        if (s->len + 2 > s->cap) {
            if (s->cap >= CLI_MAX_BODY)
                return 0; /* a line this long is not our daemon */
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->line = xrealloc(s->line, s->cap);
        }
        s->line[s->len++] = ptr[i];
    }
    return n;
}

int cli_cmd_events(const struct cli_args *a, struct cli_http *h)
{
    char *svc = a->service ? cli_escape(h, a->service) : NULL;
    char *url = xasprintf("%s/api/v1/events%s%s", h->base, svc ? "?service=" : "", svc ? svc : "");
    struct cli_sse s = {.h = h, .out = stdout, .json = a->json};
    struct timespec lost = {0};
    int rc = CLI_EXIT_FAILED;

    for (;;) {
        char errbuf[CURL_ERROR_SIZE] = "", idhdr[48];
        struct curl_slist *hdrs =
            cli_curl_base(h, url, errbuf, "text/event-stream", cli_sse_write, &s);
        if (s.last_id > 0) {
            snprintf(idhdr, sizeof(idhdr), "Last-Event-ID: %lld", s.last_id);
            hdrs = curl_slist_append(hdrs, idhdr);
        }
        curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
        s.status = 0;
        s.len = 0;
        CURLcode cc = curl_easy_perform(h->curl);
        curl_slist_free_all(hdrs);
        if (s.status != 0 && s.status != 200) {
            /* 503 while the daemon hands over: its successor answers in a moment. */
            int handing = s.status == 503 && s.err.body && strstr(s.err.body, "handing over");
            if (!handing) {
                s.err.status = s.status;
                if (s.err.len > 0)
                    s.err.json = json_loadb(s.err.body, s.err.len, 0, NULL);
                rc = cli_api_error(h, &s.err);
                break;
            }
            cli_resp_done(&s.err);
            s.served = 1; /* the daemon is there: wait for its successor */
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        s.served |= s.status == 200;
        if (s.status == 200 || lost.tv_sec == 0)
            lost = now; /* the stream served, or this is the first try: count from now */
        if (!s.served || now.tv_sec - lost.tv_sec >= CLI_EVENTS_GIVE_UP_S) {
            cli_unreachable(h, cc, errbuf);
            break;
        }
        usleep(CLI_HANDOVER_WAIT_MS * 1000);
    }
    cli_resp_done(&s.err);
    free(s.line);
    free(s.data);
    free(url);
    free(svc);
    return rc;
}
