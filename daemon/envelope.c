/*
 * envelope.c -- the CAMS JSON envelope, parsed and rendered (see envelope.h).
 *
 * Parsing: the upstream body goes through cJSON once; the shape is checked
 * field by field and every string is copied into the fixed-size fields of
 * struct envelope_reply (the PEM into one heap string). A string longer than
 * its field is an error, never silently truncated: a truncated RequestId or
 * key would be worse than a 502. The cJSON tree is deleted before returning,
 * on every path, so no tree ever leaves this file.
 *
 * A key is accepted only if OpenSSL parses it as a PEM "PUBLIC KEY"
 * (SubjectPublicKeyInfo); anything before the BEGIN line or after the END
 * line other than white space is refused, so what the cache stores and
 * callers receive is exactly one key. Its fingerprint is the SHA-256 of the
 * DER SubjectPublicKeyInfo (i2d_PUBKEY), lower-case hex: it does not change
 * with line wrapping or trailing newlines of the PEM.
 *
 * Rendering writes JSON by hand into a struct buf in a fixed key order
 * (the order the upstream uses), with RFC 8259 string escaping; bytes >= 0x80
 * pass through unchanged (the inputs are the upstream's UTF-8 strings).
 *
 * Classification: one table of the upstream Codes the daemon knows by
 * name, each with its class, the status callers get and its metric
 * series; a row marked family also matches "Code.anything"
 * (InvalidTimeStamp.Expired). A 5xx is a server error before any row is
 * looked at, except System.LimitControl, which throttles at any status
 * because what protects the quota is slowing down.
 *
 * Invariants: on failure the output struct is untouched; errbuf never holds
 * key material or anything secret. Pure: no logging, no clocks. Threads: any
 * (the OpenSSL error queue touched here is per-thread).
 */
#include "envelope.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hex.h"
#include "mem.h"

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Copy the string member name of obj into dst[dst_size].
 * 1 copied, 0 absent (or JSON null) and optional, -EBADMSG otherwise.
 */
static int copy_string(const cJSON *obj, const char *name, bool required, char *dst,
		       size_t dst_size, char *errbuf, size_t errbuf_size)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
	size_t n;

	if (!item || cJSON_IsNull(item)) {
		if (required) {
			errbuf_printf(errbuf, errbuf_size, "missing %s", name);
			return -EBADMSG;
		}
		return 0;
	}
	if (!cJSON_IsString(item) || !item->valuestring) {
		errbuf_printf(errbuf, errbuf_size, "%s is not a string", name);
		return -EBADMSG;
	}
	n = strlen(item->valuestring);
	if (n + 1 > dst_size) {
		errbuf_printf(errbuf, errbuf_size, "%s longer than %zu bytes", name, dst_size - 1);
		return -EBADMSG;
	}
	memcpy(dst, item->valuestring, n + 1);
	return 1;
}

