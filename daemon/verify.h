/*
 * verify.h -- verifying requests signed by the official Alibaba Cloud SDKs.
 *
 * The drop-in endpoint (POST / and GET /) receives requests an SDK signed
 * with a key pair camskeyd issued to a team. verify_request() checks the
 * V3 (ACS3-HMAC-SHA256, Authorization header) or RPC V1 (HMAC-SHA1,
 * SignatureVersion=1.0, Signature parameter) signature, the timestamp
 * window and the nonce, and hands back who signed and what they asked for
 * (action, version, PhoneNumber, CustSpaceId), or the Alibaba error code
 * and HTTP status an SDK understands (table in verify.c and below).
 *
 * Pure: no I/O, no clocks (now is an argument), never logs. The secret is
 * fetched through a callback into a buffer of verify_request()'s own and
 * wiped before it returns. Threads: verify_request() from any thread; a
 * struct verify_nonces is internally locked.
 */
#ifndef CAMSKEYD_VERIFY_H
#define CAMSKEYD_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

/* How far a request's time may be from ours, either way (Alibaba: 15 min). */
#define VERIFY_MAX_SKEW_S 900
/*
 * How long a nonce is remembered: a request is accepted while its own time
 * is within VERIFY_MAX_SKEW_S of now, and its time may be up to that far
 * ahead, so a nonce seen at now must be refused until now + 2 * skew.
 */
#define VERIFY_NONCE_TTL_S (2 * VERIFY_MAX_SKEW_S + 1)
/*
 * A sensible capacity for verify_nonces_new(): 48 bytes each, 12 MiB; it
 * takes 145 signed requests per second, sustained for the whole 30-minute
 * memory, to fill it.
 */
#define VERIFY_NONCES_DEFAULT_CAPACITY 262144
/* PhoneNumber / CustSpaceId as copied out; longer is InvalidParameter.*. */
#define VERIFY_PARAM_MAX 128
/* Action and Version as copied out; longer is refused as not ours. */
#define VERIFY_NAME_MAX 64

/* One name/value pair, with lengths (values may hold %00-decoded NULs). */
struct verify_pair {
	const char *name;
	size_t name_len;
	const char *value; /* NULL: no value ("?flag"), treated as "" */
	size_t value_len;
};

/*
 * The lookup of a team's secret: copy the secret of access_key_id (len
 * bytes, not NUL-terminated) into ret_secret (cap bytes, NUL-terminated)
 * and its client id into *ret_client_id. 0 found, -ENOENT unknown, -E2BIG
 * the secret does not fit. Called at most once per verify_request(), from
 * its thread.
 */
typedef int (*verify_find_secret_fn)(void *cls, const char *access_key_id, size_t len,
				     char *ret_secret, size_t cap, unsigned *ret_client_id);

struct verify_input {
	const char *method;                /* "POST" / "GET", as received */
	const char *path;                  /* "/" */
	const struct verify_pair *query;   /* decoded query parameters */
	size_t n_query;
	const struct verify_pair *headers; /* request headers, any case */
	size_t n_headers;
	const char *body;                  /* raw body bytes (de-chunked) */
	size_t body_len;
	int64_t now_wall_s;                /* seconds since the epoch */
	verify_find_secret_fn find_secret;
	void *find_secret_cls;
	struct verify_nonces *nonces;      /* NULL: no replay check (tests) */
	bool any_action;                   /* false: refuse every action but
	                                      GetPhoneEncryptionPublicKey
	                                      2020-06-06 (InvalidAction.NotFound) */
};

enum verify_scheme {
	VERIFY_V1 = 1, /* RPC HMAC-SHA1 */
	VERIFY_V3 = 3, /* ACS3-HMAC-SHA256 */
};

struct verify_result {
	enum verify_scheme scheme;
	unsigned client_id; /* from find_secret */
	char access_key_id[LIMIT_ACCESS_KEY_ID_MAX + 1];
	char action[VERIFY_NAME_MAX + 1];
	char version[VERIFY_NAME_MAX + 1];
	/* Decoded from the query and/or the form body; lengths count NULs. */
	char phone_number[VERIFY_PARAM_MAX + 1];
	size_t phone_number_len;
	bool has_cust_space_id;
	char cust_space_id[VERIFY_PARAM_MAX + 1];
	size_t cust_space_id_len;
};

