/*
 * span.c -- string spans and the range-checked number parser (see span.h).
 */
#include "span.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

struct span span_cstr(const char *s)
{
	return span_make(s, strlen(s));
}

bool span_eq_nocase(struct span a, const char *s)
{
	size_t n = strlen(s);

	return a.len == n && strncasecmp(a.p, s, n) == 0;
}

struct span span_trim(struct span s)
{
	while (s.len && (s.p[0] == ' ' || s.p[0] == '\t')) {
		s.p++;
		s.len--;
	}
	while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
		s.len--;
	return s;
}

static bool is_ascii_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

struct span span_trim_ws(struct span s)
{
	while (s.len && is_ascii_space((unsigned char)s.p[0])) {
		s.p++;
		s.len--;
	}
	while (s.len && is_ascii_space((unsigned char)s.p[s.len - 1]))
		s.len--;
	return s;
}

bool span_split(struct span s, char c, struct span *ret_head, struct span *ret_tail)
{
	const char *at = s.len ? memchr(s.p, c, s.len) : NULL;

	if (!at)
		return false;
	*ret_head = span_make(s.p, (size_t)(at - s.p));
	*ret_tail = span_make(at + 1, s.len - (size_t)(at - s.p) - 1);
	return true;
}

int span_to_u64(struct span s, uint64_t min, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i;

	if (s.len == 0 || s.len > 20)
		return -EINVAL;
	for (i = 0; i < s.len; i++) {
		unsigned d;

		if (s.p[i] < '0' || s.p[i] > '9')
			return -EINVAL;
		d = (unsigned)(s.p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int str_to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	return span_to_u64(span_cstr(s), min, max, ret);
}

int span_copy(struct span s, char *dst, size_t dst_size)
{
	if (s.len + 1 > dst_size)
		return -E2BIG;
	memcpy(dst, s.p, s.len);
	dst[s.len] = '\0';
	return 0;
}

size_t span_format_i64(int64_t v, char out[SPAN_I64_SIZE])
{
	char tmp[SPAN_I64_SIZE], *end = tmp + sizeof(tmp), *p = end;
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	size_t n;

	do {
		*--p = (char)('0' + mag % 10);
		mag /= 10;
	} while (mag);
	if (v < 0)
		*--p = '-';
	n = (size_t)(end - p);
	memcpy(out, p, n);
	out[n] = '\0';
	return n;
}
