"""camtest -- the end-to-end harness: run the real build/camskeyd against the
CAMS simulator (build/camsim) on 127.0.0.1, on free ports, and assert on HTTP
answers, the daemon's /metrics and the simulator's /_sim/stats.

Every process a test starts is stopped when the test ends (also on failure);
every wait is bounded in time. A scenario file defines functions named
test_* and ends with camtest.main(globals()); each prints "ok - name",
"not ok - name" or, when it called skip(reason), "ok - name # SKIP reason"
(tests/run-tests.sh counts the three apart: a skip is never a pass).
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
DAEMON = os.path.join(BUILD, "camskeyd")
SIM = os.path.join(BUILD, "camsim")
KEYS_DIR = os.path.join(ROOT, "tests", "data", "sim-keys")

ACCESS_KEY_ID = "LTAI5tE2eTestKey0001"
ACCESS_KEY_SECRET = "e2eSecretDoNotLeak7Qx9Zr2Lw8Vb"
PHONE = "8613912345678"

_cleanups = []
_all_logs = []  # every log file this process's daemons wrote


class Skipped(Exception):
    """Raised by skip(): the test could not run here."""


def skip(reason):
    """End the current test as skipped (a missing tool, not root, ...)."""
    raise Skipped(reason)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def credentials_env(secret=ACCESS_KEY_SECRET, key_id=ACCESS_KEY_ID):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("ALIBABA_CLOUD_") or k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
                                                   "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY",
                                                   "WATCHDOG_USEC", "WATCHDOG_PID"):
            del env[k]
    env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = key_id
    env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = secret
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return env


def tmpdir():
    d = tempfile.mkdtemp(prefix="camskeyd-e2e-")
    _cleanups.append(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def request(port, path, method="GET", headers=None, timeout=30.0, body=None):
    """One HTTP request; returns (status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def key_path(phone, cust_space_id=None, **query):
    path = "/v1/phone-numbers/%s/encryption-public-key" % phone
    params = []
    if cust_space_id is not None:
        params.append("CustSpaceId=%s" % cust_space_id)
    params += ["%s=%s" % (k, v) for k, v in query.items()]
    return path + ("?" + "&".join(params) if params else "")


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "AddressSanitizer:DEADLYSIGNAL")


