/*
 * route.h -- what a request asks for: the path router and the validation of
 * every caller-supplied parameter (PhoneNumber, CustSpaceId, max_wait_ms,
 * Cache-Control). Pure: no I/O, never logs. Threads: any.
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
};

#define ROUTE_KEY_PREFIX "/v1/phone-numbers/"
#define ROUTE_KEY_SUFFIX "/encryption-public-key"

/* A client-visible validation failure: the Code and a Message. */
struct route_error {
	const char *code;     /* "InvalidParameter.PhoneNumber", ... */
	char message[160];
};

/*
 * Route a decoded path. For ROUTE_KEY, ret_key->phone is validated (5..20
 * ASCII digits) and cust_space_id left empty. 0, or -EINVAL with ret_err
 * filled (the path is a key path but the phone is invalid).
 */
int route_parse_path(const char *path, enum route_kind *ret_kind, struct cams_key *ret_key,
		     struct route_error *ret_err);

/* Validate CustSpaceId ([A-Za-z0-9._~-], 1..64 bytes) into key. 0 or -EINVAL. */
int route_set_cust_space_id(const char *value, size_t len, struct cams_key *key,
			    struct route_error *ret_err);

/* Parse max_wait_ms (0..600000). 0 or -EINVAL. */
int route_parse_max_wait_ms(const char *value, uint32_t *ret_ms, struct route_error *ret_err);

/* What a Cache-Control request header asks (RFC 9111 request directives). */
struct route_cache_control {
	bool no_cache;        /* no-cache: revalidate upstream */
	bool no_stale;        /* max-stale=0 (or no "max-stale" tolerance): never stale */
	bool only_if_cached;  /* only-if-cached: never call upstream */
};

/* Parse a Cache-Control header value (NULL ok). Unknown directives ignored. */
void route_parse_cache_control(const char *value, struct route_cache_control *ret);

#endif
