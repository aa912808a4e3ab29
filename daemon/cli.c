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
 *
 * stats prints the local database's figures and then, when `redis` is
 * configured, the shared tier's, read from Redis with hiredis's blocking
 * API (the CLI has no event loop to keep free): entries and leases of the
 * scope (SCAN, bounded), grants in the limiter's log, and the server's
 * version, run_id, memory and maxmemory-policy, with a warning when the
 * policy could evict the limiter's keys. Every Redis call has a 2 s
 * deadline. An unreachable Redis keeps the local figures printed, says so
 * on stderr and exits 1. The password comes as the daemon's does
 * (redis_load_password); the scope is quota-scope, or the AccessKey ID
 * loaded as the daemon loads it (the signer, freed at once).
 */
#include "cli.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <hiredis/hiredis.h>
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
#include "redis.h"
#include "route.h"
#include "signer.h"
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

/* ---- stats: the shared tier on Redis ---------------------------------------- */

/* Each blocking Redis call of the CLI: connecting, and every command. */
#define SHARED_DEADLINE_MS 2000
/*
 * SCAN calls per pattern (COUNT 1000 each: up to ten million keys looked
 * at, a few seconds on a large server); past it the count is a lower bound.
 */
#define SHARED_SCAN_CALLS_MAX 10000

/*
 * The scope: quota-scope, or the AccessKey ID the daemon would load (the
 * same sources, in the same order). 0, or 1 with a line on stderr.
 */
static int shared_scope(const struct config *cfg, char *out, size_t size)
{
	char profile[4096], errbuf[512];
	struct signer_source src = {
		.credentials_file = cfg->credentials_file,
		.credentials_dir = getenv("CREDENTIALS_DIRECTORY"),
		.use_environment = 1,
	};
	const char *home = getenv("HOME");
	struct signer *signer;

	if (cfg->quota_scope && cfg->quota_scope[0]) {
		snprintf(out, size, "%s", cfg->quota_scope);
		return 0;
	}
	if (home && *home) {
		snprintf(profile, sizeof(profile), "%s/.alibabacloud/credentials", home);
		src.profile_file = profile;
	}
	if (signer_new(&src, &signer, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "camskeyd: shared tier: the scope is the AccessKey ID when "
				"quota-scope is empty, and it could not be loaded (%s); give "
				"--quota-scope as the daemon has it\n", errbuf);
		return 1;
	}
	signer_access_key_id(signer, out, size);
	signer_free(signer);
	return 0;
}

/* The value of field in an INFO answer ("" if absent), into out. */
static void info_field(const redisReply *info, const char *field, char *out, size_t size)
{
	size_t n = strlen(field);
	const char *p;

	out[0] = '\0';
	if (!info || info->type != REDIS_REPLY_STRING)
		return;
	for (p = info->str; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, field, n) == 0 && p[n] == ':') {
			size_t len = strcspn(p + n + 1, "\r\n");

			snprintf(out, size, "%.*s", (int)len, p + n + 1);
			return;
		}
	}
}

/* May this maxmemory-policy evict the limiter's keys (they carry expiries)? */
static bool policy_may_evict(const char *policy)
{
	return strcmp(policy, "noeviction") != 0 && strncmp(policy, "volatile-", 9) != 0;
}

