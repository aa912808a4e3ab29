"""Flights and the limiter: one call per key, never above the quota."""
import time

import camtest
from camtest import PHONE, Daemon, Sim, key_path, parallel, request


def test_200_concurrent_requests_for_one_cold_key_make_one_call():
    sim = Sim()
    d = Daemon(sim.url)
    results = parallel(200, lambda i: request(d.port, key_path(PHONE), timeout=60))
    bodies = {r[2] for r in results}
    assert all(r[0] == 200 for r in results), [r[0] for r in results if r[0] != 200][:5]
    assert len(bodies) == 1, "all callers get the same answer"
    assert sim.stats()["calls"] == 1
    joins = d.metric("camskeyd_flight_joins_total")
    hits = d.settled_metric("camskeyd_requests_total", lambda v: (v or 0) + joins >= 199,
                            result="hit")
    assert joins + hits == 199, (joins, hits)


def test_50_distinct_cold_keys_never_exceed_the_quota():
    sim = Sim(quota=5)
    d = Daemon(sim.url, ["--max-wait-ms", "30000"])
    phones = ["86139%08d" % (10000000 + i) for i in range(50)]
    start = time.monotonic()
    results = parallel(50, lambda i: request(d.port, key_path(phones[i]), timeout=60))
    elapsed = time.monotonic() - start
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 50, statuses
    s = sim.stats()
    assert s["calls"] == 50, s["calls"]
    assert s["throttled"] == 0, s
    assert s["max_in_sliding_second"] <= 5, s["max_in_sliding_second"]
    print("# 50 cold keys: %.1fs, %.2f calls/s, max in a sliding second %d"
          % (elapsed, 50 / elapsed, s["max_in_sliding_second"]))


def test_quota_wait_limit_gives_503_with_retry_after():
    sim = Sim(quota=5)
    d = Daemon(sim.url, ["--rate", "1", "--max-wait-ms", "20000"])
    phones = ["86137%08d" % (20000000 + i) for i in range(8)]
    results = parallel(8, lambda i: request(d.port, key_path(phones[i], max_wait_ms=1500),
                                            timeout=30))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) >= 1
    refused = [r for r in results if r[0] == 503]
    assert refused, statuses
    for status, hdrs, body in refused:
        assert b'"Proxy.QuotaWait"' in body, body
        assert int(hdrs["retry-after"]) >= 1
    assert sim.stats()["throttled"] == 0


def test_full_queue_answers_queue_full():
    sim = Sim(quota=5)
    d = Daemon(sim.url, ["--rate", "0.5", "--queue-max", "2", "--max-wait-ms", "60000"])
    phones = ["86136%08d" % (30000000 + i) for i in range(6)]
    results = parallel(6, lambda i: request(d.port, key_path(phones[i], max_wait_ms=60000),
                                            timeout=60))
    bodies = [r[2] for r in results if r[0] == 503]
    assert any(b'"Proxy.QueueFull"' in b for b in bodies), [r[0] for r in results]


camtest.main(globals())
