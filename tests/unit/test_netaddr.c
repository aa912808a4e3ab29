/*
 * test_netaddr.c -- unit tests for the listen-address parser: the three
 * forms, the port bounds, what is refused and why, and which addresses
 * count as loopback (IPv4-mapped loopback included, issue #9.7).
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "harness.h"

static int parse(const char *text, struct netaddr *na)
{
	memset(na, 0xa5, sizeof(*na));
	return netaddr_parse(text, na, NULL);
}

/* text is refused, and the reason names the problem (contains `word`). */
static int refused(const char *text, const char *word)
{
	struct netaddr na;
	struct buf reason;
	int ok;

	buf_init(&reason, 1024);
	ok = netaddr_parse(text, &na, &reason) == -EINVAL && strstr(buf_str(&reason), word);
	if (!ok)
		fprintf(stderr, "  [%s] not refused with \"%s\": [%s]\n", text, word,
			buf_str(&reason));
	buf_free(&reason);
	return ok;
}

static int loopback_is(const char *text, bool want)
{
	struct netaddr na;

	if (parse(text, &na) != 0 || na.is_loopback != want ||
	    netaddr_is_loopback((const struct sockaddr *)&na.ss) != want) {
		fprintf(stderr, "  [%s] loopback is not %d\n", text, want);
		return 0;
	}
	return 1;
}

TEST(ipv4_address_and_port_give_a_sockaddr_in)
{
	struct netaddr na;
	const struct sockaddr_in *sin = (const void *)&na.ss;

	REQUIRE(parse("127.0.0.1:8080", &na) == 0);
	CHECK(na.ss.ss_family == AF_INET);
	CHECK(na.len == sizeof(struct sockaddr_in));
	CHECK(ntohs(sin->sin_port) == 8080);
	CHECK(ntohl(sin->sin_addr.s_addr) == 0x7f000001);
}

TEST(bracketed_ipv6_address_and_port_give_a_sockaddr_in6)
{
	struct netaddr na;
	const struct sockaddr_in6 *sin6 = (const void *)&na.ss;

	REQUIRE(parse("[::1]:65535", &na) == 0);
	CHECK(na.ss.ss_family == AF_INET6);
	CHECK(na.len == sizeof(struct sockaddr_in6));
	CHECK(ntohs(sin6->sin6_port) == 65535);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
}

TEST(unix_path_gives_a_sockaddr_un_with_the_path)
{
	struct netaddr na;
	const struct sockaddr_un *sun = (const void *)&na.ss;

	REQUIRE(parse("unix:/run/camskeyd/http.sock", &na) == 0);
	CHECK(na.ss.ss_family == AF_UNIX);
	CHECK_STR(sun->sun_path, "/run/camskeyd/http.sock");
	CHECK(na.len == offsetof(struct sockaddr_un, sun_path) + strlen(sun->sun_path) + 1);
	CHECK(na.is_loopback);
}

TEST(port_must_be_1_to_65535_in_digits)
{
	struct netaddr na;

	CHECK(parse("127.0.0.1:1", &na) == 0);
	CHECK(refused("127.0.0.1:0", "port"));
	CHECK(refused("127.0.0.1:65536", "port"));
	CHECK(refused("127.0.0.1:", "port"));
	CHECK(refused("127.0.0.1:80a", "port"));
	CHECK(refused("127.0.0.1:+80", "port"));
	CHECK(refused("127.0.0.1: 80", "port"));
	CHECK(refused("[::1]:-1", "port"));
}

TEST(host_names_and_malformed_addresses_are_refused)
{
	CHECK(refused("localhost:8080", "numeric"));
	CHECK(refused("127.0.0:8080", "numeric"));
	CHECK(refused(":8080", "numeric"));
	CHECK(refused("[]:8080", "numeric"));
	CHECK(refused("[127.0.0.1]:8080", "numeric"));
	CHECK(refused("8080", "ADDR:PORT"));
	CHECK(refused("", "ADDR:PORT"));
}

TEST(ipv6_without_brackets_or_port_is_refused)
{
	CHECK(refused("::1:8080", "brackets"));
	CHECK(refused("[::1]8080", "[IPV6]:PORT"));
	CHECK(refused("[::1:8080", "[IPV6]:PORT"));
}

TEST(unix_path_must_be_absolute_and_fit_sun_path)
{
	char long_path[200];

	CHECK(refused("unix:", "ABSOLUTE"));
	CHECK(refused("unix:relative.sock", "ABSOLUTE"));
	memset(long_path, 'a', sizeof(long_path));
	memcpy(long_path, "unix:/", 6);
	long_path[5 + 108] = '\0';  /* a 108-byte path: no room for the NUL */
	CHECK(refused(long_path, "108"));
	long_path[5 + 107] = '\0';
	{
		struct netaddr na;

		CHECK(parse(long_path, &na) == 0);
	}
}

TEST(reason_quotes_unprintable_bytes)
{
	CHECK(refused("127.0.0.1:8\x01", "\\x01"));
}

TEST(loopback_is_127_slash_8_ipv6_loopback_and_ipv4_mapped_loopback)
{
	CHECK(loopback_is("127.0.0.1:8080", true));
	CHECK(loopback_is("127.255.3.4:8080", true));
	CHECK(loopback_is("[::1]:8080", true));
	CHECK(loopback_is("[::ffff:127.0.0.1]:8080", true));
	CHECK(loopback_is("[::ffff:127.9.8.7]:8080", true));
	CHECK(loopback_is("[0:0:0:0:0:ffff:7f00:1]:8080", true));
}

TEST(wildcard_private_and_mapped_public_addresses_are_not_loopback)
{
	CHECK(loopback_is("0.0.0.0:8080", false));
	CHECK(loopback_is("10.0.0.1:8080", false));
	CHECK(loopback_is("128.0.0.1:8080", false));
	CHECK(loopback_is("[::]:8080", false));
	CHECK(loopback_is("[::2]:8080", false));
	CHECK(loopback_is("[::ffff:10.0.0.1]:8080", false));
	CHECK(loopback_is("[::ffff:128.0.0.1]:8080", false));
	/* IPv4-compatible (deprecated, not mapped) ::127.0.0.1 is not loopback */
	CHECK(loopback_is("[::127.0.0.1]:8080", false));
	CHECK(loopback_is("[fe80::1]:8080", false));
}

TEST(refused_text_leaves_the_result_untouched)
{
	struct netaddr na, before;

	memset(&na, 0x5a, sizeof(na));
	before = na;
	CHECK(netaddr_parse("nope", &na, NULL) == -EINVAL);
	CHECK(memcmp(&na, &before, sizeof(na)) == 0);
}

int main(void)
{
	RUN(ipv4_address_and_port_give_a_sockaddr_in);
	RUN(bracketed_ipv6_address_and_port_give_a_sockaddr_in6);
	RUN(unix_path_gives_a_sockaddr_un_with_the_path);
	RUN(port_must_be_1_to_65535_in_digits);
	RUN(host_names_and_malformed_addresses_are_refused);
	RUN(ipv6_without_brackets_or_port_is_refused);
	RUN(unix_path_must_be_absolute_and_fit_sun_path);
	RUN(reason_quotes_unprintable_bytes);
	RUN(loopback_is_127_slash_8_ipv6_loopback_and_ipv4_mapped_loopback);
	RUN(wildcard_private_and_mapped_public_addresses_are_not_loopback);
	RUN(refused_text_leaves_the_result_untouched);
	return harness_done();
}
