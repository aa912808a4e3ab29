/*
 * test_queue.c -- unit tests for the fair queue of flights waiting for
 * quota: FIFO per client, weighted shares, no credit for idle time, the
 * background class, push_front, bounds, and randomized operations checked
 * against a naive model (a list scanned for the smallest key).
 *
 * Randomized tests use one seed, printed, taken from $TEST_SEED when set.
 */
#include "queue.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "mem.h"

#define POOL 256

struct flight {
	int id;
	struct queue_item item;
};

static size_t rng_below(size_t n)
{
	return (size_t)(harness_rng_next() % n);
}

static struct flight *flight_of(struct queue_item *item)
{
	return (struct flight *)((char *)item - offsetof(struct flight, item));
}

static void flight_init(struct flight *f, int id, unsigned client, enum queue_class cls)
{
	f->id = id;
	f->item.client = client;
	f->item.cls = cls;
	f->item.heap_index = SIZE_MAX;
}

static struct flight *pop_flight(struct queue *q)
{
	struct queue_item *item = queue_pop(q);

	return item ? flight_of(item) : NULL;
}

TEST(one_client_is_served_first_in_first_out)
{
	struct queue *q = queue_new(POOL);
	struct flight f[10];
	int i;

	for (i = 0; i < 10; i++) {
		flight_init(&f[i], i, 3, QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &f[i].item) == 0);
		CHECK(queue_contains(&f[i].item));
	}
	CHECK(queue_len(q) == 10);
	CHECK(queue_len_client(q, 3) == 10);
	CHECK(queue_len_class(q, QUEUE_FOREGROUND) == 10);
	for (i = 0; i < 10; i++) {
		struct flight *got = pop_flight(q);

		REQUIRE(got);
		CHECK(got->id == i);
		CHECK(!queue_contains(&got->item));
	}
	CHECK(queue_pop(q) == NULL);
	CHECK(queue_len(q) == 0 && queue_len_client(q, 3) == 0);
	queue_free(q);
}

/* Keep `depth` items of each listed client queued; count pops per client. */
static void serve_backlogged(struct queue *q, struct flight *pool, size_t pool_len,
			     const unsigned *clients, size_t nclients, size_t depth,
			     size_t pops, size_t *counts)
{
	size_t c, i, next = 0;

	for (c = 0; c < nclients; c++) {
		for (i = 0; i < depth; i++) {
			struct flight *f = &pool[next++ % pool_len];

			flight_init(f, (int)clients[c], clients[c], QUEUE_FOREGROUND);
			CHECK(queue_push(q, &f->item) == 0);
		}
	}
	for (i = 0; i < pops; i++) {
		struct flight *f = pop_flight(q);

		if (!f) {
			CHECK(f);
			return;
		}
		counts[f->item.client]++;
		/* The same client stays backlogged: push it again. */
		CHECK(queue_push(q, &f->item) == 0);
	}
}

TEST(backlogged_clients_with_weights_1_and_3_share_1_to_3)
{
	struct queue *q = queue_new(POOL);
	struct flight *pool = xcalloc(POOL, sizeof(*pool));
	static const unsigned clients[] = { 1, 2 };
	size_t counts[QUEUE_MAX_CLIENTS] = { 0 };
	double share;

	queue_set_weight(q, 1, 1);
	queue_set_weight(q, 2, 3);
	serve_backlogged(q, pool, POOL, clients, 2, 20, 4000, counts);
	CHECK(counts[1] + counts[2] == 4000);
	share = (double)counts[2] / 4000.0;
	CHECK(fabs(share - 0.75) <= 0.02 * 0.75);
	CHECK(fabs((double)counts[1] / 4000.0 - 0.25) <= 0.02 * 0.25);
	queue_free(q);
	free(pool);
}

