/*
 * test_cache.c -- the cache's API over its two layers: lookup (memory only)
 * and load (memory, then disk), put and what it replaced, publish after
 * commit, the generation, recency and the size bounds, concurrency,
 * read-only and locked databases. The store alone is in
 * test_cache_store.c, the memory layer alone in test_cache_mem.c.
 *
 * Each test works in its own directory made with mkdtemp under /tmp and
 * removes it afterwards. Time is passed by hand; only the benchmark reads
 * a clock.
 */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache_fixtures.h"
#include "harness.h"
#include "span.h"

TEST(put_then_get_returns_the_published_entry_from_memory)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(1);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_load(c, &k, 1000, &got) == 0);
	e = make_entry(1, 1000, 3600);
	CHECK(cache_put(c, e, NULL) == 0);
	CHECK(cache_lookup(c, &k, 1001, &got) == 1);
	CHECK(got == e);
	if (got) {
		CHECK(entries_equal(got, e));
		CHECK(atomic_load(&got->last_used_s) == 1001);
	}
	cache_entry_unref(got);
	cache_entry_unref(e);
	CHECK(count_rows(c) == 1);
	cache_close(c);
	tmp_remove(&t);
}

TEST(entry_read_back_from_disk_after_reopen_has_identical_fields)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e[3], *got = NULL;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		e[i] = make_entry(i, 2000 + i, 86400);
		CHECK(cache_put(c, e[i], NULL) == 0);
	}
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		struct cams_key k = make_key(i);

		got = NULL;
		CHECK(cache_load(c, &k, 5000, &got) == 1);
		CHECK(got && got != e[i] && entries_equal(got, e[i]));
		cache_entry_unref(got);
	}
	CHECK(count_rows(c) == 3);
	cache_close(c);
	for (i = 0; i < 3; i++)
		cache_entry_unref(e[i]);
	tmp_remove(&t);
}

TEST(a_relative_path_keeps_working_after_the_process_changes_directory)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(11);
	char cwd[4096], err[256];

	REQUIRE(getcwd(cwd, sizeof(cwd)) != NULL);
	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(chdir(t.dir) == 0);
	CHECK(open_cache("cache.db", 100, 100, 0, &c, err, sizeof(err)) == 0);
	if (c) {
		e = make_entry(11, 100, 60);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
		cache_close(c);
		c = NULL;
	}
	CHECK(open_cache("cache.db", 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(chdir("/") == 0);
	/* The first read opens this thread's connection, after the chdir. */
	if (c)
		CHECK(cache_load(c, &k, 110, &got) == 1);
	cache_entry_unref(got);
	cache_close(c);
	CHECK(chdir(cwd) == 0);
	tmp_remove(&t);
}

TEST(replacing_a_key_keeps_one_row_with_the_new_content)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e1, *e2, *got = NULL;
	struct cams_key k = make_key(7);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(7, 100, 60);
	e2 = make_entry(7, 200, 60);
	CHECK(cache_put(c, e1, NULL) == 0);
	CHECK(cache_load(c, &k, 150, &got) == 1);
	CHECK(got == e1);
	CHECK(cache_put(c, e2, NULL) == 0);
	CHECK(count_rows(c) == 1);
	/* A reader holding the old entry keeps it alive and intact. */
	CHECK(got && got->fetched_at_s == 100 && strstr(got->body, "\"fetched\":100"));
	cache_entry_unref(got);
	got = NULL;
	CHECK(cache_load(c, &k, 210, &got) == 1);
	CHECK(got == e2);
	cache_entry_unref(got);
	cache_close(c);

	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	got = NULL;
	CHECK(cache_load(c, &k, 220, &got) == 1);
	CHECK(got && entries_equal(got, e2));
	cache_entry_unref(got);
	CHECK(count_rows(c) == 1);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	tmp_remove(&t);
}

TEST(negative_entry_round_trips_without_pem)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(9);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_negative(9, 500, 300);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_load(c, &k, 600, &got) == 1);
	if (got) {
		CHECK(entries_equal(got, e));
		CHECK(got->kind == CACHE_KIND_NEGATIVE);
		CHECK(got->pem == NULL);
		CHECK(got->http_status == 404);
		CHECK_STR(got->status, "");
		CHECK_STR(got->etag, "");
		CHECK_STR(got->code, "PhoneNumberNotFound");
	}
	cache_entry_unref(got);
	cache_close(c);
	cache_entry_unref(e);
	tmp_remove(&t);
}

