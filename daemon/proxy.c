/*
 * proxy.c -- the request path and the engine thread (see proxy.h).
 *
 * Threads. HTTP threads call proxy_lookup() (cache memory layer only) and
 * proxy_submit() (append to the inbox under `lock`, wake the engine). The
 * engine thread owns everything else: the flight table, the WFQ queue, the
 * limiter, the deadline heap of waiting requests, the signer's use and the
 * libcurl multi handle. It sleeps in upstream_poll() until the next event:
 * a submission (curl_multi_wakeup), network activity, the next send slot,
 * the nearest deadline, or the periodic chores (disconnect check, cache
 * maintenance). Answers leave through req->on_done(), after which the
 * engine never touches the request again.
 *
 * Invariants.
 *  - Every submitted request is answered exactly once (on_done), at the
 *    latest when the engine stops.
 *  - A request waiting in a flight is in the deadline heap; while its flight
 *    is being sent its deadline is "none" (the upstream timeout bounds it).
 *  - A flight is in the queue iff its state is FLIGHT_QUEUED.
 *  - Only the limiter decides when a call is sent, retries included.
 *
 * Clocks. The engine reads the monotonic clock for deadlines and the
 * limiter, and the wall clock for cache times and signatures; the pure
 * modules get both as arguments.
 */
#include "proxy.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "envelope.h"
#include "limiter.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "queue.h"
#include "upstream.h"

#define PROXY_REFRESH_RING 1024
#define PROXY_DISCONNECT_CHECK_US 250000
#define PROXY_MAINTAIN_US 1000000
#define PROXY_IDLE_POLL_MS 1000
#define PROXY_REFRESH_AHEAD_BATCH 16

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* What the engine needs from the configuration; swapped on reload. */
struct proxy_settings {
	uint64_t ttl_s;
	uint64_t status_ttl_s;
	uint64_t negative_ttl_s;
	uint64_t refresh_ahead_s;
	unsigned queue_max;
	unsigned upstream_retries;
	unsigned upstream_timeout_ms;
	enum signer_kind signature;
	struct limiter_options limiter;
	unsigned weights[QUEUE_MAX_CLIENTS];
};

struct proxy {
	pthread_mutex_t lock; /* inbox, refresh ring, clients, pending settings, stopping */
	struct proxy_request *inbox_head, *inbox_tail;
	struct cams_key refresh_ring[PROXY_REFRESH_RING];
	unsigned refresh_head, refresh_len;
	bool stopping;
	bool settings_pending;
	struct proxy_settings pending;
	char client_names[QUEUE_MAX_CLIENTS][LIMIT_CLIENT_NAME_MAX + 1];
	unsigned n_clients;
	unsigned grace_ms;

	/* read on the hit path without the lock */
	atomic_ullong stale_while_revalidate_s;
	atomic_ullong stale_if_error_s;
	atomic_bool ready;
	atomic_llong heartbeat_us;
	atomic_uint rl_remaining;     /* RateLimit: calls left in this window */
	atomic_uint rl_reset_s;       /* RateLimit: seconds to the next slot */
	atomic_uint rl_quota;         /* RateLimit-Policy: calls per window */

	/* engine-thread state */
	struct proxy_settings settings;
	struct cache *cache;
	struct signer *signer;
	struct upstream *upstream;
	struct limiter *limiter;
	struct queue *queue;
	struct flight_table *flights;
	struct proxy_request **heap;
	size_t heap_len, heap_cap;
	size_t waiting;
	int64_t next_disconnect_check_us;
	int64_t next_maintain_us;
	pthread_t thread;
	bool thread_started;
};

static void settings_from_config(struct proxy_settings *s, const struct config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->ttl_s = cfg->ttl_s;
	s->status_ttl_s = cfg->status_ttl_s;
	s->negative_ttl_s = cfg->negative_ttl_s;
	s->refresh_ahead_s = cfg->refresh_ahead_s;
	s->queue_max = cfg->queue_max;
	s->upstream_retries = cfg->upstream_retries;
	s->upstream_timeout_ms = cfg->upstream_timeout_ms;
	s->signature = cfg->signature == CONFIG_SIGNATURE_V1 ? SIGNER_V1 : SIGNER_V3;
	s->limiter.rate = cfg->rate;
	s->limiter.burst = cfg->burst;
	s->limiter.margin_ms = cfg->rate_margin_ms;
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		s->weights[i] = 1;
	for (unsigned i = 0; i < cfg->n_clients && i < QUEUE_MAX_CLIENTS; i++)
		s->weights[i] = cfg->clients[i].weight ? cfg->clients[i].weight : 1;
}

/* ---- the deadline heap (engine thread) ---------------------------------- */

static bool heap_less(const struct proxy_request *a, const struct proxy_request *b)
{
	return a->deadline_us < b->deadline_us;
}

static void heap_swap(struct proxy *p, size_t i, size_t j)
{
	struct proxy_request *t = p->heap[i];

	p->heap[i] = p->heap[j];
	p->heap[j] = t;
	p->heap[i]->heap_index = i;
	p->heap[j]->heap_index = j;
}

static void heap_up(struct proxy *p, size_t i)
{
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!heap_less(p->heap[i], p->heap[parent]))
			break;
		heap_swap(p, i, parent);
		i = parent;
	}
}

static void heap_down(struct proxy *p, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < p->heap_len && heap_less(p->heap[l], p->heap[m]))
			m = l;
		if (r < p->heap_len && heap_less(p->heap[r], p->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(p, i, m);
		i = m;
	}
}

static void heap_push(struct proxy *p, struct proxy_request *req)
{
	if (p->heap_len == p->heap_cap) {
		p->heap_cap = p->heap_cap ? 2 * p->heap_cap : 256;
		p->heap = xrealloc(p->heap, p->heap_cap * sizeof(*p->heap));
	}
	req->heap_index = p->heap_len;
	p->heap[p->heap_len++] = req;
	heap_up(p, req->heap_index);
}

