/*
 * harness.h -- the unit-test harness: one file per module, tests named by
 * behaviour, a line per test, a closing "# N passed, N failed, N skipped"
 * line that tests/run-tests.sh adds up.
 *
 *   TEST(empty_bucket_reports_wait_until_next_token) { CHECK(x == 1); }
 *   int main(void) { RUN(empty_bucket_reports_wait_until_next_token); return harness_done(); }
 *
 * CHECK records a failure and goes on; REQUIRE stops the test. SKIP(reason)
 * ends a test that cannot run here (root, a missing tool): it reports
 * "ok - name # SKIP reason" (TAP's directive) and counts as skipped, never
 * as passed. A failure recorded before the SKIP still fails the test.
 * TEST_DATA_DIR is the tests/data directory (overridable by $TEST_DATA_DIR).
 */
#ifndef CAMSKEYD_HARNESS_H
#define CAMSKEYD_HARNESS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int harness_passed, harness_failed, harness_skipped, harness_current_failed;
static int harness_current_skipped;
static char harness_skip_reason[200];

#define TEST(name) static void name(void)

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			harness_current_failed = 1;                                    \
			fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
				#cond);                                                \
		}                                                                      \
	} while (0)

#define REQUIRE(cond)                                                                  \
	do {                                                                           \
		if (!(cond)) {                                                         \
			harness_current_failed = 1;                                    \
			fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, \
				#cond);                                                \
			return;                                                        \
		}                                                                      \
	} while (0)

#define CHECK_STR(a, b)                                                                \
	do {                                                                           \
		const char *a_ = (a), *b_ = (b);                                       \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                               \
			harness_current_failed = 1;                                    \
			fprintf(stderr, "  %s:%d: %s == %s failed:\n    got      [%s]\n    expected [%s]\n", \
				__FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)",        \
				b_ ? b_ : "(null)");                                   \
		}                                                                      \
	} while (0)

#define SKIP(reason)                                                                   \
	do {                                                                           \
		snprintf(harness_skip_reason, sizeof(harness_skip_reason), "%s", (reason)); \
		harness_current_skipped = 1;                                           \
		return;                                                                \
	} while (0)

#define RUN(name)                                                                      \
	do {                                                                           \
		harness_current_failed = 0;                                            \
		harness_current_skipped = 0;                                           \
		name();                                                                \
		if (harness_current_failed) {                                          \
			harness_failed++;                                              \
			printf("not ok - %s\n", #name);                               \
		} else if (harness_current_skipped) {                                  \
			harness_skipped++;                                             \
			printf("ok - %s # SKIP %s\n", #name, harness_skip_reason);    \
		} else {                                                               \
			harness_passed++;                                              \
			printf("ok - %s\n", #name);                                   \
		}                                                                      \
		fflush(stdout);                                                        \
	} while (0)

static inline int harness_done(void)
{
	printf("# %d passed, %d failed, %d skipped\n", harness_passed, harness_failed,
	       harness_skipped);
	return harness_failed ? 1 : 0;
}

/*
 * Randomized tests: one seed per run, printed, taken from $TEST_SEED when
 * set so a failure replays; a xorshift64* stream reset per test with a salt.
 */
static uint64_t harness_seed __attribute__((unused));
static uint64_t harness_rng_state __attribute__((unused));

static inline void harness_seed_init(void)
{
	const char *env = getenv("TEST_SEED");

	harness_seed = (uint64_t)time(NULL);
	if (env && *env) {
		char *end;

		harness_seed = strtoull(env, &end, 10);
		if (*end)
			harness_seed = 1;
	}
	printf("# seed %" PRIu64 " (set TEST_SEED to replay)\n", harness_seed);
}

static inline void harness_rng_reset(uint64_t salt)
{
	harness_rng_state = harness_seed ^ (salt * UINT64_C(0x9e3779b97f4a7c15));
	if (!harness_rng_state)
		harness_rng_state = 1;
}

static inline uint64_t harness_rng_next(void)
{
	harness_rng_state ^= harness_rng_state >> 12;
	harness_rng_state ^= harness_rng_state << 25;
	harness_rng_state ^= harness_rng_state >> 27;
	return harness_rng_state * UINT64_C(2685821657736338717);
}

static inline const char *harness_data_dir(void)
{
	const char *d = getenv("TEST_DATA_DIR");

	return d && *d ? d : "tests/data";
}

#endif
