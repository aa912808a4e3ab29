/*
 * test_log.c -- unit tests for the log module: phone masking (never more
 * than 6 digits of a long number), logfmt quoting (escapes, control bytes,
 * truncation that never overflows), level names, access-log modes, and
 * the lines on stderr (captured through a pipe dup2'ed over fd 2):
 * log_event's one logfmt line, the line builder's fields, the journal's
 * <N> priority prefixes, and buffered lines that reach stderr on
 * log_flush() and log_fini(), in order, none lost.
 */
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CAPTURE_MAX 8192

static size_t count_digits(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s >= '0' && *s <= '9';
	return n;
}

static const char *mask(const char *phone, char *out)
{
	return log_mask_phone(phone, out, LOG_PHONE_MASKED_MAX);
}

/*
 * Run log_event(level, event, "%s", fields) with stderr on a pipe and copy
 * what was written into out (NUL-terminated). 0 or -errno. A line is far
 * below the pipe's capacity, so the write cannot block.
 */
struct emit {
	enum log_level level;
	const char *event, *fields;
	void (*fn)(const struct emit *e);
};

static void emit_event(const struct emit *e)
{
	log_event(e->level, e->event, "%s", e->fields);
}

static int capture(const struct emit *e, char *out, size_t out_size);

static int capture_log(enum log_level level, const char *event, const char *fields,
		       char *out, size_t out_size)
{
	struct emit e = { level, event, fields, emit_event };

	return capture(&e, out, out_size);
}

