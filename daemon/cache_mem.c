/*
 * cache_mem.c -- the cache's memory layer (see cache_mem.h).
 *
 * Owns: the shards, their nodes, and one reference per node to a published
 * entry. A hit is: hash, lock one shard, find, take a reference, mark the
 * node referenced (CLOCK: see shard_trim()), record the time in
 * e->last_used_s and, the first time since the last flush, put the node on
 * the shard's dirty list, unlock -- no global lock, no allocation, no I/O,
 * and no other node touched.
 *
 * Invariants.
 *  - A shard holds at most shard_cap nodes; the bucket array is sized once.
 *  - Every publish and forget bumps the shard's generation under its mutex;
 *    cache_mem_offer() keeps a row only if the generation it was read at is
 *    still current, so an offer never reinstates what a write replaced.
 *  - Entry references are dropped after the shard mutex is released (a
 *    free never runs under a lock).
 *  - Every node whose entry was used later than persisted_used_s is on its
 *    shard's dirty list (uses are recorded under the shard mutex, so none
 *    slips past a collect), and collecting walks only that list: a flush
 *    costs the keys used since the last one, not every node. A node leaves
 *    the list when its use is on disk (cache_mem_mark_persisted()), when a
 *    collect finds nothing newer to flush, or when it is unlinked.
 *  - Every node is on its shard's expiry wheel, in the slot of its entry's
 *    expires_at_s, so refresh candidates (expiring within a window) are
 *    found by visiting the few slots the window covers, not every node
 *    used within it (with random hits over a million keys, that was all of
 *    them, every second, each shard locked meanwhile).
 * Does not: touch SQLite, read a clock, log, or judge freshness.
 * Threads: any; only one shard mutex is held at a time. Logs: never.
 */
#include "cache_mem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define MEM_SHARD_BITS 6
#define MEM_SHARDS (1u << MEM_SHARD_BITS)
/* Hash buckets per shard: a power of two, at least the shard's capacity. */
#define MEM_BUCKETS_MIN 4
#define MEM_BUCKETS_MAX (1u << 20)
/*
 * The expiry wheel: slots of 2^MEM_WHEEL_SHIFT seconds, MEM_WHEEL_SLOTS of
 * them per shard, so one turn is about 36 hours; an entry whose expiry is
 * a whole number of turns away from the window shares its slots and is
 * visited (and skipped) too, a small fraction (window / turn) of them.
 */
#define MEM_WHEEL_SHIFT 6
#define MEM_WHEEL_SLOTS 2048u
/* Uses of entries pushed out of memory before a flush, kept per shard. */
#define MEM_PENDING_MAX 256
#define MEM_ALIGN 64

struct mem_node {
	struct mem_node *chain;         /* next in the hash bucket */
	struct mem_node *newer, *older; /* LRU list */
	uint64_t hash;
	struct cache_entry *e;          /* one reference */
	int64_t persisted_used_s;       /* last_used_at known to be on disk */
	bool referenced;                /* hit since it last moved on the LRU list */
	/* The shard's dirty list; dirty_pprev is NULL when the node is not on it. */
	struct mem_node *dirty_next, **dirty_pprev;
	/* The slot of e->expires_at_s on the shard's expiry wheel. */
	struct mem_node *wheel_next, **wheel_pprev;
};

struct shard {
	_Alignas(MEM_ALIGN) pthread_mutex_t mu;
	struct mem_node **buckets;
	size_t bucket_mask;
	struct mem_node *newest, *oldest;
	size_t count;
	uint64_t gen;                   /* bumped by every publish/forget here */
	struct mem_node *dirty;         /* nodes used since their use was last flushed, oldest first */
	struct mem_node **dirty_tail;   /* where the next one is linked: &dirty when empty */
	struct mem_node **wheel;        /* MEM_WHEEL_SLOTS lists, by expiry */
	struct cache_use *pending;      /* uses of nodes pushed out, MEM_PENDING_MAX */
	size_t pending_len;
};

