/*
 * test_shared.c -- the shared cache tier: entry records, notices and names
 * (pure), then the four scripts against a private redis-server (see
 * redis_server.h), driven through a struct redis like the daemon's, with a
 * subscriber connection receiving the notices. Every loop is bounded.
 */
#include "redis_server.h"

#include "buf.h"
#include "cache.h"
#include "shared.h"

#define ETAG_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define PEM "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n"
#define BODY "{\"PublicKey\":\"x\"}"
#define NOW_S INT64_C(1700000000)

static struct cams_key key_of(const char *cust, const char *phone)
{
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	snprintf(k.cust_space_id, sizeof(k.cust_space_id), "%s", cust);
	snprintf(k.phone, sizeof(k.phone), "%s", phone);
	return k;
}

/* A key entry fetched at fetched_s, good until expires_s. */
static struct cache_entry *key_entry(const char *cust, const char *phone, int64_t fetched_s,
				     int64_t expires_s)
{
	struct cams_key k = key_of(cust, phone);
	struct cache_entry *e = cache_entry_new(&k, PEM, BODY, strlen(BODY));

	e->kind = CACHE_KIND_KEY;
	e->http_status = 200;
	snprintf(e->status, sizeof(e->status), "VALID");
	snprintf(e->code, sizeof(e->code), "OK");
	snprintf(e->etag, sizeof(e->etag), "%s", ETAG_A);
	snprintf(e->request_id, sizeof(e->request_id), "req-1");
	e->fetched_at_s = fetched_s;
	e->expires_at_s = expires_s;
	return e;
}

static struct cache_entry *negative_entry(const char *cust, const char *phone,
					  int64_t fetched_s, int64_t expires_s)
{
	struct cams_key k = key_of(cust, phone);
	static const char body[] = "{\"Code\":\"NotFound\"}";
	struct cache_entry *e = cache_entry_new(&k, NULL, body, strlen(body));

	e->kind = CACHE_KIND_NEGATIVE;
	e->http_status = 404;
	snprintf(e->code, sizeof(e->code), "NotFound");
	snprintf(e->request_id, sizeof(e->request_id), "req-2");
	e->fetched_at_s = fetched_s;
	e->expires_at_s = expires_s;
	return e;
}

static bool same_entry(const struct cache_entry *a, const struct cache_entry *b)
{
	return cams_key_equal(&a->key, &b->key) && a->kind == b->kind &&
	       a->http_status == b->http_status && strcmp(a->status, b->status) == 0 &&
	       strcmp(a->code, b->code) == 0 && strcmp(a->etag, b->etag) == 0 &&
	       strcmp(a->request_id, b->request_id) == 0 && !a->pem == !b->pem &&
	       (!a->pem || strcmp(a->pem, b->pem) == 0) && a->body_len == b->body_len &&
	       memcmp(a->body, b->body, a->body_len) == 0;
}

/* ---- records ---- */

TEST(a_key_entry_and_a_negative_entry_round_trip)
{
	struct cache_entry *in[3], *out = NULL;
	struct buf b;

	in[0] = key_entry("cust-1", "8613800138000", NOW_S - 100, NOW_S + 500);
	in[1] = negative_entry("cust-1", "8613800138001", NOW_S - 10, NOW_S + 50);
	in[2] = key_entry("", "12345", NOW_S - 100, NOW_S + 500); /* no CustSpaceId */
	for (int i = 0; i < 3; i++) {
		buf_init(&b, 65536);
		REQUIRE(shared_entry_encode(in[i], &b) == 0);
		REQUIRE(shared_entry_decode(buf_str(&b), b.len, &in[i]->key,
					    (in[i]->expires_at_s - NOW_S) * 1000, NOW_S, &out) == 0);
		CHECK(same_entry(in[i], out));
		CHECK(out->expires_at_s == in[i]->expires_at_s);
		CHECK(out->fetched_at_s == in[i]->fetched_at_s);
		CHECK(atomic_load(&out->last_used_s) == NOW_S);
		CHECK(atomic_load(&out->refs) == 1);
		cache_entry_unref(out);
		buf_free(&b);
		cache_entry_unref(in[i]);
	}
	CHECK(true);
}

