/*
 * lockfile.c -- the single-daemon lock on a cache database (see lockfile.h).
 *
 * Owns: the open lock file descriptor. A POSIX record lock is per process
 * and dropped when the process closes any descriptor of the file, so this
 * module is the only one that opens "<cache>.lock", and keeps it open
 * until lockfile_release(). OFD locks (F_OFD_SETLK) would survive that
 * but report no PID to F_OFD_GETLK (l_pid is -1), and naming the holder is
 * the point.
 * Does not: remove the file (a racing start could then lock a file that
 * is no longer the one others see), or log.
 */
#include "lockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "mem.h"

struct lockfile {
	int fd;
};

static void whole_file(struct flock *fl, short type)
{
	memset(fl, 0, sizeof(*fl));
	fl->l_type = type;
	fl->l_whence = SEEK_SET;
	fl->l_start = 0;
	fl->l_len = 0;
}

int lockfile_acquire(const char *cache_path, struct lockfile **ret, char *errbuf,
		     size_t errbuf_size)
{
	char path[4096 + 8], pid_text[32];
	struct flock fl;
	int fd, n, err;

	n = snprintf(path, sizeof(path), "%s.lock", cache_path);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		errbuf_printf(errbuf, errbuf_size, "lock file name too long for %s", cache_path);
		return -ENAMETOOLONG;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err = errno;
		errbuf_printf(errbuf, errbuf_size, "cannot open the lock file %s: %s", path,
			      strerror(err));
		return -err;
	}
	whole_file(&fl, F_WRLCK);
	if (fcntl(fd, F_SETLK, &fl) < 0) {
		err = errno;
		if (err == EAGAIN || err == EACCES) {
			whole_file(&fl, F_WRLCK);
			if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
				errbuf_printf(errbuf, errbuf_size,
					      "%s is in use by another camskeyd (PID %ld holds the "
					      "lock %s); one daemon per cache database",
					      cache_path, (long)fl.l_pid, path);
			else
				errbuf_printf(errbuf, errbuf_size,
					      "%s is in use by another camskeyd (it holds the lock "
					      "%s); one daemon per cache database", cache_path, path);
			close(fd);
			return -EBUSY;
		}
		errbuf_printf(errbuf, errbuf_size, "cannot lock %s: %s", path, strerror(err));
		close(fd);
		return -err;
	}
	/* For people: the kernel's answer above is what a second daemon reports. */
	n = snprintf(pid_text, sizeof(pid_text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid_text, (size_t)n, 0) != n) {
		/* The lock holds without the text; nothing depends on it. */
	}
	*ret = xcalloc(1, sizeof(**ret));
	(*ret)->fd = fd;
	return 0;
}

void lockfile_release(struct lockfile *lf)
{
	if (!lf)
		return;
	close(lf->fd); /* drops the lock */
	free(lf);
}
