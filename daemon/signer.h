/*
 * signer.h -- Alibaba Cloud request signing and the credential it uses.
 *
 * The only module that sees the AccessKey secret and STS token: it loads
 * them (environment, a private file, or $CREDENTIALS_DIRECTORY), never
 * returns or logs them, and wipes them on fini. Two kinds of signature:
 *   V3  ACS3-HMAC-SHA256 (Authorization header; the default of current SDKs)
 *   V1  RPC HMAC-SHA1 (SignatureVersion=1.0, Signature parameter)
 * The pure functions (signer_v3, signer_v1, signer_percent_encode,
 * signer_form_encode) take every input, time and nonce included, so the
 * official SDK's vectors test them byte for byte.
 * Never logs. Threads: the pure functions from any thread; a struct signer
 * is used by one thread at a time except signer_reload() (internally locked).
 */
#ifndef CAMSKEYD_SIGNER_H
#define CAMSKEYD_SIGNER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "cams.h"

enum signer_kind {
	SIGNER_V3 = 3, /* ACS3-HMAC-SHA256 */
	SIGNER_V1 = 1, /* RPC HMAC-SHA1 */
};

struct signer_kv {
	const char *key;
	const char *value;
};

/* ---- pure signing functions (vector-tested) ---- */

/* RFC 3986 percent-encoding, upper-case hex; keeps A-Z a-z 0-9 - _ . ~ */
void signer_percent_encode(struct buf *out, const char *s, size_t len);
/*
 * Form (x-www-form-urlencoded) encoding as the official SDK writes bodies:
 * like percent-encoding but also keeps ! ' ( ) * (space is %20).
 */
void signer_form_encode(struct buf *out, const char *s, size_t len);

struct signer_v3_input {
	const char *method;            /* "POST" / "GET" */
	const char *path;              /* "/" */
	const struct signer_kv *query; /* any order */
	size_t n_query;
	const struct signer_kv *headers; /* any order, any case; only host,
	                                    content-type and x-acs-* are signed */
	size_t n_headers;
	const char *body;
	size_t body_len;
	const char *access_key_id;
	const char *access_key_secret;
};

struct signer_v3_output {
	char hashed_payload[65];
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers;
	char signature[65];
	char *authorization;
};

/* 0, or -E2BIG / -EINVAL. Free the output with signer_v3_output_free(). */
int signer_v3(const struct signer_v3_input *in, struct signer_v3_output *ret);
void signer_v3_output_free(struct signer_v3_output *out);

struct signer_v1_output {
	char *canonicalized_query_string;
	char *string_to_sign;
	char signature[64]; /* base64 of HMAC-SHA1 */
};

/* params: every signed parameter except Signature. 0 or -E2BIG / -EINVAL. */
int signer_v1(const char *method, const struct signer_kv *params, size_t n_params,
	      const char *access_key_secret, struct signer_v1_output *ret);
void signer_v1_output_free(struct signer_v1_output *out);

/* ---- the credential and whole requests ---- */

struct signer_source {
	const char *credentials_file; /* may be NULL: INI with access_key_id=,
	                                 access_key_secret=, security_token= */
	const char *credentials_dir;  /* $CREDENTIALS_DIRECTORY or NULL: files
	                                 access_key_id, access_key_secret,
	                                 security_token (optional) */
	int use_environment;          /* read ALIBABA_CLOUD_* variables */
	const char *profile_file;     /* last resort, may be NULL: the SDKs' shared
	                                 file (~/.alibabacloud/credentials), profile
	                                 [default] or $ALIBABA_CLOUD_PROFILE */
};

struct signer;

/*
 * Load the credential (first found: credentials_dir, credentials_file,
 * environment, profile_file). A file readable by group or others is refused.
 * 0, or -ENOENT (none found), -EPERM (file too open), -EINVAL (malformed),
 * with a one-line reason (never containing a secret) in errbuf.
 */
int signer_new(const struct signer_source *src, struct signer **ret,
	       char *errbuf, size_t errbuf_size);
/* Reload the credential; on failure the old one stays. Same returns. */
int signer_reload(struct signer *s, const struct signer_source *src,
		  char *errbuf, size_t errbuf_size);
/* Wipe and free. NULL ok. */
void signer_free(struct signer *s);
/* The AccessKey ID (not secret; safe to log) into out. */
void signer_access_key_id(struct signer *s, char *out, size_t out_size);

/* A whole signed request, ready for libcurl. */
struct signer_request {
	char *path_and_query;  /* "/" or "/?Action=...&Signature=..." */
	char *body;            /* form body */
	size_t body_len;
	char **headers;        /* "Name: value" lines, NULL-terminated */
};

/*
 * Build and sign POST / for GetPhoneEncryptionPublicKey, exactly as the
 * official SDK sends it. host_header is the Host value ("cams....com" or
 * "127.0.0.1:8123"); now_wall_s the wall clock (seconds since the epoch);
 * nonce a fresh value or NULL to draw 16 random bytes as hex.
 * 0, or -E2BIG / -EIO (no randomness). Free with signer_request_free().
 */
int signer_sign_request(struct signer *s, enum signer_kind kind, const char *host_header,
			const struct cams_key *key, time_t now_wall_s, const char *nonce,
			struct signer_request *ret);
void signer_request_free(struct signer_request *r);

/*
 * Read a secret file whole, under the credential file's rules (also for
 * the teams' key pairs and the Redis password): a regular file that
 * neither group nor others may read or write, at most max_bytes. 0 with
 * *ret_data (NUL-terminated; free with signer_free_private_file, which
 * wipes it), -ENOENT (absent), -EPERM (too open), -EINVAL (not a regular
 * file, larger than max_bytes) or -errno, with errbuf set (naming the
 * file, never its content) except for -ENOENT. Never logs.
 */
int signer_read_private_file(const char *path, size_t max_bytes, char **ret_data,
			     size_t *ret_len, char *errbuf, size_t errbuf_size);
/* Wipe and free what signer_read_private_file returned. NULL ok. */
void signer_free_private_file(char *data, size_t max_bytes);

#endif
