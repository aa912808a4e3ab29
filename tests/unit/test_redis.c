/*
 * test_redis.c -- the shared limiter script and the Redis client against a
 * real redis-server of the test's own: a UNIX socket in a temporary
 * directory, no persistence, never a system server. Every server is started
 * and stopped by PID (also on failure: atexit and signal handlers); every
 * loop is bounded in count and time.
 */
#include "redis_server.h"

static char pw_sock_path[300];

struct answer {
	int calls;
	int error;
	struct redis_grant grant;
	int64_t pause_left_us;
	char text[200];
};

static void on_grant(void *cookie, int error, const struct redis_grant *g, const char *text)
{
	struct answer *a = cookie;

	a->calls++;
	a->error = error;
	if (g)
		a->grant = *g;
	snprintf(a->text, sizeof(a->text), "%s", text ? text : "");
}

static void on_pause(void *cookie, int error, int64_t left, const char *text)
{
	struct answer *a = cookie;

	a->calls++;
	a->error = error;
	a->pause_left_us = left;
	snprintf(a->text, sizeof(a->text), "%s", text ? text : "");
}

/* Test limits: 5 per 200 ms window, 20 ms apart, book up to 600 ms ahead. */
#define T_RATE 5
#define T_WINDOW_MS 200
#define T_SPACING_US 20000
#define T_HORIZON_MS 600

static struct redis_grant_request req_for(const char *scope, const char *host, unsigned pending)
{
	struct redis_grant_request q = {
		.scope = scope,
		.host_id = host,
		.rate = T_RATE,
		.window_ms = T_WINDOW_MS,
		.spacing_us = T_SPACING_US,
		.max_pending = pending,
		.horizon_ms = T_HORIZON_MS,
	};
	return q;
}

/* One grant request, answered (bounded: 2 s). The answer's error, or -999. */
static int grant_sync(struct redis *r, const struct redis_grant_request *q, struct answer *a)
{
	int rc;

	memset(a, 0, sizeof(*a));
	rc = redis_grant(r, q, clock_mono_us(), on_grant, a);
	if (rc < 0)
		return rc;
	for (int i = 0; i < 100000 && a->calls == 0; i++)
		pump_once(r, clock_mono_us() + 20000);
	if (a->calls != 1)
		return -999;
	return a->error;
}

