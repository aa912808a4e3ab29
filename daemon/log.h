/*
 * log.h -- one line per event on stderr, in logfmt.
 *
 *   ts=2026-11-26T12:00:00.123Z level=info event=upstream_call phone=8613****678 ...
 *
 * journald adds its own timestamp, but a line read from a file needs one.
 * Callers pass the event name and already-formatted "key=value" fields;
 * free text goes through log_quote(). Phone numbers go through log_mask_phone().
 * Secrets never reach this module: only signer sees them, and it never logs.
 * Threads: any; each line is written with one write(2), so lines never interleave.
 */
#ifndef CAMSKEYD_LOG_H
#define CAMSKEYD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

/* Set the least level written (default info). Safe to call at any time. */
void log_set_level(enum log_level level);
/* "debug", "info", "warn", "error" -> level; -EINVAL otherwise. */
int log_level_from_string(const char *s, enum log_level *ret_level);
/* Switch the access log (event=access) on or off (default on). */
void log_set_access(bool on);
bool log_access_enabled(void);
bool log_enabled(enum log_level level);

/* Write one line: level, event and the fields printf-formatted from fmt. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) log_event(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_LEVEL_ERROR, ev, __VA_ARGS__)

/*
 * Quote s for a logfmt value: "..." with \" \\ \n escaped and control bytes
 * as \xNN; truncated to fit. Returns out (size out_size >= 4).
 */
const char *log_quote(const char *s, char *out, size_t out_size);

/*
 * Mask a phone number for logs: keep the first 4 and last 2 digits, the rest
 * become '*' ("8613912345678" -> "8613*******78"); short numbers keep less.
 * Returns out. out_size of LOG_PHONE_MASKED_MAX is always enough.
 */
#define LOG_PHONE_MASKED_MAX 32
const char *log_mask_phone(const char *phone, char *out, size_t out_size);

#endif
