/*
 * test_config.c -- the configuration table, INI parser, flags, validation,
 * printing, and the docs test (every key documented in the man page and the
 * example file, with its real default).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "mem.h"
#include "redis.h"

#define ERR_MAX 65536

static char tmp_dir[64];

/* Write text to a file in the test's scratch directory; returns the path (static). */
static const char *write_tmp(const char *name, const char *text, size_t len)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
	f = fopen(path, "wb");
	if (!f)
		return NULL;
	fwrite(text, 1, len, f);
	fclose(f);
	return path;
}

/* Read a whole file into memory (NUL-terminated), or NULL. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *data;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = xmalloc((size_t)n + 1);
	if (fread(data, 1, (size_t)n, f) != (size_t)n) {
		free(data);
		data = NULL;
	} else {
		data[n] = '\0';
	}
	fclose(f);
	return data;
}

/* Parse text into a fresh config; returns the rc, errors in *err. */
static int parse(struct config *cfg, const char *text, struct buf *err)
{
	config_init(cfg);
	buf_init(err, ERR_MAX);
	return config_parse_string(cfg, "t.conf", text, err);
}

static int argv_run(struct config *cfg, struct buf *err, enum config_mode *mode, int *first,
		    int argc, const char **args)
{
	char *argv[32];

	for (int i = 0; i < argc && i < 32; i++)
		argv[i] = (char *)(uintptr_t)args[i];
	/* As main does: a config from config_init(), whose strings must not leak. */
	config_init(cfg);
	buf_init(err, ERR_MAX);
	return config_from_argv(argc, argv, cfg, mode, first, err);
}

#define ARGV(...) (sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(const char *)), \
	(const char *[]){ __VA_ARGS__ }

TEST(defaults_are_the_documented_values)
{
	struct config cfg;

	unsetenv("STATE_DIRECTORY");
	config_init(&cfg);
	CHECK_STR(cfg.listen, "127.0.0.1:8080");
	CHECK(!cfg.allow_remote);
	CHECK(cfg.threads == 2);
	CHECK(cfg.max_connections == 8192);
	CHECK(cfg.connection_timeout_s == 30);
	CHECK_STR(cfg.admin_token_sha256, "");
	CHECK_STR(cfg.upstream, "https://cams.ap-southeast-1.aliyuncs.com");
	CHECK_STR(cfg.upstream_ca, "");
	CHECK(cfg.signature == CONFIG_SIGNATURE_V3);
	CHECK(cfg.upstream_connect_timeout_ms == 3000);
	CHECK(cfg.upstream_timeout_ms == 10000);
	CHECK(cfg.upstream_retries == 3);
	CHECK_STR(cfg.credentials_file, "");
	CHECK(cfg.rate == 5.0);
	CHECK(cfg.burst == 1);
	CHECK(cfg.rate_margin_ms == 20);
	CHECK(cfg.max_wait_ms == 5000);
	CHECK(cfg.queue_max == 10000);
	CHECK_STR(cfg.cache, "./camskeyd.db");
	CHECK(cfg.ttl_s == 86400);
	CHECK(cfg.status_ttl_s == 300);
	CHECK(cfg.negative_ttl_s == 60);
	CHECK(cfg.stale_while_revalidate_s == 300);
	CHECK(cfg.stale_if_error_s == 86400);
	CHECK(cfg.max_entries == 1000000);
	CHECK(cfg.hot_entries == 0);
	CHECK_STR(cfg.log_level, "info");
	CHECK_STR(cfg.access_log, "misses");
	CHECK_STR(cfg.redis, "");
	CHECK_STR(cfg.host_id, "");
	CHECK_STR(cfg.quota_scope, "");
	CHECK(cfg.redis_fallback_rate == 0.0);
	CHECK(cfg.redis_timeout_ms == 250);
	CHECK(cfg.redis_max_pending == 2);
	CHECK(cfg.n_clients == 0);
	CHECK(cfg.config_file == NULL);
	config_free(&cfg);
}

