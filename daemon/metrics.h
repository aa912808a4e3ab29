/*
 * metrics.h -- the daemon's counters, gauges and histograms, and their
 * Prometheus text exposition. Every metric family is defined once, in the
 * table in metrics.c (name, type, labels, help), which drives the exposition
 * and feeds the documentation test.
 *
 * Counters and histograms are relaxed atomics: updating one never takes a
 * lock, so the hit path stays lock-free. Gauges owned by the engine thread
 * (queue depth, effective rate, ...) are stored here as atomics too and read
 * when /metrics is rendered.
 * Never logs. Threads: any.
 */
#ifndef CAMSKEYD_METRICS_H
#define CAMSKEYD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "envelope.h"

enum metrics_result {
	METRICS_RESULT_HIT = 0,
	METRICS_RESULT_MISS,
	METRICS_RESULT_STALE,
	METRICS_RESULT_NOT_MODIFIED,
	METRICS_RESULT_NEGATIVE,
	METRICS_RESULT_ERROR,
	METRICS_RESULT_BAD_REQUEST,
	METRICS_RESULT_COUNT,
};

enum metrics_counter {
	METRICS_QUOTA_REJECTED,       /* 503 Proxy.QuotaWait */
	METRICS_QUEUE_FULL,           /* 503 Proxy.QueueFull */
	METRICS_THROTTLES,            /* System.LimitControl received */
	METRICS_RETRIES,              /* upstream calls that were retries */
	METRICS_FLIGHTS_JOINED,       /* callers that joined a flight in progress */
	METRICS_REFRESHES,            /* background refreshes sent */
	METRICS_CLIENT_GONE,          /* waiting callers that disconnected */
	METRICS_KEY_ROTATIONS,        /* a key changed upstream */
	METRICS_CACHE_ERRORS,
	METRICS_UNAUTHORIZED,         /* 401 */
	METRICS_SLOW_CLIENTS,         /* connections ended: request head too late */
	METRICS_HTTP_REQUESTS,        /* every request that reached its teardown, whatever its answer */
	/* many hosts (Redis) */
	METRICS_REDIS_COMMANDS,       /* commands sent to Redis */
	METRICS_REDIS_RECONNECTS,     /* connections started after the first */
	METRICS_GRANTS,               /* shared limiter grants received */
	METRICS_GRANTS_DISCARDED,     /* grants thrown away unsent */
	METRICS_GRANTS_REFUSED,       /* grant requests refused (pending, horizon) */
	METRICS_QUOTA_UNAVAILABLE,    /* 503 Proxy.SharedQuotaUnavailable */
	METRICS_SHARED_HITS,          /* misses answered from the shared tier */
	METRICS_SHARED_JOINS,         /* ... after waiting for another host's call */
	METRICS_SHARED_FILLS,         /* entries this host published */
	METRICS_SHARED_NOTICES,       /* notices from other hosts applied */
	METRICS_COUNTER_COUNT,
};

enum metrics_gauge {
	METRICS_GAUGE_QUEUE_DEPTH,        /* flights waiting for quota */
	METRICS_GAUGE_WAITERS,            /* callers waiting (suspended) */
	METRICS_GAUGE_IN_FLIGHT,          /* upstream calls in progress */
	METRICS_GAUGE_EFFECTIVE_RATE_MILLI, /* limiter rate x 1000 */
	METRICS_GAUGE_RATE_MARGIN_US,
	METRICS_GAUGE_CACHE_ENTRIES,
	METRICS_GAUGE_READY,
	METRICS_GAUGE_RELOAD_OK,          /* 1: the last (re)load applied, 0: refused */
	METRICS_GAUGE_RELOAD_TIME_S,      /* wall clock of the last applied (re)load */
	METRICS_GAUGE_START_TIME_S,       /* wall clock of the start */
	METRICS_GAUGE_REDIS_UP,           /* 1: the Redis connection is ready */
	METRICS_GAUGE_COUNT,
};

enum metrics_histogram {
	METRICS_HIST_REQUEST,       /* request duration, seconds */
	METRICS_HIST_QUOTA_WAIT,    /* time a flight waited for quota */
	METRICS_HIST_UPSTREAM,      /* upstream call duration */
	METRICS_HIST_REDIS_RTT,     /* a limiter request's round trip */
	METRICS_HIST_COUNT,
};

void metrics_init(void);

void metrics_result(enum metrics_result r);
/* An upstream call ended so (envelope_classify() sorts the answers). */
void metrics_upstream(enum envelope_outcome outcome);
void metrics_count(enum metrics_counter c);
void metrics_gauge_set(enum metrics_gauge g, int64_t value);
void metrics_observe_us(enum metrics_histogram h, int64_t duration_us);
/*
 * Per-client series, by client id (clients.h; ids >= METRICS_MAX_CLIENTS
 * are ignored). They are rendered for every id the registry has named,
 * under that name.
 */
#define METRICS_MAX_CLIENTS 128
void metrics_client_call(unsigned client);
void metrics_client_queue_depth(unsigned client, int64_t depth);

/* Redis errors by kind (camskeyd_redis_errors_total{kind}). */
enum metrics_redis_error {
	METRICS_REDIS_TIMEOUT,
	METRICS_REDIS_DISCONNECT,
	METRICS_REDIS_PROTOCOL,
	METRICS_REDIS_ERROR_COUNT,
};
void metrics_redis_errors(enum metrics_redis_error kind, uint64_t n);

/* Who decides upstream sends (camskeyd_quota_mode{mode}, /readyz). */
enum metrics_quota_mode {
	METRICS_QUOTA_LOCAL = 0,  /* no Redis: this host alone */
	METRICS_QUOTA_SHARED,     /* the shared limiter in Redis */
	METRICS_QUOTA_CLOSED,     /* Redis unreachable: no upstream call (fail closed) */
	METRICS_QUOTA_FALLBACK,   /* Redis unreachable: this host's fallback budget */
	METRICS_QUOTA_MODE_COUNT,
};
void metrics_set_quota_mode(enum metrics_quota_mode mode);
enum metrics_quota_mode metrics_quota_mode(void);
/* "local", "shared", "closed", "fallback". */
const char *metrics_quota_mode_name(enum metrics_quota_mode mode);

/* Render everything in Prometheus text format 0.0.4. */
void metrics_render(struct buf *out);

/* Read back (tests, /readyz). */
uint64_t metrics_result_value(enum metrics_result r);
uint64_t metrics_counter_value(enum metrics_counter c);
int64_t metrics_gauge_value(enum metrics_gauge g);

/* A metric family as the table in metrics.c defines it. */
enum metrics_type {
	METRICS_TYPE_COUNTER,
	METRICS_TYPE_GAUGE,
	METRICS_TYPE_HISTOGRAM,
};

struct metrics_family {
	const char *name;     /* "camskeyd_requests_total" */
	enum metrics_type type;
	const char *labels;   /* label names, comma-separated: "result"; "" for none */
	const char *help;     /* the # HELP text */
};

/* Every family, in exposition order (the docs test walks it). Never fails. */
const struct metrics_family *metrics_families(size_t *ret_count);
/* "counter", "gauge" or "histogram". */
const char *metrics_type_name(enum metrics_type type);
/* Every family's name, in the same order. */
const char *const *metrics_names(unsigned *ret_count);

#endif