TEST(late_client_is_served_at_once_but_gets_no_credit_for_idle_time)
{
	struct queue *q = queue_new(POOL);
	struct flight a[20], b[20];
	size_t i, a_pops = 0, b_pops = 0, first_b = SIZE_MAX;

	for (i = 0; i < 20; i++) {
		flight_init(&a[i], (int)i, 1, QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &a[i].item) == 0);
	}
	/* Client 1 alone for 1000 pops. */
	for (i = 0; i < 1000; i++) {
		struct flight *f = pop_flight(q);

		REQUIRE(f && f->item.client == 1);
		REQUIRE(queue_push(q, &f->item) == 0);
	}
	/* Client 2 arrives with a backlog of its own. */
	for (i = 0; i < 20; i++) {
		flight_init(&b[i], (int)i, 2, QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &b[i].item) == 0);
	}
	for (i = 0; i < 200; i++) {
		struct flight *f = pop_flight(q);

		REQUIRE(f);
		if (f->item.client == 2) {
			b_pops++;
			if (first_b == SIZE_MAX)
				first_b = i;
		} else {
			a_pops++;
		}
		/* Never more than one ahead of the other: no burst. */
		CHECK(b_pops <= a_pops + 1);
		REQUIRE(queue_push(q, &f->item) == 0);
	}
	CHECK(first_b <= 1);
	CHECK(a_pops == 100 && b_pops == 100);
	queue_free(q);
}

TEST(background_goes_only_when_no_foreground_waits)
{
	struct queue *q = queue_new(POOL);
	struct flight bg[3], fg[3], late;
	struct flight *f;
	int i;

	for (i = 0; i < 3; i++) {
		flight_init(&bg[i], 100 + i, 0, QUEUE_BACKGROUND);
		REQUIRE(queue_push(q, &bg[i].item) == 0);
	}
	for (i = 0; i < 3; i++) {
		flight_init(&fg[i], i, (unsigned)i + 1, QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &fg[i].item) == 0);
	}
	CHECK(queue_len_class(q, QUEUE_BACKGROUND) == 3);
	CHECK(queue_len_class(q, QUEUE_FOREGROUND) == 3);
	CHECK(queue_ahead(q, &bg[0].item) == 3);
	for (i = 0; i < 3; i++) {
		f = pop_flight(q);
		REQUIRE(f);
		CHECK(f->item.cls == QUEUE_FOREGROUND);
	}
	f = pop_flight(q);
	REQUIRE(f);
	CHECK(f->id == 100);
	/* A foreground arrival overtakes the waiting refreshes. */
	flight_init(&late, 7, 5, QUEUE_FOREGROUND);
	REQUIRE(queue_push(q, &late.item) == 0);
	f = pop_flight(q);
	REQUIRE(f);
	CHECK(f->id == 7);
	CHECK(pop_flight(q)->id == 101);
	CHECK(pop_flight(q)->id == 102);
	CHECK(queue_pop(q) == NULL);
	queue_free(q);
}

TEST(push_front_puts_a_retry_next_in_its_class)
{
	struct queue *q = queue_new(POOL);
	struct flight f[6], bg, *got;
	int i;

	queue_set_weight(q, 2, 5);
	for (i = 0; i < 6; i++) {
		flight_init(&f[i], i, (unsigned)(i % 3), QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &f[i].item) == 0);
	}
	got = pop_flight(q);
	REQUIRE(got);
	/* Its call was throttled: it goes back to the head. */
	REQUIRE(queue_push_front(q, &got->item) == 0);
	CHECK(queue_ahead(q, &got->item) == 0);
	CHECK(pop_flight(q) == got);

	/* Background retry: next among background, still after foreground. */
	flight_init(&bg, 50, 0, QUEUE_BACKGROUND);
	REQUIRE(queue_push_front(q, &bg.item) == 0);
	CHECK(queue_ahead(q, &bg.item) == 5);
	for (i = 0; i < 5; i++)
		CHECK(pop_flight(q)->item.cls == QUEUE_FOREGROUND);
	CHECK(pop_flight(q) == &bg);
	queue_free(q);
}

