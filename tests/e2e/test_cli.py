"""The `tessera` command line: sources, bulk import (JSONL and CSV), export
filters. The CLI works on a data dir with or without a server running on it."""

from __future__ import annotations

import csv
import json
import time
import uuid
from datetime import timedelta


from tessera_e2e import (
    assert_error,
    assert_ok,
    assert_stored_as_sent,
    by_message_id,
    iso_ms,
    new_id,
    parse_ts,
    utcnow,
    wait_until,
)


def cli_json(cp):
    assert cp.returncode == 0, f"{cp.args} exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    try:
        return json.loads(cp.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"{cp.args}: stdout is not JSON:\n{cp.stdout}\nstderr:\n{cp.stderr}") from None


def create_source(cli, data_dir, name):
    out = cli_json(cli("sources", "create", name, "--json", data_dir=data_dir))
    assert set(out) >= {"id", "name", "writeKey"}, out
    assert out["id"].startswith("src_") and out["name"] == name and out["writeKey"], out
    return out


def list_sources(cli, data_dir, env=None):
    out = cli_json(cli("sources", "list", "--json", data_dir=data_dir, env=env))
    sources = out["sources"] if isinstance(out, dict) else out
    assert isinstance(sources, list), out
    return {s["id"]: s for s in sources}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
            f.write("\n")
    return path


def non_empty_lines(path):
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


# --------------------------------------------------------------------------- sources
def test_sources_create_list_and_disable_without_a_server(cli, data_dir, server_factory):
    web = create_source(cli, data_dir, "web")
    ios = create_source(cli, data_dir, "ios-app")
    assert web["id"] != ios["id"] and web["writeKey"] != ios["writeKey"]

    listed = list_sources(cli, data_dir)
    assert set(listed) == {web["id"], ios["id"]}
    assert listed[web["id"]]["name"] == "web" and listed[web["id"]]["enabled"] is True
    assert "writeKey" not in listed[web["id"]], "the list must not print whole write keys"
    assert json.dumps(listed).count(web["writeKey"]) == 0

    cp = cli("sources", "disable", ios["id"], data_dir=data_dir)
    assert cp.returncode == 0, cp.stderr
    listed = list_sources(cli, data_dir)
    assert listed[ios["id"]]["enabled"] is False and listed[web["id"]]["enabled"] is True

    cp = cli("sources", "disable", "src_does_not_exist", data_dir=data_dir)
    assert cp.returncode != 0, "disabling an unknown source must fail"
    cp = cli("sources", "list", data_dir=data_dir)  # human-readable form works too
    assert cp.returncode == 0 and "web" in cp.stdout and "ios-app" in cp.stdout

    # a server started on that data dir knows these sources
    srv = server_factory(data_dir)
    m = {"userId": "u", "event": "From CLI Source", "messageId": new_id("cli")}
    assert_ok(srv.post("/v1/track", m, write_key=web["writeKey"]))
    assert_error(srv.post("/v1/track", m, write_key=ios["writeKey"]), 401, "source_disabled")
    api = {s["id"]: s for s in srv.admin("GET", "/api/v1/sources").json()["sources"]}
    assert api[web["id"]]["enabled"] is True and api[ios["id"]]["enabled"] is False
    assert web["writeKey"].startswith(api[web["id"]]["writeKeyPrefix"])


def test_source_changes_made_with_the_cli_apply_to_a_running_server(cli, server, data_dir):
    created = create_source(cli, data_dir, "late")
    m = {"userId": "u", "event": "Late Source"}

    def accepted():
        r = server.post("/v1/track", dict(m, messageId=new_id("late")), write_key=created["writeKey"])
        return r.status_code == 200

    wait_until(accepted, timeout=10, interval=0.2, what="running server to accept a key made with the CLI")
    assert created["id"] in {s["id"] for s in server.admin("GET", "/api/v1/sources").json()["sources"]}

    assert cli("sources", "disable", created["id"], data_dir=data_dir).returncode == 0

    def refused():
        r = server.post("/v1/track", dict(m, messageId=new_id("late")), write_key=created["writeKey"])
        return r.status_code == 401 and r.json().get("code") == "source_disabled"

    wait_until(refused, timeout=10, interval=0.2, what="running server to refuse a source disabled with the CLI")


def test_sources_created_through_the_api_are_listed_by_the_cli(cli, server, data_dir):
    src = server.create_source("via-api")
    listed = list_sources(cli, data_dir)
    assert src.id in listed and listed[src.id]["name"] == "via-api"


