/*
 * engine.c -- the miss path's decisions as a pure state machine (see
 * engine.h): flights, the fair queue, the limiter, the deadline heap of
 * waiting callers, retries, throttles, stale fallbacks and the stop.
 *
 * Owns: the flight table, the queue, the limiter, the deadline heap and the
 * action list. Borrows: callers (until their ANSWER action), cache entries
 * (references taken per answer).
 *
 * Invariants.
 *  - A submitted caller is in the heap until it is answered; answering
 *    removes it from the heap and its flight and appends it to the action
 *    list, after which the engine never reads it again.
 *  - A caller of a queued flight has its deadline in the heap; a caller of a
 *    flight on the wire has INT64_MAX there (the upstream timeout bounds it).
 *  - A flight is in the queue iff it is FLIGHT_QUEUED; flights on the wire
 *    are counted in in_flight.
 *  - A flight with waiters is foreground; background only with none.
 *  - A flight is in the claim list iff it is FLIGHT_CLAIMING or
 *    FLIGHT_REMOTE; at most one claim per flight is outstanding, and only
 *    the answer carrying its claim_seq counts.
 *  - Grants: held (due or not) + asked <= grants_max_pending; a held grant
 *    is used only between its send_at and latest, else thrown away.
 *
 * Pure: no clock, no I/O, no logging, no threads.
 */
#include "engine.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "envelope.h"
#include "mem.h"

#define ENGINE_FLIGHT_BUCKETS 4096

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define QUEUE_FULL_MESSAGE "too many callers are waiting for upstream quota"
#define QUOTA_WAIT_MESSAGE "no upstream quota within the wait limit; retry after Retry-After seconds"
#define SHUTTING_DOWN_MESSAGE "the daemon is stopping; retry shortly"
#define UNAVAILABLE_MESSAGE \
	"the shared quota (Redis) is unreachable and this host may not call the upstream without it; retry after Retry-After seconds"
#define ENGINE_GRANTS_MAX 16

struct engine_action_slot {
	enum engine_action_kind kind;
	void *ptr;
	int64_t quota_wait_us;
	struct cams_key key;   /* CLAIM */
	uint64_t claim_seq;    /* CLAIM */
	bool background;       /* CLAIM */
	bool revalidate;       /* CLAIM */
};

struct engine_grant_slot {
	int64_t send_at_us, latest_us;
};

struct engine {
	struct engine_settings settings;
	struct limiter *limiter;
	struct queue *queue;
	struct flight_table *flights;
	struct engine_caller **heap;   /* waiting callers, by deadline */
	size_t heap_len, heap_cap;
	struct engine_action_slot *actions; /* ring */
	size_t actions_head, actions_len, actions_cap;
	unsigned in_flight;
	bool stopping;
	struct engine_stats stats;

	/* many hosts: the gate, grants, claims */
	enum engine_gate gate;
	struct engine_grant_slot held[ENGINE_GRANTS_MAX]; /* by send_at */
	unsigned n_held;
	unsigned grants_asked;        /* RESERVEs not answered yet */
	int64_t reserve_at_us;        /* no RESERVE before */
	bool sent_local;              /* a send was decided under LOCAL ... */
	int64_t last_local_send_us;   /* ... the last of them */
	struct flight **claims;       /* CLAIMING and REMOTE flights */
	size_t n_claims, claims_cap;
	uint64_t claim_seq;
};

/* ---- answers (pure helpers) ------------------------------------------------ */

void engine_answer_clear(struct engine_answer *a)
{
	cache_entry_unref(a->entry);
	a->entry = NULL;
	free(a->body);
	a->body = NULL;
	a->body_len = 0;
}

void engine_answer_error(struct engine_answer *a, enum engine_outcome outcome, int http_status,
			 const char *request_id, const char *fallback_id, const char *code,
			 const char *message, int retry_after_s, const char *cache_status)
{
	struct buf b;

	engine_answer_clear(a);
	buf_init(&b, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&b, request_id && *request_id ? request_id : fallback_id, code,
			      message);
	a->body = buf_steal(&b, &a->body_len);
	snprintf(a->code, sizeof(a->code), "%s", code);
	a->outcome = outcome;
	a->http_status = http_status;
	a->retry_after_s = retry_after_s;
	a->age_s = 0;
	snprintf(a->cache_status, sizeof(a->cache_status), "%s", cache_status);
}

void engine_answer_entry(struct engine_answer *a, enum engine_outcome outcome,
			 struct cache_entry *e, int64_t now_s, const char *cache_status)
{
	size_t n = strlen(cache_status);

	_Static_assert(sizeof(a->code) == sizeof(e->code), "an entry's Code fits an answer's");
	/* Every status is one of ours, never near the size: no printf on the hit path. */
	assert(n < sizeof(a->cache_status));
	engine_answer_clear(a);
	a->entry = e;
	memcpy(a->code, e->code, sizeof(a->code));
	a->outcome = outcome;
	a->http_status = e->http_status;
	a->retry_after_s = 0;
	a->age_s = now_s > e->fetched_at_s ? now_s - e->fetched_at_s : 0;
	memcpy(a->cache_status, cache_status, n + 1);
}

static int retry_after_from_us(int64_t wait_us)
{
	int64_t s = (wait_us + 999999) / 1000000;

	return s < 1 ? 1 : (s > 3600 ? 3600 : (int)s);
}

