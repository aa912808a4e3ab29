"""Upstream faults: every failure ends in the contract's status in bounded time,
the daemon survives it, the cache never holds a wrong key, and a stale key is
served where the caller and the configuration allow it."""
import glob
import http.client
import json
import os
import ssl
import subprocess
import time

import camtest
from camtest import KEYS_DIR, PHONE, Daemon, Sim, tmpdir

FAST_TIMEOUTS = ["--upstream-timeout-ms", "800", "--upstream-connect-timeout-ms", "300"]

# mode -> (HTTP status, Code) the caller gets
FAULTS = [
    ("http500", 502, "Proxy.UpstreamError"),
    ("http503", 502, "Proxy.UpstreamError"),
    ("reset", 502, "Proxy.UpstreamError"),
    ("hang", 504, "Proxy.UpstreamTimeout"),
    ("trickle", 504, "Proxy.UpstreamTimeout"),
    ("malformed", 502, "Proxy.UpstreamError"),
    ("missing_fields", 502, "Proxy.UpstreamError"),
    ("bad_pem", 502, "Proxy.UpstreamError"),
    ("oversized", 502, "Proxy.UpstreamError"),
]

# The caller's wait limit (--max-wait-ms) plus a generous allowance for a noisy machine.
WAIT_LIMIT_S = 5.0
SLACK_S = 10.0


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sim_key(phone, cust_space_id=""):
    """The key the simulator serves for (CustSpaceId, phone) with no rotation:
    keys[FNV-1a-64(CustSpaceId + "/" + phone) % nkeys], files in name order."""
    files = sorted(glob.glob(os.path.join(KEYS_DIR, "*.pem")))
    assert files, KEYS_DIR
    h = fnv1a64(("%s/%s" % (cust_space_id, phone)).encode())
    with open(files[h % len(files)]) as f:
        return f.read().strip()


def served_key(doc):
    return doc["Data"]["EncryptionPublicKey"].strip()


def timed_key(d, phone, headers=None):
    start = time.monotonic()
    status, hdrs, doc = d.key(phone, headers=headers)
    return status, hdrs, doc, time.monotonic() - start


def assert_alive(d):
    assert d.proc.poll() is None, "daemon died:\n" + d.logs()[-3000:]
    assert d.get("/healthz", timeout=10)[0] == 200


def test_sim_key_helper_matches_a_fresh_daemon():
    sim = Sim()
    d = Daemon(sim.url)
    for phone, cust in [(PHONE, ""), ("8613700000001", ""), (PHONE, "cams-x9")]:
        status, _, doc = d.key(phone, cust_space_id=cust or None)
        assert status == 200, doc
        assert served_key(doc) == sim_key(phone, cust), (phone, cust)
    # the helper really depends on the phone (16 keys: some two differ)
    assert len({sim_key("86137000%05d" % i) for i in range(20)}) > 1


def test_each_fault_ends_in_the_contract_status_and_is_never_cached():
    sim = Sim(quota=1000)
    d = Daemon(sim.url, FAST_TIMEOUTS + ["--max-wait-ms", "5000"])
    for i, (mode, want_status, want_code) in enumerate(FAULTS):
        phone = "8613600000%03d" % i
        sim.fault(phone, mode)
        status, hdrs, doc, took = timed_key(d, phone)
        assert status == want_status and doc["Code"] == want_code, (mode, status, doc)
        assert doc["RequestId"] and doc["Message"], doc
        assert "Data" not in doc, (mode, doc)
        assert took < WAIT_LIMIT_S + SLACK_S, (mode, took)
        assert_alive(d)
        # still faulty: still an error, never a key made up from the bad answer
        status, _, doc, _ = timed_key(d, phone)
        assert status == want_status, (mode, status, doc)
        sim.clear_faults()
        status, hdrs, doc = d.key(phone)
        assert status == 200, (mode, status, doc)
        assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (mode, hdrs)
        assert served_key(doc) == sim_key(phone), mode
        status, hdrs, doc = d.key(phone)
        assert hdrs["cache-status"].startswith("camskeyd; hit"), (mode, hdrs)
        assert served_key(doc) == sim_key(phone), mode
    assert d.metric("camskeyd_upstream_calls_total", code="timeout") >= 4


def test_faults_during_revalidation_never_replace_a_cached_key():
    sim = Sim(quota=1000)
    d = Daemon(sim.url, FAST_TIMEOUTS)
    phones = ["8613500000%03d" % i for i in range(len(FAULTS))]
    for phone in phones:
        assert d.key(phone)[0] == 200
    for phone, (mode, want_status, want_code) in zip(phones, FAULTS):
        sim.fault(phone, mode)
        # revalidation is forced, the upstream answers badly
        status, hdrs, doc, took = timed_key(d, phone, headers={"Cache-Control": "no-cache"})
        assert took < WAIT_LIMIT_S + SLACK_S, (mode, took)
        if status == 200:  # the cached key, served because the upstream failed
            assert served_key(doc) == sim_key(phone), (mode, hdrs)
            assert "stale" in hdrs.get("cache-status", ""), (mode, hdrs)
        else:
            assert (status, doc["Code"]) == (want_status, want_code), (mode, status, doc)
        assert_alive(d)
        sim.clear_faults()
        status, hdrs, doc = d.key(phone)
        assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), (mode, hdrs)
        assert served_key(doc) == sim_key(phone), mode
    # and from the database, after a restart (the hot layer is gone)
    assert d.stop() == 0
    d2 = Daemon(sim.url, cache=d.cache)
    for phone in phones:
        status, hdrs, doc = d2.key(phone)
        assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
        assert served_key(doc) == sim_key(phone), phone