/* A key status is a token of [A-Z_], 1..LIMIT_STATUS_MAX bytes. */
static bool status_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		if (!((s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_'))
			return false;
	}
	return i >= 1 && i <= LIMIT_STATUS_MAX;
}

int envelope_pem_fingerprint(const char *pem, size_t len, char ret_hex[LIMIT_SHA256_HEX])
{
	static const char begin[] = "-----BEGIN PUBLIC KEY-----";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	unsigned char *der = NULL;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	size_t skip = 0;
	char rest[64];
	int der_len, n, r = -EBADMSG;

	if (!pem || len == 0 || len > LIMIT_PEM_MAX_BYTES)
		return -EBADMSG;
	/* PEM_read_bio_PUBKEY skips any text before BEGIN; we do not. */
	while (skip < len && is_space(pem[skip]))
		skip++;
	if (len - skip < sizeof(begin) - 1 || memcmp(pem + skip, begin, sizeof(begin) - 1) != 0)
		return -EBADMSG;

	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio)
		goto out;
	pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (!pkey)
		goto out_free_bio;
	/* Only white space may follow the END line. */
	while ((n = BIO_read(bio, rest, (int)sizeof(rest))) > 0) {
		int j;

		for (j = 0; j < n; j++) {
			if (!is_space(rest[j]))
				goto out_free_key;
		}
	}
	der_len = i2d_PUBKEY(pkey, &der);
	if (der_len <= 0 || !der)
		goto out_free_key;
	if (!EVP_Digest(der, (size_t)der_len, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
		goto out_free_der;
	hex_encode_lower(md, md_len, ret_hex);
	r = 0;
out_free_der:
	OPENSSL_free(der);
out_free_key:
	EVP_PKEY_free(pkey);
out_free_bio:
	BIO_free(bio);
out:
	/* Leave no stale OpenSSL errors behind for the next caller on this thread. */
	ERR_clear_error();
	return r;
}

/* Validate Data of an "OK" answer into r (pem allocated on success). */
static int parse_data(const cJSON *root, struct envelope_reply *r, char *errbuf,
		      size_t errbuf_size)
{
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "Data");
	const cJSON *key;
	size_t pem_len;
	int k;

	if (!cJSON_IsObject(data)) {
		errbuf_printf(errbuf, errbuf_size, data ? "Data is not an object" : "missing Data");
		return -EBADMSG;
	}
	k = copy_string(data, "PhoneNumber", false, r->phone, sizeof(r->phone), errbuf,
			errbuf_size);
	if (k < 0)
		return k;
	k = copy_string(data, "EncryptionPublicKeyStatus", true, r->status, sizeof(r->status),
			errbuf, errbuf_size);
	if (k < 0)
		return k;
	if (!status_valid(r->status)) {
		errbuf_printf(errbuf, errbuf_size, "EncryptionPublicKeyStatus is not a token of [A-Z_]");
		return -EBADMSG;
	}

	key = cJSON_GetObjectItemCaseSensitive(data, "EncryptionPublicKey");
	if (!key) {
		errbuf_printf(errbuf, errbuf_size, "missing EncryptionPublicKey");
		return -EBADMSG;
	}
	if (!cJSON_IsString(key) || !key->valuestring) {
		errbuf_printf(errbuf, errbuf_size, "EncryptionPublicKey is not a string");
		return -EBADMSG;
	}
	pem_len = strlen(key->valuestring);
	if (pem_len > LIMIT_PEM_MAX_BYTES) {
		errbuf_printf(errbuf, errbuf_size, "EncryptionPublicKey longer than %d bytes",
			  LIMIT_PEM_MAX_BYTES);
		return -EBADMSG;
	}
	if (envelope_pem_fingerprint(key->valuestring, pem_len, r->fingerprint) < 0) {
		errbuf_printf(errbuf, errbuf_size, "EncryptionPublicKey is not a PEM public key");
		return -EBADMSG;
	}
	r->pem = xstrndup(key->valuestring, pem_len);
	return 0;
}

int envelope_parse(const char *body, size_t len, struct envelope_reply *ret, char *errbuf,
		   size_t errbuf_size)
{
	struct envelope_reply r;
	cJSON *root;
	int k;

	memset(&r, 0, sizeof(r));
	if (!body || len == 0) {
		errbuf_printf(errbuf, errbuf_size, "empty body");
		return -EBADMSG;
	}
	root = cJSON_ParseWithLength(body, len);
	if (!root) {
		errbuf_printf(errbuf, errbuf_size, "not JSON");
		return -EBADMSG;
	}
	if (!cJSON_IsObject(root)) {
		errbuf_printf(errbuf, errbuf_size, "not a JSON object");
		goto out_bad;
	}
	k = copy_string(root, "RequestId", true, r.request_id, sizeof(r.request_id), errbuf,
			errbuf_size);
	if (k < 0)
		goto out_bad;
	k = copy_string(root, "Code", true, r.code, sizeof(r.code), errbuf, errbuf_size);
	if (k < 0)
		goto out_bad;
	if (r.code[0] == '\0') {
		errbuf_printf(errbuf, errbuf_size, "empty Code");
		goto out_bad;
	}
	k = copy_string(root, "Message", false, r.message, sizeof(r.message), errbuf,
			errbuf_size);
	if (k < 0)
		goto out_bad;
	/* An error answer's Data, if any, is not ours to interpret. */
	if (strcmp(r.code, "OK") == 0 && parse_data(root, &r, errbuf, errbuf_size) < 0)
		goto out_bad;

	cJSON_Delete(root);
	*ret = r;
	return 0;

out_bad:
	cJSON_Delete(root);
	free(r.pem);
	return -EBADMSG;
}

void envelope_reply_free(struct envelope_reply *r)
{
	if (!r)
		return;
	free(r->pem);
	r->pem = NULL;
}

void envelope_json_string(struct buf *out, const char *s)
{
	const char *run;

	buf_addc(out, '"');
	if (!s)
		s = "";
	run = s;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		const char *esc = NULL;

		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (c >= 0x20)
				continue;
			break;
		}
		/* Flush the plain run before this byte, then its escape. */
		buf_add(out, run, (size_t)(s - run));
		run = s + 1;
		if (esc) {
			buf_adds(out, esc);
		} else {
			char u[7] = { '\\', 'u', '0', '0' };

			hex_encode_lower(&c, 1, u + 4);
			buf_add(out, u, 6);
		}
	}
	buf_add(out, run, (size_t)(s - run));
	buf_addc(out, '"');
}

void envelope_render_ok(struct buf *out, const char *request_id, const char *message,
			const char *phone, const char *pem, const char *status)
{
	buf_adds(out, "{\"RequestId\":");
	envelope_json_string(out, request_id);
	buf_adds(out, ",\"Code\":\"OK\",\"Message\":");
	envelope_json_string(out, message);
	buf_adds(out, ",\"Data\":{\"PhoneNumber\":");
	envelope_json_string(out, phone);
	buf_adds(out, ",\"EncryptionPublicKey\":");
	envelope_json_string(out, pem);
	buf_adds(out, ",\"EncryptionPublicKeyStatus\":");
	envelope_json_string(out, status);
	buf_adds(out, "}}");
}

