/*
 * metrics.c -- counters, gauges, histograms and their exposition (see metrics.h).
 *
 * Owns: static arrays of relaxed atomics, and the table of metric
 * families (METRICS_TABLE below): name, type, labels, help and where the
 * samples come from, in exposition order. Nothing here allocates on the
 * update path; rendering walks the table into one bounded buffer.
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clients.h"
#include "span.h"

#ifndef CAMSKEYD_VERSION
#define CAMSKEYD_VERSION "0.1.0"
#endif

static atomic_uint_fast64_t results[METRICS_RESULT_COUNT];
static atomic_uint_fast64_t upstream_codes[ENVELOPE_OUTCOME_COUNT];
static atomic_uint_fast64_t counters[METRICS_COUNTER_COUNT];
static atomic_int_fast64_t gauges[METRICS_GAUGE_COUNT];

/* Histogram buckets in microseconds (upper bounds). */
static const int64_t bucket_us[] = { 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
				     100000, 250000, 500000, 1000000, 2500000, 5000000,
				     10000000, 30000000 };
#define N_BUCKETS (sizeof(bucket_us) / sizeof(bucket_us[0]))

struct histogram {
	atomic_uint_fast64_t buckets[N_BUCKETS + 1]; /* last is +Inf */
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_us;
};
static struct histogram histograms[METRICS_HIST_COUNT];

static atomic_uint_fast64_t redis_errors[METRICS_REDIS_ERROR_COUNT];
static atomic_int quota_mode;

static atomic_uint_fast64_t client_calls[METRICS_MAX_CLIENTS];
static atomic_int_fast64_t client_depth[METRICS_MAX_CLIENTS];

static const char *const result_labels[METRICS_RESULT_COUNT] = {
	"hit", "miss", "stale", "not_modified", "negative", "error", "bad_request",
};

static const char *const redis_error_labels[METRICS_REDIS_ERROR_COUNT] = {
	"timeout", "disconnect", "protocol",
};

static const char *const quota_mode_labels[METRICS_QUOTA_MODE_COUNT] = {
	"local", "shared", "closed", "fallback",
};

/*
 * The table: every metric family, once, in exposition order.
 *   X(name, type, labels, source, index, decimals, help)
 * type     COUNTER, GAUGE or HISTOGRAM
 * labels   the label names, comma-separated; "" for none
 * source   where the samples come from (enum source below)
 * index    which counter, gauge or histogram, for the SRC_COUNTER,
 *          SRC_GAUGE and SRC_HISTOGRAM rows
 * decimals a gauge stored as an integer times 10^decimals (rate x 1000,
 *          margin in microseconds) is printed with that many decimals
 * It drives the exposition, metrics_families(), metrics_names() and the
 * documentation test (every family in docs/OPERATIONS.md with its type
 * and labels).
 */
