/*
 * test_envelope.c -- parsing upstream envelopes and rendering ours.
 *
 * A fresh RSA-2048 key is generated once; its PEM is put into JSON bodies
 * built with cJSON (not with the renderer under test). The expected
 * fingerprint is computed independently: base64-decode the PEM body (which
 * is the DER SubjectPublicKeyInfo) and hash it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "envelope.h"
#include "harness.h"

static char *test_pem;          /* the generated key's PEM */
static char test_fp[LIMIT_SHA256_HEX];

/* SHA-256 hex of the base64 body between the PEM armour lines. */
static void independent_fingerprint(const char *pem, char out[LIMIT_SHA256_HEX])
{
	const char *p = strchr(pem, '\n') + 1;
	const char *end = strstr(pem, "-----END");
	unsigned char b64[4096], der[4096], md[SHA256_DIGEST_LENGTH];
	size_t n = 0, pad = 0, i;
	int der_len;

	for (; p < end; p++) {
		if (*p != '\n' && *p != '\r')
			b64[n++] = (unsigned char)*p;
	}
	if (n && b64[n - 1] == '=')
		pad++;
	if (n > 1 && b64[n - 2] == '=')
		pad++;
	der_len = EVP_DecodeBlock(der, b64, (int)n);
	SHA256(der, (size_t)der_len - pad, md);
	for (i = 0; i < sizeof(md); i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void make_key(void)
{
	EVP_PKEY *pkey = EVP_RSA_gen(2048);
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	if (!pkey || !bio || !PEM_write_bio_PUBKEY(bio, pkey)) {
		fprintf(stderr, "cannot generate a test key\n");
		exit(2);
	}
	n = BIO_get_mem_data(bio, &data);
	test_pem = malloc((size_t)n + 1);
	memcpy(test_pem, data, (size_t)n);
	test_pem[n] = '\0';
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	independent_fingerprint(test_pem, test_fp);
}

/* An OK body with the given PEM and status (cJSON builds it). free() it. */
static char *ok_body(const char *request_id, const char *pem, const char *status)
{
	cJSON *root = cJSON_CreateObject(), *data = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(root, "RequestId", request_id);
	cJSON_AddStringToObject(root, "Code", "OK");
	cJSON_AddStringToObject(root, "Message", "OK");
	cJSON_AddStringToObject(data, "PhoneNumber", "8613800000000");
	cJSON_AddStringToObject(data, "EncryptionPublicKey", pem);
	cJSON_AddStringToObject(data, "EncryptionPublicKeyStatus", status);
	cJSON_AddItemToObject(root, "Data", data);
	s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

static int parse_str(const char *body, struct envelope_reply *r, char *err, size_t err_size)
{
	return envelope_parse(body, strlen(body), r, err, err_size);
}

/* Parse a body that must be refused; the reply must stay untouched. */
static int parse_rejects(const char *body)
{
	struct envelope_reply r;
	char err[128] = "";
	int k;

	memset(&r, 0x5a, sizeof(r));
	k = parse_str(body, &r, err, sizeof(err));
	if (k != -EBADMSG) {
		fprintf(stderr, "    body accepted: %.120s\n", body);
		if (k == 0)
			envelope_reply_free(&r);
		return 0;
	}
	if (err[0] == '\0' || ((unsigned char *)&r)[0] != 0x5a) {
		fprintf(stderr, "    no reason or reply touched\n");
		return 0;
	}
	return 1;
}

TEST(valid_ok_answer_is_parsed_with_der_fingerprint)
{
	char *body = ok_body("5F8A-REQ", test_pem, "VALID");
	struct envelope_reply r;
	char err[128] = "";

	REQUIRE(parse_str(body, &r, err, sizeof(err)) == 0);
	CHECK_STR(r.request_id, "5F8A-REQ");
	CHECK_STR(r.code, "OK");
	CHECK_STR(r.message, "OK");
	CHECK_STR(r.phone, "8613800000000");
	CHECK_STR(r.status, "VALID");
	CHECK_STR(r.pem, test_pem);
	CHECK_STR(r.fingerprint, test_fp);
	CHECK(strlen(r.fingerprint) == 64);
	envelope_reply_free(&r);
	CHECK(r.pem == NULL);
	envelope_reply_free(&r);
	envelope_reply_free(NULL);
	free(body);
}

TEST(non_valid_status_token_is_accepted)
{
	char *body = ok_body("r", test_pem, "MISMATCH");
	struct envelope_reply r;

	REQUIRE(parse_str(body, &r, NULL, 0) == 0);
	CHECK_STR(r.status, "MISMATCH");
	envelope_reply_free(&r);
	free(body);
}

TEST(fingerprint_ignores_pem_line_endings_and_trailing_space)
{
	char fp[LIMIT_SHA256_HEX];
	char crlf[4096];
	size_t i, o = 0;

	REQUIRE(envelope_pem_fingerprint(test_pem, strlen(test_pem), fp) == 0);
	CHECK_STR(fp, test_fp);
	for (i = 0; test_pem[i]; i++) {
		if (test_pem[i] == '\n')
			crlf[o++] = '\r';
		crlf[o++] = test_pem[i];
	}
	memcpy(crlf + o, "\n  \n", 5);
	REQUIRE(envelope_pem_fingerprint(crlf, strlen(crlf), fp) == 0);
	CHECK_STR(fp, test_fp);
}

TEST(documented_error_codes_parse_without_data)
{
	static const char *codes[] = { "Product.Unsubscript", "Ram.PermissionDeny",
				       "System.LimitControl", "Unknown.ResourceOwnerId" };
	size_t i;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char body[256];
		struct envelope_reply r;

		snprintf(body, sizeof(body),
			 "{\"RequestId\":\"E-%zu\",\"Code\":\"%s\",\"Message\":\"why\"}", i, codes[i]);
		REQUIRE(parse_str(body, &r, NULL, 0) == 0);
		CHECK_STR(r.code, codes[i]);
		CHECK_STR(r.message, "why");
		CHECK(r.pem == NULL);
		CHECK_STR(r.phone, "");
		CHECK_STR(r.status, "");
		envelope_reply_free(&r);
	}
}

TEST(error_answer_with_odd_data_is_still_an_error_code)
{
	struct envelope_reply r;

	REQUIRE(parse_str("{\"RequestId\":\"x\",\"Code\":\"System.LimitControl\",\"Data\":7}", &r,
			  NULL, 0) == 0);
	CHECK_STR(r.code, "System.LimitControl");
	CHECK_STR(r.message, "");
	CHECK(r.pem == NULL);
	envelope_reply_free(&r);
}

TEST(missing_message_defaults_to_empty)
{
	char *body = ok_body("r", test_pem, "VALID");
	cJSON *root = cJSON_Parse(body);
	struct envelope_reply r;
	char *s;

	cJSON_DeleteItemFromObject(root, "Message");
	cJSON_DeleteItemFromObject(cJSON_GetObjectItem(root, "Data"), "PhoneNumber");
	s = cJSON_PrintUnformatted(root);
	REQUIRE(parse_str(s, &r, NULL, 0) == 0);
	CHECK_STR(r.message, "");
	CHECK_STR(r.phone, "");
	envelope_reply_free(&r);
	cJSON_free(s);
	cJSON_Delete(root);
	free(body);
}

TEST(malformed_json_is_rejected)
{
	struct envelope_reply r;

	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":\"OK\""));
	CHECK(parse_rejects("not json at all"));
	CHECK(parse_rejects("[1,2,3]"));
	CHECK(parse_rejects("\"OK\""));
	CHECK(envelope_parse("", 0, &r, NULL, 0) == -EBADMSG);
	CHECK(envelope_parse(NULL, 0, &r, NULL, 0) == -EBADMSG);
	/* The length bounds the parse: the valid prefix alone is not JSON. */
	CHECK(envelope_parse("{\"RequestId\":\"x\",\"Code\":\"E\"}", 10, &r, NULL, 0) == -EBADMSG);
}

