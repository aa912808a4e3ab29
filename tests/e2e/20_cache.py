"""The cache: miss then hit, headers, expiry, restart, keys by CustSpaceId."""
import time

import camtest
from camtest import PHONE, Daemon, Sim


def test_miss_then_hit_calls_upstream_once():
    sim = Sim()
    d = Daemon(sim.url)
    status, hdrs, doc = d.key()
    assert status == 200, (status, doc)
    assert doc["Code"] == "OK"
    assert doc["Data"]["PhoneNumber"] == PHONE
    assert doc["Data"]["EncryptionPublicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    assert doc["Data"]["EncryptionPublicKeyStatus"] == "VALID"
    assert hdrs["content-type"] == "application/json"
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    status2, hdrs2, doc2 = d.key()
    assert status2 == 200 and doc2 == doc
    assert hdrs2["cache-status"].startswith("camskeyd; hit; ttl="), hdrs2
    assert sim.stats()["calls"] == 1
    assert d.settled_metric("camskeyd_requests_total", 1, result="hit") == 1
    assert d.settled_metric("camskeyd_requests_total", 1, result="miss") == 1


def test_etag_and_if_none_match():
    sim = Sim()
    d = Daemon(sim.url)
    _, hdrs, _ = d.key()
    etag = hdrs["etag"]
    assert etag.startswith('"') and len(etag) == 66, etag
    status, hdrs2, body = d.get(camtest.key_path(PHONE), headers={"If-None-Match": etag})
    assert status == 304 and body == b"", status
    assert hdrs2["etag"] == etag
    status, _, _ = d.get(camtest.key_path(PHONE), headers={"If-None-Match": '"other"'})
    assert status == 200
    assert "age" in hdrs2
    # A long list matches too: the ETag is looked for in the whole header.
    others = ", ".join('"%064x"' % i for i in range(1, 9))
    status, _, _ = d.get(camtest.key_path(PHONE), headers={"If-None-Match": others + ", " + etag})
    assert status == 304, status
    status, _, _ = d.get(camtest.key_path(PHONE), headers={"If-None-Match": others})
    assert status == 200, status


def test_expiry_triggers_a_new_upstream_call():
    sim = Sim()
    d = Daemon(sim.url, ["--ttl", "1", "--stale-while-revalidate", "0", "--stale-if-error", "0"])
    assert d.key()[0] == 200
    time.sleep(2.2)
    status, hdrs, _ = d.key()
    assert status == 200
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert sim.stats()["calls"] == 2


def test_cache_survives_a_restart():
    sim = Sim()
    d = Daemon(sim.url)
    _, _, doc = d.key()
    assert d.stop() == 0
    d2 = Daemon(sim.url, cache=d.cache)
    status, hdrs, doc2 = d2.key()
    assert status == 200 and doc2 == doc
    assert hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    assert sim.stats()["calls"] == 1


def test_cust_space_id_is_part_of_the_key():
    sim = Sim()
    d = Daemon(sim.url)
    assert d.key(cust_space_id="cams-a1")[0] == 200
    assert d.key(cust_space_id="cams-b2")[0] == 200
    _, hdrs, _ = d.key(cust_space_id="cams-a1")
    assert hdrs["cache-status"].startswith("camskeyd; hit")
    assert sim.stats()["calls"] == 2


def test_non_valid_status_is_cached_briefly():
    sim = Sim()
    sim.fault(PHONE, "status", status="MISMATCH")
    d = Daemon(sim.url, ["--status-ttl", "1", "--stale-while-revalidate", "0",
                         "--stale-if-error", "0"])
    status, hdrs, doc = d.key()
    assert status == 200 and doc["Data"]["EncryptionPublicKeyStatus"] == "MISMATCH"
    _, hdrs, _ = d.key()
    assert hdrs["cache-status"].startswith("camskeyd; hit; ttl=")
    time.sleep(2.2)
    d.key()
    assert sim.stats()["calls"] == 2


def test_no_cache_request_revalidates_upstream():
    sim = Sim()
    d = Daemon(sim.url)
    d.key()
    _, hdrs, _ = d.key(headers={"Cache-Control": "no-cache"})
    assert hdrs["cache-status"] == "camskeyd; fwd=miss; stored", hdrs
    assert sim.stats()["calls"] == 2


camtest.main(globals())