/* Grants until n granted (refusals wait their retry), bounded by 10 s. */
static int collect_grants(struct redis *r, const struct redis_grant_request *q, int64_t *slots,
			  int n)
{
	int64_t end = clock_mono_us() + 10 * 1000000;
	int got = 0;

	for (int i = 0; i < 1000 && got < n && clock_mono_us() < end; i++) {
		struct answer a;

		if (grant_sync(r, q, &a) != 0)
			return -1;
		if (a.grant.verdict == REDIS_GRANT_GRANTED) {
			slots[got++] = a.grant.slot_redis_us;
		} else {
			int ms = (int)(a.grant.delay_us / 1000) + 1;

			pump_for(&r, 1, ms > 300 ? 300 : ms);
		}
	}
	return got;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Every window holds at most rate slots; no two closer than spacing. */
static bool slots_within(int64_t *s, int n, unsigned rate, int64_t window_us, int64_t spacing_us)
{
	qsort(s, (size_t)n, sizeof(*s), cmp_i64);
	for (int i = 0; i + 1 < n; i++)
		if (s[i + 1] - s[i] < spacing_us) {
			fprintf(stderr, "  slots %d,%d only %" PRId64 " us apart\n", i, i + 1,
				s[i + 1] - s[i]);
			return false;
		}
	for (int i = 0; i + (int)rate < n; i++)
		if (s[i + rate] - s[i] < window_us) {
			fprintf(stderr, "  %u slots within %" PRId64 " us\n", rate + 1,
				s[i + rate] - s[i]);
			return false;
		}
	return true;
}

static bool slots_within_bound(int64_t *s, int n)
{
	return slots_within(s, n, T_RATE, (int64_t)T_WINDOW_MS * 1000, T_SPACING_US);
}

/*
 * Independently of the script's own count: when each grant was decided
 * (its slot minus its delay, Redis time), its host held fewer than
 * max_pending not-yet-due grants.
 */
struct decided {
	int host;
	int64_t slot_us, decided_us;
};

static bool pending_bound_holds(const struct decided *d, int n, unsigned max_pending)
{
	for (int i = 0; i < n; i++) {
		unsigned held = 0;

		for (int k = 0; k < n; k++)
			if (k != i && d[k].host == d[i].host && d[k].decided_us < d[i].decided_us &&
			    d[k].slot_us > d[i].decided_us)
				held++;
		if (held >= max_pending) {
			fprintf(stderr, "  host %d held %u not-yet-due grants at a new grant\n",
				d[i].host, held);
			return false;
		}
	}
	return true;
}

/* ---- pure ---- */

TEST(url_accepts_numeric_addresses_and_sockets_and_refuses_names_and_passwords)
{
	struct redis_address a;
	char err[300];

	REQUIRE(redis_parse_url("redis://127.0.0.1:6380/2", &a, err, sizeof(err)) == 0);
	CHECK_STR(a.host, "127.0.0.1");
	CHECK(a.port == 6380 && a.db == 2 && !a.is_unix && !a.user[0]);
	REQUIRE(redis_parse_url("redis://camskeyd@[::1]:7000", &a, err, sizeof(err)) == 0);
	CHECK_STR(a.host, "::1");
	CHECK_STR(a.user, "camskeyd");
	CHECK(a.port == 7000 && a.db == 0);
	REQUIRE(redis_parse_url("redis://10.0.0.5", &a, err, sizeof(err)) == 0);
	CHECK(a.port == 6379);
	REQUIRE(redis_parse_url("unix:///run/redis/redis.sock", &a, err, sizeof(err)) == 0);
	CHECK(a.is_unix);
	CHECK_STR(a.path, "/run/redis/redis.sock");
	CHECK(redis_parse_url("redis://redis.internal:6379", &a, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "not a numeric address") != NULL);
	CHECK(redis_parse_url("redis://u:secret@127.0.0.1", &a, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "no password in the address") != NULL);
	CHECK(strstr(err, "secret") == NULL);
	CHECK(redis_parse_url("rediss://127.0.0.1", &a, err, sizeof(err)) == -EINVAL);
	CHECK(redis_parse_url("redis://127.0.0.1:0", &a, err, sizeof(err)) == -EINVAL);
	CHECK(redis_parse_url("redis://127.0.0.1/16", &a, err, sizeof(err)) == -EINVAL);
	CHECK(redis_parse_url("unix://relative", &a, err, sizeof(err)) == -EINVAL);
}

TEST(password_follows_the_credential_file_rules)
{
	char path[480], dir[400], pw[REDIS_PASSWORD_MAX], err[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/pw", tmpdir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs("s3cret\n", f);
	fclose(f);
	chmod(path, 0644);
	unsetenv("CAMSKEYD_REDIS_PASSWORD");
	CHECK(redis_load_password(NULL, path, pw, sizeof(pw), err, sizeof(err)) == -EPERM);
	chmod(path, 0600);
	REQUIRE(redis_load_password(NULL, path, pw, sizeof(pw), err, sizeof(err)) == 0);
	CHECK_STR(pw, "s3cret");
	CHECK(redis_load_password(NULL, NULL, pw, sizeof(pw), err, sizeof(err)) == -ENOENT);
	setenv("CAMSKEYD_REDIS_PASSWORD", "fromenv", 1);
	REQUIRE(redis_load_password(NULL, NULL, pw, sizeof(pw), err, sizeof(err)) == 0);
	CHECK_STR(pw, "fromenv");
	unsetenv("CAMSKEYD_REDIS_PASSWORD");
	snprintf(dir, sizeof(dir), "%s/creds", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/redis-password", dir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs("fromdir", f);
	fclose(f);
	chmod(path, 0600);
	REQUIRE(redis_load_password(dir, NULL, pw, sizeof(pw), err, sizeof(err)) == 0);
	CHECK_STR(pw, "fromdir");
	CHECK(redis_load_password(NULL, "/nonexistent/pw", pw, sizeof(pw), err, sizeof(err)) ==
	      -EINVAL);
}

/* ---- against a real server ---- */

TEST(grants_are_spaced_and_never_exceed_rate_in_any_window)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-spaced", "hostA", 100);
	int64_t slots[30];
	int n;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	CHECK(wait_ready(r, 2000));
	n = collect_grants(r, &q, slots, 30);
	CHECK(n == 30);
	if (n > 1)
		CHECK(slots_within_bound(slots, n));
	redis_free(r);
}

TEST(two_hosts_sharing_a_scope_stay_under_rate_and_each_holds_at_most_its_pending)
{
	struct redis *a, *b;
	struct redis_grant_request qa = req_for("scope-shared", "hostA", 2);
	struct redis_grant_request qb = req_for("scope-shared", "hostB", 2);
	int64_t slots[40];
	struct decided dec[40];
	int n = 0, refused_pending = 0;
	int64_t end;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	a = client(sock_path, NULL, 1000);
	b = client(sock_path, NULL, 1000);
	REQUIRE(a && b);
	CHECK(wait_ready(a, 2000) && wait_ready(b, 2000));
	end = clock_mono_us() + 10 * 1000000;
	for (int i = 0; i < 2000 && n < 40 && clock_mono_us() < end; i++) {
		struct redis *r = i % 2 ? b : a;
		struct answer ans;

		REQUIRE(grant_sync(r, i % 2 ? &qb : &qa, &ans) == 0);
		if (ans.grant.verdict == REDIS_GRANT_GRANTED) {
			CHECK(ans.grant.pending <= 2);
			CHECK(ans.grant.send_at_us == ans.grant.replied_us + ans.grant.delay_us);
			dec[n].host = i % 2;
			dec[n].slot_us = ans.grant.slot_redis_us;
			dec[n].decided_us = ans.grant.slot_redis_us - ans.grant.delay_us;
			slots[n++] = ans.grant.slot_redis_us;
		} else {
			if (ans.grant.verdict == REDIS_GRANT_REFUSED_PENDING) {
				refused_pending++;
				CHECK(ans.grant.pending == 2);
			}
			pump_for(&r, 1, 5);
		}
	}
	CHECK(n == 40);
	CHECK(refused_pending > 0);
	CHECK(pending_bound_holds(dec, n, 2));
	CHECK(slots_within_bound(slots, n));
	redis_free(a);
	redis_free(b);
}

TEST(random_limits_and_three_hosts_never_exceed_the_bound)
{
	struct redis *rs[3];
	struct redis_grant_request q[3];
	char scope[64], hosts[3][16];
	int64_t slots[60];
	struct decided dec[60];
	unsigned rate, window_ms, spacing_us, pending, horizon_ms;
	int n = 0;
	int64_t end;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	harness_rng_reset(14);
	rate = 1 + (unsigned)(harness_rng_next() % 8);
	window_ms = 100 + (unsigned)(harness_rng_next() % 201);
	spacing_us = 1 + (unsigned)(harness_rng_next() % (window_ms * 1000 / rate));
	pending = 1 + (unsigned)(harness_rng_next() % 3);
	horizon_ms = window_ms + (unsigned)(harness_rng_next() % 400);
	snprintf(scope, sizeof(scope), "scope-random-%" PRIu64, harness_seed);
	printf("# random: rate %u window %u ms spacing %u us pending %u horizon %u ms\n", rate,
	       window_ms, spacing_us, pending, horizon_ms);
	for (int h = 0; h < 3; h++) {
		snprintf(hosts[h], sizeof(hosts[h]), "host%d", h);
		rs[h] = client(sock_path, NULL, 1000);
		REQUIRE(rs[h]);
		REQUIRE(wait_ready(rs[h], 2000));
		q[h] = (struct redis_grant_request){ .scope = scope, .host_id = hosts[h],
			.rate = rate, .window_ms = window_ms, .spacing_us = spacing_us,
			.max_pending = pending, .horizon_ms = horizon_ms };
	}
	end = clock_mono_us() + 8 * 1000000;
	for (int i = 0; i < 5000 && n < 60 && clock_mono_us() < end; i++) {
		int h = (int)(harness_rng_next() % 3);
		struct answer ans;

		REQUIRE(grant_sync(rs[h], &q[h], &ans) == 0);
		if (ans.grant.verdict == REDIS_GRANT_GRANTED) {
			dec[n].host = h;
			dec[n].slot_us = ans.grant.slot_redis_us;
			dec[n].decided_us = ans.grant.slot_redis_us - ans.grant.delay_us;
			slots[n++] = ans.grant.slot_redis_us;
		} else {
			pump_for(&rs[h], 1, 3);
		}
	}
	CHECK(n >= 20);
	CHECK(pending_bound_holds(dec, n, pending));
	CHECK(slots_within(slots, n, rate, (int64_t)window_ms * 1000, spacing_us));
	for (int h = 0; h < 3; h++)
		redis_free(rs[h]);
}

TEST(script_flush_is_handled_by_loading_again_and_retrying_once)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-flush", "hostA", 100);
	struct redis_stats st;
	struct answer a;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(grant_sync(r, &q, &a) == 0);
	REQUIRE(control_cmd(sock_path, "SCRIPT FLUSH"));
	CHECK(grant_sync(r, &q, &a) == 0);
	CHECK(a.calls == 1);
	redis_get_stats(r, &st);
	CHECK(st.noscript_retries == 1);
	CHECK(grant_sync(r, &q, &a) == 0);
	redis_get_stats(r, &st);
	CHECK(st.noscript_retries == 1);
	redis_free(r);
}

/* The first slot after t_lost_us (Redis time) is at least a window + horizon later. */
static void check_lost_state_waits(struct redis *r, const char *scope, int64_t t_lost_us)
{
	struct redis_grant_request q = req_for(scope, "hostA", 100);
	int64_t slot[1];

	CHECK(collect_grants(r, &q, slot, 1) == 1);
	CHECK(slot[0] >= t_lost_us + (T_WINDOW_MS + T_HORIZON_MS) * 1000);
}

TEST(flushall_makes_the_first_grants_wait_a_window_and_the_horizon)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-flushall", "hostA", 100);
	int64_t slot[3], t;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(collect_grants(r, &q, slot, 3) == 3);
	t = redis_time_us(sock_path);
	REQUIRE(control_cmd(sock_path, "FLUSHALL"));
	check_lost_state_waits(r, "scope-flushall", t);
	redis_free(r);
}

