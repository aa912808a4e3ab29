/*
 * simsig.c -- the simulator's independent signature verifier (simsig.h).
 *
 * Written from Alibaba Cloud's signature documentation, not from the
 * daemon's signer:
 *
 * V3 (ACS3-HMAC-SHA256, "V3 request structure and signature"):
 *   CanonicalRequest = Method "\n" CanonicalURI "\n" CanonicalQueryString "\n"
 *                      CanonicalHeaders "\n" SignedHeaders "\n" HashedPayload
 *   CanonicalURI     = the path, "/" for RPC-style APIs
 *   CanonicalQuery   = every decoded query parameter, name and value
 *                      percent-encoded (RFC 3986), sorted by encoded name
 *                      (then value), "name=value" joined by "&"
 *   CanonicalHeaders = "name:trimmed value\n" for every header listed in the
 *                      request's own SignedHeaders, sorted by name
 *   SignedHeaders    = those names, lower-case, sorted, joined by ";"
 *   HashedPayload    = hex(SHA-256(body)), also sent as x-acs-content-sha256
 *   StringToSign     = "ACS3-HMAC-SHA256\n" hex(SHA-256(CanonicalRequest))
 *   Signature        = hex(HMAC-SHA256(secret, StringToSign))
 *
 * RPC V1 (HMAC-SHA1, SignatureVersion 1.0):
 *   Canonicalized    = every parameter but Signature, percent-encoded name
 *                      "=" percent-encoded value, sorted, joined by "&"
 *   StringToSign     = Method "&" pe("/") "&" pe(Canonicalized)
 *   Signature        = base64(HMAC-SHA1(secret "&", StringToSign))
 *
 * percent-encoding keeps A-Z a-z 0-9 - _ . ~ and writes every other byte as
 * %XX (upper-case hex): space is %20, "*" is %2A, "~" stays.
 *
 * Owns nothing beyond the buffers it is handed. Never logs. Threads: any.
 */
#include "simsig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- parameters ---- */

void params_free(struct params *p)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		free(p->kv[i].key);
		free(p->kv[i].value);
	}
	p->n = 0;
}

static struct sim_param *params_slot(struct params *p)
{
	if (p->n == SIMSIG_PARAMS_MAX) {
		p->overflow = true;
		return NULL;
	}
	return &p->kv[p->n++];
}

void params_parse(struct params *p, const char *s, size_t len)
{
	const char *end = s + len;

	while (s < end) {
		const char *amp = memchr(s, '&', (size_t)(end - s));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(s, '=', (size_t)(stop - s));

		if (stop > s) {
			struct sim_param *kv = params_slot(p);

			if (!kv)
				return;
			if (eq) {
				kv->key = sim_url_decode(s, (size_t)(eq - s), &kv->key_len);
				kv->value = sim_url_decode(eq + 1, (size_t)(stop - eq - 1),
							   &kv->value_len);
			} else {
				kv->key = sim_url_decode(s, (size_t)(stop - s), &kv->key_len);
				kv->value = sim_xstrdup("");
				kv->value_len = 0;
			}
		}
		s = stop + (amp ? 1 : 0);
	}
}

void params_add(struct params *p, const char *key, size_t key_len, const char *value,
		size_t value_len)
{
	struct sim_param *kv = params_slot(p);

	if (!kv)
		return;
	kv->key = sim_xmemdup(key, key_len);
	kv->key_len = key_len;
	kv->value = sim_xmemdup(value, value_len);
	kv->value_len = value_len;
}

void params_append(struct params *dst, const struct params *src)
{
	size_t i;

	for (i = 0; i < src->n; i++)
		params_add(dst, src->kv[i].key, src->kv[i].key_len, src->kv[i].value,
			   src->kv[i].value_len);
	if (src->overflow)
		dst->overflow = true;
}

const char *params_get_n(const struct params *p, const char *key, size_t *ret_len)
{
	size_t i, len = strlen(key);

	for (i = 0; i < p->n; i++) {
		if (p->kv[i].key_len == len && memcmp(p->kv[i].key, key, len) == 0) {
			if (ret_len)
				*ret_len = p->kv[i].value_len;
			return p->kv[i].value;
		}
	}
	return NULL;
}

