/*
 * test_span.c -- unit tests for spans: trim, split, comparisons, the one
 * number parser (span_to_u64 / str_to_u64: empty, signs, junk, spaces,
 * overflow, bounds, the 20-digit maximum), span_copy and the one number
 * printer (span_format_i64: zero, signs, both extremes, no write past the NUL).
 */
#include "span.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

#define SENTINEL UINT64_C(0xdeadbeef)

static int span_is(struct span s, const char *expected)
{
	return s.len == strlen(expected) && memcmp(s.p, expected, s.len) == 0;
}

/* Parse s with full u64 bounds; *ret_v stays SENTINEL on failure. */
static int parse(const char *s, uint64_t *ret_v)
{
	*ret_v = SENTINEL;
	return str_to_u64(s, 0, UINT64_MAX, ret_v);
}

TEST(cstr_span_covers_the_whole_string)
{
	struct span s = span_cstr("hello");

	CHECK(s.len == 5);
	CHECK(span_is(s, "hello"));
	CHECK(span_cstr("").len == 0);
}

TEST(trim_drops_leading_and_trailing_spaces_and_tabs_only)
{
	CHECK(span_is(span_trim(span_cstr("  a b\t ")), "a b"));
	CHECK(span_is(span_trim(span_cstr("\t\tx")), "x"));
	CHECK(span_is(span_trim(span_cstr("x  ")), "x"));
	CHECK(span_is(span_trim(span_cstr("x")), "x"));
	CHECK(span_is(span_trim(span_cstr(" \nx\r ")), "\nx\r"));
}

TEST(trim_of_blank_or_empty_span_is_empty)
{
	CHECK(span_trim(span_cstr(" \t \t")).len == 0);
	CHECK(span_trim(span_cstr("")).len == 0);
	CHECK(span_trim(span_make(NULL, 0)).len == 0);
}

TEST(trim_respects_span_length_not_nul)
{
	/* the span ends before the trailing "zz" */
	struct span s = span_trim(span_make(" ab zz", 4));

	CHECK(span_is(s, "ab"));
}

TEST(split_cuts_at_first_separator)
{
	struct span head, tail;

	REQUIRE(span_split(span_cstr("k=v=w"), '=', &head, &tail));
	CHECK(span_is(head, "k"));
	CHECK(span_is(tail, "v=w"));
}

TEST(split_gives_empty_head_or_tail_at_the_edges)
{
	struct span head, tail;

	REQUIRE(span_split(span_cstr("=v"), '=', &head, &tail));
	CHECK(head.len == 0);
	CHECK(span_is(tail, "v"));
	REQUIRE(span_split(span_cstr("k="), '=', &head, &tail));
	CHECK(span_is(head, "k"));
	CHECK(tail.len == 0);
	REQUIRE(span_split(span_cstr("="), '=', &head, &tail));
	CHECK(head.len == 0 && tail.len == 0);
}

TEST(split_without_separator_fails_and_leaves_outputs)
{
	struct span head = span_cstr("H"), tail = span_cstr("T");

	CHECK(!span_split(span_cstr("abc"), '=', &head, &tail));
	CHECK(!span_split(span_cstr(""), '=', &head, &tail));
	CHECK(!span_split(span_make(NULL, 0), '=', &head, &tail));
	/* the separator beyond the span's length does not count */
	CHECK(!span_split(span_make("ab=c", 2), '=', &head, &tail));
	CHECK(span_is(head, "H"));
	CHECK(span_is(tail, "T"));
}

TEST(eq_compares_length_and_bytes)
{
	CHECK(span_eq(span_cstr("abc"), "abc"));
	CHECK(!span_eq(span_cstr("abc"), "ab"));
	CHECK(!span_eq(span_cstr("ab"), "abc"));
	CHECK(!span_eq(span_cstr("abc"), "ABC"));
	CHECK(span_eq(span_cstr(""), ""));
	CHECK(span_eq(span_make("abcdef", 3), "abc"));
}

TEST(eq_nocase_ignores_ascii_case_only)
{
	CHECK(span_eq_nocase(span_cstr("No-Cache"), "no-cache"));
	CHECK(span_eq_nocase(span_cstr("NO-CACHE"), "no-cache"));
	CHECK(!span_eq_nocase(span_cstr("no-cache"), "no-cachex"));
	CHECK(!span_eq_nocase(span_cstr("no-cachex"), "no-cache"));
	CHECK(!span_eq_nocase(span_cstr("no_cache"), "no-cache"));
	CHECK(span_eq_nocase(span_make("ABCdef", 3), "abc"));
}