TEST(missing_code_or_request_id_is_rejected)
{
	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Message\":\"m\"}"));
	CHECK(parse_rejects("{\"Code\":\"OK\",\"Message\":\"m\"}"));
	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":\"\"}"));
	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":null}"));
}

TEST(ok_without_data_is_rejected)
{
	char *body = ok_body("r", test_pem, "VALID");
	cJSON *root = cJSON_Parse(body), *data;
	char *s;

	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":\"OK\",\"Message\":\"m\"}"));
	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":\"OK\",\"Data\":\"k\"}"));
	CHECK(parse_rejects("{\"RequestId\":\"x\",\"Code\":\"OK\",\"Data\":{}}"));

	data = cJSON_GetObjectItem(root, "Data");
	cJSON_DeleteItemFromObject(data, "EncryptionPublicKeyStatus");
	s = cJSON_PrintUnformatted(root);
	CHECK(parse_rejects(s));
	cJSON_free(s);

	cJSON_AddStringToObject(data, "EncryptionPublicKeyStatus", "VALID");
	cJSON_DeleteItemFromObject(data, "EncryptionPublicKey");
	s = cJSON_PrintUnformatted(root);
	CHECK(parse_rejects(s));
	cJSON_free(s);
	cJSON_Delete(root);
	free(body);
}