def test_data_dir_can_come_from_tessera_data_dir(cli, tmp_path):
    d = tmp_path / "from-env"
    d.mkdir()
    out = cli_json(cli("sources", "create", "env-src", "--json", env={"TESSERA_DATA_DIR": str(d)}))
    listed = list_sources(cli, None, env={"TESSERA_DATA_DIR": str(d)})
    assert out["id"] in listed
    assert any(d.iterdir()), "nothing was written to TESSERA_DATA_DIR"


# --------------------------------------------------------------------------- import
def test_jsonl_import_with_invalid_rows_exits_2_and_writes_rejects(cli, data_dir, export, tmp_path):
    src = create_source(cli, data_dir, "backfill")
    old = utcnow() - timedelta(days=30)
    valid = [
        {"type": "track", "userId": "imp-1", "event": "Order Completed", "messageId": new_id("imp"),
         "timestamp": iso_ms(old), "properties": {"total": 12.5, "items": [{"sku": "ü-1"}]}},
        {"type": "identify", "userId": "imp-1", "messageId": new_id("imp"), "timestamp": iso_ms(old),
         "traits": {"name": "Zoë", "address": {"city": "東京"}}},
        {"type": "page", "anonymousId": "anon-imp", "name": "Home", "messageId": new_id("imp"),
         "timestamp": iso_ms(old + timedelta(minutes=1))},
        {"type": "group", "userId": "imp-2", "groupId": "g-imp", "messageId": new_id("imp"),
         "timestamp": iso_ms(old), "traits": {"name": "Acme"}},
    ]
    rows = [
        valid[0],
        {"type": "track", "userId": "imp-1", "messageId": new_id("bad")},  # line 2: no event
        valid[1],
        '{"type": "track", "userId": "broken", ',                            # line 4: not JSON
        valid[2],
        {"type": "alias", "userId": "imp-1", "messageId": new_id("bad")},   # line 6: no previousId
        valid[3],
    ]
    f = write_jsonl(tmp_path / "events.jsonl", rows)
    rejects = tmp_path / "rejects.out"
    cp = cli("import", str(f), "--source", src["id"], "--format", "jsonl", "--rejects", str(rejects),
             data_dir=data_dir)
    assert cp.returncode == 2, f"some rows rejected -> exit 2, got {cp.returncode}\n{cp.stderr}"
    assert cp.stderr.strip(), "import should print a summary on stderr"
    assert rejects.exists(), "rejects file not written"
    text = rejects.read_text(encoding="utf-8")
    for code in ("missing_event", "invalid_json", "missing_previous_id"):
        assert code in text, f"rejects file does not give the reason {code}:\n{text}"
    assert len(non_empty_lines(rejects)) >= 3, text

    stored = by_message_id(export(data_dir, source=src["id"]))
    assert set(stored) == {m["messageId"] for m in valid}
    for m in valid:
        s = stored[m["messageId"]]
        assert_stored_as_sent(m, s, "jsonl import", max_skew=None)
        # no sentAt: nothing to correct, the historical time is kept
        assert abs((parse_ts(s["timestamp"]) - parse_ts(m["timestamp"])).total_seconds()) < 1

    # importing the same file again must not duplicate anything (messageId dedup)
    cp = cli("import", str(f), "--source", src["id"], "--rejects", str(tmp_path / "rejects2.out"), data_dir=data_dir)
    assert cp.returncode == 2, cp.stderr
    assert len(by_message_id(export(data_dir))) == len(valid)


def test_jsonl_import_exits_0_when_all_rows_are_valid_and_keeps_file_order(cli, data_dir, export, tmp_path):
    src = create_source(cli, data_dir, "typed")
    rows = [{"type": "track", "userId": f"t-{i}", "event": "Imported", "messageId": f"typed-{i}",
             "properties": {"i": i}} for i in range(50)]
    f = write_jsonl(tmp_path / "tracks.jsonl", rows)
    cp = cli("import", str(f), "--source", src["id"], data_dir=data_dir)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stderr}"
    stored = export(data_dir)
    assert [s["messageId"] for s in stored] == [r["messageId"] for r in rows], "export is in log (import) order"
    for r, s in zip(rows, stored):
        assert s["type"] == "track" and s["userId"] == r["userId"] and s["properties"] == r["properties"]


