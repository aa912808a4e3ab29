/*
 * engine.h -- the decisions of a lookup that missed the cache, as a pure
 * state machine: the flight table (one upstream call per key), the fair
 * queue, the limiter, caller deadlines, retries and throttle handling.
 *
 * The engine performs no I/O. It reads no clock (every call takes the
 * monotonic time in microseconds, now_us, and where an answer's Age or a
 * stale entry's freshness depends on it the wall-clock time, now_s), starts
 * no thread, never logs and knows nothing of libcurl, libmicrohttpd or
 * SQLite. Inputs are events -- a caller arrived, a caller left, a refresh
 * is wanted, the upstream answered, time is now T, stop -- and the output is
 * a list of actions the driver drains with engine_next_action():
 *
 *   ENGINE_ACTION_SEND    sign and start an upstream call for this flight,
 *                         then report its outcome with engine_upstream_done()
 *                         (a call that cannot even be started is reported as
 *                         a failure at once);
 *   ENGINE_ACTION_ANSWER  this caller's answer is in caller->answer; hand it
 *                         back. The engine has forgotten the caller.
 *   ENGINE_ACTION_RESERVE (gate GRANTS) ask the shared limiter for one grant;
 *                         report it with engine_grant() or
 *                         engine_grant_failed(), exactly once;
 *   ENGINE_ACTION_CLAIM   (settings.shared) look the key up in the shared
 *                         tier and take its lease when absent; report with
 *                         engine_claim_done(key, claim_seq, ...).
 *
 * and engine_next_wake_us() says when time next matters (a send slot, a
 * deadline). The driver (proxy.c) owns the thread, the inbox, the libcurl
 * multi loop and the cache; a unit test drives the engine with a fake clock
 * and a fake upstream (tests/unit/test_engine.c).
 *
 * Rules the engine keeps:
 *  - Every submitted caller gets exactly one ANSWER action, at the latest
 *    from engine_abort(); after it the engine never touches the caller.
 *  - A flight is queued (FLIGHT_QUEUED) or on the wire (FLIGHT_SENDING); it
 *    is in the queue iff queued. Only the limiter decides when a call goes,
 *    retries included; every SEND is recorded by the limiter when decided.
 *  - A caller waiting for quota has a deadline (submitted_us + max_wait_ms);
 *    one whose flight is on the wire waits for the answer (the upstream
 *    timeout bounds it). A caller whose wait the queue and limiter predict
 *    it cannot meet is refused at once, with that prediction as Retry-After.
 *  - A flight with callers is foreground; one nobody waits for (a refresh,
 *    or one whose callers all left) is background and goes only on quota no
 *    caller waits for. A caller joining a background flight makes it
 *    foreground, whether it is queued or on the wire.
 *  - System.LimitControl backs the limiter off and puts the flight back at
 *    the head of the queue (re-signed by the driver when it is sent again)
 *    while attempts remain and some caller can still wait until the next
 *    slot; the others are answered 503 now.
 *  - Failures fall back to a caller's stale entry where the caller accepts
 *    one and the entry is within stale-while-revalidate or stale-if-error.
 *
 * Many hosts (issue #14). The gate says who decides when a call may go:
 *  - LOCAL: the local limiter alone (no Redis; or a fallback budget, the
 *    driver configuring the limiter's rate);
 *  - GRANTS: the shared limiter. A send needs a grant that is due
 *    (send_at <= now <= latest); the engine asks for at most
 *    grants_max_pending at a time (held + asked), never more than flights
 *    queued; a grant past its latest time is thrown away unsent, never used
 *    late. The first grant after sends under LOCAL is asked no earlier
 *    than one window (1 s + margin) after the last of them;
 *  - CLOSED: no send at all (fail closed): callers waiting for quota, and
 *    every new miss, are answered 503 Proxy.SharedQuotaUnavailable (or
 *    their stale entry where allowed); calls on the wire finish.
 * With settings.shared a new flight first CLAIMs its key: a HIT in the
 * shared tier answers its callers (ENGINE_OUTCOME_HIT_SHARED); OWNED (the
 * lease is this flight's) or UNAVAILABLE (no Redis) queue it as usual;
 * HELD (another host is fetching it) parks it REMOTE until the driver's
 * retry time or a notice (engine_claim_poke), then it claims again. Its
 * callers wait as for quota: their wait limit bounds it.
 *
 * Threads: one owner (the engine thread, or a test).
 */
#ifndef CAMSKEYD_ENGINE_H
#define CAMSKEYD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "cams.h"
#include "flight.h"
#include "limiter.h"
#include "queue.h"

