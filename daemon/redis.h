/*
 * redis.h -- a non-blocking Redis client for the shared limiter, on
 * hiredis 0.14's async API, driven from a poll loop its owner runs.
 *
 * The owner puts redis_fd() with redis_events() in its poll set (the engine
 * thread: curl_multi_poll's extra_fds, a struct curl_waitfd whose
 * CURL_WAIT_POLLIN/POLLOUT have poll.h's values), reading both again before
 * every poll (the fd changes on reconnection; -1 means none), calls
 * redis_on_readable() (also on POLLERR/POLLHUP) / redis_on_writable() when
 * the fd is ready and redis_tick() at least at redis_next_wake_us(). Time
 * is an argument (monotonic microseconds).
 *
 * Connection: redis_new() only parses and copies; the first redis_tick()
 * connects. After the socket connects, a handshake (AUTH if a password is
 * set, SELECT if db > 0, INFO server for run_id, SCRIPT LOAD of the limiter
 * script) must complete before the connection is READY; commands are only
 * accepted when READY (-ENOTCONN otherwise: the caller's fail-closed policy
 * decides, nothing queues behind a dead server).
 *
 * Deadlines (hiredis 0.14 has none in its async API): connecting plus the
 * handshake must finish within connect_timeout_ms, every command within
 * command_timeout_ms of its submission. Past any deadline the connection
 * is dropped and every pending command's callback gets -ETIMEDOUT, exactly
 * once. A connection lost otherwise gives its pending callbacks
 * -ECONNRESET. Then reconnection waits backoff = min(backoff_max_ms,
 * backoff_min_ms * 2^(failures-1)), drawn uniformly in [backoff/2, backoff]
 * (jitter, so hosts do not reconnect in step); READY resets it.
 *
 * EVALSHA: a NOSCRIPT answer (SCRIPT FLUSH, a restarted server, a failover)
 * loads the script again and retries the command once, within its original
 * deadline; the caller sees only the final answer.
 *
 * Addresses (redis_parse_url): redis://[user@]HOST[:PORT][/DB] with HOST a
 * numeric IPv4 address or a bracketed IPv6 one (no name resolution on the
 * engine thread: a name is a configuration error), PORT default 6379, DB
 * 0..15 default 0; unix:///ABSOLUTE/PATH. A password in the URL is refused:
 * it comes from redis_load_password().
 *
 * The owner must ignore SIGPIPE (hiredis writes with write(2)).
 * Logs: nothing; errors come back as codes with one line of text.
 * Threads: one owner thread for everything (the engine thread); callbacks
 * run on it, inside redis_on_readable/on_writable/tick/free.
 */
#ifndef CAMSKEYD_REDIS_H
#define CAMSKEYD_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest scope and host id; their alphabet is [A-Za-z0-9._:-]. */
#define REDIS_NAME_MAX 128
/* A character of that alphabet; a whole name of 1..REDIS_NAME_MAX of them. Pure. */
bool redis_name_char(char c);
bool redis_name_ok(const char *s, size_t len);
/* Commands pending at once (-EAGAIN beyond). */
#define REDIS_PENDING_MAX 1024
/* A Redis password (file or environment). */
#define REDIS_PASSWORD_MAX 512
/* The key names: camskeyd:v1:{SCOPE}:grants / :meta (hash tag: one slot). */
#define REDIS_KEY_PREFIX "camskeyd:v1:"

struct redis_address {
	bool is_unix;
	char host[64];      /* numeric, without brackets */
	unsigned port;
	char path[108];     /* unix socket */
	char user[64];      /* ACL user or "" */
	unsigned db;
};

/*
 * Parse a --redis URL. 0 or -EINVAL with one line in errbuf (a host name
 * gets its own message). *ret is written only on success. Pure.
 */
int redis_parse_url(const char *url, struct redis_address *ret, char *errbuf,
		    size_t errbuf_size);

/*
 * The Redis password, the first found of: credentials_dir/redis-password
 * (systemd's $CREDENTIALS_DIRECTORY; may be NULL), password_file (may be
 * NULL), $CAMSKEYD_REDIS_PASSWORD. Files follow the credential rules
 * (regular file, no group/other access, bounded; one trailing newline
 * dropped). 0 with ret (cap bytes, NUL-terminated; the caller wipes it),
 * -ENOENT (none: no AUTH), -EPERM / -EINVAL with errbuf set.
 */