TEST(defaults_pass_validation)
{
	struct config cfg;
	struct buf err;

	config_init(&cfg);
	buf_init(&err, ERR_MAX);
	CHECK(config_validate(&cfg, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);
}

TEST(table_has_every_key_once_with_descriptions)
{
	size_t n, i, j;
	const struct config_key_info *k = config_keys(&n);

	CHECK(n == 39);
	for (i = 0; i < n; i++) {
		CHECK(k[i].name && k[i].name[0]);
		CHECK(k[i].description && k[i].description[0]);
		CHECK(k[i].default_text && k[i].unit);
		for (j = 0; j < i; j++)
			CHECK(strcmp(k[i].name, k[j].name) != 0);
	}
}

TEST(parse_string_sets_several_keys)
{
	struct config cfg;
	struct buf err;
	int rc = parse(&cfg,
		       "# a comment\n"
		       "; another\n"
		       "\n"
		       "[camskeyd]\n"
		       "listen = 127.0.0.1:9090\n"
		       "  rate=2.5  \n"
		       "max_wait_ms = 250   # underscores work, trailing comment too\n"
		       "upstream-ca = \"/etc/ssl/extra ca.pem\" ; quoted\n"
		       "signature = v1\r\n"
		       "access-log = off\n"
		       "log-level = debug\n"
		       "ttl = 3600\n"
		       "max-entries = 42\n"
		       "credentials-file = /etc/camskeyd/key#1\n"
		       "admin-token-sha256 = "
		       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		       &err);

	CHECK(rc == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK_STR(cfg.listen, "127.0.0.1:9090");
	CHECK(cfg.rate == 2.5);
	CHECK(cfg.max_wait_ms == 250);
	CHECK_STR(cfg.upstream_ca, "/etc/ssl/extra ca.pem");
	CHECK(cfg.signature == CONFIG_SIGNATURE_V1);
	CHECK_STR(cfg.access_log, "off");
	CHECK_STR(cfg.log_level, "debug");
	CHECK(cfg.ttl_s == 3600);
	CHECK(cfg.max_entries == 42);
	/* '#' not after whitespace is part of the value. */
	CHECK_STR(cfg.credentials_file, "/etc/camskeyd/key#1");
	CHECK_STR(cfg.admin_token_sha256,
		  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	/* Untouched keys keep their defaults. */
	CHECK(cfg.threads == 2);
	buf_free(&err);
	config_free(&cfg);
}

/* One bad line; the error must be exactly `expected`. */
static void expect_error(const char *text, const char *expected)
{
	struct config cfg;
	struct buf err;

	CHECK(parse(&cfg, text, &err) == -EINVAL);
	CHECK_STR(buf_str(&err), expected);
	buf_free(&err);
	config_free(&cfg);
}

TEST(bad_number_reports_file_line_key_and_reason)
{
	expect_error("\n\nrate = fast\n",
		     "t.conf:3: rate: must be a number between 0.1 and 1000, got \"fast\"\n");
	expect_error("rate = 1e3\n",
		     "t.conf:1: rate: must be a number between 0.1 and 1000, got \"1e3\"\n");
	expect_error("rate = nan\n",
		     "t.conf:1: rate: must be a number between 0.1 and 1000, got \"nan\"\n");
	expect_error("connection-timeout = 1h\n",
		     "t.conf:1: connection-timeout: must be a whole number between 1 and 3600 "
		     "(seconds), got \"1h\"\n");
	expect_error("threads = -1\n",
		     "t.conf:1: threads: must be a whole number between 1 and 64, got \"-1\"\n");
	expect_error("threads =\n",
		     "t.conf:1: threads: must be a whole number between 1 and 64, got \"\"\n");
}

TEST(out_of_range_number_is_refused)
{
	expect_error("threads = 65\n",
		     "t.conf:1: threads: must be a whole number between 1 and 64, got \"65\"\n");
	expect_error("rate = 0.05\n",
		     "t.conf:1: rate: must be a number between 0.1 and 1000, got \"0.05\"\n");
	expect_error("max-wait-ms = 99999999999999999999999\n",
		     "t.conf:1: max-wait-ms: must be a whole number between 0 and 600000 "
		     "(milliseconds), got \"99999999999999999999999\"\n");
	expect_error("burst = 1001\n",
		     "t.conf:1: burst: must be a whole number between 1 and 1000, got \"1001\"\n");
}

TEST(unknown_key_is_refused)
{
	expect_error("colour = blue\n", "t.conf:1: colour: unknown key\n");
}

TEST(unknown_key_close_to_a_known_one_gets_a_did_you_mean)
{
	expect_error("max-wiat-ms = 5\n",
		     "t.conf:1: max-wiat-ms: unknown key (did you mean \"max-wait-ms\"?)\n");
	expect_error("ratte = 2\n", "t.conf:1: ratte: unknown key (did you mean \"rate\"?)\n");
	expect_error("[client \"a\"]\nweigth = 2\n",
		     "t.conf:2: [client \"a\"] weigth: unknown key (did you mean \"weight\"?)\n");
	/* Too far from every key: no guess. */
	expect_error("xy = 1\n", "t.conf:1: xy: unknown key\n");
}

TEST(redis_keys_take_good_values)
{
	struct config cfg;
	struct buf err;
	int rc = parse(&cfg,
		       "redis = redis://camskeyd@10.0.0.5:6380/2\n"
		       "host-id = web-1.example:8080\n"
		       "quota_scope = LTAI5tExample_account.1\n"
		       "rate = 4\n"
		       "redis-fallback-rate = 1.5\n"
		       "redis-timeout-ms = 10000\n"
		       "redis-max-pending = 16\n",
		       &err);

	CHECK(rc == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK_STR(cfg.redis, "redis://camskeyd@10.0.0.5:6380/2");
	CHECK_STR(cfg.host_id, "web-1.example:8080");
	CHECK_STR(cfg.quota_scope, "LTAI5tExample_account.1");
	CHECK(cfg.redis_fallback_rate == 1.5);
	CHECK(cfg.redis_timeout_ms == 10000);
	CHECK(cfg.redis_max_pending == 16);
	CHECK(config_validate(&cfg, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);

	static const char *const urls[] = { "redis://127.0.0.1", "redis://127.0.0.1:6379",
					    "redis://[::1]:6379/15", "unix:///run/redis/redis.sock",
					    "" };
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		char line[128];

		snprintf(line, sizeof(line), "redis = \"%s\"\n", urls[i]);
		CHECK(parse(&cfg, line, &err) == 0);
		CHECK_STR(buf_str(&err), "");
		CHECK_STR(cfg.redis, urls[i]);
		buf_free(&err);
		config_free(&cfg);
	}
	/* The lower bounds, and a name of exactly 128 bytes. */
	{
		char line[256];

		snprintf(line, sizeof(line), "redis-timeout-ms = 10\nredis-max-pending = 1\n"
			 "host-id = %0128d\n", 0);
		CHECK(parse(&cfg, line, &err) == 0);
		CHECK_STR(buf_str(&err), "");
		CHECK(cfg.redis_timeout_ms == 10);
		CHECK(cfg.redis_max_pending == 1);
		CHECK(strlen(cfg.host_id) == 128);
		buf_free(&err);
		config_free(&cfg);
	}
}

TEST(redis_keys_refuse_bad_values_naming_file_line_and_key)
{
	char line[512], want[512];

	expect_error("\nredis = redis://cache.example:6379\n",
		     "t.conf:2: redis: 'redis://cache.example:6379': 'cache.example' is not a "
		     "numeric address; camskeyd resolves no names on its engine thread: give an "
		     "IP address (127.0.0.1, [::1]) or unix:///path\n");
	expect_error("redis = redis://u:secret@127.0.0.1\n",
		     "t.conf:1: redis: no password in the address (not quoted here); put it in "
		     "$CREDENTIALS_DIRECTORY/redis-password, a 0600 file or "
		     "CAMSKEYD_REDIS_PASSWORD\n");
	expect_error("redis = rediss://127.0.0.1\n",
		     "t.conf:1: redis: 'rediss://127.0.0.1': expected redis://[user@]host:port[/db] "
		     "or unix:///path (rediss:// is not supported: hiredis 0.14 has no TLS)\n");
	expect_error("redis = redis://127.0.0.1/16\n",
		     "t.conf:1: redis: 'redis://127.0.0.1/16': database must be 0..15\n");
	expect_error("redis = unix://relative.sock\n",
		     "t.conf:1: redis: 'unix://relative.sock': unix:// needs an absolute path "
		     "(unix:///run/redis.sock)\n");
	expect_error("host-id = web 1\n",
		     "t.conf:1: host-id: must be empty or 1 to 128 characters of A-Z a-z 0-9 . _ "
		     ": -, got \"web 1\"\n");
	expect_error("quota-scope = team/a\n",
		     "t.conf:1: quota-scope: must be empty or 1 to 128 characters of A-Z a-z 0-9 . "
		     "_ : -, got \"team/a\"\n");
	snprintf(line, sizeof(line), "quota-scope = %0129d\n", 0);
	snprintf(want, sizeof(want), "t.conf:1: quota-scope: must be empty or 1 to 128 characters "
		 "of A-Z a-z 0-9 . _ : -, got \"%080d\" (129 bytes)\n", 0);
	expect_error(line, want);
	expect_error("redis-fallback-rate = -1\n",
		     "t.conf:1: redis-fallback-rate: must be a number between 0 and 1000, got "
		     "\"-1\"\n");
	expect_error("redis-fallback-rate = 1001\n",
		     "t.conf:1: redis-fallback-rate: must be a number between 0 and 1000, got "
		     "\"1001\"\n");
	expect_error("redis-timeout-ms = 9\n",
		     "t.conf:1: redis-timeout-ms: must be a whole number between 10 and 10000 "
		     "(milliseconds), got \"9\"\n");
	expect_error("redis-timeout-ms = 10001\n",
		     "t.conf:1: redis-timeout-ms: must be a whole number between 10 and 10000 "
		     "(milliseconds), got \"10001\"\n");
	expect_error("redis-max-pending = 0\n",
		     "t.conf:1: redis-max-pending: must be a whole number between 1 and 16, got "
		     "\"0\"\n");
	expect_error("redis-max-pending = 17\n",
		     "t.conf:1: redis-max-pending: must be a whole number between 1 and 16, got "
		     "\"17\"\n");
}

TEST(redis_flags_are_options_too)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode;
	int first;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--redis", "unix:///tmp/r.sock", "--host-id=a:1",
			    "--quota-scope", "acct", "--redis-fallback-rate", "2",
			    "--redis-timeout-ms", "100", "--redis_max_pending", "3")) == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK_STR(cfg.redis, "unix:///tmp/r.sock");
	CHECK_STR(cfg.host_id, "a:1");
	CHECK_STR(cfg.quota_scope, "acct");
	CHECK(cfg.redis_fallback_rate == 2.0);
	CHECK(cfg.redis_timeout_ms == 100);
	CHECK(cfg.redis_max_pending == 3);
	buf_free(&err);
	config_free(&cfg);

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--redis", "redis://localhost")) == -EINVAL);
	CHECK_STR(buf_str(&err), "command line: --redis: 'redis://localhost': 'localhost' is not "
		  "a numeric address; camskeyd resolves no names on its engine thread: give an IP "
		  "address (127.0.0.1, [::1]) or unix:///path\n");
	buf_free(&err);
	config_free(&cfg);
}

TEST(fallback_rate_above_rate_is_refused_when_redis_is_set)
{
	struct config cfg;
	struct buf err;

	CHECK(parse(&cfg, "redis = redis://127.0.0.1\nrate = 4\nredis-fallback-rate = 4.5\n",
		    &err) == 0);
	CHECK(config_validate(&cfg, &err) == -EINVAL);
	CHECK_STR(buf_str(&err), "redis-fallback-rate: 4.5/s is more than rate (4/s); it is one "
		  "host's budget while Redis is unreachable, and the budgets of all hosts must add "
		  "up to at most the quota\n");
	buf_free(&err);
	config_free(&cfg);

	/* Equal is allowed (one host of its own account). */
	CHECK(parse(&cfg, "redis = redis://127.0.0.1\nrate = 4\nredis-fallback-rate = 4\n",
		    &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	buf_free(&err);
	config_free(&cfg);

	/* Without redis the redis-only keys are ignored, so not refused. */
	CHECK(parse(&cfg, "rate = 1\nredis-fallback-rate = 9\nredis-max-pending = 5\n"
		    "host-id = x\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);

	/* Through argv, the same check: flags and file together. */
	{
		enum config_mode mode;
		int first;

		CHECK(argv_run(&cfg, &err, &mode, &first,
			       ARGV("camskeyd", "--redis", "redis://127.0.0.1", "--rate", "2",
				    "--redis-fallback-rate", "3")) == -EINVAL);
		CHECK(strstr(buf_str(&err), "redis-fallback-rate: 3/s is more than rate (2/s)") !=
		      NULL);
		buf_free(&err);
		config_free(&cfg);
	}
}

TEST(redis_keys_need_a_restart)
{
	struct config running, next;
	struct buf err, names;

	buf_init(&err, 4096);
	buf_init(&names, 4096);
	config_init(&running);
	config_init(&next);
	REQUIRE(config_parse_string(&next, "b.conf",
				    "redis = redis://127.0.0.1\nhost-id = h\nquota-scope = s\n"
				    "redis-fallback-rate = 1\nredis-timeout-ms = 500\n"
				    "redis-max-pending = 4\n", &err) == 0);
	CHECK(config_keep_restart_keys(&next, &running, &names) == 6);
	CHECK_STR(buf_str(&names), "redis,host-id,quota-scope,redis-fallback-rate,"
		  "redis-timeout-ms,redis-max-pending");
	CHECK_STR(next.redis, "");
	CHECK(next.redis_timeout_ms == 250);
	config_free(&running);
	config_free(&next);
	buf_free(&err);
	buf_free(&names);
}

/* Is every byte of s in the host id alphabet? */
static bool host_id_alphabet(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == ':' || *s == '-'))
			return false;
	return true;
}

TEST(host_id_defaults_to_the_host_name_and_listen_port)
{
	struct config cfg;
	struct buf err;
	char host[256], want[300], id[REDIS_NAME_MAX + 1];

	REQUIRE(gethostname(host, sizeof(host)) == 0);
	host[sizeof(host) - 1] = '\0';
	for (char *p = host; *p; p++)
		if (!host_id_alphabet((char[]){ *p, 0 }))
			*p = '-';

	CHECK(parse(&cfg, "listen = 127.0.0.1:9091\n", &err) == 0);
	CHECK(config_host_id(&cfg, id, sizeof(id)) == 0);
	snprintf(want, sizeof(want), "%.*s:9091", (int)(REDIS_NAME_MAX - 5), host);
	CHECK_STR(id, want);
	CHECK(host_id_alphabet(id));
	buf_free(&err);
	config_free(&cfg);

	CHECK(parse(&cfg, "listen = [::1]:8443\n", &err) == 0);
	CHECK(config_host_id(&cfg, id, sizeof(id)) == 0);
	snprintf(want, sizeof(want), "%.*s:8443", (int)(REDIS_NAME_MAX - 5), host);
	CHECK_STR(id, want);
	buf_free(&err);
	config_free(&cfg);

	/* A UNIX socket has no port: its path tells two daemons apart. */
	CHECK(parse(&cfg, "listen = unix:/run/camskeyd/a.sock\n", &err) == 0);
	CHECK(config_host_id(&cfg, id, sizeof(id)) == 0);
	snprintf(want, sizeof(want), "%s:run-camskeyd-a.sock", host);
	want[REDIS_NAME_MAX] = '\0';
	CHECK_STR(id, want);
	CHECK(host_id_alphabet(id));
	buf_free(&err);
	config_free(&cfg);
}

TEST(host_id_set_is_used_sanitised_and_bounded)
{
	struct config cfg;
	struct buf err;
	char id[REDIS_NAME_MAX + 1], small[6], tiny[1];

	CHECK(parse(&cfg, "host-id = web-1:8080\n", &err) == 0);
	CHECK(config_host_id(&cfg, id, sizeof(id)) == 0);
	CHECK_STR(id, "web-1:8080");
	/* Cut at size - 1. */
	CHECK(config_host_id(&cfg, small, sizeof(small)) == 0);
	CHECK_STR(small, "web-1");
	/* Too small for even one byte: refused, untouched. */
	tiny[0] = 'x';
	CHECK(config_host_id(&cfg, tiny, sizeof(tiny)) == -EINVAL);
	CHECK(tiny[0] == 'x');

	/* A hand-built config is sanitised too, and cut at 128 bytes. */
	free(cfg.host_id);
	cfg.host_id = xstrdup("a b/c\xc3\xa9");
	CHECK(config_host_id(&cfg, id, sizeof(id)) == 0);
	CHECK_STR(id, "a-b-c--");
	free(cfg.host_id);
	cfg.host_id = xmalloc(301);
	memset(cfg.host_id, 'h', 300);
	cfg.host_id[300] = '\0';
	{
		char big[512];

		CHECK(config_host_id(&cfg, big, sizeof(big)) == 0);
		CHECK(strlen(big) == REDIS_NAME_MAX);
	}
	buf_free(&err);
	config_free(&cfg);
}

TEST(plain_http_upstream_must_be_loopback_unless_allowed)
{
	static const char *const ok[] = { "http://127.0.0.1:9000", "http://127.1.2.3",
					  "http://[::1]:9000/", "http://localhost:9000",
					  "https://cams.example.com" };
	static const char *const refused[] = { "http://10.0.0.1:9000", "http://cams.example.com",
					       "http://[2001:db8::1]:80", "http://127.0.0.1.evil.example" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct config cfg;
		struct buf err;

		config_init(&cfg);
		buf_init(&err, 4096);
		CHECK(config_set(&cfg, "upstream", ok[i], &err) == 0);
		CHECK(config_validate(&cfg, &err) == 0);
		CHECK_STR(buf_str(&err), "");
		buf_free(&err);
		config_free(&cfg);
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct config cfg;
		struct buf err;

		config_init(&cfg);
		buf_init(&err, 4096);
		CHECK(config_set(&cfg, "upstream", refused[i], &err) == 0);
		CHECK(config_validate(&cfg, &err) == -EINVAL);
		CHECK(strstr(buf_str(&err), "allow-insecure-upstream = yes") != NULL);
		buf_reset(&err);
		CHECK(config_set(&cfg, "allow-insecure-upstream", "yes", &err) == 0);
		CHECK(config_validate(&cfg, &err) == 0);
		buf_free(&err);
		config_free(&cfg);
	}
}

TEST(bad_bool_is_refused)
{
	expect_error("allow-remote = maybe\n",
		     "t.conf:1: allow-remote: must be yes or no (or true/false, on/off, 1/0), "
		     "got \"maybe\"\n");
	expect_error("access-log = maybe\n",
		     "t.conf:1: access-log: must be misses, all or off, "
		     "got \"maybe\"\n");
}

TEST(bad_enum_is_refused)
{
	expect_error("signature = v2\n", "t.conf:1: signature: must be v3 or v1, got \"v2\"\n");
	expect_error("log-level = loud\n",
		     "t.conf:1: log-level: must be debug, info, warn or error, got \"loud\"\n");
}

TEST(bad_section_is_refused_and_its_keys_skipped)
{
	expect_error("[server]\nport = 1\nthreads = 3\n",
		     "t.conf:1: [server]: unknown section (expected [camskeyd] or "
		     "[client \"NAME\"])\n");
	expect_error("[client batch]\n",
		     "t.conf:1: [client batch]: the client name must be in double quotes: "
		     "[client \"NAME\"]\n");
	expect_error("[client \"a b\"]\n",
		     "t.conf:1: [client \"a b\"]: a client name is 1 to 64 characters of "
		     "A-Z a-z 0-9 . _ -\n");
	expect_error("[camskeyd\n", "t.conf:1: [camskeyd: section header without ']'\n");
}

TEST(overlong_line_is_refused)
{
	size_t n = LIMIT_CONFIG_LINE_MAX + 20;
	char *text = xmalloc(n + 32);

	memcpy(text, "listen = ", 9);
	memset(text + 9, '1', n - 9);
	memcpy(text + n, "\nthreads = 4\n", 14);
	expect_error(text, "t.conf:1: line longer than 4096 bytes\n");
	free(text);
}

TEST(syntax_errors_are_reported)
{
	expect_error("threads 4\n", "t.conf:1: expected \"key = value\", got \"threads 4\"\n");
	expect_error("= 4\n", "t.conf:1: missing key name before '='\n");
	expect_error("cache = \"/tmp/x\n", "t.conf:1: cache: missing closing double quote\n");
	expect_error("cache = \"/tmp/x\" y\n",
		     "t.conf:1: cache: unexpected text after the closing double quote\n");
	expect_error("threads = 4\nthreads = 5\n",
		     "t.conf:2: threads: set twice (first on line 1)\n");
	expect_error("cache = \"\"\n", "t.conf:1: cache: must not be empty\n");
	expect_error("listen = localhost:8080\n",
		     "t.conf:1: listen: address must be a numeric IPv4 address or an [IPv6] "
		     "address, got \"localhost\"\n");
	expect_error("listen = 127.0.0.1:0\n",
		     "t.conf:1: listen: port must be a number between 1 and 65535, got \"0\"\n");
	expect_error("upstream = ftp://x\n",
		     "t.conf:1: upstream: must start with https:// or http://, got \"ftp://x\"\n");
}

TEST(secret_like_values_are_not_echoed_in_errors)
{
	struct config cfg;
	struct buf err;

	CHECK(parse(&cfg, "admin-token-sha256 = my-very-secret-token\n", &err) == -EINVAL);
	CHECK(strstr(buf_str(&err), "t.conf:1: admin-token-sha256: must be empty or 64 "
				    "lower-case hex digits") != NULL);
	CHECK(strstr(buf_str(&err), "secret") == NULL);
	buf_free(&err);
	config_free(&cfg);
}

TEST(multiple_errors_are_reported_at_once)
{
	struct config cfg;
	struct buf err;
	int rc = parse(&cfg,
		       "threads = zero\n"
		       "listen = 127.0.0.1:8081\n"
		       "bogus = 1\n"
		       "access-log = perhaps\n"
		       "[nope]\n",
		       &err);

	CHECK(rc == -EINVAL);
	CHECK_STR(buf_str(&err),
		  "t.conf:1: threads: must be a whole number between 1 and 64, got \"zero\"\n"
		  "t.conf:3: bogus: unknown key\n"
		  "t.conf:4: access-log: must be misses, all or off, "
		  "got \"perhaps\"\n"
		  "t.conf:5: [nope]: unknown section (expected [camskeyd] or [client \"NAME\"])\n");
	/* The good line in between was applied; the bad ones left defaults. */
	CHECK_STR(cfg.listen, "127.0.0.1:8081");
	CHECK(cfg.threads == 2);
	buf_free(&err);
	config_free(&cfg);
}

#define TOKEN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOKEN_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

TEST(client_sections_are_parsed)
{
	struct config cfg;
	struct buf err;
	const struct config_client *c;
	int rc = parse(&cfg,
		       "threads = 4\n"
		       "[client \"billing-svc\"]\n"
		       "token-sha256 = " TOKEN_A "\n"
		       "weight = 10\n"
		       "max-wait-ms = 1500\n"
		       "[client \"batch.v2\"] # comment\n"
		       "token_sha256 = \"" TOKEN_B "\"\n"
		       "[camskeyd]\n"
		       "burst = 2\n",
		       &err);

	CHECK(rc == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK(cfg.threads == 4);
	CHECK(cfg.burst == 2);
	REQUIRE(cfg.n_clients == 2);
	c = config_client_find(&cfg, "billing-svc");
	REQUIRE(c != NULL);
	CHECK_STR(c->token_sha256, TOKEN_A);
	CHECK(c->weight == 10);
	CHECK(c->max_wait_ms == 1500);
	c = config_client_find(&cfg, "batch.v2");
	REQUIRE(c != NULL);
	CHECK_STR(c->token_sha256, TOKEN_B);
	CHECK(c->weight == 1);
	CHECK(c->max_wait_ms == 0);
	CHECK(config_client_find(&cfg, "nobody") == NULL);
	buf_free(&err);
	config_free(&cfg);
}

TEST(client_section_errors_name_the_client)
{
	expect_error("[client \"a\"]\n[client \"a\"]\n",
		     "t.conf:2: [client \"a\"]: duplicate client section\n");
	expect_error("[client \"a\"]\nweight = 0\n",
		     "t.conf:2: [client \"a\"] weight: must be a whole number between 1 and 1000, "
		     "got \"0\"\n");
	expect_error("[client \"a\"]\ncolour = red\n",
		     "t.conf:2: [client \"a\"] colour: unknown key\n");
	expect_error("[client \"a\"]\nthreads = 3\n",
		     "t.conf:2: [client \"a\"] threads: unknown key in a [client] section (a "
		     "top-level key goes before the first [client] or after [camskeyd])\n");
	expect_error("[client \"a\"]\ntoken-sha256 = ABC\n",
		     "t.conf:2: [client \"a\"] token-sha256: must be empty or 64 lower-case hex "
		     "digits, the SHA-256 of the token (printf %s TOKEN | sha256sum); got 3 "
		     "characters\n");
}

TEST(too_many_clients_are_refused)
{
	struct config cfg;
	struct buf text, err;

	buf_init(&text, 1 << 20);
	for (int i = 0; i <= CONFIG_MAX_CLIENTS; i++)
		buf_printf(&text, "[client \"c%d\"]\nweight = 2\n", i);
	CHECK(parse(&cfg, buf_str(&text), &err) == -EINVAL);
	CHECK_STR(buf_str(&err), "t.conf:129: [client \"c64\"]: too many client sections "
				 "(at most 64)\n");
	CHECK(cfg.n_clients == CONFIG_MAX_CLIENTS);
	buf_free(&text);
	buf_free(&err);
	config_free(&cfg);
}

TEST(state_directory_sets_the_default_cache_path)
{
	struct config cfg;

	setenv("STATE_DIRECTORY", "/var/lib/camskeyd:/var/lib/other", 1);
	config_init(&cfg);
	CHECK_STR(cfg.cache, "/var/lib/camskeyd/cache.db");
	config_free(&cfg);

	setenv("STATE_DIRECTORY", "/var/lib/camskeyd/", 1);
	config_init(&cfg);
	CHECK_STR(cfg.cache, "/var/lib/camskeyd/cache.db");
	config_free(&cfg);

	setenv("STATE_DIRECTORY", "", 1);
	config_init(&cfg);
	CHECK_STR(cfg.cache, "./camskeyd.db");
	config_free(&cfg);
	unsetenv("STATE_DIRECTORY");
}

TEST(remote_listen_without_tokens_is_refused)
{
	struct config cfg;
	struct buf err;

	CHECK(parse(&cfg, "listen = 0.0.0.0:8080\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == -EINVAL);
	CHECK(strncmp(buf_str(&err), "listen: 0.0.0.0:8080 is not a loopback address", 46) == 0);
	CHECK(strstr(buf_str(&err), "allow-remote = yes") != NULL);
	buf_free(&err);
	config_free(&cfg);

	CHECK(parse(&cfg, "listen = 0.0.0.0:8080\nallow-remote = yes\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	buf_free(&err);
	config_free(&cfg);

	CHECK(parse(&cfg, "listen = [::]:8080\n[client \"a\"]\ntoken-sha256 = " TOKEN_A "\n",
		    &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);

	/* Loopback in every spelling needs nothing. */
	CHECK(parse(&cfg, "listen = [::1]:8080\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	buf_free(&err);
	config_free(&cfg);
	CHECK(parse(&cfg, "listen = 127.8.9.10:1\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == 0);
	buf_free(&err);
	config_free(&cfg);
}

TEST(validate_checks_hand_built_configs_and_duplicate_tokens)
{
	struct config cfg;
	struct buf err;

	config_init(&cfg);
	buf_init(&err, ERR_MAX);
	cfg.threads = 0;
	cfg.rate = 0.0;
	cfg.n_clients = 2;
	snprintf(cfg.clients[0].name, sizeof(cfg.clients[0].name), "a");
	snprintf(cfg.clients[0].token_sha256, sizeof(cfg.clients[0].token_sha256), TOKEN_A);
	cfg.clients[0].weight = 1;
	snprintf(cfg.clients[1].name, sizeof(cfg.clients[1].name), "b");
	snprintf(cfg.clients[1].token_sha256, sizeof(cfg.clients[1].token_sha256), TOKEN_A);
	cfg.clients[1].weight = 1;
	CHECK(config_validate(&cfg, &err) == -EINVAL);
	CHECK_STR(buf_str(&err),
		  "threads: must be between 1 and 64, is 0\n"
		  "rate: must be between 0.1 and 1000, is 0\n"
		  "[client \"b\"] token-sha256: the same token as [client \"a\"]; a token must "
		  "name one client\n");
	buf_free(&err);
	config_free(&cfg);

	/* The admin token is a token of its own. */
	CHECK(parse(&cfg, "admin-token-sha256 = " TOKEN_B "\n[client \"a\"]\n"
			  "token-sha256 = " TOKEN_B "\n", &err) == 0);
	CHECK(config_validate(&cfg, &err) == -EINVAL);
	CHECK(strstr(buf_str(&err), "[client \"a\"] token-sha256: the same token as "
				    "admin-token-sha256") != NULL);
	buf_free(&err);
	config_free(&cfg);
}

TEST(flags_override_the_file_whatever_their_order)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode = CONFIG_MODE_HELP;
	int first = -1;
	const char *path = write_tmp("a.conf", "rate = 2\nburst = 3\nttl = 100\n", 29);

	REQUIRE(path != NULL);
	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--rate", "4", "--config", path, "--ttl=200")) == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK(mode == CONFIG_MODE_RUN);
	CHECK(first == 6);
	CHECK(cfg.rate == 4.0);
	CHECK(cfg.burst == 3);
	CHECK(cfg.ttl_s == 200);
	CHECK_STR(cfg.config_file, path);
	buf_free(&err);
	config_free(&cfg);
}

TEST(key_equals_value_flags_and_bool_forms)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode;
	int first;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--config=/dev/null", "--max_wait_ms=7", "--no-access-log",
			    "--allow-remote", "--signature=v1", "--listen", "[::]:9000",
			    "--check-config")) == 0);
	CHECK_STR(buf_str(&err), "");
	CHECK(mode == CONFIG_MODE_CHECK);
	CHECK(cfg.max_wait_ms == 7);
	CHECK_STR(cfg.access_log, "off");
	CHECK(cfg.allow_remote);
	CHECK(cfg.signature == CONFIG_SIGNATURE_V1);
	CHECK_STR(cfg.listen, "[::]:9000");
	buf_free(&err);
	config_free(&cfg);

	/* A bare bool flag takes the next word only when it is a bool. */
	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--access-log", "off", "--allow-remote", "cache",
			    "stats")) == 0);
	CHECK_STR(cfg.access_log, "off");
	CHECK(cfg.allow_remote);
	CHECK(first == 4);
	buf_free(&err);
	config_free(&cfg);
}

TEST(subcommand_stops_option_parsing)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode;
	int first;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--ttl", "5", "cache", "show", "--x", "8613")) == 0);
	CHECK(first == 3);
	CHECK(cfg.ttl_s == 5);
	buf_free(&err);
	config_free(&cfg);

	CHECK(argv_run(&cfg, &err, &mode, &first, ARGV("camskeyd", "--", "--odd")) == 0);
	CHECK(first == 2);
	buf_free(&err);
	config_free(&cfg);

	CHECK(argv_run(&cfg, &err, &mode, &first, ARGV("camskeyd")) == 0);
	CHECK(first == 1);
	CHECK(mode == CONFIG_MODE_RUN);
	buf_free(&err);
	config_free(&cfg);
}

TEST(flag_errors_say_command_line)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode;
	int first;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--colour=red", "-x", "--rate=fast", "--no-listen",
			    "--no-access-log=yes", "--threads")) == -EINVAL);
	CHECK_STR(buf_str(&err),
		  "command line: --colour: unknown option\n"
		  "command line: -x: unknown option\n"
		  "command line: --no-listen: unknown option (--listen is not a yes/no key)\n"
		  "command line: --no-access-log: takes no value\n"
		  "command line: --threads: needs a value\n"
		  "command line: --rate: must be a number between 0.1 and 1000, got \"fast\"\n");
	buf_free(&err);
	config_free(&cfg);
}