TEST(full_queue_refuses_with_enospc)
{
	struct queue *q = queue_new(4);
	struct flight f[6];
	int i;

	for (i = 0; i < 6; i++)
		flight_init(&f[i], i, 0, QUEUE_FOREGROUND);
	for (i = 0; i < 4; i++)
		REQUIRE(queue_push(q, &f[i].item) == 0);
	CHECK(queue_push(q, &f[4].item) == -ENOSPC);
	CHECK(queue_push_front(q, &f[4].item) == -ENOSPC);
	CHECK(!queue_contains(&f[4].item));
	CHECK(queue_len(q) == 4);
	queue_remove(q, &f[1].item);
	CHECK(queue_push(q, &f[4].item) == 0);
	queue_free(q);

	q = queue_new(0);
	CHECK(queue_push(q, &f[5].item) == -ENOSPC);
	CHECK(queue_pop(q) == NULL);
	queue_free(q);
}

TEST(raising_the_bound_grows_the_queue_and_keeps_the_order)
{
	struct queue *q = queue_new(2);
	struct flight f[40];
	struct flight *got;
	int i;

	for (i = 0; i < 40; i++)
		flight_init(&f[i], i, (unsigned)(i % 3), QUEUE_FOREGROUND);
	REQUIRE(queue_push(q, &f[0].item) == 0);
	REQUIRE(queue_push(q, &f[1].item) == 0);
	CHECK(queue_push(q, &f[2].item) == -ENOSPC);
	queue_set_max(q, 40);
	CHECK(queue_max(q) == 40);
	for (i = 2; i < 40; i++)
		REQUIRE(queue_push(q, &f[i].item) == 0);
	CHECK(queue_len(q) == 40);
	/* FIFO within a client survives the growth */
	{
		int last[3] = { -1, -1, -1 };

		for (i = 0; i < 40; i++) {
			got = pop_flight(q);
			REQUIRE(got != NULL);
			CHECK(got->id > last[got->id % 3]);
			last[got->id % 3] = got->id;
		}
	}
	CHECK(queue_pop(q) == NULL);
	queue_free(q);
}

TEST(lowering_the_bound_keeps_queued_items_and_refuses_new_pushes)
{
	struct queue *q = queue_new(10);
	struct flight f[12];
	int i;

	for (i = 0; i < 12; i++)
		flight_init(&f[i], i, 0, QUEUE_FOREGROUND);
	for (i = 0; i < 8; i++)
		REQUIRE(queue_push(q, &f[i].item) == 0);
	queue_set_max(q, 3);
	CHECK(queue_max(q) == 3);
	CHECK(queue_len(q) == 8);
	CHECK(queue_push(q, &f[8].item) == -ENOSPC);
	CHECK(queue_push_front(q, &f[8].item) == -ENOSPC);
	/* every item queued before is still served, in order */
	for (i = 0; i < 6; i++) {
		struct flight *got = pop_flight(q);

		REQUIRE(got != NULL);
		CHECK(got->id == i);
	}
	/* two left, under the bound of 3: one push fits, the next does not */
	CHECK(queue_push(q, &f[9].item) == 0);
	CHECK(queue_push(q, &f[10].item) == -ENOSPC);
	queue_set_max(q, 0);
	CHECK(queue_push(q, &f[11].item) == -ENOSPC);
	CHECK(queue_len(q) == 3);
	/* raising again after lowering reuses the slots it kept */
	queue_set_max(q, 12);
	CHECK(queue_push(q, &f[10].item) == 0);
	CHECK(queue_push(q, &f[11].item) == 0);
	CHECK(queue_len(q) == 5);
	queue_free(q);
}

TEST(remove_is_a_no_op_for_items_not_queued)
{
	struct queue *q = queue_new(8);
	struct flight a, b, zeroed;

	flight_init(&a, 1, 0, QUEUE_FOREGROUND);
	flight_init(&b, 2, 0, QUEUE_FOREGROUND);
	memset(&zeroed, 0, sizeof(zeroed));
	REQUIRE(queue_push(q, &a.item) == 0);
	queue_remove(q, &b.item);
	/* heap_index 0 but not in this queue: recognised by identity. */
	queue_remove(q, &zeroed.item);
	CHECK(queue_len(q) == 1);
	queue_remove(q, &a.item);
	queue_remove(q, &a.item);
	CHECK(queue_len(q) == 0);
	CHECK(!queue_contains(&a.item));
	queue_free(q);
}