TEST(an_entry_without_a_pem_decodes_without_one)
{
	struct cache_entry *e = key_entry("c", "12345", NOW_S, NOW_S + 60), *out = NULL;
	struct buf b;

	free(e->pem);
	e->pem = NULL;
	buf_init(&b, 65536);
	REQUIRE(shared_entry_encode(e, &b) == 0);
	REQUIRE(shared_entry_decode(buf_str(&b), b.len, &e->key, 60000, NOW_S, &out) == 0);
	CHECK(out->pem == NULL);
	CHECK(same_entry(e, out));
	cache_entry_unref(out);
	buf_free(&b);
	cache_entry_unref(e);
}

TEST(unstorable_entries_are_refused_by_encode)
{
	struct cache_entry *e = key_entry("c", "12345", NOW_S, NOW_S + 60);
	struct buf b;

	buf_init(&b, 65536);
	e->expires_at_s = NOW_S - 1; /* negative lifetime */
	CHECK(shared_entry_encode(e, &b) == -EINVAL);
	e->expires_at_s = NOW_S + 60;
	snprintf(e->key.phone, sizeof(e->key.phone), "12a45");
	CHECK(shared_entry_encode(e, &b) == -EINVAL);
	snprintf(e->key.phone, sizeof(e->key.phone), "12345");
	snprintf(e->key.cust_space_id, sizeof(e->key.cust_space_id), "a:b");
	CHECK(shared_entry_encode(e, &b) == -EINVAL);
	buf_free(&b);
	cache_entry_unref(e);
}

/* A record built field by field (11 fields), so any of them can be wrong. */
static void record(struct buf *b, const char *magic, const char *const f[11])
{
	buf_init(b, 65536);
	buf_adds(b, magic);
	for (int i = 0; i < 11; i++)
		buf_printf(b, "%zu:%s\n", strlen(f[i]), f[i]);
}

static int decode_fields(const char *const f[11], const char *cust, const char *phone)
{
	struct cams_key k = key_of(cust, phone);
	struct cache_entry *out = NULL;
	struct buf b;
	int rc;

	record(&b, "CKE1", f);
	rc = shared_entry_decode(buf_str(&b), b.len, &k, 60000, NOW_S, &out);
	cache_entry_unref(out);
	buf_free(&b);
	return rc;
}