def test_import_into_an_unknown_source_fails(cli, data_dir, tmp_path):
    create_source(cli, data_dir, "exists")
    f = write_jsonl(tmp_path / "one.jsonl", [{"type": "track", "userId": "u", "event": "e"}])
    cp = cli("import", str(f), "--source", "src_nope", data_dir=data_dir)
    assert cp.returncode not in (0, 2), f"import into unknown source should fail, got {cp.returncode}"


def test_csv_import_maps_columns_to_fields(cli, data_dir, export, tmp_path):
    src = create_source(cli, data_dir, "csv")
    header = ["order_id", "customer", "what", "when", "plan"]
    rows = [
        [f"ord-{uuid.uuid4().hex[:10]}", "cust-1", "Order Completed", "2024-03-01T10:00:00.000Z", "pro"],
        [f"ord-{uuid.uuid4().hex[:10]}", "cust-2", "Order Refunded", "2024-03-02T11:30:00.000Z", "free"],
        [f"ord-{uuid.uuid4().hex[:10]}", "Zoë, \"the\" customer", "Order Completed ✓", "2024-03-03T12:00:00.000Z", ""],
    ]
    f = tmp_path / "orders.csv"
    with open(f, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    cp = cli("import", str(f), "--source", src["id"], "--format", "csv", "--type", "track",
             "--map", "messageId=order_id,userId=customer,event=what,timestamp=when", data_dir=data_dir)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stderr}"
    stored = by_message_id(export(data_dir, source=src["id"]))
    assert set(stored) == {r[0] for r in rows}
    for r in rows:
        s = stored[r[0]]
        assert s["type"] == "track"
        assert s["userId"] == r[1] and s["event"] == r[2], s
        assert s["originalTimestamp"] == r[3], s
        assert parse_ts(s["timestamp"]) == parse_ts(r[3]), s
        assert "receivedAt" in s


def test_csv_import_with_a_bad_row_exits_2_and_keeps_the_good_rows(cli, data_dir, export, tmp_path):
    src = create_source(cli, data_dir, "csv-bad")
    f = tmp_path / "people.csv"
    f.write_text("id,email,seen\n"
                 "p-1,a@example.com,2024-01-01T00:00:00Z\n"
                 "p-2,b@example.com,not-a-date\n"
                 "p-3,c@example.com,2024-01-03T00:00:00Z\n", encoding="utf-8")
    rejects = tmp_path / "csv-rejects.out"
    cp = cli("import", str(f), "--source", src["id"], "--format", "csv", "--type", "identify",
             "--map", "userId=id,timestamp=seen", "--rejects", str(rejects), data_dir=data_dir)
    assert cp.returncode == 2, f"exit {cp.returncode}\n{cp.stderr}"
    assert "invalid_timestamp" in rejects.read_text(encoding="utf-8")
    stored = export(data_dir)
    assert sorted(s["userId"] for s in stored) == ["p-1", "p-3"]
    assert all(s["type"] == "identify" for s in stored)


# --------------------------------------------------------------------------- export filters
def test_export_since_returns_only_later_messages(server, source, export):
    first = [{"type": "track", "userId": "s", "event": "Before", "messageId": new_id("before")} for _ in range(3)]
    assert_ok(server.post("/v1/batch", {"batch": first}, write_key=source.write_key))
    time.sleep(1.1)
    cut = utcnow()
    time.sleep(1.1)
    second = [{"type": "track", "userId": "s", "event": "After", "messageId": new_id("after")} for _ in range(2)]
    assert_ok(server.post("/v1/batch", {"batch": second}, write_key=source.write_key))

    everything = export(server.data_dir)
    assert [e["messageId"] for e in everything] == [m["messageId"] for m in first + second]
    for since in (cut.strftime("%Y-%m-%dT%H:%M:%SZ"), cut.isoformat(), iso_ms(cut)):
        got = [e["messageId"] for e in export(server.data_dir, since=since)]
        assert got == [m["messageId"] for m in second], f"--since {since}: {got}"
    assert export(server.data_dir, since=iso_ms(utcnow() + timedelta(hours=1))) == []
    assert len(export(server.data_dir, since="2000-01-01T00:00:00Z")) == 5


def test_export_since_rejects_a_bad_date(cli, server, source):
    cp = cli("export", "events", "--since", "last tuesday", data_dir=server.data_dir)
    assert cp.returncode != 0, "an unparsable --since must be an error"
    assert cp.stdout.strip() == ""