def _die_with_parent():
    """In the child: SIGKILL it if the test process dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Process:
    def __init__(self, argv, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        _cleanups.append(self.finish)

    def kill(self):
        """SIGKILL (crash tests); no exit checks."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()

    def finish(self):
        """End of test: stop gracefully so sanitizers report, then check their verdict."""
        killed = self.proc.returncode is not None and self.proc.returncode < 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("%s did not stop on SIGTERM within 20s" % self.proc.args[0])
        if not self.log.closed:
            self.log.close()
        text = self.logs()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                i = text.index(marker)
                raise AssertionError("%s: sanitizer report in %s:\n%s"
                                     % (self.proc.args[0], self.log_path, text[max(0, i - 200):i + 3000]))
        if not killed and self.proc.returncode not in (0, -signal.SIGKILL, 1, 2):
            raise AssertionError("%s exited with %s" % (self.proc.args[0], self.proc.returncode))

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("process did not stop within %.0fs" % timeout)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Sim(Process):
    """The CAMS simulator."""

    def __init__(self, quota=5, latency_ms=0, jitter_ms=0, secret=ACCESS_KEY_SECRET, extra=(),
                 env=None):
        d = tmpdir()
        argv = [SIM, "--listen", "127.0.0.1:0", "--quota", str(quota), "--keys-dir", KEYS_DIR,
                "--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms)] + list(extra)
        super().__init__(argv, env or credentials_env(secret=secret), os.path.join(d, "camsim.log"))
        line = self._readline(10.0)
        if not line.startswith("camsim listening on "):
            raise AssertionError("simulator did not start: %r\n%s" % (line, self.logs()))
        self.port = int(line.rsplit(":", 1)[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def _readline(self, timeout):
        result = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))
        t.daemon = True
        t.start()
        t.join(timeout)
        return result[0].decode().strip() if result else ""

    def control(self, method, path, doc=None):
        body = json.dumps(doc).encode() if doc is not None else None
        status, _, data = request(self.port, path, method=method, body=body,
                                  headers={"Content-Type": "application/json"} if body else {})
        if status >= 300:
            raise AssertionError("sim %s %s -> %d %s" % (method, path, status, data[:200]))
        return json.loads(data) if data.strip() else {}

    def stats(self):
        return self.control("GET", "/_sim/stats")

    def fault(self, phone, mode, count=-1, **extra):
        doc = {"phone": phone, "mode": mode, "count": count}
        doc.update(extra)
        return self.control("POST", "/_sim/faults", doc)

    def clear_faults(self):
        return self.control("DELETE", "/_sim/faults")

    def configure(self, **settings):
        return self.control("POST", "/_sim/config", settings)

    def reset(self):
        return self.control("POST", "/_sim/reset")


RELAY = os.path.join(ROOT, "tests", "bench", "relay.py")


class Relay(Process):
    """tests/bench/relay.py in front of a port: holds requests up_ms (MIN, MAX)
    on their way in (an arrival delay the client cannot see) and answers
    down_ms on their way back (as if the server took that long)."""

    def __init__(self, target_port, up_ms=(0, 0), down_ms=(0, 0), seed=1):
        d = tmpdir()
        argv = [sys.executable, RELAY, "--target", "127.0.0.1:%d" % target_port,
                "--up-delay-ms", "%g:%g" % tuple(up_ms),
                "--down-delay-ms", "%g:%g" % tuple(down_ms), "--seed", str(seed)]
        super().__init__(argv, dict(os.environ), os.path.join(d, "relay.log"))
        line = Sim._readline(self, 10.0)
        if not line.startswith("relay listening on "):
            raise AssertionError("relay did not start: %r\n%s" % (line, self.logs()))
        self.port = int(line.rsplit(":", 1)[1])
        self.url = "http://127.0.0.1:%d" % self.port


class Daemon(Process):
    """build/camskeyd against an upstream URL, on a free port, with its own cache."""

    def __init__(self, upstream, args=(), cache=None, env=None, port=None, wait=True,
                 secret=ACCESS_KEY_SECRET):
        self.dir = tmpdir()
        self.port = port or free_port()
        self.cache = cache or os.path.join(self.dir, "cache.db")
        argv = [DAEMON, "--listen", "127.0.0.1:%d" % self.port, "--upstream", upstream,
                "--cache", self.cache] + list(args)
        # Daemon logs outlive the test: 99_secrets.py reads every one of them.
        log_dir = os.path.join(BUILD, "test-logs", "daemons")
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(log_dir, "%s-%d-%d.log" % (
            os.path.splitext(os.path.basename(sys.argv[0]))[0], os.getpid(), len(_all_logs)))
        _all_logs.append(log_path)
        super().__init__(argv, env or credentials_env(secret=secret), log_path)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=15.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited with %s:\n%s" % (self.proc.returncode,
                                                                   self.logs()))
            try:
                return request(self.port, "/readyz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, timeout, what="daemon /readyz")

    def get(self, path, headers=None, timeout=60.0, method="GET"):
        return request(self.port, path, method=method, headers=headers, timeout=timeout)

    def key(self, phone=PHONE, cust_space_id=None, headers=None, **query):
        status, hdrs, body = self.get(key_path(phone, cust_space_id, **query), headers=headers)
        doc = json.loads(body) if body.strip() else None
        return status, hdrs, doc

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200, status
        return parse_metrics(body.decode())

    def settled_metric(self, name, expect, timeout=5.0, **labels):
        """The metric once it equals expect (a value, or a predicate of it).
        Request outcomes are counted at each request's teardown, just after
        its answer went out, so a scrape right after an answer may be early."""
        test = expect if callable(expect) else (lambda v: v == expect)
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric(name, **labels)
            if test(value) or time.monotonic() >= deadline:
                return value
            time.sleep(0.02)

    def metric(self, name, **labels):
        want = tuple(sorted(labels.items()))
        for (n, l), v in self.metrics().items():
            if n == name and tuple(sorted(l)) == want:
                return v
        return None


    def readyz(self, timeout=5.0):
        """(status, parsed JSON body or None) of /readyz."""
        status, _, body = self.get("/readyz", timeout=timeout)
        try:
            doc = json.loads(body) if body.strip() else None
        except ValueError:
            doc = None
        return status, doc

    def alive(self):
        return self.proc.poll() is None


# ---- Redis (issue #14): a private redis-server and several daemons on it -------------

def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisError(Exception):
    """An error reply (-ERR ...) from the server."""


class _RespReader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError("bad RESP line %r" % line)


class RedisServer:
    """A private redis-server on a UNIX socket in a temp dir (no TCP port, no
    persistence), stopped by PID when the test ends, also on failure. The test
    is skipped when redis-server is not installed. url is what --redis takes:
    unix:///.../redis.sock, or with tcp=True redis://127.0.0.1:PORT (a free
    loopback port; the socket stays for cli()). password: --requirepass (cli()
    authenticates with it)."""

    def __init__(self, extra=(), tcp=False, password=None):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            skip("redis-server not installed (make deps)")
        self.dir = tmpdir()
        self.sock = os.path.join(self.dir, "redis.sock")
        self.password = password
        self.tcp_port = free_port() if tcp else 0
        self.url = ("redis://127.0.0.1:%d" % self.tcp_port) if tcp else "unix://" + self.sock
        self.extra = list(extra)
        if password is not None:
            self.extra += ["--requirepass", password]
        self.proc = None
        self.log = None
        self.starts = 0
        self.stopped = False
        self._start()
        _cleanups.append(self.finish)

    def _start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.starts += 1
        self.log_path = os.path.join(self.dir, "redis-%d.log" % self.starts)
        argv = [self.binary, "--port", str(self.tcp_port), "--bind", "127.0.0.1",
                "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--loglevel", "notice"] + self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.stopped = False

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s:\n%s"
                                     % (self.proc.returncode, self.logs()))
            try:
                return self.cli("PING", timeout=1.0) == "PONG"
            except (OSError, ConnectionError):
                return False
        wait_until(up, 10, what="redis-server on %s" % self.sock)

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, timeout=5.0):
        """One command over the socket; the reply (str, int, bytes, list, None,
        or a RedisError instance for an error reply). OSError on a dead or
        stalled server (after timeout)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.sock)
            reader = _RespReader(s)
            if self.password is not None:
                s.sendall(_resp_encode(["AUTH", self.password]))
                auth = reader.reply()
                if isinstance(auth, RedisError):
                    return auth
            s.sendall(_resp_encode(args))
            return reader.reply()

    def keys(self, pattern="*"):
        return sorted(k.decode() for k in self.cli("KEYS", pattern))

    def kill9(self):
        """SIGKILL the server (its socket file stays behind, as after a crash)."""
        if self.stopped:
            self.cont()
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()

    def restart(self):
        """Start a fresh server on the same socket (empty: no persistence);
        kills the current one first if it still runs."""
        self.kill9()
        self._start()

    def stop(self):
        """SIGSTOP: the socket accepts connections, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def finish(self):
        if self.proc is None:
            return
        if self.alive():
            if self.stopped:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()


