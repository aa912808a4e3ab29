/*
 * http.c -- the libmicrohttpd front end (see http.h).
 *
 * Owns: the MHD daemon, the listening socket, the access settings snapshot
 * (admin token, default wait limit). The snapshot is immutable and swapped
 * with an atomic pointer on reload, so the hit path takes no lock to read
 * it; old snapshots are kept until http_free() (a reload is rare and a
 * snapshot is small). Clients, their tokens and wait limits are clients.c's
 * snapshot, read the same way; a caller's client id comes from there too.
 *
 * A request's life: on_request() is first called after the headers; the
 * request is answered there (hit, error, health, metrics) or suspended and
 * submitted to the proxy. The proxy's on_done (engine thread) resumes the
 * connection; MHD calls on_request() again and the answer is queued. The
 * completion callback writes the access line and frees the request.
 * Bodies sent to us are ignored (nothing here takes a body).
 */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <linux/filter.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clients.h"
#include "clock.h"
#include "envelope.h"
#include "keyring.h"
#include "hex.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "netaddr.h"
#include "route.h"
#include "span.h"
#include "verify.h"

/*
 * libmicrohttpd's per-connection pool holds the read buffer and a record
 * (~56 bytes) per header and per query argument, and is zeroed after every
 * request: its size is paid on every hit (128 KiB cost a third of the hit
 * rate, measured with wrk). 24 KiB holds a LIMIT_URI_MAX_BYTES URI with
 * LIMIT_QUERY_ARGS_MAX arguments and about 8 KiB of headers.
 */
#define HTTP_CONNECTION_MEMORY_BYTES (24 * 1024)

/*
 * A worker that has not slept for HTTP_BUSY_YIELD_US offers its core to
 * whoever waits for it (sched_yield()). The callers of a local daemon share
 * its cores: a worker that always has work otherwise keeps the core for a
 * whole scheduler tick (4 ms at HZ=250) while a caller's answers sit
 * unread, and that is the p99 callers see (DESIGN.md, "the tail"). Checked
 * every HTTP_BUSY_CHECK_EVERY answers: one getrusage() for its count of
 * sleeps. A worker that sleeps between requests never yields.
 */
#define HTTP_BUSY_CHECK_EVERY 16
#define HTTP_BUSY_YIELD_US 500

/* A connection, for the request-head deadline (slow clients). */
struct http_conn {
	struct http_conn *prev, *next;
	int fd;
	atomic_llong head_deadline_us;  /* the request head must be in by then */
	atomic_bool head_done;          /* headers of the current request arrived */
	bool shut;
};

/* The clients and their tokens are in clients.h's snapshot. */
struct http_snapshot {
	struct http_snapshot *older;   /* kept until http_free */
	char admin_token_sha256[65];
	unsigned default_max_wait_ms;
};

struct http {
	struct MHD_Daemon *mhd;
	struct proxy *proxy;
	_Atomic(struct http_snapshot *) snapshot;
	int listen_fd;
	char listen_address[128];
	char unix_path[108];       /* removed on exit when we created it */
	mode_t unix_mode;
	bool activated;            /* the socket is systemd's (socket activation) */
	uint64_t id_seed;
	atomic_uint_fast64_t id_counter;
	int64_t head_timeout_us;        /* connection-timeout */
	pthread_mutex_t conns_mu;       /* the list below */
	struct http_conn conns;         /* circular list head */
	/* The drop-in endpoint: the teams' key pairs (swapped on reload) and the nonces seen. */
	pthread_mutex_t keyring_mu;     /* keyring: swapped and searched under it */
	struct keyring *keyring;
	struct verify_nonces *nonces;
};

/*
 * The request headers the daemon reads, each whole (with its length).
 * value NULL: absent. Pointers into libmicrohttpd's pool, valid for the
 * request.
 */
struct http_header {
	const char *value;
	size_t len;
};

struct key_headers {
	struct http_header authorization, client_id, cache_control, if_none_match;
};

/* One per request; allocated after the headers, freed on completion. */
struct http_request {
	struct http *h;
	struct MHD_Connection *connection;
	struct proxy_request preq;
	int64_t started_us;
	enum route_kind route;
	int status;
	enum { HR_NEW, HR_SUSPENDED, HR_RESUMED, HR_ANSWERED } state;
	bool headers_seen;
	bool route_done;
	bool uri_too_long;
	bool headers_too_large;
	bool path_routed;               /* on_uri routed the raw path (below) */
	int path_rc;                    /* route_parse_path's result */
	struct route_error path_err;    /* when path_rc < 0 */
	const char *method;
	char client_name[LIMIT_CLIENT_NAME_MAX + 1];
	unsigned client_id;             /* when client_known */
	bool client_known;              /* a configured client: by token or by name */
	struct key_headers kh;          /* read with the head (read_head) */
	char code[LIMIT_CODE_MAX + 1];  /* the answer's envelope Code, for the access log; "" none */
	/* ROUTE_SDK: the request body, read whole before anything else */
	struct buf body;
	bool body_started;
	bool body_too_large;
};

/* ---- responses ----------------------------------------------------------------- */

static void add_common_headers(struct MHD_Response *r, const struct http_request *hr)
{
	MHD_add_response_header(r, "X-Request-Id", hr->preq.call.request_id);
}

