/*
 * config.h -- the configuration: one table of keys drives the INI parser,
 * the command-line flags, validation, --print-config and the docs test.
 *
 * Every key is settable in the INI file (`name = value`, '#' or ';'
 * comments, optional [camskeyd] section, [client "NAME"] sections) and as
 * `--name VALUE` on the command line; flags win over the file. INI names
 * are the flag names without the dashes prefix ("max-wait-ms"); '_' is
 * accepted for '-'. Errors are collected, one line each:
 *     FILE:LINE: KEY: REASON        (file errors)
 *     command line: --KEY: REASON   (flag errors)
 * Secrets are never configuration: only paths to them are.
 * Never logs. Threads: build on one thread, then read-only; reload builds a
 * new struct config and swaps it in.
 */
#ifndef CAMSKEYD_CONFIG_H
#define CAMSKEYD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "bounds.h"

#define CONFIG_MAX_CLIENTS 64
#define CONFIG_PATH_MAX 1024

struct config_client {
	char name[LIMIT_CLIENT_NAME_MAX + 1];
	char token_sha256[65];  /* lower-case hex SHA-256 of the bearer token, or "" */
	unsigned weight;        /* fair-share weight, 1..1000, default 1 */
	uint64_t max_wait_ms;   /* 0 = the global max-wait-ms */
	/*
	 * The key pair the team's SDK signs with on the drop-in endpoint:
	 * the AccessKey ID, and where its secret is (an absolute path to a
	 * file readable by its owner only, or a name under
	 * $CREDENTIALS_DIRECTORY). Both or neither; "" when none.
	 */
	char access_key_id[LIMIT_ACCESS_KEY_ID_MAX + 1];
	char access_key_secret_file[CONFIG_PATH_MAX + 1];
};

enum config_signature {
	CONFIG_SIGNATURE_V3 = 3,
	CONFIG_SIGNATURE_V1 = 1,
};

struct config {
	char *config_file;         /* the INI file read, or NULL */

	/* front end */
	char *listen;              /* "127.0.0.1:8080" or "unix:/path" */
	char *unix_socket_mode;    /* octal, for a unix: listen */
	char *unix_socket_group;   /* group name for the socket, or "" */
	bool allow_remote;         /* permit a non-loopback listen without tokens */
	unsigned threads;          /* HTTP worker threads */
	unsigned max_connections;
	unsigned connection_timeout_s;
	unsigned shutdown_grace_s;  /* SIGTERM: time for calls in progress */
	char *admin_token_sha256;  /* hex SHA-256 of the admin token, or "" */

	/* upstream */
	char *upstream;            /* base URL */
	bool allow_insecure_upstream; /* permit http:// to a non-loopback host */
	char *upstream_ca;         /* extra CA bundle path, or "" */
	enum config_signature signature;
	unsigned upstream_connect_timeout_ms;
	unsigned upstream_timeout_ms;
	unsigned upstream_retries; /* System.LimitControl retries per flight */
	char *credentials_file;    /* path, or "" */

	/* quota */
	double rate;               /* upstream calls per second */
	unsigned burst;            /* bucket size */
	unsigned rate_margin_ms;   /* safety margin added to the 1 s window */
	unsigned max_wait_ms;      /* default longest wait for quota */
	unsigned queue_max;        /* waiting callers, in all */

	/*
	 * shared (Redis): none of these reloads. The Redis password is never
	 * configuration: redis_load_password() (redis.h) reads
	 * $CREDENTIALS_DIRECTORY/redis-password or $CAMSKEYD_REDIS_PASSWORD.
	 * Without redis the other keys are ignored.
	 */
	char *redis;               /* redis_parse_url() URL, or "": this host alone */
	char *host_id;             /* [A-Za-z0-9._:-]{1,128}, or "": see config_host_id() */
	char *quota_scope;         /* same alphabet, or "": the AccessKey ID */
	double redis_fallback_rate; /* calls/s while Redis is unreachable; 0: fail closed */
	unsigned redis_timeout_ms;  /* each command; connect + handshake get 4x */
	unsigned redis_max_pending; /* not-yet-due shared grants one host may hold */

