"""A crash in the middle of erasure, replay, an identity merge and a journey send
recovers to a correct state at the next start.

Each test makes the real binary abort at a chosen moment with the fault injection
`TESSERA_FAULT_INJECT=crash_at:<point>` (docs/operations.md; inert unless set):
`std::process::abort()`, so nothing is flushed or cleaned up, as with `kill -9`.
Then it starts the server again without the variable and checks:

- erasure: the request is carried out again from its stored plan; the person is gone
  from the API and from every byte of every file; the bystander is intact;
- replay: what a crashed replay left is continued, not counted twice (event counts,
  computed `total_orders`, audience members equal those before);
- merge of two large profiles: both identifiers lead to one profile holding every
  event once;
- journey send: the message reaches the receiver again with the same
  `Idempotency-Key` (delivery is at least once, docs/activation.md), one delivery and
  one journey run are recorded, and it is not sent a third time.
"""

from __future__ import annotations

import json
import time
import uuid

import requests

from tessera_e2e import HTTP_TIMEOUT, assert_error, export_events, run_cli, wait_until
from test_activation import Receiver
from test_erasure_on_disk import files_containing

WAIT = 60.0
FAULT = "TESSERA_FAULT_INJECT"


def msg(kind: str, **fields) -> dict:
    return {"type": kind, "messageId": str(uuid.uuid4()), **fields}


def send(server, source, messages: list[dict]) -> None:
    for i in range(0, len(messages), 500):
        r = server.post("/v1/batch", {"batch": messages[i:i + 500]}, write_key=source.write_key)
        assert r.status_code == 200, f"POST /v1/batch -> {r.status_code} {r.text}"


def caught_up(server) -> None:
    def lag_zero():
        text = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT).text
        for line in text.splitlines():
            if line.startswith("tessera_processor_lag_events "):
                return float(line.split()[1]) == 0
        return False

    wait_until(lag_zero, timeout=WAIT, what="the processor applied every event")


def crashed(server, point: str) -> None:
    """Waits until the server aborted at `point`."""
    wait_until(lambda: not server.running(), timeout=WAIT, what=f"the server aborted at {point}")
    assert server.proc.returncode != 0
    assert f"aborting at {point}" in server.log_text(), server.log_tail()
    server.kill()  # closes the log


def restart_without_faults(server) -> None:
    server.extra_env.pop(FAULT, None)
    server.start()


def profile(server, identifier: str) -> dict:
    r = server.admin("GET", "/api/v1/profiles", params={"identifier": identifier})
    assert r.status_code == 200, r.text
    return r.json()


def full_profile(server, identifier: str) -> dict:
    """The profile with its computed traits, once the audience index has them."""
    pid = profile(server, identifier)["id"]

    def ready():
        body = server.admin("GET", f"/api/v1/profiles/{pid}").json()
        return body if body.get("computedTraits") is not None else None

    return wait_until(ready, timeout=WAIT, what="computed traits are available")