def test_export_source_filter_returns_only_that_sources_messages(server, source, export):
    other = server.create_source("other")
    mine = [{"type": "track", "userId": "a", "event": "Mine", "messageId": new_id("mine")} for _ in range(3)]
    theirs = [{"type": "identify", "userId": "b", "traits": {"x": 1}, "messageId": new_id("theirs")}
              for _ in range(2)]
    # interleave the two sources in the log
    assert_ok(server.post("/v1/batch", {"batch": mine[:2]}, write_key=source.write_key))
    assert_ok(server.post("/v1/batch", {"batch": theirs}, write_key=other.write_key))
    assert_ok(server.post("/v1/batch", {"batch": mine[2:]}, write_key=source.write_key))

    got_mine = [e["messageId"] for e in export(server.data_dir, source=source.id)]
    got_theirs = [e["messageId"] for e in export(server.data_dir, source=other.id)]
    assert got_mine == [m["messageId"] for m in mine]
    assert got_theirs == [m["messageId"] for m in theirs]
    both = export(server.data_dir, since="2000-01-01T00:00:00Z", source=other.id)
    assert [e["messageId"] for e in both] == got_theirs
    assert len(export(server.data_dir)) == 5


def test_export_of_a_fresh_data_dir_is_empty(cli, data_dir, export):
    create_source(cli, data_dir, "empty")
    assert export(data_dir) == []


def test_import_while_the_server_runs_shares_dedup_with_http_ingest(cli, server, source, export, tmp_path):
    shared = {"type": "track", "userId": "both", "event": "Imported And Posted", "messageId": new_id("shared")}
    only_file = {"type": "identify", "userId": "file-only", "traits": {"a": 1}, "messageId": new_id("file")}
    f = write_jsonl(tmp_path / "live.jsonl", [shared, only_file])
    cp = cli("import", str(f), "--source", source.id, data_dir=server.data_dir)
    assert cp.returncode == 0, f"import next to a running server: exit {cp.returncode}\n{cp.stderr}"
    # the same messageId arriving over HTTP afterwards is a duplicate
    assert_ok(server.post("/v1/track", {k: v for k, v in shared.items() if k != "type"},
                          write_key=source.write_key))
    posted = {"userId": "http-only", "event": "Posted", "messageId": new_id("http")}
    assert_ok(server.post("/v1/track", posted, write_key=source.write_key))
    stored = by_message_id(export(server.data_dir))
    assert set(stored) == {shared["messageId"], only_file["messageId"], posted["messageId"]}


def test_export_while_the_server_is_ingesting_prints_only_whole_messages(server, source, export):
    import threading

    import requests

    stop = threading.Event()
    sent = []

    def sender():
        s = requests.Session()
        n = 0
        while not stop.is_set() and n < 400:
            batch = [{"type": "track", "userId": "live", "event": "Live", "messageId": f"live-{n}-{i}",
                      "properties": {"pad": "z" * 500}} for i in range(25)]
            n += 1
            r = server.post("/v1/batch", {"batch": batch}, write_key=source.write_key, session=s)
            assert r.status_code == 200, r.text
            sent.extend(m["messageId"] for m in batch)

    t = threading.Thread(target=sender)
    t.start()
    try:
        wait_until(lambda: len(sent) >= 200, timeout=20, what="some traffic")
        for _ in range(3):
            stored = export(server.data_dir)  # every line must parse (checked by the helper)
            ids = [e["messageId"] for e in stored]
            assert len(ids) == len(set(ids))
    finally:
        stop.set()
        t.join(timeout=30)
    final = export(server.data_dir)
    assert [e["messageId"] for e in final] == sent, "log order is the order the batches were acknowledged"


def test_export_of_a_data_dir_that_does_not_exist_is_an_error(cli, tmp_path):
    """A mistyped --data-dir must not look like an empty store."""
    cp = cli("export", "events", data_dir=tmp_path / "no-such-dir")
    assert cp.returncode != 0 and cp.stdout.strip() == "" and cp.stderr.strip(), (cp.returncode, cp.stderr)


