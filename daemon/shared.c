/*
 * shared.c -- the second cache tier and cross-host flights on Redis (see
 * shared.h): entry records, the four scripts, notices, key names.
 *
 * Each operation is one EVAL of a short script (atomic on the server, and
 * no script cache to lose: a SCRIPT FLUSH or a restarted server changes
 * nothing here). The record of an entry is text framed by lengths, so it is
 * binary safe and every field is checked on the way back in:
 *
 *   "CKE1" then, in order, LEN ":" BYTES "\n" for: cust_space_id, phone,
 *   kind (0 key, 1 negative), http_status, status, code, etag, request_id,
 *   lifetime_s, pem ("" when none), body.
 *
 * Owns nothing between calls but the cookies of commands in progress.
 * Logs: nothing. Threads: the owner of the struct redis.
 */
#include "shared.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "route.h"
#include "span.h"

#define RECORD_MAGIC "CKE1"
#define RECORD_FIELDS 11
#define KEY_NAME_MAX (sizeof(REDIS_KEY_PREFIX) + REDIS_NAME_MAX + LIMIT_CUST_SPACE_ID_MAX + \
		      LIMIT_PHONE_MAX_DIGITS + 16)

/*
 * claim: KEYS entry, lease; ARGV token, lease_ms, min_pttl_ms, take ("1"/"0").
 * {1, value, pttl} hit; {2} owned; {3, lease_pttl} held; {4} absent.
 */
