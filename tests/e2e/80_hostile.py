"""Hostile clients: every resource a caller can hold is bounded, and garbage never
breaks the daemon (connections, timeouts, URI and header sizes, the queue, and a
corpus of raw hostile requests in tests/data/hostile/)."""
import glob
import json
import os
import re
import socket
import time

import camtest
from camtest import PHONE, Daemon, Sim, parallel

CORPUS = os.path.join(camtest.ROOT, "tests", "data", "hostile")
KEY_PATH = camtest.key_path(PHONE)


def connect(port, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock, timeout=3.0):
    """Read what a raw request gets. Returns (statuses, raw bytes, outcome) where
    outcome is "answered" (at least one complete response), "closed" (the
    daemon closed without answering) or "silent" (nothing within timeout,
    connection still open). After a complete response it lingers briefly for
    pipelined ones, then stops: keep-alive connections are not waited out."""
    data = b""
    deadline = time.monotonic() + timeout
    eof = False
    linger_until = None
    while True:
        now = time.monotonic()
        end = linger_until if linger_until is not None else deadline
        if now >= end:
            break
        sock.settimeout(max(0.01, end - now))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:  # reset by the daemon: same as a close
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
        if complete_responses(data) and linger_until is None:
            linger_until = min(deadline, time.monotonic() + 0.3)
    statuses = complete_responses(data)
    if statuses:
        return statuses, data, "answered"
    return [], data, "closed" if eof else "silent"


def complete_responses(data):
    """Status codes of the complete HTTP/1.x responses at the start of data."""
    statuses = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            break
        head = data[:head_end].decode("latin-1")
        m = re.match(r"HTTP/1\.[01] (\d{3}) ", head)
        assert m, "not an HTTP/1.x status line: %r" % head[:80]
        m2 = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
        length = int(m2.group(1)) if m2 else 0
        if len(data) < head_end + 4 + length:
            break
        statuses.append(int(m.group(1)))
        data = data[head_end + 4 + length:]
    return statuses


def send_raw(port, payload, timeout=3.0):
    with connect(port, timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the daemon may close before reading everything
        return read_answer(s, timeout)


def assert_serving(d, sim_calls_ok=True):
    assert d.proc.poll() is None, "daemon died:\n" + d.logs()[-3000:]
    status, _, doc = d.key()
    assert status == 200 and doc["Data"]["PhoneNumber"] == PHONE, (status, doc)
    status, _, body = d.get("/healthz", timeout=10)
    assert status == 200, (status, body)


# ---- connections and timeouts ----------------------------------------------------------

def test_connection_limit_holds_and_idle_floods_do_not_lock_out_callers():
    sim = Sim()
    d = Daemon(sim.url, ["--max-connections", "20", "--connection-timeout", "2"])
    assert d.key()[0] == 200
    socks = []
    try:
        for _ in range(40):
            socks.append(connect(d.port))
        # While 40 idle sockets are open, a good caller is eventually served:
        # idle connections are dropped after the connection timeout.
        start = time.monotonic()
        status, _, doc = d.key()
        waited = time.monotonic() - start
        assert status == 200, (status, doc)
        print("# served after %.1fs behind 40 idle sockets (limit 20)" % waited)
        assert d.proc.poll() is None
        # the idle sockets were closed by the daemon (bounded count of live ones)
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
            except OSError:
                closed += 1
        assert closed >= 20, "only %d of 40 idle sockets were closed" % closed
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert_serving(d)
    # more connections than the limit at once, each making a request
    results = parallel(40, lambda i: d.get("/healthz", timeout=60)[0])
    assert results == [200] * 40, results
    assert_serving(d)


def test_idle_connection_is_closed_after_the_connection_timeout():
    sim = Sim()
    d = Daemon(sim.url, ["--connection-timeout", "2"])
    with connect(d.port, timeout=15) as s:
        start = time.monotonic()
        try:
            data = s.recv(1)
        except OSError:
            data = b""
        elapsed = time.monotonic() - start
    assert data == b"", data
    assert elapsed < 12, "idle connection kept %.1fs with --connection-timeout 2" % elapsed
    assert_serving(d)


def test_slowloris_client_is_disconnected():
    # One header byte a second: each byte resets an idle timer, so only a
    # deadline for the whole request head stops it.
    sim = Sim()
    d = Daemon(sim.url, ["--connection-timeout", "2"])
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    start = time.monotonic()
    disconnected_after = None
    with connect(d.port, timeout=5) as s:
        for i in range(len(head)):
            if time.monotonic() - start > 14:
                break
            try:
                s.send(head[i:i + 1])
                s.settimeout(1.0)
                if s.recv(4096) == b"":
                    disconnected_after = time.monotonic() - start
                    break
            except socket.timeout:
                continue
            except OSError:
                disconnected_after = time.monotonic() - start
                break
    assert_serving(d)
    assert disconnected_after is not None and disconnected_after < 12, (
        "a client trickling one header byte per second was still connected after %.0fs "
        "(--connection-timeout 2)" % (time.monotonic() - start))


# ---- sizes -------------------------------------------------------------------------------

def test_ten_kib_uri_is_refused():
    sim = Sim()
    d = Daemon(sim.url)
    for target in [KEY_PATH + "?pad=" + "a" * 10240,
                   "/v1/phone-numbers/" + "8" * 10240 + "/encryption-public-key",
                   "/" + "x" * 10240]:
        payload = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % target).encode()
        statuses, raw, outcome = send_raw(d.port, payload)
        assert_serving(d)
        if target.startswith(KEY_PATH):
            # a lookup over LIMIT_URI_MAX_BYTES (2048, bounds.h) is 414, never served
            assert outcome == "closed" or statuses[:1] == [414], (
                "a %d-byte lookup URI got %s; bounds.h: URIs over 2048 bytes get 414"
                % (len(target), statuses[:1] or outcome))
        else:
            assert outcome == "closed" or statuses[0] in (400, 404, 414), (
                target[:40], outcome, raw[:200])
    assert sim.stats()["calls"] == 1  # only assert_serving's lookup


