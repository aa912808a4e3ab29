/*
 * notify.h -- the systemd notification protocol (sd_notify(3)) without
 * libsystemd: datagrams to $NOTIFY_SOCKET ("READY=1", "STATUS=...",
 * "RELOADING=1", "STOPPING=1", "WATCHDOG=1"), and the watchdog interval
 * from $WATCHDOG_USEC / $WATCHDOG_PID. Without $NOTIFY_SOCKET every call is
 * a no-op. Never logs. Threads: any (each call opens nothing; the socket is
 * created once in notify_init).
 */
#ifndef CAMSKEYD_NOTIFY_H
#define CAMSKEYD_NOTIFY_H

#include <stdint.h>

/* Read the environment and open the socket. 0, or -errno (then no-ops). */
int notify_init(void);
void notify_fini(void);
/* Send one state string (several "A=1\nB=2" lines allowed). 0 or -errno. */
int notify_send(const char *state);
/* printf-style STATUS= line. */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval in microseconds, 0 if disabled. */
uint64_t notify_watchdog_usec(void);

#endif
