"""Audiences, computed traits and insights, end to end: the real `tessera` binary
over real HTTP, events sent with the official Segment Python SDK (or raw Tracking
API batches where the SDK adds nothing), memberships read back through the
audience routes, the change feed, Tessera's profile routes and Segment's Profile
API, and the `tessera audiences` CLI.

Every wait polls with a timeout (a running server computes a new audience on its
next 200 ms tick and re-evaluates touched profiles after each processed chunk);
no test sleeps a fixed time to let the server catch up.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import pytest
import requests

from tessera_e2e import ADMIN_TOKEN, HTTP_TIMEOUT, assert_error, parse_ts, utcnow, wait_until

SPACE = "/v1/spaces/default/collections/users/profiles"
PRESETS = {"total_orders", "lifetime_value", "avg_order_value", "last_seen_at", "favorite_category", "wishlist"}
RFM_TRAITS = {"rfm_recency_score", "rfm_frequency_score", "rfm_monetary_score", "rfm_score", "rfm_segment"}
CART = 'event "Product Added" >= 1 within 7d and not event "Order Completed" within 7d'
CART_CANONICAL = 'event "Product Added" within 7d and not event "Order Completed" within 7d'
WAIT = 15.0  # seconds any single poll may take before the test fails


# --------------------------------------------------------------------------- helpers
def tag() -> str:
    return uuid.uuid4().hex[:8]


def sdk(server, source):
    """The official Segment Python SDK, sending each call synchronously to Tessera."""
    from segment.analytics import Client

    errors: list[str] = []
    client = Client(source.write_key, host=server.url, sync_mode=True, max_retries=1,
                    on_error=lambda e, batch: errors.append(repr(e)))
    client.errors = errors  # checked by the tests after sending
    return client


def send_batch(server, source, messages: list[dict]) -> None:
    r = server.post("/v1/batch", {"batch": messages}, write_key=source.write_key)
    assert r.status_code == 200, f"POST /v1/batch -> {r.status_code} {r.text}"


def identify(user_id: str, **traits) -> dict:
    return {"type": "identify", "userId": user_id, "traits": traits, "messageId": str(uuid.uuid4())}


def track(user_id: str, event: str, **properties) -> dict:
    return {"type": "track", "userId": user_id, "event": event, "properties": properties,
            "messageId": str(uuid.uuid4())}


def get_json(resp: requests.Response, status: int = 200, what: str = ""):
    assert resp.status_code == status, f"{what or resp.request.method + ' ' + resp.url}: expected HTTP {status}, " \
                                       f"got {resp.status_code} {resp.text[:1000]!r}"
    return resp.json()


def find_profile_id(server, identifier: str) -> int | None:
    r = server.admin("GET", "/api/v1/profiles", params={"identifier": identifier})
    if r.status_code == 404:
        return None
    return get_json(r)["id"]


def wait_profile_id(server, identifier: str) -> int:
    return wait_until(lambda: find_profile_id(server, identifier), timeout=WAIT,
                      what=f"a profile for {identifier}")


def profile(server, profile_id: int) -> dict:
    return get_json(server.admin("GET", f"/api/v1/profiles/{profile_id}"))


def profile_api_traits(server, key: str, **params) -> requests.Response:
    """Segment's Profile API, token as the Basic user the way Segment's clients send it."""
    auth = "Basic " + base64.b64encode(f"{ADMIN_TOKEN}:".encode()).decode()
    return requests.get(f"{server.url}{SPACE}/{key}/traits", params=params,
                        headers={"Authorization": auth}, timeout=HTTP_TIMEOUT)


def create_audience(server, key: str, definition, name: str = "", description: str = "") -> dict:
    body = {"key": key, "definition": definition}
    if name:
        body["name"] = name
    if description:
        body["description"] = description
    return get_json(server.admin("POST", "/api/v1/audiences", json=body), 201, f"create audience {key}")


def audience(server, key: str) -> dict:
    return get_json(server.admin("GET", f"/api/v1/audiences/{key}"))


def wait_ready(server, key: str) -> dict:
    """Until the audience's batch computation has run (status ready, computedAtMs set)."""
    def done():
        a = audience(server, key)
        return a if a["status"]["state"] == "ready" and a["status"]["computedAtMs"] is not None else None

    return wait_until(done, timeout=WAIT, interval=0.05, what=f"audience {key} computed")


def members(server, key: str, page: int = 1000) -> list[int]:
    out: list[int] = []
    after = None
    while True:
        params = {"limit": page}
        if after is not None:
            params["after"] = after
        body = get_json(server.admin("GET", f"/api/v1/audiences/{key}/members", params=params))
        out.extend(m["profileId"] for m in body["members"])
        if body["nextAfter"] is None:
            return out
        after = body["nextAfter"]


def wait_members(server, key: str, expected) -> list[int]:
    want = sorted(expected)
    wait_until(lambda: sorted(members(server, key)) == want, timeout=WAIT, what=f"members of {key} == {want}")
    return want


def feed(server, audience_key: str | None = None, after: int = 0) -> list[dict]:
    """The whole change feed after `after`, paging with nextAfter."""
    out: list[dict] = []
    while True:
        params = {"after": after, "limit": 500}
        if audience_key is not None:
            params["audience"] = audience_key
        body = get_json(server.admin("GET", "/api/v1/audiences/changes", params=params))
        out.extend(body["events"])
        if len(body["events"]) < 500:
            return out
        after = body["nextAfter"]


def changes_of(events: list[dict], profile_id: int) -> list[tuple[str, str]]:
    return [(e["event"], e["properties"]["reason"]) for e in events if e["profileId"] == profile_id]


def preview(server, definition, sample: int | None = None) -> requests.Response:
    body = {"definition": definition}
    if sample is not None:
        body["sample"] = sample
    return server.admin("POST", "/api/v1/audiences/preview", json=body)


def wait_preview_count(server, definition, count: int) -> dict:
    """Polls a preview until it counts `count` (the index follows each processed chunk)."""
    def check():
        r = preview(server, definition, sample=100)
        if r.status_code == 503:  # audiences_loading right after a start
            return None
        body = get_json(r)
        return body if body["count"] == count else None

    return wait_until(check, timeout=WAIT, what=f"preview of {definition!r} counting {count}")