static const char claim_lua[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"if v then\n"
	"  local t = redis.call('PTTL', KEYS[1])\n"
	"  if t >= tonumber(ARGV[3]) then return {1, v, t} end\n"
	"end\n"
	"if ARGV[4] ~= '1' then return {4} end\n"
	"if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end\n"
	"return {3, redis.call('PTTL', KEYS[2])}\n";

/* fill: KEYS entry, lease; ARGV value, px ("0": store nothing), token ("": none), channel, notice. */
static const char fill_lua[] =
	"if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end\n"
	"if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then\n"
	"  redis.call('DEL', KEYS[2])\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
	"return 1\n";

/* release: KEYS lease; ARGV token, channel, notice. */
static const char release_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
	"redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
	"return 1\n";

/* purge: KEYS entry; ARGV channel, notice. */
static const char purge_lua[] =
	"redis.call('DEL', KEYS[1])\n"
	"redis.call('PUBLISH', ARGV[1], ARGV[2])\n"
	"return 1\n";

/* ---- names ---- */

/* A key as route.c accepts it from a caller: the one rule for a key. */
static bool key_ok(const struct cams_key *key)
{
	size_t nc = strnlen(key->cust_space_id, sizeof(key->cust_space_id));
	struct route_error err;
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	return route_set_phone(key->phone, strnlen(key->phone, sizeof(key->phone)), &k, &err) == 0 &&
	       (nc == 0 || route_set_cust_space_id(key->cust_space_id, nc, &k, &err) == 0);
}

/* camskeyd:v1:{SCOPE}:KIND:CUST:PHONE */
static int key_name(const char *scope, char kind, const struct cams_key *key, char *out,
		    size_t size)
{
	int n;

	if (!scope || !redis_name_ok(scope, strlen(scope)) || !key_ok(key))
		return -EINVAL;
	n = snprintf(out, size, REDIS_KEY_PREFIX "{%s}:%c:%s:%s", scope, kind, key->cust_space_id,
		     key->phone);
	return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

int shared_channel(const char *scope, char *out, size_t size)
{
	int n;

	if (!scope || !redis_name_ok(scope, strlen(scope)))
		return -EINVAL;
	n = snprintf(out, size, REDIS_KEY_PREFIX "{%s}:n", scope);
	return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

/* ---- records ---- */

static void add_field(struct buf *out, const char *data, size_t len)
{
	buf_printf(out, "%zu:", len);
	buf_add(out, data, len);
	buf_adds(out, "\n");
}

static void add_field_str(struct buf *out, const char *s)
{
	add_field(out, s, strlen(s));
}

static void add_field_i64(struct buf *out, int64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRId64, v);
	add_field_str(out, text);
}

int shared_entry_encode(const struct cache_entry *e, struct buf *out)
{
	int64_t lifetime = e->expires_at_s - e->fetched_at_s;

	if (!key_ok(&e->key) || (e->kind != CACHE_KIND_KEY && e->kind != CACHE_KIND_NEGATIVE) ||
	    !e->body || e->body_len > LIMIT_BODY_MAX_BYTES || lifetime < 0 ||
	    (e->pem && strlen(e->pem) > LIMIT_PEM_MAX_BYTES))
		return -EINVAL;
	buf_adds(out, RECORD_MAGIC);
	add_field_str(out, e->key.cust_space_id);
	add_field_str(out, e->key.phone);
	add_field_i64(out, e->kind == CACHE_KIND_NEGATIVE ? 1 : 0);
	add_field_i64(out, e->http_status);
	add_field_str(out, e->status);
	add_field_str(out, e->code);
	add_field_str(out, e->etag);
	add_field_str(out, e->request_id);
	add_field_i64(out, lifetime);
	add_field_str(out, e->pem ? e->pem : "");
	add_field(out, e->body, e->body_len);
	return buf_error(out) ? -EINVAL : 0;
}

/* The next LEN:BYTES\n of *s, at most max bytes; false if malformed. */
static bool next_field(struct span *s, size_t max, struct span *ret)
{
	size_t len = 0, i = 0;

	while (i < s->len && s->p[i] >= '0' && s->p[i] <= '9' && i < 9) {
		len = len * 10 + (size_t)(s->p[i] - '0');
		i++;
	}
	if (i == 0 || i >= s->len || s->p[i] != ':' || (i > 1 && s->p[0] == '0'))
		return false;
	i++;
	if (len > max || s->len - i < len + 1 || s->p[i + len] != '\n')
		return false;
	*ret = span_make(s->p + i, len);
	s->p += i + len + 1;
	s->len -= i + len + 1;
	return true;
}

/* A field into a fixed buffer (NUL-terminated, no NUL inside). */
static bool copy_field(struct span f, char *out, size_t size)
{
	if (f.len >= size || memchr(f.p, '\0', f.len))
		return false;
	memcpy(out, f.p, f.len);
	out[f.len] = '\0';
	return true;
}

static bool field_i64(struct span f, int64_t min, int64_t max, int64_t *ret)
{
	uint64_t v;
	bool neg = f.len > 0 && f.p[0] == '-';

	if (neg)
		f = span_make(f.p + 1, f.len - 1);
	if (f.len == 0 || span_to_u64(f, 0, UINT64_C(1) << 62, &v) < 0)
		return false;
	*ret = neg ? -(int64_t)v : (int64_t)v;
	return *ret >= min && *ret <= max;
}

static bool hex_lower(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int shared_entry_decode(const char *data, size_t len, const struct cams_key *key,
			int64_t pttl_ms, int64_t now_s, struct cache_entry **ret)
{
	struct span s = span_make(data, len), f[RECORD_FIELDS];
	static const size_t max[RECORD_FIELDS] = {
		LIMIT_CUST_SPACE_ID_MAX, LIMIT_PHONE_MAX_DIGITS, 1, 3, LIMIT_STATUS_MAX,
		LIMIT_CODE_MAX, LIMIT_SHA256_HEX - 1, LIMIT_REQUEST_ID_MAX, 20, LIMIT_PEM_MAX_BYTES,
		LIMIT_BODY_MAX_BYTES,
	};
	struct cams_key k;
	struct cache_entry *e;
	char status[LIMIT_STATUS_MAX + 1], code[LIMIT_CODE_MAX + 1], etag[LIMIT_SHA256_HEX];
	char request_id[LIMIT_REQUEST_ID_MAX + 1], *pem = NULL;
	int64_t kind, http_status, lifetime;

	if (pttl_ms < 0 || len < 4 || memcmp(data, RECORD_MAGIC, 4) != 0)
		return -EINVAL;
	s.p += 4;
	s.len -= 4;
	for (int i = 0; i < RECORD_FIELDS; i++)
		if (!next_field(&s, max[i], &f[i]))
			return -EINVAL;
	memset(&k, 0, sizeof(k));
	if (s.len != 0 || !copy_field(f[0], k.cust_space_id, sizeof(k.cust_space_id)) ||
	    !copy_field(f[1], k.phone, sizeof(k.phone)) || !key_ok(&k) ||
	    !cams_key_equal(&k, key) || !field_i64(f[2], 0, 1, &kind) ||
	    !field_i64(f[3], 200, 599, &http_status) || !copy_field(f[4], status, sizeof(status)) ||
	    !copy_field(f[5], code, sizeof(code)) || !copy_field(f[6], etag, sizeof(etag)) ||
	    !hex_lower(etag, strlen(etag)) || (etag[0] && strlen(etag) != LIMIT_SHA256_HEX - 1) ||
	    !copy_field(f[7], request_id, sizeof(request_id)) ||
	    !field_i64(f[8], 0, INT64_C(10) * 365 * 86400, &lifetime) || f[10].len == 0 ||
	    memchr(f[9].p, '\0', f[9].len))
		return -EINVAL;
	/* A key has a fingerprint and a 200; a negative entry has neither. */
	if (kind == 0 ? (!etag[0] || http_status != 200) : (etag[0] || http_status == 200))
		return -EINVAL;
	if (f[9].len > 0) {
		pem = xmalloc(f[9].len + 1);
		memcpy(pem, f[9].p, f[9].len);
		pem[f[9].len] = '\0';
	}
	e = cache_entry_new(&k, pem, f[10].p, f[10].len);
	free(pem);
	e->kind = kind == 1 ? CACHE_KIND_NEGATIVE : CACHE_KIND_KEY;
	e->http_status = (int)http_status;
	memcpy(e->status, status, sizeof(status));
	memcpy(e->code, code, sizeof(code));
	memcpy(e->etag, etag, sizeof(etag));
	memcpy(e->request_id, request_id, sizeof(request_id));
	/* Redis's clock says how long it has left: carried over, rounded down. */
	e->expires_at_s = now_s + pttl_ms / 1000;
	e->fetched_at_s = e->expires_at_s - lifetime;
	if (e->fetched_at_s > now_s)
		e->fetched_at_s = now_s;
	atomic_store(&e->last_used_s, now_s);
	*ret = e;
	return 0;
}

/* ---- notices ---- */

static const char *const notice_names[] = {
	[SHARED_NOTICE_FILL] = "fill",
	[SHARED_NOTICE_FREE] = "free",
	[SHARED_NOTICE_PURGE] = "purge",
};

static void notice_text(struct buf *out, enum shared_notice_kind kind, const char *host_id,
			const char *etag, const struct cams_key *key)
{
	buf_printf(out, "%s %s %s %s:%s", notice_names[kind], host_id, etag && *etag ? etag : "-",
		   key->cust_space_id, key->phone);
}

int shared_notice_parse(const char *data, size_t len, struct shared_notice *ret)
{
	struct span s = span_make(data, len), kind, host, etag, key, cust, phone;
	struct shared_notice n;

	memset(&n, 0, sizeof(n));
	/* A NUL would cut the key short in key_ok's strnlen: another key. */
	if ((len && memchr(data, '\0', len)) || !span_split(s, ' ', &kind, &s) ||
	    !span_split(s, ' ', &host, &s) ||
	    !span_split(s, ' ', &etag, &key) || memchr(key.p, ' ', key.len))
		return -EINVAL;
	if (span_eq(kind, "fill"))
		n.kind = SHARED_NOTICE_FILL;
	else if (span_eq(kind, "free"))
		n.kind = SHARED_NOTICE_FREE;
	else if (span_eq(kind, "purge"))
		n.kind = SHARED_NOTICE_PURGE;
	else
		return -EINVAL;
	if (!redis_name_ok(host.p, host.len))
		return -EINVAL;
	memcpy(n.host_id, host.p, host.len);
	if (!(etag.len == 1 && etag.p[0] == '-')) {
		if (etag.len != LIMIT_SHA256_HEX - 1 || !hex_lower(etag.p, etag.len))
			return -EINVAL;
		memcpy(n.etag, etag.p, etag.len);
	}
	/* CUST:PHONE, CUST possibly empty; the phone is after the last ':' */
	{
		const char *colon = NULL;

		for (size_t i = 0; i < key.len; i++)
			if (key.p[i] == ':')
				colon = key.p + i;
		if (!colon)
			return -EINVAL;
		cust = span_make(key.p, (size_t)(colon - key.p));
		phone = span_make(colon + 1, key.len - cust.len - 1);
	}
	if (cust.len > LIMIT_CUST_SPACE_ID_MAX || phone.len < 1 ||
	    phone.len > LIMIT_PHONE_MAX_DIGITS)
		return -EINVAL;
	memcpy(n.key.cust_space_id, cust.p, cust.len);
	memcpy(n.key.phone, phone.p, phone.len);
	if (!key_ok(&n.key))
		return -EINVAL;
	*ret = n;
	return 0;
}

/* ---- the scripts ---- */

struct op {
	shared_claim_fn *claim_cb;
	shared_done_fn *done_cb;
	void *cookie;
	struct cams_key key;
	int64_t now_s;
};

static int eval(struct redis *r, const char *script, int n_keys, const char *const *args,
		const size_t *lens, int n_args, int64_t now_us, redis_reply_fn *cb, struct op *op)
{
	const char *argv[REDIS_COMMAND_ARGS];
	size_t argvlen[REDIS_COMMAND_ARGS];
	char nk[8];
	int argc = 0, rc;

	if (n_args + 3 > REDIS_COMMAND_ARGS) {
		free(op);
		return -EINVAL;
	}
	snprintf(nk, sizeof(nk), "%d", n_keys);
	argv[argc] = "EVAL";
	argvlen[argc++] = 4;
	argv[argc] = script;
	argvlen[argc++] = strlen(script);
	argv[argc] = nk;
	argvlen[argc++] = strlen(nk);
	for (int i = 0; i < n_args; i++) {
		argv[argc] = args[i];
		argvlen[argc++] = lens ? lens[i] : strlen(args[i]);
	}
	rc = redis_command(r, argc, argv, argvlen, now_us, cb, op);
	if (rc < 0)
		free(op);
	return rc;
}

static const redisReply *element(const redisReply *r, size_t i, int type)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements || r->element[i]->type != type)
		return NULL;
	return r->element[i];
}

static void on_claim_reply(void *cookie, int error, const struct redisReply *reply,
			   const char *error_text)
{
	struct op *op = cookie;
	struct shared_claim c;
	const redisReply *flag, *value, *ttl;

	memset(&c, 0, sizeof(c));
	if (error != 0) {
		op->claim_cb(op->cookie, error, NULL, error_text);
		free(op);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		op->claim_cb(op->cookie, -EPROTO, NULL, reply->str ? reply->str : "error");
		free(op);
		return;
	}
	flag = element(reply, 0, REDIS_REPLY_INTEGER);
	switch (flag ? flag->integer : 0) {
	case 1:
		value = element(reply, 1, REDIS_REPLY_STRING);
		ttl = element(reply, 2, REDIS_REPLY_INTEGER);
		if (!value || !ttl ||
		    shared_entry_decode(value->str, value->len, &op->key, ttl->integer, op->now_s,
					&c.entry) < 0) {
			op->claim_cb(op->cookie, -EPROTO, NULL,
				     "redis: a shared entry that does not decode");
			free(op);
			return;
		}
		c.result = SHARED_CLAIM_HIT;
		break;
	case 2:
		c.result = SHARED_CLAIM_OWNED;
		break;
	case 3:
		ttl = element(reply, 1, REDIS_REPLY_INTEGER);
		c.result = SHARED_CLAIM_HELD;
		c.lease_left_ms = ttl && ttl->integer > 0 ? ttl->integer : 0;
		break;
	case 4:
		c.result = SHARED_CLAIM_ABSENT;
		break;
	default:
		op->claim_cb(op->cookie, -EPROTO, NULL, "redis: the claim script answered an unexpected shape");
		free(op);
		return;
	}
	op->claim_cb(op->cookie, 0, &c, NULL);
	free(op);
}

int shared_claim(struct redis *r, const char *scope, const struct cams_key *key,
		 const char *token, unsigned lease_ms, unsigned min_pttl_ms, bool take_lease,
		 int64_t now_us, int64_t now_s, shared_claim_fn *cb, void *cookie)
{
	char ke[KEY_NAME_MAX], kl[KEY_NAME_MAX], lease[16], min_pttl[16];
	struct op *op;

	if (!cb || !token || !*token || strlen(token) > SHARED_TOKEN_MAX || lease_ms == 0 ||
	    key_name(scope, 'e', key, ke, sizeof(ke)) < 0 ||
	    key_name(scope, 'l', key, kl, sizeof(kl)) < 0)
		return -EINVAL;
	snprintf(lease, sizeof(lease), "%u", lease_ms);
	snprintf(min_pttl, sizeof(min_pttl), "%u", min_pttl_ms);
	op = xcalloc(1, sizeof(*op));
	op->claim_cb = cb;
	op->cookie = cookie;
	op->key = *key;
	op->now_s = now_s;
	{
		const char *args[] = { ke, kl, token, lease, min_pttl, take_lease ? "1" : "0" };

		return eval(r, claim_lua, 2, args, NULL, 6, now_us, on_claim_reply, op);
	}
}

static void on_done_reply(void *cookie, int error, const struct redisReply *reply,
			  const char *error_text)
{
	struct op *op = cookie;

	if (op->done_cb) {
		if (error == 0 && reply->type == REDIS_REPLY_ERROR)
			op->done_cb(op->cookie, -EPROTO, reply->str ? reply->str : "error");
		else
			op->done_cb(op->cookie, error, error_text);
	}
	free(op);
}

static struct op *done_op(shared_done_fn *cb, void *cookie)
{
	struct op *op = xcalloc(1, sizeof(*op));

	op->done_cb = cb;
	op->cookie = cookie;
	return op;
}

int shared_fill(struct redis *r, const char *scope, const struct cache_entry *e,
		const char *token, const char *host_id, int64_t now_us, int64_t now_s,
		shared_done_fn *cb, void *cookie)
{
	char ke[KEY_NAME_MAX], kl[KEY_NAME_MAX], channel[REDIS_NAME_MAX + 32], px[24];
	int64_t left_ms = (e->expires_at_s - now_s) * 1000;
	struct buf value, notice;
	int rc;

	if (!host_id || !redis_name_ok(host_id, strlen(host_id)) ||
	    (token && strlen(token) > SHARED_TOKEN_MAX) ||
	    key_name(scope, 'e', &e->key, ke, sizeof(ke)) < 0 ||
	    key_name(scope, 'l', &e->key, kl, sizeof(kl)) < 0 ||
	    shared_channel(scope, channel, sizeof(channel)) < 0)
		return -EINVAL;
	buf_init(&value, LIMIT_BODY_MAX_BYTES + LIMIT_PEM_MAX_BYTES + 4096);
	if (shared_entry_encode(e, &value) < 0) {
		buf_free(&value);
		return -EINVAL;
	}
	buf_init(&notice, 512);
	notice_text(&notice, SHARED_NOTICE_FILL, host_id, e->kind == CACHE_KIND_KEY ? e->etag : "",
		    &e->key);
	snprintf(px, sizeof(px), "%" PRId64, left_ms > 0 ? left_ms : 0);
	{
		const char *args[] = { ke, kl, buf_str(&value), px, token ? token : "", channel,
				       buf_str(&notice) };
		size_t lens[] = { strlen(ke), strlen(kl), value.len, strlen(px),
				  token ? strlen(token) : 0, strlen(channel), notice.len };

		rc = eval(r, fill_lua, 2, args, lens, 7, now_us, on_done_reply, done_op(cb, cookie));
	}
	buf_free(&value);
	buf_free(&notice);
	return rc;
}

int shared_release(struct redis *r, const char *scope, const struct cams_key *key,
		   const char *token, const char *host_id, int64_t now_us, shared_done_fn *cb,
		   void *cookie)
{
	char kl[KEY_NAME_MAX], channel[REDIS_NAME_MAX + 32];
	struct buf notice;
	int rc;

	if (!token || !*token || strlen(token) > SHARED_TOKEN_MAX || !host_id ||
	    !redis_name_ok(host_id, strlen(host_id)) || key_name(scope, 'l', key, kl, sizeof(kl)) < 0 ||
	    shared_channel(scope, channel, sizeof(channel)) < 0)
		return -EINVAL;
	buf_init(&notice, 512);
	notice_text(&notice, SHARED_NOTICE_FREE, host_id, "", key);
	{
		const char *args[] = { kl, token, channel, buf_str(&notice) };

		rc = eval(r, release_lua, 1, args, NULL, 4, now_us, on_done_reply, done_op(cb, cookie));
	}
	buf_free(&notice);
	return rc;
}

int shared_purge(struct redis *r, const char *scope, const struct cams_key *key,
		 const char *host_id, int64_t now_us, shared_done_fn *cb, void *cookie)
{
	char ke[KEY_NAME_MAX], channel[REDIS_NAME_MAX + 32];
	struct buf notice;
	int rc;

	if (!host_id || !redis_name_ok(host_id, strlen(host_id)) ||
	    key_name(scope, 'e', key, ke, sizeof(ke)) < 0 ||
	    shared_channel(scope, channel, sizeof(channel)) < 0)
		return -EINVAL;
	buf_init(&notice, 512);
	notice_text(&notice, SHARED_NOTICE_PURGE, host_id, "", key);
	{
		const char *args[] = { ke, channel, buf_str(&notice) };

		rc = eval(r, purge_lua, 1, args, NULL, 3, now_us, on_done_reply, done_op(cb, cookie));
	}
	buf_free(&notice);
	return rc;
}
