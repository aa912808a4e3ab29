/*
 * selftest.c -- the verifier checked against published vectors (selftest.h).
 *
 * For each V3 case the request is rebuilt from `input` (method, query,
 * headers, body), authenticated with the Authorization header of `output`
 * at the case's own x-acs-date, and every intermediate string the case
 * gives (hashed payload, canonical request or its hash, string to sign,
 * signed headers, signature) must equal the verifier's. For each RPC V1
 * case the parameters plus the case's Signature must verify at the case's
 * Timestamp, with the same comparison of the canonicalized query string,
 * string to sign and signature.
 *
 * Then tampered copies must be refused with the right code, so the check
 * cannot pass by accepting everything: a corrupted signature, a wrong
 * secret, an altered body / parameter / signed header value, an added
 * query parameter, a mandatory header left out of SignedHeaders, another
 * AccessKey ID, a time outside the window.
 *
 * Owns the parsed JSON trees for the duration of the run. Single-threaded.
 */
#include "selftest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "simsig.h"
#include "simutil.h"

#define SELFTEST_FILE_MAX_BYTES (4 * 1024 * 1024)

struct tally {
	unsigned passed, failed;
};

static cJSON *load_json(const char *dir, const char *name)
{
	char path[4096];
	struct sbuf b;
	char chunk[4096];
	size_t n;
	FILE *f;
	cJSON *root;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f) {
		printf("not ok - %s: cannot open %s\n", name, path);
		return NULL;
	}
	sbuf_init(&b, SELFTEST_FILE_MAX_BYTES);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sbuf_add(&b, chunk, n);
	fclose(f);
	root = b.error ? NULL : cJSON_ParseWithLength(sbuf_str(&b), b.len);
	sbuf_free(&b);
	if (!root)
		printf("not ok - %s: not JSON (or over %d bytes)\n", name, SELFTEST_FILE_MAX_BYTES);
	return root;
}

static const char *jstr(const cJSON *o, const char *name)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Headers of a case, with at most one value replaced for a tampered copy. */
struct json_headers {
	const cJSON *headers;
	const char *override_name;
	const char *override_value;
};

static const char *json_header(void *ctx, const char *name)
{
	const struct json_headers *h = ctx;
	const cJSON *item;

	if (h->override_name && strcasecmp(h->override_name, name) == 0)
		return h->override_value;
	cJSON_ArrayForEach(item, h->headers)
	{
		if (item->string && strcasecmp(item->string, name) == 0 && cJSON_IsString(item))
			return item->valuestring;
	}
	return NULL;
}

/* Every member of a JSON object of strings as raw parameters. */
static int params_from_object(struct params *p, const cJSON *o)
{
	const cJSON *item;

	cJSON_ArrayForEach(item, o)
	{
		if (!item->string || !cJSON_IsString(item))
			return -1;
		params_add(p, item->string, strlen(item->string), item->valuestring,
			   strlen(item->valuestring));
	}
	return p->overflow ? -1 : 0;
}

/* A copy of s with the first occurrence of what removed (or NULL). */
static char *without(const char *s, const char *what)
{
	const char *at = strstr(s, what);
	size_t len = strlen(s), wl = strlen(what);
	char *out;

	if (!at)
		return NULL;
	out = sim_xmalloc(len - wl + 1);
	memcpy(out, s, (size_t)(at - s));
	memcpy(out + (at - s), at + wl, len - (size_t)(at - s) - wl + 1);
	return out;
}

/* A copy of s with its last character replaced by a different one. */
static char *corrupt_last(const char *s)
{
	char *out = sim_xstrdup(s);
	size_t len = strlen(out);

	if (len)
		out[len - 1] = out[len - 1] == '0' ? '1' : '0';
	return out;
}

/* Record the first mismatch of a case into why. */
static void expect_eq(char *why, size_t why_size, const char *what, const char *want,
		      const char *got)
{
	if (why[0] || !want || strcmp(want, got) == 0)
		return;
	snprintf(why, why_size, "%s differs: want %.200s, got %.200s", what, want, got);
}

