/*
 * test_limiter.c -- unit tests for the upstream call limiter: spacing, the
 * sliding-second bound under randomized drivers, utilization under backlog,
 * back-off and recovery, hints, the arrival margin (what widens it and what
 * must not: processing time), wait estimates, reload.
 *
 * Time is simulated: every test drives `now` by hand. Randomized tests use
 * one seed, printed, taken from $TEST_SEED when set.
 */
#include "limiter.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "mem.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
#define T0 (INT64_C(1000) * SEC)        /* an arbitrary monotonic start */
#define MAX_SENDS 100000

/* Uniform in [0, n). */
static int64_t rng_below(int64_t n)
{
	return (int64_t)(harness_rng_next() % (uint64_t)n);
}

static struct limiter *limiter_with(double rate, unsigned burst, unsigned margin_ms)
{
	struct limiter_options opt = { .rate = rate, .burst = burst, .margin_ms = margin_ms };

	return limiter_new(&opt, T0);
}

/* 1 when every n+1 consecutive times span more than a second. */
static int window_holds(const int64_t *t, size_t count, size_t n, size_t *ret_at)
{
	size_t i;

	for (i = 0; i + n < count; i++) {
		if (t[i + n] - t[i] <= SEC) {
			*ret_at = i;
			return 0;
		}
	}
	return 1;
}

TEST(fresh_limiter_allows_a_send_now)
{
	struct limiter *l = limiter_with(5, 1, 20);

	CHECK(limiter_next_send_us(l, T0) == T0);
	CHECK(limiter_next_send_us(l, T0 + 123) == T0 + 123);
	CHECK(limiter_throttles(l) == 0);
	CHECK(limiter_margin_us(l) == 20 * MS);
	limiter_free(l);
}

TEST(burst_one_spaces_calls_by_the_emission_interval)
{
	struct limiter *l = limiter_with(5, 1, 20);

	limiter_record_send(l, T0);
	CHECK(limiter_next_send_us(l, T0) == T0 + 200 * MS);
	CHECK(limiter_next_send_us(l, T0 + 50 * MS) == T0 + 200 * MS);
	limiter_record_send(l, T0 + 200 * MS);
	CHECK(limiter_next_send_us(l, T0 + 200 * MS) == T0 + 400 * MS);
	limiter_free(l);
}

TEST(burst_lets_that_many_calls_go_at_once)
{
	struct limiter *l = limiter_with(5, 3, 0);
	int i;

	for (i = 0; i < 3; i++) {
		CHECK(limiter_next_send_us(l, T0) == T0);
		limiter_record_send(l, T0);
	}
	CHECK(limiter_next_send_us(l, T0) > T0);
	limiter_free(l);
}

TEST(log_of_last_n_sends_bounds_every_sliding_second_whatever_the_burst)
{
	struct limiter *l = limiter_with(5, 10, 0);
	int64_t now = T0;
	int i;

	for (i = 0; i < 5; i++) {
		REQUIRE(limiter_next_send_us(l, now) == now);
		limiter_record_send(l, now);
	}
	/* The sixth must wait until the first is more than a second old. */
	CHECK(limiter_next_send_us(l, now) == T0 + SEC + 1);
	limiter_free(l);
}

/*
 * A driver that sometimes sends as early as allowed and sometimes lets a
 * random time pass and sends only if allowed then, with occasional arrival
 * observations, hints and throttles.
 */
static void drive_randomly(struct limiter *l, int64_t start, int64_t duration,
			   int64_t *sends, size_t *ret_count)
{
	int64_t now = start;
	size_t count = 0;

	while (now < start + duration && count < MAX_SENDS) {
		int64_t at, dice = rng_below(100);

		if (dice < 50) {
			at = limiter_next_send_us(l, now);
			if (at < now) {
				CHECK(at >= now);
				break;
			}
			now = at;
		} else {
			now += rng_below(500 * MS);
			if (limiter_next_send_us(l, now) != now)
				continue;
		}
		limiter_record_send(l, now);
		sends[count++] = now;
		dice = rng_below(1000);
		if (dice < 300)
			limiter_observe_arrival(l, rng_below(40 * MS), rng_below(5 * MS));
		else if (dice < 310)
			limiter_on_hint(l, now + 30 * MS, rng_below(3), rng_below(1000));
		else if (dice < 313)
			limiter_on_throttle(l, now + 30 * MS);
	}
	*ret_count = count;
}

