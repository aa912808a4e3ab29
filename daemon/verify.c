/*
 * verify.c -- verifying requests signed by the official SDKs (see verify.h).
 *
 * What it does: the server side of the two signatures signer.c produces.
 *   V3  ACS3-HMAC-SHA256: the canonical request is rebuilt from the
 *       request's own SignedHeaders list (whatever it names: Node signs
 *       host, content-type and x-acs-*, Python also user-agent and accept),
 *       each value trimmed of ASCII white space, in the list's order; the
 *       canonical query from the decoded query parameters, sorted by name,
 *       names and values RFC 3986-encoded again (signer_percent_encode);
 *       the payload hash is the SHA-256 we compute of the raw body, and
 *       x-acs-content-sha256 must equal it: the header is never trusted.
 *   V1  RPC HMAC-SHA1: every parameter of the query and of a form body
 *       (application/x-www-form-urlencoded) except Signature, sorted by
 *       name, both sides percent-encoded, METHOD&%2F&encode(that).
 * Then the timestamp window (VERIFY_MAX_SKEW_S either way), the nonce
 * (struct verify_nonces), and the action and its parameters.
 *
 * Check order (the first failure answers): scheme; STS token; algorithm;
 * shape of Authorization / mandatory parameters; time; AccessKey lookup;
 * body hash; signature; nonce; action; PhoneNumber / CustSpaceId. Nothing
 * that depends on the secret is reported before the signature compare,
 * which is CRYPTO_memcmp over fixed-length strings. A nonce is recorded
 * only once the signature is good, so unsigned junk cannot fill the memory.
 *
 * What it owns: nothing between calls but the nonce memory. The secret is
 * copied by the find_secret callback into a stack buffer, used for one
 * HMAC and wiped (with the V1 key copy and the MAC) before returning.
 *
 * Threads: verify_request() from any thread, no shared state but the
 * nonce memory, whose mutex is held for one lookup-and-insert.
 *
 * Does not: log, read clocks, talk to anything, validate STS tokens (it
 * cannot: Alibaba's STS is not ours), accept SM3 or RSA signatures.
 */
#include "verify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "buf.h"
#include "cams.h"
#include "mem.h"
#include "signer.h"
#include "hex.h"
#include "span.h"

/* Parameters (query and form body together) and headers we look at. */
#define VERIFY_MAX_PAIRS LIMIT_QUERY_ARGS_MAX
#define VERIFY_MAX_HEADERS 128
/* A body this module will decode: a CAMS request body is under 200 bytes. */
#define VERIFY_BODY_MAX_BYTES (64 * 1024)
/* Canonical strings: every header and parameter, encoded (3x) at worst. */
#define VERIFY_TEXT_MAX (3 * (VERIFY_BODY_MAX_BYTES + LIMIT_HEADERS_MAX_BYTES + \
			      LIMIT_URI_MAX_BYTES) + 1024)
/* A nonce we remember a digest of: the SDKs send 32 hex or a UUID. */
#define VERIFY_NONCE_MAX 256

#define V3_ALGORITHM "ACS3-HMAC-SHA256"
#define FORM_TYPE "application/x-www-form-urlencoded"

static const char *const v3_mandatory[] = {
	"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
	"x-acs-signature-nonce", "x-acs-version",
};

/* ---- errors ---- */

static int fail(struct verify_error *e, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct verify_error *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->http_status = status;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -EACCES;
}

/* Up to 64 bytes of s for a message: printable ASCII, '?' for the rest. */
static const char *printable(const char *s, size_t len, char out[65])
{
	size_t n = len < 64 ? len : 64;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
	}
	out[n] = '\0';
	return out;
}

static int fail_missing(struct verify_error *e, const char *name)
{
	return fail(e, 400, "MissingParameter",
		    "The input parameter \"%s\" that is mandatory for processing this request "
		    "is not supplied.", name);
}

/* ---- small helpers ---- */

static bool pair_name_is(const struct verify_pair *p, const char *name)
{
	size_t n = strlen(name);

	return p->name && p->name_len == n && memcmp(p->name, name, n) == 0;
}

static bool header_name_is(const struct verify_pair *p, const char *lower_name)
{
	size_t n = strlen(lower_name);

	return p->name && p->name_len == n && strncasecmp(p->name, lower_name, n) == 0 &&
	       memchr(p->name, '\0', n) == NULL;
}

static struct span pair_value(const struct verify_pair *p)
{
	return p->value ? span_make(p->value, p->value_len) : span_make("", 0);
}

/* The headers named lower_name: how many, and the first one's value. */
static size_t find_header(const struct verify_input *in, const char *lower_name,
			  struct span *ret_value)
{
	size_t count = 0;

	for (size_t i = 0; i < in->n_headers; i++) {
		if (!header_name_is(&in->headers[i], lower_name))
			continue;
		if (count++ == 0)
			*ret_value = pair_value(&in->headers[i]);
	}
	return count;
}

