"""No PII or secret reaches the server log, even at debug level and on errors: the log
is captured while identifiable data flows through every path (ingest, rejections,
identity merges and conflicts, unlink, audiences, profile reads) and searched for it."""

from __future__ import annotations

import uuid

from tessera_e2e import wait_until

from test_audiences import create_audience, wait_profile_id


def test_the_server_log_holds_no_pii_or_secrets(server_factory, data_dir):
    server = server_factory(data_dir, extra_env={"TESSERA_LOG": "debug"})
    source = server.create_source("pii")
    tag = uuid.uuid4().hex[:8]
    email = f"jane.doe.{tag}@example.com"
    phone = "+4915112345678"
    user = f"user-{tag}"
    secret_trait = f"Sunflower Street {tag}"
    pii = [email, phone, user, secret_trait, "Jane Doe", source.write_key]
    token = server.admin("POST", "/api/v1/tokens", json={"name": "pii", "scopes": ["read:profiles"]}).json()["token"]
    pii.append(token)

    server.post("/v1/identify", {"userId": user, "anonymousId": f"anon-{tag}",
                                 "traits": {"email": email, "phone": phone, "name": "Jane Doe",
                                            "address": {"street": secret_trait}}}, write_key=source.write_key)
    server.post("/v1/track", {"anonymousId": f"anon-{tag}", "event": "Order Completed",
                              "properties": {"revenue": 10, "note": secret_trait}}, write_key=source.write_key)
    # Invalid messages carrying PII are rejected and counted, not logged with content.
    server.post("/v1/track", {"userId": user, "properties": {"email": email}}, write_key=source.write_key)
    server.post("/v1/batch", {"batch": [{"type": "track", "userId": user, "event": "x", "timestamp": email}]},
                write_key=source.write_key)
    # A wrong write key that looks like an email, a conflicting second user id on one device.
    server.post("/v1/track", {"userId": user, "event": "x"}, write_key=email)
    server.post("/v1/identify", {"userId": f"other-{tag}", "anonymousId": f"anon-{tag}",
                                 "traits": {"email": email}}, write_key=source.write_key)
    pid = wait_profile_id(server, f"user_id:{user}")
    create_audience(server, "pii-buyers", f'trait email = "{email}" and event "Order Completed"')
    wait_until(lambda: server.admin("GET", "/api/v1/audiences/pii-buyers/members").json()["members"],
               timeout=10, what="audience computed")
    server.admin("GET", f"/api/v1/profiles/{pid}", token=token)
    server.admin("POST", "/api/v1/identity/unlink", json={"type": "email", "value": email})
    server.terminate()

    log = server.log_text()
    assert "Tessera is listening" in log and "shutdown complete" in log, "the server log was not captured"
    for value in pii:
        assert value not in log, f"the server log contains {value!r}"