/* ---- the action list ----------------------------------------------------------- */

static struct engine_action_slot *action_push(struct engine *e, enum engine_action_kind kind,
					      void *ptr, int64_t quota_wait_us)
{
	struct engine_action_slot *slot;

	if (e->actions_len == e->actions_cap) {
		size_t cap = e->actions_cap ? 2 * e->actions_cap : 64;
		struct engine_action_slot *a = xcalloc(cap, sizeof(*a));

		for (size_t i = 0; i < e->actions_len; i++)
			a[i] = e->actions[(e->actions_head + i) % e->actions_cap];
		free(e->actions);
		e->actions = a;
		e->actions_cap = cap;
		e->actions_head = 0;
	}
	slot = &e->actions[(e->actions_head + e->actions_len) % e->actions_cap];
	slot->kind = kind;
	slot->ptr = ptr;
	slot->quota_wait_us = quota_wait_us;
	e->actions_len++;
	return slot;
}

bool engine_next_action(struct engine *e, struct engine_action *ret)
{
	struct engine_action_slot *slot;

	if (e->actions_len == 0)
		return false;
	slot = &e->actions[e->actions_head];
	e->actions_head = (e->actions_head + 1) % e->actions_cap;
	e->actions_len--;
	memset(ret, 0, sizeof(*ret));
	ret->kind = slot->kind;
	switch (slot->kind) {
	case ENGINE_ACTION_SEND:
		ret->flight = slot->ptr;
		ret->quota_wait_us = slot->quota_wait_us;
		break;
	case ENGINE_ACTION_ANSWER:
		ret->caller = slot->ptr;
		break;
	case ENGINE_ACTION_RESERVE:
		break;
	case ENGINE_ACTION_CLAIM:
		ret->key = slot->key;
		ret->claim_seq = slot->claim_seq;
		ret->background = slot->background;
		ret->revalidate = slot->revalidate;
		break;
	}
	return true;
}

/* ---- the deadline heap ------------------------------------------------------------ */

static void heap_swap(struct engine *e, size_t i, size_t j)
{
	struct engine_caller *t = e->heap[i];

	e->heap[i] = e->heap[j];
	e->heap[j] = t;
	e->heap[i]->heap_index = i;
	e->heap[j]->heap_index = j;
}

static void heap_up(struct engine *e, size_t i)
{
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (e->heap[i]->deadline_us >= e->heap[parent]->deadline_us)
			break;
		heap_swap(e, i, parent);
		i = parent;
	}
}

static void heap_down(struct engine *e, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < e->heap_len && e->heap[l]->deadline_us < e->heap[m]->deadline_us)
			m = l;
		if (r < e->heap_len && e->heap[r]->deadline_us < e->heap[m]->deadline_us)
			m = r;
		if (m == i)
			return;
		heap_swap(e, i, m);
		i = m;
	}
}

static void heap_push(struct engine *e, struct engine_caller *c)
{
	if (e->heap_len == e->heap_cap) {
		e->heap_cap = e->heap_cap ? 2 * e->heap_cap : 256;
		e->heap = xrealloc(e->heap, e->heap_cap * sizeof(*e->heap));
	}
	c->heap_index = e->heap_len;
	e->heap[e->heap_len++] = c;
	heap_up(e, c->heap_index);
}

static void heap_remove(struct engine *e, struct engine_caller *c)
{
	size_t i = c->heap_index;

	if (i == SIZE_MAX)
		return;
	assert(i < e->heap_len && e->heap[i] == c);
	e->heap_len--;
	if (i != e->heap_len) {
		e->heap[i] = e->heap[e->heap_len];
		e->heap[i]->heap_index = i;
		heap_down(e, i);
		heap_up(e, i);
	}
	c->heap_index = SIZE_MAX;
}

static void heap_set_deadline(struct engine *e, struct engine_caller *c, int64_t deadline_us)
{
	heap_remove(e, c);
	c->deadline_us = deadline_us;
	heap_push(e, c);
}

static int64_t caller_wait_limit_us(const struct engine_caller *c)
{
	return c->submitted_us + (int64_t)c->max_wait_ms * 1000;
}

/* ---- answering callers ----------------------------------------------------------- */

static struct engine_caller *waiter_caller(struct flight_waiter *w)
{
	return container_of(w, struct engine_caller, waiter);
}

/* Hand c's answer back: out of the heap and its flight, onto the action list. */
static void deliver(struct engine *e, struct engine_caller *c)
{
	heap_remove(e, c);
	flight_leave(&c->waiter);
	cache_entry_unref(c->stale);
	c->stale = NULL;
	action_push(e, ENGINE_ACTION_ANSWER, c, 0);
}

/* Answer c from its stale entry if it accepts one and the entry allows; true if done. */
static bool answer_stale_if_allowed(struct engine *e, struct engine_caller *c, int64_t now_s,
				    const char *why)
{
	enum cache_freshness fr;
	char status[96];

	if (!c->stale || c->no_stale)
		return false;
	fr = cache_entry_freshness(c->stale, now_s, e->settings.stale_while_revalidate_s,
				   e->settings.stale_if_error_s);
	if (fr != CACHE_STALE_REVALIDATE && fr != CACHE_STALE_IF_ERROR)
		return false;
	snprintf(status, sizeof(status), "hit; stale; detail=%s", why);
	engine_answer_entry(&c->answer, ENGINE_OUTCOME_STALE_FALLBACK, c->stale, now_s, status);
	c->stale = NULL;
	return true;
}

