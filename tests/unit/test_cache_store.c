/*
 * test_cache_store.c -- the cache's SQLite store on its own: opening and
 * refusing files, the schema and its upgrade, the file mode, integrity,
 * scans, what a put reads and writes inside its one transaction, the
 * max_entries bound, and the counters.
 *
 * Each test works in its own directory made with mkdtemp under /tmp and
 * removes it afterwards. No memory layer here: test_cache_mem.c has that,
 * test_cache.c the API over both.
 */
#include "cache_store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_fixtures.h"
#include "harness.h"

static int open_store(const char *path, uint64_t max_entries, int read_only,
		      struct cache_store **ret, char *errbuf, size_t errbuf_size)
{
	struct cache_store_options opt = {
		.path = path,
		.max_entries = max_entries,
		.read_only = read_only,
	};

	return cache_store_open(&opt, ret, errbuf, errbuf_size);
}

/* A put as the cache makes it when it does not want the old row: 0 or -EIO. */
static int store_put(struct cache_store *s, const struct cache_entry *e)
{
	return cache_store_put(s, e, e->fetched_at_s, NULL, NULL) < 0 ? -EIO : 0;
}

static int store_get(struct cache_store *s, const struct cams_key *key,
		     struct cache_entry **ret_entry)
{
	int64_t last_used_s;

	return cache_store_get(s, key, ret_entry, &last_used_s);
}

static uint64_t store_rows(struct cache_store *s)
{
	uint64_t n = 0;

	cache_store_count(s, &n);
	return n;
}

TEST(get_reads_one_row_and_counts_one_read)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(1), absent = make_key(2);
	struct cache_stats st;
	int64_t last_used_s = 0;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(1, 100, 60);
	CHECK(cache_store_put(c, e, 150, NULL, NULL) == 0);
	CHECK(cache_store_get(c, &absent, &got, &last_used_s) == 0);
	CHECK(cache_store_get(c, &k, &got, &last_used_s) == 1);
	CHECK(got && got != e && entries_equal(got, e));
	CHECK(last_used_s == 150);
	if (got)
		CHECK(atomic_load(&got->last_used_s) == 150);
	cache_entry_unref(got);
	memset(&st, 0, sizeof(st));
	cache_store_stats(c, &st);
	CHECK(st.store_reads == 2);
	CHECK(st.store_write_transactions == 1);
	CHECK(st.store_scans == 0);
	CHECK(st.store_statements >= 3);
	cache_entry_unref(e);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(put_reads_the_row_it_replaces_inside_its_own_transaction)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e1, *e2, *old = (struct cache_entry *)&old;
	struct cache_stats st;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(3, 100, 60);
	e2 = make_entry(3, 200, 60);
	CHECK(cache_store_put(c, e1, 100, &old, NULL) == 0);
	CHECK(old == NULL);
	CHECK(cache_store_put(c, e2, 200, &old, NULL) == 1);
	CHECK(old && old != e1 && entries_equal(old, e1));
	cache_entry_unref(old);
	/* Without ret_old the put only learns that a row was there. */
	CHECK(cache_store_put(c, e2, 200, NULL, NULL) == 1);
	memset(&st, 0, sizeof(st));
	cache_store_stats(c, &st);
	CHECK(st.store_write_transactions == 3);
	CHECK(st.store_reads == 0);
	CHECK(store_rows(c) == 1);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(a_failed_put_rolls_back_and_leaves_its_outputs_alone)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e1, *e2, *got = NULL, *old = (struct cache_entry *)&old;
	struct cache_use_list evicted = { 0 };
	struct cams_key k = make_key(3);
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 1, 0, &c, err, sizeof(err)) == 0);
	e1 = make_entry(3, 100, 60);
	e2 = make_entry(4, 200, 60);
	CHECK(store_put(c, e1) == 0);
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "CREATE TRIGGER full BEFORE INSERT ON keys"
			       " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
			   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	CHECK(cache_store_put(c, e2, 200, &old, &evicted) == -EIO);
	CHECK(old == (struct cache_entry *)&old);
	CHECK(evicted.len == 0);
	CHECK(store_rows(c) == 1);
	CHECK(store_get(c, &k, &got) == 1 && got && entries_equal(got, e1));
	cache_entry_unref(got);
	/* The writer is usable again: no transaction was left open. */
	CHECK(cache_store_delete(c, &k) == 1);
	CHECK(store_rows(c) == 0);
	cache_entry_unref(e1);
	cache_entry_unref(e2);
	cache_store_close(c);
	tmp_remove(&t);
}