/*
 * What a request came to: decided once, where it is decided (the hit path,
 * the engine, the front end), and counted once when the request ends.
 */
enum engine_outcome {
	ENGINE_OUTCOME_NONE = 0,
	ENGINE_OUTCOME_HIT,            /* fresh entry from the cache */
	ENGINE_OUTCOME_HIT_STALE,      /* stale entry while a refresh runs (stale-while-revalidate) */
	ENGINE_OUTCOME_HIT_NEGATIVE,   /* cached definitive upstream error */
	ENGINE_OUTCOME_NOT_MODIFIED,   /* 304 (decided by the front end) */
	ENGINE_OUTCOME_MISS,           /* fetched from the upstream */
	ENGINE_OUTCOME_MISS_NEGATIVE,  /* the upstream answered a definitive error */
	ENGINE_OUTCOME_STALE_FALLBACK, /* stale entry instead of an error (stale-if-error) */
	ENGINE_OUTCOME_QUOTA_WAIT,     /* 503 Proxy.QuotaWait */
	ENGINE_OUTCOME_QUEUE_FULL,     /* 503 Proxy.QueueFull */
	ENGINE_OUTCOME_THROTTLED,      /* 503 System.LimitControl after bounded retries */
	ENGINE_OUTCOME_UPSTREAM_ERROR, /* 502/504 */
	ENGINE_OUTCOME_SHUTTING_DOWN,  /* 503 Proxy.ShuttingDown */
	ENGINE_OUTCOME_NOT_CACHED,     /* 504 Proxy.NotCached (only-if-cached) */
	ENGINE_OUTCOME_GONE,           /* the caller left before its answer */
	ENGINE_OUTCOME_BAD_REQUEST,    /* 4xx decided by the front end */
	ENGINE_OUTCOME_UNAUTHORIZED,   /* 401 decided by the front end */
	ENGINE_OUTCOME_HIT_SHARED,     /* a local miss answered from the shared tier (Redis) */
	ENGINE_OUTCOME_QUOTA_UNAVAILABLE, /* 503 Proxy.SharedQuotaUnavailable (fail closed) */
	ENGINE_OUTCOME_COUNT,
};

/* The answer a caller gets. Released with engine_answer_clear(). */
struct engine_answer {
	enum engine_outcome outcome;
	int http_status;            /* 0 with ENGINE_OUTCOME_GONE: nobody listens */
	struct cache_entry *entry;  /* a reference when answered from an entry */
	char *body;                 /* an error envelope when entry is NULL; malloc'd */
	size_t body_len;
	char cache_status[96];      /* RFC 9211 value after "camskeyd; " */
	char code[LIMIT_CODE_MAX + 1]; /* the envelope's Code ("OK" for a key) */
	int retry_after_s;          /* > 0: send Retry-After */
	int64_t age_s;              /* Age when entry != NULL */
};

/* Release what an answer holds (entry reference, body). */
void engine_answer_clear(struct engine_answer *a);

/*
 * Fill a with an error envelope (RequestId request_id, or fallback_id when
 * that is NULL or empty). Pure helper shared with the hit path.
 */
void engine_answer_error(struct engine_answer *a, enum engine_outcome outcome, int http_status,
			 const char *request_id, const char *fallback_id, const char *code,
			 const char *message, int retry_after_s, const char *cache_status);
/* Fill a with a reference to e (taken over by a), its Age at now_s. */
void engine_answer_entry(struct engine_answer *a, enum engine_outcome outcome,
			 struct cache_entry *e, int64_t now_s, const char *cache_status);

/*
 * A caller of the engine; embedded in the driver's request. The driver
 * fills the input fields before engine_submit() and reads `answer` when the
 * ANSWER action names it.
 */
struct engine_caller {
	/* ---- input ---- */
	struct cams_key key;
	unsigned client;            /* < QUEUE_MAX_CLIENTS: fair share and weight */
	uint32_t max_wait_ms;       /* how long this caller waits for quota (0: not at all) */
	int64_t submitted_us;       /* when the caller arrived (monotonic) */
	bool no_stale;              /* refuses stale answers */
	bool revalidate;            /* no-cache or max-age: not the shared tier's copy */
	struct cache_entry *stale;  /* a reference: fallback if the upstream fails, or NULL */
	char request_id[24];        /* RequestId of envelopes the engine renders */

	/* ---- output ---- */
	struct engine_answer answer;

