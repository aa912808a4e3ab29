/*
 * redis.c -- the non-blocking Redis client of the shared limiter: hiredis
 * 0.14's async context driven by a five-hook adapter that only records
 * which events hiredis wants, so the owner's poll loop (curl_multi_poll's
 * extra_fds on the engine thread) waits on the socket.
 *
 * Owns: one redisAsyncContext at a time, the list of pending commands with
 * their deadlines, the handshake state (server run_id, script SHA), the
 * back-off, the password (wiped on free).
 *
 * Invariants:
 *  - every command handed to hiredis is a struct redis_cmd that hiredis
 *    calls back exactly once per submission (with a reply, or NULL when the
 *    context is freed); the cmd is freed in that callback, never elsewhere
 *    (except when the submission itself failed);
 *  - a user command is on r's pending list until its callback has been
 *    called; `done` marks one whose callback was called (a timeout, a drop)
 *    while hiredis still holds it;
 *  - the context is freed only outside hiredis's callbacks: a failure seen
 *    in a callback sets drop_requested and the entry point drops after
 *    hiredis returns.
 * Subscriber connections (redis_options.subscribe): AUTH, then SUBSCRIBE;
 * READY on its confirmation; hiredis keeps the channel's callback for every
 * message. hiredis 0.14 cannot match a PING's answer in subscribed mode (it
 * routes the ["pong", ""] array to a channel callback it does not find), so
 * liveness re-sends SUBSCRIBE for the same channel, whose confirmation comes
 * to that callback, with a deadline.
 * Not done here: name resolution (numeric addresses only), TLS (hiredis
 * 0.14 has none), reading the password (redis_load_password does, the
 * caller passes it in), logging.
 * Threads: one owner thread. Logs: nothing.
 */
#include "redis.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "mem.h"
#include "signer.h"
#include "span.h"

#include "redis_limiter_lua.h" /* generated: redis_limiter_lua[] (NUL-terminated) */

#define ARGS_MAX REDIS_COMMAND_ARGS
#define ENV_PASSWORD "CAMSKEYD_REDIS_PASSWORD"

enum cmd_kind {
	CMD_AUTH,
	CMD_SELECT,
	CMD_INFO,
	CMD_LOAD,   /* SCRIPT LOAD */
	CMD_GRANT,  /* EVALSHA grant */
	CMD_PAUSE,  /* EVALSHA pause */
	CMD_PLAIN,  /* redis_command */
};

struct redis_cmd {
	struct redis *r;
	struct redis_cmd *prev, *next;
	bool linked;   /* on r's pending list (user commands) */
	bool done;     /* user callback already called */
	bool retried;  /* NOSCRIPT retry spent */
	enum cmd_kind kind;
	int64_t issued_us, deadline_us;
	redis_grant_fn *grant_cb;
	redis_pause_fn *pause_cb;
	redis_reply_fn *reply_cb;
	void *cookie;
	/* EVALSHA's arguments after the SHA (owned), for the retry. */
	int argc;
	char *argv[ARGS_MAX];
	size_t argvlen[ARGS_MAX];
};

struct redis {
	struct redis_address addr;
	char *password;
	unsigned connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
	uint64_t rng;

	redisAsyncContext *ac;
	enum redis_state state;
	bool want_read, want_write;
	int64_t now_us;            /* of the current entry point */
	int64_t conn_deadline_us;  /* CONNECTING */
	int64_t next_attempt_us;   /* DISCONNECTED */
	unsigned failures;         /* since the last READY */
	unsigned handshake_left;
	bool drop_requested;
	int drop_error;
	char drop_text[200];

	char run_id[64];
	char sha[48];

	struct redis_cmd *head, *tail;
	unsigned n_pending;

	struct redis_stats stats;
	char last_error[200];

	/* subscriber connections */
	char *subscribe;           /* the channel, or NULL */
	void (*on_message)(void *cookie, const char *data, size_t len);
	void *message_cookie;
	int64_t next_ping_us;      /* READY: when liveness is checked next */
	int64_t ping_deadline_us;  /* a liveness SUBSCRIBE outstanding; 0: none */
};

/* ---- addresses and the password ---- */

bool redis_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

bool redis_name_ok(const char *s, size_t len)
{
	if (!s || len < 1 || len > REDIS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!redis_name_char(s[i]))
			return false;
	return true;
}

static bool name_ok(const char *s)
{
	return s && redis_name_ok(s, strlen(s));
}

