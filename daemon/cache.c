/*
 * cache.c -- the persistent key cache (see cache.h).
 *
 * Two layers.
 *
 * Disk: one SQLite file in WAL mode, synchronous=NORMAL (a power loss may
 * lose the last commits, never corrupts), one table `keys` keyed by
 * (cust_space_id, phone), PRAGMA user_version = 2. Every write is one
 * BEGIN IMMEDIATE ... COMMIT on the single writer connection, which
 * writer_mu serialises (writes come at most at the upstream rate, plus
 * cache_maintain() once a second). Reads on a memory miss go through a
 * read-only connection private to the calling thread, opened on first use
 * and kept in a pthread key; every reader is also on a registry so that
 * cache_close() can close those of threads still alive. Statements are
 * prepared once per connection and reused.
 *
 * Memory: 64 shards, each a fixed-size hash table plus an LRU list under its
 * own mutex, together bounded by hot_entries. A node holds one reference to
 * a published, immutable struct cache_entry. A hit is: hash, lock one
 * shard, find, take a reference, move to the LRU head, unlock, record the
 * time in e->last_used_s -- no global lock, no allocation, no disk write.
 *
 * Invariants.
 *  - Memory never disagrees with disk about what a key maps to once a write
 *    has returned: a put or delete touches memory only after COMMIT, and
 *    under writer_mu, so memory changes in commit order. Every such change
 *    bumps its shard's generation; a reader that fetched a row from disk
 *    publishes it only if the generation did not move meanwhile (otherwise
 *    the row may already be replaced or deleted), and never over an entry
 *    with a later fetched_at.
 *  - Recency is approximate and flows one way: hits store the time in the
 *    entry; cache_maintain() writes last_used_at for nodes whose entry was
 *    used after what the node knows to be on disk (persisted_used_s).
 *    A node pushed out of memory with unflushed recency leaves a small,
 *    bounded note in its shard's pending list so the use is not lost.
 *  - The entry count used for the max_entries bound is kept in memory
 *    (exact while this process is the only writer), read with COUNT(*) at
 *    open, by cache_count() and by cache_maintain().
 *
 * Locks, in order: writer_mu before a shard's mu; readers_mu alone.
 * Does not: judge freshness for the caller (cache_entry_freshness() is a
 * pure function of the time given), render bodies, or read any clock.
 * cache_close() must be called once no other thread uses the cache.
 */
#include "cache.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"

#define CACHE_SCHEMA_VERSION 2
#define CACHE_BUSY_TIMEOUT_MS 5000
#define CACHE_SHARD_BITS 6
#define CACHE_SHARDS (1u << CACHE_SHARD_BITS)
/* cache_maintain() calls (about seconds) between exact recounts. */
#define CACHE_RECOUNT_EVERY 300
/* Hash buckets per shard: a power of two, at least the shard's capacity. */
#define CACHE_BUCKETS_MIN 4
#define CACHE_BUCKETS_MAX (1u << 20)
/* Uses of entries pushed out of memory before a flush, kept per shard. */
#define CACHE_PENDING_MAX 256
#define CACHE_ALIGN 64

/* Column order shared by the point lookup and the scan (row_to_entry()). */
#define CACHE_COLUMNS                                                                  \
	"cust_space_id, phone, kind, http_status, status, code, etag, request_id, pem, " \
	"body, fetched_at, expires_at, last_used_at"

/*
 * A rowid table with a unique index, not WITHOUT ROWID: a row (about 1.3 KiB
 * with the PEM and the rendered body) is far over the ~1 KiB a WITHOUT
 * ROWID page cell holds, and each row would spill into an overflow page of
 * its own (4.5 KiB a row, measured with a million entries).
 */
#define CACHE_TABLE_SQL                                                               \
	"CREATE TABLE IF NOT EXISTS keys ("                                           \
	" cust_space_id TEXT NOT NULL,"                                               \
	" phone TEXT NOT NULL,"                                                       \
	" kind INTEGER NOT NULL,"                                                     \
	" http_status INTEGER NOT NULL,"                                              \
	" status TEXT NOT NULL,"                                                      \
	" code TEXT NOT NULL,"                                                        \
	" etag TEXT NOT NULL,"                                                        \
	" request_id TEXT NOT NULL,"                                                  \
	" pem TEXT,"                                                                  \
	" body BLOB NOT NULL,"                                                        \
	" fetched_at INTEGER NOT NULL,"                                               \
	" expires_at INTEGER NOT NULL,"                                               \
	" last_used_at INTEGER NOT NULL);"                                            \
	"CREATE UNIQUE INDEX IF NOT EXISTS keys_key ON keys (cust_space_id, phone);"  \
	"CREATE INDEX IF NOT EXISTS keys_last_used_at ON keys (last_used_at);"

static const char schema_sql[] = CACHE_TABLE_SQL "PRAGMA user_version = 2;";

/* Version 1 was a WITHOUT ROWID table: copy its rows into version 2. */
static const char upgrade_v1_sql[] =
	"ALTER TABLE keys RENAME TO keys_v1;"
	"DROP INDEX IF EXISTS keys_last_used_at;"
	CACHE_TABLE_SQL
	"INSERT INTO keys (" CACHE_COLUMNS ") SELECT " CACHE_COLUMNS " FROM keys_v1;"
	"DROP TABLE keys_v1;"
	"PRAGMA user_version = 2;";

/* The writer connection's statements, prepared once at open. */
enum wst {
	WST_BEGIN,
	WST_COMMIT,
	WST_ROLLBACK,
	WST_EXISTS,
	WST_UPSERT,
	WST_DELETE,
	WST_TOUCH,
	WST_EVICT,
	WST_COUNT,
	WST_INTEGRITY,
	WST__MAX,
};

