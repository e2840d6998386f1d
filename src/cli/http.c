/* The client side of the admin API: finding the daemon (--admin, or the config's socket),
 * one HTTP/JSON request with libcurl, errors turned into exit codes. CLI process. */
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
#include <pwd.h>
#include <curl/curl.h>
#include "net/addr.h"

#include "config/config.h"
#include "core/duration.h"
#include "core/release.h"
#include "core/text.h"
#include "core/xmalloc.h"

/* --- HTTP ------------------------------------------------------------------------------------ */

void cli_resp_done(struct cli_resp *r)
{
    free(r->body);
    free(r->ctype);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

size_t cli_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct cli_resp *r = ud;
    size_t n = size * nmemb;

    if (n > CLI_MAX_BODY - r->len) {
        r->too_big = 1;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->body = xrealloc(r->body, cap);
        r->cap = cap;
    }
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* An https:// admin URL (admin.tls) with a private CA: $CUTOVER_CACERT names the CA file. */
void cli_curl_ca(CURL *curl)
{
    const char *ca = getenv("CUTOVER_CACERT");
    if (ca != NULL && *ca != '\0')
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
}

/* Resets h's handle for a request to url (owned by the caller, like errbuf): the daemon
 * directly (no proxy), over its socket, with the token, Accept and extra headers; the answer
 * goes to write(ud). Returns the header list to set and free after the transfer. */
struct curl_slist *cli_curl_base(struct cli_http *h, const char *url, char *errbuf,
                                 const char *accept, curl_write_callback write, void *ud)
{
    struct curl_slist *hdrs = NULL;
    char *hdr;

    curl_easy_reset(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    /* An http_proxy in the environment must never see admin requests. */
    curl_easy_setopt(h->curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "cutover-cli/" CUTOVER_VERSION);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, CLI_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, ud);
    if (h->sock != NULL)
        curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, h->sock);
    cli_curl_ca(h->curl);
    hdr = xasprintf("Accept: %s", accept ? accept : "application/json");
    hdrs = curl_slist_append(hdrs, hdr);
    free(hdr);
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (h->token != NULL) {
        hdr = xasprintf("Authorization: Bearer %s", h->token);
        hdrs = curl_slist_append(hdrs, hdr);
        free(hdr);
    }
    return hdrs;
}

/* Prints why the daemon could not be reached (curl failed with cc). */
void cli_unreachable(const struct cli_http *h, CURLcode cc, const char *errbuf)
{
    long oserr = 0;
    curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
    fprintf(
        stderr, "cutover: cannot reach the daemon at %s: %s (is `cutover serve -c %s` running?)\n",
        h->where, oserr != 0 ? strerror((int)oserr) : (errbuf[0] ? errbuf : curl_easy_strerror(cc)),
        h->config);
}

/* Sends method path (with body when not NULL) and fills *r. Returns 0 when the daemon
 * answered (any status), else prints why it could not be reached and returns 1. */
int cli_request(struct cli_http *h, const char *method, const char *path, const json_t *body,
                const char *accept, struct cli_resp *r)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url = xasprintf("%s%s", h->base, path);
    char *payload = NULL;
    CURLcode cc;
    int rc = CLI_EXIT_FAILED;

    memset(r, 0, sizeof(*r));
    struct curl_slist *hdrs = cli_curl_base(h, url, errbuf, accept, cli_on_body, r);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    if (h->fresh) {
        /* libcurl sends a request again, unasked, when a reused connection dies before the
         * answer: never a hand-over request, which must reach one daemon once. */
        curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(h->curl, CURLOPT_FORBID_REUSE, 1L);
    }
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    } else {
        json_t *empty = json_object();
        payload = json_dumps(body ? body : empty, JSON_COMPACT);
        json_decref(empty);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);

    /* A daemon handing over to its successor answers 503 before doing anything: ask again
     * (the successor has 10 s to take over), so an upgrade never fails a command. */
    for (int tries = 0;; tries++) {
        long st = 0;
        cc = curl_easy_perform(h->curl);
        if (cc == CURLE_OK)
            curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &st);
        if (cc != CURLE_OK || st != 503 || h->once || tries >= CLI_HANDOVER_TRIES ||
            r->body == NULL || strstr(r->body, "handing over") == NULL)
            break;
        r->len = 0;
        r->body[0] = '\0';
        /* A new connection: the one answered 503 leads to the daemon that is leaving. */
        curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
        usleep(CLI_HANDOVER_WAIT_MS * 1000);
    }
    r->cc = (int)cc;
    if (cc != CURLE_OK && h->quiet)
        goto out;
    if (cc != CURLE_OK) {
        long oserr = 0;
        curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
        if (r->too_big) {
            fprintf(stderr, "cutover: the answer from %s exceeds %zu MiB; refusing it\n", h->where,
                    CLI_MAX_BODY >> 20);
        } else if (cc == CURLE_OPERATION_TIMEDOUT && r->len == 0 && oserr == 0 &&
                   h->timeout_ms > 0) {
            fprintf(stderr, "cutover: the daemon at %s did not answer within %ld s (%s)\n",
                    h->where, h->timeout_ms / 1000, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        } else {
            cli_unreachable(h, cc, errbuf);
        }
        goto out;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &r->status);
    {
        char *ct = NULL;
        curl_easy_getinfo(h->curl, CURLINFO_CONTENT_TYPE, &ct);
        r->ctype = ct ? xstrdup(ct) : NULL;
    }
    if (r->len > 0 && (r->ctype == NULL || strstr(r->ctype, "json") != NULL || r->body[0] == '{'))
        r->json = json_loadb(r->body, r->len, 0, NULL);
    rc = 0;
out:
    curl_slist_free_all(hdrs);
    free(payload);
    free(url);
    return rc;
}