int redis_parse_url(const char *url, struct redis_address *ret, char *errbuf,
		    size_t errbuf_size)
{
	struct redis_address a;
	struct span rest, hostport, dbpart, userpart, host, port;
	unsigned char bin[16];
	uint64_t v;

	memset(&a, 0, sizeof(a));
	a.port = 6379;
	if (!url || !*url) {
		errbuf_printf(errbuf, errbuf_size, "redis: empty address");
		return -EINVAL;
	}
	rest = span_cstr(url);
	if (span_starts_with(rest, "unix://")) {
		struct span path = span_make(url + 7, rest.len - 7);

		if (path.len < 2 || path.p[0] != '/') {
			errbuf_printf(errbuf, errbuf_size,
				"redis: '%s': unix:// needs an absolute path (unix:///run/redis.sock)", url);
			return -EINVAL;
		}
		if (span_copy(path, a.path, sizeof(a.path)) < 0) {
			errbuf_printf(errbuf, errbuf_size, "redis: '%s': socket path longer than %zu bytes",
				url, sizeof(a.path) - 1);
			return -EINVAL;
		}
		a.is_unix = true;
		*ret = a;
		return 0;
	}
	if (!span_starts_with(rest, "redis://")) {
		errbuf_printf(errbuf, errbuf_size,
			"redis: '%s': expected redis://[user@]host:port[/db] or unix:///path "
			"(rediss:// is not supported: hiredis 0.14 has no TLS)", url);
		return -EINVAL;
	}
	rest = span_make(url + 8, rest.len - 8);
	/* Refuse a password before any message quotes the address. */
	{
		const char *at = memchr(rest.p, '@', rest.len);

		if (at && memchr(rest.p, ':', (size_t)(at - rest.p))) {
			errbuf_printf(errbuf, errbuf_size,
				"redis: no password in the address (not quoted here); put it in "
				"$CREDENTIALS_DIRECTORY/redis-password, a 0600 file or "
				ENV_PASSWORD);
			return -EINVAL;
		}
	}
	if (!span_split(rest, '/', &hostport, &dbpart)) {
		hostport = rest;
		dbpart = span_make(NULL, 0);
	} else if (span_to_u64(dbpart, 0, 15, &v) < 0) {
		errbuf_printf(errbuf, errbuf_size, "redis: '%s': database must be 0..15", url);
		return -EINVAL;
	} else {
		a.db = (unsigned)v;
	}
	if (span_split(hostport, '@', &userpart, &hostport)) {
		if (!userpart.len || span_copy(userpart, a.user, sizeof(a.user)) < 0) {
			errbuf_printf(errbuf, errbuf_size, "redis: '%s': bad user name", url);
			return -EINVAL;
		}
	}
	if (hostport.len && hostport.p[0] == '[') {
		const char *close = memchr(hostport.p, ']', hostport.len);

		if (!close) {
			errbuf_printf(errbuf, errbuf_size, "redis: '%s': missing ']'", url);
			return -EINVAL;
		}
		host = span_make(hostport.p + 1, (size_t)(close - hostport.p) - 1);
		port = span_make(close + 1, hostport.len - (size_t)(close + 1 - hostport.p));
		if (port.len && port.p[0] != ':') {
			errbuf_printf(errbuf, errbuf_size, "redis: '%s': junk after ']'", url);
			return -EINVAL;
		}
		if (port.len) {
			port.p++;
			port.len--;
		} else {
			port.p = NULL;
		}
	} else if (!span_split(hostport, ':', &host, &port)) {
		host = hostport;
		port = span_make(NULL, 0);
	}
	if (port.p && span_to_u64(port, 1, 65535, &v) < 0) {
		errbuf_printf(errbuf, errbuf_size, "redis: '%s': port must be 1..65535", url);
		return -EINVAL;
	}
	if (port.p)
		a.port = (unsigned)v;
	if (!host.len || span_copy(host, a.host, sizeof(a.host)) < 0) {
		errbuf_printf(errbuf, errbuf_size, "redis: '%s': missing host", url);
		return -EINVAL;
	}
	if (inet_pton(AF_INET, a.host, bin) != 1 && inet_pton(AF_INET6, a.host, bin) != 1) {
		errbuf_printf(errbuf, errbuf_size,
			"redis: '%s': '%s' is not a numeric address; camskeyd resolves no names "
			"on its engine thread: give an IP address (127.0.0.1, [::1]) or unix:///path",
			url, a.host);
		return -EINVAL;
	}
	*ret = a;
	return 0;
}

/* Take a password from data (len bytes): one trailing newline dropped. */
static int password_set(const char *data, size_t len, const char *what, char *ret, size_t cap,
			char *errbuf, size_t errbuf_size)
{
	if (len && data[len - 1] == '\n')
		len--;
	if (len && data[len - 1] == '\r')
		len--;
	if (!len || memchr(data, '\n', len) || memchr(data, '\0', len)) {
		errbuf_printf(errbuf, errbuf_size, "%s: the Redis password must be one non-empty line",
			what);
		return -EINVAL;
	}
	if (len >= cap) {
		errbuf_printf(errbuf, errbuf_size, "%s: the Redis password is too long", what);
		return -EINVAL;
	}
	memcpy(ret, data, len);
	ret[len] = '\0';
	return 0;
}

