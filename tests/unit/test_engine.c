/*
 * test_engine.c -- unit tests for the engine (daemon/engine.h), written
 * against its contract: one upstream call per key, joiners queued and on
 * the wire, the limiter's spacing and sliding second, throttles (back-off,
 * re-signed retries at the head of the queue, callers who cannot wait),
 * background refreshes and callers joining them, departures, deadlines and
 * refusals with the predicted wait, the queue bound, stale fallbacks,
 * negative entries, weighted fair shares, reconfiguration and shutdown;
 * and for many hosts (issue #14) the gate (LOCAL, GRANTS, CLOSED), grants
 * used only within [send_at, latest], the quiet window after local sends,
 * failing closed, and claims in the shared tier (HIT, OWNED, HELD ->
 * REMOTE, UNAVAILABLE, stale claim numbers).
 *
 * Each test is a scenario driven by a fixture: a fake clock (now_us, and a
 * wall clock derived from it), a fake upstream that records every SEND and
 * answers flights by hand or by itself after a latency, and an array of
 * callers whose ANSWERs are counted. RESERVE and CLAIM actions are recorded
 * and answered by hand (fx_grant, fx_grant_failed, fx_claim) or by a policy
 * after a latency; the fixture mirrors the grants the engine may use and
 * flags a SEND under GRANTS with none due, a SEND while CLOSED, a RESERVE
 * within one window of a local send, more than grants_max_pending asked and
 * held. Every fixture ends with stop and abort and checks that every
 * submitted caller was answered exactly once.
 *
 * Times below assume the default settings: rate 5/s, burst 1, margin 0, so
 * calls are spaced 200 ms and a throttle pauses sends for 1 s. Randomized
 * tests use one seed, printed, taken from $TEST_SEED when set (default 1).
 */
#include "engine.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "mem.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
#define T0 (INT64_C(1000) * SEC)           /* an arbitrary monotonic start */
#define WALL0 INT64_C(1700000000)          /* the wall clock at T0 */
#define MAX_CALLERS 4096
#define MAX_SENDS 8192
#define MAX_WIRE 1024
#define LONG_WAIT_MS 600000u               /* a caller that waits for anything */
#define MAX_PENDING 256
#define MAX_CLAIM_LOG 16384

/* ---- the fixture ---------------------------------------------------------- */

enum fake_reply {
	FAKE_OK = 0,
	FAKE_NEGATIVE,
	FAKE_THROTTLED,
	FAKE_FAILED,
};

/* A flight on the wire: SEND drained, not yet answered. */
struct wire {
	struct flight *flight;
	struct cams_key key;
	int64_t sent_us;
	int64_t due_us;               /* the fake upstream answers then; INT64_MAX: by hand */
};

/* A SEND as the driver saw it. */
struct sent {
	struct cams_key key;
	unsigned attempts;
	bool background;
	int64_t at_us;
	int64_t quota_wait_us;
	const struct flight *flight;  /* identity only; may be freed since */
	enum engine_gate gate;        /* the gate when it was drained */
	bool lease_owned;
};

/* A RESERVE the driver took: answered by hand or by grant_policy at due_us. */
struct reserve {
	int64_t asked_us;
	int64_t due_us;               /* INT64_MAX: by hand */
};

/* A grant the engine was given and may use (the fixture's mirror of its held grants). */
struct grant_window {
	int64_t send_at_us, latest_us;
};

/* What grant_policy answers a RESERVE with. */
struct grant_reply {
	bool ok;
	int64_t send_at_us, latest_us; /* ok */
	int64_t retry_at_us;           /* !ok */
};

/* A CLAIM the driver took: answered by hand or by claim_policy at due_us. */
struct claim {
	struct cams_key key;
	uint64_t seq;
	bool background;
	int64_t asked_us;
	int64_t due_us;               /* INT64_MAX: by hand */
};

struct fx {
	struct engine *e;
	struct engine_settings s;
	int64_t now_us;
	int64_t ticked_at_us;         /* last tick with nothing happening since; -1 */

	struct engine_caller *callers;
	bool *submitted;
	unsigned *answers;
	int64_t *answered_us;
	size_t n_callers;

	struct sent *sends;
	size_t n_sends;
	size_t sends_hooked;
	struct wire wire[MAX_WIRE];
	size_t n_wire;

	unsigned stray_answers;       /* ANSWER naming no caller of ours */
	unsigned double_sends;        /* SEND of a key already on the wire */
	unsigned bad_actions;
	unsigned stalls;              /* next_wake <= now right after a tick at now */
	size_t sends_after_stop;
	bool stopped, aborted;

	/* the fake upstream answering by itself (latency_max_us > 0) */
	int64_t latency_min_us, latency_max_us;
	enum fake_reply (*policy)(struct fx *x, const struct wire *w);
	void (*on_send)(struct fx *x, const struct sent *s);
	bool in_hook;
	size_t until_sends;           /* fx_run_until stops at this many SENDs; 0: no */
	uint64_t replies;
	uint64_t throttles_sent;
	void *cls;                    /* for a test's hooks */

	/* many hosts: RESERVEs and CLAIMs, answered by hand or by the policies */
	struct reserve reserves[MAX_PENDING];   /* not answered yet, oldest first */
	size_t n_reserves;
	size_t reserves_total;
	int64_t last_reserve_us;
	struct claim claims[MAX_PENDING];       /* not answered yet, oldest first */
	size_t n_claims;
	struct claim *claim_log;                /* every CLAIM drained, in order */
	size_t claims_total;
	int64_t grant_latency_min_us, grant_latency_max_us;
	void (*grant_policy)(struct fx *x, struct grant_reply *ret);
	int64_t claim_latency_min_us, claim_latency_max_us;
	enum engine_claim (*claim_policy)(struct fx *x, const struct claim *c,
					  int64_t *ret_retry_at_us);
	struct grant_window live[MAX_PENDING];  /* grants the engine may still use */
	size_t n_live;
	unsigned grant_violations;    /* SEND under GRANTS with no grant due */
	unsigned sends_while_closed;
	unsigned reserves_early;      /* RESERVE within one window of a local send */
	unsigned reserves_over;       /* more grants asked + held than grants_max_pending */
	unsigned actions_after_abort; /* RESERVE or CLAIM drained after engine_abort */
	unsigned leases_released;     /* OWNED answers the engine refused */
	unsigned unavailable_while_open; /* SharedQuotaUnavailable with the gate not closed */
	int64_t last_local_send_us;   /* -1: none */
};

static struct engine_settings default_settings(void)
{
	struct engine_settings s;

	memset(&s, 0, sizeof(s));
	s.stale_while_revalidate_s = 30;
	s.stale_if_error_s = 3600;
	s.queue_max = 64;
	s.upstream_retries = 2;
	s.limiter.rate = 5;
	s.limiter.burst = 1;
	s.limiter.margin_ms = 0;
	for (unsigned i = 0; i < QUEUE_MAX_CLIENTS; i++)
		s.weights[i] = 1;
	return s;
}

static int64_t fx_now_s(const struct fx *x)
{
	return WALL0 + (x->now_us - T0) / SEC;
}

static struct fx *fx_new_with(const struct engine_settings *s)
{
	struct fx *x = xcalloc(1, sizeof(*x));

	x->s = *s;
	x->now_us = T0;
	x->ticked_at_us = -1;
	x->callers = xcalloc(MAX_CALLERS, sizeof(*x->callers));
	x->submitted = xcalloc(MAX_CALLERS, sizeof(*x->submitted));
	x->answers = xcalloc(MAX_CALLERS, sizeof(*x->answers));
	x->answered_us = xcalloc(MAX_CALLERS, sizeof(*x->answered_us));
	x->sends = xcalloc(MAX_SENDS, sizeof(*x->sends));
	x->claim_log = xcalloc(MAX_CLAIM_LOG, sizeof(*x->claim_log));
	x->last_reserve_us = -1;
	x->last_local_send_us = -1;
	x->e = engine_new(&x->s, x->now_us);
	return x;
}

static struct fx *fx_new(void)
{
	struct engine_settings s = default_settings();

	return fx_new_with(&s);
}

/* Keys: client's n-th phone number, so a key tells whose backlog it is in. */
static struct cams_key key_of(unsigned client, unsigned n)
{
	struct cams_key k;

	memset(&k, 0, sizeof(k));
	snprintf(k.phone, sizeof(k.phone), "861%02u%08u", client % 100, n);
	return k;
}

static unsigned client_of_key(const struct cams_key *k)
{
	return (unsigned)(k->phone[3] - '0') * 10 + (unsigned)(k->phone[4] - '0');
}

static bool key_eq(const struct cams_key *a, const struct cams_key *b)
{
	return strcmp(a->phone, b->phone) == 0 && strcmp(a->cust_space_id, b->cust_space_id) == 0;
}

static size_t caller_index(const struct fx *x, const struct engine_caller *c)
{
	if (c < x->callers || c >= x->callers + x->n_callers)
		return SIZE_MAX;
	return (size_t)(c - x->callers);
}

static size_t wire_index(const struct fx *x, const struct cams_key *key)
{
	for (size_t i = 0; i < x->n_wire; i++)
		if (key_eq(&x->wire[i].key, key))
			return i;
	return SIZE_MAX;
}

static int64_t latency_between(int64_t min_us, int64_t max_us)
{
	int64_t span = max_us - min_us;

	if (span <= 0)
		return min_us > 0 ? min_us : max_us;
	return min_us + (int64_t)(harness_rng_next() % (uint64_t)(span + 1));
}

static int64_t fake_latency(struct fx *x)
{
	return latency_between(x->latency_min_us, x->latency_max_us);
}

/*
 * A SEND under GRANTS uses the grant the engine holds with the earliest
 * send_at among those not past their latest time (first given on a tie);
 * it must be due. Mirrors the engine's held grants without reading them.
 */
static void use_live_grant(struct fx *x)
{
	size_t n = 0, best = SIZE_MAX;

	for (size_t i = 0; i < x->n_live; i++)
		if (x->live[i].latest_us >= x->now_us)
			x->live[n++] = x->live[i];
	x->n_live = n;
	for (size_t i = 0; i < x->n_live; i++)
		if (best == SIZE_MAX || x->live[i].send_at_us < x->live[best].send_at_us)
			best = i;
	if (best == SIZE_MAX || x->live[best].send_at_us > x->now_us) {
		fprintf(stderr, "  SEND at %" PRId64 " under GRANTS with no grant due\n",
			x->now_us - T0);
		x->grant_violations++;
		return;
	}
	memmove(&x->live[best], &x->live[best + 1], (x->n_live - best - 1) * sizeof(x->live[0]));
	x->n_live--;
}

static void drained_reserve(struct fx *x)
{
	struct reserve *r;
	size_t live = 0;

	if (x->aborted)
		x->actions_after_abort++;
	if (x->last_local_send_us >= 0 && x->now_us < x->last_local_send_us + SEC)
		x->reserves_early++;
	assert(x->n_reserves < MAX_PENDING);
	r = &x->reserves[x->n_reserves++];
	r->asked_us = x->now_us;
	r->due_us = x->grant_policy
			    ? x->now_us + latency_between(x->grant_latency_min_us, x->grant_latency_max_us)
			    : INT64_MAX;
	x->reserves_total++;
	x->last_reserve_us = x->now_us;
	for (size_t i = 0; i < x->n_live; i++)
		live += x->live[i].latest_us >= x->now_us;
	if (x->n_reserves + live > (x->s.grants_max_pending ? x->s.grants_max_pending : 1))
		x->reserves_over++;
}

static void drained_claim(struct fx *x, const struct engine_action *a)
{
	struct claim *c;

	if (x->aborted)
		x->actions_after_abort++;
	assert(x->n_claims < MAX_PENDING && x->claims_total < MAX_CLAIM_LOG);
	c = &x->claims[x->n_claims++];
	c->key = a->key;
	c->seq = a->claim_seq;
	c->background = a->background;
	c->asked_us = x->now_us;
	c->due_us = x->claim_policy
			    ? x->now_us + latency_between(x->claim_latency_min_us, x->claim_latency_max_us)
			    : INT64_MAX;
	x->claim_log[x->claims_total++] = *c;
}

static void fx_drain(struct fx *x)
{
	struct engine_action a;

	while (engine_next_action(x->e, &a)) {
		x->ticked_at_us = -1;
		if (a.kind == ENGINE_ACTION_SEND && a.flight) {
			struct sent *s;
			struct wire *w;

			assert(x->n_sends < MAX_SENDS && x->n_wire < MAX_WIRE);
			if (wire_index(x, &a.flight->key) != SIZE_MAX)
				x->double_sends++;
			if (x->stopped)
				x->sends_after_stop++;
			s = &x->sends[x->n_sends++];
			s->key = a.flight->key;
			s->attempts = a.flight->attempts;
			s->background = a.flight->background;
			s->at_us = x->now_us;
			s->quota_wait_us = a.quota_wait_us;
			s->flight = a.flight;
			s->gate = engine_gate(x->e);
			s->lease_owned = a.flight->lease_owned;
			if (s->gate == ENGINE_GATE_CLOSED)
				x->sends_while_closed++;
			else if (s->gate == ENGINE_GATE_GRANTS)
				use_live_grant(x);
			else
				x->last_local_send_us = x->now_us;
			w = &x->wire[x->n_wire++];
			w->flight = a.flight;
			w->key = a.flight->key;
			w->sent_us = x->now_us;
			w->due_us = x->latency_max_us > 0 ? x->now_us + fake_latency(x) : INT64_MAX;
		} else if (a.kind == ENGINE_ACTION_ANSWER && a.caller) {
			size_t i = caller_index(x, a.caller);

			if (i == SIZE_MAX || !x->submitted[i]) {
				x->stray_answers++;
				continue;
			}
			if (x->answers[i]++ > 0)
				fprintf(stderr, "  caller %zu answered again (outcome %d)\n", i,
					a.caller->answer.outcome);
			else
				x->answered_us[i] = x->now_us;
			if (a.caller->answer.outcome == ENGINE_OUTCOME_QUOTA_UNAVAILABLE &&
			    engine_gate(x->e) != ENGINE_GATE_CLOSED)
				x->unavailable_while_open++;
		} else if (a.kind == ENGINE_ACTION_RESERVE) {
			drained_reserve(x);
		} else if (a.kind == ENGINE_ACTION_CLAIM) {
			drained_claim(x, &a);
		} else {
			x->bad_actions++;
		}
	}
	/* Hooks run after the list is empty; a hook's own drain does not re-run them. */
	while (x->on_send && !x->in_hook && x->sends_hooked < x->n_sends) {
		x->in_hook = true;
		x->on_send(x, &x->sends[x->sends_hooked++]);
		x->in_hook = false;
	}
}

static struct engine_caller *fx_caller(struct fx *x, unsigned client, unsigned n,
				       uint32_t max_wait_ms)
{
	struct engine_caller *c;
	size_t i = x->n_callers;

	assert(i < MAX_CALLERS);
	c = &x->callers[x->n_callers++];
	memset(c, 0, sizeof(*c));
	c->key = key_of(client, n);
	c->client = client;
	c->max_wait_ms = max_wait_ms;
	c->submitted_us = x->now_us;
	snprintf(c->request_id, sizeof(c->request_id), "caller-%zu", i);
	return c;
}

static void fx_submit(struct fx *x, struct engine_caller *c)
{
	size_t i = caller_index(x, c);

	assert(i != SIZE_MAX && !x->submitted[i]);
	x->submitted[i] = true;
	c->submitted_us = x->now_us;
	x->ticked_at_us = -1;
	engine_submit(x->e, c, x->now_us, fx_now_s(x));
	fx_drain(x);
}

/* A caller of `client` for its n-th key, submitted now. */
static struct engine_caller *fx_call(struct fx *x, unsigned client, unsigned n,
				     uint32_t max_wait_ms)
{
	struct engine_caller *c = fx_caller(x, client, n, max_wait_ms);

	fx_submit(x, c);
	return c;
}

/* A caller of `client` joining key n of key_owner (clients share keys). */
static struct engine_caller *fx_join(struct fx *x, unsigned client, unsigned key_owner,
				     unsigned n, uint32_t max_wait_ms)
{
	struct engine_caller *c = fx_caller(x, client, n, max_wait_ms);

	c->key = key_of(key_owner, n);
	fx_submit(x, c);
	return c;
}

static void fx_tick(struct fx *x)
{
	engine_tick(x->e, x->now_us, fx_now_s(x));
	fx_drain(x);
	x->ticked_at_us = x->now_us;
}

static void fx_gone(struct fx *x, struct engine_caller *c)
{
	x->ticked_at_us = -1;
	engine_caller_gone(x->e, c, x->now_us, fx_now_s(x));
	fx_drain(x);
}

static bool fx_refresh(struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);
	bool started;

	x->ticked_at_us = -1;
	started = engine_refresh(x->e, &k, x->now_us);
	fx_drain(x);
	return started;
}

static void fx_stop(struct fx *x)
{
	x->stopped = true;
	x->ticked_at_us = -1;
	engine_stop(x->e, x->now_us, fx_now_s(x));
	fx_drain(x);
}

static void fx_abort(struct fx *x)
{
	x->aborted = true;
	engine_abort(x->e, fx_now_s(x));
	x->n_wire = 0; /* the driver abandons the transfers */
	fx_drain(x);
}

/* ---- the fake upstream ---------------------------------------------------- */