TEST(randomized_driver_never_exceeds_floor_rate_in_any_sliding_second)
{
	static const double rates[] = { 1, 5, 7.5, 20 };
	static const unsigned bursts[] = { 1, 3, 10 };
	static const unsigned margins[] = { 0, 20 };
	int64_t *sends = xcalloc(MAX_SENDS, sizeof(*sends));
	size_t r, b, m, count, at = 0;

	for (r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
		for (b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
			for (m = 0; m < sizeof(margins) / sizeof(margins[0]); m++) {
				struct limiter *l = limiter_with(rates[r], bursts[b], margins[m]);
				size_t n = (size_t)floor(rates[r]);

				harness_rng_reset(r * 100 + b * 10 + m);
				drive_randomly(l, T0, 60 * SEC, sends, &count);
				CHECK(count > 0);
				if (!window_holds(sends, count, n, &at)) {
					fprintf(stderr, "  seed %" PRIu64 " rate %g burst %u margin %u: "
						"send %zu at %" PRId64 " and %zu at %" PRId64 "\n",
						harness_seed, rates[r], bursts[b], margins[m],
						at, sends[at] - T0, at + n, sends[at + n] - T0);
					CHECK(0);
				}
				limiter_free(l);
			}
		}
	}
	free(sends);
}

TEST(backlog_at_rate_5_uses_at_least_95_percent_of_the_quota)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int64_t now = T0;
	size_t sent = 0;

	for (;;) {
		now = limiter_next_send_us(l, now);
		if (now >= T0 + 60 * SEC)
			break;
		limiter_record_send(l, now);
		sent++;
	}
	CHECK((double)sent / 60.0 >= 0.95 * 5);
	CHECK(sent <= 5 * 60 + 5);
	limiter_free(l);
}

TEST(throttle_halves_the_rate_pauses_and_recovers_in_about_ten_seconds)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int64_t now = T0 + 5 * SEC;
	double r;

	limiter_on_throttle(l, now);
	CHECK(limiter_throttles(l) == 1);
	CHECK(fabs(limiter_effective_rate(l, now) - 2.5) < 1e-9);
	CHECK(limiter_next_send_us(l, now) >= now + SEC);
	/* Recovery is additive: rate/10 per second. */
	r = limiter_effective_rate(l, now + 2 * SEC);
	CHECK(fabs(r - 3.5) < 1e-6);
	CHECK(limiter_effective_rate(l, now + 10 * SEC) == 5);

	/* Spacing follows the effective rate: just after the pause, ~2.5/s. */
	limiter_record_send(l, now + SEC);
	CHECK(limiter_next_send_us(l, now + SEC) >= now + SEC + 330 * MS);
	limiter_free(l);
}

TEST(throttles_during_a_throttle_pause_do_not_halve_again)
{
	struct limiter *l = limiter_with(16, 1, 0);
	int64_t now = T0;
	int i;

	for (i = 0; i < 5; i++)
		limiter_on_throttle(l, now + i * 10 * MS);
	CHECK(limiter_throttles(l) == 5);
	CHECK(limiter_effective_rate(l, now + 40 * MS) < 8.1);
	CHECK(limiter_effective_rate(l, now + 40 * MS) > 7.9);
	limiter_free(l);
}

TEST(throttle_every_second_keeps_the_rate_low_but_not_below_a_sixteenth)
{
	struct limiter *l = limiter_with(16, 1, 0);
	int64_t now = T0;
	int i;

	/*
	 * Each throttle comes as the previous pause ends; with 1.6/s of
	 * recovery in between, the rate settles at 1.6/s.
	 */
	for (i = 0; i < 20; i++) {
		now += SEC;
		limiter_on_throttle(l, now);
		CHECK(limiter_effective_rate(l, now) >= 1.0);
	}
	CHECK(limiter_effective_rate(l, now) < 1.7);
	limiter_free(l);
}