static const char *const writer_sql[WST__MAX] = {
	[WST_BEGIN] = "BEGIN IMMEDIATE",
	[WST_COMMIT] = "COMMIT",
	[WST_ROLLBACK] = "ROLLBACK",
	[WST_EXISTS] = "SELECT 1 FROM keys WHERE cust_space_id = ?1 AND phone = ?2",
	[WST_UPSERT] = "INSERT OR REPLACE INTO keys (" CACHE_COLUMNS ")"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[WST_DELETE] = "DELETE FROM keys WHERE cust_space_id = ?1 AND phone = ?2",
	[WST_TOUCH] = "UPDATE keys SET last_used_at = ?3"
		      " WHERE cust_space_id = ?1 AND phone = ?2 AND last_used_at < ?3",
	/* ?2/?3: a key to spare (the one just stored); phone '' spares none. */
	[WST_EVICT] = "DELETE FROM keys WHERE rowid IN"
		      " (SELECT rowid FROM keys"
		      "  WHERE NOT (cust_space_id = ?2 AND phone = ?3)"
		      "  ORDER BY last_used_at LIMIT ?1)"
		      " RETURNING cust_space_id, phone",
	[WST_COUNT] = "SELECT COUNT(*) FROM keys",
	[WST_INTEGRITY] = "PRAGMA integrity_check",
};

static const char reader_get_sql[] =
	"SELECT " CACHE_COLUMNS " FROM keys WHERE cust_space_id = ?1 AND phone = ?2";
static const char reader_scan_sql[] =
	"SELECT " CACHE_COLUMNS " FROM keys ORDER BY cust_space_id, phone";

struct hot_node {
	struct hot_node *chain;        /* next in the hash bucket */
	struct hot_node *newer, *older;/* LRU list */
	uint64_t hash;
	struct cache_entry *e;         /* one reference */
	int64_t persisted_used_s;      /* last_used_at known to be on disk */
};

struct pending_use {
	struct cams_key key;
	int64_t used_s;
};

struct shard {
	_Alignas(CACHE_ALIGN) pthread_mutex_t mu;
	struct hot_node **buckets;
	size_t bucket_mask;
	struct hot_node *newest, *oldest;
	size_t count;
	uint64_t gen;                  /* bumped by every put/delete/evict here */
	struct pending_use *pending;
	size_t pending_len;
};

/* One thread's read connection. */
struct reader {
	struct cache *c;
	sqlite3 *db;
	sqlite3_stmt *get;
	sqlite3_stmt *scan;
	struct reader *prev, *next;    /* registry, under c->readers_mu */
};

struct cache {
	struct shard *shards;          /* CACHE_SHARDS, cache-line aligned */
	size_t shard_cap;              /* nodes per shard, >= 1 */
	char *path;                    /* as given, for messages */
	char *db_path;                 /* absolute, as SQLite resolved it */
	uint64_t max_entries;
	int read_only;

	pthread_mutex_t writer_mu;     /* db, st[], count */
	sqlite3 *db;
	sqlite3_stmt *st[WST__MAX];
	uint64_t count;                /* rows, kept exact by put/delete/evict */
	unsigned maintain_calls;       /* recount every CACHE_RECOUNT_EVERY calls */

	pthread_key_t reader_key;
	int reader_key_ok;
	pthread_mutex_t readers_mu;
	struct reader *readers;
};

/* A list of keys, grown as needed (eviction results, recency to flush). */
struct use_list {
	struct pending_use *items;
	size_t len, cap;
};

