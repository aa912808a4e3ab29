/*
 * test_upstream.c -- the libcurl multi client against a tiny HTTP server.
 *
 * The server is one thread with a blocking socket on 127.0.0.1 (port 0),
 * one connection at a time, answering each request per the test's mode:
 * a canned response (keep-alive, optionally after processing_ms), close
 * without answering, or stall.
 * It records the first request it received and counts accepts and
 * requests. Every wait is bounded (the server thread gives up after
 * SERVER_MAX_S; clients poll at most CLIENT_MAX_MS).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "upstream.h"

#define SERVER_MAX_S 15
#define CLIENT_MAX_MS 5000

enum server_mode {
	SERVER_RESPOND,
	SERVER_CLOSE,
	SERVER_STALL,
};

struct server {
	int listen_fd;
	int port;
	int stop_pipe[2];
	pthread_t thread;
	enum server_mode mode;
	const char *response;
	size_t response_len;
	unsigned processing_ms;     /* SERVER_RESPOND: wait this long first */
	/* Written by the server thread, read after pthread_join(). */
	int accepts;
	int requests;
	char first[16384];
	size_t first_len;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Length of a complete request at the start of buf, or 0 if incomplete. */
static size_t request_length(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	size_t head, body = 0;
	const char *p;

	if (!end)
		return 0;
	head = (size_t)(end - buf) + 4;
	for (p = buf; p < end; p++) {
		if (strncasecmp(p, "\r\nContent-Length:", 17) == 0) {
			body = (size_t)strtoul(p + 17, NULL, 10);
			break;
		}
	}
	return len >= head + body ? head + body : 0;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k <= 0)
			return; /* the client went away (body too large): fine */
		p += k;
		n -= (size_t)k;
	}
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	double deadline = now_s() + SERVER_MAX_S;
	char buf[32768];
	size_t len = 0;
	int conn = -1;
	bool stalled = false;

	while (now_s() < deadline) {
		struct pollfd fds[3] = {
			{ .fd = s->stop_pipe[0], .events = POLLIN },
			{ .fd = s->listen_fd, .events = POLLIN },
			{ .fd = stalled ? -1 : conn, .events = POLLIN },
		};

		if (poll(fds, 3, 100) < 0)
			break;
		if (fds[0].revents)
			break;
		if (fds[1].revents & POLLIN) {
			int fd = accept(s->listen_fd, NULL, NULL);

			if (fd >= 0) {
				struct timeval tv = { 2, 0 };

				setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
				if (conn >= 0)
					close(conn);
				conn = fd;
				len = 0;
				stalled = false;
				s->accepts++;
			}
			continue;
		}
		if (conn >= 0 && fds[2].revents) {
			ssize_t k = recv(conn, buf + len, sizeof(buf) - len, 0);
			size_t req;

			if (k <= 0) {
				close(conn);
				conn = -1;
				continue;
			}
			len += (size_t)k;
			while ((req = request_length(buf, len)) > 0) {
				if (s->requests++ == 0) {
					memcpy(s->first, buf, req);
					s->first_len = req;
				}
				memmove(buf, buf + req, len - req);
				len -= req;
				if (s->mode == SERVER_RESPOND) {
					if (s->processing_ms) {
						struct timespec d = {
							.tv_sec = s->processing_ms / 1000,
							.tv_nsec = (long)(s->processing_ms % 1000) * 1000000,
						};

						nanosleep(&d, NULL);
					}
					send_all(conn, s->response, s->response_len);
				} else if (s->mode == SERVER_CLOSE) {
					close(conn);
					conn = -1;
					break;
				} else {
					stalled = true;
					break;
				}
			}
		}
	}
	if (conn >= 0)
		close(conn);
	return NULL;
}

/* A server that answers processing_ms after each request. */
static int server_start_slow(struct server *s, enum server_mode mode, const char *response,
			     size_t response_len, unsigned processing_ms)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->processing_ms = processing_ms;
	s->mode = mode;
	s->response = response;
	s->response_len = response_len;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->listen_fd, 8) < 0 ||
	    getsockname(s->listen_fd, (struct sockaddr *)&a, &alen) < 0 ||
	    pipe(s->stop_pipe) < 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->thread, NULL, server_main, s) == 0 ? 0 : -1;
}

static int server_start(struct server *s, enum server_mode mode, const char *response,
			size_t response_len)
{
	return server_start_slow(s, mode, response, response_len, 0);
}