static struct cache_entry *entry_key(const struct cams_key *k, int64_t fetched_at_s,
				     int64_t expires_at_s)
{
	char body[160];
	int n = snprintf(body, sizeof(body), "{\"RequestId\":\"UP-OK\",\"Code\":\"OK\",\"Phone\":\"%s\"}",
			 k->phone);
	struct cache_entry *e = cache_entry_new(k, "-----BEGIN PUBLIC KEY-----\nTEST\n-----END PUBLIC KEY-----\n",
						body, (size_t)n);

	e->kind = CACHE_KIND_KEY;
	e->http_status = 200;
	snprintf(e->status, sizeof(e->status), "VALID");
	snprintf(e->code, sizeof(e->code), "OK");
	snprintf(e->request_id, sizeof(e->request_id), "UP-OK");
	e->fetched_at_s = fetched_at_s;
	e->expires_at_s = expires_at_s;
	return e;
}

static struct cache_entry *entry_negative(const struct cams_key *k, int64_t now_s)
{
	static const char body[] =
		"{\"RequestId\":\"UP-NEG\",\"Code\":\"OwnerOfResourceNotFound\",\"Message\":\"no\"}";
	struct cache_entry *e = cache_entry_new(k, NULL, body, sizeof(body) - 1);

	e->kind = CACHE_KIND_NEGATIVE;
	e->http_status = 404;
	snprintf(e->code, sizeof(e->code), "OwnerOfResourceNotFound");
	snprintf(e->request_id, sizeof(e->request_id), "UP-NEG");
	e->fetched_at_s = now_s;
	e->expires_at_s = now_s + 60;
	return e;
}

static struct engine_reply reply_of(enum engine_reply_kind kind)
{
	struct engine_reply r;

	memset(&r, 0, sizeof(r));
	r.kind = kind;
	r.ratelimit_remain = -1;
	r.ratelimit_time_left_ms = -1;
	r.wire_delay_us = -1;
	r.rtt_var_us = -1;
	if (kind == ENGINE_REPLY_THROTTLED) {
		r.http_status = 503;
		r.code = "System.LimitControl";
		r.message = "Request was denied due to flow control.";
		r.request_id = "UP-THROTTLED";
		r.stale_reason = "upstream-throttled";
	} else if (kind == ENGINE_REPLY_FAILED) {
		r.http_status = 502;
		r.code = "Proxy.UpstreamError";
		r.message = "upstream unreachable: connection refused";
		r.request_id = NULL;
		r.stale_reason = "upstream-error";
	}
	return r;
}

/* The wire flight for key answered with r (r->entry borrowed). */
static void fx_reply_key(struct fx *x, const struct cams_key *key, struct engine_reply *r)
{
	size_t i = wire_index(x, key);
	struct wire w;

	assert(i != SIZE_MAX);
	w = x->wire[i];
	x->wire[i] = x->wire[--x->n_wire];
	x->replies++;
	if (r->kind == ENGINE_REPLY_THROTTLED)
		x->throttles_sent++;
	x->ticked_at_us = -1;
	engine_upstream_done(x->e, w.flight, r, x->now_us, fx_now_s(x));
	fx_drain(x);
}

static void fx_reply_fake(struct fx *x, const struct cams_key *key, enum fake_reply kind)
{
	struct engine_reply r;
	struct cache_entry *ent = NULL;
	int64_t now_s = fx_now_s(x);

	switch (kind) {
	case FAKE_OK:
		ent = entry_key(key, now_s, now_s + 3600);
		r = reply_of(ENGINE_REPLY_ENTRY);
		r.entry = ent;
		r.stored = true;
		break;
	case FAKE_NEGATIVE:
		ent = entry_negative(key, now_s);
		r = reply_of(ENGINE_REPLY_ENTRY);
		r.entry = ent;
		r.stored = true;
		break;
	case FAKE_THROTTLED:
		r = reply_of(ENGINE_REPLY_THROTTLED);
		break;
	case FAKE_FAILED:
	default:
		r = reply_of(ENGINE_REPLY_FAILED);
		break;
	}
	fx_reply_key(x, key, &r);
	cache_entry_unref(ent);
}

static bool on_wire(const struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	return wire_index(x, &k) != SIZE_MAX;
}

static void fx_ok(struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	fx_reply_fake(x, &k, FAKE_OK);
}

static void fx_throttle(struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	fx_reply_fake(x, &k, FAKE_THROTTLED);
}

static void fx_fail(struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	fx_reply_fake(x, &k, FAKE_FAILED);
}

/* Answer every flight on the wire with OK. */
static void fx_ok_all(struct fx *x)
{
	while (x->n_wire > 0) {
		struct cams_key k = x->wire[0].key;

		fx_reply_fake(x, &k, FAKE_OK);
	}
}

/* ---- the fake shared tier: gate, grants, claims ------------------------------ */

static void fx_set_gate(struct fx *x, enum engine_gate g)
{
	x->ticked_at_us = -1;
	engine_set_gate(x->e, g, x->now_us, fx_now_s(x));
	if (g != ENGINE_GATE_GRANTS)
		x->n_live = 0; /* the engine throws its held grants away */
	fx_drain(x);
}

static void reserve_pop(struct fx *x)
{
	assert(x->n_reserves > 0);
	memmove(&x->reserves[0], &x->reserves[1], (x->n_reserves - 1) * sizeof(x->reserves[0]));
	x->n_reserves--;
}

/* The oldest RESERVE is granted: the slot may be used from send_at_us to latest_us. */
static void fx_grant(struct fx *x, int64_t send_at_us, int64_t latest_us)
{
	reserve_pop(x);
	if (engine_gate(x->e) == ENGINE_GATE_GRANTS && !engine_stopping(x->e) &&
	    latest_us >= x->now_us) {
		assert(x->n_live < MAX_PENDING);
		x->live[x->n_live].send_at_us = send_at_us;
		x->live[x->n_live].latest_us = latest_us;
		x->n_live++;
	}
	x->ticked_at_us = -1;
	engine_grant(x->e, send_at_us, latest_us, x->now_us);
	fx_drain(x);
}

/* The oldest RESERVE failed: ask again no earlier than retry_at_us. */
static void fx_grant_failed(struct fx *x, int64_t retry_at_us)
{
	reserve_pop(x);
	x->ticked_at_us = -1;
	engine_grant_failed(x->e, retry_at_us, x->now_us);
	fx_drain(x);
}

/* Answer pending claim i (a HIT carries a fresh entry for its key). */
static bool fx_claim_reply(struct fx *x, size_t i, enum engine_claim result, int64_t retry_at_us)
{
	struct claim c;
	struct cache_entry *ent = NULL;
	int64_t now_s = fx_now_s(x);
	bool took;

	assert(i < x->n_claims);
	c = x->claims[i];
	memmove(&x->claims[i], &x->claims[i + 1], (x->n_claims - i - 1) * sizeof(x->claims[0]));
	x->n_claims--;
	if (result == ENGINE_CLAIM_HIT)
		ent = entry_key(&c.key, now_s - 5, now_s + 3600);
	x->ticked_at_us = -1;
	took = engine_claim_done(x->e, &c.key, c.seq, result, ent, retry_at_us, x->now_us, now_s);
	if (!took && result == ENGINE_CLAIM_OWNED)
		x->leases_released++;
	cache_entry_unref(ent);
	fx_drain(x);
	return took;
}

/* The pending claim of client's key n; SIZE_MAX if none. */
static size_t claim_pending(const struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	for (size_t i = 0; i < x->n_claims; i++)
		if (key_eq(&x->claims[i].key, &k))
			return i;
	return SIZE_MAX;
}

/* Answer the pending claim of client's key n (there must be one). */
static bool fx_claim(struct fx *x, unsigned client, unsigned n, enum engine_claim result,
		     int64_t retry_at_us)
{
	size_t i = claim_pending(x, client, n);

	assert(i != SIZE_MAX);
	return fx_claim_reply(x, i, result, retry_at_us);
}

/* A claim answered with a claim_seq of our choosing (a stale one). */
static bool fx_claim_seq(struct fx *x, unsigned client, unsigned n, uint64_t seq,
			 enum engine_claim result, int64_t retry_at_us)
{
	struct cams_key k = key_of(client, n);
	struct cache_entry *ent = NULL;
	bool took;

	if (result == ENGINE_CLAIM_HIT)
		ent = entry_key(&k, fx_now_s(x) - 5, fx_now_s(x) + 3600);
	x->ticked_at_us = -1;
	took = engine_claim_done(x->e, &k, seq, result, ent, retry_at_us, x->now_us, fx_now_s(x));
	if (!took && result == ENGINE_CLAIM_OWNED)
		x->leases_released++;
	cache_entry_unref(ent);
	fx_drain(x);
	return took;
}

static void fx_poke(struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);

	x->ticked_at_us = -1;
	engine_claim_poke(x->e, &k, x->now_us);
	fx_drain(x);
}

/* The policies' answers, when due. */
static void auto_grant(struct fx *x)
{
	struct grant_reply g;

	memset(&g, 0, sizeof(g));
	x->grant_policy(x, &g);
	if (g.ok)
		fx_grant(x, g.send_at_us, g.latest_us);
	else
		fx_grant_failed(x, g.retry_at_us);
}

static void auto_claim(struct fx *x, size_t i)
{
	int64_t retry_at_us = 0;
	enum engine_claim r = x->claim_policy(x, &x->claims[i], &retry_at_us);

	fx_claim_reply(x, i, r, retry_at_us);
}

static size_t wire_next_due(const struct fx *x)
{
	size_t best = SIZE_MAX;

	for (size_t i = 0; i < x->n_wire; i++)
		if (x->wire[i].due_us != INT64_MAX &&
		    (best == SIZE_MAX || x->wire[i].due_us < x->wire[best].due_us))
			best = i;
	return best;
}

/*
 * Run the clock to t: tick at every time the engine asks for, and let the
 * fake upstream answer what is due, in time order.
 */
static void fx_run_until(struct fx *x, int64_t t)
{
	unsigned long guard = 0;

	for (;;) {
		int64_t wake = engine_next_wake_us(x->e, x->now_us);
		size_t due = wire_next_due(x);
		int64_t due_us = due != SIZE_MAX ? x->wire[due].due_us : INT64_MAX;

		size_t claim_due = SIZE_MAX;
		int64_t reserve_due_us = x->n_reserves > 0 ? x->reserves[0].due_us : INT64_MAX;
		int64_t claim_due_us = INT64_MAX;

		for (size_t i = 0; i < x->n_claims; i++)
			if (x->claims[i].due_us < claim_due_us) {
				claim_due_us = x->claims[i].due_us;
				claim_due = i;
			}
		assert(++guard < 50000000ul);
		if (x->until_sends && x->n_sends >= x->until_sends)
			return;
		if (due_us <= t && due_us <= wake && due_us <= reserve_due_us &&
		    due_us <= claim_due_us) {
			struct cams_key k = x->wire[due].key;

			if (due_us > x->now_us)
				x->now_us = due_us;
			fx_reply_fake(x, &k, x->policy ? x->policy(x, &x->wire[due]) : FAKE_OK);
			continue;
		}
		if (reserve_due_us <= t && reserve_due_us <= wake && reserve_due_us <= claim_due_us) {
			if (reserve_due_us > x->now_us)
				x->now_us = reserve_due_us;
			auto_grant(x);
			continue;
		}
		if (claim_due_us <= t && claim_due_us <= wake) {
			if (claim_due_us > x->now_us)
				x->now_us = claim_due_us;
			auto_claim(x, claim_due);
			continue;
		}
		if (wake > t)
			break;
		if (wake <= x->now_us) {
			if (x->ticked_at_us == x->now_us) {
				/* the engine wants now again right after a tick at now */
				x->stalls++;
				wake = x->now_us + MS;
				if (wake > t)
					break;
			} else {
				wake = x->now_us;
			}
		}
		x->now_us = wake;
		fx_tick(x);
	}
	if (t > x->now_us)
		x->now_us = t;
	fx_tick(x);
}

/* Run until the count-th SEND (true) or to limit_us (false). */
static bool fx_run_until_sends(struct fx *x, size_t count, int64_t limit_us)
{
	x->until_sends = count;
	fx_run_until(x, limit_us);
	x->until_sends = 0;
	return x->n_sends >= count;
}

static void fx_advance(struct fx *x, int64_t dt_us)
{
	fx_run_until(x, x->now_us + dt_us);
}

/* Index of the first SEND of key at or after send index `from`; SIZE_MAX if none. */
static size_t send_of(const struct fx *x, unsigned client, unsigned n, size_t from)
{
	struct cams_key k = key_of(client, n);

	for (size_t i = from; i < x->n_sends; i++)
		if (key_eq(&x->sends[i].key, &k))
			return i;
	return SIZE_MAX;
}

static size_t sends_of(const struct fx *x, unsigned client, unsigned n)
{
	struct cams_key k = key_of(client, n);
	size_t count = 0;

	for (size_t i = 0; i < x->n_sends; i++)
		if (key_eq(&x->sends[i].key, &k))
			count++;
	return count;
}

static unsigned times_answered(const struct fx *x, const struct engine_caller *c)
{
	size_t i = caller_index(x, c);

	return i == SIZE_MAX ? 0 : x->answers[i];
}

static int64_t answered_at(const struct fx *x, const struct engine_caller *c)
{
	size_t i = caller_index(x, c);

	return i == SIZE_MAX || !x->answers[i] ? -1 : x->answered_us[i];
}

static bool body_has(const struct engine_caller *c, const char *s)
{
	return c->answer.body && memmem(c->answer.body, c->answer.body_len, s, strlen(s)) != NULL;
}

static bool status_has(const struct engine_caller *c, const char *s)
{
	return strstr(c->answer.cache_status, s) != NULL;
}

#define CHECK_ANSWER(x, c, outcome_, status_)                                          \
	do {                                                                           \
		CHECK(times_answered((x), (c)) == 1);                                  \
		CHECK((c)->answer.outcome == (outcome_));                              \
		CHECK((c)->answer.http_status == (status_));                           \
	} while (0)

#define CHECK_WAITING(x, c) CHECK(times_answered((x), (c)) == 0)

/* A MISS from the entry the upstream gave. */
#define CHECK_MISS(x, c)                                                               \
	do {                                                                           \
		CHECK_ANSWER((x), (c), ENGINE_OUTCOME_MISS, 200);                      \
		CHECK((c)->answer.entry != NULL);                                      \
		CHECK((c)->answer.entry && key_eq(&(c)->answer.entry->key, &(c)->key)); \
		CHECK(status_has((c), "fwd=miss"));                                    \
	} while (0)

/*
 * The end of every scenario: stop, abort, and every submitted caller was
 * answered exactly once, nothing unknown was answered, no key was sent
 * twice at once, the engine is empty. Frees everything.
 */
static void fx_end(struct fx *x)
{
	size_t unanswered = 0, twice = 0;

	if (!x->stopped)
		fx_stop(x);
	if (!x->aborted)
		fx_abort(x);
	for (size_t i = 0; i < x->n_callers; i++) {
		if (!x->submitted[i])
			continue;
		if (x->answers[i] == 0)
			unanswered++;
		if (x->answers[i] > 1)
			twice++;
	}
	if (unanswered || twice)
		fprintf(stderr, "  %zu callers unanswered, %zu answered more than once\n", unanswered,
			twice);
	CHECK(unanswered == 0);
	CHECK(twice == 0);
	CHECK(x->stray_answers == 0);
	CHECK(x->double_sends == 0);
	CHECK(x->bad_actions == 0);
	CHECK(x->stalls == 0);
	CHECK(x->sends_after_stop == 0);
	CHECK(x->sends_while_closed == 0);
	CHECK(x->grant_violations == 0);
	CHECK(x->reserves_early == 0);
	CHECK(x->reserves_over == 0);
	CHECK(x->actions_after_abort == 0);
	CHECK(x->unavailable_while_open == 0);
	CHECK(engine_waiting(x->e) == 0);
	CHECK(engine_flights(x->e) == 0);
	CHECK(engine_stats(x->e)->sends == x->n_sends);
	engine_free(x->e);
	for (size_t i = 0; i < x->n_callers; i++)
		engine_answer_clear(&x->callers[i].answer);
	free(x->callers);
	free(x->submitted);
	free(x->answers);
	free(x->answered_us);
	free(x->sends);
	free(x->claim_log);
	free(x);
}

/* ---- one call per key ------------------------------------------------------ */

TEST(many_callers_for_one_key_share_one_upstream_call)
{
	struct fx *x = fx_new();
	struct engine_caller *c[50];

	for (unsigned i = 0; i < 50; i++)
		c[i] = fx_call(x, 0, 1, 5000);
	fx_tick(x);
	CHECK(x->n_sends == 1);
	CHECK(engine_flights(x->e) == 1);
	CHECK(engine_in_flight(x->e) == 1);
	CHECK(engine_waiting(x->e) == 50);
	CHECK(engine_stats(x->e)->joined == 49);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].attempts == 1);
	CHECK(!x->sends[0].background);
	CHECK(x->sends[0].at_us == T0);
	CHECK(x->sends[0].quota_wait_us == 0);
	fx_advance(x, 2 * SEC);
	CHECK(x->n_sends == 1);
	for (unsigned i = 0; i < 50; i++)
		CHECK_WAITING(x, c[i]);
	fx_ok(x, 0, 1);
	for (unsigned i = 0; i < 50; i++) {
		CHECK_MISS(x, c[i]);
		CHECK(c[i]->answer.entry == c[0]->answer.entry);
		CHECK(answered_at(x, c[i]) == T0 + 2 * SEC);
	}
	CHECK(engine_waiting(x->e) == 0);
	CHECK(engine_flights(x->e) == 0);
	fx_end(x);
}