static bool span_eq_span(struct span a, struct span b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* ---- time ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's algorithm: days since 1970-01-01 (proleptic Gregorian). */
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool digits_at(const char *s, size_t at, size_t n, unsigned *ret)
{
	unsigned v = 0;

	for (size_t i = at; i < at + n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*ret = v;
	return true;
}

int verify_parse_time(const char *s, size_t len, int64_t *ret_wall_s)
{
	static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	unsigned y, mo, d, h, mi, se;
	bool leap;

	if (!s || len != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != 'Z')
		return -EINVAL;
	if (!digits_at(s, 0, 4, &y) || !digits_at(s, 5, 2, &mo) || !digits_at(s, 8, 2, &d) ||
	    !digits_at(s, 11, 2, &h) || !digits_at(s, 14, 2, &mi) || !digits_at(s, 17, 2, &se))
		return -EINVAL;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    se > 59)
		return -EINVAL;
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo == 2 && d == 29 && !leap)
		return -EINVAL;
	*ret_wall_s = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	return 0;
}

static int check_time(const struct verify_input *in, struct span t, const char *name,
		      struct verify_error *e)
{
	int64_t when, skew;
	char shown[65];

	if (verify_parse_time(t.p, t.len, &when))
		return fail(e, 400, "InvalidTimeStamp.Format",
			    "The specified %s \"%s\" is not in the format YYYY-MM-DDThh:mm:ssZ (UTC).",
			    name, printable(t.p, t.len, shown));
	skew = in->now_wall_s - when;
	if (skew > VERIFY_MAX_SKEW_S || skew < -VERIFY_MAX_SKEW_S)
		return fail(e, 400, "InvalidTimeStamp.Expired",
			    "The specified %s \"%s\" is %lld seconds from the server's time; at "
			    "most %d are allowed.", name, printable(t.p, t.len, shown),
			    (long long)(skew < 0 ? -skew : skew), VERIFY_MAX_SKEW_S);
	return 0;
}

/* ---- parameters: the query and a form body ---- */

struct params {
	struct verify_pair pair[VERIFY_MAX_PAIRS];
	size_t n;
	char *decoded; /* form body names and values, owned */
};

/* Form-decode s into out ("+" is a space; a broken %XX stays as it is). */
static size_t form_decode(struct span s, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < s.len; i++) {
		int hi, lo;

		if (s.p[i] == '+') {
			out[n++] = ' ';
		} else if (s.p[i] == '%' && i + 2 < s.len &&
			   (hi = hex_digit_value(s.p[i + 1])) >= 0 && (lo = hex_digit_value(s.p[i + 2])) >= 0) {
			out[n++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[n++] = s.p[i];
		}
	}
	return n;
}

static bool is_form_body(const struct verify_input *in)
{
	struct span ct = { NULL, 0 }, type, rest;

	if (find_header(in, "content-type", &ct) != 1)
		return false;
	if (!span_split(ct, ';', &type, &rest))
		type = ct;
	return span_eq_nocase(span_trim_ws(type), FORM_TYPE);
}

/*
 * The query parameters, then (with_body and a form body) the body's,
 * decoded. A name given twice anywhere is refused: which value was signed
 * and which one is served must be the same.
 */
static int collect_params(const struct verify_input *in, bool with_body, struct params *ret,
			  struct verify_error *e)
{
	char shown[65];

	ret->n = 0;
	ret->decoded = NULL;
	if (in->n_query > VERIFY_MAX_PAIRS)
		return fail(e, 400, "Proxy.RequestTooLarge", "More than %d query parameters.",
			    VERIFY_MAX_PAIRS);
	for (size_t i = 0; i < in->n_query; i++) {
		if (!in->query[i].name || in->query[i].name_len == 0)
			continue;
		ret->pair[ret->n++] = in->query[i];
	}
	if (with_body && in->body_len && is_form_body(in)) {
		struct span rest = span_make(in->body, in->body_len);
		char *out;

		if (in->body_len > VERIFY_BODY_MAX_BYTES)
			return fail(e, 400, "Proxy.RequestTooLarge", "The body is over %d bytes.",
				    VERIFY_BODY_MAX_BYTES);
		out = ret->decoded = xmalloc(in->body_len + 1);
		while (rest.len) {
			struct span item, name, value;
			bool has_value;

			if (!span_split(rest, '&', &item, &rest)) {
				item = rest;
				rest.len = 0;
			}
			if (item.len == 0)
				continue;
			has_value = span_split(item, '=', &name, &value);
			if (!has_value) {
				name = item;
				value = span_make("", 0);
			}
			if (ret->n == VERIFY_MAX_PAIRS)
				return fail(e, 400, "Proxy.RequestTooLarge",
					    "More than %d parameters.", VERIFY_MAX_PAIRS);
			ret->pair[ret->n].name = out;
			ret->pair[ret->n].name_len = form_decode(name, out);
			out += ret->pair[ret->n].name_len;
			ret->pair[ret->n].value = out;
			ret->pair[ret->n].value_len = form_decode(value, out);
			out += ret->pair[ret->n].value_len;
			if (ret->pair[ret->n].name_len)
				ret->n++;
		}
	}
	for (size_t i = 0; i < ret->n; i++) {
		for (size_t j = i + 1; j < ret->n; j++) {
			if (ret->pair[i].name_len == ret->pair[j].name_len &&
			    memcmp(ret->pair[i].name, ret->pair[j].name, ret->pair[i].name_len) == 0)
				return fail(e, 400, "InvalidParameter",
					    "The parameter \"%s\" is given more than once.",
					    printable(ret->pair[i].name, ret->pair[i].name_len, shown));
		}
	}
	return 0;
}

