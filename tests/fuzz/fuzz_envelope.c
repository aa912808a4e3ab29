/*
 * fuzz_envelope.c -- fuzz target for what the upstream sends: the JSON
 * envelope parser and PEM check (envelope.c) and the rate-limit header
 * parser (upstream_parse_ratelimit in upstream.c).
 *
 * Input: the raw bytes, given to each parser with their exact length and no
 * NUL after them (libFuzzer's buffer, or replay.c's exact-size copy), as a
 * libcurl body or header value would arrive.
 *
 * Invariants checked: envelope_parse() returns 0 or -EBADMSG with a reason;
 * a parsed envelope has a non-empty Code, and for "OK" a PEM, a 64-hex
 * fingerprint equal to envelope_pem_fingerprint() of that PEM and a status
 * of [A-Z_]; rendering the parsed fields again (envelope_render_ok or
 * envelope_render_error) and parsing that gives the same fields. The
 * rate-limit parser gives -1 or a non-negative number per field.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "envelope.h"
#include "fuzz.h"
#include "upstream.h"

/* Enough for any envelope whose fields fit (every byte escaped as \u00XX). */
#define FUZZ_RENDER_MAX_BYTES (256 * 1024)

static bool is_hex64(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return i == 64;
}

static bool is_status(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		if (!((s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_'))
			return false;
	}
	return i >= 1 && i <= LIMIT_STATUS_MAX;
}

/* Every fixed-size field holds a NUL. */
static void check_terminated(const struct envelope_reply *r)
{
	FUZZ_ASSERT(memchr(r->request_id, '\0', sizeof(r->request_id)) != NULL);
	FUZZ_ASSERT(memchr(r->code, '\0', sizeof(r->code)) != NULL);
	FUZZ_ASSERT(memchr(r->message, '\0', sizeof(r->message)) != NULL);
	FUZZ_ASSERT(memchr(r->phone, '\0', sizeof(r->phone)) != NULL);
	FUZZ_ASSERT(memchr(r->status, '\0', sizeof(r->status)) != NULL);
	FUZZ_ASSERT(memchr(r->fingerprint, '\0', sizeof(r->fingerprint)) != NULL);
}

/* Render r as the daemon would, parse it again and compare. */
static void check_round_trip(const struct envelope_reply *r, bool ok)
{
	struct envelope_reply again;
	char why[256] = "";
	struct buf out;
	int k;

	buf_init(&out, FUZZ_RENDER_MAX_BYTES);
	if (ok)
		envelope_render_ok(&out, r->request_id, r->message, r->phone, r->pem, r->status);
	else
		envelope_render_error(&out, r->request_id, r->code, r->message);
	FUZZ_ASSERT(buf_error(&out) == 0);

	memset(&again, 0, sizeof(again));
	k = envelope_parse(out.data, out.len, &again, why, sizeof(why));
	if (k != 0)
		fprintf(stderr, "re-rendered envelope refused: %s\n%s\n", why, buf_str(&out));
	FUZZ_ASSERT(k == 0);
	FUZZ_ASSERT(strcmp(again.request_id, r->request_id) == 0);
	FUZZ_ASSERT(strcmp(again.code, r->code) == 0);
	FUZZ_ASSERT(strcmp(again.message, r->message) == 0);
	if (ok) {
		FUZZ_ASSERT(strcmp(again.phone, r->phone) == 0);
		FUZZ_ASSERT(strcmp(again.status, r->status) == 0);
		FUZZ_ASSERT(again.pem && strcmp(again.pem, r->pem) == 0);
		FUZZ_ASSERT(strcmp(again.fingerprint, r->fingerprint) == 0);
	} else {
		FUZZ_ASSERT(again.pem == NULL);
	}
	envelope_reply_free(&again);
	buf_free(&out);
}

static void fuzz_envelope(const char *body, size_t len)
{
	struct envelope_reply r;
	char why[256] = "";
	char fp[LIMIT_SHA256_HEX];
	int k;

	memset(&r, 0, sizeof(r));
	k = envelope_parse(body, len, &r, why, sizeof(why));
	FUZZ_ASSERT(k == 0 || k == -EBADMSG);
	FUZZ_ASSERT(memchr(why, '\0', sizeof(why)) != NULL);
	if (k < 0) {
		FUZZ_ASSERT(why[0] != '\0');
		FUZZ_ASSERT(r.pem == NULL);
		return;
	}
	check_terminated(&r);
	FUZZ_ASSERT(r.code[0] != '\0');
	if (strcmp(r.code, "OK") == 0) {
		FUZZ_ASSERT(r.pem != NULL);
		FUZZ_ASSERT(strlen(r.pem) <= LIMIT_PEM_MAX_BYTES);
		FUZZ_ASSERT(is_hex64(r.fingerprint));
		FUZZ_ASSERT(is_status(r.status));
		FUZZ_ASSERT(envelope_pem_fingerprint(r.pem, strlen(r.pem), fp) == 0);
		FUZZ_ASSERT(strcmp(fp, r.fingerprint) == 0);
		check_round_trip(&r, true);
	} else {
		FUZZ_ASSERT(r.pem == NULL);
		check_round_trip(&r, false);
	}
	envelope_reply_free(&r);
	FUZZ_ASSERT(r.pem == NULL);
}

/* The bytes as a bare PEM, as the cache would re-check a stored key. */
static void fuzz_pem(const char *pem, size_t len)
{
	char fp[LIMIT_SHA256_HEX];
	int k;

	k = envelope_pem_fingerprint(pem, len, fp);
	FUZZ_ASSERT(k == 0 || k == -EBADMSG);
	if (k == 0)
		FUZZ_ASSERT(is_hex64(fp));
}

static void fuzz_ratelimit(const char *value, size_t len)
{
	int64_t remain = -2, time_left_ms = -2;
	int k;

	k = upstream_parse_ratelimit(value, len, &remain, &time_left_ms);
	FUZZ_ASSERT(k == 0 || k == -EINVAL);
	if (k == 0) {
		FUZZ_ASSERT(remain >= -1);
		FUZZ_ASSERT(time_left_ms >= -1);
		FUZZ_ASSERT(remain >= 0 || time_left_ms >= 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_envelope((const char *)data, size);
	fuzz_pem((const char *)data, size);
	fuzz_ratelimit((const char *)data, size);
	return 0;
}
