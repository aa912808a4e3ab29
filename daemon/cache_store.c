/*
 * cache_store.c -- the cache's SQLite store (see cache_store.h).
 *
 * Owns: the writer connection and its prepared statements (under
 * writer_mu), the read connections (one per thread, in a pthread key, and
 * on a registry so cache_store_close() can close those of threads still
 * alive), the row count used for the max_entries bound, and the counters.
 *
 * Invariants.
 *  - Every write is one BEGIN IMMEDIATE ... COMMIT under writer_mu; a
 *    failure rolls back before writer_mu is released.
 *  - A read connection never holds a read transaction between calls
 *    (statements are reset before return), so it sees every later commit
 *    and never keeps the WAL from being checkpointed.
 *  - count is exact for this process's writes, re-read with COUNT(*) at
 *    open and every STORE_RECOUNT_EVERY maintain calls.
 *  - Rows read are checked against bounds.h: a damaged or foreign row is an
 *    error, not an unbounded allocation.
 * Locks: writer_mu alone; readers_mu alone.
 * Does not: keep entries in memory, publish anything, read a clock.
 * Threads: any. Logs: SQLite errors (cache_error), once, where they happen.
 */
#include "cache_store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"

#define STORE_SCHEMA_VERSION 3
#define STORE_BUSY_TIMEOUT_MS 5000
/*
 * The writer's page cache, 64 MiB (SQLite's default is 2 MiB). A flush of
 * a second's random hits over a million keys descends keys_key (~30 MiB)
 * and rewrites recency and its index (~10 MiB each): with the default,
 * nearly every page it touches is read again with pread. An upper bound,
 * not an allocation: pages are taken as they are used.
 */
#define STORE_WRITER_CACHE_SQL "PRAGMA cache_size = -65536"
/* cache_store_maintain() calls (about seconds) between exact recounts. */
#define STORE_RECOUNT_EVERY 300

/*
 * Column order shared by every statement that reads rows (row_to_entry()),
 * over keys AS k and its recency row AS r. A key without a recency row
 * (only another program could make one) reads as used when fetched.
 */
#define STORE_COLUMNS                                                                  \
	"k.cust_space_id, k.phone, k.kind, k.http_status, k.status, k.code, k.etag, "    \
	"k.request_id, k.pem, k.body, k.fetched_at, k.expires_at, "                      \
	"coalesce(r.last_used_at, k.fetched_at)"
#define STORE_FROM " FROM keys AS k LEFT JOIN recency AS r ON r.key_id = k.id"

/* The columns a row is written with (bind_entry()), without id and pem. */
#define STORE_DATA_COLUMNS \
	"cust_space_id, phone, kind, http_status, status, code, etag, request_id, body, " \
	"fetched_at, expires_at"

/*
 * Schema version 3.
 *
 * keys: a rowid table with a unique index, not WITHOUT ROWID: a row (about
 * 0.9 KiB with the rendered body) is over the ~1 KiB a WITHOUT ROWID page
 * cell holds with room to spare, and rows would spill into overflow pages
 * of their own (4.5 KiB a row, measured with a million entries). id is an
 * explicit INTEGER PRIMARY KEY so that VACUUM keeps it (recency refers to
 * it).
 *
 * pem is computed, not stored: the rendered body (the envelope served to
 * callers) already holds the PEM as Data.EncryptionPublicKey, and version 2
 * stored it twice. The CLI and the e2e tests read it as before.
 *
 * recency: last_used_at in a narrow table of its own, so that flushing
 * the hits of a second rewrites small rows (~300 a page) and their index
 * entries, not whole 1.4 KiB rows and their pages. Every key has exactly
 * one recency row: put writes both, the trigger deletes it with the key.
 */
#define STORE_TABLE_SQL                                                               \
	"CREATE TABLE IF NOT EXISTS keys ("                                           \
	" id INTEGER PRIMARY KEY,"                                                    \
	" cust_space_id TEXT NOT NULL,"                                               \
	" phone TEXT NOT NULL,"                                                       \
	" kind INTEGER NOT NULL,"                                                     \
	" http_status INTEGER NOT NULL,"                                              \
	" status TEXT NOT NULL,"                                                      \
	" code TEXT NOT NULL,"                                                        \
	" etag TEXT NOT NULL,"                                                        \
	" request_id TEXT NOT NULL,"                                                  \
	" body BLOB NOT NULL,"                                                        \
	" fetched_at INTEGER NOT NULL,"                                               \
	" expires_at INTEGER NOT NULL,"                                               \
	" pem TEXT GENERATED ALWAYS AS (CASE WHEN kind = 0"                           \
	"  AND json_valid(CAST(body AS TEXT))"                                        \
	"  THEN json_extract(CAST(body AS TEXT), '$.Data.EncryptionPublicKey') END)"  \
	"  VIRTUAL);"                                                                 \
	"CREATE UNIQUE INDEX IF NOT EXISTS keys_key ON keys (cust_space_id, phone);"  \
	"CREATE TABLE IF NOT EXISTS recency ("                                        \
	" key_id INTEGER PRIMARY KEY,"                                                \
	" last_used_at INTEGER NOT NULL);"                                            \
	"CREATE INDEX IF NOT EXISTS recency_last_used_at ON recency (last_used_at);"  \
	"CREATE TRIGGER IF NOT EXISTS keys_recency_delete AFTER DELETE ON keys"       \
	" BEGIN DELETE FROM recency WHERE key_id = old.rowid; END;"

