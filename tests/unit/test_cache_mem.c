/*
 * test_cache_mem.c -- the cache's memory layer on its own: publish, get and
 * peek, what a publish replaced, each shard's bound and LRU order, offers
 * racing with writes (the shard generation), forgetting, recency handed to
 * the store, and the refresh-candidate walk. Pure memory: no database, no
 * files, no clock.
 */
#include "cache_mem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_fixtures.h"
#include "harness.h"

#define SHARD_OF(k) (cams_key_hash(k) >> 58)

/* n key numbers from `from` on whose keys share one shard (that of the first). */
static void same_shard(int from, int *ret, int n)
{
	struct cams_key first = make_key(from);
	uint64_t shard = SHARD_OF(&first);
	int found = 0;

	for (int i = from; found < n; i++) {
		struct cams_key k = make_key(i);

		if (SHARD_OF(&k) == shard)
			ret[found++] = i;
	}
}

static int present(struct cache_mem *m, int i)
{
	struct cams_key k = make_key(i);
	struct cache_entry *e = cache_mem_peek(m, &k);

	cache_entry_unref(e);
	return e != NULL;
}

TEST(publish_then_get_returns_the_same_entry_and_records_the_use)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_entry *e = make_entry(1, 100, 60), *got = NULL;
	struct cams_key k = make_key(1), other = make_key(2);
	uint64_t gen = 0;

	CHECK(cache_mem_get(m, &k, 100, &got, &gen) == 0);
	CHECK(gen == 0);
	cache_mem_publish(m, e, 100, NULL);
	CHECK(cache_mem_get(m, &k, 150, &got, &gen) == 1);
	CHECK(got == e);
	CHECK(gen == 1);
	CHECK(atomic_load(&e->last_used_s) == 150);
	/* An older time never moves recency back. */
	cache_entry_unref(got);
	CHECK(cache_mem_get(m, &k, 120, &got, NULL) == 1);
	CHECK(atomic_load(&e->last_used_s) == 150);
	cache_entry_unref(got);
	CHECK(cache_mem_get(m, &other, 150, &got, NULL) == 0);
	CHECK(cache_mem_count(m) == 1);
	/* The layer holds its own reference: the caller's may go first. */
	CHECK(atomic_load(&e->refs) == 2);
	cache_entry_unref(e);
	cache_mem_free(m);
}

TEST(peek_records_no_use)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_entry *e = make_entry(1, 100, 60), *got;
	struct cams_key k = make_key(1);

	cache_mem_publish(m, e, 100, NULL);
	got = cache_mem_peek(m, &k);
	CHECK(got == e);
	CHECK(atomic_load(&e->last_used_s) == 0);
	cache_entry_unref(got);
	cache_entry_unref(e);
	cache_mem_free(m);
}

TEST(publish_hands_back_the_entry_it_replaced)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_entry *e1 = make_entry(4, 100, 60), *e2 = make_entry(4, 200, 60);
	struct cache_entry *replaced = (struct cache_entry *)&replaced, *got = NULL;
	struct cams_key k = make_key(4);

	cache_mem_publish(m, e1, 100, &replaced);
	CHECK(replaced == NULL);
	cache_mem_publish(m, e2, 200, &replaced);
	CHECK(replaced == e1);
	cache_entry_unref(replaced);
	CHECK(cache_mem_get(m, &k, 210, &got, NULL) == 1 && got == e2);
	cache_entry_unref(got);
	CHECK(cache_mem_count(m) == 1);
	/* e1 is ours alone again: the layer dropped its reference. */
	CHECK(atomic_load(&e1->refs) == 1);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	cache_mem_free(m);
}

