"""Reload (SIGHUP) defects of issue #10 part 3.

A reload compares the new file with what is running (not with the last file
it read), names the keys that need a restart, logs a refusal reason on one
line, and a raised queue-max takes effect.
"""
import os
import signal

import camtest
from camtest import (DAEMON, Daemon, Process, Sim, credentials_env, free_port, request, tmpdir,
                     wait_until)


def write_config(path, **keys):
    with open(path, "w") as f:
        f.write("[camskeyd]\n")
        for k, v in keys.items():
            f.write("%s = %s\n" % (k.replace("_", "-"), v))


def hup(d):
    """SIGHUP; wait for the outcome line; returns every line the reload logged."""
    offset = len(d.logs())
    d.proc.send_signal(signal.SIGHUP)

    def outcome():
        lines = d.logs()[offset:].splitlines()
        if any("event=reloaded" in l or "event=reload_refused" in l for l in lines):
            return lines
        return None
    return wait_until(outcome, 10, what="reload outcome")


class FileDaemon(Process):
    """The daemon with every setting, listen included, from its config file."""

    def __init__(self, conf, port):
        self.port = port
        log_dir = os.path.join(camtest.BUILD, "test-logs", "daemons")
        os.makedirs(log_dir, exist_ok=True)
        log = os.path.join(log_dir, "71_reload-%d-%d.log" % (os.getpid(), len(camtest._all_logs)))
        camtest._all_logs.append(log)
        super().__init__([DAEMON, "--config", conf], credentials_env(), log)

        def ready():
            assert self.proc.poll() is None, self.logs()
            try:
                return request(self.port, "/readyz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, 15, what="daemon /readyz")


def test_putting_a_restart_only_key_back_is_quiet_and_the_warning_names_the_keys():
    sim = Sim()
    d0 = tmpdir()
    conf = os.path.join(d0, "camskeyd.conf")
    port = free_port()
    base = dict(listen="127.0.0.1:%d" % port, upstream=sim.url,
                cache=os.path.join(d0, "cache.db"), rate=2)
    write_config(conf, **base)
    d = FileDaemon(conf, port)

    # listen and threads changed: both need a restart, and the warning says which
    write_config(conf, **dict(base, listen="127.0.0.1:%d" % free_port(), threads=3, rate=3))
    lines = hup(d)
    partial = [l for l in lines if "event=reload_partial" in l]
    assert len(partial) == 1, lines
    assert "keys=listen,threads" in partial[0], partial[0]
    assert any("event=reloaded" in l and "rate=3.000" in l for l in lines), lines
    assert request(port, "/healthz")[0] == 200  # still on the old address

    # put them back: nothing needs a restart any more, so no warning
    write_config(conf, **dict(base, rate=4))
    lines = hup(d)
    assert not any("reload_partial" in l for l in lines), lines
    assert any("event=reloaded" in l and "rate=4.000" in l for l in lines), lines

    # the same file again: quiet too
    lines = hup(d)
    assert not any("reload_partial" in l for l in lines), lines
    assert d.stop() == 0


def test_refusal_reason_is_one_line_without_a_trailing_newline():
    sim = Sim()
    conf = os.path.join(tmpdir(), "camskeyd.conf")
    write_config(conf, rate=2)
    d = Daemon(sim.url, ["--config", conf])
    with open(conf, "w") as f:
        f.write("[camskeyd]\nrate = fast\nburst = many\n")
    lines = hup(d)
    refused = [l for l in lines if "event=reload_refused" in l]
    assert len(refused) == 1, lines
    line = refused[0]
    reason = line.split("reason=", 1)[1]
    assert "\\n" not in reason, line        # no escaped newline inside or at the end
    assert "rate" in reason and "burst" in reason and "; " in reason, line
    assert reason.rstrip().endswith('"'), line
    assert d.stop() == 0


def test_raising_queue_max_on_reload_takes_effect():
    sim = Sim()
    conf = os.path.join(tmpdir(), "camskeyd.conf")
    write_config(conf, rate=1, queue_max=1, max_wait_ms=30000)
    d = Daemon(sim.url, ["--config", conf])

    def burst(prefix, n):
        """A warm-up miss spends the slot, then n cold keys at once."""
        assert d.key("%s00" % prefix)[0] == 200
        phones = ["%s%02d" % (prefix, i + 1) for i in range(n)]
        return camtest.parallel(n, lambda i: d.key(phones[i], max_wait_ms=30000), timeout=60)

    results = burst("86137000000", 3)
    codes = sorted((r[2] or {}).get("Code") for r in results)
    assert codes.count("Proxy.QueueFull") >= 1, codes  # queue-max 1 refuses some

    write_config(conf, rate=1, queue_max=10, max_wait_ms=30000)
    lines = hup(d)
    assert any("event=reloaded" in l for l in lines), lines
    results = burst("86137100000", 3)
    got = [(r[0], (r[2] or {}).get("Code")) for r in results]
    assert all(s == 200 for s, _ in got), got
    assert d.stop() == 0


camtest.main(globals())
