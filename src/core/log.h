/* Logging: one logfmt line per event on stderr (ts=... level=... msg=... key=value ...),
 * written with a single write(2) so lines from several threads never interleave.
 * Library modules do not log; main, api/, super/ and rollout/ do (see STYLE.md). Any thread. */
#ifndef CUTOVER_CORE_LOG_H
#define CUTOVER_CORE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level that is printed (default LOG_INFO). Call before threads start. */
void log_set_level(enum log_level min);

/* Logs msg with key/value string pairs, terminated by a NULL key. Values that need it are
 * quoted and escaped, so any string (even one a peer sent) is safe to pass. A NULL value
 * prints as an empty string. Example: log_kv(LOG_INFO, "deploy started", "service", "web", NULL).
 */
void log_kv(enum log_level lvl, const char *msg, ...) __attribute__((sentinel));

#define log_info(...) log_kv(LOG_INFO, __VA_ARGS__, (const char *)NULL)
#define log_warn(...) log_kv(LOG_WARN, __VA_ARGS__, (const char *)NULL)
#define log_error(...) log_kv(LOG_ERROR, __VA_ARGS__, (const char *)NULL)
#define log_debug(...) log_kv(LOG_DEBUG, __VA_ARGS__, (const char *)NULL)

#endif
