/*
 * lockfile.h -- one daemon per cache database: an exclusive lock on
 * "<cache>.lock", held for the life of the process.
 *
 * Two daemons on one database would each spend the account's quota and
 * fight over the file; the second refuses to start instead, naming the
 * file and the PID the kernel reports as holding the lock (F_GETLK), not a
 * PID guessed from the file's text. The lock is a POSIX record lock
 * (fcntl F_SETLK on the whole file), released by the kernel when the
 * process exits however it exits, so a crash never leaves a stale lock.
 * The holder's PID is also written into the file for people reading it.
 * Never logs (the caller prints the reason). Threads: main only.
 */
#ifndef CAMSKEYD_LOCKFILE_H
#define CAMSKEYD_LOCKFILE_H

#include <stddef.h>

struct lockfile;

/*
 * Lock "<cache_path>.lock" (created 0600 if missing). 0 and *ret on
 * success; -EBUSY when another process holds it (errbuf names the file and
 * the holder's PID); another -errno when the file cannot be opened or
 * locked (errbuf says why).
 */
int lockfile_acquire(const char *cache_path, struct lockfile **ret, char *errbuf,
		     size_t errbuf_size);
/* Release the lock, close and free (the file stays). NULL ok. */
void lockfile_release(struct lockfile *lf);

#endif
