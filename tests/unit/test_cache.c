/*
 * test_cache.c -- the persistent key cache: memory and disk layers, recency
 * and the size bounds, concurrency, read-only and broken databases.
 *
 * Each test works in its own directory made with mkdtemp under /tmp and
 * removes it afterwards. Time is passed by hand; only the benchmark reads
 * a clock.
 */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "span.h"

#define PEM_TEXT "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----\n"

struct tmp {
	char dir[64];
	char db[128];
};

static int tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/camskeyd-test-cache-XXXXXX");
	if (!mkdtemp(t->dir))
		return -errno;
	snprintf(t->db, sizeof(t->db), "%s/cache.db", t->dir);
	return 0;
}

/* Remove the directory and the files in it (the database, -wal, -shm). */
static void tmp_remove(struct tmp *t)
{
	char path[512];
	struct dirent *d;
	DIR *dir;

	chmod(t->dir, 0700);
	dir = opendir(t->dir);
	if (dir) {
		while ((d = readdir(dir))) {
			if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", t->dir, d->d_name);
			unlink(path);
		}
		closedir(dir);
	}
	rmdir(t->dir);
}

static struct cams_key make_key(int i)
{
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	/* A third of the keys have no CustSpaceId, as when it is absent. */
	if (i % 3)
		snprintf(k.cust_space_id, sizeof(k.cust_space_id), "space-%d", i % 3);
	snprintf(k.phone, sizeof(k.phone), "8613%09d", i);
	return k;
}

/* A VALID key entry whose body names the phone and fetch time. */
static struct cache_entry *make_entry(int i, int64_t fetched_at_s, int64_t ttl_s)
{
	struct cams_key k = make_key(i);
	char body[256];
	int n;
	struct cache_entry *e;

	n = snprintf(body, sizeof(body), "{\"phone\":\"%s\",\"fetched\":%lld}", k.phone,
		     (long long)fetched_at_s);
	e = cache_entry_new(&k, PEM_TEXT, body, (size_t)n);
	e->kind = CACHE_KIND_KEY;
	e->http_status = 200;
	snprintf(e->status, sizeof(e->status), "VALID");
	snprintf(e->code, sizeof(e->code), "OK");
	snprintf(e->etag, sizeof(e->etag), "%064d", i);
	snprintf(e->request_id, sizeof(e->request_id), "req-%d-%lld", i, (long long)fetched_at_s);
	e->fetched_at_s = fetched_at_s;
	e->expires_at_s = fetched_at_s + ttl_s;
	return e;
}

static struct cache_entry *make_negative(int i, int64_t fetched_at_s, int64_t ttl_s)
{
	struct cams_key k = make_key(i);
	static const char body[] = "{\"Code\":\"PhoneNumberNotFound\"}";
	struct cache_entry *e = cache_entry_new(&k, NULL, body, sizeof(body) - 1);

	e->kind = CACHE_KIND_NEGATIVE;
	e->http_status = 404;
	snprintf(e->code, sizeof(e->code), "PhoneNumberNotFound");
	snprintf(e->request_id, sizeof(e->request_id), "req-neg-%d", i);
	e->fetched_at_s = fetched_at_s;
	e->expires_at_s = fetched_at_s + ttl_s;
	return e;
}

static int open_cache(const char *path, uint64_t max_entries, uint64_t hot_entries,
		      int read_only, struct cache **ret, char *errbuf, size_t errbuf_size)
{
	struct cache_options opt = {
		.path = path,
		.max_entries = max_entries,
		.hot_entries = hot_entries,
		.read_only = read_only,
	};

	return cache_open(&opt, ret, errbuf, errbuf_size);
}

static int entries_equal(const struct cache_entry *a, const struct cache_entry *b)
{
	return strcmp(a->key.cust_space_id, b->key.cust_space_id) == 0 &&
	       strcmp(a->key.phone, b->key.phone) == 0 && a->kind == b->kind &&
	       a->http_status == b->http_status && strcmp(a->status, b->status) == 0 &&
	       strcmp(a->code, b->code) == 0 && strcmp(a->etag, b->etag) == 0 &&
	       strcmp(a->request_id, b->request_id) == 0 && a->fetched_at_s == b->fetched_at_s &&
	       a->expires_at_s == b->expires_at_s &&
	       ((!a->pem && !b->pem) || (a->pem && b->pem && strcmp(a->pem, b->pem) == 0)) &&
	       a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0 &&
	       a->body[a->body_len] == '\0' && b->body[b->body_len] == '\0';
}

static int count_rows(struct cache *c)
{
	uint64_t n = 0;

	if (cache_count(c, &n))
		return -1;
	return (int)n;
}