static const char schema_sql[] = STORE_TABLE_SQL "PRAGMA user_version = 3;";

/* The columns versions 1 and 2 share with version 3 (all but pem and last_used_at). */
#define STORE_OLD_COLUMNS \
	"cust_space_id, phone, kind, http_status, status, code, etag, request_id, body, " \
	"fetched_at, expires_at"

/*
 * Version 2 (a rowid table with pem and last_used_at in each row): copy the
 * rows keeping their rowids as ids, so the eviction order, ties included
 * (last_used_at, then rowid), is exactly what it was.
 */
static const char upgrade_v2_sql[] =
	"ALTER TABLE keys RENAME TO keys_v2;"
	"DROP INDEX IF EXISTS keys_key;"
	"DROP INDEX IF EXISTS keys_last_used_at;"
	STORE_TABLE_SQL
	"INSERT INTO keys (id, " STORE_OLD_COLUMNS ") SELECT rowid, " STORE_OLD_COLUMNS
	" FROM keys_v2;"
	"INSERT INTO recency (key_id, last_used_at) SELECT rowid, last_used_at FROM keys_v2;"
	"DROP TABLE keys_v2;"
	"PRAGMA user_version = 3;";

/*
 * Version 1 (WITHOUT ROWID, ties in last_used_at ordered by key): ids are
 * handed out in (last_used_at, key) order, so that order survives too.
 */
static const char upgrade_v1_sql[] =
	"ALTER TABLE keys RENAME TO keys_v1;"
	"DROP INDEX IF EXISTS keys_last_used_at;"
	STORE_TABLE_SQL
	"INSERT INTO keys (" STORE_OLD_COLUMNS ") SELECT " STORE_OLD_COLUMNS
	" FROM keys_v1 ORDER BY last_used_at, cust_space_id, phone;"
	"INSERT INTO recency (key_id, last_used_at)"
	" SELECT k.id, o.last_used_at FROM keys AS k"
	" JOIN keys_v1 AS o ON o.cust_space_id = k.cust_space_id AND o.phone = k.phone;"
	"DROP TABLE keys_v1;"
	"PRAGMA user_version = 3;";

/* The writer connection's statements, prepared once at open. */
enum wst {
	WST_BEGIN,
	WST_COMMIT,
	WST_ROLLBACK,
	WST_EXISTS,
	WST_OLD,
	WST_UPSERT,
	WST_RECENCY,
	WST_DELETE,
	WST_TOUCH,
	WST_EVICT,
	WST_EVICT_ONE,
	WST_RAISE,
	WST_COUNT,
	WST_INTEGRITY,
	WST__MAX,
};

static const char *const writer_sql[WST__MAX] = {
	[WST_BEGIN] = "BEGIN IMMEDIATE",
	[WST_COMMIT] = "COMMIT",
	[WST_ROLLBACK] = "ROLLBACK",
	[WST_EXISTS] = "SELECT 1 FROM keys WHERE cust_space_id = ?1 AND phone = ?2",
	[WST_OLD] = "SELECT " STORE_COLUMNS STORE_FROM
		    " WHERE k.cust_space_id = ?1 AND k.phone = ?2",
	/* An upsert, not INSERT OR REPLACE: the row keeps its id (and its recency row). */
	[WST_UPSERT] = "INSERT INTO keys (" STORE_DATA_COLUMNS ")"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
		       " ON CONFLICT (cust_space_id, phone) DO UPDATE SET"
		       " kind = excluded.kind, http_status = excluded.http_status,"
		       " status = excluded.status, code = excluded.code, etag = excluded.etag,"
		       " request_id = excluded.request_id, body = excluded.body,"
		       " fetched_at = excluded.fetched_at, expires_at = excluded.expires_at"
		       " RETURNING id",
	[WST_RECENCY] = "INSERT INTO recency (key_id, last_used_at) VALUES (?1, ?2)"
			" ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
	[WST_DELETE] = "DELETE FROM keys WHERE cust_space_id = ?1 AND phone = ?2",
	/* Raises only: two hits may be flushed out of order. A small row and its index entry. */
	[WST_TOUCH] = "UPDATE recency SET last_used_at = ?3"
		      " WHERE key_id = (SELECT id FROM keys WHERE cust_space_id = ?1 AND phone = ?2)"
		      " AND last_used_at < ?3",
	/*
	 * The eviction candidates: the least recently used rows by recency on
	 * disk, walking recency_last_used_at from the oldest. ?2: the id of a
	 * key to spare (the one just stored), NULL for none.
	 */
	[WST_EVICT] = "SELECT r.key_id, r.last_used_at, k.cust_space_id, k.phone"
		      " FROM recency AS r JOIN keys AS k ON k.id = r.key_id"
		      " WHERE r.key_id IS NOT ?2 ORDER BY r.last_used_at LIMIT ?1",
	/* The trigger removes the recency row. */
	[WST_EVICT_ONE] = "DELETE FROM keys WHERE id = ?1",
	/* A candidate's newer use, known only to memory, flushed before it is judged again. */
	[WST_RAISE] = "UPDATE recency SET last_used_at = ?2 WHERE key_id = ?1 AND last_used_at < ?2",
	[WST_COUNT] = "SELECT COUNT(*) FROM keys",
	[WST_INTEGRITY] = "PRAGMA integrity_check",
};

