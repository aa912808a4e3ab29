/*
 * test_metrics.c -- unit tests for metrics: counters, gauges and histograms
 * move as told; the rendered text is valid Prometheus exposition (checked
 * line by line by a small validator below: sample syntax, one # HELP and
 * one # TYPE per family before its samples, families contiguous, histogram
 * buckets increasing and cumulative with +Inf equal to _count); every name
 * of metrics_names() is rendered and vice versa.
 *
 * The metrics are process-wide, so tests compare before and after rather
 * than assume zero.
 */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clients.h"
#include "harness.h"

#define RENDER_MAX (1024 * 1024)
#define MAX_FAMILIES 128
#define NAME_MAX_LEN 128
#define MAX_BUCKETS 64

struct family {
	char name[NAME_MAX_LEN];
	char type[16];
	int n_help, n_type;
	bool closed;          /* another family's lines came after this one's */
	/* histograms only */
	double le[MAX_BUCKETS];
	double bucket_count[MAX_BUCKETS];
	size_t n_buckets;
	bool has_sum, has_count;
	double count;
};

struct exposition {
	struct family families[MAX_FAMILIES];
	size_t n_families;
	struct family *current;
	unsigned errors;
	bool quiet;           /* count errors without printing them */
};

static void fail_line(struct exposition *x, const char *line, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail_line(struct exposition *x, const char *line, size_t len, const char *fmt, ...)
{
	va_list ap;

	x->errors++;
	if (x->quiet)
		return;
	fprintf(stderr, "  exposition: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": [%.*s]\n", (int)len, line);
}

static struct family *family_get(struct exposition *x, const char *name, size_t len, bool create)
{
	size_t i;

	for (i = 0; i < x->n_families; i++) {
		if (strlen(x->families[i].name) == len && memcmp(x->families[i].name, name, len) == 0)
			return &x->families[i];
	}
	if (!create || x->n_families == MAX_FAMILIES || len >= NAME_MAX_LEN)
		return NULL;
	memcpy(x->families[x->n_families].name, name, len);
	x->families[x->n_families].name[len] = '\0';
	return &x->families[x->n_families++];
}

/* Lines of one family must be contiguous: note when we move to another. */
static void family_enter(struct exposition *x, struct family *f, const char *line, size_t len)
{
	if (x->current == f)
		return;
	if (f->closed)
		fail_line(x, line, len, "family %s is not contiguous", f->name);
	if (x->current)
		x->current->closed = true;
	x->current = f;
}

static bool name_start_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
	return name_start_char(c) || (c >= '0' && c <= '9');
}

static size_t name_len(const char *p, size_t len)
{
	size_t n = 0;

	if (len == 0 || !name_start_char(p[0]))
		return 0;
	while (n < len && name_char(p[n]))
		n++;
	return n;
}

/* A float as Prometheus writes it, filling the whole of [p, p + len). */
static bool parse_value(const char *p, size_t len, double *ret)
{
	char tmp[64];
	char *end;

	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, p, len);
	tmp[len] = '\0';
	if (strcmp(tmp, "+Inf") == 0) {
		*ret = INFINITY;
		return true;
	}
	if (strcmp(tmp, "-Inf") == 0) {
		*ret = -INFINITY;
		return true;
	}
	if (strcmp(tmp, "NaN") == 0) {
		*ret = NAN;
		return true;
	}
	/* strtod would also take " 1", "0x1", "inf": refuse what Prometheus does not write */
	if (!(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9')))
		return false;
	if (strchr(tmp, 'x') || strchr(tmp, 'X') || strchr(tmp, 'n') || strchr(tmp, 'N'))
		return false;
	*ret = strtod(tmp, &end);
	return *end == '\0';
}

/*
 * Parse {name="value",...} at p; returns bytes used, 0 when malformed.
 * If the labels hold le="...", its value goes to *ret_le.
 */
static size_t parse_labels(const char *p, size_t len, bool *ret_has_le, double *ret_le)
{
	size_t i = 1;

	*ret_has_le = false;
	if (len == 0 || p[0] != '{')
		return 0;
	while (i < len && p[i] != '}') {
		size_t n = name_len(p + i, len - i), vstart;
		bool is_le = n == 2 && memcmp(p + i, "le", 2) == 0;

		if (n == 0)
			return 0;
		i += n;
		if (i + 1 >= len || p[i] != '=' || p[i + 1] != '"')
			return 0;
		i += 2;
		vstart = i;
		while (i < len && p[i] != '"') {
			if (p[i] == '\\') {
				if (i + 1 >= len || (p[i + 1] != '\\' && p[i + 1] != '"' && p[i + 1] != 'n'))
					return 0;
				i++;
			} else if (p[i] == '\n') {
				return 0;
			}
			i++;
		}
		if (i >= len)
			return 0;
		if (is_le) {
			if (!parse_value(p + vstart, i - vstart, ret_le))
				return 0;
			*ret_has_le = true;
		}
		i++; /* closing quote */
		if (i < len && p[i] == ',')
			i++;
		else if (i < len && p[i] != '}')
			return 0;
	}
	if (i >= len)
		return 0;
	return i + 1;
}

static bool ends_with(const char *name, size_t len, const char *suffix, size_t *ret_base)
{
	size_t n = strlen(suffix);

	if (len <= n || memcmp(name + len - n, suffix, n) != 0)
		return false;
	*ret_base = len - n;
	return true;
}

static void check_comment(struct exposition *x, const char *line, size_t len)
{
	bool help = len > 7 && memcmp(line, "# HELP ", 7) == 0;
	bool type = len > 7 && memcmp(line, "# TYPE ", 7) == 0;
	size_t n;
	struct family *f;

	if (!help && !type)
		return; /* any other comment is allowed */
	n = name_len(line + 7, len - 7);
	if (n == 0 || 7 + n >= len || line[7 + n] != ' ') {
		fail_line(x, line, len, "bad comment");
		return;
	}
	f = family_get(x, line + 7, n, true);
	if (!f) {
		fail_line(x, line, len, "too many families");
		return;
	}
	family_enter(x, f, line, len);
	if (help) {
		if (++f->n_help > 1)
			fail_line(x, line, len, "second # HELP");
		return;
	}
	if (++f->n_type > 1)
		fail_line(x, line, len, "second # TYPE");
	if (len - 8 - n >= sizeof(f->type)) {
		fail_line(x, line, len, "bad type");
		return;
	}
	memcpy(f->type, line + 8 + n, len - 8 - n);
	f->type[len - 8 - n] = '\0';
	if (strcmp(f->type, "counter") && strcmp(f->type, "gauge") &&
	    strcmp(f->type, "histogram") && strcmp(f->type, "summary") &&
	    strcmp(f->type, "untyped"))
		fail_line(x, line, len, "unknown type");
}

static void check_sample(struct exposition *x, const char *line, size_t len)
{
	size_t n = name_len(line, len), at, base;
	size_t used = 0;
	bool has_le = false;
	double le = 0, value;
	struct family *f;

	if (n == 0) {
		fail_line(x, line, len, "no metric name");
		return;
	}
	at = n;
	if (at < len && line[at] == '{') {
		used = parse_labels(line + at, len - at, &has_le, &le);
		if (!used) {
			fail_line(x, line, len, "bad labels");
			return;
		}
		at += used;
	}
	if (at >= len || line[at] != ' ' || !parse_value(line + at + 1, len - at - 1, &value)) {
		fail_line(x, line, len, "not \"name{labels} value\"");
		return;
	}
	f = family_get(x, line, n, false);
	if (!f || strcmp(f->type, "histogram") == 0) {
		struct family *h = NULL;

		if (ends_with(line, n, "_bucket", &base) || ends_with(line, n, "_sum", &base) ||
		    ends_with(line, n, "_count", &base))
			h = family_get(x, line, base, false);
		if (h && strcmp(h->type, "histogram") == 0)
			f = h;
		else if (f)
			f = NULL; /* a histogram's bare name is not a sample */
	}
	if (!f || !f->n_type || !f->n_help) {
		fail_line(x, line, len, "sample before its # HELP and # TYPE");
		return;
	}
	family_enter(x, f, line, len);
	if (strcmp(f->type, "histogram") != 0)
		return;
	if (ends_with(line, n, "_bucket", &base)) {
		if (!has_le) {
			fail_line(x, line, len, "bucket without le");
			return;
		}
		if (f->n_buckets == MAX_BUCKETS) {
			fail_line(x, line, len, "too many buckets");
			return;
		}
		if (f->n_buckets && !(le > f->le[f->n_buckets - 1]))
			fail_line(x, line, len, "le not increasing");
		if (f->n_buckets && value < f->bucket_count[f->n_buckets - 1])
			fail_line(x, line, len, "bucket not cumulative");
		f->le[f->n_buckets] = le;
		f->bucket_count[f->n_buckets++] = value;
	} else if (ends_with(line, n, "_sum", &base)) {
		f->has_sum = true;
	} else {
		f->has_count = true;
		f->count = value;
	}
}

/* Validate text as Prometheus text format 0.0.4; fills x; returns x->errors. */
static unsigned check_exposition(const char *text, struct exposition *x, bool quiet)
{
	const char *p = text;
	size_t i;

	memset(x, 0, sizeof(*x));
	x->quiet = quiet;
	if (!*text || text[strlen(text) - 1] != '\n')
		fail_line(x, "", 0, "does not end with a newline");
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len == 0)
			fail_line(x, p, len, "empty line");
		else if (p[0] == '#')
			check_comment(x, p, len);
		else
			check_sample(x, p, len);
		p += len + (nl ? 1 : 0);
	}
	for (i = 0; i < x->n_families; i++) {
		struct family *f = &x->families[i];

		if (f->n_help != 1 || f->n_type != 1)
			fail_line(x, f->name, strlen(f->name), "%d # HELP and %d # TYPE",
				  f->n_help, f->n_type);
		if (strcmp(f->type, "histogram") != 0)
			continue;
		if (!f->has_sum || !f->has_count || f->n_buckets == 0 ||
		    !isinf(f->le[f->n_buckets - 1]))
			fail_line(x, f->name, strlen(f->name), "histogram lacks _sum, _count or +Inf");
		else if (f->bucket_count[f->n_buckets - 1] != f->count)
			fail_line(x, f->name, strlen(f->name), "+Inf bucket %.0f != _count %.0f",
				  f->bucket_count[f->n_buckets - 1], f->count);
	}
	return x->errors;
}

