/*
 * test_route.c -- unit tests for the router and parameter validation: every
 * route, the PhoneNumber bounds and charset on the key path, paths that are
 * not ours (404 rather than 400), CustSpaceId charset and length,
 * max_wait_ms bounds, and the Cache-Control request directives. Every
 * value is taken with its length (issue #10): a NUL is refused, never an
 * end; the raw path is percent-decoded here; parameter names are exact.
 */
#include "route.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

#define KEY_PATH(phone) ROUTE_KEY_PREFIX phone ROUTE_KEY_SUFFIX

/* Route path; the key is pre-filled with junk to see what is written. */
static int route_n(const char *path, size_t len, enum route_kind *ret_kind,
		   struct cams_key *ret_key, struct route_error *ret_err)
{
	memset(ret_key, 'J', sizeof(*ret_key));
	ret_key->phone[sizeof(ret_key->phone) - 1] = '\0';
	ret_key->cust_space_id[sizeof(ret_key->cust_space_id) - 1] = '\0';
	ret_err->code = NULL;
	ret_err->message[0] = '\0';
	*ret_kind = (enum route_kind)-1;
	return route_parse_path(path, len, ret_kind, ret_key, ret_err);
}

static int route(const char *path, enum route_kind *ret_kind, struct cams_key *ret_key,
		 struct route_error *ret_err)
{
	return route_n(path, strlen(path), ret_kind, ret_key, ret_err);
}

/* Decode a raw path and route it, as http.c does. */
static int route_raw(const char *raw, enum route_kind *ret_kind, struct cams_key *ret_key,
		     struct route_error *ret_err)
{
	char path[LIMIT_URI_MAX_BYTES + 1];
	size_t len;

	if (route_decode_path(raw, strlen(raw), path, sizeof(path), &len) < 0)
		return -E2BIG;
	return route_n(path, len, ret_kind, ret_key, ret_err);
}

/* The path is not a route of ours: 0 and ROUTE_NOT_FOUND, no error. */
static int not_found(const char *path)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	if (route(path, &kind, &key, &err) != 0 || kind != ROUTE_NOT_FOUND || err.code) {
		fprintf(stderr, "  [%s] routed as kind %d\n", path, (int)kind);
		return 0;
	}
	return 1;
}

/* The path is a key path with an invalid phone: -EINVAL, ROUTE_KEY, the Code. */
static int bad_phone(const char *path)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;
	int r = route(path, &kind, &key, &err);

	if (r != -EINVAL || kind != ROUTE_KEY || !err.code ||
	    strcmp(err.code, "InvalidParameter.PhoneNumber") != 0 || !err.message[0]) {
		fprintf(stderr, "  [%s] gave r=%d kind=%d\n", path, r, (int)kind);
		return 0;
	}
	return 1;
}

/* The raw path, decoded as http.c does, is a key path with an invalid phone. */
static int bad_phone_raw(const char *raw)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;
	int r = route_raw(raw, &kind, &key, &err);

	if (r != -EINVAL || kind != ROUTE_KEY || !err.code ||
	    strcmp(err.code, "InvalidParameter.PhoneNumber") != 0) {
		fprintf(stderr, "  [%s] gave r=%d kind=%d\n", raw, r, (int)kind);
		return 0;
	}
	return 1;
}

static struct route_cache_control cc(const char *value)
{
	struct route_cache_control ret;

	memset(&ret, 0xff, sizeof(ret));
	route_parse_cache_control(value, value ? strlen(value) : 0, &ret);
	return ret;
}

static int cc_is(const char *value, bool no_cache, bool no_stale, bool only_if_cached)
{
	struct route_cache_control r = cc(value);

	if (r.no_cache != no_cache || r.no_stale != no_stale || r.only_if_cached != only_if_cached) {
		fprintf(stderr, "  [%s] gave no_cache=%d no_stale=%d only_if_cached=%d\n",
			value ? value : "(null)", r.no_cache, r.no_stale, r.only_if_cached);
		return 0;
	}
	return 1;
}

