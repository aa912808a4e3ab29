/*
 * proxy.c -- the request path around the engine (see proxy.h): the hit
 * path, the engine thread, its inbox, the libcurl loop and the cache I/O.
 *
 * Threads. HTTP threads call proxy_lookup() (the cache's memory layer) and
 * proxy_submit() (append to the inbox under `lock`, wake the engine
 * thread). The engine thread owns the engine (engine.c, pure decisions),
 * the upstream client and the cache writes. Each turn of its loop it reads
 * the clocks once, feeds the engine what happened (submissions, refreshes,
 * finished upstream calls, departed callers, the time), carries out the
 * actions the engine returns (sign and start a call; hand an answer back
 * through on_done) and sleeps in upstream_poll() until the engine's next
 * wake time, network activity, a submission or a chore (departure check,
 * cache maintenance).
 *
 * Invariants.
 *  - Every submitted request gets exactly one on_done: from the engine
 *    thread, or from proxy_submit() itself once the engine thread has
 *    ended (503 Proxy.ShuttingDown).
 *  - Only the engine decides when a call is sent; this file only signs and
 *    starts what the engine says, and classifies what comes back.
 *  - A key entry is stored (one transaction) before the engine hands it to
 *    any caller, so memory never shows what disk does not have.
 *
 * Clocks. Only this file's engine loop reads clocks for the engine; the
 * engine and the other pure modules get the time as arguments.
 *
 * Many hosts (with `redis`). The engine thread also owns two Redis
 * connections (redis.c), polled beside the transfers in the same
 * curl_multi_poll (their sockets as extra descriptors; no thread of their
 * own, no blocking call): one for commands (the shared limiter's grants
 * and pauses, the shared tier's claims, fills, releases and purges), one
 * subscribed to the scope's notice channel. Each turn it sets the
 * engine's gate from the connection's state: GRANTS while it is ready (or
 * for the first connect timeout after it went away: a blip makes callers
 * wait, not fail), then CLOSED (fail closed); with redis-fallback-rate,
 * GRANTS for the first window, then LOCAL at that rate. It
 * carries out the engine's RESERVE (redis_grant: a grant is usable from
 * its slot until PROXY_GRANT_LATE_US after, on this host's monotonic
 * clock; the window asked of Redis is widened by as much, so a grant used
 * late within that tolerance still keeps every sliding second's bound) and
 * CLAIM actions (shared_claim), publishes what its calls fetched
 * (shared_fill), gives leases back (shared_release), tells every host of
 * a throttle (redis_pause) and applies other hosts' notices: a FILL of a
 * key this host holds with another fingerprint is read from the shared
 * tier into the local one (a rotation), a PURGE deletes it, and any notice
 * wakes a flight waiting for that key.
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

#include "clients.h"
#include "clock.h"
#include "envelope.h"
#include "limiter.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "redis.h"
#include "shared.h"
#include "span.h"
#include "upstream.h"

#define PROXY_REFRESH_RING 1024
#define PROXY_DISCONNECT_CHECK_US 250000
#define PROXY_MAINTAIN_US 1000000
#define PROXY_IDLE_POLL_MS 1000
#define PROXY_REFRESH_AHEAD_BATCH 16
#define PROXY_POLL_BATCH 256
#define PROXY_PURGE_RING 64
#define PROXY_HIT_STATUS_SIZE 48 /* "hit; stale; ttl=" and any int64_t */
/* Redis: how far ahead a host may book a grant, and how late it may use one. */
#define PROXY_GRANT_HORIZON_MS 2000
#define PROXY_GRANT_LATE_US 10000
#define PROXY_GRANT_RETRY_US 100000
/* A flight waiting for another host's call looks again this often (notices come first). */
#define PROXY_REMOTE_POLL_MS 250
#define PROXY_LEASE_MAX_MS 60000

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* What the driver needs from the configuration beyond the engine's; swapped on reload. */
struct proxy_settings {
	uint64_t ttl_s;
	uint64_t status_ttl_s;
	uint64_t negative_ttl_s;
	uint64_t refresh_ahead_s;
	unsigned upstream_timeout_ms;
	unsigned lease_ms;           /* a shared-tier lease: the wait for quota plus the call */
	enum signer_kind signature;
	struct engine_settings engine;
};

struct proxy {
	pthread_mutex_t lock; /* inbox, refresh ring, pending settings, stopping, closed */
	struct proxy_request *inbox_head, *inbox_tail;
	struct cams_key refresh_ring[PROXY_REFRESH_RING];
	unsigned refresh_head, refresh_len;
	bool stopping;
	bool closed;          /* the engine thread has ended: submissions are answered directly */
	bool settings_pending;
	struct proxy_settings pending;
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
	struct engine *engine;
	struct engine_stats counted;  /* engine stats already added to the metrics */
	struct cams_key purge_ring[PROXY_PURGE_RING]; /* under lock: purges for the shared tier */
	unsigned purge_len;

	/* many hosts (Redis): engine thread only; redis NULL: this host alone */
	struct redis *redis;          /* commands */
	struct redis *sub;            /* the notice channel */
	char scope[REDIS_NAME_MAX + 1];
	char host_id[REDIS_NAME_MAX + 1];
	double fallback_rate;         /* 0: fail closed */
	unsigned redis_connect_ms;
	int64_t redis_down_since_us;  /* when the connection was last not ready; 0 while ready */
	enum metrics_quota_mode mode;
	bool fallback_active;         /* the engine's limiter runs at fallback_rate */
	bool redis_closing;           /* redis_free() is calling back: start nothing */
	struct redis_stats redis_seen;/* already counted in the metrics */
	int64_t next_disconnect_check_us;
	int64_t next_maintain_us;
	pthread_t thread;
	bool thread_started;
};

static void settings_from_config(struct proxy_settings *s, const struct config *cfg)
{
	/* clients_publish(cfg) came first: weights by registry id */
	const struct clients_snapshot *clients = clients_current();

	memset(s, 0, sizeof(*s));
	s->ttl_s = cfg->ttl_s;
	s->status_ttl_s = cfg->status_ttl_s;
	s->negative_ttl_s = cfg->negative_ttl_s;
	s->refresh_ahead_s = cfg->refresh_ahead_s;
	s->upstream_timeout_ms = cfg->upstream_timeout_ms;
	s->lease_ms = cfg->upstream_timeout_ms + cfg->max_wait_ms < PROXY_LEASE_MAX_MS
			      ? cfg->upstream_timeout_ms + cfg->max_wait_ms
			      : PROXY_LEASE_MAX_MS;
	s->engine.shared = cfg->redis[0] != '\0';
	s->engine.grants_max_pending = cfg->redis_max_pending;
	s->signature = cfg->signature == CONFIG_SIGNATURE_V1 ? SIGNER_V1 : SIGNER_V3;
	s->engine.stale_while_revalidate_s = cfg->stale_while_revalidate_s;
	s->engine.stale_if_error_s = cfg->stale_if_error_s;
	s->engine.queue_max = cfg->queue_max;
	s->engine.upstream_retries = cfg->upstream_retries;
	s->engine.limiter.rate = cfg->rate;
	s->engine.limiter.burst = cfg->burst;
	s->engine.limiter.margin_ms = cfg->rate_margin_ms;
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		s->engine.weights[i] = clients_weight(clients, i);
}