static enum MHD_Result queue_body(struct http_request *hr, int status, const char *content_type,
				  char *body, size_t len, int retry_after_s)
{
	struct MHD_Response *r;
	enum MHD_Result ret;
	char num[24];

	/* body is malloc'd; MHD frees it with the response */
	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	add_common_headers(r, hr);
	if (retry_after_s > 0) {
		snprintf(num, sizeof(num), "%d", retry_after_s);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW,
					hr->route == ROUTE_KEY   ? "GET, HEAD, DELETE"
					: hr->route == ROUTE_SDK ? "POST, GET"
								 : "GET, HEAD");
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"camskeyd\"");
	hr->status = status;
	ret = MHD_queue_response(hr->connection, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result queue_error(struct http_request *hr, int status, const char *code,
				   const char *message)
{
	struct buf b;
	size_t len;
	char *body;

	snprintf(hr->code, sizeof(hr->code), "%s", code);
	buf_init(&b, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&b, hr->preq.call.request_id, code, message);
	body = buf_steal(&b, &len);
	return queue_body(hr, status, "application/json", body, len, 0);
}

/* ---- the drop-in endpoint's answers (Alibaba's style) ---------------------------- */

#define SDK_CONTENT_TYPE "application/json;charset=utf-8"

/* Headers an official SDK reads: its request id, and on 503 the wait in ms. */
static void add_sdk_headers(struct MHD_Response *r, const struct http_request *hr,
			    int retry_after_s)
{
	char num[24];

	MHD_add_response_header(r, "x-acs-request-id", hr->preq.call.request_id);
	if (retry_after_s > 0) {
		snprintf(num, sizeof(num), "%d", retry_after_s * 1000);
		MHD_add_response_header(r, "x-acs-retry-after", num);
	}
}

/* An error envelope as Alibaba answers it: JSON, x-acs-request-id. */
static enum MHD_Result queue_sdk_error(struct http_request *hr, int status, const char *code,
				       const char *message, bool close_connection)
{
	struct MHD_Response *r;
	enum MHD_Result ret;
	struct buf b;
	size_t len;
	char *body;

	buf_init(&b, LIMIT_BODY_MAX_BYTES);
	envelope_render_error(&b, hr->preq.call.request_id, code, message);
	body = buf_steal(&b, &len);
	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, SDK_CONTENT_TYPE);
	add_common_headers(r, hr);
	add_sdk_headers(r, hr, 0);
	if (close_connection)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	snprintf(hr->preq.call.answer.code, sizeof(hr->preq.call.answer.code), "%s", code);
	snprintf(hr->code, sizeof(hr->code), "%s", code);
	hr->status = status;
	ret = MHD_queue_response(hr->connection, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static void unref_entry(void *cls)
{
	cache_entry_unref(cls);
}

/*
 * The Code of an error envelope the engine rendered, for the access log:
 * envelope.c writes it as "Code":"..." and Codes hold no quote or escape.
 */
static void code_of_body(const char *body, size_t len, char *out, size_t out_size)
{
	static const char tag[] = "\"Code\":\"";
	const char *p = body ? memmem(body, len, tag, sizeof(tag) - 1) : NULL;
	size_t n = 0;

	if (p) {
		p += sizeof(tag) - 1;
		while (p + n < body + len && p[n] != '"' && n + 1 < out_size)
			n++;
		memcpy(out, p, n);
	}
	out[n] = '\0';
}

/* The answer the proxy produced (from an entry or an error body). */
static enum MHD_Result queue_proxy_answer(struct http_request *hr)
{
	struct engine_answer *a = &hr->preq.call.answer;
	struct MHD_Response *r;
	enum MHD_Result ret;
	/* room for "camskeyd; " and any cache_status, a quoted ETag, a number */
	char value[10 + sizeof(a->cache_status)];
	int status = a->http_status;

	if (a->entry) {
		struct cache_entry *e = a->entry;
		bool not_modified = false;

		memcpy(hr->code, e->code, sizeof(hr->code));
		/* The header holds no NUL (refused before): a C string, whole. */
		if (e->etag[0] && hr->kh.if_none_match.len) {
			const char *inm = hr->kh.if_none_match.value;
			char quoted[LIMIT_SHA256_HEX + 2];

			snprintf(quoted, sizeof(quoted), "\"%s\"", e->etag);
			not_modified = strstr(inm, quoted) != NULL || strcmp(inm, "*") == 0;
		}
		if (not_modified && status == 200) {
			status = MHD_HTTP_NOT_MODIFIED;
			r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
			a->outcome = ENGINE_OUTCOME_NOT_MODIFIED;
		} else {
			/* Serve the entry's pre-rendered body; the reference goes with it. */
			r = MHD_create_response_from_buffer_with_free_callback_cls(
				e->body_len, e->body, unref_entry, e);
			if (r)
				a->entry = NULL;
		}
		if (!r)
			return MHD_NO;
		if (status != MHD_HTTP_NOT_MODIFIED)
			MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
						hr->route == ROUTE_SDK ? SDK_CONTENT_TYPE
								       : "application/json");
		/* The hit path formats without printf (make bench profiles it). */
		if (e->etag[0]) {
			size_t n = strlen(e->etag);

			value[0] = '"';
			memcpy(value + 1, e->etag, n);
			memcpy(value + 1 + n, "\"", 2);
			MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, value);
		}
		span_format_i64(a->age_s, value);
		MHD_add_response_header(r, MHD_HTTP_HEADER_AGE, value);
	} else {
		if (hr->route == ROUTE_SDK && a->outcome == ENGINE_OUTCOME_UPSTREAM_ERROR &&
		    strncmp(a->code, "Proxy.", 6) != 0) {
			/*
			 * The upstream refused camskeyd's own request (its
			 * credential, clock or signing): passing that Code
			 * through would make a team doubt its own key pair.
			 */
			char message[LIMIT_CODE_MAX + 160];

			snprintf(message, sizeof(message),
				 "the upstream refused camskeyd's own request (%s); tell the camskeyd operator",
				 a->code);
			engine_answer_error(a, a->outcome, a->http_status, NULL,
					    hr->preq.call.request_id, "Proxy.UpstreamCredentialError",
					    message, 0, a->cache_status);
		}
		code_of_body(a->body, a->body_len, hr->code, sizeof(hr->code));
		r = MHD_create_response_from_buffer(a->body_len, a->body, MHD_RESPMEM_MUST_FREE);
		if (!r)
			return MHD_NO;
		a->body = NULL;
		a->body_len = 0;
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
					hr->route == ROUTE_SDK ? SDK_CONTENT_TYPE : "application/json");
	}
	if (a->cache_status[0]) {
		size_t n = strlen(a->cache_status);

		memcpy(value, "camskeyd; ", 10);
		memcpy(value + 10, a->cache_status, n + 1);
		MHD_add_response_header(r, "Cache-Status", value);
	}
	if (a->retry_after_s > 0) {
		snprintf(value, sizeof(value), "%d", a->retry_after_s);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, value);
	}
	if (hr->state != HR_NEW) {
		/* The answer needed the upstream quota: describe it (IETF draft). */
		unsigned quota, remaining, reset_s;

		proxy_ratelimit(hr->h->proxy, &quota, &remaining, &reset_s);
		snprintf(value, sizeof(value), "\"upstream\";q=%u;w=1", quota);
		MHD_add_response_header(r, "RateLimit-Policy", value);
		snprintf(value, sizeof(value), "\"upstream\";r=%u;t=%u", remaining, reset_s);
		MHD_add_response_header(r, "RateLimit", value);
	}
	add_common_headers(r, hr);
	if (hr->route == ROUTE_SDK)
		add_sdk_headers(r, hr, a->retry_after_s);
	hr->status = status;
	ret = MHD_queue_response(hr->connection, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- access control -------------------------------------------------------------- */

/*
 * Who is asking: a configured client by bearer token (constant-time
 * comparison of SHA-256 digests, clients_by_token), else X-Client-Id;
 * anonymous callers are named by their peer address later, only if needed
 * (client_name_fill). -EACCES when tokens are required and none matches.
 */
static int identify(struct http_request *hr, const struct clients_snapshot *cs,
		    const struct key_headers *kh)
{
	const struct http_header *auth = &kh->authorization, *id = &kh->client_id;
	bool tokens_required = clients_tokens_required(cs);

	if (auth->value && auth->len >= 7 && strncasecmp(auth->value, "Bearer ", 7) == 0) {
		char digest[LIMIT_SHA256_HEX];
		const char *name = NULL;
		int rc = -ENOENT;

		/* The whole token (a NUL in it was refused before). */
		if (hex_sha256(auth->value + 7, auth->len - 7, digest) == 0)
			rc = clients_by_token(cs, digest, &hr->client_id, &name);
		mem_wipe(digest, sizeof(digest));
		if (rc == 0) {
			hr->client_known = true;
			snprintf(hr->client_name, sizeof(hr->client_name), "%s", name);
			return 0;
		}
		if (tokens_required)
			return -EACCES;
	} else if (tokens_required) {
		return -EACCES;
	}
	if (id->value && id->len) {
		size_t len = id->len;
		bool ok = len <= LIMIT_CLIENT_NAME_MAX;

		for (size_t i = 0; ok && i < len; i++) {
			char c = id->value[i];

			ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		}
		if (ok) {
			memcpy(hr->client_name, id->value, len);
			hr->client_name[len] = '\0';
			return 0;
		}
	}
	/* Otherwise the peer address names it, when needed (client_name_fill). */
	return 0;
}

/*
 * Name an anonymous caller by its peer address. Only a request that goes
 * to the engine (fair shares) or into the access log needs it, so a cache
 * hit with the access log off never formats an address.
 */
static void client_name_fill(struct http_request *hr)
{
	const union MHD_ConnectionInfo *ci;

	if (hr->client_name[0])
		return;
	ci = MHD_get_connection_info(hr->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ci->client_addr;

		inet_ntop(AF_INET, &sin->sin_addr, hr->client_name, sizeof(hr->client_name));
	} else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ci->client_addr;

		inet_ntop(AF_INET6, &sin6->sin6_addr, hr->client_name, sizeof(hr->client_name));
	} else {
		snprintf(hr->client_name, sizeof(hr->client_name), "local");
	}
}

