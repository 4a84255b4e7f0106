#!/usr/bin/env python3
"""DuckDB side of the audience benchmark.

Loads ``profiles.csv`` and ``events.csv`` written by ``tessera-bench audience-data``
into an in-memory DuckDB database (typed columns; the load time is reported but not
compared), then times every audience of ``cases.json``, and every insight of ``insights.json``
(rows of key and count, compared with Tessera's by ``tessera-bench audiences``):

* preview: ``SELECT count(*) FROM (<sql>)`` plus ``<sql> LIMIT 10``, both in the span;
* full: ``CREATE OR REPLACE TEMP TABLE members AS <sql>`` then ``SELECT count(*)``.

Each is run once to warm up, then ``--repeat`` times; the report gives the median and
the minimum in milliseconds, the member count, DuckDB's version and the thread count,
as one JSON document (``--out``, and a summary on stderr).

    python duckdb_side.py --data DIR --cases DIR/cases.json --threads 2 --repeat 5 \
        --out duckdb.json
"""

import argparse
import json
import os
import statistics
import sys
import time

import duckdb

PROFILE_COLUMNS = {
    "profile_id": "BIGINT",
    "plan": "VARCHAR",
    "country": "VARCHAR",
    "email": "VARCHAR",
    "signup_at_ms": "BIGINT",
    "age": "INTEGER",
}
EVENT_COLUMNS = {
    "profile_id": "BIGINT",
    "ts_ms": "BIGINT",
    "name": "VARCHAR",
    "sku": "VARCHAR",
    "category": "VARCHAR",
    "price": "DOUBLE",
    "order_id": "VARCHAR",
    "revenue": "DOUBLE",
    "currency": "VARCHAR",
    "path": "VARCHAR",
}


def sql_literal(s):
    return "'" + s.replace("'", "''") + "'"


def columns_literal(cols):
    return "{" + ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in cols.items()) + "}"


def load_table(con, table, path, cols):
    """CREATE TABLE from a CSV with a header row and the given column types (empty = NULL)."""
    t0 = time.perf_counter()
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_csv({sql_literal(path)}, "
        f"header = true, auto_detect = false, delim = ',', quote = '\"', "
        f"columns = {columns_literal(cols)})"
    )
    ms = (time.perf_counter() - t0) * 1e3
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return rows, ms


def timed(fn, repeat):
    """Runs fn once to warm up, then `repeat` times; returns (last result, timings in ms)."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return result, times


def summary(times):
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "runs_ms": [round(t, 3) for t in times],
    }


def run_case(con, case, repeat):
    sql = case["sql"]

    def preview():
        count = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        sample = con.execute(f"{sql} LIMIT 10").fetchall()
        return count, [r[0] for r in sample]

    def full():
        con.execute(f"CREATE OR REPLACE TEMP TABLE members AS {sql}")
        return con.execute("SELECT count(*) FROM members").fetchone()[0]

    (preview_count, sample), preview_times = timed(preview, repeat)
    full_count, full_times = timed(full, repeat)
    distinct = con.execute(
        "SELECT count(DISTINCT profile_id) = count(*) FROM members"
    ).fetchone()[0]
    if preview_count != full_count or not distinct:
        raise SystemExit(
            f"{case['key']}: preview count {preview_count}, full count {full_count}, "
            f"distinct members {distinct}"
        )
    con.execute("DROP TABLE IF EXISTS members")
    return {
        "key": case["key"],
        "kind": case.get("kind"),
        "text": case.get("text"),
        "count": full_count,
        "sample": sample,
        "preview": summary(preview_times),
        "full": summary(full_times),
    }


def run_insight(con, case, repeat):
    """An insight's SQL answers rows of (key, count); timed as a whole."""
    rows, times = timed(lambda: con.execute(case["sql"]).fetchall(), repeat)
    return {
        "key": case["key"],
        "rows": sorted([str(k), int(v)] for k, v in rows),
        **summary(times),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory with profiles.csv and events.csv")
    ap.add_argument("--cases", help="cases.json (default: DATA/cases.json)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", help="comma-separated case keys to run (default: all)")
    ap.add_argument("--insights", help="insights.json (default: DATA/insights.json when present)")
    ap.add_argument("--out", help="write the JSON report here (default: stdout)")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")

    with open(a.cases or os.path.join(a.data, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    if a.only:
        keep = set(a.only.split(","))
        cases = [c for c in cases if c["key"] in keep]

    con = duckdb.connect(":memory:")
    con.execute(f"PRAGMA threads={int(a.threads)}")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    profiles, profiles_ms = load_table(
        con, "profiles", os.path.join(a.data, "profiles.csv"), PROFILE_COLUMNS
    )
    events, events_ms = load_table(con, "events", os.path.join(a.data, "events.csv"), EVENT_COLUMNS)
    print(
        f"duckdb {duckdb.__version__}, {threads} threads: loaded {profiles} profiles in "
        f"{profiles_ms:.0f} ms, {events} events in {events_ms:.0f} ms",
        file=sys.stderr,
    )

    results = []
    for case in cases:
        r = run_case(con, case, a.repeat)
        results.append(r)
        print(
            f"  {r['key']:<22} {r['count']:>9} members  preview {r['preview']['median_ms']:>9.2f} ms"
            f"  full {r['full']['median_ms']:>9.2f} ms  (median of {a.repeat})",
            file=sys.stderr,
        )

    insights_path = a.insights or os.path.join(a.data, "insights.json")
    insights = []
    if os.path.exists(insights_path):
        with open(insights_path, encoding="utf-8") as f:
            for case in json.load(f):
                r = run_insight(con, case, a.repeat)
                insights.append(r)
                print(
                    f"  insight {r['key']:<24} {len(r['rows']):>6} rows  {r['median_ms']:>9.2f} ms"
                    f"  (median of {a.repeat})",
                    file=sys.stderr,
                )

    report = {
        "engine": "duckdb",
        "insights": insights,
        "duckdb_version": duckdb.__version__,
        "threads": threads,
        "repeat": a.repeat,
        "data": os.path.abspath(a.data),
        "load": {
            "profiles": profiles,
            "profiles_ms": round(profiles_ms, 1),
            "events": events,
            "events_ms": round(events_ms, 1),
        },
        "cases": results,
    }
    text = json.dumps(report, indent=2) + "\n"
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
