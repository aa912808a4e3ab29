/*
 * upstream.c -- the libcurl multi loop that talks to the CAMS endpoint
 * (see upstream.h).
 *
 * Owns: one CURLM multi handle, one CURLSH share, and every in-flight
 * transfer (struct transfer: its easy handle, a private copy of the URL,
 * body and header list, and the response buffer). The multi handle keeps
 * the connection cache, so consecutive requests to the same host reuse one
 * keep-alive connection (or one HTTP/2 connection); the share adds the TLS
 * session cache and the DNS cache across easy handles, so a new connection
 * resumes the TLS session instead of a full handshake. Everything runs on
 * one thread, so the share needs no lock callbacks.
 *
 * Threads: every function on the engine thread, except upstream_wakeup()
 * (curl_multi_wakeup is documented thread-safe). upstream_parse_ratelimit()
 * is pure and callable anywhere.
 *
 * Invariants:
 *   - certificate verification is never switched off (VERIFYPEER 1,
 *     VERIFYHOST 2); only http and https are allowed, redirects are not
 *     followed (a redirect is reported as the 3xx it is);
 *   - a response body never grows past LIMIT_UPSTREAM_BODY_MAX_BYTES: the
 *     write callback refuses the byte that would pass it and the transfer
 *     ends as UPSTREAM_TOO_LARGE;
 *   - each transfer is delivered to on_done exactly once, then freed; a
 *     transfer aborted by upstream_free() is freed without a callback.
 *
 * Extra CA (--upstream-ca): with the OpenSSL backend, CURLOPT_CAINFO
 * replaces the built-in bundle. To add a CA while keeping the system store,
 * the given file goes to CURLOPT_CAINFO and the system's hashed directory
 * UPSTREAM_SYSTEM_CAPATH to CURLOPT_CAPATH; OpenSSL then trusts both. The
 * file must be readable at upstream_new() time, so a typo fails start-up
 * instead of every call.
 *
 * Arrival evidence (wire_delay_us, rtt_var_us in the result, for the
 * limiter): the transfer's start time is taken in upstream_start(), i.e. at
 * the send decision. CURLOPT_PREREQFUNCTION runs once the connection is
 * ready (connected, TLS done) right before the request is sent, and the
 * debug callback (CURLOPT_VERBOSE, output to our callback only, never to
 * stderr) sees CURLINFO_HEADER_OUT / CURLINFO_DATA_OUT after each write of
 * request bytes succeeded; the later of the two is when the request was on
 * the wire. libcurl's own timers do not serve: PRETRANSFER ends before the
 * request is written, STARTTRANSFER includes the server's processing, and
 * POSTTRANSFER (last byte sent) only exists from curl 8.10.
 *
 * The RTT variance (getsockopt TCP_INFO, tcpi_rttvar) is read in the
 * PREREQFUNCTION of a transfer that opened its connection, i.e. right after
 * the TCP (and TLS) handshake, whose RTT samples the peer's kernel answers
 * at once. It is deliberately not read later: on a request/response
 * connection every later RTT sample the client's kernel takes times the
 * peer's ACK of our request, which the peer delays (up to its delayed-ACK
 * timer, 40..200 ms) or piggybacks on the answer, so the kernel's figure
 * then measures the upstream's processing time, the very thing the limiter
 * must not count (seen with a 20-400 ms upstream on loopback: tcpi_rttvar
 * grew from ~20 us to 2-13 ms). A reused connection reports -1 (no new
 * evidence). The socket is found among those this transfer opened
 * (CURLOPT_SOCKOPTFUNCTION; two with happy eyeballs) by its local port.
 *
 * Not done here: signing (signer), retries and back-off (proxy), logging
 * (the caller logs the result's error text), curl_global_cleanup() (libcurl
 * stays initialised for the life of the process; curl_global_init() runs
 * once, under pthread_once, in the first upstream_new()).
 */
#include "upstream.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "buf.h"
#include "bounds.h"
#include "mem.h"
#include "span.h"

/* Debian's hashed certificate directory, kept when an extra CA is added. */
#define UPSTREAM_SYSTEM_CAPATH "/etc/ssl/certs"

/* Longest "scheme://host:port" we keep as the base URL. */
#define UPSTREAM_BASE_MAX 512

