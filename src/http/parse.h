/* Strict, zero-copy HTTP/1.1 parser (RFC 9110/9112): request heads, response heads and the
 * chunked transfer coding. It never allocates: results point into the caller's buffer, and the
 * header array is the caller's. It is the security boundary of cutover: anything ambiguous is an
 * error, never a guess. Pure functions, any thread. */
#ifndef CUTOVER_HTTP_PARSE_H
#define CUTOVER_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Results of http_parse_request / http_parse_response other than "bytes consumed". */
enum http_err {
    HTTP_PARTIAL = -1,          /* no error so far, the head is incomplete: read more */
    HTTP_ERR_BAD_REQUEST = -2,  /* 400: malformed syntax or framing */
    HTTP_ERR_TOO_LARGE = -3,    /* 431: too many header fields */
    HTTP_ERR_URI_TOO_LONG = -4, /* 414: request target longer than limits->max_uri */
    HTTP_ERR_VERSION = -5,      /* 505: not HTTP/1.0 or HTTP/1.1 (HTTP/0.9 included) */
    HTTP_ERR_METHOD = -6,       /* 405: CONNECT (cutover is not a forward proxy), RTSP methods */
    HTTP_ERR_BAD_RESPONSE = -7, /* upstream sent a malformed or ambiguous response: 502 */
};

enum http_method {
    HTTP_M_OTHER = 0, /* any other valid token: forwarded as is */
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_OPTIONS,
    HTTP_M_PATCH,
    HTTP_M_TRACE,
    HTTP_M_CONNECT,
};

/* How the message body is delimited. */
enum http_framing {
    HTTP_BODY_NONE = 0, /* no body (Content-Length: 0, absent on a request, 1xx/204/304, HEAD) */
    HTTP_BODY_LENGTH,   /* exactly content_length bytes */
    HTTP_BODY_CHUNKED,  /* Transfer-Encoding: chunked, see http_chunked_* */
    HTTP_BODY_EOF,      /* responses only: until the upstream closes */
};

/* Flags on one header field. */
#define HTTP_HF_HOP                                                                                \
    0x1 /* hop-by-hop: a proxy must not forward it (RFC 9110 7.6.1): Connection,                   \
           Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, Proxy-Authenticate,                 \
           Proxy-Authorization, and every field named in Connection, except that                   \
           Connection can never mark Host, Content-Length or Transfer-Encoding */

struct http_header {
    const char *name; /* points into the input; not NUL-terminated */
    size_t name_len;
    const char *value; /* leading and trailing whitespace excluded */
    size_t value_len;
    unsigned flags; /* HTTP_HF_* */
};

/* Flags on a whole message. */
#define HTTP_F_CONN_CLOSE 0x01      /* Connection: close, or HTTP/1.0 without keep-alive */
#define HTTP_F_CONN_KEEPALIVE 0x02  /* Connection: keep-alive token present */
#define HTTP_F_UPGRADE 0x04         /* Connection: upgrade token and an Upgrade field present */
#define HTTP_F_EXPECT_CONTINUE 0x08 /* Expect: 100-continue */
#define HTTP_F_TE_AND_CL                                                                           \
    0x10 /* response only: both were sent; TE won, CL ignored. The                                 \
            connection it came on must not be reused. */

struct http_limits {
    size_t max_headers; /* header fields; more is HTTP_ERR_TOO_LARGE. 0 means 100 */
    size_t max_uri;     /* request-target bytes; longer is HTTP_ERR_URI_TOO_LONG. 0 means 8192 */
};

struct http_request {
    const char *method; /* points into the input */
    size_t method_len;
    enum http_method meth;
    const char *target; /* request-target as sent (origin, absolute, asterisk form) */
    size_t target_len;
    int minor_version; /* 0 or 1 (HTTP/1.x) */
    const char *host;  /* value of the Host field; NULL if absent (only allowed on HTTP/1.0) */
    size_t host_len;
    enum http_framing framing;   /* NONE, LENGTH or CHUNKED */
    uint64_t content_length;     /* valid when framing == HTTP_BODY_LENGTH */
    unsigned flags;              /* HTTP_F_* */
    struct http_header *headers; /* in: the caller's array; out: filled */
    size_t num_headers;          /* in: capacity of headers; out: fields parsed */
};

struct http_response {
    int minor_version;
    int status; /* 100..599 */
    const char *reason;
    size_t reason_len;
    enum http_framing framing; /* any of the four */
    uint64_t content_length;
    unsigned flags;
    struct http_header *headers; /* in: the caller's array; out: filled */
    size_t num_headers;          /* in: capacity; out: fields parsed */
};

