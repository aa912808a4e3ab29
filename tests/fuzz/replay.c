/*
 * replay.c -- the plain main() a fuzz target links with instead of
 * libFuzzer: it feeds every saved input to LLVMFuzzerTestOneInput() once,
 * so make check (and make check SANITIZE=address,undefined) runs each
 * target's seed corpus and every crash ever found, with no clang needed.
 *
 *   build/tests/test_fuzz_NAME            tests/fuzz/corpus/NAME/ and, if it
 *                                         exists, tests/fuzz/regressions/NAME/
 *                                         (run from the top of the tree)
 *   build/tests/test_fuzz_NAME PATH...    those files or directories instead
 *
 * Output is the unit-test harness's: one "ok - replay_NAME_corpus (N
 * inputs)" line per directory and "# N passed, N failed" last, which
 * tests/run-tests.sh adds up. An input that breaks an invariant aborts the
 * program (that is the finding); the name of the input being replayed is
 * printed first, from the sanitizers' death callback or a signal handler.
 *
 * Each input is read into a heap buffer of exactly its size, as libFuzzer
 * passes it, so a parser reading one byte too far is caught by ASan.
 * Files are replayed in name order; dot-files are skipped. Threads: one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"target\""
#endif
#ifndef FUZZ_CORPUS_DIR
#define FUZZ_CORPUS_DIR "tests/fuzz/corpus/" FUZZ_NAME
#endif
#ifndef FUZZ_REGRESSIONS_DIR
#define FUZZ_REGRESSIONS_DIR "tests/fuzz/regressions/" FUZZ_NAME
#endif

/* No saved input is near this; a bigger file is a mistake, not a test. */
#define REPLAY_FILE_MAX_BYTES (4 * 1024 * 1024)
#define REPLAY_DIR_MAX_FILES 100000
#define REPLAY_PATH_MAX 4096

static int passed, failed;

/* The input being replayed, for the crash reports; a fixed buffer. */
static char current_path[REPLAY_PATH_MAX];

/* Defined by a sanitizer runtime when one is linked in. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void say_current(void)
{
	static const char head[] = "# replay: crashed on input ";
	ssize_t ignored;

	if (!current_path[0])
		return;
	ignored = write(STDERR_FILENO, head, sizeof(head) - 1);
	ignored = write(STDERR_FILENO, current_path, strlen(current_path));
	ignored = write(STDERR_FILENO, "\n", 1);
	(void)ignored;
}

static void on_fatal_signal(int sig)
{
	say_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_crash_reports(void)
{
	static const int sigs[] = { SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL };

	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(say_current);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], on_fatal_signal);
}

static void report(bool ok, const char *what, unsigned n_inputs, const char *why)
{
	if (ok) {
		passed++;
		printf("ok - replay_%s_%s (%u inputs)\n", FUZZ_NAME, what, n_inputs);
	} else {
		failed++;
		printf("not ok - replay_%s_%s: %s\n", FUZZ_NAME, what, why);
	}
	fflush(stdout);
}

/* Read path into an exact-size heap buffer. 0 or -errno / -EFBIG. */
static int read_input(const char *path, uint8_t **ret_data, size_t *ret_size)
{
	struct stat st;
	uint8_t *data;
	size_t size, got = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out_close;
	}
	if (st.st_size < 0 || st.st_size > REPLAY_FILE_MAX_BYTES) {
		r = -EFBIG;
		goto out_close;
	}
	size = (size_t)st.st_size;
	data = xmalloc(size);
	while (got < size) {
		ssize_t n = read(fd, data + got, size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			free(data);
			goto out_close;
		}
		got += (size_t)n;
	}
	*ret_data = data;
	*ret_size = size;
out_close:
	close(fd);
	return r;
}

/* Replay one file. 0 or -errno (the file could not be read). */
static int replay_file(const char *path)
{
	uint8_t *data = NULL;
	size_t size = 0;
	int r;

	r = read_input(path, &data, &size);
	if (r < 0)
		return r;
	snprintf(current_path, sizeof(current_path), "%s", path);
	LLVMFuzzerTestOneInput(data, size);
	current_path[0] = '\0';
	free(data);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Replay every file of dir in name order into *ret_count.
 * 0, or -errno with why filled.
 */
static int replay_dir(const char *dir, unsigned *ret_count, char *why, size_t why_size)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	unsigned count = 0;
	DIR *d;
	int r = 0;

	d = opendir(dir);
	if (!d) {
		r = -errno;
		snprintf(why, why_size, "%s: %s", dir, strerror(-r));
		return r;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == REPLAY_DIR_MAX_FILES) {
			r = -E2BIG;
			snprintf(why, why_size, "%s: more than %d files", dir,
				 REPLAY_DIR_MAX_FILES);
			goto out_free;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char path[REPLAY_PATH_MAX];
		int k;

		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path)) {
			r = -ENAMETOOLONG;
			snprintf(why, why_size, "%s/%s: path too long", dir, names[i]);
			goto out_free;
		}
		k = replay_file(path);
		if (k == -EINVAL)
			continue; /* a subdirectory or a special file: not an input */
		if (k < 0) {
			r = k;
			snprintf(why, why_size, "%s: %s", path, strerror(-k));
			goto out_free;
		}
		count++;
	}
	*ret_count = count;
out_free:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

/* A file or a directory given on the command line. */
static void replay_arg(const char *path)
{
	char why[REPLAY_PATH_MAX + 128] = "";
	unsigned count = 0;
	struct stat st;
	int r;

	if (stat(path, &st) < 0) {
		snprintf(why, sizeof(why), "%s: %s", path, strerror(errno));
		report(false, "input", 0, why);
		return;
	}
	if (S_ISDIR(st.st_mode)) {
		r = replay_dir(path, &count, why, sizeof(why));
	} else {
		r = replay_file(path);
		count = 1;
		if (r < 0)
			snprintf(why, sizeof(why), "%s: %s", path, strerror(-r));
	}
	report(r == 0, "input", count, why);
}

int main(int argc, char **argv)
{
	char why[REPLAY_PATH_MAX + 128] = "";
	unsigned count = 0;
	struct stat st;
	int r;

	install_crash_reports();
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			replay_arg(argv[i]);
	} else {
		r = replay_dir(FUZZ_CORPUS_DIR, &count, why, sizeof(why));
		if (r == 0 && count == 0) {
			snprintf(why, sizeof(why), "%s: no inputs", FUZZ_CORPUS_DIR);
			r = -ENOENT;
		}
		report(r == 0, "corpus", count, why);
		/* Every crash ever found, once fixed, stays here as a test. */
		if (stat(FUZZ_REGRESSIONS_DIR, &st) == 0) {
			count = 0;
			r = replay_dir(FUZZ_REGRESSIONS_DIR, &count, why, sizeof(why));
			report(r == 0, "regressions", count, why);
		}
	}
	printf("# %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
