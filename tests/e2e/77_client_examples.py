"""The caller examples in docs/clients/ run against the daemon as written: they
get the key, revalidate it with If-None-Match (304), and wait Retry-After on
a 503 instead of failing."""
import os
import shutil
import subprocess

import camtest
from camtest import Daemon, Sim

CLIENTS = os.path.join(camtest.ROOT, "docs", "clients")
PHONES = ["8613500000301", "8613500000302"]


def run_example(argv, d, cwd=CLIENTS, timeout=120):
    env = dict(os.environ, CAMSKEYD_URL="http://127.0.0.1:%d" % d.port)
    out = subprocess.run(argv + PHONES, capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=timeout)
    assert out.returncode == 0, (argv, out.returncode, out.stdout, out.stderr)
    return out.stdout


def check(output, sim, calls_before):
    for phone in PHONES:
        assert "%s: VALID key, ETag \"" % phone in output, output
        assert "%s: revalidated: unchanged (304)" % phone in output, output
    assert output.count("-----BEGIN PUBLIC KEY-----") == 2, output
    # The second cold key met a full second of quota: it waited Retry-After.
    assert "Proxy.QuotaWait, retrying after" in output, output
    assert sim.stats()["calls"] == calls_before + 2, sim.stats()


def setup():
    sim = Sim()
    # One call a second and no wait: the second key is refused once, then retried.
    d = Daemon(sim.url, ["--rate", "1", "--max-wait-ms", "0"])
    return sim, d


def test_python_example():
    sim, d = setup()
    check(run_example(["python3", "get_key.py"], d), sim, 0)


def test_node_example():
    if not shutil.which("node"):
        camtest.skip("node is not installed")
    sim, d = setup()
    check(run_example(["node", "get_key.js"], d), sim, 0)


def test_java_example():
    if not shutil.which("javac") or not shutil.which("java"):
        camtest.skip("javac/java are not installed")
    sim, d = setup()
    build = camtest.tmpdir()
    r = subprocess.run(["javac", "-d", build, os.path.join(CLIENTS, "GetKey.java")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    check(run_example(["java", "-cp", build, "GetKey"], d), sim, 0)


def test_go_example():
    if not shutil.which("go"):
        camtest.skip("go is not installed")
    sim, d = setup()
    check(run_example(["go", "run", "get_key.go"], d, timeout=300), sim, 0)


camtest.main(globals())