void envelope_render_error(struct buf *out, const char *request_id, const char *code,
			   const char *message)
{
	buf_adds(out, "{\"RequestId\":");
	envelope_json_string(out, request_id);
	buf_adds(out, ",\"Code\":");
	envelope_json_string(out, code);
	buf_adds(out, ",\"Message\":");
	envelope_json_string(out, message);
	buf_addc(out, '}');
}

/* ---- what an upstream answer means ---------------------------------------- */

static const char *const outcome_labels[ENVELOPE_OUTCOME_COUNT] = {
	[ENVELOPE_OUTCOME_OK] = "OK",
	[ENVELOPE_OUTCOME_LIMIT_CONTROL] = "System.LimitControl",
	[ENVELOPE_OUTCOME_UNSUBSCRIPT] = "Product.Unsubscript",
	[ENVELOPE_OUTCOME_PERMISSION_DENY] = "Ram.PermissionDeny",
	[ENVELOPE_OUTCOME_RESOURCE_OWNER] = "Unknown.ResourceOwnerId",
	[ENVELOPE_OUTCOME_AUTH] = "auth_error",
	[ENVELOPE_OUTCOME_OTHER_CODE] = "other_code",
	[ENVELOPE_OUTCOME_HTTP_ERROR] = "http_error",
	[ENVELOPE_OUTCOME_TIMEOUT] = "timeout",
	[ENVELOPE_OUTCOME_NETWORK] = "network",
};

struct known_code {
	const char *code;
	bool family;                  /* also "code.anything" */
	enum envelope_class cls;
	int answer_status;
	enum envelope_outcome outcome;
};

#define CREDENTIAL(code, family) \
	{ code, family, ENVELOPE_CREDENTIAL, 502, ENVELOPE_OUTCOME_AUTH }

static const struct known_code known_codes[] = {
	{ "OK", false, ENVELOPE_OK, 200, ENVELOPE_OUTCOME_OK },
	{ "System.LimitControl", false, ENVELOPE_THROTTLED, 503, ENVELOPE_OUTCOME_LIMIT_CONTROL },
	{ "Product.Unsubscript", false, ENVELOPE_DEFINITIVE, 403, ENVELOPE_OUTCOME_UNSUBSCRIPT },
	{ "Ram.PermissionDeny", false, ENVELOPE_DEFINITIVE, 403, ENVELOPE_OUTCOME_PERMISSION_DENY },
	{ "Unknown.ResourceOwnerId", false, ENVELOPE_DEFINITIVE, 404,
	  ENVELOPE_OUTCOME_RESOURCE_OWNER },
	{ "SignatureNonceUsed", false, ENVELOPE_NONCE_REUSED, 502, ENVELOPE_OUTCOME_AUTH },
	CREDENTIAL("SignatureDoesNotMatch", false),
	CREDENTIAL("IncompleteSignature", false),
	CREDENTIAL("MissingSignature", false),
	CREDENTIAL("MissingSignatureNonce", false),
	CREDENTIAL("InvalidSignatureMethod", false),
	CREDENTIAL("InvalidSignatureVersion", false),
	CREDENTIAL("InvalidAccessKeyId", true),
	CREDENTIAL("InvalidTimeStamp", true),
	CREDENTIAL("InvalidSecurityToken", true),
	CREDENTIAL("MissingSecurityToken", false),
	CREDENTIAL("MissingParameter", false),
	CREDENTIAL("Forbidden.AccessKeyDisabled", false),
};

static bool code_matches(const struct known_code *k, const char *code)
{
	size_t n = strlen(k->code);

	if (strncmp(code, k->code, n) != 0)
		return false;
	return code[n] == '\0' || (k->family && code[n] == '.' && code[n + 1] != '\0');
}

enum envelope_class envelope_classify(long http_status, const char *code, int *ret_answer_status,
				      enum envelope_outcome *ret_outcome)
{
	const struct known_code *k = NULL;
	enum envelope_class cls = ENVELOPE_OTHER;
	enum envelope_outcome outcome = ENVELOPE_OUTCOME_OTHER_CODE;
	int answer_status = 502;

	if (!code)
		code = "";
	for (size_t i = 0; i < sizeof(known_codes) / sizeof(known_codes[0]) && !k; i++) {
		if (code_matches(&known_codes[i], code))
			k = &known_codes[i];
	}
	if (http_status >= 500 && !(k && k->cls == ENVELOPE_THROTTLED)) {
		cls = ENVELOPE_SERVER_ERROR;
		outcome = ENVELOPE_OUTCOME_HTTP_ERROR;
	} else if (k) {
		cls = k->cls;
		outcome = k->outcome;
		answer_status = k->answer_status;
	}
	if (ret_answer_status)
		*ret_answer_status = answer_status;
	if (ret_outcome)
		*ret_outcome = outcome;
	return cls;
}

const char *envelope_outcome_label(enum envelope_outcome outcome)
{
	if ((unsigned)outcome >= ENVELOPE_OUTCOME_COUNT)
		return "other_code";
	return outcome_labels[outcome];
}
