/*
 * metrics.c -- counters, gauges, histograms and their exposition (see metrics.h).
 *
 * Owns: static arrays of relaxed atomics. Nothing here allocates on the
 * update path; rendering builds one bounded buffer.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

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

static char client_names[METRICS_MAX_CLIENTS][72];
static atomic_uint_fast64_t client_calls[METRICS_MAX_CLIENTS];
static atomic_int_fast64_t client_depth[METRICS_MAX_CLIENTS];

static const char *const result_labels[METRICS_RESULT_COUNT] = {
	"hit", "miss", "stale", "not_modified", "negative", "error", "bad_request",
};

struct counter_def {
	const char *name;
	const char *help;
};

static const struct counter_def counter_defs[METRICS_COUNTER_COUNT] = {
	{ "camskeyd_quota_rejected_total", "Callers answered 503 Proxy.QuotaWait." },
	{ "camskeyd_queue_full_total", "Callers answered 503 Proxy.QueueFull." },
	{ "camskeyd_upstream_throttles_total", "System.LimitControl answers received." },
	{ "camskeyd_upstream_retries_total", "Upstream calls that were retries." },
	{ "camskeyd_flight_joins_total", "Callers that joined an upstream call already wanted." },
	{ "camskeyd_refreshes_total", "Background refreshes sent upstream." },
	{ "camskeyd_client_gone_total", "Waiting callers that disconnected." },
	{ "camskeyd_key_rotations_total", "Keys whose fingerprint changed upstream." },
	{ "camskeyd_cache_errors_total", "Cache (SQLite) errors." },
	{ "camskeyd_unauthorized_total", "Requests refused with 401." },
	{ "camskeyd_slow_clients_total", "Connections ended because the request head came too late." },
};

static const struct counter_def gauge_defs[METRICS_GAUGE_COUNT] = {
	{ "camskeyd_queue_depth", "Upstream calls waiting for quota." },
	{ "camskeyd_waiting_callers", "Callers waiting for an upstream answer or quota." },
	{ "camskeyd_upstream_in_flight", "Upstream calls in progress." },
	{ "camskeyd_limiter_rate", "Effective upstream calls per second after back-off." },
	{ "camskeyd_limiter_margin_seconds", "Safety margin added to the one-second window." },
	{ "camskeyd_cache_entries", "Entries in the cache database." },
	{ "camskeyd_ready", "1 when the daemon is ready to serve." },
};

static const struct counter_def hist_defs[METRICS_HIST_COUNT] = {
	{ "camskeyd_request_duration_seconds", "Time from request to answer." },
	{ "camskeyd_quota_wait_seconds", "Time an upstream call waited for quota." },
	{ "camskeyd_upstream_duration_seconds", "Upstream call duration." },
};

static const char *const all_names[] = {
	"camskeyd_build_info",
	"camskeyd_requests_total",
	"camskeyd_upstream_calls_total",
	"camskeyd_client_upstream_calls_total",
	"camskeyd_client_queue_depth",
	"camskeyd_quota_rejected_total",
	"camskeyd_queue_full_total",
	"camskeyd_upstream_throttles_total",
	"camskeyd_upstream_retries_total",
	"camskeyd_flight_joins_total",
	"camskeyd_refreshes_total",
	"camskeyd_client_gone_total",
	"camskeyd_key_rotations_total",
	"camskeyd_cache_errors_total",
	"camskeyd_unauthorized_total",
	"camskeyd_slow_clients_total",
	"camskeyd_queue_depth",
	"camskeyd_waiting_callers",
	"camskeyd_upstream_in_flight",
	"camskeyd_limiter_rate",
	"camskeyd_limiter_margin_seconds",
	"camskeyd_cache_entries",
	"camskeyd_ready",
	"camskeyd_request_duration_seconds",
	"camskeyd_quota_wait_seconds",
	"camskeyd_upstream_duration_seconds",
};

void metrics_init(void)
{
	memset(client_names, 0, sizeof(client_names));
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

void metrics_client_name(unsigned client, const char *name)
{
	if (client < METRICS_MAX_CLIENTS)
		snprintf(client_names[client], sizeof(client_names[client]), "%s", name);
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
	*ret_count = sizeof(all_names) / sizeof(all_names[0]);
	return all_names;
}

static void render_histogram(struct buf *out, const struct counter_def *def,
			     struct histogram *h)
{
	uint64_t cumulative = 0;
	size_t i;

	buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", def->name, def->help, def->name);
	for (i = 0; i < N_BUCKETS; i++) {
		cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
		buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", def->name,
			   (double)bucket_us[i] / 1e6, (unsigned long long)cumulative);
	}
	cumulative += atomic_load_explicit(&h->buckets[N_BUCKETS], memory_order_relaxed);
	buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", def->name, (unsigned long long)cumulative);
	buf_printf(out, "%s_sum %.6f\n", def->name,
		   (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
	/* count from the buckets so the exposition is self-consistent */
	buf_printf(out, "%s_count %llu\n", def->name, (unsigned long long)cumulative);
}

