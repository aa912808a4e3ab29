/*
 * test_keyring.c -- the teams' key pairs: loaded from [client] sections,
 * secret files under the daemon credential's rules, found by AccessKey ID.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "harness.h"
#include "keyring.h"

static char dir[64];

static void write_file(const char *name, const char *content, mode_t mode)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f)
		abort();
	fputs(content, f);
	fclose(f);
	chmod(path, mode);
}

/* A config of one line per client: NAME ID FILE. */
static int parse(struct config *cfg, const char *text)
{
	struct buf err;
	int rc;

	buf_init(&err, 4096);
	config_init(cfg);
	rc = config_parse_string(cfg, "t.conf", text, &err);
	if (rc == 0)
		rc = config_validate(cfg, &err);
	if (rc < 0)
		fprintf(stderr, "  config: %s\n", buf_str(&err));
	buf_free(&err);
	return rc;
}

/* Load the keyring of conf, where "%s" stands for the test's directory. */
static int load(const char *conf, struct keyring **ret, char *errbuf, size_t n)
{
	struct config cfg;
	struct buf text;
	int rc;

	buf_init(&text, 4096);
	for (const char *p = conf; *p; p++) {
		if (p[0] == '%' && p[1] == 's') {
			buf_adds(&text, dir);
			p++;
		} else {
			buf_addc(&text, *p);
		}
	}
	rc = parse(&cfg, buf_str(&text));
	buf_free(&text);
	if (rc < 0) {
		config_free(&cfg);
		return -100;
	}
	rc = keyring_load(&cfg, dir, ret, errbuf, n);
	config_free(&cfg);
	return rc;
}

TEST(a_client_key_pair_is_found_by_its_id_with_its_secret_and_name)
{
	struct keyring *k = NULL;
	char err[512] = "", secret[300];
	const char *name = NULL;

	write_file("pay.secret", "s3cret-pay\n", 0600);
	write_file("ops.secret", "s3cret-ops\r\n", 0600);
	REQUIRE(load("[client \"payments\"]\naccess-key-id = CKpay01\naccess-key-secret-file = %s/pay.secret\n"
		     "[client \"ops\"]\naccess-key-id = CKops01\naccess-key-secret-file = ops.secret\n"
		     "[client \"bearer\"]\nweight = 2\n",
		     &k, err, sizeof(err)) == 0);
	CHECK(keyring_count(k) == 2);
	CHECK(keyring_find(k, "CKpay01", 7, secret, sizeof(secret), &name) == 0);
	CHECK_STR(secret, "s3cret-pay");
	CHECK_STR(name, "payments");
	/* A bare name is under $CREDENTIALS_DIRECTORY; CRLF is a line ending too. */
	CHECK(keyring_find(k, "CKops01", 7, secret, sizeof(secret), &name) == 0);
	CHECK_STR(secret, "s3cret-ops");
	CHECK_STR(name, "ops");
	keyring_free(k);
}

TEST(an_unknown_or_prefix_id_is_not_found)
{
	struct keyring *k = NULL;
	char err[512] = "", secret[300];
	const char *name = NULL;

	write_file("pay.secret", "s3cret-pay\n", 0600);
	REQUIRE(load("[client \"payments\"]\naccess-key-id = CKpay01\naccess-key-secret-file = %s/pay.secret\n",
		     &k, err, sizeof(err)) == 0);
	CHECK(keyring_find(k, "CKpay0", 6, secret, sizeof(secret), &name) == -ENOENT);
	CHECK(keyring_find(k, "CKpay012", 8, secret, sizeof(secret), &name) == -ENOENT);
	CHECK(keyring_find(k, "ckpay01", 7, secret, sizeof(secret), &name) == -ENOENT);
	/* The ID is taken with its length: a NUL inside it is not an end. */
	CHECK(keyring_find(k, "CKpay01\0x", 9, secret, sizeof(secret), &name) == -ENOENT);
	CHECK(keyring_find(k, "CKpay01", 7, secret, 4, &name) == -E2BIG);
	CHECK(keyring_find(NULL, "CKpay01", 7, secret, sizeof(secret), &name) == -ENOENT);
	keyring_free(k);
}

TEST(a_secret_file_others_can_read_stops_the_load_naming_client_and_file)
{
	struct keyring *k = NULL;
	char err[512] = "";

	write_file("open.secret", "s3cret\n", 0644);
	CHECK(load("[client \"payments\"]\naccess-key-id = CKpay01\naccess-key-secret-file = %s/open.secret\n",
		   &k, err, sizeof(err)) == -EPERM);
	CHECK(strstr(err, "[client \"payments\"] access-key-secret-file") != NULL);
	CHECK(strstr(err, "open.secret") != NULL && strstr(err, "chmod 600") != NULL);
	CHECK(strstr(err, "s3cret") == NULL || strstr(err, "open.secret") != NULL);
	CHECK(k == NULL);
}

TEST(a_missing_or_malformed_secret_file_stops_the_load)
{
	struct keyring *k = NULL;
	char err[512] = "";

	CHECK(load("[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = %s/none\n", &k, err,
		   sizeof(err)) == -ENOENT);
	CHECK(strstr(err, "no such file") != NULL);
	write_file("two.secret", "one two\n", 0600);
	CHECK(load("[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = %s/two.secret\n",
		   &k, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "one secret") != NULL);
	CHECK(strstr(err, "one two") == NULL); /* never the content */
	write_file("empty.secret", "\n", 0600);
	CHECK(load("[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = %s/empty.secret\n",
		   &k, err, sizeof(err)) == -EINVAL);
}

TEST(a_key_pair_needs_both_keys_and_ids_are_unique)
{
	struct config cfg;

	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-id = CKa\n") < 0);
	config_free(&cfg);
	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-secret-file = /x\n") < 0);
	config_free(&cfg);
	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = /x\n"
			  "[client \"b\"]\naccess-key-id = CKa\naccess-key-secret-file = /y\n") < 0);
	config_free(&cfg);
	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-id = \"CK a\"\naccess-key-secret-file = /x\n") < 0);
	config_free(&cfg);
	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = rel/x\n") < 0);
	config_free(&cfg);
	CHECK(parse(&cfg, "[client \"a\"]\naccess-key-id = CKa\naccess-key-secret-file = a.secret\n") == 0);
	config_free(&cfg);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/camskeyd-keyring-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	RUN(a_client_key_pair_is_found_by_its_id_with_its_secret_and_name);
	RUN(an_unknown_or_prefix_id_is_not_found);
	RUN(a_secret_file_others_can_read_stops_the_load_naming_client_and_file);
	RUN(a_missing_or_malformed_secret_file_stops_the_load);
	RUN(a_key_pair_needs_both_keys_and_ids_are_unique);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			return 1;
	}
	return harness_done();
}
