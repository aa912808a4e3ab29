/*
 * upstream.h -- the HTTP client for the CAMS endpoint: one libcurl multi
 * handle, driven by the engine thread, sharing connections and TLS sessions.
 *
 * upstream_start() hands over a signed request; upstream_poll() waits for
 * network activity (or a wakeup, or the timeout), advances every transfer and
 * reports each finished one through a callback. Bodies are capped at
 * LIMIT_UPSTREAM_BODY_MAX_BYTES. Certificate verification is always on;
 * --upstream-ca adds a CA bundle. CURLOPT_NOSIGNAL is set.
 * Logs: nothing; the curl error text is returned in the result.
 * Threads: everything on the engine thread, except upstream_wakeup() (any).
 */
#ifndef CAMSKEYD_UPSTREAM_H
#define CAMSKEYD_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "signer.h"

struct upstream_options {
	const char *base_url;        /* "https://cams.ap-southeast-1.aliyuncs.com" */
	const char *ca_file;         /* extra CA bundle, or NULL/"" */
	unsigned connect_timeout_ms;
	unsigned timeout_ms;         /* whole transfer */
};

enum upstream_outcome {
	UPSTREAM_HTTP = 0,     /* an HTTP answer arrived: see http_status, body */
	UPSTREAM_TIMEOUT,      /* connect or total timeout */
	UPSTREAM_NETWORK,      /* refused, reset, DNS, TLS verification, ... */
	UPSTREAM_TOO_LARGE,    /* body over the limit */
};

struct upstream_result {
	void *cookie;                 /* as given to upstream_start() */
	enum upstream_outcome outcome;
	long http_status;             /* 0 unless outcome is UPSTREAM_HTTP */
	char *body;                   /* NUL-terminated; owned by the result */
	size_t body_len;
	char error[256];              /* curl's message when not UPSTREAM_HTTP */
	/* From x-ratelimit-user-api / x-ratelimit-user, -1 when absent. */
	int64_t ratelimit_remain;
	int64_t ratelimit_time_left_ms;
	double elapsed_s;             /* from upstream_start() to completion */
	/*
	 * What moved the request's arrival, for the limiter: wire_delay_us
	 * from upstream_start() (the send decision) until the request's last
	 * byte was written to the connection (queueing in the multi handle,
	 * DNS, connect, TLS handshake, a write the socket took in parts); the
	 * upstream's processing and the answer are not in it. -1 when the
	 * request never went out. rtt_var_us: the kernel's TCP RTT variance
	 * (tcp_info tcpi_rttvar) of a connection this transfer opened, read
	 * right after its handshake (later RTT samples time the upstream's
	 * delayed ACK, i.e. its processing); -1 for a reused connection or
	 * when unknown (not TCP).
	 */
	int64_t wire_delay_us;
	int64_t rtt_var_us;
};

struct upstream;

/* 0 or -EINVAL (bad URL) / -ENOMEM with a reason in errbuf. */
int upstream_new(const struct upstream_options *opt, struct upstream **ret, char *errbuf,
		 size_t errbuf_size);
/* Abort every transfer (callbacks are not called) and free. NULL ok. */
void upstream_free(struct upstream *u);

/* The Host header value the signer must sign ("host" or "host:port"). */
const char *upstream_host_header(const struct upstream *u);

/* Start POST of req (copied). 0 or -EIO. The cookie comes back in the result. */
int upstream_start(struct upstream *u, const struct signer_request *req, void *cookie);

/*
 * Wait up to timeout_ms for activity or upstream_wakeup(), then deliver every
 * finished transfer to on_done (the result is freed after the callback
 * returns; take the body with result->body = NULL if needed). 0 or -EIO.
 */
int upstream_poll(struct upstream *u, int timeout_ms,
		  void (*on_done)(struct upstream_result *res, void *cls), void *cls);

/* A descriptor to wait on beside the transfers (the Redis sockets). */
#define UPSTREAM_WAITFDS_MAX 4
struct upstream_waitfd {
	int fd;
	short events;   /* POLLIN | POLLOUT */
	short revents;  /* out: what was ready (0 if the poll did not sleep) */
};
/* upstream_poll(), also waking when one of fds is ready. -EINVAL: too many. */
int upstream_poll_fds(struct upstream *u, struct upstream_waitfd *fds, unsigned n_fds,
		      int timeout_ms, void (*on_done)(struct upstream_result *res, void *cls),
		      void *cls);

/* Make a sleeping upstream_poll() return. Any thread. */
void upstream_wakeup(struct upstream *u);

/* Transfers started and not yet delivered. */
unsigned upstream_in_flight(const struct upstream *u);

/*
 * Parse a rate-limit hint header value such as
 * "Limit:5,Remain:0,TimeLeft:800,Reset:1700000000". Pure.
 * 0 with the fields (-1 where absent), or -EINVAL.
 */
int upstream_parse_ratelimit(const char *value, size_t len, int64_t *ret_remain,
			     int64_t *ret_time_left_ms);

#endif
