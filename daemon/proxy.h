/*
 * proxy.h -- a key lookup's whole path: cache, engine, upstream call,
 * store, answer. The only module that knows that path.
 *
 * The hit path (proxy_lookup) runs on the calling HTTP thread and touches
 * only the cache's memory layer. A miss goes to one engine thread: it owns
 * the pure decision engine (engine.h: flights, queue, limiter, deadlines),
 * the signer's use, the libcurl multi loop and the cache writes. HTTP
 * threads hand it requests through a locked inbox; it feeds the engine
 * events with the time, carries out the engine's actions (sign and send,
 * answer) and hands answers back through each request's on_done callback.
 * A waiting caller therefore holds no thread: its connection is suspended
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
#include "engine.h"
#include "signer.h"

enum proxy_verdict {
	PROXY_ANSWERED = 0,  /* the answer is in req->call.answer; respond now */
	PROXY_PENDING,       /* suspend, then proxy_submit(); on_done follows */
};

struct proxy_request {
	/*
	 * Set by the caller (http): call.key, call.client (clients registry
	 * id), call.max_wait_ms, call.no_stale, call.request_id. The answer
	 * comes back in call.answer, its outcome recorded for the one count
	 * at teardown.
	 */
	struct engine_caller call;
	bool no_cache;              /* Cache-Control: no-cache (or max-age the entry exceeds) */
	int64_t max_age_s;          /* Cache-Control: max-age=N (N > 0): older entries are revalidated; -1 when absent */
	bool only_if_cached;
	int fd;                     /* the connection's socket, to notice a departed client; -1 if unknown */
	void (*on_done)(struct proxy_request *req); /* engine thread (or the submitter during a stop) */
	void *cls;                  /* for on_done */

	/* ---- private to proxy.c ---- */
	struct proxy_request *inbox_next;
	uint64_t generation_seen;   /* the cache's generation when the lookup missed */
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
 * Start a lookup: fill req->call.key etc. first. Answers from the cache's
 * memory layer on a fresh hit (or a stale one while a refresh is queued),
 * else returns PROXY_PENDING; the caller then suspends the connection and
 * calls proxy_submit(). now_us is monotonic, now_s wall-clock seconds.
 */
enum proxy_verdict proxy_lookup(struct proxy *p, struct proxy_request *req, int64_t now_us,
				int64_t now_s);
/*
 * Hand a pending request to the engine. on_done will be called exactly
 * once: from the engine thread, or at once from this thread when the
 * engine has stopped (503 Proxy.ShuttingDown).
 */
void proxy_submit(struct proxy *p, struct proxy_request *req);
/* Release what the answer holds (entry reference, body, stale fallback). */
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