TEST(starts_with_checks_prefix_within_span)
{
	CHECK(span_starts_with(span_cstr("/v1/phone"), "/v1/"));
	CHECK(span_starts_with(span_cstr("/v1/"), "/v1/"));
	CHECK(span_starts_with(span_cstr("abc"), ""));
	CHECK(!span_starts_with(span_cstr("/v1"), "/v1/"));
	CHECK(!span_starts_with(span_cstr("/V1/x"), "/v1/"));
	CHECK(!span_starts_with(span_make("/v1/", 3), "/v1/"));
}

TEST(number_parser_accepts_plain_decimals)
{
	uint64_t v;

	CHECK(parse("0", &v) == 0 && v == 0);
	CHECK(parse("7", &v) == 0 && v == 7);
	CHECK(parse("600000", &v) == 0 && v == 600000);
	CHECK(parse("007", &v) == 0 && v == 7);
}

TEST(number_parser_refuses_empty)
{
	uint64_t v;

	CHECK(parse("", &v) == -EINVAL && v == SENTINEL);
	v = SENTINEL;
	CHECK(span_to_u64(span_make(NULL, 0), 0, 10, &v) == -EINVAL && v == SENTINEL);
}

TEST(number_parser_refuses_signs)
{
	uint64_t v;

	CHECK(parse("+1", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("-1", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("-0", &v) == -EINVAL && v == SENTINEL);
}

TEST(number_parser_refuses_junk)
{
	uint64_t v;

	CHECK(parse("12a", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("a12", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("0x10", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("1e3", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("1.5", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("1_000", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("\xd9\xa1", &v) == -EINVAL && v == SENTINEL); /* Arabic-Indic one */
}

TEST(number_parser_refuses_leading_and_trailing_spaces)
{
	uint64_t v;

	CHECK(parse(" 1", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("\t1", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("\n1", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("1 ", &v) == -EINVAL && v == SENTINEL);
	CHECK(parse("1 2", &v) == -EINVAL && v == SENTINEL);
}

TEST(number_parser_accepts_the_largest_u64)
{
	uint64_t v;

	CHECK(parse("18446744073709551615", &v) == 0 && v == UINT64_MAX);
}

TEST(number_parser_reports_overflow_as_erange)
{
	uint64_t v;

	CHECK(parse("18446744073709551616", &v) == -ERANGE && v == SENTINEL);
	CHECK(parse("18446744073709551620", &v) == -ERANGE && v == SENTINEL);
	CHECK(parse("99999999999999999999", &v) == -ERANGE && v == SENTINEL);
	CHECK(parse("20000000000000000000", &v) == -ERANGE && v == SENTINEL);
}

TEST(number_parser_refuses_more_than_20_digits)
{
	uint64_t v;

	/* 20 digits with leading zeros are fine ... */
	CHECK(parse("00000000000000000001", &v) == 0 && v == 1);
	/* ... 21 are not, whatever their value */
	v = SENTINEL;
	CHECK(parse("000000000000000000001", &v) < 0 && v == SENTINEL);
	CHECK(parse("100000000000000000000", &v) < 0 && v == SENTINEL);
}

TEST(number_parser_enforces_inclusive_bounds)
{
	uint64_t v = SENTINEL;

	CHECK(str_to_u64("5", 5, 10, &v) == 0 && v == 5);
	CHECK(str_to_u64("10", 5, 10, &v) == 0 && v == 10);
	v = SENTINEL;
	CHECK(str_to_u64("4", 5, 10, &v) == -ERANGE && v == SENTINEL);
	CHECK(str_to_u64("11", 5, 10, &v) == -ERANGE && v == SENTINEL);
	CHECK(str_to_u64("0", 1, UINT64_MAX, &v) == -ERANGE && v == SENTINEL);
	CHECK(str_to_u64("600001", 0, 600000, &v) == -ERANGE && v == SENTINEL);
	CHECK(str_to_u64("7", 7, 7, &v) == 0 && v == 7);
}

TEST(span_number_parser_reads_only_the_span)
{
	uint64_t v = SENTINEL;

	CHECK(span_to_u64(span_make("123abc", 3), 0, UINT64_MAX, &v) == 0 && v == 123);
	v = SENTINEL;
	CHECK(span_to_u64(span_make("123abc", 4), 0, UINT64_MAX, &v) == -EINVAL);
	CHECK(v == SENTINEL);
}

TEST(copy_writes_span_and_nul_when_it_fits)
{
	char dst[8];

	memset(dst, 'X', sizeof(dst));
	CHECK(span_copy(span_cstr("abc"), dst, sizeof(dst)) == 0);
	CHECK_STR(dst, "abc");
	CHECK(span_copy(span_cstr("1234567"), dst, sizeof(dst)) == 0);
	CHECK_STR(dst, "1234567");
	CHECK(span_copy(span_make("abcdef", 2), dst, sizeof(dst)) == 0);
	CHECK_STR(dst, "ab");
	CHECK(span_copy(span_cstr(""), dst, 1) == 0);
	CHECK(dst[0] == '\0');
}

TEST(copy_too_small_fails_with_e2big_and_leaves_dst)
{
	char dst[8] = "keep";

	CHECK(span_copy(span_cstr("12345678"), dst, sizeof(dst)) == -E2BIG);
	CHECK_STR(dst, "keep");
	CHECK(span_copy(span_cstr("a"), dst, 1) == -E2BIG);
	CHECK(span_copy(span_cstr(""), dst, 0) == -E2BIG);
	CHECK_STR(dst, "keep");
}

TEST(trim_ws_drops_every_ascii_space_and_line_ending_at_both_ends_only)
{
	struct span s = span_trim_ws(span_cstr(" \t\r\n a \t b\v\f\r\n"));

	CHECK(s.len == 5 && memcmp(s.p, "a \t b", 5) == 0);
	CHECK(span_trim_ws(span_cstr(" \n\t")).len == 0);
	CHECK(span_trim_ws(span_make("", 0)).len == 0);
}

TEST(format_i64_prints_every_range_in_decimal_with_a_nul)
{
	static const struct {
		int64_t v;
		const char *want;
	} cases[] = {
		{ 0, "0" }, { 7, "7" }, { 10, "10" }, { -42, "-42" }, { 86388, "86388" },
		{ INT64_MAX, "9223372036854775807" }, { INT64_MIN, "-9223372036854775808" },
	};
	char out[SPAN_I64_SIZE + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 'X', sizeof(out));
		CHECK(span_format_i64(cases[i].v, out) == strlen(cases[i].want));
		CHECK_STR(out, cases[i].want);
	}
	/* the longest fills the buffer exactly: nothing past the NUL */
	memset(out, 'X', sizeof(out));
	CHECK(span_format_i64(INT64_MIN, out) == SPAN_I64_SIZE - 1);
	CHECK(out[SPAN_I64_SIZE] == 'X');
}

int main(void)
{
	RUN(cstr_span_covers_the_whole_string);
	RUN(trim_drops_leading_and_trailing_spaces_and_tabs_only);
	RUN(trim_of_blank_or_empty_span_is_empty);
	RUN(trim_respects_span_length_not_nul);
	RUN(split_cuts_at_first_separator);
	RUN(split_gives_empty_head_or_tail_at_the_edges);
	RUN(split_without_separator_fails_and_leaves_outputs);
	RUN(eq_compares_length_and_bytes);
	RUN(eq_nocase_ignores_ascii_case_only);
	RUN(starts_with_checks_prefix_within_span);
	RUN(number_parser_accepts_plain_decimals);
	RUN(number_parser_refuses_empty);
	RUN(number_parser_refuses_signs);
	RUN(number_parser_refuses_junk);
	RUN(number_parser_refuses_leading_and_trailing_spaces);
	RUN(number_parser_accepts_the_largest_u64);
	RUN(number_parser_reports_overflow_as_erange);
	RUN(number_parser_refuses_more_than_20_digits);
	RUN(number_parser_enforces_inclusive_bounds);
	RUN(span_number_parser_reads_only_the_span);
	RUN(copy_writes_span_and_nul_when_it_fits);
	RUN(copy_too_small_fails_with_e2big_and_leaves_dst);
	RUN(trim_ws_drops_every_ascii_space_and_line_ending_at_both_ends_only);
	RUN(format_i64_prints_every_range_in_decimal_with_a_nul);
	return harness_done();
}