TEST(pem_garbage_is_rejected)
{
	static const char *bad[] = {
		"not a pem",
		"-----BEGIN PUBLIC KEY-----\nnot*base64!!\n-----END PUBLIC KEY-----\n",
		"-----BEGIN PUBLIC KEY-----\nQUJDRA==\n-----END PUBLIC KEY-----\n",
		"-----BEGIN CERTIFICATE-----\nQUJDRA==\n-----END CERTIFICATE-----\n",
		"",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *body = ok_body("r", bad[i], "VALID");
		char fp[LIMIT_SHA256_HEX];

		CHECK(parse_rejects(body));
		CHECK(envelope_pem_fingerprint(bad[i], strlen(bad[i]), fp) == -EBADMSG);
		free(body);
	}
}

TEST(truncated_pem_is_rejected)
{
	size_t len = strlen(test_pem);
	char *cut = strndup(test_pem, len / 2);
	char *no_end = strndup(test_pem, (size_t)(strstr(test_pem, "-----END") - test_pem));
	char *body = ok_body("r", cut, "VALID");
	char *body2 = ok_body("r", no_end, "VALID");

	CHECK(parse_rejects(body));
	CHECK(parse_rejects(body2));
	free(cut);
	free(no_end);
	free(body);
	free(body2);
}

TEST(text_around_the_pem_is_rejected)
{
	char before[4096], after[4096], twice[8192];
	char *b1, *b2, *b3;

	snprintf(before, sizeof(before), "junk\n%s", test_pem);
	snprintf(after, sizeof(after), "%sjunk\n", test_pem);
	snprintf(twice, sizeof(twice), "%s%s", test_pem, test_pem);
	b1 = ok_body("r", before, "VALID");
	b2 = ok_body("r", after, "VALID");
	b3 = ok_body("r", twice, "VALID");
	CHECK(parse_rejects(b1));
	CHECK(parse_rejects(b2));
	CHECK(parse_rejects(b3));
	free(b1);
	free(b2);
	free(b3);
}

TEST(over_long_fields_are_rejected_not_truncated)
{
	char id[LIMIT_REQUEST_ID_MAX + 2], body[1024], big_msg[LIMIT_MESSAGE_MAX + 2];
	char *big_pem, *b;
	struct envelope_reply r;

	memset(id, 'a', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	snprintf(body, sizeof(body), "{\"RequestId\":\"%s\",\"Code\":\"E\"}", id);
	CHECK(parse_rejects(body));
	/* Exactly at the limit is fine. */
	id[LIMIT_REQUEST_ID_MAX] = '\0';
	snprintf(body, sizeof(body), "{\"RequestId\":\"%s\",\"Code\":\"E\"}", id);
	REQUIRE(parse_str(body, &r, NULL, 0) == 0);
	CHECK(strlen(r.request_id) == LIMIT_REQUEST_ID_MAX);
	envelope_reply_free(&r);

	memset(big_msg, 'm', sizeof(big_msg) - 1);
	big_msg[sizeof(big_msg) - 1] = '\0';
	snprintf(body, sizeof(body), "{\"RequestId\":\"x\",\"Code\":\"E\",\"Message\":\"%s\"}",
		 big_msg);
	CHECK(parse_rejects(body));

	b = ok_body("r", test_pem, "VALID_BUT_FAR_TOO_LONG_FOR_A_STATUS_TOKEN");
	CHECK(parse_rejects(b));
	free(b);

	big_pem = malloc(LIMIT_PEM_MAX_BYTES + 2);
	memset(big_pem, ' ', LIMIT_PEM_MAX_BYTES + 1);
	memcpy(big_pem, test_pem, strlen(test_pem));
	big_pem[LIMIT_PEM_MAX_BYTES + 1] = '\0';
	b = ok_body("r", big_pem, "VALID");
	CHECK(parse_rejects(b));
	free(b);
	free(big_pem);
}

TEST(non_string_types_are_rejected)
{
	char *body = ok_body("r", test_pem, "VALID");
	static const char *bad[] = {
		"{\"RequestId\":12,\"Code\":\"E\"}",
		"{\"RequestId\":\"x\",\"Code\":true}",
		"{\"RequestId\":\"x\",\"Code\":\"E\",\"Message\":{}}",
		"{\"RequestId\":[\"x\"],\"Code\":\"E\"}",
	};
	cJSON *root;
	size_t i;
	char *s;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse_rejects(bad[i]));

	root = cJSON_Parse(body);
	cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "Data"), "EncryptionPublicKey",
				  cJSON_CreateNumber(5));
	s = cJSON_PrintUnformatted(root);
	CHECK(parse_rejects(s));
	cJSON_free(s);
	cJSON_Delete(root);

	root = cJSON_Parse(body);
	cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "Data"), "PhoneNumber",
				  cJSON_CreateNumber(8613800000000.0));
	s = cJSON_PrintUnformatted(root);
	CHECK(parse_rejects(s));
	cJSON_free(s);
	cJSON_Delete(root);
	free(body);
}

