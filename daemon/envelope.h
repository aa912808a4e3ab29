/*
 * envelope.h -- the CAMS JSON envelope, both ways: parse what the upstream
 * answers (cJSON, copied out into a struct, tree freed before returning) and
 * render what callers receive ({"RequestId","Code","Message","Data":{...}}).
 * A key is accepted only if OpenSSL parses its PEM as a public key; its
 * fingerprint (SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex) is
 * the ETag.
 *
 * It is also the one home of upstream semantics: envelope_classify() says
 * what an upstream answer means (its class), which HTTP status callers get
 * for it, and which series of camskeyd_upstream_calls_total counts it. The
 * engine and the metrics follow it; no other file compares Code strings.
 * Pure: never logs, no clocks. Threads: any.
 */
#ifndef CAMSKEYD_ENVELOPE_H
#define CAMSKEYD_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "bounds.h"

struct envelope_reply {
	char request_id[LIMIT_REQUEST_ID_MAX + 1];
	char code[LIMIT_CODE_MAX + 1];        /* "OK" or the error code */
	char message[LIMIT_MESSAGE_MAX + 1];
	/* Only when code is "OK": */
	char phone[LIMIT_PHONE_MAX_DIGITS + 1];
	char status[LIMIT_STATUS_MAX + 1];    /* EncryptionPublicKeyStatus */
	char *pem;                            /* owned; NULL unless OK */
	char fingerprint[LIMIT_SHA256_HEX];   /* of the PEM's DER */
};

/*
 * Parse an upstream body. 0: a well-formed envelope (Code may be an error
 * code; for "OK" Data, a valid PEM and a status are guaranteed).
 * -EBADMSG: not JSON, wrong shape, missing fields, over-long fields or a key
 * OpenSSL rejects; the reason (no secrets, no key material) in errbuf.
 * Free with envelope_reply_free().
 */
int envelope_parse(const char *body, size_t len, struct envelope_reply *ret, char *errbuf,
		   size_t errbuf_size);
void envelope_reply_free(struct envelope_reply *r);

/* Fingerprint of a PEM public key. 0 or -EBADMSG. */
int envelope_pem_fingerprint(const char *pem, size_t len, char ret_hex[LIMIT_SHA256_HEX]);

/*
 * What an upstream envelope means, and what the daemon does with it.
 */
enum envelope_class {
	/* Code "OK" with a key: stored for ttl / status-ttl, answered 200. */
	ENVELOPE_OK,
	/*
	 * System.LimitControl, at any HTTP status: the account's quota is
	 * spent. The limiter halves its rate; the call is retried re-signed
	 * while its callers can wait, else 503 + Retry-After with the Code.
	 */
	ENVELOPE_THROTTLED,
	/*
	 * An answer about the number or the account, not about this moment:
	 * Product.Unsubscript and Ram.PermissionDeny (403),
	 * Unknown.ResourceOwnerId (404). Cached as a negative entry for
	 * negative-ttl and answered with the Code passed through.
	 */
	ENVELOPE_DEFINITIVE,
	/*
	 * The upstream refused the daemon's own request: signature, AccessKey,
	 * clock or STS token (SignatureDoesNotMatch, IncompleteSignature,
	 * InvalidAccessKeyId.*, InvalidTimeStamp.*, InvalidSecurityToken.*,
	 * MissingSecurityToken, MissingParameter, Forbidden.AccessKeyDisabled,
	 * ...). The operator's problem, not the caller's: 502 with the Code
	 * passed through, logged as an error, never cached.
	 */
	ENVELOPE_CREDENTIAL,
	/*
	 * SignatureNonceUsed: our request arrived twice (libcurl re-sent it
	 * after a reused connection died before the answer). 502
	 * Proxy.UpstreamError; not retried, the upstream counted both.
	 */
	ENVELOPE_NONCE_REUSED,
	/*
	 * An envelope with HTTP status >= 500 (InternalError,
	 * ServiceUnavailable, ...), whatever its Code but System.LimitControl:
	 * the upstream failed. 502 Proxy.UpstreamError whose Message names the
	 * upstream Code and RequestId; never cached, a stale entry may serve.
	 */
	ENVELOPE_SERVER_ERROR,
	/* Any other Code: 502 with the Code passed through, never cached. */
	ENVELOPE_OTHER,
};

/*
 * How an upstream call ended, as camskeyd_upstream_calls_total{code=...}
 * counts it: the answers envelope_classify() sorts, plus the calls that
 * brought no envelope (HTTP_ERROR also counts unparsable answers).
 */
enum envelope_outcome {
	ENVELOPE_OUTCOME_OK = 0,
	ENVELOPE_OUTCOME_LIMIT_CONTROL,
	ENVELOPE_OUTCOME_UNSUBSCRIPT,
	ENVELOPE_OUTCOME_PERMISSION_DENY,
	ENVELOPE_OUTCOME_RESOURCE_OWNER,
	ENVELOPE_OUTCOME_AUTH,          /* credential classes, nonce reuse included */
	ENVELOPE_OUTCOME_OTHER_CODE,
	ENVELOPE_OUTCOME_HTTP_ERROR,    /* a 5xx, with or without envelope, or an unparsable answer */
	ENVELOPE_OUTCOME_TIMEOUT,
	ENVELOPE_OUTCOME_NETWORK,
	ENVELOPE_OUTCOME_COUNT,
};

/*
 * Classify an upstream answer that parsed as an envelope: its HTTP status
 * and Code (NULL is treated as ""). Writes the HTTP status callers get for
 * it (200, 403, 404, 502 or 503) to *ret_answer_status and its metric
 * series to *ret_outcome; either may be NULL. Never fails.
 */
enum envelope_class envelope_classify(long http_status, const char *code, int *ret_answer_status,
				      enum envelope_outcome *ret_outcome);

/* The label value of an outcome ("OK", "auth_error", "timeout", ...); never NULL. */
const char *envelope_outcome_label(enum envelope_outcome outcome);

/* Render a success envelope into out (JSON-escaped). */
void envelope_render_ok(struct buf *out, const char *request_id, const char *message,
			const char *phone, const char *pem, const char *status);
/* Render an error envelope {"RequestId","Code","Message"}. */
void envelope_render_error(struct buf *out, const char *request_id, const char *code,
			   const char *message);
/* Append s as a JSON string literal with quotes. */
void envelope_json_string(struct buf *out, const char *s);

#endif
