/* PROXY protocol v1/v2 header parser (see proxyproto.h). Every check is made on bytes in a fixed
 * order from the start, so an error found in a prefix is the error the whole input gives, and a
 * caller reading byte by byte closes the connection as soon as the header cannot be valid. */
#include "net/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static const char v1_sig[5] = {'P', 'R', 'O', 'X', 'Y'};
static const char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

#define V2_HEADER_LEN 16
#define V2_TYPE_CRC32C 0x03

static const char *const errors[] = {
    "not a PROXY protocol header (expected \"PROXY\" or the v2 signature)",
    "PROXY v1 line longer than 107 bytes without CRLF",
    "PROXY v1 line has a CR without LF or a LF without CR",
    "PROXY v1 line has a byte that is not printable US-ASCII",
    "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN",
    "PROXY v1 fields are missing, extra or not separated by one space",
    "PROXY header address is not a canonical address of its family",
    "PROXY v1 port is not a decimal 0..65535 without leading zeros",
    "PROXY v2 version is not 2",
    "PROXY v2 command is neither LOCAL nor PROXY",
    "PROXY v2 address family is unknown",
    "PROXY v2 transport protocol is unknown",
    "PROXY v2 header is longer than cutover accepts (4096 bytes)",
    "PROXY v2 length is too short for the address family",
    "PROXY v2 TLV runs past the end of the header",
    "PROXY v2 CRC32C TLV is malformed or does not match",
};

const char *proxyproto_strerror(int err)
{
    if (err < 0 && (size_t)-err <= sizeof(errors) / sizeof(errors[0]))
        return errors[-err - 1];
    return "unknown error";
}

/* Decimal 0..max, 1..digits characters, no leading zero (the spec forbids them so that nobody
 * reads octal). Returns -1 when s[0..n) is not that. */
static long parse_dec(const char *s, size_t n, size_t digits, long max)
{
    long v = 0;

    if (n == 0 || n > digits || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

/* Exactly four dot-separated decimals 0..255, written here rather than with inet_pton so the
 * spec's canonical form is what is checked, whatever the libc accepts. */
static bool parse_v4(const char *s, size_t n, unsigned char out[4])
{
    size_t start = 0;
    int part = 0;

    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.')
            continue;
        if (part == 4)
            return false;
        long v = parse_dec(s + start, i - start, 3, 255);
        if (v < 0)
            return false;
        out[part++] = (unsigned char)v;
        start = i + 1;
    }
    return part == 4;
}

static bool parse_v6(const char *s, size_t n, unsigned char out[16])
{
    char tmp[48]; /* 39 hex-and-colon characters at most, 45 with a dotted tail */

    if (n < 2 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, out) == 1;
}

/* addr and port point to bytes in network order (the v2 wire format, or v1 converted). */
static void set_addr(struct sockaddr_storage *ss, int family, const unsigned char *addr,
                     const unsigned char *port)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        in4->sin_family = AF_INET;
        memcpy(&in4->sin_addr, addr, 4);
        memcpy(&in4->sin_port, port, 2);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, addr, 16);
        memcpy(&in6->sin6_port, port, 2);
    }
}

static void set_local(struct proxyproto_hdr *out, int version)
{
    memset(out, 0, sizeof(*out));
    out->version = version;
    out->local = true;
    out->src.ss_family = AF_UNSPEC;
    out->dst.ss_family = AF_UNSPEC;
}

/* Fields of the v1 line after "PROXY", split on single spaces; an empty field (two spaces, a
 * leading or trailing space) is an error. */
struct v1_fields {
    const char *p[6];
    size_t n[6];
    int count;
};

static bool v1_split(const char *s, const char *end, struct v1_fields *f)
{
    f->count = 0;
    if (s == end || *s != ' ')
        return false;
    s++;
    for (;;) {
        const char *sp = memchr(s, ' ', (size_t)(end - s));
        const char *fe = sp != NULL ? sp : end;

        if (fe == s || f->count == 6)
            return false;
        f->p[f->count] = s;
        f->n[f->count] = (size_t)(fe - s);
        f->count++;
        if (sp == NULL)
            return true;
        s = sp + 1;
    }
}

static bool field_is(const struct v1_fields *f, int i, const char *word)
{
    return f->n[i] == strlen(word) && memcmp(f->p[i], word, f->n[i]) == 0;
}

