/*
 * camsim.c -- a local stand-in for the CAMS API (GetPhoneEncryptionPublicKey)
 * that end-to-end tests and benchmarks run on loopback instead of
 * https://cams.<region>.aliyuncs.com. tests/sim/README.md is the user guide.
 *
 * What it does: verifies V3 (ACS3-HMAC-SHA256) and V1 (RPC HMAC-SHA1)
 * signatures with its own verifier (simsig.c, written from Alibaba's
 * documentation, checked by `--self-test` against the official SDK's
 * vectors), enforces the replay rules (timestamp within 15 minutes, nonce
 * never reused within 15 minutes), a strict sliding-second quota, and
 * answers with a deterministic public key per (CustSpaceId, PhoneNumber)
 * from --keys-dir in envelopes it renders with cJSON. A JSON control API
 * under /_sim/ injects faults, changes the quota, latency and processing
 * time live, and reports counters that tests assert on (the exact largest
 * number of arrivals in any sliding second among them).
 *
 * It is the daemon's oracle, so it links no daemon object and includes no
 * daemon header: a bug in daemon/signer.c or daemon/envelope.c makes the
 * simulator disagree instead of agreeing with it.
 *
 * Owns: every piece of shared state lives in one struct sim behind one
 * mutex (stats, nonce set, fault rules, quota window, arrival log, per-phone
 * table). The credential is read from the environment once at start,
 * before any thread runs, and is read-only afterwards.
 *
 * Threads: libmicrohttpd runs one thread per connection; each does its own
 * blocking sleeps (latency, processing time, hang, trickle) outside the
 * lock, and takes the lock only for short bookkeeping. The main thread waits for SIGINT/SIGTERM
 * with sigwait(), then raises `stopping`, which every sleep loop polls, and
 * stops the daemon.
 *
 * Invariants: every table is bounded (SIM_* below); the arrival log is
 * appended under the lock with a monotonic timestamp taken under the lock,
 * so it is sorted and the sliding-second maximum is exact; the quota
 * window only holds served (not throttled) arrivals.
 *
 * Does not: verify anything about the Host name, emulate regions, or
 * check the body's Content-Type beyond choosing to parse it as a form.
 * The credential is never logged or echoed.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "selftest.h"
#include "simsig.h"
#include "simutil.h"

#define SIM_ACTION "GetPhoneEncryptionPublicKey"
#define SIM_API_VERSION "2020-06-06"

/* ---- limits of the simulator (all tables are bounded) ---- */

#define SIM_NONCE_MAX 100000          /* nonces remembered (ring) */
#define SIM_NONCE_BUCKETS 131072      /* hash buckets, power of two */
#define SIM_NONCE_MAX_LEN 128
#define SIM_REPLAY_WINDOW_S SIMSIG_REPLAY_WINDOW_S /* timestamp skew, nonce memory */
#define SIM_ARRIVALS_MAX 200000       /* arrival log (ring) */
#define SIM_ARRIVALS_REPORTED 2000    /* arrivals_ms in /_sim/stats */
#define SIM_PHONES_MAX 100000
#define SIM_PHONE_SLOTS 262144        /* power of two, > 2 * SIM_PHONES_MAX */
#define SIM_CUSTSPACES_MAX 1000
#define SIM_CUSTSPACE_SLOTS 2048
#define SIM_CUSTSPACE_MAX_LEN 256
#define SIM_QUOTA_MAX 100000          /* also the served-window ring size */
#define SIM_DELAY_MAX_MS 60000
#define SIM_RULES_MAX 1024
#define SIM_CODES_MAX 64              /* distinct rejection codes counted */
#define SIM_KEYS_MAX 256
#define SIM_BODY_MAX_BYTES (64 * 1024) /* request body, API and control */
#define SIM_PHONE_MAX_DIGITS 20
#define SIM_CODE_MAX 64
#define SIM_MESSAGE_MAX 512
#define SIM_KEY_STATUS_MAX 32
#define SIM_PEM_MAX_BYTES 8192
#define SIM_ERROR_BODY_MAX_BYTES (16 * 1024)
#define SIM_ACCESS_KEY_SECRET_MAX 256
#define SIM_SECURITY_TOKEN_MAX 8192
#define SIM_OVERSIZED_BYTES (200 * 1024)
#define SIM_HANG_MS 30000
#define SIM_SLICE_MS 50               /* sleeps poll `stopping` this often */
#define SIM_TRICKLE_STEP_MS 100
#define SIM_CONNECTION_LIMIT 2048
#define SIM_TLS_FILE_MAX_BYTES (1024 * 1024)

#define US_PER_S 1000000LL


enum fault_mode {
	FAULT_NONE = 0,
	FAULT_ERROR,
	FAULT_STATUS,
	FAULT_HTTP500,
	FAULT_HTTP503,
	FAULT_RESET,
	FAULT_HANG,
	FAULT_TRICKLE,
	FAULT_MALFORMED,
	FAULT_MISSING_FIELDS,
	FAULT_BAD_PEM,
	FAULT_OVERSIZED,
	FAULT_ROTATE,
};

static const struct {
	const char *name;
	enum fault_mode mode;
} fault_modes[] = {
	{ "error", FAULT_ERROR },
	{ "status", FAULT_STATUS },
	{ "http500", FAULT_HTTP500 },
	{ "http503", FAULT_HTTP503 },
	{ "reset", FAULT_RESET },
	{ "hang", FAULT_HANG },
	{ "trickle", FAULT_TRICKLE },
	{ "malformed", FAULT_MALFORMED },
	{ "missing_fields", FAULT_MISSING_FIELDS },
	{ "bad_pem", FAULT_BAD_PEM },
	{ "oversized", FAULT_OVERSIZED },
	{ "rotate", FAULT_ROTATE },
};

/* Upstream error codes an "error" fault may inject, with their defaults. */
static const struct {
	const char *code;
	unsigned http_status;
	const char *message;
} known_errors[] = {
	{ "Product.Unsubscript", 400, "You have not subscribed to the product." },
	{ "Ram.PermissionDeny", 400, "You are not authorized to perform this operation." },
	{ "Unknown.ResourceOwnerId", 400, "The resource does not belong to the current user." },
	{ "System.LimitControl", 400, "The system is under flow control." },
};

struct fault_rule {
	uint64_t id;                          /* creation order; newest wins */
	char phone[SIM_PHONE_MAX_DIGITS + 1]; /* digits or "*" */
	enum fault_mode mode;
	int64_t remaining;                    /* -1: until cleared */
	char code[SIM_CODE_MAX + 1];          /* FAULT_ERROR */
	unsigned http_status;                 /* FAULT_ERROR */
	char message[SIM_MESSAGE_MAX + 1];    /* FAULT_ERROR, "" = default */
	char key_status[SIM_KEY_STATUS_MAX + 1]; /* FAULT_STATUS */
	uint64_t time_left_ms;                /* FAULT_ERROR System.LimitControl */
};

/* A string-keyed counter table with open addressing; never shrinks. */
struct ctable {
	char *keys;          /* n_slots * key_size, "" = empty slot */
	uint64_t *calls;
	uint64_t *rotation;
	size_t key_size;
	size_t n_slots;      /* power of two */
	size_t n_used;
	size_t max_used;
	uint64_t dropped;    /* keys not recorded because the table was full */
};

struct nonce_entry {
	char nonce[SIM_NONCE_MAX_LEN + 1];
	int64_t at_us;
	int32_t next;        /* bucket chain, -1 ends it */
	uint32_t bucket;
};

struct sim_config {
	unsigned quota;
	unsigned latency_ms;
	unsigned jitter_ms;
	unsigned processing_min_ms;  /* after the arrival is counted */
	unsigned processing_max_ms;
};

struct sim {
	pthread_mutex_t lock;
	atomic_int stopping;
	bool verbose;

	/* Read-only after start. */
	char *access_key_id;
	char *access_key_secret;
	char *security_token;        /* NULL: none required */
	char **keys;                 /* PEM texts */
	size_t n_keys;
	int64_t mono0_us;            /* clocks at start, to report wall times */
	int64_t wall0_ms;

	/* Everything below is guarded by lock. */
	struct sim_config config;
	uint64_t rng;

	struct nonce_entry *nonces;  /* ring of SIM_NONCE_MAX */
	int32_t *nonce_buckets;
	uint64_t n_nonces_total;

	int64_t *served;             /* ring of SIM_QUOTA_MAX served arrivals */
	size_t served_head;          /* oldest */
	size_t served_count;

	int64_t *arrivals;           /* ring of SIM_ARRIVALS_MAX */
	uint64_t n_arrivals;
	uint64_t window_start;       /* first arrival inside the last second */
	uint64_t max_in_sliding_second;
	int64_t first_arrival_us;

