"""Identity resolution and the Profile API, end to end: the official Segment Python
SDK sends a person's journey; the Profile API (Segment's shape) and Tessera's own
profile routes show one profile with every identifier, trait and event."""

from __future__ import annotations

import base64
import uuid

import requests

from tessera_e2e import ADMIN_TOKEN, HTTP_TIMEOUT, assert_error, wait_until

SPACE = "/v1/spaces/default/collections/users/profiles"


def profile_api(server, key: str, what: str, basic: bool = True, **params) -> requests.Response:
    """Segment's Profile API takes its token as the Basic user; Bearer works too."""
    if basic:
        auth = "Basic " + base64.b64encode(f"{ADMIN_TOKEN}:".encode()).decode()
    else:
        auth = f"Bearer {ADMIN_TOKEN}"
    return requests.get(f"{server.url}{SPACE}/{key}/{what}", params=params,
                        headers={"Authorization": auth}, timeout=HTTP_TIMEOUT)


def processed(server) -> bool:
    metrics = server.metrics()
    lag = [v for (name, _), v in metrics.items() if name == "tessera_processor_lag_events"]
    applied = [v for (name, _), v in metrics.items() if name == "tessera_processor_events_total"]
    return bool(lag) and lag[0] == 0 and bool(applied) and applied[0] > 0


def send_journey(server, source, tag: str) -> dict:
    from segment.analytics import Client

    errors = []
    client = Client(source.write_key, host=server.url, sync_mode=True, max_retries=1,
                    on_error=lambda e, batch: errors.append(repr(e)))
    ids = {
        "cookie": f"cookie-{tag}",
        "app": f"app-install-{tag}",
        "user": f"user-{tag}",
        "email": f"Jane.{tag}@Example.com",
        "phone": "+1 (415) 555-2671",
    }
    client.page(anonymous_id=ids["cookie"], name="Pricing")
    client.track(anonymous_id=ids["cookie"], event="Product Added", properties={"sku": "A-1", "price": 19.5})
    client.identify(anonymous_id=ids["cookie"], traits={"email": ids["email"], "name": "Jane"})
    client.identify(ids["user"], {"plan": "pro", "phone": ids["phone"]})
    client.alias(ids["app"], ids["user"])
    client.track(ids["user"], "Order Completed", {"total": 42.5, "currency": "EUR"})
    client.track(anonymous_id=ids["app"], event="App Opened", context={"device": {"id": f"iphone-{tag}"}})
    client.identify(ids["user"], {"email": ids["email"].lower()})
    assert not errors, errors
    wait_until(lambda: processed(server) and profile_api(server, f"user_id:{ids['user']}", "traits").status_code == 200,
               what="processor applied the journey")
    return ids


def test_sdk_journey_becomes_one_profile_with_every_external_id(server, source):
    tag = uuid.uuid4().hex[:8]
    ids = send_journey(server, source, tag)

    r = profile_api(server, f"user_id:{ids['user']}", "external_ids")
    assert r.status_code == 200, r.text
    external = {(e["type"], e["id"]) for e in r.json()["data"]}
    assert external == {
        ("user_id", ids["user"]),
        ("anonymous_id", ids["cookie"]),
        ("anonymous_id", ids["app"]),
        ("email", ids["email"].lower()),
        ("phone", "+14155552671"),
        ("device_id", f"iphone-{tag}"),
    }
    for item in r.json()["data"]:
        assert item["source_id"] == source.id and item["collection"] == "users"

    # Any identifier finds the same merged profile, written as the sender wrote it.
    for key in [f"anonymous_id:{ids['cookie']}", f"email:{ids['email']}", "phone:+14155552671",
                f"anonymous_id:{ids['app']}"]:
        traits = profile_api(server, key, "traits", basic=False)
        assert traits.status_code == 200, (key, traits.text)
        assert traits.json()["traits"] == {
            "email": ids["email"].lower(), "name": "Jane", "plan": "pro", "phone": "+1 (415) 555-2671",
        }, key

    only = profile_api(server, f"user_id:{ids['user']}", "traits", include="plan,name")
    assert only.json()["traits"] == {"plan": "pro", "name": "Jane"}

    # Events: newest first, paginated with the cursor.
    first = profile_api(server, f"user_id:{ids['user']}", "events", limit=3).json()
    assert [e.get("event") or e["type"] for e in first["data"]] == ["identify", "App Opened", "Order Completed"]
    assert first["cursor"]["has_more"] is True
    rest = profile_api(server, f"user_id:{ids['user']}", "events", limit=100, next=first["cursor"]["next"]).json()
    assert len(first["data"]) + len(rest["data"]) == 8
    assert rest["cursor"]["has_more"] is False
    assert all(e["source_id"] == source.id for e in first["data"] + rest["data"])


