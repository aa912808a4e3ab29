/*
 * main.c -- options, the init/fini order, signals. Nothing else.
 *
 * Order: config -> log -> notify -> signer (credentials) -> cache lock -> cache -> proxy
 * -> http -> proxy engine start -> READY=1. Fini in exact reverse. Signals
 * are blocked in every thread and taken synchronously here with
 * sigtimedwait(), which also paces the watchdog: the ping is sent only
 * while the engine loop keeps turning, so a wedged loop stops the pings
 * and systemd restarts the daemon.
 *
 * SIGHUP reloads: the whole configuration is parsed again from the same
 * argv; on any error the old one stays and the reason is logged. SIGTERM /
 * SIGINT stop gracefully: stop accepting, let upstream calls finish within
 * the grace period, answer the rest 503, close the database, exit 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "cache.h"
#include "cli.h"
#include "clients.h"
#include "clock.h"
#include "config.h"
#include "http.h"
#include "keyring.h"
#include "lockfile.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "proxy.h"
#include "signer.h"

#ifndef CAMSKEYD_VERSION
#define CAMSKEYD_VERSION "0.1.0"
#endif

#define STOP_FLUSH_MS 2000
#define STATUS_INTERVAL_US 5000000

struct daemon_state {
	struct config cfg;
	struct signer *signer;
	struct lockfile *lock;
	struct cache *cache;
	struct proxy *proxy;
	struct http *http;
};

static void print_errors(const struct buf *err)
{
	fprintf(stderr, "%s", buf_str(err));
	if (err->len && buf_str(err)[err->len - 1] != '\n')
		fputc('\n', stderr);
}

static char profile_path[4096];

static void signer_source_from(const struct config *cfg, struct signer_source *src)
{
	const char *home = getenv("HOME");

	src->credentials_file = cfg->credentials_file;
	src->credentials_dir = getenv("CREDENTIALS_DIRECTORY");
	src->use_environment = 1;
	src->profile_file = NULL;
	if (home && *home) {
		snprintf(profile_path, sizeof(profile_path), "%s/.alibabacloud/credentials", home);
		src->profile_file = profile_path;
	}
}

static void apply_logging(const struct config *cfg)
{
	enum log_level level;
	enum log_access_mode access;

	if (log_level_from_string(cfg->log_level, &level) == 0)
		log_set_level(level);
	if (log_access_mode_from_string(cfg->access_log, &access) == 0)
		log_set_access_mode(access);
}

/* Let thousands of suspended connections each have a socket. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * A reason of one or more lines as one log value: the lines joined by
 * "; ", no trailing newline (config errors end each line with one).
 */
static const char *one_line(const char *text, char *out, size_t out_size)
{
	struct buf b;
	size_t n = strlen(text);

	while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
		n--;
	buf_init(&b, out_size ? out_size - 1 : 0);
	for (size_t i = 0; i < n; i++) {
		if (text[i] == '\n')
			buf_adds(&b, "; ");
		else
			buf_addc(&b, text[i]);
	}
	snprintf(out, out_size, "%s", buf_str(&b));
	buf_free(&b);
	return out;
}

static int reload(struct daemon_state *d, int argc, char **argv)
{
	struct config next;
	enum config_mode mode;
	struct signer_source src;
	struct keyring *keys = NULL;
	struct buf err, kept;
	char errbuf[1400], line[1500];
	int first_arg, rc;

	notify_send("RELOADING=1");
	log_flush(); /* lines logged under the old settings go out first */
	buf_init(&kept, 4096);
	buf_init(&err, 64 * 1024);
	config_init(&next);
	rc = config_from_argv(argc, argv, &next, &mode, &first_arg, &err);
	if (rc < 0) {
		char q[1100];

		log_error("reload_refused", "reason=%s",
			  log_quote(one_line(buf_str(&err), line, sizeof(line)), q, sizeof(q)));
		goto out;
	}
	rc = keyring_load(&next, getenv("CREDENTIALS_DIRECTORY"), &keys, errbuf, sizeof(errbuf));
	if (rc < 0) {
		char q[300];

		log_error("reload_refused", "reason=%s",
			  log_quote(one_line(errbuf, line, sizeof(line)), q, sizeof(q)));
		goto out;
	}
	signer_source_from(&next, &src);
	rc = signer_reload(d->signer, &src, errbuf, sizeof(errbuf));
	if (rc < 0) {
		char q[300];

		log_error("reload_refused", "reason=%s",
			  log_quote(one_line(errbuf, line, sizeof(line)), q, sizeof(q)));
		goto out;
	}
	/*
	 * Compare with what runs, not with the last file read: d->cfg keeps the
	 * running values of restart-only keys, so putting one back is quiet.
	 */
	if (config_keep_restart_keys(&next, &d->cfg, &kept) > 0)
		log_warn("reload_partial",
			 "keys=%s detail=\"changed but need a restart; the running values stay\"",
			 buf_str(&kept));
	apply_logging(&next);
	/* Before the proxy: it reads the client weights from the new snapshot. */
	if (clients_publish(&next) < 0)
		log_warn("clients_overflow", "max_ids=%d detail=\"some configured clients share the overflow id until a restart\"",
			 CLIENTS_MAX);
	proxy_reconfigure(d->proxy, &next);
	http_reconfigure(d->http, &next);
	http_set_keyring(d->http, keys);
	keys = NULL;
	/* The modules copied what they keep; the old strings may go. */
	config_free(&d->cfg);
	d->cfg = next;
	log_info("reloaded", "rate=%.3f burst=%u ttl_s=%" PRIu64 " clients=%u", d->cfg.rate,
		 d->cfg.burst, d->cfg.ttl_s, d->cfg.n_clients);
	rc = 0;
out:
	if (rc < 0)
		config_free(&next);
	keyring_free(keys);
	metrics_gauge_set(METRICS_GAUGE_RELOAD_OK, rc < 0 ? 0 : 1);
	if (rc == 0)
		metrics_gauge_set(METRICS_GAUGE_RELOAD_TIME_S, (int64_t)time(NULL));
	buf_free(&err);
	buf_free(&kept);
	notify_send("READY=1");
	notify_status("serving on %s (reload %s)", http_listen_address(d->http),
		      rc < 0 ? "refused" : "done");
	return rc;
}

