/*
 * fuzz_config.c -- fuzz target for the configuration parser (config.c):
 * the INI reader, every key's value parser, the cross-key validation and
 * one command-line flag.
 *
 * Input: INI_TEXT [\0 FLAG_NAME \0 FLAG_VALUE]. The text is parsed as file
 * "fuzz.conf" on top of the defaults; if it parses and validates, the
 * effective configuration printed by config_print() must parse and
 * validate again and print the same text (what --print-config writes is a
 * configuration file). Then the flag is applied with config_set(), the
 * whole is validated once more and, if valid, printed and re-read again.
 *
 * Invariants checked: the return codes are 0 or -EINVAL; a failure always
 * comes with at least one error line and a success with none; every file
 * error line starts with "fuzz.conf:LINE: ", every flag error with
 * "command line: --"; nothing leaks (config_free).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

/* Generous for a fuzz input's errors; an overflow only sets the sticky error. */
#define FUZZ_ERR_MAX_BYTES (256 * 1024)

/* Each line of err is complete and starts with prefix. */
static void check_lines(const struct buf *err, const char *prefix)
{
	const char *p = buf_str(err);
	size_t n = strlen(prefix);

	if (buf_error(err))
		return;
	while (*p) {
		const char *nl = strchr(p, '\n');

		FUZZ_ASSERT(nl != NULL);
		FUZZ_ASSERT(strncmp(p, prefix, n) == 0);
		p = nl + 1;
	}
}

/* The file's error lines are "fuzz.conf:LINE: ...". */
static void check_file_lines(const struct buf *err)
{
	const char *p = buf_str(err);

	check_lines(err, "fuzz.conf:");
	if (buf_error(err))
		return;
	while (*p) {
		const char *q = p + strlen("fuzz.conf:");

		FUZZ_ASSERT(*q >= '1' && *q <= '9');
		while (*q >= '0' && *q <= '9')
			q++;
		FUZZ_ASSERT(q[0] == ':' && q[1] == ' ');
		p = strchr(p, '\n') + 1;
	}
}

/* config_print() into a new string (free() it). */
static char *print_config(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	FUZZ_ASSERT(f != NULL);
	config_print(cfg, f);
	FUZZ_ASSERT(fclose(f) == 0);
	FUZZ_ASSERT(text != NULL);
	return text;
}

/* A configuration that parsed and validated prints as one that does too. */
static void check_print_round_trip(const struct config *cfg)
{
	char *first = print_config(cfg), *second;
	struct config again;
	struct buf err;

	buf_init(&err, FUZZ_ERR_MAX_BYTES);
	config_init(&again);
	if (config_parse_string(&again, "fuzz.conf", first, &err) != 0 ||
	    config_validate(&again, &err) != 0) {
		fprintf(stderr, "printed configuration refused:\n%s\n--- printed was:\n%s\n",
			buf_str(&err), first);
		FUZZ_ASSERT(!"config_print() output does not parse back");
	}
	second = print_config(&again);
	if (strcmp(first, second) != 0) {
		fprintf(stderr, "--- first print:\n%s\n--- second print:\n%s\n", first, second);
		FUZZ_ASSERT(!"config_print() output does not print back the same");
	}
	free(second);
	config_free(&again);
	buf_free(&err);
	free(first);
}

/*
 * Found by this target: config_print() wrote a value holding '"' so it
 * read back differently (tests/fuzz/regressions/config/print-flag-*). Fixed
 * by refusing '"' in string values; the round trip is checked for flags too.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_parts fp;
	struct config cfg;
	struct buf err;
	int r, v;

	fuzz_split(&fp, data, size);
	buf_init(&err, FUZZ_ERR_MAX_BYTES);
	config_init(&cfg);

	r = config_parse_string(&cfg, "fuzz.conf", fp.part[0], &err);
	FUZZ_ASSERT(r == 0 || r == -EINVAL);
	FUZZ_ASSERT((r == 0) == (err.len == 0));
	check_file_lines(&err);
	buf_reset(&err);

	v = config_validate(&cfg, &err);
	FUZZ_ASSERT(v == 0 || v == -EINVAL);
	FUZZ_ASSERT((v == 0) == (err.len == 0));
	check_lines(&err, "");
	buf_reset(&err);

	if (r == 0 && v == 0)
		check_print_round_trip(&cfg);

	if (fp.n >= 3) {
		r = config_set(&cfg, fp.part[1], fp.part[2], &err);
		FUZZ_ASSERT(r == 0 || r == -EINVAL);
		FUZZ_ASSERT((r == 0) == (err.len == 0));
		check_lines(&err, "command line: --");
		buf_reset(&err);
		v = config_validate(&cfg, &err);
		FUZZ_ASSERT(v == 0 || v == -EINVAL);
		FUZZ_ASSERT((v == 0) == (err.len == 0));
		if (r == 0 && v == 0)
			check_print_round_trip(&cfg);
	}

	config_free(&cfg);
	buf_free(&err);
	fuzz_parts_free(&fp);
	return 0;
}
