/* HTTP status codes: the reason phrase of each (RFC 9110 15). Pure; any thread. */
#ifndef CUTOVER_HTTP_STATUS_H
#define CUTOVER_HTTP_STATUS_H

/* Returns the reason phrase of status ("Bad Gateway" for 502), or "Error" for a code it does
 * not know. Static storage. */
const char *http_status_reason(int status);

#endif