struct cache_mem {
	struct shard *shards;           /* MEM_SHARDS, cache-line aligned */
	size_t shard_cap;               /* nodes per shard, >= 1 */
	atomic_ullong pushed_out;       /* nodes pushed out by the bound, ever */
};

static int64_t entry_used(const struct cache_entry *e)
{
	return (int64_t)atomic_load_explicit(&e->last_used_s, memory_order_relaxed);
}

static void entry_note_use(struct cache_entry *e, int64_t now_s)
{
	if (now_s > entry_used(e))
		atomic_store_explicit(&e->last_used_s, (long long)now_s, memory_order_relaxed);
}

/*
 * Under the shard mutex. The mutex is what makes this cheap and exact: no
 * atomic flag is needed, and a collect (which takes the same mutex) sees
 * either the node on the list or the use not yet made.
 */
static void dirty_push(struct shard *s, struct mem_node *n)
{
	if (n->dirty_pprev)
		return;
	/* At the tail: a collect that takes only some takes the longest waiting. */
	n->dirty_next = NULL;
	n->dirty_pprev = s->dirty_tail;
	*s->dirty_tail = n;
	s->dirty_tail = &n->dirty_next;
}

static void dirty_remove(struct shard *s, struct mem_node *n)
{
	if (!n->dirty_pprev)
		return;
	*n->dirty_pprev = n->dirty_next;
	if (n->dirty_next)
		n->dirty_next->dirty_pprev = n->dirty_pprev;
	else
		s->dirty_tail = n->dirty_pprev;
	n->dirty_next = NULL;
	n->dirty_pprev = NULL;
}

static size_t wheel_slot(int64_t expires_at_s)
{
	return (size_t)(((uint64_t)expires_at_s >> MEM_WHEEL_SHIFT) & (MEM_WHEEL_SLOTS - 1));
}

static void wheel_add(struct shard *s, struct mem_node *n)
{
	struct mem_node **head = &s->wheel[wheel_slot(n->e->expires_at_s)];

	n->wheel_next = *head;
	if (*head)
		(*head)->wheel_pprev = &n->wheel_next;
	*head = n;
	n->wheel_pprev = head;
}

static void wheel_remove(struct mem_node *n)
{
	*n->wheel_pprev = n->wheel_next;
	if (n->wheel_next)
		n->wheel_next->wheel_pprev = n->wheel_pprev;
	n->wheel_next = NULL;
	n->wheel_pprev = NULL;
}

/* Under the shard mutex: n now holds e (one reference, given); the old entry is returned. */
static struct cache_entry *node_replace(struct mem_node *n, struct cache_entry *e,
					struct shard *s)
{
	struct cache_entry *old = n->e;

	wheel_remove(n);
	n->e = e;
	wheel_add(s, n);
	return old;
}

/* Under the shard mutex: n's entry was used at used_s; list it if that is not on disk. */
static void node_use(struct shard *s, struct mem_node *n, int64_t used_s)
{
	entry_note_use(n->e, used_s);
	if (entry_used(n->e) > n->persisted_used_s)
		dirty_push(s, n);
}

static struct shard *shard_of(struct cache_mem *m, uint64_t hash)
{
	return &m->shards[hash >> (64 - MEM_SHARD_BITS)];
}

static struct mem_node *shard_find(struct shard *s, uint64_t hash, const struct cams_key *key)
{
	struct mem_node *n;

	for (n = s->buckets[hash & s->bucket_mask]; n; n = n->chain)
		if (n->hash == hash && cams_key_equal(&n->e->key, key))
			return n;
	return NULL;
}

static void lru_unlink(struct shard *s, struct mem_node *n)
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

static void lru_push(struct shard *s, struct mem_node *n)
{
	n->newer = NULL;
	n->older = s->newest;
	if (s->newest)
		s->newest->newer = n;
	else
		s->oldest = n;
	s->newest = n;
}

