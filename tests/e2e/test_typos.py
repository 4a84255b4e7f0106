"""Typos are caught, with suggestions, over real HTTP against the real binary.

- A reference to something that does not exist (an audience in a journey's trigger,
  in an `if` or in an audience condition; a destination in a journey's `send` or an
  audience in a destination's filter; a computed trait) is refused with a coded 4xx
  whose message names the closest existing name.
- An event, trait or property name never seen in the data is accepted, and the
  answer carries `warnings` with the closest observed name.
- Source names are unique (API and CLI); `import --source NAME` is unambiguous.
"""

from __future__ import annotations

import json

from tessera_e2e import ADMIN_TOKEN, assert_error, assert_ok, wait_until


def get_json(response, status: int = 200, what: str = "") -> dict:
    assert response.status_code == status, f"{what}: HTTP {response.status_code} {response.text[:1000]}"
    return response.json()


def seed(server, source) -> None:
    """One shopper with traits, an order and a cart add, applied to the index."""
    assert_ok(server.post("/v1/identify", {"userId": "typo-1", "traits": {"plan": "pro", "country": "DE"}},
                          write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": "typo-1", "event": "Order Completed",
                                        "properties": {"revenue": 42.5, "currency": "EUR"}},
                          write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": "typo-1", "event": "Product Added",
                                        "properties": {"sku": "A-1"}}, write_key=source.write_key))

    def seen():
        r = server.admin("POST", "/api/v1/audiences/preview",
                         json={"definition": 'event "Product Added" and trait plan = "pro"'})
        return r.status_code == 200 and r.json()["count"] == 1

    wait_until(seen, timeout=30, what="the shopper in the audience index")


def warnings_of(body: dict) -> list[tuple[str, str, str | None]]:
    return [(w["code"], w["name"], w.get("suggestion")) for w in body.get("warnings", [])]


def test_unknown_references_are_refused_with_the_closest_name(server, source):
    seed(server, source)
    get_json(server.admin("POST", "/api/v1/audiences", json={
        "key": "cart-abandoners", "definition": 'event "Product Added" within 7d'}), 201)

    # An audience condition on an audience that does not exist.
    body = assert_error(server.admin("POST", "/api/v1/audiences", json={
        "key": "vip-carts", "definition": 'audience "cart-abandonerz" and trait plan = "pro"'}),
        400, "invalid_definition")
    assert "did you mean `cart-abandoners`?" in body["message"], body
    # A computed trait that does not exist (the preset is total_orders), in a preview
    # and at creation.
    for path, payload in [("/api/v1/audiences/preview", {"definition": "computed total_order >= 2"}),
                          ("/api/v1/audiences", {"key": "loyal", "definition": "computed total_order >= 2"})]:
        body = assert_error(server.admin("POST", path, json=payload), 400, "invalid_definition", path)
        assert "did you mean `total_orders`?" in body["message"], body
    # Nothing close: the error still says what is missing, without a suggestion.
    body = assert_error(server.admin("POST", "/api/v1/audiences/preview",
                                     json={"definition": "computed zzzzzzzzzz > 1"}), 400, "invalid_definition")
    assert "did you mean" not in body["message"] and "zzzzzzzzzz" in body["message"], body

    mail = {"id": "mail", "type": "email", "filter": {"includeEvents": False},
            "settings": {"smtpUrl": "smtp://127.0.0.1:2525", "from": "shop@example.com",
                         "subject": "s", "text": "t"}}
    get_json(server.admin("POST", "/api/v1/destinations", json=mail), 201)

    journey = {"key": "cart-email", "trigger": {"audienceEntered": "cart-abandonerz"},
               "steps": [{"wait": "10s"}, {"send": {"destination": "mail"}}]}
    body = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "invalid_activation")
    assert "trigger.audienceEntered" in body["message"], body
    assert "did you mean `cart-abandoners`?" in body["message"], body

    journey["trigger"] = {"audienceEntered": "cart-abandoners"}
    journey["steps"] = [{"send": {"destination": "mial"}}]
    body = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "invalid_activation")
    assert "did you mean `mail`?" in body["message"], body

    journey["steps"] = [{"if": 'audience "cart-abandonerz"', "then": [{"send": {"destination": "mail"}}]}]
    body = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "invalid_activation")
    assert "steps[0].if" in body["message"] and "did you mean `cart-abandoners`?" in body["message"], body

    journey["steps"] = [{"if": "computed total_order > 1", "then": [{"send": {"destination": "mail"}}]}]
    body = assert_error(server.admin("POST", "/api/v1/journeys", json=journey), 400, "invalid_activation")
    assert "did you mean `total_orders`?" in body["message"], body

    # A destination filtering on an audience that does not exist.
    body = assert_error(server.admin("POST", "/api/v1/destinations", json={
        **mail, "id": "mail-2", "filter": {"audiences": ["cart-abandonerz"]}}), 400, "invalid_activation")
    assert "filter.audiences[0]" in body["message"] and "did you mean `cart-abandoners`?" in body["message"], body

    # Nothing was saved by the refused requests.
    assert [j["key"] for j in get_json(server.admin("GET", "/api/v1/journeys"))["journeys"]] == []
    assert [a["key"] for a in get_json(server.admin("GET", "/api/v1/audiences"))["audiences"]] == ["cart-abandoners"]