TEST(fixed_routes_are_recognised)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	CHECK(route("/healthz", &kind, &key, &err) == 0 && kind == ROUTE_HEALTHZ);
	CHECK(route("/readyz", &kind, &key, &err) == 0 && kind == ROUTE_READYZ);
	CHECK(route("/metrics", &kind, &key, &err) == 0 && kind == ROUTE_METRICS);
	/* The drop-in endpoint of the official SDKs: the bare root. */
	CHECK(route("/", &kind, &key, &err) == 0 && kind == ROUTE_SDK);
}

TEST(fixed_routes_match_exactly)
{
	CHECK(not_found("/healthz/"));
	CHECK(not_found("/healthzX"));
	CHECK(not_found("/HEALTHZ"));
	CHECK(not_found("/metrics/x"));
	CHECK(not_found("metrics"));
	CHECK(not_found("/readyz?x=1"));
	CHECK(not_found("//"));
	CHECK(not_found(""));
}

TEST(phone_from_an_sdk_parameter_is_taken_whole)
{
	struct cams_key key;
	struct route_error err;

	memset(&key, 0, sizeof(key));
	CHECK(route_set_phone("8613912345678", 13, &key, &err) == 0);
	CHECK_STR(key.phone, "8613912345678");
	CHECK(route_set_phone("86139\0" "12345678", 14, &key, &err) < 0);
	CHECK_STR(err.code, "InvalidParameter.PhoneNumber");
	CHECK(route_set_phone("+8613912345678", 14, &key, &err) < 0);
	CHECK(route_set_phone("8613", 4, &key, &err) < 0);
	CHECK(route_set_phone("861391234567812345678", 21, &key, &err) < 0);
}

TEST(key_path_yields_phone_and_empty_cust_space_id)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	REQUIRE(route(KEY_PATH("8613912345678"), &kind, &key, &err) == 0);
	CHECK(kind == ROUTE_KEY);
	CHECK_STR(key.phone, "8613912345678");
	CHECK_STR(key.cust_space_id, "");
	CHECK(err.code == NULL);
}

TEST(key_path_accepts_5_and_20_digits)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	REQUIRE(route(KEY_PATH("12345"), &kind, &key, &err) == 0);
	CHECK(kind == ROUTE_KEY);
	CHECK_STR(key.phone, "12345");
	REQUIRE(route(KEY_PATH("12345678901234567890"), &kind, &key, &err) == 0);
	CHECK(kind == ROUTE_KEY);
	CHECK_STR(key.phone, "12345678901234567890");
}

TEST(key_path_refuses_4_and_21_digits)
{
	CHECK(bad_phone(KEY_PATH("1234")));
	CHECK(bad_phone(KEY_PATH("123456789012345678901")));
	CHECK(bad_phone(KEY_PATH("1234567890123456789012345678901234567890")));
}

TEST(key_path_refuses_empty_phone)
{
	CHECK(bad_phone(KEY_PATH("")));
}

TEST(key_path_refuses_non_digits)
{
	CHECK(bad_phone(KEY_PATH("+8613912345678")));
	CHECK(bad_phone(KEY_PATH("86139123456a8")));
	CHECK(bad_phone(KEY_PATH("abcdefgh")));
	CHECK(bad_phone(KEY_PATH("86 13912345678")));
	CHECK(bad_phone(KEY_PATH("86-139-1234-5678")));
	/* full-width "86": 6 bytes, within the length bound, not ASCII digits */
	CHECK(bad_phone(KEY_PATH("\xef\xbc\x98\xef\xbc\x96")));
	CHECK(bad_phone(KEY_PATH("8613912345678%00")));
}

TEST(invalid_phone_leaves_key_untouched)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	REQUIRE(route(KEY_PATH("+8613912345678"), &kind, &key, &err) == -EINVAL);
	CHECK(key.phone[0] == 'J');
	CHECK(key.cust_space_id[0] == 'J');
}