TEST(joiner_of_a_call_on_the_wire_waits_for_its_answer_past_its_quota_wait)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *z;

	a = fx_call(x, 0, 1, 1000);
	fx_tick(x);
	REQUIRE(on_wire(x, 0, 1));
	fx_advance(x, 50 * MS);
	b = fx_join(x, 1, 0, 1, 100);   /* no slot free for 150 ms, but none needed */
	z = fx_join(x, 2, 0, 1, 0);
	CHECK_WAITING(x, b);
	CHECK_WAITING(x, z);
	CHECK(engine_stats(x->e)->joined == 2);
	/* The upstream takes its time: the joiners wait for it, not for quota. */
	fx_advance(x, 3 * SEC);
	CHECK_WAITING(x, a);
	CHECK_WAITING(x, b);
	CHECK_WAITING(x, z);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	CHECK_MISS(x, b);
	CHECK_MISS(x, z);
	CHECK(x->n_sends == 1);
	fx_end(x);
}

TEST(key_is_fetched_again_after_its_flight_is_answered)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 1000);
	fx_tick(x);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_advance(x, SEC);
	b = fx_call(x, 0, 1, 1000);
	fx_tick(x);
	CHECK(sends_of(x, 0, 1) == 2);
	REQUIRE(x->n_sends == 2);
	CHECK(x->sends[1].attempts == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, b);
	fx_end(x);
}

/* ---- the limiter's spacing ------------------------------------------------ */

TEST(queued_flights_are_sent_one_emission_interval_apart)
{
	struct fx *x = fx_new();
	struct engine_caller *c[5];

	for (unsigned i = 0; i < 5; i++)
		c[i] = fx_call(x, 0, i, 10000);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 5);
	for (unsigned i = 0; i < 5; i++) {
		CHECK(key_eq(&x->sends[i].key, &c[i]->key));
		CHECK(x->sends[i].at_us == T0 + (int64_t)i * 200 * MS);
		CHECK(x->sends[i].quota_wait_us == (int64_t)i * 200 * MS);
		CHECK(x->sends[i].attempts == 1);
	}
	fx_ok_all(x);
	for (unsigned i = 0; i < 5; i++)
		CHECK_MISS(x, c[i]);
	fx_end(x);
}

TEST(next_wake_is_the_send_slot_while_flights_wait_and_never_when_idle)
{
	struct fx *x = fx_new();

	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_call(x, 0, 1, 5000);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	/* Only a call on the wire: its caller has no deadline. */
	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_call(x, 0, 2, 5000);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 200 * MS);
	x->now_us = T0 + 100 * MS;
	fx_tick(x);
	CHECK(x->n_sends == 1);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 200 * MS);
	x->now_us = T0 + 200 * MS;
	fx_tick(x);
	CHECK(x->n_sends == 2);
	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_ok_all(x);
	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_end(x);
}

TEST(next_wake_is_the_nearest_deadline_when_it_comes_before_the_slot)
{
	struct fx *x = fx_new();
	struct engine_caller *b;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 700);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 200 * MS);
	fx_advance(x, 10 * MS);
	fx_throttle(x, 0, 1);        /* sends pause until T0 + 1010 ms */
	/* The deadline, or the first microsecond past it (where "past" begins). */
	CHECK(engine_next_wake_us(x->e, x->now_us) >= T0 + 700 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) <= T0 + 700 * MS + 1);
	fx_run_until(x, T0 + 699 * MS);
	CHECK_WAITING(x, b);
	fx_run_until(x, T0 + 701 * MS);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 1010 * MS);
	fx_end(x);
}

TEST(remain_zero_hint_holds_the_next_send_until_the_window_resets)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;
	struct engine_reply r = reply_of(ENGINE_REPLY_ENTRY);
	struct cams_key k = key_of(0, 1);
	struct cache_entry *ent;

	a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 10000);
	fx_advance(x, 50 * MS);
	ent = entry_key(&k, fx_now_s(x), fx_now_s(x) + 3600);
	r.entry = ent;
	r.stored = true;
	r.ratelimit_remain = 0;
	r.ratelimit_time_left_ms = 800;
	fx_reply_key(x, &k, &r);
	cache_entry_unref(ent);
	CHECK_MISS(x, a);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 2);
	/* The hint describes the window as of the call's arrival (its send: no wire delay known). */
	CHECK(x->sends[1].at_us == T0 + 800 * MS);
	fx_ok(x, 0, 2);
	CHECK_MISS(x, b);
	fx_end(x);
}

/* ---- refusals at submission ------------------------------------------------ */

TEST(max_wait_zero_is_sent_when_a_slot_is_free_now)
{
	struct fx *x = fx_new();
	struct engine_caller *a;

	a = fx_call(x, 0, 1, 0);
	fx_tick(x);
	CHECK_WAITING(x, a);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].at_us == T0);
	fx_advance(x, 300 * MS);
	CHECK_WAITING(x, a);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(max_wait_zero_is_refused_at_once_when_no_slot_is_free)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 1000);
	fx_tick(x);
	fx_advance(x, 50 * MS);
	b = fx_call(x, 0, 2, 0);     /* the next slot is 150 ms away */
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(answered_at(x, b) == T0 + 50 * MS);
	CHECK(body_has(b, "Proxy.QuotaWait"));
	CHECK(body_has(b, "caller-1"));
	CHECK(b->answer.retry_after_s >= 1);
	CHECK(b->answer.entry == NULL);
	CHECK(engine_flights(x->e) == 1);
	CHECK(engine_queue_len(x->e) == 0);
	fx_advance(x, SEC);
	CHECK(x->n_sends == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(wait_the_queue_cannot_meet_is_refused_at_once_with_the_predicted_wait)
{
	struct fx *x = fx_new();
	struct engine_caller *late, *patient;

	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);
	for (unsigned i = 1; i <= 10; i++)
		fx_call(x, 0, i, LONG_WAIT_MS);
	CHECK(engine_queue_len(x->e) == 10);
	/* Ten ahead of it, 200 ms apart, after a slot 200 ms away: 2.2 s. */
	late = fx_call(x, 0, 11, 1000);
	CHECK_ANSWER(x, late, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(answered_at(x, late) == T0);
	CHECK(body_has(late, "Proxy.QuotaWait"));
	CHECK((int64_t)late->answer.retry_after_s * SEC >= 2200 * MS);
	CHECK(late->answer.retry_after_s <= 5);
	CHECK(engine_queue_len(x->e) == 10);
	CHECK(engine_flights(x->e) == 11);
	patient = fx_call(x, 0, 12, 3000);
	CHECK_WAITING(x, patient);
	CHECK(engine_queue_len(x->e) == 11);
	fx_end(x);
}

TEST(joiner_whose_wait_its_queued_flight_cannot_meet_is_refused_and_the_flight_stays)
{
	struct fx *x = fx_new();
	struct engine_caller *first, *hasty, *patient;
	size_t i;

	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);
	for (unsigned n = 1; n < 10; n++)
		fx_call(x, 0, n, LONG_WAIT_MS);
	first = fx_call(x, 0, 10, LONG_WAIT_MS);
	/* Nine ahead of key 10, after a slot 200 ms away: 2 s. */
	hasty = fx_join(x, 1, 0, 10, 1000);
	CHECK_ANSWER(x, hasty, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(answered_at(x, hasty) == T0);
	CHECK(body_has(hasty, "Proxy.QuotaWait"));
	CHECK((int64_t)hasty->answer.retry_after_s * SEC >= 2000 * MS);
	CHECK(hasty->answer.retry_after_s <= 5);
	patient = fx_join(x, 2, 0, 10, 2500);
	CHECK_WAITING(x, patient);
	CHECK_WAITING(x, first);
	CHECK(engine_queue_len(x->e) == 10);
	fx_run_until(x, T0 + 3 * SEC);
	i = send_of(x, 0, 10, 0);
	REQUIRE(i == 10);
	/* (every sixth send waits 1 us more: the window is "more than" 1 s) */
	CHECK(x->sends[i].at_us >= T0 + 2000 * MS && x->sends[i].at_us <= T0 + 2000 * MS + 10);
	CHECK(sends_of(x, 0, 10) == 1);
	fx_ok_all(x);
	CHECK_MISS(x, first);
	CHECK_MISS(x, patient);
	fx_end(x);
}

TEST(idle_client_is_not_refused_behind_another_clients_backlog)
{
	struct fx *x = fx_new();
	struct engine_caller *z;
	size_t i;

	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);
	for (unsigned n = 1; n <= 10; n++)
		fx_call(x, 0, n, LONG_WAIT_MS);
	/* Client 1's fair share puts it behind one of client 0's: 400 ms. */
	z = fx_call(x, 1, 1, 500);
	CHECK_WAITING(x, z);
	fx_run_until(x, T0 + SEC);
	i = send_of(x, 1, 1, 0);
	REQUIRE(i != SIZE_MAX);
	CHECK(i == 2);
	CHECK(x->sends[i].at_us == T0 + 400 * MS);
	fx_ok(x, 1, 1);
	CHECK_MISS(x, z);
	fx_end(x);
}

TEST(full_queue_refuses_a_new_key_with_queue_full)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *c[4], *over;

	s.queue_max = 3;
	x = fx_new_with(&s);
	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);                          /* on the wire, not queued */
	for (unsigned i = 0; i < 3; i++)
		c[i] = fx_call(x, 0, i + 1, LONG_WAIT_MS);
	CHECK(engine_queue_len(x->e) == 3);
	over = fx_call(x, 1, 9, LONG_WAIT_MS);
	CHECK_ANSWER(x, over, ENGINE_OUTCOME_QUEUE_FULL, 503);
	CHECK(answered_at(x, over) == T0);
	CHECK(body_has(over, "Proxy.QueueFull"));
	CHECK(over->answer.retry_after_s >= 1);
	CHECK(engine_queue_len(x->e) == 3);
	CHECK(engine_flights(x->e) == 4);
	/* A refresh finds no room either. */
	CHECK(!fx_refresh(x, 2, 1));
	CHECK(engine_flights(x->e) == 4);
	/* Another new key of another client: refused too, the queued ones stay. */
	c[3] = fx_call(x, 2, 0, 0);
	CHECK_ANSWER(x, c[3], ENGINE_OUTCOME_QUEUE_FULL, 503);
	for (unsigned i = 0; i < 3; i++)
		CHECK_WAITING(x, c[i]);
	fx_end(x);
}

TEST(full_queue_still_lets_callers_join_queued_flights)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *a, *joiner;

	s.queue_max = 3;
	x = fx_new_with(&s);
	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);
	fx_call(x, 0, 1, LONG_WAIT_MS);
	a = fx_call(x, 0, 2, LONG_WAIT_MS);
	fx_call(x, 0, 3, LONG_WAIT_MS);
	CHECK(engine_queue_len(x->e) == 3);
	joiner = fx_caller(x, 1, 0, LONG_WAIT_MS);
	joiner->key = key_of(0, 2);
	fx_submit(x, joiner);
	CHECK_WAITING(x, joiner);
	CHECK(engine_queue_len(x->e) == 3);
	fx_run_until(x, T0 + 500 * MS);
	REQUIRE(on_wire(x, 0, 2));
	fx_ok(x, 0, 2);
	CHECK_MISS(x, a);
	CHECK_MISS(x, joiner);
	CHECK(sends_of(x, 0, 2) == 1);
	fx_end(x);
}

/* ---- throttles -------------------------------------------------------------- */

TEST(throttle_requeues_the_flight_at_the_head_and_sends_it_again_after_the_back_off)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *c;
	size_t retry;

	a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 10000);
	c = fx_call(x, 1, 3, 10000);
	fx_advance(x, 50 * MS);
	fx_throttle(x, 0, 1);
	CHECK_WAITING(x, a);
	CHECK(engine_stats(x->e)->throttles == 1);
	CHECK(engine_queue_len(x->e) == 3);
	CHECK(engine_flights(x->e) == 3);
	/* The back-off pauses every send for 1 s. */
	fx_run_until(x, T0 + 1049 * MS);
	CHECK(x->n_sends == 1);
	fx_run_until(x, T0 + 3 * SEC);
	retry = send_of(x, 0, 1, 1);
	REQUIRE(retry == 1);
	CHECK(x->sends[retry].at_us == T0 + 1050 * MS);
	CHECK(x->sends[retry].attempts == 2);
	CHECK(x->sends[retry].flight == x->sends[0].flight);
	CHECK(!x->sends[retry].background);
	CHECK(engine_stats(x->e)->retries == 1);
	/* The others follow in their order, no closer than the (backed-off) spacing. */
	REQUIRE(x->n_sends == 4);
	CHECK(key_eq(&x->sends[2].key, &b->key));
	CHECK(key_eq(&x->sends[3].key, &c->key));
	CHECK(x->sends[2].at_us - x->sends[1].at_us >= 200 * MS);
	CHECK(x->sends[3].at_us - x->sends[2].at_us >= 200 * MS);
	fx_ok_all(x);
	CHECK_MISS(x, a);
	CHECK_MISS(x, b);
	CHECK_MISS(x, c);
	fx_end(x);
}

TEST(throttle_answers_callers_who_cannot_wait_for_the_retry_slot_with_limit_control)
{
	struct fx *x = fx_new();
	struct engine_caller *patient, *hasty, *joiner;

	patient = fx_call(x, 0, 1, 5000);
	hasty = fx_join(x, 1, 0, 1, 500);     /* deadline T0 + 500 ms < retry T0 + 1050 ms */
	fx_tick(x);
	fx_advance(x, 50 * MS);
	joiner = fx_join(x, 2, 0, 1, 600);    /* joins on the wire */
	fx_throttle(x, 0, 1);
	CHECK_ANSWER(x, hasty, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK_ANSWER(x, joiner, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK(answered_at(x, hasty) == T0 + 50 * MS);
	CHECK(body_has(hasty, "System.LimitControl"));
	CHECK(hasty->answer.retry_after_s >= 1);
	CHECK((int64_t)hasty->answer.retry_after_s * SEC >= 1000 * MS);
	CHECK(hasty->answer.retry_after_s <= 3);
	CHECK_WAITING(x, patient);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 2);
	CHECK(x->sends[1].attempts == 2);
	CHECK(x->sends[1].at_us == T0 + 1050 * MS);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, patient);
	fx_end(x);
}

TEST(throttle_with_no_caller_able_to_wait_answers_everyone_and_drops_the_flight)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 300);
	b = fx_join(x, 1, 0, 1, 900);
	fx_tick(x);
	fx_advance(x, 20 * MS);
	fx_throttle(x, 0, 1);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK(body_has(b, "System.LimitControl"));
	CHECK(b->answer.retry_after_s >= 1);
	CHECK(engine_flights(x->e) == 0);
	fx_advance(x, 5 * SEC);
	CHECK(x->n_sends == 1);
	fx_end(x);
}

TEST(throttled_retries_exhausted_answer_503_limit_control)
{
	struct fx *x = fx_new();     /* upstream_retries = 2: three attempts */
	struct engine_caller *a, *b;
	int64_t last;

	a = fx_call(x, 0, 1, 30000);
	fx_tick(x);
	b = fx_join(x, 1, 0, 1, 30000);
	for (unsigned attempt = 1; attempt <= 3; attempt++) {
		REQUIRE(fx_run_until_sends(x, attempt, x->now_us + 5 * SEC));
		CHECK(x->n_sends == attempt);
		CHECK(x->sends[attempt - 1].attempts == attempt);
		CHECK(x->sends[attempt - 1].flight == x->sends[0].flight);
		CHECK_WAITING(x, a);
		CHECK_WAITING(x, b);
		fx_run_until(x, x->sends[attempt - 1].at_us + 50 * MS);
		fx_throttle(x, 0, 1);
	}
	last = x->now_us;
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK(answered_at(x, a) == last);
	CHECK(body_has(a, "System.LimitControl"));
	CHECK(a->answer.retry_after_s >= 1);
	CHECK(engine_stats(x->e)->throttles == 3);
	CHECK(engine_stats(x->e)->retries == 2);
	CHECK(engine_flights(x->e) == 0);
	fx_advance(x, 10 * SEC);
	CHECK(x->n_sends == 3);
	fx_end(x);
}

TEST(throttle_pause_holds_every_queued_flight_not_only_the_retry)
{
	struct fx *x = fx_new();
	struct engine_caller *c[4];

	for (unsigned i = 0; i < 4; i++)
		c[i] = fx_call(x, 0, i, 20000);
	fx_run_until(x, T0 + 250 * MS);
	REQUIRE(x->n_sends == 2);
	fx_throttle(x, 0, 0);      /* at 250 ms: pause until 1250 ms */
	fx_run_until(x, T0 + 1249 * MS);
	CHECK(x->n_sends == 2);
	fx_run_until(x, T0 + 1250 * MS);
	REQUIRE(x->n_sends == 3);
	CHECK(key_eq(&x->sends[2].key, &c[0]->key));
	CHECK(x->sends[2].attempts == 2);
	fx_run_until(x, T0 + 10 * SEC);
	CHECK(x->n_sends == 5);
	fx_ok_all(x);
	for (unsigned i = 0; i < 4; i++)
		CHECK_MISS(x, c[i]);
	fx_end(x);
}

TEST(throttled_flight_is_retried_at_the_head_even_when_the_queue_is_full)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *a, *b, *c;

	s.queue_max = 2;
	x = fx_new_with(&s);
	a = fx_call(x, 0, 0, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 1, 10000);
	c = fx_call(x, 0, 2, 10000);
	CHECK(engine_queue_len(x->e) == 2);
	fx_advance(x, 50 * MS);
	/* The retry was admitted with its first attempt: it needs no new room. */
	fx_throttle(x, 0, 0);
	CHECK_WAITING(x, a);
	fx_run_until(x, T0 + 1050 * MS);
	REQUIRE(x->n_sends == 2);
	CHECK(key_eq(&x->sends[1].key, &a->key));
	CHECK(x->sends[1].attempts == 2);
	fx_run_until(x, T0 + 3 * SEC);
	fx_ok_all(x);
	CHECK_MISS(x, a);
	CHECK_MISS(x, b);
	CHECK_MISS(x, c);
	fx_end(x);
}