TEST(status_must_be_an_upper_case_token)
{
	static const char *bad[] = { "valid", "", "VALID ", "VA-LID" };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *body = ok_body("r", test_pem, bad[i]);

		CHECK(parse_rejects(body));
		free(body);
	}
}

TEST(render_ok_round_trips_through_parse)
{
	struct buf out;
	struct envelope_reply r;
	char err[128] = "";

	buf_init(&out, LIMIT_BODY_MAX_BYTES);
	envelope_render_ok(&out, "RID-\"1\"", "fine\ttoday", "8613800000000", test_pem,
			   "VALID");
	REQUIRE(buf_error(&out) == 0);
	REQUIRE(envelope_parse(buf_str(&out), out.len, &r, err, sizeof(err)) == 0);
	CHECK_STR(r.request_id, "RID-\"1\"");
	CHECK_STR(r.code, "OK");
	CHECK_STR(r.message, "fine\ttoday");
	CHECK_STR(r.phone, "8613800000000");
	CHECK_STR(r.pem, test_pem);
	CHECK_STR(r.status, "VALID");
	CHECK_STR(r.fingerprint, test_fp);
	envelope_reply_free(&r);
	buf_free(&out);
}

TEST(render_ok_uses_the_upstream_key_order)
{
	struct buf out;

	buf_init(&out, LIMIT_BODY_MAX_BYTES);
	envelope_render_ok(&out, "R", "M", "86", "-----BEGIN PUBLIC KEY-----\nAB\n", "VALID");
	CHECK_STR(buf_str(&out),
		  "{\"RequestId\":\"R\",\"Code\":\"OK\",\"Message\":\"M\",\"Data\":{"
		  "\"PhoneNumber\":\"86\",\"EncryptionPublicKey\":"
		  "\"-----BEGIN PUBLIC KEY-----\\nAB\\n\",\"EncryptionPublicKeyStatus\":\"VALID\"}}");
	buf_free(&out);
}

TEST(render_error_is_exact_and_parses_back)
{
	struct buf out;
	struct envelope_reply r;

	buf_init(&out, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&out, "R-2", "Proxy.UpstreamError", "upstream said \"no\"");
	CHECK_STR(buf_str(&out), "{\"RequestId\":\"R-2\",\"Code\":\"Proxy.UpstreamError\","
				 "\"Message\":\"upstream said \\\"no\\\"\"}");
	REQUIRE(envelope_parse(buf_str(&out), out.len, &r, NULL, 0) == 0);
	CHECK_STR(r.code, "Proxy.UpstreamError");
	CHECK_STR(r.message, "upstream said \"no\"");
	envelope_reply_free(&r);
	buf_free(&out);
}

