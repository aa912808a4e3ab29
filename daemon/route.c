/*
 * route.c -- the path router and parameter validation (see route.h).
 *
 * Every caller-supplied string is checked here against a closed set of
 * characters and a length bound before any other module sees it; nothing
 * downstream needs to escape a PhoneNumber or a CustSpaceId.
 * Does not: decode percent-escapes (libmicrohttpd hands over decoded
 * values) or look at headers other than Cache-Control.
 */
#include "route.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "span.h"

static int fail(struct route_error *err, const char *code, const char *message)
{
	err->code = code;
	snprintf(err->message, sizeof(err->message), "%s", message);
	return -EINVAL;
}

int route_parse_path(const char *path, enum route_kind *ret_kind, struct cams_key *ret_key,
		     struct route_error *ret_err)
{
	struct span p = span_cstr(path), phone;
	size_t i;

	if (span_eq(p, "/healthz")) {
		*ret_kind = ROUTE_HEALTHZ;
		return 0;
	}
	if (span_eq(p, "/readyz")) {
		*ret_kind = ROUTE_READYZ;
		return 0;
	}
	if (span_eq(p, "/metrics")) {
		*ret_kind = ROUTE_METRICS;
		return 0;
	}
	*ret_kind = ROUTE_NOT_FOUND;
	if (!span_starts_with(p, ROUTE_KEY_PREFIX))
		return 0;
	phone = span_make(p.p + strlen(ROUTE_KEY_PREFIX), p.len - strlen(ROUTE_KEY_PREFIX));
	{
		const char *slash = memchr(phone.p, '/', phone.len);

		if (!slash || strcmp(slash, ROUTE_KEY_SUFFIX) != 0)
			return 0;
		phone.len = (size_t)(slash - phone.p);
	}
	*ret_kind = ROUTE_KEY;
	if (phone.len < LIMIT_PHONE_MIN_DIGITS || phone.len > LIMIT_PHONE_MAX_DIGITS)
		return fail(ret_err, "InvalidParameter.PhoneNumber",
			    "PhoneNumber must be 5 to 20 digits with the country code, e.g. 8613912345678");
	for (i = 0; i < phone.len; i++) {
		if (phone.p[i] < '0' || phone.p[i] > '9')
			return fail(ret_err, "InvalidParameter.PhoneNumber",
				    "PhoneNumber must contain digits only (no '+', spaces or dashes)");
	}
	memset(ret_key, 0, sizeof(*ret_key));
	span_copy(phone, ret_key->phone, sizeof(ret_key->phone));
	return 0;
}

static bool safe_token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '~' || c == '-';
}

int route_set_cust_space_id(const char *value, size_t len, struct cams_key *key,
			    struct route_error *ret_err)
{
	size_t i;

	if (len < 1 || len > LIMIT_CUST_SPACE_ID_MAX)
		return fail(ret_err, "InvalidParameter.CustSpaceId",
			    "CustSpaceId must be 1 to 64 characters");
	for (i = 0; i < len; i++) {
		if (!safe_token_char(value[i]))
			return fail(ret_err, "InvalidParameter.CustSpaceId",
				    "CustSpaceId may contain only letters, digits, '.', '_', '~' and '-'");
	}
	memcpy(key->cust_space_id, value, len);
	key->cust_space_id[len] = '\0';
	return 0;
}

int route_parse_max_wait_ms(const char *value, uint32_t *ret_ms, struct route_error *ret_err)
{
	uint64_t v;

	if (str_to_u64(value, 0, 600000, &v) < 0)
		return fail(ret_err, "InvalidParameter.MaxWaitMs",
			    "max_wait_ms must be a whole number of milliseconds from 0 to 600000");
	*ret_ms = (uint32_t)v;
	return 0;
}

void route_parse_cache_control(const char *value, struct route_cache_control *ret)
{
	struct span rest, item;

	memset(ret, 0, sizeof(*ret));
	if (!value)
		return;
	rest = span_cstr(value);
	while (rest.len) {
		struct span name, arg = span_make("", 0);

		if (!span_split(rest, ',', &item, &rest)) {
			item = rest;
			rest.len = 0;
		}
		item = span_trim(item);
		if (!span_split(item, '=', &name, &arg))
			name = item;
		name = span_trim(name);
		arg = span_trim(arg);
		if (span_eq_nocase(name, "no-cache")) {
			ret->no_cache = true;
		} else if (span_eq_nocase(name, "only-if-cached")) {
			ret->only_if_cached = true;
		} else if (span_eq_nocase(name, "max-stale")) {
			uint64_t v;

			/* "max-stale" alone accepts any staleness; "=0" none. */
			if (arg.len && span_to_u64(arg, 0, UINT64_MAX, &v) == 0 && v == 0)
				ret->no_stale = true;
		} else if (span_eq_nocase(name, "no-store") || span_eq_nocase(name, "max-age")) {
			uint64_t v;

			/* max-age=0 asks for a fresh answer: treat as no stale */
			if (span_eq_nocase(name, "max-age") && arg.len &&
			    span_to_u64(arg, 0, UINT64_MAX, &v) == 0 && v == 0)
				ret->no_stale = true;
		}
	}
}