void proxy_request_clear(struct proxy_request *req)
{
	engine_answer_clear(&req->call.answer);
	cache_entry_unref(req->call.stale);
	req->call.stale = NULL;
}

/* ---- the hit path (HTTP threads) ------------------------------------------ */

/* Cache-Control: max-age=N: an answer older than N s will not do (RFC 9111). */
static bool too_old_for_caller(const struct proxy_request *req, const struct cache_entry *e,
			       int64_t now_s)
{
	return req->max_age_s >= 0 && now_s - e->fetched_at_s > req->max_age_s;
}

/* A hit's Cache-Status value, prefix then seconds, built without printf. */
static void hit_status(char status[PROXY_HIT_STATUS_SIZE], const char *prefix, int64_t ttl_s)
{
	size_t n = strlen(prefix);

	assert(n + SPAN_I64_SIZE <= PROXY_HIT_STATUS_SIZE);
	memcpy(status, prefix, n);
	span_format_i64(ttl_s, status + n);
}

enum proxy_verdict proxy_lookup(struct proxy *p, struct proxy_request *req, int64_t now_us,
				int64_t now_s)
{
	struct engine_answer *a = &req->call.answer;
	struct cache_entry *e = NULL;
	enum cache_freshness fr;
	char status[PROXY_HIT_STATUS_SIZE];
	bool revalidate;
	int rc;

	memset(a, 0, sizeof(*a));
	req->call.stale = NULL;
	req->call.submitted_us = now_us;
	req->call.revalidate = req->no_cache || req->max_age_s >= 0;
	req->generation_seen = cache_generation(p->cache);

	rc = cache_lookup(p->cache, &req->call.key, now_s, &e);
	/* Memory holds every row by default: then a memory miss is a real miss. */
	if (rc == 0 && !cache_whole_in_memory(p->cache))
		rc = cache_load(p->cache, &req->call.key, now_s, &e); /* disk, on this thread */
	if (rc < 0)
		metrics_count(METRICS_CACHE_ERRORS);
	if (rc == 1) {
		fr = cache_entry_freshness(e, now_s, atomic_load(&p->stale_while_revalidate_s),
					   atomic_load(&p->stale_if_error_s));
		revalidate = req->no_cache || too_old_for_caller(req, e, now_s);
		if (fr == CACHE_FRESH && !revalidate) {
			hit_status(status, "hit; ttl=", e->expires_at_s - now_s);
			engine_answer_entry(a,
					    e->kind == CACHE_KIND_NEGATIVE ? ENGINE_OUTCOME_HIT_NEGATIVE
									   : ENGINE_OUTCOME_HIT,
					    e, now_s, status);
			return PROXY_ANSWERED;
		}
		if (fr == CACHE_STALE_REVALIDATE && !revalidate && !req->call.no_stale) {
			hit_status(status, "hit; stale; ttl=", e->expires_at_s - now_s);
			engine_answer_entry(a, ENGINE_OUTCOME_HIT_STALE, e, now_s, status);
			/* one background refresh; the engine coalesces repeats */
			pthread_mutex_lock(&p->lock);
			if (p->refresh_len < PROXY_REFRESH_RING && !p->stopping) {
				p->refresh_ring[(p->refresh_head + p->refresh_len) % PROXY_REFRESH_RING] =
					req->call.key;
				p->refresh_len++;
			}
			pthread_mutex_unlock(&p->lock);
			upstream_wakeup(p->upstream);
			return PROXY_ANSWERED;
		}
		if (e->kind == CACHE_KIND_KEY &&
		    (fr == CACHE_FRESH || fr == CACHE_STALE_REVALIDATE || fr == CACHE_STALE_IF_ERROR))
			req->call.stale = e; /* fallback if the upstream fails */
		else
			cache_entry_unref(e);
	}
	if (req->only_if_cached) {
		struct cache_entry *stale = req->call.stale;

		if (stale && !req->call.no_stale &&
		    cache_entry_freshness(stale, now_s, atomic_load(&p->stale_while_revalidate_s),
					  atomic_load(&p->stale_if_error_s)) != CACHE_EXPIRED) {
			req->call.stale = NULL;
			engine_answer_entry(a, ENGINE_OUTCOME_STALE_FALLBACK, stale, now_s,
					    "hit; stale; detail=only-if-cached");
			return PROXY_ANSWERED;
		}
		engine_answer_error(a, ENGINE_OUTCOME_NOT_CACHED, 504, NULL, req->call.request_id,
				    "Proxy.NotCached",
				    "the key is not in the cache and only-if-cached was requested", 0,
				    "fwd=miss");
		return PROXY_ANSWERED;
	}
	return PROXY_PENDING;
}

void proxy_submit(struct proxy *p, struct proxy_request *req)
{
	bool closed;

	req->inbox_next = NULL;
	pthread_mutex_lock(&p->lock);
	closed = p->closed;
	if (!closed) {
		if (p->inbox_tail)
			p->inbox_tail->inbox_next = req;
		else
			p->inbox_head = req;
		p->inbox_tail = req;
	}
	pthread_mutex_unlock(&p->lock);
	if (closed) {
		/* The engine thread is gone: nobody else will ever answer. */
		cache_entry_unref(req->call.stale);
		req->call.stale = NULL;
		engine_answer_error(&req->call.answer, ENGINE_OUTCOME_SHUTTING_DOWN, 503, NULL,
				    req->call.request_id, "Proxy.ShuttingDown",
				    "the daemon is stopping; retry shortly", 1, "fwd=miss");
		req->on_done(req);
		return;
	}
	upstream_wakeup(p->upstream);
}

/* ---- carrying out the engine's actions (engine thread) --------------------------- */

static void start_call(struct proxy *p, struct flight *f, int64_t quota_wait_us, int64_t now_us,
		       int64_t now_s)
{
	struct signer_request sr;
	int rc;

	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, quota_wait_us);
	metrics_client_call(f->qitem.client);
	/* A fresh nonce and timestamp every attempt: a retry is re-signed. */
	rc = signer_sign_request(p->signer, p->settings.signature,
				 upstream_host_header(p->upstream), &f->key, (time_t)now_s, NULL, &sr);
	if (rc == 0) {
		rc = upstream_start(p->upstream, &sr, f);
		signer_request_free(&sr);
	} else {
		log_error("sign_failed", "err=%d", rc);
	}
	if (rc < 0) {
		struct engine_reply r = {
			.kind = ENGINE_REPLY_FAILED,
			.http_status = 502,
			.code = "Proxy.UpstreamError",
			.message = "could not start the upstream call",
			.ratelimit_remain = -1,
			.ratelimit_time_left_ms = -1,
			.wire_delay_us = -1,
			.rtt_var_us = -1,
		};

		engine_upstream_done(p->engine, f, &r, now_us, now_s);
		return;
	}
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char masked[LOG_PHONE_MASKED_MAX];

		log_debug("upstream_send", "phone=%s attempt=%u waiters=%u background=%d",
			  log_mask_phone(f->key.phone, masked, sizeof(masked)), f->attempts,
			  f->n_waiters, f->background);
	}
}

static void count_delta(enum metrics_counter c, uint64_t now, uint64_t *counted)
{
	for (; *counted < now; (*counted)++)
		metrics_count(c);
}