TEST(decode_refuses_every_malformed_record)
{
	const char *good[11] = { "c", "12345", "0", "200", "VALID", "OK", ETAG_A, "r", "60", PEM,
				 BODY };
	const char *f[11];
	struct cams_key k = key_of("c", "12345");
	struct cache_entry *out = NULL;
	struct buf b;
	char *copy;

	CHECK(decode_fields(good, "c", "12345") == 0);
	/* bad magic */
	record(&b, "CKE2", good);
	CHECK(shared_entry_decode(buf_str(&b), b.len, &k, 60000, NOW_S, &out) == -EINVAL);
	buf_free(&b);
	/* every truncation, and trailing bytes */
	record(&b, "CKE1", good);
	for (size_t n = 0; n < b.len; n++)
		if (shared_entry_decode(buf_str(&b), n, &k, 60000, NOW_S, &out) != -EINVAL) {
			fprintf(stderr, "  a record cut at %zu of %zu decoded\n", n, b.len);
			CHECK(false);
			break;
		}
	copy = malloc(b.len + 2);
	REQUIRE(copy);
	memcpy(copy, buf_str(&b), b.len);
	copy[b.len] = 'x';
	copy[b.len + 1] = '\0'; /* for strstr below */
	CHECK(shared_entry_decode(copy, b.len + 1, &k, 60000, NOW_S, &out) == -EINVAL);
	/* a length past the end: the body's length one more than there is */
	{
		char *last = NULL;
		char len_text[16];

		snprintf(len_text, sizeof(len_text), "%zu:", strlen(BODY));
		for (char *p = copy; (p = strstr(p, len_text)) != NULL; p++)
			last = p;
		REQUIRE(last);
		last[strlen(len_text) - 2]++; /* 17 -> 18 */
		CHECK(shared_entry_decode(copy, b.len, &k, 60000, NOW_S, &out) == -EINVAL);
	}
	/* a negative PTTL */
	CHECK(shared_entry_decode(buf_str(&b), b.len, &k, -1, NOW_S, &out) == -EINVAL);
	free(copy);
	buf_free(&b);
	/* the key */
	CHECK(decode_fields(good, "c", "12346") == -EINVAL);
	CHECK(decode_fields(good, "", "12345") == -EINVAL);
	CHECK(decode_fields(good, "d", "12345") == -EINVAL);
#define WITH(i, v, expect)                                                             \
	do {                                                                           \
		memcpy(f, good, sizeof(f));                                            \
		f[i] = (v);                                                            \
		CHECK(decode_fields(f, "c", "12345") == (expect));                     \
	} while (0)
	WITH(1, "12a45", -EINVAL);
	/* kind and status out of range */
	WITH(2, "2", -EINVAL);
	WITH(2, "-1", -EINVAL);
	WITH(2, "", -EINVAL);
	WITH(3, "199", -EINVAL);
	WITH(3, "600", -EINVAL);
	WITH(3, "404", -EINVAL); /* a key is a 200 */
	/* bad etags */
	WITH(6, "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", -EINVAL);
	WITH(6, "0123456789abcdef", -EINVAL);
	WITH(6, "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", -EINVAL);
	/* a key without an etag */
	WITH(6, "", -EINVAL);
	/* the lifetime */
	WITH(8, "-5", -EINVAL);
	WITH(8, "x", -EINVAL);
	/* an empty body */
	WITH(10, "", -EINVAL);
	/* a negative entry: no etag, not a 200 */
	{
		const char *neg[11] = { "c", "12345", "1", "404", "", "NotFound", "", "r", "60", "",
					BODY };

		CHECK(decode_fields(neg, "c", "12345") == 0);
		memcpy(f, neg, sizeof(f));
		f[6] = ETAG_A;
		CHECK(decode_fields(f, "c", "12345") == -EINVAL);
		memcpy(f, neg, sizeof(f));
		f[3] = "200";
		CHECK(decode_fields(f, "c", "12345") == -EINVAL);
	}
#undef WITH
	/* a length with a leading zero */
	{
		struct buf z;

		buf_init(&z, 65536);
		buf_adds(&z, "CKE1");
		buf_adds(&z, "01:c\n");
		for (int i = 1; i < 11; i++)
			buf_printf(&z, "%zu:%s\n", strlen(good[i]), good[i]);
		CHECK(shared_entry_decode(buf_str(&z), z.len, &k, 60000, NOW_S, &out) == -EINVAL);
		buf_free(&z);
	}
}

TEST(decode_carries_the_pttl_rounded_down_and_never_extends_or_postdates)
{
	struct cache_entry *e = key_entry("c", "12345", NOW_S - 3600, NOW_S + 3600), *out = NULL;
	struct buf b;

	buf_init(&b, 65536);
	REQUIRE(shared_entry_encode(e, &b) == 0);
	/* 10.5 s left on Redis's clock: 10 s here, whatever the record's times said */
	REQUIRE(shared_entry_decode(buf_str(&b), b.len, &e->key, 10500, NOW_S, &out) == 0);
	CHECK(out->expires_at_s == NOW_S + 10);
	CHECK(out->fetched_at_s == NOW_S + 10 - 7200); /* the Age carries over */
	cache_entry_unref(out);
	REQUIRE(shared_entry_decode(buf_str(&b), b.len, &e->key, 999, NOW_S, &out) == 0);
	CHECK(out->expires_at_s == NOW_S);
	cache_entry_unref(out);
	buf_free(&b);
	/* a lifetime shorter than the PTTL (clocks apart): fetched_at is never after now */
	e->fetched_at_s = NOW_S;
	e->expires_at_s = NOW_S + 5;
	buf_init(&b, 65536);
	REQUIRE(shared_entry_encode(e, &b) == 0);
	REQUIRE(shared_entry_decode(buf_str(&b), b.len, &e->key, 10500, NOW_S, &out) == 0);
	CHECK(out->expires_at_s == NOW_S + 10);
	CHECK(out->fetched_at_s == NOW_S);
	cache_entry_unref(out);
	buf_free(&b);
	cache_entry_unref(e);
}