static const char reader_get_sql[] =
	"SELECT " STORE_COLUMNS STORE_FROM " WHERE k.cust_space_id = ?1 AND k.phone = ?2";
static const char reader_scan_sql[] =
	"SELECT " STORE_COLUMNS STORE_FROM " ORDER BY k.cust_space_id, k.phone";
/*
 * The start-up load: the rows most recently used, least recent first (so
 * the memory layer's LRU order matches the disk's), walking
 * recency_last_used_at, without pem: the rendered body holds the PEM, and
 * memory keeps it once (computing it would also parse every body).
 */
static const char load_sql[] =
	"SELECT k.cust_space_id, k.phone, k.kind, k.http_status, k.status, k.code, k.etag, "
	"k.request_id, NULL, k.body, k.fetched_at, k.expires_at, r.last_used_at "
	"FROM recency AS r JOIN keys AS k ON k.id = r.key_id ORDER BY r.last_used_at "
	"LIMIT -1 OFFSET ?1";

/* One thread's read connection. */
struct reader {
	struct cache_store *s;
	sqlite3 *db;
	sqlite3_stmt *get;
	sqlite3_stmt *scan;
	struct reader *prev, *next;    /* registry, under s->readers_mu */
};

struct cache_store {
	char *path;                    /* as given, for messages */
	char *db_path;                 /* absolute, as SQLite resolved it */
	uint64_t max_entries;
	int read_only;
	int (*newer_use)(void *cls, const struct cams_key *key, int64_t disk_used_s,
			 int64_t *ret_used_s);
	void *newer_use_cls;

	pthread_mutex_t writer_mu;     /* db, st[], count, maintain_calls */
	sqlite3 *db;
	sqlite3_stmt *st[WST__MAX];
	uint64_t count;
	unsigned maintain_calls;

	pthread_key_t reader_key;
	int reader_key_ok;
	pthread_mutex_t readers_mu;
	struct reader *readers;

	atomic_ullong reads, scans, write_transactions, statements;
};

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

