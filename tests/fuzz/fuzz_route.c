/*
 * fuzz_route.c -- fuzz target for the request path and its parameters
 * (route.c): the path router, CustSpaceId, max_wait_ms and Cache-Control.
 *
 * Input: PATH \0 CUST_SPACE_ID \0 MAX_WAIT_MS \0 CACHE_CONTROL, each part
 * optional. Besides the parts, the whole raw input (NUL bytes included) is
 * offered as a CustSpaceId, as a percent-decoded query value could be, and
 * as a raw path to percent-decode and route with its length.
 *
 * Invariants checked: a routed key path is exactly prefix, 5..20 digits,
 * suffix, and every such path is routed; a refused path is a key path with
 * an InvalidParameter code; an accepted CustSpaceId is 1..64 bytes of
 * [A-Za-z0-9._~-] copied verbatim, a refused one leaves the key alone; an
 * accepted max_wait_ms is the decimal value of the text and at most
 * 600000; Cache-Control flags are set only by their directive names.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "route.h"

static bool all_digits(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

static bool token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '~' || c == '-';
}

static void check_error(const struct route_error *err, const char *code)
{
	FUZZ_ASSERT(err->code != NULL);
	FUZZ_ASSERT(strcmp(err->code, code) == 0);
	FUZZ_ASSERT(err->message[0] != '\0');
	FUZZ_ASSERT(memchr(err->message, '\0', sizeof(err->message)) != NULL);
}

/* Is path (n bytes) PREFIX + 5..20 digits + SUFFIX? The phone's span if so. */
static bool is_valid_key_path(const char *path, size_t n, const char **ret_phone,
			      size_t *ret_len)
{
	size_t pre = strlen(ROUTE_KEY_PREFIX), suf = strlen(ROUTE_KEY_SUFFIX);
	size_t digits;

	if (n < pre + suf || memcmp(path, ROUTE_KEY_PREFIX, pre) != 0 ||
	    memcmp(path + n - suf, ROUTE_KEY_SUFFIX, suf) != 0)
		return false;
	digits = n - pre - suf;
	if (digits < LIMIT_PHONE_MIN_DIGITS || digits > LIMIT_PHONE_MAX_DIGITS ||
	    !all_digits(path + pre, digits))
		return false;
	*ret_phone = path + pre;
	*ret_len = digits;
	return true;
}

static void fuzz_path(const char *path, size_t n)
{
	struct cams_key key;
	struct route_error err = { NULL, "" };
	enum route_kind kind = ROUTE_NOT_FOUND;
	const char *phone = NULL;
	size_t phone_len = 0;
	bool valid = is_valid_key_path(path, n, &phone, &phone_len);
	int r;

	memset(&key, 'J', sizeof(key));
	r = route_parse_path(path, n, &kind, &key, &err);
	FUZZ_ASSERT(r == 0 || r == -EINVAL);
	if (r == -EINVAL) {
		FUZZ_ASSERT(kind == ROUTE_KEY);
		FUZZ_ASSERT(!valid);
		check_error(&err, "InvalidParameter.PhoneNumber");
		return;
	}
	switch (kind) {
	case ROUTE_KEY:
		FUZZ_ASSERT(valid);
		FUZZ_ASSERT(strlen(key.phone) == phone_len);
		FUZZ_ASSERT(memcmp(key.phone, phone, phone_len) == 0);
		FUZZ_ASSERT(key.cust_space_id[0] == '\0');
		break;
	case ROUTE_HEALTHZ:
		FUZZ_ASSERT(n == 8 && memcmp(path, "/healthz", 8) == 0);
		break;
	case ROUTE_READYZ:
		FUZZ_ASSERT(n == 7 && memcmp(path, "/readyz", 7) == 0);
		break;
	case ROUTE_METRICS:
		FUZZ_ASSERT(n == 8 && memcmp(path, "/metrics", 8) == 0);
		break;
	case ROUTE_SDK:
		FUZZ_ASSERT(n == 1 && path[0] == '/');
		break;
	case ROUTE_NOT_FOUND:
		FUZZ_ASSERT(!valid);
		break;
	default:
		FUZZ_ASSERT(!"route_parse_path gave an unknown kind");
	}
}

/*
 * The raw path decoder: never longer than its input, identity without '%',
 * NUL-terminated, and what it routes obeys fuzz_path's invariants (NUL
 * bytes included: the decoded path is routed with its length).
 */
