/*
 * test_docs.c -- the documentation keeps up with the code: every
 * configuration key (config_keys()) is in docs/OPERATIONS.md, whose reload
 * table says what the key table says, and in the manual pages; every metric
 * family of the metrics table (metrics_families()) has a row in the metrics
 * table of docs/OPERATIONS.md with its type and labels; every "Proxy.*" Code that
 * appears in the daemon's .c files is in docs/API.md (and has a
 * troubleshooting entry in docs/OPERATIONS.md).
 *
 * Names are matched as whole words, so "rate" is not found inside
 * "rate-margin-ms", and the manual pages are read with their roff escapes
 * (\-, \fB, \&, ...) removed. Paths are relative to the repository root,
 * where the tests run.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "mem.h"
#include "metrics.h"

/* No documentation or source file comes near this. */
#define DOC_MAX_BYTES (4 * 1024 * 1024)
/* Distinct Proxy.* Codes the scan keeps; far more than exist. */
#define CODES_MAX 128
#define CODE_MAX_BYTES 64

/* ---- helpers --------------------------------------------------------------- */

/* Read a whole file (NUL-terminated, at most DOC_MAX_BYTES), or NULL. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *data;
	size_t len;

	if (!f) {
		fprintf(stderr, "  cannot open %s (run the tests from the repository root)\n", path);
		return NULL;
	}
	data = xmalloc(DOC_MAX_BYTES + 1);
	len = fread(data, 1, DOC_MAX_BYTES + 1, f);
	fclose(f);
	if (len > DOC_MAX_BYTES) {
		fprintf(stderr, "  %s is larger than %d bytes\n", path, DOC_MAX_BYTES);
		free(data);
		return NULL;
	}
	data[len] = '\0';
	return data;
}

/*
 * Remove roff escapes in place: "\-" and "\(hy" become "-", "\e" a
 * backslash; font changes (\fB, \fI, \fR, \fP, \f(XX, \f[...]) and "\&"
 * disappear; "\c" too. Other escapes are kept as they are.
 */
