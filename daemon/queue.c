/*
 * queue.c -- flights waiting for quota: a binary min-heap with weighted fair
 * queueing between clients and a background class (see queue.h).
 *
 * Discipline: self-clocked fair queueing on finish tags, as the header
 * describes. Per class there is a virtual time v (the finish tag of the last
 * item popped from that class, never decreasing) and a last finish tag per
 * client. A push gives
 *     finish = max(v, last_finish[client]) + 1 / weight[client]
 * and the heap pops the smallest key (class, finish, seq): all foreground
 * before any background, the smallest finish tag first, and the push order
 * (seq) between equal tags, so a client's own items stay FIFO. A backlogged
 * client advances its tags by 1/weight per item, so it gets its weight's
 * share; a client that was idle restarts at v, which is where the others
 * are now, so it is served at once but earns no credit for its idle time.
 * The background class runs the same discipline among refreshes.
 *
 * queue_push_front gives the item a finish tag no larger than the smallest
 * queued in its class and than v, and a seq below every ordinary push (the
 * front seqs count down from 2^63 - 1, the ordinary ones up from 2^63), so a
 * retry goes next; between several retries the latest pushed goes first. It
 * does not charge the client again: the item was charged when first pushed.
 *
 * When a class empties, its virtual time and every client's last finish tag
 * in it reset to 0: nobody is backlogged, so nobody has credit or debt, and
 * the tags stay small numbers however long the daemon runs.
 *
 * An item removed before it was served (its callers left) stays charged to
 * its client until the class empties; that costs the client at most one
 * slot per removed item and removes any gain from queue-and-cancel games.
 *
 * Owns: the heap array (cap pointers: allocated for max_items, grown by
 * queue_set_max when the bound rises, never shrunk, so lowering the bound
 * never moves or drops a queued item). Items belong to
 * the caller, must stay valid while queued, and are not touched by
 * queue_free. Membership is checked by identity (heap[heap_index] == item),
 * so an item whose heap_index was never set is still pushed correctly;
 * queue_contains() alone needs heap_index == SIZE_MAX on a fresh item.
 * Pure: no clocks, no logging. Threads: one owner (the engine thread).
 */
#include "queue.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define QUEUE_CLASSES 2
#define QUEUE_WEIGHT_MIN 1
#define QUEUE_WEIGHT_MAX 1000
#define SEQ_MIDDLE (UINT64_C(1) << 63)

struct queue {
	struct queue_item **heap;
	size_t len;
	size_t cap;               /* heap slots allocated, >= max_items */
	size_t max_items;

	double vtime[QUEUE_CLASSES];
	double last_finish[QUEUE_CLASSES][QUEUE_MAX_CLIENTS];
	unsigned weight[QUEUE_MAX_CLIENTS];

	size_t len_client[QUEUE_MAX_CLIENTS];
	size_t len_class[QUEUE_CLASSES];

	uint64_t next_seq;        /* ordinary pushes, counting up */
	uint64_t next_front_seq;  /* push_front, counting down */
};

/* a before b in pop order. */
static bool key_less(const struct queue_item *a, const struct queue_item *b)
{
	if (a->cls != b->cls)
		return a->cls < b->cls;
	if (a->finish_tag != b->finish_tag)
		return a->finish_tag < b->finish_tag;
	return a->seq < b->seq;
}

static bool in_queue(const struct queue *q, const struct queue_item *item)
{
	return item->heap_index < q->len && q->heap[item->heap_index] == item;
}

static void place(struct queue *q, size_t i, struct queue_item *item)
{
	q->heap[i] = item;
	item->heap_index = i;
}

static void sift_up(struct queue *q, size_t i)
{
	struct queue_item *item = q->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!key_less(item, q->heap[parent]))
			break;
		place(q, i, q->heap[parent]);
		i = parent;
	}
	place(q, i, item);
}

static void sift_down(struct queue *q, size_t i)
{
	struct queue_item *item = q->heap[i];

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= q->len)
			break;
		if (child + 1 < q->len && key_less(q->heap[child + 1], q->heap[child]))
			child++;
		if (!key_less(q->heap[child], item))
			break;
		place(q, i, q->heap[child]);
		i = child;
	}
	place(q, i, item);
}

static void check_item(const struct queue_item *item)
{
	assert(item->client < QUEUE_MAX_CLIENTS);
	assert(item->cls == QUEUE_FOREGROUND || item->cls == QUEUE_BACKGROUND);
}

struct queue *queue_new(size_t max_items)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	size_t i;

	q->cap = max_items ? max_items : 1;
	q->heap = xcalloc(q->cap, sizeof(*q->heap));
	q->max_items = max_items;
	for (i = 0; i < QUEUE_MAX_CLIENTS; i++)
		q->weight[i] = 1;
	q->next_seq = SEQ_MIDDLE;
	q->next_front_seq = SEQ_MIDDLE - 1;
	return q;
}

void queue_free(struct queue *q)
{
	if (!q)
		return;
	free(q->heap);
	free(q);
}

