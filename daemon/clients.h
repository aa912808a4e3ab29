/*
 * clients.h -- the one registry of clients: who a caller is (a stable
 * numeric id per name) and what the configuration says about it (weight,
 * max-wait-ms, token), for the front end, the engine's fair queue and the
 * per-client metrics alike.
 *
 * Ids. A name gets an id the first time it is seen: the configured
 * [client "NAME"] sections (in config order, at start and at each reload),
 * then the names callers bring (X-Client-Id, or the peer address) as they
 * reach the engine. An id is never reused and its name never changes while
 * the process lives, so a reload that removes or reorders clients renames
 * no metric series and moves no queue share. There are CLIENTS_MAX ids;
 * names not in the configuration may take at most CLIENTS_DYNAMIC_MAX of
 * them, so callers inventing X-Client-Ids cannot use up the ids a later
 * reload's clients need. Past the bound, names share CLIENTS_OVERFLOW_ID,
 * named CLIENTS_OVERFLOW_NAME (no configured or X-Client-Id name can be),
 * whose weight is 1 and whose wait limit is the global one.
 *
 * Settings. Each configuration is published as an immutable snapshot with
 * an atomic pointer swap (release; readers load with acquire and never
 * lock). Old snapshots stay valid until clients_fini(): a reload is rare
 * and a snapshot is a few KiB.
 *
 * Threads: clients_init/fini/publish on the main thread only; everything
 * else from any thread. Name reads are lock-free (write-once names
 * published with release/acquire); assigning a new id takes a mutex.
 * Never logs.
 */
#ifndef CAMSKEYD_CLIENTS_H
#define CAMSKEYD_CLIENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "bounds.h"
#include "config.h"

#define CLIENTS_MAX 128
#define CLIENTS_OVERFLOW_ID (CLIENTS_MAX - 1)
#define CLIENTS_OVERFLOW_NAME "(overflow)"
/* Ids that names not in any configuration may take. */
#define CLIENTS_DYNAMIC_MAX (CLIENTS_MAX - 1 - CONFIG_MAX_CLIENTS)

struct clients_snapshot;

/* Empty registry, empty snapshot (no clients, no tokens). */
void clients_init(void);
/* Forget every id and free every snapshot. No other call may run meanwhile. */
void clients_fini(void);

/*
 * Give every client of cfg an id (keeping those already known) and publish
 * cfg's settings as the current snapshot. 0, or -ENOSPC when some
 * configured client had to share CLIENTS_OVERFLOW_ID (it is published all
 * the same; its token still identifies it).
 */
int clients_publish(const struct config *cfg);

/* The current snapshot; valid until clients_fini(). Never NULL after clients_init(). */
const struct clients_snapshot *clients_current(void);

/*
 * The id of name, assigning the next free one if name is new; an empty or
 * over-long name, or one past the bound, gets CLIENTS_OVERFLOW_ID.
 * Lock-free when name is known; otherwise takes the registry mutex.
 */
unsigned clients_id(const char *name);

/* The name of id, or NULL if no name has it yet. Valid for the process's life. Lock-free. */
const char *clients_name(unsigned id);

/*
 * The configured client whose token-sha256 equals digest (64 lower-case
 * hex): its id in *ret_id and its configured name (valid as long as s) in
 * *ret_name. Compares with every token, so timing does not tell which one
 * matched. 0 or -ENOENT.
 */
int clients_by_token(const struct clients_snapshot *s, const char *digest, unsigned *ret_id,
		     const char **ret_name);

/* The configured client named name: its id in *ret_id. 0 or -ENOENT. */
int clients_configured(const struct clients_snapshot *s, const char *name, unsigned *ret_id);

/* Fair-share weight of id: the configured weight, else 1. */
unsigned clients_weight(const struct clients_snapshot *s, unsigned id);
/* The configured max-wait-ms of id, 0 when none (the global one applies). */
uint64_t clients_max_wait_ms(const struct clients_snapshot *s, unsigned id);
/* Whether some configured client has a token (then every lookup needs one). */
bool clients_tokens_required(const struct clients_snapshot *s);

#endif