TEST(key_path_with_trailing_junk_is_not_found)
{
	CHECK(not_found(KEY_PATH("8613912345678") "X"));
	CHECK(not_found(KEY_PATH("8613912345678") "/"));
	CHECK(not_found(KEY_PATH("8613912345678") "/more"));
	CHECK(not_found(ROUTE_KEY_PREFIX "8613912345678/encryption-public-ke"));
	CHECK(not_found(ROUTE_KEY_PREFIX "8613912345678/ENCRYPTION-PUBLIC-KEY"));
}

TEST(key_path_with_extra_or_missing_segments_is_not_found)
{
	CHECK(not_found(ROUTE_KEY_PREFIX "8613912345678"));
	CHECK(not_found(ROUTE_KEY_PREFIX));
	CHECK(not_found("/v1/phone-numbers"));
	CHECK(not_found(ROUTE_KEY_PREFIX "86/13912345678" ROUTE_KEY_SUFFIX));
	CHECK(not_found(ROUTE_KEY_PREFIX "8613912345678/x" ROUTE_KEY_SUFFIX));
	CHECK(not_found(ROUTE_KEY_PREFIX "/8613912345678" ROUTE_KEY_SUFFIX));
	CHECK(not_found("/v2/phone-numbers/8613912345678" ROUTE_KEY_SUFFIX));
	CHECK(not_found("//v1/phone-numbers/8613912345678" ROUTE_KEY_SUFFIX));
	CHECK(not_found("/v1/phone-numbers/8613912345678/encryption-public-key"
			"/encryption-public-key"));
}

TEST(cust_space_id_accepts_token_characters)
{
	static const char id[] = "Az09._~-space";
	struct cams_key key;
	struct route_error err;

	memset(&key, 0, sizeof(key));
	REQUIRE(route_set_cust_space_id(id, strlen(id), &key, &err) == 0);
	CHECK_STR(key.cust_space_id, id);
	CHECK_STR(key.phone, "");
}

TEST(cust_space_id_takes_only_len_bytes)
{
	struct cams_key key;
	struct route_error err;

	memset(&key, 'J', sizeof(key));
	REQUIRE(route_set_cust_space_id("abc/def", 3, &key, &err) == 0);
	CHECK_STR(key.cust_space_id, "abc");
}

TEST(cust_space_id_length_bounds_are_1_to_64)
{
	char id[LIMIT_CUST_SPACE_ID_MAX + 2];
	struct cams_key key;
	struct route_error err;

	memset(id, 'a', sizeof(id));
	memset(&key, 0, sizeof(key));
	CHECK(route_set_cust_space_id(id, 1, &key, &err) == 0);
	CHECK_STR(key.cust_space_id, "a");
	CHECK(route_set_cust_space_id(id, LIMIT_CUST_SPACE_ID_MAX, &key, &err) == 0);
	CHECK(strlen(key.cust_space_id) == LIMIT_CUST_SPACE_ID_MAX);
	err.code = NULL;
	CHECK(route_set_cust_space_id(id, LIMIT_CUST_SPACE_ID_MAX + 1, &key, &err) == -EINVAL);
	CHECK(err.code && strcmp(err.code, "InvalidParameter.CustSpaceId") == 0);
	err.code = NULL;
	CHECK(route_set_cust_space_id("", 0, &key, &err) == -EINVAL);
	CHECK(err.code && strcmp(err.code, "InvalidParameter.CustSpaceId") == 0);
}