/* Render into a fresh buffer; the caller frees. */
static void render(struct buf *b)
{
	buf_init(b, RENDER_MAX);
	metrics_render(b);
}

/* The value of the sample whose name and labels are exactly series. */
static bool sample_value(const char *text, const char *series, double *ret)
{
	size_t n = strlen(series);
	const char *p = text;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len > n + 1 && memcmp(p, series, n) == 0 && p[n] == ' ')
			return parse_value(p + n + 1, len - n - 1, ret);
		p += len + (nl ? 1 : 0);
	}
	return false;
}

static double value_of(const char *series)
{
	struct buf b;
	double v = NAN;

	render(&b);
	if (!sample_value(buf_str(&b), series, &v))
		fprintf(stderr, "  no sample %s\n", series);
	buf_free(&b);
	return v;
}

TEST(result_counters_increment_by_one)
{
	static const char *const series[METRICS_RESULT_COUNT] = {
		"camskeyd_requests_total{result=\"hit\"}",
		"camskeyd_requests_total{result=\"miss\"}",
		"camskeyd_requests_total{result=\"stale\"}",
		"camskeyd_requests_total{result=\"not_modified\"}",
		"camskeyd_requests_total{result=\"negative\"}",
		"camskeyd_requests_total{result=\"error\"}",
		"camskeyd_requests_total{result=\"bad_request\"}",
	};
	unsigned r;

	for (r = 0; r < METRICS_RESULT_COUNT; r++) {
		uint64_t before = metrics_result_value((enum metrics_result)r);

		metrics_result((enum metrics_result)r);
		metrics_result((enum metrics_result)r);
		CHECK(metrics_result_value((enum metrics_result)r) == before + 2);
		CHECK(value_of(series[r]) == (double)(before + 2));
	}
}