/* What the engine did, into the metrics: before any answer leaves, so a caller sees it counted. */
static void sync_engine_counters(struct proxy *p)
{
	const struct engine_stats *st = engine_stats(p->engine);

	count_delta(METRICS_THROTTLES, st->throttles, &p->counted.throttles);
	count_delta(METRICS_RETRIES, st->retries, &p->counted.retries);
	count_delta(METRICS_FLIGHTS_JOINED, st->joined, &p->counted.joined);
	count_delta(METRICS_REFRESHES, st->refreshes, &p->counted.refreshes);
	count_delta(METRICS_CLIENT_GONE, st->departed, &p->counted.departed);
	count_delta(METRICS_GRANTS, st->grants, &p->counted.grants);
	count_delta(METRICS_GRANTS_DISCARDED, st->grants_discarded, &p->counted.grants_discarded);
	count_delta(METRICS_SHARED_HITS, st->shared_hits, &p->counted.shared_hits);
	count_delta(METRICS_SHARED_JOINS, st->shared_joins, &p->counted.shared_joins);
}

/* ---- many hosts: Redis (engine thread) -------------------------------------------- */

/*
 * The shared limiter's window: one second (or 1/rate below one call a
 * second), the limiter's margin, and the lateness a grant may be used with.
 */
static unsigned grant_window_ms(struct proxy *p)
{
	double rate = p->settings.engine.limiter.rate;
	int64_t base_us = rate >= 1.0 ? 1000000 : (int64_t)ceil(1e6 / rate);

	return (unsigned)((base_us + limiter_margin_us(engine_limiter(p->engine)) +
			   PROXY_GRANT_LATE_US + 999) / 1000);
}

static void make_token(const struct proxy *p, uint64_t seq, char *out, size_t size)
{
	snprintf(out, size, "%s#%" PRIu64, p->host_id, seq);
}

static void count_redis_error(int error, const char *what, const char *text)
{
	if (error == -EPROTO) {
		metrics_redis_errors(METRICS_REDIS_PROTOCOL, 1);
		log_warn("redis_error", "op=%s detail=%s", what, text ? text : "-");
	}
	/* timeouts and lost connections are counted from the connection's stats */
}

static void on_grant(void *cookie, int error, const struct redis_grant *g, const char *text)
{
	struct proxy *p = cookie;
	int64_t now_us = clock_mono_us();

	if (error != 0) {
		count_redis_error(error, "grant", text);
		engine_grant_failed(p->engine, now_us + PROXY_GRANT_RETRY_US, now_us);
		return;
	}
	metrics_observe_us(METRICS_HIST_REDIS_RTT, g->replied_us - g->issued_us);
	if (g->verdict != REDIS_GRANT_GRANTED) {
		metrics_count(METRICS_GRANTS_REFUSED);
		engine_grant_failed(p->engine, g->replied_us + g->delay_us, now_us);
		return;
	}
	/* Never early (send_at counts from the reply); never later than the tolerance. */
	engine_grant(p->engine, g->send_at_us, g->issued_us + g->delay_us + PROXY_GRANT_LATE_US,
		     now_us);
}

static void reserve(struct proxy *p, int64_t now_us)
{
	double rate = p->settings.engine.limiter.rate;
	unsigned window_ms = grant_window_ms(p);
	unsigned per_window = rate >= 1.0 ? (unsigned)floor(rate) : 1;
	int64_t spacing_us = (int64_t)(window_ms - PROXY_GRANT_LATE_US / 1000) * 1000 / per_window;
	struct redis_grant_request req = {
		.scope = p->scope,
		.host_id = p->host_id,
		.rate = per_window > 1000 ? 1000 : per_window,
		.window_ms = window_ms,
		.spacing_us = (unsigned)(spacing_us < 1 ? 1 : spacing_us),
		.max_pending = p->settings.engine.grants_max_pending,
		.horizon_ms = PROXY_GRANT_HORIZON_MS,
	};

	if (p->redis_closing || redis_grant(p->redis, &req, now_us, on_grant, p) < 0)
		engine_grant_failed(p->engine, now_us + PROXY_GRANT_RETRY_US, now_us);
}

/* Every host waits now: a throttle or a hint this host saw. */
static void on_pause(void *cookie, int error, int64_t pause_left_us, const char *text)
{
	(void)cookie;
	(void)pause_left_us;
	if (error != 0)
		count_redis_error(error, "pause", text);
}

static void pause_all_hosts(struct proxy *p, unsigned pause_ms, int64_t now_us)
{
	if (!p->redis || p->redis_closing || pause_ms == 0)
		return;
	redis_pause(p->redis, p->scope, pause_ms, grant_window_ms(p), PROXY_GRANT_HORIZON_MS,
		    now_us, on_pause, p);
}

/* An entry read from the shared tier, into the local one (a rotation is logged). */
static void store_shared(struct proxy *p, struct cache_entry *e)
{
	struct cache_entry *old = NULL;

	if (cache_put(p->cache, e, &old) < 0) {
		metrics_count(METRICS_CACHE_ERRORS);
		return;
	}
	if (old && old->kind == CACHE_KIND_KEY && e->kind == CACHE_KIND_KEY &&
	    strcmp(old->etag, e->etag) != 0) {
		char masked[LOG_PHONE_MASKED_MAX];

		log_info("key_rotated_shared",
			 "phone=%s cust_space_id=%s old_fingerprint=%s new_fingerprint=%s",
			 log_mask_phone(e->key.phone, masked, sizeof(masked)),
			 e->key.cust_space_id[0] ? e->key.cust_space_id : "-", old->etag, e->etag);
	}
	cache_entry_unref(old);
}

struct claim_cookie {
	struct proxy *p;
	struct cams_key key;
	uint64_t seq;
	bool lookup_only;  /* a notice's re-read: no flight, no lease */
};

static void on_released(void *cookie, int error, const char *text)
{
	(void)cookie;
	if (error != 0)
		count_redis_error(error, "release", text);
}

static void release_lease(struct proxy *p, const struct cams_key *key, uint64_t seq,
			  int64_t now_us)
{
	char token[SHARED_TOKEN_MAX + 1];

	if (p->redis_closing)
		return;
	make_token(p, seq, token, sizeof(token));
	shared_release(p->redis, p->scope, key, token, p->host_id, now_us, on_released, p);
}

static void on_claim(void *cookie, int error, const struct shared_claim *cl, const char *text)
{
	struct claim_cookie *c = cookie;
	struct proxy *p = c->p;
	int64_t now_us = clock_mono_us(), now_s = clock_wall_s();
	enum engine_claim result = ENGINE_CLAIM_UNAVAILABLE;
	struct cache_entry *entry = NULL;
	int64_t retry_at_us = 0, wait_ms;

	if (error != 0) {
		count_redis_error(error, "claim", text);
	} else {
		switch (cl->result) {
		case SHARED_CLAIM_HIT:
			entry = cl->entry;
			result = ENGINE_CLAIM_HIT;
			store_shared(p, entry);
			break;
		case SHARED_CLAIM_OWNED:
			result = ENGINE_CLAIM_OWNED;
			break;
		case SHARED_CLAIM_HELD:
			result = ENGINE_CLAIM_HELD;
			wait_ms = cl->lease_left_ms < PROXY_REMOTE_POLL_MS ? cl->lease_left_ms
									 : PROXY_REMOTE_POLL_MS;
			retry_at_us = now_us + (wait_ms > 10 ? wait_ms : 10) * 1000;
			break;
		case SHARED_CLAIM_ABSENT:
			break;
		}
	}
	if (!c->lookup_only &&
	    !engine_claim_done(p->engine, &c->key, c->seq, result, entry, retry_at_us, now_us,
			       now_s) &&
	    result == ENGINE_CLAIM_OWNED)
		release_lease(p, &c->key, c->seq, now_us);
	cache_entry_unref(entry);
	free(c);
}