/* Answer c with an error, or its stale entry where allowed, and deliver. */
static void answer_error(struct engine *e, struct engine_caller *c, int64_t now_s,
			 const char *stale_reason, enum engine_outcome outcome, int http_status,
			 const char *request_id, const char *code, const char *message,
			 int retry_after_s)
{
	if (!stale_reason || !answer_stale_if_allowed(e, c, now_s, stale_reason))
		engine_answer_error(&c->answer, outcome, http_status, request_id, c->request_id,
				    code, message, retry_after_s, "fwd=miss");
	deliver(e, c);
}

static void refuse(struct engine *e, struct engine_caller *c, int64_t now_s, bool queue_full,
		   int64_t wait_us)
{
	answer_error(e, c, now_s, "quota-wait",
		     queue_full ? ENGINE_OUTCOME_QUEUE_FULL : ENGINE_OUTCOME_QUOTA_WAIT, 503, NULL,
		     queue_full ? "Proxy.QueueFull" : "Proxy.QuotaWait",
		     queue_full ? QUEUE_FULL_MESSAGE : QUOTA_WAIT_MESSAGE, retry_after_from_us(wait_us));
}

static void answer_shutting_down(struct engine *e, struct engine_caller *c)
{
	engine_answer_error(&c->answer, ENGINE_OUTCOME_SHUTTING_DOWN, 503, NULL, c->request_id,
			    "Proxy.ShuttingDown", SHUTTING_DOWN_MESSAGE, 1, "fwd=miss");
	deliver(e, c);
}

/* Fail closed: no call without the shared limiter; a stale entry where allowed. */
static void answer_unavailable(struct engine *e, struct engine_caller *c, int64_t now_s)
{
	if (!answer_stale_if_allowed(e, c, now_s, "quota-unavailable")) {
		e->stats.quota_unavailable++;
		engine_answer_error(&c->answer, ENGINE_OUTCOME_QUOTA_UNAVAILABLE, 503, NULL,
				    c->request_id, "Proxy.SharedQuotaUnavailable",
				    UNAVAILABLE_MESSAGE, 1, "fwd=miss");
	}
	deliver(e, c);
}

/* ---- the claim list ---------------------------------------------------------------- */

static void claims_add(struct engine *e, struct flight *f)
{
	if (e->n_claims == e->claims_cap) {
		e->claims_cap = e->claims_cap ? 2 * e->claims_cap : 64;
		e->claims = xrealloc(e->claims, e->claims_cap * sizeof(*e->claims));
	}
	f->claim_index = e->n_claims;
	e->claims[e->n_claims++] = f;
}

static void claims_remove(struct engine *e, struct flight *f)
{
	size_t i = f->claim_index;

	assert(i < e->n_claims && e->claims[i] == f);
	e->claims[i] = e->claims[--e->n_claims];
	e->claims[i]->claim_index = i;
	f->claim_index = SIZE_MAX;
}

/* Ask the driver to claim f's key (again). */
static void claim_push(struct engine *e, struct flight *f)
{
	struct engine_action_slot *slot = action_push(e, ENGINE_ACTION_CLAIM, NULL, 0);

	f->state = FLIGHT_CLAIMING;
	f->claim_seq = ++e->claim_seq;
	slot->key = f->key;
	slot->claim_seq = f->claim_seq;
	slot->background = f->background;
	slot->revalidate = f->revalidate;
	f->claim_revalidate = f->revalidate;
}

static bool claiming(const struct flight *f)
{
	return f->state == FLIGHT_CLAIMING || f->state == FLIGHT_REMOTE;
}

/* Forget f, which has no waiters, wherever it is. */
static void flight_drop(struct engine *e, struct flight *f)
{
	if (claiming(f))
		claims_remove(e, f);
	else if (f->state == FLIGHT_QUEUED)
		queue_remove(e->queue, &f->qitem);
	flight_finish(e->flights, f);
}

/* ---- flights ------------------------------------------------------------------------ */

/*
 * The engine enforces queue-max itself (engine_submit, engine_refresh) and
 * uses the queue's own bound as a capacity it grows: a throttled flight put
 * back, or a flight turned background, never needs room a caller could be
 * refused for. What is queued stays bounded: callers' keys by queue-max,
 * background keys by the room callers leave, put-back flights by those on
 * the wire.
 */
static void queue_make_room(struct engine *e)
{
	size_t len = queue_len(e->queue);

	if (len >= queue_max(e->queue))
		queue_set_max(e->queue, 2 * len + 16);
}

/* No room for another key callers wait for. */
static bool queue_full_for_callers(const struct engine *e)
{
	size_t n = queue_len_class(e->queue, QUEUE_FOREGROUND);

	/* A key claimed for callers is one they wait for too (queued once claimed). */
	for (size_t i = 0; i < e->n_claims; i++)
		n += !e->claims[i]->background;
	return n >= e->settings.queue_max;
}

/*
 * f lost its last waiter. Queued: the key was wanted, so it stays queued as
 * background work (sent only when no caller waits for quota), unless the
 * queue has no room. On the wire: it finishes normally, nobody to tell.
 */