static int evicted_has(const struct cache_use_list *l, int i)
{
	struct cams_key k = make_key(i);

	for (size_t j = 0; j < l->len; j++)
		if (cams_key_equal(&l->items[j].key, &k))
			return 1;
	return 0;
}

TEST(put_evicts_the_least_recently_used_beyond_max_entries_but_never_its_own_key)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_use_list evicted = { 0 };
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 3, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		e = make_entry(i, 100, 60);
		CHECK(cache_store_put(c, e, 100 + i, NULL, &evicted) == 0);
		cache_entry_unref(e);
	}
	CHECK(evicted.len == 0);
	/* Stored as the least recently used of all, yet spared: key 0 goes. */
	e = make_entry(3, 100, 60);
	CHECK(cache_store_put(c, e, 50, NULL, &evicted) == 0);
	cache_entry_unref(e);
	CHECK(evicted.len == 1 && evicted_has(&evicted, 0));
	CHECK(store_rows(c) == 3);
	cache_use_list_free(&evicted);
	/* Replacing a key adds no row and evicts nothing. */
	e = make_entry(1, 200, 60);
	CHECK(cache_store_put(c, e, 200, NULL, &evicted) == 1);
	cache_entry_unref(e);
	CHECK(evicted.len == 0);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(maintain_flushes_uses_then_evicts_the_least_recently_used)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_use_list uses = { 0 }, evicted = { 0 };
	struct cache_entry *e;
	struct cache_stats st;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 10, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 5; i++) {
		e = make_entry(i, 100, 60);
		CHECK(store_put(c, e) == 0);
		cache_entry_unref(e);
	}
	/* Nothing to flush, nothing over the bound: no transaction at all. */
	memset(&st, 0, sizeof(st));
	cache_store_stats(c, &st);
	CHECK(cache_store_maintain(c, &uses, &evicted) == 0);
	{
		struct cache_stats after;

		memset(&after, 0, sizeof(after));
		cache_store_stats(c, &after);
		CHECK(after.store_write_transactions == st.store_write_transactions);
	}
	/* Keys 3 and 4 were used later; a use older than the row's changes nothing. */
	{
		struct cams_key k3 = make_key(3), k4 = make_key(4), k0 = make_key(0);

		cache_use_list_add(&uses, &k3, 300);
		cache_use_list_add(&uses, &k4, 400);
		cache_use_list_add(&uses, &k0, 50);
	}
	CHECK(cache_store_maintain(c, &uses, &evicted) == 0);
	CHECK(evicted.len == 0);
	cache_use_list_free(&uses);
	cache_store_close(c);
	REQUIRE(open_store(t.db, 2, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_store_maintain(c, &uses, &evicted) == 0);
	CHECK(evicted.len == 3);
	CHECK(evicted_has(&evicted, 0) && evicted_has(&evicted, 1) && evicted_has(&evicted, 2));
	CHECK(store_rows(c) == 2);
	cache_use_list_free(&evicted);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(delete_reports_whether_a_row_was_there)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e, *got = NULL;
	struct cams_key k = make_key(9);
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 10, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(9, 100, 60);
	CHECK(store_put(c, e) == 0);
	cache_entry_unref(e);
	CHECK(cache_store_delete(c, &k) == 1);
	CHECK(cache_store_delete(c, &k) == 0);
	CHECK(store_get(c, &k, &got) == 0);
	CHECK(store_rows(c) == 0);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(read_only_open_of_a_missing_or_tableless_file_fails)
{
	struct tmp t;
	struct cache_store *c = NULL;
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	err[0] = '\0';
	CHECK(open_store(t.db, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, t.db) != NULL);
	CHECK(access(t.db, F_OK) != 0);
	/* A valid SQLite file without our table. */
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "CREATE TABLE other (x)", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	err[0] = '\0';
	CHECK(open_store(t.db, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "no keys table") != NULL);
	tmp_remove(&t);
}

TEST(integrity_check_of_a_healthy_database_is_ok)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 20; i++) {
		e = i % 2 ? make_entry(i, 100, 60) : make_negative(i, 100, 60);
		CHECK(store_put(c, e) == 0);
		cache_entry_unref(e);
	}
	CHECK(cache_store_integrity_check(c) == 0);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(a_file_that_is_not_sqlite_fails_to_open_with_a_message)
{
	struct tmp t;
	struct cache_store *c = NULL;
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
	CHECK(open_store(t.db, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, t.db) != NULL);
	CHECK(strstr(err, "not a database") != NULL);
	err[0] = '\0';
	CHECK(open_store(t.db, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "not a database") != NULL);
	tmp_remove(&t);
}

