/*
 * flight.h -- the flight table: at most one upstream call per key at a time;
 * callers who want a key that is already being fetched join its flight and
 * all get the same answer, error included.
 *
 * A flight lives from the first miss until its answer is delivered to every
 * joined caller. Waiters are intrusive list nodes embedded in the caller's
 * request, so joining never allocates. The first caller leaving does not
 * cancel the flight; the owner (proxy) decides what to do when the last
 * waiter leaves.
 * Never logs. Threads: one owner (the engine thread).
 */
#ifndef CAMSKEYD_FLIGHT_H
#define CAMSKEYD_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cams.h"
#include "queue.h"

struct flight_waiter {
	struct flight_waiter *prev, *next;
	struct flight *flight;      /* NULL when not joined */
};

enum flight_state {
	FLIGHT_QUEUED = 0,   /* waiting for quota */
	FLIGHT_SENDING,      /* the upstream call is in progress */
	FLIGHT_CLAIMING,     /* shared tier: its lookup (and lease) is asked of Redis */
	FLIGHT_REMOTE,       /* shared tier: another host holds the lease; claimed again later */
};

struct flight {
	struct cams_key key;
	enum flight_state state;
	struct queue_item qitem;     /* while FLIGHT_QUEUED */
	struct flight_waiter waiters;/* list head (circular) */
	unsigned n_waiters;
	unsigned attempts;           /* upstream calls made so far */
	bool background;             /* a refresh nobody waits for */
	bool revalidate;             /* a caller asked no-cache */
	int64_t queued_at_us;
	int64_t sent_at_us;
	/* shared tier (engine.c sets, the driver reads) */
	uint64_t claim_seq;          /* the current claim's number (lease token) */
	bool lease_owned;            /* the claim took the key's lease: release or fill it */
	bool remote_seen;            /* another host's lease was seen: a HIT now is a join */
	bool claim_revalidate;       /* the current claim ignores the shared entry */
	int64_t claim_at_us;         /* FLIGHT_REMOTE: when to claim again */
	size_t claim_index;          /* private: in the engine's claim list */
	struct flight *hash_next;    /* private */
};

struct flight_table;

struct flight_table *flight_table_new(size_t buckets);
/* Frees the table; every flight must have been removed first. */
void flight_table_free(struct flight_table *t);

struct flight *flight_find(struct flight_table *t, const struct cams_key *key);
/* A new flight for key (not already present), inserted, no waiters. */
struct flight *flight_start(struct flight_table *t, const struct cams_key *key);
/* Unlink and free a flight; its waiter list must be empty. */
void flight_finish(struct flight_table *t, struct flight *f);
/* Free every flight (none may have waiters): the end of a stop. */
void flight_table_clear(struct flight_table *t);
size_t flight_count(const struct flight_table *t);

void flight_join(struct flight *f, struct flight_waiter *w);
void flight_leave(struct flight_waiter *w);
/* The first waiter, or NULL. Pop-style iteration: leave it, then ask again. */
struct flight_waiter *flight_first_waiter(struct flight *f);

#endif