static void flight_orphaned(struct engine *e, struct flight *f)
{
	if (f->n_waiters > 0)
		return;
	/* Waiting for the shared tier for nobody: nothing left to do. */
	if (claiming(f) && !f->background) {
		flight_drop(e, f);
		return;
	}
	if (f->state != FLIGHT_QUEUED)
		return;
	if (f->background)
		return;
	queue_remove(e->queue, &f->qitem);
	f->background = true;
	f->qitem.cls = QUEUE_BACKGROUND;
	queue_make_room(e);
	if (e->stopping || queue_push(e->queue, &f->qitem) < 0)
		flight_finish(e->flights, f);
}

static struct flight *flight_new(struct engine *e, const struct cams_key *key, unsigned client,
				 bool background, bool revalidate, int64_t now_us)
{
	struct flight *f = flight_start(e->flights, key);

	f->revalidate = revalidate;
	f->qitem.client = client < QUEUE_MAX_CLIENTS ? client : QUEUE_MAX_CLIENTS - 1;
	f->qitem.cls = background ? QUEUE_BACKGROUND : QUEUE_FOREGROUND;
	f->background = background;
	f->queued_at_us = now_us;
	f->claim_index = SIZE_MAX;
	if (e->settings.shared) {
		claims_add(e, f);
		claim_push(e, f);
		return f;
	}
	queue_make_room(e);
	if (queue_push(e->queue, &f->qitem) < 0) {
		flight_finish(e->flights, f);
		return NULL;
	}
	return f;
}

/* A caller now waits for f: background work becomes foreground, for c's client. */
static int flight_make_foreground(struct engine *e, struct flight *f, unsigned client)
{
	if (!f->background)
		return 0;
	f->background = false;
	if (f->state != FLIGHT_QUEUED) {
		/* queued later (a claim answered, a throttled retry): in c's class */
		f->qitem.cls = QUEUE_FOREGROUND;
		f->qitem.client = client < QUEUE_MAX_CLIENTS ? client : QUEUE_MAX_CLIENTS - 1;
		return 0;
	}
	queue_remove(e->queue, &f->qitem);
	f->qitem.cls = QUEUE_FOREGROUND;
	f->qitem.client = client < QUEUE_MAX_CLIENTS ? client : QUEUE_MAX_CLIENTS - 1;
	queue_make_room(e);
	return queue_push(e->queue, &f->qitem);
}

/* Predicted wait for a queued flight, or for a new one from client. */
static int64_t predicted_wait_us(struct engine *e, const struct flight *f, unsigned client,
				 int64_t now_us)
{
	size_t ahead = f ? queue_ahead(e->queue, &f->qitem)
			 : queue_ahead_of_new(e->queue, client < QUEUE_MAX_CLIENTS
								? client
								: QUEUE_MAX_CLIENTS - 1);

	return limiter_wait_estimate_us(e->limiter, now_us, ahead);
}

void engine_submit(struct engine *e, struct engine_caller *c, int64_t now_us, int64_t now_s)
{
	struct flight *f;
	int64_t wait_us;

	memset(&c->answer, 0, sizeof(c->answer));
	c->waiter.flight = NULL;
	c->waiter.prev = c->waiter.next = NULL;
	c->answered_next = NULL;
	c->deadline_us = caller_wait_limit_us(c);
	heap_push(e, c);
	if (e->stopping) {
		answer_shutting_down(e, c);
		return;
	}

	f = flight_find(e->flights, &c->key);
	if (e->gate == ENGINE_GATE_CLOSED && (!f || f->state != FLIGHT_SENDING)) {
		answer_unavailable(e, c, now_s);
		return;
	}
	if (!f) {
		wait_us = predicted_wait_us(e, NULL, c->client, now_us);
		if (queue_full_for_callers(e)) {
			refuse(e, c, now_s, true, wait_us);
			return;
		}
		/* wait_us 0: a slot is free now, even for a caller who waits not at all. */
		if (wait_us > 0 && now_us + wait_us > c->deadline_us) {
			refuse(e, c, now_s, false, wait_us);
			return;
		}
		f = flight_new(e, &c->key, c->client, false, c->revalidate, now_us);
		if (!f) {
			refuse(e, c, now_s, true, wait_us);
			return;
		}
		flight_join(f, &c->waiter);
		return;
	}

	e->stats.joined++;
	if (c->revalidate)
		f->revalidate = true;
	if (flight_make_foreground(e, f, c->client) < 0) {
		/* No room to move it into the foreground class: it is lost. */
		flight_finish(e->flights, f);
		refuse(e, c, now_s, true, 0);
		return;
	}
	if (f->state == FLIGHT_QUEUED) {
		wait_us = predicted_wait_us(e, f, c->client, now_us);
		if (wait_us > 0 && now_us + wait_us > c->deadline_us) {
			refuse(e, c, now_s, false, wait_us);
			return;
		}
	} else if (f->state == FLIGHT_SENDING) {
		heap_set_deadline(e, c, INT64_MAX);
	}
	/* CLAIMING, REMOTE: the caller's wait limit, set above */
	flight_join(f, &c->waiter);
}

bool engine_refresh(struct engine *e, const struct cams_key *key, int64_t now_us)
{
	if (e->stopping || flight_find(e->flights, key))
		return false;
	/* Background work takes only room callers leave. */
	if (queue_len(e->queue) + e->n_claims >= e->settings.queue_max)
		return false;
	return flight_new(e, key, 0, true, false, now_us) != NULL;
}

