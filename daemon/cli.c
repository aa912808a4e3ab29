/*
 * cli.c -- `camskeyd cache list|show|purge|stats|warm` and `--version`
 * (see cli.h).
 *
 * list/show/stats open the database directly (WAL lets them run beside a
 * live daemon). purge asks the running daemon first (DELETE on the key
 * path with the admin token from $CAMSKEYD_ADMIN_TOKEN), which removes the
 * entry from its memory and its database; only when no daemon answers at
 * `listen` does it delete the row from the file itself, and it says which
 * of the two it did. warm asks the running daemon for each phone number in
 * a file (with the bearer token in $CAMSKEYD_TOKEN when client tokens are
 * configured), so the daemon's limiter keeps the quota; it names every bad
 * line (FILE:LINE) and every number that failed (optionally writing those
 * to a file for a retry), draws a progress bar with an ETA when stderr is
 * a terminal, and records its position in FILE.progress, so an interrupted
 * warm resumes where it stopped.
 */
#include "cli.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
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

#ifndef CAMSKEYD_VERSION
#define CAMSKEYD_VERSION "0.1.0"
#endif

/* A daemon's answer body kept by the CLI (an envelope is far smaller). */
#define ANSWER_MAX_BYTES (64 * 1024)

static int usage(void)
{
	fprintf(stderr, "usage: camskeyd [options] cache list\n"
			"       camskeyd [options] cache show PHONE [CUSTSPACEID]\n"
			"       camskeyd [options] cache purge PHONE [CUSTSPACEID]\n"
			"       camskeyd [options] cache stats\n"
			"       camskeyd [options] cache warm [--quiet] [--failed OUTFILE] FILE\n");
	return 2;
}

void cli_print_version(FILE *out)
{
	const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);

	fprintf(out, "camskeyd %s\n", CAMSKEYD_VERSION);
	fprintf(out, "libmicrohttpd %s\n", MHD_get_version());
	fprintf(out, "libcurl %s (%s)\n", cv->version, cv->ssl_version ? cv->ssl_version : "no TLS");
	fprintf(out, "OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
	fprintf(out, "SQLite %s\n", sqlite3_libversion());
	fprintf(out, "cJSON %s\n", cJSON_Version());
	fprintf(out, "features: signatures v3 (ACS3-HMAC-SHA256) v1 (HMAC-SHA1), sdk-endpoint, "
		     "sd_notify, watchdog, socket-activation, unix-socket, client-tokens\n");
	/* No __DATE__: the same sources build the same binary (reproducible). */
	fprintf(out, "built: C %ld, %s, %s\n", (long)__STDC_VERSION__,
#ifdef __VERSION__
		"cc " __VERSION__,
#else
		"cc",
#endif
#if defined(__SANITIZE_ADDRESS__)
		"AddressSanitizer"
#else
		"release"
#endif
	);
}

/* ---- talking to the running daemon ------------------------------------------ */

static size_t keep_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	buf_add(userdata, ptr, size * nmemb);
	return size * nmemb;
}

/* A curl handle aimed at cfg->listen (TCP or unix:); NULL if curl fails. */
static CURL *daemon_handle(const struct config *cfg, struct buf *body)
{
	CURL *curl = curl_easy_init();

	if (!curl)
		return NULL;
	if (strncmp(cfg->listen, "unix:", 5) == 0)
		curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, cfg->listen + 5);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, keep_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	return curl;
}

static void key_url(const struct config *cfg, const struct cams_key *key, char *url, size_t size)
{
	snprintf(url, size, "http://%s" ROUTE_KEY_PREFIX "%s" ROUTE_KEY_SUFFIX "%s%s",
		 strncmp(cfg->listen, "unix:", 5) == 0 ? "localhost" : cfg->listen, key->phone,
		 key->cust_space_id[0] ? "?CustSpaceId=" : "", key->cust_space_id);
}

/* "Authorization: Bearer TOKEN" from the environment variable, or NULL. */
static struct curl_slist *bearer_from_env(const char *variable)
{
	const char *token = getenv(variable);
	struct curl_slist *headers;
	char auth[512];

	if (!token || !*token)
		return NULL;
	/* The token comes from the environment, never the command line. */
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	headers = curl_slist_append(NULL, auth);
	mem_wipe(auth, sizeof(auth));
	return headers;
}

