"""Connection limits against the real binary: strangers holding idle connections,
headers and bodies sent one byte a second neither starve a well-behaved SDK client nor
hold the server's memory, and each gets a clear end (a closed connection, 408
request_timeout, 503 too_many_connections, 429 too_many_client_connections).

Strangers connect from other loopback addresses (127.0.0.2, …) than the SDK client
(127.0.0.1), as other hosts would: one address holds at most
`max_connections_per_client` connections."""

from __future__ import annotations

import json
import resource
import socket
import threading
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


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.setblocking(False)
    return s


def stranger(i: int, per_address: int = 100) -> str:
    """The loopback address of the i-th stranger connection: 127.0.0.2 and up, at most
    `per_address` connections from each."""
    n = 2 + i // per_address
    return f"127.0.{n // 256}.{n % 256}"


class Trickle:
    """Sends one byte a second on each socket (a slow client), until stopped."""

    def __init__(self, sockets: list[socket.socket], byte: bytes):
        self.sockets, self.byte = sockets, byte
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for s in self.sockets:
                try:
                    s.send(self.byte)
                except OSError:
                    pass  # closed by the server (or full): that one is done

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


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

    idle = [connect(server.port, stranger(i)) for i in range(IDLE)]
    # Headers sent one byte a second, never finished.
    half = [connect(server.port, stranger(IDLE + i)) for i in range(SLOW // 2)]
    for s in half:
        s.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    # Complete headers without a key, a 480 KB body promised, sent one byte a second.
    slow = [connect(server.port, stranger(IDLE + SLOW // 2 + i)) for i in range(SLOW - SLOW // 2)]
    for s in slow:
        s.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 491520\r\n\r\n{\"batch\": [")
    trickles = [Trickle(half, b"a"), Trickle(slow, b" ")]

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
    for t in trickles:
        t.stop()
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


def test_one_client_cannot_take_every_connection(server_factory):
    """Over its share, a client address gets a clear 429 and a closed connection;
    another address is served meanwhile, and the first is again once it closed some."""
    server = server_factory(extra_env={"TESSERA_MAX_CONNECTIONS_PER_CLIENT": "10"})
    held = [connect(server.port, "127.0.0.2") for _ in range(10)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.2", 0))
    extra.settimeout(5)
    data = b""
    while True:
        chunk = extra.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode()
    assert text.startswith("HTTP/1.1 429"), text[:200]
    assert "retry-after: 1" in text.lower()
    body = json.loads(text.split("\r\n\r\n", 1)[1])
    assert body["code"] == "too_many_client_connections", body
    assert "max_connections_per_client" in body["message"]
    # Another client is served while the first holds its share.
    assert requests.get(server.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    other = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.3", 0))
    other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    other.settimeout(5)
    assert other.recv(65536).startswith(b"HTTP/1.1 200")
    other.close()
    for s in held[:5]:
        s.close()

    def served_again():
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.2", 0))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.settimeout(5)
            return s.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            s.close()

    wait_until(served_again, timeout=10, what="the client served again after closing some")
    for s in held[5:]:
        s.close()