def test_tessera_profile_routes_show_provenance_identities_and_merges(server, source):
    ids = send_journey(server, source, uuid.uuid4().hex[:8])
    r = server.admin("GET", "/api/v1/profiles", params={"identifier": f"email:{ids['email']}"})
    assert r.status_code == 200, r.text
    profile = r.json()
    assert profile["eventCount"] == 8
    assert profile["traits"]["plan"]["value"] == "pro"
    assert profile["traits"]["plan"]["sourceId"] == source.id
    assert profile["traits"]["plan"]["messageId"]
    assert len(profile["identities"]) == 6
    assert profile["merges"], "the alias merged the app install's profile into the user's"
    assert all(m["rule"].startswith("shared identifier") and m["messageId"] for m in profile["merges"])

    timeline = server.admin("GET", f"/api/v1/profiles/{profile['id']}/timeline", params={"limit": 2}).json()
    assert len(timeline["events"]) == 2 and timeline["nextBefore"] is not None
    older = server.admin("GET", f"/api/v1/profiles/{profile['id']}/timeline",
                         params={"before": timeline["nextBefore"], "limit": 50}).json()
    assert len(older["events"]) == 6


def test_profile_api_errors_have_codes(server, source):
    assert_error(profile_api(server, "user_id:nobody", "traits"), 404, "profile_not_found")
    assert_error(profile_api(server, "no-colon", "traits"), 400, "invalid_request")
    assert_error(profile_api(server, "shoe_size:42", "traits"), 400, "invalid_request")
    r = requests.get(f"{server.url}{SPACE}/user_id:x/traits", timeout=HTTP_TIMEOUT)
    assert_error(r, 401, "invalid_admin_token")
    assert_error(server.admin("GET", "/api/v1/profiles/abc"), 400, "invalid_request")
    assert_error(server.admin("GET", "/api/v1/profiles/999999"), 404, "profile_not_found")


def test_two_users_on_a_shared_device_stay_apart_and_the_conflict_is_recorded(server, source):
    tag = uuid.uuid4().hex[:8]
    for user in ("alice", "bob"):
        r = server.post("/v1/identify", {"userId": f"{user}-{tag}", "traits": {"name": user},
                                         "context": {"device": {"id": f"kiosk-{tag}"}}}, write_key=source.write_key)
        assert r.status_code == 200, r.text
    wait_until(lambda: profile_api(server, f"user_id:bob-{tag}", "traits").status_code == 200, what="bob processed")
    alice = profile_api(server, f"user_id:alice-{tag}", "traits").json()["traits"]
    bob = profile_api(server, f"user_id:bob-{tag}", "traits").json()["traits"]
    assert (alice["name"], bob["name"]) == ("alice", "bob")
    conflicts = server.admin("GET", "/api/v1/identity/conflicts").json()["conflicts"]
    assert any(c["droppedType"] == "device_id" and "user_id" in c["detail"] for c in conflicts)
    assert all(f"kiosk-{tag}" not in c["detail"] for c in conflicts), "conflicts must not echo identifier values"


def test_unlinking_a_shared_email_splits_the_wrongly_merged_profile(server, source):
    tag = uuid.uuid4().hex[:8]
    family = f"family-{tag}@example.com"
    for person in ("tom", "sue"):
        r = server.post("/v1/identify", {"anonymousId": f"{person}-{tag}", "traits": {"email": family, "name": person}},
                        write_key=source.write_key)
        assert r.status_code == 200
    wait_until(lambda: processed(server), what="processed")
    merged = server.admin("GET", "/api/v1/profiles", params={"identifier": f"anonymous_id:tom-{tag}"}).json()
    assert {i["value"] for i in merged["identities"]} >= {f"tom-{tag}", f"sue-{tag}"}

    r = server.admin("POST", "/api/v1/identity/unlink", json={"type": "email", "value": family.upper()})
    assert r.status_code == 200, r.text
    assert len(r.json()["profiles"]) == 2
    tom = server.admin("GET", "/api/v1/profiles", params={"identifier": f"anonymous_id:tom-{tag}"}).json()
    sue = server.admin("GET", "/api/v1/profiles", params={"identifier": f"anonymous_id:sue-{tag}"}).json()
    assert tom["id"] != sue["id"]
    assert (tom["traits"]["name"]["value"], sue["traits"]["name"]["value"]) == ("tom", "sue")
    assert_error(profile_api(server, f"email:{family}", "traits"), 404, "profile_not_found")


def test_replay_after_a_restart_gives_the_same_profiles(server_factory, data_dir, cli):
    server = server_factory(data_dir)
    source = server.create_source("replay")
    ids = send_journey(server, source, uuid.uuid4().hex[:8])

    def current():
        return server.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{ids['user']}"}).json()

    # Computed traits follow the profile within milliseconds (the audience index is
    # updated right after the processor's commit): wait for the order to count.
    wait_until(lambda: current().get("computedTraits", {}).get("total_orders") == 1,
               timeout=10, interval=0.05, what="computed traits caught up")
    before = current()
    server.terminate()

    result = cli("replay", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "Replayed 8 events into 1 profiles" in result.stderr

    again = server_factory(data_dir)

    def reloaded():
        return again.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{ids['user']}"}).json()

    # Until the audience index is built after start, computedTraits is null.
    wait_until(lambda: reloaded().get("computedTraits") is not None, timeout=10, interval=0.05,
               what="audience index loaded")
    after = reloaded()
    assert after == before
