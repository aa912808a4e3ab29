/*
 * keyring.c -- the teams' key pairs (see keyring.h): a small array of
 * (AccessKey ID, secret, client name), searched linearly (at most
 * CONFIG_MAX_CLIENTS entries) with a comparison whose time does not depend
 * on where two IDs differ.
 *
 * Owns: the entries and their secrets (wiped on free).
 */
#include "keyring.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "signer.h"

/* A secret file holds the secret and at most a line ending. */
#define KEYRING_FILE_MAX (LIMIT_ACCESS_KEY_SECRET_MAX + 2)

struct keyring_entry {
	char access_key_id[LIMIT_ACCESS_KEY_ID_MAX + 1];
	char secret[LIMIT_ACCESS_KEY_SECRET_MAX + 1];
	char client_name[LIMIT_CLIENT_NAME_MAX + 1];
};

struct keyring {
	struct keyring_entry *entries;
	size_t n;
};

/* The secret of one file: the text without its line ending; printable, no blanks. */
static int take_secret(const char *data, size_t len, char *dst, size_t dst_size)
{
	if (len > 0 && data[len - 1] == '\n')
		len--;
	if (len > 0 && data[len - 1] == '\r')
		len--;
	if (len == 0 || len >= dst_size)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];

		if (c <= ' ' || c >= 0x7f)
			return -EINVAL;
	}
	memcpy(dst, data, len);
	dst[len] = '\0';
	return 0;
}

static int load_one(const struct config_client *c, const char *credentials_dir,
		    struct keyring_entry *e, char *errbuf, size_t errbuf_size)
{
	char path[CONFIG_PATH_MAX + 4096 + 2], why[512];
	char *data = NULL;
	size_t len = 0;
	int r;

	if (c->access_key_secret_file[0] == '/') {
		snprintf(path, sizeof(path), "%s", c->access_key_secret_file);
	} else if (credentials_dir && *credentials_dir) {
		snprintf(path, sizeof(path), "%s/%s", credentials_dir, c->access_key_secret_file);
	} else {
		snprintf(errbuf, errbuf_size,
			 "[client \"%s\"] access-key-secret-file: %s is a name under "
			 "$CREDENTIALS_DIRECTORY, which is not set (give an absolute path)",
			 c->name, c->access_key_secret_file);
		return -ENOENT;
	}
	why[0] = '\0';
	r = signer_read_private_file(path, KEYRING_FILE_MAX, &data, &len, why, sizeof(why));
	if (r == -ENOENT) {
		snprintf(errbuf, errbuf_size, "[client \"%s\"] access-key-secret-file: %s: no such file",
			 c->name, path);
		return r;
	}
	if (r < 0) {
		snprintf(errbuf, errbuf_size, "[client \"%s\"] access-key-secret-file: %s", c->name,
			 why);
		return r;
	}
	r = take_secret(data, len, e->secret, sizeof(e->secret));
	signer_free_private_file(data, KEYRING_FILE_MAX);
	if (r < 0) {
		snprintf(errbuf, errbuf_size,
			 "[client \"%s\"] access-key-secret-file: %s: must hold one secret of 1 to %d "
			 "printable characters, no blanks",
			 c->name, path, LIMIT_ACCESS_KEY_SECRET_MAX);
		return r;
	}
	snprintf(e->access_key_id, sizeof(e->access_key_id), "%s", c->access_key_id);
	snprintf(e->client_name, sizeof(e->client_name), "%s", c->name);
	return 0;
}

int keyring_load(const struct config *cfg, const char *credentials_dir, struct keyring **ret,
		 char *errbuf, size_t errbuf_size)
{
	struct keyring *k = xcalloc(1, sizeof(*k));
	int r;

	k->entries = xcalloc(CONFIG_MAX_CLIENTS, sizeof(*k->entries));
	for (unsigned i = 0; i < cfg->n_clients && i < CONFIG_MAX_CLIENTS; i++) {
		const struct config_client *c = &cfg->clients[i];

		if (!c->access_key_id[0])
			continue;
		r = load_one(c, credentials_dir, &k->entries[k->n], errbuf, errbuf_size);
		if (r < 0) {
			keyring_free(k);
			return r;
		}
		k->n++;
	}
	*ret = k;
	return 0;
}

void keyring_free(struct keyring *k)
{
	if (!k)
		return;
	mem_wipe(k->entries, CONFIG_MAX_CLIENTS * sizeof(*k->entries));
	free(k->entries);
	free(k);
}

size_t keyring_count(const struct keyring *k)
{
	return k ? k->n : 0;
}

/* Equal IDs, in time that depends only on the lengths. */
static int same_id(const char *stored, const char *id, size_t id_len)
{
	size_t n = strlen(stored);

	if (n != id_len)
		return 0;
	return CRYPTO_memcmp(stored, id, n) == 0;
}

int keyring_find(const struct keyring *k, const char *id, size_t id_len, char *ret_secret,
		 size_t cap, const char **ret_client_name)
{
	const struct keyring_entry *found = NULL;
	size_t n;

	if (!k)
		return -ENOENT;
	for (size_t i = 0; i < k->n; i++) {
		if (same_id(k->entries[i].access_key_id, id, id_len))
			found = &k->entries[i];
	}
	if (!found)
		return -ENOENT;
	n = strlen(found->secret);
	if (n + 1 > cap)
		return -E2BIG;
	memcpy(ret_secret, found->secret, n + 1);
	*ret_client_name = found->client_name;
	return 0;
}
