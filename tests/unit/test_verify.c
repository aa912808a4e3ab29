/*
 * test_verify.c -- unit tests for verify.c.
 *
 * The official SDK's signature vectors (tests/data/vectors/signature-
 * vectors.json) are verified "in the other direction": each case's request,
 * secret and time must verify, and a one-byte change of the signature, the
 * body, a signed header, a query value or the secret must fail with the
 * right code. Requests captured byte for byte from the real Node SDK
 * (tests/data/sdk-requests/, chunked bodies) are parsed here and verified.
 * The rest drives the refusals one by one: time window edges, nonce
 * replay, STS, unknown keys, incomplete or foreign signatures, actions.
 */
#include "verify.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "buf.h"
#include "harness.h"
#include "mem.h"
#include "signer.h"

#define V3_KIND "ACS3-HMAC-SHA256"
#define V1_KIND "HMAC-SHA1"
#define VEC_KEY_ID "LTAI5tVectorExample01"
#define VEC_SECRET "VectorExampleSecret0123456789AB"
#define OTHER_KEY_ID "LTAI5tOtherTeam02"
#define OTHER_SECRET "OtherTeamSecretZYXWVUTSRQPONM"

/* ---- the key table find_secret looks in ---- */

static const struct {
	const char *id, *secret;
	unsigned client_id;
} keys[] = {
	{ VEC_KEY_ID, VEC_SECRET, 7 },
	{ "STS.NVectorExampleTmpKey", "StsVectorExampleSecret987654", 8 },
	{ "LTAI5tSdkCapture01", "SdkCaptureSecret0123456789abcdef", 9 },
	{ OTHER_KEY_ID, OTHER_SECRET, 10 },
};
static const char *secret_override; /* "the secret changed" */
static int lookups;

static int find_secret(void *cls, const char *id, size_t len, char *ret_secret, size_t cap,
		       unsigned *ret_client_id)
{
	(void)cls;
	lookups++;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *secret = secret_override ? secret_override : keys[i].secret;

		if (strlen(keys[i].id) != len || memcmp(keys[i].id, id, len) != 0)
			continue;
		if (strlen(secret) >= cap)
			return -E2BIG;
		memcpy(ret_secret, secret, strlen(secret) + 1);
		*ret_client_id = keys[i].client_id;
		return 0;
	}
	return -ENOENT;
}

/* ---- a request the tests can change ---- */

#define REQ_MAX 48

struct kv {
	char *name;
	char *value;
	size_t value_len;
};

struct req {
	char method[8];
	struct kv q[REQ_MAX], h[REQ_MAX];
	size_t nq, nh;
	char *body;
	size_t body_len;
	int64_t now;
};

static void req_init(struct req *r, const char *method)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->method, sizeof(r->method), "%s", method);
}

static void req_free(struct req *r)
{
	for (size_t i = 0; i < r->nq; i++) {
		free(r->q[i].name);
		free(r->q[i].value);
	}
	for (size_t i = 0; i < r->nh; i++) {
		free(r->h[i].name);
		free(r->h[i].value);
	}
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static void kv_add(struct kv *arr, size_t *n, const char *name, const char *value, size_t len)
{
	if (*n == REQ_MAX)
		abort();
	arr[*n].name = xstrdup(name);
	arr[*n].value = xmalloc(len + 1);
	memcpy(arr[*n].value, value, len);
	arr[*n].value[len] = '\0';
	arr[*n].value_len = len;
	(*n)++;
}

static void req_query(struct req *r, const char *name, const char *value)
{
	kv_add(r->q, &r->nq, name, value, strlen(value));
}

static void req_header(struct req *r, const char *name, const char *value)
{
	kv_add(r->h, &r->nh, name, value, strlen(value));
}

static void req_body(struct req *r, const char *body, size_t len)
{
	free(r->body);
	r->body = xmalloc(len + 1);
	memcpy(r->body, body, len);
	r->body[len] = '\0';
	r->body_len = len;
}

static struct kv *find_kv(struct kv *arr, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(arr[i].name, name) == 0)
			return &arr[i];
	}
	return NULL;
}

static void set_kv(struct kv *arr, size_t *n, const char *name, const char *value)
{
	struct kv *kv = find_kv(arr, *n, name);

	if (!kv) {
		kv_add(arr, n, name, value, strlen(value));
		return;
	}
	free(kv->value);
	kv->value = xstrdup(value);
	kv->value_len = strlen(value);
}

static void del_kv(struct kv *arr, size_t *n, const char *name)
{
	struct kv *kv = find_kv(arr, *n, name);

	if (!kv)
		return;
	free(kv->name);
	free(kv->value);
	*kv = arr[--*n];
}

/* Flip one bit of byte i of a value (a different, still printable byte). */
static void flip(char *s, size_t i)
{
	s[i] = s[i] == 'A' ? 'B' : (char)(s[i] ^ 0x01);
}

struct outcome {
	int rc;
	struct verify_result result;
	struct verify_error err;
};

static struct outcome run_full(const struct req *r, struct verify_nonces *nonces, bool any_action)
{
	struct verify_pair q[REQ_MAX], h[REQ_MAX];
	struct verify_input in;
	struct outcome o;

	memset(&o, 0, sizeof(o));
	for (size_t i = 0; i < r->nq; i++)
		q[i] = (struct verify_pair){ r->q[i].name, strlen(r->q[i].name), r->q[i].value,
					     r->q[i].value_len };
	for (size_t i = 0; i < r->nh; i++)
		h[i] = (struct verify_pair){ r->h[i].name, strlen(r->h[i].name), r->h[i].value,
					     r->h[i].value_len };
	memset(&in, 0, sizeof(in));
	in.method = r->method;
	in.path = "/";
	in.query = q;
	in.n_query = r->nq;
	in.headers = h;
	in.n_headers = r->nh;
	in.body = r->body;
	in.body_len = r->body_len;
	in.now_wall_s = r->now;
	in.find_secret = find_secret;
	in.nonces = nonces;
	in.any_action = any_action;
	o.rc = verify_request(&in, &o.result, &o.err);
	return o;
}

