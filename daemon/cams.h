/*
 * cams.h -- the request identity shared by every module: one key per
 * (CustSpaceId, PhoneNumber), already validated by route.c, and its hash.
 * Threads: any. Logs: never.
 */
#ifndef CAMSKEYD_CAMS_H
#define CAMSKEYD_CAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "bounds.h"

#define CAMS_API_VERSION "2020-06-06"
#define CAMS_ACTION "GetPhoneEncryptionPublicKey"

struct cams_key {
	char cust_space_id[LIMIT_CUST_SPACE_ID_MAX + 1]; /* "" when absent */
	char phone[LIMIT_PHONE_MAX_DIGITS + 1];
};

/*
 * The one hash of a key, for every table keyed by it (the cache's memory
 * layer, the flight table). Pure, never logs. Reads each part up to its
 * NUL only; the two parts are kept apart, so ("1", "23") and ("12", "3")
 * differ. All 64 bits are mixed: the high bits are as good as the low ones
 * (the cache picks its shard from the top bits, a table its bucket by
 * modulo).
 */
uint64_t cams_key_hash(const struct cams_key *key);
/* Both parts equal up to their NULs. Pure. */
bool cams_key_equal(const struct cams_key *a, const struct cams_key *b);

#endif
