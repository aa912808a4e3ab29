"""make bench-quota: how well camskeyd uses the upstream quota under a backlog.

Runs the real daemon against the simulator (strict 5/s sliding window) with a
backlog of cold keys from concurrent callers and prints upstream calls per
second, utilization (calls/s / rate), the most calls the simulator saw in any
sliding second, throttles, and the daemon's thread count and RSS with 5,000
callers waiting. Scenarios:

  jitter      the simulator's own arrival jitter, 0 and 0-30 ms;
  processing  a delaying relay (tests/bench/relay.py) in front of the
              simulator: answers take a uniform 20-400 ms (processing time,
              after the arrival was counted); then the same plus an arrival
              delay of 5-35 ms the daemon cannot see, with --rate-margin-ms 40;
  waiting     5,000 callers waiting on a hanging upstream;
  multihost   4 daemons (own port, SQLite file, --host-id) on one private
              redis-server and one simulator, a backlog of cold keys on every
              host at once: combined calls/s and utilization, the most
              arrivals in any sliding second, grants discarded and refused
              (summed over the hosts' metrics), Redis commands per upstream
              call, and each host's share of the calls. Skipped without
              redis-server. The jitter runs are its single-host baseline.

BENCH_ONLY=processing (a comma-separated list) runs only those. Not a
pass/fail test.
"""
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import camtest  # noqa: E402
from camtest import Daemon, Relay, Sim, key_path, parallel, request  # noqa: E402

RATE = 5
KEYS = int(os.environ.get("BENCH_KEYS", "300"))
CALLERS = 64
WAITERS = int(os.environ.get("BENCH_WAITERS", "5000"))
ONLY = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
PROCESSING_MS = (20, 400)
HOSTS = int(os.environ.get("BENCH_HOSTS", "4"))
CALLERS_PER_HOST = 16
HIDDEN_ARRIVAL_MS = (5, 35)


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return int(out["Threads"]), int(out["VmRSS"].split()[0])


def backlog(jitter_ms, up_ms=None, down_ms=None, margin_ms=None, series=0):
    """The backlog; with up_ms/down_ms through a relay holding requests/answers."""
    sim = Sim(quota=RATE, jitter_ms=jitter_ms)
    upstream = sim.url
    if up_ms or down_ms:
        upstream = Relay(sim.port, up_ms=up_ms or (0, 0), down_ms=down_ms or (0, 0)).url
    args = ["--rate", str(RATE), "--max-wait-ms", "600000", "--queue-max", "100000",
            "--no-access-log"]
    if margin_ms is not None:
        args += ["--rate-margin-ms", str(margin_ms)]
    d = Daemon(upstream, args)
    phones = ["8615%09d" % (100000000 + series * 100000 + jitter_ms * 1000 + i)
              for i in range(KEYS)]
    next_key = [0]
    import threading
    lock = threading.Lock()

    def caller(_):
        done = 0
        while True:
            with lock:
                if next_key[0] >= KEYS:
                    return done
                i = next_key[0]
                next_key[0] += 1
            status, _, _ = request(d.port, key_path(phones[i], max_wait_ms=600000), timeout=600)
            done += status == 200
    start = time.monotonic()
    ok = sum(parallel(CALLERS, caller, timeout=900))
    elapsed = time.monotonic() - start
    s = sim.stats()
    arrivals = s.get("arrivals_ms") or []
    # steady-state rate from the simulator's own arrival clock
    if s["first_arrival_ms"] is not None and s["last_arrival_ms"] > s["first_arrival_ms"]:
        span_s = (s["last_arrival_ms"] - s["first_arrival_ms"]) / 1000.0
        rate = (s["calls"] - 1) / span_s
    else:
        rate = s["calls"] / elapsed
    throttles = d.metric("camskeyd_upstream_throttles_total")
    margin_s = d.metric("camskeyd_limiter_margin_seconds")
    camtest.cleanup()
    return {"jitter_ms": jitter_ms, "answered": ok, "calls": s["calls"], "elapsed_s": elapsed,
            "rate": rate, "utilization": rate / RATE, "max_sliding": s["max_in_sliding_second"],
            "sim_throttled": s["throttled"], "throttles": throttles, "arrivals": len(arrivals),
            "margin_s": margin_s}


