"""The simulator as an independent oracle: its own verifier checked against the
official SDK's vectors and Alibaba's documented examples (camsim --self-test),
against requests signed here in Python (a third implementation, as the Python
and Node SDKs send them), against tampered requests, and its processing time."""
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid

import camtest
from camtest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, ROOT, Sim, parallel, request, tmpdir

VECTORS = os.path.join(ROOT, "tests", "data", "vectors")
USER_AGENT = "AlibabaCloud (Linux; x86_64) Python/3.11 Core/2.13 TeaDSL/1"


def pe(s):
    """Alibaba's percent-encoding: RFC 3986, unreserved - _ . ~ kept."""
    return urllib.parse.quote(s, safe="-_.~")


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def v3_signed(port, api, secret=ACCESS_KEY_SECRET, sign=("accept", "user-agent"), omit=(),
              extra_signed=()):
    """Headers and body of a V3 POST signed as the official Python SDK does: every
    header it sets is listed in SignedHeaders (user-agent and accept included)."""
    body = "&".join("%s=%s" % (pe(k), pe(v)) for k, v in api.items()).encode()
    sha = hashlib.sha256(body).hexdigest()
    headers = {
        "host": "127.0.0.1:%d" % port,
        "x-acs-action": "GetPhoneEncryptionPublicKey",
        "x-acs-version": "2020-06-06",
        "x-acs-date": now_iso(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": sha,
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
        "user-agent": USER_AGENT,
    }
    names = [n for n in headers if (n in ("host", "content-type") or n.startswith("x-acs-")
                                    or n in sign) and n not in omit]
    names = sorted(set(names) | set(extra_signed))
    canonical = "POST\n/\n\n%s\n%s\n%s" % (
        "".join("%s:%s\n" % (n, headers.get(n, "").strip()) for n in names), ";".join(names),
        sha)
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    sig = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = "ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s" % (
        ACCESS_KEY_ID, ";".join(names), sig)
    return headers, body


def v1_query(api, method="GET", secret=ACCESS_KEY_SECRET):
    params = {
        "Action": "GetPhoneEncryptionPublicKey", "Format": "json", "Version": "2020-06-06",
        "Timestamp": now_iso(), "SignatureNonce": uuid.uuid4().hex,
        "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "AccessKeyId": ACCESS_KEY_ID,
    }
    params.update(api)
    canonical = "&".join("%s=%s" % (pe(k), pe(params[k])) for k in sorted(params))
    to_sign = "%s&%s&%s" % (method, pe("/"), pe(canonical))
    mac = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1)
    params["Signature"] = base64.b64encode(mac.digest()).decode()
    return "&".join("%s=%s" % (pe(k), pe(v)) for k, v in params.items())


def post(sim, headers, body):
    status, hdrs, data = request(sim.port, "/", method="POST", headers=headers, body=body)
    return status, hdrs, json.loads(data)


