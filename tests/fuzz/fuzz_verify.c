/*
 * fuzz_verify.c -- libFuzzer target for verify.c (verify_request()).
 *
 * Input: one flag byte (low 5 bits: how many of the leading pairs are query
 * parameters, the rest are headers), then METHOD \0 BODY \0 NAME \0 VALUE
 * \0 NAME \0 VALUE ... The clock is fixed at 2025-01-15T08:00:00Z and
 * find_secret knows the vectors' AccessKey, so the seeds made from
 * tests/data/vectors/signature-vectors.json verify and mutations of them
 * walk every refusal.
 *
 * Invariants: the return is 0 or -EACCES; a refusal has a code, a status
 * of 400, 404 or 503 and a NUL-terminated message that never holds the
 * secret (unless the input itself does: messages may quote it); an
 * acceptance names the known AccessKey and client, a scheme and bounded
 * parameters; an accepted request sent again with the same
 * nonce memory is refused as SignatureNonceUsed (replay), and verifying
 * without any nonce memory gives the same answer as the first time.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "verify.h"

#define FUZZ_KEY_ID "LTAI5tVectorExample01"
#define FUZZ_KEY_SECRET "VectorExampleSecret0123456789AB"
#define FUZZ_NOW 1736928000 /* 2025-01-15T08:00:00Z */
#define FUZZ_CLIENT 42

static int find_secret(void *cls, const char *id, size_t len, char *ret_secret, size_t cap,
		       unsigned *ret_client_id)
{
	(void)cls;
	if (len != strlen(FUZZ_KEY_ID) || memcmp(id, FUZZ_KEY_ID, len) != 0)
		return -ENOENT;
	if (cap < sizeof(FUZZ_KEY_SECRET))
		return -E2BIG;
	memcpy(ret_secret, FUZZ_KEY_SECRET, sizeof(FUZZ_KEY_SECRET));
	*ret_client_id = FUZZ_CLIENT;
	return 0;
}

/* input_has_secret: the message may echo input, so only then may it hold it. */
static void check_refusal(const struct verify_error *e, bool input_has_secret)
{
	FUZZ_ASSERT(e->code && *e->code);
	FUZZ_ASSERT(e->http_status == 400 || e->http_status == 404 || e->http_status == 503);
	FUZZ_ASSERT(memchr(e->message, '\0', sizeof(e->message)) != NULL);
	FUZZ_ASSERT(input_has_secret || strstr(e->message, FUZZ_KEY_SECRET) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verify_pair pairs[FUZZ_MAX_PARTS / 2];
	struct verify_nonces *nonces;
	struct verify_result r, r2;
	struct verify_error e, e2;
	struct verify_input in;
	struct fuzz_parts fp;
	size_t n_pairs = 0, n_query;
	int rc, rc2;

	if (size < 1)
		return 0;
	fuzz_split(&fp, data + 1, size - 1);
	if (fp.n < 2 || fp.len[0] == 0)
		goto out;
	for (size_t i = 2; i < fp.n; i += 2) {
		pairs[n_pairs].name = fp.part[i];
		pairs[n_pairs].name_len = fp.len[i];
		pairs[n_pairs].value = i + 1 < fp.n ? fp.part[i + 1] : NULL;
		pairs[n_pairs].value_len = i + 1 < fp.n ? fp.len[i + 1] : 0;
		n_pairs++;
	}
	n_query = data[0] & 0x1f;
	if (n_query > n_pairs)
		n_query = n_pairs;

	memset(&in, 0, sizeof(in));
	in.method = fp.part[0];
	in.path = "/";
	in.query = pairs;
	in.n_query = n_query;
	in.headers = pairs + n_query;
	in.n_headers = n_pairs - n_query;
	in.body = fp.part[1];
	in.body_len = fp.len[1];
	in.now_wall_s = FUZZ_NOW;
	in.find_secret = find_secret;
	nonces = verify_nonces_new(4);
	FUZZ_ASSERT(nonces);
	in.nonces = nonces;

	memset(&r, 0, sizeof(r));
	rc = verify_request(&in, &r, &e);
	FUZZ_ASSERT(rc == 0 || rc == -EACCES);
	if (rc == -EACCES) {
		check_refusal(&e, memmem(data, size, FUZZ_KEY_SECRET,
					 sizeof(FUZZ_KEY_SECRET) - 1) != NULL);
	} else {
		FUZZ_ASSERT(strcmp(r.access_key_id, FUZZ_KEY_ID) == 0);
		FUZZ_ASSERT(r.client_id == FUZZ_CLIENT);
		FUZZ_ASSERT(r.scheme == VERIFY_V1 || r.scheme == VERIFY_V3);
		FUZZ_ASSERT(r.phone_number_len > 0 && r.phone_number_len <= VERIFY_PARAM_MAX);
		FUZZ_ASSERT(r.cust_space_id_len <= VERIFY_PARAM_MAX);
		FUZZ_ASSERT(strcmp(r.action, "GetPhoneEncryptionPublicKey") == 0);
		FUZZ_ASSERT(verify_nonces_count(nonces, FUZZ_NOW) == 1);

		rc2 = verify_request(&in, &r2, &e2);
		FUZZ_ASSERT(rc2 == -EACCES);
		FUZZ_ASSERT(strcmp(e2.code, "SignatureNonceUsed") == 0);
	}
	/* Without a nonce memory: the same answer as the first time. */
	in.nonces = NULL;
	rc2 = verify_request(&in, &r2, &e2);
	FUZZ_ASSERT(rc2 == rc);
	if (rc == 0)
		FUZZ_ASSERT(r2.phone_number_len == r.phone_number_len &&
			    memcmp(r2.phone_number, r.phone_number, r.phone_number_len) == 0 &&
			    r2.has_cust_space_id == r.has_cust_space_id &&
			    r2.cust_space_id_len == r.cust_space_id_len &&
			    memcmp(r2.cust_space_id, r.cust_space_id, r.cust_space_id_len) == 0 &&
			    r2.scheme == r.scheme && strcmp(r2.version, r.version) == 0);
	else
		FUZZ_ASSERT(strcmp(e.code, e2.code) == 0);
	verify_nonces_free(nonces);
out:
	fuzz_parts_free(&fp);
	return 0;
}