static void expect_refused(char *why, size_t why_size, const char *what, bool accepted,
			   const struct verdict *v, const char *code, unsigned *n_checks)
{
	(*n_checks)++;
	if (why[0])
		return;
	if (accepted)
		snprintf(why, why_size, "%s was accepted", what);
	else if (strcmp(v->code, code) != 0)
		snprintf(why, why_size, "%s gave %s, want %s", what, v->code, code);
}

static void report(struct tally *t, const char *id, const char *why, unsigned n_checks)
{
	if (why[0]) {
		printf("not ok - %s: %s\n", id, why);
		t->failed++;
	} else {
		printf("ok - %s (signature verified, %u tampered copies refused)\n", id, n_checks);
		t->passed++;
	}
}

static void check_v3_case(struct tally *tally, const cJSON *c)
{
	const char *id = jstr(c, "id") ? jstr(c, "id") : "(no id)";
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
	const cJSON *out = cJSON_GetObjectItemCaseSensitive(c, "output");
	const char *method = jstr(in, "method"), *body = jstr(in, "body");
	const char *key_id = jstr(in, "access_key_id"), *secret = jstr(in, "access_key_secret");
	const char *authz = jstr(out, "authorization"), *date;
	struct json_headers hdrs = { cJSON_GetObjectItemCaseSensitive(in, "headers"), NULL, NULL };
	struct params query = { .n = 0 }, more = { .n = 0 };
	struct v3_request rq;
	struct v3_trace t;
	struct verdict v;
	char why[600] = "", *bad_secret, *tampered, *body2;
	unsigned n_checks = 0;
	time_t now_s;
	bool ok;

	if (!method || !body || !key_id || !secret || !authz || !cJSON_IsObject(hdrs.headers) ||
	    params_from_object(&query, cJSON_GetObjectItemCaseSensitive(in, "query")) < 0 ||
	    !(date = json_header(&hdrs, "x-acs-date")) || simsig_parse_iso8601(date, &now_s) < 0) {
		report(tally, id, "the case lacks an input or output field", 0);
		params_free(&query);
		return;
	}
	rq = (struct v3_request){ method, &query, json_header, &hdrs, body, strlen(body) };

	memset(&v, 0, sizeof(v));
	v3_trace_init(&t);
	ok = simsig_v3_verify(&rq, authz, key_id, secret, now_s, &v, &t);
	if (!ok)
		snprintf(why, sizeof(why), "refused: %s (%s)", v.code, v.message);
	expect_eq(why, sizeof(why), "hashed_payload", jstr(out, "hashed_payload"),
		  t.hashed_payload);
	expect_eq(why, sizeof(why), "canonical_request", jstr(out, "canonical_request"),
		  sbuf_str(&t.canonical_request));
	expect_eq(why, sizeof(why), "hashed_canonical_request",
		  jstr(out, "hashed_canonical_request"),
		  t.string_to_sign.len > 17 ? sbuf_str(&t.string_to_sign) + 17 : "");
	expect_eq(why, sizeof(why), "string_to_sign", jstr(out, "string_to_sign"),
		  sbuf_str(&t.string_to_sign));
	expect_eq(why, sizeof(why), "signed_headers", jstr(out, "signed_headers"),
		  t.signed_headers);
	expect_eq(why, sizeof(why), "signature", jstr(out, "signature"), t.signature);
	v3_trace_free(&t);

	/* Tampered copies. */
	tampered = corrupt_last(authz);
	expect_refused(why, sizeof(why), "a corrupted signature",
		       simsig_v3_verify(&rq, tampered, key_id, secret, now_s, &v, NULL), &v,
		       "SignatureDoesNotMatch", &n_checks);
	free(tampered);

	bad_secret = corrupt_last(secret);
	expect_refused(why, sizeof(why), "a wrong secret",
		       simsig_v3_verify(&rq, authz, key_id, bad_secret, now_s, &v, NULL), &v,
		       "SignatureDoesNotMatch", &n_checks);
	free(bad_secret);

	body2 = sim_xmalloc(strlen(body) + 3);
	snprintf(body2, strlen(body) + 3, "%s&x", body);
	rq.body = body2;
	rq.body_len = strlen(body2);
	expect_refused(why, sizeof(why), "an altered body",
		       simsig_v3_verify(&rq, authz, key_id, secret, now_s, &v, NULL), &v,
		       "SignatureDoesNotMatch", &n_checks);
	rq.body = body;
	rq.body_len = strlen(body);
	free(body2);

	hdrs.override_name = "x-acs-signature-nonce";
	hdrs.override_value = "00000000000000000000000000000000";
	expect_refused(why, sizeof(why), "an altered signed header",
		       simsig_v3_verify(&rq, authz, key_id, secret, now_s, &v, NULL), &v,
		       "SignatureDoesNotMatch", &n_checks);
	hdrs.override_name = hdrs.override_value = NULL;

	params_append(&more, &query);
	params_add(&more, "Extra", 5, "1", 1);
	rq.query = &more;
	expect_refused(why, sizeof(why), "an added query parameter",
		       simsig_v3_verify(&rq, authz, key_id, secret, now_s, &v, NULL), &v,
		       "SignatureDoesNotMatch", &n_checks);
	rq.query = &query;
	params_free(&more);

	tampered = without(authz, "x-acs-date;");
	expect_refused(why, sizeof(why), "SignedHeaders without x-acs-date",
		       tampered && simsig_v3_verify(&rq, tampered, key_id, secret, now_s, &v, NULL),
		       &v, tampered ? "IncompleteSignature" : "", &n_checks);
	free(tampered);

	expect_refused(why, sizeof(why), "another AccessKey ID",
		       simsig_v3_verify(&rq, authz, "LTAIsomeoneElse", secret, now_s, &v, NULL),
		       &v, "InvalidAccessKeyId.NotFound", &n_checks);
	expect_refused(why, sizeof(why), "a date 16 minutes old",
		       simsig_v3_verify(&rq, authz, key_id, secret, now_s + 16 * 60, &v, NULL),
		       &v, "InvalidTimeStamp.Expired", &n_checks);

	params_free(&query);
	report(tally, id, why, n_checks);
}

