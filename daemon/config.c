/*
 * config.c -- the configuration: one table of keys, and everything driven
 * by it (see config.h).
 *
 * The table (CONFIG_TABLE below) is the single place where a key exists:
 * its field in struct config, its INI/flag name, default, unit, bounds,
 * whether SIGHUP may change it and one line of description. It is expanded
 * twice, Varnish tbl/params.h style: once into the public struct
 * config_key_info array that config_keys() exposes (for --help, the docs
 * test, anything that lists keys) and once into the private key_spec array
 * that says where and how a value is stored. _Generic in the expansion checks
 * at compile time that each row's type matches its field. Defaults are
 * applied by parsing the row's default text with the same setter a file or
 * flag goes through, so the documented default cannot drift from the real
 * one.
 *
 * Owns: the strings inside a struct config (config_free releases them).
 * Invariants: every value stored passed its row's checks; errors are
 * collected, never fatal, one line each, so a user sees every mistake at
 * once. Parsing of a file/string applies each good line as it goes; callers
 * build a fresh struct config for a reload and swap it in only when
 * config_validate() agrees.
 * Does not: log, read the credential (only its path), open sockets or
 * files other than the configuration file, or call setlocale (numbers are
 * parsed in the C locale the daemon runs in).
 * Threads: one thread builds a config; afterwards it is read-only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mem.h"
#include "netaddr.h"
#include "redis.h"
#include "span.h"

/* A value quoted in an error message is cut after this many bytes. */
#define QUOTE_MAX_BYTES 80
/* Room for one reason text before it is prefixed with file:line: key. */
#define REASON_MAX_BYTES 1024
/* Longest key name we bother to look up (longer ones are unknown). */
#define KEY_NAME_MAX 64

/* ---- value checks used by the table ------------------------------------- */

static int check_listen(const char *value, struct buf *reason);
static int check_sha256_or_empty(const char *value, struct buf *reason);
static int check_url(const char *value, struct buf *reason);
static int check_not_empty(const char *value, struct buf *reason);
static int check_mode(const char *value, struct buf *reason);
static int check_redis_url(const char *value, struct buf *reason);
static int check_redis_name(const char *value, struct buf *reason);

struct choice {
	const char *name;
	int value;
	const char *alias_of;   /* an old spelling of that choice: accepted, not listed */
};

static const struct choice signature_choices[] = {
	{ "v3", CONFIG_SIGNATURE_V3, NULL },
	{ "v1", CONFIG_SIGNATURE_V1, NULL },
	{ NULL, 0, NULL },
};

/*
 * Which requests get an access line (log.h): misses, errors and refusals
 * always; successful answers from memory only with "all". "yes", "no"
 * and the other bool words are the spellings of the time when it was a
 * switch (yes: every request, as then).
 */
static const struct choice access_log_choices[] = {
	{ "misses", 0, NULL },
	{ "all", 0, NULL },
	{ "off", 0, NULL },
	{ "yes", 0, "all" },
	{ "on", 0, "all" },
	{ "true", 0, "all" },
	{ "no", 0, "off" },
	{ "false", 0, "off" },
	{ NULL, 0, NULL },
};

static const struct choice log_level_choices[] = {
	{ "debug", 0, NULL },
	{ "info", 1, NULL },
	{ "warn", 2, NULL },
	{ "error", 3, NULL },
	{ NULL, 0, NULL },
};

/* Longest accepted values, so nothing a config says is unbounded. */
#define ONE_YEAR_S 31536000

/*
 * The table. Rows by type:
 *   S(field, name, default, METAVAR, reload, check, description)      string
 *   U(field, name, default, unit, METAVAR, reload, min, max, descr.)  unsigned / uint64_t
 *   D(field, name, default, unit, METAVAR, reload, min, max, descr.)  double
 *   B(field, name, default, reload, description)                      bool
 *   E(field, name, default, reload, choices, description)             enum
 * Second-valued keys are integer seconds in fields ending in _s. The
 * upper bounds of the time windows (one year) keep now + window far from
 * overflowing in the cache's arithmetic.
 */
#define CONFIG_TABLE(S, U, D, B, E) \
	/* front end */ \
	S(listen, "listen", "127.0.0.1:8080", "ADDR:PORT", false, check_listen, \
	  "address and port to serve on: IPV4:PORT, [IPV6]:PORT or unix:/PATH") \
	S(unix_socket_mode, "unix-socket-mode", "0660", "MODE", false, check_mode, \
	  "permissions (octal) of the UNIX socket when listen is unix:/PATH") \
	S(unix_socket_group, "unix-socket-group", "", "GROUP", false, NULL, \
	  "group given to the UNIX socket (the daemon must be a member); empty: the daemon's own") \
	B(allow_remote, "allow-remote", "no", false, \
	  "permit a non-loopback listen address although no client has a token") \
	U(threads, "threads", "2", "", "N", false, 1, 64, \
	  "HTTP worker threads") \
	U(max_connections, "max-connections", "8192", "", "N", false, 16, 1000000, \
	  "simultaneous client connections, those waiting for quota included") \
	U(connection_timeout_s, "connection-timeout", "30", "s", "SECONDS", false, 1, 3600, \
	  "idle client connection timeout, and the time allowed to send a request head") \
	U(shutdown_grace_s, "shutdown-grace", "10", "s", "SECONDS", true, 0, 300, \
	  "on SIGTERM, how long upstream calls in progress may finish before callers get 503") \
	S(admin_token_sha256, "admin-token-sha256", "", "HEX", true, check_sha256_or_empty, \
	  "SHA-256 (64 lower-case hex) of the admin bearer token; empty disables admin requests") \
	/* upstream */ \
	S(upstream, "upstream", "https://cams.ap-southeast-1.aliyuncs.com", "URL", false, check_url, \
	  "upstream base URL: https://..., or http://127.0.0.1:PORT for a simulator") \
	B(allow_insecure_upstream, "allow-insecure-upstream", "no", false, \
	  "permit a plain http:// upstream that is not a loopback address (the key could be swapped on the way)") \
	S(upstream_ca, "upstream-ca", "", "FILE", false, NULL, \
	  "extra CA bundle (PEM) to verify the upstream; empty: the system store only") \
	E(signature, "signature", "v3", false, signature_choices, \
	  "request signature: v3 (ACS3-HMAC-SHA256) or v1 (RPC HMAC-SHA1)") \
	U(upstream_connect_timeout_ms, "upstream-connect-timeout-ms", "3000", "ms", "MS", false, \
	  100, 60000, "upstream connect timeout, TLS handshake included") \
	U(upstream_timeout_ms, "upstream-timeout-ms", "10000", "ms", "MS", false, 100, 120000, \
	  "timeout of a whole upstream call") \
	U(upstream_retries, "upstream-retries", "3", "", "N", true, 0, 10, \
	  "retries of a call the upstream throttled (System.LimitControl)") \
	S(credentials_file, "credentials-file", "", "FILE", true, NULL, \
	  "file with the AccessKey, readable by its owner only; empty: environment or $CREDENTIALS_DIRECTORY") \
	/* quota */ \
	D(rate, "rate", "5", "1/s", "N", true, 0.1, 1000, \
	  "upstream calls per second; the account's quota is 5, shared by all its users") \
	U(burst, "burst", "1", "", "N", true, 1, 1000, \
	  "token bucket size; 1 spaces calls evenly") \
	U(rate_margin_ms, "rate-margin-ms", "20", "ms", "MS", true, 0, 1000, \
	  "safety margin added to each one-second quota window") \
	U(max_wait_ms, "max-wait-ms", "5000", "ms", "MS", true, 0, 600000, \
	  "longest a caller waits for quota unless it asks for less") \
	U(queue_max, "queue-max", "10000", "", "N", true, 1, 1000000, \
	  "upstream calls (distinct keys) callers wait for quota for; refreshes use only room left; past it 503 Proxy.QueueFull") \
	/* shared (Redis): quota, cache and flights across hosts */ \
	S(redis, "redis", "", "URL", false, check_redis_url, \
	  "share the quota, the cache and flights with other hosts on Redis: " \
	  "redis://[user@]IP[:PORT][/DB] or unix:///PATH; empty: this host alone") \
	S(host_id, "host-id", "", "NAME", false, check_redis_name, \
	  "this host's name in the shared limiter and leases; empty: the host name and the listen port") \
	S(quota_scope, "quota-scope", "", "NAME", false, check_redis_name, \
	  "hosts sharing one account's quota set the same scope; empty: the AccessKey ID") \
	D(redis_fallback_rate, "redis-fallback-rate", "0", "1/s", "N", false, 0, 1000, \
	  "0: while Redis is unreachable no upstream call is made (fail closed: misses answer " \
	  "503 Proxy.SharedQuotaUnavailable, stale-if-error entries served); N: each host's own " \
	  "budget, used once Redis has been unreachable for a window; the budgets of all hosts " \
	  "must add up to at most the quota") \
	U(redis_timeout_ms, "redis-timeout-ms", "250", "ms", "MS", false, 10, 10000, \
	  "deadline of every Redis command; connecting and the handshake get four times as long") \
	U(redis_max_pending, "redis-max-pending", "2", "", "N", false, 1, 16, \
	  "reservations of the shared limiter one host may hold before they are due (fairness between hosts)") \
	/* cache */ \
	S(cache, "cache", "./camskeyd.db", "FILE", false, check_not_empty, \
	  "SQLite cache database ($STATE_DIRECTORY/cache.db when systemd sets STATE_DIRECTORY)") \
	U(ttl_s, "ttl", "86400", "s", "SECONDS", true, 1, ONE_YEAR_S, \
	  "lifetime of a cached key whose status is VALID") \
	U(status_ttl_s, "status-ttl", "300", "s", "SECONDS", true, 0, ONE_YEAR_S, \
	  "lifetime of a cached key whose status is not VALID") \
	U(negative_ttl_s, "negative-ttl", "60", "s", "SECONDS", true, 0, 86400, \
	  "lifetime of a cached definitive upstream error; 0 disables") \
	U(stale_while_revalidate_s, "stale-while-revalidate", "300", "s", "SECONDS", true, 0, \
	  ONE_YEAR_S, "how long past expiry a key may be served while it is refreshed") \
	U(stale_if_error_s, "stale-if-error", "86400", "s", "SECONDS", true, 0, ONE_YEAR_S, \
	  "how long past expiry a key may be served when the upstream fails") \
	U(max_entries, "max-entries", "1000000", "", "N", false, 1, 100000000, \
	  "cache size bound; the least recently used entries are evicted") \
	U(hot_entries, "hot-entries", "0", "", "N", false, 0, 100000000, \
	  "entries kept in memory for the hit path, loaded at start; 0: all of them (max-entries)") \
	U(refresh_ahead_s, "refresh-ahead", "600", "s", "SECONDS", true, 0, ONE_YEAR_S, \
	  "refresh keys in use this long before they expire, on spare quota; 0 disables") \
	/* logging */ \
	E(log_level, "log-level", "info", true, log_level_choices, \
	  "least level logged: debug, info, warn or error") \
	E(access_log, "access-log", "misses", true, access_log_choices, \
	  "access lines: misses (every request but successful answers from memory), all, or off")