def test_sixty_four_kib_of_headers_is_refused():
    sim = Sim()
    d = Daemon(sim.url)
    for headers in [b"X-Big: " + b"a" * 65536 + b"\r\n",
                    b"".join(b"X-H%05d: %s\r\n" % (i, b"v" * 50) for i in range(1100))]:
        payload = b"GET " + KEY_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + \
            b"\r\n"
        statuses, raw, outcome = send_raw(d.port, payload)
        assert outcome == "closed" or statuses == [431], (outcome, raw[:200])
        assert_serving(d)
    assert sim.stats()["calls"] == 1


def test_queue_bound_answers_queue_full():
    sim = Sim(quota=5)
    d = Daemon(sim.url, ["--queue-max", "3", "--rate", "1", "--max-wait-ms", "30000"])
    n = 12
    res = parallel(n, lambda i: d.key("86139000%05d" % i))
    ok = [r for r in res if r[0] == 200]
    full = [r for r in res if r[0] == 503]
    assert len(ok) + len(full) == n, [(r[0], r[2]) for r in res]
    assert len(full) >= 1, "no caller was refused with --queue-max 3 and 12 misses at once"
    for status, hdrs, doc in full:
        assert doc["Code"] == "Proxy.QueueFull" and doc["RequestId"], doc
        assert int(hdrs["retry-after"]) >= 1, hdrs
    # 1 in progress + 3 queued, plus a few that found room as the queue drained
    assert len(ok) <= 8, len(ok)
    assert d.settled_metric("camskeyd_queue_full_total", len(full)) == len(full)
    assert sim.stats()["calls"] == len(ok)
    assert d.metric("camskeyd_queue_depth") == 0
    assert_serving(d)


# ---- the corpus ----------------------------------------------------------------------------

# What each file may get: statuses of the first answer, "closed" (closed without
# an answer) or "silent" (no answer within 3 s, still open).
EXPECT = {
    "01_percent_zz_in_query": {400},
    "02_percent_truncated_in_path": {400, 404},
    "03_percent_encoded_nul_in_path": {400},  # a bad phone number, not an unknown route
    "04_raw_nul_in_path": {400, 404, "closed"},
    "05_raw_nul_in_header": {200, 400, "closed"},
    "06_overlong_request_line": {414, 431, "closed"},
    "07_header_flood_10k": {431, "closed"},
    "08_pipelined_garbage": {200},
    "09_invalid_method_token": {400, 405, 501, "closed"},
    "10_unknown_method": {405, 501},
    "11_http_0_9": {400, 505, "closed"},
    "12_http2_preface": {400, 505, "closed"},
    "13_absurd_content_length": {400, 413, "closed"},
    "14_negative_content_length": {400, "closed"},
    "15_chunked_garbage": {400, "closed"},
    "16_crlf_injection_in_query": {400},
    "17_unicode_digits_in_path": {400, 404},
    "18_very_long_custspaceid": {400, 414},
    "19_thousand_query_params": {400, 414, 431, "closed"},
    "20_duplicate_custspaceid": {200, 400},
    "21_header_value_injection": {200, 400},
    "22_smuggling_cl_and_te": {200, 400, "closed"},
    "23_dot_segments": {400, 404},
    "24_absolute_uri_foreign_host": {200, 400, 404},
    "25_bare_lf_and_obs_fold": {200, 400, "closed"},
    "26_huge_bearer_token": {200, 400, 431},
    "27_high_bytes_everywhere": {400, 404},
    "28_absurd_max_wait_and_numbers": {400},
    "29_bad_http_version": {400, 505, "closed"},
    "30_empty_lines_then_eof": {400, "closed", "silent"},
    "31_many_short_params_under_2k": {200, 400, 414, 431, "closed"},
}