	uint64_t calls, served_ok, throttled, faults, sig_v3, sig_v1;
	struct {
		char code[SIM_CODE_MAX + 1];
		uint64_t count;
	} rejected[SIM_CODES_MAX];
	size_t n_rejected_codes;

	struct ctable phones;
	struct ctable custspaces;

	struct fault_rule rules[SIM_RULES_MAX];
	size_t n_rules;
	uint64_t next_rule_id;
};

/* Per request, created by the URI log callback, freed on completion. */
struct req {
	char *uri;            /* raw request target, query included */
	struct sbuf body;
	bool started;
};

enum sig_kind {
	SIG_V3 = 3, /* ACS3-HMAC-SHA256 */
	SIG_V1 = 1, /* RPC HMAC-SHA1 */
};

/* What an authenticated call asks for. */
struct call {
	enum sig_kind kind;
	char nonce[SIM_NONCE_MAX_LEN + 1];
	char phone[SIM_PHONE_MAX_DIGITS + 1];
	char cust[SIM_CUSTSPACE_MAX_LEN + 1];
};

/* ---- clocks, randomness, hashing ---- */

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * US_PER_S + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64; the caller holds the lock. */
static uint64_t rng_next(struct sim *sim)
{
	uint64_t z = (sim->rng += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* A RequestId like the upstream's (upper-case UUID shape); lock held. */
static void request_id_new(struct sim *sim, char out[40])
{
	uint64_t a = rng_next(sim), b = rng_next(sim);

	snprintf(out, 40, "%08X-%04X-%04X-%04X-%012llX", (unsigned)(a >> 32),
		 (unsigned)((a >> 16) & 0xffff), (unsigned)(0x4000 | (a & 0x0fff)),
		 (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
		 (unsigned long long)(b & 0xffffffffffffULL));
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL

/* Sleep for us microseconds in slices, returning early when stopping. */
static void sleep_interruptible(struct sim *sim, int64_t us)
{
	int64_t slice = SIM_SLICE_MS * 1000;

	while (us > 0 && !atomic_load(&sim->stopping)) {
		int64_t step = us < slice ? us : slice;

		usleep((useconds_t)step);
		us -= step;
	}
}

/* ---- small string helpers ---- */

/* Compare without an early exit (the habit matters more than the threat). */
static bool secret_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* 1..max decimal digits, by length (a %00 in a value cannot cut it short). */
static bool all_digits_n(const char *s, size_t len)
{
	size_t i;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

static bool all_digits(const char *s)
{
	return all_digits_n(s, strlen(s));
}

/* "MIN[:MAX]" milliseconds, each 0..SIM_DELAY_MAX_MS, MIN <= MAX; 0 or -EINVAL. */
static int parse_range_ms(const char *s, unsigned *ret_min, unsigned *ret_max)
{
	const char *colon = strchr(s, ':');
	uint64_t lo, hi;

	if (sim_parse_u64(s, colon ? (size_t)(colon - s) : strlen(s), 0, SIM_DELAY_MAX_MS,
			  &lo) < 0)
		return -EINVAL;
	hi = lo;
	if (colon && sim_str_to_u64(colon + 1, 0, SIM_DELAY_MAX_MS, &hi) < 0)
		return -EINVAL;
	if (hi < lo)
		return -EINVAL;
	*ret_min = (unsigned)lo;
	*ret_max = (unsigned)hi;
	return 0;
}

/* ---- counter tables ---- */

static void ctable_init(struct ctable *t, size_t n_slots, size_t key_size, size_t max_used)
{
	t->keys = sim_xcalloc(n_slots, key_size);
	t->calls = sim_xcalloc(n_slots, sizeof(*t->calls));
	t->rotation = sim_xcalloc(n_slots, sizeof(*t->rotation));
	t->key_size = key_size;
	t->n_slots = n_slots;
	t->n_used = 0;
	t->max_used = max_used;
	t->dropped = 0;
}

static void ctable_clear(struct ctable *t)
{
	memset(t->keys, 0, t->n_slots * t->key_size);
	memset(t->calls, 0, t->n_slots * sizeof(*t->calls));
	memset(t->rotation, 0, t->n_slots * sizeof(*t->rotation));
	t->n_used = 0;
	t->dropped = 0;
}

static void ctable_fini(struct ctable *t)
{
	free(t->keys);
	free(t->calls);
	free(t->rotation);
}

/*
 * The slot of key, inserted if absent and create is set. -ENOENT (absent,
 * not created), -ENOSPC (table full or key too long: not tracked).
 */
static int ctable_slot(struct ctable *t, const char *key, bool create, size_t *ret)
{
	size_t len = strlen(key), mask = t->n_slots - 1, i, n;

	if (len == 0 || len >= t->key_size)
		return -ENOSPC;
	i = (size_t)fnv1a(FNV_OFFSET, key, len) & mask;
	for (n = 0; n < t->n_slots; n++, i = (i + 1) & mask) {
		char *k = t->keys + i * t->key_size;

		if (k[0] == '\0') {
			if (!create)
				return -ENOENT;
			if (t->n_used >= t->max_used) {
				t->dropped++;
				return -ENOSPC;
			}
			memcpy(k, key, len + 1);
			t->n_used++;
			*ret = i;
			return 0;
		}
		if (strcmp(k, key) == 0) {
			*ret = i;
			return 0;
		}
	}
	return -ENOSPC;
}

/* ---- nonces ---- */

static void nonces_clear(struct sim *sim)
{
	size_t i;

	for (i = 0; i < SIM_NONCE_BUCKETS; i++)
		sim->nonce_buckets[i] = -1;
	sim->n_nonces_total = 0;
}

/* true if nonce was recorded less than SIM_REPLAY_WINDOW_S ago; lock held. */
static bool nonce_seen(struct sim *sim, const char *nonce, int64_t now_us)
{
	uint32_t b = (uint32_t)(fnv1a(FNV_OFFSET, nonce, strlen(nonce)) & (SIM_NONCE_BUCKETS - 1));
	int32_t i;

	for (i = sim->nonce_buckets[b]; i >= 0; i = sim->nonces[i].next) {
		if (strcmp(sim->nonces[i].nonce, nonce) == 0)
			return now_us - sim->nonces[i].at_us < SIM_REPLAY_WINDOW_S * US_PER_S;
	}
	return false;
}

/* Remember nonce, forgetting the oldest when the ring is full; lock held. */
static void nonce_add(struct sim *sim, const char *nonce, int64_t now_us)
{
	uint32_t b = (uint32_t)(fnv1a(FNV_OFFSET, nonce, strlen(nonce)) & (SIM_NONCE_BUCKETS - 1));
	int32_t slot = (int32_t)(sim->n_nonces_total % SIM_NONCE_MAX);
	struct nonce_entry *e = &sim->nonces[slot];

	if (sim->n_nonces_total >= SIM_NONCE_MAX) {
		/* Unlink the entry being overwritten from its chain. */
		int32_t *link = &sim->nonce_buckets[e->bucket];

		while (*link >= 0 && *link != slot)
			link = &sim->nonces[*link].next;
		if (*link == slot)
			*link = e->next;
	}
	snprintf(e->nonce, sizeof(e->nonce), "%s", nonce);
	e->at_us = now_us;
	e->bucket = b;
	e->next = sim->nonce_buckets[b];
	sim->nonce_buckets[b] = slot;
	sim->n_nonces_total++;
}

/* ---- stats ---- */

static void count_rejected(struct sim *sim, const char *code)
{
	size_t i;

	for (i = 0; i < sim->n_rejected_codes; i++) {
		if (strcmp(sim->rejected[i].code, code) == 0) {
			sim->rejected[i].count++;
			return;
		}
	}
	if (sim->n_rejected_codes == SIM_CODES_MAX)
		i = SIM_CODES_MAX - 1; /* lump the rest into the last code */
	else
		snprintf(sim->rejected[sim->n_rejected_codes++].code, SIM_CODE_MAX + 1, "%s",
			 code);
	sim->rejected[i].count++;
}

/* Record an authenticated arrival (throttled included); lock held. */
static void record_arrival(struct sim *sim, const struct call *c, int64_t now_us)
{
	size_t slot;
	uint64_t in_window;

	if (sim->n_arrivals == 0)
		sim->first_arrival_us = now_us;
	sim->arrivals[sim->n_arrivals % SIM_ARRIVALS_MAX] = now_us;
	/*
	 * Windows [t, t + 1 s) over sorted arrivals: the largest count is found
	 * at some window ending at an arrival, i.e. (now - 1 s, now].
	 */
	while (sim->window_start < sim->n_arrivals &&
	       sim->arrivals[sim->window_start % SIM_ARRIVALS_MAX] <= now_us - US_PER_S)
		sim->window_start++;
	if (sim->n_arrivals - sim->window_start >= SIM_ARRIVALS_MAX)
		sim->window_start = sim->n_arrivals - SIM_ARRIVALS_MAX + 1;
	sim->n_arrivals++;
	in_window = sim->n_arrivals - sim->window_start;
	if (in_window > sim->max_in_sliding_second)
		sim->max_in_sliding_second = in_window;

	sim->calls++;
	if (c->kind == SIG_V3)
		sim->sig_v3++;
	else
		sim->sig_v1++;
	if (ctable_slot(&sim->phones, c->phone, true, &slot) == 0)
		sim->phones.calls[slot]++;
	if (c->cust[0] && ctable_slot(&sim->custspaces, c->cust, true, &slot) == 0)
		sim->custspaces.calls[slot]++;
}

static void stats_clear(struct sim *sim)
{
	sim->n_arrivals = 0;
	sim->window_start = 0;
	sim->max_in_sliding_second = 0;
	sim->first_arrival_us = 0;
	sim->calls = sim->served_ok = sim->throttled = sim->faults = 0;
	sim->sig_v3 = sim->sig_v1 = 0;
	sim->n_rejected_codes = 0;
	ctable_clear(&sim->phones);
	ctable_clear(&sim->custspaces);
	sim->served_head = sim->served_count = 0;
}

/* ---- quota ---- */

/* Drop served arrivals that left (now - 1 s, now]; lock held. */
static void quota_expire(struct sim *sim, int64_t now_us)
{
	while (sim->served_count > 0 && sim->served[sim->served_head] <= now_us - US_PER_S) {
		sim->served_head = (sim->served_head + 1) % SIM_QUOTA_MAX;
		sim->served_count--;
	}
}

/* The k-th oldest served arrival in the window (0 = oldest); lock held. */
static int64_t quota_nth(const struct sim *sim, size_t k)
{
	return sim->served[(sim->served_head + k) % SIM_QUOTA_MAX];
}

static uint64_t ms_until(int64_t at_us, int64_t now_us)
{
	if (at_us <= now_us)
		return 0;
	return (uint64_t)((at_us - now_us + 999) / 1000);
}

/* The x-ratelimit-user-api value after this call was served or throttled. */
static void quota_header(const struct sim *sim, bool throttled, int64_t now_us, char *out,
			 size_t out_size)
{
	unsigned quota = sim->config.quota;
	uint64_t time_left = 0, remain = 0;

	if (throttled) {
		/* The slot frees when enough served arrivals leave the window. */
		size_t k = sim->served_count >= quota ? sim->served_count - quota : 0;

		if (sim->served_count > 0)
			time_left = ms_until(quota_nth(sim, k) + US_PER_S, now_us);
	} else {
		if (sim->served_count < quota)
			remain = quota - sim->served_count;
		if (sim->served_count > 0)
			time_left = ms_until(quota_nth(sim, 0) + US_PER_S, now_us);
	}
	snprintf(out, out_size, "Limit:%u,Remain:%llu,TimeLeft:%llu,Reset:%lld", quota,
		 (unsigned long long)remain, (unsigned long long)time_left,
		 (long long)(wall_ms() + (int64_t)time_left));
}

/* ---- fault rules ---- */

/* The rule for phone (newest exact match, else newest "*"); lock held. */
static struct fault_rule *rule_pick(struct sim *sim, const char *phone)
{
	struct fault_rule *exact = NULL, *any = NULL;
	size_t i;

	for (i = 0; i < sim->n_rules; i++) {
		struct fault_rule *r = &sim->rules[i];

		if (r->remaining == 0)
			continue;
		if (strcmp(r->phone, phone) == 0) {
			if (!exact || r->id > exact->id)
				exact = r;
		} else if (strcmp(r->phone, "*") == 0) {
			if (!any || r->id > any->id)
				any = r;
		}
	}
	return exact ? exact : any;
}

static void rules_drop_spent(struct sim *sim)
{
	size_t i, o = 0;

	for (i = 0; i < sim->n_rules; i++) {
		if (sim->rules[i].remaining != 0)
			sim->rules[o++] = sim->rules[i];
	}
	sim->n_rules = o;
}

static const char *fault_mode_name(enum fault_mode m)
{
	size_t i;

	for (i = 0; i < sizeof(fault_modes) / sizeof(fault_modes[0]); i++) {
		if (fault_modes[i].mode == m)
			return fault_modes[i].name;
	}
	return "none";
}

/* ---- responses ---- */

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
			     const char *content_type, char *body, size_t len,
			     const char *ratelimit, const char *request_id)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	/* MHD frees body with free() (MHD_RESPMEM_MUST_FREE). */
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	if (ratelimit)
		MHD_add_response_header(resp, "x-ratelimit-user-api", ratelimit);
	if (request_id)
		MHD_add_response_header(resp, "x-acs-request-id", request_id);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

#define CT_JSON "application/json;charset=utf-8"

/*
 * The envelopes, rendered with cJSON (not the daemon's envelope module):
 * {"RequestId","Code","Message"} and the success shape with "Data". A
 * string the caller frees with free(), or NULL when out of memory.
 */
static char *render_error(const char *request_id, const char *code, const char *message)
{
	cJSON *root = cJSON_CreateObject();
	char *text = NULL;

	if (root && cJSON_AddStringToObject(root, "RequestId", request_id) &&
	    cJSON_AddStringToObject(root, "Code", code) &&
	    cJSON_AddStringToObject(root, "Message", message))
		text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
}

static char *render_ok(const char *request_id, const char *message, const char *phone,
		       const char *pem, const char *key_status)
{
	cJSON *root = cJSON_CreateObject(), *data = NULL;
	char *text = NULL;

	if (root && cJSON_AddStringToObject(root, "RequestId", request_id) &&
	    cJSON_AddStringToObject(root, "Code", "OK") &&
	    cJSON_AddStringToObject(root, "Message", message) &&
	    (data = cJSON_AddObjectToObject(root, "Data")) &&
	    cJSON_AddStringToObject(data, "PhoneNumber", phone) &&
	    cJSON_AddStringToObject(data, "EncryptionPublicKey", pem) &&
	    cJSON_AddStringToObject(data, "EncryptionPublicKeyStatus", key_status))
		text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
}

/* Queue a body that MHD frees; a NULL body (no memory) drops the connection. */
static enum MHD_Result queue_body(struct MHD_Connection *conn, unsigned status,
				  const char *content_type, char *body, const char *ratelimit,
				  const char *request_id)
{
	if (!body)
		return MHD_NO;
	return queue(conn, status, content_type, body, strlen(body), ratelimit, request_id);
}

static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status,
				  const char *content_type, const char *text,
				  const char *request_id)
{
	return queue(conn, status, content_type, sim_xstrdup(text), strlen(text), NULL, request_id);
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, unsigned status,
				   const char *request_id, const char *code, const char *message,
				   const char *ratelimit)
{
	return queue_body(conn, status, CT_JSON, render_error(request_id, code, message),
			  ratelimit, request_id);
}

static enum MHD_Result queue_json(struct MHD_Connection *conn, unsigned status, cJSON *root)
{
	char *text = cJSON_PrintUnformatted(root);

	cJSON_Delete(root);
	if (!text)
		return MHD_NO;
	return queue(conn, status, "application/json", text, strlen(text), NULL, NULL);
}

static enum MHD_Result control_fail(struct MHD_Connection *conn, unsigned status,
				    const char *error)
{
	cJSON *root = cJSON_CreateObject();

	cJSON_AddBoolToObject(root, "ok", 0);
	cJSON_AddStringToObject(root, "error", error);
	return queue_json(conn, status, root);
}

/* ---- authentication (simsig.c) and the request's own checks ---- */

#define reject simsig_reject

static bool check_token(const struct sim *sim, const char *token, struct verdict *v)
{
	if (!sim->security_token && !token)
		return true;
	if (!token || !token[0])
		return reject(v, 400, "MissingSecurityToken",
			      "SecurityToken is mandatory for this credential.");
	if (!sim->security_token || !secret_eq(token, sim->security_token))
		return reject(v, 400, "InvalidSecurityToken.Mismatch",
			      "Specified SecurityToken is not matched with the AccessKey.");
	return true;
}

/* Action, version, nonce, PhoneNumber, CustSpaceId common to V1 and V3. */
static bool check_request(const char *action, const char *version, const char *nonce,
			  const struct params *all, struct call *c, struct verdict *v)
{
	size_t phone_len = 0, cust_len = 0;
	const char *phone = params_get_n(all, "PhoneNumber", &phone_len);
	const char *cust = params_get_n(all, "CustSpaceId", &cust_len);

	if (!action || strcmp(action, SIM_ACTION) != 0)
		return reject(v, 404, "InvalidAction.NotFound",
			      "Specified api is not found, please check your url and method.");
	if (!version || strcmp(version, SIM_API_VERSION) != 0)
		return reject(v, 400, "InvalidVersion",
			      "Specified parameter Version is not valid.");
	if (!nonce || !nonce[0])
		return reject(v, 400, "MissingSignatureNonce",
			      "SignatureNonce is mandatory for this action.");
	if (strlen(nonce) > SIM_NONCE_MAX_LEN)
		return reject(v, 400, "InvalidSignatureNonce", "SignatureNonce is too long.");
	if (!phone || !phone[0])
		return reject(v, 400, "MissingPhoneNumber",
			      "PhoneNumber is mandatory for this action.");
	if (!all_digits_n(phone, phone_len) || phone_len > SIM_PHONE_MAX_DIGITS)
		return reject(v, 400, "InvalidParameter.PhoneNumber",
			      "The specified parameter PhoneNumber is not valid.");
	if (cust && (cust_len > SIM_CUSTSPACE_MAX_LEN || strlen(cust) != cust_len))
		return reject(v, 400, "InvalidParameter.CustSpaceId",
			      "The specified parameter CustSpaceId is not valid.");
	snprintf(c->nonce, sizeof(c->nonce), "%s", nonce);
	snprintf(c->phone, sizeof(c->phone), "%s", phone);
	snprintf(c->cust, sizeof(c->cust), "%s", cust ? cust : "");
	return true;
}

static const char *header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static const char *mhd_header(void *ctx, const char *name)
{
	return header(ctx, name);
}

static bool verify_v3(const struct sim *sim, struct MHD_Connection *conn, const char *method,
		      const char *authz, const struct params *query, const struct params *all,
		      const struct sbuf *body, time_t now_s, struct call *c, struct verdict *v)
{
	const struct v3_request rq = {
		.method = method,
		.query = query,
		.header = mhd_header,
		.header_ctx = conn,
		.body = body->data ? body->data : "",
		.body_len = body->len,
	};

	c->kind = SIG_V3;
	if (!simsig_v3_verify(&rq, authz, sim->access_key_id, sim->access_key_secret, now_s, v,
			      NULL))
		return false;
	if (!check_token(sim, header(conn, "x-acs-security-token"), v))
		return false;
	return check_request(header(conn, "x-acs-action"), header(conn, "x-acs-version"),
			     header(conn, "x-acs-signature-nonce"), all, c, v);
}

static bool verify_v1(const struct sim *sim, const char *method, const struct params *all,
		      time_t now_s, struct call *c, struct verdict *v)
{
	c->kind = SIG_V1;
	if (!simsig_v1_verify(method, all, sim->access_key_id, sim->access_key_secret, now_s, v,
			      NULL))
		return false;
	if (!check_token(sim, params_get(all, "SecurityToken"), v))
		return false;
	return check_request(params_get(all, "Action"), params_get(all, "Version"),
			     params_get(all, "SignatureNonce"), all, c, v);
}

/* ---- the API ---- */

/* What the locked section decided for one authenticated call. */
struct decision {
	bool throttled;
	struct fault_rule rule;  /* mode FAULT_NONE when no fault applies */
	size_t key_index;
	unsigned quota;          /* config.quota when decided */
	int64_t processing_us;   /* to wait after the arrival, before answering */
	char ratelimit[160];
	char request_id[40];
};

static bool mode_answers_200(enum fault_mode m)
{
	switch (m) {
	case FAULT_NONE:
	case FAULT_STATUS:
	case FAULT_TRICKLE:
	case FAULT_MALFORMED:
	case FAULT_MISSING_FIELDS:
	case FAULT_BAD_PEM:
	case FAULT_OVERSIZED:
	case FAULT_ROTATE:
		return true;
	default:
		return false;
	}
}

/*
 * The processing time of one arrival: uniform in [min, max] ms, seeded
 * (the generator is drawn only when the range is not a single value, so
 * RequestIds stay as they were without --processing-ms); lock held.
 */
static int64_t processing_draw(struct sim *sim)
{
	uint64_t lo = (uint64_t)sim->config.processing_min_ms * 1000;
	uint64_t hi = (uint64_t)sim->config.processing_max_ms * 1000;

	if (hi <= lo)
		return (int64_t)lo;
	return (int64_t)(lo + rng_next(sim) % (hi - lo + 1));
}

/* Nonce, quota, arrival log, fault rule and stats for one call. */
static bool decide(struct sim *sim, const struct call *c, struct decision *d,
		   struct verdict *v)
{
	int64_t now_us;
	struct fault_rule *rule;
	uint64_t rotation = 0;
	size_t slot;

	pthread_mutex_lock(&sim->lock);
	now_us = mono_us();
	request_id_new(sim, d->request_id);
	d->quota = sim->config.quota;
	if (nonce_seen(sim, c->nonce, now_us)) {
		count_rejected(sim, "SignatureNonceUsed");
		pthread_mutex_unlock(&sim->lock);
		return reject(v, 400, "SignatureNonceUsed",
			      "Specified signature nonce was used already.");
	}
	nonce_add(sim, c->nonce, now_us);
	record_arrival(sim, c, now_us);
	d->processing_us = processing_draw(sim);

	quota_expire(sim, now_us);
	d->throttled = sim->served_count >= sim->config.quota;
	if (d->throttled) {
		sim->throttled++;
		quota_header(sim, true, now_us, d->ratelimit, sizeof(d->ratelimit));
		pthread_mutex_unlock(&sim->lock);
		return true;
	}
	if (sim->served_count == SIM_QUOTA_MAX) { /* only if quota was lowered */
		sim->served_head = (sim->served_head + 1) % SIM_QUOTA_MAX;
		sim->served_count--;
	}
	sim->served[(sim->served_head + sim->served_count) % SIM_QUOTA_MAX] = now_us;
	sim->served_count++;
	quota_header(sim, false, now_us, d->ratelimit, sizeof(d->ratelimit));

	memset(&d->rule, 0, sizeof(d->rule));
	rule = rule_pick(sim, c->phone);
	if (rule) {
		d->rule = *rule;
		if (rule->remaining > 0 && --rule->remaining == 0)
			rules_drop_spent(sim);
		sim->faults++;
	}
	if (ctable_slot(&sim->phones, c->phone, false, &slot) == 0) {
		if (d->rule.mode == FAULT_ROTATE)
			sim->phones.rotation[slot]++;
		rotation = sim->phones.rotation[slot];
	}
	if (mode_answers_200(d->rule.mode))
		sim->served_ok++;
	pthread_mutex_unlock(&sim->lock);

	{
		uint64_t h = fnv1a(FNV_OFFSET, c->cust, strlen(c->cust));

		h = fnv1a(h, "/", 1);
		h = fnv1a(h, c->phone, strlen(c->phone));
		/* Adding the rotation count guarantees a different key each time. */
		d->key_index = (size_t)((h + rotation) % sim->n_keys);
	}
	return true;
}

struct trickle {
	struct sim *sim;
	char *data;
	size_t len;
};

static ssize_t trickle_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct trickle *t = cls;

	if (pos >= t->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	sleep_interruptible(t->sim, SIM_TRICKLE_STEP_MS * 1000);
	if (atomic_load(&t->sim->stopping) || max == 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	out[0] = t->data[pos];
	return 1;
}

static void trickle_free(void *cls)
{
	struct trickle *t = cls;

	free(t->data);
	free(t);
}

/* Takes body (NULL: no memory, the connection is dropped). */
static enum MHD_Result answer_trickle(struct sim *sim, struct MHD_Connection *conn, char *body,
				      const struct decision *d)
{
	struct trickle *t;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!body)
		return MHD_NO;
	t = sim_xcalloc(1, sizeof(*t));
	t->sim = sim;
	t->data = body;
	t->len = strlen(body);
	resp = MHD_create_response_from_callback(t->len, 1, trickle_read, t, trickle_free);
	if (!resp) {
		trickle_free(t);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CT_JSON);
	MHD_add_response_header(resp, "x-ratelimit-user-api", d->ratelimit);
	MHD_add_response_header(resp, "x-acs-request-id", d->request_id);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result answer_error_fault(struct sim *sim, struct MHD_Connection *conn,
					  const struct decision *d)
{
	const struct fault_rule *r = &d->rule;
	unsigned status = r->http_status ? r->http_status : 400;
	const char *message = r->message[0] ? r->message : "Injected error.";
	char ratelimit[160];
	size_t i;

	for (i = 0; i < sizeof(known_errors) / sizeof(known_errors[0]); i++) {
		if (strcmp(known_errors[i].code, r->code) == 0) {
			if (!r->http_status)
				status = known_errors[i].http_status;
			if (!r->message[0])
				message = known_errors[i].message;
		}
	}
	if (strcmp(r->code, "System.LimitControl") == 0) {
		snprintf(ratelimit, sizeof(ratelimit),
			 "Limit:%u,Remain:0,TimeLeft:%llu,Reset:%lld", d->quota,
			 (unsigned long long)r->time_left_ms,
			 (long long)(wall_ms() + (int64_t)r->time_left_ms));
		return queue_error(conn, status, d->request_id, r->code, message, ratelimit);
	}
	return queue_error(conn, status, d->request_id, r->code, message, d->ratelimit);
}

static enum MHD_Result answer(struct sim *sim, struct MHD_Connection *conn,
			      const struct call *c, const struct decision *d)
{
	static const char bad_pem[] = "-----BEGIN PUBLIC KEY-----\n"
				      "bm90IGEga2V5IGF0IGFsbA==\n"
				      "-----END PUBLIC KEY-----\n";
	const char *pem = sim->keys[d->key_index];
	char *body = NULL;

	switch (d->rule.mode) {
	case FAULT_NONE:
	case FAULT_ROTATE:
		body = render_ok(d->request_id, "OK", c->phone, pem, "VALID");
		break;
	case FAULT_STATUS:
		body = render_ok(d->request_id, "OK", c->phone, pem, d->rule.key_status);
		break;
	case FAULT_TRICKLE:
		return answer_trickle(sim, conn, render_ok(d->request_id, "OK", c->phone, pem,
							   "VALID"), d);
	case FAULT_BAD_PEM:
		body = render_ok(d->request_id, "OK", c->phone, bad_pem, "VALID");
		break;
	case FAULT_OVERSIZED: {
		/* A valid envelope padded to SIM_OVERSIZED_BYTES through Message. */
		char *pad = sim_xmalloc(SIM_OVERSIZED_BYTES + 1);
		size_t i;

		for (i = 0; i < SIM_OVERSIZED_BYTES; i++)
			pad[i] = "0123456789abcdef"[i % 16];
		pad[SIM_OVERSIZED_BYTES] = '\0';
		body = render_ok(d->request_id, pad, c->phone, pem, "VALID");
		free(pad);
		break;
	}
	case FAULT_MALFORMED:
		body = sim_xstrdup("{not json");
		break;
	case FAULT_MISSING_FIELDS:
		body = sim_xstrdup("{\"RequestId\":\"x\",\"Code\":\"OK\"}");
		break;
	case FAULT_ERROR:
		return answer_error_fault(sim, conn, d);
	case FAULT_HTTP500:
		return queue_text(conn, 500, "text/html",
				  "<html><body><h1>500 Internal Server Error</h1></body></html>\n",
				  d->request_id);
	case FAULT_HTTP503:
		return queue_text(conn, 503, "text/html",
				  "<html><body><h1>503 Service Unavailable</h1></body></html>\n",
				  d->request_id);
	case FAULT_HANG:
		sleep_interruptible(sim, (int64_t)SIM_HANG_MS * 1000);
		return MHD_NO;
	case FAULT_RESET:
		return MHD_NO;
	}
	return queue_body(conn, MHD_HTTP_OK, CT_JSON, body, d->ratelimit, d->request_id);
}

/* Latency plus seeded jitter, drawn under the lock, slept outside it. */
static void network_delay(struct sim *sim)
{
	int64_t us;

	pthread_mutex_lock(&sim->lock);
	us = (int64_t)sim->config.latency_ms * 1000;
	if (sim->config.jitter_ms > 0)
		us += (int64_t)(rng_next(sim) % ((uint64_t)sim->config.jitter_ms * 1000 + 1));
	pthread_mutex_unlock(&sim->lock);
	sleep_interruptible(sim, us);
}

static enum MHD_Result api_reject(struct sim *sim, struct MHD_Connection *conn,
				  const struct verdict *v, const char *request_id)
{
	char rid[40];

	if (!request_id) {
		pthread_mutex_lock(&sim->lock);
		request_id_new(sim, rid);
		count_rejected(sim, v->code);
		pthread_mutex_unlock(&sim->lock);
		request_id = rid;
	}
	if (sim->verbose)
		sim_log(SIM_LOG_INFO, "sim_reject", "code=%s status=%u", v->code, v->http_status);
	return queue_error(conn, v->http_status, request_id, v->code, v->message, NULL);
}

static enum MHD_Result handle_api(struct sim *sim, struct MHD_Connection *conn,
				  const char *method, struct req *rq)
{
	struct params query = { .n = 0 }, form = { .n = 0 }, all = { .n = 0 };
	const char *qmark = strchr(rq->uri, '?');
	const char *authz, *ctype;
	struct verdict v;
	struct call c;
	struct decision d;
	enum MHD_Result ret;
	bool ok;

	network_delay(sim);
	if (atomic_load(&sim->stopping))
		return MHD_NO;
	memset(&c, 0, sizeof(c));
	memset(&v, 0, sizeof(v));
	if (rq->body.error) {
		reject(&v, 400, "InvalidParameter", "The request body is too large.");
		return api_reject(sim, conn, &v, NULL);
	}
	if (qmark)
		params_parse(&query, qmark + 1, strlen(qmark + 1));
	ctype = header(conn, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (rq->body.len > 0 && (!ctype || strstr(ctype, "x-www-form-urlencoded")))
		params_parse(&form, rq->body.data, rq->body.len);
	params_append(&all, &query);
	params_append(&all, &form);

	authz = header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
	if (query.overflow || form.overflow || all.overflow)
		ok = reject(&v, 400, "InvalidParameter", "Too many parameters.");
	else if (authz && strncmp(authz, SIMSIG_V3_PREFIX, strlen(SIMSIG_V3_PREFIX)) == 0)
		ok = verify_v3(sim, conn, method, authz, &query, &all, &rq->body, time(NULL), &c,
			       &v);
	else if (params_get(&all, "Signature"))
		ok = verify_v1(sim, method, &all, time(NULL), &c, &v);
	else
		ok = reject(&v, 400, "MissingSignature",
			    "The request has no ACS3-HMAC-SHA256 Authorization header and no "
			    "Signature parameter.");
	params_free(&query);
	params_free(&form);
	params_free(&all);
	if (!ok)
		return api_reject(sim, conn, &v, NULL);

	memset(&d, 0, sizeof(d));
	if (!decide(sim, &c, &d, &v))
		return api_reject(sim, conn, &v, d.request_id);
	/*
	 * The arrival is counted; the upstream's processing time comes after it
	 * (throttled and faulted calls included). Slept on this connection's
	 * own thread, so other connections go on.
	 */
	if (d.processing_us > 0) {
		sleep_interruptible(sim, d.processing_us);
		if (atomic_load(&sim->stopping))
			return MHD_NO;
	}
	if (sim->verbose) {
		char masked[SIM_PHONE_MASKED_MAX];

		sim_log(SIM_LOG_INFO, "sim_call", "phone=%s sig=v%d outcome=%s",
			 sim_mask_phone(c.phone, masked, sizeof(masked)), (int)c.kind,
			 d.throttled ? "throttled" : fault_mode_name(d.rule.mode));
	}
	if (d.throttled)
		return queue_error(conn, 400, d.request_id, "System.LimitControl",
				   "The system is under flow control.", d.ratelimit);
	ret = answer(sim, conn, &c, &d);
	return ret;
}

/* ---- the control API ---- */

static bool client_is_loopback(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof(sin));
		return (ntohl(sin.sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof(sin6));
		return IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr);
	}
	return false;
}

/* Read an optional integer member in [min, max]; 0 ok/absent, -EINVAL bad. */
static int json_int(const cJSON *root, const char *name, int64_t min, int64_t max,
		    int64_t *ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
	double d;

	if (!item)
		return 0;
	if (cJSON_IsString(item)) {
		uint64_t u;

		if (sim_str_to_u64(item->valuestring, 0, (uint64_t)INT64_MAX, &u) < 0)
			return -EINVAL;
		d = (double)u;
	} else if (cJSON_IsNumber(item)) {
		d = item->valuedouble;
	} else {
		return -EINVAL;
	}
	if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d)
		return -EINVAL;
	*ret = (int64_t)d;
	return 0;
}

/* Copy an optional string member; 0 ok/absent, -EINVAL bad type or too long. */
static int json_str(const cJSON *root, const char *name, char *dst, size_t dst_size)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);

	if (!item)
		return 0;
	if (!cJSON_IsString(item) || strlen(item->valuestring) >= dst_size)
		return -EINVAL;
	snprintf(dst, dst_size, "%s", item->valuestring);
	return 0;
}

