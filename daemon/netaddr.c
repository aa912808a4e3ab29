/*
 * netaddr.c -- the listen-address parser (see netaddr.h).
 *
 * Before this module config.c and http.c each had a parser of their own and
 * they disagreed: http.c did not count ::ffff:127.0.0.1 as loopback, so a
 * daemon config.c had accepted as loopback warned that it was exposed.
 * Does not: resolve host names, open sockets, or log.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "span.h"

/* A value quoted in a reason is cut after this many bytes. */
#define NETADDR_QUOTE_MAX 80

static int fail(struct buf *reason, const char *what, const char *value, size_t len)
{
	if (!reason)
		return -EINVAL;
	buf_adds(reason, what);
	buf_add_quoted(reason, value, len, NETADDR_QUOTE_MAX);
	return -EINVAL;
}

bool netaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_UNIX)
		return true;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		const unsigned char *a = sin6->sin6_addr.s6_addr;

		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && a[12] == 127;
	}
	return false;
}

int netaddr_parse(const char *text, struct netaddr *ret, struct buf *reason)
{
	struct netaddr na;
	struct span host, port;
	char addr[INET6_ADDRSTRLEN];
	uint64_t port_number;
	size_t n = strlen(text);

	memset(&na, 0, sizeof(na));
	if (strncmp(text, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)(void *)&na.ss;
		size_t plen = n - 5;

		if (text[5] != '/' || plen >= sizeof(sun->sun_path))
			return fail(reason, "a UNIX socket must be unix:/ABSOLUTE/PATH (under 108 bytes), got ",
				    text, n);
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, text + 5, plen);
		na.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
		na.is_loopback = true;
		*ret = na;
		return 0;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)&na.ss;

		if (!close || close[1] != ':')
			return fail(reason, "must be [IPV6]:PORT, got ", text, n);
		host = span_make(text + 1, (size_t)(close - text - 1));
		port = span_cstr(close + 2);
		if (span_copy(host, addr, sizeof(addr)) < 0 ||
		    inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
			return fail(reason, "address must be a numeric IPv4 address or an [IPv6] address, got ",
				    host.p, host.len);
		sin6->sin6_family = AF_INET6;
		na.len = sizeof(*sin6);
	} else {
		const char *colon = strrchr(text, ':');
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&na.ss;

		if (!colon)
			return fail(reason, "must be ADDR:PORT (e.g. 127.0.0.1:8080), got ", text, n);
		host = span_make(text, (size_t)(colon - text));
		port = span_cstr(colon + 1);
		if (memchr(host.p, ':', host.len))
			return fail(reason, "an IPv6 address must be in brackets ([::1]:8080), got ",
				    text, n);
		if (span_copy(host, addr, sizeof(addr)) < 0 ||
		    inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
			return fail(reason, "address must be a numeric IPv4 address or an [IPv6] address, got ",
				    host.p, host.len);
		sin->sin_family = AF_INET;
		na.len = sizeof(*sin);
	}
	if (span_to_u64(port, 1, 65535, &port_number) < 0)
		return fail(reason, "port must be a number between 1 and 65535, got ", port.p, port.len);
	/* sin_port and sin6_port sit at the same offset, but say which we mean. */
	if (na.ss.ss_family == AF_INET)
		((struct sockaddr_in *)(void *)&na.ss)->sin_port = htons((uint16_t)port_number);
	else
		((struct sockaddr_in6 *)(void *)&na.ss)->sin6_port = htons((uint16_t)port_number);
	na.is_loopback = netaddr_is_loopback((const struct sockaddr *)&na.ss);
	*ret = na;
	return 0;
}