TEST(hint_remain_zero_pauses_for_time_left)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int64_t now = T0 + SEC, at;

	limiter_on_hint(l, now, 0, 800);
	at = limiter_next_send_us(l, now);
	CHECK(at >= now + 800 * MS);
	CHECK(at <= now + 800 * MS + limiter_margin_us(l));
	/* A hint is not a throttle. */
	CHECK(limiter_throttles(l) == 0);
	CHECK(limiter_effective_rate(l, now) == 5);
	limiter_free(l);
}

TEST(hint_with_quota_left_or_absent_fields_changes_nothing)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int64_t now = T0 + SEC;

	limiter_on_hint(l, now, 3, 800);
	CHECK(limiter_next_send_us(l, now) == now);
	limiter_on_hint(l, now, -1, -1);
	CHECK(limiter_next_send_us(l, now) == now);
	limiter_on_hint(l, now, 0, -1);
	CHECK(limiter_next_send_us(l, now) == now);
	limiter_free(l);
}

TEST(throttle_pause_follows_a_longer_hinted_window)
{
	struct limiter *l = limiter_with(5, 1, 0);
	int64_t now = T0 + SEC;

	limiter_on_hint(l, now, 2, 1500);
	limiter_on_throttle(l, now + 10 * MS);
	CHECK(limiter_next_send_us(l, now + 10 * MS) >= now + 1500 * MS);
	limiter_free(l);
}

/* Sort in place (insertion sort: the arrays here are small or nearly sorted). */
static void sort_times(int64_t *t, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++) {
		int64_t v = t[i];

		for (j = i; j > 0 && t[j - 1] > v; j--)
			t[j] = t[j - 1];
		t[j] = v;
	}
}

/*
 * One backlogged call's path, as the daemon sees it: sent at the limiter's
 * decision, on the wire wire_us later (where the upstream counts it, plus
 * hidden_us the daemon cannot see), answered processing_us after that; the
 * daemon observes the call (wire delay, RTT variance) when the answer comes.
 */
struct call_model {
	int64_t wire_min_us, wire_max_us;      /* uniform */
	unsigned handshake_every;              /* every k-th call: handshake_us */
	int64_t handshake_us;
	int64_t rtt_var_us;                    /* reported; -1 unknown */
	int64_t hidden_max_us;                 /* uniform 0..max, not observed */
	int64_t processing_min_us, processing_max_us;
};

struct pending_call {
	int64_t answer_at_us;
	int64_t sent_us;
	int64_t wire_us;
};

#define PENDING_MAX 1024

struct backlog_run {
	size_t sends;
	int64_t *send_us;         /* each send decision */
	int64_t *margin_us;       /* the margin in force at that send */
	int64_t *arrival_us;      /* where the upstream counted it, sorted */
	int64_t max_margin_us;
};

static int64_t uniform(int64_t lo, int64_t hi)
{
	return hi > lo ? lo + rng_below(hi - lo + 1) : lo;
}

/* Drive a backlog for duration_us from T0; fills run (arrays of MAX_SENDS). */
static void run_backlog(struct limiter *l, const struct call_model *m, int64_t duration_us,
			struct backlog_run *run)
{
	struct pending_call pending[PENDING_MAX];
	size_t n_pending = 0, count = 0, i;
	int64_t now = T0;

