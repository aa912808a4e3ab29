#!/usr/bin/env python3
"""Soak: one daemon and the simulator under ~2 minutes of mixed load with
upstream faults, then check that nothing grew and every caller got a contract
answer.

    BUILD=build python3 tests/soak.py

Environment: SOAK_SECONDS (load duration, default 120), SOAK_REQUESTS (client
connections spread over it, default 1200), SOAK_WORKERS (concurrent clients,
default 64), SOAK_SEED (default 1).

The load: hits on a warm set (some with If-None-Match), misses on cold keys,
phones the simulator answers with http500 / reset / hang / malformed /
System.LimitControl / Product.Unsubscript, bad requests (400/404/405), and
clients that hang up while waiting for an upstream answer. Every request is a
new connection. Measured after warm-up and again after the load and a quiet
period: VmRSS, open fds and threads of the daemon; they must come back within
RSS +20 MiB, fds +10, threads equal. Exit status 0 when every check passed.
"""
import collections
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
import camtest  # noqa: E402
from camtest import Daemon, Sim, key_path  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "1200"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "64"))
SEED = int(os.environ.get("SOAK_SEED", "1"))

RSS_MARGIN_KIB = 20 * 1024
FD_MARGIN = 10
CONTRACT_STATUSES = {200, 304, 400, 403, 404, 405, 502, 503, 504}

WARM = ["8613100%06d" % i for i in range(40)]
FAULTS = {
    "8613200000001": ("http500", {}),
    "8613200000002": ("reset", {}),
    "8613200000003": ("hang", {}),
    "8613200000004": ("malformed", {}),
    "8613200000005": ("error", {"code": "System.LimitControl"}),
    "8613200000006": ("error", {"code": "Product.Unsubscript"}),
}
# kind -> weight
MIX = [
    ("hit", 40), ("hit_etag", 6), ("miss", 14), ("fault", 14), ("bad", 14),
    ("disconnect", 6), ("health", 6),
]


def proc_figures(pid):
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"].strip()),
        "fds": len(os.listdir("/proc/%d/fd" % pid)),
    }


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = collections.Counter()
        self.by_status = collections.Counter()
        self.violations = []

    def record(self, kind, status):
        with self.lock:
            self.by_kind[kind] += 1
            self.by_status[status] += 1

    def violation(self, text):
        with self.lock:
            if len(self.violations) < 50:
                self.violations.append(text)


def check_answer(kind, target, status, hdrs, body, stats):
    """A contract answer: a listed status and, but for 304 and /healthz, the
    JSON envelope with RequestId and Code."""
    if status not in CONTRACT_STATUSES:
        stats.violation("%s %s: status %d" % (kind, target, status))
        return
    if status == 304 or kind == "health":
        return
    try:
        doc = json.loads(body)
    except ValueError:
        stats.violation("%s %s: %d with a body that is not JSON: %r" % (kind, target, status,
                                                                       body[:100]))
        return
    if not doc.get("RequestId") or not doc.get("Code"):
        stats.violation("%s %s: envelope without RequestId/Code: %r" % (kind, target, doc))
    if status == 200 and (doc.get("Code") != "OK" or
                          "EncryptionPublicKey" not in doc.get("Data", {})):
        stats.violation("%s %s: 200 without a key: %r" % (kind, target, doc))
    if status == 503 and "retry-after" not in hdrs:
        stats.violation("%s %s: 503 without Retry-After" % (kind, target))


