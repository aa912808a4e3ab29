/*
 * limiter.h -- when the next upstream call may be sent, so that the account
 * never sees more than `rate` calls in any sliding second at the upstream.
 *
 * Two rules, both checked at send time, retries included:
 *  1. spacing (GCRA): calls are spaced 1/effective_rate apart, with at most
 *     `burst` calls early; burst 1 is pure spacing;
 *  2. a log of the last floor(rate) send times: a new call waits until the
 *     oldest of them is more than 1 s + margin old. This bounds every sliding
 *     second by construction whatever the burst, and the margin absorbs
 *     what moves a call's arrival at the upstream (which counts arrivals,
 *     not our sends).
 * The margin (the arrival estimator):
 *     margin = configured margin_ms
 *            + min(250 ms, spread of recent send-to-wire delays
 *                          + 2 x recent TCP RTT variance)
 * where the send-to-wire delay runs from the send decision until the
 * request's bytes were written (connection set-up, TLS handshake, a queued
 * write), the spread is a high rank (~p97) minus the lowest of the last 64,
 * and the RTT variance is the kernel's (tcpi_rttvar) for the connections
 * the calls opened, read after their handshakes (a high rank of the last
 * 64; upstream.h says why not later). The upstream's processing time and
 * the answer's way back happen after the arrival was counted: they are not
 * an input at all, so an upstream that answers slowly or unevenly costs no
 * quota. Whatever the daemon cannot observe (a gateway queue, a relay in
 * front of the upstream) is what the configured margin is for.
 * When the account is throttled anyway (System.LimitControl), the effective
 * rate halves (multiplicative decrease, floor rate/16) and sends pause; a hint
 * with Remain:0 and TimeLeft only pauses sends until the upstream's window
 * resets (at full use the last call of every window reports Remain:0); then it recovers additively by rate/10 per second
 * without throttles, back to `rate`.
 * Pure: time is an argument (monotonic microseconds); never logs.
 * Threads: one owner (the engine thread).
 */
#ifndef CAMSKEYD_LIMITER_H
#define CAMSKEYD_LIMITER_H

#include <stdint.h>

struct limiter_options {
	double rate;         /* calls per second, > 0 */
	unsigned burst;      /* >= 1 */
	unsigned margin_ms;  /* fixed safety margin added to the 1 s window */
};

struct limiter;

struct limiter *limiter_new(const struct limiter_options *opt, int64_t now_us);
void limiter_free(struct limiter *l);
/* New rate/burst/margin (reload); keeps the send log and back-off state. */
void limiter_configure(struct limiter *l, const struct limiter_options *opt, int64_t now_us);

/* Earliest time >= now_us at which a call may be sent. */
int64_t limiter_next_send_us(struct limiter *l, int64_t now_us);
/* Record a call sent at now_us (callers check limiter_next_send_us first). */
void limiter_record_send(struct limiter *l, int64_t now_us);
/*
 * Estimated time from now until `ahead` more calls have been sent and this
 * one may go (ahead = 0: the next slot). Used to refuse a wait that cannot
 * succeed and to compute Retry-After.
 */
int64_t limiter_wait_estimate_us(struct limiter *l, int64_t now_us, uint64_t ahead);

/*
 * A finished call's arrival evidence: wire_delay_us from its send decision
 * until its request was written, rtt_var_us the TCP RTT variance of its
 * connection; either negative when unknown (the request never went out, a
 * UNIX socket, no TCP_INFO), both negative: no-op. Feeds the learned part
 * of the margin (see above); whole call latency must not be passed here.
 */
void limiter_observe_arrival(struct limiter *l, int64_t wire_delay_us, int64_t rtt_var_us);
/*
 * The call recorded at sent_at_us (limiter_record_send) reached the wire
 * wire_delay_us later: its entry in the sliding log moves to that arrival,
 * so the window of the calls after it counts from when the upstream saw it,
 * not from when it was sent. A call's own delay is known when it completes,
 * usually long before the rate-th call after it: this covers a first call's
 * slow connection set-up the learned margin cannot have seen yet. No-op if
 * the entry has left the log or wire_delay_us <= 0.
 */
void limiter_place_arrival(struct limiter *l, int64_t sent_at_us, int64_t wire_delay_us);
/* The upstream answered System.LimitControl at now_us. */
void limiter_on_throttle(struct limiter *l, int64_t now_us);
/*
 * A rate-limit hint arrived (-1 for an absent field). The upstream measured
 * TimeLeft when the call arrived, so at_us is that call's arrival as far as
 * the daemon knows it: its send decision + its wire delay, not the time the
 * answer came back (which would add the upstream's processing time to every
 * Remain:0 pause).
 */
void limiter_on_hint(struct limiter *l, int64_t at_us, int64_t remain, int64_t time_left_ms);

/* Current effective calls per second (after back-off). */
double limiter_effective_rate(struct limiter *l, int64_t now_us);
/* Current total margin added to the window (configured + learned), in microseconds. */
int64_t limiter_margin_us(const struct limiter *l);
/*
 * Calls still allowed in the current one-second window (0 while paused):
 * what the RateLimit response header reports as remaining.
 */
unsigned limiter_window_remaining(struct limiter *l, int64_t now_us);
/* Throttles seen since start. */
uint64_t limiter_throttles(const struct limiter *l);

#endif