/* The naive model: the queued items, scanned for the smallest key. */
struct model {
	struct queue_item *items[POOL];
	size_t len;
};

static bool model_less(const struct queue_item *a, const struct queue_item *b)
{
	if (a->cls != b->cls)
		return a->cls < b->cls;
	if (a->finish_tag != b->finish_tag)
		return a->finish_tag < b->finish_tag;
	return a->seq < b->seq;
}

static size_t model_min(const struct model *m)
{
	size_t i, best = 0;

	for (i = 1; i < m->len; i++)
		if (model_less(m->items[i], m->items[best]))
			best = i;
	return best;
}

static void model_drop(struct model *m, size_t i)
{
	m->items[i] = m->items[--m->len];
}

static size_t model_find(const struct model *m, const struct queue_item *item)
{
	size_t i;

	for (i = 0; i < m->len; i++)
		if (m->items[i] == item)
			return i;
	return SIZE_MAX;
}

static void model_check_counts(const struct queue *q, const struct model *m)
{
	size_t per_client[8] = { 0 }, per_class[2] = { 0 }, i;

	CHECK(queue_len(q) == m->len);
	for (i = 0; i < m->len; i++) {
		per_client[m->items[i]->client]++;
		per_class[m->items[i]->cls]++;
	}
	for (i = 0; i < 8; i++)
		CHECK(queue_len_client(q, (unsigned)i) == per_client[i]);
	CHECK(queue_len_class(q, QUEUE_FOREGROUND) == per_class[0]);
	CHECK(queue_len_class(q, QUEUE_BACKGROUND) == per_class[1]);
}

TEST(random_operations_match_a_naive_model)
{
	const size_t max_items = 64;
	struct queue *q = queue_new(max_items);
	struct flight *pool = xcalloc(POOL, sizeof(*pool));
	struct model m = { .len = 0 };
	size_t step, i, mismatches = 0;

	harness_rng_reset(1);
	for (i = 0; i < 8; i++)
		queue_set_weight(q, (unsigned)i, (unsigned)(1 + rng_below(5)));
	for (i = 0; i < POOL; i++)
		flight_init(&pool[i], (int)i, 0, QUEUE_FOREGROUND);

	for (step = 0; step < 20000 && mismatches < 5; step++) {
		size_t op = rng_below(100);
		struct flight *f = &pool[rng_below(POOL)];

		if (op < 45) {
			int rc;

			if (model_find(&m, &f->item) != SIZE_MAX)
				continue;
			f->item.client = (unsigned)rng_below(8);
			f->item.cls = rng_below(5) == 0 ? QUEUE_BACKGROUND : QUEUE_FOREGROUND;
			rc = op < 40 ? queue_push(q, &f->item) : queue_push_front(q, &f->item);
			if (m.len == max_items) {
				CHECK(rc == -ENOSPC);
			} else {
				CHECK(rc == 0);
				m.items[m.len++] = &f->item;
				if (op >= 40 && queue_ahead(q, &f->item) !=
				    (f->item.cls == QUEUE_FOREGROUND ? 0 :
				     queue_len_class(q, QUEUE_FOREGROUND))) {
					CHECK(!"push_front goes next in its class");
					mismatches++;
				}
			}
		} else if (op < 75) {
			struct queue_item *got = queue_pop(q);

			if (!m.len) {
				CHECK(got == NULL);
				continue;
			}
			i = model_min(&m);
			if (got != m.items[i]) {
				CHECK(got == m.items[i]);
				mismatches++;
			}
			if (got)
				model_drop(&m, model_find(&m, got));
		} else if (op < 90) {
			if (!m.len)
				continue;
			i = rng_below(m.len);
			queue_remove(q, m.items[i]);
			CHECK(!queue_contains(m.items[i]));
			model_drop(&m, i);
		} else {
			size_t want;

			if (!m.len)
				continue;
			i = rng_below(m.len);
			want = 0;
			for (size_t j = 0; j < m.len; j++)
				if (model_less(m.items[j], m.items[i]))
					want++;
			if (queue_ahead(q, m.items[i]) != want) {
				CHECK(queue_ahead(q, m.items[i]) == want);
				mismatches++;
			}
		}
		model_check_counts(q, &m);
	}
	if (mismatches)
		fprintf(stderr, "  seed %" PRIu64 "\n", harness_seed);
	queue_free(q);
	free(pool);
}

