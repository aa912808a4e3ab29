/*
 * hex.h -- lower-case hex encoding, and the SHA-256 of a byte string as
 * lower-case hex: the one encoder behind ETags, token digests, nonces and
 * the V3 signature (the signer's RFC 3986 percent-escapes use upper-case
 * hex by that RFC's rule and keep their own table).
 * Pure: never logs, no allocation. Threads: any.
 */
#ifndef CAMSKEYD_HEX_H
#define CAMSKEYD_HEX_H

#include <stddef.h>

#include "bounds.h"

/*
 * Write the n bytes at p as 2 * n lower-case hex digits and a NUL to out,
 * which must hold 2 * n + 1 bytes. Always succeeds.
 */
void hex_encode_lower(const unsigned char *p, size_t n, char *out);

/*
 * SHA-256 of the n bytes at p (NULL with n == 0 is the empty string) as 64
 * lower-case hex digits and a NUL into ret_hex. 0, or -EIO if OpenSSL
 * fails (ret_hex untouched).
 */
int hex_sha256(const void *p, size_t n, char ret_hex[LIMIT_SHA256_HEX]);

/* The value of one hex digit (either case), or -1 if c is not one. */
int hex_digit_value(char c);

#endif