static void lru_touch(struct shard *s, struct mem_node *n)
{
	if (s->newest == n)
		return;
	lru_unlink(s, n);
	lru_push(s, n);
}

static void shard_link(struct shard *s, struct mem_node *n)
{
	struct mem_node **b = &s->buckets[n->hash & s->bucket_mask];

	n->chain = *b;
	*b = n;
	lru_push(s, n);
	wheel_add(s, n);
	s->count++;
}

/* Unlink n and free it; returns its entry's reference for the caller to drop. */
static struct cache_entry *shard_unlink(struct shard *s, struct mem_node *n)
{
	struct mem_node **pp = &s->buckets[n->hash & s->bucket_mask];
	struct cache_entry *e = n->e;

	while (*pp != n)
		pp = &(*pp)->chain;
	*pp = n->chain;
	lru_unlink(s, n);
	dirty_remove(s, n);
	wheel_remove(n);
	s->count--;
	free(n);
	return e;
}

static void shard_note_use(struct shard *s, const struct cams_key *key, int64_t used_s);

/* n leaves memory but stays on disk: keep its unflushed use, if there is room. */
static void shard_remember_use(struct shard *s, const struct mem_node *n)
{
	int64_t used_s = entry_used(n->e);

	if (used_s > n->persisted_used_s)
		shard_note_use(s, &n->e->key, used_s);
}

/*
 * Over capacity: push out the least recently used node; its entry is
 * returned. Hits only mark their node (moving it would touch its two
 * neighbours and the list head, three cache misses a hit with a million
 * nodes), so the list is in order of last move, and an oldest node hit
 * since it last moved gets a second chance at the head (CLOCK): what goes
 * is a node not hit since at least every node behind it moved.
 */
static struct cache_entry *shard_trim(struct cache_mem *m, struct shard *s)
{
	/* Called right after linking a node: the newest, never the one to go. */
	struct mem_node *fresh = s->newest, *victim;

	if (s->count <= m->shard_cap || !s->oldest || s->oldest == fresh)
		return NULL;
	/* Terminates: each turn clears a mark and moves a node ahead of fresh. */
	while (s->oldest != fresh && s->oldest->referenced) {
		struct mem_node *n = s->oldest;

		n->referenced = false;
		lru_touch(s, n);
	}
	/* Every other node had its chance: the first of them to move goes. */
	victim = s->oldest != fresh ? s->oldest : fresh->newer;
	shard_remember_use(s, victim);
	atomic_fetch_add_explicit(&m->pushed_out, 1, memory_order_relaxed);
	return shard_unlink(s, victim);
}

struct cache_mem *cache_mem_new(uint64_t hot_entries)
{
	struct cache_mem *m = xcalloc(1, sizeof(*m));
	size_t buckets = MEM_BUCKETS_MIN, i;

	m->shard_cap = (size_t)(hot_entries / MEM_SHARDS);
	if (m->shard_cap < 1)
		m->shard_cap = 1;
	while (buckets < m->shard_cap && buckets < MEM_BUCKETS_MAX)
		buckets *= 2;
	/* Shards sit on their own cache lines so their mutexes do not share one. */
	m->shards = aligned_alloc(MEM_ALIGN, MEM_SHARDS * sizeof(*m->shards));
	if (!m->shards) {
		fprintf(stderr, "camskeyd: out of memory allocating cache shards\n");
		abort();
	}
	memset(m->shards, 0, MEM_SHARDS * sizeof(*m->shards));
	for (i = 0; i < MEM_SHARDS; i++) {
		pthread_mutex_init(&m->shards[i].mu, NULL);
		m->shards[i].buckets = xcalloc(buckets, sizeof(struct mem_node *));
		m->shards[i].bucket_mask = buckets - 1;
		m->shards[i].dirty_tail = &m->shards[i].dirty;
		m->shards[i].wheel = xcalloc(MEM_WHEEL_SLOTS, sizeof(struct mem_node *));
	}
	return m;
}

