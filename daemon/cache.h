/*
 * cache.h -- the persistent key cache: a SQLite store on disk
 * (cache_store.c) with a memory layer of recently used entries in front of
 * it (cache_mem.c). This is the only interface callers use; the two layers
 * are its implementation.
 *
 * An entry is immutable once published and reference-counted: a hit takes a
 * reference under one shard's mutex (no global lock), serves the entry's
 * pre-rendered body, and drops the reference when the response is freed.
 * Freshness is judged by the caller with cache_entry_freshness(), with the
 * time as an argument.
 *
 * The rules the API keeps:
 *  - The hit path never touches SQLite: cache_lookup() is memory only.
 *  - A miss costs one read on its way in (cache_load()) and one write
 *    transaction on its way out (cache_put()); cache_put() says what it
 *    replaced, so nobody reads before a put.
 *  - Publish after commit: memory never shows what disk does not have.
 *    A put or delete changes memory only after its transaction commits,
 *    and writes reach memory in commit order.
 *  - Recency (for the max_entries bound) is recorded in memory on hits and
 *    flushed by cache_maintain(), so a hit never writes to the database.
 *
 * Logs: SQLite errors, once, with sqlite3_errmsg, where they happen (in
 * cache_store.c); the memory layer never logs.
 * Threads: cache_lookup() and cache_load() from any thread (cache_load() may
 * block on disk: see there); writes (put, delete, maintain) from any thread,
 * serialised inside. cache_open()/cache_close() with no other user.
 */
#ifndef CAMSKEYD_CACHE_H
#define CAMSKEYD_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cams.h"
#include "bounds.h"

enum cache_kind {
	CACHE_KIND_KEY = 0,      /* a key (any status) */
	CACHE_KIND_NEGATIVE = 1, /* a definitive upstream error */
};

struct cache_entry {
	atomic_int refs;
	struct cams_key key;
	enum cache_kind kind;
	int http_status;                        /* 200, or 403/404 for negative */
	char status[LIMIT_STATUS_MAX + 1];      /* "VALID", ...; "" if negative */
	char code[LIMIT_CODE_MAX + 1];          /* "OK" or the upstream's Code */
	char etag[LIMIT_SHA256_HEX];            /* hex SHA-256 of the key's DER; "" if negative */
	char request_id[LIMIT_REQUEST_ID_MAX + 1];
	int64_t fetched_at_s;                   /* wall clock, seconds */
	int64_t expires_at_s;                   /* wall clock, seconds */
	atomic_llong last_used_s;               /* wall clock, updated on hits */
	char *pem;                              /* NULL if negative */
	char *body;                             /* the envelope served to callers */
	size_t body_len;
};

/*
 * A new entry with one reference, copying pem (may be NULL) and body.
 * Set the scalar fields directly before cache_put().
 */
struct cache_entry *cache_entry_new(const struct cams_key *key, const char *pem,
				    const char *body, size_t body_len);
struct cache_entry *cache_entry_ref(struct cache_entry *e);
/* Drop a reference; frees at zero. NULL ok. */
void cache_entry_unref(struct cache_entry *e);

enum cache_freshness {
	CACHE_FRESH,            /* now < expires_at */
	CACHE_STALE_REVALIDATE, /* within stale-while-revalidate after expiry */
	CACHE_STALE_IF_ERROR,   /* within stale-if-error after expiry */
	CACHE_EXPIRED,          /* past both windows (or negative and expired) */
};

/* Pure. Negative entries are never stale-servable: FRESH or EXPIRED. */
enum cache_freshness cache_entry_freshness(const struct cache_entry *e, int64_t now_s,
					   uint64_t stale_while_revalidate_s,
					   uint64_t stale_if_error_s);

struct cache_options {
	const char *path;        /* database file */
	uint64_t max_entries;    /* on disk, least recently used evicted */
	uint64_t hot_entries;    /* in memory */
	int read_only;           /* open for inspection only (CLI list/show/stats) */
	int preload;             /* load the hot_entries most recently used rows at open */
};

struct cache;

/*
 * Open (creating the file and schema if needed), set WAL, synchronous=NORMAL,
 * busy_timeout. With preload (and not read_only), load the hot_entries most
 * recently used rows into memory before returning (a million rows take
 * about a second; memory entries keep the PEM once, in the body, and have
 * pem NULL). 0 or -EIO with the reason in errbuf. Logs nothing (the
 * caller prints errbuf).
 */
int cache_open(const struct cache_options *opt, struct cache **ret, char *errbuf,
	       size_t errbuf_size);
/* Flush recency, close every connection. NULL ok. No other thread may use c. */
void cache_close(struct cache *c);

/*
 * The hit path: look key up in memory only, never in SQLite. 1 found
 * (*ret_entry holds a reference, expired or not; the use is recorded at
 * now_s), 0 not in memory (it may still be on disk: cache_load()).
 * Never fails, never logs, never blocks on I/O; takes one shard mutex.
 * Any thread.
 */
int cache_lookup(struct cache *c, const struct cams_key *key, int64_t now_s,
		 struct cache_entry **ret_entry);