static void use_list_add(struct use_list *l, const struct cams_key *key, int64_t used_s)
{
	if (l->len == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	l->items[l->len].key = *key;
	l->items[l->len].used_s = used_s;
	l->len++;
}

/* ---- entries ---------------------------------------------------------- */

struct cache_entry *cache_entry_new(const struct cams_key *key, const char *pem,
				    const char *body, size_t body_len)
{
	struct cache_entry *e = xcalloc(1, sizeof(*e));

	atomic_init(&e->refs, 1);
	atomic_init(&e->last_used_s, 0);
	e->key = *key;
	e->key.cust_space_id[sizeof(e->key.cust_space_id) - 1] = '\0';
	e->key.phone[sizeof(e->key.phone) - 1] = '\0';
	e->kind = CACHE_KIND_KEY;
	e->pem = pem ? xstrdup(pem) : NULL;
	e->body = xmalloc(body_len + 1);
	if (body_len)
		memcpy(e->body, body, body_len);
	e->body[body_len] = '\0';
	e->body_len = body_len;
	return e;
}

struct cache_entry *cache_entry_ref(struct cache_entry *e)
{
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	return e;
}

void cache_entry_unref(struct cache_entry *e)
{
	if (!e)
		return;
	if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(e->pem);
	free(e->body);
	free(e);
}

enum cache_freshness cache_entry_freshness(const struct cache_entry *e, int64_t now_s,
					   uint64_t stale_while_revalidate_s,
					   uint64_t stale_if_error_s)
{
	uint64_t past_s;

	if (now_s < e->expires_at_s)
		return CACHE_FRESH;
	if (e->kind != CACHE_KIND_KEY)
		return CACHE_EXPIRED;
	/* Exact even across the whole int64 range: now_s >= expires_at_s. */
	past_s = (uint64_t)now_s - (uint64_t)e->expires_at_s;
	if (past_s < stale_while_revalidate_s)
		return CACHE_STALE_REVALIDATE;
	if (past_s < stale_if_error_s)
		return CACHE_STALE_IF_ERROR;
	return CACHE_EXPIRED;
}

static int64_t entry_used(const struct cache_entry *e)
{
	return (int64_t)atomic_load_explicit(&e->last_used_s, memory_order_relaxed);
}

static void entry_note_use(struct cache_entry *e, int64_t now_s)
{
	/* Racing hits may store in any order; recency is approximate anyway. */
	if (now_s > (int64_t)atomic_load_explicit(&e->last_used_s, memory_order_relaxed))
		atomic_store_explicit(&e->last_used_s, (long long)now_s, memory_order_relaxed);
}

/* ---- memory layer ------------------------------------------------------ */

static uint64_t key_hash(const struct cams_key *k)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const unsigned char *p;

	for (p = (const unsigned char *)k->cust_space_id; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	/* A byte no id contains separates the two parts. */
	h = (h ^ 0xff) * 0x100000001b3ULL;
	for (p = (const unsigned char *)k->phone; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	/* FNV's high bits are weak and the shard index uses them: finish with murmur3's mixer. */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static bool key_eq(const struct cams_key *a, const struct cams_key *b)
{
	return strcmp(a->phone, b->phone) == 0 &&
	       strcmp(a->cust_space_id, b->cust_space_id) == 0;
}

static struct shard *shard_of(struct cache *c, uint64_t hash)
{
	return &c->shards[hash >> (64 - CACHE_SHARD_BITS)];
}

static struct hot_node *shard_find(struct shard *s, uint64_t hash, const struct cams_key *key)
{
	struct hot_node *n;

	for (n = s->buckets[hash & s->bucket_mask]; n; n = n->chain)
		if (n->hash == hash && key_eq(&n->e->key, key))
			return n;
	return NULL;
}

static void lru_unlink(struct shard *s, struct hot_node *n)
{
	if (n->newer)
		n->newer->older = n->older;
	else
		s->newest = n->older;
	if (n->older)
		n->older->newer = n->newer;
	else
		s->oldest = n->newer;
	n->newer = n->older = NULL;
}

static void lru_push(struct shard *s, struct hot_node *n)
{
	n->newer = NULL;
	n->older = s->newest;
	if (s->newest)
		s->newest->newer = n;
	else
		s->oldest = n;
	s->newest = n;
}

static void lru_touch(struct shard *s, struct hot_node *n)
{
	if (s->newest == n)
		return;
	lru_unlink(s, n);
	lru_push(s, n);
}

static void shard_link(struct shard *s, struct hot_node *n)
{
	struct hot_node **b = &s->buckets[n->hash & s->bucket_mask];

	n->chain = *b;
	*b = n;
	lru_push(s, n);
	s->count++;
}

/* Unlink n and free it; returns its entry's reference for the caller to drop. */
static struct cache_entry *shard_unlink(struct shard *s, struct hot_node *n)
{
	struct hot_node **pp = &s->buckets[n->hash & s->bucket_mask];
	struct cache_entry *e = n->e;

	while (*pp != n)
		pp = &(*pp)->chain;
	*pp = n->chain;
	lru_unlink(s, n);
	s->count--;
	free(n);
	return e;
}

/* n leaves memory but stays on disk: keep its unflushed use, if there is room. */
static void shard_remember_use(struct shard *s, const struct hot_node *n)
{
	int64_t used_s = entry_used(n->e);

	if (used_s <= n->persisted_used_s || s->pending_len >= CACHE_PENDING_MAX)
		return;
	if (!s->pending)
		s->pending = xmalloc(CACHE_PENDING_MAX * sizeof(*s->pending));
	s->pending[s->pending_len].key = n->e->key;
	s->pending[s->pending_len].used_s = used_s;
	s->pending_len++;
}

/* Over capacity: push out the least recently used node; its entry is returned. */
static struct cache_entry *shard_trim(struct cache *c, struct shard *s)
{
	if (s->count <= c->shard_cap || !s->oldest)
		return NULL;
	shard_remember_use(s, s->oldest);
	return shard_unlink(s, s->oldest);
}

/*
 * After a committed put: publish e (taking a reference), replacing any node
 * for the key. Called under writer_mu, so puts reach memory in commit order.
 */
static void hot_store(struct cache *c, struct cache_entry *e, int64_t persisted_used_s)
{
	uint64_t hash = key_hash(&e->key);
	struct shard *s = shard_of(c, hash);
	struct hot_node *fresh = xcalloc(1, sizeof(*fresh)), *n;
	struct cache_entry *drop[2] = { NULL, NULL };

	fresh->hash = hash;
	fresh->e = cache_entry_ref(e);
	fresh->persisted_used_s = persisted_used_s;
	pthread_mutex_lock(&s->mu);
	s->gen++;
	n = shard_find(s, hash, &e->key);
	if (n) {
		drop[0] = n->e;
		n->e = fresh->e;
		n->persisted_used_s = persisted_used_s;
		lru_touch(s, n);
		free(fresh);
	} else {
		shard_link(s, fresh);
		drop[1] = shard_trim(c, s);
	}
	pthread_mutex_unlock(&s->mu);
	cache_entry_unref(drop[0]);
	cache_entry_unref(drop[1]);
}

/* After a committed delete or eviction: forget key. Under writer_mu. */
static void hot_forget(struct cache *c, const struct cams_key *key)
{
	uint64_t hash = key_hash(key);
	struct shard *s = shard_of(c, hash);
	struct cache_entry *drop = NULL;
	struct hot_node *n;
	size_t i;

	pthread_mutex_lock(&s->mu);
	s->gen++;
	n = shard_find(s, hash, key);
	if (n)
		drop = shard_unlink(s, n);
	/* A use noted for a row that is gone must not be flushed. */
	for (i = 0; i < s->pending_len;) {
		if (key_eq(&s->pending[i].key, key))
			s->pending[i] = s->pending[--s->pending_len];
		else
			i++;
	}
	pthread_mutex_unlock(&s->mu);
	cache_entry_unref(drop);
}

/*
 * A reader found e (one reference, ours) on disk after seeing generation
 * gen in its shard. Publish it unless the shard changed meanwhile or holds
 * an entry at least as recent; return the entry to give the caller, with a
 * reference for it (e itself is consumed).
 */
static struct cache_entry *hot_offer(struct cache *c, uint64_t hash, struct cache_entry *e,
				     uint64_t gen, int64_t persisted_used_s)
{
	struct shard *s = shard_of(c, hash);
	struct hot_node *fresh = xcalloc(1, sizeof(*fresh)), *n;
	struct cache_entry *drop[2] = { NULL, NULL }, *result = e;

	fresh->hash = hash;
	fresh->persisted_used_s = persisted_used_s;
	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, &e->key);
	if (n && (s->gen != gen || n->e->fetched_at_s >= e->fetched_at_s)) {
		/* Someone published first; theirs is at least as new. */
		result = cache_entry_ref(n->e);
		lru_touch(s, n);
		drop[0] = e;
	} else if (n) {
		drop[0] = n->e;
		entry_note_use(e, entry_used(n->e));
		n->e = cache_entry_ref(e);
		n->persisted_used_s = persisted_used_s;
		lru_touch(s, n);
	} else if (s->gen == gen) {
		fresh->e = cache_entry_ref(e);
		shard_link(s, fresh);
		fresh = NULL;
		drop[1] = shard_trim(c, s);
	}
	/* else: a write raced with our read; serve what we read, do not keep it. */
	pthread_mutex_unlock(&s->mu);
	free(fresh);
	cache_entry_unref(drop[0]);
	cache_entry_unref(drop[1]);
	return result;
}

static void shards_free(struct cache *c)
{
	struct hot_node *n, *next;
	size_t i, b;

	if (!c->shards)
		return;
	for (i = 0; i < CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];

		for (b = 0; s->buckets && b <= s->bucket_mask; b++) {
			for (n = s->buckets[b]; n; n = next) {
				next = n->chain;
				cache_entry_unref(n->e);
				free(n);
			}
		}
		free(s->buckets);
		free(s->pending);
		pthread_mutex_destroy(&s->mu);
	}
	free(c->shards);
	c->shards = NULL;
}

static void shards_init(struct cache *c, uint64_t hot_entries)
{
	size_t buckets = CACHE_BUCKETS_MIN, i;

	c->shard_cap = (size_t)(hot_entries / CACHE_SHARDS);
	if (c->shard_cap < 1)
		c->shard_cap = 1;
	while (buckets < c->shard_cap && buckets < CACHE_BUCKETS_MAX)
		buckets *= 2;
	/* Shards sit on their own cache lines so their mutexes do not share one. */
	c->shards = aligned_alloc(CACHE_ALIGN, CACHE_SHARDS * sizeof(*c->shards));
	if (!c->shards) {
		fprintf(stderr, "camskeyd: out of memory allocating cache shards\n");
		abort();
	}
	memset(c->shards, 0, CACHE_SHARDS * sizeof(*c->shards));
	for (i = 0; i < CACHE_SHARDS; i++) {
		pthread_mutex_init(&c->shards[i].mu, NULL);
		c->shards[i].buckets = xcalloc(buckets, sizeof(struct hot_node *));
		c->shards[i].bucket_mask = buckets - 1;
	}
}

/* ---- SQLite helpers ---------------------------------------------------- */

static int db_fail(sqlite3 *db, const char *op)
{
	char quoted[256];

	log_error("cache_error", "op=%s err=%s", op,
		  log_quote(db ? sqlite3_errmsg(db) : "no connection", quoted, sizeof(quoted)));
	return -EIO;
}

static int fail_msg(const char *op, const char *msg)
{
	char quoted[256];

	log_error("cache_error", "op=%s err=%s", op, log_quote(msg, quoted, sizeof(quoted)));
	return -EIO;
}

static void st_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static int bind_key(sqlite3_stmt *st, int first, const struct cams_key *k)
{
	int rc;

	rc = sqlite3_bind_text(st, first, k->cust_space_id,
			       (int)strnlen(k->cust_space_id, sizeof(k->cust_space_id)),
			       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, first + 1, k->phone,
				       (int)strnlen(k->phone, sizeof(k->phone)), SQLITE_STATIC);
	return rc;
}

static int bind_str(sqlite3_stmt *st, int i, const char *s, size_t size)
{
	return sqlite3_bind_text(st, i, s, (int)strnlen(s, size), SQLITE_STATIC);
}

/* Run a statement that returns no rows (bindings already set). 0 or -EIO, logged. */
static int wexec(struct cache *c, enum wst which, const char *op)
{
	sqlite3_stmt *st = c->st[which];
	int rc = sqlite3_step(st), ret = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = db_fail(c->db, op);
	st_done(st);
	return ret;
}

static int tx_begin(struct cache *c, const char *op)
{
	return wexec(c, WST_BEGIN, op);
}

static int tx_commit(struct cache *c, const char *op)
{
	return wexec(c, WST_COMMIT, op);
}

/* Undo an open transaction after a failure that was already logged. */
static void tx_abort(struct cache *c)
{
	if (!sqlite3_get_autocommit(c->db)) {
		sqlite3_step(c->st[WST_ROLLBACK]);
		st_done(c->st[WST_ROLLBACK]);
	}
}

/* Copy TEXT column col into dst (size dst_size); -EINVAL if it does not fit. */
static int column_copy(sqlite3_stmt *st, int col, char *dst, size_t dst_size)
{
	const unsigned char *p = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (!p || n < 0 || (size_t)n >= dst_size)
		return -EINVAL;
	memcpy(dst, p, (size_t)n);
	dst[n] = '\0';
	return 0;
}

/*
 * Build an entry from a row in CACHE_COLUMNS order. The row's sizes are
 * checked against limits.h: a damaged or foreign row is an error, not an
 * unbounded allocation. *ret_last_used_s gets last_used_at.
 */
static int row_to_entry(sqlite3_stmt *st, struct cache_entry **ret,
			int64_t *ret_last_used_s)
{
	struct cams_key key;
	struct cache_entry *e;
	const char *pem = NULL;
	const void *body;
	int body_len, pem_len;
	int64_t kind;

	memset(&key, 0, sizeof(key));
	if (column_copy(st, 0, key.cust_space_id, sizeof(key.cust_space_id)) ||
	    column_copy(st, 1, key.phone, sizeof(key.phone)))
		return -EINVAL;
	kind = sqlite3_column_int64(st, 2);
	if (kind != CACHE_KIND_KEY && kind != CACHE_KIND_NEGATIVE)
		return -EINVAL;
	if (sqlite3_column_type(st, 8) != SQLITE_NULL) {
		pem = (const char *)sqlite3_column_text(st, 8);
		pem_len = sqlite3_column_bytes(st, 8);
		if (!pem || pem_len > LIMIT_PEM_MAX_BYTES)
			return -EINVAL;
	}
	body = sqlite3_column_blob(st, 9);
	body_len = sqlite3_column_bytes(st, 9);
	if (body_len < 0 || body_len > LIMIT_BODY_MAX_BYTES || (!body && body_len))
		return -EINVAL;

	e = cache_entry_new(&key, pem, body, (size_t)body_len);
	e->kind = (enum cache_kind)kind;
	e->http_status = sqlite3_column_int(st, 3);
	if (column_copy(st, 4, e->status, sizeof(e->status)) ||
	    column_copy(st, 5, e->code, sizeof(e->code)) ||
	    column_copy(st, 6, e->etag, sizeof(e->etag)) ||
	    column_copy(st, 7, e->request_id, sizeof(e->request_id))) {
		cache_entry_unref(e);
		return -EINVAL;
	}
	e->fetched_at_s = sqlite3_column_int64(st, 10);
	e->expires_at_s = sqlite3_column_int64(st, 11);
	*ret_last_used_s = sqlite3_column_int64(st, 12);
	atomic_store_explicit(&e->last_used_s, (long long)*ret_last_used_s,
			      memory_order_relaxed);
	*ret = e;
	return 0;
}

/* ---- per-thread readers ------------------------------------------------ */

static void reader_close(struct reader *r)
{
	if (!r)
		return;
	sqlite3_finalize(r->get);
	sqlite3_finalize(r->scan);
	if (r->db && sqlite3_close(r->db) != SQLITE_OK)
		db_fail(r->db, "close_reader");
	free(r);
}

/* Thread exit: the key's destructor. */
static void reader_destroy(void *p)
{
	struct reader *r = p;
	struct cache *c = r->c;

	pthread_mutex_lock(&c->readers_mu);
	if (r->prev)
		r->prev->next = r->next;
	else
		c->readers = r->next;
	if (r->next)
		r->next->prev = r->prev;
	pthread_mutex_unlock(&c->readers_mu);
	reader_close(r);
}

/* This thread's read connection, opened on first use. 0 or -EIO, logged. */
static int reader_get(struct cache *c, struct reader **ret)
{
	struct reader *r = pthread_getspecific(c->reader_key);
	int rc;

	if (r) {
		*ret = r;
		return 0;
	}
	r = xcalloc(1, sizeof(*r));
	r->c = c;
	/* The resolved path: the daemon may have changed directory since open. */
	rc = sqlite3_open_v2(c->db_path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(r->db, CACHE_BUSY_TIMEOUT_MS);
	if (sqlite3_prepare_v3(r->db, reader_get_sql, -1, SQLITE_PREPARE_PERSISTENT, &r->get,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(r->db, reader_scan_sql, -1, SQLITE_PREPARE_PERSISTENT, &r->scan,
			       NULL) != SQLITE_OK)
		goto fail;
	if (pthread_setspecific(c->reader_key, r) != 0) {
		fail_msg("open_reader", "pthread_setspecific failed");
		reader_close(r);
		return -EIO;
	}
	pthread_mutex_lock(&c->readers_mu);
	r->next = c->readers;
	if (c->readers)
		c->readers->prev = r;
	c->readers = r;
	pthread_mutex_unlock(&c->readers_mu);
	*ret = r;
	return 0;

fail:
	db_fail(r->db, "open_reader");
	reader_close(r);
	return -EIO;
}

static void readers_close_all(struct cache *c)
{
	struct reader *r, *next;

	pthread_mutex_lock(&c->readers_mu);
	r = c->readers;
	c->readers = NULL;
	pthread_mutex_unlock(&c->readers_mu);
	for (; r; r = next) {
		next = r->next;
		reader_close(r);
	}
}

/* ---- open / close ------------------------------------------------------ */

/* One-row query on the writer: integer result of column 0. */
static int query_int(struct cache *c, const char *sql, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*ret = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			*ret = 0;
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/* Create the file with mode 0600 if it does not exist (SQLite would use 0644). */
static int create_file(const char *path, char *errbuf, size_t errbuf_size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	char msg[128];

	if (fd < 0) {
		if (errno == EEXIST)
			return 0;
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", path,
			strerror_r(errno, msg, sizeof(msg)));
		return -EIO;
	}
	/* The umask may have taken bits away; say exactly what we mean. */
	if (fchmod(fd, 0600) != 0) {
		errbuf_printf(errbuf, errbuf_size, "cannot chmod %s: %s", path,
			strerror_r(errno, msg, sizeof(msg)));
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static int open_schema(struct cache *c, char *errbuf, size_t errbuf_size)
{
	int64_t version = 0, has_table = 0;
	char *errmsg = NULL;

	if (!c->read_only) {
		sqlite3_stmt *st = NULL;
		int rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
		const unsigned char *mode;

		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
		if (!mode || strcmp((const char *)mode, "wal") != 0) {
			errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", c->path,
				mode ? "cannot switch to WAL journal mode" : sqlite3_errmsg(c->db));
			sqlite3_finalize(st);
			return -EIO;
		}
		sqlite3_finalize(st);
		if (sqlite3_exec(c->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
			goto fail_sqlite;
	}
	if (query_int(c, "PRAGMA user_version", &version))
		goto fail_sqlite;
	if (version > CACHE_SCHEMA_VERSION) {
		errbuf_printf(errbuf, errbuf_size,
			"%s: cache schema version %lld is newer than this camskeyd supports (%d)",
			c->path, (long long)version, CACHE_SCHEMA_VERSION);
		return -EIO;
	}
	if (!c->read_only && version < CACHE_SCHEMA_VERSION) {
		if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			goto fail_sqlite;
		if (sqlite3_exec(c->db, version == 1 ? upgrade_v1_sql : schema_sql, NULL, NULL,
				 &errmsg) != SQLITE_OK ||
		    sqlite3_exec(c->db, "COMMIT", NULL, NULL, &errmsg) != SQLITE_OK) {
			errbuf_printf(errbuf, errbuf_size, "cannot create schema in %s: %s", c->path,
				errmsg ? errmsg : sqlite3_errmsg(c->db));
			sqlite3_free(errmsg);
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
	}
	if (query_int(c, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'keys'",
		      &has_table))
		goto fail_sqlite;
	if (!has_table) {
		errbuf_printf(errbuf, errbuf_size, "%s: no keys table (not a camskeyd cache?)", c->path);
		return -EIO;
	}
	return 0;

fail_sqlite:
	errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", c->path, sqlite3_errmsg(c->db));
	return -EIO;
}

int cache_open(const struct cache_options *opt, struct cache **ret, char *errbuf,
	       size_t errbuf_size)
{
	struct cache *c;
	const char *db_path;
	int64_t count = 0;
	int flags, i;

	errbuf_printf(errbuf, errbuf_size, "%s", "");
	c = xcalloc(1, sizeof(*c));
	c->path = xstrdup(opt->path);
	c->max_entries = opt->max_entries;
	c->read_only = opt->read_only;
	pthread_mutex_init(&c->writer_mu, NULL);
	pthread_mutex_init(&c->readers_mu, NULL);
	shards_init(c, opt->hot_entries);

	if (!c->read_only && create_file(c->path, errbuf, errbuf_size))
		goto fail;
	flags = (c->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(c->path, &c->db, flags, NULL) != SQLITE_OK) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", c->path,
			c->db ? sqlite3_errmsg(c->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(c->db, 1);
	db_path = sqlite3_db_filename(c->db, "main");
	c->db_path = xstrdup(db_path && *db_path ? db_path : c->path);
	sqlite3_busy_timeout(c->db, CACHE_BUSY_TIMEOUT_MS);
	if (open_schema(c, errbuf, errbuf_size))
		goto fail;
	for (i = 0; i < WST__MAX; i++) {
		if (sqlite3_prepare_v3(c->db, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &c->st[i], NULL) != SQLITE_OK) {
			errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", c->path,
				sqlite3_errmsg(c->db));
			goto fail;
		}
	}
	if (query_int(c, writer_sql[WST_COUNT], &count)) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", c->path, sqlite3_errmsg(c->db));
		goto fail;
	}
	c->count = (uint64_t)count;
	if (pthread_key_create(&c->reader_key, reader_destroy) != 0) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: out of thread-specific keys", c->path);
		goto fail;
	}
	c->reader_key_ok = 1;
	*ret = c;
	return 0;

fail:
	c->read_only = 1; /* nothing to flush */
	cache_close(c);
	return -EIO;
}

/* Gather recency to flush: nodes used since their last flush, and pending notes. */
static void collect_uses(struct cache *c, struct use_list *uses)
{
	struct hot_node *n;
	size_t i, j;

	for (i = 0; i < CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];

		pthread_mutex_lock(&s->mu);
		for (n = s->newest; n; n = n->older) {
			int64_t used_s = entry_used(n->e);

			if (used_s > n->persisted_used_s)
				use_list_add(uses, &n->e->key, used_s);
		}
		for (j = 0; j < s->pending_len; j++)
			use_list_add(uses, &s->pending[j].key, s->pending[j].used_s);
		s->pending_len = 0;
		pthread_mutex_unlock(&s->mu);
	}
}

/* After the flush committed: tell the nodes what is on disk now. */
static void mark_persisted(struct cache *c, const struct use_list *uses)
{
	size_t i;

	for (i = 0; i < uses->len; i++) {
		const struct pending_use *u = &uses->items[i];
		uint64_t hash = key_hash(&u->key);
		struct shard *s = shard_of(c, hash);
		struct hot_node *n;

		pthread_mutex_lock(&s->mu);
		n = shard_find(s, hash, &u->key);
		if (n && n->persisted_used_s < u->used_s)
			n->persisted_used_s = u->used_s;
		pthread_mutex_unlock(&s->mu);
	}
}

/*
 * Inside a transaction on writer_mu: delete the n least recently used rows,
 * sparing spare (NULL: none), and list their keys in *evicted.
 */
static int evict_lru(struct cache *c, uint64_t n, const struct cams_key *spare,
		     struct use_list *evicted)
{
	sqlite3_stmt *st = c->st[WST_EVICT];
	struct cams_key key;
	int rc;

	rc = sqlite3_bind_int64(st, 1, n > INT64_MAX ? INT64_MAX : (int64_t)n);
	if (rc == SQLITE_OK && spare)
		rc = bind_key(st, 2, spare);
	if (rc == SQLITE_OK && !spare)
		rc = sqlite3_bind_text(st, 2, "", 0, SQLITE_STATIC);
	if (rc == SQLITE_OK && !spare)
		rc = sqlite3_bind_text(st, 3, "", 0, SQLITE_STATIC);
	if (rc != SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&key, 0, sizeof(key));
		if (column_copy(st, 0, key.cust_space_id, sizeof(key.cust_space_id)) ||
		    column_copy(st, 1, key.phone, sizeof(key.phone)))
			continue; /* a foreign row we could not have cached anyway */
		use_list_add(evicted, &key, 0);
	}
	if (rc != SQLITE_DONE)
		goto fail;
	st_done(st);
	return 0;

fail:
	db_fail(c->db, "evict");
	st_done(st);
	return -EIO;
}

static void forget_evicted(struct cache *c, const struct use_list *evicted)
{
	size_t i;

	for (i = 0; i < evicted->len; i++)
		hot_forget(c, &evicted->items[i].key);
}

static int count_rows(struct cache *c, uint64_t *ret)
{
	sqlite3_stmt *st = c->st[WST_COUNT];
	int rc = sqlite3_step(st), ret_code = 0;

	if (rc == SQLITE_ROW)
		*ret = (uint64_t)sqlite3_column_int64(st, 0);
	else
		ret_code = db_fail(c->db, "count");
	st_done(st);
	return ret_code;
}

int cache_maintain(struct cache *c, int64_t now_s)
{
	struct use_list uses = { 0 }, evicted = { 0 };
	uint64_t count = 0;
	size_t i;
	int ret = 0;

	if (c->read_only)
		return 0;
	collect_uses(c, &uses);
	pthread_mutex_lock(&c->writer_mu);
	/*
	 * COUNT(*) reads the whole table (a million rows is a gigabyte); the
	 * count is exact already, so recount only now and then, to absorb
	 * changes made by another process (the cache CLI).
	 */
	if (c->maintain_calls++ % CACHE_RECOUNT_EVERY == 0) {
		ret = count_rows(c, &count);
		if (ret)
			goto out_unlock;
		c->count = count;
	}
	if (uses.len == 0 && c->count <= c->max_entries)
		goto out_unlock;
	ret = tx_begin(c, "maintain");
	if (ret)
		goto out_unlock;
	for (i = 0; i < uses.len; i++) {
		sqlite3_stmt *st = c->st[WST_TOUCH];

		if (bind_key(st, 1, &uses.items[i].key) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 3, uses.items[i].used_s) != SQLITE_OK) {
			ret = db_fail(c->db, "maintain");
			st_done(st);
			goto out_abort;
		}
		ret = wexec(c, WST_TOUCH, "maintain");
		if (ret)
			goto out_abort;
	}
	if (c->count > c->max_entries) {
		ret = evict_lru(c, c->count - c->max_entries, NULL, &evicted);
		if (ret)
			goto out_abort;
	}
	ret = tx_commit(c, "maintain");
	if (ret)
		goto out_abort;
	c->count -= evicted.len < c->count ? evicted.len : c->count;
	forget_evicted(c, &evicted);
	mark_persisted(c, &uses);
	goto out_unlock;

out_abort:
	tx_abort(c);
out_unlock:
	pthread_mutex_unlock(&c->writer_mu);
	free(uses.items);
	free(evicted.items);
	return ret;
}

void cache_close(struct cache *c)
{
	int i;

	if (!c)
		return;
	if (c->db && !c->read_only)
		cache_maintain(c, 0);
	/* Deleting the key first means no destructor can run for it afterwards. */
	if (c->reader_key_ok)
		pthread_key_delete(c->reader_key);
	readers_close_all(c);
	for (i = 0; i < WST__MAX; i++)
		sqlite3_finalize(c->st[i]);
	if (c->db && sqlite3_close(c->db) != SQLITE_OK)
		db_fail(c->db, "close");
	shards_free(c);
	pthread_mutex_destroy(&c->writer_mu);
	pthread_mutex_destroy(&c->readers_mu);
	free(c->path);
	free(c->db_path);
	free(c);
}

/* ---- operations -------------------------------------------------------- */

int cache_get(struct cache *c, const struct cams_key *key, int64_t now_s,
	      struct cache_entry **ret_entry)
{
	uint64_t hash = key_hash(key), gen;
	struct shard *s = shard_of(c, hash);
	struct cache_entry *e = NULL;
	struct hot_node *n;
	struct reader *r;
	int64_t last_used_s = 0;
	int rc, ret;

	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, key);
	if (n) {
		e = cache_entry_ref(n->e);
		lru_touch(s, n);
	}
	gen = s->gen;
	pthread_mutex_unlock(&s->mu);
	if (e) {
		entry_note_use(e, now_s);
		*ret_entry = e;
		return 1;
	}

	ret = reader_get(c, &r);
	if (ret)
		return ret;
	rc = bind_key(r->get, 1, key);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(r->get);
	if (rc == SQLITE_ROW) {
		if (row_to_entry(r->get, &e, &last_used_s)) {
			st_done(r->get);
			return fail_msg("get", "malformed row");
		}
	} else if (rc != SQLITE_DONE) {
		ret = db_fail(r->db, "get");
		st_done(r->get);
		return ret;
	}
	/* Ends the read transaction, so the next lookup sees newer commits. */
	st_done(r->get);
	if (!e)
		return 0;
	e = hot_offer(c, hash, e, gen, last_used_s);
	entry_note_use(e, now_s);
	*ret_entry = e;
	return 1;
}

int cache_put(struct cache *c, struct cache_entry *e)
{
	struct use_list evicted = { 0 };
	sqlite3_stmt *st;
	int64_t last_used_s;
	uint64_t count;
	int exists = 0, rc, ret;

	/* Bodies come from the envelope builder, bounded by the same limit. */
	assert(e->body_len <= LIMIT_BODY_MAX_BYTES);
	if (c->read_only)
		return fail_msg("put", "cache opened read-only");
	last_used_s = entry_used(e);
	if (last_used_s < e->fetched_at_s)
		last_used_s = e->fetched_at_s;

	pthread_mutex_lock(&c->writer_mu);
	ret = tx_begin(c, "put");
	if (ret)
		goto out_unlock;

	st = c->st[WST_EXISTS];
	rc = bind_key(st, 1, &e->key);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		ret = db_fail(c->db, "put");
		st_done(st);
		goto out_abort;
	}
	exists = rc == SQLITE_ROW;
	st_done(st);

	st = c->st[WST_UPSERT];
	rc = bind_key(st, 1, &e->key);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 3, (int)e->kind);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 4, e->http_status);
	if (rc == SQLITE_OK)
		rc = bind_str(st, 5, e->status, sizeof(e->status));
	if (rc == SQLITE_OK)
		rc = bind_str(st, 6, e->code, sizeof(e->code));
	if (rc == SQLITE_OK)
		rc = bind_str(st, 7, e->etag, sizeof(e->etag));
	if (rc == SQLITE_OK)
		rc = bind_str(st, 8, e->request_id, sizeof(e->request_id));
	if (rc == SQLITE_OK)
		rc = e->pem ? sqlite3_bind_text(st, 9, e->pem, -1, SQLITE_STATIC)
			    : sqlite3_bind_null(st, 9);
	if (rc == SQLITE_OK)
		/* A zero-length blob must still not be NULL (body is NOT NULL). */
		rc = sqlite3_bind_blob(st, 10, e->body_len ? e->body : "", (int)e->body_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 11, e->fetched_at_s);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 12, e->expires_at_s);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 13, last_used_s);
	if (rc != SQLITE_OK) {
		ret = db_fail(c->db, "put");
		st_done(st);
		goto out_abort;
	}
	ret = wexec(c, WST_UPSERT, "put");
	if (ret)
		goto out_abort;

	count = c->count + (exists ? 0 : 1);
	if (count > c->max_entries) {
		ret = evict_lru(c, count - c->max_entries, &e->key, &evicted);
		if (ret)
			goto out_abort;
	}
	ret = tx_commit(c, "put");
	if (ret)
		goto out_abort;
	c->count = count - (evicted.len < count ? evicted.len : count);
	hot_store(c, e, last_used_s);
	forget_evicted(c, &evicted);
	goto out_unlock;

