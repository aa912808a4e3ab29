/*
 * route.h -- what a request asks for: the path router and the validation of
 * every caller-supplied parameter (PhoneNumber, CustSpaceId, max_wait_ms,
 * Cache-Control). Every value is taken with its length, whole: a NUL byte
 * is data to refuse, never the end of a value. Pure: no I/O, never logs.
 * Threads: any.
 */
#ifndef CAMSKEYD_ROUTE_H
#define CAMSKEYD_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cams.h"

enum route_kind {
	ROUTE_NOT_FOUND = 0,
	ROUTE_KEY,      /* /v1/phone-numbers/{PhoneNumber}/encryption-public-key */
	ROUTE_HEALTHZ,
	ROUTE_READYZ,
	ROUTE_METRICS,
	ROUTE_SDK,      /* / : the drop-in endpoint for the official SDKs */
};

#define ROUTE_KEY_PREFIX "/v1/phone-numbers/"
#define ROUTE_KEY_SUFFIX "/encryption-public-key"

/* A client-visible validation failure: the Code and a Message. */
struct route_error {
	const char *code;     /* "InvalidParameter.PhoneNumber", ... */
	char message[160];
};

/*
 * Percent-decode a raw request path (what the request line says, before
 * '?') into out, with its length: a %00 becomes a NUL byte *inside* the
 * result instead of ending it, so a later check can refuse it. Malformed
 * escapes ("%", "%zz") stay as they are (libmicrohttpd does the same);
 * '+' is not a space in a path. out is always NUL-terminated after
 * *ret_len bytes. 0, or -E2BIG when out (out_size) cannot hold the result.
 */
int route_decode_path(const char *raw, size_t raw_len, char *out, size_t out_size,
		      size_t *ret_len);

/*
 * Route a decoded path of len bytes (NUL bytes in it are data, never an
 * end). For ROUTE_KEY, ret_key->phone is validated (5..20 ASCII digits: a
 * NUL or any other byte in the phone segment is a bad phone number, not an
 * unknown route) and cust_space_id left empty. 0, or -EINVAL with ret_err
 * filled (the path is a key path but the phone is invalid).
 */
int route_parse_path(const char *path, size_t len, enum route_kind *ret_kind,
		     struct cams_key *ret_key, struct route_error *ret_err);

/* The query parameters of the key route. Names are exact, as CAMS's are. */
enum route_param {
	ROUTE_PARAM_UNKNOWN = 0,
	ROUTE_PARAM_CUST_SPACE_ID,  /* CustSpaceId */
	ROUTE_PARAM_MAX_WAIT_MS,    /* max_wait_ms */
};

/*
 * Which key-route parameter a query name of len bytes is: byte-exact
 * ("custspaceid" and "CustSpaceId\0x" are unknown). For an unknown one
 * ret_err (may be NULL) gets 400's Proxy.UnknownParameter naming it.
 */
enum route_param route_key_param(const char *name, size_t len, struct route_error *ret_err);

/* Fill ret_err for a parameter given more than once. Returns -EINVAL. */
int route_duplicate_param(enum route_param param, struct route_error *ret_err);

/*
 * Validate PhoneNumber (5..20 ASCII digits; len bytes of value, NUL bytes
 * included and refused) into key->phone. 0 or -EINVAL.
 */
int route_set_phone(const char *value, size_t len, struct cams_key *key,
		    struct route_error *ret_err);

/*
 * Validate CustSpaceId ([A-Za-z0-9._~-], 1..64 bytes; len bytes of value,
 * NUL bytes included and refused) into key. 0 or -EINVAL.
 */
int route_set_cust_space_id(const char *value, size_t len, struct cams_key *key,
			    struct route_error *ret_err);

/*
 * Parse max_wait_ms (len bytes, decimal 0..600000). 0 is a value ("do not
 * wait for quota"), not "absent". 0 or -EINVAL.
 */
int route_parse_max_wait_ms(const char *value, size_t len, uint32_t *ret_ms,
			    struct route_error *ret_err);

/* What a Cache-Control request header asks (RFC 9111 request directives). */
struct route_cache_control {
	bool no_cache;        /* no-cache: revalidate upstream */
	bool no_stale;        /* max-stale=0 or max-age=0: never stale */
	bool only_if_cached;  /* only-if-cached: never call upstream */
	int64_t max_age_s;    /* max-age=N: no stored answer older than N s; -1 absent */
};

/*
 * Parse a Cache-Control header value of len bytes (NULL ok: absent).
 * Unknown directives and malformed arguments are ignored; of several
 * max-age directives the smallest wins.
 */
void route_parse_cache_control(const char *value, size_t len, struct route_cache_control *ret);

#endif