static void count_up(atomic_ullong *counter)
{
	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* sqlite3_step(), counted. */
static int step(struct cache_store *s, sqlite3_stmt *st)
{
	count_up(&s->statements);
	return sqlite3_step(st);
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

static int bind_str(sqlite3_stmt *st, int i, const char *str, size_t size)
{
	return sqlite3_bind_text(st, i, str, (int)strnlen(str, size), SQLITE_STATIC);
}

/* Run a writer statement that returns no rows (bindings already set). 0 or -EIO, logged. */
static int wexec(struct cache_store *s, enum wst which, const char *op)
{
	sqlite3_stmt *st = s->st[which];
	int rc = step(s, st), ret = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = db_fail(s->db, op);
	st_done(st);
	return ret;
}

static int tx_begin(struct cache_store *s, const char *op)
{
	count_up(&s->write_transactions);
	return wexec(s, WST_BEGIN, op);
}

static int tx_commit(struct cache_store *s, const char *op)
{
	return wexec(s, WST_COMMIT, op);
}

/* Undo an open transaction after a failure that was already logged. */
static void tx_abort(struct cache_store *s)
{
	if (!sqlite3_get_autocommit(s->db)) {
		step(s, s->st[WST_ROLLBACK]);
		st_done(s->st[WST_ROLLBACK]);
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
 * Build an entry from a row in STORE_COLUMNS order, sizes checked against
 * bounds.h. *ret_last_used_s gets last_used_at. 0 or -EINVAL.
 */
static int row_to_entry(sqlite3_stmt *st, struct cache_entry **ret, int64_t *ret_last_used_s)
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
	atomic_store_explicit(&e->last_used_s, (long long)*ret_last_used_s, memory_order_relaxed);
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
	struct cache_store *s = r->s;

	pthread_mutex_lock(&s->readers_mu);
	if (r->prev)
		r->prev->next = r->next;
	else
		s->readers = r->next;
	if (r->next)
		r->next->prev = r->prev;
	pthread_mutex_unlock(&s->readers_mu);
	reader_close(r);
}

/* This thread's read connection, opened on first use. 0 or -EIO, logged. */
static int reader_get(struct cache_store *s, struct reader **ret)
{
	struct reader *r = pthread_getspecific(s->reader_key);
	int rc;

	if (r) {
		*ret = r;
		return 0;
	}
	r = xcalloc(1, sizeof(*r));
	r->s = s;
	/* The resolved path: the daemon may have changed directory since open. */
	rc = sqlite3_open_v2(s->db_path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(r->db, STORE_BUSY_TIMEOUT_MS);
	if (sqlite3_prepare_v3(r->db, reader_get_sql, -1, SQLITE_PREPARE_PERSISTENT, &r->get,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(r->db, reader_scan_sql, -1, SQLITE_PREPARE_PERSISTENT, &r->scan,
			       NULL) != SQLITE_OK)
		goto fail;
	if (pthread_setspecific(s->reader_key, r) != 0) {
		fail_msg("open_reader", "pthread_setspecific failed");
		reader_close(r);
		return -EIO;
	}
	pthread_mutex_lock(&s->readers_mu);
	r->next = s->readers;
	if (s->readers)
		s->readers->prev = r;
	s->readers = r;
	pthread_mutex_unlock(&s->readers_mu);
	*ret = r;
	return 0;

fail:
	db_fail(r->db, "open_reader");
	reader_close(r);
	return -EIO;
}

static void readers_close_all(struct cache_store *s)
{
	struct reader *r, *next;

	pthread_mutex_lock(&s->readers_mu);
	r = s->readers;
	s->readers = NULL;
	pthread_mutex_unlock(&s->readers_mu);
	for (; r; r = next) {
		next = r->next;
		reader_close(r);
	}
}

/* ---- open / close ------------------------------------------------------ */

/* One-row query on the writer: integer result of column 0. */
static int query_int(struct cache_store *s, const char *sql, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = step(s, st);
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

/* WAL and synchronous=NORMAL on the writer. 0 or -EIO into errbuf. */
static int set_wal(struct cache_store *s, char *errbuf, size_t errbuf_size)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = step(s, st);
	mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
	if (!mode || strcmp((const char *)mode, "wal") != 0) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path,
			mode ? "cannot switch to WAL journal mode" : sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return -EIO;
	}
	sqlite3_finalize(st);
	if (sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path,
			sqlite3_errmsg(s->db));
		return -EIO;
	}
	return 0;
}

/* Check the schema version; create or upgrade the schema (unless read-only). */
static int open_schema(struct cache_store *s, char *errbuf, size_t errbuf_size)
{
	int64_t version = 0, has_table = 0;
	char *errmsg = NULL;

	if (!s->read_only && set_wal(s, errbuf, errbuf_size))
		return -EIO;
	if (query_int(s, "PRAGMA user_version", &version))
		goto fail_sqlite;
	if (version > STORE_SCHEMA_VERSION) {
		errbuf_printf(errbuf, errbuf_size,
			"%s: cache schema version %lld is newer than this camskeyd supports (%d)",
			s->path, (long long)version, STORE_SCHEMA_VERSION);
		return -EIO;
	}
	if (s->read_only && version > 0 && version < STORE_SCHEMA_VERSION) {
		errbuf_printf(errbuf, errbuf_size,
			"%s: cache schema version %lld is older than this camskeyd's (%d): "
			"start the daemon once to upgrade it", s->path, (long long)version,
			STORE_SCHEMA_VERSION);
		return -EIO;
	}
	if (!s->read_only && version < STORE_SCHEMA_VERSION) {
		const char *sql = version == 1 ? upgrade_v1_sql
				  : version == 2 ? upgrade_v2_sql : schema_sql;

		if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			goto fail_sqlite;
		if (sqlite3_exec(s->db, sql, NULL, NULL, &errmsg) != SQLITE_OK ||
		    sqlite3_exec(s->db, "COMMIT", NULL, NULL, &errmsg) != SQLITE_OK) {
			errbuf_printf(errbuf, errbuf_size, "cannot create schema in %s: %s", s->path,
				errmsg ? errmsg : sqlite3_errmsg(s->db));
			sqlite3_free(errmsg);
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
	}
	if (query_int(s, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'keys'",
		      &has_table))
		goto fail_sqlite;
	if (!has_table) {
		errbuf_printf(errbuf, errbuf_size, "%s: no keys table (not a camskeyd cache?)", s->path);
		return -EIO;
	}
	return 0;

fail_sqlite:
	errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path, sqlite3_errmsg(s->db));
	return -EIO;
}

int cache_store_open(const struct cache_store_options *opt, struct cache_store **ret,
		     char *errbuf, size_t errbuf_size)
{
	struct cache_store *s;
	const char *db_path;
	int64_t count = 0;
	int flags, i;

	errbuf_printf(errbuf, errbuf_size, "%s", "");
	s = xcalloc(1, sizeof(*s));
	s->path = xstrdup(opt->path);
	s->max_entries = opt->max_entries;
	s->read_only = opt->read_only;
	s->newer_use = opt->newer_use;
	s->newer_use_cls = opt->newer_use_cls;
	pthread_mutex_init(&s->writer_mu, NULL);
	pthread_mutex_init(&s->readers_mu, NULL);

	if (!s->read_only && create_file(s->path, errbuf, errbuf_size))
		goto out_close;
	flags = (s->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(s->path, &s->db, flags, NULL) != SQLITE_OK) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path,
			s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto out_close;
	}
	sqlite3_extended_result_codes(s->db, 1);
	db_path = sqlite3_db_filename(s->db, "main");
	s->db_path = xstrdup(db_path && *db_path ? db_path : s->path);
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	if (!s->read_only) {
		if (sqlite3_exec(s->db, STORE_WRITER_CACHE_SQL, NULL, NULL, NULL) != SQLITE_OK) {
			errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path,
				sqlite3_errmsg(s->db));
			goto out_close;
		}
	}
	if (open_schema(s, errbuf, errbuf_size))
		goto out_close;
	for (i = 0; i < WST__MAX; i++) {
		if (sqlite3_prepare_v3(s->db, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &s->st[i], NULL) != SQLITE_OK) {
			errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path,
				sqlite3_errmsg(s->db));
			goto out_close;
		}
	}
	if (query_int(s, writer_sql[WST_COUNT], &count)) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: %s", s->path, sqlite3_errmsg(s->db));
		goto out_close;
	}
	s->count = (uint64_t)count;
	if (pthread_key_create(&s->reader_key, reader_destroy) != 0) {
		errbuf_printf(errbuf, errbuf_size, "cannot open %s: out of thread-specific keys", s->path);
		goto out_close;
	}
	s->reader_key_ok = 1;
	*ret = s;
	return 0;

