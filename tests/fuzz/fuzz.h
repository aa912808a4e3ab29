/*
 * fuzz.h -- what every fuzz target shares: the libFuzzer entry point's
 * prototype and the splitting of one input into NUL-separated parts.
 *
 * A target that needs several strings (a path and a query value, a method
 * and headers) reads them from one input separated by NUL bytes: every part
 * is then a C string as the daemon receives it (libmicrohttpd and the INI
 * reader never hand over an embedded NUL), and seed files stay writable with
 * printf '%s\0%s'. Parts past FUZZ_MAX_PARTS are ignored.
 *
 * The same target links either with libFuzzer (make fuzz) or with replay.c
 * (the test_fuzz_* programs of make all / make check). Threads: one.
 */
#ifndef CAMSKEYD_FUZZ_H
#define CAMSKEYD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* The entry point: 0 always (libFuzzer reserves other values). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * An invariant of the code under test: on failure, say which and abort, so
 * libFuzzer saves the input and the replay fails. On whatever NDEBUG says.
 */
#define FUZZ_ASSERT(cond)                                                              \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: FUZZ_ASSERT(%s) failed\n", __FILE__,  \
				__LINE__, #cond);                                      \
			abort();                                                       \
		}                                                                      \
	} while (0)

#define FUZZ_MAX_PARTS 64

struct fuzz_parts {
	char *copy;                        /* the input plus a NUL; owned */
	const char *part[FUZZ_MAX_PARTS];  /* into copy, each NUL-terminated */
	size_t len[FUZZ_MAX_PARTS];
	size_t n;                          /* parts present, at least 1 */
};

/* Split data at its NUL bytes into fp (free with fuzz_parts_free()). */
static inline void fuzz_split(struct fuzz_parts *fp, const uint8_t *data, size_t size)
{
	size_t start = 0;

	memset(fp, 0, sizeof(*fp));
	fp->copy = xmalloc(size + 1);
	if (size)
		memcpy(fp->copy, data, size);
	fp->copy[size] = '\0';
	for (size_t i = 0; i <= size && fp->n < FUZZ_MAX_PARTS; i++) {
		if (fp->copy[i] != '\0')
			continue;
		fp->part[fp->n] = fp->copy + start;
		fp->len[fp->n] = i - start;
		fp->n++;
		start = i + 1;
	}
}

/* Part i, or NULL when the input has fewer parts. */
static inline const char *fuzz_part(const struct fuzz_parts *fp, size_t i)
{
	return i < fp->n ? fp->part[i] : NULL;
}

static inline void fuzz_parts_free(struct fuzz_parts *fp)
{
	free(fp->copy);
	fp->copy = NULL;
	fp->n = 0;
}

#endif