void engine_caller_gone(struct engine *e, struct engine_caller *c, int64_t now_us,
			int64_t now_s)
{
	struct flight *f = c->waiter.flight;

	(void)now_us;
	(void)now_s;
	e->stats.departed++;
	engine_answer_clear(&c->answer);
	c->answer.outcome = ENGINE_OUTCOME_GONE;
	c->answer.http_status = 0;
	deliver(e, c);
	if (f)
		flight_orphaned(e, f);
}

/* Answer every waiter of f from entry x and finish f. */
static void flight_succeed(struct engine *e, struct flight *f, struct cache_entry *x,
			   bool stored, int64_t now_s)
{
	enum engine_outcome outcome = x->kind == CACHE_KIND_NEGATIVE
					      ? ENGINE_OUTCOME_MISS_NEGATIVE
					      : ENGINE_OUTCOME_MISS;
	struct flight_waiter *w;

	while ((w = flight_first_waiter(f))) {
		struct engine_caller *c = waiter_caller(w);

		engine_answer_entry(&c->answer, outcome, cache_entry_ref(x), now_s,
				    stored ? "fwd=miss; stored" : "fwd=miss");
		deliver(e, c);
	}
	flight_finish(e->flights, f);
}

/* Answer every waiter of f with the error (or its stale entry) and finish f. */
static void flight_fail(struct engine *e, struct flight *f, int64_t now_s,
			enum engine_outcome outcome, int http_status, const char *request_id,
			const char *code, const char *message, int retry_after_s,
			const char *stale_reason)
{
	struct flight_waiter *w;

	while ((w = flight_first_waiter(f)))
		answer_error(e, waiter_caller(w), now_s, stale_reason, outcome, http_status,
			     request_id, code, message, retry_after_s);
	flight_drop(e, f);
}

/*
 * System.LimitControl: back the limiter off; retry f at the head of the
 * queue while attempts remain, for the callers who can wait until the next
 * slot. The others are answered 503 now.
 */
static void flight_throttled(struct engine *e, struct flight *f, const struct engine_reply *r,
			     int64_t now_us, int64_t now_s)
{
	const char *code = r->code ? r->code : "System.LimitControl";
	const char *message = r->message ? r->message : "The system is under flow control";
	struct flight_waiter *w, *next;
	int64_t retry_at;
	int retry_after_s;

	limiter_on_throttle(e->limiter, now_us);
	e->stats.throttles++;
	retry_at = limiter_next_send_us(e->limiter, now_us);
	retry_after_s = retry_after_from_us(retry_at - now_us);
	if (f->attempts > e->settings.upstream_retries || f->n_waiters == 0 || e->stopping) {
		flight_fail(e, f, now_s, ENGINE_OUTCOME_THROTTLED, 503, r->request_id, code, message,
			    retry_after_s, "upstream-throttled");
		return;
	}
	/* Closed: no quota can come for a retry; fail closed now. */
	if (e->gate == ENGINE_GATE_CLOSED) {
		while ((w = flight_first_waiter(f)))
			answer_unavailable(e, waiter_caller(w), now_s);
		flight_drop(e, f);
		return;
	}
	for (w = flight_first_waiter(f); w && w != &f->waiters; w = next) {
		struct engine_caller *c = waiter_caller(w);
		int64_t limit_us = caller_wait_limit_us(c);

		next = w->next;
		if (limit_us < retry_at)
			answer_error(e, c, now_s, "upstream-throttled", ENGINE_OUTCOME_THROTTLED, 503,
				     r->request_id, code, message, retry_after_s);
		else
			heap_set_deadline(e, c, limit_us);
	}
	if (f->n_waiters == 0) {
		flight_finish(e->flights, f);
		return;
	}
	f->state = FLIGHT_QUEUED;
	f->queued_at_us = now_us;
	queue_make_room(e);
	if (queue_push_front(e->queue, &f->qitem) < 0)
		flight_fail(e, f, now_s, ENGINE_OUTCOME_THROTTLED, 503, r->request_id, code, message,
			    retry_after_s, "upstream-throttled");
}

void engine_upstream_done(struct engine *e, struct flight *f, const struct engine_reply *r,
			  int64_t now_us, int64_t now_s)
{
	assert(f->state == FLIGHT_SENDING);
	assert(e->in_flight > 0);
	e->in_flight--;
	limiter_observe_arrival(e->limiter, r->wire_delay_us, r->rtt_var_us);
	limiter_place_arrival(e->limiter, f->sent_at_us, r->wire_delay_us);
	/* A hint describes the upstream's window as of the call's arrival, not its answer. */
	if (r->ratelimit_remain >= 0 || r->ratelimit_time_left_ms >= 0)
		limiter_on_hint(e->limiter, f->sent_at_us + (r->wire_delay_us > 0 ? r->wire_delay_us : 0),
				r->ratelimit_remain, r->ratelimit_time_left_ms);

	switch (r->kind) {
	case ENGINE_REPLY_ENTRY:
		flight_succeed(e, f, r->entry, r->stored, now_s);
		break;
	case ENGINE_REPLY_THROTTLED:
		flight_throttled(e, f, r, now_us, now_s);
		break;
	case ENGINE_REPLY_FAILED:
		flight_fail(e, f, now_s, ENGINE_OUTCOME_UPSTREAM_ERROR,
			    r->http_status ? r->http_status : 502, r->request_id,
			    r->code ? r->code : "Proxy.UpstreamError",
			    r->message ? r->message : "the upstream call failed", 0,
			    r->stale_reason ? r->stale_reason : "upstream-error");
		break;
	}
}