static void heap_remove(struct proxy *p, struct proxy_request *req)
{
	size_t i = req->heap_index;

	if (i == SIZE_MAX)
		return;
	assert(i < p->heap_len && p->heap[i] == req);
	p->heap_len--;
	if (i != p->heap_len) {
		p->heap[i] = p->heap[p->heap_len];
		p->heap[i]->heap_index = i;
		heap_down(p, i);
		heap_up(p, i);
	}
	req->heap_index = SIZE_MAX;
}

static void heap_set_deadline(struct proxy *p, struct proxy_request *req, int64_t deadline_us)
{
	heap_remove(p, req);
	req->deadline_us = deadline_us;
	heap_push(p, req);
}

/* ---- answers ------------------------------------------------------------- */

void proxy_request_clear(struct proxy_request *req)
{
	cache_entry_unref(req->entry);
	req->entry = NULL;
	cache_entry_unref(req->stale);
	req->stale = NULL;
	free(req->body);
	req->body = NULL;
	req->body_len = 0;
}

static void answer_entry(struct proxy_request *req, struct cache_entry *e, int64_t now_s,
			 const char *cache_status)
{
	req->entry = e;
	req->http_status = e->http_status;
	req->age_s = now_s > e->fetched_at_s ? now_s - e->fetched_at_s : 0;
	snprintf(req->cache_status, sizeof(req->cache_status), "%s", cache_status);
}

static void answer_error(struct proxy_request *req, int http_status, const char *request_id,
			 const char *code, const char *message, int retry_after_s,
			 const char *cache_status)
{
	struct buf b;

	buf_init(&b, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&b, request_id && *request_id ? request_id : req->request_id, code,
			      message);
	free(req->body);
	req->body = buf_steal(&b, &req->body_len);
	req->http_status = http_status;
	req->retry_after_s = retry_after_s;
	snprintf(req->cache_status, sizeof(req->cache_status), "%s", cache_status);
}

static int retry_after_from_us(int64_t wait_us)
{
	int64_t s = (wait_us + 999999) / 1000000;

	return s < 1 ? 1 : (s > 3600 ? 3600 : (int)s);
}

/* Serve a stale entry the caller accepts instead of an error; true if done. */
static bool answer_stale_if_allowed(struct proxy *p, struct proxy_request *req, int64_t now_s,
				    const char *why)
{
	enum cache_freshness fr;
	char status[96];

	if (!req->stale || req->no_stale)
		return false;
	fr = cache_entry_freshness(req->stale, now_s, atomic_load(&p->stale_while_revalidate_s),
				   atomic_load(&p->stale_if_error_s));
	if (fr != CACHE_STALE_REVALIDATE && fr != CACHE_STALE_IF_ERROR)
		return false;
	snprintf(status, sizeof(status), "hit; stale; detail=%s", why);
	answer_entry(req, req->stale, now_s, status);
	req->stale = NULL;
	metrics_result(METRICS_RESULT_STALE);
	return true;
}

/* Hand the answer back; the engine forgets req afterwards. */
static void deliver(struct proxy *p, struct proxy_request *req)
{
	heap_remove(p, req);
	flight_leave(&req->waiter);
	p->waiting--;
	req->on_done(req);
}

#define QUEUE_FULL_MESSAGE "too many callers are waiting for upstream quota"
#define QUOTA_WAIT_MESSAGE "no upstream quota within the wait limit; retry after Retry-After seconds"

static void answer_unavailable(struct proxy *p, struct proxy_request *req, const char *code,
			       const char *message, int64_t wait_us)
{
	if (answer_stale_if_allowed(p, req, clock_wall_s(), "quota-wait"))
		return;
	if (strcmp(code, "Proxy.QueueFull") == 0)
		metrics_count(METRICS_QUEUE_FULL);
	else if (strcmp(code, "Proxy.QuotaWait") == 0)
		metrics_count(METRICS_QUOTA_REJECTED);
	answer_error(req, 503, NULL, code, message, retry_after_from_us(wait_us), "fwd=miss");
}

/* Refuse a submitted request (queue full, or no quota in time) and hand it back. */
static void refuse(struct proxy *p, struct proxy_request *req, bool queue_full, int64_t wait_us)
{
	answer_unavailable(p, req, queue_full ? "Proxy.QueueFull" : "Proxy.QuotaWait",
			   queue_full ? QUEUE_FULL_MESSAGE : QUOTA_WAIT_MESSAGE, wait_us);
	deliver(p, req);
}

/* ---- the hit path (HTTP threads) ------------------------------------------ */