static bool is_admin(const struct http_snapshot *s, const struct key_headers *kh)
{
	const struct http_header *auth = &kh->authorization;
	char digest[LIMIT_SHA256_HEX];
	bool ok;

	if (!s->admin_token_sha256[0] || !auth->value || auth->len < 7 ||
	    strncasecmp(auth->value, "Bearer ", 7) != 0)
		return false;
	if (hex_sha256(auth->value + 7, auth->len - 7, digest) < 0)
		return false;
	ok = CRYPTO_memcmp(digest, s->admin_token_sha256, 64) == 0;
	mem_wipe(digest, sizeof(digest));
	return ok;
}

/* ---- the engine's callback --------------------------------------------------------- */

static void on_proxy_done(struct proxy_request *pr)
{
	struct http_request *hr = pr->cls;

	hr->state = HR_RESUMED;
	MHD_resume_connection(hr->connection);
}

/* ---- routes -------------------------------------------------------------------------- */

/* The key route's query parameters, each whole, and the first problem seen. */
struct key_args {
	const char *value[3];           /* by enum route_param; NULL: absent */
	size_t len[3];
	int rc;                         /* 0, or -EINVAL with err filled */
	struct route_error err;
};

static enum MHD_Result collect_key_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				       size_t key_size, const char *value, size_t value_size)
{
	struct key_args *ka = cls;
	enum route_param param;

	if (ka->rc < 0)
		return MHD_NO;
	param = route_key_param(key, key_size, &ka->err);
	if (param == ROUTE_PARAM_UNKNOWN) {
		ka->rc = -EINVAL;
		return MHD_NO;
	}
	if (ka->value[param]) {
		ka->rc = route_duplicate_param(param, &ka->err);
		return MHD_NO;
	}
	/* "?CustSpaceId" with no '=' is an empty value, not an absent one. */
	ka->value[param] = value ? value : "";
	ka->len[param] = value ? value_size : 0;
	return MHD_YES;
}

/*
 * One pass over the request head: its size, and the first of each header
 * the key endpoint reads (libmicrohttpd's lookup also takes the first).
 * Names compare without case; the length first, as most do not match.
 */
struct head {
	struct key_headers *kh;
	size_t bytes;
};

static void keep_header(struct http_header *h, const char *value, size_t len)
{
	if (!h->value) {
		h->value = value;
		h->len = len;
	}
}

static enum MHD_Result read_head(void *cls, enum MHD_ValueKind kind, const char *key,
				 size_t key_size, const char *value, size_t value_size)
{
	struct head *hd = cls;
	struct key_headers *kh = hd->kh;

	hd->bytes += key_size + value_size + 4; /* ": " and CRLF */
	if (!value)
		return MHD_YES;
	if (key_size == strlen(MHD_HTTP_HEADER_AUTHORIZATION) &&
	    strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
		keep_header(&kh->authorization, value, value_size);
	else if (key_size == strlen("X-Client-Id") && strcasecmp(key, "X-Client-Id") == 0)
		keep_header(&kh->client_id, value, value_size);
	else if (key_size == strlen(MHD_HTTP_HEADER_CACHE_CONTROL) &&
		 strcasecmp(key, MHD_HTTP_HEADER_CACHE_CONTROL) == 0)
		keep_header(&kh->cache_control, value, value_size);
	else if (key_size == strlen(MHD_HTTP_HEADER_IF_NONE_MATCH) &&
		 strcasecmp(key, MHD_HTTP_HEADER_IF_NONE_MATCH) == 0)
		keep_header(&kh->if_none_match, value, value_size);
	return MHD_YES;
}

/* A header read is whole: -EINVAL (and err) when it holds a NUL byte. */
static int check_header(const struct http_header *h, const char *name, struct route_error *err)
{
	if (!h->value || !memchr(h->value, '\0', h->len))
		return 0;
	err->code = "Proxy.InvalidHeader";
	snprintf(err->message, sizeof(err->message), "the %s header contains a NUL byte", name);
	return -EINVAL;
}

static int check_key_headers(const struct key_headers *kh, struct route_error *err)
{
	if (check_header(&kh->authorization, MHD_HTTP_HEADER_AUTHORIZATION, err) < 0 ||
	    check_header(&kh->client_id, "X-Client-Id", err) < 0 ||
	    check_header(&kh->cache_control, MHD_HTTP_HEADER_CACHE_CONTROL, err) < 0 ||
	    check_header(&kh->if_none_match, MHD_HTTP_HEADER_IF_NONE_MATCH, err) < 0)
		return -EINVAL;
	return 0;
}

static enum MHD_Result bad_request(struct http_request *hr, const struct route_error *err)
{
	hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
	return queue_error(hr, MHD_HTTP_BAD_REQUEST, err->code, err->message);
}

/*
 * The lookup of pr->call.key, whichever door it came through: answered
 * from the cache now, or suspended until the engine answers.
 */
static enum MHD_Result start_lookup(struct http_request *hr)
{
	struct proxy_request *pr = &hr->preq;
	const union MHD_ConnectionInfo *ci;

	pr->on_done = on_proxy_done;
	pr->cls = hr;
	if (proxy_lookup(hr->h->proxy, pr, clock_mono_us(), (int64_t)time(NULL)) == PROXY_ANSWERED)
		return queue_proxy_answer(hr);
	/* The engine watches the socket of a waiting caller only: a hit needs no fd. */
	ci = MHD_get_connection_info(hr->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
	pr->fd = ci ? ci->connect_fd : -1;
	client_name_fill(hr);
	pr->call.client = hr->client_known ? hr->client_id : clients_id(hr->client_name);
	hr->state = HR_SUSPENDED;
	MHD_suspend_connection(hr->connection);
	proxy_submit(hr->h->proxy, pr);
	return MHD_YES;
}

static enum MHD_Result handle_key(struct http_request *hr, const struct http_snapshot *s,
				  const char *method)
{
	struct MHD_Connection *c = hr->connection;
	struct proxy_request *pr = &hr->preq;
	struct route_error err;
	struct route_cache_control cc;
	struct key_args ka;
	const struct key_headers *kh = &hr->kh;
	uint32_t max_wait_ms = s->default_max_wait_ms;
	const struct clients_snapshot *cs = clients_current();

	/*
	 * Every value whole: a %00 must not turn "abc%00xyz" into space "abc",
	 * and a name the endpoint does not know (a misspelt "custspaceid")
	 * must not quietly fetch the key of no space.
	 */
	memset(&ka, 0, sizeof(ka));
	MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, collect_key_arg, &ka);
	if (ka.rc < 0)
		return bad_request(hr, &ka.err);
	if (check_key_headers(kh, &err) < 0)
		return bad_request(hr, &err);
	if (ka.value[ROUTE_PARAM_CUST_SPACE_ID] &&
	    route_set_cust_space_id(ka.value[ROUTE_PARAM_CUST_SPACE_ID],
				    ka.len[ROUTE_PARAM_CUST_SPACE_ID], &pr->call.key, &err) < 0)
		return bad_request(hr, &err);
	if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
		int rc;

		/* The admin token is not a client token: check it first. */
		if (!is_admin(s, kh))
			return queue_error(hr, MHD_HTTP_FORBIDDEN, "Proxy.Forbidden",
					   "purging a key needs the admin token");
		snprintf(hr->client_name, sizeof(hr->client_name), "admin");
		rc = proxy_purge(hr->h->proxy, &pr->call.key);
		if (rc < 0)
			return queue_error(hr, MHD_HTTP_INTERNAL_SERVER_ERROR, "Proxy.CacheError",
					   "the cache could not delete the key");
		if (rc == 0)
			return queue_error(hr, MHD_HTTP_NOT_FOUND, "Proxy.NotCached",
					   "the key was not in the cache");
		return queue_error(hr, MHD_HTTP_OK, "OK", "the key was purged from the cache");
	}
	if (identify(hr, cs, kh) < 0) {
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_UNAUTHORIZED;
		return queue_error(hr, MHD_HTTP_UNAUTHORIZED, "Proxy.Unauthorized",
				   "a valid bearer token is required");
	}
	/* X-Client-Id may name a configured client (when tokens are not required). */
	if (!hr->client_known && hr->client_name[0] &&
	    clients_configured(cs, hr->client_name, &hr->client_id) == 0)
		hr->client_known = true;
	if (hr->client_known && clients_max_wait_ms(cs, hr->client_id))
		max_wait_ms = (uint32_t)clients_max_wait_ms(cs, hr->client_id);
	if (ka.value[ROUTE_PARAM_MAX_WAIT_MS]) {
		uint32_t asked;

		if (route_parse_max_wait_ms(ka.value[ROUTE_PARAM_MAX_WAIT_MS],
					    ka.len[ROUTE_PARAM_MAX_WAIT_MS], &asked, &err) < 0)
			return bad_request(hr, &err);
		/* A caller may ask for less than its limit, never more; 0 is "do not wait". */
		if (asked < max_wait_ms)
			max_wait_ms = asked;
	}
	route_parse_cache_control(kh->cache_control.value, kh->cache_control.len, &cc);
	pr->call.max_wait_ms = max_wait_ms;
	/* max-age=0: no stored answer will do; revalidate (coalesced) as no-cache does. */
	pr->no_cache = cc.no_cache || cc.max_age_s == 0;
	pr->max_age_s = cc.max_age_s > 0 ? cc.max_age_s : -1;
	pr->call.no_stale = cc.no_stale;
	pr->only_if_cached = cc.only_if_cached;
	return start_lookup(hr);
}