/* A command's reply, or NULL with the error printed (connection or error reply). */
static redisReply *shared_command(redisContext *c, const char *what, int argc,
				  const char **argv)
{
	redisReply *reply = redisCommandArgv(c, argc, argv, NULL);

	if (!reply) {
		/* hiredis reports its read timeout as the socket's EAGAIN. */
		if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
			fprintf(stderr, "camskeyd: shared tier: %s: no answer within %d ms (a "
					"stalled server?)\n", what, SHARED_DEADLINE_MS);
		else
			fprintf(stderr, "camskeyd: shared tier: %s: %s\n", what,
				c->errstr[0] ? c->errstr : "no answer");
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "camskeyd: shared tier: %s: %s\n", what, reply->str);
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

/*
 * Count the keys matching pattern with SCAN ... COUNT 1000, at most
 * SHARED_SCAN_CALLS_MAX calls (*ret_bounded then). 0 or -EIO (printed).
 */
static int shared_count(redisContext *c, const char *pattern, uint64_t *ret_count,
			bool *ret_bounded)
{
	char cursor[32] = "0";
	uint64_t count = 0;
	unsigned calls = 0;

	do {
		const char *argv[] = { "SCAN", cursor, "MATCH", pattern, "COUNT", "1000" };
		redisReply *r = shared_command(c, "SCAN", 6, argv);

		if (!r)
			return -EIO;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			fprintf(stderr, "camskeyd: shared tier: SCAN: unexpected answer\n");
			freeReplyObject(r);
			return -EIO;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		count += r->element[1]->elements;
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0 && ++calls < SHARED_SCAN_CALLS_MAX);
	*ret_count = count;
	*ret_bounded = strcmp(cursor, "0") != 0;
	return 0;
}

/* Connect, AUTH, SELECT; NULL with the error printed. */
static redisContext *shared_connect(const struct config *cfg, const struct redis_address *a)
{
	struct timeval tv = { SHARED_DEADLINE_MS / 1000, (SHARED_DEADLINE_MS % 1000) * 1000 };
	char password[REDIS_PASSWORD_MAX + 1], errbuf[256], db[16];
	redisContext *c;
	redisReply *r;
	int rc;

	rc = redis_load_password(getenv("CREDENTIALS_DIRECTORY"), NULL, password,
				 sizeof(password), errbuf, sizeof(errbuf));
	if (rc < 0 && rc != -ENOENT) {
		fprintf(stderr, "camskeyd: shared tier: %s\n", errbuf);
		return NULL;
	}
	if (rc == -ENOENT)
		password[0] = '\0';
	c = a->is_unix ? redisConnectUnixWithTimeout(a->path, tv)
		       : redisConnectWithTimeout(a->host, (int)a->port, tv);
	if (!c || c->err) {
		fprintf(stderr, "camskeyd: shared tier: cannot reach Redis at %s: %s\n", cfg->redis,
			c ? c->errstr : "out of memory");
		goto out_fail;
	}
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		fprintf(stderr, "camskeyd: shared tier: %s: cannot set a timeout\n", cfg->redis);
		goto out_fail;
	}
	if (password[0]) {
		const char *argv[] = { "AUTH", a->user, password };

		r = a->user[0] ? shared_command(c, "AUTH", 3, argv)
			       : shared_command(c, "AUTH", 2, (const char *[]){ "AUTH", password });
		if (!r)
			goto out_fail;
		freeReplyObject(r);
	} else if (a->user[0]) {
		fprintf(stderr, "camskeyd: shared tier: user '%s' given but no password "
				"($CREDENTIALS_DIRECTORY/redis-password or CAMSKEYD_REDIS_PASSWORD)\n",
			a->user);
		goto out_fail;
	}
	if (a->db > 0) {
		snprintf(db, sizeof(db), "%u", a->db);
		r = shared_command(c, "SELECT", 2, (const char *[]){ "SELECT", db });
		if (!r)
			goto out_fail;
		freeReplyObject(r);
	}
	mem_wipe(password, sizeof(password));
	return c;
out_fail:
	mem_wipe(password, sizeof(password));
	if (c)
		redisFree(c);
	return NULL;
}

