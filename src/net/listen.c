/* Listening TCP sockets (see listen.h). Control thread. */
#include "net/listen.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/addr.h"

int listen_tcp(const char *address, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1, rc;
    if (addr_parse(address, &ss, &sl) != 0)
        return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto fail;
    if (ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss, sl) == -1)
        goto fail;
    if (listen(fd, backlog) == -1)
        goto fail;
    return fd;
fail:
    rc = -errno;
    close(fd);
    return rc;
}