/*
 * True while memory holds every row on disk: the start-up load read them
 * all, hot_entries >= max_entries, and nothing was pushed out of memory
 * since. Then a cache_lookup() miss is a real miss and no caller needs
 * cache_load(). Rows another process adds to the file meanwhile are not
 * seen (this process's writes always are). Any thread, never blocks.
 */
int cache_whole_in_memory(struct cache *c);

/*
 * The one read a miss makes on its way in: memory, then on a memory miss
 * the SQLite store, promoting the row into memory (unless a write for the
 * same shard raced with the read; the row read is returned anyway).
 * 1 found (*ret_entry holds a reference, expired or not; the use is
 * recorded at now_s), 0 absent, -EIO (logged).
 * May block on disk (a page read, or up to the 5 s busy_timeout while a
 * checkpoint or another process holds a lock): call it from a thread that
 * may wait -- an HTTP worker (for now), the engine, the CLI -- never from a
 * thread that must not. Each calling thread gets its own read connection on
 * first use, kept until the thread exits or cache_close().
 */
int cache_load(struct cache *c, const struct cams_key *key, int64_t now_s,
	       struct cache_entry **ret_entry);

/*
 * Store e, replacing any entry for its key: one write transaction (upsert,
 * then eviction beyond max_entries sparing e), then publish e in memory
 * (the cache takes its own reference). Publish after commit: on -EIO
 * nothing is published and the old entry stays visible.
 * ret_replaced may be NULL. Otherwise, on success, *ret_replaced gets a
 * reference to the entry e replaced, or NULL if the key was new: the one
 * in memory when there was one, else the row the same write transaction
 * replaced (read inside it; no read before the put). On -EIO it is not
 * touched. Returns 0 or -EIO (logged; also for a read-only cache).
 * Any thread; writes are serialised.
 */
int cache_put(struct cache *c, struct cache_entry *e, struct cache_entry **ret_replaced);

/* Remove the entry for key, on disk then in memory. 1 removed, 0 absent, -EIO (logged). */
int cache_delete(struct cache *c, const struct cams_key *key);

/*
 * Bumped (atomically) each time what a key maps to changes: an entry
 * published by cache_put(), a key deleted by cache_delete() or evicted by
 * the max_entries bound. Entries moving into memory from disk or pushed out
 * of memory do not change it (the key still maps to the same thing).
 * Read it before cache_lookup()/cache_load(): if it is unchanged later,
 * nothing was stored or removed since and the answer still holds.
 * Any thread, never blocks.
 */
uint64_t cache_generation(const struct cache *c);

/*
 * Entries on disk, as kept by this process (exact for its own writes;
 * recounted by cache_maintain() every few minutes). Always 0.
 */
int cache_count(struct cache *c, uint64_t *ret_count);

/*
 * Flush recorded uses to disk and enforce max_entries (evicted keys leave
 * memory too). Call about once a second. 0 or -EIO (logged); 0 when read-only.
 */
int cache_maintain(struct cache *c, int64_t now_s);

/*
 * Call fn for every entry on disk (by key order) until it returns non-zero.
 * Reads disk only (this thread's read connection); 0 or -EIO (logged).
 */
int cache_foreach(struct cache *c, int (*fn)(const struct cache_entry *e, void *cls), void *cls);

/*
 * Keys worth refreshing ahead of expiry: in memory, used since they were
 * stored and within the last window_s seconds, not yet expired, and
 * expiring within window_s. At most max_keys into ret_keys; returns how many.
 * Visits only the entries whose expiry falls in the window (each shard
 * keeps its entries on an expiry wheel), so neither idle keys nor keys
 * expiring later cost anything. Soonest expiring first. Memory only.
 */
size_t cache_refresh_candidates(struct cache *c, int64_t now_s, uint64_t window_s,
				struct cams_key *ret_keys, size_t max_keys);

/* PRAGMA integrity_check: 0 if "ok", -EIO (logged) otherwise. */
int cache_integrity_check(struct cache *c);

/*
 * What the store did since open, counted in cache_store.c (relaxed
 * atomics): for tests and for metrics. Any thread.
 */
struct cache_stats {
	uint64_t store_reads;              /* point lookups on a read connection */
	uint64_t store_scans;              /* cache_foreach() scans */
	uint64_t store_write_transactions; /* BEGIN IMMEDIATE ... begun */
	uint64_t store_statements;         /* statement executions, every connection */
};

void cache_stats(const struct cache *c, struct cache_stats *ret);

/*
 * Keys with a time, as the two layers hand them to each other through
 * cache.c: uses to flush (memory → store), keys evicted (store → memory).
 * Not for callers.
 */
struct cache_use {
	struct cams_key key;
	int64_t used_s;
};

struct cache_use_list {
	struct cache_use *items;
	size_t len, cap;
};

void cache_use_list_add(struct cache_use_list *l, const struct cams_key *key, int64_t used_s);
/* Free the items; the list is empty and reusable afterwards. */
void cache_use_list_free(struct cache_use_list *l);

#endif
