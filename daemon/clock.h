/*
 * clock.h -- the two clocks, read in one way. Only the modules that own a
 * loop or a request's start read them (main, http, proxy's engine); the pure
 * modules (limiter, queue, cache freshness, signer) take time as an argument
 * so tests drive it by hand. Threads: any.
 */
#ifndef CAMSKEYD_CLOCK_H
#define CAMSKEYD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic microseconds: deadlines, the limiter, durations. */
static inline int64_t clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall-clock seconds since the epoch: cache times, signatures. */
static inline int64_t clock_wall_s(void)
{
	return (int64_t)time(NULL);
}

#endif