TEST(help_and_version_win_over_bad_flags)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode = CONFIG_MODE_RUN;
	int first;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--bogus", "--config", "/nonexistent", "-h")) == 0);
	CHECK(mode == CONFIG_MODE_HELP);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);

	CHECK(argv_run(&cfg, &err, &mode, &first, ARGV("camskeyd", "--version")) == 0);
	CHECK(mode == CONFIG_MODE_VERSION);
	buf_free(&err);
	config_free(&cfg);

	CHECK(argv_run(&cfg, &err, &mode, &first, ARGV("camskeyd", "--print-config",
						       "--check-config")) == 0);
	CHECK(mode == CONFIG_MODE_PRINT);
	buf_free(&err);
	config_free(&cfg);
}

TEST(file_errors_name_the_file)
{
	struct config cfg;
	struct buf err;
	enum config_mode mode;
	int first;
	const char *path;

	CHECK(argv_run(&cfg, &err, &mode, &first,
		       ARGV("camskeyd", "--config", "/nonexistent/camskeyd.conf")) == -EINVAL);
	CHECK_STR(buf_str(&err),
		  "/nonexistent/camskeyd.conf: cannot open: No such file or directory\n");
	buf_free(&err);
	config_free(&cfg);

	path = write_tmp("nul.conf", "threads = 3\nrate = 1\0x\n", 22);
	REQUIRE(path != NULL);
	config_init(&cfg);
	buf_init(&err, ERR_MAX);
	CHECK(config_parse_file(&cfg, path, &err) == -EINVAL);
	CHECK(strstr(buf_str(&err), "nul.conf:2: contains a NUL byte") != NULL);
	buf_free(&err);
	config_free(&cfg);

	path = write_tmp("bad.conf", "threads = 3\n\nrate = fast\n", 25);
	REQUIRE(path != NULL);
	CHECK(argv_run(&cfg, &err, &mode, &first, ARGV("camskeyd", "--config", path)) == -EINVAL);
	CHECK(strstr(buf_str(&err), "bad.conf:3: rate: must be a number") != NULL);
	buf_free(&err);
	config_free(&cfg);
}