int redis_load_password(const char *credentials_dir, const char *password_file, char *ret,
			size_t cap, char *errbuf, size_t errbuf_size);

struct redis_options {
	const char *url;              /* see redis_parse_url */
	const char *password;         /* NULL or "": no AUTH; copied, wiped on free */
	unsigned connect_timeout_ms;  /* connect + handshake; > 0 */
	unsigned command_timeout_ms;  /* each command; > 0 */
	unsigned backoff_min_ms;      /* > 0 */
	unsigned backoff_max_ms;      /* >= backoff_min_ms */
	uint64_t jitter_seed;         /* 0: from the time and the pid */
	/*
	 * Subscriber connection: non-NULL makes this connection subscribe to
	 * this channel (handshake: AUTH, SUBSCRIBE; no SELECT, INFO or
	 * script) and accept no commands; READY once the SUBSCRIBE is
	 * confirmed. Every message is handed to on_message. A SUBSCRIBE to
	 * the same channel again every command_timeout_ms * 4 (its
	 * confirmation due within command_timeout_ms; hiredis 0.14 cannot
	 * match a PING's answer in subscribed mode) finds a stalled server. Messages published while it was not READY are lost:
	 * the owner compares redis_stats.readies to notice a new connection.
	 */
	const char *subscribe;
	void (*on_message)(void *cookie, const char *data, size_t len);
	void *message_cookie;
};

enum redis_state {
	REDIS_STATE_DISCONNECTED = 0, /* waiting for the next attempt */
	REDIS_STATE_CONNECTING,       /* socket connecting or handshake */
	REDIS_STATE_READY,
};

struct redis_stats {
	uint64_t connects;        /* attempts started */
	uint64_t readies;         /* handshakes completed */
	uint64_t timeouts;        /* connections dropped for a deadline */
	uint64_t disconnects;     /* connections lost otherwise (EOF, error) */
	uint64_t noscript_retries;
	uint64_t commands;        /* submitted */
	uint64_t command_errors;  /* callbacks with an error, timeouts included */
	uint64_t replies;         /* limiter answers delivered */
	int64_t rtt_us_last;      /* submission to answer, of the last one */
	int64_t rtt_us_sum;       /* of all `replies` (mean = sum / replies) */
};

struct redis;

/* 0 or -EINVAL (bad URL or options) with errbuf set. Does no I/O. */
int redis_new(const struct redis_options *opt, struct redis **ret, char *errbuf,
	      size_t errbuf_size);
/*
 * Drop the connection (pending callbacks get -ECANCELED) and free; the
 * password is wiped. NULL ok. Never from inside a callback.
 */
void redis_free(struct redis *r);

/* The socket to poll, or -1 (no connection). */
int redis_fd(const struct redis *r);
/* POLLIN / POLLOUT (poll.h values) the fd waits for; 0 without a connection. */
short redis_events(const struct redis *r);
void redis_on_readable(struct redis *r, int64_t now_us);
void redis_on_writable(struct redis *r, int64_t now_us);
/* Enforce deadlines, start a connection when the back-off is over. */
void redis_tick(struct redis *r, int64_t now_us);
/* The next time redis_tick() has work (a deadline or an attempt), or INT64_MAX. */
int64_t redis_next_wake_us(const struct redis *r);

enum redis_state redis_state(const struct redis *r);
/* The connected server's run_id ("" before READY). */
const char *redis_run_id(const struct redis *r);
void redis_get_stats(const struct redis *r, struct redis_stats *ret);
/* The last connection error, one line ("" if none). */
const char *redis_last_error(const struct redis *r);

/* ---- the shared limiter (redis_limiter.lua) ---- */