/* ---- the drop-in endpoint for the official SDKs ------------------------------------ */

/* Pairs of a request (query or headers), with lengths, bounded. */
struct sdk_pairs {
	struct verify_pair *v;
	size_t n, cap;
	bool overflow;
};

static enum MHD_Result collect_pair(void *cls, enum MHD_ValueKind kind, const char *key,
				    size_t key_size, const char *value, size_t value_size)
{
	struct sdk_pairs *p = cls;

	if (p->n == p->cap) {
		p->overflow = true;
		return MHD_NO;
	}
	p->v[p->n].name = key;
	p->v[p->n].name_len = key_size;
	p->v[p->n].value = value;
	p->v[p->n].value_len = value ? value_size : 0;
	p->n++;
	return MHD_YES;
}

/* verify_request()'s lookup of a team's secret: the keyring, then the client's id. */
static int sdk_find_secret(void *cls, const char *access_key_id, size_t len, char *ret_secret,
			   size_t cap, unsigned *ret_client_id)
{
	struct http *h = cls;
	char name[LIMIT_CLIENT_NAME_MAX + 1];
	const char *found = NULL;
	int rc;

	pthread_mutex_lock(&h->keyring_mu);
	rc = keyring_find(h->keyring, access_key_id, len, ret_secret, cap, &found);
	if (rc == 0)
		snprintf(name, sizeof(name), "%s", found);
	pthread_mutex_unlock(&h->keyring_mu);
	if (rc < 0)
		return rc;
	if (clients_configured(clients_current(), name, ret_client_id) < 0)
		*ret_client_id = clients_id(name);
	return 0;
}

/*
 * POST / (or GET /): a GetPhoneEncryptionPublicKey call an official SDK
 * signed with a team's key pair. Verified before any cache or quota work,
 * then looked up exactly like the REST endpoint's key.
 */
static enum MHD_Result handle_sdk(struct http_request *hr, const struct http_snapshot *s,
				  const char *method)
{
	struct MHD_Connection *c = hr->connection;
	struct verify_pair query[LIMIT_QUERY_ARGS_MAX + 1], headers[LIMIT_SDK_HEADERS_MAX + 1];
	struct sdk_pairs q = { query, 0, LIMIT_QUERY_ARGS_MAX + 1, false };
	struct sdk_pairs hd = { headers, 0, LIMIT_SDK_HEADERS_MAX + 1, false };
	const struct clients_snapshot *cs = clients_current();
	struct verify_input in;
	struct verify_result vr;
	struct verify_error verr;
	struct route_error rerr;
	const char *name;
	int rc;

	if (hr->body_too_large) {
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
		return queue_sdk_error(hr, MHD_HTTP_BAD_REQUEST, "Proxy.RequestTooLarge",
				       "the request body is over 8192 bytes; camskeyd serves only "
				       "GetPhoneEncryptionPublicKey", true);
	}
	MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, collect_pair, &q);
	MHD_get_connection_values_n(c, MHD_HEADER_KIND, collect_pair, &hd);
	memset(&in, 0, sizeof(in));
	in.method = method;
	in.path = "/";
	in.query = query;
	in.n_query = q.n;
	in.headers = headers;
	in.n_headers = hd.n;
	in.body = hr->body_started ? buf_str(&hr->body) : "";
	in.body_len = hr->body_started ? hr->body.len : 0;
	in.now_wall_s = (int64_t)time(NULL);
	in.find_secret = sdk_find_secret;
	in.find_secret_cls = hr->h;
	in.nonces = hr->h->nonces;
	rc = verify_request(&in, &vr, &verr);
	if (rc < 0) {
		/* A refused signature is the caller's to fix, and cost nothing upstream. */
		hr->preq.call.answer.outcome = verr.http_status == MHD_HTTP_NOT_FOUND ||
							       verr.http_status == MHD_HTTP_BAD_REQUEST
						       ? ENGINE_OUTCOME_UNAUTHORIZED
						       : ENGINE_OUTCOME_BAD_REQUEST;
		/* -EINVAL would be this file's bug (an input verify_request calls malformed). */
		assert(rc == -EACCES);
		return queue_sdk_error(hr, verr.http_status, verr.code, verr.message, false);
	}
	memset(&hr->preq.call.key, 0, sizeof(hr->preq.call.key));
	if (route_set_phone(vr.phone_number, vr.phone_number_len, &hr->preq.call.key, &rerr) < 0 ||
	    (vr.has_cust_space_id &&
	     route_set_cust_space_id(vr.cust_space_id, vr.cust_space_id_len, &hr->preq.call.key,
				     &rerr) < 0)) {
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
		return queue_sdk_error(hr, MHD_HTTP_BAD_REQUEST, rerr.code, rerr.message, false);
	}
	/* The key pair names the client: fair share, wait limit and metrics. */
	hr->client_id = vr.client_id;
	hr->client_known = true;
	name = clients_name(vr.client_id);
	snprintf(hr->client_name, sizeof(hr->client_name), "%s", name ? name : "-");
	hr->preq.call.max_wait_ms = clients_max_wait_ms(cs, vr.client_id)
					    ? (uint32_t)clients_max_wait_ms(cs, vr.client_id)
					    : s->default_max_wait_ms;
	hr->preq.no_cache = false;
	hr->preq.max_age_s = -1;
	hr->preq.call.no_stale = false;
	hr->preq.only_if_cached = false;
	return start_lookup(hr);
}

/* /readyz's body in each quota mode (metrics.h's order). */
static const char *const readyz_body[METRICS_QUOTA_MODE_COUNT] = {
	[METRICS_QUOTA_LOCAL] = "{\"status\":\"ready\",\"quota\":\"local\"}\n",
	[METRICS_QUOTA_SHARED] = "{\"status\":\"ready\",\"quota\":\"shared\"}\n",
	[METRICS_QUOTA_CLOSED] = "{\"status\":\"ready\",\"quota\":\"closed\"}\n",
	[METRICS_QUOTA_FALLBACK] = "{\"status\":\"ready\",\"quota\":\"fallback\"}\n",
};

static enum MHD_Result handle_text(struct http_request *hr, int status, const char *type,
				   const char *text)
{
	return queue_body(hr, status, type, xstrdup(text), strlen(text), 0);
}

static enum MHD_Result route_request(struct http_request *hr, const struct http_snapshot *s,
				     const char *url, const char *method);

/* The query's arguments, counted on the raw text from its '?': one and one per '&'. */
static size_t count_query_args(const char *query, size_t *ret_len)
{
	const char *q = query;
	size_t n = 1;

	for (; *q; q++)
		n += *q == '&';
	*ret_len = (size_t)(q - query);
	return n;
}