def test_names_never_seen_are_accepted_with_a_warning(server, source, cli, data_dir):
    seed(server, source)

    body = get_json(server.admin("POST", "/api/v1/audiences/preview", json={
        "definition": 'event "Order Complted" where revenu > 10 and trait plna = "pro"'}))
    assert body["count"] == 0
    assert warnings_of(body) == [
        ("unknown_event", "Order Complted", "Order Completed"),
        ("unknown_property", "revenu", "revenue"),
        ("unknown_trait", "plna", "plan"),
    ], body
    assert body["warnings"][0]["message"].endswith("did you mean `Order Completed`?"), body

    # Names seen: no warnings key at all.
    body = get_json(server.admin("POST", "/api/v1/audiences/preview", json={
        "definition": 'event "Order Completed" where revenue > 10 and trait plan = "pro"'}))
    assert body["count"] == 1 and "warnings" not in body, body

    # Creation and change of an audience answer the same warnings; the audience is saved.
    body = get_json(server.admin("POST", "/api/v1/audiences", json={
        "key": "orders", "definition": 'event "Order Complted" within 30d'}), 201)
    assert warnings_of(body) == [("unknown_event", "Order Complted", "Order Completed")], body
    body = get_json(server.admin("PUT", "/api/v1/audiences/orders", json={
        "definition": 'trait contry = "DE"'}))
    assert warnings_of(body) == [("unknown_trait", "contry", "country")], body
    body = get_json(server.admin("PUT", "/api/v1/audiences/orders", json={"name": "Orders"}))
    assert "warnings" not in body, body
    # A name with nothing close: a warning without a suggestion.
    body = get_json(server.admin("POST", "/api/v1/audiences/preview", json={
        "definition": 'event "Subscription Renewed"'}))
    assert warnings_of(body) == [("unknown_event", "Subscription Renewed", None)], body

    # Journeys: the trigger's event, waitUntil and `if` conditions.
    get_json(server.admin("POST", "/api/v1/destinations", json={
        "id": "hook", "type": "webhook", "filter": {"includeEvents": False},
        "settings": {"url": "http://127.0.0.1:9/hook"}}), 201)
    body = get_json(server.admin("POST", "/api/v1/journeys", json={
        "key": "after-order", "trigger": {"event": "Order Complete"},
        "steps": [{"waitUntil": {"event": "Product Aded", "timeout": "1d"}},
                  {"if": 'trait plna = "pro"', "then": [{"send": {"destination": "hook"}}]}]}), 201)
    assert warnings_of(body) == [
        ("unknown_event", "Order Complete", "Order Completed"),
        ("unknown_event", "Product Aded", "Product Added"),
        ("unknown_trait", "plna", "plan"),
    ], body

    # Insights: the event, the property and the grouping trait.
    body = get_json(server.admin("GET", "/api/v1/insights/top", params={
        "event": "Order Complted", "property": "currncy", "by": "contry"}))
    assert warnings_of(body) == [
        ("unknown_event", "Order Complted", "Order Completed"),
        ("unknown_property", "currncy", "currency"),
        ("unknown_trait", "contry", "country"),
    ], body
    body = get_json(server.admin("GET", "/api/v1/insights/top", params={
        "event": "Order Completed", "property": "currency"}))
    assert "warnings" not in body and body["rows"], body

    # The CLI's preview (it builds the index from the data directory) warns the same.
    done = cli("audiences", "preview", 'event "Order Complted" and trait plna = "pro"', data_dir=data_dir)
    assert done.returncode == 0, done
    assert warnings_of(json.loads(done.stdout)) == [
        ("unknown_event", "Order Complted", "Order Completed"),
        ("unknown_trait", "plna", "plan"),
    ], done.stdout
    assert "did you mean `Order Completed`?" in done.stderr, done.stderr


def test_source_names_are_unique(server, cli, data_dir, tmp_path):
    server.create_source("website")
    body = assert_error(server.admin("POST", "/api/v1/sources", json={"name": "website"}), 409, "source_exists")
    assert "website" in body["message"], body
    # Surrounding spaces are not a different name.
    assert_error(server.admin("POST", "/api/v1/sources", json={"name": " website "}), 409, "source_exists")
    # The CLI refuses it too (the server may run meanwhile).
    created = cli("sources", "create", "website", data_dir=data_dir)
    assert created.returncode != 0 and "source_exists" in created.stderr, created
    sources = get_json(server.admin("GET", "/api/v1/sources"))["sources"]
    assert [s["name"] for s in sources] == ["website"], sources

    # `import --source NAME` names the one source; a typo names the closest.
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps({"type": "track", "userId": "imp-1", "event": "Imported"}) + "\n")
    server.terminate()
    done = cli("import", str(lines), "--source", "website", data_dir=data_dir)
    assert done.returncode == 0, done
    typo = cli("import", str(lines), "--source", "webiste", data_dir=data_dir)
    assert typo.returncode != 0 and "did you mean `website`?" in typo.stderr, typo


