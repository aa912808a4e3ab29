/*
 * route.c -- the path router and parameter validation (see route.h).
 *
 * Every caller-supplied string is checked here against a closed set of
 * characters and a length bound before any other module sees it; nothing
 * downstream needs to escape a PhoneNumber or a CustSpaceId. Values come
 * with their lengths: libmicrohttpd's C strings end at a decoded %00, and
 * "abc%00xyz" read as "abc" would fetch another space's key.
 * The path is decoded here (route_decode_path) from the raw request line,
 * because libmicrohttpd's decoded `url` is cut at the first %00.
 * Does not: decode query values (libmicrohttpd hands them over decoded,
 * with their lengths) or look at headers other than Cache-Control.
 */
#include "route.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hex.h"
#include "span.h"

static int fail(struct route_error *err, const char *code, const char *message)
{
	err->code = code;
	snprintf(err->message, sizeof(err->message), "%s", message);
	return -EINVAL;
}

int route_decode_path(const char *raw, size_t raw_len, char *out, size_t out_size,
		      size_t *ret_len)
{
	const char *pct = memchr(raw, '%', raw_len);
	size_t i = 0, n = 0, plain = pct ? (size_t)(pct - raw) : raw_len;

	if (out_size == 0)
		return -E2BIG;
	/* Up to the first escape, a copy (a hit's path usually has none). */
	if (plain < out_size) {
		memcpy(out, raw, plain);
		i = n = plain;
	}
	while (i < raw_len) {
		char c = raw[i];
		int hi, lo;

		if (c == '%' && raw_len - i >= 3 && (hi = hex_digit_value(raw[i + 1])) >= 0 &&
		    (lo = hex_digit_value(raw[i + 2])) >= 0) {
			c = (char)(hi * 16 + lo);
			i += 3;
		} else {
			i++;
		}
		if (n + 1 >= out_size) {
			out[n] = '\0';
			return -E2BIG;
		}
		out[n++] = c;
	}
	out[n] = '\0';
	*ret_len = n;
	return 0;
}

int route_parse_path(const char *path, size_t len, enum route_kind *ret_kind,
		     struct cams_key *ret_key, struct route_error *ret_err)
{
	struct span p = span_make(path, len), phone, rest;

	/* The key route first: it is nearly every request. */
	if (span_starts_with(p, ROUTE_KEY_PREFIX)) {
		struct cams_key key;

		*ret_kind = ROUTE_NOT_FOUND;
		rest = span_make(p.p + strlen(ROUTE_KEY_PREFIX), p.len - strlen(ROUTE_KEY_PREFIX));
		/* The phone segment ends at the first '/'; what follows is the suffix, exactly. */
		if (!span_split(rest, '/', &phone, &rest) || !span_eq(rest, ROUTE_KEY_SUFFIX + 1))
			return 0;
		*ret_kind = ROUTE_KEY;
		/* ret_key stays untouched unless the phone is valid. */
		memset(&key, 0, sizeof(key));
		if (route_set_phone(phone.p, phone.len, &key, ret_err) < 0)
			return -EINVAL;
		*ret_key = key;
		return 0;
	}
	if (span_eq(p, "/healthz"))
		*ret_kind = ROUTE_HEALTHZ;
	else if (span_eq(p, "/readyz"))
		*ret_kind = ROUTE_READYZ;
	else if (span_eq(p, "/metrics"))
		*ret_kind = ROUTE_METRICS;
	else if (span_eq(p, "/"))
		*ret_kind = ROUTE_SDK;
	else
		*ret_kind = ROUTE_NOT_FOUND;
	return 0;
}

/* Leaves key untouched on failure. */
int route_set_phone(const char *value, size_t len, struct cams_key *key,
		    struct route_error *ret_err)
{
	if (len < LIMIT_PHONE_MIN_DIGITS || len > LIMIT_PHONE_MAX_DIGITS)
		return fail(ret_err, "InvalidParameter.PhoneNumber",
			    "PhoneNumber must be 5 to 20 digits with the country code, e.g. 8613912345678");
	for (size_t i = 0; i < len; i++) {
		if (value[i] < '0' || value[i] > '9')
			return fail(ret_err, "InvalidParameter.PhoneNumber",
				    "PhoneNumber must contain digits only (no '+', spaces, dashes or NUL bytes)");
	}
	memcpy(key->phone, value, len);
	key->phone[len] = '\0';
	return 0;
}

enum route_param route_key_param(const char *name, size_t len, struct route_error *ret_err)
{
	struct span n = span_make(name, len);
	size_t i, shown;

	if (span_eq(n, "CustSpaceId"))
		return ROUTE_PARAM_CUST_SPACE_ID;
	if (span_eq(n, "max_wait_ms"))
		return ROUTE_PARAM_MAX_WAIT_MS;
	if (!ret_err)
		return ROUTE_PARAM_UNKNOWN;
	/* Name it as sent, unprintable bytes shown as '?', cut to fit. */
	{
		char shown_name[48];

		shown = len < sizeof(shown_name) - 1 ? len : sizeof(shown_name) - 1;
		for (i = 0; i < shown; i++) {
			unsigned char c = (unsigned char)name[i];

			shown_name[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
		}
		shown_name[shown] = '\0';
		ret_err->code = "Proxy.UnknownParameter";
		snprintf(ret_err->message, sizeof(ret_err->message),
			 "unknown query parameter \"%s%s\"; this endpoint takes CustSpaceId and max_wait_ms (names are case-sensitive)",
			 shown_name, shown < len ? "..." : "");
	}
	return ROUTE_PARAM_UNKNOWN;
}

int route_duplicate_param(enum route_param param, struct route_error *ret_err)
{
	if (param == ROUTE_PARAM_CUST_SPACE_ID)
		return fail(ret_err, "InvalidParameter.CustSpaceId",
			    "CustSpaceId is given more than once; a request names one space");
	return fail(ret_err, "InvalidParameter.MaxWaitMs", "max_wait_ms is given more than once");
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

int route_parse_max_wait_ms(const char *value, size_t len, uint32_t *ret_ms,
			    struct route_error *ret_err)
{
	uint64_t v;

	if (span_to_u64(span_make(value, len), 0, 600000, &v) < 0)
		return fail(ret_err, "InvalidParameter.MaxWaitMs",
			    "max_wait_ms must be a whole number of milliseconds from 0 to 600000");
	*ret_ms = (uint32_t)v;
	return 0;
}

void route_parse_cache_control(const char *value, size_t len, struct route_cache_control *ret)
{
	struct span rest, item;

	memset(ret, 0, sizeof(*ret));
	ret->max_age_s = -1;
	if (!value)
		return;
	rest = span_make(value, len);
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
		} else if (span_eq_nocase(name, "max-age")) {
			uint64_t v;

			/*
			 * RFC 9111 5.2.1.1: no stored answer older than N seconds.
			 * The cache's lifetimes are at most a year; bigger N mean
			 * the same as a year, so clamp rather than overflow.
			 */
			if (arg.len && span_to_u64(arg, 0, UINT64_MAX, &v) == 0) {
				int64_t n = v > (uint64_t)INT32_MAX ? INT32_MAX : (int64_t)v;

				if (ret->max_age_s < 0 || n < ret->max_age_s)
					ret->max_age_s = n;
				/* max-age=0 asks for a fresh answer: never stale */
				if (n == 0)
					ret->no_stale = true;
			}
		}
	}
}
