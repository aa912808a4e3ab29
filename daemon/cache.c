/*
 * cache.c -- the key cache's API (see cache.h): entries, and a thin layer
 * over the SQLite store (cache_store.c) and the memory layer (cache_mem.c).
 *
 * What this file decides, and nothing else:
 *  - Publish after commit. cache_put() and cache_delete() change memory
 *    only after the store committed, and hold write_mu across both steps,
 *    so memory changes in commit order and never shows what disk does not
 *    have. cache_maintain() takes the same lock, so an eviction's forget
 *    cannot overtake a put's publish.
 *  - What a put replaced comes from memory if the key was there (the store
 *    then only checks the row exists), else from the row the put's own
 *    write transaction replaced.
 *  - A load that goes to disk offers the row to memory with the shard
 *    generation it saw before reading, so a racing write wins.
 *  - generation is bumped after each publish or forget (release), so a
 *    caller that read it before a lookup and sees it unchanged afterwards
 *    knows nothing was stored or removed in between.
 * Locks, in order: write_mu, then the store's writer_mu, then one shard
 * mutex (only in newer_use(), called by the store's eviction).
 * Threads: any (see cache.h). Logs: nothing itself; the store logs SQLite
 * errors where they happen.
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache_mem.h"
#include "cache_store.h"
#include "mem.h"

/*
 * Uses one cache_maintain() call (about a second) flushes at most: about
 * 8,000 small rows, some 40 ms of the engine thread. With random hits over
 * more keys than that a second, recency on disk lags (every value flushed
 * is still the exact second of the last use) but eviction does not: the
 * store asks memory about each candidate before evicting it
 * (newer_use()), so the least recently used go, to the second. The lag
 * only ever orders a start-up load after a crash (cache_close() flushes
 * everything).
 */
#define CACHE_FLUSH_MAX_USES 8192

struct cache {
	struct cache_store *store;
	struct cache_mem *mem;
	pthread_mutex_t write_mu;      /* a write: store commit + memory change */
	atomic_ullong generation;
	int whole;                     /* the start-up load took every row; see cache_whole_in_memory */
	/*
	 * cache_maintain()'s list of uses, under write_mu, kept from one call
	 * to the next: with a second's random hits it is megabytes, and
	 * allocating it afresh every second costs page faults.
	 */
	struct cache_use_list uses;
};

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

