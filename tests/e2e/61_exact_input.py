"""Every value the daemon reads is taken whole (issue #10 part 2).

A %00 must not shorten a value (CustSpaceId=abc%00xyz is not space "abc"),
a percent-encoded NUL in the phone is a bad phone number, query parameter
names are exact and unknown ones refused, max_wait_ms=0 is a value, and
Cache-Control: max-age=N means what RFC 9111 says. The simulator's counters
are the oracle: refused input makes no upstream call.
"""
import json
import socket
import time

import camtest
from camtest import PHONE, Daemon, Sim

KEY = "/v1/phone-numbers/%s/encryption-public-key" % PHONE


def code_of(body):
    return json.loads(body)["Code"]


def raw_request(port, data, timeout=5.0):
    """Send raw bytes; returns the status (int) or "closed"."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
    if not buf.startswith(b"HTTP/1."):
        return "closed"
    return int(buf.split(b" ", 2)[1])


def assert_refused(d, path, status, code, headers=None):
    got, _, body = d.get(path, headers=headers)
    assert got == status, (path, got, body)
    assert code_of(body) == code, (path, body)
    return body


def test_percent_encoded_nul_in_cust_space_id_never_fetches_another_space():
    sim = Sim()
    d = Daemon(sim.url)
    # the space "abc" is cached: a truncating reader would serve it
    assert d.key(cust_space_id="abc")[0] == 200
    calls = sim.stats()["calls"]
    for value in ["abc%00xyz", "abc%00", "%00abc", "abc%00%00"]:
        assert_refused(d, KEY + "?CustSpaceId=" + value, 400, "InvalidParameter.CustSpaceId")
    s = sim.stats()
    assert s["calls"] == calls, s["calls"]
    assert set(s["by_custspace"]) == {"abc"}, s["by_custspace"]


def test_percent_encoded_nul_in_the_phone_is_a_bad_phone_number():
    sim = Sim()
    d = Daemon(sim.url)
    for path in ["/v1/phone-numbers/86139%0012345678/encryption-public-key",
                 "/v1/phone-numbers/8613912345678%00/encryption-public-key",
                 "/v1/phone-numbers/%008613912345678/encryption-public-key",
                 "/v1/phone-numbers/86139%2b12345678/encryption-public-key"]:
        assert_refused(d, path, 400, "InvalidParameter.PhoneNumber")
    # the same request line as tests/data/hostile/03_percent_encoded_nul_in_path.http
    status = raw_request(d.port, b"GET /v1/phone-numbers/86139%0012345678/encryption-public-key"
                                 b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 400, status
    # percent-encoded digits are the digits
    status, _, body = d.get("/v1/phone-numbers/%38613912345678/encryption-public-key")
    assert status == 200, (status, body)
    assert sim.stats()["calls"] == 1


def test_nul_in_a_query_value_is_400_without_an_upstream_call():
    sim = Sim()
    d = Daemon(sim.url)
    assert_refused(d, KEY + "?max_wait_ms=10%000", 400, "InvalidParameter.MaxWaitMs")
    assert_refused(d, KEY + "?max_wait_ms=%00", 400, "InvalidParameter.MaxWaitMs")
    assert_refused(d, KEY + "?CustSpaceId=abc&max_wait_ms=5%00", 400, "InvalidParameter.MaxWaitMs")
    assert sim.stats()["calls"] == 0, sim.stats()["calls"]
    # A raw NUL byte inside a header line: libmicrohttpd 0.9.75 stores the
    # value as a C string cut at the NUL, so the daemon sees (and validates)
    # only what came before it; it must still answer sanely and keep serving.
    for name in [b"X-Client-Id", b"Cache-Control", b"If-None-Match", b"Authorization"]:
        req = (b"GET /v1/phone-numbers/8613900000099/encryption-public-key HTTP/1.1\r\n"
               b"Host: 127.0.0.1\r\n" + name + b": abc\x00def\r\n\r\n")
        status = raw_request(d.port, req)
        assert status in (200, 400, "closed"), (name, status)
    calls = sim.stats()["calls"]
    assert set(sim.stats()["by_phone"]) <= {"8613900000099"}, sim.stats()["by_phone"]
    assert d.key()[0] == 200
    assert sim.stats()["calls"] == calls + 1


def test_query_parameter_names_are_exact_and_unknown_ones_refused():
    sim = Sim()
    d = Daemon(sim.url)
    for query in ["custspaceid=abc", "CUSTSPACEID=abc", "CustSpaceID=abc", "Cust%00SpaceId=abc",
                  "CustSpaceId%00=abc", "PhoneNumber=8613912345678", "max-wait-ms=5",
                  "MaxWaitMs=5", "x=1", "CustSpaceId=abc&foo"]:
        body = assert_refused(d, KEY + "?" + query, 400, "Proxy.UnknownParameter")
        assert b"unknown query parameter" in body, body
    body = assert_refused(d, KEY + "?custspaceid=abc", 400, "Proxy.UnknownParameter")
    assert b'"custspaceid' in body or b'\\"custspaceid\\"' in body, body
    # a space named twice, or named without a value, is no space at all
    assert_refused(d, KEY + "?CustSpaceId=a&CustSpaceId=b", 400, "InvalidParameter.CustSpaceId")
    assert_refused(d, KEY + "?CustSpaceId", 400, "InvalidParameter.CustSpaceId")
    assert_refused(d, KEY + "?CustSpaceId=", 400, "InvalidParameter.CustSpaceId")
    assert_refused(d, KEY + "?max_wait_ms=1&max_wait_ms=2", 400, "InvalidParameter.MaxWaitMs")
    assert_refused(d, KEY + "?max_wait_ms", 400, "InvalidParameter.MaxWaitMs")
    assert sim.stats()["calls"] == 0, sim.stats()["calls"]
    # the exact names still work
    assert d.key(cust_space_id="abc", max_wait_ms=5000)[0] == 200
    s = sim.stats()
    assert s["calls"] == 1 and set(s["by_custspace"]) == {"abc"}, s


def test_max_wait_ms_zero_is_accepted_as_do_not_wait():
    sim = Sim()
    d = Daemon(sim.url)
    # a cached key needs no quota: answered
    assert d.key()[0] == 200
    status, hdrs, doc = d.key(max_wait_ms=0)
    assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), (status, doc)
    # a miss is either answered on a free slot or refused at once; never a 400
    t0 = time.monotonic()
    status, hdrs, doc = d.key("8613900000001", max_wait_ms=0)
    elapsed = time.monotonic() - t0
    assert status in (200, 503), (status, doc)
    if status == 503:
        assert doc["Code"] == "Proxy.QuotaWait", doc
    assert elapsed < 2.0, elapsed


def test_cache_control_max_age_zero_revalidates_like_no_cache():
    sim = Sim()
    d = Daemon(sim.url)
    assert d.key()[0] == 200
    assert sim.stats()["calls"] == 1
    time.sleep(1.1)  # the entry is now at least 1 s old
    status, hdrs, _ = d.key(headers={"Cache-Control": "max-age=0"})
    assert status == 200, status
    assert not hdrs["cache-status"].startswith("camskeyd; hit"), hdrs["cache-status"]
    assert sim.stats()["calls"] == 2
    # without it the stored answer is served
    status, hdrs, _ = d.key()
    assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    assert sim.stats()["calls"] == 2


def test_cache_control_max_age_n_revalidates_only_entries_older_than_n():
    sim = Sim()
    d = Daemon(sim.url)
    assert d.key()[0] == 200
    # young enough: served from the cache
    status, hdrs, _ = d.key(headers={"Cache-Control": "max-age=600"})
    assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    assert sim.stats()["calls"] == 1
    time.sleep(2.2)
    status, hdrs, _ = d.key(headers={"Cache-Control": "max-age=1"})
    assert status == 200, status
    assert not hdrs["cache-status"].startswith("camskeyd; hit"), hdrs["cache-status"]
    assert int(hdrs["age"]) <= 1, hdrs["age"]
    assert sim.stats()["calls"] == 2


def test_max_age_zero_callers_share_one_upstream_call():
    sim = Sim(latency_ms=300)
    d = Daemon(sim.url)
    assert d.key()[0] == 200
    time.sleep(1.1)
    results = camtest.parallel(8, lambda i: d.key(headers={"Cache-Control": "max-age=0"}))
    assert all(r[0] == 200 for r in results), [r[0] for r in results]
    assert sim.stats()["calls"] == 2, sim.stats()["calls"]


camtest.main(globals())
