/*
 * cli.h -- `camskeyd cache ...`: inspect and manage the cache database from
 * the command line (list, show, purge, stats) and warm it through a running
 * daemon (warm FILE).
 * Logs: nothing; prints to stdout/stderr. Threads: main only.
 */
#ifndef CAMSKEYD_CLI_H
#define CAMSKEYD_CLI_H

#include <stdio.h>

#include "config.h"

/*
 * argv[0] is the command ("cache"; anything else is named as unknown).
 * Returns the process exit status.
 */
int cli_main(const struct config *cfg, int argc, char **argv);

/* `camskeyd --version`: the version, the libraries' versions, the features. */
void cli_print_version(FILE *out);

#endif