TEST(a_full_shard_pushes_out_its_least_recently_used_entry)
{
	/* 128 over 64 shards: two per shard. */
	struct cache_mem *m = cache_mem_new(128);
	struct cache_entry *e;
	struct cams_key k;
	int ids[3];

	same_shard(0, ids, 3);
	for (int i = 0; i < 2; i++) {
		e = make_entry(ids[i], 100, 60);
		cache_mem_publish(m, e, 100, NULL);
		cache_entry_unref(e);
	}
	/* A hit makes the first the newest, so the second goes. */
	k = make_key(ids[0]);
	CHECK(cache_mem_get(m, &k, 110, &e, NULL) == 1);
	cache_entry_unref(e);
	e = make_entry(ids[2], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	CHECK(present(m, ids[0]));
	CHECK(!present(m, ids[1]));
	CHECK(present(m, ids[2]));
	CHECK(cache_mem_count(m) == 2);
	cache_mem_free(m);
}

TEST(the_whole_layer_stays_within_hot_entries)
{
	struct cache_mem *m = cache_mem_new(64 * 4);
	struct cache_entry *e;

	for (int i = 0; i < 5000; i++) {
		e = make_entry(i, 100, 60);
		cache_mem_publish(m, e, 100, NULL);
		cache_entry_unref(e);
	}
	CHECK(cache_mem_count(m) <= 64 * 4);
	/* Spread over the shards: 5000 keys fill nearly every slot. */
	CHECK(cache_mem_count(m) >= 64 * 4 - 8);
	cache_mem_free(m);
}

TEST(an_offer_is_kept_only_if_no_write_came_since_the_miss)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_entry *row, *newer, *got;
	struct cams_key k = make_key(7);
	uint64_t gen;
	int ids[2];

	/* Nothing happened since the miss: the row is kept and returned. */
	CHECK(cache_mem_get(m, &k, 100, &got, &gen) == 0);
	row = make_entry(7, 100, 60);
	got = cache_mem_offer(m, cache_entry_ref(row), gen, 100, 0);
	CHECK(got == row);
	cache_entry_unref(got);
	CHECK(present(m, 7));
	cache_mem_forget(m, &k);
	CHECK(!present(m, 7));

	/* A put for the key landed between the miss and the offer: it wins. */
	CHECK(cache_mem_get(m, &k, 100, &got, &gen) == 0);
	newer = make_entry(7, 200, 60);
	cache_mem_publish(m, newer, 200, NULL);
	got = cache_mem_offer(m, cache_entry_ref(row), gen, 100, 0);
	CHECK(got == newer);
	cache_entry_unref(got);
	got = cache_mem_peek(m, &k);
	CHECK(got == newer);
	cache_entry_unref(got);

	/* A delete in the shard since the miss: serve the row, do not keep it. */
	same_shard(7, ids, 2);
	cache_mem_forget(m, &k);
	CHECK(cache_mem_get(m, &k, 100, &got, &gen) == 0);
	{
		struct cams_key other = make_key(ids[1]);

		cache_mem_forget(m, &other);
	}
	got = cache_mem_offer(m, cache_entry_ref(row), gen, 100, 0);
	CHECK(got == row);
	cache_entry_unref(got);
	CHECK(!present(m, 7));
	CHECK(cache_mem_count(m) == 0);
	cache_entry_unref(row);
	cache_entry_unref(newer);
	cache_mem_free(m);
}

TEST(an_offer_never_replaces_a_newer_entry)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_entry *newer = make_entry(3, 300, 60), *row = make_entry(3, 100, 60), *got;
	struct cams_key k = make_key(3);
	uint64_t gen;

	cache_mem_publish(m, newer, 300, NULL);
	/* Generation unchanged, but memory holds a later fetch. */
	cache_mem_get(m, &k, 310, &got, &gen);
	cache_entry_unref(got);
	got = cache_mem_offer(m, cache_entry_ref(row), gen, 100, 0);
	CHECK(got == newer);
	cache_entry_unref(got);
	cache_entry_unref(row);
	cache_entry_unref(newer);
	cache_mem_free(m);
}