/* The next X-Request-Id: 16 lower-case hex digits, unique in this run. */
static void request_id_next(struct http *h, char out[17])
{
	uint64_t v = h->id_seed ^ (atomic_fetch_add(&h->id_counter, 1) * 0x9E3779B97F4A7C15ULL);
	unsigned char be[8];

	for (int i = 7; i >= 0; i--, v >>= 8)
		be[i] = (unsigned char)v;
	hex_encode_lower(be, sizeof(be), out);
}

/*
 * The first thing libmicrohttpd reports of a request: its full URI, before
 * any argument is parsed. The request's state is allocated here (it
 * becomes con_cls) and the URI bound is checked while its length is known.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection)
{
	struct http *h = cls;
	/* malloc, not calloc: glibc's calloc skips the thread cache. */
	struct http_request *hr = xmalloc(sizeof(*hr));
	size_t raw_len, query_len = 0, query_args = 0;

	memset(hr, 0, sizeof(*hr));
	hr->h = h;
	hr->connection = connection;
	hr->started_us = clock_mono_us();
	hr->method = "-";
	hr->preq.fd = -1;
	raw_len = strcspn(uri, "?");
	if (uri[raw_len])
		query_args = count_query_args(uri + raw_len, &query_len);
	hr->uri_too_long = raw_len + query_len > LIMIT_URI_MAX_BYTES;
	if (!hr->uri_too_long) {
		/*
		 * Route here, on the raw URI: the `url` on_request gets later is
		 * decoded in place and cut at the first %00, which would turn
		 * /v1/phone-numbers/86139%0012345678/... into an unknown route
		 * rather than the bad phone number it is.
		 */
		char path[LIMIT_URI_MAX_BYTES + 1];
		size_t len = 0;

		if (route_decode_path(uri, raw_len, path, sizeof(path), &len) == 0) {
			hr->path_rc = route_parse_path(path, len, &hr->route, &hr->preq.call.key,
						       &hr->path_err);
			hr->path_routed = true;
		}
	}
	if (query_args > LIMIT_QUERY_ARGS_MAX) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

		/*
		 * libmicrohttpd parses the arguments next, one pool record
		 * each; a flood of them exhausts the connection's pool and
		 * leaves it hanging unanswered. End it now instead.
		 */
		if (ci)
			shutdown(ci->connect_fd, SHUT_RDWR);
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
	}
	request_id_next(h, hr->preq.call.request_id);
	return hr;
}

static void mark_head_done(struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct http_conn *hc = ci ? ci->socket_context : NULL;

	if (hc)
		atomic_store_explicit(&hc->head_done, true, memory_order_relaxed);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct http_request *hr = *con_cls;

	if (!hr) {
		/* on_uri always runs first; this is only a safety net */
		hr = on_uri(h, url, connection);
		*con_cls = hr;
	}
	if (hr->state == HR_RESUMED) {
		if (hr->preq.call.answer.http_status == 0)
			return MHD_NO; /* the client left while waiting */
		hr->state = HR_ANSWERED;
		return queue_proxy_answer(hr);
	}
	if (!hr->headers_seen) {
		/*
		 * The head is in. Answer on a later call, once the whole
		 * request (and any body) is read: libmicrohttpd closes the
		 * connection after a response queued before that, and
		 * keep-alive matters for callers and the hit path.
		 */
		struct head hd = { .kh = &hr->kh };

		hr->headers_seen = true;
		hr->method = method;
		MHD_get_connection_values_n(connection, MHD_HEADER_KIND, read_head, &hd);
		hr->headers_too_large = hd.bytes > LIMIT_HEADERS_MAX_BYTES;
		if (hr->route != ROUTE_SDK) {
			mark_head_done(connection);
			return MHD_YES;
		}
		/*
		 * The SDK endpoint reads a body: its deadline is the head's
		 * (connection-timeout covers the whole request). A request
		 * with both Content-Length and Transfer-Encoding is refused
		 * and its connection closed, so nothing can be smuggled
		 * behind it (RFC 9112 section 6.1).
		 */
		if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
						MHD_HTTP_HEADER_CONTENT_LENGTH) &&
		    MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
						MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
			hr->route_done = true;
			hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
			return queue_sdk_error(hr, MHD_HTTP_BAD_REQUEST, "Proxy.AmbiguousLength",
					       "a request may not carry both Content-Length and "
					       "Transfer-Encoding", true);
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (hr->route == ROUTE_SDK && !hr->route_done) {
			if (!hr->body_started) {
				buf_init(&hr->body, LIMIT_SDK_BODY_MAX_BYTES);
				hr->body_started = true;
			}
			if (!hr->body_too_large)
				buf_add(&hr->body, upload_data, *upload_data_size);
			if (buf_error(&hr->body))
				hr->body_too_large = true;
		}
		/* Other routes take no body: discard it. */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (hr->state != HR_NEW || hr->route_done)
		return MHD_YES;
	hr->route_done = true;
	if (hr->headers_too_large) {
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
		return queue_error(hr, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE,
				   "Proxy.HeadersTooLarge", "the request headers are over 8192 bytes");
	}
	if (hr->uri_too_long) {
		hr->preq.call.answer.outcome = ENGINE_OUTCOME_BAD_REQUEST;
		return queue_error(hr, MHD_HTTP_URI_TOO_LONG, "Proxy.UriTooLong",
				   "the request URI is longer than 2048 bytes");
	}
	return route_request(hr, atomic_load(&h->snapshot), url, method);
}