TEST(a_state_from_another_run_id_is_forgotten_and_waits)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-runid", "hostA", 100);
	int64_t slot[2], t;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(collect_grants(r, &q, slot, 2) == 2);
	t = redis_time_us(sock_path);
	REQUIRE(control_cmd(sock_path, "HSET camskeyd:v1:{scope-runid}:meta run_id other"));
	check_lost_state_waits(r, "scope-runid", t);
	redis_free(r);
}

TEST(a_restarted_server_has_a_new_run_id_and_the_first_grants_wait)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-restart", "hostA", 100);
	char old_id[64];
	int64_t slot[2], t;
	struct answer a;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(collect_grants(r, &q, slot, 2) == 2);
	snprintf(old_id, sizeof(old_id), "%s", redis_run_id(r));
	stop_server(main_pid);
	main_pid = start_server(sock_path, NULL);
	REQUIRE(main_pid > 0);
	t = redis_time_us(sock_path);
	/* The client notices on its next command or read; bounded wait. */
	pump_for(&r, 1, 100);
	(void)grant_sync(r, &q, &a);
	REQUIRE(wait_ready(r, 3000));
	CHECK(strcmp(old_id, redis_run_id(r)) != 0);
	check_lost_state_waits(r, "scope-restart", t);
	redis_free(r);
}