	/* cache */
	char *cache;               /* SQLite path */
	uint64_t ttl_s;            /* VALID keys */
	uint64_t status_ttl_s;     /* keys with another status */
	uint64_t negative_ttl_s;   /* definitive upstream errors */
	uint64_t stale_while_revalidate_s;
	uint64_t stale_if_error_s;
	uint64_t max_entries;
	uint64_t hot_entries;      /* in-memory entries (the hit path) */
	uint64_t refresh_ahead_s;  /* refresh keys in use this long before expiry */

	/* logging */
	char *log_level;           /* debug|info|warn|error */
	char *access_log;          /* misses|all|off */

	struct config_client clients[CONFIG_MAX_CLIENTS];
	unsigned n_clients;
};

/* What a key is, for the table (config.c) and the docs test. */
enum config_type {
	CONFIG_TYPE_STRING,
	CONFIG_TYPE_UINT,
	CONFIG_TYPE_DOUBLE,
	CONFIG_TYPE_BOOL,
	CONFIG_TYPE_ENUM,
};

struct config_key_info {
	const char *name;          /* "max-wait-ms" */
	enum config_type type;
	const char *default_text;  /* as printed in docs */
	const char *unit;          /* "ms", "s", "1/s", "" */
	bool reloadable;           /* SIGHUP may change it */
	const char *description;   /* one line */
};

/* The table of top-level keys (not the [client] ones). */
const struct config_key_info *config_keys(size_t *ret_count);

/* Fill cfg with the defaults. Always succeeds. */
void config_init(struct config *cfg);
/* Free every string and reset to zero. NULL ok. */
void config_free(struct config *cfg);

/*
 * Parse INI text as if read from `filename` (used in messages) on top of cfg.
 * Every error is appended to err as one line. 0, or -EINVAL if any error.
 */
int config_parse_string(struct config *cfg, const char *filename, const char *text,
			struct buf *err);
/* Read and parse a file (at most LIMIT_CONFIG_FILE_MAX_BYTES). 0, -EINVAL, -errno. */
int config_parse_file(struct config *cfg, const char *path, struct buf *err);
/* Apply one flag (name without "--"). 0 or -EINVAL with a line in err. */
int config_set(struct config *cfg, const char *name, const char *value, struct buf *err);
/* Cross-key checks after everything is applied. 0 or -EINVAL. */
int config_validate(const struct config *cfg, struct buf *err);

/*
 * For a reload: every key SIGHUP cannot change (reloadable false) whose
 * value in next differs from running's gets running's value back, and its
 * name is appended to names (NULL ok) as "listen,cache". Afterwards next
 * describes what will really run, so the next reload compares against
 * that and not against a file that was read but could not be applied.
 * Returns how many keys were kept.
 */
unsigned config_keep_restart_keys(struct config *next, const struct config *running,
				  struct buf *names);

/* What main should do after argument parsing. */
enum config_mode {
	CONFIG_MODE_RUN,
	CONFIG_MODE_CHECK,     /* --check-config */
	CONFIG_MODE_PRINT,     /* --print-config */
	CONFIG_MODE_HELP,      /* --help */
	CONFIG_MODE_VERSION,   /* --version */
};

/*
 * Parse argv: defaults, then --config FILE, then every other flag on top,
 * then config_validate(). Stops at the first non-flag argument and reports
 * its index in *ret_first_arg (argc if none) for subcommands.
 * 0 or -EINVAL with every error in err.
 */
int config_from_argv(int argc, char **argv, struct config *cfg, enum config_mode *ret_mode,
		     int *ret_first_arg, struct buf *err);

/* Print the effective configuration as INI (no secrets exist in it). */
void config_print(const struct config *cfg, FILE *out);
/* The SYNOPSIS and flag list for --help. */
void config_usage(FILE *out);

/*
 * This host's id in the shared limiter and the leases: cfg->host_id when
 * set, else gethostname() ":" the listen port (for a unix: listen, the
 * socket path without its leading '/'). Every character outside
 * [A-Za-z0-9._:-] becomes '-', and the result is cut at REDIS_NAME_MAX
 * (128) bytes and at size - 1. 0 with out NUL-terminated; -EINVAL (size
 * under 2) or -errno of gethostname(), out untouched. Never logs.
 */
int config_host_id(const struct config *cfg, char *out, size_t size);

/* Find a client by name; NULL if none. */
const struct config_client *config_client_find(const struct config *cfg, const char *name);

#endif