void queue_set_max(struct queue *q, size_t max_items)
{
	if (max_items > q->cap) {
		q->heap = xrealloc(q->heap, max_items * sizeof(*q->heap));
		memset(q->heap + q->cap, 0, (max_items - q->cap) * sizeof(*q->heap));
		q->cap = max_items;
	}
	q->max_items = max_items;
}

size_t queue_max(const struct queue *q)
{
	return q->max_items;
}

void queue_set_weight(struct queue *q, unsigned client, unsigned weight)
{
	assert(client < QUEUE_MAX_CLIENTS);
	if (weight < QUEUE_WEIGHT_MIN)
		weight = QUEUE_WEIGHT_MIN;
	if (weight > QUEUE_WEIGHT_MAX)
		weight = QUEUE_WEIGHT_MAX;
	q->weight[client] = weight;
}

static void insert(struct queue *q, struct queue_item *item)
{
	size_t i = q->len++;

	place(q, i, item);
	sift_up(q, i);
	q->len_client[item->client]++;
	q->len_class[item->cls]++;
}

int queue_push(struct queue *q, struct queue_item *item)
{
	double start;

	check_item(item);
	assert(!in_queue(q, item));
	if (q->len >= q->max_items)
		return -ENOSPC;
	start = q->vtime[item->cls];
	if (q->last_finish[item->cls][item->client] > start)
		start = q->last_finish[item->cls][item->client];
	item->finish_tag = start + 1.0 / q->weight[item->client];
	item->seq = q->next_seq++;
	q->last_finish[item->cls][item->client] = item->finish_tag;
	insert(q, item);
	return 0;
}

int queue_push_front(struct queue *q, struct queue_item *item)
{
	double tag;
	size_t i;

	check_item(item);
	assert(!in_queue(q, item));
	if (q->len >= q->max_items)
		return -ENOSPC;
	tag = q->vtime[item->cls];
	for (i = 0; i < q->len; i++) {
		const struct queue_item *other = q->heap[i];

		if (other->cls == item->cls && other->finish_tag < tag)
			tag = other->finish_tag;
	}
	item->finish_tag = tag;
	item->seq = q->next_front_seq--;
	insert(q, item);
	return 0;
}

/* Take the item at heap index i out, keeping the heap ordered. */
static void take(struct queue *q, size_t i)
{
	struct queue_item *item = q->heap[i];
	enum queue_class cls = item->cls;

	q->len--;
	if (i < q->len) {
		place(q, i, q->heap[q->len]);
		/* The moved item may belong above or below its new place. */
		if (i > 0 && key_less(q->heap[i], q->heap[(i - 1) / 2]))
			sift_up(q, i);
		else
			sift_down(q, i);
	}
	q->heap[q->len] = NULL;
	item->heap_index = SIZE_MAX;
	q->len_client[item->client]--;
	q->len_class[cls]--;
	if (q->len_class[cls] == 0) {
		q->vtime[cls] = 0;
		memset(q->last_finish[cls], 0, sizeof(q->last_finish[cls]));
	}
}

struct queue_item *queue_pop(struct queue *q)
{
	struct queue_item *item;

	if (!q->len)
		return NULL;
	item = q->heap[0];
	if (item->finish_tag > q->vtime[item->cls])
		q->vtime[item->cls] = item->finish_tag;
	take(q, 0);
	return item;
}

void queue_remove(struct queue *q, struct queue_item *item)
{
	if (!in_queue(q, item))
		return;
	take(q, item->heap_index);
}

bool queue_contains(const struct queue_item *item)
{
	return item->heap_index != SIZE_MAX;
}

size_t queue_ahead(const struct queue *q, const struct queue_item *item)
{
	size_t i, ahead = 0;

	assert(in_queue(q, item));
	for (i = 0; i < q->len; i++)
		if (key_less(q->heap[i], item))
			ahead++;
	return ahead;
}

size_t queue_ahead_of_new(const struct queue *q, unsigned client)
{
	double tag;
	size_t i, ahead = 0;

	assert(client < QUEUE_MAX_CLIENTS);
	tag = q->vtime[QUEUE_FOREGROUND];
	if (q->last_finish[QUEUE_FOREGROUND][client] > tag)
		tag = q->last_finish[QUEUE_FOREGROUND][client];
	tag += 1.0 / q->weight[client];
	/* A new item's seq is above every queued one: equal tags go first. */
	for (i = 0; i < q->len; i++) {
		const struct queue_item *other = q->heap[i];

		if (other->cls == QUEUE_FOREGROUND && other->finish_tag <= tag)
			ahead++;
	}
	return ahead;
}

size_t queue_len(const struct queue *q)
{
	return q->len;
}

size_t queue_len_client(const struct queue *q, unsigned client)
{
	assert(client < QUEUE_MAX_CLIENTS);
	return q->len_client[client];
}

size_t queue_len_class(const struct queue *q, enum queue_class cls)
{
	assert(cls == QUEUE_FOREGROUND || cls == QUEUE_BACKGROUND);
	return q->len_class[cls];
}
