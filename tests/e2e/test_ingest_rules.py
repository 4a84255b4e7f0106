"""Ingest rules of the Tracking API, checked with raw HTTP against the real server:
what is accepted, what is rejected with which status and `code`, and what the
stored message looks like (`tessera export`)."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
import uuid
from datetime import timedelta

import pytest
import requests

from tessera_e2e import (
    HTTP_TIMEOUT,
    assert_error,
    assert_ok,
    assert_server_fields,
    assert_stored_as_sent,
    basic_auth,
    by_message_id,
    iso_ms,
    metric_names,
    metric_value,
    new_id,
    parse_ts,
    utcnow,
    wait_until,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def track(**kw) -> dict:
    m = {"type": "track", "userId": "u-rules", "event": "Rule Checked", "messageId": new_id("m")}
    m.update(kw)
    return {k: v for k, v in m.items() if v is not ...}


def batch_body(messages, **extra) -> dict:
    return dict({"batch": messages}, **extra)


def padded_track(total_bytes: int, **kw) -> dict:
    """A track message whose JSON encoding is about total_bytes long."""
    m = track(properties={"blob": ""}, **kw)
    overhead = len(json.dumps(m))
    m["properties"]["blob"] = "x" * max(0, total_bytes - overhead)
    return m


def stored_ids(export, server) -> list[str]:
    return [e["messageId"] for e in export(server.data_dir)]


# --------------------------------------------------------------------------- accepted shapes
@pytest.mark.parametrize("path,mtype,extra", [
    ("/v1/identify", "identify", {"traits": {"plan": "pro"}}),
    ("/v1/track", "track", {"event": "Signed Up", "properties": {"k": 1}}),
    ("/v1/page", "page", {"name": "Home", "properties": {"path": "/"}}),
    ("/v1/screen", "screen", {"name": "Dashboard"}),
    ("/v1/group", "group", {"groupId": "g-1", "traits": {"name": "Acme"}}),
    ("/v1/alias", "alias", {"previousId": "anon-1"}),
    ("/v1/i", "identify", {"traits": {"plan": "pro"}}),
    ("/v1/t", "track", {"event": "Signed Up"}),
    ("/v1/p", "page", {"name": "Home"}),
    ("/v1/s", "screen", {"name": "Dashboard"}),
    ("/v1/g", "group", {"groupId": "g-1"}),
    ("/v1/a", "alias", {"previousId": "anon-1"}),
])
def test_single_message_endpoint_stores_message_with_type_from_endpoint(server, source, export, path, mtype, extra):
    """Server-side libraries post to /v1/<type> without a `type` field."""
    mid = new_id("single")
    body = dict({"userId": "user-single", "messageId": mid, "unknownTopLevel": {"kept": [1, "two"]}}, **extra)
    assert_ok(server.post(path, body, write_key=source.write_key), f"POST {path}")
    stored = by_message_id(export(server.data_dir))
    assert list(stored) == [mid]
    s = stored[mid]
    assert s["type"] == mtype
    assert_stored_as_sent(body, s, path)  # unknown fields are kept


def test_import_endpoint_accepts_a_batch(server, source, export):
    msgs = [track(timestamp=iso_ms(utcnow() - timedelta(days=3))) for _ in range(3)]
    assert_ok(server.post("/v1/import", batch_body(msgs), write_key=source.write_key), "POST /v1/import")
    stored = by_message_id(export(server.data_dir))
    for m in msgs:
        assert_stored_as_sent(m, stored.get(m["messageId"]), "import", max_skew=None)


def test_write_key_in_json_body_authenticates_and_is_not_stored(server, source, export):
    single = dict(track(), writeKey=source.write_key)
    assert_ok(server.post("/v1/track", single), "writeKey in single body")
    item_with_key = dict(track(), writeKey=source.write_key)
    assert_ok(server.post("/v1/batch", batch_body([track(), item_with_key], writeKey=source.write_key)),
              "writeKey in batch body")
    stored = export(server.data_dir)
    assert len(stored) == 3
    for s in stored:
        assert "writeKey" not in s, s
    assert source.write_key not in json.dumps(stored)


def test_numeric_user_ids_are_stored_as_strings(server, source, export):
    m1 = track(userId=4711)
    m2 = {"type": "identify", "anonymousId": 42, "messageId": new_id("num"), "traits": {"n": 1}}
    m3 = {"type": "alias", "userId": 7, "previousId": "anon-7", "messageId": new_id("num")}
    assert_ok(server.post("/v1/batch", batch_body([m1, m2, m3]), write_key=source.write_key))
    stored = by_message_id(export(server.data_dir))
    assert stored[m1["messageId"]]["userId"] == "4711"
    assert stored[m2["messageId"]]["anonymousId"] == "42"
    assert stored[m3["messageId"]]["userId"] == "7"


def test_message_id_is_generated_when_absent(server, source, export):
    a = {"type": "track", "userId": "no-mid", "event": "No Message Id"}
    assert_ok(server.post("/v1/batch", batch_body([dict(a), dict(a)]), write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": "no-mid", "event": "No Message Id"}, write_key=source.write_key))
    stored = export(server.data_dir)
    assert len(stored) == 3, "identical messages without messageId are distinct messages, not duplicates"
    ids = [s["messageId"] for s in stored]
    assert len(set(ids)) == 3, ids
    for mid in ids:
        assert UUID_RE.match(mid), f"generated messageId is not a uuid: {mid!r}"
    for s in stored:
        assert_server_fields(s)


# --------------------------------------------------------------------------- dedup
def test_duplicate_message_id_is_stored_once(server, source, export):
    m = track(properties={"attempt": 1})
    for _ in range(3):  # an SDK retrying after a timeout sends the same messageId again
        assert_ok(server.post("/v1/track", m, write_key=source.write_key), "repeat")
    again_in_batch = track(properties={"attempt": 2})
    assert_ok(server.post("/v1/batch", batch_body([again_in_batch, dict(again_in_batch), m]),
                          write_key=source.write_key), "duplicates inside one batch")
    stored = export(server.data_dir)
    ids = [s["messageId"] for s in stored]
    assert sorted(ids) == sorted([m["messageId"], again_in_batch["messageId"]]), ids
    assert metric_value(server.metrics(), "tessera_events_duplicate_total") >= 3


def test_same_message_id_in_another_source_is_a_different_message(server, source, export):
    other = server.create_source("e2e-other")
    m = track()
    assert_ok(server.post("/v1/track", m, write_key=source.write_key))
    assert_ok(server.post("/v1/track", m, write_key=other.write_key))
    assert len(export(server.data_dir, source=source.id)) == 1
    assert len(export(server.data_dir, source=other.id)) == 1
    assert len(export(server.data_dir)) == 2


# --------------------------------------------------------------------------- encodings
def test_gzip_bodies_are_accepted_and_bad_encodings_rejected(server, source, export):
    m1, m2 = track(properties={"enc": "gzip-batch"}), track(properties={"enc": "gzip-single"})
    assert_ok(server.post("/v1/batch", batch_body([m1]), write_key=source.write_key, gzip_body=True), "gzip batch")
    assert_ok(server.post("/v1/track", m2, write_key=source.write_key, gzip_body=True), "gzip single")
    m3 = track(properties={"enc": "identity"})
    assert_ok(server.post("/v1/track", m3, write_key=source.write_key, headers={"Content-Encoding": "identity"}),
              "Content-Encoding: identity")

    r = server.post("/v1/batch", raw=b"\x1f\x8b\x08\x00this is not gzip", write_key=source.write_key,
                    headers={"Content-Encoding": "gzip"})
    assert_error(r, 400, "invalid_gzip", "corrupt gzip")
    truncated = gzip.compress(json.dumps(batch_body([track()])).encode())[:-12]
    r = server.post("/v1/batch", raw=truncated, write_key=source.write_key, headers={"Content-Encoding": "gzip"})
    assert_error(r, 400, "invalid_gzip", "truncated gzip")
    r = server.post("/v1/batch", batch_body([track()]), write_key=source.write_key, headers={"Content-Encoding": "br"})
    assert_error(r, 415, "unsupported_encoding", "Content-Encoding: br")
    r = server.post("/v1/track", track(), write_key=source.write_key, headers={"Content-Encoding": "deflate"})
    assert_error(r, 415, "unsupported_encoding", "Content-Encoding: deflate")

    stored = by_message_id(export(server.data_dir))
    assert set(stored) == {m1["messageId"], m2["messageId"], m3["messageId"]}
    assert stored[m1["messageId"]]["properties"] == {"enc": "gzip-batch"}


# --------------------------------------------------------------------------- malformed requests
@pytest.mark.parametrize("raw", [b"{", b'{"batch": [', b"not json at all", b'{"type":"track",}',
                                 b'{"a":1} trailing', b"\xff\xfe\x00garbage", b""])
def test_malformed_json_is_400_invalid_json(server, source, raw):
    for path in ("/v1/batch", "/v1/track"):
        r = server.post(path, raw=raw, write_key=source.write_key)
        assert_error(r, 400, "invalid_json", f"POST {path} {raw!r}")


@pytest.mark.parametrize("path,body", [
    ("/v1/batch", {"batch": {"type": "track"}}),
    ("/v1/batch", {"batch": "not-a-list"}),
    ("/v1/batch", {"nobatch": []}),
    ("/v1/batch", [{"type": "track", "userId": "u", "event": "e"}]),
    ("/v1/track", [{"userId": "u", "event": "e"}]),
    ("/v1/track", "a string"),
    ("/v1/identify", 42),
])
def test_json_of_the_wrong_shape_is_400_invalid_body(server, source, export, path, body):
    assert_error(server.post(path, body, write_key=source.write_key), 400, "invalid_body", f"POST {path} {body!r}")
    assert export(server.data_dir) == []


# --------------------------------------------------------------------------- size limits
def test_message_over_32kb_is_413_message_too_large(server, source, export):
    ok = padded_track(30 * 1024)
    assert_ok(server.post("/v1/track", ok, write_key=source.write_key), "30 KB message")
    big = padded_track(33 * 1024)
    assert_error(server.post("/v1/track", big, write_key=source.write_key), 413, "message_too_large", "33 KB message")
    big2 = padded_track(40 * 1024)
    assert_error(server.post("/v1/track", big2, write_key=source.write_key, gzip_body=True), 413,
                 "message_too_large", "40 KB message, gzipped")

    # inside a batch: the big one is refused, the others are not lost
    small = track()
    r = server.post("/v1/batch", batch_body([small, padded_track(33 * 1024)]), write_key=source.write_key)
    if r.status_code == 200:
        rej = r.json().get("rejected")
        assert rej and [x["index"] for x in rej] == [1] and rej[0]["code"] == "message_too_large", r.text
        expected = {ok["messageId"], small["messageId"]}
    else:
        assert_error(r, 413, "message_too_large", "batch holding a 33 KB message")
        expected = {ok["messageId"]}
    assert set(stored_ids(export, server)) == expected


def test_batch_over_500kb_is_413_batch_too_large(server, source, export):
    # 13 x 30 KB = 390 KB: fine
    fine = [padded_track(30 * 1024) for _ in range(13)]
    assert_ok(server.post("/v1/batch", batch_body(fine), write_key=source.write_key), "390 KB batch")
    # just under 480 KiB, the batch size analytics-node aims for: fine
    node_sized = [padded_track(30 * 1024) for _ in range(16)]
    node_body = json.dumps(batch_body(node_sized)).encode()
    assert 480 * 1024 - 2048 < len(node_body) <= 480 * 1024 + 1024, len(node_body)
    assert_ok(server.post("/v1/batch", raw=node_body, write_key=source.write_key), f"{len(node_body)}-byte batch")
    fine += node_sized
    # 20 x 30 KB = 600 KB: too large
    too_big = [padded_track(30 * 1024) for _ in range(20)]
    r = server.post("/v1/batch", batch_body(too_big), write_key=source.write_key)
    assert_error(r, 413, "batch_too_large", "600 KB batch")
    # the limit applies after gunzip: this body compresses to a few KB
    r = server.post("/v1/batch", batch_body(too_big), write_key=source.write_key, gzip_body=True)
    assert_error(r, 413, "batch_too_large", "600 KB batch, gzipped")
    # a gzip bomb (50 MB of whitespace in ~50 KB) is refused without inflating it all
    bomb = gzip.compress(b'{"batch":[' + b" " * 50_000_000 + b"]}", compresslevel=9)
    t0 = time.monotonic()
    r = server.post("/v1/batch", raw=bomb, write_key=source.write_key, headers={"Content-Encoding": "gzip"})
    assert_error(r, 413, "batch_too_large", "gzip bomb")
    assert time.monotonic() - t0 < 5, "a gzip bomb should be cut off at the limit, not inflated"
    # a single huge text/plain body on a short endpoint
    r = server.post("/v1/b", batch_body(too_big, writeKey=source.write_key), content_type="text/plain")
    assert_error(r, 413, "batch_too_large", "600 KB batch on /v1/b")

    assert sorted(stored_ids(export, server)) == sorted(m["messageId"] for m in fine)


def test_batch_of_more_than_2500_messages_is_413_too_many_messages(server, source, export):
    def tiny(i):
        return {"type": "track", "userId": "u", "event": "e", "messageId": f"t-{uuid.uuid4().hex[:12]}-{i}"}

    over = [tiny(i) for i in range(2501)]
    r = server.post("/v1/batch", batch_body(over), write_key=source.write_key)
    assert_error(r, 413, "too_many_messages", "2,501 messages")
    assert export(server.data_dir) == []

    exactly = [tiny(i) for i in range(2500)]
    assert_ok(server.post("/v1/batch", batch_body(exactly), write_key=source.write_key), "2,500 messages")
    ids = stored_ids(export, server)
    assert len(ids) == 2500 and set(ids) == {m["messageId"] for m in exactly}


# --------------------------------------------------------------------------- per-message validation
INVALID_MESSAGES = [
    # (name, message, code)
    ("traits as string", {"type": "identify", "userId": "u", "traits": "vip"}, "invalid_field_type"),
    ("event as number", {"type": "track", "userId": "u", "event": 42}, "invalid_field_type"),
    ("properties as list", {"type": "track", "userId": "u", "event": "e", "properties": [1, 2]},
     "invalid_field_type"),
    ("context as string", {"type": "page", "userId": "u", "context": "ctx"}, "invalid_field_type"),
    ("no userId or anonymousId", {"type": "track", "event": "e"}, "missing_user_id"),
    ("null userId and anonymousId", {"type": "identify", "userId": None, "anonymousId": None, "traits": {}},
     "missing_user_id"),
    ("track without event", {"type": "track", "userId": "u", "properties": {}}, "missing_event"),
    ("alias without previousId", {"type": "alias", "userId": "u"}, "missing_previous_id"),
    ("group without groupId", {"type": "group", "userId": "u", "traits": {}}, "missing_group_id"),
    ("messageId of 101 chars", {"type": "track", "userId": "u", "event": "e", "messageId": "m" * 101},
     "message_id_too_long"),
    ("timestamp not a date", {"type": "track", "userId": "u", "event": "e", "timestamp": "yesterday-ish"},
     "invalid_timestamp"),
]


@pytest.mark.parametrize("name,msg,code", INVALID_MESSAGES, ids=[x[0] for x in INVALID_MESSAGES])
def test_invalid_message_on_single_endpoint_is_400_with_specific_code(server, source, export, name, msg, code):
    path = "/v1/" + msg["type"]
    body = {k: v for k, v in msg.items() if k != "type"}
    assert_error(server.post(path, body, write_key=source.write_key), 400, code, f"{name} on {path}")
    assert export(server.data_dir) == []


def test_message_id_of_exactly_100_chars_is_accepted(server, source, export):
    m = track(messageId="k" * 100)
    assert_ok(server.post("/v1/track", m, write_key=source.write_key))
    assert stored_ids(export, server) == ["k" * 100]


def test_batch_with_some_invalid_messages_stores_valid_ones_and_lists_rejected(server, source, export):
    valid = [track(properties={"i": i}) for i in range(4)]
    invalid = [dict({"messageId": new_id("bad")}, **m) for _, m, _ in INVALID_MESSAGES]
    invalid.append({"type": "bogus", "userId": "u", "messageId": new_id("bad")})
    codes = [c for _, _, c in INVALID_MESSAGES] + ["invalid_type"]
    batch, expected_rejected = [], []
    for i, m in enumerate(invalid):
        batch.append(valid[i] if i < len(valid) else track())
        expected_rejected.append((len(batch), codes[i]))
        batch.append(m)
    r = server.post("/v1/batch", batch_body(batch), write_key=source.write_key)
    body = assert_ok(r, "mixed batch")
    rejected = body.get("rejected")
    assert isinstance(rejected, list), body
    got = sorted((x["index"], x["code"]) for x in rejected)
    assert got == sorted(expected_rejected), f"rejected list wrong:\n got {got}\nwant {sorted(expected_rejected)}"
    for x in rejected:
        assert isinstance(x.get("message"), str) and x["message"], x

    stored = by_message_id(export(server.data_dir))
    valid_sent = [m for i, m in enumerate(batch) if i not in {j for j, _ in expected_rejected}]
    assert set(stored) == {m["messageId"] for m in valid_sent}
    for m in valid_sent:
        assert_stored_as_sent(m, stored[m["messageId"]], "valid part of mixed batch")


def test_batch_in_which_no_message_is_valid_is_400_all_messages_rejected(server, source, export):
    batch = [{"type": "track", "userId": "u"}, {"type": "alias", "userId": "u"}, {"type": "nope", "userId": "u"}]
    r = server.post("/v1/batch", batch_body(batch), write_key=source.write_key)
    body = assert_error(r, 400, "all_messages_rejected", "all-invalid batch")
    got = sorted((x["index"], x["code"]) for x in body.get("rejected", []))
    assert got == [(0, "missing_event"), (1, "missing_previous_id"), (2, "invalid_type")], body
    assert export(server.data_dir) == []


# --------------------------------------------------------------------------- auth
def test_write_key_problems_are_401(server, source, export, admin_token):
    m = track()
    r = server.post("/v1/track", m)
    assert_error(r, 401, "missing_write_key", "no write key at all")
    r = server.post("/v1/batch", batch_body([m]))
    assert_error(r, 401, "missing_write_key", "batch without write key")
    r = server.post("/v1/track", m, write_key="definitely-not-a-key")
    assert_error(r, 401, "invalid_write_key", "unknown key in Basic auth")
    r = server.post("/v1/t", dict(m, writeKey="definitely-not-a-key"), content_type="text/plain")
    assert_error(r, 401, "invalid_write_key", "unknown key in body")
    r = server.post("/v1/batch", batch_body([m], writeKey="nope"))
    assert_error(r, 401, "invalid_write_key", "unknown key in batch body")

    # disable the source through the admin API: its key stops working
    r = server.admin("POST", f"/api/v1/sources/{source.id}/disable")
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["id"] == source.id
    listed = {s["id"]: s for s in server.admin("GET", "/api/v1/sources").json()["sources"]}
    assert listed[source.id]["enabled"] is False
    assert source.write_key.startswith(listed[source.id]["writeKeyPrefix"])
    assert listed[source.id]["writeKeyPrefix"] != source.write_key, "list must not reveal the whole key"
    r = server.post("/v1/track", m, write_key=source.write_key)
    assert_error(r, 401, "source_disabled", "disabled source (Basic)")
    r = server.post("/v1/t", dict(m, writeKey=source.write_key), content_type="text/plain")
    assert_error(r, 401, "source_disabled", "disabled source (body)")
    assert export(server.data_dir) == []

    # other sources are unaffected
    other = server.create_source("still-on")
    assert_ok(server.post("/v1/track", m, write_key=other.write_key))


def test_admin_api_requires_the_admin_token(server, source):
    for method, path, body in [("GET", "/api/v1/sources", None), ("POST", "/api/v1/sources", {"name": "x"}),
                               ("GET", "/api/v1/rejections?limit=5", None),
                               ("POST", f"/api/v1/sources/{source.id}/disable", None)]:
        for token in (None, "wrong-token", source.write_key):
            r = server.admin(method, path, token=token, json=body)
            assert_error(r, 401, "invalid_admin_token", f"{method} {path} with token {token!r}")
    # nothing was changed by those attempts
    sources = server.admin("GET", "/api/v1/sources").json()["sources"]
    assert [s["name"] for s in sources] == ["e2e-web"] and sources[0]["enabled"] is True
    for s in sources:
        assert set(s) >= {"id", "name", "enabled", "createdAt", "writeKeyPrefix"}, s
        assert "writeKey" not in s


# --------------------------------------------------------------------------- enrichment
def test_batch_level_context_and_integrations_are_merged_and_message_keys_win(server, source, export):
    m_own = track(context={"ip": "198.51.100.1", "library": {"name": "own-lib", "version": "1"}},
                  integrations={"Mixpanel": False})
    m_plain = track()
    body = batch_body([m_own, m_plain],
                      context={"ip": "203.0.113.9", "app": {"name": "Shop", "version": "2.1"}, "locale": "nl-NL"},
                      integrations={"All": False, "Amplitude": True})
    assert_ok(server.post("/v1/batch", body, write_key=source.write_key))
    stored = by_message_id(export(server.data_dir))
    own, plain = stored[m_own["messageId"]], stored[m_plain["messageId"]]
    assert own["context"]["ip"] == "198.51.100.1", own
    assert own["context"]["library"] == {"name": "own-lib", "version": "1"}
    assert own["context"]["app"] == {"name": "Shop", "version": "2.1"}
    assert own["context"]["locale"] == "nl-NL"
    assert own["integrations"]["Mixpanel"] is False and own["integrations"]["Amplitude"] is True
    assert own["integrations"]["All"] is False
    assert plain["context"] == {"ip": "203.0.113.9", "app": {"name": "Shop", "version": "2.1"}, "locale": "nl-NL"}
    assert plain["integrations"] == {"All": False, "Amplitude": True}


@pytest.mark.parametrize("client_offset_hours", [-1, 1])
def test_clock_skew_is_corrected_with_message_sent_at(server, source, export, client_offset_hours):
    """A client whose clock is 1 h behind (or ahead): timestamp and sentAt both 1 h off.
    The event happened 5 s before it was sent, so timestamp = receivedAt - 5 s."""
    client_now = utcnow() + timedelta(hours=client_offset_hours)
    orig = iso_ms(client_now - timedelta(seconds=5))
    m = track(timestamp=orig, sentAt=iso_ms(client_now))
    assert_ok(server.post("/v1/track", m, write_key=source.write_key))
    s = export(server.data_dir)[0]
    assert s["originalTimestamp"] == orig
    assert s["sentAt"] == m["sentAt"]
    delta = (parse_ts(s["receivedAt"]) - parse_ts(s["timestamp"])).total_seconds()
    assert 4.0 <= delta <= 6.0, f"timestamp should be ~5 s before receivedAt, is {delta}s: {s}"


def test_clock_skew_is_corrected_with_batch_level_sent_at(server, source, export):
    """What the SDKs do: sentAt once per batch, timestamp per message."""
    client_now = utcnow() - timedelta(hours=1)
    m1 = track(timestamp=iso_ms(client_now - timedelta(seconds=10)))
    m2 = track(timestamp=iso_ms(client_now))
    assert_ok(server.post("/v1/batch", batch_body([m1, m2], sentAt=iso_ms(client_now)), write_key=source.write_key))
    stored = by_message_id(export(server.data_dir))
    for m, expect in ((m1, 10.0), (m2, 0.0)):
        s = stored[m["messageId"]]
        assert s["originalTimestamp"] == m["timestamp"]
        delta = (parse_ts(s["receivedAt"]) - parse_ts(s["timestamp"])).total_seconds()
        assert abs(delta - expect) <= 1.0, f"expected timestamp ~{expect}s before receivedAt, got {delta}s: {s}"


def test_timestamp_without_sent_at_is_kept_and_missing_timestamp_defaults_to_now(server, source, export):
    historical = iso_ms(utcnow() - timedelta(days=2))
    m_hist = track(timestamp=historical)  # e.g. a backfill: no sentAt, nothing to correct
    m_none = track()
    assert_ok(server.post("/v1/batch", batch_body([m_hist, m_none]), write_key=source.write_key))
    stored = by_message_id(export(server.data_dir))
    h = stored[m_hist["messageId"]]
    assert h["originalTimestamp"] == historical
    assert abs((parse_ts(h["timestamp"]) - parse_ts(historical)).total_seconds()) < 1.0, h
    n = stored[m_none["messageId"]]
    assert abs((parse_ts(n["timestamp"]) - parse_ts(n["receivedAt"])).total_seconds()) < 2.0, n


# --------------------------------------------------------------------------- observability
def test_rejections_are_visible_in_admin_api_and_metrics(server, source, export):
    before = server.metrics()
    m_no_event = {"type": "track", "userId": "u", "messageId": new_id("rej")}
    m_alias = {"type": "alias", "userId": "u", "messageId": new_id("rej")}
    good = track()
    r = server.post("/v1/batch", batch_body([good, m_no_event, m_alias]), write_key=source.write_key)
    assert_ok(r)
    r = server.post("/v1/group", {"userId": "u", "messageId": (gid := new_id("rej"))}, write_key=source.write_key)
    assert_error(r, 400, "missing_group_id")
    assert_ok(server.post("/v1/track", good, write_key=source.write_key))  # a duplicate

    rej = server.rejections(limit=100)
    by_mid = {x.get("messageId"): x for x in rej}
    for mid, code, mtype in ((m_no_event["messageId"], "missing_event", "track"),
                             (m_alias["messageId"], "missing_previous_id", "alias"),
                             (gid, "missing_group_id", "group")):
        assert mid in by_mid, f"rejection of {mid} ({code}) not listed: {rej}"
        x = by_mid[mid]
        assert x["code"] == code and x["sourceId"] == source.id and x["type"] == mtype, x
        assert isinstance(x["message"], str) and x["message"]
        parse_ts(x["receivedAt"])
    limited = server.rejections(limit=2)
    assert len(limited) == 2

    after = server.metrics()
    names = metric_names(after)
    for base in ("tessera_http_requests", "tessera_events_accepted", "tessera_events_rejected",
                 "tessera_events_duplicate", "tessera_request_bytes"):
        assert base in names or base + "_total" in names, f"metric {base}_total missing; have {sorted(names)}"
    assert "tessera_ingest_latency_seconds_count" in names and "tessera_ingest_latency_seconds_bucket" in names
    assert "tessera_event_log_bytes" in names
    for code in ("missing_event", "missing_previous_id", "missing_group_id"):
        diff = metric_value(after, "tessera_events_rejected_total", reason=code) - \
            metric_value(before, "tessera_events_rejected_total", reason=code)
        assert diff == 1, f"tessera_events_rejected_total{{reason={code!r}}} grew by {diff}, expected 1"
    assert metric_value(after, "tessera_events_accepted_total", type="track") - \
        metric_value(before, "tessera_events_accepted_total", type="track") >= 1
    assert metric_value(after, "tessera_events_duplicate_total") - metric_value(before, "tessera_events_duplicate_total") == 1
    assert metric_value(after, "tessera_request_bytes_total") > metric_value(before, "tessera_request_bytes_total")
    # a gauge may be refreshed periodically rather than on every write: give it a few seconds
    wait_until(lambda: metric_value(server.metrics(), "tessera_event_log_bytes") > 0, timeout=10,
               what="tessera_event_log_bytes > 0")
    assert metric_value(after, "tessera_http_requests_total", status="400") >= 1
    assert metric_value(after, "tessera_http_requests_total", status="200") >= 2
    assert stored_ids(export, server) == [good["messageId"]]


# --------------------------------------------------------------------------- robustness
def _raw_socket_abuse(port: int) -> None:
    """Half-sent and nonsense HTTP on raw sockets: the server must not care."""
    payloads = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"batch\":[",  # body cut short
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for p in payloads:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(p)
            s.settimeout(1)
            try:
                s.recv(4096)
            except OSError:
                pass


def test_server_keeps_serving_after_every_kind_of_bad_request(server, source, export):
    wk = source.write_key
    bad = [
        dict(raw=b"{oops"),
        dict(raw=b"\x1f\x8b\x08garbage", headers={"Content-Encoding": "gzip"}),
        dict(body=batch_body([track()]), headers={"Content-Encoding": "compress"}),
        dict(body=batch_body([padded_track(20 * 1024) for _ in range(30)])),
        dict(body=batch_body([{"type": "track", "userId": "u", "event": "e"}] * 2600)),
        dict(body=batch_body([{"type": "x"}] * 3)),
        dict(body={"batch": 5}),
        dict(body=batch_body([[1, 2], None, "s"])),
        dict(body=batch_body([{"type": "track", "userId": {"nested": "object"}, "event": ["list"]}])),
        dict(body=batch_body([{"type": "track", "userId": "u", "event": "e", "timestamp": "2024-13-45T99:99:99Z"}])),
        dict(body=batch_body([{"type": "track", "userId": "u", "event": "e", "messageId": 12345}])),
        dict(body=batch_body([{"type": "track", "userId": "u", "event": "e", "properties": {"deep": [[[[[[[[[]]]]]]]]]}}])),
        dict(raw=("[" * 100000).encode()),  # deep nesting must not crash the parser
        dict(raw=json.dumps({"batch": [track()]}).encode()[:-5]),
    ]
    for case in bad:
        r = server.post("/v1/batch", case.get("body"), raw=case.get("raw"), write_key=wk, headers=case.get("headers"))
        assert r.status_code < 500, f"server error on {str(case)[:200]}: {r.status_code} {r.text[:300]}"
        if r.status_code >= 400:
            assert isinstance(r.json().get("code"), str), r.text
    r = server.post("/v1/batch", batch_body([track()]), write_key=basic_auth("x"))  # nonsense auth
    assert r.status_code < 500
    r = requests.post(server.url + "/v1/track", data=b"{}", timeout=HTTP_TIMEOUT,
                      headers={"Authorization": "Basic !!!not-base64!!!"})
    assert r.status_code in (400, 401), r.text
    _raw_socket_abuse(server.port)

    assert server.running(), "server died"
    r = requests.get(server.url + "/healthz", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    good = track(properties={"after": "abuse"})
    assert_ok(server.post("/v1/track", good, write_key=wk), "valid event after abuse")
    ids = stored_ids(export, server)
    assert good["messageId"] in ids
    assert len(ids) == len(set(ids))


def test_healthz_and_metrics_need_no_auth(server):
    r = requests.get(server.url + "/healthz", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    assert "tessera_" in r.text


def test_request_time_is_bounded(server, source):
    """A modest batch is acknowledged quickly (durably) on this small machine."""
    msgs = [track() for _ in range(100)]
    t0 = time.monotonic()
    assert_ok(server.post("/v1/batch", batch_body(msgs), write_key=source.write_key))
    assert time.monotonic() - t0 < 5.0


def test_content_encoding_token_is_case_insensitive(server, source, export):
    m = track()
    assert_ok(server.post("/v1/batch", batch_body([m]), write_key=source.write_key, gzip_body=True,
                          headers={"Content-Encoding": "GZIP"}), "Content-Encoding: GZIP")
    assert stored_ids(export, server) == [m["messageId"]]


def test_the_same_message_sent_concurrently_is_stored_once(server, source, export):
    """Eight clients retrying the same batch at the same instant: dedup must not race."""
    import threading

    msgs = [track(properties={"i": i}) for i in range(50)]
    body = json.dumps(batch_body(msgs)).encode()
    barrier = threading.Barrier(8)
    statuses, lock = [], threading.Lock()

    def send():
        s = requests.Session()
        barrier.wait(timeout=10)
        for _ in range(3):
            r = server.post("/v1/batch", raw=body, write_key=source.write_key, session=s)
            with lock:
                statuses.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * 24, statuses
    stored = export(server.data_dir)
    ids = [e["messageId"] for e in stored]
    assert sorted(ids) == sorted(m["messageId"] for m in msgs), \
        f"{len(ids)} stored for {len(msgs)} distinct messageIds"


def test_a_disabled_source_stays_disabled_after_restart(server_factory, data_dir, export):
    srv = server_factory(data_dir)
    off, on = srv.create_source("off"), srv.create_source("on")
    assert srv.admin("POST", f"/api/v1/sources/{off.id}/disable").status_code == 200
    assert srv.terminate() == 0
    srv.start()
    assert_error(srv.post("/v1/track", track(), write_key=off.write_key), 401, "source_disabled", "after restart")
    m = track()
    assert_ok(srv.post("/v1/track", m, write_key=on.write_key), "enabled source after restart")
    listed = {x["id"]: x for x in srv.admin("GET", "/api/v1/sources").json()["sources"]}
    assert listed[off.id]["enabled"] is False and listed[on.id]["enabled"] is True
    assert stored_ids(export, srv) == [m["messageId"]]


def test_a_rejected_message_does_not_block_its_corrected_resend(server, source, export):
    """Dedup only remembers stored messages: fixing a rejected message and sending it
    again with the same messageId stores it."""
    mid = new_id("fixme")
    assert_error(server.post("/v1/track", {"userId": "u", "messageId": mid}, write_key=source.write_key),
                 400, "missing_event", "first attempt")
    fixed = {"userId": "u", "event": "Fixed", "messageId": mid}
    assert_ok(server.post("/v1/track", fixed, write_key=source.write_key), "corrected resend")
    # inside one batch: an invalid copy first, then a valid one with the same messageId
    mid2 = new_id("fixme")
    r = server.post("/v1/batch", batch_body([{"type": "track", "userId": "u", "messageId": mid2},
                                             {"type": "track", "userId": "u", "event": "Ok", "messageId": mid2}]),
                    write_key=source.write_key)
    body = assert_ok(r, "invalid copy then valid copy")
    assert [(x["index"], x["code"]) for x in body.get("rejected", [])] == [(0, "missing_event")]
    stored = by_message_id(export(server.data_dir))
    assert set(stored) == {mid, mid2}
    assert stored[mid]["event"] == "Fixed" and stored[mid2]["event"] == "Ok"