static cJSON *parse_body(struct req *rq)
{
	cJSON *root;

	if (rq->body.error || rq->body.len == 0)
		return NULL;
	root = cJSON_ParseWithLength(rq->body.data, rq->body.len);
	if (root && !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static enum MHD_Result control_add_fault(struct sim *sim, struct MHD_Connection *conn,
					 struct req *rq)
{
	cJSON *root = parse_body(rq);
	const cJSON *item;
	struct fault_rule r;
	char mode[32] = "", status_text[SIM_KEY_STATUS_MAX + 1] = "";
	int64_t count = -1, http_status = 0, time_left = 1000;
	size_t i;
	uint64_t id;

	if (!root)
		return control_fail(conn, 400, "body must be a JSON object");
	memset(&r, 0, sizeof(r));
	if (json_str(root, "phone", r.phone, sizeof(r.phone)) < 0 ||
	    json_str(root, "mode", mode, sizeof(mode)) < 0 ||
	    json_str(root, "code", r.code, sizeof(r.code)) < 0 ||
	    json_str(root, "message", r.message, sizeof(r.message)) < 0 ||
	    json_int(root, "count", -1, INT32_MAX, &count) < 0 ||
	    json_int(root, "http_status", 0, 599, &http_status) < 0 ||
	    json_int(root, "time_left_ms", 0, 3600 * 1000, &time_left) < 0) {
		cJSON_Delete(root);
		return control_fail(conn, 400, "a member has the wrong type, range or length");
	}
	/* "status": the key status for mode "status", the HTTP status for "error". */
	item = cJSON_GetObjectItemCaseSensitive(root, "status");
	if (item && cJSON_IsString(item))
		snprintf(status_text, sizeof(status_text), "%s", item->valuestring);
	else if (item && cJSON_IsNumber(item))
		snprintf(status_text, sizeof(status_text), "%d", item->valueint);
	cJSON_Delete(root);

	if (!r.phone[0] || (strcmp(r.phone, "*") != 0 && !all_digits(r.phone)))
		return control_fail(conn, 400, "phone must be digits or \"*\"");
	for (i = 0; i < sizeof(fault_modes) / sizeof(fault_modes[0]); i++) {
		if (strcmp(fault_modes[i].name, mode) == 0)
			r.mode = fault_modes[i].mode;
	}
	if (r.mode == FAULT_NONE)
		return control_fail(conn, 400, "unknown mode");
	if (count == 0)
		return control_fail(conn, 400, "count must be -1 or positive");
	r.remaining = count;
	r.time_left_ms = (uint64_t)time_left;
	if (r.mode == FAULT_ERROR) {
		uint64_t s;

		if (!r.code[0])
			return control_fail(conn, 400, "mode error needs a code");
		if (!http_status && status_text[0] &&
		    sim_str_to_u64(status_text, 100, 599, &s) == 0)
			http_status = (int64_t)s;
		r.http_status = (unsigned)http_status;
	}
	if (r.mode == FAULT_STATUS)
		snprintf(r.key_status, sizeof(r.key_status), "%s",
			 status_text[0] ? status_text : "MISMATCH");

	pthread_mutex_lock(&sim->lock);
	if (sim->n_rules == SIM_RULES_MAX) {
		pthread_mutex_unlock(&sim->lock);
		return control_fail(conn, 507, "too many rules");
	}
	r.id = id = ++sim->next_rule_id;
	sim->rules[sim->n_rules++] = r;
	i = sim->n_rules;
	pthread_mutex_unlock(&sim->lock);

	root = cJSON_CreateObject();
	cJSON_AddBoolToObject(root, "ok", 1);
	cJSON_AddNumberToObject(root, "id", (double)id);
	cJSON_AddNumberToObject(root, "rules", (double)i);
	return queue_json(conn, MHD_HTTP_OK, root);
}

static enum MHD_Result control_list_faults(struct sim *sim, struct MHD_Connection *conn)
{
	cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "rules");
	size_t i;

	pthread_mutex_lock(&sim->lock);
	for (i = 0; i < sim->n_rules; i++) {
		const struct fault_rule *r = &sim->rules[i];
		cJSON *o = cJSON_CreateObject();

		cJSON_AddNumberToObject(o, "id", (double)r->id);
		cJSON_AddStringToObject(o, "phone", r->phone);
		cJSON_AddStringToObject(o, "mode", fault_mode_name(r->mode));
		cJSON_AddNumberToObject(o, "remaining", (double)r->remaining);
		if (r->mode == FAULT_ERROR)
			cJSON_AddStringToObject(o, "code", r->code);
		if (r->mode == FAULT_STATUS)
			cJSON_AddStringToObject(o, "status", r->key_status);
		cJSON_AddItemToArray(arr, o);
	}
	pthread_mutex_unlock(&sim->lock);
	return queue_json(conn, MHD_HTTP_OK, root);
}

static cJSON *config_json(const struct sim *sim)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "quota", sim->config.quota);
	cJSON_AddNumberToObject(o, "latency_ms", sim->config.latency_ms);
	cJSON_AddNumberToObject(o, "jitter_ms", sim->config.jitter_ms);
	cJSON_AddNumberToObject(o, "processing_min_ms", sim->config.processing_min_ms);
	cJSON_AddNumberToObject(o, "processing_max_ms", sim->config.processing_max_ms);
	return o;
}

