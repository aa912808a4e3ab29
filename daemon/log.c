/*
 * log.c -- logfmt lines on stderr (see log.h).
 *
 * Owns: the level, access-mode and journal switches (atomics, so reload may
 * change them while other threads log); the per-thread buffers of committed
 * lines, in a registry so the flusher thread and log_fini() can write them;
 * the flusher thread. Every write(2) is made under write_mu with whole
 * lines, so lines never interleave, whatever the size of a pipe's atomic
 * write.
 * Does not: rotate files or talk to journald directly (it reads stderr).
 */
#include "log.h"
#include "span.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A thread's buffer: about 100 access lines, one write(2) when full. */
#define LOG_TBUF_BYTES (32 * 1024)

static atomic_int min_level = LOG_LEVEL_INFO;
static atomic_int access_mode = LOG_ACCESS_MISSES;
static atomic_bool journal;
static atomic_bool buffering;   /* the flusher runs: commit appends */

static const char *const level_names[] = { "debug", "info", "warn", "error" };
/* sd-daemon(3): err 3, warning 4, info 6, debug 7. */
static const char *const level_prefix[] = { "<7>", "<6>", "<4>", "<3>" };

struct tbuf {
	struct tbuf *prev, *next;   /* the registry (circular, under reg_mu) */
	pthread_mutex_t mu;         /* len and data; taken by the owner and the flusher */
	size_t len;
	char data[LOG_TBUF_BYTES];
};

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tbuf registry = { &registry, &registry, PTHREAD_MUTEX_INITIALIZER, 0, { 0 } };
static pthread_key_t tbuf_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static _Thread_local struct tbuf *my_tbuf;

static pthread_t flusher;
static bool flusher_running;
static pthread_mutex_t flusher_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flusher_cv = PTHREAD_COND_INITIALIZER;
static bool flusher_stop;

/* ---- writing ------------------------------------------------------------------ */

/* Whole lines to stderr, under write_mu; a failed write is dropped (nowhere to say so). */
static void write_out(const char *p, size_t n)
{
	pthread_mutex_lock(&write_mu);
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		p += w;
		n -= (size_t)w;
	}
	pthread_mutex_unlock(&write_mu);
}

/* Write b's lines; b->mu held. */
static void tbuf_drain(struct tbuf *b)
{
	if (b->len) {
		write_out(b->data, b->len);
		b->len = 0;
	}
}

/* A thread that logged ends: its lines go out, its buffer leaves the registry. */
static void tbuf_destroy(void *arg)
{
	struct tbuf *b = arg;

	pthread_mutex_lock(&reg_mu);
	b->prev->next = b->next;
	b->next->prev = b->prev;
	pthread_mutex_unlock(&reg_mu);
	pthread_mutex_lock(&b->mu);
	tbuf_drain(b);
	pthread_mutex_unlock(&b->mu);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

static void key_create(void)
{
	pthread_key_create(&tbuf_key, tbuf_destroy);
}

/* This thread's buffer, registered on first use; NULL if out of memory. */
static struct tbuf *tbuf_mine(void)
{
	struct tbuf *b = my_tbuf;

	if (b)
		return b;
	b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	pthread_mutex_init(&b->mu, NULL);
	b->len = 0;
	pthread_once(&key_once, key_create);
	pthread_mutex_lock(&reg_mu);
	b->next = registry.next;
	b->prev = &registry;
	registry.next->prev = b;
	registry.next = b;
	pthread_mutex_unlock(&reg_mu);
	pthread_setspecific(tbuf_key, b);
	my_tbuf = b;
	return b;
}

/* This thread's earlier lines first, so its own lines stay in order. */
static void flush_mine(void)
{
	struct tbuf *b = my_tbuf;

	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	tbuf_drain(b);
	pthread_mutex_unlock(&b->mu);
}

void log_flush(void)
{
	pthread_mutex_lock(&reg_mu);
	for (struct tbuf *b = registry.next; b != &registry; b = b->next) {
		pthread_mutex_lock(&b->mu);
		tbuf_drain(b);
		pthread_mutex_unlock(&b->mu);
	}
	pthread_mutex_unlock(&reg_mu);
}

static void *flusher_main(void *arg)
{
	pthread_mutex_lock(&flusher_mu);
	while (!flusher_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += LOG_FLUSH_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&flusher_cv, &flusher_mu, &ts);
		pthread_mutex_unlock(&flusher_mu);
		log_flush();
		pthread_mutex_lock(&flusher_mu);
	}
	pthread_mutex_unlock(&flusher_mu);
	return NULL;
}