out_close:
	cache_store_close(s);
	return -EIO;
}

void cache_store_close(struct cache_store *s)
{
	int i;

	if (!s)
		return;
	/* Deleting the key first means no destructor can run for it afterwards. */
	if (s->reader_key_ok)
		pthread_key_delete(s->reader_key);
	readers_close_all(s);
	for (i = 0; i < WST__MAX; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db && sqlite3_close(s->db) != SQLITE_OK)
		db_fail(s->db, "close");
	pthread_mutex_destroy(&s->writer_mu);
	pthread_mutex_destroy(&s->readers_mu);
	free(s->path);
	free(s->db_path);
	free(s);
}

int cache_store_read_only(const struct cache_store *s)
{
	return s->read_only;
}

/* ---- reads ------------------------------------------------------------- */

int cache_store_get(struct cache_store *s, const struct cams_key *key,
		    struct cache_entry **ret_entry, int64_t *ret_last_used_s)
{
	struct cache_entry *e = NULL;
	struct reader *r;
	int64_t last_used_s = 0;
	int rc, ret;

	count_up(&s->reads);
	ret = reader_get(s, &r);
	if (ret)
		return ret;
	rc = bind_key(r->get, 1, key);
	if (rc == SQLITE_OK)
		rc = step(s, r->get);
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
	*ret_entry = e;
	*ret_last_used_s = last_used_s;
	return 1;
}

int cache_store_foreach(struct cache_store *s,
			int (*fn)(const struct cache_entry *e, void *cls), void *cls)
{
	sqlite3_stmt *st, *own = NULL;
	struct cache_entry *e;
	struct reader *r;
	int64_t last_used_s;
	int rc, ret;

	count_up(&s->scans);
	ret = reader_get(s, &r);
	if (ret)
		return ret;
	st = r->scan;
	/* fn may itself call cache_foreach(): nested scans get their own statement. */
	if (sqlite3_stmt_busy(st)) {
		if (sqlite3_prepare_v2(r->db, reader_scan_sql, -1, &own, NULL) != SQLITE_OK)
			return db_fail(r->db, "foreach");
		st = own;
	}
	while ((rc = step(s, st)) == SQLITE_ROW) {
		if (row_to_entry(st, &e, &last_used_s)) {
			ret = fail_msg("foreach", "malformed row");
			goto out_reset;
		}
		rc = fn(e, cls);
		cache_entry_unref(e);
		if (rc)
			goto out_reset;
	}
	if (rc != SQLITE_DONE)
		ret = db_fail(r->db, "foreach");
out_reset:
	if (own)
		sqlite3_finalize(own);
	else
		st_done(st);
	return ret;
}