/* Compile-time check that a row's type matches its field. */
#define FIELD(f) (((struct config *)0)->f)

enum store {
	STORE_STR,       /* char *, owned */
	STORE_UINT,      /* unsigned */
	STORE_U64,       /* uint64_t */
	STORE_DOUBLE,
	STORE_BOOL,
	STORE_SIGNATURE, /* enum config_signature; a new enum field adds a kind */
	STORE_ENUM_STR,  /* char *, one of the choices' names */
};

struct key_spec {
	enum store store;
	size_t offset;
	const char *metavar;        /* for --help: "MS", "FILE", ... */
	uint64_t min_u, max_u;
	double min_d, max_d;
	const struct choice *choices;
	int (*check)(const char *value, struct buf *reason);
};

#define INFO_S(f, name, def, meta, reload, check, desc) \
	{ name, CONFIG_TYPE_STRING, def, "", reload, desc },
#define INFO_U(f, name, def, unit, meta, reload, min, max, desc) \
	{ name, CONFIG_TYPE_UINT, def, unit, reload, desc },
#define INFO_D(f, name, def, unit, meta, reload, min, max, desc) \
	{ name, CONFIG_TYPE_DOUBLE, def, unit, reload, desc },
#define INFO_B(f, name, def, reload, desc) \
	{ name, CONFIG_TYPE_BOOL, def, "", reload, desc },
#define INFO_E(f, name, def, reload, choices, desc) \
	{ name, CONFIG_TYPE_ENUM, def, "", reload, desc },

static const struct config_key_info key_infos[] = {
	CONFIG_TABLE(INFO_S, INFO_U, INFO_D, INFO_B, INFO_E)
};

#define SPEC_S(f, name, def, meta, reload, chk, desc) \
	{ .store = _Generic(FIELD(f), char *: STORE_STR), .offset = offsetof(struct config, f), \
	  .metavar = meta, .check = chk },
#define SPEC_U(f, name, def, unit, meta, reload, min, max, desc) \
	{ .store = _Generic(FIELD(f), unsigned: STORE_UINT, uint64_t: STORE_U64), \
	  .offset = offsetof(struct config, f), .metavar = meta, .min_u = min, .max_u = max },
#define SPEC_D(f, name, def, unit, meta, reload, min, max, desc) \
	{ .store = _Generic(FIELD(f), double: STORE_DOUBLE), .offset = offsetof(struct config, f), \
	  .metavar = meta, .min_d = min, .max_d = max },
#define SPEC_B(f, name, def, reload, desc) \
	{ .store = _Generic(FIELD(f), bool: STORE_BOOL), .offset = offsetof(struct config, f), \
	  .metavar = "yes|no" },
#define SPEC_E(f, name, def, reload, chs, desc) \
	{ .store = _Generic(FIELD(f), char *: STORE_ENUM_STR, \
			    enum config_signature: STORE_SIGNATURE), \
	  .offset = offsetof(struct config, f), .metavar = NULL, .choices = chs },

static const struct key_spec key_specs[] = {
	CONFIG_TABLE(SPEC_S, SPEC_U, SPEC_D, SPEC_B, SPEC_E)
};

#define N_KEYS (sizeof(key_infos) / sizeof(key_infos[0]))
_Static_assert(sizeof(key_specs) / sizeof(key_specs[0]) == N_KEYS, "one table, two views");

/* The keys of a [client "NAME"] section. */
enum client_key {
	CLIENT_KEY_TOKEN,
	CLIENT_KEY_WEIGHT,
	CLIENT_KEY_MAX_WAIT,
	CLIENT_KEY_ACCESS_KEY_ID,
	CLIENT_KEY_ACCESS_KEY_SECRET_FILE,
	N_CLIENT_KEYS,
};

static const char *const client_key_names[N_CLIENT_KEYS] = {
	"token-sha256",
	"weight",
	"max-wait-ms",
	"access-key-id",
	"access-key-secret-file",
};

/* An AccessKey ID camskeyd issues: 1 to 128 of A-Z a-z 0-9 . _ - */
static bool valid_access_key_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > LIMIT_ACCESS_KEY_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* An absolute path, or a plain name under $CREDENTIALS_DIRECTORY. */
static bool valid_secret_file(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CONFIG_PATH_MAX)
		return false;
	if (s[0] == '/')
		return true;
	return strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

#define CLIENT_WEIGHT_MAX 1000
#define CLIENT_MAX_WAIT_MS_MAX 600000

const struct config_key_info *config_keys(size_t *ret_count)
{
	*ret_count = N_KEYS;
	return key_infos;
}

/* ---- small text helpers -------------------------------------------------- */

/* Append s quoted, printable ASCII kept, cut long (buf_add_quoted). */
static void add_quoted(struct buf *b, const char *s, size_t n)
{
	buf_add_quoted(b, s, n, QUOTE_MAX_BYTES);
}

/* Append a name the user wrote, replacing anything unprintable by '?'. */
static void add_name(struct buf *b, const char *s, size_t n)
{
	size_t shown = n > QUOTE_MAX_BYTES ? QUOTE_MAX_BYTES : n;

	for (size_t i = 0; i < shown; i++) {
		unsigned char c = (unsigned char)s[i];

		buf_addc(b, c >= 0x20 && c < 0x7f ? (char)c : '?');
	}
	if (shown < n)
		buf_adds(b, "...");
}