/* ---- notices and names ---- */

static int parse(const char *text, struct shared_notice *n)
{
	return shared_notice_parse(text, strlen(text), n);
}

TEST(notices_parse_and_malformed_ones_are_refused)
{
	struct shared_notice n;
	char long_host[200];
	static const char *const bad[] = {
		"",
		"fill",
		"fill host-a",
		"fill host-a " ETAG_A,
		"FILL host-a - c:12345",
		"drop host-a - c:12345",
		"fill host-a - c:12345 ",
		"fill  host-a - c:12345",
		"fill host/a - c:12345",
		"fill host-a x c:12345",
		"fill host-a 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef c:12345",
		"fill host-a 0123 c:12345",
		"fill host-a - 12345",
		"fill host-a - c:",
		"fill host-a - c:12a45",
		"fill host-a - c:123456789012345678901",
		"fill host-a - a:b:12345",
		"fill host-a - c d:12345",
		"purge host-a - c!:12345",
	};

	REQUIRE(parse("fill host-a " ETAG_A " cust.1:8613800138000", &n) == 0);
	CHECK(n.kind == SHARED_NOTICE_FILL);
	CHECK_STR(n.host_id, "host-a");
	CHECK_STR(n.etag, ETAG_A);
	CHECK_STR(n.key.cust_space_id, "cust.1");
	CHECK_STR(n.key.phone, "8613800138000");
	REQUIRE(parse("free h:1 - :12345", &n) == 0);
	CHECK(n.kind == SHARED_NOTICE_FREE);
	CHECK_STR(n.etag, "");
	CHECK_STR(n.key.cust_space_id, "");
	CHECK_STR(n.key.phone, "12345");
	REQUIRE(parse("purge h - c~x_y-z:12345", &n) == 0);
	CHECK(n.kind == SHARED_NOTICE_PURGE);
	CHECK_STR(n.key.cust_space_id, "c~x_y-z");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&n, 0x5a, sizeof(n));
		if (parse(bad[i], &n) != -EINVAL) {
			fprintf(stderr, "  accepted: [%s]\n", bad[i]);
			CHECK(false);
		}
		CHECK(((unsigned char *)&n)[0] == 0x5a); /* untouched on failure */
	}
	/* a NUL inside, a host id too long, a CustSpaceId too long */
	CHECK(shared_notice_parse("fill h - c:123\0" "45", 17, &n) == -EINVAL);
	memset(long_host, 'h', sizeof(long_host));
	snprintf(long_host + REDIS_NAME_MAX + 1, sizeof(long_host) - REDIS_NAME_MAX - 1,
		 " - c:12345");
	{
		char text[300];

		snprintf(text, sizeof(text), "free %s", long_host);
		CHECK(parse(text, &n) == -EINVAL);
		text[5 + REDIS_NAME_MAX] = '\0'; /* exactly REDIS_NAME_MAX: fine */
		snprintf(text + 5 + REDIS_NAME_MAX, sizeof(text) - 5 - REDIS_NAME_MAX, " - c:12345");
		CHECK(parse(text, &n) == 0);
		snprintf(text, sizeof(text), "free h - %.*s:12345", LIMIT_CUST_SPACE_ID_MAX + 1,
			 long_host);
		for (char *p = text + 9; *p == 'h'; p++)
			*p = 'c';
		CHECK(parse(text, &n) == -EINVAL);
	}
}

TEST(the_channel_name_carries_the_scope_as_a_hash_tag)
{
	char out[200], small[10];

	REQUIRE(shared_channel("prod-1", out, sizeof(out)) == 0);
	CHECK_STR(out, "camskeyd:v1:{prod-1}:n");
	CHECK(shared_channel("", out, sizeof(out)) == -EINVAL);
	CHECK(shared_channel(NULL, out, sizeof(out)) == -EINVAL);
	CHECK(shared_channel("a b", out, sizeof(out)) == -EINVAL);
	CHECK(shared_channel("a{b}", out, sizeof(out)) == -EINVAL);
	CHECK(shared_channel("prod-1", small, sizeof(small)) == -EINVAL);
}

