/*
 * cli.h -- `camskeyd cache ...`: inspect and manage the cache database from
 * the command line (list, show, purge, stats) and warm it through a running
 * daemon (warm FILE).
 * Logs: nothing; prints to stdout/stderr. Threads: main only.
 */
#ifndef CAMSKEYD_CLI_H
#define CAMSKEYD_CLI_H

#include "config.h"

/* argv[0] is "cache". Returns the process exit status. */
int cli_main(const struct config *cfg, int argc, char **argv);

#endif
