/*
 * clients.c -- the client registry and its settings snapshots (see clients.h).
 *
 * Owns: the id table (CLIENTS_MAX names, each written once into its own
 * storage and then published), the mutex that serialises new ids, and the
 * chain of published snapshots (newest first, freed by clients_fini()).
 *
 * Publication. A new id's name is copied into storage[id], then
 * names[id] is stored with release and n_assigned raised with release. A
 * reader loads n_assigned with acquire and only then reads names below
 * it, so it never sees a half-written name; names[] are also loaded with
 * acquire by clients_name(), which metrics rendering uses for every id.
 * The overflow id's name is published the first time a name lands there.
 *
 * Lookup by name is a linear scan of at most CLIENTS_MAX short strings:
 * it runs on a miss (the engine path) and for configured names at
 * reload, not on the hit path (the front end finds configured clients in
 * the snapshot, by token or among at most CONFIG_MAX_CLIENTS names).
 *
 * Threads: see clients.h. Never logs.
 */
#include "clients.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mem.h"
#include "queue.h"

_Static_assert(CLIENTS_MAX == QUEUE_MAX_CLIENTS, "one id space for the queue and the registry");
_Static_assert(CLIENTS_DYNAMIC_MAX >= 1, "room for callers' names");

struct configured_client {
	unsigned id;
	char name[LIMIT_CLIENT_NAME_MAX + 1];
	char token_sha256[LIMIT_SHA256_HEX];   /* "" when none */
};

struct clients_snapshot {
	struct clients_snapshot *older;        /* kept until clients_fini */
	bool tokens_required;
	unsigned n_configured;
	struct configured_client configured[CONFIG_MAX_CLIENTS];
	unsigned weight[CLIENTS_MAX];
	uint64_t max_wait_ms[CLIENTS_MAX];
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER; /* new ids, n_dynamic */
static char storage[CLIENTS_MAX][LIMIT_CLIENT_NAME_MAX + 1];
static _Atomic(const char *) names[CLIENTS_MAX];
static atomic_uint n_assigned;    /* ids 0..n-1 are named; never above CLIENTS_OVERFLOW_ID */
static unsigned n_dynamic;        /* ids taken by names not configured (registry_mu) */
static _Atomic(struct clients_snapshot *) current;

static struct clients_snapshot *snapshot_empty(void)
{
	struct clients_snapshot *s = xcalloc(1, sizeof(*s));

	for (unsigned i = 0; i < CLIENTS_MAX; i++)
		s->weight[i] = 1;
	return s;
}

void clients_init(void)
{
	atomic_store_explicit(&current, snapshot_empty(), memory_order_release);
}

void clients_fini(void)
{
	struct clients_snapshot *s = atomic_exchange(&current, NULL);

	while (s) {
		struct clients_snapshot *older = s->older;

		free(s);
		s = older;
	}
	pthread_mutex_lock(&registry_mu);
	for (unsigned i = 0; i < CLIENTS_MAX; i++)
		atomic_store_explicit(&names[i], NULL, memory_order_relaxed);
	atomic_store_explicit(&n_assigned, 0, memory_order_release);
	n_dynamic = 0;
	memset(storage, 0, sizeof(storage));
	pthread_mutex_unlock(&registry_mu);
}

/* The id below n named name, or -1. */
static int scan(const char *name, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const char *known = atomic_load_explicit(&names[i], memory_order_acquire);

		if (known && strcmp(known, name) == 0)
			return (int)i;
	}
	return -1;
}

static unsigned overflow(void)
{
	const char *expected = NULL;

	/* First use names it; later ones find it named. */
	atomic_compare_exchange_strong_explicit(&names[CLIENTS_OVERFLOW_ID], &expected,
						CLIENTS_OVERFLOW_NAME, memory_order_release,
						memory_order_relaxed);
	return CLIENTS_OVERFLOW_ID;
}