def test_the_cli_and_the_configuration_file_refuse_unknown_references(server, cli, data_dir, tmp_path, binary):
    """The same checks as the API, with the same messages, for `tessera destinations
    create`, `tessera journeys create` and destinations of tessera.toml (at start)."""
    get_json(server.admin("POST", "/api/v1/audiences", json={
        "key": "cart-abandoners", "definition": 'event "Product Added" within 7d'}), 201)

    def create(kind: str, name: str, definition: dict):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(definition))
        return cli(kind, "create", str(path), data_dir=data_dir)

    mail = {"id": "mail", "type": "email", "filter": {"includeEvents": False},
            "settings": {"smtpUrl": "smtp://127.0.0.1:2525", "from": "shop@example.com",
                         "subject": "s", "text": "t"}}
    for place, filt in [("filter.memberOf", {"memberOf": "cart-abandonerz"}),
                        ("filter.audiences[1]", {"audiences": ["cart-abandoners", "cart-abandonerz"]})]:
        done = create("destinations", "bad-mail", {**mail, "filter": filt})
        assert done.returncode != 0, done
        assert "[invalid_activation]" in done.stderr and place in done.stderr, done
        assert "did you mean `cart-abandoners`?" in done.stderr, done
    assert create("destinations", "mail", mail).returncode == 0

    journey = {"key": "cart-email", "trigger": {"audienceEntered": "cart-abandonerz"},
               "steps": [{"send": {"destination": "mail"}}]}
    cases = [
        ({"trigger": {"audienceEntered": "cart-abandonerz"}}, "trigger.audienceEntered", "cart-abandoners"),
        ({"steps": [{"send": {"destination": "mial"}}]}, "steps[0].send", "mail"),
        ({"steps": [{"if": 'audience "cart-abandonerz"', "then": [{"send": {"destination": "mail"}}]}]},
         "steps[0].if", "cart-abandoners"),
        ({"steps": [{"wait": "1h"}, {"if": "computed total_order > 1", "else": [{"exit": True}]}]},
         "steps[1].if", "total_orders"),
    ]
    for change, place, closest in cases:
        done = create("journeys", "bad-journey", {**journey, "trigger": {"audienceEntered": "cart-abandoners"},
                                                  **change})
        assert done.returncode != 0, (change, done)
        assert "[invalid_activation]" in done.stderr and place in done.stderr, (change, done)
        assert f"did you mean `{closest}`?" in done.stderr, (change, done)
    assert get_json(server.admin("GET", "/api/v1/journeys"))["journeys"] == []
    journey["trigger"] = {"audienceEntered": "cart-abandoners"}
    done = create("journeys", "journey", journey)
    assert done.returncode == 0, done
    wait_until(lambda: [j["key"] for j in get_json(server.admin("GET", "/api/v1/journeys"))["journeys"]]
               == ["cart-email"], timeout=10, what="the server to load the CLI's journey")

    # The audience cannot be deleted while the journey and the destination name it.
    get_json(server.admin("PUT", "/api/v1/destinations/mail", json={
        **mail, "filter": {"memberOf": "cart-abandoners", "includeEvents": False}}))
    body = assert_error(server.admin("DELETE", "/api/v1/audiences/cart-abandoners"), 400, "invalid_definition")
    assert 'destination "mail"' in body["message"] and 'journey "cart-email"' in body["message"], body
    done = cli("audiences", "delete", "cart-abandoners", data_dir=data_dir)
    assert done.returncode != 0 and "[invalid_definition]" in done.stderr, done
    assert 'journey "cart-email"' in done.stderr, done
    assert get_json(server.admin("GET", "/api/v1/audiences/cart-abandoners"))["key"] == "cart-abandoners"

    # A destination of the configuration file naming an unknown audience stops the
    # server at start, naming the file, the entry and the closest audience.
    server.terminate()
    config = tmp_path / "tessera.toml"

    def with_member_of(audience: str) -> None:
        config.write_text(f'''
[[activation.destinations]]
id = "crm"
type = "webhook"
filter = {{ memberOf = "{audience}" }}
settings = {{ url = "http://127.0.0.1:9/crm" }}
''')

    with_member_of("cart-abandonerz")
    done = cli("serve", "--listen", "127.0.0.1:0", "--config", str(config), data_dir=data_dir,
               env={"TESSERA_ADMIN_TOKEN": ADMIN_TOKEN}, timeout=60)
    assert done.returncode != 0, done
    assert f"configuration file {config}" in done.stderr, done.stderr
    assert '[[activation.destinations]] "crm"' in done.stderr and "filter.memberOf" in done.stderr, done.stderr
    assert "did you mean `cart-abandoners`?" in done.stderr, done.stderr
    # Corrected, it starts and defines the destination.
    with_member_of("cart-abandoners")
    server.extra_env["TESSERA_CONFIG"] = str(config)
    server.start()
    ids = [d["id"] for d in get_json(server.admin("GET", "/api/v1/destinations"))["destinations"]]
    assert ids == ["crm", "mail"], ids