def waiting_connections():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The upstream hangs, so every caller stays waiting: 100 callers per key
    # join 50 flights (a few sending, the rest queued within their limit).
    sim = Sim(quota=RATE)
    sim.fault("*", "hang")
    d = Daemon(sim.url, ["--rate", str(RATE), "--max-wait-ms", "600000", "--queue-max", "100000",
                         "--upstream-timeout-ms", "120000",
                         "--max-connections", str(WAITERS + 100), "--no-access-log"])
    time.sleep(0.5)
    threads0, rss0 = proc_status(d.proc.pid)
    socks = []
    for i in range(WAITERS):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                   % key_path("8616%09d" % (200000000 + i % 50), max_wait_ms=600000)).encode())
        socks.append(s)
    camtest.wait_until(lambda: d.metric("camskeyd_waiting_callers") >= WAITERS - 2, 60,
                       what="callers waiting")
    threads1, rss1 = proc_status(d.proc.pid)
    waiting = d.metric("camskeyd_waiting_callers")
    for s in socks:
        s.close()
    camtest.wait_until(lambda: d.metric("camskeyd_waiting_callers") == 0, 30,
                       what="departed callers noticed")
    gone = d.metric("camskeyd_client_gone_total")
    camtest.cleanup()
    return {"threads_idle": threads0, "threads_waiting": threads1, "rss_idle_kib": rss0,
            "rss_waiting_kib": rss1, "waiting": waiting, "gone": gone,
            "kib_per_waiter": (rss1 - rss0) / max(1, waiting)}


def metric_sum(d, name):
    return sum(v for (n, _), v in d.metrics().items() if n == name)


def multihost():
    """KEYS cold keys split over HOSTS daemons sharing one Redis, all at once."""
    redis = camtest.RedisServer()  # raises camtest.Skipped without redis-server
    sim = Sim(quota=RATE)
    args = ["--rate", str(RATE), "--max-wait-ms", "600000", "--queue-max", "100000",
            "--refresh-ahead", "0", "--no-access-log"]
    ds = camtest.redis_daemons(HOSTS, sim.url, redis, args)
    camtest.wait_until(lambda: all((d.readyz()[1] or {}).get("quota") == "shared" for d in ds),
                       15, what="every host on the shared quota")
    per_host = KEYS // HOSTS
    lists = [["8617%d%07d" % (h, i) for i in range(per_host)] for h in range(HOSTS)]
    import threading
    lock = threading.Lock()

    def caller(i):
        h = i % HOSTS
        done = 0
        while True:
            with lock:
                if not lists[h]:
                    return done
                phone = lists[h].pop()
            status, _, _ = request(ds[h].port, key_path(phone, max_wait_ms=600000), timeout=600)
            done += status == 200
    start = time.monotonic()
    ok = sum(parallel(HOSTS * CALLERS_PER_HOST, caller, timeout=900))
    elapsed = time.monotonic() - start
    s = sim.stats()
    span_s = (s["last_arrival_ms"] - s["first_arrival_ms"]) / 1000.0 if s["calls"] > 1 else 0
    rate = (s["calls"] - 1) / span_s if span_s > 0 else s["calls"] / elapsed
    calls = [metric_sum(d, "camskeyd_upstream_calls_total") for d in ds]
    r = {"hosts": HOSTS, "keys": per_host * HOSTS, "answered": ok, "elapsed_s": elapsed,
         "calls": s["calls"], "rate": rate, "utilization": rate / RATE,
         "max_sliding": s["max_in_sliding_second"], "sim_throttled": s["throttled"],
         "grants": sum(metric_sum(d, "camskeyd_quota_grants_total") for d in ds),
         "discarded": sum(metric_sum(d, "camskeyd_quota_grants_discarded_total") for d in ds),
         "refused": sum(metric_sum(d, "camskeyd_quota_grants_refused_total") for d in ds),
         "commands": sum(metric_sum(d, "camskeyd_redis_commands_total") for d in ds),
         "per_host": [int(c) for c in calls]}
    r["commands_per_call"] = r["commands"] / max(1, sum(calls))
    camtest.cleanup()
    return r


def wanted(name):
    return not ONLY or name in ONLY