/* The "shared tier" lines of `cache stats`. 0, or 1 (printed why). */
static int shared_stats(const struct config *cfg)
{
	char scope[REDIS_NAME_MAX + 1], pattern[REDIS_NAME_MAX + 64], key[REDIS_NAME_MAX + 64];
	char version[64], run_id[64], used[64], maxmem[64], policy[64], errbuf[256];
	char meta_run_id[64] = "";
	struct redis_address addr;
	uint64_t entries = 0, leases = 0;
	long long grants = 0;
	bool entries_bounded = false, leases_bounded = false;
	redisContext *c;
	redisReply *r;
	int rc = 1;

	if (redis_parse_url(cfg->redis, &addr, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "camskeyd: shared tier: %s\n", errbuf);
		return 1;
	}
	if (shared_scope(cfg, scope, sizeof(scope)) != 0)
		return 1;
	c = shared_connect(cfg, &addr);
	if (!c)
		return 1;

	snprintf(pattern, sizeof(pattern), REDIS_KEY_PREFIX "{%s}:e:*", scope);
	if (shared_count(c, pattern, &entries, &entries_bounded) < 0)
		goto out_free;
	snprintf(pattern, sizeof(pattern), REDIS_KEY_PREFIX "{%s}:l:*", scope);
	if (shared_count(c, pattern, &leases, &leases_bounded) < 0)
		goto out_free;
	snprintf(key, sizeof(key), REDIS_KEY_PREFIX "{%s}:grants", scope);
	r = shared_command(c, "ZCARD", 2, (const char *[]){ "ZCARD", key });
	if (!r)
		goto out_free;
	grants = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);
	snprintf(key, sizeof(key), REDIS_KEY_PREFIX "{%s}:meta", scope);
	r = shared_command(c, "HMGET", 3, (const char *[]){ "HMGET", key, "run_id" });
	if (!r)
		goto out_free;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    r->element[0]->type == REDIS_REPLY_STRING)
		snprintf(meta_run_id, sizeof(meta_run_id), "%s", r->element[0]->str);
	freeReplyObject(r);
	r = shared_command(c, "INFO server", 2, (const char *[]){ "INFO", "server" });
	if (!r)
		goto out_free;
	info_field(r, "redis_version", version, sizeof(version));
	info_field(r, "run_id", run_id, sizeof(run_id));
	freeReplyObject(r);
	r = shared_command(c, "INFO memory", 2, (const char *[]){ "INFO", "memory" });
	if (!r)
		goto out_free;
	info_field(r, "used_memory_human", used, sizeof(used));
	info_field(r, "maxmemory", maxmem, sizeof(maxmem));
	info_field(r, "maxmemory_policy", policy, sizeof(policy));
	freeReplyObject(r);

	printf("shared_redis %s\nshared_scope %s\n", cfg->redis, scope);
	printf("shared_entries %s%" PRIu64 "\nshared_leases %s%" PRIu64 "\nshared_grants %lld\n",
	       entries_bounded ? ">=" : "", entries, leases_bounded ? ">=" : "", leases, grants);
	printf("shared_limiter_state %s\n",
	       !meta_run_id[0] ? "none (the next grant waits one window plus the horizon)"
	       : strcmp(meta_run_id, run_id) == 0 ? "current"
	       : "from another server (the next grant waits one window plus the horizon)");
	printf("redis_version %s\nredis_run_id %s\nredis_used_memory %s\nredis_maxmemory %s%s\n"
	       "redis_maxmemory_policy %s\n", version, run_id, used, maxmem,
	       strcmp(maxmem, "0") == 0 ? " (no limit)" : "", policy);
	if (policy[0] && policy_may_evict(policy))
		fprintf(stderr, "camskeyd: warning: maxmemory-policy %s may evict the shared "
				"limiter's keys (" REDIS_KEY_PREFIX "{%s}:grants, :meta), which "
				"makes every host wait a window and can forget recent grants; set "
				"noeviction (see docs/OPERATIONS.md)\n", policy, scope);
	rc = 0;
out_free:
	redisFree(c);
	return rc;
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
		/* The local figures stay printed whatever Redis does. */
		fflush(stdout);
		if (cfg->redis && cfg->redis[0] && shared_stats(cfg) != 0)
			rc = 1;
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
