/* Webhook delivery (see notify.h). The queue is shared by the control thread (producer) and
 * the delivery thread (consumer) under one mutex; everything else belongs to one of them. */
#include "notify/notify.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "rollout/rollout.h"

#define NOTIFY_QUEUE_MAX 10000
#define NOTIFY_TRIES 6 /* the first, then after 0.5, 1, 2, 4, 8 s */
#define NOTIFY_TIMEOUT_MS 5000L
#define NOTIFY_CONNECT_TIMEOUT_MS 2000L

struct delivery {
    size_t hook; /* index in n->hooks */
    char *body;  /* the Event object as JSON */
    char *type;
    struct delivery *next;
};

struct hook {
    char *url;
    char **services; /* NULL: all */
    size_t nservices;
};

struct notify {
    struct hook *hooks;
    size_t nhooks;
    CURLM *multi; /* made on the control thread, used by the delivery thread only */
    CURL *curl;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct delivery *head, *tail;
    size_t queued;
    int started; /* the thread runs */
    int stopping;
    struct timespec give_up_at; /* once stopping: deliveries after this are dropped */
};

static void delivery_free(struct delivery *d)
{
    free(d->body);
    free(d->type);
    free(d);
}

static struct timespec deadline_in(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static int past(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* Aborts a POST in flight once the daemon stops and its grace time is over, so a receiver
 * that hangs cannot hold up the stop by the whole request timeout. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct notify *n = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    pthread_mutex_lock(&n->mu);
    int abort_now = n->stopping && past(&n->give_up_at);
    pthread_mutex_unlock(&n->mu);
    return abort_now;
}

/* One POST; returns 0 on a 2xx answer, else -1 with why in err. */
/* libcurl 7.x opens its sockets without SOCK_CLOEXEC: open them here, close-on-exec from the
 * first instant, so that a process the control thread spawns meanwhile (a managed instance, a
 * test step, the next daemon) never inherits a webhook connection. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ud;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd == -1 ? CURL_SOCKET_BAD : fd;
}

/* Marks every descriptor above stderr close-on-exec. A library may open descriptors without
 * O_CLOEXEC (libcurl 7.x: the socket pair that wakes a multi handle); they are all ours, so
 * none should reach a child. Control thread, before anything of the delivery thread runs. */
static void cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd <= STDERR_FILENO || fd == dirfd(d))
            continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl != -1 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    closedir(d);
}

/* Runs curl's transfer on n's own multi handle (whose descriptors notify_start made
 * close-on-exec; curl_easy_perform would make a fresh one on this thread). */
static CURLcode perform(struct notify *n, CURL *curl)
{
    CURLcode cc = CURLE_OK;
    int running = 1;
    CURLMcode mc = curl_multi_add_handle(n->multi, curl);
    while (mc == CURLM_OK && running) {
        mc = curl_multi_perform(n->multi, &running);
        if (mc == CURLM_OK && running)
            mc = curl_multi_poll(n->multi, NULL, 0, 1000, NULL);
    }
    if (mc != CURLM_OK)
        cc = CURLE_FAILED_INIT;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(n->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == curl)
            cc = m->data.result;
    curl_multi_remove_handle(n->multi, curl);
    return cc;
}

static int post(struct notify *n, CURL *curl, const char *url, const struct delivery *d, char *err,
                size_t errlen)
{
    char cerr[CURL_ERROR_SIZE] = "", hdr[96];
    struct curl_slist *h = NULL;
    long status = 0;

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, NOTIFY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "cutover-webhook/1");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, n);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    snprintf(hdr, sizeof(hdr), "X-Cutover-Event: %.64s", d->type);
    h = curl_slist_append(h, hdr);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    CURLcode cc = perform(n, curl);
    curl_slist_free_all(h);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
        return -1;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(err, errlen, "answered HTTP %ld", status);
        return -1;
    }
    return 0;
}