/* The window a send counts in: 1 s plus the limiter's margin. */
static int64_t window_us(struct engine *e)
{
	return 1000000 + limiter_margin_us(e->limiter);
}

/* Send the fair queue's next flight now. */
static void send_next(struct engine *e, int64_t now_us)
{
	struct queue_item *item = queue_pop(e->queue);
	struct flight *f = container_of(item, struct flight, qitem);

	limiter_record_send(e->limiter, now_us);
	e->stats.sends++;
	if (f->attempts > 0)
		e->stats.retries++;
	if (f->background)
		e->stats.refreshes++;
	f->attempts++;
	f->state = FLIGHT_SENDING;
	f->sent_at_us = now_us;
	e->in_flight++;
	/* Its callers now wait for the answer, not for quota. */
	for (struct flight_waiter *w = flight_first_waiter(f); w && w != &f->waiters; w = w->next)
		heap_set_deadline(e, waiter_caller(w), INT64_MAX);
	action_push(e, ENGINE_ACTION_SEND, f, now_us - f->queued_at_us);
}

/* Held grants past their latest time are thrown away, never used late. */
static void drop_late_grants(struct engine *e, int64_t now_us)
{
	unsigned n = 0;

	for (unsigned i = 0; i < e->n_held; i++) {
		if (e->held[i].latest_us < now_us)
			e->stats.grants_discarded++;
		else
			e->held[n++] = e->held[i];
	}
	e->n_held = n;
}

static unsigned grants_wanted(const struct engine *e)
{
	size_t queued = queue_len(e->queue);
	unsigned max = e->settings.grants_max_pending ? e->settings.grants_max_pending : 1;

	if (max > ENGINE_GRANTS_MAX)
		max = ENGINE_GRANTS_MAX;
	return queued < max ? (unsigned)queued : max;
}

/* Ask for grants up to what the queue can use (bounded by max pending). */
static void ask_grants(struct engine *e, int64_t now_us)
{
	while (!e->stopping && now_us >= e->reserve_at_us &&
	       e->n_held + e->grants_asked < grants_wanted(e)) {
		e->grants_asked++;
		action_push(e, ENGINE_ACTION_RESERVE, NULL, 0);
	}
}

/* Send what the gate allows now, in fair-queue order. */
static void dispatch(struct engine *e, int64_t now_us)
{
	switch (e->gate) {
	case ENGINE_GATE_LOCAL:
		while (queue_len(e->queue) > 0 &&
		       limiter_next_send_us(e->limiter, now_us) <= now_us) {
			send_next(e, now_us);
			e->sent_local = true;
			e->last_local_send_us = now_us;
		}
		break;
	case ENGINE_GATE_GRANTS:
		drop_late_grants(e, now_us);
		while (queue_len(e->queue) > 0 && e->n_held > 0 && e->held[0].send_at_us <= now_us) {
			memmove(&e->held[0], &e->held[1], (e->n_held - 1) * sizeof(e->held[0]));
			e->n_held--;
			e->stats.grants_used++;
			send_next(e, now_us);
		}
		ask_grants(e, now_us);
		break;
	case ENGINE_GATE_CLOSED:
		break;
	}
}

/* REMOTE flights whose time came claim again. */
static void reclaim(struct engine *e, int64_t now_us)
{
	for (size_t i = 0; i < e->n_claims; i++) {
		struct flight *f = e->claims[i];

		if (f->state == FLIGHT_REMOTE && f->claim_at_us <= now_us)
			claim_push(e, f);
	}
}

/* Callers whose wait limit passed while their flight is still queued. */
static void expire_deadlines(struct engine *e, int64_t now_us, int64_t now_s)
{
	while (e->heap_len > 0 && e->heap[0]->deadline_us < now_us) {
		struct engine_caller *c = e->heap[0];
		struct flight *f = c->waiter.flight;
		int64_t wait_us = 0;

		if (f && f->state == FLIGHT_QUEUED)
			wait_us = predicted_wait_us(e, f, c->client, now_us);
		refuse(e, c, now_s, false, wait_us);
		if (f)
			flight_orphaned(e, f);
	}
}

void engine_tick(struct engine *e, int64_t now_us, int64_t now_s)
{
	if (e->stopping)
		return;
	/*
	 * Send first: a caller whose flight can go now is served, even one
	 * that asked not to wait at all (max_wait_ms = 0).
	 */
	dispatch(e, now_us);
	reclaim(e, now_us);
	expire_deadlines(e, now_us, now_s);
}

int64_t engine_next_wake_us(struct engine *e, int64_t now_us)
{
	int64_t wake = INT64_MAX;

	if (e->stopping)
		return wake;
	if (queue_len(e->queue) > 0) {
		switch (e->gate) {
		case ENGINE_GATE_LOCAL:
			wake = limiter_next_send_us(e->limiter, now_us);
			break;
		case ENGINE_GATE_GRANTS:
			if (e->n_held > 0)
				wake = e->held[0].send_at_us;
			if (e->n_held + e->grants_asked < grants_wanted(e) && e->reserve_at_us < wake)
				wake = e->reserve_at_us;
			break;
		case ENGINE_GATE_CLOSED:
			break;
		}
		if (wake < now_us)
			wake = now_us;
	}
	for (size_t i = 0; i < e->n_claims; i++) {
		if (e->claims[i]->state == FLIGHT_REMOTE && e->claims[i]->claim_at_us < wake)
			wake = e->claims[i]->claim_at_us > now_us ? e->claims[i]->claim_at_us : now_us;
	}
	/* Deadlines expire strictly after their time. */
	if (e->heap_len > 0 && e->heap[0]->deadline_us != INT64_MAX &&
	    e->heap[0]->deadline_us + 1 < wake)
		wake = e->heap[0]->deadline_us + 1;
	return wake;
}

