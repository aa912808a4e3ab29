/*
 * proxy.h -- a key lookup's whole path: cache, flights, limiter queue,
 * upstream call, store, answer. The only module that knows that path.
 *
 * The hit path (proxy_lookup) runs on the calling HTTP thread and touches
 * only the cache's memory layer. Everything else runs on one engine thread
 * that owns the flight table, the queue, the limiter, the signer's use and
 * the upstream client: HTTP threads hand it requests through a locked inbox
 * and it hands answers back through each request's on_done callback. A
 * waiting caller therefore holds no thread: its connection is suspended
 * until on_done runs.
 *
 * Logs: upstream failures, throttles, key rotations, cache errors (once, here).
 * Threads: proxy_lookup/proxy_submit from any thread; the rest from main.
 */
#ifndef CAMSKEYD_PROXY_H
#define CAMSKEYD_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "cams.h"
#include "config.h"
#include "flight.h"
#include "signer.h"

enum proxy_verdict {
	PROXY_ANSWERED = 0,  /* the result fields are set; respond now */
	PROXY_PENDING,       /* suspend, then proxy_submit(); on_done follows */
};

struct proxy_request {
	/* ---- set by the caller (http) ---- */
	struct cams_key key;
	unsigned client;            /* client id (clients.h) */
	uint32_t max_wait_ms;       /* how long this caller waits for quota */
	bool no_cache;              /* Cache-Control: no-cache */
	bool no_stale;              /* refuses stale answers */
	bool only_if_cached;
	int fd;                     /* the connection's socket, to notice a departed client; -1 if unknown */
	char request_id[24];        /* our id for this request (X-Request-Id) */
	void (*on_done)(struct proxy_request *req); /* engine thread; then the engine forgets req */
	void *cls;                  /* for on_done */

	/* ---- the answer ---- */
	int http_status;
	struct cache_entry *entry;  /* a reference when answered from an entry (key or negative) */
	char *body;                 /* an error envelope when no entry; malloc'd */
	size_t body_len;
	char cache_status[96];      /* RFC 9211 value after "camskeyd; " */
	int retry_after_s;          /* > 0: send Retry-After */
	int64_t age_s;              /* Age header when entry != NULL */

	/* ---- private to proxy.c ---- */
	struct flight_waiter waiter;
	struct proxy_request *inbox_next;
	size_t heap_index;
	int64_t deadline_us;
	int64_t submitted_us;
	struct cache_entry *stale;  /* fallback for stale-if-error */
};

struct proxy;

/*
 * Create the engine (not started). cache, signer are borrowed and must
 * outlive the proxy. 0 or -EINVAL with a reason in errbuf.
 */
int proxy_new(const struct config *cfg, struct cache *cache, struct signer *signer,
	      struct proxy **ret, char *errbuf, size_t errbuf_size);
/* Start the engine thread. 0 or -errno. */
int proxy_start(struct proxy *p);
/*
 * Stop: no new submissions; in-flight upstream calls may finish until
 * grace_ms, then every waiting request is answered 503 and the thread ends.
 */
void proxy_stop(struct proxy *p, unsigned grace_ms);
void proxy_free(struct proxy *p);

/*
 * Apply a new configuration (rate, TTLs, client weights, ...). Any thread.
 * Client weights are read from clients_current(): clients_publish(cfg)
 * comes first (as before proxy_new()).
 */
void proxy_reconfigure(struct proxy *p, const struct config *cfg);

/*
 * Start a lookup: fill req->key etc. first. Answers from the cache on a
 * fresh hit (or a stale one while a refresh is queued), else returns
 * PROXY_PENDING; the caller then suspends the connection and calls
 * proxy_submit(). now_us is monotonic, now_s wall-clock seconds.
 */
enum proxy_verdict proxy_lookup(struct proxy *p, struct proxy_request *req, int64_t now_us,
				int64_t now_s);
/* Hand a pending request to the engine. on_done will be called exactly once. */
void proxy_submit(struct proxy *p, struct proxy_request *req);
/* Release what the answer holds (entry reference, body). */
void proxy_request_clear(struct proxy_request *req);

/*
 * The shared upstream quota as the engine last saw it, for the RateLimit
 * and RateLimit-Policy response headers. Any thread.
 */
void proxy_ratelimit(struct proxy *p, unsigned *ret_quota, unsigned *ret_remaining,
		     unsigned *ret_reset_s);

/* Monotonic time of the engine loop's last turn (for the watchdog). */
int64_t proxy_heartbeat_us(struct proxy *p);

/* Readiness (cache open, credentials loaded, engine running). */
bool proxy_ready(struct proxy *p);

/* Render /metrics (refreshes engine gauges first). */
void proxy_render_metrics(struct proxy *p, struct buf *out);

/* Delete a key from the cache (admin purge). 1 removed, 0 absent, <0 error. */
int proxy_purge(struct proxy *p, const struct cams_key *key);

#endif