int cache_store_load(struct cache_store *s, uint64_t limit,
		     void (*fn)(struct cache_entry *e, int64_t last_used_s, void *cls), void *cls,
		     uint64_t *ret_loaded)
{
	sqlite3_stmt *st = NULL;
	struct cache_entry *e;
	struct reader *r;
	int64_t last_used_s;
	uint64_t rows, loaded = 0;
	int rc, ret;

	count_up(&s->scans);
	ret = reader_get(s, &r);
	if (ret)
		return ret;
	pthread_mutex_lock(&s->writer_mu);
	rows = s->count;
	pthread_mutex_unlock(&s->writer_mu);
	if (sqlite3_prepare_v2(r->db, load_sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(r->db, "load");
	sqlite3_bind_int64(st, 1, rows > limit ? (sqlite3_int64)(rows - limit) : 0);
	while ((rc = step(s, st)) == SQLITE_ROW) {
		if (row_to_entry(st, &e, &last_used_s)) {
			ret = fail_msg("load", "malformed row");
			goto out;
		}
		fn(e, last_used_s, cls);
		loaded++;
	}
	if (rc != SQLITE_DONE)
		ret = db_fail(r->db, "load");
out:
	sqlite3_finalize(st);
	if (ret == 0)
		*ret_loaded = loaded;
	return ret;
}

/* ---- writes ------------------------------------------------------------ */

/* Candidates one eviction round looks at. */
#define STORE_EVICT_BATCH 256

struct evict_candidate {
	int64_t id, used_s;
	struct cams_key key;
};

/* Bind and run one of the two id statements of evict_lru(). 0 or -EIO (not logged). */
static int exec_id(struct cache_store *s, enum wst which, int64_t id, const int64_t *used_s)
{
	sqlite3_stmt *st = s->st[which];
	int rc = sqlite3_bind_int64(st, 1, id);

	if (rc == SQLITE_OK && used_s)
		rc = sqlite3_bind_int64(st, 2, *used_s);
	if (rc == SQLITE_OK)
		rc = step(s, st);
	st_done(st);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/*
 * Inside a transaction on writer_mu: delete the n least recently used rows,
 * sparing the row with id *spare_id (NULL: none), and list their keys in
 * *evicted. Recency on disk may lag what memory knows (flushes are
 * bounded), so each candidate is first checked with newer_use(): one used
 * later than disk says has that use written instead, and the candidates
 * are picked again. Exact LRU, at the cost of the few uses it flushes.
 */
static int evict_lru(struct cache_store *s, uint64_t n, const int64_t *spare_id,
		     struct cache_use_list *evicted)
{
	struct evict_candidate cand[STORE_EVICT_BATCH];
	sqlite3_stmt *st = s->st[WST_EVICT];
	size_t found, i;
	int64_t used_s;
	int rc;

	while (n > 0) {
		found = 0;
		rc = sqlite3_bind_int64(st, 1, n < STORE_EVICT_BATCH ? (int64_t)n : STORE_EVICT_BATCH);
		if (rc == SQLITE_OK)
			rc = spare_id ? sqlite3_bind_int64(st, 2, *spare_id) : sqlite3_bind_null(st, 2);
		if (rc != SQLITE_OK)
			goto out_fail;
		while ((rc = step(s, st)) == SQLITE_ROW && found < STORE_EVICT_BATCH) {
			struct evict_candidate *c = &cand[found];

			memset(&c->key, 0, sizeof(c->key));
			c->id = sqlite3_column_int64(st, 0);
			c->used_s = sqlite3_column_int64(st, 1);
			/* A foreign key nobody could have cached: evicted, not listed. */
			if (column_copy(st, 2, c->key.cust_space_id, sizeof(c->key.cust_space_id)) ||
			    column_copy(st, 3, c->key.phone, sizeof(c->key.phone)))
				c->key.phone[0] = '\0';
			found++;
		}
		if (rc != SQLITE_DONE && rc != SQLITE_ROW)
			goto out_fail;
		st_done(st);
		if (found == 0)
			break;
		for (i = 0; i < found; i++) {
			struct evict_candidate *c = &cand[i];

			if (c->key.phone[0] && s->newer_use &&
			    s->newer_use(s->newer_use_cls, &c->key, c->used_s, &used_s) == 1 &&
			    used_s > c->used_s) {
				if (exec_id(s, WST_RAISE, c->id, &used_s))
					goto out_fail;
				continue;
			}
			if (exec_id(s, WST_EVICT_ONE, c->id, NULL))
				goto out_fail;
			if (c->key.phone[0])
				cache_use_list_add(evicted, &c->key, 0);
			n--;
		}
	}
	return 0;

out_fail:
	db_fail(s->db, "evict");
	st_done(st);
	return -EIO;
}

/*
 * Inside the put's transaction: is there a row for key? With ret_old,
 * read it whole. 1 yes, 0 no, -EIO (logged).
 */
static int probe_old(struct cache_store *s, const struct cams_key *key,
		     struct cache_entry **ret_old)
{
	sqlite3_stmt *st = s->st[ret_old ? WST_OLD : WST_EXISTS];
	struct cache_entry *old = NULL;
	int64_t last_used_s;
	int rc, ret;

	rc = bind_key(st, 1, key);
	if (rc == SQLITE_OK)
		rc = step(s, st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		ret = db_fail(s->db, "put");
		goto out_reset;
	}
	ret = rc == SQLITE_ROW;
	if (ret && ret_old && row_to_entry(st, &old, &last_used_s)) {
		ret = fail_msg("put", "malformed row");
		goto out_reset;
	}
	if (ret_old)
		*ret_old = old;
out_reset:
	st_done(st);
	return ret;
}

/* The row's columns in STORE_DATA_COLUMNS order (?1..?11). */
static int bind_entry(sqlite3_stmt *st, const struct cache_entry *e)
{
	int rc = bind_key(st, 1, &e->key);

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
		/* A zero-length blob must still not be NULL (body is NOT NULL). */
		rc = sqlite3_bind_blob(st, 9, e->body_len ? e->body : "", (int)e->body_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 10, e->fetched_at_s);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 11, e->expires_at_s);
	return rc;
}

/*
 * Inside the put's transaction: upsert e's row (keeping its id if it
 * existed) and set its recency to last_used_s. *ret_id gets the row's id.
 * 0 or -EIO (logged).
 */
static int upsert_row(struct cache_store *s, const struct cache_entry *e, int64_t last_used_s,
		      int64_t *ret_id)
{
	sqlite3_stmt *st = s->st[WST_UPSERT];
	int64_t id;
	int rc;

	rc = bind_entry(st, e);
	if (rc == SQLITE_OK)
		rc = step(s, st);
	if (rc != SQLITE_ROW) {
		db_fail(s->db, "put");
		st_done(st);
		return -EIO;
	}
	id = sqlite3_column_int64(st, 0);
	/* RETURNING: the change is made by the first step; reset finishes it. */
	st_done(st);
	st = s->st[WST_RECENCY];
	if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 2, last_used_s) != SQLITE_OK) {
		db_fail(s->db, "put");
		st_done(st);
		return -EIO;
	}
	if (wexec(s, WST_RECENCY, "put"))
		return -EIO;
	*ret_id = id;
	return 0;
}