static void params_free(struct params *p)
{
	free(p->decoded);
	p->decoded = NULL;
}

static const struct verify_pair *param_find(const struct params *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++) {
		if (pair_name_is(&p->pair[i], name))
			return &p->pair[i];
	}
	return NULL;
}

static int cmp_pair_name(const void *a, const void *b)
{
	const struct verify_pair *const *x = a, *const *y = b;
	size_t n = (*x)->name_len < (*y)->name_len ? (*x)->name_len : (*y)->name_len;
	int c = memcmp((*x)->name, (*y)->name, n);

	if (c)
		return c;
	return (*x)->name_len < (*y)->name_len ? -1 : (*x)->name_len > (*y)->name_len;
}

/* name=value pairs sorted by name, both percent-encoded, joined by "&". */
static void canonical_pairs(struct buf *out, const struct verify_pair *pairs, size_t n,
			    const char *skip_name)
{
	const struct verify_pair *sorted[VERIFY_MAX_PAIRS];
	size_t m = 0;

	for (size_t i = 0; i < n && m < VERIFY_MAX_PAIRS; i++) {
		if (!pairs[i].name || pairs[i].name_len == 0)
			continue;
		if (skip_name && pair_name_is(&pairs[i], skip_name))
			continue;
		sorted[m++] = &pairs[i];
	}
	qsort(sorted, m, sizeof(sorted[0]), cmp_pair_name);
	for (size_t i = 0; i < m; i++) {
		struct span v = pair_value(sorted[i]);

		if (i)
			buf_addc(out, '&');
		signer_percent_encode(out, sorted[i]->name, sorted[i]->name_len);
		buf_addc(out, '=');
		signer_percent_encode(out, v.p, v.len);
	}
}

/* ---- the action and its parameters (after authentication) ---- */

static int copy_name(struct span s, char *out, size_t cap)
{
	if (s.len >= cap || memchr(s.p, '\0', s.len))
		return -E2BIG;
	memcpy(out, s.p, s.len);
	out[s.len] = '\0';
	return 0;
}

static int take_action(const struct verify_input *in, struct span action, struct span version,
		       const struct params *p, struct verify_result *r, struct verify_error *e)
{
	const struct verify_pair *phone, *space;
	char shown[65], shown2[65];

	if (copy_name(action, r->action, sizeof(r->action)) ||
	    copy_name(version, r->version, sizeof(r->version)) ||
	    (!in->any_action &&
	     (!span_eq(action, CAMS_ACTION) || !span_eq(version, CAMS_API_VERSION))))
		return fail(e, 404, "InvalidAction.NotFound",
			    "Specified api \"%s\" (version \"%s\") is not found: camskeyd serves only "
			    CAMS_ACTION " " CAMS_API_VERSION ".", printable(action.p, action.len, shown),
			    printable(version.p, version.len, shown2));
	phone = param_find(p, "PhoneNumber");
	space = param_find(p, "CustSpaceId");
	if (!in->any_action && (!phone || phone->value_len == 0))
		return fail_missing(e, "PhoneNumber");
	if (phone) {
		struct span v = pair_value(phone);

		if (v.len > VERIFY_PARAM_MAX)
			return fail(e, 400, "InvalidParameter.PhoneNumber",
				    "PhoneNumber is longer than %d bytes.", VERIFY_PARAM_MAX);
		memcpy(r->phone_number, v.p, v.len);
		r->phone_number[v.len] = '\0';
		r->phone_number_len = v.len;
	}
	if (space) {
		struct span v = pair_value(space);

		if (v.len > VERIFY_PARAM_MAX)
			return fail(e, 400, "InvalidParameter.CustSpaceId",
				    "CustSpaceId is longer than %d bytes.", VERIFY_PARAM_MAX);
		memcpy(r->cust_space_id, v.p, v.len);
		r->cust_space_id[v.len] = '\0';
		r->cust_space_id_len = v.len;
		r->has_cust_space_id = true;
	}
	return 0;
}