TEST(cust_space_id_refuses_characters_outside_the_token_set)
{
	static const char *const bad[] = {
		"a b", "a/b", "a%2Fb", "a+b", "a\"b", "a=b", "a&b", "a?b", "a#b", "a:b",
		"a,b", "a;b", "a\\b", "a\nb", "a\tb", "caf\xc3\xa9", "a*b", "a@b",
	};
	struct cams_key key;
	struct route_error err;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&key, 0, sizeof(key));
		memcpy(key.cust_space_id, "prev", 5);
		err.code = NULL;
		if (route_set_cust_space_id(bad[i], strlen(bad[i]), &key, &err) != -EINVAL) {
			fprintf(stderr, "  accepted [%s]\n", bad[i]);
			CHECK(0);
			continue;
		}
		CHECK(err.code && strcmp(err.code, "InvalidParameter.CustSpaceId") == 0);
		CHECK(err.message[0] != '\0');
		CHECK_STR(key.cust_space_id, "prev");
	}
}

TEST(cust_space_id_refuses_embedded_nul)
{
	struct cams_key key;
	struct route_error err;

	memset(&key, 0, sizeof(key));
	CHECK(route_set_cust_space_id("ab\0cd", 5, &key, &err) == -EINVAL);
	CHECK_STR(key.cust_space_id, "");
}

TEST(max_wait_ms_accepts_0_to_600000)
{
	struct route_error err;
	uint32_t ms = 1;

	CHECK(route_parse_max_wait_ms("0", 1, &ms, &err) == 0 && ms == 0);
	CHECK(route_parse_max_wait_ms("1500", 4, &ms, &err) == 0 && ms == 1500);
	CHECK(route_parse_max_wait_ms("600000", 6, &ms, &err) == 0 && ms == 600000);
}

TEST(max_wait_ms_refuses_out_of_range_and_malformed_values)
{
	static const char *const bad[] = {
		"600001", "4294967296", "18446744073709551616", "", "-1", "+5", " 5", "5 ",
		"1e3", "0x10", "1.5", "abc", "5ms",
	};
	struct route_error err;
	uint32_t ms;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ms = 4242;
		err.code = NULL;
		if (route_parse_max_wait_ms(bad[i], strlen(bad[i]), &ms, &err) != -EINVAL) {
			fprintf(stderr, "  accepted [%s]\n", bad[i]);
			CHECK(0);
			continue;
		}
		CHECK(ms == 4242);
		CHECK(err.code && strcmp(err.code, "InvalidParameter.MaxWaitMs") == 0);
	}
}

TEST(cache_control_absent_or_empty_asks_nothing)
{
	CHECK(cc_is(NULL, false, false, false));
	CHECK(cc_is("", false, false, false));
	CHECK(cc_is("   ", false, false, false));
	CHECK(cc_is(",,, ,", false, false, false));
}

TEST(cache_control_no_cache_asks_revalidation)
{
	CHECK(cc_is("no-cache", true, false, false));
}

TEST(cache_control_max_stale_zero_refuses_stale)
{
	CHECK(cc_is("max-stale=0", false, true, false));
	CHECK(cc_is("max-stale=000", false, true, false));
	CHECK(cc_is("max-stale = 0", false, true, false));
}

TEST(cache_control_max_stale_alone_or_positive_allows_stale)
{
	CHECK(cc_is("max-stale", false, false, false));
	CHECK(cc_is("max-stale=", false, false, false));
	CHECK(cc_is("max-stale=60", false, false, false));
	CHECK(cc_is("max-stale=-0", false, false, false));
	CHECK(cc_is("max-stale=abc", false, false, false));
}

TEST(cache_control_only_if_cached_forbids_upstream)
{
	CHECK(cc_is("only-if-cached", false, false, true));
}

TEST(cache_control_max_age_zero_refuses_stale)
{
	CHECK(cc_is("max-age=0", false, true, false));
	CHECK(cc_is("max-age=60", false, false, false));
	CHECK(cc_is("max-age", false, false, false));
}