/* JOURNAL_STREAM is "DEV:INODE" of the stream journald gave us; it must still be stderr. */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char *end;

	if (!js || !*js || fstat(STDERR_FILENO, &st) < 0)
		return false;
	errno = 0;
	dev = strtoull(js, &end, 10);
	if (errno || *end != ':')
		return false;
	ino = strtoull(end + 1, &end, 10);
	if (errno || *end)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int log_init(void)
{
	int rc;

	atomic_store(&journal, stderr_is_journal());
	if (flusher_running)
		return 0;
	flusher_stop = false;
	rc = pthread_create(&flusher, NULL, flusher_main, NULL);
	if (rc != 0)
		return -rc;
	flusher_running = true;
	atomic_store(&buffering, true);
	return 0;
}

void log_fini(void)
{
	struct tbuf *b;

	atomic_store(&buffering, false);
	if (flusher_running) {
		pthread_mutex_lock(&flusher_mu);
		flusher_stop = true;
		pthread_cond_signal(&flusher_cv);
		pthread_mutex_unlock(&flusher_mu);
		pthread_join(flusher, NULL);
		flusher_running = false;
	}
	log_flush();
	/* This thread's buffer goes now; other threads' go when they end. */
	b = my_tbuf;
	if (b) {
		pthread_setspecific(tbuf_key, NULL);
		my_tbuf = NULL;
		tbuf_destroy(b);
	}
}

void log_set_journal(bool on)
{
	atomic_store(&journal, on);
}

/* ---- switches ------------------------------------------------------------------ */

void log_set_level(enum log_level level)
{
	atomic_store(&min_level, (int)level);
}

int log_level_from_string(const char *s, enum log_level *ret_level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*ret_level = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_access_mode(enum log_access_mode mode)
{
	atomic_store(&access_mode, (int)mode);
}

enum log_access_mode log_access_mode(void)
{
	return (enum log_access_mode)atomic_load_explicit(&access_mode, memory_order_relaxed);
}

int log_access_mode_from_string(const char *s, enum log_access_mode *ret_mode)
{
	static const struct {
		const char *name;
		enum log_access_mode mode;
	} names[] = {
		{ "all", LOG_ACCESS_ALL }, { "misses", LOG_ACCESS_MISSES }, { "off", LOG_ACCESS_OFF },
		{ "yes", LOG_ACCESS_ALL }, { "no", LOG_ACCESS_OFF },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*ret_mode = names[i].mode;
			return 0;
		}
	}
	return -EINVAL;
}

bool log_access_enabled(void)
{
	return log_access_mode() != LOG_ACCESS_OFF;
}

bool log_enabled(enum log_level level)
{
	return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

/* ---- building lines ------------------------------------------------------------ */

/* Room kept for the final newline. */
#define LINE_ROOM (LOG_LINE_MAX - 1)

static void put(struct log_line *l, const char *s, size_t n)
{
	if (n > LINE_ROOM - l->len)
		n = LINE_ROOM - l->len;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void puts_(struct log_line *l, const char *s)
{
	put(l, s, strlen(s));
}

/*
 * "[<N>]ts=2026-11-26T12:00:00.123Z level=info event=NAME": the date part
 * formatted once a second per thread.
 */
void log_line_begin(struct log_line *l, enum log_level level, const char *event)
{
	static _Thread_local time_t cached_s = -1;
	static _Thread_local char cached[80]; /* "2026-11-26T12:00:00." */
	struct timespec ts;
	char ms[4];
	long m;

	l->len = 0;
	if (atomic_load_explicit(&journal, memory_order_relaxed))
		put(l, level_prefix[level], 3);
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != cached_s) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d.",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec);
		cached_s = ts.tv_sec;
	}
	m = ts.tv_nsec / 1000000;
	ms[0] = (char)('0' + m / 100);
	ms[1] = (char)('0' + m / 10 % 10);
	ms[2] = (char)('0' + m % 10);
	ms[3] = '\0';
	put(l, "ts=", 3);
	puts_(l, cached);
	put(l, ms, 3);
	put(l, "Z level=", 8);
	puts_(l, level_names[level]);
	put(l, " event=", 7);
	puts_(l, event);
}

