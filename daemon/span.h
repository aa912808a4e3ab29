/*
 * span.h -- length-aware string views, a cursor, the one number parser and
 * the one number printer (the hit path and the log lines format without printf).
 *
 * Parsers work on (pointer, length) spans and never need a NUL; the cursor
 * advances only when a step succeeds. Never logs. Threads: any.
 */
#ifndef CAMSKEYD_SPAN_H
#define CAMSKEYD_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct span {
	const char *p;
	size_t len;
};

static inline struct span span_make(const char *p, size_t len)
{
	struct span s = { p, len };
	return s;
}
struct span span_cstr(const char *s);

/*
 * Inline, so that a literal's strlen folds to a constant: the router
 * compares every request's path with these.
 */
static inline bool span_eq(struct span a, const char *s)
{
	size_t n = strlen(s);

	return a.len == n && memcmp(a.p, s, n) == 0;
}

static inline bool span_starts_with(struct span a, const char *prefix)
{
	size_t n = strlen(prefix);

	return a.len >= n && memcmp(a.p, prefix, n) == 0;
}

bool span_eq_nocase(struct span a, const char *s);
/* Drop leading and trailing spaces and tabs. */
struct span span_trim(struct span s);
/* Drop ASCII white space, line endings included, at both ends. */
struct span span_trim_ws(struct span s);
/* Split at the first c: *ret_head before it, *ret_tail after it. false if absent. */
bool span_split(struct span s, char c, struct span *ret_head, struct span *ret_tail);

/*
 * Parse a whole span as an unsigned decimal in [min, max].
 * 0, or -EINVAL (not a number, sign, junk, empty) or -ERANGE (out of bounds).
 * *ret untouched on failure.
 */
int span_to_u64(struct span s, uint64_t min, uint64_t max, uint64_t *ret);
/* Same for a NUL-terminated string. */
int str_to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* Copy a span into dst (size dst_size) with a NUL; -E2BIG if it does not fit. */
int span_copy(struct span s, char *dst, size_t dst_size);

/* Room for any int64_t in decimal: "-9223372036854775808" and a NUL. */
#define SPAN_I64_SIZE 21

/*
 * v in decimal (a '-' first if negative) and a NUL into out, which holds
 * SPAN_I64_SIZE bytes; returns the number of characters, NUL excluded.
 */
size_t span_format_i64(int64_t v, char out[SPAN_I64_SIZE]);

#endif