static struct outcome run(const struct req *r)
{
	return run_full(r, NULL, false);
}

static bool refused(const char *what, struct outcome o, int status, const char *code)
{
	if (o.rc == -EACCES && o.err.http_status == status && o.err.code &&
	    strcmp(o.err.code, code) == 0)
		return true;
	harness_current_failed = 1;
	fprintf(stderr, "  %s: expected %d %s, got rc %d %d %s (%s)\n", what, status, code, o.rc,
		o.err.http_status, o.err.code ? o.err.code : "-", o.err.message);
	return false;
}

static bool accepted(const char *what, struct outcome o)
{
	if (o.rc == 0)
		return true;
	harness_current_failed = 1;
	fprintf(stderr, "  %s: refused: rc %d %d %s (%s)\n", what, o.rc, o.err.http_status,
		o.err.code ? o.err.code : "-", o.err.message);
	return false;
}

/* ---- the vectors ---- */

static cJSON *load_json(const char *rel)
{
	char path[1024];
	char *data;
	size_t len;
	cJSON *root;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", harness_data_dir(), rel);
	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "  cannot open %s\n", path);
		return NULL;
	}
	data = xmalloc(1024 * 1024);
	len = fread(data, 1, 1024 * 1024 - 1, f);
	fclose(f);
	data[len] = '\0';
	root = cJSON_Parse(data);
	free(data);
	return root;
}

static const char *jstr(const cJSON *obj, const char *key)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

static int64_t parse_time_or_die(const char *s)
{
	int64_t t = 0;

	if (!s || verify_parse_time(s, strlen(s), &t) != 0) {
		fprintf(stderr, "  bad time %s\n", s ? s : "(null)");
		abort();
	}
	return t;
}

/* A V3 vector as the request the SDK sent (plus its unsigned user-agent). */
static void req_from_v3(struct req *r, const cJSON *c)
{
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
	const cJSON *out = cJSON_GetObjectItemCaseSensitive(c, "output");
	const cJSON *item;
	const char *body = jstr(in, "body");

	req_init(r, jstr(in, "method"));
	cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(in, "query"))
		req_query(r, item->string, item->valuestring);
	cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(in, "headers"))
		req_header(r, item->string, item->valuestring);
	req_header(r, "user-agent", "AlibabaCloud (linux; x64) Node.js/v20 Core/1.0.1 TeaDSL/1");
	req_header(r, "Authorization", jstr(out, "authorization"));
	req_body(r, body ? body : "", body ? strlen(body) : 0);
	r->now = parse_time_or_die(find_kv(r->h, r->nh, "x-acs-date")->value);
}

/*
 * A V1 vector: a POST sends the API parameters in a form body (as the SDK
 * does), the rest and Signature in the query; a GET sends all in the query.
 */
static void req_from_v1(struct req *r, const cJSON *c)
{
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
	const cJSON *out = cJSON_GetObjectItemCaseSensitive(c, "output");
	const cJSON *api = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(c, "informational"), "api_parameters");
	bool post = strcmp(jstr(in, "method"), "POST") == 0;
	const cJSON *item;
	struct buf body;

	req_init(r, jstr(in, "method"));
	buf_init(&body, 64 * 1024);
	cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(in, "params")) {
		if (post && cJSON_GetObjectItemCaseSensitive(api, item->string)) {
			if (body.len)
				buf_addc(&body, '&');
			buf_adds(&body, item->string);
			buf_addc(&body, '=');
			signer_form_encode(&body, item->valuestring, strlen(item->valuestring));
		} else {
			req_query(r, item->string, item->valuestring);
		}
	}
	req_query(r, "Signature", jstr(out, "signature"));
	req_header(r, "host", "cams.ap-southeast-1.aliyuncs.com");
	req_header(r, "x-acs-version", "2020-06-06");
	req_header(r, "x-acs-action", "GetPhoneEncryptionPublicKey");
	if (body.len) {
		req_header(r, "content-type", "application/x-www-form-urlencoded");
		req_body(r, body.data, body.len);
	}
	buf_free(&body);
	r->now = parse_time_or_die(find_kv(r->q, r->nq, "Timestamp")->value);
}

static bool is_sts(const cJSON *c)
{
	const char *id = jstr(c, "id");
	size_t n = strlen(id);

	return n > 4 && strcmp(id + n - 4, "-sts") == 0;
}

static void check_params(const char *id, const struct outcome *o, const cJSON *c)
{
	const cJSON *api = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(c, "informational"), "api_parameters");
	const char *phone = jstr(api, "PhoneNumber"), *space = jstr(api, "CustSpaceId");

	if (strcmp(o->result.phone_number, phone) != 0 ||
	    o->result.phone_number_len != strlen(phone) ||
	    o->result.has_cust_space_id != (space != NULL) ||
	    (space && strcmp(o->result.cust_space_id, space) != 0) ||
	    strcmp(o->result.action, "GetPhoneEncryptionPublicKey") != 0 ||
	    strcmp(o->result.version, "2020-06-06") != 0 || o->result.client_id != 7 ||
	    strcmp(o->result.access_key_id, VEC_KEY_ID) != 0) {
		harness_current_failed = 1;
		fprintf(stderr, "  case %s: parameters [%s] [%s] client %u\n", id,
			o->result.phone_number, o->result.cust_space_id, o->result.client_id);
	}
}

