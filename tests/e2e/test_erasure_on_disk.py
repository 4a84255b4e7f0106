"""Erasure leaves no byte of the person in any file, whatever the page layout.

A person's events are ingested while other clients write too: with 6+ clients
appending concurrently, the person's rows end up spread over many pages of the
log among other people's, and deleting them rebalances pages, which leaves stale
copies of rows in the unallocated space of pages SQLite rebuilt (`secure_delete`
only zeroes the cells it deletes where they lie). The checker below reads every
byte of every file of the data directory (main files, `-wal`, `-shm`, anything
else), free and unallocated space included, in UTF-8 and JSON-escaped forms.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import requests

from tessera_e2e import HTTP_TIMEOUT, assert_error, basic_auth, export_events, files_containing, wait_until

CLIENTS = 7
SECONDS = 3.0
WAIT = 60.0


def caught_up(server) -> None:
    def lag_zero():
        text = requests.get(server.url + "/metrics", timeout=HTTP_TIMEOUT).text
        for line in text.splitlines():
            if line.startswith("tessera_processor_lag_events "):
                return float(line.split()[1]) == 0
        return False

    wait_until(lag_zero, timeout=WAIT, what="the processor applied every event")


def concurrent_ingest(url: str, write_key: str, person: dict, seconds: float) -> int:
    """CLIENTS threads post batches of identify + track for the person and a track
    for a bystander of their own, for `seconds`. Returns the person's acknowledged
    messages."""
    auth = basic_auth(write_key)
    stop = time.monotonic() + seconds
    acked = [0] * CLIENTS
    errors: list[str] = []

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while time.monotonic() < stop:
            i += 1
            batch = [
                {"type": "identify", "userId": person["user_id"], "messageId": str(uuid.uuid4()),
                 "traits": {"email": person["email"], "name": person["name"], "city": person["city"],
                            "visit": i}},
                {"type": "track", "userId": person["user_id"], "event": "Viewed", "messageId": str(uuid.uuid4()),
                 "properties": {"n": n, "i": i, "note": f"from {person['name']}"}},
                {"type": "track", "userId": f"bystander-{n}", "event": "Viewed", "messageId": str(uuid.uuid4()),
                 "properties": {"n": n, "i": i}},
            ]
            r = session.post(url + "/v1/batch", data=json.dumps({"batch": batch}),
                             headers={"Authorization": auth, "Content-Type": "application/json"},
                             timeout=HTTP_TIMEOUT)
            if r.status_code == 200:
                acked[n] += 2
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    assert not errors, errors[:5]
    return sum(acked)


def test_erasure_after_concurrent_ingest_leaves_no_byte_in_any_file(server_factory):
    server = server_factory()
    source = server.create_source("web")
    t = uuid.uuid4().hex[:10]
    person = {"user_id": f"erase-user-{t}", "email": f"erase.me.{t}@example.com",
              "name": f"Quentin{t}", "city": f"Plumbury{t}"}
    needles = list(person.values())

    sent = concurrent_ingest(server.url, source.write_key, person, SECONDS)
    assert sent > 50, sent
    caught_up(server)
    # The check can fail: before the erasure every needle is in some file.
    before = {f.split(": ", 1)[1] for f in files_containing(server.data_dir, needles)}
    assert before == {repr(n) for n in needles}, before

    r = server.admin("POST", "/api/v1/privacy/erasures", json={"identifier": f"user_id:{person['user_id']}"})
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]

    def done():
        body = server.admin("GET", f"/api/v1/privacy/erasures/{request_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    body = wait_until(done, timeout=WAIT, what="the erasure completed")
    assert body["status"] == "completed", body
    assert body["result"]["eventsDeleted"] == sent, body

    # Gone from what Tessera shows...
    assert_error(server.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{person['user_id']}"}),
                 404, "profile_not_found")
    assert not [e for e in export_events(server.data_dir) if e.get("userId") == person["user_id"]]
    # ...and from every byte of every file.
    assert files_containing(server.data_dir, needles) == []

    # Bystanders are intact.
    bystanders = [e for e in export_events(server.data_dir) if str(e.get("userId", "")).startswith("bystander-")]
    assert len(bystanders) == sent // 2, (len(bystanders), sent)

    # A graceful restart (final checkpoint) and a kill -9 bring nothing back.
    server.terminate()
    assert files_containing(server.data_dir, needles) == []
    server.start()
    caught_up(server)
    server.kill()
    assert files_containing(server.data_dir, needles) == []
    server.start()
    caught_up(server)
    assert files_containing(server.data_dir, needles) == []
