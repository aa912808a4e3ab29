/*
 * fuzz_signer.c -- fuzz target for the signer's canonicalisation
 * (signer.c): ACS3-HMAC-SHA256 (V3), RPC HMAC-SHA1 (V1), and the percent
 * and form encodings, with a fixed AccessKey.
 *
 * Input: FLAGS METHOD \0 PATH \0 BODY \0 KEY \0 VALUE \0 KEY \0 VALUE ...
 * FLAGS is one byte: its low 5 bits say how many leading pairs are query
 * parameters (the rest are headers), bit 5 passes no body at all. A last
 * KEY without a VALUE has a NULL value. V1 signs every pair as a parameter.
 * The two encoders get the whole raw input, NUL bytes included.
 *
 * Invariants checked: returns are 0, -EINVAL or -E2BIG; a V3 signature is
 * 64 lower-case hex and the Authorization header is built from the key id,
 * the signed header names and that signature; signed header names are
 * lower-case, sorted, unique and only host, content-type and x-acs-*; the
 * canonical request starts with the method and path and ends with the
 * payload hash; the order of the pairs never changes a signature (V3 and
 * V1); the V1 string to sign is METHOD&%2F&encode(canonical query); the
 * encoders write only unreserved bytes or %XX and decode back to the input.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "signer.h"

#define FUZZ_KEY_ID "LTAI5tFuzzAccessKeyId"
#define FUZZ_KEY_SECRET "FuzzAccessKeySecretNotARealOne0"

#define FLAG_QUERY_MASK 0x1f
#define FLAG_NO_BODY 0x20

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static bool is_form_safe(unsigned char c)
{
	return c == '!' || c == '\'' || c == '(' || c == ')' || c == '*';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return s[n] == '\0';
}

/*
 * out is an encoding of in[len]: only kept bytes or %XX (upper-case hex),
 * decoding to exactly in; form also keeps ! ' ( ) * as themselves.
 */
static void check_encoded(const char *out, size_t out_len, const char *in, size_t len,
			  bool form)
{
	size_t j = 0;

	for (size_t i = 0; i < out_len; i++) {
		unsigned char c = (unsigned char)out[i];
		int hi, lo;

		FUZZ_ASSERT(j < len);
		if (c != '%') {
			FUZZ_ASSERT(is_unreserved(c) || (form && is_form_safe(c)));
			FUZZ_ASSERT(in[j] == (char)c);
			j++;
			continue;
		}
		FUZZ_ASSERT(i + 2 < out_len);
		hi = hex_value(out[i + 1]);
		lo = hex_value(out[i + 2]);
		FUZZ_ASSERT(hi >= 0 && lo >= 0);
		FUZZ_ASSERT((unsigned char)in[j] == (unsigned char)(hi * 16 + lo));
		/* A byte that could go through as itself is never escaped. */
		FUZZ_ASSERT(!is_unreserved((unsigned char)in[j]));
		FUZZ_ASSERT(!(form && is_form_safe((unsigned char)in[j])));
		j++;
		i += 2;
	}
	FUZZ_ASSERT(j == len);
}

static void fuzz_encoders(const char *in, size_t len)
{
	struct buf out;

	buf_init(&out, 3 * len + 1);
	signer_percent_encode(&out, in, len);
	FUZZ_ASSERT(buf_error(&out) == 0);
	FUZZ_ASSERT(strlen(buf_str(&out)) == out.len);
	check_encoded(buf_str(&out), out.len, in, len, false);

	buf_reset(&out);
	signer_form_encode(&out, in, len);
	FUZZ_ASSERT(buf_error(&out) == 0);
	check_encoded(buf_str(&out), out.len, in, len, true);
	buf_free(&out);
}

/* A copy of kv[n] in reverse order (free() it). */
static struct signer_kv *reversed(const struct signer_kv *kv, size_t n)
{
	struct signer_kv *r = xcalloc(n ? n : 1, sizeof(*r));

	for (size_t i = 0; i < n; i++)
		r[i] = kv[n - 1 - i];
	return r;
}

/* Signed header names: "a;b;c", each allowed, strictly ascending. */
static void check_signed_headers(const char *names)
{
	const char *p = names, *prev = NULL;
	size_t prev_len = 0;

	while (*p) {
		size_t n = strcspn(p, ";");

		FUZZ_ASSERT(n > 0);
		for (size_t i = 0; i < n; i++)
			FUZZ_ASSERT(!(p[i] >= 'A' && p[i] <= 'Z'));
		FUZZ_ASSERT((n == 4 && strncmp(p, "host", 4) == 0) ||
			    (n == 12 && strncmp(p, "content-type", 12) == 0) ||
			    (n >= 6 && strncmp(p, "x-acs-", 6) == 0));
		if (prev) {
			size_t m = n < prev_len ? n : prev_len;
			int c = memcmp(prev, p, m);

			FUZZ_ASSERT(c < 0 || (c == 0 && prev_len < n));
		}
		prev = p;
		prev_len = n;
		p += n;
		if (*p == ';') {
			p++;
			FUZZ_ASSERT(*p != '\0');
		}
	}
}

