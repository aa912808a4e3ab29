/*
 * test_buf.c -- unit tests for the bounded buffer: appends of every kind,
 * the hard maximum and its sticky error (an overflowing append and every
 * later one are dropped, the content stays as it was and NUL-terminated),
 * reset, steal and free.
 */
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TEST(empty_buffer_reads_as_empty_string)
{
	struct buf b;

	buf_init(&b, 16);
	CHECK_STR(buf_str(&b), "");
	CHECK(b.len == 0);
	CHECK(buf_error(&b) == 0);
	buf_free(&b);
}

TEST(appends_of_every_kind_concatenate)
{
	struct buf b;

	buf_init(&b, 1024);
	buf_add(&b, "abcXYZ", 3);
	buf_adds(&b, "def");
	buf_addc(&b, '-');
	buf_add(&b, "ignored", 0);
	buf_adds(&b, "");
	CHECK_STR(buf_str(&b), "abcdef-");
	CHECK(b.len == 7);
	CHECK(buf_error(&b) == 0);
	buf_free(&b);
}

TEST(add_copies_embedded_nul_bytes_and_counts_them)
{
	struct buf b;

	buf_init(&b, 16);
	buf_add(&b, "a\0b", 3);
	CHECK(b.len == 3);
	CHECK(memcmp(b.data, "a\0b", 4) == 0);
	buf_free(&b);
}

TEST(printf_formats_and_appends)
{
	struct buf b;

	buf_init(&b, 1024);
	buf_adds(&b, "n=");
	buf_printf(&b, "%d,%s,%05.1f,%llu", -42, "str", 3.14159, 18446744073709551615ULL);
	CHECK_STR(buf_str(&b), "n=-42,str,003.1,18446744073709551615");
	CHECK(b.len == strlen(buf_str(&b)));
	CHECK(buf_error(&b) == 0);
	buf_free(&b);
}

TEST(printf_of_empty_string_keeps_buffer_valid)
{
	struct buf b;

	buf_init(&b, 8);
	buf_printf(&b, "%s", "");
	CHECK_STR(buf_str(&b), "");
	CHECK(buf_error(&b) == 0);
	buf_free(&b);
}

TEST(hex_is_lower_case_two_digits_per_byte)
{
	static const unsigned char bytes[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
	struct buf b;

	buf_init(&b, 64);
	buf_adds(&b, "x:");
	buf_addhex(&b, bytes, sizeof(bytes));
	buf_addhex(&b, bytes, 0);
	CHECK_STR(buf_str(&b), "x:00017f80abff");
	CHECK(b.len == 14);
	buf_free(&b);
}

TEST(growth_past_initial_capacity_keeps_content)
{
	struct buf b;
	size_t i;
	int ok = 1;

	buf_init(&b, 100000);
	for (i = 0; i < 10000; i++)
		buf_addc(&b, (char)('a' + i % 26));
	REQUIRE(buf_error(&b) == 0);
	REQUIRE(b.len == 10000);
	for (i = 0; i < 10000; i++)
		ok &= b.data[i] == (char)('a' + i % 26);
	CHECK(ok);
	CHECK(b.data[10000] == '\0');
	CHECK(b.cap <= 100001);
	buf_free(&b);
}

TEST(append_filling_exactly_the_maximum_succeeds)
{
	struct buf b;

	buf_init(&b, 8);
	buf_adds(&b, "1234");
	buf_adds(&b, "5678");
	CHECK(buf_error(&b) == 0);
	CHECK_STR(buf_str(&b), "12345678");
	CHECK(b.cap <= 9);
	buf_free(&b);
}

TEST(append_past_maximum_sets_e2big_and_leaves_content_unchanged)
{
	struct buf b;

	buf_init(&b, 8);
	buf_adds(&b, "12345");
	buf_adds(&b, "6789");
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "12345");
	CHECK(b.len == 5);
	buf_free(&b);
}