TEST(throttle_of_a_call_whose_callers_all_left_is_not_retried)
{
	struct fx *x = fx_new();
	struct engine_caller *a;

	a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	fx_advance(x, 20 * MS);
	fx_gone(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_GONE, 0);
	CHECK(engine_flights(x->e) == 1);
	fx_advance(x, 20 * MS);
	fx_throttle(x, 0, 1);
	CHECK(engine_flights(x->e) == 0);
	fx_advance(x, 5 * SEC);
	CHECK(x->n_sends == 1);
	CHECK(times_answered(x, a) == 1);
	fx_end(x);
}

/* ---- background flights ------------------------------------------------------ */

TEST(refresh_starts_a_background_flight_that_answers_nobody)
{
	struct fx *x = fx_new();

	CHECK(fx_refresh(x, 0, 1));
	CHECK(!fx_refresh(x, 0, 1));  /* one exists */
	CHECK(engine_flights(x->e) == 1);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].background);
	CHECK(x->sends[0].attempts == 1);
	CHECK(!fx_refresh(x, 0, 1));  /* on the wire */
	fx_ok(x, 0, 1);
	CHECK(engine_flights(x->e) == 0);
	CHECK(engine_stats(x->e)->refreshes == 1);
	fx_end(x);
}

TEST(background_flight_waits_behind_foreground_work)
{
	struct fx *x = fx_new();
	struct engine_caller *b, *c;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	CHECK(fx_refresh(x, 0, 9));
	b = fx_call(x, 0, 2, 10000);
	c = fx_call(x, 1, 3, 10000);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 4);
	CHECK(send_of(x, 0, 2, 0) == 1);
	CHECK(send_of(x, 1, 3, 0) == 2);
	CHECK(send_of(x, 0, 9, 0) == 3);
	CHECK(x->sends[3].background);
	CHECK(x->sends[3].at_us == T0 + 600 * MS);
	fx_ok_all(x);
	CHECK_MISS(x, b);
	CHECK_MISS(x, c);
	fx_end(x);
}

TEST(caller_joining_a_queued_refresh_moves_it_to_the_foreground)
{
	struct fx *x = fx_new();
	struct engine_caller *d;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	CHECK(fx_refresh(x, 0, 9));
	d = fx_caller(x, 0, 9, 10000);
	fx_submit(x, d);
	CHECK_WAITING(x, d);
	CHECK(engine_stats(x->e)->joined == 1);
	for (unsigned n = 2; n <= 4; n++)
		fx_call(x, 0, n, 10000);
	fx_run_until(x, T0 + 3 * SEC);
	REQUIRE(x->n_sends == 5);
	/* Foreground and pushed before keys 2..4: it goes right after key 1. */
	CHECK(send_of(x, 0, 9, 0) == 1);
	CHECK(!x->sends[1].background);
	fx_ok_all(x);
	CHECK_MISS(x, d);
	fx_end(x);
}

TEST(caller_joining_a_refresh_on_the_wire_is_retried_for_after_a_throttle)
{
	struct fx *x = fx_new();
	struct engine_caller *a;

	CHECK(fx_refresh(x, 0, 1));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].background);
	fx_advance(x, 10 * MS);
	a = fx_call(x, 0, 1, 10000);
	CHECK_WAITING(x, a);
	fx_advance(x, 40 * MS);
	fx_throttle(x, 0, 1);
	CHECK_WAITING(x, a);
	CHECK(engine_flights(x->e) == 1);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 2);
	CHECK(x->sends[1].attempts == 2);
	CHECK(!x->sends[1].background);
	CHECK(x->sends[1].at_us == T0 + 1050 * MS);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(throttled_refresh_nobody_waits_for_is_dropped_not_retried)
{
	struct fx *x = fx_new();

	CHECK(fx_refresh(x, 0, 1));
	fx_tick(x);
	fx_advance(x, 30 * MS);
	fx_throttle(x, 0, 1);
	CHECK(engine_flights(x->e) == 0);
	fx_advance(x, 5 * SEC);
	CHECK(x->n_sends == 1);
	CHECK(engine_stats(x->e)->throttles == 1);
	fx_end(x);
}

/* ---- departures ------------------------------------------------------------------ */

TEST(departed_caller_leaves_its_queued_flight_without_cancelling_it_for_the_others)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	a = fx_call(x, 0, 2, 10000);
	b = fx_join(x, 1, 0, 2, 10000);
	fx_advance(x, 50 * MS);
	fx_gone(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_GONE, 0);
	CHECK(answered_at(x, a) == T0 + 50 * MS);
	CHECK(engine_stats(x->e)->departed == 1);
	CHECK(engine_waiting(x->e) == 2);
	fx_run_until(x, T0 + SEC);
	REQUIRE(x->n_sends == 2);
	CHECK(send_of(x, 0, 2, 0) == 1);
	CHECK(x->sends[1].at_us == T0 + 200 * MS);
	CHECK(!x->sends[1].background);
	fx_ok_all(x);
	CHECK_MISS(x, b);
	CHECK(times_answered(x, a) == 1);
	fx_end(x);
}

TEST(departed_caller_of_a_call_on_the_wire_is_answered_gone_and_the_rest_get_the_key)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 10000);
	b = fx_join(x, 1, 0, 1, 10000);
	fx_tick(x);
	fx_advance(x, 100 * MS);
	fx_gone(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_GONE, 0);
	CHECK(engine_in_flight(x->e) == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, b);
	CHECK(times_answered(x, a) == 1);
	CHECK(a->answer.outcome == ENGINE_OUTCOME_GONE);
	fx_end(x);
}

TEST(flight_whose_callers_all_left_becomes_background)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *c;
	size_t i;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	a = fx_call(x, 0, 2, 10000);
	b = fx_call(x, 0, 3, 10000);
	c = fx_call(x, 1, 4, 10000);
	fx_advance(x, 10 * MS);
	fx_gone(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_GONE, 0);
	CHECK(engine_flights(x->e) == 4);
	fx_run_until(x, T0 + 2 * SEC);
	REQUIRE(x->n_sends == 4);
	/* Keys 3 and 4 (in fair order) go first; the orphan goes last. */
	CHECK(send_of(x, 0, 3, 0) == 1 || send_of(x, 0, 3, 0) == 2);
	CHECK(send_of(x, 1, 4, 0) == 1 || send_of(x, 1, 4, 0) == 2);
	i = send_of(x, 0, 2, 0);
	CHECK(i == 3);
	if (i != SIZE_MAX)
		CHECK(x->sends[i].background);
	CHECK(engine_stats(x->e)->refreshes == 1);
	fx_ok_all(x);
	CHECK_MISS(x, b);
	CHECK_MISS(x, c);
	CHECK(times_answered(x, a) == 1);
	CHECK(engine_flights(x->e) == 0);
	fx_end(x);
}

TEST(orphaned_flight_still_yields_to_foreground_work_arriving_later)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *late;

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	a = fx_call(x, 0, 2, 10000);
	fx_gone(x, a);
	late = fx_call(x, 1, 5, 10000);
	fx_run_until(x, T0 + SEC);
	REQUIRE(x->n_sends == 3);
	CHECK(send_of(x, 1, 5, 0) == 1);
	CHECK(send_of(x, 0, 2, 0) == 2);
	fx_ok_all(x);
	CHECK_MISS(x, late);
	fx_end(x);
}

TEST(waiting_callers_are_listed_until_they_are_answered)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *c;
	bool seen[3] = { false, false, false };

	a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 10000);
	c = fx_join(x, 1, 0, 2, 10000);
	REQUIRE(engine_waiting(x->e) == 3);
	for (size_t i = 0; i < engine_waiting(x->e); i++) {
		struct engine_caller *w = engine_waiting_at(x->e, i);

		seen[0] |= w == a;
		seen[1] |= w == b;
		seen[2] |= w == c;
	}
	CHECK(seen[0] && seen[1] && seen[2]);
	fx_gone(x, b);
	REQUIRE(engine_waiting(x->e) == 2);
	for (size_t i = 0; i < engine_waiting(x->e); i++)
		CHECK(engine_waiting_at(x->e, i) != b);
	fx_ok(x, 0, 1);
	CHECK(engine_waiting(x->e) == 1);
	CHECK(engine_waiting_at(x->e, 0) == c);
	CHECK(engine_queue_len(x->e) == 1);
	CHECK(engine_queue_len_client(x->e, 0) + engine_queue_len_client(x->e, 1) == 1);
	fx_end(x);
}

/* ---- deadlines ---------------------------------------------------------------- */

TEST(deadline_expiry_while_queued_answers_quota_wait_and_the_flight_goes_on)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *c;

	a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 900);         /* predicted 200 ms: accepted */
	c = fx_join(x, 1, 0, 2, 10000);
	CHECK_WAITING(x, b);
	fx_advance(x, 100 * MS);
	fx_throttle(x, 0, 1);              /* key 1 retried first, at 1100 ms */
	CHECK_WAITING(x, a);
	fx_run_until(x, T0 + 899 * MS);
	CHECK_WAITING(x, b);
	fx_run_until(x, T0 + 950 * MS);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(answered_at(x, b) >= T0 + 900 * MS);
	CHECK(answered_at(x, b) <= T0 + 901 * MS);
	CHECK(body_has(b, "Proxy.QuotaWait"));
	CHECK(b->answer.retry_after_s >= 1);
	CHECK_WAITING(x, c);
	CHECK(engine_flights(x->e) == 2);
	fx_run_until(x, T0 + 3 * SEC);
	CHECK(sends_of(x, 0, 1) == 2);
	CHECK(sends_of(x, 0, 2) == 1);
	CHECK(send_of(x, 0, 2, 0) == 2);
	fx_ok_all(x);
	CHECK_MISS(x, a);
	CHECK_MISS(x, c);
	fx_end(x);
}

TEST(reconfigured_lower_rate_expires_queued_callers_at_their_deadline)
{
	struct fx *x = fx_new();
	struct engine_settings s = default_settings();
	struct engine_caller *c[6];

	for (unsigned i = 0; i < 6; i++)
		c[i] = fx_call(x, 0, i, 1500);
	fx_tick(x);
	s.limiter.rate = 1;
	engine_configure(x->e, &s, x->now_us);
	fx_run_until(x, T0 + 3 * SEC);
	/* At 1/s only the first two go before 1.5 s. */
	for (unsigned i = 0; i < 6; i++) {
		if (sends_of(x, 0, i) == 0) {
			CHECK_ANSWER(x, c[i], ENGINE_OUTCOME_QUOTA_WAIT, 503);
			CHECK(answered_at(x, c[i]) <= T0 + 1501 * MS);
		}
	}
	REQUIRE(x->n_sends >= 2);
	CHECK(key_eq(&x->sends[0].key, &c[0]->key));
	CHECK(key_eq(&x->sends[1].key, &c[1]->key));
	CHECK(x->sends[1].at_us > T0 + SEC);
	for (size_t i = 1; i < x->n_sends; i++)
		CHECK(x->sends[i].at_us - x->sends[i - 1].at_us >= SEC);
	/* Flights whose callers all gave up may still go, in the background. */
	for (size_t i = 2; i < x->n_sends; i++)
		CHECK(x->sends[i].background);
	fx_ok_all(x);
	CHECK_MISS(x, c[0]);
	CHECK_MISS(x, c[1]);
	fx_end(x);
}

/* ---- answers: stale fallback and negative entries ------------------------------ */

TEST(failure_falls_back_to_a_stale_entry_within_stale_while_revalidate_or_stale_if_error)
{
	struct fx *x = fx_new();
	int64_t now_s = fx_now_s(x);
	struct cams_key k = key_of(0, 1);
	struct engine_caller *sie, *swr, *no_stale, *too_old, *none;
	struct cache_entry *e_sie, *e_swr;

	sie = fx_caller(x, 0, 1, 5000);
	e_sie = entry_key(&k, now_s - 3700, now_s - 100);   /* past swr 30, within sie 3600 */
	sie->stale = e_sie;
	swr = fx_caller(x, 1, 1, 5000);
	swr->key = k;
	e_swr = entry_key(&k, now_s - 3610, now_s - 10);    /* within swr */
	swr->stale = e_swr;
	no_stale = fx_caller(x, 2, 1, 5000);
	no_stale->key = k;
	no_stale->stale = entry_key(&k, now_s - 3700, now_s - 100);
	no_stale->no_stale = true;
	too_old = fx_caller(x, 3, 1, 5000);
	too_old->key = k;
	too_old->stale = entry_key(&k, now_s - 10000, now_s - 7200);
	none = fx_caller(x, 4, 1, 5000);
	none->key = k;
	fx_submit(x, sie);
	fx_submit(x, swr);
	fx_submit(x, no_stale);
	fx_submit(x, too_old);
	fx_submit(x, none);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	fx_advance(x, 2 * SEC);
	fx_fail(x, 0, 1);

	CHECK_ANSWER(x, sie, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(sie->answer.entry == e_sie);
	CHECK(sie->answer.age_s == 3702);
	CHECK(status_has(sie, "stale"));
	CHECK(status_has(sie, "upstream-error"));
	CHECK_ANSWER(x, swr, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(swr->answer.entry == e_swr);

	CHECK_ANSWER(x, no_stale, ENGINE_OUTCOME_UPSTREAM_ERROR, 502);
	CHECK(no_stale->answer.entry == NULL);
	CHECK(body_has(no_stale, "Proxy.UpstreamError"));
	CHECK(body_has(no_stale, no_stale->request_id));
	CHECK(status_has(no_stale, "fwd=miss"));
	CHECK_ANSWER(x, too_old, ENGINE_OUTCOME_UPSTREAM_ERROR, 502);
	CHECK(too_old->answer.entry == NULL);
	CHECK(body_has(too_old, "Proxy.UpstreamError"));
	CHECK_ANSWER(x, none, ENGINE_OUTCOME_UPSTREAM_ERROR, 502);
	CHECK(body_has(none, none->request_id));
	fx_end(x);
}

TEST(failed_call_passes_the_upstream_status_code_and_request_id_through)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b;
	struct engine_reply r = reply_of(ENGINE_REPLY_FAILED);
	struct cams_key k1 = key_of(0, 1), k2 = key_of(0, 2);

	a = fx_call(x, 0, 1, 5000);
	fx_tick(x);
	b = fx_call(x, 0, 2, 5000);
	fx_advance(x, 300 * MS);
	REQUIRE(x->n_sends == 2);
	r.http_status = 504;
	r.code = "Proxy.UpstreamTimeout";
	r.message = "the upstream did not answer within 3000 ms";
	r.stale_reason = "upstream-timeout";
	fx_reply_key(x, &k1, &r);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_UPSTREAM_ERROR, 504);
	CHECK(body_has(a, "Proxy.UpstreamTimeout"));
	CHECK(a->answer.retry_after_s == 0);
	r = reply_of(ENGINE_REPLY_FAILED);
	r.code = "InvalidAccessKeyId.NotFound";
	r.message = "the upstream rejected the daemon's request";
	r.request_id = "UP-RID-42";
	fx_reply_key(x, &k2, &r);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_UPSTREAM_ERROR, 502);
	CHECK(body_has(b, "InvalidAccessKeyId.NotFound"));
	CHECK(body_has(b, "UP-RID-42"));
	fx_end(x);
}

TEST(throttle_retries_exhausted_fall_back_to_an_accepted_stale_entry)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *a, *b;
	struct cams_key k = key_of(0, 1);
	struct cache_entry *stale;
	int64_t now_s;

	s.upstream_retries = 0;
	x = fx_new_with(&s);
	now_s = fx_now_s(x);
	a = fx_caller(x, 0, 1, 5000);
	stale = entry_key(&k, now_s - 4000, now_s - 200);
	a->stale = stale;
	fx_submit(x, a);
	b = fx_join(x, 1, 0, 1, 5000);
	fx_tick(x);
	fx_advance(x, 40 * MS);
	fx_throttle(x, 0, 1);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(a->answer.entry == stale);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_THROTTLED, 503);
	CHECK(x->n_sends == 1);
	fx_end(x);
}

TEST(negative_entry_answers_miss_negative_to_every_joiner)
{
	struct fx *x = fx_new();
	struct engine_caller *c[3];

	for (unsigned i = 0; i < 3; i++) {
		c[i] = fx_caller(x, i, 7, 5000);
		c[i]->key = key_of(0, 7);
		fx_submit(x, c[i]);
	}
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	fx_reply_fake(x, &c[0]->key, FAKE_NEGATIVE);
	for (unsigned i = 0; i < 3; i++) {
		CHECK_ANSWER(x, c[i], ENGINE_OUTCOME_MISS_NEGATIVE, 404);
		CHECK(c[i]->answer.entry != NULL);
		CHECK(c[i]->answer.entry == c[0]->answer.entry);
		CHECK(c[i]->answer.entry && c[i]->answer.entry->kind == CACHE_KIND_NEGATIVE);
		CHECK(status_has(c[i], "fwd=miss"));
	}
	fx_end(x);
}