enum proxy_verdict proxy_lookup(struct proxy *p, struct proxy_request *req, int64_t now_us,
				int64_t now_s)
{
	struct cache_entry *e = NULL;
	enum cache_freshness fr;
	char status[96];
	int rc;

	req->http_status = 0;
	req->entry = NULL;
	req->body = NULL;
	req->stale = NULL;
	req->retry_after_s = 0;
	req->cache_status[0] = '\0';
	req->waiter.flight = NULL;
	req->heap_index = SIZE_MAX;
	req->submitted_us = now_us;

	rc = cache_get(p->cache, &req->key, now_s, &e);
	if (rc < 0)
		metrics_count(METRICS_CACHE_ERRORS);
	if (rc == 1) {
		fr = cache_entry_freshness(e, now_s, atomic_load(&p->stale_while_revalidate_s),
					   atomic_load(&p->stale_if_error_s));
		if (fr == CACHE_FRESH && !req->no_cache) {
			snprintf(status, sizeof(status), "hit; ttl=%" PRId64, e->expires_at_s - now_s);
			answer_entry(req, e, now_s, status);
			metrics_result(e->kind == CACHE_KIND_NEGATIVE ? METRICS_RESULT_NEGATIVE
								    : METRICS_RESULT_HIT);
			return PROXY_ANSWERED;
		}
		if (fr == CACHE_STALE_REVALIDATE && !req->no_cache && !req->no_stale) {
			snprintf(status, sizeof(status), "hit; stale; ttl=%" PRId64,
				 e->expires_at_s - now_s);
			answer_entry(req, e, now_s, status);
			metrics_result(METRICS_RESULT_STALE);
			/* one background refresh; the flight table coalesces repeats */
			pthread_mutex_lock(&p->lock);
			if (p->refresh_len < PROXY_REFRESH_RING && !p->stopping) {
				p->refresh_ring[(p->refresh_head + p->refresh_len) % PROXY_REFRESH_RING] =
					req->key;
				p->refresh_len++;
			}
			pthread_mutex_unlock(&p->lock);
			upstream_wakeup(p->upstream);
			return PROXY_ANSWERED;
		}
		if (e->kind == CACHE_KIND_KEY &&
		    (fr == CACHE_FRESH || fr == CACHE_STALE_REVALIDATE || fr == CACHE_STALE_IF_ERROR))
			req->stale = e; /* fallback if the upstream fails */
		else
			cache_entry_unref(e);
	}
	if (req->only_if_cached) {
		if (answer_stale_if_allowed(p, req, now_s, "only-if-cached"))
			return PROXY_ANSWERED;
		answer_error(req, 504, NULL, "Proxy.NotCached",
			     "the key is not in the cache and only-if-cached was requested", 0,
			     "fwd=miss");
		metrics_result(METRICS_RESULT_ERROR);
		return PROXY_ANSWERED;
	}
	return PROXY_PENDING;
}

void proxy_submit(struct proxy *p, struct proxy_request *req)
{
	req->inbox_next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->inbox_tail)
		p->inbox_tail->inbox_next = req;
	else
		p->inbox_head = req;
	p->inbox_tail = req;
	pthread_mutex_unlock(&p->lock);
	upstream_wakeup(p->upstream);
}

/* ---- the engine ------------------------------------------------------------ */

static void flight_drop_if_orphan(struct proxy *p, struct flight *f)
{
	if (f->n_waiters > 0)
		return;
	if (f->state == FLIGHT_QUEUED) {
		/*
		 * Everybody left before quota came. The key was wanted, so
		 * fetch it anyway when nobody else waits for quota.
		 */
		if (!f->background) {
			queue_remove(p->queue, &f->qitem);
			f->background = true;
			f->qitem.cls = QUEUE_BACKGROUND;
			if (queue_push(p->queue, &f->qitem) == 0)
				return;
		} else if (queue_contains(&f->qitem)) {
			return;
		}
		queue_remove(p->queue, &f->qitem);
		flight_finish(p->flights, f);
	}
}

static void handle_submit(struct proxy *p, struct proxy_request *req, int64_t now_us)
{
	struct flight *f;
	int64_t wait_us;

	p->waiting++;
	req->deadline_us = req->submitted_us + (int64_t)req->max_wait_ms * 1000;
	heap_push(p, req);

	f = flight_find(p->flights, &req->key);
	if (!f) {
		/* A flight may have just stored the key since the lookup missed. */
		if (!req->no_cache) {
			struct cache_entry *e;
			int64_t now_s = clock_wall_s();

			if (cache_get(p->cache, &req->key, now_s, &e) == 1) {
				if (cache_entry_freshness(e, now_s, 0, 0) == CACHE_FRESH) {
					char status[96];

					snprintf(status, sizeof(status), "hit; ttl=%" PRId64,
						 e->expires_at_s - now_s);
					answer_entry(req, e, now_s, status);
					metrics_result(METRICS_RESULT_HIT);
					deliver(p, req);
					return;
				}
				cache_entry_unref(e);
			}
		}
		wait_us = limiter_wait_estimate_us(p->limiter, now_us,
						   queue_ahead_of_new(p->queue, req->client));
		if (queue_len(p->queue) >= p->settings.queue_max) {
			refuse(p, req, true, wait_us);
			return;
		}
		if (now_us + wait_us > req->deadline_us) {
			refuse(p, req, false, wait_us);
			return;
		}
		f = flight_start(p->flights, &req->key);
		f->qitem.client = req->client;
		f->qitem.cls = QUEUE_FOREGROUND;
		f->queued_at_us = now_us;
		if (queue_push(p->queue, &f->qitem) < 0) {
			flight_finish(p->flights, f);
			refuse(p, req, true, wait_us);
			return;
		}
	} else {
		metrics_count(METRICS_FLIGHTS_JOINED);
		if (f->state == FLIGHT_QUEUED && f->background) {
			/* a caller now waits: the refresh becomes foreground work */
			queue_remove(p->queue, &f->qitem);
			f->background = false;
			f->qitem.cls = QUEUE_FOREGROUND;
			f->qitem.client = req->client;
			if (queue_push(p->queue, &f->qitem) < 0) {
				flight_finish(p->flights, f);
				refuse(p, req, true, 0);
				return;
			}
		}
		if (f->state == FLIGHT_QUEUED) {
			wait_us = limiter_wait_estimate_us(p->limiter, now_us,
							   queue_ahead(p->queue, &f->qitem));
			if (now_us + wait_us > req->deadline_us) {
				refuse(p, req, false, wait_us);
				return;
			}
		} else {
			heap_set_deadline(p, req, INT64_MAX);
		}
	}
	flight_join(f, &req->waiter);
}

static void handle_refresh(struct proxy *p, const struct cams_key *key, int64_t now_us)
{
	struct flight *f = flight_find(p->flights, key);
	struct cache_entry *e;
	int64_t now_s = clock_wall_s();

	if (f)
		return;
	/* A refresh that finished since this one was asked for makes it moot. */
	if (cache_get(p->cache, key, now_s, &e) == 1) {
		bool moot = e->expires_at_s - now_s > (int64_t)p->settings.refresh_ahead_s;

		cache_entry_unref(e);
		if (moot)
			return;
	}
	if (queue_len(p->queue) >= p->settings.queue_max)
		return;
	f = flight_start(p->flights, key);
	f->background = true;
	f->qitem.client = 0;
	f->qitem.cls = QUEUE_BACKGROUND;
	f->queued_at_us = now_us;
	if (queue_push(p->queue, &f->qitem) < 0)
		flight_finish(p->flights, f);
}