TEST(put_then_get_returns_the_published_entry_from_memory)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(1);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_get(c, &k, 1000, &got) == 0);
	e = make_entry(1, 1000, 3600);
	CHECK(cache_put(c, e) == 0);
	CHECK(cache_get(c, &k, 1001, &got) == 1);
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
		CHECK(cache_put(c, e[i]) == 0);
	}
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		struct cams_key k = make_key(i);

		got = NULL;
		CHECK(cache_get(c, &k, 5000, &got) == 1);
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
		CHECK(cache_put(c, e) == 0);
		cache_entry_unref(e);
		cache_close(c);
		c = NULL;
	}
	CHECK(open_cache("cache.db", 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(chdir("/") == 0);
	/* The first read opens this thread's connection, after the chdir. */
	if (c)
		CHECK(cache_get(c, &k, 110, &got) == 1);
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
	CHECK(cache_put(c, e1) == 0);
	CHECK(cache_get(c, &k, 150, &got) == 1);
	CHECK(got == e1);
	CHECK(cache_put(c, e2) == 0);
	CHECK(count_rows(c) == 1);
	/* A reader holding the old entry keeps it alive and intact. */
	CHECK(got && got->fetched_at_s == 100 && strstr(got->body, "\"fetched\":100"));
	cache_entry_unref(got);
	got = NULL;
	CHECK(cache_get(c, &k, 210, &got) == 1);
	CHECK(got == e2);
	cache_entry_unref(got);
	cache_close(c);

	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	got = NULL;
	CHECK(cache_get(c, &k, 220, &got) == 1);
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
	CHECK(cache_put(c, e) == 0);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_get(c, &k, 600, &got) == 1);
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
	CHECK(cache_put(c, e) == 0);
	cache_entry_unref(e);
	e = make_entry(4, 100, 60);
	CHECK(cache_put(c, e) == 0);
	cache_entry_unref(e);
	CHECK(cache_get(c, &k, 110, &got) == 1);
	cache_entry_unref(got);
	CHECK(cache_delete(c, &k) == 1);
	CHECK(cache_delete(c, &k) == 0);
	CHECK(cache_get(c, &k, 120, &got) == 0);
	CHECK(count_rows(c) == 1);
	cache_close(c);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_get(c, &k, 130, &got) == 0);
	got = NULL;
	CHECK(cache_get(c, &other, 130, &got) == 1);
	cache_entry_unref(got);
	cache_close(c);
	tmp_remove(&t);
}

static int key_present(struct cache *c, int i, int64_t now_s)
{
	struct cams_key k = make_key(i);
	struct cache_entry *got = NULL;
	int rc = cache_get(c, &k, now_s, &got);

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
		CHECK(cache_put(c, e) == 0);
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
		CHECK(cache_put(c, e) == 0);
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
		CHECK(cache_put(c, e) == 0);
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
		CHECK(cache_put(c, e) == 0);
		cache_entry_unref(e);
	}
	CHECK(cache_get(c, &k0, 200, &first) == 1);
	CHECK(cache_get(c, &k0, 201, &again) == 1);
	/* Two hits in a row: the same published entry, from memory. */
	CHECK(first && first == again);
	cache_entry_unref(again);
	for (i = 1; i < 500; i++)
		found += key_present(c, i, 300) == 1;
	CHECK(found == 499);
	/* Key 0 was pushed out of memory by others in its shard; disk serves it. */
	CHECK(cache_get(c, &k0, 400, &later) == 1);
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

		if (cache_get(cc->c, &k, 1000 + n, &e) != 1 || !e) {
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

		if (cache_put(cc->c, e) != 0)
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
		CHECK(cache_put(cc.c, e) == 0);
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
	CHECK(cache_put(c, e) == 0);
	cache_close(c);

	REQUIRE(open_cache(t.db, 100, 100, 1, &c, err, sizeof(err)) == 0);
	CHECK(cache_get(c, &k, 110, &got) == 1);
	CHECK(got && entries_equal(got, e));
	cache_entry_unref(got);
	CHECK(cache_put(c, e) == -EIO);
	CHECK(cache_delete(c, &k) == -EIO);
	CHECK(cache_maintain(c, 120) == 0);
	CHECK(count_rows(c) == 1);
	CHECK(cache_integrity_check(c) == 0);
	cache_close(c);
	cache_entry_unref(e);
	tmp_remove(&t);
}

