"""Bad input is a 400 naming the parameter, and the daemon keeps serving."""
import camtest
from camtest import PHONE, Daemon, Sim


def test_bad_phone_numbers_are_400():
    sim = Sim()
    d = Daemon(sim.url)
    for phone in ["1234", "123456789012345678901", "+8613912345678", "86139abc5678",
                  "8613%2091234"]:
        status, _, body = d.get("/v1/phone-numbers/%s/encryption-public-key" % phone)
        assert status == 400, (phone, status, body)
        assert b'"InvalidParameter.PhoneNumber"' in body, body
    assert d.key()[0] == 200
    assert sim.stats()["calls"] == 1


def test_bad_cust_space_id_is_400():
    sim = Sim()
    d = Daemon(sim.url)
    for value in ["", "a%20b", "x" * 65, "a/b", "%00"]:
        status, _, body = d.get(camtest.key_path(PHONE) + "?CustSpaceId=" + value)
        assert status == 400, (value, status, body)
        assert b'"InvalidParameter.CustSpaceId"' in body, body
    assert sim.stats()["calls"] == 0


def test_bad_max_wait_is_400():
    sim = Sim()
    d = Daemon(sim.url)
    status, _, body = d.get(camtest.key_path(PHONE, max_wait_ms="soon"))
    assert status == 400 and b"max_wait_ms" in body, body


def test_daemon_keeps_serving_after_garbage():
    import socket
    sim = Sim()
    d = Daemon(sim.url)
    for junk in [b"GARBAGE\r\n\r\n", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n", b"\x00\x01\x02\r\n\r\n"]:
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            try:
                s.sendall(junk)
                s.recv(4096)
            except OSError:
                pass
    assert d.key()[0] == 200
    assert d.get("/healthz")[0] == 200


camtest.main(globals())
