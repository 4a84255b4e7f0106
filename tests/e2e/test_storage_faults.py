"""Storage failures stop acknowledgements, and nothing acknowledged is lost.

- A full disk (a real small tmpfs when this user may mount one, else the
  `disk_full_while:` fault injection): ingest answers `503 storage_unavailable` with
  `Retry-After`, `/healthz` answers 503 `degraded` naming `disk_full`, and both
  recover by themselves once there is room again.
- A failed fsync of the event log (`fsync_fail_after:` fault injection): ingest
  answers `503 event_log_failed` from then on, `/healthz` 503 `failed`; after a
  restart every acknowledged message is there.

Fault injection (`TESSERA_FAULT_INJECT`, docs/operations.md) is inert unless set.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tessera_e2e import HTTP_TIMEOUT, export_events, wait_until


def batch(tag: str, n: int, pad: int = 100) -> list[dict]:
    return [{"type": "track", "userId": f"u-{tag}", "event": "Stored",
             "messageId": f"{tag}-{i}-{uuid.uuid4().hex[:8]}", "properties": {"i": i, "pad": "p" * pad}}
            for i in range(n)]


def post(server, write_key, messages):
    return server.post("/v1/batch", {"batch": messages}, write_key=write_key)


def health(server):
    return requests.get(server.url + "/healthz", timeout=HTTP_TIMEOUT)


def assert_storage_unavailable(r):
    assert r.status_code == 503, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == "storage_unavailable", body
    assert "retry" in body["message"], body
    assert r.headers.get("Retry-After") == "5", r.headers


def stored_ids(data_dir: Path) -> set[str]:
    return {e["messageId"] for e in export_events(data_dir)}


def test_injected_full_disk_answers_503_then_recovers_by_itself(server_factory, tmp_path):
    flag = tmp_path / "disk-is-full"
    server = server_factory(extra_env={"TESSERA_FAULT_INJECT": f"disk_full_while:{flag}"})
    source = server.create_source("web")
    acked: set[str] = set()
    for k in range(5):
        messages = batch(f"before{k}", 10)
        assert post(server, source.write_key, messages).status_code == 200
        acked |= {m["messageId"] for m in messages}

    flag.touch()
    refused: set[str] = set()
    for k in range(3):
        messages = batch(f"full{k}", 10)
        assert_storage_unavailable(post(server, source.write_key, messages))
        refused |= {m["messageId"] for m in messages}
    h = health(server)
    assert h.status_code == 503, h.text
    assert h.json()["status"] == "degraded" and h.json()["reason"] == "disk_full", h.json()
    assert h.json()["code"] == "storage_unavailable" and h.json()["since"], h.json()
    assert server.metrics()[("tessera_event_log_degraded", ())] == 1

    # Room again: the server finds out by itself (no request needed), within seconds.
    flag.unlink()
    wait_until(lambda: health(server).status_code == 200, timeout=10, what="/healthz ok again")
    assert server.metrics()[("tessera_event_log_degraded", ())] == 0
    messages = batch("after", 10)
    assert post(server, source.write_key, messages).status_code == 200
    acked |= {m["messageId"] for m in messages}
    # The SDK's retry of a refused batch is stored once.
    retried = batch("full-retried", 10)
    assert post(server, source.write_key, retried).status_code == 200
    acked |= {m["messageId"] for m in retried}

    server.kill()
    server.extra_env.pop("TESSERA_FAULT_INJECT")
    server.start()
    ids = stored_ids(server.data_dir)
    assert acked <= ids, len(acked - ids)
    assert not (refused & ids), "a refused message was stored"


def test_failed_fsync_stops_acks_until_restart_and_loses_nothing_acknowledged(server_factory):
    server = server_factory(extra_env={"TESSERA_FAULT_INJECT": "fsync_fail_after:15"})
    source = server.create_source("web")
    acked: set[str] = set()
    statuses = []
    for k in range(40):
        messages = batch(f"b{k}", 5)
        r = post(server, source.write_key, messages)
        statuses.append(r.status_code)
        if r.status_code == 200:
            acked |= {m["messageId"] for m in messages}
            assert statuses.count(503) == 0, "acknowledged after a failed fsync"
        else:
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "event_log_failed", r.text
            assert r.headers.get("Retry-After") == "30", r.headers
    assert 0 < len(acked) and 503 in statuses, statuses
    h = health(server)
    assert h.status_code == 503 and h.json()["status"] == "failed", h.text
    assert h.json()["code"] == "event_log_failed", h.json()

    server.kill()
    server.extra_env.pop("TESSERA_FAULT_INJECT")
    server.start()
    assert health(server).status_code == 200
    ids = stored_ids(server.data_dir)
    assert acked <= ids, len(acked - ids)
    # And it stores again.
    messages = batch("after-restart", 5)
    assert post(server, source.write_key, messages).status_code == 200


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def test_real_full_disk_answers_503_then_recovers(server_factory, tmp_path):
    mnt = tmp_path / "small-fs"
    if not mount_tmpfs(mnt, "48m"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected test covers this")
    try:
        data = mnt / "data"
        server = server_factory(data_dir=data)
        source = server.create_source("web")
        acked: set[str] = set()
        for k in range(3):
            messages = batch(f"before{k}", 20)
            assert post(server, source.write_key, messages).status_code == 200
            acked |= {m["messageId"] for m in messages}
        # Fill the filesystem.
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        # The WAL's free tail absorbs some commits; then they fail.
        refused = None
        for k in range(400):
            messages = batch(f"fill{k}", 50, pad=2000)
            r = post(server, source.write_key, messages)
            if r.status_code == 200:
                acked |= {m["messageId"] for m in messages}
                continue
            assert_storage_unavailable(r)
            refused = {m["messageId"] for m in messages}
            break
        assert refused is not None, "the full filesystem never refused a commit"
        h = health(server)
        assert h.status_code == 503 and h.json()["reason"] == "disk_full", h.text
        assert server.running()

        filler.unlink()
        wait_until(lambda: health(server).status_code == 200, timeout=10, what="/healthz ok again")
        messages = batch("after", 20)
        assert post(server, source.write_key, messages).status_code == 200
        acked |= {m["messageId"] for m in messages}
        server.kill()
        server.start()
        ids = stored_ids(server.data_dir)
        assert acked <= ids, len(acked - ids)
        assert not (refused & ids)
        server.terminate()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