TEST(plain_counters_increment_by_one)
{
	unsigned c;

	for (c = 0; c < METRICS_COUNTER_COUNT; c++) {
		uint64_t before = metrics_counter_value((enum metrics_counter)c);

		metrics_count((enum metrics_counter)c);
		CHECK(metrics_counter_value((enum metrics_counter)c) == before + 1);
	}
	CHECK(value_of("camskeyd_quota_rejected_total") ==
	      (double)metrics_counter_value(METRICS_QUOTA_REJECTED));
	CHECK(value_of("camskeyd_unauthorized_total") ==
	      (double)metrics_counter_value(METRICS_UNAUTHORIZED));
}

TEST(counting_one_counter_leaves_the_others)
{
	uint64_t retries = metrics_counter_value(METRICS_RETRIES);
	uint64_t joins = metrics_counter_value(METRICS_FLIGHTS_JOINED);

	metrics_count(METRICS_THROTTLES);
	CHECK(metrics_counter_value(METRICS_RETRIES) == retries);
	CHECK(metrics_counter_value(METRICS_FLIGHTS_JOINED) == joins);
}

TEST(upstream_outcomes_are_counted_by_code_label)
{
	double before = value_of("camskeyd_upstream_calls_total{code=\"System.LimitControl\"}");
	double other = value_of("camskeyd_upstream_calls_total{code=\"OK\"}");

	metrics_upstream(ENVELOPE_OUTCOME_LIMIT_CONTROL);
	metrics_upstream(ENVELOPE_OUTCOME_LIMIT_CONTROL);
	CHECK(value_of("camskeyd_upstream_calls_total{code=\"System.LimitControl\"}") == before + 2);
	CHECK(value_of("camskeyd_upstream_calls_total{code=\"OK\"}") == other);
	before = value_of("camskeyd_upstream_calls_total{code=\"timeout\"}");
	metrics_upstream(ENVELOPE_OUTCOME_TIMEOUT);
	CHECK(value_of("camskeyd_upstream_calls_total{code=\"timeout\"}") == before + 1);
}