def print_processing(label, r):
    print("backlog %d keys, %d callers, %s: %d/%d answered in %.1fs; upstream %.2f calls/s "
          "(utilization %.3f of --rate %d); max arrivals in any sliding second %d; "
          "System.LimitControl %d (daemon saw %d); margin at the end %.0f ms"
          % (KEYS, CALLERS, label, r["answered"], KEYS, r["elapsed_s"], r["rate"],
             r["utilization"], RATE, r["max_sliding"], r["sim_throttled"], int(r["throttles"]),
             1000 * (r["margin_s"] or 0)), flush=True)


def main():
    results = []
    summary = []
    if wanted("jitter"):
        for jitter in (0, 30):
            r = backlog(jitter)
            results.append(r)
            print("backlog %d keys, %d callers, jitter 0-%d ms: %d/%d answered in %.1fs; upstream "
                  "%.2f calls/s (utilization %.1f%% of %d/s); max in any sliding second %d; "
                  "System.LimitControl %d"
                  % (KEYS, CALLERS, jitter, r["answered"], KEYS, r["elapsed_s"], r["rate"],
                     100 * r["utilization"], RATE, r["max_sliding"], r["sim_throttled"]),
                  flush=True)
        summary.append("utilization %.1f%% (no jitter), %.1f%% (0-30 ms jitter)"
                       % (100 * results[0]["utilization"], 100 * results[1]["utilization"]))
    if wanted("processing"):
        r = backlog(0, down_ms=PROCESSING_MS, series=1)
        results.append(r)
        print_processing("processing %d-%d ms" % PROCESSING_MS, r)
        summary.append("utilization %.3f (processing %d-%d ms)"
                       % ((r["utilization"],) + PROCESSING_MS))
        r = backlog(0, up_ms=HIDDEN_ARRIVAL_MS, down_ms=PROCESSING_MS, margin_ms=40, series=2)
        results.append(r)
        print_processing("processing %d-%d ms + unseen arrival delay %d-%d ms, "
                         "--rate-margin-ms 40" % (PROCESSING_MS + HIDDEN_ARRIVAL_MS), r)
        summary.append("utilization %.3f, throttles %d (+ unseen arrival delay %d-%d ms)"
                       % ((r["utilization"], r["sim_throttled"]) + HIDDEN_ARRIVAL_MS))
    if results:
        summary.append("max sliding second %d/%d; throttles %d"
                       % (max(r["max_sliding"] for r in results), RATE,
                          sum(r["sim_throttled"] for r in results)))
    if wanted("waiting"):
        w = waiting_connections()
        print("%d waiting connections: threads %d idle -> %d waiting; RSS %.1f MiB -> %.1f MiB "
              "(%.1f KiB per waiting caller); all %d departures noticed"
              % (WAITERS, w["threads_idle"], w["threads_waiting"], w["rss_idle_kib"] / 1024,
                 w["rss_waiting_kib"] / 1024, w["kib_per_waiter"], int(w["gone"])), flush=True)
        summary.append("threads %d at %d waiting; %.1f KiB per waiter"
                       % (w["threads_waiting"], WAITERS, w["kib_per_waiter"]))
    if wanted("multihost"):
        try:
            m = multihost()
        except camtest.Skipped as e:
            print("multihost: skipped (%s)" % e, flush=True)
        else:
            print("multihost %d hosts on one Redis, %d cold keys (%d callers per host): %d/%d "
                  "answered in %.1fs; combined %.2f calls/s (utilization %.3f of --rate %d); "
                  "max arrivals in any sliding second %d; System.LimitControl %d; grants %d, "
                  "discarded %d, refused %d; Redis commands per upstream call %.2f; calls per "
                  "host %s"
                  % (m["hosts"], m["keys"], CALLERS_PER_HOST, m["answered"], m["keys"],
                     m["elapsed_s"], m["rate"], m["utilization"], RATE, m["max_sliding"],
                     m["sim_throttled"], m["grants"], m["discarded"], m["refused"],
                     m["commands_per_call"], m["per_host"]), flush=True)
            summary.append("%d hosts: utilization %.3f, max sliding second %d/%d, discarded %d, "
                           "%.2f Redis commands per call"
                           % (m["hosts"], m["utilization"], m["max_sliding"], RATE,
                              m["discarded"], m["commands_per_call"]))
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    try:
        main()
    finally:
        camtest.cleanup()
