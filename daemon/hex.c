/*
 * hex.c -- lower-case hex and SHA-256 hex (see hex.h).
 *
 * Owns nothing. The digest goes through OpenSSL's EVP interface, whose
 * error queue is per thread. Pure: no logging, no clocks. Threads: any.
 */
#include "hex.h"

#include <errno.h>

#include <openssl/evp.h>

void hex_encode_lower(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

int hex_sha256(const void *p, size_t n, char ret_hex[LIMIT_SHA256_HEX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(p ? p : "", n, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
		return -EIO;
	hex_encode_lower(md, md_len, ret_hex);
	return 0;
}

int hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
