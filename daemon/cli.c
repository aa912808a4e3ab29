/*
 * cli.c -- `camskeyd cache list|show|purge|stats|warm` (see cli.h).
 *
 * list/show/purge/stats open the database directly (WAL lets them run
 * beside a live daemon; purge removes the row on disk, and a running
 * daemon may still hold the entry in memory until it expires or is purged
 * through DELETE on the HTTP API). warm asks the running daemon for each
 * phone number in a file (with the bearer token in $CAMSKEYD_TOKEN when
 * client tokens are configured), so the daemon's limiter keeps the quota; it
 * prints a progress bar with an ETA and records its position in
 * FILE.progress, so an interrupted warm resumes where it stopped.
 */
#include "cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "mem.h"
#include "route.h"
#include "span.h"

static int usage(void)
{
	fprintf(stderr, "usage: camskeyd [options] cache list\n"
			"       camskeyd [options] cache show PHONE [CUSTSPACEID]\n"
			"       camskeyd [options] cache purge PHONE [CUSTSPACEID]\n"
			"       camskeyd [options] cache stats\n"
			"       camskeyd [options] cache warm FILE\n");
	return 2;
}

static int open_cache(const struct config *cfg, bool read_only, struct cache **ret)
{
	struct cache_options opt = {
		.path = cfg->cache,
		.max_entries = cfg->max_entries,
		.hot_entries = 1024,
		.read_only = read_only,
	};
	char err[256];

	if (cache_open(&opt, ret, err, sizeof(err)) < 0) {
		fprintf(stderr, "camskeyd: %s\n", err);
		return -EIO;
	}
	return 0;
}

static int key_from_args(int argc, char **argv, struct cams_key *key)
{
	struct route_error err;
	enum route_kind kind;
	char path[128];

	if (argc < 2 || argc > 3)
		return -EINVAL;
	snprintf(path, sizeof(path), ROUTE_KEY_PREFIX "%s" ROUTE_KEY_SUFFIX, argv[1]);
	if (route_parse_path(path, strlen(path), &kind, key, &err) < 0 || kind != ROUTE_KEY) {
		fprintf(stderr, "camskeyd: %s\n", kind == ROUTE_KEY ? err.message : "bad phone number");
		return -EINVAL;
	}
	if (argc == 3 && route_set_cust_space_id(argv[2], strlen(argv[2]), key, &err) < 0) {
		fprintf(stderr, "camskeyd: %s\n", err.message);
		return -EINVAL;
	}
	return 0;
}

static const char *iso_time(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return out;
}

static int print_row(const struct cache_entry *e, void *cls)
{
	char exp[32];
	int64_t now = *(const int64_t *)cls;

	printf("%-20s %-16s %-8s %-24s %-64s %s%s\n", e->key.phone,
	       e->key.cust_space_id[0] ? e->key.cust_space_id : "-",
	       e->kind == CACHE_KIND_KEY ? e->status : "negative", e->code,
	       e->etag[0] ? e->etag : "-",
	       iso_time(e->expires_at_s, exp, sizeof(exp)), e->expires_at_s <= now ? " (expired)" : "");
	return 0;
}

struct stats {
	uint64_t total, keys, negative, expired, valid;
	int64_t now;
};

static int count_row(const struct cache_entry *e, void *cls)
{
	struct stats *s = cls;

	s->total++;
	if (e->kind == CACHE_KIND_KEY) {
		s->keys++;
		if (strcmp(e->status, "VALID") == 0)
			s->valid++;
	} else {
		s->negative++;
	}
	if (e->expires_at_s <= s->now)
		s->expired++;
	return 0;
}

/* ---- warm ------------------------------------------------------------------- */

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

