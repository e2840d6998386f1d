/* Text <-> socket address (see addr.h). Pure, any thread. */
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int addr_parse(const char *s, struct sockaddr_storage *out, socklen_t *outlen)
{
    char host[64];
    const char *colon, *hs;
    size_t hl;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -EINVAL;
        hs = s + 1;
        hl = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return -EINVAL;
        hs = s;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, hs, hl);
    host[hl] = '\0';

    const char *ps = colon + 1;
    if (*ps < '1' || *ps > '9' || strlen(ps) > 5)
        return -EINVAL;
    char *end;
    long port = strtol(ps, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -EINVAL;

    memset(out, 0, sizeof(*out));
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (s[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((unsigned short)port);
        *outlen = sizeof(*in4);
        return 0;
    }
    if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((unsigned short)port);
        *outlen = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

char *addr_format_host(const struct sockaddr *sa, char *buf, size_t n)
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)n);
    else
        snprintf(buf, n, "unix");
    return buf;
}

char *addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
    char host[64];
    addr_format_host(sa, host, sizeof(host));
    if (sa->sa_family == AF_INET)
        snprintf(buf, n, "%s:%u", host, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    else if (sa->sa_family == AF_INET6)
        snprintf(buf, n, "[%s]:%u", host, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else
        snprintf(buf, n, "%s", host);
    return buf;
}