struct transfer {
	struct upstream *u;
	struct transfer *prev, *next; /* u->transfers */
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	char *body;                   /* the private copy POSTed */
	struct buf response;
	bool too_large;               /* the write callback hit the cap */
	void *cookie;
	int64_t ratelimit_remain;
	int64_t ratelimit_time_left_ms;
	struct timespec started;
	int64_t started_us;           /* the send decision, monotonic */
	int64_t ready_us;             /* PREREQFUNCTION ran: about to write; 0: not yet */
	int64_t written_us;           /* last request bytes written; 0: none seen */
	curl_socket_t opened[2];      /* sockets this transfer opened, last two */
	unsigned n_opened;
	int64_t rtt_var_us;           /* from the fresh connection, or -1 */
	char errbuf[CURL_ERROR_SIZE];
};

struct upstream {
	CURLM *multi;
	CURLSH *share;
	char base_url[UPSTREAM_BASE_MAX];    /* "https://host[:port]", no '/' */
	char host_header[UPSTREAM_BASE_MAX]; /* "host[:port]" */
	char *ca_file;                       /* NULL: the system store only */
	long connect_timeout_ms;
	long timeout_ms;
	struct transfer *transfers;
	unsigned in_flight;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static int64_t mono_us(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

/* ---- rate-limit hints ---- */

int upstream_parse_ratelimit(const char *value, size_t len, int64_t *ret_remain,
			     int64_t *ret_time_left_ms)
{
	struct span rest = span_make(value, value ? len : 0);
	int64_t remain = -1, time_left_ms = -1;
	bool more = true;
	unsigned fields = 0;

	/* At most one field per byte, so the loop is bounded by len. */
	while (more && fields++ <= len) {
		struct span field, name, num;
		uint64_t v;

		if (!span_split(rest, ',', &field, &rest)) {
			field = rest;
			more = false;
		}
		if (!span_split(field, ':', &name, &num))
			continue;
		name = span_trim(name);
		if (span_to_u64(span_trim(num), 0, INT64_MAX, &v) < 0)
			continue;
		if (span_eq_nocase(name, "Remain"))
			remain = (int64_t)v;
		else if (span_eq_nocase(name, "TimeLeft"))
			time_left_ms = (int64_t)v;
	}
	/* Limit and Reset alone tell the caller nothing it can act on. */
	if (remain < 0 && time_left_ms < 0)
		return -EINVAL;
	*ret_remain = remain;
	*ret_time_left_ms = time_left_ms;
	return 0;
}

/* ---- libcurl callbacks ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb;

	if (n > LIMIT_UPSTREAM_BODY_MAX_BYTES - t->response.len) {
		t->too_large = true;
		return 0; /* CURLE_WRITE_ERROR */
	}
	buf_add(&t->response, data, n);
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb;
	struct span line = span_make(data, n), name, value;
	int64_t remain, time_left_ms;

	/* A new status line starts a new header block (1xx, then the answer). */
	if (span_starts_with(line, "HTTP/")) {
		t->ratelimit_remain = -1;
		t->ratelimit_time_left_ms = -1;
		return n;
	}
	if (!span_split(line, ':', &name, &value))
		return n;
	name = span_trim(name);
	if (!span_eq_nocase(name, "x-ratelimit-user-api") && !span_eq_nocase(name, "x-ratelimit-user"))
		return n;
	while (value.len && (value.p[value.len - 1] == '\n' || value.p[value.len - 1] == '\r'))
		value.len--;
	value = span_trim(value);
	if (upstream_parse_ratelimit(value.p, value.len, &remain, &time_left_ms) < 0)
		return n;
	/* Both headers may come: the tighter of the two governs. */
	if (remain >= 0 && (t->ratelimit_remain < 0 || remain < t->ratelimit_remain))
		t->ratelimit_remain = remain;
	if (time_left_ms > t->ratelimit_time_left_ms)
		t->ratelimit_time_left_ms = time_left_ms;
	return n;
}

/* A socket for a new connection of this transfer (not yet connected). */
static int on_sockopt(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
	struct transfer *t = userdata;

	if (purpose == CURLSOCKTYPE_IPCXN)
		t->opened[t->n_opened++ % 2] = fd;
	return CURL_SOCKOPT_OK;
}

/* tcpi_rttvar of a TCP socket whose local port is local_port, or -1. */
static int64_t socket_rtt_var_us(curl_socket_t fd, int local_port)
{
	struct sockaddr_storage local;
	socklen_t local_len = sizeof(local);
	struct tcp_info info;
	socklen_t len = sizeof(info);
	int port;

	if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0)
		return -1;
	if (local.ss_family == AF_INET)
		port = ntohs(((struct sockaddr_in *)&local)->sin_port);
	else if (local.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&local)->sin6_port);
	else
		return -1; /* a UNIX socket has no RTT */
	if (port != local_port)
		return -1;
	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
	    len < offsetof(struct tcp_info, tcpi_rttvar) + sizeof(info.tcpi_rttvar))
		return -1;
	return (int64_t)info.tcpi_rttvar;
}