TEST(json_string_escapes_quotes_backslashes_and_control_bytes)
{
	const char *in = "a\"b\\c\nd\x01" "e\x1f/\r\t\b\f\x7f\xc3\xa9";
	struct buf out;
	cJSON *back;

	buf_init(&out, 1024);
	envelope_json_string(&out, in);
	CHECK_STR(buf_str(&out),
		  "\"a\\\"b\\\\c\\nd\\u0001e\\u001f/\\r\\t\\b\\f\x7f\xc3\xa9\"");
	back = cJSON_Parse(buf_str(&out));
	REQUIRE(back && cJSON_IsString(back));
	CHECK_STR(back->valuestring, in);
	cJSON_Delete(back);

	buf_reset(&out);
	envelope_json_string(&out, NULL);
	envelope_json_string(&out, "");
	CHECK_STR(buf_str(&out), "\"\"\"\"");
	buf_free(&out);
}

TEST(render_into_a_small_buffer_sets_the_sticky_error)
{
	struct buf out;

	buf_init(&out, 32);
	envelope_render_ok(&out, "R", "M", "86", test_pem, "VALID");
	CHECK(buf_error(&out) == -E2BIG);
	buf_free(&out);
}

/* ---- envelope_classify ---------------------------------------------------- */

struct class_case {
	long http_status;
	const char *code;
	enum envelope_class cls;
	int answer_status;
	const char *label;
};

static void expect_cases(const struct class_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct class_case *c = &cases[i];
		enum envelope_outcome outcome = ENVELOPE_OUTCOME_COUNT;
		int status = 0;
		enum envelope_class cls = envelope_classify(c->http_status, c->code, &status, &outcome);

		if (cls != c->cls || status != c->answer_status ||
		    strcmp(envelope_outcome_label(outcome), c->label) != 0) {
			fprintf(stderr, "  HTTP %ld [%s]: class %d status %d label %s, want %d %d %s\n",
				c->http_status, c->code ? c->code : "(null)", (int)cls, status,
				envelope_outcome_label(outcome), (int)c->cls, c->answer_status,
				c->label);
			CHECK(0);
		}
	}
}

#define N_CASES(a) (sizeof(a) / sizeof((a)[0]))

TEST(ok_throttle_and_definitive_codes_are_classified_with_their_status)
{
	static const struct class_case cases[] = {
		{ 200, "OK", ENVELOPE_OK, 200, "OK" },
		{ 400, "System.LimitControl", ENVELOPE_THROTTLED, 503, "System.LimitControl" },
		{ 429, "System.LimitControl", ENVELOPE_THROTTLED, 503, "System.LimitControl" },
		{ 503, "System.LimitControl", ENVELOPE_THROTTLED, 503, "System.LimitControl" },
		{ 400, "Product.Unsubscript", ENVELOPE_DEFINITIVE, 403, "Product.Unsubscript" },
		{ 400, "Ram.PermissionDeny", ENVELOPE_DEFINITIVE, 403, "Ram.PermissionDeny" },
		{ 403, "Ram.PermissionDeny", ENVELOPE_DEFINITIVE, 403, "Ram.PermissionDeny" },
		{ 400, "Unknown.ResourceOwnerId", ENVELOPE_DEFINITIVE, 404, "Unknown.ResourceOwnerId" },
	};

	expect_cases(cases, N_CASES(cases));
}

TEST(credential_codes_are_the_daemons_problem_and_502)
{
	static const char *const codes[] = {
		"SignatureDoesNotMatch", "IncompleteSignature", "MissingSignature",
		"MissingSignatureNonce", "InvalidSignatureMethod", "InvalidSignatureVersion",
		"InvalidAccessKeyId", "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive",
		"InvalidTimeStamp", "InvalidTimeStamp.Expired", "InvalidTimeStamp.Format",
		"InvalidSecurityToken", "InvalidSecurityToken.Expired",
		"InvalidSecurityToken.Malformed", "InvalidSecurityToken.Mismatch",
		"MissingSecurityToken", "MissingParameter", "Forbidden.AccessKeyDisabled",
	};

	for (size_t i = 0; i < N_CASES(codes); i++) {
		struct class_case c = { 400, codes[i], ENVELOPE_CREDENTIAL, 502, "auth_error" };

		expect_cases(&c, 1);
		c.http_status = 404;
		expect_cases(&c, 1);
	}
}

TEST(nonce_used_means_our_request_arrived_twice)
{
	static const struct class_case cases[] = {
		{ 400, "SignatureNonceUsed", ENVELOPE_NONCE_REUSED, 502, "auth_error" },
		/* not a family: a longer name is some other Code */
		{ 400, "SignatureNonceUsed.Again", ENVELOPE_OTHER, 502, "other_code" },
	};

	expect_cases(cases, N_CASES(cases));
}