	run->max_margin_us = 0;
	while (count < MAX_SENDS) {
		int64_t at = limiter_next_send_us(l, now);
		size_t first = n_pending;

		/* The earliest answer due before that send is observed first. */
		for (i = 0; i < n_pending; i++) {
			if (pending[i].answer_at_us <= at &&
			    (first == n_pending || pending[i].answer_at_us < pending[first].answer_at_us))
				first = i;
		}
		if (first < n_pending) {
			if (pending[first].answer_at_us > now)
				now = pending[first].answer_at_us;
			limiter_observe_arrival(l, pending[first].wire_us, m->rtt_var_us);
			/* What the engine does with a completed call's own delay. */
			limiter_place_arrival(l, pending[first].sent_us, pending[first].wire_us);
			pending[first] = pending[--n_pending];
			continue;
		}
		now = at;
		if (now >= T0 + duration_us)
			break;
		limiter_record_send(l, now);
		{
			int64_t wire = uniform(m->wire_min_us, m->wire_max_us);

			if (m->handshake_every && count % m->handshake_every == 0)
				wire = m->handshake_us;
			run->send_us[count] = now;
			run->margin_us[count] = limiter_margin_us(l);
			if (run->margin_us[count] > run->max_margin_us)
				run->max_margin_us = run->margin_us[count];
			run->arrival_us[count] = now + wire + uniform(0, m->hidden_max_us);
			REQUIRE(n_pending < PENDING_MAX);
			pending[n_pending].wire_us = wire;
			pending[n_pending].sent_us = now;
			pending[n_pending].answer_at_us =
				now + wire + uniform(m->processing_min_us, m->processing_max_us);
			n_pending++;
		}
		count++;
	}
	run->sends = count;
	sort_times(run->arrival_us, count);
}

static void backlog_run_init(struct backlog_run *run)
{
	run->send_us = xcalloc(MAX_SENDS, sizeof(int64_t));
	run->margin_us = xcalloc(MAX_SENDS, sizeof(int64_t));
	run->arrival_us = xcalloc(MAX_SENDS, sizeof(int64_t));
}

static void backlog_run_free(struct backlog_run *run)
{
	free(run->send_us);
	free(run->margin_us);
	free(run->arrival_us);
}

TEST(processing_time_spread_moves_nothing)
{
	/* Answers take 20..400 ms; the request is on the wire after 150 us. */
	static const struct call_model m = {
		.wire_min_us = 150, .wire_max_us = 150, .rtt_var_us = 0,
		.processing_min_us = 20 * MS, .processing_max_us = 400 * MS,
	};
	struct limiter *l = limiter_with(5, 1, 20);
	struct backlog_run run;

	backlog_run_init(&run);
	harness_rng_reset(11);
	run_backlog(l, &m, 60 * SEC, &run);
	CHECK(run.max_margin_us == 20 * MS);
	CHECK(limiter_margin_us(l) == 20 * MS);
	CHECK((double)run.sends / 60.0 >= 0.97 * 5);
	backlog_run_free(&run);
	limiter_free(l);
}

TEST(a_constant_wire_delay_however_long_moves_nothing)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int i;

	/* Every call waits 300 ms for its connection: all arrive equally late. */
	for (i = 0; i < 200; i++)
		limiter_observe_arrival(l, 300 * MS, -1);
	CHECK(limiter_margin_us(l) == 20 * MS);
	/* Unknown values are no evidence either way. */
	limiter_observe_arrival(l, -1, -1);
	limiter_observe_arrival(l, -1, 0);
	CHECK(limiter_margin_us(l) == 20 * MS);
	limiter_free(l);
}

TEST(handshake_spread_widens_the_margin_by_the_handshake_time)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int i;

	/* Every 8th call opens a connection: 80 ms of TCP + TLS handshake. */
	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, 100 + (i % 8 == 0 ? 80 * MS : 0), -1);
	CHECK(limiter_margin_us(l) == 20 * MS + 80 * MS);
	limiter_free(l);
}

TEST(send_time_spread_widens_the_margin_by_about_its_range)
{
	struct limiter *l = limiter_with(5, 1, 10);
	int64_t learned;
	int i;

	harness_rng_reset(7);
	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, rng_below(30 * MS + 1), -1);
	learned = limiter_margin_us(l) - 10 * MS;
	CHECK(learned >= 25 * MS);
	CHECK(learned <= 30 * MS);
	limiter_free(l);
}

