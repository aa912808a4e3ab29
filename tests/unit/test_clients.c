/*
 * test_clients.c -- the client registry: ids in config order, stable across
 * reloads that remove, reorder and add clients (names never change); the
 * settings of the current snapshot (weight, max-wait-ms, tokens) and old
 * snapshots still readable; the dynamic-name bound and the shared overflow
 * id; concurrent lookups from several threads agree on every id.
 *
 * The registry is process-wide: each test starts with clients_fini() and
 * clients_init().
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clients.h"
#include "harness.h"

#define TOKEN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOKEN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static struct config cfg;

static void fresh(void)
{
	clients_fini();
	clients_init();
}

/* cfg's clients become names[0..n), weight = 10 + position, no tokens. */
static void set_clients(const char *const *names, unsigned n)
{
	memset(&cfg, 0, sizeof(cfg));
	for (unsigned i = 0; i < n; i++) {
		snprintf(cfg.clients[i].name, sizeof(cfg.clients[i].name), "%s", names[i]);
		cfg.clients[i].weight = 10 + i;
	}
	cfg.n_clients = n;
}

static unsigned id_of(const char *name)
{
	unsigned id = CLIENTS_MAX;

	if (clients_configured(clients_current(), name, &id) < 0)
		return CLIENTS_MAX;
	return id;
}

TEST(configured_clients_get_ids_in_config_order)
{
	static const char *const names[] = { "billing", "batch", "web" };

	fresh();
	set_clients(names, 3);
	REQUIRE(clients_publish(&cfg) == 0);
	for (unsigned i = 0; i < 3; i++) {
		CHECK(id_of(names[i]) == i);
		CHECK(clients_id(names[i]) == i);
		CHECK_STR(clients_name(i), names[i]);
		CHECK(clients_weight(clients_current(), i) == 10 + i);
	}
	CHECK(clients_name(3) == NULL);
	CHECK(clients_name(CLIENTS_OVERFLOW_ID) == NULL);
	CHECK(clients_name(CLIENTS_MAX) == NULL);
}

TEST(reload_that_removes_and_reorders_clients_keeps_every_id_and_name)
{
	static const char *const first[] = { "a", "b", "c" };
	static const char *const second[] = { "c", "a" };
	static const char *const third[] = { "d", "b", "a" };
	unsigned seen;

	fresh();
	set_clients(first, 3);
	REQUIRE(clients_publish(&cfg) == 0);
	seen = clients_id("caller-1"); /* a dynamic name between reloads */
	CHECK(seen == 3);
	set_clients(second, 2);
	REQUIRE(clients_publish(&cfg) == 0);
	CHECK(id_of("c") == 2 && id_of("a") == 0);
	CHECK(id_of("b") == CLIENTS_MAX); /* removed from the configuration... */
	CHECK(clients_id("b") == 1);      /* ...but its id and series stay */
	CHECK(clients_weight(clients_current(), 1) == 1);
	CHECK(clients_weight(clients_current(), 2) == 10); /* c is first now */
	set_clients(third, 3);
	REQUIRE(clients_publish(&cfg) == 0);
	CHECK(id_of("d") == 4); /* new: the next id, after the dynamic one */
	CHECK(id_of("b") == 1 && id_of("a") == 0);
	CHECK(clients_id("caller-1") == seen);
	CHECK_STR(clients_name(0), "a");
	CHECK_STR(clients_name(1), "b");
	CHECK_STR(clients_name(2), "c");
	CHECK_STR(clients_name(3), "caller-1");
	CHECK_STR(clients_name(4), "d");
}

TEST(a_dynamic_name_later_configured_keeps_its_id)
{
	static const char *const names[] = { "x", "late" };

	fresh();
	CHECK(clients_id("late") == 0);
	set_clients(names, 2);
	REQUIRE(clients_publish(&cfg) == 0);
	CHECK(id_of("late") == 0 && id_of("x") == 1);
	CHECK(clients_weight(clients_current(), 0) == 11);
}

