"""Cache semantics: TTL by status, negative caching, stale-while-revalidate,
stale-if-error, refresh-ahead, forced refresh and purge, the cache CLI, the
size bound and key integrity (ETag = SHA-256 of the key's DER)."""
import base64
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import time

import camtest
from camtest import DAEMON, PHONE, Daemon, Sim, key_path

ADMIN_TOKEN = "e2e-admin-token-4f1c9a"
ADMIN_SHA256 = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
# Keep background refreshes out of the upstream call counts unless a test wants them.
NO_AHEAD = ["--refresh-ahead", "0"]


def pem_etag(pem):
    """The strong ETag a PEM public key must get: the quoted SHA-256 hex of its DER."""
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return '"%s"' % hashlib.sha256(base64.b64decode(body)).hexdigest()


def calls_for(sim, phone):
    return sim.stats()["by_phone"].get(phone, 0)


def db_rows(path):
    """{phone: (kind, etag, pem)} read with Python's sqlite3 (WAL: beside the daemon)."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return {r[0]: (r[1], r[2], r[3])
                for r in con.execute("SELECT phone, kind, etag, pem FROM keys")}
    finally:
        con.close()


def cli(d, *args, timeout=60, env=None):
    """build/camskeyd [--listen the daemon] --cache DB cache ARGS -> (rc, stdout, stderr)."""
    argv = [DAEMON, "--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache, "cache"] + list(args)
    full_env = camtest.credentials_env()
    full_env.update(env or {})
    p = subprocess.run(argv, env=full_env, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def wait_expired(seconds):
    """Sleep past an expiry (whole-second timestamps: ttl N expires within N s)."""
    time.sleep(seconds + 1.2)


# ---- 1. TTL by status, negative caching, transient failures ----------------------------


def test_valid_and_non_valid_keys_live_their_own_ttls():
    sim = Sim()
    odd = "8613912340001"
    sim.fault(odd, "status", status="MISMATCH")
    d = Daemon(sim.url, ["--ttl", "30", "--status-ttl", "1", "--stale-while-revalidate", "0",
                         "--stale-if-error", "0"] + NO_AHEAD)
    status, hdrs, doc = d.key(PHONE)
    assert status == 200 and doc["Data"]["EncryptionPublicKeyStatus"] == "VALID", doc
    status, hdrs, doc = d.key(odd)
    assert status == 200 and doc["Data"]["EncryptionPublicKeyStatus"] == "MISMATCH", doc
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    _, hdrs, _ = d.key(odd)
    assert hdrs["cache-status"].startswith("camskeyd; hit; ttl="), hdrs
    wait_expired(1)
    # the non-VALID key expired after --status-ttl, the VALID one lives --ttl
    _, hdrs, doc = d.key(odd)
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert doc["Data"]["EncryptionPublicKeyStatus"] == "MISMATCH"
    _, hdrs, _ = d.key(PHONE)
    assert hdrs["cache-status"].startswith("camskeyd; hit; ttl="), hdrs
    ttl = int(re.search(r"ttl=(\d+)", hdrs["cache-status"]).group(1))
    assert 20 <= ttl <= 30, hdrs
    assert calls_for(sim, odd) == 2 and calls_for(sim, PHONE) == 1, sim.stats()["by_phone"]


def test_definitive_errors_are_cached_for_the_negative_ttl():
    sim = Sim()
    d = Daemon(sim.url, ["--negative-ttl", "2"] + NO_AHEAD)
    cases = [("Unknown.ResourceOwnerId", 404), ("Product.Unsubscript", 403),
             ("Ram.PermissionDeny", 403)]
    phones = []
    for i, (code, want) in enumerate(cases):
        phone = "8613800001%03d" % i
        phones.append(phone)
        sim.fault(phone, "error", code=code)
        # a caller's retry loop of 20 requests costs one upstream call
        for n in range(20):
            status, hdrs, doc = d.key(phone)
            assert status == want and doc["Code"] == code, (code, n, status, doc)
            if n == 0:
                assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
            else:
                assert hdrs["cache-status"].startswith("camskeyd; hit"), (code, n, hdrs)
        assert calls_for(sim, phone) == 1, (code, sim.stats()["by_phone"])
    wait_expired(2)
    for (code, want), phone in zip(cases, phones):
        status, hdrs, doc = d.key(phone)
        assert status == want and doc["Code"] == code, (code, status, doc)
        assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (code, hdrs)
        assert calls_for(sim, phone) == 2, (code, sim.stats()["by_phone"])


def test_transient_failures_are_never_cached():
    sim = Sim()
    d = Daemon(sim.url, ["--upstream-timeout-ms", "500", "--upstream-connect-timeout-ms", "200"]
               + NO_AHEAD)
    for i, (mode, want, code) in enumerate([("http500", 502, "Proxy.UpstreamError"),
                                            ("reset", 502, "Proxy.UpstreamError"),
                                            ("hang", 504, "Proxy.UpstreamTimeout")]):
        phone = "8613800002%03d" % i
        sim.fault(phone, mode)
        calls = 0
        for n in range(3):
            status, hdrs, doc = d.key(phone)
            assert status == want and doc["Code"] == code, (mode, status, doc)
            assert "hit" not in hdrs.get("cache-status", ""), (mode, hdrs)
            # every request went upstream again: nothing was cached. (A reset
            # costs more than one call: libcurl re-sends on a dead reused
            # connection, the upstream refuses the reused nonce, and the
            # daemon retries signed afresh.)
            now = calls_for(sim, phone)
            assert now > calls, (mode, n, sim.stats()["by_phone"])
            calls = now
        sim.clear_faults()
        status, hdrs, _ = d.key(phone)
        assert status == 200 and hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (mode, hdrs)


def test_exhausted_limit_control_is_never_cached():
    sim = Sim()
    phone = "8613800003000"
    sim.fault(phone, "error", code="System.LimitControl", time_left_ms=100)
    d = Daemon(sim.url, ["--upstream-retries", "1", "--max-wait-ms", "8000"] + NO_AHEAD)
    status, hdrs, doc = d.key(phone)
    assert status == 503 and doc["Code"] == "System.LimitControl", (status, doc)
    first = calls_for(sim, phone)
    assert first == 2, sim.stats()["by_phone"]  # the call and its one retry
    status, hdrs, doc = d.key(phone)
    assert status == 503 and doc["Code"] == "System.LimitControl", (status, doc)
    assert "hit" not in hdrs.get("cache-status", ""), hdrs
    assert calls_for(sim, phone) > first, sim.stats()["by_phone"]


# ---- 2. stale-while-revalidate -----------------------------------------------------------


def test_stale_while_revalidate_answers_at_once_and_refreshes_once():
    # The simulator answers slowly so that every stale request arrives while
    # the one background refresh is still on its way.
    sim = Sim(latency_ms=800)
    d = Daemon(sim.url, ["--ttl", "2", "--stale-while-revalidate", "30", "--stale-if-error", "0"]
               + NO_AHEAD)
    status, hdrs, doc = d.key()
    assert status == 200 and hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    old_id = doc["RequestId"]
    wait_expired(2)
    results = camtest.parallel(20, lambda i: d.key())
    for status, hdrs, doc2 in results:
        assert status == 200, (status, doc2)
        assert "hit; stale" in hdrs["cache-status"], hdrs
        # the old entry, served without waiting for the upstream
        assert doc2["RequestId"] == old_id, doc2
    camtest.wait_until(lambda: sim.stats()["calls"] >= 2, 10, what="the background refresh")

    def fresh():
        status, hdrs, doc2 = d.key()
        return hdrs["cache-status"].startswith("camskeyd; hit; ttl=") and doc2
    doc3 = camtest.wait_until(fresh, 5, interval=0.05, what="a fresh hit after the refresh")
    assert doc3["RequestId"] != old_id, doc3
    time.sleep(0.5)
    assert sim.stats()["calls"] == 2, sim.stats()
    assert d.metric("camskeyd_refreshes_total") == 1


# ---- 3. stale-if-error ----------------------------------------------------------------------


def test_stale_if_error_serves_the_old_key_unless_the_caller_refuses_stale():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "1", "--stale-while-revalidate", "0", "--stale-if-error", "60",
                         "--upstream-timeout-ms", "500", "--upstream-connect-timeout-ms", "200",
                         "--upstream-retries", "1", "--max-wait-ms", "8000"] + NO_AHEAD)
    status, hdrs, doc = d.key()
    assert status == 200
    etag = hdrs["etag"]
    wait_expired(1)
    # System.LimitControl last: it slows the daemon's limiter down.
    for mode, extra, want, code in [
            ("http500", {}, 502, "Proxy.UpstreamError"),
            ("hang", {}, 504, "Proxy.UpstreamTimeout"),
            ("error", {"code": "System.LimitControl", "time_left_ms": 100}, 503,
             "System.LimitControl")]:
        sim.fault(PHONE, mode, **extra)
        before = sim.stats()["calls"]
        status, hdrs, doc2 = d.key()
        assert status == 200, (mode, status, doc2)
        assert "stale" in hdrs["cache-status"], (mode, hdrs)
        assert hdrs["etag"] == etag and doc2 == doc, (mode, hdrs)
        assert sim.stats()["calls"] > before, mode  # it did try the upstream
        status, hdrs, doc2 = d.key(headers={"Cache-Control": "max-stale=0"})
        assert status == want and doc2["Code"] == code, (mode, status, doc2)
        if want == 503:
            assert int(hdrs["retry-after"]) >= 1, hdrs
        sim.clear_faults()


# ---- 4. refresh-ahead ----------------------------------------------------------------------


def test_refresh_ahead_keeps_a_key_in_use_fresh():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "4", "--refresh-ahead", "3", "--stale-while-revalidate", "0",
                         "--stale-if-error", "0"])
    seen = []
    start = time.monotonic()
    for _ in range(17):  # ~8 s, one request every 0.5 s
        status, hdrs, _ = d.key()
        assert status == 200, status
        seen.append(hdrs["cache-status"])
        time.sleep(0.5)
    elapsed = time.monotonic() - start
    assert seen[0] == "camskeyd; fwd=miss; stored", seen
    later = [s for s in seen[1:] if not s.startswith("camskeyd; hit; ttl=")]
    assert not later, seen  # never a miss, never stale
    st = sim.stats()
    assert st["calls"] >= 2, (elapsed, st)
    # the refresh reached the upstream before the first copy expired (ttl 4 s)
    assert st["arrivals_ms"][1] < 4000, st["arrivals_ms"]
    assert d.metric("camskeyd_refreshes_total") >= 1


# ---- 5. forced refresh, purge, the CLI ----------------------------------------------------


def test_no_cache_revalidates_and_concurrent_no_cache_requests_coalesce():
    sim = Sim(latency_ms=500)
    d = Daemon(sim.url, NO_AHEAD)
    assert d.key()[0] == 200
    _, hdrs, _ = d.key(headers={"Cache-Control": "no-cache"})
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert sim.stats()["calls"] == 2
    results = camtest.parallel(10, lambda i: d.key(headers={"Cache-Control": "no-cache"}))
    assert all(r[0] == 200 for r in results), results
    assert sim.stats()["calls"] == 3, sim.stats()
    _, hdrs, _ = d.key()
    assert hdrs["cache-status"].startswith("camskeyd; hit; ttl="), hdrs


def test_delete_with_the_admin_token_purges_a_key():
    sim = Sim()
    d = Daemon(sim.url, ["--admin-token-sha256", ADMIN_SHA256] + NO_AHEAD)
    assert d.key()[0] == 200
    path = key_path(PHONE)
    status, _, body = d.get(path, method="DELETE")
    assert status == 403, (status, body)
    status, _, body = d.get(path, method="DELETE", headers={"Authorization": "Bearer wrong"})
    assert status == 403, (status, body)
    status, _, body = d.get(path, method="DELETE",
                            headers={"Authorization": "Bearer " + ADMIN_TOKEN + "x"})
    assert status == 403, (status, body)
    _, hdrs, _ = d.key()
    assert hdrs["cache-status"].startswith("camskeyd; hit"), hdrs  # refused: still cached
    status, _, body = d.get(path, method="DELETE",
                            headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    assert status == 200, (status, body)
    assert PHONE not in db_rows(d.cache)
    _, hdrs, _ = d.key()
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert sim.stats()["calls"] == 2


def test_cli_lists_shows_purges_and_counts_beside_the_running_daemon():
    sim = Sim()
    bad = "8613800004000"
    sim.fault(bad, "error", code="Product.Unsubscript")
    d = Daemon(sim.url, NO_AHEAD + ["--admin-token-sha256", ADMIN_SHA256])
    phones = ["861390000%04d" % i for i in range(3)]
    etags = {}
    for p in phones:
        status, hdrs, _ = d.key(p)
        assert status == 200
        etags[p] = hdrs["etag"].strip('"')
    assert d.key(bad)[0] == 403

    rc, out, err = cli(d, "list")
    assert rc == 0, (rc, out, err)
    for p in phones:
        assert re.search(r"^%s\s.*VALID" % p, out, re.M), out
    assert re.search(r"^%s\s.*negative" % bad, out, re.M), out
    # every column filled: the ETAG column holds the key's ETag ("-" for a negative entry)
    lines = out.splitlines()
    assert lines[0].split() == ["PHONE", "CUSTSPACEID", "STATUS", "CODE", "ETAG", "EXPIRES"], out
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for p in phones:
        assert rows[p][1:5] == ["-", "VALID", "OK", etags[p]], (p, out)
    assert rows[bad][1:5] == ["-", "negative", "Product.Unsubscript", "-"], out

    rc, out, err = cli(d, "show", phones[0])
    assert rc == 0, (rc, out, err)
    fields = dict(line.split(" ", 1) for line in out.splitlines() if " " in line
                  and not line.startswith("-----"))
    assert fields["phone"] == phones[0] and fields["kind"] == "key", out
    assert fields["status"] == "VALID" and fields["etag"] == etags[phones[0]], out
    assert "-----BEGIN PUBLIC KEY-----" in out
    assert pem_etag(out[out.index("-----BEGIN"):]) == '"%s"' % etags[phones[0]]

    rc, out, err = cli(d, "stats")
    assert rc == 0, (rc, out, err)
    stats = dict(line.split(" ", 1) for line in out.splitlines())
    assert stats["entries"] == "4" and stats["keys"] == "3" and stats["valid"] == "3", out
    assert stats["negative"] == "1", out

    # purge goes through the running daemon: without the admin token it refuses
    # and nothing is purged (the file alone would leave the daemon's copy)
    rc, out, err = cli(d, "purge", phones[1])
    assert rc == 1 and "refused the purge: HTTP 403 Proxy.Forbidden" in err, (rc, out, err)
    assert phones[1] in db_rows(d.cache)
    admin = {"CAMSKEYD_ADMIN_TOKEN": ADMIN_TOKEN}
    rc, out, err = cli(d, "purge", phones[1], env=admin)
    want = "purged %s from the running daemon at 127.0.0.1:%d (memory and database)" % (
        phones[1], d.port)
    assert rc == 0 and want in out, (rc, out, err)
    assert phones[1] not in db_rows(d.cache)
    rc, out, err = cli(d, "show", phones[1])
    assert rc == 1 and "not in the cache" in err, (rc, out, err)
    rc, out, err = cli(d, "purge", phones[1], env=admin)
    assert rc == 1 and "not in the cache of the running daemon" in err, (rc, out, err)
    rc, out, err = cli(d, "stats")
    assert dict(line.split(" ", 1) for line in out.splitlines())["entries"] == "3", out
    # the daemon forgot it too: the next lookup goes upstream, same key
    calls = calls_for(sim, phones[1])
    status, hdrs, _ = d.key(phones[1])
    assert status == 200 and hdrs["etag"].strip('"') == etags[phones[1]], hdrs
    assert calls_for(sim, phones[1]) == calls + 1


def test_cli_warm_fetches_every_number_once_without_a_bar_off_a_terminal():
    sim = Sim()
    d = Daemon(sim.url, NO_AHEAD)
    phones = ["861391111%04d" % i for i in range(8)]
    f = os.path.join(d.dir, "phones.txt")
    with open(f, "w") as fh:
        fh.write("# numbers to warm\n" + "\n".join(phones) + "\n")
    rc, out, err = cli(d, "warm", f)
    assert rc == 0, (rc, out, err)
    assert "warmed 8 of 8 numbers, 0 failed" in out, out
    # stderr is a pipe here: no progress bar (75_cli.py checks it on a terminal)
    assert "ETA" not in err and "\r" not in err, err
    assert not os.path.exists(f + ".progress")
    assert sim.stats()["calls"] == 8, sim.stats()
    for p in phones:
        status, hdrs, _ = d.key(p)
        assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), (p, hdrs)
    assert sim.stats()["calls"] == 8


def test_cli_warm_resumes_after_the_recorded_position():
    sim = Sim()
    d = Daemon(sim.url, NO_AHEAD)
    phones = ["861392222%04d" % i for i in range(8)]
    f = os.path.join(d.dir, "phones.txt")
    with open(f, "w") as fh:
        fh.write("\n".join(phones) + "\n")
    with open(f + ".progress", "w") as fh:
        fh.write("4\n")  # as an interrupted run leaves it
    rc, out, err = cli(d, "warm", f)
    assert rc == 0, (rc, out, err)
    assert "resuming after 4" in err, err
    by_phone = sim.stats()["by_phone"]
    assert sorted(by_phone) == phones[4:], by_phone
    assert not os.path.exists(f + ".progress")
    # an interrupted run: stop it after it recorded some progress, then resume
    phones2 = ["861393333%04d" % i for i in range(8)]
    f2 = os.path.join(d.dir, "phones2.txt")
    with open(f2, "w") as fh:
        fh.write("\n".join(phones2) + "\n")
    sim.configure(latency_ms=300)  # slow enough to interrupt in the middle
    argv = [DAEMON, "--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache, "cache", "warm", f2]
    p = subprocess.Popen(argv, env=camtest.credentials_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        def progressed():
            try:
                with open(f2 + ".progress") as fh:
                    v = fh.read().strip()
                return v.isdigit() and int(v) >= 2
            except OSError:
                return p.poll() is not None
        camtest.wait_until(progressed, 20, what="warm progress")
        p.send_signal(signal.SIGINT)  # as Ctrl-C would
        p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    with open(f2 + ".progress") as fh:
        done = int(fh.read().strip())
    assert 2 <= done < 8, done
    sim.configure(latency_ms=0)
    rc, out, err = cli(d, "warm", f2)
    assert rc == 0, (rc, out, err)
    assert "resuming after %d" % done in err, err
    by_phone = sim.stats()["by_phone"]
    for p2 in phones2:
        assert by_phone.get(p2, 0) <= 1, by_phone  # nothing fetched twice
    for p2 in phones2:
        status, hdrs, _ = d.key(p2)
        assert status == 200, status


# ---- 6. bounded size -------------------------------------------------------------------------


def test_max_entries_keeps_the_most_recently_used_keys():
    sim = Sim()
    d = Daemon(sim.url, ["--max-entries", "5", "--hot-entries", "2"] + NO_AHEAD)
    p = ["861394444%04d" % i for i in range(8)]
    for ph in p[:5]:
        assert d.key(ph)[0] == 200
    time.sleep(1.2)  # a later second: these uses are more recent than p[2..4]
    for ph in p[:2]:
        _, hdrs, _ = d.key(ph)
        assert hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    time.sleep(2.2)  # maintenance (1 s) writes the uses down; then a later second again
    for ph in p[5:]:
        assert d.key(ph)[0] == 200
    camtest.wait_until(lambda: len(db_rows(d.cache)) <= 5, 10, what="eviction to 5 rows")
    time.sleep(1.2)  # one more maintenance pass must keep the bound
    rows = db_rows(d.cache)
    assert len(rows) <= 5, sorted(rows)
    assert set(rows) == set(p[:2] + p[5:]), sorted(rows)
    rc, out, err = cli(d, "stats")
    assert rc == 0 and re.search(r"^entries [0-5]$", out, re.M), (out, err)
    calls = sim.stats()["calls"]
    assert calls == 8, sim.stats()
    for ph in p[:2] + p[5:]:
        _, hdrs, _ = d.key(ph)
        assert hdrs["cache-status"].startswith("camskeyd; hit"), (ph, hdrs)
    assert sim.stats()["calls"] == 8
    # an evicted key is gone from memory too
    _, hdrs, _ = d.key(p[2])
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs


# ---- 7. key integrity -------------------------------------------------------------------------


def test_etag_is_the_sha256_of_the_key_der():
    sim = Sim()
    d = Daemon(sim.url, NO_AHEAD)
    for ph in [PHONE, "8613800005000", "8613800005001"]:
        status, hdrs, doc = d.key(ph)
        assert status == 200
        assert hdrs["etag"] == pem_etag(doc["Data"]["EncryptionPublicKey"]), (ph, hdrs)
        _, hdrs2, _ = d.key(ph)  # a hit carries the same ETag
        assert hdrs2["etag"] == hdrs["etag"]
        kind, etag, pem = db_rows(d.cache)[ph]
        assert kind == 0 and '"%s"' % etag == hdrs["etag"] and pem_etag(pem) == hdrs["etag"]


def test_a_rotated_key_gets_a_new_etag_and_is_logged():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "1", "--stale-while-revalidate", "0"] + NO_AHEAD)
    _, hdrs, doc = d.key()
    old = hdrs["etag"]
    sim.fault(PHONE, "rotate", count=1)
    _, hdrs, doc2 = d.key(headers={"Cache-Control": "no-cache"})
    new = hdrs["etag"]
    assert new != old and new == pem_etag(doc2["Data"]["EncryptionPublicKey"]), (old, new)
    _, hdrs, _ = d.key()
    assert hdrs["etag"] == new and hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    # and once more, by expiry this time
    sim.fault(PHONE, "rotate", count=1)
    wait_expired(1)
    _, hdrs, doc3 = d.key()
    newer = hdrs["etag"]
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert newer not in (old, new) and newer == pem_etag(doc3["Data"]["EncryptionPublicKey"])

    def logged():
        return [line for line in d.logs().splitlines() if "event=key_rotated" in line]
    lines = camtest.wait_until(lambda: len(logged()) >= 2 and logged(), 5, what="key_rotated")
    assert len(lines) == 2, lines
    for line, (a, b) in zip(lines, [(old, new), (new, newer)]):
        assert "old_fingerprint=%s" % a.strip('"') in line, line
        assert "new_fingerprint=%s" % b.strip('"') in line, line
        assert PHONE not in line, line  # the phone number is masked
    assert d.metric("camskeyd_key_rotations_total") == 2


camtest.main(globals())
