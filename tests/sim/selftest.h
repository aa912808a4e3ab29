/*
 * selftest.h -- `camsim --self-test DIR`: check the simulator's own
 * verifier (simsig.c) against every case of DIR/signature-vectors.json
 * (the official SDK's vectors) and DIR/alibaba-doc-examples.json (Alibaba's
 * documented examples), and check that tampered copies of each case fail.
 *
 * Prints one "ok - ID" / "not ok - ID: reason" line per case on stdout and
 * a closing "# N passed, N failed". Single-threaded; logs nothing else.
 */
#ifndef CAMSIM_SELFTEST_H
#define CAMSIM_SELFTEST_H

/* 0 when every case passed (and there was at least one), 1 otherwise. */
int selftest_run(const char *dir);

#endif