static void server_stop(struct server *s)
{
	if (write(s->stop_pipe[1], "x", 1) != 1)
		perror("write");
	pthread_join(s->thread, NULL);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	close(s->listen_fd);
	s->first[s->first_len < sizeof(s->first) ? s->first_len : sizeof(s->first) - 1] = '\0';
}

/* ---- the client side ---- */

struct got {
	int n;
	void *cookie;
	enum upstream_outcome outcome;
	long status;
	char *body;
	size_t body_len;
	char error[256];
	int64_t remain, time_left_ms;
	double elapsed_s;
	int64_t wire_delay_us, rtt_var_us;
};

static void on_done(struct upstream_result *res, void *cls)
{
	struct got *g = cls;

	g->n++;
	g->cookie = res->cookie;
	g->outcome = res->outcome;
	g->status = res->http_status;
	free(g->body);
	g->body = res->body; /* take it */
	g->body_len = res->body_len;
	res->body = NULL;
	memcpy(g->error, res->error, sizeof(g->error));
	g->remain = res->ratelimit_remain;
	g->time_left_ms = res->ratelimit_time_left_ms;
	g->elapsed_s = res->elapsed_s;
	g->wire_delay_us = res->wire_delay_us;
	g->rtt_var_us = res->rtt_var_us;
}

static void wait_done(struct upstream *u, struct got *g, int want)
{
	double deadline = now_s() + CLIENT_MAX_MS / 1000.0;

	while (g->n < want && now_s() < deadline)
		upstream_poll(u, 50, on_done, g);
}

static struct upstream *new_client(int port, unsigned timeout_ms, const char *ca_file)
{
	char url[64], err[256] = "";
	struct upstream_options opt = {
		.base_url = url,
		.ca_file = ca_file,
		.connect_timeout_ms = 1000,
		.timeout_ms = timeout_ms,
	};
	struct upstream *u = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	if (upstream_new(&opt, &u, err, sizeof(err)) < 0)
		fprintf(stderr, "    upstream_new: %s\n", err);
	return u;
}

#define TEST_BODY "CustSpaceId=cs-1&PhoneNumber=8613800000000"
#define TEST_PATH "/?Action=GetPhoneEncryptionPublicKey&Version=2020-06-06"

struct request {
	char host[96];
	char *headers[5];
	struct signer_request req;
};

static void make_request(struct request *r, struct upstream *u)
{
	snprintf(r->host, sizeof(r->host), "Host: %s", upstream_host_header(u));
	r->headers[0] = r->host;
	r->headers[1] = (char *)"Content-Type: application/x-www-form-urlencoded";
	r->headers[2] = (char *)"x-acs-action: GetPhoneEncryptionPublicKey";
	r->headers[3] = (char *)"Authorization: ACS3-HMAC-SHA256 Credential=ak,Signature=00";
	r->headers[4] = NULL;
	r->req.path_and_query = (char *)TEST_PATH;
	r->req.body = (char *)TEST_BODY;
	r->req.body_len = strlen(TEST_BODY);
	r->req.headers = r->headers;
}

