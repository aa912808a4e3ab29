"""Upstream errors reach the caller with the contract's status."""
import camtest
from camtest import PHONE, Daemon, Sim

CASES = [
    ("Product.Unsubscript", 403),
    ("Ram.PermissionDeny", 403),
    ("Unknown.ResourceOwnerId", 404),
]


def test_documented_error_codes_map_to_contract_statuses():
    sim = Sim()
    d = Daemon(sim.url)
    for i, (code, want) in enumerate(CASES):
        phone = "8613800000%03d" % i
        sim.fault(phone, "error", code=code)
        status, hdrs, doc = d.key(phone)
        assert status == want, (code, status, doc)
        assert doc["Code"] == code and doc["RequestId"], doc
        # definitive errors are cached briefly: a retry loop costs no quota
        status2, hdrs2, doc2 = d.key(phone)
        assert status2 == want and hdrs2["cache-status"].startswith("camskeyd; hit"), hdrs2
    assert sim.stats()["calls"] == len(CASES)


def test_limit_control_is_retried_and_slows_the_limiter():
    sim = Sim()
    sim.fault(PHONE, "error", code="System.LimitControl", count=1)
    d = Daemon(sim.url, ["--max-wait-ms", "10000"])
    status, _, doc = d.key()
    assert status == 200, doc
    assert sim.stats()["calls"] == 2
    assert d.metric("camskeyd_upstream_throttles_total") == 1
    assert d.metric("camskeyd_upstream_retries_total") == 1
    assert d.metric("camskeyd_limiter_rate") < 5


def test_limit_control_past_the_retries_is_503():
    sim = Sim()
    sim.fault(PHONE, "error", code="System.LimitControl")
    d = Daemon(sim.url, ["--max-wait-ms", "3000", "--upstream-retries", "1"])
    status, hdrs, doc = d.key()
    assert status == 503 and doc["Code"] == "System.LimitControl", (status, doc)
    assert int(hdrs["retry-after"]) >= 1


def test_server_errors_and_garbage_are_502_and_never_cached():
    sim = Sim()
    d = Daemon(sim.url)
    for i, mode in enumerate(["http500", "malformed", "missing_fields", "bad_pem", "reset",
                              "oversized"]):
        phone = "8613700000%03d" % i
        sim.fault(phone, mode)
        status, _, doc = d.key(phone)
        assert status == 502 and doc["Code"] == "Proxy.UpstreamError", (mode, status, doc)
        sim.clear_faults()
        status, hdrs, doc = d.key(phone)
        assert status == 200, (mode, status, doc)
        assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (mode, hdrs)


def test_server_error_envelopes_are_502_naming_the_upstream_code_and_request_id():
    sim = Sim()
    d = Daemon(sim.url)
    for i, (code, http_status) in enumerate([("InternalError", 500),
                                             ("ServiceUnavailable", 503)]):
        phone = "8613600000%03d" % i
        sim.fault(phone, "error", code=code, status=http_status, count=1)
        status, hdrs, doc = d.key(phone)
        assert status == 502 and doc["Code"] == "Proxy.UpstreamError", (code, status, doc)
        assert code in doc["Message"] and "HTTP %d" % http_status in doc["Message"], doc
        # the upstream's RequestId is named in Message; ours is the envelope's
        upstream_id = doc["Message"].rsplit("RequestId ", 1)[1]
        assert upstream_id and upstream_id != doc["RequestId"], doc
        assert doc["RequestId"] == hdrs["x-request-id"], (doc, hdrs)
        # never cached: the next call goes upstream and gets the key
        status, hdrs, doc = d.key(phone)
        assert status == 200 and hdrs["cache-status"] == "camskeyd; fwd=miss; stored", (code, doc)
    assert d.metric("camskeyd_upstream_calls_total", code="http_error") == 2
    assert d.metric("camskeyd_upstream_calls_total", code="other_code") == 0


def test_upstream_timeout_is_504():
    sim = Sim()
    sim.fault(PHONE, "hang")
    d = Daemon(sim.url, ["--upstream-timeout-ms", "500", "--upstream-connect-timeout-ms", "200"])
    status, _, doc = d.key()
    assert status == 504 and doc["Code"] == "Proxy.UpstreamTimeout", (status, doc)


def test_unreachable_upstream_is_502():
    port = camtest.free_port()
    d = Daemon("http://127.0.0.1:%d" % port)
    status, _, doc = d.key()
    assert status == 502 and doc["Code"] == "Proxy.UpstreamError", doc
    assert "unreachable" in doc["Message"]


camtest.main(globals())