int cache_store_put(struct cache_store *s, const struct cache_entry *e, int64_t last_used_s,
		    struct cache_entry **ret_old, struct cache_use_list *ret_evicted)
{
	struct cache_use_list evicted = { 0 };
	struct cache_entry *old = NULL;
	uint64_t count;
	int64_t id;
	size_t i;
	int existed, ret;

	/* Bodies come from the envelope builder, bounded by the same limit. */
	assert(e->body_len <= LIMIT_BODY_MAX_BYTES);
	if (s->read_only)
		return fail_msg("put", "cache opened read-only");

	pthread_mutex_lock(&s->writer_mu);
	ret = tx_begin(s, "put");
	if (ret)
		goto out_abort;
	existed = probe_old(s, &e->key, ret_old ? &old : NULL);
	if (existed < 0) {
		ret = existed;
		goto out_abort;
	}
	ret = upsert_row(s, e, last_used_s, &id);
	if (ret)
		goto out_abort;
	count = s->count + (existed ? 0 : 1);
	if (count > s->max_entries) {
		ret = evict_lru(s, count - s->max_entries, &id, &evicted);
		if (ret)
			goto out_abort;
	}
	ret = tx_commit(s, "put");
	if (ret)
		goto out_abort;
	s->count = count - (evicted.len < count ? evicted.len : count);
	pthread_mutex_unlock(&s->writer_mu);
	for (i = 0; ret_evicted && i < evicted.len; i++)
		cache_use_list_add(ret_evicted, &evicted.items[i].key, 0);
	cache_use_list_free(&evicted);
	if (ret_old)
		*ret_old = old;
	return existed;

out_abort:
	tx_abort(s);
	pthread_mutex_unlock(&s->writer_mu);
	cache_use_list_free(&evicted);
	cache_entry_unref(old);
	return ret;
}

