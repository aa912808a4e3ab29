/*
 * test_flight.c -- unit tests for the flight table: find/start/finish and
 * the count, waiters joining and leaving in any order, pop-style draining,
 * key hashing and equality (CustSpaceId is part of the key), and many
 * flights chained in a few buckets.
 */
#include "flight.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define MANY 1000

static struct cams_key key_of(const char *cust_space_id, const char *phone)
{
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	snprintf(k.cust_space_id, sizeof(k.cust_space_id), "%s", cust_space_id);
	snprintf(k.phone, sizeof(k.phone), "%s", phone);
	return k;
}

static struct flight_waiter waiter(void)
{
	struct flight_waiter w = { NULL, NULL, NULL };

	return w;
}

TEST(empty_table_finds_nothing)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");

	CHECK(flight_count(t) == 0);
	CHECK(flight_find(t, &k) == NULL);
	flight_table_free(t);
}

TEST(zero_buckets_means_a_default_size)
{
	struct flight_table *t = flight_table_new(0);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);

	CHECK(flight_find(t, &k) == f);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(free_accepts_null_table)
{
	flight_table_free(NULL);
}

TEST(started_flight_is_found_with_fresh_state)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("space-1", "8613912345678");
	struct flight *f = flight_start(t, &k);

	REQUIRE(f != NULL);
	CHECK(flight_count(t) == 1);
	CHECK(flight_find(t, &k) == f);
	CHECK(cams_key_equal(&f->key, &k));
	CHECK(f->state == FLIGHT_QUEUED);
	CHECK(f->n_waiters == 0);
	CHECK(f->attempts == 0);
	CHECK(!f->background && !f->revalidate);
	CHECK(f->qitem.heap_index == SIZE_MAX);
	CHECK(flight_first_waiter(f) == NULL);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(flight_keeps_a_copy_of_the_key)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("space", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct cams_key again = key_of("space", "8613912345678");

	memset(&k, 0, sizeof(k));
	CHECK_STR(f->key.phone, "8613912345678");
	CHECK(flight_find(t, &again) == f);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(finished_flight_is_gone)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key a = key_of("", "111111"), b = key_of("", "222222");
	struct flight *fa = flight_start(t, &a);
	struct flight *fb = flight_start(t, &b);

	CHECK(flight_count(t) == 2);
	flight_finish(t, fa);
	CHECK(flight_count(t) == 1);
	CHECK(flight_find(t, &a) == NULL);
	CHECK(flight_find(t, &b) == fb);
	flight_finish(t, fb);
	CHECK(flight_count(t) == 0);
	CHECK(flight_find(t, &b) == NULL);
	flight_table_free(t);
}