static enum MHD_Result control_config(struct sim *sim, struct MHD_Connection *conn,
				      struct req *rq, bool set)
{
	cJSON *root;
	int64_t quota = -1, latency = -1, jitter = -1;
	unsigned proc_min = 0, proc_max = 0;
	bool proc_set = false;

	if (set) {
		const cJSON *proc;
		int64_t n = 0;
		int bad = 0;

		root = parse_body(rq);
		if (!root)
			return control_fail(conn, 400, "body must be a JSON object");
		/* "processing_ms": N, or "MIN[:MAX]" as for --processing-ms. */
		proc = cJSON_GetObjectItemCaseSensitive(root, "processing_ms");
		if (proc && cJSON_IsString(proc)) {
			bad = parse_range_ms(proc->valuestring, &proc_min, &proc_max) < 0;
			proc_set = true;
		} else if (proc) {
			bad = json_int(root, "processing_ms", 0, SIM_DELAY_MAX_MS, &n) < 0;
			proc_min = proc_max = (unsigned)n;
			proc_set = true;
		}
		if (bad || json_int(root, "quota", 1, SIM_QUOTA_MAX, &quota) < 0 ||
		    json_int(root, "latency_ms", 0, SIM_DELAY_MAX_MS, &latency) < 0 ||
		    json_int(root, "jitter_ms", 0, SIM_DELAY_MAX_MS, &jitter) < 0) {
			cJSON_Delete(root);
			return control_fail(conn, 400, "quota must be 1..100000, "
					    "latency_ms and jitter_ms 0..60000, processing_ms "
					    "0..60000 or \"MIN:MAX\" with MIN <= MAX");
		}
		cJSON_Delete(root);
	}
	pthread_mutex_lock(&sim->lock);
	if (proc_set) {
		sim->config.processing_min_ms = proc_min;
		sim->config.processing_max_ms = proc_max;
	}
	if (quota >= 0)
		sim->config.quota = (unsigned)quota;
	if (latency >= 0)
		sim->config.latency_ms = (unsigned)latency;
	if (jitter >= 0)
		sim->config.jitter_ms = (unsigned)jitter;
	root = cJSON_CreateObject();
	cJSON_AddBoolToObject(root, "ok", 1);
	cJSON_AddItemToObject(root, "config", config_json(sim));
	pthread_mutex_unlock(&sim->lock);
	return queue_json(conn, MHD_HTTP_OK, root);
}

