"""The official client libraries talk to Tessera exactly as they talk to Segment /
RudderStack, and every message they send comes back out of `tessera export`
intact.

Clients used (real packages, real HTTP to 127.0.0.1):
  * segment-analytics-python  (segment.analytics.Client)
  * rudder-sdk-python         (rudderstack.analytics, module-level API as documented)
  * @segment/analytics-node   (driven by tests/node/send-with-analytics-node.js)
plus raw HTTP requests shaped like analytics.js in a browser (short endpoints,
text/plain bodies, writeKey in the body) and a CORS preflight.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from tessera_e2e import (
    HTTP_TIMEOUT,
    REPO_ROOT,
    assert_ok,
    assert_server_fields,
    assert_stored_as_sent,
    assert_subset,
    by_message_id,
    iso_ms,
    new_id,
    utcnow,
)

NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_SCRIPT = NODE_DIR / "send-with-analytics-node.js"

UNICODE_NAME = "Zoë Ünïcødé 東京 🚀"


def rich_payloads(tag: str) -> dict:
    """Distinctive traits / properties / context / integrations with nesting,
    unicode (incl. astral-plane emoji), escapes, numbers, booleans and nulls."""
    return {
        "traits": {
            "name": UNICODE_NAME,
            "email": f"zoe+{tag}@example.com",
            "plan": "enterprise",
            "age": 42,
            "vip": True,
            "score": 9.75,
            "nickname": None,
            "address": {"city": "東京", "street": "Straße 1", "geo": {"lat": 35.6762, "lng": 139.6503}},
            "tags": ["α", "β", "🚀"],
            "nested": {"a": [1, [2, {"b": "c"}]], "empty": {}, "none": []},
            "tag": tag,
        },
        "properties": {
            "revenue": 99.95,
            "currency": "EUR",
            "items": [{"sku": "A-1", "qty": 2, "tags": ["x", "ü"]}, {"sku": "B-2", "qty": 1, "tags": []}],
            "coupon": None,
            "emoji": "🚀🎉",
            "quote": 'He said "hi"\n\ttab \\ backslash / slash',
            "big": 9007199254740991,
            "negative": -17,
            "tag": tag,
        },
        "context": {
            "ip": "203.0.113.7",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "campaign": {"name": "spring-sale", "source": "newsletter", "medium": "email"},
            "page": {"path": "/produkte/ü", "url": "https://shop.example/produkte/ü?q=1&r=ß"},
            "device": {"id": f"dev-{tag}", "type": "ios", "adTrackingEnabled": False},
            "custom": {"deep": {"er": [1, 2, {"x": "ÿ"}]}, "tag": tag},
        },
        "integrations": {"All": False, "Mixpanel": True, "Amplitude": {"session_id": 1234567890}},
        "group_traits": {"name": "Acme GmbH & Co. KG", "employees": 1200, "industry": {"primary": "retail"}, "tag": tag},
    }


def check_all_stored(sent: list[dict], stored: list[dict], what: str) -> None:
    index = by_message_id(stored)
    assert {m["type"] for m in sent} == {"identify", "track", "page", "screen", "group", "alias"}, \
        f"{what}: test must exercise every message type"
    missing = [m["messageId"] for m in sent if m["messageId"] not in index]
    assert not missing, f"{what}: {len(missing)} of {len(sent)} messages not in export: {missing}"
    for m in sent:
        assert_stored_as_sent(m, index[m["messageId"]], f"{what} {m['type']}")
    assert len(stored) == len(sent), f"{what}: export has {len(stored)} messages, {len(sent)} were sent"


# --------------------------------------------------------------------------- Segment Python
@pytest.mark.parametrize("mode", ["batched-gzip", "sync"])
def test_segment_python_sdk_messages_of_every_type_are_stored_intact(server, source, export, mode):
    from segment.analytics import Client
    from segment.analytics.version import VERSION

    errors = []
    client = Client(
        source.write_key,
        host=server.url,
        sync_mode=(mode == "sync"),
        gzip=(mode == "batched-gzip"),
        max_retries=1,
        timeout=HTTP_TIMEOUT,
        on_error=lambda e, batch: errors.append((repr(e), batch)),
    )
    p = rich_payloads(uuid.uuid4().hex[:8])
    user, anon = new_id("user-ü"), new_id("anon")
    c = lambda: copy.deepcopy(p["context"])  # noqa: E731  (the SDK writes context.library into it)
    results = [
        client.identify(user, copy.deepcopy(p["traits"]), context=c(), integrations=p["integrations"]),
        client.track(user, "Order Completed ✓ — 注文", copy.deepcopy(p["properties"]), context=c(),
                     integrations=p["integrations"]),
        client.page(anonymous_id=anon, category="Docs", name="Getting Started — Ünïcødé",
                    properties={"path": "/docs/ü", "referrer": None}, context=c()),
        client.screen(user, "App", "Home 🏠", {"variant": "B", "depth": {"x": [1, 2]}}, context=c(), anonymous_id=anon),
        client.group(user, "grp-" + uuid.uuid4().hex, copy.deepcopy(p["group_traits"]), context=c(),
                     integrations=p["integrations"]),
        client.alias(anon, user, context=c()),
        client.track(anonymous_id=anon, event="Empty Props"),
        client.track(user_id=12345, event="Numeric user id"),  # SDK stringifies ids
    ]
    if mode != "sync":
        client.flush()
        client.join()
    assert not errors, f"SDK reported delivery errors: {errors}"
    assert all(ok for ok, _ in results), results
    sent = [msg for _, msg in results]
    # sanity: this is what the SDK really put on the wire
    assert sent[0]["context"]["library"] == {"name": "analytics-python", "version": VERSION}
    assert sent[-1]["userId"] == "12345"

    stored = export(server.data_dir)
    check_all_stored(sent, stored, f"segment-python[{mode}]")
    # the SDK sends writeKey in the batch body; it must not end up anywhere in the store's output
    assert source.write_key not in json.dumps(stored, ensure_ascii=False)


# --------------------------------------------------------------------------- RudderStack Python
def test_rudderstack_python_sdk_messages_of_every_type_are_stored_intact(server, source, export):
    import rudderstack.analytics as rudder_analytics
    from rudderstack.analytics.version import VERSION

    errors = []
    saved = {k: getattr(rudder_analytics, k) for k in
             ("write_key", "dataPlaneUrl", "on_error", "max_retries", "sync_mode", "gzip")}
    rudder_analytics.default_client = None
    rudder_analytics.write_key = source.write_key
    rudder_analytics.dataPlaneUrl = server.url  # as in RudderStack's docs
    rudder_analytics.on_error = lambda e, batch: errors.append((repr(e), batch))
    rudder_analytics.max_retries = 1
    rudder_analytics.sync_mode = False
    rudder_analytics.gzip = True  # the SDK's default: gzip-compressed /v1/batch

    p = rich_payloads(uuid.uuid4().hex[:8])
    user, anon = new_id("rudder-user-ü"), new_id("rudder-anon")
    base = utcnow() - timedelta(seconds=3)
    ts = [base + timedelta(milliseconds=7 * i, microseconds=123) for i in range(7)]
    ids = [str(uuid.uuid4()) for _ in range(7)]
    c = lambda: copy.deepcopy(p["context"])  # noqa: E731
    try:
        rudder_analytics.identify(user, copy.deepcopy(p["traits"]), context=c(), timestamp=ts[0],
                                  integrations=p["integrations"], message_id=ids[0])
        rudder_analytics.track(user, "Order Completed ✓ — 注文", copy.deepcopy(p["properties"]), context=c(),
                               timestamp=ts[1], integrations=p["integrations"], message_id=ids[1])
        rudder_analytics.page(anonymous_id=anon, category="Docs", name="Getting Started — Ünïcødé",
                              properties={"path": "/docs/ü"}, context=c(), timestamp=ts[2], message_id=ids[2])
        rudder_analytics.screen(user, "App", "Home 🏠", {"variant": "B"}, context=c(), timestamp=ts[3],
                                message_id=ids[3])
        group_id = "grp-" + uuid.uuid4().hex
        rudder_analytics.group(user, group_id, copy.deepcopy(p["group_traits"]), context=c(), timestamp=ts[4],
                               message_id=ids[4])
        rudder_analytics.alias(anon, user, context=c(), timestamp=ts[5], message_id=ids[5])
        rudder_analytics.track(anonymous_id=anon, event="Empty Props", timestamp=ts[6], message_id=ids[6])
        rudder_analytics.flush()
        rudder_analytics.shutdown()
    finally:
        rudder_analytics.default_client = None
        for k, v in saved.items():
            setattr(rudder_analytics, k, v)
    assert not errors, f"RudderStack SDK reported delivery errors: {errors}"

    library = {"name": "analytics-python", "version": VERSION}
    ctx = dict(copy.deepcopy(p["context"]), library=library)
    integ = p["integrations"]
    common = {"channel": "server"}  # RudderStack-specific top-level field: unknown fields are kept
    expected = [
        # RudderStack puts identify traits in context.traits (not top-level)
        dict(common, type="identify", userId=user, context=dict(ctx, traits=p["traits"]), integrations=integ),
        dict(common, type="track", userId=user, event="Order Completed ✓ — 注文", properties=p["properties"],
             context=ctx, integrations=integ),
        dict(common, type="page", anonymousId=anon, category="Docs", name="Getting Started — Ünïcødé",
             properties={"path": "/docs/ü"}, context=ctx, integrations={"All": True}),
        dict(common, type="screen", userId=user, category="App", name="Home 🏠", properties={"variant": "B"},
             context=ctx),
        dict(common, type="group", userId=user, groupId=group_id, traits=p["group_traits"], context=ctx),
        dict(common, type="alias", userId=user, previousId=anon, context=ctx),
        dict(common, type="track", anonymousId=anon, event="Empty Props", properties={}),
    ]
    for i, e in enumerate(expected):
        e["messageId"] = ids[i]
        e["timestamp"] = ts[i].isoformat()  # exactly what the SDK sends (microseconds, +00:00)

    stored = export(server.data_dir)
    check_all_stored(expected, stored, "rudder-python")


# --------------------------------------------------------------------------- Segment Node
def run_node_sdk(server, write_key: str, calls: list[dict], tmp_path: Path, settings: dict | None = None) -> dict:
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir(), \
        "tests/node/node_modules missing: run tests/setup-env.sh"
    plan = tmp_path / "node-plan.json"
    plan.write_text(json.dumps({"host": server.url, "writeKey": write_key, "calls": calls,
                                "settings": settings or {}}, ensure_ascii=False))
    p = subprocess.run([node, str(NODE_SCRIPT), str(plan)], cwd=NODE_DIR, capture_output=True, timeout=90)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, f"node SDK script failed ({p.returncode}):\n{err}\n{out}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("flush_at", [15, 1])
def test_segment_node_sdk_messages_of_every_type_are_stored_intact(server, source, export, tmp_path, flush_at):
    p = rich_payloads(uuid.uuid4().hex[:8])
    user, anon = new_id("node-user-ü"), new_id("node-anon")
    integ = p["integrations"]
    calls = [
        {"method": "identify", "params": {"userId": user, "traits": p["traits"], "context": p["context"],
                                           "integrations": integ}},
        {"method": "track", "params": {"userId": user, "event": "Order Completed ✓ — 注文",
                                        "properties": p["properties"], "context": p["context"], "integrations": integ}},
        {"method": "page", "params": {"anonymousId": anon, "category": "Docs", "name": "Getting Started — Ünïcødé",
                                       "properties": {"path": "/docs/ü"}, "context": p["context"]}},
        {"method": "screen", "params": {"userId": user, "anonymousId": anon, "name": "Home 🏠",
                                         "properties": {"variant": "B", "depth": {"x": [1, 2]}}}},
        {"method": "group", "params": {"userId": user, "groupId": "grp-" + uuid.uuid4().hex,
                                        "traits": p["group_traits"], "context": p["context"], "integrations": integ}},
        {"method": "alias", "params": {"userId": user, "previousId": anon, "context": p["context"]}},
        {"method": "track", "params": {"anonymousId": anon, "event": "Explicit id & time",
                                        "messageId": "node-explicit-" + uuid.uuid4().hex,
                                        "timestamp": iso_ms(utcnow() - timedelta(seconds=5))}},
    ]
    out = run_node_sdk(server, source.write_key, calls, tmp_path, settings={"flushAt": flush_at})
    assert not out["errors"], f"node SDK errors: {out['errors']}; responses: {out['responses']}"
    assert all(cb["error"] is None for cb in out["callbacks"]), out["callbacks"]
    assert len(out["callbacks"]) == len(calls)
    assert out["responses"] and all(r["status"] == 200 for r in out["responses"]), out["responses"]
    assert all(r["url"].endswith("/v1/batch") for r in out["responses"])
    sent = out["sent"]
    assert len(sent) == len(calls)
    assert sent[0]["context"]["library"]["name"] == "@segment/analytics-node"

    stored = export(server.data_dir)
    check_all_stored(sent, stored, f"analytics-node[flushAt={flush_at}]")
    for call, msg in zip(calls, sent):
        # what the test asked for is exactly what came out (not just what the SDK sent)
        want = {k: v for k, v in call["params"].items() if k not in ("timestamp",)}
        assert_subset(want, by_message_id(stored)[msg["messageId"]], f"node {call['method']}")


# --------------------------------------------------------------------------- browser (analytics.js shape)
def test_browser_short_endpoints_accept_text_plain_with_write_key_in_body(server, source, export):
    """analytics.js posts one event per request to /v1/{t,p,i,s,g,a} with
    Content-Type: text/plain (no CORS preflight), writeKey and sentAt in the body,
    and no Authorization header; its batching mode uses /v1/b."""
    anon = new_id("browser-anon")
    user = new_id("browser-user")
    now = utcnow()
    ctx = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {"path": "/pricing", "referrer": "", "search": "?utm_source=ü", "title": "Preise – Ünïcødé",
                 "url": "https://www.example.com/pricing?utm_source=%C3%BC"},
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) e2e",
        "locale": "fr-FR",
        "campaign": {"source": "ü"},
    }

    def msg(mtype, **fields):
        return dict(type=mtype, anonymousId=anon, messageId="ajs-next-" + uuid.uuid4().hex,
                    timestamp=iso_ms(now), context=ctx, integrations={}, **fields)

    messages = {
        "/v1/t": msg("track", event="Clicked CTA 🚀", properties={"button": {"id": "buy", "pos": [1, 2]}}),
        "/v1/p": msg("page", name="Pricing", category="Marketing", properties={"path": "/pricing", "title": "Preise"}),
        "/v1/i": msg("identify", userId=user, traits={"email": "b@example.com", "prefs": {"lang": "fr"}}),
        "/v1/s": msg("screen", name="Settings", properties={"tab": "privacy"}),
        "/v1/g": msg("group", userId=user, groupId="grp-browser", traits={"name": "Ünïcødé SARL"}),
        "/v1/a": msg("alias", userId=user, previousId=anon),
    }
    session = requests.Session()
    for path, m in messages.items():
        body = dict(m, writeKey=source.write_key, sentAt=iso_ms(utcnow()))
        # sendBeacon / fetch in browsers label the body "text/plain;charset=UTF-8"
        ctype = "text/plain;charset=UTF-8" if path in ("/v1/t", "/v1/p") else "text/plain"
        r = server.post(path, raw=json.dumps(body).encode(), content_type=ctype, session=session,
                        headers={"Origin": "https://www.example.com"})
        assert_ok(r, f"POST {path} text/plain")
        allow = r.headers.get("Access-Control-Allow-Origin")
        assert allow in ("*", "https://www.example.com"), f"{path}: CORS header missing on response: {allow!r}"

    batched = [msg("track", event=f"Batched {i}", properties={"i": i}) for i in range(3)]
    r = server.post("/v1/b", raw=json.dumps({"batch": batched, "writeKey": source.write_key,
                                             "sentAt": iso_ms(utcnow())}).encode(),
                    content_type="text/plain", session=session)
    assert_ok(r, "POST /v1/b text/plain")

    stored = by_message_id(export(server.data_dir))
    for path, m in list(messages.items()) + [("/v1/b", b) for b in batched]:
        s = stored.get(m["messageId"])
        assert_stored_as_sent(m, s, f"browser {path}")
        assert "writeKey" not in s
        assert isinstance(s.get("sentAt"), str), f"{path}: sentAt sent in the body should be stored: {s}"
    assert len(stored) == len(messages) + len(batched)


def test_cors_preflight_allows_browsers_to_post_json_with_authorization(server, source):
    origin = "https://app.example.org"
    for path in ("/v1/t", "/v1/track", "/v1/batch"):
        r = requests.options(server.url + path, headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        }, timeout=HTTP_TIMEOUT)
        assert r.status_code in (200, 204), f"preflight {path}: {r.status_code} {r.text!r}"
        allow_origin = r.headers.get("Access-Control-Allow-Origin")
        assert allow_origin in ("*", origin), f"preflight {path}: Allow-Origin={allow_origin!r}"
        methods = r.headers.get("Access-Control-Allow-Methods", "")
        assert methods == "*" or "POST" in methods.upper(), f"preflight {path}: Allow-Methods={methods!r}"
        allowed_headers = r.headers.get("Access-Control-Allow-Headers", "").lower()
        assert allowed_headers == "*" or ("content-type" in allowed_headers and "authorization" in allowed_headers), \
            f"preflight {path}: Allow-Headers={allowed_headers!r}"

    # and the real request that follows the preflight works, with the CORS header on it
    r = server.post("/v1/track", {"userId": "cors-user", "event": "After Preflight"}, write_key=source.write_key,
                    headers={"Origin": origin})
    assert_ok(r, "POST /v1/track after preflight")
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin)


def test_cors_is_only_on_the_tracking_endpoints(server):
    origin = "https://app.example.org"
    for path in ("/api/v1/sources", "/api/v1/audiences", "/api/v1/profiles",
                 "/v1/spaces/default/collections/users/profiles/user_id:x/traits"):
        r = requests.options(server.url + path, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }, timeout=HTTP_TIMEOUT)
        assert "Access-Control-Allow-Origin" not in r.headers, f"{path} answers a CORS preflight"
        r = server.admin("GET", path, headers={"Origin": origin}) if path.startswith("/api") else requests.get(
            server.url + path, headers={"Origin": origin}, timeout=HTTP_TIMEOUT)
        assert "Access-Control-Allow-Origin" not in r.headers, f"{path} sends CORS headers"


def test_many_sdk_clients_at_once_all_messages_arrive(server, source, export):
    """Four Segment Python clients on threads, batching concurrently, 50 tracks each."""
    from segment.analytics import Client

    errors, sent, lock = [], [], threading.Lock()

    def worker(n):
        client = Client(source.write_key, host=server.url, max_retries=1, upload_size=20,
                        on_error=lambda e, b: errors.append(repr(e)))
        for i in range(50):
            ok, m = client.track(f"conc-{n}", f"Concurrent {n}", {"i": i, "n": n})
            with lock:
                sent.append(m)
        client.flush()
        client.join()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "SDK threads did not finish"
    assert not errors, errors
    stored = by_message_id(export(server.data_dir))
    assert len(stored) == 200
    for m in sent:
        assert_stored_as_sent(m, stored.get(m["messageId"]), "concurrent segment-python")
        assert_server_fields(stored[m["messageId"]])


def test_segment_python_sdk_receives_tessera_error_codes(server, source):
    """The SDK parses {"code","message"} from error responses: a disabled source shows up
    in its on_error callback as APIError(status=401, code="source_disabled"), not retried."""
    from segment.analytics import Client
    from segment.analytics.request import APIError

    assert server.admin("POST", f"/api/v1/sources/{source.id}/disable").status_code == 200
    errors = []
    client = Client(source.write_key, host=server.url, max_retries=3, upload_interval=0.1,
                    on_error=lambda e, batch: errors.append(e))
    client.track("sdk-user", "Refused")
    client.flush()
    client.join()
    assert len(errors) == 1, errors
    e = errors[0]
    assert isinstance(e, APIError) and e.status == 401 and e.code == "source_disabled", repr(e)
    assert e.message


def test_largest_messages_and_batches_the_python_sdk_produces_are_accepted(server, source, export):
    """analytics-python drops messages over 32 KiB (32768 bytes) and cuts batches at
    475,000 bytes. Anything up to those sizes must be accepted. (The Node SDK's own
    size estimate does not count bytes, so it is not used here; the raw-HTTP test of
    the 500 KB limit covers its nominal 480 KiB batches.)"""
    from segment.analytics import Client
    from segment.analytics.consumer import MAX_MSG_SIZE

    errors = []
    client = Client(source.write_key, host=server.url, max_retries=1,
                    on_error=lambda e, batch: errors.append(repr(e)))
    sent = []
    for i in range(16):
        props = {"i": i, "blob": ""}
        # the message as the SDK will build it, to size the blob so that it lands just under the limit
        base = {"integrations": {}, "anonymousId": None, "properties": props,
                "timestamp": "2026-01-01T00:00:00.000+00:00",
                "context": {"library": {"name": "analytics-python", "version": "0.0.0"}}, "userId": "big-python",
                "type": "track", "event": "Big", "messageId": str(uuid.uuid4())}
        room = MAX_MSG_SIZE - len(json.dumps(base)) - 64  # slack for the real version string
        props["blob"] = "x" * room
        ok, msg = client.track("big-python", "Big", props)
        assert ok
        assert MAX_MSG_SIZE - 200 < len(json.dumps(msg).encode()) <= MAX_MSG_SIZE
        sent.append(msg)
    client.flush()
    client.join()
    assert not errors, f"Python SDK batches near its limits were refused: {errors[:2]}"

    stored = by_message_id(export(server.data_dir))
    for m in sent:
        assert m["messageId"] in stored
        assert stored[m["messageId"]]["properties"] == m["properties"]
    assert len(stored) == len(sent)