TEST(quota_refusal_falls_back_to_a_stale_entry_the_caller_accepts)
{
	struct fx *x = fx_new();
	struct engine_caller *a;
	struct cams_key k = key_of(0, 5);
	struct cache_entry *stale;
	int64_t now_s = fx_now_s(x);

	fx_call(x, 0, 1, 10000);
	fx_tick(x);
	a = fx_caller(x, 0, 5, 0);
	stale = entry_key(&k, now_s - 4000, now_s - 300);
	a->stale = stale;
	fx_submit(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(a->answer.entry == stale);
	CHECK(status_has(a, "stale"));
	fx_end(x);
}

/* ---- fair shares and reconfiguration ------------------------------------------- */

/* Closed-loop backlog: every SEND of a client's key brings a new key of that client. */
struct backlog {
	unsigned next_n[QUEUE_MAX_CLIENTS];
};

static void backlog_on_send(struct fx *x, const struct sent *s)
{
	struct backlog *b = x->cls;
	unsigned client = client_of_key(&s->key);

	if (x->stopped || s->attempts > 1)
		return;
	fx_call(x, client, b->next_n[client]++, LONG_WAIT_MS);
}

static void backlog_start(struct fx *x, struct backlog *b, unsigned clients, unsigned depth)
{
	memset(b, 0, sizeof(*b));
	x->cls = b;
	x->on_send = backlog_on_send;
	x->latency_min_us = x->latency_max_us = 30 * MS;
	for (unsigned d = 0; d < depth; d++)
		for (unsigned c = 0; c < clients; c++)
			fx_call(x, c, b->next_n[c]++, LONG_WAIT_MS);
}

static void count_sends(const struct fx *x, int64_t from_us, int64_t to_us, size_t *ret_counts,
			unsigned clients)
{
	for (unsigned c = 0; c < clients; c++)
		ret_counts[c] = 0;
	for (size_t i = 0; i < x->n_sends; i++) {
		unsigned c = client_of_key(&x->sends[i].key);

		if (x->sends[i].at_us >= from_us && x->sends[i].at_us < to_us && c < clients)
			ret_counts[c]++;
	}
}

TEST(weights_one_to_three_share_a_backlog_one_to_three)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct backlog b;
	size_t n[2];
	double share;

	s.weights[1] = 3;
	x = fx_new_with(&s);
	backlog_start(x, &b, 2, 4);
	fx_run_until(x, T0 + 22 * SEC);
	count_sends(x, T0 + 2 * SEC, T0 + 22 * SEC, n, 2);
	share = (double)n[1] / (double)(n[0] + n[1]);
	printf("# weights 1:3 over 20 s: client0 %zu, client1 %zu sends\n", n[0], n[1]);
	CHECK(n[0] + n[1] >= 95);
	CHECK(share > 0.70 && share < 0.80);
	x->on_send = NULL;
	fx_run_until(x, x->now_us + SEC);
	fx_end(x);
}

TEST(reconfigure_changes_weights_for_a_backlog_without_losing_callers)
{
	struct fx *x = fx_new();
	struct engine_settings s = default_settings();
	struct backlog b;
	size_t before[2], after[2];
	double share_before, share_after;
	size_t queued;

	backlog_start(x, &b, 2, 4);
	fx_run_until(x, T0 + 12 * SEC);
	queued = engine_queue_len(x->e);
	s.weights[0] = 3;
	engine_configure(x->e, &s, x->now_us);
	CHECK(engine_queue_len(x->e) == queued);
	fx_run_until(x, T0 + 34 * SEC);
	count_sends(x, T0 + 2 * SEC, T0 + 12 * SEC, before, 2);
	count_sends(x, T0 + 14 * SEC, T0 + 34 * SEC, after, 2);
	share_before = (double)before[0] / (double)(before[0] + before[1]);
	share_after = (double)after[0] / (double)(after[0] + after[1]);
	printf("# weights 1:1 then 3:1: client0 share %.2f then %.2f\n", share_before, share_after);
	CHECK(share_before > 0.45 && share_before < 0.55);
	CHECK(share_after > 0.70 && share_after < 0.80);
	/* Everyone queued is still served: drain the backlog and look. */
	x->on_send = NULL;
	fx_run_until(x, x->now_us + 10 * SEC);
	for (size_t i = 0; i < x->n_callers; i++)
		if (x->submitted[i])
			CHECK(x->answers[i] == 1 && x->callers[i].answer.outcome == ENGINE_OUTCOME_MISS);
	fx_end(x);
}

TEST(reconfigure_raises_the_rate_without_losing_queued_flights)
{
	struct fx *x = fx_new();
	struct engine_settings s = default_settings();
	struct engine_caller *c[10];

	for (unsigned i = 0; i < 10; i++)
		c[i] = fx_call(x, 0, i, 60000);
	fx_run_until(x, T0 + 300 * MS);
	REQUIRE(x->n_sends == 2);
	s.limiter.rate = 10;
	engine_configure(x->e, &s, x->now_us);
	CHECK(engine_queue_len(x->e) == 8);
	CHECK(engine_flights(x->e) == 10);
	fx_run_until(x, T0 + 3 * SEC);
	REQUIRE(x->n_sends == 10);
	CHECK(x->sends[2].at_us == T0 + 400 * MS);
	for (size_t i = 3; i < 10; i++)
		CHECK(x->sends[i].at_us - x->sends[i - 1].at_us == 100 * MS);
	fx_ok_all(x);
	for (unsigned i = 0; i < 10; i++)
		CHECK_MISS(x, c[i]);
	fx_end(x);
}

TEST(reconfigure_raises_queue_max_for_new_keys)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *over, *d, *e2;

	s.queue_max = 2;
	x = fx_new_with(&s);
	fx_call(x, 0, 0, LONG_WAIT_MS);
	fx_tick(x);
	fx_call(x, 0, 1, LONG_WAIT_MS);
	fx_call(x, 0, 2, LONG_WAIT_MS);
	over = fx_call(x, 0, 3, LONG_WAIT_MS);
	CHECK_ANSWER(x, over, ENGINE_OUTCOME_QUEUE_FULL, 503);
	s.queue_max = 5;
	engine_configure(x->e, &s, x->now_us);
	CHECK(engine_queue_len(x->e) == 2);
	d = fx_call(x, 0, 4, LONG_WAIT_MS);
	CHECK_WAITING(x, d);
	e2 = fx_call(x, 1, 5, LONG_WAIT_MS);
	CHECK_WAITING(x, e2);
	CHECK(fx_refresh(x, 2, 6));
	CHECK(engine_queue_len(x->e) == 5);
	fx_run_until(x, T0 + 3 * SEC);
	CHECK(x->n_sends == 6);
	fx_ok_all(x);
	CHECK_MISS(x, d);
	CHECK_MISS(x, e2);
	fx_end(x);
}

TEST(reconfigure_lowering_queue_max_keeps_the_queued_flights)
{
	struct engine_settings s = default_settings();
	struct fx *x = fx_new_with(&s);
	struct engine_caller *c[4], *over;

	fx_call(x, 0, 9, LONG_WAIT_MS);
	fx_tick(x);
	for (unsigned i = 0; i < 4; i++)
		c[i] = fx_call(x, 0, i, LONG_WAIT_MS);
	s.queue_max = 2;
	engine_configure(x->e, &s, x->now_us);
	CHECK(engine_queue_len(x->e) == 4);
	over = fx_call(x, 1, 0, LONG_WAIT_MS);
	CHECK_ANSWER(x, over, ENGINE_OUTCOME_QUEUE_FULL, 503);
	fx_run_until(x, T0 + 3 * SEC);
	CHECK(x->n_sends == 5);
	fx_ok_all(x);
	for (unsigned i = 0; i < 4; i++)
		CHECK_MISS(x, c[i]);
	fx_end(x);
}

/* ---- the limiter under a long backlog --------------------------------------------- */

static enum fake_reply policy_throttle_every_7th(struct fx *x, const struct wire *w)
{
	(void)w;
	return x->replies % 7 == 6 ? FAKE_THROTTLED : FAKE_OK;
}

/* No two sends closer than min_gap_us; no more than `rate` in any sliding second. */
static void check_send_times(const struct fx *x, int64_t min_gap_us, size_t rate)
{
	size_t gap_bad = 0, window_bad = 0;

	for (size_t i = 1; i < x->n_sends; i++)
		if (x->sends[i].at_us - x->sends[i - 1].at_us < min_gap_us)
			gap_bad++;
	for (size_t i = 0; i + rate < x->n_sends; i++)
		if (x->sends[i + rate].at_us - x->sends[i].at_us <= SEC)
			window_bad++;
	if (gap_bad || window_bad)
		fprintf(stderr, "  %zu sends too close, %zu sliding seconds over %zu\n", gap_bad,
			window_bad, rate);
	CHECK(gap_bad == 0);
	CHECK(window_bad == 0);
}

TEST(long_backlog_with_throttles_keeps_the_spacing_and_the_sliding_second)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	size_t miss = 0, throttled = 0;

	s.queue_max = 128;
	x = fx_new_with(&s);
	x->latency_min_us = x->latency_max_us = 30 * MS;
	x->policy = policy_throttle_every_7th;
	for (unsigned i = 0; i < 100; i++)
		fx_call(x, i % 3, i, LONG_WAIT_MS);
	fx_run_until(x, T0 + 300 * SEC);
	for (size_t i = 0; i < x->n_callers; i++) {
		CHECK(x->answers[i] == 1);
		miss += x->callers[i].answer.outcome == ENGINE_OUTCOME_MISS;
		throttled += x->callers[i].answer.outcome == ENGINE_OUTCOME_THROTTLED;
	}
	CHECK(miss + throttled == 100);
	CHECK(miss >= 95);
	CHECK(x->n_sends == 100 + x->throttles_sent - throttled);
	CHECK(engine_stats(x->e)->throttles == x->throttles_sent);
	CHECK(engine_stats(x->e)->retries == x->throttles_sent - throttled);
	CHECK(x->throttles_sent >= 14);
	check_send_times(x, 200 * MS, 5);
	fx_end(x);
}

TEST(burst_three_still_keeps_the_sliding_second)
{
	struct engine_settings s = default_settings();
	struct fx *x;

	s.limiter.burst = 3;
	s.limiter.margin_ms = 20;
	x = fx_new_with(&s);
	x->latency_min_us = x->latency_max_us = 40 * MS;
	for (unsigned i = 0; i < 40; i++)
		fx_call(x, 0, i, LONG_WAIT_MS);
	fx_tick(x);
	CHECK(x->n_sends == 3);   /* the burst goes at once */
	fx_run_until(x, T0 + 30 * SEC);
	CHECK(x->n_sends == 40);
	check_send_times(x, 0, 5);
	for (size_t i = 0; i + 5 < x->n_sends; i++)
		CHECK(x->sends[i + 5].at_us - x->sends[i].at_us > SEC + 20 * MS);
	fx_end(x);
}

/* ---- shutdown ------------------------------------------------------------------------ */