def post_chunked(port, headers, body, pieces=3):
    """A POST whose body is sent with Transfer-Encoding: chunked, as the Node SDK
    does (a raw socket, so nothing adds a Content-Length)."""
    head = "POST / HTTP/1.1\r\n" + "".join("%s: %s\r\n" % kv for kv in headers.items())
    head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    step = max(1, len(body) // pieces)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                      for i in range(0, len(body), step)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + chunks)
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    status_line, rest = data.split(b"\r\n", 1)
    payload = rest.split(b"\r\n\r\n", 1)[1]
    if b"transfer-encoding: chunked" in rest.split(b"\r\n\r\n", 1)[0].lower():
        out, p = b"", payload
        while True:
            size_text, p = p.split(b"\r\n", 1)
            size = int(size_text, 16)
            if size == 0:
                break
            out, p = out + p[:size], p[size + 2:]
        payload = out
    return int(status_line.split()[1]), json.loads(payload)


def self_test(directory):
    return subprocess.run([camtest.SIM, "--self-test", directory], capture_output=True,
                          text=True, timeout=60)


def vector_ids():
    with open(os.path.join(VECTORS, "signature-vectors.json")) as f:
        ids = [c["id"] for c in json.load(f)["cases"]]
    with open(os.path.join(VECTORS, "alibaba-doc-examples.json")) as f:
        doc = json.load(f)
    return ids + [c["id"] for c in doc["v3"]] + [c["id"] for c in doc["rpc_v1"]]


# ---- the self-test over the published vectors ---------------------------------------

def test_self_test_verifies_every_vector_case_and_refuses_tampered_copies():
    r = self_test(VECTORS)
    assert r.returncode == 0, r.stdout + r.stderr
    passed = [line.split()[2] for line in r.stdout.splitlines() if line.startswith("ok - ")]
    assert sorted(passed) == sorted(vector_ids()), (passed, vector_ids())
    assert "not ok" not in r.stdout, r.stdout
    assert "# %d passed, 0 failed" % len(passed) in r.stdout, r.stdout
    assert all("tampered copies refused" in line for line in r.stdout.splitlines()
               if line.startswith("ok - ")), r.stdout


def test_self_test_fails_when_a_vector_is_wrong():
    d = tmpdir()
    for name in ("signature-vectors.json", "alibaba-doc-examples.json"):
        shutil.copy(os.path.join(VECTORS, name), d)
    path = os.path.join(d, "signature-vectors.json")
    with open(path) as f:
        vectors = json.load(f)
    v3 = next(c for c in vectors["cases"] if c["kind"] == "ACS3-HMAC-SHA256")
    v3["output"]["authorization"] = v3["output"]["authorization"][:-1] + (
        "0" if v3["output"]["authorization"][-1] != "0" else "1")
    canon = next(c for c in vectors["cases"] if c["kind"] == "ACS3-HMAC-SHA256"
                 and c is not v3)
    canon["output"]["canonical_request"] = canon["output"]["canonical_request"].replace(
        "\n/\n", "\n//\n", 1)
    v1 = next(c for c in vectors["cases"] if c["kind"] == "HMAC-SHA1")
    v1["input"]["access_key_secret"] += "x"
    with open(path, "w") as f:
        json.dump(vectors, f)
    r = self_test(d)
    assert r.returncode != 0, r.stdout
    failed = sorted(line.split()[3].rstrip(":") for line in r.stdout.splitlines()
                    if line.startswith("not ok - "))
    assert failed == sorted([v3["id"], canon["id"], v1["id"]]), r.stdout
    assert "# %d passed, 3 failed" % (len(vector_ids()) - 3) in r.stdout, r.stdout

    empty = tmpdir()
    r = self_test(empty)
    assert r.returncode != 0 and "not ok - signature-vectors.json" in r.stdout, r.stdout


def test_simulator_links_no_daemon_object():
    lib = os.path.join(camtest.BUILD, "libcamskeyd.a")

    def symbols(path, *flags):
        out = subprocess.run(["nm", "--defined-only", *flags, path], capture_output=True,
                             text=True, timeout=60).stdout
        return {parts[2] for parts in (line.split() for line in out.splitlines())
                if len(parts) == 3}

    daemon = symbols(lib, "-g")
    assert "signer_v3" in daemon and "envelope_render_error" in daemon, sorted(daemon)[:20]
    shared = daemon & symbols(camtest.SIM)
    assert not shared, "camsim defines daemon symbols: %s" % sorted(shared)


# ---- requests signed here, as the SDKs send them ------------------------------------

def test_v3_follows_the_requests_signed_headers_user_agent_and_accept_included():
    sim = Sim()
    headers, body = v3_signed(sim.port, {"PhoneNumber": "8613912345678"})
    assert "accept;content-type;host;user-agent;x-acs" in headers["authorization"]
    status, _, doc = post(sim, headers, body)
    assert status == 200 and doc["Code"] == "OK", doc
    assert doc["Data"]["PhoneNumber"] == "8613912345678", doc
    assert doc["Data"]["EncryptionPublicKey"].startswith("-----BEGIN PUBLIC KEY-----"), doc
    # Signed as the daemon signs: only host, content-type and x-acs-*.
    headers, body = v3_signed(sim.port, {"PhoneNumber": "8613912345678"}, sign=())
    headers["user-agent"] = "changed after signing: not signed, so allowed"
    assert post(sim, headers, body)[0] == 200
    s = sim.stats()
    assert s["calls"] == 2 and s["signatures"]["v3"] == 2 and s["rejected"] == {}, s


def test_v3_chunked_body_is_verified():
    sim = Sim()
    headers, body = v3_signed(sim.port, {"CustSpaceId": "cams-x y*~", "PhoneNumber": "8613912345679"})
    status, doc = post_chunked(sim.port, headers, body)
    assert status == 200 and doc["Code"] == "OK", doc
    headers, body = v3_signed(sim.port, {"PhoneNumber": "8613912345679"})
    status, doc = post_chunked(sim.port, headers, body.replace(b"79", b"78"))
    assert status == 400 and doc["Code"] == "SignatureDoesNotMatch", doc
    s = sim.stats()
    assert s["calls"] == 1 and s["by_custspace"] == {"cams-x y*~": 1}, s


def test_tampered_v3_requests_are_refused():
    sim = Sim()
    api = {"PhoneNumber": "8613912345670"}
    cases = []

    headers, body = v3_signed(sim.port, api)
    cases.append(("altered body", headers, body.replace(b"70", b"71"), "SignatureDoesNotMatch"))
    headers, body = v3_signed(sim.port, api, secret="not-the-secret")
    cases.append(("wrong secret", headers, body, "SignatureDoesNotMatch"))
    headers, body = v3_signed(sim.port, api)
    headers["authorization"] = headers["authorization"][:-1] + (
        "0" if headers["authorization"][-1] != "0" else "1")
    cases.append(("corrupted signature", headers, body, "SignatureDoesNotMatch"))
    headers, body = v3_signed(sim.port, api)
    headers["user-agent"] = "changed after signing"
    cases.append(("signed user-agent changed", headers, body, "SignatureDoesNotMatch"))
    headers, body = v3_signed(sim.port, api, extra_signed=("x-acs-not-sent",))
    cases.append(("signed header missing", headers, body, "SignatureDoesNotMatch"))
    headers, body = v3_signed(sim.port, api, omit=("x-acs-date",))
    cases.append(("x-acs-date not signed", headers, body, "IncompleteSignature"))
    headers, body = v3_signed(sim.port, api)
    headers["x-acs-content-sha256"] = hashlib.sha256(b"other").hexdigest()
    cases.append(("content sha256 of another body", headers, body, "SignatureDoesNotMatch"))

    want = {}
    for what, headers, body, code in cases:
        status, _, doc = post(sim, headers, body)
        assert status == 400 and doc["Code"] == code, (what, status, doc)
        want[code] = want.get(code, 0) + 1
    s = sim.stats()
    assert s["calls"] == 0 and s["rejected"] == want, s


def test_v1_signed_here_is_accepted_and_tampering_refused():
    sim = Sim()
    query = v1_query({"CustSpaceId": "it's (1)! x*y~", "PhoneNumber": "8613912345671"})
    status, _, data = request(sim.port, "/?" + query)
    assert status == 200, data
    body = v1_query({"PhoneNumber": "8613912345672"}, method="POST")
    status, _, data = request(sim.port, "/", method="POST", body=body.encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, data
    query = v1_query({"PhoneNumber": "8613912345673"}).replace("8613912345673", "8613912345674")
    status, _, data = request(sim.port, "/?" + query)
    assert status == 400 and json.loads(data)["Code"] == "SignatureDoesNotMatch", data
    query = v1_query({"PhoneNumber": "8613912345673"}, secret="not-the-secret")
    status, _, data = request(sim.port, "/?" + query)
    assert status == 400 and json.loads(data)["Code"] == "SignatureDoesNotMatch", data
    s = sim.stats()
    assert s["signatures"]["v1"] == 2 and s["rejected"] == {"SignatureDoesNotMatch": 2}, s


# ---- processing time ----------------------------------------------------------------

def timed_call(sim, phone):
    t0 = time.time() * 1000
    status, _, data = request(sim.port, "/?" + v1_query({"PhoneNumber": phone}))
    return status, t0, time.time() * 1000, data


def test_processing_time_comes_after_the_arrival_is_counted():
    sim = Sim(extra=["--processing-ms", "400"])
    status, t0, t1, data = timed_call(sim, "8613912345680")
    assert status == 200, data
    s = sim.stats()
    arrival = s["last_arrival_ms"]
    assert s["calls"] == 1 and s["config"]["processing_min_ms"] == 400, s
    assert t1 - t0 >= 395, (t0, t1)
    assert arrival - t0 < 200, "the arrival is recorded before the processing time (%.0f ms)" % (
        arrival - t0)
    assert t1 - arrival >= 390, (arrival, t1)


def test_processing_time_does_not_block_other_connections():
    sim = Sim(extra=["--processing-ms", "600:600"])
    start = time.monotonic()
    results = parallel(4, lambda i: timed_call(sim, "861391234569%d" % i))
    elapsed = time.monotonic() - start
    assert [r[0] for r in results] == [200] * 4, results
    assert 0.59 <= elapsed < 1.8, "4 calls of 600 ms each took %.2fs" % elapsed
    arrivals = sim.stats()["arrivals_ms"]
    assert len(arrivals) == 4 and arrivals[-1] - arrivals[0] < 400, arrivals


def test_processing_time_is_settable_live_and_validated():
    sim = Sim()
    cfg = sim.configure(processing_ms="100:250")["config"]
    assert cfg["processing_min_ms"] == 100 and cfg["processing_max_ms"] == 250, cfg
    for i in range(4):
        status, t0, t1, data = timed_call(sim, "861391234560%d" % i)
        assert status == 200 and 95 <= t1 - t0 < 1500, (status, t1 - t0)
    cfg = sim.configure(processing_ms=0)["config"]
    assert cfg["processing_min_ms"] == 0 and cfg["processing_max_ms"] == 0, cfg
    for bad in ("250:100", "x", "1:60001", -1):
        status, _, data = request(sim.port, "/_sim/config", method="POST",
                                  body=json.dumps({"processing_ms": bad}).encode())
        assert status == 400 and not json.loads(data)["ok"], (bad, data)
    assert sim.control("GET", "/_sim/config")["config"]["processing_max_ms"] == 0
    r = subprocess.run([camtest.SIM, "--processing-ms", "9:3"], capture_output=True, text=True,
                       env=camtest.credentials_env(), timeout=20)
    assert r.returncode == 2 and "bad value" in r.stderr, (r.returncode, r.stderr)


camtest.main(globals())