_corpus = {}


def corpus_files():
    files = sorted(glob.glob(os.path.join(CORPUS, "*.http")))
    assert len(files) >= 20, files
    return files


def replay_corpus():
    """Replay every file against one daemon; memoised for the tests below."""
    if _corpus:
        return _corpus
    sim = Sim(quota=1000)
    d = Daemon(sim.url)
    assert d.key()[0] == 200
    results = {}
    for path in corpus_files():
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path, "rb") as f:
            payload = f.read()
        statuses, raw, outcome = send_raw(d.port, payload)
        alive_error = None
        try:
            assert_serving(d)
        except (AssertionError, OSError) as e:  # recorded; the next files still run
            alive_error = "%s: %s" % (type(e).__name__, e)
            if d.proc.poll() is not None:
                results[name] = (statuses, raw, outcome, alive_error)
                break
        results[name] = (statuses, raw, outcome, alive_error)
        print("# %-34s %-8s %s" % (name, outcome, statuses))
    d.stop()
    _corpus.update(results=results, logs=d.logs(), exit=d.proc.returncode)
    return _corpus


def test_hostile_corpus_never_breaks_the_daemon():
    c = replay_corpus()
    dead = {n: r[3] for n, r in c["results"].items() if r[3]}
    assert not dead, "daemon stopped serving after: %s" % dead
    assert len(c["results"]) == len(corpus_files())
    assert c["exit"] == 0, c["exit"]
    # every log line is one whole logfmt line: nothing a caller sent split a line
    # or forged an event
    for line in c["logs"].splitlines():
        assert re.match(r"^ts=\S+ level=(debug|info|warn|error) event=[a-z_]+( |$)", line), line
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
        assert not re.search(r"(^|\s)(event|level)=forged", unquoted), line
    assert "ERROR: AddressSanitizer" not in c["logs"]


def test_hostile_corpus_answers_are_the_expected_ones():
    c = replay_corpus()
    wrong = []
    for name, (statuses, raw, outcome, _) in sorted(c["results"].items()):
        allowed = EXPECT.get(name)
        assert allowed is not None, "no EXPECT entry for %s" % name
        got = statuses[0] if statuses else outcome
        if got not in allowed:
            wrong.append("%s: got %s, expected one of %s" % (name, got, sorted(map(str, allowed))))
        # what the daemon itself answers is a JSON envelope with RequestId and Code
        if statuses and b"application/json" in raw.split(b"\r\n\r\n", 1)[0]:
            body = raw.split(b"\r\n\r\n", 1)[1]
            doc = json.JSONDecoder().raw_decode(body.decode("utf-8", "replace"))[0]
            if "status" not in doc:  # not /healthz's {"status":"ok"}
                assert doc.get("RequestId") and doc.get("Code"), (name, doc)
    assert not wrong, "\n".join(wrong)


def test_duplicate_cust_space_id_never_mixes_keys():
    sim = Sim()
    d = Daemon(sim.url)
    status, _, doc = d.get(KEY_PATH + "?CustSpaceId=cams-a&CustSpaceId=cams-b")
    assert status in (200, 400), (status, doc)
    if status == 200:
        seen = sim.stats()["by_custspace"]
        assert len(seen) == 1, seen
        # the one asked upstream is the one cached: a plain lookup of it is a hit
        only = next(iter(seen))
        _, hdrs, _ = d.key(cust_space_id=only)
        assert hdrs["cache-status"].startswith("camskeyd; hit"), hdrs


camtest.main(globals())
