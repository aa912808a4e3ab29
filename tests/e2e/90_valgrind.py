"""A scenario under valgrind memcheck: no errors, no definite or indirect leaks.

Runs only against the release build (valgrind and ASan do not mix).
"""
import os
import shutil

import camtest
from camtest import PHONE, Daemon, Sim


def test_a_scenario_under_valgrind_has_no_errors_and_no_leaks():
    if "sanitize" in camtest.BUILD:
        camtest.skip("sanitizer build (valgrind and ASan do not mix)")
    if not shutil.which("valgrind"):
        camtest.skip("valgrind not installed")
    sim = Sim()
    log = os.path.join(camtest.tmpdir(), "valgrind.log")
    wrapper = os.path.join(camtest.tmpdir(), "camskeyd-valgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --quiet --error-exitcode=99 --leak-check=full "
                "--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect "
                "--track-fds=no --log-file=%s %s \"$@\"\n" % (log, camtest.DAEMON))
    os.chmod(wrapper, 0o755)
    saved = camtest.DAEMON
    camtest.DAEMON = wrapper
    try:
        d = Daemon.__new__(Daemon)
        Daemon.__init__(d, sim.url, ["--threads", "1"], wait=False)
        d.wait_ready(timeout=60)
    finally:
        camtest.DAEMON = saved
    assert d.key()[0] == 200                       # miss
    assert d.key()[0] == 200                       # hit
    sim.fault("8613800000001", "error", code="Ram.PermissionDeny")
    assert d.key("8613800000001")[0] == 403        # negative
    sim.fault("8613800000002", "malformed")
    assert d.key("8613800000002")[0] == 502        # upstream garbage
    assert d.get("/v1/phone-numbers/12/encryption-public-key")[0] == 400
    assert d.get("/metrics")[0] == 200
    rc = d.stop(timeout=60)
    assert os.path.exists(log), "valgrind did not run"
    with open(log) as f:
        report = f.read()
    assert rc == 0, "valgrind exit %s:\n%s" % (rc, report[-4000:])
    assert "definitely lost" not in report and "Invalid" not in report, report[-4000:]


camtest.main(globals())