static void progress(uint64_t done, uint64_t total, uint64_t failed, int64_t started_s,
		     uint64_t done_at_start)
{
	int width = 30, filled = total ? (int)(done * (uint64_t)width / total) : width;
	int64_t elapsed = (int64_t)time(NULL) - started_s;
	uint64_t this_run = done - done_at_start;
	int64_t eta = this_run && elapsed > 0 ? (int64_t)((total - done) * (uint64_t)elapsed / this_run)
					      : -1;
	char bar[64];

	memset(bar, '#', (size_t)filled);
	memset(bar + filled, '.', (size_t)(width - filled));
	bar[width] = '\0';
	if (eta >= 0)
		fprintf(stderr, "\r[%s] %" PRIu64 "/%" PRIu64 " failed %" PRIu64 " ETA %02" PRId64 ":%02" PRId64 "  ",
			bar, done, total, failed, eta / 60, eta % 60);
	else
		fprintf(stderr, "\r[%s] %" PRIu64 "/%" PRIu64 " failed %" PRIu64 " ETA --:--  ", bar,
			done, total, failed);
}

static int warm(const struct config *cfg, const char *file)
{
	FILE *in = fopen(file, "r");
	char progress_path[4096], progress_tmp[4200], line[256], url[512];
	uint64_t total = 0, done = 0, failed = 0, skip = 0;
	int64_t started = (int64_t)time(NULL);
	struct curl_slist *headers = NULL;
	const char *token;
	char auth[512];
	FILE *pf;
	CURL *curl;

	if (!in) {
		fprintf(stderr, "camskeyd: cannot open %s: %s\n", file, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), in))
		if (line[0] != '#' && line[0] != '\n')
			total++;
	rewind(in);
	snprintf(progress_path, sizeof(progress_path), "%s.progress", file);
	snprintf(progress_tmp, sizeof(progress_tmp), "%s.progress.tmp", file);
	pf = fopen(progress_path, "r");
	if (pf) {
		if (fgets(line, sizeof(line), pf)) {
			line[strcspn(line, "\n")] = '\0';
			if (str_to_u64(line, 0, UINT64_MAX, &skip) < 0)
				skip = 0;
		}
		fclose(pf);
		if (skip)
			fprintf(stderr, "resuming after %" PRIu64 " numbers (%s)\n", skip, progress_path);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	if (!curl) {
		fclose(in);
		return 1;
	}
	if (strncmp(cfg->listen, "unix:", 5) == 0)
		curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, cfg->listen + 5);
	token = getenv("CAMSKEYD_TOKEN");
	if (token && *token) {
		/* The token comes from the environment, never the command line. */
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		headers = curl_slist_append(NULL, auth);
		mem_wipe(auth, sizeof(auth));
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	}
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)cfg->max_wait_ms + 30000L);
	while (fgets(line, sizeof(line), in)) {
		struct cams_key key;
		char *args[3] = { "warm", line, NULL };
		char *comma;
		long status = 0;
		int attempts = 0;

		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		done++;
		if (done <= skip)
			continue;
		comma = strchr(line, ',');
		if (comma) {
			*comma = '\0';
			args[2] = comma + 1;
		}
		if (key_from_args(args[2] ? 3 : 2, args, &key) < 0) {
			failed++;
			continue;
		}
		snprintf(url, sizeof(url), "http://%s" ROUTE_KEY_PREFIX "%s" ROUTE_KEY_SUFFIX "%s%s",
			 strncmp(cfg->listen, "unix:", 5) == 0 ? "localhost" : cfg->listen, key.phone, key.cust_space_id[0] ? "?CustSpaceId=" : "",
			 key.cust_space_id);
		curl_easy_setopt(curl, CURLOPT_URL, url);
		/* 503 (quota) means "later": wait as told and try again. */
		do {
			if (curl_easy_perform(curl) != CURLE_OK) {
				status = 0;
				break;
			}
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
			if (status == 503)
				sleep(1);
		} while (status == 503 && ++attempts < 30);
		if (status == 0) {
			fprintf(stderr, "\ncamskeyd: cannot reach the daemon at %s\n", cfg->listen);
			break;
		}
		if (status != 200 && status != 304 && status != 403 && status != 404)
			failed++;
		/* Write-then-rename: an interrupt never leaves a torn progress file. */
		pf = fopen(progress_tmp, "w");
		if (pf) {
			fprintf(pf, "%" PRIu64 "\n", done);
			if (fclose(pf) == 0)
				rename(progress_tmp, progress_path);
		}
		progress(done, total, failed, started, skip);
	}
	fprintf(stderr, "\n");
	curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	fclose(in);
	if (done == total)
		unlink(progress_path);
	printf("warmed %" PRIu64 " of %" PRIu64 " numbers, %" PRIu64 " failed\n", done, total, failed);
	return failed || done != total ? 1 : 0;
}