/* ---- the scripts, against a server ---- */

struct claim_answer {
	int calls;
	int error;
	enum shared_claim_result result;
	struct cache_entry *entry;
	int64_t lease_left_ms;
	char text[200];
};

static void on_claim(void *cookie, int error, const struct shared_claim *c, const char *text)
{
	struct claim_answer *a = cookie;

	a->calls++;
	a->error = error;
	if (c) {
		a->result = c->result;
		a->entry = c->entry;
		a->lease_left_ms = c->lease_left_ms;
	}
	snprintf(a->text, sizeof(a->text), "%s", text ? text : "");
}

struct done_answer {
	int calls;
	int error;
	char text[200];
};

static void on_done(void *cookie, int error, const char *text)
{
	struct done_answer *a = cookie;

	a->calls++;
	a->error = error;
	snprintf(a->text, sizeof(a->text), "%s", text ? text : "");
}

/* The command connection and a subscriber on scope's channel, both READY. */
struct pair {
	struct redis *rs[2]; /* [0] commands, [1] subscriber */
	struct inbox in;
};

static bool pair_open(struct pair *p, const char *scope)
{
	char channel[200];

	memset(p, 0, sizeof(*p));
	if (shared_channel(scope, channel, sizeof(channel)) < 0)
		return false;
	p->rs[0] = client(sock_path, NULL, 1000);
	p->rs[1] = subscriber(sock_path, channel, 1000, on_message_cb, &p->in);
	return p->rs[0] && p->rs[1] && wait_ready(p->rs[0], 2000) && wait_ready(p->rs[1], 2000);
}

static void pair_close(struct pair *p)
{
	redis_free(p->rs[0]);
	redis_free(p->rs[1]);
}

/* Pump both until *calls is set (bounded: 2 s). */
static bool wait_calls(struct pair *p, const int *calls)
{
	int64_t end = clock_mono_us() + 2000000;

	for (int i = 0; i < 100000 && *calls == 0 && clock_mono_us() < end; i++) {
		pump_once(p->rs[0], clock_mono_us() + 10000);
		pump_once(p->rs[1], clock_mono_us() + 1000);
	}
	return *calls == 1;
}

/* Pump both until n notices came in (bounded: 2 s). */
static bool wait_notices(struct pair *p, int n)
{
	int64_t end = clock_mono_us() + 2000000;

	for (int i = 0; i < 100000 && p->in.n < n && clock_mono_us() < end; i++) {
		pump_once(p->rs[1], clock_mono_us() + 10000);
		pump_once(p->rs[0], clock_mono_us() + 1000);
	}
	return p->in.n >= n;
}

static int claim_sync(struct pair *p, const char *scope, const struct cams_key *k,
		      const char *token, unsigned lease_ms, unsigned min_pttl_ms, bool take,
		      struct claim_answer *a)
{
	int rc;

	memset(a, 0, sizeof(*a));
	rc = shared_claim(p->rs[0], scope, k, token, lease_ms, min_pttl_ms, take, clock_mono_us(),
			  clock_wall_s(), on_claim, a);
	if (rc < 0)
		return rc;
	return wait_calls(p, &a->calls) ? a->error : -999;
}

static int fill_sync(struct pair *p, const char *scope, const struct cache_entry *e,
		     const char *token, struct done_answer *a)
{
	int rc;

	memset(a, 0, sizeof(*a));
	rc = shared_fill(p->rs[0], scope, e, token, "host-a", clock_mono_us(), clock_wall_s(),
			 on_done, a);
	if (rc < 0)
		return rc;
	return wait_calls(p, &a->calls) ? a->error : -999;
}

/* A reply of a control connection to cmd (a format with one %s, the key). */
static long long control_int(const char *fmt, const char *key)
{
	redisContext *c = control(sock_path);
	redisReply *rep;
	long long v = -999;

	if (!c)
		return v;
	rep = redisCommand(c, fmt, key);
	if (rep && rep->type == REDIS_REPLY_INTEGER)
		v = rep->integer;
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return v;
}