static void *run(void *arg)
{
    struct notify *n = arg;
    CURL *curl = n->curl;

    pthread_mutex_lock(&n->mu);
    for (;;) {
        while (n->head == NULL && !n->stopping)
            pthread_cond_wait(&n->cond, &n->mu);
        if (n->head == NULL)
            break; /* stopping, and nothing left */
        struct delivery *d = n->head;
        n->head = d->next;
        if (n->head == NULL)
            n->tail = NULL;
        n->queued--;
        const char *url = n->hooks[d->hook].url;
        char err[CURL_ERROR_SIZE + 32] = "";
        int ok = 0;
        for (unsigned try = 0; try < NOTIFY_TRIES && !ok; try++) {
            if (try > 0) {
                /* Wait before trying again, unless told to stop (then one last try). */
                struct timespec t = deadline_in(250u << try);
                while (!n->stopping && pthread_cond_timedwait(&n->cond, &n->mu, &t) != ETIMEDOUT)
                    ;
            }
            if (n->stopping && (try > 0 || past(&n->give_up_at)))
                break;
            pthread_mutex_unlock(&n->mu);
            ok = curl != NULL && post(n, curl, url, d, err, sizeof(err)) == 0;
            pthread_mutex_lock(&n->mu);
        }
        if (!ok)
            log_warn("webhook delivery given up", "url", url, "event", d->type, "error",
                     curl == NULL ? "cannot create a curl handle"
                     : err[0]     ? err
                                  : "stopping");
        delivery_free(d);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int notify_start(struct notify **out, const struct config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->nwebhooks == 0)
        return 0;
    struct notify *n = xcalloc(1, sizeof(*n));
    n->hooks = xcalloc(cfg->nwebhooks, sizeof(*n->hooks));
    n->nhooks = cfg->nwebhooks;
    for (size_t i = 0; i < cfg->nwebhooks; i++) {
        const struct config_webhook *w = &cfg->webhooks[i];
        n->hooks[i].url = xstrdup(w->url);
        n->hooks[i].nservices = w->nservices;
        if (w->services != NULL) {
            n->hooks[i].services = xcalloc(w->nservices + 1, sizeof(char *));
            for (size_t j = 0; j < w->nservices; j++)
                n->hooks[i].services[j] = xstrdup(w->services[j]);
        }
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cond, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* here, on one thread: it is not thread-safe */
    n->multi = curl_multi_init();
    n->curl = curl_easy_init();
    cloexec_all(); /* before the delivery thread exists: nothing can spawn in between */
    if (n->multi == NULL || n->curl == NULL) {
        snprintf(err, errlen, "cannot create a curl handle");
        notify_stop(n, 0);
        return -ENOMEM;
    }
    int rc = pthread_create(&n->thread, NULL, run, n);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the webhook thread: %s", strerror(rc));
        notify_stop(n, 0); /* frees; no thread to join */
        return -rc;
    }
    n->started = 1;
    *out = n;
    return 0;
}

static int wants(const struct hook *h, const char *service)
{
    if (h->services == NULL)
        return 1;
    for (size_t i = 0; service != NULL && i < h->nservices; i++)
        if (strcmp(h->services[i], service) == 0)
            return 1;
    return 0;
}

void notify_event(struct notify *n, const struct store_event *ev, const char *service)
{
    if (n == NULL)
        return;
    json_t *o = rollout_event_json(ev, service);
    char *body = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->nhooks; i++) {
        if (!wants(&n->hooks[i], service))
            continue;
        if (n->queued >= NOTIFY_QUEUE_MAX) {
            struct delivery *old = n->head;
            n->head = old->next;
            if (n->head == NULL)
                n->tail = NULL;
            n->queued--;
            log_warn("webhook queue full: dropped the oldest delivery", "url",
                     n->hooks[old->hook].url, "event", old->type);
            delivery_free(old);
        }
        struct delivery *d = xcalloc(1, sizeof(*d));
        d->hook = i;
        d->body = xstrdup(body);
        d->type = xstrdup(ev->type);
        if (n->tail != NULL)
            n->tail->next = d;
        else
            n->head = d;
        n->tail = d;
        n->queued++;
    }
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
    free(body);
}

void notify_stop(struct notify *n, unsigned wait_ms)
{
    if (n == NULL)
        return;
    if (n->started) {
        pthread_mutex_lock(&n->mu);
        n->stopping = 1;
        n->give_up_at = deadline_in(wait_ms);
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->thread, NULL);
    }
    while (n->head != NULL) {
        struct delivery *d = n->head;
        n->head = d->next;
        delivery_free(d);
    }
    for (size_t i = 0; i < n->nhooks; i++) {
        free(n->hooks[i].url);
        if (n->hooks[i].services != NULL)
            for (size_t j = 0; j < n->hooks[i].nservices; j++)
                free(n->hooks[i].services[j]);
        free(n->hooks[i].services);
    }
    free(n->hooks);
    curl_easy_cleanup(n->curl);
    if (n->multi != NULL)
        curl_multi_cleanup(n->multi);
    curl_global_cleanup();
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mu);
    free(n);
}
