"""The drop-in endpoint, with the official Node SDK (@alicloud/cams20200606,
pinned in tests/sdk) as the client: a team keeps its SDK, points its endpoint
at camskeyd and signs with the key pair camskeyd issued it. The simulator is
the oracle for upstream calls: a refused request costs none, and it never
sees a team's AccessKey."""
import json
import os
import signal
import socket
import subprocess

import camtest
from camtest import Daemon, Sim, key_path

CALL_JS = os.path.join(camtest.ROOT, "tests", "sdk", "call.js")
TEAM_ID = "CKpayments0001"
TEAM_SECRET = "team-secret-Zq81mWx0Pf"


def sdk_present():
    return os.path.isdir(os.path.join(camtest.ROOT, "tests", "sdk", "node_modules", "@alicloud"))


def write_secret(d, name, secret):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return path


def setup(extra_conf="", args=(), sim_quota=5, daemon_secret=camtest.ACCESS_KEY_SECRET):
    d = camtest.tmpdir()
    secret_file = write_secret(d, "payments.secret", TEAM_SECRET)
    conf = os.path.join(d, "camskeyd.conf")
    with open(conf, "w") as f:
        f.write('[client "payments"]\naccess-key-id = %s\naccess-key-secret-file = %s\n'
                'weight = 3\n%s' % (TEAM_ID, secret_file, extra_conf))
    sim = Sim(quota=sim_quota)
    daemon = Daemon(sim.url, ["--config", conf] + list(args), secret=daemon_secret)
    return sim, daemon, d, secret_file, conf