const char *params_get(const struct params *p, const char *key)
{
	return params_get_n(p, key, NULL);
}

/* ---- small pieces ---- */

bool simsig_reject(struct verdict *v, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;

	v->http_status = status;
	v->code = code;
	va_start(ap, fmt);
	vsnprintf(v->message, sizeof(v->message), fmt, ap);
	va_end(ap);
	return false;
}

int simsig_parse_iso8601(const char *s, time_t *ret)
{
	static const struct {
		size_t at, len;
		uint64_t min, max;
	} fields[] = {
		{ 0, 4, 1970, 9999 }, { 5, 2, 1, 12 }, { 8, 2, 1, 31 },
		{ 11, 2, 0, 23 },     { 14, 2, 0, 59 }, { 17, 2, 0, 60 },
	};
	uint64_t v[6];
	size_t len = strlen(s), i, end = 19;
	struct tm tm;
	time_t t;

	if (len < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':')
		return -EINVAL;
	for (i = 0; i < 6; i++) {
		if (sim_parse_u64(s + fields[i].at, fields[i].len, fields[i].min, fields[i].max,
				  &v[i]) < 0)
			return -EINVAL;
	}
	if (s[end] == '.') {
		end++;
		while (end < len && s[end] >= '0' && s[end] <= '9')
			end++;
	}
	if (end + 1 != len || s[end] != 'Z')
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = (int)v[0] - 1900;
	tm.tm_mon = (int)v[1] - 1;
	tm.tm_mday = (int)v[2];
	tm.tm_hour = (int)v[3];
	tm.tm_min = (int)v[4];
	tm.tm_sec = (int)v[5];
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ret = t;
	return 0;
}

static bool check_timestamp(const char *value, time_t now_s, struct verdict *v)
{
	time_t t;

	if (!value || simsig_parse_iso8601(value, &t) < 0)
		return simsig_reject(v, 400, "InvalidTimeStamp.Expired",
				     "Specified time stamp or date value is not well formatted.");
	if (t > now_s + SIMSIG_REPLAY_WINDOW_S || t < now_s - SIMSIG_REPLAY_WINDOW_S)
		return simsig_reject(v, 400, "InvalidTimeStamp.Expired",
				     "Specified time stamp or date value is expired.");
	return true;
}

void simsig_percent_encode(struct sbuf *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			sbuf_addc(out, (char)c);
		} else {
			char esc[3] = { '%', hex[c >> 4], hex[c & 15] };

			sbuf_add(out, esc, sizeof(esc));
		}
	}
}

/* Same length and bytes, without an early exit. */
static bool same_text(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(p, n, md, &md_len, EVP_sha256(), NULL) || md_len != 32) {
		out[0] = '\0'; /* compares unequal to every real digest */
		return;
	}
	sim_hex(md, 32, out);
}

/* An encoded name=value pair for sorting. */
struct encoded_pair {
	char *name;
	char *value;
};