/* A refusal as the SDKs expect it: HTTP status, Alibaba code, message. */
struct verify_error {
	int http_status;          /* 400, 404 or 503 */
	const char *code;         /* static: "SignatureDoesNotMatch", ... */
	char message[LIMIT_MESSAGE_MAX]; /* one line, never a secret */
};

/*
 * Verify one request. 0: authentic, fresh, nonce recorded, *ret filled.
 * -EACCES: refused, *ret_err filled, *ret untouched. -EINVAL: bad
 * arguments (our bug). Codes (HTTP status):
 *   IncompleteSignature (400)     Authorization lacks Credential=,
 *                                 SignedHeaders= or Signature=, or the
 *                                 signed headers lack a mandatory one, or
 *                                 list one twice or in upper case
 *   MissingParameter (400)        AccessKeyId, Signature, SignatureNonce,
 *                                 Timestamp, Action, Version, SignatureMethod,
 *                                 SignatureVersion, PhoneNumber (named)
 *   InvalidAccessKeyId.NotFound (404)  find_secret does not know the key
 *   SignatureDoesNotMatch (400)   wrong signature, or x-acs-content-sha256
 *                                 not the SHA-256 of the body
 *   InvalidTimeStamp.Format (400) x-acs-date / Timestamp not
 *                                 YYYY-MM-DDTHH:MM:SSZ
 *   InvalidTimeStamp.Expired (400) more than VERIFY_MAX_SKEW_S from now
 *   SignatureNonceUsed (400)      nonce already used by this AccessKey
 *   InvalidParameter (400)        a parameter or signed header given twice
 *   InvalidParameter.PhoneNumber / .CustSpaceId (400)  longer than
 *                                 VERIFY_PARAM_MAX
 *   InvalidAction.NotFound (404)  (authenticated) another action/version
 *   Proxy.UnsupportedSecurityToken (400)    an STS token was sent
 *   Proxy.UnsupportedSignatureAlgorithm (400)  ACS3-HMAC-SM3, RSA, a
 *                                 SignatureMethod other than HMAC-SHA1, a
 *                                 SignatureVersion other than 1.0, bearer
 *   Proxy.NonceCacheFull (503)    the nonce memory is full of live nonces
 *   Proxy.RequestTooLarge (400)   more pairs or bytes than the bounds
 * Checks run in a fixed order (scheme, shape, token, time, key, body hash,
 * signature, nonce, action, parameters); only the signature compare
 * touches the secret and it is constant-time. Never logs.
 */
int verify_request(const struct verify_input *in, struct verify_result *ret,
		   struct verify_error *ret_err);

/* ---- the nonce memory ---- */

struct verify_nonces;

/*
 * A memory of at most capacity (1..2^24) (AccessKey ID, nonce) pairs, each
 * kept VERIFY_NONCE_TTL_S. When every slot holds a live nonce a new one is
 * refused (Proxy.NonceCacheFull) rather than an old one forgotten early,
 * which would reopen a replay window. Free with verify_nonces_free().
 * NULL on a bad capacity. Never logs. Threads: any (one mutex).
 */
struct verify_nonces *verify_nonces_new(size_t capacity);
void verify_nonces_free(struct verify_nonces *n); /* NULL ok */

/*
 * Record (key_id, nonce) seen at now_wall_s. 0 recorded, -EEXIST already
 * recorded and not yet expired, -ENOSPC full of live nonces. Expired
 * entries are dropped as a side effect.
 */
int verify_nonces_add(struct verify_nonces *n, const char *key_id, size_t key_id_len,
		      const char *nonce, size_t nonce_len, int64_t now_wall_s);
/* Live entries (after dropping those expired at now_wall_s). */
size_t verify_nonces_count(struct verify_nonces *n, int64_t now_wall_s);

/* Parse "YYYY-MM-DDTHH:MM:SSZ" (UTC) into seconds. 0 or -EINVAL. */
int verify_parse_time(const char *s, size_t len, int64_t *ret_wall_s);

#endif