TEST(rtt_variance_widens_the_margin_by_twice_its_value)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int i;

	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, 100, 5 * MS);
	CHECK(limiter_margin_us(l) == 20 * MS + 2 * 5 * MS);
	/* With a wire-delay spread, the two add up. */
	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, i % 2 ? 100 + 30 * MS : 100, 5 * MS);
	CHECK(limiter_margin_us(l) == 20 * MS + 30 * MS + 10 * MS);
	limiter_free(l);
}

TEST(one_slow_connection_set_up_in_a_window_is_ignored)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int i;

	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, i == 10 ? 900 * MS : 100, -1);
	CHECK(limiter_margin_us(l) == 20 * MS);
	limiter_free(l);
}

TEST(learned_margin_is_capped_and_forgets_old_observations)
{
	struct limiter *l = limiter_with(5, 1, 0);
	int i;

	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, (i % 2) ? 5 * SEC : 0, INT64_MAX);
	CHECK(limiter_margin_us(l) == 250 * MS);
	for (i = 0; i < 64; i++)
		limiter_observe_arrival(l, 40 * MS + i % 3, 0);
	CHECK(limiter_margin_us(l) <= 2);
	limiter_free(l);
}

/* 1 when every n+1 consecutive sends span more than 1 s + the margin then. */
static int windows_hold_with_margin(const struct backlog_run *run, size_t n, size_t *ret_at)
{
	size_t i;

	for (i = 0; i + n < run->sends; i++) {
		if (run->send_us[i + n] - run->send_us[i] <= SEC + run->margin_us[i + n]) {
			*ret_at = i;
			return 0;
		}
	}
	return 1;
}

TEST(a_first_calls_slow_set_up_moves_its_window_to_its_arrival)
{
	struct limiter *l = limiter_with(5, 1, 10);
	int64_t now = T0, sent[6];

	/* Nothing learned yet: the first call takes 60 ms to reach the wire. */
	for (int i = 0; i < 5; i++) {
		now = limiter_next_send_us(l, now);
		sent[i] = now;
		limiter_record_send(l, now);
		if (i == 0) {
			limiter_observe_arrival(l, 60 * MS, -1);
			limiter_place_arrival(l, sent[0], 60 * MS);
		}
	}
	sent[5] = limiter_next_send_us(l, now);
	/* The sixth call's window counts from the first call's arrival, not its send. */
	CHECK(sent[5] > sent[0] + 60 * MS + SEC);
	/* An entry that left the log, or an unknown delay, moves nothing. */
	limiter_place_arrival(l, sent[0] - 1, 500 * MS);
	limiter_place_arrival(l, sent[1], -1);
	CHECK(limiter_next_send_us(l, now) == sent[5]);
	limiter_free(l);
}

TEST(backlog_with_wire_delay_spread_keeps_every_sliding_second_at_rate)
{
	/*
	 * Sends take 0..30 ms to get on the wire, every 16th 60 ms (a new
	 * connection). More than two slow ones per 64 calls, so the estimator's
	 * rank sees them; a rarer tail is the configured margin's job.
	 */
	static const struct call_model m = {
		.wire_min_us = 0, .wire_max_us = 30 * MS, .handshake_every = 16,
		.handshake_us = 60 * MS, .rtt_var_us = 2 * MS,
		.processing_min_us = 20 * MS, .processing_max_us = 400 * MS,
	};
	static const unsigned bursts[] = { 1, 3 };
	struct backlog_run run;
	size_t b, at = 0;

	backlog_run_init(&run);
	for (b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
		struct limiter *l = limiter_with(5, bursts[b], 10);

		harness_rng_reset(21 + b);
		run_backlog(l, &m, 60 * SEC, &run);
		CHECK(run.sends >= 250);
		CHECK(run.max_margin_us >= 10 * MS + 60 * MS);
		if (!windows_hold_with_margin(&run, 5, &at)) {
			fprintf(stderr, "  seed %" PRIu64 " burst %u: send %zu at %" PRId64
				" and %zu at %" PRId64 ", margin %" PRId64 "\n", harness_seed,
				bursts[b], at, run.send_us[at] - T0, at + 5,
				run.send_us[at + 5] - T0, run.margin_us[at + 5]);
			CHECK(0);
		}
		/* Where the upstream counts them, too. */
		if (!window_holds(run.arrival_us, run.sends, 5, &at)) {
			fprintf(stderr, "  seed %" PRIu64 " burst %u: arrival %zu at %" PRId64
				" and %zu at %" PRId64 "\n", harness_seed, bursts[b], at,
				run.arrival_us[at] - T0, at + 5, run.arrival_us[at + 5] - T0);
			CHECK(0);
		}
		limiter_free(l);
	}
	backlog_run_free(&run);
}

