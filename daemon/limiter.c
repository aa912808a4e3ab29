/*
 * limiter.c -- when the next upstream call may go (see limiter.h).
 *
 * State, all in monotonic microseconds:
 *  - tat_us: the GCRA theoretical arrival time. A send at t is allowed when
 *    t >= tat - (burst - 1) * T, T = ceil(1e6 / effective rate); recording it
 *    sets tat = max(tat, t) + T. T is rounded up so rounding never speeds up.
 *  - a ring of the last N = max(1, floor(rate)) send times. When it is full,
 *    a send at t needs t > oldest + 1 s + margin (strictly: the header
 *    promises the oldest is "more than" 1 s + margin old), so any N+1
 *    consecutive sends span more than a second at the sender, and more than
 *    a second at the upstream as long as arrival jitter stays under the
 *    margin. This rule alone bounds every sliding second, whatever the burst,
 *    the back-off state or a reload; GCRA only spreads the calls out.
 *  - pause: paused_until_us, set by a throttle or a Remain:0 hint.
 *  - back-off: after a throttle the effective rate is
 *        min(rate, rate_after_throttle + rate/10 * seconds since throttle)
 *    computed lazily from `now`, so there is no timer and nothing to tick.
 *
 * Jitter estimate (the part of the margin we learn): the latencies of the
 * last LIMITER_LATENCY_WINDOW calls are kept; the jitter is the spread
 * between a high rank (dropping the top n/32 observations, i.e. the two
 * largest of 64, ~p97) and the lowest of them, capped at LIMITER_JITTER_MAX_US.
 * A windowed estimate forgets a slow spell after 64 calls, where a decayed
 * min/max would keep a stale extreme for an arbitrary time; ignoring the
 * top two keeps one timeout from costing the next 64 calls 250 ms each.
 * Latency spread overestimates the spread of one-way arrival delay (a call
 * arrives somewhere inside its round trip), which is the safe side; the
 * residue above the chosen rank is what the configured margin_ms is for.
 *
 * Decisions the header leaves open:
 *  - Several throttles answering calls that were all sent before the first
 *    back-off took effect are one event: a throttle while a throttle pause is
 *    still running extends the pause and is counted, but does not halve the
 *    rate again (otherwise a burst of in-flight calls would drop us to
 *    rate/16 at once).
 *  - A hint with Remain:0 pauses until the upstream window resets (plus the
 *    margin) but does not halve the rate: at full utilization the last call
 *    of every window legitimately reports Remain:0, and halving on it would
 *    throw away half the quota. Only System.LimitControl backs off.
 *  - The pause after a throttle is max(1 s, time left in the window as last
 *    reported by a hint, if that is still in the future).
 *  - A hint's TimeLeft is capped at LIMITER_HINT_MAX_MS so a garbled
 *    answer cannot stop all calls for hours.
 *
 * Owns: its struct and the send log. Pure: no clocks, no logging.
 * Threads: one owner (the engine thread).
 */
#include "limiter.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define USEC_PER_SEC INT64_C(1000000)

/* Latencies kept for the jitter estimate. */
#define LIMITER_LATENCY_WINDOW 64
/* Largest learned jitter added to the window. */
#define LIMITER_JITTER_MAX_US (250 * INT64_C(1000))
/* Largest pause a single hint can ask for. */
#define LIMITER_HINT_MAX_MS INT64_C(60000)

struct limiter {
	double rate;
	unsigned burst;
	unsigned margin_ms;

	int64_t tat_us;

	int64_t *log_us;          /* ring of send times */
	size_t log_cap;           /* N = max(1, floor(rate)) */
	size_t log_head;          /* index of the oldest entry */
	size_t log_count;

	int64_t latency_us[LIMITER_LATENCY_WINDOW];
	size_t latency_count;
	size_t latency_next;
	int64_t jitter_us;

	int64_t paused_until_us;

	bool backed_off;
	double rate_after_throttle;
	int64_t last_throttle_us;
	int64_t throttle_pause_until_us;

	bool hint_known;
	int64_t hint_reset_at_us;  /* when the upstream said its window resets */

	uint64_t throttles;
};