static const char ok_response[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: application/json;charset=utf-8\r\n"
	"X-RateLimit-User-API: Limit:5,Remain:3,TimeLeft:800,Reset:1700000000\r\n"
	"Content-Length: 37\r\n"
	"\r\n"
	"{\"RequestId\":\"R1\",\"Code\":\"OK\",\"x\":12}";

/* ---- tests ---- */

TEST(ok_answer_delivers_status_body_and_ratelimit_hint)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	int cookie;

	REQUIRE(server_start(&s, SERVER_RESPOND, ok_response, strlen(ok_response)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, &cookie) == 0);
	CHECK(upstream_in_flight(u) == 1);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(upstream_in_flight(u) == 0);
	CHECK(g.cookie == &cookie);
	CHECK(g.outcome == UPSTREAM_HTTP);
	CHECK(g.status == 200);
	CHECK_STR(g.body, "{\"RequestId\":\"R1\",\"Code\":\"OK\",\"x\":12}");
	CHECK(g.body_len == 37);
	CHECK(g.remain == 3);
	CHECK(g.time_left_ms == 800);
	CHECK(g.elapsed_s > 0 && g.elapsed_s < 3);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(server_receives_post_to_path_with_given_headers_and_body)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	char host_line[128];
	const char *body;
	int i;

	REQUIRE(server_start(&s, SERVER_RESPOND, ok_response, strlen(ok_response)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
	REQUIRE(g.n == 1 && g.outcome == UPSTREAM_HTTP);

	CHECK(strncmp(s.first, "POST " TEST_PATH " HTTP/1.1\r\n", strlen(TEST_PATH) + 16) == 0);
	for (i = 0; r.headers[i]; i++) {
		char line[256];

		snprintf(line, sizeof(line), "\r\n%s\r\n", r.headers[i]);
		CHECK(strstr(s.first, line) != NULL);
	}
	snprintf(host_line, sizeof(host_line), "\r\nHost: 127.0.0.1:%d\r\n", s.port);
	CHECK(strstr(s.first, host_line) != NULL);
	/* Exactly one Host header, and no 100-continue dance. */
	CHECK(strstr(strstr(s.first, "\r\nHost:") + 1, "\r\nHost:") == NULL);
	CHECK(strcasestr(s.first, "\r\nExpect:") == NULL);
	body = strstr(s.first, "\r\n\r\n");
	REQUIRE(body);
	CHECK_STR(body + 4, TEST_BODY);
}

TEST(both_ratelimit_headers_keep_the_tighter_values)
{
	static const char resp[] =
		"HTTP/1.1 200 OK\r\n"
		"x-ratelimit-user-api: Limit:5,Remain:3,TimeLeft:200\r\n"
		"x-ratelimit-user: Limit:100, Remain:1, TimeLeft:900\r\n"
		"Content-Length: 2\r\n"
		"\r\n"
		"{}";
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	REQUIRE(server_start(&s, SERVER_RESPOND, resp, strlen(resp)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_HTTP);
	CHECK(g.remain == 1);
	CHECK(g.time_left_ms == 900);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(server_error_is_an_http_outcome_with_its_status)
{
	static const char resp[] =
		"HTTP/1.1 500 Internal Server Error\r\n"
		"Content-Length: 5\r\n"
		"\r\n"
		"oops!";
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	REQUIRE(server_start(&s, SERVER_RESPOND, resp, strlen(resp)) == 0);
	/* An extra CA file must not disturb plain http. */
	u = new_client(s.port, 3000, "/etc/ssl/certs/ca-certificates.crt");
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_HTTP);
	CHECK(g.status == 500);
	CHECK_STR(g.body, "oops!");
	CHECK(g.remain == -1 && g.time_left_ms == -1);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(connection_closed_without_answer_is_a_network_error)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	REQUIRE(server_start(&s, SERVER_CLOSE, NULL, 0) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_NETWORK);
	CHECK(g.status == 0);
	CHECK(g.error[0] != '\0');
	CHECK(g.body && g.body_len == 0);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(stalled_server_times_out_within_a_second)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	double t0;

	REQUIRE(server_start(&s, SERVER_STALL, NULL, 0) == 0);
	u = new_client(s.port, 300, NULL);
	REQUIRE(u);
	make_request(&r, u);
	t0 = now_s();
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_TIMEOUT);
	CHECK(now_s() - t0 < 1.0);
	CHECK(g.elapsed_s >= 0.25 && g.elapsed_s < 1.0);
	CHECK(g.error[0] != '\0');
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(body_over_the_limit_is_too_large)
{
	size_t body_len = 100 * 1024, head_len;
	char head[128];
	char *resp;
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	head_len = (size_t)snprintf(head, sizeof(head),
				    "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body_len);
	resp = malloc(head_len + body_len);
	memcpy(resp, head, head_len);
	memset(resp + head_len, 'x', body_len);
	REQUIRE(server_start(&s, SERVER_RESPOND, resp, head_len + body_len) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_TOO_LARGE);
	CHECK(g.body_len == 0);
	upstream_free(u);
	server_stop(&s);
	free(resp);
	free(g.body);
}

TEST(refused_connection_is_a_network_error)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	int fd, port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	REQUIRE(fd >= 0);
	REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	REQUIRE(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
	port = ntohs(a.sin_port);
	close(fd); /* bound, never listened: nobody answers there now */

	u = new_client(port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_NETWORK);
	CHECK(g.error[0] != '\0');
	/* The request never went out: no arrival evidence. */
	CHECK(g.wire_delay_us == -1);
	upstream_free(u);
	free(g.body);
}

TEST(sequential_requests_reuse_one_connection)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	REQUIRE(server_start(&s, SERVER_RESPOND, ok_response, strlen(ok_response)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 2);
	CHECK(g.n == 2);
	CHECK(g.outcome == UPSTREAM_HTTP && g.status == 200);
	upstream_free(u);
	server_stop(&s);
	CHECK(s.requests == 2);
	CHECK(s.accepts == 1);
	free(g.body);
}

TEST(wire_delay_excludes_the_servers_processing_time)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };

	REQUIRE(server_start_slow(&s, SERVER_RESPOND, ok_response, strlen(ok_response), 300) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.outcome == UPSTREAM_HTTP && g.status == 200);
	CHECK(g.elapsed_s >= 0.3);
	/* On the wire long before the answer: a fraction of the whole call. */
	CHECK(g.wire_delay_us >= 0);
	CHECK((double)g.wire_delay_us * 4 < g.elapsed_s * 1e6);
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(wire_delay_counts_from_the_send_decision_including_a_wait_in_the_queue)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	struct timespec queued = { 0, 60 * 1000000 };

	REQUIRE(server_start(&s, SERVER_RESPOND, ok_response, strlen(ok_response)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	/* The engine is busy for 60 ms before the multi handle runs. */
	nanosleep(&queued, NULL);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	CHECK(g.wire_delay_us >= 60 * 1000);
	CHECK(g.wire_delay_us <= (int64_t)(g.elapsed_s * 1e6));
	upstream_free(u);
	server_stop(&s);
	free(g.body);
}

TEST(a_fresh_connection_reports_its_rtt_variance_and_a_reused_one_does_not)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	int64_t first_rtt_var_us;

	REQUIRE(server_start(&s, SERVER_RESPOND, ok_response, strlen(ok_response)) == 0);
	u = new_client(s.port, 3000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 1);
	REQUIRE(g.n == 1);
	first_rtt_var_us = g.rtt_var_us;
	CHECK(g.wire_delay_us >= 0);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	wait_done(u, &g, 2);
	REQUIRE(g.n == 2);
	/* Loopback: a handshake sample of microseconds, far under a second. */
	CHECK(first_rtt_var_us >= 0 && first_rtt_var_us < 1000000);
	/* The reused connection's later samples would time the server: none. */
	CHECK(g.rtt_var_us == -1);
	CHECK(g.wire_delay_us >= 0);
	upstream_free(u);
	server_stop(&s);
	CHECK(s.accepts == 1);
	free(g.body);
}

TEST(free_with_a_transfer_in_flight_calls_no_callback)
{
	struct server s;
	struct upstream *u;
	struct request r;
	struct got g = { 0 };
	int i;

	REQUIRE(server_start(&s, SERVER_STALL, NULL, 0) == 0);
	u = new_client(s.port, 5000, NULL);
	REQUIRE(u);
	make_request(&r, u);
	REQUIRE(upstream_start(u, &r.req, NULL) == 0);
	for (i = 0; i < 4; i++)
		upstream_poll(u, 20, on_done, &g);
	CHECK(upstream_in_flight(u) == 1);
	upstream_free(u);
	server_stop(&s);
	CHECK(g.n == 0);
}

static void *wake_later(void *arg)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	upstream_wakeup(arg);
	return NULL;
}

TEST(wakeup_from_another_thread_ends_a_long_poll)
{
	struct upstream *u = new_client(1, 3000, NULL);
	pthread_t th;
	double t0;

	REQUIRE(u);
	REQUIRE(pthread_create(&th, NULL, wake_later, u) == 0);
	t0 = now_s();
	CHECK(upstream_poll(u, 5000, on_done, NULL) == 0);
	CHECK(now_s() - t0 < 2.0);
	pthread_join(th, NULL);
	upstream_free(u);
}

static int host_of(const char *url, char *out, size_t out_size)
{
	struct upstream_options opt = { .base_url = url, .timeout_ms = 1000 };
	struct upstream *u = NULL;
	char err[256] = "";
	int k = upstream_new(&opt, &u, err, sizeof(err));

	if (k == 0) {
		snprintf(out, out_size, "%s", upstream_host_header(u));
		upstream_free(u);
	} else if (err[0] == '\0') {
		return 1; /* an error must come with a reason */
	}
	return k;
}

TEST(host_header_comes_from_the_base_url)
{
	char h[128];

	CHECK(host_of("https://cams.ap-southeast-1.aliyuncs.com", h, sizeof(h)) == 0);
	CHECK_STR(h, "cams.ap-southeast-1.aliyuncs.com");
	CHECK(host_of("https://cams.ap-southeast-1.aliyuncs.com/", h, sizeof(h)) == 0);
	CHECK_STR(h, "cams.ap-southeast-1.aliyuncs.com");
	CHECK(host_of("http://127.0.0.1:8123", h, sizeof(h)) == 0);
	CHECK_STR(h, "127.0.0.1:8123");
	CHECK(host_of("https://x.example:443/", h, sizeof(h)) == 0);
	CHECK_STR(h, "x.example");
	CHECK(host_of("https://x.example:8443", h, sizeof(h)) == 0);
	CHECK_STR(h, "x.example:8443");
	CHECK(host_of("http://[::1]:8080", h, sizeof(h)) == 0);
	CHECK_STR(h, "[::1]:8080");
}

TEST(bad_base_urls_and_ca_files_are_refused)
{
	static const char *bad[] = {
		"", "cams.example.com", "ftp://x.example", "https://x.example/prefix",
		"https://x.example/?a=1", "https://x.example/#f", "https://user:pw@x.example",
		"https://", "not a url at all",
	};
	struct upstream_options opt = {
		.base_url = "http://127.0.0.1:1",
		.ca_file = "/nonexistent/ca.pem",
	};
	struct upstream *u = NULL;
	char h[128], err[256] = "";
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int k = host_of(bad[i], h, sizeof(h));

		if (k != -EINVAL)
			fprintf(stderr, "    %s -> %d\n", bad[i], k);
		CHECK(k == -EINVAL);
	}
	CHECK(upstream_new(&opt, &u, err, sizeof(err)) == -EINVAL);
	CHECK(u == NULL);
	CHECK(strstr(err, "/nonexistent/ca.pem") != NULL);
}

TEST(start_refuses_a_path_without_leading_slash)
{
	struct upstream *u = new_client(1, 1000, NULL);
	struct signer_request req = { .path_and_query = (char *)"?a=1" };

	REQUIRE(u);
	CHECK(upstream_start(u, &req, NULL) == -EIO);
	CHECK(upstream_in_flight(u) == 0);
	upstream_free(u);
}

static int rl(const char *s, int64_t *remain, int64_t *left)
{
	return upstream_parse_ratelimit(s, strlen(s), remain, left);
}

TEST(ratelimit_hint_fields_parse_in_any_order)
{
	int64_t remain = 77, left = 77;

	CHECK(rl("Limit:5,Remain:0,TimeLeft:800,Reset:1700000000", &remain, &left) == 0);
	CHECK(remain == 0 && left == 800);
	CHECK(rl(" TimeLeft : 250 , Remain: 4 ,Limit:5", &remain, &left) == 0);
	CHECK(remain == 4 && left == 250);
	CHECK(rl("Foo:bar,Remain:2,Whatever:9", &remain, &left) == 0);
	CHECK(remain == 2 && left == -1);
	CHECK(rl("timeleft:10", &remain, &left) == 0);
	CHECK(remain == -1 && left == 10);
	CHECK(rl("Remain:abc,TimeLeft:5,", &remain, &left) == 0);
	CHECK(remain == -1 && left == 5);
	/* Only the given length counts. */
	CHECK(upstream_parse_ratelimit("Remain:12345", 8, &remain, &left) == 0);
	CHECK(remain == 1 && left == -1);
}

TEST(ratelimit_hint_without_usable_fields_is_einval)
{
	static const char *bad[] = {
		"", "garbage", "Limit:5,Reset:1700000000", "Remain:-1", "Remain:",
		"TimeLeft:99999999999999999999999", ",,,", ":",
	};
	int64_t remain = 77, left = 77;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(rl(bad[i], &remain, &left) == -EINVAL);
	CHECK(upstream_parse_ratelimit(NULL, 0, &remain, &left) == -EINVAL);
	CHECK(remain == 77 && left == 77);
}

int main(void)
{
	RUN(ok_answer_delivers_status_body_and_ratelimit_hint);
	RUN(server_receives_post_to_path_with_given_headers_and_body);
	RUN(both_ratelimit_headers_keep_the_tighter_values);
	RUN(server_error_is_an_http_outcome_with_its_status);
	RUN(connection_closed_without_answer_is_a_network_error);
	RUN(stalled_server_times_out_within_a_second);
	RUN(body_over_the_limit_is_too_large);
	RUN(refused_connection_is_a_network_error);
	RUN(sequential_requests_reuse_one_connection);
	RUN(wire_delay_excludes_the_servers_processing_time);
	RUN(wire_delay_counts_from_the_send_decision_including_a_wait_in_the_queue);
	RUN(a_fresh_connection_reports_its_rtt_variance_and_a_reused_one_does_not);
	RUN(free_with_a_transfer_in_flight_calls_no_callback);
	RUN(wakeup_from_another_thread_ends_a_long_poll);
	RUN(host_header_comes_from_the_base_url);
	RUN(bad_base_urls_and_ca_files_are_refused);
	RUN(start_refuses_a_path_without_leading_slash);
	RUN(ratelimit_hint_fields_parse_in_any_order);
	RUN(ratelimit_hint_without_usable_fields_is_einval);
	return harness_done();
}