static int pair_cmp(const void *a, const void *b)
{
	const struct encoded_pair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

/*
 * "pe(name)=pe(value)" of every parameter (but those named skip, if not
 * NULL), sorted by encoded name then value, joined by "&", into out.
 */
static void canonical_params(struct sbuf *out, const struct params *p, const char *skip)
{
	struct encoded_pair pairs[SIMSIG_PARAMS_MAX];
	size_t i, n = 0;

	for (i = 0; i < p->n; i++) {
		struct sbuf name, value;

		if (skip && strcmp(p->kv[i].key, skip) == 0 && p->kv[i].key_len == strlen(skip))
			continue;
		sbuf_init(&name, SIMSIG_CANONICAL_MAX);
		sbuf_init(&value, SIMSIG_CANONICAL_MAX);
		simsig_percent_encode(&name, p->kv[i].key, p->kv[i].key_len);
		simsig_percent_encode(&value, p->kv[i].value, p->kv[i].value_len);
		if (name.error || value.error)
			out->error = true;
		pairs[n].name = sbuf_steal(&name, NULL);
		pairs[n].value = sbuf_steal(&value, NULL);
		n++;
	}
	qsort(pairs, n, sizeof(pairs[0]), pair_cmp);
	for (i = 0; i < n; i++) {
		if (i)
			sbuf_addc(out, '&');
		sbuf_adds(out, pairs[i].name);
		sbuf_addc(out, '=');
		sbuf_adds(out, pairs[i].value);
		free(pairs[i].name);
		free(pairs[i].value);
	}
}

/* ---- V3 ---- */

void v3_trace_init(struct v3_trace *t)
{
	memset(t, 0, sizeof(*t));
	sbuf_init(&t->canonical_request, SIMSIG_CANONICAL_MAX);
	sbuf_init(&t->string_to_sign, SIMSIG_CANONICAL_MAX);
}

void v3_trace_free(struct v3_trace *t)
{
	sbuf_free(&t->canonical_request);
	sbuf_free(&t->string_to_sign);
	sim_wipe(t->signature, sizeof(t->signature));
}

/* Copy the value after "Name=" of part into dst; false if too long or empty. */
static bool copy_field(const char *p, size_t len, char *dst, size_t dst_size)
{
	if (len == 0 || len >= dst_size)
		return false;
	memcpy(dst, p, len);
	dst[len] = '\0';
	return true;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* "Credential=..,SignedHeaders=..,Signature=.." after the prefix. */
static bool parse_authorization(const char *authz, char *cred, size_t cred_size,
				char *signed_headers, size_t sh_size, char *sig, size_t sig_size)
{
	static const struct {
		const char *name;
		size_t len;
	} fields[3] = { { "Credential=", 11 }, { "SignedHeaders=", 14 }, { "Signature=", 10 } };
	const char *p = authz + strlen(SIMSIG_V3_PREFIX);
	char *dst[3] = { cred, signed_headers, sig };
	size_t dst_size[3] = { cred_size, sh_size, sig_size };
	int found = 0, f;

	cred[0] = signed_headers[0] = sig[0] = '\0';
	while (*p) {
		const char *comma = strchr(p, ',');
		const char *stop = comma ? comma : p + strlen(p);
		const char *b = p, *e = stop;

		while (b < e && is_space(*b))
			b++;
		while (e > b && is_space(e[-1]))
			e--;
		for (f = 0; f < 3; f++) {
			if ((size_t)(e - b) >= fields[f].len &&
			    memcmp(b, fields[f].name, fields[f].len) == 0) {
				if (!copy_field(b + fields[f].len, (size_t)(e - b) - fields[f].len,
						dst[f], dst_size[f]))
					return false;
				found |= 1 << f;
			}
		}
		p = comma ? comma + 1 : stop;
	}
	return found == 7;
}

struct signed_header {
	char name[SIMSIG_HEADER_NAME_MAX];
	const char *value;
};

static int signed_header_cmp(const void *a, const void *b)
{
	return strcmp(((const struct signed_header *)a)->name,
		      ((const struct signed_header *)b)->name);
}

static bool has_name(const struct signed_header *h, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (strcmp(h[i].name, name) == 0)
			return true;
	}
	return false;
}

bool simsig_v3_verify(const struct v3_request *rq, const char *authz, const char *key_id,
		      const char *secret, time_t now_s, struct verdict *v, struct v3_trace *trace)
{
	static const char *const required[] = {
		"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
		"x-acs-signature-nonce", "x-acs-version",
	};
	struct v3_trace local;
	struct v3_trace *t = trace ? trace : &local;
	struct signed_header h[SIMSIG_SIGNED_HEADERS_MAX];
	struct sbuf query;
	char sig[129], digest[65];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	const char *p, *sha;
	size_t n = 0, i, j;
	bool ok = false;

	if (!trace)
		v3_trace_init(&local);
	if (!parse_authorization(authz, t->credential, sizeof(t->credential), t->signed_headers,
				 sizeof(t->signed_headers), sig, sizeof(sig))) {
		simsig_reject(v, 400, "IncompleteSignature",
			      "The request signature does not conform to Aliyun standards.");
		goto out;
	}
	if (strcmp(t->credential, key_id) != 0) {
		simsig_reject(v, 404, "InvalidAccessKeyId.NotFound",
			      "Specified access key is not found.");
		goto out;
	}

	/* The request's own list: every name lower-case, present, once. */
	for (p = t->signed_headers; *p;) {
		const char *semi = strchr(p, ';');
		size_t len = semi ? (size_t)(semi - p) : strlen(p);

		if (n == SIMSIG_SIGNED_HEADERS_MAX || len == 0 || len >= sizeof(h[n].name)) {
			simsig_reject(v, 400, "IncompleteSignature",
				      "SignedHeaders is malformed or too long.");
			goto out;
		}
		memcpy(h[n].name, p, len);
		h[n].name[len] = '\0';
		for (j = 0; j < len; j++) {
			if (h[n].name[j] >= 'A' && h[n].name[j] <= 'Z') {
				simsig_reject(v, 400, "IncompleteSignature",
					      "SignedHeaders must be lower-case.");
				goto out;
			}
		}
		if (has_name(h, n, h[n].name)) {
			simsig_reject(v, 400, "IncompleteSignature",
				      "SignedHeaders lists %s twice.", h[n].name);
			goto out;
		}
		h[n].value = rq->header(rq->header_ctx, h[n].name);
		if (!h[n].value) {
			simsig_reject(v, 400, "SignatureDoesNotMatch",
				      "Signed header %s is missing from the request.", h[n].name);
			goto out;
		}
		n++;
		p += len;
		if (*p == ';')
			p++; /* a trailing ';' ends the list */
	}
	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if (!has_name(h, n, required[i])) {
			simsig_reject(v, 400, "IncompleteSignature",
				      "SignedHeaders must include %s.", required[i]);
			goto out;
		}
	}
	if (!check_timestamp(rq->header(rq->header_ctx, "x-acs-date"), now_s, v))
		goto out;

	/* The canonical request, from the request as received. */
	sha256_hex(rq->body ? rq->body : "", rq->body_len, t->hashed_payload);
	qsort(h, n, sizeof(h[0]), signed_header_cmp);
	sbuf_init(&query, SIMSIG_CANONICAL_MAX);
	canonical_params(&query, rq->query, NULL);
	sbuf_adds(&t->canonical_request, rq->method);
	sbuf_adds(&t->canonical_request, "\n/\n");
	sbuf_add(&t->canonical_request, query.data ? query.data : "", query.len);
	if (query.error)
		t->canonical_request.error = true;
	sbuf_free(&query);
	sbuf_addc(&t->canonical_request, '\n');
	for (i = 0; i < n; i++) {
		const char *b = h[i].value, *e = b + strlen(b);

		while (b < e && is_space(*b))
			b++;
		while (e > b && is_space(e[-1]))
			e--;
		sbuf_adds(&t->canonical_request, h[i].name);
		sbuf_addc(&t->canonical_request, ':');
		sbuf_add(&t->canonical_request, b, (size_t)(e - b));
		sbuf_addc(&t->canonical_request, '\n');
	}
	sbuf_addc(&t->canonical_request, '\n');
	for (i = 0; i < n; i++) {
		if (i)
			sbuf_addc(&t->canonical_request, ';');
		sbuf_adds(&t->canonical_request, h[i].name);
	}
	sbuf_addc(&t->canonical_request, '\n');
	sbuf_adds(&t->canonical_request, t->hashed_payload);
	if (t->canonical_request.error) {
		simsig_reject(v, 400, "SignatureDoesNotMatch", "The request is too large to verify.");
		goto out;
	}

	sha256_hex(t->canonical_request.data, t->canonical_request.len, digest);
	sbuf_adds(&t->string_to_sign, "ACS3-HMAC-SHA256\n");
	sbuf_adds(&t->string_to_sign, digest);
	if (!HMAC(EVP_sha256(), secret, (int)strlen(secret),
		  (const unsigned char *)sbuf_str(&t->string_to_sign), t->string_to_sign.len, mac,
		  &mac_len) ||
	    mac_len != 32) {
		simsig_reject(v, 400, "SignatureDoesNotMatch", "HMAC-SHA256 failed.");
		goto out;
	}
	sim_hex(mac, 32, t->signature);
	sim_wipe(mac, sizeof(mac));
	if (!same_text(t->signature, sig)) {
		simsig_reject(v, 400, "SignatureDoesNotMatch",
			      "Specified signature is not matched with our calculation.");
		goto out;
	}
	sha = rq->header(rq->header_ctx, "x-acs-content-sha256");
	if (!sha || strlen(sha) != 64 || strcasecmp(sha, t->hashed_payload) != 0) {
		simsig_reject(v, 400, "SignatureDoesNotMatch",
			      "x-acs-content-sha256 does not match the request body.");
		goto out;
	}
	if (rq->header(rq->header_ctx, "x-acs-security-token") &&
	    !has_name(h, n, "x-acs-security-token")) {
		simsig_reject(v, 400, "IncompleteSignature",
			      "SignedHeaders must include x-acs-security-token.");
		goto out;
	}
	ok = true;
out:
	if (!trace)
		v3_trace_free(&local);
	return ok;
}