/* The "Code" of an answer envelope into code ("" if there is none). */
static void answer_code(const struct buf *body, char *code, size_t size)
{
	cJSON *doc = cJSON_ParseWithLength(buf_str(body), body->len);
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(doc, "Code");

	snprintf(code, size, "%s", cJSON_IsString(c) ? c->valuestring : "");
	cJSON_Delete(doc);
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

struct warm_options {
	const char *file;
	const char *failed_file;  /* numbers that failed, one per line, or NULL */
	bool quiet;               /* no progress bar, no resume note, no summary */
};

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

/* Parse "PHONE" or "PHONE,CUSTSPACEID" (line is modified); 0 or -EINVAL with why. */
static int warm_key(char *line, struct cams_key *key, struct route_error *why)
{
	char path[512]; /* a whole line fits: warm's lines are at most 255 bytes */
	enum route_kind kind;
	char *comma = strchr(line, ',');

	if (comma)
		*comma = '\0';
	snprintf(path, sizeof(path), ROUTE_KEY_PREFIX "%s" ROUTE_KEY_SUFFIX, line);
	if (strlen(line) > 64 || route_parse_path(path, strlen(path), &kind, key, why) < 0 ||
	    kind != ROUTE_KEY) {
		if (strlen(line) > 64 || kind != ROUTE_KEY)
			snprintf(why->message, sizeof(why->message), "bad phone number");
		return -EINVAL;
	}
	if (comma && route_set_cust_space_id(comma + 1, strlen(comma + 1), key, why) < 0)
		return -EINVAL;
	return 0;
}

static int warm(const struct config *cfg, const struct warm_options *opt)
{
	FILE *in = fopen(opt->file, "r"), *failed_out = NULL;
	char progress_path[4096], progress_tmp[4200], line[256], url[512];
	uint64_t total = 0, done = 0, failed = 0, skip = 0, lineno = 0;
	int64_t started = (int64_t)time(NULL);
	bool bar = !opt->quiet && isatty(STDERR_FILENO), unreachable = false;
	struct curl_slist *headers;
	struct buf body;
	FILE *pf;
	CURL *curl;

	if (!in) {
		fprintf(stderr, "camskeyd: cannot open %s: %s\n", opt->file, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), in))
		if (line[0] != '#' && line[0] != '\n' && strcmp(line, "\r\n") != 0)
			total++;
	rewind(in);
	if (opt->failed_file) {
		failed_out = fopen(opt->failed_file, "w");
		if (!failed_out) {
			fprintf(stderr, "camskeyd: cannot write %s: %s\n", opt->failed_file,
				strerror(errno));
			fclose(in);
			return 1;
		}
	}
	snprintf(progress_path, sizeof(progress_path), "%s.progress", opt->file);
	snprintf(progress_tmp, sizeof(progress_tmp), "%s.progress.tmp", opt->file);
	pf = fopen(progress_path, "r");
	if (pf) {
		if (fgets(line, sizeof(line), pf)) {
			line[strcspn(line, "\n")] = '\0';
			if (str_to_u64(line, 0, UINT64_MAX, &skip) < 0)
				skip = 0;
		}
		fclose(pf);
		if (skip && !opt->quiet)
			fprintf(stderr, "resuming after %" PRIu64 " numbers (%s)\n", skip, progress_path);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	buf_init(&body, ANSWER_MAX_BYTES);
	curl = daemon_handle(cfg, &body);
	if (!curl) {
		buf_free(&body);
		fclose(in);
		if (failed_out)
			fclose(failed_out);
		return 1;
	}
	headers = bearer_from_env("CAMSKEYD_TOKEN");
	if (headers)
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)cfg->max_wait_ms + 30000L);
	while (fgets(line, sizeof(line), in)) {
		struct route_error why;
		struct cams_key key;
		char original[256], code[96];
		long status = 0;
		int attempts = 0;
		CURLcode cc = CURLE_OK;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		done++;
		if (done <= skip)
			continue;
		snprintf(original, sizeof(original), "%s", line);
		if (warm_key(line, &key, &why) < 0) {
			failed++;
			fprintf(stderr, "%scamskeyd: %s:%" PRIu64 ": %s: \"%.64s\"\n", bar ? "\r" : "",
				opt->file, lineno, why.message, original);
			continue;
		}
		key_url(cfg, &key, url, sizeof(url));
		curl_easy_setopt(curl, CURLOPT_URL, url);
		/* 503 (quota) means "later": wait as told and try again. */
		do {
			buf_reset(&body);
			cc = curl_easy_perform(curl);
			if (cc != CURLE_OK) {
				status = 0;
				break;
			}
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
			if (status == 503)
				sleep(1);
		} while (status == 503 && ++attempts < 30);
		if (status == 0 && cc == CURLE_COULDNT_CONNECT) {
			fprintf(stderr, "%scamskeyd: cannot reach the daemon at %s: %s\n",
				bar ? "\n" : "", cfg->listen, curl_easy_strerror(cc));
			done--;
			unreachable = true;
			break;
		}
		if (status != 200 && status != 304 && status != 403 && status != 404) {
			failed++;
			answer_code(&body, code, sizeof(code));
			if (status)
				fprintf(stderr, "%scamskeyd: %s:%" PRIu64 ": %s failed: HTTP %ld %s\n",
					bar ? "\r" : "", opt->file, lineno, original, status,
					code[0] ? code : "(no Code)");
			else
				fprintf(stderr, "%scamskeyd: %s:%" PRIu64 ": %s failed: %s\n",
					bar ? "\r" : "", opt->file, lineno, original,
					curl_easy_strerror(cc));
			if (failed_out)
				fprintf(failed_out, "%s\n", original);
		}
		/* Write-then-rename: an interrupt never leaves a torn progress file. */
		pf = fopen(progress_tmp, "w");
		if (pf) {
			fprintf(pf, "%" PRIu64 "\n", done);
			if (fclose(pf) == 0)
				rename(progress_tmp, progress_path);
		}
		if (bar)
			progress(done, total, failed, started, skip);
	}
	if (bar)
		fprintf(stderr, "\n");
	curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	buf_free(&body);
	fclose(in);
	if (failed_out && fclose(failed_out) != 0)
		fprintf(stderr, "camskeyd: cannot write %s\n", opt->failed_file);
	if (done == total)
		unlink(progress_path);
	if (!opt->quiet)
		printf("warmed %" PRIu64 " of %" PRIu64 " numbers, %" PRIu64 " failed%s%s%s\n", done,
		       total, failed, failed && opt->failed_file ? " (listed in " : "",
		       failed && opt->failed_file ? opt->failed_file : "",
		       failed && opt->failed_file ? ")" : "");
	return failed || done != total || unreachable ? 1 : 0;
}