TEST(every_append_after_overflow_is_dropped)
{
	struct buf b;
	static const unsigned char one = 0xaa;

	buf_init(&b, 8);
	buf_adds(&b, "abc");
	buf_adds(&b, "this is far too long");
	REQUIRE(buf_error(&b) == -E2BIG);
	/* each of these would fit on its own: the error is sticky */
	buf_addc(&b, 'd');
	buf_adds(&b, "e");
	buf_add(&b, "f", 1);
	buf_add(&b, "", 0);
	buf_printf(&b, "%d", 7);
	buf_addhex(&b, &one, 1);
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "abc");
	CHECK(b.len == 3);
	CHECK(b.data[b.len] == '\0');
	buf_free(&b);
}

TEST(printf_past_maximum_sets_e2big_and_leaves_content_unchanged)
{
	struct buf b;

	buf_init(&b, 10);
	buf_printf(&b, "%s", "0123");
	buf_printf(&b, "%d", 1234567);
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "0123");
	buf_free(&b);
}

TEST(hex_past_maximum_sets_e2big_and_leaves_content_unchanged)
{
	static const unsigned char bytes[] = { 1, 2, 3 };
	struct buf b;

	buf_init(&b, 5);
	buf_adds(&b, "x");
	buf_addhex(&b, bytes, sizeof(bytes)); /* 6 more bytes: 7 > 5 */
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "x");
	buf_free(&b);
}

TEST(overflow_on_first_append_leaves_empty_string)
{
	struct buf b;

	buf_init(&b, 3);
	buf_adds(&b, "abcd");
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "");
	CHECK(b.len == 0);
	buf_free(&b);
}

TEST(zero_maximum_accepts_only_empty_appends)
{
	struct buf b;

	buf_init(&b, 0);
	buf_add(&b, "", 0);
	CHECK(buf_error(&b) == 0);
	CHECK_STR(buf_str(&b), "");
	buf_addc(&b, 'x');
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "");
	buf_free(&b);
}

TEST(huge_append_length_does_not_wrap_the_bound)
{
	struct buf b;

	buf_init(&b, 16);
	buf_adds(&b, "abc");
	/* SIZE_MAX would wrap a naive len + n check; the pointer is never read */
	buf_add(&b, "x", (size_t)-1);
	CHECK(buf_error(&b) == -E2BIG);
	CHECK_STR(buf_str(&b), "abc");
	buf_free(&b);
}

TEST(reset_clears_error_and_content_so_buffer_is_reusable)
{
	struct buf b;

	buf_init(&b, 6);
	buf_adds(&b, "abcd");
	buf_adds(&b, "efgh");
	REQUIRE(buf_error(&b) == -E2BIG);
	buf_reset(&b);
	CHECK(buf_error(&b) == 0);
	CHECK_STR(buf_str(&b), "");
	CHECK(b.len == 0);
	buf_adds(&b, "xyz123");
	CHECK(buf_error(&b) == 0);
	CHECK_STR(buf_str(&b), "xyz123");
	buf_free(&b);
}

TEST(reset_of_never_used_buffer_is_harmless)
{
	struct buf b;

	buf_init(&b, 4);
	buf_reset(&b);
	CHECK_STR(buf_str(&b), "");
	CHECK(buf_error(&b) == 0);
	buf_free(&b);
}

TEST(steal_hands_over_content_and_leaves_buffer_empty)
{
	struct buf b;
	size_t len = 0;
	char *s;

	buf_init(&b, 64);
	buf_adds(&b, "hello ");
	buf_printf(&b, "%s", "world");
	s = buf_steal(&b, &len);
	REQUIRE(s != NULL);
	CHECK_STR(s, "hello world");
	CHECK(len == 11);
	CHECK(b.data == NULL);
	CHECK(b.len == 0);
	CHECK_STR(buf_str(&b), "");
	/* the buffer is usable again and does not share memory with s */
	buf_adds(&b, "again");
	CHECK_STR(buf_str(&b), "again");
	CHECK_STR(s, "hello world");
	free(s);
	buf_free(&b);
}