def assert_change_event_shape(e: dict, key: str) -> None:
    assert e["type"] == "track", e
    assert e["event"] in ("Audience Entered", "Audience Exited"), e
    assert isinstance(e["seq"], int) and isinstance(e["profileId"], int), e
    assert e["properties"]["audience_key"] == key, e
    assert e["properties"]["reason"] in {"event", "schedule", "computed", "merged", "deleted", "rebuilt"}, e
    assert e["context"]["personas"] == {"computation_key": key, "computation_class": "audience"}, e
    assert abs((parse_ts(e["timestamp"]) - utcnow()).total_seconds()) < 600, e


# --------------------------------------------------------------------------- 1. cart abandonment
def test_cart_abandoners_end_to_end_through_the_segment_sdk(server, source):
    t = tag()
    user_a, user_b = f"alice-{t}", f"bob-{t}"
    created = create_audience(server, "cart-abandoners", CART, name="Cart abandoners",
                              description="Added to cart in the last week, no order")
    assert created["key"] == "cart-abandoners"
    assert created["name"] == "Cart abandoners"
    assert created["description"] == "Added to cart in the last week, no order"
    assert created["definition"] == CART_CANONICAL, "the definition comes back in its canonical text form"
    assert created["condition"] == {"and": [
        {"event": {"name": "Product Added", "count": {"op": ">=", "value": 1}, "window": {"within": "7d"}}},
        {"not": {"event": {"name": "Order Completed", "count": {"op": ">=", "value": 1}, "window": {"within": "7d"}}}},
    ]}, created["condition"]
    assert parse_ts(created["createdAt"]) == parse_ts(created["updatedAt"])
    assert set(created["status"]) == {"state", "evaluated", "total", "members", "computedAtMs"}
    ready = wait_ready(server, "cart-abandoners")
    assert ready["status"]["members"] == 0

    client = sdk(server, source)
    for user in (user_a, user_b):
        client.identify(user, {"email": f"{user}@example.com", "name": user})
        client.track(user, "Product Added", {"sku": "SKU-1", "price": 19.5, "category": "shoes"})
    assert not client.errors, client.errors
    pid_a = wait_profile_id(server, f"user_id:{user_a}")
    pid_b = wait_profile_id(server, f"user_id:{user_b}")
    assert pid_a != pid_b
    # B must be in before the order, so the feed can show the exit.
    wait_members(server, "cart-abandoners", [pid_a, pid_b])

    client.track(user_b, "Order Completed", {"order_id": f"o-{t}", "revenue": 19.5})
    assert not client.errors, client.errors
    wait_members(server, "cart-abandoners", [pid_a])
    assert audience(server, "cart-abandoners")["status"]["members"] == 1

    events = feed(server, "cart-abandoners")
    for e in events:
        assert_change_event_shape(e, "cart-abandoners")
    assert changes_of(events, pid_a) == [("Audience Entered", "event")], events
    assert changes_of(events, pid_b) == [("Audience Entered", "event"), ("Audience Exited", "event")], events
    assert len(events) == 3, events
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    # `after` resumes the feed; the unfiltered feed holds the same entries here.
    assert feed(server, "cart-abandoners", after=seqs[0]) == events[1:]
    assert feed(server) == events
    paged = get_json(server.admin("GET", "/api/v1/audiences/changes", params={"limit": 1}))
    assert paged["events"] == events[:1] and paged["nextAfter"] == seqs[0]

    # Tessera's profile shows the membership; B's shows none.
    by_identifier = get_json(server.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{user_a}"}))
    detail = profile(server, by_identifier["id"])
    assert [m["key"] for m in detail["audiences"]] == ["cart-abandoners"], detail["audiences"]
    assert parse_ts(detail["audiences"][0]["since"]) <= utcnow()
    assert profile(server, pid_b)["audiences"] == []
    # ... and so does Segment's Profile API, as an audience-class trait.
    r = profile_api_traits(server, f"user_id:{user_a}", **{"class": "audience"})
    assert get_json(r)["traits"] == {"cart-abandoners": True}
    r = profile_api_traits(server, f"email:{user_a}@example.com", **{"class": "audience"})
    assert get_json(r)["traits"] == {"cart-abandoners": True}
    r = profile_api_traits(server, f"user_id:{user_b}", **{"class": "audience"})
    assert get_json(r)["traits"] == {}
    # Without a class the profile's own traits come back, untouched by audiences.
    r = profile_api_traits(server, f"user_id:{user_a}")
    assert get_json(r)["traits"] == {"email": f"{user_a}@example.com", "name": user_a}
    assert_error(profile_api_traits(server, f"user_id:{user_a}", **{"class": "segment"}), 400, "invalid_request")


def test_merging_two_member_profiles_exits_the_merged_away_one(server, source):
    t = tag()
    create_audience(server, "adders", 'event "Product Added"')
    wait_ready(server, "adders")
    client = sdk(server, source)
    client.track(anonymous_id=f"anon-{t}", event="Product Added", properties={"sku": "X"})
    client.track(f"user-{t}", "Product Added", {"sku": "Y"})
    assert not client.errors, client.errors
    anon = wait_profile_id(server, f"anonymous_id:anon-{t}")
    user = wait_profile_id(server, f"user_id:user-{t}")
    wait_members(server, "adders", [anon, user])

    client.identify(f"user-{t}", {"name": "merged"}, anonymous_id=f"anon-{t}")
    assert not client.errors, client.errors
    wait_until(lambda: find_profile_id(server, f"anonymous_id:anon-{t}") == find_profile_id(server, f"user_id:user-{t}"),
               timeout=WAIT, what="the identify merged the two profiles")
    winner = find_profile_id(server, f"user_id:user-{t}")
    loser = ({anon, user} - {winner}).pop()
    wait_members(server, "adders", [winner])
    events = feed(server, "adders")
    assert changes_of(events, loser) == [("Audience Entered", "event"), ("Audience Exited", "merged")], events
    assert changes_of(events, winner) == [("Audience Entered", "event")], events


# --------------------------------------------------------------------------- 2. preview
def test_preview_counts_and_samples_text_and_json_definitions(server, source):
    t = tag()
    send_batch(server, source, [
        identify(f"p1-{t}", plan="pro", email=f"p1-{t}@example.com"),
        identify(f"p2-{t}", plan="pro", address={"country": "DE", "city": "Berlin"}),
        identify(f"p3-{t}", plan="free"),
        identify(f"p4-{t}", name="no plan"),
    ])
    pros = {wait_profile_id(server, f"user_id:p1-{t}"), wait_profile_id(server, f"user_id:p2-{t}")}
    body = wait_preview_count(server, 'trait plan = "pro"', 2)
    assert body["definition"] == 'trait plan = "pro"'
    assert isinstance(body["tookMs"], (int, float)) and body["tookMs"] >= 0
    assert {s["profileId"] for s in body["sample"]} == pros
    samples = {s["profileId"]: s["traits"] for s in body["sample"]}
    p1, p2 = find_profile_id(server, f"user_id:p1-{t}"), find_profile_id(server, f"user_id:p2-{t}")
    assert samples[p1] == {"plan": "pro", "email": f"p1-{t}@example.com"}, samples[p1]
    assert samples[p2] == {"plan": "pro", "address": {"country": "DE", "city": "Berlin"}}, samples[p2]

    one = get_json(preview(server, 'trait plan = "pro"', sample=1))
    assert one["count"] == 2 and len(one["sample"]) == 1
    none = get_json(preview(server, 'trait plan = "pro"', sample=0))
    assert none["count"] == 2 and none["sample"] == []

    # The JSON form of the same condition counts the same, and prints as the same text.
    as_json = {"trait": {"name": "plan", "op": "=", "value": "pro"}}
    body_json = get_json(preview(server, as_json))
    assert body_json["count"] == 2 and body_json["definition"] == 'trait plan = "pro"'
    assert {s["profileId"] for s in body_json["sample"]} == pros
    # JSON sent as a string is accepted too.
    assert get_json(preview(server, json.dumps(as_json)))["count"] == 2

    # Other tests over the same profiles; keywords are case-insensitive.
    counts = {
        'trait plan != "pro"': 2,  # free and missing
        'TRAIT plan EXISTS': 3,
        'trait plan not exists': 1,
        'trait plan in ["pro", "free"]': 3,
        'trait address.country = "DE"': 1,
        'identifier email': 1,
        'trait plan = "pro" and not identifier email': 1,
        'trait plan = "free" or trait address.country = "DE"': 2,
        'event "Identify"': 4,
        'all': 4,
        'none': 0,
    }
    got = {d: get_json(preview(server, d), what=d)["count"] for d in counts}
    assert got == counts

    # Syntax errors point at the place.
    r = preview(server, 'trait plan ~ "pro"')
    err = assert_error(r, 400, "invalid_definition", "a bad test operator")
    assert "line 1, column 12" in err["message"], err
    r = preview(server, 'trait plan = "pro" and\n  evnt "Order Completed"')
    err = assert_error(r, 400, "invalid_definition", "a misspelt keyword on line 2")
    assert "line 2, column 3" in err["message"], err
    r = preview(server, 'event "Order Completed" within 7x')
    err = assert_error(r, 400, "invalid_definition", "a bad duration")
    assert "line 1, column 32" in err["message"], err
    assert_error(preview(server, {"trait": {"name": "plan", "op": "=~", "value": "pro"}}), 400, "invalid_definition")
    assert_error(preview(server, 42), 400, "invalid_definition")
    assert_error(preview(server, "audience nobody"), 400, "invalid_definition")
    assert_error(preview(server, "all", sample=101), 400, "invalid_request")
    assert_error(server.admin("POST", "/api/v1/audiences/preview", data=b"not json",
                              headers={"Content-Type": "application/json"}), 400, "invalid_request")


# --------------------------------------------------------------------------- 3. CRUD
def test_audience_crud_edit_recomputes_and_delete_exits_members(server, source):
    t = tag()
    send_batch(server, source, [identify(f"pro-{t}", plan="pro", email=f"pro-{t}@example.com"),
                                identify(f"free-{t}", plan="free")])
    pro = wait_profile_id(server, f"user_id:pro-{t}")
    free = wait_profile_id(server, f"user_id:free-{t}")
    wait_preview_count(server, "all", 2)

    first = create_audience(server, "plan-match", 'trait plan = "pro"')
    assert first["name"] == "plan-match", "the name defaults to the key"
    assert first["description"] == ""
    assert_error(server.admin("POST", "/api/v1/audiences", json={"key": "plan-match", "definition": "all"}),
                 409, "audience_exists")
    for bad_key in ("preview", "changes", "Bad Key", "9lives", ""):
        assert_error(server.admin("POST", "/api/v1/audiences", json={"key": bad_key, "definition": "all"}),
                     400, "invalid_definition", f"key {bad_key!r}")
    err = assert_error(server.admin("POST", "/api/v1/audiences", json={"key": "ghostly", "definition": "audience ghost"}),
                       400, "invalid_definition", "a reference to a missing audience")
    assert "ghost" in err["message"]
    assert_error(server.admin("POST", "/api/v1/audiences", json={"key": "x", "definition": "trait ="}),
                 400, "invalid_definition")
    assert_error(server.admin("POST", "/api/v1/audiences", json={"definition": "all"}), 400, "invalid_request")
    assert_error(server.admin("POST", "/api/v1/audiences", json={"key": "y", "definition": "all", "extra": 1}),
                 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/audiences/ghostly"), 404, "audience_not_found")

    wait_ready(server, "plan-match")
    wait_members(server, "plan-match", [pro])
    # An audience built on another one.
    create_audience(server, "pro-with-email", "audience plan-match and identifier email")
    wait_ready(server, "pro-with-email")
    wait_members(server, "pro-with-email", [pro])
    listed = get_json(server.admin("GET", "/api/v1/audiences"))["audiences"]
    assert sorted(a["key"] for a in listed) == ["plan-match", "pro-with-email"]

    # Unknown keys.
    for method, path, kw in [("GET", "/api/v1/audiences/nope", {}),
                             ("GET", "/api/v1/audiences/nope/members", {}),
                             ("PATCH", "/api/v1/audiences/nope", {"json": {"name": "x"}}),
                             ("PUT", "/api/v1/audiences/nope", {"json": {"definition": "all"}}),
                             ("DELETE", "/api/v1/audiences/nope", {})]:
        assert_error(server.admin(method, path, **kw), 404, "audience_not_found", f"{method} {path}")

    # Invalid edits change nothing.
    assert_error(server.admin("PATCH", "/api/v1/audiences/plan-match", json={"definition": "audience plan-match"}),
                 400, "invalid_definition", "self reference")
    assert_error(server.admin("PATCH", "/api/v1/audiences/plan-match", json={"definition": "audience pro-with-email"}),
                 400, "invalid_definition", "a cycle")
    assert_error(server.admin("PATCH", "/api/v1/audiences/plan-match", json={"definition": "trait plan = "}),
                 400, "invalid_definition")
    assert audience(server, "plan-match")["definition"] == 'trait plan = "pro"'
    # A referenced audience cannot be deleted.
    assert_error(server.admin("DELETE", "/api/v1/audiences/plan-match"), 400, "invalid_definition")

    # PATCH the definition: members are recomputed.
    before = feed(server)
    last_seq = before[-1]["seq"]
    time.sleep(0.002)  # updatedAt has ms resolution
    patched = get_json(server.admin("PATCH", "/api/v1/audiences/plan-match",
                                    json={"definition": {"trait": {"name": "plan", "op": "=", "value": "free"}}}))
    assert patched["definition"] == 'trait plan = "free"'
    assert patched["name"] == "plan-match" and patched["createdAt"] == first["createdAt"]
    assert parse_ts(patched["updatedAt"]) > parse_ts(first["updatedAt"])
    wait_members(server, "plan-match", [free])
    # The dependent audience follows (pro lost plan-match; free has no email).
    wait_members(server, "pro-with-email", [])
    wait_ready(server, "plan-match")
    wait_ready(server, "pro-with-email")
    after_patch = feed(server, after=last_seq)
    assert sorted((e["properties"]["audience_key"], e["profileId"], e["event"], e["properties"]["reason"])
                  for e in after_patch) == sorted([
        ("plan-match", pro, "Audience Exited", "computed"),
        ("plan-match", free, "Audience Entered", "computed"),
        ("pro-with-email", pro, "Audience Exited", "computed"),
    ]), after_patch

    # PUT renames without touching the definition or the members.
    renamed = get_json(server.admin("PUT", "/api/v1/audiences/plan-match",
                                    json={"name": "Free plan", "description": "free users"}))
    assert (renamed["name"], renamed["description"], renamed["definition"]) == \
        ("Free plan", "free users", 'trait plan = "free"')
    assert members(server, "plan-match") == [free]

    # Member pages.
    page = get_json(server.admin("GET", "/api/v1/audiences/plan-match/members", params={"limit": 1}))
    assert [m["profileId"] for m in page["members"]] == [free] and page["nextAfter"] == free
    assert parse_ts(page["members"][0]["since"]) <= utcnow()
    rest = get_json(server.admin("GET", "/api/v1/audiences/plan-match/members", params={"after": free}))
    assert rest == {"members": [], "nextAfter": None}
    assert_error(server.admin("GET", "/api/v1/audiences/plan-match/members", params={"limit": 0}),
                 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/audiences/plan-match/members", params={"after": "x"}),
                 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/audiences/changes", params={"limit": 10001}), 400, "invalid_request")

    # DELETE: the dependent first, then the audience; its members exit with reason deleted.
    assert get_json(server.admin("DELETE", "/api/v1/audiences/pro-with-email")) == {"deleted": True, "exited": 0}
    last_seq = feed(server)[-1]["seq"]
    assert get_json(server.admin("DELETE", "/api/v1/audiences/plan-match")) == {"deleted": True, "exited": 1}
    deleted = feed(server, after=last_seq)
    assert [(e["properties"]["audience_key"], e["profileId"], e["event"], e["properties"]["reason"])
            for e in deleted] == [("plan-match", free, "Audience Exited", "deleted")]
    assert_error(server.admin("GET", "/api/v1/audiences/plan-match"), 404, "audience_not_found")
    assert_error(server.admin("GET", "/api/v1/audiences/plan-match/members"), 404, "audience_not_found")
    assert_error(server.admin("DELETE", "/api/v1/audiences/plan-match"), 404, "audience_not_found")
    assert get_json(server.admin("GET", "/api/v1/audiences"))["audiences"] == []
    assert profile(server, free)["audiences"] == []
    assert get_json(profile_api_traits(server, f"user_id:free-{t}", **{"class": "audience"}))["traits"] == {}
    # The key is free again.
    create_audience(server, "plan-match", "all")
    wait_members(server, "plan-match", [pro, free])


# --------------------------------------------------------------------------- 4. computed traits
def test_presets_exist_on_a_fresh_data_dir(server, source, cli, data_dir):
    send_batch(server, source, [identify("fresh-buyer"), track("fresh-buyer", "Order Completed", revenue=12.5)])
    pid = wait_profile_id(server, "user_id:fresh-buyer")
    wait_preview_count(server, 'event "Order Completed"', 1)
    listed = get_json(server.admin("GET", "/api/v1/computed-traits"))["computedTraits"]
    assert {c["key"] for c in listed} == PRESETS
    assert profile(server, pid)["computedTraits"].get("total_orders") == 1
    cp = cli("computed-traits", "list", data_dir=data_dir)
    assert {json.loads(line)["key"] for line in cp.stdout.splitlines()} == PRESETS, cp.stdout


def test_computed_traits_presets_custom_traits_and_profiles(server, source):
    # The custom trait is saved first: on a data dir with no stored definition at all
    # the presets are missing (see test_presets_exist_on_a_fresh_data_dir).
    assert_error(server.admin("GET", "/api/v1/computed-traits/views_30d"), 404, "computed_trait_not_found")
    assert_error(server.admin("DELETE", "/api/v1/computed-traits/views_30d"), 404, "computed_trait_not_found")
    saved = get_json(server.admin("PUT", "/api/v1/computed-traits/views_30d",
                                  json={"aggregate": "count", "event": "Product Viewed", "window": "30d"}))
    assert saved == {"key": "views_30d", "aggregate": "count", "event": "Product Viewed", "window": "30d"}
    assert get_json(server.admin("GET", "/api/v1/computed-traits/views_30d")) == saved
    listed = get_json(server.admin("GET", "/api/v1/computed-traits"))["computedTraits"]
    assert [c["key"] for c in listed] == sorted(PRESETS | {"views_30d"}), "presets and custom ones, by key"
    assert get_json(server.admin("GET", "/api/v1/computed-traits/total_orders")) == {
        "key": "total_orders", "description": "Number of orders (Order Completed events)",
        "aggregate": "count", "event": "Order Completed",
    }
    assert get_json(server.admin("GET", "/api/v1/computed-traits/wishlist"))["property"] == "sku"
    assert_error(server.admin("DELETE", "/api/v1/computed-traits/total_orders"), 404, "computed_trait_not_found",
                 "a preset is not stored, so it cannot be deleted")

    for bad in [{"aggregate": "median", "event": "x", "property": "y"},
                {"aggregate": "sum", "event": "Order Completed"},  # no property
                {"aggregate": "count", "window": "30 days"},
                {"aggregate": "count", "unknown": 1}]:
        assert_error(server.admin("PUT", "/api/v1/computed-traits/bad_one", json=bad), 400, "invalid_definition",
                     json.dumps(bad))
    assert_error(server.admin("PUT", "/api/v1/computed-traits/Bad-Key", json={"aggregate": "count"}),
                 400, "invalid_definition")
    assert_error(server.admin("PUT", "/api/v1/computed-traits/rfm_score", json={"aggregate": "count"}),
                 400, "invalid_definition", "RFM trait names are reserved")

    create_audience(server, "engaged-viewers", "computed views_30d >= 2")
    wait_ready(server, "engaged-viewers")

    t = tag()
    user = f"shopper-{t}"
    client = sdk(server, source)
    client.identify(user, {"email": f"{user}@example.com"})
    client.track(user, "Product Viewed", {"sku": "A", "category": "shoes"})
    assert not client.errors, client.errors
    pid = wait_profile_id(server, f"user_id:{user}")
    wait_until(lambda: profile(server, pid)["computedTraits"].get("views_30d") == 1, timeout=WAIT,
               what="views_30d == 1")
    assert members(server, "engaged-viewers") == []

    client.track(user, "Product Viewed", {"sku": "B", "category": "shoes"})
    client.track(user, "Product Added to Wishlist", {"sku": "A"})
    client.track(user, "Product Added to Wishlist", {"sku": "B"})
    client.track(user, "Product Added to Wishlist", {"sku": "A"})
    client.track(user, "Order Completed", {"revenue": 20, "category": "shoes"})
    client.track(user, "Order Completed", {"revenue": 10.5, "category": "bags"})
    assert not client.errors, client.errors
    wait_members(server, "engaged-viewers", [pid])
    assert changes_of(feed(server, "engaged-viewers"), pid) == [("Audience Entered", "event")]

    def all_applied():
        c = profile(server, pid)["computedTraits"]
        return c if c.get("total_orders") == 2 else None

    computed = wait_until(all_applied, timeout=WAIT, what="both orders in the computed traits")
    last_seen = computed.pop("last_seen_at")
    assert abs((parse_ts(last_seen) - utcnow()).total_seconds()) < 120, last_seen
    rfm = {k: computed.pop(k) for k in list(computed) if k in RFM_TRAITS}
    assert computed == {
        "total_orders": 2,
        "lifetime_value": 30.5,
        "avg_order_value": 15.25,
        "favorite_category": "shoes",  # 2 views + 1 order vs 1 order
        "wishlist": ["A", "B"],  # distinct, in order of first appearance
        "views_30d": 2,
    }, computed
    assert not rfm or set(rfm) == RFM_TRAITS, rfm

    # Segment's Profile API shows the same values as computed_trait-class traits.
    traits = get_json(profile_api_traits(server, f"user_id:{user}", **{"class": "computed_trait", "limit": 200}))
    assert {k: v for k, v in traits["traits"].items() if k not in RFM_TRAITS and k != "last_seen_at"} == computed
    only = get_json(profile_api_traits(server, f"user_id:{user}",
                                       **{"class": "computed_trait", "include": "total_orders,wishlist"}))
    assert only["traits"] == {"total_orders": 2, "wishlist": ["A", "B"]}

    # Audiences over presets work in the text language too.
    assert get_json(preview(server, "computed lifetime_value > 30 and computed wishlist contains \"B\""))["count"] == 1
    assert get_json(preview(server, "computed total_orders >= 3"))["count"] == 0

    # RFM settings: read, replace, reject nonsense.
    assert get_json(server.admin("GET", "/api/v1/rfm")) == {
        "event": "Order Completed", "revenue_property": "revenue", "window": "365d"}
    new_rfm = {"event": "Order Completed", "revenue_property": "revenue", "window": "30d"}
    assert get_json(server.admin("PUT", "/api/v1/rfm", json=new_rfm)) == new_rfm
    assert get_json(server.admin("GET", "/api/v1/rfm")) == new_rfm
    assert_error(server.admin("PUT", "/api/v1/rfm", json={"window": "forever"}), 400, "invalid_request")
    rfm = {k: v for k, v in profile(server, pid)["computedTraits"].items() if k in RFM_TRAITS}
    assert set(rfm) == RFM_TRAITS, rfm
    assert all(1 <= rfm[k] <= 5 for k in ("rfm_recency_score", "rfm_frequency_score", "rfm_monetary_score")), rfm

    # Deleting the custom trait: gone from the list and the profile.
    assert get_json(server.admin("DELETE", "/api/v1/computed-traits/views_30d")) == {"deleted": True}
    assert_error(server.admin("GET", "/api/v1/computed-traits/views_30d"), 404, "computed_trait_not_found")
    assert "views_30d" not in profile(server, pid)["computedTraits"]


# --------------------------------------------------------------------------- 5. insights
def test_insights_top_values_grouped_by_a_trait(server, source):
    t = tag()
    orders = {  # user: (country, [categories of their orders])
        f"de1-{t}": ("DE", ["shoes", "shoes", "shoes", "bags"]),
        f"de2-{t}": ("DE", ["shoes", "hats", "hats"]),
        f"us1-{t}": ("US", ["bags", "bags", "shoes"]),
        f"xx1-{t}": (None, ["hats"]),
    }
    batch = []
    for user, (country, categories) in orders.items():
        batch.append(identify(user, country=country) if country else identify(user, name="nowhere"))
        batch.extend(track(user, "Order Completed", category=c, revenue=10) for c in categories)
    batch.append(track(f"de1-{t}", "Product Viewed", category="socks"))  # another event: not counted
    batch.append(track(f"us1-{t}", "Order Completed", revenue=5))  # no category: not counted
    send_batch(server, source, batch)

    def top(**params):
        return get_json(server.admin("GET", "/api/v1/insights/top", params=params), what=f"top {params}")["rows"]

    wait_until(lambda: sum(r["events"] for r in top(event="Order Completed", property="category")) == 11,
               timeout=WAIT, what="all orders indexed")
    assert top(event="Order Completed", property="category") == [
        {"value": "shoes", "events": 5, "profiles": 3},
        {"value": "bags", "events": 3, "profiles": 2},
        {"value": "hats", "events": 3, "profiles": 2},
    ]
    grouped = top(event="Order Completed", property="category", by="country")
    by_group: dict = {}
    for row in grouped:
        by_group.setdefault(row["group"], []).append((row["value"], row["events"], row["profiles"]))
    assert by_group == {
        "DE": [("shoes", 4, 2), ("hats", 2, 1), ("bags", 1, 1)],
        "US": [("bags", 2, 1), ("shoes", 1, 1)],
        None: [("hats", 1, 1)],
    }, grouped
    for rows in by_group.values():
        assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True), "by event count, descending"

    # limit is per group; where filters profiles; within filters events.
    limited = top(event="Order Completed", property="category", by="country", limit=1)
    assert {(r.get("group"), r["value"]) for r in limited} == {("DE", "shoes"), ("US", "bags"), (None, "hats")}
    assert top(event="Order Completed", property="category", where='trait country = "US"') == [
        {"value": "bags", "events": 2, "profiles": 1},
        {"value": "shoes", "events": 1, "profiles": 1},
    ]
    # de1 and us1 have 4 orders each (us1's 4th has no category); de2 has 3.
    assert top(event="Order Completed", property="category", where='event "Order Completed" >= 4', within="1d") == [
        {"value": "shoes", "events": 4, "profiles": 2},
        {"value": "bags", "events": 3, "profiles": 2},
    ]
    assert top(event="Never Happened", property="category") == []
    assert top(event="Order Completed", property="colour") == []

    assert_error(server.admin("GET", "/api/v1/insights/top", params={"property": "category"}), 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/insights/top",
                              params={"event": "Order Completed", "property": "category", "within": "7 days"}),
                 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/insights/top",
                              params={"event": "Order Completed", "property": "category", "where": "trait ="}),
                 400, "invalid_definition")
    assert_error(server.admin("GET", "/api/v1/insights/top",
                              params={"event": "Order Completed", "property": "category", "limit": 0}),
                 400, "invalid_request")


