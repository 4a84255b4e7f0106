"""`GET /api/v1/profiles`: listing and searching profiles over real HTTP — cursor
pages newest last-seen first, identifier prefix, trait equality, free text, sort, the
scope that reads profiles, and the errors."""

from __future__ import annotations

import json
from datetime import timedelta

from tessera_e2e import assert_error, assert_ok, iso_ms, utcnow, wait_until


def get_json(response, status: int = 200) -> dict:
    assert response.status_code == status, f"HTTP {response.status_code} {response.text[:1000]}"
    return response.json()


def people(server, source, n: int) -> None:
    """n people, person i last seen i minutes after the first; every third is pro."""
    start = utcnow() - timedelta(hours=2)
    batch = []
    for i in range(n):
        at = iso_ms(start + timedelta(minutes=i))
        batch.append({"type": "identify", "userId": f"user-{i:02d}", "timestamp": at,
                      "traits": {"email": f"Person{i:02d}@Example.com", "plan": "pro" if i % 3 == 0 else "free",
                                 "age": 20 + i, "name": f"Person {i:02d}"}})
    batch.append({"type": "identify", "anonymousId": "anon-zz", "timestamp": iso_ms(start - timedelta(hours=1)),
                  "traits": {"name": "Zora Quill"}})
    assert_ok(server.post("/v1/batch", {"batch": batch}, write_key=source.write_key))


def listing(server, token=None, **params) -> dict:
    kw = {} if token is None else {"token": token}
    return get_json(server.admin("GET", "/api/v1/profiles", params=params, **kw))


def user_ids(body: dict) -> list[str]:
    out = []
    for p in body["profiles"]:
        ids = [i["value"] for i in p["identities"] if i["type"] in ("user_id", "anonymous_id")]
        out.append(ids[0])
    return out


def test_profiles_are_listed_newest_first_in_cursor_pages(server, source):
    people(server, source, 12)
    wait_until(lambda: len(listing(server, limit=200)["profiles"]) == 13, timeout=30, what="13 profiles")

    first = listing(server, limit=5)
    assert user_ids(first) == ["user-11", "user-10", "user-09", "user-08", "user-07"], first
    one = first["profiles"][0]
    assert set(one) == {"id", "firstSeen", "lastSeen", "eventCount", "identities", "traits"}, one
    assert one["traits"]["plan"] == "free" and one["traits"]["age"] == 31, one
    assert {"type": "email", "value": "person11@example.com"} in one["identities"], one

    seen, cursor = [], None
    while True:
        page = listing(server, limit=5, **({"cursor": cursor} if cursor else {}))
        seen += user_ids(page)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"user-{i:02d}" for i in range(11, -1, -1)] + ["anon-zz"], seen

    oldest = listing(server, sort="lastSeen", limit=3)
    assert user_ids(oldest) == ["anon-zz", "user-00", "user-01"], oldest


def test_profiles_are_searched_by_prefix_trait_and_text(server, source, admin_token):
    people(server, source, 12)
    wait_until(lambda: len(listing(server, limit=200)["profiles"]) == 13, timeout=30, what="13 profiles")

    # Identifier prefix, any type; emails are stored in lowercase, typed case is fine.
    assert user_ids(listing(server, q="user-1")) == ["user-11", "user-10"]
    assert user_ids(listing(server, q="PERSON03@")) == ["user-03"]
    assert user_ids(listing(server, q="anon-")) == ["anon-zz"]
    assert listing(server, q="nobody") == {"profiles": [], "nextCursor": None}

    # Trait equality: strings, numbers; several traits must all hold.
    assert user_ids(listing(server, **{"trait.plan": "pro"})) == ["user-09", "user-06", "user-03", "user-00"]
    assert user_ids(listing(server, **{"trait.age": "25"})) == ["user-05"]
    assert user_ids(listing(server, **{"trait.plan": "pro", "trait.age": "29"})) == ["user-09"]
    assert user_ids(listing(server, **{"trait.plan": "gold"})) == []

    # Free text in identifier or trait values, case-insensitive; with a prefix too.
    assert user_ids(listing(server, text="zora q")) == ["anon-zz"]
    assert user_ids(listing(server, text="person 0", q="user-0", sort="lastSeen", limit=3)) == [
        "user-00", "user-01", "user-02"]

    # A paged search continues with the same filters.
    page = listing(server, limit=2, **{"trait.plan": "pro"})
    assert user_ids(page) == ["user-09", "user-06"] and page["nextCursor"]
    rest = listing(server, limit=2, cursor=page["nextCursor"], **{"trait.plan": "pro"})
    assert user_ids(rest) == ["user-03", "user-00"]

    # The scope that reads profiles reads the list; a write key or no token does not.
    token = get_json(server.admin("POST", "/api/v1/tokens", json={"name": "support", "scopes": ["read:profiles"]}),
                     201)["token"]
    assert user_ids(listing(server, token=token, q="user-11")) == ["user-11"]
    assert_error(server.admin("GET", "/api/v1/profiles", token=None), 401, "invalid_admin_token")
    assert_error(server.admin("GET", "/api/v1/profiles", token=source.write_key), 401, "invalid_admin_token")

    # Looking up one identifier is unchanged.
    one = get_json(server.admin("GET", "/api/v1/profiles", params={"identifier": "user_id:user-03"}))
    assert one["traits"]["plan"]["value"] == "pro"

    for params in [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"sort": "name"}, {"cursor": "nope"},
                   {"color": "red"}, {"trait.": "x"}]:
        assert_error(server.admin("GET", "/api/v1/profiles", params=params), 400, "invalid_request", str(params))
    assert admin_token


