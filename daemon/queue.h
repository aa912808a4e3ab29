/*
 * queue.h -- the queue of flights waiting for quota, with weighted fair
 * queueing between clients and a background class.
 *
 * Each item belongs to a client (an index 0..QUEUE_MAX_CLIENTS-1, weight
 * set by queue_set_weight, default 1). Foreground items are served in
 * start-time fair queueing order: an item's virtual finish tag is
 * max(virtual time, its client's last finish tag) + 1/weight, and the
 * smallest tag goes first (FIFO within a client), so each backlogged client
 * gets its weight's share and an idle client's share goes to the others.
 * Background items (refreshes) go only when no foreground item waits.
 * Items are embedded in the caller's struct (intrusive); the queue never
 * allocates per item. Pure; never logs. Threads: one owner (engine thread).
 */
#ifndef CAMSKEYD_QUEUE_H
#define CAMSKEYD_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUEUE_MAX_CLIENTS 128

enum queue_class {
	QUEUE_FOREGROUND = 0,
	QUEUE_BACKGROUND = 1,
};

struct queue_item {
	/* set by the caller before queue_push() */
	unsigned client;            /* < QUEUE_MAX_CLIENTS */
	enum queue_class cls;
	/* private to queue.c */
	double finish_tag;
	uint64_t seq;
	size_t heap_index;          /* SIZE_MAX when not queued */
};

struct queue;

/* max_items: the bound on queued items (push fails beyond it). */
struct queue *queue_new(size_t max_items);
void queue_free(struct queue *q);
/*
 * Change the bound (queue-max on reload). Raising it grows the heap;
 * lowering it keeps every queued item (nothing is dropped) but refuses
 * pushes, push_front included, until fewer than max_items are queued
 * (0 refuses every push, as queue_new(0) does).
 */
void queue_set_max(struct queue *q, size_t max_items);
/* The current bound. */
size_t queue_max(const struct queue *q);
/* Weight of a client, 1..1000. */
void queue_set_weight(struct queue *q, unsigned client, unsigned weight);

/* 0, or -ENOSPC when full. */
int queue_push(struct queue *q, struct queue_item *item);
/* Put an item back at the head of its class (a retry keeps its place). */
int queue_push_front(struct queue *q, struct queue_item *item);
/* The next item to send, removed; NULL if empty. */
struct queue_item *queue_pop(struct queue *q);
/* Remove a queued item (its callers left). No-op if not queued. */
void queue_remove(struct queue *q, struct queue_item *item);
bool queue_contains(const struct queue_item *item);
/* Items that would be popped before this one (it must be queued). */
size_t queue_ahead(const struct queue *q, const struct queue_item *item);
/* Items that a new foreground item from `client` would wait behind. */
size_t queue_ahead_of_new(const struct queue *q, unsigned client);
size_t queue_len(const struct queue *q);
size_t queue_len_client(const struct queue *q, unsigned client);
size_t queue_len_class(const struct queue *q, enum queue_class cls);

#endif
