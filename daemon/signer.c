/*
 * signer.c -- Alibaba Cloud request signing and the credential (see signer.h).
 *
 * What it does: the two signature schemes CAMS accepts, as pure functions
 * that take every input (signer_v3: ACS3-HMAC-SHA256; signer_v1: RPC
 * HMAC-SHA1), the two encodings they rest on, and signer_sign_request(),
 * which lays out GetPhoneEncryptionPublicKey exactly as the official Node
 * SDK (@alicloud/openapi-client 0.4.15) sends it: same headers, same order,
 * same body, so the SDK's own vectors (tests/data/vectors) pin every byte.
 *
 * What it owns: the only copy of the AccessKey secret and STS token. They
 * come from $CREDENTIALS_DIRECTORY, a private INI file (our own flat format,
 * or Alibaba's profile format with [default] sections) or the environment,
 * in that order. A file readable or writable by group or others is refused.
 * The secret is never returned, logged or copied into an error message;
 * every copy (file contents, the HMAC key, the per-request snapshot, the
 * credential itself on free or replacement) is wiped with mem_wipe().
 * Strings that carry the STS token (canonical request, V1 query, headers)
 * are wiped when freed too; buf growth may leave an unwiped realloc'd copy
 * of a canonical string, which holds the token but never the secret.
 *
 * Threads: the pure functions from any thread. The credential sits behind
 * a mutex held only to swap it (signer_reload) or to copy it out
 * (signer_sign_request, signer_access_key_id); signing runs on the copy.
 *
 * Does not: log, read clocks (time is an argument), refresh STS tokens,
 * talk to the ECS metadata service, or read ~/.aliyun/config.json.
 */
#include "signer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "bounds.h"
#include "hex.h"
#include "mem.h"
#include "span.h"

/*
 * Any string the signer builds. The STS token may be 8 KiB and appears
 * percent-encoded twice in a V1 string to sign (each byte up to 5 bytes:
 * "+" -> "%2B" -> "%252B"), on top of the ordinary canonical content.
 */
#define SIGNER_TEXT_MAX (LIMIT_CANONICAL_MAX_BYTES + 5 * LIMIT_SECURITY_TOKEN_MAX)
/* Query parameters or headers signer_v3 (or params signer_v1) accepts. */
#define SIGNER_MAX_PAIRS 64
/* Sent unsigned, as the SDK sends its own user-agent. */
#define SIGNER_USER_AGENT "camskeyd/0.1"
/* One file of $CREDENTIALS_DIRECTORY: the value plus a line ending. */
#define SIGNER_CRED_FILE_MAX (LIMIT_SECURITY_TOKEN_MAX + 2)

#define ENV_ACCESS_KEY_ID "ALIBABA_CLOUD_ACCESS_KEY_ID"
#define ENV_ACCESS_KEY_SECRET "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
#define ENV_SECURITY_TOKEN "ALIBABA_CLOUD_SECURITY_TOKEN"
#define ENV_PROFILE "ALIBABA_CLOUD_PROFILE"

struct signer_cred {
	char access_key_id[LIMIT_ACCESS_KEY_ID_MAX + 1];
	char access_key_secret[LIMIT_ACCESS_KEY_SECRET_MAX + 1];
	char security_token[LIMIT_SECURITY_TOKEN_MAX + 1]; /* "" without STS */
};

struct signer {
	pthread_mutex_t lock; /* guards cred (the pointer and what it points to) */
	struct signer_cred *cred;
};

/* ---- encodings and digests ---- */

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

/* encodeURIComponent() also leaves these alone; the SDK's form bodies use it. */
static bool is_form_safe(unsigned char c)
{
	return c == '!' || c == '\'' || c == '(' || c == ')' || c == '*';
}

static void encode(struct buf *out, const char *s, size_t len, bool form)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c) || (form && is_form_safe(c))) {
			buf_addc(out, (char)c);
		} else {
			char esc[3] = { '%', hex[c >> 4], hex[c & 0x0f] };

			buf_add(out, esc, sizeof(esc));
		}
	}
}

void signer_percent_encode(struct buf *out, const char *s, size_t len)
{
	encode(out, s, len, false);
}

void signer_form_encode(struct buf *out, const char *s, size_t len)
{
	encode(out, s, len, true);
}

/* HMAC with md into mac (EVP_MAX_MD_SIZE). 0 or -EIO. */
static int hmac(const EVP_MD *md, const void *key, size_t key_len, const void *data,
		size_t data_len, unsigned char *mac, unsigned int *ret_mac_len)
{
	if (key_len == 0 || key_len > 1024)
		return -EINVAL;
	if (!HMAC(md, key, (int)key_len, (const unsigned char *)data, data_len, mac,
		  ret_mac_len))
		return -EIO;
	return 0;
}

/* free() after wiping: for strings that may carry the STS token. NULL ok. */
static void free_wipe_str(char *s)
{
	if (!s)
		return;
	mem_wipe(s, strlen(s));
	free(s);
}

/* ---- V3: ACS3-HMAC-SHA256 ---- */

