/*
 * buf.h -- a growable byte buffer with a hard maximum and a sticky error.
 *
 * Canonical strings, response bodies and signatures are built by appending
 * to a struct buf; an append that would pass the maximum sets the error and
 * is dropped, and so is every later append. The builder checks buf_error()
 * once at the end instead of after every call (Varnish vsb, curl dynbuf).
 * The content is always NUL-terminated. Never logs. Threads: one owner.
 */
#ifndef CAMSKEYD_BUF_H
#define CAMSKEYD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;      /* NULL until the first append */
	size_t len;      /* bytes used, excluding the NUL */
	size_t cap;      /* bytes allocated */
	size_t max_bytes;/* content may never exceed this */
	int error;       /* 0, or -E2BIG once an append overflowed */
};

/* Start an empty buffer that may hold at most max_bytes. */
void buf_init(struct buf *b, size_t max_bytes);
/* Release the memory; the buffer may be reused after buf_init(). NULL ok. */
void buf_free(struct buf *b);
/* Release after wiping the content (for anything derived from a secret). */
void buf_free_wipe(struct buf *b);
/* Empty the content and clear the error, keeping the memory. */
void buf_reset(struct buf *b);

void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* Append n bytes as lower-case hex. */
void buf_addhex(struct buf *b, const unsigned char *p, size_t n);
/*
 * Append s (n bytes, NULs included) as a quoted string for an error
 * message: printable ASCII kept, '"' and '\\' escaped, every other byte
 * \xNN; past max_shown bytes it is cut and " (N bytes)" follows.
 */
void buf_add_quoted(struct buf *b, const char *s, size_t n, size_t max_shown);

/* 0, or -E2BIG if any append overflowed. */
static inline int buf_error(const struct buf *b) { return b->error; }
/* The content, NUL-terminated; "" for an empty buffer. Valid until next append. */
const char *buf_str(const struct buf *b);
/* Hand the content to the caller (free() it); the buffer is left empty. */
char *buf_steal(struct buf *b, size_t *ret_len);

/*
 * Format a one-line reason into a caller's error buffer (errbuf may be
 * NULL or errbuf_size 0: then nothing is written). The convention of every
 * function here that takes `char *errbuf, size_t errbuf_size`.
 */
void errbuf_printf(char *errbuf, size_t errbuf_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
