"""The limiter's margin follows what moves a call's arrival, never the
upstream's processing time (issue #10): the same backlog, once against an
upstream that answers at once and once against one that takes 100-400 ms
(a relay holding the answers back, tests/bench/relay.py), must be sent with
the same spacing. The two runs are compared with each other, never with a
wall-clock figure."""
import threading

import camtest
from camtest import Daemon, Relay, Sim, key_path, request

KEYS = 40
CALLERS = 16
MARGIN_MS = 20
SKIP = 5          # the first calls go at plain spacing, before the log is full


def backlog(down_ms, prefix):
    """KEYS cold keys from CALLERS callers; returns (arrivals_ms, stats, margin_s)."""
    sim = Sim(quota=5)
    relay = Relay(sim.port, down_ms=down_ms)
    d = Daemon(relay.url, ["--rate", "5", "--rate-margin-ms", str(MARGIN_MS),
                           "--max-wait-ms", "120000", "--no-access-log"])
    phones = ["%s%05d" % (prefix, i) for i in range(KEYS)]
    lock = threading.Lock()
    next_key = [0]
    statuses = []

    def caller(_):
        while True:
            with lock:
                if next_key[0] >= KEYS:
                    return
                i = next_key[0]
                next_key[0] += 1
            status, _, _ = request(d.port, key_path(phones[i], max_wait_ms=120000), timeout=120)
            with lock:
                statuses.append(status)

    camtest.parallel(CALLERS, caller, timeout=120)
    assert statuses == [200] * KEYS, sorted(set(statuses))
    s = sim.stats()
    margin_s = d.metric("camskeyd_limiter_margin_seconds")
    camtest.cleanup()
    return s["arrivals_ms"], s, margin_s


def mean_spacing_ms(arrivals):
    steady = arrivals[SKIP:]
    assert len(steady) >= 10, arrivals
    return (steady[-1] - steady[0]) / (len(steady) - 1)


def compare(attempt):
    """One pair of runs; returns the timing faults found (empty: none).

    What does not depend on the machine's speed is asserted here; what
    does (the spacing ratio, a throttled call when scheduling delays on a
    loaded machine outgrow the margin) is returned for the caller."""
    fast_arrivals, fast, fast_margin = backlog((0, 0), "8613%d6" % attempt)
    slow_arrivals, slow, slow_margin = backlog((100, 400), "8613%d7" % attempt)
    fast_ms, slow_ms = mean_spacing_ms(fast_arrivals), mean_spacing_ms(slow_arrivals)
    print("# attempt %d: mean spacing %.1f ms answering at once, %.1f ms answering in "
          "100-400 ms (ratio %.3f); margin %.1f ms vs %.1f ms; throttled %d and %d"
          % (attempt, fast_ms, slow_ms, slow_ms / fast_ms, 1000 * fast_margin,
             1000 * slow_margin, fast["throttled"], slow["throttled"]))
    # The margin itself moved by less than half its configured part.
    assert slow_margin - fast_margin < MARGIN_MS / 2000.0, (fast_margin, slow_margin)
    faults = []
    for name, s in (("fast", fast), ("slow", slow)):
        # Each key called once, and once more for each throttled call only.
        assert s["calls"] == KEYS + s["throttled"], s
        if s["throttled"]:
            faults.append("%s run: %d throttled, %d in a sliding second"
                          % (name, s["throttled"], s["max_in_sliding_second"]))
    # Margin learned from whole call latencies made this 1.36 (and hints
    # anchored at the answer instead of the arrival add more); a loaded
    # machine's scheduling delays alone have moved it to 1.13 and 1.22.
    if slow_ms / fast_ms >= 1.2:
        faults.append("spacing ratio %.3f" % (slow_ms / fast_ms))
    return faults


def test_processing_time_does_not_widen_the_send_spacing():
    # A timing fault is looked at twice: a loaded machine (CI under ASan
    # has throttled one call and reached 1.22) seldom hits two pairs of
    # runs, a daemon that widens the spacing or overruns the quota always.
    faults = compare(1)
    if faults:
        print("# attempt 1 on a noisy machine? %s; once more" % "; ".join(faults))
        faults = compare(2)
    assert not faults, faults


camtest.main(globals())