# --------------------------------------------------------------------------- 6. restart
def test_memberships_survive_a_restart_without_new_changes(server_factory, data_dir):
    server = server_factory(data_dir)
    source = server.create_source("restart")
    t = tag()
    create_audience(server, "pros", 'trait plan = "pro"')
    create_audience(server, "recent-buyers", 'event "Order Completed" within 7d')
    wait_ready(server, "pros")
    wait_ready(server, "recent-buyers")
    send_batch(server, source, [
        identify(f"a-{t}", plan="pro"), track(f"a-{t}", "Order Completed", revenue=5),
        identify(f"b-{t}", plan="pro"),
        identify(f"c-{t}", plan="free"), track(f"c-{t}", "Order Completed", revenue=7),
    ])
    a, b, c = (wait_profile_id(server, f"user_id:{u}-{t}") for u in "abc")
    wait_members(server, "pros", [a, b])
    wait_members(server, "recent-buyers", [a, c])
    before_feed = feed(server)
    before = {k: members(server, k) for k in ("pros", "recent-buyers")}
    before_defs = {k: {f: v for f, v in audience(server, k).items() if f != "status"} for k in before}
    assert server.terminate() == 0, "SIGTERM shuts down cleanly"

    restarted = server_factory(data_dir)
    # Right after the start the index may still be loading: preview answers 503 then.
    def loaded():
        r = preview(restarted, "all")
        if r.status_code == 503:
            assert_error(r, 503, "audiences_loading")
            return None
        return get_json(r)["count"] == 3

    wait_until(loaded, timeout=WAIT, interval=0.02, what="the audience index loaded")
    for key in before:
        status = wait_ready(restarted, key)["status"]
        assert status["members"] == len(before[key]), status
    # Another tick or two must not announce anything either.
    wait_until(lambda: all(audience(restarted, k)["status"]["state"] == "ready" for k in before), timeout=WAIT)
    time.sleep(0.5)
    assert {k: members(restarted, k) for k in before} == before
    assert feed(restarted) == before_feed, "a restart must not add entries to the change feed"
    assert {k: {f: v for f, v in audience(restarted, k).items() if f != "status"} for k in before} == before_defs
    assert [m["key"] for m in profile(restarted, a)["audiences"]] == ["pros", "recent-buyers"]

    # Realtime updates still flow after the restart.
    send_batch(restarted, source, [track(f"b-{t}", "Order Completed", revenue=1)])
    wait_members(restarted, "recent-buyers", [a, b, c])
    new = feed(restarted, after=before_feed[-1]["seq"])
    assert [(e["profileId"], e["event"], e["properties"]["reason"]) for e in new] == [(b, "Audience Entered", "event")]