static enum MHD_Result route_request(struct http_request *hr, const struct http_snapshot *s,
				     const char *url, const char *method)
{
	struct http *h = hr->h;
	bool is_get;

	if (!hr->path_routed) {
		/* on_uri did not see this request (a safety net): the decoded url */
		hr->path_rc = route_parse_path(url, strlen(url), &hr->route, &hr->preq.call.key,
					       &hr->path_err);
		hr->path_routed = true;
	}
	if (hr->path_rc < 0)
		return bad_request(hr, &hr->path_err);
	is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		 strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	switch (hr->route) {
	case ROUTE_KEY:
		if (!is_get && strcmp(method, MHD_HTTP_METHOD_DELETE) != 0)
			break;
		return handle_key(hr, s, method);
	case ROUTE_SDK:
		mark_head_done(hr->connection); /* the whole request, body included, is in */
		if (strcmp(method, MHD_HTTP_METHOD_POST) != 0 && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
			return queue_sdk_error(hr, MHD_HTTP_METHOD_NOT_ALLOWED, "Proxy.MethodNotAllowed",
					       "the SDK endpoint takes POST (or GET)", false);
		return handle_sdk(hr, s, method);
	case ROUTE_HEALTHZ:
		if (!is_get)
			break;
		return handle_text(hr, MHD_HTTP_OK, "application/json", "{\"status\":\"ok\"}\n");
	case ROUTE_READYZ:
		if (!is_get)
			break;
		/*
		 * Ready: engine running and its loop turning (it wakes every
		 * second). Ready in every quota mode: hits are served whatever
		 * Redis does; "quota" says who decides upstream sends.
		 */
		if (proxy_ready(h->proxy) && clock_mono_us() - proxy_heartbeat_us(h->proxy) < 5000000)
			return handle_text(hr, MHD_HTTP_OK, "application/json",
					   readyz_body[metrics_quota_mode()]);
		return handle_text(hr, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
				   "{\"status\":\"not ready\"}\n");
	case ROUTE_METRICS: {
		struct buf b;
		size_t len;
		char *body;

		if (!is_get)
			break;
		buf_init(&b, 1024 * 1024);
		proxy_render_metrics(h->proxy, &b);
		body = buf_steal(&b, &len);
		return queue_body(hr, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body,
				  len, 0);
	}
	case ROUTE_NOT_FOUND:
		return queue_error(hr, MHD_HTTP_NOT_FOUND, "Proxy.NotFound",
				   "no such endpoint; see GET /v1/phone-numbers/{PhoneNumber}/encryption-public-key");
	}
	return queue_error(hr, MHD_HTTP_METHOD_NOT_ALLOWED, "Proxy.MethodNotAllowed",
			   "method not allowed on this path");
}

/*
 * The one count of a request's outcome, at its one teardown: decided where
 * it happened (hit path, engine, this file), counted here.
 */
static void count_outcome(enum engine_outcome outcome)
{
	static const signed char result_of[ENGINE_OUTCOME_COUNT] = {
		[ENGINE_OUTCOME_NONE] = -1,
		[ENGINE_OUTCOME_HIT] = METRICS_RESULT_HIT,
		[ENGINE_OUTCOME_HIT_STALE] = METRICS_RESULT_STALE,
		[ENGINE_OUTCOME_HIT_NEGATIVE] = METRICS_RESULT_NEGATIVE,
		[ENGINE_OUTCOME_NOT_MODIFIED] = METRICS_RESULT_NOT_MODIFIED,
		[ENGINE_OUTCOME_MISS] = METRICS_RESULT_MISS,
		[ENGINE_OUTCOME_MISS_NEGATIVE] = METRICS_RESULT_NEGATIVE,
		[ENGINE_OUTCOME_STALE_FALLBACK] = METRICS_RESULT_STALE,
		[ENGINE_OUTCOME_QUOTA_WAIT] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_QUEUE_FULL] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_THROTTLED] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_UPSTREAM_ERROR] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_SHUTTING_DOWN] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_NOT_CACHED] = METRICS_RESULT_ERROR,
		[ENGINE_OUTCOME_GONE] = -1, /* counted as a departure by the engine */
		[ENGINE_OUTCOME_BAD_REQUEST] = METRICS_RESULT_BAD_REQUEST,
		[ENGINE_OUTCOME_UNAUTHORIZED] = -1,
		[ENGINE_OUTCOME_HIT_SHARED] = METRICS_RESULT_HIT,
		[ENGINE_OUTCOME_QUOTA_UNAVAILABLE] = METRICS_RESULT_ERROR,
	};

	if (outcome == ENGINE_OUTCOME_QUOTA_WAIT)
		metrics_count(METRICS_QUOTA_REJECTED);
	else if (outcome == ENGINE_OUTCOME_QUOTA_UNAVAILABLE)
		metrics_count(METRICS_QUOTA_UNAVAILABLE);
	else if (outcome == ENGINE_OUTCOME_QUEUE_FULL)
		metrics_count(METRICS_QUEUE_FULL);
	else if (outcome == ENGINE_OUTCOME_UNAUTHORIZED)
		metrics_count(METRICS_UNAUTHORIZED);
	if (outcome < ENGINE_OUTCOME_COUNT && result_of[outcome] >= 0)
		metrics_result((enum metrics_result)result_of[outcome]);
}

/*
 * Whether this request gets an access line (log.h, access-log): in
 * "misses" mode every request but a success answered from memory (hits,
 * stale hits, 304s) and successful health checks and scrapes, which
 * /metrics counts; errors and refusals always.
 */
static bool access_wanted(const struct http_request *hr)
{
	enum engine_outcome o = hr->preq.call.answer.outcome;

	switch (log_access_mode()) {
	case LOG_ACCESS_OFF:
		return false;
	case LOG_ACCESS_ALL:
		break;
	case LOG_ACCESS_MISSES:
		if (hr->status >= 400 || hr->status == 0)
			break;
		if (o == ENGINE_OUTCOME_HIT || o == ENGINE_OUTCOME_HIT_STALE ||
		    o == ENGINE_OUTCOME_NOT_MODIFIED)
			return false;
		if (hr->route == ROUTE_HEALTHZ || hr->route == ROUTE_READYZ ||
		    hr->route == ROUTE_METRICS)
			return false;
		break;
	}
	return log_enabled(LOG_LEVEL_INFO);
}

/* The access line, built without printf and buffered (log_line_commit). */
static void log_access(struct http_request *hr, enum MHD_RequestTerminationCode toe)
{
	static const char *const route_names[] = {
		[ROUTE_KEY] = "key", [ROUTE_HEALTHZ] = "healthz", [ROUTE_READYZ] = "readyz",
		[ROUTE_METRICS] = "metrics", [ROUTE_SDK] = "sdk",
	};
	const char *route = (size_t)hr->route < sizeof(route_names) / sizeof(route_names[0]) &&
					    route_names[hr->route]
				    ? route_names[hr->route]
				    : "other";
	char masked[LOG_PHONE_MASKED_MAX];
	struct log_line l;

	if (hr->route == ROUTE_KEY || hr->route == ROUTE_SDK)
		client_name_fill(hr);
	log_line_begin(&l, LOG_LEVEL_INFO, "access");
	log_line_str(&l, "request_id", hr->preq.call.request_id);
	log_line_str(&l, "method", hr->method);
	log_line_str(&l, "route", route);
	log_line_str(&l, "phone",
		     hr->preq.call.key.phone[0]
			     ? log_mask_phone(hr->preq.call.key.phone, masked, sizeof(masked))
			     : "-");
	log_line_str(&l, "client", hr->client_name);
	log_line_int(&l, "status", hr->status);
	log_line_str(&l, "code", hr->code);
	log_line_quoted(&l, "cache", hr->preq.call.answer.cache_status);
	log_line_ms(&l, "duration_ms", clock_mono_us() - hr->started_us);
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_line_str(&l, "aborted", "1");
	log_line_commit(&l);
}

/* This worker's busy run, for HTTP_BUSY_YIELD_US. */
struct busy_run {
	unsigned answers;       /* since the last check */
	long sleeps;            /* ru_nvcsw at the last check */
	int64_t since_us;       /* when it last slept (or yielded), as far as known */
};

static _Thread_local struct busy_run busy;

static void yield_if_busy(int64_t now_us)
{
	struct rusage ru;

	if (++busy.answers < HTTP_BUSY_CHECK_EVERY)
		return;
	busy.answers = 0;
	if (getrusage(RUSAGE_THREAD, &ru) < 0)
		return;
	if (ru.ru_nvcsw != busy.sleeps) {
		busy.sleeps = ru.ru_nvcsw;
		busy.since_us = now_us;
	} else if (now_us - busy.since_us >= HTTP_BUSY_YIELD_US) {
		/* A yield is an involuntary switch: ru_nvcsw counts sleeps only. */
		sched_yield();
		busy.since_us = clock_mono_us();
	}
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct http_request *hr = *con_cls;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct http_conn *hc = ci ? ci->socket_context : NULL;
	int64_t now_us = clock_mono_us();

	if (hc) {
		/*
		 * The next request's head has its own deadline. Release: the
		 * sweeper that reads head_done false (acquire) reads this
		 * deadline, not the last one.
		 */
		atomic_store_explicit(&hc->head_deadline_us, now_us + h->head_timeout_us,
				      memory_order_relaxed);
		atomic_store_explicit(&hc->head_done, false, memory_order_release);
	}
	if (!hr)
		return;
	*con_cls = NULL;
	yield_if_busy(now_us);
	metrics_count(METRICS_HTTP_REQUESTS);
	count_outcome(hr->preq.call.answer.outcome);
	if (hr->route == ROUTE_KEY || hr->route == ROUTE_SDK)
		metrics_observe_us(METRICS_HIST_REQUEST, now_us - hr->started_us);
	if (access_wanted(hr))
		log_access(hr, toe);
	proxy_request_clear(&hr->preq);
	if (hr->body_started)
		buf_free(&hr->body);
	free(hr);
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct http *h = cls;
	struct http_conn *hc = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

		hc = xcalloc(1, sizeof(*hc));
		hc->fd = ci ? ci->connect_fd : -1;
		atomic_store(&hc->head_deadline_us, clock_mono_us() + h->head_timeout_us);
		pthread_mutex_lock(&h->conns_mu);
		hc->next = h->conns.next;
		hc->prev = &h->conns;
		h->conns.next->prev = hc;
		h->conns.next = hc;
		pthread_mutex_unlock(&h->conns_mu);
		*socket_context = hc;
	} else if (hc) {
		pthread_mutex_lock(&h->conns_mu);
		hc->prev->next = hc->next;
		hc->next->prev = hc->prev;
		pthread_mutex_unlock(&h->conns_mu);
		free(hc);
		*socket_context = NULL;
	}
}