TEST(read_only_open_of_a_missing_or_tableless_file_fails)
{
	struct tmp t;
	struct cache *c = NULL;
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	err[0] = '\0';
	CHECK(open_cache(t.db, 100, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, t.db) != NULL);
	CHECK(access(t.db, F_OK) != 0);
	/* A valid SQLite file without our table. */
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "CREATE TABLE other (x)", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	err[0] = '\0';
	CHECK(open_cache(t.db, 100, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "no keys table") != NULL);
	tmp_remove(&t);
}

TEST(integrity_check_of_a_healthy_database_is_ok)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 20; i++) {
		e = i % 2 ? make_entry(i, 100, 60) : make_negative(i, 100, 60);
		CHECK(cache_put(c, e) == 0);
		cache_entry_unref(e);
	}
	CHECK(cache_integrity_check(c) == 0);
	cache_close(c);
	tmp_remove(&t);
}

TEST(a_file_that_is_not_sqlite_fails_to_open_with_a_message)
{
	struct tmp t;
	struct cache *c = NULL;
	char err[256];
	FILE *f;
	int i;

	REQUIRE(tmp_make(&t) == 0);
	f = fopen(t.db, "w");
	REQUIRE(f != NULL);
	for (i = 0; i < 200; i++)
		fputs("this is not a database, it is a text file\n", f);
	fclose(f);
	err[0] = '\0';
	CHECK(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, t.db) != NULL);
	CHECK(strstr(err, "not a database") != NULL);
	err[0] = '\0';
	CHECK(open_cache(t.db, 100, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "not a database") != NULL);
	tmp_remove(&t);
}

TEST(a_newer_schema_version_is_refused)
{
	struct tmp t;
	struct cache *c = NULL;
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	err[0] = '\0';
	CHECK(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "newer") != NULL);
	tmp_remove(&t);
}