/* ---- many hosts: the gate, grants, claims ------------------------------------------------ */

/*
 * The callers waiting for quota or a claim (not for a call on the wire),
 * collected first because answering reorders the heap. Freed by the caller.
 */
static struct engine_caller **callers_not_on_the_wire(struct engine *e, size_t *ret_n)
{
	struct engine_caller **list = xcalloc(e->heap_len + 1, sizeof(*list));
	size_t n = 0;

	for (size_t i = 0; i < e->heap_len; i++) {
		struct flight *f = e->heap[i]->waiter.flight;

		if (!f || f->state != FLIGHT_SENDING)
			list[n++] = e->heap[i];
	}
	*ret_n = n;
	return list;
}

void engine_set_gate(struct engine *e, enum engine_gate g, int64_t now_us, int64_t now_s)
{
	enum engine_gate old = e->gate;

	if (g == old)
		return;
	e->gate = g;
	if (old == ENGINE_GATE_GRANTS) {
		e->stats.grants_discarded += e->n_held;
		e->n_held = 0;
	}
	/* Sends under the local limiter are unknown to the shared one: one quiet window. */
	if (g == ENGINE_GATE_GRANTS && e->sent_local &&
	    e->reserve_at_us < e->last_local_send_us + window_us(e))
		e->reserve_at_us = e->last_local_send_us + window_us(e);
	if (g == ENGINE_GATE_CLOSED) {
		size_t n;
		struct engine_caller **waiting = callers_not_on_the_wire(e, &n);

		for (size_t i = 0; i < n; i++) {
			struct flight *f = waiting[i]->waiter.flight;

			answer_unavailable(e, waiting[i], now_s);
			if (f)
				flight_orphaned(e, f);
		}
		free(waiting);
	}
	(void)now_us;
}

enum engine_gate engine_gate(const struct engine *e)
{
	return e->gate;
}

void engine_grant(struct engine *e, int64_t send_at_us, int64_t latest_us, int64_t now_us)
{
	unsigned i;

	if (e->grants_asked > 0)
		e->grants_asked--;
	e->stats.grants++;
	if (e->gate != ENGINE_GATE_GRANTS || e->stopping || latest_us < now_us ||
	    e->n_held == ENGINE_GRANTS_MAX) {
		e->stats.grants_discarded++;
		return;
	}
	for (i = e->n_held; i > 0 && e->held[i - 1].send_at_us > send_at_us; i--)
		e->held[i] = e->held[i - 1];
	e->held[i].send_at_us = send_at_us;
	e->held[i].latest_us = latest_us;
	e->n_held++;
}

void engine_grant_failed(struct engine *e, int64_t retry_at_us, int64_t now_us)
{
	(void)now_us;
	if (e->grants_asked > 0)
		e->grants_asked--;
	if (retry_at_us > e->reserve_at_us)
		e->reserve_at_us = retry_at_us;
}

/* A shared entry for every waiter of f, which is finished. */
static void flight_answer_shared(struct engine *e, struct flight *f, struct cache_entry *x,
				 int64_t now_s)
{
	struct flight_waiter *w;

	while ((w = flight_first_waiter(f))) {
		struct engine_caller *c = waiter_caller(w);

		e->stats.shared_hits++;
		if (f->remote_seen)
			e->stats.shared_joins++;
		engine_answer_entry(&c->answer, ENGINE_OUTCOME_HIT_SHARED, cache_entry_ref(x), now_s,
				    "hit; detail=shared");
		deliver(e, c);
	}
	flight_drop(e, f);
}

bool engine_claim_done(struct engine *e, const struct cams_key *key, uint64_t claim_seq,
		       enum engine_claim result, struct cache_entry *entry, int64_t retry_at_us,
		       int64_t now_us, int64_t now_s)
{
	struct flight *f = flight_find(e->flights, key);
	struct flight_waiter *w;

	if (!f || f->state != FLIGHT_CLAIMING || f->claim_seq != claim_seq)
		return false;
	if (result == ENGINE_CLAIM_HIT && !entry)
		result = ENGINE_CLAIM_UNAVAILABLE;
	switch (result) {
	case ENGINE_CLAIM_HIT:
		/* A caller who joined meanwhile will not take the shared copy: ask again. */
		if (f->revalidate && !f->claim_revalidate) {
			claim_push(e, f);
			return true;
		}
		flight_answer_shared(e, f, entry, now_s);
		return true;
	case ENGINE_CLAIM_HELD:
		/* A refresh another host is doing already, or nobody left to wait. */
		if (f->n_waiters == 0 || e->stopping) {
			flight_drop(e, f);
			return false;
		}
		f->state = FLIGHT_REMOTE;
		f->remote_seen = true;
		f->claim_at_us = retry_at_us > now_us ? retry_at_us : now_us;
		return true;
	case ENGINE_CLAIM_OWNED:
	case ENGINE_CLAIM_UNAVAILABLE:
		break;
	}
	f->lease_owned = result == ENGINE_CLAIM_OWNED;
	if (e->stopping || (f->n_waiters == 0 && !f->background)) {
		flight_drop(e, f);
		return false;
	}
	if (e->gate == ENGINE_GATE_CLOSED) {
		while ((w = flight_first_waiter(f)))
			answer_unavailable(e, waiter_caller(w), now_s);
		flight_drop(e, f);
		return false;
	}
	claims_remove(e, f);
	f->state = FLIGHT_QUEUED;
	f->qitem.cls = f->background ? QUEUE_BACKGROUND : QUEUE_FOREGROUND;
	queue_make_room(e);
	if (queue_push(e->queue, &f->qitem) < 0) {
		flight_fail(e, f, now_s, ENGINE_OUTCOME_QUEUE_FULL, 503, NULL, "Proxy.QueueFull",
			    QUEUE_FULL_MESSAGE, 1, "quota-wait");
		return false;
	}
	/* Its callers wait for quota now, each within its own limit (set at submission). */
	return true;
}