TEST(settings_come_from_the_current_snapshot_and_old_ones_stay_readable)
{
	static const char *const names[] = { "a", "b" };
	const struct clients_snapshot *old;
	const char *name = NULL;
	unsigned id = 99;

	fresh();
	CHECK(!clients_tokens_required(clients_current()));
	set_clients(names, 2);
	snprintf(cfg.clients[1].token_sha256, sizeof(cfg.clients[1].token_sha256), TOKEN_B);
	cfg.clients[1].max_wait_ms = 1500;
	REQUIRE(clients_publish(&cfg) == 0);
	old = clients_current();
	CHECK(clients_tokens_required(old));
	REQUIRE(clients_by_token(old, TOKEN_B, &id, &name) == 0);
	CHECK(id == 1);
	CHECK_STR(name, "b");
	CHECK(clients_by_token(old, TOKEN_A, &id, &name) == -ENOENT);
	CHECK(clients_by_token(old, "bbbb", &id, &name) == -ENOENT);
	CHECK(clients_max_wait_ms(old, 1) == 1500 && clients_max_wait_ms(old, 0) == 0);

	/* reload: b loses its token, a gets one */
	set_clients(names, 2);
	snprintf(cfg.clients[0].token_sha256, sizeof(cfg.clients[0].token_sha256), TOKEN_A);
	REQUIRE(clients_publish(&cfg) == 0);
	CHECK(clients_current() != old);
	CHECK(clients_by_token(clients_current(), TOKEN_B, &id, &name) == -ENOENT);
	REQUIRE(clients_by_token(clients_current(), TOKEN_A, &id, &name) == 0);
	CHECK(id == 0);
	CHECK(clients_max_wait_ms(clients_current(), 1) == 0);
	/* the old snapshot still says what it said */
	REQUIRE(clients_by_token(old, TOKEN_B, &id, &name) == 0);
	CHECK(id == 1 && clients_max_wait_ms(old, 1) == 1500);
}

TEST(dynamic_names_are_bounded_and_then_share_the_overflow_id)
{
	static const char *const names[] = { "configured" };
	char name[32];
	unsigned i;

	fresh();
	for (i = 0; i < CLIENTS_DYNAMIC_MAX; i++) {
		snprintf(name, sizeof(name), "caller-%u", i);
		CHECK(clients_id(name) == i);
	}
	CHECK(clients_name(CLIENTS_OVERFLOW_ID) == NULL);
	CHECK(clients_id("one-too-many") == CLIENTS_OVERFLOW_ID);
	CHECK(clients_id("another") == CLIENTS_OVERFLOW_ID);
	CHECK_STR(clients_name(CLIENTS_OVERFLOW_ID), CLIENTS_OVERFLOW_NAME);
	CHECK(clients_id("caller-7") == 7); /* known names keep theirs */
	/* configured clients still get ids of their own */
	set_clients(names, 1);
	REQUIRE(clients_publish(&cfg) == 0);
	CHECK(id_of("configured") == CLIENTS_DYNAMIC_MAX);
	CHECK(clients_weight(clients_current(), CLIENTS_OVERFLOW_ID) == 1);
}

TEST(configured_clients_past_every_id_share_the_overflow_id_and_publish_says_so)
{
	static char names_buf[CONFIG_MAX_CLIENTS][16];
	const char *names[CONFIG_MAX_CLIENTS];
	unsigned round, i;
	int rc = 0;

	fresh();
	for (i = 0; i < CONFIG_MAX_CLIENTS; i++)
		names[i] = names_buf[i];
	/* Rounds of all-new configured names use up the ids. */
	for (round = 0; round < 3 && rc == 0; round++) {
		for (i = 0; i < CONFIG_MAX_CLIENTS; i++)
			snprintf(names_buf[i], sizeof(names_buf[i]), "r%u-c%u", round, i);
		set_clients(names, CONFIG_MAX_CLIENTS);
		rc = clients_publish(&cfg);
	}
	CHECK(rc == -ENOSPC);
	CHECK(round == 2);
	/* round 1 got ids 64..126 for its first 63 names; the last one overflowed */
	CHECK(id_of("r1-c62") == CLIENTS_OVERFLOW_ID - 1);
	CHECK(id_of("r1-c63") == CLIENTS_OVERFLOW_ID);
	CHECK(clients_weight(clients_current(), CLIENTS_OVERFLOW_ID) == 1);
	CHECK(clients_id("r1-c63") == CLIENTS_OVERFLOW_ID);
	CHECK(clients_id("anyone") == CLIENTS_OVERFLOW_ID);
}