/* The secret of key_id into secret (wiped by the caller either way). */
static int lookup(const struct verify_input *in, struct span key_id, char *secret, size_t cap,
		  struct verify_result *r, struct verify_error *e)
{
	char shown[65];
	int rc;

	if (key_id.len == 0 || key_id.len > LIMIT_ACCESS_KEY_ID_MAX ||
	    memchr(key_id.p, '\0', key_id.len))
		rc = -ENOENT;
	else
		rc = in->find_secret(in->find_secret_cls, key_id.p, key_id.len, secret, cap,
				     &r->client_id);
	if (rc == 0 && (secret[0] == '\0' || strnlen(secret, cap) == cap))
		rc = -ENOENT; /* an empty or unterminated secret signs nothing */
	if (rc)
		return fail(e, 404, "InvalidAccessKeyId.NotFound",
			    "Specified access key \"%s\" is not found.",
			    printable(key_id.p, key_id.len, shown));
	memcpy(r->access_key_id, key_id.p, key_id.len);
	r->access_key_id[key_id.len] = '\0';
	return 0;
}

static int check_nonce(const struct verify_input *in, struct span key_id, struct span nonce,
		       struct verify_error *e)
{
	int rc;

	if (!in->nonces)
		return 0;
	rc = verify_nonces_add(in->nonces, key_id.p, key_id.len, nonce.p, nonce.len,
			       in->now_wall_s);
	if (rc == -EEXIST)
		return fail(e, 400, "SignatureNonceUsed",
			    "Specified signature nonce was used already.");
	if (rc)
		return fail(e, 503, "Proxy.NonceCacheFull",
			    "camskeyd remembers too many recent nonces to accept another one "
			    "safely; retry later.");
	return 0;
}

/* ---- V3 ---- */

struct v3_auth {
	struct span algorithm, credential, signed_headers, signature;
};

/* "ALG Credential=..,SignedHeaders=..,Signature=..". -1 incomplete. */
static int parse_authorization(struct span value, struct v3_auth *a)
{
	struct span rest;
	bool seen_cred = false, seen_sh = false, seen_sig = false;

	memset(a, 0, sizeof(*a));
	value = span_trim_ws(value);
	if (!span_split(value, ' ', &a->algorithm, &rest)) {
		a->algorithm = value;
		rest = span_make("", 0);
	}
	while (rest.len) {
		struct span item, key, v;

		if (!span_split(rest, ',', &item, &rest)) {
			item = rest;
			rest.len = 0;
		}
		item = span_trim_ws(item);
		if (!span_split(item, '=', &key, &v))
			continue;
		key = span_trim_ws(key);
		v = span_trim_ws(v);
		if (span_eq(key, "Credential")) {
			if (seen_cred)
				return -1;
			seen_cred = true;
			a->credential = v;
		} else if (span_eq(key, "SignedHeaders")) {
			if (seen_sh)
				return -1;
			seen_sh = true;
			a->signed_headers = v;
		} else if (span_eq(key, "Signature")) {
			if (seen_sig)
				return -1;
			seen_sig = true;
			a->signature = v;
		}
	}
	if (!a->credential.len || !a->signed_headers.len || !a->signature.len)
		return -1;
	return 0;
}

static bool is_lower_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

#define V3_MAX_SIGNED 64

/* Split and check SignedHeaders: lower-case tokens, unique, mandatory ones. */
static int split_signed_headers(struct span list, struct span *names, size_t *ret_n,
				struct verify_error *e)
{
	size_t n = 0;
	char shown[65];

	while (list.len) {
		struct span name;

		if (!span_split(list, ';', &name, &list)) {
			name = list;
			list.len = 0;
		}
		if (name.len == 0)
			return fail(e, 400, "IncompleteSignature",
				    "SignedHeaders has an empty header name.");
		for (size_t i = 0; i < name.len; i++) {
			if (!is_lower_tchar((unsigned char)name.p[i]))
				return fail(e, 400, "IncompleteSignature",
					    "SignedHeaders must be lower-case header names: \"%s\".",
					    printable(name.p, name.len, shown));
		}
		for (size_t i = 0; i < n; i++) {
			if (span_eq_span(names[i], name))
				return fail(e, 400, "IncompleteSignature",
					    "SignedHeaders names \"%s\" twice.",
					    printable(name.p, name.len, shown));
		}
		if (n == V3_MAX_SIGNED)
			return fail(e, 400, "Proxy.RequestTooLarge",
				    "SignedHeaders names more than %d headers.", V3_MAX_SIGNED);
		names[n++] = name;
	}
	for (size_t m = 0; m < sizeof(v3_mandatory) / sizeof(v3_mandatory[0]); m++) {
		bool found = false;

		for (size_t i = 0; i < n && !found; i++)
			found = span_eq(names[i], v3_mandatory[m]);
		if (!found)
			return fail(e, 400, "IncompleteSignature",
				    "SignedHeaders must include %s.", v3_mandatory[m]);
	}
	*ret_n = n;
	return 0;
}

