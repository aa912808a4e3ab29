/*
 * flight.c -- the flight table (see flight.h): a chained hash table keyed
 * by (CustSpaceId, PhoneNumber) with cams_key_hash(), and intrusive waiter
 * lists.
 */
#include "flight.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

struct flight_table {
	struct flight **buckets;
	size_t n_buckets;
	size_t count;
};

struct flight_table *flight_table_new(size_t buckets)
{
	struct flight_table *t = xcalloc(1, sizeof(*t));

	t->n_buckets = buckets ? buckets : 1024;
	t->buckets = xcalloc(t->n_buckets, sizeof(*t->buckets));
	return t;
}

void flight_table_free(struct flight_table *t)
{
	if (!t)
		return;
	assert(t->count == 0);
	free(t->buckets);
	free(t);
}

struct flight *flight_find(struct flight_table *t, const struct cams_key *key)
{
	struct flight *f = t->buckets[cams_key_hash(key) % t->n_buckets];

	for (; f; f = f->hash_next) {
		if (cams_key_equal(&f->key, key))
			return f;
	}
	return NULL;
}

struct flight *flight_start(struct flight_table *t, const struct cams_key *key)
{
	size_t b = cams_key_hash(key) % t->n_buckets;
	struct flight *f = xcalloc(1, sizeof(*f));

	assert(!flight_find(t, key));
	f->key = *key;
	f->waiters.next = f->waiters.prev = &f->waiters;
	f->qitem.heap_index = SIZE_MAX;
	f->hash_next = t->buckets[b];
	t->buckets[b] = f;
	t->count++;
	return f;
}

void flight_finish(struct flight_table *t, struct flight *f)
{
	struct flight **pp = &t->buckets[cams_key_hash(&f->key) % t->n_buckets];

	assert(f->n_waiters == 0);
	while (*pp && *pp != f)
		pp = &(*pp)->hash_next;
	assert(*pp == f);
	*pp = f->hash_next;
	t->count--;
	free(f);
}

void flight_table_clear(struct flight_table *t)
{
	for (size_t b = 0; b < t->n_buckets; b++) {
		while (t->buckets[b]) {
			struct flight *f = t->buckets[b];

			assert(f->n_waiters == 0);
			t->buckets[b] = f->hash_next;
			t->count--;
			free(f);
		}
	}
}

size_t flight_count(const struct flight_table *t)
{
	return t->count;
}

void flight_join(struct flight *f, struct flight_waiter *w)
{
	assert(!w->flight);
	w->flight = f;
	w->prev = f->waiters.prev;
	w->next = &f->waiters;
	f->waiters.prev->next = w;
	f->waiters.prev = w;
	f->n_waiters++;
}

void flight_leave(struct flight_waiter *w)
{
	if (!w->flight)
		return;
	w->prev->next = w->next;
	w->next->prev = w->prev;
	w->flight->n_waiters--;
	w->flight = NULL;
	w->prev = w->next = NULL;
}

struct flight_waiter *flight_first_waiter(struct flight *f)
{
	return f->waiters.next == &f->waiters ? NULL : f->waiters.next;
}