TEST(queue_ahead_counts_the_pops_before_an_item)
{
	struct queue *q = queue_new(POOL);
	struct flight *pool = xcalloc(POOL, sizeof(*pool));
	size_t i, round;

	harness_rng_reset(2);
	queue_set_weight(q, 1, 2);
	queue_set_weight(q, 3, 7);
	for (round = 0; round < 20; round++) {
		struct flight *target;
		size_t ahead, popped = 0, n = 1 + rng_below(100);

		for (i = 0; i < n; i++) {
			flight_init(&pool[i], (int)i, (unsigned)rng_below(4),
				    rng_below(4) ? QUEUE_FOREGROUND : QUEUE_BACKGROUND);
			REQUIRE(queue_push(q, &pool[i].item) == 0);
		}
		target = &pool[rng_below(n)];
		ahead = queue_ahead(q, &target->item);
		for (;;) {
			struct flight *got = pop_flight(q);

			REQUIRE(got);
			if (got == target)
				break;
			popped++;
		}
		CHECK(popped == ahead);
		while (queue_pop(q))
			;
	}
	queue_free(q);
	free(pool);
}

TEST(queue_ahead_of_new_predicts_a_new_items_place)
{
	struct queue *q = queue_new(POOL);
	struct flight *pool = xcalloc(POOL, sizeof(*pool));
	struct flight probe;
	size_t i, round;

	harness_rng_reset(3);
	queue_set_weight(q, 0, 3);
	queue_set_weight(q, 2, 10);
	for (round = 0; round < 50; round++) {
		unsigned client = (unsigned)rng_below(4);
		size_t predicted, n = rng_below(60);

		for (i = 0; i < n; i++) {
			flight_init(&pool[i], (int)i, (unsigned)rng_below(4),
				    rng_below(4) ? QUEUE_FOREGROUND : QUEUE_BACKGROUND);
			REQUIRE(queue_push(q, &pool[i].item) == 0);
		}
		for (i = 0; i < n / 3; i++)
			queue_pop(q);
		predicted = queue_ahead_of_new(q, client);
		flight_init(&probe, -1, client, QUEUE_FOREGROUND);
		REQUIRE(queue_push(q, &probe.item) == 0);
		CHECK(queue_ahead(q, &probe.item) == predicted);
		while (queue_pop(q))
			;
	}
	queue_free(q);
	free(pool);
}

int main(void)
{
	harness_seed_init();

	RUN(one_client_is_served_first_in_first_out);
	RUN(backlogged_clients_with_weights_1_and_3_share_1_to_3);
	RUN(late_client_is_served_at_once_but_gets_no_credit_for_idle_time);
	RUN(background_goes_only_when_no_foreground_waits);
	RUN(push_front_puts_a_retry_next_in_its_class);
	RUN(full_queue_refuses_with_enospc);
	RUN(raising_the_bound_grows_the_queue_and_keeps_the_order);
	RUN(lowering_the_bound_keeps_queued_items_and_refuses_new_pushes);
	RUN(remove_is_a_no_op_for_items_not_queued);
	RUN(random_operations_match_a_naive_model);
	RUN(queue_ahead_counts_the_pops_before_an_item);
	RUN(queue_ahead_of_new_predicts_a_new_items_place);
	return harness_done();
}