TEST(printed_config_parses_back_to_the_same_config)
{
	struct config cfg, again;
	struct buf err;
	char *first_text = NULL, *second_text = NULL;
	size_t first_len = 0, second_len = 0;
	FILE *f;
	size_t n;
	const struct config_key_info *keys = config_keys(&n);

	CHECK(parse(&cfg, "rate = 0.3\nupstream-ca = \"/a b/c\"\nlog-level = warn\n"
			  "[client \"x\"]\nweight = 7\n", &err) == 0);
	f = open_memstream(&first_text, &first_len);
	REQUIRE(f != NULL);
	config_print(&cfg, f);
	fclose(f);
	for (size_t i = 0; i < n; i++) {
		char line[128];

		snprintf(line, sizeof(line), "\n%s = ", keys[i].name);
		CHECK(strstr(first_text, line) != NULL);
	}
	CHECK(strstr(first_text, "\nrate = 0.3\n") != NULL);
	buf_free(&err);

	CHECK(parse(&again, first_text, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	f = open_memstream(&second_text, &second_len);
	REQUIRE(f != NULL);
	config_print(&again, f);
	fclose(f);
	CHECK_STR(first_text, second_text);
	CHECK(again.rate == 0.3);
	CHECK(again.n_clients == 1 && again.clients[0].weight == 7);
	free(first_text);
	free(second_text);
	buf_free(&err);
	config_free(&cfg);
	config_free(&again);
}

TEST(usage_lists_synopsis_and_every_flag)
{
	char *text = NULL;
	size_t len = 0, n;
	const struct config_key_info *keys = config_keys(&n);
	FILE *f = open_memstream(&text, &len);

	REQUIRE(f != NULL);
	config_usage(f);
	fclose(f);
	CHECK(strncmp(text, "usage: camskeyd [--config FILE] [--check-config] [--print-config] "
			    "[--KEY VALUE ...]\n       camskeyd [options] cache list|show PHONE "
			    "[CUSTSPACEID]|purge PHONE [CUSTSPACEID]|stats|warm FILE\n", 185) == 0);
	for (size_t i = 0; i < n; i++) {
		char flag[128];

		snprintf(flag, sizeof(flag), "%s%s", keys[i].type == CONFIG_TYPE_BOOL ? "--[no-]" : "--",
			 keys[i].name);
		CHECK(strstr(text, flag) != NULL);
		CHECK(strstr(text, keys[i].description) != NULL);
	}
	CHECK(strstr(text, "(default: 5000 ms)") != NULL);
	free(text);
}

TEST(config_can_be_reused_after_free)
{
	struct config cfg;
	struct buf err;

	CHECK(parse(&cfg, "listen = 127.0.0.1:1\n", &err) == 0);
	config_free(&cfg);
	CHECK(cfg.listen == NULL);
	config_free(&cfg);
	config_free(NULL);
	buf_free(&err);
	CHECK(parse(&cfg, "listen = 127.0.0.1:2\n", &err) == 0);
	CHECK_STR(cfg.listen, "127.0.0.1:2");
	buf_free(&err);
	config_free(&cfg);
}

/* Drop roff's "\-" escapes so key names and defaults read as plain text. */
static void unescape_roff(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] == '-')
			r++;
		*w++ = *r;
	}
	*w = '\0';
}