TEST(every_sdk_vector_verifies_with_its_secret_and_time)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	const cJSON *c;
	int v3 = 0, v1 = 0;

	REQUIRE(root);
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
		const char *kind = jstr(c, "kind"), *id = jstr(c, "id");
		struct outcome o;
		struct req r;

		if (is_sts(c))
			continue;
		if (strcmp(kind, V3_KIND) == 0) {
			req_from_v3(&r, c);
			v3++;
		} else {
			req_from_v1(&r, c);
			v1++;
		}
		o = run(&r);
		if (accepted(id, o)) {
			check_params(id, &o, c);
			CHECK(o.result.scheme == (strcmp(kind, V3_KIND) == 0 ? VERIFY_V3 : VERIFY_V1));
		}
		req_free(&r);
	}
	CHECK(v3 == 11);
	CHECK(v1 == 7);
	cJSON_Delete(root);
}

/* Each mutation of each vector must fail with SignatureDoesNotMatch. */
TEST(one_byte_changes_to_any_signed_part_fail_with_signature_does_not_match)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	const cJSON *c;
	int mutations = 0;

	REQUIRE(root);
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
		bool v3 = strcmp(jstr(c, "kind"), V3_KIND) == 0;
		const char *id = jstr(c, "id");
		char what[160];
		struct req r;
		struct kv *kv;

		if (is_sts(c))
			continue;
		/* The signature: one hex or base64 character. */
		v3 ? req_from_v3(&r, c) : req_from_v1(&r, c);
		if (v3) {
			kv = find_kv(r.h, r.nh, "Authorization");
			flip(kv->value, kv->value_len - 5);
		} else {
			kv = find_kv(r.q, r.nq, "Signature");
			flip(kv->value, 3);
		}
		snprintf(what, sizeof(what), "%s signature", id);
		refused(what, run(&r), 400, "SignatureDoesNotMatch");
		mutations++;
		req_free(&r);

		/* The body. */
		v3 ? req_from_v3(&r, c) : req_from_v1(&r, c);
		if (r.body_len) {
			flip(r.body, r.body_len - 1);
			snprintf(what, sizeof(what), "%s body", id);
			refused(what, run(&r), 400, "SignatureDoesNotMatch");
			mutations++;
		}
		req_free(&r);

		/* A signed header (host) and, for V3, x-acs-date within the window. */
		v3 ? req_from_v3(&r, c) : req_from_v1(&r, c);
		if (v3) {
			kv = find_kv(r.h, r.nh, "host");
			flip(kv->value, 0);
			snprintf(what, sizeof(what), "%s host", id);
			refused(what, run(&r), 400, "SignatureDoesNotMatch");
			req_free(&r);
			req_from_v3(&r, c);
			kv = find_kv(r.h, r.nh, "x-acs-signature-nonce");
			flip(kv->value, 0);
			snprintf(what, sizeof(what), "%s nonce", id);
			refused(what, run(&r), 400, "SignatureDoesNotMatch");
			mutations += 2;
		} else {
			kv = find_kv(r.q, r.nq, "SignatureNonce");
			flip(kv->value, 0);
			snprintf(what, sizeof(what), "%s SignatureNonce", id);
			refused(what, run(&r), 400, "SignatureDoesNotMatch");
			mutations++;
		}
		req_free(&r);

		/* A query value. */
		v3 ? req_from_v3(&r, c) : req_from_v1(&r, c);
		kv = find_kv(r.q, r.nq, v3 ? "PhoneNumber" : "Version");
		if (kv) {
			flip(kv->value, kv->value_len - 1);
			snprintf(what, sizeof(what), "%s query", id);
			refused(what, run(&r), 400, "SignatureDoesNotMatch");
			mutations++;
		}
		req_free(&r);

		/* The secret. */
		v3 ? req_from_v3(&r, c) : req_from_v1(&r, c);
		secret_override = "VectorExampleSecret0123456789AC";
		snprintf(what, sizeof(what), "%s secret", id);
		refused(what, run(&r), 400, "SignatureDoesNotMatch");
		secret_override = NULL;
		mutations++;
		req_free(&r);
	}
	CHECK(mutations >= 70);
	cJSON_Delete(root);
}

static const cJSON *vector_case(const cJSON *root, const char *id)
{
	const cJSON *c;

	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
		if (strcmp(jstr(c, "id"), id) == 0)
			return c;
	}
	fprintf(stderr, "  no case %s\n", id);
	abort();
}

TEST(unsigned_headers_may_change_or_be_added)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct req r;

	REQUIRE(root);
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	set_kv(r.h, &r.nh, "user-agent", "something else");
	req_header(&r, "X-Forwarded-For", "10.0.0.1");
	set_kv(r.h, &r.nh, "accept", "*/*"); /* not in this request's SignedHeaders */
	accepted("unsigned headers", run(&r));
	req_free(&r);
	cJSON_Delete(root);
}

TEST(time_window_is_fifteen_minutes_either_way)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	const char *ids[] = { "v3-post-custspace", "v1-post-custspace" };

	REQUIRE(root);
	for (size_t i = 0; i < 2; i++) {
		struct req r;
		int64_t t;

		i == 0 ? req_from_v3(&r, vector_case(root, ids[i]))
		       : req_from_v1(&r, vector_case(root, ids[i]));
		t = r.now;
		r.now = t + 900;
		accepted("now = t + 900", run(&r));
		r.now = t - 900;
		accepted("now = t - 900", run(&r));
		r.now = t + 901;
		refused("now = t + 901", run(&r), 400, "InvalidTimeStamp.Expired");
		r.now = t - 901;
		refused("now = t - 901", run(&r), 400, "InvalidTimeStamp.Expired");
		r.now = t;
		set_kv(i == 0 ? r.h : r.q, i == 0 ? &r.nh : &r.nq, i == 0 ? "x-acs-date" : "Timestamp",
		       "2025-01-15 08:00:01");
		refused("bad format", run(&r), 400, "InvalidTimeStamp.Format");
		set_kv(i == 0 ? r.h : r.q, i == 0 ? &r.nh : &r.nq, i == 0 ? "x-acs-date" : "Timestamp",
		       "2025-02-30T08:00:01Z");
		refused("no such day", run(&r), 400, "InvalidTimeStamp.Format");
		req_free(&r);
	}
	cJSON_Delete(root);
}

