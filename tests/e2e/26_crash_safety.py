"""Crash safety: SIGKILL the daemon at random moments of a write-heavy load;
the database stays intact, the daemon restarts on it, and no answer already
given disagrees with what the cache holds afterwards.

The moments are seeded: the seed is printed, and CRASH_SEED=N replays a run.
The simulator serves a fixed key per phone, so a different key for a phone
after a restart can only be corruption.
"""
import base64
import glob
import hashlib
import http.client
import os
import random
import sqlite3
import threading
import time

import camtest
from camtest import KEYS_DIR, Daemon, Sim, key_path

SEED = int(os.environ.get("CRASH_SEED", str(int(time.time() * 1000) % 1000000)))
print("# crash seed %d (replay with CRASH_SEED=%d)" % (SEED, SEED), flush=True)

LOAD_THREADS = 8


def pem_sha256(pem):
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def _fnv1a(h, data):
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


_SIM_KEYS = [pem_sha256(open(p).read()) for p in sorted(glob.glob(os.path.join(KEYS_DIR, "*.pem")))]


def expected_etag(phone, cust_space_id=""):
    """The fingerprint the simulator's key for this phone has (no rotation)."""
    h = _fnv1a(0xcbf29ce484222325, (cust_space_id + "/" + phone).encode())
    return _SIM_KEYS[h % len(_SIM_KEYS)]


def integrity(path):
    """PRAGMA integrity_check, and every key row's etag is the SHA-256 of its PEM's DER."""
    con = sqlite3.connect(path, timeout=10)
    try:
        result = con.execute("PRAGMA integrity_check").fetchall()
        rows = con.execute("SELECT phone, kind, etag, pem FROM keys").fetchall()
    finally:
        con.close()
    assert result == [("ok",)], result
    out = {}
    for phone, kind, etag, pem in rows:
        if kind == 0:
            assert pem and pem_sha256(pem) == etag, (phone, etag)
        out[phone] = etag
    return out


def load(d, prefix, answered, stop, errors):
    """LOAD_THREADS callers asking for distinct cold phones until the daemon dies."""
    lock = threading.Lock()

    def run(t):
        i = 0
        while not stop.is_set() and i < 100000:
            phone = "%s%02d%05d" % (prefix, t, i)
            i += 1
            try:
                status, hdrs, _ = camtest.request(d.port, key_path(phone), timeout=20)
            except (OSError, http.client.HTTPException):
                if d.proc.poll() is not None:
                    return  # killed
                time.sleep(0.01)
                continue
            if status == 200:
                with lock:
                    answered[phone] = hdrs["etag"].strip('"')
            elif status != 503:
                with lock:
                    errors.append((phone, status))

    threads = [threading.Thread(target=run, args=(t,), daemon=True)
               for t in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    return threads


def crash_rounds(extra_args, rounds, rng, tag, must_keep_all):
    sim = Sim(quota=1000)
    args = ["--rate", "200", "--burst", "20", "--refresh-ahead", "0", "--max-wait-ms", "10000",
            "--access-log", "no"] + extra_args
    d = Daemon(sim.url, args)
    db = d.cache
    everything = {}  # phone -> ETag answered with 200 in any round
    for r in range(rounds):
        answered, errors, stop = {}, [], threading.Event()
        threads = load(d, "8615%d%d" % (tag, r), answered, stop, errors)
        camtest.wait_until(lambda: len(answered) >= 20, 20, what="answers under load")
        delay = rng.uniform(0.05, 1.5)
        time.sleep(delay)
        d.proc.kill()  # SIGKILL
        d.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "load threads did not stop"
        assert not errors, errors[:5]
        for phone, etag in answered.items():
            assert etag == expected_etag(phone), (phone, etag)
        everything.update(answered)

        rows = integrity(db)
        for phone, etag in rows.items():
            if phone in everything:
                assert everything[phone] == etag, ("cache disagrees", phone, etag)
        print("# round %d: killed after %.2fs, %d answers, %d rows" % (
            r, delay, len(answered), len(rows)), flush=True)

        if must_keep_all:
            # A commit precedes every answer, and WAL keeps commits through
            # a process crash (only a power loss may drop the last ones).
            lost = sorted(set(answered) - set(rows))
            assert not lost, ("answered but not in the cache after kill -9", lost[:5])

        d = Daemon(sim.url, args, cache=db)  # restarts on the same database
        hits = misses = 0
        # The rows first: with a small bound, misses on other phones evict them.
        order = sorted(p for p in everything if p in rows) + \
            sorted(p for p in everything if p not in rows)
        for phone in order:
            etag = everything[phone]
            status, hdrs, doc = d.key(phone)
            assert status == 200, (phone, status, doc)
            got = hdrs["etag"].strip('"')
            assert got == etag, ("a different key after the restart", phone, etag, got)
            assert got == pem_sha256(doc["Data"]["EncryptionPublicKey"]), phone
            if hdrs["cache-status"].startswith("camskeyd; hit"):
                hits += 1
                assert phone in rows, ("a hit for a phone not on disk", phone)
            else:
                misses += 1
        print("# round %d: after restart %d hits, %d misses" % (r, hits, misses), flush=True)
    integrity(db)
    assert d.stop() == 0
    return everything


def test_kill_9_during_writes_never_corrupts_the_cache():
    rng = random.Random(SEED)
    everything = crash_rounds([], 5, rng, 1, True)
    assert len(everything) >= 80, len(everything)


def test_kill_9_during_writes_and_evictions_never_corrupts_the_cache():
    # A small bound: every store also deletes the least recently used rows.
    rng = random.Random(SEED + 1)
    crash_rounds(["--max-entries", "50", "--hot-entries", "10"], 3, rng, 2, False)


camtest.main(globals())