/* Key names: '_' is accepted for '-'. -E2BIG if too long to be a key. */
static int normalize_name(struct span s, char *out, size_t out_size)
{
	if (s.len + 1 > out_size)
		return -E2BIG;
	for (size_t i = 0; i < s.len; i++)
		out[i] = s.p[i] == '_' ? '-' : s.p[i];
	out[s.len] = '\0';
	return 0;
}

static int find_key(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(key_infos[i].name, name) == 0)
			return (int)i;
	return -1;
}

/*
 * Levenshtein distance between a and b, for "did you mean". Both are key
 * names, at most KEY_NAME_MAX bytes (longer ones are never compared).
 */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[KEY_NAME_MAX + 1];

	if (la > KEY_NAME_MAX || lb > KEY_NAME_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/*
 * The name in names[0..n) closest to name, or NULL when none is close
 * enough to be a likely typo: at most 2 edits, 3 for names over 8 bytes,
 * and fewer edits than the name has bytes.
 */
static const char *closest_name(const char *name, const char *const *names, size_t n)
{
	size_t len = strlen(name), limit = len > 8 ? 3 : 2, best = SIZE_MAX;
	const char *found = NULL;

	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(name, names[i]);

		if (d < best) {
			best = d;
			found = names[i];
		}
	}
	return best <= limit && best < len ? found : NULL;
}

/* The top-level key closest to name (see closest_name), or NULL. */
static const char *suggest_key(const char *name, bool with_flags)
{
	static const char *const flag_names[] = { "config", "check-config", "print-config",
						  "help", "version" };
	const char *names[N_KEYS + sizeof(flag_names) / sizeof(flag_names[0])];
	size_t n = 0;

	for (size_t i = 0; i < N_KEYS; i++)
		names[n++] = key_infos[i].name;
	if (with_flags)
		for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
			names[n++] = flag_names[i];
	return closest_name(name, names, n);
}

/* ": unknown option" with a "did you mean" when a flag is close; then '\n'. */
static void add_unknown_option(struct buf *b, const char *name)
{
	const char *near = suggest_key(name, true);

	buf_adds(b, ": unknown option");
	if (strncmp(name, "no-", 3) == 0 && find_key(name + 3) >= 0)
		buf_printf(b, " (--%s is not a yes/no key)", name + 3);
	else if (near)
		buf_printf(b, " (did you mean --%s?)", near);
	buf_addc(b, '\n');
}

static void *field_of(struct config *cfg, size_t i)
{
	return (char *)cfg + key_specs[i].offset;
}

static const void *cfield_of(const struct config *cfg, size_t i)
{
	return (const char *)cfg + key_specs[i].offset;
}

static const char *unit_words(const char *unit)
{
	if (strcmp(unit, "s") == 0)
		return " (seconds)";
	if (strcmp(unit, "ms") == 0)
		return " (milliseconds)";
	return "";
}

/* ---- value checks -------------------------------------------------------- */

static int check_mode(const char *value, struct buf *reason)
{
	size_t n = strlen(value);

	if (n < 3 || n > 4 || strspn(value, "01234567") != n) {
		buf_adds(reason, "must be an octal mode such as 0660, got ");
		add_quoted(reason, value, n);
		return -EINVAL;
	}
	return 0;
}

static int check_listen(const char *value, struct buf *reason)
{
	struct netaddr na;

	return netaddr_parse(value, &na, reason);
}

static bool is_sha256_hex(const char *value)
{
	size_t n = strlen(value);

	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((value[i] >= '0' && value[i] <= '9') || (value[i] >= 'a' && value[i] <= 'f')))
			return false;
	return true;
}

/*
 * The value is not echoed: someone who pasted the token itself instead of
 * its hash must not find the secret in a log line.
 */
static int check_sha256(const char *value, bool empty_ok, struct buf *reason)
{
	if ((empty_ok && value[0] == '\0') || is_sha256_hex(value))
		return 0;
	buf_printf(reason, "must be %s64 lower-case hex digits, the SHA-256 of the token "
		   "(printf %%s TOKEN | sha256sum); got %zu characters%s",
		   empty_ok ? "empty or " : "", strlen(value),
		   strlen(value) == 64 ? " that are not all lower-case hex" : "");
	return -EINVAL;
}

static int check_sha256_or_empty(const char *value, struct buf *reason)
{
	return check_sha256(value, true, reason);
}

static int check_url(const char *value, struct buf *reason)
{
	struct span s = span_cstr(value);
	size_t scheme_len;

	if (span_starts_with(s, "https://"))
		scheme_len = 8;
	else if (span_starts_with(s, "http://"))
		scheme_len = 7;
	else {
		buf_adds(reason, "must start with https:// or http://, got ");
		add_quoted(reason, value, strlen(value));
		return -EINVAL;
	}
	if (value[scheme_len] == '\0' || value[scheme_len] == '/') {
		buf_adds(reason, "has no host, got ");
		add_quoted(reason, value, strlen(value));
		return -EINVAL;
	}
	return 0;
}

/* Empty (no Redis), or what redis_parse_url accepts (its message as the reason). */
static int check_redis_url(const char *value, struct buf *reason)
{
	struct redis_address addr;
	char why[256];

	if (value[0] == '\0')
		return 0;
	if (redis_parse_url(value, &addr, why, sizeof(why)) == 0)
		return 0;
	/* Its messages start with "redis: ", which the key name already says. */
	buf_adds(reason, strncmp(why, "redis: ", 7) == 0 ? why + 7 : why);
	return -EINVAL;
}

/* host-id, quota-scope: empty (the default is derived), or 1..128 of the alphabet. */
static int check_redis_name(const char *value, struct buf *reason)
{
	size_t n = strlen(value);

	if (n <= REDIS_NAME_MAX) {
		size_t i = 0;

		while (i < n && redis_name_char(value[i]))
			i++;
		if (i == n)
			return 0;
	}
	buf_printf(reason, "must be empty or 1 to %d characters of A-Z a-z 0-9 . _ : -, got ",
		   REDIS_NAME_MAX);
	add_quoted(reason, value, n);
	return -EINVAL;
}

static int check_not_empty(const char *value, struct buf *reason)
{
	if (value[0] != '\0')
		return 0;
	buf_adds(reason, "must not be empty");
	return -EINVAL;
}

static int parse_bool(const char *value, bool *ret)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * A plain decimal: digits with at most one '.', nothing else, so that
 * strtod's extras (hex, exponents, inf, nan, leading blanks) are refused.
 */
static int parse_double(const char *value, double min, double max, double *ret)
{
	size_t digits = 0, dots = 0;
	char *end;
	double v;

	for (const char *p = value; *p; p++) {
		if (*p >= '0' && *p <= '9')
			digits++;
		else if (*p == '.')
			dots++;
		else
			return -EINVAL;
	}
	if (digits == 0 || dots > 1)
		return -EINVAL;
	errno = 0;
	v = strtod(value, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v))
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

static void add_choices(struct buf *b, const struct choice *choices)
{
	size_t n = 0;

	while (choices[n].name && !choices[n].alias_of)
		n++;
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			buf_adds(b, i + 1 == n ? " or " : ", ");
		buf_adds(b, choices[i].name);
	}
}