# --------------------------------------------------------------------------- schedule
def test_time_windows_expire_on_the_configured_schedule(server_factory, tmp_path):
    config = tmp_path / "tessera.toml"
    config.write_text(
        "[audiences]\nschedule_seconds = 1\n\n"
        "[[audiences.computed_traits]]\n"
        'key = "pings_1h"\naggregate = "count"\nevent = "Ping"\nwindow = "1h"\n'
    )
    server = server_factory(extra_env={"TESSERA_CONFIG": str(config)})
    source = server.create_source("schedule")
    create_audience(server, "pinged", 'event "Ping" within 3s')
    wait_ready(server, "pinged")
    t = tag()
    sent = time.monotonic()
    send_batch(server, source, [track(f"u-{t}", "Ping")])
    pid = wait_profile_id(server, f"user_id:u-{t}")
    wait_members(server, "pinged", [pid])
    # No new event: the window expires and the 1 s schedule notices.
    wait_until(lambda: members(server, "pinged") == [], timeout=10, interval=0.1, what="the window expired")
    assert time.monotonic() - sent >= 2.5, "left before the 3 s window could have expired"
    assert changes_of(feed(server, "pinged"), pid) == [("Audience Entered", "event"), ("Audience Exited", "schedule")]
    # The computed trait of the configuration file is defined and computed.
    listed = get_json(server.admin("GET", "/api/v1/computed-traits"))["computedTraits"]
    assert {"key": "pings_1h", "aggregate": "count", "event": "Ping", "window": "1h"} in listed
    assert profile(server, pid)["computedTraits"]["pings_1h"] == 1