TEST(time_parser_reads_utc_iso8601_only)
{
	int64_t t = -1;

	CHECK(verify_parse_time("1970-01-01T00:00:00Z", 20, &t) == 0 && t == 0);
	CHECK(verify_parse_time("2025-01-15T08:00:00Z", 20, &t) == 0 && t == 1736928000);
	CHECK(verify_parse_time("2024-02-29T23:59:59Z", 20, &t) == 0 && t == 1709251199);
	CHECK(verify_parse_time("2023-02-29T00:00:00Z", 20, &t) == -EINVAL);
	CHECK(verify_parse_time("2025-01-15T08:00:00", 19, &t) == -EINVAL);
	CHECK(verify_parse_time("2025-01-15T08:00:00+00:00", 25, &t) == -EINVAL);
	CHECK(verify_parse_time("2025-01-15T24:00:00Z", 20, &t) == -EINVAL);
	CHECK(verify_parse_time("2025-13-15T08:00:00Z", 20, &t) == -EINVAL);
	CHECK(verify_parse_time("+025-01-15T08:00:00Z", 20, &t) == -EINVAL);
}

/* Sign the vector's request again with another key (same nonce and date). */
static void resign_v3(struct req *r, const char *key_id, const char *secret)
{
	struct signer_kv q[REQ_MAX], h[REQ_MAX];
	struct signer_v3_output out;
	struct signer_v3_input in;
	size_t nh = 0;

	for (size_t i = 0; i < r->nq; i++)
		q[i] = (struct signer_kv){ r->q[i].name, r->q[i].value };
	for (size_t i = 0; i < r->nh; i++) {
		if (strcasecmp(r->h[i].name, "Authorization") != 0)
			h[nh++] = (struct signer_kv){ r->h[i].name, r->h[i].value };
	}
	memset(&in, 0, sizeof(in));
	in.method = r->method;
	in.path = "/";
	in.query = q;
	in.n_query = r->nq;
	in.headers = h;
	in.n_headers = nh;
	in.body = r->body;
	in.body_len = r->body_len;
	in.access_key_id = key_id;
	in.access_key_secret = secret;
	if (signer_v3(&in, &out) != 0)
		abort();
	set_kv(r->h, &r->nh, "Authorization", out.authorization);
	signer_v3_output_free(&out);
}

TEST(nonce_replay_is_refused_per_access_key)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct verify_nonces *nonces = verify_nonces_new(16);
	struct req r, other, v1;

	REQUIRE(root && nonces);
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	accepted("first", run_full(&r, nonces, false));
	refused("replay", run_full(&r, nonces, false), 400, "SignatureNonceUsed");
	r.now += 600;
	refused("replay ten minutes later", run_full(&r, nonces, false), 400,
		"SignatureNonceUsed");
	r.now -= 600;

	/* Another team's key may use the same nonce. */
	req_from_v3(&other, vector_case(root, "v3-post-phone-only"));
	resign_v3(&other, OTHER_KEY_ID, OTHER_SECRET);
	{
		struct outcome o = run_full(&other, nonces, false);

		if (accepted("other key, same nonce", o))
			CHECK(o.result.client_id == 10);
	}
	refused("other key replay", run_full(&other, nonces, false), 400, "SignatureNonceUsed");

	/* A refused request (bad signature) does not burn its nonce. */
	req_from_v1(&v1, vector_case(root, "v1-post-custspace"));
	flip(find_kv(v1.q, v1.nq, "Signature")->value, 0);
	refused("bad v1", run_full(&v1, nonces, false), 400, "SignatureDoesNotMatch");
	req_free(&v1);
	req_from_v1(&v1, vector_case(root, "v1-post-custspace"));
	accepted("good v1 after a bad one", run_full(&v1, nonces, false));
	refused("v1 replay", run_full(&v1, nonces, false), 400, "SignatureNonceUsed");
	CHECK(verify_nonces_count(nonces, r.now) == 3);

	req_free(&r);
	req_free(&other);
	req_free(&v1);
	verify_nonces_free(nonces);
	cJSON_Delete(root);
}

TEST(nonce_memory_forgets_only_expired_nonces_and_refuses_when_full)
{
	struct verify_nonces *n = verify_nonces_new(2);
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct req r;

	REQUIRE(n && root);
	CHECK(verify_nonces_new(0) == NULL);
	CHECK(verify_nonces_add(n, "K", 1, "n1", 2, 1000) == 0);
	CHECK(verify_nonces_add(n, "K", 1, "n1", 2, 1000 + VERIFY_NONCE_TTL_S - 1) == -EEXIST);
	CHECK(verify_nonces_add(n, "K2", 2, "n1", 2, 1001) == 0);
	/* Key and nonce are not confused across their boundary. */
	CHECK(verify_nonces_add(n, "Kn", 2, "1", 1, 1002) == -ENOSPC);
	CHECK(verify_nonces_count(n, 1002) == 2);
	/* n1 of K expires at 1000 + TTL: then it is forgotten, and there is room. */
	CHECK(verify_nonces_add(n, "K", 1, "n1", 2, 1000 + VERIFY_NONCE_TTL_S) == 0);
	CHECK(verify_nonces_count(n, 1001 + VERIFY_NONCE_TTL_S) == 1);
	CHECK(verify_nonces_add(n, "K", 1, "n2", 2, 1001 + VERIFY_NONCE_TTL_S) == 0);
	CHECK(verify_nonces_add(n, "K", 1, "n3", 2, 1001 + VERIFY_NONCE_TTL_S) == -ENOSPC);

	/* Full of live nonces: a valid request is refused, 503, not let through. */
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	r.now = 1001 + VERIFY_NONCE_TTL_S - 300; /* the nonces above are all live */
	{
		struct verify_nonces *full = verify_nonces_new(1);

		CHECK(verify_nonces_add(full, "x", 1, "y", 1, r.now) == 0);
		r.now = parse_time_or_die(find_kv(r.h, r.nh, "x-acs-date")->value);
		CHECK(verify_nonces_add(full, "x", 1, "z", 1, r.now) == -ENOSPC ||
		      verify_nonces_count(full, r.now) <= 1);
		verify_nonces_free(full);
		full = verify_nonces_new(1);
		CHECK(verify_nonces_add(full, "x", 1, "y", 1, r.now) == 0);
		refused("full", run_full(&r, full, false), 503, "Proxy.NonceCacheFull");
		verify_nonces_free(full);
	}
	req_free(&r);
	verify_nonces_free(n);
	cJSON_Delete(root);
}