static int capture(const struct emit *e, char *out, size_t out_size)
{
	int fds[2], saved, r = 0;
	size_t len = 0;

	out[0] = '\0';
	if (pipe(fds) < 0)
		return -errno;
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	if (saved < 0) {
		r = -errno;
		goto out_close_pipe;
	}
	if (dup2(fds[1], STDERR_FILENO) < 0) {
		r = -errno;
		goto out_close_saved;
	}
	e->fn(e);
	if (dup2(saved, STDERR_FILENO) < 0)
		r = -errno;
	close(fds[1]);
	fds[1] = -1;
	/* The write end is closed, so read ends at EOF; bounded by out_size. */
	while (len + 1 < out_size) {
		ssize_t n = read(fds[0], out + len, out_size - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
out_close_saved:
	close(saved);
out_close_pipe:
	close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	return r;
}

/* "ts=YYYY-MM-DDTHH:MM:SS.mmmZ " */
static bool valid_ts_prefix(const char *line)
{
	static const char pattern[] = "ts=dddd-dd-ddTdd:dd:dd.dddZ ";
	size_t i;

	for (i = 0; pattern[i]; i++) {
		if (pattern[i] == 'd') {
			if (line[i] < '0' || line[i] > '9')
				return false;
		} else if (line[i] != pattern[i]) {
			return false;
		}
	}
	return true;
}

TEST(mask_keeps_first_four_and_last_two_of_13_digit_number)
{
	char out[LOG_PHONE_MASKED_MAX];

	CHECK_STR(mask("8613912345678", out), "8613*******78");
}

TEST(mask_keeps_length_of_number)
{
	char out[LOG_PHONE_MASKED_MAX];

	CHECK(strlen(mask("8613912345678", out)) == 13);
	CHECK(strlen(mask("12345", out)) == 5);
	CHECK(strlen(mask("12345678901234567890", out)) == 20);
}

TEST(mask_of_nine_digit_number_shows_six)
{
	char out[LOG_PHONE_MASKED_MAX];

	CHECK_STR(mask("123456789", out), "1234***89");
}

TEST(mask_of_short_numbers_shows_a_third_at_most)
{
	char out[LOG_PHONE_MASKED_MAX];

	CHECK_STR(mask("12345678", out), "12******");
	CHECK_STR(mask("12345", out), "1****");
	CHECK_STR(mask("12", out), "**");
	CHECK_STR(mask("1", out), "*");
	CHECK_STR(mask("", out), "");
}

TEST(mask_never_shows_non_digits)
{
	char out[LOG_PHONE_MASKED_MAX];

	CHECK_STR(mask("+8613912345678", out), "*861********78");
	CHECK_STR(mask("86-13912345678", out), "86*1********78");
	CHECK_STR(mask("ab\"=\ncd12345", out), "**********45");
	CHECK_STR(mask("8613912345 x", out), "8613********");
}

TEST(mask_never_shows_more_than_six_digits_of_long_numbers)
{
	char phone[LOG_PHONE_MASKED_MAX], out[LOG_PHONE_MASKED_MAX];
	size_t len, i;

	for (len = 9; len < sizeof(phone); len++) {
		for (i = 0; i < len; i++)
			phone[i] = (char)('0' + (i * 7 + 3) % 10);
		phone[len] = '\0';
		mask(phone, out);
		if (count_digits(out) > 6 || strlen(out) != len) {
			fprintf(stderr, "  len %zu: [%s] -> [%s]\n", len, phone, out);
			CHECK(count_digits(out) <= 6);
			CHECK(strlen(out) == len);
		}
	}
	for (len = 0; len < 9; len++) {
		memset(phone, '5', len);
		phone[len] = '\0';
		mask(phone, out);
		CHECK(count_digits(out) <= len / 3);
	}
}

TEST(mask_truncates_to_out_size_without_overflow)
{
	char out[16];
	char big[200];

	memset(out, '#', sizeof(out));
	memset(big, '9', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_mask_phone(big, out, 8);
	CHECK(strlen(out) == 7);
	CHECK(out[8] == '#');
	CHECK(count_digits(out) <= 6);
	log_mask_phone(big, out, sizeof(out));
	CHECK(strlen(out) < sizeof(out));
	CHECK(count_digits(out) <= 6);
	log_mask_phone("8613912345678", out, 1);
	CHECK(out[0] == '\0');
}

TEST(quote_wraps_plain_text_in_double_quotes)
{
	char out[64];

	CHECK_STR(log_quote("hello world", out, sizeof(out)), "\"hello world\"");
	CHECK_STR(log_quote("", out, sizeof(out)), "\"\"");
	CHECK_STR(log_quote(NULL, out, sizeof(out)), "\"\"");
}

TEST(quote_escapes_quotes_and_backslashes)
{
	char out[64];

	CHECK_STR(log_quote("a\"b\\c", out, sizeof(out)), "\"a\\\"b\\\\c\"");
	CHECK_STR(log_quote("key=\"v\"", out, sizeof(out)), "\"key=\\\"v\\\"\"");
}

TEST(quote_escapes_newline_so_a_value_stays_on_one_line)
{
	char out[64];

	CHECK_STR(log_quote("a\nb", out, sizeof(out)), "\"a\\nb\"");
	CHECK(strchr(log_quote("\n\n\n", out, sizeof(out)), '\n') == NULL);
}

TEST(quote_writes_control_bytes_as_hex)
{
	char out[64];

	CHECK_STR(log_quote("a\rb\tc\x01\x1f\x7f", out, sizeof(out)),
		  "\"a\\x0db\\x09c\\x01\\x1f\\x7f\"");
	CHECK_STR(log_quote("\x1b[31m", out, sizeof(out)), "\"\\x1b[31m\"");
}

TEST(quote_passes_utf8_bytes_through)
{
	char out[64];

	CHECK_STR(log_quote("caf\xc3\xa9", out, sizeof(out)), "\"caf\xc3\xa9\"");
}

TEST(quote_truncation_never_overflows_and_stays_quoted)
{
	static const char *const inputs[] = {
		"abcdefghijklmnopqrstuvwxyz0123456789",
		"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"",
		"\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12",
		"a\x01\\b\"\nc\x7f" "d\x02" "e\\f\"g\nh\x03ijk",
	};
	char out[64];
	size_t size, i, k;

	for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		for (size = 4; size <= 40; size++) {
			size_t len;

			memset(out, '#', sizeof(out));
			log_quote(inputs[i], out, size);
			len = strlen(out);
			CHECK(len < size);
			CHECK(len >= 2 && out[0] == '"' && out[len - 1] == '"');
			for (k = size; k < sizeof(out); k++) {
				if (out[k] != '#') {
					fprintf(stderr, "  input %zu size %zu: wrote byte %zu\n", i,
						size, k);
					CHECK(out[k] == '#');
					break;
				}
			}
			/* the closing quote is never escaped by a cut-off backslash */
			if (len >= 3) {
				size_t bs = 0;

				for (k = len - 1; k > 1 && out[k - 1] == '\\'; k--)
					bs++;
				CHECK(bs % 2 == 0);
			}
		}
	}
}

TEST(level_names_parse_to_levels)
{
	enum log_level level = LOG_LEVEL_ERROR;

	CHECK(log_level_from_string("debug", &level) == 0 && level == LOG_LEVEL_DEBUG);
	CHECK(log_level_from_string("info", &level) == 0 && level == LOG_LEVEL_INFO);
	CHECK(log_level_from_string("warn", &level) == 0 && level == LOG_LEVEL_WARN);
	CHECK(log_level_from_string("error", &level) == 0 && level == LOG_LEVEL_ERROR);
}

TEST(unknown_level_names_are_refused_and_level_untouched)
{
	enum log_level level = LOG_LEVEL_WARN;

	CHECK(log_level_from_string("", &level) == -EINVAL);
	CHECK(log_level_from_string("INFO", &level) == -EINVAL);
	CHECK(log_level_from_string("warning", &level) == -EINVAL);
	CHECK(log_level_from_string("info ", &level) == -EINVAL);
	CHECK(log_level_from_string("trace", &level) == -EINVAL);
	CHECK(level == LOG_LEVEL_WARN);
}

TEST(level_threshold_decides_what_is_enabled)
{
	log_set_level(LOG_LEVEL_WARN);
	CHECK(!log_enabled(LOG_LEVEL_DEBUG));
	CHECK(!log_enabled(LOG_LEVEL_INFO));
	CHECK(log_enabled(LOG_LEVEL_WARN));
	CHECK(log_enabled(LOG_LEVEL_ERROR));
	log_set_level(LOG_LEVEL_INFO);
	CHECK(!log_enabled(LOG_LEVEL_DEBUG));
	CHECK(log_enabled(LOG_LEVEL_INFO));
}

TEST(access_log_defaults_to_misses_and_modes_parse)
{
	enum log_access_mode m = LOG_ACCESS_ALL;

	CHECK(log_access_mode() == LOG_ACCESS_MISSES);
	CHECK(log_access_enabled());
	CHECK(log_access_mode_from_string("off", &m) == 0 && m == LOG_ACCESS_OFF);
	CHECK(log_access_mode_from_string("all", &m) == 0 && m == LOG_ACCESS_ALL);
	CHECK(log_access_mode_from_string("misses", &m) == 0 && m == LOG_ACCESS_MISSES);
	CHECK(log_access_mode_from_string("no", &m) == 0 && m == LOG_ACCESS_OFF);
	CHECK(log_access_mode_from_string("yes", &m) == 0 && m == LOG_ACCESS_ALL);
	CHECK(log_access_mode_from_string("hits", &m) == -EINVAL && m == LOG_ACCESS_ALL);
	log_set_access_mode(LOG_ACCESS_OFF);
	CHECK(!log_access_enabled());
	log_set_access_mode(LOG_ACCESS_MISSES);
	CHECK(log_access_enabled());
}

static void emit_access_line(const struct emit *e)
{
	struct log_line l;

	log_line_begin(&l, e->level, e->event);
	log_line_str(&l, "request_id", "00ab");
	log_line_str(&l, "client", "");
	log_line_int(&l, "status", 503);
	log_line_int(&l, "neg", -42);
	log_line_str(&l, "code", "Proxy.QuotaWait");
	log_line_quoted(&l, "cache", "fwd=miss; detail=\"x\"");
	log_line_ms(&l, "duration_ms", 1234567);
	log_line_ms(&l, "small_ms", 7);
	log_line_ms(&l, "neg_ms", -1500);
	log_line_commit(&l);
}

TEST(line_builder_writes_logfmt_fields_without_printf)
{
	struct emit e = { LOG_LEVEL_INFO, "access", NULL, emit_access_line };
	char got[CAPTURE_MAX];

	REQUIRE(capture(&e, got, sizeof(got)) == 0);
	CHECK(valid_ts_prefix(got));
	CHECK(strstr(got, " level=info event=access request_id=00ab client=- status=503 neg=-42 "
			  "code=Proxy.QuotaWait cache=\"fwd=miss; detail=\\\"x\\\"\" "
			  "duration_ms=1234.567 small_ms=0.007 neg_ms=-1.500\n") != NULL);
	CHECK(strchr(got, '\n') == got + strlen(got) - 1);
	if (harness_current_failed)
		fprintf(stderr, "  got [%s]\n", got);
}

TEST(journal_lines_carry_sd_daemon_priorities)
{
	static const struct {
		enum log_level level;
		const char *prefix;
	} cases[] = {
		{ LOG_LEVEL_ERROR, "<3>ts=" }, { LOG_LEVEL_WARN, "<4>ts=" },
		{ LOG_LEVEL_INFO, "<6>ts=" }, { LOG_LEVEL_DEBUG, "<7>ts=" },
	};
	char got[CAPTURE_MAX];

	log_set_level(LOG_LEVEL_DEBUG);
	log_set_journal(true);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct emit e = { cases[i].level, "access", NULL, emit_access_line };

		REQUIRE(capture_log(cases[i].level, "ev", "k=v", got, sizeof(got)) == 0);
		CHECK(strncmp(got, cases[i].prefix, strlen(cases[i].prefix)) == 0);
		CHECK(valid_ts_prefix(got + 3));
		REQUIRE(capture(&e, got, sizeof(got)) == 0);
		CHECK(strncmp(got, cases[i].prefix, strlen(cases[i].prefix)) == 0);
	}
	log_set_journal(false);
	REQUIRE(capture_log(LOG_LEVEL_ERROR, "ev", "k=v", got, sizeof(got)) == 0);
	CHECK(valid_ts_prefix(got));
	log_set_level(LOG_LEVEL_INFO);
}

/* Buffered: lines wait for a flush, then come out whole and in order. */
static void emit_buffered(const struct emit *e)
{
	struct log_line l;

	REQUIRE(log_init() == 0);
	for (int i = 0; i < 300; i++) {
		log_line_begin(&l, LOG_LEVEL_INFO, "access");
		log_line_int(&l, "n", i);
		log_line_commit(&l);
	}
	/* A rare line goes at once, after this thread's buffered ones. */
	log_event(LOG_LEVEL_WARN, "late", "n=%d", 300);
	for (int i = 301; i < 310; i++) {
		log_line_begin(&l, LOG_LEVEL_INFO, "access");
		log_line_int(&l, "n", i);
		log_line_commit(&l);
	}
	log_fini();
}

TEST(buffered_lines_are_all_written_in_order_by_log_fini)
{
	struct emit e = { LOG_LEVEL_INFO, "access", NULL, emit_buffered };
	static char got[64 * 1024];
	const char *p = got;
	int n = 0;

	REQUIRE(capture(&e, got, sizeof(got)) == 0);
	while (*p) {
		const char *nl = strchr(p, '\n'), *f = strstr(p, " n=");
		char want[16];

		REQUIRE(nl && f && f < nl);
		snprintf(want, sizeof(want), " n=%d\n", n);
		CHECK(strncmp(f, want, strlen(want)) == 0);
		p = nl + 1;
		n++;
	}
	CHECK(n == 310);
}

TEST(event_writes_one_logfmt_line_to_stderr)
{
	static const char tail[] = " level=warn event=upstream_call phone=8613*******78 code=OK\n";
	char got[CAPTURE_MAX];
	size_t len;

	log_set_level(LOG_LEVEL_INFO);
	REQUIRE(capture_log(LOG_LEVEL_WARN, "upstream_call", "phone=8613*******78 code=OK", got,
			    sizeof(got)) == 0);
	len = strlen(got);
	REQUIRE(len > sizeof(tail));
	CHECK(valid_ts_prefix(got));
	CHECK(strncmp(got + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1) == 0);
	CHECK(strchr(got, '\n') == got + len - 1);
	if (harness_current_failed)
		fprintf(stderr, "  got [%s]\n", got);
}

TEST(event_without_fields_has_no_trailing_space)
{
	char got[CAPTURE_MAX];
	size_t len;

	log_set_level(LOG_LEVEL_INFO);
	REQUIRE(capture_log(LOG_LEVEL_INFO, "startup", "", got, sizeof(got)) == 0);
	len = strlen(got);
	REQUIRE(len > 2);
	CHECK(valid_ts_prefix(got));
	CHECK(strstr(got, " level=info event=startup\n") != NULL);
	CHECK(got[len - 1] == '\n' && got[len - 2] != ' ');
	CHECK(strchr(got, '\n') == got + len - 1);
}

TEST(event_below_level_writes_nothing)
{
	char got[CAPTURE_MAX];

	log_set_level(LOG_LEVEL_INFO);
	REQUIRE(capture_log(LOG_LEVEL_DEBUG, "noise", "k=v", got, sizeof(got)) == 0);
	CHECK_STR(got, "");
	log_set_level(LOG_LEVEL_DEBUG);
	REQUIRE(capture_log(LOG_LEVEL_DEBUG, "noise", "k=v", got, sizeof(got)) == 0);
	CHECK(strstr(got, " level=debug event=noise k=v\n") != NULL);
	log_set_level(LOG_LEVEL_INFO);
}

TEST(event_with_oversized_fields_is_cut_to_one_line)
{
	char fields[5000], got[CAPTURE_MAX];
	size_t len;

	memset(fields, 'x', sizeof(fields) - 1);
	fields[sizeof(fields) - 1] = '\0';
	log_set_level(LOG_LEVEL_INFO);
	REQUIRE(capture_log(LOG_LEVEL_ERROR, "big", fields, got, sizeof(got)) == 0);
	len = strlen(got);
	REQUIRE(len > 0);
	CHECK(valid_ts_prefix(got));
	CHECK(strstr(got, " level=error event=big xxx") != NULL);
	CHECK(got[len - 1] == '\n');
	CHECK(strchr(got, '\n') == got + len - 1);
	CHECK(len <= 2048);
}

int main(void)
{
	RUN(mask_keeps_first_four_and_last_two_of_13_digit_number);
	RUN(mask_keeps_length_of_number);
	RUN(mask_of_nine_digit_number_shows_six);
	RUN(mask_of_short_numbers_shows_a_third_at_most);
	RUN(mask_never_shows_non_digits);
	RUN(mask_never_shows_more_than_six_digits_of_long_numbers);
	RUN(mask_truncates_to_out_size_without_overflow);
	RUN(quote_wraps_plain_text_in_double_quotes);
	RUN(quote_escapes_quotes_and_backslashes);
	RUN(quote_escapes_newline_so_a_value_stays_on_one_line);
	RUN(quote_writes_control_bytes_as_hex);
	RUN(quote_passes_utf8_bytes_through);
	RUN(quote_truncation_never_overflows_and_stays_quoted);
	RUN(level_names_parse_to_levels);
	RUN(unknown_level_names_are_refused_and_level_untouched);
	RUN(level_threshold_decides_what_is_enabled);
	RUN(access_log_defaults_to_misses_and_modes_parse);
	RUN(line_builder_writes_logfmt_fields_without_printf);
	RUN(journal_lines_carry_sd_daemon_priorities);
	RUN(buffered_lines_are_all_written_in_order_by_log_fini);
	RUN(event_writes_one_logfmt_line_to_stderr);
	RUN(event_without_fields_has_no_trailing_space);
	RUN(event_below_level_writes_nothing);
	RUN(event_with_oversized_fields_is_cut_to_one_line);
	return harness_done();
}