static bool control_get(const char *key, char *out, size_t size)
{
	redisContext *c = control(sock_path);
	redisReply *rep;
	bool ok = false;

	if (!c)
		return false;
	rep = redisCommand(c, "GET %s", key);
	if (rep && rep->type == REDIS_REPLY_STRING) {
		snprintf(out, size, "%.*s", (int)rep->len, rep->str);
		ok = true;
	}
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return ok;
}

TEST(claim_is_absent_then_owned_then_held_and_a_lapsed_lease_can_be_owned)
{
	static const char scope[] = "sh-claim";
	struct cams_key k = key_of("c", "12345");
	struct claim_answer a;
	struct pair p;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 300, 0, false, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_ABSENT);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-claim}:l:c:12345") == 0);
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 300, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED);
	CHECK(claim_sync(&p, scope, &k, "host-b#1", 300, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_HELD);
	CHECK(a.lease_left_ms > 0 && a.lease_left_ms <= 300);
	/* the owner asking again is held too: a lease is taken once */
	CHECK(claim_sync(&p, scope, &k, "host-a#2", 300, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_HELD);
	pump_for(p.rs, 2, 400);
	CHECK(claim_sync(&p, scope, &k, "host-b#1", 300, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED);
	{
		char v[64];

		CHECK(control_get("camskeyd:v1:{sh-claim}:l:c:12345", v, sizeof(v)));
		CHECK_STR(v, "host-b#1");
	}
	/* arguments */
	CHECK(shared_claim(p.rs[0], scope, &k, "", 300, 0, true, clock_mono_us(), clock_wall_s(),
			   on_claim, &a) == -EINVAL);
	CHECK(shared_claim(p.rs[0], scope, &k, "t", 0, 0, true, clock_mono_us(), clock_wall_s(),
			   on_claim, &a) == -EINVAL);
	CHECK(shared_claim(p.rs[0], "bad scope", &k, "t", 300, 0, true, clock_mono_us(),
			   clock_wall_s(), on_claim, &a) == -EINVAL);
	pair_close(&p);
}

TEST(fill_stores_with_px_releases_only_its_own_lease_and_publishes_fill)
{
	static const char scope[] = "sh-fill";
	struct cams_key k = key_of("c", "12345"), k2 = key_of("", "67890");
	struct cache_entry *e, *e2;
	struct claim_answer a;
	struct done_answer d;
	long long pttl;
	int64_t now_s;
	struct pair p;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	now_s = clock_wall_s();
	e = key_entry("c", "12345", now_s - 40, now_s + 60);
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 5000, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED);
	CHECK(fill_sync(&p, scope, e, "host-a#1", &d) == 0);
	pttl = control_int("PTTL %s", "camskeyd:v1:{sh-fill}:e:c:12345");
	CHECK(pttl > 55000 && pttl <= 60000);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-fill}:l:c:12345") == 0);
	CHECK(wait_notices(&p, 1));
	CHECK_STR(p.in.msg[0], "fill host-a " ETAG_A " c:12345");
	{
		struct shared_notice n;

		CHECK(shared_notice_parse(p.in.msg[0], strlen(p.in.msg[0]), &n) == 0);
		CHECK(n.kind == SHARED_NOTICE_FILL && cams_key_equal(&n.key, &k));
	}
	/* every host now gets the entry, with the lifetime left and the Age */
	CHECK(claim_sync(&p, scope, &k, "host-b#1", 5000, 0, true, &a) == 0);
	REQUIRE(a.result == SHARED_CLAIM_HIT && a.entry);
	CHECK(same_entry(a.entry, e));
	now_s = clock_wall_s();
	CHECK(a.entry->expires_at_s <= e->expires_at_s && a.entry->expires_at_s >= now_s + 54);
	CHECK(a.entry->fetched_at_s <= now_s);
	CHECK(a.entry->expires_at_s - a.entry->fetched_at_s == 100);
	cache_entry_unref(a.entry);
	/* a fill with another's token leaves that lease alone */
	e2 = negative_entry("", "67890", now_s, now_s + 30);
	CHECK(claim_sync(&p, scope, &k2, "host-b#2", 5000, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED);
	CHECK(fill_sync(&p, scope, e2, "host-a#9", &d) == 0);
	CHECK(fill_sync(&p, scope, e2, NULL, &d) == 0);
	{
		char v[64];

		CHECK(control_get("camskeyd:v1:{sh-fill}:l::67890", v, sizeof(v)));
		CHECK_STR(v, "host-b#2");
	}
	CHECK(wait_notices(&p, 3));
	CHECK_STR(p.in.msg[1], "fill host-a - :67890");
	CHECK(claim_sync(&p, scope, &k2, "host-c#1", 5000, 0, false, &a) == 0);
	REQUIRE(a.result == SHARED_CLAIM_HIT && a.entry);
	CHECK(a.entry->kind == CACHE_KIND_NEGATIVE && same_entry(a.entry, e2));
	cache_entry_unref(a.entry);
	cache_entry_unref(e);
	cache_entry_unref(e2);
	pair_close(&p);
}

TEST(min_pttl_makes_a_short_lived_entry_absent)
{
	static const char scope[] = "sh-minpttl";
	struct cams_key k = key_of("c", "12345");
	struct cache_entry *e;
	struct claim_answer a;
	struct done_answer d;
	struct pair p;
	int64_t now_s = clock_wall_s();

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	e = key_entry("c", "12345", now_s, now_s + 3);
	CHECK(fill_sync(&p, scope, e, NULL, &d) == 0);
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 1000, 10000, false, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_ABSENT && !a.entry);
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 1000, 10000, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED); /* a refresh takes the lease */
	CHECK(claim_sync(&p, scope, &k, "host-a#2", 1000, 1000, false, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_HIT && a.entry);
	cache_entry_unref(a.entry);
	cache_entry_unref(e);
	pair_close(&p);
}