static cJSON *ctable_json(const struct ctable *t)
{
	cJSON *o = cJSON_CreateObject();
	size_t i;

	for (i = 0; i < t->n_slots; i++) {
		const char *k = t->keys + i * t->key_size;

		if (k[0])
			cJSON_AddNumberToObject(o, k, (double)t->calls[i]);
	}
	return o;
}

static enum MHD_Result control_stats(struct sim *sim, struct MHD_Connection *conn)
{
	cJSON *root = cJSON_CreateObject(), *o, *arr;
	uint64_t i, from;
	size_t k;

	pthread_mutex_lock(&sim->lock);
	cJSON_AddNumberToObject(root, "calls", (double)sim->calls);
	cJSON_AddNumberToObject(root, "served", (double)sim->served_ok);
	cJSON_AddNumberToObject(root, "throttled", (double)sim->throttled);
	o = cJSON_AddObjectToObject(root, "rejected");
	for (k = 0; k < sim->n_rejected_codes; k++)
		cJSON_AddNumberToObject(o, sim->rejected[k].code, (double)sim->rejected[k].count);
	cJSON_AddNumberToObject(root, "faults", (double)sim->faults);
	cJSON_AddNumberToObject(root, "max_in_sliding_second",
				(double)sim->max_in_sliding_second);
	cJSON_AddItemToObject(root, "by_phone", ctable_json(&sim->phones));
	cJSON_AddItemToObject(root, "by_custspace", ctable_json(&sim->custspaces));
	cJSON_AddNumberToObject(root, "by_phone_dropped", (double)sim->phones.dropped);
	o = cJSON_AddObjectToObject(root, "signatures");
	cJSON_AddNumberToObject(o, "v3", (double)sim->sig_v3);
	cJSON_AddNumberToObject(o, "v1", (double)sim->sig_v1);
	if (sim->n_arrivals > 0) {
		int64_t last = sim->arrivals[(sim->n_arrivals - 1) % SIM_ARRIVALS_MAX];

		cJSON_AddNumberToObject(root, "first_arrival_ms",
					(double)(sim->wall0_ms +
						 (sim->first_arrival_us - sim->mono0_us) / 1000));
		cJSON_AddNumberToObject(root, "last_arrival_ms",
					(double)(sim->wall0_ms + (last - sim->mono0_us) / 1000));
	} else {
		cJSON_AddNullToObject(root, "first_arrival_ms");
		cJSON_AddNullToObject(root, "last_arrival_ms");
	}
	arr = cJSON_AddArrayToObject(root, "arrivals_ms");
	from = sim->n_arrivals > SIM_ARRIVALS_REPORTED ? sim->n_arrivals - SIM_ARRIVALS_REPORTED
						       : 0;
	for (i = from; i < sim->n_arrivals; i++) {
		int64_t us = sim->arrivals[i % SIM_ARRIVALS_MAX] - sim->first_arrival_us;

		cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)us / 1000.0));
	}
	cJSON_AddNumberToObject(root, "rules", (double)sim->n_rules);
	cJSON_AddItemToObject(root, "config", config_json(sim));
	pthread_mutex_unlock(&sim->lock);
	return queue_json(conn, MHD_HTTP_OK, root);
}