void metrics_render(struct buf *out)
{
	unsigned i;

	buf_printf(out, "# HELP camskeyd_build_info Build information.\n"
			"# TYPE camskeyd_build_info gauge\n"
			"camskeyd_build_info{version=\"%s\"} 1\n", CAMSKEYD_VERSION);

	buf_adds(out, "# HELP camskeyd_requests_total Key lookups answered, by result.\n"
		      "# TYPE camskeyd_requests_total counter\n");
	for (i = 0; i < METRICS_RESULT_COUNT; i++)
		buf_printf(out, "camskeyd_requests_total{result=\"%s\"} %llu\n", result_labels[i],
			   (unsigned long long)atomic_load_explicit(&results[i], memory_order_relaxed));

	buf_adds(out, "# HELP camskeyd_upstream_calls_total Upstream calls completed, by Code or failure.\n"
		      "# TYPE camskeyd_upstream_calls_total counter\n");
	for (i = 0; i < ENVELOPE_OUTCOME_COUNT; i++)
		buf_printf(out, "camskeyd_upstream_calls_total{code=\"%s\"} %llu\n",
			   envelope_outcome_label((enum envelope_outcome)i),
			   (unsigned long long)atomic_load_explicit(&upstream_codes[i],
								    memory_order_relaxed));

	buf_adds(out, "# HELP camskeyd_client_upstream_calls_total Upstream calls sent on behalf of each client.\n"
		      "# TYPE camskeyd_client_upstream_calls_total counter\n");
	for (i = 0; i < METRICS_MAX_CLIENTS; i++) {
		if (client_names[i][0])
			buf_printf(out, "camskeyd_client_upstream_calls_total{client=\"%s\"} %llu\n",
				   client_names[i],
				   (unsigned long long)atomic_load_explicit(&client_calls[i],
									    memory_order_relaxed));
	}
	buf_adds(out, "# HELP camskeyd_client_queue_depth Upstream calls waiting for quota, per client.\n"
		      "# TYPE camskeyd_client_queue_depth gauge\n");
	for (i = 0; i < METRICS_MAX_CLIENTS; i++) {
		if (client_names[i][0])
			buf_printf(out, "camskeyd_client_queue_depth{client=\"%s\"} %lld\n",
				   client_names[i],
				   (long long)atomic_load_explicit(&client_depth[i],
								   memory_order_relaxed));
	}

	for (i = 0; i < METRICS_COUNTER_COUNT; i++)
		buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_defs[i].name,
			   counter_defs[i].help, counter_defs[i].name, counter_defs[i].name,
			   (unsigned long long)atomic_load_explicit(&counters[i],
								    memory_order_relaxed));
	for (i = 0; i < METRICS_GAUGE_COUNT; i++) {
		int64_t v = atomic_load_explicit(&gauges[i], memory_order_relaxed);

		buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauge_defs[i].name,
			   gauge_defs[i].help, gauge_defs[i].name);
		if (i == METRICS_GAUGE_EFFECTIVE_RATE_MILLI)
			buf_printf(out, "%s %.3f\n", gauge_defs[i].name, (double)v / 1000.0);
		else if (i == METRICS_GAUGE_RATE_MARGIN_US)
			buf_printf(out, "%s %.6f\n", gauge_defs[i].name, (double)v / 1e6);
		else
			buf_printf(out, "%s %lld\n", gauge_defs[i].name, (long long)v);
	}
	for (i = 0; i < METRICS_HIST_COUNT; i++)
		render_histogram(out, &hist_defs[i], &histograms[i]);
}