TEST(stop_answers_queued_callers_and_lets_calls_on_the_wire_finish)
{
	struct fx *x = fx_new();
	struct engine_caller *wire_a, *wire_b, *q1, *q2, *q3, *late, *abandoned;
	size_t sends;

	wire_a = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	fx_advance(x, 200 * MS);
	abandoned = fx_call(x, 0, 2, 10000);
	fx_tick(x);
	REQUIRE(x->n_sends == 2);
	wire_b = fx_join(x, 1, 0, 1, 10000);  /* joins key 1 on the wire */
	q1 = fx_call(x, 0, 3, 10000);
	q2 = fx_join(x, 1, 0, 3, 10000);
	q3 = fx_call(x, 0, 4, 10000);
	CHECK(fx_refresh(x, 0, 5));
	CHECK(engine_queue_len(x->e) == 3);
	sends = x->n_sends;

	fx_stop(x);
	CHECK(engine_stopping(x->e));
	CHECK_ANSWER(x, q1, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK_ANSWER(x, q2, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK_ANSWER(x, q3, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK(body_has(q1, "Proxy.ShuttingDown"));
	CHECK(engine_queue_len(x->e) == 0);
	CHECK(engine_flights(x->e) == 2);
	CHECK_WAITING(x, wire_a);
	CHECK_WAITING(x, abandoned);

	/* Submissions after the stop are answered at once, nothing new is sent. */
	late = fx_call(x, 2, 9, 10000);
	CHECK_ANSWER(x, late, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK(body_has(late, "Proxy.ShuttingDown"));
	CHECK(!fx_refresh(x, 2, 10));
	fx_advance(x, 2 * SEC);
	CHECK(x->n_sends == sends);

	/* A call on the wire still delivers its answer. */
	fx_ok(x, 0, 1);
	CHECK_MISS(x, wire_a);
	CHECK_MISS(x, wire_b);
	CHECK_WAITING(x, abandoned);

	/* Abort answers whoever still waits. */
	fx_abort(x);
	CHECK_ANSWER(x, abandoned, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK(engine_waiting(x->e) == 0);
	CHECK(engine_flights(x->e) == 0);
	CHECK_ANSWER(x, q1, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK_MISS(x, wire_a);
	fx_end(x);
}

TEST(throttle_after_stop_answers_instead_of_retrying)
{
	struct fx *x = fx_new();
	struct engine_caller *a;

	a = fx_call(x, 0, 1, 30000);
	fx_tick(x);
	fx_stop(x);
	CHECK_WAITING(x, a);
	fx_advance(x, 50 * MS);
	fx_throttle(x, 0, 1);
	CHECK(times_answered(x, a) == 1);
	CHECK(a->answer.http_status == 503);
	CHECK(a->answer.outcome == ENGINE_OUTCOME_THROTTLED ||
	      a->answer.outcome == ENGINE_OUTCOME_SHUTTING_DOWN);
	fx_advance(x, 5 * SEC);
	CHECK(x->n_sends == 1);
	CHECK(engine_flights(x->e) == 0);
	fx_end(x);
}

TEST(abort_drops_sends_the_driver_has_not_taken)
{
	struct fx *x = fx_new();
	struct engine_caller *a = fx_caller(x, 0, 1, 10000);
	struct engine_action act;
	unsigned sends = 0, answers = 0;

	x->submitted[0] = true;
	engine_submit(x->e, a, x->now_us, fx_now_s(x));
	engine_tick(x->e, x->now_us, fx_now_s(x));
	/* The SEND is pending; the driver stops before taking it. */
	engine_stop(x->e, x->now_us, fx_now_s(x));
	engine_abort(x->e, fx_now_s(x));
	x->stopped = x->aborted = true;
	while (engine_next_action(x->e, &act)) {
		if (act.kind == ENGINE_ACTION_SEND)
			sends++;
		else if (act.kind == ENGINE_ACTION_ANSWER && act.caller == a)
			answers++;
	}
	x->answers[0] = answers;
	CHECK(sends == 0);
	CHECK(answers == 1);
	CHECK(a->answer.outcome == ENGINE_OUTCOME_SHUTTING_DOWN);
	CHECK(a->answer.http_status == 503);
	/* The engine decided a send the driver never took: fx_end compares counts. */
	x->n_sends = (size_t)engine_stats(x->e)->sends;
	fx_end(x);
}

/* ---- many hosts: the gate and shared grants ------------------------------------------------ */

static struct engine_settings grants_settings(unsigned max_pending)
{
	struct engine_settings s = default_settings();

	s.grants_max_pending = max_pending;
	return s;
}

/* A fixture whose gate is GRANTS from the start (no local send before). */
static struct fx *fx_new_grants(unsigned max_pending)
{
	struct engine_settings s = grants_settings(max_pending);
	struct fx *x = fx_new_with(&s);

	fx_set_gate(x, ENGINE_GATE_GRANTS);
	return x;
}

TEST(grants_gate_sends_nothing_without_a_grant)
{
	struct fx *x = fx_new_grants(2);
	struct engine_caller *a, *b, *c;

	CHECK(engine_gate(x->e) == ENGINE_GATE_GRANTS);
	a = fx_call(x, 0, 1, LONG_WAIT_MS);
	b = fx_call(x, 0, 2, LONG_WAIT_MS);
	c = fx_call(x, 0, 3, LONG_WAIT_MS);
	fx_tick(x);
	CHECK(x->n_sends == 0);
	CHECK(x->n_reserves == 2);           /* grants_max_pending, not one per flight */
	fx_advance(x, 5 * SEC);
	CHECK(x->n_sends == 0);
	CHECK(x->reserves_total == 2);       /* no RESERVE while two are asked */
	CHECK(engine_queue_len(x->e) == 3);
	CHECK_WAITING(x, a);

	/* A grant due now sends one flight, in queue order; one more is asked. */
	fx_grant(x, x->now_us, x->now_us + 100 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) == x->now_us);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(send_of(x, 0, 1, 0) == 0);
	CHECK(x->sends[0].gate == ENGINE_GATE_GRANTS);
	CHECK(engine_stats(x->e)->grants == 1);
	CHECK(engine_stats(x->e)->grants_used == 1);
	CHECK(x->n_reserves == 2);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	CHECK_WAITING(x, b);
	CHECK_WAITING(x, c);
	fx_end(x);
}

TEST(grant_due_later_is_sent_exactly_at_its_send_at)
{
	struct fx *x = fx_new_grants(1);
	struct engine_caller *a = fx_call(x, 0, 1, 10000);

	fx_tick(x);
	REQUIRE(x->n_reserves == 1);
	fx_grant(x, T0 + 300 * MS, T0 + 400 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 300 * MS);
	x->now_us = T0 + 300 * MS - 1;
	fx_tick(x);
	CHECK(x->n_sends == 0);
	fx_run_until(x, T0 + SEC);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].at_us == T0 + 300 * MS);
	CHECK(x->sends[0].quota_wait_us == 300 * MS);
	CHECK(engine_stats(x->e)->grants_used == 1);
	CHECK(engine_stats(x->e)->grants_discarded == 0);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(grant_past_its_latest_time_is_discarded_and_never_sent)
{
	struct fx *x = fx_new_grants(1);
	struct engine_caller *a = fx_call(x, 0, 1, 20000);

	fx_tick(x);
	/* Late on arrival. */
	fx_grant(x, x->now_us - 200 * MS, x->now_us - 1);
	CHECK(engine_stats(x->e)->grants_discarded == 1);
	fx_tick(x);
	CHECK(x->n_sends == 0);
	CHECK(x->n_reserves == 1);           /* asked again */

	/* Held, but the engine runs only after its latest time: thrown away. */
	fx_grant(x, x->now_us + 100 * MS, x->now_us + 150 * MS);
	CHECK(engine_stats(x->e)->grants_discarded == 1);
	x->now_us += 151 * MS;
	fx_tick(x);
	CHECK(x->n_sends == 0);
	CHECK(engine_stats(x->e)->grants_discarded == 2);
	CHECK(x->n_reserves == 1);

	/* Exactly at latest is still within the grant. */
	fx_grant(x, x->now_us - 50 * MS, x->now_us);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(engine_stats(x->e)->grants == 3);
	CHECK(engine_stats(x->e)->grants_used == 1);
	CHECK(engine_stats(x->e)->grants_discarded == 2);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(grants_asked_and_held_stay_within_max_pending_and_the_queue)
{
	struct fx *x = fx_new_grants(4);

	fx_call(x, 0, 1, LONG_WAIT_MS);
	fx_tick(x);
	CHECK(x->n_reserves == 1);           /* one flight queued: one grant */
	fx_call(x, 0, 2, LONG_WAIT_MS);
	fx_call(x, 0, 3, LONG_WAIT_MS);
	fx_tick(x);
	CHECK(x->n_reserves == 3);
	for (unsigned i = 4; i < 10; i++)
		fx_call(x, 0, i, LONG_WAIT_MS);
	fx_tick(x);
	CHECK(x->n_reserves == 4);
	/* Held grants count too: two held (not due), two asked. */
	fx_grant(x, x->now_us + SEC, x->now_us + 2 * SEC);
	fx_grant(x, x->now_us + SEC, x->now_us + 2 * SEC);
	fx_tick(x);
	CHECK(x->n_reserves == 2);
	CHECK(x->reserves_total == 4);
	fx_advance(x, 500 * MS);
	CHECK(x->reserves_total == 4);
	CHECK(x->n_sends == 0);
	/* At send_at both go, and two more are asked. */
	fx_run_until(x, x->now_us + 500 * MS);
	CHECK(x->n_sends == 2);
	CHECK(x->n_reserves == 4);
	CHECK(x->reserves_total == 6);
	fx_end(x);
}

TEST(grant_failed_delays_the_next_reserve_until_retry_at)
{
	struct fx *x = fx_new_grants(1);
	struct engine_caller *a = fx_call(x, 0, 1, 20000);

	fx_tick(x);
	REQUIRE(x->n_reserves == 1);
	fx_grant_failed(x, T0 + 500 * MS);
	fx_tick(x);
	CHECK(x->n_reserves == 0);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 500 * MS);
	x->now_us = T0 + 500 * MS - 1;
	fx_tick(x);
	CHECK(x->reserves_total == 1);
	fx_run_until(x, T0 + SEC);
	CHECK(x->reserves_total == 2);
	CHECK(x->last_reserve_us == T0 + 500 * MS);
	/* A retry time in the past does not move it back. */
	fx_grant_failed(x, T0);
	fx_tick(x);
	CHECK(x->reserves_total == 3);
	fx_grant(x, x->now_us, x->now_us + 10 * MS);
	fx_tick(x);
	CHECK(x->n_sends == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(next_wake_in_grants_is_the_held_send_at_or_the_reserve_time)
{
	struct fx *x = fx_new_grants(2);

	/* Nothing queued: nothing to wake for. */
	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_call(x, 0, 1, 30000);
	fx_call(x, 0, 2, 30000);
	/* RESERVE not asked yet: now. */
	CHECK(engine_next_wake_us(x->e, x->now_us) == x->now_us);
	fx_tick(x);
	/* Both asked, none held: only the callers' deadline. */
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 30 * SEC + 1);
	fx_grant(x, T0 + 700 * MS, T0 + 800 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 700 * MS);
	fx_grant(x, T0 + 400 * MS, T0 + 800 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 400 * MS);
	fx_run_until(x, T0 + 400 * MS);
	CHECK(x->n_sends == 1);
	/* One held (700 ms), one flight queued: the held one is enough. */
	CHECK(x->reserves_total == 2);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 700 * MS);
	fx_run_until(x, T0 + 700 * MS);
	CHECK(x->n_sends == 2);
	CHECK(engine_next_wake_us(x->e, x->now_us) == INT64_MAX);
	fx_ok_all(x);
	/* A failed RESERVE: the retry time. */
	fx_call(x, 0, 3, 30000);
	fx_tick(x);
	REQUIRE(x->n_reserves == 1);
	fx_grant_failed(x, x->now_us + 250 * MS);
	CHECK(engine_next_wake_us(x->e, x->now_us) == x->now_us + 250 * MS);
	fx_end(x);
}

struct grants_backlog {
	struct backlog b;            /* first: backlog_on_send reads x->cls as a backlog */
	int64_t next_grant_us;
};

/* A fake shared limiter: grants spaced 200 ms, due at once when possible, 100 ms to use. */
static void grant_spaced(struct fx *x, struct grant_reply *ret)
{
	struct grants_backlog *gb = x->cls;

	ret->ok = true;
	ret->send_at_us = gb->next_grant_us > x->now_us ? gb->next_grant_us : x->now_us;
	ret->latest_us = ret->send_at_us + 100 * MS;
	gb->next_grant_us = ret->send_at_us + 200 * MS;
}

TEST(weighted_fair_queue_decides_which_flight_a_grant_sends)
{
	struct engine_settings s = grants_settings(2);
	struct fx *x;
	struct grants_backlog gb;
	size_t n[2];
	double share;

	s.weights[1] = 3;
	x = fx_new_with(&s);
	fx_set_gate(x, ENGINE_GATE_GRANTS);
	backlog_start(x, &gb.b, 2, 4);
	gb.next_grant_us = 0;
	x->cls = &gb;
	x->grant_policy = grant_spaced;
	x->grant_latency_min_us = x->grant_latency_max_us = 5 * MS;
	fx_run_until(x, T0 + 22 * SEC);
	count_sends(x, T0 + 2 * SEC, T0 + 22 * SEC, n, 2);
	share = (double)n[1] / (double)(n[0] + n[1]);
	printf("# grants, weights 1:3 over 20 s: client0 %zu, client1 %zu sends\n", n[0], n[1]);
	CHECK(n[0] + n[1] >= 95);
	CHECK(share > 0.70 && share < 0.80);
	CHECK(engine_stats(x->e)->grants_used == x->n_sends);
	x->on_send = NULL;
	fx_run_until(x, x->now_us + SEC);
	fx_end(x);
}

TEST(throttle_in_grants_mode_requeues_and_the_retry_needs_a_new_grant)
{
	struct fx *x = fx_new_grants(1);
	struct engine_caller *a = fx_call(x, 0, 1, 30000);

	fx_tick(x);
	fx_grant(x, x->now_us, x->now_us + 50 * MS);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	fx_advance(x, 20 * MS);
	fx_throttle(x, 0, 1);
	CHECK_WAITING(x, a);
	CHECK(engine_queue_len(x->e) == 1);
	fx_tick(x);
	CHECK(x->n_reserves == 1);           /* the retry asks its own grant */
	fx_advance(x, 3 * SEC);
	CHECK(x->n_sends == 1);
	fx_grant(x, x->now_us + 100 * MS, x->now_us + 200 * MS);
	fx_run_until(x, x->now_us + 150 * MS);
	REQUIRE(x->n_sends == 2);
	CHECK(x->sends[1].attempts == 2);
	CHECK(engine_stats(x->e)->retries == 1);
	CHECK(engine_stats(x->e)->grants_used == 2);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(grants_after_local_sends_wait_one_window_after_the_last_local_send)
{
	struct engine_settings s = grants_settings(2);
	struct fx *x = fx_new_with(&s);
	struct engine_caller *c;

	fx_call(x, 0, 1, 10000);
	fx_call(x, 0, 2, 10000);
	fx_run_until(x, T0 + 200 * MS);
	REQUIRE(x->n_sends == 2);
	CHECK(x->sends[1].at_us == T0 + 200 * MS);
	CHECK(x->sends[1].gate == ENGINE_GATE_LOCAL);
	fx_ok_all(x);
	x->now_us = T0 + 300 * MS;
	fx_set_gate(x, ENGINE_GATE_GRANTS);
	c = fx_call(x, 0, 3, 10000);
	fx_tick(x);
	CHECK(x->reserves_total == 0);
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 1200 * MS);
	x->now_us = T0 + 1200 * MS - 1;
	fx_tick(x);
	CHECK(x->reserves_total == 0);
	fx_run_until(x, T0 + 1300 * MS);
	CHECK(x->reserves_total == 1);
	CHECK(x->last_reserve_us == T0 + 1200 * MS);
	fx_grant(x, x->now_us, x->now_us + 50 * MS);
	fx_tick(x);
	CHECK(x->n_sends == 3);
	fx_ok(x, 0, 3);
	CHECK_MISS(x, c);
	fx_end(x);
}

TEST(grants_to_local_discards_held_grants)
{
	struct fx *x = fx_new_grants(3);
	struct engine_caller *c[3];

	for (unsigned i = 0; i < 3; i++)
		c[i] = fx_call(x, 0, i, 10000);
	fx_tick(x);
	REQUIRE(x->n_reserves == 3);
	fx_grant(x, x->now_us + 500 * MS, x->now_us + 600 * MS);
	fx_grant(x, x->now_us + 700 * MS, x->now_us + 800 * MS);
	fx_set_gate(x, ENGINE_GATE_LOCAL);
	CHECK(engine_stats(x->e)->grants_discarded == 2);
	/* The grant still asked comes back under LOCAL: thrown away too. */
	fx_grant(x, x->now_us, x->now_us + 600 * MS);
	CHECK(engine_stats(x->e)->grants_discarded == 3);
	fx_run_until(x, x->now_us + 400 * MS);
	CHECK(x->n_sends == 3);
	CHECK(engine_stats(x->e)->grants_used == 0);
	for (size_t i = 0; i < x->n_sends; i++)
		CHECK(x->sends[i].gate == ENGINE_GATE_LOCAL);
	CHECK(x->sends[1].at_us - x->sends[0].at_us == 200 * MS);
	fx_ok_all(x);
	for (unsigned i = 0; i < 3; i++)
		CHECK_MISS(x, c[i]);
	fx_end(x);
}

/* ---- many hosts: the closed gate ---------------------------------------------------- */

#define CHECK_UNAVAILABLE(x, c)                                                        \
	do {                                                                           \
		CHECK_ANSWER((x), (c), ENGINE_OUTCOME_QUOTA_UNAVAILABLE, 503);         \
		CHECK(body_has((c), "Proxy.SharedQuotaUnavailable"));                 \
		CHECK((c)->answer.retry_after_s >= 1);                                 \
		CHECK((c)->answer.entry == NULL);                                      \
	} while (0)

TEST(closed_gate_answers_new_misses_shared_quota_unavailable)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *b, *stale, *no_stale, *too_old;
	int64_t now_s = fx_now_s(x);

	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK(engine_gate(x->e) == ENGINE_GATE_CLOSED);
	a = fx_call(x, 0, 1, 10000);
	CHECK_UNAVAILABLE(x, a);
	CHECK(body_has(a, "caller-0"));
	CHECK_STR(a->answer.code, "Proxy.SharedQuotaUnavailable");
	b = fx_call(x, 0, 1, 0);
	CHECK_UNAVAILABLE(x, b);
	CHECK(engine_stats(x->e)->quota_unavailable == 2);

	/* Stale within stale-if-error (3600 s): the entry instead. */
	stale = fx_caller(x, 0, 2, 10000);
	stale->stale = entry_key(&stale->key, now_s - 4000, now_s - 100);
	fx_submit(x, stale);
	CHECK_ANSWER(x, stale, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(stale->answer.entry != NULL);
	CHECK(status_has(stale, "stale"));
	CHECK(status_has(stale, "detail=quota-unavailable"));
	no_stale = fx_caller(x, 0, 3, 10000);
	no_stale->stale = entry_key(&no_stale->key, now_s - 4000, now_s - 100);
	no_stale->no_stale = true;
	fx_submit(x, no_stale);
	CHECK_UNAVAILABLE(x, no_stale);
	too_old = fx_caller(x, 0, 4, 10000);
	too_old->stale = entry_key(&too_old->key, now_s - 9000, now_s - 4000);
	fx_submit(x, too_old);
	CHECK_UNAVAILABLE(x, too_old);
	CHECK(engine_stats(x->e)->quota_unavailable == 4);
	fx_advance(x, 3 * SEC);
	CHECK(x->n_sends == 0);
	CHECK(engine_flights(x->e) == 0);
	fx_end(x);
}

TEST(closing_the_gate_answers_quota_waiters_but_calls_on_the_wire_finish)
{
	struct fx *x = fx_new();
	struct engine_caller *wire, *q1, *q2, *st, *joiner, *fresh, *after;
	int64_t now_s = fx_now_s(x);

	wire = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	q1 = fx_call(x, 0, 2, 10000);
	q2 = fx_join(x, 1, 0, 2, 10000);
	st = fx_caller(x, 0, 3, 10000);
	st->stale = entry_key(&st->key, now_s - 4000, now_s - 100);
	fx_submit(x, st);
	CHECK_WAITING(x, q1);
	CHECK_WAITING(x, st);
	x->now_us += 50 * MS;
	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK_UNAVAILABLE(x, q1);
	CHECK_UNAVAILABLE(x, q2);
	CHECK_ANSWER(x, st, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(answered_at(x, q1) == T0 + 50 * MS);
	CHECK_WAITING(x, wire);
	CHECK(engine_stats(x->e)->quota_unavailable == 2);

	/* Joiners of the call on the wire still join it; new misses do not. */
	joiner = fx_join(x, 2, 0, 1, 10000);
	CHECK_WAITING(x, joiner);
	fresh = fx_call(x, 0, 4, 10000);
	CHECK_UNAVAILABLE(x, fresh);
	fx_advance(x, 3 * SEC);
	CHECK(x->n_sends == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, wire);
	CHECK_MISS(x, joiner);

	/* Reopened: new misses are served again. */
	fx_set_gate(x, ENGINE_GATE_LOCAL);
	after = fx_call(x, 0, 5, 10000);
	fx_run_until(x, x->now_us + 2 * SEC);
	REQUIRE(on_wire(x, 0, 5));
	CHECK(x->sends[send_of(x, 0, 5, 0)].gate == ENGINE_GATE_LOCAL);
	fx_ok(x, 0, 5);
	CHECK_MISS(x, after);
	fx_end(x);
}

TEST(closed_gate_reopened_as_grants_serves_new_misses)
{
	struct engine_settings s = grants_settings(1);
	struct fx *x = fx_new_with(&s);
	struct engine_caller *a, *b;

	fx_set_gate(x, ENGINE_GATE_CLOSED);
	a = fx_call(x, 0, 1, 10000);
	CHECK_UNAVAILABLE(x, a);
	fx_set_gate(x, ENGINE_GATE_GRANTS);
	b = fx_call(x, 0, 1, 10000);
	fx_tick(x);
	CHECK_WAITING(x, b);
	REQUIRE(x->n_reserves == 1);
	fx_grant(x, x->now_us, x->now_us + 10 * MS);
	fx_tick(x);
	CHECK(x->n_sends == 1);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, b);
	fx_end(x);
}

TEST(closing_grants_discards_held_grants_and_asks_none)
{
	struct fx *x = fx_new_grants(2);
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 10000);
	b = fx_call(x, 0, 2, 10000);
	fx_tick(x);
	REQUIRE(x->n_reserves == 2);
	fx_grant(x, x->now_us + 100 * MS, x->now_us + 200 * MS);
	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK(engine_stats(x->e)->grants_discarded == 1);
	CHECK_UNAVAILABLE(x, a);
	CHECK_UNAVAILABLE(x, b);
	fx_grant(x, x->now_us, x->now_us + 200 * MS);
	CHECK(engine_stats(x->e)->grants_discarded == 2);
	fx_advance(x, 2 * SEC);
	CHECK(x->n_sends == 0);
	CHECK(x->reserves_total == 2);
	fx_end(x);
}

TEST(throttle_while_closed_answers_the_callers_unavailable_instead_of_waiting)
{
	struct fx *x = fx_new();
	struct engine_caller *a, *st;
	int64_t now_s = fx_now_s(x);

	a = fx_call(x, 0, 1, 20000);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	st = fx_caller(x, 0, 1, 20000);
	st->stale = entry_key(&st->key, now_s - 4000, now_s - 100);
	fx_submit(x, st);
	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK_WAITING(x, a);
	CHECK_WAITING(x, st);
	fx_advance(x, 50 * MS);
	fx_throttle(x, 0, 1);
	/* No quota can come while closed: answered now, not at the wait limit. */
	CHECK_UNAVAILABLE(x, a);
	CHECK_ANSWER(x, st, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK(engine_queue_len(x->e) == 0);
	fx_advance(x, 30 * SEC);
	CHECK(x->n_sends == 1);
	fx_end(x);
}

/* ---- many hosts: claims in the shared tier ------------------------------------------ */

static struct fx *fx_new_shared(void)
{
	struct engine_settings s = default_settings();

	s.shared = true;
	s.grants_max_pending = 2;
	return fx_new_with(&s);
}

#define CHECK_SHARED_HIT(x, c)                                                         \
	do {                                                                           \
		CHECK_ANSWER((x), (c), ENGINE_OUTCOME_HIT_SHARED, 200);                \
		CHECK((c)->answer.entry && key_eq(&(c)->answer.entry->key, &(c)->key)); \
		CHECK_STR((c)->answer.cache_status, "hit; detail=shared");            \
	} while (0)

TEST(shared_new_flight_claims_its_key_and_sends_nothing)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a, *b;
	struct cams_key k1 = key_of(0, 1), k2 = key_of(0, 2);

	a = fx_call(x, 0, 1, 10000);
	b = fx_join(x, 1, 0, 1, 10000);
	REQUIRE(x->claims_total == 1);
	CHECK(key_eq(&x->claim_log[0].key, &k1));
	CHECK(x->claim_log[0].seq > 0);
	CHECK(!x->claim_log[0].background);
	CHECK(engine_stats(x->e)->joined == 1);
	CHECK(fx_refresh(x, 0, 2));
	REQUIRE(x->claims_total == 2);
	CHECK(key_eq(&x->claim_log[1].key, &k2));
	CHECK(x->claim_log[1].background);
	CHECK(x->claim_log[1].seq != x->claim_log[0].seq);
	fx_advance(x, 2 * SEC);
	CHECK(x->n_sends == 0);
	CHECK(x->claims_total == 2);         /* one claim per flight */
	CHECK(engine_queue_len(x->e) == 0);
	CHECK(engine_flights(x->e) == 2);
	CHECK_WAITING(x, a);
	CHECK_WAITING(x, b);
	fx_end(x);
}

TEST(shared_hit_answers_every_waiter_from_the_shared_tier_without_a_send)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *c[3];
	uint64_t seq;

	for (unsigned i = 0; i < 3; i++)
		c[i] = fx_join(x, i, 0, 1, 10000);
	REQUIRE(x->n_claims == 1);
	seq = x->claims[0].seq;
	x->now_us += 30 * MS;
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HIT, 0));
	for (unsigned i = 0; i < 3; i++) {
		CHECK_SHARED_HIT(x, c[i]);
		CHECK(c[i]->answer.age_s == 5);
		CHECK(answered_at(x, c[i]) == T0 + 30 * MS);
	}
	CHECK(c[1]->answer.entry == c[0]->answer.entry);
	CHECK(engine_stats(x->e)->shared_hits == 3);
	CHECK(engine_stats(x->e)->shared_joins == 0);
	CHECK(engine_flights(x->e) == 0);
	/* The same claim answered twice: the flight is gone. */
	CHECK(!fx_claim_seq(x, 0, 1, seq, ENGINE_CLAIM_HIT, 0));
	fx_advance(x, 2 * SEC);
	CHECK(x->n_sends == 0);
	fx_end(x);
}

