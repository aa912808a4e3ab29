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
 * Arrival estimate (the part of the margin we learn). The upstream counts
 * a call when its request arrives; what moves that arrival relative to our
 * send decision (the time limiter_record_send() logs) is
 *   (a) the send-to-wire delay: from the decision until the request's bytes
 *       were written (a queue in the multi handle, DNS, TCP connect, the TLS
 *       handshake, a write the socket could not take at once), and
 *   (b) the path's one-way delay after that.
 * The upstream's processing time and the answer's way back come after the
 * arrival and say nothing about it, so they are never observed at all (the
 * API does not take them). Each finished call reports (a) and the kernel's
 * RTT variance for its connection (struct tcp_info tcpi_rttvar, a smoothed
 * mean deviation of round trips). The last LIMITER_ARRIVAL_WINDOW of each
 * are kept, and
 *     learned = spread(wire delays) + LIMITER_RTT_VAR_FACTOR * high(rtt var)
 * capped at LIMITER_LEARNED_MAX_US, where spread is a high rank minus the
 * lowest and high is that rank (the rank drops the top n/32 observations,
 * i.e. the two largest of 64, ~p97).
 *  - The spread, not the level, matters: a constant delay moves every
 *    arrival alike and keeps the spacing. The dangerous case is the oldest
 *    call of a window arriving late (a new connection's handshake) while a
 *    later one arrives early (a reused connection), and that difference is
 *    at most the spread.
 *  - Why 2 x rttvar: two calls' one-way delays, each varying with about
 *    half a round trip's variance, differ by about one round trip's standard
 *    deviation, ~1.25 mean deviations; two mean deviations cover that to
 *    ~1.6 sigma alone. The kernel's figure itself overstates the forward
 *    path's jitter (it includes the way back and the peer's delayed ACKs),
 *    and the configured margin_ms takes the residue, so more would only
 *    waste quota; TCP's RTO uses 4x because a spurious retransmission costs
 *    far more than a wasted slot does here.
 *  - A window forgets a slow spell after 64 calls, where a decayed min/max
 *    would keep a stale extreme for an arbitrary time; ignoring the top two
 *    keeps one slow connection set-up from costing the next 64 calls.
 *  - What the daemon cannot see (a relay or a gateway queue in front of the
 *    upstream) is what margin_ms (--rate-margin-ms) is for.
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

/* Observations kept for the arrival estimate (each kind). */
#define LIMITER_ARRIVAL_WINDOW 64
/* Largest learned part of the margin. */
#define LIMITER_LEARNED_MAX_US (250 * INT64_C(1000))
/* How many RTT mean deviations the learned margin adds (see above). */
#define LIMITER_RTT_VAR_FACTOR 2
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

	struct limiter_samples {
		int64_t us[LIMITER_ARRIVAL_WINDOW];
		size_t count;
		size_t next;
	} wire_delay, rtt_var;
	int64_t learned_us;       /* the learned part of the margin */

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

static void samples_add(struct limiter_samples *s, int64_t v)
{
	s->us[s->next] = v;
	s->next = (s->next + 1) % LIMITER_ARRIVAL_WINDOW;
	if (s->count < LIMITER_ARRIVAL_WINDOW)
		s->count++;
}

/*
 * The high rank (dropping the top n/32) of the samples, and their lowest.
 * Both 0 when there are none.
 */
static void samples_rank(const struct limiter_samples *s, int64_t *ret_high, int64_t *ret_low)
{
	int64_t sorted[LIMITER_ARRIVAL_WINDOW];
	size_t n = s->count, i, j;

	if (n == 0) {
		*ret_high = *ret_low = 0;
		return;
	}
	memcpy(sorted, s->us, n * sizeof(sorted[0]));
	for (i = 1; i < n; i++) {
		int64_t v = sorted[i];

		for (j = i; j > 0 && sorted[j - 1] > v; j--)
			sorted[j] = sorted[j - 1];
		sorted[j] = v;
	}
	*ret_high = sorted[n - 1 - n / 32];
	*ret_low = sorted[0];
}

static void update_learned(struct limiter *l)
{
	int64_t wire_high, wire_low, var_high, var_low, learned;

	samples_rank(&l->wire_delay, &wire_high, &wire_low);
	samples_rank(&l->rtt_var, &var_high, &var_low);
	/* Each term is at most a minute (see limiter_observe_arrival): no overflow. */
	learned = (wire_high - wire_low) + LIMITER_RTT_VAR_FACTOR * var_high;
	l->learned_us = learned < LIMITER_LEARNED_MAX_US ? learned : LIMITER_LEARNED_MAX_US;
}

/* Observations past this are clamped: far beyond the cap anyway. */
#define LIMITER_OBSERVATION_MAX_US (60 * USEC_PER_SEC)

void limiter_place_arrival(struct limiter *l, int64_t sent_at_us, int64_t wire_delay_us)
{
	size_t i, at = SIZE_MAX;

	if (wire_delay_us <= 0 || sent_at_us < 0)
		return;
	/* The log is in order (oldest first) and holds at most floor(rate) entries. */
	for (i = 0; i < l->log_count; i++) {
		if (l->log_us[(l->log_head + i) % l->log_cap] == sent_at_us) {
			at = i;
			break;
		}
	}
	if (at == SIZE_MAX)
		return;
	l->log_us[(l->log_head + at) % l->log_cap] = sat_add(sent_at_us, wire_delay_us);
	/* Keep it in order: the moved entry only goes later. */
	for (i = at; i + 1 < l->log_count; i++) {
		int64_t *a = &l->log_us[(l->log_head + i) % l->log_cap];
		int64_t *b = &l->log_us[(l->log_head + i + 1) % l->log_cap];
		int64_t t;

		if (*a <= *b)
			break;
		t = *a;
		*a = *b;
		*b = t;
	}
}

void limiter_observe_arrival(struct limiter *l, int64_t wire_delay_us, int64_t rtt_var_us)
{
	if (wire_delay_us < 0 && rtt_var_us < 0)
		return;
	if (wire_delay_us >= 0)
		samples_add(&l->wire_delay, wire_delay_us < LIMITER_OBSERVATION_MAX_US ?
					    wire_delay_us : LIMITER_OBSERVATION_MAX_US);
	if (rtt_var_us >= 0)
		samples_add(&l->rtt_var, rtt_var_us < LIMITER_OBSERVATION_MAX_US ?
					 rtt_var_us : LIMITER_OBSERVATION_MAX_US);
	update_learned(l);
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

void limiter_on_hint(struct limiter *l, int64_t at_us, int64_t remain, int64_t time_left_ms)
{
	if (time_left_ms < 0)
		return;
	if (time_left_ms > LIMITER_HINT_MAX_MS)
		time_left_ms = LIMITER_HINT_MAX_MS;
	l->hint_known = true;
	l->hint_reset_at_us = at_us + time_left_ms * 1000;
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
	return (int64_t)l->margin_ms * 1000 + l->learned_us;
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
