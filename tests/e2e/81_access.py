"""Access control: loopback by default, UNIX sockets, bearer tokens, remote binds."""
import hashlib
import http.client
import json
import os
import socket
import stat
import subprocess

import camtest
from camtest import DAEMON, PHONE, Daemon, Sim, credentials_env, free_port, tmpdir, wait_until


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def unix_request(path, target, headers=None, timeout=10.0):
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        conn.request("GET", target, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def run(args, env=None, timeout=20):
    return subprocess.run([DAEMON] + args, env=env or credentials_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def token_config(d, clients):
    """A config file with one [client] section per (name, token, weight)."""
    path = os.path.join(d, "camskeyd.conf")
    with open(path, "w") as f:
        f.write("[camskeyd]\n")
        for name, token, weight in clients:
            f.write('\n[client "%s"]\ntoken-sha256 = %s\nweight = %d\n'
                    % (name, hashlib.sha256(token.encode()).hexdigest(), weight))
    return path


def test_default_listen_address_is_loopback():
    r = run(["--print-config"])
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip().startswith("listen")]
    assert lines == ['listen = "127.0.0.1:8080"'], lines
    r = run(["--print-config"])
    assert "allow-remote = no" in r.stdout, r.stdout


def test_unix_socket_serves_requests_with_the_configured_mode():
    sim = Sim()
    d = tmpdir()
    sock = os.path.join(d, "s.sock")
    daemon = Daemon(sim.url, ["--listen", "unix:" + sock, "--unix-socket-mode", "0600"],
                    wait=False)

    def ready():
        if daemon.proc.poll() is not None:
            raise AssertionError("daemon exited with %s:\n%s" % (daemon.proc.returncode,
                                                               daemon.logs()))
        try:
            return unix_request(sock, "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(ready, 15, what="daemon /readyz on the UNIX socket")
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(stat.S_IMODE(st.st_mode))
    status, hdrs, body = unix_request(sock, camtest.key_path(PHONE))
    assert status == 200, (status, body)
    doc = json.loads(body)
    assert doc["Data"]["PhoneNumber"] == PHONE, doc
    status, hdrs, body = unix_request(sock, camtest.key_path(PHONE))
    assert status == 200 and hdrs["cache-status"].startswith("camskeyd; hit"), hdrs
    assert sim.stats()["calls"] == 1
    # the TCP port of the harness is not served: the UNIX socket replaced it
    try:
        camtest.request(daemon.port, "/healthz", timeout=2)
        tcp_served = True
    except OSError:
        tcp_served = False
    assert not tcp_served, "a TCP listener answered although listen was a UNIX socket"
    assert daemon.stop() == 0
    assert not os.path.exists(sock), "the UNIX socket was left behind on exit"



def test_unix_socket_group_is_applied_and_an_unknown_group_stops_startup():
    import grp
    sim = Sim()
    d = tmpdir()
    sock = os.path.join(d, "g.sock")
    group = grp.getgrnam("nogroup")
    daemon = Daemon(sim.url, ["--listen", "unix:" + sock, "--unix-socket-group", "nogroup"],
                    wait=False)
    wait_until(lambda: os.path.exists(sock) or daemon.proc.poll() is not None, 15,
               what="the UNIX socket")
    wait_until(lambda: unix_request(sock, "/healthz", timeout=2)[0] == 200, 15,
               what="daemon on the UNIX socket")
    st = os.lstat(sock)
    assert st.st_gid == group.gr_gid, (st.st_gid, group.gr_gid)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(stat.S_IMODE(st.st_mode))
    assert daemon.stop() == 0
    r = subprocess.run([DAEMON, "--listen", "unix:" + os.path.join(d, "x.sock"),
                        "--unix-socket-group", "no-such-group-camskeyd", "--upstream", sim.url,
                        "--cache", os.path.join(d, "c.db")],
                       env=credentials_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "x.sock" in r.stderr, (r.returncode, r.stderr)

def test_bearer_tokens_are_required_when_clients_have_them():
    sim = Sim()
    d = tmpdir()
    conf = token_config(d, [("a", "tok-a", 1)])
    daemon = Daemon(sim.url, ["--config", conf])
    path = camtest.key_path(PHONE)

    status, hdrs, body = daemon.get(path)
    assert status == 401, (status, body)
    doc = json.loads(body)
    assert doc["Code"] == "Proxy.Unauthorized" and doc["RequestId"], doc
    assert hdrs.get("www-authenticate", "").lower().startswith("bearer"), hdrs

    for bad in ["Bearer tok-b", "Bearer ", "Bearer tok-a ", "bearer TOK-A", "Basic dG9rLWE=",
                "Bearer " + "x" * 4000, "tok-a"]:
        status, hdrs, body = daemon.get(path, headers={"Authorization": bad})
        assert status == 401, (bad[:40], status, body)
        assert json.loads(body)["Code"] == "Proxy.Unauthorized", body
        assert "www-authenticate" in hdrs, hdrs
    # X-Client-Id does not stand in for a token
    status, _, _ = daemon.get(path, headers={"X-Client-Id": "a"})
    assert status == 401, status
    # refused callers cost no quota
    assert sim.stats()["calls"] == 0, sim.stats()

    status, hdrs, body = daemon.get(path, headers={"Authorization": "Bearer tok-a"})
    assert status == 200, (status, body)
    assert json.loads(body)["Data"]["PhoneNumber"] == PHONE
    assert sim.stats()["calls"] == 1
    # a cache hit needs the token too
    status, _, _ = daemon.get(path)
    assert status == 401, status
    # health and readiness stay open for probes
    assert daemon.get("/healthz")[0] == 200
    # 1 without a token, 7 bad tokens, 1 X-Client-Id, 1 hit without a token
    assert daemon.settled_metric("camskeyd_unauthorized_total", 10) == 10, daemon.metrics()
    # Every request is counted whatever its answer: the 401s too.
    assert daemon.settled_metric("camskeyd_http_requests_total", lambda v: (v or 0) >= 10) >= 10


def test_non_loopback_listen_without_tokens_is_refused():
    port = free_port()
    d = tmpdir()
    r = run(["--listen", "0.0.0.0:%d" % port, "--upstream", "http://127.0.0.1:9",
             "--cache", os.path.join(d, "c.db")])
    assert r.returncode != 0, (r.returncode, r.stdout, r.stderr)
    assert "listen" in r.stderr, r.stderr
    assert "0.0.0.0" in r.stderr, r.stderr
    r = run(["--listen", "0.0.0.0:%d" % port, "--check-config"])
    assert r.returncode != 0 and "listen" in r.stderr, r.stderr


def test_non_loopback_listen_with_tokens_is_accepted():
    d = tmpdir()
    conf = token_config(d, [("a", "tok-a", 1)])
    r = run(["--config", conf, "--listen", "0.0.0.0:%d" % free_port(), "--check-config"])
    assert r.returncode == 0, r.stderr


def test_allow_remote_starts_and_warns():
    # Bound on all addresses but only ever talked to over 127.0.0.1.
    sim = Sim()
    port = free_port()
    daemon = Daemon(sim.url, ["--listen", "0.0.0.0:%d" % port, "--allow-remote", "yes"],
                    port=port)
    assert daemon.get("/healthz")[0] == 200
    assert daemon.stop() == 0
    lines = [l for l in daemon.logs().splitlines() if "event=listen_remote" in l]
    assert len(lines) == 1, daemon.logs()
    assert "level=warn" in lines[0], lines[0]
    # a loopback listen does not warn
    d2 = Daemon(sim.url)
    assert d2.stop() == 0
    assert "listen_remote" not in d2.logs()


def test_ipv4_mapped_loopback_is_loopback_for_config_and_listener_alike():
    # issue #9.7: config.c took [::ffff:127.0.0.1] for loopback, http.c did not
    # and warned listen_remote. One parser now answers for both.
    sim = Sim()
    port = free_port()
    daemon = Daemon(sim.url, ["--listen", "[::ffff:127.0.0.1]:%d" % port], port=port)
    assert daemon.get("/healthz")[0] == 200  # reached over 127.0.0.1
    assert daemon.stop() == 0
    assert "listen_remote" not in daemon.logs(), daemon.logs()
    r = run(["--listen", "[::ffff:10.0.0.1]:%d" % port, "--check-config"])
    assert r.returncode != 0 and "not a loopback address" in r.stderr, r.stderr


camtest.main(globals())
