"""Hardening end to end: what an admin's mistake (or an attacker with an admin token)
can do to Tessera, against the real binary with real receivers.

- Templates have a render budget: one that is too costly already with sample data is
  refused when saved; one that is too costly only with some person's data fails that
  delivery alone, and other destinations and shutdown are not held up.
- A masked secret cannot be sent to a new place.
- Requests the HTTP parser refuses (URI too long, too many headers, not HTTP) get a
  JSON error body like every other error.
- The data directory is private: 0700, its files 0600, an existing one narrowed at start.
- Failed authentications are slowed per client address; `/metrics` can require a token.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import uuid

import requests

from tessera_e2e import assert_error, assert_ok, export_events, new_id, wait_until
from test_activation import Receiver, create, deliveries, msg, receivers, send_batch  # noqa: F401 (fixture)

WAIT = 30.0

BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
# Costly only when the event says so (the sample event has no `n`).
DATA_BOMB = ('{"n": "{% for i in range(event.properties.n | default(1)) %}'
             '{% for j in range(event.properties.n | default(1)) %}x{% endfor %}{% endfor %}"}')


def test_a_template_over_budget_is_refused_when_saved(server_factory):
    server = server_factory()
    email = {"smtpUrl": "smtp://127.0.0.1:9", "from": "shop@example.com", "subject": "Hi", "text": "t"}
    for body in [
        {"id": "hook", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x", "template": BOMB}},
        {"id": "mail", "type": "email", "settings": {**email, "text": BOMB}},
        # 10 MB of output: over the output cap.
        {"id": "mail", "type": "email", "settings": {**email, "html": "{{ 'x' * 10000000 }}"}},
        {"id": "sms", "type": "sms", "settings": {"url": "http://127.0.0.1:9/x", "from": "+1", "body": BOMB}},
    ]:
        started = time.monotonic()
        err = assert_error(server.admin("POST", "/api/v1/destinations", json=body), 400, "template_over_budget",
                           body["id"])
        assert "settings." in err["message"], err
        assert time.monotonic() - started < 5
    assert server.admin("GET", "/api/v1/destinations").json()["destinations"] == []
    create(server, "/api/v1/destinations", {"id": "hook", "type": "webhook",
                                            "settings": {"url": "http://127.0.0.1:9/x"}})
    journey = {"key": "j", "trigger": {"event": "A"},
               "steps": [{"send": {"destination": "hook", "overrides": {"template": BOMB}}}]}
    err = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "template_over_budget")
    assert "overrides.template" in err["message"], err
    # The server is still fine and stops promptly.
    assert server.admin("GET", "/api/v1/destinations").status_code == 200
    assert server.terminate(timeout=10) == 0


def test_a_template_over_budget_with_some_data_fails_only_that_delivery(server_factory, receivers):
    heavy_rx, plain_rx = receivers().start(), receivers().start()
    server = server_factory()
    source = server.create_source("app")
    create(server, "/api/v1/destinations", {"id": "heavy", "type": "webhook",
                                            "settings": {"url": heavy_rx.url + "/h", "template": DATA_BOMB}})
    create(server, "/api/v1/destinations", {"id": "plain", "type": "webhook",
                                            "settings": {"url": plain_rx.url + "/p"}})
    user = f"u-{uuid.uuid4().hex[:6]}"
    send_batch(server, source, [msg("track", userId=user, event="Big", properties={"n": 100000})]
               + [msg("track", userId=user, event=f"Small {i}", properties={"n": 2}) for i in range(5)])
    wait_until(lambda: len(plain_rx.accepted()) == 6, timeout=WAIT, what="every event at the plain webhook")
    wait_until(lambda: len(heavy_rx.accepted()) == 5, timeout=WAIT, what="the small events at the heavy webhook")
    dead = deliveries(server, destination="heavy", status="dead")
    assert len(dead) == 1, dead
    assert "over budget" in dead[0]["lastError"] and dead[0]["attempts"] == 1, dead[0]
    assert [json.loads(r["body"]) for r in heavy_rx.accepted()] == [{"n": "xxxx"}] * 5
    # Retrying it by hand fails it again, without sending anything.
    r = server.admin("POST", "/api/v1/deliveries/retry", json={"destination": "heavy"})
    assert r.status_code == 200, r.text
    wait_until(lambda: deliveries(server, destination="heavy", status="dead"), timeout=WAIT, what="dead again")
    assert len(heavy_rx.requests) == 5
    # A burst of costly events does not stop the other destination or shutdown.
    send_batch(server, source, [msg("track", userId=user, event="Big", properties={"n": 100000})
                                for _ in range(200)])
    wait_until(lambda: len(plain_rx.accepted()) == 206, timeout=WAIT, what="the burst at the plain webhook")
    started = time.monotonic()
    assert server.terminate(timeout=15) == 0
    assert time.monotonic() - started < 10


def receiver_destinations(rx: Receiver) -> list[dict]:
    return [
        {"id": "hook", "type": "webhook",
         "settings": {"url": rx.url + "/hook", "secret": "s3cret", "headers": {"X-Api-Key": "k3y"}}},
        {"id": "texts", "type": "sms",
         "settings": {"url": rx.url + "/sms", "username": "AC1", "password": "tok", "from": "+1", "body": "hi"}},
        {"id": "crm", "type": "crm",
         "settings": {"url": rx.url + "/crm", "shape": "generic", "token": "crm-token", "mapping": {"a": "a"}}},
        {"id": "mail", "type": "email",
         "settings": {"smtpUrl": "smtps://127.0.0.1:2465", "username": "u", "password": "pw",
                      "from": "shop@example.com", "subject": "s", "text": "t"}},
    ]


def test_a_masked_secret_is_not_sent_to_a_new_place(server_factory, receivers):
    rx = receivers().start()
    server = server_factory()
    for body in receiver_destinations(rx):
        create(server, "/api/v1/destinations", body)
    port = rx.port
    moves = {
        "hook": [("url", f"http://attacker.example:{port}/hook"), ("url", f"https://127.0.0.1:{port}/hook"),
                 ("url", f"http://127.0.0.1:{port + 1}/hook")],
        "texts": [("url", f"http://attacker.example:{port}/sms")],
        "crm": [("url", f"http://[::1]:{port}/crm")],
        "mail": [("smtpUrl", "smtps://attacker.example:2465"), ("smtpUrl", "smtp://127.0.0.1:2465"),
                 ("smtpUrl", "smtps://127.0.0.1:465")],
    }
    for id_, changes in moves.items():
        shown = server.admin("GET", f"/api/v1/destinations/{id_}").json()
        assert "***" in json.dumps(shown["settings"]), shown
        for field, value in changes:
            body = {k: shown[k] for k in ("id", "type", "settings")}
            body["settings"] = {**shown["settings"], field: value}
            err = assert_error(server.admin("PUT", f"/api/v1/destinations/{id_}", json=body), 400,
                               "secret_required", f"{id_} {field}={value}")
            assert "***" in err["message"] and "again" in err["message"], err
            after = server.admin("GET", f"/api/v1/destinations/{id_}").json()
            assert after["settings"][field] == shown["settings"][field], "the refused update changed nothing"
    # The same place (another path, a different letter case in the host) keeps the masked secret.
    shown = server.admin("GET", "/api/v1/destinations/hook").json()
    body = {k: shown[k] for k in ("id", "type", "settings")}
    body["settings"] = {**shown["settings"], "url": f"http://127.0.0.1:{port}/other"}
    assert server.admin("PUT", "/api/v1/destinations/hook", json=body).status_code == 200
    # A new place with the secret given again is fine.
    body["settings"] = {**shown["settings"], "url": f"http://localhost:{port}/hook", "secret": "n3w",
                        "headers": {"X-Api-Key": "n3wkey"}}
    assert server.admin("PUT", "/api/v1/destinations/hook", json=body).status_code == 200
    source = server.create_source("app")
    send_batch(server, source, [msg("track", userId="u1", event="Ping")])
    wait_until(lambda: [r for r in rx.accepted() if r["path"] == "/hook"], timeout=WAIT, what="the webhook")
    got = [r for r in rx.accepted() if r["path"] == "/hook"][0]
    assert got["headers"]["x-api-key"] == "n3wkey"


def test_header_and_sender_line_breaks_are_refused_at_creation(server_factory):
    server = server_factory()
    hook = {"id": "hook", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}}
    email = {"id": "mail", "type": "email",
             "settings": {"smtpUrl": "smtp://127.0.0.1:9", "from": "shop@example.com", "subject": "s", "text": "t"}}
    for body, field in [
        ({**hook, "settings": {**hook["settings"], "headers": {"X-Key": "a\r\nX-Evil: 1"}}}, "X-Key"),
        ({**hook, "settings": {**hook["settings"], "headers": {"X-Key": "a\nb"}}}, "X-Key"),
        ({**hook, "settings": {**hook["settings"], "headers": {"X-Key\r\nX-Evil": "1"}}}, "header name"),
        ({**hook, "settings": {**hook["settings"], "headers": {"Bad Name": "1"}}}, "header name"),
        ({**email, "settings": {**email["settings"], "from": "shop@example.com\r\nBcc: all@example.com"}},
         "settings.from"),
        ({**email, "settings": {**email["settings"], "from": "not an address"}}, "settings.from"),
        ({"id": "texts", "type": "sms", "settings": {"url": "http://127.0.0.1:9/s", "from": "+1\r\n", "body": "b"}},
         "settings.from"),
    ]:
        err = assert_error(server.admin("POST", "/api/v1/destinations", json=body), 400, "invalid_activation",
                           json.dumps(body))
        assert field in err["message"], err
    ok = {**hook, "settings": {**hook["settings"], "headers": {"X-Key": "abc def"}}}
    assert server.admin("POST", "/api/v1/destinations", json=ok).status_code == 201
    ok = {**email, "settings": {**email["settings"], "from": "Shop <shop@example.com>"}}
    assert server.admin("POST", "/api/v1/destinations", json=ok).status_code == 201


def test_source_names_with_control_characters_are_refused(server_factory):
    server = server_factory()
    for name in ["web\nadmin", "we\rb", "a\x1b[31mred", "tab\there", "nul\x00"]:
        assert_error(server.admin("POST", "/api/v1/sources", json={"name": name}), 400, "invalid_request",
                     repr(name))
    assert server.admin("GET", "/api/v1/sources").json()["sources"] == []
    assert server.admin("POST", "/api/v1/sources", json={"name": "Web – shop (EU)"}).status_code == 201


def _modes(data_dir):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir()}


def test_the_data_directory_is_private_and_narrowed_at_start(server_factory, tmp_path):
    data_dir = tmp_path / "private-data"
    server = server_factory(data_dir=data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    source = server.create_source("private")
    assert_ok(server.post("/v1/track", {"userId": "u1", "event": "Viewed", "messageId": new_id()},
                          write_key=source.write_key), "track")
    modes = _modes(data_dir)
    assert {"events.db", "events.db-wal", "tessera.db", "serve.lock"} <= set(modes), modes
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert server.terminate() == 0

    # A directory of an older version (or copied with the usual modes) is narrowed.
    os.chmod(data_dir, 0o755)
    for name in modes:
        if (data_dir / name).exists():
            os.chmod(data_dir / name, 0o644)
    server.start()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    log = server.log_text()
    assert "narrowed" in log and f"{data_dir} from 0755 to 0700" in log, server.log_tail()
    assert f"{data_dir / 'events.db'} from 0644 to 0600" in log, server.log_tail()
    assert_ok(server.post("/v1/track", {"userId": "u2", "event": "Viewed", "messageId": new_id()},
                          write_key=source.write_key), "track")
    modes = _modes(data_dir)
    assert all(mode == 0o600 for mode in modes.values()), modes


def _raw_exchange(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_the_parsers_own_rejections_answer_json(server_factory):
    server = server_factory()
    for request, status, code in [
        (b"GET /v1/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
         431, "headers_too_large"),
        (b"GARBAGE\r\n\r\n", 400, "invalid_request"),
        (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "invalid_request"),
    ]:
        response = _raw_exchange(server, request)
        head, _, body = response.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith(f"HTTP/1.1 {status} "), response[:300]
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        assert headers["content-type"] == "application/json", response[:300]
        assert int(headers["content-length"]) == len(body), response[:300]
        error = json.loads(body)
        assert error["code"] == code and error["message"], error
    # The connection's other responses are untouched, and the server still serves.
    assert_error(requests.get(server.url + "/v1/" + "a" * 20000, timeout=10), 404, "not_found")
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    # The wrapped connections still tell the browser routes the client's address.
    source = server.create_source("browser")
    message_id = new_id()
    assert_ok(server.post("/v1/t", {"userId": "u1", "event": "Viewed", "messageId": message_id},
                          write_key=source.write_key), "browser track")
    stored = [e for e in export_events(server.data_dir) if e["messageId"] == message_id]
    assert stored and stored[0]["context"]["ip"] == "127.0.0.1", stored


def test_a_short_admin_token_is_refused_and_the_log_says_which_token_is_in_force(server_factory, tmp_path):
    import subprocess

    from tessera_e2e import free_port, tessera_bin

    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["TESSERA_ADMIN_TOKEN"] = "x"
    started = subprocess.run(
        [str(tessera_bin()), "serve", "--data-dir", str(tmp_path / "short"),
         "--listen", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "TESSERA_ADMIN_TOKEN is 1 characters; use at least 16" in started.stderr, started.stderr
    # A long enough one is taken, and the log names its origin, never its value.
    server = server_factory()
    log = server.log_text()
    assert "admin token: TESSERA_ADMIN_TOKEN from the environment" in log
    assert server.admin("GET", "/api/v1/sources").status_code == 200
    from tessera_e2e import ADMIN_TOKEN
    assert ADMIN_TOKEN not in log


def test_destinations_cannot_reach_cloud_metadata_addresses(server_factory):
    """Refused when saved (literal addresses and metadata names) and when a receiver
    redirects there; loopback receivers stay allowed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    server = server_factory()
    for url in ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
                "http://metadata.google.internal/computeMetadata/v1/"]:
        r = server.admin("POST", "/api/v1/destinations", json={
            "id": "meta", "type": "webhook", "settings": {"url": url}})
        body = assert_error(r, 400, "invalid_activation", url)
        assert "metadata" in body["message"], body

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        source = server.create_source("web")
        r = server.admin("POST", "/api/v1/destinations", json={
            "id": "redirected", "type": "webhook",
            "settings": {"url": f"http://127.0.0.1:{httpd.server_address[1]}/hook"},
            "filter": {"events": ["Order Completed"]},
            "delivery": {"maxAttempts": 1}})
        assert r.status_code == 201, r.text
        send_batch(server, source, [msg("track", userId="u1", event="Order Completed")])

        def dead():
            rows = deliveries(server, destination="redirected")
            return rows if rows and rows[0]["status"] == "dead" else None

        rows = wait_until(dead, timeout=WAIT, what="the redirected delivery dead")
        assert "denied address" in (rows[0].get("lastError") or ""), rows[0]
    finally:
        httpd.shutdown()