static int password_from_file(const char *path, char *ret, size_t cap, char *errbuf,
			      size_t errbuf_size)
{
	char *data = NULL;
	size_t len = 0;
	int r;

	r = signer_read_private_file(path, REDIS_PASSWORD_MAX, &data, &len, errbuf, errbuf_size);
	if (r)
		return r;
	r = password_set(data, len, path, ret, cap, errbuf, errbuf_size);
	mem_wipe(data, REDIS_PASSWORD_MAX + 1);
	free(data);
	return r;
}

int redis_load_password(const char *credentials_dir, const char *password_file, char *ret,
			size_t cap, char *errbuf, size_t errbuf_size)
{
	const char *env;
	int r;

	if (credentials_dir && *credentials_dir) {
		char path[4096];
		int n = snprintf(path, sizeof(path), "%s/redis-password", credentials_dir);

		if (n < 0 || (size_t)n >= sizeof(path)) {
			errbuf_printf(errbuf, errbuf_size, "credentials directory path too long");
			return -EINVAL;
		}
		r = password_from_file(path, ret, cap, errbuf, errbuf_size);
		if (r != -ENOENT)
			return r;
	}
	if (password_file && *password_file) {
		r = password_from_file(password_file, ret, cap, errbuf, errbuf_size);
		if (r == -ENOENT) {
			errbuf_printf(errbuf, errbuf_size, "%s: Redis password file not found",
				password_file);
			return -EINVAL;
		}
		return r;
	}
	env = getenv(ENV_PASSWORD);
	if (env && *env)
		return password_set(env, strlen(env), ENV_PASSWORD, ret, cap, errbuf, errbuf_size);
	return -ENOENT;
}

/* ---- the adapter: hiredis says what it wants, the owner polls ---- */

static void ev_add_read(void *p)
{
	((struct redis *)p)->want_read = true;
}

static void ev_del_read(void *p)
{
	((struct redis *)p)->want_read = false;
}

static void ev_add_write(void *p)
{
	((struct redis *)p)->want_write = true;
}

static void ev_del_write(void *p)
{
	((struct redis *)p)->want_write = false;
}

static void ev_cleanup(void *p)
{
	struct redis *r = p;

	r->want_read = r->want_write = false;
}

/* ---- pending commands ---- */

static void cmd_link(struct redis *r, struct redis_cmd *c)
{
	c->prev = r->tail;
	c->next = NULL;
	if (r->tail)
		r->tail->next = c;
	else
		r->head = c;
	r->tail = c;
	c->linked = true;
	r->n_pending++;
}

static void cmd_unlink(struct redis *r, struct redis_cmd *c)
{
	if (!c->linked)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		r->tail = c->prev;
	c->prev = c->next = NULL;
	c->linked = false;
	r->n_pending--;
}

static void cmd_free(struct redis_cmd *c)
{
	for (int i = 0; i < c->argc; i++)
		free(c->argv[i]);
	free(c);
}

/* Call a user command's callback once, with an error. */
static void cmd_fail(struct redis_cmd *c, int error, const char *text)
{
	struct redis *r = c->r;

	if (c->done)
		return;
	c->done = true;
	cmd_unlink(r, c);
	r->stats.command_errors++;
	if (c->kind == CMD_GRANT && c->grant_cb)
		c->grant_cb(c->cookie, error, NULL, text);
	else if (c->kind == CMD_PAUSE && c->pause_cb)
		c->pause_cb(c->cookie, error, 0, text);
	else if (c->kind == CMD_PLAIN && c->reply_cb)
		c->reply_cb(c->cookie, error, NULL, text);
}

/* A command whose caller waits for a callback (the others are the handshake's). */
static bool is_user(const struct redis_cmd *c)
{
	return c->kind == CMD_GRANT || c->kind == CMD_PAUSE || c->kind == CMD_PLAIN;
}

static void set_error(struct redis *r, const char *text)
{
	snprintf(r->last_error, sizeof(r->last_error), "%s", text);
}

static uint64_t rng_next(struct redis *r)
{
	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return r->rng * UINT64_C(2685821657736338717);
}

/* The next attempt: exponential back-off, bounded, with jitter in [b/2, b]. */
static void schedule_retry(struct redis *r)
{
	uint64_t base_ms = r->backoff_min_ms;
	uint64_t half_us, span_us;

	for (unsigned i = 1; i < r->failures && base_ms < r->backoff_max_ms; i++)
		base_ms *= 2;
	if (base_ms > r->backoff_max_ms)
		base_ms = r->backoff_max_ms;
	if (r->failures < UINT32_MAX)
		r->failures++;
	half_us = base_ms * 1000 / 2;
	span_us = base_ms * 1000 - half_us;
	r->next_attempt_us = r->now_us + (int64_t)half_us + (int64_t)(rng_next(r) % (span_us + 1));
}

/*
 * Drop the connection (never from inside a hiredis callback): every pending
 * user command gets error once, the context is freed (its callbacks then
 * see done commands and free them), the next attempt is scheduled.
 */