static int serve(struct daemon_state *d, int argc, char **argv)
{
	struct signer_source src;
	struct cache_options co = {
		.path = d->cfg.cache,
		.max_entries = d->cfg.max_entries,
		/* 0, the default: memory holds every entry (max-entries). */
		.hot_entries = d->cfg.hot_entries ? d->cfg.hot_entries : d->cfg.max_entries,
		.preload = 1,
	};
	char errbuf[1400], keyid[LIMIT_ACCESS_KEY_ID_MAX + 1];
	struct keyring *keys = NULL;
	sigset_t sigs;
	uint64_t watchdog_us;
	int64_t next_ping_us = 0, next_status_us = 0;
	int rc, exit_code = 1;

	/* The process holds a cloud credential: no core dumps, no ptrace by peers. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	raise_fd_limit();
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	/* After the mask: the flusher thread must not take the signals. */
	log_init();
	metrics_init();
	/* The configuration in use was applied now: the reload gauges start so. */
	metrics_gauge_set(METRICS_GAUGE_START_TIME_S, (int64_t)time(NULL));
	metrics_gauge_set(METRICS_GAUGE_RELOAD_OK, 1);
	metrics_gauge_set(METRICS_GAUGE_RELOAD_TIME_S, (int64_t)time(NULL));
	clients_init();
	if (clients_publish(&d->cfg) < 0)
		log_warn("clients_overflow", "max_ids=%d detail=\"some configured clients share the overflow id\"",
			 CLIENTS_MAX);
	notify_init();
	signer_source_from(&d->cfg, &src);
	rc = signer_new(&src, &d->signer, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: credentials: %s\n", errbuf);
		goto out;
	}
	rc = keyring_load(&d->cfg, getenv("CREDENTIALS_DIRECTORY"), &keys, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: %s\n", errbuf);
		goto out_signer;
	}
	/* One daemon per database: a second would spend the quota again. */
	rc = lockfile_acquire(d->cfg.cache, &d->lock, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: cache: %s\n", errbuf);
		goto out_signer;
	}
	rc = cache_open(&co, &d->cache, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: cache: %s\n", errbuf);
		goto out_lock;
	}
	rc = proxy_new(&d->cfg, d->cache, d->signer, &d->proxy, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: upstream: %s\n", errbuf);
		goto out_cache;
	}
	rc = http_new(&d->cfg, d->proxy, &d->http, errbuf, sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "camskeyd: %s\n", errbuf);
		goto out_proxy;
	}
	http_set_keyring(d->http, keys);
	keys = NULL;
	rc = proxy_start(d->proxy);
	if (rc < 0) {
		fprintf(stderr, "camskeyd: cannot start the engine thread\n");
		goto out_http;
	}
	signer_access_key_id(d->signer, keyid, sizeof(keyid));
	log_info("started", "version=%s listen=%s upstream=%s signature=%s rate=%.3f burst=%u cache=%s access_key_id=%s",
		 CAMSKEYD_VERSION, http_listen_address(d->http), d->cfg.upstream,
		 d->cfg.signature == CONFIG_SIGNATURE_V1 ? "v1" : "v3", d->cfg.rate, d->cfg.burst,
		 d->cfg.cache, keyid);
	notify_send("READY=1");
	notify_status("serving on %s", http_listen_address(d->http));

	watchdog_us = notify_watchdog_usec();
	for (;;) {
		struct timespec timeout = { .tv_sec = 0, .tv_nsec = 250 * 1000000L };
		int64_t now_us;
		int sig = sigtimedwait(&sigs, NULL, &timeout);

		now_us = clock_mono_us();
		http_sweep(d->http);
		if (watchdog_us && now_us >= next_ping_us) {
			/* Ping only while the engine loop turns (it wakes at least every second). */
			if (now_us - proxy_heartbeat_us(d->proxy) < 3000000)
				notify_send("WATCHDOG=1");
			next_ping_us = now_us + (int64_t)watchdog_us / 2;
		}
		if (now_us >= next_status_us) {
			/* What `systemctl status` shows: is it serving, and how busy. */
			notify_status("serving on %s: %llu hits, %llu misses, %lld waiting, "
				      "limiter at %.2f calls/s",
				      http_listen_address(d->http),
				      (unsigned long long)metrics_result_value(METRICS_RESULT_HIT),
				      (unsigned long long)metrics_result_value(METRICS_RESULT_MISS),
				      (long long)metrics_gauge_value(METRICS_GAUGE_WAITERS),
				      (double)metrics_gauge_value(METRICS_GAUGE_EFFECTIVE_RATE_MILLI) /
					      1000.0);
			next_status_us = now_us + STATUS_INTERVAL_US;
		}
		if (sig == SIGHUP) {
			reload(d, argc, argv);
		} else if (sig == SIGTERM || sig == SIGINT) {
			log_info("stopping", "signal=%s grace_s=%u", sig == SIGTERM ? "TERM" : "INT",
				 d->cfg.shutdown_grace_s);
			notify_send("STOPPING=1");
			break;
		}
	}
	exit_code = 0;
	http_quiesce(d->http);
	proxy_stop(d->proxy, d->cfg.shutdown_grace_s * 1000);