/*
 * Refresh-ahead: keys callers are using that expire soon are queued as
 * background flights, which go only on quota no caller is waiting for.
 * A few at a time, so the background class stays short.
 */
static void refresh_ahead(struct proxy *p, int64_t now_us)
{
	struct cams_key keys[PROXY_REFRESH_AHEAD_BATCH];
	size_t n;

	if (p->settings.refresh_ahead_s == 0 ||
	    queue_len_class(p->queue, QUEUE_BACKGROUND) >= PROXY_REFRESH_AHEAD_BATCH ||
	    queue_len_class(p->queue, QUEUE_FOREGROUND) > 0)
		return;
	n = cache_refresh_candidates(p->cache, clock_wall_s(), p->settings.refresh_ahead_s, keys,
				     PROXY_REFRESH_AHEAD_BATCH);
	for (size_t i = 0; i < n; i++)
		handle_refresh(p, &keys[i], now_us);
}

/* Answer every waiter of f with an error (or its stale entry) and finish f. */
static void flight_fail(struct proxy *p, struct flight *f, int http_status, const char *request_id,
			const char *code, const char *message, int retry_after_s, const char *why)
{
	struct flight_waiter *w;
	int64_t now_s = clock_wall_s();

	while ((w = flight_first_waiter(f))) {
		struct proxy_request *req = container_of(w, struct proxy_request, waiter);

		if (!answer_stale_if_allowed(p, req, now_s, why)) {
			answer_error(req, http_status, request_id, code, message, retry_after_s,
				     "fwd=miss");
			metrics_result(METRICS_RESULT_ERROR);
		}
		deliver(p, req);
	}
	queue_remove(p->queue, &f->qitem);
	flight_finish(p->flights, f);
}

/* Answer every waiter of f from entry e and finish f. */
static void flight_succeed(struct proxy *p, struct flight *f, struct cache_entry *e,
			   const char *cache_status, enum metrics_result result)
{
	struct flight_waiter *w;
	int64_t now_s = clock_wall_s();

	while ((w = flight_first_waiter(f))) {
		struct proxy_request *req = container_of(w, struct proxy_request, waiter);

		answer_entry(req, cache_entry_ref(e), now_s, cache_status);
		metrics_result(result);
		deliver(p, req);
	}
	flight_finish(p->flights, f);
}

static void send_flight(struct proxy *p, struct flight *f, int64_t now_us)
{
	struct signer_request sr;
	char keyid[LIMIT_ACCESS_KEY_ID_MAX + 1];
	int rc;

	rc = signer_sign_request(p->signer, p->settings.signature,
				 upstream_host_header(p->upstream), &f->key, (time_t)clock_wall_s(), NULL,
				 &sr);
	if (rc < 0) {
		log_error("sign_failed", "err=%d", rc);
		flight_fail(p, f, 502, NULL, "Proxy.UpstreamError", "could not sign the upstream request",
			    0, "upstream-error");
		return;
	}
	rc = upstream_start(p->upstream, &sr, f);
	signer_request_free(&sr);
	limiter_record_send(p->limiter, now_us);
	if (rc < 0) {
		flight_fail(p, f, 502, NULL, "Proxy.UpstreamError", "could not start the upstream call",
			    0, "upstream-error");
		return;
	}
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, now_us - f->queued_at_us);
	metrics_client_call(f->qitem.client);
	if (f->attempts > 0)
		metrics_count(METRICS_RETRIES);
	if (f->background)
		metrics_count(METRICS_REFRESHES);
	f->attempts++;
	f->state = FLIGHT_SENDING;
	f->sent_at_us = now_us;
	/* Waiters now wait for the answer, not for quota. */
	for (struct flight_waiter *w = flight_first_waiter(f); w && w != &f->waiters; w = w->next)
		heap_set_deadline(p, container_of(w, struct proxy_request, waiter), INT64_MAX);
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char masked[LOG_PHONE_MASKED_MAX];

		signer_access_key_id(p->signer, keyid, sizeof(keyid));
		log_debug("upstream_send", "phone=%s attempt=%u waiters=%u background=%d",
			  log_mask_phone(f->key.phone, masked, sizeof(masked)), f->attempts,
			  f->n_waiters, f->background);
	}
}

static void dispatch(struct proxy *p, int64_t now_us)
{
	while (queue_len(p->queue) > 0 && limiter_next_send_us(p->limiter, now_us) <= now_us) {
		struct queue_item *item = queue_pop(p->queue);
		struct flight *f = container_of(item, struct flight, qitem);

		send_flight(p, f, now_us);
	}
}

