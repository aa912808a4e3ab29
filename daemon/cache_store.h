/*
 * cache_store.h -- the cache's SQLite store: the schema and its
 * migrations, prepared statements, one writer connection and one read
 * connection per thread, the max_entries bound and the row count. No memory
 * layer: it knows nothing of shards or of what is published in memory.
 *
 * One file in WAL mode, synchronous=NORMAL, busy_timeout 5 s, a table
 * `keys` (the rows, the PEM computed from the body) and a narrow table
 * `recency` (last_used_at per key) (see docs/DESIGN.md), PRAGMA
 * user_version = 3; version 1 and 2 databases are upgraded on open (a
 * read-only open refuses them). Every write is one BEGIN IMMEDIATE ...
 * COMMIT on the writer connection.
 *
 * Logs: SQLite errors, once, with sqlite3_errmsg, where they happen
 * (cache_error); open errors go to errbuf instead.
 * Threads: any. Writes are serialised on the writer connection by an
 * internal mutex; reads use the calling thread's own read connection,
 * opened on first use. open/close with no other user.
 */
#ifndef CAMSKEYD_CACHE_STORE_H
#define CAMSKEYD_CACHE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

struct cache_store_options {
	const char *path;        /* database file */
	uint64_t max_entries;    /* rows kept, least recently used evicted */
	int read_only;           /* no writes, no schema changes, no WAL switch */
	/*
	 * May be NULL. Before evicting a row whose last use on disk is
	 * disk_used_s, the store asks: 1 and *ret_used_s if key was used later
	 * (a use not flushed yet), else 0. The store then writes that use and
	 * picks again. Called under the store's writer mutex, inside a write
	 * transaction: it must not call the store.
	 */
	int (*newer_use)(void *cls, const struct cams_key *key, int64_t disk_used_s,
			 int64_t *ret_used_s);
	void *newer_use_cls;
};

struct cache_store;

/*
 * Open (creating the file mode 0600 and the schema if needed, upgrading a
 * version 1 or 2 database, every row and its recency kept), WAL, synchronous=NORMAL, busy_timeout; count the
 * rows. 0 or -EIO with the reason (naming the file) in errbuf.
 */
int cache_store_open(const struct cache_store_options *opt, struct cache_store **ret,
		     char *errbuf, size_t errbuf_size);
/* Close every connection. NULL ok. No other thread may use s. */
void cache_store_close(struct cache_store *s);
int cache_store_read_only(const struct cache_store *s);

/*
 * Read the row for key on this thread's read connection (one point lookup,
 * its read transaction ended before return). 1 found (*ret_entry: a new
 * entry with one reference, last_used_s set from the row, also put in
 * *ret_last_used_s), 0 absent, -EIO (logged). May block on disk.
 */
int cache_store_get(struct cache_store *s, const struct cams_key *key,
		    struct cache_entry **ret_entry, int64_t *ret_last_used_s);

/*
 * One write transaction: probe the key's current row, upsert e (with
 * last_used_at = last_used_s), evict beyond max_entries sparing e's key
 * (least recently used first, asking newer_use() first), commit. ret_old NULL: the probe only tells whether a row existed.
 * Otherwise *ret_old gets the row replaced as a new entry (one reference),
 * or NULL. Evicted keys are appended to *ret_evicted (may be NULL only if
 * the caller keeps no copy of rows elsewhere). 1 a row was replaced, 0 the
 * key was new, -EIO (logged; rolled back; outputs untouched except
 * ret_evicted, which gets nothing).
 */
int cache_store_put(struct cache_store *s, const struct cache_entry *e, int64_t last_used_s,
		    struct cache_entry **ret_old, struct cache_use_list *ret_evicted);

/* One write transaction deleting key's row. 1 removed, 0 absent, -EIO (logged). */
int cache_store_delete(struct cache_store *s, const struct cams_key *key);

/*
 * One write transaction (only if there is something to do): last_used_at
 * raised to each use, then rows beyond max_entries evicted, least
 * recently used first, their keys appended to *ret_evicted. Recounts the
 * rows now and then (another process may write). 0 or -EIO (logged);
 * 0 and nothing done when read-only.
 */
int cache_store_maintain(struct cache_store *s, const struct cache_use_list *uses,
			 struct cache_use_list *ret_evicted);

/* Rows, as kept by this process's writes and recounts. Always 0. */
int cache_store_count(struct cache_store *s, uint64_t *ret_count);

/* Every row in key order to fn until it returns non-zero; this thread's read connection. */
int cache_store_foreach(struct cache_store *s,
			int (*fn)(const struct cache_entry *e, void *cls), void *cls);

/*
 * The start-up load: the limit most recently used rows, least recently
 * used first, each as a new entry (one reference, given to fn) without its
 * pem (NULL: the body holds it) and with last_used_s from the row. One read
 * transaction on this thread's read connection. *ret_loaded gets the
 * number of rows. 0 or -EIO (logged).
 */
int cache_store_load(struct cache_store *s, uint64_t limit,
		     void (*fn)(struct cache_entry *e, int64_t last_used_s, void *cls), void *cls,
		     uint64_t *ret_loaded);

/* PRAGMA integrity_check on the writer: 0 if "ok", -EIO (logged). */
int cache_store_integrity_check(struct cache_store *s);

/* The counters since open (see struct cache_stats). */
void cache_store_stats(const struct cache_store *s, struct cache_stats *ret);

#endif
