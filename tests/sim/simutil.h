/*
 * simutil.h -- the simulator's own generic helpers: allocation that aborts
 * on failure, a bounded string builder with a sticky error, a range-checked
 * number parser, form decoding, logfmt lines on stderr.
 *
 * The simulator is the oracle the daemon is tested against, so it shares
 * no code with the daemon (not even these small helpers): a bug in the
 * daemon cannot be mirrored by the simulator. Nothing here includes a
 * header from daemon/ (the Makefile compiles tests/sim/ without it on the
 * include path).
 *
 * Threads: everything is safe from any thread; a struct sbuf has one owner.
 */
#ifndef CAMSIM_SIMUTIL_H
#define CAMSIM_SIMUTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *sim_xmalloc(size_t n);
void *sim_xcalloc(size_t n, size_t size);
char *sim_xstrdup(const char *s);
char *sim_xmemdup(const void *p, size_t n); /* NUL-terminated copy */
/* Overwrite n bytes so the compiler cannot drop it (OPENSSL_cleanse). */
void sim_wipe(void *p, size_t n);

/*
 * A growable buffer holding at most max_bytes: an append past that sets
 * `error` and is dropped, like every later one. Always NUL-terminated.
 */
struct sbuf {
	char *data;       /* NULL until the first append */
	size_t len;
	size_t cap;
	size_t max_bytes;
	bool error;
};

void sbuf_init(struct sbuf *b, size_t max_bytes);
void sbuf_free(struct sbuf *b);
void sbuf_add(struct sbuf *b, const void *p, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addc(struct sbuf *b, char c);
/* The content, "" when empty; valid until the next append. */
const char *sbuf_str(const struct sbuf *b);
/* Hand the content to the caller (free() it); never NULL. */
char *sbuf_steal(struct sbuf *b, size_t *ret_len);

/* Decimal digits only, in [min, max]; 0 or -EINVAL / -ERANGE. */
int sim_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *ret);
int sim_str_to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/*
 * application/x-www-form-urlencoded decoding: %XX and '+' as space; a bad
 * escape is kept as it is. Returns a NUL-terminated copy the caller frees;
 * its length (which may count embedded NULs) in *ret_len.
 */
char *sim_url_decode(const char *s, size_t len, size_t *ret_len);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void sim_hex(const unsigned char *p, size_t n, char *out);

enum sim_log_level { SIM_LOG_DEBUG, SIM_LOG_INFO, SIM_LOG_WARN };
/* One logfmt line "ts=… level=… event=… <fields>" on stderr, one write(2). */
void sim_log(enum sim_log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* s as a logfmt quoted value into out; returns out. */
const char *sim_log_quote(const char *s, char *out, size_t out_size);
/* A phone number for a log line: the first 4 and last 2 digits kept. */
#define SIM_PHONE_MASKED_MAX 32
const char *sim_mask_phone(const char *phone, char *out, size_t out_size);

#endif