struct redis_grant_request {
	const char *scope;        /* the quota scope, [A-Za-z0-9._:-]{1,128} */
	const char *host_id;      /* this host, same alphabet */
	unsigned rate;            /* grants per window, 1..1000 */
	unsigned window_ms;       /* 1000 + the margin */
	unsigned spacing_us;      /* 1..window: no two grants closer */
	unsigned max_pending;     /* not-yet-due grants this host may hold, >= 1 */
	unsigned horizon_ms;      /* longest delay granted; lost state waits
	                             window + horizon */
};

enum redis_grant_verdict {
	REDIS_GRANT_GRANTED = 1,
	REDIS_GRANT_REFUSED_PENDING, /* this host holds max_pending */
	REDIS_GRANT_REFUSED_HORIZON, /* the next slot is beyond the horizon */
};

/*
 * A grant, with its times on the caller's monotonic clock. Redis decided
 * at some instant between issued_us (the submission) and replied_us (the
 * reply was read); the slot is delay_us after that instant. So:
 *   - send no earlier than send_at_us = replied_us + delay_us (never early);
 *   - throw the grant away, unsent, if the send would happen later than
 *     issued_us + delay_us + the caller's late tolerance (its margin): the
 *     round trip and the wake-up both count. A grant thrown away is a wasted
 *     slot; one used late can put rate + 1 calls in a window.
 * Refused: retry no earlier than replied_us + delay_us.
 */
struct redis_grant {
	enum redis_grant_verdict verdict;
	int64_t delay_us;      /* granted: until the slot; refused: until a retry may succeed */
	int64_t issued_us;
	int64_t replied_us;
	int64_t send_at_us;    /* granted: replied_us + delay_us */
	unsigned pending;      /* this host's not-yet-due grants, this one included */
	int64_t slot_redis_us; /* granted: the slot on Redis's clock (TIME) */
};

/*
 * error: 0 (grant valid), -ETIMEDOUT, -ECONNRESET, -ECANCELED (redis_free),
 * -EPROTO (Redis answered an error or an unexpected shape; error_text says
 * which). grant is NULL unless error is 0.
 */
typedef void redis_grant_fn(void *cookie, int error, const struct redis_grant *grant,
			    const char *error_text);

/*
 * Ask the shared limiter for a slot. 0 (cb will be called exactly once),
 * -ENOTCONN (not READY), -EAGAIN (REDIS_PENDING_MAX pending), -EINVAL (bad
 * request). On an error return cb is never called.
 */
int redis_grant(struct redis *r, const struct redis_grant_request *req, int64_t now_us,
		redis_grant_fn *cb, void *cookie);

/*
 * error as for redis_grant; pause_left_us the pause every host now honours
 * (Redis time), on success.
 */
typedef void redis_pause_fn(void *cookie, int error, int64_t pause_left_us,
			    const char *error_text);

/*
 * Record a throttle seen by this host (System.LimitControl, a rate-limit
 * hint): no host's grant is placed before Redis time now + pause_ms; a
 * longer pause already recorded stays. window_ms and horizon_ms as in the
 * grant requests of the scope (a pause may be the first call after lost
 * state). Returns as redis_grant.
 */
int redis_pause(struct redis *r, const char *scope, unsigned pause_ms, unsigned window_ms,
		unsigned horizon_ms, int64_t now_us, redis_pause_fn *cb, void *cookie);

/* ---- plain commands (the shared cache tier, shared.c) ---- */

struct redisReply; /* hiredis's reply, read-only and valid only inside the callback */

/*
 * error: 0 (reply is the server's answer, an error reply included:
 * REDIS_REPLY_ERROR), -ETIMEDOUT, -ECONNRESET, -ECANCELED (redis_free).
 * reply is NULL unless error is 0; it is freed when the callback returns.
 */
typedef void redis_reply_fn(void *cookie, int error, const struct redisReply *reply,
			    const char *error_text);

/*
 * Send one command, binary safe (argvlen[i] bytes of argv[i]; at most
 * REDIS_COMMAND_ARGS arguments), under the same deadline, drop and
 * reconnection rules as every command. Returns as redis_grant (-EINVAL:
 * too many arguments, or a subscriber connection).
 */
#define REDIS_COMMAND_ARGS 16
int redis_command(struct redis *r, int argc, const char *const *argv, const size_t *argvlen,
		  int64_t now_us, redis_reply_fn *cb, void *cookie);

#endif
