"""make bench: the cache-hit path against nginx serving the same body.

Starts the daemon with a warm cache and, in the same run, nginx (Debian's
package, on loopback, serving the identical JSON body as a static file);
drives both with wrk at the same connections, threads and duration; prints
requests per second, p50/p99 latency and the ratio camskeyd / nginx. Then
fills a cache with 1,000,000 entries and prints the hit figures again (one hot
key, and keys drawn at random from all of them). Not a pass/fail test.
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


def median(runs):
    """The run with the median request rate (its latencies go with it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def wrk(url, script=None):
    argv = ["wrk", "-t%d" % THREADS, "-c%d" % CONNECTIONS, "-d%s" % DURATION, "--latency"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=300).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else (v * 1000 if unit == "s" else v)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "non2xx": int(errors.group(1)) if errors else 0}


def start_nginx(body):
    d = tmpdir()
    os.chmod(d, 0o755)
    with open(os.path.join(d, "key.json"), "wb") as f:
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
    location / { root %s; default_type application/json; etag on; }
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
        return camtest.request(port, "/key.json", timeout=2)[0] == 200
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
    row = db.execute("SELECT kind, http_status, status, code, etag, request_id, pem, body, "
                     "fetched_at, expires_at, last_used_at FROM keys").fetchone()
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    phones = ["87%011d" % i for i in range(n - 1)]
    body_tmpl = row[7].decode() if isinstance(row[7], bytes) else row[7]
    batch = []
    for p in phones:
        b = body_tmpl.replace(PHONE, p).encode()
        batch.append(("", p) + row[:7] + (b,) + row[8:])
        if len(batch) == 50000:
            db.executemany("INSERT INTO keys (cust_space_id, phone, kind, http_status, status, "
                           "code, etag, request_id, pem, body, fetched_at, expires_at, "
                           "last_used_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            db.commit()
            batch = []
    if batch:
        db.executemany("INSERT INTO keys (cust_space_id, phone, kind, http_status, status, code, "
                       "etag, request_id, pem, body, fetched_at, expires_at, last_used_at) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.sync()  # the fill's dirty pages must not be written back during the measurement
    return phones


def show(name, r):
    print("  %-34s %9.0f req/s   p50 %7.3f ms   p99 %7.3f ms%s"
          % (name, r["rps"], r["p50_ms"], r["p99_ms"],
             "   (%d non-2xx!)" % r["non2xx"] if r["non2xx"] else ""), flush=True)


def main():
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("bench: needs wrk and nginx (make deps-bench)")
    print("wrk -t%d -c%d -d%s on 127.0.0.1, %d cores" % (THREADS, CONNECTIONS, DURATION,
                                                         os.cpu_count()), flush=True)
    sim = Sim()
    d = Daemon(sim.url, ["--no-access-log", "--threads", str(THREADS)])
    status, _, body = d.get(key_path(PHONE))
    assert status == 200
    nginx_port = start_nginx(body)
    assert camtest.request(nginx_port, "/key.json")[2] == body, "identical bodies"
    url_d = "http://127.0.0.1:%d%s" % (d.port, key_path(PHONE))
    url_n = "http://127.0.0.1:%d/key.json" % nginx_port
    wrk(url_d)  # warm-up both, then measure alternately, ROUNDS times each
    wrk(url_n)
    runs_d, runs_n = [], []
    for _ in range(ROUNDS):
        runs_d.append(wrk(url_d))
        runs_n.append(wrk(url_n))
    rd, rn = median(runs_d), median(runs_n)
    print("  (median of %d alternating runs each; camskeyd %s, nginx %s req/s)"
          % (ROUNDS, " ".join("%.0f" % r["rps"] for r in runs_d),
             " ".join("%.0f" % r["rps"] for r in runs_n)))
    show("camskeyd (cache hit)", rd)
    show("nginx (static file)", rn)
    print("  ratio camskeyd / nginx: %.2f" % (rd["rps"] / rn["rps"]), flush=True)
    camtest.cleanup()

    if ENTRIES > 0:
        path = os.path.join(tmpdir(), "big.db")
        t = time.monotonic()
        phones = fill_cache(path, ENTRIES)
        print("filled a cache with %d entries in %.0fs (%.0f MiB)"
              % (ENTRIES, time.monotonic() - t, os.path.getsize(path) / 2**20), flush=True)
        sim = Sim()
        d = Daemon(sim.url, ["--no-access-log", "--threads", str(THREADS),
                             "--max-entries", str(ENTRIES + 10)], cache=path)
        script = os.path.join(tmpdir(), "random.lua")
        with open(script, "w") as f:
            f.write('math.randomseed(42)\nrequest = function()\n'
                    '  return wrk.format("GET", string.format('
                    '"/v1/phone-numbers/87%%011d/encryption-public-key", '
                    'math.random(0, %d)))\nend\n' % (len(phones) - 1))
        r1 = wrk("http://127.0.0.1:%d%s" % (d.port, key_path(PHONE)))
        show("1M entries, one hot key", r1)
        r2 = wrk("http://127.0.0.1:%d/" % d.port, script)
        show("1M entries, random keys", r2)
        print("  hot-key ratio 1M entries / 1 entry: %.2f" % (r1["rps"] / rd["rps"]))
        assert sim.stats()["calls"] == 0, "every request was a hit"
    print("summary: camskeyd %.0f req/s, nginx %.0f req/s, ratio %.2f"
          % (rd["rps"], rn["rps"], rd["rps"] / rn["rps"]))


if __name__ == "__main__":
    try:
        main()
    finally:
        camtest.cleanup()