TEST(fill_with_no_lifetime_left_stores_nothing)
{
	static const char scope[] = "sh-expired";
	struct cams_key k = key_of("c", "12345");
	struct cache_entry *e;
	struct claim_answer a;
	struct done_answer d;
	struct pair p;
	int64_t now_s = clock_wall_s();

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	e = key_entry("c", "12345", now_s - 100, now_s);
	CHECK(fill_sync(&p, scope, e, NULL, &d) == 0);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-expired}:e:c:12345") == 0);
	e->expires_at_s = now_s - 10;
	CHECK(fill_sync(&p, scope, e, NULL, &d) == 0);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-expired}:e:c:12345") == 0);
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 1000, 0, false, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_ABSENT);
	cache_entry_unref(e);
	pair_close(&p);
}

TEST(release_frees_only_its_own_lease_and_purge_deletes_both_publishing)
{
	static const char scope[] = "sh-release";
	struct cams_key k = key_of("c", "12345");
	struct cache_entry *e;
	struct claim_answer a;
	struct done_answer d;
	struct pair p;
	int64_t now_s = clock_wall_s();

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 5000, 0, true, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_OWNED);
	memset(&d, 0, sizeof(d));
	REQUIRE(shared_release(p.rs[0], scope, &k, "host-b#1", "host-b", clock_mono_us(), on_done,
			       &d) == 0);
	CHECK(wait_calls(&p, &d.calls) && d.error == 0);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-release}:l:c:12345") == 1);
	memset(&d, 0, sizeof(d));
	REQUIRE(shared_release(p.rs[0], scope, &k, "host-a#1", "host-a", clock_mono_us(), on_done,
			       &d) == 0);
	CHECK(wait_calls(&p, &d.calls) && d.error == 0);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-release}:l:c:12345") == 0);
	CHECK(wait_notices(&p, 2));
	CHECK_STR(p.in.msg[0], "free host-b - c:12345");
	CHECK_STR(p.in.msg[1], "free host-a - c:12345");
	/* purge: the entry goes, a PURGE notice; cb may be NULL */
	e = key_entry("c", "12345", now_s, now_s + 60);
	CHECK(fill_sync(&p, scope, e, NULL, &d) == 0);
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-release}:e:c:12345") == 1);
	REQUIRE(shared_purge(p.rs[0], scope, &k, "host-c", clock_mono_us(), NULL, NULL) == 0);
	CHECK(wait_notices(&p, 4));
	CHECK_STR(p.in.msg[2], "fill host-a " ETAG_A " c:12345");
	CHECK_STR(p.in.msg[3], "purge host-c - c:12345");
	CHECK(control_int("EXISTS %s", "camskeyd:v1:{sh-release}:e:c:12345") == 0);
	CHECK(claim_sync(&p, scope, &k, "host-a#2", 1000, 0, false, &a) == 0);
	CHECK(a.result == SHARED_CLAIM_ABSENT);
	/* arguments */
	CHECK(shared_release(p.rs[0], scope, &k, "", "host-a", clock_mono_us(), NULL, NULL) ==
	      -EINVAL);
	CHECK(shared_purge(p.rs[0], scope, &k, "bad host", clock_mono_us(), NULL, NULL) ==
	      -EINVAL);
	cache_entry_unref(e);
	pair_close(&p);
}