TEST(freshness_of_a_key_at_every_boundary)
{
	struct cams_key k = make_key(1);
	struct cache_entry *e = cache_entry_new(&k, PEM_TEXT, "x", 1);

	e->kind = CACHE_KIND_KEY;
	e->expires_at_s = 1000;
	/* stale-while-revalidate 60 s, stale-if-error 600 s after expiry. */
	CHECK(cache_entry_freshness(e, 0, 60, 600) == CACHE_FRESH);
	CHECK(cache_entry_freshness(e, 999, 60, 600) == CACHE_FRESH);
	CHECK(cache_entry_freshness(e, 1000, 60, 600) == CACHE_STALE_REVALIDATE);
	CHECK(cache_entry_freshness(e, 1059, 60, 600) == CACHE_STALE_REVALIDATE);
	CHECK(cache_entry_freshness(e, 1060, 60, 600) == CACHE_STALE_IF_ERROR);
	CHECK(cache_entry_freshness(e, 1599, 60, 600) == CACHE_STALE_IF_ERROR);
	CHECK(cache_entry_freshness(e, 1600, 60, 600) == CACHE_EXPIRED);
	CHECK(cache_entry_freshness(e, INT64_MAX, 60, 600) == CACHE_EXPIRED);
	/* No windows: expired right at expires_at. */
	CHECK(cache_entry_freshness(e, 999, 0, 0) == CACHE_FRESH);
	CHECK(cache_entry_freshness(e, 1000, 0, 0) == CACHE_EXPIRED);
	/* Only stale-if-error. */
	CHECK(cache_entry_freshness(e, 1000, 0, 10) == CACHE_STALE_IF_ERROR);
	CHECK(cache_entry_freshness(e, 1010, 0, 10) == CACHE_EXPIRED);
	/* A revalidate window longer than the error window wins throughout. */
	CHECK(cache_entry_freshness(e, 1050, 100, 10) == CACHE_STALE_REVALIDATE);
	CHECK(cache_entry_freshness(e, 1100, 100, 10) == CACHE_EXPIRED);
	/* Huge windows and extreme times do not overflow. */
	e->expires_at_s = INT64_MIN;
	CHECK(cache_entry_freshness(e, INT64_MAX - 1, UINT64_MAX, UINT64_MAX) ==
	      CACHE_STALE_REVALIDATE);
	CHECK(cache_entry_freshness(e, INT64_MIN, 0, 0) == CACHE_EXPIRED);
	cache_entry_unref(e);
}

TEST(freshness_of_a_negative_entry_is_fresh_or_expired)
{
	struct cache_entry *e = make_negative(1, 0, 1000);

	CHECK(cache_entry_freshness(e, 999, 60, 600) == CACHE_FRESH);
	CHECK(cache_entry_freshness(e, 1000, 60, 600) == CACHE_EXPIRED);
	CHECK(cache_entry_freshness(e, 1030, 60, 600) == CACHE_EXPIRED);
	CHECK(cache_entry_freshness(e, 1300, 60, 600) == CACHE_EXPIRED);
	cache_entry_unref(e);
}

TEST(delete_removes_the_entry_from_disk_and_memory)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(3), other = make_key(4);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(3, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_entry_unref(e);
	e = make_entry(4, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_entry_unref(e);
	CHECK(cache_load(c, &k, 110, &got) == 1);
	cache_entry_unref(got);
	CHECK(cache_delete(c, &k) == 1);
	CHECK(cache_delete(c, &k) == 0);
	CHECK(cache_load(c, &k, 120, &got) == 0);
	CHECK(count_rows(c) == 1);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_load(c, &k, 130, &got) == 0);
	got = NULL;
	CHECK(cache_load(c, &other, 130, &got) == 1);
	cache_entry_unref(got);
	cache_close(c);
	tmp_remove(&t);
}

static int key_present(struct cache *c, int i, int64_t now_s)
{
	struct cams_key k = make_key(i);
	struct cache_entry *got = NULL;
	int rc = cache_load(c, &k, now_s, &got);

	cache_entry_unref(got);
	return rc;
}