static size_t log_size_for(double rate)
{
	double n = floor(rate);

	if (n < 1)
		return 1;
	/* A rate this high is nonsense for this API; keep the ring bounded. */
	if (n > 1e6)
		return 1000000;
	return (size_t)n;
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

static int64_t sat_add(int64_t a, int64_t b)
{
	if (b > 0 && a > INT64_MAX - b)
		return INT64_MAX;
	if (b < 0 && a < INT64_MIN - b)
		return INT64_MIN;
	return a + b;
}

static double effective_rate(const struct limiter *l, int64_t now_us)
{
	double elapsed_s, r;

	if (!l->backed_off)
		return l->rate;
	elapsed_s = now_us > l->last_throttle_us ?
		(double)(now_us - l->last_throttle_us) / 1e6 : 0.0;
	r = l->rate_after_throttle + l->rate / 10.0 * elapsed_s;
	return r < l->rate ? r : l->rate;
}

/* Emission interval at the current effective rate, rounded up. */
static int64_t interval_us(const struct limiter *l, int64_t now_us)
{
	return (int64_t)ceil(1e6 / effective_rate(l, now_us));
}

static int64_t log_oldest(const struct limiter *l)
{
	return l->log_us[l->log_head];
}

static void apply_options(struct limiter *l, const struct limiter_options *opt)
{
	assert(opt->rate > 0 && isfinite(opt->rate));
	l->rate = opt->rate;
	l->burst = opt->burst ? opt->burst : 1;
	l->margin_ms = opt->margin_ms;
}

struct limiter *limiter_new(const struct limiter_options *opt, int64_t now_us)
{
	struct limiter *l = xcalloc(1, sizeof(*l));

	apply_options(l, opt);
	l->tat_us = now_us;
	l->log_cap = log_size_for(l->rate);
	l->log_us = xcalloc(l->log_cap, sizeof(*l->log_us));
	l->paused_until_us = now_us;
	return l;
}

void limiter_free(struct limiter *l)
{
	if (!l)
		return;
	free(l->log_us);
	free(l);
}

/* Resize the ring keeping the most recent sends, oldest first. */
static void resize_log(struct limiter *l, size_t cap)
{
	int64_t *log_us;
	size_t keep, skip, i;

	if (cap == l->log_cap)
		return;
	log_us = xcalloc(cap, sizeof(*log_us));
	keep = l->log_count < cap ? l->log_count : cap;
	skip = l->log_count - keep;
	for (i = 0; i < keep; i++)
		log_us[i] = l->log_us[(l->log_head + skip + i) % l->log_cap];
	free(l->log_us);
	l->log_us = log_us;
	l->log_cap = cap;
	l->log_head = 0;
	l->log_count = keep;
}

void limiter_configure(struct limiter *l, const struct limiter_options *opt, int64_t now_us)
{
	double old_rate = l->rate;

	/* Keep the back-off where it was, as a fraction of the rate. */
	if (l->backed_off) {
		double fraction = effective_rate(l, now_us) / old_rate;

		apply_options(l, opt);
		l->rate_after_throttle = fraction * l->rate;
		if (l->rate_after_throttle < l->rate / 16.0)
			l->rate_after_throttle = l->rate / 16.0;
		l->last_throttle_us = now_us;
	} else {
		apply_options(l, opt);
	}
	resize_log(l, log_size_for(l->rate));
}

int64_t limiter_next_send_us(struct limiter *l, int64_t now_us)
{
	int64_t t = now_us;
	int64_t early_us = INT64_MAX, gcra_us;
	int64_t spacing_us = interval_us(l, now_us);

	if (l->burst - 1 <= (uint64_t)(INT64_MAX / spacing_us))
		early_us = (int64_t)(l->burst - 1) * spacing_us;
	gcra_us = sat_add(l->tat_us, -early_us);

	t = max64(t, gcra_us);
	if (l->log_count == l->log_cap)
		t = max64(t, sat_add(log_oldest(l), USEC_PER_SEC + limiter_margin_us(l) + 1));
	t = max64(t, l->paused_until_us);
	return t;
}

void limiter_record_send(struct limiter *l, int64_t now_us)
{
	l->tat_us = max64(l->tat_us, now_us) + interval_us(l, now_us);
	if (l->log_count == l->log_cap) {
		l->log_us[l->log_head] = now_us;
		l->log_head = (l->log_head + 1) % l->log_cap;
	} else {
		l->log_us[(l->log_head + l->log_count) % l->log_cap] = now_us;
		l->log_count++;
	}
}

int64_t limiter_wait_estimate_us(struct limiter *l, int64_t now_us, uint64_t ahead)
{
	int64_t first_us = limiter_next_send_us(l, now_us) - now_us;
	int64_t spacing_us = interval_us(l, now_us);
	int64_t window_us = (USEC_PER_SEC + limiter_margin_us(l)) / (int64_t)l->log_cap;

	if (window_us > spacing_us)
		spacing_us = window_us;
	if (ahead > (uint64_t)((INT64_MAX - first_us) / spacing_us))
		return INT64_MAX;
	return first_us + (int64_t)ahead * spacing_us;
}

static void update_jitter(struct limiter *l)
{
	int64_t sorted[LIMITER_LATENCY_WINDOW];
	size_t n = l->latency_count, i, j, high;
	int64_t jitter;

	memcpy(sorted, l->latency_us, n * sizeof(sorted[0]));
	for (i = 1; i < n; i++) {
		int64_t v = sorted[i];

		for (j = i; j > 0 && sorted[j - 1] > v; j--)
			sorted[j] = sorted[j - 1];
		sorted[j] = v;
	}
	high = n - 1 - n / 32;
	jitter = sorted[high] - sorted[0];
	l->jitter_us = jitter < LIMITER_JITTER_MAX_US ? jitter : LIMITER_JITTER_MAX_US;
}

void limiter_observe_latency(struct limiter *l, int64_t latency_us)
{
	if (latency_us < 0)
		latency_us = 0;
	l->latency_us[l->latency_next] = latency_us;
	l->latency_next = (l->latency_next + 1) % LIMITER_LATENCY_WINDOW;
	if (l->latency_count < LIMITER_LATENCY_WINDOW)
		l->latency_count++;
	update_jitter(l);
}

void limiter_on_throttle(struct limiter *l, int64_t now_us)
{
	int64_t pause_us = USEC_PER_SEC;

	l->throttles++;
	if (l->hint_known && l->hint_reset_at_us - now_us > pause_us)
		pause_us = l->hint_reset_at_us - now_us;
	if (now_us >= l->throttle_pause_until_us) {
		double halved = effective_rate(l, now_us) / 2.0;

		if (halved < l->rate / 16.0)
			halved = l->rate / 16.0;
		l->rate_after_throttle = halved;
		l->last_throttle_us = now_us;
		l->backed_off = true;
	}
	l->throttle_pause_until_us = max64(l->throttle_pause_until_us, now_us + pause_us);
	l->paused_until_us = max64(l->paused_until_us, now_us + pause_us);
}

void limiter_on_hint(struct limiter *l, int64_t now_us, int64_t remain, int64_t time_left_ms)
{
	if (time_left_ms < 0)
		return;
	if (time_left_ms > LIMITER_HINT_MAX_MS)
		time_left_ms = LIMITER_HINT_MAX_MS;
	l->hint_known = true;
	l->hint_reset_at_us = now_us + time_left_ms * 1000;
	if (remain == 0 && time_left_ms > 0)
		l->paused_until_us = max64(l->paused_until_us,
					   l->hint_reset_at_us + limiter_margin_us(l));
}

double limiter_effective_rate(struct limiter *l, int64_t now_us)
{
	return effective_rate(l, now_us);
}

int64_t limiter_margin_us(const struct limiter *l)
{
	return (int64_t)l->margin_ms * 1000 + l->jitter_us;
}

uint64_t limiter_throttles(const struct limiter *l)
{
	return l->throttles;
}

unsigned limiter_window_remaining(struct limiter *l, int64_t now_us)
{
	int64_t window_start = now_us - USEC_PER_SEC - limiter_margin_us(l);
	size_t used = 0;

	for (size_t i = 0; i < l->log_count; i++) {
		if (l->log_us[(l->log_head + i) % l->log_cap] > window_start)
			used++;
	}
	if (now_us < l->paused_until_us || used >= l->log_cap)
		return 0;
	return (unsigned)(l->log_cap - used);
}