TEST(steal_of_empty_buffer_returns_freeable_empty_string)
{
	struct buf b;
	size_t len = 99;
	char *s;

	buf_init(&b, 64);
	s = buf_steal(&b, &len);
	REQUIRE(s != NULL);
	CHECK_STR(s, "");
	CHECK(len == 0);
	free(s);
	s = buf_steal(&b, NULL);
	REQUIRE(s != NULL);
	CHECK_STR(s, "");
	free(s);
	buf_free(&b);
}

TEST(free_accepts_null_and_never_used_buffer_and_double_free)
{
	struct buf b;

	buf_free(NULL);
	buf_free_wipe(NULL);
	buf_init(&b, 16);
	buf_free(&b);
	buf_free(&b);
	CHECK(b.data == NULL);
	CHECK(b.len == 0 && b.cap == 0);
	buf_init(&b, 16);
	buf_free_wipe(&b);
	buf_free_wipe(&b);
	CHECK(b.data == NULL);
}

TEST(buffer_is_reusable_after_free_and_init)
{
	struct buf b;

	buf_init(&b, 16);
	buf_adds(&b, "first");
	buf_free(&b);
	buf_init(&b, 16);
	buf_adds(&b, "second");
	CHECK_STR(buf_str(&b), "second");
	buf_free(&b);
}

TEST(free_wipe_releases_a_used_buffer)
{
	struct buf b;

	buf_init(&b, 128);
	buf_adds(&b, "secret-derived material");
	buf_free_wipe(&b);
	CHECK(b.data == NULL);
	CHECK(b.len == 0 && b.cap == 0);
}

TEST(quoted_escapes_unprintables_keeps_nuls_and_cuts_long_values)
{
	struct buf b;

	buf_init(&b, 1024);
	buf_add_quoted(&b, "a\"b\\c\0d\n", 8, 80);
	CHECK_STR(buf_str(&b), "\"a\\\"b\\\\c\\x00d\\x0a\"");
	buf_reset(&b);
	buf_add_quoted(&b, "abcdef", 6, 3);
	CHECK_STR(buf_str(&b), "\"abc\" (6 bytes)");
	buf_free(&b);
}

int main(void)
{
	RUN(empty_buffer_reads_as_empty_string);
	RUN(appends_of_every_kind_concatenate);
	RUN(add_copies_embedded_nul_bytes_and_counts_them);
	RUN(printf_formats_and_appends);
	RUN(printf_of_empty_string_keeps_buffer_valid);
	RUN(hex_is_lower_case_two_digits_per_byte);
	RUN(growth_past_initial_capacity_keeps_content);
	RUN(append_filling_exactly_the_maximum_succeeds);
	RUN(append_past_maximum_sets_e2big_and_leaves_content_unchanged);
	RUN(every_append_after_overflow_is_dropped);
	RUN(printf_past_maximum_sets_e2big_and_leaves_content_unchanged);
	RUN(hex_past_maximum_sets_e2big_and_leaves_content_unchanged);
	RUN(overflow_on_first_append_leaves_empty_string);
	RUN(zero_maximum_accepts_only_empty_appends);
	RUN(huge_append_length_does_not_wrap_the_bound);
	RUN(reset_clears_error_and_content_so_buffer_is_reusable);
	RUN(reset_of_never_used_buffer_is_harmless);
	RUN(steal_hands_over_content_and_leaves_buffer_empty);
	RUN(steal_of_empty_buffer_returns_freeable_empty_string);
	RUN(free_accepts_null_and_never_used_buffer_and_double_free);
	RUN(buffer_is_reusable_after_free_and_init);
	RUN(free_wipe_releases_a_used_buffer);
	RUN(quoted_escapes_unprintables_keeps_nuls_and_cuts_long_values);
	return harness_done();
}