/* The connection is ready and the request is about to be sent. */
static int on_prereq(void *userdata, char *conn_primary_ip, char *conn_local_ip,
		     int conn_primary_port, int conn_local_port)
{
	struct transfer *t = userdata;
	unsigned i, n = t->n_opened < 2 ? t->n_opened : 2;

	t->ready_us = mono_us();
	/* Only a connection this transfer opened has handshake samples alone. */
	for (i = 0; i < n && t->rtt_var_us < 0; i++)
		t->rtt_var_us = socket_rtt_var_us(t->opened[i], conn_local_port);
	return CURL_PREREQFUNC_OK;
}

/*
 * Called (CURLOPT_VERBOSE) for everything curl would print; only the
 * request's own bytes matter, reported after each successful write. The
 * data (headers with the signature) is not looked at.
 */
static int on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userdata)
{
	struct transfer *t = userdata;

	if (type == CURLINFO_HEADER_OUT || type == CURLINFO_DATA_OUT)
		t->written_us = mono_us();
	return 0;
}

/* ---- setup and teardown ---- */

/* Parse base_url into u->base_url and u->host_header. 0 or -EINVAL. */
static int parse_base_url(struct upstream *u, const char *base_url, char *errbuf,
			  size_t errbuf_size)
{
	static const CURLUPart forbidden[] = { CURLUPART_QUERY, CURLUPART_FRAGMENT,
					       CURLUPART_USER, CURLUPART_PASSWORD };
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	CURLU *h = curl_url();
	CURLUcode uc;
	int n, r = -EINVAL;
	size_t i;

	if (!h) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: out of memory");
		return -ENOMEM;
	}
	uc = curl_url_set(h, CURLUPART_URL, base_url, 0);
	if (uc != CURLUE_OK) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: %s", curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcasecmp(scheme, "https") != 0 && strcasecmp(scheme, "http") != 0)) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: scheme must be https or http");
		goto out;
	}
	if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: no host");
		goto out;
	}
	/* The signer signs the request for "/", so the base must be the root. */
	if (curl_url_get(h, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: must not have a path");
		goto out;
	}
	for (i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
		char *part = NULL;

		if (curl_url_get(h, forbidden[i], &part, 0) == CURLUE_OK) {
			curl_free(part);
			errbuf_printf(errbuf, errbuf_size,
				  "upstream URL: must not have a query, fragment or user");
			goto out;
		}
	}
	/* An explicit port equal to the scheme's default is dropped, as curl would. */
	uc = curl_url_get(h, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
	if (uc == CURLUE_OK)
		n = snprintf(u->host_header, sizeof(u->host_header), "%s:%s", host, port);
	else
		n = snprintf(u->host_header, sizeof(u->host_header), "%s", host);
	if (n < 0 || (size_t)n >= sizeof(u->host_header)) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: host too long");
		goto out;
	}
	n = snprintf(u->base_url, sizeof(u->base_url), "%s://%s", scheme, u->host_header);
	if (n < 0 || (size_t)n >= sizeof(u->base_url)) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: host too long");
		goto out;
	}
	r = 0;
out:
	curl_free(path);
	curl_free(port);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(h);
	return r;
}

int upstream_new(const struct upstream_options *opt, struct upstream **ret, char *errbuf,
		 size_t errbuf_size)
{
	struct upstream *u;
	int r;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK) {
		errbuf_printf(errbuf, errbuf_size, "curl_global_init: %s",
			  curl_easy_strerror(global_rc));
		return -ENOMEM;
	}
	if (!opt || !opt->base_url) {
		errbuf_printf(errbuf, errbuf_size, "upstream URL: missing");
		return -EINVAL;
	}

	u = xcalloc(1, sizeof(*u));
	r = parse_base_url(u, opt->base_url, errbuf, errbuf_size);
	if (r < 0)
		goto out_free;
	if (opt->ca_file && opt->ca_file[0]) {
		if (access(opt->ca_file, R_OK) != 0) {
			errbuf_printf(errbuf, errbuf_size, "upstream CA file %s: %s", opt->ca_file,
				  strerror(errno));
			r = -EINVAL;
			goto out_free;
		}
		u->ca_file = xstrdup(opt->ca_file);
	}
	u->connect_timeout_ms = (long)opt->connect_timeout_ms;
	u->timeout_ms = (long)opt->timeout_ms;

	u->multi = curl_multi_init();
	u->share = curl_share_init();
	if (!u->multi || !u->share) {
		errbuf_printf(errbuf, errbuf_size, "libcurl: cannot create handles");
		r = -ENOMEM;
		goto out_free;
	}
	if (curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
		    CURLSHE_OK ||
	    curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
		errbuf_printf(errbuf, errbuf_size, "libcurl: cannot share TLS sessions");
		r = -ENOMEM;
		goto out_free;
	}
	*ret = u;
	return 0;