static void unescape_roff(char *s)
{
	char *out = s;

	while (*s) {
		if (s[0] != '\\') {
			*out++ = *s++;
			continue;
		}
		if (s[1] == '-') {
			*out++ = '-';
			s += 2;
		} else if (s[1] == 'e') {
			*out++ = '\\';
			s += 2;
		} else if (s[1] == '&' || s[1] == 'c') {
			s += 2;
		} else if (s[1] == '(' && s[2] == 'h' && s[3] == 'y') {
			*out++ = '-';
			s += 4;
		} else if (s[1] == 'f' && s[2] == '(' && s[3] && s[4]) {
			s += 5;
		} else if (s[1] == 'f' && s[2] == '[') {
			char *close = strchr(s + 3, ']');

			s = close ? close + 1 : s + 3;
		} else if (s[1] == 'f' && s[2]) {
			s += 3;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Characters that continue a key name ("max-wait-ms", "key_name"). */
static bool is_key_char(char c)
{
	return is_alnum(c) || c == '-' || c == '_';
}

/* Characters that continue a metric name. */
static bool is_metric_char(char c)
{
	return is_alnum(c) || c == '_';
}

/* Characters that continue a Code ("Proxy.NotCached"). */
static bool is_code_char(char c)
{
	return is_alnum(c) || c == '.' || c == '_';
}

/* Does text hold word with no word character right before or after it? */
static bool has_word(const char *text, const char *word, bool (*word_char)(char))
{
	size_t n = strlen(word);
	const char *p = text;

	if (n == 0)
		return false;
	while ((p = strstr(p, word)) != NULL) {
		bool starts = p == text || !word_char(p[-1]);
		bool ends = !word_char(p[n]);

		if (starts && ends)
			return true;
		p++;
	}
	return false;
}

/*
 * Append every distinct "Proxy.[A-Za-z]+" in text to codes (n in/out).
 * A match must not continue a longer name ("XProxy.Foo").
 */
static void collect_proxy_codes(const char *text, char codes[][CODE_MAX_BYTES], size_t *n)
{
	const char *p = text;

	while ((p = strstr(p, "Proxy.")) != NULL) {
		const char *name = p + 6;
		size_t len = 0;

		if (p > text && is_code_char(p[-1])) {
			p = name;
			continue;
		}
		while ((name[len] >= 'a' && name[len] <= 'z') || (name[len] >= 'A' && name[len] <= 'Z'))
			len++;
		if (len > 0 && 6 + len < CODE_MAX_BYTES) {
			char code[CODE_MAX_BYTES];
			bool seen = false;

			memcpy(code, p, 6 + len);
			code[6 + len] = '\0';
			for (size_t i = 0; i < *n && !seen; i++)
				seen = strcmp(codes[i], code) == 0;
			if (!seen && *n < CODES_MAX)
				memcpy(codes[(*n)++], code, sizeof(code));
		}
		p = name + len;
	}
}

/* Every Proxy.* Code in the daemon's .c files. How many, or 0 on error. */
static size_t scan_sources(char codes[][CODE_MAX_BYTES])
{
	DIR *dir = opendir("daemon");
	struct dirent *de;
	size_t n = 0;

	if (!dir) {
		fprintf(stderr, "  cannot open daemon/ (run the tests from the repository root)\n");
		return 0;
	}
	while ((de = readdir(dir)) != NULL) {
		size_t len = strlen(de->d_name);
		char path[512];
		char *text;

		if (len < 3 || strcmp(de->d_name + len - 2, ".c") != 0)
			continue;
		snprintf(path, sizeof(path), "daemon/%s", de->d_name);
		text = slurp(path);
		if (!text)
			continue;
		collect_proxy_codes(text, codes, &n);
		free(text);
	}
	closedir(dir);
	return n;
}

/*
 * The last cell of the Markdown table row that starts with "| `name` |",
 * copied into out; false if there is no such row.
 */
static bool table_row_last_cell(const char *text, const char *name, char *out, size_t out_size)
{
	char start[128];
	const char *row, *end, *cell;

	snprintf(start, sizeof(start), "\n| `%s` |", name);
	row = strstr(text, start);
	if (!row)
		return false;
	end = strchr(row + 1, '\n');
	if (!end)
		end = row + strlen(row);
	while (end > row && (end[-1] == ' ' || end[-1] == '|'))
		end--;
	cell = end;
	while (cell > row && cell[-1] != '|')
		cell--;
	while (cell < end && *cell == ' ')
		cell++;
	snprintf(out, out_size, "%.*s", (int)(end - cell), cell);
	return true;
}

/*
 * Cell number index (0: the first) of the Markdown table row that starts
 * with "| `name` |", trimmed, into out; false if there is no such row or
 * it has fewer cells.
 */
static bool table_row_cell(const char *text, const char *name, unsigned index, char *out,
			   size_t out_size)
{
	char start[128];
	const char *row, *end, *cell;

	snprintf(start, sizeof(start), "\n| `%s` |", name);
	row = strstr(text, start);
	if (!row)
		return false;
	row += 2; /* past "\n|" */
	end = strchr(row, '\n');
	if (!end)
		end = row + strlen(row);
	for (unsigned i = 0; i < index; i++) {
		row = memchr(row, '|', (size_t)(end - row));
		if (!row)
			return false;
		row++;
	}
	cell = memchr(row, '|', (size_t)(end - row));
	if (!cell)
		return false;
	while (row < cell && *row == ' ')
		row++;
	while (cell > row && cell[-1] == ' ')
		cell--;
	snprintf(out, out_size, "%.*s", (int)(cell - row), row);
	return true;
}

/* "a,b" as the docs write labels: "`a`, `b`"; "" stays "". */
static void labels_as_docs(const char *labels, char *out, size_t out_size)
{
	size_t n = 0;

	out[0] = '\0';
	for (const char *p = labels; *p && n + 8 < out_size;) {
		size_t len = strcspn(p, ",");

		n += (size_t)snprintf(out + n, out_size - n, "%s`%.*s`", n ? ", " : "", (int)len, p);
		p += len;
		if (*p == ',')
			p++;
	}
}

/* ---- the checkers themselves ------------------------------------------------ */

TEST(word_match_does_not_find_a_name_inside_a_longer_one)
{
	CHECK(!has_word("rate-margin-ms = 20", "rate", is_key_char));
	CHECK(!has_word("burst_rate", "rate", is_key_char));
	CHECK(has_word("| `rate` | `5` |", "rate", is_key_char));
	CHECK(has_word("rate", "rate", is_key_char));
	CHECK(!has_word("camskeyd_queue_depth_total", "camskeyd_queue_depth", is_metric_char));
	CHECK(has_word("camskeyd_queue_depth 3", "camskeyd_queue_depth", is_metric_char));
	CHECK(!has_word("", "rate", is_key_char));
}

TEST(roff_escapes_are_removed_before_matching)
{
	char text[] = ".BI \"max\\-wait\\-ms = \" MS\n\\fBlisten\\fR and \\f(BIttl\\fP \\&x\\(hyy";

	unescape_roff(text);
	CHECK_STR(text, ".BI \"max-wait-ms = \" MS\nlisten and ttl x-y");
	CHECK(has_word(text, "max-wait-ms", is_key_char));
	CHECK(has_word(text, "listen", is_key_char));
	CHECK(has_word(text, "ttl", is_key_char));
}

TEST(code_scan_finds_each_code_once_and_ignores_longer_names)
{
	char codes[CODES_MAX][CODE_MAX_BYTES];
	size_t n = 0;

	collect_proxy_codes("x \"Proxy.QuotaWait\" y Proxy.QuotaWait; XProxy.Bogus "
			    "Proxy. Proxy.NotFound\"", codes, &n);
	REQUIRE(n == 2);
	CHECK_STR(codes[0], "Proxy.QuotaWait");
	CHECK_STR(codes[1], "Proxy.NotFound");
}

TEST(table_row_cell_reads_each_cell_trimmed)
{
	char cell[64];
	const char *text = "x\n| `m_total` | counter | `a`, `b` | what |\n| `g` | gauge | | g |\n";

	REQUIRE(table_row_cell(text, "m_total", 0, cell, sizeof(cell)));
	CHECK_STR(cell, "`m_total`");
	REQUIRE(table_row_cell(text, "m_total", 1, cell, sizeof(cell)));
	CHECK_STR(cell, "counter");
	REQUIRE(table_row_cell(text, "m_total", 2, cell, sizeof(cell)));
	CHECK_STR(cell, "`a`, `b`");
	REQUIRE(table_row_cell(text, "g", 2, cell, sizeof(cell)));
	CHECK_STR(cell, "");
	CHECK(!table_row_cell(text, "g", 4, cell, sizeof(cell)));
	CHECK(!table_row_cell(text, "m", 1, cell, sizeof(cell)));
	labels_as_docs("a,b", cell, sizeof(cell));
	CHECK_STR(cell, "`a`, `b`");
	labels_as_docs("", cell, sizeof(cell));
	CHECK_STR(cell, "");
}

TEST(table_row_last_cell_reads_the_reload_column)
{
	char cell[64];
	const char *text = "x\n| `rate` | `5` | yes |\n| `cache` | `./camskeyd.db` | restart |\n";

	REQUIRE(table_row_last_cell(text, "rate", cell, sizeof(cell)));
	CHECK_STR(cell, "yes");
	REQUIRE(table_row_last_cell(text, "cache", cell, sizeof(cell)));
	CHECK_STR(cell, "restart");
	CHECK(!table_row_last_cell(text, "ttl", cell, sizeof(cell)));
}

/* ---- the documentation --------------------------------------------------- */

TEST(every_config_key_is_in_operations_md_with_its_reload_behaviour)
{
	char *doc = slurp("docs/OPERATIONS.md");
	const struct config_key_info *keys;
	size_t n;

	REQUIRE(doc != NULL);
	keys = config_keys(&n);
	REQUIRE(n > 0);
	for (size_t i = 0; i < n; i++) {
		char cell[64];

		if (!has_word(doc, keys[i].name, is_key_char)) {
			fprintf(stderr, "  docs/OPERATIONS.md does not mention the key %s\n",
				keys[i].name);
			CHECK(0);
			continue;
		}
		if (!table_row_last_cell(doc, keys[i].name, cell, sizeof(cell))) {
			fprintf(stderr, "  docs/OPERATIONS.md: no row \"| `%s` |\" in the reload table\n",
				keys[i].name);
			CHECK(0);
			continue;
		}
		if (strncmp(cell, keys[i].reloadable ? "yes" : "restart",
			    keys[i].reloadable ? 3 : 7) != 0) {
			fprintf(stderr, "  docs/OPERATIONS.md: %s is %s, the reload table says \"%s\"\n",
				keys[i].name, keys[i].reloadable ? "reloadable" : "not reloadable",
				cell);
			CHECK(0);
		}
	}
	free(doc);
}

/* Every configuration key is a word of the manual page at path. */
static void expect_config_keys_in_man_page(const char *path, const char *what)
{
	char *man = slurp(path);
	const struct config_key_info *keys;
	size_t n;

	REQUIRE(man != NULL);
	unescape_roff(man);
	keys = config_keys(&n);
	for (size_t i = 0; i < n; i++) {
		if (!has_word(man, keys[i].name, is_key_char)) {
			fprintf(stderr, "  %s %s %s\n", path, what, keys[i].name);
			CHECK(0);
		}
	}
	free(man);
}

TEST(every_config_key_is_in_the_configuration_man_page)
{
	expect_config_keys_in_man_page("docs/camskeyd.conf.5", "does not mention the key");
}

TEST(every_config_key_is_named_in_the_daemon_man_page)
{
	expect_config_keys_in_man_page("docs/camskeyd.8", "does not name in OPTIONS the key");
}

TEST(every_metric_family_is_in_operations_md_with_its_type_and_labels)
{
	char *doc = slurp("docs/OPERATIONS.md");
	const struct metrics_family *fams;
	size_t n;

	REQUIRE(doc != NULL);
	fams = metrics_families(&n);
	REQUIRE(n > 0);
	for (size_t i = 0; i < n; i++) {
		char type[32], labels[128], want[128];

		if (!has_word(doc, fams[i].name, is_metric_char)) {
			fprintf(stderr, "  docs/OPERATIONS.md does not describe the metric %s\n",
				fams[i].name);
			CHECK(0);
			continue;
		}
		if (!table_row_cell(doc, fams[i].name, 1, type, sizeof(type)) ||
		    !table_row_cell(doc, fams[i].name, 2, labels, sizeof(labels))) {
			fprintf(stderr, "  docs/OPERATIONS.md: no row \"| `%s` | type | labels |\"\n",
				fams[i].name);
			CHECK(0);
			continue;
		}
		if (strcmp(type, metrics_type_name(fams[i].type)) != 0) {
			fprintf(stderr, "  docs/OPERATIONS.md: %s is a %s, the table says \"%s\"\n",
				fams[i].name, metrics_type_name(fams[i].type), type);
			CHECK(0);
		}
		labels_as_docs(fams[i].labels, want, sizeof(want));
		if (strcmp(labels, want) != 0) {
			fprintf(stderr, "  docs/OPERATIONS.md: %s has labels \"%s\", the table says \"%s\"\n",
				fams[i].name, want, labels);
			CHECK(0);
		}
	}
	free(doc);
}

/* Every Proxy.* code the sources originate is a word of the document at path. */
static void expect_proxy_codes_in(const char *path, const char *what)
{
	static char codes[CODES_MAX][CODE_MAX_BYTES];
	char *doc = slurp(path);
	size_t n;

	REQUIRE(doc != NULL);
	n = scan_sources(codes);
	/* The daemon originates at least these; finding none means a broken scan. */
	REQUIRE(n >= 5);
	for (size_t i = 0; i < n; i++) {
		if (!has_word(doc, codes[i], is_code_char)) {
			fprintf(stderr, "  %s %s %s\n", path, what, codes[i]);
			CHECK(0);
		}
	}
	free(doc);
}

TEST(every_proxy_code_in_the_sources_is_in_api_md)
{
	expect_proxy_codes_in("docs/API.md", "does not list the Code");
}

TEST(every_proxy_code_in_the_sources_is_in_operations_md)
{
	expect_proxy_codes_in("docs/OPERATIONS.md", "has no troubleshooting entry for");
}

int main(void)
{
	RUN(word_match_does_not_find_a_name_inside_a_longer_one);
	RUN(roff_escapes_are_removed_before_matching);
	RUN(code_scan_finds_each_code_once_and_ignores_longer_names);
	RUN(table_row_cell_reads_each_cell_trimmed);
	RUN(table_row_last_cell_reads_the_reload_column);
	RUN(every_config_key_is_in_operations_md_with_its_reload_behaviour);
	RUN(every_config_key_is_in_the_configuration_man_page);
	RUN(every_config_key_is_named_in_the_daemon_man_page);
	RUN(every_metric_family_is_in_operations_md_with_its_type_and_labels);
	RUN(every_proxy_code_in_the_sources_is_in_api_md);
	RUN(every_proxy_code_in_the_sources_is_in_operations_md);
	return harness_done();
}
