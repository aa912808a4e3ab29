"""Socket activation (camskeyd.socket) and rotating the AccessKey by reload."""
import os
import shutil
import signal
import socket

import camtest
from camtest import PHONE, Daemon, Sim, credentials_env, free_port, tmpdir, wait_until


def test_socket_activation_serves_on_the_passed_socket():
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        camtest.skip("systemd-socket-activate not installed")
    sim = Sim()
    port = free_port()
    d = tmpdir()
    log = os.path.join(d, "camskeyd.log")
    # the tool passes on only the environment it is told to (-E)
    argv = [tool, "-l", "127.0.0.1:%d" % port, "-E", "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "-E", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "-E", "ASAN_OPTIONS",
            camtest.DAEMON, "--upstream", sim.url,
            "--cache", os.path.join(d, "c.db"), "--listen", "127.0.0.1:1"]
    proc = camtest.Process(argv, credentials_env(), log)

    def listening():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            return False
    # the first connection starts the daemon, which takes fd 3, not --listen
    wait_until(listening, 10, what="systemd-socket-activate to listen")
    status, hdrs, body = camtest.request(port, camtest.key_path(PHONE), timeout=20)
    assert status == 200, (status, body, proc.logs())
    assert "socket activation" in proc.logs(), proc.logs()
    assert camtest.request(port, "/healthz")[0] == 200


def test_sighup_rotates_the_access_key_from_the_credentials_file():
    sim = Sim()
    d = tmpdir()
    creds = os.path.join(d, "credentials")

    def write(secret):
        tmp = creds + ".tmp"
        with open(tmp, "w") as f:
            f.write("access_key_id = %s\naccess_key_secret = %s\n" % (camtest.ACCESS_KEY_ID, secret))
        os.chmod(tmp, 0o600)
        os.rename(tmp, creds)

    write("an-old-secret-that-was-rotated")
    env = credentials_env()
    del env["ALIBABA_CLOUD_ACCESS_KEY_ID"]
    del env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    daemon = Daemon(sim.url, ["--credentials-file", creds], env=env)
    status, _, doc = daemon.key(PHONE)
    assert status == 502 and doc["Code"] == "SignatureDoesNotMatch", (status, doc)
    write(camtest.ACCESS_KEY_SECRET)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=reloaded" in daemon.logs(), 10, what="the reload")
    status, _, doc = daemon.key(PHONE)
    assert status == 200, (status, doc)
    assert "an-old-secret" not in daemon.logs()
    # a broken credentials file is refused and the working key stays
    with open(creds, "w") as f:
        f.write("access_key_id = only-an-id\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=reload_refused" in daemon.logs(), 10, what="the refusal")
    assert daemon.key("8613900000077")[0] == 200


camtest.main(globals())