static bool has_control(const char *value)
{
	for (const char *p = value; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/*
 * Store value (NUL-terminated) into key i of cfg. 0, or -EINVAL with the
 * reason in reason and cfg untouched.
 */
static int set_value(struct config *cfg, size_t i, const char *value, struct buf *reason)
{
	const struct key_spec *k = &key_specs[i];
	void *field = field_of(cfg, i);
	uint64_t u;
	double d;
	bool flag;

	switch (k->store) {
	case STORE_STR:
		if (has_control(value)) {
			buf_adds(reason, "must not contain control characters");
			return -EINVAL;
		}
		/* A value must print back as "value" (--print-config reads back). */
		if (strchr(value, '"')) {
			buf_adds(reason, "must not contain a double quote");
			return -EINVAL;
		}
		if (k->check && k->check(value, reason) < 0)
			return -EINVAL;
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case STORE_UINT:
	case STORE_U64:
		if (str_to_u64(value, k->min_u, k->max_u, &u) < 0) {
			buf_printf(reason, "must be a whole number between %" PRIu64 " and %" PRIu64
				   "%s, got ", k->min_u, k->max_u, unit_words(key_infos[i].unit));
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		if (k->store == STORE_UINT)
			*(unsigned *)field = (unsigned)u;
		else
			*(uint64_t *)field = u;
		return 0;
	case STORE_DOUBLE:
		if (parse_double(value, k->min_d, k->max_d, &d) < 0) {
			buf_printf(reason, "must be a number between %g and %g, got ", k->min_d,
				   k->max_d);
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		*(double *)field = d;
		return 0;
	case STORE_BOOL:
		if (parse_bool(value, &flag) < 0) {
			buf_adds(reason, "must be yes or no (or true/false, on/off, 1/0), got ");
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		*(bool *)field = flag;
		return 0;
	case STORE_SIGNATURE:
	case STORE_ENUM_STR:
		for (const struct choice *c = k->choices; c->name; c++) {
			if (strcmp(value, c->name) != 0)
				continue;
			if (k->store == STORE_SIGNATURE) {
				*(enum config_signature *)field = (enum config_signature)c->value;
			} else {
				free(*(char **)field);
				*(char **)field = xstrdup(c->alias_of ? c->alias_of : c->name);
			}
			return 0;
		}
		buf_adds(reason, "must be ");
		add_choices(reason, k->choices);
		buf_adds(reason, ", got ");
		add_quoted(reason, value, strlen(value));
		return -EINVAL;
	}
	return -EINVAL;
}

/* Check the value already in key i (for configurations built by hand). */
static int check_value(const struct config *cfg, size_t i, struct buf *reason)
{
	const struct key_spec *k = &key_specs[i];
	const void *field = cfield_of(cfg, i);
	uint64_t u;
	double d;

	switch (k->store) {
	case STORE_STR: {
		const char *s = *(char *const *)field;

		if (!s) {
			buf_adds(reason, "is not set");
			return -EINVAL;
		}
		if (has_control(s)) {
			buf_adds(reason, "must not contain control characters");
			return -EINVAL;
		}
		return k->check ? k->check(s, reason) : 0;
	}
	case STORE_UINT:
	case STORE_U64:
		u = k->store == STORE_UINT ? *(const unsigned *)field : *(const uint64_t *)field;
		if (u >= k->min_u && u <= k->max_u)
			return 0;
		buf_printf(reason, "must be between %" PRIu64 " and %" PRIu64 "%s, is %" PRIu64,
			   k->min_u, k->max_u, unit_words(key_infos[i].unit), u);
		return -EINVAL;
	case STORE_DOUBLE:
		d = *(const double *)field;
		if (isfinite(d) && d >= k->min_d && d <= k->max_d)
			return 0;
		buf_printf(reason, "must be between %g and %g, is %g", k->min_d, k->max_d, d);
		return -EINVAL;
	case STORE_BOOL:
		return 0;
	case STORE_SIGNATURE:
	case STORE_ENUM_STR:
		for (const struct choice *c = k->choices; c->name; c++) {
			if (k->store == STORE_SIGNATURE &&
			    (int)*(const enum config_signature *)field == c->value)
				return 0;
			if (k->store == STORE_ENUM_STR && *(char *const *)field &&
			    strcmp(*(char *const *)field, c->name) == 0)
				return 0;
		}
		buf_adds(reason, "must be ");
		add_choices(reason, k->choices);
		return -EINVAL;
	}
	return -EINVAL;
}

/* The value of key i as text, for --print-config; "" for unset strings. */
static void add_value_text(struct buf *b, const struct config *cfg, size_t i)
{
	const struct key_spec *k = &key_specs[i];
	const void *field = cfield_of(cfg, i);

	switch (k->store) {
	case STORE_STR:
	case STORE_ENUM_STR: {
		const char *s = *(char *const *)field;

		buf_adds(b, s ? s : "");
		break;
	}
	case STORE_UINT:
		buf_printf(b, "%u", *(const unsigned *)field);
		break;
	case STORE_U64:
		buf_printf(b, "%" PRIu64, *(const uint64_t *)field);
		break;
	case STORE_DOUBLE:
		buf_printf(b, "%.15g", *(const double *)field);
		break;
	case STORE_BOOL:
		buf_adds(b, *(const bool *)field ? "yes" : "no");
		break;
	case STORE_SIGNATURE:
		for (const struct choice *c = k->choices; c->name; c++)
			if ((int)*(const enum config_signature *)field == c->value)
				buf_adds(b, c->name);
		break;
	}
}

/* ---- init / free --------------------------------------------------------- */

/* systemd's StateDirectory= sets STATE_DIRECTORY, a colon-separated list. */
static char *default_cache_path(void)
{
	const char *dir = getenv("STATE_DIRECTORY");
	struct buf b;
	size_t n;

	if (!dir || !*dir)
		return NULL;
	n = strcspn(dir, ":");
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n == 0)
		return NULL;
	buf_init(&b, 4096 + 16);
	buf_add(&b, dir, n);
	buf_adds(&b, n == 1 && dir[0] == '/' ? "cache.db" : "/cache.db");
	if (buf_error(&b) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

void config_init(struct config *cfg)
{
	struct buf reason;
	char *state_cache;

	memset(cfg, 0, sizeof(*cfg));
	buf_init(&reason, REASON_MAX_BYTES);
	for (size_t i = 0; i < N_KEYS; i++) {
		int rc = set_value(cfg, i, key_infos[i].default_text, &reason);

		/* A default the table's own checks refuse is our bug. */
		if (rc < 0) {
			fprintf(stderr, "config: default of %s: %s\n", key_infos[i].name,
				buf_str(&reason));
			abort();
		}
	}
	buf_free(&reason);

	state_cache = default_cache_path();
	if (state_cache) {
		free(cfg->cache);
		cfg->cache = state_cache;
	}
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_KEYS; i++) {
		enum store st = key_specs[i].store;

		if (st == STORE_STR || st == STORE_ENUM_STR)
			free(*(char **)field_of(cfg, i));
	}
	free(cfg->config_file);
	memset(cfg, 0, sizeof(*cfg));
}

/* Do the values of key i differ between a and b? */
static bool key_differs(const struct config *a, const struct config *b, size_t i)
{
	const void *fa = cfield_of(a, i), *fb = cfield_of(b, i);

	switch (key_specs[i].store) {
	case STORE_STR:
	case STORE_ENUM_STR: {
		const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;

		return strcmp(sa ? sa : "", sb ? sb : "") != 0;
	}
	case STORE_UINT:
		return *(const unsigned *)fa != *(const unsigned *)fb;
	case STORE_U64:
		return *(const uint64_t *)fa != *(const uint64_t *)fb;
	case STORE_DOUBLE:
		return *(const double *)fa != *(const double *)fb;
	case STORE_BOOL:
		return *(const bool *)fa != *(const bool *)fb;
	case STORE_SIGNATURE:
		return *(const enum config_signature *)fa != *(const enum config_signature *)fb;
	}
	return false;
}

unsigned config_keep_restart_keys(struct config *next, const struct config *running,
				  struct buf *names)
{
	unsigned n = 0;

	for (size_t i = 0; i < N_KEYS; i++) {
		void *f;

		if (key_infos[i].reloadable || !key_differs(next, running, i))
			continue;
		if (names)
			buf_printf(names, "%s%s", n ? "," : "", key_infos[i].name);
		n++;
		f = field_of(next, i);
		switch (key_specs[i].store) {
		case STORE_STR:
		case STORE_ENUM_STR: {
			const char *r = *(char *const *)cfield_of(running, i);

			free(*(char **)f);
			*(char **)f = r ? xstrdup(r) : NULL;
			break;
		}
		case STORE_UINT:
			*(unsigned *)f = *(const unsigned *)cfield_of(running, i);
			break;
		case STORE_U64:
			*(uint64_t *)f = *(const uint64_t *)cfield_of(running, i);
			break;
		case STORE_DOUBLE:
			*(double *)f = *(const double *)cfield_of(running, i);
			break;
		case STORE_BOOL:
			*(bool *)f = *(const bool *)cfield_of(running, i);
			break;
		case STORE_SIGNATURE:
			*(enum config_signature *)f =
				*(const enum config_signature *)cfield_of(running, i);
			break;
		}
	}
	return n;
}

/* The bytes a host id is made of; anything else becomes '-' (config_host_id). */
static size_t add_sanitised(char *out, size_t at, size_t cap, const char *s)
{
	for (; *s && at < cap; s++)
		out[at++] = redis_name_char(*s) ? *s : '-';
	return at;
}

int config_host_id(const struct config *cfg, char *out, size_t size)
{
	char host[256];
	const char *listen = cfg->listen ? cfg->listen : "";
	const char *where;
	size_t cap, n = 0;

	if (size < 2)
		return -EINVAL;
	cap = size - 1 < REDIS_NAME_MAX ? size - 1 : REDIS_NAME_MAX;
	if (cfg->host_id && cfg->host_id[0]) {
		n = add_sanitised(out, 0, cap, cfg->host_id);
		out[n] = '\0';
		return 0;
	}
	if (gethostname(host, sizeof(host)) < 0)
		return -errno;
	/* POSIX leaves a truncated name unterminated. */
	host[sizeof(host) - 1] = '\0';
	/*
	 * The listen port tells two daemons of one host apart; a UNIX socket
	 * has none, so its path does (without the leading '/').
	 */
	if (strncmp(listen, "unix:", 5) == 0) {
		where = listen + 5;
		while (*where == '/')
			where++;
	} else {
		where = strrchr(listen, ':');
		where = where ? where + 1 : listen;
	}
	n = add_sanitised(out, 0, cap, host[0] ? host : "localhost");
	if (n < cap)
		out[n++] = ':';
	n = add_sanitised(out, n, cap, where);
	out[n] = '\0';
	return 0;
}

const struct config_client *config_client_find(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->n_clients && i < CONFIG_MAX_CLIENTS; i++)
		if (strcmp(cfg->clients[i].name, name) == 0)
			return &cfg->clients[i];
	return NULL;
}

/* ---- the INI parser ------------------------------------------------------ */

enum section {
	SECTION_TOP,     /* before any section, or [camskeyd] */
	SECTION_CLIENT,  /* [client "NAME"] */
	SECTION_SKIP,    /* after a bad section header: its keys are ignored */
};

struct parser {
	struct config *cfg;
	const char *filename;
	struct buf *err;
	unsigned line;
	enum section section;
	struct config_client *client;
	unsigned key_line[N_KEYS];              /* where each key was set, 0 if not */
	unsigned client_key_line[N_CLIENT_KEYS]; /* same, for the current client */
	unsigned errors;
	struct buf reason;
};

/* Start an error line "FILE:LINE: " (the caller adds "KEY: REASON\n"). */
static void error_start(struct parser *ps)
{
	ps->errors++;
	buf_printf(ps->err, "%s:%u: ", ps->filename, ps->line);
}

/* One error line for key (as written) with the text in ps->reason. */
static void key_error(struct parser *ps, struct span key)
{
	error_start(ps);
	if (ps->section == SECTION_CLIENT)
		buf_printf(ps->err, "[client \"%s\"] ", ps->client->name);
	add_name(ps->err, key.p, key.len);
	buf_printf(ps->err, ": %s\n", buf_str(&ps->reason));
}

static bool valid_client_name(struct span name)
{
	if (name.len < 1 || name.len > LIMIT_CLIENT_NAME_MAX)
		return false;
	for (size_t i = 0; i < name.len; i++) {
		char c = name.p[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* True if the rest of a line is empty or a comment. */
static bool only_comment(struct span rest)
{
	rest = span_trim(rest);
	return rest.len == 0 || rest.p[0] == '#' || rest.p[0] == ';';
}

static void section_error(struct parser *ps, struct span header, const char *reason)
{
	error_start(ps);
	add_name(ps->err, header.p, header.len);
	buf_printf(ps->err, ": %s\n", reason);
	ps->section = SECTION_SKIP;
}

static void parse_section(struct parser *ps, struct span s)
{
	struct span inner, rest, name;
	const char *close = memchr(s.p, ']', s.len);
	struct config_client *client;

	if (!close) {
		section_error(ps, s, "section header without ']'");
		return;
	}
	inner = span_trim(span_make(s.p + 1, (size_t)(close - s.p - 1)));
	rest = span_make(close + 1, s.len - (size_t)(close - s.p) - 1);
	s.len = (size_t)(close - s.p) + 1;
	if (!only_comment(rest)) {
		section_error(ps, s, "unexpected text after the section header");
		return;
	}
	if (span_eq(inner, "camskeyd")) {
		ps->section = SECTION_TOP;
		return;
	}
	if (!span_starts_with(inner, "client") || inner.len == 6 ||
	    (inner.p[6] != ' ' && inner.p[6] != '\t' && inner.p[6] != '"')) {
		section_error(ps, s, "unknown section (expected [camskeyd] or [client \"NAME\"])");
		return;
	}
	name = span_trim(span_make(inner.p + 6, inner.len - 6));
	if (name.len < 2 || name.p[0] != '"' || name.p[name.len - 1] != '"') {
		section_error(ps, s, "the client name must be in double quotes: [client \"NAME\"]");
		return;
	}
	name = span_make(name.p + 1, name.len - 2);
	if (!valid_client_name(name)) {
		section_error(ps, s, "a client name is 1 to 64 characters of A-Z a-z 0-9 . _ -");
		return;
	}
	for (unsigned i = 0; i < ps->cfg->n_clients; i++) {
		if (span_eq(name, ps->cfg->clients[i].name)) {
			section_error(ps, s, "duplicate client section");
			return;
		}
	}
	if (ps->cfg->n_clients >= CONFIG_MAX_CLIENTS) {
		section_error(ps, s, "too many client sections (at most 64)");
		return;
	}
	client = &ps->cfg->clients[ps->cfg->n_clients++];
	memset(client, 0, sizeof(*client));
	span_copy(name, client->name, sizeof(client->name));
	client->weight = 1;
	client->max_wait_ms = 0;
	ps->client = client;
	ps->section = SECTION_CLIENT;
	memset(ps->client_key_line, 0, sizeof(ps->client_key_line));
}

static int set_client_value(struct config_client *c, enum client_key k, const char *value,
			    struct buf *reason)
{
	uint64_t u;

	switch (k) {
	case CLIENT_KEY_TOKEN:
		if (check_sha256(value, true, reason) < 0)
			return -EINVAL;
		span_copy(span_cstr(value), c->token_sha256, sizeof(c->token_sha256));
		return 0;
	case CLIENT_KEY_WEIGHT:
		if (str_to_u64(value, 1, CLIENT_WEIGHT_MAX, &u) < 0) {
			buf_printf(reason, "must be a whole number between 1 and %d, got ",
				   CLIENT_WEIGHT_MAX);
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		c->weight = (unsigned)u;
		return 0;
	case CLIENT_KEY_MAX_WAIT:
		if (str_to_u64(value, 0, CLIENT_MAX_WAIT_MS_MAX, &u) < 0) {
			buf_printf(reason, "must be a whole number between 0 and %d (milliseconds; "
				   "0 = the global max-wait-ms), got ", CLIENT_MAX_WAIT_MS_MAX);
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		c->max_wait_ms = u;
		return 0;
	case CLIENT_KEY_ACCESS_KEY_ID:
		/* Empty: no key pair (what --print-config writes for none). */
		if (value[0] && !valid_access_key_id(value)) {
			buf_printf(reason, "must be 1 to %d characters of A-Z a-z 0-9 . _ -, got ",
				   LIMIT_ACCESS_KEY_ID_MAX);
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		span_copy(span_cstr(value), c->access_key_id, sizeof(c->access_key_id));
		return 0;
	case CLIENT_KEY_ACCESS_KEY_SECRET_FILE:
		if (value[0] && !valid_secret_file(value)) {
			buf_printf(reason, "must be an absolute path, or a file name under "
				   "$CREDENTIALS_DIRECTORY (no '/'), of at most %d bytes; got ",
				   CONFIG_PATH_MAX);
			add_quoted(reason, value, strlen(value));
			return -EINVAL;
		}
		span_copy(span_cstr(value), c->access_key_secret_file,
			  sizeof(c->access_key_secret_file));
		return 0;
	case N_CLIENT_KEYS:
		break;
	}
	return -EINVAL;
}

/*
 * The value part of a line: trimmed, optionally in double quotes (which are
 * removed), with a trailing comment dropped: '#' or ';' after whitespace,
 * or anything after the closing quote. 0, or -EINVAL with a reason.
 */
static int extract_value(struct span v, char *out, size_t out_size, struct buf *reason)
{
	v = span_trim(v);
	if (v.len && v.p[0] == '"') {
		const char *close = memchr(v.p + 1, '"', v.len - 1);

		if (!close) {
			buf_adds(reason, "missing closing double quote");
			return -EINVAL;
		}
		if (!only_comment(span_make(close + 1, v.len - (size_t)(close - v.p) - 1))) {
			buf_adds(reason, "unexpected text after the closing double quote");
			return -EINVAL;
		}
		v = span_make(v.p + 1, (size_t)(close - v.p) - 1);
	} else {
		for (size_t i = 0; i < v.len; i++) {
			if ((v.p[i] == '#' || v.p[i] == ';') &&
			    (i == 0 || v.p[i - 1] == ' ' || v.p[i - 1] == '\t')) {
				v.len = i;
				break;
			}
		}
		v = span_trim(v);
	}
	if (span_copy(v, out, out_size) < 0) {
		buf_adds(reason, "value too long");
		return -EINVAL;
	}
	return 0;
}

static void parse_key_line(struct parser *ps, struct span s)
{
	char name[KEY_NAME_MAX + 1];
	char value[LIMIT_CONFIG_LINE_MAX + 1];
	struct span key, raw;
	unsigned *seen;
	int idx = -1;

	if (!span_split(s, '=', &key, &raw)) {
		error_start(ps);
		buf_adds(ps->err, "expected \"key = value\", got ");
		add_quoted(ps->err, s.p, s.len);
		buf_addc(ps->err, '\n');
		return;
	}
	key = span_trim(key);
	if (key.len == 0) {
		error_start(ps);
		buf_adds(ps->err, "missing key name before '='\n");
		return;
	}
	if (ps->section == SECTION_SKIP)
		return;
	buf_reset(&ps->reason);

	if (normalize_name(key, name, sizeof(name)) == 0) {
		if (ps->section == SECTION_CLIENT) {
			for (int k = 0; k < N_CLIENT_KEYS; k++)
				if (strcmp(name, client_key_names[k]) == 0)
					idx = k;
		} else {
			idx = find_key(name);
		}
	}
	if (idx < 0) {
		const char *near = NULL;

		if (ps->section == SECTION_CLIENT && find_key(name) >= 0) {
			buf_adds(&ps->reason, "unknown key in a [client] section (a top-level key "
				 "goes before the first [client] or after [camskeyd])");
		} else {
			buf_adds(&ps->reason, "unknown key");
			if (key.len <= KEY_NAME_MAX)
				near = ps->section == SECTION_CLIENT
					       ? closest_name(name, client_key_names, N_CLIENT_KEYS)
					       : suggest_key(name, false);
			if (near)
				buf_printf(&ps->reason, " (did you mean \"%s\"?)", near);
		}
		key_error(ps, key);
		return;
	}
	seen = ps->section == SECTION_CLIENT ? &ps->client_key_line[idx] : &ps->key_line[idx];
	if (*seen) {
		buf_printf(&ps->reason, "set twice (first on line %u)", *seen);
		key_error(ps, key);
		return;
	}
	*seen = ps->line;
	if (extract_value(raw, value, sizeof(value), &ps->reason) < 0) {
		key_error(ps, key);
		return;
	}
	if (ps->section == SECTION_CLIENT) {
		if (set_client_value(ps->client, (enum client_key)idx, value, &ps->reason) < 0)
			key_error(ps, key);
	} else if (set_value(ps->cfg, (size_t)idx, value, &ps->reason) < 0) {
		key_error(ps, key);
	}
}

static void parse_line(struct parser *ps, struct span line)
{
	struct span s = span_trim(line);

	if (s.len == 0 || s.p[0] == '#' || s.p[0] == ';')
		return;
	if (s.p[0] == '[')
		parse_section(ps, s);
	else
		parse_key_line(ps, s);
}

int config_parse_string(struct config *cfg, const char *filename, const char *text,
			struct buf *err)
{
	struct parser ps;
	const char *p = text;

	memset(&ps, 0, sizeof(ps));
	ps.cfg = cfg;
	ps.filename = filename;
	ps.err = err;
	ps.section = SECTION_TOP;
	buf_init(&ps.reason, REASON_MAX_BYTES);

	/* A UTF-8 byte order mark, as some editors write. */
	if (strncmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		struct span line = span_make(p, len);

		ps.line++;
		p = nl ? nl + 1 : p + len;
		if (line.len && line.p[line.len - 1] == '\r')
			line.len--;
		if (line.len > LIMIT_CONFIG_LINE_MAX) {
			error_start(&ps);
			buf_printf(err, "line longer than %d bytes\n", LIMIT_CONFIG_LINE_MAX);
			continue;
		}
		parse_line(&ps, line);
	}
	buf_free(&ps.reason);
	return ps.errors ? -EINVAL : 0;
}

int config_parse_file(struct config *cfg, const char *path, struct buf *err)
{
	size_t cap = (size_t)LIMIT_CONFIG_FILE_MAX_BYTES + 1, len = 0;
	char *data;
	const char *nul;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		buf_printf(err, "%s: cannot open: %s\n", path, strerror(-rc));
		return rc;
	}
	data = xmalloc(cap + 1);
	/* Read one byte more than allowed to tell "exactly the limit" from "over". */
	while (len < cap) {
		ssize_t n = read(fd, data + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			buf_printf(err, "%s: cannot read: %s\n", path, strerror(-rc));
			goto out_free_data;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > (size_t)LIMIT_CONFIG_FILE_MAX_BYTES) {
		buf_printf(err, "%s: larger than %d bytes\n", path, LIMIT_CONFIG_FILE_MAX_BYTES);
		rc = -EFBIG;
		goto out_free_data;
	}
	nul = memchr(data, '\0', len);
	if (nul) {
		unsigned line = 1;

		for (const char *q = data; q < nul; q++)
			line += *q == '\n';
		buf_printf(err, "%s:%u: contains a NUL byte (not a text file?)\n", path, line);
		rc = -EINVAL;
		goto out_free_data;
	}
	data[len] = '\0';
	free(cfg->config_file);
	cfg->config_file = xstrdup(path);
	rc = config_parse_string(cfg, path, data, err);
out_free_data:
	free(data);
	close(fd);
	return rc;
}

/* ---- flags --------------------------------------------------------------- */

int config_set(struct config *cfg, const char *name, const char *value, struct buf *err)
{
	char norm[KEY_NAME_MAX + 1];
	struct buf reason;
	int idx = -1, rc = 0;

	if (normalize_name(span_cstr(name), norm, sizeof(norm)) == 0)
		idx = find_key(norm);
	if (idx < 0) {
		buf_adds(err, "command line: --");
		add_name(err, name, strlen(name));
		add_unknown_option(err, norm);
		return -EINVAL;
	}
	buf_init(&reason, REASON_MAX_BYTES);
	if (set_value(cfg, (size_t)idx, value, &reason) < 0) {
		buf_printf(err, "command line: --%s: %s\n", norm, buf_str(&reason));
		rc = -EINVAL;
	}
	buf_free(&reason);
	return rc;
}

struct pending_flag {
	const char *name;   /* key name as given (after "--") */
	size_t name_len;
	const char *value;
};

/* An enum key with a "no" choice takes --no-NAME too (access-log). */
static bool has_choice(const struct choice *choices, const char *name)
{
	for (const struct choice *c = choices; c && c->name; c++)
		if (strcmp(c->name, name) == 0)
			return true;
	return false;
}

static bool is_bool_word(const char *s)
{
	bool ignored;

	return parse_bool(s, &ignored) == 0;
}

int config_from_argv(int argc, char **argv, struct config *cfg, enum config_mode *ret_mode,
		     int *ret_first_arg, struct buf *err)
{
	struct pending_flag *flags = xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(*flags));
	size_t n_flags = 0;
	const char *config_path = NULL;
	enum config_mode mode = CONFIG_MODE_RUN;
	int first_arg = argc, rc = 0;
	struct buf argv_err;
	bool failed = false;

	/*
	 * Start from the defaults whatever cfg held: callers hand over a struct
	 * from config_init() (main does) or zeroed; either way nothing leaks.
	 */
	config_free(cfg);
	config_init(cfg);
	/* Errors wait here: --help and --version win over a bad command line. */
	buf_init(&argv_err, err->max_bytes);

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *body, *eq, *value;
		char name[KEY_NAME_MAX + 1] = "";
		size_t name_len;
		int idx = -1;
		bool negated = false;

		if (strcmp(arg, "--") == 0) {
			first_arg = i + 1;
			break;
		}
		if (arg[0] != '-' || arg[1] == '\0') {
			first_arg = i;
			break;
		}
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			mode = CONFIG_MODE_HELP;
			goto out_early;
		}
		if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
			mode = CONFIG_MODE_VERSION;
			goto out_early;
		}
		if (strcmp(arg, "--check-config") == 0) {
			if (mode != CONFIG_MODE_PRINT)
				mode = CONFIG_MODE_CHECK;
			continue;
		}
		if (strcmp(arg, "--print-config") == 0) {
			mode = CONFIG_MODE_PRINT;
			continue;
		}
		if (arg[1] != '-') {
			buf_adds(&argv_err, "command line: ");
			add_name(&argv_err, arg, strlen(arg));
			buf_adds(&argv_err, ": unknown option\n");
			continue;
		}
		body = arg + 2;
		eq = strchr(body, '=');
		name_len = eq ? (size_t)(eq - body) : strlen(body);
		value = eq ? eq + 1 : NULL;
		if (normalize_name(span_make(body, name_len), name, sizeof(name)) == 0) {
			idx = find_key(name);
			if (idx < 0 && strncmp(name, "no-", 3) == 0) {
				idx = find_key(name + 3);
				negated = idx >= 0 && (key_specs[idx].store == STORE_BOOL ||
						       has_choice(key_specs[idx].choices, "no"));
				if (!negated)
					idx = -1;
			}
		}
		if (idx < 0 && strcmp(name, "config") != 0) {
			buf_adds(&argv_err, "command line: --");
			add_name(&argv_err, body, name_len);
			add_unknown_option(&argv_err, name);
			continue;
		}
		if (negated) {
			if (value) {
				buf_printf(&argv_err, "command line: --%s: takes no value\n", name);
				continue;
			}
			value = "no";
			body += 3;
			name_len -= 3;
		} else if (!value && idx >= 0 && key_specs[idx].store == STORE_BOOL) {
			/* A bare bool flag means yes; it takes the next word only if it is a bool. */
			if (i + 1 < argc && is_bool_word(argv[i + 1]))
				value = argv[++i];
			else
				value = "yes";
		} else if (!value) {
			if (i + 1 >= argc) {
				buf_printf(&argv_err, "command line: --%s: needs a value\n", name);
				continue;
			}
			value = argv[++i];
		}
		if (idx < 0) {
			config_path = value;
			continue;
		}
		flags[n_flags].name = body;
		flags[n_flags].name_len = name_len;
		flags[n_flags].value = value;
		n_flags++;
	}

	if (buf_str(&argv_err)[0]) {
		buf_adds(err, buf_str(&argv_err));
		failed = true;
	}
	/* Defaults (config_init above), then the file, then the flags on top. */
	if (config_path && config_parse_file(cfg, config_path, err) < 0)
		failed = true;
	for (size_t f = 0; f < n_flags; f++) {
		char name[KEY_NAME_MAX + 1];

		span_copy(span_make(flags[f].name, flags[f].name_len), name, sizeof(name));
		if (config_set(cfg, name, flags[f].value, err) < 0)
			failed = true;
	}
	/* Cross-key checks on a config with bad keys would only repeat them. */
	if (!failed && config_validate(cfg, err) < 0)
		failed = true;
	if (failed) {
		rc = -EINVAL;
		goto out;
	}
out_early:
	*ret_mode = mode;
	*ret_first_arg = first_arg;
out:
	buf_free(&argv_err);
	free(flags);
	return rc;
}

/* ---- validation ---------------------------------------------------------- */

/*
 * Is the upstream URL https://, or http:// to a loopback host (127.0.0.0/8,
 * [::1], "localhost": the simulator)? The URL already passed check_url.
 */
static bool upstream_is_safe(const char *url)
{
	char hostport[LIMIT_CONFIG_LINE_MAX + 8];
	struct netaddr na;
	struct buf reason;
	size_t host_len, port_at;
	const char *host;
	bool safe;

	if (strncmp(url, "https://", 8) == 0)
		return true;
	host = url + 7; /* "http://" */
	host_len = strcspn(host, "/?#");
	if (host[0] == '[') {
		const char *close = memchr(host, ']', host_len);

		if (!close)
			return false;
		port_at = (size_t)(close - host) + 1;
	} else {
		port_at = strcspn(host, ":/?#");
	}
	if (port_at == 9 && strncasecmp(host, "localhost", 9) == 0)
		return true;
	/* netaddr_parse wants ADDR:PORT; the port does not matter here. */
	snprintf(hostport, sizeof(hostport), "%.*s:80", (int)port_at, host);
	buf_init(&reason, 256);
	safe = netaddr_parse(hostport, &na, &reason) == 0 && na.is_loopback;
	buf_free(&reason);
	return safe;
}

int config_validate(const struct config *cfg, struct buf *err)
{
	struct buf reason;
	unsigned errors = 0;
	bool any_token = false;
	struct netaddr na;
	unsigned n_clients = cfg->n_clients;

	buf_init(&reason, REASON_MAX_BYTES);
	for (size_t i = 0; i < N_KEYS; i++) {
		buf_reset(&reason);
		if (check_value(cfg, i, &reason) < 0) {
			buf_printf(err, "%s: %s\n", key_infos[i].name, buf_str(&reason));
			errors++;
		}
	}

	if (n_clients > CONFIG_MAX_CLIENTS) {
		buf_printf(err, "client: more than %d clients\n", CONFIG_MAX_CLIENTS);
		errors++;
		n_clients = CONFIG_MAX_CLIENTS;
	}
	for (unsigned i = 0; i < n_clients; i++) {
		const struct config_client *c = &cfg->clients[i];

		buf_reset(&reason);
		if (!valid_client_name(span_make(c->name, strnlen(c->name, sizeof(c->name))))) {
			buf_printf(err, "client %u: the name must be 1 to 64 characters of "
				   "A-Z a-z 0-9 . _ -\n", i + 1);
			errors++;
			continue;
		}
		if (check_sha256(c->token_sha256, true, &reason) < 0) {
			buf_printf(err, "[client \"%s\"] token-sha256: %s\n", c->name,
				   buf_str(&reason));
			errors++;
		}
		if (c->weight < 1 || c->weight > CLIENT_WEIGHT_MAX) {
			buf_printf(err, "[client \"%s\"] weight: must be between 1 and %d, is %u\n",
				   c->name, CLIENT_WEIGHT_MAX, c->weight);
			errors++;
		}
		if (c->max_wait_ms > CLIENT_MAX_WAIT_MS_MAX) {
			buf_printf(err, "[client \"%s\"] max-wait-ms: must be between 0 and %d, "
				   "is %" PRIu64 "\n", c->name, CLIENT_MAX_WAIT_MS_MAX,
				   c->max_wait_ms);
			errors++;
		}
		if (!c->access_key_id[0] != !c->access_key_secret_file[0]) {
			buf_printf(err, "[client \"%s\"] %s: a key pair needs both access-key-id "
				   "and access-key-secret-file\n", c->name,
				   c->access_key_id[0] ? "access-key-secret-file" : "access-key-id");
			errors++;
		}
		if (c->access_key_id[0] && !valid_access_key_id(c->access_key_id)) {
			buf_printf(err, "[client \"%s\"] access-key-id: must be 1 to %d characters "
				   "of A-Z a-z 0-9 . _ -\n", c->name, LIMIT_ACCESS_KEY_ID_MAX);
			errors++;
		}
		if (c->access_key_secret_file[0] && !valid_secret_file(c->access_key_secret_file)) {
			buf_printf(err, "[client \"%s\"] access-key-secret-file: must be an absolute "
				   "path or a file name under $CREDENTIALS_DIRECTORY\n", c->name);
			errors++;
		}
		if (c->token_sha256[0])
			any_token = true;
		for (unsigned j = 0; j < i; j++) {
			if (c->access_key_id[0] &&
			    strcmp(cfg->clients[j].access_key_id, c->access_key_id) == 0) {
				buf_printf(err, "[client \"%s\"] access-key-id: the same AccessKey ID as "
					   "[client \"%s\"]; a key pair must name one client\n",
					   c->name, cfg->clients[j].name);
				errors++;
			}
		}
		for (unsigned j = 0; j < i; j++) {
			if (strcmp(cfg->clients[j].name, c->name) == 0) {
				buf_printf(err, "[client \"%s\"]: duplicate client\n", c->name);
				errors++;
			} else if (c->token_sha256[0] &&
				   strcmp(cfg->clients[j].token_sha256, c->token_sha256) == 0) {
				buf_printf(err, "[client \"%s\"] token-sha256: the same token as "
					   "[client \"%s\"]; a token must name one client\n",
					   c->name, cfg->clients[j].name);
				errors++;
			}
		}
		if (c->token_sha256[0] && cfg->admin_token_sha256 &&
		    strcmp(c->token_sha256, cfg->admin_token_sha256) == 0) {
			buf_printf(err, "[client \"%s\"] token-sha256: the same token as "
				   "admin-token-sha256; the admin token must be a token of its own\n",
				   c->name);
			errors++;
		}
	}

	buf_reset(&reason);
	if (cfg->listen && netaddr_parse(cfg->listen, &na, &reason) == 0 && !na.is_loopback &&
	    !any_token && !cfg->allow_remote) {
		buf_printf(err, "listen: %s is not a loopback address and no [client] section has "
			   "a token-sha256, so anyone who can reach it could spend the account's "
			   "quota; configure client tokens, or set allow-remote = yes\n",
			   cfg->listen);
		errors++;
	}
	if (cfg->upstream && !cfg->allow_insecure_upstream && !upstream_is_safe(cfg->upstream)) {
		buf_printf(err, "upstream: %s is plain http:// to a host that is not a loopback "
			   "address: the public keys it returns could be read or swapped on the "
			   "way; use https://, or set allow-insecure-upstream = yes\n",
			   cfg->upstream);
		errors++;
	}
	/*
	 * A fallback budget above rate would let one host alone exceed the
	 * quota while Redis is away. Without redis the key is ignored, so it
	 * is not checked either.
	 */
	if (cfg->redis && cfg->redis[0] && cfg->redis_fallback_rate > cfg->rate) {
		buf_printf(err, "redis-fallback-rate: %g/s is more than rate (%g/s); it is one "
			   "host's budget while Redis is unreachable, and the budgets of all hosts "
			   "must add up to at most the quota\n", cfg->redis_fallback_rate, cfg->rate);
		errors++;
	}
	/*
	 * upstream-connect-timeout-ms above upstream-timeout-ms is not refused:
	 * the whole-call timeout bounds the connect anyway, and refusing would
	 * make lowering one timeout alone fail.
	 */
	buf_free(&reason);
	return errors ? -EINVAL : 0;
}

/* ---- printing ------------------------------------------------------------ */

/* Quote a string for the INI file unless it holds a '"' (which quotes cannot). */
static void print_string_value(FILE *out, const char *s)
{
	if (strchr(s, '"'))
		fprintf(out, "%s\n", s);
	else
		fprintf(out, "\"%s\"\n", s);
}

void config_print(const struct config *cfg, FILE *out)
{
	struct buf value;

	buf_init(&value, LIMIT_CONFIG_LINE_MAX);
	fprintf(out, "# camskeyd effective configuration (defaults, %s, flags)\n",
		cfg->config_file ? cfg->config_file : "no file");
	fprintf(out, "[camskeyd]\n");
	for (size_t i = 0; i < N_KEYS; i++) {
		buf_reset(&value);
		add_value_text(&value, cfg, i);
		fprintf(out, "%s = ", key_infos[i].name);
		if (key_specs[i].store == STORE_STR)
			print_string_value(out, buf_str(&value));
		else
			fprintf(out, "%s\n", buf_str(&value));
	}
	for (unsigned i = 0; i < cfg->n_clients && i < CONFIG_MAX_CLIENTS; i++) {
		const struct config_client *c = &cfg->clients[i];

		fprintf(out, "\n[client \"%s\"]\n", c->name);
		fprintf(out, "token-sha256 = \"%s\"\n", c->token_sha256);
		fprintf(out, "weight = %u\n", c->weight);
		fprintf(out, "max-wait-ms = %" PRIu64 "\n", c->max_wait_ms);
		fprintf(out, "access-key-id = \"%s\"\n", c->access_key_id);
		fprintf(out, "access-key-secret-file = \"%s\"\n", c->access_key_secret_file);
	}
	buf_free(&value);
}

static const char *unit_suffix(const char *unit)
{
	if (strcmp(unit, "1/s") == 0)
		return "/s";
	if (strcmp(unit, "s") == 0)
		return " s";
	if (strcmp(unit, "ms") == 0)
		return " ms";
	return "";
}

#define USAGE_COLUMN 38

static void usage_line(FILE *out, const char *left, const char *text)
{
	int n = fprintf(out, "  %s", left);

	if (n < 0)
		return;
	if (n + 1 >= USAGE_COLUMN)
		fprintf(out, "\n%*s%s\n", USAGE_COLUMN, "", text);
	else
		fprintf(out, "%*s%s\n", USAGE_COLUMN - n, "", text);
}

void config_usage(FILE *out)
{
	struct buf left, text;

	buf_init(&left, 256);
	buf_init(&text, 1024);
	fprintf(out,
		"usage: camskeyd [--config FILE] [--check-config] [--print-config] [--KEY VALUE ...]\n"
		"       camskeyd [options] cache list|show PHONE [CUSTSPACEID]|purge PHONE "
		"[CUSTSPACEID]|stats|warm FILE\n"
		"\n"
		"Options:\n");
	usage_line(out, "--config FILE", "read the INI configuration FILE (see camskeyd.conf(5))");
	usage_line(out, "--check-config", "validate the configuration and exit");
	usage_line(out, "--print-config", "print the effective configuration as INI and exit");
	usage_line(out, "-h, --help", "print this help and exit");
	usage_line(out, "-V, --version", "print the version, libraries and features, and exit");
	fprintf(out, "\nConfiguration keys (the same names in the file; flags win over it):\n");
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key_info *k = &key_infos[i];
		const struct key_spec *s = &key_specs[i];

		buf_reset(&left);
		buf_reset(&text);
		if (s->store == STORE_BOOL) {
			buf_printf(&left, "--[no-]%s", k->name);
		} else if (s->choices) {
			buf_printf(&left, "--%s ", k->name);
			for (const struct choice *c = s->choices; c->name && !c->alias_of; c++)
				buf_printf(&left, "%s%s", c == s->choices ? "" : "|", c->name);
		} else {
			buf_printf(&left, "--%s %s", k->name, s->metavar);
		}
		buf_printf(&text, "%s (default: %s%s)", k->description,
			   k->default_text[0] ? k->default_text : "none",
			   k->default_text[0] ? unit_suffix(k->unit) : "");
		usage_line(out, buf_str(&left), buf_str(&text));
	}
	fprintf(out, "\nSecrets never go on the command line: see CREDENTIALS in "
		"camskeyd.conf(5).\n");
	buf_free(&left);
	buf_free(&text);
}