/* One mandatory, signed header: present once and not empty. */
static int v3_header(const struct verify_input *in, const char *name, const char *param_name,
		     struct span *ret, struct verify_error *e)
{
	struct span v = { NULL, 0 };
	size_t count = find_header(in, name, &v);

	if (count > 1)
		return fail(e, 400, "InvalidParameter", "The header %s is given more than once.",
			    name);
	v = span_trim_ws(v);
	if (count == 0 || v.len == 0)
		return fail_missing(e, param_name);
	*ret = v;
	return 0;
}

static int verify_v3(const struct verify_input *in, struct span authorization,
		     struct verify_result *r, struct verify_error *e)
{
	struct span names[V3_MAX_SIGNED], date = { NULL, 0 }, nonce = { NULL, 0 };
	struct span action = { NULL, 0 }, version = { NULL, 0 }, content_sha = { NULL, 0 };
	char secret[LIMIT_ACCESS_KEY_SECRET_MAX + 1];
	char body_sha[LIMIT_SHA256_HEX], cr_sha[LIMIT_SHA256_HEX], want[LIMIT_SHA256_HEX];
	char string_to_sign[sizeof(V3_ALGORITHM) + LIMIT_SHA256_HEX];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	struct params params = { .n = 0, .decoded = NULL };
	struct v3_auth a;
	struct buf canonical;
	size_t n_names = 0;
	char shown[65];
	int rc;

	memset(secret, 0, sizeof(secret));
	rc = parse_authorization(authorization, &a);
	if (!span_eq(a.algorithm, V3_ALGORITHM))
		return fail(e, 400, "Proxy.UnsupportedSignatureAlgorithm",
			    "camskeyd verifies " V3_ALGORITHM " and RPC HMAC-SHA1 signatures only, "
			    "not \"%s\".", printable(a.algorithm.p, a.algorithm.len, shown));
	if (rc)
		return fail(e, 400, "IncompleteSignature",
			    "The Authorization header must carry Credential=, SignedHeaders= and "
			    "Signature=.");
	rc = split_signed_headers(a.signed_headers, names, &n_names, e);
	if (rc)
		return rc;
	if ((rc = v3_header(in, "x-acs-signature-nonce", "x-acs-signature-nonce", &nonce, e)) ||
	    (rc = v3_header(in, "x-acs-action", "x-acs-action", &action, e)) ||
	    (rc = v3_header(in, "x-acs-version", "x-acs-version", &version, e)) ||
	    (rc = v3_header(in, "x-acs-date", "x-acs-date", &date, e)) ||
	    (rc = v3_header(in, "x-acs-content-sha256", "x-acs-content-sha256", &content_sha, e)))
		return rc;
	if (nonce.len > VERIFY_NONCE_MAX)
		return fail(e, 400, "InvalidParameter", "x-acs-signature-nonce is over %d bytes.",
			    VERIFY_NONCE_MAX);
	rc = check_time(in, date, "x-acs-date", e);
	if (rc)
		return rc;
	rc = collect_params(in, true, &params, e);
	if (rc)
		goto out;
	rc = lookup(in, a.credential, secret, sizeof(secret), r, e);
	if (rc)
		goto out;

	/* The payload hash is ours; the header is only compared with it. */
	if (hex_sha256(in->body, in->body_len, body_sha)) {
		rc = -EINVAL;
		goto out;
	}
	if (content_sha.len != 64 || CRYPTO_memcmp(content_sha.p, body_sha, 64) != 0) {
		rc = fail(e, 400, "SignatureDoesNotMatch",
			  "x-acs-content-sha256 is not the SHA-256 of the request body.");
		goto out;
	}