TEST(gauges_hold_the_last_value_set)
{
	metrics_gauge_set(METRICS_GAUGE_QUEUE_DEPTH, 7);
	metrics_gauge_set(METRICS_GAUGE_QUEUE_DEPTH, 3);
	CHECK(metrics_gauge_value(METRICS_GAUGE_QUEUE_DEPTH) == 3);
	CHECK(value_of("camskeyd_queue_depth") == 3);
	metrics_gauge_set(METRICS_GAUGE_WAITERS, -1);
	CHECK(value_of("camskeyd_waiting_callers") == -1);
	metrics_gauge_set(METRICS_GAUGE_READY, 1);
	CHECK(value_of("camskeyd_ready") == 1);
	metrics_gauge_set(METRICS_GAUGE_WAITERS, 0);
}

TEST(rate_and_margin_gauges_render_in_base_units)
{
	metrics_gauge_set(METRICS_GAUGE_EFFECTIVE_RATE_MILLI, 12500);
	metrics_gauge_set(METRICS_GAUGE_RATE_MARGIN_US, 1500);
	CHECK(fabs(value_of("camskeyd_limiter_rate") - 12.5) < 1e-9);
	CHECK(fabs(value_of("camskeyd_limiter_margin_seconds") - 0.0015) < 1e-9);
}

