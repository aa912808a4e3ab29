/*
 * buf.c -- bounded buffer with a sticky error (see buf.h).
 */
#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "mem.h"

void buf_init(struct buf *b, size_t max_bytes)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max_bytes = max_bytes;
	b->error = 0;
}

void buf_free(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_free_wipe(struct buf *b)
{
	if (!b)
		return;
	mem_wipe(b->data, b->cap);
	buf_free(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	b->error = 0;
	if (b->data)
		b->data[0] = '\0';
}

/* Make room for n more bytes plus the NUL; 0 or -E2BIG (sticky). */
static int reserve(struct buf *b, size_t n)
{
	size_t need;

	if (b->error)
		return b->error;
	if (n > b->max_bytes - b->len) {
		b->error = -E2BIG;
		return b->error;
	}
	need = b->len + n + 1;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 64;

		while (cap < need)
			cap *= 2;
		if (cap > b->max_bytes + 1)
			cap = b->max_bytes + 1;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
	return 0;
}

void buf_add(struct buf *b, const void *p, size_t n)
{
	if (reserve(b, n))
		return;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_addc(struct buf *b, char c)
{
	buf_add(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	if (b->error)
		return;
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0) {
		b->error = -EINVAL;
		return;
	}
	if (reserve(b, (size_t)n))
		return;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_add_quoted(struct buf *b, const char *s, size_t n, size_t max_shown)
{
	size_t shown = n > max_shown ? max_shown : n;

	buf_addc(b, '"');
	for (size_t i = 0; i < shown; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			buf_printf(b, "\\x%02x", c);
		else
			buf_addc(b, (char)c);
	}
	buf_addc(b, '"');
	if (shown < n)
		buf_printf(b, " (%zu bytes)", n);
}

void buf_addhex(struct buf *b, const unsigned char *p, size_t n)
{
	if (reserve(b, 2 * n))
		return;
	/* reserve() keeps room for the NUL that hex_encode_lower() writes */
	hex_encode_lower(p, n, b->data + b->len);
	b->len += 2 * n;
}

const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}

char *buf_steal(struct buf *b, size_t *ret_len)
{
	char *p = b->data ? b->data : xstrdup("");

	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

void errbuf_printf(char *errbuf, size_t errbuf_size, const char *fmt, ...)
{
	va_list ap;

	if (!errbuf || errbuf_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errbuf_size, fmt, ap);
	va_end(ap);
}
