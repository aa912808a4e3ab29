/*
 * netaddr.h -- the one parser of a listen address (the `listen` key and
 * --listen): config.c validates with it, http.c binds what it returns, so
 * the two can never disagree about what an address is or whether it is
 * loopback.
 *
 * Accepted forms (numeric only: the daemon binds, it never resolves):
 *     IPV4:PORT            127.0.0.1:8080
 *     [IPV6]:PORT          [::1]:8080, [::ffff:127.0.0.1]:8080
 *     unix:/ABSOLUTE/PATH  under 108 bytes (sun_path)
 * PORT is 1..65535 in decimal digits. An IPv6 address without brackets is
 * refused (its last ':' would be taken for the port's).
 * Pure: no I/O, never logs. Threads: any.
 */
#ifndef CAMSKEYD_NETADDR_H
#define CAMSKEYD_NETADDR_H

#include <stdbool.h>
#include <sys/socket.h>

#include "buf.h"

struct netaddr {
	struct sockaddr_storage ss;  /* AF_INET, AF_INET6 or AF_UNIX */
	socklen_t len;               /* the length bind() takes */
	bool is_loopback;            /* see netaddr_is_loopback() */
};

/*
 * Parse text into *ret. 0, or -EINVAL with one line appended to reason
 * (what is wrong, the value quoted; reason may be NULL). *ret is written
 * only on success.
 */
int netaddr_parse(const char *text, struct netaddr *ret, struct buf *reason);

/*
 * Is a socket address reachable only from this host: 127.0.0.0/8, ::1,
 * IPv4-mapped ::ffff:127.0.0.0/104, or a UNIX socket (reachable only
 * through the file system). Everything else, the wildcard addresses
 * included, is not.
 */
bool netaddr_is_loopback(const struct sockaddr *sa);

#endif