def test_replay_refuses_while_a_server_runs_and_changes_nothing(cli, server, source, data_dir):
    user = f"replay-{uuid.uuid4().hex[:8]}"
    batch = {"batch": [
        {"type": "identify", "userId": user, "traits": {"plan": "pro"}, "messageId": new_id()},
        {"type": "track", "userId": user, "event": "Order Completed", "properties": {"revenue": 12.5},
         "messageId": new_id()},
    ]}
    assert_ok(server.post("/v1/batch", batch, write_key=source.write_key))

    def current():
        return server.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{user}"}).json()

    wait_until(lambda: (current().get("computedTraits") or {}).get("total_orders") == 1,
               timeout=15, interval=0.1, what="the order counted")
    before = current()

    result = cli("replay", data_dir=data_dir)
    assert result.returncode != 0, result.stderr
    assert "server_running" in result.stderr and "tessera serve" in result.stderr, result.stderr
    assert "Replayed" not in result.stderr, result.stderr

    time.sleep(1.0)
    after = current()
    assert after["computedTraits"]["total_orders"] == 1, after
    assert after["computedTraits"].get("lifetime_value") == before["computedTraits"].get("lifetime_value"), after
    assert after["eventCount"] == before["eventCount"] == 2, after

    # With the server stopped, replay runs.
    server.terminate()
    result = cli("replay", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "Replayed 2 events into 1 profiles" in result.stderr, result.stderr


def test_a_port_in_use_stops_serve_before_a_token_is_generated(server_factory, tmp_path):
    import os
    import subprocess

    from tessera_e2e import tessera_bin

    first = server_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    fresh = tmp_path / "second"
    started = subprocess.run(
        [str(tessera_bin()), "serve", "--data-dir", str(fresh), "--listen", f"127.0.0.1:{first.port}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert f"cannot listen on 127.0.0.1:{first.port}" in started.stderr, started.stderr
    assert "--listen" in started.stderr and "TESSERA_LISTEN" in started.stderr
    # Nothing was generated or shown for a server that never ran.
    assert "shown only now" not in started.stderr
    assert not (fresh / "admin-token").exists()


def test_export_then_import_into_a_fresh_data_dir_is_an_exact_copy(cli, server, source, tmp_path):
    """Every way a message arrives (no timestamp; timestamp without sentAt; sentAt with
    and without timestamp; a batch-level sentAt; a clock years off) is exported, imported
    into an empty data dir and exported again: the two exports are the same bytes."""
    now = utcnow()
    singles = [
        ("/v1/track", {"userId": "copy-1", "event": "No Timestamp", "properties": {"a": [1, {"b": None}]}}),
        ("/v1/track", {"userId": "copy-2", "event": "Backfill", "timestamp": iso_ms(now - timedelta(days=3))}),
        ("/v1/identify", {"userId": "copy-3", "traits": {"email": "c3@example.com"}, "sentAt": iso_ms(now)}),
        ("/v1/page", {"anonymousId": "anon-4", "name": "Home", "timestamp": iso_ms(now - timedelta(hours=2, seconds=5)),
                      "sentAt": iso_ms(now - timedelta(hours=2)), "context": {"locale": "de-DE"}}),
        ("/v1/track", {"userId": "copy-5", "event": "Far Clock", "timestamp": "1970-01-01T00:00:00.000Z",
                       "sentAt": "9999-01-01T00:00:00.000Z"}),
        ("/v1/group", {"userId": "copy-6", "groupId": "g-1", "traits": {"name": "Acme"}, "timestamp": "2024-02-29T12:00:00+02:00"}),
        ("/v1/alias", {"userId": "copy-7", "previousId": "anon-4"}),
    ]
    for path, body in singles:
        assert_ok(server.post(path, {**body, "messageId": new_id("copy")}, write_key=source.write_key))
    batch = [{"type": "track", "userId": f"copy-b{i}", "event": "In Batch", "messageId": new_id("copy"),
              **({"timestamp": iso_ms(now - timedelta(seconds=i))} if i % 2 else {})} for i in range(6)]
    assert_ok(server.post("/v1/batch", {"batch": batch, "sentAt": iso_ms(now), "context": {"app": {"v": "1"}}},
                          write_key=source.write_key))
    first = cli("export", "events", data_dir=server.data_dir, check=True).stdout
    assert len(first.splitlines()) == len(singles) + len(batch)
    dump = tmp_path / "export.jsonl"
    dump.write_text(first, encoding="utf-8")

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    copy = create_source(cli, fresh, "copy")
    cp = cli("import", str(dump), "--source", copy["id"], data_dir=fresh)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stderr}"
    second = cli("export", "events", data_dir=fresh, check=True).stdout
    for before, after in zip(first.splitlines(), second.splitlines()):
        assert after == before, f"\nexported: {before}\nre-imported: {after}"
    assert second == first
