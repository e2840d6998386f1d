/* The PROXY protocol header (HAProxy doc/proxy-protocol.txt, v1 text and v2 binary) that a load
 * balancer puts in front of a connection to tell the real client's address. A strict parser in
 * the style of picohttpparser: no allocation, no state between calls, the caller keeps the bytes
 * and calls again with more. Pure, any thread. */
#ifndef CUTOVER_NET_PROXYPROTO_H
#define CUTOVER_NET_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A v1 line is at most 107 bytes with its CRLF (spec 2.1). */
#define PROXYPROTO_V1_MAX 107
/* The protocol lets a v2 header reach 16 + 65535 bytes; cutover refuses more than this (TLVs of
 * real balancers take a few hundred bytes), so a header always fits the worker's 16 KiB read
 * buffer. A caller's buffer must hold PROXYPROTO_MAX_LEN bytes to always get an answer. */
#define PROXYPROTO_MAX_LEN 4096

/* Errors: negative, each names one problem (proxyproto_strerror gives the sentence). */
enum proxyproto_err {
    PROXYPROTO_E_SIGNATURE = -1,     /* neither "PROXY" (v1) nor the v2 signature */
    PROXYPROTO_E_V1_TOO_LONG = -2,   /* no CRLF in the first 107 bytes */
    PROXYPROTO_E_V1_CRLF = -3,       /* a CR without LF, or a LF without CR */
    PROXYPROTO_E_V1_CHAR = -4,       /* a byte that is not printable US-ASCII */
    PROXYPROTO_E_V1_PROTO = -5,      /* protocol other than TCP4, TCP6, UNKNOWN */
    PROXYPROTO_E_V1_FIELDS = -6,     /* missing, extra or not single-space separated fields */
    PROXYPROTO_E_ADDR = -7,          /* an address that is not canonical for the family */
    PROXYPROTO_E_PORT = -8,          /* a port outside 0..65535 or with a leading zero */
    PROXYPROTO_E_V2_VERSION = -9,    /* v2 version nibble is not 2 */
    PROXYPROTO_E_V2_COMMAND = -10,   /* v2 command is neither LOCAL nor PROXY */
    PROXYPROTO_E_V2_FAMILY = -11,    /* v2 address family outside UNSPEC/INET/INET6/UNIX */
    PROXYPROTO_E_V2_TRANSPORT = -12, /* v2 transport outside UNSPEC/STREAM/DGRAM */
    PROXYPROTO_E_V2_TOO_LONG = -13,  /* v2 header longer than PROXYPROTO_MAX_LEN */
    PROXYPROTO_E_V2_LENGTH = -14,    /* v2 length too short for the family's address block */
    PROXYPROTO_E_V2_TLV = -15,       /* a TLV runs past the end of the header */
    PROXYPROTO_E_V2_CRC = -16,       /* a PP2_TYPE_CRC32C TLV of a wrong size or checksum */
};

/* What a complete header said. When local is true (v1 UNKNOWN, v2 LOCAL, v2 PROXY with a
 * family or transport cutover does not relay: UNSPEC, UNIX, DGRAM), the header carries no
 * client: the caller keeps the connection's own peer address, and src/dst have ss_family
 * AF_UNSPEC. Otherwise src and dst are AF_INET or AF_INET6 with their ports. */
struct proxyproto_hdr {
    int version; /* 1 or 2 */
    bool local;
    struct sockaddr_storage src; /* the client */
    struct sockaddr_storage dst; /* the address the client connected to */
};

/* Parses the PROXY header at the start of buf[0..len). Returns the header's length in bytes
 * (> 0; the caller drops them and hands the rest to the protocol) and fills *out; 0 when buf is
 * a valid beginning of a header but incomplete (call again with more bytes; every prefix of a
 * valid header gives 0); or a negative enum proxyproto_err, which means close the connection.
 * Errors are decided as early as the bytes allow and never change when more bytes arrive.
 * Never reads past buf + len nor past PROXYPROTO_MAX_LEN; *out is only written on success. */
int proxyproto_parse(const char *buf, size_t len, struct proxyproto_hdr *out);

/* Returns a static sentence for an enum proxyproto_err value ("unknown error" otherwise). */
const char *proxyproto_strerror(int err);

#endif