uint64_t cache_mem_pushed_out(struct cache_mem *m)
{
	return atomic_load_explicit(&m->pushed_out, memory_order_relaxed);
}

void cache_mem_free(struct cache_mem *m)
{
	struct mem_node *n, *next;
	size_t i, b;

	if (!m)
		return;
	for (i = 0; i < MEM_SHARDS; i++) {
		struct shard *s = &m->shards[i];

		for (b = 0; b <= s->bucket_mask; b++) {
			for (n = s->buckets[b]; n; n = next) {
				next = n->chain;
				cache_entry_unref(n->e);
				free(n);
			}
		}
		free(s->buckets);
		free(s->wheel);
		free(s->pending);
		pthread_mutex_destroy(&s->mu);
	}
	free(m->shards);
	free(m);
}

int cache_mem_get(struct cache_mem *m, const struct cams_key *key, int64_t now_s,
		  struct cache_entry **ret_entry, uint64_t *ret_gen)
{
	uint64_t hash = cams_key_hash(key), gen;
	struct shard *s = shard_of(m, hash);
	struct cache_entry *e = NULL;
	struct mem_node *n;

	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, key);
	if (n) {
		e = cache_entry_ref(n->e);
		if (!n->referenced)
			n->referenced = true;
		node_use(s, n, now_s);
	}
	gen = s->gen;
	pthread_mutex_unlock(&s->mu);
	if (ret_gen)
		*ret_gen = gen;
	if (!e)
		return 0;
	*ret_entry = e;
	return 1;
}

struct cache_entry *cache_mem_peek(struct cache_mem *m, const struct cams_key *key)
{
	uint64_t hash = cams_key_hash(key);
	struct shard *s = shard_of(m, hash);
	struct cache_entry *e = NULL;
	struct mem_node *n;

	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, key);
	if (n)
		e = cache_entry_ref(n->e);
	pthread_mutex_unlock(&s->mu);
	return e;
}

void cache_mem_publish(struct cache_mem *m, struct cache_entry *e, int64_t persisted_used_s,
		       struct cache_entry **ret_replaced)
{
	uint64_t hash = cams_key_hash(&e->key);
	struct shard *s = shard_of(m, hash);
	struct mem_node *fresh = xcalloc(1, sizeof(*fresh)), *n;
	struct cache_entry *replaced = NULL, *pushed_out = NULL;

	fresh->hash = hash;
	fresh->e = cache_entry_ref(e);
	fresh->persisted_used_s = persisted_used_s;
	pthread_mutex_lock(&s->mu);
	s->gen++;
	n = shard_find(s, hash, &e->key);
	if (n) {
		replaced = node_replace(n, fresh->e, s);
		n->persisted_used_s = persisted_used_s;
		lru_touch(s, n);
		/* Still listed if a use of the old entry was unflushed; a collect drops it. */
		free(fresh);
	} else {
		shard_link(s, fresh);
		pushed_out = shard_trim(m, s);
	}
	pthread_mutex_unlock(&s->mu);
	cache_entry_unref(pushed_out);
	if (ret_replaced)
		*ret_replaced = replaced;
	else
		cache_entry_unref(replaced);
}

/* Under the shard mutex: a use of a key not in memory, kept as a note. */
static void shard_note_use(struct shard *s, const struct cams_key *key, int64_t used_s)
{
	if (s->pending_len >= MEM_PENDING_MAX)
		return;
	if (!s->pending)
		s->pending = xmalloc(MEM_PENDING_MAX * sizeof(*s->pending));
	s->pending[s->pending_len].key = *key;
	s->pending[s->pending_len].used_s = used_s;
	s->pending_len++;
}