TEST(a_wall_clock_stepping_back_never_shortens_a_nonce_memory)
{
	struct verify_nonces *n = verify_nonces_new(4);

	REQUIRE(n);
	CHECK(verify_nonces_add(n, "K", 1, "a", 1, 5000) == 0);
	CHECK(verify_nonces_add(n, "K", 1, "b", 1, 4000) == 0); /* clock went back */
	CHECK(verify_nonces_add(n, "K", 1, "a", 1, 5000 + VERIFY_NONCE_TTL_S - 1) == -EEXIST);
	CHECK(verify_nonces_add(n, "K", 1, "b", 1, 5000 + VERIFY_NONCE_TTL_S - 1) == -EEXIST);
	CHECK(verify_nonces_count(n, 5000 + VERIFY_NONCE_TTL_S) == 0);
	verify_nonces_free(n);
}

TEST(sts_tokens_are_refused_in_both_schemes)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct req r;

	REQUIRE(root);
	req_from_v3(&r, vector_case(root, "v3-post-sts"));
	refused("v3 sts", run(&r), 400, "Proxy.UnsupportedSecurityToken");
	req_free(&r);
	req_from_v1(&r, vector_case(root, "v1-post-sts"));
	refused("v1 sts", run(&r), 400, "Proxy.UnsupportedSecurityToken");
	req_free(&r);
	/* An STS header on an otherwise good V1 request. */
	req_from_v1(&r, vector_case(root, "v1-post-custspace"));
	req_header(&r, "x-acs-security-token", "CAIS...");
	refused("v1 + sts header", run(&r), 400, "Proxy.UnsupportedSecurityToken");
	req_free(&r);
	cJSON_Delete(root);
}

TEST(unknown_access_key_is_not_found_404)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct req r;
	struct kv *kv;

	REQUIRE(root);
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	kv = find_kv(r.h, r.nh, "Authorization");
	memcpy(strstr(kv->value, "LTAI5t"), "LTAI5x", 6);
	refused("v3 unknown key", run(&r), 404, "InvalidAccessKeyId.NotFound");
	req_free(&r);
	req_from_v1(&r, vector_case(root, "v1-post-phone-only"));
	set_kv(r.q, &r.nq, "AccessKeyId", "LTAI5tNobody");
	refused("v1 unknown key", run(&r), 404, "InvalidAccessKeyId.NotFound");
	req_free(&r);
	cJSON_Delete(root);
}

TEST(incomplete_authorization_is_incomplete_signature)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	static const char *const bad[] = {
		"ACS3-HMAC-SHA256 SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;"
		"x-acs-signature-nonce;x-acs-version,Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=host;x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version",
		"ACS3-HMAC-SHA256",
		/* Mandatory headers left out of the list. */
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=host;x-acs-action;"
		"x-acs-content-sha256;x-acs-signature-nonce;x-acs-version,Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=host;x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-version,Signature=00",
		/* Upper case, twice, empty name. */
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=Host;x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=host;host;x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
		"ACS3-HMAC-SHA256 Credential=" VEC_KEY_ID ",SignedHeaders=host;;x-acs-action;"
		"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00",
	};
	struct req r;

	REQUIRE(root);
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	lookups = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char what[32];

		set_kv(r.h, &r.nh, "Authorization", bad[i]);
		snprintf(what, sizeof(what), "authorization %zu", i);
		refused(what, run(&r), 400, "IncompleteSignature");
	}
	CHECK(lookups == 0); /* refused before any secret is fetched */
	req_free(&r);
	cJSON_Delete(root);
}