TEST(every_key_is_documented_in_the_man_page_and_the_example)
{
	char path[512];
	char *man, *example;
	size_t n;
	const struct config_key_info *keys = config_keys(&n);

	snprintf(path, sizeof(path), "%s/../../docs/camskeyd.conf.5", harness_data_dir());
	man = slurp(path);
	snprintf(path, sizeof(path), "%s/../../config/camskeyd.conf", harness_data_dir());
	example = slurp(path);
	REQUIRE(man != NULL);
	REQUIRE(example != NULL);
	unescape_roff(man);

	for (size_t i = 0; i < n; i++) {
		char want[256];
		const char *entry, *end;
		size_t entry_len;
		struct buf text;

		/* Man page: a .TP entry for the key with its default and reload note. */
		snprintf(want, sizeof(want), "\n.TP\n.BI \"%s = \" ", keys[i].name);
		entry = strstr(man, want);
		if (!entry) {
			fprintf(stderr, "  docs/camskeyd.conf.5: no .TP entry for %s\n", keys[i].name);
			CHECK(entry != NULL);
			continue;
		}
		entry += 1;
		end = strstr(entry + 4, "\n.TP\n");
		if (!end)
			end = strstr(entry, "\n.SH");
		entry_len = end ? (size_t)(end - entry) : strlen(entry);
		buf_init(&text, 1 << 16);
		buf_add(&text, entry, entry_len);
		if (keys[i].default_text[0])
			snprintf(want, sizeof(want), "Default: \\fB%s\\fR", keys[i].default_text);
		else
			snprintf(want, sizeof(want), "Default: empty");
		if (!strstr(buf_str(&text), want)) {
			fprintf(stderr, "  docs/camskeyd.conf.5: %s: no \"%s\"\n", keys[i].name, want);
			CHECK(0);
		}
		snprintf(want, sizeof(want), "Reload: %s", keys[i].reloadable ? "yes" : "no");
		if (!strstr(buf_str(&text), want)) {
			fprintf(stderr, "  docs/camskeyd.conf.5: %s: no \"%s\"\n", keys[i].name, want);
			CHECK(0);
		}
		buf_free(&text);

		/* Example file: the key commented out with its default. */
		snprintf(want, sizeof(want), "\n# %s = %s\n", keys[i].name,
			 keys[i].default_text[0] ? keys[i].default_text : "\"\"");
		if (!strstr(example, want)) {
			fprintf(stderr, "  config/camskeyd.conf: no line \"%.*s\"\n",
				(int)strlen(want) - 2, want + 1);
			CHECK(0);
		}
	}
	/* The client keys too. */
	CHECK(strstr(man, ".BI \"token-sha256 = \" ") != NULL);
	CHECK(strstr(man, ".BI \"weight = \" ") != NULL);
	CHECK(strstr(example, "# token-sha256 = ") != NULL);
	CHECK(strstr(example, "printf %s TOKEN | sha256sum") != NULL);
	free(man);
	free(example);
}