TEST(a_stalled_server_times_out_every_pending_command_once_and_reconnects_after_cont)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-stall", "hostA", 100);
	struct answer ans[3];
	struct redis_stats st;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 300);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	REQUIRE(kill(main_pid, SIGSTOP) == 0);
	memset(ans, 0, sizeof(ans));
	for (int i = 0; i < 3; i++)
		CHECK(redis_grant(r, &q, clock_mono_us(), on_grant, &ans[i]) == 0);
	pump_for(&r, 1, 1200);
	for (int i = 0; i < 3; i++) {
		CHECK(ans[i].calls == 1);
		CHECK(ans[i].error == -ETIMEDOUT);
	}
	CHECK(redis_state(r) != REDIS_STATE_READY);
	CHECK(redis_grant(r, &q, clock_mono_us(), on_grant, &ans[0]) == -ENOTCONN);
	redis_get_stats(r, &st);
	CHECK(st.timeouts >= 2); /* the command, then at least one handshake */
	REQUIRE(kill(main_pid, SIGCONT) == 0);
	CHECK(wait_ready(r, 3000));
	CHECK(grant_sync(r, &q, &ans[1]) == 0);
	for (int i = 0; i < 3; i++)
		CHECK(ans[i].calls <= 2);
	redis_free(r);
}

TEST(free_cancels_pending_commands_once_and_the_pending_bound_is_enforced)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-free", "hostA", 100);
	static struct answer ans[REDIS_PENDING_MAX + 1];
	struct answer extra;
	struct redis_stats st;
	int accepted = 0;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 5000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	REQUIRE(grant_sync(r, &q, &ans[0]) == 0);
	redis_get_stats(r, &st);
	CHECK(st.replies == 1 && st.rtt_us_last >= 0 && st.rtt_us_last < 1000000);
	REQUIRE(kill(main_pid, SIGSTOP) == 0);
	memset(ans, 0, sizeof(ans));
	for (int i = 0; i < REDIS_PENDING_MAX; i++)
		if (redis_grant(r, &q, clock_mono_us(), on_grant, &ans[i]) == 0)
			accepted++;
	CHECK(accepted == REDIS_PENDING_MAX);
	memset(&extra, 0, sizeof(extra));
	CHECK(redis_grant(r, &q, clock_mono_us(), on_grant, &extra) == -EAGAIN);
	pump_for(&r, 1, 50);
	redis_free(r);
	for (int i = 0; i < REDIS_PENDING_MAX; i++) {
		CHECK(ans[i].calls == 1);
		CHECK(ans[i].error == -ECANCELED);
	}
	CHECK(extra.calls == 0);
	REQUIRE(kill(main_pid, SIGCONT) == 0);
}

TEST(a_killed_server_gives_errors_backs_off_and_a_new_server_is_found)
{
	struct redis *r;
	struct redis_grant_request q = req_for("scope-kill", "hostA", 100);
	struct answer a;
	struct redis_stats st0, st;
	int rc;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	memset(&a, 0, sizeof(a));
	kill(main_pid, SIGKILL);
	waitpid(main_pid, NULL, 0);
	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i] == main_pid)
			servers[i] = 0;
	main_pid = 0;
	rc = redis_grant(r, &q, clock_mono_us(), on_grant, &a);
	pump_for(&r, 1, 200);
	if (rc == 0) {
		CHECK(a.calls == 1);
		CHECK(a.error == -ECONNRESET || a.error == -ETIMEDOUT);
	} else {
		CHECK(rc == -ENOTCONN);
	}
	CHECK(redis_state(r) != REDIS_STATE_READY);
	redis_get_stats(r, &st0);
	pump_for(&r, 1, 1000);
	redis_get_stats(r, &st);
	/* Back-off 20 ms doubling to 200 ms (jitter [b/2, b]): a few attempts a second. */
	CHECK(st.connects - st0.connects >= 3);
	CHECK(st.connects - st0.connects <= 20);
	CHECK(redis_last_error(r)[0] != '\0');
	main_pid = start_server(sock_path, NULL);
	REQUIRE(main_pid > 0);
	CHECK(wait_ready(r, 2000));
	CHECK(grant_sync(r, &q, &a) == 0);
	redis_free(r);
}

