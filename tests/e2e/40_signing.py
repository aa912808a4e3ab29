"""Both signature kinds against the simulator's verification."""
import os
import subprocess

import camtest
from camtest import PHONE, Daemon, Sim, credentials_env, tmpdir


def test_v3_signature_accepted():
    sim = Sim()
    d = Daemon(sim.url, ["--signature", "v3"])
    assert d.key()[0] == 200
    assert sim.stats()["signatures"]["v3"] == 1


def test_v1_signature_accepted():
    sim = Sim()
    d = Daemon(sim.url, ["--signature", "v1"])
    status, _, doc = d.key(cust_space_id="cams-x9")
    assert status == 200, doc
    assert sim.stats()["signatures"]["v1"] == 1


def test_wrong_secret_is_a_clear_upstream_auth_error():
    sim = Sim()
    d = Daemon(sim.url, secret="not-the-right-secret")
    status, _, doc = d.key()
    assert status == 502, (status, doc)
    assert doc["Code"] == "SignatureDoesNotMatch", doc
    assert "rejected" in doc["Message"]
    assert "not-the-right-secret" not in d.logs()
    assert d.metric("camskeyd_upstream_calls_total", code="auth_error") == 1


def test_sts_token_is_sent_and_verified():
    env = credentials_env()
    env["ALIBABA_CLOUD_SECURITY_TOKEN"] = "CAIS-sts-token-e2e+/=="
    sim_env_token = env["ALIBABA_CLOUD_SECURITY_TOKEN"]
    sim = Sim(env=env)  # requires the token when its environment has one
    d = Daemon(sim.url, env=env)
    assert d.key()[0] == 200
    d2 = Daemon(sim.url)  # no token: refused by the simulator
    status, _, doc = d2.key()
    assert status == 502, (status, doc)
    assert sim_env_token not in d.logs()


def test_credentials_file_must_be_private():
    d = tmpdir()
    path = os.path.join(d, "creds")
    with open(path, "w") as f:
        f.write("access_key_id = %s\naccess_key_secret = %s\n"
                % (camtest.ACCESS_KEY_ID, camtest.ACCESS_KEY_SECRET))
    os.chmod(path, 0o644)
    env = credentials_env()
    del env["ALIBABA_CLOUD_ACCESS_KEY_ID"]
    del env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    r = subprocess.run([camtest.DAEMON, "--credentials-file", path, "--check-config"], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and path in r.stderr, r.stderr
    assert camtest.ACCESS_KEY_SECRET not in r.stderr
    os.chmod(path, 0o600)
    r = subprocess.run([camtest.DAEMON, "--credentials-file", path, "--check-config"], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    sim = Sim()
    dd = Daemon(sim.url, ["--credentials-file", path], env=env)
    assert dd.key(PHONE)[0] == 200


camtest.main(globals())
