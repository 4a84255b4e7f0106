"""Privacy end to end: consent per purpose with history, access export, erasure that
leaves no byte of the person in any file of the data directory (checked by reading
every file, WAL included), suppression of their identifiers afterwards, restart and
replay bringing nothing back, other people's data intact, and the same through the
`tessera privacy` CLI with and without a running server.

Events are sent with the official Segment Python SDK where it matters that SDK
messages are what gets erased, raw Tracking API batches elsewhere.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import requests

from tessera_e2e import (
    ADMIN_TOKEN,
    HTTP_TIMEOUT,
    assert_error,
    export_events,
    files_containing,
    free_port,
    run_cli,
    wait_until,
)

WAIT = 20.0
PROFILES = "/api/v1/profiles"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def send_batch(server, source, messages: list[dict]) -> None:
    r = server.post("/v1/batch", {"batch": messages}, write_key=source.write_key)
    assert r.status_code == 200, f"POST /v1/batch -> {r.status_code} {r.text}"


def msg(kind: str, **fields) -> dict:
    return {"type": kind, "messageId": str(uuid.uuid4()), **fields}


def caught_up(server) -> None:
    def lag_zero():
        text = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT).text
        for line in text.splitlines():
            if line.startswith("tessera_processor_lag_events "):
                return float(line.split()[1]) == 0
        return False

    wait_until(lag_zero, timeout=WAIT, what="the processor applied every event")


def profile(server, identifier: str):
    return server.admin("GET", PROFILES, params={"identifier": identifier})


def buyers(server) -> list[int]:
    r = server.admin("GET", "/api/v1/audiences/buyers/members")
    assert r.status_code == 200, r.text
    return [m["profileId"] for m in r.json()["members"]]


def wait_erasure(server, request_id: str) -> dict:
    def done():
        r = server.admin("GET", f"/api/v1/privacy/erasures/{request_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["status"] in ("completed", "failed") else None

    body = wait_until(done, timeout=WAIT, what="the erasure completed")
    assert body["status"] == "completed", body
    return body


class Person:
    """Ada: anonymous browsing, then identified with email and phone, consent, traits."""

    def __init__(self):
        t = tag()
        self.anonymous_id = f"anon-ada-{t}"
        self.user_id = f"ada-{t}"
        self.email_sent = f"Ada.Lovelace.{t}@Example.com"
        self.email = self.email_sent.lower()
        self.phone_sent = "+44 20 7946 0958"
        self.phone = "+442079460958"
        self.name = f"Zebedee{t}"
        self.city = f"Quuxville{t}"

    def needles(self) -> list[str]:
        return [self.anonymous_id, self.user_id, self.email_sent, self.email, self.phone_sent,
                self.phone, self.name, self.city]

    def messages(self) -> list[dict]:
        consent = {"consent": {"categoryPreferences": {"marketing": True, "analytics": True}}}
        return [
            msg("page", anonymousId=self.anonymous_id, name="Home", properties={"path": "/"}),
            msg("track", anonymousId=self.anonymous_id, event="Product Added",
                properties={"sku": "SKU-1", "price": 20}),
            msg("identify", anonymousId=self.anonymous_id, userId=self.user_id,
                traits={"email": self.email_sent, "name": self.name, "address": {"city": self.city}},
                context=consent),
            msg("identify", userId=self.user_id, traits={"phone": self.phone_sent}),
            msg("track", userId=self.user_id, event="Order Completed",
                properties={"revenue": 42, "shipping_city": self.city}),
        ]


def test_erasure_leaves_no_trace_in_any_file_and_suppresses_new_events(server_factory, tmp_path):
    server = server_factory()
    source = server.create_source("web")
    ada = Person()
    bob_id = f"bob-{tag()}"
    bob_traits = {"email": f"bob.{tag()}@example.com", "name": "Bob Keeps"}
    # Bob's own history, plus one event of his that also names Ada's email (refused
    # as a second user on one profile: a conflict that stays attributed to Bob).
    bob_messages = [
        msg("identify", userId=bob_id, traits=bob_traits),
        msg("track", userId=bob_id, event="Order Completed", properties={"revenue": 10}),
        msg("track", userId=bob_id, event="Shared Cart",
            context={"traits": {"email": ada.email_sent}}, properties={"items": 2}),
    ]
    # A destination that keeps every event queued (nobody listens): the outbox holds
    # copies of Ada's messages, and of Bob's that names her.
    r = server.admin("POST", "/api/v1/destinations", json={
        "id": "nowhere", "type": "webhook", "settings": {"url": f"http://127.0.0.1:{free_port()}/x"},
        "delivery": {"initialBackoffMs": 60000}})
    assert r.status_code == 201, r.text
    send_batch(server, source, ada.messages() + bob_messages)
    caught_up(server)
    wait_until(lambda: len(server.admin("GET", "/api/v1/deliveries").json()["deliveries"]) == 8,
               timeout=WAIT, what="every event queued for the destination")

    r = server.admin("POST", "/api/v1/audiences",
                     json={"key": "buyers", "definition": 'event "Order Completed"'})
    assert r.status_code == 201, r.text
    wait_until(lambda: len(buyers(server)) == 2, timeout=WAIT, what="both are buyers")

    # Access export before: everything about Ada, with provenance.
    r = server.admin("POST", "/api/v1/privacy/exports", json={"identifier": f"email:{ada.email_sent}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    ids = {(i["type"], i["value"]) for i in doc["identities"]}
    assert {("email", ada.email), ("user_id", ada.user_id), ("anonymous_id", ada.anonymous_id),
            ("phone", ada.phone)} <= ids, ids
    assert doc["traits"]["name"]["value"] == ada.name
    assert doc["traits"]["name"]["source"]["id"] == source.id
    assert doc["traits"]["name"]["messageId"]
    assert len(doc["events"]) == 5, [e["message"]["type"] for e in doc["events"]]
    assert doc["consent"]["current"]["marketing"]["granted"] is True
    assert [m["audience"] for m in doc["audiences"]["current"]] == ["buyers"]
    assert doc["audiences"]["history"][0]["event"] == "Audience Entered"
    assert doc["journeys"] == [] and len(doc["deliveries"]) == 5
    assert {d["destination"] for d in doc["deliveries"]} == {"nowhere"}
    bob_before = profile(server, f"user_id:{bob_id}").json()
    # The check below can fail: before erasure every needle is found in some file.
    before = files_containing(server.data_dir, ada.needles())
    assert {f.split(": ", 1)[1] for f in before} == {repr(n) for n in ada.needles()}, before

    r = server.admin("POST", "/api/v1/privacy/erasures", json={"identifier": f"phone:{ada.phone_sent}"})
    assert r.status_code == 202, r.text
    request = r.json()
    assert request["id"].startswith("prq_") and request["status"] in ("pending", "running", "completed")
    done = wait_erasure(server, request["id"])
    assert done["result"]["profilesErased"] >= 1 and done["result"]["eventsDeleted"] == 5, done
    assert done["result"]["eventsRedacted"] == 1, done

    for identifier in (f"email:{ada.email}", f"user_id:{ada.user_id}", f"anonymous_id:{ada.anonymous_id}"):
        assert_error(profile(server, identifier), 404, "profile_not_found", identifier)
    r = server.admin("POST", "/api/v1/privacy/exports", json={"identifier": f"user_id:{ada.user_id}"})
    assert_error(r, 404, "profile_not_found")
    assert buyers(server) == [bob_before["id"]]

    # Her deliveries are gone; Bob's are kept, without her email.
    queued = server.admin("GET", "/api/v1/deliveries").json()["deliveries"]
    assert len(queued) == 3 and {d["profileId"] for d in queued} == {bob_before["id"]}
    # No file of the data directory holds any of Ada's identifiers or traits.
    assert files_containing(server.data_dir, ada.needles()) == []

    # Bob is intact: same profile, traits and events; his shared event lost only Ada's email.
    bob_after = profile(server, f"user_id:{bob_id}").json()
    assert bob_after["id"] == bob_before["id"]
    assert bob_after["eventCount"] == 3
    assert bob_after["traits"]["name"]["value"] == "Bob Keeps"
    assert bob_after["traits"]["email"]["value"] == bob_traits["email"]
    shared = [e for e in export_events(server.data_dir) if e.get("event") == "Shared Cart"]
    assert len(shared) == 1 and shared[0]["userId"] == bob_id and shared[0]["properties"] == {"items": 2}
    assert "email" not in shared[0].get("context", {}).get("traits", {})

    # New messages carrying any of Ada's identifiers are dropped (the SDK still gets 200).
    again = [msg("track", userId=ada.user_id, event="Came Back"),
             msg("identify", anonymousId=f"new-{tag()}", traits={"email": ada.email_sent}),
             msg("track", anonymousId=f"other-{tag()}", event="Phone Typed",
                 context={"traits": {"phone": ada.phone_sent}}),
             msg("alias", userId=f"fresh-{tag()}", previousId=ada.anonymous_id),
             msg("track", userId=bob_id, event="Still Here")]
    send_batch(server, source, again)
    caught_up(server)
    names = [e.get("event") for e in export_events(server.data_dir)]
    assert "Still Here" in names and "Came Back" not in names and "Phone Typed" not in names
    text = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT).text
    assert 'tessera_events_suppressed_total{kind="dropped"} 4' in text, [
        line for line in text.splitlines() if "suppressed" in line]

    # Nothing Tessera writes itself brings her back either.
    r = server.admin("POST", "/api/v1/privacy/consent",
                     json={"identifier": f"email:{ada.email}", "purposes": {"marketing": True}})
    assert_error(r, 409, "identifier_erased")

    # The audit log has the request and its completion, with no identifier in clear.
    audit = server.admin("GET", "/api/v1/audit", params={"action": "privacy."}).json()["entries"]
    actions = [e["action"] for e in audit]
    assert "privacy.export" in actions and "privacy.erasure.request" in actions
    assert "privacy.erasure.complete" in actions
    assert not any(n.lower() in json.dumps(audit).lower() for n in ada.needles())

    # Restart and replay: nothing comes back.
    server.terminate()
    run_cli("replay", data_dir=server.data_dir, check=True)
    server.start()
    caught_up(server)
    assert_error(profile(server, f"email:{ada.email}"), 404, "profile_not_found")
    assert profile(server, f"user_id:{bob_id}").json()["eventCount"] == 4
    assert files_containing(server.data_dir, ada.needles()) == []


def test_consent_per_purpose_with_history_in_the_profile_and_audiences(server_factory):
    server = server_factory()
    source = server.create_source("app")
    t = tag()
    user = f"carol-{t}"
    email = f"carol.{t}@example.com"
    send_batch(server, source, [
        msg("identify", userId=user, traits={"email": email},
            timestamp="2026-01-01T10:00:00Z",
            context={"consent": {"categoryPreferences": {"Marketing": True, "analytics": False}}}),
        msg("identify", userId=user, traits={"consent": {"personalization": True}},
            timestamp="2026-01-02T10:00:00Z"),
        msg("track", userId=user, event="Consent Preference Updated",
            timestamp="2026-01-03T10:00:00Z",
            context={"consent": {"categoryPreferences": {"marketing": False}}}),
    ])
    r = server.admin("POST", "/api/v1/audiences", json={"key": "mailable", "definition": "consent marketing"})
    assert r.status_code == 201, r.text
    caught_up(server)

    body = profile(server, f"email:{email}").json()
    consent = body["consent"]
    assert consent["current"]["marketing"]["granted"] is False
    assert consent["current"]["analytics"]["granted"] is False
    assert consent["current"]["personalization"]["granted"] is True
    assert consent["current"]["marketing"]["source"] == source.id
    history = [(h["purpose"], h["granted"]) for h in consent["history"]]
    assert history == [("analytics", False), ("marketing", True), ("personalization", True),
                       ("marketing", False)], history
    members = lambda: server.admin("GET", "/api/v1/audiences/mailable/members").json()["members"]  # noqa: E731
    wait_until(lambda: members() == [], timeout=WAIT, what="marketing refused: not mailable")

    # The consent API records a decision in the log (so replay keeps it).
    r = server.admin("POST", "/api/v1/privacy/consent",
                     json={"identifier": f"email:{email}", "purposes": {"marketing": True}})
    assert r.status_code == 202, r.text
    message_id = r.json()["messageId"]
    caught_up(server)
    wait_until(lambda: [m["profileId"] for m in members()] == [body["id"]], timeout=WAIT,
               what="consent granted through the API: mailable")
    consent = profile(server, f"email:{email}").json()["consent"]
    assert consent["current"]["marketing"] == {
        "granted": True, "timestamp": consent["current"]["marketing"]["timestamp"],
        "source": None, "messageId": message_id}
    stored = [e for e in export_events(server.data_dir) if e.get("messageId") == message_id]
    assert stored and stored[0]["context"]["consent"]["categoryPreferences"] == {"marketing": True}

    # Bad requests get a code that says what to fix.
    for payload, status, code in [
        ({"identifier": f"email:{email}", "purposes": {"telepathy": True}}, 400, "unknown_purpose"),
        ({"identifier": f"email:{email}", "purposes": {"marketing": "yes"}}, 400, "invalid_field_type"),
        ({"identifier": f"email:{email}", "purposes": {}}, 400, "invalid_request"),
        ({"identifier": "shoe:42", "purposes": {"marketing": True}}, 400, "invalid_identifier"),
        ({"identifier": "email:not-an-email", "purposes": {"marketing": True}}, 400, "invalid_identifier"),
        ({"purposes": {"marketing": True}}, 400, "invalid_request"),
    ]:
        assert_error(server.admin("POST", "/api/v1/privacy/consent", json=payload), status, code, str(payload))
    assert_error(server.admin("POST", "/api/v1/privacy/erasures", json={"identifier": "nope"}),
                 400, "invalid_identifier")
    assert_error(server.admin("GET", "/api/v1/privacy/erasures/prq_missing"), 404, "privacy_request_not_found")
    for method, path in [("POST", "/api/v1/privacy/exports"), ("POST", "/api/v1/privacy/erasures"),
                         ("GET", "/api/v1/privacy/erasures/prq_x"), ("POST", "/api/v1/privacy/consent")]:
        assert_error(server.admin(method, path, token=None, json={}), 401, "invalid_admin_token", path)


def test_cli_export_and_erase_without_and_with_a_running_server(server_factory, tmp_path):
    server = server_factory()
    source = server.create_source("crm")
    ada, eve = Person(), Person()
    send_batch(server, source, ada.messages() + eve.messages())
    caught_up(server)
    server.terminate()

    # No server: the CLI does it itself.
    out = tmp_path / "ada.json"
    run_cli("privacy", "export", "--identifier", f"user_id:{ada.user_id}", "--output", str(out),
            data_dir=server.data_dir, check=True)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert doc["traits"]["name"]["value"] == ada.name and len(doc["events"]) == 5
    cp = run_cli("privacy", "erase", "--identifier", f"email:{ada.email_sent}", data_dir=server.data_dir,
                 check=True)
    status = json.loads(cp.stdout)
    assert status["status"] == "completed" and status["result"]["eventsDeleted"] == 5, status
    assert files_containing(server.data_dir, ada.needles()) == []
    cp = run_cli("privacy", "status", status["id"], data_dir=server.data_dir, check=True)
    assert json.loads(cp.stdout)["status"] == "completed"
    missing = run_cli("privacy", "export", "--identifier", f"user_id:{ada.user_id}", data_dir=server.data_dir)
    assert missing.returncode != 0 and "profile_not_found" in missing.stderr
    # An import of old data does not bring the person back either.
    jsonl = tmp_path / "crm.jsonl"
    jsonl.write_text("\n".join(json.dumps(m) for m in [
        msg("track", userId=ada.user_id, event="Imported Back"),
        msg("track", userId=f"zed-{tag()}", event="Imported New")]) + "\n")
    cp = run_cli("import", str(jsonl), "--source", "crm", data_dir=server.data_dir, check=True)
    assert "1 rows carried an erased person's identifier" in cp.stderr, cp.stderr
    names = [e.get("event") for e in export_events(server.data_dir)]
    assert "Imported New" in names and "Imported Back" not in names
    bad = run_cli("privacy", "erase", "--identifier", "email", data_dir=server.data_dir)
    assert bad.returncode != 0 and "invalid_identifier" in bad.stderr

    # A server runs: the CLI queues the request and waits for the server to do it.
    server.start()
    caught_up(server)
    cp = run_cli("privacy", "erase", "--identifier", f"anonymous_id:{eve.anonymous_id}",
                 data_dir=server.data_dir, check=True, timeout=60)
    status = json.loads(cp.stdout)
    assert status["status"] == "completed" and status["result"]["eventsDeleted"] == 5, status
    assert_error(profile(server, f"user_id:{eve.user_id}"), 404, "profile_not_found")
    assert files_containing(server.data_dir, eve.needles()) == []
    # Two servers never share a data directory.
    second = run_cli("serve", "--listen", "127.0.0.1:0", data_dir=server.data_dir, timeout=30,
                     env={"TESSERA_ADMIN_TOKEN": ADMIN_TOKEN})
    assert second.returncode != 0 and "serve.lock" in second.stderr


def test_anonymize_mode_keeps_suppressed_behaviour_without_identity(server_factory, tmp_path):
    config = tmp_path / "tessera.toml"
    config.write_text('[privacy]\nsuppressed_events = "anonymize"\n')
    server = server_factory(extra_env={"TESSERA_CONFIG": str(config)})
    source = server.create_source("web")
    ada = Person()
    send_batch(server, source, ada.messages())
    caught_up(server)
    r = server.admin("POST", "/api/v1/privacy/erasures", json={"identifier": f"user_id:{ada.user_id}"})
    assert r.status_code == 202, r.text
    wait_erasure(server, r.json()["id"])
    send_batch(server, source, [
        msg("track", userId=ada.user_id, event="Came Back", properties={"plan": "pro"},
            context={"traits": {"email": ada.email_sent}, "ip": "10.1.2.3", "page": {"path": "/pricing"}}),
        msg("identify", userId=ada.user_id, traits={"name": ada.name}),
    ])
    caught_up(server)
    stored = [e for e in export_events(server.data_dir) if e.get("event") == "Came Back"]
    assert len(stored) == 1, stored
    event = stored[0]
    assert "userId" not in event and event["anonymousId"].startswith("anonymized-")
    assert event["properties"] == {"plan": "pro"} and event["context"]["page"] == {"path": "/pricing"}
    assert "traits" not in event["context"] and "ip" not in event["context"]
    assert not any(e.get("type") == "identify" for e in export_events(server.data_dir))
    assert files_containing(server.data_dir, ada.needles()) == []
