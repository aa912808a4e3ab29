"""Stopping: callers waiting for quota and for a hung upstream call are answered."""
import http.client
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



def test_requests_after_the_engine_stopped_get_one_answer_each_and_stop_never_aborts():
    # After SIGTERM the engine ends at once (nothing on the wire), then the
    # front end lets open connections drain for up to 2 s. Misses asked on
    # kept-alive connections in that window reach an engine that has
    # stopped: each must be answered 503 Proxy.ShuttingDown at once (a
    # request left suspended makes MHD_stop_daemon abort the process).
    sim = Sim()
    d = Daemon(sim.url, ["--shutdown-grace", "1"])
    conns = [http.client.HTTPConnection("127.0.0.1", d.port, timeout=10) for _ in range(4)]
    for c in conns:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        assert r.status == 200
    calls_before = sim.stats()["calls"]
    d.proc.send_signal(15)
    camtest.wait_until(lambda: "event=stopping" in d.logs() or d.proc.poll() is not None, 10,
                       what="the stop to begin")
    time.sleep(0.3)  # the engine has nothing on the wire: it ends at once
    answered = refused = 0
    deadline = time.monotonic() + 1.2
    phone = 8613600000000
    while time.monotonic() < deadline and conns:
        for c in list(conns):
            phone += 1
            try:
                c.request("GET", key_path(str(phone)))
                r = c.getresponse()
                body = r.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                conns.remove(c)  # the front end closed it: no request was left unanswered on it
                continue
            answered += 1
            assert r.status == 503 and b'"Proxy.ShuttingDown"' in body, (r.status, body)
            assert r.getheader("Retry-After") == "1", r.getheaders()
            refused += 1
    rc = d.proc.wait(timeout=20)
    assert rc == 0, (rc, d.logs()[-2000:])
    assert refused >= 4, (answered, refused)
    assert sim.stats()["calls"] == calls_before, "a request refused at the stop reached the upstream"


camtest.main(globals())