out_abort:
	tx_abort(c);
out_unlock:
	pthread_mutex_unlock(&c->writer_mu);
	free(evicted.items);
	return ret;
}

int cache_delete(struct cache *c, const struct cams_key *key)
{
	sqlite3_stmt *st;
	int changes, ret;

	if (c->read_only)
		return fail_msg("delete", "cache opened read-only");
	pthread_mutex_lock(&c->writer_mu);
	ret = tx_begin(c, "delete");
	if (ret)
		goto out_unlock;
	st = c->st[WST_DELETE];
	if (bind_key(st, 1, key) != SQLITE_OK) {
		ret = db_fail(c->db, "delete");
		st_done(st);
		goto out_abort;
	}
	ret = wexec(c, WST_DELETE, "delete");
	if (ret)
		goto out_abort;
	changes = sqlite3_changes(c->db);
	ret = tx_commit(c, "delete");
	if (ret)
		goto out_abort;
	if (changes > 0 && c->count > 0)
		c->count--;
	hot_forget(c, key);
	ret = changes > 0 ? 1 : 0;
	goto out_unlock;

out_abort:
	tx_abort(c);
out_unlock:
	pthread_mutex_unlock(&c->writer_mu);
	return ret;
}

int cache_count(struct cache *c, uint64_t *ret_count)
{
	uint64_t count;

	pthread_mutex_lock(&c->writer_mu);
	count = c->count;
	pthread_mutex_unlock(&c->writer_mu);
	*ret_count = count;
	return 0;
}

