/*
 * envelope.h -- the CAMS JSON envelope, both ways: parse what the upstream
 * answers (cJSON, copied out into a struct, tree freed before returning) and
 * render what callers receive ({"RequestId","Code","Message","Data":{...}}).
 * A key is accepted only if OpenSSL parses its PEM as a public key; its
 * fingerprint (SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex) is
 * the ETag.
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

/* Render a success envelope into out (JSON-escaped). */
void envelope_render_ok(struct buf *out, const char *request_id, const char *message,
			const char *phone, const char *pem, const char *status);
/* Render an error envelope {"RequestId","Code","Message"}. */
void envelope_render_error(struct buf *out, const char *request_id, const char *code,
			   const char *message);
/* Append s as a JSON string literal with quotes. */
void envelope_json_string(struct buf *out, const char *s);

#endif