out_free:
	upstream_free(u);
	return r;
}

static void transfer_free(struct transfer *t)
{
	if (!t)
		return;
	if (t->easy)
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	free(t->url);
	free(t->body);
	buf_free(&t->response);
	free(t);
}

static void transfer_unlink(struct upstream *u, struct transfer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		u->transfers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	u->in_flight--;
}

void upstream_free(struct upstream *u)
{
	struct transfer *t, *next;

	if (!u)
		return;
	for (t = u->transfers; t; t = next) {
		next = t->next;
		curl_multi_remove_handle(u->multi, t->easy);
		transfer_free(t);
	}
	/* Easy handles using the share are gone; the share may go now. */
	if (u->multi)
		curl_multi_cleanup(u->multi);
	if (u->share)
		curl_share_cleanup(u->share);
	free(u->ca_file);
	free(u);
}

const char *upstream_host_header(const struct upstream *u)
{
	return u->host_header;
}

unsigned upstream_in_flight(const struct upstream *u)
{
	return u->in_flight;
}

/* Set every option of a fresh easy handle. CURLE_OK or the first failure. */
static CURLcode transfer_setup(struct upstream *u, struct transfer *t, size_t body_len)
{
	CURL *e = t->easy;
	CURLcode c = CURLE_OK;

#define SET(opt, val) \
	do { if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val); } while (0)
	SET(CURLOPT_URL, t->url);
	SET(CURLOPT_POST, 1L);
	SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	SET(CURLOPT_POSTFIELDS, t->body);
	SET(CURLOPT_HTTPHEADER, t->headers);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, u->connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, u->timeout_ms);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (u->ca_file) {
		SET(CURLOPT_CAINFO, u->ca_file);
		SET(CURLOPT_CAPATH, UPSTREAM_SYSTEM_CAPATH);
	}
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_ERRORBUFFER, t->errbuf);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, t);
	SET(CURLOPT_PRIVATE, t);
	SET(CURLOPT_SOCKOPTFUNCTION, on_sockopt);
	SET(CURLOPT_SOCKOPTDATA, t);
	SET(CURLOPT_PREREQFUNCTION, on_prereq);
	SET(CURLOPT_PREREQDATA, t);
	SET(CURLOPT_DEBUGFUNCTION, on_debug);
	SET(CURLOPT_DEBUGDATA, t);
	SET(CURLOPT_VERBOSE, 1L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_SHARE, u->share);
#undef SET
	return c;
}

int upstream_start(struct upstream *u, const struct signer_request *req, void *cookie)
{
	struct transfer *t;
	size_t base_len, path_len, body_len;
	char *const *h;

	if (!req || !req->path_and_query || req->path_and_query[0] != '/')
		return -EIO;

	t = xcalloc(1, sizeof(*t));
	t->u = u;
	t->cookie = cookie;
	t->ratelimit_remain = -1;
	t->ratelimit_time_left_ms = -1;
	t->rtt_var_us = -1;
	buf_init(&t->response, LIMIT_UPSTREAM_BODY_MAX_BYTES);

	base_len = strlen(u->base_url);
	path_len = strlen(req->path_and_query);
	t->url = xmalloc(base_len + path_len + 1);
	memcpy(t->url, u->base_url, base_len);
	memcpy(t->url + base_len, req->path_and_query, path_len + 1);

	body_len = req->body ? req->body_len : 0;
	/* One extra byte so an empty body still has a valid pointer. */
	t->body = xmalloc(body_len + 1);
	if (body_len)
		memcpy(t->body, req->body, body_len);
	t->body[body_len] = '\0';

	for (h = req->headers; h && *h; h++) {
		struct curl_slist *l = curl_slist_append(t->headers, *h);

		if (!l)
			goto out_free;
		t->headers = l;
	}
	{
		/* No "Expect: 100-continue" round trip for a small body. */
		struct curl_slist *l = curl_slist_append(t->headers, "Expect:");

		if (!l)
			goto out_free;
		t->headers = l;
	}

	t->easy = curl_easy_init();
	if (!t->easy)
		goto out_free;
	if (transfer_setup(u, t, body_len) != CURLE_OK)
		goto out_free;
	clock_gettime(CLOCK_MONOTONIC, &t->started);
	t->started_us = (int64_t)t->started.tv_sec * 1000000 + t->started.tv_nsec / 1000;
	if (curl_multi_add_handle(u->multi, t->easy) != CURLM_OK)
		goto out_free;

	t->next = u->transfers;
	if (u->transfers)
		u->transfers->prev = t;
	u->transfers = t;
	u->in_flight++;
	return 0;

out_free:
	transfer_free(t);
	return -EIO;
}