/* ---- V1 ---- */

void v1_trace_init(struct v1_trace *t)
{
	memset(t, 0, sizeof(*t));
	sbuf_init(&t->canonicalized_query_string, SIMSIG_CANONICAL_MAX);
	sbuf_init(&t->string_to_sign, SIMSIG_CANONICAL_MAX);
}

void v1_trace_free(struct v1_trace *t)
{
	sbuf_free(&t->canonicalized_query_string);
	sbuf_free(&t->string_to_sign);
	sim_wipe(t->signature, sizeof(t->signature));
}

bool simsig_v1_verify(const char *method, const struct params *all, const char *key_id,
		      const char *secret, time_t now_s, struct verdict *v, struct v1_trace *trace)
{
	struct v1_trace local;
	struct v1_trace *t = trace ? trace : &local;
	const char *sig = params_get(all, "Signature");
	const char *ak = params_get(all, "AccessKeyId");
	const char *smethod = params_get(all, "SignatureMethod");
	const char *sversion = params_get(all, "SignatureVersion");
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	struct sbuf key;
	bool ok = false;

	if (!trace)
		v1_trace_init(&local);
	if (!ak || strcmp(ak, key_id) != 0) {
		simsig_reject(v, 404, "InvalidAccessKeyId.NotFound",
			      "Specified access key is not found.");
		goto out;
	}
	if (!smethod || strcmp(smethod, "HMAC-SHA1") != 0) {
		simsig_reject(v, 400, "InvalidSignatureMethod",
			      "Specified signature method is not supported.");
		goto out;
	}
	if (!sversion || strcmp(sversion, "1.0") != 0) {
		simsig_reject(v, 400, "InvalidSignatureVersion",
			      "Specified signature version is not supported.");
		goto out;
	}
	if (!check_timestamp(params_get(all, "Timestamp"), now_s, v))
		goto out;

	canonical_params(&t->canonicalized_query_string, all, "Signature");
	sbuf_adds(&t->string_to_sign, method);
	sbuf_adds(&t->string_to_sign, "&%2F&");
	simsig_percent_encode(&t->string_to_sign, sbuf_str(&t->canonicalized_query_string),
			      t->canonicalized_query_string.len);
	if (t->canonicalized_query_string.error || t->string_to_sign.error) {
		simsig_reject(v, 400, "SignatureDoesNotMatch", "The request is too large to verify.");
		goto out;
	}
	sbuf_init(&key, 4096);
	sbuf_adds(&key, secret);
	sbuf_addc(&key, '&');
	if (key.error ||
	    !HMAC(EVP_sha1(), key.data, (int)key.len,
		  (const unsigned char *)sbuf_str(&t->string_to_sign), t->string_to_sign.len, mac,
		  &mac_len) ||
	    mac_len != 20) {
		sim_wipe(key.data, key.len);
		sbuf_free(&key);
		simsig_reject(v, 400, "SignatureDoesNotMatch", "HMAC-SHA1 failed.");
		goto out;
	}
	sim_wipe(key.data, key.len);
	sbuf_free(&key);
	EVP_EncodeBlock((unsigned char *)t->signature, mac, 20); /* 28 chars + NUL */
	sim_wipe(mac, sizeof(mac));
	if (!sig || !same_text(t->signature, sig)) {
		simsig_reject(v, 400, "SignatureDoesNotMatch",
			      "Specified signature is not matched with our calculation.");
		goto out;
	}
	ok = true;
out:
	if (!trace)
		v1_trace_free(&local);
	return ok;
}