/* The engine's CLAIM: the shared tier first, the lease when it is absent. */
static void claim(struct proxy *p, const struct engine_action *act, int64_t now_us,
		  int64_t now_s)
{
	struct claim_cookie *c = xcalloc(1, sizeof(*c));
	char token[SHARED_TOKEN_MAX + 1];
	/*
	 * A refresh wants an entry newer than the one it is refreshing; a
	 * caller's no-cache or max-age wants none at all (the lease only).
	 */
	uint64_t min_pttl_ms = act->revalidate	   ? UINT32_MAX
			       : act->background ? p->settings.refresh_ahead_s * 1000 + 1000
						 : 1000;

	c->p = p;
	c->key = act->key;
	c->seq = act->claim_seq;
	make_token(p, act->claim_seq, token, sizeof(token));
	if (p->redis_closing || redis_state(p->redis) != REDIS_STATE_READY ||
	    shared_claim(p->redis, p->scope, &act->key, token, p->settings.lease_ms,
			 min_pttl_ms > UINT32_MAX ? UINT32_MAX : (unsigned)min_pttl_ms, true, now_us,
			 now_s, on_claim, c) < 0) {
		free(c);
		engine_claim_done(p->engine, &act->key, act->claim_seq, ENGINE_CLAIM_UNAVAILABLE, NULL,
				  0, now_us, now_s);
	}
}

static void on_filled(void *cookie, int error, const char *text)
{
	(void)cookie;
	if (error != 0)
		count_redis_error(error, "fill", text);
}

/*
 * What a call of this host brought, for the other hosts: an entry (a key or
 * a definitive error) is published and the lease given back with it; a
 * failure gives the lease back; a throttle slows every host (the flight,
 * queued again, keeps its lease).
 */
static void after_call_shared(struct proxy *p, const struct cams_key *key, bool owned,
			      uint64_t seq, const struct engine_reply *r, int64_t now_us,
			      int64_t now_s)
{
	char token[SHARED_TOKEN_MAX + 1];

	if (!p->redis || p->redis_closing)
		return;
	make_token(p, seq, token, sizeof(token));
	switch (r->kind) {
	case ENGINE_REPLY_ENTRY:
		if (shared_fill(p->redis, p->scope, r->entry, owned ? token : NULL, p->host_id,
				now_us, now_s, on_filled, p) == 0)
			metrics_count(METRICS_SHARED_FILLS);
		break;
	case ENGINE_REPLY_THROTTLED:
		pause_all_hosts(p, grant_window_ms(p), now_us);
		break;
	case ENGINE_REPLY_FAILED:
		if (owned)
			release_lease(p, key, seq, now_us);
		break;
	}
	/* Remain:0 and TimeLeft: the upstream's window ends then, for every host. */
	if (r->ratelimit_remain == 0 && r->ratelimit_time_left_ms > 0)
		pause_all_hosts(p, (unsigned)(r->ratelimit_time_left_ms > 60000
						      ? 60000
						      : r->ratelimit_time_left_ms),
				now_us);
}

/* A FILL for a key this host holds with another fingerprint: read the new one. */
static void refetch_if_changed(struct proxy *p, const struct shared_notice *n, int64_t now_us,
			       int64_t now_s)
{
	struct cache_entry *e;
	struct claim_cookie *c;
	char token[SHARED_TOKEN_MAX + 1];
	bool changed;

	if (cache_lookup(p->cache, &n->key, now_s, &e) != 1)
		return; /* not held here: nothing to bring up to date */
	changed = strcmp(e->etag, n->etag) != 0;
	cache_entry_unref(e);
	if (!changed)
		return;
	c = xcalloc(1, sizeof(*c));
	c->p = p;
	c->key = n->key;
	c->lookup_only = true;
	make_token(p, 0, token, sizeof(token));
	if (shared_claim(p->redis, p->scope, &n->key, token, 1, 1000, false, now_us, now_s, on_claim,
			 c) < 0)
		free(c);
}

/* A notice from the channel (inside redis_on_readable of the subscriber). */
static void on_notice(void *cookie, const char *data, size_t len)
{
	struct proxy *p = cookie;
	int64_t now_us = clock_mono_us(), now_s = clock_wall_s();
	struct shared_notice n;

	if (p->redis_closing)
		return;
	if (shared_notice_parse(data, len, &n) < 0) {
		metrics_redis_errors(METRICS_REDIS_PROTOCOL, 1);
		return;
	}
	if (strcmp(n.host_id, p->host_id) == 0)
		return;
	metrics_count(METRICS_SHARED_NOTICES);
	engine_claim_poke(p->engine, &n.key, now_us);
	switch (n.kind) {
	case SHARED_NOTICE_FILL:
		refetch_if_changed(p, &n, now_us, now_s);
		break;
	case SHARED_NOTICE_PURGE:
		if (cache_delete(p->cache, &n.key) < 0)
			metrics_count(METRICS_CACHE_ERRORS);
		break;
	case SHARED_NOTICE_FREE:
		break;
	}
}

/*
 * Who decides upstream sends, from the connection's state: see the top of
 * this file. Logged when it changes.
 */
static void update_quota_mode(struct proxy *p, int64_t now_us, int64_t now_s)
{
	enum metrics_quota_mode mode = METRICS_QUOTA_SHARED;
	enum engine_gate gate = ENGINE_GATE_GRANTS;

	if (!p->redis)
		return;
	if (redis_state(p->redis) == REDIS_STATE_READY) {
		p->redis_down_since_us = 0;
	} else {
		int64_t down_us;

		if (!p->redis_down_since_us)
			p->redis_down_since_us = now_us;
		down_us = now_us - p->redis_down_since_us;
		/* With a fallback budget, callers wait for it rather than fail first. */
		if (p->fallback_rate > 0) {
			if (down_us >= (int64_t)grant_window_ms(p) * 1000 ||
			    p->mode == METRICS_QUOTA_FALLBACK)
				mode = METRICS_QUOTA_FALLBACK;
		} else if (down_us >= (int64_t)p->redis_connect_ms * 1000) {
			mode = METRICS_QUOTA_CLOSED;
		}
	}
	if (mode == METRICS_QUOTA_CLOSED)
		gate = ENGINE_GATE_CLOSED;
	else if (mode == METRICS_QUOTA_FALLBACK)
		gate = ENGINE_GATE_LOCAL;
	if ((mode == METRICS_QUOTA_FALLBACK) != p->fallback_active) {
		struct engine_settings s = p->settings.engine;

		p->fallback_active = mode == METRICS_QUOTA_FALLBACK;
		if (p->fallback_active)
			s.limiter.rate = p->fallback_rate;
		engine_configure(p->engine, &s, now_us);
	}
	engine_set_gate(p->engine, gate, now_us, now_s);
	if (mode != p->mode) {
		char err[160];

		if (mode == METRICS_QUOTA_SHARED)
			log_info("quota_mode", "mode=shared");
		else
			log_warn("quota_mode", "mode=%s redis_error=%s", metrics_quota_mode_name(mode),
				 log_quote(redis_last_error(p->redis), err, sizeof(err)));
		p->mode = mode;
		metrics_set_quota_mode(mode);
	}
}