TEST(unseen_arrival_delay_within_the_configured_margin_stays_within_quota)
{
	/* A relay the daemon cannot see holds each request 0..30 ms more. */
	static const struct call_model m = {
		.wire_min_us = 100, .wire_max_us = 100, .rtt_var_us = 0,
		.hidden_max_us = 30 * MS,
		.processing_min_us = 20 * MS, .processing_max_us = 400 * MS,
	};
	struct limiter *l = limiter_with(5, 1, 40);
	struct backlog_run run;
	size_t at = 0;

	backlog_run_init(&run);
	harness_rng_reset(31);
	run_backlog(l, &m, 60 * SEC, &run);
	CHECK(limiter_margin_us(l) == 40 * MS);
	CHECK(window_holds(run.arrival_us, run.sends, 5, &at));
	CHECK((double)run.sends / 60.0 >= 0.95 * 5);
	backlog_run_free(&run);
	limiter_free(l);
}

TEST(backlog_with_zero_spread_uses_at_least_97_percent_of_the_quota)
{
	static const struct call_model m = {
		.wire_min_us = 2 * MS, .wire_max_us = 2 * MS, .rtt_var_us = -1,
		.processing_min_us = 50 * MS, .processing_max_us = 50 * MS,
	};
	struct limiter *l = limiter_with(5, 1, 20);
	struct backlog_run run;

	backlog_run_init(&run);
	harness_rng_reset(41);
	run_backlog(l, &m, 60 * SEC, &run);
	CHECK((double)run.sends / 60.0 >= 0.97 * 5);
	CHECK(run.sends <= 5 * 60 + 5);
	backlog_run_free(&run);
	limiter_free(l);
}

TEST(wait_estimate_is_monotonic_and_about_two_seconds_for_ten_ahead_at_rate_5)
{
	struct limiter *l = limiter_with(5, 1, 20);
	int64_t now = T0, previous = -1, e;
	uint64_t ahead;

	e = limiter_wait_estimate_us(l, now, 10);
	CHECK(e >= 1900 * MS && e <= 2300 * MS);
	CHECK(limiter_wait_estimate_us(l, now, 0) == 0);

	limiter_record_send(l, now);
	limiter_on_throttle(l, now + 100 * MS);
	for (ahead = 0; ahead < 2000; ahead++) {
		e = limiter_wait_estimate_us(l, now + 100 * MS, ahead);
		CHECK(e >= previous);
		previous = e;
	}
	CHECK(limiter_wait_estimate_us(l, now, UINT64_MAX) == INT64_MAX);
	limiter_free(l);
}

TEST(wait_estimate_matches_a_backlogged_schedule)
{
	struct limiter *l = limiter_with(5, 1, 20);
	struct limiter *probe = limiter_with(5, 1, 20);
	int64_t now = T0;
	uint64_t k;

	for (k = 0; k < 30; k++) {
		int64_t estimate = limiter_wait_estimate_us(probe, T0, k);

		now = limiter_next_send_us(l, now);
		CHECK(llabs((now - T0) - estimate) <= 100 * MS);
		limiter_record_send(l, now);
	}
	limiter_free(l);
	limiter_free(probe);
}