TEST(cache_control_reports_max_age_or_minus_1)
{
	CHECK(cc(NULL).max_age_s == -1);
	CHECK(cc("no-cache").max_age_s == -1);
	CHECK(cc("max-age").max_age_s == -1);
	CHECK(cc("max-age=").max_age_s == -1);
	CHECK(cc("max-age=abc").max_age_s == -1);
	CHECK(cc("max-age=-1").max_age_s == -1);
	CHECK(cc("max-age=0").max_age_s == 0);
	CHECK(cc("Max-Age = 60").max_age_s == 60);
	CHECK(cc("max-age=60, max-age=10").max_age_s == 10);
	CHECK(cc("max-age=10, max-age=60").max_age_s == 10);
	CHECK(cc("max-age=99999999999999999999").max_age_s == -1);  /* not a u64 */
	CHECK(cc("max-age=9999999999").max_age_s == INT32_MAX);     /* clamped */
}

TEST(cache_control_reads_len_bytes_only)
{
	struct route_cache_control r;

	route_parse_cache_control("no-cache, only-if-cached", 8, &r);
	CHECK(r.no_cache && !r.only_if_cached);
	route_parse_cache_control("max-age=100", 9, &r);
	CHECK(r.max_age_s == 1);
}

TEST(decode_path_turns_escapes_into_bytes_and_keeps_nul_inside)
{
	char out[64];
	size_t len = 99;

	REQUIRE(route_decode_path("/a%2fb%41%6a", 12, out, sizeof(out), &len) == 0);
	CHECK(len == 6 && memcmp(out, "/a/bAj", 6) == 0);
	REQUIRE(route_decode_path("ab%00cd", 7, out, sizeof(out), &len) == 0);
	CHECK(len == 5 && memcmp(out, "ab\0cd", 6) == 0);
	REQUIRE(route_decode_path("a+b", 3, out, sizeof(out), &len) == 0);
	CHECK_STR(out, "a+b");
}

TEST(decode_path_keeps_malformed_escapes)
{
	char out[64];
	size_t len;

	REQUIRE(route_decode_path("%zz%4%", 6, out, sizeof(out), &len) == 0);
	CHECK(len == 6);
	CHECK_STR(out, "%zz%4%");
	REQUIRE(route_decode_path("%4g1", 4, out, sizeof(out), &len) == 0);
	CHECK_STR(out, "%4g1");
}

TEST(decode_path_refuses_what_does_not_fit)
{
	char out[4];
	size_t len = 7;

	CHECK(route_decode_path("abcd", 4, out, sizeof(out), &len) == -E2BIG);
	CHECK(len == 7);
	CHECK(route_decode_path("abc", 3, out, sizeof(out), &len) == 0 && len == 3);
	CHECK(route_decode_path("%41%42%43", 9, out, sizeof(out), &len) == 0 && len == 3);
}

TEST(percent_encoded_nul_in_the_phone_is_a_bad_phone_not_an_unknown_route)
{
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "86139%0012345678" ROUTE_KEY_SUFFIX));
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "8613912345678%00" ROUTE_KEY_SUFFIX));
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "%008613912345678" ROUTE_KEY_SUFFIX));
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "86139%2B12345678" ROUTE_KEY_SUFFIX));
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "861391234567%" ROUTE_KEY_SUFFIX));
	CHECK(bad_phone_raw(ROUTE_KEY_PREFIX "86139%zz2345678" ROUTE_KEY_SUFFIX));
}

TEST(percent_encoded_digits_route_like_the_digits)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	REQUIRE(route_raw(ROUTE_KEY_PREFIX "%38613912345678" ROUTE_KEY_SUFFIX, &kind, &key,
			  &err) == 0);
	CHECK(kind == ROUTE_KEY);
	CHECK_STR(key.phone, "8613912345678");
}

TEST(nul_in_a_fixed_route_or_the_suffix_is_not_found)
{
	struct cams_key key;
	struct route_error err;
	enum route_kind kind;

	CHECK(route_n("/healthz\0x", 10, &kind, &key, &err) == 0 && kind == ROUTE_NOT_FOUND);
	CHECK(route_n("/healthz\0", 9, &kind, &key, &err) == 0 && kind == ROUTE_NOT_FOUND);
	CHECK(route_raw(KEY_PATH("8613912345678") "%00", &kind, &key, &err) == 0 &&
	      kind == ROUTE_NOT_FOUND);
	CHECK(route_raw(ROUTE_KEY_PREFIX "8613912345678/encryption%00-public-key", &kind, &key,
			&err) == 0 && kind == ROUTE_NOT_FOUND);
}

