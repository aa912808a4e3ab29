/*
 * cache.h -- the persistent key cache: SQLite (WAL) on disk, with an
 * in-memory layer of recently used entries in front of it for the hit path.
 *
 * An entry is immutable once published and reference-counted: a hit takes a
 * reference under one shard's mutex (no global lock), serves the entry's
 * pre-rendered body, and drops the reference when the response is freed.
 * cache_put() replaces an entry by publishing a new one. Freshness is judged
 * by the caller with cache_entry_freshness(), with the time as an argument.
 *
 * Schema (one table, see docs/DESIGN.md): keys(cust_space_id, phone,
 * kind, http_status, status, code, etag, request_id, pem, body,
 * fetched_at, expires_at, last_used_at), primary key (cust_space_id, phone).
 * Recency (for the least-recently-used bound) is kept in memory on hits and
 * flushed by cache_maintain(), so a hit never writes to the database.
 *
 * Logs: SQLite errors, once, with sqlite3_errmsg, where they happen.
 * Threads: cache_get() from any thread (each thread opens its own read
 * connection on first use); writes are serialised inside on one writer
 * connection.
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
};

struct cache;

/*
 * Open (creating the file and schema if needed), set WAL, synchronous=NORMAL,
 * busy_timeout. 0 or -EIO with the reason in errbuf.
 */
int cache_open(const struct cache_options *opt, struct cache **ret, char *errbuf,
	       size_t errbuf_size);
/* Flush recency, close every connection. NULL ok. */
void cache_close(struct cache *c);

/*
 * Find key. 1 found (*ret_entry holds a reference, expired or not), 0 not
 * found, -EIO on a database error. Records the use at now_s.
 */
int cache_get(struct cache *c, const struct cams_key *key, int64_t now_s,
	      struct cache_entry **ret_entry);

/*
 * Store e (the cache takes its own reference), replacing any entry for the
 * key, in one transaction; then evict beyond max_entries. 0 or -EIO.
 */
int cache_put(struct cache *c, struct cache_entry *e);

/* Remove the entry for key. 1 removed, 0 absent, -EIO. */
int cache_delete(struct cache *c, const struct cams_key *key);

/*
 * Entries on disk, as kept by this process (exact for its own writes;
 * recounted by cache_maintain() every few minutes). Always 0.
 */
int cache_count(struct cache *c, uint64_t *ret_count);

/* Flush recorded uses to disk and enforce max_entries. Call about once a second. */
int cache_maintain(struct cache *c, int64_t now_s);

/* Call fn for every entry on disk (by key order) until it returns non-zero. */
int cache_foreach(struct cache *c, int (*fn)(const struct cache_entry *e, void *cls), void *cls);

/*
 * Keys worth refreshing ahead of expiry: in memory, used since they were
 * stored and within the last window_s seconds, not yet expired, and
 * expiring within window_s. At most max_keys into ret_keys; returns how many.
 * Walks each shard's LRU list from the newest entry and stops at the first
 * one not used within the window, so idle keys cost nothing.
 */
size_t cache_refresh_candidates(struct cache *c, int64_t now_s, uint64_t window_s,
				struct cams_key *ret_keys, size_t max_keys);

/* PRAGMA integrity_check: 0 if "ok", -EIO otherwise. */
int cache_integrity_check(struct cache *c);

#endif
