/*
 * log.h -- one line per event on stderr, in logfmt.
 *
 *   ts=2026-11-26T12:00:00.123Z level=info event=upstream_call phone=8613****678 ...
 *
 * journald adds its own timestamp, but a line read from a file needs one.
 * Under systemd (JOURNAL_STREAM names our stderr) every line starts with a
 * sd-daemon(3) priority, "<3>" err, "<4>" warning, "<6>" info, "<7>" debug,
 * so `journalctl -p warning` finds warnings and errors.
 *
 * Two ways in:
 *  - log_event() (and log_info() ...): printf-style fields, written at once
 *    with one write(2). For everything but the access log: these lines are
 *    rare and must not wait (a crash right after must not lose them).
 *  - struct log_line: the access log's line, built in place without printf
 *    and handed to log_line_commit(), which appends it to the calling
 *    thread's buffer. A buffer is written when it fills, by a flusher thread
 *    at most LOG_FLUSH_MS after its first line, by log_flush() (reload) and
 *    by log_fini() or the thread's exit (clean stop): no line is lost at a
 *    clean stop; a crash may lose the last LOG_FLUSH_MS of access lines.
 *    Before log_init() (unit tests, the CLI) a committed line is written at
 *    once.
 *
 * Callers pass the event name and already-formatted "key=value" fields;
 * free text goes through log_quote(). Phone numbers go through log_mask_phone().
 * Secrets never reach this module: only signer sees them, and it never logs.
 * Threads: any. Every write(2) holds one mutex and carries whole lines, so
 * lines never interleave; lines of different threads may reach stderr out
 * of order by up to LOG_FLUSH_MS (each has its ts=).
 */
#ifndef CAMSKEYD_LOG_H
#define CAMSKEYD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

/*
 * Which requests get an access line (access-log = all|misses|off):
 * all of them; all but the ones answered from memory with a success (hits,
 * stale hits, 304s, health checks and metrics scrapes: those are counted in
 * /metrics); or none.
 */
enum log_access_mode {
	LOG_ACCESS_OFF = 0,
	LOG_ACCESS_MISSES,
	LOG_ACCESS_ALL,
};

/* A buffered thread's lines wait at most this long (the flusher's period). */
#define LOG_FLUSH_MS 100
/* Longest line; longer ones are cut (and still end in a newline). */
#define LOG_LINE_MAX 2048

/*
 * Start the flusher thread (buffered access lines from now on) and read
 * JOURNAL_STREAM. 0 or a negative errno (then lines are written at once).
 * Logs nothing.
 */
int log_init(void);
/* Stop the flusher, write every buffer. No other thread may log after it starts. */
void log_fini(void);
/* Write every thread's buffered lines now (reload, tests). Any thread. */
void log_flush(void);
/* Prefix lines with "<N>" (log_init() decides from JOURNAL_STREAM; for tests). */
void log_set_journal(bool on);

/* Set the least level written (default info). Safe to call at any time. */
void log_set_level(enum log_level level);
/* "debug", "info", "warn", "error" -> level; -EINVAL otherwise. */
int log_level_from_string(const char *s, enum log_level *ret_level);
/* The access log's mode (default misses). Safe to call at any time. */
void log_set_access_mode(enum log_access_mode mode);
enum log_access_mode log_access_mode(void);
/* "all", "misses", "off" (and the old "yes" = all, "no" = off) -> mode; -EINVAL otherwise. */
int log_access_mode_from_string(const char *s, enum log_access_mode *ret_mode);
/* Any access line at all (mode is not off). */
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
 * A line built in place: begin, add fields, commit. No printf, no
 * allocation; a field that does not fit is cut and the line still ends in
 * a newline. Values given to log_line_str() must be logfmt-safe (no space,
 * quote or control byte: ids, codes, masked phones); free text goes through
 * log_line_quoted().
 */
struct log_line {
	size_t len;
	char buf[LOG_LINE_MAX];
};

void log_line_begin(struct log_line *l, enum log_level level, const char *event);
void log_line_str(struct log_line *l, const char *key, const char *value);
void log_line_quoted(struct log_line *l, const char *key, const char *value);
void log_line_int(struct log_line *l, const char *key, int64_t value);
/* key=<us/1000 with three decimals>, as duration_ms=1.234 */
void log_line_ms(struct log_line *l, const char *key, int64_t us);
/* Append to this thread's buffer (see above). */
void log_line_commit(struct log_line *l);

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