static int parse_v1(const char *buf, size_t len, struct proxyproto_hdr *out)
{
    size_t lim = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
    size_t eol = 0;

    if (memcmp(buf, v1_sig, len < sizeof(v1_sig) ? len : sizeof(v1_sig)) != 0)
        return PROXYPROTO_E_SIGNATURE;
    for (size_t i = sizeof(v1_sig); i < lim; i++) {
        unsigned char c = (unsigned char)buf[i];

        if (c == '\r') {
            if (i + 1 == PROXYPROTO_V1_MAX)
                return PROXYPROTO_E_V1_TOO_LONG; /* its LF would be byte 108 */
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return PROXYPROTO_E_V1_CRLF;
            eol = i;
            break;
        }
        if (c == '\n')
            return PROXYPROTO_E_V1_CRLF;
        if (c < 0x20 || c > 0x7e)
            return PROXYPROTO_E_V1_CHAR;
    }
    if (eol == 0)
        return len >= PROXYPROTO_V1_MAX ? PROXYPROTO_E_V1_TOO_LONG : 0;

    /* The spec says to ignore whatever follows UNKNOWN up to the CRLF: a sender may fill it
     * or not, in any shape, so it is not split into fields. */
    static const char unknown[] = " UNKNOWN";
    size_t ul = sizeof(unknown) - 1;
    if (eol - sizeof(v1_sig) >= ul && memcmp(buf + sizeof(v1_sig), unknown, ul) == 0 &&
        (eol == sizeof(v1_sig) + ul || buf[sizeof(v1_sig) + ul] == ' ')) {
        set_local(out, 1);
        return (int)eol + 2;
    }
    struct v1_fields f;
    if (!v1_split(buf + sizeof(v1_sig), buf + eol, &f))
        return PROXYPROTO_E_V1_FIELDS;
    int family;
    if (field_is(&f, 0, "TCP4")) {
        family = AF_INET;
    } else if (field_is(&f, 0, "TCP6")) {
        family = AF_INET6;
    } else {
        return PROXYPROTO_E_V1_PROTO;
    }
    if (f.count != 5)
        return PROXYPROTO_E_V1_FIELDS;

    unsigned char src[16], dst[16];
    bool ok = family == AF_INET ? parse_v4(f.p[1], f.n[1], src) && parse_v4(f.p[2], f.n[2], dst)
                                : parse_v6(f.p[1], f.n[1], src) && parse_v6(f.p[2], f.n[2], dst);
    if (!ok)
        return PROXYPROTO_E_ADDR;
    long sport = parse_dec(f.p[3], f.n[3], 5, 65535);
    long dport = parse_dec(f.p[4], f.n[4], 5, 65535);
    if (sport < 0 || dport < 0)
        return PROXYPROTO_E_PORT;

    unsigned char sp[2] = {(unsigned char)(sport >> 8), (unsigned char)sport};
    unsigned char dp[2] = {(unsigned char)(dport >> 8), (unsigned char)dport};
    memset(out, 0, sizeof(*out));
    out->version = 1;
    set_addr(&out->src, family, src, sp);
    set_addr(&out->dst, family, dst, dp);
    return (int)eol + 2;
}

/* CRC32C (Castagnoli, reflected 0x82F63B78) of the header with the 4 checksum bytes at skip
 * counted as zeros, as the spec (2.2.3) defines it. Bitwise: it runs once per connection on at
 * most PROXYPROTO_MAX_LEN bytes, not worth a table. */
static uint32_t crc32c_skip(const unsigned char *b, size_t n, size_t skip)
{
    uint32_t crc = 0xffffffffu;

    for (size_t i = 0; i < n; i++) {
        crc ^= (i >= skip && i < skip + 4) ? 0 : b[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int parse_v2(const char *buf, size_t len, struct proxyproto_hdr *out)
{
    /* Address block sizes by family: UNSPEC, INET, INET6, UNIX (spec 2.2). */
    static const size_t addr_len[4] = {0, 12, 36, 216};
    const unsigned char *b = (const unsigned char *)buf;

    if (memcmp(buf, v2_sig, len < sizeof(v2_sig) ? len : sizeof(v2_sig)) != 0)
        return PROXYPROTO_E_SIGNATURE;
    if (len < V2_HEADER_LEN)
        return 0;
    if ((b[12] >> 4) != 2)
        return PROXYPROTO_E_V2_VERSION;
    unsigned cmd = b[12] & 0x0f, fam = b[13] >> 4, proto = b[13] & 0x0f;
    if (cmd > 1)
        return PROXYPROTO_E_V2_COMMAND;
    if (fam > 3)
        return PROXYPROTO_E_V2_FAMILY;
    if (proto > 2)
        return PROXYPROTO_E_V2_TRANSPORT;
    size_t total = V2_HEADER_LEN + ((size_t)b[14] << 8 | b[15]);
    if (total > PROXYPROTO_MAX_LEN)
        return PROXYPROTO_E_V2_TOO_LONG;
    if (total - V2_HEADER_LEN < addr_len[fam])
        return PROXYPROTO_E_V2_LENGTH;
    if (len < total)
        return 0;

    for (size_t off = V2_HEADER_LEN + addr_len[fam]; off < total;) {
        if (total - off < 3)
            return PROXYPROTO_E_V2_TLV;
        size_t vlen = (size_t)b[off + 1] << 8 | b[off + 2];
        if (vlen > total - off - 3)
            return PROXYPROTO_E_V2_TLV;
        if (b[off] == V2_TYPE_CRC32C) {
            const unsigned char *v = b + off + 3;
            if (vlen != 4)
                return PROXYPROTO_E_V2_CRC;
            uint32_t want =
                (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
            if (crc32c_skip(b, total, off + 3) != want)
                return PROXYPROTO_E_V2_CRC;
        }
        off += 3 + vlen;
    }

    /* LOCAL (a balancer's health check), and the families and transports cutover does not
     * relay, fall back to the connection's own addresses as the spec asks of a receiver. */
    if (cmd == 0 || (fam != 1 && fam != 2) || proto != 1) {
        set_local(out, 2);
        return (int)total;
    }
    memset(out, 0, sizeof(*out));
    out->version = 2;
    if (fam == 1) {
        set_addr(&out->src, AF_INET, b + 16, b + 24);
        set_addr(&out->dst, AF_INET, b + 20, b + 26);
    } else {
        set_addr(&out->src, AF_INET6, b + 16, b + 48);
        set_addr(&out->dst, AF_INET6, b + 32, b + 50);
    }
    return (int)total;
}

int proxyproto_parse(const char *buf, size_t len, struct proxyproto_hdr *out)
{
    if (len == 0)
        return 0;
    if (buf[0] == v1_sig[0])
        return parse_v1(buf, len, out);
    if (buf[0] == v2_sig[0])
        return parse_v2(buf, len, out);
    return PROXYPROTO_E_SIGNATURE;
}
