/*
 * simutil.c -- generic helpers of the simulator (see simutil.h). Written
 * for the simulator alone; it deliberately does not use daemon/buf.c,
 * daemon/span.c or daemon/log.c.
 */
#include "simutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

static void out_of_memory(size_t n)
{
	char line[80];
	int len = snprintf(line, sizeof(line), "camsim: out of memory (%zu bytes)\n", n);

	if (len > 0 && write(STDERR_FILENO, line, (size_t)len) < 0)
		abort();
	abort();
}

void *sim_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		out_of_memory(n);
	return p;
}

void *sim_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		out_of_memory(n * size);
	return p;
}

char *sim_xmemdup(const void *p, size_t n)
{
	char *s = sim_xmalloc(n + 1);

	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

char *sim_xstrdup(const char *s)
{
	return sim_xmemdup(s, strlen(s));
}

void sim_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

/* ---- bounded buffer ---- */

void sbuf_init(struct sbuf *b, size_t max_bytes)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->max_bytes = max_bytes;
	b->error = false;
}

void sbuf_free(struct sbuf *b)
{
	if (!b)
		return;
	free(b->data);
	sbuf_init(b, b->max_bytes);
}

void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
	if (b->error || n == 0)
		return;
	if (n > b->max_bytes - b->len) {
		b->error = true;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *data;

		while (cap < b->len + n + 1)
			cap *= 2;
		data = realloc(b->data, cap);
		if (!data)
			out_of_memory(cap);
		b->data = data;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void sbuf_adds(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

void sbuf_addc(struct sbuf *b, char c)
{
	sbuf_add(b, &c, 1);
}

const char *sbuf_str(const struct sbuf *b)
{
	return b->data ? b->data : "";
}

char *sbuf_steal(struct sbuf *b, size_t *ret_len)
{
	char *data = b->data ? b->data : sim_xstrdup("");

	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return data;
}

/* ---- numbers, decoding, hex ---- */

int sim_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 20)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int sim_str_to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	return sim_parse_u64(s, strlen(s), min, max, ret);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *sim_url_decode(const char *s, size_t len, size_t *ret_len)
{
	char *out = sim_xmalloc(len + 1);
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[o++] = ' ';
		} else if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
			   hexval(s[i + 2]) >= 0) {
			out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	if (ret_len)
		*ret_len = o;
	return out;
}

void sim_hex(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ---- logging ---- */

void sim_log(enum sim_log_level level, const char *event, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t len;
	int n;
	va_list ap;

	if (level == SIM_LOG_DEBUG)
		return; /* the simulator has no debug switch: debug lines are dropped */
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, names[level], event);
	if (n < 0)
		return;
	len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	va_start(ap, fmt);
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	va_end(ap);
	if (n > 0)
		len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
	while (len > 0 && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

const char *sim_log_quote(const char *s, char *out, size_t out_size)
{
	size_t o = 0;

	out[o++] = '"';
	for (; s && *s && o + 6 < out_size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
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

const char *sim_mask_phone(const char *phone, char *out, size_t out_size)
{
	size_t len = strlen(phone), head = len >= 9 ? 4 : len / 3, tail = len >= 9 ? 2 : 0;
	size_t i, o = 0;

	for (i = 0; i < len && o + 1 < out_size; i++) {
		bool keep = i < head || i >= len - tail;

		out[o++] = keep && phone[i] >= '0' && phone[i] <= '9' ? phone[i] : '*';
	}
	out[o] = '\0';
	return out;
}