TEST(empty_and_over_long_names_get_the_overflow_id)
{
	char long_name[LIMIT_CLIENT_NAME_MAX + 2];

	fresh();
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	CHECK(clients_id("") == CLIENTS_OVERFLOW_ID);
	CHECK(clients_id(NULL) == CLIENTS_OVERFLOW_ID);
	CHECK(clients_id(long_name) == CLIENTS_OVERFLOW_ID);
	long_name[LIMIT_CLIENT_NAME_MAX] = '\0';
	CHECK(clients_id(long_name) == 0);
	CHECK_STR(clients_name(0), long_name);
}

/* ---- threads ---------------------------------------------------------------- */

#define THREADS 4
#define NAMES 40

struct worker {
	unsigned seed;
	unsigned ids[NAMES];
};

static void *lookup_main(void *arg)
{
	struct worker *w = arg;
	char name[32];

	for (unsigned round = 0; round < 200; round++) {
		for (unsigned k = 0; k < NAMES; k++) {
			unsigned i = (k * 7 + w->seed * 13 + round) % NAMES;
			unsigned id;

			snprintf(name, sizeof(name), "peer-%u", i);
			id = clients_id(name);
			if (round == 0)
				w->ids[i] = id;
			else if (w->ids[i] != id)
				w->ids[i] = CLIENTS_MAX; /* disagreement: fails below */
			/* every name read back is whole */
			for (unsigned j = 0; j < CLIENTS_MAX; j++) {
				const char *n = clients_name(j);

				if (n && strncmp(n, "peer-", 5) != 0)
					w->ids[i] = CLIENTS_MAX + 1;
			}
		}
	}
	return NULL;
}

TEST(concurrent_lookups_agree_on_every_id)
{
	static struct worker workers[THREADS];
	pthread_t threads[THREADS];
	bool used[CLIENTS_MAX] = { false };

	fresh();
	for (unsigned t = 0; t < THREADS; t++) {
		workers[t].seed = t;
		REQUIRE(pthread_create(&threads[t], NULL, lookup_main, &workers[t]) == 0);
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(threads[t], NULL);
	for (unsigned i = 0; i < NAMES; i++) {
		char name[32];
		unsigned id = workers[0].ids[i];

		snprintf(name, sizeof(name), "peer-%u", i);
		for (unsigned t = 1; t < THREADS; t++)
			CHECK(workers[t].ids[i] == id);
		REQUIRE(id < NAMES);
		CHECK(!used[id]);
		used[id] = true;
		CHECK_STR(clients_name(id), name);
	}
	CHECK(clients_name(NAMES) == NULL);
}

int main(void)
{
	clients_init();
	RUN(configured_clients_get_ids_in_config_order);
	RUN(reload_that_removes_and_reorders_clients_keeps_every_id_and_name);
	RUN(a_dynamic_name_later_configured_keeps_its_id);
	RUN(settings_come_from_the_current_snapshot_and_old_ones_stay_readable);
	RUN(dynamic_names_are_bounded_and_then_share_the_overflow_id);
	RUN(configured_clients_past_every_id_share_the_overflow_id_and_publish_says_so);
	RUN(empty_and_over_long_names_get_the_overflow_id);
	RUN(concurrent_lookups_agree_on_every_id);
	clients_fini();
	return harness_done();
}