TEST(key_param_names_are_exact)
{
	struct route_error err;

	CHECK(route_key_param("CustSpaceId", 11, NULL) == ROUTE_PARAM_CUST_SPACE_ID);
	CHECK(route_key_param("max_wait_ms", 11, NULL) == ROUTE_PARAM_MAX_WAIT_MS);
	CHECK(route_key_param("custspaceid", 11, NULL) == ROUTE_PARAM_UNKNOWN);
	CHECK(route_key_param("CUSTSPACEID", 11, NULL) == ROUTE_PARAM_UNKNOWN);
	CHECK(route_key_param("CustSpaceId ", 12, NULL) == ROUTE_PARAM_UNKNOWN);
	CHECK(route_key_param("CustSpaceId\0", 12, NULL) == ROUTE_PARAM_UNKNOWN);
	CHECK(route_key_param("CustSpaceIdX", 11, NULL) == ROUTE_PARAM_CUST_SPACE_ID);
	CHECK(route_key_param("max-wait-ms", 11, NULL) == ROUTE_PARAM_UNKNOWN);
	CHECK(route_key_param("", 0, NULL) == ROUTE_PARAM_UNKNOWN);
	err.code = NULL;
	CHECK(route_key_param("PhoneNumber", 11, &err) == ROUTE_PARAM_UNKNOWN);
	CHECK(err.code && strcmp(err.code, "Proxy.UnknownParameter") == 0);
}

TEST(unknown_param_error_names_it_printably)
{
	struct route_error err;
	char long_name[300];

	err.code = NULL;
	route_key_param("custspaceid", 11, &err);
	CHECK_STR(err.code, "Proxy.UnknownParameter");
	CHECK(strstr(err.message, "\"custspaceid\"") != NULL);
	route_key_param("a\0b\"c", 5, &err);
	CHECK(strstr(err.message, "\"a?b?c\"") != NULL);
	memset(long_name, 'n', sizeof(long_name));
	route_key_param(long_name, sizeof(long_name), &err);
	CHECK(strstr(err.message, "...\"") != NULL);
	CHECK(strlen(err.message) < sizeof(err.message));
}

TEST(duplicate_params_are_refused_with_their_code)
{
	struct route_error err;

	CHECK(route_duplicate_param(ROUTE_PARAM_CUST_SPACE_ID, &err) == -EINVAL);
	CHECK_STR(err.code, "InvalidParameter.CustSpaceId");
	CHECK(route_duplicate_param(ROUTE_PARAM_MAX_WAIT_MS, &err) == -EINVAL);
	CHECK_STR(err.code, "InvalidParameter.MaxWaitMs");
}

TEST(max_wait_ms_reads_len_bytes_and_refuses_nul)
{
	struct route_error err;
	uint32_t ms = 7;

	CHECK(route_parse_max_wait_ms("0", 1, &ms, &err) == 0 && ms == 0);
	CHECK(route_parse_max_wait_ms("15009", 4, &ms, &err) == 0 && ms == 1500);
	ms = 7;
	CHECK(route_parse_max_wait_ms("10\0" "0", 4, &ms, &err) == -EINVAL && ms == 7);
	CHECK(route_parse_max_wait_ms("\0", 1, &ms, &err) == -EINVAL && ms == 7);
	CHECK(route_parse_max_wait_ms("", 0, &ms, &err) == -EINVAL && ms == 7);
}

