"""Scoped API tokens: created and revoked through the API and the CLI, stored hashed and
shown once, and checked by every admin and profile endpoint (401 without a valid token,
403 with a token that lacks the scope)."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests

from tessera_e2e import HTTP_TIMEOUT, assert_error

ADMIN_ROUTES = [
    ("POST", "/api/v1/sources"), ("GET", "/api/v1/sources"), ("POST", "/api/v1/sources/src_x/disable"),
    ("POST", "/api/v1/tokens"), ("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens/tok_x/revoke"),
    ("GET", "/api/v1/rejections"), ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/identity/rules"), ("PUT", "/api/v1/identity/rules"), ("POST", "/api/v1/identity/unlink"),
    ("GET", "/api/v1/identity/conflicts"), ("GET", "/api/v1/identity/suggestions"), ("POST", "/api/v1/identity/merge"),
    ("GET", "/api/v1/audiences"), ("POST", "/api/v1/audiences"), ("POST", "/api/v1/audiences/preview"),
    ("GET", "/api/v1/audiences/changes"), ("GET", "/api/v1/audiences/x"), ("PUT", "/api/v1/audiences/x"),
    ("PATCH", "/api/v1/audiences/x"), ("DELETE", "/api/v1/audiences/x"), ("GET", "/api/v1/audiences/x/members"),
    ("GET", "/api/v1/computed-traits"), ("GET", "/api/v1/computed-traits/x"), ("PUT", "/api/v1/computed-traits/x"),
    ("DELETE", "/api/v1/computed-traits/x"), ("GET", "/api/v1/rfm"), ("PUT", "/api/v1/rfm"),
    ("GET", "/api/v1/insights/top?event=x&property=y"),
    ("POST", "/api/v1/privacy/exports"), ("POST", "/api/v1/privacy/erasures"),
    ("GET", "/api/v1/privacy/erasures/prq_x"), ("POST", "/api/v1/privacy/consent"),
    ("GET", "/api/v1/destinations"), ("POST", "/api/v1/destinations"), ("GET", "/api/v1/destinations/x"),
    ("PUT", "/api/v1/destinations/x"), ("DELETE", "/api/v1/destinations/x"),
    ("GET", "/api/v1/deliveries"), ("POST", "/api/v1/deliveries/retry"),
    ("GET", "/api/v1/journeys"), ("POST", "/api/v1/journeys"), ("GET", "/api/v1/journeys/x"),
    ("PUT", "/api/v1/journeys/x"), ("DELETE", "/api/v1/journeys/x"),
    ("GET", "/api/v1/sources/src_x/webhook"), ("PUT", "/api/v1/sources/src_x/webhook"),
    ("DELETE", "/api/v1/sources/src_x/webhook"), ("GET", "/api/v1/sources/src_x/plan"),
    ("PUT", "/api/v1/sources/src_x/plan"), ("DELETE", "/api/v1/sources/src_x/plan"),
    ("GET", "/api/v1/sources/src_x/plan/violations"), ("DELETE", "/api/v1/sources/src_x/plan/violations"),
    ("POST", "/api/v1/sources/src_x/plan/infer"),
]
PROFILE_ROUTES = [
    ("GET", "/v1/spaces/default/collections/users/profiles/user_id:tok-user/traits"),
    ("GET", "/v1/spaces/default/collections/users/profiles/user_id:tok-user/events"),
    ("GET", "/v1/spaces/default/collections/users/profiles/user_id:tok-user/external_ids"),
    ("GET", "/api/v1/profiles?identifier=user_id:tok-user"),
    ("GET", "/api/v1/profiles/1"),
    ("GET", "/api/v1/profiles/1/timeline"),
    ("GET", "/api/v1/profiles/1/journeys"),
]


def call(server, method, path, token=None, basic=False):
    headers = {}
    if token is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{token}:".encode()).decode() if basic else f"Bearer {token}")
    return requests.request(method, server.url + path, headers=headers, json={}, timeout=HTTP_TIMEOUT)


def create_token(server, name, scopes):
    r = server.admin("POST", "/api/v1/tokens", json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"].startswith("tsk_") and body["prefix"] == body["token"][:8]
    return body


def test_every_endpoint_checks_its_scope(server, source):
    server.post("/v1/identify", {"userId": "tok-user", "traits": {"plan": "pro"}}, write_key=source.write_key)
    reader = create_token(server, "support desk", ["read:profiles"])
    admin = create_token(server, "ops", ["admin"])
    for method, path in ADMIN_ROUTES + PROFILE_ROUTES:
        assert_error(call(server, method, path), 401, "invalid_admin_token")
        assert_error(call(server, method, path, token="tsk_not-a-token"), 401, "invalid_admin_token")
        assert_error(call(server, method, path, token=source.write_key), 401, "invalid_admin_token")
    for method, path in ADMIN_ROUTES:
        r = call(server, method, path, token=reader["token"])
        assert_error(r, 403, "insufficient_scope")
        assert "read:profiles" in r.json()["message"]
        assert call(server, method, path, token=admin["token"]).status_code not in (401, 403), (method, path)
    for method, path in PROFILE_ROUTES:
        for token in (reader["token"], admin["token"]):
            for basic in (False, True):
                r = call(server, method, path, token=token, basic=basic)
                assert r.status_code not in (401, 403), (method, path, r.text)


def test_tokens_are_shown_once_listed_without_secrets_and_revocable(server):
    created = create_token(server, "support desk", ["read:profiles", "read:profiles"])
    assert created["scopes"] == ["read:profiles"]
    listed = server.admin("GET", "/api/v1/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and created["token"] not in json.dumps(listed)
    path = "/api/v1/profiles?identifier=user_id:nobody"
    assert_error(call(server, "GET", path, token=created["token"]), 404, "profile_not_found")
    r = server.admin("POST", f"/api/v1/tokens/{created['id']}/revoke")
    assert r.status_code == 200 and r.json()["revokedAt"]
    assert_error(call(server, "GET", path, token=created["token"]), 401, "invalid_admin_token")
    assert_error(server.admin("POST", "/api/v1/tokens/tok_missing/revoke"), 404, "token_not_found")
    for bad in ({"name": "x", "scopes": []}, {"name": "x", "scopes": ["write:web"]}, {"name": "", "scopes": ["admin"]},
                {"name": "x"}, {"name": "x", "scopes": ["admin"], "extra": 1}):
        assert_error(server.admin("POST", "/api/v1/tokens", json=bad), 400, "invalid_request")


def test_the_cli_creates_lists_and_revokes_tokens(server_factory, data_dir, cli):
    created = cli("tokens", "create", "nightly export", "--scope", "read:profiles", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("tsk_")
    listed = [json.loads(line) for line in cli("tokens", "list", data_dir=data_dir).stdout.splitlines()]
    assert len(listed) == 1 and listed[0]["scopes"] == ["read:profiles"] and secret not in json.dumps(listed)
    server = server_factory(data_dir)
    assert call(server, "GET", "/api/v1/profiles?identifier=user_id:x", token=secret).status_code == 404
    assert cli("tokens", "revoke", listed[0]["id"], data_dir=data_dir).returncode == 0
    assert_error(call(server, "GET", "/api/v1/profiles?identifier=user_id:x", token=secret), 401, "invalid_admin_token")
    bad = cli("tokens", "create", "x", "--scope", "everything", data_dir=data_dir)
    assert bad.returncode != 0 and "invalid_request" in bad.stderr
    # The secret is stored hashed only.
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_admin_actions_are_in_an_append_only_audit_log(server_factory, data_dir, cli):
    import sqlite3

    server = server_factory(data_dir)
    ops = create_token(server, "ops", ["admin"])
    source = server.create_source("audited")
    r = call(server, "POST", "/api/v1/audiences", token=ops["token"])  # invalid body: not audited
    assert r.status_code == 400
    r = requests.post(server.url + "/api/v1/audiences", headers={"Authorization": f"Bearer {ops['token']}"},
                      json={"key": "pros", "definition": 'trait plan = "pro"'}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    assert server.admin("PATCH", "/api/v1/audiences/pros", json={"definition": 'trait plan = "enterprise"'}).ok
    rules = server.admin("GET", "/api/v1/identity/rules").json()
    assert server.admin("PUT", "/api/v1/identity/rules", json=rules).ok
    server.post("/v1/identify", {"userId": "audited-user", "traits": {"email": "audit.me@example.com"}},
                write_key=source.write_key)
    from test_audiences import wait_profile_id
    wait_profile_id(server, "user_id:audited-user")
    assert server.admin("POST", "/api/v1/identity/unlink", json={"type": "email", "value": "audit.me@example.com"}).ok
    assert server.admin("DELETE", "/api/v1/audiences/pros").ok
    assert cli("tokens", "create", "cli made", "--scope", "read:profiles", data_dir=data_dir).returncode == 0

    entries = server.admin("GET", "/api/v1/audit?limit=100").json()["entries"]
    actions = [(e["action"], e["actor"]) for e in entries]
    assert actions[:2] == [("token.create", "admin-token"), ("source.create", "admin-token")]
    assert ("audience.create", f"token:{ops['id']}") in actions
    update = next(e for e in entries if e["action"] == "audience.update")
    assert update["before"]["definition"] == 'trait plan = "pro"'
    assert update["after"]["definition"] == 'trait plan = "enterprise"'
    assert any(a == "identity.rules.update" for a, _ in actions)
    unlink = next(e for e in entries if e["action"] == "identity.unlink")
    assert unlink["target"].startswith("email:salted-sha256:") and "audit.me" not in json.dumps(unlink)
    delete = next(e for e in entries if e["action"] == "audience.delete")
    assert delete["before"]["key"] == "pros" and delete["after"] is None
    assert actions[-1][0] == "token.create" and actions[-1][1].startswith("cli:")
    assert all("tsk_" not in json.dumps(e.get("after")) or e["after"].get("prefix") for e in entries)
    only = server.admin("GET", "/api/v1/audit?action=audience.").json()["entries"]
    assert {e["action"] for e in only} == {"audience.create", "audience.update", "audience.delete"}
    assert_error(call(server, "GET", "/api/v1/audit", token=create_token(server, "r", ["read:profiles"])["token"]),
                 403, "insufficient_scope")

    # Append-only, even for someone with the database file.
    with sqlite3.connect(data_dir / "tessera.db") as db:
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)


def test_per_key_rate_limits_answer_429_with_retry_after(server_factory, tmp_path):
    config = tmp_path / "tessera.toml"
    config.write_text("[limits]\nrequests_per_second = 1\nburst = 3\n")
    server = server_factory(extra_env={"TESSERA_CONFIG": str(config)})
    source = server.create_source("limited")
    other = server.create_source("other")
    answers = [server.post("/v1/track", {"userId": "u", "event": "x"}, write_key=source.write_key)
               for _ in range(6)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert_error(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["Retry-After"]) >= 1
    # Another key has its own budget.
    assert server.post("/v1/track", {"userId": "u", "event": "x"}, write_key=other.write_key).status_code == 200
    # API tokens are limited per token too.
    reader = create_token(server, "r", ["read:profiles"])
    codes = [call(server, "GET", "/api/v1/profiles?identifier=user_id:u", token=reader["token"]).status_code
             for _ in range(6)]
    assert 429 in codes, codes


def documented_operation(document, method, path):
    """The OpenAPI operation whose path template matches `path` (query dropped)."""
    path = path.split("?", 1)[0]
    if path in document["paths"]:
        return document["paths"][path].get(method.lower())
    for template, item in document["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            return item.get(method.lower())
    return None


def test_openapi_document_is_public_and_names_each_scope(server):
    r = requests.get(server.url + "/api/openapi.json", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    document = r.json()
    assert document["openapi"].startswith("3.1")
    for path in ("/v1/identify", "/v1/track", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
                 "/v1/batch", "/v1/import", "/v1/t", "/v1/b"):
        assert document["paths"][path]["post"]["security"] == [{"writeKey": []}], path
    # The scopes the document states are the ones the server enforces (checked above).
    for method, path in ADMIN_ROUTES:
        operation = documented_operation(document, method, path)
        assert operation is not None, (method, path)
        assert operation["security"] == [{"adminToken": ["admin"]}], (method, path)
    for method, path in PROFILE_ROUTES:
        operation = documented_operation(document, method, path)
        assert operation is not None, (method, path)
        assert all(sorted(scopes) == ["admin", "read:profiles"]
                   for requirement in operation["security"] for scopes in requirement.values()), (method, path)


def test_revoking_a_token_revokes_the_tokens_it_created(server, cli):
    """An admin-scoped token mints a token, which mints another: revoking the first
    revokes both (API and CLI), and a token minted by the admin token is unaffected."""
    ops = create_token(server, "ops", ["admin"])
    minted = server.admin("POST", "/api/v1/tokens", token=ops["token"],
                          json={"name": "minted by ops", "scopes": ["admin"]})
    assert minted.status_code == 201, minted.text
    minted = minted.json()
    assert minted["parent"] == ops["id"]
    grandchild = server.admin("POST", "/api/v1/tokens", token=minted["token"],
                              json={"name": "minted by minted", "scopes": ["read:profiles"]}).json()
    assert grandchild["parent"] == minted["id"]
    independent = create_token(server, "independent", ["read:profiles"])
    assert independent["parent"] is None
    path = "/api/v1/profiles?identifier=user_id:nobody"
    for t in (ops, minted, grandchild, independent):
        assert call(server, "GET", path, token=t["token"]).status_code == 404

    r = server.admin("POST", f"/api/v1/tokens/{ops['id']}/revoke")
    assert r.status_code == 200, r.text
    assert r.json()["revokedDescendants"] == [minted["id"], grandchild["id"]]
    for t in (ops, minted, grandchild):
        assert_error(call(server, "GET", path, token=t["token"]), 401, "invalid_admin_token")
    assert call(server, "GET", path, token=independent["token"]).status_code == 404
    listed = {t["id"]: t for t in server.admin("GET", "/api/v1/tokens").json()["tokens"]}
    assert listed[grandchild["id"]]["revokedAt"] and listed[grandchild["id"]]["parent"] == minted["id"]

    # The CLI revokes the same way.
    parent = create_token(server, "cli parent", ["admin"])
    child = server.admin("POST", "/api/v1/tokens", token=parent["token"],
                         json={"name": "cli child", "scopes": ["admin"]}).json()
    cp = cli("tokens", "revoke", parent["id"], data_dir=server.data_dir)
    assert cp.returncode == 0, cp.stderr
    assert child["id"] in cp.stderr
    assert_error(call(server, "GET", path, token=child["token"]), 401, "invalid_admin_token")