struct v3_header {
	char *name;        /* lower-cased copy */
	struct span value; /* trimmed, into the caller's string */
};

static int cmp_v3_header(const void *a, const void *b)
{
	const struct v3_header *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static int cmp_kv_key(const void *a, const void *b)
{
	const struct signer_kv *const *x = a, *const *y = b;

	return strcmp((*x)->key, (*y)->key);
}

/* An HTTP token character (RFC 9110 tchar). */
static bool is_tchar(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A header value may hold tabs but no other control byte (no CR/LF injection). */
static bool header_value_ok(struct span v)
{
	for (size_t i = 0; i < v.len; i++) {
		unsigned char c = (unsigned char)v.p[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

static bool v3_header_signed(const char *lower_name)
{
	return strcmp(lower_name, "host") == 0 || strcmp(lower_name, "content-type") == 0 ||
	       strncmp(lower_name, "x-acs-", 6) == 0;
}

static void free_v3_headers(struct v3_header *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(h[i].name);
	free(h);
}

/*
 * Pick, lower-case, trim and sort the signed headers of in into a new array
 * (*ret_headers, *ret_n; free with free_v3_headers). 0 or -EINVAL / -E2BIG.
 */

static int collect_v3_headers(const struct signer_v3_input *in, struct v3_header **ret_headers,
			      size_t *ret_n)
{
	struct v3_header *h;
	size_t n = 0;
	int r = 0;

	if (in->n_headers > SIGNER_MAX_PAIRS)
		return -E2BIG;
	if (in->n_headers && !in->headers)
		return -EINVAL;
	h = xcalloc(in->n_headers ? in->n_headers : 1, sizeof(*h));
	for (size_t i = 0; i < in->n_headers; i++) {
		const char *name = in->headers[i].key;
		const char *value = in->headers[i].value ? in->headers[i].value : "";
		size_t len;
		char *lower;

		if (!name || !*name) {
			r = -EINVAL;
			goto out_free;
		}
		len = strlen(name);
		lower = xmalloc(len + 1);
		for (size_t j = 0; j < len; j++) {
			unsigned char c = (unsigned char)name[j];

			if (!is_tchar(c)) {
				free(lower);
				r = -EINVAL;
				goto out_free;
			}
			lower[j] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
		}
		lower[len] = '\0';
		if (!v3_header_signed(lower)) {
			free(lower);
			continue;
		}
		h[n].name = lower;
		h[n].value = span_trim_ws(span_cstr(value));
		n++;
		if (!header_value_ok(h[n - 1].value)) {
			r = -EINVAL;
			goto out_free;
		}
	}
	qsort(h, n, sizeof(*h), cmp_v3_header);
	for (size_t i = 1; i < n; i++) {
		/* Two values for one signed name: which one the server sees is undefined. */
		if (strcmp(h[i - 1].name, h[i].name) == 0) {
			r = -EINVAL;
			goto out_free;
		}
	}
	*ret_headers = h;
	*ret_n = n;
	return 0;

out_free:
	free_v3_headers(h, n);
	return r;
}

/* Pointers to pairs, sorted by key; keys must be present and unique. */
static int sort_pairs(const struct signer_kv *pairs, size_t n, const struct signer_kv ***ret)
{
	const struct signer_kv **sorted;

	if (n > SIGNER_MAX_PAIRS)
		return -E2BIG;
	if (n && !pairs)
		return -EINVAL;
	sorted = xcalloc(n ? n : 1, sizeof(*sorted));
	for (size_t i = 0; i < n; i++) {
		if (!pairs[i].key || !*pairs[i].key) {
			free(sorted);
			return -EINVAL;
		}
		sorted[i] = &pairs[i];
	}
	qsort(sorted, n, sizeof(*sorted), cmp_kv_key);
	for (size_t i = 1; i < n; i++) {
		if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0) {
			free(sorted);
			return -EINVAL;
		}
	}
	*ret = sorted;
	return 0;
}

static const char *kv_value(const struct signer_kv *kv)
{
	return kv->value ? kv->value : "";
}

int signer_v3(const struct signer_v3_input *in, struct signer_v3_output *ret)
{
	struct signer_v3_output out = { { 0 }, NULL, NULL, NULL, { 0 }, NULL };
	const struct signer_kv **query = NULL;
	struct v3_header *headers = NULL;
	size_t n_headers = 0;
	struct buf signed_names, canonical, auth;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char cr_hash[LIMIT_SHA256_HEX];
	int r;

	if (!in || !ret || !in->method || !*in->method || !in->path || !in->access_key_id ||
	    !*in->access_key_id || !in->access_key_secret || !*in->access_key_secret ||
	    (!in->body && in->body_len))
		return -EINVAL;
	r = sort_pairs(in->query, in->n_query, &query);
	if (r)
		return r;
	r = collect_v3_headers(in, &headers, &n_headers);
	if (r)
		goto out_free_query;
	r = hex_sha256(in->body, in->body_len, out.hashed_payload);
	if (r)
		goto out_free_headers;

	buf_init(&signed_names, SIGNER_TEXT_MAX);
	buf_init(&canonical, SIGNER_TEXT_MAX);
	buf_init(&auth, SIGNER_TEXT_MAX);
	for (size_t i = 0; i < n_headers; i++) {
		if (i)
			buf_addc(&signed_names, ';');
		buf_adds(&signed_names, headers[i].name);
	}
	buf_adds(&canonical, in->method);
	buf_addc(&canonical, '\n');
	buf_adds(&canonical, in->path);
	buf_addc(&canonical, '\n');
	for (size_t i = 0; i < in->n_query; i++) {
		const char *v = kv_value(query[i]);

		if (i)
			buf_addc(&canonical, '&');
		/* Keys as given: the SDK (and the vectors' rules) encode only values. */
		buf_adds(&canonical, query[i]->key);
		buf_addc(&canonical, '=');
		signer_percent_encode(&canonical, v, strlen(v));
	}
	buf_addc(&canonical, '\n');
	for (size_t i = 0; i < n_headers; i++) {
		buf_adds(&canonical, headers[i].name);
		buf_addc(&canonical, ':');
		buf_add(&canonical, headers[i].value.p, headers[i].value.len);
		buf_addc(&canonical, '\n');
	}
	buf_addc(&canonical, '\n');
	buf_add(&canonical, signed_names.data ? signed_names.data : "", signed_names.len);
	buf_addc(&canonical, '\n');
	buf_adds(&canonical, out.hashed_payload);
	r = buf_error(&signed_names) ? buf_error(&signed_names) : buf_error(&canonical);
	if (r)
		goto out_free_bufs;

	r = hex_sha256(canonical.data, canonical.len, cr_hash);
	if (r)
		goto out_free_bufs;
	out.string_to_sign = xmalloc(sizeof("ACS3-HMAC-SHA256\n") + 64);
	memcpy(out.string_to_sign, "ACS3-HMAC-SHA256\n", 17);
	memcpy(out.string_to_sign + 17, cr_hash, sizeof(cr_hash));
	r = hmac(EVP_sha256(), in->access_key_secret, strlen(in->access_key_secret),
		 out.string_to_sign, strlen(out.string_to_sign), mac, &mac_len);
	if (r || mac_len != 32) {
		r = r ? r : -EIO;
		goto out_free_sts;
	}
	hex_encode_lower(mac, mac_len, out.signature);
	mem_wipe(mac, sizeof(mac));

	buf_printf(&auth, "ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s",
		   in->access_key_id, buf_str(&signed_names), out.signature);
	r = buf_error(&auth);
	if (r)
		goto out_free_sts;

	out.canonical_request = buf_steal(&canonical, NULL);
	out.signed_headers = buf_steal(&signed_names, NULL);
	out.authorization = buf_steal(&auth, NULL);
	*ret = out;
	r = 0;
	goto out_free_bufs;

out_free_sts:
	free(out.string_to_sign);
out_free_bufs:
	buf_free(&auth);
	buf_free_wipe(&canonical);
	buf_free(&signed_names);
out_free_headers:
	free_v3_headers(headers, n_headers);
out_free_query:
	free(query);
	return r;
}

void signer_v3_output_free(struct signer_v3_output *out)
{
	if (!out)
		return;
	free_wipe_str(out->canonical_request);
	free(out->string_to_sign);
	free(out->signed_headers);
	free(out->authorization);
	out->canonical_request = out->string_to_sign = NULL;
	out->signed_headers = out->authorization = NULL;
}

/* ---- V1: RPC HMAC-SHA1 ---- */

int signer_v1(const char *method, const struct signer_kv *params, size_t n_params,
	      const char *access_key_secret, struct signer_v1_output *ret)
{
	struct signer_v1_output out = { NULL, NULL, { 0 } };
	const struct signer_kv **sorted = NULL;
	char key[LIMIT_ACCESS_KEY_SECRET_MAX + 2];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	struct buf canonical, sts;
	size_t secret_len;
	int r;

	if (!method || !*method || !access_key_secret || !*access_key_secret || !ret)
		return -EINVAL;
	secret_len = strlen(access_key_secret);
	if (secret_len > LIMIT_ACCESS_KEY_SECRET_MAX)
		return -E2BIG;
	r = sort_pairs(params, n_params, &sorted);
	if (r)
		return r;

	buf_init(&canonical, SIGNER_TEXT_MAX);
	buf_init(&sts, SIGNER_TEXT_MAX);
	for (size_t i = 0; i < n_params; i++) {
		const char *v = kv_value(sorted[i]);

		if (i)
			buf_addc(&canonical, '&');
		signer_percent_encode(&canonical, sorted[i]->key, strlen(sorted[i]->key));
		buf_addc(&canonical, '=');
		signer_percent_encode(&canonical, v, strlen(v));
	}
	buf_adds(&sts, method);
	buf_adds(&sts, "&%2F&");
	signer_percent_encode(&sts, buf_str(&canonical), canonical.len);
	r = buf_error(&canonical) ? buf_error(&canonical) : buf_error(&sts);
	if (r)
		goto out_free_bufs;

	/* The key is the secret with "&" appended: a stack copy, wiped below. */
	memcpy(key, access_key_secret, secret_len);
	key[secret_len] = '&';
	r = hmac(EVP_sha1(), key, secret_len + 1, sts.data, sts.len, mac, &mac_len);
	mem_wipe(key, sizeof(key));
	if (r || mac_len != 20) {
		r = r ? r : -EIO;
		goto out_free_bufs;
	}
	EVP_EncodeBlock((unsigned char *)out.signature, mac, (int)mac_len);
	mem_wipe(mac, sizeof(mac));

	out.canonicalized_query_string = buf_steal(&canonical, NULL);
	out.string_to_sign = buf_steal(&sts, NULL);
	*ret = out;
	r = 0;

out_free_bufs:
	buf_free_wipe(&sts);
	buf_free_wipe(&canonical);
	free(sorted);
	return r;
}

void signer_v1_output_free(struct signer_v1_output *out)
{
	if (!out)
		return;
	free_wipe_str(out->canonicalized_query_string);
	free_wipe_str(out->string_to_sign);
	out->canonicalized_query_string = out->string_to_sign = NULL;
}

/* ---- loading the credential ---- */

static void cred_free(struct signer_cred *c)
{
	if (!c)
		return;
	mem_wipe(c, sizeof(*c));
	free(c);
}

/*
 * Store a trimmed value into dst. what names the field, where the source
 * (both for the message; the value itself never goes into errbuf).
 * 0 or -EINVAL.
 */
static int cred_set(char *dst, size_t dst_size, struct span value, const char *what,
		    const char *where, char *errbuf, size_t errbuf_size)
{
	value = span_trim_ws(value);
	if (value.len == 0) {
		errbuf_printf(errbuf, errbuf_size, "%s: %s is empty", where, what);
		return -EINVAL;
	}
	if (value.len >= dst_size) {
		errbuf_printf(errbuf, errbuf_size, "%s: %s is longer than %zu bytes", where, what,
			dst_size - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < value.len; i++) {
		unsigned char c = (unsigned char)value.p[i];

		/* They go into headers and query strings: no blanks or controls. */
		if (c <= 0x20 || c == 0x7f) {
			errbuf_printf(errbuf, errbuf_size,
				"%s: %s contains a blank or control character", where, what);
			return -EINVAL;
		}
	}
	memcpy(dst, value.p, value.len);
	dst[value.len] = '\0';
	return 0;
}

/*
 * Read a whole file that must be private to its owner into a new buffer of
 * max_bytes + 1 (allocated once, so no realloc leaves a copy behind; the
 * caller wipes and frees it). 0, -ENOENT (absent), -EPERM (group/other may
 * read or write), -EINVAL (not a regular file, too large) or -errno.
 */
int signer_read_private_file(const char *path, size_t max_bytes, char **ret_data,
			     size_t *ret_len, char *errbuf, size_t errbuf_size)
{
	struct stat st;
	size_t len = 0;
	char *data;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT || r == -ENOTDIR)
			return -ENOENT;
		errbuf_printf(errbuf, errbuf_size, "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	/* fstat on the open file: no window between the check and the read. */
	if (fstat(fd, &st) < 0) {
		r = -errno;
		errbuf_printf(errbuf, errbuf_size, "%s: cannot stat: %s", path, strerror(-r));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		errbuf_printf(errbuf, errbuf_size, "%s: not a regular file", path);
		r = -EINVAL;
		goto out_close;
	}
	if (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) {
		errbuf_printf(errbuf, errbuf_size,
			"%s: mode %04o lets group or others read or write the credential; "
			"chmod 600 it",
			path, (unsigned)(st.st_mode & 07777));
		r = -EPERM;
		goto out_close;
	}
	data = xmalloc(max_bytes + 1);
	for (;;) {
		ssize_t n = read(fd, data + len, max_bytes + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			errbuf_printf(errbuf, errbuf_size, "%s: cannot read: %s", path, strerror(-r));
			goto out_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max_bytes) {
			errbuf_printf(errbuf, errbuf_size, "%s: larger than %zu bytes", path, max_bytes);
			r = -EINVAL;
			goto out_free;
		}
	}
	data[len] = '\0';
	close(fd);
	*ret_data = data;
	*ret_len = len;
	return 0;

out_free:
	mem_wipe(data, max_bytes + 1);
	free(data);
out_close:
	close(fd);
	return r;
}

void signer_free_private_file(char *data, size_t max_bytes)
{
	if (!data)
		return;
	mem_wipe(data, max_bytes + 1);
	free(data);
}

/*
 * One value from the file dir/name into dst. 0, -ENOENT (no such file) or
 * another error with errbuf set.
 */
static int load_dir_value(const char *dir, const char *name, char *dst, size_t dst_size,
			  char *errbuf, size_t errbuf_size)
{
	char path[4096];
	char *data = NULL;
	size_t len = 0;
	int n, r;

	n = snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		errbuf_printf(errbuf, errbuf_size, "credentials directory path too long");
		return -EINVAL;
	}
	r = signer_read_private_file(path, SIGNER_CRED_FILE_MAX, &data, &len, errbuf, errbuf_size);
	if (r)
		return r;
	r = cred_set(dst, dst_size, span_make(data, len), name, path, errbuf, errbuf_size);
	signer_free_private_file(data, SIGNER_CRED_FILE_MAX);
	return r;
}

/* 0 (loaded), -ENOENT (no access_key_id there) or an error with errbuf set. */
static int load_dir(const char *dir, struct signer_cred *c, char *errbuf, size_t errbuf_size)
{
	int r;

	r = load_dir_value(dir, "access_key_id", c->access_key_id, sizeof(c->access_key_id),
			   errbuf, errbuf_size);
	if (r)
		return r;
	r = load_dir_value(dir, "access_key_secret", c->access_key_secret,
			   sizeof(c->access_key_secret), errbuf, errbuf_size);
	if (r == -ENOENT) {
		errbuf_printf(errbuf, errbuf_size,
			"credentials directory %s: access_key_id present but access_key_secret missing",
			dir);
		return -EINVAL;
	}
	if (r)
		return r;
	r = load_dir_value(dir, "security_token", c->security_token, sizeof(c->security_token),
			   errbuf, errbuf_size);
	if (r == -ENOENT) {
		c->security_token[0] = '\0';
		r = 0;
	}
	return r;
}

/*
 * Parse the credentials file: either flat "key = value" lines, or Alibaba's
 * profile format, where [profile] sections hold the keys and the profile is
 * $ALIBABA_CLOUD_PROFILE or "default". '#' and ';' start comment lines.
 * Unknown keys are ignored (Alibaba's files carry region_id, enable, ...).
 * 0 or -EINVAL with errbuf set.
 */
static int parse_cred_file(const char *path, const char *data, size_t len,
			   struct signer_cred *c, char *errbuf, size_t errbuf_size)
{
	const char *profile = getenv(ENV_PROFILE);
	struct span rest = span_make(data, len);
	struct span id = { NULL, 0 }, secret = { NULL, 0 }, token = { NULL, 0 };
	struct span type = { NULL, 0 };
	bool in_wanted = true, any_section = false, found_profile = false;
	unsigned line_no = 0;
	int r;

	if (!profile || !*profile)
		profile = "default";
	while (rest.len) {
		struct span line, key, value;

		line_no++;
		if (!span_split(rest, '\n', &line, &rest)) {
			line = rest;
			rest.len = 0;
		}
		line = span_trim_ws(line);
		if (line.len == 0 || line.p[0] == '#' || line.p[0] == ';')
			continue;
		if (line.p[0] == '[') {
			if (line.p[line.len - 1] != ']') {
				errbuf_printf(errbuf, errbuf_size, "%s:%u: unterminated [section]", path,
					line_no);
				return -EINVAL;
			}
			any_section = true;
			in_wanted = span_eq(span_trim_ws(span_make(line.p + 1, line.len - 2)), profile);
			found_profile = found_profile || in_wanted;
			continue;
		}
		if (!span_split(line, '=', &key, &value)) {
			errbuf_printf(errbuf, errbuf_size, "%s:%u: expected key = value", path, line_no);
			return -EINVAL;
		}
		if (!in_wanted)
			continue;
		key = span_trim_ws(key);
		value = span_trim_ws(value);
		if (span_eq(key, "access_key_id"))
			id = value;
		else if (span_eq(key, "access_key_secret"))
			secret = value;
		else if (span_eq(key, "security_token"))
			token = value;
		else if (span_eq(key, "type"))
			type = value;
	}
	if (any_section && !found_profile) {
		errbuf_printf(errbuf, errbuf_size, "%s: no [%.64s] profile", path, profile);
		return -EINVAL;
	}
	if (type.p && !span_eq(type, "access_key") && !span_eq(type, "sts")) {
		errbuf_printf(errbuf, errbuf_size,
			"%s: profile type %.*s is not supported (access_key or sts)", path,
			(int)(type.len > 32 ? 32 : type.len), type.p);
		return -EINVAL;
	}
	if (!id.p || !secret.p || (type.p && span_eq(type, "sts") && !token.p)) {
		errbuf_printf(errbuf, errbuf_size, "%s: %s missing", path,
			!id.p ? "access_key_id" : !secret.p ? "access_key_secret" : "security_token");
		return -EINVAL;
	}
	r = cred_set(c->access_key_id, sizeof(c->access_key_id), id, "access_key_id", path,
		     errbuf, errbuf_size);
	if (!r)
		r = cred_set(c->access_key_secret, sizeof(c->access_key_secret), secret,
			     "access_key_secret", path, errbuf, errbuf_size);
	if (!r && token.p)
		r = cred_set(c->security_token, sizeof(c->security_token), token,
			     "security_token", path, errbuf, errbuf_size);
	return r;
}

static int load_file(const char *path, struct signer_cred *c, char *errbuf, size_t errbuf_size)
{
	char *data = NULL;
	size_t len = 0;
	int r;

	r = signer_read_private_file(path, LIMIT_CONFIG_FILE_MAX_BYTES, &data, &len, errbuf,
			      errbuf_size);
	if (r)
		return r;
	r = parse_cred_file(path, data, len, c, errbuf, errbuf_size);
	signer_free_private_file(data, LIMIT_CONFIG_FILE_MAX_BYTES);
	return r;
}

/* 0, -ENOENT (no ID variable) or -EINVAL with errbuf set. */
static int load_env(struct signer_cred *c, char *errbuf, size_t errbuf_size)
{
	const char *id = getenv(ENV_ACCESS_KEY_ID);
	const char *secret = getenv(ENV_ACCESS_KEY_SECRET);
	const char *token = getenv(ENV_SECURITY_TOKEN);
	int r;

	if (!id || !*id) {
		if (secret && *secret) {
			errbuf_printf(errbuf, errbuf_size, "environment: %s is set but %s is not",
				ENV_ACCESS_KEY_SECRET, ENV_ACCESS_KEY_ID);
			return -EINVAL;
		}
		return -ENOENT;
	}
	if (!secret || !*secret) {
		errbuf_printf(errbuf, errbuf_size, "environment: %s is set but %s is not",
			ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET);
		return -EINVAL;
	}
	r = cred_set(c->access_key_id, sizeof(c->access_key_id), span_cstr(id),
		     ENV_ACCESS_KEY_ID, "environment", errbuf, errbuf_size);
	if (!r)
		r = cred_set(c->access_key_secret, sizeof(c->access_key_secret), span_cstr(secret),
			     ENV_ACCESS_KEY_SECRET, "environment", errbuf, errbuf_size);
	if (!r && token && *token)
		r = cred_set(c->security_token, sizeof(c->security_token), span_cstr(token),
			     ENV_SECURITY_TOKEN, "environment", errbuf, errbuf_size);
	return r;
}

/* The first source that has a credential. *ret owned by the caller (cred_free). */
static int load_cred(const struct signer_source *src, struct signer_cred **ret, char *errbuf,
		     size_t errbuf_size)
{
	static const struct signer_source none = { NULL, NULL, 0, NULL };
	struct signer_cred *c = xcalloc(1, sizeof(*c));
	const char *dir, *file;
	char looked_dir[300], looked_file[300], looked_profile[300];
	int r;

	if (!src)
		src = &none;
	dir = src->credentials_dir && *src->credentials_dir ? src->credentials_dir : NULL;
	file = src->credentials_file && *src->credentials_file ? src->credentials_file : NULL;

	snprintf(looked_dir, sizeof(looked_dir), "credentials directory (not set)");
	if (dir) {
		r = load_dir(dir, c, errbuf, errbuf_size);
		if (r == 0)
			goto out_ok;
		if (r != -ENOENT)
			goto out_fail;
		memset(c, 0, sizeof(*c));
		snprintf(looked_dir, sizeof(looked_dir), "%.200s/access_key_id (absent)", dir);
	}
	snprintf(looked_file, sizeof(looked_file), "credentials file (not set)");
	if (file) {
		r = load_file(file, c, errbuf, errbuf_size);
		if (r == 0)
			goto out_ok;
		if (r != -ENOENT)
			goto out_fail;
		memset(c, 0, sizeof(*c));
		snprintf(looked_file, sizeof(looked_file), "%.200s (absent)", file);
	}
	if (src->use_environment) {
		r = load_env(c, errbuf, errbuf_size);
		if (r == 0)
			goto out_ok;
		if (r != -ENOENT)
			goto out_fail;
	}
	snprintf(looked_profile, sizeof(looked_profile), "profile file (not set)");
	if (src->profile_file && *src->profile_file) {
		/* The Alibaba Cloud SDKs' shared file, ~/.alibabacloud/credentials. */
		r = load_file(src->profile_file, c, errbuf, errbuf_size);
		if (r == 0)
			goto out_ok;
		if (r != -ENOENT)
			goto out_fail;
		memset(c, 0, sizeof(*c));
		snprintf(looked_profile, sizeof(looked_profile), "%.200s (absent)",
			 src->profile_file);
	}
	errbuf_printf(errbuf, errbuf_size, "no credentials found: looked in %s, %s, %s, %s", looked_dir,
		looked_file,
		src->use_environment ? "environment (" ENV_ACCESS_KEY_ID " unset)"
				     : "environment (not used)",
		looked_profile);
	r = -ENOENT;
out_fail:
	cred_free(c);
	return r;
out_ok:
	*ret = c;
	return 0;
}

int signer_new(const struct signer_source *src, struct signer **ret, char *errbuf,
	       size_t errbuf_size)
{
	struct signer_cred *c = NULL;
	struct signer *s;
	int r;

	assert(ret);
	r = load_cred(src, &c, errbuf, errbuf_size);
	if (r)
		return r;
	s = xcalloc(1, sizeof(*s));
	r = pthread_mutex_init(&s->lock, NULL);
	if (r) {
		errbuf_printf(errbuf, errbuf_size, "signer: mutex: %s", strerror(r));
		cred_free(c);
		free(s);
		return -r;
	}
	s->cred = c;
	*ret = s;
	return 0;
}

int signer_reload(struct signer *s, const struct signer_source *src, char *errbuf,
		  size_t errbuf_size)
{
	struct signer_cred *c = NULL, *old;
	int r;

	assert(s);
	r = load_cred(src, &c, errbuf, errbuf_size);
	if (r)
		return r;
	pthread_mutex_lock(&s->lock);
	old = s->cred;
	s->cred = c;
	pthread_mutex_unlock(&s->lock);
	cred_free(old);
	return 0;
}

void signer_free(struct signer *s)
{
	if (!s)
		return;
	cred_free(s->cred);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void signer_access_key_id(struct signer *s, char *out, size_t out_size)
{
	if (!out || out_size == 0)
		return;
	pthread_mutex_lock(&s->lock);
	snprintf(out, out_size, "%s", s->cred->access_key_id);
	pthread_mutex_unlock(&s->lock);
}

/* A private copy of the credential, taken under the lock (cred_free it). */
static struct signer_cred *cred_snapshot(struct signer *s)
{
	struct signer_cred *c;

	pthread_mutex_lock(&s->lock);
	c = xmemdup(s->cred, sizeof(*s->cred));
	pthread_mutex_unlock(&s->lock);
	return c;
}

/* ---- whole requests ---- */

static char *header_line(const char *name, const char *value)
{
	size_t name_len = strlen(name), value_len = strlen(value);
	char *line = xmalloc(name_len + 2 + value_len + 1);

	memcpy(line, name, name_len);
	memcpy(line + name_len, ": ", 2);
	memcpy(line + name_len + 2, value, value_len + 1);
	return line;
}

/* "CustSpaceId=...&PhoneNumber=..." as the SDK writes the form (sorted keys). */
static void build_body(const struct cams_key *key, struct buf *b)
{
	size_t space_len = strnlen(key->cust_space_id, sizeof(key->cust_space_id));

	if (space_len) {
		buf_adds(b, "CustSpaceId=");
		signer_form_encode(b, key->cust_space_id, space_len);
		buf_addc(b, '&');
	}
	buf_adds(b, "PhoneNumber=");
	signer_form_encode(b, key->phone, strnlen(key->phone, sizeof(key->phone)));
}

static char **header_lines(const struct signer_kv *h, size_t n, const char *authorization)
{
	char **lines = xcalloc(n + 3, sizeof(*lines));
	size_t i;

	for (i = 0; i < n; i++)
		lines[i] = header_line(h[i].key, h[i].value);
	if (authorization)
		lines[i++] = header_line("Authorization", authorization);
	lines[i] = header_line("user-agent", SIGNER_USER_AGENT);
	return lines;
}

static int request_v3(const struct signer_cred *c, const char *host, const struct cams_key *key,
		      const char *date, const char *nonce, struct signer_request *ret)
{
	struct signer_v3_output out = { { 0 }, NULL, NULL, NULL, { 0 }, NULL };
	struct signer_v3_input in;
	struct signer_kv h[12];
	char content_sha[LIMIT_SHA256_HEX];
	bool sts = c->security_token[0] != '\0';
	struct buf body;
	size_t n = 0;
	int r;

	buf_init(&body, LIMIT_CANONICAL_MAX_BYTES);
	build_body(key, &body);
	r = buf_error(&body);
	if (r)
		goto out_free_body;
	r = hex_sha256(body.data, body.len, content_sha);
	if (r)
		goto out_free_body;

	/* The SDK's order (informational in the vectors); signer_v3 sorts. */
	h[n++] = (struct signer_kv){ "host", host };
	h[n++] = (struct signer_kv){ "x-acs-version", CAMS_API_VERSION };
	h[n++] = (struct signer_kv){ "x-acs-action", CAMS_ACTION };
	h[n++] = (struct signer_kv){ "x-acs-date", date };
	h[n++] = (struct signer_kv){ "x-acs-signature-nonce", nonce };
	h[n++] = (struct signer_kv){ "accept", "application/json" };
	h[n++] = (struct signer_kv){ "content-type", "application/x-www-form-urlencoded" };
	h[n++] = (struct signer_kv){ "x-acs-content-sha256", content_sha };
	h[n++] = (struct signer_kv){ "x-acs-credentials-provider", sts ? "static_sts" : "static_ak" };
	if (sts) {
		h[n++] = (struct signer_kv){ "x-acs-accesskey-id", c->access_key_id };
		h[n++] = (struct signer_kv){ "x-acs-security-token", c->security_token };
	}
	in = (struct signer_v3_input){
		.method = "POST",
		.path = "/",
		.query = NULL,
		.n_query = 0,
		.headers = h,
		.n_headers = n,
		.body = body.data,
		.body_len = body.len,
		.access_key_id = c->access_key_id,
		.access_key_secret = c->access_key_secret,
	};
	r = signer_v3(&in, &out);
	if (r)
		goto out_free_body;

	ret->headers = header_lines(h, n, out.authorization);
	ret->path_and_query = xstrdup("/");
	ret->body = buf_steal(&body, &ret->body_len);
	signer_v3_output_free(&out);
out_free_body:
	buf_free(&body);
	return r;
}

static int request_v1(const struct signer_cred *c, const char *host, const struct cams_key *key,
		      const char *date, const char *nonce, struct signer_request *ret)
{
	struct signer_v1_output out = { NULL, NULL, { 0 } };
	struct signer_kv params[12], h[5];
	bool sts = c->security_token[0] != '\0';
	size_t n_query = 0, n_params, n = 0;
	struct buf body, path;
	int r;

	/* Query parameters in the SDK's wire order; Signature goes last. */
	params[n_query++] = (struct signer_kv){ "Action", CAMS_ACTION };
	params[n_query++] = (struct signer_kv){ "Format", "json" };
	params[n_query++] = (struct signer_kv){ "Version", CAMS_API_VERSION };
	params[n_query++] = (struct signer_kv){ "Timestamp", date };
	params[n_query++] = (struct signer_kv){ "SignatureNonce", nonce };
	if (sts)
		params[n_query++] = (struct signer_kv){ "SecurityToken", c->security_token };
	params[n_query++] = (struct signer_kv){ "SignatureMethod", "HMAC-SHA1" };
	params[n_query++] = (struct signer_kv){ "SignatureVersion", "1.0" };
	params[n_query++] = (struct signer_kv){ "AccessKeyId", c->access_key_id };
	/* The body's parameters are signed too. */
	n_params = n_query;
	if (key->cust_space_id[0])
		params[n_params++] = (struct signer_kv){ "CustSpaceId", key->cust_space_id };
	params[n_params++] = (struct signer_kv){ "PhoneNumber", key->phone };

	r = signer_v1("POST", params, n_params, c->access_key_secret, &out);
	if (r)
		return r;

	buf_init(&body, LIMIT_CANONICAL_MAX_BYTES);
	buf_init(&path, SIGNER_TEXT_MAX);
	build_body(key, &body);
	buf_adds(&path, "/?");
	for (size_t i = 0; i < n_query; i++) {
		signer_percent_encode(&path, params[i].key, strlen(params[i].key));
		buf_addc(&path, '=');
		signer_percent_encode(&path, params[i].value, strlen(params[i].value));
		buf_addc(&path, '&');
	}
	buf_adds(&path, "Signature=");
	signer_percent_encode(&path, out.signature, strlen(out.signature));
	r = buf_error(&body) ? buf_error(&body) : buf_error(&path);
	if (r)
		goto out_free;

	h[n++] = (struct signer_kv){ "host", host };
	h[n++] = (struct signer_kv){ "x-acs-version", CAMS_API_VERSION };
	h[n++] = (struct signer_kv){ "x-acs-action", CAMS_ACTION };
	h[n++] = (struct signer_kv){ "content-type", "application/x-www-form-urlencoded" };
	h[n++] = (struct signer_kv){ "x-acs-credentials-provider", sts ? "static_sts" : "static_ak" };
	for (size_t i = 0; i < n; i++) {
		if (!header_value_ok(span_cstr(h[i].value))) {
			r = -EINVAL;
			goto out_free;
		}
	}
	ret->headers = header_lines(h, n, NULL);
	ret->path_and_query = buf_steal(&path, NULL);
	ret->body = buf_steal(&body, &ret->body_len);
out_free:
	buf_free_wipe(&path);
	buf_free(&body);
	signer_v1_output_free(&out);
	return r;
}

int signer_sign_request(struct signer *s, enum signer_kind kind, const char *host_header,
			const struct cams_key *key, time_t now_wall_s, const char *nonce,
			struct signer_request *ret)
{
	struct signer_request req = { NULL, NULL, 0, NULL };
	struct signer_cred *c;
	char date[64], nonce_hex[33];
	struct tm tm;
	int r;

	assert(s && host_header && key && ret);
	if (!key->phone[0] || !*host_header || (nonce && !*nonce))
		return -EINVAL;
	if (!gmtime_r(&now_wall_s, &tm) ||
	    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return -EINVAL;
	if (!nonce) {
		unsigned char raw[16];

		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return -EIO;
		hex_encode_lower(raw, sizeof(raw), nonce_hex);
		nonce = nonce_hex;
	}

	c = cred_snapshot(s);
	if (kind == SIGNER_V3)
		r = request_v3(c, host_header, key, date, nonce, &req);
	else if (kind == SIGNER_V1)
		r = request_v1(c, host_header, key, date, nonce, &req);
	else
		r = -EINVAL;
	cred_free(c);
	if (r == 0)
		*ret = req;
	return r;
}

void signer_request_free(struct signer_request *r)
{
	if (!r)
		return;
	free_wipe_str(r->path_and_query);
	free(r->body);
	if (r->headers) {
		for (size_t i = 0; r->headers[i]; i++)
			free_wipe_str(r->headers[i]);
		free(r->headers);
	}
	r->path_and_query = NULL;
	r->body = NULL;
	r->body_len = 0;
	r->headers = NULL;
}

