"""Stopping: callers waiting for quota and for a hung upstream call are answered."""
import threading
import time

import camtest
from camtest import Daemon, Sim, key_path, request


def test_sigterm_answers_waiting_callers_and_exits_within_the_grace():
    sim = Sim()
    sim.fault("*", "hang")
    d = Daemon(sim.url, ["--shutdown-grace", "1", "--rate", "0.5", "--max-wait-ms", "60000",
                         "--upstream-timeout-ms", "60000"])
    results = {}

    def ask(name, phone):
        results[name] = request(d.port, key_path(phone), timeout=30)

    hung = threading.Thread(target=ask, args=("hung", "8613500000001"))
    hung.start()
    camtest.wait_until(lambda: sim.stats()["calls"] == 1, 10, what="the first call to hang")
    queued = threading.Thread(target=ask, args=("queued", "8613500000002"))
    queued.start()
    camtest.wait_until(lambda: d.metric("camskeyd_queue_depth") == 1, 10, what="a queued call")
    start = time.monotonic()
    d.proc.send_signal(15)
    queued.join(10)
    hung.join(10)
    rc = d.proc.wait(timeout=20)
    elapsed = time.monotonic() - start
    assert rc == 0, rc
    for name in ("queued", "hung"):
        status, hdrs, body = results[name]
        assert status == 503 and b'"Proxy.ShuttingDown"' in body, (name, status, body)
        assert hdrs.get("retry-after") == "1", hdrs
    assert elapsed < 10, elapsed
    assert "event=stopped" in d.logs()


camtest.main(globals())
