/*
 * bare_mhd.c -- the floor under camskeyd's hit path, for make bench.
 *
 * A libmicrohttpd server started with exactly the flags, thread pool, connection
 * limit, timeout and per-connection memory limit that daemon/http.c uses, which
 * answers every request with one constant body (read from a file) and the same
 * response header names a camskeyd hit carries, with constant values. What
 * camskeyd spends above this is its own work: routing, validation, the cache
 * lookup, the access log.
 *
 *   bare_mhd PORT BODY_FILE THREADS [epoll]
 *
 * With "epoll", MHD_USE_EPOLL instead of MHD_USE_POLL (make bench shows
 * both when BENCH_EPOLL=1: what the poll() loop costs at the tail).
 *
 * Prints "ready" on stdout when listening; stops on SIGTERM or SIGINT.
 * Not part of the daemon: it links nothing of it.
 */
#include <errno.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The same as HTTP_CONNECTION_MEMORY_BYTES in daemon/http.c. */
#define BARE_CONNECTION_MEMORY_BYTES (24 * 1024)

static char *body;
static size_t body_len;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **con_cls)
{
	static int seen;
	struct MHD_Response *r;
	enum MHD_Result ret;

	/*
	 * As camskeyd does: answer on the second call, once the request is
	 * read, or libmicrohttpd closes the connection after the answer.
	 */
	if (!*con_cls) {
		*con_cls = &seen;
		return MHD_YES;
	}
	*upload_len = 0;
	r = MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG,
				"\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"");
	MHD_add_response_header(r, MHD_HTTP_HEADER_AGE, "12");
	MHD_add_response_header(r, "Cache-Status", "camskeyd; hit; ttl=86388");
	MHD_add_response_header(r, "X-Request-Id", "1b2c3d4e5f60718293a4b5c6");
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct MHD_Daemon *d;
	unsigned long port, threads;
	FILE *f;
	sigset_t set;
	int sig;

	if ((argc != 4 && argc != 5) || parse_uint(argv[1], 65535, &port) < 0 ||
	    parse_uint(argv[3], 64, &threads) < 0 || threads == 0 ||
	    (argc == 5 && strcmp(argv[4], "epoll") != 0)) {
		fprintf(stderr, "usage: bare_mhd PORT BODY_FILE THREADS [epoll]\n");
		return 2;
	}
	f = fopen(argv[2], "rb");
	if (!f) {
		perror(argv[2]);
		return 1;
	}
	body = malloc(65536);
	if (!body)
		return 1;
	body_len = fread(body, 1, 65536, f);
	fclose(f);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	d = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | (argc == 5 ? MHD_USE_EPOLL : MHD_USE_POLL) |
			MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG,
		(uint16_t)port, NULL, NULL, on_request, NULL,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
		MHD_OPTION_CONNECTION_LIMIT, 8192u,
		MHD_OPTION_CONNECTION_TIMEOUT, 30u,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)BARE_CONNECTION_MEMORY_BYTES,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
		MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "bare_mhd: cannot start on port %lu\n", port);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	sigwait(&set, &sig);
	MHD_stop_daemon(d);
	free(body);
	return 0;
}