def test_an_invalid_computed_trait_in_the_configuration_stops_the_start(binary, tmp_path):
    config = tmp_path / "tessera.toml"
    config.write_text('[[audiences.computed_traits]]\nkey = "x"\naggregate = "sum"\n')
    cp = subprocess.run([str(binary), "--config", str(config), "serve", "--data-dir", str(tmp_path / "d"),
                         "--listen", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0
    assert "needs a \"property\"" in cp.stderr


# --------------------------------------------------------------------------- 7. CLI
def test_cli_defines_previews_lists_and_deletes_audiences(server_factory, data_dir, cli):
    server = server_factory(data_dir)
    source = server.create_source("cli")
    t = tag()
    send_batch(server, source, [identify(f"pro-{t}", plan="pro"), identify(f"free-{t}", plan="free")])
    pro = wait_profile_id(server, f"user_id:pro-{t}")
    free = wait_profile_id(server, f"user_id:free-{t}")
    wait_preview_count(server, "all", 2)

    # With the server running: the CLI writes the definition, the server computes it.
    cp = cli("audiences", "create", "pros", "--definition", 'trait  plan="pro"', "--name", "Pro plan",
             data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    assert 'created audience pros (Pro plan): trait plan = "pro"' in cp.stderr
    wait_members(server, "pros", [pro])
    assert audience(server, "pros")["name"] == "Pro plan"
    assert changes_of(feed(server, "pros"), pro) == [("Audience Entered", "computed")]

    cp = cli("audiences", "list", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == ['pros\tPro plan\t1 members\ttrait plan = "pro"']
    cp = cli("audiences", "show", "pros", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    shown = json.loads(cp.stdout)
    assert (shown["key"], shown["name"], shown["definition"]) == ("pros", "Pro plan", 'trait plan = "pro"')
    assert shown["condition"] == {"trait": {"name": "plan", "op": "=", "value": "pro"}}
    cp = cli("audiences", "members", "pros", data_dir=data_dir)
    assert cp.returncode == 0 and cp.stdout.split() == [str(pro)], (cp.stdout, cp.stderr)
    cp = cli("audiences", "preview", 'trait plan in ["pro", "free"]', "--sample", "5", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    previewed = json.loads(cp.stdout)
    assert previewed["count"] == 2 and {s["profileId"] for s in previewed["sample"]} == {pro, free}

    # Errors exit non-zero with the position.
    cp = cli("audiences", "create", "broken", "--definition", 'trait plan ~ "pro"', data_dir=data_dir)
    assert cp.returncode != 0 and "line 1, column 12" in cp.stderr, (cp.returncode, cp.stderr)
    cp = cli("audiences", "preview", 'event "Ping" within', data_dir=data_dir)
    assert cp.returncode != 0 and "line 1, column 20" in cp.stderr, (cp.returncode, cp.stderr)
    cp = cli("audiences", "create", "pros", "--definition", "all", data_dir=data_dir)
    assert cp.returncode != 0 and "exists" in cp.stderr, (cp.returncode, cp.stderr)
    for args in (("show", "nope"), ("members", "nope"), ("delete", "nope")):
        cp = cli("audiences", *args, data_dir=data_dir)
        assert cp.returncode != 0 and "nope" in cp.stderr, (args, cp.returncode, cp.stderr)
    assert_error(server.admin("GET", "/api/v1/audiences/broken"), 404, "audience_not_found")

    # With the server stopped: create, then the next start computes it.
    assert server.terminate() == 0
    cp = cli("audiences", "create", "frees", "--definition", 'trait plan = "free"', data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    cp = cli("audiences", "list", data_dir=data_dir)
    assert sorted(cp.stdout.splitlines()) == ['frees\tfrees\t0 members\ttrait plan = "free"',
                                              'pros\tPro plan\t1 members\ttrait plan = "pro"']
    cp = cli("audiences", "preview", 'trait plan = "free"', data_dir=data_dir)
    assert cp.returncode == 0 and json.loads(cp.stdout)["count"] == 1, cp.stderr
    cp = cli("computed-traits", "list", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    assert {json.loads(line)["key"] for line in cp.stdout.splitlines()} == PRESETS

    server = server_factory(data_dir)
    wait_members(server, "frees", [free])
    assert members(server, "pros") == [pro]
    assert changes_of(feed(server, "frees"), free) == [("Audience Entered", "computed")]

    # Delete through the CLI while the server runs: the audience is gone for the server too.
    cp = cli("audiences", "delete", "frees", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    assert "deleted audience frees" in cp.stderr
    cp = cli("audiences", "list", data_dir=data_dir)
    assert cp.stdout.splitlines() == ['pros\tPro plan\t1 members\ttrait plan = "pro"']
    assert_error(server.admin("GET", "/api/v1/audiences/frees"), 404, "audience_not_found")


@pytest.mark.parametrize("server_running", [True, False], ids=["server-running", "server-stopped"])
def test_cli_delete_exits_the_members(server_factory, data_dir, cli, server_running):
    server = server_factory(data_dir)
    source = server.create_source("cli-delete")
    t = tag()
    send_batch(server, source, [identify(f"pro-{t}", plan="pro")])
    pro = wait_profile_id(server, f"user_id:pro-{t}")
    create_audience(server, "pros", 'trait plan = "pro"')
    wait_members(server, "pros", [pro])
    if not server_running:
        assert server.terminate() == 0

    cp = cli("audiences", "delete", "pros", data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr

    if not server_running:
        server = server_factory(data_dir)
    wait_until(lambda: get_json(server.admin("GET", "/api/v1/audiences"))["audiences"] == [], timeout=WAIT,
               what="the server saw the deletion")
    wait_preview_count(server, "all", 1)
    time.sleep(0.5)  # a few ticks
    assert profile(server, pro)["audiences"] == [], "a deleted audience still shows on the profile"
    assert get_json(profile_api_traits(server, f"user_id:pro-{t}", **{"class": "audience"}))["traits"] == {}
    assert changes_of(feed(server, "pros"), pro) == [("Audience Entered", "computed"), ("Audience Exited", "deleted")]
    assert "deleted audience pros; 1 members exited" in cp.stderr, cp.stderr


# --------------------------------------------------------------------------- 8. auth
def test_audience_routes_need_the_admin_token(server):
    routes = [
        ("GET", "/api/v1/audiences", None),
        ("POST", "/api/v1/audiences", {"key": "x", "definition": "all"}),
        ("GET", "/api/v1/audiences/x", None),
        ("PUT", "/api/v1/audiences/x", {"name": "y"}),
        ("PATCH", "/api/v1/audiences/x", {"name": "y"}),
        ("DELETE", "/api/v1/audiences/x", None),
        ("GET", "/api/v1/audiences/x/members", None),
        ("GET", "/api/v1/audiences/changes", None),
        ("POST", "/api/v1/audiences/preview", {"definition": "all"}),
        ("GET", "/api/v1/computed-traits", None),
        ("GET", "/api/v1/computed-traits/total_orders", None),
        ("PUT", "/api/v1/computed-traits/x", {"aggregate": "count"}),
        ("DELETE", "/api/v1/computed-traits/x", None),
        ("GET", "/api/v1/rfm", None),
        ("PUT", "/api/v1/rfm", {"window": "30d"}),
        ("GET", "/api/v1/insights/top?event=Order%20Completed&property=category", None),
    ]
    for method, path, body in routes:
        kw = {"json": body} if body is not None else {}
        for token in (None, "wrong-token"):
            r = server.admin(method, path, token=token, **kw)
            assert_error(r, 401, "invalid_admin_token", f"{method} {path} with token {token!r}")
        basic = requests.request(method, server.url + path, timeout=HTTP_TIMEOUT,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()}, **kw)
        assert_error(basic, 401, "invalid_admin_token", f"{method} {path} with a wrong Basic token")
    # Nothing was created by the rejected requests.
    assert get_json(server.admin("GET", "/api/v1/audiences"))["audiences"] == []
    assert_error(server.admin("GET", "/api/v1/computed-traits/x"), 404, "computed_trait_not_found")
    assert get_json(server.admin("GET", "/api/v1/rfm"))["window"] == "365d"


# --------------------------------------------------------------------------- realtime details
def test_trait_changes_and_dependent_audiences_update_in_realtime(server, source):
    create_audience(server, "vip", 'trait plan = "pro"')
    wait_ready(server, "vip")
    create_audience(server, "vip-buyers", 'audience vip and event "Order Completed"')
    wait_ready(server, "vip-buyers")
    t = tag()
    client = sdk(server, source)
    client.identify(f"u-{t}", {"plan": "pro"}, context={"consent": {"categoryPreferences": {"marketing": True,
                                                                                           "ads": False}}})
    client.track(f"u-{t}", "Order Completed", {"revenue": 3})
    assert not client.errors, client.errors
    pid = wait_profile_id(server, f"user_id:u-{t}")
    wait_members(server, "vip", [pid])
    wait_members(server, "vip-buyers", [pid])
    assert get_json(preview(server, "consent marketing"))["count"] == 1
    assert get_json(preview(server, "consent ads"))["count"] == 0
    assert get_json(preview(server, 'event "Order Completed" where revenue >= 3'))["count"] == 1
    assert get_json(preview(server, 'event "Order Completed" where (revenue > 3 and revenue < 10)'))["count"] == 0

    client.identify(f"u-{t}", {"plan": "free"})
    assert not client.errors, client.errors
    wait_members(server, "vip", [])
    wait_members(server, "vip-buyers", [])
    events = feed(server)
    assert [(e["properties"]["audience_key"], e["event"], e["properties"]["reason"]) for e in events
            if e["profileId"] == pid] == [
        ("vip", "Audience Entered", "event"), ("vip-buyers", "Audience Entered", "event"),
        ("vip", "Audience Exited", "event"), ("vip-buyers", "Audience Exited", "event"),
    ], events


def test_unlinking_a_shared_identifier_leaves_only_canonical_profiles_as_members(server, source):
    t = tag()
    family = f"family-{t}@example.com"
    create_audience(server, "everyone", 'event "Identify"')
    wait_ready(server, "everyone")
    send_batch(server, source, [
        {"type": "identify", "anonymousId": f"tom-{t}", "traits": {"email": family, "name": "tom"}},
        {"type": "identify", "anonymousId": f"sue-{t}", "traits": {"email": family, "name": "sue"}},
    ])
    wait_until(lambda: (find_profile_id(server, f"anonymous_id:tom-{t}") is not None
                        and find_profile_id(server, f"anonymous_id:tom-{t}")
                        == find_profile_id(server, f"anonymous_id:sue-{t}")), timeout=WAIT, what="one merged profile")
    merged = find_profile_id(server, f"anonymous_id:tom-{t}")
    wait_members(server, "everyone", [merged])

    r = server.admin("POST", "/api/v1/identity/unlink", json={"type": "email", "value": family})
    assert r.status_code == 200, r.text
    tom = find_profile_id(server, f"anonymous_id:tom-{t}")
    sue = find_profile_id(server, f"anonymous_id:sue-{t}")
    assert tom != sue
    wait_members(server, "everyone", [tom, sue])
    for pid in (tom, sue):
        assert [m["key"] for m in profile(server, pid)["audiences"]] == ["everyone"]
    events = feed(server, "everyone")
    reasons = {e["properties"]["reason"] for e in events}
    assert reasons <= {"event", "merged", "rebuilt"}, events
    # Replaying the feed gives the current members.
    current: set[int] = set()
    for e in events:
        (current.add if e["event"] == "Audience Entered" else current.discard)(e["profileId"])
    assert current == {tom, sue}, events