TEST(auth_with_a_password_file_and_a_wrong_password_is_refused)
{
	char path[400], pw[REDIS_PASSWORD_MAX], err[300];
	struct redis *r;
	struct redis_grant_request q = req_for("scope-auth", "hostA", 100);
	struct answer a;
	pid_t pid;
	FILE *f;

	NEED_SERVER();
	pid = start_server(pw_sock_path, "t0p-s3cret");
	REQUIRE(pid > 0);
	snprintf(path, sizeof(path), "%s/redis-pw", tmpdir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs("t0p-s3cret\n", f);
	fclose(f);
	chmod(path, 0600);
	REQUIRE(redis_load_password(NULL, path, pw, sizeof(pw), err, sizeof(err)) == 0);
	r = client(pw_sock_path, pw, 1000);
	REQUIRE(r);
	CHECK(wait_ready(r, 2000));
	CHECK(grant_sync(r, &q, &a) == 0);
	redis_free(r);
	r = client(pw_sock_path, "wrong", 1000);
	REQUIRE(r);
	CHECK(!wait_ready(r, 500));
	CHECK(strstr(redis_last_error(r), "AUTH") != NULL);
	CHECK(strstr(redis_last_error(r), "wrong") == NULL);
	redis_free(r);
	r = client(pw_sock_path, NULL, 1000);
	REQUIRE(r);
	CHECK(!wait_ready(r, 500));
	redis_free(r);
	stop_server(pid);
}

TEST(a_pause_recorded_by_one_host_delays_the_other_hosts_grants)
{
	struct redis *a, *b;
	struct redis_grant_request qb = req_for("scope-pause", "hostB", 100);
	struct answer ans;
	int64_t slot[1], t;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	a = client(sock_path, NULL, 1000);
	b = client(sock_path, NULL, 1000);
	REQUIRE(a && b);
	REQUIRE(wait_ready(a, 2000) && wait_ready(b, 2000));
	CHECK(collect_grants(b, &qb, slot, 1) == 1); /* past the lost-state wait */
	pump_for(&b, 1, T_WINDOW_MS + 50);
	memset(&ans, 0, sizeof(ans));
	t = redis_time_us(sock_path);
	REQUIRE(redis_pause(a, "scope-pause", 400, T_WINDOW_MS, T_HORIZON_MS, clock_mono_us(),
			    on_pause, &ans) == 0);
	for (int i = 0; i < 1000 && !ans.calls; i++)
		pump_once(a, clock_mono_us() + 20000);
	REQUIRE(ans.calls == 1 && ans.error == 0);
	CHECK(ans.pause_left_us > 300000 && ans.pause_left_us <= 400000);
	CHECK(collect_grants(b, &qb, slot, 1) == 1);
	CHECK(slot[0] >= t + 400000);
	redis_free(a);
	redis_free(b);
}

/* ---- plain commands ---- */

struct reply_answer {
	int calls;
	int error;
	int type;
	long long integer;
	char str[64];
	size_t len;
};

static void on_reply_cb(void *cookie, int error, const struct redisReply *rep, const char *text)
{
	struct reply_answer *a = cookie;

	(void)text;
	a->calls++;
	a->error = error;
	if (rep) {
		a->type = rep->type;
		a->integer = rep->integer;
		a->len = rep->str ? rep->len : 0;
		if (a->len > sizeof(a->str))
			a->len = sizeof(a->str);
		if (rep->str)
			memcpy(a->str, rep->str, a->len);
	}
}

/* One command, answered (bounded: 2 s). Its error, or -999. */
static int command_sync(struct redis *r, int argc, const char *const *argv, const size_t *lens,
			struct reply_answer *a)
{
	int64_t end = clock_mono_us() + 2000000;
	int rc;

	memset(a, 0, sizeof(*a));
	rc = redis_command(r, argc, argv, lens, clock_mono_us(), on_reply_cb, a);
	if (rc < 0)
		return rc;
	for (int i = 0; i < 100000 && a->calls == 0 && clock_mono_us() < end; i++)
		pump_once(r, clock_mono_us() + 20000);
	return a->calls == 1 ? a->error : -999;
}

TEST(a_plain_command_round_trips_a_binary_value_with_a_nul_inside)
{
	static const char value[] = { 'a', '\0', 'b', '\n', 'c' };
	const char *set[] = { "SET", "camskeyd:test:bin", value };
	size_t set_len[] = { 3, 17, sizeof(value) };
	const char *get[] = { "GET", "camskeyd:test:bin" };
	size_t get_len[] = { 3, 17 };
	struct reply_answer a;
	struct redis *r;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(command_sync(r, 3, set, set_len, &a) == 0);
	CHECK(a.type == REDIS_REPLY_STATUS);
	CHECK(command_sync(r, 2, get, get_len, &a) == 0);
	CHECK(a.type == REDIS_REPLY_STRING);
	CHECK(a.len == sizeof(value) && memcmp(a.str, value, sizeof(value)) == 0);
	redis_free(r);
}

TEST(an_error_reply_is_an_answer_with_error_0_and_the_reply_type_error)
{
	const char *set[] = { "SET", "camskeyd:test:text", "not a number" };
	size_t set_len[] = { 3, 18, 12 };
	const char *incr[] = { "INCR", "camskeyd:test:text" };
	size_t incr_len[] = { 4, 18 };
	struct reply_answer a;
	struct redis_stats st;
	struct redis *r;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	CHECK(command_sync(r, 3, set, set_len, &a) == 0);
	CHECK(command_sync(r, 2, incr, incr_len, &a) == 0);
	CHECK(a.calls == 1 && a.type == REDIS_REPLY_ERROR);
	CHECK(a.len > 0 && memcmp(a.str, "ERR", 3) == 0);
	CHECK(redis_state(r) == REDIS_STATE_READY);
	redis_get_stats(r, &st);
	CHECK(st.command_errors == 0);
	redis_free(r);
}

TEST(a_plain_command_before_ready_is_refused_with_enotconn_and_never_called_back)
{
	const char *ping[] = { "PING" };
	size_t ping_len[] = { 4 };
	const char *many[REDIS_COMMAND_ARGS + 1];
	size_t many_len[REDIS_COMMAND_ARGS + 1];
	struct reply_answer a;
	struct redis *r;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 1000);
	REQUIRE(r);
	memset(&a, 0, sizeof(a));
	CHECK(redis_command(r, 1, ping, ping_len, clock_mono_us(), on_reply_cb, &a) == -ENOTCONN);
	redis_tick(r, clock_mono_us()); /* connecting, not READY yet */
	CHECK(redis_state(r) != REDIS_STATE_READY);
	CHECK(redis_command(r, 1, ping, ping_len, clock_mono_us(), on_reply_cb, &a) == -ENOTCONN);
	REQUIRE(wait_ready(r, 2000));
	for (int i = 0; i <= REDIS_COMMAND_ARGS; i++) {
		many[i] = "x";
		many_len[i] = 1;
	}
	CHECK(redis_command(r, REDIS_COMMAND_ARGS + 1, many, many_len, clock_mono_us(),
			    on_reply_cb, &a) == -EINVAL);
	CHECK(redis_command(r, 0, many, many_len, clock_mono_us(), on_reply_cb, &a) == -EINVAL);
	CHECK(command_sync(r, 1, ping, ping_len, &a) == 0);
	CHECK(a.type == REDIS_REPLY_STATUS);
	redis_free(r);
	CHECK(a.calls == 1);
}