#define METRICS_TABLE(X) \
	X("camskeyd_build_info", GAUGE, "version", SRC_BUILD_INFO, 0, 0, \
	  "Build information.") \
	X("camskeyd_requests_total", COUNTER, "result", SRC_RESULTS, 0, 0, \
	  "Key lookups answered, by result.") \
	X("camskeyd_upstream_calls_total", COUNTER, "code", SRC_UPSTREAM, 0, 0, \
	  "Upstream calls completed, by Code or failure.") \
	X("camskeyd_client_upstream_calls_total", COUNTER, "client", SRC_CLIENT_CALLS, 0, 0, \
	  "Upstream calls sent on behalf of each client.") \
	X("camskeyd_client_queue_depth", GAUGE, "client", SRC_CLIENT_DEPTH, 0, 0, \
	  "Upstream calls waiting for quota, per client.") \
	X("camskeyd_quota_rejected_total", COUNTER, "", SRC_COUNTER, METRICS_QUOTA_REJECTED, 0, \
	  "Callers answered 503 Proxy.QuotaWait.") \
	X("camskeyd_queue_full_total", COUNTER, "", SRC_COUNTER, METRICS_QUEUE_FULL, 0, \
	  "Callers answered 503 Proxy.QueueFull.") \
	X("camskeyd_upstream_throttles_total", COUNTER, "", SRC_COUNTER, METRICS_THROTTLES, 0, \
	  "System.LimitControl answers received.") \
	X("camskeyd_upstream_retries_total", COUNTER, "", SRC_COUNTER, METRICS_RETRIES, 0, \
	  "Upstream calls that were retries.") \
	X("camskeyd_flight_joins_total", COUNTER, "", SRC_COUNTER, METRICS_FLIGHTS_JOINED, 0, \
	  "Callers that joined an upstream call already wanted.") \
	X("camskeyd_refreshes_total", COUNTER, "", SRC_COUNTER, METRICS_REFRESHES, 0, \
	  "Background refreshes sent upstream.") \
	X("camskeyd_client_gone_total", COUNTER, "", SRC_COUNTER, METRICS_CLIENT_GONE, 0, \
	  "Waiting callers that disconnected.") \
	X("camskeyd_key_rotations_total", COUNTER, "", SRC_COUNTER, METRICS_KEY_ROTATIONS, 0, \
	  "Keys whose fingerprint changed upstream.") \
	X("camskeyd_cache_errors_total", COUNTER, "", SRC_COUNTER, METRICS_CACHE_ERRORS, 0, \
	  "Cache (SQLite) errors.") \
	X("camskeyd_unauthorized_total", COUNTER, "", SRC_COUNTER, METRICS_UNAUTHORIZED, 0, \
	  "Requests refused with 401.") \
	X("camskeyd_http_requests_total", COUNTER, "", SRC_COUNTER, METRICS_HTTP_REQUESTS, 0, \
	  "Every HTTP request answered or ended, whatever its outcome (401s, refusals, health checks included).") \
	X("camskeyd_slow_clients_total", COUNTER, "", SRC_COUNTER, METRICS_SLOW_CLIENTS, 0, \
	  "Connections ended because the request head came too late.") \
	X("camskeyd_queue_depth", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_QUEUE_DEPTH, 0, \
	  "Upstream calls waiting for quota.") \
	X("camskeyd_waiting_callers", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_WAITERS, 0, \
	  "Callers waiting for an upstream answer or quota.") \
	X("camskeyd_upstream_in_flight", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_IN_FLIGHT, 0, \
	  "Upstream calls in progress.") \
	X("camskeyd_limiter_rate", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_EFFECTIVE_RATE_MILLI, 3, \
	  "Effective upstream calls per second after back-off.") \
	X("camskeyd_limiter_margin_seconds", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_RATE_MARGIN_US, 6, \
	  "Safety margin added to the one-second window.") \
	X("camskeyd_cache_entries", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_CACHE_ENTRIES, 0, \
	  "Entries in the cache database.") \
	X("camskeyd_ready", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_READY, 0, \
	  "1 when the daemon is ready to serve.") \
	X("camskeyd_config_last_reload_successful", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_RELOAD_OK, 0, \
	  "1 when the last configuration reload was applied, 0 when it was refused.") \
	X("camskeyd_config_last_reload_success_timestamp_seconds", GAUGE, "", SRC_GAUGE, \
	  METRICS_GAUGE_RELOAD_TIME_S, 0, "When the configuration was last applied (start or reload), Unix time.") \
	X("process_start_time_seconds", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_START_TIME_S, 0, \
	  "Start time of the process since the Unix epoch in seconds.") \
	X("process_open_fds", GAUGE, "", SRC_PROCESS_FDS, 0, 0, \
	  "Number of open file descriptors.") \
	X("process_resident_memory_bytes", GAUGE, "", SRC_PROCESS_RSS, 0, 0, \
	  "Resident memory size in bytes.") \
	X("camskeyd_redis_up", GAUGE, "", SRC_GAUGE, METRICS_GAUGE_REDIS_UP, 0, \
	  "1 when the Redis connection is ready (0 also without Redis).") \
	X("camskeyd_redis_commands_total", COUNTER, "", SRC_COUNTER, METRICS_REDIS_COMMANDS, 0, \
	  "Commands sent to Redis.") \
	X("camskeyd_redis_errors_total", COUNTER, "kind", SRC_REDIS_ERRORS, 0, 0, \
	  "Redis failures, by kind: timeout, disconnect, protocol.") \
	X("camskeyd_redis_reconnects_total", COUNTER, "", SRC_COUNTER, METRICS_REDIS_RECONNECTS, 0, \
	  "Redis connections started after the first.") \
	X("camskeyd_quota_mode", GAUGE, "mode", SRC_QUOTA_MODE, 0, 0, \
	  "1 for who decides upstream sends now: local, shared, closed or fallback.") \
	X("camskeyd_quota_grants_total", COUNTER, "", SRC_COUNTER, METRICS_GRANTS, 0, \
	  "Grants received from the shared limiter.") \
	X("camskeyd_quota_grants_discarded_total", COUNTER, "", SRC_COUNTER, \
	  METRICS_GRANTS_DISCARDED, 0, "Grants thrown away unsent (late, or no longer needed).") \
	X("camskeyd_quota_grants_refused_total", COUNTER, "", SRC_COUNTER, METRICS_GRANTS_REFUSED, \
	  0, "Grant requests the shared limiter refused (pending or horizon).") \
	X("camskeyd_quota_unavailable_total", COUNTER, "", SRC_COUNTER, METRICS_QUOTA_UNAVAILABLE, \
	  0, "Callers answered 503 Proxy.SharedQuotaUnavailable.") \
	X("camskeyd_shared_hits_total", COUNTER, "", SRC_COUNTER, METRICS_SHARED_HITS, 0, \
	  "Local misses answered from the shared tier in Redis.") \
	X("camskeyd_shared_joins_total", COUNTER, "", SRC_COUNTER, METRICS_SHARED_JOINS, 0, \
	  "Local misses answered by another host's upstream call.") \
	X("camskeyd_shared_fills_total", COUNTER, "", SRC_COUNTER, METRICS_SHARED_FILLS, 0, \
	  "Entries this host published to the shared tier.") \
	X("camskeyd_shared_notices_total", COUNTER, "", SRC_COUNTER, METRICS_SHARED_NOTICES, 0, \
	  "Notices from other hosts (fill, free, purge) applied.") \
	X("camskeyd_request_duration_seconds", HISTOGRAM, "", SRC_HISTOGRAM, METRICS_HIST_REQUEST, \
	  0, "Time from request to answer.") \
	X("camskeyd_quota_wait_seconds", HISTOGRAM, "", SRC_HISTOGRAM, METRICS_HIST_QUOTA_WAIT, 0, \
	  "Time an upstream call waited for quota.") \
	X("camskeyd_upstream_duration_seconds", HISTOGRAM, "", SRC_HISTOGRAM, METRICS_HIST_UPSTREAM, \
	  0, "Upstream call duration.") \
	X("camskeyd_redis_round_trip_seconds", HISTOGRAM, "", SRC_HISTOGRAM, METRICS_HIST_REDIS_RTT, \
	  0, "Round trip of a shared limiter request.")