TEST(cache_control_directive_names_ignore_case)
{
	CHECK(cc_is("No-Cache", true, false, false));
	CHECK(cc_is("MAX-STALE=0", false, true, false));
	CHECK(cc_is("Only-If-Cached", false, false, true));
	CHECK(cc_is("Max-Age=0", false, true, false));
}

TEST(cache_control_tolerates_spaces_and_tabs_around_directives)
{
	CHECK(cc_is("  no-cache  ,\tonly-if-cached\t", true, false, true));
	CHECK(cc_is("no-cache,only-if-cached,max-stale=0", true, true, true));
	CHECK(cc_is(" ,no-cache, ", true, false, false));
}

TEST(cache_control_combines_several_directives)
{
	CHECK(cc_is("max-age=0, no-cache", true, true, false));
	CHECK(cc_is("only-if-cached, max-stale", false, false, true));
	CHECK(cc_is("no-cache, max-stale=0, only-if-cached", true, true, true));
}

TEST(cache_control_ignores_unknown_directives)
{
	CHECK(cc_is("no-store", false, false, false));
	CHECK(cc_is("no-transform, foo, bar=baz, min-fresh=10", false, false, false));
	CHECK(cc_is("x-no-cache, no-cache-please, nocache", false, false, false));
	CHECK(cc_is("stale-if-error=0, foo=\"no-cache\"", false, false, false));
	CHECK(cc_is("foo, no-cache, bar=1", true, false, false));
}

int main(void)
{
	RUN(fixed_routes_are_recognised);
	RUN(fixed_routes_match_exactly);
	RUN(key_path_yields_phone_and_empty_cust_space_id);
	RUN(key_path_accepts_5_and_20_digits);
	RUN(key_path_refuses_4_and_21_digits);
	RUN(key_path_refuses_empty_phone);
	RUN(key_path_refuses_non_digits);
	RUN(invalid_phone_leaves_key_untouched);
	RUN(key_path_with_trailing_junk_is_not_found);
	RUN(key_path_with_extra_or_missing_segments_is_not_found);
	RUN(cust_space_id_accepts_token_characters);
	RUN(cust_space_id_takes_only_len_bytes);
	RUN(cust_space_id_length_bounds_are_1_to_64);
	RUN(cust_space_id_refuses_characters_outside_the_token_set);
	RUN(cust_space_id_refuses_embedded_nul);
	RUN(max_wait_ms_accepts_0_to_600000);
	RUN(max_wait_ms_refuses_out_of_range_and_malformed_values);
	RUN(cache_control_absent_or_empty_asks_nothing);
	RUN(cache_control_no_cache_asks_revalidation);
	RUN(cache_control_max_stale_zero_refuses_stale);
	RUN(cache_control_max_stale_alone_or_positive_allows_stale);
	RUN(cache_control_only_if_cached_forbids_upstream);
	RUN(cache_control_max_age_zero_refuses_stale);
	RUN(cache_control_reports_max_age_or_minus_1);
	RUN(cache_control_reads_len_bytes_only);
	RUN(decode_path_turns_escapes_into_bytes_and_keeps_nul_inside);
	RUN(decode_path_keeps_malformed_escapes);
	RUN(decode_path_refuses_what_does_not_fit);
	RUN(percent_encoded_nul_in_the_phone_is_a_bad_phone_not_an_unknown_route);
	RUN(percent_encoded_digits_route_like_the_digits);
	RUN(nul_in_a_fixed_route_or_the_suffix_is_not_found);
	RUN(key_param_names_are_exact);
	RUN(unknown_param_error_names_it_printably);
	RUN(duplicate_params_are_refused_with_their_code);
	RUN(max_wait_ms_reads_len_bytes_and_refuses_nul);
	RUN(cache_control_directive_names_ignore_case);
	RUN(cache_control_tolerates_spaces_and_tabs_around_directives);
	RUN(cache_control_combines_several_directives);
	RUN(cache_control_ignores_unknown_directives);
	RUN(phone_from_an_sdk_parameter_is_taken_whole);
	return harness_done();
}
