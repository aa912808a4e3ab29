/*
 * test_hex.c -- the hex encoder and SHA-256 hex: known vectors (FIPS 180-2
 * "abc", the empty string), every byte value, NUL termination, no write
 * past 2 * n + 1.
 */
#include <string.h>

#include "hex.h"
#include "harness.h"

TEST(every_byte_value_encodes_as_two_lower_case_digits)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char all[256];
	char out[513];

	for (unsigned i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	hex_encode_lower(all, sizeof(all), out);
	CHECK(strlen(out) == 512);
	for (unsigned i = 0; i < 256; i++) {
		CHECK(out[2 * i] == digits[i >> 4]);
		CHECK(out[2 * i + 1] == digits[i & 15]);
	}
}

TEST(encoding_writes_exactly_two_n_plus_one_bytes)
{
	const unsigned char in[] = { 0xde, 0xad };
	char out[8];

	memset(out, 'X', sizeof(out));
	hex_encode_lower(in, sizeof(in), out);
	CHECK_STR(out, "dead");
	CHECK(out[5] == 'X');
	hex_encode_lower(in, 0, out);
	CHECK_STR(out, "");
	CHECK(out[1] == 'e');
}

TEST(sha256_hex_matches_the_fips_vectors)
{
	char out[LIMIT_SHA256_HEX];

	REQUIRE(hex_sha256("abc", 3, out) == 0);
	CHECK_STR(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	REQUIRE(hex_sha256(NULL, 0, out) == 0);
	CHECK_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	REQUIRE(hex_sha256("", 0, out) == 0);
	CHECK_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(digit_value_reads_both_cases_and_refuses_the_rest)
{
	CHECK(hex_digit_value('0') == 0 && hex_digit_value('9') == 9);
	CHECK(hex_digit_value('a') == 10 && hex_digit_value('F') == 15);
	CHECK(hex_digit_value('g') == -1 && hex_digit_value('\0') == -1);
	CHECK(hex_digit_value('/') == -1 && hex_digit_value(':') == -1);
}

int main(void)
{
	RUN(every_byte_value_encodes_as_two_lower_case_digits);
	RUN(encoding_writes_exactly_two_n_plus_one_bytes);
	RUN(sha256_hex_matches_the_fips_vectors);
	RUN(digit_value_reads_both_cases_and_refuses_the_rest);
	return harness_done();
}
