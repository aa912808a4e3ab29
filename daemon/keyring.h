/*
 * keyring.h -- the key pairs camskeyd issued to teams, for verifying what
 * their official SDKs sign on the drop-in endpoint (POST /).
 *
 * A keyring is loaded from a configuration: every [client "NAME"] with an
 * access-key-id and an access-key-secret-file, the secret read from that
 * file (an absolute path, or a name under $CREDENTIALS_DIRECTORY) under the
 * same rules as the daemon's own credential: a regular file readable and
 * writable by its owner only, one line. A keyring is immutable; a reload
 * loads a new one and the front end swaps it in. Secrets never leave it
 * except copied into a verifier's buffer, and are wiped when it is freed.
 *
 * Never logs (errors name the client and the file, never the content).
 * Threads: keyring_load on the main thread; keyring_find from any thread
 * (the keyring is immutable; its owner keeps it alive while in use).
 */
#ifndef CAMSKEYD_KEYRING_H
#define CAMSKEYD_KEYRING_H

#include <stddef.h>

#include "config.h"

struct keyring;

/*
 * Load the key pairs of cfg's clients. credentials_dir ($CREDENTIALS_DIRECTORY,
 * or NULL) resolves secret files given as a bare name. 0, or -errno with
 * "[client \"NAME\"] access-key-secret-file: FILE: reason" in errbuf.
 */
int keyring_load(const struct config *cfg, const char *credentials_dir, struct keyring **ret,
		 char *errbuf, size_t errbuf_size);
/* Wipe every secret and free. NULL ok. */
void keyring_free(struct keyring *k);
/* Key pairs held. */
size_t keyring_count(const struct keyring *k);

/*
 * The secret of AccessKey ID id (id_len bytes) copied into ret_secret (cap
 * bytes, NUL-terminated) and the client's configured name (valid while k
 * lives) in *ret_client_name. 0, -ENOENT (unknown ID), -E2BIG (no room).
 * The ID comparison does not stop at the first differing byte.
 */
int keyring_find(const struct keyring *k, const char *id, size_t id_len, char *ret_secret,
		 size_t cap, const char **ret_client_name);

#endif
