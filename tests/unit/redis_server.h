/*
 * redis_server.h -- what the Redis tests (test_redis.c, test_shared.c)
 * share: a private redis-server on a UNIX socket (or loopback TCP) in a
 * temporary directory, no persistence, never a system server, started and
 * stopped by PID (also on failure: atexit and signal handlers); a bounded
 * poll loop that drives a struct redis. Header-only, static inline, so each
 * test file takes what it uses.
 */
#ifndef CAMSKEYD_REDIS_SERVER_H
#define CAMSKEYD_REDIS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "redis.h"

#define MAX_SERVERS 4
static pid_t servers[MAX_SERVERS];
static char tmpdir[256];
static char sock_path[300];
static const char *redis_bin;
static int server_seq;

static inline void stop_all(void)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (servers[i] > 0) {
			kill(servers[i], SIGKILL);
			waitpid(servers[i], NULL, 0);
			servers[i] = 0;
		}
	}
}

static inline void on_signal(int sig)
{
	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i] > 0)
			kill(servers[i], SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

static inline void stop_server(pid_t pid)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (servers[i] == pid && pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			servers[i] = 0;
		}
	}
}

static inline redisContext *control(const char *path)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectUnixWithTimeout(path, tv);

	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	if (c)
		redisSetTimeout(c, tv);
	return c;
}

static inline redisContext *tcp_control(int port)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);

	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	if (c)
		redisSetTimeout(c, tv);
	return c;
}

/* A loopback TCP port free right now (bind to 0, read it, close). */
static inline int free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Start redis-server on path, or on 127.0.0.1:tcp_port when tcp_port > 0
 * (password NULL: none). The PID, or -1. */
static inline pid_t start_server_on(const char *path, int tcp_port, const char *password)
{
	char port_s[16];

	char logfile[400];
	pid_t pid;
	int slot = -1;

	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i] <= 0) {
			slot = i;
			break;
		}
	if (slot < 0)
		return -1;
	snprintf(logfile, sizeof(logfile), "%s/redis-%d.log", tmpdir, server_seq++);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		const char *argv[24];
		int n = 0;

		argv[n++] = redis_bin;
		snprintf(port_s, sizeof(port_s), "%d", tcp_port > 0 ? tcp_port : 0);
		argv[n++] = "--port";
		argv[n++] = port_s;
		if (tcp_port > 0) {
			argv[n++] = "--bind";
			argv[n++] = "127.0.0.1";
		} else {
			argv[n++] = "--unixsocket";
			argv[n++] = path;
			argv[n++] = "--unixsocketperm";
			argv[n++] = "700";
		}
		argv[n++] = "--save";
		argv[n++] = "";
		argv[n++] = "--appendonly";
		argv[n++] = "no";
		argv[n++] = "--dir";
		argv[n++] = tmpdir;
		argv[n++] = "--logfile";
		argv[n++] = logfile;
		if (password) {
			argv[n++] = "--requirepass";
			argv[n++] = password;
		}
		argv[n] = NULL;
		execv(redis_bin, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	servers[slot] = pid;
	/* Wait (bounded: 5 s) until it answers. */
	for (int i = 0; i < 100; i++) {
		redisContext *c = tcp_port > 0 ? tcp_control(tcp_port) : control(path);

		if (c) {
			redisReply *rep = redisCommand(c, "PING");
			bool ok = rep != NULL;

			if (rep)
				freeReplyObject(rep);
			redisFree(c);
			if (ok)
				return pid;
		}
		usleep(50000);
	}
	stop_server(pid);
	return -1;
}

static inline pid_t start_server(const char *path, const char *password)
{
	return start_server_on(path, 0, password);
}

static inline int64_t redis_time_us(const char *path)
{
	redisContext *c = control(path);
	redisReply *rep;
	int64_t t = -1;

	if (!c)
		return -1;
	rep = redisCommand(c, "TIME");
	if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2)
		t = strtoll(rep->element[0]->str, NULL, 10) * 1000000 +
		    strtoll(rep->element[1]->str, NULL, 10);
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return t;
}

static inline bool control_cmd(const char *path, const char *cmd)
{
	redisContext *c = control(path);
	redisReply *rep;
	bool ok;

	if (!c)
		return false;
	rep = redisCommand(c, cmd);
	ok = rep && rep->type != REDIS_REPLY_ERROR;
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return ok;
}

/* ---- driving the client ---- */

static inline void pump_once(struct redis *r, int64_t limit_us)
{
	int64_t now = clock_mono_us();
	int64_t wake = redis_next_wake_us(r);
	int64_t t = wake < limit_us ? wake : limit_us;
	int timeout_ms = t <= now ? 0 : (int)((t - now + 999) / 1000);
	struct pollfd pfd;

	if (timeout_ms > 20)
		timeout_ms = 20;
	pfd.fd = redis_fd(r);
	pfd.events = redis_events(r);
	pfd.revents = 0;
	if (pfd.fd >= 0 && pfd.events)
		poll(&pfd, 1, timeout_ms);
	else
		poll(NULL, 0, timeout_ms);
	now = clock_mono_us();
	if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
		redis_on_readable(r, now);
	if ((pfd.revents & POLLOUT) && redis_fd(r) == pfd.fd)
		redis_on_writable(r, clock_mono_us());
	redis_tick(r, clock_mono_us());
}

