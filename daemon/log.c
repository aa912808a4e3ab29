/*
 * log.c -- logfmt lines on stderr (see log.h).
 *
 * Owns: the level and access-log switches (atomics, so reload may change them
 * while other threads log). Each line is assembled in a stack buffer and
 * written with a single write(2) so concurrent lines do not interleave.
 * Does not: buffer, rotate files or talk to journald directly.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static atomic_int min_level = LOG_LEVEL_INFO;
static atomic_bool access_on = true;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum log_level level)
{
	atomic_store(&min_level, (int)level);
}

int log_level_from_string(const char *s, enum log_level *ret_level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*ret_level = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_access(bool on)
{
	atomic_store(&access_on, on);
}

bool log_access_enabled(void)
{
	return atomic_load(&access_on);
}

bool log_enabled(enum log_level level)
{
	return (int)level >= atomic_load(&min_level);
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t len;
	int n;
	va_list ap;

	if (!log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		     level_names[level], event);
	if (n < 0)
		return;
	len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	va_start(ap, fmt);
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	va_end(ap);
	if (n > 0)
		len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
	/* Drop a trailing space left by an empty field list. */
	while (len > 0 && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	/* One write per line; a short write to a pipe of < PIPE_BUF cannot happen. */
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

const char *log_quote(const char *s, char *out, size_t out_size)
{
	size_t o = 0;

	out[o++] = '"';
	for (; s && *s && o + 6 < out_size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

const char *log_mask_phone(const char *phone, char *out, size_t out_size)
{
	size_t len = strlen(phone), keep_head, keep_tail, i, o = 0;

	keep_head = len >= 9 ? 4 : len / 3;
	keep_tail = len >= 9 ? 2 : 0;
	for (i = 0; i < len && o + 1 < out_size; i++) {
		bool keep = i < keep_head || i >= len - keep_tail;
		char c = phone[i];

		/* Only digits are ever shown; anything else is masked too. */
		out[o++] = keep && c >= '0' && c <= '9' ? c : '*';
	}
	out[o] = '\0';
	return out;
}