TEST(an_entry_that_does_not_decode_is_an_eproto_claim)
{
	static const char scope[] = "sh-garbage";
	struct cams_key k = key_of("c", "12345");
	struct claim_answer a;
	struct pair p;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	REQUIRE(pair_open(&p, scope));
	REQUIRE(control_cmd(sock_path, "SET camskeyd:v1:{sh-garbage}:e:c:12345 garbage PX 10000"));
	CHECK(claim_sync(&p, scope, &k, "host-a#1", 1000, 0, true, &a) == -EPROTO);
	CHECK(a.calls == 1 && a.entry == NULL && a.text[0]);
	pair_close(&p);
}

TEST(a_claim_on_a_stopped_server_times_out_once)
{
	static const char scope[] = "sh-stall";
	struct cams_key k = key_of("c", "12345");
	struct claim_answer a;
	struct redis *r;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 200);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	REQUIRE(kill(main_pid, SIGSTOP) == 0);
	memset(&a, 0, sizeof(a));
	CHECK(shared_claim(r, scope, &k, "host-a#1", 1000, 0, true, clock_mono_us(),
			   clock_wall_s(), on_claim, &a) == 0);
	pump_for(&r, 1, 500);
	CHECK(a.calls == 1 && a.error == -ETIMEDOUT);
	REQUIRE(kill(main_pid, SIGCONT) == 0);
	CHECK(wait_ready(r, 3000));
	pump_for(&r, 1, 100);
	CHECK(a.calls == 1);
	CHECK(shared_claim(r, scope, &k, "host-a#1", 1000, 0, true, clock_mono_us(),
			   clock_wall_s(), on_claim, &a) == 0);
	redis_free(r); /* cancelled: called once more, with -ECANCELED */
	CHECK(a.calls == 2 && a.error == -ECANCELED);
}

int main(void)
{
	int rc;

	harness_seed_init();
	if (redis_server_setup("/tmp/camskeyd-shared-XXXXXX") < 0)
		return 1;
	snprintf(sock_path, sizeof(sock_path), "%s/redis.sock", tmpdir);

	RUN(a_key_entry_and_a_negative_entry_round_trip);
	RUN(an_entry_without_a_pem_decodes_without_one);
	RUN(unstorable_entries_are_refused_by_encode);
	RUN(decode_refuses_every_malformed_record);
	RUN(decode_carries_the_pttl_rounded_down_and_never_extends_or_postdates);
	RUN(notices_parse_and_malformed_ones_are_refused);
	RUN(the_channel_name_carries_the_scope_as_a_hash_tag);
	RUN(claim_is_absent_then_owned_then_held_and_a_lapsed_lease_can_be_owned);
	RUN(fill_stores_with_px_releases_only_its_own_lease_and_publishes_fill);
	RUN(min_pttl_makes_a_short_lived_entry_absent);
	RUN(fill_with_no_lifetime_left_stores_nothing);
	RUN(release_frees_only_its_own_lease_and_purge_deletes_both_publishing);
	RUN(an_entry_that_does_not_decode_is_an_eproto_claim);
	RUN(a_claim_on_a_stopped_server_times_out_once);
	rc = harness_done();
	redis_server_teardown();
	return rc;
}