/* Prints the daemon's {"error": ...} (or what it sent instead) and returns the exit code. */
int cli_api_error(const struct cli_http *h, const struct cli_resp *r)
{
    const char *msg = cli_jstr(r->json, "error");

    if (r->status >= 200 && r->status < 300) {
        /* Callers come here with a 2xx only when the body was not the JSON they need. */
        fprintf(stderr, "cutover: the answer from %s is not the JSON expected\n", h->where);
        return CLI_EXIT_FAILED;
    }
    if (msg != NULL) {
        fputs("cutover: ", stderr);
        cli_put_clean(stderr, msg, 0);
        fputc('\n', stderr);
    } else if (r->len > 0 && r->json == NULL) {
        /* Not our daemon, or a proxy in between: show the start of what it said, on one line. */
        fprintf(stderr, "cutover: the daemon answered HTTP %ld: ", r->status);
        for (size_t i = 0; i < r->len && i < 160; i++)
            fputc((unsigned char)r->body[i] < 0x20 || (unsigned char)r->body[i] >= 0x7f
                      ? ' '
                      : r->body[i],
                  stderr);
        fputc('\n', stderr);
    } else
        fprintf(stderr, "cutover: the daemon answered HTTP %ld\n", r->status);
    if (r->status == 401 && h->sock == NULL && h->token == NULL)
        fputs("cutover: set CUTOVER_TOKEN to an admin token of the daemon\n", stderr);
    return cli_exit_for_http(r->status);
}

int cli_unsupported(const char *what, const struct cli_resp *r)
{
    const char *msg = cli_jstr(r->json, "error");

    fprintf(stderr, "cutover: the daemon does not support %s yet (HTTP %ld%s", what, r->status,
            msg ? ": " : "");
    cli_put_clean(stderr, msg, 0);
    fputs(")\n", stderr);
    return CLI_EXIT_USAGE;
}

char *cli_escape(struct cli_http *h, const char *s)
{
    char *e = curl_easy_escape(h->curl, s, 0);
    char *copy = xstrdup(e);
    curl_free(e);
    return copy;
}

/* The actor recorded in deploy and rollback: $CUTOVER_USER, else the login name; NULL with a
 * token, which the daemon records as the token's name. */
char *cli_actor(const struct cli_http *h)
{
    const char *u = getenv("CUTOVER_USER");
    struct passwd *pw;

    if (h->token != NULL)
        return NULL;
    if (u != NULL && *u != '\0')
        return xstrdup(u);
    pw = getpwuid(getuid());
    if (pw != NULL && pw->pw_name != NULL && *pw->pw_name != '\0')
        return xstrdup(pw->pw_name);
    return xasprintf("uid-%u", (unsigned)getuid());
}

/* Finds the daemon (--admin, else config -> state_dir/cutover.sock) and sets up h. Returns 0
 * or an exit code after printing why. */
int cli_connect(const struct cli_args *a, struct cli_http *h)
{
    memset(h, 0, sizeof(*h));
    h->config = a->config;
    h->timeout_ms = a->wait ? 0 : CLI_REQUEST_TIMEOUT_MS;
    if (a->admin != NULL) {
        if (cli_admin_parse(a->admin, &h->base, &h->sock) != 0) {
            fprintf(stderr,
                    "cutover: --admin '%s': expected unix:/path/to.sock, http://HOST:PORT or "
                    "https://HOST:PORT\n",
                    a->admin);
            return CLI_EXIT_USAGE;
        }
        h->where = h->sock ? h->sock : h->base;
        if (h->sock == NULL) {
            const char *t = getenv("CUTOVER_TOKEN");
            h->token = t != NULL && *t != '\0' ? t : NULL;
        }
    } else {
        struct config *cfg = NULL;
        int rc = cli_load_config(a, 0, &cfg);
        if (rc != 0)
            return rc;
        h->sock = xasprintf("%s/cutover.sock", cfg->state_dir);
        h->base = xstrdup("http://localhost");
        h->where = h->sock;
        config_free(cfg);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (h->curl = curl_easy_init()) == NULL) {
        fputs("cutover: cannot initialise libcurl\n", stderr);
        return CLI_EXIT_FAILED;
    }
    return 0;
}

void cli_disconnect(struct cli_http *h)
{
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
        curl_global_cleanup();
    }
    free(h->base);
    free(h->sock);
    memset(h, 0, sizeof(*h));
}
