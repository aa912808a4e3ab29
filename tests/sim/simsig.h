/*
 * simsig.h -- the simulator's own verifier of Alibaba Cloud signatures:
 * V3 ACS3-HMAC-SHA256 and RPC V1 HMAC-SHA1, written from Alibaba's
 * signature documentation with OpenSSL's HMAC()/EVP_Digest() directly.
 *
 * It is an independent oracle: it shares no code with daemon/signer.c, so
 * a canonicalisation bug in the daemon makes the simulator answer
 * SignatureDoesNotMatch instead of agreeing with it. `camsim --self-test`
 * checks it against the official SDK's vectors and Alibaba's documented
 * examples (tests/data/vectors/).
 *
 * The verifier follows the request's own SignedHeaders list (the official
 * Python SDK signs user-agent and accept too), requires the mandatory
 * ones, and takes the time as an argument. Pure: no lock, no shared state,
 * never logs; from any thread.
 */
#ifndef CAMSIM_SIMSIG_H
#define CAMSIM_SIMSIG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "simutil.h"

#define SIMSIG_PARAMS_MAX 64
#define SIMSIG_SIGNED_HEADERS_MAX 32
#define SIMSIG_HEADER_NAME_MAX 64
#define SIMSIG_ACCESS_KEY_ID_MAX 128
#define SIMSIG_REPLAY_WINDOW_S 900 /* timestamp skew allowed */
#define SIMSIG_CANONICAL_MAX (1024 * 1024)
#define SIMSIG_V3_PREFIX "ACS3-HMAC-SHA256 "

/* One decoded parameter; key and value are NUL-terminated and owned. */
struct sim_param {
	char *key;
	size_t key_len;
	char *value;
	size_t value_len;
};

struct params {
	struct sim_param kv[SIMSIG_PARAMS_MAX];
	size_t n;
	bool overflow; /* more than SIMSIG_PARAMS_MAX were offered */
};

void params_free(struct params *p);
/* Add every k=v of a query or form string, form-decoded. */
void params_parse(struct params *p, const char *s, size_t len);
/* Add a copy of one parameter (raw, not decoded). */
void params_add(struct params *p, const char *key, size_t key_len, const char *value,
		size_t value_len);
void params_append(struct params *dst, const struct params *src);
/* The first value of key, or NULL. ret_len may be NULL. */
const char *params_get_n(const struct params *p, const char *key, size_t *ret_len);
const char *params_get(const struct params *p, const char *key);

/* A rejection: HTTP status, Code and Message as the upstream sends them. */
struct verdict {
	unsigned http_status;
	const char *code;
	char message[256];
};

/* Fill v and return false (so a check can `return simsig_reject(...)`). */
bool simsig_reject(struct verdict *v, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* "YYYY-MM-DDTHH:MM:SSZ" (optional ".fraction") as UTC; 0 or -EINVAL. */
int simsig_parse_iso8601(const char *s, time_t *ret);

/* RFC 3986 percent-encoding, upper-case hex; A-Z a-z 0-9 - _ . ~ kept. */
void simsig_percent_encode(struct sbuf *out, const char *s, size_t len);

/* What a V3 verification sees of a request. */
struct v3_request {
	const char *method;
	const struct params *query;       /* decoded query parameters */
	/* Header value by lower-case name (case-insensitive lookup), or NULL. */
	const char *(*header)(void *ctx, const char *name);
	void *header_ctx;
	const char *body;
	size_t body_len;
};

/* The intermediate strings, for the self-test's comparison and diagnostics. */
struct v3_trace {
	char credential[SIMSIG_ACCESS_KEY_ID_MAX + 1];
	char signed_headers[1024];          /* as the request listed them */
	char hashed_payload[65];            /* SHA-256 of the body */
	struct sbuf canonical_request;
	struct sbuf string_to_sign;
	char signature[65];                 /* what the secret gives */
};

struct v1_trace {
	struct sbuf canonicalized_query_string;
	struct sbuf string_to_sign;
	char signature[64];                 /* base64 of what the secret gives */
};

void v3_trace_init(struct v3_trace *t);
void v3_trace_free(struct v3_trace *t);
void v1_trace_init(struct v1_trace *t);
void v1_trace_free(struct v1_trace *t);

/*
 * Authenticate a V3 request whose Authorization header is authz (it starts
 * with SIMSIG_V3_PREFIX): its shape, the AccessKey ID (must be key_id),
 * SignedHeaders (lower-case, each header present, the mandatory ones
 * included), x-acs-date within SIMSIG_REPLAY_WINDOW_S of now_s, the
 * signature under secret, x-acs-content-sha256 against the body, and
 * x-acs-security-token signed when sent. true, or false with v filled
 * (IncompleteSignature, InvalidAccessKeyId.NotFound, SignatureDoesNotMatch,
 * InvalidTimeStamp.Expired). trace (may be NULL) receives the intermediate
 * strings as far as they were computed.
 */
bool simsig_v3_verify(const struct v3_request *rq, const char *authz, const char *key_id,
		      const char *secret, time_t now_s, struct verdict *v, struct v3_trace *trace);

/*
 * Authenticate an RPC V1 request with every parameter (query and form) in
 * all: AccessKeyId (must be key_id), SignatureMethod HMAC-SHA1,
 * SignatureVersion 1.0, Timestamp within the window of now_s, and
 * Signature over every other parameter under secret. true, or false with v
 * filled. trace may be NULL.
 */
bool simsig_v1_verify(const char *method, const struct params *all, const char *key_id,
		      const char *secret, time_t now_s, struct verdict *v, struct v1_trace *trace);

#endif
