"""Connection limits against the real binary: strangers holding idle connections,
half-sent headers and bodies sent a byte at a time neither starve a well-behaved SDK
client nor hold the server's memory, and each gets a clear end (a closed connection,
408 request_timeout, 503 too_many_connections)."""

from __future__ import annotations

import json
import resource
import socket
import time
import uuid

import requests

from tessera_e2e import HTTP_TIMEOUT, metric_value, wait_until

IDLE = 1000
SLOW = 300


def raise_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    return s


def closed_by_server(s: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset), after reading any
    answer it sent first."""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_idle_and_slow_connections_do_not_starve_a_client(server_factory):
    raise_file_limit(IDLE + SLOW + 256)
    server = server_factory(extra_env={"TESSERA_HEADER_TIMEOUT_MS": "15000",
                                       "TESSERA_BODY_TIMEOUT_MS": "20000"})
    source = server.create_source("web")
    rss_before = rss_mb(server.proc.pid)

    idle = [connect(server.port) for _ in range(IDLE)]
    # Half-sent headers, then nothing.
    half = [connect(server.port) for _ in range(SLOW // 2)]
    for s in half:
        s.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
    # Complete headers without a key, a 480 KB body promised, a few bytes sent.
    slow = [connect(server.port) for _ in range(SLOW - SLOW // 2)]
    for s in slow:
        s.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 491520\r\n\r\n{\"batch\": [")

    # (Opening them takes seconds; the timeouts leave room for that.)
    wait_until(lambda: metric_value(server.metrics(), "tessera_connections_open") >= IDLE + SLOW // 2,
               timeout=10, what="the strangers' connections open")

    # A well-behaved client goes on being served, each batch acknowledged.
    session = requests.Session()
    session.auth = (source.write_key, "")
    latencies = []
    for i in range(40):
        batch = [{"type": "track", "userId": f"ok-{i}", "event": "Signed Up",
                  "messageId": str(uuid.uuid4())}]
        started = time.monotonic()
        r = session.post(server.url + "/v1/batch", json={"batch": batch}, timeout=HTTP_TIMEOUT)
        latencies.append(time.monotonic() - started)
        assert r.status_code == 200, r.text
    latencies.sort()
    assert latencies[int(len(latencies) * 0.99) - 1] < 2.0, latencies[-5:]

    # Idle and half-sent connections are closed once the header timeout passed; the
    # slow bodies get 408 once the body timeout passed.
    wait_until(lambda: all(closed_by_server(s) for s in idle + half), timeout=30,
               what="idle and half-sent connections closed by the server")
    answers = []

    def slow_answered():
        for s in slow:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            if data:
                answers.append(data)
        return len(answers) >= len(slow) * 0.9

    wait_until(slow_answered, timeout=30, what="slow bodies answered")
    # Bodies whose key is not in the headers are read a limited number at a time: the
    # rest are told at once to retry (503 overloaded); those read got 408.
    codes = []
    for data in answers:
        text = data.decode("latin-1")
        status = text.split(" ", 2)[1]
        codes.append((status, json.loads(text.split("\r\n\r\n", 1)[1])["code"]))
    assert set(codes) <= {("408", "request_timeout"), ("503", "overloaded")}, set(codes)
    assert ("408", "request_timeout") in codes
    # Strangers' bodies were not buffered without bound: far less than 300 × 480 KB.
    assert rss_mb(server.proc.pid) - rss_before < 150
    for s in idle + half + slow:
        s.close()
    # And the well-behaved client is still served.
    r = session.post(server.url + "/v1/track", json={"userId": "ok-end", "event": "Done"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200


def test_connections_over_the_cap_get_a_clear_503(server_factory):
    server = server_factory(extra_env={"TESSERA_MAX_CONNECTIONS": "20"})
    held = [connect(server.port) for _ in range(20)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    extra.settimeout(5)
    data = b""
    while True:
        chunk = extra.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode()
    assert text.startswith("HTTP/1.1 503"), text[:200]
    assert "retry-after: 1" in text.lower()
    assert json.loads(text.split("\r\n\r\n", 1)[1])["code"] == "too_many_connections"
    for s in held:
        s.close()
    # Once they are gone, clients are served again.
    wait_until(lambda: requests.get(server.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200,
               timeout=10, what="served again after the held connections closed")
    assert metric_value(server.metrics(), "tessera_connections_refused_total") >= 1