static void check_v1_case(struct tally *tally, const cJSON *c)
{
	const char *id = jstr(c, "id") ? jstr(c, "id") : "(no id)";
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
	const cJSON *out = cJSON_GetObjectItemCaseSensitive(c, "output");
	const char *method = jstr(in, "method"), *secret = jstr(in, "access_key_secret");
	const char *sig = jstr(out, "signature"), *key_id, *stamp;
	struct params all = { .n = 0 }, tampered = { .n = 0 };
	struct v1_trace t;
	struct verdict v;
	char why[600] = "";
	unsigned n_checks = 0;
	time_t now_s;
	size_t i;
	bool ok;

	if (!method || !secret || !sig ||
	    params_from_object(&all, cJSON_GetObjectItemCaseSensitive(in, "params")) < 0 ||
	    !(key_id = params_get(&all, "AccessKeyId")) ||
	    !(stamp = params_get(&all, "Timestamp")) ||
	    simsig_parse_iso8601(stamp, &now_s) < 0) {
		report(tally, id, "the case lacks an input or output field", 0);
		params_free(&all);
		return;
	}
	params_add(&all, "Signature", 9, sig, strlen(sig));
	key_id = params_get(&all, "AccessKeyId"); /* still valid: kv[] does not move */

	memset(&v, 0, sizeof(v));
	v1_trace_init(&t);
	ok = simsig_v1_verify(method, &all, key_id, secret, now_s, &v, &t);
	if (!ok)
		snprintf(why, sizeof(why), "refused: %s (%s)", v.code, v.message);
	expect_eq(why, sizeof(why), "canonicalized_query_string",
		  jstr(out, "canonicalized_query_string"),
		  sbuf_str(&t.canonicalized_query_string));
	expect_eq(why, sizeof(why), "string_to_sign", jstr(out, "string_to_sign"),
		  sbuf_str(&t.string_to_sign));
	expect_eq(why, sizeof(why), "signature", sig, t.signature);
	v1_trace_free(&t);

	/* Tampered copies: each changes one thing of `all`. */
	for (i = 0; i < 5; i++) {
		static const struct {
			const char *what, *code;
		} cases[5] = {
			{ "a corrupted signature", "SignatureDoesNotMatch" },
			{ "a wrong secret", "SignatureDoesNotMatch" },
			{ "an altered SignatureNonce", "SignatureDoesNotMatch" },
			{ "an added parameter", "SignatureDoesNotMatch" },
			{ "SignatureMethod HMAC-SHA256", "InvalidSignatureMethod" },
		};
		const char *use_secret = secret;
		char *bad_secret = NULL;
		size_t k;

		params_free(&tampered);
		for (k = 0; k < all.n; k++) {
			const struct sim_param *p = &all.kv[k];
			const char *value = p->value;
			char *changed = NULL;

			if (i == 0 && strcmp(p->key, "Signature") == 0)
				value = changed = corrupt_last(p->value);
			else if (i == 2 && strcmp(p->key, "SignatureNonce") == 0)
				value = changed = corrupt_last(p->value);
			else if (i == 4 && strcmp(p->key, "SignatureMethod") == 0)
				value = "HMAC-SHA256";
			params_add(&tampered, p->key, p->key_len, value, strlen(value));
			free(changed);
		}
		if (i == 1)
			use_secret = bad_secret = corrupt_last(secret);
		if (i == 3)
			params_add(&tampered, "Extra", 5, "1", 1);
		expect_refused(why, sizeof(why), cases[i].what,
			       simsig_v1_verify(method, &tampered, key_id, use_secret, now_s, &v,
						NULL),
			       &v, cases[i].code, &n_checks);
		free(bad_secret);
	}
	params_free(&tampered);
	expect_refused(why, sizeof(why), "another AccessKey ID",
		       simsig_v1_verify(method, &all, "LTAIsomeoneElse", secret, now_s, &v, NULL),
		       &v, "InvalidAccessKeyId.NotFound", &n_checks);
	expect_refused(why, sizeof(why), "a Timestamp 16 minutes old",
		       simsig_v1_verify(method, &all, key_id, secret, now_s + 16 * 60, &v, NULL),
		       &v, "InvalidTimeStamp.Expired", &n_checks);
	params_free(&all);
	report(tally, id, why, n_checks);
}