static int warm_main(const struct config *cfg, int argc, char **argv)
{
	struct warm_options opt = { 0 };
	int i;

	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
			opt.quiet = true;
		} else if (strcmp(argv[i], "--failed") == 0 && i + 1 < argc) {
			opt.failed_file = argv[++i];
		} else {
			fprintf(stderr, "camskeyd: cache warm: unknown option \"%s\"\n", argv[i]);
			return usage();
		}
	}
	if (i + 1 != argc)
		return usage();
	opt.file = argv[i];
	return warm(cfg, &opt);
}

/* ---- purge ------------------------------------------------------------------ */

/*
 * Through the daemon when one answers at listen (it drops its in-memory
 * copy too), else in the database file. Prints what it did.
 */
static int purge(const struct config *cfg, const struct cams_key *key)
{
	struct curl_slist *headers;
	struct cache *c = NULL;
	char url[512], code[96], what[160];
	struct buf body;
	long status = 0;
	CURLcode cc;
	CURL *curl;
	int rc;

	snprintf(what, sizeof(what), "%s%s%s", key->phone, key->cust_space_id[0] ? " in " : "",
		 key->cust_space_id);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	buf_init(&body, ANSWER_MAX_BYTES);
	curl = daemon_handle(cfg, &body);
	if (!curl) {
		buf_free(&body);
		return 1;
	}
	headers = bearer_from_env("CAMSKEYD_ADMIN_TOKEN");
	if (headers)
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	key_url(cfg, key, url, sizeof(url));
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
	cc = curl_easy_perform(curl);
	if (cc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	answer_code(&body, code, sizeof(code));
	curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	buf_free(&body);
	if (status == 200) {
		printf("purged %s from the running daemon at %s (memory and database)\n", what,
		       cfg->listen);
		return 0;
	}
	if (status == 404 && strcmp(code, "Proxy.NotCached") == 0) {
		fprintf(stderr, "camskeyd: %s is not in the cache of the running daemon at %s\n",
			what, cfg->listen);
		return 1;
	}
	if (status != 0) {
		/* A daemon answers but will not purge: the file alone would leave its copy. */
		fprintf(stderr, "camskeyd: the daemon at %s refused the purge: HTTP %ld %s%s; "
				"nothing purged\n", cfg->listen, status, code,
			status == 403 ? " (set CAMSKEYD_ADMIN_TOKEN to the admin token whose SHA-256 "
					"is admin-token-sha256)" : "");
		return 1;
	}
	fprintf(stderr, "camskeyd: no daemon answers at %s (%s); purging the database file %s "
			"instead\n", cfg->listen, curl_easy_strerror(cc), cfg->cache);
	if (open_cache(cfg, false, &c) < 0)
		return 1;
	rc = cache_delete(c, key);
	cache_close(c);
	if (rc == 1) {
		printf("purged %s from the database file %s\n", what, cfg->cache);
		return 0;
	}
	fprintf(stderr, "camskeyd: %s\n", rc == 0 ? "not in the cache" : "cache error");
	return 1;
}

int cli_main(const struct config *cfg, int argc, char **argv)
{
	struct cache *c = NULL;
	struct cams_key key;
	int64_t now = (int64_t)time(NULL);
	int rc = 0;

	static const char *const commands[] = { "list", "show", "purge", "stats", "warm" };
	bool known = false;

	if (strcmp(argv[0], "cache") != 0) {
		fprintf(stderr, "camskeyd: unknown command \"%s\" (the commands are cache list, "
				"show, purge, stats and warm; see camskeyd --help)\n", argv[0]);
		return 2;
	}
	if (argc < 2)
		return usage();
	argc--;
	argv++;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		known = known || strcmp(argv[0], commands[i]) == 0;
	if (!known) {
		fprintf(stderr, "camskeyd: unknown cache command \"%s\" (list, show, purge, stats, "
				"warm)\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[0], "warm") == 0)
		return warm_main(cfg, argc, argv);
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
		return purge(cfg, &key);
	} else {
		return usage();
	}
	cache_close(c);
	return rc;
}