static enum MHD_Result control_ok(struct MHD_Connection *conn, const char *what, size_t n)
{
	cJSON *root = cJSON_CreateObject();

	cJSON_AddBoolToObject(root, "ok", 1);
	if (what)
		cJSON_AddNumberToObject(root, what, (double)n);
	return queue_json(conn, MHD_HTTP_OK, root);
}

static enum MHD_Result handle_control(struct sim *sim, struct MHD_Connection *conn,
				      const char *url, const char *method, struct req *rq)
{
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	size_t n;

	if (!client_is_loopback(conn))
		return control_fail(conn, 403, "the control API answers loopback clients only");
	if (rq->body.error)
		return control_fail(conn, 413, "body too large");
	if (strcmp(url, "/_sim/faults") == 0) {
		if (post)
			return control_add_fault(sim, conn, rq);
		if (get)
			return control_list_faults(sim, conn);
		if (strcmp(method, "DELETE") == 0) {
			pthread_mutex_lock(&sim->lock);
			n = sim->n_rules;
			sim->n_rules = 0;
			pthread_mutex_unlock(&sim->lock);
			return control_ok(conn, "cleared", n);
		}
	} else if (strcmp(url, "/_sim/config") == 0 && (get || post)) {
		return control_config(sim, conn, rq, post);
	} else if (strcmp(url, "/_sim/stats") == 0 && get) {
		return control_stats(sim, conn);
	} else if (strcmp(url, "/_sim/reset") == 0 && post) {
		pthread_mutex_lock(&sim->lock);
		stats_clear(sim);
		nonces_clear(sim);
		sim->n_rules = 0;
		pthread_mutex_unlock(&sim->lock);
		return control_ok(conn, NULL, 0);
	}
	return control_fail(conn, 404, "no such control endpoint or method");
}