TEST(key_can_fly_again_after_finish)
{
	struct flight_table *t = flight_table_new(4);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);

	flight_finish(t, f);
	f = flight_start(t, &k);
	CHECK(flight_find(t, &k) == f);
	CHECK(flight_count(t) == 1);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(waiters_join_in_order_and_are_counted)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct flight_waiter w1 = waiter(), w2 = waiter(), w3 = waiter();

	flight_join(f, &w1);
	flight_join(f, &w2);
	flight_join(f, &w3);
	CHECK(f->n_waiters == 3);
	CHECK(w1.flight == f && w2.flight == f && w3.flight == f);
	CHECK(flight_first_waiter(f) == &w1);
	flight_leave(&w1);
	flight_leave(&w2);
	flight_leave(&w3);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(leaving_first_waiter_makes_next_one_first)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct flight_waiter w1 = waiter(), w2 = waiter();

	flight_join(f, &w1);
	flight_join(f, &w2);
	flight_leave(&w1);
	CHECK(w1.flight == NULL);
	CHECK(f->n_waiters == 1);
	CHECK(flight_first_waiter(f) == &w2);
	/* the flight itself is not cancelled by a waiter leaving */
	CHECK(flight_find(t, &k) == f);
	flight_leave(&w2);
	CHECK(f->n_waiters == 0);
	CHECK(flight_first_waiter(f) == NULL);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(leaving_from_the_middle_keeps_the_others_in_order)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct flight_waiter w[4] = { waiter(), waiter(), waiter(), waiter() };
	struct flight_waiter *order[4];
	size_t n = 0, i;

	for (i = 0; i < 4; i++)
		flight_join(f, &w[i]);
	flight_leave(&w[2]);
	flight_leave(&w[1]);
	CHECK(f->n_waiters == 2);
	/* drain pop-style, bounded by the number joined */
	for (i = 0; i < 4; i++) {
		struct flight_waiter *first = flight_first_waiter(f);

		if (!first)
			break;
		order[n++] = first;
		flight_leave(first);
	}
	REQUIRE(n == 2);
	CHECK(order[0] == &w[0]);
	CHECK(order[1] == &w[3]);
	CHECK(f->n_waiters == 0);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(leaving_twice_or_without_joining_is_harmless)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct flight_waiter never = waiter(), w = waiter(), other = waiter();

	flight_leave(&never);
	CHECK(never.flight == NULL);
	flight_join(f, &w);
	flight_join(f, &other);
	flight_leave(&w);
	flight_leave(&w);
	CHECK(f->n_waiters == 1);
	CHECK(flight_first_waiter(f) == &other);
	flight_leave(&other);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(waiter_can_rejoin_another_flight_after_leaving)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key ka = key_of("", "111111"), kb = key_of("", "222222");
	struct flight *fa = flight_start(t, &ka), *fb = flight_start(t, &kb);
	struct flight_waiter w = waiter();

	flight_join(fa, &w);
	flight_leave(&w);
	flight_join(fb, &w);
	CHECK(w.flight == fb);
	CHECK(fa->n_waiters == 0 && fb->n_waiters == 1);
	CHECK(flight_first_waiter(fa) == NULL);
	CHECK(flight_first_waiter(fb) == &w);
	flight_leave(&w);
	flight_finish(t, fa);
	flight_finish(t, fb);
	flight_table_free(t);
}

TEST(drain_by_pop_visits_every_waiter_once_in_join_order)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key k = key_of("", "8613912345678");
	struct flight *f = flight_start(t, &k);
	struct flight_waiter w[50];
	size_t i, n = 0;
	int in_order = 1;

	for (i = 0; i < 50; i++) {
		w[i] = waiter();
		flight_join(f, &w[i]);
	}
	CHECK(f->n_waiters == 50);
	for (i = 0; i < 100; i++) {
		struct flight_waiter *first = flight_first_waiter(f);

		if (!first)
			break;
		in_order &= first == &w[n];
		n++;
		flight_leave(first);
	}
	CHECK(n == 50);
	CHECK(in_order);
	CHECK(f->n_waiters == 0);
	flight_finish(t, f);
	flight_table_free(t);
}

TEST(keys_equal_only_when_phone_and_cust_space_id_match)
{
	struct cams_key a = key_of("", "8613912345678");
	struct cams_key a2 = key_of("", "8613912345678");
	struct cams_key b = key_of("space", "8613912345678");
	struct cams_key c = key_of("", "8613912345679");

	CHECK(cams_key_equal(&a, &a2));
	CHECK(cams_key_hash(&a) == cams_key_hash(&a2));
	CHECK(!cams_key_equal(&a, &b));
	CHECK(!cams_key_equal(&a, &c));
	CHECK(cams_key_hash(&a) != cams_key_hash(&b));
	CHECK(cams_key_hash(&a) != cams_key_hash(&c));
}

TEST(hash_separates_cust_space_id_from_phone)
{
	/* the same bytes split differently between the two fields */
	struct cams_key a = key_of("1", "23456");
	struct cams_key b = key_of("12", "3456");
	struct cams_key c = key_of("", "123456");

	CHECK(!cams_key_equal(&a, &b));
	CHECK(cams_key_hash(&a) != cams_key_hash(&b));
	CHECK(cams_key_hash(&a) != cams_key_hash(&c));
	CHECK(cams_key_hash(&b) != cams_key_hash(&c));
}