static void drop(struct redis *r, int error, const char *text)
{
	redisAsyncContext *ac = r->ac;

	r->ac = NULL;
	r->state = REDIS_STATE_DISCONNECTED;
	r->want_read = r->want_write = false;
	r->drop_requested = false;
	r->run_id[0] = '\0';
	r->ping_deadline_us = 0;
	set_error(r, text);
	schedule_retry(r);
	while (r->head)
		cmd_fail(r->head, error, text);
	if (ac)
		redisAsyncFree(ac);
}

/* A failure seen inside a hiredis callback: drop after hiredis returns. */
static void request_drop(struct redis *r, int error, const char *text)
{
	if (r->drop_requested)
		return;
	r->drop_requested = true;
	r->drop_error = error;
	snprintf(r->drop_text, sizeof(r->drop_text), "%s", text);
}

static void after_hiredis(struct redis *r)
{
	if (r->drop_requested) {
		char text[sizeof(r->drop_text)];

		memcpy(text, r->drop_text, sizeof(text));
		drop(r, r->drop_error, text);
	}
}

static void on_reply(redisAsyncContext *ac, void *reply_v, void *privdata);

/* Hand c to hiredis: EVALSHA <sha> <argv...>, or its own internal command. */
static int cmd_submit(struct redis *r, struct redis_cmd *c)
{
	const char *argv[ARGS_MAX + 2];
	size_t lens[ARGS_MAX + 2];
	int n = 0;

	if (c->kind == CMD_GRANT || c->kind == CMD_PAUSE) {
		argv[n++] = "EVALSHA";
		argv[n++] = r->sha;
	}
	for (int i = 0; i < n; i++)
		lens[i] = strlen(argv[i]);
	for (int i = 0; i < c->argc; i++) {
		lens[n] = c->argvlen[i];
		argv[n++] = c->argv[i];
	}
	if (redisAsyncCommandArgv(r->ac, on_reply, c, n, argv, lens) != REDIS_OK)
		return -EIO;
	return 0;
}

static struct redis_cmd *cmd_new(struct redis *r, enum cmd_kind kind, int argc,
				 const char *const *argv)
{
	struct redis_cmd *c = xcalloc(1, sizeof(*c));

	assert(argc <= ARGS_MAX);
	c->r = r;
	c->kind = kind;
	c->argc = argc;
	for (int i = 0; i < argc; i++) {
		c->argv[i] = xstrdup(argv[i]);
		c->argvlen[i] = strlen(argv[i]);
	}
	return c;
}

/* Internal command (handshake, script load): 0 or -EIO. */
static int internal(struct redis *r, enum cmd_kind kind, int argc, const char *const *argv)
{
	struct redis_cmd *c = cmd_new(r, kind, argc, argv);

	if (cmd_submit(r, c) < 0) {
		cmd_free(c);
		return -EIO;
	}
	return 0;
}

static void parse_run_id(struct redis *r, const char *info, size_t len)
{
	const char *p = info, *end = info + len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (n > 7 && memcmp(p, "run_id:", 7) == 0) {
			size_t id = n - 7;

			while (id && (p[7 + id - 1] == '\r' || p[7 + id - 1] == ' '))
				id--;
			if (id && id < sizeof(r->run_id)) {
				memcpy(r->run_id, p + 7, id);
				r->run_id[id] = '\0';
			}
			return;
		}
		p += n + 1;
	}
}

static void became_ready(struct redis *r)
{
	r->state = REDIS_STATE_READY;
	r->failures = 0;
	r->stats.readies++;
	r->last_error[0] = '\0';
}

static void handshake_step_done(struct redis *r)
{
	if (r->subscribe) {
		/* AUTH done; READY comes with the SUBSCRIBE confirmation */
		if (r->handshake_left)
			r->handshake_left--;
		return;
	}
	if (r->handshake_left && --r->handshake_left == 0 && r->state == REDIS_STATE_CONNECTING) {
		if (!r->run_id[0] || !r->sha[0]) {
			request_drop(r, -EPROTO, "redis: no run_id in INFO server or no script SHA");
			return;
		}
		became_ready(r);
	}
}

static void on_internal_reply(struct redis *r, struct redis_cmd *c, redisReply *reply)
{
	char text[200];

	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(text, sizeof(text), "redis: %s failed: %s",
			 c->kind == CMD_AUTH ? "AUTH" : c->kind == CMD_SELECT ? "SELECT" :
			 c->kind == CMD_INFO ? "INFO" : "SCRIPT LOAD",
			 reply->str ? reply->str : "?");
		request_drop(r, -EPROTO, text);
		return;
	}
	if (c->kind == CMD_INFO && reply->type == REDIS_REPLY_STRING)
		parse_run_id(r, reply->str, reply->len);
	if (c->kind == CMD_LOAD && reply->type == REDIS_REPLY_STRING && reply->len < sizeof(r->sha)) {
		memcpy(r->sha, reply->str, reply->len);
		r->sha[reply->len] = '\0';
	}
	if (c->kind != CMD_LOAD || r->state == REDIS_STATE_CONNECTING)
		handshake_step_done(r);
}