static unsigned redis_waitfds(struct proxy *p, struct upstream_waitfd *fds)
{
	struct redis *conns[2] = { p->redis, p->sub };
	unsigned n = 0;

	for (unsigned i = 0; i < 2; i++) {
		if (!conns[i] || redis_fd(conns[i]) < 0 || redis_events(conns[i]) == 0)
			continue;
		fds[n].fd = redis_fd(conns[i]);
		fds[n].events = redis_events(conns[i]);
		n++;
	}
	return n;
}

/* What the sockets brought, then deadlines and reconnections. */
static void redis_service(struct proxy *p, const struct upstream_waitfd *fds, unsigned n)
{
	struct redis *conns[2] = { p->redis, p->sub };
	int64_t now_us = clock_mono_us();

	if (!p->redis)
		return;
	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = 0; j < 2; j++) {
			if (redis_fd(conns[j]) != fds[i].fd)
				continue;
			if (fds[i].revents & (POLLIN | POLLERR | POLLHUP))
				redis_on_readable(conns[j], now_us);
			if ((fds[i].revents & POLLOUT) && redis_fd(conns[j]) == fds[i].fd)
				redis_on_writable(conns[j], now_us);
			break;
		}
	}
	now_us = clock_mono_us();
	redis_tick(p->redis, now_us);
	redis_tick(p->sub, now_us);
}

static int64_t redis_wake_us(struct proxy *p)
{
	int64_t a, b;

	if (!p->redis)
		return INT64_MAX;
	a = redis_next_wake_us(p->redis);
	b = redis_next_wake_us(p->sub);
	return a < b ? a : b;
}

/* The connections' counters into the metrics. */
static void update_redis_metrics(struct proxy *p)
{
	struct redis_stats a, b;
	uint64_t timeouts, disconnects, reconnects;

	if (!p->redis)
		return;
	redis_get_stats(p->redis, &a);
	redis_get_stats(p->sub, &b);
	metrics_gauge_set(METRICS_GAUGE_REDIS_UP, redis_state(p->redis) == REDIS_STATE_READY &&
							  redis_state(p->sub) == REDIS_STATE_READY);
	count_delta(METRICS_REDIS_COMMANDS, a.commands, &p->redis_seen.commands);
	timeouts = a.timeouts + b.timeouts;
	disconnects = a.disconnects + b.disconnects;
	reconnects = (a.connects > 1 ? a.connects - 1 : 0) + (b.connects > 1 ? b.connects - 1 : 0);
	if (timeouts > p->redis_seen.timeouts)
		metrics_redis_errors(METRICS_REDIS_TIMEOUT, timeouts - p->redis_seen.timeouts);
	if (disconnects > p->redis_seen.disconnects)
		metrics_redis_errors(METRICS_REDIS_DISCONNECT, disconnects - p->redis_seen.disconnects);
	p->redis_seen.timeouts = timeouts;
	p->redis_seen.disconnects = disconnects;
	count_delta(METRICS_REDIS_RECONNECTS, reconnects, &p->redis_seen.connects);
}

/* Purges asked on the HTTP threads, for the other hosts. */
static void send_purges(struct proxy *p, const struct cams_key *keys, unsigned n, int64_t now_us)
{
	for (unsigned i = 0; i < n && p->redis; i++)
		shared_purge(p->redis, p->scope, &keys[i], p->host_id, now_us, on_released, p);
}

/* Carry out every action the engine has decided, until it has none. */
static void run_actions(struct proxy *p, int64_t now_us, int64_t now_s)
{
	struct engine_action act;

	sync_engine_counters(p);
	while (engine_next_action(p->engine, &act)) {
		switch (act.kind) {
		case ENGINE_ACTION_SEND:
			start_call(p, act.flight, act.quota_wait_us, now_us, now_s);
			break;
		case ENGINE_ACTION_ANSWER: {
			struct proxy_request *req =
				container_of(act.caller, struct proxy_request, call);

			req->on_done(req);
			break;
		}
		case ENGINE_ACTION_RESERVE:
			reserve(p, now_us);
			break;
		case ENGINE_ACTION_CLAIM:
			claim(p, &act, now_us, now_s);
			break;
		}
	}
}

/* ---- what came back from the upstream (engine thread) ------------------------------ */