int cache_store_delete(struct cache_store *s, const struct cams_key *key)
{
	int changes, ret;

	if (s->read_only)
		return fail_msg("delete", "cache opened read-only");
	pthread_mutex_lock(&s->writer_mu);
	ret = tx_begin(s, "delete");
	if (ret)
		goto out_abort;
	if (bind_key(s->st[WST_DELETE], 1, key) != SQLITE_OK) {
		ret = db_fail(s->db, "delete");
		st_done(s->st[WST_DELETE]);
		goto out_abort;
	}
	ret = wexec(s, WST_DELETE, "delete");
	if (ret)
		goto out_abort;
	changes = sqlite3_changes(s->db);
	ret = tx_commit(s, "delete");
	if (ret)
		goto out_abort;
	if (changes > 0 && s->count > 0)
		s->count--;
	pthread_mutex_unlock(&s->writer_mu);
	return changes > 0 ? 1 : 0;

out_abort:
	tx_abort(s);
	pthread_mutex_unlock(&s->writer_mu);
	return ret;
}

static int count_rows(struct cache_store *s, uint64_t *ret)
{
	sqlite3_stmt *st = s->st[WST_COUNT];
	int rc = step(s, st), ret_code = 0;

	if (rc == SQLITE_ROW)
		*ret = (uint64_t)sqlite3_column_int64(st, 0);
	else
		ret_code = db_fail(s->db, "count");
	st_done(st);
	return ret_code;
}

int cache_store_maintain(struct cache_store *s, const struct cache_use_list *uses,
			 struct cache_use_list *ret_evicted)
{
	struct cache_use_list evicted = { 0 };
	uint64_t count = 0;
	size_t i;
	int ret = 0;

	if (s->read_only)
		return 0;
	pthread_mutex_lock(&s->writer_mu);
	/*
	 * COUNT(*) reads the whole table (a million rows is a gigabyte); the
	 * count is exact already, so recount only now and then, to absorb
	 * changes made by another process (the cache CLI).
	 */
	if (s->maintain_calls++ % STORE_RECOUNT_EVERY == 0) {
		ret = count_rows(s, &count);
		if (ret)
			goto out_unlock;
		s->count = count;
	}
	if (uses->len == 0 && s->count <= s->max_entries)
		goto out_unlock;
	ret = tx_begin(s, "maintain");
	if (ret)
		goto out_abort;
	for (i = 0; i < uses->len; i++) {
		sqlite3_stmt *st = s->st[WST_TOUCH];

		if (bind_key(st, 1, &uses->items[i].key) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 3, uses->items[i].used_s) != SQLITE_OK) {
			ret = db_fail(s->db, "maintain");
			st_done(st);
			goto out_abort;
		}
		ret = wexec(s, WST_TOUCH, "maintain");
		if (ret)
			goto out_abort;
	}
	if (s->count > s->max_entries) {
		ret = evict_lru(s, s->count - s->max_entries, NULL, &evicted);
		if (ret)
			goto out_abort;
	}
	ret = tx_commit(s, "maintain");
	if (ret)
		goto out_abort;
	s->count -= evicted.len < s->count ? evicted.len : s->count;
	for (i = 0; i < evicted.len; i++)
		cache_use_list_add(ret_evicted, &evicted.items[i].key, 0);
	goto out_unlock;

out_abort:
	tx_abort(s);
out_unlock:
	pthread_mutex_unlock(&s->writer_mu);
	cache_use_list_free(&evicted);
	return ret;
}

int cache_store_count(struct cache_store *s, uint64_t *ret_count)
{
	uint64_t count;

	pthread_mutex_lock(&s->writer_mu);
	count = s->count;
	pthread_mutex_unlock(&s->writer_mu);
	*ret_count = count;
	return 0;
}

int cache_store_integrity_check(struct cache_store *s)
{
	sqlite3_stmt *st;
	const unsigned char *result;
	int rc, ret = 0;

	pthread_mutex_lock(&s->writer_mu);
	st = s->st[WST_INTEGRITY];
	rc = step(s, st);
	if (rc != SQLITE_ROW) {
		ret = db_fail(s->db, "integrity_check");
	} else {
		result = sqlite3_column_text(st, 0);
		if (!result || strcmp((const char *)result, "ok") != 0)
			ret = fail_msg("integrity_check", result ? (const char *)result : "no result");
	}
	st_done(st);
	pthread_mutex_unlock(&s->writer_mu);
	return ret;
}

void cache_store_stats(const struct cache_store *s, struct cache_stats *ret)
{
	ret->store_reads = atomic_load_explicit(&s->reads, memory_order_relaxed);
	ret->store_scans = atomic_load_explicit(&s->scans, memory_order_relaxed);
	ret->store_write_transactions =
		atomic_load_explicit(&s->write_transactions, memory_order_relaxed);
	ret->store_statements = atomic_load_explicit(&s->statements, memory_order_relaxed);
}
