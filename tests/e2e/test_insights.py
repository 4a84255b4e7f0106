"""Trends, funnels and retention over events sent by the official Python Segment SDK
to a real server whose reporting time zone is Europe/Berlin, checked against
numbers worked out by hand below; the CLI gives the API's answer.

The shop's January (times UTC; Berlin is UTC+1 in winter):
  ada   DE  Product Added  01-05 10:00   Order Completed 01-06 09:00 (30)  Order Completed 01-14 08:00 (20)
  bob   FR  Product Added  01-05 12:00
  cy    DE  Product Added  01-05 23:30   (00:30 on 01-06 in Berlin)        Order Completed 01-20 10:00 (50)
  dee   FR                               Order Completed 01-07 15:00 (15)
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from tessera_e2e import HTTP_TIMEOUT, assert_error, new_id, wait_until

BERLIN = {"TESSERA_INSIGHTS_TIME_ZONE": "Europe/Berlin"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture
def shop(server_factory):
    """A Berlin-reporting server fed the January above through the Segment SDK."""
    from segment.analytics import Client

    server = server_factory(extra_env=BERLIN)
    source = server.create_source("shop")
    errors: list = []
    client = Client(source.write_key, host=server.url, sync_mode=True, max_retries=1,
                    timeout=HTTP_TIMEOUT, on_error=lambda e, batch: errors.append(repr(e)))
    tag = new_id("run")
    users = {name: f"{name}-{tag}" for name in ("ada", "bob", "cy", "dee")}
    for name, country in [("ada", "DE"), ("bob", "FR"), ("cy", "DE"), ("dee", "FR")]:
        client.identify(user_id=users[name], traits={"country": country}, timestamp=at("2026-01-01T00:00:00"))
    events = [
        ("ada", "Product Added", "2026-01-05T10:00:00", {"sku": "A-1"}),
        ("ada", "Order Completed", "2026-01-06T09:00:00", {"revenue": 30}),
        ("ada", "Order Completed", "2026-01-14T08:00:00", {"revenue": 20}),
        ("bob", "Product Added", "2026-01-05T12:00:00", {"sku": "B-2"}),
        ("cy", "Product Added", "2026-01-05T23:30:00", {"sku": "A-1"}),
        ("cy", "Order Completed", "2026-01-20T10:00:00", {"revenue": 50}),
        ("dee", "Order Completed", "2026-01-07T15:00:00", {"revenue": 15}),
    ]
    for name, event, when, properties in events:
        client.track(user_id=users[name], event=event, properties=properties, timestamp=at(when))
    client.flush()
    assert not errors, errors

    def all_in() -> bool:
        r = server.admin("POST", "/api/v1/insights/trends", json={
            "series": ["Product Added", "Order Completed"], "from": "2026-01-01", "to": "2026-01-31",
            "interval": "month"})
        if r.status_code != 200:
            return False
        totals = [s["total"] for s in r.json()["series"]]
        return totals == [3, 4]

    wait_until(all_in, timeout=30, what="every event in the index")
    server.shop_users = users
    return server


def ok(resp, what: str) -> dict:
    assert resp.status_code == 200, f"{what}: expected 200, got {resp.status_code} {resp.text[:1000]!r}"
    return resp.json()


def post(server, kind: str, body: dict) -> dict:
    return ok(server.admin("POST", f"/api/v1/insights/{kind}", json=body), f"{kind} {body}")


def test_daily_trend_counts_days_in_the_reporting_time_zone(shop):
    answer = post(shop, "trends", {"series": ["Product Added"], "from": "2026-01-05", "to": "2026-01-06"})
    assert answer["timeZone"] == "Europe/Berlin"
    assert answer["buckets"] == ["2026-01-05T00:00:00+01:00", "2026-01-06T00:00:00+01:00"]
    # cy's 23:30 UTC add is on the 6th in Berlin.
    assert answer["series"][0]["values"] == [2, 1]


def test_trend_sums_revenue_per_week_broken_down_by_a_trait(shop):
    answer = post(shop, "trends", {
        "series": [{"event": "Order Completed", "measure": "sum", "property": "revenue", "label": "revenue"}],
        "from": "2026-01-05", "to": "2026-01-25", "interval": "week", "byTrait": "country"})
    rows = {s["breakdown"]: s["values"] for s in answer["series"]}
    assert rows == {"DE": [30, 20, 50], "FR": [15, 0, 0]}
    # Only people matching a condition: the French.
    answer = post(shop, "trends", {
        "series": ["Order Completed"], "measure": "people", "from": "2026-01-05", "to": "2026-01-25",
        "interval": "week", "where": 'trait country = "FR"'})
    assert answer["series"][0]["values"] == [1, 0, 0]


def test_funnel_converts_within_the_window_with_the_median_time(shop):
    answer = post(shop, "funnels", {
        "steps": ["Product Added", "Order Completed"], "window": "7d", "from": "2026-01-01", "to": "2026-01-31"})
    steps = answer["steps"]
    assert [s["count"] for s in steps] == [3, 1]
    assert steps[1]["dropped"] == 2
    assert steps[1]["conversionFromFirst"] == pytest.approx(0.3333)
    assert steps[1]["medianSecondsToConvert"] == 23 * 3600
    # The same question over GET, steps repeated, broken down by the added sku.
    r = shop.admin("GET", "/api/v1/insights/funnels", params=[
        ("steps", "Product Added"), ("steps", 'event "Order Completed" where revenue >= 30'),
        ("window", "30d"), ("from", "2026-01-01"), ("to", "2026-01-31"), ("byProperty", "sku")])
    answer = ok(r, "GET funnel")
    groups = {g["value"]: [s["count"] for s in g["steps"]] for g in answer["breakdown"]}
    assert groups == {"A-1": [2, 2], "B-2": [1, 0]}


def test_cart_abandoners_who_come_back_as_a_retention_triangle(shop):
    answer = post(shop, "retention", {
        "start": "Product Added", "return": "Order Completed", "interval": "week", "periods": 2,
        "from": "2026-01-05", "to": "2026-01-25"})
    cohorts = answer["cohorts"]
    assert [c["cohort"] for c in cohorts] == [
        "2026-01-05T00:00:00+01:00", "2026-01-12T00:00:00+01:00", "2026-01-19T00:00:00+01:00"]
    assert cohorts[0]["size"] == 3
    # ada orders in the week after, cy two weeks after; ada's order on the 6th is week 0.
    assert cohorts[0]["returned"] == [3, 1, 1]
    assert cohorts[0]["share"] == [1.0, 0.3333, 0.3333]
    assert cohorts[2]["returned"] == [0, None, None]


def test_csv_by_accept_header_or_format(shop):
    body = {"steps": ["Product Added", "Order Completed"], "window": "7d", "from": "2026-01-01", "to": "2026-01-31"}
    for r in [shop.admin("POST", "/api/v1/insights/funnels", json=body, headers={"Accept": "text/csv"}),
              shop.admin("POST", "/api/v1/insights/funnels", json={**body, "format": "csv"})]:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(row["event"], row["count"]) for row in rows] == [("Product Added", "3"), ("Order Completed", "1")]


def test_bad_queries_get_a_code_and_a_fix(shop):
    r = shop.admin("POST", "/api/v1/insights/trends", json={"series": ["A"], "interval": "fortnight"})
    assert "hour, day, week, month" in assert_error(r, 400, "invalid_insight")["message"]
    r = shop.admin("POST", "/api/v1/insights/funnels", json={"steps": [f"S{i}" for i in range(11)]})
    assert_error(r, 400, "insight_too_large")
    r = shop.admin("POST", "/api/v1/insights/trends", json={"series": ["A"], "interval": "hour",
                                                          "from": "2020-01-01", "to": "2026-01-01"})
    assert_error(r, 400, "insight_too_large")
    r = shop.admin("GET", "/api/v1/insights/retention", params={"start": "A", "periods": "many"})
    assert_error(r, 400, "invalid_insight")
    r = shop.admin("POST", "/api/v1/insights/trends", json={"series": ["A"], "where": "trait country ="})
    assert_error(r, 400, "invalid_definition")
    r = shop.admin("POST", "/api/v1/insights/trends", data="{not json")
    assert_error(r, 400, "invalid_insight")
    # A typo is answered, with a warning naming the closest event seen.
    answer = post(shop, "trends", {"series": ["Order Complted"], "from": "2026-01-01", "to": "2026-01-31"})
    assert answer["warnings"][0]["suggestion"] == "Order Completed"


def test_cli_prints_the_api_answer(shop, cli):
    body = {"steps": ["Product Added", "Order Completed"], "window": "7d", "from": "2026-01-01", "to": "2026-01-31"}
    api = post(shop, "funnels", body)
    out = cli("insights", "funnel", "--step", "Product Added", "--step", "Order Completed", "--window", "7d",
              "--from", "2026-01-01", "--to", "2026-01-31", "--json", data_dir=shop.data_dir, env=BERLIN, check=True)
    assert json.loads(out.stdout) == api
    table = cli("insights", "retention", "--start", "Product Added", "--return", "Order Completed",
                "--periods", "2", "--from", "2026-01-05", "--to", "2026-01-25",
                data_dir=shop.data_dir, env=BERLIN, check=True).stdout
    assert table.splitlines()[0].split() == ["cohort", "size", "period", "returned", "share"]
    assert "2026-01-05T00:00:00+01:00  3     1       1         0.3333" in table
    bad = cli("insights", "trends", "--series", "A", "--interval", "fortnight", data_dir=shop.data_dir)
    assert bad.returncode != 0 and "invalid_insight" in bad.stderr


def test_funnel_drop_offs_are_saved_as_an_audience_in_one_call(shop):
    body = {"steps": ["Product Added", "Order Completed"], "window": "7d", "from": "2026-01-01",
            "to": "2026-01-31", "saveDropped": {"step": 2, "key": "added-no-order-7d", "name": "Added, no order"}}
    r = shop.admin("POST", "/api/v1/insights/funnels", json=body)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert [s["count"] for s in answer["steps"]] == [3, 1]
    saved = answer["savedAudience"]
    assert (saved["key"], saved["people"], saved["step"]) == ("added-no-order-7d", 2, 2)

    def members():
        a = ok(shop.admin("GET", "/api/v1/audiences/added-no-order-7d"), "saved audience")
        return a if a["status"]["state"] == "ready" and a["status"]["members"] == 2 else None

    audience = wait_until(members, timeout=30, what="the saved audience computed")
    assert audience["definition"].startswith("profile in [")
    # bob and cy, by the profile ids listed.
    listed = {m["profileId"] for m in ok(shop.admin("GET", "/api/v1/audiences/added-no-order-7d/members"),
                                         "members")["members"]}
    want = {ok(shop.admin("GET", "/api/v1/profiles", params={"identifier": f"user_id:{shop.shop_users[n]}"}),
               n)["id"] for n in ("bob", "cy")}
    assert listed == want
    assert_error(shop.admin("POST", "/api/v1/insights/funnels", json=body), 409, "audience_exists")
    bad = {**body, "saveDropped": {"step": 1, "key": "nope"}}
    assert_error(shop.admin("POST", "/api/v1/insights/funnels", json=bad), 400, "invalid_insight")
