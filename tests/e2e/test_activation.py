"""Activation end to end with real receivers: local HTTP servers that fail and stall,
one that is down for a minute, a real SMTP server (aiosmtpd) receiving the
cart-abandonment email of a journey driven by Segment SDK events, a restart in the
middle of a journey, consent withdrawn before a send, SMS/CRM/file destinations,
dead letters and their retry through the CLI.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests

from tessera_e2e import HTTP_TIMEOUT, assert_error, free_port, metric_value, run_cli, wait_until

WAIT = 30.0


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records every request. `fail_rate` of
    the requests get `status` (503 by default, some with Retry-After: 1); `slow_rate`
    of them take `slow_s` seconds first. `mode` can be switched while running."""

    def __init__(self, fail_rate: float = 0.0, slow_rate: float = 0.0, slow_s: float = 0.3,
                 status: int = 503, seed: int = 1, port: int | None = None):
        self.fail_rate, self.slow_rate, self.slow_s, self.status = fail_rate, slow_rate, slow_s, status
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.mode = "normal"  # or "reject" (400 to everything)
        self.port = port or free_port()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    roll, slow = receiver.random.random(), receiver.random.random()
                if slow < receiver.slow_rate:
                    time.sleep(receiver.slow_s)
                if receiver.mode == "reject":
                    status = 400
                elif roll < receiver.fail_rate:
                    status = receiver.status
                else:
                    status = 200
                record = {"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body, "status": status, "at": time.time()}
                with receiver.lock:
                    receiver.requests.append(record)
                self.send_response(status)
                if status == 503 and roll < receiver.fail_rate / 3:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            do_POST = _handle
            do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def send_batch(server, source, messages: list[dict]) -> None:
    r = server.post("/v1/batch", {"batch": messages}, write_key=source.write_key)
    assert r.status_code == 200, f"POST /v1/batch -> {r.status_code} {r.text}"


def msg(kind: str, **fields) -> dict:
    return {"type": kind, "messageId": str(uuid.uuid4()), **fields}


def create(server, path: str, body: dict) -> dict:
    r = server.admin("POST", path, json=body)
    assert r.status_code == 201, f"POST {path} -> {r.status_code} {r.text}"
    return r.json()


def deliveries(server, **params) -> list[dict]:
    out, after = [], 0
    while True:
        r = server.admin("GET", "/api/v1/deliveries", params={**params, "after": after, "limit": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["deliveries"])
        if body["nextAfter"] is None:
            return out
        after = body["nextAfter"]


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_webhook_delivers_everything_through_a_failing_slow_receiver(server_factory, receivers):
    rx = receivers(fail_rate=0.3, slow_rate=0.1, seed=7).start()
    server = server_factory()
    source = server.create_source("shop")
    created = create(server, "/api/v1/destinations", {
        "id": "orders-hook", "type": "webhook",
        "settings": {"url": rx.url + "/hook", "secret": "s3cret", "headers": {"X-Env": "test"}},
        "filter": {"events": ["Order Completed"]},
        "delivery": {"initialBackoffMs": 100, "maxBackoffMs": 1000, "concurrency": 4,
                     "breakerFailures": 1000},
    })
    assert created["settings"]["secret"] == "***" and created["deliveries"]["pending"] == 0
    assert created["settings"]["headers"] == {"X-Env": "***"}, "header values (credentials) are hidden"

    sent: set[str] = set()
    for start in range(0, 300, 50):
        batch = []
        for i in range(start, start + 50):
            m = msg("track", userId=f"buyer-{i % 40}", event="Order Completed",
                    properties={"order_id": f"o-{i}", "revenue": i})
            sent.add(m["messageId"])
            batch.append(m)
            batch.append(msg("track", userId=f"buyer-{i % 40}", event="Product Viewed"))
        send_batch(server, source, batch)

    def all_delivered():
        got = {json.loads(r["body"])["messageId"] for r in rx.accepted()}
        return got >= sent

    wait_until(all_delivered, timeout=60, interval=0.2, what="every order delivered")
    accepted = rx.accepted()
    # Only Order Completed reached it; each message's retries carry one idempotency key.
    by_key: dict[str, set[str]] = {}
    for r in rx.requests:
        body = json.loads(r["body"])
        assert body["event"] == "Order Completed" and r["headers"]["x-env"] == "test"
        by_key.setdefault(r["headers"]["idempotency-key"], set()).add(body["messageId"])
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len(by_key) == 300
    assert len(rx.requests) > len(accepted) >= 300, "some attempts failed and were retried"
    # Signatures verify with the shared secret.
    for r in accepted[:20]:
        t, v1 = (part.split("=", 1)[1] for part in r["headers"]["x-tessera-signature"].split(","))
        expected = hmac.new(b"s3cret", f"{t}.".encode() + r["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
    # Per-profile order: each buyer's orders arrived in the order they were sent.
    first_accept: dict[str, float] = {}
    for r in accepted:
        first_accept.setdefault(json.loads(r["body"])["messageId"], r["at"])
    rows = deliveries(server, destination="orders-hook")
    assert len(rows) == 300 and {d["status"] for d in rows} == {"delivered"}
    by_profile: dict[int, list[dict]] = {}
    for d in rows:
        by_profile.setdefault(d["profileId"], []).append(d)
    for profile_rows in by_profile.values():
        times = [first_accept[d["payload"]["body"]["messageId"]] for d in sorted(profile_rows, key=lambda d: d["id"])]
        assert times == sorted(times)
    assert metric(server, "tessera_deliveries_total", destination="orders-hook", outcome="delivered") == 300
    assert metric(server, "tessera_deliveries_total", destination="orders-hook", outcome="retrying") > 0


def test_a_destination_down_for_a_minute_does_not_slow_another(server_factory, receivers):
    healthy = receivers().start()
    down_port = free_port()
    server = server_factory()
    source = server.create_source("app")
    for dest_id, url in [("fast", healthy.url), ("down", f"http://127.0.0.1:{down_port}")]:
        create(server, "/api/v1/destinations", {
            "id": dest_id, "type": "webhook", "settings": {"url": url + "/in"},
            "filter": {"events": ["Ping"]},
            "delivery": {"initialBackoffMs": 200, "maxBackoffMs": 2000, "breakerFailures": 3,
                         "breakerCooldownMs": 2000, "maxAttempts": 100},
        })
    latencies, sent, breaker_seen = [], [], False
    started = time.time()
    while time.time() - started < 60:
        m = msg("track", userId=f"pinger-{len(sent) % 7}", event="Ping")
        t0 = time.time()
        send_batch(server, source, [m])
        sent.append(m["messageId"])
        wait_until(lambda: any(json.loads(r["body"])["messageId"] == m["messageId"] for r in healthy.accepted()),
                   timeout=10, interval=0.01, what="the healthy destination got the ping")
        latencies.append(time.time() - t0)
        breaker_seen |= metric(server, "tessera_destination_breaker_open", destination="down") == 1
        time.sleep(max(0.0, 2.0 - (time.time() - t0)))
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1.0, f"healthy destination slowed down: p99 {p99:.3f}s over {len(latencies)} pings"
    assert breaker_seen, "the down destination's circuit breaker never opened"
    assert all(d["status"] == "pending" for d in deliveries(server, destination="down"))

    # It comes back: everything queued for it arrives.
    late = receivers(port=down_port).start()
    wait_until(lambda: {json.loads(r["body"])["messageId"] for r in late.accepted()} >= set(sent),
               timeout=WAIT, interval=0.2, what="the recovered destination got every ping")
    wait_until(lambda: metric(server, "tessera_destination_breaker_open", destination="down") == 0,
               timeout=WAIT, what="the breaker closed")


class Mailbox:
    """A real SMTP server (aiosmtpd) collecting messages."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.Message] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                mailbox.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list[email.message.Message]:
        return [m for m in self.messages if address in m["To"]]

    def stop(self):
        self.controller.stop()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


def cart_setup(server, mailbox, wait: str = "3s"):
    create(server, "/api/v1/audiences", {
        "key": "cart", "definition": 'event "Product Added" within 7d and not event "Order Completed" within 7d'})
    create(server, "/api/v1/destinations", {
        "id": "mail", "type": "email", "purpose": "marketing",
        "settings": {
            "smtpUrl": f"smtp://127.0.0.1:{mailbox.port}",
            "from": "Shop <shop@example.com>",
            "subject": "{{ traits.first_name }}, your cart is waiting",
            "text": "Hi {{ traits.first_name }}, you left {{ traits.last_product }} in your cart.",
            "html": "<p>Hi {{ traits.first_name }}, you left <b>{{ traits.last_product }}</b> in your cart.</p>",
            "unsubscribeUrl": "https://shop.example.com/unsubscribe?p={{ profile.id }}",
        },
        "filter": {"includeEvents": False},
    })
    create(server, "/api/v1/journeys", {
        "key": "cart-abandonment", "trigger": {"audienceEntered": "cart"},
        "steps": [
            {"wait": wait},
            {"if": 'not event "Order Completed" within 1h',
             "then": [{"send": {"destination": "mail"}}],
             "else": [{"exit": True}]},
        ],
    })


def sdk(server, source):
    from segment.analytics import Client

    errors: list = []
    client = Client(source.write_key, host=server.url, sync_mode=True, max_retries=1,
                    on_error=lambda e, batch: errors.append(repr(e)))
    client.errors = errors
    return client


def shopper(client, user: str, address: str, name: str, consent: bool | None):
    context = {} if consent is None else {"consent": {"categoryPreferences": {"marketing": consent}}}
    client.identify(user, {"email": address, "first_name": name, "last_product": "Red Shoes"}, context=context)
    client.track(user, "Product Added", {"sku": "SKU-RED", "name": "Red Shoes", "price": 80})


def profile_id(server, identifier: str) -> int:
    def find():
        r = server.admin("GET", "/api/v1/profiles", params={"identifier": identifier})
        return r.json()["id"] if r.status_code == 200 else None

    return wait_until(find, timeout=WAIT, what=f"profile {identifier}")


def test_cart_abandonment_journey_emails_through_smtp_with_consent(server_factory, mailbox):
    server = server_factory()
    source = server.create_source("web")
    cart_setup(server, mailbox)
    client = sdk(server, source)
    t = uuid.uuid4().hex[:6]
    people = {n: (f"{n}-{t}", f"{n}.{t}@example.com") for n in ["ada", "bob", "cy", "dee"]}
    shopper(client, people["ada"][0], people["ada"][1], "Ada", True)
    shopper(client, people["bob"][0], people["bob"][1], "Bob", True)
    client.track(people["bob"][0], "Order Completed", {"revenue": 80})   # bought: no email
    shopper(client, people["cy"][0], people["cy"][1], "Cy", None)        # never consented
    shopper(client, people["dee"][0], people["dee"][1], "Dee", True)
    client.flush()
    assert client.errors == []
    # Dee withdraws consent while waiting.
    r = server.admin("POST", "/api/v1/privacy/consent",
                     json={"identifier": f"email:{people['dee'][1]}", "purposes": {"marketing": False}})
    assert r.status_code == 202, r.text

    wait_until(lambda: mailbox.to(people["ada"][1]), timeout=WAIT, what="Ada's cart email")
    ada_id = profile_id(server, f"user_id:{people['ada'][0]}")
    cy_id = profile_id(server, f"user_id:{people['cy'][0]}")
    dee_id = profile_id(server, f"user_id:{people['dee'][0]}")
    wait_until(lambda: all(
        any(r["state"] != "active" for r in server.admin("GET", f"/api/v1/profiles/{p}/journeys").json()["runs"])
        for p in (cy_id, dee_id)), timeout=WAIT, what="Cy's and Dee's runs finished")
    time.sleep(1.0)
    assert len(mailbox.to(people["ada"][1])) == 1
    for name in ("bob", "cy", "dee"):
        assert mailbox.to(people[name][1]) == [], name

    message = mailbox.to(people["ada"][1])[0]
    assert message["Subject"] == "Ada, your cart is waiting"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["List-Unsubscribe"] == f"<https://shop.example.com/unsubscribe?p={ada_id}>"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in message.walk()
             if not p.is_multipart()}
    assert parts["text/plain"].strip() == "Hi Ada, you left Red Shoes in your cart."
    assert "<b>Red Shoes</b>" in parts["text/html"]

    runs = server.admin("GET", f"/api/v1/profiles/{ada_id}/journeys").json()["runs"]
    assert runs[0]["journey"] == "cart-abandonment" and runs[0]["state"] == "completed"
    actions = [h.get("action") for h in runs[0]["history"]]
    assert actions[:2] == ["entered", "wait"] and "send" in actions
    blocked = {d["profileId"]: d for d in deliveries(server, destination="mail", status="blocked")}
    assert blocked[cy_id]["reason"] == "no consent for marketing"
    assert "consent" in blocked[dee_id]["reason"]
    assert metric(server, "tessera_deliveries_total", destination="mail", outcome="blocked") >= 2
    # The journey never re-enters by default.
    client.track(people["ada"][0], "Product Added", {"sku": "SKU-2"})
    client.flush()
    time.sleep(1.5)
    assert len(server.admin("GET", f"/api/v1/profiles/{ada_id}/journeys").json()["runs"]) == 1


def test_a_journey_resumes_after_a_crash_without_sending_twice(server_factory, mailbox):
    server = server_factory()
    source = server.create_source("web")
    cart_setup(server, mailbox, wait="4s")
    client = sdk(server, source)
    user, address = f"eve-{uuid.uuid4().hex[:6]}", f"eve.{uuid.uuid4().hex[:6]}@example.com"
    shopper(client, user, address, "Eve", True)
    client.flush()
    eve = profile_id(server, f"user_id:{user}")
    wait_until(lambda: server.admin("GET", f"/api/v1/profiles/{eve}/journeys").json()["runs"],
               timeout=WAIT, what="Eve entered the journey")
    server.kill()  # kill -9 in the middle of the wait
    server.start()
    wait_until(lambda: mailbox.to(address), timeout=WAIT, what="Eve's email after the restart")
    time.sleep(2.0)
    assert len(mailbox.to(address)) == 1
    runs = server.admin("GET", f"/api/v1/profiles/{eve}/journeys").json()["runs"]
    assert len(runs) == 1 and runs[0]["state"] == "completed"


def test_sms_crm_file_and_dead_letters_with_cli_retry(server_factory, receivers, tmp_path):
    sms, crm, hook = receivers().start(), receivers().start(), receivers().start()
    hook.mode = "reject"
    server = server_factory()
    web = server.create_source("web")
    crm_source = server.create_source("crm")
    # File destinations write inside [activation] file_dir, by default <data dir>/exports.
    out = server.data_dir / "exports" / "events.jsonl"
    for body in [
        {"id": "texts", "type": "sms", "purpose": "marketing",
         "settings": {"url": sms.url + "/2010-04-01/Accounts/AC1/Messages.json", "username": "AC1",
                      "password": "tok", "from": "+15005550006", "body": "Hi {{ traits.first_name }}: 10% off today"},
         "filter": {"events": ["Coupon Requested"]}},
        {"id": "crm-sync", "type": "crm",
         "settings": {"url": crm.url + "/contacts", "shape": "generic", "token": "crm-token",
                      "mapping": {"first_name": "firstname", "plan": "plan", "email": "email"},
                      "crmSource": crm_source.id, "crmOwned": ["lifecycle"]},
         "filter": {"types": ["identify"], "sources": [web.id]}},
        {"id": "warehouse", "type": "file", "settings": {"path": "events.jsonl"}, "delivery": {"batchSize": 50}},
        {"id": "strict-hook", "type": "webhook", "settings": {"url": hook.url + "/x"},
         "filter": {"events": ["Coupon Requested"]}},
    ]:
        create(server, "/api/v1/destinations", body)
    user = f"fay-{uuid.uuid4().hex[:6]}"
    send_batch(server, crm_source, [msg("identify", userId=user, traits={"plan": "enterprise", "lifecycle": "customer"})])
    time.sleep(0.5)
    send_batch(server, web, [
        msg("identify", userId=user, traits={"first_name": "Fay", "email": "fay@example.com", "phone": "+14155550123"},
            context={"consent": {"categoryPreferences": {"marketing": True}}}),
        msg("track", userId=user, event="Coupon Requested"),
    ])
    wait_until(lambda: sms.accepted() and crm.accepted(), timeout=WAIT, what="SMS and CRM deliveries")
    text = sms.accepted()[0]
    form = parse_qs(text["body"].decode())
    assert form == {"To": ["+14155550123"], "From": ["+15005550006"], "Body": ["Hi Fay: 10% off today"]}
    assert text["headers"]["authorization"].startswith("Basic ")
    upsert = crm.accepted()[-1]
    assert upsert["method"] == "PUT" and upsert["headers"]["authorization"] == "Bearer crm-token"
    # The plan came from the CRM itself: it is never written back.
    assert json.loads(upsert["body"])["properties"] == {"firstname": "Fay", "email": "fay@example.com"}
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, timeout=WAIT,
               what="the file sink got every event")
    assert {json.loads(line)["type"] for line in out.read_text().splitlines()} == {"identify", "track"}

    # 400 is not retryable: dead at once; fixed receiver + CLI retry delivers it.
    wait_until(lambda: deliveries(server, destination="strict-hook", status="dead"), timeout=WAIT,
               what="a dead delivery")
    dead = deliveries(server, destination="strict-hook", status="dead")[0]
    assert dead["attempts"] == 1 and dead["lastError"] == "HTTP 400"
    hook.mode = "normal"
    cp = run_cli("deliveries", "retry", "--destination", "strict-hook", data_dir=server.data_dir, check=True)
    assert json.loads(cp.stdout) == {"retried": 1}
    wait_until(lambda: deliveries(server, destination="strict-hook", status="delivered"), timeout=WAIT,
               what="the retried delivery delivered")
    assert len(hook.accepted()) == 1
    assert hook.accepted()[0]["headers"]["idempotency-key"] == dead["idempotencyKey"]
    audit = server.admin("GET", "/api/v1/audit", params={"action": "deliveries."}).json()["entries"]
    assert audit and audit[-1]["actor"].startswith("cli:")


def test_destination_and_journey_api_validation(server_factory):
    server = server_factory()
    bad = [
        ({"id": "Bad Id", "type": "webhook", "settings": {"url": "http://x"}}, "invalid_activation"),
        ({"id": "h", "type": "webhook", "settings": {"url": "ftp://x"}}, "invalid_activation"),
        ({"id": "h", "type": "pigeon", "settings": {}}, "invalid_activation"),
        ({"id": "m", "type": "email", "settings": {"smtpUrl": "http://x", "from": "a@b.c", "subject": "s", "text": "t"}},
         "invalid_activation"),
        ({"id": "m", "type": "email", "purpose": "telepathy",
          "settings": {"smtpUrl": "smtp://h:25", "from": "a@b.c", "subject": "s", "text": "t"}}, "invalid_activation"),
        ({"id": "m", "type": "email",
          "settings": {"smtpUrl": "smtp://h:25", "from": "a@b.c", "subject": "{% if %}", "text": "t"}},
         "invalid_activation"),
    ]
    for body, code in bad:
        assert_error(server.admin("POST", "/api/v1/destinations", json=body), 400, code, json.dumps(body))
    create(server, "/api/v1/destinations", {"id": "h", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}})
    assert_error(server.admin("POST", "/api/v1/destinations",
                              json={"id": "h", "type": "webhook", "settings": {"url": "http://x"}}),
                 409, "destination_conflict")
    assert_error(server.admin("GET", "/api/v1/destinations/nope"), 404, "destination_not_found")
    for journey, fragment in [
        ({"key": "j", "trigger": {}, "steps": [{"exit": True}]}, "trigger"),
        ({"key": "j", "trigger": {"event": "A"}, "steps": [{"send": {"destination": "nope"}}]}, "steps[0].send"),
        ({"key": "j", "trigger": {"event": "A"}, "steps": [{"wait": "soon"}]}, "steps[0].wait"),
        ({"key": "j", "trigger": {"event": "A"}, "steps": [{"if": "trait =", "then": []}]}, "steps[0].if"),
    ]:
        err = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "invalid_activation")
        assert fragment in err["message"], err
    create(server, "/api/v1/journeys", {"key": "j", "trigger": {"event": "A"},
                                        "steps": [{"send": {"destination": "h"}}]})
    assert_error(server.admin("DELETE", "/api/v1/destinations/h"), 409, "destination_conflict")
    assert_error(server.admin("GET", "/api/v1/journeys/nope"), 404, "journey_not_found")
    assert server.admin("DELETE", "/api/v1/journeys/j").status_code == 204
    assert server.admin("DELETE", "/api/v1/destinations/h").status_code == 204
    assert_error(server.admin("GET", "/api/v1/deliveries", params={"status": "lost"}), 400, "invalid_request")
    for method, path in [("GET", "/api/v1/destinations"), ("POST", "/api/v1/journeys"),
                         ("GET", "/api/v1/deliveries"), ("POST", "/api/v1/deliveries/retry")]:
        assert_error(server.admin(method, path, token=None, json={}), 401, "invalid_admin_token", path)


def test_event_journey_wait_until_frequency_cap_config_destination_and_replay(server_factory, receivers, tmp_path):
    rx = receivers().start()
    config = tmp_path / "tessera.toml"
    config.write_text(f'''
[[activation.destinations]]
id = "hooks"
type = "webhook"
filter = {{ includeEvents = false }}
settings = {{ url = "{rx.url}/journeys" }}
delivery = {{ frequencyCap = {{ max = 1, window = "1h" }} }}
''')
    server = server_factory(extra_env={"TESSERA_CONFIG": str(config)})
    source = server.create_source("app")
    listed = server.admin("GET", "/api/v1/destinations").json()["destinations"]
    assert [d["id"] for d in listed] == ["hooks"], "the configuration file's destination exists"
    create(server, "/api/v1/journeys", {
        "key": "onboarding", "trigger": {"event": "Signed Up"}, "reentry": True,
        "steps": [{"waitUntil": {"event": "Profile Completed", "timeout": "2s"},
                   "then": [{"send": {"destination": "hooks",
                                      "overrides": {"template": '{"kind": "welcome", "user": "{{ event.userId }}"}'}}}],
                   "else": [{"send": {"destination": "hooks",
                                      "overrides": {"template": '{"kind": "nudge", "user": "{{ event.userId }}"}'}}}]}],
    })
    t = uuid.uuid4().hex[:6]
    quick, slow = f"quick-{t}", f"slow-{t}"
    send_batch(server, source, [msg("track", userId=quick, event="Signed Up"),
                                msg("track", userId=slow, event="Signed Up")])
    time.sleep(0.5)
    send_batch(server, source, [msg("track", userId=quick, event="Profile Completed")])
    wait_until(lambda: len(rx.accepted()) == 2, timeout=WAIT, what="welcome and nudge")
    bodies = sorted((json.loads(r["body"])["kind"], json.loads(r["body"])["user"]) for r in rx.accepted())
    assert bodies == [("nudge", slow), ("welcome", quick)]

    # Re-entry is allowed, but the channel's frequency cap (1 per hour) blocks the send.
    send_batch(server, source, [msg("track", userId=quick, event="Signed Up"),
                                msg("track", userId=quick, event="Profile Completed")])
    quick_id = profile_id(server, f"user_id:{quick}")
    wait_until(lambda: len(server.admin("GET", f"/api/v1/profiles/{quick_id}/journeys").json()["runs"]) == 2
               and all(r["state"] == "completed" for r in
                       server.admin("GET", f"/api/v1/profiles/{quick_id}/journeys").json()["runs"]),
               timeout=WAIT, what="the second run finished")
    capped = deliveries(server, destination="hooks", status="blocked")
    assert len(capped) == 1 and capped[0]["reason"].startswith("frequency cap"), capped

    # Restart with a replay of the whole log: nothing is triggered or sent again.
    server.terminate()
    run_cli("replay", data_dir=server.data_dir, check=True)
    server.start()
    send_batch(server, source, [msg("track", userId=f"late-{t}", event="Ping")])
    time.sleep(3.0)
    assert len(rx.accepted()) == 2
    assert len(server.admin("GET", f"/api/v1/profiles/{quick_id}/journeys").json()["runs"]) == 2


def test_a_destination_created_later_gets_what_comes_after_it(server_factory, receivers):
    """With no destination and no journey the fan-out reads no events at all; its cursor
    follows the processor, so a destination created later receives the events sent after
    it, not the history from before it existed."""
    rx = receivers().start()
    server = server_factory()
    source = server.create_source("shop")
    history = [msg("track", userId=f"early-{i % 20}", event="Order Completed") for i in range(300)]
    send_batch(server, source, history)
    wait_until(lambda: metric(server, "tessera_processor_events_total") >= 300
               and metric(server, "tessera_processor_lag_events") == 0,
               timeout=WAIT, what="the history applied to profiles")
    # The fan-out wakes when the processor applied something and waits at most 50 ms
    # otherwise; give it ample time to move its cursor past the history.
    time.sleep(1.0)
    create(server, "/api/v1/destinations", {
        "id": "late-hook", "type": "webhook", "settings": {"url": rx.url + "/hook"},
        "filter": {"events": ["Order Completed"]},
    })
    fresh = [msg("track", userId=f"late-{i}", event="Order Completed") for i in range(5)]
    send_batch(server, source, fresh)
    want = {m["messageId"] for m in fresh}
    wait_until(lambda: {json.loads(r["body"])["messageId"] for r in rx.accepted()} >= want,
               timeout=WAIT, what="the events sent after the destination was created")
    time.sleep(1.0)
    got = [json.loads(r["body"])["messageId"] for r in rx.accepted()]
    assert sorted(got) == sorted(want), "only events after the destination existed, each once"
    assert len(deliveries(server, destination="late-hook")) == 5


def test_latency_from_acknowledgement_is_exported_per_stage(server_factory, receivers):
    """`tessera_ack_latency_seconds{stage}` measures, from each event's acknowledgement,
    when it was applied to its profile, changed an audience membership, and reached a
    destination; the processor does not yield at this light load."""
    rx = receivers().start()
    server = server_factory()
    source = server.create_source("shop")
    create(server, "/api/v1/audiences", {"key": "buyers", "definition": 'event "Order Completed" >= 1'})

    def computed():
        status = server.admin("GET", "/api/v1/audiences/buyers").json()["status"]
        return status["state"] == "ready" and status["computedAtMs"] is not None

    # Once the new audience's first batch computation ran, its changes are realtime.
    wait_until(computed, timeout=WAIT, what="the audience computed")
    create(server, "/api/v1/destinations", {
        "id": "slo-hook", "type": "webhook", "settings": {"url": rx.url + "/hook"},
        "filter": {"events": ["Order Completed"]},
    })
    orders = [msg("track", userId=f"slo-{i}", event="Order Completed") for i in range(20)]
    for start in range(0, 20, 5):
        send_batch(server, source, orders[start:start + 5])
    want = {m["messageId"] for m in orders}
    wait_until(lambda: {json.loads(r["body"])["messageId"] for r in rx.accepted()} >= want,
               timeout=WAIT, what="every order delivered")

    def counts() -> dict[str, float]:
        return {stage: metric(server, "tessera_ack_latency_seconds_count", stage=stage)
                for stage in ("applied", "audience", "delivered")}

    # Each order was applied once, made one new profile enter `buyers`, and was
    # delivered once.
    wait_until(lambda: counts() == {"applied": 20, "audience": 20, "delivered": 20},
               timeout=WAIT, what=f"one observation per event and stage, got {counts()}")
    for stage in ("applied", "audience", "delivered"):
        total = metric(server, "tessera_ack_latency_seconds_sum", stage=stage)
        # Measured from the acknowledgement, not from some earlier time: well under
        # the time the whole test took.
        assert 0 <= total / 20 < WAIT, (stage, total)
        buckets = metric_value(server.metrics(), "tessera_ack_latency_seconds_bucket", stage=stage, le="+Inf")
        assert buckets == 20, (stage, buckets)
    assert metric(server, "tessera_processor_yielding") == 0
    assert metric(server, "tessera_ingest_in_flight") == 0, "every request was answered"
    # The per-destination histogram measures from the acknowledgement too.
    assert metric(server, "tessera_delivery_latency_seconds_count", destination="slo-hook") == 20