	buf_init(&canonical, VERIFY_TEXT_MAX);
	buf_adds(&canonical, in->method);
	buf_addc(&canonical, '\n');
	buf_adds(&canonical, in->path);
	buf_addc(&canonical, '\n');
	canonical_pairs(&canonical, in->query, in->n_query, NULL);
	buf_addc(&canonical, '\n');
	for (size_t i = 0; i < n_names; i++) {
		struct span v = { "", 0 };
		char lower[128];

		if (span_copy(names[i], lower, sizeof(lower)) ||
		    find_header(in, lower, &v) > 1) {
			buf_free_wipe(&canonical);
			rc = fail(e, 400, "InvalidParameter",
				  "The signed header %s is given more than once.",
				  printable(names[i].p, names[i].len, shown));
			goto out;
		}
		/* A signed header that is absent canonicalises as empty. */
		v = span_trim_ws(v);
		buf_add(&canonical, names[i].p, names[i].len);
		buf_addc(&canonical, ':');
		buf_add(&canonical, v.p, v.len);
		buf_addc(&canonical, '\n');
	}
	buf_addc(&canonical, '\n');
	buf_add(&canonical, a.signed_headers.p, a.signed_headers.len);
	buf_addc(&canonical, '\n');
	buf_adds(&canonical, body_sha);
	if (buf_error(&canonical)) {
		buf_free_wipe(&canonical);
		rc = fail(e, 400, "Proxy.RequestTooLarge", "The canonical request is too large.");
		goto out;
	}
	rc = hex_sha256(canonical.data, canonical.len, cr_sha);
	buf_free_wipe(&canonical);
	if (rc) {
		rc = -EINVAL;
		goto out;
	}
	snprintf(string_to_sign, sizeof(string_to_sign), V3_ALGORITHM "\n%s", cr_sha);
	if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)string_to_sign,
		  strlen(string_to_sign), mac, &mac_len) || mac_len != 32) {
		rc = -EINVAL;
		goto out;
	}
	hex_encode_lower(mac, mac_len, want);
	if (a.signature.len != 64 || CRYPTO_memcmp(a.signature.p, want, 64) != 0) {
		rc = fail(e, 400, "SignatureDoesNotMatch",
			  "Specified signature does not match our calculation. Our string to sign "
			  "is: ACS3-HMAC-SHA256\\n%s", cr_sha);
		goto out;
	}
	r->scheme = VERIFY_V3;
	rc = check_nonce(in, a.credential, nonce, e);
	if (rc)
		goto out;
	rc = take_action(in, action, version, &params, r, e);
out:
	mem_wipe(secret, sizeof(secret));
	mem_wipe(mac, sizeof(mac));
	mem_wipe(want, sizeof(want));
	params_free(&params);
	return rc;
}

/* ---- V1 ---- */

static int v1_param(const struct params *p, const char *name, struct span *ret,
		    struct verify_error *e)
{
	const struct verify_pair *pp = param_find(p, name);

	if (!pp || pp->value_len == 0)
		return fail_missing(e, name);
	*ret = pair_value(pp);
	return 0;
}

static int verify_v1(const struct verify_input *in, struct verify_result *r,
		     struct verify_error *e)
{
	struct span method = { NULL, 0 }, version_sig = { NULL, 0 }, key_id = { NULL, 0 };
	struct span signature = { NULL, 0 }, nonce = { NULL, 0 }, timestamp = { NULL, 0 };
	struct span action = { NULL, 0 }, version = { NULL, 0 };
	char secret[LIMIT_ACCESS_KEY_SECRET_MAX + 2];
	unsigned char mac[EVP_MAX_MD_SIZE];
	char want[64];
	unsigned int mac_len = 0;
	struct params params = { .n = 0, .decoded = NULL };
	struct buf canonical, sts;
	size_t secret_len;
	char shown[65];
	int rc;

	memset(secret, 0, sizeof(secret));
	memset(want, 0, sizeof(want));
	rc = collect_params(in, true, &params, e);
	if (rc)
		goto out;
	if (param_find(&params, "SecurityToken")) {
		rc = fail(e, 400, "Proxy.UnsupportedSecurityToken",
			  "camskeyd cannot validate Alibaba Cloud STS tokens: sign with the "
			  "AccessKey camskeyd issued, without SecurityToken.");
		goto out;
	}
	if (param_find(&params, "SignatureType")) {
		rc = fail(e, 400, "Proxy.UnsupportedSignatureAlgorithm",
			  "camskeyd does not accept SignatureType (bearer tokens).");
		goto out;
	}
	if ((rc = v1_param(&params, "SignatureMethod", &method, e)))
		goto out;
	if (!span_eq(method, "HMAC-SHA1")) {
		rc = fail(e, 400, "Proxy.UnsupportedSignatureAlgorithm",
			  "camskeyd verifies SignatureMethod HMAC-SHA1 only, not \"%s\".",
			  printable(method.p, method.len, shown));
		goto out;
	}
	if ((rc = v1_param(&params, "SignatureVersion", &version_sig, e)))
		goto out;
	if (!span_eq(version_sig, "1.0")) {
		rc = fail(e, 400, "Proxy.UnsupportedSignatureAlgorithm",
			  "camskeyd verifies SignatureVersion 1.0 only, not \"%s\".",
			  printable(version_sig.p, version_sig.len, shown));
		goto out;
	}
	if ((rc = v1_param(&params, "AccessKeyId", &key_id, e)) ||
	    (rc = v1_param(&params, "Signature", &signature, e)) ||
	    (rc = v1_param(&params, "SignatureNonce", &nonce, e)) ||
	    (rc = v1_param(&params, "Timestamp", &timestamp, e)) ||
	    (rc = v1_param(&params, "Action", &action, e)) ||
	    (rc = v1_param(&params, "Version", &version, e)))
		goto out;
	if (nonce.len > VERIFY_NONCE_MAX) {
		rc = fail(e, 400, "InvalidParameter", "SignatureNonce is over %d bytes.",
			  VERIFY_NONCE_MAX);
		goto out;
	}
	rc = check_time(in, timestamp, "Timestamp", e);
	if (rc)
		goto out;
	rc = lookup(in, key_id, secret, sizeof(secret) - 1, r, e);
	if (rc)
		goto out;

