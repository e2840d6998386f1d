/* The TCP relay: the protocol a worker serves on a `protocol: tcp` service's listeners (see
 * struct proxy_proto in proxy/proxy-t.h). The worker reaches it only through tcp_proto. */
#ifndef CUTOVER_PROXY_TCPPROXY_H
#define CUTOVER_PROXY_TCPPROXY_H

#include "proxy/proxy-t.h"

extern const struct proxy_proto tcp_proto;

#endif