TEST(a_stopped_server_times_out_each_pending_plain_command_exactly_once)
{
	const char *ping[] = { "PING" };
	size_t ping_len[] = { 4 };
	struct reply_answer a[4];
	struct redis *r;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	r = client(sock_path, NULL, 200);
	REQUIRE(r);
	REQUIRE(wait_ready(r, 2000));
	REQUIRE(kill(main_pid, SIGSTOP) == 0);
	memset(a, 0, sizeof(a));
	for (int i = 0; i < 4; i++)
		CHECK(redis_command(r, 1, ping, ping_len, clock_mono_us(), on_reply_cb, &a[i]) == 0);
	pump_for(&r, 1, 600);
	for (int i = 0; i < 4; i++) {
		CHECK(a[i].calls == 1);
		CHECK(a[i].error == -ETIMEDOUT);
	}
	REQUIRE(kill(main_pid, SIGCONT) == 0);
	CHECK(wait_ready(r, 3000));
	pump_for(&r, 1, 200); /* the stale answers, if any, reach nobody */
	for (int i = 0; i < 4; i++)
		CHECK(a[i].calls == 1);
	redis_free(r);
	for (int i = 0; i < 4; i++)
		CHECK(a[i].calls == 1);
}

/* ---- the subscriber connection ---- */

/* PUBLISH through a control connection; the receivers count, or -1. */
static long long publish(const char *path, const char *channel, const char *msg)
{
	redisContext *c = control(path);
	redisReply *rep;
	long long n = -1;

	if (!c)
		return -1;
	rep = redisCommand(c, "PUBLISH %s %s", channel, msg);
	if (rep && rep->type == REDIS_REPLY_INTEGER)
		n = rep->integer;
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return n;
}

static bool wait_messages(struct redis *r, struct inbox *in, int n, int ms)
{
	int64_t end = clock_mono_us() + (int64_t)ms * 1000;

	for (int i = 0; i < 100000 && in->n < n && clock_mono_us() < end; i++)
		pump_once(r, end);
	return in->n >= n;
}

TEST(a_subscriber_is_ready_after_subscribe_and_receives_published_messages)
{
	static const char channel[] = "camskeyd:v1:{scope-sub}:n";
	struct inbox in;
	struct redis_stats st;
	struct redis *s;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	memset(&in, 0, sizeof(in));
	s = subscriber(sock_path, channel, 1000, on_message_cb, &in);
	REQUIRE(s);
	REQUIRE(wait_ready(s, 2000));
	CHECK(publish(sock_path, channel, "hello") == 1);
	CHECK(publish(sock_path, "camskeyd:v1:{other}:n", "not-for-us") == 0);
	CHECK(publish(sock_path, channel, "world") == 1);
	CHECK(wait_messages(s, &in, 2, 2000));
	CHECK(in.n == 2);
	CHECK_STR(in.msg[0], "hello");
	CHECK_STR(in.msg[1], "world");
	redis_get_stats(s, &st);
	CHECK(st.readies == 1 && st.timeouts == 0);
	redis_free(s);
}

TEST(a_subscriber_refuses_commands_and_grants_with_einval)
{
	const char *ping[] = { "PING" };
	size_t ping_len[] = { 4 };
	struct redis_grant_request q = req_for("scope-sub", "hostA", 100);
	struct reply_answer a;
	struct answer g;
	struct inbox in;
	struct redis *s;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	memset(&in, 0, sizeof(in));
	memset(&a, 0, sizeof(a));
	memset(&g, 0, sizeof(g));
	s = subscriber(sock_path, "camskeyd:v1:{scope-sub}:n", 1000, on_message_cb, &in);
	REQUIRE(s);
	CHECK(redis_command(s, 1, ping, ping_len, clock_mono_us(), on_reply_cb, &a) == -EINVAL);
	REQUIRE(wait_ready(s, 2000));
	CHECK(redis_command(s, 1, ping, ping_len, clock_mono_us(), on_reply_cb, &a) == -EINVAL);
	CHECK(redis_grant(s, &q, clock_mono_us(), on_grant, &g) == -EINVAL);
	CHECK(redis_pause(s, "scope-sub", 100, T_WINDOW_MS, T_HORIZON_MS, clock_mono_us(),
			  on_pause, &g) == -EINVAL);
	redis_free(s);
	CHECK(a.calls == 0 && g.calls == 0);
}