int cache_foreach(struct cache *c, int (*fn)(const struct cache_entry *e, void *cls), void *cls)
{
	sqlite3_stmt *st, *own = NULL;
	struct cache_entry *e;
	struct reader *r;
	int64_t last_used_s;
	int rc, ret;

	ret = reader_get(c, &r);
	if (ret)
		return ret;
	st = r->scan;
	/* fn may itself call cache_foreach(): nested scans get their own statement. */
	if (sqlite3_stmt_busy(st)) {
		if (sqlite3_prepare_v2(r->db, reader_scan_sql, -1, &own, NULL) != SQLITE_OK)
			return db_fail(r->db, "foreach");
		st = own;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (row_to_entry(st, &e, &last_used_s)) {
			ret = fail_msg("foreach", "malformed row");
			goto out;
		}
		rc = fn(e, cls);
		cache_entry_unref(e);
		if (rc)
			goto out;
	}
	if (rc != SQLITE_DONE)
		ret = db_fail(r->db, "foreach");
out:
	if (own)
		sqlite3_finalize(own);
	else
		st_done(st);
	return ret;
}

int cache_integrity_check(struct cache *c)
{
	sqlite3_stmt *st;
	const unsigned char *result;
	int rc, ret = 0;

	pthread_mutex_lock(&c->writer_mu);
	st = c->st[WST_INTEGRITY];
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		ret = db_fail(c->db, "integrity_check");
	} else {
		result = sqlite3_column_text(st, 0);
		if (!result || strcmp((const char *)result, "ok") != 0)
			ret = fail_msg("integrity_check", result ? (const char *)result : "no result");
	}
	st_done(st);
	pthread_mutex_unlock(&c->writer_mu);
	return ret;
}

size_t cache_refresh_candidates(struct cache *c, int64_t now_s, uint64_t window_s,
				struct cams_key *ret_keys, size_t max_keys)
{
	size_t n = 0;

	for (size_t i = 0; i < CACHE_SHARDS && n < max_keys; i++) {
		struct shard *s = &c->shards[i];

		pthread_mutex_lock(&s->mu);
		/* Newest first: stop at the first entry not used within the window. */
		for (struct hot_node *h = s->newest; h && n < max_keys; h = h->older) {
			const struct cache_entry *e = h->e;
			int64_t used = entry_used(e);

			if (used < now_s - (int64_t)window_s)
				break;
			if (e->kind == CACHE_KIND_KEY && used > e->fetched_at_s &&
			    e->expires_at_s > now_s && e->expires_at_s - now_s <= (int64_t)window_s)
				ret_keys[n++] = e->key;
		}
		pthread_mutex_unlock(&s->mu);
	}
	return n;
}
