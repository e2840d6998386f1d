/* The HTTP/1.1 reverse proxy: the protocol a worker serves on an HTTP service's listeners (see
 * struct proxy_proto in proxy/proxy-t.h). The worker reaches it only through h1_proto. */
#ifndef CUTOVER_PROXY_H1PROXY_H
#define CUTOVER_PROXY_H1PROXY_H

#include "proxy/proxy-t.h"

extern const struct proxy_proto h1_proto;

#endif