static void store_and_answer(struct proxy *p, struct flight *f, struct envelope_reply *r)
{
	struct cache_entry *e, *old = NULL;
	int64_t now_s = clock_wall_s();
	bool valid = strcmp(r->status, "VALID") == 0;
	uint64_t ttl = valid ? p->settings.ttl_s : p->settings.status_ttl_s;
	char masked[LOG_PHONE_MASKED_MAX];
	struct buf body;

	buf_init(&body, LIMIT_BODY_MAX_BYTES);
	envelope_render_ok(&body, r->request_id, r->message, f->key.phone, r->pem, r->status);
	if (buf_error(&body)) {
		buf_free(&body);
		flight_fail(p, f, 502, r->request_id, "Proxy.UpstreamError",
			    "upstream answer too large to serve", 0, "upstream-error");
		return;
	}
	e = cache_entry_new(&f->key, r->pem, buf_str(&body), body.len);
	buf_free(&body);
	e->kind = CACHE_KIND_KEY;
	e->http_status = 200;
	snprintf(e->status, sizeof(e->status), "%s", r->status);
	snprintf(e->code, sizeof(e->code), "OK");
	memcpy(e->etag, r->fingerprint, sizeof(e->etag));
	snprintf(e->request_id, sizeof(e->request_id), "%s", r->request_id);
	e->fetched_at_s = now_s;
	e->expires_at_s = now_s + (int64_t)ttl;
	atomic_store(&e->last_used_s, now_s);

	log_mask_phone(f->key.phone, masked, sizeof(masked));
	if (cache_get(p->cache, &f->key, now_s, &old) == 1) {
		if (old->kind == CACHE_KIND_KEY && strcmp(old->etag, e->etag) != 0) {
			metrics_count(METRICS_KEY_ROTATIONS);
			log_warn("key_rotated", "phone=%s cust_space_id=%s old_fingerprint=%s new_fingerprint=%s",
				 masked, f->key.cust_space_id[0] ? f->key.cust_space_id : "-",
				 old->etag, e->etag);
		}
		cache_entry_unref(old);
	}
	if (!valid)
		log_info("key_status", "phone=%s status=%s ttl_s=%" PRIu64, masked, r->status, ttl);
	if (cache_put(p->cache, e) < 0)
		metrics_count(METRICS_CACHE_ERRORS);
	flight_succeed(p, f, e, f->background ? "fwd=stale; stored" : "fwd=miss; stored",
		       METRICS_RESULT_MISS);
	cache_entry_unref(e);
}

static void store_negative(struct proxy *p, struct flight *f, struct envelope_reply *r,
			   int http_status)
{
	struct cache_entry *e;
	int64_t now_s = clock_wall_s();
	struct buf body;

	buf_init(&body, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&body, r->request_id, r->code, r->message);
	e = cache_entry_new(&f->key, NULL, buf_str(&body), body.len);
	buf_free(&body);
	e->kind = CACHE_KIND_NEGATIVE;
	e->http_status = http_status;
	snprintf(e->code, sizeof(e->code), "%s", r->code);
	snprintf(e->request_id, sizeof(e->request_id), "%s", r->request_id);
	e->fetched_at_s = now_s;
	e->expires_at_s = now_s + (int64_t)p->settings.negative_ttl_s;
	atomic_store(&e->last_used_s, now_s);
	if (p->settings.negative_ttl_s > 0 && cache_put(p->cache, e) < 0)
		metrics_count(METRICS_CACHE_ERRORS);
	flight_succeed(p, f, e, p->settings.negative_ttl_s > 0 ? "fwd=miss; stored" : "fwd=miss",
		       METRICS_RESULT_NEGATIVE);
	cache_entry_unref(e);
}

/*
 * Send f again (re-signed: fresh nonce and time) at the head of the queue,
 * through the limiter like any call. Waiters who cannot wait until retry_at
 * get `code` now. The answer r supplies RequestId and Message.
 */
static void retry_flight(struct proxy *p, struct flight *f, struct envelope_reply *r,
			 int64_t now_us, int64_t retry_at)
{
	struct flight_waiter *w, *next;

	for (w = flight_first_waiter(f); w && w != &f->waiters; w = next) {
		struct proxy_request *req = container_of(w, struct proxy_request, waiter);
		int64_t deadline = req->submitted_us + (int64_t)req->max_wait_ms * 1000;

		next = w->next;
		if (deadline < retry_at) {
			if (!answer_stale_if_allowed(p, req, clock_wall_s(), "upstream-throttled")) {
				answer_error(req, 503, r->request_id, r->code, r->message,
					     retry_after_from_us(retry_at - now_us), "fwd=miss");
				metrics_result(METRICS_RESULT_ERROR);
			}
			deliver(p, req);
		} else {
			heap_set_deadline(p, req, deadline);
		}
	}
	if (f->n_waiters == 0) {
		flight_finish(p->flights, f);
		return;
	}
	f->state = FLIGHT_QUEUED;
	if (queue_push_front(p->queue, &f->qitem) < 0)
		flight_fail(p, f, 503, r->request_id, r->code, r->message,
			    retry_after_from_us(retry_at - now_us), "upstream-throttled");
}

/* System.LimitControl: back off for the daemon, retry within the waiters' limits. */
static void handle_throttle(struct proxy *p, struct flight *f, struct envelope_reply *r,
			    int64_t now_us)
{
	int64_t retry_at;
	char masked[LOG_PHONE_MASKED_MAX];

	limiter_on_throttle(p->limiter, now_us);
	metrics_count(METRICS_THROTTLES);
	retry_at = limiter_next_send_us(p->limiter, now_us);
	log_warn("upstream_throttled", "phone=%s attempt=%u rate=%.2f retry_in_ms=%" PRId64,
		 log_mask_phone(f->key.phone, masked, sizeof(masked)), f->attempts,
		 limiter_effective_rate(p->limiter, now_us), (retry_at - now_us) / 1000);
	if (f->attempts > p->settings.upstream_retries || f->background) {
		flight_fail(p, f, 503, r->request_id, "System.LimitControl", r->message,
			    retry_after_from_us(retry_at - now_us), "upstream-throttled");
		return;
	}
	retry_flight(p, f, r, now_us, retry_at);
}