void engine_claim_poke(struct engine *e, const struct cams_key *key, int64_t now_us)
{
	struct flight *f = flight_find(e->flights, key);

	if (f && f->state == FLIGHT_REMOTE)
		f->claim_at_us = now_us;
}

/* ---- stop ---------------------------------------------------------------------------- */

void engine_stop(struct engine *e, int64_t now_us, int64_t now_s)
{
	struct engine_caller **queued;
	struct queue_item *item;
	size_t n = 0;

	(void)now_us;
	(void)now_s;
	if (e->stopping)
		return;
	e->stopping = true;
	/*
	 * Callers waiting for quota are answered now; those of calls on the
	 * wire wait for them. Collected first: answering reorders the heap.
	 */
	queued = callers_not_on_the_wire(e, &n);
	for (size_t i = 0; i < n; i++)
		answer_shutting_down(e, queued[i]);
	free(queued);
	while (e->n_claims > 0)
		flight_drop(e, e->claims[e->n_claims - 1]);
	e->n_held = 0;
	while ((item = queue_pop(e->queue))) {
		struct flight *f = container_of(item, struct flight, qitem);

		assert(f->n_waiters == 0);
		flight_finish(e->flights, f);
	}
}

void engine_abort(struct engine *e, int64_t now_s)
{
	size_t n = 0;

	(void)now_s;
	e->stopping = true;
	while (e->heap_len > 0)
		answer_shutting_down(e, e->heap[0]);
	/* Pending SENDs name flights about to be forgotten; claims and grants are moot. */
	for (size_t i = 0; i < e->actions_len; i++) {
		struct engine_action_slot *s = &e->actions[(e->actions_head + i) % e->actions_cap];

		if (s->kind != ENGINE_ACTION_ANSWER)
			continue;
		e->actions[(e->actions_head + n) % e->actions_cap] = *s;
		n++;
	}
	e->actions_len = n;
	queue_free(e->queue);
	e->queue = queue_new(e->settings.queue_max ? e->settings.queue_max : 1);
	e->n_claims = 0;
	e->n_held = 0;
	flight_table_clear(e->flights);
	e->in_flight = 0;
}

/* ---- lifecycle and state ----------------------------------------------------------- */

static void apply_weights(struct engine *e)
{
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		queue_set_weight(e->queue, i, e->settings.weights[i] ? e->settings.weights[i] : 1);
}

struct engine *engine_new(const struct engine_settings *s, int64_t now_us)
{
	struct engine *e = xcalloc(1, sizeof(*e));

	e->settings = *s;
	e->limiter = limiter_new(&s->limiter, now_us);
	e->queue = queue_new(s->queue_max ? s->queue_max : 1);
	e->flights = flight_table_new(ENGINE_FLIGHT_BUCKETS);
	apply_weights(e);
	return e;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	assert(e->heap_len == 0);
	/* Only flights with no callers can be left (a stop that was not aborted). */
	flight_table_clear(e->flights);
	flight_table_free(e->flights);
	queue_free(e->queue);
	limiter_free(e->limiter);
	free(e->heap);
	free(e->actions);
	free(e->claims);
	free(e);
}

void engine_configure(struct engine *e, const struct engine_settings *s, int64_t now_us)
{
	e->settings = *s;
	limiter_configure(e->limiter, &s->limiter, now_us);
	apply_weights(e);
}

size_t engine_waiting(const struct engine *e)
{
	return e->heap_len;
}

struct engine_caller *engine_waiting_at(const struct engine *e, size_t i)
{
	return i < e->heap_len ? e->heap[i] : NULL;
}

size_t engine_queue_len(const struct engine *e)
{
	return queue_len(e->queue);
}

size_t engine_queue_len_client(const struct engine *e, unsigned client)
{
	return queue_len_client(e->queue, client);
}

unsigned engine_in_flight(const struct engine *e)
{
	return e->in_flight;
}

size_t engine_flights(const struct engine *e)
{
	return flight_count(e->flights);
}

bool engine_stopping(const struct engine *e)
{
	return e->stopping;
}

const struct engine_stats *engine_stats(const struct engine *e)
{
	return &e->stats;
}

struct limiter *engine_limiter(struct engine *e)
{
	return e->limiter;
}