TEST(a_newer_schema_version_is_refused)
{
	struct tmp t;
	struct cache_store *c = NULL;
	sqlite3 *db = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(sqlite3_open(t.db, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "PRAGMA user_version = 4", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	err[0] = '\0';
	CHECK(open_store(t.db, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "newer") != NULL);
	tmp_remove(&t);
}

/*
 * The rows of an old database, stored in this order (its rowids in
 * version 2), with ties in last_used_at: least recently used first, the
 * order is 3, then the three used at 100 (by rowid in version 2, by key in
 * version 1), then 2.
 */
static const struct old_row {
	int key;
	int64_t last_used_at;
} old_rows[] = { { 5, 100 }, { 1, 100 }, { 3, 50 }, { 2, 200 }, { 4, 100 } };
#define OLD_ROWS (sizeof(old_rows) / sizeof(old_rows[0]))

/* The DDL camskeyd 0.1 (version 1) and 0.2 (version 2) created. */
static const char v1_ddl[] =
	"CREATE TABLE keys (cust_space_id TEXT NOT NULL, phone TEXT NOT NULL,"
	" kind INTEGER NOT NULL, http_status INTEGER NOT NULL,"
	" status TEXT NOT NULL, code TEXT NOT NULL, etag TEXT NOT NULL,"
	" request_id TEXT NOT NULL, pem TEXT, body BLOB NOT NULL,"
	" fetched_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
	" last_used_at INTEGER NOT NULL,"
	" PRIMARY KEY (cust_space_id, phone)) WITHOUT ROWID;"
	"CREATE INDEX keys_last_used_at ON keys (last_used_at);"
	"PRAGMA user_version = 1;";
static const char v2_ddl[] =
	"CREATE TABLE keys (cust_space_id TEXT NOT NULL, phone TEXT NOT NULL,"
	" kind INTEGER NOT NULL, http_status INTEGER NOT NULL,"
	" status TEXT NOT NULL, code TEXT NOT NULL, etag TEXT NOT NULL,"
	" request_id TEXT NOT NULL, pem TEXT, body BLOB NOT NULL,"
	" fetched_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
	" last_used_at INTEGER NOT NULL);"
	"CREATE UNIQUE INDEX keys_key ON keys (cust_space_id, phone);"
	"CREATE INDEX keys_last_used_at ON keys (last_used_at);"
	"PRAGMA user_version = 2;";

/* An old database at path with old_rows (make_entry() and a negative one, key 2). */
static int make_old_db(const char *path, const char *ddl)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_open(path, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, ddl, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "INSERT INTO keys (cust_space_id, phone, kind, "
					"http_status, status, code, etag, request_id, pem, body, "
					"fetched_at, expires_at, last_used_at) VALUES "
					"(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
					-1, &st, NULL);
	for (size_t i = 0; rc == SQLITE_OK && i < OLD_ROWS; i++) {
		int k = old_rows[i].key;
		struct cache_entry *e = k == 2 ? make_negative(k, 40, 1000) : make_entry(k, 40, 1000);

		/* One CustSpaceId for all, so that ties in version 1 go by phone. */
		sqlite3_bind_text(st, 1, "", 0, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, e->key.phone, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 3, (int)e->kind);
		sqlite3_bind_int(st, 4, e->http_status);
		sqlite3_bind_text(st, 5, e->status, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, e->code, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 7, e->etag, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 8, e->request_id, -1, SQLITE_TRANSIENT);
		if (e->pem)
			sqlite3_bind_text(st, 9, e->pem, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(st, 9);
		sqlite3_bind_blob(st, 10, e->body, (int)e->body_len, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 11, e->fetched_at_s);
		sqlite3_bind_int64(st, 12, e->expires_at_s);
		sqlite3_bind_int64(st, 13, old_rows[i].last_used_at);
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
		sqlite3_reset(st);
		cache_entry_unref(e);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

static int64_t user_version(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t version = -1;

	if (sqlite3_open(path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return version;
}

/* Old rows all have CustSpaceId "": compare phones. */
static int evicted_has_phone(const struct cache_use_list *l, int i)
{
	struct cams_key k = make_key(i);

	for (size_t j = 0; j < l->len; j++)
		if (strcmp(l->items[j].key.phone, k.phone) == 0)
			return 1;
	return 0;
}

struct load_order {
	char phones[OLD_ROWS][LIMIT_PHONE_MAX_DIGITS + 1];
	size_t n;
};

static void load_one(struct cache_entry *e, int64_t last_used_s, void *cls)
{
	struct load_order *o = cls;

	(void)last_used_s;
	if (o->n < OLD_ROWS)
		snprintf(o->phones[o->n], sizeof(o->phones[0]), "%s", e->key.phone);
	o->n++;
	cache_entry_unref(e);
}

/*
 * Open an old database (made by make_old_db()) and check that every row,
 * its PEM and its recency came through, and that loading and eviction go in
 * the expected order (order[]: keys least recently used first).
 */
static void check_upgrade(const char *path, const int order[OLD_ROWS])
{
	struct cache_use_list uses = { 0 }, evicted = { 0 };
	struct cache_store *c = NULL;
	struct load_order o;
	uint64_t loaded = 0;
	char err[256];

	REQUIRE(open_store(path, 100, 0, &c, err, sizeof(err)) == 0);
	CHECK(store_rows(c) == OLD_ROWS);
	for (size_t i = 0; i < OLD_ROWS; i++) {
		int k = old_rows[i].key;
		struct cache_entry *want = k == 2 ? make_negative(k, 40, 1000) : make_entry(k, 40, 1000);
		struct cache_entry *got = NULL;
		int64_t last_used_s = -1;

		want->key.cust_space_id[0] = '\0';
		CHECK(cache_store_get(c, &want->key, &got, &last_used_s) == 1);
		/* The PEM is derived from the body now: the same text, or NULL if negative. */
		CHECK(got && entries_equal(got, want));
		CHECK(last_used_s == old_rows[i].last_used_at);
		cache_entry_unref(got);
		cache_entry_unref(want);
	}
	memset(&o, 0, sizeof(o));
	CHECK(cache_store_load(c, 100, load_one, &o, &loaded) == 0);
	CHECK(loaded == OLD_ROWS && o.n == OLD_ROWS);
	for (size_t i = 0; i < OLD_ROWS; i++) {
		struct cams_key k = make_key(order[i]);

		CHECK_STR(o.phones[i], k.phone);
	}
	cache_store_close(c);
	CHECK(user_version(path) == 3);

	/* Two over the bound: the two least recently used go, in that order. */
	REQUIRE(open_store(path, OLD_ROWS - 2, 0, &c, err, sizeof(err)) == 0);
	CHECK(cache_store_maintain(c, &uses, &evicted) == 0);
	CHECK(evicted.len == 2 && evicted_has_phone(&evicted, order[0]) &&
	      evicted_has_phone(&evicted, order[1]));
	CHECK(store_rows(c) == OLD_ROWS - 2);
	cache_store_close(c);
	cache_use_list_free(&evicted);
}

TEST(a_version_1_database_is_upgraded_with_its_rows_recency_and_eviction_order)
{
	/* Version 1 broke ties in last_used_at by key. */
	static const int order[OLD_ROWS] = { 3, 1, 4, 5, 2 };
	struct tmp t;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(make_old_db(t.db, v1_ddl) == 0);
	check_upgrade(t.db, order);
	tmp_remove(&t);
}

TEST(a_version_2_database_is_upgraded_with_its_rows_recency_and_eviction_order)
{
	/* Version 2 broke ties in last_used_at by rowid (the order stored). */
	static const int order[OLD_ROWS] = { 3, 5, 1, 4, 2 };
	struct tmp t;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(make_old_db(t.db, v2_ddl) == 0);
	check_upgrade(t.db, order);
	tmp_remove(&t);
}

static int64_t query_one(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	if (sqlite3_open(path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

TEST(a_flush_raises_recency_and_a_deleted_key_takes_its_recency_along)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_use_list uses = { 0 }, evicted = { 0 };
	struct cache_entry *e, *got = NULL;
	struct cams_key k1 = make_key(1);
	int64_t last_used_s = 0;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	for (i = 0; i < 3; i++) {
		e = make_entry(i, 100, 60);
		CHECK(store_put(c, e) == 0);
		cache_entry_unref(e);
	}
	CHECK(query_one(t.db, "SELECT count(*) FROM recency") == 3);
	CHECK(query_one(t.db, "SELECT max(length(pem)) FROM keys") == (int64_t)strlen(PEM_TEXT));
	cache_use_list_add(&uses, &k1, 500);
	CHECK(cache_store_maintain(c, &uses, &evicted) == 0);
	cache_use_list_free(&uses);
	CHECK(cache_store_get(c, &k1, &got, &last_used_s) == 1 && last_used_s == 500);
	cache_entry_unref(got);
	CHECK(query_one(t.db, "SELECT max(last_used_at) FROM recency") == 500);
	/* Another program (the CLI, sqlite3) deletes a row: the trigger drops its recency. */
	CHECK(query_one(t.db, "DELETE FROM keys WHERE phone = '8613000000001' RETURNING 1") == 1);
	CHECK(query_one(t.db, "SELECT count(*) FROM recency") == 2);
	CHECK(query_one(t.db, "SELECT count(*) FROM recency LEFT JOIN keys ON id = key_id"
			      " WHERE id IS NULL") == 0);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(a_read_only_open_of_an_older_schema_asks_for_an_upgrade)
{
	struct tmp t;
	struct cache_store *c = NULL;
	char err[256];

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(make_old_db(t.db, v2_ddl) == 0);
	err[0] = '\0';
	CHECK(open_store(t.db, 100, 1, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "older") != NULL && strstr(err, t.db) != NULL);
	CHECK(user_version(t.db) == 2);
	tmp_remove(&t);
}

TEST(a_missing_directory_fails_to_open_with_a_message)
{
	struct tmp t;
	struct cache_store *c = NULL;
	char path[256], err[256];

	REQUIRE(tmp_make(&t) == 0);
	snprintf(path, sizeof(path), "%s/no/such/dir/cache.db", t.dir);
	err[0] = '\0';
	CHECK(open_store(path, 100, 0, &c, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, "cannot open") != NULL);
	CHECK(strstr(err, path) != NULL);
	tmp_remove(&t);
}

TEST(the_database_file_is_created_mode_0600)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e;
	struct stat st;
	char err[256];
	mode_t old = umask(0);

	REQUIRE(tmp_make(&t) == 0);
	CHECK(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	umask(old);
	REQUIRE(c != NULL);
	e = make_entry(1, 1, 1);
	CHECK(store_put(c, e) == 0);
	cache_entry_unref(e);
	CHECK(stat(t.db, &st) == 0 && (st.st_mode & 07777) == 0600);
	cache_store_close(c);
	tmp_remove(&t);
}

TEST(an_unwritable_database_makes_put_fail_without_crashing)
{
	struct tmp t;
	struct cache_store *c = NULL;
	struct cache_entry *e;
	char err[256];
	int rc;

	if (geteuid() == 0) {
		/* Root writes through any mode; the locked and read-only tests cover it. */
		SKIP("root writes through file modes; needs a non-root user");
	}
	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	e = make_entry(1, 100, 60);
	CHECK(store_put(c, e) == 0);
	cache_store_close(c);
	CHECK(chmod(t.db, 0400) == 0);
	CHECK(chmod(t.dir, 0500) == 0);
	rc = open_store(t.db, 100, 0, &c, err, sizeof(err));
	/* Either SQLite cannot even open it (no -shm can be made) or writes fail. */
	if (rc == 0) {
		printf("# unwritable database opened; put must fail\n");
		CHECK(store_put(c, e) == -EIO);
		cache_store_close(c);
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
	struct cache_store *c = NULL;
	struct cache_entry *e;
	struct visit v;
	char err[256];
	int i;

	REQUIRE(tmp_make(&t) == 0);
	REQUIRE(open_store(t.db, 100, 0, &c, err, sizeof(err)) == 0);
	/* Stored out of order, all with the same CustSpaceId "". */
	for (i = 12; i >= 0; i -= 3) {
		e = make_entry(i, 100, 60);
		CHECK(store_put(c, e) == 0);
		cache_entry_unref(e);
	}
	memset(&v, 0, sizeof(v));
	CHECK(cache_store_foreach(c, visit_one, &v) == 0);
	CHECK(v.n == 5);
	CHECK_STR(v.phones[0], "8613000000000");
	CHECK_STR(v.phones[1], "8613000000003");
	CHECK_STR(v.phones[4], "8613000000012");
	memset(&v, 0, sizeof(v));
	v.stop_after = 2;
	CHECK(cache_store_foreach(c, visit_one, &v) == 0);
	CHECK(v.n == 2);
	cache_store_close(c);
	tmp_remove(&t);
}

int main(void)
{
	RUN(get_reads_one_row_and_counts_one_read);
	RUN(put_reads_the_row_it_replaces_inside_its_own_transaction);
	RUN(a_failed_put_rolls_back_and_leaves_its_outputs_alone);
	RUN(put_evicts_the_least_recently_used_beyond_max_entries_but_never_its_own_key);
	RUN(maintain_flushes_uses_then_evicts_the_least_recently_used);
	RUN(delete_reports_whether_a_row_was_there);
	RUN(read_only_open_of_a_missing_or_tableless_file_fails);
	RUN(integrity_check_of_a_healthy_database_is_ok);
	RUN(a_file_that_is_not_sqlite_fails_to_open_with_a_message);
	RUN(a_newer_schema_version_is_refused);
	RUN(a_version_1_database_is_upgraded_with_its_rows_recency_and_eviction_order);
	RUN(a_version_2_database_is_upgraded_with_its_rows_recency_and_eviction_order);
	RUN(a_read_only_open_of_an_older_schema_asks_for_an_upgrade);
	RUN(a_flush_raises_recency_and_a_deleted_key_takes_its_recency_along);
	RUN(a_missing_directory_fails_to_open_with_a_message);
	RUN(the_database_file_is_created_mode_0600);
	RUN(an_unwritable_database_makes_put_fail_without_crashing);
	RUN(foreach_visits_every_entry_in_key_order_until_told_to_stop);
	return harness_done();
}
