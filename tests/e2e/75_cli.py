"""The command line an operator meets: --version, unknown commands and keys,
--check-config without credentials, cache purge with and without a running
daemon, cache warm's bad lines, failures, --failed, --quiet and the progress
bar (only on a terminal), and the refusal of a non-loopback http:// upstream."""
import os
import pty
import re
import subprocess

import camtest
from camtest import DAEMON, PHONE, Daemon, Sim, credentials_env, free_port, tmpdir


def run(args, env=None, timeout=60):
    return subprocess.run([DAEMON] + args, env=env or credentials_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_version_names_the_libraries_and_features():
    for flag in ("-V", "--version"):
        r = run([flag])
        assert r.returncode == 0, r
        assert r.stdout.startswith("camskeyd 0."), r.stdout
        for lib in ("libmicrohttpd ", "libcurl ", "OpenSSL ", "SQLite ", "cJSON ", "features: "):
            assert re.search(r"^%s\S" % re.escape(lib), r.stdout, re.M), (lib, r.stdout)


def test_unknown_command_and_cache_command_are_named():
    r = run(["purge", PHONE])
    assert r.returncode == 2 and 'unknown command "purge"' in r.stderr, r.stderr
    r = run(["cache", "lst"])
    assert r.returncode == 2 and 'unknown cache command "lst"' in r.stderr, r.stderr


def test_unknown_flag_and_key_get_a_did_you_mean():
    r = run(["--max-wiat-ms", "10", "--check-config"])
    assert r.returncode == 2, r
    assert "--max-wiat-ms: unknown option (did you mean --max-wait-ms?)" in r.stderr, r.stderr
    conf = os.path.join(tmpdir(), "c.conf")
    with open(conf, "w") as f:
        f.write("stale-if-eror = 10\n")
    r = run(["--config", conf, "--check-config"])
    assert r.returncode == 2, r
    assert '%s:1: stale-if-eror: unknown key (did you mean "stale-if-error"?)' % conf in r.stderr


def test_check_config_reports_credentials_apart_from_the_configuration():
    env = credentials_env()
    del env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    env["HOME"] = tmpdir()
    example = os.path.join(camtest.ROOT, "config", "camskeyd.conf")
    r = run(["--config", example, "--check-config"], env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0] == "configuration ok: " + example, r.stdout
    assert lines[1].startswith("credentials: not found (looked in "), r.stdout
    r = run(["--config", example, "--check-config"])
    assert r.returncode == 0, r
    assert "credentials: found (AccessKey ID %s)" % camtest.ACCESS_KEY_ID in r.stdout, r.stdout


def test_purge_without_a_daemon_says_so_and_purges_the_file():
    sim = Sim()
    d = Daemon(sim.url)
    assert d.key(PHONE)[0] == 200
    d.stop()
    r = run(["--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache, "cache", "purge", PHONE])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "no daemon answers at 127.0.0.1:%d" % d.port in r.stderr, r.stderr
    assert "purging the database file %s instead" % d.cache in r.stderr, r.stderr
    assert "purged %s from the database file %s" % (PHONE, d.cache) in r.stdout, r.stdout


def _warm_file(d, lines):
    path = os.path.join(d.dir, "numbers.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_warm_names_bad_lines_and_failed_numbers_and_writes_them_for_a_retry():
    sim = Sim()
    failing = "8613800000011"
    sim.fault(failing, "http500")
    d = Daemon(sim.url, ["--refresh-ahead", "0", "--negative-ttl", "0", "--stale-if-error", "0"])
    path = _warm_file(d, ["# batch", "8613911110001", "12ab", failing, "8613911110002,bad space"])
    failed = os.path.join(d.dir, "retry.txt")
    r = run(["--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache, "cache", "warm",
             "--failed", failed, path])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(r"%s:3: .*\"12ab\"" % re.escape(path), r.stderr), r.stderr
    assert re.search(r"%s:5: .*\"8613911110002,bad space\"" % re.escape(path), r.stderr), r.stderr
    assert "%s:4: %s failed: HTTP 502 Proxy.UpstreamError" % (path, failing) in r.stderr, r.stderr
    assert "ETA" not in r.stderr and "\r" not in r.stderr, r.stderr  # a pipe: no bar
    assert "warmed 4 of 4 numbers, 3 failed (listed in %s)" % failed in r.stdout, r.stdout
    with open(failed) as f:
        assert f.read() == failing + "\n"
    # the retry file is a warm file: once the upstream recovers it warms cleanly
    sim.clear_faults()
    r = run(["--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache, "cache", "warm",
             "--quiet", failed])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)


def test_warm_draws_the_progress_bar_only_on_a_terminal():
    sim = Sim()
    d = Daemon(sim.url, ["--refresh-ahead", "0"])
    path = _warm_file(d, ["86139222%05d" % i for i in range(4)])
    master, slave = pty.openpty()
    try:
        p = subprocess.run([DAEMON, "--listen", "127.0.0.1:%d" % d.port, "--cache", d.cache,
                            "cache", "warm", path], env=credentials_env(), stdout=subprocess.PIPE,
                           stderr=slave, stdin=subprocess.DEVNULL, timeout=60)
        os.close(slave)
        slave = None
        tty = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0, (p.stdout, tty)
    assert re.search(rb"\[#+\] 4/4 failed 0 ETA", tty), tty
    assert b"warmed 4 of 4 numbers, 0 failed" in p.stdout


def test_plain_http_upstream_off_loopback_is_refused_unless_allowed():
    cache = os.path.join(tmpdir(), "c.db")
    r = run(["--upstream", "http://192.0.2.10:9000", "--cache", cache,
             "--listen", "127.0.0.1:%d" % free_port()])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "upstream: http://192.0.2.10:9000 is plain http://" in r.stderr, r.stderr
    assert "allow-insecure-upstream = yes" in r.stderr, r.stderr
    r = run(["--upstream", "http://192.0.2.10:9000", "--allow-insecure-upstream",
             "--check-config"])
    assert r.returncode == 0, r.stderr


def test_a_second_daemon_on_the_same_cache_refuses_naming_the_file_and_pid():
    sim = Sim()
    d = Daemon(sim.url)
    r = run(["--listen", "127.0.0.1:%d" % free_port(), "--upstream", sim.url, "--cache", d.cache],
            timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    want = "camskeyd: cache: %s is in use by another camskeyd (PID %d holds the lock %s.lock)" % (
        d.cache, d.proc.pid, d.cache)
    assert want in r.stderr, r.stderr
    assert d.key(PHONE)[0] == 200  # the first one is untouched
    # the lock goes with the process, however it ends: a restart after a crash starts
    d.kill()
    d2 = Daemon(sim.url, cache=d.cache)
    assert d2.key(PHONE)[0] == 200


def test_metrics_show_reload_state_start_time_fds_and_rss():
    import signal
    import time
    sim = Sim()
    conf = os.path.join(tmpdir(), "c.conf")
    with open(conf, "w") as f:
        f.write("rate = 5\n")
    before = time.time()
    d = Daemon(sim.url, ["--config", conf])
    m = d.metrics()
    assert m[("camskeyd_config_last_reload_successful", ())] == 1, m
    start = m[("process_start_time_seconds", ())]
    assert before - 2 <= start <= time.time() + 1, start
    assert m[("camskeyd_config_last_reload_success_timestamp_seconds", ())] >= start
    assert 3 <= m[("process_open_fds", ())] < 1000, m[("process_open_fds", ())]
    assert m[("process_resident_memory_bytes", ())] > 1 << 20
    with open(conf, "w") as f:
        f.write("rate = fast\n")
    d.proc.send_signal(signal.SIGHUP)
    camtest.wait_until(lambda: d.metric("camskeyd_config_last_reload_successful") == 0, 10,
                       what="reload refused in the gauge")
    time.sleep(1.1)
    with open(conf, "w") as f:
        f.write("rate = 4\n")
    d.proc.send_signal(signal.SIGHUP)
    camtest.wait_until(lambda: d.metric("camskeyd_config_last_reload_successful") == 1, 10,
                       what="reload applied in the gauge")
    assert d.metric("camskeyd_config_last_reload_success_timestamp_seconds") > start


camtest.main(globals())