	/* ---- private to engine.c ---- */
	struct flight_waiter waiter;
	size_t heap_index;
	int64_t deadline_us;
	struct engine_caller *answered_next;
};

/* The configuration the engine decides by; swapped with engine_configure(). */
struct engine_settings {
	uint64_t stale_while_revalidate_s;
	uint64_t stale_if_error_s;
	unsigned queue_max;          /* keys callers wait for quota for; refreshes use only room left */
	unsigned upstream_retries;   /* throttled attempts retried at most this often */
	struct limiter_options limiter;
	unsigned weights[QUEUE_MAX_CLIENTS]; /* per client, 1..1000 */
	bool shared;                 /* claim new flights in the shared tier first */
	unsigned grants_max_pending; /* GRANTS: grants held or asked at once, >= 1 */
};

/* Who decides when a call may go; see the top of this file. */
enum engine_gate {
	ENGINE_GATE_LOCAL = 0,
	ENGINE_GATE_GRANTS,
	ENGINE_GATE_CLOSED,
};

/* What a claim found (engine_claim_done). */
enum engine_claim {
	ENGINE_CLAIM_HIT = 1,    /* the shared tier has the entry */
	ENGINE_CLAIM_OWNED,      /* absent; the lease is this flight's */
	ENGINE_CLAIM_HELD,       /* absent; another host holds the lease */
	ENGINE_CLAIM_UNAVAILABLE,/* no answer from Redis: fetch locally */
};

/* How a flight's upstream call ended, as the driver classified it. */
enum engine_reply_kind {
	ENGINE_REPLY_ENTRY = 0,   /* a key or a definitive error, as `entry` */
	ENGINE_REPLY_THROTTLED,   /* System.LimitControl */
	ENGINE_REPLY_FAILED,      /* anything else: no answer, bad answer, refused, ... */
};

struct engine_reply {
	enum engine_reply_kind kind;
	/*
	 * ENTRY: borrowed (the engine takes a reference per caller).
	 * kind CACHE_KIND_NEGATIVE answers ENGINE_OUTCOME_MISS_NEGATIVE.
	 */
	struct cache_entry *entry;
	bool stored;                 /* ENTRY: the cache now holds it */
	/* THROTTLED and FAILED: the error callers get (borrowed strings). */
	int http_status;             /* FAILED: 502 or 504 */
	const char *code;
	const char *message;
	const char *request_id;      /* the upstream's, or NULL */
	const char *stale_reason;    /* detail= of a stale fallback: "upstream-error", ... */
	/*
	 * What the limiter learns (-1 where unknown): rate-limit hints, and
	 * what moved the call's arrival -- the time from the send decision
	 * until the request was on the wire, and the connection's TCP RTT
	 * variance. Never the whole call's latency: the upstream's processing
	 * time comes after the arrival it counts.
	 */
	int64_t ratelimit_remain;
	int64_t ratelimit_time_left_ms;
	int64_t wire_delay_us;
	int64_t rtt_var_us;
};

enum engine_action_kind {
	ENGINE_ACTION_SEND = 1,
	ENGINE_ACTION_ANSWER,
	ENGINE_ACTION_RESERVE,
	ENGINE_ACTION_CLAIM,
};

struct engine_action {
	enum engine_action_kind kind;
	struct flight *flight;         /* SEND: key, attempts (1 on the first call), client, background */
	struct engine_caller *caller;  /* ANSWER */
	int64_t quota_wait_us;         /* SEND: how long the flight waited for quota */
	/* CLAIM (copies: the flight may be gone before the answer comes) */
	struct cams_key key;
	uint64_t claim_seq;
	bool background;               /* a refresh: a shared entry must be newer */
	bool revalidate;               /* a caller refuses the shared tier's copy */
};

/* Counters of what the engine did, for metrics and tests. */
struct engine_stats {
	uint64_t sends;
	uint64_t retries;         /* sends that were retries after a throttle */
	uint64_t refreshes;       /* sends of background flights */
	uint64_t joined;          /* callers that joined a flight */
	uint64_t throttles;
	uint64_t departed;        /* callers gone before their answer */
	uint64_t grants;          /* grants received (GRANTS) */
	uint64_t grants_used;     /* grants a send used */
	uint64_t grants_discarded;/* grants thrown away unsent (late, unneeded, gate changed) */
	uint64_t shared_hits;     /* callers answered from the shared tier */
	uint64_t shared_joins;    /* ... of them, after waiting for another host's call */
	uint64_t quota_unavailable; /* callers answered 503 Proxy.SharedQuotaUnavailable */
};