TEST(a_version_1_database_is_upgraded_with_its_entries)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e = NULL;
	struct cams_key key;
	sqlite3 *db = NULL;
	char err[256];
	int64_t version = 0;
	sqlite3_stmt *st;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	/* the version 1 layout, as 0.1 created it */
	REQUIRE(sqlite3_exec(db,
			     "CREATE TABLE keys (cust_space_id TEXT NOT NULL, phone TEXT NOT NULL,"
			     " kind INTEGER NOT NULL, http_status INTEGER NOT NULL,"
			     " status TEXT NOT NULL, code TEXT NOT NULL, etag TEXT NOT NULL,"
			     " request_id TEXT NOT NULL, pem TEXT, body BLOB NOT NULL,"
			     " fetched_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
			     " last_used_at INTEGER NOT NULL,"
			     " PRIMARY KEY (cust_space_id, phone)) WITHOUT ROWID;"
			     "CREATE INDEX keys_last_used_at ON keys (last_used_at);"
			     "INSERT INTO keys VALUES ('', '8613912345678', 0, 200, 'VALID', 'OK',"
			     " 'ab', 'R1', 'PEM', '{}', 100, 200, 150);"
			     "PRAGMA user_version = 1;",
			     NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	memset(&key, 0, sizeof(key));
	memcpy(key.phone, "8613912345678", 14);
	REQUIRE(cache_get(c, &key, 150, &e) == 1);
	CHECK_STR(e->request_id, "R1");
	CHECK(e->expires_at_s == 200);
	cache_entry_unref(e);
	cache_close(c);
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	REQUIRE(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	CHECK(version == 2);
	tmp_remove(&t);
}

TEST(a_missing_directory_fails_to_open_with_a_message)
{
	struct tmp t;
	struct cache *c = NULL;
	char path[256], err[256];

	REQUIRE(tmp_make(&t) == 0);
	snprintf(path, sizeof(path), "%s/no/such/dir/cache.db", t.dir);
	err[0] = '\0';
	CHECK(open_cache(path, 100, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "cannot open") != NULL);
	CHECK(strstr(err, path) != NULL);
	tmp_remove(&t);
}

TEST(the_database_file_is_created_mode_0600)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	struct stat st;
	char err[256];
	mode_t old = umask(0);

	REQUIRE(tmp_make(&t) == 0);
	CHECK(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	umask(old);
	REQUIRE(c != NULL);
	e = make_entry(1, 1, 1);
	CHECK(cache_put(c, e) == 0);
	cache_entry_unref(e);
	CHECK(stat(t.db, &st) == 0 && (st.st_mode & 07777) == 0600);
	cache_close(c);
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
	CHECK(cache_put(c, e1) == 0);
	/* Another process holds the write lock past our busy timeout (5 s). */
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
	CHECK(cache_put(c, e2) == -EIO);
	CHECK(cache_get(c, &k, 150, &got) == 1);
	CHECK(got == e1);
	cache_entry_unref(got);
	CHECK(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	/* The lock gone, the same put works. */
	CHECK(cache_put(c, e2) == 0);
	got = NULL;
	CHECK(cache_get(c, &k, 250, &got) == 1);
	CHECK(got == e2);
	cache_entry_unref(got);
	cache_close(c);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	tmp_remove(&t);
}

TEST(an_unwritable_database_makes_put_fail_without_crashing)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	char err[256];
	int rc;

	if (geteuid() == 0) {
		/* Root writes through any mode; the locked and read-only tests cover it. */
		SKIP("root writes through file modes; needs a non-root user");
	}
	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(1, 100, 60);
	CHECK(cache_put(c, e) == 0);
	cache_close(c);
	CHECK(chmod(t.db, 0400) == 0);
	CHECK(chmod(t.dir, 0500) == 0);
	rc = open_cache(t.db, 100, 100, 0, &c, err, sizeof(err));
	/* Either SQLite cannot even open it (no -shm can be made) or writes fail. */
	if (rc == 0) {
		printf("# unwritable database opened; put must fail\n");
		CHECK(cache_put(c, e) == -EIO);
		cache_close(c);
	} else {
		printf("# unwritable database refused at open: %s\n", err);
		CHECK(rc == -EIO && strstr(err, t.db) != NULL);
	}
	cache_entry_unref(e);
	chmod(t.dir, 0700);
	chmod(t.db, 0600);
	tmp_remove(&t);
}

struct visit {
	char phones[16][LIMIT_PHONE_MAX_DIGITS + 1];
	int n, stop_after;
};

static int visit_one(const struct cache_entry *e, void *cls)
{
	struct visit *v = cls;

	if (v->n < 16)
		snprintf(v->phones[v->n], sizeof(v->phones[0]), "%s", e->key.phone);
	v->n++;
	return v->stop_after && v->n >= v->stop_after;
}

TEST(foreach_visits_every_entry_in_key_order_until_told_to_stop)
{
	struct tmp t;
	struct cache *c = NULL;
	struct cache_entry *e;
	struct visit v;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_cache(t.db, 100, 100, 0, &c, err, sizeof(err)) == 0);
	/* Stored out of order, all with the same CustSpaceId "". */
	for (i = 12; i >= 0; i -= 3) {
		e = make_entry(i, 100, 60);
		CHECK(cache_put(c, e) == 0);
		cache_entry_unref(e);
	}
	memset(&v, 0, sizeof(v));
	CHECK(cache_foreach(c, visit_one, &v) == 0);
	CHECK(v.n == 5);
	CHECK_STR(v.phones[0], "8613000000000");
	CHECK_STR(v.phones[1], "8613000000003");
	CHECK_STR(v.phones[4], "8613000000012");
	memset(&v, 0, sizeof(v));
	v.stop_after = 2;
	CHECK(cache_foreach(c, visit_one, &v) == 0);
	CHECK(v.n == 2);
	cache_close(c);
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
		CHECK(cache_put(c, e) == 0);
		cache_entry_unref(e);
	}
	start = mono_ns();
	for (i = 0; i < GETS; i++) {
		e = NULL;
		if (cache_get(c, &keys[i % KEYS], 200, &e) != 1)
			misses++;
		cache_entry_unref(e);
	}
	elapsed = mono_ns() - start;
	CHECK(misses == 0);
	printf("# bench: cache_get memory hit, 1 thread, %d keys: %.1f ns/op (%s)\n", KEYS,
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
	RUN(recency_of_entries_pushed_out_of_memory_still_counts);
	RUN(hot_entries_bound_evicts_from_memory_but_disk_still_serves);
	RUN(concurrent_readers_see_whole_entries_while_a_writer_replaces_them);
	RUN(read_only_open_serves_reads_and_refuses_writes);
	RUN(read_only_open_of_a_missing_or_tableless_file_fails);
	RUN(integrity_check_of_a_healthy_database_is_ok);
	RUN(a_file_that_is_not_sqlite_fails_to_open_with_a_message);
	RUN(a_newer_schema_version_is_refused);
	RUN(a_version_1_database_is_upgraded_with_its_entries);
	RUN(a_missing_directory_fails_to_open_with_a_message);
	RUN(the_database_file_is_created_mode_0600);
	RUN(a_locked_database_makes_put_fail_with_eio_and_changes_nothing);
	RUN(an_unwritable_database_makes_put_fail_without_crashing);
	RUN(foreach_visits_every_entry_in_key_order_until_told_to_stop);
	RUN(bench_memory_hit_one_thread);
	return harness_done();
}
