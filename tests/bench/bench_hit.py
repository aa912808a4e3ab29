"""make bench: the cache-hit path against its floor and against nginx.

Starts, in the same run, camskeyd with a warm cache in each logging setting
(the default, every request logged, --no-access-log), the bare libmicrohttpd
server of tests/bench/bare_mhd.c (camskeyd's flags, a constant answer with the
same header names) and nginx (Debian's package, on loopback, serving the
identical JSON body as a static file); drives each in turn with wrk at the
same connections, threads and duration, with the same request line (the
key's path: the bare server parses it too, nginx keeps its file there),
ROUNDS times; prints the median run's requests per second, p50/p99 latency,
CPU per request and the ratios (the median of each round's: paired); then
the tail at 64 connections three ways (saturated, one client thread,
paced: bench_tail). Then fills a cache with 1,000,000 entries and prints
the hit figures again (one hot key, and keys drawn at random from all of
them). Not a pass/fail test.
"""
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import camtest  # noqa: E402
from camtest import PHONE, Daemon, Sim, key_path, tmpdir  # noqa: E402

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
ENTRIES = int(os.environ.get("BENCH_ENTRIES", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EPOLL = os.environ.get("BENCH_EPOLL", "") not in ("", "0")
# BENCH_ONLY_ENTRIES=1: skip the logging/bare/nginx comparison, run only the
# BENCH_ENTRIES part (random vs hot key, start-up time, memory).
ONLY_ENTRIES = os.environ.get("BENCH_ONLY_ENTRIES", "") not in ("", "0")
# BENCH_TAIL=0: skip the tail runs (one client thread, paced).
TAIL = os.environ.get("BENCH_TAIL", "1") not in ("", "0")


def median(runs):
    """The run with the median request rate (its latencies go with it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def client_cpu(pid):
    """(run ns, run-queue wait ns, time slices) summed over the process's
    threads, from schedstat."""
    run = wait = slices = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                fields = f.read().split()
            run, wait, slices = run + int(fields[0]), wait + int(fields[1]), slices + int(fields[2])
    except (OSError, IndexError, ValueError):
        return None
    return run, wait, slices


def wrk(url, script=None, threads=None):
    """One wrk run. Besides its figures, how wrk's own threads got the CPU
    (their schedstat, sampled until it exits): the share of their runnable
    time spent waiting for one, and the mean time slice they ran in. On a host
    where client and server share the cores a latency percentile includes
    that wait, and a client that runs in whole scheduler ticks (4 ms at
    HZ=250) rather than short slices between sleeps holds its answers that
    long."""
    argv = ["wrk", "-t%d" % (threads or THREADS), "-c%d" % CONNECTIONS, "-d%s" % DURATION,
            "--latency"]
    if script:
        argv += ["-s", script]
    proc = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, text=True)
    first, cpu, deadline = None, None, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        cpu = client_cpu(proc.pid) or cpu
        first = first or cpu
        time.sleep(0.1)
    if first and cpu:
        cpu = tuple(b - a for a, b in zip(first, cpu))
    out = proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else (v * 1000 if unit == "s" else v)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "non2xx": int(errors.group(1)) if errors else 0,
            # The share of its runnable time the client spent waiting for a
            # CPU, and the mean slice it ran in (ms).
            "client_wait": cpu[1] / max(cpu[0] + cpu[1], 1) if cpu else 0.0,
            "client_slice_ms": cpu[0] / max(cpu[2], 1) / 1e6 if cpu else 0.0}


def start_nginx(body):
    d = tmpdir()
    os.chmod(d, 0o755)
    # The file sits at the key's own path: every server gets the same request.
    path = os.path.join(d, "html") + key_path(PHONE)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(body)
    port = camtest.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes %d;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s/body; proxy_temp_path %s/proxy; fastcgi_temp_path %s/fcgi;
  uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%d;
    location / { root %s/html; default_type application/json; etag on; }
  }
}
""" % ((THREADS,) + (d,) * 7 + (port, d)))
    proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    camtest._cleanups.append(lambda: (proc.terminate(), proc.wait(timeout=10)))
    camtest.wait_until(lambda: _up(port), 10, what="nginx")
    return port


def _up(port):
    try:
        return camtest.request(port, key_path(PHONE), timeout=2)[0] == 200
    except OSError:
        return False


def fill_cache(path, n):
    """n entries with distinct phones, written the way the daemon writes them."""
    sim = Sim()
    d = Daemon(sim.url, ["--no-access-log"], cache=path)
    _, _, body = d.get(key_path(PHONE))
    d.stop()
    sim.stop()
    db = sqlite3.connect(path)
    # Schema version 3: the row in keys (pem is computed from the body), its
    # last use in recency.
    row = db.execute("SELECT kind, http_status, status, code, etag, request_id, body, "
                     "fetched_at, expires_at, last_used_at FROM keys "
                     "JOIN recency ON key_id = id").fetchone()
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    phones = ["87%011d" % i for i in range(n - 1)]
    body_tmpl = row[6].decode() if isinstance(row[6], bytes) else row[6]
    next_id = db.execute("SELECT max(id) FROM keys").fetchone()[0] + 1

    def insert(batch):
        db.executemany("INSERT INTO keys (id, cust_space_id, phone, kind, http_status, status, "
                       "code, etag, request_id, body, fetched_at, expires_at) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [b[:-1] for b in batch])
        db.executemany("INSERT INTO recency (key_id, last_used_at) VALUES (?,?)",
                       [(b[0], b[-1]) for b in batch])
        db.commit()
    batch = []
    for i, p in enumerate(phones):
        b = body_tmpl.replace(PHONE, p).encode()
        batch.append((next_id + i, "", p) + row[:6] + (b,) + row[7:])
        if len(batch) == 50000:
            insert(batch)
            batch = []
    if batch:
        insert(batch)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.sync()  # the fill's dirty pages must not be written back during the measurement
    return phones


def show(name, r, base=None):
    print("  %-40s %9.0f req/s   p50 %7.3f ms   p99 %7.3f ms%s%s"
          % (name, r["rps"], r["p50_ms"], r["p99_ms"],
             "   x%.2f" % (r["rps"] / base["rps"]) if base else "",
             "   (%d non-2xx!)" % r["non2xx"] if r["non2xx"] else ""), flush=True)


def cpu_s(pid):
    """The process's user + system CPU time so far (robust to other load, unlike req/s)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_cpu(pid, url, script=None, threads=None):
    """wrk, plus the server's CPU microseconds per request during it."""
    c0 = cpu_s(pid)
    r = wrk(url, script, threads)
    r["cpu_us"] = (cpu_s(pid) - c0) / max(r["requests"], 1) * 1e6
    return r


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def start_bare(body, epoll=False):
    """tests/bench/bare_mhd.c: libmicrohttpd with camskeyd's flags, a constant answer."""
    exe = os.path.join(camtest.BUILD, "tests", "bench", "bare_mhd")
    if not os.path.exists(exe):
        sys.exit("bench: %s missing (make bench builds it)" % exe)
    d = tmpdir()
    path = os.path.join(d, "body.json")
    with open(path, "wb") as f:
        f.write(body)
    port = camtest.free_port()
    proc = subprocess.Popen([exe, str(port), path, str(THREADS)] + (["epoll"] if epoll else []),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    camtest._cleanups.append(lambda: (proc.terminate(), proc.wait(timeout=10)))
    assert proc.stdout.readline().strip() == "ready", "bare_mhd did not start"
    return port, proc.pid


def supports(flag_text):
    out = subprocess.run([camtest.DAEMON, "--help"], capture_output=True, text=True).stdout
    return flag_text in out


def alternate(targets, script=None, threads=None, warm=True, pids=None):
    """Warm every target up, then ROUNDS rounds in turn; the median run of
    each, which also holds every run of it ("all", in round order) for
    paired(). With pids (name: server pid), each run also measures the
    server's CPU microseconds per request ("cpu_us")."""
    pids = pids or {}
    for _, url in targets if warm else []:
        wrk(url)
    runs = {name: [] for name, _ in targets}
    for _ in range(ROUNDS):
        for name, url in targets:
            runs[name].append(wrk_cpu(pids[name], url, script, threads) if name in pids
                              else wrk(url, script, threads))
    print("  (median of %d alternating runs each; req/s of every run:)" % ROUNDS)
    for name, _ in targets:
        print("    %-38s %s" % (name, " ".join("%.0f" % r["rps"] for r in runs[name])))
    res = {}
    for name, r in runs.items():
        res[name] = dict(median(r), all=r)
    return res


def paired(a, b, key="rps"):
    """The median over rounds of a's figure divided by b's in the same round.
    Runs next to each other share the host's load of the moment, which
    moves rates by a fifth here from one minute to the next; a ratio of
    neighbours is steadier than a ratio of medians."""
    ratios = sorted(x[key] / y[key] for x, y in zip(a["all"], b["all"]) if y[key])
    return ratios[len(ratios) // 2] if ratios else float("nan")


def median_of(res, key):
    """The median of one figure over every run of res (alternate's "all")."""
    values = sorted(r[key] for r in res["all"])
    return values[len(values) // 2]


def main():
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("bench: needs wrk and nginx (make deps-bench)")
    print("wrk -t%d -c%d -d%s on 127.0.0.1, %d cores, %d rounds"
          % (THREADS, CONNECTIONS, DURATION, os.cpu_count(), ROUNDS), flush=True)
    common = ["--threads", str(THREADS)]
    if ONLY_ENTRIES:
        bench_entries(common, None)
        return
    sim = Sim()
    # Every daemon logs to a file (camtest's), as journald takes stderr.
    variants = [("camskeyd, default logging", [])]
    if supports("--access-log misses|all|off"):
        variants.append(("camskeyd, --access-log all", ["--access-log", "all"]))
    variants.append(("camskeyd, --no-access-log", ["--no-access-log"]))
    daemons, body, pids = [], None, {}
    for name, args in variants:
        d = Daemon(sim.url, args + common)
        status, _, b = d.get(key_path(PHONE))
        assert status == 200
        if body is None:
            body = b
        assert len(b) == len(body), "bodies of the same size"
        daemons.append((name, "http://127.0.0.1:%d%s" % (d.port, key_path(PHONE))))
        pids[name] = d.proc.pid
    nginx_port = start_nginx(body)
    # The same request line for every server: the bare one parses the
    # same path (and ignores it), nginx finds its file there.
    assert camtest.request(nginx_port, key_path(PHONE))[2] == body, "identical bodies"
    bare_port, pids["bare libmicrohttpd (same flags)"] = start_bare(body)
    assert camtest.request(bare_port, key_path(PHONE))[2] == body, "identical bodies"
    targets = daemons + [("bare libmicrohttpd (same flags)",
                          "http://127.0.0.1:%d%s" % (bare_port, key_path(PHONE))),
                         ("nginx (static file)",
                          "http://127.0.0.1:%d%s" % (nginx_port, key_path(PHONE)))]
    if EPOLL:
        # The tail question: the same bare server with MHD_USE_EPOLL.
        targets.append(("bare libmicrohttpd, epoll",
                        "http://127.0.0.1:%d%s"
                        % (start_bare(body, epoll=True)[0], key_path(PHONE))))
    print("body %d bytes" % len(body))
    res = alternate(targets, pids=pids)
    quiet = res["camskeyd, --no-access-log"]
    for name, _ in targets:
        show(name, res[name])
    bare, nginx = res["bare libmicrohttpd (same flags)"], res["nginx (static file)"]
    print("  ratios of req/s, the median of each round's (of the medians in brackets):")
    for name, _ in daemons:
        r = res[name]
        print("    %-38s / --no-access-log %.2f (%.2f)   / bare MHD %.2f (%.2f)   / nginx %.2f (%.2f)"
              % (name, paired(r, quiet), r["rps"] / quiet["rps"], paired(r, bare),
                 r["rps"] / bare["rps"], paired(r, nginx), r["rps"] / nginx["rps"]))
    print("  server CPU per request (user + system, median run), and the bare server's / it:")
    for name in pids:
        print("    %-38s %6.2f us   x%.2f"
              % (name, median_of(res[name], "cpu_us"),
                 median_of(bare, "cpu_us") / median_of(res[name], "cpu_us")))
    print("    p99: camskeyd (default) %.2f ms, bare MHD %.2f ms, nginx %.2f ms%s"
          % (res[daemons[0][0]]["p99_ms"], bare["p99_ms"], nginx["p99_ms"],
             ", bare MHD with epoll %.2f ms" % res["bare libmicrohttpd, epoll"]["p99_ms"]
             if EPOLL else ""), flush=True)
    if TAIL:
        tail = [t for t in targets if t[0] in (daemons[0][0], "bare libmicrohttpd (same flags)",
                                               "nginx (static file)", "bare libmicrohttpd, epoll")]
        bench_tail(tail, res)
    camtest.cleanup()
    bench_entries(common, quiet)
    default = res[daemons[0][0]]
    print("summary: default %.0f req/s (x%.2f of --no-access-log, x%.2f of bare MHD, "
          "medians of each round's ratio), nginx %.0f req/s"
          % (default["rps"], paired(default, quiet), paired(default, bare), nginx["rps"]))


def bench_tail(targets, saturated):
    """p99 at CONNECTIONS connections, saturated and not.

    Saturated, wrk and the servers share the cores: four busy threads on two
    cores with THREADS=2. Against a server faster than the client nobody
    sleeps, every thread runs in whole scheduler ticks (4 ms at HZ=250,
    "slice" below), and a request waits for the tick of whoever holds the
    core: p99 comes in multiples of it (the bare server shows it; camskeyd's
    busy workers yield, DESIGN.md). Against a slower server (nginx here)
    the client sleeps between answers and runs in short slices. Two
    runs take that out, each on every target alike: one client thread
    (three busy threads on two cores), and the same THREADS client threads
    pausing 1 ms on every connection after each answer, so every server
    sees the same offered load below its capacity.
    """
    paced = os.path.join(tmpdir(), "paced.lua")
    with open(paced, "w") as f:
        f.write("function delay() return 1 end\n")
    modes = [("saturated, wrk -t%d" % THREADS, None),
             ("one client thread, wrk -t1", alternate(targets, threads=1, warm=False)),
             ("paced, wrk -t%d, 1 ms pause per answer" % THREADS,
              alternate(targets, script=paced, warm=False))]
    nginx = "nginx (static file)"
    print("  the tail at %d connections (median of %d alternating runs):" % (CONNECTIONS, ROUNDS))
    for mode, res in modes:
        res = res or {name: saturated[name] for name, _ in targets}
        print("   %s" % mode)
        for name, _ in targets:
            r = res[name]
            print("    %-34s %7.0f req/s  p50 %5.3f  p90 %5.3f  p99 %5.3f ms  "
                  "p99/nginx %.2f  client: waited %2.0f%%, slice %.3f ms"
                  % (name, r["rps"], r["p50_ms"], r["p90_ms"], r["p99_ms"],
                     r["p99_ms"] / res[nginx]["p99_ms"], 100 * r["client_wait"],
                     r["client_slice_ms"]))
    print("", flush=True)


def bench_entries(common, quiet):
    """The BENCH_ENTRIES part; quiet: the one-entry --no-access-log run, or None."""
    if ENTRIES > 0:
        path = os.path.join(tmpdir(), "big.db")
        t = time.monotonic()
        phones = fill_cache(path, ENTRIES)
        print("filled a cache with %d entries in %.0fs (%.0f MiB)"
              % (ENTRIES, time.monotonic() - t, os.path.getsize(path) / 2**20), flush=True)
        sim = Sim()
        t = time.monotonic()
        d = Daemon(sim.url, ["--no-access-log", "--max-entries", str(ENTRIES + 10)] + common,
                   cache=path, wait=False)
        d.wait_ready(timeout=300)
        ready_s = time.monotonic() - t
        rss_ready = rss_mib(d.proc.pid)
        # Both through the same Lua request function, so the client (on the
        # same cores) does the same work for the hot key as for random keys.
        script = os.path.join(tmpdir(), "random.lua")
        hot_script = os.path.join(tmpdir(), "hot.lua")
        tmpl = ('math.randomseed(42)\nrequest = function()\n'
                '  return wrk.format("GET", string.format('
                '"/v1/phone-numbers/%s/encryption-public-key", %s))\nend\n')
        with open(script, "w") as f:
            f.write(tmpl % ("87%011d", "math.random(0, %d)" % (len(phones) - 1)))
        with open(hot_script, "w") as f:
            f.write(tmpl % ("%s", '"%s"' % PHONE))
        url = "http://127.0.0.1:%d" % d.port
        hot, rnd = [], []
        for _ in range(ROUNDS):
            hot.append(wrk_cpu(d.proc.pid, url + "/", hot_script))
            rnd.append(wrk_cpu(d.proc.pid, url + "/", script))
        r1, r2 = median(hot), median(rnd)
        print("  (median of %d alternating runs; hot %s, random %s req/s)"
              % (ROUNDS, " ".join("%.0f" % r["rps"] for r in hot),
                 " ".join("%.0f" % r["rps"] for r in rnd)))
        show("1M entries, one hot key", r1)
        show("1M entries, random keys", r2, r1)
        print("  1M entries: ready in %.2f s, RSS %.0f MiB at ready, %.0f MiB after the runs"
              % (ready_s, rss_ready, rss_mib(d.proc.pid)))
        print("  random / hot key: %.2f, the median of each round's (%.2f of the medians)%s"
              % (paired({"all": rnd}, {"all": hot}), r2["rps"] / r1["rps"],
                 "; hot key 1M entries / 1 entry: %.2f" % (r1["rps"] / quiet["rps"])
                 if quiet else ""))
        # CPU per request does not move with what else runs on the host.
        cpu_hot, cpu_rnd = median_of({"all": hot}, "cpu_us"), median_of({"all": rnd}, "cpu_us")
        print("  daemon CPU per request (median): hot key %.2f us, random keys %.2f us; "
              "hot / random cost %.2f" % (cpu_hot, cpu_rnd, cpu_hot / cpu_rnd))
        assert sim.stats()["calls"] == 0, "every request was a hit"


if __name__ == "__main__":
    try:
        main()
    finally:
        camtest.cleanup()
        # Bench logs are large and hold nothing a test reads afterwards.
        for path in camtest._all_logs:
            try:
                os.unlink(path)
            except OSError:
                pass
