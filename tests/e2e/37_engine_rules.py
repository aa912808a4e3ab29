"""Engine rules a caller can see end to end: a background flight a caller
joins is foreground work; max_wait_ms=0 means "only if a slot is free now"."""
import threading
import time

import camtest
from camtest import Daemon, Sim


def test_a_refresh_joined_while_on_the_wire_is_retried_for_its_caller_after_a_throttle():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "1", "--stale-while-revalidate", "60", "--stale-if-error", "0",
                         "--refresh-ahead", "0", "--max-wait-ms", "10000"])
    phone = "8613700000001"
    assert d.key(phone)[0] == 200
    time.sleep(2.1)  # expired, within stale-while-revalidate
    sim.configure(latency_ms=700)  # the refresh stays on the wire long enough to be joined
    sim.fault(phone, "error", count=1, code="System.LimitControl")
    calls = sim.stats()["calls"]
    status, hdrs, _ = d.key(phone)
    assert status == 200 and "stale" in hdrs["cache-status"], hdrs  # the refresh is now sent
    camtest.wait_until(lambda: d.metric("camskeyd_upstream_in_flight") == 1, 5,
                       what="the refresh on the wire")
    # A caller that will not take the stale key joins the refresh on the wire.
    status, hdrs, doc = d.key(phone, headers={"Cache-Control": "no-cache, max-stale=0"})
    # Throttled once, then retried for this caller (a background refresh alone is not).
    assert status == 200, (status, hdrs, doc)
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert sim.stats()["calls"] == calls + 2, sim.stats()
    assert d.metric("camskeyd_upstream_retries_total") == 1


def test_max_wait_ms_0_is_served_when_a_slot_is_free_and_refused_at_once_otherwise():
    sim = Sim()
    d = Daemon(sim.url, ["--rate", "1"])
    status, hdrs, doc = d.key("8613700000101", max_wait_ms=0)
    assert status == 200 and hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (status, hdrs)
    assert sim.stats()["calls"] == 1
    # The next slot is a second away: a caller who waits not at all is refused now.
    status, hdrs, doc = d.key("8613700000102", max_wait_ms=0)
    assert status == 503 and doc["Code"] == "Proxy.QuotaWait", (status, doc)
    assert int(hdrs["retry-after"]) >= 1, hdrs
    assert sim.stats()["calls"] == 1, "a refused caller reached the upstream"
    # A hit never waits for quota, whatever max_wait_ms says.
    assert d.key("8613700000101", max_wait_ms=0)[0] == 200
    assert sim.stats()["calls"] == 1


def test_every_caller_of_a_coalesced_miss_is_counted_once():
    sim = Sim(latency_ms=300)
    d = Daemon(sim.url)
    results = []

    def ask():
        results.append(d.key("8613700000201")[0])
    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 10, results
    assert sim.stats()["calls"] == 1
    assert d.settled_metric("camskeyd_requests_total", 10, result="miss") == 10
    assert d.metric("camskeyd_requests_total", result="hit") in (0, None)


camtest.main(globals())