static int64_t elem_int(const redisReply *rep, size_t i, bool *ok)
{
	if (i >= rep->elements || rep->element[i]->type != REDIS_REPLY_INTEGER) {
		*ok = false;
		return 0;
	}
	return (int64_t)rep->element[i]->integer;
}

static void count_reply(struct redis *r, const struct redis_cmd *c)
{
	r->stats.replies++;
	r->stats.rtt_us_last = r->now_us - c->issued_us;
	r->stats.rtt_us_sum += r->stats.rtt_us_last;
}

static void deliver_grant(struct redis *r, struct redis_cmd *c, redisReply *reply)
{
	struct redis_grant g;
	bool ok = true;
	int64_t flag;

	memset(&g, 0, sizeof(g));
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 4) {
		cmd_fail(c, -EPROTO, "redis: limiter script answered an unexpected shape");
		return;
	}
	flag = elem_int(reply, 0, &ok);
	g.delay_us = elem_int(reply, 1, &ok);
	g.pending = (unsigned)elem_int(reply, 2, &ok);
	g.slot_redis_us = elem_int(reply, 3, &ok);
	if (!ok || g.delay_us < 0) {
		cmd_fail(c, -EPROTO, "redis: limiter script answered an unexpected shape");
		return;
	}
	if (flag == 1) {
		g.verdict = REDIS_GRANT_GRANTED;
	} else {
		const redisReply *why = reply->elements > 4 ? reply->element[4] : NULL;

		g.verdict = why && why->type == REDIS_REPLY_STRING && why->str &&
				    strcmp(why->str, "pending") == 0 ?
			REDIS_GRANT_REFUSED_PENDING : REDIS_GRANT_REFUSED_HORIZON;
		g.slot_redis_us = 0;
	}
	g.issued_us = c->issued_us;
	g.replied_us = r->now_us;
	g.send_at_us = r->now_us + g.delay_us;
	c->done = true;
	cmd_unlink(r, c);
	count_reply(r, c);
	c->grant_cb(c->cookie, 0, &g, NULL);
}

static void deliver_pause(struct redis *r, struct redis_cmd *c, redisReply *reply)
{
	bool ok = true;
	int64_t left;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
		cmd_fail(c, -EPROTO, "redis: limiter script answered an unexpected shape");
		return;
	}
	left = elem_int(reply, 1, &ok);
	if (!ok) {
		cmd_fail(c, -EPROTO, "redis: limiter script answered an unexpected shape");
		return;
	}
	c->done = true;
	cmd_unlink(r, c);
	count_reply(r, c);
	c->pause_cb(c->cookie, 0, left, NULL);
}

static void on_reply(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct redis_cmd *c = privdata;
	struct redis *r = c->r;
	redisReply *reply = reply_v;
	char text[200];

	if (!reply) {
		/* The context is going away: ours (done commands) or a lost connection. */
		if (!c->done && is_user(c)) {
			r->state = REDIS_STATE_DISCONNECTED;
			snprintf(text, sizeof(text), "redis: connection lost: %s",
				 ac->errstr && *ac->errstr ? ac->errstr : "closed");
			cmd_fail(c, -ECONNRESET, text);
		}
		cmd_free(c);
		return;
	}
	if (!is_user(c)) {
		if (ac == r->ac)
			on_internal_reply(r, c, reply);
		cmd_free(c);
		return;
	}
	if (c->done) {
		cmd_free(c);
		return;
	}
	if (c->kind == CMD_PLAIN) {
		/* An error reply is an answer too: the caller reads it. */
		c->done = true;
		cmd_unlink(r, c);
		count_reply(r, c);
		c->reply_cb(c->cookie, 0, reply, NULL);
		cmd_free(c);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		if (!c->retried && reply->str && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
		    ac == r->ac) {
			/* Load the script again; the retry is pipelined behind it. */
			const char *load[] = { "SCRIPT", "LOAD", redis_limiter_lua };

			c->retried = true;
			r->stats.noscript_retries++;
			if (internal(r, CMD_LOAD, 3, load) == 0 && cmd_submit(r, c) == 0)
				return;
			cmd_fail(c, -EIO, "redis: cannot queue the script reload");
			cmd_free(c);
			return;
		}
		snprintf(text, sizeof(text), "redis: %s", reply->str ? reply->str : "error");
		cmd_fail(c, -EPROTO, text);
		cmd_free(c);
		return;
	}
	if (c->kind == CMD_GRANT)
		deliver_grant(r, c, reply);
	else
		deliver_pause(r, c, reply);
	cmd_free(c);
}

/*
 * The channel's callback: hiredis calls it for the SUBSCRIBE confirmation
 * (the first: READY; later ones: liveness answered) and for every message;
 * with NULL when the context is freed.
 */