TEST(a_subscriber_reconnects_after_the_server_is_killed_and_restarted)
{
	static const char channel[] = "camskeyd:v1:{scope-resub}:n";
	struct redis_stats st0, st;
	struct inbox in;
	struct redis *s;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	memset(&in, 0, sizeof(in));
	s = subscriber(sock_path, channel, 1000, on_message_cb, &in);
	REQUIRE(s);
	REQUIRE(wait_ready(s, 2000));
	redis_get_stats(s, &st0);
	stop_server(main_pid);
	main_pid = 0;
	pump_for(&s, 1, 200);
	CHECK(redis_state(s) != REDIS_STATE_READY);
	main_pid = start_server(sock_path, NULL);
	REQUIRE(main_pid > 0);
	CHECK(wait_ready(s, 3000));
	redis_get_stats(s, &st);
	CHECK(st.readies == st0.readies + 1);
	CHECK(st.disconnects > st0.disconnects);
	CHECK(publish(sock_path, channel, "after") == 1);
	CHECK(wait_messages(s, &in, 1, 2000));
	CHECK_STR(in.msg[0], "after");
	redis_free(s);
}

TEST(a_subscriber_liveness_check_is_answered_and_drops_a_stopped_server)
{
	static const char channel[] = "camskeyd:v1:{scope-live}:n";
	struct redis_stats st;
	struct inbox in;
	struct redis *s;

	NEED_SERVER();
	ensure_main();
	REQUIRE(main_pid > 0);
	memset(&in, 0, sizeof(in));
	s = subscriber(sock_path, channel, 100, on_message_cb, &in);
	REQUIRE(s);
	REQUIRE(wait_ready(s, 2000));
	/* Three checks (every 400 ms), each answered within 100 ms: no drop. */
	pump_for(&s, 1, 1300);
	redis_get_stats(s, &st);
	CHECK(redis_state(s) == REDIS_STATE_READY);
	CHECK(st.timeouts == 0 && st.readies == 1);
	CHECK(publish(sock_path, channel, "still") == 1);
	CHECK(wait_messages(s, &in, 1, 1000));
	CHECK(in.n == 1); /* a liveness answer is no message */
	REQUIRE(kill(main_pid, SIGSTOP) == 0);
	pump_for(&s, 1, 600); /* the next check is due within 400 ms, then 100 ms to answer */
	redis_get_stats(s, &st);
	CHECK(st.timeouts >= 1);
	CHECK(redis_state(s) != REDIS_STATE_READY);
	REQUIRE(kill(main_pid, SIGCONT) == 0);
	CHECK(wait_ready(s, 3000));
	redis_get_stats(s, &st);
	CHECK(st.readies >= 2);
	redis_free(s);
}