/* Build the entry for an OK answer, store it, log a rotation. NULL if unservable. */
static struct cache_entry *store_key(struct proxy *p, struct flight *f,
				     const struct envelope_reply *r, int64_t now_s,
				     bool *ret_stored)
{
	bool valid = strcmp(r->status, "VALID") == 0;
	uint64_t ttl = valid ? p->settings.ttl_s : p->settings.status_ttl_s;
	char masked[LOG_PHONE_MASKED_MAX];
	struct cache_entry *e, *old = NULL;
	struct buf body;

	buf_init(&body, LIMIT_BODY_MAX_BYTES);
	envelope_render_ok(&body, r->request_id, r->message, f->key.phone, r->pem, r->status);
	if (buf_error(&body)) {
		buf_free(&body);
		return NULL;
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
	if (!valid)
		log_info("key_status", "phone=%s status=%s ttl_s=%" PRIu64, masked, r->status, ttl);
	*ret_stored = cache_put(p->cache, e, &old) == 0;
	if (!*ret_stored)
		metrics_count(METRICS_CACHE_ERRORS);
	if (old && old->kind == CACHE_KIND_KEY && strcmp(old->etag, e->etag) != 0) {
		metrics_count(METRICS_KEY_ROTATIONS);
		log_warn("key_rotated",
			 "phone=%s cust_space_id=%s old_fingerprint=%s new_fingerprint=%s", masked,
			 f->key.cust_space_id[0] ? f->key.cust_space_id : "-", old->etag, e->etag);
	}
	cache_entry_unref(old);
	return e;
}

/* A definitive upstream error as a negative entry (stored when negative-ttl > 0). */
static struct cache_entry *store_negative(struct proxy *p, struct flight *f,
					  const struct envelope_reply *r, int http_status,
					  int64_t now_s, bool *ret_stored)
{
	struct cache_entry *e;
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
	*ret_stored = false;
	if (p->settings.negative_ttl_s > 0) {
		*ret_stored = cache_put(p->cache, e, NULL) == 0;
		if (!*ret_stored)
			metrics_count(METRICS_CACHE_ERRORS);
	}
	return e;
}

/*
 * The request id of the first caller a flight serves, for upstream lines
 * ("-" for a refresh nobody waits for): what a caller quotes to find the
 * upstream call made for it, next to the upstream's RequestId.
 */
static void flight_request_id(struct flight *f, char *out, size_t out_size)
{
	struct flight_waiter *w = flight_first_waiter(f);

	snprintf(out, out_size, "%s",
		 w ? container_of(w, struct engine_caller, waiter)->request_id : "-");
}

static void on_upstream_done(struct upstream_result *res, void *cls)
{
	struct proxy *p = cls;
	struct flight *f = res->cookie;
	int64_t now_us = clock_mono_us(), now_s = clock_wall_s();
	struct engine_reply reply = {
		.kind = ENGINE_REPLY_FAILED,
		.http_status = 502,
		.code = "Proxy.UpstreamError",
		.ratelimit_remain = res->ratelimit_remain,
		.ratelimit_time_left_ms = res->ratelimit_time_left_ms,
		.wire_delay_us = res->wire_delay_us,
		.rtt_var_us = res->rtt_var_us,
	};
	struct cache_entry *entry = NULL;
	struct envelope_reply r;
	char err[160], msg[LIMIT_MESSAGE_MAX + LIMIT_CODE_MAX + LIMIT_REQUEST_ID_MAX + 96];
	char qid[2 * LIMIT_REQUEST_ID_MAX + 3];
	char masked[LOG_PHONE_MASKED_MAX], rid[sizeof(((struct engine_caller *)0)->request_id)];
	enum envelope_class verdict;
	enum envelope_outcome outcome;
	int answer_status;
	unsigned attempt;
	bool parsed = false;
	/* read before the engine may finish f */
	struct cams_key key = f->key;
	bool lease_owned = f->lease_owned;
	uint64_t claim_seq = f->claim_seq;

	log_mask_phone(f->key.phone, masked, sizeof(masked));
	flight_request_id(f, rid, sizeof(rid));
	metrics_observe_us(METRICS_HIST_UPSTREAM, now_us - f->sent_at_us);
	reply.message = msg;
	msg[0] = '\0';

	switch (res->outcome) {
	case UPSTREAM_TIMEOUT:
		metrics_upstream(ENVELOPE_OUTCOME_TIMEOUT);
		log_warn("upstream_timeout", "phone=%s request_id=%s after_ms=%" PRId64, masked, rid,
			 (now_us - f->sent_at_us) / 1000);
		snprintf(msg, sizeof(msg), "the upstream did not answer within %u ms",
			 p->settings.upstream_timeout_ms);
		reply.http_status = 504;
		reply.code = "Proxy.UpstreamTimeout";
		reply.stale_reason = "upstream-timeout";
		goto out;
	case UPSTREAM_NETWORK:
	case UPSTREAM_TOO_LARGE:
		metrics_upstream(ENVELOPE_OUTCOME_NETWORK);
		log_warn("upstream_error", "phone=%s request_id=%s error=%s", masked, rid,
			 log_quote(res->error, err, sizeof(err)));
		snprintf(msg, sizeof(msg), "upstream %s: %s",
			 res->outcome == UPSTREAM_TOO_LARGE ? "answer too large" : "unreachable",
			 res->error);
		goto out;
	case UPSTREAM_HTTP:
		break;
	}

	if (envelope_parse(res->body, res->body_len, &r, err, sizeof(err)) < 0) {
		metrics_upstream(ENVELOPE_OUTCOME_HTTP_ERROR);
		if (res->http_status >= 500 || res->http_status < 200)
			snprintf(msg, sizeof(msg), "upstream answered HTTP %ld", res->http_status);
		else
			snprintf(msg, sizeof(msg), "unusable upstream answer (HTTP %ld): %s",
				 res->http_status, err);
		log_warn("upstream_error", "phone=%s request_id=%s http_status=%ld error=%s", masked,
			 rid, res->http_status, log_quote(msg, err, sizeof(err)));
		goto out;
	}
	parsed = true;
	verdict = envelope_classify(res->http_status, r.code, &answer_status, &outcome);
	metrics_upstream(outcome);
	switch (verdict) {
	case ENVELOPE_OK:
		log_info("upstream_call",
			 "phone=%s request_id=%s upstream_request_id=%s code=OK status=%s duration_ms=%.3f",
			 masked, rid, log_quote(r.request_id, qid, sizeof(qid)),
			 log_quote(r.status, err, sizeof(err)),
			 (double)(now_us - f->sent_at_us) / 1000.0);
		entry = store_key(p, f, &r, now_s, &reply.stored);
		if (!entry) {
			snprintf(msg, sizeof(msg), "upstream answer too large to serve");
			reply.request_id = r.request_id;
			break;
		}
		reply.kind = ENGINE_REPLY_ENTRY;
		reply.entry = entry;
		break;
	case ENVELOPE_THROTTLED:
		reply.kind = ENGINE_REPLY_THROTTLED;
		reply.code = "System.LimitControl";
		reply.request_id = r.request_id;
		snprintf(msg, sizeof(msg), "%s", r.message);
		break;
	case ENVELOPE_DEFINITIVE:
		if (answer_status == 403)
			log_warn("upstream_denied", "phone=%s request_id=%s upstream_request_id=%s code=%s",
				 masked, rid, log_quote(r.request_id, qid, sizeof(qid)), r.code);
		entry = store_negative(p, f, &r, answer_status, now_s, &reply.stored);
		reply.kind = ENGINE_REPLY_ENTRY;
		reply.entry = entry;
		break;
	case ENVELOPE_NONCE_REUSED:
		/*
		 * Our request reached the upstream twice: libcurl re-sends a
		 * request once when a reused connection dies before the
		 * answer. Not retried: the upstream already counted both
		 * arrivals, and a retry would add more load to a connection
		 * that is failing.
		 */
		log_warn("upstream_nonce_reused", "phone=%s request_id=%s upstream_request_id=%s attempt=%u",
			 masked, rid, log_quote(r.request_id, qid, sizeof(qid)), f->attempts);
		reply.http_status = answer_status;
		reply.request_id = r.request_id;
		snprintf(msg, sizeof(msg),
			 "the upstream connection failed and the re-sent request was refused (SignatureNonceUsed)");
		break;
	case ENVELOPE_SERVER_ERROR:
		/* The upstream failed, not the caller: our Code, its Code and RequestId in Message. */
		snprintf(msg, sizeof(msg), "upstream answered HTTP %ld: Code %s, RequestId %s",
			 res->http_status, r.code, r.request_id);
		log_warn("upstream_error",
			 "phone=%s request_id=%s http_status=%ld code=%s upstream_request_id=%s", masked,
			 rid, res->http_status, log_quote(r.code, err, sizeof(err)),
			 log_quote(r.request_id, qid, sizeof(qid)));
		reply.http_status = answer_status;
		break;
	case ENVELOPE_CREDENTIAL:
	case ENVELOPE_OTHER:
		/*
		 * The upstream refused our request itself (signature, key,
		 * clock): the daemon's problem, not the caller's. Pass the
		 * Code through with 502 and say so.
		 */
		log_error("upstream_rejected",
			  "phone=%s request_id=%s upstream_request_id=%s http_status=%ld code=%s message=%s",
			  masked, rid, log_quote(r.request_id, qid, sizeof(qid)), res->http_status,
			  r.code, log_quote(r.message, err, sizeof(err)));
		snprintf(msg, sizeof(msg), "the upstream rejected the daemon's request: %s",
			 r.message);
		reply.http_status = answer_status;
		reply.code = r.code;
		reply.request_id = r.request_id;
		break;
	}
out:
	attempt = f->attempts;
	/* f may be gone after this: the engine finishes flights it answers. */
	engine_upstream_done(p->engine, f, &reply, now_us, now_s);
	f = NULL;
	after_call_shared(p, &key, lease_owned, claim_seq, &reply, now_us, now_s);
	if (reply.kind == ENGINE_REPLY_THROTTLED) {
		struct limiter *l = engine_limiter(p->engine);

		log_warn("upstream_throttled",
			 "phone=%s request_id=%s upstream_request_id=%s attempt=%u rate=%.2f retry_in_ms=%" PRId64,
			 masked, rid, parsed ? log_quote(r.request_id, qid, sizeof(qid)) : "-",
			 attempt, limiter_effective_rate(l, now_us),
			 (limiter_next_send_us(l, now_us) - now_us) / 1000);
	}
	cache_entry_unref(entry);
	if (parsed)
		envelope_reply_free(&r);
}

/* ---- the engine thread's chores ------------------------------------------------------ */

/* Waiting callers whose client left: they leave their flights (answered GONE). */
static void check_departures(struct proxy *p, int64_t now_us, int64_t now_s)
{
	size_t n_waiting = engine_waiting(p->engine);
	struct pollfd pfds[PROXY_POLL_BATCH];
	struct engine_caller *callers[PROXY_POLL_BATCH];
	struct engine_caller **gone;
	size_t n_gone = 0;

	if (n_waiting == 0)
		return;
	gone = xcalloc(n_waiting, sizeof(*gone));
	/* Collect first: telling the engine reorders its list of waiting callers. */
	for (size_t i = 0; i < n_waiting;) {
		size_t n = 0;

		for (; i < n_waiting && n < PROXY_POLL_BATCH; i++) {
			struct engine_caller *c = engine_waiting_at(p->engine, i);
			struct proxy_request *req = container_of(c, struct proxy_request, call);

			if (req->fd < 0)
				continue;
			pfds[n].fd = req->fd;
			pfds[n].events = POLLRDHUP;
			pfds[n].revents = 0;
			callers[n++] = c;
		}
		if (n == 0 || poll(pfds, n, 0) <= 0)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (pfds[j].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
				gone[n_gone++] = callers[j];
		}
	}
	for (size_t i = 0; i < n_gone; i++)
		engine_caller_gone(p->engine, gone[i], now_us, now_s);
	free(gone);
}

/*
 * Refresh-ahead: keys callers are using that expire soon become background
 * flights, which go only on quota no caller is waiting for. A few at a
 * time, so the background class stays short.
 */
static void refresh_ahead(struct proxy *p, int64_t now_us, int64_t now_s)
{
	struct cams_key keys[PROXY_REFRESH_AHEAD_BATCH];
	size_t n;

	if (p->settings.refresh_ahead_s == 0 || engine_queue_len(p->engine) > 0)
		return;
	n = cache_refresh_candidates(p->cache, now_s, p->settings.refresh_ahead_s, keys,
				     PROXY_REFRESH_AHEAD_BATCH);
	for (size_t i = 0; i < n; i++)
		engine_refresh(p->engine, &keys[i], now_us);
}

/* A stale-while-revalidate refresh asked for earlier, unless one has finished since. */
static void refresh_stale(struct proxy *p, const struct cams_key *key, int64_t now_us,
			  int64_t now_s)
{
	struct cache_entry *e;

	if (cache_lookup(p->cache, key, now_s, &e) == 1) {
		bool moot = e->expires_at_s - now_s > (int64_t)p->settings.refresh_ahead_s;

		cache_entry_unref(e);
		if (moot)
			return;
	}
	engine_refresh(p->engine, key, now_us);
}

/*
 * A flight may have stored the key between the caller's lookup and now:
 * answer from memory if the cache changed since (no read otherwise).
 */
static bool answered_by_recent_store(struct proxy *p, struct proxy_request *req, int64_t now_s)
{
	struct cache_entry *e;
	char status[96];

	if (req->no_cache || req->generation_seen == cache_generation(p->cache))
		return false;
	if (cache_lookup(p->cache, &req->call.key, now_s, &e) != 1)
		return false;
	if (cache_entry_freshness(e, now_s, 0, 0) != CACHE_FRESH || too_old_for_caller(req, e, now_s)) {
		cache_entry_unref(e);
		return false;
	}
	snprintf(status, sizeof(status), "hit; ttl=%" PRId64, e->expires_at_s - now_s);
	engine_answer_entry(&req->call.answer,
			    e->kind == CACHE_KIND_NEGATIVE ? ENGINE_OUTCOME_HIT_NEGATIVE
							   : ENGINE_OUTCOME_HIT,
			    e, now_s, status);
	cache_entry_unref(req->call.stale);
	req->call.stale = NULL;
	req->on_done(req);
	return true;
}

static void update_gauges(struct proxy *p, int64_t now_us)
{
	struct limiter *l = engine_limiter(p->engine);
	int64_t next = limiter_next_send_us(l, now_us);

	atomic_store(&p->rl_remaining, limiter_window_remaining(l, now_us));
	atomic_store(&p->rl_reset_s, (unsigned)((next - now_us + 999999) / 1000000));
	atomic_store(&p->rl_quota, (unsigned)floor(p->settings.engine.limiter.rate));
	metrics_gauge_set(METRICS_GAUGE_QUEUE_DEPTH, (int64_t)engine_queue_len(p->engine));
	metrics_gauge_set(METRICS_GAUGE_WAITERS, (int64_t)engine_waiting(p->engine));
	metrics_gauge_set(METRICS_GAUGE_IN_FLIGHT, upstream_in_flight(p->upstream));
	metrics_gauge_set(METRICS_GAUGE_EFFECTIVE_RATE_MILLI,
			  (int64_t)llround(limiter_effective_rate(l, now_us) * 1000.0));
	metrics_gauge_set(METRICS_GAUGE_RATE_MARGIN_US, limiter_margin_us(l));
	update_redis_metrics(p);
	for (unsigned c = 0; c < QUEUE_MAX_CLIENTS && c < METRICS_MAX_CLIENTS; c++)
		metrics_client_queue_depth(c, (int64_t)engine_queue_len_client(p->engine, c));
}

static void *engine_main(void *arg)
{
	struct proxy *p = arg;
	int64_t stop_deadline_us = 0;
	struct proxy_request *inbox;

	for (;;) {
		int64_t now_us = clock_mono_us(), now_s = clock_wall_s(), wake_us;
		struct cams_key refresh[64], purges[PROXY_PURGE_RING];
		struct upstream_waitfd fds[2];
		unsigned n_refresh = 0, n_purges, n_fds;
		bool stopping;
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
		n_purges = p->purge_len;
		memcpy(purges, p->purge_ring, n_purges * sizeof(purges[0]));
		p->purge_len = 0;
		stopping = p->stopping;
		if (p->settings_pending) {
			p->settings_pending = false;
			p->settings = p->pending;
			engine_configure(p->engine, &p->settings.engine, now_us);
			p->fallback_active = false; /* the fallback rate is applied again below */
		}
		pthread_mutex_unlock(&p->lock);

		redis_service(p, NULL, 0);
		update_quota_mode(p, now_us, now_s);
		send_purges(p, purges, n_purges, now_us);

		if (stopping && !stop_deadline_us) {
			stop_deadline_us = now_us + (int64_t)p->grace_ms * 1000;
			engine_stop(p->engine, now_us, now_s);
		}
		while (inbox) {
			struct proxy_request *req = inbox;

			inbox = req->inbox_next;
			if (!stopping && answered_by_recent_store(p, req, now_s))
				continue;
			engine_submit(p->engine, &req->call, now_us, now_s);
		}
		for (unsigned i = 0; i < n_refresh && !stopping; i++)
			refresh_stale(p, &refresh[i], now_us, now_s);

		if (stopping) {
			run_actions(p, now_us, now_s);
			if (engine_in_flight(p->engine) == 0 || now_us >= stop_deadline_us)
				break;
		} else {
			engine_tick(p->engine, now_us, now_s);
			if (now_us >= p->next_disconnect_check_us) {
				check_departures(p, now_us, now_s);
				p->next_disconnect_check_us = now_us + PROXY_DISCONNECT_CHECK_US;
			}
			if (now_us >= p->next_maintain_us) {
				uint64_t count;

				if (cache_maintain(p->cache, now_s) < 0)
					metrics_count(METRICS_CACHE_ERRORS);
				if (cache_count(p->cache, &count) == 0)
					metrics_gauge_set(METRICS_GAUGE_CACHE_ENTRIES, (int64_t)count);
				refresh_ahead(p, now_us, now_s);
				engine_tick(p->engine, now_us, now_s);
				p->next_maintain_us = now_us + PROXY_MAINTAIN_US;
			}
			run_actions(p, now_us, now_s);
		}
		update_gauges(p, now_us);

		/* Sleep until the next thing that can happen. */
		wake_us = now_us + PROXY_IDLE_POLL_MS * 1000;
		if (!stopping) {
			int64_t t = engine_next_wake_us(p->engine, now_us);

			if (t < wake_us)
				wake_us = t;
			if (engine_waiting(p->engine) > 0 && p->next_disconnect_check_us < wake_us)
				wake_us = p->next_disconnect_check_us;
			if (p->next_maintain_us < wake_us)
				wake_us = p->next_maintain_us;
		} else if (stop_deadline_us < wake_us) {
			wake_us = stop_deadline_us;
		}
		if (redis_wake_us(p) < wake_us)
			wake_us = redis_wake_us(p);
		timeout_ms = wake_us > now_us ? (int)((wake_us - now_us + 999) / 1000) : 0;
		n_fds = redis_waitfds(p, fds);
		if (upstream_poll_fds(p->upstream, fds, n_fds, timeout_ms, on_upstream_done, p) < 0)
			log_error("upstream_poll_failed", "detail=%s", "curl_multi_poll");
		redis_service(p, fds, n_fds);
		/* Answers the upstream brought are handed back now, not next turn. */
		run_actions(p, clock_mono_us(), clock_wall_s());
	}

	/*
	 * The end of the stop: from here submissions are answered by
	 * proxy_submit() itself; whatever is still inside (a call past the
	 * grace, the last inbox) is answered 503 here, exactly once.
	 */
	pthread_mutex_lock(&p->lock);
	p->closed = true;
	inbox = p->inbox_head;
	p->inbox_head = p->inbox_tail = NULL;
	pthread_mutex_unlock(&p->lock);
	while (inbox) {
		struct proxy_request *req = inbox;

		inbox = req->inbox_next;
		engine_submit(p->engine, &req->call, clock_mono_us(), clock_wall_s());
	}
	engine_abort(p->engine, clock_wall_s());
	run_actions(p, clock_mono_us(), clock_wall_s());
	update_gauges(p, clock_mono_us());
	return NULL;
}

/* ---- lifecycle --------------------------------------------------------------- */

/* The two connections, the scope and the host id (nothing is sent yet). */
static int redis_setup(struct proxy *p, const struct config *cfg, struct signer *signer,
		       char *errbuf, size_t errbuf_size)
{
	char password[REDIS_PASSWORD_MAX + 1], channel[REDIS_NAME_MAX + 64];
	struct redis_options ro = {
		.url = cfg->redis,
		.command_timeout_ms = cfg->redis_timeout_ms,
		.connect_timeout_ms = 4 * cfg->redis_timeout_ms,
		.backoff_min_ms = 100,
		.backoff_max_ms = 5000,
	};
	int rc;

	if (cfg->quota_scope[0])
		snprintf(p->scope, sizeof(p->scope), "%s", cfg->quota_scope);
	else
		signer_access_key_id(signer, p->scope, sizeof(p->scope));
	if (config_host_id(cfg, p->host_id, sizeof(p->host_id)) < 0 ||
	    shared_channel(p->scope, channel, sizeof(channel)) < 0) {
		snprintf(errbuf, errbuf_size,
			 "redis: the quota scope and host id must be 1 to 128 of [A-Za-z0-9._:-]");
		return -EINVAL;
	}
	rc = redis_load_password(getenv("CREDENTIALS_DIRECTORY"), NULL, password, sizeof(password),
				 errbuf, errbuf_size);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	ro.password = rc == 0 ? password : NULL;
	rc = redis_new(&ro, &p->redis, errbuf, errbuf_size);
	if (rc == 0) {
		ro.subscribe = channel;
		ro.on_message = on_notice;
		ro.message_cookie = p;
		rc = redis_new(&ro, &p->sub, errbuf, errbuf_size);
	}
	explicit_bzero(password, sizeof(password));
	if (rc < 0)
		return rc;
	p->fallback_rate = cfg->redis_fallback_rate;
	p->redis_connect_ms = ro.connect_timeout_ms;
	p->redis_down_since_us = clock_mono_us();
	p->mode = METRICS_QUOTA_SHARED;
	metrics_set_quota_mode(METRICS_QUOTA_SHARED);
	/* Until the first connection is ready, callers wait (for its connect timeout). */
	engine_set_gate(p->engine, ENGINE_GATE_GRANTS, clock_mono_us(), clock_wall_s());
	log_info("redis", "url=%s scope=%s host_id=%s fallback_rate=%g", cfg->redis, p->scope,
		 p->host_id, p->fallback_rate);
	return 0;
}

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
	p->engine = engine_new(&p->settings.engine, clock_mono_us());
	if (cfg->redis[0]) {
		rc = redis_setup(p, cfg, signer, errbuf, errbuf_size);
		if (rc < 0) {
			proxy_free(p);
			return rc;
		}
	}
	atomic_store(&p->stale_while_revalidate_s, cfg->stale_while_revalidate_s);
	atomic_store(&p->stale_if_error_s, cfg->stale_if_error_s);
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
	/*
	 * Calls still on the wire when the grace ran out had their callers
	 * answered; their transfers go with the upstream client.
	 */
	/* Their callbacks (-ECANCELED) still reach the engine: before it goes. */
	p->redis_closing = true;
	redis_free(p->redis);
	redis_free(p->sub);
	upstream_free(p->upstream);
	engine_free(p->engine);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void proxy_reconfigure(struct proxy *p, const struct config *cfg)
{
	pthread_mutex_lock(&p->lock);
	settings_from_config(&p->pending, cfg);
	p->settings_pending = true;
	pthread_mutex_unlock(&p->lock);
	atomic_store(&p->stale_while_revalidate_s, cfg->stale_while_revalidate_s);
	atomic_store(&p->stale_if_error_s, cfg->stale_if_error_s);
	upstream_wakeup(p->upstream);
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
	int rc = cache_delete(p->cache, key);

	/* The other hosts' too (a notice), from the engine thread that owns Redis. */
	if (p->redis) {
		pthread_mutex_lock(&p->lock);
		if (p->purge_len < PROXY_PURGE_RING)
			p->purge_ring[p->purge_len++] = *key;
		pthread_mutex_unlock(&p->lock);
		upstream_wakeup(p->upstream);
	}
	return rc;
}