void cache_use_list_add(struct cache_use_list *l, const struct cams_key *key, int64_t used_s)
{
	if (l->len == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	l->items[l->len].key = *key;
	l->items[l->len].used_s = used_s;
	l->len++;
}

void cache_use_list_free(struct cache_use_list *l)
{
	free(l->items);
	l->items = NULL;
	l->len = l->cap = 0;
}

static int maintain(struct cache *c, int all);

/* ---- open / close ------------------------------------------------------ */

/*
 * The store, about to evict key: does memory know of a later use? Under
 * write_mu and the store's writer mutex; takes one shard mutex (memory
 * never calls out, so this order cannot deadlock).
 */
static int newer_use(void *cls, const struct cams_key *key, int64_t disk_used_s,
		     int64_t *ret_used_s)
{
	struct cache *c = cls;

	return cache_mem_newer_use(c->mem, key, disk_used_s, ret_used_s);
}

/* One row of the start-up load: into memory as it is on disk. */
static void preload_one(struct cache_entry *e, int64_t last_used_s, void *cls)
{
	cache_mem_publish(cls, e, last_used_s, NULL);
	cache_entry_unref(e);
}

int cache_open(const struct cache_options *opt, struct cache **ret, char *errbuf,
	       size_t errbuf_size)
{
	struct cache *c = xcalloc(1, sizeof(*c));
	struct cache_store_options so = {
		.path = opt->path,
		.max_entries = opt->max_entries,
		.read_only = opt->read_only,
		.newer_use = newer_use,
		.newer_use_cls = c,
	};
	struct cache_store *store;
	int ret_code, whole;

	ret_code = cache_store_open(&so, &store, errbuf, errbuf_size);
	if (ret_code) {
		free(c);
		return ret_code;
	}
	c->store = store;
	whole = opt->preload && !opt->read_only && opt->hot_entries >= opt->max_entries;
	/*
	 * Holding everything: room above the bound, so that shards fuller than
	 * the average (keys do not hash evenly) never push a node out before
	 * the store evicts its row at max_entries.
	 */
	c->mem = cache_mem_new(whole ? opt->hot_entries + opt->hot_entries / 4 + 1024
				     : opt->hot_entries);
	pthread_mutex_init(&c->write_mu, NULL);
	atomic_init(&c->generation, 0);
	if (opt->preload && !opt->read_only) {
		uint64_t rows = 0, loaded = 0;

		ret_code = cache_store_load(store, opt->hot_entries, preload_one, c->mem, &loaded);
		if (ret_code == 0)
			ret_code = cache_store_count(store, &rows);
		c->whole = whole && ret_code == 0 && loaded == rows;
	}
	*ret = c;
	return 0;
}

int cache_whole_in_memory(struct cache *c)
{
	return c->whole && cache_mem_pushed_out(c->mem) == 0;
}

void cache_close(struct cache *c)
{
	if (!c)
		return;
	maintain(c, 1);
	cache_use_list_free(&c->uses);
	cache_store_close(c->store);
	cache_mem_free(c->mem);
	pthread_mutex_destroy(&c->write_mu);
	free(c);
}

/* ---- reads ------------------------------------------------------------- */

int cache_lookup(struct cache *c, const struct cams_key *key, int64_t now_s,
		 struct cache_entry **ret_entry)
{
	return cache_mem_get(c->mem, key, now_s, ret_entry, NULL);
}

int cache_load(struct cache *c, const struct cams_key *key, int64_t now_s,
	       struct cache_entry **ret_entry)
{
	struct cache_entry *e = NULL;
	int64_t last_used_s = 0;
	uint64_t gen = 0;
	int ret;

	if (cache_mem_get(c->mem, key, now_s, ret_entry, &gen) == 1)
		return 1;
	ret = cache_store_get(c->store, key, &e, &last_used_s);
	if (ret <= 0)
		return ret;
	e = cache_mem_offer(c->mem, e, gen, last_used_s, now_s);
	*ret_entry = e;
	return 1;
}

uint64_t cache_generation(const struct cache *c)
{
	return atomic_load_explicit(&c->generation, memory_order_acquire);
}

static void generation_bump(struct cache *c)
{
	atomic_fetch_add_explicit(&c->generation, 1, memory_order_release);
}

/* After a commit that removed keys: memory forgets them. Under write_mu. */
static void forget_all(struct cache *c, const struct cache_use_list *keys)
{
	for (size_t i = 0; i < keys->len; i++) {
		cache_mem_forget(c->mem, &keys->items[i].key);
		generation_bump(c);
	}
}

/* ---- writes ------------------------------------------------------------ */

int cache_put(struct cache *c, struct cache_entry *e, struct cache_entry **ret_replaced)
{
	struct cache_use_list evicted = { 0 };
	struct cache_entry *in_mem, *from_disk = NULL;
	int64_t last_used_s;
	int existed;

	last_used_s = (int64_t)atomic_load_explicit(&e->last_used_s, memory_order_relaxed);
	if (last_used_s < e->fetched_at_s)
		last_used_s = e->fetched_at_s;

	pthread_mutex_lock(&c->write_mu);
	/* Under write_mu nothing but a load of the same row can change this. */
	in_mem = ret_replaced ? cache_mem_peek(c->mem, &e->key) : NULL;
	existed = cache_store_put(c->store, e, last_used_s,
				  ret_replaced && !in_mem ? &from_disk : NULL, &evicted);
	if (existed < 0) {
		pthread_mutex_unlock(&c->write_mu);
		cache_entry_unref(in_mem);
		return existed;
	}
	cache_mem_publish(c->mem, e, last_used_s, NULL);
	generation_bump(c);
	forget_all(c, &evicted);
	pthread_mutex_unlock(&c->write_mu);
	cache_use_list_free(&evicted);
	if (ret_replaced) {
		/* Memory's copy of a row someone else deleted on disk replaced nothing. */
		if (!existed) {
			cache_entry_unref(in_mem);
			in_mem = NULL;
		}
		*ret_replaced = in_mem ? in_mem : from_disk;
	}
	return 0;
}

int cache_delete(struct cache *c, const struct cams_key *key)
{
	int ret;

	pthread_mutex_lock(&c->write_mu);
	ret = cache_store_delete(c->store, key);
	if (ret >= 0) {
		/* Also when absent on disk: memory may hold what another process removed. */
		cache_mem_forget(c->mem, key);
		generation_bump(c);
	}
	pthread_mutex_unlock(&c->write_mu);
	return ret;
}

/* cache_maintain(), flushing every use when all is set (cache_close()). */
static int maintain(struct cache *c, int all)
{
	struct cache_use_list evicted = { 0 };
	int ret;

	if (cache_store_read_only(c->store))
		return 0;
	pthread_mutex_lock(&c->write_mu);
	c->uses.len = 0;
	cache_mem_collect_uses_at_most(c->mem, &c->uses, all ? 0 : CACHE_FLUSH_MAX_USES);
	ret = cache_store_maintain(c->store, &c->uses, &evicted);
	if (ret == 0) {
		forget_all(c, &evicted);
		cache_mem_mark_persisted(c->mem, &c->uses);
	}
	pthread_mutex_unlock(&c->write_mu);
	cache_use_list_free(&evicted);
	return ret;
}

int cache_maintain(struct cache *c, int64_t now_s)
{
	(void)now_s;
	return maintain(c, 0);
}

/* ---- the rest, each one layer's ---------------------------------------- */

int cache_count(struct cache *c, uint64_t *ret_count)
{
	return cache_store_count(c->store, ret_count);
}

int cache_foreach(struct cache *c, int (*fn)(const struct cache_entry *e, void *cls), void *cls)
{
	return cache_store_foreach(c->store, fn, cls);
}

size_t cache_refresh_candidates(struct cache *c, int64_t now_s, uint64_t window_s,
				struct cams_key *ret_keys, size_t max_keys)
{
	return cache_mem_refresh_candidates(c->mem, now_s, window_s, ret_keys, max_keys);
}

int cache_integrity_check(struct cache *c)
{
	return cache_store_integrity_check(c->store);
}

void cache_stats(const struct cache *c, struct cache_stats *ret)
{
	cache_store_stats(c->store, ret);
}
