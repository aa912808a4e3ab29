"""Start-up, configuration and the fixed endpoints."""
import os
import subprocess

import camtest
from camtest import DAEMON, Daemon, Sim, credentials_env, tmpdir


def run(args, env=None, timeout=20):
    return subprocess.run([DAEMON] + args, env=env or credentials_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_prints_synopsis():
    r = run(["--help"])
    assert r.returncode == 0, r
    assert "camskeyd [--config FILE]" in r.stdout, r.stdout
    assert "--max-wait-ms" in r.stdout


def test_check_config_accepts_the_example_configuration():
    example = os.path.join(camtest.ROOT, "config", "camskeyd.conf")
    r = run(["--config", example, "--check-config"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "configuration ok" in r.stdout


def test_broken_config_names_file_line_and_key():
    d = tmpdir()
    path = os.path.join(d, "bad.conf")
    with open(path, "w") as f:
        f.write("# comment\nrate = 5\nttl = soon\n")
    r = run(["--config", path, "--check-config"])
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith(path + ":3: ttl: "), r.stderr


def test_flag_errors_name_the_flag():
    r = run(["--rate", "0", "--check-config"])
    assert r.returncode != 0
    assert "--rate" in r.stderr, r.stderr


def test_missing_credentials_stop_startup_with_a_clear_line():
    env = credentials_env()
    del env["ALIBABA_CLOUD_ACCESS_KEY_ID"]
    del env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    d = tmpdir()
    r = run(["--listen", "127.0.0.1:%d" % camtest.free_port(), "--cache",
             os.path.join(d, "c.db")], env=env)
    assert r.returncode != 0
    assert "credentials" in r.stderr.lower(), r.stderr
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in r.stderr, r.stderr


def test_health_ready_and_metrics_endpoints():
    sim = Sim()
    d = Daemon(sim.url)
    status, hdrs, body = d.get("/healthz")
    assert status == 200 and b"ok" in body
    status, _, _ = d.get("/readyz")
    assert status == 200
    m = d.metrics()
    assert m[("camskeyd_ready", ())] == 1
    assert ("camskeyd_build_info", (("version", "0.1.0"),)) in m


def test_unknown_path_and_wrong_method():
    sim = Sim()
    d = Daemon(sim.url)
    status, hdrs, body = d.get("/nope")
    assert status == 404 and b'"Proxy.NotFound"' in body, (status, body)
    status, hdrs, body = d.get("/v1/phone-numbers/8613912345678/encryption-public-key",
                               method="POST")
    assert status == 405 and b'"Proxy.MethodNotAllowed"' in body, (status, body)
    assert "GET" in hdrs.get("allow", "")


def test_listens_on_loopback_by_default():
    r = run(["--print-config"])
    assert r.returncode == 0
    assert "listen = \"127.0.0.1:8080\"" in r.stdout, r.stdout


def test_sigterm_stops_cleanly_with_exit_0():
    sim = Sim()
    d = Daemon(sim.url)
    assert d.stop() == 0
    assert "event=stopped" in d.logs()


camtest.main(globals())