TEST(max_entries_evicts_the_least_recently_used)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 5, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 5; i++) {
		e = make_entry(i, 100, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	/* Keys 0, 2, 4 are used later; 1 and 3 only when stored, at 100. */
	CHECK(key_present(c, 0, 200) == 1);
	CHECK(key_present(c, 2, 210) == 1);
	CHECK(key_present(c, 4, 220) == 1);
	CHECK(cache_maintain(c, 230) == 0);
	CHECK(count_rows(c) == 5);
	/* Two more keys: the put itself keeps the bound, dropping 1 then 3. */
	for (i = 5; i < 7; i++) {
		e = make_entry(i, 250, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	CHECK(count_rows(c) == 5);
	cache_close(c);

	/* Reopen smaller: maintenance trims to the three most recently used. */
	REQUIRE(open_cache(t.db, 3, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_maintain(c, 300) == 0);
	CHECK(count_rows(c) == 3);
	CHECK(key_present(c, 0, 310) == 0);
	CHECK(key_present(c, 1, 310) == 0);
	CHECK(key_present(c, 2, 310) == 0);
	CHECK(key_present(c, 3, 310) == 0);
	CHECK(key_present(c, 4, 310) == 1);
	CHECK(key_present(c, 5, 310) == 1);
	CHECK(key_present(c, 6, 310) == 1);
	cache_close(c);
	tmp_remove(&t);
}

TEST(eviction_heeds_uses_not_yet_flushed)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 3, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		e = make_entry(i, 100 + i, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	/* Key 0, the oldest on disk, is used; no maintain flushes it before the put. */
	CHECK(key_present(c, 0, 200) == 1);
	e = make_entry(3, 250, 86400);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_entry_unref(e);
	/* Key 1 went, not key 0; and key 0's use reached the disk with it. */
	CHECK(key_present(c, 1, 260) == 0);
	CHECK(key_present(c, 0, 260) == 1);
	CHECK(key_present(c, 2, 260) == 1);
	cache_close(c);
	{
		sqlite3 *db = NULL;
		sqlite3_stmt *st = NULL;
		int64_t used = 0;

		REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
		REQUIRE(sqlite3_prepare_v2(db, "SELECT last_used_at FROM recency JOIN keys ON id = key_id"
					   " WHERE phone = '8613000000000'", -1, &st, NULL) == SQLITE_OK);
		if (sqlite3_step(st) == SQLITE_ROW)
			used = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
		sqlite3_close(db);
		CHECK(used == 260);
	}
	tmp_remove(&t);
}

TEST(recency_of_entries_pushed_out_of_memory_still_counts)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	/* One entry per shard in memory, room for 200 on disk. */
	REQUIRE(open_cache(t.db, 200, 1, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 200; i++) {
		e = make_entry(i, 100, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	/*
	 * Use the even keys: about three share each shard, so most are pushed
	 * out of memory by the next before any flush.
	 */
	for (i = 0; i < 200; i += 2)
		CHECK(key_present(c, i, 500 + i) == 1);
	CHECK(cache_maintain(c, 800) == 0);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 1, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_maintain(c, 900) == 0);
	CHECK(count_rows(c) == 100);
	for (i = 0; i < 200; i++)
		CHECK(key_present(c, i, 800) == (i % 2 == 0));
	cache_close(c);
	tmp_remove(&t);
}

TEST(hot_entries_bound_evicts_from_memory_but_disk_still_serves)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *first = NULL, *again = NULL, *later = NULL;
	struct cams_key k0 = make_key(0);
	char err[256];
	int i, found = 0;

	REQUIRE(tmp_make(&t) == 0);
	/* 64 in memory: one per shard. */
	REQUIRE(open_cache(t.db, 10000, 64, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 500; i++) {
		e = make_entry(i, 100, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	CHECK(cache_load(c, &k0, 200, &first) == 1);
	CHECK(cache_load(c, &k0, 201, &again) == 1);
	/* Two hits in a row: the same published entry, from memory. */
	CHECK(first && first == again);
	cache_entry_unref(again);
	for (i = 1; i < 500; i++)
		found += key_present(c, i, 300) == 1;
	CHECK(found == 499);
	/* Key 0 was pushed out of memory by others in its shard; disk serves it. */
	CHECK(cache_load(c, &k0, 400, &later) == 1);
	CHECK(later && later != first);
	CHECK(later && first && entries_equal(later, first));
	cache_entry_unref(first);
	cache_entry_unref(later);
	cache_close(c);
	tmp_remove(&t);
}

#define READERS 8
#define GETS_PER_READER 20000
#define CONCURRENT_KEYS 300
#define WRITER_PUTS 1500

struct concurrent {
	struct cache *c;
	atomic_int errors;
	atomic_int stop;
};

struct reader_arg {
	struct concurrent *cc;
	unsigned seed;
};

static void *reader_main(void *arg)
{
	struct reader_arg *ra = arg;
	struct concurrent *cc = ra->cc;
	unsigned seed = ra->seed;
	int n;

	for (n = 0; n < GETS_PER_READER; n++) {
		int i = (int)(rand_r(&seed) % CONCURRENT_KEYS);
		struct cams_key k = make_key(i);
		struct cache_entry *e = NULL;
		char expect[64];

		if (cache_load(cc->c, &k, 1000 + n, &e) != 1 || !e) {
			atomic_fetch_add(&cc->errors, 1);
			continue;
		}
		snprintf(expect, sizeof(expect), "\"fetched\":%lld}", (long long)e->fetched_at_s);
		if (strcmp(e->key.phone, k.phone) != 0 ||
		    strcmp(e->key.cust_space_id, k.cust_space_id) != 0 ||
		    !strstr(e->body, k.phone) || !strstr(e->body, expect))
			atomic_fetch_add(&cc->errors, 1);
		cache_entry_unref(e);
	}
	return NULL;
}

static void *writer_main(void *arg)
{
	struct concurrent *cc = arg;
	int n;

	for (n = 0; n < WRITER_PUTS && !atomic_load(&cc->stop); n++) {
		struct cache_entry *e = make_entry(n % CONCURRENT_KEYS, 2000 + n, 86400);

		if (cache_put(cc->c, e, NULL) != 0)
			atomic_fetch_add(&cc->errors, 1);
		cache_entry_unref(e);
		if (n % 100 == 0 && cache_maintain(cc->c, 2000 + n) != 0)
			atomic_fetch_add(&cc->errors, 1);
	}
	return NULL;
}

TEST(concurrent_readers_see_whole_entries_while_a_writer_replaces_them)
{
	struct tmp t;
	struct concurrent cc;
	struct reader_arg args[READERS];
	pthread_t readers[READERS], writer;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	memset(&cc, 0, sizeof(cc));
	/* A small memory layer, so readers go to disk a good part of the time. */
	REQUIRE(open_cache(t.db, 10000, 128, 0, &cc.c, err, sizeof(err)) == 0);
	for (i = 0; i < CONCURRENT_KEYS; i++) {
		e = make_entry(i, 1000, 86400);
		CHECK(cache_put(cc.c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	REQUIRE(pthread_create(&writer, NULL, writer_main, &cc) == 0);
	for (i = 0; i < READERS; i++) {
		args[i].cc = &cc;
		args[i].seed = 12345u + (unsigned)i;
		REQUIRE(pthread_create(&readers[i], NULL, reader_main, &args[i]) == 0);
	}
	for (i = 0; i < READERS; i++)
		pthread_join(readers[i], NULL);
	atomic_store(&cc.stop, 1);
	pthread_join(writer, NULL);
	CHECK(atomic_load(&cc.errors) == 0);
	CHECK(count_rows(cc.c) == CONCURRENT_KEYS);
	CHECK(cache_integrity_check(cc.c) == 0);
	/* The reader threads have exited; their connections were closed then. */
	cache_close(cc.c);
	tmp_remove(&t);
}

TEST(read_only_open_serves_reads_and_refuses_writes)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(2);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(2, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_close(c);

	REQUIRE(open_cache(t.db, 100, 100, 1, &c, err, sizeof(err)) == 0);
	CHECK(cache_load(c, &k, 110, &got) == 1);
	CHECK(got && entries_equal(got, e));
	cache_entry_unref(got);
	CHECK(cache_put(c, e, NULL) == -EIO);
	CHECK(cache_delete(c, &k) == -EIO);
	CHECK(cache_maintain(c, 120) == 0);
	CHECK(count_rows(c) == 1);
	CHECK(cache_integrity_check(c) == 0);
	cache_close(c);
	cache_entry_unref(e);
	tmp_remove(&t);
}

TEST(a_locked_database_makes_put_fail_with_eio_and_changes_nothing)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e1, *e2, *got = NULL;
	struct cams_key k = make_key(5);
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(5, 100, 60);
	e2 = make_entry(5, 200, 60);
	CHECK(cache_put(c, e1, NULL) == 0);
	/* Another process holds the write lock past our busy timeout (5 s). */
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
	CHECK(cache_put(c, e2, NULL) == -EIO);
	CHECK(cache_load(c, &k, 150, &got) == 1);
	CHECK(got == e1);
	cache_entry_unref(got);
	CHECK(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	/* The lock gone, the same put works. */
	CHECK(cache_put(c, e2, NULL) == 0);
	got = NULL;
	CHECK(cache_load(c, &k, 250, &got) == 1);
	CHECK(got == e2);
	cache_entry_unref(got);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	tmp_remove(&t);
}

static void stats_of(struct cache *c, struct cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	cache_stats(c, st);
}

TEST(a_miss_then_put_costs_one_store_read_and_one_write_transaction)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL, *replaced = (struct cache_entry *)&replaced;
	struct cams_key k = make_key(21);
	struct cache_stats st;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	stats_of(c, &st);
	CHECK(st.store_reads == 0 && st.store_write_transactions == 0);
	/* The way in: memory misses, one read of the store finds nothing. */
	CHECK(cache_lookup(c, &k, 100, &got) == 0);
	CHECK(cache_load(c, &k, 100, &got) == 0);
	/* The way out: one write transaction, which also says nothing was replaced. */
	e = make_entry(21, 100, 60);
	CHECK(cache_put(c, e, &replaced) == 0);
	CHECK(replaced == NULL);
	stats_of(c, &st);
	CHECK(st.store_reads == 1);
	CHECK(st.store_write_transactions == 1);
	/* Then hits: memory only. */
	got = NULL;
	CHECK(cache_lookup(c, &k, 110, &got) == 1 && got == e);
	cache_entry_unref(got);
	got = NULL;
	CHECK(cache_load(c, &k, 111, &got) == 1 && got == e);
	cache_entry_unref(got);
	stats_of(c, &st);
	CHECK(st.store_reads == 1 && st.store_write_transactions == 1);
	cache_entry_unref(e);
	cache_close(c);
	tmp_remove(&t);
}

TEST(a_rotation_after_a_restart_costs_one_read_and_one_write)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e1, *e2, *got = NULL, *replaced = NULL;
	struct cams_key k = make_key(22);
	struct cache_stats st;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(22, 100, 10);
	CHECK(cache_put(c, e1, NULL) == 0);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	/* Expired on disk: the load finds it (and promotes it), the caller refetches. */
	CHECK(cache_lookup(c, &k, 200, &got) == 0);
	CHECK(cache_load(c, &k, 200, &got) == 1);
	CHECK(got && entries_equal(got, e1));
	cache_entry_unref(got);
	e2 = make_entry(22, 200, 10);
	snprintf(e2->etag, sizeof(e2->etag), "%064d", 99);
	CHECK(cache_put(c, e2, &replaced) == 0);
	CHECK(replaced && entries_equal(replaced, e1));
	cache_entry_unref(replaced);
	stats_of(c, &st);
	CHECK(st.store_reads == 1);
	CHECK(st.store_write_transactions == 1);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	tmp_remove(&t);
}

struct lookup_arg {
	struct cache *c;
	int hits, misses;
};

static void *lookup_thread(void *arg)
{
	struct lookup_arg *la = arg;

	for (int i = 0; i < 40; i++) {
		struct cams_key k = make_key(i);
		struct cache_entry *e = NULL;

		if (cache_lookup(la->c, &k, 500, &e) == 1)
			la->hits++;
		else
			la->misses++;
		cache_entry_unref(e);
	}
	return NULL;
}

TEST(lookup_never_touches_the_store_even_when_it_cannot_be_read)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key far = make_key(1000);
	struct lookup_arg la;
	struct cache_stats st;
	pthread_t th;
	char err[256], moved[160];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 1000, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 20; i++) {
		e = make_entry(i, 100, 600);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	/* No read connection can be opened any more: the file is gone from its path. */
	snprintf(moved, sizeof(moved), "%s.moved", t.db);
	REQUIRE(rename(t.db, moved) == 0);
	/* A thread that never read: lookups open no connection and read nothing. */
	memset(&la, 0, sizeof(la));
	la.c = c;
	REQUIRE(pthread_create(&th, NULL, lookup_thread, &la) == 0);
	pthread_join(th, NULL);
	CHECK(la.hits == 20 && la.misses == 20);
	stats_of(c, &st);
	CHECK(st.store_reads == 0);
	/* The store's read path really is broken: a load of an absent key fails. */
	CHECK(cache_load(c, &far, 500, &got) == -EIO);
	stats_of(c, &st);
	CHECK(st.store_reads == 1);
	REQUIRE(rename(moved, t.db) == 0);
	cache_close(c);
	tmp_remove(&t);
}

TEST(put_reports_what_it_replaced_from_memory_or_from_disk)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *old[200], *replaced;
	char err[256];
	int i, from_memory = 0, from_disk = 0, right = 0;

	REQUIRE(tmp_make(&t) == 0);
	/* One entry per shard in memory (64), 200 keys on disk. */
	REQUIRE(open_cache(t.db, 1000, 64, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 200; i++) {
		old[i] = make_entry(i, 100, 600);
		replaced = (struct cache_entry *)&replaced;
		CHECK(cache_put(c, old[i], &replaced) == 0);
		CHECK(replaced == NULL);
	}
	for (i = 0; i < 200; i++) {
		struct cams_key k = make_key(i);
		struct cache_entry *in_mem = NULL;
		int was_in_memory = cache_lookup(c, &k, 150, &in_mem) == 1;

		cache_entry_unref(in_mem);
		e = make_entry(i, 200, 600);
		replaced = NULL;
		CHECK(cache_put(c, e, &replaced) == 0);
		if (replaced && entries_equal(replaced, old[i]))
			right++;
		if (was_in_memory)
			from_memory += replaced == old[i];
		else
			from_disk += replaced && replaced != old[i];
		cache_entry_unref(replaced);
		cache_entry_unref(e);
	}
	CHECK(right == 200);
	/* Both paths were taken: the memory layer holds far fewer than 200. */
	CHECK(from_memory > 0 && from_disk > 0 && from_memory + from_disk == 200);
	printf("# replaced: %d from memory, %d read inside the put's transaction\n", from_memory,
	       from_disk);
	for (i = 0; i < 200; i++)
		cache_entry_unref(old[i]);
	cache_close(c);
	tmp_remove(&t);
}

TEST(generation_moves_on_put_delete_and_eviction_only)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(1);
	char err[256];
	uint64_t g0, g1, g2, g3;
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 3, 100, 0, &c, err, sizeof(err)) == 0);
	g0 = cache_generation(c);
	e = make_entry(1, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_entry_unref(e);
	g1 = cache_generation(c);
	CHECK(g1 > g0);
	/* Reads, misses and maintenance with nothing to evict change nothing. */
	CHECK(cache_lookup(c, &k, 110, &got) == 1);
	cache_entry_unref(got);
	CHECK(cache_load(c, &k, 111, &got) == 1);
	cache_entry_unref(got);
	CHECK(cache_maintain(c, 112) == 0);
	CHECK(cache_generation(c) == g1);
	CHECK(cache_delete(c, &k) == 1);
	g2 = cache_generation(c);
	CHECK(g2 > g1);
	/* A failed put moves nothing. */
	cache_close(c);
	REQUIRE(open_cache(t.db, 3, 100, 1, &c, err, sizeof(err)) == 0);
	g0 = cache_generation(c);
	e = make_entry(1, 100, 60);
	CHECK(cache_put(c, e, NULL) == -EIO);
	cache_entry_unref(e);
	CHECK(cache_generation(c) == g0);
	cache_close(c);
	/* Evictions by the max_entries bound are removals too. */
	REQUIRE(open_cache(t.db, 3, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		e = make_entry(i, 100, 60);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	g3 = cache_generation(c);
	e = make_entry(3, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0); /* stores one, evicts one */
	cache_entry_unref(e);
	CHECK(cache_generation(c) == g3 + 2);
	cache_close(c);
	tmp_remove(&t);
}

/* Make every later insert into keys fail inside its transaction, from another connection. */
static int break_inserts(const char *path)
{
	sqlite3 *db = NULL;
	int rc;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		return -1;
	rc = sqlite3_exec(db,
			  "CREATE TRIGGER full BEFORE INSERT ON keys"
			  " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
			  NULL, NULL, NULL);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

TEST(a_put_whose_transaction_fails_publishes_nothing)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e1, *e2, *e3, *got = NULL;
	struct cache_entry *replaced = (struct cache_entry *)&replaced;
	struct cams_key k = make_key(5), k2 = make_key(6);
	char err[256];
	uint64_t gen;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(5, 100, 60);
	e2 = make_entry(5, 200, 60);
	e3 = make_entry(6, 200, 60);
	CHECK(cache_put(c, e1, NULL) == 0);
	REQUIRE(break_inserts(t.db) == 0);
	gen = cache_generation(c);
	CHECK(cache_put(c, e2, &replaced) == -EIO);
	CHECK(replaced == (struct cache_entry *)&replaced);
	CHECK(cache_put(c, e3, NULL) == -EIO);
	CHECK(cache_generation(c) == gen);
	/* Memory still shows what disk has: the old entry, and no new key. */
	CHECK(cache_lookup(c, &k, 210, &got) == 1 && got == e1);
	cache_entry_unref(got);
	got = NULL;
	CHECK(cache_lookup(c, &k2, 210, &got) == 0);
	CHECK(count_rows(c) == 1);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	got = NULL;
	CHECK(cache_load(c, &k, 220, &got) == 1 && got && entries_equal(got, e1));
	cache_entry_unref(got);
	got = NULL;
	CHECK(cache_load(c, &k2, 220, &got) == 0);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	cache_entry_unref(e3);
	tmp_remove(&t);
}

TEST(a_put_failing_at_commit_on_a_full_disk_publishes_nothing)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e1, *e2, *got = NULL;
	struct cams_key k = make_key(8);
	char err[256], wal[160];
	struct rlimit old_limit, limit;
	struct stat st;
	void (*old_handler)(int);
	int rc;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(8, 100, 60);
	e2 = make_entry(8, 200, 60);
	CHECK(cache_put(c, e1, NULL) == 0);
	snprintf(wal, sizeof(wal), "%s-wal", t.db);
	REQUIRE(stat(wal, &st) == 0);
	/*
	 * No file of this process may grow past the WAL's size: the put's pages
	 * stay in SQLite's cache until COMMIT appends them to the WAL, which
	 * then fails (EFBIG, as on a full disk).
	 */
	REQUIRE(getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
	old_handler = signal(SIGXFSZ, SIG_IGN);
	limit = old_limit;
	limit.rlim_cur = (rlim_t)st.st_size;
	REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
	rc = cache_put(c, e2, NULL);
	setrlimit(RLIMIT_FSIZE, &old_limit);
	signal(SIGXFSZ, old_handler);
	CHECK(rc == -EIO);
	CHECK(cache_lookup(c, &k, 210, &got) == 1 && got == e1);
	cache_entry_unref(got);
	/* Room again: the same put goes through and is published. */
	CHECK(cache_put(c, e2, NULL) == 0);
	got = NULL;
	CHECK(cache_lookup(c, &k, 220, &got) == 1 && got == e2);
	cache_entry_unref(got);
	CHECK(cache_integrity_check(c) == 0);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	tmp_remove(&t);
}

TEST(load_promotes_a_row_so_the_next_lookup_hits)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL, *again = NULL;
	struct cams_key k = make_key(3);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(3, 100, 60);
	CHECK(cache_put(c, e, NULL) == 0);
	cache_entry_unref(e);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_lookup(c, &k, 110, &got) == 0);
	CHECK(cache_load(c, &k, 110, &got) == 1);
	CHECK(cache_lookup(c, &k, 111, &again) == 1);
	CHECK(got && got == again);
	if (again)
		CHECK(atomic_load(&again->last_used_s) == 111);
	cache_entry_unref(got);
	cache_entry_unref(again);
	cache_close(c);
	tmp_remove(&t);
}

static int open_preloaded(const char *path, uint64_t max_entries, uint64_t hot_entries,
			  struct cache **ret, char *errbuf, size_t errbuf_size)
{
	struct cache_options opt = {
		.path = path,
		.max_entries = max_entries,
		.hot_entries = hot_entries,
		.preload = 1,
	};

	return cache_open(&opt, ret, errbuf, errbuf_size);
}

TEST(preload_puts_every_row_in_memory_without_reading_the_store_again)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e[5], *got;
	struct cache_stats before, after;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(!cache_whole_in_memory(c)); /* no preload: memory starts empty */
	for (i = 0; i < 5; i++) {
		e[i] = make_entry(i, 2000 + i, 86400);
		CHECK(cache_put(c, e[i], NULL) == 0);
	}
	cache_close(c);
	REQUIRE(open_preloaded(t.db, 100, 100, &c, err, sizeof(err)) == 0);
	CHECK(cache_whole_in_memory(c));
	cache_stats(c, &before);
	for (i = 0; i < 5; i++) {
		struct cams_key k = make_key(i);

		got = NULL;
		REQUIRE(cache_lookup(c, &k, 5000, &got) == 1);
		/* the same answer; memory keeps the PEM once, in the body */
		CHECK(got->pem == NULL);
		CHECK(got->body_len == e[i]->body_len &&
		      memcmp(got->body, e[i]->body, got->body_len) == 0);
		CHECK(strcmp(got->etag, e[i]->etag) == 0 && got->expires_at_s == e[i]->expires_at_s);
		cache_entry_unref(got);
	}
	cache_stats(c, &after);
	CHECK(after.store_reads == before.store_reads);
	/* a key not in memory is not on disk either */
	{
		struct cams_key k = make_key(99);

		CHECK(cache_lookup(c, &k, 5000, &got) == 0);
	}
	cache_close(c);
	for (i = 0; i < 5; i++)
		cache_entry_unref(e[i]);
	tmp_remove(&t);
}

TEST(preload_smaller_than_the_store_loads_the_most_recent_and_is_not_whole)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	char err[256];
	int i, in_memory = 0;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 1000, 1000, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 200; i++) {
		e = make_entry(i, 2000 + i, 86400); /* used at 2000 + i: the last are newest */
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	cache_close(c);
	/* 64 shards of at least one: ask for 128 of the 200 */
	REQUIRE(open_preloaded(t.db, 1000, 128, &c, err, sizeof(err)) == 0);
	CHECK(!cache_whole_in_memory(c));
	for (i = 0; i < 200; i++) {
		struct cams_key k = make_key(i);

		if (cache_lookup(c, &k, 5000, &got) == 1) {
			in_memory++;
			CHECK(i >= 200 - 128);
			cache_entry_unref(got);
		}
	}
	CHECK(in_memory > 0 && in_memory <= 128);
	{
		struct cams_key k = make_key(0);

		/* the oldest is still on disk */
		CHECK(cache_load(c, &k, 5000, &got) == 1);
		cache_entry_unref(got);
	}
	cache_close(c);
	tmp_remove(&t);
}

TEST(whole_in_memory_ends_when_memory_pushes_an_entry_out)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	/* whole: hot >= max; the store evicts at max before memory is full */
	REQUIRE(open_preloaded(t.db, 64, 64, &c, err, sizeof(err)) == 0);
	CHECK(cache_whole_in_memory(c));
	for (i = 0; i < 300; i++) {
		e = make_entry(i, 2000 + i, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	CHECK(count_rows(c) == 64);
	CHECK(cache_whole_in_memory(c));
	cache_close(c);
	/* read-only (the CLI) never preloads and is never whole */
	{
		struct cache_options opt = {
			.path = t.db, .max_entries = 64, .hot_entries = 64, .read_only = 1, .preload = 1,
		};

		REQUIRE(cache_open(&opt, &c, err, sizeof(err)) == 0);
		CHECK(!cache_whole_in_memory(c));
		cache_close(c);
	}
	tmp_remove(&t);
}

#if defined(__SANITIZE_ADDRESS__)
#define BENCH_BUILD "ASan+UBSan build, several times slower than -O2"
#else
#define BENCH_BUILD "no sanitizers"
#endif

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

TEST(bench_memory_hit_one_thread)
{
	enum { KEYS = 1000, GETS = 1000000 };
	static struct cams_key keys[KEYS];
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int64_t start, elapsed;
	int i, misses = 0;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100000, 65536, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < KEYS; i++) {
		keys[i] = make_key(i);
		e = make_entry(i, 100, 86400);
		CHECK(cache_put(c, e, NULL) == 0);
		cache_entry_unref(e);
	}
	start = mono_ns();
	for (i = 0; i < GETS; i++) {
		e = NULL;
		if (cache_lookup(c, &keys[i % KEYS], 200, &e) != 1)
			misses++;
		cache_entry_unref(e);
	}
	elapsed = mono_ns() - start;
	CHECK(misses == 0);
	printf("# bench: cache_lookup memory hit, 1 thread, %d keys: %.1f ns/op (%s)\n", KEYS,
	       (double)elapsed / GETS, BENCH_BUILD);
	cache_close(c);
	tmp_remove(&t);
}

int main(void)
{
	RUN(put_then_get_returns_the_published_entry_from_memory);
	RUN(entry_read_back_from_disk_after_reopen_has_identical_fields);
	RUN(a_relative_path_keeps_working_after_the_process_changes_directory);
	RUN(replacing_a_key_keeps_one_row_with_the_new_content);
	RUN(negative_entry_round_trips_without_pem);
	RUN(freshness_of_a_key_at_every_boundary);
	RUN(freshness_of_a_negative_entry_is_fresh_or_expired);
	RUN(delete_removes_the_entry_from_disk_and_memory);
	RUN(max_entries_evicts_the_least_recently_used);
	RUN(eviction_heeds_uses_not_yet_flushed);
	RUN(recency_of_entries_pushed_out_of_memory_still_counts);
	RUN(hot_entries_bound_evicts_from_memory_but_disk_still_serves);
	RUN(preload_puts_every_row_in_memory_without_reading_the_store_again);
	RUN(preload_smaller_than_the_store_loads_the_most_recent_and_is_not_whole);
	RUN(whole_in_memory_ends_when_memory_pushes_an_entry_out);
	RUN(concurrent_readers_see_whole_entries_while_a_writer_replaces_them);
	RUN(read_only_open_serves_reads_and_refuses_writes);
	RUN(a_locked_database_makes_put_fail_with_eio_and_changes_nothing);
	RUN(a_miss_then_put_costs_one_store_read_and_one_write_transaction);
	RUN(a_rotation_after_a_restart_costs_one_read_and_one_write);
	RUN(lookup_never_touches_the_store_even_when_it_cannot_be_read);
	RUN(put_reports_what_it_replaced_from_memory_or_from_disk);
	RUN(generation_moves_on_put_delete_and_eviction_only);
	RUN(a_put_whose_transaction_fails_publishes_nothing);
	RUN(a_put_failing_at_commit_on_a_full_disk_publishes_nothing);
	RUN(load_promotes_a_row_so_the_next_lookup_hits);
	RUN(bench_memory_hit_one_thread);
	return harness_done();
}