TEST(shared_owned_queues_the_flight_with_its_lease_then_sends)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a = fx_call(x, 0, 1, 10000);

	fx_tick(x);
	CHECK(x->n_sends == 0);
	x->now_us += 20 * MS;
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	CHECK(engine_queue_len(x->e) == 1);
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].lease_owned);
	CHECK(x->sends[0].at_us == T0 + 20 * MS);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	CHECK(engine_stats(x->e)->shared_hits == 0);
	fx_end(x);
}

TEST(shared_unavailable_queues_the_flight_without_a_lease)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a = fx_call(x, 0, 1, 10000);

	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_UNAVAILABLE, 0));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(!x->sends[0].lease_owned);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	/* A HIT without an entry is no hit: fetched locally. */
	a = fx_call(x, 0, 2, 10000);
	CHECK(engine_claim_done(x->e, &x->claims[0].key, x->claims[0].seq, ENGINE_CLAIM_HIT, NULL,
				0, x->now_us, fx_now_s(x)));
	x->n_claims = 0;
	fx_drain(x);
	fx_run_until(x, x->now_us + 200 * MS);  /* the local limiter's spacing */
	REQUIRE(x->n_sends == 2);
	CHECK(!x->sends[1].lease_owned);
	fx_ok(x, 0, 2);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(shared_held_parks_the_flight_remote_and_claims_again_at_retry_at)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a, *b, *late;
	uint64_t seq1, seq2;

	a = fx_call(x, 0, 1, 10000);
	b = fx_join(x, 1, 0, 1, 10000);
	seq1 = x->claims[0].seq;
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 500 * MS));
	CHECK(engine_next_wake_us(x->e, x->now_us) == T0 + 500 * MS);
	/* A caller joining a REMOTE flight waits with the others, no new claim. */
	late = fx_join(x, 2, 0, 1, 10000);
	x->now_us = T0 + 500 * MS - 1;
	fx_tick(x);
	CHECK(x->claims_total == 1);
	fx_run_until(x, T0 + 600 * MS);
	REQUIRE(x->claims_total == 2);
	CHECK(x->claim_log[1].asked_us == T0 + 500 * MS);
	seq2 = x->claim_log[1].seq;
	CHECK(seq2 != seq1);
	/* The old claim's answer is stale. */
	CHECK(!fx_claim_seq(x, 0, 1, seq1, ENGINE_CLAIM_HIT, 0));
	CHECK_WAITING(x, a);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HIT, 0));
	CHECK_SHARED_HIT(x, a);
	CHECK_SHARED_HIT(x, b);
	CHECK_SHARED_HIT(x, late);
	CHECK(engine_stats(x->e)->shared_hits == 3);
	CHECK(engine_stats(x->e)->shared_joins == 3);
	CHECK(x->n_sends == 0);
	fx_end(x);
}

TEST(shared_poke_claims_a_remote_flight_again_at_once)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a = fx_call(x, 0, 1, 10000);

	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 5 * SEC));
	x->now_us += 100 * MS;
	fx_poke(x, 0, 1);
	fx_poke(x, 0, 2);                    /* no flight: nothing */
	CHECK(engine_next_wake_us(x->e, x->now_us) == x->now_us);
	fx_tick(x);
	REQUIRE(x->claims_total == 2);
	CHECK(x->claim_log[1].asked_us == T0 + 100 * MS);
	fx_poke(x, 0, 1);                    /* claiming, not remote: nothing */
	fx_tick(x);
	CHECK(x->claims_total == 2);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].lease_owned);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	CHECK(engine_stats(x->e)->shared_joins == 0);
	fx_end(x);
}

TEST(shared_claim_of_a_finished_flight_or_an_old_claim_seq_is_refused)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a, *b;
	uint64_t seq;

	/* The only caller leaves while claiming: the flight is dropped. */
	a = fx_call(x, 0, 1, 10000);
	fx_gone(x, a);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_GONE, 0);
	CHECK(engine_flights(x->e) == 0);
	CHECK(!fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	CHECK(x->leases_released == 1);      /* the driver gives the lease back */

	/* A flight claimed again: the first claim's OWNED is refused. */
	b = fx_call(x, 0, 2, 10000);
	seq = x->claims[0].seq;
	CHECK(fx_claim(x, 0, 2, ENGINE_CLAIM_HELD, x->now_us + 100 * MS));
	fx_advance(x, 100 * MS);
	REQUIRE(x->n_claims == 1);
	CHECK(!fx_claim_seq(x, 0, 2, seq, ENGINE_CLAIM_OWNED, 0));
	CHECK(x->leases_released == 2);
	CHECK(engine_queue_len(x->e) == 0);
	/* A claim answered for a flight already queued is stale too. */
	seq = x->claims[0].seq;
	CHECK(fx_claim(x, 0, 2, ENGINE_CLAIM_OWNED, 0));
	CHECK(!fx_claim_seq(x, 0, 2, seq, ENGINE_CLAIM_OWNED, 0));
	CHECK(x->leases_released == 3);
	fx_tick(x);
	CHECK(x->n_sends == 1);
	fx_ok(x, 0, 2);
	CHECK_MISS(x, b);
	fx_end(x);
}

TEST(callers_of_a_remote_flight_are_refused_at_their_wait_limit_and_it_is_dropped)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 1000);
	b = fx_join(x, 1, 0, 1, 2000);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 10 * SEC));
	fx_run_until(x, T0 + 1500 * MS);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(body_has(a, "Proxy.QuotaWait"));
	CHECK(a->answer.retry_after_s >= 1);
	CHECK(answered_at(x, a) <= T0 + 1000 * MS + MS);
	CHECK_WAITING(x, b);
	CHECK(engine_flights(x->e) == 1);
	fx_run_until(x, T0 + 2500 * MS);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(engine_flights(x->e) == 0);
	fx_run_until(x, T0 + 20 * SEC);
	CHECK(x->claims_total == 1);         /* dropped: never claimed again */
	CHECK(x->n_sends == 0);
	fx_end(x);
}

TEST(callers_of_a_claiming_flight_are_refused_at_their_wait_limit)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a = fx_call(x, 0, 1, 300);

	fx_run_until(x, T0 + SEC);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_QUOTA_WAIT, 503);
	CHECK(engine_flights(x->e) == 0);
	CHECK(!fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	fx_end(x);
}

TEST(background_refresh_answered_held_is_dropped)
{
	struct fx *x = fx_new_shared();

	CHECK(fx_refresh(x, 0, 1));
	fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 100 * MS);
	CHECK(engine_flights(x->e) == 0);
	fx_run_until(x, T0 + 2 * SEC);
	CHECK(x->claims_total == 1);
	CHECK(x->n_sends == 0);
	/* A refresh answered HIT is done (the driver stores the entry), none answered. */
	CHECK(fx_refresh(x, 0, 2));
	CHECK(fx_claim(x, 0, 2, ENGINE_CLAIM_HIT, 0));
	CHECK(engine_flights(x->e) == 0);
	CHECK(engine_stats(x->e)->shared_hits == 0);
	/* A refresh answered OWNED goes as background work. */
	CHECK(fx_refresh(x, 0, 3));
	CHECK(fx_claim(x, 0, 3, ENGINE_CLAIM_OWNED, 0));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(x->sends[0].background);
	CHECK(x->sends[0].lease_owned);
	fx_ok(x, 0, 3);
	fx_end(x);
}

TEST(caller_joining_a_claiming_refresh_is_served_by_its_claim)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a;

	CHECK(fx_refresh(x, 0, 1));
	a = fx_call(x, 0, 1, 10000);
	CHECK(x->claims_total == 1);
	/* HELD now parks it for the caller instead of dropping it. */
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 100 * MS));
	CHECK(engine_flights(x->e) == 1);
	fx_run_until(x, T0 + 100 * MS);
	REQUIRE(x->n_claims == 1);
	CHECK(!x->claims[0].background);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	CHECK(!x->sends[0].background);
	fx_ok(x, 0, 1);
	CHECK_MISS(x, a);
	fx_end(x);
}

TEST(owned_arriving_while_closed_is_refused_and_the_flight_dropped)
{
	struct fx *x = fx_new_shared();

	CHECK(fx_refresh(x, 0, 1));
	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK(!fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	CHECK(x->leases_released == 1);
	CHECK(engine_flights(x->e) == 0);
	fx_set_gate(x, ENGINE_GATE_LOCAL);
	fx_advance(x, SEC);
	CHECK(x->n_sends == 0);
	fx_end(x);
}

TEST(closing_the_gate_answers_callers_waiting_for_a_claim_at_once)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *claiming, *remote, *st, *wire, *joiner;
	int64_t now_s = fx_now_s(x);

	wire = fx_call(x, 0, 3, 10000);
	CHECK(fx_claim(x, 0, 3, ENGINE_CLAIM_OWNED, 0));
	fx_tick(x);
	REQUIRE(x->n_sends == 1);
	claiming = fx_call(x, 0, 1, 10000);
	remote = fx_call(x, 0, 2, 10000);
	st = fx_caller(x, 1, 2, 10000);
	st->key = key_of(0, 2);
	st->stale = entry_key(&st->key, now_s - 4000, now_s - 100);
	fx_submit(x, st);
	CHECK(fx_claim(x, 0, 2, ENGINE_CLAIM_HELD, T0 + 5 * SEC));
	fx_set_gate(x, ENGINE_GATE_CLOSED);
	CHECK_UNAVAILABLE(x, claiming);
	CHECK_UNAVAILABLE(x, remote);
	CHECK_ANSWER(x, st, ENGINE_OUTCOME_STALE_FALLBACK, 200);
	CHECK_WAITING(x, wire);
	joiner = fx_join(x, 1, 0, 3, 10000);
	CHECK_WAITING(x, joiner);
	CHECK(engine_flights(x->e) == 1);
	CHECK(!fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	fx_run_until(x, T0 + 10 * SEC);
	CHECK(x->claims_total == 3);
	fx_ok(x, 0, 3);
	CHECK_MISS(x, wire);
	CHECK_MISS(x, joiner);
	fx_end(x);
}

TEST(stop_answers_callers_of_claiming_and_remote_flights_and_later_claims_are_refused)
{
	struct fx *x = fx_new_shared();
	struct engine_caller *a, *b;

	a = fx_call(x, 0, 1, 10000);
	b = fx_call(x, 0, 2, 10000);
	CHECK(fx_claim(x, 0, 2, ENGINE_CLAIM_HELD, T0 + SEC));
	CHECK(fx_refresh(x, 0, 3));
	fx_stop(x);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK(engine_flights(x->e) == 0);
	CHECK(!fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	CHECK(!fx_claim(x, 0, 3, ENGINE_CLAIM_HIT, 0));
	CHECK(!fx_claim_seq(x, 0, 2, 1, ENGINE_CLAIM_OWNED, 0));
	fx_advance(x, 2 * SEC);
	CHECK(x->claims_total == 3);
	fx_end(x);
}

TEST(abort_drops_pending_claim_and_reserve_actions)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *a, *b;

	s.shared = true;
	s.grants_max_pending = 2;
	x = fx_new_with(&s);
	fx_set_gate(x, ENGINE_GATE_GRANTS);
	a = fx_call(x, 0, 1, 10000);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_OWNED, 0));
	/* Not drained: b's CLAIM, then a's RESERVE. */
	b = fx_caller(x, 0, 2, 10000);
	x->submitted[caller_index(x, b)] = true;
	engine_submit(x->e, b, x->now_us, fx_now_s(x));
	engine_tick(x->e, x->now_us, fx_now_s(x));
	engine_stop(x->e, x->now_us, fx_now_s(x));
	x->stopped = true;
	fx_abort(x);
	CHECK(x->claims_total == 1);
	CHECK(x->reserves_total == 0);
	CHECK(x->actions_after_abort == 0);
	CHECK_ANSWER(x, a, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	CHECK_ANSWER(x, b, ENGINE_OUTCOME_SHUTTING_DOWN, 503);
	fx_end(x);
}


TEST(flights_claiming_for_callers_count_against_queue_max)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct engine_caller *c[4];

	s.shared = true;
	s.queue_max = 2;
	x = fx_new_with(&s);
	c[0] = fx_call(x, 0, 0, LONG_WAIT_MS);
	c[1] = fx_call(x, 0, 1, LONG_WAIT_MS);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HELD, T0 + 5 * SEC)); /* remote counts too */
	c[2] = fx_call(x, 0, 2, LONG_WAIT_MS);
	CHECK_ANSWER(x, c[2], ENGINE_OUTCOME_QUEUE_FULL, 503);
	CHECK(!fx_refresh(x, 0, 3));         /* no room left for background work */
	CHECK(x->claims_total == 2);
	CHECK(fx_claim(x, 0, 0, ENGINE_CLAIM_OWNED, 0));
	CHECK(engine_queue_len(x->e) == 1);
	/* A HIT frees its room: a new key fits. */
	fx_poke(x, 0, 1);
	fx_tick(x);
	CHECK(fx_claim(x, 0, 1, ENGINE_CLAIM_HIT, 0));
	CHECK_SHARED_HIT(x, c[1]);
	c[3] = fx_call(x, 0, 3, LONG_WAIT_MS);
	CHECK_WAITING(x, c[3]);
	CHECK(fx_claim(x, 0, 3, ENGINE_CLAIM_UNAVAILABLE, 0));
	CHECK(engine_queue_len(x->e) + engine_in_flight(x->e) == 2);
	fx_run_until(x, x->now_us + SEC);
	fx_ok_all(x);
	CHECK_MISS(x, c[0]);
	CHECK_MISS(x, c[3]);
	fx_end(x);
}

/* ---- randomized scenario ------------------------------------------------------------ */

struct chaos {
	size_t closed_waiters;     /* a caller waiting for quota or a claim while closed */
	size_t deadline_violations;
	size_t quota_wait_late;
	size_t bad_retry_after;
	size_t bad_attempts;
};

static enum fake_reply policy_random(struct fx *x, const struct wire *w)
{
	uint64_t r = harness_rng_next() % 100;

	(void)x;
	(void)w;
	if (r < 70)
		return FAKE_OK;
	if (r < 80)
		return FAKE_NEGATIVE;
	if (r < 92)
		return FAKE_THROTTLED;
	return FAKE_FAILED;
}

/* No caller whose flight is not on the wire is held past its deadline. */
static void chaos_check(struct fx *x, struct chaos *ch)
{
	for (size_t i = 0; i < x->n_callers; i++) {
		const struct engine_caller *c = &x->callers[i];
		int64_t deadline = c->submitted_us + (int64_t)c->max_wait_ms * 1000;

		if (!x->submitted[i] || x->answers[i] || x->stopped)
			continue;
		if (wire_index(x, &c->key) == SIZE_MAX && x->now_us > deadline + MS)
			ch->deadline_violations++;
		if (wire_index(x, &c->key) == SIZE_MAX && engine_gate(x->e) == ENGINE_GATE_CLOSED)
			ch->closed_waiters++;
	}
}