TEST(any_code_at_a_5xx_is_a_server_error_but_throttling)
{
	static const struct class_case cases[] = {
		{ 500, "InternalError", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		{ 503, "ServiceUnavailable", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		{ 502, "OK", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		{ 500, "Product.Unsubscript", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		{ 500, "SignatureDoesNotMatch", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		{ 599, "", ENVELOPE_SERVER_ERROR, 502, "http_error" },
		/* the same Codes below 500 are not */
		{ 400, "InternalError", ENVELOPE_OTHER, 502, "other_code" },
		{ 400, "ServiceUnavailable", ENVELOPE_OTHER, 502, "other_code" },
	};

	expect_cases(cases, N_CASES(cases));
}

TEST(unknown_and_near_miss_codes_are_other)
{
	static const char *const other[] = {
		"", "ok", "OK.", "System.LimitControlX", "System.LimitControl.Sub",
		"Product.UnsubscriptX", "isv.BUSINESS_LIMIT_CONTROL", "InvalidParameter",
		"Signature", "Invalid", "InvalidAccessKeyIdX", "InvalidAccessKeyId.",
		"InvalidTimeStampX", "Forbidden", "Forbidden.AccessKeyDisabledX",
	};

	for (size_t i = 0; i < N_CASES(other); i++) {
		struct class_case c = { 400, other[i], ENVELOPE_OTHER, 502, "other_code" };

		expect_cases(&c, 1);
	}
	{
		struct class_case c = { 400, NULL, ENVELOPE_OTHER, 502, "other_code" };

		expect_cases(&c, 1);
	}
}

TEST(classify_accepts_null_outputs)
{
	CHECK(envelope_classify(200, "OK", NULL, NULL) == ENVELOPE_OK);
	CHECK(envelope_classify(500, "OK", NULL, NULL) == ENVELOPE_SERVER_ERROR);
}

TEST(every_outcome_has_a_distinct_label)
{
	for (unsigned i = 0; i < ENVELOPE_OUTCOME_COUNT; i++) {
		const char *a = envelope_outcome_label((enum envelope_outcome)i);

		REQUIRE(a != NULL && a[0] != '\0');
		for (unsigned j = i + 1; j < ENVELOPE_OUTCOME_COUNT; j++)
			CHECK(strcmp(a, envelope_outcome_label((enum envelope_outcome)j)) != 0);
	}
	CHECK_STR(envelope_outcome_label(ENVELOPE_OUTCOME_TIMEOUT), "timeout");
	CHECK_STR(envelope_outcome_label(ENVELOPE_OUTCOME_NETWORK), "network");
}

int main(void)
{
	make_key();
	RUN(valid_ok_answer_is_parsed_with_der_fingerprint);
	RUN(non_valid_status_token_is_accepted);
	RUN(fingerprint_ignores_pem_line_endings_and_trailing_space);
	RUN(documented_error_codes_parse_without_data);
	RUN(error_answer_with_odd_data_is_still_an_error_code);
	RUN(missing_message_defaults_to_empty);
	RUN(malformed_json_is_rejected);
	RUN(missing_code_or_request_id_is_rejected);
	RUN(ok_without_data_is_rejected);
	RUN(pem_garbage_is_rejected);
	RUN(truncated_pem_is_rejected);
	RUN(text_around_the_pem_is_rejected);
	RUN(over_long_fields_are_rejected_not_truncated);
	RUN(non_string_types_are_rejected);
	RUN(status_must_be_an_upper_case_token);
	RUN(render_ok_round_trips_through_parse);
	RUN(render_ok_uses_the_upstream_key_order);
	RUN(render_error_is_exact_and_parses_back);
	RUN(json_string_escapes_quotes_backslashes_and_control_bytes);
	RUN(render_into_a_small_buffer_sets_the_sticky_error);
	RUN(ok_throttle_and_definitive_codes_are_classified_with_their_status);
	RUN(credential_codes_are_the_daemons_problem_and_502);
	RUN(nonce_used_means_our_request_arrived_twice);
	RUN(any_code_at_a_5xx_is_a_server_error_but_throttling);
	RUN(unknown_and_near_miss_codes_are_other);
	RUN(classify_accepts_null_outputs);
	RUN(every_outcome_has_a_distinct_label);
	free(test_pem);
	return harness_done();
}