static void on_subscribed(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct redis *r = privdata;
	redisReply *reply = reply_v;
	const redisReply *kind;

	if (!reply || ac != r->ac || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
		return;
	kind = reply->element[0];
	if (kind->type != REDIS_REPLY_STRING)
		return;
	if (strcasecmp(kind->str, "subscribe") == 0) {
		r->ping_deadline_us = 0;
		r->next_ping_us = r->now_us + 4 * (int64_t)r->command_timeout_ms * 1000;
		if (r->state == REDIS_STATE_CONNECTING && r->handshake_left == 0)
			became_ready(r);
		return;
	}
	if (strcasecmp(kind->str, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING &&
	    r->on_message) {
		r->stats.replies++;
		r->on_message(r->message_cookie, reply->element[2]->str, reply->element[2]->len);
	}
}

static int subscribe(struct redis *r)
{
	const char *argv[] = { "SUBSCRIBE", r->subscribe };
	size_t lens[] = { 9, strlen(r->subscribe) };

	if (redisAsyncCommandArgv(r->ac, on_subscribed, r, 2, argv, lens) != REDIS_OK)
		return -EIO;
	return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct redis *r = ac->data;
	const char *info[] = { "INFO", "server" };
	const char *load[] = { "SCRIPT", "LOAD", redis_limiter_lua };
	char db[16];
	int rc = 0;

	if (ac != r->ac)
		return;
	if (status != REDIS_OK) {
		char text[200];

		/* hiredis frees the context after this callback. */
		snprintf(text, sizeof(text), "redis: connect failed: %s",
			 ac->errstr && *ac->errstr ? ac->errstr : "error");
		r->ac = NULL;
		r->state = REDIS_STATE_DISCONNECTED;
		r->want_read = r->want_write = false;
		r->stats.disconnects++;
		set_error(r, text);
		schedule_retry(r);
		return;
	}
	r->handshake_left = 0;
	if (r->password && *r->password) {
		const char *auth2[] = { "AUTH", r->password };
		const char *auth3[] = { "AUTH", r->addr.user, r->password };

		rc |= r->addr.user[0] ? internal(r, CMD_AUTH, 3, auth3) :
					internal(r, CMD_AUTH, 2, auth2);
		r->handshake_left++;
	}
	if (r->addr.db) {
		const char *sel[] = { "SELECT", db };

		snprintf(db, sizeof(db), "%u", r->addr.db);
		rc |= internal(r, CMD_SELECT, 2, sel);
		r->handshake_left++;
	}
	if (r->subscribe) {
		rc |= subscribe(r);
		if (rc)
			request_drop(r, -EIO, "redis: cannot queue the handshake");
		return;
	}
	rc |= internal(r, CMD_INFO, 2, info);
	rc |= internal(r, CMD_LOAD, 3, load);
	r->handshake_left += 2;
	if (rc)
		request_drop(r, -EIO, "redis: cannot queue the handshake");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis *r = ac->data;

	if (ac != r->ac)
		return; /* freed by drop() */
	r->ac = NULL;
	r->state = REDIS_STATE_DISCONNECTED;
	r->want_read = r->want_write = false;
	r->run_id[0] = '\0';
	r->stats.disconnects++;
	set_error(r, ac->errstr && *ac->errstr ? ac->errstr : "redis: disconnected");
	schedule_retry(r);
	(void)status;
}

static void start_connect(struct redis *r)
{
	redisAsyncContext *ac;
	char text[200];

	r->stats.connects++;
	r->run_id[0] = '\0';
	r->sha[0] = '\0';
	ac = r->addr.is_unix ? redisAsyncConnectUnix(r->addr.path) :
			       redisAsyncConnect(r->addr.host, (int)r->addr.port);
	if (!ac) {
		set_error(r, "redis: out of memory");
		schedule_retry(r);
		return;
	}
	if (ac->err) {
		snprintf(text, sizeof(text), "redis: connect failed: %s", ac->errstr);
		set_error(r, text);
		redisAsyncFree(ac);
		r->stats.disconnects++;
		schedule_retry(r);
		return;
	}
	ac->data = r;
	ac->ev.data = r;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	r->ac = ac;
	r->state = REDIS_STATE_CONNECTING;
	r->conn_deadline_us = r->now_us + (int64_t)r->connect_timeout_ms * 1000;
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Sets the connect callback and asks for the first write event. */
	redisAsyncSetConnectCallback(ac, on_connect);
}

/* ---- the public API ---- */

int redis_new(const struct redis_options *opt, struct redis **ret, char *errbuf,
	      size_t errbuf_size)
{
	struct redis_address addr;
	struct redis *r;
	int rc;

	rc = redis_parse_url(opt->url, &addr, errbuf, errbuf_size);
	if (rc)
		return rc;
	if (!opt->connect_timeout_ms || !opt->command_timeout_ms || !opt->backoff_min_ms ||
	    opt->backoff_max_ms < opt->backoff_min_ms) {
		errbuf_printf(errbuf, errbuf_size, "redis: timeouts and back-off must be positive, "
			      "backoff_max_ms >= backoff_min_ms");
		return -EINVAL;
	}
	if (addr.user[0] && !(opt->password && *opt->password)) {
		errbuf_printf(errbuf, errbuf_size, "redis: user '%s' given but no password", addr.user);
		return -EINVAL;
	}
	r = xcalloc(1, sizeof(*r));
	r->addr = addr;
	if (opt->password && *opt->password)
		r->password = xstrdup(opt->password);
	r->connect_timeout_ms = opt->connect_timeout_ms;
	r->command_timeout_ms = opt->command_timeout_ms;
	r->backoff_min_ms = opt->backoff_min_ms;
	r->backoff_max_ms = opt->backoff_max_ms;
	r->rng = opt->jitter_seed ? opt->jitter_seed :
				    ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)r;
	if (!r->rng)
		r->rng = 1;
	if (opt->subscribe) {
		r->subscribe = xstrdup(opt->subscribe);
		r->on_message = opt->on_message;
		r->message_cookie = opt->message_cookie;
	}
	r->state = REDIS_STATE_DISCONNECTED;
	r->next_attempt_us = INT64_MIN; /* the first tick connects */
	*ret = r;
	return 0;
}

void redis_free(struct redis *r)
{
	redisAsyncContext *ac;

	if (!r)
		return;
	ac = r->ac;
	r->ac = NULL;
	r->state = REDIS_STATE_DISCONNECTED;
	while (r->head)
		cmd_fail(r->head, -ECANCELED, "redis: client closed");
	if (ac)
		redisAsyncFree(ac);
	if (r->password) {
		mem_wipe(r->password, strlen(r->password));
		free(r->password);
	}
	free(r->subscribe);
	free(r);
}

int redis_fd(const struct redis *r)
{
	return r->ac ? r->ac->c.fd : -1;
}

short redis_events(const struct redis *r)
{
	if (!r->ac)
		return 0;
	return (short)((r->want_read ? POLLIN : 0) | (r->want_write ? POLLOUT : 0));
}

void redis_on_readable(struct redis *r, int64_t now_us)
{
	r->now_us = now_us;
	if (r->ac)
		redisAsyncHandleRead(r->ac);
	after_hiredis(r);
}

void redis_on_writable(struct redis *r, int64_t now_us)
{
	r->now_us = now_us;
	if (r->ac)
		redisAsyncHandleWrite(r->ac);
	after_hiredis(r);
}

void redis_tick(struct redis *r, int64_t now_us)
{
	r->now_us = now_us;
	after_hiredis(r);
	if (r->state == REDIS_STATE_CONNECTING && now_us >= r->conn_deadline_us) {
		r->stats.timeouts++;
		drop(r, -ETIMEDOUT, "redis: connect and handshake timed out");
	}
	for (struct redis_cmd *c = r->head; c; c = c->next) {
		if (now_us >= c->deadline_us) {
			r->stats.timeouts++;
			drop(r, -ETIMEDOUT, "redis: command timed out");
			break;
		}
	}
	if (r->subscribe && r->state == REDIS_STATE_READY && r->ac) {
		if (r->ping_deadline_us && now_us >= r->ping_deadline_us) {
			r->stats.timeouts++;
			drop(r, -ETIMEDOUT, "redis: the subscriber's liveness check timed out");
		} else if (!r->ping_deadline_us && now_us >= r->next_ping_us) {
			r->ping_deadline_us = now_us + (int64_t)r->command_timeout_ms * 1000;
			if (subscribe(r) < 0)
				drop(r, -EIO, "redis: cannot queue the liveness check");
		}
	}
	if (r->state == REDIS_STATE_DISCONNECTED && !r->ac && now_us >= r->next_attempt_us)
		start_connect(r);
}

int64_t redis_next_wake_us(const struct redis *r)
{
	int64_t t = INT64_MAX;

	if (r->state == REDIS_STATE_DISCONNECTED && !r->ac)
		return r->next_attempt_us;
	if (r->state == REDIS_STATE_CONNECTING)
		t = r->conn_deadline_us;
	for (const struct redis_cmd *c = r->head; c; c = c->next)
		if (c->deadline_us < t)
			t = c->deadline_us;
	if (r->subscribe && r->state == REDIS_STATE_READY) {
		int64_t p = r->ping_deadline_us ? r->ping_deadline_us : r->next_ping_us;

		if (p < t)
			t = p;
	}
	return t;
}

enum redis_state redis_state(const struct redis *r)
{
	return r->state;
}

const char *redis_run_id(const struct redis *r)
{
	return r->state == REDIS_STATE_READY ? r->run_id : "";
}

void redis_get_stats(const struct redis *r, struct redis_stats *ret)
{
	*ret = r->stats;
}

const char *redis_last_error(const struct redis *r)
{
	return r->last_error;
}

static int key_names(const char *scope, char *grants, size_t gsize, char *meta, size_t msize)
{
	if (!name_ok(scope))
		return -EINVAL;
	snprintf(grants, gsize, REDIS_KEY_PREFIX "{%s}:grants", scope);
	snprintf(meta, msize, REDIS_KEY_PREFIX "{%s}:meta", scope);
	return 0;
}

static int submit_user(struct redis *r, struct redis_cmd *c, int64_t now_us)
{
	c->issued_us = now_us;
	c->deadline_us = now_us + (int64_t)r->command_timeout_ms * 1000;
	if (cmd_submit(r, c) < 0) {
		cmd_free(c);
		return -ENOTCONN;
	}
	cmd_link(r, c);
	r->stats.commands++;
	return 0;
}

int redis_grant(struct redis *r, const struct redis_grant_request *req, int64_t now_us,
		redis_grant_fn *cb, void *cookie)
{
	char kg[REDIS_NAME_MAX + 32], km[REDIS_NAME_MAX + 32];
	char rate[16], window[24], spacing[24], pending[16], horizon[24];
	struct redis_cmd *c;
	if (r->subscribe)
		return -EINVAL;

	if (!cb || !req->rate || req->rate > 1000 || !req->window_ms || !req->spacing_us ||
	    (uint64_t)req->spacing_us > (uint64_t)req->window_ms * 1000 ||
	    !req->max_pending || !name_ok(req->host_id) ||
	    key_names(req->scope, kg, sizeof(kg), km, sizeof(km)) < 0)
		return -EINVAL;
	if (r->state != REDIS_STATE_READY || !r->ac)
		return -ENOTCONN;
	if (r->n_pending >= REDIS_PENDING_MAX)
		return -EAGAIN;
	snprintf(rate, sizeof(rate), "%u", req->rate);
	snprintf(window, sizeof(window), "%llu", (unsigned long long)req->window_ms * 1000);
	snprintf(spacing, sizeof(spacing), "%u", req->spacing_us);
	snprintf(pending, sizeof(pending), "%u", req->max_pending);
	snprintf(horizon, sizeof(horizon), "%llu", (unsigned long long)req->horizon_ms * 1000);
	{
		const char *argv[] = { "2", kg, km, "grant", r->run_id, rate, window, spacing,
				       req->host_id, pending, horizon };

		c = cmd_new(r, CMD_GRANT, (int)(sizeof(argv) / sizeof(argv[0])), argv);
	}
	c->grant_cb = cb;
	c->cookie = cookie;
	r->now_us = now_us;
	return submit_user(r, c, now_us);
}

int redis_pause(struct redis *r, const char *scope, unsigned pause_ms, unsigned window_ms,
		unsigned horizon_ms, int64_t now_us, redis_pause_fn *cb, void *cookie)
{
	char kg[REDIS_NAME_MAX + 32], km[REDIS_NAME_MAX + 32];
	char pause[24], window[24], horizon[24];
	struct redis_cmd *c;
	if (r->subscribe)
		return -EINVAL;

	if (!cb || !window_ms || key_names(scope, kg, sizeof(kg), km, sizeof(km)) < 0)
		return -EINVAL;
	if (r->state != REDIS_STATE_READY || !r->ac)
		return -ENOTCONN;
	if (r->n_pending >= REDIS_PENDING_MAX)
		return -EAGAIN;
	snprintf(pause, sizeof(pause), "%llu", (unsigned long long)pause_ms * 1000);
	snprintf(window, sizeof(window), "%llu", (unsigned long long)window_ms * 1000);
	snprintf(horizon, sizeof(horizon), "%llu", (unsigned long long)horizon_ms * 1000);
	{
		const char *argv[] = { "2", kg, km, "pause", r->run_id, pause, window, horizon };

		c = cmd_new(r, CMD_PAUSE, (int)(sizeof(argv) / sizeof(argv[0])), argv);
	}
	c->pause_cb = cb;
	c->cookie = cookie;
	r->now_us = now_us;
	return submit_user(r, c, now_us);
}

int redis_command(struct redis *r, int argc, const char *const *argv, const size_t *argvlen,
		  int64_t now_us, redis_reply_fn *cb, void *cookie)
{
	struct redis_cmd *c;

	if (!cb || argc < 1 || argc > REDIS_COMMAND_ARGS || r->subscribe)
		return -EINVAL;
	if (r->state != REDIS_STATE_READY || !r->ac)
		return -ENOTCONN;
	if (r->n_pending >= REDIS_PENDING_MAX)
		return -EAGAIN;
	c = xcalloc(1, sizeof(*c));
	c->r = r;
	c->kind = CMD_PLAIN;
	c->argc = argc;
	for (int i = 0; i < argc; i++) {
		/* binary safe, and NUL-terminated for nobody's sake but safety */
		c->argv[i] = xmalloc(argvlen[i] + 1);
		memcpy(c->argv[i], argv[i], argvlen[i]);
		c->argv[i][argvlen[i]] = '\0';
		c->argvlen[i] = argvlen[i];
	}
	c->reply_cb = cb;
	c->cookie = cookie;
	r->now_us = now_us;
	return submit_user(r, c, now_us);
}