	buf_init(&canonical, VERIFY_TEXT_MAX);
	buf_init(&sts, VERIFY_TEXT_MAX);
	canonical_pairs(&canonical, params.pair, params.n, "Signature");
	buf_adds(&sts, in->method);
	buf_adds(&sts, "&%2F&");
	signer_percent_encode(&sts, buf_str(&canonical), canonical.len);
	if (buf_error(&canonical) || buf_error(&sts)) {
		buf_free_wipe(&canonical);
		buf_free_wipe(&sts);
		rc = fail(e, 400, "Proxy.RequestTooLarge", "The string to sign is too large.");
		goto out;
	}
	/* The key is the secret with "&" appended, in the buffer wiped below. */
	secret_len = strlen(secret);
	secret[secret_len] = '&';
	if (!HMAC(EVP_sha1(), secret, (int)(secret_len + 1), (const unsigned char *)sts.data,
		  sts.len, mac, &mac_len) || mac_len != 20) {
		buf_free_wipe(&canonical);
		buf_free_wipe(&sts);
		rc = -EINVAL;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)want, mac, (int)mac_len);
	if (signature.len != 28 || CRYPTO_memcmp(signature.p, want, 28) != 0) {
		rc = fail(e, 400, "SignatureDoesNotMatch",
			  "Specified signature does not match our calculation. Our string to sign "
			  "is: %.400s", buf_str(&sts));
		buf_free_wipe(&canonical);
		buf_free_wipe(&sts);
		goto out;
	}
	buf_free_wipe(&canonical);
	buf_free_wipe(&sts);
	r->scheme = VERIFY_V1;
	rc = check_nonce(in, key_id, nonce, e);
	if (rc)
		goto out;
	rc = take_action(in, action, version, &params, r, e);
out:
	mem_wipe(secret, sizeof(secret));
	mem_wipe(mac, sizeof(mac));
	mem_wipe(want, sizeof(want));
	params_free(&params);
	return rc;
}

/* ---- the entry point ---- */

int verify_request(const struct verify_input *in, struct verify_result *ret,
		   struct verify_error *ret_err)
{
	struct verify_result r;
	struct verify_error e;
	struct span authorization = { NULL, 0 }, token = { NULL, 0 };
	size_t n_auth;
	int rc;

	if (!in || !ret || !ret_err || !in->method || !*in->method || !in->path ||
	    !in->find_secret || (in->n_query && !in->query) || (in->n_headers && !in->headers) ||
	    (in->body_len && !in->body))
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	memset(&e, 0, sizeof(e));
	if (in->n_headers > VERIFY_MAX_HEADERS) {
		rc = fail(&e, 400, "Proxy.RequestTooLarge", "More than %d headers.",
			  VERIFY_MAX_HEADERS);
		goto out;
	}
	if (find_header(in, "x-acs-security-token", &token)) {
		rc = fail(&e, 400, "Proxy.UnsupportedSecurityToken",
			  "camskeyd cannot validate Alibaba Cloud STS tokens: sign with the "
			  "AccessKey camskeyd issued, without a security token.");
		goto out;
	}
	n_auth = find_header(in, "authorization", &authorization);
	if (n_auth > 1) {
		rc = fail(&e, 400, "IncompleteSignature", "More than one Authorization header.");
		goto out;
	}
	if (n_auth == 1) {
		rc = verify_v3(in, authorization, &r, &e);
	} else {
		bool has_sig = false, has_key = false;

		for (size_t i = 0; i < in->n_query; i++) {
			has_sig = has_sig || pair_name_is(&in->query[i], "Signature");
			has_key = has_key || pair_name_is(&in->query[i], "AccessKeyId");
		}
		if (!has_sig && is_form_body(in)) {
			/* V1 parameters may travel in the form body too. */
			struct params p;

			rc = collect_params(in, true, &p, &e);
			if (rc) {
				params_free(&p);
				goto out;
			}
			has_sig = param_find(&p, "Signature") != NULL;
			has_key = has_key || param_find(&p, "AccessKeyId") != NULL;
			params_free(&p);
		}
		if (has_sig)
			rc = verify_v1(in, &r, &e);
		else
			rc = fail_missing(&e, has_key ? "Signature" : "AccessKeyId");
	}
out:
	if (rc == -EACCES)
		*ret_err = e;
	else if (rc == 0)
		*ret = r;
	mem_wipe(&r, sizeof(r));
	return rc;
}

/* ---- the nonce memory ---- */

#define NONCE_NONE UINT32_MAX