TEST(other_signature_algorithms_are_refused_clearly)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	struct req r;
	struct kv *kv;

	REQUIRE(root);
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	kv = find_kv(r.h, r.nh, "Authorization");
	memcpy(kv->value, "ACS3-HMAC-SM3   ", 16);
	refused("sm3", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	set_kv(r.h, &r.nh, "Authorization", "ACS3-RSA-SHA256 Credential=x,SignedHeaders=host,Signature=0");
	refused("rsa", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	set_kv(r.h, &r.nh, "Authorization", "acs " VEC_KEY_ID ":c2lnbmF0dXJl");
	refused("roa", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	req_free(&r);

	req_from_v1(&r, vector_case(root, "v1-post-phone-only"));
	set_kv(r.q, &r.nq, "SignatureMethod", "HMAC-SHA256");
	refused("v1 sha256", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	req_free(&r);
	req_from_v1(&r, vector_case(root, "v1-post-phone-only"));
	set_kv(r.q, &r.nq, "SignatureVersion", "2.0");
	refused("v1 version 2.0", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	req_free(&r);
	req_from_v1(&r, vector_case(root, "v1-post-phone-only"));
	req_query(&r, "SignatureType", "BEARERTOKEN");
	refused("bearer", run(&r), 400, "Proxy.UnsupportedSignatureAlgorithm");
	req_free(&r);
	cJSON_Delete(root);
}

TEST(missing_parameters_are_named)
{
	cJSON *root = load_json("vectors/signature-vectors.json");
	static const char *const v1_names[] = {
		"AccessKeyId", "SignatureNonce", "Timestamp", "Action", "Version",
		"SignatureMethod", "SignatureVersion",
	};
	struct req r;

	REQUIRE(root);
	for (size_t i = 0; i < sizeof(v1_names) / sizeof(v1_names[0]); i++) {
		struct outcome o;

		req_from_v1(&r, vector_case(root, "v1-get-query"));
		del_kv(r.q, &r.nq, v1_names[i]);
		o = run(&r);
		if (refused(v1_names[i], o, 400, "MissingParameter") &&
		    !strstr(o.err.message, v1_names[i])) {
			harness_current_failed = 1;
			fprintf(stderr, "  message [%s] does not name %s\n", o.err.message, v1_names[i]);
		}
		req_free(&r);
	}
	/* No Signature at all: the RPC style's own words. */
	req_from_v1(&r, vector_case(root, "v1-get-query"));
	del_kv(r.q, &r.nq, "Signature");
	{
		struct outcome o = run(&r);

		if (refused("no Signature", o, 400, "MissingParameter"))
			CHECK(strstr(o.err.message, "\"Signature\"") != NULL);
	}
	req_free(&r);
	/* Nothing that looks signed. */
	req_init(&r, "POST");
	req_header(&r, "host", "127.0.0.1:8080");
	{
		struct outcome o = run(&r);

		if (refused("anonymous", o, 400, "MissingParameter"))
			CHECK(strstr(o.err.message, "\"AccessKeyId\"") != NULL);
	}
	req_free(&r);
	/* V3 without the nonce header it signed. */
	req_from_v3(&r, vector_case(root, "v3-post-phone-only"));
	del_kv(r.h, &r.nh, "x-acs-signature-nonce");
	refused("v3 no nonce", run(&r), 400, "MissingParameter");
	req_free(&r);
	cJSON_Delete(root);
}

/* ---- requests signed here (Python's signed headers, other actions) ---- */

static void hex(const unsigned char *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/*
 * Sign r with V3 over exactly the headers named in signed_list (sorted,
 * ";"-separated), independently of verify.c's code: the test's own
 * canonicalisation, written from Alibaba's V3 documentation.
 */
static void sign_v3_list(struct req *r, const char *key_id, const char *secret,
			 const char *signed_list)
{
	unsigned char md[32], mac[32];
	unsigned int mac_len = 0;
	char body_sha[65], cr_sha[65], sig[65], sts[100];
	struct buf cr, auth;
	char list[512];

	EVP_Digest(r->body ? r->body : "", r->body_len, md, NULL, EVP_sha256(), NULL);
	hex(md, 32, body_sha);
	set_kv(r->h, &r->nh, "x-acs-content-sha256", body_sha);
	buf_init(&cr, 64 * 1024);
	buf_printf(&cr, "%s\n/\n", r->method);
	for (size_t i = 0; i < r->nq; i++) { /* the tests add query pairs sorted */
		if (i)
			buf_addc(&cr, '&');
		signer_percent_encode(&cr, r->q[i].name, strlen(r->q[i].name));
		buf_addc(&cr, '=');
		signer_percent_encode(&cr, r->q[i].value, r->q[i].value_len);
	}
	buf_addc(&cr, '\n');
	snprintf(list, sizeof(list), "%s", signed_list);
	for (char *name = list, *end; name && *name; name = end) {
		struct kv *kv;

		end = strchr(name, ';');
		if (end)
			*end++ = '\0';
		kv = find_kv(r->h, r->nh, name);
		buf_printf(&cr, "%s:%s\n", name, kv ? kv->value : "");
	}
	buf_printf(&cr, "\n%s\n%s", signed_list, body_sha);
	EVP_Digest(cr.data, cr.len, md, NULL, EVP_sha256(), NULL);
	hex(md, 32, cr_sha);
	snprintf(sts, sizeof(sts), "ACS3-HMAC-SHA256\n%s", cr_sha);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)sts, strlen(sts),
	     mac, &mac_len);
	hex(mac, 32, sig);
	buf_init(&auth, 4096);
	buf_printf(&auth, "ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s", key_id,
		   signed_list, sig);
	set_kv(r->h, &r->nh, "Authorization", buf_str(&auth));
	buf_free(&auth);
	buf_free(&cr);
}

static void python_style(struct req *r, const char *action, int64_t now)
{
	req_init(r, "POST");
	req_header(r, "host", "127.0.0.1:8080");
	req_header(r, "x-acs-version", "2020-06-06");
	req_header(r, "x-acs-action", action);
	req_header(r, "user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.2 Core/0.3.3 TeaDSL/1");
	req_header(r, "x-acs-date", "2025-01-15T08:00:00Z");
	req_header(r, "x-acs-signature-nonce", "8f0e6b1c-8d9f-4f4e-9d2b-4a3b2c1d0e9f");
	req_header(r, "accept", "application/json");
	req_header(r, "content-type", "application/x-www-form-urlencoded");
	req_body(r, "CustSpaceId=cams-py&PhoneNumber=8613912345678", 46);
	r->now = now;
}

#define PY_SIGNED "accept;content-type;host;user-agent;x-acs-action;x-acs-content-sha256;" \
	"x-acs-date;x-acs-signature-nonce;x-acs-version"

TEST(signed_headers_list_is_followed_whatever_it_names)
{
	struct req r;
	struct outcome o;

	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	o = run(&r);
	if (accepted("python-style", o)) {
		CHECK_STR(o.result.phone_number, "8613912345678");
		CHECK_STR(o.result.cust_space_id, "cams-py");
	}
	/* user-agent is signed now: changing it breaks the signature. */
	set_kv(r.h, &r.nh, "user-agent", "curl/8");
	refused("signed user-agent changed", run(&r), 400, "SignatureDoesNotMatch");
	set_kv(r.h, &r.nh, "user-agent",
	       "  AlibabaCloud (Linux; x86_64) Python/3.11.2 Core/0.3.3 TeaDSL/1\t");
	accepted("signed value trimmed", run(&r));
	/* A signed header sent twice is ambiguous. */
	req_header(&r, "Accept", "text/html");
	refused("accept twice", run(&r), 400, "InvalidParameter");
	req_free(&r);
}

TEST(content_sha256_header_is_checked_against_the_body)
{
	struct req r;
	struct outcome o;
	struct signer_kv h[12];
	struct signer_v3_output out;
	struct signer_v3_input in;
	size_t n = 0;

	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	/* Another body with its own hash in the (signed) header. */
	req_body(&r, "CustSpaceId=cams-py&PhoneNumber=8613900000000", 46);
	{
		unsigned char md[32];
		char sha[65];

		EVP_Digest(r.body, r.body_len, md, NULL, EVP_sha256(), NULL);
		hex(md, 32, sha);
		set_kv(r.h, &r.nh, "x-acs-content-sha256", sha);
	}
	refused("new body, new hash", run(&r), 400, "SignatureDoesNotMatch");
	req_free(&r);

	/* Signed correctly, but the header is not the body's hash. */
	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	for (size_t i = 0; i < r.nh; i++)
		h[n++] = (struct signer_kv){ r.h[i].name, r.h[i].value };
	h[n++] = (struct signer_kv){ "x-acs-content-sha256",
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" };
	memset(&in, 0, sizeof(in));
	in.method = "POST";
	in.path = "/";
	in.headers = h;
	in.n_headers = n;
	in.body = r.body;
	in.body_len = r.body_len;
	in.access_key_id = VEC_KEY_ID;
	in.access_key_secret = VEC_SECRET;
	REQUIRE(signer_v3(&in, &out) == 0);
	set_kv(r.h, &r.nh, "x-acs-content-sha256", h[n - 1].value);
	set_kv(r.h, &r.nh, "Authorization", out.authorization);
	signer_v3_output_free(&out);
	o = run(&r);
	if (refused("header not the body's hash", o, 400, "SignatureDoesNotMatch"))
		CHECK(strstr(o.err.message, "x-acs-content-sha256") != NULL);
	req_free(&r);
}

TEST(other_actions_are_not_found_after_authentication)
{
	struct req r;
	struct outcome o;

	python_style(&r, "SendChatappMessage", 1736928000);
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	o = run(&r);
	if (refused("other action", o, 404, "InvalidAction.NotFound"))
		CHECK(strstr(o.err.message, "GetPhoneEncryptionPublicKey") != NULL);
	o = run_full(&r, NULL, true);
	if (accepted("any_action", o))
		CHECK_STR(o.result.action, "SendChatappMessage");
	/* Not authenticated: the signature is checked first. */
	set_kv(r.h, &r.nh, "user-agent", "changed");
	refused("other action, bad signature", run(&r), 400, "SignatureDoesNotMatch");
	req_free(&r);

	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	set_kv(r.h, &r.nh, "x-acs-version", "2017-05-25");
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	refused("other version", run(&r), 404, "InvalidAction.NotFound");
	req_free(&r);
}

TEST(phone_number_is_required_and_parameters_are_given_once)
{
	struct req r;

	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	req_body(&r, "CustSpaceId=cams-py", 19);
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	refused("no phone", run(&r), 400, "MissingParameter");
	req_free(&r);

	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	req_query(&r, "PhoneNumber", "8613900000000");
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET, PY_SIGNED);
	refused("phone in query and body", run(&r), 400, "InvalidParameter");
	req_free(&r);

	/* Query only, a %00 inside a value kept with its length. */
	python_style(&r, "GetPhoneEncryptionPublicKey", 1736928000);
	req_body(&r, "", 0);
	del_kv(r.h, &r.nh, "content-type");
	kv_add(r.q, &r.nq, "PhoneNumber", "86139\0" "1234", 10);
	sign_v3_list(&r, VEC_KEY_ID, VEC_SECRET,
		     "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;"
		     "x-acs-signature-nonce;x-acs-version");
	{
		struct outcome o = run(&r);

		if (accepted("nul in phone", o))
			CHECK(o.result.phone_number_len == 10 &&
			      memcmp(o.result.phone_number, "86139\0" "1234", 10) == 0);
	}
	req_free(&r);
}

/* ---- requests captured from the real Node SDK ---- */

static char *read_file(const char *rel, size_t *ret_len)
{
	char path[1024];
	char *data;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", harness_data_dir(), rel);
	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "  cannot open %s\n", path);
		return NULL;
	}
	data = xmalloc(256 * 1024);
	*ret_len = fread(data, 1, 256 * 1024 - 1, f);
	fclose(f);
	data[*ret_len] = '\0';
	return data;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode s[len] ("+" is a space, as libmicrohttpd decodes). */
static size_t url_decode(const char *s, size_t len, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[n++] = ' ';
		} else if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
			   hexval(s[i + 2]) >= 0) {
			out[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			out[n++] = s[i];
		}
	}
	out[n] = '\0';
	return n;
}