int selftest_run(const char *dir)
{
	struct tally t = { 0, 0 };
	cJSON *vectors = load_json(dir, "signature-vectors.json");
	cJSON *docs = load_json(dir, "alibaba-doc-examples.json");
	const cJSON *c;

	if (!vectors || !docs)
		t.failed++;
	if (vectors) {
		const cJSON *cases = cJSON_GetObjectItemCaseSensitive(vectors, "cases");

		if (!cJSON_IsArray(cases) || cJSON_GetArraySize(cases) == 0) {
			printf("not ok - signature-vectors.json: no cases\n");
			t.failed++;
		}
		cJSON_ArrayForEach(c, cases)
		{
			const char *kind = jstr(c, "kind");

			if (kind && strcmp(kind, "ACS3-HMAC-SHA256") == 0) {
				check_v3_case(&t, c);
			} else if (kind && strcmp(kind, "HMAC-SHA1") == 0) {
				check_v1_case(&t, c);
			} else {
				printf("not ok - %s: unknown kind\n",
				       jstr(c, "id") ? jstr(c, "id") : "(no id)");
				t.failed++;
			}
		}
	}
	if (docs) {
		const cJSON *v3 = cJSON_GetObjectItemCaseSensitive(docs, "v3");
		const cJSON *v1 = cJSON_GetObjectItemCaseSensitive(docs, "rpc_v1");

		if (cJSON_GetArraySize(v3) == 0 || cJSON_GetArraySize(v1) == 0) {
			printf("not ok - alibaba-doc-examples.json: no v3 or rpc_v1 cases\n");
			t.failed++;
		}
		cJSON_ArrayForEach(c, v3)
			check_v3_case(&t, c);
		cJSON_ArrayForEach(c, v1)
			check_v1_case(&t, c);
	}
	cJSON_Delete(vectors);
	cJSON_Delete(docs);
	printf("# %u passed, %u failed\n", t.passed, t.failed);
	fflush(stdout);
	return t.failed == 0 && t.passed > 0 ? 0 : 1;
}