static void on_upstream_done(struct upstream_result *res, void *cls)
{
	struct proxy *p = cls;
	struct flight *f = res->cookie;
	int64_t now_us = clock_mono_us();
	struct envelope_reply r;
	char err[160], msg[LIMIT_MESSAGE_MAX + 64];
	char masked[LOG_PHONE_MASKED_MAX];
	enum metrics_upstream_code mcode;

	log_mask_phone(f->key.phone, masked, sizeof(masked));
	metrics_observe_us(METRICS_HIST_UPSTREAM, now_us - f->sent_at_us);
	limiter_observe_arrival(p->limiter, res->wire_delay_us, res->rtt_var_us);
	if (res->ratelimit_remain >= 0 || res->ratelimit_time_left_ms >= 0)
		limiter_on_hint(p->limiter, f->sent_at_us + (res->wire_delay_us > 0 ? res->wire_delay_us : 0),
				res->ratelimit_remain, res->ratelimit_time_left_ms);

	switch (res->outcome) {
	case UPSTREAM_TIMEOUT:
		metrics_upstream(METRICS_UPSTREAM_TIMEOUT);
		log_warn("upstream_timeout", "phone=%s after_ms=%" PRId64, masked,
			 (now_us - f->sent_at_us) / 1000);
		snprintf(msg, sizeof(msg), "the upstream did not answer within %u ms",
			 p->settings.upstream_timeout_ms);
		flight_fail(p, f, 504, NULL, "Proxy.UpstreamTimeout", msg, 0,
			    "upstream-timeout");
		return;
	case UPSTREAM_NETWORK:
	case UPSTREAM_TOO_LARGE:
		metrics_upstream(METRICS_UPSTREAM_NETWORK);
		log_warn("upstream_error", "phone=%s error=%s", masked,
			 log_quote(res->error, err, sizeof(err)));
		snprintf(msg, sizeof(msg), "upstream %s: %s",
			 res->outcome == UPSTREAM_TOO_LARGE ? "answer too large" : "unreachable",
			 res->error);
		flight_fail(p, f, 502, NULL, "Proxy.UpstreamError", msg, 0, "upstream-error");
		return;
	case UPSTREAM_HTTP:
		break;
	}

	if (envelope_parse(res->body, res->body_len, &r, err, sizeof(err)) < 0) {
		metrics_upstream(METRICS_UPSTREAM_HTTP_ERROR);
		if (res->http_status >= 500 || res->http_status < 200)
			snprintf(msg, sizeof(msg), "upstream answered HTTP %ld", res->http_status);
		else
			snprintf(msg, sizeof(msg), "unusable upstream answer (HTTP %ld): %s",
				 res->http_status, err);
		log_warn("upstream_error", "phone=%s http_status=%ld error=%s", masked,
			 res->http_status, log_quote(msg, err, sizeof(err)));
		flight_fail(p, f, 502, NULL, "Proxy.UpstreamError", msg, 0, "upstream-error");
		return;
	}
	mcode = metrics_upstream_from_code(r.code);
	metrics_upstream(mcode);
	switch (mcode) {
	case METRICS_UPSTREAM_OK:
		store_and_answer(p, f, &r);
		break;
	case METRICS_UPSTREAM_LIMIT_CONTROL:
		handle_throttle(p, f, &r, now_us);
		break;
	case METRICS_UPSTREAM_UNSUBSCRIPT:
	case METRICS_UPSTREAM_PERMISSION_DENY:
		log_warn("upstream_denied", "phone=%s code=%s", masked, r.code);
		store_negative(p, f, &r, 403);
		break;
	case METRICS_UPSTREAM_RESOURCE_OWNER:
		store_negative(p, f, &r, 404);
		break;
	case METRICS_UPSTREAM_AUTH:
		/*
		 * A nonce "used already" means our request reached the upstream
		 * twice: libcurl re-sends a request once when a reused
		 * connection dies before the answer.
		 */
		if (strcmp(r.code, "SignatureNonceUsed") == 0) {
			/*
			 * Not retried: the upstream already counted both
			 * arrivals, and a retry would add more load to a
			 * connection that is failing.
			 */
			log_warn("upstream_nonce_reused", "phone=%s attempt=%u", masked, f->attempts);
			flight_fail(p, f, 502, r.request_id, "Proxy.UpstreamError",
				    "the upstream connection failed and the re-sent request was refused (SignatureNonceUsed)",
				    0, "upstream-error");
			break;
		}
		/* fall through */
	default:
		/*
		 * The upstream refused our request itself (signature, key,
		 * clock): the daemon's problem, not the caller's. Pass the
		 * Code through with 502 and say so.
		 */
		log_error("upstream_rejected", "phone=%s http_status=%ld code=%s message=%s", masked,
			  res->http_status, r.code, log_quote(r.message, err, sizeof(err)));
		snprintf(msg, sizeof(msg), "the upstream rejected the daemon's request: %s",
			 r.message);
		flight_fail(p, f, 502, r.request_id, r.code, msg, 0, "upstream-error");
		break;
	}
	envelope_reply_free(&r);
}

static void expire_deadlines(struct proxy *p, int64_t now_us)
{
	while (p->heap_len > 0 && p->heap[0]->deadline_us <= now_us) {
		struct proxy_request *req = p->heap[0];
		struct flight *f = req->waiter.flight;
		int64_t wait_us = 0;

		if (f && f->state == FLIGHT_QUEUED)
			wait_us = limiter_wait_estimate_us(p->limiter, now_us,
							   queue_ahead(p->queue, &f->qitem));
		refuse(p, req, false, wait_us);
		if (f)
			flight_drop_if_orphan(p, f);
	}
}