/* "# key = value": a setting commented out, not prose. */
static bool is_commented_setting(const char *line)
{
	size_t i = 2;

	if (strncmp(line, "# ", 2) != 0 || line[2] < 'a' || line[2] > 'z')
		return false;
	while ((line[i] >= 'a' && line[i] <= 'z') || (line[i] >= '0' && line[i] <= '9') ||
	       line[i] == '-')
		i++;
	return strncmp(line + i, " = ", 3) == 0;
}

TEST(example_configuration_parses_cleanly_when_uncommented)
{
	char path[512];
	char *example, *p;
	struct config cfg;
	struct buf err, text;

	snprintf(path, sizeof(path), "%s/../../config/camskeyd.conf", harness_data_dir());
	example = slurp(path);
	REQUIRE(example != NULL);
	/* As shipped (all commented out) it is the defaults. */
	CHECK(parse(&cfg, example, &err) == 0);
	CHECK_STR(buf_str(&err), "");
	buf_free(&err);
	config_free(&cfg);

	/* Uncomment every "# key = value" line: the documented defaults must parse. */
	buf_init(&text, 1 << 20);
	for (p = example; *p;) {
		char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);

		if (is_commented_setting(p))
			buf_add(&text, p + 2, len - 2);
		else if (strncmp(p, "# [client", 9) == 0)
			buf_add(&text, p + 2, len - 2);
		p += len;
	}
	CHECK(parse(&cfg, buf_str(&text), &err) == 0);
	CHECK_STR(buf_str(&err), "");
	/* A bearer-token client and an SDK key-pair client. */
	CHECK(cfg.n_clients == 2);
	buf_free(&err);
	buf_free(&text);
	config_free(&cfg);
	free(example);
}