TEST(a_numeric_tcp_address_with_a_database_and_an_acl_user_connects_and_grants)
{
	struct redis_grant_request q = req_for("scope-tcp", "hostA", 100);
	struct redis *r;
	struct answer a;
	char url[64];
	pid_t pid;
	int port;

	NEED_SERVER();
	port = free_port();
	REQUIRE(port > 0);
	pid = start_server_on(NULL, port, NULL);
	REQUIRE(pid > 0);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", port);
	r = client_url(url, NULL, 1000);
	REQUIRE(r);
	CHECK(wait_ready(r, 2000));
	CHECK(grant_sync(r, &q, &a) == 0);
	CHECK(a.grant.verdict == REDIS_GRANT_REFUSED_HORIZON); /* new scope: lost state */
	{
		/* The script ran in database 3. */
		redisContext *c = tcp_control(port);
		redisReply *rep;

		REQUIRE(c);
		rep = redisCommand(c, "SELECT 3");
		if (rep)
			freeReplyObject(rep);
		rep = redisCommand(c, "EXISTS camskeyd:v1:{scope-tcp}:meta");
		CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
		if (rep)
			freeReplyObject(rep);
		/* The ACL user docs/OPERATIONS.md gives is enough for the client. */
		rep = redisCommand(c, "ACL SETUSER camskeyd reset on >acl-pw ~camskeyd:* "
				   "resetchannels &camskeyd:* +auth +ping +select +info +script|load "
				   "+evalsha +eval +subscribe +scan +time +hmget +hset +del +pexpire "
				   "+zadd +zcard +zrange +zrangebyscore +zremrangebyscore +get +set "
				   "+pttl +publish");
		CHECK(rep && rep->type == REDIS_REPLY_STATUS);
		if (rep)
			freeReplyObject(rep);
		redisFree(c);
	}
	redis_free(r);
	snprintf(url, sizeof(url), "redis://camskeyd@127.0.0.1:%d/3", port);
	r = client_url(url, "acl-pw", 1000);
	REQUIRE(r);
	CHECK(wait_ready(r, 2000));
	CHECK(grant_sync(r, &q, &a) == 0);
	if (a.error)
		fprintf(stderr, "  grant as ACL user: %d %s\n", a.error, a.text);
	redis_free(r);
	{
		/* The shared tier's script and subscriber as that user (docs/OPERATIONS.md). */
		struct redis *sub, *bad;
		struct inbox in;
		struct reply_answer ra;
		static const char script[] =
			"local v = redis.call('GET', KEYS[1])\n"
			"redis.call('SET', KEYS[1], 'x', 'NX', 'PX', 5000)\n"
			"redis.call('PUBLISH', ARGV[1], 'acl')\n"
			"return redis.call('PTTL', KEYS[1])\n";
		const char *eval[] = { "EVAL", script, "1", "camskeyd:v1:{scope-tcp}:e::123",
				       "camskeyd:v1:{scope-tcp}:n" };
		size_t eval_len[] = { 4, strlen(script), 1, strlen(eval[3]), strlen(eval[4]) };
		const char *other[] = { "GET", "other" };
		size_t other_len[] = { 3, 5 };

		memset(&in, 0, sizeof(in));
		sub = subscriber_url(url, "acl-pw", "camskeyd:v1:{scope-tcp}:n", 1000,
				     on_message_cb, &in);
		bad = subscriber_url(url, "acl-pw", "other", 1000, on_message_cb, &in);
		r = client_url(url, "acl-pw", 1000);
		REQUIRE(sub && bad && r);
		CHECK(wait_ready(sub, 2000));
		CHECK(!wait_ready(bad, 400));
		REQUIRE(wait_ready(r, 2000));
		CHECK(command_sync(r, 5, eval, eval_len, &ra) == 0);
		CHECK(ra.type == REDIS_REPLY_INTEGER && ra.integer > 0 && ra.integer <= 5000);
		if (ra.type == REDIS_REPLY_ERROR)
			fprintf(stderr, "  EVAL as ACL user: %.*s\n", (int)ra.len, ra.str);
		CHECK(command_sync(r, 2, other, other_len, &ra) == 0);
		CHECK(ra.type == REDIS_REPLY_ERROR); /* outside ~camskeyd:* */
		for (int i = 0; i < 100 && in.n == 0; i++)
			pump_once(sub, clock_mono_us() + 20000);
		CHECK(in.n == 1 && strcmp(in.msg[0], "acl") == 0);
		redis_free(sub);
		redis_free(bad);
		redis_free(r);
	}
	r = client_url(url, "not-it", 1000);
	REQUIRE(r);
	CHECK(!wait_ready(r, 400));
	redis_free(r);
	stop_server(pid);
}

int main(void)
{
	int rc;

	harness_seed_init();
	if (redis_server_setup("/tmp/camskeyd-redis-XXXXXX") < 0)
		return 1;
	snprintf(sock_path, sizeof(sock_path), "%s/redis.sock", tmpdir);
	snprintf(pw_sock_path, sizeof(pw_sock_path), "%s/redis-pw.sock", tmpdir);

	RUN(url_accepts_numeric_addresses_and_sockets_and_refuses_names_and_passwords);
	RUN(password_follows_the_credential_file_rules);
	RUN(grants_are_spaced_and_never_exceed_rate_in_any_window);
	RUN(two_hosts_sharing_a_scope_stay_under_rate_and_each_holds_at_most_its_pending);
	RUN(random_limits_and_three_hosts_never_exceed_the_bound);
	RUN(script_flush_is_handled_by_loading_again_and_retrying_once);
	RUN(flushall_makes_the_first_grants_wait_a_window_and_the_horizon);
	RUN(a_state_from_another_run_id_is_forgotten_and_waits);
	RUN(a_restarted_server_has_a_new_run_id_and_the_first_grants_wait);
	RUN(a_stalled_server_times_out_every_pending_command_once_and_reconnects_after_cont);
	RUN(free_cancels_pending_commands_once_and_the_pending_bound_is_enforced);
	RUN(a_killed_server_gives_errors_backs_off_and_a_new_server_is_found);
	RUN(a_numeric_tcp_address_with_a_database_and_an_acl_user_connects_and_grants);
	RUN(auth_with_a_password_file_and_a_wrong_password_is_refused);
	RUN(a_pause_recorded_by_one_host_delays_the_other_hosts_grants);
	RUN(a_plain_command_round_trips_a_binary_value_with_a_nul_inside);
	RUN(an_error_reply_is_an_answer_with_error_0_and_the_reply_type_error);
	RUN(a_plain_command_before_ready_is_refused_with_enotconn_and_never_called_back);
	RUN(a_stopped_server_times_out_each_pending_plain_command_exactly_once);
	RUN(a_subscriber_is_ready_after_subscribe_and_receives_published_messages);
	RUN(a_subscriber_refuses_commands_and_grants_with_einval);
	RUN(a_subscriber_reconnects_after_the_server_is_killed_and_restarted);
	RUN(a_subscriber_liveness_check_is_answered_and_drops_a_stopped_server);
	rc = harness_done();
	redis_server_teardown();
	return rc;
}