struct nonce_entry {
	unsigned char digest[32]; /* SHA-256 of len(key) . key . nonce */
	int64_t expires_at_s;
	uint32_t next;            /* next in the bucket's chain */
};

struct verify_nonces {
	pthread_mutex_t lock;     /* guards everything below */
	struct nonce_entry *ring; /* capacity entries, oldest at head */
	size_t capacity, head, count;
	uint32_t *buckets;        /* n_buckets chain heads */
	size_t n_buckets;         /* a power of two */
	int64_t last_expiry_s;    /* expiries never decrease along the ring */
};

struct verify_nonces *verify_nonces_new(size_t capacity)
{
	struct verify_nonces *n;

	if (capacity == 0 || capacity > (1u << 24))
		return NULL;
	n = xcalloc(1, sizeof(*n));
	if (pthread_mutex_init(&n->lock, NULL)) {
		free(n);
		return NULL;
	}
	n->capacity = capacity;
	n->ring = xcalloc(capacity, sizeof(*n->ring));
	n->n_buckets = 1;
	while (n->n_buckets < 2 * capacity)
		n->n_buckets <<= 1;
	n->buckets = xmalloc(n->n_buckets * sizeof(*n->buckets));
	for (size_t i = 0; i < n->n_buckets; i++)
		n->buckets[i] = NONCE_NONE;
	return n;
}

void verify_nonces_free(struct verify_nonces *n)
{
	if (!n)
		return;
	pthread_mutex_destroy(&n->lock);
	free(n->ring);
	free(n->buckets);
	free(n);
}

static size_t bucket_of(const struct verify_nonces *n, const unsigned char digest[32])
{
	uint64_t h;

	memcpy(&h, digest, sizeof(h));
	return (size_t)(h & (n->n_buckets - 1));
}

/* Drop the oldest entry (n->count > 0). Lock held. */
static void drop_oldest(struct verify_nonces *n)
{
	uint32_t slot = (uint32_t)n->head;
	uint32_t *link = &n->buckets[bucket_of(n, n->ring[slot].digest)];

	while (*link != NONCE_NONE && *link != slot)
		link = &n->ring[*link].next;
	if (*link == slot)
		*link = n->ring[slot].next;
	n->head = (n->head + 1) % n->capacity;
	n->count--;
}

static void expire(struct verify_nonces *n, int64_t now_wall_s)
{
	while (n->count && n->ring[n->head].expires_at_s <= now_wall_s)
		drop_oldest(n);
}

int verify_nonces_add(struct verify_nonces *n, const char *key_id, size_t key_id_len,
		      const char *nonce, size_t nonce_len, int64_t now_wall_s)
{
	unsigned char digest[32];
	unsigned char len_be[4] = {
		(unsigned char)(key_id_len >> 24), (unsigned char)(key_id_len >> 16),
		(unsigned char)(key_id_len >> 8), (unsigned char)key_id_len,
	};
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx;
	int64_t expires_at_s;
	size_t b, slot;
	int ok;

	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, len_be, sizeof(len_be)) &&
	     EVP_DigestUpdate(ctx, key_id, key_id_len) &&
	     EVP_DigestUpdate(ctx, nonce, nonce_len) &&
	     EVP_DigestFinal_ex(ctx, digest, &md_len) && md_len == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -EIO;

	pthread_mutex_lock(&n->lock);
	expire(n, now_wall_s);
	b = bucket_of(n, digest);
	for (uint32_t i = n->buckets[b]; i != NONCE_NONE; i = n->ring[i].next) {
		if (memcmp(n->ring[i].digest, digest, sizeof(digest)) == 0) {
			pthread_mutex_unlock(&n->lock);
			return -EEXIST;
		}
	}
	if (n->count == n->capacity) {
		pthread_mutex_unlock(&n->lock);
		return -ENOSPC;
	}
	/*
	 * Expiry order is ring order, so expire() only looks at the head: a
	 * wall clock stepped back must not put a shorter-lived entry behind a
	 * longer-lived one (it then lives longer than needed, which is safe).
	 */
	expires_at_s = now_wall_s + VERIFY_NONCE_TTL_S;
	if (expires_at_s < n->last_expiry_s)
		expires_at_s = n->last_expiry_s;
	n->last_expiry_s = expires_at_s;
	slot = (n->head + n->count) % n->capacity;
	memcpy(n->ring[slot].digest, digest, sizeof(digest));
	n->ring[slot].expires_at_s = expires_at_s;
	n->ring[slot].next = n->buckets[b];
	n->buckets[b] = (uint32_t)slot;
	n->count++;
	pthread_mutex_unlock(&n->lock);
	return 0;
}

size_t verify_nonces_count(struct verify_nonces *n, int64_t now_wall_s)
{
	size_t count;

	pthread_mutex_lock(&n->lock);
	expire(n, now_wall_s);
	count = n->count;
	pthread_mutex_unlock(&n->lock);
	return count;
}