TEST(reload_keeps_running_values_of_restart_only_keys_and_names_them)
{
	struct config running, next;
	struct buf err, names;

	buf_init(&err, 4096);
	buf_init(&names, 4096);
	config_init(&running);
	config_init(&next);
	REQUIRE(config_parse_string(&running, "a.conf", "listen = 127.0.0.1:9001\nrate = 2\n", &err) == 0);
	REQUIRE(config_parse_string(&next, "b.conf",
				    "listen = 127.0.0.1:9002\nrate = 3\nthreads = 7\n"
				    "signature = v1\nqueue-max = 5\n", &err) == 0);
	CHECK(config_keep_restart_keys(&next, &running, &names) == 3);
	CHECK_STR(buf_str(&names), "listen,threads,signature");
	/* next now describes what runs: restart-only keys as running, the rest new */
	CHECK_STR(next.listen, "127.0.0.1:9001");
	CHECK(next.threads == running.threads);
	CHECK(next.signature == CONFIG_SIGNATURE_V3);
	CHECK(next.rate == 3.0);
	CHECK(next.queue_max == 5);
	/* the same file again (listen "put back" included) keeps nothing */
	buf_reset(&names);
	CHECK(config_keep_restart_keys(&next, &running, &names) == 0);
	CHECK_STR(buf_str(&names), "");
	CHECK(config_keep_restart_keys(&running, &running, NULL) == 0);
	config_free(&running);
	config_free(&next);
	buf_free(&err);
	buf_free(&names);
}