def one_request(d, rng, kind, etags, stats, cold_counter):
    headers = {}
    method = "GET"
    if kind in ("hit", "hit_etag"):
        phone = rng.choice(WARM)
        target = key_path(phone)
        if kind == "hit_etag" and phone in etags:
            headers["If-None-Match"] = etags[phone]
    elif kind == "miss":
        with stats.lock:
            cold_counter[0] += 1
            n = cold_counter[0]
        target = key_path("8613300%06d" % n, max_wait_ms=rng.choice([500, 2000, 5000]))
    elif kind == "fault":
        target = key_path(rng.choice(sorted(FAULTS)))
    elif kind == "bad":
        target, method = rng.choice([
            ("/v1/phone-numbers/12ab/encryption-public-key", "GET"),
            (key_path(rng.choice(WARM), "bad%20id"), "GET"),
            (key_path(rng.choice(WARM), max_wait_ms="soon"), "GET"),
            ("/v1/phone-numbers/%s/encryption-public-key" % ("9" * 30), "GET"),
            ("/nope", "GET"),
            (key_path(rng.choice(WARM)), "POST"),
        ])
    elif kind == "health":
        target = rng.choice(["/healthz", "/readyz", "/metrics"])
        kind = "health"
    elif kind == "disconnect":
        # ask for something that waits (a hang or a cold key), then hang up
        phone = rng.choice(["8613200000003", "8613400%06d" % rng.randrange(10 ** 6)])
        target = key_path(phone, max_wait_ms=10000)
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % target).encode())
                time.sleep(rng.uniform(0.05, 0.4))
        except OSError as e:
            stats.violation("disconnect client could not connect: %s" % e)
        stats.record("disconnect", "hung-up")
        return
    try:
        status, hdrs, body = d.get(target, headers=headers, method=method, timeout=30)
    except OSError as e:  # includes http.client errors on a dropped connection
        stats.record(kind, "no-answer")
        stats.violation("%s %s: no answer: %s" % (kind, target, e))
        return
    except Exception as e:  # noqa: BLE001 - http.client.RemoteDisconnected etc.
        stats.record(kind, "no-answer")
        stats.violation("%s %s: no answer: %s: %s" % (kind, target, type(e).__name__, e))
        return
    if target.startswith("/metrics") and status == 200:
        try:
            camtest.parse_metrics(body.decode())
        except Exception as e:  # noqa: BLE001
            stats.violation("/metrics does not parse: %s" % e)
    stats.record(kind, status)
    check_answer(kind, target, status, hdrs, body, stats)


def run_load(d, etags, stats):
    kinds = [k for k, w in MIX for _ in range(w)]
    start = time.monotonic()
    interval = SECONDS / max(1, REQUESTS)
    ticket = [0]
    cold_counter = [0]
    lock = threading.Lock()

    def worker(i):
        rng = random.Random(SEED * 1000 + i)
        while True:
            with lock:
                k = ticket[0]
                ticket[0] += 1
            if k >= REQUESTS:
                return
            due = start + k * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - start > SECONDS + 60:
                stats.violation("load fell more than 60 s behind schedule")
                return
            one_request(d, rng, rng.choice(kinds), etags, stats, cold_counter)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, start + SECONDS + 120 - time.monotonic()))
    if any(t.is_alive() for t in threads):
        stats.violation("workers still running %.0f s after the load should have ended"
                        % (time.monotonic() - start - SECONDS))
    return time.monotonic() - start


def wait_quiet(d, timeout=40.0):
    """Until no caller waits and no upstream call is in progress."""
    def quiet():
        m = d.metrics()
        return (m.get(("camskeyd_waiting_callers", ()), 0) == 0 and
                m.get(("camskeyd_upstream_in_flight", ()), 0) == 0 and
                m.get(("camskeyd_queue_depth", ()), 0) == 0)
    try:
        camtest.wait_until(quiet, timeout, interval=0.5, what="the daemon to go quiet")
        return True
    except AssertionError:
        return False