/*
 * Parse a raw HTTP/1.1 request as a server sees it: request line, query
 * decoded, headers, body de-chunked. *ret_chunked says whether it was.
 * 0 or -1.
 */
static int parse_http(const char *raw, size_t len, struct req *r, bool *ret_chunked,
		      char **ret_raw_body, size_t *ret_raw_body_len)
{
	const char *p = raw, *end = raw + len, *eol, *sp1, *sp2, *qm;
	char tmp[4096];
	bool chunked = false;
	struct buf body;

	eol = strstr(p, "\r\n");
	if (!eol)
		return -1;
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp2 || (size_t)(sp1 - p) >= sizeof(r->method))
		return -1;
	req_init(r, "");
	memcpy(r->method, p, (size_t)(sp1 - p));
	r->method[sp1 - p] = '\0';
	qm = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
	if (qm) {
		const char *q = qm + 1;

		while (q < sp2) {
			const char *amp = memchr(q, '&', (size_t)(sp2 - q));
			const char *item_end = amp ? amp : sp2;
			const char *eq = memchr(q, '=', (size_t)(item_end - q));
			char name[256];
			size_t vlen;

			if (!eq)
				return -1;
			url_decode(q, (size_t)(eq - q), name);
			vlen = url_decode(eq + 1, (size_t)(item_end - eq - 1), tmp);
			kv_add(r->q, &r->nq, name, tmp, vlen);
			q = item_end + 1;
		}
	}
	p = eol + 2;
	for (;;) {
		const char *colon;
		char name[256];
		size_t vlen;

		eol = strstr(p, "\r\n");
		if (!eol)
			return -1;
		if (eol == p)
			break;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon || (size_t)(colon - p) >= sizeof(name))
			return -1;
		memcpy(name, p, (size_t)(colon - p));
		name[colon - p] = '\0';
		colon++;
		while (*colon == ' ')
			colon++;
		vlen = (size_t)(eol - colon);
		kv_add(r->h, &r->nh, name, colon, vlen);
		if (strcasecmp(name, "Transfer-Encoding") == 0 && strncmp(colon, "chunked", 7) == 0)
			chunked = true;
		p = eol + 2;
	}
	p += 2;
	*ret_raw_body_len = (size_t)(end - p);
	*ret_raw_body = xmemdup(p, *ret_raw_body_len + 1);
	buf_init(&body, 256 * 1024);
	if (chunked) {
		while (p < end) {
			char *after;
			unsigned long size = strtoul(p, &after, 16);

			if (after == p || strncmp(after, "\r\n", 2) != 0)
				return -1;
			p = after + 2;
			if (size == 0)
				break;
			if ((size_t)(end - p) < size + 2)
				return -1;
			buf_add(&body, p, size);
			p += size + 2;
		}
	} else {
		buf_add(&body, p, (size_t)(end - p));
	}
	req_body(r, body.data ? body.data : "", body.len);
	buf_free(&body);
	*ret_chunked = chunked;
	return 0;
}

