/*
 * cache_fixtures.h -- what the cache tests (test_cache*.c) share: a
 * temporary directory per test, keys and entries made from a number, and
 * an entry comparison. Header-only, static inline, so each test file takes
 * what it uses.
 */
#ifndef CAMSKEYD_CACHE_FIXTURES_H
#define CAMSKEYD_CACHE_FIXTURES_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"

#define PEM_TEXT "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----\n"
/* PEM_TEXT as envelope_json_string() renders it inside a body. */
#define PEM_JSON "-----BEGIN PUBLIC KEY-----\\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\\n-----END PUBLIC KEY-----\\n"

struct tmp {
	char dir[64];
	char db[128];
};

static inline int tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/camskeyd-test-cache-XXXXXX");
	if (!mkdtemp(t->dir))
		return -errno;
	snprintf(t->db, sizeof(t->db), "%s/cache.db", t->dir);
	return 0;
}

/* Remove the directory and the files in it (the database, -wal, -shm). */
static inline void tmp_remove(struct tmp *t)
{
	char path[512];
	struct dirent *d;
	DIR *dir;

	chmod(t->dir, 0700);
	dir = opendir(t->dir);
	if (dir) {
		while ((d = readdir(dir))) {
			if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", t->dir, d->d_name);
			unlink(path);
		}
		closedir(dir);
	}
	rmdir(t->dir);
}

static inline struct cams_key make_key(int i)
{
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	/* A third of the keys have no CustSpaceId, as when it is absent. */
	if (i % 3)
		snprintf(k.cust_space_id, sizeof(k.cust_space_id), "space-%d", i % 3);
	snprintf(k.phone, sizeof(k.phone), "8613%09d", i);
	return k;
}

/*
 * A VALID key entry whose body names the phone and fetch time and holds the
 * PEM where an envelope does (the store derives pem from the body).
 */
static inline struct cache_entry *make_entry(int i, int64_t fetched_at_s, int64_t ttl_s)
{
	struct cams_key k = make_key(i);
	char body[512];
	int n;
	struct cache_entry *e;

	n = snprintf(body, sizeof(body),
		     "{\"phone\":\"%s\",\"Code\":\"OK\",\"Data\":{"
		     "\"EncryptionPublicKey\":\"" PEM_JSON "\"},\"fetched\":%lld}", k.phone,
		     (long long)fetched_at_s);
	e = cache_entry_new(&k, PEM_TEXT, body, (size_t)n);
	e->kind = CACHE_KIND_KEY;
	e->http_status = 200;
	snprintf(e->status, sizeof(e->status), "VALID");
	snprintf(e->code, sizeof(e->code), "OK");
	snprintf(e->etag, sizeof(e->etag), "%064d", i);
	snprintf(e->request_id, sizeof(e->request_id), "req-%d-%lld", i, (long long)fetched_at_s);
	e->fetched_at_s = fetched_at_s;
	e->expires_at_s = fetched_at_s + ttl_s;
	return e;
}

static inline struct cache_entry *make_negative(int i, int64_t fetched_at_s, int64_t ttl_s)
{
	struct cams_key k = make_key(i);
	static const char body[] = "{\"Code\":\"PhoneNumberNotFound\"}";
	struct cache_entry *e = cache_entry_new(&k, NULL, body, sizeof(body) - 1);

	e->kind = CACHE_KIND_NEGATIVE;
	e->http_status = 404;
	snprintf(e->code, sizeof(e->code), "PhoneNumberNotFound");
	snprintf(e->request_id, sizeof(e->request_id), "req-neg-%d", i);
	e->fetched_at_s = fetched_at_s;
	e->expires_at_s = fetched_at_s + ttl_s;
	return e;
}

static inline int open_cache(const char *path, uint64_t max_entries, uint64_t hot_entries,
		      int read_only, struct cache **ret, char *errbuf, size_t errbuf_size)
{
	struct cache_options opt = {
		.path = path,
		.max_entries = max_entries,
		.hot_entries = hot_entries,
		.read_only = read_only,
	};

	return cache_open(&opt, ret, errbuf, errbuf_size);
}

static inline int entries_equal(const struct cache_entry *a, const struct cache_entry *b)
{
	return strcmp(a->key.cust_space_id, b->key.cust_space_id) == 0 &&
	       strcmp(a->key.phone, b->key.phone) == 0 && a->kind == b->kind &&
	       a->http_status == b->http_status && strcmp(a->status, b->status) == 0 &&
	       strcmp(a->code, b->code) == 0 && strcmp(a->etag, b->etag) == 0 &&
	       strcmp(a->request_id, b->request_id) == 0 && a->fetched_at_s == b->fetched_at_s &&
	       a->expires_at_s == b->expires_at_s &&
	       ((!a->pem && !b->pem) || (a->pem && b->pem && strcmp(a->pem, b->pem) == 0)) &&
	       a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0 &&
	       a->body[a->body_len] == '\0' && b->body[b->body_len] == '\0';
}

static inline int count_rows(struct cache *c)
{
	uint64_t n = 0;

	if (cache_count(c, &n))
		return -1;
	return (int)n;
}

#endif