void http_sweep(struct http *h)
{
	int64_t now_us = clock_mono_us();

	pthread_mutex_lock(&h->conns_mu);
	for (struct http_conn *hc = h->conns.next; hc != &h->conns; hc = hc->next) {
		if (hc->shut || hc->fd < 0 ||
		    atomic_load_explicit(&hc->head_done, memory_order_acquire) ||
		    now_us < atomic_load_explicit(&hc->head_deadline_us, memory_order_relaxed))
			continue;
		/*
		 * The request head is late (a slow client or one libmicrohttpd
		 * could not parse): end the connection. MHD sees the shutdown
		 * and closes and frees it on its own thread.
		 */
		shutdown(hc->fd, SHUT_RDWR);
		hc->shut = true;
		metrics_count(METRICS_SLOW_CLIENTS);
	}
	pthread_mutex_unlock(&h->conns_mu);
}

/*
 * libmicrohttpd's own %HH decoding, skipped when there is nothing to
 * decode: it walks every byte, and a hit's path and arguments rarely hold
 * an escape. The result is the same either way.
 */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
	const char *end = strchrnul(s, '%');

	(void)cls;
	(void)c;
	return *end ? MHD_http_unescape(s) : (size_t)(end - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[256], q[300];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_warn("http_error", "message=%s", log_quote(line, q, sizeof(q)));
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static struct http_snapshot *snapshot_new(const struct config *cfg)
{
	struct http_snapshot *s = xcalloc(1, sizeof(*s));

	snprintf(s->admin_token_sha256, sizeof(s->admin_token_sha256), "%s",
		 cfg->admin_token_sha256 ? cfg->admin_token_sha256 : "");
	s->default_max_wait_ms = cfg->max_wait_ms;
	return s;
}

/* Give the UNIX socket file a group ("" leaves it). 0 or -1 with errno. */
static int set_socket_group(const char *path, const char *group)
{
	struct group grp, *found = NULL;
	char buf[4096];
	int rc;

	if (!group || !*group)
		return 0;
	rc = getgrnam_r(group, &grp, buf, sizeof(buf), &found);
	if (rc != 0 || !found) {
		errno = rc ? rc : ENOENT;
		return -1;
	}
	return chown(path, (uid_t)-1, found->gr_gid);
}

/* The socket systemd passed (socket activation), or -1. */
static int activated_socket(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	uint64_t v_pid, v_fds;

	if (!pid || !fds || str_to_u64(pid, 1, UINT64_MAX, &v_pid) < 0 ||
	    str_to_u64(fds, 1, 64, &v_fds) < 0 || v_pid != (uint64_t)getpid())
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return 3; /* SD_LISTEN_FDS_START; camskeyd.socket passes one socket */
}

int http_new(const struct config *cfg, struct proxy *proxy, struct http **ret, char *errbuf,
	     size_t errbuf_size)
{
	struct http *h = xcalloc(1, sizeof(*h));
	struct netaddr na;
	struct buf reason;
	int one = 1, fd;

	h->proxy = proxy;
	h->listen_fd = -1;
	h->head_timeout_us = (int64_t)cfg->connection_timeout_s * 1000000;
	pthread_mutex_init(&h->conns_mu, NULL);
	pthread_mutex_init(&h->keyring_mu, NULL);
	h->nonces = verify_nonces_new(VERIFY_NONCES_DEFAULT_CAPACITY);
	h->conns.next = h->conns.prev = &h->conns;
	if (RAND_bytes((unsigned char *)&h->id_seed, sizeof(h->id_seed)) != 1)
		h->id_seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
	atomic_store(&h->snapshot, snapshot_new(cfg));

	fd = activated_socket();
	h->activated = fd >= 0;
	if (fd >= 0) {
		snprintf(h->listen_address, sizeof(h->listen_address), "socket activation (fd 3)");
	} else {
		/* config.c validated it with the same parser; this is only a backstop. */
		buf_init(&reason, 512);
		if (netaddr_parse(cfg->listen, &na, &reason) < 0) {
			snprintf(errbuf, errbuf_size, "listen: %s", buf_str(&reason));
			buf_free(&reason);
			goto fail;
		}
		buf_free(&reason);
		fd = socket(na.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			snprintf(errbuf, errbuf_size, "listen: socket: %s", strerror(errno));
			goto fail;
		}
		if (na.ss.ss_family == AF_UNIX) {
			const char *path = ((struct sockaddr_un *)&na.ss)->sun_path;
			struct stat st;
			uint64_t mode = 0660;

			/* A socket left by a previous run is replaced; any other file is not. */
			if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
				unlink(path);
			memcpy(h->unix_path, path, sizeof(h->unix_path));
			if (cfg->unix_socket_mode) {
				/* validated as 3 or 4 octal digits by config */
				mode = 0;
				for (const char *m = cfg->unix_socket_mode; *m; m++)
					mode = mode * 8 + (uint64_t)(*m - '0');
			}
			h->unix_mode = (mode_t)mode;
		} else {
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		}
		if (bind(fd, (struct sockaddr *)&na.ss, na.len) < 0) {
			snprintf(errbuf, errbuf_size, "listen: cannot bind %s: %s", cfg->listen,
				 strerror(errno));
			h->unix_path[0] = '\0'; /* not ours to remove */
			close(fd);
			goto fail;
		}
		if ((h->unix_path[0] && chmod(h->unix_path, h->unix_mode) < 0) ||
		    listen(fd, 1024) < 0) {
			snprintf(errbuf, errbuf_size, "listen: cannot listen on %s: %s", cfg->listen,
				 strerror(errno));
			close(fd);
			goto fail;
		}
		if (h->unix_path[0] && set_socket_group(h->unix_path, cfg->unix_socket_group) < 0) {
			snprintf(errbuf, errbuf_size,
				 "unix-socket-group: cannot give %s to group \"%s\": %s", h->unix_path,
				 cfg->unix_socket_group, errno == ENOENT ? "no such group" : strerror(errno));
			close(fd);
			goto fail;
		}
		snprintf(h->listen_address, sizeof(h->listen_address), "%s", cfg->listen);
		if (!na.is_loopback && !clients_tokens_required(clients_current()))
			log_warn("listen_remote",
				 "listen=%s detail=\"not loopback and no client tokens: anyone who can reach it may spend the quota\"",
				 cfg->listen);
	}
	h->listen_fd = fd;
	/*
	 * poll(), not epoll: with epoll and a thread pool, MHD_quiesce_daemon()
	 * and a worker's own loop can both remove the listen socket from the
	 * worker's epoll set, and the loser's unguarded MHD_PANIC aborts the
	 * process at shutdown (libmicrohttpd 0.9.75, seen in CI). With poll()
	 * quiescing only signals the workers. Suspended callers are not in the
	 * poll set, so waiting costs nothing there either.
	 */
	h->mhd = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
			MHD_USE_ITC | MHD_USE_ERROR_LOG,
		0, NULL, NULL, on_request, h,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
		MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->threads,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->connection_timeout_s,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY_BYTES,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
		MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
		MHD_OPTION_END);
	if (!h->mhd) {
		snprintf(errbuf, errbuf_size, "listen: libmicrohttpd failed to start on %s",
			 h->listen_address);
		goto fail;
	}
	*ret = h;
	return 0;
fail:
	if (h->listen_fd >= 0)
		close(h->listen_fd);
	if (h->unix_path[0])
		unlink(h->unix_path);
	free(atomic_load(&h->snapshot));
	pthread_mutex_destroy(&h->conns_mu);
	pthread_mutex_destroy(&h->keyring_mu);
	keyring_free(h->keyring);
	verify_nonces_free(h->nonces);
	free(h);
	return -EINVAL;
}