TEST(requests_captured_from_the_node_sdk_verify)
{
	cJSON *root = load_json("sdk-requests/requests.json");
	const cJSON *c;
	int cases = 0;

	REQUIRE(root);
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
		const char *file = jstr(c, "file");
		const cJSON *api = cJSON_GetObjectItemCaseSensitive(c, "api_parameters");
		struct verify_nonces *nonces = verify_nonces_new(8);
		char rel[256], *raw, *raw_body = NULL;
		size_t len = 0, raw_body_len = 0;
		bool chunked = false;
		struct outcome o;
		struct req r;

		snprintf(rel, sizeof(rel), "sdk-requests/%s", file);
		raw = read_file(rel, &len);
		REQUIRE(raw);
		if (parse_http(raw, len, &r, &chunked, &raw_body, &raw_body_len) != 0) {
			harness_current_failed = 1;
			fprintf(stderr, "  %s: cannot parse\n", file);
			free(raw);
			continue;
		}
		r.now = (int64_t)cJSON_GetObjectItemCaseSensitive(c, "now_wall_s")->valuedouble;
		CHECK(chunked); /* what the Node SDK does */
		o = run_full(&r, nonces, false);
		if (accepted(file, o)) {
			CHECK(o.result.client_id == 9);
			CHECK_STR(o.result.phone_number, jstr(api, "PhoneNumber"));
			CHECK_STR(o.result.cust_space_id, jstr(api, "CustSpaceId"));
			CHECK(o.result.scheme ==
			      (strcmp(jstr(c, "signature"), V3_KIND) == 0 ? VERIFY_V3 : VERIFY_V1));
		}
		refused(file, run_full(&r, nonces, false), 400, "SignatureNonceUsed");
		/* The chunk framing is not the body: verifying it fails. */
		req_body(&r, raw_body, raw_body_len);
		o = run(&r);
		CHECK(o.rc == -EACCES);
		req_free(&r);
		free(raw);
		free(raw_body);
		verify_nonces_free(nonces);
		cases++;
	}
	CHECK(cases == 2);
	cJSON_Delete(root);
}

TEST(bad_arguments_are_einval)
{
	struct verify_input in;
	struct verify_result r;
	struct verify_error e;

	memset(&in, 0, sizeof(in));
	CHECK(verify_request(&in, &r, &e) == -EINVAL);
	in.method = "POST";
	in.path = "/";
	CHECK(verify_request(&in, &r, &e) == -EINVAL); /* no find_secret */
	in.find_secret = find_secret;
	in.body_len = 3;
	CHECK(verify_request(&in, &r, &e) == -EINVAL);
}

int main(void)
{
	RUN(every_sdk_vector_verifies_with_its_secret_and_time);
	RUN(one_byte_changes_to_any_signed_part_fail_with_signature_does_not_match);
	RUN(unsigned_headers_may_change_or_be_added);
	RUN(time_window_is_fifteen_minutes_either_way);
	RUN(time_parser_reads_utc_iso8601_only);
	RUN(nonce_replay_is_refused_per_access_key);
	RUN(nonce_memory_forgets_only_expired_nonces_and_refuses_when_full);
	RUN(a_wall_clock_stepping_back_never_shortens_a_nonce_memory);
	RUN(sts_tokens_are_refused_in_both_schemes);
	RUN(unknown_access_key_is_not_found_404);
	RUN(incomplete_authorization_is_incomplete_signature);
	RUN(other_signature_algorithms_are_refused_clearly);
	RUN(missing_parameters_are_named);
	RUN(signed_headers_list_is_followed_whatever_it_names);
	RUN(content_sha256_header_is_checked_against_the_body);
	RUN(other_actions_are_not_found_after_authentication);
	RUN(phone_number_is_required_and_parameters_are_given_once);
	RUN(requests_captured_from_the_node_sdk_verify);
	RUN(bad_arguments_are_einval);
	return harness_done();
}