int main(void)
{
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/camskeyd-test-config-XXXXXX");
	if (!mkdtemp(tmp_dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(defaults_are_the_documented_values);
	RUN(defaults_pass_validation);
	RUN(table_has_every_key_once_with_descriptions);
	RUN(parse_string_sets_several_keys);
	RUN(bad_number_reports_file_line_key_and_reason);
	RUN(out_of_range_number_is_refused);
	RUN(unknown_key_is_refused);
	RUN(unknown_key_close_to_a_known_one_gets_a_did_you_mean);
	RUN(redis_keys_take_good_values);
	RUN(redis_keys_refuse_bad_values_naming_file_line_and_key);
	RUN(redis_flags_are_options_too);
	RUN(fallback_rate_above_rate_is_refused_when_redis_is_set);
	RUN(redis_keys_need_a_restart);
	RUN(host_id_defaults_to_the_host_name_and_listen_port);
	RUN(host_id_set_is_used_sanitised_and_bounded);
	RUN(plain_http_upstream_must_be_loopback_unless_allowed);
	RUN(bad_bool_is_refused);
	RUN(bad_enum_is_refused);
	RUN(bad_section_is_refused_and_its_keys_skipped);
	RUN(overlong_line_is_refused);
	RUN(syntax_errors_are_reported);
	RUN(secret_like_values_are_not_echoed_in_errors);
	RUN(multiple_errors_are_reported_at_once);
	RUN(client_sections_are_parsed);
	RUN(client_section_errors_name_the_client);
	RUN(too_many_clients_are_refused);
	RUN(state_directory_sets_the_default_cache_path);
	RUN(remote_listen_without_tokens_is_refused);
	RUN(validate_checks_hand_built_configs_and_duplicate_tokens);
	RUN(flags_override_the_file_whatever_their_order);
	RUN(key_equals_value_flags_and_bool_forms);
	RUN(subcommand_stops_option_parsing);
	RUN(flag_errors_say_command_line);
	RUN(help_and_version_win_over_bad_flags);
	RUN(file_errors_name_the_file);
	RUN(printed_config_parses_back_to_the_same_config);
	RUN(usage_lists_synopsis_and_every_flag);
	RUN(config_can_be_reused_after_free);
	RUN(every_key_is_documented_in_the_man_page_and_the_example);
	RUN(example_configuration_parses_cleanly_when_uncommented);
	RUN(reload_keeps_running_values_of_restart_only_keys_and_names_them);
	{
		char path[128];
		const char *names[] = { "a.conf", "nul.conf", "bad.conf" };

		for (size_t i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s/%s", tmp_dir, names[i]);
			unlink(path);
		}
		rmdir(tmp_dir);
	}
	return harness_done();
}