static size_t sends_between(struct limiter *l, int64_t *now, int64_t until, int64_t *sends)
{
	size_t count = 0;

	for (;;) {
		*now = limiter_next_send_us(l, *now);
		if (*now >= until)
			return count;
		limiter_record_send(l, *now);
		sends[count++] = *now;
	}
}

TEST(reconfigure_from_5_to_2_lowers_throughput_and_keeps_the_bound)
{
	struct limiter *l = limiter_with(5, 3, 0);
	struct limiter_options slower = { .rate = 2, .burst = 3, .margin_ms = 0 };
	struct limiter_options faster = { .rate = 5, .burst = 3, .margin_ms = 0 };
	int64_t *sends = xcalloc(MAX_SENDS, sizeof(*sends));
	int64_t now = T0;
	size_t before, after, at = 0;

	before = sends_between(l, &now, T0 + 10 * SEC, sends);
	limiter_configure(l, &slower, now);
	/* The kept log still bounds the first second after the reload. */
	CHECK(limiter_next_send_us(l, now) >= sends[before - 2] + SEC);
	after = sends_between(l, &now, T0 + 20 * SEC, sends);
	CHECK(before >= 45);
	CHECK(after <= 2 * 10 + 1);
	CHECK(after >= 18);
	CHECK(window_holds(sends, after, 2, &at));

	limiter_configure(l, &faster, now);
	after = sends_between(l, &now, T0 + 30 * SEC, sends);
	CHECK(after >= 45);
	CHECK(window_holds(sends, after, 5, &at));
	free(sends);
	limiter_free(l);
}

TEST(fractional_rate_below_one_spaces_calls_by_more_than_a_second)
{
	struct limiter *l = limiter_with(0.5, 1, 0);

	limiter_record_send(l, T0);
	CHECK(limiter_next_send_us(l, T0) == T0 + 2 * SEC);
	limiter_free(l);
}

int main(void)
{
	harness_seed_init();

	RUN(fresh_limiter_allows_a_send_now);
	RUN(burst_one_spaces_calls_by_the_emission_interval);
	RUN(burst_lets_that_many_calls_go_at_once);
	RUN(log_of_last_n_sends_bounds_every_sliding_second_whatever_the_burst);
	RUN(randomized_driver_never_exceeds_floor_rate_in_any_sliding_second);
	RUN(backlog_at_rate_5_uses_at_least_95_percent_of_the_quota);
	RUN(throttle_halves_the_rate_pauses_and_recovers_in_about_ten_seconds);
	RUN(throttles_during_a_throttle_pause_do_not_halve_again);
	RUN(throttle_every_second_keeps_the_rate_low_but_not_below_a_sixteenth);
	RUN(hint_remain_zero_pauses_for_time_left);
	RUN(hint_with_quota_left_or_absent_fields_changes_nothing);
	RUN(throttle_pause_follows_a_longer_hinted_window);
	RUN(processing_time_spread_moves_nothing);
	RUN(a_constant_wire_delay_however_long_moves_nothing);
	RUN(handshake_spread_widens_the_margin_by_the_handshake_time);
	RUN(send_time_spread_widens_the_margin_by_about_its_range);
	RUN(rtt_variance_widens_the_margin_by_twice_its_value);
	RUN(one_slow_connection_set_up_in_a_window_is_ignored);
	RUN(learned_margin_is_capped_and_forgets_old_observations);
	RUN(a_first_calls_slow_set_up_moves_its_window_to_its_arrival);
	RUN(backlog_with_wire_delay_spread_keeps_every_sliding_second_at_rate);
	RUN(unseen_arrival_delay_within_the_configured_margin_stays_within_quota);
	RUN(backlog_with_zero_spread_uses_at_least_97_percent_of_the_quota);
	RUN(wait_estimate_is_monotonic_and_about_two_seconds_for_ten_ahead_at_rate_5);
	RUN(wait_estimate_matches_a_backlogged_schedule);
	RUN(reconfigure_from_5_to_2_lowers_throughput_and_keeps_the_bound);
	RUN(fractional_rate_below_one_spaces_calls_by_more_than_a_second);
	return harness_done();
}