/* The id of name, assigning one. registry_mu held. */
static unsigned assign_locked(const char *name, bool configured)
{
	unsigned n = atomic_load_explicit(&n_assigned, memory_order_relaxed);
	size_t len = strlen(name);
	int found = scan(name, n);

	if (found >= 0)
		return (unsigned)found;
	if (n >= CLIENTS_OVERFLOW_ID || (!configured && n_dynamic >= CLIENTS_DYNAMIC_MAX))
		return overflow();
	memcpy(storage[n], name, len + 1);
	atomic_store_explicit(&names[n], storage[n], memory_order_release);
	atomic_store_explicit(&n_assigned, n + 1, memory_order_release);
	if (!configured)
		n_dynamic++;
	return n;
}

static bool name_usable(const char *name)
{
	return name && name[0] && strlen(name) <= LIMIT_CLIENT_NAME_MAX;
}

unsigned clients_id(const char *name)
{
	unsigned id;
	int found;

	if (!name_usable(name))
		return overflow();
	found = scan(name, atomic_load_explicit(&n_assigned, memory_order_acquire));
	if (found >= 0)
		return (unsigned)found;
	pthread_mutex_lock(&registry_mu);
	id = assign_locked(name, false);
	pthread_mutex_unlock(&registry_mu);
	return id;
}

const char *clients_name(unsigned id)
{
	if (id >= CLIENTS_MAX)
		return NULL;
	return atomic_load_explicit(&names[id], memory_order_acquire);
}

int clients_publish(const struct config *cfg)
{
	struct clients_snapshot *s = snapshot_empty();
	int rc = 0;

	pthread_mutex_lock(&registry_mu);
	for (unsigned i = 0; i < cfg->n_clients && i < CONFIG_MAX_CLIENTS; i++) {
		const struct config_client *c = &cfg->clients[i];
		struct configured_client *cc = &s->configured[s->n_configured++];

		cc->id = name_usable(c->name) ? assign_locked(c->name, true) : overflow();
		memcpy(cc->name, c->name, sizeof(cc->name));
		cc->name[sizeof(cc->name) - 1] = '\0';
		memcpy(cc->token_sha256, c->token_sha256, sizeof(cc->token_sha256));
		cc->token_sha256[sizeof(cc->token_sha256) - 1] = '\0';
		if (cc->token_sha256[0])
			s->tokens_required = true;
		if (cc->id == CLIENTS_OVERFLOW_ID) {
			/* Shared: its own weight and wait limit would apply to strangers. */
			rc = -ENOSPC;
			continue;
		}
		s->weight[cc->id] = c->weight ? c->weight : 1;
		s->max_wait_ms[cc->id] = c->max_wait_ms;
	}
	pthread_mutex_unlock(&registry_mu);
	s->older = atomic_load_explicit(&current, memory_order_relaxed);
	atomic_store_explicit(&current, s, memory_order_release);
	return rc;
}

const struct clients_snapshot *clients_current(void)
{
	return atomic_load_explicit(&current, memory_order_acquire);
}

int clients_by_token(const struct clients_snapshot *s, const char *digest, unsigned *ret_id,
		     const char **ret_name)
{
	int found = -1;

	if (strlen(digest) != LIMIT_SHA256_HEX - 1)
		return -ENOENT;
	/* Compare with every client so timing does not tell which one matched. */
	for (unsigned i = 0; i < s->n_configured; i++) {
		if (s->configured[i].token_sha256[0] &&
		    CRYPTO_memcmp(digest, s->configured[i].token_sha256, LIMIT_SHA256_HEX - 1) == 0)
			found = (int)i;
	}
	if (found < 0)
		return -ENOENT;
	*ret_id = s->configured[found].id;
	*ret_name = s->configured[found].name;
	return 0;
}

int clients_configured(const struct clients_snapshot *s, const char *name, unsigned *ret_id)
{
	for (unsigned i = 0; i < s->n_configured; i++) {
		if (strcmp(s->configured[i].name, name) == 0) {
			*ret_id = s->configured[i].id;
			return 0;
		}
	}
	return -ENOENT;
}

unsigned clients_weight(const struct clients_snapshot *s, unsigned id)
{
	return id < CLIENTS_MAX ? s->weight[id] : 1;
}

uint64_t clients_max_wait_ms(const struct clients_snapshot *s, unsigned id)
{
	return id < CLIENTS_MAX ? s->max_wait_ms[id] : 0;
}

bool clients_tokens_required(const struct clients_snapshot *s)
{
	return s->tokens_required;
}