/* ---- the loop ---- */

static void copy_text(char *dst, size_t dst_size, const char *s)
{
	snprintf(dst, dst_size, "%s", s);
}

/* Fill res from a finished transfer. */
static void transfer_result(struct transfer *t, CURLcode code, struct upstream_result *res)
{
	int64_t on_wire_us = t->written_us > t->ready_us ? t->written_us : t->ready_us;

	memset(res, 0, sizeof(*res));
	res->cookie = t->cookie;
	res->ratelimit_remain = t->ratelimit_remain;
	res->ratelimit_time_left_ms = t->ratelimit_time_left_ms;
	res->elapsed_s = seconds_since(&t->started);
	res->wire_delay_us = -1;
	if (on_wire_us > 0)
		res->wire_delay_us = on_wire_us > t->started_us ? on_wire_us - t->started_us : 0;
	res->rtt_var_us = t->rtt_var_us;

	if (code == CURLE_OK) {
		long status = 0;

		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		res->outcome = UPSTREAM_HTTP;
		res->http_status = status;
		res->body = buf_steal(&t->response, &res->body_len);
		return;
	}
	if (code == CURLE_WRITE_ERROR && t->too_large) {
		res->outcome = UPSTREAM_TOO_LARGE;
		snprintf(res->error, sizeof(res->error), "response body over %d bytes",
			 LIMIT_UPSTREAM_BODY_MAX_BYTES);
	} else {
		res->outcome = code == CURLE_OPERATION_TIMEDOUT ? UPSTREAM_TIMEOUT
								: UPSTREAM_NETWORK;
		copy_text(res->error, sizeof(res->error),
			  t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
	}
	/* Consumers may rely on a NUL-terminated body whatever the outcome. */
	res->body = xstrdup("");
	res->body_len = 0;
}

/* Deliver every finished transfer. Returns how many. */
static unsigned drain(struct upstream *u,
		      void (*on_done)(struct upstream_result *res, void *cls), void *cls)
{
	struct upstream_result res;
	unsigned delivered = 0;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(u->multi, &left))) {
		struct transfer *t;
		char *priv = NULL;
		CURLcode code;
		CURL *e;

		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is invalid once the handle is removed: copy what we need. */
		e = msg->easy_handle;
		code = msg->data.result;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
		t = (struct transfer *)priv;
		assert(t);
		curl_multi_remove_handle(u->multi, e);
		transfer_unlink(u, t);
		transfer_result(t, code, &res);
		transfer_free(t);
		if (on_done)
			on_done(&res, cls);
		free(res.body);
		delivered++;
	}
	return delivered;
}

int upstream_poll(struct upstream *u, int timeout_ms,
		  void (*on_done)(struct upstream_result *res, void *cls), void *cls)
{
	return upstream_poll_fds(u, NULL, 0, timeout_ms, on_done, cls);
}

int upstream_poll_fds(struct upstream *u, struct upstream_waitfd *fds, unsigned n_fds,
		      int timeout_ms, void (*on_done)(struct upstream_result *res, void *cls),
		      void *cls)
{
	struct curl_waitfd wait[UPSTREAM_WAITFDS_MAX];
	int running;

	if (n_fds > UPSTREAM_WAITFDS_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n_fds; i++) {
		fds[i].revents = 0;
		/* CURL_WAIT_POLLIN/POLLOUT have poll.h's values (curl.h says so). */
		wait[i].fd = fds[i].fd;
		wait[i].events = fds[i].events;
		wait[i].revents = 0;
	}
	/* Finish what is already done before sleeping. */
	if (curl_multi_perform(u->multi, &running) != CURLM_OK)
		return -EIO;
	if (drain(u, on_done, cls) > 0)
		return 0;
	if (curl_multi_poll(u->multi, n_fds ? wait : NULL, n_fds, timeout_ms < 0 ? 0 : timeout_ms,
			    NULL) != CURLM_OK)
		return -EIO;
	for (unsigned i = 0; i < n_fds; i++)
		fds[i].revents = wait[i].revents;
	if (curl_multi_perform(u->multi, &running) != CURLM_OK)
		return -EIO;
	drain(u, on_done, cls);
	return 0;
}

void upstream_wakeup(struct upstream *u)
{
	curl_multi_wakeup(u->multi);
}