struct cache_entry *cache_mem_offer(struct cache_mem *m, struct cache_entry *e, uint64_t gen,
				    int64_t persisted_used_s, int64_t now_s)
{
	uint64_t hash = cams_key_hash(&e->key);
	struct shard *s = shard_of(m, hash);
	struct mem_node *fresh = xcalloc(1, sizeof(*fresh)), *n;
	struct cache_entry *drop[2] = { NULL, NULL }, *result = e;

	fresh->hash = hash;
	fresh->persisted_used_s = persisted_used_s;
	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, &e->key);
	if (n && (s->gen != gen || n->e->fetched_at_s >= e->fetched_at_s)) {
		/* Someone published first; theirs is at least as new. */
		result = cache_entry_ref(n->e);
		lru_touch(s, n);
		node_use(s, n, now_s);
		drop[0] = e;
	} else if (n) {
		entry_note_use(e, entry_used(n->e));
		drop[0] = node_replace(n, cache_entry_ref(e), s);
		n->persisted_used_s = persisted_used_s;
		lru_touch(s, n);
		node_use(s, n, now_s);
	} else if (s->gen == gen) {
		fresh->e = cache_entry_ref(e);
		shard_link(s, fresh);
		node_use(s, fresh, now_s);
		fresh = NULL;
		drop[1] = shard_trim(m, s);
	} else {
		/* A write raced with the read: serve what was read, do not keep it. */
		entry_note_use(e, now_s);
		if (now_s > persisted_used_s)
			shard_note_use(s, &e->key, now_s);
	}
	pthread_mutex_unlock(&s->mu);
	free(fresh);
	cache_entry_unref(drop[0]);
	cache_entry_unref(drop[1]);
	return result;
}

void cache_mem_forget(struct cache_mem *m, const struct cams_key *key)
{
	uint64_t hash = cams_key_hash(key);
	struct shard *s = shard_of(m, hash);
	struct cache_entry *drop = NULL;
	struct mem_node *n;
	size_t i;

	pthread_mutex_lock(&s->mu);
	s->gen++;
	n = shard_find(s, hash, key);
	if (n)
		drop = shard_unlink(s, n);
	/* A use noted for a row that is gone must not be flushed. */
	for (i = 0; i < s->pending_len;) {
		if (cams_key_equal(&s->pending[i].key, key))
			s->pending[i] = s->pending[--s->pending_len];
		else
			i++;
	}
	pthread_mutex_unlock(&s->mu);
	cache_entry_unref(drop);
}

void cache_mem_collect_uses_at_most(struct cache_mem *m, struct cache_use_list *uses,
				    size_t max_uses)
{
	/* An even share per shard (keys hash evenly), at least one. */
	size_t per_shard = max_uses ? (max_uses + MEM_SHARDS - 1) / MEM_SHARDS : SIZE_MAX;
	struct mem_node *n, *next;
	size_t i, j, taken;

	for (i = 0; i < MEM_SHARDS; i++) {
		struct shard *s = &m->shards[i];

		pthread_mutex_lock(&s->mu);
		/* Only the nodes used since the last flush; they stay listed until it is on disk. */
		taken = 0;
		for (n = s->dirty; n && taken < per_shard; n = next) {
			int64_t used_s = entry_used(n->e);

			next = n->dirty_next;
			if (used_s > n->persisted_used_s) {
				cache_use_list_add(uses, &n->e->key, used_s);
				taken++;
			} else {
				dirty_remove(s, n);
			}
		}
		for (j = 0; j < s->pending_len; j++)
			cache_use_list_add(uses, &s->pending[j].key, s->pending[j].used_s);
		s->pending_len = 0;
		pthread_mutex_unlock(&s->mu);
	}
}

void cache_mem_collect_uses(struct cache_mem *m, struct cache_use_list *uses)
{
	cache_mem_collect_uses_at_most(m, uses, 0);
}