static void put_key(struct log_line *l, const char *key)
{
	put(l, " ", 1);
	puts_(l, key);
	put(l, "=", 1);
}

void log_line_str(struct log_line *l, const char *key, const char *value)
{
	put_key(l, key);
	puts_(l, value && *value ? value : "-");
}

void log_line_quoted(struct log_line *l, const char *key, const char *value)
{
	char q[512];

	put_key(l, key);
	puts_(l, log_quote(value, q, sizeof(q))); /* put() cuts what does not fit */
}

void log_line_int(struct log_line *l, const char *key, int64_t value)
{
	char tmp[SPAN_I64_SIZE];

	put_key(l, key);
	put(l, tmp, span_format_i64(value, tmp));
}

void log_line_ms(struct log_line *l, const char *key, int64_t us)
{
	char tmp[SPAN_I64_SIZE + 4];
	uint64_t mag = us < 0 ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;
	size_t n = 0;

	put_key(l, key);
	if (us < 0)
		tmp[n++] = '-';
	n += span_format_i64((int64_t)(mag / 1000), tmp + n);
	/* three decimals: the microseconds' last three digits, zero-padded */
	tmp[n++] = '.';
	tmp[n++] = (char)('0' + mag / 100 % 10);
	tmp[n++] = (char)('0' + mag / 10 % 10);
	tmp[n++] = (char)('0' + mag % 10);
	put(l, tmp, n);
}

void log_line_commit(struct log_line *l)
{
	struct tbuf *b;

	l->buf[l->len++] = '\n';
	if (!atomic_load_explicit(&buffering, memory_order_relaxed) || !(b = tbuf_mine())) {
		write_out(l->buf, l->len);
		return;
	}
	pthread_mutex_lock(&b->mu);
	if (b->len + l->len > sizeof(b->data))
		tbuf_drain(b);
	memcpy(b->data + b->len, l->buf, l->len);
	b->len += l->len;
	pthread_mutex_unlock(&b->mu);
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
	struct log_line l;
	int n;
	va_list ap;

	if (!log_enabled(level))
		return;
	log_line_begin(&l, level, event);
	l.buf[l.len++] = ' ';
	va_start(ap, fmt);
	n = vsnprintf(l.buf + l.len, LINE_ROOM - l.len + 1, fmt, ap);
	va_end(ap);
	if (n > 0)
		l.len += (size_t)n < LINE_ROOM - l.len ? (size_t)n : LINE_ROOM - l.len;
	/* Drop a trailing space left by an empty field list. */
	while (l.len > 0 && l.buf[l.len - 1] == ' ')
		l.len--;
	l.buf[l.len++] = '\n';
	/* At once, after this thread's buffered lines: rare lines must not wait. */
	flush_mine();
	write_out(l.buf, l.len);
}

const char *log_quote(const char *s, char *out, size_t out_size)
{
	size_t o = 0;

	out[o++] = '"';
	for (; s && *s && o + 6 < out_size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

const char *log_mask_phone(const char *phone, char *out, size_t out_size)
{
	size_t len = strlen(phone), keep_head, keep_tail, i, o = 0;

	keep_head = len >= 9 ? 4 : len / 3;
	keep_tail = len >= 9 ? 2 : 0;
	for (i = 0; i < len && o + 1 < out_size; i++) {
		bool keep = i < keep_head || i >= len - keep_tail;
		char c = phone[i];

		/* Only digits are ever shown; anything else is masked too. */
		out[o++] = keep && c >= '0' && c <= '9' ? c : '*';
	}
	out[o] = '\0';
	return out;
}