void http_reconfigure(struct http *h, const struct config *cfg)
{
	struct http_snapshot *s = snapshot_new(cfg);

	s->older = atomic_load(&h->snapshot);
	atomic_store(&h->snapshot, s);
}

void http_set_keyring(struct http *h, struct keyring *k)
{
	struct keyring *old;

	pthread_mutex_lock(&h->keyring_mu);
	old = h->keyring;
	h->keyring = k;
	pthread_mutex_unlock(&h->keyring_mu);
	/* No lookup holds it now: it is searched only under the mutex. */
	keyring_free(old);
}

/*
 * A connection the kernel had queued when the stop began: answered here,
 * 503 Proxy.ShuttingDown, once its request head is in. libmicrohttpd cannot
 * take it (0.9.75 resets connections added to a quiesced daemon), and left
 * in the queue it would be reset when the socket closes.
 */
struct queued_conn {
	int fd;
	char tail[4];      /* the last bytes read, to find the end of the head */
	size_t head_bytes;
};

#define QUEUED_AT_STOP_MAX 1024
#define QUEUED_AT_STOP_WAIT_MS 500
#define QUEUED_AT_STOP_QUIET_MS 20   /* no handshake landed for that long: close */
#define QUEUED_AT_STOP_SETTLE_MS 200 /* and never wait longer than that */

static bool head_complete(struct queued_conn *q, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		memmove(q->tail, q->tail + 1, 3);
		q->tail[3] = p[i];
		if (memcmp(q->tail, "\r\n\r\n", 4) == 0)
			return true;
	}
	return false;
}

static void answer_queued(struct http *h, struct queued_conn *q)
{
	char id[24], body[256], head[512];
	int body_len, head_len;

	request_id_next(h, id);
	body_len = snprintf(body, sizeof(body),
			    "{\"RequestId\":\"%s\",\"Code\":\"Proxy.ShuttingDown\","
			    "\"Message\":\"the daemon is stopping; retry shortly\"}", id);
	head_len = snprintf(head, sizeof(head),
			    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			    "Content-Length: %d\r\nRetry-After: 1\r\nX-Request-Id: %s\r\n"
			    "Connection: close\r\n\r\n", body_len, id);
	/* Small enough for any socket buffer: one write each, no waiting. */
	if (send(q->fd, head, (size_t)head_len, MSG_NOSIGNAL) == head_len)
		(void)send(q->fd, body, (size_t)body_len, MSG_NOSIGNAL);
	shutdown(q->fd, SHUT_WR);
	count_outcome(ENGINE_OUTCOME_SHUTTING_DOWN);
}

/* Read each queued connection's head (bounded in time and size) and answer it. */
static void answer_queued_at_stop(struct http *h, struct queued_conn *qs, size_t n)
{
	int64_t deadline = clock_mono_us() + QUEUED_AT_STOP_WAIT_MS * 1000;
	struct pollfd *pfds = xcalloc(n ? n : 1, sizeof(*pfds));
	size_t open = n;
	char buf[4096];

	for (size_t i = 0; i < n; i++) {
		pfds[i].fd = qs[i].fd;
		pfds[i].events = POLLIN;
	}
	while (open > 0) {
		int64_t left_ms = (deadline - clock_mono_us()) / 1000;

		if (left_ms <= 0 || poll(pfds, n, (int)left_ms) <= 0)
			break;
		for (size_t i = 0; i < n; i++) {
			ssize_t got;

			if (pfds[i].fd < 0 || !pfds[i].revents)
				continue;
			got = recv(pfds[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (got > 0 && (qs[i].head_bytes += (size_t)got) <= LIMIT_HEADERS_MAX_BYTES +
									 LIMIT_URI_MAX_BYTES &&
			    !head_complete(&qs[i], buf, (size_t)got))
				continue;
			if (got > 0)
				answer_queued(h, &qs[i]);
			pfds[i].fd = -1;
			open--;
		}
	}
	for (size_t i = 0; i < n; i++)
		close(qs[i].fd);
	free(pfds);
}

/*
 * A TCP listening socket's filter that drops a handshake's first segment
 * (SYN without ACK) and keeps every other: no new handshake starts, and
 * those under way finish. The client of a dropped SYN sends it again a
 * second later and is refused then, the socket closed.
 */
static bool drop_new_handshakes(int fd)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),               /* the TCP flags */
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),            /* SYN and ACK */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),      /* SYN alone */
		BPF_STMT(BPF_RET | BPF_K, 0),                         /* dropped */
		BPF_STMT(BPF_RET | BPF_K, 0xffffffff),                /* kept */
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };

	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0;
}

/* Accept what the kernel has queued, up to QUEUED_AT_STOP_MAX in all. */
static size_t take_queued(int listen_fd, struct queued_conn *qs, size_t n)
{
	while (n < QUEUED_AT_STOP_MAX) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			break;
		qs[n].fd = fd;
		n++;
	}
	return n;
}

void http_quiesce(struct http *h)
{
	struct queued_conn *qs;
	bool settling;
	int64_t deadline;
	size_t n = 0;

	if (!h || !h->mhd || h->listen_fd < 0)
		return;
	MHD_quiesce_daemon(h->mhd);
	/*
	 * Take what the kernel queued, then close the socket, so new
	 * connections are refused rather than queued and reset at exit. A
	 * handshake the client already counts as done may still be on its
	 * way into the queue (its last ACK not yet processed, on a busy
	 * host), and closing would reset it: on a TCP socket of our own, new
	 * handshakes are stopped first and those under way are let in until
	 * the queue stays empty for QUEUED_AT_STOP_QUIET_MS. systemd's socket
	 * stays open for the next start and keeps its queue; it is left as is.
	 */
	settling = !h->activated && !h->unix_path[0] && drop_new_handshakes(h->listen_fd);
	deadline = clock_mono_us() + QUEUED_AT_STOP_SETTLE_MS * 1000;
	qs = xcalloc(QUEUED_AT_STOP_MAX, sizeof(*qs));
	n = take_queued(h->listen_fd, qs, n);
	while (settling && n < QUEUED_AT_STOP_MAX && clock_mono_us() < deadline) {
		struct pollfd pfd = { .fd = h->listen_fd, .events = POLLIN };

		if (poll(&pfd, 1, QUEUED_AT_STOP_QUIET_MS) <= 0)
			break;
		n = take_queued(h->listen_fd, qs, n);
	}
	close(h->listen_fd);
	h->listen_fd = -1;
	answer_queued_at_stop(h, qs, n);
	free(qs);
}

void http_free(struct http *h, unsigned wait_ms)
{
	struct http_snapshot *s;
	int64_t deadline;

	if (!h)
		return;
	deadline = clock_mono_us() + (int64_t)wait_ms * 1000;
	while (clock_mono_us() < deadline) {
		const union MHD_DaemonInfo *info =
			MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

		if (!info || info->num_connections == 0)
			break;
		usleep(10000);
	}
	MHD_stop_daemon(h->mhd);
	if (h->listen_fd >= 0)
		close(h->listen_fd);
	if (h->unix_path[0])
		unlink(h->unix_path);
	pthread_mutex_destroy(&h->conns_mu);
	pthread_mutex_destroy(&h->keyring_mu);
	keyring_free(h->keyring);
	verify_nonces_free(h->nonces);
	s = atomic_load(&h->snapshot);
	while (s) {
		struct http_snapshot *older = s->older;

		free(s);
		s = older;
	}
	free(h);
}

const char *http_listen_address(const struct http *h)
{
	return h->listen_address;
}