static inline void pump_for(struct redis **rs, int n, int ms)
{
	int64_t end = clock_mono_us() + (int64_t)ms * 1000;

	for (int i = 0; i < 100000 && clock_mono_us() < end; i++)
		for (int k = 0; k < n; k++)
			pump_once(rs[k], end);
}

static inline bool wait_ready(struct redis *r, int ms)
{
	int64_t end = clock_mono_us() + (int64_t)ms * 1000;

	redis_tick(r, clock_mono_us());
	for (int i = 0; i < 100000 && clock_mono_us() < end; i++) {
		if (redis_state(r) == REDIS_STATE_READY)
			return true;
		pump_once(r, end);
	}
	return redis_state(r) == REDIS_STATE_READY;
}

static inline struct redis *client_url(const char *url, const char *password, unsigned cmd_ms)
{
	char err[256];
	struct redis_options o = {
		.url = url,
		.password = password,
		.connect_timeout_ms = 300,
		.command_timeout_ms = cmd_ms,
		.backoff_min_ms = 20,
		.backoff_max_ms = 200,
		.jitter_seed = 42,
	};
	struct redis *r = NULL;

	if (redis_new(&o, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "  redis_new: %s\n", err);
		return NULL;
	}
	return r;
}

static inline struct redis *client(const char *path, const char *password, unsigned cmd_ms)
{
	char url[400];

	snprintf(url, sizeof(url), "unix://%s", path);
	return client_url(url, password, cmd_ms);
}


#define NEED_SERVER()                                                                   \
	do {                                                                           \
		if (!redis_bin)                                                        \
			SKIP("redis-server not installed (make deps installs it)");    \
	} while (0)


static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}


static pid_t main_pid;

/* The shared server on sock_path, started (or continued) if needed. */
static inline void ensure_main(void)
{
	if (main_pid > 0)
		kill(main_pid, SIGCONT); /* a test that failed while it was stopped */
	if (main_pid <= 0 || kill(main_pid, 0) != 0)
		main_pid = start_server(sock_path, NULL);
}

/* A subscriber connection to channel at url (messages to fn). */
static inline struct redis *subscriber_url(const char *url, const char *password,
					   const char *channel, unsigned cmd_ms,
					   void (*fn)(void *, const char *, size_t), void *cookie)
{
	char err[256];
	struct redis_options o = {
		.url = url,
		.password = password,
		.connect_timeout_ms = 300,
		.command_timeout_ms = cmd_ms,
		.backoff_min_ms = 20,
		.backoff_max_ms = 200,
		.jitter_seed = 43,
		.subscribe = channel,
		.on_message = fn,
		.message_cookie = cookie,
	};
	struct redis *r = NULL;

	if (redis_new(&o, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "  redis_new: %s\n", err);
		return NULL;
	}
	return r;
}

/* A subscriber connection to channel on the socket path. */
static inline struct redis *subscriber(const char *path, const char *channel, unsigned cmd_ms,
				       void (*fn)(void *, const char *, size_t), void *cookie)
{
	char url[400];

	snprintf(url, sizeof(url), "unix://%s", path);
	return subscriber_url(url, NULL, channel, cmd_ms, fn, cookie);
}

/* The messages a subscriber received (the first 16), for on_message_cb. */
struct inbox {
	int n;
	char msg[16][256];
};

static inline void on_message_cb(void *cookie, const char *data, size_t len)
{
	struct inbox *in = cookie;

	if (in->n < 16) {
		snprintf(in->msg[in->n], sizeof(in->msg[0]), "%.*s", (int)len, data);
		in->n++;
	}
}

/*
 * Find redis-server, make the temporary directory (name from prefix, e.g.
 * "/tmp/camskeyd-redis-XXXXXX"), install the atexit and signal handlers.
 * 0, or -1 (mkdtemp failed). redis_bin stays NULL without a server.
 */
static inline int redis_server_setup(const char *tmpl_in)
{
	static const char *candidates[] = { "/usr/bin/redis-server", "/usr/local/bin/redis-server",
					    "/usr/sbin/redis-server" };
	char tmpl[200];

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
		if (access(candidates[i], X_OK) == 0) {
			redis_bin = candidates[i];
			break;
		}
	snprintf(tmpl, sizeof(tmpl), "%s", tmpl_in);
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
	atexit(stop_all);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGABRT, on_signal);
	signal(SIGSEGV, on_signal);
	return 0;
}

/* Stop every server and remove the temporary directory. */
static inline void redis_server_teardown(void)
{
	stop_all();
	if (nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

#endif