void cache_mem_mark_persisted(struct cache_mem *m, const struct cache_use_list *uses)
{
	size_t i;

	for (i = 0; i < uses->len; i++) {
		const struct cache_use *u = &uses->items[i];
		uint64_t hash = cams_key_hash(&u->key);
		struct shard *s = shard_of(m, hash);
		struct mem_node *n;

		pthread_mutex_lock(&s->mu);
		n = shard_find(s, hash, &u->key);
		if (n && n->persisted_used_s < u->used_s)
			n->persisted_used_s = u->used_s;
		/* A hit since the collect keeps it listed for the next flush. */
		if (n && entry_used(n->e) <= n->persisted_used_s)
			dirty_remove(s, n);
		pthread_mutex_unlock(&s->mu);
	}
}

int cache_mem_newer_use(struct cache_mem *m, const struct cams_key *key, int64_t than_s,
			int64_t *ret_used_s)
{
	uint64_t hash = cams_key_hash(key);
	struct shard *s = shard_of(m, hash);
	struct mem_node *n;
	int64_t used_s = INT64_MIN;

	pthread_mutex_lock(&s->mu);
	n = shard_find(s, hash, key);
	if (n)
		used_s = entry_used(n->e);
	for (size_t j = 0; j < s->pending_len; j++)
		if (s->pending[j].used_s > used_s && cams_key_equal(&s->pending[j].key, key))
			used_s = s->pending[j].used_s;
	pthread_mutex_unlock(&s->mu);
	if (used_s <= than_s)
		return 0;
	*ret_used_s = used_s;
	return 1;
}

size_t cache_mem_refresh_candidates(struct cache_mem *m, int64_t now_s, uint64_t window_s,
				    struct cams_key *ret_keys, size_t max_keys)
{
	/* The slots from now to now + window_s, each once, soonest first. */
	uint64_t first = (uint64_t)now_s >> MEM_WHEEL_SHIFT;
	uint64_t last = ((uint64_t)now_s + window_s) >> MEM_WHEEL_SHIFT;
	uint64_t slots = last - first + 1 < MEM_WHEEL_SLOTS ? last - first + 1 : MEM_WHEEL_SLOTS;
	size_t n = 0;

	if (now_s < 0 || window_s > (uint64_t)INT64_MAX - (uint64_t)now_s)
		return 0;
	for (size_t i = 0; i < MEM_SHARDS && n < max_keys; i++) {
		struct shard *s = &m->shards[i];

		pthread_mutex_lock(&s->mu);
		for (uint64_t t = 0; t < slots && n < max_keys; t++) {
			struct mem_node *h = s->wheel[(first + t) & (MEM_WHEEL_SLOTS - 1)];

			for (; h && n < max_keys; h = h->wheel_next) {
				const struct cache_entry *e = h->e;
				int64_t used = entry_used(e);

				if (e->kind == CACHE_KIND_KEY && used >= now_s - (int64_t)window_s &&
				    used > e->fetched_at_s && e->expires_at_s > now_s &&
				    e->expires_at_s - now_s <= (int64_t)window_s)
					ret_keys[n++] = e->key;
			}
		}
		pthread_mutex_unlock(&s->mu);
	}
	return n;
}

size_t cache_mem_count(struct cache_mem *m)
{
	size_t total = 0;

	for (size_t i = 0; i < MEM_SHARDS; i++) {
		pthread_mutex_lock(&m->shards[i].mu);
		total += m->shards[i].count;
		pthread_mutex_unlock(&m->shards[i].mu);
	}
	return total;
}

size_t cache_mem_dirty_count(struct cache_mem *m)
{
	size_t total = 0;

	for (size_t i = 0; i < MEM_SHARDS; i++) {
		pthread_mutex_lock(&m->shards[i].mu);
		for (struct mem_node *n = m->shards[i].dirty; n; n = n->dirty_next)
			total++;
		pthread_mutex_unlock(&m->shards[i].mu);
	}
	return total;
}
