"""Durability: a 200 from Tessera means the messages are on disk.

`kill -9` in the middle of concurrent traffic must not lose any acknowledged
message, nor store one twice (also when clients retry after the restart, as
the SDKs do). SIGTERM must let in-flight requests finish."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import requests

from tessera_e2e import (
    HTTP_TIMEOUT,
    assert_ok,
    basic_auth,
    by_message_id,
    export_events,
    new_id,
    wait_until,
)

SENDERS = 8
BATCH = 20


class Traffic:
    """SENDERS threads posting /v1/batch with unique messageIds as fast as they can."""

    def __init__(self, url: str, write_key: str, tag: str):
        self.url = url
        self.auth = basic_auth(write_key)
        self.tag = tag
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        self.unacked_batches: list[list[dict]] = []  # sent, but no 200 seen (unknown fate)
        self.acked_batches: list[list[dict]] = []
        self.statuses: dict[int | str, int] = {}
        self.unexpected: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(SENDERS)]

    def start(self) -> "Traffic":
        for t in self.threads:
            t.start()
        return self

    def _run(self, n: int) -> None:
        session = requests.Session()
        seq = 0
        deadline = time.monotonic() + 30  # hard bound, whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            batch = [{
                "type": "track", "userId": f"crash-user-{n}", "event": "Crash Test",
                "messageId": f"{self.tag}-{n}-{seq}-{i}-{uuid.uuid4().hex[:8]}",
                "properties": {"thread": n, "seq": seq, "i": i, "pad": "p" * 200},
            } for i in range(BATCH)]
            seq += 1
            try:
                r = session.post(self.url + "/v1/batch", data=json.dumps({"batch": batch}),
                                 headers={"Authorization": self.auth, "Content-Type": "application/json"},
                                 timeout=10)
            except requests.RequestException as e:
                with self.lock:
                    self.unacked_batches.append(batch)
                    self.statuses["conn-error"] = self.statuses.get("conn-error", 0) + 1
                if isinstance(e, requests.Timeout):
                    self.unexpected.append(f"request timed out: {e!r}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 200 and r.json().get("success") is True and not r.json().get("rejected"):
                    self.acked.update(m["messageId"] for m in batch)
                    self.acked_batches.append(batch)
                else:
                    self.unacked_batches.append(batch)
                    if r.status_code != 503:
                        self.unexpected.append(f"HTTP {r.status_code}: {r.text[:300]}")
                    elif "Retry-After" not in r.headers or r.json().get("code") != "overloaded":
                        self.unexpected.append(f"503 without Retry-After/overloaded: {r.headers} {r.text[:300]}")

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "sender threads did not stop"

    def all_sent_ids(self) -> set[str]:
        return {m["messageId"] for b in self.unacked_batches + self.acked_batches for m in b}


def run_until_some_acked(traffic: Traffic, at_least: int, extra_seconds: float) -> None:
    wait_until(lambda: traffic.acked_count() >= at_least, timeout=30, interval=0.02,
               what=f"{at_least} acknowledged messages (statuses so far: {traffic.statuses})")
    time.sleep(extra_seconds)


def resend(url: str, write_key: str, batches: list[list[dict]]) -> None:
    """Retry batches the way SDKs do after a failure: same messageIds."""
    s = requests.Session()
    for b in batches:
        for _attempt in range(20):
            r = s.post(url + "/v1/batch", json={"batch": b}, headers={"Authorization": basic_auth(write_key)},
                       timeout=HTTP_TIMEOUT)
            if r.status_code != 503:
                break
            time.sleep(0.1)
        assert_ok(r, "retried batch")


def test_kill_9_during_concurrent_ingest_loses_no_acknowledged_message(server_factory, data_dir):
    srv = server_factory(data_dir)
    src = srv.create_source("crash")
    sent_ids: set[str] = set()
    acked: set[str] = set()

    # two crash cycles: the second one appends to a log that was recovered from the first
    for cycle in range(2):
        traffic = Traffic(srv.url, src.write_key, f"c{cycle}").start()
        try:
            run_until_some_acked(traffic, at_least=400, extra_seconds=0.7)
            assert srv.running()
            srv.kill()  # SIGKILL while 8 senders are mid-request
        finally:
            traffic.finish()
        assert not traffic.unexpected, f"unexpected responses: {traffic.unexpected[:5]}"
        print(f"cycle {cycle}: acked={len(traffic.acked)} statuses={traffic.statuses} unacked_batches={len(traffic.unacked_batches)}")
        acked |= traffic.acked
        sent_ids |= traffic.all_sent_ids()

        srv.start()  # same data dir, new process
        stored = by_message_id(srv_export := export_events(data_dir))  # no duplicates allowed
        lost = acked - set(stored)
        assert not lost, (f"cycle {cycle}: {len(lost)} of {len(acked)} acknowledged messages lost after kill -9, "
                          f"e.g. {sorted(lost)[:5]}")
        phantom = set(stored) - sent_ids
        assert not phantom, f"stored messages nobody sent: {sorted(phantom)[:5]}"
        assert len(srv_export) == len(stored)

        # clients retry everything whose fate they don't know, and some acked batches too
        resend(srv.url, src.write_key, traffic.unacked_batches + traffic.acked_batches[:5])
        acked |= {m["messageId"] for b in traffic.unacked_batches for m in b}

    stored = by_message_id(export_events(data_dir))
    assert set(stored) == acked, (
        f"after retries every sent message must be stored exactly once: "
        f"missing {len(acked - set(stored))}, extra {len(set(stored) - acked)}")
    # the recovered server still works normally
    assert requests.get(srv.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    last = {"type": "track", "userId": "after-crash", "event": "Recovered", "messageId": new_id("after")}
    assert_ok(srv.post("/v1/track", last, write_key=src.write_key))
    assert last["messageId"] in by_message_id(export_events(data_dir))


def test_sigterm_lets_an_in_flight_request_finish_and_keeps_it(server_factory, data_dir):
    srv = server_factory(data_dir)
    src = srv.create_source("graceful")
    msg = {"type": "track", "userId": "slow-client", "event": "Slow Upload", "messageId": new_id("slow")}
    body = json.dumps({"batch": [msg]}).encode()
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: {basic_auth(src.write_key)}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(head + body[:10])  # the request has started, its body is still on its way
        time.sleep(0.3)
        srv.proc.send_signal(15)  # SIGTERM
        time.sleep(0.7)
        assert srv.proc.poll() is None, "server exited while a request was in flight"
        sock.sendall(body[10:])
        sock.settimeout(20)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 200"), f"in-flight request got: {response[:500]!r}"
    try:
        code = srv.proc.wait(timeout=20)
    except Exception:
        raise AssertionError("server did not exit within 20 s of SIGTERM after the last request finished")
    assert code == 0, f"graceful shutdown should exit 0, got {code}"
    # the CLI reads the data dir with no server running
    stored = by_message_id(export_events(data_dir))
    assert msg["messageId"] in stored


def test_sigterm_during_concurrent_ingest_keeps_every_acknowledged_message(server_factory, data_dir):
    srv = server_factory(data_dir)
    src = srv.create_source("graceful-load")
    traffic = Traffic(srv.url, src.write_key, "term").start()
    try:
        run_until_some_acked(traffic, at_least=400, extra_seconds=0.5)
        t0 = time.monotonic()
        code = srv.terminate(timeout=20)
        took = time.monotonic() - t0
    finally:
        traffic.finish()
    assert code == 0, f"server did not exit cleanly on SIGTERM under load (exit code {code}, {took:.1f}s)"
    assert not traffic.unexpected, f"unexpected responses during shutdown: {traffic.unexpected[:5]}"
    assert all(k in (200, 503, "conn-error") for k in traffic.statuses), traffic.statuses

    stored = by_message_id(export_events(data_dir))
    lost = traffic.acked - set(stored)
    assert not lost, f"{len(lost)} of {len(traffic.acked)} acknowledged messages lost on SIGTERM"
    assert set(stored) <= traffic.all_sent_ids()

    srv.start()  # and it starts again on the same data dir with everything there
    assert set(by_message_id(export_events(data_dir))) == set(stored)
    assert_ok(srv.post("/v1/track", {"userId": "u", "event": "After Restart"}, write_key=src.write_key))


def test_sigterm_with_idle_keep_alive_clients_exits_promptly(server_factory, data_dir):
    """SDKs keep their HTTP connection open between flushes; shutdown must not wait on them."""
    srv = server_factory(data_dir)
    src = srv.create_source("idle")
    sessions = [requests.Session() for _ in range(4)]
    ids = []
    for s in sessions:
        m = {"userId": "idle", "event": "Then Idle", "messageId": new_id("idle")}
        assert_ok(srv.post("/v1/track", m, write_key=src.write_key, session=s))
        ids.append(m["messageId"])
    # a raw connection that sent nothing at all
    bare = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        t0 = time.monotonic()
        code = srv.terminate(timeout=15)
        took = time.monotonic() - t0
    finally:
        bare.close()
        for s in sessions:
            s.close()
    assert code == 0, f"server with idle connections did not exit on SIGTERM (code {code}, {took:.1f}s)"
    assert took < 10, f"shutdown took {took:.1f}s with idle keep-alive connections"
    assert set(ids) <= set(by_message_id(export_events(data_dir)))


def test_sigterm_is_not_held_up_forever_by_a_stalled_client(server_factory, data_dir):
    """A client that sent half a request and went silent must not keep the server from
    exiting: graceful shutdown gives in-flight requests time, but not unlimited time
    (process managers SIGKILL after ~30 s anyway). Acknowledged data stays intact."""
    srv = server_factory(data_dir)
    src = srv.create_source("stalled")
    m = {"userId": "u", "event": "Before Shutdown", "messageId": new_id("stall")}
    assert_ok(srv.post("/v1/track", m, write_key=src.write_key))
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        stalled.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"userId\":")  # ...and nothing more
        time.sleep(0.3)
        t0 = time.monotonic()
        code = srv.terminate(timeout=25)
        took = time.monotonic() - t0
    finally:
        stalled.close()
    assert code is not None, "server still running 25 s after SIGTERM because one client stalled mid-request"
    assert code == 0, f"exit code {code} after {took:.1f}s"
    assert m["messageId"] in by_message_id(export_events(data_dir))