def test_crash_in_the_middle_of_erasure_completes_it_at_the_next_start(server_factory):
    server = server_factory(extra_env={FAULT: "crash_at:erasure_after_events"})
    source = server.create_source("web")
    t = uuid.uuid4().hex[:8]
    person = {"user": f"crash-erase-{t}", "email": f"crash.erase.{t}@example.com", "name": f"Ottoline{t}"}
    bystander = f"bystander-{t}"
    send(server, source, [msg("identify", userId=person["user"], traits={"email": person["email"], "name": person["name"]})]
         + [msg("track", userId=person["user"], event="Viewed", properties={"i": i}) for i in range(50)]
         + [msg("track", userId=bystander, event="Viewed", properties={"i": i}) for i in range(50)])
    caught_up(server)
    r = server.admin("POST", "/api/v1/privacy/erasures", json={"identifier": f"user_id:{person['user']}"})
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    crashed(server, "erasure_after_events")
    # The crash came after the events were deleted and before the profile was.
    assert not [e for e in export_events(server.data_dir) if e.get("userId") == person["user"]]

    restart_without_faults(server)

    def done():
        body = server.admin("GET", f"/api/v1/privacy/erasures/{request_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    body = wait_until(done, timeout=WAIT, what="the erasure completed after the restart")
    assert body["status"] == "completed", body
    assert body["result"]["profilesErased"] == 1, body
    assert_error(server.admin("GET", "/api/v1/profiles", params={"identifier": f"email:{person['email']}"}),
                 404, "profile_not_found")
    assert files_containing(server.data_dir, list(person.values())) == []
    assert profile(server, f"user_id:{bystander}")["eventCount"] == 50
    # Still suppressed.
    send(server, source, [msg("track", userId=person["user"], event="Back")])
    caught_up(server)
    assert not [e for e in export_events(server.data_dir) if e.get("userId") == person["user"]]


def snapshot(server, users: list[str]) -> dict:
    state = {}
    for user in users:
        p = full_profile(server, f"user_id:{user}")
        state[user] = (p["eventCount"], p["computedTraits"].get("total_orders"),
                       json.dumps(p["traits"], sort_keys=True))
    members = server.admin("GET", "/api/v1/audiences/buyers/members").json()["members"]
    state["buyers"] = sorted(m["profileId"] for m in members)
    return state


def test_crash_in_the_middle_of_replay_counts_nothing_twice(server_factory):
    server = server_factory()
    source = server.create_source("web")
    r = server.admin("POST", "/api/v1/audiences",
                     json={"key": "buyers", "definition": "computed total_orders >= 3"})
    assert r.status_code == 201, r.text
    t = uuid.uuid4().hex[:8]
    users = [f"replay-{t}-{n}" for n in range(40)]
    messages = []
    for n, user in enumerate(users):
        messages.append(msg("identify", userId=user, traits={"plan": ["free", "pro"][n % 2]}))
        messages += [msg("track", userId=user, event="Order Completed", properties={"revenue": 10 + i})
                     for i in range(n % 6)]
        messages += [msg("track", userId=user, event="Viewed", properties={"i": i}) for i in range(150)]
    send(server, source, messages)  # ~6,200 events: a replay applies them in 4 chunks
    caught_up(server)
    before = snapshot(server, users)
    assert before["buyers"], "some are buyers"
    server.terminate()

    cp = run_cli("replay", data_dir=server.data_dir, env={FAULT: "crash_at:replay_midway"})
    assert cp.returncode != 0 and "aborting at replay_midway" in cp.stderr, (cp.returncode, cp.stderr[-2000:])

    # The server continues from where the replay stopped.
    server.start()
    caught_up(server)
    assert snapshot(server, users) == before
    # And a full replay afterwards agrees.
    server.terminate()
    run_cli("replay", data_dir=server.data_dir, check=True)
    server.start()
    caught_up(server)
    assert snapshot(server, users) == before


def test_crash_in_the_middle_of_a_merge_of_two_large_profiles(server_factory):
    server = server_factory(extra_env={FAULT: "crash_at:merge_before_commit"})
    source = server.create_source("web")
    t = uuid.uuid4().hex[:8]
    anon, user = f"anon-merge-{t}", f"user-merge-{t}"
    send(server, source,
         [msg("track", anonymousId=anon, event="Viewed", properties={"i": i}) for i in range(1500)]
         + [msg("identify", anonymousId=anon, traits={"color": "green"})]
         + [msg("track", userId=user, event="Ordered", properties={"i": i}) for i in range(1500)]
         + [msg("identify", userId=user, traits={"email": f"merge.{t}@example.com"})])
    caught_up(server)
    a, u = profile(server, f"anonymous_id:{anon}"), profile(server, f"user_id:{user}")
    assert a["id"] != u["id"] and a["eventCount"] == 1501 and u["eventCount"] == 1501
    # The identify that links them merges the two profiles: the server aborts inside.
    send(server, source, [msg("identify", anonymousId=anon, userId=user, traits={"size": "L"})])
    crashed(server, "merge_before_commit")

    restart_without_faults(server)
    caught_up(server)
    by_anon, by_user = profile(server, f"anonymous_id:{anon}"), profile(server, f"user_id:{user}")
    assert by_anon["id"] == by_user["id"], (by_anon["id"], by_user["id"])
    assert by_user["eventCount"] == 1501 + 1501 + 1, by_user["eventCount"]
    traits = {k: v["value"] if isinstance(v, dict) else v for k, v in by_user["traits"].items()}
    assert traits.get("color") == "green" and traits.get("size") == "L", traits
    assert traits.get("email") == f"merge.{t}@example.com", traits


def test_crash_after_a_journey_send_resends_it_with_the_same_key_once(server_factory):
    rx = Receiver().start()
    try:
        server = server_factory(extra_env={FAULT: "crash_at:send_after_delivery"})
        source = server.create_source("app")
        r = server.admin("POST", "/api/v1/destinations", json={
            "id": "hooks", "type": "webhook", "settings": {"url": f"{rx.url}/journeys"},
            "filter": {"includeEvents": False}})
        assert r.status_code == 201, r.text
        r = server.admin("POST", "/api/v1/journeys", json={
            "key": "welcome", "trigger": {"event": "Signed Up"},
            "steps": [{"send": {"destination": "hooks"}}]})
        assert r.status_code == 201, r.text
        user = f"journey-{uuid.uuid4().hex[:8]}"
        send(server, source, [msg("track", userId=user, event="Signed Up")])
        wait_until(lambda: len(rx.accepted()) >= 1, timeout=WAIT, what="the receiver got the message")
        crashed(server, "send_after_delivery")
        first_key = rx.accepted()[0]["headers"].get("idempotency-key")
        assert first_key

        restart_without_faults(server)
        wait_until(lambda: len(rx.accepted()) >= 2, timeout=WAIT, what="the unrecorded delivery was sent again")

        def settled():
            ds = server.admin("GET", "/api/v1/deliveries", params={"destination": "hooks"}).json()["deliveries"]
            return ds if ds and all(d["status"] == "delivered" for d in ds) else None

        deliveries = wait_until(settled, timeout=WAIT, what="the delivery is recorded as delivered")
        assert len(deliveries) == 1, deliveries
        time.sleep(3.0)  # would a third copy come?
        keys = [r["headers"].get("idempotency-key") for r in rx.accepted()]
        assert keys == [first_key, first_key], keys
        pid = profile(server, f"user_id:{user}")["id"]
        runs = server.admin("GET", f"/api/v1/profiles/{pid}/journeys").json()["runs"]
        assert len(runs) == 1, runs
    finally:
        rx.stop()