def test_a_dotted_trait_filter_looks_into_nested_traits(server, source):
    assert_ok(server.post("/v1/batch", {"batch": [
        {"type": "identify", "userId": "nest-paris", "traits": {"address": {"city": "Paris", "zip": 75001}}},
        {"type": "identify", "userId": "nest-lyon", "traits": {"address": {"city": "Lyon"}}},
        {"type": "identify", "userId": "nest-flat", "traits": {"city": "Paris"}},
    ]}, write_key=source.write_key))
    wait_until(lambda: len(listing(server, q="nest-")["profiles"]) == 3, timeout=30, what="3 profiles")

    assert user_ids(listing(server, **{"trait.address.city": "Paris"})) == ["nest-paris"]
    assert user_ids(listing(server, **{"trait.address.city": "Lyon"})) == ["nest-lyon"]
    assert user_ids(listing(server, **{"trait.address.zip": "75001"})) == ["nest-paris"]
    assert user_ids(listing(server, **{"trait.city": "Paris"})) == ["nest-flat"]
    assert user_ids(listing(server, **{"trait.address.country": "Paris"})) == []
    # The whole object is not equal to a text.
    assert user_ids(listing(server, **{"trait.address": "Paris"})) == []


def test_the_cli_lists_and_searches_profiles(server, source, cli, data_dir):
    people(server, source, 12)
    wait_until(lambda: len(listing(server, limit=200)["profiles"]) == 13, timeout=30, what="13 profiles")

    def run(*args):
        done = cli("profiles", *args, data_dir=data_dir)
        assert done.returncode == 0, done
        return done

    # --json prints the API's answer, filter for filter.
    for args, params in [
        (["list", "--limit", "5"], {"limit": "5"}),
        (["search", "user-1"], {"q": "user-1"}),
        (["list", "--trait", "plan=pro", "--trait", "age=29"], {"trait.plan": "pro", "trait.age": "29"}),
        (["list", "--text", "zora q"], {"text": "zora q"}),
        (["list", "--sort", "lastSeen", "--limit", "3"], {"sort": "lastSeen", "limit": "3"}),
    ]:
        assert json.loads(run(*args, "--json").stdout) == listing(server, **params), args

    # Cursor pages, as the API's.
    first = json.loads(run("list", "--limit", "5", "--json").stdout)
    rest = json.loads(run("list", "--limit", "5", "--cursor", first["nextCursor"], "--json").stdout)
    assert user_ids(rest) == ["user-06", "user-05", "user-04", "user-03", "user-02"], rest

    # The table: a header, one row per profile, the next cursor on stderr.
    table = run("search", "PERSON03@")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "LAST", "SEEN", "EVENTS", "IDENTIFIERS", "TRAITS"], table.stdout
    assert len(lines) == 2 and "email:person03@example.com" in lines[1] and "plan=pro" in lines[1], table.stdout
    paged = run("list", "--limit", "2")
    assert len(paged.stdout.splitlines()) == 3 and "--cursor" in paged.stderr, paged
    assert run("search", "nobody").stdout.strip() == "no profiles match"

    # Bad flags: coded, non-zero.
    for args in [["list", "--limit", "0"], ["list", "--sort", "name"], ["list", "--cursor", "nope"],
                 ["list", "--trait", "plan"]]:
        done = cli("profiles", *args, data_dir=data_dir)
        assert done.returncode != 0 and "[invalid_request]" in done.stderr, (args, done)
