/*
 * shared.h -- the second cache tier and cross-host flights, on the Redis
 * connection of the shared limiter (redis.h): an entry one host fetched is
 * served by every host of the scope; a lease makes a cold key asked on
 * several hosts cost one upstream call; notices (pub/sub) bring a
 * rotation or a purge one host saw to every host's local tier.
 *
 * Keys, all with the hash tag {SCOPE} (one cluster slot per scope) and the
 * layout version v1 (a rolling upgrade to v2 uses new keys):
 *   camskeyd:v1:{SCOPE}:e:CUST:PHONE   an entry; a string, PX = its remaining lifetime
 *   camskeyd:v1:{SCOPE}:l:CUST:PHONE   a lease; a string, the owner's token, PX = lease_ms
 *   camskeyd:v1:{SCOPE}:n              the notice channel (PUBLISH / SUBSCRIBE)
 * CUST is the CustSpaceId or empty, PHONE the digits (route.c's rules for both).
 *
 * Lifetimes travel as Redis's PTTL, never as wall-clock times: a host
 * serves a shared entry until now + PTTL (rounded down to the second), so
 * the remaining lifetime carries over and is never extended, whatever the
 * hosts' clocks say. The Age is carried the same way (the entry's lifetime
 * when fetched, minus what is left).
 *
 * Each operation is one EVAL (atomic on the server; no script cache to
 * lose, so no NOSCRIPT), with redis.c's deadline. Callbacks run on the
 * owner thread exactly once, as redis.h's do; error is 0 or the redis.h
 * codes, or -EPROTO (an error reply, an unexpected shape, an entry that
 * does not decode) with error_text.
 *
 * Pure parts (encode, decode, notices, names) are unit-tested without a
 * server; the scripts against a real redis-server (tests/unit/test_shared.c).
 * Logs: nothing. Threads: the owner of the struct redis.
 */
#ifndef CAMSKEYD_SHARED_H
#define CAMSKEYD_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cache.h"
#include "redis.h"

/* A lease token: "HOST_ID#SEQ", at most this long. */
#define SHARED_TOKEN_MAX (REDIS_NAME_MAX + 24)

/*
 * The value stored for e: a versioned, length-prefixed record of the key,
 * kind, http_status, status, code, etag, request_id, the lifetime
 * (expires_at_s - fetched_at_s), the PEM (or none) and the body. -EINVAL
 * if e is unstorable. Pure.
 */
int shared_entry_encode(const struct cache_entry *e, struct buf *out);
/*
 * Decode a value read with pttl_ms left at now_s: expires_at_s = now_s +
 * pttl_ms / 1000, fetched_at_s = expires_at_s - lifetime (never later than
 * now_s), last_used_s = now_s. The record's key must equal key. 0 with a
 * new entry (one reference), -EINVAL if anything is off. Pure.
 */
int shared_entry_decode(const char *data, size_t len, const struct cams_key *key,
			int64_t pttl_ms, int64_t now_s, struct cache_entry **ret);

enum shared_claim_result {
	SHARED_CLAIM_HIT = 1, /* the entry is there: `entry` */
	SHARED_CLAIM_OWNED,   /* no entry; the lease is now ours (token) */
	SHARED_CLAIM_HELD,    /* no entry; another host holds the lease */
	SHARED_CLAIM_ABSENT,  /* no entry (a lookup that takes no lease) */
};

struct shared_claim {
	enum shared_claim_result result;
	struct cache_entry *entry;  /* HIT: a new reference, the callback's to keep or drop */
	int64_t lease_left_ms;      /* HELD: the holder's lease time left (PTTL) */
};

typedef void shared_claim_fn(void *cookie, int error, const struct shared_claim *claim,
			     const char *error_text);

/*
 * Look key up in the shared tier; an entry with less than min_pttl_ms left
 * counts as absent (a refresh wants a newer one than it has). Absent and
 * take_lease: SET the lease to token NX PX lease_ms, in the same script:
 * OWNED, or HELD with the holder's PTTL. Absent without take_lease: ABSENT.
 * now_s decodes the entry. Returns as redis_command (cb called exactly once
 * iff 0).
 */
int shared_claim(struct redis *r, const char *scope, const struct cams_key *key,
		 const char *token, unsigned lease_ms, unsigned min_pttl_ms, bool take_lease,
		 int64_t now_us, int64_t now_s, shared_claim_fn *cb, void *cookie);

typedef void shared_done_fn(void *cookie, int error, const char *error_text);

/*
 * Publish e (fetched by this host) in one script: SET the entry PX its
 * remaining lifetime at now_s (nothing stored when none is left), DEL the
 * lease if it still holds token (token may be NULL: no lease to release),
 * PUBLISH a FILL notice from host_id. cb may be NULL.
 */
int shared_fill(struct redis *r, const char *scope, const struct cache_entry *e,
		const char *token, const char *host_id, int64_t now_us, int64_t now_s,
		shared_done_fn *cb, void *cookie);
/* The flight failed: DEL the lease if it holds token, PUBLISH a FREE notice. cb may be NULL. */
int shared_release(struct redis *r, const char *scope, const struct cams_key *key,
		   const char *token, const char *host_id, int64_t now_us, shared_done_fn *cb,
		   void *cookie);
/* DEL the entry, PUBLISH a PURGE notice. cb may be NULL. */
int shared_purge(struct redis *r, const char *scope, const struct cams_key *key,
		 const char *host_id, int64_t now_us, shared_done_fn *cb, void *cookie);

/* ---- notices: "KIND HOST_ID ETAG CUST:PHONE" (ETAG "-" when none) ---- */

enum shared_notice_kind {
	SHARED_NOTICE_FILL = 1, /* a host stored an entry (a new key, or a rotation) */
	SHARED_NOTICE_FREE,     /* a lease was given up without an entry */
	SHARED_NOTICE_PURGE,    /* an operator purged the key */
};

struct shared_notice {
	enum shared_notice_kind kind;
	char host_id[REDIS_NAME_MAX + 1];
	char etag[LIMIT_SHA256_HEX];     /* FILL of a key: its fingerprint; else "" */
	struct cams_key key;
};

/* 0, or -EINVAL for anything malformed (a notice is never trusted blindly). Pure. */
int shared_notice_parse(const char *data, size_t len, struct shared_notice *ret);
/* The channel name for scope; 0 or -EINVAL (bad scope, too small). Pure. */
int shared_channel(const char *scope, char *out, size_t size);

#endif