/* Parses the request head at the start of buf[0..len).
 * Returns the number of bytes of the head (request line + fields + the empty line) when it is
 * complete and valid, HTTP_PARTIAL when more bytes are needed, or another enum http_err.
 * The caller re-calls with the same start and a longer len as bytes arrive; it enforces the
 * total head size limit itself (431 when the buffer fills while HTTP_PARTIAL).
 * Refused (HTTP_ERR_BAD_REQUEST): bare LF or bare CR anywhere in the head, whitespace before a
 * field colon or in a field name, obs-fold, NUL/CR/LF/other CTLs (except HTAB) in a value, empty
 * or invalid method token, missing or duplicate Host on HTTP/1.1 (duplicate also on 1.0), a Host
 * value that is not uri-host[":"port], a target with bytes outside VCHAR or with a "#" fragment,
 * a target not in origin-form except: http(s) absolute-form without userinfo whose authority
 * equals Host (case-insensitive), and "*" with OPTIONS. Framing: Content-Length
 * together with Transfer-Encoding, Content-Length that is not 1*DIGIT or overflows 2^63-1,
 * several differing Content-Length values (equal repeats, also as "5, 5", are accepted), any
 * Transfer-Encoding value other than exactly "chunked" (case-insensitive; once), and
 * Transfer-Encoding in an HTTP/1.0 request. Pure; never reads past buf[len-1]. */
int http_parse_request(const char *buf, size_t len, struct http_request *req,
                       const struct http_limits *limits);

/* Parses a response head like http_parse_request. req_method is the method of the request it
 * answers (HEAD and 1xx/204/304 have no body). Rules: TE and CL together → TE wins, CL ignored,
 * HTTP_F_TE_AND_CL set; TE whose final coding is not chunked → HTTP_BODY_EOF; differing
 * Content-Length values, a malformed one, or any syntax error → HTTP_ERR_BAD_RESPONSE;
 * neither CL nor TE → HTTP_BODY_EOF (except no-body cases). */
int http_parse_response(const char *buf, size_t len, struct http_response *resp,
                        enum http_method req_method, const struct http_limits *limits);

/* Streaming validator/decoder of the chunked transfer coding (RFC 9112 7.1), for a body that
 * cutover forwards verbatim. Embedded in the connection; no allocation. */
struct http_chunked {
    int state;          /* private */
    uint64_t remaining; /* private: data bytes left in the current chunk */
    size_t aux;         /* private: bytes of extension or trailer line seen so far */
    size_t trailers;    /* private: trailer bytes so far */
};

/* Prepares c for a new body. */
void http_chunked_init(struct http_chunked *c);

/* Called with each span of decoded chunk data, in order; may be NULL. */
typedef void (*http_chunk_data_cb)(void *ctx, const char *data, size_t len);

/* Consumes up to len bytes of a chunked body. Returns the number of bytes consumed (0..len), or
 * HTTP_ERR_BAD_REQUEST on a framing error: chunk size not pure hex or over 2^62, a chunk-size
 * line or chunk data not ended by CRLF (bare CR or LF), an extension that is not
 * *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ) or longer than 4096 bytes, a
 * malformed trailer field, trailers over 16384 bytes, or a Content-Length / Transfer-Encoding
 * field in the trailers. Sets *done to 1 once the last chunk, its trailers and final CRLF were
 * consumed; the bytes after that (the next pipelined message) are not consumed. on_data gets
 * the decoded payload. */
ssize_t http_chunked_feed(struct http_chunked *c, const char *buf, size_t len, int *done,
                          http_chunk_data_cb on_data, void *ctx);

/* Returns the HTTP status code a client should get for err (400, 431, 414, 505, 405, 502). */
int http_err_status(int err);

/* Returns a short static description of err, for logs and error bodies. */
const char *http_err_str(int err);

/* Case-insensitive comparison of a token of length n with the NUL-terminated lower-case lit;
 * returns 1 when equal. */
int http_token_eq(const char *s, size_t n, const char *lit);

/* Finds cookie name among the Cookie fields of headers[0..n): 1 with its value in *v, *vl
 * (not copied, possibly empty), else 0. The one cookie reader of the data plane (sticky and
 * pilot cookies) and the admin API (the dashboard session). */
int http_cookie_find(const struct http_header *headers, size_t n, const char *name, const char **v,
                     size_t *vl);

#endif
