/*
 * cams.c -- the key's hash and equality (see cams.h).
 *
 * FNV-1a over CustSpaceId, a separator byte no id contains (0xff), and the
 * phone, finished with murmur3's 64-bit mixer: FNV alone leaves the high
 * bits weak, and the cache's shard index is taken from them.
 * Threads: any (pure). Logs: never.
 */
#include "cams.h"

#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

uint64_t cams_key_hash(const struct cams_key *key)
{
	uint64_t h = FNV_OFFSET;
	const unsigned char *p;

	for (p = (const unsigned char *)key->cust_space_id; *p; p++)
		h = (h ^ *p) * FNV_PRIME;
	h = (h ^ 0xff) * FNV_PRIME;
	for (p = (const unsigned char *)key->phone; *p; p++)
		h = (h ^ *p) * FNV_PRIME;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

bool cams_key_equal(const struct cams_key *a, const struct cams_key *b)
{
	return strcmp(a->phone, b->phone) == 0 && strcmp(a->cust_space_id, b->cust_space_id) == 0;
}