struct engine;

/* A new engine at now_us. Never fails (allocation aborts). */
struct engine *engine_new(const struct engine_settings *s, int64_t now_us);
/*
 * Free the engine and every flight left (callers must have been answered:
 * engine_abort() first). NULL ok.
 */
void engine_free(struct engine *e);
/* New settings (reload). Keeps flights, queue, limiter history. */
void engine_configure(struct engine *e, const struct engine_settings *s, int64_t now_us);

/*
 * A caller missed the cache (or must revalidate): join the key's flight or
 * start one. May answer at once (queue full, a wait the queue cannot meet,
 * stopping). Takes over c->stale.
 */
void engine_submit(struct engine *e, struct engine_caller *c, int64_t now_us, int64_t now_s);
/*
 * The key is wanted in the background (stale-while-revalidate, refresh
 * ahead): a background flight unless one exists or the queue is full.
 * true if a flight was started.
 */
bool engine_refresh(struct engine *e, const struct cams_key *key, int64_t now_us);
/* The caller's connection is gone: it leaves its flight (answered GONE). */
void engine_caller_gone(struct engine *e, struct engine_caller *c, int64_t now_us,
			int64_t now_s);
/* The upstream call of flight f (from a SEND) ended with r. */
void engine_upstream_done(struct engine *e, struct flight *f, const struct engine_reply *r,
			  int64_t now_us, int64_t now_s);
/*
 * The gate (see the top). To CLOSED: callers waiting for quota or for the
 * shared tier are answered now; grants held are thrown away.
 */
void engine_set_gate(struct engine *e, enum engine_gate g, int64_t now_us, int64_t now_s);
enum engine_gate engine_gate(const struct engine *e);
/*
 * A RESERVE was granted: the slot may be used from send_at_us to latest_us
 * (monotonic); outside it the grant is thrown away.
 */
void engine_grant(struct engine *e, int64_t send_at_us, int64_t latest_us, int64_t now_us);
/* A RESERVE was refused or failed: ask again no earlier than retry_at_us. */
void engine_grant_failed(struct engine *e, int64_t retry_at_us, int64_t now_us);
/*
 * A CLAIM's answer. entry (HIT) is borrowed. retry_at_us (HELD): when to
 * claim again. true if the flight took it; false if the claim was stale
 * (the flight is gone or claimed again): with OWNED the driver gives the
 * lease back.
 */
bool engine_claim_done(struct engine *e, const struct cams_key *key, uint64_t claim_seq,
		       enum engine_claim result, struct cache_entry *entry, int64_t retry_at_us,
		       int64_t now_us, int64_t now_s);
/* A notice for key: a REMOTE flight claims again now. */
void engine_claim_poke(struct engine *e, const struct cams_key *key, int64_t now_us);

/* Time is now: send what the limiter allows, refuse callers past their deadline. */
void engine_tick(struct engine *e, int64_t now_us, int64_t now_s);

/*
 * Stop: from now on every submission is answered 503 Proxy.ShuttingDown at
 * once, callers waiting for quota are answered so now and queued flights
 * dropped; calls on the wire may still end with engine_upstream_done().
 */
void engine_stop(struct engine *e, int64_t now_us, int64_t now_s);
/*
 * The end of a stop: every caller still waiting (for a call on the wire)
 * is answered 503 Proxy.ShuttingDown, pending SENDs are dropped and every
 * flight is forgotten (the driver abandons their transfers).
 */
void engine_abort(struct engine *e, int64_t now_s);

/* The next action, removed from the list; false when there is none. */
bool engine_next_action(struct engine *e, struct engine_action *ret);
/*
 * When engine_tick() next has something to do (a send slot while flights
 * wait, the nearest caller deadline); INT64_MAX when nothing.
 */
int64_t engine_next_wake_us(struct engine *e, int64_t now_us);

/* Callers waiting for an answer, in no particular order (for departure checks). */
size_t engine_waiting(const struct engine *e);
struct engine_caller *engine_waiting_at(const struct engine *e, size_t i);

size_t engine_queue_len(const struct engine *e);
size_t engine_queue_len_client(const struct engine *e, unsigned client);
unsigned engine_in_flight(const struct engine *e);   /* flights on the wire */
size_t engine_flights(const struct engine *e);       /* queued + on the wire */
bool engine_stopping(const struct engine *e);
const struct engine_stats *engine_stats(const struct engine *e);
/* The limiter, read-only, for gauges and the RateLimit header. */
struct limiter *engine_limiter(struct engine *e);

#endif