/* ---- libmicrohttpd callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct req *rq = sim_xcalloc(1, sizeof(*rq));

	rq->uri = sim_xstrdup(uri ? uri : "/");
	sbuf_init(&rq->body, SIM_BODY_MAX_BYTES);
	return rq;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req *rq = *req_cls;

	if (!rq)
		return;
	free(rq->uri);
	sbuf_free(&rq->body);
	free(rq);
	*req_cls = NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **req_cls)
{
	struct sim *sim = cls;
	struct req *rq = *req_cls;

	if (!rq)
		return MHD_NO;
	if (!rq->started) {
		rq->started = true;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* Past the maximum the sticky error is set and the rest dropped. */
		sbuf_add(&rq->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(url, "/") == 0 && (strcmp(method, "POST") == 0 || strcmp(method, "GET") == 0))
		return handle_api(sim, conn, method, rq);
	if (strncmp(url, "/_sim/", 6) == 0)
		return handle_control(sim, conn, url, method, rq);
	{
		char rid[40];

		pthread_mutex_lock(&sim->lock);
		request_id_new(sim, rid);
		pthread_mutex_unlock(&sim->lock);
		return queue_error(conn, 404, rid, "InvalidAction.NotFound",
				   "Specified api is not found, please check your url and method.",
				   NULL);
	}
}

/* ---- start-up ---- */

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* libmicrohttpd's own messages, as one logfmt line each. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char text[512], quoted[600];
	size_t len;

	vsnprintf(text, sizeof(text), fmt, ap);
	len = strlen(text);
	while (len > 0 && text[len - 1] == '\n')
		text[--len] = '\0';
	/* Expected whenever a reset or hang fault drops a connection. */
	if (strncmp(text, "Application reported internal error", 35) == 0)
		sim_log(SIM_LOG_DEBUG, "sim_mhd", "msg=%s", sim_log_quote(text, quoted, sizeof(quoted)));
	else
		sim_log(SIM_LOG_WARN, "sim_mhd", "msg=%s", sim_log_quote(text, quoted, sizeof(quoted)));
}

static int pem_filter(const struct dirent *e)
{
	size_t len = strlen(e->d_name);

	return len > 4 && strcmp(e->d_name + len - 4, ".pem") == 0 && e->d_name[0] != '.';
}

/* Read a whole small file; 0 or -errno. */
static int read_file(const char *path, size_t max_bytes, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	struct sbuf b;
	char chunk[4096];
	size_t n;
	int err = 0;

	if (!f)
		return -errno;
	sbuf_init(&b, max_bytes);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sbuf_add(&b, chunk, n);
	if (ferror(f))
		err = -EIO;
	fclose(f);
	if (!err && b.error)
		err = -E2BIG;
	if (err) {
		sim_wipe(b.data, b.len);
		sbuf_free(&b);
		return err;
	}
	*ret = sbuf_steal(&b, ret_len);
	return 0;
}

/* A PEM "PUBLIC KEY" block that OpenSSL reads as a key, white space around only. */
static bool pem_is_public_key(const char *pem, size_t len)
{
	static const char begin[] = "-----BEGIN PUBLIC KEY-----";
	size_t skip = 0;
	EVP_PKEY *pkey = NULL;
	BIO *bio;
	char rest[64];
	int n, i;
	bool ok = false;

	while (skip < len && (pem[skip] == ' ' || pem[skip] == '\n' || pem[skip] == '\r' ||
			      pem[skip] == '\t'))
		skip++;
	if (len - skip < sizeof(begin) - 1 || memcmp(pem + skip, begin, sizeof(begin) - 1) != 0)
		return false;
	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio)
		return false;
	pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (pkey) {
		ok = true;
		while ((n = BIO_read(bio, rest, (int)sizeof(rest))) > 0) {
			for (i = 0; i < n; i++) {
				if (!strchr(" \t\r\n", rest[i]) || rest[i] == '\0')
					ok = false;
			}
		}
	}
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	return ok;
}

static int load_keys(struct sim *sim, const char *dir)
{
	struct dirent **names = NULL;
	int n, i, err = 0;

	n = scandir(dir, &names, pem_filter, alphasort);
	if (n < 0) {
		fprintf(stderr, "camsim: %s: %s\n", dir, strerror(errno));
		return -errno;
	}
	if (n == 0 || n > SIM_KEYS_MAX) {
		fprintf(stderr, "camsim: %s: need 1 to %d *.pem files, found %d\n", dir,
			SIM_KEYS_MAX, n);
		err = -EINVAL;
	}
	sim->keys = sim_xcalloc((size_t)(n > 0 ? n : 1), sizeof(char *));
	for (i = 0; i < n; i++) {
		char path[4096];
		size_t len;

		if (!err) {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
			err = read_file(path, SIM_PEM_MAX_BYTES, &sim->keys[sim->n_keys], &len);
			if (err)
				fprintf(stderr, "camsim: %s: %s\n", path, strerror(-err));
			else if (!pem_is_public_key(sim->keys[sim->n_keys++], len)) {
				fprintf(stderr, "camsim: %s: not a PEM public key\n", path);
				err = -EINVAL;
			}
		}
		free(names[i]);
	}
	free(names);
	return err;
}