def redis_daemons(n, upstream, redis, args=(), host_prefix="h", extra_env=None, host_args=None,
                  **kw):
    """n daemons, each on its own port with its own SQLite file and
    --host-id hN (h1..hn), all on one upstream and one Redis (same AccessKey,
    so the same default quota scope). Started one after the other, each ready.
    host_args: {index from 0: [more arguments for that host only]}."""
    out = []
    for i in range(1, n + 1):
        more = list((host_args or {}).get(i - 1, ()))
        env = None
        if extra_env:
            env = credentials_env()
            env.update(extra_env)
        out.append(Daemon(upstream, ["--redis", redis.url, "--host-id", "%s%d" % (host_prefix, i)]
                          + list(args) + more, env=env, **kw))
    return out


def parse_metrics(text):
    """Prometheus text format -> {(name, ((label, value), ...)): float}. Strict."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            if line.startswith("# TYPE ") or line.startswith("# HELP ") or not line:
                continue
            raise AssertionError("bad comment line: %r" % line)
        name_labels, value = line.rsplit(" ", 1)
        labels = ()
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            assert rest.endswith("}"), line
            pairs = []
            for part in rest[:-1].split(","):
                if not part:
                    continue
                k, v = part.split("=", 1)
                assert v.startswith('"') and v.endswith('"'), line
                pairs.append((k, v[1:-1]))
            labels = tuple(sorted(pairs))
        else:
            name = name_labels
        out[(name, labels)] = float(value)
    return out


def parallel(n, fn, timeout=120.0):
    """Run fn(i) for i in range(n) on n threads at once; returns results in order."""
    results = [None] * n
    errors = []
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise AssertionError("parallel requests did not finish within %.0fs" % timeout)
    if errors:
        raise errors[0]
    return results


def cleanup():
    """Stop everything the test started; returns the errors found while stopping."""
    errors = []
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            errors.append(e)
            traceback.print_exc(file=sys.stdout)
    return errors


def main(namespace):
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
    only = os.environ.get("TEST_ONLY")
    failed = 0
    for name, fn in tests:
        if only and only not in name:
            continue
        start = time.monotonic()
        ok = True
        skipped = None
        try:
            fn()
        except Skipped as e:
            skipped = " ".join(str(e).split()) or "no reason given"
        except Exception:  # noqa: BLE001 - a failing test is reported, the rest go on
            ok = False
            traceback.print_exc(file=sys.stdout)
        if cleanup():
            ok = False  # a crash, a sanitizer report or a hung stop fails the test
        if ok and skipped:
            print("ok - %s # SKIP %s" % (name, skipped), flush=True)
        elif ok:
            print("ok - %s (%.1fs)" % (name, time.monotonic() - start), flush=True)
        else:
            failed += 1
            print("not ok - %s" % name, flush=True)
    sys.exit(1 if failed else 0)