static int has_use(const struct cache_use_list *l, int i, int64_t used_s)
{
	struct cams_key k = make_key(i);

	for (size_t j = 0; j < l->len; j++)
		if (cams_key_equal(&l->items[j].key, &k) && l->items[j].used_s == used_s)
			return 1;
	return 0;
}

TEST(uses_newer_than_disk_are_handed_out_until_marked_persisted)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k = make_key(1);

	e = make_entry(1, 100, 60);
	atomic_store(&e->last_used_s, 100);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 0);
	CHECK(cache_mem_get(m, &k, 150, &got, NULL) == 1);
	cache_entry_unref(got);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, 1, 150));
	cache_mem_mark_persisted(m, &uses);
	cache_use_list_free(&uses);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 0);
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(collecting_uses_walks_only_the_entries_used_since_the_last_flush)
{
	struct cache_mem *m = cache_mem_new(20000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k;
	int i;

	for (i = 0; i < 10000; i++) {
		e = make_entry(i, 100, 60);
		cache_mem_publish(m, e, 100, NULL);
		cache_entry_unref(e);
	}
	CHECK(cache_mem_dirty_count(m) == 0);
	/* Three keys used, one of them many times: three nodes listed, once each. */
	for (i = 0; i < 50; i++) {
		k = make_key(7);
		CHECK(cache_mem_get(m, &k, 150 + i / 10, &got, NULL) == 1);
		cache_entry_unref(got);
	}
	k = make_key(4000);
	CHECK(cache_mem_get(m, &k, 151, &got, NULL) == 1);
	cache_entry_unref(got);
	k = make_key(9999);
	CHECK(cache_mem_get(m, &k, 152, &got, NULL) == 1);
	cache_entry_unref(got);
	CHECK(cache_mem_dirty_count(m) == 3);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 3 && has_use(&uses, 7, 154) && has_use(&uses, 4000, 151) &&
	      has_use(&uses, 9999, 152));
	cache_mem_mark_persisted(m, &uses);
	cache_use_list_free(&uses);
	CHECK(cache_mem_dirty_count(m) == 0);
	/* A hit in the same second as the flushed use is on disk already. */
	k = make_key(4000);
	CHECK(cache_mem_get(m, &k, 151, &got, NULL) == 1);
	cache_entry_unref(got);
	CHECK(cache_mem_dirty_count(m) == 0);
	cache_mem_free(m);
}