TEST(random_traffic_answers_every_caller_once_within_the_sliding_second)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct chaos ch;
	int64_t end_us = T0 + 60 * SEC;

	memset(&ch, 0, sizeof(ch));
	harness_rng_reset(17);
	s.queue_max = 24;
	s.weights[1] = 2;
	s.weights[2] = 3;
	x = fx_new_with(&s);
	x->latency_min_us = 10 * MS;
	x->latency_max_us = 400 * MS;
	x->policy = policy_random;
	while (x->now_us < end_us && x->n_callers < MAX_CALLERS - 1) {
		uint64_t what = harness_rng_next() % 100;
		unsigned client = (unsigned)(harness_rng_next() % 4);
		unsigned n = (unsigned)(harness_rng_next() % 40);

		fx_advance(x, (int64_t)(harness_rng_next() % (150 * MS)));
		chaos_check(x, &ch);
		if (what < 80) {
			static const uint32_t waits[] = { 0, 100, 300, 1000, 2000, 5000, 20000 };
			struct engine_caller *c = fx_caller(x, client, n, waits[harness_rng_next() % 7]);
			uint64_t st = harness_rng_next() % 10;

			c->key = key_of(0, n);   /* clients share keys */
			if (st < 3) {
				int64_t now_s = fx_now_s(x);
				int64_t past = (int64_t)(harness_rng_next() % 5000);

				c->stale = entry_key(&c->key, now_s - past - 3600, now_s - past);
			}
			c->no_stale = st == 9;
			fx_submit(x, c);
		} else if (what < 90) {
			fx_refresh(x, 0, n);
		} else if (x->n_callers > 0) {
			size_t i = (size_t)(harness_rng_next() % x->n_callers);

			if (x->submitted[i] && !x->answers[i])
				fx_gone(x, &x->callers[i]);
		}
		chaos_check(x, &ch);
	}
	for (size_t i = 0; i < x->n_sends; i++)
		if (x->sends[i].attempts < 1 || x->sends[i].attempts > 1 + s.upstream_retries)
			ch.bad_attempts++;
	for (size_t i = 0; i < x->n_callers; i++) {
		const struct engine_caller *c = &x->callers[i];
		int64_t deadline = c->submitted_us + (int64_t)c->max_wait_ms * 1000;

		if (!x->answers[i])
			continue;
		if (c->answer.outcome == ENGINE_OUTCOME_QUOTA_WAIT && x->answered_us[i] > deadline + MS)
			ch.quota_wait_late++;
		if ((c->answer.outcome == ENGINE_OUTCOME_QUOTA_WAIT ||
		     c->answer.outcome == ENGINE_OUTCOME_QUEUE_FULL ||
		     c->answer.outcome == ENGINE_OUTCOME_THROTTLED) &&
		    c->answer.retry_after_s < 1)
			ch.bad_retry_after++;
	}
	printf("# random traffic: %zu callers, %zu sends, %" PRIu64 " throttles\n", x->n_callers,
	       x->n_sends, x->throttles_sent);
	CHECK(ch.deadline_violations == 0);
	CHECK(ch.quota_wait_late == 0);
	CHECK(ch.bad_retry_after == 0);
	CHECK(ch.bad_attempts == 0);
	CHECK(x->n_sends >= 60);   /* throttles keep the rate backed off */
	check_send_times(x, 200 * MS, 5);
	/* Stop with calls on the wire; let some finish, abort the rest. */
	fx_stop(x);
	fx_advance(x, 150 * MS);
	fx_end(x);
}

static void grant_random(struct fx *x, struct grant_reply *ret)
{
	uint64_t r = harness_rng_next() % 100;

	ret->ok = r < 80;
	if (r < 60) {
		ret->send_at_us = x->now_us + (int64_t)(harness_rng_next() % (300 * MS));
		ret->latest_us = ret->send_at_us + (int64_t)(harness_rng_next() % (100 * MS));
	} else if (r < 72) {
		/* late on arrival */
		ret->send_at_us = x->now_us - 100 * MS;
		ret->latest_us = x->now_us - 1 - (int64_t)(harness_rng_next() % (50 * MS));
	} else if (r < 80) {
		/* a window of one instant */
		ret->send_at_us = x->now_us + (int64_t)(harness_rng_next() % (50 * MS));
		ret->latest_us = ret->send_at_us;
	} else {
		ret->retry_at_us = x->now_us + (int64_t)(harness_rng_next() % (500 * MS));
	}
}

static enum engine_claim claim_random(struct fx *x, const struct claim *c, int64_t *ret_retry_at_us)
{
	uint64_t r = harness_rng_next() % 100;

	(void)c;
	*ret_retry_at_us = x->now_us + 50 * MS + (int64_t)(harness_rng_next() % (800 * MS));
	if (r < 20)
		return ENGINE_CLAIM_HIT;
	if (r < 55)
		return ENGINE_CLAIM_OWNED;
	if (r < 80)
		return ENGINE_CLAIM_HELD;
	return ENGINE_CLAIM_UNAVAILABLE;
}

static void random_many_hosts(bool shared, uint64_t salt)
{
	struct engine_settings s = default_settings();
	struct fx *x;
	struct chaos ch;
	int64_t end_us = T0 + 60 * SEC;
	size_t outcomes[ENGINE_OUTCOME_COUNT], bad_shared = 0, gates = 0;
	size_t by_gate[3] = { 0, 0, 0 };

	memset(&ch, 0, sizeof(ch));
	memset(outcomes, 0, sizeof(outcomes));
	harness_rng_reset(salt);
	s.queue_max = 24;
	s.weights[1] = 2;
	s.weights[2] = 3;
	s.shared = shared;
	s.grants_max_pending = 3;
	x = fx_new_with(&s);
	x->latency_min_us = 10 * MS;
	x->latency_max_us = 400 * MS;
	x->policy = policy_random;
	x->grant_policy = grant_random;
	x->grant_latency_min_us = 0;
	x->grant_latency_max_us = 60 * MS;
	x->claim_policy = claim_random;
	x->claim_latency_min_us = 0;
	x->claim_latency_max_us = 40 * MS;
	fx_set_gate(x, ENGINE_GATE_GRANTS);
	while (x->now_us < end_us && x->n_callers < MAX_CALLERS - 1) {
		uint64_t what = harness_rng_next() % 100;
		unsigned client = (unsigned)(harness_rng_next() % 4);
		unsigned n = (unsigned)(harness_rng_next() % 40);

		fx_advance(x, (int64_t)(harness_rng_next() % (150 * MS)));
		chaos_check(x, &ch);
		if (what < 70) {
			static const uint32_t waits[] = { 0, 100, 300, 1000, 2000, 5000, 20000 };
			struct engine_caller *c = fx_caller(x, client, n, waits[harness_rng_next() % 7]);
			uint64_t st = harness_rng_next() % 10;

			c->key = key_of(0, n);   /* clients share keys */
			if (st < 3) {
				int64_t now_s = fx_now_s(x);
				int64_t past = (int64_t)(harness_rng_next() % 5000);

				c->stale = entry_key(&c->key, now_s - past - 3600, now_s - past);
			}
			c->no_stale = st == 9;
			fx_submit(x, c);
		} else if (what < 78) {
			fx_refresh(x, 0, n);
		} else if (what < 88) {
			size_t i = x->n_callers ? (size_t)(harness_rng_next() % x->n_callers) : 0;

			if (x->n_callers && x->submitted[i] && !x->answers[i])
				fx_gone(x, &x->callers[i]);
		} else if (what < 92) {
			fx_poke(x, 0, n);
		} else if (what < 96) {
			uint64_t g = harness_rng_next() % 100;

			fx_set_gate(x, g < 30 ? ENGINE_GATE_LOCAL
					      : g < 75 ? ENGINE_GATE_GRANTS : ENGINE_GATE_CLOSED);
			gates++;
		}
		chaos_check(x, &ch);
	}
	for (size_t i = 0; i < x->n_sends; i++) {
		if (x->sends[i].attempts < 1 || x->sends[i].attempts > 1 + s.upstream_retries)
			ch.bad_attempts++;
		by_gate[x->sends[i].gate]++;
	}
	for (size_t i = 0; i < x->n_callers; i++) {
		const struct engine_caller *c = &x->callers[i];
		int64_t deadline = c->submitted_us + (int64_t)c->max_wait_ms * 1000;

		if (!x->answers[i])
			continue;
		outcomes[c->answer.outcome]++;
		if (c->answer.outcome == ENGINE_OUTCOME_QUOTA_WAIT && x->answered_us[i] > deadline + MS)
			ch.quota_wait_late++;
		if ((c->answer.outcome == ENGINE_OUTCOME_QUOTA_WAIT ||
		     c->answer.outcome == ENGINE_OUTCOME_QUEUE_FULL ||
		     c->answer.outcome == ENGINE_OUTCOME_THROTTLED ||
		     c->answer.outcome == ENGINE_OUTCOME_QUOTA_UNAVAILABLE) &&
		    c->answer.retry_after_s < 1)
			ch.bad_retry_after++;
		if (c->answer.outcome == ENGINE_OUTCOME_HIT_SHARED &&
		    (!c->answer.entry || !key_eq(&c->answer.entry->key, &c->key)))
			bad_shared++;
	}
	printf("# many hosts%s: %zu callers, %zu sends (local %zu, grants %zu), %zu gate changes, "
	       "%zu claims, %zu reserves, %" PRIu64 " grants discarded, %zu shared hits, "
	       "%zu unavailable\n",
	       shared ? " (shared)" : "", x->n_callers, x->n_sends, by_gate[ENGINE_GATE_LOCAL],
	       by_gate[ENGINE_GATE_GRANTS], gates, x->claims_total, x->reserves_total,
	       engine_stats(x->e)->grants_discarded, outcomes[ENGINE_OUTCOME_HIT_SHARED],
	       outcomes[ENGINE_OUTCOME_QUOTA_UNAVAILABLE]);
	CHECK(ch.deadline_violations == 0);
	CHECK(ch.quota_wait_late == 0);
	CHECK(ch.bad_retry_after == 0);
	CHECK(ch.bad_attempts == 0);
	CHECK(bad_shared == 0);
	CHECK(ch.closed_waiters == 0);
	CHECK(outcomes[ENGINE_OUTCOME_HIT_SHARED] == engine_stats(x->e)->shared_hits);
	CHECK(outcomes[ENGINE_OUTCOME_QUOTA_UNAVAILABLE] == engine_stats(x->e)->quota_unavailable);
	CHECK(by_gate[ENGINE_GATE_GRANTS] == engine_stats(x->e)->grants_used);
	CHECK(by_gate[ENGINE_GATE_CLOSED] == 0);
	CHECK(by_gate[ENGINE_GATE_GRANTS] > 0);
	CHECK(!shared || outcomes[ENGINE_OUTCOME_HIT_SHARED] > 0);
	CHECK(outcomes[ENGINE_OUTCOME_QUOTA_UNAVAILABLE] > 0);
	/* Stop with calls, claims and RESERVEs outstanding; some finish, abort the rest. */
	fx_stop(x);
	fx_advance(x, 150 * MS);
	fx_end(x);
}

TEST(random_many_hosts_traffic_answers_every_caller_once_and_sends_only_on_a_due_grant)
{
	random_many_hosts(false, 23);
}

TEST(random_shared_tier_traffic_answers_every_caller_once_and_sends_only_on_a_due_grant)
{
	random_many_hosts(true, 29);
}

int main(void)
{
	/* A fixed default seed; $TEST_SEED replays another. */
	setenv("TEST_SEED", "1", 0);
	harness_seed_init();
	RUN(many_callers_for_one_key_share_one_upstream_call);
	RUN(joiner_of_a_call_on_the_wire_waits_for_its_answer_past_its_quota_wait);
	RUN(key_is_fetched_again_after_its_flight_is_answered);
	RUN(queued_flights_are_sent_one_emission_interval_apart);
	RUN(next_wake_is_the_send_slot_while_flights_wait_and_never_when_idle);
	RUN(next_wake_is_the_nearest_deadline_when_it_comes_before_the_slot);
	RUN(remain_zero_hint_holds_the_next_send_until_the_window_resets);
	RUN(max_wait_zero_is_sent_when_a_slot_is_free_now);
	RUN(max_wait_zero_is_refused_at_once_when_no_slot_is_free);
	RUN(wait_the_queue_cannot_meet_is_refused_at_once_with_the_predicted_wait);
	RUN(joiner_whose_wait_its_queued_flight_cannot_meet_is_refused_and_the_flight_stays);
	RUN(idle_client_is_not_refused_behind_another_clients_backlog);
	RUN(full_queue_refuses_a_new_key_with_queue_full);
	RUN(full_queue_still_lets_callers_join_queued_flights);
	RUN(throttle_requeues_the_flight_at_the_head_and_sends_it_again_after_the_back_off);
	RUN(throttle_answers_callers_who_cannot_wait_for_the_retry_slot_with_limit_control);
	RUN(throttle_with_no_caller_able_to_wait_answers_everyone_and_drops_the_flight);
	RUN(throttled_retries_exhausted_answer_503_limit_control);
	RUN(throttle_pause_holds_every_queued_flight_not_only_the_retry);
	RUN(throttled_flight_is_retried_at_the_head_even_when_the_queue_is_full);
	RUN(throttle_of_a_call_whose_callers_all_left_is_not_retried);
	RUN(refresh_starts_a_background_flight_that_answers_nobody);
	RUN(background_flight_waits_behind_foreground_work);
	RUN(caller_joining_a_queued_refresh_moves_it_to_the_foreground);
	RUN(caller_joining_a_refresh_on_the_wire_is_retried_for_after_a_throttle);
	RUN(throttled_refresh_nobody_waits_for_is_dropped_not_retried);
	RUN(departed_caller_leaves_its_queued_flight_without_cancelling_it_for_the_others);
	RUN(departed_caller_of_a_call_on_the_wire_is_answered_gone_and_the_rest_get_the_key);
	RUN(flight_whose_callers_all_left_becomes_background);
	RUN(orphaned_flight_still_yields_to_foreground_work_arriving_later);
	RUN(waiting_callers_are_listed_until_they_are_answered);
	RUN(deadline_expiry_while_queued_answers_quota_wait_and_the_flight_goes_on);
	RUN(reconfigured_lower_rate_expires_queued_callers_at_their_deadline);
	RUN(failure_falls_back_to_a_stale_entry_within_stale_while_revalidate_or_stale_if_error);
	RUN(failed_call_passes_the_upstream_status_code_and_request_id_through);
	RUN(throttle_retries_exhausted_fall_back_to_an_accepted_stale_entry);
	RUN(negative_entry_answers_miss_negative_to_every_joiner);
	RUN(quota_refusal_falls_back_to_a_stale_entry_the_caller_accepts);
	RUN(weights_one_to_three_share_a_backlog_one_to_three);
	RUN(reconfigure_changes_weights_for_a_backlog_without_losing_callers);
	RUN(reconfigure_raises_the_rate_without_losing_queued_flights);
	RUN(reconfigure_raises_queue_max_for_new_keys);
	RUN(reconfigure_lowering_queue_max_keeps_the_queued_flights);
	RUN(long_backlog_with_throttles_keeps_the_spacing_and_the_sliding_second);
	RUN(burst_three_still_keeps_the_sliding_second);
	RUN(stop_answers_queued_callers_and_lets_calls_on_the_wire_finish);
	RUN(throttle_after_stop_answers_instead_of_retrying);
	RUN(abort_drops_sends_the_driver_has_not_taken);
	RUN(random_traffic_answers_every_caller_once_within_the_sliding_second);
	RUN(grants_gate_sends_nothing_without_a_grant);
	RUN(grant_due_later_is_sent_exactly_at_its_send_at);
	RUN(grant_past_its_latest_time_is_discarded_and_never_sent);
	RUN(grants_asked_and_held_stay_within_max_pending_and_the_queue);
	RUN(grant_failed_delays_the_next_reserve_until_retry_at);
	RUN(next_wake_in_grants_is_the_held_send_at_or_the_reserve_time);
	RUN(weighted_fair_queue_decides_which_flight_a_grant_sends);
	RUN(throttle_in_grants_mode_requeues_and_the_retry_needs_a_new_grant);
	RUN(grants_after_local_sends_wait_one_window_after_the_last_local_send);
	RUN(grants_to_local_discards_held_grants);
	RUN(closed_gate_answers_new_misses_shared_quota_unavailable);
	RUN(closing_the_gate_answers_quota_waiters_but_calls_on_the_wire_finish);
	RUN(closed_gate_reopened_as_grants_serves_new_misses);
	RUN(closing_grants_discards_held_grants_and_asks_none);
	RUN(throttle_while_closed_answers_the_callers_unavailable_instead_of_waiting);
	RUN(shared_new_flight_claims_its_key_and_sends_nothing);
	RUN(shared_hit_answers_every_waiter_from_the_shared_tier_without_a_send);
	RUN(shared_owned_queues_the_flight_with_its_lease_then_sends);
	RUN(shared_unavailable_queues_the_flight_without_a_lease);
	RUN(shared_held_parks_the_flight_remote_and_claims_again_at_retry_at);
	RUN(shared_poke_claims_a_remote_flight_again_at_once);
	RUN(shared_claim_of_a_finished_flight_or_an_old_claim_seq_is_refused);
	RUN(callers_of_a_remote_flight_are_refused_at_their_wait_limit_and_it_is_dropped);
	RUN(callers_of_a_claiming_flight_are_refused_at_their_wait_limit);
	RUN(background_refresh_answered_held_is_dropped);
	RUN(caller_joining_a_claiming_refresh_is_served_by_its_claim);
	RUN(owned_arriving_while_closed_is_refused_and_the_flight_dropped);
	RUN(closing_the_gate_answers_callers_waiting_for_a_claim_at_once);
	RUN(stop_answers_callers_of_claiming_and_remote_flights_and_later_claims_are_refused);
	RUN(abort_drops_pending_claim_and_reserve_actions);
	RUN(flights_claiming_for_callers_count_against_queue_max);
	RUN(random_many_hosts_traffic_answers_every_caller_once_and_sends_only_on_a_due_grant);
	RUN(random_shared_tier_traffic_answers_every_caller_once_and_sends_only_on_a_due_grant);
	return harness_done();
}