def main():
    failures = []
    sim = Sim(quota=5)
    d = Daemon(sim.url, ["--upstream-timeout-ms", "800", "--upstream-connect-timeout-ms", "300",
                         "--max-wait-ms", "5000", "--upstream-retries", "1",
                         "--connection-timeout", "10"])
    pid = d.proc.pid
    print("soak: daemon pid %d, simulator on %s, %d requests over %.0f s, %d workers"
          % (pid, sim.url, REQUESTS, SECONDS, WORKERS), flush=True)

    # warm-up: the warm set cached, every path exercised once
    etags = {}
    for phone in WARM:
        status, hdrs, _ = d.key(phone)
        if status == 200:
            etags[phone] = hdrs["etag"]
    if len(etags) != len(WARM):
        failures.append("warm-up cached only %d of %d keys" % (len(etags), len(WARM)))
    for phone, (mode, extra) in FAULTS.items():
        sim.fault(phone, mode, **extra)
    warm_stats = Stats()
    rng = random.Random(SEED)
    for kind, _ in MIX:
        for _ in range(3):
            one_request(d, rng, kind, etags, warm_stats, [900000])
    wait_quiet(d)
    time.sleep(3)
    before = proc_figures(pid)
    print("soak: after warm-up: rss %d KiB, fds %d, threads %d"
          % (before["rss_kib"], before["fds"], before["threads"]), flush=True)

    stats = Stats()
    took = run_load(d, etags, stats)
    if not wait_quiet(d):
        failures.append("callers or upstream calls still pending 40 s after the load")
    time.sleep(5)
    if d.proc.poll() is not None:
        failures.append("the daemon exited with %s" % d.proc.returncode)
        after = before
    else:
        after = proc_figures(pid)
    print("soak: after load and quiet: rss %d KiB, fds %d, threads %d"
          % (after["rss_kib"], after["fds"], after["threads"]), flush=True)

    total = sum(stats.by_kind.values())
    print("soak: %d requests in %.1f s" % (total, took))
    print("soak: by kind: %s" % dict(sorted(stats.by_kind.items())))
    print("soak: by status: %s" % dict(sorted(stats.by_status.items(), key=lambda kv: str(kv[0]))))
    sim_stats = sim.stats()
    print("soak: upstream calls %d, served %d, throttled %d, faults %d, max in a sliding second %d"
          % (sim_stats["calls"], sim_stats["served"], sim_stats["throttled"], sim_stats["faults"],
             sim_stats["max_in_sliding_second"]))
    m = d.metrics()
    print("soak: daemon: client_gone %d, quota_rejected %d, queue_full %d"
          % (m.get(("camskeyd_client_gone_total", ()), 0),
             m.get(("camskeyd_quota_rejected_total", ()), 0),
             m.get(("camskeyd_queue_full_total", ()), 0)))

    if total < REQUESTS * 0.95:
        failures.append("only %d of %d requests were made" % (total, REQUESTS))
    for v in stats.violations + warm_stats.violations:
        failures.append("contract: " + v)
    if after["rss_kib"] > before["rss_kib"] + RSS_MARGIN_KIB:
        failures.append("RSS grew %d KiB (margin %d)" % (after["rss_kib"] - before["rss_kib"],
                                                         RSS_MARGIN_KIB))
    if after["fds"] > before["fds"] + FD_MARGIN:
        failures.append("open fds grew from %d to %d" % (before["fds"], after["fds"]))
    if after["threads"] != before["threads"]:
        failures.append("threads changed from %d to %d" % (before["threads"], after["threads"]))
    if sim_stats["max_in_sliding_second"] > 5:
        failures.append("the upstream saw %d calls in one sliding second (quota 5)"
                        % sim_stats["max_in_sliding_second"])
    try:
        if d.get("/healthz", timeout=10)[0] != 200:
            failures.append("/healthz is not 200 after the load")
        rc = d.stop()
        if rc != 0:
            failures.append("daemon exit code %s on SIGTERM" % rc)
    except Exception as e:  # noqa: BLE001
        failures.append("daemon after the load: %s" % e)
    logs = d.logs()
    if "ERROR: AddressSanitizer" in logs or "runtime error:" in logs:
        failures.append("sanitizer report in the daemon log %s" % d.log_path)
    camtest.cleanup()

    for f in failures:
        print("soak: FAIL: %s" % f)
    print("soak: %s: %d requests, rss %+d KiB, fds %d->%d, threads %d->%d, %d violations"
          % ("PASS" if not failures else "FAIL", total, after["rss_kib"] - before["rss_kib"],
             before["fds"], after["fds"], before["threads"], after["threads"], len(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        camtest.cleanup()