TEST(histogram_puts_observations_in_the_right_buckets)
{
	static const char *const le[] = { "0.0001", "0.00025", "30", "+Inf" };
	static const double expected_delta[] = { 2, 3, 4, 5 };
	char series[128];
	double before[4], before_count, before_sum, after;
	size_t i;

	for (i = 0; i < 4; i++) {
		snprintf(series, sizeof(series), "camskeyd_quota_wait_seconds_bucket{le=\"%s\"}",
			 le[i]);
		before[i] = value_of(series);
	}
	before_count = value_of("camskeyd_quota_wait_seconds_count");
	before_sum = value_of("camskeyd_quota_wait_seconds_sum");
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, 100);       /* on the first bound */
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, -5);        /* clamped to 0 */
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, 101);       /* just above it */
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, 30000000);  /* on the last bound */
	metrics_observe_us(METRICS_HIST_QUOTA_WAIT, 30000001);  /* +Inf only */
	for (i = 0; i < 4; i++) {
		snprintf(series, sizeof(series), "camskeyd_quota_wait_seconds_bucket{le=\"%s\"}",
			 le[i]);
		after = value_of(series);
		if (after - before[i] != expected_delta[i]) {
			fprintf(stderr, "  le=%s moved by %.0f\n", le[i], after - before[i]);
			CHECK(after - before[i] == expected_delta[i]);
		}
	}
	CHECK(value_of("camskeyd_quota_wait_seconds_count") == before_count + 5);
	CHECK(fabs(value_of("camskeyd_quota_wait_seconds_sum") - before_sum - 60.000202) < 1e-5);
}

TEST(client_counters_render_only_for_named_clients)
{
	struct buf b;
	unsigned alpha = clients_id("alpha");

	metrics_client_call(alpha);
	metrics_client_call(alpha);
	metrics_client_queue_depth(alpha, 4);
	/* out of range is ignored, not a crash; an id without a name is not rendered */
	metrics_client_call(CLIENTS_MAX - 2);
	metrics_client_call(METRICS_MAX_CLIENTS);
	metrics_client_queue_depth(METRICS_MAX_CLIENTS, 1);
	CHECK(value_of("camskeyd_client_upstream_calls_total{client=\"alpha\"}") == 2);
	CHECK(value_of("camskeyd_client_queue_depth{client=\"alpha\"}") == 4);
	render(&b);
	CHECK(strstr(buf_str(&b), "client=\"\"") == NULL);
	CHECK(strstr(buf_str(&b), "(overflow)") == NULL);
	buf_free(&b);
}

TEST(render_is_valid_prometheus_text)
{
	static struct exposition x;
	struct buf b;

	/* make every kind of series non-trivial first */
	clients_id("client-a");
	metrics_client_call(clients_id("client_b"));
	metrics_result(METRICS_RESULT_HIT);
	metrics_upstream(ENVELOPE_OUTCOME_OK);
	metrics_count(METRICS_REFRESHES);
	metrics_gauge_set(METRICS_GAUGE_CACHE_ENTRIES, 12345);
	metrics_observe_us(METRICS_HIST_REQUEST, 42);
	metrics_observe_us(METRICS_HIST_REQUEST, 4200000);
	metrics_observe_us(METRICS_HIST_UPSTREAM, 99000000);
	render(&b);
	REQUIRE(buf_error(&b) == 0);
	CHECK(check_exposition(buf_str(&b), &x, false) == 0);
	CHECK(x.n_families >= 20);
	if (harness_current_failed)
		fprintf(stderr, "%s", buf_str(&b));
	buf_free(&b);
}

TEST(validator_catches_broken_exposition)
{
	/* the checker itself must be able to fail, or the test above proves nothing */
	static const char *const broken[] = {
		"x 1\n",
		"# HELP x h\n# TYPE x counter\nx\n",
		"# HELP x h\n# TYPE x counter\nx 1 \n",
		"# HELP x h\n# TYPE x counter\nx{a=b} 1\n",
		"# HELP x h\n# TYPE x counter\n# TYPE x counter\nx 1\n",
		"# HELP x h\n# TYPE x counter\nx 1\n# HELP y h\n# TYPE y gauge\ny 1\nx 2\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
		"h_sum 1\nh_count 1\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
		"h_sum 1\nh_count 3\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		"# HELP x h\n# TYPE x counter\nx 1",
	};
	static struct exposition x;
	size_t i;

	CHECK(check_exposition("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\n"
			       "h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n"
			       "# HELP x h\n# TYPE x counter\nx{a=\"b\",c=\"d\\\"\"} 1e3\n",
			       &x, false) == 0);
	for (i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
		if (check_exposition(broken[i], &x, true) == 0) {
			fprintf(stderr, "  validator accepted broken case %zu\n", i);
			CHECK(0);
		}
	}
}