TEST(a_bounded_collect_takes_the_longest_waiting_uses_and_the_rest_later)
{
	struct cache_mem *m = cache_mem_new(20000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k;
	size_t total = 0;
	int i, rounds = 0;

	for (i = 0; i < 4000; i++) {
		e = make_entry(i, 100, 60);
		cache_mem_publish(m, e, 100, NULL);
		cache_entry_unref(e);
		k = make_key(i);
		CHECK(cache_mem_get(m, &k, 200 + i, &got, NULL) == 1);
		cache_entry_unref(got);
	}
	/* 64 a call (one a shard), each the oldest listed in its shard. */
	cache_mem_collect_uses_at_most(m, &uses, 64);
	CHECK(uses.len == 64);
	for (size_t j = 0; j < uses.len; j++) {
		/* The first key used in its shard (keys were used in number order). */
		uint64_t shard = SHARD_OF(&uses.items[j].key);

		for (i = 0; i < 4000; i++) {
			k = make_key(i);
			if (SHARD_OF(&k) == shard)
				break;
		}
		CHECK(uses.items[j].used_s == 200 + i);
	}
	cache_mem_mark_persisted(m, &uses);
	total += uses.len;
	cache_use_list_free(&uses);
	CHECK(cache_mem_dirty_count(m) == 4000 - 64);
	/* Every use comes out in the end, each once. */
	while (cache_mem_dirty_count(m) > 0 && rounds++ < 1000) {
		cache_mem_collect_uses_at_most(m, &uses, 1000);
		CHECK(uses.len > 0 && uses.len <= 1024);
		cache_mem_mark_persisted(m, &uses);
		total += uses.len;
		cache_use_list_free(&uses);
	}
	CHECK(total == 4000);
	cache_mem_free(m);
}

TEST(uses_of_a_flush_that_failed_are_handed_out_again)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k = make_key(1);

	e = make_entry(1, 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	CHECK(cache_mem_get(m, &k, 150, &got, NULL) == 1);
	cache_entry_unref(got);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, 1, 150));
	cache_use_list_free(&uses);
	/* Not marked persisted (the transaction failed): the next collect has it. */
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, 1, 150));
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(a_hit_between_collect_and_flush_is_kept_for_the_next_flush)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k = make_key(1);

	e = make_entry(1, 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	CHECK(cache_mem_get(m, &k, 150, &got, NULL) == 1);
	cache_entry_unref(got);
	cache_mem_collect_uses(m, &uses);
	CHECK(cache_mem_get(m, &k, 151, &got, NULL) == 1);
	cache_entry_unref(got);
	cache_mem_mark_persisted(m, &uses);
	cache_use_list_free(&uses);
	CHECK(cache_mem_dirty_count(m) == 1);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, 1, 151));
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(a_row_offered_after_a_miss_records_its_use)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cache_use_list uses = { 0 };
	struct cache_entry *row, *got = NULL;
	struct cams_key k = make_key(3);
	uint64_t gen = 0;

	CHECK(cache_mem_get(m, &k, 150, &got, &gen) == 0);
	row = make_entry(3, 100, 60);
	atomic_store(&row->last_used_s, 120);
	got = cache_mem_offer(m, row, gen, 120, 150);
	CHECK(got == row && atomic_load(&got->last_used_s) == 150);
	cache_entry_unref(got);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, 3, 150));
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(used_entries_pushed_out_or_forgotten_leave_the_dirty_list)
{
	struct cache_mem *m = cache_mem_new(64); /* one per shard */
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k;
	int ids[3];

	same_shard(5, ids, 3);
	e = make_entry(ids[0], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	k = make_key(ids[0]);
	CHECK(cache_mem_get(m, &k, 170, &got, NULL) == 1);
	cache_entry_unref(got);
	CHECK(cache_mem_dirty_count(m) == 1);
	/* ids[0] is pushed out while listed; ids[1] is used, then forgotten. */
	e = make_entry(ids[1], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	CHECK(cache_mem_dirty_count(m) == 0);
	k = make_key(ids[1]);
	CHECK(cache_mem_get(m, &k, 180, &got, NULL) == 1);
	cache_entry_unref(got);
	cache_mem_forget(m, &k);
	CHECK(cache_mem_dirty_count(m) == 0);
	cache_mem_collect_uses(m, &uses);
	CHECK(uses.len == 1 && has_use(&uses, ids[0], 170));
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(the_use_of_an_entry_pushed_out_is_kept_until_collected_or_forgotten)
{
	struct cache_mem *m = cache_mem_new(64); /* one per shard */
	struct cache_use_list uses = { 0 };
	struct cache_entry *e, *got;
	struct cams_key k;
	int ids[4];

	same_shard(0, ids, 4);
	e = make_entry(ids[0], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	k = make_key(ids[0]);
	CHECK(cache_mem_get(m, &k, 170, &got, NULL) == 1);
	cache_entry_unref(got);
	/* Pushed out before any flush: the use is noted, not lost. */
	e = make_entry(ids[1], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	CHECK(!present(m, ids[0]));
	cache_mem_collect_uses(m, &uses);
	CHECK(has_use(&uses, ids[0], 170));
	cache_use_list_free(&uses);
	/* Collected once only. */
	cache_mem_collect_uses(m, &uses);
	CHECK(!has_use(&uses, ids[0], 170));
	cache_use_list_free(&uses);

	/* A noted use of a key then deleted is dropped with it. */
	k = make_key(ids[1]);
	CHECK(cache_mem_get(m, &k, 180, &got, NULL) == 1);
	cache_entry_unref(got);
	e = make_entry(ids[2], 100, 60);
	cache_mem_publish(m, e, 100, NULL);
	cache_entry_unref(e);
	cache_mem_forget(m, &k);
	cache_mem_collect_uses(m, &uses);
	CHECK(!has_use(&uses, ids[1], 180));
	cache_use_list_free(&uses);
	cache_mem_free(m);
}

TEST(refresh_candidates_are_used_recently_and_expiring_within_the_window)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cams_key keys[16];
	struct cache_entry *e, *got;
	struct cams_key k;
	size_t n;

	/* 1: used, expires in 50 s: a candidate. */
	e = make_entry(1, 1000, 1050);
	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	k = make_key(1);
	cache_mem_get(m, &k, 2000, &got, NULL);
	cache_entry_unref(got);
	/* 2: never used since it was stored. */
	e = make_entry(2, 1000, 1050);
	atomic_store(&e->last_used_s, 1000);
	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	/* 3: used, but expires far beyond the window. */
	e = make_entry(3, 1000, 100000);
	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	k = make_key(3);
	cache_mem_get(m, &k, 2000, &got, NULL);
	cache_entry_unref(got);
	/* 4: used, already expired. */
	e = make_entry(4, 1000, 900);
	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	k = make_key(4);
	cache_mem_get(m, &k, 2000, &got, NULL);
	cache_entry_unref(got);
	/* 5: negative entries are never refreshed ahead. */
	e = make_negative(5, 1000, 1050);
	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	k = make_key(5);
	cache_mem_get(m, &k, 2000, &got, NULL);
	cache_entry_unref(got);

	n = cache_mem_refresh_candidates(m, 2000, 100, keys, 16);
	CHECK(n == 1);
	if (n >= 1)
		CHECK_STR(keys[0].phone, make_key(1).phone);
	/* Long after the last use, nothing is a candidate. */
	CHECK(cache_mem_refresh_candidates(m, 2040, 10, keys, 16) == 0);
	/* max_keys bounds the answer. */
	CHECK(cache_mem_refresh_candidates(m, 2000, 100, keys, 0) == 0);
	cache_mem_free(m);
}

/* Publish key i fetched at 1000, expiring at expires_at_s, and use it at used_s. */
static void publish_used(struct cache_mem *m, int i, int64_t expires_at_s, int64_t used_s)
{
	struct cache_entry *e = make_entry(i, 1000, expires_at_s - 1000), *got;
	struct cams_key k = make_key(i);

	cache_mem_publish(m, e, 1000, NULL);
	cache_entry_unref(e);
	CHECK(cache_mem_get(m, &k, used_s, &got, NULL) == 1);
	cache_entry_unref(got);
}

TEST(refresh_candidates_follow_expiry_soonest_first_across_the_whole_wheel)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct cams_key keys[16];
	const int64_t now = 100000, turn = 2048 * 64;
	size_t n;

	publish_used(m, 1, now + 300, now);
	publish_used(m, 2, now + 30, now);
	/* Expiring exactly one turn of the wheel after 2: same slot, not in the window. */
	publish_used(m, 3, now + 30 + turn, now);
	/* Expiring later, in many slots: none is a candidate. */
	for (int i = 10; i < 200; i++)
		publish_used(m, i, now + 700 + i * 97, now);
	n = cache_mem_refresh_candidates(m, now, 600, keys, 16);
	CHECK(n == 2);
	/* 100 s: only 2, not 3, which shares its slot one turn later. */
	n = cache_mem_refresh_candidates(m, now, 100, keys, 16);
	CHECK(n == 1 && strcmp(keys[0].phone, make_key(2).phone) == 0);
	/* Replaced with a later expiry, 2 moves out of the window. */
	publish_used(m, 2, now + 5000, now);
	n = cache_mem_refresh_candidates(m, now, 600, keys, 16);
	CHECK(n == 1 && strcmp(keys[0].phone, make_key(1).phone) == 0);
	/* A window longer than a turn visits every slot once and still finds them all. */
	n = cache_mem_refresh_candidates(m, now, (uint64_t)turn * 3, keys, 16);
	CHECK(n == 16);
	/* Forgotten, 1 leaves the wheel. */
	{
		struct cams_key k1 = make_key(1);

		cache_mem_forget(m, &k1);
	}
	CHECK(cache_mem_refresh_candidates(m, now, 600, keys, 16) == 0);
	cache_mem_free(m);
}

#define HIT_THREADS 4
#define HITS_PER_THREAD 50000

struct hit_arg {
	struct cache_mem *m;
	atomic_int *errors;
	unsigned seed;
};

static void *hitter(void *arg)
{
	struct hit_arg *ha = arg;

	for (int n = 0; n < HITS_PER_THREAD; n++) {
		int i = (int)(rand_r(&ha->seed) % 100);
		struct cams_key k = make_key(i);
		struct cache_entry *e = NULL;

		if (cache_mem_get(ha->m, &k, 100 + n, &e, NULL) != 1 ||
		    strcmp(e->key.phone, k.phone) != 0 || !strstr(e->body, k.phone))
			atomic_fetch_add(ha->errors, 1);
		cache_entry_unref(e);
	}
	return NULL;
}

TEST(hits_on_many_threads_while_entries_are_replaced_see_whole_entries)
{
	struct cache_mem *m = cache_mem_new(1000);
	struct hit_arg args[HIT_THREADS];
	pthread_t th[HIT_THREADS];
	atomic_int errors = 0;
	struct cache_entry *e;
	int i;

	for (i = 0; i < 100; i++) {
		e = make_entry(i, 100, 60);
		cache_mem_publish(m, e, 100, NULL);
		cache_entry_unref(e);
	}
	for (i = 0; i < HIT_THREADS; i++) {
		args[i].m = m;
		args[i].errors = &errors;
		args[i].seed = 777u + (unsigned)i;
		REQUIRE(pthread_create(&th[i], NULL, hitter, &args[i]) == 0);
	}
	for (i = 0; i < 20000; i++) {
		e = make_entry(i % 100, 200 + i, 60);
		cache_mem_publish(m, e, 200, NULL);
		cache_entry_unref(e);
	}
	for (i = 0; i < HIT_THREADS; i++)
		pthread_join(th[i], NULL);
	CHECK(atomic_load(&errors) == 0);
	CHECK(cache_mem_count(m) == 100);
	cache_mem_free(m);
}

int main(void)
{
	RUN(publish_then_get_returns_the_same_entry_and_records_the_use);
	RUN(peek_records_no_use);
	RUN(publish_hands_back_the_entry_it_replaced);
	RUN(a_full_shard_pushes_out_its_least_recently_used_entry);
	RUN(the_whole_layer_stays_within_hot_entries);
	RUN(an_offer_is_kept_only_if_no_write_came_since_the_miss);
	RUN(an_offer_never_replaces_a_newer_entry);
	RUN(uses_newer_than_disk_are_handed_out_until_marked_persisted);
	RUN(collecting_uses_walks_only_the_entries_used_since_the_last_flush);
	RUN(a_bounded_collect_takes_the_longest_waiting_uses_and_the_rest_later);
	RUN(uses_of_a_flush_that_failed_are_handed_out_again);
	RUN(a_hit_between_collect_and_flush_is_kept_for_the_next_flush);
	RUN(a_row_offered_after_a_miss_records_its_use);
	RUN(used_entries_pushed_out_or_forgotten_leave_the_dirty_list);
	RUN(the_use_of_an_entry_pushed_out_is_kept_until_collected_or_forgotten);
	RUN(refresh_candidates_are_used_recently_and_expiring_within_the_window);
	RUN(refresh_candidates_follow_expiry_soonest_first_across_the_whole_wheel);
	RUN(hits_on_many_threads_while_entries_are_replaced_see_whole_entries);
	return harness_done();
}