def test_stale_key_is_served_when_the_upstream_fails():
    sim = Sim(quota=1000)
    d = Daemon(sim.url, FAST_TIMEOUTS + ["--ttl", "1", "--stale-while-revalidate", "0",
                                         "--stale-if-error", "3600", "--refresh-ahead", "0"])
    phones = {mode: "8613400000%03d" % i for i, (mode, _, _) in enumerate(FAULTS)}
    for phone in phones.values():
        assert d.key(phone)[0] == 200
    time.sleep(2.2)  # every key is now expired, within stale-if-error
    for mode, want_status, want_code in FAULTS:
        phone = phones[mode]
        sim.fault(phone, mode)
        status, hdrs, doc, took = timed_key(d, phone)
        assert status == 200, (mode, status, doc)
        assert "stale" in hdrs["cache-status"], (mode, hdrs)
        assert served_key(doc) == sim_key(phone), mode
        assert took < WAIT_LIMIT_S + SLACK_S, (mode, took)
        # a caller that refuses stale answers gets the error instead
        status, _, doc = d.key(phone, headers={"Cache-Control": "max-stale=0"})
        assert (status, doc["Code"]) == (want_status, want_code), (mode, status, doc)
        sim.clear_faults()
        assert_alive(d)
    # once the upstream works again the key is fetched, not served stale
    status, hdrs, doc = d.key(phones["http500"])
    assert status == 200 and hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs


def test_no_stale_key_past_stale_if_error():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "1", "--stale-while-revalidate", "0", "--stale-if-error", "0",
                         "--refresh-ahead", "0"])
    assert d.key()[0] == 200
    time.sleep(2.2)
    sim.fault(PHONE, "http500")
    status, _, doc = d.key()
    assert status == 502 and doc["Code"] == "Proxy.UpstreamError", (status, doc)
    assert_alive(d)


def make_cert(d, name, san):
    crt, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=camskeyd-test", "-addext", "subjectAltName=" + san,
                        "-keyout", key, "-out", crt], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return crt, key


def tls_control(sim, crt, method, path):
    """The simulator's control API when it serves HTTPS (camtest's client is plain)."""
    ctx = ssl.create_default_context(cafile=crt)
    ctx.check_hostname = False  # the "other name" certificate is one of ours too
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, timeout=10, context=ctx)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200, (method, path, r.status, data[:200])
        return json.loads(data)
    finally:
        conn.close()


def test_upstream_tls_certificate_must_verify():
    d = tmpdir()
    crt, key = make_cert(d, "sim", "IP:127.0.0.1")
    sim = Sim(extra=["--tls-cert", crt, "--tls-key", key])
    url = "https://127.0.0.1:%d" % sim.port
    # self-signed and not in any store: refused, nothing reached the API
    daemon = Daemon(url, FAST_TIMEOUTS)
    status, _, doc, took = timed_key(daemon, PHONE)
    assert status == 502 and doc["Code"] == "Proxy.UpstreamError", (status, doc)
    assert any(w in doc["Message"].lower() for w in ("certificate", "tls", "ssl")), doc
    assert took < WAIT_LIMIT_S + SLACK_S, took
    assert tls_control(sim, crt, "GET", "/_sim/stats")["calls"] == 0
    assert_alive(daemon)
    # the same certificate as an extra CA: the call goes through and verifies
    daemon2 = Daemon(url, ["--upstream-ca", crt])
    status, hdrs, doc = daemon2.key(PHONE)
    assert status == 200, (status, doc)
    assert served_key(doc) == sim_key(PHONE)
    assert tls_control(sim, crt, "GET", "/_sim/stats")["calls"] == 1
    # a certificate for another name, even from a trusted CA, is refused
    crt2, key2 = make_cert(d, "other", "DNS:other.example")
    sim2 = Sim(extra=["--tls-cert", crt2, "--tls-key", key2])
    daemon3 = Daemon("https://127.0.0.1:%d" % sim2.port, FAST_TIMEOUTS + ["--upstream-ca", crt2])
    status, _, doc = daemon3.key(PHONE)
    assert status == 502 and doc["Code"] == "Proxy.UpstreamError", (status, doc)
    assert tls_control(sim2, crt2, "GET", "/_sim/stats")["calls"] == 0
    assert_alive(daemon3)
    # the first daemon never cached anything from the failed handshakes
    tls_control(sim, crt, "POST", "/_sim/reset")
    status, hdrs, doc = daemon.key(PHONE)
    assert status == 502, status
    assert tls_control(sim, crt, "GET", "/_sim/stats")["calls"] == 0


camtest.main(globals())