int cli_main(const struct config *cfg, int argc, char **argv)
{
	struct cache *c = NULL;
	struct cams_key key;
	int64_t now = (int64_t)time(NULL);
	int rc = 0;

	if (argc < 2 || strcmp(argv[0], "cache") != 0)
		return usage();
	argc--;
	argv++;
	if (strcmp(argv[0], "warm") == 0)
		return argc == 2 ? warm(cfg, argv[1]) : usage();
	if (strcmp(argv[0], "list") == 0 && argc == 1) {
		if (open_cache(cfg, true, &c) < 0)
			return 1;
		printf("%-20s %-16s %-8s %-24s %-64s %s\n", "PHONE", "CUSTSPACEID", "STATUS", "CODE",
		       "ETAG", "EXPIRES");
		rc = cache_foreach(c, print_row, &now) < 0;
	} else if (strcmp(argv[0], "stats") == 0 && argc == 1) {
		struct stats s = { .now = now };

		if (open_cache(cfg, true, &c) < 0)
			return 1;
		rc = cache_foreach(c, count_row, &s) < 0;
		printf("entries %" PRIu64 "\nkeys %" PRIu64 "\nvalid %" PRIu64 "\nnegative %" PRIu64
		       "\nexpired %" PRIu64 "\nmax_entries %" PRIu64 "\ndatabase %s\n",
		       s.total, s.keys, s.valid, s.negative, s.expired, cfg->max_entries, cfg->cache);
	} else if (strcmp(argv[0], "show") == 0) {
		struct cache_entry *e;

		if (key_from_args(argc, argv, &key) < 0)
			return usage();
		if (open_cache(cfg, true, &c) < 0)
			return 1;
		rc = cache_load(c, &key, now, &e);
		if (rc == 1) {
			char t1[32], t2[32];

			printf("phone %s\ncust_space_id %s\nkind %s\nstatus %s\ncode %s\netag %s\n"
			       "request_id %s\nfetched_at %s\nexpires_at %s\n%s",
			       e->key.phone, e->key.cust_space_id[0] ? e->key.cust_space_id : "-",
			       e->kind == CACHE_KIND_KEY ? "key" : "negative", e->status, e->code,
			       e->etag[0] ? e->etag : "-", e->request_id,
			       iso_time(e->fetched_at_s, t1, sizeof(t1)),
			       iso_time(e->expires_at_s, t2, sizeof(t2)), e->pem ? e->pem : "");
			cache_entry_unref(e);
			rc = 0;
		} else {
			fprintf(stderr, "camskeyd: not in the cache\n");
			rc = 1;
		}
	} else if (strcmp(argv[0], "purge") == 0) {
		if (key_from_args(argc, argv, &key) < 0)
			return usage();
		if (open_cache(cfg, false, &c) < 0)
			return 1;
		rc = cache_delete(c, &key);
		if (rc == 1) {
			printf("purged\n");
			rc = 0;
		} else {
			fprintf(stderr, "camskeyd: %s\n", rc == 0 ? "not in the cache" : "cache error");
			rc = 1;
		}
	} else {
		return usage();
	}
	cache_close(c);
	return rc;
}