static void fuzz_decode(const char *raw, size_t len)
{
	char out[LIMIT_URI_MAX_BYTES + 1];
	size_t n = SIZE_MAX;

	if (route_decode_path(raw, len, out, sizeof(out), &n) < 0) {
		FUZZ_ASSERT(len >= sizeof(out));
		FUZZ_ASSERT(n == SIZE_MAX);
		return;
	}
	FUZZ_ASSERT(n <= len);
	FUZZ_ASSERT(out[n] == '\0');
	if (!memchr(raw, '%', len))
		FUZZ_ASSERT(n == len && memcmp(out, raw, len) == 0);
	fuzz_path(out, n);
}

/* value is an exact-size copy (no NUL after it) so over-reads show. */
static void fuzz_cust_space_id(const char *data, size_t len)
{
	char *value = xmemdup(data, len);
	struct cams_key key, before;
	struct route_error err = { NULL, "" };
	bool valid = len >= 1 && len <= LIMIT_CUST_SPACE_ID_MAX;
	int r;

	for (size_t i = 0; valid && i < len; i++)
		valid = token_char(value[i]);
	memset(&key, 0, sizeof(key));
	memcpy(key.phone, "8613912345678", sizeof("8613912345678"));
	memcpy(key.cust_space_id, "before", sizeof("before"));
	before = key;
	r = route_set_cust_space_id(value, len, &key, &err);
	if (valid) {
		FUZZ_ASSERT(r == 0);
		FUZZ_ASSERT(strlen(key.cust_space_id) == len);
		FUZZ_ASSERT(memcmp(key.cust_space_id, data, len) == 0);
		FUZZ_ASSERT(strcmp(key.phone, before.phone) == 0);
	} else {
		FUZZ_ASSERT(r == -EINVAL);
		check_error(&err, "InvalidParameter.CustSpaceId");
		FUZZ_ASSERT(memcmp(&key, &before, sizeof(key)) == 0);
	}
	free(value);
}

static void fuzz_max_wait(const char *text, size_t len)
{
	struct route_error err = { NULL, "" };
	uint32_t ms = UINT32_MAX;
	uint64_t expect = 0;
	bool digits = len >= 1 && all_digits(text, len);
	int r;

	for (size_t i = 0; digits && i < len && expect <= 600000; i++)
		expect = expect * 10 + (uint64_t)(text[i] - '0');
	r = route_parse_max_wait_ms(text, len, &ms, &err);
	if (r == 0) {
		FUZZ_ASSERT(digits);
		FUZZ_ASSERT(expect <= 600000);
		FUZZ_ASSERT(ms == expect);
	} else {
		FUZZ_ASSERT(r == -EINVAL);
		FUZZ_ASSERT(ms == UINT32_MAX);
		check_error(&err, "InvalidParameter.MaxWaitMs");
		/* Plain short decimals in range are never refused. */
		FUZZ_ASSERT(!(digits && len <= 6 && expect <= 600000));
	}
}

static void fuzz_cache_control(const char *value)
{
	struct route_cache_control cc;

	route_parse_cache_control(value, strlen(value), &cc);
	if (cc.no_cache)
		FUZZ_ASSERT(strcasestr(value, "no-cache") != NULL);
	if (cc.only_if_cached)
		FUZZ_ASSERT(strcasestr(value, "only-if-cached") != NULL);
	if (cc.no_stale)
		FUZZ_ASSERT(strcasestr(value, "max-stale") != NULL ||
			    strcasestr(value, "max-age") != NULL);
	if (cc.max_age_s >= 0)
		FUZZ_ASSERT(strcasestr(value, "max-age") != NULL && cc.max_age_s <= INT32_MAX);
	else
		FUZZ_ASSERT(cc.max_age_s == -1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct route_cache_control cc;
	struct fuzz_parts fp;

	fuzz_split(&fp, data, size);
	fuzz_path(fp.part[0], fp.len[0]);
	fuzz_decode((const char *)data, size);
	if (fp.n > 1)
		fuzz_cust_space_id(fp.part[1], fp.len[1]);
	if (fp.n > 2)
		fuzz_max_wait(fp.part[2], fp.len[2]);
	if (fp.n > 3)
		fuzz_cache_control(fp.part[3]);
	fuzz_cust_space_id((const char *)data, size);

	route_parse_cache_control(NULL, 0, &cc);
	FUZZ_ASSERT(!cc.no_cache && !cc.no_stale && !cc.only_if_cached && cc.max_age_s == -1);
	fuzz_parts_free(&fp);
	return 0;
}