TEST(every_listed_name_is_rendered_with_help_and_type)
{
	static struct exposition x;
	const char *const *names;
	unsigned n, i;
	struct buf b;

	names = metrics_names(&n);
	REQUIRE(names != NULL && n > 0);
	render(&b);
	REQUIRE(check_exposition(buf_str(&b), &x, false) == 0);
	for (i = 0; i < n; i++) {
		struct family *f = family_get(&x, names[i], strlen(names[i]), false);

		if (!f || f->n_help != 1 || f->n_type != 1) {
			fprintf(stderr, "  %s is not rendered with # HELP and # TYPE\n", names[i]);
			CHECK(0);
		}
	}
	buf_free(&b);
}

TEST(every_rendered_family_is_listed_in_names)
{
	static struct exposition x;
	const char *const *names;
	unsigned n, i;
	size_t k;
	struct buf b;

	names = metrics_names(&n);
	render(&b);
	REQUIRE(check_exposition(buf_str(&b), &x, false) == 0);
	for (k = 0; k < x.n_families; k++) {
		bool listed = false;

		for (i = 0; i < n; i++)
			listed |= strcmp(names[i], x.families[k].name) == 0;
		if (!listed) {
			fprintf(stderr, "  %s is rendered but not in metrics_names\n",
				x.families[k].name);
			CHECK(0);
		}
	}
	CHECK(x.n_families == n);
	buf_free(&b);
}

TEST(every_family_is_rendered_with_the_type_of_its_table_row)
{
	static struct exposition x;
	const struct metrics_family *fams;
	const char *const *names;
	unsigned n_names;
	size_t n;
	struct buf b;

	fams = metrics_families(&n);
	names = metrics_names(&n_names);
	REQUIRE(n == n_names);
	render(&b);
	REQUIRE(check_exposition(buf_str(&b), &x, false) == 0);
	for (size_t i = 0; i < n; i++) {
		struct family *f = family_get(&x, fams[i].name, strlen(fams[i].name), false);

		CHECK_STR(names[i], fams[i].name);
		CHECK(fams[i].help && fams[i].help[0] && fams[i].labels);
		if (!f || strcmp(f->type, metrics_type_name(fams[i].type)) != 0) {
			fprintf(stderr, "  %s not rendered as a %s\n", fams[i].name,
				metrics_type_name(fams[i].type));
			CHECK(0);
		}
	}
	buf_free(&b);
}

TEST(names_are_unique)
{
	const char *const *names;
	unsigned n, i, j;

	names = metrics_names(&n);
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			if (strcmp(names[i], names[j]) == 0) {
				fprintf(stderr, "  %s listed twice\n", names[i]);
				CHECK(0);
			}
		}
	}
}

TEST(render_into_too_small_buffer_sets_e2big_without_overflow)
{
	struct buf b;

	buf_init(&b, 100);
	metrics_render(&b);
	CHECK(buf_error(&b) != 0);
	CHECK(strlen(buf_str(&b)) <= 100);
	buf_free(&b);
}


int main(void)
{
	clients_init();
	metrics_init();
	RUN(result_counters_increment_by_one);
	RUN(plain_counters_increment_by_one);
	RUN(counting_one_counter_leaves_the_others);
	RUN(upstream_outcomes_are_counted_by_code_label);
	RUN(gauges_hold_the_last_value_set);
	RUN(rate_and_margin_gauges_render_in_base_units);
	RUN(histogram_puts_observations_in_the_right_buckets);
	RUN(client_counters_render_only_for_named_clients);
	RUN(render_is_valid_prometheus_text);
	RUN(validator_catches_broken_exposition);
	RUN(every_listed_name_is_rendered_with_help_and_type);
	RUN(every_rendered_family_is_listed_in_names);
	RUN(every_family_is_rendered_with_the_type_of_its_table_row);
	RUN(names_are_unique);
	RUN(render_into_too_small_buffer_sets_e2big_without_overflow);
	return harness_done();
}