/* Where a family's samples come from. */
enum source {
	SRC_BUILD_INFO,    /* one sample, version label */
	SRC_RESULTS,       /* results[], by result label */
	SRC_UPSTREAM,      /* upstream_codes[], by envelope_outcome_label() */
	SRC_CLIENT_CALLS,  /* client_calls[], one per client id with a name */
	SRC_CLIENT_DEPTH,  /* client_depth[], likewise */
	SRC_COUNTER,       /* counters[index] */
	SRC_GAUGE,         /* gauges[index] */
	SRC_HISTOGRAM,     /* histograms[index] */
	SRC_PROCESS_FDS,   /* entries of /proc/self/fd, read when rendered */
	SRC_PROCESS_RSS,   /* resident pages of /proc/self/statm x page size */
	SRC_REDIS_ERRORS,  /* redis_errors[], by kind */
	SRC_QUOTA_MODE,    /* quota_mode: 1 for the current mode, 0 for the others */
};

/* What the exposition needs beyond the public metrics_family. */
struct family_source {
	enum source source;
	unsigned index;
	int decimals;
};

#define FAMILY_INFO(name, type, labels, src, idx, dec, help) \
	{ name, METRICS_TYPE_##type, labels, help },
#define FAMILY_SOURCE(name, type, labels, src, idx, dec, help) { src, idx, dec },
#define FAMILY_NAME(name, type, labels, src, idx, dec, help) name,
#define IS_COUNTER(name, type, labels, src, idx, dec, help) +((src) == SRC_COUNTER)
#define IS_GAUGE(name, type, labels, src, idx, dec, help) +((src) == SRC_GAUGE)
#define IS_HISTOGRAM(name, type, labels, src, idx, dec, help) +((src) == SRC_HISTOGRAM)

static const struct metrics_family families[] = { METRICS_TABLE(FAMILY_INFO) };
static const struct family_source sources[] = { METRICS_TABLE(FAMILY_SOURCE) };
static const char *const family_names[] = { METRICS_TABLE(FAMILY_NAME) };

#define N_FAMILIES (sizeof(families) / sizeof(families[0]))
_Static_assert(0 METRICS_TABLE(IS_COUNTER) == METRICS_COUNTER_COUNT,
	       "every counter has one row in the table");
_Static_assert(0 METRICS_TABLE(IS_GAUGE) == METRICS_GAUGE_COUNT,
	       "every gauge has one row in the table");
_Static_assert(0 METRICS_TABLE(IS_HISTOGRAM) == METRICS_HIST_COUNT,
	       "every histogram has one row in the table");

_Static_assert(METRICS_MAX_CLIENTS == CLIENTS_MAX, "per-client series by registry id");

static const char *const type_names[] = {
	[METRICS_TYPE_COUNTER] = "counter",
	[METRICS_TYPE_GAUGE] = "gauge",
	[METRICS_TYPE_HISTOGRAM] = "histogram",
};

void metrics_init(void)
{
}

void metrics_result(enum metrics_result r)
{
	atomic_fetch_add_explicit(&results[r], 1, memory_order_relaxed);
}

void metrics_upstream(enum envelope_outcome outcome)
{
	atomic_fetch_add_explicit(&upstream_codes[outcome], 1, memory_order_relaxed);
}

void metrics_count(enum metrics_counter c)
{
	atomic_fetch_add_explicit(&counters[c], 1, memory_order_relaxed);
}

void metrics_gauge_set(enum metrics_gauge g, int64_t value)
{
	atomic_store_explicit(&gauges[g], value, memory_order_relaxed);
}

void metrics_observe_us(enum metrics_histogram h, int64_t duration_us)
{
	struct histogram *hist = &histograms[h];
	size_t i = 0;

	if (duration_us < 0)
		duration_us = 0;
	while (i < N_BUCKETS && duration_us > bucket_us[i])
		i++;
	atomic_fetch_add_explicit(&hist->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&hist->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&hist->sum_us, (uint64_t)duration_us, memory_order_relaxed);
}

void metrics_redis_errors(enum metrics_redis_error kind, uint64_t n)
{
	atomic_fetch_add_explicit(&redis_errors[kind], n, memory_order_relaxed);
}

void metrics_set_quota_mode(enum metrics_quota_mode mode)
{
	atomic_store_explicit(&quota_mode, (int)mode, memory_order_relaxed);
}

enum metrics_quota_mode metrics_quota_mode(void)
{
	return (enum metrics_quota_mode)atomic_load_explicit(&quota_mode, memory_order_relaxed);
}

const char *metrics_quota_mode_name(enum metrics_quota_mode mode)
{
	return mode < METRICS_QUOTA_MODE_COUNT ? quota_mode_labels[mode] : "local";
}

void metrics_client_call(unsigned client)
{
	if (client < METRICS_MAX_CLIENTS)
		atomic_fetch_add_explicit(&client_calls[client], 1, memory_order_relaxed);
}

void metrics_client_queue_depth(unsigned client, int64_t depth)
{
	if (client < METRICS_MAX_CLIENTS)
		atomic_store_explicit(&client_depth[client], depth, memory_order_relaxed);
}

uint64_t metrics_result_value(enum metrics_result r)
{
	return atomic_load_explicit(&results[r], memory_order_relaxed);
}

uint64_t metrics_counter_value(enum metrics_counter c)
{
	return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

int64_t metrics_gauge_value(enum metrics_gauge g)
{
	return atomic_load_explicit(&gauges[g], memory_order_relaxed);
}

const char *const *metrics_names(unsigned *ret_count)
{
	*ret_count = (unsigned)N_FAMILIES;
	return family_names;
}

const struct metrics_family *metrics_families(size_t *ret_count)
{
	*ret_count = N_FAMILIES;
	return families;
}

const char *metrics_type_name(enum metrics_type type)
{
	return type_names[type];
}

static void render_histogram(struct buf *out, const char *name, struct histogram *h)
{
	uint64_t cumulative = 0;
	size_t i;

	for (i = 0; i < N_BUCKETS; i++) {
		cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
		buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bucket_us[i] / 1e6,
			   (unsigned long long)cumulative);
	}
	cumulative += atomic_load_explicit(&h->buckets[N_BUCKETS], memory_order_relaxed);
	buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
	buf_printf(out, "%s_sum %.6f\n", name,
		   (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
	/* count from the buckets so the exposition is self-consistent */
	buf_printf(out, "%s_count %llu\n", name, (unsigned long long)cumulative);
}

/*
 * One sample per client id that has a name (clients.c publishes each name
 * once, with release; clients_name() loads it with acquire), so a series
 * keeps its name for the process's life whatever reloads do.
 */
static void render_clients(struct buf *out, const char *name, bool depth)
{
	for (unsigned id = 0; id < METRICS_MAX_CLIENTS; id++) {
		const char *client = clients_name(id);

		if (!client)
			continue;
		if (depth)
			buf_printf(out, "%s{client=\"%s\"} %lld\n", name, client,
				   (long long)atomic_load_explicit(&client_depth[id],
								   memory_order_relaxed));
		else
			buf_printf(out, "%s{client=\"%s\"} %llu\n", name, client,
				   (unsigned long long)atomic_load_explicit(&client_calls[id],
									    memory_order_relaxed));
	}
}

/* Open descriptors, the one reading this directory included; -1 if unknown. */
static long process_open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!dir)
		return -1;
	while ((e = readdir(dir)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n - 1; /* not the descriptor of the directory itself */
}

/* Resident set size in bytes (second field of /proc/self/statm); -1 if unknown. */
static long long process_rss_bytes(void)
{
	char text[128];
	struct span s, size, rest, resident;
	uint64_t pages;
	ssize_t n;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	n = (ssize_t)fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	s = span_trim(span_cstr(text));
	if (!span_split(s, ' ', &size, &rest))
		return -1;
	if (!span_split(rest, ' ', &resident, &rest))
		resident = rest;
	if (span_to_u64(resident, 0, UINT64_MAX / 65536, &pages) < 0)
		return -1;
	return (long long)pages * sysconf(_SC_PAGESIZE);
}

static void render_family(struct buf *out, const struct metrics_family *fam,
			  const struct family_source *src)
{
	unsigned i;

	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
		   type_names[fam->type]);
	switch (src->source) {
	case SRC_BUILD_INFO:
		buf_printf(out, "%s{version=\"%s\"} 1\n", fam->name, CAMSKEYD_VERSION);
		break;
	case SRC_RESULTS:
		for (i = 0; i < METRICS_RESULT_COUNT; i++)
			buf_printf(out, "%s{result=\"%s\"} %llu\n", fam->name, result_labels[i],
				   (unsigned long long)atomic_load_explicit(&results[i],
									    memory_order_relaxed));
		break;
	case SRC_UPSTREAM:
		for (i = 0; i < ENVELOPE_OUTCOME_COUNT; i++)
			buf_printf(out, "%s{code=\"%s\"} %llu\n", fam->name,
				   envelope_outcome_label((enum envelope_outcome)i),
				   (unsigned long long)atomic_load_explicit(&upstream_codes[i],
									    memory_order_relaxed));
		break;
	case SRC_CLIENT_CALLS:
	case SRC_CLIENT_DEPTH:
		render_clients(out, fam->name, src->source == SRC_CLIENT_DEPTH);
		break;
	case SRC_COUNTER:
		buf_printf(out, "%s %llu\n", fam->name,
			   (unsigned long long)atomic_load_explicit(&counters[src->index],
								    memory_order_relaxed));
		break;
	case SRC_GAUGE: {
		int64_t v = atomic_load_explicit(&gauges[src->index], memory_order_relaxed);

		if (src->decimals > 0)
			buf_printf(out, "%s %.*f\n", fam->name, src->decimals,
				   (double)v / pow(10.0, src->decimals));
		else
			buf_printf(out, "%s %lld\n", fam->name, (long long)v);
		break;
	}
	case SRC_HISTOGRAM:
		render_histogram(out, fam->name, &histograms[src->index]);
		break;
	case SRC_PROCESS_FDS:
		buf_printf(out, "%s %ld\n", fam->name, process_open_fds());
		break;
	case SRC_PROCESS_RSS:
		buf_printf(out, "%s %lld\n", fam->name, process_rss_bytes());
		break;
	case SRC_REDIS_ERRORS:
		for (i = 0; i < METRICS_REDIS_ERROR_COUNT; i++)
			buf_printf(out, "%s{kind=\"%s\"} %llu\n", fam->name, redis_error_labels[i],
				   (unsigned long long)atomic_load_explicit(&redis_errors[i],
									    memory_order_relaxed));
		break;
	case SRC_QUOTA_MODE: {
		unsigned mode = (unsigned)metrics_quota_mode();

		for (i = 0; i < METRICS_QUOTA_MODE_COUNT; i++)
			buf_printf(out, "%s{mode=\"%s\"} %d\n", fam->name, quota_mode_labels[i],
				   i == mode ? 1 : 0);
		break;
	}
	}
}

void metrics_render(struct buf *out)
{
	for (size_t i = 0; i < N_FAMILIES; i++)
		render_family(out, &families[i], &sources[i]);
}