static void sim_init(struct sim *sim, const struct sim_config *config, uint64_t seed)
{
	pthread_mutex_init(&sim->lock, NULL);
	atomic_init(&sim->stopping, 0);
	sim->config = *config;
	sim->rng = seed;
	sim->mono0_us = mono_us();
	sim->wall0_ms = wall_ms();
	sim->nonces = sim_xcalloc(SIM_NONCE_MAX, sizeof(*sim->nonces));
	sim->nonce_buckets = sim_xcalloc(SIM_NONCE_BUCKETS, sizeof(*sim->nonce_buckets));
	nonces_clear(sim);
	sim->served = sim_xcalloc(SIM_QUOTA_MAX, sizeof(*sim->served));
	sim->arrivals = sim_xcalloc(SIM_ARRIVALS_MAX, sizeof(*sim->arrivals));
	ctable_init(&sim->phones, SIM_PHONE_SLOTS, SIM_PHONE_MAX_DIGITS + 1, SIM_PHONES_MAX);
	ctable_init(&sim->custspaces, SIM_CUSTSPACE_SLOTS, SIM_CUSTSPACE_MAX_LEN + 1,
		    SIM_CUSTSPACES_MAX);
}

static void sim_fini(struct sim *sim)
{
	size_t i;

	for (i = 0; i < sim->n_keys; i++)
		free(sim->keys[i]);
	free(sim->keys);
	free(sim->nonces);
	free(sim->nonce_buckets);
	free(sim->served);
	free(sim->arrivals);
	ctable_fini(&sim->phones);
	ctable_fini(&sim->custspaces);
	if (sim->access_key_secret)
		sim_wipe(sim->access_key_secret, strlen(sim->access_key_secret));
	if (sim->security_token)
		sim_wipe(sim->security_token, strlen(sim->security_token));
	free(sim->access_key_id);
	free(sim->access_key_secret);
	free(sim->security_token);
	pthread_mutex_destroy(&sim->lock);
}

static int load_credential(struct sim *sim)
{
	const char *id = getenv("ALIBABA_CLOUD_ACCESS_KEY_ID");
	const char *secret = getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET");
	const char *token = getenv("ALIBABA_CLOUD_SECURITY_TOKEN");

	if (!id || !id[0] || !secret || !secret[0]) {
		fprintf(stderr, "camsim: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
				"ALIBABA_CLOUD_ACCESS_KEY_SECRET in the environment\n");
		return -ENOENT;
	}
	if (strlen(id) > SIMSIG_ACCESS_KEY_ID_MAX || strlen(secret) > SIM_ACCESS_KEY_SECRET_MAX ||
	    (token && strlen(token) > SIM_SECURITY_TOKEN_MAX)) {
		fprintf(stderr, "camsim: credential too long\n");
		return -EINVAL;
	}
	sim->access_key_id = sim_xstrdup(id);
	sim->access_key_secret = sim_xstrdup(secret);
	sim->security_token = token && token[0] ? sim_xstrdup(token) : NULL;
	return 0;
}

static int parse_listen(const char *s, struct sockaddr_in *ret, char *host, size_t host_size)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (!colon || (size_t)(colon - s) >= host_size)
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (sim_str_to_u64(colon + 1, 0, 65535, &port) < 0)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	ret->sin_family = AF_INET;
	ret->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &ret->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: camsim [--listen 127.0.0.1:PORT] [--quota N] [--latency-ms N] "
	      "[--jitter-ms N]\n"
	      "              [--processing-ms MIN[:MAX]] [--keys-dir DIR] "
	      "[--tls-cert FILE --tls-key FILE]\n"
	      "              [--seed N] [--verbose]\n"
	      "       camsim --self-test VECTORS_DIR\n"
	      "Credentials: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,\n"
	      "ALIBABA_CLOUD_SECURITY_TOKEN (optional) from the environment.\n",
	      f);
}

struct options {
	const char *listen;
	const char *keys_dir;
	const char *tls_cert;
	const char *tls_key;
	const char *self_test;
	struct sim_config config;
	uint64_t seed;
	bool verbose;
};

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "quota", required_argument, NULL, 'q' },
		{ "latency-ms", required_argument, NULL, 'L' },
		{ "jitter-ms", required_argument, NULL, 'j' },
		{ "processing-ms", required_argument, NULL, 'P' },
		{ "self-test", required_argument, NULL, 'T' },
		{ "keys-dir", required_argument, NULL, 'k' },
		{ "tls-cert", required_argument, NULL, 'c' },
		{ "tls-key", required_argument, NULL, 'K' },
		{ "seed", required_argument, NULL, 's' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int ch;

	while ((ch = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			o->listen = optarg;
			break;
		case 'q':
			if (sim_str_to_u64(optarg, 1, SIM_QUOTA_MAX, &v) < 0)
				goto bad_value;
			o->config.quota = (unsigned)v;
			break;
		case 'L':
			if (sim_str_to_u64(optarg, 0, SIM_DELAY_MAX_MS, &v) < 0)
				goto bad_value;
			o->config.latency_ms = (unsigned)v;
			break;
		case 'j':
			if (sim_str_to_u64(optarg, 0, SIM_DELAY_MAX_MS, &v) < 0)
				goto bad_value;
			o->config.jitter_ms = (unsigned)v;
			break;
		case 'P':
			if (parse_range_ms(optarg, &o->config.processing_min_ms,
					   &o->config.processing_max_ms) < 0)
				goto bad_value;
			break;
		case 'T':
			o->self_test = optarg;
			break;
		case 'k':
			o->keys_dir = optarg;
			break;
		case 'c':
			o->tls_cert = optarg;
			break;
		case 'K':
			o->tls_key = optarg;
			break;
		case 's':
			if (sim_str_to_u64(optarg, 0, UINT64_MAX, &o->seed) < 0)
				goto bad_value;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc || (!o->tls_cert != !o->tls_key)) {
		usage(stderr);
		return -EINVAL;
	}
	return 0;
bad_value:
	fprintf(stderr, "camsim: bad value %s\n", optarg);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	static struct sim sim; /* large; static keeps it off the stack */
	struct options o = {
		.listen = "127.0.0.1:0",
		.keys_dir = "tests/data/sim-keys",
		.config = { .quota = 5, .latency_ms = 0, .jitter_ms = 0 },
		.seed = 1,
	};
	struct MHD_OptionItem opts[10];
	struct sockaddr_in addr;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	char host[64], *cert = NULL, *key = NULL;
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_ERROR_LOG;
	sigset_t set;
	size_t n = 0, len;
	int sig = 0, rc = 1;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (o.self_test)
		return selftest_run(o.self_test);
	if (parse_listen(o.listen, &addr, host, sizeof(host)) < 0) {
		fprintf(stderr, "camsim: --listen wants IPV4:PORT, got %s\n", o.listen);
		return 2;
	}
	sim_init(&sim, &o.config, o.seed);
	sim.verbose = o.verbose;
	if (load_credential(&sim) < 0 || load_keys(&sim, o.keys_dir) < 0)
		goto out_fini;
	if (o.tls_cert) {
		if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
			fprintf(stderr, "camsim: this libmicrohttpd has no TLS support\n");
			goto out_fini;
		}
		if (read_file(o.tls_cert, SIM_TLS_FILE_MAX_BYTES, &cert, &len) < 0 ||
		    read_file(o.tls_key, SIM_TLS_FILE_MAX_BYTES, &key, &len) < 0) {
			fprintf(stderr, "camsim: cannot read --tls-cert / --tls-key\n");
			goto out_fini;
		}
		flags |= MHD_USE_TLS;
	}

	/* Threads started from here on inherit the blocked signals. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (MHD_is_feature_supported(MHD_FEATURE_POLL))
		flags |= MHD_USE_POLL;

	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_SOCK_ADDR, 0, &addr };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed,
					     NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT, SIM_CONNECTION_LIMIT,
					     NULL };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL };
	if (cert) {
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, cert };
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, key };
	}
	opts[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };

	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, &sim, MHD_OPTION_ARRAY, opts,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "camsim: cannot listen on %s\n", o.listen);
		goto out_fini;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	printf("camsim listening on %s:%u\n", host, info ? (unsigned)info->port : 0U);
	fflush(stdout);
	sim_log(SIM_LOG_INFO, "sim_start",
		 "listen=%s:%u keys=%zu quota=%u latency_ms=%u jitter_ms=%u "
		 "processing_ms=%u:%u seed=%llu tls=%s",
		 host, info ? (unsigned)info->port : 0U, sim.n_keys, o.config.quota,
		 o.config.latency_ms, o.config.jitter_ms, o.config.processing_min_ms,
		 o.config.processing_max_ms, (unsigned long long)o.seed,
		 cert ? "yes" : "no");

	while (sigwait(&set, &sig) != 0)
		;
	atomic_store(&sim.stopping, 1);
	MHD_stop_daemon(d);
	sim_log(SIM_LOG_INFO, "sim_stop", "signal=%d", sig);
	rc = 0;
out_fini:
	if (key) {
		sim_wipe(key, strlen(key));
		free(key);
	}
	free(cert);
	sim_fini(&sim);
	return rc;
}