def sdk(endpoint_port, *args, key_id=TEAM_ID, secret_file=None):
    argv = ["node", CALL_JS, "--endpoint", "127.0.0.1:%d" % endpoint_port, "--key-id", key_id,
            "--secret-file", secret_file] + list(args)
    out = subprocess.run(argv, capture_output=True, timeout=60)
    assert out.returncode == 0, (argv, out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def test_v3_and_v1_with_and_without_cust_space_id_give_the_simulators_key():
    if not sdk_present():
        camtest.skip("tests/sdk/node_modules missing (make deps installs it)")
    # The direct calls share the simulator's quota with camskeyd's: room for both.
    sim, d, tmp, secret_file, _ = setup(sim_quota=100)
    sim_secret = write_secret(tmp, "sim.secret", camtest.ACCESS_KEY_SECRET)
    cases = [("v3", None), ("v3", "cams-team1"), ("v1", None), ("v1", "cams-team2")]
    for i, (sig, space) in enumerate(cases):
        phone = "861380000%04d" % i
        extra = ["--phone", phone, "--signature", sig]
        if space:
            extra += ["--cust-space-id", space]
        got = sdk(d.port, *extra, secret_file=secret_file)
        assert got["ok"], (sig, space, got)
        assert got["body"]["Code"] == "OK" and got["body"]["Data"]["PhoneNumber"] == phone, got
        # The oracle: the same SDK asking the simulator itself, with its own AccessKey.
        direct = sdk(sim.port, *extra, key_id=camtest.ACCESS_KEY_ID, secret_file=sim_secret)
        assert direct["ok"], direct
        assert got["body"]["Data"]["EncryptionPublicKey"] == \
            direct["body"]["Data"]["EncryptionPublicKey"], (sig, space)
        assert got["body"]["Data"]["EncryptionPublicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    st = sim.stats()
    # 4 through camskeyd, 4 direct; nothing refused: the simulator never saw the team's key.
    assert st["calls"] == 8 and st["rejected"] == {}, st
    assert d.metric("camskeyd_client_upstream_calls_total", client="payments") == 4


def test_refused_requests_get_alibabas_codes_and_cost_no_upstream_call():
    if not sdk_present():
        camtest.skip("tests/sdk/node_modules missing (make deps installs it)")
    sim, d, tmp, secret_file, _ = setup()
    wrong = write_secret(tmp, "wrong.secret", "not-the-secret")
    phone = ["--phone", "8613800001111"]
    cases = [
        (sdk(d.port, *phone, secret_file=wrong), "SignatureDoesNotMatch", 400),
        (sdk(d.port, *phone, key_id="CKnobody", secret_file=secret_file),
         "InvalidAccessKeyId.NotFound", 404),
        (sdk(d.port, *phone, "--date-offset-s", "1200", secret_file=secret_file),
         "InvalidTimeStamp.Expired", 400),
        (sdk(d.port, *phone, "--action", "SendChatappMessage", secret_file=secret_file),
         "InvalidAction.NotFound", 404),
        (sdk(d.port, *phone, "--version", "2099-01-01", secret_file=secret_file),
         "InvalidAction.NotFound", 404),
        (sdk(d.port, *phone, "--security-token", "STS.example", secret_file=secret_file),
         "Proxy.UnsupportedSecurityToken", 400),
        (sdk(d.port, *phone, "--signature", "v1", secret_file=wrong), "SignatureDoesNotMatch", 400),
    ]
    for got, code, status in cases:
        assert not got["ok"] and got["code"] == code and got["statusCode"] == status, (code, got)
        assert got.get("requestId"), got
    assert "serves only GetPhoneEncryptionPublicKey" in cases[3][0]["message"], cases[3][0]
    assert sim.stats()["calls"] == 0, sim.stats()
    # A replayed request: the first is answered, the identical second refused.
    got = sdk(d.port, "--phone", "8613800002222", "--replay", secret_file=secret_file)
    assert got["first"]["ok"], got
    assert got["second"]["code"] == "SignatureNonceUsed" and got["second"]["statusCode"] == 400, got
    assert sim.stats()["calls"] == 1
    # No secret in any log line.
    assert TEAM_SECRET not in d.logs()


def test_one_key_through_both_doors_costs_one_upstream_call():
    if not sdk_present():
        camtest.skip("tests/sdk/node_modules missing (make deps installs it)")
    sim, d, _, secret_file, _ = setup()
    status, hdrs, doc = d.key("8613800003333", cust_space_id="cams-both")
    assert status == 200, (status, doc)
    got = sdk(d.port, "--phone", "8613800003333", "--cust-space-id", "cams-both",
              secret_file=secret_file)
    assert got["ok"] and got["body"]["Data"]["EncryptionPublicKey"] == \
        doc["Data"]["EncryptionPublicKey"], got
    got = sdk(d.port, "--phone", "8613800004444", "--signature", "v1", secret_file=secret_file)
    assert got["ok"], got
    assert d.key("8613800004444")[1]["cache-status"].startswith("camskeyd; hit"), "SDK miss not cached"
    assert sim.stats()["calls"] == 2, sim.stats()


def test_reload_rotates_a_teams_secret():
    if not sdk_present():
        camtest.skip("tests/sdk/node_modules missing (make deps installs it)")
    sim, d, tmp, secret_file, _ = setup()
    old = write_secret(tmp, "old.secret", TEAM_SECRET)
    assert sdk(d.port, "--phone", "8613800005555", secret_file=old)["ok"]
    write_secret(tmp, "payments.secret", "rotated-secret-77")
    new = write_secret(tmp, "new.secret", "rotated-secret-77")
    d.proc.send_signal(signal.SIGHUP)
    camtest.wait_until(lambda: "event=reloaded" in d.logs(), 10, what="the reload")
    assert sdk(d.port, "--phone", "8613800005555", secret_file=old)["code"] == "SignatureDoesNotMatch"
    assert sdk(d.port, "--phone", "8613800005555", secret_file=new)["ok"]
    # A secret file others can read refuses the reload; the running keys stay.
    os.chmod(secret_file, 0o644)
    d.proc.send_signal(signal.SIGHUP)
    camtest.wait_until(lambda: "event=reload_refused" in d.logs(), 10, what="the refused reload")
    assert "payments.secret" in d.logs() and "rotated-secret-77" not in d.logs()
    assert sdk(d.port, "--phone", "8613800005555", secret_file=new)["ok"]


def test_quota_waits_and_camskeyds_own_credential_failures_read_right_in_the_sdk():
    if not sdk_present():
        camtest.skip("tests/sdk/node_modules missing (make deps installs it)")
    # One token every 10 s: two node processes one after the other took over a
    # second under ASan in CI, and at rate 1 the second call found a new token.
    sim, d, _, secret_file, _ = setup(args=["--rate", "0.1", "--max-wait-ms", "100"])
    assert sdk(d.port, "--phone", "8613800008001", secret_file=secret_file)["ok"]
    got = sdk(d.port, "--phone", "8613800008002", secret_file=secret_file)
    assert got["code"] == "Proxy.QuotaWait" and got["statusCode"] == 503, got
    # camskeyd's own upstream AccessKey is wrong: the team's key pair is fine.
    sim2, d2, _, secret_file2, _ = setup(daemon_secret="not-the-upstream-secret")
    got = sdk(d2.port, "--phone", "8613800008003", secret_file=secret_file2)
    assert got["statusCode"] == 502 and got["code"] == "Proxy.UpstreamCredentialError", got
    assert "SignatureDoesNotMatch" in got["message"], got
    # The REST door keeps the upstream Code, as its contract says.
    status, _, doc = d2.key("8613800008004")
    assert status == 502 and doc["Code"] == "SignatureDoesNotMatch", (status, doc)


def raw(port, data, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closed():
    sim, d, _, _, _ = setup()
    smuggle = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
               b"GET " + key_path("8613800006666").encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    out = raw(d.port, smuggle)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b"Proxy.AmbiguousLength" in out, out
    # Nothing behind it was served: one answer, and the connection closed.
    assert out.count(b"HTTP/1.1 ") == 1, out
    assert sim.stats()["calls"] == 0


def test_an_oversized_body_is_refused_without_verification_or_upstream_call():
    sim, d, _, _, _ = setup()
    body = b"PhoneNumber=8613800007777&Pad=" + b"x" * 9000
    out = raw(d.port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
              b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert out.startswith(b"HTTP/1.1 400") and b"Proxy.RequestTooLarge" in out, out[:300]
    # An unsigned request: Alibaba's own answer, as an envelope the SDK reads.
    out = raw(d.port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 25\r\n"
              b"Connection: close\r\n\r\nPhoneNumber=8613800007777")
    assert out.startswith(b"HTTP/1.1 400") and b'"Code":"MissingParameter"' in out, out[:400]
    assert b"x-acs-request-id" in out.lower() and b"application/json;charset=utf-8" in out, out
    assert sim.stats()["calls"] == 0


camtest.main(globals())