static void check_disconnects(struct proxy *p)
{
	struct pollfd pfds[256];
	struct proxy_request *reqs[256];
	size_t i = 0;

	/* In batches; a departed request is removed, so rescan from where we are. */
	while (i < p->heap_len) {
		size_t n = 0, j;
		int rc;

		for (j = i; j < p->heap_len && n < 256; j++) {
			if (p->heap[j]->fd < 0)
				continue;
			pfds[n].fd = p->heap[j]->fd;
			pfds[n].events = POLLRDHUP;
			pfds[n].revents = 0;
			reqs[n++] = p->heap[j];
		}
		i = j;
		if (n == 0)
			break;
		rc = poll(pfds, n, 0);
		if (rc <= 0)
			continue;
		for (j = 0; j < n; j++) {
			struct proxy_request *req = reqs[j];
			struct flight *f = req->waiter.flight;

			if (!(pfds[j].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
				continue;
			metrics_count(METRICS_CLIENT_GONE);
			req->http_status = 0; /* tells http: close, nobody listens */
			if (req->heap_index < i)
				i--;
			deliver(p, req);
			if (f)
				flight_drop_if_orphan(p, f);
		}
	}
}

static void update_gauges(struct proxy *p, int64_t now_us)
{
	int64_t next = limiter_next_send_us(p->limiter, now_us);

	atomic_store(&p->rl_remaining, limiter_window_remaining(p->limiter, now_us));
	atomic_store(&p->rl_reset_s, (unsigned)((next - now_us + 999999) / 1000000));
	atomic_store(&p->rl_quota, (unsigned)floor(p->settings.limiter.rate));
	metrics_gauge_set(METRICS_GAUGE_QUEUE_DEPTH, (int64_t)queue_len(p->queue));
	metrics_gauge_set(METRICS_GAUGE_WAITERS, (int64_t)p->waiting);
	metrics_gauge_set(METRICS_GAUGE_IN_FLIGHT, upstream_in_flight(p->upstream));
	metrics_gauge_set(METRICS_GAUGE_EFFECTIVE_RATE_MILLI,
			  (int64_t)llround(limiter_effective_rate(p->limiter, now_us) * 1000.0));
	metrics_gauge_set(METRICS_GAUGE_RATE_MARGIN_US, limiter_margin_us(p->limiter));
	for (unsigned c = 0; c < QUEUE_MAX_CLIENTS && c < METRICS_MAX_CLIENTS; c++)
		metrics_client_queue_depth(c, (int64_t)queue_len_client(p->queue, c));
}

static void apply_settings(struct proxy *p, int64_t now_us)
{
	p->settings = p->pending;
	limiter_configure(p->limiter, &p->settings.limiter, now_us);
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		queue_set_weight(p->queue, i, p->settings.weights[i]);
}

static void answer_all_unavailable(struct proxy *p, bool only_queued)
{
	size_t i = 0;

	while (i < p->heap_len) {
		struct proxy_request *req = p->heap[i];
		struct flight *f = req->waiter.flight;

		if (only_queued && f && f->state == FLIGHT_SENDING) {
			i++;
			continue;
		}
		answer_error(req, 503, NULL, "Proxy.ShuttingDown",
			     "the daemon is stopping; retry shortly", 1, "fwd=miss");
		metrics_result(METRICS_RESULT_ERROR);
		deliver(p, req);
		if (f && f->n_waiters == 0 && f->state == FLIGHT_QUEUED) {
			queue_remove(p->queue, &f->qitem);
			flight_finish(p->flights, f);
		}
		i = 0;
	}
	/* Queued background flights are dropped. */
	struct queue_item *item;

	while ((item = queue_pop(p->queue))) {
		struct flight *f = container_of(item, struct flight, qitem);

		if (f->n_waiters == 0)
			flight_finish(p->flights, f);
	}
}

static void *engine_main(void *arg)
{
	struct proxy *p = arg;
	int64_t stop_deadline_us = 0;

	for (;;) {
		int64_t now_us = clock_mono_us(), wake_us;
		struct proxy_request *inbox;
		struct cams_key refresh[64];
		unsigned n_refresh = 0;
		bool stopping, pending_settings;
		int timeout_ms;

		atomic_store(&p->heartbeat_us, now_us);
		pthread_mutex_lock(&p->lock);
		inbox = p->inbox_head;
		p->inbox_head = p->inbox_tail = NULL;
		while (p->refresh_len > 0 && n_refresh < 64) {
			refresh[n_refresh++] = p->refresh_ring[p->refresh_head];
			p->refresh_head = (p->refresh_head + 1) % PROXY_REFRESH_RING;
			p->refresh_len--;
		}
		stopping = p->stopping;
		pending_settings = p->settings_pending;
		if (pending_settings) {
			p->settings_pending = false;
			apply_settings(p, now_us);
		}
		pthread_mutex_unlock(&p->lock);

		while (inbox) {
			struct proxy_request *req = inbox;

			inbox = req->inbox_next;
			if (stopping) {
				p->waiting++;
				req->heap_index = SIZE_MAX;
				answer_error(req, 503, NULL, "Proxy.ShuttingDown",
					     "the daemon is stopping; retry shortly", 1, "fwd=miss");
				deliver(p, req);
				continue;
			}
			handle_submit(p, req, now_us);
		}
		for (unsigned i = 0; i < n_refresh && !stopping; i++)
			handle_refresh(p, &refresh[i], now_us);

		if (stopping) {
			if (!stop_deadline_us) {
				stop_deadline_us = now_us + (int64_t)p->grace_ms * 1000;
				answer_all_unavailable(p, true);
			}
			if (upstream_in_flight(p->upstream) == 0 || now_us >= stop_deadline_us)
				break;
		} else {
			expire_deadlines(p, now_us);
			if (now_us >= p->next_disconnect_check_us) {
				check_disconnects(p);
				p->next_disconnect_check_us = now_us + PROXY_DISCONNECT_CHECK_US;
			}
			if (now_us >= p->next_maintain_us) {
				uint64_t count;

				if (cache_maintain(p->cache, clock_wall_s()) < 0)
					metrics_count(METRICS_CACHE_ERRORS);
				if (cache_count(p->cache, &count) == 0)
					metrics_gauge_set(METRICS_GAUGE_CACHE_ENTRIES, (int64_t)count);
				refresh_ahead(p, now_us);
				p->next_maintain_us = now_us + PROXY_MAINTAIN_US;
			}
			dispatch(p, now_us);
		}
		update_gauges(p, now_us);

		/* Sleep until the next thing that can happen. */
		wake_us = now_us + PROXY_IDLE_POLL_MS * 1000;
		if (!stopping) {
			if (queue_len(p->queue) > 0) {
				int64_t t = limiter_next_send_us(p->limiter, now_us);

				if (t < wake_us)
					wake_us = t;
			}
			if (p->heap_len > 0 && p->heap[0]->deadline_us < wake_us)
				wake_us = p->heap[0]->deadline_us;
			if (p->heap_len > 0 && p->next_disconnect_check_us < wake_us)
				wake_us = p->next_disconnect_check_us;
			if (p->next_maintain_us < wake_us)
				wake_us = p->next_maintain_us;
		} else if (stop_deadline_us < wake_us) {
			wake_us = stop_deadline_us;
		}
		timeout_ms = wake_us > now_us ? (int)((wake_us - now_us + 999) / 1000) : 0;
		if (upstream_poll(p->upstream, timeout_ms, on_upstream_done, p) < 0)
			log_error("upstream_poll_failed", "detail=%s", "curl_multi_poll");
	}

	/* Stop: whatever is still waiting (sends past the grace) gets 503. */
	answer_all_unavailable(p, false);
	update_gauges(p, clock_mono_us());
	return NULL;
}

/* ---- lifecycle --------------------------------------------------------------- */

int proxy_new(const struct config *cfg, struct cache *cache, struct signer *signer,
	      struct proxy **ret, char *errbuf, size_t errbuf_size)
{
	struct upstream_options uo = {
		.base_url = cfg->upstream,
		.ca_file = cfg->upstream_ca,
		.connect_timeout_ms = cfg->upstream_connect_timeout_ms,
		.timeout_ms = cfg->upstream_timeout_ms,
	};
	struct proxy *p = xcalloc(1, sizeof(*p));
	int64_t now_us = clock_mono_us();
	int rc;

	pthread_mutex_init(&p->lock, NULL);
	p->cache = cache;
	p->signer = signer;
	rc = upstream_new(&uo, &p->upstream, errbuf, errbuf_size);
	if (rc < 0) {
		pthread_mutex_destroy(&p->lock);
		free(p);
		return rc;
	}
	settings_from_config(&p->pending, cfg);
	p->settings = p->pending;
	p->limiter = limiter_new(&p->settings.limiter, now_us);
	p->queue = queue_new(cfg->queue_max);
	p->flights = flight_table_new(4096);
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		queue_set_weight(p->queue, i, p->settings.weights[i]);
	atomic_store(&p->stale_while_revalidate_s, cfg->stale_while_revalidate_s);
	atomic_store(&p->stale_if_error_s, cfg->stale_if_error_s);
	for (unsigned i = 0; i < cfg->n_clients && i < QUEUE_MAX_CLIENTS; i++) {
		snprintf(p->client_names[i], sizeof(p->client_names[i]), "%s", cfg->clients[i].name);
		metrics_client_name(i, cfg->clients[i].name);
	}
	p->n_clients = cfg->n_clients;
	*ret = p;
	return 0;
}

int proxy_start(struct proxy *p)
{
	int rc = pthread_create(&p->thread, NULL, engine_main, p);

	if (rc != 0)
		return -rc;
	p->thread_started = true;
	atomic_store(&p->ready, true);
	return 0;
}

void proxy_stop(struct proxy *p, unsigned grace_ms)
{
	if (!p || !p->thread_started)
		return;
	atomic_store(&p->ready, false);
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	p->grace_ms = grace_ms;
	pthread_mutex_unlock(&p->lock);
	upstream_wakeup(p->upstream);
	pthread_join(p->thread, NULL);
	p->thread_started = false;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	proxy_stop(p, 0);
	upstream_free(p->upstream);
	/*
	 * Flights still sending when the grace ran out had their callers
	 * answered; their transfers are gone with the upstream client.
	 */
	flight_table_clear(p->flights);
	flight_table_free(p->flights);
	queue_free(p->queue);
	limiter_free(p->limiter);
	free(p->heap);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void proxy_reconfigure(struct proxy *p, const struct config *cfg)
{
	pthread_mutex_lock(&p->lock);
	settings_from_config(&p->pending, cfg);
	p->settings_pending = true;
	/* Configured clients take the first slots, in config order. */
	for (unsigned i = 0; i < cfg->n_clients && i < QUEUE_MAX_CLIENTS; i++) {
		snprintf(p->client_names[i], sizeof(p->client_names[i]), "%s", cfg->clients[i].name);
		metrics_client_name(i, cfg->clients[i].name);
	}
	if (cfg->n_clients > p->n_clients)
		p->n_clients = cfg->n_clients;
	pthread_mutex_unlock(&p->lock);
	atomic_store(&p->stale_while_revalidate_s, cfg->stale_while_revalidate_s);
	atomic_store(&p->stale_if_error_s, cfg->stale_if_error_s);
	upstream_wakeup(p->upstream);
}

unsigned proxy_client_index(struct proxy *p, const char *name)
{
	unsigned i;

	pthread_mutex_lock(&p->lock);
	for (i = 0; i < p->n_clients; i++) {
		if (strcmp(p->client_names[i], name) == 0)
			goto out;
	}
	if (p->n_clients < QUEUE_MAX_CLIENTS) {
		i = p->n_clients++;
		snprintf(p->client_names[i], sizeof(p->client_names[i]), "%s", name);
		metrics_client_name(i, name);
	} else {
		/* Past the table, unknown names share the last slot. */
		i = QUEUE_MAX_CLIENTS - 1;
	}
out:
	pthread_mutex_unlock(&p->lock);
	return i;
}

void proxy_ratelimit(struct proxy *p, unsigned *ret_quota, unsigned *ret_remaining,
		     unsigned *ret_reset_s)
{
	*ret_quota = atomic_load(&p->rl_quota);
	*ret_remaining = atomic_load(&p->rl_remaining);
	*ret_reset_s = atomic_load(&p->rl_reset_s);
}

int64_t proxy_heartbeat_us(struct proxy *p)
{
	return atomic_load(&p->heartbeat_us);
}

bool proxy_ready(struct proxy *p)
{
	return atomic_load(&p->ready);
}

void proxy_render_metrics(struct proxy *p, struct buf *out)
{
	metrics_gauge_set(METRICS_GAUGE_READY, proxy_ready(p) ? 1 : 0);
	metrics_render(out);
}

int proxy_purge(struct proxy *p, const struct cams_key *key)
{
	return cache_delete(p->cache, key);
}