static void fuzz_v3(const struct signer_v3_input *in)
{
	struct signer_v3_output out, again;
	struct signer_v3_input rin = *in;
	struct signer_kv *rq, *rh;
	struct buf auth;
	size_t ml = strlen(in->method), pl = strlen(in->path), cl;
	int r, r2;

	memset(&out, 0, sizeof(out));
	r = signer_v3(in, &out);
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -E2BIG);

	rq = reversed(in->query, in->n_query);
	rh = reversed(in->headers, in->n_headers);
	rin.query = rq;
	rin.headers = rh;
	memset(&again, 0, sizeof(again));
	r2 = signer_v3(&rin, &again);
	FUZZ_ASSERT(r2 == r);
	free(rq);
	free(rh);
	if (r != 0)
		return;

	FUZZ_ASSERT(is_lower_hex(out.signature, 64));
	FUZZ_ASSERT(is_lower_hex(out.hashed_payload, 64));
	FUZZ_ASSERT(strcmp(out.signature, again.signature) == 0);
	FUZZ_ASSERT(strcmp(out.canonical_request, again.canonical_request) == 0);
	FUZZ_ASSERT(strcmp(out.signed_headers, again.signed_headers) == 0);

	FUZZ_ASSERT(strncmp(out.canonical_request, in->method, ml) == 0);
	FUZZ_ASSERT(out.canonical_request[ml] == '\n');
	FUZZ_ASSERT(strncmp(out.canonical_request + ml + 1, in->path, pl) == 0);
	FUZZ_ASSERT(out.canonical_request[ml + 1 + pl] == '\n');
	cl = strlen(out.canonical_request);
	FUZZ_ASSERT(cl > 65 && out.canonical_request[cl - 65] == '\n');
	FUZZ_ASSERT(strcmp(out.canonical_request + cl - 64, out.hashed_payload) == 0);

	FUZZ_ASSERT(strncmp(out.string_to_sign, "ACS3-HMAC-SHA256\n", 17) == 0);
	FUZZ_ASSERT(is_lower_hex(out.string_to_sign + 17, 64));
	check_signed_headers(out.signed_headers);

	buf_init(&auth, 64 * 1024);
	buf_printf(&auth, "ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s",
		   in->access_key_id, out.signed_headers, out.signature);
	FUZZ_ASSERT(buf_error(&auth) == 0);
	FUZZ_ASSERT(strcmp(out.authorization, buf_str(&auth)) == 0);
	buf_free(&auth);

	signer_v3_output_free(&out);
	signer_v3_output_free(&again);
	FUZZ_ASSERT(out.canonical_request == NULL && out.authorization == NULL);
}

static void fuzz_v1(const char *method, const struct signer_kv *params, size_t n)
{
	struct signer_v1_output out, again;
	struct signer_kv *rp = reversed(params, n);
	struct buf sts;
	int r, r2;

	memset(&out, 0, sizeof(out));
	memset(&again, 0, sizeof(again));
	r = signer_v1(method, params, n, FUZZ_KEY_SECRET, &out);
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -E2BIG);
	r2 = signer_v1(method, rp, n, FUZZ_KEY_SECRET, &again);
	FUZZ_ASSERT(r2 == r);
	free(rp);
	if (r != 0)
		return;

	/* Base64 of a 20-byte HMAC-SHA1: 28 characters, one '=' of padding. */
	FUZZ_ASSERT(strlen(out.signature) == 28 && out.signature[27] == '=');
	FUZZ_ASSERT(strcmp(out.signature, again.signature) == 0);
	FUZZ_ASSERT(strcmp(out.canonicalized_query_string,
			   again.canonicalized_query_string) == 0);
	for (const char *p = out.canonicalized_query_string; *p; p++)
		FUZZ_ASSERT(is_unreserved((unsigned char)*p) || *p == '%' || *p == '=' ||
			    *p == '&');

	buf_init(&sts, 1024 * 1024);
	buf_adds(&sts, method);
	buf_adds(&sts, "&%2F&");
	signer_percent_encode(&sts, out.canonicalized_query_string,
			      strlen(out.canonicalized_query_string));
	FUZZ_ASSERT(buf_error(&sts) == 0);
	FUZZ_ASSERT(strcmp(out.string_to_sign, buf_str(&sts)) == 0);
	buf_free(&sts);

	signer_v1_output_free(&out);
	signer_v1_output_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct signer_kv pairs[FUZZ_MAX_PARTS / 2];
	struct signer_v3_input in;
	struct fuzz_parts fp;
	size_t n_pairs = 0, n_query;
	unsigned flags;

	fuzz_encoders((const char *)data, size);
	if (size < 1)
		return 0;
	flags = data[0];
	fuzz_split(&fp, data + 1, size - 1);
	if (fp.n < 3)
		goto out;
	for (size_t i = 3; i < fp.n; i += 2) {
		pairs[n_pairs].key = fp.part[i];
		pairs[n_pairs].value = i + 1 < fp.n ? fp.part[i + 1] : NULL;
		n_pairs++;
	}
	n_query = flags & FLAG_QUERY_MASK;
	if (n_query > n_pairs)
		n_query = n_pairs;

	memset(&in, 0, sizeof(in));
	in.method = fp.part[0];
	in.path = fp.part[1];
	if (!(flags & FLAG_NO_BODY)) {
		in.body = fp.part[2];
		in.body_len = fp.len[2];
	}
	in.query = pairs;
	in.n_query = n_query;
	in.headers = pairs + n_query;
	in.n_headers = n_pairs - n_query;
	in.access_key_id = FUZZ_KEY_ID;
	in.access_key_secret = FUZZ_KEY_SECRET;
	fuzz_v3(&in);
	fuzz_v1(fp.part[0], pairs, n_pairs);
out:
	fuzz_parts_free(&fp);
	return 0;
}