out_http:
	http_free(d->http, STOP_FLUSH_MS);
out_proxy:
	proxy_free(d->proxy);
out_cache:
	cache_close(d->cache);
out_lock:
	lockfile_release(d->lock);
out_signer:
	keyring_free(keys);
	signer_free(d->signer);
out:
	notify_fini();
	clients_fini();
	if (exit_code == 0)
		log_info("stopped", "exit_code=%d", exit_code);
	/* Every thread that logs has ended: the buffered lines go out now. */
	log_fini();
	return exit_code;
}

int main(int argc, char **argv)
{
	struct daemon_state d;
	enum config_mode mode;
	struct buf err;
	int first_arg, rc;

	memset(&d, 0, sizeof(d));
	buf_init(&err, 64 * 1024);
	config_init(&d.cfg);
	rc = config_from_argv(argc, argv, &d.cfg, &mode, &first_arg, &err);
	if (rc < 0) {
		print_errors(&err);
		buf_free(&err);
		config_free(&d.cfg);
		return 2;
	}
	buf_free(&err);
	apply_logging(&d.cfg);

	switch (mode) {
	case CONFIG_MODE_HELP:
		config_usage(stdout);
		rc = 0;
		break;
	case CONFIG_MODE_VERSION:
		cli_print_version(stdout);
		rc = 0;
		break;
	case CONFIG_MODE_PRINT:
		config_print(&d.cfg, stdout);
		rc = 0;
		break;
	case CONFIG_MODE_CHECK: {
		struct signer_source src;
		char errbuf[512];

		/*
		 * The configuration is valid once config_from_argv() passed. The
		 * credential is reported apart: "not found" still exits 0, so CI
		 * can check a configuration before any credential is deployed; a
		 * credential that is there but unusable (mode, format) exits 1.
		 */
		printf("configuration ok%s%s\n", d.cfg.config_file ? ": " : "",
		       d.cfg.config_file ? d.cfg.config_file : "");
		signer_source_from(&d.cfg, &src);
		rc = signer_new(&src, &d.signer, errbuf, sizeof(errbuf));
		if (rc == -ENOENT) {
			const char *why = errbuf;

			if (strncmp(why, "no credentials found: ", 22) == 0)
				why += 22;
			printf("credentials: not found (%s); the daemon will not start without one\n",
			       why);
			rc = 0;
		} else if (rc < 0) {
			fprintf(stderr, "camskeyd: credentials: %s\n", errbuf);
			rc = 1;
		} else {
			char keyid[LIMIT_ACCESS_KEY_ID_MAX + 1];

			signer_access_key_id(d.signer, keyid, sizeof(keyid));
			printf("credentials: found (AccessKey ID %s)\n", keyid);
			rc = 0;
		}
		signer_free(d.signer);
		break;
	}
	case CONFIG_MODE_RUN:
		if (first_arg < argc)
			rc = cli_main(&d.cfg, argc - first_arg, argv + first_arg);
		else
			rc = serve(&d, argc, argv);
		break;
	}
	config_free(&d.cfg);
	return rc;
}
