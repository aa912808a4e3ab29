/*
 * mem.h -- allocation with one out-of-memory policy: abort.
 *
 * Every input is bounded (limits.h), so an allocation failure means the
 * machine is out of memory, not that a caller sent something large; the
 * daemon aborts with a message rather than limping on with half-built state.
 * Threads: any.
 */
#ifndef CAMSKEYD_MEM_H
#define CAMSKEYD_MEM_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);

/* Overwrite n bytes at p with zeros in a way the compiler cannot elide. */
void mem_wipe(void *p, size_t n);

#endif
