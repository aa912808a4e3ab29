/*
 * cache_mem.h -- the cache's memory layer: recently used entries, for the
 * hit path. Pure memory: no SQLite, no I/O, no clock, never logs.
 *
 * 64 shards, each a hash table (cams_key_hash()) and an LRU list (CLOCK:
 * hits mark, pushing out gives marked nodes a second chance) under its
 * own mutex, together bounded by hot_entries. Each node holds one reference
 * to an immutable, published struct cache_entry. Each shard has a
 * generation bumped whenever a put or delete changes it, so a reader that
 * found nothing, read the row elsewhere and offers it back can tell whether
 * the key was written meanwhile (cache_mem_offer()).
 *
 * Recency: hits store the time in the entry (under the shard mutex); a
 * node also knows the last use that is on disk (persisted_used_s), and a
 * node used later than that is on its shard's dirty list, so
 * cache_mem_collect_uses() walks only the nodes used since the last flush.
 * A node pushed out of memory with an unflushed use leaves a small, bounded
 * note in its shard so the use is not lost.
 *
 * Callers (cache.c) must call cache_mem_publish() and cache_mem_forget()
 * in commit order (under their write lock); everything else is safe from
 * any thread at any time.
 * Threads: any; one shard mutex at a time, never held across a call out.
 * Logs: never.
 */
#ifndef CAMSKEYD_CACHE_MEM_H
#define CAMSKEYD_CACHE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

struct cache_mem;

/* A memory layer holding at most about hot_entries (at least one per shard). */
struct cache_mem *cache_mem_new(uint64_t hot_entries);
/* Drop every node's reference and free. NULL ok. */
void cache_mem_free(struct cache_mem *m);

/*
 * Find key: 1 found (*ret_entry gets a reference, the node is marked
 * referenced for its LRU list, the use is recorded at now_s), 0 absent. Either way *ret_gen
 * (may be NULL) gets the key's shard generation, for cache_mem_offer().
 */
int cache_mem_get(struct cache_mem *m, const struct cams_key *key, int64_t now_s,
		  struct cache_entry **ret_entry, uint64_t *ret_gen);

/* The entry for key with a reference, or NULL; records no use, moves nothing. */
struct cache_entry *cache_mem_peek(struct cache_mem *m, const struct cams_key *key);

/*
 * Publish e (taking a reference) for its key, replacing any node; bumps
 * the shard's generation. persisted_used_s: the last use on disk with it.
 * *ret_replaced (may be NULL) gets the entry replaced in memory, with its
 * reference, or NULL. May push the shard's least recently used node out.
 */
void cache_mem_publish(struct cache_mem *m, struct cache_entry *e, int64_t persisted_used_s,
		       struct cache_entry **ret_replaced);

/*
 * A row read elsewhere (e, whose one reference is consumed) after
 * cache_mem_get() missed at shard generation gen, and used at now_s.
 * Kept in memory unless the shard changed since (a write raced with the
 * read) or memory already holds the key at least as recently fetched.
 * Returns the entry to give the caller, with a reference: memory's if it
 * holds a newer one, else e; the use is recorded (on the node, or as a
 * note when e is not kept).
 */
struct cache_entry *cache_mem_offer(struct cache_mem *m, struct cache_entry *e, uint64_t gen,
				    int64_t persisted_used_s, int64_t now_s);

/* The key is gone (deleted or evicted on disk): drop it and its noted use; bumps the generation. */
void cache_mem_forget(struct cache_mem *m, const struct cams_key *key);

/*
 * Append uses newer than what is on disk (walking the dirty lists only:
 * the cost is the keys used since the last flush), and the notes of nodes
 * pushed out (cleared). Nodes stay listed until cache_mem_mark_persisted(),
 * so a failed flush loses nothing but the notes.
 */
void cache_mem_collect_uses(struct cache_mem *m, struct cache_use_list *uses);
/*
 * The same, taking about max_uses (0: no limit) of the nodes' uses, an
 * even share from each shard, those listed longest first (the rest wait
 * for the next call); the notes are always taken whole.
 */
void cache_mem_collect_uses_at_most(struct cache_mem *m, struct cache_use_list *uses,
				    size_t max_uses);
/* The uses were flushed: nodes still present now know them to be on disk (and leave their list). */
void cache_mem_mark_persisted(struct cache_mem *m, const struct cache_use_list *uses);

/*
 * The last use of key memory knows of (in its node, or in a note of a node
 * pushed out), if later than than_s: 1 and *ret_used_s, else 0. Records
 * nothing.
 */
int cache_mem_newer_use(struct cache_mem *m, const struct cams_key *key, int64_t than_s,
			int64_t *ret_used_s);

/* See cache_refresh_candidates() in cache.h. */
size_t cache_mem_refresh_candidates(struct cache_mem *m, int64_t now_s, uint64_t window_s,
				    struct cams_key *ret_keys, size_t max_keys);

/* Nodes pushed out by the hot_entries bound since cache_mem_new(). */
uint64_t cache_mem_pushed_out(struct cache_mem *m);

/* Nodes on the dirty lists now: what the next cache_mem_collect_uses() walks. */
size_t cache_mem_dirty_count(struct cache_mem *m);

/* Nodes in memory now (all shards). */
size_t cache_mem_count(struct cache_mem *m);

#endif