def request_from(source: str, port: int, method: str, path: str, headers: dict | None = None,
                 body: bytes | None = None) -> tuple[int, dict, dict]:
    """One request from the loopback address `source` (another client, as far as the
    server can tell): (status, headers, JSON body or {})."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        conn.close()


def test_failed_authentications_are_slowed_per_client(server_factory):
    """Wrong admin tokens sent at once by many threads from one address: past the
    limit the address gets 429 too_many_auth_failures with Retry-After, then even the
    right token is refused unchecked; other addresses are not affected. Wrong write
    keys count the same way; a missing credential does not count."""
    from concurrent.futures import ThreadPoolExecutor

    from tessera_e2e import ADMIN_TOKEN, basic_auth

    limit = 20
    server = server_factory(extra_env={"TESSERA_AUTH_FAILURES": str(limit)})
    source = server.create_source("web")
    wrong = {"Authorization": "Bearer tsk_wrong-" + "0" * 40}

    def attempt(i):
        return request_from("127.0.0.2", server.port, "GET", "/api/v1/sources", wrong)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(attempt, range(60)))
    statuses = [a[0] for a in answers]
    checked = statuses.count(401)
    # Counting is per request; requests already being checked when the limit was hit
    # still get their 401 (at most one per thread).
    assert limit <= checked <= limit + 8, statuses
    assert statuses.count(429) == len(statuses) - checked, statuses
    refused = next(a for a in answers if a[0] == 429)
    assert refused[2]["code"] == "too_many_auth_failures", refused
    assert "Retry-After" in refused[2]["message"]
    assert 1 <= int(refused[1]["retry-after"]) <= 60, refused[1]
    # Now even the right token is refused from that address, unchecked...
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, _, body = request_from("127.0.0.2", server.port, "GET", "/api/v1/sources", right)
    assert (status, body.get("code")) == (429, "too_many_auth_failures")
    # ...and so is the tracking API, before the body is read.
    status, _, body = request_from("127.0.0.2", server.port, "POST", "/v1/track",
                                   {"Authorization": basic_auth(source.write_key), "Content-Type": "application/json"},
                                   json.dumps({"userId": "u", "event": "E"}).encode())
    assert (status, body.get("code")) == (429, "too_many_auth_failures")
    # Other addresses are not affected.
    assert request_from("127.0.0.3", server.port, "GET", "/api/v1/sources", right)[0] == 200
    assert request_from("127.0.0.1", server.port, "GET", "/api/v1/sources", wrong)[0] == 401

    # Wrong write keys count too; requests without a credential do not.
    for _ in range(limit + 5):
        status, _, body = request_from("127.0.0.4", server.port, "POST", "/v1/track",
                                       {"Content-Type": "application/json"},
                                       json.dumps({"userId": "u", "event": "E"}).encode())
        assert (status, body.get("code")) == (401, "missing_write_key")
    assert request_from("127.0.0.4", server.port, "GET", "/api/v1/sources")[0] == 401
    codes = []
    for _ in range(limit + 3):
        status, _, body = request_from("127.0.0.4", server.port, "POST", "/v1/track",
                                       {"Authorization": basic_auth("not-a-key"), "Content-Type": "application/json"},
                                       json.dumps({"userId": "u", "event": "E"}).encode())
        codes.append((status, body.get("code")))
    assert codes[:limit] == [(401, "invalid_write_key")] * limit, codes
    assert set(codes[limit:]) == {(429, "too_many_auth_failures")}, codes
    # The right key from a clean address still works.
    assert_ok(server.post("/v1/track", {"userId": "u", "event": "E"}, write_key=source.write_key))


def test_metrics_can_require_a_token(server_factory, tmp_path):
    import subprocess

    from tessera_e2e import ADMIN_TOKEN, free_port, tessera_bin

    # Default: open (it names destinations: docs/security.md says so).
    plain = server_factory()
    assert requests.get(plain.url + "/metrics", timeout=30).status_code == 200
    plain.terminate()

    token = "metrics-" + uuid.uuid4().hex
    server = server_factory(extra_env={"TESSERA_METRICS_TOKEN": token})
    for headers in ({}, {"Authorization": "Bearer wrong-token-000000"}, {"Authorization": f"Basic {token}"}):
        r = requests.get(server.url + "/metrics", headers=headers, timeout=30)
        body = assert_error(r, 401, "invalid_metrics_token", headers)
        assert "TESSERA_METRICS_TOKEN" in body["message"]
    r = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200 and "tessera_connections_open" in r.text
    r = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert r.status_code == 200
    # From the configuration file too; a short token stops the start.
    config = tmp_path / "metrics.toml"
    config.write_text('[metrics]\ntoken = "short"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({"TESSERA_ADMIN_TOKEN": ADMIN_TOKEN, "TESSERA_CONFIG": str(config)})
    started = subprocess.run(
        [str(tessera_bin()), "serve", "--data-dir", str(tmp_path / "short"),
         "--listen", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "metrics token" in started.stderr and "at least 16" in started.stderr, started.stderr


def test_file_destinations_write_only_inside_the_file_dir(server_factory, cli, tmp_path):
    """Absolute paths elsewhere, `..` and symbolic links leading out are refused when
    saved (API and CLI); a link put in place later fails the delivery instead of
    writing outside."""
    exports, outside = tmp_path / "exports", tmp_path / "outside"
    outside.mkdir()
    config = tmp_path / "tessera.toml"
    config.write_text(f'[activation]\nfile_dir = "{exports}"\n')
    server = server_factory(extra_env={"TESSERA_CONFIG": str(config)})
    exports.mkdir(exist_ok=True)
    os.symlink(outside, exports / "link")

    def file_destination(id_, path):
        return {"id": id_, "type": "file", "settings": {"path": path}, "delivery": {"maxAttempts": 1}}

    for path in ["/etc/tessera-escape.jsonl", str(outside / "events.jsonl"), "../outside/events.jsonl",
                 "sub/../../outside/events.jsonl", "link/events.jsonl", str(exports / "link" / "x.jsonl")]:
        r = server.admin("POST", "/api/v1/destinations", json=file_destination("escape", path))
        body = assert_error(r, 400, "invalid_activation", path)
        assert "file_dir" in body["message"], body
    # Replacing a good one with a bad path is refused too.
    create(server, "/api/v1/destinations", file_destination("good", "events.jsonl"))
    create(server, "/api/v1/destinations", file_destination("absolute", str(exports / "abs.jsonl")))
    r = server.admin("PUT", "/api/v1/destinations/good", json=file_destination("good", str(outside / "x.jsonl")))
    assert_error(r, 400, "invalid_activation")
    # A directory that does not exist yet is fine when saved...
    create(server, "/api/v1/destinations", file_destination("later", "later/events.jsonl"))
    # ...and becomes a link out of the directory before the first delivery.
    os.symlink(outside, exports / "later")

    source = server.create_source("web")
    send_batch(server, source, [msg("track", userId="u1", event="Order Completed")])
    wait_until(lambda: (exports / "events.jsonl").exists() and (exports / "abs.jsonl").exists(),
               timeout=WAIT, what="the good file destinations written")
    assert json.loads((exports / "events.jsonl").read_text().splitlines()[0])["event"] == "Order Completed"
    assert stat.S_IMODE(os.stat(exports / "events.jsonl").st_mode) == 0o600

    def dead():
        rows = deliveries(server, destination="later")
        return rows if rows and rows[0]["status"] == "dead" else None

    rows = wait_until(dead, timeout=WAIT, what="the delivery through the link dead")
    assert "symbolic link" in (rows[0].get("lastError") or ""), rows[0]
    assert list(outside.iterdir()) == [], "nothing was written outside the file directory"

    # The CLI applies the same rule.
    definition = tmp_path / "escape.json"
    definition.write_text(json.dumps(file_destination("cli-escape", str(outside / "cli.jsonl"))))
    cp = cli("destinations", "create", str(definition), data_dir=server.data_dir,
             env={"TESSERA_CONFIG": str(config)})
    assert cp.returncode != 0 and "invalid_activation" in cp.stderr and "file_dir" in cp.stderr, cp.stderr


def test_the_networks_destinations_may_reach_are_a_setting(server_factory, receivers, tmp_path):
    """With loopback denied: a literal loopback URL is refused when saved, a name that
    resolves to loopback and a destination stored before the setting fail at send
    time; allowed_networks narrows the same way; a bad entry stops the start."""
    import subprocess

    from tessera_e2e import ADMIN_TOKEN, free_port, tessera_bin

    hook = receivers().start()
    data = tmp_path / "data"
    before = server_factory(data_dir=data)
    create(before, "/api/v1/destinations", {"id": "old-hook", "type": "webhook",
                                            "settings": {"url": hook.url + "/old"}, "delivery": {"maxAttempts": 1}})
    before.terminate()

    config = tmp_path / "tessera.toml"
    config.write_text('[activation]\ndenied_networks = ["loopback", "203.0.113.0/24"]\n')
    server = server_factory(data_dir=data, extra_env={"TESSERA_CONFIG": str(config)})
    for url in [hook.url + "/new", f"http://[::1]:{hook.port}/", "http://127.9.9.9/", "http://203.0.113.5/"]:
        r = server.admin("POST", "/api/v1/destinations", json={"id": "new", "type": "webhook", "settings": {"url": url}})
        body = assert_error(r, 400, "invalid_activation", url)
        assert "denied_networks" in body["message"], body
    create(server, "/api/v1/destinations", {"id": "by-name", "type": "webhook",
                                            "settings": {"url": f"http://localhost:{hook.port}/name"},
                                            "delivery": {"maxAttempts": 1}})
    source = server.create_source("web")
    send_batch(server, source, [msg("track", userId="u1", event="Order Completed")])
    for destination in ("old-hook", "by-name"):
        def dead():
            rows = deliveries(server, destination=destination)
            return rows if rows and rows[0]["status"] == "dead" else None

        rows = wait_until(dead, timeout=WAIT, what=f"{destination} delivery dead")
        assert "denied_networks" in (rows[0].get("lastError") or ""), rows[0]
    assert hook.accepted() == [], "nothing reached the denied network"
    server.terminate()

    config.write_text('[activation]\nallowed_networks = ["10.0.0.0/8"]\n')
    narrow = server_factory(data_dir=tmp_path / "narrow", extra_env={"TESSERA_CONFIG": str(config)})
    r = narrow.admin("POST", "/api/v1/destinations", json={"id": "new", "type": "webhook",
                                                            "settings": {"url": hook.url}})
    assert "allowed_networks" in assert_error(r, 400, "invalid_activation")["message"]
    narrow.terminate()

    config.write_text('[activation]\ndenied_networks = ["intranet"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({"TESSERA_ADMIN_TOKEN": ADMIN_TOKEN, "TESSERA_CONFIG": str(config)})
    started = subprocess.run(
        [str(tessera_bin()), "serve", "--data-dir", str(tmp_path / "bad"), "--listen", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "denied_networks" in started.stderr and "intranet" in started.stderr, started.stderr
