/*
 * notify.c -- sd_notify(3) over a datagram socket (see notify.h).
 *
 * Owns: the socket and the parsed address. Abstract socket names ("@...")
 * are supported as systemd documents. Writes are single sendto() calls.
 */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "span.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;
static uint64_t watchdog_usec;

int notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");
	const char *wd_pid = getenv("WATCHDOG_PID");
	size_t len;

	if (wd) {
		uint64_t pid = 0, usec = 0;

		if (str_to_u64(wd, 1, UINT64_MAX, &usec) == 0 &&
		    (!wd_pid || (str_to_u64(wd_pid, 1, UINT64_MAX, &pid) == 0 &&
				 pid == (uint64_t)getpid())))
			watchdog_usec = usec;
	}
	if (!path || !*path)
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(notify_addr.sun_path))
		return -EINVAL;
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0';
	notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd < 0)
		return -errno;
	return 0;
}

void notify_fini(void)
{
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
}

int notify_send(const char *state)
{
	if (notify_fd < 0)
		return 0;
	if (sendto(notify_fd, state, strlen(state), MSG_NOSIGNAL,
		   (const struct sockaddr *)&notify_addr, notify_addr_len) < 0)
		return -errno;
	return 0;
}

int notify_status(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	if (notify_fd < 0)
		return 0;
	memcpy(line, "STATUS=", 7);
	va_start(ap, fmt);
	n = vsnprintf(line + 7, sizeof(line) - 7, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	return notify_send(line);
}

uint64_t notify_watchdog_usec(void)
{
	return watchdog_usec;
}
