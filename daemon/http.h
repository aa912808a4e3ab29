/*
 * http.h -- the libmicrohttpd front end: listening socket, routing,
 * access control, responses, the access log.
 *
 * A key lookup is answered on the HTTP thread when the cache can answer it;
 * otherwise the connection is suspended and handed to the proxy engine,
 * which resumes it when the answer is ready (no thread waits). Every
 * request ends in one place, the completion callback: it logs the access
 * line, and frees the request.
 *
 * Logs: start-up failures, the access log. Threads: MHD's pool; http_new,
 * http_reconfigure, http_stop from main.
 */
#ifndef CAMSKEYD_HTTP_H
#define CAMSKEYD_HTTP_H

#include "config.h"
#include "proxy.h"

struct http;
struct keyring;

/*
 * Bind cfg->listen (or take the socket systemd passed: LISTEN_FDS) and start
 * serving. 0 or -errno with a reason in errbuf.
 */
int http_new(const struct config *cfg, struct proxy *proxy, struct http **ret, char *errbuf,
	     size_t errbuf_size);
/* New tokens, clients, limits for requests that start from now on. */
void http_reconfigure(struct http *h, const struct config *cfg);
/*
 * The teams' key pairs the SDK endpoint verifies against, from now on:
 * takes k (NULL: none), frees the previous keyring (its secrets wiped).
 * Any thread.
 */
void http_set_keyring(struct http *h, struct keyring *k);
/*
 * End connections whose request head is later than connection-timeout
 * (slowloris). Call a few times a second (main's loop). Any thread.
 */
void http_sweep(struct http *h);
/* Stop accepting new connections (first step of a graceful stop). */
void http_quiesce(struct http *h);
/* Wait up to wait_ms for open connections to finish, then stop. */
void http_free(struct http *h, unsigned wait_ms);
/* The bound address ("127.0.0.1:8080"). */
const char *http_listen_address(const struct http *h);

#endif
