/*
 * test_limiter.c -- unit tests for the upstream call limiter: spacing, the
 * sliding-second bound under randomized drivers, utilization under backlog,
 * back-off and recovery, hints, the jitter margin, wait estimates, reload.
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
 * random time pass and sends only if allowed then, with occasional latency
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
			limiter_observe_latency(l, 20 * MS + rng_below(40 * MS));
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

TEST(latency_spread_raises_margin_and_arrivals_stay_within_quota)
{
	struct limiter *l = limiter_with(5, 3, 10);
	int64_t *arrivals = xcalloc(MAX_SENDS, sizeof(*arrivals));
	int64_t now = T0, jitter;
	size_t count = 0, at = 0, i, j;
	int i64;

	harness_rng_reset(7);
	for (i64 = 0; i64 < 64; i64++)
		limiter_observe_latency(l, rng_below(30 * MS + 1));
	jitter = limiter_margin_us(l) - 10 * MS;
	CHECK(jitter >= 25 * MS);
	CHECK(jitter <= 30 * MS);

	while (count < MAX_SENDS) {
		int64_t latency = rng_below(30 * MS + 1);

		now = limiter_next_send_us(l, now);
		if (now >= T0 + 60 * SEC)
			break;
		limiter_record_send(l, now);
		arrivals[count++] = now + latency;
		limiter_observe_latency(l, latency);
	}
	CHECK(count >= 250);
	/* The upstream sees arrivals in arrival order. */
	for (i = 1; i < count; i++) {
		int64_t v = arrivals[i];

		for (j = i; j > 0 && arrivals[j - 1] > v; j--)
			arrivals[j] = arrivals[j - 1];
		arrivals[j] = v;
	}
	if (!window_holds(arrivals, count, 5, &at)) {
		fprintf(stderr, "  seed %" PRIu64 ": arrival %zu at %" PRId64 " and %zu at %" PRId64 "\n",
			harness_seed, at, arrivals[at] - T0, at + 5, arrivals[at + 5] - T0);
		CHECK(0);
	}
	free(arrivals);
	limiter_free(l);
}

TEST(jitter_is_capped_and_forgets_old_latencies)
{
	struct limiter *l = limiter_with(5, 1, 0);
	int i;

	for (i = 0; i < 64; i++)
		limiter_observe_latency(l, (i % 2) ? 5 * SEC : 0);
	CHECK(limiter_margin_us(l) == 250 * MS);
	for (i = 0; i < 64; i++)
		limiter_observe_latency(l, 40 * MS + i % 3);
	CHECK(limiter_margin_us(l) <= 2);
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
	RUN(latency_spread_raises_margin_and_arrivals_stay_within_quota);
	RUN(jitter_is_capped_and_forgets_old_latencies);
	RUN(wait_estimate_is_monotonic_and_about_two_seconds_for_ten_ahead_at_rate_5);
	RUN(wait_estimate_matches_a_backlogged_schedule);
	RUN(reconfigure_from_5_to_2_lowers_throughput_and_keeps_the_bound);
	RUN(fractional_rate_below_one_spaces_calls_by_more_than_a_second);
	return harness_done();
}