TEST(hash_ignores_bytes_after_the_nul)
{
	struct cams_key a = key_of("s", "8613912345678");
	struct cams_key b = key_of("s", "8613912345678");

	memset(b.cust_space_id + 2, 'x', sizeof(b.cust_space_id) - 3);
	CHECK(cams_key_hash(&a) == cams_key_hash(&b));
	CHECK(cams_key_equal(&a, &b));
}

TEST(same_phone_in_two_cust_spaces_flies_separately)
{
	struct flight_table *t = flight_table_new(16);
	struct cams_key none = key_of("", "8613912345678");
	struct cams_key s1 = key_of("space-1", "8613912345678");
	struct cams_key s2 = key_of("space-2", "8613912345678");
	struct flight *f0 = flight_start(t, &none);
	struct flight *f1, *f2;

	CHECK(flight_find(t, &s1) == NULL);
	f1 = flight_start(t, &s1);
	f2 = flight_start(t, &s2);
	CHECK(f0 != f1 && f1 != f2 && f0 != f2);
	CHECK(flight_find(t, &none) == f0);
	CHECK(flight_find(t, &s1) == f1);
	CHECK(flight_find(t, &s2) == f2);
	CHECK(flight_count(t) == 3);
	flight_finish(t, f1);
	CHECK(flight_find(t, &s1) == NULL);
	CHECK(flight_find(t, &none) == f0);
	CHECK(flight_find(t, &s2) == f2);
	flight_finish(t, f0);
	flight_finish(t, f2);
	flight_table_free(t);
}

TEST(many_flights_in_few_buckets_are_all_found_and_removed)
{
	static struct cams_key keys[MANY];
	static struct flight *flights[MANY];
	struct flight_table *t = flight_table_new(3);
	size_t i, found = 0, gone = 0, kept = 0;

	for (i = 0; i < MANY; i++) {
		char phone[32];

		snprintf(phone, sizeof(phone), "86139%08zu", i);
		keys[i] = key_of(i % 3 ? "" : "space", phone);
		flights[i] = flight_start(t, &keys[i]);
	}
	REQUIRE(flight_count(t) == MANY);
	for (i = 0; i < MANY; i++)
		found += flight_find(t, &keys[i]) == flights[i];
	CHECK(found == MANY);
	/* finish every other one, from both ends of the chains */
	for (i = 0; i < MANY; i += 2)
		flight_finish(t, flights[i]);
	CHECK(flight_count(t) == MANY / 2);
	for (i = 0; i < MANY; i++) {
		struct flight *f = flight_find(t, &keys[i]);

		if (i % 2 == 0)
			gone += f == NULL;
		else
			kept += f == flights[i];
	}
	CHECK(gone == MANY / 2);
	CHECK(kept == MANY / 2);
	/* and the rest from the last one down */
	for (i = 0; i < MANY / 2; i++)
		flight_finish(t, flights[MANY - 1 - 2 * i]);
	CHECK(flight_count(t) == 0);
	flight_table_free(t);
}

int main(void)
{
	RUN(empty_table_finds_nothing);
	RUN(zero_buckets_means_a_default_size);
	RUN(free_accepts_null_table);
	RUN(started_flight_is_found_with_fresh_state);
	RUN(flight_keeps_a_copy_of_the_key);
	RUN(finished_flight_is_gone);
	RUN(key_can_fly_again_after_finish);
	RUN(waiters_join_in_order_and_are_counted);
	RUN(leaving_first_waiter_makes_next_one_first);
	RUN(leaving_from_the_middle_keeps_the_others_in_order);
	RUN(leaving_twice_or_without_joining_is_harmless);
	RUN(waiter_can_rejoin_another_flight_after_leaving);
	RUN(drain_by_pop_visits_every_waiter_once_in_join_order);
	RUN(keys_equal_only_when_phone_and_cust_space_id_match);
	RUN(hash_separates_cust_space_id_from_phone);
	RUN(hash_ignores_bytes_after_the_nul);
	RUN(same_phone_in_two_cust_spaces_flies_separately);
	RUN(many_flights_in_few_buckets_are_all_found_and_removed);
	return harness_done();
}
